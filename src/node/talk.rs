//! What the node says and hears about the election: heartbeats, leadership
//! announcements, the departure, and carrying out the election core's
//! actions.

use std::time::Instant;

use futures::StreamExt;
use libp2p::PeerId;
use tracing::{debug, error, info, warn};

use super::{LEAVE_DEADLINE, Node};
use crate::clock::unix_ms;
use crate::election::{Action, Input};
use crate::wire::{self, Envelope, Gossip, Heartbeat, Request};

impl Node {
    /// Announces the departure over gossip and directly to every connected
    /// peer, and waits (bounded) for their acknowledgements so the successor
    /// takes over at once.
    pub(super) async fn leave(&mut self) {
        let incarnation = self.state.incarnation;
        info!(leader = self.election.is_leader(), "leaving the cluster");
        self.publish(Gossip::Leaving { incarnation });
        // No announcement of "no leader": peers learn of the departure from
        // the notice itself.
        let mut actions = self.election.leave(std::time::Instant::now());
        actions.retain(|a| !matches!(a, crate::election::Action::Announce));
        self.execute(actions);
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let id = self
                .swarm
                .behaviour_mut()
                .rpc
                .send_request(&peer, Request::Leaving { incarnation });
            self.leaving.insert(id);
        }
        let deadline = tokio::time::sleep(LEAVE_DEADLINE);
        tokio::pin!(deadline);
        while !self.leaving.is_empty() {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = &mut deadline => {
                    warn!(unacknowledged = self.leaving.len(), "departure not acknowledged by every peer");
                    break;
                }
            }
        }
    }

    pub(super) fn heartbeat(&mut self) -> Heartbeat {
        let r = self.election.next_report(Instant::now());
        let id_bytes =
            |(id, e): (String, u64)| id.parse::<PeerId>().ok().map(|p| (p.to_bytes(), e));
        Heartbeat {
            role: r.role,
            incarnation: r.incarnation,
            seq: r.seq,
            max_epoch: r.max_epoch,
            // The vote travels only when it differs from the leader followed
            // (rarely): following a leader means having voted for it.
            voted: if r.voted == r.follows {
                None
            } else {
                r.voted.and_then(id_bytes)
            },
            follows: r.follows.and_then(id_bytes),
            health: self.health,
            ipfs: self.ipfs_info(),
            pinset: Some(self.pins.progress().digest),
            gpus: self.gpus.clone(),
            interval_ms: r.interval.as_millis() as u64,
            members: self.member_digest(),
            probe_port: self.datagrams.as_ref().map_or(0, |d| d.port()),
            held: self.cfg.role.can_lead().then(|| self.holder.position()),
        }
    }

    /// Periodic heartbeat: gossip only.
    pub(super) fn beat(&mut self) {
        let hb = self.heartbeat();
        self.beat_sent(&hb);
        self.publish(Gossip::Heartbeat(hb));
    }

    /// A heartbeat went out over gossip: the next is due one interval (the
    /// one it announced) later, or for a quiet follower at a random point
    /// in the last quarter of it (see [`crate::election::quiet_delay`]).
    fn beat_sent(&mut self, hb: &Heartbeat) {
        let now = Instant::now();
        self.last_beat = now;
        let interval = std::time::Duration::from_millis(hb.interval_ms);
        self.next_beat = now
            + crate::election::quiet_delay(interval, self.cfg.heartbeat_interval, rand::random());
        self.beat_pinset = hb.pinset;
        self.beat_held = hb.held;
    }

    /// Every election tick: brings the next heartbeat forward when this
    /// node's interval shrank (it became a likely successor, or the cluster
    /// shrank), or when its pinset or its holder changed and a full
    /// interval has passed (peers pull from a digest that differs from
    /// theirs; the leader asks a holder whose position moved).
    pub(super) fn reschedule_beat(&mut self, now: Instant) {
        let due = self.last_beat + self.election.beat_interval(now);
        let base = self.last_beat + self.cfg.heartbeat_interval;
        let moved = self.beat_pinset != Some(self.pins.progress().digest)
            || (self.cfg.role.can_lead() && self.beat_held != Some(self.holder.position()));
        if due < self.next_beat || (moved && base < self.next_beat) {
            self.next_beat = if moved { due.min(base) } else { due };
        }
    }

    /// A leadership change: gossip, and directly to every connected peer,
    /// because a mesh torn by the death that caused it is only repaired at
    /// the next gossipsub heartbeat. Rare, so it costs nothing when idle.
    pub(super) fn announce(&mut self) {
        let hb = self.heartbeat();
        self.beat_sent(&hb);
        self.publish(Gossip::Heartbeat(hb.clone()));
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            self.swarm
                .behaviour_mut()
                .rpc
                .send_request(&peer, Request::Update(hb.clone()));
        }
    }

    pub(super) fn publish(&mut self, body: Gossip) {
        let bytes = wire::encode(&Envelope {
            sender: self.me.to_bytes(),
            body,
        });
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), bytes)
        {
            Ok(_) => {}
            Err(libp2p::gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                debug!("no peers to gossip to yet")
            }
            Err(e) => warn!(error = %e, "gossip publish failed"),
        }
    }

    /// Feeds a peer's heartbeat to the election core.
    pub(super) fn on_heartbeat(&mut self, from: PeerId, hb: Heartbeat) {
        if !self.allowed(&from, crate::trust::Kind::Heartbeat(hb.role)) {
            return;
        }
        if let Err(e) = hb.check() {
            warn!(peer = %from, error = %e, "heartbeat dropped");
            return;
        }
        let id = |b: Option<(Vec<u8>, u64)>| -> Result<Option<(String, u64)>, ()> {
            b.map(|(bytes, e)| {
                PeerId::from_bytes(&bytes)
                    .map(|p| (p.to_base58(), e))
                    .map_err(|_| ())
            })
            .transpose()
        };
        let (Ok(follows), Ok(voted)) = (id(hb.follows), id(hb.voted)) else {
            warn!(peer = %from, "heartbeat with an invalid peer ID dropped");
            return;
        };
        let voted = voted.or_else(|| follows.clone());
        let key = self.id_text(&from);
        let claims = matches!(&follows, Some((l, _)) if *l == key);
        let report = crate::election::Report {
            role: hb.role,
            incarnation: hb.incarnation,
            seq: hb.seq,
            max_epoch: hb.max_epoch,
            follows,
            voted,
            interval: std::time::Duration::from_millis(hb.interval_ms),
        };
        let actions = self.election.handle(
            Input::Heartbeat {
                from: key.clone(),
                report,
            },
            Instant::now(),
        );
        if claims {
            self.check_leader_on_claim(&key);
        }
        let follows_sender = matches!(self.election.leader(), Some((l, _)) if *l == key);
        if follows_sender && claims {
            self.compare_members(from, hb.members);
        }
        // What the peer says of itself, from its newest heartbeat only: a
        // stale one (replayed from gossip caches after a restart) would
        // bring back an old probe port, health or digest.
        let newest = self
            .election
            .peer(&key)
            .is_some_and(|p| (p.incarnation, p.last_seq) == (hb.incarnation, hb.seq));
        if newest {
            self.peer_health.insert(key.clone(), hb.health);
            self.peer_gpus.insert(key.clone(), hb.gpus.clone());
            if self.probe_ports.insert(from, hb.probe_port) != Some(hb.probe_port) {
                self.datagram_port_changed(&from);
            }
            match hb.pinset {
                Some(d) => self.peer_pinset.insert(key.clone(), d),
                None => self.peer_pinset.remove(&key),
            };
            match hb.held {
                Some(h) => self.peer_held.insert(key.clone(), h),
                None => self.peer_held.remove(&key),
            };
            self.on_peer_ipfs(key.clone(), hb.ipfs);
        }
        if follows_sender && claims {
            self.warm_datagrams(from);
        }
        self.publish_view_after(&key);
        self.execute(actions);
    }

    pub(super) fn input(&mut self, input: Input<String>) {
        let now = Instant::now();
        let actions = self.election.handle(input, now);
        self.execute(actions);
        // A new leader, or a new place in line, is probed from now on, not
        // from the next election tick (up to a second away).
        self.watch_leader(now);
        // A peer that left, went silent or came back reaches the pinset
        // task now, not at the next tick (cheap when nothing changed).
        self.publish_view();
    }

    pub(super) fn execute(&mut self, actions: Vec<Action<String>>) {
        for action in actions {
            match action {
                Action::PersistVote(leader, epoch) => {
                    self.state.voted = Some((leader, epoch));
                    if let Err(e) = self.data.save_state(&self.state) {
                        error!(error = %e, epoch, "cannot persist the vote");
                    }
                }
                Action::PersistEpoch(epoch) => {
                    self.state.max_epoch = epoch;
                    if let Err(e) = self.data.save_state(&self.state) {
                        error!(error = %e, epoch, "cannot persist the epoch");
                    }
                }
                Action::Announce => self.announce(),
                Action::ConfirmAlive(peer) => {
                    if let Ok(peer) = peer.parse::<PeerId>() {
                        debug!(%peer, "connection lost; re-dialling to confirm");
                        self.confirm(peer);
                    }
                }
                Action::LeaderChanged(leader) => {
                    self.leader_since_ms = unix_ms();
                    self.leader_changes += 1;
                    match leader {
                        Some((l, epoch)) if l == self.election.me().as_str() => {
                            info!(epoch, "this node leads")
                        }
                        Some((l, epoch)) => info!(leader = %l, epoch, "following a new leader"),
                        None if self.election.epochs_exhausted() => error!(
                            "no leader: the highest epoch seen is the limit ({}), so no \
                             node can claim a new term; stop every node and reset \
                             max_epoch in each node's state.json",
                            crate::election::MAX_EPOCH
                        ),
                        None => info!("no leader"),
                    }
                    self.publish_view();
                }
            }
        }
    }
}
