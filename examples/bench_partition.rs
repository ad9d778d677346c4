//! Heal benchmark. Prints JSON. Five nodes (two masters, three workers)
//! with default settings, each in a network namespace of its own
//! (`testkit::netns`: addresses only inside namespaces this run creates and
//! removes). Per run:
//!
//! * a 3/2 partition (nftables drop rules) for `--partition-secs` (60);
//! * meanwhile `--ops` (10,000) writes in all, half through a worker on each
//!   side, paced evenly over the partition, `--concurrency` (8) in flight per
//!   side: new pins, removals of earlier pins, and CIDs both sides change;
//! * the heal, then the time until every node reports the same pinset digest
//!   (the same changes seen, so the same pinset), polled every 20 ms;
//! * then a check, not timed: every node lists the same pinset and every
//!   acknowledged change holds as the latest acknowledged change to its CID
//!   left it.
//!
//! ```sh
//! cargo run --release --example bench_partition -- --runs 3
//! ```
//! Needs root, iproute2 and nftables.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipfs_kit_p2p::api::Client;
use ipfs_kit_p2p::api::pins::PinRequest;
use ipfs_kit_p2p::role::Role;
use serde_json::json;
use testkit::netns::{Lab, LabNode, available, on_thread_in};
use testkit::{Flags, cid_of, release_binary, summary, wait_for};
use tokio::sync::Mutex;

const LONG: Duration = Duration::from_secs(120);
const ROLES: [Role; 5] = testkit::netns::FIVE_ROLES;
/// One side (the rest, nodes 1 and 3, is the other), and the worker each
/// side's writes go through.
const SIDE_A: [usize; 3] = [0, 2, 4];
const WRITER: [usize; 2] = [2, 3];

struct Opts {
    bin: PathBuf,
    ops: u64,
    secs: u64,
    concurrency: usize,
}

