//! The pinset's data model, a leaf every other part may import: pins, the
//! changes users make to them, the stamps that order those changes, and the
//! version vectors that say which changes a replica has seen.
//!
//! # The rule that makes replicas converge
//! Every change ([`Entry`]) carries a [`Stamp`]: a hybrid logical clock
//! reading and the ID of the replica that made it. Per CID the change with
//! the highest stamp wins ([`wins`]), pins and removals alike; a removal is
//! kept as a *tombstone*, so an older pin arriving late cannot bring the
//! item back. Applying the same changes in any order, any number of times,
//! gives the same state.
//!
//! *Later* means exactly a higher stamp: a higher clock reading, ties
//! broken by the higher replica ID. A replica's clock never runs behind any
//! stamp it has seen ([`Hlc`]), so a change made on a replica that has seen
//! another is always later than it. Between replicas that have not yet
//! exchanged, the wall clocks decide.
//!
//! # Which changes a replica has seen
//! A change is identified by `(author, seq)`: the replica that made it and
//! its sequence number there (1, 2, 3, ...). A [`Vv`] holds, per author,
//! the ranges of sequence numbers seen. The invariant every replica keeps:
//! *if `(author, seq)` is in its vector, its state for that change's CID has
//! a stamp at least as high as the change's.* Forgetting that a change was
//! seen is always safe (it is only sent again).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest pin name accepted, in bytes.
pub const MAX_NAME: usize = 255;
/// Highest replication factor accepted.
pub const MAX_REPLICATION: u8 = 64;
/// Longest CID text accepted.
pub const MAX_CID: usize = 128;

/// One item the cluster keeps pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinSpec {
    pub cid: String,
    pub name: String,
    /// Fewer healthy copies than this: the leader adds copies.
    pub replication_min: u8,
    /// More than this: the leader trims copies.
    pub replication_max: u8,
    /// When the pin was first added (the writer's clock).
    pub added_unix_ms: u64,
    /// A peer list ([`crate::index::peers`]): copies go only to live
    /// masters and workers in it (`None`: any).
    #[serde(default)]
    pub allocation: Option<String>,
    /// The Pinning Service API's `Pin.meta`: string keys and values kept
    /// with the pin (at most [`MAX_META_BYTES`] in all).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// The Pinning Service API's `Pin.origins`: multiaddrs known to
    /// provide the data, which holders' IPFS dials (at most [`MAX_ORIGINS`]).
    #[serde(default)]
    pub origins: Vec<String>,
}

/// Most bytes of `meta` (keys and values) one pin may carry.
pub const MAX_META_BYTES: usize = 4096;
/// Most `origins` one pin may carry (the Pinning Service API's bound).
pub const MAX_ORIGINS: usize = 20;
/// Longest origin multiaddr accepted.
pub const MAX_ORIGIN: usize = 256;

/// A change a user asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Adds the pin, or updates its name and replication.
    Pin(PinSpec),
    /// Removes it (kept as a tombstone).
    Unpin { cid: String },
    /// Sets an index record ([`crate::index`]): its key, and the value in
    /// that index's own encoding.
    Put { key: String, value: Vec<u8> },
    /// Removes an index record (kept as a tombstone).
    Clear { key: String },
}

impl Op {
    /// The key the change is merged under: a CID, or an index record's key.
    pub fn cid(&self) -> &str {
        match self {
            Op::Pin(p) => &p.cid,
            Op::Unpin { cid } => cid,
            Op::Put { key, .. } | Op::Clear { key } => key,
        }
    }

    /// Checks what a client or a peer sent: see [`PinSpec::check`] and
    /// [`crate::index::check`].
    pub fn check(&self) -> Result<(), String> {
        match self {
            Op::Pin(p) => p.check(),
            Op::Unpin { cid } => check_canonical(cid),
            Op::Put { key, value } => crate::index::check(key, Some(value)),
            Op::Clear { key } => crate::index::check(key, None),
        }
    }

    /// A removal (pins and index records alike): stored as a tombstone.
    /// An index record's change (not a pin's).
    pub fn is_index(&self) -> bool {
        matches!(self, Op::Put { .. } | Op::Clear { .. })
    }

    pub fn is_removal(&self) -> bool {
        matches!(self, Op::Unpin { .. } | Op::Clear { .. })
    }
}

/// Orders changes: a hybrid logical clock reading, then the replica ID.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp {
    /// See [`Hlc`]: milliseconds since the Unix epoch in the high 48 bits,
    /// a counter in the low 16.
    pub hlc: u64,
    /// The replica that made the change (a random number each pinset
    /// database takes when it is created).
    pub author: u64,
}

