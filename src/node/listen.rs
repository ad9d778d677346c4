//! Binding the listeners before the node runs.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm};
use tracing::info;

use super::NodeError;
use super::behaviour::{self, Behaviour};
use super::events::error_chain;

/// Starts every listener and waits (at most 5 s) until each is up, so a busy
/// port or an unusable address stops the node with an error naming it.
/// Returns the other events seen meanwhile, to be handled once the node runs.
pub(super) async fn listen(
    swarm: &mut Swarm<Behaviour>,
    addrs: &[Multiaddr],
) -> Result<Vec<SwarmEvent<behaviour::BehaviourEvent>>, NodeError> {
    let fail = |addr: &Multiaddr, message: String| NodeError::Listen {
        addr: addr.clone(),
        message,
    };
    let mut pending = HashMap::new();
    for addr in addrs {
        probe_tcp_port(addr).map_err(|e| fail(addr, e.to_string()))?;
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| fail(addr, error_chain(&e)))?;
        pending.insert(id, addr.clone());
    }
    let mut early = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    while !pending.is_empty() {
        let event = tokio::select! {
            event = swarm.select_next_some() => event,
            _ = &mut deadline => break,
        };
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                ref address,
            } => {
                info!(address = %format!("{address}/p2p/{}", swarm.local_peer_id()), "listening");
                pending.remove(&listener_id);
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some(addr) = pending.get(&listener_id) {
                    return Err(fail(addr, error_chain(&error)));
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(addr) = pending.get(&listener_id) {
                    let why = reason
                        .err()
                        .map_or("closed".to_string(), |e| error_chain(&e));
                    return Err(fail(addr, why));
                }
            }
            other => early.push(other),
        }
    }
    Ok(early)
}

/// libp2p's TCP listeners set SO_REUSEPORT, so a second process can bind a
/// port another node already listens on and silently share its connections.
/// Binding it once without that option first turns that into an error.
fn probe_tcp_port(addr: &Multiaddr) -> std::io::Result<()> {
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    match parts.next() {
        Some(Protocol::Tcp(port)) if port != 0 => std::net::TcpListener::bind((ip, port)).map(drop),
        _ => Ok(()),
    }
}

/// A QUIC (or any UDP) address: a private network cannot use it.
pub(super) fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::Udp(_) | Protocol::QuicV1 | Protocol::Quic))
}
