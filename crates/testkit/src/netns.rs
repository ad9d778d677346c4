//! A lab of Linux network namespaces for tests and benchmarks with real
//! network faults: one namespace holding a bridge, one per node with a veth
//! to it, and a control namespace on the same bridge from which the test's
//! own HTTP calls go (fault rules never touch it). Faults are nftables rules
//! inside the nodes' namespaces: dropped links (isolation, one-way failures,
//! partitions) and random loss.
//!
//! The addresses (`10.251.0.0/24` unless another prefix is given) exist only
//! inside namespaces the lab creates, and dropping the lab deletes them
//! (their veths and rules go with them), also when a test fails; the host's
//! own interfaces, routes and firewall are never touched. Needs root,
//! iproute2 and nftables.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ipfs_kit_p2p::api::Client;
use ipfs_kit_p2p::role::Role;

/// What a lab needs, for skip messages.
pub const NEEDS: &str = "needs root, iproute2 (ip netns) and nftables (nft)";

/// Runs `program ARGS`, feeding it `stdin`; the error carries the command
/// and its stderr.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{program}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// `ip ARGS` (split at spaces).
pub fn ip(args: &str) -> Result<(), String> {
    let args: Vec<&str> = args.split_whitespace().collect();
    run("ip", &args, None)
}

/// Whether this runs under CI (`CI` set and not false), where a test that
/// cannot build its lab must fail rather than skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// `Ok` if a lab can be built here: root, `ip` and `nft`.
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    run("ip", &["-V"], None)?;
    run("nft", &["--version"], None)
}

/// Two masters and three workers: the fault tests' and benchmarks' cluster.
pub const FIVE_ROLES: [Role; 5] = [
    Role::Master,
    Role::Master,
    Role::Worker,
    Role::Worker,
    Role::Worker,
];

/// Where [`Lab::rules`] drops its random share of packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossAt {
    /// As the node sends them: its own kernel drops the packet and TCP
    /// hears of it at once (the segment stays unsent and goes again at the
    /// connection's next send), so nothing waits for a timeout and nothing
    /// backs off. Gentler than a lossy network.
    Send,
    /// As the node receives them: the packet is lost after it left its
    /// sender, as on a lossy network, and the sender's TCP finds out from
    /// acknowledgements or a timeout, backing off with each one missed.
    Receive,
}

/// The namespaces of one lab. Dropping it deletes them.
pub struct Lab {
    tag: String,
    net: String,
    created: Vec<String>,
    nodes: usize,
    /// Nodes listen on (and are bootstrapped to) QUIC instead of TCP, so
    /// every connection between them is QUIC.
    pub quic: bool,
}

impl Lab {
    /// Namespaces `<tag>br` (the bridge), `<tag>n0..` for `nodes` nodes at
    /// `<net>.1`, `<net>.2`, ... and `<tag>ctl` at `<net>.250`.
    pub fn create(tag: &str, nodes: usize, net: &str) -> Result<Lab, String> {
        let mut lab = Lab {
            tag: tag.to_owned(),
            net: net.to_owned(),
            created: Vec::new(),
            quic: false,
            nodes,
        };
        let br = format!("{tag}br");
        lab.add(&br)?;
        ip(&format!("-n {br} link set lo up"))?;
        ip(&format!("-n {br} link add br0 type bridge"))?;
        ip(&format!("-n {br} link set br0 up"))?;
        for i in 0..=nodes {
            let (ns, addr) = if i == nodes {
                (lab.ctl(), lab.ctl_addr())
            } else {
                (lab.ns(i), lab.addr(i))
            };
            lab.add(&ns)?;
            ip(&format!(
                "-n {ns} link add eth0 type veth peer name p{i} netns {br}"
            ))?;
            ip(&format!("-n {br} link set p{i} master br0 up"))?;
            ip(&format!("-n {ns} link set lo up"))?;
            ip(&format!("-n {ns} addr add {addr}/24 dev eth0"))?;
            ip(&format!("-n {ns} link set eth0 up"))?;
        }
        Ok(lab)
    }

