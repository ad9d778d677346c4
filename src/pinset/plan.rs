//! Replica planning, pure: from the desired pinset, the peers as the leader
//! sees them and what each holder reports, the pin and unpin orders that
//! bring every item to its replication factor. Time is passed in.
//!
//! * A holder counts while it is live, and for `grace` after it stops
//!   being live (a quick restart does not move everything).
//! * New copies go only to live masters and workers whose IPFS is ready and
//!   whose disk has room, most free space first, spreading load by counting
//!   the orders already given in this round; never to a leecher.
//! * Items get up to `replication_max` copies, at least `replication_min`
//!   when enough peers qualify; extras above the max are trimmed.
//! * An item allocated to a peer list gets copies only on that list's
//!   peers; its copies elsewhere are unpinned once the list's peers hold
//!   `replication_min` (an unknown or empty list gives it no new copies).
//! * Copies of items the pinset holds a removal (tombstone) for are
//!   unpinned; a copy of an item the pinset does not know at all is left
//!   alone (a lagging or new replica must never unpin what it has not yet
//!   heard of).
//! * A peer that failed to pin an item is not asked again for it until
//!   `retry_after` has passed, doubled for every further failure in a row
//!   (at most [`MAX_BACKOFF`] times); other peers may be asked meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::PinSpec;
use crate::role::Role;

/// A CID as the keeper holds it: one allocation shared by the pinset and
/// every holding (a million items would otherwise cost one string each,
/// per copy).
pub type Key = Arc<str>;

/// The pinset as the planner sees it: the items to keep, the items whose
/// last change is a removal, and the peer lists items may be allocated to.
#[derive(Debug, Clone, Default)]
pub struct Pinset {
    pub pins: BTreeMap<Key, Want>,
    pub removed: BTreeSet<Key>,
    /// List name → peer IDs ([`crate::index::peers`]).
    pub lists: BTreeMap<String, BTreeSet<String>>,
}

/// What the planner needs to know of an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub min: u8,
    pub max: u8,
    /// Copies only on peers of this list.
    pub list: Option<Key>,
}

impl From<&PinSpec> for Want {
    fn from(p: &PinSpec) -> Want {
        Want {
            min: p.replication_min,
            max: p.replication_max,
            list: p.allocation.as_deref().map(Key::from),
        }
    }
}

/// A peer as the planner needs it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub role: Role,
    /// Live now; `down_since` tells since when it is not.
    pub live: bool,
    pub down_since: Option<Instant>,
    pub ipfs_ready: bool,
    pub disk_free: u64,
}

/// What one holder has, by its own report (pinned per its IPFS, or an
/// order it is still carrying out), and what failed there.
#[derive(Debug, Clone, Default)]
pub struct Holding {
    pub pinned: BTreeSet<Key>,
    pub in_flight: BTreeSet<Key>,
    /// cid → when and how many times in a row the pin failed.
    pub failed: HashMap<Key, Failure>,
}

/// A holder's failed pins of one item, in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub at: Instant,
    pub count: u32,
}

/// The longest wait before asking a holder again is `retry_after` times this.
pub const MAX_BACKOFF: u32 = 32;

