//! The simulator's durable store: what a node keeps across a crash, in
//! memory, applying persists exactly as the redb store does (last writer
//! wins per CID, the vector grows), and serving anti-entropy pages from a
//! frozen copy of itself.

use std::collections::BTreeMap;
use std::convert::Infallible;

use ipfs_kit_p2p::pinset::model::{Entry, Vv, wins};
use ipfs_kit_p2p::pinset::replica::{Loaded, Member, Persist};
use ipfs_kit_p2p::pinset::sync::ReadView;

#[derive(Debug, Clone, Default)]
pub struct MemStore {
    pub author: u64,
    pub state: BTreeMap<String, Entry>,
    /// (author, seq) → cid of the winners.
    pub index: BTreeMap<(u64, u64), String>,
    pub vv: Vv,
    /// Changes that may be in the state but not in the index.
    pub floor: Vv,
    pub hlc: u64,
    pub members: BTreeMap<String, Member>,
    /// The highest election epoch seen (the node's `state.json`).
    pub epoch: u64,
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
        }
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
                self.state.insert(e.cid().to_owned(), e.clone());
            }
        }
        self.vv.union(&p.seen);
        self.floor.union(&p.floor);
        self.hlc = self.hlc.max(p.hlc);
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
