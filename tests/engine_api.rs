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
