//! How the replica's records are laid out in the database.

use std::path::Path;

use redb::ReadableTable;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::PinDbError;
use crate::pinset::model::{Entry, Op, PinSpec, Ranges, Stamp};

/// The pin fields of a stored change (the CID is the key).
#[derive(Serialize, Deserialize)]
struct StoredPin {
    name: String,
    replication_min: u8,
    replication_max: u8,
    added_unix_ms: u64,
    allocation: Option<String>,
    meta: std::collections::BTreeMap<String, String>,
    origins: Vec<String>,
}

/// The pin fields as stored before `meta` and `origins` (read, never written).
#[derive(Deserialize)]
struct StoredPinV2 {
    name: String,
    replication_min: u8,
    replication_max: u8,
    added_unix_ms: u64,
    allocation: Option<String>,
}

/// The pin fields as stored before allocations (read, never written).
#[derive(Deserialize)]
struct StoredPinV1 {
    name: String,
    replication_min: u8,
    replication_max: u8,
    added_unix_ms: u64,
}

/// hlc, author, seq (big-endian, so the stamp reads without decoding the
/// rest), then the bincode pin fields, or [`INDEX_VALUE`] and an index
/// record's value, or nothing for a tombstone.
pub(super) fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + 48);
    out.extend_from_slice(&e.stamp.hlc.to_be_bytes());
    out.extend_from_slice(&e.stamp.author.to_be_bytes());
    out.extend_from_slice(&e.seq.to_be_bytes());
    if let Op::Put { value, .. } = &e.op {
        out.reserve(1 + value.len());
        out.push(INDEX_VALUE);
        out.extend_from_slice(value);
    }
    if let Op::Pin(p) = &e.op {
        let fields = StoredPin {
            name: p.name.clone(),
            replication_min: p.replication_min,
            replication_max: p.replication_max,
            added_unix_ms: p.added_unix_ms,
            allocation: p.allocation.clone(),
            meta: p.meta.clone(),
            origins: p.origins.clone(),
        };
        let body =
            bincode::serde::encode_to_vec(&fields, bincode::config::standard()).unwrap_or_default();
        out.extend_from_slice(&body);
    }
    out
}

/// Marks an index record's value (so an empty value is not a tombstone).
const INDEX_VALUE: u8 = 1;

/// Whether encoded bytes hold a pin or an index record (a tombstone is its
/// stamp alone).
pub(super) fn is_live(bytes: &[u8]) -> bool {
    bytes.len() > 24
}

/// An index record's value in encoded bytes (`None`: a tombstone).
pub(super) fn index_value(bytes: &[u8]) -> Option<&[u8]> {
    bytes.get(25..).filter(|_| bytes.len() > 24)
}

