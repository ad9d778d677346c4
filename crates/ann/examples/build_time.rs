//! Build time of the HNSW graph: `cargo run --release -p ipfs-kit-ann --example build_time -- N EF`.
fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let ef: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let mut state = 1u64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 20_000) as f32 / 10_000.0 - 1.0
    };
    // Clustered: 2,000 centres, each point a centre plus noise of its size.
    let centres: Vec<Vec<f32>> = (0..2000)
        .map(|_| (0..384).map(|_| rnd()).collect())
        .collect();
    let mut point = |i: usize| -> Vec<f32> {
        let c = &centres[(i * 7919) % 2000];
        c.iter().map(|x| x + rnd() * 0.9).collect()
    };
    let points: Vec<(u64, Vec<f32>)> = (0..n).map(|i| (i as u64, point(i))).collect();
    let queries: Vec<Vec<f32>> = (0..100).map(|i| point(i * 13 + 5)).collect();
    let truth: Vec<Vec<u64>> = queries
        .iter()
        .map(|q| {
            let mut d: Vec<(f32, u64)> = points
                .iter()
                .map(|(i, p)| (ipfs_kit_ann::l2_squared(q, p), *i))
                .collect();
            d.sort_by(|a, b| a.0.total_cmp(&b.0));
            d.iter().take(10).map(|x| x.1).collect()
        })
        .collect();
    let t = std::time::Instant::now();
    let h = ipfs_kit_ann::Hnsw::build(points, ef, ef, 1);
    println!("n {n} ef {ef}: built in {:.1} s", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let mut hit = 0;
    for (q, want) in queries.iter().zip(&truth) {
        hit += h.search(q, 10).iter().filter(|x| want.contains(x)).count();
    }
    println!(
        "search: {:.3} ms, recall@10 {:.3}",
        t.elapsed().as_secs_f64() * 10.0,
        hit as f64 / 1000.0
    );
}
