//! What a holder keeps on disk (`<data-dir>/held.redb`): the items it pinned
//! on the leader's orders, and the highest leader epoch it has taken orders
//! from. The first tells its own pins from the user's after a restart (the
//! leader unpins items that left the pinset, never the user's); the second
//! keeps a stale leader's orders out even before the first heartbeat.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// cid → ()
const HELD: TableDefinition<&str, ()> = TableDefinition::new("held");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const K_EPOCH: &str = "max_epoch";
const CACHE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("holder database {path}: {message}")]
pub struct HeldStoreError {
    path: PathBuf,
    message: String,
}

pub struct HeldStore {
    db: Database,
    path: PathBuf,
}

impl HeldStore {
    pub fn open(path: &Path) -> Result<HeldStore, HeldStoreError> {
        let err = |e: &dyn std::fmt::Display| HeldStoreError {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| err(&e))?;
        let store = HeldStore {
            db,
            path: path.to_owned(),
        };
        store.update(&[], &[], None)?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> HeldStoreError {
        HeldStoreError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The items held and the highest epoch seen.
    pub fn load(&self) -> Result<(BTreeSet<String>, u64), HeldStoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let held = txn.open_table(HELD).map_err(|e| self.err(e))?;
        let mut cids = BTreeSet::new();
        for row in held.iter().map_err(|e| self.err(e))? {
            let (k, _) = row.map_err(|e| self.err(e))?;
            cids.insert(k.value().to_owned());
        }
        let meta = txn.open_table(META).map_err(|e| self.err(e))?;
        let epoch = meta
            .get(K_EPOCH)
            .map_err(|e| self.err(e))?
            .map_or(0, |v| v.value());
        Ok((cids, epoch))
    }

    /// Whether `cid` is held (an unreadable store says yes: the caller
    /// then keeps what it would drop).
    pub fn contains(&self, cid: &str) -> bool {
        let read = || -> Result<bool, redb::Error> {
            let txn = self.db.begin_read()?;
            let held = txn.open_table(HELD)?;
            Ok(held.get(cid)?.is_some())
        };
        read().unwrap_or(true)
    }

    /// One durable transaction: `add` held, `remove` no longer, and the
    /// highest epoch raised to `epoch`.
    pub fn update(
        &self,
        add: &[String],
        remove: &[String],
        epoch: Option<u64>,
    ) -> Result<(), HeldStoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut held = txn.open_table(HELD).map_err(|e| self.err(e))?;
            for cid in add {
                held.insert(cid.as_str(), ()).map_err(|e| self.err(e))?;
            }
            for cid in remove {
                held.remove(cid.as_str()).map_err(|e| self.err(e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            if let Some(e) = epoch {
                meta.insert(K_EPOCH, e).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_items_and_the_epoch_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held.redb");
        {
            let s = HeldStore::open(&path).unwrap();
            s.update(&["a".into(), "b".into(), "c".into()], &[], Some(4))
                .unwrap();
            s.update(&[], &["b".into()], None).unwrap();
        }
        let s = HeldStore::open(&path).unwrap();
        let (cids, epoch) = s.load().unwrap();
        assert_eq!(cids.into_iter().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(epoch, 4);
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held.redb");
        std::fs::write(&path, b"not a database at all, just some bytes").unwrap();
        let e = HeldStore::open(&path).err().expect("garbage opened");
        assert!(e.to_string().contains("held.redb"), "{e}");
    }
}
