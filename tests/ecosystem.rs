//! The node in other tools' hands: `/metrics` read by a real Prometheus
//! parser (the official Python client's strict OpenMetrics parser), and
//! `/health` as load balancers and service managers see it.

use std::collections::BTreeMap;
use std::time::Duration;

use ipfs_kit_p2p::api::pins::PinRequest;
use ipfs_kit_p2p::role::Role;
use testkit::python::python_or_skip;
use testkit::{NodeProc, Spawner, start_cluster, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");

/// Parses OpenMetrics text from stdin; prints `{sample name: [[labels, value]]}`.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#;

type Samples = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

async fn get(n: &NodeProc, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{}{path}", n.client.addr()))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

fn parse(py: &std::path::Path, text: &str) -> Samples {
    use std::io::Write;
    let mut child = std::process::Command::new(py)
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n--- the text:\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("parser output")
}

/// The value of the one sample `name` with these labels (among others).
fn value(s: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.get(name)?
        .iter()
        .find(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_as_openmetrics_and_tell_the_clusters_state() {
    let Some(py) = python_or_skip("the metrics test", &["prometheus_client"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sp = Spawner::new(BIN);
    let nodes = start_cluster(
        &sp,
        dir.path(),
        &[Role::Master, Role::Worker],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let master = &nodes[0];
    let cid = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
    master
        .client
        .pin_add(&PinRequest {
            cid: cid.into(),
            replication_min: Some(1),
            replication_max: Some(2),
            name: Some("metrics".into()),
            peers: None,
        })
        .await
        .unwrap();
    let scrape = || async {
        let (code, text) = get(master, "/metrics").await;
        assert_eq!(code, 200, "{text}");
        parse(&py, &text)
    };
    // The worker's replica has the pin too once its own scrape says so.
    let s = wait_for(Duration::from_secs(30), || async {
        let (_, text) = get(&nodes[1], "/metrics").await;
        let s = parse(&py, &text);
        (value(&s, "pins", &[]) == Some(1.0)).then_some(s)
    })
    .await
    .expect("the worker's /metrics never showed the pin");
    assert_eq!(value(&s, "ipfs_kit_is_leader", &[]), Some(0.0));
    assert_eq!(value(&s, "ipfs_kit_has_leader", &[]), Some(1.0));

    // GPU facts travel in heartbeats: a list (empty on a machine without
    // NVIDIA's library), for this node and each peer.
    let (peers, raw) = master.client.peers().await.unwrap();
    assert_eq!(peers.len(), 1);
    let own = ipfs_kit_p2p::health::gpus();
    assert_eq!(peers[0].gpus, own, "{raw}");
    assert_eq!(master.status().await.unwrap().gpus, own);

    let s = scrape().await;
    assert_eq!(value(&s, "ipfs_kit_up", &[]), Some(1.0));
    assert_eq!(value(&s, "ipfs_kit_is_leader", &[]), Some(1.0));
    assert!(value(&s, "ipfs_kit_epoch", &[]).unwrap() >= 1.0);
    assert!(value(&s, "ipfs_kit_leader_changes_total", &[]).unwrap() >= 1.0);
    assert_eq!(value(&s, "pins", &[]), Some(1.0));
    assert_eq!(
        value(
            &s,
            "ipfs_kit_peers",
            &[("role", "worker"), ("state", "alive")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "ipfs_kit_peers",
            &[("role", "master"), ("state", "alive")]
        ),
        Some(0.0),
        "{:?}",
        s.get("ipfs_kit_peers")
    );
    for name in ["pins_pin_queued", "pins_pinning", "pins_pin_error"] {
        assert!(value(&s, name, &[]).is_some(), "{name} missing");
    }
    assert!(value(&s, "ipfs_kit_orders_total", &[("result", "taken")]).is_some());
    assert_eq!(
        value(
            &s,
            "ipfs_kit_ipfs_state",
            &[("state", "off"), ("mode", "off")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "ipfs_kit_api_requests_total",
            &[("route", "/v1/pins"), ("method", "POST"), ("code", "200")]
        ),
        Some(1.0)
    );
    // The worker's heartbeat digest catches up with the pin.
    wait_for(Duration::from_secs(30), || async {
        let s = scrape().await;
        (value(&s, "ipfs_kit_pinset_peers_out_of_sync", &[]) == Some(0.0)
            && value(&s, "ipfs_kit_pinset_sync_lag_seconds", &[]) == Some(0.0))
        .then_some(())
    })
    .await
    .expect("the worker never showed in sync");
    // libp2p's own metrics share the registry: connections and bytes.
    assert!(
        value(&s, "libp2p_swarm_connections_established_total", &[]).is_some(),
        "libp2p swarm metrics missing: {:?}",
        s.keys().collect::<Vec<_>>()
    );
    let bytes: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("libp2p_bandwidth_bytes"))
        .flat_map(|(_, v)| v.iter().map(|(_, x)| *x))
        .sum();
    assert!(
        bytes > 0.0,
        "no bandwidth counted: {:?}",
        s.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_is_200_when_up_and_503_with_the_reason_when_ipfs_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let up = Spawner::new(BIN)
        .spawn(Role::Worker, &dir.path().join("up"), &[])
        .await
        .unwrap();
    let (code, body) = get(&up, "/health").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""status":"up""#), "{body}");

    // IPFS that is not there: the node runs, /health says why it is not ready.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut sp = Spawner::new(BIN);
    sp.ipfs = "external".into();
    sp.extra = vec!["--ipfs-api".into(), format!("127.0.0.1:{port}")];
    let down = sp
        .spawn(Role::Worker, &dir.path().join("down"), &[])
        .await
        .unwrap();
    let (code, body) = get(&down, "/health").await;
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "degraded", "{body}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or("")
            .contains("IPFS (external)"),
        "{body}"
    );
}
