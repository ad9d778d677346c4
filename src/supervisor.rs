//! A process supervisor: runs a child (the IPFS daemon, or an extra
//! `[[service]]`) in its own process group, probes its readiness, forwards
//! its output into the node's logs, restarts it with exponential backoff and
//! jitter, reports a crash loop instead of hiding it, and stops it gracefully
//! (SIGTERM to the group, SIGKILL after a grace period) so no grandchild
//! outlives the node.
//!
//! [`Supervisor::spawn`] starts the supervising task; its state is published
//! on a `watch` channel and it stops when its cancellation token fires.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How readiness is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Ready as soon as it runs.
    None,
    /// An HTTP POST (as kubo's RPC API wants) gets any answer.
    Http(String),
    /// A TCP connection to this address succeeds.
    Tcp(String),
    /// The child prints a line containing this text.
    LogLine(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// Exponential backoff with jitter, reset after a healthy period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A run that stayed up this long resets the backoff.
    pub reset_after: Duration,
    /// This many failed starts in a row, each shorter than `reset_after`, is a crash loop.
    pub crash_loop: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
            crash_loop: 8,
        }
    }
}

impl Backoff {
    /// Delay before restart number `attempt` (1-based), with `jitter` in
    /// [0, 1) scaling up to +25 %.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let base = exp.min(self.max);
        base + base.mul_f64(0.25 * jitter.clamp(0.0, 1.0))
    }
}

/// What to run and how to look after it.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub command: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub readiness: Readiness,
    /// Longest wait for readiness before the start counts as failed.
    pub ready_timeout: Duration,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    /// Between SIGTERM and SIGKILL on stop.
    pub grace: Duration,
}

impl ServiceSpec {
    pub fn new(name: &str, command: impl Into<PathBuf>, args: &[&str]) -> Self {
        ServiceSpec {
            name: name.into(),
            command: command.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            cwd: None,
            readiness: Readiness::None,
            ready_timeout: Duration::from_secs(60),
            restart: RestartPolicy::Always,
            backoff: Backoff::default(),
            grace: Duration::from_secs(10),
        }
    }
}

/// Where a service stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Ready,
    Restarting,
    /// Crash loop, or exited under a policy that does not restart it.
    Failed,
    Stopped,
}

impl State {
    /// The name `status` shows (as serialised).
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Restarting => "restarting",
            State::Failed => "failed",
            State::Stopped => "stopped",
        }
    }
}

/// A service's status, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: State,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_error: Option<String>,
}

/// Restarts a supervised child (for example one whose API stopped
/// answering), with the usual backoff.
#[derive(Debug, Clone)]
pub struct Restarter(mpsc::Sender<String>);

impl Restarter {
    /// `reason` becomes the service's last error. Ignored while a restart is
    /// pending or the child is not ready.
    pub fn restart(&self, reason: String) {
        let _ = self.0.try_send(reason);
    }
}

/// A running supervisor.
pub struct Supervisor {
    pub status: watch::Receiver<ServiceStatus>,
    stop: CancellationToken,
    restart: mpsc::Sender<String>,
    task: JoinHandle<()>,
}

impl Supervisor {
    /// Starts supervising `spec` until [`Supervisor::stop`] or `parent` is cancelled.
    pub fn spawn(spec: ServiceSpec, parent: &CancellationToken) -> Supervisor {
        let (tx, rx) = watch::channel(ServiceStatus {
            name: spec.name.clone(),
            state: State::Starting,
            pid: None,
            restarts: 0,
            last_error: None,
        });
        let stop = parent.child_token();
        let (restart, restart_rx) = mpsc::channel(1);
        let task = tokio::spawn(supervise(spec, tx, stop.clone(), restart_rx));
        Supervisor {
            status: rx,
            stop,
            restart,
            task,
        }
    }

    /// A handle that restarts the running child.
    pub fn restarter(&self) -> Restarter {
        Restarter(self.restart.clone())
    }

    /// Stops the child gracefully and waits for the supervisor to end.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn spawn_child(spec: &ServiceSpec) -> std::io::Result<Child> {
    let mut cmd = Command::new(&spec.command);
    cmd.args(&spec.args)
        .envs(spec.env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // If the node dies without stopping it (SIGKILL), the child gets SIGTERM
    // from the kernel instead of living on as an orphan. It gets the limit on
    // open files the node was started with, not the one the node raised.
    // SAFETY: prctl, getrlimit and setrlimit are async-signal-safe; nothing
    // else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            crate::limits::restore_in_child()
        });
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    cmd.spawn()
}

/// Forwards a child's output lines into the logs; reports the readiness line.
fn forward(
    name: String,
    out: impl AsyncRead + Unpin + Send + 'static,
    ready_line: Option<String>,
    ready: watch::Sender<bool>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            info!(service = %name, "{line}");
            if ready_line.as_deref().is_some_and(|l| line.contains(l)) {
                let _ = ready.send(true);
            }
        }
    });
}

async fn probe(readiness: &Readiness, http: Option<&reqwest::Client>) -> bool {
    match (readiness, http) {
        (Readiness::Http(url), Some(http)) => http.post(url).send().await.is_ok(),
        (Readiness::Http(_), None) => false,
        (Readiness::Tcp(addr), _) => tokio::net::TcpStream::connect(addr.as_str()).await.is_ok(),
        (Readiness::None | Readiness::LogLine(_), _) => false,
    }
}

