//! The replicated pinset with real node processes: writes through any
//! eligible node are committed by the leader and reach every node (leechers
//! included, read-only); bad input is refused before anything is stored;
//! acknowledged pins survive a SIGKILL of the leader in the middle of a
//! burst of writes.

use std::collections::BTreeSet;
use std::time::Duration;

use ipfs_kit_p2p::api::pins::PinRequest;
use ipfs_kit_p2p::role::Role;
use ipfs_kit_p2p::testkit::{
    NodeProc, Spawner, agreed_leader, cid_of, prefill_pinset, start_cluster, wait_for,
};

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
            .expect("pin through a follower");
        assert_eq!(
            (view.replication_min, view.replication_max),
            (2, 3),
            "config defaults"
        );
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

#[tokio::test]
async fn acknowledged_pins_survive_a_sigkill_of_the_leader_mid_burst() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path(), &[Role::Master, Role::Master, Role::Worker]).await;
    let all: Vec<&NodeProc> = nodes.iter().collect();
    let (leader, _, _) = agreed_leader(&all, 2).await.unwrap();
    let li = nodes.iter().position(|n| n.peer_id == leader).unwrap();
    let writer = (0..3).find(|i| *i != li).unwrap();
    let client = nodes[writer].client.clone();
    // Writes keep going through a surviving node while the leader dies.
    let burst = tokio::spawn(async move {
        let mut acked = Vec::new();
        for n in 0..150u64 {
            if client.pin_add(&req(cid(n))).await.is_ok() {
                acked.push(cid(n));
            }
        }
        acked
    });
    let landed = wait_for(LONG, || async {
        let n = pinset_of(&nodes[writer]).await.len();
        (n >= 30).then_some(n)
    })
    .await
    .expect("writes land");
    assert!(landed >= 30);
    nodes[li].kill();
    let acked = burst.await.unwrap();
    assert!(
        acked.len() > landed,
        "writes went on after the failover ({} acked)",
        acked.len()
    );
    let survivors: Vec<&NodeProc> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != li)
        .map(|(_, n)| n)
        .collect();
    let (new_leader, _, _) = wait_for(LONG, || agreed_leader(&survivors, 1))
        .await
        .expect("a new leader");
    let nl = survivors.iter().find(|n| n.peer_id == new_leader).unwrap();
    let held = pinset_of(nl).await;
    let lost: Vec<&String> = acked.iter().filter(|c| !held.contains(*c)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged pins lost: {lost:?}",
        lost.len()
    );
}

/// More committed pins than a follower is sent entry by entry
/// (`SNAPSHOT_LAG`), so a node without them pulls a snapshot.
const LARGE: u64 = ipfs_kit_p2p::pinset::actor::SNAPSHOT_LAG + 20_000;

async fn committed_beyond(n: &NodeProc, index: u64) -> Option<ipfs_kit_p2p::api::StatusView> {
    let s = n.status().await?;
    (s.pinset.commit > index).then_some(s)
}

/// A node of role `first` that starts with [`LARGE`] committed pins and
/// leads them alone, then a node of role `second`, with none, joining it.
async fn large_then_empty(
    dir: &std::path::Path,
    first: Role,
    second: Role,
) -> (NodeProc, NodeProc) {
    let sp = Spawner::new(BIN);
    let first_dir = dir.join("large");
    std::fs::create_dir_all(&first_dir).unwrap();
    prefill_pinset(&first_dir.join("pinset.redb"), LARGE, 1).unwrap();
    let a = sp.spawn(first, &first_dir, &[]).await.unwrap();
    // Leading: its barrier is committed on top.
    wait_for(LONG, || committed_beyond(&a, LARGE))
        .await
        .expect("the first node leads its pinset alone");
    let b = sp
        .spawn(second, &dir.join("empty"), std::slice::from_ref(&a.addr))
        .await
        .unwrap();
    (a, b)
}

