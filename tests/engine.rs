//! The built-in IPFS engine end to end over HTTP, as a kubo client sees it:
//! kubo's CIDs (checked against DAG-PB/UnixFS blocks encoded by hand in
//! `testkit::kubo`, at and around the 256 KiB chunk boundary), `cat`, pins
//! that survive a restart, bitswap between two daemons, and kubo's error
//! shape. Every call but the raw-HTTP checks goes through `IpfsClient`, so
//! this is also the client's test against a real engine (tests/ipfs_rpc.rs
//! has the fakes).

use std::time::Duration;

use ipfs_kit_p2p::ipfs_rpc::RpcError;
use testkit::kubo::kubo_cid;
use testkit::{EngineProc, test_bytes as bytes};

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");
const CHUNK: usize = 262_144;

async fn engine(dir: &std::path::Path) -> EngineProc {
    EngineProc::start(BIN.as_ref(), &dir.join("repo"), None)
        .await
        .expect("start the engine")
}

#[tokio::test]
async fn add_gives_kubos_cids_and_cat_returns_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let c = e.client();

    let hello = c.add("hello.txt", b"hello world\n".to_vec()).await.unwrap();
    assert_eq!(hello.hash, "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o");
    assert_eq!(hello.size, "20");
    assert_eq!(hello.name, "hello.txt");
    // The hand encoder agrees on the known vector, so it can judge the rest.
    assert_eq!(kubo_cid(b"hello world\n").0, hello.hash);
    assert_eq!(
        kubo_cid(b"").0,
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    );

    for (i, n) in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 4 * CHUNK + 17]
        .into_iter()
        .enumerate()
    {
        let data = bytes(n, i as u64);
        let added = c
            .add("f", data.clone())
            .await
            .unwrap_or_else(|e| panic!("add {n} bytes: {e}"));
        let (cid, size) = kubo_cid(&data);
        assert_eq!(added.hash, cid, "CID of {n} bytes");
        assert_eq!(added.size, size.to_string(), "cumulative size of {n} bytes");
        let back = c.cat(&added.hash).await.unwrap();
        assert!(
            back == data,
            "cat of {n} bytes returned {} different bytes",
            back.len()
        );
    }
    assert!(
        e.stop(Duration::from_secs(20))
            .await
            .is_some_and(|s| s.success())
    );
}

#[tokio::test]
async fn pins_and_blocks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let data = bytes(3 * CHUNK + 5, 42);
    let added = e.client().add("x", data.clone()).await.unwrap();
    let extra = e
        .client()
        .add("y", b"unpinned later".to_vec())
        .await
        .unwrap();
    e.client().pin_rm(&extra.hash).await.unwrap();
    assert!(
        e.stop(Duration::from_secs(20))
            .await
            .is_some_and(|s| s.success())
    );

    let e = engine(dir.path()).await;
    let c = e.client();
    let pins = c.pin_ls().await.unwrap();
    assert!(pins.contains(&added.hash), "pins after restart: {pins:?}");
    assert!(
        !pins.contains(&extra.hash),
        "an unpinned CID came back: {pins:?}"
    );
    assert!(c.cat(&added.hash).await.unwrap() == data);
    let stat = c.repo_stat().await.unwrap();
    assert!(
        stat.repo_size >= data.len() as u64 && stat.num_objects >= 4,
        "{stat:?}"
    );
}

#[tokio::test]
async fn a_second_daemon_pins_content_only_the_first_holds() {
    let dir = tempfile::tempdir().unwrap();
    let a = EngineProc::start(BIN.as_ref(), &dir.path().join("a"), None)
        .await
        .unwrap();
    let b = EngineProc::start(BIN.as_ref(), &dir.path().join("b"), None)
        .await
        .unwrap();
    let data = bytes(5 * CHUNK + 99, 7);
    let added = a.client().add("big", data.clone()).await.unwrap();

    let id = a.client().id().await.unwrap();
    let addr = id
        .addresses
        .unwrap_or_default()
        .into_iter()
        .next()
        .expect("a swarm address");
    assert!(addr.starts_with("/ip4/127.0.0.1/"), "{addr}");
    b.client().swarm_connect(&addr).await.unwrap();
    assert!(b.client().swarm_peers().await.unwrap().contains(&id.id));

    let pinned = b.client().pin_add(&added.hash).await.unwrap();
    assert_eq!(pinned, vec![added.hash.clone()]);
    assert!(b.client().pin_ls().await.unwrap().contains(&added.hash));
    // B holds every block itself now: it serves the file with A gone.
    assert!(a.stop(Duration::from_secs(20)).await.is_some());
    assert!(b.client().cat(&added.hash).await.unwrap() == data);
}

