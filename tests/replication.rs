//! Replication with real node processes, each running the built-in IPFS
//! engine: the leader keeps every item on exactly its replication factor of
//! masters and workers (never a leecher) as their own IPFS `pin/ls` says;
//! `pin rm` unpins it from every holder; acknowledged pins survive the
//! leader's SIGKILL mid-burst and reach their factor; a SIGKILLed holder's
//! items get new copies after the grace period; pins allocated to a peer
//! list stay on its members and follow it when it changes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use ipfs_kit_p2p::api::pins::PinRequest;
use ipfs_kit_p2p::ipfs_rpc::IpfsClient;
use ipfs_kit_p2p::role::Role;
use testkit::{
    NodeProc, Spawner, agreed_leader, ipfs_of, pinned_sets, start_cluster, wait_for,
    wait_ipfs_everywhere,
};

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");
const LONG: Duration = Duration::from_secs(120);

fn spawner(dir: &Path, pins: &str) -> Spawner {
    let cfg = dir.join("node.toml");
    std::fs::write(&cfg, format!("[pins]\n{pins}\n")).unwrap();
    let mut s = Spawner::new(BIN);
    s.ipfs = "builtin".into();
    s.extra = vec!["--config".into(), cfg.display().to_string()];
    if let Ok(logs) = std::env::var("TEST_LOG_DIR") {
        s.log_dir = Some(logs.into());
    }
    s
}

async fn cluster(sp: &Spawner, dir: &Path, roles: &[Role]) -> Vec<NodeProc> {
    let nodes = start_cluster(sp, dir, roles, LONG).await.unwrap();
    let all: Vec<&NodeProc> = nodes.iter().collect();
    wait_ipfs_everywhere(&all, LONG)
        .await
        .expect("every IPFS daemon ready");
    nodes
}

async fn ipfs(n: &NodeProc) -> IpfsClient {
    ipfs_of(n).await.expect("the node and its IPFS API answer")
}

/// Per node (by index), what its IPFS has pinned recursively.
async fn pinned_by(nodes: &[(usize, &NodeProc)]) -> Option<BTreeMap<usize, BTreeSet<String>>> {
    let procs: Vec<&NodeProc> = nodes.iter().map(|(_, n)| *n).collect();
    let sets = pinned_sets(&procs).await?;
    Some(nodes.iter().map(|(i, _)| *i).zip(sets).collect())
}

/// How many of the nodes pin each CID.
fn copies(pinned: &BTreeMap<usize, BTreeSet<String>>, cid: &str) -> usize {
    pinned.values().filter(|p| p.contains(cid)).count()
}

fn req(cid: &str, n: Option<u8>) -> PinRequest {
    PinRequest {
        cid: cid.into(),
        replication_min: n,
        replication_max: n,
        name: None,
        peers: None,
    }
}

/// Distinct small files added to `n`'s IPFS without pinning them there.
async fn content(n: &NodeProc, tag: &str, count: usize) -> Vec<String> {
    let ipfs = ipfs(n).await;
    let mut cids = Vec::new();
    for i in 0..count {
        let data = format!("{tag} item {i}\n").into_bytes();
        cids.push(ipfs.add_unpinned("item", data).await.unwrap().hash);
    }
    cids
}

