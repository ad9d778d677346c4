//! The replicated pinset with real node processes: writes through any
//! master or worker are acknowledged once durable on two and reach every
//! node (leechers included, read-only); bad input is refused before
//! anything is stored; acknowledged pins survive a SIGKILL of the writer in
//! the middle of a burst; a large pinset reaches a joining node; a node
//! alone refuses writes until its dead members are removed.

use std::collections::BTreeSet;
use std::time::Duration;

use ipfs_kit_p2p::api::pins::PinRequest;
use ipfs_kit_p2p::role::Role;
use testkit::{NodeProc, Spawner, cid_of, prefill_pinset, start_cluster, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");
const LONG: Duration = Duration::from_secs(60);

fn cid(n: u64) -> String {
    cid_of(n)
}

fn req(cid: String) -> PinRequest {
    PinRequest {
        cid,
        replication_min: None,
        replication_max: None,
        name: None,
        peers: None,
    }
}

async fn cluster(dir: &std::path::Path, roles: &[Role]) -> Vec<NodeProc> {
    start_cluster(&Spawner::new(BIN), dir, roles, LONG)
        .await
        .unwrap()
}

async fn pinset_of(n: &NodeProc) -> BTreeSet<String> {
    n.client
        .pins()
        .await
        .map(|(p, _)| p.into_iter().map(|p| p.cid).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn writes_through_any_node_reach_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path(), &[Role::Master, Role::Worker, Role::Leecher]).await;
    let (worker, leecher) = (&nodes[1], &nodes[2]);
    let want: BTreeSet<String> = (0..20).map(cid).collect();
    for c in &want {
        let (view, _) = worker
            .client
            .pin_add(&req(c.clone()))
            .await
            .expect("pin through a worker");
        assert_eq!(
            (view.replication_min, view.replication_max),
            (2, 3),
            "config defaults"
        );
        assert_eq!(view.copies, Some(2), "durable on the worker and the master");
    }
    for n in &nodes {
        let got = wait_for(LONG, || async {
            Some(pinset_of(n).await).filter(|p| *p == want)
        })
        .await;
        assert!(got.is_some(), "{:?} never held the whole pinset", n.role);
    }
    // A leecher reads but does not write.
    let refused = leecher
        .client
        .pin_add(&req(cid(99)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("403") && refused.contains("read-only"),
        "{refused}"
    );
    // Bad input is refused before anything is stored.
    for bad in ["not-a-cid", "", "Qm123"] {
        let e = worker
            .client
            .pin_add(&req(bad.into()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("400") && e.contains("invalid CID"),
            "{bad:?}: {e}"
        );
    }
    let mut odd = req(cid(1));
    odd.replication_min = Some(5);
    odd.replication_max = Some(2);
    assert!(
        worker
            .client
            .pin_add(&odd)
            .await
            .unwrap_err()
            .to_string()
            .contains("400")
    );
    // Removal reaches everyone too.
    worker.client.pin_rm(&cid(3)).await.unwrap();
    let mut less = want.clone();
    less.remove(&cid(3));
    for n in &nodes {
        let got = wait_for(LONG, || async {
            Some(pinset_of(n).await).filter(|p| *p == less)
        })
        .await;
        assert!(got.is_some(), "{:?} kept a removed pin", n.role);
    }
    let one = worker.client.pin(&cid(4)).await.unwrap().0;
    assert_eq!(one.cid, cid(4));
    assert!(
        worker
            .client
            .pin(&cid(3))
            .await
            .unwrap_err()
            .to_string()
            .contains("404")
    );
}

/// Every acknowledged write is durable on two masters or workers, so a
/// SIGKILL of the node taking the writes, in the middle of a burst, loses
/// none of them: the survivors hold every one.
#[tokio::test]
async fn removals_are_collected_on_every_node_once_every_member_has_seen_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fast-sync.toml");
    std::fs::write(
        &cfg,
        "[pins]\nsync_every_secs = 1\nremoval_horizon_secs = 1\n",
    )
    .unwrap();
    let mut sp = Spawner::new(BIN);
    sp.extra = vec!["--config".into(), cfg.display().to_string()];
    let nodes = start_cluster(
        &sp,
        dir.path(),
        &[Role::Master, Role::Worker, Role::Leecher],
        LONG,
    )
    .await
    .unwrap();
    let worker = &nodes[1];
    for n in 0..5 {
        worker.client.pin_add(&req(cid(n))).await.unwrap();
    }
    for n in 1..5 {
        worker.client.pin_rm(&cid(n)).await.unwrap();
    }
    let want = BTreeSet::from([cid(0)]);
    // Every node, the leecher included, ends with the one pin left and no
    // tombstone (each removal seen by both members, then dropped).
    for n in &nodes {
        let done = wait_for(LONG, || async {
            let p = n.client.status().await.ok()?.0.pinset;
            (p.tombstones == 0 && p.pins == 1 && pinset_of(n).await == want).then_some(())
        })
        .await;
        let p = n.client.status().await.unwrap().0.pinset;
        assert!(
            done.is_some(),
            "{:?} still keeps {} removals (waiting for {:?})",
            n.role,
            p.tombstones,
            p.collect_waits_for
        );
    }
    // A removed item may be pinned again; an older change of it cannot
    // come back (every node has seen the removals): the pinset stays.
    worker.client.pin_add(&req(cid(2))).await.unwrap();
    let want = BTreeSet::from([cid(0), cid(2)]);
    for n in &nodes {
        let got = wait_for(LONG, || async {
            Some(pinset_of(n).await).filter(|p| *p == want)
        })
        .await;
        assert!(got.is_some(), "{:?} never held the pin made again", n.role);
    }
}

#[tokio::test]
async fn acknowledged_pins_survive_a_sigkill_of_the_writer_mid_burst() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), &[Role::Master, Role::Master, Role::Worker]).await;
    let client = nodes[0].client.clone();
    let burst = tokio::spawn(async move {
        let mut acked = Vec::new();
        for n in 0..400u64 {
            match client.pin_add(&req(cid(n))).await {
                Ok((view, _)) => {
                    assert!(
                        view.copies >= Some(2),
                        "acknowledged with {:?} copies",
                        view.copies
                    );
                    acked.push(cid(n));
                }
                // The writer died: nothing after this is acknowledged.
                Err(_) => break,
            }
        }
        acked
    });
    // The client writes one at a time, so once 41 have reached a peer the
    // 40th was acknowledged (the 41st may be stored without its answer).
    wait_for(LONG, || async {
        (pinset_of(&nodes[1]).await.len() >= 41).then_some(())
    })
    .await
    .expect("writes land");
    nodes[0].kill();
    let acked = burst.await.unwrap();
    assert!(acked.len() >= 40, "{} acknowledged", acked.len());
    // Each survivor ends with every acknowledged pin (durable on one of
    // them at least, spread to the other by anti-entropy).
    for n in &nodes[1..] {
        let held = wait_for(LONG, || async {
            let held = pinset_of(n).await;
            acked.iter().all(|c| held.contains(c)).then_some(held)
        })
        .await;
        if held.is_none() {
            let held = pinset_of(n).await;
            let lost: Vec<&String> = acked.iter().filter(|c| !held.contains(*c)).collect();
            panic!(
                "{} acknowledged pins missing on {:?}: {lost:?}",
                lost.len(),
                n.role
            );
        }
    }
}

