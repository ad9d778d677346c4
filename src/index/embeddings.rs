//! The embeddings index: named collections of vectors, each with a fixed
//! dimension and metric chosen at creation, and top-k search.
//!
//! # Records
//! * `~c/<collection>` → [`CollectionDef`] (bincode): dimension, metric and
//!   a generation (random, new at each creation). Removing a collection
//!   removes its definition; its items stay invisible until their own
//!   removals (the API writes them too), and a collection created again
//!   under the name has a new generation, so old items never reappear in it.
//! * `~e/<collection>/<key>` → [`ItemRecord`] (bincode): the generation, the
//!   vector (f32) and JSON metadata.
//!
//! Records arrive in any order (an item before its collection, during a
//! sync); the view is a function of the set of records alone: an item is
//! visible when its collection exists with its generation and dimension.
//!
//! # Search
//! Exact search scans the collection (the reference). From [`ann::MIN_ITEMS`]
//! items an HNSW graph ([`ann`]) answers approximately; a search with a
//! metadata filter is always exact. A graph is built in the background
//! from a snapshot when a change, a search or a look at the collection
//! finds none, or finds the collection changed by more than
//! [`ann::REBUILD_FRACTION`] since; meanwhile the old graph answers, with
//! the items added since scanned exactly beside it. Scores: cosine similarity and dot
//! product (higher is nearer), L2 distance (lower is nearer); hits come
//! nearest first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ann;
use super::{TAG_COLLECTION, TAG_ITEM, View};

/// Highest dimension accepted.
pub const MAX_DIM: u32 = 4096;
/// Longest collection name, item key and item metadata accepted, in bytes.
pub const MAX_NAME: usize = 64;
pub const MAX_ITEM_KEY: usize = 256;
pub const MAX_ITEM_META: usize = 16 * 1024;
/// Most hits one search returns.
pub const MAX_K: usize = 1000;
/// Hits a search returns unless told.
pub const DEFAULT_K: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Cosine,
    Dot,
    L2,
}

impl Metric {
    /// Whether a higher score is nearer.
    pub fn higher_is_nearer(self) -> bool {
        !matches!(self, Metric::L2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionDef {
    pub dim: u32,
    pub metric: Metric,
    pub generation: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    pub generation: u64,
    pub vector: Vec<f32>,
    /// JSON object text, or empty for none.
    pub meta: String,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bincode::serde::decode_from_slice(bytes, bincode::config::standard()) {
        Ok((v, n)) if n == bytes.len() => Ok(v),
        Ok(_) => Err("trailing bytes".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The record of a collection's definition: `(rest, value)`.
pub fn collection_record(name: &str, def: &CollectionDef) -> (String, Vec<u8>) {
    (name.to_owned(), encode(def))
}

/// The record of an item: `(rest, value)`.
pub fn item_record(collection: &str, key: &str, item: &ItemRecord) -> (String, Vec<u8>) {
    (format!("{collection}/{key}"), encode(item))
}

pub fn check_collection_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid collection name {name:?}: 1 to {MAX_NAME} of A-Z a-z 0-9 . _ -"
        ))
    }
}

pub fn check_item_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_ITEM_KEY || key.chars().any(char::is_control) {
        return Err(format!(
            "invalid item key {key:?}: 1 to {MAX_ITEM_KEY} bytes without control characters"
        ));
    }
    Ok(())
}

/// A vector of `dim` finite components.
pub fn check_vector(v: &[f32], dim: u32) -> Result<(), String> {
    if v.len() != dim as usize {
        return Err(format!(
            "vector of dimension {}, the collection's is {dim}",
            v.len()
        ));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(format!("vector component {i} is {} (not finite)", v[i]));
    }
    Ok(())
}

/// Item metadata: a JSON object of at most [`MAX_ITEM_META`] bytes, as text.
pub fn meta_text(meta: Option<&Value>) -> Result<String, String> {
    match meta {
        None | Some(Value::Null) => Ok(String::new()),
        Some(v @ Value::Object(_)) => {
            let text = v.to_string();
            if text.len() > MAX_ITEM_META {
                return Err(format!("item metadata larger than {MAX_ITEM_META} bytes"));
            }
            Ok(text)
        }
        Some(_) => Err("item metadata must be a JSON object".into()),
    }
}

/// Checks a record of this index (see [`super::check`]).
pub fn check(tag: u8, rest: &str, value: Option<&[u8]>) -> Result<(), String> {
    if tag == TAG_COLLECTION {
        check_collection_name(rest)?;
        if let Some(v) = value {
            let def: CollectionDef = decode(v).map_err(|e| format!("collection {rest}: {e}"))?;
            if def.dim == 0 || def.dim > MAX_DIM {
                return Err(format!(
                    "collection {rest}: dimension {} out of 1..={MAX_DIM}",
                    def.dim
                ));
            }
        }
        return Ok(());
    }
    let (coll, key) = rest
        .split_once('/')
        .ok_or_else(|| format!("malformed item key {rest:?}"))?;
    check_collection_name(coll)?;
    check_item_key(key)?;
    if let Some(v) = value {
        let item: ItemRecord = decode(v).map_err(|e| format!("item {rest}: {e}"))?;
        if item.vector.is_empty() || item.vector.len() > MAX_DIM as usize {
            return Err(format!(
                "item {rest}: dimension {} out of 1..={MAX_DIM}",
                item.vector.len()
            ));
        }
        check_vector(&item.vector, item.vector.len() as u32)?;
        if !item.meta.is_empty() {
            let meta: Value =
                serde_json::from_str(&item.meta).map_err(|e| format!("item {rest}: {e}"))?;
            meta_text(Some(&meta))?;
        }
    }
    Ok(())
}

pub use ipfs_kit_ann::{dot, l2_squared};

pub fn norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}

