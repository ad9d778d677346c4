//! The IPFS Pinning Service API v1.0.0 under `/pinning`, so `ipfs pin
//! remote service add cluster http://HOST:PORT/pinning TOKEN` makes the
//! cluster a remote pinning service of any kubo.
//!
//! How the spec's objects map onto the cluster pinset:
//! - `requestid` is the pin's canonical CID. The pinset holds one pin per
//!   CID, so pinning a CID again updates that request (as IPFS Cluster's
//!   own implementation does) rather than making a second one.
//! - `status` comes from the leader's view of the holders: `pinned` once
//!   `min(replication_min, live eligible holders)` (at least 1) hold it,
//!   `failed` when holders failed and none is still working on it,
//!   `pinning` while some are, `queued` before any is (or while there is
//!   no leader to ask, which `info.status_details` says).
//! - `created` is when the pin was first added (the writer's clock) plus a
//!   sub-millisecond part taken from the CID, so every node shows the same
//!   value and two pins of one millisecond still differ (unless their CIDs
//!   collide in 20 bits as well).
//! - `delegates` are the holders' IPFS multiaddrs (each ends in `/p2p/ID`),
//!   before any holder this node's own; `origins` are kept with the pin and
//!   the leader hands them to holders, whose IPFS dials them (best effort).
//! - `meta` is kept with the pin (at most 4 KiB); `GET /pins` filters on it.
//! - Writes are the pinset's: answered once durable on `pins.write_copies`
//!   masters and workers; a leecher refuses them (403).
//! - Errors have the spec's shape, `{"error":{"reason","details"}}`.
//!
//! A listing reads the whole pinset (and asks the leader for the holders'
//! states of every pin a status filter needs): it costs time in proportion
//! to the pinset, not to the page.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ApiState, AppError};
use crate::pinset::canonical_cid;
use crate::pinset::model::{Entry, MAX_META_BYTES, MAX_NAME, MAX_ORIGINS, Op, PinSpec};
use crate::status::StatusView;
use crate::wire::{HeldState, MAX_STATUS_CIDS};

/// Most results one listing answers (the spec's bound).
const MAX_LIMIT: usize = 1000;
/// Most CIDs one listing may filter on (the spec's bound).
const MAX_CIDS: usize = 10;
/// Most delegates one answer carries (the spec's bound).
const MAX_DELEGATES: usize = 20;
/// Pins read from the replica per chunk of a listing.
const CHUNK: usize = 1024;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/pinning/pins", get(list).post(add))
        .route(
            "/pinning/pins/{requestid}",
            get(show).post(replace).delete(remove),
        )
}

/// An error in the spec's shape.
pub(super) struct Failure(pub(super) StatusCode, pub(super) String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let reason = match self.0 {
            StatusCode::BAD_REQUEST => "BAD_REQUEST",
            StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
            StatusCode::FORBIDDEN => "FORBIDDEN",
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
            StatusCode::GATEWAY_TIMEOUT => "TIMEOUT",
            _ => "INTERNAL_SERVER_ERROR",
        };
        let body = serde_json::json!({ "error": { "reason": reason, "details": self.1 } });
        (self.0, Json(body)).into_response()
    }
}

impl From<AppError> for Failure {
    fn from(e: AppError) -> Failure {
        Failure(e.0, e.1)
    }
}

fn bad(details: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, details.into())
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn not_found(requestid: &str) -> Failure {
    Failure(
        StatusCode::NOT_FOUND,
        format!("no pin request {requestid:?} (a request ID is the pin's CID)"),
    )
}

/// The spec's `Pin`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pin {
    pub cid: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_only"
    )]
    pub name: Option<String>,
    #[serde(default)]
    pub origins: Vec<String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

/// A string where the spec allows no `null`.
fn string_only<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// The spec's `PinStatus`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinStatus {
    pub requestid: String,
    pub status: String,
    pub created: String,
    pub pin: Pin,
    pub delegates: Vec<String>,
    pub info: BTreeMap<String, String>,
}

/// The spec's `PinResults`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinResults {
    pub count: u64,
    pub results: Vec<PinStatus>,
}

/// `created`, in nanoseconds since the Unix epoch: the time first added
/// and 20 bits of the CID's FNV-1a hash below the millisecond.
fn created_ns(p: &PinSpec) -> i128 {
    let hash = p.cid.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    i128::from(p.added_unix_ms) * 1_000_000 + i128::from(hash % 1_000_000)
}

