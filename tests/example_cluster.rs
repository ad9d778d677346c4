//! The practical cluster example (`examples/cluster`), run whole: five real
//! nodes with their built-in IPFS on loopback, every step of the walk
//! checked by the walk itself; here, what it measured and that it stopped
//! everything it started.

#[path = "../examples/cluster/nodes.rs"]
mod nodes;
#[path = "../examples/cluster/walk.rs"]
mod walk;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_walks_through_a_five_node_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let report = walk::run(walk::Options {
        bin: env!("CARGO_BIN_EXE_ipfs-kit-p2p").into(),
        dir: dir.clone(),
        base_port: 24100,
        keep: false,
    })
    .await
    .unwrap_or_else(|e| panic!("the walk stopped: {e}"));

    assert!(report.cid.starts_with("Qm"), "{report:?}");
    assert_eq!(report.holders_before.len(), 3, "{report:?}");
    assert!(
        report.holders_after.len() >= 3
            && !report.holders_after.iter().any(|h| h == "master-primary"),
        "{report:?}"
    );
    assert!(
        !report.holders_before.iter().any(|h| h == "leecher-gamma")
            && !report.holders_after.iter().any(|h| h == "leecher-gamma"),
        "a leecher never holds copies: {report:?}"
    );
    assert!(report.leecher_refusal.contains("403"), "{report:?}");
    assert_eq!(report.vector_hits, 2);
    assert_eq!(report.pinning_status, "pinned");
    assert!(report.metrics_lines > 50, "{report:?}");
    assert_eq!(report.stop_codes, vec![Some(0); 5], "{report:?}");
    assert!(!dir.exists(), "the walk removes its directories");
    println!(
        "failover {} ms, failback {} ms after the start",
        report.failover_ms, report.failback_ms
    );
}