    fn add(&mut self, name: &str) -> Result<(), String> {
        ip(&format!("netns add {name}"))?;
        self.created.push(name.to_owned());
        Ok(())
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.net, i + 1)
    }

    /// The control namespace and its address.
    pub fn ctl(&self) -> String {
        format!("{}ctl", self.tag)
    }

    pub fn ctl_addr(&self) -> String {
        format!("{}.250", self.net)
    }

    /// Replaces node `i`'s fault rules: drop what it receives from the nodes
    /// in `from`, what it sends to those in `to`, and `loss` percent of what
    /// it sends to any node or receives from one (`at`; chosen at random per
    /// packet).
    pub fn rules(
        &self,
        i: usize,
        from: &[usize],
        to: &[usize],
        loss: u8,
        at: LossAt,
    ) -> Result<(), String> {
        let set = |nodes: &[usize]| {
            nodes
                .iter()
                .map(|n| self.addr(*n))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut script = String::from("table inet fault\ndelete table inet fault\n");
        script.push_str("table inet fault {\n");
        let lossy = |dir: &str| {
            format!(
                "    ip {dir} {{ {} }} numgen random mod 100 < {loss} drop\n",
                set(&self.others(i))
            )
        };
        script.push_str("  chain input { type filter hook input priority 0; policy accept;\n");
        if !from.is_empty() {
            script.push_str(&format!("    ip saddr {{ {} }} drop\n", set(from)));
        }
        if loss > 0 && at == LossAt::Receive {
            script.push_str(&lossy("saddr"));
        }
        script
            .push_str("  }\n  chain output { type filter hook output priority 0; policy accept;\n");
        if !to.is_empty() {
            script.push_str(&format!("    ip daddr {{ {} }} drop\n", set(to)));
        }
        if loss > 0 && at == LossAt::Send {
            script.push_str(&lossy("daddr"));
        }
        script.push_str("  }\n}\n");
        run(
            "ip",
            &["netns", "exec", &self.ns(i), "nft", "-f", "-"],
            Some(&script),
        )
    }

    /// Where node `i` listens.
    pub fn listen_addr(&self, i: usize) -> String {
        if self.quic {
            format!("/ip4/{}/udp/4010/quic-v1", self.addr(i))
        } else {
            format!("/ip4/{}/tcp/4010", self.addr(i))
        }
    }

    fn others(&self, i: usize) -> Vec<usize> {
        (0..self.nodes).filter(|n| *n != i).collect()
    }

    /// Node `i` reaches no node and no node reaches it.
    pub fn isolate(&self, i: usize) -> Result<(), String> {
        let o = self.others(i);
        self.rules(i, &o, &o, 0, LossAt::Send)
    }

    /// Node `i`'s packets to every other node are dropped; theirs reach it.
    pub fn one_way(&self, i: usize) -> Result<(), String> {
        self.rules(i, &[], &self.others(i), 0, LossAt::Send)
    }

    /// The nodes in `side` and the rest cannot reach each other.
    pub fn partition(&self, side: &[usize]) -> Result<(), String> {
        let rest: Vec<usize> = (0..self.nodes).filter(|n| !side.contains(n)).collect();
        for i in 0..self.nodes {
            let other = if side.contains(&i) { &rest } else { side };
            self.rules(i, other, other, 0, LossAt::Send)?;
        }
        Ok(())
    }

    /// No faults anywhere.
    pub fn heal(&self) -> Result<(), String> {
        for i in 0..self.nodes {
            self.rules(i, &[], &[], 0, LossAt::Send)?;
        }
        Ok(())
    }

    /// Starts the node binary `bin` as node `i` (`--ipfs off`, no mDNS,
    /// listening on its address port 4010, TCP or [`Lab::quic`], its API on port 5010 there, with
    /// a token in `dir/api.token`) with
    /// the TOML `config` and, if given, a bootstrap address. Its log goes to
    /// `dir.log`; `RUST_LOG` comes from `NODE_LOG` (default `info`).
    pub fn spawn(
        &self,
        i: usize,
        bin: &Path,
        role: Role,
        dir: &Path,
        config: &str,
        boot: Option<&str>,
    ) -> Result<LabNode, String> {
        let io = |e: std::io::Error| format!("{}: {e}", dir.display());
        std::fs::create_dir_all(dir).map_err(io)?;
        let cfg = dir.join("config.toml");
        std::fs::write(&cfg, config).map_err(io)?;
        // Its API listens on the namespace's address, not loopback: that
        // takes a token, as it would for an operator.
        let (token, _) = ipfs_kit_p2p::trust::files::ensure_token(&dir.join("api.token"))
            .map_err(|e| e.to_string())?;
        let log = dir.with_extension("log");
        let addr = self.addr(i);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(i)])
            .arg(bin)
            .args(["--role", role.as_str(), "--data-dir"])
            .arg(dir)
            .arg("--config")
            .arg(&cfg)
            .args([
                "--listen",
                &self.listen_addr(i),
                "--api",
                &format!("{addr}:5010"),
                "--no-mdns",
                "--ipfs",
                "off",
            ])
            .args(boot.map(|b| vec!["--bootstrap", b]).unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).map_err(io)?);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("IPFS_KIT_P2P_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start node {i}: {e}"))?;
        Ok(LabNode {
            role,
            ns: self.ns(i),
            dir: dir.to_owned(),
            log,
            child,
            client: Client::new(format!("{addr}:5010")).with_token(Some(token)),
            peer_id: String::new(),
        })
    }
}

