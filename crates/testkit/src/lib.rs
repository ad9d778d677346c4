//! Helpers for tests and benchmarks that run real node processes on
//! loopback: spawn the binary in its own data dir, find its control API,
//! read its status, wait for conditions with deadlines, and kill or stop it;
//! [`netns`], a lab of network namespaces with fault rules; [`kubo`],
//! kubo's CIDs computed by hand; [`python`] and [`npm`], the real clients
//! some tests drive an engine with. A dev-only crate: nothing here ships in
//! the node.

pub mod kubo;
pub mod netns;
pub mod npm;
pub mod python;
pub mod scale;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipfs_kit_p2p::api::{Client, StatusView, parse_api_addr};
use ipfs_kit_p2p::role::Role;
use ipfs_kit_p2p::store::api_file;

/// One node process.
pub struct NodeProc {
    pub role: Role,
    pub dir: PathBuf,
    pub child: Child,
    pub client: Client,
    pub peer_id: String,
    /// `/ip4/127.0.0.1/tcp/PORT/p2p/ID`, to bootstrap others to.
    pub addr: String,
}

/// How to start nodes.
#[derive(Debug, Clone)]
pub struct Spawner {
    pub bin: PathBuf,
    /// Extra arguments for every node.
    pub extra: Vec<String>,
    /// Where node logs go: `None` discards them.
    pub log_dir: Option<PathBuf>,
    /// Listen address (loopback, port 0). The first one the node reports is
    /// what others bootstrap to.
    pub listen: String,
    /// `--ipfs` mode; `off` unless a test needs IPFS. kubo, builtin and auto
    /// get a loopback API and swarm on port 0.
    pub ipfs: String,
    /// Extra environment for every node.
    pub env: Vec<(String, String)>,
    /// Flags whose value is a file in the node's own directory, e.g.
    /// `("--certificate", "node.cert")`: per-node files under one spawner.
    pub dir_files: Vec<(String, String)>,
}

impl Spawner {
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Spawner {
            bin: bin.into(),
            extra: Vec::new(),
            log_dir: None,
            listen: "/ip4/127.0.0.1/tcp/0".into(),
            ipfs: "off".into(),
            env: Vec::new(),
            dir_files: Vec::new(),
        }
    }

    /// Starts a node on loopback (`listen`, no mDNS) in `dir` and waits
    /// until its control API answers.
    pub async fn spawn(
        &self,
        role: Role,
        dir: &Path,
        bootstrap: &[String],
    ) -> Result<NodeProc, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(api_file(dir));
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--role",
            role.as_str(),
            "--listen",
            &self.listen,
            "--api",
            "127.0.0.1:0",
            "--no-mdns",
        ])
        .arg("--data-dir")
        .arg(dir)
        .args(
            bootstrap
                .iter()
                .flat_map(|b| ["--bootstrap".to_string(), b.clone()]),
        )
        .args(["--ipfs", &self.ipfs])
        .args(if matches!(self.ipfs.as_str(), "off" | "external") {
            vec![]
        } else {
            vec![
                "--ipfs-api",
                "127.0.0.1:0",
                "--ipfs-swarm",
                "/ip4/127.0.0.1/tcp/0",
            ]
        })
        .args(&self.extra)
        .args(
            self.dir_files
                .iter()
                .flat_map(|(flag, file)| [flag.clone(), dir.join(file).display().to_string()]),
        )
        .envs(self.env.iter().cloned())
        .env_remove("IPFS_KIT_P2P_API")
        .env_remove("IPFS_KIT_P2P_BOOTSTRAP")
        .env(
            "RUST_LOG",
            std::env::var("NODE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null());
        let log = self.log_dir.as_ref().map(|logs| {
            let name = dir
                .file_name()
                .map_or("node".into(), |n| n.to_string_lossy().into_owned());
            logs.join(format!("{name}.log"))
        });
        cmd.stderr(log_sink(log.as_deref())?);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("node in {} exited early: {status}", dir.display()));
            }
            if let Some(addr) = std::fs::read_to_string(api_file(dir))
                .ok()
                .and_then(|t| parse_api_addr(&t))
            {
                // The node's API token, if the test made one.
                let token = std::fs::read_to_string(dir.join("api.token"))
                    .ok()
                    .map(|t| t.trim().to_string());
                break Client::new(addr).with_token(token);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "node in {} wrote no api file within 30 s",
                    dir.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let status = wait_for(Duration::from_secs(30), || async {
            client
                .status()
                .await
                .ok()
                .map(|s| s.0)
                .filter(|s| !s.listen_addrs.is_empty())
        })
        .await
        .ok_or_else(|| format!("node in {} never answered its status", dir.display()))?;
        let addr = format!("{}/p2p/{}", status.listen_addrs[0], status.peer_id);
        Ok(NodeProc {
            role,
            dir: dir.to_owned(),
            child,
            client,
            peer_id: status.peer_id,
            addr,
        })
    }
}

