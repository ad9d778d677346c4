//! The built-in IPFS engine of ipfs-kit-p2p: an IPFS node on the `rust-ipfs`
//! crate behind the subset of kubo's RPC API the cluster uses.
//!
//! It runs as its own process (`ipfs-kit-p2p ipfs-daemon`), supervised by the
//! node exactly like a user's kubo, and the node only ever talks to it over
//! HTTP. rust-ipfs brings its own, older libp2p; keeping it in this crate
//! keeps those types out of the node.
//!
//! - [`add`]: UnixFS import with kubo's CIDs (and the single-chunk root fix).
//! - [`unixfs`]: reading a UnixFS file node, and which children a byte
//!   range needs (pure).
//! - [`engine`]: the rust-ipfs node, every call under a deadline;
//!   `engine::blocks` has single blocks and `dag/get`, `engine::cat` reads a
//!   file one block at a time in DAG order.
//! - [`rpc`]: the `/api/v0/...` routes with kubo's bodies and error shape;
//!   `rpc::query` parses kubo's options (and refuses unknown ones where a
//!   command lists them), `rpc::files` has `add` and `cat`, `rpc::blocks`
//!   the `block/*` commands and `dag/get`, `rpc::stream` the streamed body
//!   that ends in kubo's `X-Stream-Error` trailer on a failure.
//! - [`run`]: the daemon: repo, listeners, the `api` file, shutdown.

pub mod add;
pub mod engine;
pub mod rpc;
pub mod unixfs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Errors of the engine and its API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad argument or option (kubo's client error, HTTP 400).
    #[error("{0}")]
    BadArg(String),
    #[error("{0}")]
    Engine(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Io(String),
}

/// What `ipfs-kit-p2p ipfs-daemon` is given.
#[derive(Debug, Clone)]
pub struct Options {
    /// Blockstore, pins and the `api` file live here.
    pub repo: PathBuf,
    /// The RPC API listener (port 0 picks one; the `api` file says which).
    pub api: SocketAddr,
    /// Swarm listen multiaddrs.
    pub swarm: Vec<String>,
    /// `AgentVersion` in `id`.
    pub agent: String,
}

/// Runs the daemon until `shutdown` fires or `POST /api/v0/shutdown`.
///
/// Prints kubo's start-up lines on stdout (`RPC API server listening on
/// ...`, `Daemon is ready`) and writes the API multiaddr to `<repo>/api`,
/// as kubo does, so the node finds either engine the same way.
pub async fn run(opts: Options, shutdown: CancellationToken) -> Result<(), Error> {
    std::fs::create_dir_all(&opts.repo).map_err(|e| {
        Error::Io(format!(
            "cannot create the repo {}: {e}",
            opts.repo.display()
        ))
    })?;
    let listener = tokio::net::TcpListener::bind(opts.api).await.map_err(|e| {
        Error::Io(format!(
            "cannot listen on {} for the RPC API: {e}",
            opts.api
        ))
    })?;
    let api_addr = listener
        .local_addr()
        .map_err(|e| Error::Io(format!("RPC API listener: {e}")))?;
    let engine = engine::Engine::start(&opts.repo, &opts.swarm).await?;
    for a in engine.addresses().await? {
        say(&format!("Swarm listening on {a}"));
    }
    let ma = match api_addr {
        SocketAddr::V4(a) => format!("/ip4/{}/tcp/{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("/ip6/{}/tcp/{}", a.ip(), a.port()),
    };
    let api_file = opts.repo.join("api");
    write_atomic(&api_file, ma.as_bytes())?;
    info!(peer = %engine.peer_id(), api = %ma, "built-in IPFS engine started");
    say(&format!("RPC API server listening on {ma}"));
    say("Daemon is ready");

    let state = Arc::new(rpc::Api {
        engine,
        pins: tokio::sync::Semaphore::new(rpc::PIN_CONCURRENCY),
        shutdown: shutdown.clone(),
        agent: opts.agent.clone(),
    });
    let app = rpc::router(state.clone());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    let _ = std::fs::remove_file(&api_file);
    // Requests still holding the engine are gone once serve returns.
    if let Ok(api) = Arc::try_unwrap(state) {
        api.engine.stop().await;
    }
    served.map_err(|e| Error::Io(format!("RPC API: {e}")))?;
    info!("built-in IPFS engine stopped");
    Ok(())
}

/// A line on stdout; never panics (the supervising node may be gone).
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))
}