#[tokio::test]
async fn five_nodes_keep_every_item_on_exactly_its_factor_of_eligible_holders() {
    let dir = tempfile::tempdir().unwrap();
    let sp = spawner(dir.path(), "replication_min = 2\nreplication_max = 2");
    use Role::*;
    let nodes = cluster(&sp, dir.path(), &[Master, Worker, Worker, Worker, Leecher]).await;
    let leecher = &nodes[4];
    let eligible: Vec<(usize, &NodeProc)> = nodes.iter().enumerate().take(4).collect();

    // The content lives, unpinned, on the leecher's IPFS; holders fetch it.
    let cids = content(leecher, "five", 100).await;
    for c in &cids {
        nodes[1]
            .client
            .pin_add(&req(c, None))
            .await
            .expect("pin via a worker");
    }
    let converged = wait_for(LONG, || async {
        let pinned = pinned_by(&eligible).await?;
        cids.iter()
            .all(|c| copies(&pinned, c) == 2)
            .then_some(pinned)
    })
    .await;
    let pinned = converged.expect("every item pinned on exactly 2 eligible nodes' IPFS");
    let load: Vec<usize> = pinned.values().map(|p| p.len()).collect();
    assert!(load.iter().all(|n| *n >= 25), "load not spread: {load:?}");
    let on_leecher = ipfs(leecher).await.pin_ls().await.unwrap();
    assert!(on_leecher.is_empty(), "the leecher pins {on_leecher:?}");

    // The leader's view, read through the leecher: the same two holders.
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    for c in cids.iter().take(10) {
        let view = wait_for(LONG, || async {
            let (v, _) = leecher.client.pin(c).await.ok()?;
            let peers = v.peers?;
            (peers.values().filter(|s| s.state == "pinned").count() == 2).then_some(peers)
        })
        .await
        .expect("pin status shows two pinned holders");
        let from_api: BTreeSet<&str> = view.keys().map(String::as_str).collect();
        let from_ipfs: BTreeSet<&str> = pinned
            .iter()
            .filter(|(_, p)| p.contains(c))
            .map(|(i, _)| ids[*i].as_str())
            .collect();
        assert_eq!(from_api, from_ipfs, "{c}");
    }

    // `pin rm` of half: gone from every holder's IPFS, the rest untouched.
    let (gone, kept) = cids.split_at(50);
    for c in gone {
        nodes[0].client.pin_rm(c).await.expect("pin rm");
    }
    let cleaned = wait_for(LONG, || async {
        let pinned = pinned_by(&eligible).await?;
        let clean = gone.iter().all(|c| copies(&pinned, c) == 0);
        let intact = kept.iter().all(|c| copies(&pinned, c) == 2);
        (clean && intact).then_some(())
    })
    .await;
    assert!(cleaned.is_some(), "pin rm did not unpin from every holder");

    // The CLI: `pin add CID --wait` brings a removed item back to 2 copies.
    let out = tokio::process::Command::new(BIN)
        .args(["--api", nodes[1].client.addr(), "pin", "add", &gone[0]])
        .args(["--wait", "--timeout", "120"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pin add --wait failed: {stdout}");
    assert!(stdout.contains("2/2 pinned"), "{stdout}");
    let pinned = pinned_by(&eligible).await.unwrap();
    assert_eq!(
        copies(&pinned, &gone[0]),
        2,
        "pin add --wait returned early"
    );

    // The CLI: `add FILE --replication 3 --wait` through a worker.
    let file = dir.path().join("dataset.bin");
    std::fs::write(&file, vec![7u8; 300_000]).unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["--api", nodes[2].client.addr(), "add"])
        .arg(&file)
        .args(["--replication", "3", "--wait", "--timeout", "120"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "add failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3/3 pinned"), "{stdout}");
    let cid = stdout
        .split_whitespace()
        .find(|w| w.starts_with("Qm"))
        .expect("the CID is printed")
        .to_string();
    let pinned = pinned_by(&eligible).await.unwrap();
    assert_eq!(
        copies(&pinned, &cid),
        3,
        "the added file is on exactly 3 nodes"
    );
}

#[tokio::test]
async fn acknowledged_pins_survive_the_leader_and_a_dead_holder_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let grace = 2;
    let sp = spawner(
        dir.path(),
        &format!("replication_min = 2\nreplication_max = 2\ngrace_secs = {grace}"),
    );
    use Role::*;
    let mut nodes = cluster(&sp, dir.path(), &[Master, Worker, Worker, Worker]).await;
    let cids = content(&nodes[3], "burst", 40).await;

    // A burst of pins through worker 3; the leader (the master) is
    // SIGKILLed after the 10th acknowledgement. Failed writes are retried
    // until acknowledged.
    let mut acked = Vec::new();
    let deadline = Instant::now() + LONG;
    for c in &cids {
        loop {
            match nodes[3].client.pin_add(&req(c, None)).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("retrying {c}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{c} never acknowledged: {e}"),
            }
        }
        acked.push(c.clone());
        if acked.len() == 10 {
            nodes[0].kill();
        }
    }
    let live: Vec<(usize, &NodeProc)> = nodes.iter().enumerate().skip(1).collect();
    let survivors: Vec<&NodeProc> = live.iter().map(|(_, n)| *n).collect();
    let (leader, _, _) = wait_for(LONG, || agreed_leader(&survivors, 2))
        .await
        .expect("a new leader");
    // In the new leader's committed pinset (a follower applies a commit
    // only with the leader's next message, so the leader is the one asked).
    let new_leader = live
        .iter()
        .map(|(_, n)| *n)
        .find(|n| n.peer_id == leader)
        .expect("the leader is a survivor");
    let survived = wait_for(LONG, || async {
        let (pins, _) = new_leader.client.pins().await.ok()?;
        let cids: BTreeSet<String> = pins.into_iter().map(|p| p.cid).collect();
        acked.iter().all(|c| cids.contains(c)).then_some(())
    })
    .await;
    assert!(
        survived.is_some(),
        "acknowledged pins missing from the new leader's pinset"
    );
    let replicated = wait_for(LONG, || async {
        let pinned = pinned_by(&live).await?;
        acked
            .iter()
            .all(|c| copies(&pinned, c) == 2)
            .then_some(pinned)
    })
    .await
    .expect("every acknowledged pin on 2 live nodes");

    // SIGKILL a holder that is not the leader; its items move within the
    // grace period plus the bound.
    let (victim, _) = live
        .iter()
        .find(|(i, n)| n.peer_id != leader && !replicated[i].is_empty())
        .copied()
        .expect("a holder besides the leader");
    let killed = Instant::now();
    nodes[victim].kill();
    let rest: Vec<(usize, &NodeProc)> = nodes
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(i, _)| *i != victim)
        .collect();
    let bound = Duration::from_secs(grace + 30);
    let healed = wait_for(bound, || async {
        let pinned = pinned_by(&rest).await?;
        acked.iter().all(|c| copies(&pinned, c) == 2).then_some(())
    })
    .await;
    assert!(
        healed.is_some(),
        "items of the dead holder not re-replicated within {bound:?}"
    );
    eprintln!("re-replicated in {:?} (grace {grace} s)", killed.elapsed());
}