/// A stamped change: the unit replicas store, exchange and merge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub stamp: Stamp,
    /// Its sequence number at its author: `(stamp.author, seq)` names it.
    pub seq: u64,
    pub op: Op,
}

impl Entry {
    pub fn cid(&self) -> &str {
        self.op.cid()
    }

    /// `(author, seq)`.
    pub fn id(&self) -> (u64, u64) {
        (self.stamp.author, self.seq)
    }

    /// What [`wins`] compares: `(stamp, seq)`.
    pub fn order(&self) -> (Stamp, u64) {
        (self.stamp, self.seq)
    }

    pub fn is_pin(&self) -> bool {
        matches!(self.op, Op::Pin(_))
    }

    /// A removal: stored as a tombstone.
    pub fn is_removal(&self) -> bool {
        self.op.is_removal()
    }

    /// Bounds a peer cannot be trusted with: a canonical CID, a valid
    /// spec, a sequence number from 1, a clock reading in range.
    pub fn check(&self) -> Result<(), String> {
        if self.seq == 0 || self.seq > MAX_SEQ {
            return Err(format!("sequence number {} out of range", self.seq));
        }
        if self.stamp.author == 0 {
            return Err("replica ID 0".into());
        }
        self.op.check()
    }

    /// An upper bound on its encoded size (bincode varints, tags, strings).
    pub fn size_bound(&self) -> usize {
        40 + match &self.op {
            Op::Pin(p) => {
                p.cid.len()
                    + p.name.len()
                    + 22
                    + p.allocation.as_ref().map_or(0, String::len)
                    + p.meta
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 8)
                        .sum::<usize>()
                    + p.origins.iter().map(|o| o.len() + 4).sum::<usize>()
            }
            Op::Unpin { cid } => cid.len(),
            Op::Put { key, value } => key.len() + value.len() + 8,
            Op::Clear { key } => key.len(),
        }
    }
}

/// Highest sequence number accepted: far beyond any replica's history.
pub const MAX_SEQ: u64 = 1 << 48;

/// Whether a change stamped `new` replaces the state's change stamped
/// `old`; each is `(stamp, seq)`. Stamps never repeat (a replica's clock
/// ticks at every change); the sequence number orders even two changes a
/// faulty replica stamped alike, so replicas still agree.
pub fn wins(new: (Stamp, u64), old: Option<(Stamp, u64)>) -> bool {
    old.is_none_or(|o| new > o)
}

/// A hybrid logical clock: never behind the wall clock, never behind any
/// stamp observed, strictly increasing at every tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hlc(u64);

/// Bits of an [`Hlc`] reading that count within a millisecond.
pub const HLC_COUNTER_BITS: u32 = 16;

impl Hlc {
    /// A clock that starts at (at least) `high`, e.g. the highest stamp
    /// this replica ever stored.
    pub fn new(high: u64) -> Hlc {
        Hlc(high)
    }

    /// The reading of the wall time `unix_ms`, with a zero counter.
    pub fn at(unix_ms: u64) -> u64 {
        unix_ms.min((1 << 48) - 1) << HLC_COUNTER_BITS
    }

    /// The milliseconds part of a reading.
    pub fn millis(reading: u64) -> u64 {
        reading >> HLC_COUNTER_BITS
    }

    /// A new reading for a change made now: above every earlier one and
    /// above anything observed. (The counter carries into the milliseconds
    /// after 65,535 changes in one millisecond.)
    pub fn tick(&mut self, unix_ms: u64) -> u64 {
        self.0 = self.0.saturating_add(1).max(Hlc::at(unix_ms));
        self.0
    }

    /// Takes in a reading seen in a peer's change.
    pub fn observe(&mut self, reading: u64) {
        self.0 = self.0.max(reading);
    }

    pub fn get(&self) -> u64 {
        self.0
    }
}

/// Parses a CID as a user or a peer gives it and returns its canonical
/// text (CIDv0 stays base58btc, CIDv1 becomes base32), so one item has one key.
pub fn canonical_cid(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() || t.len() > MAX_CID {
        return Err(format!(
            "invalid CID {s:?}: expected 1 to {MAX_CID} characters"
        ));
    }
    cid::Cid::try_from(t)
        .map(|c| c.to_string())
        .map_err(|e| format!("invalid CID {s:?}: {e}"))
}

