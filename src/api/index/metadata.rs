//! `/v1/index/metadata`: a JSON document per CID.
//!
//! `GET /v1/index/metadata` lists (paged), or finds by `field` and `value`
//! (JSON text), by `tag`, or by `name_prefix`; `GET|PUT|PATCH|DELETE
//! /v1/index/metadata/{cid}` reads, replaces, merges (JSON merge patch at
//! the top level: `null` removes a field) and deletes one document.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiState, AppError, Wrote, bad, not_found, write};
use crate::index::metadata::{self as meta, Doc, Found};
use crate::index::{TAG_META, key, read};
use crate::pinset::canonical_cid;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/index/metadata", get(find))
        .route(
            "/v1/index/metadata/{cid}",
            get(show).put(put).patch(merge).delete(remove),
        )
        .route("/v1/index/metadata/export", get(export))
        .route("/v1/index/metadata/import", post(import))
}

#[derive(Debug, Default, Deserialize)]
pub struct FindQuery {
    pub field: Option<String>,
    /// JSON text (`"text"`, `42`, `true`); a bare word is taken as a string.
    pub value: Option<String>,
    pub tag: Option<String>,
    pub name_prefix: Option<String>,
    pub after: Option<String>,
    pub limit: Option<usize>,
}

async fn find(
    State(s): State<ApiState>,
    Query(q): Query<FindQuery>,
) -> Result<Json<Found>, AppError> {
    let view = read(&s.indexes().metadata);
    let limit = super::limit(q.limit).min(meta::MAX_PAGE);
    let after = q.after.as_deref();
    let found = match (&q.field, &q.value, &q.tag, &q.name_prefix) {
        (Some(f), Some(v), None, None) => {
            let v: Value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()));
            view.find(f, &v, after, limit)
        }
        (None, None, Some(t), None) => view.tagged(t, after, limit),
        (None, None, None, Some(p)) => view.name_prefix(p, after, limit).map_err(bad)?,
        (None, None, None, None) => view.list(after, limit),
        _ => {
            return Err(bad(
                "give one of: field and value, tag, name_prefix, or nothing (a listing)",
            ));
        }
    };
    Ok(Json(found))
}

fn cid_of(text: &str) -> Result<String, AppError> {
    canonical_cid(text).map_err(bad)
}

async fn show(State(s): State<ApiState>, Path(cid): Path<String>) -> Result<Json<Doc>, AppError> {
    let cid = cid_of(&cid)?;
    read(&s.indexes().metadata)
        .get(&cid)
        .map(Json)
        .ok_or_else(|| not_found(format!("no metadata for {cid}")))
}

type Planner = fn(Option<&Doc>, &str, &Doc) -> Result<Vec<meta::Record>, String>;

async fn plan_and_write(
    s: &ApiState,
    cid: &str,
    doc: &Doc,
    plan: Planner,
) -> Result<Wrote, AppError> {
    s.may_write()?;
    let records = {
        let view = read(&s.indexes().metadata);
        plan(view.get(cid).as_ref(), cid, doc).map_err(bad)?
    };
    write(
        s,
        records
            .into_iter()
            .map(|(rest, v)| (key(TAG_META, &rest), v))
            .collect(),
    )
    .await
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// `PUT` replaces the document, `PATCH` merges into it.
async fn put(
    s: State<ApiState>,
    cid: Path<String>,
    doc: JsonBody<Doc>,
) -> Result<Json<Wrote>, AppError> {
    doc_write(s, cid, doc, meta::plan_put).await
}

async fn merge(
    s: State<ApiState>,
    cid: Path<String>,
    doc: JsonBody<Doc>,
) -> Result<Json<Wrote>, AppError> {
    doc_write(s, cid, doc, meta::plan_merge).await
}

async fn doc_write(
    State(s): State<ApiState>,
    Path(cid): Path<String>,
    doc: JsonBody<Doc>,
    plan: Planner,
) -> Result<Json<Wrote>, AppError> {
    let Json(doc) = doc.map_err(|e| bad(e.body_text()))?;
    let cid = cid_of(&cid)?;
    plan_and_write(&s, &cid, &doc, plan).await.map(Json)
}

async fn remove(
    State(s): State<ApiState>,
    Path(cid): Path<String>,
) -> Result<Json<Wrote>, AppError> {
    s.may_write()?;
    let cid = cid_of(&cid)?;
    let records = meta::plan_delete(read(&s.indexes().metadata).get(&cid).as_ref(), &cid);
    write(
        &s,
        records
            .into_iter()
            .map(|(rest, v)| (key(TAG_META, &rest), v))
            .collect(),
    )
    .await
    .map(Json)
}

/// One line of an export or import.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocLine {
    pub cid: String,
    pub doc: Doc,
}

async fn export(State(s): State<ApiState>) -> axum::response::Response {
    let view = read(&s.indexes().metadata);
    let mut lines = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = view.list(after.as_deref(), meta::MAX_PAGE);
        for (cid, doc) in &page.items {
            let line = DocLine {
                cid: cid.clone(),
                doc: doc.clone(),
            };
            lines.push(serde_json::to_string(&line).unwrap_or_default());
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    super::jsonl_response(lines)
}

/// JSON Lines of `{"cid","doc"}`: each document replaces the one stored.
async fn import(State(s): State<ApiState>, body: Bytes) -> Result<Json<Wrote>, AppError> {
    s.may_write()?;
    let lines: Vec<DocLine> = super::json_lines(&body)?;
    let mut records = Vec::new();
    {
        let view = read(&s.indexes().metadata);
        for (i, l) in lines.iter().enumerate() {
            let cid = canonical_cid(&l.cid).map_err(|e| bad(format!("document {i}: {e}")))?;
            let planned = meta::plan_put(view.get(&cid).as_ref(), &cid, &l.doc)
                .map_err(|e| bad(format!("document {i} ({cid}): {e}")))?;
            records.extend(
                planned
                    .into_iter()
                    .map(|(rest, v)| (key(TAG_META, &rest), v)),
            );
        }
    }
    write(&s, records).await.map(Json)
}
