//! The libp2p stack of a node: TCP + QUIC, Noise, Yamux, and the behaviours.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Swarm, SwarmBuilder, gossipsub, identify, kad, mdns, noise, ping, request_response, tcp, yamux,
};
use sha2::{Digest, Sha256};

use libp2p::Transport as _;
use libp2p::core::transport::timeout::TransportTimeout;
use libp2p::core::upgrade::Version;
use libp2p::pnet::{PnetConfig, PreSharedKey};

use crate::config::NodeConfig;
use crate::trust::files::SwarmKey;
use crate::wire::{MAX_GOSSIP_BYTES, Protocols, RpcCodec};

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub rpc: request_response::Behaviour<RpcCodec>,
}

/// Errors while building the swarm.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the libp2p swarm: {0}")]
pub struct BuildError(pub String);

fn err(e: impl std::fmt::Display) -> BuildError {
    BuildError(e.to_string())
}

/// Gossip message IDs: a hash of the signer and its sequence number, so two
/// identical heartbeats are never dropped as duplicates, and IDs stay short.
fn message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    let mut h = Sha256::new();
    if let Some(src) = &m.source {
        h.update(src.to_bytes());
    }
    h.update(m.sequence_number.unwrap_or_default().to_be_bytes());
    if m.source.is_none() {
        let mut d = DefaultHasher::new();
        m.data.hash(&mut d);
        h.update(d.finish().to_be_bytes());
    }
    gossipsub::MessageId::from(h.finalize()[..16].to_vec())
}

fn gossipsub(key: &Keypair, cfg: &NodeConfig) -> Result<gossipsub::Behaviour, BuildError> {
    let n = &cfg.network;
    let config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_secs(1))
        .heartbeat_initial_delay(Duration::from_millis(100))
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(message_id)
        .max_transmit_size(4 * MAX_GOSSIP_BYTES)
        .mesh_n(n.mesh_n)
        .mesh_n_low(n.mesh_n_low)
        .mesh_n_high(n.mesh_n_high)
        .mesh_outbound_min((n.mesh_n / 2).min(n.mesh_n_low))
        .gossip_lazy(n.gossip_lazy)
        // Exactly `gossip_lazy` peers get IHAVE gossip: it is most of the idle traffic.
        .gossip_factor(0.0)
        .flood_publish(false)
        .build()
        .map_err(err)?;
    gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), config)
        .map_err(err)
}

fn behaviour(
    key: &Keypair,
    cfg: &NodeConfig,
    protocols: &Protocols,
) -> Result<Behaviour, BuildError> {
    let peer_id = key.public().to_peer_id();
    let identify = identify::Behaviour::new(
        identify::Config::new(protocols.identify.clone(), key.public())
            .with_agent_version(format!("ipfs-kit-p2p/{}", env!("CARGO_PKG_VERSION")))
            .with_push_listen_addr_updates(true),
    );
    let mut kad_cfg = kad::Config::new(protocols.kad.clone());
    kad_cfg.set_query_timeout(Duration::from_secs(20));
    // Kademlia's periodic bootstrap (every 5 min by default) looks up this
    // node's ID and a random key per bucket: every node asks most of a
    // small cluster each time, and each answer carries 20 peers. In 6-minute
    // windows at 40 nodes it was a third of a follower's idle bytes (2.29
    // KiB/s sent with it, 1.52 without). Members are found and kept by the
    // members' digests, gossip and mDNS; once an hour is enough. The
    // automatic bootstrap while the routing table is small still runs.
    kad_cfg.set_periodic_bootstrap_interval(Some(KAD_BOOTSTRAP_INTERVAL));
    let mut kad =
        kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_cfg);
    // Nothing confirms an external address on a LAN, so never wait to become a server.
    kad.set_mode(Some(kad::Mode::Server));
    let mdns = if cfg.mdns {
        let mdns_cfg = mdns::Config {
            query_interval: Duration::from_secs(30),
            ..mdns::Config::default()
        };
        Some(mdns::tokio::Behaviour::new(mdns_cfg, peer_id).map_err(err)?)
    } else {
        None
    };
    let rpc = request_response::Behaviour::with_codec(
        RpcCodec,
        [(
            protocols.rpc.clone(),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(5))
            .with_max_concurrent_streams(64),
    );
    Ok(Behaviour {
        identify,
        // Checks every connection once a minute; a failed ping drops it,
        // which starts the suspect/re-dial path of the election (a silent
        // peer). Every connection pays for it, so its cost grows with the
        // cluster: every 15 s it was 0.8 KB/s per node at 100 nodes. A
        // silent leader is found by the probes in seconds anyway.
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(Duration::from_secs(60))
                .with_timeout(Duration::from_secs(20)),
        ),
        gossipsub: gossipsub(key, cfg)?,
        kad,
        mdns: mdns.into(),
        rpc,
    })
}

/// The same tail for both transports.
macro_rules! finish {
    ($builder:expr, $cfg:expr, $protocols:expr, $registry:expr) => {
        Ok($builder
            .with_bandwidth_metrics($registry)
            .with_behaviour(|key| behaviour(key, $cfg, $protocols).map_err(|e| e.0.into()))
            .map_err(err)?
            // gossipsub keeps member connections open; this bounds the others.
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            // Both ways; dials are held to DIAL_TIMEOUT by their transport.
            .with_connection_timeout(ACCEPT_TIMEOUT)
            .build())
    };
}

/// Builds the swarm (its bytes in and out counted in `registry`); it
/// still has to be told where to listen. With a swarm
/// key, TCP only, every connection behind the pnet handshake (QUIC cannot
/// be wrapped, and a second transport would be a way around the key).
pub fn build(
    key: Keypair,
    cfg: &NodeConfig,
    protocols: &Protocols,
    swarm_key: Option<&SwarmKey>,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<Swarm<Behaviour>, BuildError> {
    let builder = SwarmBuilder::with_existing_identity(key).with_tokio();
    let Some(psk) = swarm_key else {
        let builder = builder
            .with_quic_config(|mut c| {
                c.handshake_timeout = DIAL_TIMEOUT;
                c
            })
            .with_other_transport(|key| {
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    TransportTimeout::with_outgoing_timeout(
                        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                            .upgrade(Version::V1Lazy)
                            .authenticate(noise::Config::new(key)?)
                            .multiplex(yamux::Config::default()),
                        DIAL_TIMEOUT,
                    ),
                )
            })
            .map_err(err)?;
        return finish!(builder, cfg, protocols, registry);
    };
    let psk = PreSharedKey::new(psk.0);
    let builder = builder
        .with_other_transport(|key| {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                TransportTimeout::with_outgoing_timeout(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                        .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                        .upgrade(Version::V1Lazy)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(yamux::Config::default()),
                    DIAL_TIMEOUT,
                ),
            )
        })
        .map_err(err)?;
    finish!(builder, cfg, protocols, registry)
}

/// How often Kademlia bootstraps again (see [`behaviour`]).
const KAD_BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(3600);

/// A TCP dial into a cut-off network gives up after this (libp2p's default
/// is 10 s): the next redial sends a fresh SYN instead of waiting out the
/// kernel's retransmission back-off, so a healed link is used within about
/// a redial interval. QUIC handshakes, both ways, too.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an incoming TCP connection may take to finish its handshake.
/// Longer than [`DIAL_TIMEOUT`]: the dialer is done once it has sent the
/// last Noise message, the listener only once it has read it, so with equal
/// limits a slow exchange (100 nodes starting on two cores) ended with the
/// dialer connected and the listener gone, and the dialer's first requests
/// lost. The dialer's own limit still bounds how long it waits.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
