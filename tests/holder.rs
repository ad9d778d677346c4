//! The holder against a real IPFS engine: a stale leader's orders (a
//! replayed order with an old epoch) change nothing, neither in the
//! holder's state nor in IPFS, while the current leader's do; the highest
//! epoch survives a restart; leechers and strangers are refused.

use std::time::Duration;

use ipfs_kit_p2p::ipfs::{IpfsStatus, Mode};
use ipfs_kit_p2p::pinset::actor::{ClusterView, PeerView};
use ipfs_kit_p2p::pinset::held::HeldStore;
use ipfs_kit_p2p::pinset::holder::{self, HolderHandle, HolderSettings};
use ipfs_kit_p2p::role::Role;
use ipfs_kit_p2p::testkit::{EngineProc, wait_for};
use ipfs_kit_p2p::wire::{HeldState, HolderOrder, HolderRequest, HolderResponse};
use tokio::sync::watch;
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
    };
    ClusterView {
        me: "me".into(),
        role: Some(Role::Worker),
        leader: Some(("L".into(), epoch)),
        peers: vec![peer("L"), peer("old")],
        my_ipfs: None,
        my_disk_free: 0,
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
        HeldStore::open(&held).unwrap(),
        settings(Role::Worker),
        ipfs_rx.clone(),
        view_rx.clone(),
        stop.clone(),
    )
    .unwrap();
    let pinned = || async { ipfs.pin_ls().await.unwrap().contains(&cid) };

    // Epoch 4 while the node follows epoch 5: refused, nothing queued or pinned.
    let why = refused(
        h.request("old".into(), orders(4, 1, &cid, true))
            .await
            .unwrap(),
    );
    assert!(why.contains("stale epoch 4"), "{why}");
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
    assert!(why.contains("stale"), "{why}");
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
                s,
                settings(Role::Worker),
                ipfs_rx.clone(),
                view_rx2.clone(),
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
        h2.request("old".into(), orders(6, 1, &cid, false))
            .await
            .unwrap(),
    );
    assert!(why.contains("epoch 7 seen"), "{why}");
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
    assert!(why.contains("not a live master or worker"), "{why}");
    let (_v, view_rx3) = watch::channel(view(5));
    let (leecher, _) = holder::spawn(
        HeldStore::open(&dir.path().join("leecher.redb")).unwrap(),
        settings(Role::Leecher),
        ipfs_rx.clone(),
        view_rx3,
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
