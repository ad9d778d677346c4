//! The journal (`pinset.journal`, beside the database): what makes a small
//! batch durable cheaply.
//!
//! A durable commit of the state table costs a copy of every B-tree page
//! the batch touches, and random CIDs touch a leaf each: about 7 KB a
//! change on every replica, which bounded acknowledged writes by the disk.
//! So a small batch is first appended here (one durable transaction on a
//! table whose keys only grow: a page or two), then applied to the database
//! in a transaction that is not synced. Every [`CHECKPOINT_EVERY`] (or
//! [`CHECKPOINT_ROWS`] batches) one durable commit of the database writes
//! all those changes at once, pages shared, and the rows it covers go.
//!
//! Crash safety: the database records the last row it applied (`journaled`
//! in its meta table, written in the same transaction as the row's
//! changes), so after a crash it is back at its last durable commit and
//! every row after it is applied again on open. Applying a change twice is
//! harmless (last writer wins; the vectors only grow), so nothing depends
//! on where the crash fell. Large batches (a bulk sync's pages) skip the
//! journal: they share pages already, and writing them twice costs more.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::PinDbError;
use crate::pinset::replica::Persist;

const ROWS: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
/// The row format's version (the first byte of a row): 2 since pins carry
/// `meta` and `origins`; rows of format 1 (left by a crash of the earlier
/// version) are still read ([`v1`]).
const FORMAT: u8 = 2;
/// How long changes may sit in the journal only.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How many rows may wait for a checkpoint.
pub(super) const CHECKPOINT_ROWS: u64 = 4096;
/// Batches with more changes than this go straight to the database.
pub(super) const DIRECT_ENTRIES: usize = 2048;

pub(super) struct Journal {
    db: Database,
    path: PathBuf,
    /// The next row's key.
    next: u64,
    /// Rows written since the last checkpoint, and when it was.
    pending: u64,
    since: Instant,
}

impl Journal {
    pub(super) fn path_for(db: &Path) -> PathBuf {
        db.with_extension("journal")
    }

    /// Opens (or creates) the journal.
    pub(super) fn open(path: PathBuf) -> Result<Journal, PinDbError> {
        let db = Database::create(&path).map_err(|e| err(&path, e))?;
        let mut journal = Journal {
            db,
            path,
            next: 1,
            pending: 0,
            since: Instant::now(),
        };
        if let Some(last) = journal.last_row()? {
            journal.next = last + 1;
        }
        Ok(journal)
    }

    /// The database holds every row up to `applied`: numbering goes on
    /// after it (even if this file was lost).
    pub(super) fn resume_after(&mut self, applied: u64) {
        self.next = self.next.max(applied + 1);
    }

    fn last_row(&self) -> Result<Option<u64>, PinDbError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let rows = match txn.open_table(ROWS) {
            Ok(rows) => rows,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        Ok(rows
            .last()
            .map_err(|e| self.err(e))?
            .map(|(k, _)| k.value()))
    }

    fn err(&self, e: impl std::fmt::Display) -> PinDbError {
        err(&self.path, e)
    }

    /// The last row written (0: none yet).
    pub(super) fn last(&self) -> u64 {
        self.next - 1
    }

    /// Appends `batch` durably; returns its row number.
    pub(super) fn append(&mut self, batch: &[Persist]) -> Result<u64, PinDbError> {
        let mut bytes = vec![FORMAT];
        bincode::serde::encode_into_std_write(batch, &mut bytes, bincode::config::standard())
            .map_err(|e| self.err(e))?;
        let row = self.next;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut rows = txn.open_table(ROWS).map_err(|e| self.err(e))?;
            rows.insert(row, bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        self.next += 1;
        self.pending += 1;
        Ok(row)
    }

    /// Whether the database is due a durable commit.
    pub(super) fn due(&self) -> bool {
        self.pending >= CHECKPOINT_ROWS || self.since.elapsed() >= CHECKPOINT_EVERY
    }

    /// The database has durably applied every row up to `applied`: they go.
    /// Not synced: a row that comes back after a crash is skipped on open.
    pub(super) fn checkpointed(&mut self, applied: u64) -> Result<(), PinDbError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| self.err(e))?;
        {
            let mut rows = txn.open_table(ROWS).map_err(|e| self.err(e))?;
            rows.retain_in(..=applied, |_, _| false)
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        self.next = self.next.max(applied + 1);
        self.pending = 0;
        self.since = Instant::now();
        Ok(())
    }

