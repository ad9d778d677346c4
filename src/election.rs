//! Coordinator-free leader election with epochs, as a pure state machine.
//!
//! Every node runs one [`Election`]. It is fed what the network tells it
//! ([`Input`]: heartbeats, departures, connection events) together with the
//! current time, and answers with [`Action`]s for the node's event loop to
//! carry out. There are no sockets and no clocks in here, so the rules can be
//! tested exhaustively (see the tests at the bottom, which run whole clusters
//! over a simulated network with partitions).
//!
//! # The rules
//! * **Who leads:** among the live peers that may lead (masters and workers,
//!   never leechers), the one with the highest role, then the lowest ID.
//!   Every node that has the same view therefore names the same leader.
//! * **Epochs:** a node that finds itself the rightful leader takes an epoch
//!   one above the highest it has ever seen and announces it. A follower
//!   accepts a claim only from the peer it also considers rightful (or, while
//!   that peer has not claimed yet, a fresh term of the leader it follows:
//!   see failback below), and only
//!   if the epoch is not below the highest it has seen; at most one leader is
//!   accepted per epoch. A leader that learns of a higher epoch, or of another
//!   leader at its own epoch or above, takes a fresh epoch above all of them.
//!   After a partition heals, the surviving leader therefore ends with an
//!   epoch above both sides'.
//! * **Liveness:** a peer is live while its heartbeats keep arriving within
//!   `peer_timeout`. When its last connection closes it becomes *suspect*
//!   and the node re-dials it; only a failed re-dial (or `suspect_timeout`)
//!   confirms it dead, so one flaky link does not depose a healthy leader.
//!   A graceful departure removes the peer at once.
//! * **No gap on failback:** while the rightful peer has not claimed yet (a
//!   higher-ranked master back within its startup grace), followers keep
//!   following the current leader as long as it is live and still leads,
//!   and the returning node follows it too until it may claim; the
//!   leadership passes straight from one to the other. A fresh term the
//!   current leader takes meanwhile (it overtook a rival claim) is followed
//!   too, so that leaves no gap either.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::{Duration, Instant};

use crate::role::Role;

mod index;
pub mod members;
pub mod probe;

use index::Index;

/// Timing of the election, see the `[election]` section of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a peer stays live without a heartbeat.
    pub peer_timeout: Duration,
    /// How long a suspect peer may stay unconfirmed before it counts as dead.
    pub suspect_timeout: Duration,
    /// A freshly started node does not claim leadership for this long, so
    /// it can first hear from the peers it is joining.
    pub startup_grace: Duration,
    /// Peers that are gone are forgotten after this long (or after twice
    /// their own timeout, when that is longer).
    pub forget_after: Duration,
    /// The heartbeat interval of the leader and its likely successors;
    /// `peer_timeout` is the silence allowed at this interval.
    pub heartbeat: Duration,
    /// A quiet follower (neither the leader nor one of its `successors`
    /// next in line) heartbeats every `quiet_per_member` × members (never
    /// more often than `heartbeat`), so the cluster's quiet followers
    /// together send a constant number of heartbeats a second whatever its
    /// size. Zero: every node beats every `heartbeat`.
    pub quiet_per_member: Duration,
    /// The masters and workers next in line after the leader that keep the
    /// full heartbeat rate (they also probe the leader).
    pub successors: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            peer_timeout: Duration::from_secs(6),
            suspect_timeout: Duration::from_secs(3),
            startup_grace: Duration::from_millis(1000),
            forget_after: Duration::from_secs(600),
            heartbeat: Duration::from_secs(2),
            quiet_per_member: Duration::ZERO,
            successors: 3,
        }
    }
}

/// What a heartbeat says about its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report<I> {
    pub role: Role,
    /// Grows with every start of the sender.
    pub incarnation: u64,
    /// Grows with every report within one incarnation.
    pub seq: u64,
    /// Highest epoch the sender has seen.
    pub max_epoch: u64,
    /// The leader the sender follows and its epoch; the sender itself when it leads.
    pub follows: Option<(I, u64)>,
    /// The last leader the sender accepted, and at which epoch; kept after
    /// that leader is gone, so a leader learns who cannot accept its epoch.
    pub voted: Option<(I, u64)>,
    /// The sender's next heartbeat is due within this (see
    /// [`Election::beat_interval`]); its silence is judged against it.
    pub interval: Duration,
}

