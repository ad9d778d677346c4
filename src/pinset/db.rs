//! The replica on disk (`<data-dir>/pinset.redb`): the state (per CID the
//! winning change, tombstones included), an index of the winners by
//! `(author, seq)` for anti-entropy, the version vector, the members met,
//! and counters. [`PinDb::persist`] applies the core's persists in one
//! durable transaction, so a crash leaves the old or the new state, never
//! half of one; a file that cannot be read is an error naming it. Small
//! batches are made durable through a journal and reach the database's
//! disk pages in bulk (see [`journal`]).
//!
//! A database written by an earlier version (the leader's log) is moved
//! over on open: its committed pins become changes of this replica, stamped
//! with the time each was first added (older than anything new).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::model::{Entry, Hlc, Op, PinSpec, Stamp, Vv, wins};
use super::replica::{Loaded, Persist};
use crate::index::{Indexes, is_index_key};

mod codec;
mod collect;
mod journal;
mod view;
use codec::{bin, decode_entry, encode_entry, stamp_of};
use journal::Journal;
pub use view::{Counts, DbView};

/// cid → [`encode_entry`]
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("crdt.state");
/// (author, seq) → cid, for every change in the state.
const BY_AUTHOR: TableDefinition<(u64, u64), &str> = TableDefinition::new("crdt.by_author");
/// author → bincode [`Ranges`]
const VV: TableDefinition<u64, &[u8]> = TableDefinition::new("crdt.vv");
/// author → bincode [`Ranges`]: the index floor (changes that may be in
/// the state without being in `BY_AUTHOR`, see [`super::sync`]).
const FLOOR: TableDefinition<u64, &[u8]> = TableDefinition::new("crdt.floor");
/// peer ID → bincode [`Member`]
const MEMBERS: TableDefinition<&str, &[u8]> = TableDefinition::new("crdt.members");
/// (author, seq) → cid, for every tombstone in the state (indexed or not):
/// what collecting removals looks through.
const TOMBS: TableDefinition<(u64, u64), &str> = TableDefinition::new("crdt.tombs");
/// author → bincode [`Ranges`]: removals that may have been collected.
const COLLECTED: TableDefinition<u64, &[u8]> = TableDefinition::new("crdt.collected");
/// unix ms → bincode [`Vv`]: confirmed snapshots waiting out the horizon.
const CONFIRMED: TableDefinition<u64, &[u8]> = TableDefinition::new("crdt.confirmed");
const META: TableDefinition<&str, u64> = TableDefinition::new("crdt.meta");
const K_AUTHOR: &str = "author";
const K_HLC: &str = "hlc";
const K_PINS: &str = "pins";
const K_TOMBSTONES: &str = "tombstones";

/// The last journal row whose changes this database holds.
const K_JOURNALED: &str = "journaled";
/// redb's page cache.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PinDbError {
    #[error("pinset database {path}: {message}")]
    Db { path: PathBuf, message: String },
    #[error("pinset database {path}: corrupt record {what}: {message}")]
    Corrupt {
        path: PathBuf,
        what: String,
        message: String,
    },
}

/// The replica's database; cheap to clone (one handle, shared with the
/// readers of other tasks).
#[derive(Clone)]
pub struct PinDb {
    db: Arc<Database>,
    path: PathBuf,
    /// Taken by the one writer (the pinset task); readers never touch it.
    journal: Arc<Mutex<Journal>>,
    /// The index views, kept in step with the committed state.
    indexes: Arc<Indexes>,
    /// Index records the open write transaction changed, taken into
    /// `indexes` once it commits.
    feed: Arc<Mutex<Vec<crate::index::Record>>>,
}