    /// The rows after `applied`, decoded, in order.
    pub(super) fn rows_after(&self, applied: u64) -> Result<Vec<(u64, Vec<Persist>)>, PinDbError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let rows = match txn.open_table(ROWS) {
            Ok(rows) => rows,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = Vec::new();
        for row in rows.range(applied + 1..).map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let corrupt = |message: String| PinDbError::Corrupt {
                path: self.path.clone(),
                what: format!("row {}", k.value()),
                message,
            };
            let bytes = v.value();
            let cfg = bincode::config::standard();
            let batch: Vec<Persist> = match bytes.first() {
                Some(&FORMAT) => {
                    bincode::serde::decode_from_slice(&bytes[1..], cfg)
                        .map_err(|e| corrupt(e.to_string()))?
                        .0
                }
                Some(1) => {
                    bincode::serde::decode_from_slice::<Vec<v1::Persist>, _>(&bytes[1..], cfg)
                        .map_err(|e| corrupt(e.to_string()))?
                        .0
                        .into_iter()
                        .map(Persist::from)
                        .collect()
                }
                other => {
                    return Err(corrupt(format!("format {other:?}, expected {FORMAT}")));
                }
            };
            out.push((k.value(), batch));
        }
        Ok(out)
    }
}

fn err(path: &Path, e: impl std::fmt::Display) -> PinDbError {
    PinDbError::Db {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Rows of format 1: pins without `meta` and `origins`.
mod v1 {
    use serde::{Deserialize, Serialize};

    use crate::pinset::model::{self, Stamp, Vv};
    use crate::pinset::replica::{self, Member};

    #[derive(Serialize, Deserialize)]
    pub(super) struct Persist {
        pub(super) entries: Vec<Entry>,
        pub(super) unindexed: bool,
        pub(super) floor: Vv,
        pub(super) seen: Vv,
        pub(super) hlc: u64,
        pub(super) members: Vec<(String, Option<Member>)>,
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct Entry {
        pub(super) stamp: Stamp,
        pub(super) seq: u64,
        pub(super) op: Op,
    }

    #[derive(Serialize, Deserialize)]
    pub(super) enum Op {
        Pin(PinSpec),
        Unpin { cid: String },
        Put { key: String, value: Vec<u8> },
        Clear { key: String },
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct PinSpec {
        pub(super) cid: String,
        pub(super) name: String,
        pub(super) replication_min: u8,
        pub(super) replication_max: u8,
        pub(super) added_unix_ms: u64,
        pub(super) allocation: Option<String>,
    }

    impl From<Persist> for replica::Persist {
        fn from(p: Persist) -> replica::Persist {
            let entries = p
                .entries
                .into_iter()
                .map(|e| model::Entry {
                    stamp: e.stamp,
                    seq: e.seq,
                    op: match e.op {
                        Op::Pin(p) => model::Op::Pin(model::PinSpec {
                            cid: p.cid,
                            name: p.name,
                            replication_min: p.replication_min,
                            replication_max: p.replication_max,
                            added_unix_ms: p.added_unix_ms,
                            allocation: p.allocation,
                            meta: Default::default(),
                            origins: Vec::new(),
                        }),
                        Op::Unpin { cid } => model::Op::Unpin { cid },
                        Op::Put { key, value } => model::Op::Put { key, value },
                        Op::Clear { key } => model::Op::Clear { key },
                    },
                })
                .collect();
            replica::Persist {
                entries,
                unindexed: p.unindexed,
                floor: p.floor,
                seen: p.seen,
                hlc: p.hlc,
                members: p.members,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pinset::model::{Entry, Op, PinSpec, Stamp};

    /// A row an earlier version left (a crash before its checkpoint) is
    /// read after the upgrade: its pins come back with empty meta and origins.
    #[test]
    fn a_row_of_the_earlier_format_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pinset.journal");
        let cid = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
        let old = vec![v1::Persist {
            entries: vec![v1::Entry {
                stamp: Stamp { hlc: 7, author: 3 },
                seq: 1,
                op: v1::Op::Pin(v1::PinSpec {
                    cid: cid.into(),
                    name: "old".into(),
                    replication_min: 1,
                    replication_max: 2,
                    added_unix_ms: 5,
                    allocation: Some("gpu".into()),
                }),
            }],
            unindexed: false,
            floor: Default::default(),
            seen: Default::default(),
            hlc: 7,
            members: vec![],
        }];
        let mut row = vec![1u8];
        row.extend(bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap());
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(ROWS)
                .unwrap()
                .insert(1, row.as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let journal = Journal::open(path).unwrap();
        let rows = journal.rows_after(0).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].1[0].entries,
            vec![Entry {
                stamp: Stamp { hlc: 7, author: 3 },
                seq: 1,
                op: Op::Pin(PinSpec {
                    cid: cid.into(),
                    name: "old".into(),
                    replication_min: 1,
                    replication_max: 2,
                    added_unix_ms: 5,
                    allocation: Some("gpu".into()),
                    meta: Default::default(),
                    origins: vec![],
                }),
            }]
        );
    }
}