/// Something the network told this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<I> {
    Heartbeat {
        from: I,
        report: Report<I>,
    },
    /// The peer announced a graceful departure.
    Left {
        from: I,
        incarnation: u64,
    },
    /// The last connection to the peer closed.
    ConnectionLost(I),
    /// A connection to the peer is established.
    Connected(I),
    /// Dialling the peer failed.
    Unreachable(I),
    /// The peer answers no probe, directly or through other members (see
    /// [`probe`]): silent, though its connection may still look open.
    Silent(I),
    /// The peer answered a probe this node sent after finding it silent:
    /// alive after all (a late answer of a probe sent before the verdict
    /// does not count; the prober only reports later ones).
    Answered(I),
}

/// Something the node's event loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<I> {
    /// The highest epoch seen grew: store it before acting on it.
    PersistEpoch(u64),
    /// This node accepted a leader (itself included) at an epoch: store it
    /// before acting on it, so a restart never accepts another at that epoch.
    PersistVote(I, u64),
    /// Leadership changed here: publish a heartbeat now instead of at the next tick.
    Announce,
    /// Dial this peer to find out whether it is still alive.
    ConfirmAlive(I),
    /// The leader this node follows changed (`None`: no leader).
    LeaderChanged(Option<(I, u64)>),
}

/// How a peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Its connection closed; a re-dial is under way.
    Suspect {
        since: Instant,
    },
    /// Confirmed unreachable. Only a newer incarnation, a new connection or a
    /// heartbeat well past `last_seq` brings it back (a heartbeat that was
    /// already in flight when it died must not).
    Dead {
        last_seq: u64,
        since: Instant,
    },
    /// Departed gracefully; its incarnation will not come back.
    Left {
        since: Instant,
    },
}

/// What this node knows about one peer.
#[derive(Debug, Clone)]
pub struct PeerState<I> {
    pub role: Role,
    pub incarnation: u64,
    pub last_seq: u64,
    pub last_heard: Instant,
    pub max_epoch: u64,
    pub follows: Option<(I, u64)>,
    pub voted: Option<(I, u64)>,
    /// The heartbeat interval the peer announced last.
    pub interval: Duration,
    /// How long it may stay unheard and still be live, for that interval
    /// (see [`silence_for`]).
    pub silence: Duration,
    pub liveness: Liveness,
}

/// Highest epoch a report may carry. Far beyond any real cluster's history
/// (a new epoch a millisecond for 8,900 years), and far below overflow: a
/// report past it is hostile or corrupt and is ignored whole.
pub const MAX_EPOCH: u64 = 1 << 48;

/// A dead peer's heartbeats must be this far past the last one seen before its
/// death to bring it back; fewer than that may have been in flight.
const RESURRECT_GAP: u64 = 2;

/// Heartbeat intervals after which a node probes the leader even though its
/// member view has not matched the leader's yet (see [`Election::joined`]).
pub const JOIN_BEATS: u32 = 2;

/// Longest heartbeat interval a report may announce: a quiet follower of a
/// cluster far beyond any real one. A report past it is ignored whole.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The election state of one node.
#[derive(Debug, Clone)]
pub struct Election<I> {
    me: I,
    role: Role,
    incarnation: u64,
    seq: u64,
    timing: Timing,
    started: Instant,
    max_peers: usize,
    peers: BTreeMap<I, PeerState<I>>,
    max_epoch: u64,
    /// Latest (epoch, leader) accepted: at most one leader per epoch.
    voted: Option<(u64, I)>,
    leader: Option<(I, u64)>,
    /// Rival claims this node's current term already took an epoch above.
    overtaken: Vec<(I, u64)>,
    /// Leaving gracefully: no claims, no leader.
    leaving: bool,
    /// Peers connected while this node starts that it has not heard from
    /// yet: their greeting is on the way, and a starting node waits for it
    /// before it claims a term (see [`Election::evaluate`]).
    greeting: BTreeSet<I>,
    /// Kept in step with `peers` (see [`index`]).
    index: Index<I>,
}

impl<I: Ord + Clone + Debug> Election<I> {
    /// `max_epoch` is the highest epoch this node ever saw (persisted across restarts).
    pub fn new(
        me: I,
        role: Role,
        incarnation: u64,
        max_epoch: u64,
        timing: Timing,
        now: Instant,
    ) -> Self {
        Election {
            me,
            role,
            incarnation,
            seq: 0,
            timing,
            started: now,
            max_peers: 4096,
            peers: BTreeMap::new(),
            max_epoch,
            voted: None,
            leader: None,
            overtaken: Vec::new(),
            leaving: false,
            greeting: BTreeSet::new(),
            index: Index::default(),
        }
    }