fn rfc3339(ns: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ns)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn parse_time(field: &str, text: &str) -> Result<i128, Failure> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp_nanos())
        .map_err(|e| {
            bad(format!(
                "{field}: {text:?} is not an RFC 3339 timestamp ({e})"
            ))
        })
}

/// Checks a `Pin` from a client; the pin's CID in canonical form.
fn check_pin(pin: &Pin) -> Result<String, Failure> {
    let cid = canonical_cid(&pin.cid).map_err(bad)?;
    if pin.name.as_ref().is_some_and(|n| n.len() > MAX_NAME) {
        return Err(bad(format!("name: longer than {MAX_NAME} bytes")));
    }
    let mut seen = BTreeSet::new();
    if let Some(o) = pin.origins.iter().find(|o| !seen.insert(o.as_str())) {
        return Err(bad(format!(
            "origins: {o:?} is given twice (they must be unique)"
        )));
    }
    if pin.origins.len() > MAX_ORIGINS {
        return Err(bad(format!("origins: at most {MAX_ORIGINS}")));
    }
    for o in &pin.origins {
        o.parse::<libp2p::Multiaddr>()
            .map_err(|e| bad(format!("origins: {o:?} is not a multiaddr ({e})")))?;
    }
    let bytes: usize = pin.meta.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_META_BYTES {
        return Err(bad(format!(
            "meta: {bytes} bytes; at most {MAX_META_BYTES} are kept"
        )));
    }
    Ok(cid)
}

fn pin_of(p: &PinSpec) -> Pin {
    Pin {
        cid: p.cid.clone(),
        name: (!p.name.is_empty()).then(|| p.name.clone()),
        origins: p.origins.clone(),
        meta: p.meta.clone(),
    }
}

/// The pin `cid`, if the pinset has it.
fn find(state: &ApiState, cid: &str) -> Result<Option<PinSpec>, Failure> {
    match state.pins.db().get(cid).map_err(internal)? {
        Some(Entry { op: Op::Pin(p), .. }) => Ok(Some(p)),
        _ => Ok(None),
    }
}

/// Writes `pin` into the pinset: a new pin takes the replication defaults;
/// an existing one keeps its replication, allocation and first-added time.
async fn write_pin(state: &ApiState, cid: String, pin: Pin) -> Result<PinSpec, Failure> {
    let d = state.defaults;
    let old = find(state, &cid)?;
    let spec = PinSpec {
        name: pin.name.unwrap_or_default(),
        meta: pin.meta,
        origins: pin.origins,
        ..old.unwrap_or(PinSpec {
            cid: cid.clone(),
            name: String::new(),
            replication_min: d.replication_min,
            replication_max: d.replication_max.max(d.replication_min),
            added_unix_ms: crate::clock::unix_ms(),
            allocation: None,
            meta: BTreeMap::new(),
            origins: Vec::new(),
        })
    };
    spec.check().map_err(bad)?;
    super::pins::write(state, Op::Pin(spec.clone())).await?;
    Ok(spec)
}

async fn add(
    State(state): State<ApiState>,
    body: Result<Json<Pin>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<PinStatus>), Failure> {
    let Json(pin) = body.map_err(|e| bad(e.body_text()))?;
    let cid = check_pin(&pin)?;
    let spec = write_pin(&state, cid, pin).await?;
    Ok((StatusCode::ACCEPTED, Json(status_of(&state, spec).await?)))
}

fn requested(requestid: &str) -> Result<String, Failure> {
    canonical_cid(requestid).map_err(|_| not_found(requestid))
}

async fn show(
    State(state): State<ApiState>,
    Path(requestid): Path<String>,
) -> Result<Json<PinStatus>, Failure> {
    let cid = requested(&requestid)?;
    let spec = find(&state, &cid)?.ok_or_else(|| not_found(&requestid))?;
    Ok(Json(status_of(&state, spec).await?))
}

/// One pin's `PinStatus`.
async fn status_of(state: &ApiState, spec: PinSpec) -> Result<PinStatus, Failure> {
    let one = Describer::new(state).await?.describe(vec![spec]).await;
    one.into_iter().next().ok_or_else(|| internal("no answer"))
}

