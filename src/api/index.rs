//! `/v1/index/...`: the cluster's indexes ([`crate::index`]). Writes are
//! taken on masters only (403 elsewhere, naming the rule) and answered once
//! durable on `pins.write_copies` masters or workers, like pins; reads on
//! every node, leechers included, from the node's own replica. Bad input is
//! refused with 400 before anything is stored.
//!
//! * [`embeddings`] serves `/v1/index/embeddings[/{collection}[/items|/search|/export|/import]]`
//! * [`graph`] serves `/v1/index/graph/{triples,query,count,neighbourhood,stats,export,import}`
//! * [`metadata`] serves `/v1/index/metadata[/{cid}]`, `/export`, `/import`
//! * [`peers`] serves `/v1/index/peers[/{list}[/{peer}]]`
//! * `GET /v1/index`: each index's size and this replica's sync state.

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::{ApiState, AppError};
use crate::index::Indexes;
use crate::pinset::Op;
use crate::pinset::replica::WriteError;
use crate::role::Role;

pub mod embeddings;
pub mod graph;
pub mod metadata;
pub mod peers;

/// Largest request body an index route takes (batches, imports).
pub const MAX_BODY: usize = 64 * 1024 * 1024;
/// Most records one batch request may write.
pub const MAX_BATCH: usize = 10_000;
/// Most results one page answers.
pub const MAX_LIMIT: usize = 10_000;
/// Results per page unless told.
pub const DEFAULT_LIMIT: usize = 100;
/// Records an import writes at a time.
const IMPORT_CHUNK: usize = 2_000;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/index", get(summary))
        .merge(embeddings::routes())
        .merge(graph::routes())
        .merge(metadata::routes())
        .merge(peers::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

pub(super) fn bad(msg: impl Into<String>) -> AppError {
    AppError(StatusCode::BAD_REQUEST, msg.into())
}

pub(super) fn not_found(msg: impl Into<String>) -> AppError {
    AppError(StatusCode::NOT_FOUND, msg.into())
}

impl ApiState {
    pub(crate) fn indexes(&self) -> &std::sync::Arc<Indexes> {
        self.pins.db().indexes()
    }

    /// Index writes are taken on masters only.
    fn may_write(&self) -> Result<(), AppError> {
        if self.role == Role::Master {
            return Ok(());
        }
        Err(AppError(
            StatusCode::FORBIDDEN,
            format!(
                "index writes are taken only on masters; this node is a {} (send the write to a \
                 master; reads work here)",
                self.role
            ),
        ))
    }
}

/// What a batch write answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Wrote {
    /// Records written (upserts and removals).
    pub written: usize,
    /// The fewest masters or workers any of them was durable on.
    pub copies: usize,
}

/// Writes `(key, value)` records (`None`: removal) of the replicated state,
/// in chunks; answered once every record is durable on enough copies.
pub(super) async fn write(
    state: &ApiState,
    records: Vec<crate::index::Record>,
) -> Result<Wrote, AppError> {
    state.may_write()?;
    let total = records.len();
    let mut wrote = Wrote {
        written: 0,
        copies: usize::MAX,
    };
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let ops: Vec<Op> = records
            .by_ref()
            .take(IMPORT_CHUNK)
            .map(|(key, value)| match value {
                Some(value) => Op::Put { key, value },
                None => Op::Clear { key },
            })
            .collect();
        for answer in state.pins.write_many(ops).await {
            match answer {
                Ok(w) => {
                    wrote.written += 1;
                    wrote.copies = wrote.copies.min(w.copies);
                }
                Err(e) => {
                    let status = match e {
                        WriteError::ReadOnly | WriteError::MastersOnly => StatusCode::FORBIDDEN,
                        WriteError::Unreachable { .. } | WriteError::Timeout { .. } => {
                            StatusCode::SERVICE_UNAVAILABLE
                        }
                        _ => StatusCode::INTERNAL_SERVER_ERROR,
                    };
                    return Err(AppError(
                        status,
                        format!(
                            "{} of {total} records acknowledged before: {e} (writing the same \
                             records again is harmless)",
                            wrote.written
                        ),
                    ));
                }
            }
        }
    }
    if wrote.copies == usize::MAX {
        wrote.copies = 0;
    }
    Ok(wrote)
}

/// Sizes of every index on this node, and its replica's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct IndexSummary {
    #[serde(flatten)]
    pub sizes: crate::index::Sizes,
    /// Changes this replica has seen (pins and index records), its digest,
    /// the masters and workers it counts, and how many of them it was last
    /// in sync with (a finished anti-entropy session, or equal digests).
    pub changes: u64,
    pub digest: String,
    pub members: usize,
    pub in_sync_with: usize,
}

impl IndexSummary {
    pub fn of(indexes: &Indexes, progress: &crate::pinset::actor::Progress) -> IndexSummary {
        IndexSummary {
            sizes: indexes.sizes(),
            changes: progress.changes,
            digest: format!("{:016x}", progress.digest),
            members: progress.members,
            in_sync_with: progress.synced.values().filter(|t| t.is_some()).count(),
        }
    }
}

async fn summary(
    axum::extract::State(state): axum::extract::State<ApiState>,
) -> Json<IndexSummary> {
    Json(IndexSummary::of(state.indexes(), &state.pins.progress()))
}

/// Parses a JSON Lines body: each non-empty line one `T`; errors name the line.
pub(super) fn json_lines<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, AppError> {
    let text = std::str::from_utf8(body).map_err(|e| bad(format!("body is not UTF-8: {e}")))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(line).map_err(|e| bad(format!("line {}: {e}", i + 1)))?);
        if out.len() > MAX_IMPORT {
            return Err(bad(format!("more than {MAX_IMPORT} records in one import")));
        }
    }
    Ok(out)
}

/// Most records one import request takes (the CLI sends larger files in parts).
pub const MAX_IMPORT: usize = 200_000;

/// A JSON Lines response.
pub(super) fn jsonl_response(lines: Vec<String>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut body = lines.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response()
}

/// `limit` from a query, within bounds.
pub(super) fn limit(l: Option<usize>) -> usize {
    l.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}