    /// The vote this node stored before a restart: it still holds at the
    /// highest epoch seen (one leader per epoch, across restarts too).
    pub fn with_vote(mut self, voted: Option<(I, u64)>) -> Self {
        if let Some((id, e)) = voted
            && e <= self.max_epoch
        {
            self.voted = Some((e, id));
        }
        self
    }

    /// Caps the peer table; heartbeats from further new peers are ignored.
    pub fn with_max_peers(mut self, max_peers: usize) -> Self {
        self.max_peers = max_peers;
        self
    }

    pub fn me(&self) -> &I {
        &self.me
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader this node follows, with its epoch.
    pub fn leader(&self) -> Option<&(I, u64)> {
        self.leader.as_ref()
    }

    pub fn is_leader(&self) -> bool {
        matches!(&self.leader, Some((l, _)) if *l == self.me)
    }

    /// Leading, while no other master or worker this node knows (and that
    /// has not left) is live: cut off from the cluster, or the last one
    /// standing. Such a leader gives no orders (see the keeper) and says so.
    pub fn isolated(&self, now: Instant) -> bool {
        if !self.is_leader() {
            return false;
        }
        let mut known = self
            .ranked_peers()
            .filter(|(_, p)| !matches!(p.liveness, Liveness::Left { .. }))
            .peekable();
        known.peek().is_some() && !known.any(|(_, p)| self.live(p, now))
    }

    /// Highest epoch seen.
    pub fn max_epoch(&self) -> u64 {
        self.max_epoch
    }

    /// No fresh epoch can be claimed any more: only a member sending epochs
    /// at [`MAX_EPOCH`] gets a cluster here (2^48 terms are out of reach
    /// otherwise); the operator resets `max_epoch` in every node's state.
    pub fn epochs_exhausted(&self) -> bool {
        self.max_epoch >= MAX_EPOCH
    }

    pub fn peers(&self) -> impl Iterator<Item = (&I, &PeerState<I>)> {
        self.peers.iter()
    }

    pub fn peer(&self, id: &I) -> Option<&PeerState<I>> {
        self.peers.get(id)
    }

    /// Whether a peer counts for the election now.
    pub fn is_live(&self, id: &I, now: Instant) -> bool {
        self.peers.get(id).is_some_and(|p| self.live(p, now))
    }

    /// The peers that count for the election now (this node not included).
    pub fn live_peers(&self, now: Instant) -> impl Iterator<Item = &I> + '_ {
        self.peers
            .iter()
            .filter(move |(_, p)| self.live(p, now))
            .map(|(id, _)| id)
    }

    /// Live: not confirmed dead or departed, and heard within `peer_timeout`
    /// (missed heartbeats catch silent failures, even over an open connection).
    fn live(&self, p: &PeerState<I>, now: Instant) -> bool {
        matches!(p.liveness, Liveness::Alive | Liveness::Suspect { .. })
            && now.saturating_duration_since(p.last_heard) <= self.silence_allowed(p)
    }

    /// How long `p` may stay unheard (see [`silence_for`]).
    fn silence_allowed(&self, p: &PeerState<I>) -> Duration {
        p.silence
    }

    /// How often this node heartbeats now: every `heartbeat` while it
    /// leads, may lead next (one of the `successors` after the leader) or
    /// leaves; otherwise, as a quiet follower, every `quiet_per_member` ×
    /// the members it knows live (itself included), at least `heartbeat`.
    pub fn beat_interval(&self, now: Instant) -> Duration {
        let t = &self.timing;
        if t.quiet_per_member.is_zero() || self.is_leader() || self.leaving {
            return t.heartbeat;
        }
        if self.role.can_lead()
            && self
                .ranked_ahead_of_me()
                .filter(|(_, p)| self.live(p, now))
                .nth(t.successors)
                .is_none()
        {
            return t.heartbeat;
        }
        let live = self.index.reachable - self.index.silent(now);
        let members = u32::try_from(live).unwrap_or(u32::MAX).saturating_add(1);
        t.quiet_per_member
            .saturating_mul(members)
            .clamp(t.heartbeat, MAX_INTERVAL)
    }

    /// This node's next heartbeat.
    pub fn next_report(&mut self, now: Instant) -> Report<I> {
        self.seq += 1;
        Report {
            role: self.role,
            incarnation: self.incarnation,
            seq: self.seq,
            max_epoch: self.max_epoch,
            follows: self.leader.clone(),
            voted: self.voted.as_ref().map(|(e, id)| (id.clone(), *e)),
            interval: self.beat_interval(now),
        }
    }

