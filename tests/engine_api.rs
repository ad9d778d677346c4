//! The built-in engine's RPC API where kubo's clients look closely: which
//! `add` options it takes or refuses, kubo's `timeout` syntax, the `block/*`
//! commands, and how `cat` streams (ranges, errors in the middle). Raw HTTP
//! throughout, so every status, header and body byte is the engine's own.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{EngineProc, test_bytes};

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");

async fn engine(dir: &std::path::Path) -> EngineProc {
    EngineProc::start(BIN.as_ref(), &dir.join("repo"), None)
        .await
        .expect("start the engine")
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn of(e: &EngineProc) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("http://{}/api/v0", e.api),
        }
    }

    async fn post(&self, cmd: &str, query: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}/{cmd}", self.base))
            .query(query)
            .send()
            .await
            .unwrap()
    }

    /// A multipart upload of one file, as kubo's clients send it.
    async fn upload(&self, cmd: &str, query: &[(&str, &str)], data: &[u8]) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(data.to_vec()).file_name("f");
        self.http
            .post(format!("{}/{cmd}", self.base))
            .query(query)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await
            .unwrap()
    }
}

/// The NDJSON lines of an answer.
async fn lines(res: reqwest::Response) -> Vec<Value> {
    let text = res.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

async fn client_error(res: reqwest::Response) -> String {
    assert_eq!(res.status(), 400, "expected kubo's client error");
    let body: Value = res.json().await.unwrap();
    assert_eq!((&body["Code"], &body["Type"]), (&json!(1), &json!("error")));
    body["Message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn add_takes_kubos_options_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let api = Api::of(&e);
    let hello = b"hello world\n";
    let kubo_hello = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";

    // What kubo-rpc-client and aioipfs send with their defaults.
    let clients: &[&[(&str, &str)]] = &[
        &[("stream-channels", "true"), ("progress", "false")],
        &[
            ("fscache", "false"),
            ("nocopy", "false"),
            ("only-hash", "false"),
            ("pin", "true"),
            ("quiet", "false"),
            ("quieter", "false"),
            ("raw-leaves", "false"),
            ("recursive", "false"),
            ("silent", "false"),
            ("trickle", "false"),
            ("dereference-args", "false"),
            ("wrap-with-directory", "false"),
            ("cid-version", "0"),
            ("hash", "sha2-256"),
            ("chunker", "size-262144"),
            ("inline-limit", "32"),
            ("timeout", "1m30s"),
        ],
        // Every option kubo-rpc-client's types offer for add, kebab-cased
        // as it sends them (the js-ipfs ones kubo ignores).
        &[
            ("stream-channels", "true"),
            ("progress", "false"),
            ("chunker", "size-262144"),
            ("cid-version", "0"),
            ("hash", "sha2-256"),
            ("only-hash", "false"),
            ("pin", "true"),
            ("raw-leaves", "false"),
            ("trickle", "false"),
            ("wrap-with-directory", "false"),
            ("preload", "false"),
            ("block-write-concurrency", "10"),
            ("enable-sharding-experiment", "false"),
            ("shard-split-threshold", "1000"),
            ("file-import-concurrency", "50"),
            ("verbose", "false"),
            ("timeout", "60000ms"),
        ],
    ];
    for query in clients {
        let res = api.upload("add", query, hello).await;
        assert_eq!(res.status(), 200, "{query:?}");
        let out = lines(res).await;
        assert_eq!(out.last().unwrap()["Hash"], kubo_hello, "{query:?}");
    }

    // Unknown options are refused with kubo's message.
    let msg = client_error(api.upload("add", &[("foo", "1")], hello).await).await;
    assert_eq!(msg, r#"unknown option "foo""#);
    let msg = client_error(api.upload("add", &[("raw-leafs", "true")], hello).await).await;
    assert_eq!(msg, r#"unknown option "raw-leafs""#);

    // Options it cannot honour are refused by name, not ignored.
    for (k, v) in [
        ("trickle", "true"),
        ("wrap-with-directory", "true"),
        ("inline", "true"),
        ("nocopy", "true"),
        ("to-files", "/x"),
        ("mode", "0644"),
        ("hash", "blake3"),
        ("cid-base", "base32"),
        ("enc", "text"),
    ] {
        let msg = client_error(api.upload("add", &[(k, v)], hello).await).await;
        assert!(msg.contains(k) || msg.contains(v), "{k}={v}: {msg}");
    }

    // only-hash: kubo's CID, nothing stored or pinned.
    let data = test_bytes(300_000, 9);
    let res = api.upload("add", &[("only-hash", "true")], &data).await;
    let cid = lines(res).await.last().unwrap()["Hash"]
        .as_str()
        .unwrap()
        .to_string();
    let pins: Value = api.post("pin/ls", &[]).await.json().await.unwrap();
    assert!(pins["Keys"].get(&cid).is_none(), "{pins}");
    let res = api
        .post("cat", &[("arg", &cid), ("timeout", "300ms")])
        .await;
    assert_eq!(res.status(), 500, "only-hash stored the file");
    let res = api.upload("add", &[], &data).await;
    assert_eq!(lines(res).await.last().unwrap()["Hash"], cid.as_str());

    // progress: a Bytes line before the result, as kubo's clients expect.
    let out = lines(api.upload("add", &[("progress", "true")], hello).await).await;
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0]["Bytes"], 12);
    assert_eq!(out[1]["Hash"], kubo_hello);
}

#[tokio::test]
async fn malformed_timeouts_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let api = Api::of(&e);
    let hello = b"hello world\n";
    for bad in ["30", "abc", "1m30", "-5s", "1.5.s", "5 s"] {
        let msg = client_error(api.upload("add", &[("timeout", bad)], hello).await).await;
        assert!(msg.contains("timeout") && msg.contains(bad), "{bad}: {msg}");
        let msg = client_error(
            api.post(
                "cat",
                &[
                    ("arg", "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"),
                    ("timeout", bad),
                ],
            )
            .await,
        )
        .await;
        assert!(msg.contains("timeout") && msg.contains(bad), "{bad}: {msg}");
    }
    for good in ["1m30s", "500ms", "2h", "1.5s", "0"] {
        let res = api.upload("add", &[("timeout", good)], hello).await;
        // "0" is a valid Go duration: kubo's deadline is then already past.
        if good != "0" {
            assert_eq!(res.status(), 200, "timeout={good}");
        } else {
            assert_ne!(res.status(), 400, "timeout=0 is well-formed");
        }
    }
    assert!(e.stop(Duration::from_secs(20)).await.is_some());
}

/// A multipart upload of several files in one request.
async fn upload_many(
    api: &Api,
    cmd: &str,
    query: &[(&str, &str)],
    files: &[&[u8]],
) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new();
    for (i, data) in files.iter().enumerate() {
        let part = reqwest::multipart::Part::bytes(data.to_vec()).file_name(format!("f{i}"));
        form = form.part("file", part);
    }
    api.http
        .post(format!("{}/{cmd}", api.base))
        .query(query)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

// kubo's own vectors (test/sharness/t0050-block.sh).
const MARS: &[u8] = b"Hello Mars!\n";
const MARS_CID: &str = "bafkreibmlvvgdyihetgocpof6xk64kjjzdeq2e4c7hqs3krdheosk4tgj4";
const VENUS_CID: &str = "bafkreihfsphazrk2ilejpekyltjeh5k4yvwgjuwg26ueafohqioeo3sdca";
const MARS_V0: &str = "QmRKqGMAM6EZngbpjSqrvYzq5Qd8b1bSWymjSUY9zQSNDk";
/// t0050-block-data/testPut.pb and kubo's `dag get` of it.
const TEST_PUT_PB: &[u8] = b"\x0a\x1btest json for sharness test";
const TEST_PUT_JSON: &str =
    r#"{"Data":{"/":{"bytes":"dGVzdCBqc29uIGZvciBzaGFybmVzcyB0ZXN0"}},"Links":[]}"#;

#[tokio::test]
async fn block_put_get_stat_and_dag_get_give_kubos_answers() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let api = Api::of(&e);

    let res = upload_many(&api, "block/put", &[], &[MARS, b"Hello Venus!\n"]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-chunked-output"], "1");
    assert_eq!(
        lines(res).await,
        vec![
            json!({ "Key": MARS_CID, "Size": 12 }),
            json!({ "Key": VENUS_CID, "Size": 13 })
        ]
    );
    let out = lines(api.upload("block/put", &[("format", "v0")], MARS).await).await;
    assert_eq!(out, vec![json!({ "Key": MARS_V0, "Size": 12 })]);

    let stat: Value = api
        .post("block/stat", &[("arg", MARS_CID)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stat, json!({ "Key": MARS_CID, "Size": 12 }));
    let res = api.post("block/get", &[("arg", MARS_CID)]).await;
    assert_eq!(res.headers()["content-type"], "application/vnd.ipld.raw");
    assert_eq!(res.bytes().await.unwrap(), MARS);

    // dag/get: go-ipld-prime's dag-json, byte for byte.
    for opt in [("cid-codec", "dag-pb"), ("format", "protobuf")] {
        let out = lines(api.upload("block/put", &[opt], TEST_PUT_PB).await).await;
        let cid = out[0]["Key"].as_str().unwrap().to_string();
        let res = api.post("dag/get", &[("arg", &cid)]).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), TEST_PUT_JSON, "{opt:?}");
        let back = api
            .post("block/get", &[("arg", &cid)])
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(back, TEST_PUT_PB);
    }
    let res = api.post("dag/get", &[("arg", MARS_CID)]).await;
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"/":{"bytes":"SGVsbG8gTWFycyEK"}}"#
    );
    let res = api
        .post(
            "dag/get",
            &[("arg", MARS_CID), ("output-codec", "dag-cbor")],
        )
        .await;
    let cbor = res.bytes().await.unwrap();
    assert_eq!(cbor[0], 0x4c, "a CBOR byte string of 12");
    assert_eq!(&cbor[1..], MARS);

    // A UnixFS file's root: links with kubo's names and sizes.
    let data = test_bytes(2 * 262_144, 3);
    let root = lines(api.upload("add", &[], &data).await).await[0]["Hash"]
        .as_str()
        .unwrap()
        .to_string();
    let text = api
        .post("dag/get", &[("arg", &root)])
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.starts_with(
            r#"{"Data":{"/":{"bytes":"CAIYgIAgIICAECCAgBA"}},"Links":[{"Hash":{"/":"Qm"#
        ),
        "{text}"
    );
    assert!(
        text.ends_with(r#""},"Name":"","Tsize":262158}]}"#),
        "{text}"
    );

    // What it cannot do is refused by name.
    for (k, v) in [
        ("mhtype", "blake3"),
        ("mhlen", "20"),
        ("cid-codec", "git-raw"),
        ("allow-big-block", "true"),
        ("cid-kodec", "raw"),
    ] {
        let msg = client_error(api.upload("block/put", &[(k, v)], MARS).await).await;
        assert!(msg.contains(k) || msg.contains(v), "{k}={v}: {msg}");
    }
    let msg = client_error(
        api.post("dag/get", &[("arg", MARS_CID), ("output-codec", "yaml")])
            .await,
    )
    .await;
    assert!(msg.contains("yaml"), "{msg}");
    let big = vec![0u8; 2 * 1024 * 1024 + 1];
    let msg = client_error(api.upload("block/put", &[], &big).await).await;
    assert!(msg.contains("over 2MiB"), "{msg}");
}

