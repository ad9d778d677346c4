//! Dropping what removals overtook: collecting tombstones every member has
//! seen, and pruning changes a peer shows were overtaken by removals it
//! collected (see `pinset::replica`, *Collecting removals*). Each runs in
//! one durable transaction after the journal's rows; both are idempotent,
//! so a crash before either commits loses nothing that matters.

use std::collections::BTreeSet;

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::codec::{bin, decode_bin, decode_ranges, is_live, stamp_of, union_into};
use super::{
    BY_AUTHOR, COLLECTED, CONFIRMED, Counts, K_PINS, K_TOMBSTONES, META, PinDb, PinDbError, STATE,
    TOMBS,
};
use crate::pinset::model::Vv;

impl PinDb {
    /// Deletes the tombstones whose change IDs `upto` names and whose stamp
    /// reading is below `before`, except those of CIDs `held` says this
    /// node's holder still holds (returned: the holder unpins them, and a
    /// later collection takes them); stores `upto` as collected.
    pub fn collect(
        &self,
        upto: &Vv,
        before: u64,
        held: &dyn Fn(&str) -> bool,
    ) -> Result<(Counts, Vec<String>), PinDbError> {
        self.direct(|txn| {
            let e = |x: redb::StorageError| self.err(x);
            let mut found = Vec::new();
            {
                let tombs = txn.open_table(TOMBS).map_err(|x| self.err(x))?;
                let state = txn.open_table(STATE).map_err(|x| self.err(x))?;
                for (author, ranges) in &upto.0 {
                    for &(lo, hi) in ranges.as_slice() {
                        for row in tombs.range((*author, lo)..=(*author, hi)).map_err(e)? {
                            let (id, cid) = row.map_err(e)?;
                            let (id, cid) = (id.value(), cid.value().to_owned());
                            let stamp = state
                                .get(cid.as_str())
                                .map_err(e)?
                                .and_then(|v| stamp_of(v.value()))
                                .filter(|(s, q)| (s.author, *q) == id);
                            match stamp {
                                // Not yet old enough: a later collection.
                                Some((s, _)) if s.hlc >= before => {}
                                Some((s, _)) => found.push((id, cid, s.hlc)),
                                // A stale index row: `delete` drops it.
                                None => found.push((id, cid, 0)),
                            }
                        }
                    }
                }
            }
            let (gone, kept): (Vec<_>, Vec<_>) = found
                .into_iter()
                .partition(|(_, c, hlc)| *hlc == 0 || !held(c));
            let counts = self.delete(txn, gone.iter().map(|(id, c, _)| (*id, c.as_str())))?;
            let mut collected = txn.open_table(COLLECTED).map_err(|x| self.err(x))?;
            union_into(&self.path, &mut collected, upto)?;
            // Confirmed snapshots now collected are done with.
            let mut all = Vv::default();
            for row in collected.iter().map_err(e)? {
                let (k, v) = row.map_err(e)?;
                all.0
                    .insert(k.value(), decode_ranges(&self.path, k.value(), v.value())?);
            }
            drop(collected);
            let mut confirmed = txn.open_table(CONFIRMED).map_err(|x| self.err(x))?;
            let mut done = Vec::new();
            for row in confirmed.iter().map_err(e)? {
                let (k, v) = row.map_err(e)?;
                let vv: Vv =
                    decode_bin(&self.path, || format!("confirmed {}", k.value()), v.value())?;
                if all.covers(&vv) {
                    done.push(k.value());
                }
            }
            for k in done {
                confirmed.remove(k).map_err(e)?;
            }
            if !gone.is_empty() {
                tracing::debug!(
                    count = gone.len(),
                    kept = kept.len(),
                    "pinset: removals collected"
                );
            }
            Ok((counts, kept.into_iter().map(|(_, c, _)| c).collect()))
        })
    }

    /// Stores a confirmed snapshot taken at `at` (replacing one at `at`).
    pub fn confirm(&self, at: u64, upto: &Vv) -> Result<(), PinDbError> {
        self.direct(|txn| {
            let mut t = txn.open_table(CONFIRMED).map_err(|x| self.err(x))?;
            t.insert(at, bin(upto).as_slice())
                .map_err(|x| self.err(x))?;
            Ok(())
        })
    }

