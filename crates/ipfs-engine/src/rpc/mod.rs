//! kubo's RPC API (`POST /api/v0/...`), the subset the cluster and common
//! clients (kubo-rpc-client, aioipfs) use, with kubo's response bodies,
//! field names and error shape (`{"Message","Code","Type":"error"}`), so a
//! kubo client works unchanged. A path with no command gets kubo's 404.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::engine::{Engine, parse_cid};

mod blocks;
mod files;
mod query;
mod stream;
use query::Query;

/// Pins fetched at once; more wait their turn.
pub const PIN_CONCURRENCY: usize = 32;
/// Default deadline for `pin/add`, and for each block `cat`, `block/*` and
/// `dag/get` fetch (kubo's `timeout` option overrides it).
const FETCH: Duration = Duration::from_secs(300);

pub struct Api {
    pub engine: Engine,
    pub pins: Semaphore,
    pub shutdown: CancellationToken,
    pub agent: String,
}

type Shared = Arc<Api>;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        // kubo: argument errors are client errors (400, Code 1); everything
        // else is an internal error (500, Code 0).
        let (status, code) = match &self {
            Error::BadArg(_) => (StatusCode::BAD_REQUEST, 1),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, 0),
        };
        let body = json!({ "Message": self.to_string(), "Code": code, "Type": "error" });
        (status, axum::Json(body)).into_response()
    }
}