impl Failure {
    /// When the holder may be asked for the item again.
    pub fn retry_at(&self, retry_after: Duration) -> Instant {
        let factor = 1u32 << self.count.saturating_sub(1).min(MAX_BACKOFF.ilog2());
        self.at + retry_after * factor
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub grace: Duration,
    pub retry_after: Duration,
    /// A peer with less free disk gets no new copies.
    pub min_free: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Order {
    Pin { peer: String, cid: Key },
    Unpin { peer: String, cid: Key },
}

fn counts(peer: &Candidate, now: Instant, limits: &Limits) -> bool {
    peer.role.can_lead()
        && (peer.live
            || peer
                .down_since
                .is_some_and(|t| now.saturating_duration_since(t) < limits.grace))
}

fn takes_new(peer: &Candidate, limits: &Limits) -> bool {
    peer.role.can_lead() && peer.live && peer.ipfs_ready && peer.disk_free >= limits.min_free
}

/// The orders for one round.
pub fn plan(
    pinset: &Pinset,
    peers: &[Candidate],
    holdings: &HashMap<String, Holding>,
    limits: &Limits,
    now: Instant,
) -> Vec<Order> {
    let pins = &pinset.pins;
    let empty = Holding::default();
    let holding = |id: &str| holdings.get(id).unwrap_or(&empty);
    // Orders given this round count as load, so one round spreads.
    let mut load: HashMap<&str, u64> = peers
        .iter()
        .map(|p| {
            let h = holding(&p.id);
            (p.id.as_str(), (h.pinned.len() + h.in_flight.len()) as u64)
        })
        .collect();
    let mut orders = Vec::new();

    let no_list = BTreeSet::new();
    for (cid, want) in pins {
        // With an allocation, only the list's peers count and take copies;
        // a copy elsewhere goes once the list holds the minimum.
        let allowed = want
            .list
            .as_ref()
            .map(|l| pinset.lists.get(&**l).unwrap_or(&no_list));
        let in_list = |p: &Candidate| allowed.is_none_or(|a| a.contains(&p.id));
        let holds = |p: &Candidate| {
            let h = holding(&p.id);
            h.pinned.contains(cid) || h.in_flight.contains(cid)
        };
        let holders: Vec<&Candidate> = peers
            .iter()
            .filter(|p| counts(p, now, limits))
            .filter(|p| in_list(p) && holds(p))
            .collect();
        if holders.len() >= usize::from(want.min.max(1)) {
            for p in peers.iter().filter(|p| p.live && !in_list(p) && holds(p)) {
                orders.push(Order::Unpin {
                    peer: p.id.clone(),
                    cid: cid.clone(),
                });
            }
        }
        let max = usize::from(want.max.max(want.min).max(1));
        if holders.len() < max {
            let mut fresh: Vec<&Candidate> = peers
                .iter()
                .filter(|p| takes_new(p, limits) && in_list(p))
                .filter(|p| !holders.iter().any(|h| h.id == p.id))
                .filter(|p| {
                    holding(&p.id)
                        .failed
                        .get(cid)
                        .is_none_or(|f| now >= f.retry_at(limits.retry_after))
                })
                .collect();
            // Least loaded, then most free disk, then ID (deterministic).
            fresh.sort_by(|a, b| {
                load[a.id.as_str()]
                    .cmp(&load[b.id.as_str()])
                    .then(b.disk_free.cmp(&a.disk_free))
                    .then(a.id.cmp(&b.id))
            });
            for p in fresh.into_iter().take(max - holders.len()) {
                *load.get_mut(p.id.as_str()).expect("every peer has a load") += 1;
                orders.push(Order::Pin {
                    peer: p.id.clone(),
                    cid: cid.clone(),
                });
            }
        } else if holders.len() > max {
            // Keep the live ones with the most room; trim the rest.
            let mut keep = holders.clone();
            keep.sort_by(|a, b| {
                b.live
                    .cmp(&a.live)
                    .then(b.disk_free.cmp(&a.disk_free))
                    .then(a.id.cmp(&b.id))
            });
            for p in keep.into_iter().skip(max).filter(|p| p.live) {
                orders.push(Order::Unpin {
                    peer: p.id.clone(),
                    cid: cid.clone(),
                });
            }
        }
    }

    // Copies of items removed from the pinset (never of unknown ones).
    for p in peers.iter().filter(|p| p.live) {
        for cid in &holding(&p.id).pinned {
            if pinset.removed.contains(cid) {
                orders.push(Order::Unpin {
                    peer: p.id.clone(),
                    cid: cid.clone(),
                });
            }
        }
    }
    orders
}

#[cfg(test)]
mod tests;