#[tokio::test]
async fn errors_have_kubos_shape_and_browsers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let c = e.client();
    assert_eq!(
        c.version().await.unwrap().version,
        env!("CARGO_PKG_VERSION")
    );
    match c.cat("not-a-cid").await {
        Err(RpcError::Rpc {
            status: 400,
            code: 1,
            message,
            ..
        }) => {
            assert!(message.contains("not-a-cid"), "{message}")
        }
        other => panic!("expected kubo's client error, got {other:?}"),
    }
    match c
        .pin_rm("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o")
        .await
    {
        Err(RpcError::Rpc {
            status: 500,
            code: 0,
            message,
            ..
        }) => {
            assert_eq!(message, "not pinned or pinned indirectly")
        }
        other => panic!("expected kubo's error, got {other:?}"),
    }
    assert!(matches!(
        c.swarm_connect("/ip4/127.0.0.1/tcp/1").await,
        Err(RpcError::Rpc { status: 400, .. })
    ));

    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{}/api/v0/{p}", e.api);
    let raw = http.post(url("cat")).send().await.unwrap();
    assert_eq!(raw.status(), 400);
    let body: serde_json::Value = raw.json().await.unwrap();
    assert_eq!(body["Type"], "error");
    assert!(
        body["Message"].as_str().unwrap().contains("argument"),
        "{body}"
    );
    assert_eq!(http.get(url("id")).send().await.unwrap().status(), 405);
    assert_eq!(
        http.post(url("nonsense")).send().await.unwrap().status(),
        404
    );
    let cross = http
        .post(url("shutdown"))
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert!(
        c.id().await.is_ok(),
        "a refused shutdown must not stop the daemon"
    );
    let peers: serde_json::Value = http
        .post(url("swarm/peers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(peers, serde_json::json!({ "Peers": null }));

    c.shutdown().await.unwrap();
    let mut e = e;
    let exited = testkit::wait_for(Duration::from_secs(20), || {
        let s = e.child.try_wait().ok().flatten();
        async move { s }
    })
    .await;
    assert!(
        exited.is_some_and(|s| s.success()),
        "shutdown should end the daemon cleanly"
    );
    assert!(
        !e.repo.join("api").exists(),
        "the api file outlived the daemon"
    );
}

/// kubo answers `swarm/connect` to a peer already connected with success,
/// whichever side dialled.
#[tokio::test]
async fn connecting_a_connected_peer_is_a_success() {
    let dir = tempfile::tempdir().unwrap();
    let a = engine(&dir.path().join("a")).await;
    let b = engine(&dir.path().join("b")).await;
    let addr_of = |id: ipfs_kit_p2p::ipfs_rpc::Id| {
        let addr = id.addresses.unwrap_or_default().into_iter().next();
        (id.id, addr.expect("a swarm address"))
    };
    let (a_id, a_addr) = addr_of(a.client().id().await.unwrap());
    let (b_id, b_addr) = addr_of(b.client().id().await.unwrap());
    b.client().swarm_connect(&a_addr).await.unwrap();

    let http = reqwest::Client::new();
    for (from, to, to_id) in [(&b, &a_addr, &a_id), (&a, &b_addr, &b_id)] {
        let res = http
            .post(format!("http://{}/api/v0/swarm/connect", from.api))
            .query(&[("arg", to)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "connect to {to} again");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "Strings": [format!("connect {to_id} success")] })
        );
    }
}