fn main() -> Result<(), String> {
    let flags = Flags::parse(&["runs", "ops", "partition-secs", "concurrency", "bin"])?;
    available()?;
    let opts = Opts {
        bin: match flags.get("bin") {
            Some(b) => PathBuf::from(b),
            None => release_binary()?,
        },
        ops: flags.num("ops", 10_000)? as u64,
        secs: flags.num("partition-secs", 60)? as u64,
        concurrency: flags.num("concurrency", 8)?.max(1),
    };
    let runs = flags.num("runs", 3)?;
    let opts = Arc::new(opts);
    let mut results = Vec::new();
    for run in 0..runs {
        let tag = format!("bp{}r{run}", std::process::id() % 10_000);
        let lab = Lab::create(&tag, ROLES.len(), "10.252.0")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (ctl, path, o) = (lab.ctl(), dir.path().to_owned(), opts.clone());
        let r = on_thread_in(&ctl, move || one_run(lab, path, o))
            .map_err(|_| "the run panicked".to_string())??;
        eprintln!("run {run}: {r}");
        results.push(r);
    }
    let heal: Vec<f64> = results
        .iter()
        .filter_map(|r| r["heal_to_same_pinset_s"].as_f64())
        .collect();
    let out = json!({
        "nodes": ROLES.len(),
        "partition_s": opts.secs,
        "ops": opts.ops,
        "concurrency_per_side": opts.concurrency,
        "runs": results,
        "heal_to_same_pinset_s": summary(heal),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    Ok(())
}

/// An acknowledged change: CID, pin or removal, and its stamp.
type Acked = (String, bool, (u64, u64));

async fn one_run(lab: Lab, dir: PathBuf, o: Arc<Opts>) -> Result<serde_json::Value, String> {
    let nodes = lab.cluster(&o.bin, &dir, &ROLES, "").await?;
    lab.partition(&SIDE_A)?;
    let per_side = o.ops / 2;
    let gap = Duration::from_secs(o.secs) / per_side.max(1) as u32;
    let started = Instant::now();
    let sides = WRITER.map(|i| {
        let c = nodes[i].client.clone();
        let conc = o.concurrency;
        tokio::spawn(write_side(c, i as u64, per_side, gap, conc))
    });
    let mut acked = Vec::new();
    let mut errors = BTreeMap::<String, u64>::new();
    for s in sides {
        let (a, e) = s.await.map_err(|e| e.to_string())?;
        acked.extend(a);
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
    }
    // Hold the partition for its full length even if the writes finished early.
    if let Some(rest) = Duration::from_secs(o.secs).checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let partitioned = started.elapsed();
    lab.heal()?;
    let healed = Instant::now();
    let digests = wait_for(LONG, || async {
        let mut first = None;
        for n in &nodes {
            let d = n.client.status().await.ok()?.0.pinset.digest;
            if first.is_some_and(|f| f != d) {
                return None;
            }
            first = Some(d);
        }
        first
    });
    let poll = async {
        let r = digests.await;
        (r, healed.elapsed())
    };
    let (same, took) = poll.await;
    same.ok_or("no convergence within 120 s after the heal")?;
    check(&nodes, &acked).await?;
    Ok(json!({
        "partitioned_s": partitioned.as_secs_f64(),
        "acknowledged": acked.len(),
        "errors": errors,
        "heal_to_same_pinset_s": took.as_secs_f64(),
    }))
}

/// One side's writes: mostly new pins, every tenth a removal of one of its
/// earlier pins, every tenth a CID both sides change (A pins, B removes).
async fn write_side(
    c: Client,
    side: u64,
    n: u64,
    gap: Duration,
    concurrency: usize,
) -> (Vec<Acked>, BTreeMap<String, u64>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(BTreeMap::new()));
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tick = tokio::time::interval(gap);
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..n {
        tick.tick().await;
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let (c, acked, errors) = (c.clone(), acked.clone(), errors.clone());
        let own = |k: u64| cid_of(side * 1_000_000 + k);
        let (cid, pin) = match k % 10 {
            8 => (cid_of(9_000_000 + k % 50), side == WRITER[0] as u64),
            9 => (own(k - 5), false),
            _ => (own(k), true),
        };
        tasks.spawn(async move {
            let r = if pin {
                let req = PinRequest {
                    cid: cid.clone(),
                    replication_min: Some(1),
                    replication_max: Some(1),
                    name: None,
                    peers: None,
                };
                c.pin_add(&req).await.map(|(v, _)| v.stamp)
            } else {
                c.pin_rm(&cid)
                    .await
                    .map(|(v, _)| v["stamp"].as_str().map(str::to_owned))
            };
            match r {
                Ok(Some(stamp)) => acked.lock().await.push((cid, pin, parse_stamp(&stamp))),
                Ok(None) => *errors.lock().await.entry("no stamp".into()).or_default() += 1,
                Err(e) => {
                    let e = e.to_string();
                    *errors.lock().await.entry(e).or_default() += 1;
                }
            }
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    let a = std::mem::take(&mut *acked.lock().await);
    let e = std::mem::take(&mut *errors.lock().await);
    (a, e)
}

fn parse_stamp(s: &str) -> (u64, u64) {
    let (h, a) = s.split_once('.').unwrap_or(("0", "0"));
    (
        u64::from_str_radix(h, 16).unwrap_or(0),
        u64::from_str_radix(a, 16).unwrap_or(0),
    )
}

/// Every node lists the same pinset, and it holds each CID as its latest
/// acknowledged change left it.
async fn check(nodes: &[LabNode], acked: &[Acked]) -> Result<(), String> {
    let mut last: BTreeMap<&str, (bool, (u64, u64))> = BTreeMap::new();
    for (cid, pin, stamp) in acked {
        if last.get(cid.as_str()).is_none_or(|(_, s)| stamp > s) {
            last.insert(cid, (*pin, *stamp));
        }
    }
    let mut first: Option<BTreeSet<String>> = None;
    for n in nodes {
        let (pins, _) = n.client.pins().await.map_err(|e| e.to_string())?;
        let set: BTreeSet<String> = pins.into_iter().map(|p| p.cid).collect();
        if first.as_ref().is_some_and(|f| *f != set) {
            return Err(format!("{} lists another pinset", n.ns));
        }
        first.get_or_insert(set);
    }
    let held = first.unwrap_or_default();
    for (cid, (pin, _)) in last {
        if held.contains(cid) != pin {
            return Err(format!("{cid}: the acknowledged change did not hold"));
        }
    }
    Ok(())
}
