//! The node's status as the control API shows it.

use std::time::Instant;

use libp2p::PeerId;

use super::Node;
use crate::election::Liveness;
use crate::status::{LeaderView, PeerCounts, PeerView, StatusView};

impl Node {
    /// The status; the list of peers only `with_peers` (their counts always).
    pub(super) fn status(&mut self, with_peers: bool) -> StatusView {
        let now = Instant::now();
        let role_of = |id: &str| {
            if id == self.election.me().as_str() {
                Some(self.election.role())
            } else {
                self.election.peer(&id.to_owned()).map(|p| p.role)
            }
        };
        let leader = self.election.leader().and_then(|(id, epoch)| {
            role_of(id).map(|role| LeaderView {
                peer_id: id.clone(),
                role,
                epoch: *epoch,
                since_unix_ms: self.leader_since_ms,
            })
        });
        // The healthy set as of now (a peer gone silent since the last
        // tick counts now), so the count and its time agree.
        self.note_healthy(now);
        let peer_counts = PeerCounts {
            known: self.election.peers().count(),
            healthy: self.healthy.len(),
            connected: self
                .connected
                .values()
                .filter(|id| self.election.peer(id).is_some())
                .count(),
            connections: self.links.count(),
            healthy_changed_unix_ms: self.healthy_changed_ms,
        };
        let peers = self
            .election
            .peers()
            .filter(|_| with_peers)
            .map(|(id, p)| {
                let live = self.election.is_live(id, now);
                let pid = id.parse::<PeerId>().ok();
                let state = match p.liveness {
                    Liveness::Alive if live => "alive",
                    Liveness::Suspect { .. } if live => "suspect",
                    Liveness::Dead { .. } => "dead",
                    Liveness::Left { .. } => "left",
                    _ => "silent",
                };
                PeerView {
                    peer_id: id.clone(),
                    role: p.role,
                    healthy: self.is_healthy(id, now),
                    state: state.into(),
                    connected: pid.is_some_and(|p| self.swarm.is_connected(&p)),
                    last_seen_ms: now.saturating_duration_since(p.last_heard).as_millis() as u64,
                    incarnation: p.incarnation,
                    follows: p.follows.as_ref().map(|(l, _)| l.clone()),
                    addrs: pid
                        .and_then(|p| self.addrs.get(&p))
                        .map(|a| a.iter().map(|a| a.to_string()).collect())
                        .unwrap_or_default(),
                    health: self.peer_health.get(id).copied().unwrap_or_default(),
                    gpus: self.peer_gpus.get(id).cloned().unwrap_or_default(),
                    ipfs: self.peer_ipfs.get(id).cloned(),
                    pinset: self.peer_pinset.get(id).copied(),
                }
            })
            .collect();
        StatusView {
            peer_id: self.me.to_base58(),
            role: self.cfg.role,
            cluster: self.cfg.cluster.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            incarnation: self.state.incarnation,
            epoch: self.election.max_epoch(),
            leader,
            listen_addrs: self.swarm.listeners().map(|a| a.to_string()).collect(),
            uptime_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            foreign_peers: self.foreign.len(),
            services: self.services.iter().map(|s| s.borrow().clone()).collect(),
            ipfs: self.ipfs.borrow().clone(),
            pinset: self.pins.progress(),
            indexes: self.pins.db().indexes().sizes(),
            trust: crate::trust::TrustView {
                swarm_key: self.swarm_key.clone(),
                ..self.gate.view(crate::clock::unix_ms() / 1000)
            },
            api_unauthorized: 0,
            held: self.holder.counts(),
            orders: self.keeper.orders(),
            leader_changes: self.leader_changes,
            isolated: self.election.isolated(now),
            role_auto: self.cfg.role_auto.clone(),
            gpus: self.gpus.clone(),
            peers,
            peer_counts,
            probe_datagrams: self.datagram_counts(),
        }
    }
}
