//! The built-in engine's `cat`: ranges fetch only the blocks they need, a
//! file only another engine holds streams without stalls, and a failure
//! after the 200 ends the body with kubo's `X-Stream-Error` trailer (or, to
//! a client that does not take trailers, an incomplete body).

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{EngineProc, test_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");
const CHUNK: usize = 262_144;

async fn engine(repo: &std::path::Path) -> EngineProc {
    EngineProc::start(BIN.as_ref(), repo, None)
        .await
        .expect("start the engine")
}

fn url(e: &EngineProc, cmd: &str) -> String {
    format!("http://{}/api/v0/{cmd}", e.api)
}

async fn post(e: &EngineProc, cmd: &str, query: &[(&str, &str)]) -> reqwest::Response {
    reqwest::Client::new()
        .post(url(e, cmd))
        .query(query)
        .send()
        .await
        .unwrap()
}

/// Adds `data` as one file; returns its CID.
async fn add(e: &EngineProc, query: &[(&str, &str)], data: &[u8]) -> String {
    let part = reqwest::multipart::Part::bytes(data.to_vec()).file_name("f");
    let res = reqwest::Client::new()
        .post(url(e, "add"))
        .query(query)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let v: Value = res.json().await.unwrap();
    v["Hash"].as_str().unwrap().to_string()
}

/// The leaves of a one-level file, in order (from `dag/get`).
async fn leaves(e: &EngineProc, root: &str) -> Vec<String> {
    let text = post(e, "dag/get", &[("arg", root)])
        .await
        .text()
        .await
        .unwrap();
    let node: Value = serde_json::from_str(&text).unwrap();
    node["Links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["Hash"]["/"].as_str().unwrap().to_string())
        .collect()
}

/// Whether `e` holds `cid` itself (kubo's `offline`: nothing is fetched).
async fn holds(e: &EngineProc, cid: &str) -> bool {
    post(e, "block/stat", &[("arg", cid), ("offline", "true")])
        .await
        .status()
        .is_success()
}

async fn cat(e: &EngineProc, query: &[(&str, &str)]) -> Vec<u8> {
    let res = post(e, "cat", query).await;
    assert_eq!(res.status(), 200, "cat {query:?}");
    res.bytes().await.unwrap().to_vec()
}

/// Guarantee: `cat` of a range fetches the root and the leaves the range
/// touches, nothing else; the whole file then arrives without the 30 s
/// stalls of a windowed fetch.
#[tokio::test]
async fn cat_from_another_engine_fetches_only_the_blocks_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let a = engine(&dir.path().join("a")).await;
    let b = engine(&dir.path().join("b")).await;
    let data = test_bytes(3 * 1024 * 1024, 11);
    let root = add(&a, &[], &data).await;
    let leaves = leaves(&a, &root).await;
    assert_eq!(leaves.len(), 12);

    let id: Value = post(&a, "id", &[]).await.json().await.unwrap();
    let addr = id["Addresses"][0].as_str().unwrap().to_string();
    assert!(addr.starts_with("/ip4/127.0.0.1/"), "{addr}");
    assert_eq!(
        post(&b, "swarm/connect", &[("arg", &addr)]).await.status(),
        200
    );

    // A range across leaves 5 and 6.
    let (off, len) = (5 * CHUNK + 1000, CHUNK);
    let (o, l) = (off.to_string(), len.to_string());
    let got = cat(&b, &[("arg", &root), ("offset", &o), ("length", &l)]).await;
    assert!(got == data[off..off + len], "the range's bytes differ");
    assert!(holds(&b, &root).await);
    for (i, leaf) in leaves.iter().enumerate() {
        assert_eq!(holds(&b, leaf).await, i == 5 || i == 6, "leaf {i}");
    }
    let stat: Value = post(&b, "repo/stat", &[]).await.json().await.unwrap();
    assert_eq!(stat["NumObjects"], 3, "{stat}");

    // The whole file; the stalls this replaces were multiples of 30 s.
    let started = Instant::now();
    let got = cat(&b, &[("arg", &root)]).await;
    let took = started.elapsed();
    assert!(got == data, "cat returned {} different bytes", got.len());
    assert!(took < Duration::from_secs(25), "cat of 3 MiB took {took:?}");
    for leaf in &leaves {
        assert!(holds(&b, leaf).await);
    }

    // kubo's range rules: past the end is empty, length is a maximum.
    let end = data.len().to_string();
    assert!(
        cat(&b, &[("arg", &root), ("offset", &end)])
            .await
            .is_empty()
    );
    let tail = cat(
        &b,
        &[("arg", &root), ("offset", "3145700"), ("length", "999")],
    )
    .await;
    assert!(tail == data[3_145_700..]);
    assert!(cat(&b, &[("arg", &root), ("length", "0")]).await.is_empty());
    let res = post(&b, "cat", &[("arg", &root), ("offset", "-1")]).await;
    assert_eq!(res.status(), 400);
}

/// A raw HTTP/1.1 exchange, read to the end of the connection.
async fn raw_post(api: &str, target: &str, te_trailers: bool) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(api).await.unwrap();
    let te = if te_trailers { "TE: trailers\r\n" } else { "" };
    let req = format!(
        "POST {target} HTTP/1.1\r\nHost: {api}\r\n{te}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out))
        .await
        .expect("the answer ends within 60 s")
        .unwrap();
    out
}

/// A chunked response's head, body and trailer section, or `None` for the
/// body if the last chunk never came.
fn parse_chunked(raw: &[u8]) -> (String, Option<(Vec<u8>, String)>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut rest = &raw[split + 4..];
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (head, None);
        };
        let size = std::str::from_utf8(&rest[..eol]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            return (
                head,
                Some((body, String::from_utf8_lossy(rest).to_string())),
            );
        }
        if rest.len() < size + 2 {
            return (head, None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Guarantee: a failure after the 200 is never a clean, cut-off body.
#[tokio::test]
async fn a_failure_mid_cat_ends_with_kubos_error_trailer() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir.path().join("repo")).await;
    let data = test_bytes(4 * CHUNK, 5);
    let root = add(&e, &[("pin", "false")], &data).await;
    let third = leaves(&e, &root).await[2].clone();
    let res = post(&e, "block/rm", &[("arg", &third)]).await;
    assert_eq!(
        res.text().await.unwrap().trim(),
        format!(r#"{{"Hash":"{third}"}}"#)
    );

    // No peer has the third leaf: its fetch fails after `timeout`.
    let target = format!("/api/v0/cat?arg={root}&timeout=500ms");
    let raw = raw_post(&e.api, &target, true).await;
    let (head, end) = parse_chunked(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head_lc = head.to_ascii_lowercase();
    assert!(head_lc.contains("\r\ntrailer: x-stream-error"), "{head}");
    assert!(head_lc.contains("\r\ntransfer-encoding: chunked"), "{head}");
    let (body, trailers) = end.expect("a complete chunked body");
    assert!(body == data[..2 * CHUNK], "got {} bytes", body.len());
    let trailer = trailers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-stream-error:"))
        .unwrap_or_else(|| panic!("no X-Stream-Error trailer in {trailers:?}"));
    assert!(trailer.contains(&third), "{trailer}");

    // Without `TE: trailers` the trailer cannot be sent: the body stays
    // incomplete, so no client takes the cut-off bytes for the file.
    let raw = raw_post(&e.api, &target, false).await;
    let (head, end) = parse_chunked(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(end.is_none(), "a failed cat ended like a complete one");
    let res = post(&e, "cat", &[("arg", &root), ("timeout", "500ms")]).await;
    assert!(
        res.bytes().await.is_err(),
        "reqwest read a failed cat as complete"
    );
}
