//! The control API: HTTP + JSON on `--api`, served by axum, and the client
//! the `status` and `peers` subcommands use to reach it.
//!
//! Routes: `GET /v1/status`, `GET /v1/peers`, and the pinset under
//! `/v1/pins` ([`pins`]). Handlers ask the node's event
//! loop through its [`NodeHandle`] and answer 503 if
//! it does not reply in time.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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

async fn status(State(node): State<NodeHandle>) -> Result<Json<StatusView>, AppError> {
    node.status().await.map(Json).ok_or_else(|| {
        AppError(
            StatusCode::SERVICE_UNAVAILABLE,
            "node is not answering".into(),
        )
    })
}

async fn peers(State(node): State<NodeHandle>) -> Result<Json<Vec<PeerView>>, AppError> {
    status(State(node)).await.map(|s| Json(s.0.peers))
}

/// Binds the control API; returns the bound address and a future serving it until `shutdown`.
pub async fn bind(
    addr: SocketAddr,
    node: NodeHandle,
    pins: PinsetHandle,
    defaults: PinsConfig,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, impl Future<Output = std::io::Result<()>>), ApiError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ApiError::Bind { addr, source })?;
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/peers/{id}", delete(pins::remove_member))
        .merge(pins::routes())
        .with_state(ApiState {
            node,
            pins,
            defaults,
        });
    let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
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
}

impl Client {
    pub fn new(addr: String) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Client { http, addr }
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
        let url = format!("http://{}{path}", self.addr);
        let unreachable = |source| ApiError::Unreachable {
            addr: self.addr.clone(),
            source,
        };
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            // Writes wait for the commit (the server gives up after 15 s).
            req = req.json(&b).timeout(Duration::from_secs(20));
        }
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
        let value = serde_json::from_str(&body).map_err(|e| ApiError::Status {
            addr: self.addr.clone(),
            status: status.as_u16(),
            body: format!("unexpected response ({e}): {body}"),
        })?;
        Ok((value, body))
    }

    /// The status and the raw JSON it came as.
    pub async fn status(&self) -> Result<(StatusView, String), ApiError> {
        self.get("/v1/status").await
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
