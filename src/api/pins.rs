//! `/v1/pins`: the cluster pinset through any node. Writes go to the
//! leader (forwarded by the pinset task) and are answered once committed;
//! a leecher refuses them (403) but reads work everywhere.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ApiState, AppError};
use crate::pinset::actor::WriteError;
use crate::pinset::{Op, PinSpec, canonical_cid};
use crate::wire::HeldState;

/// How long a write may wait for its commit.
const WRITE_DEADLINE: Duration = Duration::from_secs(15);

/// `POST /v1/pins`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    pub cid: String,
    pub replication_min: Option<u8>,
    pub replication_max: Option<u8>,
    pub name: Option<String>,
}

/// One pin as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinView {
    pub cid: String,
    pub name: String,
    pub replication_min: u8,
    pub replication_max: u8,
    pub added_unix_ms: u64,
    /// The log index at which the change was committed (write answers only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub committed_index: Option<u64>,
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
            committed_index: None,
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

async fn write(state: &ApiState, op: Op) -> Result<u64, AppError> {
    match tokio::time::timeout(WRITE_DEADLINE, state.pins.write(op)).await {
        Err(_) => Err(AppError(
            StatusCode::GATEWAY_TIMEOUT,
            format!("not committed within {WRITE_DEADLINE:?}; it may still be"),
        )),
        Ok(Ok(index)) => Ok(index),
        Ok(Err(e @ WriteError::ReadOnly)) => Err(AppError(StatusCode::FORBIDDEN, e.to_string())),
        Ok(Err(e @ WriteError::NoLeader)) => {
            Err(AppError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
        Ok(Err(e)) => Err(AppError(StatusCode::BAD_GATEWAY, e.to_string())),
    }
}

async fn add(
    State(state): State<ApiState>,
    body: Result<Json<PinRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<PinView>, AppError> {
    let Json(req) = body.map_err(|e| bad(e.body_text()))?;
    let d = state.defaults;
    let spec = PinSpec {
        cid: canonical_cid(&req.cid).map_err(bad)?,
        name: req.name.unwrap_or_default(),
        replication_min: req.replication_min.unwrap_or(d.replication_min),
        replication_max: req
            .replication_max
            .unwrap_or(d.replication_max.max(req.replication_min.unwrap_or(0))),
        added_unix_ms: crate::node::unix_ms(),
    };
    spec.check().map_err(bad)?;
    let index = write(&state, Op::Pin(spec.clone())).await?;
    Ok(Json(PinView {
        committed_index: Some(index),
        ..spec.into()
    }))
}

async fn list(State(state): State<ApiState>) -> Result<Json<Vec<PinView>>, AppError> {
    let pins = state
        .pins
        .list()
        .await
        .map_err(|e| AppError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(pins.into_iter().map(PinView::from).collect()))
}

async fn show(
    State(state): State<ApiState>,
    Path(cid): Path<String>,
) -> Result<Json<PinView>, AppError> {
    let cid = canonical_cid(&cid).map_err(bad)?;
    match state.pins.get(&cid).await {
        Ok(Some(p)) => {
            let mut view = PinView::from(p);
            match state.node.pin_peers(&cid).await {
                Ok(peers) => {
                    view.peers = Some(peers.into_iter().map(|(p, s)| (p, s.into())).collect())
                }
                Err(e) => view.peers_error = Some(e),
            }
            Ok(Json(view))
        }
        Ok(None) => Err(AppError(
            StatusCode::NOT_FOUND,
            format!("{cid} is not in the pinset"),
        )),
        Err(e) => Err(AppError(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

async fn remove(
    State(state): State<ApiState>,
    Path(cid): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let cid = canonical_cid(&cid).map_err(bad)?;
    let index = write(&state, Op::Unpin { cid: cid.clone() }).await?;
    Ok(Json(
        serde_json::json!({ "cid": cid, "committed_index": index }),
    ))
}
