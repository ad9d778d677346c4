//! The control API: HTTP + JSON on `--api`, served by axum, and the client
//! the `status` and `peers` subcommands use to reach it.
//!
//! Routes: `GET /health` (200, or 503 with a reason), `GET /metrics`
//! (Prometheus, [`metrics`]), `GET /v1/status`, `GET /v1/peers`,
//! `POST /v1/trust/revocations`, and the pinset under `/v1/pins`
//! ([`pins`]). Handlers ask the node's event loop through its
//! [`NodeHandle`] and answer 503 if it does not reply in time.
//!
//! With a token (`api.token`), every request but `GET /health` needs
//! `Authorization: Bearer TOKEN`, compared in constant time; others get
//! 401 and are counted (`api_unauthorized` in the status).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;

pub mod index;
mod metrics;
pub mod pinning;
pub mod pins;

use crate::config::PinsConfig;
use crate::node::NodeHandle;
use crate::pinset::actor::PinsetHandle;
pub use crate::status::{LeaderView, PeerView, StatusView};
pub use crate::store::api_file_text;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on control API address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no node is running here: cannot reach the control API at {addr}: {source}")]
    Unreachable {
        addr: String,
        source: reqwest::Error,
    },
    #[error("control API at {addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
    #[error("cannot find a running node: {0}")]
    NoApiFile(String),
}

struct AppError(StatusCode, String);

/// What the handlers reach.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) node: NodeHandle,
    pins: PinsetHandle,
    defaults: PinsConfig,
    role: crate::role::Role,
    auth: Auth,
    metrics: metrics::Metrics,
}

/// The token the API asks for, and how many requests it refused.
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<std::sync::Arc<str>>,
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

async fn authorize(
    State(auth): State<Auth>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use std::sync::atomic::Ordering;
    let Some(token) = &auth.token else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token);
    if given.is_some_and(|g| crate::trust::files::token_matches(g.trim(), token)) {
        return next.run(req).await;
    }
    auth.refused.fetch_add(1, Ordering::Relaxed);
    let why = "missing or wrong API token: send Authorization: Bearer <token> (the token is in \
               the node's api.token; `ipfs-kit-p2p api-token` prints it)";
    let mut resp = if req.uri().path().starts_with("/pinning/") {
        pinning::Failure(StatusCode::UNAUTHORIZED, why.into()).into_response()
    } else {
        AppError(StatusCode::UNAUTHORIZED, why.into()).into_response()
    };
    resp.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    resp
}

#[derive(Deserialize)]
struct RevocationsBody {
    /// The signed list, base64.
    list: String,
}