#[tokio::test]
async fn block_rm_refuses_pinned_blocks_and_reports_each() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let api = Api::of(&e);
    let pinned =
        lines(api.upload("block/put", &[("pin", "true")], b"pinned").await).await[0]["Key"]
            .as_str()
            .unwrap()
            .to_string();
    let loose = lines(api.upload("block/put", &[], b"loose").await).await[0]["Key"]
        .as_str()
        .unwrap()
        .to_string();
    // A leaf of a pinned file is pinned through its root.
    let file = lines(api.upload("add", &[], &test_bytes(300_000, 1)).await).await[0]["Hash"]
        .as_str()
        .unwrap()
        .to_string();
    let root: Value = serde_json::from_str(
        &api.post("dag/get", &[("arg", &file)])
            .await
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let leaf = root["Links"][0]["Hash"]["/"].as_str().unwrap().to_string();
    let absent = "bafkreihfsphazrk2ilejpekyltjeh5k4yvwgjuwg26ueafohqioeo3sdca";

    let res = api
        .post(
            "block/rm",
            &[
                ("arg", &pinned),
                ("arg", &loose),
                ("arg", &leaf),
                ("arg", absent),
            ],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        lines(res).await,
        vec![
            json!({ "Hash": pinned, "Error": "pinned: recursive" }),
            json!({ "Hash": loose }),
            json!({ "Hash": leaf, "Error": format!("pinned via {file}") }),
            json!({ "Hash": absent, "Error": format!("ipld: could not find {absent}") }),
        ]
    );
    let res = api
        .post("block/stat", &[("arg", &loose), ("offline", "true")])
        .await;
    assert_eq!(res.status(), 500, "the removed block is still there");
    assert!(
        api.post("block/stat", &[("arg", &pinned)])
            .await
            .status()
            .is_success()
    );

    let res = api
        .post("block/rm", &[("arg", absent), ("force", "true")])
        .await;
    assert_eq!(lines(res).await, vec![json!({ "Hash": absent })]);
    api.upload("block/put", &[], b"loose").await;
    let res = api
        .post("block/rm", &[("arg", &loose), ("quiet", "true")])
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.text().await.unwrap(),
        "",
        "quiet lists no removed block"
    );

    // A missing block is fetched within `timeout`, then the error.
    let started = std::time::Instant::now();
    let res = api
        .post("block/get", &[("arg", &loose), ("timeout", "300ms")])
        .await;
    assert_eq!(res.status(), 500);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unknown_paths_get_kubos_404() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path()).await;
    let api = Api::of(&e);
    for path in ["nonsense", "block/nonsense", "dag/put/x"] {
        let res = api.post(path, &[]).await;
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(res.text().await.unwrap(), "404 page not found\n");
    }
}