impl NodeProc {
    pub async fn status(&self) -> Option<StatusView> {
        self.client.status().await.ok().map(|s| s.0)
    }

    /// The status without the list of peers (`peer_counts` instead).
    pub async fn status_brief(&self) -> Option<StatusView> {
        self.client.status_brief().await.ok().map(|s| s.0)
    }

    /// SIGKILL: the process dies at once, with no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: a graceful stop.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid, with a valid signal number.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit; `None` if it is still running at the deadline.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        wait_for(within, || {
            let r = self.child.try_wait().ok().flatten();
            async move { r }
        })
        .await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 25 ms until it yields `Some`, or `None` after `within`.
pub async fn wait_for<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The leader every node in `nodes` reports, if they all report the same one
/// with the same epoch and each sees `expect_peers` healthy peers. The
/// statuses come without their lists of peers: polling 100 idle nodes'
/// full statuses from 100 threads took the nodes about 0.6 of a core more
/// than idle, brief ones about 0.3 (docs/failure-detection.md), on a
/// machine whose two cores a starting cluster already keeps busy.
pub async fn agreed_leader(
    nodes: &[&NodeProc],
    expect_peers: usize,
) -> Option<(String, u64, Vec<StatusView>)> {
    // All at once: one after another, 100 loaded nodes take seconds a sweep.
    let statuses = futures::future::join_all(nodes.iter().map(|n| n.status_brief())).await;
    agreement(statuses.into_iter().collect::<Option<_>>()?, expect_peers)
}

/// The leader these statuses all report, with its epoch, if they report the
/// same one and each counts `expect_peers` healthy peers (brief or full).
pub fn agreement(
    statuses: Vec<StatusView>,
    expect_peers: usize,
) -> Option<(String, u64, Vec<StatusView>)> {
    let first = statuses.first()?.leader.clone()?;
    let all_agree = statuses.iter().all(|s| {
        s.leader
            .as_ref()
            .is_some_and(|l| l.peer_id == first.peer_id && l.epoch == first.epoch)
            && s.peer_counts.healthy >= expect_peers
    });
    all_agree.then_some((first.peer_id, first.epoch, statuses))
}

/// Starts one node per role in `dir/n0`, `dir/n1`, ... (each bootstrapping
/// to the first) and waits until they agree on a leader.
pub async fn start_cluster(
    sp: &Spawner,
    dir: &Path,
    roles: &[Role],
    within: Duration,
) -> Result<Vec<NodeProc>, String> {
    let mut nodes: Vec<NodeProc> = Vec::new();
    for (i, role) in roles.iter().enumerate() {
        let boot: Vec<String> = nodes.first().map(|n| n.addr.clone()).into_iter().collect();
        nodes.push(sp.spawn(*role, &dir.join(format!("n{i}")), &boot).await?);
    }
    let all: Vec<&NodeProc> = nodes.iter().collect();
    wait_for(within, || agreed_leader(&all, all.len() - 1))
        .await
        .ok_or("the nodes never agreed on a leader")?;
    Ok(nodes)
}

