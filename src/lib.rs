//! ipfs-kit-p2p: a peer-to-peer node that turns machines running IPFS into a
//! self-organising cluster.
//!
//! # Map
//! * [`cli`], [`config`]: flags and the layered configuration (embedded
//!   defaults < TOML file < environment < flags), validated into a
//!   [`config::NodeConfig`].
//! * [`node`]: the node. One task owns the libp2p `Swarm` (TCP + QUIC, Noise,
//!   Yamux; identify, ping, gossipsub, Kademlia, mDNS, request-response) and
//!   the [`election`] core; it reads swarm events, timers and commands from a
//!   bounded `mpsc` channel fed by [`node::NodeHandle`]s.
//! * [`election`]: coordinator-free leader election with epochs, as a pure
//!   state machine (inputs and time in, actions out).
//! * [`view`]: the cluster as the election sees it (a leaf), published by
//!   the node loop on a `watch` for the pinset tasks.
//! * [`wire`]: every message, protocol name, version and size limit, and the
//!   request-response codec.
//! * [`api`]: the control API (axum, HTTP + JSON), served in its own task and
//!   asking the node through its handles; and the client the subcommands
//!   use. The node does not import it: [`node::run`] takes a function that
//!   binds it (here, in `run_node`). Beside the node's own routes it serves
//!   the IPFS Pinning Service API ([`api::pinning`]) and Prometheus
//!   metrics (one registry with libp2p's, which the node loop records).
//! * [`status`]: what a node reports of itself (a leaf the node builds and
//!   the API serves); [`clock`]: the wall clock (a leaf).
//! * [`store`]: the data directory: lock, identity key, persisted epoch, the
//!   `api` file; every write atomic.
//! * [`health`]: CPU, memory, disk and GPU figures for heartbeats.
//! * [`limits`]: the limit on open files, raised at start to what a full
//!   cluster needs.
//! * [`role`]: the roles, and `--role auto` (a pure chooser).
//! * [`commands`]: the subcommands (`status`, `peers`, `pin`, `add`, and the
//!   operator's `cluster init`, `id`, `cert`, `api-token`).
//! * [`trust`]: who is a member and what each member may send: the operator
//!   key, node certificates and revocation lists ([`trust::cert`], pure),
//!   the key and token files ([`trust::files`]), and the membership gate the
//!   node loop asks about every message (a pure core, time passed in).
//! * `fuzzing` (hidden): the entry points of the fuzz targets in `fuzz/`,
//!   whose corpora `cargo test` replays.
//! * [`supervisor`]: runs child processes (`[[service]]` entries, later the
//!   IPFS daemon), one task per child, state on a `watch` channel the node's
//!   status reads.
//! * [`ipfs_rpc`]: a typed client for the IPFS RPC API (`/api/v0/…`).
//! * [`pinset`]: the cluster pinset as a convergent replicated state (last
//!   writer wins per CID, stamped by hybrid logical clocks, synced by version
//!   vectors), stored in redb; its contract is in the module docs. Three
//!   tasks, each on a thread of
//!   its own (redb commits fsync; planning a large pinset is CPU-bound; the
//!   node loop must not wait for either): the pinset task (`pinset::actor`),
//!   the keeper (the leader's replica orders) and the holder (this node's
//!   IPFS pins). They follow the node's `ClusterView` (a `watch` the node
//!   loop feeds) and send through the node's request-response (`NodeHandle`
//!   as `Transport`). The pinset task tells the holder, on a channel, of
//!   removed items it still holds whose removals are being collected.
//! * [`index`]: the cluster's indexes (embeddings, knowledge graph, content
//!   metadata, peer lists): records of the replicated pinset under keys of
//!   their own, and per index a pure in-memory view the pinset database
//!   updates after every commit; the API reads the views.
//!
//! Shutdown: SIGINT/SIGTERM cancel a `CancellationToken`; the node tells
//! systemd STOPPING=1 (READY=1 went once its swarm and API listened), announces
//! its departure (gossip + a direct notice to each peer, acknowledged), then
//! stops its supervised services and IPFS, then the API, then the pinset
//! threads (joined, so their databases close cleanly), and removes its `api`
//! file.

