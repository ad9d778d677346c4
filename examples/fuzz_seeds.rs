//! Writes the seed inputs of the fuzz corpora (`fuzz/corpus/<target>/seed-*`):
//! one valid message of each kind, certificates and lists signed with the
//! fuzz targets' fixed operator key, a kubo swarm key and config files. The
//! fuzzers grow the corpora from these. Run from the repository root:
//! `cargo run --example fuzz_seeds`.

use std::path::Path;

use ipfs_kit_p2p::fuzzing::{operator_key, peer_key};
use ipfs_kit_p2p::pinset::sync::Cursor;
use ipfs_kit_p2p::role::Role;
use ipfs_kit_p2p::trust::cert::{
    CertBody, Certificate, ClusterId, RevocationBody, Revocations, Serial,
};
use ipfs_kit_p2p::trust::files::SwarmKey;
use ipfs_kit_p2p::wire::{
    self, Envelope, Gossip, Health, Heartbeat, HeldState, Hello, HolderOrder, HolderRequest,
    HolderResponse, IpfsInfo, PinsetRequest, PinsetResponse, Request, Response, SharedPeer,
};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
}

fn main() {
    let op = operator_key();
    let cluster = ClusterId::of(&op.public()).expect("ed25519");
    let me = peer_key().public().to_peer_id();
    let hb = Heartbeat {
        role: Role::Master,
        incarnation: 3,
        seq: 9,
        max_epoch: 4,
        follows: Some((me.to_bytes(), 4)),
        voted: None,
        health: Health::default(),
        ipfs: Some(IpfsInfo {
            ready: true,
            peer_id: me.to_base58(),
            addrs: vec![format!("/ip4/127.0.0.1/tcp/4011/p2p/{me}")],
        }),
        pinset: Some(42),
        gpus: vec![ipfs_kit_p2p::wire::Gpu {
            model: "NVIDIA GeForce RTX 4090".into(),
            memory: 24 << 30,
        }],
        interval_ms: 5000,
        members: (12, 0x5eed_cafe_f00d_d00d),
        probe_port: 4011,
        held: Some((0x0123_4567_89ab_cdef, 17)),
    };
    let cert = Certificate::issue(
        &op,
        CertBody {
            cluster: cluster.0,
            peer: me.to_bytes(),
            role: Role::Worker,
            serial: Serial(5),
            not_before: 1_700_000_000,
            not_after: 1_900_000_000,
        },
    )
    .expect("a certificate");
    let list = Revocations::issue(
        &op,
        RevocationBody {
            cluster: cluster.0,
            version: 2,
            issued: 1_700_000_000,
            serials: [Serial(1), Serial(99)].into(),
        },
    );
    write("certificate", "valid", &cert.bytes);
    write("certificate", "armoured", cert.to_text().as_bytes());
    write("revocations", "valid", &list.bytes);
    write("revocations", "armoured", list.to_text().as_bytes());

    let env = |body| {
        wire::encode(&Envelope {
            sender: me.to_bytes(),
            body,
        })
    };
    write("gossip", "heartbeat", &env(Gossip::Heartbeat(hb.clone())));
    write(
        "gossip",
        "leaving",
        &env(Gossip::Leaving { incarnation: 3 }),
    );

    write(
        "datagram",
        "probe",
        &wire::encode(&wire::Datagram::Probe {
            from: me.to_bytes(),
            token: 0x5eed,
        }),
    );
    let ack = wire::probe_ack(&peer_key(), "default", 0x5eed, &me).expect("an ed25519 signature");
    write("datagram", "ack", &wire::encode(&ack));

    let hello = Hello {
        heartbeat: hb.clone(),
        cert: Some(cert.bytes.clone()),
        revocations: Some(list.bytes.clone()),
    };
    let requests = [
        ("hello", Request::Hello(hello)),
        ("update", Request::Update(hb.clone())),
        ("leaving", Request::Leaving { incarnation: 1 }),
        ("ping", Request::Ping),
        (
            "probe-for",
            Request::ProbeFor {
                peer: libp2p::identity::Keypair::ed25519_from_bytes([7u8; 32])
                    .expect("a valid ed25519 secret")
                    .public()
                    .to_peer_id()
                    .to_bytes(),
                within_ms: 750,
            },
        ),
        ("revocations", Request::Revocations(list.bytes.clone())),
        (
            "members",
            Request::Members(vec![SharedPeer::member(
                &me,
                &["/ip4/10.0.0.2/tcp/4010".parse().expect("multiaddr")],
            )]),
        ),
        (
            "push",
            Request::Pinset(PinsetRequest::Push { entries: vec![] }),
        ),
        (
            "pull",
            Request::Pinset(PinsetRequest::Pull {
                session: 1,
                vv: None,
                from: Cursor::Author { author: 0, seq: 0 },
            }),
        ),
        (
            "orders",
            Request::Holder(HolderRequest::Orders {
                epoch: 2,
                seq: 1,
                orders: vec![HolderOrder {
                    cid: "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e".into(),
                    pin: true,
                }],
                providers: vec![],
            }),
        ),
        (
            "status",
            Request::Holder(HolderRequest::Statuses {
                cids: vec!["QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o".into()],
            }),
        ),
    ];
    for (name, r) in requests {
        write("rpc_request", name, &wire::encode(&r));
    }
    let responses = [
        (
            "hello",
            Response::Hello {
                heartbeat: Box::new(hb),
                peers: vec![SharedPeer::new(
                    &me,
                    &["/ip4/127.0.0.1/tcp/4010".parse().expect("multiaddr")],
                )],
                cert: Some(cert.bytes.clone()),
                revocations: None,
            },
        ),
        ("ack", Response::Ack),
        (
            "members",
            Response::Members(vec![SharedPeer::member(
                &me,
                &["/ip4/10.0.0.3/udp/4010/quic-v1".parse().expect("multiaddr")],
            )]),
        ),
        ("pong", Response::Pong),
        ("probed", Response::Probed { reachable: true }),
        (
            "denied",
            Response::Denied {
                reason: "expired".into(),
            },
        ),
        (
            "page",
            Response::Pinset(PinsetResponse::Page {
                entries: vec![],
                next: None,
                vv: None,
                by_cid: false,
                collected: None,
            }),
        ),
        ("behind", Response::Pinset(PinsetResponse::Behind)),
        (
            "states",
            Response::Holder(HolderResponse::States {
                session: 1,
                cursor: 2,
                reset: false,
                more: false,
                items: vec![(
                    "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e".into(),
                    HeldState::Failed("timeout".into()),
                )],
            }),
        ),
    ];
    for (name, r) in responses {
        write("rpc_response", name, &wire::encode(&r));
    }
    write(
        "swarm_key",
        "kubo",
        SwarmKey([0xab; 32]).to_text().as_bytes(),
    );
    write(
        "config",
        "defaults",
        ipfs_kit_p2p::config::DEFAULTS.as_bytes(),
    );
    write(
        "config",
        "trust",
        b"role = \"master\"\ncluster = \"lab\"\n[trust]\nswarm_key = \"/nonexistent/swarm.key\"\n[pins]\nwrite_copies = 3\n[[service]]\nname = \"x\"\ncommand = \"sh\"\n",
    );
    println!("seeds written under fuzz/corpus/");
}