#[tokio::test]
async fn a_holder_whose_ipfs_stays_down_has_its_copies_moved() {
    let dir = tempfile::tempdir().unwrap();
    let grace = 2;
    let pins = format!("replication_min = 2\nreplication_max = 2\ngrace_secs = {grace}");
    let sp = spawner(dir.path(), &pins);
    use Role::*;
    let mut nodes = cluster(&sp, dir.path(), &[Master, Worker, Worker]).await;
    // A fourth node whose IPFS is an external daemon the test controls.
    let engine = testkit::EngineProc::start(BIN.as_ref(), &dir.path().join("ext"), None)
        .await
        .unwrap();
    let cfg = dir.path().join("external.toml");
    std::fs::write(
        &cfg,
        format!("[pins]\n{pins}\n[ipfs]\nhealth_interval_ms = 200\nhealth_failures = 2\n"),
    )
    .unwrap();
    let mut ext = sp.clone();
    ext.ipfs = "external".into();
    ext.extra = vec!["--config".into(), cfg.display().to_string()];
    ext.env = vec![("IPFS_KIT_P2P_IPFS_API".into(), engine.api.clone())];
    let boot = vec![nodes[0].addr.clone()];
    nodes.push(
        ext.spawn(Worker, &dir.path().join("n3"), &boot)
            .await
            .unwrap(),
    );
    let all: Vec<&NodeProc> = nodes.iter().collect();
    wait_for(LONG, || agreed_leader(&all, 3))
        .await
        .expect("four nodes agree");
    wait_ipfs_everywhere(&all, LONG)
        .await
        .expect("every IPFS ready");

    let cids = content(&nodes[0], "down", 20).await;
    for c in &cids {
        nodes[1].client.pin_add(&req(c, None)).await.expect("pin");
    }
    let everyone: Vec<(usize, &NodeProc)> = nodes.iter().enumerate().collect();
    let pinned = wait_for(LONG, || async {
        let pinned = pinned_by(&everyone).await?;
        cids.iter()
            .all(|c| copies(&pinned, c) == 2)
            .then_some(pinned)
    })
    .await
    .expect("every item on 2 nodes");
    let on_ext = pinned[&3].len();
    assert!(
        on_ext > 0,
        "the external daemon's node holds nothing: {pinned:?}"
    );

    // Its IPFS goes away for good; the node itself stays up.
    engine.stop(Duration::from_secs(10)).await;
    let others: Vec<(usize, &NodeProc)> = everyone.iter().take(3).copied().collect();
    let bound = Duration::from_secs(grace + 30);
    let moved = wait_for(bound, || async {
        let pinned = pinned_by(&others).await?;
        cids.iter().all(|c| copies(&pinned, c) == 2).then_some(())
    })
    .await;
    assert!(
        moved.is_some(),
        "the {on_ext} copies on the node without IPFS were not moved within {bound:?}"
    );
    let s = nodes[3].status().await.expect("the node itself is up");
    assert!(!s.ipfs.is_ready(), "its IPFS is {}", s.ipfs.state);
}

