//! Index benchmark. Prints JSON. Real node processes (release build,
//! `--ipfs off`) on loopback:
//!
//! * `--nodes` nodes (two masters, the rest workers); `--vectors` vectors of
//!   `--dim` dimensions (cosine) written through a master's API in batches
//!   of 1,000, `--concurrency` batches in flight: the acknowledged rate, and
//!   the rate until every node holds them all;
//! * top-10 search through the API: exact, then approximate once the HNSW
//!   graph is built (its build time), latency distributions and recall@10
//!   of the approximate answers against the exact ones;
//! * a new node (a leecher) joins: the time until it holds the collection;
//! * `--triples` triples written the same way (5,000 per batch), then
//!   pattern queries of each shape (first page of 100) and 2-hop
//!   neighbourhoods through the API;
//! * every node's RSS.
//!
//! `--nodes 0` runs only the in-process search (no cluster).
//!
//! The vectors are synthetic: `--data clustered` (default; unit vectors
//! around 2,000 random centres, so neighbours exist as in real embeddings)
//! or `--data random` (uniform on the sphere: the hardest case for HNSW).
//!
//! ```sh
//! cargo run --release --example bench_index -- --vectors 100000 --triples 1000000
//! ```

use std::time::{Duration, Instant};

use futures::StreamExt;
use ipfs_kit_p2p::api::Client;
use ipfs_kit_p2p::role::Role;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use testkit::{
    Flags, NodeProc, Spawner, cid_of, release_binary, rss_kib, start_cluster, summary, wait_for,
};

const LONG: Duration = Duration::from_secs(3600);