pub mod api;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod election;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod index;
pub mod ipfs;
pub mod ipfs_rpc;
pub mod limits;
pub mod node;
pub mod pinset;
pub mod role;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod trust;
pub mod view;
pub mod wire;

use cli::{Cli, Command};
use config::NodeConfig;
use tokio_util::sync::CancellationToken;

/// Runs what the command line asks for.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "ipfs-kit-p2p", &mut out);
            return print_all(&out);
        }
        Some(Command::Man) => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            return print_all(&out);
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            None => {
                // On a worker, beside its connections' tasks (libp2p spawns
                // one per connection), not on this thread outside the pool:
                // their messages to the swarm's loop then mostly wake it on
                // the same worker instead of across threads (a futex wake
                // and a context switch each).
                let node = tokio::spawn(run_node(NodeConfig::load(&cli.node)?));
                match node.await {
                    Ok(result) => result,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => Err(e.into()),
                }
            }
            Some(Command::Status { json }) => commands::status(&cli.node, json).await,
            Some(Command::Peers { json, cmd: None }) => commands::peers(&cli.node, json).await,
            Some(Command::Peers {
                cmd: Some(cli::PeersCommand::Rm { peer }),
                ..
            }) => commands::peers_rm(&cli.node, &peer).await,
            Some(Command::Pin(cmd)) => commands::pins::pin(&cli.node, cmd).await,
            Some(Command::Add(add)) => commands::pins::add(&cli.node, add).await,
            Some(Command::Index(cmd)) => commands::index::run(&cli.node, cmd).await,
            Some(Command::Cluster(cli::ClusterCommand::Init { dir })) => {
                commands::trust::init(&dir)
            }
            Some(Command::Id) => commands::trust::id(&cli.node),
            Some(Command::Cert(cmd)) => commands::trust::cert(&cli.node, cmd).await,
            Some(Command::ApiToken) => commands::trust::api_token(&cli.node),
            Some(Command::IpfsDaemon(args)) => run_ipfs_daemon(args, cli.node.api).await,
            Some(Command::Completions { .. } | Command::Man) => Ok(()),
        }
    })
}

/// Writes generated text to stdout; a reader that stops early (`| head`)
/// is not an error.
fn print_all(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

async fn run_node(cfg: NodeConfig) -> anyhow::Result<()> {
    limits::raise_and_report(cfg.network.max_peers);
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signals.cancel();
    });
    node::run(cfg, shutdown, |f| async move {
        let (addr, serve) = api::bind(f).await.map_err(|e| e.to_string())?;
        let serve: node::Serve = Box::pin(async move {
            if let Err(e) = serve.await {
                tracing::error!("control API: {e}");
            }
        });
        Ok((addr, serve))
    })
    .await
    .map_err(|e| match e {
        // Exit status 2, like every other configuration problem.
        node::NodeError::Config(c) => anyhow::Error::from(c),
        e => e.into(),
    })
}

#[cfg(feature = "builtin-ipfs")]
async fn run_ipfs_daemon(args: cli::DaemonArgs, api: Option<String>) -> anyhow::Result<()> {
    let api = api.as_deref().unwrap_or("127.0.0.1:5011");
    let api = api.parse().map_err(|e| config::ConfigError::Invalid {
        field: "api",
        message: format!("{api:?} is not HOST:PORT ({e})"),
    })?;
    // Under the node, the limit it raised is inherited; run by hand, the
    // engine raises its own (a connection to each of the cluster's daemons).
    if let Err(e) = limits::raise_open_files() {
        tracing::warn!(error = %e, "cannot read or raise the limit on open files");
    }
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signals.cancel();
    });
    let opts = ipfs_engine::Options {
        repo: args.repo,
        api,
        swarm: args.swarm.iter().map(|a| a.to_string()).collect(),
        agent: format!(
            "ipfs-kit-p2p/{} (built-in engine, rust-ipfs 0.16)",
            env!("CARGO_PKG_VERSION")
        ),
    };
    ipfs_engine::run(opts, shutdown).await?;
    Ok(())
}

#[cfg(not(feature = "builtin-ipfs"))]
async fn run_ipfs_daemon(_: cli::DaemonArgs, _: Option<String>) -> anyhow::Result<()> {
    anyhow::bail!("this build has no built-in IPFS engine (cargo feature `builtin-ipfs`)")
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the node with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
