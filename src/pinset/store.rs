//! The pinset on disk: the log and the applied state in one redb database
//! (`<data-dir>/pinset.redb`). Every method that changes it is one write
//! transaction committed durably, so a crash leaves either the old or the
//! new state, never half of one; a file that cannot be read is an error
//! naming it, never a silent reset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{Entry, LogPos, Op, PinSpec};

pub(super) mod log;
/// cid → bincode PinSpec (the applied state)
pub(super) const PINS: TableDefinition<&str, &[u8]> = TableDefinition::new("pins");
/// counters: see the `K_*` keys
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const K_COMMIT: &str = "commit";
/// redb's page cache.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The last entry folded into the state and dropped from the log.
const K_BASE_INDEX: &str = "base_index";
const K_BASE_EPOCH: &str = "base_epoch";
/// cid → bincode PinSpec: a snapshot being received ([`super::snapshot`]),
/// which becomes the state once complete.
pub(super) const STAGED: TableDefinition<&str, &[u8]> = TableDefinition::new("staged");
/// The pull the staged pins belong to.
pub(super) const K_STAGED_ID: &str = "staged_id";
/// cid → bincode PinSpec: pins this node had committed that the cluster's
/// log lost, kept until the leader has committed them again.
const RESCUED: TableDefinition<&str, &[u8]> = TableDefinition::new("rescued");

#[derive(Debug, thiserror::Error)]
pub enum PinStoreError {
    #[error("pinset database {path}: {message}")]
    Db { path: PathBuf, message: String },
    #[error("pinset database {path}: corrupt record {what}: {message}")]
    Corrupt {
        path: PathBuf,
        what: String,
        message: String,
    },
    /// A follower was asked to drop committed entries: a protocol violation.
    #[error("entry {index} conflicts with a committed entry (commit index {commit})")]
    ConflictBelowCommit { index: u64, commit: u64 },
    /// A snapshot older than what is committed here would lose entries.
    #[error("snapshot at index {at} is behind the commit index {commit}")]
    SnapshotBehind { at: u64, commit: u64 },
    #[error("no complete snapshot {id} is staged")]
    NotStaged { id: u64 },
}

/// The answer to [`PinStore::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored; the log now ends at this position.
    Ok(LogPos),
    /// The entry before them is missing or from another epoch: the leader
    /// must send from earlier (from `have` at most).
    Gap { have: LogPos },
}

pub struct PinStore {
    db: Arc<Database>,
    path: PathBuf,
    // Cached from disk; updated in the same call as the transaction commits.
    last: LogPos,
    commit: u64,
    base: LogPos,
}

pub(super) fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).expect("in-memory encoding")
}

pub(super) fn decode_entry(path: &Path, index: u64, bytes: &[u8]) -> Result<Entry, PinStoreError> {
    let ((epoch, op), _): ((u64, Op), usize) =
        bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map_err(|e| {
            PinStoreError::Corrupt {
                path: path.to_owned(),
                what: format!("log entry {index}"),
                message: e.to_string(),
            }
        })?;
    Ok(Entry { index, epoch, op })
}

/// The commit index and the base, as one read transaction sees them.
pub(super) fn counters(
    txn: &redb::ReadTransaction,
    path: &Path,
) -> Result<(u64, LogPos), PinStoreError> {
    let err = |e: redb::Error| PinStoreError::Db {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
    let get = |k| -> Result<u64, PinStoreError> {
        Ok(meta
            .get(k)
            .map_err(|e| err(e.into()))?
            .map_or(0, |v| v.value()))
    };
    let base = LogPos {
        index: get(K_BASE_INDEX)?,
        epoch: get(K_BASE_EPOCH)?,
    };
    Ok((get(K_COMMIT)?, base))
}

pub(super) fn decode_pin(path: &Path, cid: &str, bytes: &[u8]) -> Result<PinSpec, PinStoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(p, _)| p)
        .map_err(|e| PinStoreError::Corrupt {
            path: path.to_owned(),
            what: format!("pin {cid}"),
            message: e.to_string(),
        })
}

