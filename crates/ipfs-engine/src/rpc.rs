//! kubo's RPC API (`POST /api/v0/...`), the subset the cluster uses, with
//! kubo's response bodies, field names and error shape
//! (`{"Message","Code","Type":"error"}`), so a kubo client works unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::add::Layout;
use crate::engine::{Engine, parse_cid};

/// Pins fetched at once; more wait their turn.
pub const PIN_CONCURRENCY: usize = 32;
/// Default deadline for `pin/add` and for each piece `cat` fetches (kubo's
/// `timeout` option overrides it).
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

/// Query options. kubo repeats `arg` for several arguments.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<String>) -> Query {
        Query(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }
    fn args(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == "arg")
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn flag(&self, key: &str, default: bool) -> Result<bool, Error> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(v) => Err(Error::BadArg(format!(
                "invalid value {v:?} for option {key:?}"
            ))),
        }
    }
    fn one_arg(&self, name: &str) -> Result<&str, Error> {
        self.args()
            .first()
            .copied()
            .ok_or_else(|| Error::BadArg(format!("argument \"{name}\" is required")))
    }
    /// kubo's global `timeout` option, a Go duration such as `30s` or `2m`.
    fn timeout(&self) -> Result<Option<Duration>, Error> {
        let Some(t) = self.get("timeout") else {
            return Ok(None);
        };
        let bad = || Error::BadArg(format!("invalid timeout {t:?} (e.g. 500ms, 30s, 2m, 1h)"));
        let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(bad()),
        };
        Duration::try_from_secs_f64(secs)
            .map(Some)
            .map_err(|_| bad())
    }
}

pub fn router(api: Shared) -> Router {
    Router::new()
        .route("/api/v0/id", post(id))
        .route("/api/v0/version", post(version))
        .route("/api/v0/add", post(add).layer(DefaultBodyLimit::disable()))
        .route("/api/v0/cat", post(cat))
        .route("/api/v0/pin/add", post(pin_add))
        .route("/api/v0/pin/rm", post(pin_rm))
        .route("/api/v0/pin/ls", post(pin_ls))
        .route("/api/v0/repo/stat", post(repo_stat))
        .route("/api/v0/swarm/connect", post(swarm_connect))
        .route("/api/v0/swarm/peers", post(swarm_peers))
        .route("/api/v0/shutdown", post(shutdown))
        .layer(middleware::from_fn(refuse_browsers))
        .with_state(api)
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

async fn add(
    State(api): State<Shared>,
    RawQuery(q): RawQuery,
    mut form: Multipart,
) -> Result<Response, Error> {
    let q = Query::parse(q);
    for unsupported in [
        "wrap-with-directory",
        "only-hash",
        "nocopy",
        "inline",
        "trickle",
    ] {
        if q.flag(unsupported, false)? {
            return Err(Error::BadArg(format!(
                "option {unsupported:?} is not supported by the built-in engine"
            )));
        }
    }
    if let Some(h) = q.get("hash").filter(|h| *h != "sha2-256") {
        return Err(Error::BadArg(format!(
            "hash {h:?} is not supported (only sha2-256)"
        )));
    }
    let mut layout = Layout::default();
    if let Some(v) = q.get("cid-version") {
        layout.cid_version = v
            .parse()
            .map_err(|_| Error::BadArg(format!("invalid cid-version {v:?}")))?;
    }
    if q.get("raw-leaves").is_some() {
        layout.raw_leaves = Some(q.flag("raw-leaves", false)?);
    }
    if let Some(c) = q.get("chunker") {
        layout.chunk = Layout::parse_chunker(c).map_err(Error::BadArg)?;
    }
    let pin = q.flag("pin", true)?;

    let mut lines = String::new();
    let mut files = 0;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| Error::BadArg(format!("malformed multipart body: {e}")))?
    {
        if field.content_type() == Some("application/x-directory") {
            return Err(Error::BadArg(
                "directories are not supported by the built-in engine".into(),
            ));
        }
        let name = field
            .file_name()
            .map(|n| n.rsplit('/').next().unwrap_or(n).to_string());
        let data = field.map_err(|e| Error::BadArg(format!("reading the upload: {e}")));
        let (root, size, _) = api.engine.add(layout, pin, data).await?;
        let hash = root.to_string();
        let line = json!({
            "Name": name.filter(|n| !n.is_empty()).unwrap_or_else(|| hash.clone()),
            "Hash": hash,
            "Size": size.to_string(),
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
        files += 1;
    }
    if files == 0 {
        return Err(Error::BadArg("argument \"path\" is required".into()));
    }
    Ok(ndjson(lines))
}

fn ndjson(body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert("X-Chunked-Output", HeaderValue::from_static("1"));
    r
}

async fn cat(State(api): State<Shared>, RawQuery(q): RawQuery) -> Result<Response, Error> {
    let q = Query::parse(q);
    let cid = parse_cid(q.one_arg("ipfs-path")?)?;
    let parse = |k: &str| -> Result<Option<u64>, Error> {
        q.get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| Error::BadArg(format!("invalid {k} {v:?}")))
            })
            .transpose()
    };
    let mut skip = parse("offset")?.unwrap_or(0);
    let mut left = parse("length")?.unwrap_or(u64::MAX);
    let fetch = q.timeout()?.unwrap_or(FETCH);
    // Fused: an empty file ends the stream at the first poll.
    let mut stream = Box::pin(api.engine.cat(cid, fetch).fuse());
    // The first piece decides between an error answer and a stream.
    let first = match stream.next().await {
        Some(Err(e)) => return Err(e),
        other => other,
    };
    let body = futures::stream::iter(first)
        .chain(stream)
        .filter_map(move |piece| {
            let out = match piece {
                Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
                Ok(mut b) => {
                    let s = skip.min(b.len() as u64) as usize;
                    skip -= s as u64;
                    b = b.slice(s..);
                    let n = left.min(b.len() as u64) as usize;
                    left -= n as u64;
                    (n > 0).then(|| Ok(b.slice(..n)))
                }
            };
            futures::future::ready(out)
        });
    let mut r = Body::from_stream(body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r.headers_mut()
        .insert("X-Stream-Output", HeaderValue::from_static("1"));
    Ok(r)
}

async fn pin_add(State(api): State<Shared>, RawQuery(q): RawQuery) -> Result<Response, Error> {
    let q = Query::parse(q);
    if !q.flag("recursive", true)? {
        return Err(Error::BadArg(
            "only recursive pins are supported by the built-in engine".into(),
        ));
    }
    let cids = q
        .args()
        .into_iter()
        .map(parse_cid)
        .collect::<Result<Vec<_>, _>>()?;
    if cids.is_empty() {
        return Err(Error::BadArg("argument \"ipfs-path\" is required".into()));
    }
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
    let cids = q
        .args()
        .into_iter()
        .map(parse_cid)
        .collect::<Result<Vec<_>, _>>()?;
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
