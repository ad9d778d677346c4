//! A node runs the `[[service]]` processes of its config under supervision,
//! shows them in its status, and stops them when it stops.

use std::time::Duration;

use ipfs_kit_p2p::role::Role;
use ipfs_kit_p2p::supervisor::State;
use testkit::{Spawner, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_start_with_the_node_show_in_status_and_stop_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("node.toml");
    std::fs::write(
        &cfg,
        r#"
[[service]]
name = "sidecar"
command = "sh"
args = ["-c", "echo sidecar up; exec sleep 1000"]
ready = { log = "sidecar up" }
grace_ms = 2000
"#,
    )
    .unwrap();
    let mut sp = Spawner::new(env!("CARGO_BIN_EXE_ipfs-kit-p2p"));
    sp.extra = vec!["--config".into(), cfg.to_str().unwrap().into()];
    let mut node = sp
        .spawn(Role::Worker, &tmp.path().join("n0"), &[])
        .await
        .unwrap();
    let ready = wait_for(Duration::from_secs(30), || async {
        let s = node.status().await?;
        s.services
            .into_iter()
            .find(|sv| sv.name == "sidecar" && sv.state == State::Ready)
    })
    .await
    .expect("the service becomes ready and shows in the status");
    let pid = ready.pid.expect("a pid") as i32;
    // SAFETY: signal 0 only checks the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0);

    node.terminate();
    let code = node
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("node stops");
    assert!(code.success(), "{code}");
    let gone = wait_for(Duration::from_secs(10), || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        // Gone, or a zombie waiting for init to reap it.
        let running =
            stat.is_some_and(|s| s.rfind(')').is_some_and(|i| !s[i + 2..].starts_with('Z')));
        (!running).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the service process outlived the node");
}
