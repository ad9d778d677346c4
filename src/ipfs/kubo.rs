//! Running a user's kubo: `ipfs init` when the repo is new, the node's
//! settings applied through `ipfs config` (addresses, no public bootstrap,
//! and the per-role table from `[ipfs.role.*]`), then `ipfs daemon
//! --migrate --enable-gc` under the supervisor.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::process::Command;

use super::READY_LINE;
use super::settings::IpfsConfig;
use crate::role::Role;
use crate::supervisor::{Readiness, RestartPolicy, ServiceSpec};

/// Each `ipfs init` / `ipfs config` call gets this long.
const CALL: Duration = Duration::from_secs(60);

/// The `ipfs config --json` settings for this node, in the order applied.
pub fn settings(cfg: &IpfsConfig, role: Role) -> Vec<(&'static str, Value)> {
    let r = cfg.role_settings(role);
    let api = match cfg.api {
        std::net::SocketAddr::V4(a) => format!("/ip4/{}/tcp/{}", a.ip(), a.port()),
        std::net::SocketAddr::V6(a) => format!("/ip6/{}/tcp/{}", a.ip(), a.port()),
    };
    vec![
        ("Addresses.API", json!(api)),
        ("Addresses.Gateway", json!([])),
        ("Addresses.Swarm", json!(cfg.swarm)),
        // The cluster connects its members' daemons itself; nothing public
        // unless the operator lists it.
        ("Bootstrap", json!(cfg.bootstrap)),
        ("Discovery.MDNS.Enabled", json!(false)),
        ("Swarm.DisableNatPortMap", json!(true)),
        ("Swarm.RelayClient.Enabled", json!(false)),
        ("Swarm.RelayService.Enabled", json!(false)),
        ("AutoNAT.ServiceMode", json!("disabled")),
        ("Routing.Type", json!(r.routing)),
        ("Datastore.StorageMax", json!(r.storage_max)),
        ("Datastore.StorageGCWatermark", json!(r.gc_watermark)),
        ("Datastore.GCPeriod", json!(r.gc_period)),
        ("Swarm.ConnMgr.Type", json!("basic")),
        ("Swarm.ConnMgr.LowWater", json!(r.conn_low)),
        ("Swarm.ConnMgr.HighWater", json!(r.conn_high)),
        ("Swarm.ConnMgr.GracePeriod", json!(r.conn_grace)),
        ("Reprovider.Strategy", json!(r.reprovide)),
    ]
}

async fn ipfs(bin: &Path, repo: &Path, args: &[&str]) -> anyhow::Result<()> {
    let run = Command::new(bin)
        .args(args)
        .env("IPFS_PATH", repo)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(CALL, run)
        .await
        .with_context(|| format!("`ipfs {}` did not finish within {CALL:?}", args.join(" ")))?
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "`ipfs {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Initialises the repo if needed, applies the settings, and returns the daemon's spec.
pub async fn prepare(
    bin: &Path,
    repo: &Path,
    cfg: &IpfsConfig,
    role: Role,
) -> anyhow::Result<ServiceSpec> {
    std::fs::create_dir_all(repo)
        .with_context(|| format!("cannot create the kubo repo {}", repo.display()))?;
    if !repo.join("config").exists() {
        tracing::info!(repo = %repo.display(), "initialising the kubo repo");
        ipfs(bin, repo, &["init", "--empty-repo"]).await?;
    }
    for (key, value) in settings(cfg, role) {
        ipfs(bin, repo, &["config", "--json", key, &value.to_string()]).await?;
    }
    let mut spec = ServiceSpec::new("ipfs", bin, &["daemon", "--migrate", "--enable-gc"]);
    spec.env = vec![("IPFS_PATH".into(), repo.display().to_string())];
    spec.readiness = Readiness::LogLine(READY_LINE.into());
    spec.restart = RestartPolicy::Always;
    spec.grace = Duration::from_secs(10);
    Ok(spec)
}
