//! A read-only view of the pinset database for tasks other than the pinset
//! task (the keeper): the committed changes after a given index, each read
//! in one transaction so it is consistent with the commit index it names.

use std::path::PathBuf;
use std::sync::Arc;

use redb::{Database, ReadableDatabase};

use super::Entry;
use super::store::{PinStoreError, counters, decode_entry, log};

#[derive(Clone)]
pub struct PinReader {
    db: Arc<Database>,
    path: PathBuf,
}

/// What changed after the index asked about.
#[derive(Debug)]
pub enum Committed {
    /// Nothing: that is still the commit index.
    Same,
    /// Committed entries that follow (more may follow them).
    Entries(Vec<Entry>),
    /// Those entries were compacted away: read the whole state instead
    /// ([`PinReader::snapshot`]).
    Compacted,
}

impl PinReader {
    pub(super) fn new(db: Arc<Database>, path: PathBuf) -> PinReader {
        PinReader { db, path }
    }

    fn err(&self, e: impl std::fmt::Display) -> PinStoreError {
        PinStoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The committed state as of now, to read in pages.
    pub fn snapshot(&self) -> Result<super::snapshot::Source, PinStoreError> {
        super::snapshot::Source::open_db(&self.db, &self.path)
    }

    /// The committed changes after index `applied`, at most `max` entries.
    pub fn committed_after(&self, applied: u64, max: usize) -> Result<Committed, PinStoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let (commit, base) = counters(&txn, &self.path)?;
        if commit <= applied {
            return Ok(Committed::Same);
        }
        if applied < base.index {
            return Ok(Committed::Compacted);
        }
        let mut out = Vec::new();
        if max == 0 {
            return Ok(Committed::Entries(out));
        }
        log::scan(
            &txn,
            applied + 1,
            commit,
            |i, v| {
                out.push(decode_entry(&self.path, i, v)?);
                Ok(out.len() < max)
            },
            |e| self.err(e),
        )?;
        Ok(Committed::Entries(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pinset::store::PinStore;
    use crate::pinset::{LogPos, Op, PinSpec};

    fn spec(cid: &str) -> PinSpec {
        PinSpec {
            cid: cid.into(),
            name: String::new(),
            replication_min: 1,
            replication_max: 1,
            added_unix_ms: 0,
        }
    }

    #[test]
    fn it_sees_only_committed_entries_then_the_state_once_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = PinStore::open(&dir.path().join("pinset.redb")).unwrap();
        let reader = store.reader();
        store
            .append_local(
                1,
                vec![Op::Pin(spec("a")), Op::Pin(spec("b")), Op::Pin(spec("c"))],
            )
            .unwrap();
        assert!(matches!(
            reader.committed_after(0, 10).unwrap(),
            Committed::Same
        ));
        store.commit_to(2).unwrap();
        let Committed::Entries(e) = reader.committed_after(0, 10).unwrap() else {
            panic!("entries expected")
        };
        assert_eq!(e.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 2]);
        let Committed::Entries(e) = reader.committed_after(1, 10).unwrap() else {
            panic!("entries expected")
        };
        assert_eq!(e.len(), 1);
        store.commit_to(3).unwrap();
        store.compact(0).unwrap();
        assert!(matches!(
            reader.committed_after(1, 10).unwrap(),
            Committed::Compacted
        ));
        let state = reader.snapshot().unwrap();
        assert_eq!(state.at(), LogPos { epoch: 1, index: 3 });
        let (pins, done) = state.page(None, 10, usize::MAX).unwrap();
        assert!(done);
        assert_eq!(pins.len(), 3);
        assert!(matches!(
            reader.committed_after(3, 10).unwrap(),
            Committed::Same
        ));
    }
}