fn check_canonical(cid: &str) -> Result<(), String> {
    if canonical_cid(cid)? != cid {
        return Err(format!("CID {cid:?} is not in canonical form"));
    }
    Ok(())
}

impl PinSpec {
    /// Checks what a client or a peer sent: a canonical CID, a name of at
    /// most [`MAX_NAME`] bytes, 1 <= min <= max <= [`MAX_REPLICATION`].
    pub fn check(&self) -> Result<(), String> {
        check_canonical(&self.cid)?;
        if self.name.len() > MAX_NAME {
            return Err(format!("name longer than {MAX_NAME} bytes"));
        }
        if let Some(list) = &self.allocation {
            crate::index::peers::check_list_name(list)?;
        }
        let meta_bytes: usize = self.meta.iter().map(|(k, v)| k.len() + v.len()).sum();
        if meta_bytes > MAX_META_BYTES {
            return Err(format!(
                "meta holds {meta_bytes} bytes; at most {MAX_META_BYTES} are kept"
            ));
        }
        if self.origins.len() > MAX_ORIGINS {
            return Err(format!(
                "{} origins; at most {MAX_ORIGINS}",
                self.origins.len()
            ));
        }
        if let Some(o) = self
            .origins
            .iter()
            .find(|o| o.is_empty() || o.len() > MAX_ORIGIN)
        {
            return Err(format!(
                "origin {o:?}: expected a multiaddr of 1 to {MAX_ORIGIN} characters"
            ));
        }
        let (min, max) = (self.replication_min, self.replication_max);
        if min == 0 || min > max || max > MAX_REPLICATION {
            return Err(format!(
                "replication {min}..{max}: need 1 <= min <= max <= {MAX_REPLICATION}"
            ));
        }
        Ok(())
    }
}

/// Sorted, disjoint, non-adjacent inclusive ranges of sequence numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ranges(Vec<(u64, u64)>);

/// Most ranges kept per author; past it the highest are forgotten (safe:
/// those changes are only sent again).
pub const MAX_RANGES: usize = 256;

impl Ranges {
    /// `1..=n` (empty for 0).
    pub fn upto(n: u64) -> Ranges {
        Ranges(if n == 0 { Vec::new() } else { vec![(1, n)] })
    }

    pub fn as_slice(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, seq: u64) -> bool {
        let i = self.0.partition_point(|&(_, hi)| hi < seq);
        self.0.get(i).is_some_and(|&(lo, _)| lo <= seq)
    }

    /// The highest sequence number held (0: none).
    pub fn max(&self) -> u64 {
        self.0.last().map_or(0, |r| r.1)
    }

    /// How many sequence numbers are held.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(lo, hi)| hi - lo + 1).sum()
    }

    /// Adds `lo..=hi`; returns whether anything was new.
    pub fn insert(&mut self, lo: u64, hi: u64) -> bool {
        if lo > hi || lo == 0 {
            return false;
        }
        // Ranges that touch or overlap [lo, hi] merge with it.
        let start = self.0.partition_point(|&(_, h)| h.saturating_add(1) < lo);
        let end = self.0.partition_point(|&(l, _)| l <= hi.saturating_add(1));
        if start < end {
            let (l0, h0) = (self.0[start].0, self.0[end - 1].1);
            let merged = (l0.min(lo), h0.max(hi));
            let grew = end - start > 1 || merged != self.0[start];
            self.0.splice(start..end, [merged]);
            grew
        } else {
            self.0.insert(start, (lo, hi));
            self.0.truncate(MAX_RANGES);
            true
        }
    }

    pub fn union(&mut self, other: &Ranges) -> bool {
        let mut grew = false;
        for &(lo, hi) in &other.0 {
            grew |= self.insert(lo, hi);
        }
        grew
    }

    /// What both hold.
    pub fn intersect(&self, other: &Ranges) -> Ranges {
        let (mut out, mut i, mut j) = (Vec::new(), 0, 0);
        while i < self.0.len() && j < other.0.len() {
            let (a, b) = (self.0[i], other.0[j]);
            let (lo, hi) = (a.0.max(b.0), a.1.min(b.1));
            if lo <= hi {
                out.push((lo, hi));
            }
            if a.1 < b.1 { i += 1 } else { j += 1 }
        }
        Ranges(out)
    }

    /// What this holds and `other` does not.
    pub fn minus(&self, other: &Ranges) -> Ranges {
        let mut out = Vec::new();
        for &(lo, hi) in &self.0 {
            let mut next = lo;
            let start = other.0.partition_point(|&(_, h)| h < lo);
            for &(olo, ohi) in &other.0[start..] {
                if olo > hi {
                    break;
                }
                if olo > next {
                    out.push((next, olo - 1));
                }
                next = next.max(ohi.saturating_add(1));
            }
            if next <= hi && next >= lo {
                out.push((next, hi));
            }
        }
        Ranges(out)
    }

    /// The gaps below `upto`, and above the last range up to it: what a
    /// peer holding `upto` may have that this does not.
    pub fn gaps(&self, upto: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut next = 1u64;
        for &(lo, hi) in &self.0 {
            if next > upto {
                break;
            }
            if lo > next {
                out.push((next, (lo - 1).min(upto)));
            }
            next = hi.saturating_add(1);
        }
        if next <= upto {
            out.push((next, upto));
        }
        out
    }

    /// Checks what a peer sent: sorted, disjoint, non-adjacent, within bounds.
    pub fn check(&self) -> Result<(), String> {
        if self.0.len() > MAX_RANGES {
            return Err(format!("{} ranges for one author", self.0.len()));
        }
        let mut prev = 0u64;
        for &(lo, hi) in &self.0 {
            if lo == 0 || lo > hi || hi > MAX_SEQ || (prev > 0 && lo <= prev.saturating_add(1)) {
                return Err(format!("bad range {lo}..={hi}"));
            }
            prev = hi;
        }
        Ok(())
    }
}

