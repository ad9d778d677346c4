//! `/v1/pins`: the cluster pinset through any node. A write is answered
//! once it is durable on `pins.write_copies` masters or workers (the answer
//! says how many); a leecher refuses writes (403); reads come from this
//! node's own replica, leechers included. `DELETE /v1/peers/{id}` forgets
//! a member that will not come back.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ApiState, AppError};
use crate::pinset::model::Entry;
use crate::pinset::replica::WriteError;
use crate::pinset::{Op, PinSpec, canonical_cid};
use crate::wire::HeldState;

/// How long a write may wait for its copies (the replica gives up first).
const WRITE_DEADLINE: Duration = Duration::from_secs(15);
/// Pins read from the replica per chunk of a listing.
const LIST_CHUNK: usize = 1024;
/// Most pins one paged listing answers.
const MAX_LIMIT: usize = 100_000;

/// `POST /v1/pins`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    pub cid: String,
    pub replication_min: Option<u8>,
    pub replication_max: Option<u8>,
    pub name: Option<String>,
    /// A peer list (`/v1/index/peers`): copies only on its masters and workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<String>,
}

/// One pin as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinView {
    pub cid: String,
    pub name: String,
    pub replication_min: u8,
    pub replication_max: u8,
    pub added_unix_ms: u64,
    /// The peer list its copies are allocated to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub allocation: Option<String>,
    /// `GET /v1/pins/{cid}` only: why the list cannot hold enough copies.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub allocation_warning: Option<String>,
    /// Write answers only: masters and workers holding the change durably.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub copies: Option<usize>,
    /// Write answers only: the change's stamp (`HLC.REPLICA`, hex).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stamp: Option<String>,
    /// `GET /v1/pins/{cid}` only: each holder's state, from the leader.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peers: Option<BTreeMap<String, PeerPin>>,
    /// Why `peers` is missing (no leader, leader unreachable).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peers_error: Option<String>,
}

/// An item on one holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerPin {
    /// queued | pinning | pinned | failed | unpinning
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

impl From<HeldState> for PeerPin {
    fn from(s: HeldState) -> Self {
        PeerPin {
            state: s.name().to_string(),
            error: match s {
                HeldState::Failed(e) => Some(e),
                _ => None,
            },
        }
    }
}

impl From<PinSpec> for PinView {
    fn from(p: PinSpec) -> Self {
        PinView {
            cid: p.cid,
            name: p.name,
            replication_min: p.replication_min,
            replication_max: p.replication_max,
            added_unix_ms: p.added_unix_ms,
            allocation: p.allocation,
            allocation_warning: None,
            copies: None,
            stamp: None,
            peers: None,
            peers_error: None,
        }
    }
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/pins", get(list).post(add))
        .route("/v1/pins/{cid}", get(show).delete(remove))
}

fn bad(msg: impl Into<String>) -> AppError {
    AppError(StatusCode::BAD_REQUEST, msg.into())
}

