//! Catch-up benchmark: a leader with a large pinset (`--entries`, default
//! 1,000,000 pins, written straight into its database before it starts),
//! and a new node joining it. Prints JSON: the leader's RSS once it leads
//! (and at the end), and how long the new node takes from its start until
//! its log is committed as far as the leader's.
//!
//! ```sh
//! cargo run --release --example bench_catchup -- --entries 1000000
//! ```
//! `--bin PATH` runs another binary (default: the release build). Both
//! nodes run with `--ipfs off`: this measures the pinset alone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipfs_kit_p2p::role::Role;
use ipfs_kit_p2p::testkit::{Flags, Spawner, prefill_pinset, release_binary, rss_kib, wait_for};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), String> {
    let flags = Flags::parse(&["entries", "bin"])?;
    let entries = flags.num("entries", 1_000_000)? as u64;
    let bin = match flags.get("bin") {
        Some(b) => PathBuf::from(b),
        None => release_binary()?,
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let leader_dir = dir.path().join("leader");
    std::fs::create_dir_all(&leader_dir).map_err(|e| e.to_string())?;

    // The leader's pinset, committed, as if written by an earlier epoch.
    let t = Instant::now();
    prefill_pinset(&leader_dir.join("pinset.redb"), entries, 1)?;
    let build_s = t.elapsed().as_secs_f64();
    let db_bytes = std::fs::metadata(leader_dir.join("pinset.redb"))
        .map(|m| m.len())
        .unwrap_or(0);

    let sp = Spawner::new(&bin);
    let leader = sp.spawn(Role::Master, &leader_dir, &[]).await?;
    let long = Duration::from_secs(1800);
    // Leading, with its barrier committed on top of the pinset.
    let t = Instant::now();
    wait_for(long, || async {
        let s = leader.status().await?;
        (s.leader.is_some_and(|l| l.peer_id == s.peer_id) && s.pinset.commit > entries)
            .then_some(())
    })
    .await
    .ok_or("the leader never took over its pinset")?;
    let leading_s = t.elapsed().as_secs_f64();
    // Give the keeper a few rounds over the whole pinset.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader_rss = rss_kib(leader.pid());

    let t = Instant::now();
    let joiner = sp
        .spawn(
            Role::Worker,
            &dir.path().join("joiner"),
            std::slice::from_ref(&leader.addr),
        )
        .await?;
    let target = leader.status().await.ok_or("leader status")?.pinset.commit;
    let caught_up = wait_for(long, || async {
        let s = joiner.status().await?;
        (s.pinset.commit >= target).then_some(())
    })
    .await;
    let catchup_s = t.elapsed().as_secs_f64();
    let last_seen = joiner.status().await.map_or(0, |s| s.pinset.commit);
    let out = json!({
        "entries": entries,
        "build_store_s": build_s,
        "leader_db_mib": db_bytes as f64 / 1048576.0,
        "leader_leading_s": leading_s,
        "leader_rss_kib_leading": leader_rss,
        "joiner_caught_up": caught_up.is_some(),
        "joiner_commit": last_seen,
        "joiner_catchup_s": catchup_s,
        "joiner_entries_per_s": last_seen as f64 / catchup_s,
        "leader_rss_kib_end": rss_kib(leader.pid()),
        "joiner_rss_kib_end": rss_kib(joiner.pid()),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
    );
    Ok(())
}
