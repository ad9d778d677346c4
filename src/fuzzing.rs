//! Entry points for the fuzz targets in `fuzz/` and for the test that
//! replays their corpora under `cargo test` (no nightly needed there). Each
//! takes arbitrary bytes, as a peer or a file could supply them, and must
//! return without panicking, whatever they are.

use std::path::Path;
use std::sync::OnceLock;

use libp2p::PeerId;
use libp2p::identity::Keypair;

use crate::trust::cert::{Certificate, ClusterId, Revocations};
use crate::wire::{self, MAX_GOSSIP_BYTES, MAX_RPC_BYTES};

/// The targets, by name (the names of `fuzz/fuzz_targets/*.rs` and of the
/// corpus directories).
/// A fuzz target: its name and what it feeds the bytes to.
pub type Target = (&'static str, fn(&[u8]));

pub const TARGETS: [Target; 8] = [
    ("gossip", gossip),
    ("datagram", datagram),
    ("rpc_request", rpc_request),
    ("rpc_response", rpc_response),
    ("certificate", certificate),
    ("revocations", revocations),
    ("swarm_key", swarm_key),
    ("config", config),
];

/// The fixed keys the targets check against, so seeds signed with them
/// (`examples/fuzz_seeds.rs`) reach the deepest checks.
pub fn peer_key() -> Keypair {
    Keypair::ed25519_from_bytes([7; 32]).expect("32 bytes are an ed25519 secret")
}

pub fn operator_key() -> Keypair {
    Keypair::ed25519_from_bytes([9; 32]).expect("32 bytes are an ed25519 secret")
}

fn fixed_peer() -> &'static PeerId {
    static PEER: OnceLock<PeerId> = OnceLock::new();
    PEER.get_or_init(|| peer_key().public().to_peer_id())
}

fn cluster() -> &'static ClusterId {
    static ID: OnceLock<ClusterId> = OnceLock::new();
    ID.get_or_init(|| ClusterId::of(&operator_key().public()).expect("ed25519"))
}

/// A gossip message as it arrives (signer: a fixed peer).
pub fn gossip(data: &[u8]) {
    let _ = wire::decode_gossip(data, fixed_peer());
    let _ = wire::decode::<wire::Gossip>(data, MAX_GOSSIP_BYTES);
}

/// A probe datagram as it arrives on the probe socket, then the checks the
/// node runs (an answer's signature, against the fixed peer as the prober
/// and the peer probed).
pub fn datagram(data: &[u8]) {
    match wire::decode::<wire::Datagram>(data, wire::MAX_DATAGRAM_BYTES) {
        Ok(wire::Datagram::Probe { from, .. }) => {
            let _ = PeerId::from_bytes(&from);
        }
        Ok(wire::Datagram::Ack { token, key, sig }) => {
            let me = fixed_peer();
            let _ = wire::probe_ack_valid("default", token, me, me, &key, &sig);
        }
        Err(_) => {}
    }
}

/// A request-response request frame body, then the checks the node runs.
pub fn rpc_request(data: &[u8]) {
    if let Ok(req) = wire::decode::<wire::Request>(data, MAX_RPC_BYTES) {
        match req {
            wire::Request::Hello(h) => {
                let _ = h.check();
                certificate_bytes(h.cert.as_deref());
            }
            wire::Request::Update(hb) => {
                let _ = hb.check();
            }
            wire::Request::Pinset(p) => {
                let _ = p.check();
            }
            wire::Request::Holder(h) => {
                let _ = h.check();
            }
            wire::Request::Revocations(l) => revocations(&l),
            wire::Request::Leaving { .. } | wire::Request::Ping => {}
            wire::Request::ProbeFor { peer, .. } => {
                let _ = libp2p::PeerId::from_bytes(&peer);
            }
            wire::Request::Members(list) => members(&list),
        }
    }
}

/// A response frame body, then the checks the node runs.
pub fn rpc_response(data: &[u8]) {
    if let Ok(resp) = wire::decode::<wire::Response>(data, MAX_RPC_BYTES) {
        match resp {
            wire::Response::Hello {
                heartbeat,
                peers,
                cert,
                revocations: list,
            } => {
                let _ = heartbeat.check();
                let _ = wire::check_signed(&cert, &list);
                members(&peers);
                certificate_bytes(cert.as_deref());
            }
            wire::Response::Pinset(p) => {
                let _ = p.check();
            }
            wire::Response::Holder(h) => {
                let _ = h.check();
            }
            wire::Response::Members(list) => members(&list),
            wire::Response::Ack
            | wire::Response::Denied { .. }
            | wire::Response::Pong
            | wire::Response::Probed { .. } => {}
        }
    }
}

fn members(list: &[wire::SharedPeer]) {
    if wire::check_members(list).is_ok() {
        for p in list {
            let _ = p.parse();
        }
    }
}

fn certificate_bytes(bytes: Option<&[u8]>) {
    if let Some(b) = bytes {
        certificate(b);
    }
}

/// A certificate, as a peer presents it.
pub fn certificate(data: &[u8]) {
    let _ = Certificate::verify(data, cluster(), fixed_peer(), 1_800_000_000, None);
    let _ = crate::trust::cert::signer_of(data);
    let _ = crate::trust::cert::unarmor(data);
}

/// A revocation list, as a peer or a file supplies it.
pub fn revocations(data: &[u8]) {
    let _ = Revocations::decode(data, cluster());
    let _ = crate::trust::cert::unarmor(data);
}

/// A swarm key file's text.
pub fn swarm_key(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::trust::files::SwarmKey::parse(text);
    }
}

/// A config file's text.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let args = crate::cli::NodeArgs {
            data_dir: Some("/nonexistent/ipfs-kit-p2p-fuzz".into()),
            ..Default::default()
        };
        let _ = crate::config::NodeConfig::from_text(text, Path::new("fuzz.toml"), &args);
    }
}