/// A copy lost under a holder (unpinned in its IPFS behind the node's
/// back) is found by the holder's reconciliation, and its heartbeat tells
/// the leader at once: the leader restores it long before it would next
/// poll that idle holder (60 s). The leader's own holder is asked every
/// second while idle.
#[tokio::test]
async fn a_copy_lost_under_a_holder_is_restored_without_waiting_for_a_poll() {
    let dir = tempfile::tempdir().unwrap();
    let sp = spawner(
        dir.path(),
        "replication_min = 3\nreplication_max = 3\nreconcile_secs = 1",
    );
    use Role::*;
    let nodes = cluster(&sp, dir.path(), &[Master, Worker, Worker]).await;
    let all: Vec<&NodeProc> = nodes.iter().collect();
    let (leader, _, _) = wait_for(LONG, || agreed_leader(&all, 2))
        .await
        .expect("three nodes agree");
    let leader = nodes.iter().position(|n| n.peer_id == leader).unwrap();
    let follower = (leader + 1) % nodes.len();
    let cids = content(&nodes[0], "lost", 3).await;
    for c in &cids {
        nodes[1].client.pin_add(&req(c, None)).await.expect("pin");
    }
    let everyone: Vec<(usize, &NodeProc)> = nodes.iter().enumerate().collect();
    wait_for(LONG, || async {
        let pinned = pinned_by(&everyone).await?;
        cids.iter().all(|c| copies(&pinned, c) == 3).then_some(())
    })
    .await
    .expect("every item on all 3 nodes");

    let lost = [(follower, &cids[0]), (leader, &cids[1])];
    let removed = Instant::now();
    for (i, c) in lost {
        ipfs(&nodes[i])
            .await
            .pin_rm(c)
            .await
            .expect("pin rm behind the node's back");
    }
    // Half the idle poll: without the heartbeat's position, the follower's
    // loss would wait for a poll due about 60 s after the last one.
    let bound = Duration::from_secs(30);
    let restored = wait_for(bound, || async {
        let pinned = pinned_by(&everyone).await?;
        lost.iter()
            .all(|(i, c)| pinned[i].contains(*c))
            .then_some(())
    })
    .await;
    assert!(
        restored.is_some(),
        "the lost copies were not restored within {bound:?}"
    );
    eprintln!("restored in {:?}", removed.elapsed());
}

/// The same for a quiet follower, whose heartbeats come far apart (here
/// every 150 s): when its holder's position moves, its next heartbeat is
/// brought forward to within `heartbeat_interval_ms` (5 s), and the leader
/// restores the copy long before that follower's next poll (60 s) or its
/// next quiet heartbeat.
#[tokio::test]
async fn a_quiet_followers_lost_copy_reaches_the_leader_with_its_next_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        "[pins]\nreplication_min = 5\nreplication_max = 5\nreconcile_secs = 1\n\
         [election]\nquiet_heartbeat_per_member_ms = 30000\n",
    )
    .unwrap();
    let mut sp = Spawner::new(BIN);
    sp.ipfs = "builtin".into();
    sp.extra = vec!["--config".into(), cfg.display().to_string()];
    use Role::*;
    let nodes = cluster(&sp, dir.path(), &[Master, Worker, Worker, Worker, Worker]).await;
    let all: Vec<&NodeProc> = nodes.iter().collect();
    wait_for(LONG, || agreed_leader(&all, 4))
        .await
        .expect("five nodes agree");
    // The election ranks by role, then peer ID: the master leads, the 3
    // workers with the lowest IDs are its likely successors (heartbeats
    // every 5 s), and the last is a quiet follower.
    let quiet = (1..nodes.len())
        .max_by(|a, b| nodes[*a].peer_id.cmp(&nodes[*b].peer_id))
        .unwrap();
    let cids = content(&nodes[0], "quiet", 2).await;
    for c in &cids {
        nodes[1].client.pin_add(&req(c, None)).await.expect("pin");
    }
    let everyone: Vec<(usize, &NodeProc)> = nodes.iter().enumerate().collect();
    wait_for(LONG, || async {
        let pinned = pinned_by(&everyone).await?;
        cids.iter().all(|c| copies(&pinned, c) == 5).then_some(())
    })
    .await
    .expect("every item on all 5 nodes");
    // Its heartbeats are far apart now: the leader has not heard one for
    // longer than the likely successors' interval.
    let quiet_id = nodes[quiet].peer_id.clone();
    wait_for(LONG, || async {
        let peers = nodes[0].client.status().await.ok()?.0.peers;
        let p = peers.into_iter().find(|p| p.peer_id == quiet_id)?;
        (p.healthy && p.last_seen_ms > 8_000).then_some(())
    })
    .await
    .expect("the last worker heartbeats as a quiet follower");

    let removed = Instant::now();
    ipfs(&nodes[quiet])
        .await
        .pin_rm(&cids[0])
        .await
        .expect("pin rm behind the node's back");
    let bound = Duration::from_secs(30);
    let restored = wait_for(bound, || async {
        let pinned = pinned_by(&everyone).await?;
        pinned[&quiet].contains(&cids[0]).then_some(())
    })
    .await;
    assert!(
        restored.is_some(),
        "the quiet follower's lost copy was not restored within {bound:?}"
    );
    eprintln!("restored in {:?}", removed.elapsed());
}