fn internal(e: impl std::fmt::Display) -> AppError {
    AppError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

pub(super) async fn write(
    state: &ApiState,
    op: Op,
) -> Result<crate::pinset::replica::Written, AppError> {
    match tokio::time::timeout(WRITE_DEADLINE, state.pins.write(op)).await {
        Err(_) => Err(AppError(
            StatusCode::GATEWAY_TIMEOUT,
            format!("no answer within {WRITE_DEADLINE:?}; the change may still take effect"),
        )),
        Ok(Ok(w)) => Ok(w),
        Ok(Err(e @ WriteError::ReadOnly)) => Err(AppError(StatusCode::FORBIDDEN, e.to_string())),
        Ok(Err(e @ (WriteError::Unreachable { .. } | WriteError::Timeout { .. }))) => {
            Err(AppError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
        Ok(Err(e)) => Err(internal(e)),
    }
}

fn stamp_text(w: &crate::pinset::replica::Written) -> String {
    format!("{:x}.{:016x}", w.stamp.hlc, w.stamp.author)
}

async fn add(
    State(state): State<ApiState>,
    body: Result<Json<PinRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<PinView>, AppError> {
    let Json(req) = body.map_err(|e| bad(e.body_text()))?;
    let d = state.defaults;
    let cid = canonical_cid(&req.cid).map_err(bad)?;
    // A pin updated keeps the time it was first added, and the Pinning
    // Service API's meta and origins (this API does not set them).
    let (added, meta, origins) = match state.pins.db().get(&cid) {
        Ok(Some(Entry { op: Op::Pin(p), .. })) => (p.added_unix_ms, p.meta, p.origins),
        Ok(_) => (crate::clock::unix_ms(), Default::default(), Vec::new()),
        Err(e) => return Err(internal(e)),
    };
    let spec = PinSpec {
        cid,
        name: req.name.unwrap_or_default(),
        replication_min: req.replication_min.unwrap_or(d.replication_min),
        replication_max: req
            .replication_max
            .unwrap_or(d.replication_max.max(req.replication_min.unwrap_or(0))),
        added_unix_ms: added,
        allocation: req.peers,
        meta,
        origins,
    };
    spec.check().map_err(bad)?;
    let w = write(&state, Op::Pin(spec.clone())).await?;
    Ok(Json(PinView {
        copies: Some(w.copies),
        stamp: Some(stamp_text(&w)),
        ..spec.into()
    }))
}

/// `GET /v1/pins[?after=CID&limit=N]`: the pinset as this node holds it,
/// in CID order; without `limit`, all of it, streamed a chunk at a time
/// from one consistent view (never built whole in memory).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let after = q
        .after
        .as_deref()
        .map(canonical_cid)
        .transpose()
        .map_err(bad)?;
    let view = state.pins.db().view().map_err(internal)?;
    if let Some(limit) = q.limit {
        if limit == 0 || limit > MAX_LIMIT {
            return Err(bad(format!("limit must be 1 to {MAX_LIMIT}")));
        }
        let pins = view.pins(after.as_deref(), limit).map_err(internal)?;
        let out: Vec<PinView> = pins.into_iter().map(PinView::from).collect();
        return Ok(Json(out).into_response());
    }
    // A JSON array written a chunk at a time.
    let stream = futures::stream::unfold(
        (view, after, true, false),
        |(view, after, first, done)| async move {
            if done {
                return None;
            }
            let page = match view.pins(after.as_deref(), LIST_CHUNK) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("listing pins: {e}");
                    return Some((
                        Err(std::io::Error::other(e.to_string())),
                        (view, after, first, true),
                    ));
                }
            };
            let last = page.len() < LIST_CHUNK;
            let next = page.last().map(|p| p.cid.clone()).or(after);
            let mut out = String::new();
            if first {
                out.push('[');
            }
            for (i, p) in page.into_iter().enumerate() {
                if !(first && i == 0) {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(&PinView::from(p)).unwrap_or_default());
            }
            if last {
                out.push(']');
            }
            Some((Ok(Bytes::from(out)), (view, next, false, last)))
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn show(
    State(state): State<ApiState>,
    Path(cid): Path<String>,
) -> Result<Json<PinView>, AppError> {
    let cid = canonical_cid(&cid).map_err(bad)?;
    let found = state.pins.db().get(&cid).map_err(internal)?;
    match found.map(|e| e.op) {
        Some(Op::Pin(p)) => {
            let mut view = PinView::from(p);
            if let Some(list) = &view.allocation {
                view.allocation_warning =
                    allocation_warning(&state, list, view.replication_min).await;
            }
            match state.node.pin_peers(&cid).await {
                Ok(peers) => {
                    view.peers = Some(peers.into_iter().map(|(p, s)| (p, s.into())).collect())
                }
                Err(e) => view.peers_error = Some(e),
            }
            Ok(Json(view))
        }
        _ => Err(AppError(
            StatusCode::NOT_FOUND,
            format!("{cid} is not in the pinset"),
        )),
    }
}

/// Whether the live masters and workers of `list` (as this node sees
/// them) are fewer than `min`.
async fn allocation_warning(state: &ApiState, list: &str, min: u8) -> Option<String> {
    let members = crate::index::read(&state.indexes().peers)
        .get(list)
        .cloned()
        .unwrap_or_default();
    let status = state.node.status().await?;
    let me = (status.peer_id.as_str(), status.role, true);
    let live = std::iter::once(me)
        .chain(
            status
                .peers
                .iter()
                .map(|p| (p.peer_id.as_str(), p.role, p.healthy)),
        )
        .filter(|(id, role, healthy)| *healthy && role.can_lead() && members.contains(*id))
        .count();
    (live < usize::from(min)).then(|| {
        format!(
            "peer list {list:?} has {live} live master(s) or worker(s) of {} member(s); {min} \
             copies are wanted, so the item stays under-replicated until the list grows",
            members.len()
        )
    })
}

async fn remove(
    State(state): State<ApiState>,
    Path(cid): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let cid = canonical_cid(&cid).map_err(bad)?;
    let w = write(&state, Op::Unpin { cid: cid.clone() }).await?;
    Ok(Json(serde_json::json!({
        "cid": cid,
        "copies": w.copies,
        "stamp": stamp_text(&w),
    })))
}

/// `DELETE /v1/peers/{id}`: forgets a member, so it no longer counts for
/// `write_copies` (for a machine that will not come back).
pub(super) async fn remove_member(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let peer: libp2p::PeerId = id
        .parse()
        .map_err(|e| bad(format!("{id:?} is not a peer ID: {e}")))?;
    let id = peer.to_base58();
    match state.pins.remove_member(id.clone()).await {
        Ok(true) => Ok(Json(serde_json::json!({ "removed": id }))),
        Ok(false) => Err(AppError(
            StatusCode::NOT_FOUND,
            format!("{id} is not a member this node knows"),
        )),
        Err(e) => Err(AppError(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}
