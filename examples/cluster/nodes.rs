//! The example's nodes: each one a real `ipfs-kit-p2p` process with its own
//! data directory, ports and built-in IPFS, on loopback only. Started,
//! asked and stopped the way an operator would: the node's flags, its
//! subcommands (`ipfs-kit-p2p --api ADDR status --json`) and its HTTP API.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How often conditions are polled while waiting for them.
pub const POLL: Duration = Duration::from_millis(100);

/// Ports a node takes inside its block of ten: the swarm (TCP and QUIC),
/// its IPFS swarm (the node's TCP port + 1), its control API and its IPFS
/// RPC API (the API's port + 1).
const SWARM: u16 = 0;
const IPFS_SWARM: u16 = 1;
const API: u16 = 5;
const IPFS_API: u16 = 6;

/// One node of the example cluster, as the operator set it up.
#[derive(Clone)]
pub struct NodeSpec {
    pub name: &'static str,
    pub role: &'static str,
    pub dir: PathBuf,
    /// First port of this node's block.
    pub base: u16,
}

impl NodeSpec {
    pub fn swarm_port(&self) -> u16 {
        self.base + SWARM
    }
    pub fn api(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base + API))
    }
    pub fn ipfs_api(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base + IPFS_API))
    }

    /// The command line that runs this node: every address on loopback, mDNS
    /// off (the others find the cluster through `--bootstrap`).
    pub fn args(&self, bootstrap: Option<&str>) -> Vec<String> {
        let p = self.swarm_port();
        let mut a = vec![
            "--role".to_string(),
            self.role.into(),
            "--data-dir".into(),
            self.dir.display().to_string(),
            "--listen".into(),
            format!("/ip4/127.0.0.1/tcp/{p}"),
            "--listen".into(),
            format!("/ip4/127.0.0.1/udp/{p}/quic-v1"),
            "--api".into(),
            self.api().to_string(),
            "--ipfs".into(),
            "builtin".into(),
            "--ipfs-api".into(),
            self.ipfs_api().to_string(),
            "--ipfs-swarm".into(),
            format!("/ip4/127.0.0.1/tcp/{}", self.base + IPFS_SWARM),
            "--no-mdns".into(),
        ];
        if let Some(b) = bootstrap {
            a.extend(["--bootstrap".into(), b.to_string()]);
        }
        a
    }
}

/// A first port from which `nodes` blocks of ten ports are all free on
/// loopback (TCP for every port, UDP for QUIC), trying `start`, then every
/// 100 above it.
pub fn free_base(start: u16, nodes: usize) -> Result<u16, String> {
    let span = 10 * nodes as u16;
    for attempt in 0..50u16 {
        let Some(base) = start.checked_add(attempt * 100) else {
            break;
        };
        if base.checked_add(span).is_none() {
            break;
        }
        let free = (0..nodes as u16).all(|i| {
            let b = base + 10 * i;
            [SWARM, IPFS_SWARM, API, IPFS_API]
                .iter()
                .all(|off| TcpListener::bind(("127.0.0.1", b + off)).is_ok())
                && UdpSocket::bind(("127.0.0.1", b + SWARM)).is_ok()
        });
        if free {
            return Ok(base);
        }
    }
    Err(format!(
        "no free block of {span} ports on 127.0.0.1 from {start} up: pick one with --base-port"
    ))
}