impl PinStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<PinStore, PinStoreError> {
        // redb caches up to 1 GiB by default; the pinset's working set is
        // far smaller, and the node's memory budget is tight.
        let shown = path.display().to_string();
        // redb "repairs" a new file too (it has no allocator state yet).
        let existed = path.metadata().is_ok_and(|m| m.len() > 0);
        let warned = std::cell::Cell::new(false);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_repair_callback(move |_| {
                if existed && !warned.replace(true) {
                    tracing::warn!(
                        "{shown} was not closed cleanly (the node was killed?): checking it"
                    );
                }
            })
            .create(path)
            .map_err(|e| PinStoreError::Db {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let mut store = PinStore {
            db: Arc::new(db),
            path: path.to_owned(),
            last: LogPos::default(),
            commit: 0,
            base: LogPos::default(),
        };
        // Make sure the tables exist, drop what an interrupted snapshot
        // pull left, move a log from before segments, then read the counters.
        let old_log = {
            let txn = store.db.begin_read().map_err(|e| store.err(e))?;
            log::has_old(&txn, |e| store.err(e))?
        };
        store.write(|txn, _, meta| {
            meta.remove(K_STAGED_ID).map_err(|e| store.err(e))?;
            txn.delete_table(STAGED).map_err(|e| store.err(e))?;
            if old_log {
                log::migrate(txn, |e| store.err(e))?;
            }
            Ok(())
        })?;
        let txn = store.db.begin_read().map_err(|e| store.err(e))?;
        let (commit, base) = counters(&txn, path)?;
        store.commit = commit;
        store.base = base;
        store.last = match log::last(&txn, |e| store.err(e))? {
            Some((index, v)) if index > base.index => LogPos {
                index,
                epoch: store.decode_entry(index, &v)?.epoch,
            },
            _ => store.base,
        };
        drop(txn);
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> PinStoreError {
        PinStoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn decode_entry(&self, index: u64, bytes: &[u8]) -> Result<Entry, PinStoreError> {
        decode_entry(&self.path, index, bytes)
    }

    /// A read-only view of the same database for other tasks.
    pub fn reader(&self) -> super::reader::PinReader {
        super::reader::PinReader::new(self.db.clone(), self.path.clone())
    }

    /// Runs `f` (with the state and counters open; the log's segments
    /// through [`log`]) in one durable write transaction.
    fn write<T>(
        &self,
        f: impl FnOnce(
            &redb::WriteTransaction,
            &mut redb::Table<&str, &[u8]>,
            &mut redb::Table<&str, u64>,
        ) -> Result<T, PinStoreError>,
    ) -> Result<T, PinStoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let out = {
            let mut pins = txn.open_table(PINS).map_err(|e| self.err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            f(&txn, &mut pins, &mut meta)?
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    pub fn last(&self) -> LogPos {
        self.last
    }

    pub fn commit_index(&self) -> u64 {
        self.commit
    }

    /// The last entry folded into the state (compacted or from a snapshot).
    pub fn base(&self) -> LogPos {
        self.base
    }

    /// The position of the entry at `index` (its epoch 0 if not held).
    pub fn pos_at(&self, index: u64) -> Result<LogPos, PinStoreError> {
        if index == self.base.index {
            return Ok(self.base);
        }
        Ok(LogPos {
            index,
            epoch: self.epoch_at(index)?.unwrap_or(0),
        })
    }

    /// The database, for snapshots read and received alongside this store.
    pub(super) fn shared(&self) -> (Arc<Database>, PathBuf) {
        (self.db.clone(), self.path.clone())
    }

    /// The leader's append: `ops` become entries after the last one, in one transaction.
    pub fn append_local(&mut self, epoch: u64, ops: Vec<Op>) -> Result<Vec<Entry>, PinStoreError> {
        let entries: Vec<Entry> = ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| Entry {
                index: self.last.index + 1 + i as u64,
                epoch,
                op,
            })
            .collect();
        let prev = self.last;
        match self.append(prev, &entries)? {
            Appended::Ok(_) => Ok(entries),
            Appended::Gap { .. } => unreachable!("appending after our own last entry"),
        }
    }

    /// A follower's append: `entries` (consecutive) follow the entry at `prev`.
    pub fn append(&mut self, prev: LogPos, entries: &[Entry]) -> Result<Appended, PinStoreError> {
        // Entries up to the base are committed, so they match the leader's.
        let matches = prev.index <= self.base.index
            || (prev.index <= self.last.index && self.epoch_at(prev.index)? == Some(prev.epoch));
        if !matches {
            let have = if prev.index > self.last.index {
                self.last
            } else {
                let i = (prev.index - 1).max(self.base.index);
                LogPos {
                    index: i,
                    epoch: self.epoch_at(i)?.unwrap_or(0),
                }
            };
            return Ok(Appended::Gap { have });
        }
        // Skip what we already hold; the first entry that differs cuts the log there.
        let mut cut = None;
        let mut new = Vec::new();
        for e in entries {
            if e.index <= self.base.index {
                continue;
            }
            match (cut, self.epoch_at(e.index)?) {
                (None, Some(ep)) if ep == e.epoch => continue,
                (None, Some(_)) => {
                    if e.index <= self.commit {
                        return Err(PinStoreError::ConflictBelowCommit {
                            index: e.index,
                            commit: self.commit,
                        });
                    }
                    cut = Some(e.index);
                    new.push(e);
                }
                _ => new.push(e),
            }
        }
        if new.is_empty() {
            return Ok(Appended::Ok(self.last));
        }
        let last_before = self.last.index;
        let encoded: Vec<(u64, Vec<u8>)> = new
            .iter()
            .map(|e| (e.index, encode(&(e.epoch, &e.op))))
            .collect();
        self.write(|txn, _, _| {
            if let Some(from) = cut {
                log::remove(txn, from, last_before, |e| self.err(e))?;
            }
            log::insert(txn, encoded.iter().map(|(i, b)| (*i, b.as_slice())), |e| {
                self.err(e)
            })
        })?;
        let tail = new.last().expect("not empty");
        self.last = LogPos {
            index: tail.index,
            epoch: tail.epoch,
        };
        Ok(Appended::Ok(self.last))
    }

    /// The epoch of the entry at `index` (0 → the empty log's epoch 0).
    fn epoch_at(&self, index: u64) -> Result<Option<u64>, PinStoreError> {
        if index == self.base.index {
            return Ok(Some(self.base.epoch));
        }
        if index < self.base.index || index > self.last.index {
            return Ok(None);
        }
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        match log::get(&txn, index, |e| self.err(e))? {
            Some(v) => Ok(Some(self.decode_entry(index, &v)?.epoch)),
            None => Ok(None),
        }
    }

    /// Applies every entry up to `index` (capped at the last one) to the state.
    pub fn commit_to(&mut self, index: u64) -> Result<u64, PinStoreError> {
        let target = index.min(self.last.index);
        if target <= self.commit {
            return Ok(self.commit);
        }
        let from = self.commit + 1;
        // Only this store writes the log: read now, apply in the transaction.
        let mut state_ops = Vec::new();
        {
            let txn = self.db.begin_read().map_err(|e| self.err(e))?;
            log::scan(
                &txn,
                from,
                target,
                |i, v| {
                    state_ops.push(self.decode_entry(i, v)?.op);
                    Ok(true)
                },
                |e| self.err(e),
            )?;
        }
        self.write(|_, pins, meta| {
            for op in state_ops {
                match op {
                    Op::Pin(spec) => {
                        let added = match pins.get(spec.cid.as_str()).map_err(|e| self.err(e))? {
                            Some(old) => self.decode_pin(&spec.cid, old.value())?.added_unix_ms,
                            None => spec.added_unix_ms,
                        };
                        let spec = PinSpec {
                            added_unix_ms: added,
                            ..spec
                        };
                        pins.insert(spec.cid.as_str(), encode(&spec).as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    Op::Unpin { cid } => {
                        pins.remove(cid.as_str()).map_err(|e| self.err(e))?;
                    }
                    Op::Barrier => {}
                }
            }
            meta.insert(K_COMMIT, target).map_err(|e| self.err(e))?;
            Ok(())
        })?;
        self.commit = target;
        Ok(target)
    }

    fn decode_pin(&self, cid: &str, bytes: &[u8]) -> Result<PinSpec, PinStoreError> {
        decode_pin(&self.path, cid, bytes)
    }

    /// Entries from `from` on, at most `max`; `None` if they were compacted away.
    pub fn entries(&self, from: u64, max: usize) -> Result<Option<Vec<Entry>>, PinStoreError> {
        if from <= self.base.index && self.base.index > 0 {
            return Ok(None);
        }
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        if max == 0 {
            return Ok(Some(out));
        }
        log::scan(
            &txn,
            from.max(self.base.index + 1),
            self.last.index,
            |i, v| {
                out.push(self.decode_entry(i, v)?);
                Ok(out.len() < max)
            },
            |e| self.err(e),
        )?;
        Ok(Some(out))
    }

    /// The applied pinset.
    pub fn pins(&self) -> Result<Vec<PinSpec>, PinStoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let pins = txn.open_table(PINS).map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(pins.len().map_err(|e| self.err(e))? as usize);
        for item in pins.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            out.push(self.decode_pin(k.value(), v.value())?);
        }
        Ok(out)
    }

    pub fn pin(&self, cid: &str) -> Result<Option<PinSpec>, PinStoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let pins = txn.open_table(PINS).map_err(|e| self.err(e))?;
        match pins.get(cid).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode_pin(cid, v.value())?)),
            None => Ok(None),
        }
    }