/// Replaces a pin: the new one is written first, then the old one removed,
/// so blocks both share are never unpinned in between.
async fn replace(
    State(state): State<ApiState>,
    Path(requestid): Path<String>,
    body: Result<Json<Pin>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<PinStatus>), Failure> {
    let old = requested(&requestid)?;
    find(&state, &old)?.ok_or_else(|| not_found(&requestid))?;
    let Json(pin) = body.map_err(|e| bad(e.body_text()))?;
    let cid = check_pin(&pin)?;
    let spec = write_pin(&state, cid.clone(), pin).await?;
    if cid != old {
        super::pins::write(&state, Op::Unpin { cid: old }).await?;
    }
    Ok((StatusCode::ACCEPTED, Json(status_of(&state, spec).await?)))
}

async fn remove(
    State(state): State<ApiState>,
    Path(requestid): Path<String>,
) -> Result<StatusCode, Failure> {
    let cid = requested(&requestid)?;
    find(&state, &cid)?.ok_or_else(|| not_found(&requestid))?;
    super::pins::write(&state, Op::Unpin { cid }).await?;
    Ok(StatusCode::ACCEPTED)
}

/// How `name` is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Exact,
    IExact,
    Partial,
    IPartial,
}

/// `GET /pins`'s filters.
struct Filters {
    cids: Option<BTreeSet<String>>,
    name: Option<(String, Match)>,
    statuses: BTreeSet<String>,
    before: Option<i128>,
    after: Option<i128>,
    limit: usize,
    meta: BTreeMap<String, String>,
}

const STATUSES: [&str; 4] = ["queued", "pinning", "pinned", "failed"];

/// Parses the query (`cid` and `status` comma-separated or repeated).
fn filters(query: Vec<(String, String)>) -> Result<Filters, Failure> {
    let mut f = Filters {
        cids: None,
        name: None,
        statuses: BTreeSet::new(),
        before: None,
        after: None,
        limit: 10,
        meta: BTreeMap::new(),
    };
    let mut matching = Match::Exact;
    let mut name = None;
    for (key, value) in query {
        match key.as_str() {
            "cid" => {
                let cids = f.cids.get_or_insert_with(BTreeSet::new);
                for c in value.split(',') {
                    let c = canonical_cid(c).map_err(|e| bad(format!("cid: {e}")))?;
                    if !cids.insert(c.clone()) {
                        return Err(bad(format!("cid: {c} is given twice")));
                    }
                }
                if cids.len() > MAX_CIDS {
                    return Err(bad(format!("cid: at most {MAX_CIDS}")));
                }
            }
            "name" if value.len() > MAX_NAME => {
                return Err(bad(format!("name: longer than {MAX_NAME} bytes")));
            }
            "name" => name = Some(value),
            "match" => {
                matching = match value.as_str() {
                    "exact" => Match::Exact,
                    "iexact" => Match::IExact,
                    "partial" => Match::Partial,
                    "ipartial" => Match::IPartial,
                    other => {
                        return Err(bad(format!(
                            "match: {other:?} is not exact, iexact, partial or ipartial"
                        )));
                    }
                }
            }
            "status" => {
                for s in value.split(',') {
                    if !STATUSES.contains(&s) {
                        return Err(bad(format!(
                            "status: {s:?} is not queued, pinning, pinned or failed"
                        )));
                    }
                    if !f.statuses.insert(s.to_owned()) {
                        return Err(bad(format!("status: {s} is given twice")));
                    }
                }
            }
            "before" => f.before = Some(parse_time("before", &value)?),
            "after" => f.after = Some(parse_time("after", &value)?),
            "limit" => {
                f.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad(format!("limit: {value:?} is not 1 to {MAX_LIMIT}")))?;
            }
            "meta" => {
                f.meta = serde_json::from_str(&value)
                    .map_err(|e| bad(format!("meta: not a JSON object of strings ({e})")))?;
            }
            other => return Err(bad(format!("unknown query parameter {other:?}"))),
        }
    }
    f.name = name.map(|n| (n, matching));
    if f.statuses.is_empty() {
        // The spec's default: successful pins only.
        f.statuses.insert("pinned".into());
    }
    Ok(f)
}

