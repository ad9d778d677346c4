//! The node's IPFS: which engine runs ([`settings::Mode`]), starting and
//! supervising it, and watching its RPC API.
//!
//! [`start`] resolves the mode, prepares kubo's repo when kubo is used
//! ([`kubo`]), and hands the daemon to a [`Supervisor`]. A monitor task then
//! asks the API for `id` every `health_interval`: the answer makes the state
//! `ready` and gives the daemon's peer ID and addresses (which go into
//! heartbeats, so peers connect their IPFS to ours and the leader knows
//! whose IPFS is up); `health_failures` misses in a row restart the daemon.
//! The state is published on a `watch` channel.

pub mod connect;
pub mod kubo;
pub mod settings;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ipfs_rpc::IpfsClient;
use crate::role::Role;
use crate::supervisor::{Readiness, RestartPolicy, ServiceSpec, State, Supervisor};
pub use settings::{IpfsConfig, Mode};

/// The line kubo prints once its API serves; the built-in engine prints it too.
pub const READY_LINE: &str = "Daemon is ready";

/// What `status` shows under `"ipfs"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpfsStatus {
    /// The mode in use (never `auto`).
    pub mode: Mode,
    /// Why this mode.
    pub why: String,
    /// starting | ready | restarting | failed | stopped | down | off
    pub state: String,
    /// The RPC API, `HOST:PORT`.
    pub api: Option<String>,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_error: Option<String>,
    /// The daemon's own peer ID and swarm addresses (from `id`).
    pub peer_id: Option<String>,
    pub addrs: Vec<String>,
}

impl IpfsStatus {
    pub fn is_ready(&self) -> bool {
        self.state == "ready"
    }
}

/// The running IPFS side of a node.
pub struct Ipfs {
    pub status: watch::Receiver<IpfsStatus>,
    supervisor: Option<Supervisor>,
    stop: CancellationToken,
    monitor: tokio::task::JoinHandle<()>,
}

