//! Replication benchmark. Prints JSON. In one run:
//!
//! * the raw `pin/add` rate of one local built-in IPFS engine;
//! * a cluster of `--nodes` nodes (one master, the rest workers), each with
//!   its own engine: `--items` small items are added (unpinned) to one
//!   worker's IPFS, then pinned cluster-wide at replication 3 through that
//!   worker, `--concurrency` writes in flight. Reported: the rate of
//!   acknowledgements (committed in the replicated pinset) and the rate at
//!   which items reach 3 copies on the holders' IPFS (`pin/ls`);
//! * then a holder that is not the leader is SIGKILLed: the time until the
//!   leader marks it dead, and until every item is back at 3 copies on the
//!   live nodes (after the grace period, `--grace` seconds);
//! * the leader's RSS.
//!
//! With `--ipfs off` only the pinset is measured: the nodes run no IPFS,
//! and the items are CIDs that exist nowhere (acknowledgements only, with
//! their latency distribution).
//!
//! ```sh
//! cargo run --release --example bench_pinset -- --nodes 5 --items 10000 --concurrency 64
//! cargo run --release --example bench_pinset -- --ipfs off --nodes 5 --items 20000 --concurrency 64
//! ```
//! `--bin PATH` runs another binary (default: the release build);
//! `--write-copies N` sets `pins.write_copies` (default 2).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipfs_kit_p2p::api::pins::PinRequest;
use ipfs_kit_p2p::role::Role;
use serde_json::json;
use testkit::{
    EngineProc, Flags, NodeProc, Spawner, agreed_leader, cid_of, ipfs_of, pinned_sets,
    release_binary, rss_kib, start_cluster, summary, wait_for, wait_ipfs_everywhere,
};