async fn call(c: &Client, m: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
    c.json(m, path, body)
        .await
        .map(|(v, _)| v)
        .map_err(|e| e.to_string())
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

fn gauss(rng: &mut impl Rng) -> f32 {
    // Box-Muller.
    let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

struct Data {
    dim: usize,
    centres: Vec<Vec<f32>>,
    rng: rand::rngs::StdRng,
}

impl Data {
    fn next(&mut self) -> Vec<f32> {
        let mut v: Vec<f32> = (0..self.dim).map(|_| gauss(&mut self.rng)).collect();
        if !self.centres.is_empty() {
            let c = &self.centres[self.rng.random_range(0..self.centres.len())];
            // Noise of about the centre's own size: neighbours at cosine ~0.5-0.7.
            for (x, y) in v.iter_mut().zip(c) {
                *x = *y + *x * 0.9 / (self.dim as f32).sqrt();
            }
        }
        normalise(&mut v);
        v
    }
}

async fn sizes(n: &NodeProc) -> Option<Value> {
    call(&n.client, Method::GET, "/v1/index", None).await.ok()
}

async fn wait_all(nodes: &[&NodeProc], field: &str, want: u64) -> Option<()> {
    wait_for(LONG, || async {
        for n in nodes {
            let s = sizes(n).await?;
            if s[field].as_u64()? < want {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// Writes `batches` through `c` with `conc` in flight; the elapsed seconds.
async fn ingest(c: &Client, path: &str, batches: Vec<Value>, conc: usize) -> Result<f64, String> {
    let started = Instant::now();
    let results: Vec<Result<Value, String>> = futures::stream::iter(batches)
        .map(|b| {
            let c = c.clone();
            async move { call(&c, Method::POST, path, Some(b)).await }
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn timed(
    samples: &mut Vec<f64>,
    f: impl std::future::Future<Output = Result<Value, String>>,
) -> Result<Value, String> {
    let t = Instant::now();
    let v = f.await?;
    samples.push(t.elapsed().as_secs_f64() * 1000.0);
    Ok(v)
}

fn rss(nodes: &[NodeProc]) -> Value {
    json!(
        nodes
            .iter()
            .map(|n| rss_kib(n.pid()).map(|k| k as f64 / 1024.0))
            .collect::<Vec<_>>()
    )
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let flags = Flags::parse(&[
        "nodes",
        "vectors",
        "dim",
        "triples",
        "concurrency",
        "queries",
        "data",
        "bin",
    ])?;
    let n_nodes = match flags.num("nodes", 3)? {
        0 => 0,
        n => n.max(2),
    };
    let n_vec = flags.num("vectors", 100_000)?;
    let dim = flags.num("dim", 384)?;
    let n_tri = flags.num("triples", 1_000_000)?;
    let conc = flags.num("concurrency", 4)?;
    let n_q = flags.num("queries", 200)?;
    let clustered = match flags.get("data").unwrap_or("clustered") {
        "clustered" => true,
        "random" => false,
        other => return Err(format!("--data {other}: clustered or random")),
    };
    // Vectors.
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let centres = if clustered {
        (0..2000)
            .map(|_| {
                let mut c: Vec<f32> = (0..dim).map(|_| gauss(&mut rng)).collect();
                normalise(&mut c);
                c
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut data = Data { dim, centres, rng };
    let vectors: Vec<Vec<f32>> = (0..n_vec).map(|_| data.next()).collect();
    let queries: Vec<Vec<f32>> = (0..n_q).map(|_| data.next()).collect();
    if n_nodes == 0 {
        // `--nodes 0`: the in-process search only.
        let mut out = in_process(&vectors, &queries);
        strip_samples(&mut out);
        println!("{out:#}");
        return Ok(());
    }
    let bin = match flags.get("bin") {
        Some(b) => b.into(),
        None => release_binary()?,
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let sp = Spawner::new(bin);
    let mut roles = vec![Role::Master, Role::Master];
    roles.extend(std::iter::repeat_n(Role::Worker, n_nodes - 2));
    let mut nodes = start_cluster(&sp, dir.path(), &roles, Duration::from_secs(60)).await?;
    let m = nodes[0].client.clone();
    let mut out = json!({ "nodes": n_nodes, "vectors": n_vec, "dim": dim, "triples": n_tri, "data": if clustered { "clustered" } else { "random" } });

    call(
        &m,
        Method::PUT,
        "/v1/index/embeddings/bench",
        Some(json!({"dim": dim, "metric": "cosine"})),
    )
    .await?;
    let batches: Vec<Value> = (0..n_vec)
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(|ch| json!({ "items": ch.iter().map(|&i| json!({"key": format!("v{i}"), "vector": vectors[i], "meta": {"i": i}})).collect::<Vec<_>>() }))
        .collect();
    let started = Instant::now();
    let acked = ingest(&m, "/v1/index/embeddings/bench/items", batches, conc).await?;
    let all: Vec<&NodeProc> = nodes.iter().collect();
    wait_all(&all, "vectors", n_vec as u64)
        .await
        .ok_or("the vectors never reached every node")?;
    let everywhere = started.elapsed().as_secs_f64();
    out["vector_ingest"] = json!({
        "acknowledged_per_s": n_vec as f64 / acked,
        "on_every_node_per_s": n_vec as f64 / everywhere,
        "acknowledged_s": acked, "on_every_node_s": everywhere,
    });
    eprintln!(
        "vectors: {:.0}/s acknowledged, {:.0}/s on every node",
        n_vec as f64 / acked,
        n_vec as f64 / everywhere
    );

    // Search: exact first.
    let search = |q: &Vec<f32>, mode: &str| json!({"vector": q, "k": 10, "mode": mode});
    let mut exact_ms = Vec::new();
    let mut exact = Vec::new();
    for q in &queries {
        let v = timed(
            &mut exact_ms,
            call(
                &m,
                Method::POST,
                "/v1/index/embeddings/bench/search",
                Some(search(q, "exact")),
            ),
        )
        .await?;
        exact.push(v);
    }
    // The graph: built in the background once the collection is large.
    let built = wait_for(LONG, || async {
        let i = call(&m, Method::GET, "/v1/index/embeddings/bench", None)
            .await
            .ok()?;
        (i["ann_items"].as_u64()? as usize * 10 >= n_vec * 9 && i["ann_building"] == json!(false))
            .then_some(())
    })
    .await;
    let build_s = started.elapsed().as_secs_f64() - everywhere;
    let mut approx_ms = Vec::new();
    let (mut hit, mut total) = (0usize, 0usize);
    if built.is_some() {
        for (q, e) in queries.iter().zip(&exact) {
            let a = timed(
                &mut approx_ms,
                call(
                    &m,
                    Method::POST,
                    "/v1/index/embeddings/bench/search",
                    Some(search(q, "approximate")),
                ),
            )
            .await?;
            let want: Vec<&Value> = e["hits"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| &h["key"])
                .collect();
            hit += a["hits"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|h| want.contains(&&h["key"]))
                .count();
            total += want.len();
        }
    }
    let recall = hit as f64 / total.max(1) as f64;
    let (ep50, ap50) = (
        summary(exact_ms.clone())["p50"].as_f64().unwrap_or(0.0),
        summary(approx_ms.clone())["p50"].as_f64().unwrap_or(0.0),
    );
    out["search"] = json!({
        "exact_ms": summary(exact_ms), "approximate_ms": summary(approx_ms),
        "recall_at_10": recall, "speedup_p50": ep50 / ap50.max(1e-9),
        "graph_ready_s_after_ingest": build_s,
    });
    eprintln!(
        "search: exact p50 {ep50:.2} ms, approximate p50 {ap50:.2} ms, recall@10 {recall:.4}"
    );
    out["search_in_process"] = in_process(&vectors, &queries);
    strip_samples(&mut out["search"]);
    strip_samples(&mut out["search_in_process"]);
    out["rss_mib_after_vectors"] = rss(&nodes);

    // A new node joins.
    let t = Instant::now();
    let boot = vec![nodes[0].addr.clone()];
    let joiner = sp
        .spawn(Role::Leecher, &dir.path().join("join"), &boot)
        .await?;
    wait_all(&[&joiner], "vectors", n_vec as u64)
        .await
        .ok_or("the new node never held the collection")?;
    out["new_node_holds_collection_s"] = json!(t.elapsed().as_secs_f64());
    eprintln!(
        "a new node held the collection after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    nodes.push(joiner);

    // Triples: 10,000 documents with 100 triples each of assorted shapes.
    if n_tri > 0 {
        let subjects = (n_tri / 100).max(1);
        // 100 distinct triples per subject: topics, citations, content
        // CIDs and typed literals.
        let triple = |i: usize| {
            let (d, j) = (i / 100, i % 100);
            let s = format!("https://example.org/doc/{d}");
            match j % 4 {
                0 => {
                    json!({"s": s, "p": "https://schema.org/about", "o": format!("https://example.org/topic/{}", (d * 31 + j) % 1000)})
                }
                1 => {
                    json!({"s": s, "p": "https://schema.org/cites", "o": format!("https://example.org/cited/{}", (d * 7919 + j) % (subjects * 10))})
                }
                2 => json!({"s": s, "p": "https://schema.org/content", "o": cid_of(i as u64)}),
                _ => {
                    json!({"s": s, "p": format!("https://schema.org/p{}", j % 50), "o": {"literal": {"value": i.to_string(), "datatype": "http://www.w3.org/2001/XMLSchema#integer"}}})
                }
            }
        };
        let batches: Vec<Value> = (0..n_tri)
            .collect::<Vec<_>>()
            .chunks(5000)
            .map(|ch| json!({ "add": ch.iter().map(|&i| triple(i)).collect::<Vec<_>>() }))
            .collect();
        let started = Instant::now();
        let acked = ingest(&m, "/v1/index/graph/triples", batches, conc).await?;
        let all: Vec<&NodeProc> = nodes.iter().collect();
        wait_all(&all, "triples", n_tri as u64)
            .await
            .ok_or("the triples never reached every node")?;
        let everywhere = started.elapsed().as_secs_f64();
        out["triple_ingest"] = json!({
            "acknowledged_per_s": n_tri as f64 / acked, "on_every_node_per_s": n_tri as f64 / everywhere,
        });
        eprintln!(
            "triples: {:.0}/s acknowledged, {:.0}/s on every node",
            n_tri as f64 / acked,
            n_tri as f64 / everywhere
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut shapes = serde_json::Map::new();
        let shape_names = ["s??", "?p?", "??o", "sp?", "s?o", "?po", "spo", "???"];
        for name in shape_names {
            let mut ms = Vec::new();
            for _ in 0..100 {
                let i = rng.random_range(0..n_tri) / 4 * 4; // an "about" triple
                let t = triple(i);
                let pick = |c: char, k: &str| {
                    if name.contains(c) {
                        t[k].clone()
                    } else {
                        Value::Null
                    }
                };
                let pattern =
                    json!({"s": pick('s', "s"), "p": pick('p', "p"), "o": pick('o', "o")});
                timed(
                    &mut ms,
                    call(
                        &m,
                        Method::POST,
                        "/v1/index/graph/query",
                        Some(json!({"pattern": pattern, "limit": 100})),
                    ),
                )
                .await?;
            }
            shapes.insert(name.into(), summary(ms));
        }
        let (mut hood, mut hood_sizes) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            let s = format!("https://example.org/doc/{}", rng.random_range(0..subjects));
            let body = json!({"node": s, "depth": 2, "limit": 10000});
            let path = "/v1/index/graph/neighbourhood";
            let v = timed(&mut hood, call(&m, Method::POST, path, Some(body))).await?;
            hood_sizes.push(v["triples"].as_array().map_or(0, Vec::len) as f64);
        }
        out["graph_query_ms"] = Value::Object(shapes);
        out["neighbourhood_2hop_ms"] = summary(hood);
        out["neighbourhood_2hop_triples"] = summary(hood_sizes);
    }
    out["rss_mib_end"] = rss(&nodes);
    for s in [
        "graph_query_ms",
        "neighbourhood_2hop_ms",
        "neighbourhood_2hop_triples",
    ] {
        if let Some(o) = out.get_mut(s) {
            strip_samples(o);
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// The same vectors and queries in an embeddings view in this process (no
/// HTTP, no JSON): the graph's build time on one thread, and the search
/// itself, exact and approximate.
fn in_process(vectors: &[Vec<f32>], queries: &[Vec<f32>]) -> Value {
    use ipfs_kit_p2p::index::embeddings::*;
    use ipfs_kit_p2p::index::{TAG_COLLECTION, TAG_ITEM, View};
    let dim = vectors.first().map_or(1, Vec::len);
    let mut v = Embeddings::manual();
    let def = CollectionDef {
        dim: dim as u32,
        metric: Metric::Cosine,
        generation: 1,
    };
    let (rest, val) = collection_record("b", &def);
    v.apply(TAG_COLLECTION, &rest, Some(&val));
    for (i, x) in vectors.iter().enumerate() {
        let rec = ItemRecord {
            generation: 1,
            vector: x.clone(),
            meta: String::new(),
        };
        let (rest, val) = item_record("b", &format!("v{i}"), &rec);
        v.apply(TAG_ITEM, &rest, Some(&val));
    }
    let t = Instant::now();
    v.build_now("b", 7);
    let build_s = t.elapsed().as_secs_f64();
    let (mut exact_ms, mut approx_ms) = (Vec::new(), Vec::new());
    let (mut hit, mut total) = (0usize, 0usize);
    for q in queries {
        let t = Instant::now();
        let e = v
            .search("b", q, 10, None, Mode::Exact)
            .unwrap_or_else(|e| panic!("{e}"));
        exact_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let a = v
            .search("b", q, 10, None, Mode::Approximate)
            .unwrap_or_else(|e| panic!("{e}"));
        approx_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        hit += a
            .hits
            .iter()
            .filter(|h| e.hits.iter().any(|x| x.key == h.key))
            .count();
        total += e.hits.len();
    }
    let (e50, a50) = (
        summary(exact_ms.clone())["p50"].as_f64().unwrap_or(0.0),
        summary(approx_ms.clone())["p50"].as_f64().unwrap_or(0.0),
    );
    eprintln!(
        "in process: build {build_s:.1} s, exact p50 {e50:.2} ms, approximate p50 {a50:.3} ms"
    );
    json!({
        "build_s_one_thread": build_s,
        "exact_ms": summary(exact_ms), "approximate_ms": summary(approx_ms),
        "recall_at_10": hit as f64 / total.max(1) as f64, "speedup_p50": e50 / a50.max(1e-9),
    })
}

/// Distributions without their samples (the output stays readable).
fn strip_samples(v: &mut Value) {
    if let Value::Object(m) = v {
        m.remove("samples");
        m.values_mut().for_each(strip_samples);
    }
}