/// Decides the mode: `auto` is kubo if its binary is found, else the built-in engine.
pub fn resolve(cfg: &IpfsConfig) -> (Mode, String, Option<PathBuf>) {
    let kubo = cfg.binary.clone().or_else(|| find_on_path("ipfs"));
    match cfg.mode {
        Mode::Auto => match kubo {
            Some(bin) => (
                Mode::Kubo,
                format!("auto: found kubo at {}", bin.display()),
                Some(bin),
            ),
            None if cfg!(feature = "builtin-ipfs") => (
                Mode::Builtin,
                "auto: no `ipfs` (kubo) on PATH, using the built-in engine".into(),
                None,
            ),
            None => (
                Mode::Off,
                "auto: no `ipfs` (kubo) on PATH and no built-in engine in this build".into(),
                None,
            ),
        },
        Mode::Kubo => (Mode::Kubo, "configured".into(), kubo),
        m => (m, "configured".into(), None),
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// `/ip4/127.0.0.1/tcp/5001` (kubo's `api` file) → `127.0.0.1:5001`.
pub fn api_from_multiaddr(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.trim().split('/').collect();
    match parts.as_slice() {
        ["", "ip4", host, "tcp", port, ..] => Some(format!("{host}:{port}")),
        ["", "ip6", host, "tcp", port, ..] => Some(format!("[{host}]:{port}")),
        _ => None,
    }
}

/// Starts the configured IPFS (or nothing) and its monitor.
/// Refuses to start a node whose IPFS daemon's RPC or swarm TCP port is
/// taken (another node's IPFS on this host, typically): such a daemon
/// would only crash-loop while the node ran on with no replicas. A
/// [`crate::config::ConfigError`] (exit status 2) naming the flags to set.
pub fn preflight(cfg: &IpfsConfig) -> Result<(), crate::config::ConfigError> {
    let (mode, _, _) = resolve(cfg);
    if !matches!(mode, Mode::Builtin | Mode::Kubo) {
        return Ok(());
    }
    use libp2p::multiaddr::Protocol;
    let swarm = cfg.swarm.iter().filter_map(|s| {
        let a: libp2p::Multiaddr = s.parse().ok()?;
        let mut ip = None;
        let mut port = None;
        for p in a.iter() {
            match p {
                Protocol::Ip4(v) => ip = Some(std::net::IpAddr::V4(v)),
                Protocol::Ip6(v) => ip = Some(std::net::IpAddr::V6(v)),
                Protocol::Tcp(p) => port = Some(p),
                _ => {}
            }
        }
        Some(("swarm", std::net::SocketAddr::new(ip?, port?)))
    });
    for (what, addr) in std::iter::once(("RPC API", cfg.api)).chain(swarm) {
        if addr.port() == 0 {
            continue;
        }
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(crate::config::ConfigError::Invalid {
                field: if what == "swarm" {
                    "ipfs.swarm"
                } else {
                    "ipfs.api"
                },
                message: format!(
                    "the IPFS {what} address {addr} is taken ({e}); another node's IPFS on \
                     this host? Give each node its own ports (--api and --listen: the IPFS \
                     ports follow them, +1) or set --ipfs-api / --ipfs-swarm"
                ),
            });
        }
    }
    Ok(())
}

pub async fn start(
    cfg: &IpfsConfig,
    role: Role,
    data_dir: &Path,
    parent: &CancellationToken,
) -> anyhow::Result<Ipfs> {
    let (mode, why, kubo_bin) = resolve(cfg);
    info!(%mode, %why, "IPFS");
    let mut status = IpfsStatus {
        mode,
        why,
        state: "starting".into(),
        api: None,
        pid: None,
        restarts: 0,
        last_error: None,
        peer_id: None,
        addrs: Vec::new(),
    };
    let stop = parent.child_token();
    let repo = cfg.repo_for(mode, data_dir);
    let spec = match mode {
        Mode::Off | Mode::Auto => {
            status.state = "off".into();
            None
        }
        Mode::External => {
            status.api = Some(cfg.api.to_string());
            None
        }
        Mode::Builtin => Some(builtin_spec(cfg, &repo)?),
        Mode::Kubo => {
            let bin = kubo_bin.ok_or_else(|| {
                anyhow::anyhow!(
                    "ipfs.mode is kubo but no `ipfs` binary is on PATH (set ipfs.binary)"
                )
            })?;
            Some(kubo::prepare(&bin, &repo, cfg, role).await?)
        }
    };
    let (tx, rx) = watch::channel(status);
    let supervisor = spec.map(|s| Supervisor::spawn(s, &stop));
    let monitor = tokio::spawn(monitor(
        cfg.clone(),
        repo,
        supervisor.as_ref().map(|s| s.status.clone()),
        supervisor.as_ref().map(|s| s.restarter()),
        tx,
        stop.clone(),
    ));
    Ok(Ipfs {
        status: rx,
        supervisor,
        stop,
        monitor,
    })
}

impl Ipfs {
    /// Stops the daemon (gracefully) and the monitor.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Some(s) = self.supervisor {
            s.stop().await;
        }
        let _ = self.monitor.await;
    }
}

fn builtin_spec(cfg: &IpfsConfig, repo: &Path) -> anyhow::Result<ServiceSpec> {
    let exe = std::env::current_exe().map_err(|e| {
        anyhow::anyhow!("cannot find this binary to run the built-in IPFS engine: {e}")
    })?;
    let mut spec = ServiceSpec::new("ipfs", exe, &["ipfs-daemon"]);
    spec.args
        .extend(["--repo".into(), repo.display().to_string()]);
    spec.args.extend(["--api".into(), cfg.api.to_string()]);
    for s in &cfg.swarm {
        spec.args.extend(["--swarm".into(), s.clone()]);
    }
    spec.readiness = Readiness::LogLine(READY_LINE.into());
    spec.restart = RestartPolicy::Always;
    spec.grace = Duration::from_secs(10);
    Ok(spec)
}

