//! The node's side of probing the leader ([`crate::election::probe`]): who
//! probes, the probes on the wire (`Ping`, `ProbeFor`), the answers, and
//! the verdicts fed to the election.

use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use rand::seq::SliceRandom;
use tracing::{debug, info};

use super::Node;
use super::datagram::For;
use crate::election::Input;
use crate::election::probe::Probe;
use crate::wire::{Request, Response};

/// Indirect probes this node runs for others at once; more are refused.
const MAX_RELAYS: usize = 64;

/// Members' probes this node answered over the connection (`Ping`), and
/// rounds in which it asked other members to probe its target (`status`,
/// `/metrics`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ProbeCounts {
    pub pings_answered: u64,
    pub asked_others: u64,
}

/// A probe this node has on the wire.
pub(super) enum Pending {
    /// Its own probe (direct, or a check), under the prober's nonce.
    Mine(u64),
    /// A member asked to probe for it, under the prober's nonce.
    Asked(u64),
    /// A probe for another member, answered on `channel` by `deadline`.
    Relay {
        channel: ResponseChannel<Response>,
        deadline: Instant,
    },
}

impl Node {
    /// The leader, while this node is one of its likely successors and has
    /// joined (see [`crate::election::Election::joined`]).
    fn probe_target(&self, now: Instant) -> Option<String> {
        if !self.election.joined(self.member_sync.agreed(), now) {
            return None;
        }
        self.election.probe_target(self.cfg.probers, now)
    }

    /// The master or worker that would lead were `leader` gone.
    fn successor(&self, leader: &str, now: Instant) -> Option<String> {
        self.election.successor(&leader.to_string(), now)
    }

    /// Up to `indirect_probes` live, connected members other than this node
    /// and `target`: the target's successor first (asked to probe its own
    /// leader, it starts its own last round too, so it is ready to take
    /// over), the rest at random.
    fn probe_helpers(&self, target: &str) -> Vec<String> {
        let now = Instant::now();
        let me = self.election.me();
        let usable = |id: &String| {
            id.as_str() != target
                && id != me
                && self.election.is_live(id, now)
                && id
                    .parse::<PeerId>()
                    .is_ok_and(|p| self.swarm.is_connected(&p))
        };
        let first = self.successor(target, now).filter(usable);
        let mut rest: Vec<String> = self
            .election
            .peers()
            .map(|(id, _)| id)
            .filter(|id| usable(id) && Some(*id) != first.as_ref())
            .cloned()
            .collect();
        rest.shuffle(&mut rand::rng());
        let mut all: Vec<String> = first.into_iter().chain(rest).collect();
        all.truncate(self.cfg.indirect_probes);
        all
    }

    /// After every election input and tick: whether this node probes the
    /// leader now.
    pub(super) fn watch_leader(&mut self, now: Instant) {
        let target = self.probe_target(now);
        self.prober.watch(target, now);
    }

    /// When the probes need the loop next: the prober's next wake-up, or a
    /// relay's deadline.
    pub(super) fn probe_wake(&mut self) -> Option<Instant> {
        let relays = self.probe_pending.values().filter_map(|p| match p {
            Pending::Relay { deadline, .. } => Some(*deadline),
            _ => None,
        });
        let datagrams = self.datagram_wake();
        self.prober
            .next_wake()
            .into_iter()
            .chain(relays)
            .chain(datagrams)
            .min()
    }

