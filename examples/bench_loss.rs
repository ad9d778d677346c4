//! False-failover benchmark: N real nodes (`--ipfs off`), each in a network
//! namespace of its own (`testkit::netns`: addresses only inside namespaces
//! this run creates and removes), with `--loss P` percent of every node's
//! packets to every other node dropped at random (nftables `numgen random`)
//! for `--secs S`. Every second it reads each node's status; it prints JSON
//! with the leader changes each node saw under loss (0 is the goal: a lossy
//! network must not depose a live leader), the seconds in which some node had
//! no leader or the nodes disagreed, and whether every node saw every other
//! healthy at the end.
//!
//! ```sh
//! cargo run --release --example bench_loss -- --nodes 10 --loss 10 --secs 600
//! ```
//! Options: `--nodes N` (10; 2 masters, 1 leecher, workers), `--loss P` (10),
//! `--loss-at send|receive` (send: where a node sends, so its own TCP hears
//! of each drop at once and sends again without backing off; receive: where
//! a node receives, after the packet left its sender, as on a lossy network,
//! so TCP waits for acknowledgements and timeouts and backs off; see
//! `testkit::netns::LossAt`), `--secs S` (300), `--bin PATH` (default: the
//! release binary next to this example, built first), `--node-config FILE`
//! (TOML given to every node), `--transport tcp|quic` (tcp: what the nodes
//! listen on and are bootstrapped to, so every connection between them is
//! of that kind), `--keep-logs DIR` (each node's log copied
//! there as `nodeN.log` at the end; `NODE_LOG` sets their level).
//! Needs root, iproute2 and nftables.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipfs_kit_p2p::role::Role;
use serde_json::json;
use testkit::netns::{Lab, LossAt, available, on_thread_in};
use testkit::{Flags, release_binary};

fn role_of(i: usize, n: usize) -> Role {
    match i {
        0 | 1 => Role::Master,
        _ if i == n - 1 => Role::Leecher,
        _ => Role::Worker,
    }
}

fn main() {
    let flags = match Flags::parse(&[
        "nodes",
        "loss",
        "loss-at",
        "secs",
        "bin",
        "node-config",
        "keep-logs",
        "transport",
    ]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("bench_loss: {e}");
            std::process::exit(2);
        }
    };
    let run = || -> Result<serde_json::Value, String> {
        let nodes = flags.num("nodes", 10)?;
        let loss = flags.num("loss", 10)?;
        let secs = flags.num("secs", 300)? as u64;
        if nodes < 3 || loss > 100 {
            return Err("--nodes must be at least 3 and --loss at most 100".into());
        }
        let at = match flags.get("loss-at") {
            None | Some("send") => LossAt::Send,
            Some("receive") => LossAt::Receive,
            Some(other) => return Err(format!("--loss-at {other}: send or receive")),
        };
        available()?;
        let bin = match flags.get("bin") {
            Some(b) => PathBuf::from(b),
            None => release_binary()?,
        };
        let config = match flags.get("node-config") {
            Some(f) => std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?,
            None => String::new(),
        };
        let quic = match flags.get("transport") {
            None | Some("tcp") => false,
            Some("quic") => true,
            Some(other) => return Err(format!("--transport {other}: tcp or quic")),
        };
        let mut lab = Lab::create(
            &format!("bl{}", std::process::id() % 10_000),
            nodes,
            "10.77.0",
        )?;
        lab.quic = quic;
        let keep = flags.get("keep-logs").map(PathBuf::from);
        let ctl = lab.ctl();
        on_thread_in(&ctl, move || {
            measure(lab, bin, nodes, (loss as u8, at), secs, config, keep)
        })
        .map_err(|_| "the measurement panicked".to_string())?
    };
    match run() {
        Ok(report) => println!("{report:#}"),
        Err(e) => {
            eprintln!("bench_loss: {e}");
            std::process::exit(1);
        }
    }
}

async fn measure(
    lab: Lab,
    bin: PathBuf,
    n: usize,
    (loss, at): (u8, LossAt),
    secs: u64,
    config: String,
    keep_logs: Option<PathBuf>,
) -> Result<serde_json::Value, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let roles: Vec<Role> = (0..n).map(|i| role_of(i, n)).collect();
    let quic = lab.quic;
    let nodes = lab.cluster(&bin, dir.path(), &roles, &config).await?;
    let status = |i: usize| {
        let c = nodes[i].client.clone();
        async move { c.status().await.ok().map(|s| s.0) }
    };
    let mut before = Vec::new();
    for i in 0..n {
        before.push(status(i).await.ok_or(format!("node {i} does not answer"))?);
    }
    eprintln!("cluster formed; {loss} % loss on every link ({at:?}) for {secs} s");
    for i in 0..n {
        lab.rules(i, &[], &[], loss, at)?;
    }
    let start = Instant::now();
    let (mut leaderless_s, mut disagreeing_s, mut unanswered) = (0u64, 0u64, 0u64);
    let mut leaders_seen = BTreeSet::new();
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut views = BTreeSet::new();
        let mut none = false;
        for i in 0..n {
            match status(i).await {
                Some(s) => match s.leader {
                    Some(l) => {
                        leaders_seen.insert(l.peer_id.clone());
                        views.insert((l.peer_id, l.epoch));
                    }
                    None => none = true,
                },
                None => unanswered += 1,
            }
        }
        leaderless_s += u64::from(none);
        disagreeing_s += u64::from(views.len() > 1);
    }
    let mut changes = Vec::new();
    let mut after = Vec::new();
    for (i, b) in before.iter().enumerate() {
        let s = status(i).await;
        changes.push(s.as_ref().map(|s| s.leader_changes - b.leader_changes));
        after.push(s);
    }
    lab.heal()?;
    if let Some(to) = keep_logs {
        std::fs::create_dir_all(&to).map_err(|e| format!("{}: {e}", to.display()))?;
        for (i, node) in nodes.iter().enumerate() {
            let copy = to.join(format!("node{i}.log"));
            std::fs::copy(&node.log, &copy).map_err(|e| format!("{}: {e}", copy.display()))?;
        }
    }
    let healthy_at_end = after.iter().all(|s| {
        s.as_ref()
            .is_some_and(|s| s.peers.iter().filter(|p| p.healthy).count() == n - 1)
    });
    let total: u64 = changes.iter().flatten().sum();
    Ok(json!({
        "nodes": n,
        "loss_percent": loss,
        "loss_at": format!("{at:?}").to_lowercase(),
        "transport": if quic { "quic" } else { "tcp" },
        "secs": secs,
        "leader_changes_total": total,
        "leader_changes_per_node": changes,
        "leaders_seen": leaders_seen.len(),
        "seconds_some_node_had_no_leader": leaderless_s,
        "seconds_nodes_disagreed": disagreeing_s,
        "status_reads_unanswered": unanswered,
        "every_node_saw_every_other_healthy_at_the_end": healthy_at_end,
    }))
}
