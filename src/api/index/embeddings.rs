//! `/v1/index/embeddings`: collections of vectors and their search.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ApiState, AppError, Wrote, bad, not_found, write};
use crate::index::embeddings::{
    self as emb, CollectionDef, CollectionInfo, DEFAULT_K, Found, ItemOut, ItemRecord, Metric, Mode,
};
use crate::index::{TAG_COLLECTION, TAG_ITEM, key, read};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/index/embeddings", get(list))
        .route(
            "/v1/index/embeddings/{coll}",
            get(show).put(create).delete(remove),
        )
        .route("/v1/index/embeddings/{coll}/items", get(items).post(upsert))
        .route(
            "/v1/index/embeddings/{coll}/items/{*key}",
            get(item).delete(remove_item),
        )
        .route("/v1/index/embeddings/{coll}/search", post(search))
        .route("/v1/index/embeddings/{coll}/export", get(export))
        .route("/v1/index/embeddings/{coll}/import", post(import))
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

fn body<T>(b: JsonBody<T>) -> Result<T, AppError> {
    b.map(|Json(t)| t).map_err(|e| bad(e.body_text()))
}

async fn list(State(s): State<ApiState>) -> Json<Vec<CollectionInfo>> {
    Json(read(&s.indexes().embeddings).collections())
}

fn info(s: &ApiState, coll: &str) -> Result<CollectionInfo, AppError> {
    read(&s.indexes().embeddings)
        .collection(coll)
        .ok_or_else(|| not_found(format!("no collection {coll:?}")))
}

async fn show(
    State(s): State<ApiState>,
    Path(coll): Path<String>,
) -> Result<Json<CollectionInfo>, AppError> {
    info(&s, &coll).map(Json)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub dim: u32,
    pub metric: Metric,
}

/// `PUT`: creates the collection; the same definition again changes
/// nothing; another one is refused (remove the collection first).
async fn create(
    State(s): State<ApiState>,
    Path(coll): Path<String>,
    req: JsonBody<CreateRequest>,
) -> Result<Json<Value>, AppError> {
    let req = body(req)?;
    s.may_write()?;
    emb::check_collection_name(&coll).map_err(bad)?;
    if req.dim == 0 || req.dim > emb::MAX_DIM {
        return Err(bad(format!("dim {} out of 1..={}", req.dim, emb::MAX_DIM)));
    }
    if let Some(def) = read(&s.indexes().embeddings).def(&coll) {
        if def.dim == req.dim && def.metric == req.metric {
            return Ok(Json(serde_json::json!({ "created": false })));
        }
        return Err(AppError(
            axum::http::StatusCode::CONFLICT,
            format!(
                "collection {coll:?} exists with dim {} and metric {:?}; remove it first",
                def.dim, def.metric
            ),
        ));
    }
    let def = CollectionDef {
        dim: req.dim,
        metric: req.metric,
        generation: rand::random::<u64>() | 1,
    };
    let (rest, value) = emb::collection_record(&coll, &def);
    let w = write(&s, vec![(key(TAG_COLLECTION, &rest), Some(value))]).await?;
    Ok(Json(
        serde_json::json!({ "created": true, "copies": w.copies }),
    ))
}

