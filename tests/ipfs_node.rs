//! A node's IPFS, with real processes: the built-in engine started, watched
//! and restarted by the node; nodes connecting their daemons so content
//! moves between them; kubo mode's set-up sequence; an external daemon
//! watched but never started or stopped.

use std::path::Path;
use std::time::Duration;

use ipfs_kit_p2p::ipfs::Mode;
use ipfs_kit_p2p::ipfs_rpc::IpfsClient;
use ipfs_kit_p2p::role::Role;
use testkit::{EngineProc, NodeProc, Spawner, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");
const LONG: Duration = Duration::from_secs(60);

fn spawner(ipfs: &str) -> Spawner {
    let mut s = Spawner::new(BIN);
    s.ipfs = ipfs.into();
    s
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// Waits until the node's IPFS is ready; returns (api, daemon pid, daemon peer id).
async fn ipfs_ready(node: &NodeProc) -> (String, u32, String) {
    wait_for(LONG, || async {
        let s = node.status().await?;
        let i = s.ipfs;
        (i.state == "ready")
            .then(|| Some((i.api?, i.pid.unwrap_or(0), i.peer_id?)))
            .flatten()
    })
    .await
    .expect("the node's IPFS becomes ready")
}

#[tokio::test]
async fn a_killed_ipfs_daemon_is_restarted_without_restarting_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = spawner("builtin")
        .spawn(Role::Worker, dir.path(), &[])
        .await
        .unwrap();
    let (api, pid, _) = ipfs_ready(&node).await;
    let s = node.status().await.unwrap();
    assert_eq!(s.ipfs.mode, Mode::Builtin);
    assert_eq!(s.ipfs.restarts, 0);
    let added = IpfsClient::new(api)
        .add("a", b"kept across restarts".to_vec())
        .await
        .unwrap();

    // SAFETY: killing the node's IPFS child, as a crash would.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let seen = wait_for(LONG, || async {
        let i = node.status().await?.ipfs;
        (i.state == "restarting").then_some(i)
    })
    .await
    .expect("status shows the daemon restarting");
    assert!(seen.last_error.unwrap_or_default().contains("signal: 9"));
    let (api, new_pid, _) = ipfs_ready(&node).await;
    let s = node.status().await.unwrap();
    assert_eq!(s.ipfs.restarts, 1);
    assert_ne!(new_pid, pid);
    assert_eq!(s.incarnation, 1, "the node itself did not restart");
    assert!(node.child.try_wait().unwrap().is_none());
    let pins = IpfsClient::new(api).pin_ls().await.unwrap();
    assert!(
        pins.contains(&added.hash),
        "the repo survived the crash: {pins:?}"
    );

    // The node's graceful stop takes its daemon with it.
    node.terminate();
    assert!(node.wait_exit(LONG).await.is_some_and(|s| s.success()));
    assert!(!alive(new_pid), "the IPFS daemon outlived its node");
}

#[tokio::test]
async fn a_daemon_that_stops_answering_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        "[ipfs]\nhealth_interval_ms = 200\nhealth_failures = 3\n",
    )
    .unwrap();
    let mut sp = spawner("builtin");
    sp.extra = vec!["--config".into(), cfg.display().to_string()];
    let node = sp
        .spawn(Role::Worker, &dir.path().join("n"), &[])
        .await
        .unwrap();
    let (_, pid, _) = ipfs_ready(&node).await;
    // Frozen, not dead: the process runs on but its API never answers.
    // SAFETY: stopping the node's IPFS child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    let restarted = wait_for(LONG, || async {
        let i = node.status().await?.ipfs;
        (i.restarts >= 1).then_some(i)
    })
    .await
    .expect("the frozen daemon is restarted");
    assert!(
        restarted
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("stopped answering"),
        "{restarted:?}"
    );
    let (_, new_pid, _) = ipfs_ready(&node).await;
    assert_ne!(new_pid, pid);
    assert!(!alive(pid), "the frozen daemon was left behind");
}

#[tokio::test]
async fn a_sigkilled_node_does_not_leave_its_daemon_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = spawner("builtin")
        .spawn(Role::Worker, dir.path(), &[])
        .await
        .unwrap();
    let (_, pid, _) = ipfs_ready(&node).await;
    node.kill();
    let gone = wait_for(Duration::from_secs(30), || async {
        (!alive(pid)).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "IPFS daemon {pid} still runs after its node was SIGKILLed"
    );
}