    /// The peer that should lead according to this node's view.
    pub fn rightful_leader(&self, now: Instant) -> Option<I> {
        let me = self.role.can_lead().then_some((self.role, &self.me));
        let first = self
            .ranked_peers()
            .find(|(_, p)| self.live(p, now))
            .map(|(id, p)| (p.role, id));
        choose_leader(me.into_iter().chain(first)).cloned()
    }

    /// The master or worker that would lead were `leader` gone, in this
    /// node's view (maybe this node itself).
    pub fn successor(&self, leader: &I, now: Instant) -> Option<I> {
        let me = self.role.can_lead().then_some((self.role, &self.me));
        let first = self
            .ranked_peers()
            .find(|(id, p)| *id != leader && self.live(p, now))
            .map(|(id, p)| (p.role, id));
        choose_leader(first.into_iter().chain(me)).cloned()
    }

    /// The leader, while this node is one of the `probers` highest-ranked
    /// live masters and workers after it (its likely successors, which
    /// probe it; see [`probe`]).
    pub fn probe_target(&self, probers: usize, now: Instant) -> Option<I> {
        let (leader, _) = self.leader.as_ref()?;
        if *leader == self.me || !self.role.can_lead() {
            return None;
        }
        // Among the first `probers` of the line: fewer than that live
        // masters and workers (the leader aside) rank above this node.
        let ahead = self
            .ranked_ahead_of_me()
            .filter(|(id, p)| *id != leader && self.live(p, now))
            .take(probers)
            .count();
        (ahead < probers).then(|| leader.clone())
    }

    /// Whether this node knows the cluster well enough to probe the leader
    /// for it: its member view matched the leader's once (`agreed`, see
    /// [`members::Sync::agreed`]), or it has been up for
    /// [`JOIN_BEATS`] heartbeat intervals. A node still joining may think
    /// itself next in line only because it knows few members, and it has
    /// nobody to ask before a verdict: a loaded leader that answers its
    /// first probes late would be declared silent on its word alone.
    pub fn joined(&self, agreed: bool, now: Instant) -> bool {
        agreed
            || now.saturating_duration_since(self.started)
                >= self.timing.heartbeat.saturating_mul(JOIN_BEATS)
    }

    /// Feeds one input; returns what to do.
    pub fn handle(&mut self, input: Input<I>, now: Instant) -> Vec<Action<I>> {
        let mut actions = Vec::new();
        match input {
            Input::Heartbeat { from, report } => self.on_heartbeat(from, report, now, &mut actions),
            Input::Left { from, incarnation } => {
                self.update(&from, |p| {
                    if incarnation >= p.incarnation {
                        p.incarnation = incarnation;
                        p.liveness = Liveness::Left { since: now };
                    }
                });
            }
            Input::ConnectionLost(id) => {
                self.greeting.remove(&id);
                let suspected = self.update(&id, |p| {
                    let alive = p.liveness == Liveness::Alive;
                    if alive {
                        p.liveness = Liveness::Suspect { since: now };
                    }
                    alive
                });
                if suspected == Some(true) {
                    actions.push(Action::ConfirmAlive(id));
                }
            }
            Input::Connected(id) if !self.peers.contains_key(&id) => {
                if self.starting(now) && self.greeting.len() < self.max_peers {
                    self.greeting.insert(id);
                }
            }
            Input::Connected(id) => {
                self.update(&id, |p| match p.liveness {
                    Liveness::Suspect { .. } => p.liveness = Liveness::Alive,
                    Liveness::Dead { .. } => {
                        p.liveness = Liveness::Alive;
                        p.last_heard = now;
                    }
                    Liveness::Alive | Liveness::Left { .. } => {}
                });
            }
            Input::Silent(id) => {
                self.update(&id, |p| {
                    if matches!(p.liveness, Liveness::Alive | Liveness::Suspect { .. }) {
                        p.liveness = Liveness::Dead {
                            last_seq: p.last_seq,
                            since: now,
                        };
                    }
                });
            }
            Input::Answered(id) => {
                self.update(&id, |p| {
                    if matches!(p.liveness, Liveness::Dead { .. }) {
                        p.liveness = Liveness::Alive;
                        p.last_heard = now;
                    }
                });
            }
            Input::Unreachable(id) => {
                self.update(&id, |p| {
                    if matches!(p.liveness, Liveness::Suspect { .. }) {
                        p.liveness = Liveness::Dead {
                            last_seq: p.last_seq,
                            since: now,
                        };
                    }
                });
            }
        }
        self.evaluate(now, &mut actions);
        self.check_index();
        actions
    }

