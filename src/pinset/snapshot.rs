//! Snapshots: how a node far behind (or behind a compacted log) gets the
//! committed state in pages instead of the whole log.
//!
//! * The serving node ([`Served`]) opens a redb read transaction at its
//!   commit index and pages through the pins in CID order; the
//!   transaction keeps the pages consistent however long the pull takes
//!   (bounded: a few at once, dropped when idle).
//! * The pulling node ([`pull`]) stages the pages in a table of its own
//!   database with non-durable commits ([`Stager`]); the pinset task then
//!   swaps the staged table in as the state in one durable transaction
//!   ([`PinStore::install_staged`]), so a crash mid-pull leaves the old
//!   state, never half of the new one.

use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable};

use super::actor::Transport;
use super::store::{
    K_STAGED_ID, META, PINS, PinStore, PinStoreError, STAGED, counters, decode_entry, decode_pin,
    encode,
};
use super::{LogPos, PinSpec};
use crate::wire::{MAX_PINSET_BATCH_BYTES, MAX_SNAPSHOT_CHUNK, PinsetRequest, PinsetResponse};

/// Snapshots a node serves at once, and how long an unread one stays open.
const MAX_OPEN: usize = 4;
const IDLE: Duration = Duration::from_secs(30);

fn db_err(path: &std::path::Path, e: impl std::fmt::Display) -> PinStoreError {
    PinStoreError::Db {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// The committed state as of one commit index, frozen.
pub struct Source {
    txn: ReadTransaction,
    at: LogPos,
    path: PathBuf,
}

impl Source {
    pub fn open(store: &PinStore) -> Result<Source, PinStoreError> {
        let (db, path) = store.shared();
        Source::open_db(&db, &path)
    }

    pub(super) fn open_db(db: &Database, path: &std::path::Path) -> Result<Source, PinStoreError> {
        let path = path.to_owned();
        let err = |e: redb::Error| db_err(&path, e);
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        let (commit, base) = counters(&txn, &path)?;
        let at = if commit == base.index {
            base
        } else {
            match super::store::log::get(&txn, commit, err)? {
                Some(v) => LogPos {
                    index: commit,
                    epoch: decode_entry(&path, commit, &v)?.epoch,
                },
                None => {
                    return Err(PinStoreError::Corrupt {
                        path: path.clone(),
                        what: format!("log entry {commit}"),
                        message: "the committed entry is missing".into(),
                    });
                }
            }
        };
        Ok(Source { txn, at, path })
    }

    pub fn at(&self) -> LogPos {
        self.at
    }

    /// Pins after `after` in CID order, at most `max` and about `budget`
    /// bytes encoded (at least one); `true` once the last is included.
    pub fn page(
        &self,
        after: Option<&str>,
        max: usize,
        budget: usize,
    ) -> Result<(Vec<PinSpec>, bool), PinStoreError> {
        let err = |e: redb::Error| db_err(&self.path, e);
        let pins = self.txn.open_table(PINS).map_err(|e| err(e.into()))?;
        let from = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut rows = pins
            .range::<&str>((from, Bound::Unbounded))
            .map_err(|e| err(e.into()))?;
        let (mut out, mut bytes) = (Vec::new(), 0);
        while out.len() < max && (out.is_empty() || bytes < budget) {
            let Some(row) = rows.next() else {
                return Ok((out, true));
            };
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let spec = decode_pin(&self.path, k.value(), v.value())?;
            // As `encoded_size_bound` for entries: strings, tags, varints.
            bytes += spec.cid.len() + spec.name.len() + 24;
            out.push(spec);
        }
        let done = rows.next().is_none();
        Ok((out, done))
    }
}

/// The snapshots this node is serving, by the puller's id.
#[derive(Default)]
pub struct Served {
    open: Vec<(u64, Source, Instant)>,
}

impl Served {
    /// Answers [`PinsetRequest::ReadSnapshot`].
    pub fn read(
        &mut self,
        store: &PinStore,
        id: u64,
        after: Option<String>,
        now: Instant,
    ) -> PinsetResponse {
        let refused = |reason: String| PinsetResponse::Refused { reason };
        self.open
            .retain(|(_, _, used)| now.saturating_duration_since(*used) < IDLE);
        let reopened = self.take(id);
        let source = match (&after, reopened) {
            (None, _) => match Source::open(store) {
                Ok(s) => s,
                Err(e) => return refused(e.to_string()),
            },
            (Some(_), Some(s)) => s,
            (Some(_), None) => return refused(format!("snapshot {id} is not open: start again")),
        };
        let page = source.page(after.as_deref(), MAX_SNAPSHOT_CHUNK, MAX_PINSET_BATCH_BYTES);
        match page {
            Ok((pins, done)) => {
                let at = source.at();
                if !done {
                    if self.open.len() >= MAX_OPEN {
                        // The least recently read gives way.
                        self.open.sort_by_key(|(_, _, used)| *used);
                        self.open.remove(0);
                    }
                    self.open.push((id, source, now));
                }
                PinsetResponse::SnapshotChunk { at, pins, done }
            }
            Err(e) => refused(e.to_string()),
        }
    }

    fn take(&mut self, id: u64) -> Option<Source> {
        let i = self.open.iter().position(|(i, _, _)| *i == id)?;
        Some(self.open.swap_remove(i).1)
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// Writes pulled pages into the staging table of a store's database.
#[derive(Clone)]
pub struct Stager {
    db: Arc<Database>,
    path: PathBuf,
}

impl Stager {
    pub fn new(store: &PinStore) -> Stager {
        let (db, path) = store.shared();
        Stager { db, path }
    }

    /// One transaction, not durable on its own: the install makes it so.
    fn write(
        &self,
        f: impl FnOnce(
            &redb::WriteTransaction,
            &mut redb::Table<&str, u64>,
        ) -> Result<(), PinStoreError>,
    ) -> Result<(), PinStoreError> {
        let err = |e: redb::Error| db_err(&self.path, e);
        let mut txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        txn.set_durability(Durability::None)
            .map_err(|e| db_err(&self.path, e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            f(&txn, &mut meta)?;
        }
        txn.commit().map_err(|e| err(e.into()))
    }

    /// Starts staging pull `id`, dropping whatever was staged before.
    pub fn begin(&self, id: u64) -> Result<(), PinStoreError> {
        let err = |e: redb::Error| db_err(&self.path, e);
        self.write(|txn, meta| {
            txn.delete_table(STAGED).map_err(|e| err(e.into()))?;
            txn.open_table(STAGED).map_err(|e| err(e.into()))?;
            meta.insert(K_STAGED_ID, id).map_err(|e| err(e.into()))?;
            Ok(())
        })
    }

    /// Adds a page to pull `id`; an error if another pull took over.
    pub fn add(&self, id: u64, pins: &[PinSpec]) -> Result<(), PinStoreError> {
        let err = |e: redb::Error| db_err(&self.path, e);
        self.write(|txn, meta| {
            let staged = meta.get(K_STAGED_ID).map_err(|e| err(e.into()))?;
            if staged.map(|v| v.value()) != Some(id) {
                return Err(PinStoreError::NotStaged { id });
            }
            let mut table = txn.open_table(STAGED).map_err(|e| err(e.into()))?;
            for p in pins {
                table
                    .insert(p.cid.as_str(), encode(p).as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            Ok(())
        })
    }
}

/// Pulls `peer`'s snapshot into `stager`; returns the pull's id and the
/// position the snapshot stands at, for [`PinStore::install_staged`].
pub async fn pull<T: Transport>(
    transport: &T,
    peer: &str,
    stager: Stager,
) -> Result<(u64, LogPos), String> {
    let id: u64 = rand::random();
    let mut after: Option<String> = None;
    let mut at: Option<LogPos> = None;
    let mut count = 0usize;
    loop {
        let req = PinsetRequest::ReadSnapshot {
            id,
            after: after.clone(),
        };
        let (pos, pins, done) = match transport.request(peer, req).await? {
            PinsetResponse::SnapshotChunk { at, pins, done } => (at, pins, done),
            PinsetResponse::Refused { reason } => return Err(reason),
            other => return Err(format!("unexpected answer {other:?}")),
        };
        // Pages are checked on receipt to be in order; across pages too.
        if let (Some(a), Some(first)) = (&after, pins.first())
            && first.cid <= *a
        {
            return Err("snapshot pages out of order".into());
        }
        if pins.is_empty() && !done {
            return Err("an empty snapshot page".into());
        }
        let stager = stager.clone();
        match at {
            None => {
                at = Some(pos);
                let s = stager.clone();
                blocking(move || s.begin(id)).await?;
            }
            Some(a) if a != pos => return Err("the snapshot moved during the pull".into()),
            Some(_) => {}
        }
        after = pins.last().map(|p| p.cid.clone()).or(after);
        count += pins.len();
        blocking(move || stager.add(id, &pins)).await?;
        if done {
            let at = at.unwrap_or_default();
            tracing::debug!(%peer, count, ?at, "pinset: snapshot pulled");
            return Ok((id, at));
        }
    }
}

async fn blocking(
    f: impl FnOnce() -> Result<(), PinStoreError> + Send + 'static,
) -> Result<(), String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
