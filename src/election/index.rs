//! Indexes over the election's peer table, so that one input costs
//! O(log N) rather than a scan of every peer: who ranks where, who follows
//! and voted for whom, and when each peer's silence, suspicion and memory
//! run out.
//!
//! Every index is a function of the peer table alone: [`Election`] changes
//! a peer only through [`Index::remove`] before and [`Index::insert`] after
//! (see `Election::update`), and in debug builds checks after each input
//! that the indexes equal the ones [`Index::build`] makes from scratch.
//!
//! [`Election`]: super::Election

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::{Liveness, PeerState, Timing};
use crate::role::Role;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Index<I> {
    /// Masters and workers, highest rank first (highest role, then lowest ID).
    pub ranked: BTreeSet<(Reverse<Role>, I)>,
    /// Peers by the leader their last report follows (the leader itself
    /// among them when it claims to lead).
    pub following: BTreeMap<I, BTreeSet<I>>,
    /// Peers by the epoch and leader of the last vote they reported.
    pub votes: BTreeMap<u64, BTreeMap<I, BTreeSet<I>>>,
    /// Alive and suspect peers by the instant their allowed silence runs
    /// out (none for a silence too long to add up).
    pub silent_at: BTreeSet<(Instant, I)>,
    /// Suspect peers by the instant they are confirmed dead.
    pub confirmed_at: BTreeSet<(Instant, I)>,
    /// Every peer by the instant it is forgotten.
    pub forget_at: BTreeSet<(Instant, I)>,
    /// Alive and suspect peers (live unless their silence ran out).
    pub reachable: usize,
}

/// Where one peer stands in each index.
struct Keys<I> {
    rank: Option<Role>,
    follows: Option<I>,
    voted: Option<(u64, I)>,
    silent_at: Option<Instant>,
    confirmed_at: Option<Instant>,
    forget_at: Option<Instant>,
    reachable: bool,
}

impl<I: Ord + Clone> Keys<I> {
    fn of(p: &PeerState<I>, t: &Timing) -> Self {
        let reachable = matches!(p.liveness, Liveness::Alive | Liveness::Suspect { .. });
        Keys {
            rank: p.role.can_lead().then_some(p.role),
            follows: p.follows.as_ref().map(|(l, _)| l.clone()),
            voted: p.voted.as_ref().map(|(l, e)| (*e, l.clone())),
            silent_at: reachable
                .then(|| p.last_heard.checked_add(p.silence))
                .flatten(),
            confirmed_at: match p.liveness {
                Liveness::Suspect { since } => since.checked_add(t.suspect_timeout),
                _ => None,
            },
            forget_at: p.last_heard.checked_add(forget_after(t, p)),
            reachable,
        }
    }
}

/// How long a peer is remembered after it was last heard.
pub(super) fn forget_after<I>(t: &Timing, p: &PeerState<I>) -> std::time::Duration {
    t.forget_after.max(p.silence.saturating_mul(2))
}

impl<I: Ord + Clone> Default for Index<I> {
    fn default() -> Self {
        Index {
            ranked: BTreeSet::new(),
            following: BTreeMap::new(),
            votes: BTreeMap::new(),
            silent_at: BTreeSet::new(),
            confirmed_at: BTreeSet::new(),
            forget_at: BTreeSet::new(),
            reachable: 0,
        }
    }
}

impl<I: Ord + Clone> Index<I> {
    /// The indexes of a whole peer table.
    pub fn build(peers: &BTreeMap<I, PeerState<I>>, t: &Timing) -> Self {
        let mut index = Index::default();
        for (id, p) in peers {
            index.insert(id, p, t);
        }
        index
    }

    pub fn insert(&mut self, id: &I, p: &PeerState<I>, t: &Timing) {
        let k = Keys::of(p, t);
        if let Some(role) = k.rank {
            self.ranked.insert((Reverse(role), id.clone()));
        }
        if let Some(l) = k.follows {
            self.following.entry(l).or_default().insert(id.clone());
        }
        if let Some((e, l)) = k.voted {
            self.votes
                .entry(e)
                .or_default()
                .entry(l)
                .or_default()
                .insert(id.clone());
        }
        for (set, at) in [
            (&mut self.silent_at, k.silent_at),
            (&mut self.confirmed_at, k.confirmed_at),
            (&mut self.forget_at, k.forget_at),
        ] {
            if let Some(at) = at {
                set.insert((at, id.clone()));
            }
        }
        self.reachable += usize::from(k.reachable);
    }

    pub fn remove(&mut self, id: &I, p: &PeerState<I>, t: &Timing) {
        let k = Keys::of(p, t);
        if let Some(role) = k.rank {
            self.ranked.remove(&(Reverse(role), id.clone()));
        }
        if let Some(l) = k.follows
            && let Some(set) = self.following.get_mut(&l)
        {
            set.remove(id);
            if set.is_empty() {
                self.following.remove(&l);
            }
        }
        if let Some((e, l)) = k.voted
            && let Some(by_leader) = self.votes.get_mut(&e)
        {
            if let Some(set) = by_leader.get_mut(&l) {
                set.remove(id);
                if set.is_empty() {
                    by_leader.remove(&l);
                }
            }
            if by_leader.is_empty() {
                self.votes.remove(&e);
            }
        }
        for (set, at) in [
            (&mut self.silent_at, k.silent_at),
            (&mut self.confirmed_at, k.confirmed_at),
            (&mut self.forget_at, k.forget_at),
        ] {
            if let Some(at) = at {
                set.remove(&(at, id.clone()));
            }
        }
        self.reachable -= usize::from(k.reachable);
    }

    /// Alive or suspect peers whose allowed silence ran out before `now`
    /// (silent over a connection that still looks open; few, and only
    /// until they are heard again or forgotten).
    pub fn silent(&self, now: Instant) -> usize {
        self.silent_at
            .iter()
            .take_while(|(at, _)| *at < now)
            .count()
    }

    /// The first instant in `set` at or after `now`.
    pub fn next_at(set: &BTreeSet<(Instant, I)>, now: Instant) -> Option<Instant> {
        set.iter().map(|(at, _)| *at).find(|at| *at >= now)
    }

    /// The peers in `set` whose instant is before `now`.
    pub fn due(set: &BTreeSet<(Instant, I)>, now: Instant) -> Vec<I> {
        set.iter()
            .take_while(|(at, _)| *at < now)
            .map(|(_, id)| id.clone())
            .collect()
    }
}