pub fn router(api: Shared) -> Router {
    Router::new()
        .route("/api/v0/id", post(id))
        .route("/api/v0/version", post(version))
        .route(
            "/api/v0/add",
            post(files::add).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v0/cat", post(files::cat))
        .route(
            "/api/v0/block/put",
            post(blocks::put).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v0/block/get", post(blocks::get))
        .route("/api/v0/block/stat", post(blocks::stat))
        .route("/api/v0/block/rm", post(blocks::rm))
        .route("/api/v0/dag/get", post(blocks::dag_get))
        .route("/api/v0/pin/add", post(pin_add))
        .route("/api/v0/pin/rm", post(pin_rm))
        .route("/api/v0/pin/ls", post(pin_ls))
        .route("/api/v0/repo/stat", post(repo_stat))
        .route("/api/v0/swarm/connect", post(swarm_connect))
        .route("/api/v0/swarm/peers", post(swarm_peers))
        .route("/api/v0/shutdown", post(shutdown))
        .fallback(not_found)
        .layer(middleware::from_fn(check_timeout))
        .layer(middleware::from_fn(refuse_browsers))
        .with_state(api)
}

/// kubo's global `timeout` option, checked for every command before it
/// runs: a malformed one is refused (kubo itself answers an empty 200).
async fn check_timeout(req: Request, next: Next) -> Response {
    let q = Query::parse(req.uri().query().map(str::to_owned));
    if let Err(e) = q.timeout() {
        return e.into_response();
    }
    next.run(req).await
}

/// kubo's answer to a path it has no command for (Go's `http.Error`).
async fn not_found() -> Response {
    let mut r = (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Like kubo without `API.HTTPHeaders`: a web page must not drive the API
/// (no cross-origin POSTs to localhost).
async fn refuse_browsers(req: Request, next: Next) -> Response {
    if req.headers().contains_key(header::ORIGIN) {
        return (StatusCode::FORBIDDEN, "403 - Forbidden\n").into_response();
    }
    next.run(req).await
}

async fn id(State(api): State<Shared>) -> Result<Response, Error> {
    let addrs = api.engine.addresses().await?;
    let key = base64::engine::general_purpose::STANDARD.encode(api.engine.public_key());
    Ok(axum::Json(json!({
        "ID": api.engine.peer_id(),
        "PublicKey": key,
        "Addresses": addrs,
        "AgentVersion": api.agent,
        "Protocols": ["/ipfs/bitswap/1.2.0", "/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"],
    }))
    .into_response())
}

async fn version(State(_): State<Shared>) -> Response {
    axum::Json(json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "Commit": "",
        "Repo": "rust-ipfs-0.16",
        "System": format!("{}/{}", std::env::consts::ARCH, std::env::consts::OS),
        "Golang": "",
    }))
    .into_response()
}

pub(crate) fn ndjson(body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert("X-Chunked-Output", HeaderValue::from_static("1"));
    r
}

async fn pin_add(State(api): State<Shared>, RawQuery(q): RawQuery) -> Result<Response, Error> {
    let q = Query::parse(q);
    if !q.flag("recursive", true)? {
        return Err(Error::BadArg(
            "only recursive pins are supported by the built-in engine".into(),
        ));
    }
    let cids = q.some_cids("ipfs-path")?;
    let limit = q.timeout()?.unwrap_or(FETCH);
    let _slot = api
        .pins
        .acquire()
        .await
        .map_err(|_| Error::Engine("shutting down".into()))?;
    for cid in &cids {
        api.engine
            .pin_add(*cid, limit)
            .await
            .map_err(|e| Error::Engine(format!("pin: {e}")))?;
    }
    let pins: Vec<String> = cids.iter().map(|c| c.to_string()).collect();
    Ok(axum::Json(json!({ "Pins": pins })).into_response())
}

async fn pin_rm(State(api): State<Shared>, RawQuery(q): RawQuery) -> Result<Response, Error> {
    let q = Query::parse(q);
    let cid = parse_cid(q.one_arg("ipfs-path")?)?;
    api.engine.pin_rm(cid).await?;
    Ok(axum::Json(json!({ "Pins": [cid.to_string()] })).into_response())
}

async fn pin_ls(State(api): State<Shared>, RawQuery(q): RawQuery) -> Result<Response, Error> {
    let q = Query::parse(q);
    let cids = q.cids()?;
    let kind = q.get("type").unwrap_or("all");
    let pins = api.engine.pin_ls(kind, cids).await?;
    if q.flag("stream", false)? {
        let mut lines = String::new();
        for p in pins {
            lines.push_str(&json!({ "Cid": p.cid, "Type": p.kind }).to_string());
            lines.push('\n');
        }
        return Ok(ndjson(lines));
    }
    let keys: BTreeMap<String, Value> = pins
        .into_iter()
        .map(|p| (p.cid, json!({ "Type": p.kind })))
        .collect();
    Ok(axum::Json(json!({ "Keys": keys })).into_response())
}

async fn repo_stat(State(api): State<Shared>, RawQuery(q): RawQuery) -> Result<Response, Error> {
    let q = Query::parse(q);
    let size_only = q.flag("size-only", false)?;
    let st = api.engine.repo_stat(size_only).await?;
    let mut body = json!({ "RepoSize": st.size, "StorageMax": api.storage_max() });
    if !size_only {
        body["NumObjects"] = json!(st.objects);
        body["RepoPath"] = json!(st.path.display().to_string());
        body["Version"] = json!("rust-ipfs-fs@1");
    }
    Ok(axum::Json(body).into_response())
}

async fn swarm_connect(
    State(api): State<Shared>,
    RawQuery(q): RawQuery,
) -> Result<Response, Error> {
    let q = Query::parse(q);
    let addrs = q.args();
    if addrs.is_empty() {
        return Err(Error::BadArg("argument \"address\" is required".into()));
    }
    let mut out = Vec::new();
    for addr in addrs {
        let peer = api.engine.connect(addr).await?;
        out.push(format!("connect {peer} success"));
    }
    Ok(axum::Json(json!({ "Strings": out })).into_response())
}

async fn swarm_peers(State(api): State<Shared>) -> Result<Response, Error> {
    let peers = api.engine.peers().await?;
    // kubo answers `null`, not `[]`, when nothing is connected.
    let list: Value = if peers.is_empty() {
        Value::Null
    } else {
        peers
            .into_iter()
            .map(|(peer, addr)| json!({ "Addr": addr, "Peer": peer }))
            .collect()
    };
    Ok(axum::Json(json!({ "Peers": list })).into_response())
}

async fn shutdown(State(api): State<Shared>) -> Response {
    api.shutdown.cancel();
    StatusCode::OK.into_response()
}

impl Api {
    /// kubo's default `Datastore.StorageMax` (10 GB); the built-in engine
    /// does not enforce it.
    fn storage_max(&self) -> u64 {
        10_000_000_000
    }
}