/// More pins than one anti-entropy page holds, many times over.
const LARGE: u64 = 120_000;

#[tokio::test]
async fn a_node_joining_a_large_pinset_syncs_it_then_takes_writes() {
    let dir = tempfile::tempdir().unwrap();
    let sp = Spawner::new(BIN);
    let first_dir = dir.path().join("large");
    std::fs::create_dir_all(&first_dir).unwrap();
    prefill_pinset(&first_dir.join("pinset.redb"), LARGE).unwrap();
    let first = sp.spawn(Role::Master, &first_dir, &[]).await.unwrap();
    let joiner = sp
        .spawn(
            Role::Worker,
            &dir.path().join("joiner"),
            std::slice::from_ref(&first.addr),
        )
        .await
        .unwrap();
    let target = first.status().await.unwrap().pinset.digest;
    let s = wait_for(LONG, || async {
        let s = joiner.status().await?;
        (s.pinset.digest == target).then_some(s)
    })
    .await
    .expect("the joiner syncs");
    assert_eq!(s.pinset.pins, LARGE, "{:?}", s.pinset);
    assert_eq!(pinset_of(&joiner).await.len() as u64, LARGE);
    // Paged listing agrees with the streamed one.
    let page: Vec<_> = joiner
        .client
        .pins()
        .await
        .unwrap()
        .0
        .into_iter()
        .take(3)
        .collect();
    assert_eq!(page.len(), 3);
    // A write through the joiner lands on both, with two copies.
    let (w, _) = joiner.client.pin_add(&req(cid(LARGE + 1))).await.unwrap();
    assert_eq!(w.copies, Some(2));
    for n in [&first, &joiner] {
        wait_for(LONG, || async {
            n.client.pin(&cid(LARGE + 1)).await.ok().map(drop)
        })
        .await
        .expect("the new pin on every node");
    }
}

