//! Cluster benchmark: spawns N real node processes on loopback and prints
//! JSON with cold-start convergence, SIGKILL failover and graceful handover
//! times over many trials, and idle RSS, CPU and bytes sent per node.
//!
//! ```sh
//! cargo run --release --example bench_cluster -- --nodes 10 --trials 20
//! ```
//! Options: `--nodes N` (10), `--trials T` (20), `--idle-secs S` (30),
//! `--bin PATH` (default: the release binary next to this example, built first),
//! `--node-config FILE` (a config file passed to every node), `--ipfs MODE`
//! (`off` by default; `builtin` gives each node its IPFS engine, whose state
//! then rides in every heartbeat; resource figures are the nodes' own),
//! `--trust open|secured|both` (`open`; `secured`: an operator key, a
//! certificate per node and a swarm key, so TCP only; `both`: one cluster
//! of each, one after the other, side by side in the report), `--quic`
//! (each node also listens on QUIC, as the default config has it; TCP only
//! otherwise), `--quic-only` (each node listens on QUIC only and the
//! others bootstrap to that, so every connection is QUIC: a crashed
//! process's connections then stay open until probes or timeouts find it,
//! and the idle figures have no bytes sent, which are counted on TCP
//! sockets; the probe datagrams' bytes, from each node's status, are
//! reported apart either way), `--silent-trials S` (0; S trials that SIGSTOP the leader,
//! a silent failure: frozen, its connections open, nothing sent; timed
//! until every survivor accepted the successor, then the frozen process is
//! killed and restarted), `--settle-ms MS` (10000; how long the cluster
//! runs after it converged before a silent trial freezes its leader: a leader that
//! just restarted answers slowly in its first moments, and the probes'
//! deadlines, adapted to its answers, stay long for up to 5 s after; plus
//! up to a second at random, so the stop falls at any point of the
//! survivors' probe cycles), `--join-trials J` (0; J times, after the
//! idle window and once the cluster agrees, one more worker with a fresh identity starts and is
//! timed from its start until every node, itself included, sees every
//! other healthy and follows the same leader at the same epoch; then it
//! stops gracefully).
//! The start also reports how much CPU the nodes used from the first start
//! until the poll saw convergence, in cores of this machine
//! (`start_cpu_cores`): 100 nodes
//! started on two cores keep both busy, so convergence after the last
//! start measures that backlog as much as the nodes' own work.
//! `--poll-full` (convergence is polled with full statuses, each with its
//! list of peers, as before 2026-12-02: to measure what that poll costs).
//! Times are taken from the nodes' own clocks: each node reports when it
//! accepted its current leader (`leader.since_unix_ms`) and when its set of
//! healthy peers last changed (`peer_counts.healthy_changed_unix_ms`), so
//! polling does not add to the figures (convergence is the latest of
//! these over all nodes, once a poll sees them agree; the report also
//! gives when the poll saw it; `convergence_per_node_ms` has each node's
//! two times, after the last start). Bytes sent are read per TCP socket
//! with `ss -tinp`. Memory is reported three ways: RSS, its private part
//! (`rss_anon_mib`) and PSS (`pss_mib`: private pages plus each shared
//! page divided among the processes mapping it, so the sum over nodes is
//! what they take together; RSS counts the binary's code, shared by every
//! node, in full in each). `by_part` splits the idle bytes sent and CPU
//! between the leader, its probers (the followers that sent probe
//! datagrams in the window; over QUIC a follower's one datagram to a new
//! leader would count too, but an idle window has no new leader) and the
//! other followers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipfs_kit_p2p::role::Role;
use serde_json::json;
use testkit::{
    NodeProc, Spawner, agreed_leader, agreement, expected_leader, pss_kib, release_binary,
    rss_anon_kib, rss_kib, summary,
};

