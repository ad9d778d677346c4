//! The IPFS Pinning Service API (`/pinning`) against real nodes:
//! - the requests kubo's `ipfs pin remote` client sends, replayed over HTTP
//!   against a cluster whose holders run the built-in IPFS engine: add with
//!   a CIDv1 and origins, poll every 500 ms until `pinned`, list newest
//!   first paging with `before`, the filters, remove by request ID;
//! - a contract test: schemathesis drives the node with generated requests
//!   and validates every answer against `docs/pinning-service.yaml` (the
//!   spec's objects, bounds and error shape), with a token configured.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use ipfs_kit_p2p::role::Role;
use serde_json::{Value, json};
use testkit::python::python_or_skip;
use testkit::{NodeProc, Spawner, ipfs_of, start_cluster, wait_for, wait_ipfs_everywhere};

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");
const LONG: Duration = Duration::from_secs(120);

struct Service {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Service {
    fn of(n: &NodeProc, token: Option<String>) -> Service {
        Service {
            http: reqwest::Client::new(),
            base: format!("http://{}/pinning", n.client.addr()),
            token,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the node answers");
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn list(&self, query: &str) -> Value {
        let (code, v) = self.get(&format!("/pins?{query}")).await;
        assert_eq!(code, 200, "GET /pins?{query}: {v}");
        v
    }
}

/// CIDv1 base32, as a kubo client sends it.
fn v1(cid: &str) -> String {
    cid::Cid::try_from(cid)
        .unwrap()
        .into_v1()
        .unwrap()
        .to_string()
}

fn created(v: &Value) -> String {
    v["created"].as_str().unwrap().to_string()
}

fn ids(results: &Value) -> Vec<String> {
    results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requestid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kubos_remote_pinning_flow_works_against_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut sp = Spawner::new(BIN);
    sp.ipfs = "builtin".into();
    let nodes = start_cluster(&sp, dir.path(), &[Role::Master, Role::Worker], LONG)
        .await
        .unwrap();
    let all: Vec<&NodeProc> = nodes.iter().collect();
    wait_ipfs_everywhere(&all, LONG)
        .await
        .expect("IPFS ready everywhere");
    let svc = Service::of(&nodes[1], None);
    // Content the worker's IPFS does not have: the master's IPFS is the origin.
    let origin_ipfs = ipfs_of(&nodes[0]).await.unwrap();
    let origins: Vec<String> = nodes[0].status().await.unwrap().ipfs.addrs;
    assert!(!origins.is_empty());
    let mut cids = Vec::new();
    for (i, name) in ["alpha-1", "Alpha-2", "beta", "gamma"].iter().enumerate() {
        let added = origin_ipfs
            .add_unpinned(name, format!("remote pin {i} {name}").into_bytes())
            .await
            .unwrap();
        let cid = v1(&added.hash);
        let meta = if i < 2 {
            json!({ "app": "x" })
        } else {
            json!({})
        };
        let body = json!({ "cid": cid, "name": name, "origins": origins, "meta": meta });
        let (code, v) = svc.call(reqwest::Method::POST, "/pins", Some(body)).await;
        assert_eq!(code, 202, "{v}");
        assert_eq!(v["requestid"], cid.as_str(), "{v}");
        assert_eq!(v["pin"]["origins"], json!(origins), "{v}");
        let delegates = v["delegates"].as_array().unwrap();
        assert!(!delegates.is_empty(), "{v}");
        for d in delegates {
            let d = d.as_str().unwrap();
            assert!(
                d.contains("/p2p/"),
                "kubo refuses a delegate without /p2p/: {d}"
            );
            d.parse::<libp2p::Multiaddr>().unwrap();
        }
        cids.push(cid);
    }
    // Poll every 500 ms, as kubo does, until each is pinned.
    for cid in &cids {
        let deadline = Instant::now() + LONG;
        loop {
            let (code, v) = svc.get(&format!("/pins/{cid}")).await;
            assert_eq!(code, 200, "{v}");
            match v["status"].as_str().unwrap() {
                "pinned" => break,
                "failed" => panic!("pin failed: {v}"),
                _ => {}
            }
            assert!(Instant::now() < deadline, "never pinned: {v}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // Both holders really have it (replication 2 by default on 2 nodes).
    for n in &nodes {
        let ipfs = ipfs_of(n).await.unwrap();
        for cid in &cids {
            assert!(
                ipfs.is_pinned(cid).await.unwrap(),
                "{cid} not pinned on {}",
                n.peer_id
            );
        }
    }

    // `ls`: newest first, two at a time, paging with `before`.
    let mut seen = Vec::new();
    let mut query = "limit=2".to_string();
    loop {
        let page = svc.list(&query).await;
        assert_eq!(
            page["count"].as_u64(),
            Some((4 - seen.len()) as u64),
            "{page}"
        );
        let results = page["results"].as_array().unwrap();
        if results.is_empty() {
            break;
        }
        let times: Vec<String> = results.iter().map(created).collect();
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(times, sorted, "newest first");
        seen.extend(ids(&page));
        query = format!("limit=2&before={}", times.last().unwrap());
    }
    let mut newest_first = cids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    let created_all: BTreeSet<String> = svc.list("limit=10").await["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(created)
        .collect();
    assert_eq!(created_all.len(), 4, "created is unique");

    // Filters, with exact counts.
    let count = |v: Value| v["count"].as_u64().unwrap();
    assert_eq!(count(svc.list("name=alpha&match=ipartial").await), 2);
    assert_eq!(count(svc.list("name=Alpha&match=partial").await), 1);
    assert_eq!(count(svc.list("name=ALPHA-1&match=iexact").await), 1);
    assert_eq!(count(svc.list("name=alpha-1").await), 1);
    assert_eq!(count(svc.list("name=alpha").await), 0);
    let meta = urlencode(r#"{"app":"x"}"#);
    assert_eq!(count(svc.list(&format!("meta={meta}")).await), 2);
    assert_eq!(
        count(svc.list(&format!("cid={},{}", cids[0], cids[2])).await),
        2
    );
    assert_eq!(count(svc.list("status=queued,pinning,failed").await), 0);
    assert_eq!(count(svc.list("status=pinned,queued").await), 4);
    let newest = created(&svc.list("limit=1").await["results"][0]);
    assert_eq!(count(svc.list(&format!("after={newest}")).await), 0);

    // Errors in the spec's shape.
    let (code, v) = svc
        .call(
            reqwest::Method::POST,
            "/pins",
            Some(json!({ "cid": "not-a-cid" })),
        )
        .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["error"]["reason"], "BAD_REQUEST", "{v}");
    assert!(
        v["error"]["details"]
            .as_str()
            .unwrap()
            .contains("not-a-cid"),
        "{v}"
    );
    let (code, v) = svc.get("/pins?limit=0").await;
    assert_eq!(
        (code, v["error"]["reason"].as_str()),
        (400, Some("BAD_REQUEST")),
        "{v}"
    );

    // Replace: a new CID takes the old one's place.
    let (code, v) = svc
        .call(
            reqwest::Method::POST,
            &format!("/pins/{}", cids[3]),
            Some(json!({ "cid": cids[3].clone(), "name": "gamma-renamed" })),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["pin"]["name"], "gamma-renamed");

    // Remove by request ID; it is gone at once for this API.
    let (code, v) = svc
        .call(reqwest::Method::DELETE, &format!("/pins/{}", cids[0]), None)
        .await;
    assert_eq!(code, 202, "{v}");
    let (code, v) = svc.get(&format!("/pins/{}", cids[0])).await;
    assert_eq!(code, 404, "{v}");
    assert_eq!(v["error"]["reason"], "NOT_FOUND", "{v}");
    assert_eq!(
        count(svc.list("status=queued,pinning,pinned,failed").await),
        3
    );
    // ... and from the holders' IPFS soon after.
    let cid0 = cids[0].clone();
    wait_for(LONG, || {
        let cid0 = cid0.clone();
        let nodes = &nodes;
        async move {
            for n in nodes {
                if ipfs_of(n).await?.is_pinned(&cid0).await.ok()? {
                    return None;
                }
            }
            Some(())
        }
    })
    .await
    .expect("the removed pin left every holder");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// A master whose API needs a token (`api-token` made it).
async fn secured_master(dir: &Path) -> (NodeProc, String) {
    let out = std::process::Command::new(BIN)
        .args(["api-token", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let n = Spawner::new(BIN)
        .spawn(Role::Master, dir, &[])
        .await
        .unwrap();
    (n, token)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_conforms_to_the_pinning_service_openapi_document() {
    let Some(py) = python_or_skip("the Pinning Service API contract test", &["schemathesis"])
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (n, token) = secured_master(&dir.path().join("m")).await;
    let svc = Service::of(&n, Some(token.clone()));
    // Without the token: 401 in the spec's shape.
    let (code, v) = Service::of(&n, None).get("/pins").await;
    assert_eq!(code, 401, "{v}");
    assert_eq!(v["error"]["reason"], "UNAUTHORIZED", "{v}");
    // A pin to find, so GET/POST/DELETE by ID reach real objects too.
    let (code, v) = svc
        .call(
            reqwest::Method::POST,
            "/pins",
            Some(json!({ "cid": "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e" })),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/pinning-service.yaml");
    let out = tokio::process::Command::new(&py)
        .args(["-m", "schemathesis.cli", "run"])
        .arg(&spec)
        .args(["--url", &svc.base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // Every check but one: a CID's validity (multibase, multihash)
        // cannot be written as a JSON schema, so strings the schema admits
        // are mostly not CIDs, and the service must refuse them (400).
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--max-examples", "25", "--workers", "1", "--seed", "1"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(dir.path())
        .output()
        .await
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found answers that break the contract:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}

/// `add --wait` on a cluster with fewer masters and workers than the
/// factor says so at once, waits only for the copies it can hold, and
/// exits 3, instead of waiting out its timeout (600 s by default).
#[tokio::test(flavor = "multi_thread")]
async fn wait_on_a_cluster_too_small_for_the_factor_says_so_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let mut sp = Spawner::new(BIN);
    sp.ipfs = "builtin".into();
    let n = sp
        .spawn(Role::Master, &dir.path().join("m"), &[])
        .await
        .unwrap();
    wait_ipfs_everywhere(&[&n], LONG).await.expect("IPFS ready");
    let file = dir.path().join("data.bin");
    std::fs::write(&file, b"one copy is all a one-node cluster can hold").unwrap();
    let started = Instant::now();
    let out = tokio::process::Command::new(BIN)
        .args([
            "add",
            "--replication",
            "2",
            "--wait",
            "--api",
            n.client.addr(),
        ])
        .arg(&file)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("cannot reach 2 copies now"), "{stderr}");
    assert!(stderr.contains("1 of 2 copies"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "waited {:?}",
        started.elapsed()
    );
    // The one copy it can hold is there.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1/1 pinned"), "{stdout}");
}