/// A running node.
pub struct Node {
    pub spec: NodeSpec,
    pub bin: PathBuf,
    pub peer_id: String,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Node {
    /// Starts the node (its log in `<dir>/node.log`) and waits until its API
    /// answers with its status.
    pub async fn start(
        spec: NodeSpec,
        bin: &Path,
        bootstrap: Option<&str>,
    ) -> Result<Node, String> {
        std::fs::create_dir_all(&spec.dir).map_err(|e| format!("{}: {e}", spec.dir.display()))?;
        let log = std::fs::File::create(spec.dir.join("node.log")).map_err(|e| e.to_string())?;
        let args = spec.args(bootstrap);
        say_cmd(&format!("ipfs-kit-p2p {}  &", args.join(" ")));
        let child = Command::new(bin)
            .args(&args)
            .env("RUST_LOG", "info")
            .env_remove("IPFS_KIT_P2P_API")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut node = Node {
            spec,
            bin: bin.to_owned(),
            peer_id: String::new(),
            child: Some(child),
            http: reqwest::Client::new(),
        };
        // Up once its API answers and its IPFS is ready.
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            node.exited()?;
            if let Some(s) = node.status().await
                && s["ipfs"]["state"] == "ready"
                && s["listen_addrs"].as_array().is_some_and(|a| !a.is_empty())
            {
                break s;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not come up with a ready IPFS within 60 s\n{}",
                    node.spec.name,
                    node.log_tail(15)
                ));
            }
            tokio::time::sleep(POLL).await;
        };
        node.peer_id = status["peer_id"].as_str().unwrap_or_default().to_string();
        Ok(node)
    }

    /// `/ip4/127.0.0.1/tcp/PORT/p2p/ID`: what other nodes bootstrap to.
    pub fn addr(&self) -> String {
        format!(
            "/ip4/127.0.0.1/tcp/{}/p2p/{}",
            self.spec.swarm_port(),
            self.peer_id
        )
    }

    /// An error if the process has exited (with its log's tail).
    pub fn exited(&mut self) -> Result<(), String> {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            return Err(format!(
                "{} exited: {st}\n{}",
                self.spec.name,
                self.log_tail(15)
            ));
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.spec.dir.join("node.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `GET /v1/status`, or `None` while it does not answer.
    pub async fn status(&self) -> Option<Value> {
        self.get_json("/v1/status").await
    }

    /// `GET` on the control API: the status and the body.
    async fn get(&self, path: &str) -> Result<(bool, String), String> {
        let r = self
            .http
            .get(format!("http://{}{path}", self.spec.api()))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let ok = r.status().is_success();
        Ok((ok, r.text().await.map_err(|e| e.to_string())?))
    }

    /// A successful answer's JSON, or `None`.
    pub async fn get_json(&self, path: &str) -> Option<Value> {
        match self.get(path).await {
            Ok((true, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    pub async fn get_text(&self, path: &str) -> Result<String, String> {
        Ok(self.get(path).await?.1)
    }

    /// A request to the control API with a bearer token; the status and the
    /// body as JSON (`null` when it is not JSON).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.spec.api()))
            // A loopback API without a token takes any; a real one would be
            // `ipfs-kit-p2p api-token`'s.
            .bearer_auth("example")
            .timeout(Duration::from_secs(30));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.map_err(|e| e.to_string())?;
        let code = r.status().as_u16();
        let v = r.json().await.unwrap_or(Value::Null);
        Ok((code, v))
    }

    /// A call to this node's IPFS RPC API (`POST /api/v0/...`).
    pub async fn ipfs(&self, path_and_query: &str) -> Result<Value, String> {
        let body = self.ipfs_post(path_and_query).await?;
        let text = String::from_utf8_lossy(&body).into_owned();
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// `POST /api/v0/...` on this node's IPFS: the body of a successful answer.
    async fn ipfs_post(&self, path_and_query: &str) -> Result<Vec<u8>, String> {
        let r = self
            .http
            .post(format!(
                "http://{}/api/v0/{path_and_query}",
                self.spec.ipfs_api()
            ))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let ok = r.status().is_success();
        let body = r.bytes().await.map_err(|e| e.to_string())?.to_vec();
        if !ok {
            let why = String::from_utf8_lossy(&body);
            return Err(format!(
                "{}'s IPFS: {path_and_query}: {}",
                self.spec.name,
                why.trim()
            ));
        }
        Ok(body)
    }

    /// Adds bytes to this node's IPFS only (not pinned cluster-wide); the CID.
    pub async fn ipfs_add(&self, bytes: &[u8]) -> Result<String, String> {
        let part = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("note.txt");
        let form = reqwest::multipart::Form::new().part("file", part);
        let r = self
            .http
            .post(format!(
                "http://{}/api/v0/add?cid-version=1",
                self.spec.ipfs_api()
            ))
            .multipart(form)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        v["Hash"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{}'s IPFS: add answered {v}", self.spec.name))
    }

    /// The bytes `cat` gives for a CID on this node's IPFS.
    pub async fn ipfs_cat(&self, cid: &str) -> Result<Vec<u8>, String> {
        self.ipfs_post(&format!("cat?arg={cid}")).await
    }

    /// Runs `ipfs-kit-p2p --api ADDR ARGS...` against this node, printing the
    /// command as an operator would type it.
    pub fn cli(&self, args: &[&str]) -> Result<Output, String> {
        say_cmd(&format!(
            "ipfs-kit-p2p --api {} {}",
            self.spec.api(),
            args.join(" ")
        ));
        self.run(args)
    }

    fn run(&self, args: &[&str]) -> Result<Output, String> {
        Command::new(&self.bin)
            .arg("--api")
            .arg(self.spec.api().to_string())
            .args(args)
            .env_remove("IPFS_KIT_P2P_API")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))
    }

    /// The subcommand's stdout if it succeeded, printing nothing (for polling).
    pub fn cli_quiet(&self, args: &[&str]) -> Result<String, String> {
        let out = self.run(args)?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// [`Node::cli`], which must succeed; its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String, String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            return Err(format!(
                "`{}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// SIGKILL: the machine dies, no goodbye; its data directory stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as `systemctl stop` sends: the node hands over and leaves.
    /// Waits up to `within` for it to exit (then SIGKILL); its exit status.
    pub async fn stop(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            tokio::time::sleep(POLL).await;
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Node {
    /// Whatever happens to the walk-through, no node outlives it.
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it gives a value, an error, or `within` passes.
pub async fn wait<T, F, Fut>(within: Duration, what: &str, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "gave up after {} s waiting until {what}",
                within.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A command as the operator would type it.
pub fn say_cmd(cmd: &str) {
    println!("    $ {cmd}");
}
