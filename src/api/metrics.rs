//! `GET /metrics` (Prometheus text format) and `GET /health`.
//!
//! One registry holds libp2p's own metrics (`libp2p_*`: swarm, bandwidth,
//! identify, Kademlia, ping, gossipsub, recorded by the node's event loop)
//! and the node's: each scrape asks the node for its status and turns it
//! into gauges and counters ([`StatusCollector`]), so the figures are those
//! `status` shows at that moment and nothing is counted twice. Pins by
//! holder state use IPFS Cluster's names (`pins`, `pins_pin_queued`,
//! `pins_pinning`, `pins_pin_error`); the rest are `ipfs_kit_*`.
//!
//! `/health` answers 200 when the node's event loop answers and its IPFS is
//! ready (or it runs none), else 503 with the reason: for load balancers and
//! service managers, it never needs the API token.

use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::ApiState;
use crate::ipfs::Mode;
use crate::role::Role;
use crate::status::StatusView;

/// The registry and what the API itself counts.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    snapshot: Arc<Mutex<Option<StatusView>>>,
    /// One scrape at a time: the snapshot and the encoding go together.
    scrape: Arc<tokio::sync::Mutex<()>>,
    requests: Family<Vec<(&'static str, String)>, Counter>,
    errors: Family<Vec<(&'static str, String)>, Counter>,
}

impl Metrics {
    /// Adds the node's metrics to `registry` (which holds libp2p's).
    pub fn new(mut registry: Registry) -> Metrics {
        let snapshot = Arc::new(Mutex::new(None));
        registry.register_collector(Box::new(StatusCollector(snapshot.clone())));
        let requests = Family::default();
        registry.register(
            "ipfs_kit_api_requests",
            "Control API requests answered, by route, method and status code",
            requests.clone(),
        );
        let errors = Family::default();
        registry.register(
            "ipfs_kit_api_errors",
            "Control API requests answered with a 4xx or 5xx status, by route",
            errors.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            snapshot,
            scrape: Default::default(),
            requests,
            errors,
        }
    }
}

/// Counts every request that matched a route (`route_layer`, so the route
/// label is the route's pattern, never a client's path: bounded).
pub(super) async fn count(State(m): State<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    let code = resp.status().as_u16();
    m.requests
        .get_or_create(&vec![
            ("route", route.clone()),
            ("method", method),
            ("code", code.to_string()),
        ])
        .inc();
    if code >= 400 {
        m.errors.get_or_create(&vec![("route", route)]).inc();
    }
    resp
}

pub(super) async fn metrics(State(s): State<ApiState>) -> Response {
    let m = &s.metrics;
    let _one = m.scrape.lock().await;
    let status = super::full_status(&s, true).await.ok();
    if let Ok(mut snap) = m.snapshot.lock() {
        *snap = status;
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &m.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub(super) async fn health(State(s): State<ApiState>) -> Response {
    let (code, body) = health_of(s.node.status_brief().await.as_ref());
    (code, axum::Json(body)).into_response()
}

/// 200 `{"status":"up"}`, or 503 with `reason`.
fn health_of(status: Option<&StatusView>) -> (StatusCode, serde_json::Value) {
    let Some(s) = status else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({
                "status": "down",
                "reason": "the node's event loop does not answer",
            }),
        );
    };
    let leader = s.leader.as_ref().map(|l| l.peer_id.clone());
    if s.ipfs.mode != Mode::Off && !s.ipfs.is_ready() {
        let mut reason = format!("IPFS ({}) is {}", s.ipfs.mode, s.ipfs.state);
        if let Some(e) = &s.ipfs.last_error {
            reason.push_str(": ");
            reason.push_str(e);
        }
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({
                "status": "degraded",
                "reason": reason,
                "ipfs": s.ipfs.state,
                "leader": leader,
            }),
        );
    }
    (
        StatusCode::OK,
        serde_json::json!({ "status": "up", "ipfs": s.ipfs.state, "leader": leader }),
    )
}

/// Turns the status taken at a scrape into metrics.
#[derive(Debug)]
struct StatusCollector(Arc<Mutex<Option<StatusView>>>);

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

/// A gauge family: one series per label set.
fn gauges(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, i64)],
) -> std::fmt::Result {
    let mut d = e.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(d.encode_family(labels)?)?;
    }
    Ok(())
}