/// Keeps the published status in step with the supervisor and the API's answers.
async fn monitor(
    cfg: IpfsConfig,
    repo: PathBuf,
    mut sup: Option<watch::Receiver<crate::supervisor::ServiceStatus>>,
    restart: Option<crate::supervisor::Restarter>,
    tx: watch::Sender<IpfsStatus>,
    stop: CancellationToken,
) {
    if tx.borrow().mode == Mode::Off {
        return;
    }
    let mut tick = tokio::time::interval(cfg.health_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut misses = 0u32;
    let mut sup_open = sup.is_some();
    let mut client: Option<IpfsClient> = None;
    loop {
        // Mirror the supervisor; probe the API only while the process is up.
        let process_ready = match &sup {
            None => true,
            Some(s) => {
                let s = s.borrow().clone();
                let ready = s.state == State::Ready;
                // Only real changes notify: each one makes the node send a heartbeat.
                tx.send_if_modified(|st| {
                    let mut new = st.clone();
                    new.pid = s.pid;
                    new.restarts = s.restarts;
                    new.last_error = s.last_error.clone();
                    if !ready {
                        new.state = s.state.as_str().into();
                        new.peer_id = None;
                        new.addrs.clear();
                    }
                    let changed = new != *st;
                    *st = new;
                    changed
                });
                ready
            }
        };
        if process_ready {
            let api = match tx.borrow().mode {
                Mode::External => Some(cfg.api.to_string()),
                _ => std::fs::read_to_string(repo.join("api"))
                    .ok()
                    .and_then(|s| api_from_multiaddr(&s)),
            };
            // One client (and connection pool) per API address.
            let addr = api.clone().unwrap_or_default();
            let client = match &mut client {
                Some(c) if c.addr() == addr => c,
                slot => {
                    let mut c = IpfsClient::new(addr);
                    c.timeout = cfg
                        .health_interval
                        .min(Duration::from_secs(5))
                        .max(Duration::from_secs(1));
                    slot.insert(c)
                }
            };
            let answer = match &api {
                Some(_) => client.id().await.map_err(|e| e.to_string()),
                None => Err(format!("no api file in {}", repo.display())),
            };
            match answer {
                Ok(id) => {
                    misses = 0;
                    tx.send_if_modified(|st| {
                        let new = IpfsStatus {
                            state: "ready".into(),
                            api: api.clone(),
                            peer_id: Some(id.id.clone()),
                            addrs: id.addresses.clone().unwrap_or_default(),
                            ..st.clone()
                        };
                        let changed = *st != new;
                        if changed && !st.is_ready() {
                            info!(peer = %id.id, api = ?api, "IPFS ready");
                        }
                        *st = new;
                        changed
                    });
                }
                Err(e) => {
                    misses += 1;
                    warn!(misses, "IPFS API check failed: {e}");
                    if misses >= cfg.health_failures {
                        misses = 0;
                        tx.send_modify(|st| {
                            st.state = "down".into();
                            st.last_error = Some(e.clone());
                            st.peer_id = None;
                            st.addrs.clear();
                        });
                        if let Some(r) = &restart {
                            r.restart(format!(
                                "IPFS API stopped answering ({} checks in a row): {e}",
                                cfg.health_failures
                            ));
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {
                tx.send_modify(|st| { st.state = "stopped".into(); st.peer_id = None; st.addrs.clear(); });
                return;
            }
            _ = tick.tick() => {}
            changed = async {
                match sup.as_mut() {
                    Some(s) if sup_open => s.changed().await,
                    _ => std::future::pending().await,
                }
            } => {
                // The supervisor ended (failed, or never restarts): its last word stands.
                sup_open = changed.is_ok();
            }
        }
    }
}