impl Filters {
    /// Whether `p` passes every filter but the status.
    fn admits(&self, p: &PinSpec) -> bool {
        let created = created_ns(p);
        self.cids.as_ref().is_none_or(|c| c.contains(&p.cid))
            && self.before.is_none_or(|b| created < b)
            && self.after.is_none_or(|a| created > a)
            && self.meta.iter().all(|(k, v)| p.meta.get(k) == Some(v))
            && self.name.as_ref().is_none_or(|(n, m)| match m {
                Match::Exact => p.name == *n,
                Match::IExact => p.name.to_lowercase() == n.to_lowercase(),
                Match::Partial => p.name.contains(n.as_str()),
                Match::IPartial => p.name.to_lowercase().contains(&n.to_lowercase()),
            })
    }
}

async fn list(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PinResults>, Failure> {
    let Query(query) = query.map_err(|e| bad(e.body_text()))?;
    let f = filters(query)?;
    // Every pin the other filters admit, as (created, CID).
    let mut found: Vec<(i128, String)> = Vec::new();
    match &f.cids {
        Some(cids) => {
            for cid in cids {
                if let Some(p) = find(&state, cid)?.filter(|p| f.admits(p)) {
                    found.push((created_ns(&p), p.cid));
                }
            }
        }
        None => {
            let view = state.pins.db().view().map_err(internal)?;
            let mut after: Option<String> = None;
            loop {
                let page = view.pins(after.as_deref(), CHUNK).map_err(internal)?;
                let last = page.len() < CHUNK;
                after = page.last().map(|p| p.cid.clone());
                found.extend(
                    page.into_iter()
                        .filter(|p| f.admits(p))
                        .map(|p| (created_ns(&p), p.cid)),
                );
                if last {
                    break;
                }
            }
        }
    }
    // Newest first.
    found.sort_unstable_by(|a, b| b.cmp(a));
    let describer = Describer::new(&state).await?;
    let mut count = 0u64;
    let mut results = Vec::new();
    if f.statuses.len() == STATUSES.len() {
        count = found.len() as u64;
        found.truncate(f.limit);
        let specs = specs(&state, found.iter().map(|(_, c)| c))?;
        results = describer.describe(specs).await;
    } else {
        for chunk in found.chunks(MAX_STATUS_CIDS) {
            let specs = specs(&state, chunk.iter().map(|(_, c)| c))?;
            let described = describer.describe_strict(specs).await?;
            for s in described
                .into_iter()
                .filter(|s| f.statuses.contains(&s.status))
            {
                count += 1;
                if results.len() < f.limit {
                    results.push(s);
                }
            }
        }
    }
    Ok(Json(PinResults { count, results }))
}

fn specs<'a>(
    state: &ApiState,
    cids: impl Iterator<Item = &'a String>,
) -> Result<Vec<PinSpec>, Failure> {
    let mut out = Vec::new();
    for cid in cids {
        out.extend(find(state, cid)?);
    }
    Ok(out)
}

/// Turns pins into `PinStatus`es: asks the leader for their holders and
/// this node for the cluster's members (once per request).
struct Describer<'a> {
    state: &'a ApiState,
    status: StatusView,
}

impl<'a> Describer<'a> {
    async fn new(state: &'a ApiState) -> Result<Describer<'a>, Failure> {
        let status = state.node.status().await.ok_or_else(|| {
            Failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "the node is not answering".into(),
            )
        })?;
        Ok(Describer { state, status })
    }

    /// Statuses; without the leader's answer each is `queued` and says why.
    async fn describe(&self, specs: Vec<PinSpec>) -> Vec<PinStatus> {
        let cids: Vec<String> = specs.iter().map(|p| p.cid.clone()).collect();
        let mut out = Vec::new();
        for (chunk, cids) in specs
            .chunks(MAX_STATUS_CIDS)
            .zip(cids.chunks(MAX_STATUS_CIDS))
        {
            let holders = self.state.node.pin_statuses(cids.to_vec()).await;
            for (i, p) in chunk.iter().enumerate() {
                let h = holders
                    .as_ref()
                    .map(|h| h[i].as_slice())
                    .map_err(String::as_str);
                out.push(self.one(p, h));
            }
        }
        out
    }