#[tokio::main]
async fn main() -> Result<(), String> {
    let flags = Flags::parse(&[
        "nodes",
        "items",
        "concurrency",
        "bin",
        "grace",
        "holder-concurrency",
        "ipfs",
        "write-copies",
    ])?;
    let ipfs_mode = flags.get("ipfs").unwrap_or("builtin").to_owned();
    if !matches!(ipfs_mode.as_str(), "builtin" | "off") {
        return Err("--ipfs takes builtin or off".into());
    }
    let write_copies = flags.num("write-copies", 2)?;
    let grace = flags.num("grace", 5)? as u64;
    let conc = flags.num("holder-concurrency", 16)?;
    let nodes_n = flags.num("nodes", 5)?.max(2);
    let items = flags.num("items", 10_000)?;
    let concurrency = flags.num("concurrency", 64)?;
    let bin = match flags.get("bin") {
        Some(b) => PathBuf::from(b),
        None => release_binary()?,
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    if ipfs_mode == "off" {
        return pinset_only(&bin, dir.path(), nodes_n, items, concurrency, write_copies).await;
    }

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
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "[pins]\ngrace_secs = {grace}\nmin_free_mib = 0\nconcurrency = {conc}\n\
             write_copies = {write_copies}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut sp = Spawner::new(&bin);
    sp.ipfs = "builtin".into();
    sp.extra = vec!["--config".into(), cfg.display().to_string()];
    let long = Duration::from_secs(600);
    let roles: Vec<Role> = (0..nodes_n)
        .map(|i| if i == 0 { Role::Master } else { Role::Worker })
        .collect();
    let mut nodes = start_cluster(&sp, dir.path(), &roles, Duration::from_secs(60)).await?;
    let all: Vec<_> = nodes.iter().collect();
    let (leader, _, _) = wait_for(Duration::from_secs(60), || {
        agreed_leader(&all, all.len() - 1)
    })
    .await
    .ok_or("no leader")?;
    wait_ipfs_everywhere(&all, Duration::from_secs(60))
        .await
        .ok_or("IPFS not ready everywhere")?;
    let writer = nodes
        .iter()
        .find(|n| n.peer_id != leader)
        .ok_or("no follower")?;
    let ipfs = ipfs_of(writer).await.ok_or("writer's IPFS")?;
    let t = Instant::now();
    let mut cids = Vec::new();
    for i in 0..items {
        let added = ipfs
            .add_unpinned("x", format!("cluster item {i}").into_bytes())
            .await
            .map_err(|e| e.to_string())?;
        cids.push(added.hash);
    }
    let add_rate = items as f64 / t.elapsed().as_secs_f64();
    let client = writer.client.clone();
    let t = Instant::now();
    let results: Vec<Result<(), String>> = futures::stream::iter(cids.clone())
        .map(|cid| {
            let client = client.clone();
            async move {
                let req = PinRequest {
                    cid,
                    replication_min: Some(3),
                    replication_max: Some(3),
                    name: None,
                    peers: None,
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
    let full = |sets: &[std::collections::BTreeSet<String>]| {
        cids.iter()
            .all(|c| sets.iter().filter(|s| s.contains(c)).count() >= 3)
    };
    let copies = wait_for(long, || async {
        let sets = pinned_sets(&all).await?;
        full(&sets).then_some(sets)
    })
    .await
    .ok_or("items never reached 3 copies")?;
    let replicated_s = t.elapsed().as_secs_f64();
    let replicated_rate = items as f64 / replicated_s;

    // SIGKILL the non-leader holding most; time detection and restoration.
    let victim = (0..nodes.len())
        .filter(|i| nodes[*i].peer_id != leader)
        .max_by_key(|i| copies[*i].len())
        .ok_or("no holder to kill")?;
    let victim_id = nodes[victim].peer_id.clone();
    let held = copies[victim].len();
    let leader_i = nodes
        .iter()
        .position(|n| n.peer_id == leader)
        .ok_or("leader gone")?;
    let killed = Instant::now();
    nodes[victim].kill();
    let leader_node = &nodes[leader_i];
    wait_for(long, || async {
        let s = leader_node.status().await?;
        s.peers
            .iter()
            .any(|p| p.peer_id == victim_id && !p.healthy)
            .then_some(())
    })
    .await
    .ok_or("the leader never noticed")?;
    let detected_s = killed.elapsed().as_secs_f64();
    let live: Vec<&NodeProc> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n)
        .collect();
    wait_for(long, || async {
        full(&pinned_sets(&live).await?).then_some(())
    })
    .await
    .ok_or("replication never restored")?;
    let restored_s = killed.elapsed().as_secs_f64();
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
        "content_add_per_s": add_rate,
        "replicated_3_copies_s": replicated_s,
        "replicated_per_s": replicated_rate,
        "replicated_ratio": replicated_rate / raw_rate,
        "holder_killed": { "copies_held": held, "grace_s": grace,
            "detected_s": detected_s, "restored_s": restored_s,
            "restored_after_detection_s": restored_s - detected_s },
        "leader_rss_kib": rss_kib(leader_node.pid()),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// Acknowledgements alone: `items` pins through one worker of a cluster
/// whose nodes run no IPFS.
async fn pinset_only(
    bin: &std::path::Path,
    dir: &std::path::Path,
    nodes_n: usize,
    items: usize,
    concurrency: usize,
    write_copies: usize,
) -> Result<(), String> {
    let cfg = dir.join("node.toml");
    std::fs::write(&cfg, format!("[pins]\nwrite_copies = {write_copies}\n"))
        .map_err(|e| e.to_string())?;
    let mut sp = Spawner::new(bin);
    sp.extra = vec!["--config".into(), cfg.display().to_string()];
    sp.log_dir = std::env::var("BENCH_LOGS")
        .ok()
        .map(std::path::PathBuf::from);
    let roles: Vec<Role> = (0..nodes_n)
        .map(|i| if i == 0 { Role::Master } else { Role::Worker })
        .collect();
    let nodes = start_cluster(&sp, dir, &roles, Duration::from_secs(60)).await?;
    let writer = &nodes[1];
    let client = writer.client.clone();
    let t = Instant::now();
    let results: Vec<Result<(f64, usize), String>> = futures::stream::iter(0..items as u64)
        .map(|n| {
            let client = client.clone();
            async move {
                let req = PinRequest {
                    cid: cid_of(n),
                    replication_min: None,
                    replication_max: None,
                    name: None,
                    peers: None,
                };
                let sent = Instant::now();
                client
                    .pin_add(&req)
                    .await
                    .map(|(v, _)| (sent.elapsed().as_secs_f64() * 1000.0, v.copies.unwrap_or(0)))
                    .map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = t.elapsed().as_secs_f64();
    let ok: Vec<(f64, usize)> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        *errors.entry(e.clone()).or_default() += 1;
    }
    let min_copies = ok.iter().map(|(_, c)| *c).min().unwrap_or(0);
    let all: Vec<&NodeProc> = nodes.iter().collect();
    let t2 = Instant::now();
    let digest = writer.status().await.ok_or("writer status")?.pinset.digest;
    wait_for(Duration::from_secs(120), || async {
        for n in &all {
            if n.status().await?.pinset.digest != digest {
                return None;
            }
        }
        Some(())
    })
    .await
    .ok_or("the nodes never held the same pinset")?;
    let out = json!({
        "mode": "pinset only (--ipfs off)",
        "nodes": nodes_n,
        "items": items,
        "concurrency": concurrency,
        "write_copies": write_copies,
        "acknowledged": ok.len(),
        "fewest_copies_in_an_answer": min_copies,
        "errors": errors,
        "seconds": elapsed,
        "acknowledged_per_s": ok.len() as f64 / elapsed,
        "latency_ms": summary(ok.iter().map(|(ms, _)| *ms).collect()),
        "every_node_same_pinset_after_s": t2.elapsed().as_secs_f64(),
        "rss_kib": all.iter().map(|n| rss_kib(n.pid())).collect::<Vec<_>>(),
    });
    let mut out = out;
    if let Some(l) = out.get_mut("latency_ms").and_then(|v| v.as_object_mut()) {
        l.remove("samples");
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
    );
    Ok(())
}
