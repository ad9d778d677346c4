//! Pinset benchmark: how fast the cluster acknowledges pins (committed on
//! the leader and one other eligible node), next to the raw pin rate of one
//! local built-in IPFS engine measured in the same run. Prints JSON.
//!
//! ```sh
//! cargo run --release --example bench_pinset -- --nodes 5 --items 10000 --concurrency 64
//! ```
//! Options: `--nodes N` (5: one master, the rest workers), `--items N`
//! (10000), `--concurrency C` (64 writes in flight), `--bin PATH`.
//! Writes go through a worker's control API (so each is forwarded to the
//! leader), replication 3. What "acknowledged" covers today: committed in
//! the replicated pinset; holders pinning the content on their IPFS is not
//! built yet, so this is the pinset's own rate.

use std::path::PathBuf;
use std::time::Instant;

use futures::StreamExt;
use ipfs_kit_p2p::api::pins::PinRequest;
use ipfs_kit_p2p::role::Role;
use ipfs_kit_p2p::testkit::{
    EngineProc, Flags, Spawner, agreed_leader, cid_of, release_binary, rss_kib, wait_for,
};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), String> {
    let flags = Flags::parse(&["nodes", "items", "concurrency", "bin"])?;
    let nodes_n = flags.num("nodes", 5)?.max(2);
    let items = flags.num("items", 10_000)?;
    let concurrency = flags.num("concurrency", 64)?;
    let bin = match flags.get("bin") {
        Some(b) => PathBuf::from(b),
        None => release_binary()?,
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;

    // The raw rate of one local engine: add small items unpinned... the RPC
    // client pins on add, so add, unpin, then time pinning them again.
    let engine = EngineProc::start(&bin, &dir.path().join("engine"), None).await?;
    let c = engine.client();
    let mut cids = Vec::new();
    for i in 0..items.min(2000) {
        let added = c
            .add("x", format!("item {i}").into_bytes())
            .await
            .map_err(|e| e.to_string())?;
        c.pin_rm(&added.hash).await.map_err(|e| e.to_string())?;
        cids.push(added.hash);
    }
    let t = Instant::now();
    let n = futures::stream::iter(cids.iter().cloned())
        .map(|cid| {
            let c = c.clone();
            async move { c.pin_add(&cid).await.is_ok() }
        })
        .buffer_unordered(concurrency)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    let raw_rate = n as f64 / t.elapsed().as_secs_f64();
    drop(engine);

    // The cluster.
    let sp = Spawner::new(&bin);
    let mut nodes = Vec::new();
    for i in 0..nodes_n {
        let role = if i == 0 { Role::Master } else { Role::Worker };
        let boot: Vec<String> = nodes
            .first()
            .map(|n: &ipfs_kit_p2p::testkit::NodeProc| n.addr.clone())
            .into_iter()
            .collect();
        nodes.push(
            sp.spawn(role, &dir.path().join(format!("n{i}")), &boot)
                .await?,
        );
    }
    let all: Vec<_> = nodes.iter().collect();
    let (leader, _, _) = wait_for(std::time::Duration::from_secs(60), || {
        agreed_leader(&all, all.len() - 1)
    })
    .await
    .ok_or("no leader")?;
    let writer = nodes
        .iter()
        .find(|n| n.peer_id != leader)
        .ok_or("no follower")?;
    let client = writer.client.clone();
    let t = Instant::now();
    let results: Vec<Result<(), String>> = futures::stream::iter(0..items as u64)
        .map(|i| {
            let client = client.clone();
            async move {
                let req = PinRequest {
                    cid: cid_of(i),
                    replication_min: Some(3),
                    replication_max: Some(3),
                    name: None,
                };
                client
                    .pin_add(&req)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = t.elapsed().as_secs_f64();
    let acked = results.iter().filter(|r| r.is_ok()).count();
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        *errors.entry(e.clone()).or_default() += 1;
    }
    let rate = acked as f64 / elapsed;
    let leader_node = nodes
        .iter()
        .find(|n| n.peer_id == leader)
        .ok_or("leader gone")?;
    let out = json!({
        "nodes": nodes_n,
        "items": items,
        "concurrency": concurrency,
        "acknowledged": acked,
        "errors": errors,
        "seconds": elapsed,
        "acknowledged_per_s": rate,
        "raw_local_engine_pin_per_s": raw_rate,
        "ratio": rate / raw_rate,
        "leader_rss_kib": rss_kib(leader_node.pid()),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
    );
    Ok(())
}
