//! The cluster's indexes with real node processes: changes written through
//! a master reach every node (the leecher included) and survive that
//! master's SIGKILL; workers and leechers refuse writes; bad input is
//! refused before anything is stored. And the approximate search's recall
//! on real sentence embeddings (tests/fixtures/minilm).

use std::time::Duration;

use ipfs_kit_p2p::api::Client;
use ipfs_kit_p2p::role::Role;
use reqwest::Method;
use serde_json::{Value, json};
use testkit::{NodeProc, Spawner, cid_of, start_cluster, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");
const LONG: Duration = Duration::from_secs(60);

async fn call(c: &Client, m: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
    c.json(m, path, body)
        .await
        .map(|(v, _)| v)
        .map_err(|e| e.to_string())
}

fn vector(i: usize) -> Vec<f32> {
    (0..4)
        .map(|j| ((i * 7 + j * 3) % 11) as f32 - 5.0)
        .collect()
}

/// Everything a node reads back of what the test wrote.
async fn snapshot(n: &NodeProc) -> Option<Value> {
    let c = &n.client;
    let search = call(
        c,
        Method::POST,
        "/v1/index/embeddings/docs/search",
        Some(json!({"vector": vector(3), "k": 10, "mode": "exact"})),
    )
    .await
    .ok()?;
    let count = call(c, Method::POST, "/v1/index/graph/count", Some(json!({})))
        .await
        .ok()?;
    let meta = call(
        c,
        Method::GET,
        &format!("/v1/index/metadata/{}", cid_of(1)),
        None,
    )
    .await
    .ok();
    let lists = call(c, Method::GET, "/v1/index/peers", None).await.ok()?;
    let info = call(c, Method::GET, "/v1/index/embeddings/docs", None)
        .await
        .ok()?;
    Some(json!({
        "hits": search["hits"].as_array()?.iter().map(|h| h["key"].clone()).collect::<Vec<_>>(),
        "items": info["items"], "triples": count["count"], "meta": meta, "lists": lists,
    }))
}

#[tokio::test]
async fn index_changes_through_a_master_reach_every_node_and_survive_its_death() {
    let dir = tempfile::tempdir().unwrap();
    let sp = Spawner::new(BIN);
    let roles = [Role::Master, Role::Master, Role::Worker, Role::Leecher];
    let mut nodes = start_cluster(&sp, dir.path(), &roles, LONG).await.unwrap();
    let m = nodes[0].client.clone();
    call(
        &m,
        Method::PUT,
        "/v1/index/embeddings/docs",
        Some(json!({"dim": 4, "metric": "cosine"})),
    )
    .await
    .unwrap();
    let items: Vec<Value> = (0..50)
        .map(|i| json!({"key": format!("doc/{i}"), "vector": vector(i), "meta": {"n": i}}))
        .collect();
    let w = call(
        &m,
        Method::POST,
        "/v1/index/embeddings/docs/items",
        Some(json!({"items": items})),
    )
    .await
    .unwrap();
    assert_eq!(w["written"], 50);
    assert!(w["copies"].as_u64().unwrap() >= 2, "{w}");
    let triples: Vec<Value> = (0..30)
        .map(|i| json!({"s": format!("https://example.org/doc/{i}"), "p": "https://schema.org/about", "o": cid_of(i)}))
        .collect();
    call(
        &m,
        Method::POST,
        "/v1/index/graph/triples",
        Some(json!({"add": triples})),
    )
    .await
    .unwrap();
    call(
        &m,
        Method::PUT,
        &format!("/v1/index/metadata/{}", cid_of(1)),
        Some(json!({"name": "report.pdf", "size": 1234, "tags": ["q3", "finance"]})),
    )
    .await
    .unwrap();
    call(
        &m,
        Method::PUT,
        "/v1/index/peers/gpu",
        Some(json!({"peers": [nodes[2].peer_id.clone()]})),
    )
    .await
    .unwrap();

    // A worker and a leecher read, but refuse writes, naming the rule.
    for n in &nodes[2..] {
        let refused = call(
            &n.client,
            Method::PUT,
            "/v1/index/embeddings/other",
            Some(json!({"dim": 2, "metric": "dot"})),
        )
        .await
        .unwrap_err();
        assert!(
            refused.contains("403") && refused.contains("only on masters"),
            "{refused}"
        );
    }

    let want = snapshot(&nodes[0]).await.unwrap();
    assert_eq!(want["items"], 50);
    assert_eq!(want["triples"], 30);
    assert_eq!(want["meta"]["tags"], json!(["q3", "finance"]));
    for n in &nodes[1..] {
        let same = wait_for(LONG, || async { snapshot(n).await.filter(|s| *s == want) }).await;
        assert!(
            same.is_some(),
            "{:?} never read what the master wrote: {:?}",
            n.role,
            snapshot(n).await
        );
    }
    // The tag query on the leecher, from its own replica.
    let found = call(
        &nodes[3].client,
        Method::GET,
        "/v1/index/metadata?tag=finance",
        None,
    )
    .await
    .unwrap();
    assert_eq!(found["items"][0][0], cid_of(1));

    // The master that wrote everything dies; every acknowledged change is
    // still readable everywhere, and the other master writes.
    nodes[0].kill();
    for n in &nodes[1..] {
        assert_eq!(
            snapshot(n).await.as_ref(),
            Some(&want),
            "{:?} after the kill",
            n.role
        );
    }
    let m2 = nodes[1].client.clone();
    let w = wait_for(LONG, || async {
        call(
            &m2,
            Method::POST,
            "/v1/index/embeddings/docs/items",
            Some(json!({"items": [{"key": "late", "vector": [1, 0, 0, 0]}]})),
        )
        .await
        .ok()
    })
    .await
    .expect("the second master writes once the first is gone");
    assert_eq!(w["written"], 1);
    for n in &nodes[1..] {
        let got = wait_for(LONG, || async {
            call(
                &n.client,
                Method::GET,
                "/v1/index/embeddings/docs/items/late",
                None,
            )
            .await
            .ok()
        })
        .await;
        assert!(
            got.is_some(),
            "{:?} never read the second master's write",
            n.role
        );
    }
}

#[tokio::test]
async fn bad_index_input_is_refused_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let node = Spawner::new(BIN)
        .spawn(Role::Master, &dir.path().join("n0"), &[])
        .await
        .unwrap();
    let c = &node.client;
    call(
        c,
        Method::PUT,
        "/v1/index/embeddings/v",
        Some(json!({"dim": 3, "metric": "l2"})),
    )
    .await
    .unwrap();
    let changes = || async { node.status().await.unwrap().pinset.changes };
    let before = changes().await;
    let big = "x".repeat(300 * 1024);
    let cases: Vec<(&str, Method, String, Value)> = vec![
        (
            "wrong dimension",
            Method::POST,
            "/v1/index/embeddings/v/items".into(),
            json!({"items": [{"key": "a", "vector": [1, 2]}]}),
        ),
        (
            "not a number",
            Method::POST,
            "/v1/index/embeddings/v/items".into(),
            json!({"items": [{"key": "a", "vector": [1, "x", 3]}]}),
        ),
        (
            "unknown collection",
            Method::POST,
            "/v1/index/embeddings/nope/items".into(),
            json!({"items": [{"key": "a", "vector": [1, 2, 3]}]}),
        ),
        (
            "one bad item spoils the batch",
            Method::POST,
            "/v1/index/embeddings/v/items".into(),
            json!({"items": [{"key": "a", "vector": [1, 2, 3]}, {"key": "", "vector": [1, 2, 3]}]}),
        ),
        (
            "metadata not an object",
            Method::POST,
            "/v1/index/embeddings/v/items".into(),
            json!({"items": [{"key": "a", "vector": [1, 2, 3], "meta": [1]}]}),
        ),
        (
            "bad collection name",
            Method::PUT,
            "/v1/index/embeddings/a%20b".into(),
            json!({"dim": 3, "metric": "l2"}),
        ),
        (
            "dimension zero",
            Method::PUT,
            "/v1/index/embeddings/w".into(),
            json!({"dim": 0, "metric": "l2"}),
        ),
        (
            "other definition",
            Method::PUT,
            "/v1/index/embeddings/v".into(),
            json!({"dim": 4, "metric": "l2"}),
        ),
        (
            "bad CID",
            Method::PUT,
            "/v1/index/metadata/notacid".into(),
            json!({"name": "x"}),
        ),
        (
            "oversized document",
            Method::PUT,
            format!("/v1/index/metadata/{}", cid_of(1)),
            json!({"a": big}),
        ),
        (
            "bad IRI",
            Method::POST,
            "/v1/index/graph/triples".into(),
            json!({"add": [{"s": "no scheme", "p": "https://p", "o": "https://o"}]}),
        ),
        (
            "literal subject",
            Method::POST,
            "/v1/index/graph/triples".into(),
            json!({"add": [{"s": {"literal": {"value": "x"}}, "p": "https://p", "o": "https://o"}]}),
        ),
        (
            "bad peer ID",
            Method::PUT,
            "/v1/index/peers/l".into(),
            json!({"peers": ["nobody"]}),
        ),
    ];
    for (what, m, path, body) in cases {
        let e = call(c, m, &path, Some(body)).await.unwrap_err();
        assert!(
            e.contains("400") || e.contains("409") || e.contains("413") || e.contains("422"),
            "{what}: {e}"
        );
    }
    let e = call(
        c,
        Method::POST,
        "/v1/index/embeddings/v/search",
        Some(json!({"vector": [1, 2]})),
    )
    .await
    .unwrap_err();
    assert!(e.contains("400"), "{e}");
    assert_eq!(changes().await, before, "nothing was stored");
    assert!(node.status().await.is_some(), "the node keeps running");
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Recall@10 of the approximate index against exact search, on 3,000 real
/// sentence embeddings (all-MiniLM-L6-v2, 384 dimensions) and 200 real
/// queries.
#[test]
fn approximate_search_recalls_real_sentence_embeddings() {
    use ipfs_kit_p2p::index::View;
    use ipfs_kit_p2p::index::embeddings::*;
    const DIM: usize = 384;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm");
    let vectors = f32s(&std::fs::read(root.join("vectors.f32")).unwrap());
    let queries = f32s(&std::fs::read(root.join("queries.f32")).unwrap());
    let mut v = Embeddings::manual();
    let def = CollectionDef {
        dim: DIM as u32,
        metric: Metric::Cosine,
        generation: 1,
    };
    let (rest, val) = collection_record("s", &def);
    v.apply(ipfs_kit_p2p::index::TAG_COLLECTION, &rest, Some(&val));
    for (i, x) in vectors.chunks_exact(DIM).enumerate() {
        let rec = ItemRecord {
            generation: 1,
            vector: x.to_vec(),
            meta: String::new(),
        };
        let (rest, val) = item_record("s", &i.to_string(), &rec);
        v.apply(ipfs_kit_p2p::index::TAG_ITEM, &rest, Some(&val));
    }
    v.build_now("s", 42);
    let (mut hit, mut total) = (0usize, 0usize);
    for q in queries.chunks_exact(DIM) {
        let exact = v.search("s", q, 10, None, Mode::Exact).unwrap();
        let approx = v.search("s", q, 10, None, Mode::Approximate).unwrap();
        // Ties within 1e-5 of the 10th score count either way.
        let tenth = exact.hits.last().unwrap().score;
        hit += approx
            .hits
            .iter()
            .filter(|h| exact.hits.iter().any(|e| e.key == h.key) || h.score >= tenth - 1e-5)
            .count();
        total += exact.hits.len();
    }
    let recall = hit as f64 / total as f64;
    eprintln!("recall@10 on real sentence embeddings: {recall:.4} ({hit}/{total})");
    assert!(recall >= 0.95, "recall@10 {recall}");
}