    /// Changes one peer's state, keeping the indexes in step; `None` if
    /// the peer is not known.
    fn update<R>(&mut self, id: &I, change: impl FnOnce(&mut PeerState<I>) -> R) -> Option<R> {
        let p = self.peers.get_mut(id)?;
        self.index.remove(id, p, &self.timing);
        let r = change(p);
        self.index.insert(id, p, &self.timing);
        Some(r)
    }

    /// Masters and workers this node knows, highest rank first.
    fn ranked_peers(&self) -> impl Iterator<Item = (&I, &PeerState<I>)> {
        self.index
            .ranked
            .iter()
            .filter_map(|(_, id)| self.peers.get_key_value(id))
    }

    /// Masters and workers that rank above this node, highest first.
    fn ranked_ahead_of_me(&self) -> impl Iterator<Item = (&I, &PeerState<I>)> {
        self.index
            .ranked
            .range(..(Reverse(self.role), self.me.clone()))
            .filter_map(|(_, id)| self.peers.get_key_value(id))
    }

    /// In debug builds, with a small peer table: the indexes are what a
    /// fresh build from the peer table makes.
    fn check_index(&self) {
        if cfg!(debug_assertions) && self.peers.len() <= 64 {
            assert_eq!(
                self.index,
                Index::build(&self.peers, &self.timing),
                "election index out of step with its peer table"
            );
        }
    }

