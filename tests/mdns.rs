//! Multi-process test of discovery with mDNS alone: three real nodes, no
//! `--bootstrap`, find each other on a LAN and elect the master.
//!
//! mDNS ignores loopback, so the LAN is built from Linux network namespaces:
//! one holding a bridge, and one per node with a veth to it. The addresses
//! (10.250.0.0/24) exist only inside those namespaces; the host's own
//! interfaces, routes and firewall are never touched. This needs root and
//! iproute2: elsewhere the test is skipped, except under `CI`, where it fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ipfs_kit_p2p::api::StatusView;
use ipfs_kit_p2p::role::Role;
use testkit::netns::ip;

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");
const ROLES: [Role; 3] = [Role::Master, Role::Worker, Role::Leecher];
/// Generous: a loaded 2-core machine may run several node processes at once.
const CONVERGE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);
const NEEDS: &str = "needs root and iproute2 (ip netns)";

/// A command running the node binary inside `ns`, with no `IPFS_KIT_P2P_*`
/// variables leaking in from the caller (one could turn mDNS off).
fn in_netns(ns: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, BIN]).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("IPFS_KIT_P2P_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// The namespaces of one test run. Dropping it deletes them, which also
/// removes their veths and the bridge.
struct Lan {
    created: Vec<String>,
}

impl Lan {
    /// A bridge namespace `<tag>br` and namespaces `<tag>n0..` each with
    /// `eth0` at 10.250.0.<i+1>/24, its peer enslaved to the bridge.
    fn create(tag: &str, nodes: usize) -> Result<(Lan, Vec<String>), String> {
        let mut lan = Lan {
            created: Vec::new(),
        };
        let br = format!("{tag}br");
        lan.add_netns(&br)?;
        ip(&format!("-n {br} link set lo up"))?;
        // Snooping off: multicast floods to every port, with or without a querier.
        ip(&format!(
            "-n {br} link add br0 type bridge mcast_snooping 0"
        ))?;
        ip(&format!("-n {br} link set br0 up"))?;
        let mut names = Vec::new();
        for i in 0..nodes {
            let ns = format!("{tag}n{i}");
            lan.add_netns(&ns)?;
            ip(&format!(
                "-n {ns} link add eth0 type veth peer name n{i} netns {br}"
            ))?;
            ip(&format!("-n {br} link set n{i} master br0 up"))?;
            ip(&format!("-n {ns} link set lo up"))?;
            ip(&format!("-n {ns} addr add 10.250.0.{}/24 dev eth0", i + 1))?;
            ip(&format!("-n {ns} link set eth0 multicast on up"))?;
            // Multicast leaves by eth0. libp2p-mdns binds its send socket to the
            // interface address, which is enough on Linux; the route makes it explicit.
            ip(&format!("-n {ns} route add 224.0.0.0/4 dev eth0"))?;
            names.push(ns);
        }
        Ok((lan, names))
    }

    fn add_netns(&mut self, name: &str) -> Result<(), String> {
        ip(&format!("netns add {name}"))?;
        self.created.push(name.to_owned());
        Ok(())
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&format!("netns delete {ns}")) {
                eprintln!("mDNS test cleanup: {e}");
            }
        }
    }
}

