//! Real clients against a real engine: the npm `kubo-rpc-client` (7.1.0)
//! and PyPI's `aioipfs` (0.7.1) each run a script (tests/clients/) that
//! calls `id`, `version`, `add` of several sizes (plus CIDv1 with raw leaves
//! through the client's own option names), `cat` whole and with
//! `offset`/`length`, `cat` of a file only another engine holds, `pin`
//! add/ls/rm, `block` put/get/stat/rm, `dag/get`, `swarm/peers` and
//! `repo/stat`, and prints what it got; the assertions are here. Guarantee:
//! what those clients send is accepted and what they get parses, with
//! kubo's CIDs. Without the client a test fails under CI and skips
//! elsewhere (`.ci/run` installs both).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::kubo::kubo_cid;
use testkit::{EngineProc, test_bytes};

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");
const MARS_CID: &str = "bafkreibmlvvgdyihetgocpof6xk64kjjzdeq2e4c7hqs3krdheosk4tgj4";
/// kubo's `dag get` of t0050-block-data/testPut.pb put as dag-pb.
const TEST_PUT_JSON: &str =
    r#"{"Data":{"/":{"bytes":"dGVzdCBqc29uIGZvciBzaGFybmVzcyB0ZXN0"}},"Links":[]}"#;

/// The files each script adds, by name; the last is the largest.
fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("hello", b"hello world\n".to_vec()),
        ("empty", Vec::new()),
        ("chunk", test_bytes(262_144, 1)),
        ("chunk-and-one", test_bytes(262_145, 2)),
        ("big", test_bytes(4 * 262_144 + 17, 3)),
    ]
}

/// Two engines, B connected to A, a file only A holds, and the script's
/// config: the client talks to B.
struct Setup {
    a: EngineProc,
    b: EngineProc,
    config: Value,
    _dir: tempfile::TempDir,
}

async fn post(e: &EngineProc, cmd: &str, query: &[(&str, &str)]) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}/api/v0/{cmd}", e.api))
        .query(query)
        .send()
        .await
        .unwrap()
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let a = EngineProc::start(BIN.as_ref(), &dir.path().join("a"), None)
        .await
        .unwrap();
    let b = EngineProc::start(BIN.as_ref(), &dir.path().join("b"), None)
        .await
        .unwrap();
    let files_dir = dir.path().join("files");
    std::fs::create_dir(&files_dir).unwrap();
    for (name, data) in files() {
        std::fs::write(files_dir.join(name), data).unwrap();
    }
    let remote = test_bytes(600_000, 9);
    std::fs::write(files_dir.join("remote"), &remote).unwrap();
    let remote_cid = a.client().add("remote", remote).await.unwrap().hash;
    let id = a.client().id().await.unwrap();
    let addr = id.addresses.unwrap_or_default().remove(0);
    b.client().swarm_connect(&addr).await.unwrap();
    let config = json!({
        "api": format!("http://{}", b.api),
        "dir": files_dir,
        "files": files().iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "remote": { "cid": remote_cid, "file": "remote" },
    });
    Setup {
        a,
        b,
        config,
        _dir: dir,
    }
}

/// Runs a client script; its stdout is one JSON object.
async fn run(program: &Path, args: &[String]) -> Value {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), child)
        .await
        .expect("the client script finishes within 240 s")
        .expect("the client script starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client script failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client output is not JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
        .display()
        .to_string()
}

/// What both clients must have got.
async fn check(s: &Setup, out: &Value) {
    let b_id: Value = post(&s.b, "id", &[]).await.json().await.unwrap();
    let a_id: Value = post(&s.a, "id", &[]).await.json().await.unwrap();
    assert_eq!(out["id"]["id"], b_id["ID"]);
    assert!(!out["id"]["addresses"].as_array().unwrap().is_empty());
    let version: Value = post(&s.b, "version", &[]).await.json().await.unwrap();
    assert_eq!(out["version"], version["Version"]);

    for ((name, data), added) in files().iter().zip(out["add"].as_array().unwrap()) {
        let (cid, size) = kubo_cid(data);
        assert_eq!(added["name"], *name);
        assert_eq!(added["cid"], cid.as_str(), "kubo's CID for {name}");
        assert_eq!(added["size"], size, "kubo's cumulative size for {name}");
    }
    let cats = out["cat"].as_array().unwrap();
    assert_eq!(cats.len(), files().len());
    assert!(cats.iter().all(|c| c["same"] == true), "{cats:?}");
    // The client's CIDv1/raw-leaves options were honoured, not ignored.
    let v1 = out["add_v1"]["cid"].as_str().unwrap();
    assert!(v1.starts_with("bafybei"), "{v1}");
    assert_eq!(out["range"], json!({ "same": true, "length": 500_000 }));
    assert_eq!(out["remote"]["same"], true);

    assert_eq!(
        out["pin"],
        json!({ "listed": [{ "cid": v1, "type": "recursive" }], "still_pinned": false })
    );

    let block = &out["block"];
    assert_eq!(block["key"], MARS_CID);
    assert_eq!(block["same"], true);
    assert_eq!(block["stat"], json!({ "cid": MARS_CID, "size": 12 }));
    // kubo omits an empty `Error`; kubo-rpc-client would report "" as an error.
    assert_eq!(
        block["removed"],
        json!([{ "cid": MARS_CID, "error": null }])
    );
    assert!(block["pb"].as_str().unwrap().starts_with("bafybei"));

    let links = out["dag"]["file_links"].as_array().unwrap();
    assert_eq!(links.len(), 5, "{links:?}");
    assert!(
        links[..4].iter().all(|l| l["tsize"] == 262_158),
        "{links:?}"
    );

    let peers = out["peers"].as_array().unwrap();
    assert!(peers.contains(&a_id["ID"]), "{peers:?}");
    assert!(out["repo"]["objects"].as_u64().unwrap() > 0);
    assert!(out["repo"]["size"].as_u64().unwrap() > 4 * 262_144);
}

#[tokio::test]
async fn kubo_rpc_client_works_against_the_engine() {
    let test = "kubo_rpc_client_works_against_the_engine";
    let Some((node, prefix)) = testkit::npm::node_or_skip(test, "kubo-rpc-client", "7.1.0") else {
        return;
    };
    let s = setup().await;
    let args = [
        script("kubo_rpc_client.mjs"),
        prefix.display().to_string(),
        s.config.to_string(),
    ];
    let out = run(&node, &args).await;
    check(&s, &out).await;
    assert_eq!(out["dag"]["pb_data"], "test json for sharness test");
    assert_eq!(out["dag"]["pb_links"], 0);
}

#[tokio::test]
async fn aioipfs_works_against_the_engine() {
    let test = "aioipfs_works_against_the_engine";
    let Some(python) = testkit::python::python_or_skip(test, &["aioipfs"]) else {
        return;
    };
    let s = setup().await;
    let out = run(
        &python,
        &[script("aioipfs_client.py"), s.config.to_string()],
    )
    .await;
    check(&s, &out).await;
    assert_eq!(out["dag"]["pb_text"], TEST_PUT_JSON);
}
