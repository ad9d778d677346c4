//! The cluster's indexes: embeddings with nearest-neighbour search, a
//! knowledge graph, content metadata and peer lists, written by masters and
//! read on every node.
//!
//! # The contract
//! An index change is a change of the replicated pinset ([`crate::pinset`]):
//! the same stamps, version vectors, pushes, anti-entropy, journal and
//! durability rule. So it has the same guarantees as a pin:
//! 1. **Acknowledged means durable on `write_copies` masters or workers.**
//! 2. **Nothing acknowledged is lost or undone** except by a later change to
//!    the same key (last writer wins per key; a removal is a tombstone).
//! 3. **Every node converges** to the same index state once the network heals,
//!    leechers included.
//! 4. **Writes only on masters** (the API answers 403 elsewhere); reads on
//!    every node, from its own replica.
//!
//! # How an index is kept
//! Each index stores its records under keys of its own in the replicated
//! state (`~` then a one-letter tag, `/`, then the rest; no canonical CID
//! starts with `~`, so pins and index records never meet). The stored value
//! is the index's own encoding, checked by the index before it is stored,
//! whoever sent it ([`check`]). Each node keeps an in-memory view per index
//! (its query structures: a vector store and an approximate
//! nearest-neighbour graph, sorted triple tables, field tables), built from
//! its replica at start and updated after every durable commit ([`Indexes::apply`]).
//! The replicated records stay the source of truth; the views are rebuilt,
//! never stored.
//!
//! Adding an index: a module with a pure view implementing [`View`], a tag
//! below, and an arm in [`check`] and [`Indexes::apply`]. Nothing in the
//! sync machinery changes.
//!
//! * [`embeddings`]: named collections of vectors (tags `c`, `e`), exact and
//!   approximate ([`ann`]) top-k search.
//! * [`graph`]: triples (tag `g`), pattern queries, neighbourhoods.
//! * [`metadata`]: a JSON document per CID, one record per field (tag `m`).
//! * [`peers`]: named lists of peers (tag `p`).

pub mod ann;
pub mod embeddings;
pub mod graph;
pub mod metadata;
pub mod peers;

use std::sync::RwLock;

/// First character of every index key.
pub const PREFIX: char = '~';
/// Longest key accepted, in bytes.
pub const MAX_KEY: usize = 1024;
/// Largest stored value accepted, in bytes (a vector of 4,096 dimensions
/// with its metadata, a metadata field, a triple).
pub const MAX_VALUE: usize = 64 * 1024;

/// Tags of the record kinds.
pub const TAG_COLLECTION: u8 = b'c';
pub const TAG_ITEM: u8 = b'e';
pub const TAG_TRIPLE: u8 = b'g';
pub const TAG_META: u8 = b'm';
pub const TAG_PEERS: u8 = b'p';

/// Whether a replicated key is an index record (not a pin).
pub fn is_index_key(key: &str) -> bool {
    key.starts_with(PREFIX)
}

/// The replicated key of an index record.
pub fn key(tag: u8, rest: &str) -> String {
    let mut k = String::with_capacity(3 + rest.len());
    k.push(PREFIX);
    k.push(tag as char);
    k.push('/');
    k.push_str(rest);
    k
}

/// `(tag, rest)` of an index key.
pub fn split(key: &str) -> Option<(u8, &str)> {
    let b = key.as_bytes();
    (b.len() >= 3 && b[0] == PREFIX as u8 && b[2] == b'/').then(|| (b[1], &key[3..]))
}

/// The range of replicated keys holding one tag's records: `[start, end)`.
pub fn tag_range(tag: u8) -> (String, String) {
    (key(tag, ""), {
        let mut k = String::new();
        k.push(PREFIX);
        k.push(tag as char);
        k.push('0'); // the byte after '/'
        k
    })
}

/// A pure in-memory view of one index over its records.
pub trait View: Default {
    /// The record `rest` (the key after `~x/`) of kind `tag` now holds
    /// `value`, or nothing (`None`: removed). Values were checked with
    /// [`check`] before they were stored; a view still never panics on one.
    fn apply(&mut self, tag: u8, rest: &str, value: Option<&[u8]>);
}

/// Checks an index record a writer made or a peer sent: the key's syntax
/// and bounds, and the value's (`None`: a removal).
pub fn check(key: &str, value: Option<&[u8]>) -> Result<(), String> {
    if key.len() > MAX_KEY {
        return Err(format!("index key longer than {MAX_KEY} bytes"));
    }
    if key.chars().any(char::is_control) {
        return Err("index key with a control character".into());
    }
    if value.is_some_and(|v| v.len() > MAX_VALUE) {
        return Err(format!("index record larger than {MAX_VALUE} bytes"));
    }
    let Some((tag, rest)) = split(key) else {
        return Err(format!("malformed index key {key:?}"));
    };
    match tag {
        TAG_COLLECTION | TAG_ITEM => embeddings::check(tag, rest, value),
        TAG_TRIPLE => graph::check(rest, value),
        TAG_META => metadata::check(rest, value),
        TAG_PEERS => peers::check(rest, value),
        _ => Err(format!("unknown index record kind {:?}", tag as char)),
    }
}

/// Every index view of this node (readers take a read lock on one view).
#[derive(Default)]
pub struct Indexes {
    pub embeddings: RwLock<embeddings::Embeddings>,
    pub graph: RwLock<graph::Graph>,
    pub metadata: RwLock<metadata::Metadata>,
    pub peers: RwLock<peers::PeerLists>,
}

/// How much each index holds on this node (`status` shows it).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sizes {
    pub collections: usize,
    pub vectors: usize,
    pub triples: u64,
    pub documents: u64,
    pub peer_lists: usize,
}

/// A record to write or a change to feed: its key (or the part after
/// `~x/`, as an index's planners give it) and its value (`None`: removed).
pub type Record = (String, Option<Vec<u8>>);

/// A record's new value after a commit (`None`: removed or a tombstone).
pub type Change<'a> = (&'a str, Option<&'a [u8]>);

impl Indexes {
    pub fn sizes(&self) -> Sizes {
        let (collections, vectors) = {
            let c = read(&self.embeddings).collections();
            (c.len(), c.iter().map(|c| c.items).sum())
        };
        Sizes {
            collections,
            vectors,
            triples: read(&self.graph).stats().triples,
            documents: read(&self.metadata).stats().documents,
            peer_lists: read(&self.peers).len(),
        }
    }

    /// Takes in committed records, in any order of kinds (each key at most
    /// once per call).
    pub fn apply<'a>(&self, changes: impl IntoIterator<Item = Change<'a>>) {
        for (key, value) in changes {
            let Some((tag, rest)) = split(key) else {
                continue;
            };
            match tag {
                TAG_COLLECTION | TAG_ITEM => write(&self.embeddings).apply(tag, rest, value),
                TAG_TRIPLE => write(&self.graph).apply(tag, rest, value),
                TAG_META => write(&self.metadata).apply(tag, rest, value),
                TAG_PEERS => write(&self.peers).apply(tag, rest, value),
                _ => {}
            }
        }
    }
}

/// A view's write lock (a panic while one was held leaves a view that is
/// at worst missing that change; the node keeps serving).
pub fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// A view's read lock.
pub fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