impl Lab {
    /// Starts one node per role (node `i` in namespace `i`, all
    /// bootstrapped to the first) with the TOML `config`, and waits until
    /// each sees every other healthy and a leader. Their peer IDs are
    /// filled in.
    pub async fn cluster(
        &self,
        bin: &Path,
        dir: &Path,
        roles: &[Role],
        config: &str,
    ) -> Result<Vec<LabNode>, String> {
        const LONG: std::time::Duration = std::time::Duration::from_secs(120);
        let mut nodes: Vec<LabNode> = Vec::new();
        let mut boot = None;
        for (i, role) in roles.iter().enumerate() {
            let d = dir.join(format!("n{i}"));
            let mut n = self.spawn(i, bin, *role, &d, config, boot.as_deref())?;
            let s = crate::wait_for(LONG, || async { n.client.status().await.ok().map(|s| s.0) })
                .await
                .ok_or(format!("node {i} never answered"))?;
            n.peer_id = s.peer_id.clone();
            if i == 0 {
                boot = Some(format!("{}/p2p/{}", self.listen_addr(0), s.peer_id));
            }
            nodes.push(n);
        }
        let all = nodes.len();
        let formed = crate::wait_for(LONG, || async {
            for n in &nodes {
                let s = n.client.status().await.ok()?.0;
                let healthy = s.peers.iter().filter(|p| p.healthy).count();
                (healthy == all - 1 && s.leader.is_some()).then_some(())?;
            }
            Some(())
        })
        .await;
        match formed {
            Some(()) => Ok(nodes),
            None => Err(nodes
                .iter()
                .fold("the cluster never formed".to_string(), |text, n| {
                    format!("{text}\n----- {} -----\n{}", n.ns, n.log_tail(40))
                })),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&format!("netns delete {ns}")) {
                eprintln!("lab cleanup: {e}");
            }
        }
    }
}

/// One node process in its namespace; dropping it kills it. Its API is
/// reachable from the lab's control namespace.
pub struct LabNode {
    pub role: Role,
    pub ns: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub child: Child,
    pub client: Client,
    /// Filled in by the caller once the node answers.
    pub peer_id: String,
}

impl LabNode {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for LabNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `f` on a new thread moved into the network namespace `ns` (with a
/// current-thread runtime), so the sockets it opens are that namespace's;
/// returns what it returned, or its panic.
pub fn on_thread_in<F, Fut, T>(ns: &str, f: F) -> std::thread::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns(2) on a namespace file just opened; it moves only
        // this thread, which runs nothing but `f`.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f())
    })
    .join()
}
