//! `/v1/index/peers`: named lists of peers.

use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ApiState, AppError, Wrote, bad, not_found, write};
use crate::index::peers::{self, ListInfo, MAX_MEMBERS};
use crate::index::{TAG_PEERS, key, read};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/index/peers", get(list))
        .route("/v1/index/peers/{list}", get(show).put(set).delete(remove))
        .route("/v1/index/peers/{list}/{peer}", put(add).delete(remove_one))
}

async fn list(State(s): State<ApiState>) -> Json<Vec<ListInfo>> {
    Json(read(&s.indexes().peers).lists())
}

async fn show(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<ListInfo>, AppError> {
    let lists = read(&s.indexes().peers);
    let set = lists
        .get(&name)
        .ok_or_else(|| not_found(format!("no peer list {name:?}")))?;
    Ok(Json(ListInfo {
        name,
        peers: set.iter().cloned().collect(),
    }))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRequest {
    pub peers: Vec<String>,
}

fn member(list: &str, peer: &str, add: bool) -> crate::index::Record {
    let (rest, value) = peers::record(list, peer);
    (key(TAG_PEERS, &rest), add.then_some(value))
}

/// `PUT`: the list becomes exactly these peers.
async fn set(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    req: Result<Json<SetRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Wrote>, AppError> {
    let Json(req) = req.map_err(|e| bad(e.body_text()))?;
    s.may_write()?;
    peers::check_list_name(&name).map_err(bad)?;
    if req.peers.len() > MAX_MEMBERS {
        return Err(bad(format!("more than {MAX_MEMBERS} peers in one list")));
    }
    for p in &req.peers {
        peers::check_peer(p).map_err(bad)?;
    }
    let current: Vec<String> = read(&s.indexes().peers)
        .get(&name)
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    let mut records: Vec<_> = current
        .iter()
        .filter(|p| !req.peers.contains(p))
        .map(|p| member(&name, p, false))
        .collect();
    records.extend(
        req.peers
            .iter()
            .filter(|p| !current.contains(p))
            .map(|p| member(&name, p, true)),
    );
    write(&s, records).await.map(Json)
}

async fn add(s: State<ApiState>, path: Path<(String, String)>) -> Result<Json<Wrote>, AppError> {
    change_member(s, path, true).await
}

async fn remove_one(
    s: State<ApiState>,
    path: Path<(String, String)>,
) -> Result<Json<Wrote>, AppError> {
    change_member(s, path, false).await
}

async fn change_member(
    State(s): State<ApiState>,
    Path((name, peer)): Path<(String, String)>,
    add: bool,
) -> Result<Json<Wrote>, AppError> {
    s.may_write()?;
    peers::check_list_name(&name).map_err(bad)?;
    peers::check_peer(&peer).map_err(bad)?;
    let full = read(&s.indexes().peers)
        .get(&name)
        .is_some_and(|l| l.len() >= MAX_MEMBERS);
    if add && full {
        return Err(bad(format!(
            "peer list {name:?} has {MAX_MEMBERS} members already"
        )));
    }
    write(&s, vec![member(&name, &peer, add)]).await.map(Json)
}

async fn remove(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Wrote>, AppError> {
    s.may_write()?;
    peers::check_list_name(&name).map_err(bad)?;
    let current: Vec<String> = read(&s.indexes().peers)
        .get(&name)
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    let records = current.iter().map(|p| member(&name, p, false)).collect();
    write(&s, records).await.map(Json)
}