#[tokio::test]
async fn nodes_connect_their_daemons_and_content_moves_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let sp = spawner("builtin");
    let a = sp
        .spawn(Role::Master, &dir.path().join("a"), &[])
        .await
        .unwrap();
    let b = sp
        .spawn(
            Role::Worker,
            &dir.path().join("b"),
            std::slice::from_ref(&a.addr),
        )
        .await
        .unwrap();
    let (a_api, _, a_ipfs) = ipfs_ready(&a).await;
    let (b_api, _, b_ipfs) = ipfs_ready(&b).await;
    let (ca, cb) = (IpfsClient::new(a_api), IpfsClient::new(b_api));
    // Nobody told the daemons about each other but the nodes.
    let linked = wait_for(LONG, || async {
        let pa = ca.swarm_peers().await.ok()?;
        let pb = cb.swarm_peers().await.ok()?;
        (pa.contains(&b_ipfs) || pb.contains(&a_ipfs)).then_some(())
    })
    .await;
    assert!(linked.is_some(), "the nodes never connected their daemons");
    // And each node sees the other's IPFS in its peer table.
    let view = b.status().await.unwrap();
    let peer = view.peers.iter().find(|p| p.peer_id == a.peer_id).unwrap();
    assert!(
        peer.ipfs
            .as_ref()
            .is_some_and(|i| i.ready && i.peer_id == a_ipfs)
    );

    let data: Vec<u8> = (0..700_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let added = ca.add("shared", data.clone()).await.unwrap();
    cb.pin_add(&added.hash).await.unwrap();
    assert!(cb.cat(&added.hash).await.unwrap() == data);
}

/// A stand-in for kubo's `ipfs` that records each call and runs the
/// built-in engine for `ipfs daemon` (no kubo can be installed here).
fn fake_kubo(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        r#"#!/bin/sh
echo "$*" >> "{log}"
case "$1" in
  init) echo '{{}}' > "$IPFS_PATH/config" ;;
  config) mkdir -p "$IPFS_PATH/fake" && printf '%s' "$4" > "$IPFS_PATH/fake/$3" ;;
  daemon)
    api=$(tr -d '"' < "$IPFS_PATH/fake/Addresses.API" | sed -E 's#/ip4/([^/]+)/tcp/([0-9]+)#\1:\2#')
    exec "{bin}" ipfs-daemon --repo "$IPFS_PATH" --api "$api" --swarm /ip4/127.0.0.1/tcp/0 ;;
  *) exit 1 ;;
esac
"#,
        log = dir.join("calls.log").display(),
        bin = BIN
    );
    let path = bin.join("ipfs");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[tokio::test]
async fn kubo_mode_initialises_once_applies_the_role_settings_and_runs_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_kubo(dir.path());
    let mut sp = spawner("auto");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    sp.env = vec![("PATH".into(), path)];
    let data = dir.path().join("node");
    let mut node = sp.spawn(Role::Master, &data, &[]).await.unwrap();
    ipfs_ready(&node).await;
    let s = node.status().await.unwrap();
    assert_eq!(s.ipfs.mode, Mode::Kubo);
    assert!(s.ipfs.why.contains("found kubo"), "{}", s.ipfs.why);
    node.terminate();
    assert!(node.wait_exit(LONG).await.is_some());

    // A second start finds the repo initialised.
    let mut node = sp.spawn(Role::Master, &data, &[]).await.unwrap();
    ipfs_ready(&node).await;
    node.terminate();
    assert!(node.wait_exit(LONG).await.is_some());

    let calls = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("init")).count(),
        1,
        "{calls}"
    );
    for expected in [
        "init --empty-repo",
        "config --json Routing.Type \"dhtserver\"",
        "config --json Datastore.StorageMax \"1TB\"",
        "config --json Datastore.StorageGCWatermark 80",
        "config --json Datastore.GCPeriod \"12h\"",
        "config --json Swarm.ConnMgr.HighWater 1000",
        "config --json Bootstrap []",
        "config --json Swarm.RelayClient.Enabled false",
        "daemon --migrate --enable-gc",
    ] {
        assert!(
            lines.contains(&expected),
            "missing `ipfs {expected}` in:\n{calls}"
        );
    }
}

#[tokio::test]
async fn an_external_daemon_is_watched_but_never_started_or_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let engine = EngineProc::start(BIN.as_ref(), &dir.path().join("ext"), None)
        .await
        .unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        "[ipfs]\nhealth_interval_ms = 200\nhealth_failures = 2\n",
    )
    .unwrap();
    let mut sp = Spawner::new(BIN);
    sp.ipfs = "external".into();
    sp.extra = vec!["--config".into(), cfg.display().to_string()];
    sp.env = vec![("IPFS_KIT_P2P_IPFS_API".into(), engine.api.clone())];
    let mut node = sp
        .spawn(Role::Worker, &dir.path().join("n"), &[])
        .await
        .unwrap();
    let (api, _, _) = ipfs_ready(&node).await;
    assert_eq!(api, engine.api);
    let s = node.status().await.unwrap();
    assert_eq!((s.ipfs.mode, s.ipfs.pid), (Mode::External, None));

    node.terminate();
    assert!(node.wait_exit(LONG).await.is_some());
    assert!(
        engine.client().id().await.is_ok(),
        "the node stopped a daemon it does not own"
    );
}
