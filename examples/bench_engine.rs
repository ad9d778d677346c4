//! IPFS engine benchmark: the built-in engine's add and cat throughput
//! (1 MiB and 100 MiB), bitswap transfer between two engines on loopback,
//! pin rates for many small items (local and over bitswap), idle RSS, and
//! the supervisor's time from a killed daemon to a ready one. Prints JSON.
//!
//! ```sh
//! cargo run --release --example bench_engine
//! ```
//! Options: `--trials T` (10: 1 MiB rounds and restarts), `--big-trials B`
//! (3: 100 MiB rounds), `--items N` (2000 small pins), `--bin PATH`.
//! Throughput counts file bytes over wall time as a kubo client sees it
//! (HTTP upload or download included), all processes on this machine.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipfs_kit_p2p::ipfs_rpc::IpfsClient;
use ipfs_kit_p2p::role::Role;
use serde_json::json;
use testkit::{EngineProc, Flags, Spawner, release_binary, rss_kib, summary, wait_for};

const MIB: usize = 1024 * 1024;

/// Fresh pseudo-random bytes per call, so no block is ever already stored.
fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

fn mib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

/// add, cat on the same engine, then bitswap (pin on the other): MiB/s each.
async fn rounds(
    a: &IpfsClient,
    b: &IpfsClient,
    size: usize,
    n: usize,
    seed: u64,
) -> serde_json::Value {
    let (mut add, mut cat, mut swap) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let bytes = data(size, seed + i as u64);
        let t = Instant::now();
        let added = a.add("f", bytes).await.expect("add");
        add.push(mib_s(size, t.elapsed()));
        let t = Instant::now();
        let back = a.cat(&added.hash).await.expect("cat");
        cat.push(mib_s(back.len(), t.elapsed()));
        let t = Instant::now();
        b.pin_add(&added.hash).await.expect("pin over bitswap");
        swap.push(mib_s(size, t.elapsed()));
    }
    json!({ "add_mib_s": summary(add), "cat_mib_s": summary(cat), "bitswap_pin_mib_s": summary(swap) })
}

/// Pins per second for `cids`, `concurrency` at a time.
async fn pin_rate(c: &IpfsClient, cids: &[String], concurrency: usize) -> f64 {
    let t = Instant::now();
    let results: Vec<_> = futures::stream::iter(cids.iter().cloned())
        .map(|cid| async move { c.pin_add(&cid).await })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 0, "pins failed");
    cids.len() as f64 / t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let flags = Flags::parse(&["trials", "big-trials", "items", "bin"])?;
    let trials = flags.num("trials", 10)?;
    let big_trials = flags.num("big-trials", 3)?;
    let items = flags.num("items", 2000)?;
    let bin = match flags.get("bin") {
        Some(b) => PathBuf::from(b),
        None => release_binary()?,
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ea = EngineProc::start(&bin, &dir.path().join("a"), None).await?;
    let eb = EngineProc::start(&bin, &dir.path().join("b"), None).await?;
    let (a, b) = (ea.client(), eb.client());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_rss = (rss_kib(ea.child.id()), rss_kib(eb.child.id()));
    let id = a.id().await.map_err(|e| e.to_string())?;
    let addr = id
        .addresses
        .unwrap_or_default()
        .into_iter()
        .next()
        .ok_or("no swarm address")?;
    b.swarm_connect(&addr).await.map_err(|e| e.to_string())?;

    let one = rounds(&a, &b, MIB, trials, 1).await;
    let big = rounds(&a, &b, 100 * MIB, big_trials, 1000).await;

    // Small items: added (and pinned) on A, then unpinned and pinned again
    // locally, and pinned on B over bitswap.
    let mut cids = Vec::new();
    let t = Instant::now();
    for i in 0..items {
        cids.push(
            a.add("s", data(100, 10_000 + i as u64))
                .await
                .map_err(|e| e.to_string())?
                .hash,
        );
    }
    let add_small = items as f64 / t.elapsed().as_secs_f64();
    for c in &cids {
        a.pin_rm(c).await.map_err(|e| e.to_string())?;
    }
    let local_1 = pin_rate(&a, &cids, 1).await;
    for c in &cids {
        a.pin_rm(c).await.map_err(|e| e.to_string())?;
    }
    let local_16 = pin_rate(&a, &cids, 16).await;
    let swap_16 = pin_rate(&b, &cids, 16).await;
    let busy_rss = (rss_kib(ea.child.id()), rss_kib(eb.child.id()));
    drop((ea, eb));

    // The supervisor: SIGKILL the daemon of a running node; time until the
    // node reports it ready again. A fresh node per trial: repeated kills of
    // one daemon would climb the backoff into the crash-loop limit.
    let mut sp = Spawner::new(&bin);
    sp.ipfs = "builtin".into();
    let mut recover = Vec::new();
    for i in 0..trials {
        let node = sp
            .spawn(Role::Worker, &dir.path().join(format!("node{i}")), &[])
            .await?;
        let ready = |not: Option<u32>| {
            let c = node.client.clone();
            async move {
                wait_for(Duration::from_secs(60), || async {
                    let s = c.status().await.ok()?.0.ipfs;
                    (s.state == "ready" && s.pid != not).then_some(s.pid?)
                })
                .await
            }
        };
        let pid = ready(None).await.ok_or("IPFS never ready")?;
        let t = Instant::now();
        // SAFETY: killing the node's IPFS child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        ready(Some(pid)).await.ok_or("IPFS not ready again")?;
        recover.push(t.elapsed().as_secs_f64() * 1000.0);
        node.terminate();
    }

    let out = json!({
        "one_mib": one,
        "hundred_mib": big,
        "small_items": {
            "items": items,
            "bytes_each": 100,
            "add_per_s": add_small,
            "local_pin_per_s": { "concurrency_1": local_1, "concurrency_16": local_16 },
            "bitswap_pin_per_s_concurrency_16": swap_16,
        },
        "rss_kib": {
            "idle_10s_after_start": [idle_rss.0, idle_rss.1],
            "after_workload": [busy_rss.0, busy_rss.1],
        },
        "supervisor": {
            "sigkill_to_ready_ms": summary(recover),
            "note": "includes the first restart's backoff: 500 ms plus up to 25 % jitter",
        },
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
    );
    Ok(())
}