    /// Deletes the changes stored with CIDs in `[from, to)` other than
    /// `keep` that a peer whose state holds nothing else there overtook
    /// with removals it collected: those whose IDs `seen` (its vector)
    /// names. Returns the counts after and the CIDs deleted.
    pub fn prune(
        &self,
        from: &str,
        to: Option<&str>,
        keep: &[String],
        seen: &Vv,
    ) -> Result<(Counts, Vec<String>), PinDbError> {
        use std::ops::Bound;
        let keep: BTreeSet<&str> = keep.iter().map(String::as_str).collect();
        // Read first: a node taking everything for the first time has
        // nothing to prune, and then writes nothing.
        let mut doomed = Vec::new();
        {
            let txn = self.db.begin_read().map_err(|e| self.err(e))?;
            let state = txn.open_table(STATE).map_err(|e| self.err(e))?;
            let end = to.map_or(Bound::Unbounded, Bound::Excluded);
            let range = state
                .range::<&str>((Bound::Included(from), end))
                .map_err(|e| self.err(e))?;
            for row in range {
                let (k, v) = row.map_err(|e| self.err(e))?;
                let Some((stamp, seq)) = stamp_of(v.value()) else {
                    continue;
                };
                let id = (stamp.author, seq);
                if !keep.contains(k.value()) && seen.contains(id) {
                    doomed.push((id, k.value().to_owned()));
                }
            }
        }
        if doomed.is_empty() {
            return Ok((self.view()?.counts()?, Vec::new()));
        }
        tracing::info!(
            count = doomed.len(),
            "pinset: changes overtaken by removals a peer collected are dropped"
        );
        let counts =
            self.direct(|txn| self.delete(txn, doomed.iter().map(|(id, c)| (*id, c.as_str()))))?;
        Ok((counts, doomed.into_iter().map(|(_, c)| c).collect()))
    }

    /// Deletes the state's entries for these `(id, cid)` (only where the
    /// entry is still that change) with their index rows; the counts after.
    fn delete<'a>(
        &self,
        txn: &WriteTransaction,
        rows: impl Iterator<Item = ((u64, u64), &'a str)>,
    ) -> Result<Counts, PinDbError> {
        let e = |x: redb::StorageError| self.err(x);
        let mut state = txn.open_table(STATE).map_err(|x| self.err(x))?;
        let mut by_author = txn.open_table(BY_AUTHOR).map_err(|x| self.err(x))?;
        let mut tombs = txn.open_table(TOMBS).map_err(|x| self.err(x))?;
        let mut meta = txn.open_table(META).map_err(|x| self.err(x))?;
        let get = |meta: &redb::Table<&str, u64>, k| -> Result<u64, PinDbError> {
            Ok(meta.get(k).map_err(e)?.map_or(0, |v| v.value()))
        };
        let mut counts = Counts {
            pins: get(&meta, K_PINS)?,
            tombstones: get(&meta, K_TOMBSTONES)?,
        };
        let mut feed = self.feed();
        for (id, cid) in rows {
            let live = match state.get(cid).map_err(e)? {
                Some(v) if stamp_of(v.value()).map(|(s, q)| (s.author, q)) == Some(id) => {
                    is_live(v.value())
                }
                _ => {
                    // Not that change any more: only a stale index row.
                    tombs.remove(id).map_err(e)?;
                    continue;
                }
            };
            state.remove(cid).map_err(e)?;
            by_author.remove(id).map_err(e)?;
            if crate::index::is_index_key(cid) {
                feed.push((cid.to_owned(), None));
            } else if live {
                counts.pins -= 1;
            }
            if !live {
                tombs.remove(id).map_err(e)?;
                counts.tombstones -= 1;
            }
        }
        meta.insert(K_PINS, counts.pins).map_err(e)?;
        meta.insert(K_TOMBSTONES, counts.tombstones).map_err(e)?;
        Ok(counts)
    }

    /// Fills the tombstone index of a database written before it existed.
    pub(super) fn index_tombstones(&self, txn: &WriteTransaction) -> Result<(), PinDbError> {
        let e = |x: redb::StorageError| self.err(x);
        let state = txn.open_table(STATE).map_err(|x| self.err(x))?;
        let mut tombs = txn.open_table(TOMBS).map_err(|x| self.err(x))?;
        for row in state.iter().map_err(e)? {
            let (k, v) = row.map_err(e)?;
            if let Some((stamp, seq)) = stamp_of(v.value()).filter(|_| !is_live(v.value())) {
                tombs.insert((stamp.author, seq), k.value()).map_err(e)?;
            }
        }
        Ok(())
    }
}