    /// Statuses, or 503 when the leader cannot be asked (a listing filtered
    /// by status would otherwise leave out what it cannot place).
    async fn describe_strict(&self, specs: Vec<PinSpec>) -> Result<Vec<PinStatus>, Failure> {
        let cids: Vec<String> = specs.iter().map(|p| p.cid.clone()).collect();
        let holders = self.state.node.pin_statuses(cids).await.map_err(|e| {
            Failure(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot filter by status: no view of the holders ({e})"),
            )
        })?;
        Ok(specs
            .iter()
            .zip(&holders)
            .map(|(p, h)| self.one(p, Ok(h)))
            .collect())
    }

    fn one(&self, p: &PinSpec, holders: Result<&[(String, HeldState)], &str>) -> PinStatus {
        let (status, details, holding) = match holders {
            Err(e) => ("queued", format!("no view of the holders: {e}"), Vec::new()),
            Ok(h) => {
                let target = usize::from(p.replication_min).min(self.eligible(p)).max(1);
                let count = |f: fn(&HeldState) -> bool| h.iter().filter(|(_, s)| f(s)).count();
                let pinned = count(|s| *s == HeldState::Pinned);
                let busy = count(|s| matches!(s, HeldState::Pinning | HeldState::Queued));
                let failed = count(|s| matches!(s, HeldState::Failed(_)));
                let status = if pinned >= target {
                    "pinned"
                } else if failed > 0 && busy == 0 {
                    "failed"
                } else if pinned > 0 || count(|s| *s == HeldState::Pinning) > 0 {
                    "pinning"
                } else {
                    "queued"
                };
                let each: Vec<String> = h
                    .iter()
                    .map(|(id, s)| match s {
                        HeldState::Failed(e) => format!("{id}: failed ({e})"),
                        s => format!("{id}: {}", s.name()),
                    })
                    .collect();
                let details = format!(
                    "{pinned} of {target} copies pinned; {}",
                    if each.is_empty() {
                        "no holder yet".into()
                    } else {
                        each.join(", ")
                    }
                );
                let holding = h
                    .iter()
                    .filter(|(_, s)| !matches!(s, HeldState::Absent | HeldState::Unpinning))
                    .map(|(id, _)| id.clone())
                    .collect();
                (status, details, holding)
            }
        };
        let mut info = BTreeMap::new();
        info.insert("status_details".to_owned(), details);
        info.insert(
            "replication".to_owned(),
            format!("{}..{}", p.replication_min, p.replication_max),
        );
        PinStatus {
            requestid: p.cid.clone(),
            status: status.into(),
            created: rfc3339(created_ns(p)),
            pin: pin_of(p),
            delegates: self.delegates(&holding),
            info,
        }
    }

    /// Live masters and workers that may hold `p` (its peer list's, if any).
    fn eligible(&self, p: &PinSpec) -> usize {
        let s = &self.status;
        let members = p.allocation.as_ref().map(|l| {
            crate::index::read(&self.state.indexes().peers)
                .get(l)
                .cloned()
                .unwrap_or_default()
        });
        let admits = |id: &str| members.as_ref().is_none_or(|m| m.contains(id));
        let me = usize::from(s.role.can_lead() && admits(&s.peer_id));
        me + s
            .peers
            .iter()
            .filter(|q| q.healthy && q.role.can_lead() && admits(&q.peer_id))
            .count()
    }

    /// The holders' IPFS addresses (`/p2p/ID` at the end); before any
    /// holder, this node's IPFS; without any IPFS, this node itself.
    fn delegates(&self, holding: &[String]) -> Vec<String> {
        let s = &self.status;
        let mut out: Vec<String> = Vec::new();
        let take = |out: &mut Vec<String>, addrs: &[String]| {
            for a in addrs {
                if out.len() < MAX_DELEGATES && a.contains("/p2p/") && !out.contains(a) {
                    out.push(a.clone());
                }
            }
        };
        for id in holding {
            if *id == s.peer_id {
                take(&mut out, &s.ipfs.addrs);
            } else if let Some(info) = s
                .peers
                .iter()
                .find(|q| q.peer_id == *id)
                .and_then(|q| q.ipfs.as_ref())
            {
                take(&mut out, &info.addrs);
            }
        }
        if out.is_empty() {
            take(&mut out, &s.ipfs.addrs);
        }
        if out.is_empty() {
            let own: Vec<String> = s
                .listen_addrs
                .iter()
                .map(|a| format!("{a}/p2p/{}", s.peer_id))
                .chain(std::iter::once(format!("/p2p/{}", s.peer_id)))
                .collect();
            take(&mut out, &own);
        }
        out
    }
}
