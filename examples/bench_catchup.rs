//! Catch-up benchmark: a cluster whose pinset holds `--entries` pins
//! (default 1,000,000: written straight into the first master's database
//! before it starts, then synced to the others, `--nodes` in all, default
//! 2), and a new worker joining it. Prints JSON: how long the cluster's
//! second node took to sync, how long the new node takes from its start
//! until its replica has seen every change the first holds (equal digests),
//! and every node's RSS.
//!
//! ```sh
//! cargo run --release --example bench_catchup -- --entries 1000000
//! ```
//! `--bin PATH` runs another binary (default: the release build). Nodes run
//! with `--ipfs off`: this measures the pinset alone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipfs_kit_p2p::role::Role;
use serde_json::json;
use testkit::{Flags, NodeProc, Spawner, prefill_pinset, release_binary, rss_kib, wait_for};

/// Waits until `node` has seen every change `of` has, and says how long it took.
async fn synced(node: &NodeProc, of: &NodeProc, entries: u64, within: Duration) -> Option<f64> {
    let t = Instant::now();
    let target = of.status().await?.pinset.digest;
    wait_for(within, || async {
        let s = node.status().await?;
        (s.pinset.digest == target && s.pinset.pins >= entries).then_some(())
    })
    .await?;
    Some(t.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let flags = Flags::parse(&["entries", "bin", "nodes"])?;
    let entries = flags.num("entries", 1_000_000)? as u64;
    let nodes = flags.num("nodes", 2)?.max(1);
    let bin = match flags.get("bin") {
        Some(b) => PathBuf::from(b),
        None => release_binary()?,
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let first_dir = dir.path().join("n0");
    std::fs::create_dir_all(&first_dir).map_err(|e| e.to_string())?;

    let t = Instant::now();
    prefill_pinset(&first_dir.join("pinset.redb"), entries)?;
    let build_s = t.elapsed().as_secs_f64();
    let db_bytes = std::fs::metadata(first_dir.join("pinset.redb"))
        .map(|m| m.len())
        .unwrap_or(0);

    let long = Duration::from_secs(1800);
    let sp = Spawner::new(&bin);
    let mut cluster = vec![sp.spawn(Role::Master, &first_dir, &[]).await?];
    let mut member_sync_s = Vec::new();
    for i in 1..nodes {
        let n = sp
            .spawn(
                Role::Master,
                &dir.path().join(format!("n{i}")),
                std::slice::from_ref(&cluster[0].addr),
            )
            .await?;
        member_sync_s.push(
            synced(&n, &cluster[0], entries, long)
                .await
                .ok_or("a cluster node never synced")?,
        );
        cluster.push(n);
    }
    // Let the leader's keeper read the whole pinset before measuring memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_before: Vec<Option<u64>> = cluster.iter().map(|n| rss_kib(n.pid())).collect();

    let t = Instant::now();
    let joiner = sp
        .spawn(
            Role::Worker,
            &dir.path().join("joiner"),
            std::slice::from_ref(&cluster[0].addr),
        )
        .await?;
    let started_s = t.elapsed().as_secs_f64();
    let caught_up = synced(&joiner, &cluster[0], entries, long).await;
    let catchup_s = t.elapsed().as_secs_f64();
    let pins = joiner.status().await.map_or(0, |s| s.pinset.pins);
    // Which node leads: its keeper holds the whole pinset in memory.
    let leader = joiner
        .status()
        .await
        .and_then(|s| s.leader)
        .map(|l| l.peer_id);
    let leader_index =
        leader.and_then(|l| cluster.iter().chain([&joiner]).position(|n| n.peer_id == l));
    let out = json!({
        "entries": entries,
        "nodes_before_join": nodes,
        "build_store_s": build_s,
        "first_db_mib": db_bytes as f64 / 1048576.0,
        "member_sync_s": member_sync_s,
        "joiner_in_sync": caught_up.is_some(),
        "joiner_pins": pins,
        "joiner_start_s": started_s,
        "joiner_catchup_s": catchup_s,
        "joiner_pins_per_s": pins as f64 / catchup_s,
        "rss_kib_before_join": rss_before,
        "leader_index": leader_index,
        "rss_kib_end": cluster.iter().chain([&joiner]).map(|n| rss_kib(n.pid())).collect::<Vec<_>>(),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
    );
    Ok(())
}
