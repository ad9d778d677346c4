//! The log on disk: one redb table per [`SEGMENT`] consecutive entries
//! (`log.<n>`: index → bincode `(epoch, op)`). Compaction drops whole
//! segments with one `delete_table` each; removing entries one by one
//! costs redb a page rewrite per entry (~23 us each, see the
//! `compaction_cost` test), which on a large log kept the pinset task busy
//! for seconds. Entries at or below the base may linger in the segment
//! the base falls in; nothing reads below the base.

use redb::{
    ReadTransaction, ReadableTable, TableDefinition, TableError, TableHandle, WriteTransaction,
};

/// Entries per segment table.
pub const SEGMENT: u64 = 16_384;
/// The single log table of databases written before segments.
const OLD_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const PREFIX: &str = "log.";

fn segment(index: u64) -> u64 {
    index.saturating_sub(1) / SEGMENT
}

fn name(seg: u64) -> String {
    format!("{PREFIX}{seg}")
}

fn def(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

/// The segments that hold indexes `from..=to` (`from` at least 1), with
/// their table names; none for an empty range.
fn segments(from: u64, to: u64) -> impl Iterator<Item = (u64, String)> {
    let empty = from.max(1) > to;
    (segment(from)..=segment(to))
        .filter(move |_| !empty)
        .map(|seg| (seg, name(seg)))
}

/// Calls `f(index, bytes)` on the entries from `from` to `to` in order,
/// until it returns `false`.
pub fn scan(
    txn: &ReadTransaction,
    from: u64,
    to: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<bool, super::PinStoreError>,
    err: impl Fn(redb::Error) -> super::PinStoreError,
) -> Result<(), super::PinStoreError> {
    for (_, n) in segments(from, to) {
        let table = match txn.open_table(def(&n)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(err(e.into())),
        };
        for row in table.range(from..=to).map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            if !f(k.value(), v.value())? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The entry at `index`, if held.
pub fn get(
    txn: &ReadTransaction,
    index: u64,
    err: impl Fn(redb::Error) -> super::PinStoreError,
) -> Result<Option<Vec<u8>>, super::PinStoreError> {
    let mut out = None;
    scan(
        txn,
        index,
        index,
        |_, v| {
            out = Some(v.to_vec());
            Ok(false)
        },
        err,
    )?;
    Ok(out)
}

/// The last entry's index and bytes, if any.
pub fn last(
    txn: &ReadTransaction,
    err: impl Fn(redb::Error) -> super::PinStoreError,
) -> Result<Option<(u64, Vec<u8>)>, super::PinStoreError> {
    let mut segs: Vec<u64> = txn
        .list_tables()
        .map_err(|e| err(e.into()))?
        .filter_map(|t| t.name().strip_prefix(PREFIX)?.parse().ok())
        .collect();
    segs.sort_unstable();
    for seg in segs.into_iter().rev() {
        let n = name(seg);
        let table = txn.open_table(def(&n)).map_err(|e| err(e.into()))?;
        if let Some((k, v)) = table.last().map_err(|e| err(e.into()))? {
            return Ok(Some((k.value(), v.value().to_vec())));
        }
    }
    Ok(None)
}

/// Stores entries (in index order), a segment table opened once per run.
pub fn insert<'a>(
    txn: &WriteTransaction,
    entries: impl IntoIterator<Item = (u64, &'a [u8])>,
    err: impl Fn(redb::Error) -> super::PinStoreError,
) -> Result<(), super::PinStoreError> {
    let mut open: Option<(u64, redb::Table<u64, &[u8]>)> = None;
    for (index, bytes) in entries {
        let seg = segment(index);
        if open.as_ref().is_none_or(|(s, _)| *s != seg) {
            let n = name(seg);
            let table = txn.open_table(def(&n)).map_err(|e| err(e.into()))?;
            open = Some((seg, table));
        }
        if let Some((_, table)) = open.as_mut() {
            table.insert(index, bytes).map_err(|e| err(e.into()))?;
        }
    }
    Ok(())
}

/// Removes the entries from `from` to the log's last, `to` (a suffix, or
/// everything): segments that start at `from` or later are deleted whole,
/// the one `from` falls in is trimmed.
pub fn remove(
    txn: &WriteTransaction,
    from: u64,
    to: u64,
    err: impl Fn(redb::Error) -> super::PinStoreError,
) -> Result<(), super::PinStoreError> {
    for (seg, n) in segments(from, to) {
        if from <= seg * SEGMENT + 1 {
            txn.delete_table(def(&n)).map_err(|e| err(e.into()))?;
        } else {
            let mut table = txn.open_table(def(&n)).map_err(|e| err(e.into()))?;
            table
                .retain_in(from..=to, |_, _| false)
                .map_err(|e| err(e.into()))?;
        }
    }
    Ok(())
}

/// Drops the segments that hold nothing after `base` (compaction).
pub fn drop_upto(
    txn: &WriteTransaction,
    old_base: u64,
    base: u64,
    err: impl Fn(redb::Error) -> super::PinStoreError,
) -> Result<(), super::PinStoreError> {
    for seg in segment(old_base + 1)..segment(base + 1) {
        let n = name(seg);
        txn.delete_table(def(&n)).map_err(|e| err(e.into()))?;
    }
    Ok(())
}

/// Moves a single-table log (written before segments) into segments.
pub fn migrate(
    txn: &WriteTransaction,
    err: impl Fn(redb::Error) -> super::PinStoreError,
) -> Result<(), super::PinStoreError> {
    let rows: Vec<(u64, Vec<u8>)> = {
        let old = match txn.open_table(OLD_LOG) {
            Ok(t) => t,
            Err(e) => return Err(err(e.into())),
        };
        let mut rows = Vec::new();
        for row in old.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            rows.push((k.value(), v.value().to_vec()));
        }
        rows
    };
    insert(txn, rows.iter().map(|(k, v)| (*k, v.as_slice())), &err)?;
    txn.delete_table(OLD_LOG).map_err(|e| err(e.into()))?;
    Ok(())
}

/// Whether the database still has a single-table log.
pub fn has_old(
    txn: &ReadTransaction,
    err: impl Fn(redb::Error) -> super::PinStoreError,
) -> Result<bool, super::PinStoreError> {
    match txn.open_table(OLD_LOG) {
        Ok(_) => Ok(true),
        Err(TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(err(e.into())),
    }
}