/// Waits until every node's IPFS is ready and every node sees all the
/// others' IPFS ready too.
pub async fn wait_ipfs_everywhere(nodes: &[&NodeProc], within: Duration) -> Option<()> {
    wait_for(within, || async {
        for n in nodes {
            let s = n.status().await?;
            let ready = s.ipfs.is_ready()
                && s.peers.len() >= nodes.len() - 1
                && s.peers
                    .iter()
                    .filter(|p| nodes.iter().any(|n| n.peer_id == p.peer_id))
                    .all(|p| p.ipfs.as_ref().is_some_and(|i| i.ready));
            if !ready {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// A client for the node's own IPFS daemon.
pub async fn ipfs_of(n: &NodeProc) -> Option<ipfs_kit_p2p::ipfs_rpc::IpfsClient> {
    let api = n.status().await?.ipfs.api?;
    Some(ipfs_kit_p2p::ipfs_rpc::IpfsClient::new(api))
}

/// What each node's IPFS has pinned recursively, in the order given.
pub async fn pinned_sets(nodes: &[&NodeProc]) -> Option<Vec<std::collections::BTreeSet<String>>> {
    let mut out = Vec::new();
    for n in nodes {
        let pins = ipfs_of(n).await?.pin_ls().await.ok()?;
        out.push(pins.into_iter().collect());
    }
    Some(out)
}

/// The node that should lead among `nodes`: highest role, then lowest peer ID.
pub fn expected_leader<'a>(nodes: &[&'a NodeProc]) -> Option<&'a NodeProc> {
    nodes
        .iter()
        .filter(|n| n.role.can_lead())
        .max_by(|a, b| a.role.cmp(&b.role).then_with(|| b.peer_id.cmp(&a.peer_id)))
        .copied()
}

/// A built-in IPFS engine process (`ipfs-kit-p2p ipfs-daemon`) on loopback.
pub struct EngineProc {
    pub child: Child,
    pub repo: PathBuf,
    /// The RPC API, `HOST:PORT`.
    pub api: String,
}

impl EngineProc {
    /// Starts the engine on `repo` (API and swarm on loopback, port 0) and
    /// waits until its `api` file appears and the API answers.
    pub async fn start(bin: &Path, repo: &Path, log: Option<&Path>) -> Result<EngineProc, String> {
        let _ = std::fs::remove_file(repo.join("api"));
        let mut cmd = Command::new(bin);
        cmd.args([
            "ipfs-daemon",
            "--api",
            "127.0.0.1:0",
            "--swarm",
            "/ip4/127.0.0.1/tcp/0",
            "--repo",
        ])
        .arg(repo)
        .env_remove("IPFS_KIT_P2P_API")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
        cmd.stderr(log_sink(log)?);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let found = wait_for(Duration::from_secs(60), || {
            let api = std::fs::read_to_string(repo.join("api"))
                .ok()
                .and_then(|t| ipfs_kit_p2p::ipfs::api_from_multiaddr(&t));
            async move { api }
        })
        .await;
        let Some(api) = found else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "engine on {} wrote no api file within 60 s",
                repo.display()
            ));
        };
        let client = ipfs_kit_p2p::ipfs_rpc::IpfsClient::new(api.clone());
        if wait_for(Duration::from_secs(30), || async { client.id().await.ok() })
            .await
            .is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("engine at {api} does not answer id"));
        }
        Ok(EngineProc {
            child,
            repo: repo.to_owned(),
            api,
        })
    }

    pub fn client(&self) -> ipfs_kit_p2p::ipfs_rpc::IpfsClient {
        ipfs_kit_p2p::ipfs_rpc::IpfsClient::new(self.api.clone())
    }

    /// SIGTERM, then waits up to `within` for the exit.
    pub async fn stop(mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for EngineProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The release binary next to the running example, built first if needed.
pub fn release_binary() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(cargo)
        // With the examples, so features resolve as for the running one
        // (the binary alone resolves dev-dependencies' features otherwise,
        // and every benchmark run would rebuild the world).
        .args([
            "build",
            "--release",
            "--quiet",
            "--bin",
            "ipfs-kit-p2p",
            "--examples",
        ])
        .status()
        .map_err(|e| e.to_string())?;
    if !ok.success() {
        return Err("cargo build of the node binary failed".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate target dir")?;
    Ok(dir.join("ipfs-kit-p2p"))
}

/// A distribution for benchmark output: count, p50, p90, p99, max, mean and the samples.
pub fn summary(mut xs: Vec<f64>) -> serde_json::Value {
    xs.sort_by(f64::total_cmp);
    let q = |p: f64| {
        xs.get(((xs.len() as f64 - 1.0) * p).round() as usize)
            .copied()
    };
    let mean = xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    serde_json::json!({ "n": xs.len(), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": xs.last(), "mean": mean, "samples": xs })
}

/// Resident memory of a process in KiB (`VmRSS`), if it runs.
pub fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:")
}

/// A process's private (anonymous) resident memory, KiB: its RSS without
/// the pages of the mapped binary, which every process running it shares.
pub fn rss_anon_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "RssAnon:")
}

/// A process's proportional set size, KiB: its private pages plus its
/// share of each shared page (a page mapped by 100 processes counts 1/100
/// in each). Summed over processes it is the memory they use together.
pub fn pss_kib(pid: u32) -> Option<u64> {
    proc_file_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    proc_file_kib(&format!("/proc/{pid}/status"), key)
}

fn proc_file_kib(path: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Appends to `log`, or discards.
fn log_sink(log: Option<&Path>) -> Result<Stdio, String> {
    match log {
        Some(l) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(l)
            .map(Stdio::from)
            .map_err(|e| format!("cannot open {}: {e}", l.display())),
        None => Ok(Stdio::null()),
    }
}

/// `--name value` options of a benchmark's command line.
pub struct Flags(std::collections::HashMap<String, String>);

impl Flags {
    /// Reads `std::env::args`; an option not in `known` is an error.
    pub fn parse(known: &[&str]) -> Result<Flags, String> {
        let mut map = std::collections::HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let name = flag.trim_start_matches("--");
            if !flag.starts_with("--") || !known.contains(&name) {
                return Err(format!(
                    "unknown option {flag} (known: --{})",
                    known.join(", --")
                ));
            }
            let value = it.next().ok_or(format!("{flag} needs a value"))?;
            map.insert(name.to_owned(), value);
        }
        Ok(Flags(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn num(&self, name: &str, default: usize) -> Result<usize, String> {
        self.get(name).map_or(Ok(default), |v| {
            v.parse().map_err(|e| format!("--{name} {v:?}: {e}"))
        })
    }
}

/// `n` deterministic, incompressible-looking bytes (xorshift from `seed`):
/// file contents whose CIDs never collide by accident.
pub fn test_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A valid CIDv1 (raw leaf, sha2-256 of `n`), distinct per number.
pub fn cid_of(n: u64) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(n.to_be_bytes());
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).expect("a 32-byte digest fits");
    cid::Cid::new_v1(0x55, mh).to_string()
}

/// Writes `n` pins (CIDs [`cid_of`] 0..n, replication 2..3) into the
/// pinset database at `path`, as changes of that replica made an hour ago:
/// a large pinset for a node to start with.
pub fn prefill_pinset(path: &Path, n: u64) -> Result<(), String> {
    use ipfs_kit_p2p::pinset::model::{Entry, Hlc, Op, PinSpec, Stamp, Vv};
    use ipfs_kit_p2p::pinset::replica::Persist;
    let db = ipfs_kit_p2p::pinset::db::PinDb::open(path).map_err(|e| e.to_string())?;
    let loaded = db.load().map_err(|e| e.to_string())?;
    let mut seq = loaded.vv.get(loaded.author).map_or(0, |r| r.max());
    let mut clock = Hlc::new(loaded.hlc);
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .saturating_sub(3_600_000);
    let mut i = 0;
    while i < n {
        let k = (n - i).min(20_000);
        let mut seen = Vv::default();
        let entries: Vec<Entry> = (i..i + k)
            .map(|c| {
                seq += 1;
                let e = Entry {
                    stamp: Stamp {
                        hlc: clock.tick(hour_ago),
                        author: loaded.author,
                    },
                    seq,
                    op: Op::Pin(PinSpec {
                        cid: cid_of(c),
                        name: String::new(),
                        replication_min: 2,
                        replication_max: 3,
                        added_unix_ms: hour_ago,
                        allocation: None,
                        meta: Default::default(),
                        origins: Vec::new(),
                    }),
                };
                seen.insert(e.id());
                e
            })
            .collect();
        let p = Persist {
            hlc: clock.get(),
            entries,
            seen,
            ..Persist::default()
        };
        db.persist(&[p]).map_err(|e| e.to_string())?;
        i += k;
    }
    Ok(())
}
