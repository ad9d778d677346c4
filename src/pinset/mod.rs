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
//!   every change one atomic, durable transaction; [`reader::PinReader`]
//!   reads what is committed from other tasks.
//! * [`snapshot`]: the committed state served and pulled in pages, for a
//!   node too far behind the log (or behind its compacted part).
//! * [`actor`]: the pinset task (log replication, writes).
//! * [`keeper`]: on the leader, orders holders to pin and unpin so every
//!   item keeps its replication factor ([`plan`] decides).
//! * [`holder`]: on every node, carries out orders on the local IPFS and
//!   reports what it holds; [`held::HeldStore`] remembers it across restarts.

pub mod actor;
pub mod db;
pub mod held;
pub mod holder;
pub mod keeper;
pub mod model;
pub mod plan;
pub mod reader;
pub mod replica;
pub mod replicate;
pub mod snapshot;
pub mod store;
pub mod sync;

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

/// Runs a pinset task on a thread of its own, with a current-thread
/// runtime: its redb transactions end in an fsync and planning over a
/// large pinset is CPU-bound, and neither may hold up the node loop and the
/// API on the main runtime's two worker threads. Joining the thread after
/// the task's stop token is cancelled waits until it has dropped its
/// databases (closed cleanly, so the next start needs no repair).
pub(crate) fn spawn_task(
    name: &str,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || runtime.block_on(task))
}

/// Longest pin name accepted, in bytes.
pub const MAX_NAME: usize = 255;
/// Highest replication factor accepted.
pub const MAX_REPLICATION: u8 = 64;

/// Parses a CID as a user or a peer gives it and returns its canonical
/// text (CIDv0 stays base58btc, CIDv1 becomes base32), so one item has one key.
pub fn canonical_cid(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() || t.len() > 128 {
        return Err(format!("invalid CID {s:?}: expected 1 to 128 characters"));
    }
    cid::Cid::try_from(t)
        .map(|c| c.to_string())
        .map_err(|e| format!("invalid CID {s:?}: {e}"))
}

impl PinSpec {
    /// Checks what a client or a peer sent: a canonical CID, a name of at
    /// most [`MAX_NAME`] bytes, 1 <= min <= max <= [`MAX_REPLICATION`].
    pub fn check(&self) -> Result<(), String> {
        if canonical_cid(&self.cid)? != self.cid {
            return Err(format!("CID {:?} is not in canonical form", self.cid));
        }
        if self.name.len() > MAX_NAME {
            return Err(format!("name longer than {MAX_NAME} bytes"));
        }
        let (min, max) = (self.replication_min, self.replication_max);
        if min == 0 || min > max || max > MAX_REPLICATION {
            return Err(format!(
                "replication {min}..{max}: need 1 <= min <= max <= {MAX_REPLICATION}"
            ));
        }
        Ok(())
    }
}

/// An upper bound on the encoded size of an entry.
pub fn encoded_size_bound(e: &Entry) -> usize {
    // Varint index and epoch, enum tags, string lengths, the u8s and the u64.
    32 + match &e.op {
        Op::Pin(p) => p.cid.len() + p.name.len() + 16,
        Op::Unpin { cid } => cid.len(),
        Op::Barrier => 0,
    }
}

/// Drops entries from the end until the batch fits in `budget` bytes
/// (always keeps the first: one entry fits any real budget).
pub fn fit_batch(entries: &mut Vec<Entry>, budget: usize) {
    let mut total = 0;
    let keep = entries
        .iter()
        .position(|e| {
            total += encoded_size_bound(e);
            total > budget
        })
        .unwrap_or(entries.len())
        .max(1);
    entries.truncate(keep);
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
    fn cids_are_parsed_and_made_canonical() {
        let v0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";
        assert_eq!(canonical_cid(v0).unwrap(), v0);
        assert_eq!(canonical_cid(&format!(" {v0}\n")).unwrap(), v0);
        let v1 = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
        assert_eq!(canonical_cid(v1).unwrap(), v1);
        // The same CIDv1 in base58btc is one item with its base32 form.
        let c = cid::Cid::try_from(v1).unwrap();
        let b58 = c
            .to_string_of_base(cid::multibase::Base::Base58Btc)
            .unwrap();
        assert_eq!(canonical_cid(&b58).unwrap(), v1);
        for bad in ["", "hello", "Qm123", "bafy!!", &"Qm".repeat(100)] {
            assert!(canonical_cid(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn pin_specs_are_checked() {
        let ok = PinSpec {
            cid: "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o".into(),
            ..spec("x", 0)
        };
        assert!(ok.check().is_ok());
        for bad in [
            PinSpec {
                replication_min: 0,
                ..ok.clone()
            },
            PinSpec {
                replication_min: 4,
                ..ok.clone()
            },
            PinSpec {
                replication_max: 65,
                ..ok.clone()
            },
            PinSpec {
                name: "n".repeat(256),
                ..ok.clone()
            },
            PinSpec {
                cid: "nope".into(),
                ..ok.clone()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
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
    fn batches_are_cut_to_the_byte_budget_and_encode_within_it() {
        let big = PinSpec {
            cid: "Qm".repeat(40),
            name: "n".repeat(MAX_NAME),
            ..spec("x", u64::MAX)
        };
        let mut entries: Vec<Entry> = (1..=crate::wire::MAX_PINSET_BATCH as u64)
            .map(|index| Entry {
                index,
                epoch: u64::MAX >> 16,
                op: Op::Pin(big.clone()),
            })
            .collect();
        fit_batch(&mut entries, crate::wire::MAX_PINSET_BATCH_BYTES);
        assert!(entries.len() < crate::wire::MAX_PINSET_BATCH);
        let req = crate::wire::Request::Pinset(crate::wire::PinsetRequest::Append {
            epoch: 1,
            prev: LogPos::default(),
            entries,
            commit: 0,
        });
        let bytes = crate::wire::encode(&req);
        assert!(
            bytes.len() <= crate::wire::MAX_PINSET_BATCH_BYTES,
            "{}",
            bytes.len()
        );
        let mut one = vec![Entry {
            index: 1,
            epoch: 1,
            op: Op::Barrier,
        }];
        fit_batch(&mut one, 0);
        assert_eq!(one.len(), 1);
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
