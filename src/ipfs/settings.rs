//! The `[ipfs]` config section: which engine, where it keeps its repo and
//! listens, and the per-role settings applied to kubo.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;
use crate::role::Role;

/// How the node gets its IPFS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// kubo when an `ipfs` binary is found, else the built-in engine.
    Auto,
    Kubo,
    Builtin,
    External,
    Off,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "kubo" => Ok(Mode::Kubo),
            "builtin" => Ok(Mode::Builtin),
            "external" => Ok(Mode::External),
            "off" => Ok(Mode::Off),
            _ => Err(format!(
                "unknown IPFS mode {s:?}: expected auto, kubo, builtin, external or off"
            )),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Mode::Auto => "auto",
            Mode::Kubo => "kubo",
            Mode::Builtin => "builtin",
            Mode::External => "external",
            Mode::Off => "off",
        };
        f.write_str(s)
    }
}

/// kubo settings for one role (`ipfs config` keys in the comments).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSettings {
    /// `Routing.Type`: dhtserver | dhtclient | auto | none.
    pub routing: String,
    /// `Datastore.StorageMax`, e.g. "100GB".
    pub storage_max: String,
    /// `Datastore.StorageGCWatermark`, percent.
    pub gc_watermark: u8,
    /// `Datastore.GCPeriod`, e.g. "1h".
    pub gc_period: String,
    /// `Swarm.ConnMgr.LowWater`, `HighWater`, `GracePeriod`.
    pub conn_low: u32,
    pub conn_high: u32,
    pub conn_grace: String,
    /// `Reprovider.Strategy`: all | pinned | roots.
    pub reprovide: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IpfsFile {
    mode: String,
    binary: String,
    repo: String,
    api: String,
    swarm: Vec<String>,
    bootstrap: Vec<String>,
    health_interval_ms: u64,
    health_failures: u32,
    role: BTreeMap<String, RoleSettings>,
}

/// The node's own addresses, which the IPFS daemon's follow when
/// `ipfs.api` is "" or `ipfs.swarm` is empty (the defaults): the RPC API
/// on loopback at the node API's port + 1, the swarm on all interfaces at the
/// node's first TCP port + 1 (port 0 stays 0). So the defaults are the
/// long-standing 5011 and 4011, and a second node on the same host, given
/// ports of its own, never collides with the first one's IPFS.
#[derive(Debug, Clone, Copy)]
pub struct Follow<'a> {
    pub api: SocketAddr,
    pub listen: &'a [libp2p::Multiaddr],
}

impl Follow<'_> {
    fn next(port: u16) -> Option<u16> {
        if port == 0 {
            Some(0)
        } else {
            port.checked_add(1)
        }
    }

    /// The RPC API's address, on loopback whatever the node API's host
    /// (kubo's RPC API has no access control); `None` when the port would
    /// pass 65535.
    pub fn api(&self) -> Option<SocketAddr> {
        let lo = if self.api.is_ipv6() {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        } else {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        };
        Some(SocketAddr::new(lo, Self::next(self.api.port())?))
    }

    /// The swarm's multiaddr; `None` when the port would pass 65535.
    pub fn swarm(&self) -> Option<String> {
        use libp2p::multiaddr::Protocol;
        let tcp = self
            .listen
            .iter()
            .flat_map(|a| a.iter())
            .find_map(|p| match p {
                Protocol::Tcp(port) => Some(port),
                _ => None,
            })
            .unwrap_or(4010);
        Some(format!("/ip4/0.0.0.0/tcp/{}", Self::next(tcp)?))
    }
}

