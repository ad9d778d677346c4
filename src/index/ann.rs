//! Approximate nearest-neighbour search for one embeddings collection: an
//! HNSW graph (`instant-distance`) built from a snapshot of its vectors on
//! a thread of its own, never the source of truth. Items added after the
//! snapshot are searched exactly beside it, items removed or changed since
//! are skipped by their ID, and the graph is built again once those grow
//! past a fraction of it ([`REBUILD_FRACTION`]).
//!
//! Every metric becomes a distance the graph can use: cosine on unit
//! vectors (`1 - cos`), squared L2, and the dot product through the usual
//! reduction of maximum inner product to L2 (each vector gets one more
//! component, `sqrt(M² - |x|²)` with `M` the largest norm, the query a 0
//! there), so the nearest point is the one with the largest dot product.

use std::sync::Arc;
use std::time::Duration;

use ipfs_kit_ann::Hnsw;

use super::embeddings::Metric;

/// Collections smaller than this are always searched exactly (a scan of a
/// few thousand vectors takes well under a millisecond).
pub const MIN_ITEMS: usize = 4096;
/// A graph is built again once items added, changed or removed since its
/// snapshot exceed this fraction of it.
pub const REBUILD_FRACTION: f64 = 0.1;
/// A due build waits until the collection has had no change for this
/// long, or has waited [`MAX_WAIT`].
pub const QUIET: Duration = Duration::from_secs(1);
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// The search breadth (`ef`), at build and at search: recall against speed.
pub const EF_SEARCH: usize = 40;
pub const EF_CONSTRUCTION: usize = 64;

/// A built graph over a snapshot: point values are item IDs.
pub struct Graph {
    hnsw: Hnsw,
    metric: Metric,
    /// For the dot product: the largest norm in the snapshot.
    max_norm: f32,
    /// Items in the snapshot, and its highest item ID (later IDs are new).
    pub len: usize,
    pub upto: u64,
}

/// A snapshot to build from: `(item ID, vector)`.
pub struct Snapshot {
    pub metric: Metric,
    pub items: Vec<(u64, Vec<f32>)>,
}

impl Graph {
    /// Builds the graph (CPU-bound: seconds to minutes for 10⁵ vectors; run
    /// it off the node's threads).
    pub fn build(snap: Snapshot, seed: u64) -> Graph {
        let max_norm = snap
            .items
            .iter()
            .map(|(_, v)| super::embeddings::norm(v))
            .fold(0f32, f32::max);
        let upto = snap.items.iter().map(|(id, _)| *id).max().unwrap_or(0);
        let len = snap.items.len();
        let points = snap
            .items
            .into_iter()
            .map(|(id, v)| (id, transform(snap.metric, &v, max_norm, false).into_vec()))
            .collect();
        Graph {
            hnsw: Hnsw::build(points, EF_CONSTRUCTION, EF_SEARCH, seed),
            metric: snap.metric,
            max_norm,
            len,
            upto,
        }
    }

    /// Up to `n` item IDs nearest to `query`, nearest first.
    pub fn search(&self, query: &[f32], n: usize) -> Vec<u64> {
        let q = transform(self.metric, query, self.max_norm, true);
        self.hnsw.search(&q, n)
    }
}

/// A vector as the graph holds it (`query`: as it is searched for).
fn transform(metric: Metric, v: &[f32], max_norm: f32, query: bool) -> Box<[f32]> {
    match metric {
        Metric::L2 => v.into(),
        Metric::Cosine => {
            let n = super::embeddings::norm(v);
            let s = if n > 0.0 { 1.0 / n } else { 0.0 };
            v.iter().map(|x| x * s).collect()
        }
        Metric::Dot => {
            let mut out = Vec::with_capacity(v.len() + 1);
            out.extend_from_slice(v);
            let extra = if query {
                0.0
            } else {
                let n = super::embeddings::norm(v);
                (max_norm * max_norm - n * n).max(0.0).sqrt()
            };
            out.push(extra);
            out.into()
        }
    }
}

/// Builds graphs on two threads of their own at the lowest CPU priority
/// (nice 19): a build takes the cores the node leaves idle, never time
/// the node needs.
pub fn build_pool() -> Option<Arc<rayon::ThreadPool>> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .thread_name(|_| "index-ann".into())
        .start_handler(|_| {
            // SAFETY: setpriority on this thread's own ID (Linux: a thread
            // ID names one thread); failure only leaves the default.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
            }
        })
        .build()
        .ok()
        .map(Arc::new)
}