#[tokio::test]
async fn a_late_joiner_pulls_a_snapshot_then_follows_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, joiner) = large_then_empty(dir.path(), Role::Master, Role::Worker).await;
    let target = leader.status().await.unwrap().pinset.commit;
    let s = wait_for(LONG, || async {
        let s = joiner.status().await?;
        (s.pinset.commit >= target).then_some(s)
    })
    .await
    .expect("the joiner catches up");
    assert!(
        s.pinset.base_index > 0,
        "the state came as a snapshot, not entry by entry: {:?}",
        s.pinset
    );
    assert_eq!(pinset_of(&joiner).await.len() as u64, LARGE);
    // Then it follows the log: a write through it lands on both.
    joiner.client.pin_add(&req(cid(LARGE + 1))).await.unwrap();
    for n in [&leader, &joiner] {
        wait_for(LONG, || async {
            n.client.pin(&cid(LARGE + 1)).await.ok().map(drop)
        })
        .await
        .expect("the new pin on every node");
    }
}

#[tokio::test]
async fn a_new_leader_far_behind_takes_a_snapshot_before_leading() {
    let dir = tempfile::tempdir().unwrap();
    // A worker holds the pinset; a master with none joins and outranks it.
    let (_worker, master) = large_then_empty(dir.path(), Role::Worker, Role::Master).await;
    let s = wait_for(LONG, || async {
        let s = committed_beyond(&master, LARGE).await?;
        s.leader
            .as_ref()
            .is_some_and(|l| l.peer_id == s.peer_id)
            .then_some(s)
    })
    .await
    .expect("the master leads with the whole pinset");
    assert!(s.pinset.base_index >= LARGE, "{:?}", s.pinset);
    assert_eq!(pinset_of(&master).await.len() as u64, LARGE);
}

fn signal(n: &NodeProc, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid, with a valid signal number.
    unsafe {
        libc::kill(n.pid() as libc::pid_t, sig);
    }
}

/// The leader and the one follower that holds some acknowledged pins die
/// together, while the third node (stopped meanwhile) goes on without
/// them and takes writes of its own. When the two return, the pins only
/// they kept are written again: every node ends with both sets.
#[tokio::test]
async fn pins_only_returning_nodes_kept_are_merged_back() {
    let dir = tempfile::tempdir().unwrap();
    let sp = Spawner::new(BIN);
    let mut nodes = cluster(dir.path(), &[Role::Master, Role::Master, Role::Master]).await;
    let all: Vec<&NodeProc> = nodes.iter().collect();
    let (leader, _, _) = agreed_leader(&all, 2).await.unwrap();
    let li = nodes.iter().position(|n| n.peer_id == leader).unwrap();
    let (fi, si) = ((li + 1) % 3, (li + 2) % 3);

    signal(&nodes[si], libc::SIGSTOP);
    let kept: BTreeSet<String> = (0..10).map(cid).collect();
    for c in &kept {
        nodes[li]
            .client
            .pin_add(&req(c.clone()))
            .await
            .expect("committed on the leader and the live follower");
    }
    nodes[li].kill();
    nodes[fi].kill();
    signal(&nodes[si], libc::SIGCONT);

    // The survivor leads alone and takes writes the others never saw.
    let survivor = &nodes[si];
    wait_for(LONG, || async {
        let s = survivor.status().await?;
        s.leader
            .as_ref()
            .is_some_and(|l| l.peer_id == s.peer_id)
            .then_some(())
    })
    .await
    .expect("the survivor leads");
    let later: BTreeSet<String> = (100..110).map(cid).collect();
    for c in &later {
        wait_for(LONG, || async {
            survivor.client.pin_add(&req(c.clone())).await.ok()
        })
        .await
        .expect("the survivor takes writes alone");
    }
    let lost: Vec<&String> = kept.iter().filter(|c| later.contains(*c)).collect();
    assert!(lost.is_empty());
    assert!(pinset_of(survivor).await.is_disjoint(&kept));

    // The two return on their old data.
    let boot = [survivor.addr.clone()];
    for i in [li, fi] {
        let d = nodes[i].dir.clone();
        nodes[i] = sp.spawn(Role::Master, &d, &boot).await.unwrap();
    }
    let want: BTreeSet<String> = kept.union(&later).cloned().collect();
    let all: Vec<&NodeProc> = nodes.iter().collect();
    let merged = wait_for(LONG, || async {
        agreed_leader(&all, 2).await?;
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