impl PinDb {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<PinDb, PinDbError> {
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
            .map_err(|e| PinDbError::Db {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let journal = Journal::open(Journal::path_for(path))?;
        let db = PinDb {
            db: Arc::new(db),
            path: path.to_owned(),
            journal: Arc::new(Mutex::new(journal)),
            indexes: Arc::default(),
            feed: Arc::default(),
        };
        let applied = db.prepare()?;
        db.journal().resume_after(applied);
        db.recover()?;
        db.load_indexes()?;
        Ok(db)
    }

    /// The index views (see [`crate::index`]).
    pub fn indexes(&self) -> &Arc<Indexes> {
        &self.indexes
    }

    /// Builds the index views from the stored index records.
    fn load_indexes(&self) -> Result<(), PinDbError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let state = txn.open_table(STATE).map_err(|e| self.err(e))?;
        let from = crate::index::PREFIX.to_string();
        let mut n = 0u64;
        for row in state
            .range::<&str>(from.as_str()..)
            .map_err(|e| self.err(e))?
        {
            let (k, v) = row.map_err(|e| self.err(e))?;
            if let Some(value) = codec::index_value(v.value()) {
                self.indexes.apply([(k.value(), Some(value))]);
                n += 1;
            }
        }
        self.feed().clear();
        if n > 0 {
            tracing::info!(records = n, "indexes loaded from the pinset database");
        }
        Ok(())
    }

