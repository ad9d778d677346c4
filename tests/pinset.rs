//! The replicated pinset with real node processes: writes through any
//! eligible node are committed by the leader and reach every node (leechers
//! included, read-only); bad input is refused before anything is stored;
//! acknowledged pins survive a SIGKILL of the leader in the middle of a
//! burst of writes.

use std::collections::BTreeSet;
use std::time::Duration;

use ipfs_kit_p2p::api::pins::PinRequest;
use ipfs_kit_p2p::role::Role;
use ipfs_kit_p2p::testkit::{NodeProc, Spawner, agreed_leader, cid_of, start_cluster, wait_for};

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
