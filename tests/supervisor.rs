//! The supervisor with real child processes: readiness, restart after
//! SIGKILL, crash-loop reporting, and a clean stop that leaves no process of
//! the group behind.

use std::time::Duration;

use ipfs_kit_p2p::supervisor::{
    Backoff, Readiness, RestartPolicy, ServiceSpec, ServiceStatus, State, Supervisor,
};
use tokio_util::sync::CancellationToken;

const WITHIN: Duration = Duration::from_secs(30);

async fn wait_state(
    sup: &mut Supervisor,
    what: &str,
    f: impl Fn(&ServiceStatus) -> bool,
) -> ServiceStatus {
    let found = match tokio::time::timeout(WITHIN, sup.status.wait_for(|s| f(s))).await {
        Ok(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    found.unwrap_or_else(|| panic!("{what} not within {WITHIN:?}: {:?}", *sup.status.borrow()))
}

/// (pid, state, process group) of every process, from /proc.
fn processes() -> Vec<(i32, char, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if let (Some(state), Some(pgrp)) = (
            f.first().and_then(|s| s.chars().next()),
            f.get(2).and_then(|g| g.parse().ok()),
        ) {
            out.push((pid, state, pgrp));
        }
    }
    out
}

/// Running (not zombie: an orphan may wait a moment for init to reap it).
fn alive(pid: i32) -> bool {
    processes()
        .iter()
        .any(|(p, state, _)| *p == pid && *state != 'Z')
}

fn group_alive(pgid: i32) -> bool {
    processes()
        .iter()
        .any(|(_, state, g)| *g == pgid && *state != 'Z')
}

fn fast(mut spec: ServiceSpec) -> ServiceSpec {
    spec.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
        reset_after: Duration::from_secs(60),
        crash_loop: 4,
    };
    spec.grace = Duration::from_secs(2);
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_a_killed_child_and_reports_it() {
    let mut spec = fast(ServiceSpec::new(
        "echoer",
        "sh",
        &[
            "-c",
            "echo starting; sleep 0.1; echo READY now; exec sleep 1000",
        ],
    ));
    spec.readiness = Readiness::LogLine("READY".into());
    let root = CancellationToken::new();
    let mut sup = Supervisor::spawn(spec, &root);
    let first = wait_state(&mut sup, "ready", |s| s.state == State::Ready).await;
    let pid = first.pid.expect("a pid") as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let again = wait_state(&mut sup, "ready again", |s| {
        s.state == State::Ready && s.restarts == 1
    })
    .await;
    assert_ne!(again.pid, first.pid);
    assert!(
        again
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("SIGKILL") || e.contains("signal: 9")),
        "{again:?}"
    );
    sup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_is_reported_not_hidden() {
    let spec = fast(ServiceSpec::new(
        "crasher",
        "sh",
        &["-c", "echo boom >&2; exit 3"],
    ));
    let root = CancellationToken::new();
    let mut sup = Supervisor::spawn(spec, &root);
    let failed = wait_state(&mut sup, "failed", |s| s.state == State::Failed).await;
    let err = failed.last_error.unwrap_or_default();
    assert!(
        err.contains("crash loop") && err.contains("exit status: 3"),
        "{err}"
    );
    assert_eq!(failed.restarts, 3, "4 failed starts = 3 restarts");
    sup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_leaves_no_process_of_the_group_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild");
    let script = format!(
        "sleep 1000 & echo $! > {}; echo READY; wait",
        pidfile.display()
    );
    let mut spec = fast(ServiceSpec::new("parent", "sh", &["-c", &script]));
    spec.readiness = Readiness::LogLine("READY".into());
    let root = CancellationToken::new();
    let mut sup = Supervisor::spawn(spec, &root);
    let ready = wait_state(&mut sup, "ready", |s| s.state == State::Ready).await;
    let pgid = ready.pid.unwrap() as i32;
    let grandchild: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(grandchild));
    root.cancel(); // the node shutting down stops its services
    let stopped = wait_state(&mut sup, "stopped", |s| s.state == State::Stopped).await;
    assert_eq!(stopped.pid, None);
    sup.stop().await;
    // SIGKILL has been sent to the group; on a loaded machine its delivery
    // can take a moment, so wait for it with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (group_alive(pgid) || alive(grandchild)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!group_alive(pgid), "the process group is gone");
    assert!(
        !alive(grandchild),
        "the grandchild did not outlive the stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_readiness_and_never_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let port_s = port.to_string();
    let mut spec = fast(ServiceSpec::new(
        "web",
        "python3",
        &["-m", "http.server", &port_s, "--bind", "127.0.0.1"],
    ));
    spec.readiness = Readiness::Http(format!("http://127.0.0.1:{port}/"));
    spec.restart = RestartPolicy::Never;
    let root = CancellationToken::new();
    let mut sup = Supervisor::spawn(spec, &root);
    let ready = wait_state(&mut sup, "ready", |s| s.state == State::Ready).await;
    unsafe { libc::kill(ready.pid.unwrap() as i32, libc::SIGKILL) };
    let done = wait_state(&mut sup, "failed", |s| s.state == State::Failed).await;
    assert_eq!(done.restarts, 0, "restart = never");
    sup.stop().await;
}

/// Each start of a child that dies at once waits longer: the gaps between
/// starts (timestamps the child writes itself) are at least 100, 200, 400
/// and 800 ms, so the backoff really doubles between real restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_back_off_exponentially() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts");
    let script = format!("date +%s%N >> {}; exit 1", log.display());
    let mut spec = ServiceSpec::new("flaky", "sh", &["-c", &script]);
    spec.backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
        reset_after: Duration::from_secs(60),
        crash_loop: 5,
    };
    let root = CancellationToken::new();
    let mut sup = Supervisor::spawn(spec, &root);
    wait_state(&mut sup, "failed", |s| s.state == State::Failed).await;
    let starts: Vec<u128> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(starts.len(), 5, "5 failed starts make a crash loop");
    let gaps_ms: Vec<u128> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    for (i, gap) in gaps_ms.iter().enumerate() {
        let floor = 100u128 << i;
        assert!(
            *gap >= floor,
            "gap {i} was {gap} ms, under the {floor} ms backoff: {gaps_ms:?}"
        );
    }
    sup.stop().await;
}