/// One collection's visible items, in slots (a removal moves the last
/// item into the freed slot).
#[derive(Default)]
struct Store {
    dim: usize,
    keys: Vec<String>,
    /// Each item's ID: new at every upsert, so a graph built before it
    /// never answers with its old vector.
    ids: Vec<u64>,
    vectors: Vec<f32>,
    norms: Vec<f32>,
    metas: Vec<Option<Value>>,
    slot: BTreeMap<String, usize>,
    by_id: HashMap<u64, usize>,
}

impl Store {
    fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    fn insert(&mut self, key: &str, id: u64, item: &ItemRecord) {
        self.remove(key);
        let i = self.keys.len();
        self.keys.push(key.to_owned());
        self.ids.push(id);
        self.vectors.extend_from_slice(&item.vector);
        self.norms.push(norm(&item.vector));
        self.metas.push(serde_json::from_str(&item.meta).ok());
        self.slot.insert(key.to_owned(), i);
        self.by_id.insert(id, i);
    }

    fn remove(&mut self, key: &str) -> bool {
        let Some(i) = self.slot.remove(key) else {
            return false;
        };
        self.by_id.remove(&self.ids[i]);
        let last = self.keys.len() - 1;
        if i != last {
            self.keys.swap(i, last);
            self.ids.swap(i, last);
            self.norms.swap(i, last);
            self.metas.swap(i, last);
            let (head, tail) = self.vectors.split_at_mut(last * self.dim);
            head[i * self.dim..(i + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
            self.slot.insert(self.keys[i].clone(), i);
            self.by_id.insert(self.ids[i], i);
        }
        self.keys.pop();
        self.ids.pop();
        self.norms.pop();
        self.metas.pop();
        self.vectors.truncate(last * self.dim);
        true
    }
}

/// The approximate index of a collection, and a build under way.
#[derive(Default)]
struct AnnSlot {
    graph: Option<Arc<ann::Graph>>,
    building: Option<mpsc::Receiver<ann::Graph>>,
    /// Changes since the graph's snapshot (upserts and removals).
    churn: usize,
    /// The last change, and since when a due build has waited for the
    /// collection to go quiet.
    changed: Option<Instant>,
    waiting: Option<Instant>,
}

impl AnnSlot {
    fn changed_now(&mut self) {
        self.churn += 1;
        self.changed = Some(Instant::now());
    }

    /// Whether a due build may start now: once the collection has been
    /// quiet for [`ann::QUIET`] (a bulk load is not rebuilt over and over
    /// as it grows, taking CPU and memory from the writes), or when it has
    /// waited [`ann::MAX_WAIT`] for that.
    fn may_start(&mut self, now: Instant) -> bool {
        let quiet = self
            .changed
            .is_none_or(|t| now.duration_since(t) >= ann::QUIET);
        let waited = self.waiting.get_or_insert(now);
        if quiet || now.duration_since(*waited) >= ann::MAX_WAIT {
            self.waiting = None;
            true
        } else {
            false
        }
    }
}

#[derive(Default)]
struct Collection {
    def: Option<CollectionDef>,
    /// Items that match the definition (visible).
    store: Store,
    /// Items that do not (no definition yet, another generation or
    /// dimension), kept so a later definition shows them.
    other: HashMap<String, ItemRecord>,
    ann: Mutex<AnnSlot>,
}

impl Collection {
    fn fits(&self, item: &ItemRecord) -> bool {
        self.def
            .is_some_and(|d| d.generation == item.generation && d.dim as usize == item.vector.len())
    }
}

/// What `stats` and the collection list show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectionInfo {
    pub name: String,
    pub dim: u32,
    pub metric: Metric,
    pub items: usize,
    /// Items held for this name that do not belong to the collection as
    /// defined now (another generation or dimension, waiting for removal).
    pub stray: usize,
    /// Items the approximate index was built over (0: none yet), and
    /// whether a build is under way.
    pub ann_items: usize,
    pub ann_building: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemOut {
    pub key: String,
    pub vector: Vec<f32>,
    pub meta: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub key: String,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Approximate when the collection has a graph and no filter is given.
    #[default]
    Auto,
    Exact,
    Approximate,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    pub hits: Vec<Hit>,
    /// `exact` or `approximate`.
    pub method: &'static str,
}

/// The embeddings view.
pub struct Embeddings {
    colls: BTreeMap<String, Collection>,
    next_id: u64,
    /// Build approximate indexes in the background (off in unit tests,
    /// which build them with [`Embeddings::build_now`]).
    pub auto_build: bool,
}

impl Default for Embeddings {
    fn default() -> Self {
        Embeddings {
            colls: BTreeMap::new(),
            next_id: 0,
            auto_build: true,
        }
    }
}

impl View for Embeddings {
    fn apply(&mut self, tag: u8, rest: &str, value: Option<&[u8]>) {
        if tag == TAG_COLLECTION {
            let def = value.and_then(|v| decode::<CollectionDef>(v).ok());
            self.set_def(rest, def);
        } else if tag == TAG_ITEM {
            let Some((coll, key)) = rest.split_once('/') else {
                return;
            };
            let item = value.and_then(|v| decode::<ItemRecord>(v).ok());
            self.set_item(coll, key, item);
        }
    }
}

impl Embeddings {
    /// A view that never builds in the background (tests and benchmarks
    /// build with [`Embeddings::build_now`]).
    pub fn manual() -> Embeddings {
        Embeddings {
            auto_build: false,
            ..Embeddings::default()
        }
    }

    fn set_def(&mut self, name: &str, def: Option<CollectionDef>) {
        let c = self.colls.entry(name.to_owned()).or_default();
        if c.def == def {
            return;
        }
        // Everything goes back to `other`, then what fits the new
        // definition comes out again.
        let store = std::mem::take(&mut c.store);
        for (key, &i) in &store.slot {
            let meta = store.metas[i]
                .as_ref()
                .map_or_else(String::new, Value::to_string);
            let generation = c.def.map_or(0, |d| d.generation);
            c.other.insert(
                key.clone(),
                ItemRecord {
                    generation,
                    vector: store.vector(i).to_vec(),
                    meta,
                },
            );
        }
        c.def = def;
        *c.ann.get_mut().unwrap_or_else(|p| p.into_inner()) = AnnSlot::default();
        c.store.dim = def.map_or(0, |d| d.dim as usize);
        let fitting: Vec<String> = c
            .other
            .iter()
            .filter(|(_, item)| c.fits(item))
            .map(|(k, _)| k.clone())
            .collect();
        for key in fitting {
            if let Some(item) = c.other.remove(&key) {
                self.next_id += 1;
                c.store.insert(&key, self.next_id, &item);
            }
        }
        if c.def.is_none() && c.other.is_empty() {
            self.colls.remove(name);
        }
    }

    fn set_item(&mut self, coll: &str, key: &str, item: Option<ItemRecord>) {
        let c = self.colls.entry(coll.to_owned()).or_default();
        let removed = c.store.remove(key);
        c.other.remove(key);
        match item {
            Some(item) if c.fits(&item) => {
                self.next_id += 1;
                c.store.insert(key, self.next_id, &item);
                c.ann
                    .get_mut()
                    .unwrap_or_else(|p| p.into_inner())
                    .changed_now();
            }
            Some(item) => {
                c.other.insert(key.to_owned(), item);
            }
            None if removed => c
                .ann
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .changed_now(),
            None => {}
        }
        if c.def.is_none() && c.other.is_empty() && c.store.keys.is_empty() {
            self.colls.remove(coll);
        } else if self.auto_build {
            self.maybe_build(coll);
        }
    }

    pub fn def(&self, name: &str) -> Option<CollectionDef> {
        self.colls.get(name).and_then(|c| c.def)
    }

    fn info(&self, name: &str, c: &Collection) -> Option<CollectionInfo> {
        let def = c.def?;
        let ann = c.ann.lock().unwrap_or_else(|p| p.into_inner());
        Some(CollectionInfo {
            name: name.to_owned(),
            dim: def.dim,
            metric: def.metric,
            items: c.store.keys.len(),
            stray: c.other.len(),
            ann_items: ann.graph.as_ref().map_or(0, |g| g.len),
            ann_building: ann.building.is_some(),
        })
    }

    pub fn collection(&self, name: &str) -> Option<CollectionInfo> {
        if self.auto_build {
            self.maybe_build(name);
        }
        self.info(name, self.colls.get(name)?)
    }

    pub fn collections(&self) -> Vec<CollectionInfo> {
        self.colls
            .iter()
            .filter_map(|(n, c)| self.info(n, c))
            .collect()
    }

    /// Every item key held under `name`, visible or not (what removing the
    /// collection removes).
    pub fn all_keys(&self, name: &str) -> Vec<String> {
        self.colls.get(name).map_or_else(Vec::new, |c| {
            c.store.slot.keys().chain(c.other.keys()).cloned().collect()
        })
    }

    pub fn get(&self, coll: &str, key: &str) -> Option<ItemOut> {
        let c = self.colls.get(coll)?;
        let &i = c.store.slot.get(key)?;
        Some(ItemOut {
            key: key.to_owned(),
            vector: c.store.vector(i).to_vec(),
            meta: c.store.metas[i].clone(),
        })
    }

    /// Items in key order after `after`, at most `limit`.
    pub fn items(&self, coll: &str, after: Option<&str>, limit: usize) -> Vec<ItemOut> {
        use std::ops::Bound;
        let Some(c) = self.colls.get(coll) else {
            return Vec::new();
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        c.store
            .slot
            .range::<str, _>((start, Bound::Unbounded))
            .take(limit)
            .map(|(k, &i)| ItemOut {
                key: k.clone(),
                vector: c.store.vector(i).to_vec(),
                meta: c.store.metas[i].clone(),
            })
            .collect()
    }

    /// The `k` items nearest to `query` whose metadata matches `filter`
    /// (each field equal, or an array holding the value).
    pub fn search(
        &self,
        coll: &str,
        query: &[f32],
        k: usize,
        filter: Option<&serde_json::Map<String, Value>>,
        mode: Mode,
    ) -> Result<Found, String> {
        let c = self
            .colls
            .get(coll)
            .filter(|c| c.def.is_some())
            .ok_or_else(|| format!("no collection {coll:?}"))?;
        let def = c.def.ok_or_else(|| format!("no collection {coll:?}"))?;
        check_vector(query, def.dim)?;
        let k = k.clamp(1, MAX_K);
        let filter = filter.filter(|f| !f.is_empty());
        // A quiet collection's graph is brought up to date by its readers.
        if self.auto_build {
            self.maybe_build(coll);
        }
        if mode == Mode::Approximate && k > ann::EF_SEARCH {
            return Err(format!(
                "approximate search answers at most the {} nearest; ask for an exact search",
                ann::EF_SEARCH
            ));
        }
        // The graph answers unfiltered searches for up to its breadth.
        let graph = if filter.is_none() && mode != Mode::Exact && k <= ann::EF_SEARCH {
            self.graph(c)
        } else {
            None
        };
        if mode == Mode::Approximate && graph.is_none() {
            return Err(format!(
                "collection {coll:?} has no approximate index yet (from {} items; a build may be \
                 under way)",
                ann::MIN_ITEMS
            ));
        }
        let s = &c.store;
        let qn = norm(query);
        let score = |i: usize| -> f32 {
            let v = s.vector(i);
            match def.metric {
                Metric::Dot => dot(query, v),
                Metric::Cosine => {
                    let d = qn * s.norms[i];
                    if d > 0.0 { dot(query, v) / d } else { 0.0 }
                }
                Metric::L2 => l2_squared(query, v).sqrt(),
            }
        };
        let mut top = TopK::new(k, def.metric.higher_is_nearer());
        let method = match graph {
            Some((g, churn)) => {
                // The graph's candidates that are still current, ranked
                // by their exact vectors, and an exact scan of what came
                // after its snapshot (nothing did while `churn` is 0).
                for id in g.search(query, ann::EF_SEARCH) {
                    if let Some(&i) = s.by_id.get(&id) {
                        top.offer(score(i), i);
                    }
                }
                if churn > 0 {
                    for (i, &id) in s.ids.iter().enumerate() {
                        if id > g.upto {
                            top.offer(score(i), i);
                        }
                    }
                }
                "approximate"
            }
            None => {
                for i in 0..s.keys.len() {
                    if filter.is_none_or(|f| matches(s.metas[i].as_ref(), f)) {
                        top.offer(score(i), i);
                    }
                }
                "exact"
            }
        };
        let hits = top
            .into_sorted()
            .into_iter()
            .map(|(score, i)| Hit {
                key: s.keys[i].clone(),
                score,
                meta: s.metas[i].clone(),
            })
            .collect();
        Ok(Found { hits, method })
    }

    /// The collection's graph once built (installing a finished build),
    /// and how many changes came after its snapshot.
    fn graph(&self, c: &Collection) -> Option<(Arc<ann::Graph>, usize)> {
        let mut slot = c.ann.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = &slot.building {
            match rx.try_recv() {
                Ok(g) => {
                    slot.graph = Some(Arc::new(g));
                    slot.building = None;
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => slot.building = None,
            }
        }
        Some((slot.graph.clone()?, slot.churn))
    }

    fn snapshot(c: &Collection) -> Option<ann::Snapshot> {
        let def = c.def?;
        let s = &c.store;
        Some(ann::Snapshot {
            metric: def.metric,
            items: (0..s.keys.len())
                .map(|i| (s.ids[i], s.vector(i).to_vec()))
                .collect(),
        })
    }

    /// Starts a background build when the collection is large enough and
    /// has no graph, or has changed by more than [`ann::REBUILD_FRACTION`].
    fn maybe_build(&self, name: &str) {
        let Some(c) = self.colls.get(name) else {
            return;
        };
        self.graph(c);
        let mut slot = c.ann.lock().unwrap_or_else(|p| p.into_inner());
        let n = c.store.keys.len();
        let stale = match &slot.graph {
            None => n >= ann::MIN_ITEMS,
            Some(g) => slot.churn as f64 > ann::REBUILD_FRACTION * g.len.max(1) as f64,
        };
        if !stale || slot.building.is_some() || !slot.may_start(Instant::now()) {
            return;
        }
        let (Some(pool), Some(snap)) = (pool(), Self::snapshot(c)) else {
            return;
        };
        let (tx, rx) = mpsc::channel();
        slot.building = Some(rx);
        slot.churn = 0;
        let seed = rand::random();
        pool.spawn(move || {
            let _ = tx.send(ann::Graph::build(snap, seed));
        });
    }

    /// Builds the approximate index of `name` now, on this thread (tests
    /// and benchmarks).
    pub fn build_now(&mut self, name: &str, seed: u64) {
        if let Some(c) = self.colls.get_mut(name)
            && let Some(snap) = Self::snapshot(c)
        {
            let g = ann::Graph::build(snap, seed);
            let slot = c.ann.get_mut().unwrap_or_else(|p| p.into_inner());
            *slot = AnnSlot {
                graph: Some(Arc::new(g)),
                ..AnnSlot::default()
            };
        }
    }

    /// Waits for a build under way (benchmarks): whether one finished.
    pub fn wait_build(&self, name: &str) -> bool {
        let Some(c) = self.colls.get(name) else {
            return false;
        };
        let rx = c
            .ann
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .building
            .take();
        let Some(rx) = rx else {
            return false;
        };
        match rx.recv() {
            Ok(g) => {
                c.ann.lock().unwrap_or_else(|p| p.into_inner()).graph = Some(Arc::new(g));
                true
            }
            Err(_) => false,
        }
    }
}

fn pool() -> Option<Arc<rayon::ThreadPool>> {
    static POOL: OnceLock<Option<Arc<rayon::ThreadPool>>> = OnceLock::new();
    POOL.get_or_init(ann::build_pool).clone()
}

/// Whether item metadata matches a filter: every field equal, or an array
/// holding the value.
pub fn matches(meta: Option<&Value>, filter: &serde_json::Map<String, Value>) -> bool {
    let Some(Value::Object(m)) = meta else {
        return false;
    };
    filter.iter().all(|(f, want)| match m.get(f) {
        Some(v) if v == want => true,
        Some(Value::Array(a)) => a.contains(want),
        _ => false,
    })
}

/// The best `k` of a stream of `(score, slot)`.
struct TopK {
    k: usize,
    higher: bool,
    /// Worst first (a max-heap on "badness").
    heap: std::collections::BinaryHeap<(Bad, usize)>,
}

/// A score turned so that greater is worse, totally ordered.
struct Bad(f32);
impl PartialEq for Bad {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}
impl Eq for Bad {}
impl PartialOrd for Bad {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bad {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

impl TopK {
    fn new(k: usize, higher: bool) -> TopK {
        TopK {
            k,
            higher,
            heap: std::collections::BinaryHeap::with_capacity(k + 1),
        }
    }

    fn offer(&mut self, score: f32, slot: usize) {
        let bad = Bad(if self.higher { -score } else { score });
        if self.heap.len() < self.k {
            self.heap.push((bad, slot));
        } else if self.heap.peek().is_some_and(|(worst, _)| bad < *worst) {
            self.heap.pop();
            self.heap.push((bad, slot));
        }
    }

    /// Best first (ties: lower slot first, for a stable answer).
    fn into_sorted(self) -> Vec<(f32, usize)> {
        let higher = self.higher;
        let mut v: Vec<(Bad, usize)> = self.heap.into_vec();
        v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        v.into_iter()
            .map(|(Bad(b), i)| (if higher { -b } else { b }, i))
            .collect()
    }
}

#[cfg(test)]
mod tests;