pub(super) fn stamp_of(bytes: &[u8]) -> Option<(Stamp, u64)> {
    let word = |i: usize| -> Option<u64> {
        Some(u64::from_be_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
    };
    Some((
        Stamp {
            hlc: word(0)?,
            author: word(8)?,
        },
        word(16)?,
    ))
}

pub(super) fn decode_entry(path: &Path, cid: &str, bytes: &[u8]) -> Result<Entry, PinDbError> {
    let corrupt = |message: String| PinDbError::Corrupt {
        path: path.to_owned(),
        what: format!("pin {cid}"),
        message,
    };
    let (stamp, seq) = stamp_of(bytes).ok_or_else(|| corrupt("too short".into()))?;
    let op = if crate::index::is_index_key(cid) {
        match index_value(bytes) {
            Some(value) => Op::Put {
                key: cid.into(),
                value: value.to_vec(),
            },
            None => Op::Clear { key: cid.into() },
        }
    } else if bytes.len() == 24 {
        Op::Unpin { cid: cid.into() }
    } else {
        let body = &bytes[24..];
        let cfg = bincode::config::standard();
        // The newest layout first; each older one is a prefix of the next,
        // so only the layout a record was written in reads it whole.
        let whole = |n: usize| n == body.len();
        let p = match bincode::serde::decode_from_slice::<StoredPin, _>(body, cfg) {
            Ok((p, n)) if whole(n) => p,
            _ => match bincode::serde::decode_from_slice::<StoredPinV2, _>(body, cfg) {
                Ok((p, n)) if whole(n) => StoredPin {
                    name: p.name,
                    replication_min: p.replication_min,
                    replication_max: p.replication_max,
                    added_unix_ms: p.added_unix_ms,
                    allocation: p.allocation,
                    meta: Default::default(),
                    origins: Vec::new(),
                },
                _ => {
                    let (p, _): (StoredPinV1, usize) = bincode::serde::decode_from_slice(body, cfg)
                        .map_err(|e| corrupt(e.to_string()))?;
                    StoredPin {
                        name: p.name,
                        replication_min: p.replication_min,
                        replication_max: p.replication_max,
                        added_unix_ms: p.added_unix_ms,
                        allocation: None,
                        meta: Default::default(),
                        origins: Vec::new(),
                    }
                }
            },
        };
        Op::Pin(PinSpec {
            cid: cid.into(),
            name: p.name,
            replication_min: p.replication_min,
            replication_max: p.replication_max,
            added_unix_ms: p.added_unix_ms,
            allocation: p.allocation,
            meta: p.meta,
            origins: p.origins,
        })
    };
    Ok(Entry { stamp, seq, op })
}

pub(super) fn bin<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap_or_default()
}

/// A bincode record, or an error naming the file and `what` it was.
pub(super) fn decode_bin<T: DeserializeOwned>(
    path: &Path,
    what: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T, PinDbError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(r, _)| r)
        .map_err(|e| PinDbError::Corrupt {
            path: path.to_owned(),
            what: what(),
            message: e.to_string(),
        })
}

pub(super) fn decode_ranges(path: &Path, author: u64, bytes: &[u8]) -> Result<Ranges, PinDbError> {
    decode_bin(path, || format!("vector of {author:x}"), bytes)
}

/// Takes `add` into a table of ranges per author (a vector on disk).
pub(super) fn union_into(
    path: &Path,
    table: &mut redb::Table<u64, &[u8]>,
    add: &crate::pinset::model::Vv,
) -> Result<(), PinDbError> {
    let e = |x: redb::StorageError| PinDbError::Db {
        path: path.to_owned(),
        message: x.to_string(),
    };
    for (author, ranges) in &add.0 {
        let mut stored = match table.get(*author).map_err(e)? {
            Some(v) => decode_ranges(path, *author, v.value())?,
            None => Ranges::default(),
        };
        if stored.union(ranges) {
            table.insert(*author, bin(&stored).as_slice()).map_err(e)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";

    fn pin(meta: &[(&str, &str)], origins: &[&str]) -> Entry {
        Entry {
            stamp: Stamp { hlc: 9, author: 4 },
            seq: 2,
            op: Op::Pin(PinSpec {
                cid: CID.into(),
                name: "n".into(),
                replication_min: 1,
                replication_max: 3,
                added_unix_ms: 11,
                allocation: Some("list".into()),
                meta: meta
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                origins: origins.iter().map(|o| o.to_string()).collect(),
            }),
        }
    }

    #[test]
    fn every_stored_layout_reads_back() {
        let path = Path::new("test.redb");
        // This version's layout, with and without meta and origins.
        for e in [
            pin(&[("app", "x"), ("k", "")], &["/ip4/127.0.0.1/tcp/1"]),
            pin(&[], &[]),
        ] {
            assert_eq!(decode_entry(path, CID, &encode_entry(&e)).unwrap(), e);
        }
        // Written before meta and origins: read with them empty.
        let mut v2 = encode_entry(&pin(&[], &[]))[..24].to_vec();
        #[derive(Serialize)]
        struct V2<'a>(&'a str, u8, u8, u64, Option<&'a str>);
        v2.extend(bin(&V2("n", 1, 3, 11, Some("list"))));
        assert_eq!(decode_entry(path, CID, &v2).unwrap(), pin(&[], &[]));
    }
}
