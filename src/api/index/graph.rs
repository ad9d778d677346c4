//! `/v1/index/graph`: the knowledge graph.
//!
//! `POST /triples` `{"add": [...], "remove": [...]}`; `POST /query`
//! `{"pattern", "after", "limit"}`; `POST /count` (a pattern); `POST
//! /neighbourhood` `{"node", "depth", "predicates", "limit"}`; `GET /stats`;
//! `GET /export` and `POST /import` (JSON Lines of triples).

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiState, AppError, Wrote, bad, write};
use crate::index::graph::{
    self as g, GraphStats, Neighbourhood, Page, PatternInput, TermInput, TripleInput,
};
use crate::index::{TAG_TRIPLE, key, read};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/index/graph/triples", post(change))
        .route("/v1/index/graph/query", post(query))
        .route("/v1/index/graph/count", post(count))
        .route("/v1/index/graph/neighbourhood", post(neighbourhood))
        .route("/v1/index/graph/stats", get(stats))
        .route("/v1/index/graph/export", get(export))
        .route("/v1/index/graph/import", post(import))
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

fn body<T>(b: JsonBody<T>) -> Result<T, AppError> {
    b.map(|Json(t)| t).map_err(|e| bad(e.body_text()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeRequest {
    #[serde(default)]
    add: Vec<TripleInput>,
    #[serde(default)]
    remove: Vec<TripleInput>,
}

/// Checks triples and makes their records (`add`: set, else removed).
fn records(triples: Vec<TripleInput>, add: bool) -> Result<Vec<crate::index::Record>, AppError> {
    triples
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let t = t
                .into_triple()
                .map_err(|e| bad(format!("triple {i}: {e}")))?;
            let (rest, value) = g::record(&t);
            Ok((key(TAG_TRIPLE, &rest), add.then_some(value)))
        })
        .collect()
}

async fn change(
    State(s): State<ApiState>,
    req: JsonBody<ChangeRequest>,
) -> Result<Json<Wrote>, AppError> {
    let req = body(req)?;
    s.may_write()?;
    if req.add.len() + req.remove.len() > super::MAX_BATCH {
        return Err(bad(format!(
            "more than {} triples in one batch",
            super::MAX_BATCH
        )));
    }
    let mut all = records(req.add, true)?;
    all.extend(records(req.remove, false)?);
    write(&s, all).await.map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    #[serde(default)]
    pattern: Option<PatternInput>,
    after: Option<String>,
    limit: Option<usize>,
}

fn pattern(p: Option<PatternInput>) -> Result<g::Pattern, AppError> {
    match p {
        Some(p) => p.into_pattern().map_err(bad),
        None => Ok(g::Pattern::default()),
    }
}

async fn query(
    State(s): State<ApiState>,
    req: JsonBody<QueryRequest>,
) -> Result<Json<Page>, AppError> {
    let req = body(req)?;
    let p = pattern(req.pattern)?;
    read(&s.indexes().graph)
        .query(&p, req.after.as_deref(), super::limit(req.limit))
        .map(Json)
        .map_err(bad)
}

async fn count(
    State(s): State<ApiState>,
    req: JsonBody<PatternInput>,
) -> Result<Json<serde_json::Value>, AppError> {
    let p = pattern(Some(body(req)?))?;
    let n = read(&s.indexes().graph).count(&p);
    Ok(Json(serde_json::json!({ "count": n })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NeighbourhoodRequest {
    node: TermInput,
    #[serde(default = "one")]
    depth: u32,
    predicates: Option<Vec<String>>,
    limit: Option<usize>,
}

fn one() -> u32 {
    1
}

/// Deepest neighbourhood asked for.
const MAX_DEPTH: u32 = 8;

async fn neighbourhood(
    State(s): State<ApiState>,
    req: JsonBody<NeighbourhoodRequest>,
) -> Result<Json<Neighbourhood>, AppError> {
    let req = body(req)?;
    if req.depth > MAX_DEPTH {
        return Err(bad(format!("depth {} over {MAX_DEPTH}", req.depth)));
    }
    let node = req.node.into_term().map_err(bad)?;
    let limit = req.limit.unwrap_or(1000).clamp(1, g::MAX_NEIGHBOURHOOD);
    Ok(Json(read(&s.indexes().graph).neighbourhood(
        &node,
        req.depth,
        req.predicates.as_deref(),
        limit,
    )))
}

async fn stats(State(s): State<ApiState>) -> Json<GraphStats> {
    Json(read(&s.indexes().graph).stats())
}

async fn export(State(s): State<ApiState>) -> Result<axum::response::Response, AppError> {
    let view = read(&s.indexes().graph);
    let all = g::Pattern::default();
    let mut lines = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = view
            .query(&all, after.as_deref(), g::MAX_PAGE)
            .map_err(bad)?;
        for t in &page.triples {
            lines.push(serde_json::to_string(t).unwrap_or_default());
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    Ok(super::jsonl_response(lines))
}

/// JSON Lines of triples to add (short or full terms).
async fn import(State(s): State<ApiState>, body: Bytes) -> Result<Json<Wrote>, AppError> {
    s.may_write()?;
    let triples: Vec<TripleInput> = super::json_lines(&body)?;
    write(&s, records(triples, true)?).await.map(Json)
}