async fn revocations(
    State(node): State<NodeHandle>,
    Json(body): Json<RevocationsBody>,
) -> Result<Json<serde_json::Value>, AppError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.list.trim())
        .map_err(|e| AppError(StatusCode::BAD_REQUEST, format!("list: not base64 ({e})")))?;
    if bytes.len() > crate::trust::cert::MAX_REVOCATIONS_BYTES {
        return Err(AppError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the list is over the 256 KiB limit".into(),
        ));
    }
    match node.revocations(bytes).await {
        Ok(Ok(result)) => Ok(Json(serde_json::json!({ "result": result }))),
        Ok(Err(refused)) => Err(AppError(StatusCode::BAD_REQUEST, refused)),
        Err(e) => Err(AppError(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

impl axum::extract::FromRef<ApiState> for NodeHandle {
    fn from_ref(s: &ApiState) -> NodeHandle {
        s.node.clone()
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// `GET /v1/status[?peers=false]`: without the list of peers (`peer_counts`
/// still says how many), for a poll that must stay cheap in a large cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    peers: Option<bool>,
}

async fn status(
    State(s): State<ApiState>,
    query: Result<axum::extract::Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<StatusView>, AppError> {
    let axum::extract::Query(q) =
        query.map_err(|e| AppError(StatusCode::BAD_REQUEST, e.body_text()))?;
    full_status(&s, q.peers.unwrap_or(true)).await.map(Json)
}

async fn full_status(s: &ApiState, with_peers: bool) -> Result<StatusView, AppError> {
    let status = if with_peers {
        s.node.status().await
    } else {
        s.node.status_brief().await
    };
    let mut status = status.ok_or_else(|| {
        AppError(
            StatusCode::SERVICE_UNAVAILABLE,
            "node is not answering".into(),
        )
    })?;
    status.api_unauthorized = s.auth.refused.load(std::sync::atomic::Ordering::Relaxed);
    Ok(status)
}

async fn peers(State(s): State<ApiState>) -> Result<Json<Vec<PeerView>>, AppError> {
    full_status(&s, true).await.map(|s| Json(s.peers))
}

/// Binds the control API; returns the bound address and a future serving it
/// until the frontend's `stop`.
pub async fn bind(
    f: crate::node::Frontend,
) -> Result<(SocketAddr, impl Future<Output = std::io::Result<()>>), ApiError> {
    let addr = f.addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ApiError::Bind { addr, source })?;
    let auth = Auth {
        token: f.token.map(std::sync::Arc::from),
        refused: Default::default(),
    };
    let metrics = metrics::Metrics::new(f.registry);
    let app = Router::new()
        .route("/health", get(metrics::health))
        .route("/metrics", get(metrics::metrics))
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/peers/{id}", delete(pins::remove_member))
        .route("/v1/trust/revocations", post(revocations))
        .merge(pins::routes())
        .merge(index::routes())
        .merge(pinning::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            metrics.clone(),
            metrics::count,
        ))
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            authorize,
        ))
        .with_state(ApiState {
            node: f.node,
            pins: f.pins,
            defaults: f.defaults,
            role: f.role,
            auth,
            metrics,
        });
    let serve = axum::serve(listener, app).with_graceful_shutdown(f.stop.cancelled_owned());
    Ok((bound, async move { serve.await }))
}

/// Parses `HOST:PORT` or a `/ip4|ip6/…/tcp/PORT` multiaddr into `HOST:PORT`.
pub fn parse_api_addr(text: &str) -> Option<String> {
    let text = text.trim();
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Some(a.to_string());
    }
    let parts: Vec<&str> = text.split('/').collect();
    match parts.as_slice() {
        ["", "ip4", ip, "tcp", port] => Some(format!("{ip}:{port}")),
        ["", "ip6", ip, "tcp", port] => Some(format!("[{ip}]:{port}")),
        _ => None,
    }
}

/// Finds the API: an explicit address wins, else the data dir's `api` file.
pub fn locate(explicit: Option<&str>, data_dir: &Path) -> Result<String, ApiError> {
    if let Some(a) = explicit {
        return parse_api_addr(a)
            .ok_or_else(|| ApiError::NoApiFile(format!("--api {a:?} is not HOST:PORT")));
    }
    let file = crate::store::api_file(data_dir);
    let text = std::fs::read_to_string(&file).map_err(|e| {
        ApiError::NoApiFile(format!(
            "{}: {e} (is a node running with this --data-dir?)",
            file.display()
        ))
    })?;
    parse_api_addr(&text).ok_or_else(|| {
        ApiError::NoApiFile(format!("{}: unreadable address {text:?}", file.display()))
    })
}

/// A small client for the control API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    addr: String,
    token: Option<String>,
}

