//! HNSW search over f32 vectors by squared L2 distance, on
//! `instant-distance`, for the node's embeddings index.
//!
//! A crate of its own so the graph code is instantiated here, for this
//! one vector type, and the workspace can build it optimised even in debug
//! builds (a build over thousands of vectors takes minutes unoptimised).

use instant_distance::{Builder, HnswMap, Point, Search};

#[derive(Clone)]
struct Vector(Box<[f32]>);

impl Point for Vector {
    fn distance(&self, other: &Self) -> f32 {
        l2_squared(&self.0, &other.0)
    }
}

/// Squared Euclidean distance (eight lanes, so it vectorises).
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    acc.iter().sum::<f32>() + tail
}

/// Dot product (eight lanes).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// An HNSW graph whose points carry `u64` values.
pub struct Hnsw {
    map: HnswMap<Vector, u64>,
}

impl Hnsw {
    /// Builds the graph (uses the current rayon pool).
    pub fn build(
        points: Vec<(u64, Vec<f32>)>,
        ef_construction: usize,
        ef_search: usize,
        seed: u64,
    ) -> Hnsw {
        let (values, points): (Vec<u64>, Vec<Vector>) = points
            .into_iter()
            .map(|(v, p)| (v, Vector(p.into_boxed_slice())))
            .unzip();
        let map = Builder::default()
            .ef_construction(ef_construction)
            .ef_search(ef_search)
            .seed(seed)
            // Plain nearest-neighbour links: 20,000 clustered vectors of 384
            // dimensions built in 16 s instead of 109 s (two threads), with
            // recall@10 0.966 at ef 64 (`examples/build_time.rs`).
            .select_heuristic(None)
            .build(points, values);
        Hnsw { map }
    }

    /// The values of up to `n` points nearest to `query`, nearest first.
    pub fn search(&self, query: &[f32], n: usize) -> Vec<u64> {
        let q = Vector(query.into());
        let mut search = Search::default();
        self.map
            .search(&q, &mut search)
            .take(n)
            .map(|item| *item.value)
            .collect()
    }
}