const POLL: Duration = Duration::from_millis(50);
/// How often a slow convergence reports who lags (a sweep of full
/// statuses: not every poll).
const REPORT_EVERY: Duration = Duration::from_secs(5);
const DEADLINE: Duration = Duration::from_secs(60);
/// `--poll-full`.
static POLL_FULL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct Args {
    nodes: usize,
    trials: usize,
    idle_secs: u64,
    bin: Option<PathBuf>,
    node_config: Option<String>,
    ipfs: String,
    trust: String,
    quic: bool,
    quic_only: bool,
    silent_trials: usize,
    settle: Duration,
    join_trials: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        nodes: 10,
        trials: 20,
        idle_secs: 30,
        bin: None,
        node_config: None,
        ipfs: "off".into(),
        trust: "open".into(),
        quic: false,
        quic_only: false,
        silent_trials: 0,
        settle: Duration::from_millis(10_000),
        join_trials: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--nodes" => a.nodes = val()?.parse().map_err(|e| format!("--nodes: {e}"))?,
            "--trials" => a.trials = val()?.parse().map_err(|e| format!("--trials: {e}"))?,
            "--idle-secs" => {
                a.idle_secs = val()?.parse().map_err(|e| format!("--idle-secs: {e}"))?
            }
            "--bin" => a.bin = Some(val()?.into()),
            "--node-config" => a.node_config = Some(val()?),
            "--ipfs" => a.ipfs = val()?,
            "--trust" => a.trust = val()?,
            "--quic" => a.quic = true,
            "--quic-only" => a.quic_only = true,
            "--silent-trials" => {
                a.silent_trials = val()?
                    .parse()
                    .map_err(|e| format!("--silent-trials: {e}"))?
            }
            "--settle-ms" => {
                a.settle =
                    Duration::from_millis(val()?.parse().map_err(|e| format!("--settle-ms: {e}"))?)
            }
            "--poll-full" => POLL_FULL.store(true, std::sync::atomic::Ordering::Relaxed),
            "--join-trials" => {
                a.join_trials = val()?.parse().map_err(|e| format!("--join-trials: {e}"))?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if !matches!(a.trust.as_str(), "open" | "secured" | "both") {
        return Err("--trust takes open, secured or both".into());
    }
    if (a.quic || a.quic_only) && a.trust != "open" {
        return Err("--quic and --quic-only need --trust open (a swarm key means TCP only)".into());
    }
    if a.quic && a.quic_only {
        return Err("--quic (TCP and QUIC) or --quic-only, not both".into());
    }
    if a.nodes < 3 {
        return Err("--nodes must be at least 3".into());
    }
    Ok(a)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn role_of(i: usize, n: usize) -> Role {
    match i {
        0 | 1 => Role::Master,
        _ if i == n - 1 && n >= 4 => Role::Leecher,
        _ => Role::Worker,
    }
}

/// Polls until every live node agrees on the rightful leader (highest role,
/// lowest ID) at an epoch above `above` and sees all the others; returns
/// the leader, its epoch, and when that state was reached by the nodes'
/// own clocks (Unix ms): the latest instant at which any node accepted its
/// leader or its set of healthy peers changed. Polling 100 loaded nodes
/// takes up to seconds a round, so the instant the poll sees agreement
/// can be well after it.
async fn converge(
    nodes: &[Option<NodeProc>],
    above: u64,
) -> Result<(String, u64, Settled), String> {
    let live: Vec<&NodeProc> = nodes.iter().flatten().collect();
    let rightful = expected_leader(&live).map(|n| n.peer_id.clone());
    let start = Instant::now();
    let mut report_at = start + REPORT_EVERY;
    loop {
        let agreed = if POLL_FULL.load(std::sync::atomic::Ordering::Relaxed) {
            agreed_leader_full(&live, live.len() - 1).await
        } else {
            agreed_leader(&live, live.len() - 1).await
        };
        if let Some((leader, epoch, statuses)) = agreed
            && epoch > above
            && Some(&leader) == rightful.as_ref()
        {
            let accepted = statuses
                .iter()
                .filter_map(|s| s.leader.as_ref())
                .map(|l| l.since_unix_ms)
                .max()
                .unwrap_or(0);
            let settled = Settled {
                accepted,
                at: settled_at(&statuses),
                seen: unix_ms(),
                per_node: statuses
                    .iter()
                    .map(|s| {
                        let accepted = s.leader.as_ref().map_or(0, |l| l.since_unix_ms);
                        (accepted, s.peer_counts.healthy_changed_unix_ms)
                    })
                    .collect(),
            };
            return Ok((leader, epoch, settled));
        }
        if start.elapsed() > DEADLINE {
            return Err(format!(
                "no convergence within {DEADLINE:?} ({})",
                laggards(&live).await
            ));
        }
        if Instant::now() >= report_at {
            report_at = Instant::now() + REPORT_EVERY;
            let waited = start.elapsed().as_secs_f64();
            eprintln!("converging for {waited:.1} s: {}", laggards(&live).await);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The first live node's address, for a node (re)started to bootstrap to.
fn seed_of(nodes: &[Option<NodeProc>]) -> Vec<String> {
    nodes
        .iter()
        .flatten()
        .take(1)
        .map(|n| n.addr.clone())
        .collect()
}

/// The latest instant (Unix ms) at which one of these nodes accepted its
/// leader or saw its set of healthy peers change.
fn settled_at(statuses: &[ipfs_kit_p2p::status::StatusView]) -> u64 {
    statuses
        .iter()
        .flat_map(|s| {
            let accepted = s.leader.as_ref().map_or(0, |l| l.since_unix_ms);
            [accepted, s.peer_counts.healthy_changed_unix_ms]
        })
        .max()
        .unwrap_or(0)
}

/// When the nodes agreed (see [`converge`]), Unix ms.
struct Settled {
    /// The latest acceptance of the leader.
    accepted: u64,
    /// The latest acceptance or change of a node's healthy peers.
    at: u64,
    /// When the poll saw it.
    seen: u64,
    /// Each node's acceptance of the leader and last change of its healthy
    /// peers.
    per_node: Vec<(u64, u64)>,
}

/// [`agreed_leader`] with full statuses (`--poll-full`).
async fn agreed_leader_full(
    nodes: &[&NodeProc],
    expect_peers: usize,
) -> Option<(String, u64, Vec<ipfs_kit_p2p::status::StatusView>)> {
    let statuses = futures::future::join_all(nodes.iter().map(|n| n.status())).await;
    agreement(statuses.into_iter().collect::<Option<_>>()?, expect_peers)
}

/// How a trial stops the leader.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    /// SIGKILL: a crash, its connections closed by the kernel.
    Kill,
    /// SIGTERM: a graceful stop with a handover.
    Term,
    /// SIGSTOP: frozen, its connections open, nothing sent (a silent failure).
    Freeze,
}

/// One trial: stop the leader, time until every survivor accepted the
/// successor, restart the stopped node and let the cluster settle.
async fn trial(
    sp: &Spawner,
    nodes: &mut [Option<NodeProc>],
    stop: Stop,
    epoch: &mut u64,
    settle: Duration,
) -> Result<f64, String> {
    let graceful = stop == Stop::Term;
    converge(nodes, 0).await?;
    // Plus up to a second at random: the stop lands anywhere in the
    // survivors' probe cycles (500 ms), not at one phase the benchmark's
    // own rhythm would pick every trial.
    let jitter = Duration::from_millis(rand::random_range(0..1000));
    tokio::time::sleep(settle + jitter).await;
    let (leader, e, _) = converge(nodes, 0).await?;
    *epoch = (*epoch).max(e);
    let idx = nodes
        .iter()
        .position(|n| n.as_ref().is_some_and(|n| n.peer_id == leader))
        .ok_or("leader not found")?;
    let mut victim = nodes[idx].take().ok_or("leader slot empty")?;
    let t0 = unix_ms();
    match stop {
        Stop::Term => victim.terminate(),
        Stop::Kill => victim.kill(),
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        Stop::Freeze => unsafe {
            libc::kill(victim.pid() as libc::pid_t, libc::SIGSTOP);
        },
    }
    let (_, e2, settled) = converge(nodes, *epoch).await?;
    *epoch = e2;
    let took = settled.accepted.saturating_sub(t0) as f64;
    if graceful {
        victim
            .wait_exit(Duration::from_secs(20))
            .await
            .ok_or("graceful stop hung")?;
    }
    let seed = seed_of(nodes);
    let dir = victim.dir.clone();
    drop(victim);
    nodes[idx] = Some(sp.spawn(role_of(idx, nodes.len()), &dir, &seed).await?);
    let (_, e3, _) = converge(nodes, *epoch - 1).await?; // back to the full cluster
    *epoch = e3;
    Ok(took)
}

/// One join: a worker with a fresh identity starts, bootstrapping to the
/// first live node, and is timed until every node (the joiner too) sees
/// every other healthy and follows the leader it followed before, at the
/// same epoch (a join must not move the leadership). Then it stops
/// gracefully. Returns the milliseconds from just before its start.
async fn join_trial(
    sp: &Spawner,
    nodes: &[Option<NodeProc>],
    dir: &std::path::Path,
) -> Result<f64, String> {
    let (leader, epoch, _) = converge(nodes, 0).await?;
    let seed = seed_of(nodes);
    let t0 = unix_ms();
    let mut joiner = sp.spawn(Role::Worker, dir, &seed).await?;
    let (l, e, settled) = {
        let mut live: Vec<&NodeProc> = nodes.iter().flatten().collect();
        live.push(&joiner);
        let started = Instant::now();
        loop {
            if let Some((l, e, statuses)) = agreed_leader(&live, live.len() - 1).await {
                break (l, e, settled_at(&statuses));
            }
            if started.elapsed() > DEADLINE {
                return Err(format!(
                    "the joiner was not taken in within {DEADLINE:?} ({})",
                    laggards(&live).await
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    };
    if (l.as_str(), e) != (leader.as_str(), epoch) {
        return Err(format!(
            "a join moved the leadership from {leader} at {epoch} to {l} at {e}"
        ));
    }
    let took = settled.saturating_sub(t0) as f64;
    joiner.terminate();
    joiner
        .wait_exit(Duration::from_secs(20))
        .await
        .ok_or("the joiner's graceful stop hung")?;
    Ok(took)
}

/// Why the nodes do not agree: for each node that differs, its leader and
/// the peers it does not see healthy, by state.
async fn laggards(live: &[&NodeProc]) -> String {
    let mut out = Vec::new();
    let mut leaders: HashMap<String, usize> = HashMap::new();
    // All at once: one after another, 100 loaded nodes take seconds.
    let statuses = futures::future::join_all(live.iter().map(|n| n.status())).await;
    for (n, s) in live.iter().zip(statuses) {
        let Some(s) = s else {
            out.push(format!("{}: no status", n.peer_id));
            continue;
        };
        let l = s.leader.as_ref().map_or("none".into(), |l| {
            format!("{}@{}", &l.peer_id[l.peer_id.len() - 6..], l.epoch)
        });
        *leaders.entry(l).or_default() += 1;
        let mut states: HashMap<String, usize> = HashMap::new();
        for p in s.peers.iter().filter(|p| !p.healthy) {
            *states
                .entry(format!(
                    "{}{}",
                    p.state,
                    if p.connected { "+conn" } else { "" }
                ))
                .or_default() += 1;
        }
        let missing = live.len() - 1 - s.peers.len().min(live.len() - 1);
        if !states.is_empty() || missing > 0 {
            out.push(format!(
                "{}: leader {:?}, unhealthy {states:?}, unknown {missing}",
                &n.peer_id[n.peer_id.len() - 6..],
                s.leader
                    .map(|l| (l.peer_id[l.peer_id.len() - 6..].to_string(), l.epoch))
            ));
        }
    }
    out.truncate(12);
    format!("leaders {leaders:?}; {}", out.join("; "))
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// bytes_sent per (pid, socket) from `ss -tinpH`.
fn tcp_bytes_sent() -> HashMap<(u32, String), u64> {
    let out = Command::new("ss")
        .args(["-tinpH"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let mut map = HashMap::new();
    let Ok(out) = out else { return map };
    let mut current: Option<(u32, String)> = None;
    for line in out.lines() {
        if let Some(i) = line.find("pid=") {
            let pid = line[i + 4..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|p| p.parse().ok());
            let sock = line
                .split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            current = pid.map(|p| (p, sock));
        } else if let (Some(key), Some(i)) = (&current, line.find("bytes_sent:")) {
            let n = line[i + 11..]
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            map.insert(key.clone(), n);
        }
    }
    map
}

async fn idle(nodes: &[Option<NodeProc>], secs: u64, tcp: bool) -> serde_json::Value {
    let pids: Vec<u32> = nodes.iter().flatten().map(|n| n.pid()).collect();
    // Let the cluster go quiet, with no API polling during the window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let statuses = || async {
        let reads = nodes.iter().flatten().map(|n| n.status_brief());
        futures::future::join_all(reads).await
    };
    let datagram_bytes = || async {
        statuses()
            .await
            .into_iter()
            .map(|s| s.map(|s| s.probe_datagrams.sent_bytes))
            .collect::<Vec<_>>()
    };
    let udp0 = datagram_bytes().await;
    let ticks0: Vec<Option<u64>> = pids.iter().map(|p| proc_cpu_ticks(*p)).collect();
    let sent0 = tcp_bytes_sent();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let window = t0.elapsed().as_secs_f64();
    let sent1 = tcp_bytes_sent();
    let udp1 = datagram_bytes().await;
    let udp: Vec<f64> = udp0
        .iter()
        .zip(&udp1)
        .filter_map(|(a, b)| Some(b.as_ref()?.saturating_sub((*a)?) as f64 / window))
        .collect();
    // Who each node is: the leader, one of its probers (the followers that
    // sent probe datagrams in the window), or another follower.
    let parts: Vec<&'static str> = statuses()
        .await
        .iter()
        .zip(udp0.iter().zip(&udp1))
        .map(|(s, (a, b))| match s {
            Some(s) if s.leader.as_ref().is_some_and(|l| l.peer_id == s.peer_id) => "leader",
            Some(_) if matches!((a, b), (Some(a), Some(b)) if b > a) => "prober",
            Some(_) => "follower",
            None => "unknown",
        })
        .collect();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (mut rss, mut anon, mut pss) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu, mut sent) = (Vec::new(), Vec::new());
    for (i, pid) in pids.iter().enumerate() {
        rss.push(rss_kib(*pid).unwrap_or(0) as f64 / 1024.0);
        anon.push(rss_anon_kib(*pid).unwrap_or(0) as f64 / 1024.0);
        pss.push(pss_kib(*pid).unwrap_or(0) as f64 / 1024.0);
        // NaN where the process was gone (left out of every summary).
        cpu.push(match (ticks0[i], proc_cpu_ticks(*pid)) {
            (Some(a), Some(b)) => (b - a) as f64 / hz / window * 100.0,
            _ => f64::NAN,
        });
        let bytes: u64 = sent1
            .iter()
            .filter(|((p, _), _)| p == pid)
            .map(|(k, v)| v.saturating_sub(sent0.get(k).copied().unwrap_or(0)))
            .sum();
        sent.push(bytes as f64 / window);
    }
    // Over QUIC only nothing is counted: `ss` sees TCP sockets only (with
    // `--quic`, what goes over QUIC connections is left out too).
    let by_part = |part: &str, v: &[f64]| {
        let of: Vec<f64> = v
            .iter()
            .zip(&parts)
            .filter(|(x, p)| **p == part && !x.is_nan())
            .map(|(x, _)| *x)
            .collect();
        summary(of)
    };
    let mut split = serde_json::Map::new();
    for part in ["leader", "prober", "follower"] {
        let sent = if tcp {
            by_part(part, &sent)
        } else {
            serde_json::Value::Null
        };
        split.insert(
            part.to_string(),
            json!({ "tcp_bytes_sent_per_s": sent, "cpu_percent_of_core": by_part(part, &cpu) }),
        );
    }
    let sent = if tcp {
        summary(sent)
    } else {
        serde_json::Value::Null
    };
    json!({ "window_s": window, "rss_mib": summary(rss), "rss_anon_mib": summary(anon), "pss_mib": summary(pss), "cpu_percent_of_core": summary(cpu.into_iter().filter(|x| !x.is_nan()).collect()), "tcp_bytes_sent_per_s": sent, "probe_datagram_bytes_sent_per_s": summary(udp), "by_part": split })
}

/// Secured mode: an operator key pair and swarm key in `dir/ops`, and each
/// node's identity and certificate (`node.cert` in its directory) made
/// before it starts.
fn secure(
    sp: &mut Spawner,
    dir: &std::path::Path,
    nodes: usize,
    joins: usize,
) -> Result<(), String> {
    use ipfs_kit_p2p::trust::cert::{CertBody, Certificate, ClusterId, Serial};
    use ipfs_kit_p2p::trust::files::{init_cluster, load_operator_key};
    let made = init_cluster(&dir.join("ops")).map_err(|e| e.to_string())?;
    let op = load_operator_key(&made.key).map_err(|e| e.to_string())?;
    let now = unix_ms() / 1000;
    let dirs = (0..nodes).map(|i| (format!("n{i}"), role_of(i, nodes)));
    let joiners = (0..joins).map(|t| (format!("j{t}"), Role::Worker));
    for (i, (name, role)) in dirs.chain(joiners).enumerate() {
        let node = dir.join(name);
        let peer = ipfs_kit_p2p::store::DataDir::peer_id(&node).map_err(|e| e.to_string())?;
        let cert = Certificate::issue(
            &op,
            CertBody {
                cluster: ClusterId::of(&op.public()).map_err(|e| e.to_string())?.0,
                peer: peer.to_bytes(),
                role,
                serial: Serial(i as u64 + 1),
                not_before: now - 60,
                not_after: now + 86_400,
            },
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(node.join("node.cert"), cert.to_text()).map_err(|e| e.to_string())?;
    }
    sp.extra.extend([
        "--operator-key".into(),
        made.public.display().to_string(),
        "--swarm-key".into(),
        made.swarm_key.display().to_string(),
    ]);
    sp.dir_files = vec![("--certificate".into(), "node.cert".into())];
    Ok(())
}

async fn bench(a: Args) -> Result<serde_json::Value, String> {
    let bin = match &a.bin {
        Some(b) => b.clone(),
        None => release_binary()?,
    };
    if a.trust == "both" {
        let mut report = serde_json::Map::new();
        for mode in ["open", "secured"] {
            eprintln!("--- {mode}");
            let one = Args {
                trust: mode.into(),
                bin: Some(bin.clone()),
                node_config: a.node_config.clone(),
                ipfs: a.ipfs.clone(),
                ..a
            };
            report.insert(mode.into(), Box::pin(bench(one)).await?);
        }
        return Ok(report.into());
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut sp = Spawner::new(bin);
    sp.ipfs = a.ipfs.clone();
    if let Some(c) = &a.node_config {
        sp.extra = vec!["--config".into(), c.clone()];
    }
    if a.quic_only {
        sp.listen = "/ip4/127.0.0.1/udp/0/quic-v1".into();
    } else if a.quic {
        sp.extra
            .extend(["--listen".into(), "/ip4/127.0.0.1/udp/0/quic-v1".into()]);
    }
    if a.trust == "secured" {
        secure(&mut sp, tmp.path(), a.nodes, a.join_trials)?;
    }
    sp.log_dir = std::env::var_os("BENCH_LOGS").map(PathBuf::from);
    let mut nodes: Vec<Option<NodeProc>> = Vec::new();
    let first_start = Instant::now();
    let first = sp
        .spawn(role_of(0, a.nodes), &tmp.path().join("n0"), &[])
        .await?;
    let seed = vec![first.addr.clone()];
    nodes.push(Some(first));
    let mut last_start = unix_ms();
    for i in 1..a.nodes {
        last_start = unix_ms();
        nodes.push(Some(
            sp.spawn(
                role_of(i, a.nodes),
                &tmp.path().join(format!("n{i}")),
                &seed,
            )
            .await?,
        ));
    }
    let (_, mut epoch, settled) = converge(&nodes, 0).await?;
    let convergence_ms = settled.at.saturating_sub(last_start) as f64;
    let seen_ms = settled.seen.saturating_sub(last_start) as f64;
    // Each node's own settling, after the last start (negative: before it).
    let after = |t: u64| t as f64 - last_start as f64;
    let leader_after: Vec<f64> = settled.per_node.iter().map(|p| after(p.0)).collect();
    let healthy_after: Vec<f64> = settled.per_node.iter().map(|p| after(p.1)).collect();
    eprintln!(
        "converged: {convergence_ms:.0} ms after the last node started (by the nodes' \
         clocks; the poll saw it after {seen_ms:.0} ms)"
    );
    // Every node's CPU time so far is its share of the start.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let start_ticks: u64 = nodes
        .iter()
        .flatten()
        .filter_map(|n| proc_cpu_ticks(n.pid()))
        .sum();
    let start_secs = first_start.elapsed().as_secs_f64();
    let start_cpu_cores = start_ticks as f64 / hz / start_secs;
    eprintln!(
        "start: {start_secs:.1} s from the first start to convergence, the nodes busy \
         {start_cpu_cores:.2} cores on average"
    );

    let idle = idle(&nodes, a.idle_secs, !a.quic_only).await;
    eprintln!("idle: {idle}");

    let mut joins = Vec::new();
    for t in 0..a.join_trials {
        let dir = tmp.path().join(format!("j{t}"));
        joins.push(join_trial(&sp, &nodes, &dir).await?);
        eprintln!("join trial {t}: {:.0} ms", joins[t]);
    }

    let mut kill = Vec::new();
    for t in 0..a.trials {
        kill.push(trial(&sp, &mut nodes, Stop::Kill, &mut epoch, Duration::ZERO).await?);
        eprintln!("sigkill trial {t}: {:.0} ms", kill[t]);
    }
    let mut term = Vec::new();
    for t in 0..a.trials {
        term.push(trial(&sp, &mut nodes, Stop::Term, &mut epoch, Duration::ZERO).await?);
        eprintln!("sigterm trial {t}: {:.0} ms", term[t]);
    }
    let mut silent = Vec::new();
    for t in 0..a.silent_trials {
        silent.push(trial(&sp, &mut nodes, Stop::Freeze, &mut epoch, a.settle).await?);
        eprintln!("sigstop trial {t}: {:.0} ms", silent[t]);
    }
    Ok(json!({
        "trust": a.trust,
        "nodes": a.nodes,
        "transport": match (a.quic, a.quic_only) {
            (_, true) => "quic",
            (true, _) => "tcp+quic",
            _ => "tcp",
        },
        "settle_ms": a.settle.as_millis() as u64,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "convergence_ms_after_last_start": convergence_ms,
        "convergence_seen_by_poll_ms": seen_ms,
        "convergence_per_node_ms": {
            "leader_accepted": summary(leader_after),
            "healthy_changed": summary(healthy_after),
        },
        "start_secs": start_secs,
        "start_cpu_cores": start_cpu_cores,
        "join_ms": summary(joins),
        "sigkill_failover_ms": summary(kill),
        "graceful_handover_ms": summary(term),
        "sigstop_failover_ms": summary(silent),
        "idle_per_node": idle,
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_cluster: {e}");
            std::process::exit(2);
        }
    };
    match bench(args).await {
        Ok(report) => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Err(e) => {
            eprintln!("bench_cluster: {e}");
            std::process::exit(1);
        }
    }
}