    fn feed(&self) -> MutexGuard<'_, Vec<crate::index::Record>> {
        self.feed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the committed transaction's index records into the views.
    fn flush_feed(&self) {
        let changes = std::mem::take(&mut *self.feed());
        if !changes.is_empty() {
            self.indexes
                .apply(changes.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
        }
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        // A panic mid-write leaves nothing half-done (redb rolls back).
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies the journal rows the database lacks (after a crash), in one
    /// durable transaction.
    fn recover(&self) -> Result<(), PinDbError> {
        let mut journal = self.journal();
        self.feed().clear();
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let before = self.meta_in(&txn, K_JOURNALED)?;
        let applied = self.catch_up(&txn, &journal, journal.last())?;
        if applied == before {
            return Ok(());
        }
        txn.commit().map_err(|e| self.err(e))?;
        self.flush_feed();
        journal.checkpointed(applied)?;
        tracing::info!(
            rows = applied - before,
            "pinset: changes in the journal the database lacked are applied"
        );
        Ok(())
    }

    fn set_journaled(&self, txn: &redb::WriteTransaction, row: u64) -> Result<(), PinDbError> {
        let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
        meta.insert(K_JOURNALED, row).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Makes every change applied so far durable in the database itself
    /// (the journal's rows then go). Called when the task stops.
    pub fn checkpoint(&self) -> Result<(), PinDbError> {
        let mut journal = self.journal();
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let applied = self.meta_in(&txn, K_JOURNALED)?;
        txn.commit().map_err(|e| self.err(e))?;
        journal.checkpointed(applied)
    }

    fn err(&self, e: impl std::fmt::Display) -> PinDbError {
        PinDbError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the tables, takes a replica ID, moves an old database over;
    /// returns the last journal row the database holds.
    fn prepare(&self) -> Result<u64, PinDbError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let had_tombs = txn
            .list_tables()
            .map_err(|e| self.err(e))?
            .any(|t| t.name() == TOMBS.name());
        let applied;
        {
            txn.open_table(STATE).map_err(|e| self.err(e))?;
            txn.open_table(TOMBS).map_err(|e| self.err(e))?;
            txn.open_table(COLLECTED).map_err(|e| self.err(e))?;
            txn.open_table(CONFIRMED).map_err(|e| self.err(e))?;
            txn.open_table(BY_AUTHOR).map_err(|e| self.err(e))?;
            txn.open_table(VV).map_err(|e| self.err(e))?;
            txn.open_table(FLOOR).map_err(|e| self.err(e))?;
            txn.open_table(MEMBERS).map_err(|e| self.err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            if meta.get(K_AUTHOR).map_err(|e| self.err(e))?.is_none() {
                meta.insert(K_AUTHOR, rand::random::<u64>() | 1)
                    .map_err(|e| self.err(e))?;
            }
            applied = meta
                .get(K_JOURNALED)
                .map_err(|e| self.err(e))?
                .map_or(0, |v| v.value());
        }
        self.migrate(&txn)?;
        if !had_tombs {
            self.index_tombstones(&txn)?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(applied)
    }

    /// An earlier version's tables: the committed pins (`pins`: cid →
    /// bincode of the old spec, same fields) become this replica's changes;
    /// the log and the rest are dropped.
    fn migrate(&self, txn: &redb::WriteTransaction) -> Result<(), PinDbError> {
        let old: Vec<redb::UntypedTableHandle> = txn
            .list_tables()
            .map_err(|e| self.err(e))?
            .filter(|t| !t.name().starts_with("crdt."))
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        const OLD_PINS: TableDefinition<&str, &[u8]> = TableDefinition::new("pins");
        let mut entries = Vec::new();
        if old.iter().any(|t| t.name() == "pins") {
            let author = self.meta_in(txn, K_AUTHOR)?;
            let pins = txn.open_table(OLD_PINS).map_err(|e| self.err(e))?;
            for (i, row) in pins.iter().map_err(|e| self.err(e))?.enumerate() {
                let (k, v) = row.map_err(|e| self.err(e))?;
                /// A pin as that version stored it.
                #[derive(serde::Deserialize)]
                struct OldSpec {
                    cid: String,
                    name: String,
                    replication_min: u8,
                    replication_max: u8,
                    added_unix_ms: u64,
                }
                let (old, _): (OldSpec, usize) =
                    bincode::serde::decode_from_slice(v.value(), bincode::config::standard())
                        .map_err(|e| PinDbError::Corrupt {
                            path: self.path.clone(),
                            what: format!("old pin {}", k.value()),
                            message: e.to_string(),
                        })?;
                let spec = PinSpec {
                    cid: old.cid,
                    name: old.name,
                    replication_min: old.replication_min,
                    replication_max: old.replication_max,
                    added_unix_ms: old.added_unix_ms,
                    allocation: None,
                    meta: Default::default(),
                    origins: Vec::new(),
                };
                entries.push(Entry {
                    stamp: Stamp {
                        hlc: Hlc::at(spec.added_unix_ms),
                        author,
                    },
                    seq: i as u64 + 1,
                    op: Op::Pin(spec),
                });
            }
        }
        for table in old {
            txn.delete_table(table).map_err(|e| self.err(e))?;
        }
        if !entries.is_empty() {
            tracing::info!(
                pins = entries.len(),
                "pinset database from an earlier version moved over"
            );
            let mut seen = Vv::default();
            for e in &entries {
                seen.insert(e.id());
            }
            let hlc = entries.iter().map(|e| e.stamp.hlc).max().unwrap_or(0);
            let p = Persist {
                entries,
                seen,
                hlc,
                ..Persist::default()
            };
            self.apply(txn, std::slice::from_ref(&p))?;
        }
        Ok(())
    }

    fn meta_in(&self, txn: &redb::WriteTransaction, key: &str) -> Result<u64, PinDbError> {
        let meta = txn.open_table(META).map_err(|e| self.err(e))?;
        Ok(meta
            .get(key)
            .map_err(|e| self.err(e))?
            .map_or(0, |v| v.value()))
    }

    /// What the replica core starts from (after a failed write too: the
    /// journal's rows the database lacks are applied first).
    pub fn load(&self) -> Result<Loaded, PinDbError> {
        self.recover()?;
        let view = self.view()?;
        let members = view.members()?;
        let confirmed = view.confirmed()?;
        Ok(Loaded {
            author: view.meta(K_AUTHOR)?,
            hlc: view.meta(K_HLC)?,
            vv: view.vv,
            collected: view.collected.vv,
            confirmed,
            members,
        })
    }

    /// Makes `batch` durable and visible to readers; returns the counts
    /// after. A small batch is synced to the journal and applied to the
    /// database unsynced (a checkpoint now and then syncs the database); a
    /// large one is applied in one durable transaction.
    pub fn persist(&self, batch: &[Persist]) -> Result<Counts, PinDbError> {
        let counts = self.persist_inner(batch);
        if counts.is_ok() {
            self.flush_feed();
        }
        counts
    }

    fn persist_inner(&self, batch: &[Persist]) -> Result<Counts, PinDbError> {
        let mut journal = self.journal();
        // A transaction that failed changed nothing (its rows are applied
        // again from the journal, and fed again then).
        self.feed().clear();
        let changes: usize = batch.iter().map(|p| p.entries.len()).sum();
        if changes > journal::DIRECT_ENTRIES {
            drop(journal);
            return self.direct(|txn| self.apply(txn, batch));
        }
        let row = journal.append(batch)?;
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| self.err(e))?;
        let counts = if self.meta_in(&txn, K_JOURNALED)? == row - 1 {
            let counts = self.apply(&txn, batch)?;
            self.set_journaled(&txn, row)?;
            counts
        } else {
            self.catch_up(&txn, &journal, row)?;
            self.counts_in(&txn)?
        };
        txn.commit().map_err(|e| self.err(e))?;
        if journal.due() {
            let txn = self.db.begin_write().map_err(|e| self.err(e))?;
            txn.commit().map_err(|e| self.err(e))?;
            journal.checkpointed(row)?;
        }
        Ok(counts)
    }

    /// Runs `f` in one durable transaction, after the journal's rows.
    fn direct<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, PinDbError>,
    ) -> Result<T, PinDbError> {
        let mut journal = self.journal();
        self.feed().clear();
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let applied = self.catch_up(&txn, &journal, journal.last())?;
        let out = f(&txn)?;
        txn.commit().map_err(|e| self.err(e))?;
        journal.checkpointed(applied)?;
        drop(journal);
        self.flush_feed();
        Ok(out)
    }

    /// Applies the journal rows after the database's `journaled` up to
    /// `last` (rows an earlier failed transaction left out); returns the
    /// last row the database then holds.
    fn catch_up(
        &self,
        txn: &redb::WriteTransaction,
        journal: &Journal,
        last: u64,
    ) -> Result<u64, PinDbError> {
        let applied = self.meta_in(txn, K_JOURNALED)?;
        if applied >= last {
            return Ok(applied);
        }
        let rows = journal.rows_after(applied)?;
        for (_, batch) in rows.iter().filter(|(r, _)| *r <= last) {
            self.apply(txn, batch)?;
        }
        self.set_journaled(txn, last)?;
        Ok(last)
    }

    fn counts_in(&self, txn: &redb::WriteTransaction) -> Result<Counts, PinDbError> {
        Ok(Counts {
            pins: self.meta_in(txn, K_PINS)?,
            tombstones: self.meta_in(txn, K_TOMBSTONES)?,
        })
    }

    /// The change that wins for `cid`, if any (one read, without the vectors).
    pub fn get(&self, cid: &str) -> Result<Option<Entry>, PinDbError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(STATE).map_err(|e| self.err(e))?;
        t.get(cid)
            .map_err(|e| self.err(e))?
            .map(|v| decode_entry(&self.path, cid, v.value()))
            .transpose()
    }

    fn apply(&self, txn: &redb::WriteTransaction, batch: &[Persist]) -> Result<Counts, PinDbError> {
        let e = |x: redb::StorageError| self.err(x);
        let mut state = txn.open_table(STATE).map_err(|x| self.err(x))?;
        let mut by_author = txn.open_table(BY_AUTHOR).map_err(|x| self.err(x))?;
        let mut vv = txn.open_table(VV).map_err(|x| self.err(x))?;
        let mut floor = txn.open_table(FLOOR).map_err(|x| self.err(x))?;
        let mut members = txn.open_table(MEMBERS).map_err(|x| self.err(x))?;
        let mut tomb_index = txn.open_table(TOMBS).map_err(|x| self.err(x))?;
        let mut meta = txn.open_table(META).map_err(|x| self.err(x))?;
        let get = |meta: &redb::Table<&str, u64>, k| -> Result<u64, PinDbError> {
            Ok(meta.get(k).map_err(e)?.map_or(0, |v| v.value()))
        };
        let (mut pins, mut tombs) = (get(&meta, K_PINS)?, get(&meta, K_TOMBSTONES)?);
        let mut hlc = get(&meta, K_HLC)?;
        let mut seen = Vv::default();
        // The batch's winner per CID, in CID order: B-tree inserts in key
        // order touch far fewer pages (a bulk sync stores a page at a time).
        let mut batch_entries: Vec<(&Entry, bool)> = batch
            .iter()
            .flat_map(|p| p.entries.iter().map(|e| (e, !p.unindexed)))
            .collect();
        batch_entries
            .sort_by(|(a, _), (b, _)| a.cid().cmp(b.cid()).then(b.order().cmp(&a.order())));
        batch_entries.dedup_by(|(later, _), (first, _)| later.cid() == first.cid());
        let mut dropped = Vec::new();
        let mut added = Vec::with_capacity(batch_entries.len());
        let mut feed = self.feed();
        for (entry, indexed) in batch_entries {
            let cid = entry.cid();
            // One traversal: insert, and put the old one back if it wins.
            let old = state
                .insert(cid, encode_entry(entry).as_slice())
                .map_err(e)?
                .map(|v| v.value().to_vec());
            let old = match old {
                None => None,
                Some(bytes) => match stamp_of(&bytes) {
                    Some(o) => Some((o, bytes)),
                    None => {
                        return Err(PinDbError::Corrupt {
                            path: self.path.clone(),
                            what: format!("pin {cid}"),
                            message: "too short".into(),
                        });
                    }
                },
            };
            if !wins(entry.order(), old.as_ref().map(|(o, _)| *o)) {
                if let Some((_, bytes)) = old {
                    state.insert(cid, bytes.as_slice()).map_err(e)?;
                }
                continue;
            }
            if let Some(((s, seq), bytes)) = old {
                dropped.push((s.author, seq));
                if !codec::is_live(&bytes) {
                    tombs -= 1;
                    tomb_index.remove((s.author, seq)).map_err(e)?;
                } else if !is_index_key(cid) {
                    pins -= 1;
                }
            }
            if entry.is_removal() {
                tombs += 1;
                tomb_index.insert(entry.id(), cid).map_err(e)?;
            } else if entry.is_pin() {
                pins += 1;
            }
            if let Some(value) = index_value_of(entry) {
                feed.push((cid.to_owned(), value.map(<[u8]>::to_vec)));
            }
            if indexed {
                added.push(((entry.stamp.author, entry.seq), cid));
            }
        }
        dropped.sort_unstable();
        for key in dropped {
            by_author.remove(key).map_err(e)?;
        }
        added.sort_unstable_by_key(|(k, _)| *k);
        for (key, cid) in added {
            by_author.insert(key, cid).map_err(e)?;
        }
        let mut floor_add = Vv::default();
        for p in batch {
            seen.union(&p.seen);
            floor_add.union(&p.floor);
            hlc = hlc.max(p.hlc);
            for (id, m) in &p.members {
                match m {
                    Some(m) => members.insert(id.as_str(), bin(m).as_slice()).map_err(e)?,
                    None => members.remove(id.as_str()).map_err(e)?,
                };
            }
        }
        codec::union_into(&self.path, &mut vv, &seen)?;
        codec::union_into(&self.path, &mut floor, &floor_add)?;
        meta.insert(K_PINS, pins).map_err(e)?;
        meta.insert(K_TOMBSTONES, tombs).map_err(e)?;
        meta.insert(K_HLC, hlc).map_err(e)?;
        Ok(Counts {
            pins,
            tombstones: tombs,
        })
    }

    /// A consistent view of the replica as of now.
    pub fn view(&self) -> Result<DbView, PinDbError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let mut view = DbView {
            txn,
            vv: Vv::default(),
            floor: Vv::default(),
            collected: Default::default(),
            path: self.path.clone(),
        };
        view.vv = view.read_vv(VV)?;
        view.floor = view.read_vv(FLOOR)?;
        view.collected = super::sync::Collected {
            vv: view.read_vv(COLLECTED)?,

            hlc: view.meta(K_HLC)?,
        };
        Ok(view)
    }
}

/// For an index record, its new value (`Some(None)`: removed); `None` for a pin.
fn index_value_of(e: &Entry) -> Option<Option<&[u8]>> {
    match &e.op {
        Op::Put { value, .. } => Some(Some(value)),
        Op::Clear { .. } => Some(None),
        Op::Pin(_) | Op::Unpin { .. } => None,
    }
}

#[cfg(test)]
mod tests;
