//! The cluster pinset: what the cluster keeps pinned, as an ordered log of
//! pin/unpin operations that the leader appends and replicates to every
//! master-eligible node, and the state that applying it builds.
//!
//! The log follows Raft's rules for its entries (not for elections, which
//! [`crate::election`] decides): every entry has an index and the epoch of
//! the leader that wrote it; a follower accepts entries only after the one
//! the leader says precedes them, and drops a conflicting suffix; entries up
//! to the commit index (durable on the leader and at least one other eligible
//! node) are applied to the state and never change again.
//!
//! * [`PinSpec`], [`Op`], [`Entry`], [`LogPos`]: the data.
//! * [`plan`]: which peers should hold which items: pure replica planning.
//! * [`replicate`]: the leader's view of each follower's log, what to send
//!   next, and the commit index: pure.
//! * [`store::PinStore`]: the log and the applied state in one redb file,
//!   every change one atomic, durable transaction.

pub mod plan;
pub mod replicate;
pub mod store;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One item the cluster keeps pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinSpec {
    pub cid: String,
    pub name: String,
    /// Fewer healthy copies than this: the leader adds copies.
    pub replication_min: u8,
    /// More than this: the leader trims copies.
    pub replication_max: u8,
    /// When the pin was first added (leader's clock).
    pub added_unix_ms: u64,
}

/// A change to the pinset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Adds the pin, or updates its name and replication.
    Pin(PinSpec),
    Unpin {
        cid: String,
    },
    /// Changes nothing. A new leader writes one first: entries of earlier
    /// epochs are committed only through an entry of the current one.
    Barrier,
}

/// A log entry: the `index`-th change, written by the leader of `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub index: u64,
    pub epoch: u64,
    pub op: Op,
}

/// A position in the log; `index` 0 is the empty log.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogPos {
    /// Compared first: a log whose last entry is from a later epoch is more
    /// advanced, whatever its length (Raft's "up to date" rule).
    pub epoch: u64,
    pub index: u64,
}

/// Applies `op` to an in-memory pinset (what the store does on disk).
pub fn apply(pins: &mut BTreeMap<String, PinSpec>, op: &Op) {
    match op {
        Op::Pin(spec) => {
            let added = pins
                .get(&spec.cid)
                .map_or(spec.added_unix_ms, |p| p.added_unix_ms);
            pins.insert(
                spec.cid.clone(),
                PinSpec {
                    added_unix_ms: added,
                    ..spec.clone()
                },
            );
        }
        Op::Unpin { cid } => {
            pins.remove(cid);
        }
        Op::Barrier => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cid: &str, added: u64) -> PinSpec {
        PinSpec {
            cid: cid.into(),
            name: String::new(),
            replication_min: 2,
            replication_max: 3,
            added_unix_ms: added,
        }
    }

    #[test]
    fn repinning_keeps_the_first_added_time() {
        let mut pins = BTreeMap::new();
        apply(&mut pins, &Op::Pin(spec("a", 1)));
        apply(
            &mut pins,
            &Op::Pin(PinSpec {
                name: "renamed".into(),
                ..spec("a", 9)
            }),
        );
        assert_eq!(pins["a"].added_unix_ms, 1);
        assert_eq!(pins["a"].name, "renamed");
        apply(&mut pins, &Op::Unpin { cid: "a".into() });
        assert!(pins.is_empty());
    }

    #[test]
    fn later_epochs_are_more_advanced_whatever_the_length() {
        let long_old = LogPos {
            epoch: 3,
            index: 100,
        };
        let short_new = LogPos { epoch: 4, index: 7 };
        assert!(short_new > long_old);
        assert!(LogPos { epoch: 4, index: 8 } > short_new);
    }
}