impl Client {
    pub fn new(addr: String) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Client {
            http,
            addr,
            token: None,
        }
    }

    /// Sends `Authorization: Bearer TOKEN` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    /// `HOST:PORT` of the node's API.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<(T, String), ApiError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(T, String), ApiError> {
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.addr));
        if let Some(b) = body {
            // Writes wait for the commit (the server gives up after 15 s).
            req = req.json(&b).timeout(Duration::from_secs(20));
        }
        let body = self.send(req).await?;
        let value = serde_json::from_str(&body).map_err(|e| ApiError::Status {
            addr: self.addr.clone(),
            status: 200,
            body: format!("unexpected response ({e}): {body}"),
        })?;
        Ok((value, body))
    }

    /// Any JSON call (the `index` subcommands): the answer and its text.
    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(serde_json::Value, String), ApiError> {
        self.call(method, path, body).await
    }

    /// A GET whose answer is not JSON (an export's JSON Lines).
    pub async fn text(&self, path: &str) -> Result<String, ApiError> {
        self.send(self.http.get(format!("http://{}{path}", self.addr)))
            .await
    }

    /// POSTs a JSON Lines body (an import); the answer's text.
    pub async fn post_lines(&self, path: &str, lines: String) -> Result<String, ApiError> {
        let req = self
            .http
            .post(format!("http://{}{path}", self.addr))
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .timeout(Duration::from_secs(600))
            .body(lines);
        self.send(req).await
    }

    async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<String, ApiError> {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let unreachable = |source| ApiError::Unreachable {
            addr: self.addr.clone(),
            source,
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let body = resp.text().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(ApiError::Status {
                addr: self.addr.clone(),
                status: status.as_u16(),
                body,
            });
        }
        Ok(body)
    }

    /// The status and the raw JSON it came as.
    pub async fn status(&self) -> Result<(StatusView, String), ApiError> {
        self.get("/v1/status").await
    }

    /// The status without the list of peers (`peer_counts` instead).
    pub async fn status_brief(&self) -> Result<(StatusView, String), ApiError> {
        self.get("/v1/status?peers=false").await
    }

    pub async fn peers(&self) -> Result<(Vec<PeerView>, String), ApiError> {
        self.get("/v1/peers").await
    }

    /// `POST /v1/pins`: answered once committed.
    pub async fn pin_add(
        &self,
        req: &pins::PinRequest,
    ) -> Result<(pins::PinView, String), ApiError> {
        let body = serde_json::to_value(req).unwrap_or_default();
        self.call(reqwest::Method::POST, "/v1/pins", Some(body))
            .await
    }

    pub async fn pin_rm(&self, cid: &str) -> Result<(serde_json::Value, String), ApiError> {
        self.call(reqwest::Method::DELETE, &format!("/v1/pins/{cid}"), None)
            .await
    }

    pub async fn pins(&self) -> Result<(Vec<pins::PinView>, String), ApiError> {
        self.get("/v1/pins").await
    }

    /// `DELETE /v1/peers/{id}`: the member stops counting for `write_copies`.
    pub async fn remove_member(&self, id: &str) -> Result<(serde_json::Value, String), ApiError> {
        self.call(reqwest::Method::DELETE, &format!("/v1/peers/{id}"), None)
            .await
    }

    /// `POST /v1/trust/revocations`: a signed revocation list.
    pub async fn publish_revocations(
        &self,
        list: &[u8],
    ) -> Result<(serde_json::Value, String), ApiError> {
        use base64::Engine as _;
        let body = serde_json::json!({
            "list": base64::engine::general_purpose::STANDARD.encode(list)
        });
        self.call(reqwest::Method::POST, "/v1/trust/revocations", Some(body))
            .await
    }

    pub async fn pin(&self, cid: &str) -> Result<(pins::PinView, String), ApiError> {
        self.get(&format!("/v1/pins/{cid}")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_addresses_parse_in_both_forms() {
        assert_eq!(
            parse_api_addr("/ip4/127.0.0.1/tcp/5010\n").as_deref(),
            Some("127.0.0.1:5010")
        );
        assert_eq!(
            parse_api_addr("127.0.0.1:7").as_deref(),
            Some("127.0.0.1:7")
        );
        assert_eq!(parse_api_addr("/ip6/::1/tcp/9").as_deref(), Some("[::1]:9"));
        assert_eq!(parse_api_addr("nonsense"), None);
        let a: SocketAddr = "127.0.0.1:5010".parse().unwrap();
        assert_eq!(
            parse_api_addr(&api_file_text(a)).as_deref(),
            Some("127.0.0.1:5010")
        );
    }
}
