//! The holder against a real IPFS engine: orders count only from the
//! leader this node follows, at its epoch. A stale leader's orders (a
//! replayed order of an old epoch), a second leader at the same epoch, and
//! strangers change nothing, neither in the holder's state nor in IPFS,
//! while the followed leader's do; the highest epoch survives a restart;
//! leechers take no orders; a pin the user made before the cluster asked
//! is reported but never unpinned by the cluster, even when a pin and an
//! unpin of it come in one batch.

use std::sync::Arc;
use std::time::Duration;

use ipfs_kit_p2p::ipfs::{IpfsStatus, Mode};
use ipfs_kit_p2p::pinset::held::HeldStore;
use ipfs_kit_p2p::pinset::holder::{self, HolderHandle, HolderSettings};
use ipfs_kit_p2p::role::Role;
use ipfs_kit_p2p::view::{ClusterView, PeerView};
use ipfs_kit_p2p::wire::{HeldState, HolderOrder, HolderRequest, HolderResponse};
use testkit::{EngineProc, wait_for};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");

fn ipfs_status(api: &str) -> IpfsStatus {
    IpfsStatus {
        mode: Mode::Builtin,
        why: "test".into(),
        state: "ready".into(),
        api: Some(api.into()),
        pid: None,
        restarts: 0,
        last_error: None,
        peer_id: None,
        addrs: Vec::new(),
    }
}

/// This node ("me", a worker) follows leader "L" at `epoch`; "old" is
/// another live master.
fn view(epoch: u64) -> ClusterView {
    let peer = |id: &str| PeerView {
        id: id.into(),
        role: Role::Master,
        ipfs: None,
        disk_free: 0,
        pinset: None,
        held: None,
    };
    ClusterView {
        me: "me".into(),
        role: Some(Role::Worker),
        leader: Some(("L".into(), epoch)),
        peers: vec![peer("L"), peer("old")],
        ..ClusterView::default()
    }
}

fn settings(role: Role) -> HolderSettings {
    HolderSettings {
        role,
        concurrency: 4,
        pin_timeout: Duration::from_secs(30),
        reconcile: Duration::from_secs(3600),
    }
}

fn orders(epoch: u64, seq: u64, cid: &str, pin: bool) -> HolderRequest {
    HolderRequest::Orders {
        epoch,
        seq,
        orders: vec![HolderOrder {
            cid: cid.into(),
            pin,
        }],
        providers: Vec::new(),
    }
}

