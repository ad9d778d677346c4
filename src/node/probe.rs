//! The node's side of probing the leader ([`crate::election::probe`]): who
//! probes, the probes on the wire (`Ping`, `ProbeFor`), the answers, and
//! the verdicts fed to the election.

use std::time::Instant;

use libp2p::PeerId;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use rand::seq::SliceRandom;
use tracing::{debug, info};

use super::Node;
use crate::election::Input;
use crate::election::probe::Probe;
use crate::wire::{Request, Response};

/// Indirect probes this node runs for others at once; more are refused.
const MAX_RELAYS: usize = 64;

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
    /// The leader, while this node is one of the `probers` highest-ranked
    /// live masters and workers after it (its likely successors).
    fn probe_target(&self, now: Instant) -> Option<String> {
        let me = self.election.me().clone();
        let (leader, _) = self.election.leader()?.clone();
        if leader == me || !self.cfg.role.can_lead() {
            return None;
        }
        let mut line: Vec<(crate::role::Role, &String)> = self
            .election
            .peers()
            .filter(|(id, p)| **id != leader && p.role.can_lead() && self.election.is_live(id, now))
            .map(|(id, p)| (p.role, id))
            .chain([(self.cfg.role, &me)])
            .collect();
        line.sort_by(|(ra, ia), (rb, ib)| rb.cmp(ra).then_with(|| ia.cmp(ib)));
        line.iter()
            .take(self.cfg.probers)
            .any(|(_, id)| **id == me)
            .then_some(leader)
    }

    /// Up to `indirect_probes` live, connected members other than this node
    /// and `target`, at random.
    fn probe_helpers(&self, target: &str) -> Vec<String> {
        let now = Instant::now();
        let mut all: Vec<String> = self
            .election
            .peers()
            .filter(|(id, _)| id.as_str() != target && self.election.is_live(id, now))
            .filter(|(id, _)| {
                id.parse::<PeerId>()
                    .is_ok_and(|p| self.swarm.is_connected(&p))
            })
            .map(|(id, _)| id.clone())
            .collect();
        all.shuffle(&mut rand::rng());
        all.truncate(self.cfg.indirect_probes);
        all
    }

    /// Every probe tick: who to probe, what is due, relays past their deadline.
    pub(super) fn probe_tick(&mut self) {
        let now = Instant::now();
        let target = self.probe_target(now);
        self.prober.watch(target.clone(), now);
        let helpers = target
            .as_deref()
            .map(|t| self.probe_helpers(t))
            .unwrap_or_default();
        let probes = self.prober.tick(now, move |_| helpers);
        self.run_probes(probes);
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

    fn run_probes(&mut self, probes: Vec<Probe<String>>) {
        for probe in probes {
            match probe {
                Probe::Ping { to, nonce } => {
                    if let Ok(peer) = to.parse::<PeerId>() {
                        let id = self
                            .swarm
                            .behaviour_mut()
                            .rpc
                            .send_request(&peer, Request::Ping);
                        self.probe_pending.insert(id, Pending::Mine(nonce));
                    }
                }
                Probe::Ask { via, target, nonce } => {
                    let Ok(t) = target.parse::<PeerId>() else {
                        continue;
                    };
                    debug!(leader = %target, helpers = via.len(), "leader silent to this node: asking others to probe it");
                    for helper in via.iter().filter_map(|h| h.parse::<PeerId>().ok()) {
                        let req = Request::ProbeFor { peer: t.to_bytes() };
                        let id = self.swarm.behaviour_mut().rpc.send_request(&helper, req);
                        self.probe_pending.insert(id, Pending::Asked(nonce));
                    }
                }
                Probe::Silent(peer) => {
                    info!(%peer, "silent: it answered no probe, directly or through other members");
                    self.input(Input::Silent(peer));
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
        let me_too = self.cfg.role.can_lead().then_some((self.cfg.role, &me));
        let next = crate::election::choose_leader(
            self.election
                .peers()
                .filter(|(id, p)| {
                    **id != leader && p.role.can_lead() && self.election.is_live(id, now)
                })
                .map(|(id, p)| (p.role, id))
                .chain(me_too),
        );
        if !claims || next.map(String::as_str) != Some(claimant) {
            return;
        }
        if let Some(p) = self.prober.verify(leader, now) {
            self.run_probes(vec![p]);
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
                let _ = rpc.send_response(channel, Response::Pong);
            }
            Request::ProbeFor { peer: target } => {
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
                let id = rpc.send_request(&target, Request::Ping);
                // Answer the asker before its own deadline runs out.
                let deadline = Instant::now() + self.cfg.probe.timeout * 3 / 4;
                self.probe_pending
                    .insert(id, Pending::Relay { channel, deadline });
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
        let now = Instant::now();
        match pending {
            Pending::Mine(nonce) if reachable => self.prober.answered(nonce, now),
            Pending::Mine(nonce) => {
                let helpers = self
                    .prober
                    .target()
                    .cloned()
                    .map(|t| self.probe_helpers(&t))
                    .unwrap_or_default();
                let probes = self.prober.failed(nonce, now, move |_| helpers);
                self.run_probes(probes);
            }
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

    /// `Probed` from a member this node asked (to anything else, an answer
    /// all the same: the peer is alive).
    pub(super) fn on_probed(&mut self, id: OutboundRequestId, reachable: bool) {
        let asked = matches!(self.probe_pending.get(&id), Some(Pending::Asked(_)));
        self.probe_settled(id, reachable || !asked);
    }
}