fn counters(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> std::fmt::Result {
    let mut d = e.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(d.encode_family(labels)?)?;
    }
    Ok(())
}

fn n(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

impl Collector for StatusCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let Ok(snap) = self.0.lock() else {
            return Ok(());
        };
        let Some(s) = snap.as_ref() else {
            return gauge(
                &mut e,
                "ipfs_kit_up",
                "Whether the node's event loop answered this scrape",
                0,
            );
        };
        gauge(
            &mut e,
            "ipfs_kit_up",
            "Whether the node's event loop answered this scrape",
            1,
        )?;
        let role = s.role.to_string();
        gauges(
            &mut e,
            "ipfs_kit_info",
            "This node: peer ID, role, cluster, version (always 1)",
            &[(
                vec![
                    ("peer_id", &s.peer_id),
                    ("role", &role),
                    ("cluster", &s.cluster),
                    ("version", &s.version),
                ],
                1,
            )],
        )?;
        let leads = s.leader.as_ref().is_some_and(|l| l.peer_id == s.peer_id);
        gauge(
            &mut e,
            "ipfs_kit_has_leader",
            "Whether this node follows a leader",
            i64::from(s.leader.is_some()),
        )?;
        gauge(
            &mut e,
            "ipfs_kit_is_leader",
            "Whether this node leads the cluster",
            i64::from(leads),
        )?;
        gauge(
            &mut e,
            "ipfs_kit_epoch",
            "The highest election epoch this node has seen",
            n(s.epoch),
        )?;
        gauge(
            &mut e,
            "ipfs_kit_isolated",
            "Whether this node leads while reaching no other master or worker it knows",
            i64::from(s.isolated),
        )?;
        counter(
            &mut e,
            "ipfs_kit_leader_changes",
            "Times the leader this node follows changed (failovers, failbacks, losses)",
            s.leader_changes,
        )?;
        let d = &s.probe_datagrams;
        for (name, help, v) in [
            (
                "ipfs_kit_probe_datagrams_sent",
                "Probe datagrams and answers to them this node sent (resends counted)",
                d.sent,
            ),
            (
                "ipfs_kit_probe_datagrams_acked",
                "Answers to this node's probe datagrams, signed by the peer probed",
                d.acked,
            ),
            (
                "ipfs_kit_probe_datagrams_answered",
                "Members' probe datagrams this node answered",
                d.answered,
            ),
            (
                "ipfs_kit_probe_datagrams_dropped",
                "Probe datagrams dropped: oversized or malformed, a probe not from a connected member at its address and port or over the rate, an answer to no probe of this node or not signed by the peer probed",
                d.dropped,
            ),
            (
                "ipfs_kit_probe_datagrams_refused",
                "This node's probe datagrams refused by the peer's host (ICMP port unreachable), each taken as a failed probe at once",
                d.refused,
            ),
            (
                "ipfs_kit_probe_pinged_after_datagrams",
                "This node's probes sent by datagram first that went over the connection too, unanswered within probe_connection_after_ms",
                d.pinged_after,
            ),
            (
                "ipfs_kit_probe_pings_answered",
                "Members' probes this node answered over the connection",
                d.pings_answered,
            ),
            (
                "ipfs_kit_probe_asked_others",
                "Rounds in which this node asked other members to probe its target (its own probes unanswered, or a prober's request to the successor)",
                d.asked_others,
            ),
        ] {
            counter(&mut e, name, help, v)?;
        }
        gauge(
            &mut e,
            "ipfs_kit_uptime_seconds",
            "Seconds since the node started",
            n(s.uptime_ms / 1000),
        )?;

        let mut peers: std::collections::BTreeMap<(String, &str), i64> = Default::default();
        for role in [Role::Master, Role::Worker, Role::Leecher] {
            for state in ["alive", "suspect", "dead", "left", "silent"] {
                peers.insert((role.to_string(), state), 0);
            }
        }
        for p in &s.peers {
            *peers
                .entry((p.role.to_string(), p.state.as_str()))
                .or_default() += 1;
        }
        let series: Vec<(Labels, i64)> = peers
            .iter()
            .map(|((role, state), v)| (vec![("role", role.as_str()), ("state", *state)], *v))
            .collect();
        gauges(
            &mut e,
            "ipfs_kit_peers",
            "Peers known, by role and liveness",
            &series,
        )?;

        let p = &s.pinset;
        gauge(
            &mut e,
            "pins",
            "Items in the cluster pinset (this node's replica)",
            n(p.pins),
        )?;
        gauge(
            &mut e,
            "ipfs_kit_pinset_tombstones",
            "Removals kept so older pins cannot come back",
            n(p.tombstones),
        )?;
        gauge(
            &mut e,
            "ipfs_kit_pinset_changes",
            "Pinset changes this replica has seen",
            n(p.changes),
        )?;
        gauge(
            &mut e,
            "ipfs_kit_pinset_pending_writes",
            "Writes waiting for their copies",
            n(p.pending_writes),
        )?;
        let out_of_sync = s
            .peers
            .iter()
            .filter(|q| q.healthy && q.role.can_lead() && q.pinset.is_some_and(|d| d != p.digest))
            .count();
        gauge(
            &mut e,
            "ipfs_kit_pinset_peers_out_of_sync",
            "Live masters and workers whose pinset differs from this node's (by heartbeat digest)",
            n(out_of_sync),
        )?;
        let lag = s
            .peers
            .iter()
            .filter(|q| q.healthy && q.role.can_lead() && q.pinset.is_some_and(|d| d != p.digest))
            .map(|q| match p.synced.get(&q.peer_id) {
                Some(Some(at)) => at.elapsed().as_secs(),
                _ => s.uptime_ms / 1000,
            })
            .max()
            .unwrap_or(0);
        gauge(
            &mut e,
            "ipfs_kit_pinset_sync_lag_seconds",
            "Longest time since a live master or worker that differs was last known in sync (0: all in sync)",
            n(lag),
        )?;

        let h = &s.held;
        gauge(
            &mut e,
            "pins_pin_queued",
            "Items waiting to be pinned on this node's IPFS",
            n(h.queued),
        )?;
        gauge(
            &mut e,
            "pins_pinning",
            "Items being pinned on this node's IPFS",
            n(h.pinning),
        )?;
        gauge(
            &mut e,
            "pins_pin_error",
            "Items whose pin failed on this node's IPFS",
            n(h.failed),
        )?;
        gauges(
            &mut e,
            "ipfs_kit_held",
            "Items this node's IPFS holds for the cluster, by state",
            &[
                (vec![("state", "queued")], n(h.queued)),
                (vec![("state", "pinning")], n(h.pinning)),
                (vec![("state", "pinned")], n(h.pinned)),
                (vec![("state", "failed")], n(h.failed)),
                (vec![("state", "unpinning")], n(h.unpinning)),
            ],
        )?;
        let o = &s.orders;
        counters(
            &mut e,
            "ipfs_kit_orders",
            "Orders sent to holders while this node led, by outcome",
            &[
                (vec![("result", "taken")], o.sent),
                (vec![("result", "refused")], o.refused),
                (vec![("result", "unanswered")], o.failed),
            ],
        )?;

        let ipfs = &s.ipfs;
        let mode = ipfs.mode.to_string();
        gauges(
            &mut e,
            "ipfs_kit_ipfs_state",
            "This node's IPFS: 1 for its current state and mode",
            &[(
                vec![("state", ipfs.state.as_str()), ("mode", mode.as_str())],
                1,
            )],
        )?;
        gauge(
            &mut e,
            "ipfs_kit_ipfs_up",
            "Whether this node's IPFS is ready",
            i64::from(ipfs.is_ready()),
        )?;
        counter(
            &mut e,
            "ipfs_kit_ipfs_restarts",
            "Restarts of this node's IPFS daemon",
            u64::from(ipfs.restarts),
        )?;

        let dropped: Vec<(Labels, u64)> = s
            .trust
            .dropped
            .iter()
            .map(|(reason, v)| (vec![("reason", reason.as_str())], *v))
            .collect();
        counters(
            &mut e,
            "ipfs_kit_dropped",
            "Messages and peers dropped, by reason",
            &dropped,
        )?;
        counter(
            &mut e,
            "ipfs_kit_api_unauthorized",
            "Control API requests refused for a missing or wrong token",
            s.api_unauthorized,
        )?;
        gauge(
            &mut e,
            "ipfs_kit_foreign_peers",
            "Peers of other clusters or software met and disconnected",
            n(s.foreign_peers),
        )?;
        Ok(())
    }
}