/// Waits until the child is ready; `Err` with the reason if it exits or times out first.
async fn await_ready(
    spec: &ServiceSpec,
    child: &mut Child,
    mut line_seen: watch::Receiver<bool>,
) -> Result<(), String> {
    if spec.readiness == Readiness::None {
        return Ok(());
    }
    // Built only for HTTP probes: a client is not free.
    let http = match spec.readiness {
        Readiness::Http(_) => Some(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
        ),
        _ => None,
    };
    let deadline = tokio::time::sleep(spec.ready_timeout);
    tokio::pin!(deadline);
    loop {
        if *line_seen.borrow() || probe(&spec.readiness, http.as_ref()).await {
            return Ok(());
        }
        tokio::select! {
            status = child.wait() => return Err(match status {
                Ok(s) => format!("exited before it was ready: {s}"),
                Err(e) => format!("cannot wait for it: {e}"),
            }),
            _ = line_seen.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut deadline => return Err(format!("not ready within {:?}", spec.ready_timeout)),
        }
    }
}

/// SIGTERM to the whole process group, SIGKILL after `grace`.
async fn stop_group(child: &mut Child, grace: Duration) {
    let Some(pid) = child.id() else { return };
    let pgid = pid as libc::pid_t;
    // SAFETY: signalling a process group we created (process_group(0)).
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    // A stopped (SIGSTOP) child only acts on SIGTERM once it runs again.
    unsafe { libc::kill(-pgid, libc::SIGCONT) };
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        warn!(pid, "did not stop within the grace period; killing");
    }
    // Whatever is left of the group (grandchildren included) goes.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait().await;
}

async fn supervise(
    spec: ServiceSpec,
    tx: watch::Sender<ServiceStatus>,
    stop: CancellationToken,
    mut restart: mpsc::Receiver<String>,
) {
    let mut failures = 0u32;
    loop {
        tx.send_modify(|s| {
            s.state = if s.restarts == 0 {
                State::Starting
            } else {
                State::Restarting
            }
        });
        let started = Instant::now();
        let mut child = match spawn_child(&spec) {
            Ok(c) => c,
            Err(e) => {
                tx.send_modify(|s| {
                    s.state = State::Failed;
                    s.last_error = Some(format!("cannot start {}: {e}", spec.command.display()));
                });
                return;
            }
        };
        tx.send_modify(|s| s.pid = child.id());
        let (ready_tx, ready_rx) = watch::channel(false);
        let line = match &spec.readiness {
            Readiness::LogLine(l) => Some(l.clone()),
            _ => None,
        };
        if let Some(out) = child.stdout.take() {
            forward(spec.name.clone(), out, line.clone(), ready_tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            forward(spec.name.clone(), err, line, ready_tx);
        }
        let outcome = tokio::select! {
            r = await_ready(&spec, &mut child, ready_rx) => r,
            _ = stop.cancelled() => {
                stop_group(&mut child, spec.grace).await;
                tx.send_modify(|s| { s.state = State::Stopped; s.pid = None; });
                return;
            }
        };
        let exit = match outcome {
            Ok(()) => {
                info!(service = %spec.name, pid = ?child.id(), "ready");
                tx.send_modify(|s| s.state = State::Ready);
                // A restart asked for before this run was ready is moot.
                while restart.try_recv().is_ok() {}
                tokio::select! {
                    status = child.wait() => match status {
                        Ok(s) => format!("exited: {s}"),
                        Err(e) => format!("lost: {e}"),
                    },
                    Some(reason) = restart.recv() => {
                        warn!(service = %spec.name, %reason, "restarting on request");
                        stop_group(&mut child, spec.grace).await;
                        format!("restarted: {reason}")
                    }
                    _ = stop.cancelled() => {
                        stop_group(&mut child, spec.grace).await;
                        tx.send_modify(|s| { s.state = State::Stopped; s.pid = None; });
                        return;
                    }
                }
            }
            Err(why) => {
                stop_group(&mut child, Duration::from_secs(1)).await;
                why
            }
        };
        // A clean exit under on-failure, or any exit under never, ends supervision.
        let clean = exit.ends_with("exit status: 0");
        warn!(service = %spec.name, "{exit}");
        tx.send_modify(|s| {
            s.pid = None;
            s.last_error = Some(exit.clone());
        });
        let done = match spec.restart {
            RestartPolicy::Never => true,
            RestartPolicy::OnFailure => clean,
            RestartPolicy::Always => false,
        };
        if done {
            tx.send_modify(|s| s.state = if clean { State::Stopped } else { State::Failed });
            return;
        }
        failures = if started.elapsed() >= spec.backoff.reset_after {
            1
        } else {
            failures + 1
        };
        if failures >= spec.backoff.crash_loop {
            warn!(service = %spec.name, failures, "crash loop: giving up");
            tx.send_modify(|s| {
                s.state = State::Failed;
                s.last_error = Some(format!(
                    "crash loop: {failures} failed starts in a row, last: {exit}"
                ));
            });
            return;
        }
        let delay = spec.backoff.delay(failures, rand::random::<f64>());
        tx.send_modify(|s| {
            s.state = State::Restarting;
            s.restarts += 1;
        });
        info!(service = %spec.name, ?delay, "restarting");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => {
                tx.send_modify(|s| s.state = State::Stopped);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_match_their_json() {
        use State::*;
        for st in [Starting, Ready, Restarting, Failed, Stopped] {
            assert_eq!(serde_json::to_value(&st).unwrap(), st.as_str());
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(2, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(4, 0.0), Duration::from_secs(4));
        assert_eq!(b.delay(30, 0.0), Duration::from_secs(30));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(30));
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(625));
        for attempt in 1..40 {
            assert!(b.delay(attempt + 1, 0.0) >= b.delay(attempt, 0.0));
        }
    }
}