/// The validated `[ipfs]` section.
#[derive(Debug, Clone)]
pub struct IpfsConfig {
    pub mode: Mode,
    /// kubo's binary; `None`: `ipfs` on PATH.
    pub binary: Option<PathBuf>,
    /// `None`: `<data_dir>/ipfs` (built-in) or `<data_dir>/kubo`.
    pub repo: Option<PathBuf>,
    /// Where kubo or the built-in engine serves its RPC API, or where the
    /// external daemon does.
    pub api: SocketAddr,
    pub swarm: Vec<String>,
    /// kubo's `Bootstrap` list (empty: stay off the public network).
    pub bootstrap: Vec<String>,
    /// The API is asked for `id` this often; after `health_failures` misses
    /// in a row the daemon is restarted (an external one is reported down).
    pub health_interval: Duration,
    pub health_failures: u32,
    pub roles: BTreeMap<String, RoleSettings>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

impl IpfsFile {
    /// `mode`, `api` and `swarm` may come from flags (already strings here).
    pub(crate) fn validate(
        self,
        mode: Option<Mode>,
        api: Option<&str>,
        swarm: &[String],
        follow: Follow,
    ) -> Result<IpfsConfig, ConfigError> {
        let mode = match mode {
            Some(m) => m,
            None => self
                .mode
                .parse()
                .map_err(|e: String| invalid("ipfs.mode", e))?,
        };
        let followed = follow.api();
        let api_s = api.unwrap_or(&self.api);
        let api = if api_s.is_empty() {
            followed.ok_or_else(|| {
                invalid(
                    "ipfs.api",
                    "the node's API port is 65535, so the IPFS API cannot follow it: set ipfs.api (--ipfs-api)",
                )
            })?
        } else {
            api_s
                .parse::<SocketAddr>()
                .map_err(|e| invalid("ipfs.api", format!("{api_s:?} is not HOST:PORT ({e})")))?
        };
        if mode == Mode::External && api.port() == 0 {
            return Err(invalid(
                "ipfs.api",
                "external mode needs the daemon's real port",
            ));
        }
        let swarm = if !swarm.is_empty() {
            swarm.to_vec()
        } else if self.swarm.is_empty() {
            vec![follow.swarm().ok_or_else(|| {
                invalid(
                    "ipfs.swarm",
                    "the node's TCP port is 65535, so the IPFS swarm cannot follow it: set ipfs.swarm (--ipfs-swarm)",
                )
            })?]
        } else {
            self.swarm
        };
        for s in swarm.iter().chain(&self.bootstrap) {
            s.parse::<libp2p::Multiaddr>()
                .map_err(|e| invalid("ipfs.swarm", format!("invalid multiaddr {s:?}: {e}")))?;
        }
        if matches!(mode, Mode::Builtin | Mode::Kubo) && swarm.is_empty() {
            return Err(invalid(
                "ipfs.swarm",
                "at least one swarm address is needed",
            ));
        }
        for role in ["master", "worker", "leecher"] {
            let Some(r) = self.role.get(role) else {
                return Err(invalid(
                    "ipfs.role",
                    format!("[ipfs.role.{role}] is missing"),
                ));
            };
            if !matches!(
                r.routing.as_str(),
                "dhtserver" | "dhtclient" | "auto" | "none"
            ) {
                return Err(invalid(
                    "ipfs.role",
                    format!(
                        "{role}.routing {:?}: expected dhtserver, dhtclient, auto or none",
                        r.routing
                    ),
                ));
            }
            if r.gc_watermark > 100 || r.conn_low > r.conn_high {
                return Err(invalid(
                    "ipfs.role",
                    format!("{role}: need gc_watermark <= 100 and conn_low <= conn_high"),
                ));
            }
        }
        if let Some(extra) = self
            .role
            .keys()
            .find(|k| !matches!(k.as_str(), "master" | "worker" | "leecher"))
        {
            return Err(invalid("ipfs.role", format!("unknown role {extra:?}")));
        }
        if self.health_interval_ms < 100 || self.health_failures == 0 {
            return Err(invalid(
                "ipfs.health_interval_ms",
                "need health_interval_ms >= 100 and health_failures >= 1",
            ));
        }
        let path = |s: String| (!s.is_empty()).then(|| PathBuf::from(s));
        Ok(IpfsConfig {
            mode,
            binary: path(self.binary),
            repo: path(self.repo),
            api,
            swarm,
            bootstrap: self.bootstrap,
            health_interval: Duration::from_millis(self.health_interval_ms),
            health_failures: self.health_failures,
            roles: self.role,
        })
    }
}

impl IpfsConfig {
    pub fn role_settings(&self, role: Role) -> &RoleSettings {
        // validate() guarantees all three.
        &self.roles[&role.to_string()]
    }

    pub fn repo_for(&self, mode: Mode, data_dir: &Path) -> PathBuf {
        match (&self.repo, mode) {
            (Some(r), _) => r.clone(),
            (None, Mode::Kubo) => data_dir.join("kubo"),
            (None, _) => data_dir.join("ipfs"),
        }
    }
}