/// Pins allocated to a peer list (`"peers": LIST`), with real IPFS: copies
/// go only to the list's members; when the list changes, copies move onto
/// it and off the nodes it no longer names; a pin naming an unknown list
/// gets no copies, and its status says why.
#[tokio::test]
async fn pins_allocated_to_a_peer_list_stay_on_its_members() {
    use reqwest::Method;
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let sp = spawner(dir.path(), "replication_min = 2\nreplication_max = 2");
    use Role::*;
    let nodes = cluster(&sp, dir.path(), &[Master, Worker, Worker, Worker]).await;
    let everyone: Vec<(usize, &NodeProc)> = nodes.iter().enumerate().collect();
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    let set_list = |members: Vec<String>| {
        let m = nodes[0].client.clone();
        async move {
            m.json(
                Method::PUT,
                "/v1/index/peers/gpu",
                Some(json!({ "peers": members })),
            )
            .await
            .expect("a master writes the peer list");
        }
    };
    set_list(vec![ids[2].clone(), ids[3].clone()]).await;

    let cids = content(&nodes[0], "allocated", 12).await;
    for c in &cids {
        let mut r = req(c, None);
        r.peers = Some("gpu".into());
        let (view, _) = nodes[1].client.pin_add(&r).await.expect("pin via a worker");
        assert_eq!(view.allocation.as_deref(), Some("gpu"));
    }
    let on = |pinned: &BTreeMap<usize, BTreeSet<String>>, want: [usize; 2]| {
        cids.iter()
            .all(|c| (0..nodes.len()).all(|i| pinned[&i].contains(c) == want.contains(&i)))
    };
    let placed = wait_for(LONG, || async {
        let pinned = pinned_by(&everyone).await?;
        on(&pinned, [2, 3]).then_some(())
    })
    .await;
    assert!(
        placed.is_some(),
        "items not on exactly the list's members: {:?}",
        pinned_by(&everyone).await
    );
    let (view, _) = nodes[0].client.pin(&cids[0]).await.unwrap();
    assert_eq!(view.allocation_warning, None);

    // An unknown list: no copies, and a warning naming the list.
    let stray = content(&nodes[0], "stray", 1).await.remove(0);
    let mut r = req(&stray, None);
    r.peers = Some("nobody".into());
    nodes[0]
        .client
        .pin_add(&r)
        .await
        .expect("pin naming an unknown list");
    let (view, _) = nodes[0].client.pin(&stray).await.unwrap();
    let warning = view.allocation_warning.unwrap_or_default();
    assert!(warning.contains("\"nobody\""), "{warning:?}");

    // The list changes: copies move onto node 1 and off node 3.
    set_list(vec![ids[1].clone(), ids[2].clone()]).await;
    let moved = wait_for(LONG, || async {
        let pinned = pinned_by(&everyone).await?;
        on(&pinned, [1, 2]).then_some(())
    })
    .await;
    assert!(
        moved.is_some(),
        "copies did not follow the list: {:?}",
        pinned_by(&everyone).await
    );

    // Planned alongside the listed items ever since: still nowhere.
    let pinned = pinned_by(&everyone).await.unwrap();
    assert!(pinned.values().all(|p| !p.contains(&stray)), "{pinned:?}");
}