    /// When a probe is due: who to probe, what is due, relays past their
    /// deadline.
    pub(super) fn probe_tick(&mut self) {
        let now = Instant::now();
        self.watch_leader(now);
        let helpers = self.target_helpers();
        let probes = self.prober.tick(now, move |_| helpers);
        self.run_probes(probes);
        self.datagram_tick(now);
        let overdue: Vec<OutboundRequestId> = self
            .probe_pending
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Relay { deadline, .. } if *deadline <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            self.probe_settled(id, false);
        }
    }

    /// This node's probe `nonce` of `peer` over the connection.
    pub(super) fn ping(&mut self, peer: &PeerId, nonce: u64) -> OutboundRequestId {
        let id = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_request(peer, Request::Ping);
        self.probe_pending.insert(id, Pending::Mine(nonce));
        id
    }

    pub(super) fn run_probes(&mut self, probes: Vec<Probe<String>>) {
        for probe in probes {
            match probe {
                Probe::Ping { to, nonce } => {
                    let Ok(peer) = to.parse::<PeerId>() else {
                        continue;
                    };
                    let within = self.prober.deadline().max(self.cfg.probe.timeout * 2);
                    if self.probe_datagram_first(&peer, within)
                        && self.datagram_probe(peer, For::Mine(nonce, None), within)
                    {
                        continue;
                    }
                    let id = self.ping(&peer, nonce);
                    self.datagram_probe(peer, For::Mine(nonce, Some(id)), within);
                }
                Probe::Ask {
                    via,
                    target,
                    nonce,
                    within,
                } => {
                    let Ok(t) = target.parse::<PeerId>() else {
                        continue;
                    };
                    debug!(leader = %target, helpers = via.len(), "leader silent to this node: asking others to probe it");
                    self.probe_counts.asked_others += 1;
                    for helper in via.iter().filter_map(|h| h.parse::<PeerId>().ok()) {
                        let req = Request::ProbeFor {
                            peer: t.to_bytes(),
                            within_ms: u32::try_from(within.as_millis()).unwrap_or(u32::MAX),
                        };
                        let id = self.swarm.behaviour_mut().rpc.send_request(&helper, req);
                        self.probe_pending.insert(id, Pending::Asked(nonce));
                    }
                }
                Probe::Silent(peer) => {
                    let deadline_ms = self.prober.deadline().as_millis() as u64;
                    let health = self.prober.health();
                    info!(%peer, deadline_ms, health, "silent: it answered no probe, directly or through other members");
                    self.input(Input::Silent(peer));
                }
                Probe::Alive(peer) => {
                    info!(%peer, "answered after it was found silent: alive after all");
                    self.input(Input::Answered(peer));
                }
            }
        }
    }

    /// A peer's heartbeat claims leadership while this node follows another
    /// that still looks live: probe that one once before moving (only a
    /// failed probe makes it silent here).
    /// Only for a claimant the election took the claim of, that may lead,
    /// and that would be rightful were the leader gone.
    pub(super) fn check_leader_on_claim(&mut self, claimant: &str) {
        let now = Instant::now();
        let Some((leader, _)) = self.election.leader().cloned() else {
            return;
        };
        let me = self.election.me().clone();
        if leader == claimant || leader == me || !self.election.is_live(&leader, now) {
            return;
        }
        let claims = self.election.peer(&claimant.to_string()).is_some_and(|p| {
            p.role.can_lead()
                && matches!(&p.follows, Some((l, _)) if l == claimant)
                && self.election.is_live(&claimant.to_string(), now)
        });
        let next = self.successor(&leader, now);
        if !claims || next.as_deref() != Some(claimant) {
            return;
        }
        if let Some(p) = self.prober.verify(leader, now) {
            self.run_probes(vec![p]);
        }
    }

    /// Asked to probe `leader` for a member that cannot reach it: when it
    /// is this node's own leader and this node is next in line, start its
    /// own last round at once (a direct probe and other members' indirect
    /// ones: `Prober::urge`), so that if the leader is silent this node
    /// takes over without waiting for its own probes to fail, and does not
    /// on the word of its one connection to the leader alone. A successor
    /// that does not probe the leader (it has not joined yet) checks it.
    fn check_own_leader(&mut self, leader: &str) {
        let now = Instant::now();
        let me = self.election.me().clone();
        let follows = matches!(self.election.leader(), Some((l, _)) if l == leader && *l != me);
        if !follows || self.successor(leader, now).as_ref() != Some(&me) {
            return;
        }
        let helpers = self.probe_helpers(leader);
        let leader = leader.to_string();
        let probes = match self.prober.urge(&leader, now, move |_| helpers) {
            Some(probes) => probes,
            None => self
                .prober
                .verify(leader.clone(), now)
                .into_iter()
                .collect(),
        };
        if !probes.is_empty() {
            debug!(%leader, "asked to probe the leader: probing it for this node too");
            self.run_probes(probes);
        }
    }

    /// A probe request from a member.
    pub(super) fn on_probe_request(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) {
        let rpc = &mut self.swarm.behaviour_mut().rpc;
        match request {
            Request::Ping => {
                self.probe_counts.pings_answered += 1;
                let _ = rpc.send_response(channel, Response::Pong);
            }
            Request::ProbeFor {
                peer: target,
                within_ms,
            } => {
                let relays = self
                    .probe_pending
                    .values()
                    .filter(|p| matches!(p, Pending::Relay { .. }))
                    .count();
                // No opinion (busy, or a question that makes no sense) is a
                // refusal, which the asker does not count against the peer.
                let target = PeerId::from_bytes(&target).ok();
                let Some(target) = target.filter(|t| *t != peer && relays < MAX_RELAYS) else {
                    let reason = "no probe: busy, or not a peer to probe".to_string();
                    let _ = rpc.send_response(channel, Response::Denied { reason });
                    return;
                };
                if target == self.me {
                    let _ = rpc.send_response(channel, Response::Probed { reachable: true });
                    return;
                }
                self.check_own_leader(&target.to_base58());
                let rpc = &mut self.swarm.behaviour_mut().rpc;
                let id = rpc.send_request(&target, Request::Ping);
                // Answer within what the asker allows (it allows for the
                // legs to here and back), never longer than the longest
                // deadline this node would give a probe of its own.
                let within = Duration::from_millis(within_ms.into())
                    .min(self.cfg.probe.timeout_max.max(self.cfg.probe.timeout));
                let deadline = Instant::now() + within;
                self.probe_pending
                    .insert(id, Pending::Relay { channel, deadline });
                self.datagram_probe(target, For::Relay(id), within);
            }
            _ => {}
        }
    }

    /// An answer (or failure) of a probe this node sent; false if the
    /// request was not a probe.
    pub(super) fn probe_settled(&mut self, id: OutboundRequestId, reachable: bool) -> bool {
        let Some(pending) = self.probe_pending.remove(&id) else {
            return false;
        };
        if reachable || matches!(pending, Pending::Relay { .. }) {
            self.datagram_settled(id);
        }
        let now = Instant::now();
        match pending {
            Pending::Mine(nonce) if reachable => {
                let alive = self.prober.answered(nonce, now);
                self.run_probes(alive.into_iter().collect());
            }
            Pending::Mine(nonce) => self.probe_failed(nonce, now),
            Pending::Asked(nonce) => {
                let probes = self.prober.indirect(nonce, reachable, now);
                self.run_probes(probes);
            }
            Pending::Relay { channel, .. } => {
                let rpc = &mut self.swarm.behaviour_mut().rpc;
                let _ = rpc.send_response(channel, Response::Probed { reachable });
            }
        }
        true
    }

    /// This node's probe `nonce` failed: the prober moves on (to members'
    /// indirect probes, or a verdict).
    pub(super) fn probe_failed(&mut self, nonce: u64, now: Instant) {
        let helpers = self.target_helpers();
        let probes = self.prober.failed(nonce, now, move |_| helpers);
        self.run_probes(probes);
    }

    /// The members that may probe the prober's target for it.
    fn target_helpers(&self) -> Vec<String> {
        self.prober
            .target()
            .cloned()
            .map(|t| self.probe_helpers(&t))
            .unwrap_or_default()
    }

    /// `Probed` from a member this node asked (to anything else, an answer
    /// all the same: the peer is alive).
    pub(super) fn on_probed(&mut self, id: OutboundRequestId, reachable: bool) {
        let asked = matches!(self.probe_pending.get(&id), Some(Pending::Asked(_)));
        self.probe_settled(id, reachable || !asked);
    }
}
