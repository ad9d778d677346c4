//! The graph on its own: build time, then top-10 search time and recall
//! after exact re-ranking (as the embeddings index does), beside an exact
//! scan of the same vectors.
//!
//! `cargo run --release -p ipfs-kit-ann --example build_time -- N EF_CONSTRUCTION EF_SEARCH`
//!
//! Vectors: 384-dimensional unit vectors around 2,000 random centres
//! (Gaussian noise), the same shape as `bench_index --data clustered`.
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut num = |d: usize| args.next().and_then(|a| a.parse().ok()).unwrap_or(d);
    let (n, efc, efs) = (num(20_000), num(64), num(128));
    let dim = 384;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut gauss = move || {
        let (u, v) = (uniform().max(1e-12), uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let unit = |mut v: Vec<f32>| {
        let n = ipfs_kit_ann::dot(&v, &v).sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    };
    let centres: Vec<Vec<f32>> = (0..2000)
        .map(|_| unit((0..dim).map(|_| gauss()).collect()))
        .collect();
    let mut point = |i: usize| -> Vec<f32> {
        let c = &centres[(i * 7919) % 2000];
        unit(
            c.iter()
                .map(|x| x + gauss() * 0.9 / (dim as f32).sqrt())
                .collect(),
        )
    };
    let points: Vec<Vec<f32>> = (0..n).map(&mut point).collect();
    let queries: Vec<Vec<f32>> = (0..200).map(|i| point(i * 13 + 5)).collect();
    let top10 = |q: &[f32], ids: &mut dyn Iterator<Item = usize>| -> Vec<usize> {
        let mut d: Vec<(f32, usize)> = ids
            .map(|i| (ipfs_kit_ann::l2_squared(q, &points[i]), i))
            .collect();
        if d.len() > 10 {
            d.select_nth_unstable_by(10, |a, b| a.0.total_cmp(&b.0));
            d.truncate(10);
        }
        d.sort_by(|a, b| a.0.total_cmp(&b.0));
        d.iter().map(|x| x.1).collect()
    };
    let t = Instant::now();
    let truth: Vec<Vec<usize>> = queries.iter().map(|q| top10(q, &mut (0..n))).collect();
    let exact_ms = t.elapsed().as_secs_f64() * 1000.0 / queries.len() as f64;
    let t = Instant::now();
    let h = ipfs_kit_ann::Hnsw::build(
        points
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, p)| (i as u64, p))
            .collect(),
        efc,
        efs,
        1,
    );
    println!(
        "n {n} ef_construction {efc}: built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (mut hit, mut ms) = (0, Vec::new());
    for (q, want) in queries.iter().zip(&truth) {
        let t = Instant::now();
        let got = top10(q, &mut h.search(q, efs).into_iter().map(|i| i as usize));
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        hit += got.iter().filter(|x| want.contains(x)).count();
    }
    ms.sort_by(f64::total_cmp);
    let p50 = ms[ms.len() / 2];
    println!(
        "ef_search {efs}: p50 {p50:.3} ms, p99 {:.3} ms, recall@10 {:.4}; exact scan {exact_ms:.2} ms ({:.1}x)",
        ms[ms.len() * 99 / 100],
        hit as f64 / (10 * queries.len()) as f64,
        exact_ms / p50
    );
}