/// One node process; dropping it kills the node.
struct Node {
    role: Role,
    ns: String,
    dir: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Node {
    /// Starts the node in `ns` with mDNS on and no bootstrap. `ip netns exec`
    /// execs the binary, so the child is the node itself.
    fn start(role: Role, ns: &str, dir: &Path) -> Node {
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.with_extension("log");
        let stderr = File::create(&log).unwrap();
        let filter = std::env::var("NODE_LOG").unwrap_or_else(|_| "info,ipfs_kit_p2p=debug".into());
        let child = in_netns(ns)
            .args(["--role", role.as_str(), "--data-dir"])
            .arg(dir)
            .args([
                "--listen",
                "/ip4/0.0.0.0/tcp/4010",
                "--api",
                "127.0.0.1:0",
                "--ipfs",
                "off",
            ])
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the node in {ns}: {e}"));
        Node {
            role,
            ns: ns.to_owned(),
            dir: dir.to_owned(),
            log,
            child,
        }
    }

    /// Its status, asked with the real CLI from inside its namespace, where
    /// its control API listens; `None` while it does not answer yet.
    fn status(&self) -> Option<StatusView> {
        let out = in_netns(&self.ns)
            .args(["status", "--json", "--data-dir"])
            .arg(&self.dir)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status.success().then_some(())?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The running nodes. Dropping them kills them all and then, if the test is
/// failing, prints their logs (killing first keeps one node's death out of
/// the others' logs).
struct Nodes(Vec<Node>);

impl Drop for Nodes {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(Node::kill);
        if thread::panicking() {
            for n in &self.0 {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                eprintln!("----- {} node in {} -----\n{log}", n.role, n.ns);
            }
        }
    }
}

/// (leader, epoch) if every node reports the same leader at the same epoch
/// and sees both other nodes healthy.
fn agreed(statuses: &[Option<StatusView>]) -> Option<(String, u64)> {
    let first = statuses.first()?.as_ref()?.leader.clone()?;
    let all = statuses.iter().all(|s| {
        s.as_ref().is_some_and(|s| {
            s.leader
                .as_ref()
                .is_some_and(|l| l.peer_id == first.peer_id && l.epoch == first.epoch)
                && s.peers.iter().filter(|p| p.healthy).count() == statuses.len() - 1
        })
    });
    all.then_some((first.peer_id, first.epoch))
}

fn describe(nodes: &[Node], statuses: &[Option<StatusView>]) -> String {
    let mut out = String::new();
    for (n, s) in nodes.iter().zip(statuses) {
        let view = s.as_ref().map(|s| {
            let peers: Vec<_> = s.peers.iter().map(|p| (&p.peer_id, &p.state)).collect();
            format!("{} leader={:?} peers={peers:?}", s.peer_id, s.leader)
        });
        out.push_str(&format!("\n{} in {}: {view:?}", n.role, n.ns));
    }
    out
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Skips the test (it passes) — unless under CI, which must run it.
fn skip(why: &str) {
    assert!(
        !in_ci(),
        "mDNS test cannot run, and CI must run it: {NEEDS}: {why}"
    );
    eprintln!("skipping mDNS test: {NEEDS}: {why}");
}

#[test]
fn three_nodes_find_each_other_by_mdns_and_elect_the_master() {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return skip("not running as root");
    }
    if let Err(e) = ip("-V") {
        return skip(&e);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_lan, namespaces) = match Lan::create(&format!("ikp{}", std::process::id()), 3) {
        Ok(lan) => lan,
        Err(e) if e.contains("Operation not permitted") || e.contains("Permission denied") => {
            return skip(&e);
        }
        Err(e) => panic!("cannot build the test LAN: {e}"),
    };
    // Declared after the LAN, so dropped before it: nodes die before their namespaces go.
    let mut nodes = Nodes(
        ROLES
            .iter()
            .zip(&namespaces)
            .enumerate()
            .map(|(i, (role, ns))| Node::start(*role, ns, &tmp.path().join(format!("n{i}"))))
            .collect(),
    );

    let deadline = Instant::now() + CONVERGE;
    let (leader, statuses) = loop {
        for n in &mut nodes.0 {
            if let Ok(Some(code)) = n.child.try_wait() {
                panic!("{} node in {} exited early: {code}", n.role, n.ns);
            }
        }
        let statuses: Vec<_> = nodes.0.iter().map(Node::status).collect();
        if let Some((leader, _)) = agreed(&statuses) {
            break (leader, statuses);
        }
        assert!(
            Instant::now() < deadline,
            "no agreement on a leader via mDNS within {CONVERGE:?}:{}",
            describe(&nodes.0, &statuses)
        );
        thread::sleep(POLL);
    };

    let master = statuses[0].as_ref().unwrap();
    assert_eq!(master.role, Role::Master);
    assert_eq!(leader, master.peer_id, "the only master leads");
}
