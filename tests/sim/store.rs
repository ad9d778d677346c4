//! The simulator's durable store: what a node keeps across a crash, in
//! memory, applying persists exactly as the redb store does (last writer
//! wins per CID, the vector grows), and serving anti-entropy pages from a
//! frozen copy of itself.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use ipfs_kit_p2p::pinset::model::{Entry, Vv, wins};
use ipfs_kit_p2p::pinset::replica::{Loaded, Member, Persist};
use ipfs_kit_p2p::pinset::sync::{Collected, ReadView};

#[derive(Debug, Clone, Default)]
pub struct MemStore {
    pub author: u64,
    pub state: BTreeMap<String, Entry>,
    /// (author, seq) → cid of the winners.
    pub index: BTreeMap<(u64, u64), String>,
    pub vv: Vv,
    /// Changes that may be in the state but not in the index.
    pub floor: Vv,
    /// What was collected (its `hlc` kept equal to `hlc`).
    pub collected: Collected,
    /// Confirmed snapshots waiting out the removal horizon.
    pub confirmed: BTreeMap<u64, Vv>,
    /// Tombstones dropped so far (by collection or pruning).
    pub dropped: u64,
    /// CIDs pruned and not stored since: overtaken by a removal this node
    /// may not have seen yet (its vector grows with the session's end).
    pub pruned: BTreeSet<String>,
    pub hlc: u64,
    pub members: BTreeMap<String, Member>,
    /// The highest election epoch seen (the node's `state.json`).
    pub epoch: u64,
    /// The vote kept with it.
    pub voted: Option<(String, u64)>,
    pub incarnation: u64,
}

impl MemStore {
    pub fn new(author: u64) -> MemStore {
        MemStore {
            author,
            ..MemStore::default()
        }
    }

    pub fn loaded(&self) -> Loaded {
        Loaded {
            author: self.author,
            vv: self.vv.clone(),
            hlc: self.hlc,
            members: self.members.clone(),
            collected: self.collected.vv.clone(),
            confirmed: self.confirmed.clone().into_iter().collect(),
        }
    }

    /// As `PinDb::collect`: drops the tombstones `upto` names stamped
    /// below `before` but those of CIDs in `held`, which it returns.
    pub fn collect(&mut self, upto: &Vv, before: u64, held: &BTreeSet<String>) -> Vec<String> {
        let found: Vec<(String, (u64, u64))> = self
            .state
            .iter()
            .filter(|(_, e)| e.is_removal() && upto.contains(e.id()) && e.stamp.hlc < before)
            .map(|(c, e)| (c.clone(), e.id()))
            .collect();
        let mut kept = Vec::new();
        for (cid, id) in found {
            if held.contains(&cid) {
                kept.push(cid);
            } else {
                self.state.remove(&cid);
                self.index.remove(&id);
                self.dropped += 1;
            }
        }
        self.collected.vv.union(upto);
        let all = self.collected.vv.clone();
        self.confirmed.retain(|_, v| !all.covers(v));
        kept
    }

    /// As `PinDb::prune`.
    /// Returns what it dropped.
    pub fn prune(
        &mut self,
        from: &str,
        to: Option<&str>,
        keep: &[String],
        seen: &Vv,
    ) -> Vec<Entry> {
        let doomed: Vec<(String, (u64, u64))> = self
            .state
            .iter()
            .filter(|(c, e)| {
                c.as_str() >= from
                    && to.is_none_or(|t| c.as_str() < t)
                    && !keep.contains(c)
                    && seen.contains(e.id())
            })
            .map(|(c, e)| (c.clone(), e.id()))
            .collect();
        let mut out = Vec::new();
        for (cid, id) in doomed {
            out.extend(self.state.remove(&cid));
            self.index.remove(&id);
            self.dropped += 1;
            self.pruned.insert(cid);
        }
        out
    }

    pub fn apply(&mut self, p: &Persist) {
        for e in &p.entries {
            let old = self.state.get(e.cid());
            if wins(e.order(), old.map(Entry::order)) {
                if let Some(o) = old {
                    self.index.remove(&o.id());
                }
                if !p.unindexed {
                    self.index.insert(e.id(), e.cid().to_owned());
                }
                self.pruned.remove(e.cid());
                self.state.insert(e.cid().to_owned(), e.clone());
            }
        }
        self.vv.union(&p.seen);
        self.floor.union(&p.floor);
        self.hlc = self.hlc.max(p.hlc);
        self.collected.hlc = self.hlc;
        for (id, m) in &p.members {
            match m {
                Some(m) => {
                    self.members.insert(id.clone(), *m);
                }
                None => {
                    self.members.remove(id);
                }
            }
        }
    }
}

impl ReadView for MemStore {
    type Error = Infallible;

    fn vv(&self) -> &Vv {
        &self.vv
    }

    fn floor(&self) -> &Vv {
        &self.floor
    }

    fn collected(&self) -> &Collected {
        &self.collected
    }

    fn scan_cids(&self, from: &str, f: &mut dyn FnMut(Entry) -> bool) -> Result<(), Infallible> {
        use std::ops::Bound;
        let range = (Bound::Included(from), Bound::Unbounded);
        for (_, e) in self.state.range::<str, _>(range) {
            if !f(e.clone()) {
                break;
            }
        }
        Ok(())
    }

    fn scan_author(
        &self,
        author: u64,
        lo: u64,
        hi: u64,
        f: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<(), Infallible> {
        for (_, cid) in self.index.range((author, lo)..=(author, hi)) {
            if !f(self.state[cid].clone()) {
                break;
            }
        }
        Ok(())
    }
}