/// A version vector: per author, the sequence numbers seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vv(pub BTreeMap<u64, Ranges>);

/// Most authors a vector on the wire may name.
pub const MAX_AUTHORS: usize = 4096;

impl Vv {
    pub fn contains(&self, (author, seq): (u64, u64)) -> bool {
        self.0.get(&author).is_some_and(|r| r.contains(seq))
    }

    pub fn insert(&mut self, (author, seq): (u64, u64)) -> bool {
        self.0.entry(author).or_default().insert(seq, seq)
    }

    /// Takes in everything `other` has seen; returns the authors that grew.
    pub fn union(&mut self, other: &Vv) -> Vec<u64> {
        let mut grew = Vec::new();
        for (a, r) in &other.0 {
            if self.0.entry(*a).or_default().union(r) {
                grew.push(*a);
            }
        }
        grew
    }

    pub fn get(&self, author: u64) -> Option<&Ranges> {
        self.0.get(&author)
    }

    /// How many changes have been seen in all.
    pub fn count(&self) -> u64 {
        self.0.values().map(Ranges::count).sum()
    }

    /// The changes both have seen.
    pub fn intersect(&self, other: &Vv) -> Vv {
        Vv(self
            .0
            .iter()
            .filter_map(|(a, r)| {
                let both = r.intersect(other.0.get(a)?);
                (!both.is_empty()).then_some((*a, both))
            })
            .collect())
    }

    /// The changes seen here and not in `other`.
    pub fn minus(&self, other: &Vv) -> Vv {
        Vv(self
            .0
            .iter()
            .filter_map(|(a, r)| {
                let rest = match other.0.get(a) {
                    Some(o) => r.minus(o),
                    None => r.clone(),
                };
                (!rest.is_empty()).then_some((*a, rest))
            })
            .collect())
    }

    /// Whether every change `other` has seen is seen here too.
    pub fn covers(&self, other: &Vv) -> bool {
        other.0.iter().all(|(a, r)| {
            let mine = self.0.get(a);
            r.as_slice().iter().all(|&(lo, hi)| {
                mine.is_some_and(|m| {
                    let i = m.0.partition_point(|&(_, h)| h < lo);
                    m.0.get(i).is_some_and(|&(l, h)| l <= lo && hi <= h)
                })
            })
        })
    }

    /// A 64-bit fingerprint: equal vectors, equal digests (heartbeats carry
    /// it, so peers pull only from replicas that have seen something else).
    pub fn digest(&self) -> u64 {
        // FNV-1a over the ranges: stable across builds and platforms.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |x: u64| {
            for b in x.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for (a, r) in &self.0 {
            if r.is_empty() {
                continue;
            }
            eat(*a);
            for &(lo, hi) in r.as_slice() {
                eat(lo);
                eat(hi);
            }
        }
        h
    }

    pub fn check(&self) -> Result<(), String> {
        if self.0.len() > MAX_AUTHORS {
            return Err(format!("{} authors in one vector", self.0.len()));
        }
        self.0.values().try_for_each(Ranges::check)
    }
}

#[cfg(test)]
mod tests;
