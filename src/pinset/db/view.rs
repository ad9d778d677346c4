//! Reading the replica: a consistent view from one read transaction.

use std::path::PathBuf;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::codec::{decode_bin, decode_entry, decode_ranges};
use super::{BY_AUTHOR, CONFIRMED, K_PINS, K_TOMBSTONES, MEMBERS, META, PinDbError, STATE};
use crate::pinset::model::{Entry, Op, PinSpec, Vv};

/// Where index records start (they sort after every CID).
const INDEX_START: &str = "~";
use crate::pinset::replica::Member;
use crate::pinset::sync::{Collected, ReadView};

/// The replica as one read transaction sees it (pages stay consistent
/// however long they are read).
pub struct DbView {
    pub(super) txn: ReadTransaction,
    pub(super) vv: Vv,
    pub(super) floor: Vv,
    pub(super) collected: Collected,
    pub(super) path: PathBuf,
}

/// How many pins and tombstones a replica holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub pins: u64,
    pub tombstones: u64,
}

impl DbView {
    fn err(&self, e: impl std::fmt::Display) -> PinDbError {
        PinDbError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    pub(super) fn meta(&self, key: &str) -> Result<u64, PinDbError> {
        let meta = self.txn.open_table(META).map_err(|e| self.err(e))?;
        Ok(meta
            .get(key)
            .map_err(|e| self.err(e))?
            .map_or(0, |v| v.value()))
    }

    pub(super) fn read_vv(&self, table: TableDefinition<u64, &[u8]>) -> Result<Vv, PinDbError> {
        let t = self.txn.open_table(table).map_err(|e| self.err(e))?;
        let mut vv = Vv::default();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            vv.0.insert(k.value(), decode_ranges(&self.path, k.value(), v.value())?);
        }
        Ok(vv)
    }

    pub(super) fn members(&self) -> Result<std::collections::BTreeMap<String, Member>, PinDbError> {
        let t = self.txn.open_table(MEMBERS).map_err(|e| self.err(e))?;
        let mut out = std::collections::BTreeMap::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let m: Member = decode_bin(&self.path, || format!("member {}", k.value()), v.value())?;
            out.insert(k.value().to_owned(), m);
        }
        Ok(out)
    }

    /// Confirmed snapshots waiting out the removal horizon, oldest first.
    pub(super) fn confirmed(&self) -> Result<Vec<(u64, Vv)>, PinDbError> {
        let t = self.txn.open_table(CONFIRMED).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let what = || format!("confirmed snapshot {}", k.value());
            out.push((k.value(), decode_bin(&self.path, what, v.value())?));
        }
        Ok(out)
    }

    /// The view's version vector, owned.
    pub fn vv_owned(&self) -> Vv {
        self.vv.clone()
    }

    pub fn counts(&self) -> Result<Counts, PinDbError> {
        Ok(Counts {
            pins: self.meta(K_PINS)?,
            tombstones: self.meta(K_TOMBSTONES)?,
        })
    }

    /// The change that wins for `cid`, if any (a pin or a tombstone).
    pub fn get(&self, cid: &str) -> Result<Option<Entry>, PinDbError> {
        let t = self.txn.open_table(STATE).map_err(|e| self.err(e))?;
        t.get(cid)
            .map_err(|e| self.err(e))?
            .map(|v| decode_entry(&self.path, cid, v.value()))
            .transpose()
    }

    /// Changes in CID order after `after`, at most `limit` (tombstones too).
    pub fn entries(&self, after: Option<&str>, limit: usize) -> Result<Vec<Entry>, PinDbError> {
        self.entries_before(after, None, limit)
    }

    /// Changes with keys after `after` and before `end`, at most `limit`.
    fn entries_before(
        &self,
        after: Option<&str>,
        end: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>, PinDbError> {
        use std::ops::Bound;
        let t = self.txn.open_table(STATE).map_err(|e| self.err(e))?;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let end = end.map_or(Bound::Unbounded, Bound::Excluded);
        let range = t.range::<&str>((start, end)).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in range {
            if out.len() >= limit {
                break;
            }
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push(decode_entry(&self.path, k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Pins (no tombstones, no index records) in CID order after `after`, at most `limit`.
    pub fn pins(&self, after: Option<&str>, limit: usize) -> Result<Vec<PinSpec>, PinDbError> {
        let mut out = Vec::new();
        let mut cursor = after.map(str::to_owned);
        loop {
            // Index records sort after every CID.
            let page =
                self.entries_before(cursor.as_deref(), Some(INDEX_START), limit.max(1) * 2)?;
            let done = page.len() < limit.max(1) * 2;
            cursor = page.last().map(|e| e.cid().to_owned()).or(cursor);
            for e in page {
                if let Op::Pin(p) = e.op {
                    out.push(p);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// How many entries the by-author index holds (tests).
    pub fn indexed(&self) -> Result<u64, PinDbError> {
        let t = self.txn.open_table(BY_AUTHOR).map_err(|e| self.err(e))?;
        t.len().map_err(|e| self.err(e))
    }
}

impl ReadView for DbView {
    type Error = PinDbError;

    fn vv(&self) -> &Vv {
        &self.vv
    }

    fn floor(&self) -> &Vv {
        &self.floor
    }

    fn collected(&self) -> &Collected {
        &self.collected
    }

    fn scan_cids(&self, from: &str, f: &mut dyn FnMut(Entry) -> bool) -> Result<(), PinDbError> {
        let state = self.txn.open_table(STATE).map_err(|e| self.err(e))?;
        for row in state.range::<&str>(from..).map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            if !f(decode_entry(&self.path, k.value(), v.value())?) {
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
    ) -> Result<(), PinDbError> {
        let index = self.txn.open_table(BY_AUTHOR).map_err(|e| self.err(e))?;
        let state = self.txn.open_table(STATE).map_err(|e| self.err(e))?;
        for row in index
            .range((author, lo)..=(author, hi))
            .map_err(|e| self.err(e))?
        {
            let (_, cid) = row.map_err(|e| self.err(e))?;
            let cid = cid.value();
            let Some(v) = state.get(cid).map_err(|e| self.err(e))? else {
                return Err(PinDbError::Corrupt {
                    path: self.path.clone(),
                    what: format!("index entry for {cid}"),
                    message: "no such pin".into(),
                });
            };
            if !f(decode_entry(&self.path, cid, v.value())?) {
                break;
            }
        }
        Ok(())
    }
}