async fn state_of(h: &HolderHandle, cid: &str) -> Option<HeldState> {
    match h
        .request(
            "L".into(),
            HolderRequest::States {
                session: 0,
                cursor: 0,
            },
        )
        .await
        .unwrap()
    {
        HolderResponse::States { items, .. } => {
            items.into_iter().find(|(c, _)| c == cid).map(|(_, s)| s)
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn refused(r: HolderResponse) -> String {
    match r {
        HolderResponse::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stale_leader_cannot_change_anything() {
    let dir = tempfile::tempdir().unwrap();
    let engine = EngineProc::start(BIN.as_ref(), &dir.path().join("repo"), None)
        .await
        .unwrap();
    let ipfs = engine.client();
    let cid = ipfs
        .add_unpinned("x", b"held by the holder\n".to_vec())
        .await
        .unwrap()
        .hash;
    let (_ipfs_tx, ipfs_rx) = watch::channel(ipfs_status(&engine.api));
    let (view_tx, view_rx) = watch::channel(view(5));
    let held = dir.path().join("held.redb");
    let stop = CancellationToken::new();
    let (h, _) = holder::spawn(
        Arc::new(HeldStore::open(&held).unwrap()),
        settings(Role::Worker),
        ipfs_rx.clone(),
        view_rx.clone(),
        no_removals(),
        stop.clone(),
    )
    .unwrap();
    let pinned = || async { ipfs.pin_ls().await.unwrap().contains(&cid) };

    // Epoch 4 while the node follows L at epoch 5: refused, from the old
    // leader or from L itself; so is another master claiming epoch 5.
    // Nothing is queued or pinned.
    let why = refused(
        h.request("old".into(), orders(4, 1, &cid, true))
            .await
            .unwrap(),
    );
    assert!(why.contains("not the leader this node follows"), "{why}");
    let why = refused(
        h.request("L".into(), orders(4, 1, &cid, true))
            .await
            .unwrap(),
    );
    assert!(why.contains("epoch 4"), "{why}");
    let why = refused(
        h.request("old".into(), orders(5, 1, &cid, true))
            .await
            .unwrap(),
    );
    assert!(why.contains("not the leader this node follows"), "{why}");
    assert_eq!(state_of(&h, &cid).await, None);
    assert!(!pinned().await);

    // The current leader's order is carried out (the positive control).
    let taken = h
        .request("L".into(), orders(5, 1, &cid, true))
        .await
        .unwrap();
    assert_eq!(taken, HolderResponse::Taken);
    wait_for(Duration::from_secs(30), || async {
        (state_of(&h, &cid).await == Some(HeldState::Pinned)).then_some(())
    })
    .await
    .expect("pinned on the leader's order");
    assert!(pinned().await);

    // A replayed unpin from epoch 4: refused, still pinned.
    let why = refused(
        h.request("old".into(), orders(4, 9, &cid, false))
            .await
            .unwrap(),
    );
    assert!(why.contains("not the leader"), "{why}");
    assert_eq!(state_of(&h, &cid).await, Some(HeldState::Pinned));
    assert!(pinned().await);

    // A duplicated batch (same epoch and sequence) is ignored, not re-run.
    let dup = h
        .request("L".into(), orders(5, 1, &cid, false))
        .await
        .unwrap();
    assert_eq!(dup, HolderResponse::Taken);
    assert_eq!(state_of(&h, &cid).await, Some(HeldState::Pinned));

    // A new leader at epoch 7; then the holder restarts while its view
    // still says 5 (no heartbeat yet): epoch 6 is refused all the same.
    view_tx.send(view(7)).unwrap();
    let taken = h
        .request("L".into(), orders(7, 1, &cid, true))
        .await
        .unwrap();
    assert_eq!(taken, HolderResponse::Taken);
    stop.cancel();
    let (_view_tx2, view_rx2) = watch::channel(view(5));
    let stop2 = CancellationToken::new();
    let h2 = wait_for(Duration::from_secs(10), || {
        let r = HeldStore::open(&held).ok().and_then(|s| {
            holder::spawn(
                Arc::new(s),
                settings(Role::Worker),
                ipfs_rx.clone(),
                view_rx2.clone(),
                no_removals(),
                stop2.clone(),
            )
            .ok()
            .map(|(h, _)| h)
        });
        async move { r }
    })
    .await
    .expect("the holder restarts on its database");
    let why = refused(
        h2.request("L".into(), orders(5, 2, &cid, false))
            .await
            .unwrap(),
    );
    assert!(why.contains("below 7 seen"), "{why}");
    assert_eq!(
        state_of(&h2, &cid).await,
        Some(HeldState::Pinned),
        "held across the restart"
    );
    assert!(pinned().await);

    // Strangers and leechers take no orders.
    let why = refused(
        h2.request("stranger".into(), orders(9, 1, &cid, false))
            .await
            .unwrap(),
    );
    assert!(why.contains("not the leader this node follows"), "{why}");
    let (_v, view_rx3) = watch::channel(view(5));
    let (leecher, _) = holder::spawn(
        Arc::new(HeldStore::open(&dir.path().join("leecher.redb")).unwrap()),
        settings(Role::Leecher),
        ipfs_rx.clone(),
        view_rx3,
        no_removals(),
        stop2.clone(),
    )
    .unwrap();
    let why = refused(
        leecher
            .request("L".into(), orders(5, 1, &cid, true))
            .await
            .unwrap(),
    );
    assert!(why.contains("read-only"), "{why}");
    stop2.cancel();
    engine.stop(Duration::from_secs(10)).await;
}

/// A CID the user pinned on this IPFS before the cluster asked is reported
/// pinned (it is a copy) but the cluster's unpin leaves it pinned.
#[tokio::test]
async fn a_users_own_pin_is_reported_but_never_unpinned() {
    let dir = tempfile::tempdir().unwrap();
    let engine = EngineProc::start(BIN.as_ref(), &dir.path().join("repo"), None)
        .await
        .unwrap();
    let ipfs = engine.client();
    let users = ipfs
        .add("u", b"the user's own\n".to_vec())
        .await
        .unwrap()
        .hash;
    let ours = ipfs
        .add_unpinned("c", b"the cluster's\n".to_vec())
        .await
        .unwrap()
        .hash;
    let (_ipfs_tx, ipfs_rx) = watch::channel(ipfs_status(&engine.api));
    let (_view_tx, view_rx) = watch::channel(view(5));
    let stop = CancellationToken::new();
    let (removed_tx, removed_rx) = mpsc::channel(4);
    let (h, _) = holder::spawn(
        Arc::new(HeldStore::open(&dir.path().join("held.redb")).unwrap()),
        settings(Role::Worker),
        ipfs_rx,
        view_rx,
        removed_rx,
        stop.clone(),
    )
    .unwrap();
    let both = HolderRequest::Orders {
        epoch: 5,
        seq: 1,
        orders: vec![
            HolderOrder {
                cid: users.clone(),
                pin: true,
            },
            HolderOrder {
                cid: ours.clone(),
                pin: true,
            },
        ],
        providers: Vec::new(),
    };
    assert_eq!(
        h.request("L".into(), both).await.unwrap(),
        HolderResponse::Taken
    );
    for c in [&users, &ours] {
        wait_for(Duration::from_secs(30), || async {
            (state_of(&h, c).await == Some(HeldState::Pinned)).then_some(())
        })
        .await
        .expect("reported pinned");
    }
    let unpin = HolderRequest::Orders {
        epoch: 5,
        seq: 2,
        orders: vec![
            HolderOrder {
                cid: users.clone(),
                pin: false,
            },
            HolderOrder {
                cid: ours.clone(),
                pin: false,
            },
        ],
        providers: Vec::new(),
    };
    assert_eq!(
        h.request("L".into(), unpin).await.unwrap(),
        HolderResponse::Taken
    );
    for c in [&users, &ours] {
        wait_for(Duration::from_secs(30), || async {
            (state_of(&h, c).await.is_none()).then_some(())
        })
        .await
        .expect("no longer a cluster copy");
    }
    let pins = ipfs.pin_ls().await.unwrap();
    assert!(pins.contains(&users), "the user's pin was removed");
    assert!(!pins.contains(&ours), "the cluster's own pin stayed");
    // A pin and an unpin of the user's item in one batch, before the pin
    // runs: nothing is called for it (the simulator found that this once
    // called pin/rm). A later batch pins ours again; once that is done,
    // anything called for the first batch has been called before it.
    let order = |cid: &String, pin| HolderOrder {
        cid: cid.clone(),
        pin,
    };
    let flip = HolderRequest::Orders {
        epoch: 5,
        seq: 3,
        orders: vec![order(&users, true), order(&users, false)],
        providers: Vec::new(),
    };
    assert_eq!(
        h.request("L".into(), flip).await.unwrap(),
        HolderResponse::Taken
    );
    let again = HolderRequest::Orders {
        epoch: 5,
        seq: 4,
        orders: vec![order(&ours, true)],
        providers: Vec::new(),
    };
    assert_eq!(
        h.request("L".into(), again).await.unwrap(),
        HolderResponse::Taken
    );
    wait_for(Duration::from_secs(30), || async {
        (state_of(&h, &ours).await == Some(HeldState::Pinned)).then_some(())
    })
    .await
    .expect("ours pinned again");
    let pins = ipfs.pin_ls().await.unwrap();
    assert!(pins.contains(&users), "the user's pin was removed");
    // The node's replica is about to collect removals of both (the leader
    // may no longer know them): ours is unpinned, the user's stays.
    removed_tx
        .send(vec![users.clone(), ours.clone()])
        .await
        .unwrap();
    wait_for(Duration::from_secs(30), || async {
        (state_of(&h, &ours).await.is_none()).then_some(())
    })
    .await
    .expect("ours unpinned on its removal");
    let pins = ipfs.pin_ls().await.unwrap();
    assert!(
        !pins.contains(&ours),
        "the cluster's pin stayed after its removal"
    );
    assert!(pins.contains(&users), "the user's pin was removed");
    stop.cancel();
    engine.stop(Duration::from_secs(10)).await;
}

/// A holder told of no removals (the sender is gone at once).
fn no_removals() -> mpsc::Receiver<Vec<String>> {
    mpsc::channel(1).1
}