fn signal(n: &NodeProc, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid, with a valid signal number.
    unsafe {
        libc::kill(n.pid() as libc::pid_t, sig);
    }
}

/// A node whose two fellow members are gone refuses writes (it would be
/// the only copy) until an operator removes them; then it writes alone
/// (saying so), and when the two return on their old data every node ends
/// with both its pins and theirs.
#[tokio::test]
async fn a_node_alone_refuses_writes_until_members_are_removed_and_all_converge_after() {
    let dir = tempfile::tempdir().unwrap();
    let sp = Spawner::new(BIN);
    let mut nodes = cluster(dir.path(), &[Role::Master, Role::Master, Role::Master]).await;
    signal(&nodes[2], libc::SIGSTOP);
    let kept: BTreeSet<String> = (0..10).map(cid).collect();
    for c in &kept {
        let (w, _) = nodes[0]
            .client
            .pin_add(&req(c.clone()))
            .await
            .expect("durable on two");
        assert_eq!(w.copies, Some(2));
    }
    nodes[0].kill();
    nodes[1].kill();
    signal(&nodes[2], libc::SIGCONT);
    let survivor = &nodes[2];
    // Alone, but it knows two members: nothing is stored, 503 says why.
    let refused = wait_for(LONG, || async {
        match survivor.client.pin_add(&req(cid(100))).await {
            Err(e) if e.to_string().contains("503") => Some(e.to_string()),
            _ => None,
        }
    })
    .await
    .expect("writes refused while alone");
    assert!(refused.contains("copies"), "{refused}");
    for n in [&nodes[0], &nodes[1]] {
        survivor.client.remove_member(&n.peer_id).await.unwrap();
    }
    let later: BTreeSet<String> = (100..110).map(cid).collect();
    for c in &later {
        let (w, _) = survivor.client.pin_add(&req(c.clone())).await.unwrap();
        assert_eq!(w.copies, Some(1), "alone, and it says so");
    }
    assert!(pinset_of(survivor).await.is_disjoint(&kept));

    // The two return on their old data.
    let boot = [survivor.addr.clone()];
    for i in [0, 1] {
        let d = nodes[i].dir.clone();
        nodes[i] = sp.spawn(Role::Master, &d, &boot).await.unwrap();
    }
    let want: BTreeSet<String> = kept.union(&later).cloned().collect();
    let all: Vec<&NodeProc> = nodes.iter().collect();
    let merged = wait_for(LONG, || async {
        for n in &all {
            if pinset_of(n).await != want {
                return None;
            }
        }
        Some(())
    })
    .await;
    if merged.is_none() {
        let mut seen = Vec::new();
        for n in &all {
            seen.push((n.status().await.map(|s| s.pinset), pinset_of(n).await.len()));
        }
        panic!("the pinsets never merged: {seen:?}");
    }
}

/// A SIGTERMed node waits for its pinset tasks to close their databases,
/// so the next start opens them as they are; after a SIGKILL, redb checks
/// the file first (and says so), and nothing committed is lost either way.
#[tokio::test]
async fn a_stopped_node_closes_its_pinset_cleanly_a_killed_one_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut sp = Spawner::new(BIN);
    sp.log_dir = Some(logs.clone());
    let data = dir.path().join("n");
    let log = logs.join("n.log");
    let unclean = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("was not closed cleanly")
            .count()
    };
    let start = || async { sp.spawn(Role::Master, &data, &[]).await.unwrap() };
    let holds_it = |n: &NodeProc| {
        let client = n.client.clone();
        async move { wait_for(LONG, || async { client.pin(&cid(1)).await.ok().map(drop) }).await }
    };

    let mut node = start().await;
    wait_for(LONG, || async {
        node.client.pin_add(&req(cid(1))).await.ok()
    })
    .await
    .expect("a pin committed");
    node.terminate();
    node.wait_exit(LONG).await.expect("a SIGTERMed node exits");
    let mut node = start().await;
    holds_it(&node).await.expect("the pin survives a stop");
    assert_eq!(
        unclean(),
        0,
        "a stopped node left its pinset unclosed: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    node.kill();
    let node = start().await;
    holds_it(&node).await.expect("the pin survives a SIGKILL");
    assert_eq!(
        unclean(),
        1,
        "after a SIGKILL the file is checked, and the log says so"
    );
}