    /// Lets time pass: expires suspects and silent peers, forgets old ones.
    /// The next instant after `now` at which [`tick`](Self::tick) could
    /// change anything: a live peer's allowed silence running out, a
    /// suspect's confirmation deadline, a peer forgotten, the startup grace
    /// (and the joiner's wait after it) ending. Until then the state only
    /// changes on an input, so a driver may sleep until this instant
    /// instead of ticking on a fixed period. `None`: no such deadline.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        // `live` and `tick` compare silences with `<=` and `>`: such a
        // deadline is passed only strictly after it. The grace (`<`) ends
        // exactly at its deadline.
        const PAST: Duration = Duration::from_millis(1);
        let t = &self.timing;
        let grace = [t.startup_grace, t.startup_grace + t.heartbeat].map(|d| {
            self.started
                .checked_add(d)
                .and_then(|at| at.checked_sub(PAST))
        });
        let i = &self.index;
        let peers =
            [&i.silent_at, &i.confirmed_at, &i.forget_at].map(|set| Index::next_at(set, now));
        grace
            .into_iter()
            .chain(peers)
            .flatten()
            .filter(|at| *at >= now)
            .map(|at| at + PAST)
            .min()
    }

    pub fn tick(&mut self, now: Instant) -> Vec<Action<I>> {
        let timing = self.timing;
        if !self.starting(now) {
            self.greeting.clear();
        }
        for id in Index::due(&self.index.confirmed_at, now) {
            self.update(&id, |p| {
                p.liveness = Liveness::Dead {
                    last_seq: p.last_seq,
                    since: now,
                };
            });
        }
        for id in Index::due(&self.index.forget_at, now) {
            if let Some(p) = self.peers.remove(&id) {
                self.index.remove(&id, &p, &timing);
            }
        }
        let mut actions = Vec::new();
        self.evaluate(now, &mut actions);
        self.check_index();
        actions
    }

    fn on_heartbeat(&mut self, from: I, r: Report<I>, now: Instant, actions: &mut Vec<Action<I>>) {
        if from == self.me {
            return;
        }
        self.greeting.remove(&from);
        let seen = [&r.follows, &r.voted]
            .iter()
            .filter_map(|c| c.as_ref().map(|(_, e)| *e))
            .fold(r.max_epoch, u64::max);
        if seen > MAX_EPOCH || r.interval > MAX_INTERVAL {
            return;
        }
        // A peer that left gracefully speaks for no term any more: what its
        // last heartbeats (sent while it shuts down) say moves no epoch.
        if self.peers.get(&from).is_some_and(|p| {
            matches!(p.liveness, Liveness::Left { .. }) && r.incarnation <= p.incarnation
        }) {
            return;
        }
        // Only a node that may lead can move epochs on: a leecher's claims
        // are never followed, so its epochs carry no term.
        if r.role.can_lead() {
            self.raise_epoch(seen, actions);
        }
        let timing = self.timing;
        if !self.peers.contains_key(&from) {
            if self.peers.len() >= self.max_peers {
                return;
            }
            let p = PeerState {
                role: r.role,
                incarnation: r.incarnation,
                last_seq: 0,
                last_heard: now,
                max_epoch: 0,
                follows: None,
                voted: None,
                interval: r.interval,
                silence: silence_for(&timing, r.interval),
                liveness: Liveness::Alive,
            };
            self.index.insert(&from, &p, &timing);
            self.peers.insert(from.clone(), p);
        }
        self.update(&from, |p| {
            let newer_incarnation = r.incarnation > p.incarnation;
            if !newer_incarnation {
                if r.incarnation < p.incarnation || r.seq <= p.last_seq {
                    return; // stale or duplicate
                }
                match p.liveness {
                    Liveness::Left { .. } => return,
                    Liveness::Dead { last_seq, .. } if r.seq <= last_seq + RESURRECT_GAP => {
                        p.last_seq = r.seq;
                        return;
                    }
                    _ => {}
                }
            }
            p.role = r.role;
            p.incarnation = r.incarnation;
            p.last_seq = r.seq;
            p.last_heard = now;
            p.max_epoch = r.max_epoch;
            p.follows = r.follows;
            p.voted = r.voted;
            if p.interval != r.interval {
                p.silence = silence_for(&timing, r.interval);
            }
            p.interval = r.interval;
            p.liveness = match p.liveness {
                Liveness::Suspect { since } if !newer_incarnation => Liveness::Suspect { since },
                _ => Liveness::Alive,
            };
        });
    }

    fn vote(&mut self, epoch: u64, id: I, actions: &mut Vec<Action<I>>) {
        self.voted = Some((epoch, id.clone()));
        actions.push(Action::PersistVote(id, epoch));
    }

    fn raise_epoch(&mut self, epoch: u64, actions: &mut Vec<Action<I>>) {
        if epoch > self.max_epoch {
            self.max_epoch = epoch;
            actions.push(Action::PersistEpoch(epoch));
        }
    }

    /// Whether a claim to lead at `epoch` by `id` may be followed.
    fn acceptable(&self, id: &I, epoch: u64) -> bool {
        epoch > self.max_epoch
            || (epoch == self.max_epoch
                && self
                    .voted
                    .as_ref()
                    .is_none_or(|(ve, vid)| *ve < epoch || vid == id))
    }

    /// Whether this node's own term at `epoch` has been overtaken: a higher
    /// epoch exists, a live peer accepted another leader at this epoch or
    /// above, or a live rival claims to lead (two sides of a healed split)
    /// and this term did not already start above it.
    fn term_conflicted(&self, epoch: u64, now: Instant) -> bool {
        self.max_epoch > epoch
            || self.highest_rival_vote(now).is_some_and(|e| e >= epoch)
            || self.rival_claims(now).any(|c| !self.overtaken.contains(&c))
    }

    /// The highest epoch in which a live peer voted for a leader other than
    /// this node.
    fn highest_rival_vote(&self, now: Instant) -> Option<u64> {
        self.index
            .votes
            .iter()
            .rev()
            .find_map(|(epoch, by_leader)| {
                by_leader
                    .iter()
                    .filter(|(l, _)| **l != self.me)
                    .any(|(_, voters)| voters.iter().any(|v| self.is_live(v, now)))
                    .then_some(*epoch)
            })
    }

    /// The epoch at which the leader this node follows says it now follows
    /// `rightful`: the old leader's step-down can arrive before the new
    /// one's claim, and waiting for the claim would leave a moment with no
    /// leader.
    fn handed_to(&self, rightful: &I, now: Instant) -> Option<u64> {
        let (l, _) = self.leader.as_ref()?;
        let p = self
            .peers
            .get(l)
            .filter(|p| *l != self.me && self.live(p, now))?;
        match &p.follows {
            Some((f, e)) if f == rightful => Some(*e),
            _ => None,
        }
    }

    /// Whether `id`'s own reports say it follows another leader at `epoch`
    /// or later, so it does not lead the term this node accepted.
    fn disowned(&self, id: &I, epoch: u64) -> bool {
        self.peers
            .get(id)
            .and_then(|p| p.follows.as_ref())
            .is_some_and(|(f, e)| f != id && *e >= epoch)
    }

    /// The term the peer this node follows (not itself) claims in its
    /// latest heartbeat, while it is live and may lead.
    fn followed_claim(&self, now: Instant) -> Option<(I, u64)> {
        let (l, _) = self.leader.as_ref()?;
        let p = self
            .peers
            .get(l)
            .filter(|p| *l != self.me && p.role.can_lead() && self.live(p, now))?;
        match &p.follows {
            Some((f, e)) if f == l => Some((l.clone(), *e)),
            _ => None,
        }
    }

    /// Whether the peer this node follows (not itself) is live and its
    /// heartbeats still claim the term this node accepted.
    fn leader_still_leads(&self, now: Instant) -> bool {
        self.followed_claim(now)
            .is_some_and(|c| self.leader.as_ref() == Some(&c))
    }

    /// During the startup grace: keeps following a leader that still leads,
    /// or follows the live claimant with the highest acceptable epoch (none
    /// when nobody claims one this node may accept).
    fn follow_current_claimant(&mut self, now: Instant, actions: &mut Vec<Action<I>>) {
        if self.leader_still_leads(now) {
            return;
        }
        let best = self
            .rival_claims(now)
            .filter(|(id, e)| {
                self.peers.get(id).is_some_and(|p| p.role.can_lead()) && self.acceptable(id, *e)
            })
            .max_by(|(ia, ea), (ib, eb)| ea.cmp(eb).then_with(|| ib.cmp(ia)));
        match best {
            Some((id, e)) => {
                self.raise_epoch(e, actions);
                self.vote(e, id.clone(), actions);
                self.leader = Some((id, e));
            }
            None => self.leader = None,
        }
    }

    /// Whether a live peer follows a leader (not this node) this node has
    /// never heard from.
    fn follows_unknown_leader(&self, now: Instant) -> bool {
        self.index
            .following
            .iter()
            .filter(|(l, _)| **l != self.me && !self.peers.contains_key(l))
            .any(|(_, followers)| followers.iter().any(|f| self.is_live(f, now)))
    }

    /// Within the startup grace and the wait after it (one heartbeat
    /// interval), during which a node that would lead holds its claim for
    /// a leader it has only heard of or a greeting still on the way.
    fn starting(&self, now: Instant) -> bool {
        let up_for = now.saturating_duration_since(self.started);
        up_for < self.timing.startup_grace + self.timing.heartbeat
    }

    /// Live peers that claim to lead.
    fn rival_claims(&self, now: Instant) -> impl Iterator<Item = (I, u64)> + '_ {
        self.index
            .following
            .iter()
            .filter(|(l, followers)| followers.contains(*l))
            .filter_map(move |(id, _)| {
                let p = self.peers.get(id)?;
                match &p.follows {
                    Some((l, e)) if l == id && self.live(p, now) => Some((id.clone(), *e)),
                    _ => None,
                }
            })
    }

    /// This node is leaving the cluster gracefully: from now on it claims
    /// nothing and follows no one, so its last heartbeats cannot start a
    /// term (which its successor would then have to overtake).
    pub fn leave(&mut self, now: Instant) -> Vec<Action<I>> {
        self.leaving = true;
        let mut actions = Vec::new();
        self.evaluate(now, &mut actions);
        actions
    }

    fn evaluate(&mut self, now: Instant, actions: &mut Vec<Action<I>>) {
        let before = self.leader.clone();
        let rightful = if self.leaving {
            None
        } else {
            self.rightful_leader(now)
        };
        match rightful {
            Some(rightful) if rightful == self.me => {
                let holding = match &self.leader {
                    Some((l, e)) if *l == self.me => !self.term_conflicted(*e, now),
                    _ => false,
                };
                let up_for = now.saturating_duration_since(self.started);
                // Joining, a live peer follows a leader this node has not
                // heard from yet, or a peer it is connected to has not
                // greeted it yet (a loaded cluster answers a greeting in
                // seconds): that one may well lead, or know who does, so
                // wait for it rather than claim a term the cluster would
                // only overtake. For one heartbeat interval at most: the
                // report may be stale (a quiet follower whose leader died
                // since), and a claim must not wait long on it.
                let in_grace = !holding
                    && (up_for < self.timing.startup_grace
                        || (self.starting(now)
                            && (!self.greeting.is_empty() || self.follows_unknown_leader(now))));
                // Above every term this node knows of: its own highest, and
                // any a live peer voted in for another leader (a leecher's
                // vote moves no epoch when heard, but it still shows that
                // term taken, and `term_conflicted` counts it; claiming
                // below it would only make this node claim again at once).
                let floor = self
                    .max_epoch
                    .max(self.highest_rival_vote(now).unwrap_or(0));
                if !holding && !in_grace && floor >= MAX_EPOCH {
                    // No epoch is left to claim (every peer would refuse
                    // MAX_EPOCH + 1): lead nobody rather than a term no one
                    // accepts. The node says so (`epochs_exhausted`).
                    self.leader = None;
                } else if !holding && !in_grace {
                    let epoch = floor + 1;
                    self.raise_epoch(epoch, actions);
                    self.vote(epoch, self.me.clone(), actions);
                    self.leader = Some((self.me.clone(), epoch));
                    self.overtaken = self.rival_claims(now).collect();
                } else if !holding {
                    // Starting up: follow whoever leads now until this node
                    // may claim, so the cluster it joins never sees a gap.
                    self.follow_current_claimant(now, actions);
                }
            }
            Some(rightful) => {
                let claim = self
                    .peers
                    .get(&rightful)
                    .and_then(|p| match &p.follows {
                        Some((l, e)) if *l == rightful => Some(*e),
                        _ => None,
                    })
                    .or_else(|| self.handed_to(&rightful, now));
                match claim {
                    Some(e) if self.leader.as_ref() == Some(&(rightful.clone(), e)) => {}
                    Some(e) if self.acceptable(&rightful, e) => {
                        self.raise_epoch(e, actions);
                        self.vote(e, rightful.clone(), actions);
                        self.leader = Some((rightful, e));
                    }
                    // A leader steps down only once the rightful one claims a
                    // term it can accept: no leaderless gap, and a rival that
                    // was cut off stays visible until the merged term is taken.
                    _ if self.is_leader() => {}
                    // It claims an epoch this node may not accept: keep following
                    // its current term while it catches up; drop anyone else.
                    Some(_) if matches!(&self.leader, Some((l, _)) if *l == rightful) => {}
                    // Following it on the old leader's word (see
                    // `handed_to`) while its own claim is still on the way:
                    // a report of an older term does not undo that.
                    None if matches!(&self.leader, Some((l, e)) if *l == rightful
                        && !self.disowned(l, *e)) => {}
                    // The rightful one has not claimed yet (a higher-ranked
                    // master back within its startup grace): keep following
                    // the leader of the current term while it is live and
                    // still leads, so failback leaves no leaderless gap; and
                    // follow it into a fresh term it takes meanwhile (it
                    // overtook a rival claim) when this node may. Once the
                    // rightful one claims a term this node may not accept,
                    // the current term is kept but no fresh one is taken.
                    _ => match self.followed_claim(now) {
                        Some(c) if self.leader.as_ref() == Some(&c) => {}
                        Some((l, e)) if claim.is_none() && self.acceptable(&l, e) => {
                            self.raise_epoch(e, actions);
                            self.vote(e, l.clone(), actions);
                            self.leader = Some((l, e));
                        }
                        _ => self.leader = None,
                    },
                }
            }
            None => self.leader = None,
        }
        if self.leader != before {
            let was_leader = matches!(&before, Some((l, _)) if *l == self.me);
            if self.is_leader() || was_leader {
                actions.push(Action::Announce);
            }
            actions.push(Action::LeaderChanged(self.leader.clone()));
        }
    }
}