    /// Folds committed log entries older than the last `keep` into the
    /// base (the state already holds their effect) and drops the log
    /// segments that hold nothing after it. Catching up from before the
    /// base takes a snapshot.
    pub fn compact(&mut self, keep: u64) -> Result<(), PinStoreError> {
        let upto = self.commit.saturating_sub(keep);
        if upto <= self.base.index {
            return Ok(());
        }
        let epoch = self.epoch_at(upto)?.unwrap_or(self.base.epoch);
        let old = self.base.index;
        self.write(|txn, _, meta| {
            log::drop_upto(txn, old, upto, |e| self.err(e))?;
            meta.insert(K_BASE_INDEX, upto).map_err(|e| self.err(e))?;
            meta.insert(K_BASE_EPOCH, epoch).map_err(|e| self.err(e))?;
            Ok(())
        })?;
        self.base = LogPos { index: upto, epoch };
        Ok(())
    }

    /// This node's committed entries from `from` on differ from the
    /// cluster's: the nodes that held them were all down while the cluster
    /// went on without them. Keeps the pins they leave standing (the last
    /// op for each CID, if a pin) in the rescued table, and empties the
    /// log and the state to follow the leader's from scratch, in one
    /// durable transaction. Returns how many pins were rescued.
    ///
    /// Unpins are not replayed: the cluster may have pinned the item again
    /// since, and a stray copy is better than a lost one.
    pub fn rescue_and_reset(&mut self, from: u64) -> Result<usize, PinStoreError> {
        let mut last_op: BTreeMap<String, Option<PinSpec>> = BTreeMap::new();
        if from <= self.commit {
            for e in self
                .entries(from.max(self.base.index + 1), usize::MAX)?
                .unwrap_or_default()
            {
                if e.index > self.commit {
                    break;
                }
                match e.op {
                    Op::Pin(spec) => {
                        last_op.insert(spec.cid.clone(), Some(spec));
                    }
                    Op::Unpin { cid } => {
                        last_op.insert(cid, None);
                    }
                    Op::Barrier => {}
                }
            }
        }
        let rescued: Vec<PinSpec> = last_op.into_values().flatten().collect();
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.delete_table(PINS).map_err(|e| self.err(e))?;
        log::remove(&txn, self.base.index + 1, self.last.index, |e| self.err(e))?;
        {
            txn.open_table(PINS).map_err(|e| self.err(e))?;
            let mut table = txn.open_table(RESCUED).map_err(|e| self.err(e))?;
            for p in &rescued {
                table
                    .insert(p.cid.as_str(), encode(p).as_slice())
                    .map_err(|e| self.err(e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            for k in [K_COMMIT, K_BASE_INDEX, K_BASE_EPOCH] {
                meta.remove(k).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        self.base = LogPos::default();
        self.last = LogPos::default();
        self.commit = 0;
        Ok(rescued.len())
    }

    /// Rescued pins not yet committed again, at most `max`.
    pub fn rescued(&self, max: usize) -> Result<Vec<PinSpec>, PinStoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(RESCUED) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.err(e))?.take(max) {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push(self.decode_pin(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// These rescued pins are committed in the cluster again.
    pub fn forget_rescued(&mut self, cids: &[String]) -> Result<(), PinStoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(RESCUED).map_err(|e| self.err(e))?;
            for c in cids {
                table.remove(c.as_str()).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Makes the snapshot staged by pull `id` (see [`super::snapshot`]) the
    /// state, committed as of `at`, in one durable transaction: the log
    /// restarts after `at`. Refused if `at` is behind this store's commit.
    pub fn install_staged(&mut self, id: u64, at: LogPos) -> Result<(), PinStoreError> {
        if at.index < self.commit {
            return Err(PinStoreError::SnapshotBehind {
                at: at.index,
                commit: self.commit,
            });
        }
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let staged = meta.get(K_STAGED_ID).map_err(|e| self.err(e))?;
            if staged.map(|v| v.value()) != Some(id) {
                return Err(PinStoreError::NotStaged { id });
            }
        }
        // Swapping tables costs the same for ten pins or ten million.
        txn.delete_table(PINS).map_err(|e| self.err(e))?;
        txn.rename_table(STAGED, PINS).map_err(|e| self.err(e))?;
        log::remove(&txn, self.base.index + 1, self.last.index, |e| self.err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.remove(K_STAGED_ID).map_err(|e| self.err(e))?;
            meta.insert(K_COMMIT, at.index).map_err(|e| self.err(e))?;
            meta.insert(K_BASE_INDEX, at.index)
                .map_err(|e| self.err(e))?;
            meta.insert(K_BASE_EPOCH, at.epoch)
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        self.base = at;
        self.last = at;
        self.commit = at.index;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