/// Removes the collection and every item held under its name.
async fn remove(
    State(s): State<ApiState>,
    Path(coll): Path<String>,
) -> Result<Json<Wrote>, AppError> {
    s.may_write()?;
    emb::check_collection_name(&coll).map_err(bad)?;
    let keys = read(&s.indexes().embeddings).all_keys(&coll);
    let mut records: Vec<crate::index::Record> = keys
        .iter()
        .map(|k| (key(TAG_ITEM, &format!("{coll}/{k}")), None))
        .collect();
    records.push((key(TAG_COLLECTION, &coll), None));
    write(&s, records).await.map(Json)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemIn {
    pub key: String,
    pub vector: Vec<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertRequest {
    pub items: Vec<ItemIn>,
}

/// Checks items against the collection and makes their records.
fn item_records(
    s: &ApiState,
    coll: &str,
    items: Vec<ItemIn>,
) -> Result<Vec<crate::index::Record>, AppError> {
    let def = read(&s.indexes().embeddings)
        .def(coll)
        .ok_or_else(|| bad(format!("no collection {coll:?} (create it first)")))?;
    if items.len() > super::MAX_BATCH {
        return Err(bad(format!(
            "{} items in one batch; at most {}",
            items.len(),
            super::MAX_BATCH
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, it)| {
            let at = |e: String| bad(format!("item {i} ({:?}): {e}", it.key));
            emb::check_item_key(&it.key).map_err(at)?;
            emb::check_vector(&it.vector, def.dim).map_err(at)?;
            let meta = emb::meta_text(it.meta.as_ref()).map_err(at)?;
            let rec = ItemRecord {
                generation: def.generation,
                vector: it.vector,
                meta,
            };
            let (rest, value) = emb::item_record(coll, &it.key, &rec);
            Ok((key(TAG_ITEM, &rest), Some(value)))
        })
        .collect()
}

async fn upsert(
    State(s): State<ApiState>,
    Path(coll): Path<String>,
    req: JsonBody<UpsertRequest>,
) -> Result<Json<Wrote>, AppError> {
    let req = body(req)?;
    s.may_write()?;
    let records = item_records(&s, &coll, req.items)?;
    write(&s, records).await.map(Json)
}

/// `import`: JSON Lines of items (`{"key","vector","meta"}`).
async fn import(
    State(s): State<ApiState>,
    Path(coll): Path<String>,
    body: Bytes,
) -> Result<Json<Wrote>, AppError> {
    s.may_write()?;
    let items: Vec<ItemIn> = super::json_lines(&body)?;
    let mut wrote = Wrote::default();
    for chunk in items.chunks(super::MAX_BATCH) {
        let w = write(&s, item_records(&s, &coll, chunk.to_vec())?).await?;
        wrote.copies = if wrote.written == 0 {
            w.copies
        } else {
            wrote.copies.min(w.copies)
        };
        wrote.written += w.written;
    }
    Ok(Json(wrote))
}

#[derive(Debug, Deserialize)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct ItemsPage {
    items: Vec<ItemOut>,
    next: Option<String>,
}

async fn items(
    State(s): State<ApiState>,
    Path(coll): Path<String>,
    Query(q): Query<Page>,
) -> Result<Json<ItemsPage>, AppError> {
    info(&s, &coll)?;
    let limit = super::limit(q.limit);
    let items = read(&s.indexes().embeddings).items(&coll, q.after.as_deref(), limit);
    let next = (items.len() == limit)
        .then(|| items.last().map(|i| i.key.clone()))
        .flatten();
    Ok(Json(ItemsPage { items, next }))
}

async fn export(
    State(s): State<ApiState>,
    Path(coll): Path<String>,
) -> Result<axum::response::Response, AppError> {
    info(&s, &coll)?;
    let view = read(&s.indexes().embeddings);
    let mut lines = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = view.items(&coll, after.as_deref(), 4096);
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        for it in page {
            let line = ItemIn {
                key: it.key,
                vector: it.vector,
                meta: it.meta,
            };
            lines.push(serde_json::to_string(&line).unwrap_or_default());
        }
    }
    Ok(super::jsonl_response(lines))
}

async fn item(
    State(s): State<ApiState>,
    Path((coll, k)): Path<(String, String)>,
) -> Result<Json<ItemOut>, AppError> {
    read(&s.indexes().embeddings)
        .get(&coll, &k)
        .map(Json)
        .ok_or_else(|| not_found(format!("no item {k:?} in collection {coll:?}")))
}

async fn remove_item(
    State(s): State<ApiState>,
    Path((coll, k)): Path<(String, String)>,
) -> Result<Json<Wrote>, AppError> {
    s.may_write()?;
    emb::check_collection_name(&coll).map_err(bad)?;
    emb::check_item_key(&k).map_err(bad)?;
    write(&s, vec![(key(TAG_ITEM, &format!("{coll}/{k}")), None)])
        .await
        .map(Json)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub vector: Vec<f32>,
    #[serde(default)]
    pub k: Option<usize>,
    /// Metadata fields the hits must have (equal, or an array holding it).
    #[serde(default)]
    pub filter: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub mode: Mode,
}

async fn search(
    State(s): State<ApiState>,
    Path(coll): Path<String>,
    req: JsonBody<SearchRequest>,
) -> Result<Json<Found>, AppError> {
    let req = body(req)?;
    let k = req.k.unwrap_or(DEFAULT_K);
    if k == 0 || k > emb::MAX_K {
        return Err(bad(format!("k {k} out of 1..={}", emb::MAX_K)));
    }
    let view = read(&s.indexes().embeddings);
    if view.def(&coll).is_none() {
        return Err(not_found(format!("no collection {coll:?}")));
    }
    view.search(&coll, &req.vector, k, req.filter.as_ref(), req.mode)
        .map(Json)
        .map_err(bad)
}