/// How long a peer that announced heartbeats every `interval` may stay
/// unheard: `peer_timeout`, stretched in proportion for an interval longer
/// than `heartbeat`.
pub fn silence_for(t: &Timing, interval: Duration) -> Duration {
    if interval <= t.heartbeat || t.heartbeat.is_zero() {
        return t.peer_timeout;
    }
    let ratio = t.peer_timeout.as_secs_f64() / t.heartbeat.as_secs_f64();
    // Saturates rather than panics on an absurd `peer_timeout` (the
    // interval is a peer's word, at most `MAX_INTERVAL`).
    Duration::try_from_secs_f64(interval.as_secs_f64() * ratio)
        .unwrap_or(Duration::MAX)
        .max(t.peer_timeout)
}

/// When a heartbeat announcing `interval` is followed by the next: one
/// interval later at the full rate; a quiet follower's (an interval above `heartbeat`)
/// somewhere in the last quarter of its interval, by `unit` (0..1), so that
/// quiet followers that started together do not heartbeat together ever
/// after. Never later than the interval announced, which peers judge its
/// silence by.
pub fn quiet_delay(interval: Duration, heartbeat: Duration, unit: f64) -> Duration {
    if interval <= heartbeat {
        return interval;
    }
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        1.0
    };
    interval.mul_f64(0.75 + 0.25 * unit)
}

/// The rightful leader among candidates `(role, id)`: highest role, then lowest ID.
/// Callers pass only candidates that may lead and are live.
pub fn choose_leader<'a, I: Ord + 'a>(
    candidates: impl IntoIterator<Item = (Role, &'a I)>,
) -> Option<&'a I> {
    candidates
        .into_iter()
        .filter(|(role, _)| role.can_lead())
        .max_by(|(ra, ia), (rb, ib)| ra.cmp(rb).then_with(|| ib.cmp(ia)))
        .map(|(_, id)| id)
}

#[cfg(test)]
mod tests;
