//! Layered configuration: embedded defaults (`config/default.toml`) < config
//! file < environment < flags, then [`NodeConfig::validate`]d.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use serde::Deserialize;

use crate::cli::NodeArgs;
use crate::election::Timing;
use crate::ipfs::settings::{IpfsConfig, IpfsFile};
use crate::role::Role;
use crate::supervisor::{Readiness, RestartPolicy, ServiceSpec};

/// The defaults, embedded in the binary; the file documents every key.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// A configuration problem. The message names the culprit; the binary exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("no data directory: pass --data-dir (no home directory to default to)")]
    NoDataDir,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    role: crate::role::RoleSetting,
    cluster: String,
    bootstrap: Vec<String>,
    listen: Vec<String>,
    api: String,
    mdns: bool,
    data_dir: Option<PathBuf>,
    election: ElectionFile,
    network: NetworkConfig,
    service: Vec<ServiceFile>,
    ipfs: IpfsFile,
    pins: PinsConfig,
    api_token_file: Option<PathBuf>,
    trust: TrustFile,
}

/// The `[trust]` section: paths, empty meaning unset.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    operator_key: Option<PathBuf>,
    certificate: Option<PathBuf>,
    swarm_key: Option<PathBuf>,
    revocations: Option<PathBuf>,
}

/// Where the trust files are (see [`crate::trust`]); read when the node starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustConfig {
    /// The operator's public key (`operator.pub`): secured mode.
    pub operator_key: Option<PathBuf>,
    /// This node's certificate, signed by that key.
    pub certificate: Option<PathBuf>,
    /// A private network's pre-shared key (kubo's `swarm.key` format).
    pub swarm_key: Option<PathBuf>,
    /// A revocation list to take at start (newer lists also arrive from
    /// peers and the API and are kept in the data directory).
    pub revocations: Option<PathBuf>,
}

/// The `[pins]` section: replication defaults, and how the leader and the
/// holders keep items replicated (see `config/default.toml` for defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinsConfig {
    pub replication_min: u8,
    pub replication_max: u8,
    /// Masters or workers that must hold a change durably before a write is
    /// acknowledged (capped by the members this node knows).
    pub write_copies: u8,
    /// A member not seen for this long stops counting for `write_copies`.
    pub member_expiry_secs: u64,
    /// A holder that goes down still counts this long before its items get
    /// new copies elsewhere.
    pub grace_secs: u64,
    /// A peer whose pin failed is not asked again for that item before this,
    /// doubled after every further failure in a row (at most 32 times).
    pub retry_secs: u64,
    /// Peers with less free disk get no new copies.
    pub min_free_mib: u64,
    /// IPFS pin/unpin calls a holder runs at once.
    pub concurrency: usize,
    /// Deadline of one `pin/add` on a holder.
    pub pin_timeout_secs: u64,
    /// How often a holder checks `pin/ls` against what it holds.
    pub reconcile_secs: u64,
    /// Anti-entropy with some master or worker at least this often, even
    /// when digests agree (removals are collected once every member has
    /// been heard this way).
    pub sync_every_secs: u64,
    /// A removal is kept at least this long, and until every master and
    /// worker has seen it.
    pub removal_horizon_secs: u64,
}

/// One `[[service]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: String,
    command: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    #[serde(default)]
    ready: ReadyFile,
    #[serde(default = "default_restart")]
    restart: String,
    #[serde(default = "default_grace_ms")]
    grace_ms: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadyFile {
    http: Option<String>,
    tcp: Option<String>,
    log: Option<String>,
}

fn default_restart() -> String {
    "always".into()
}

fn default_grace_ms() -> u64 {
    10_000
}

impl ServiceFile {
    fn into_spec(self) -> Result<ServiceSpec, ConfigError> {
        let field = "service";
        if self.name.is_empty() || self.command.as_os_str().is_empty() {
            return Err(invalid(
                field,
                "every [[service]] needs a name and a command",
            ));
        }
        let readiness = match (self.ready.http, self.ready.tcp, self.ready.log) {
            (None, None, None) => Readiness::None,
            (Some(url), None, None) => Readiness::Http(url),
            (None, Some(addr), None) => Readiness::Tcp(addr),
            (None, None, Some(line)) => Readiness::LogLine(line),
            _ => {
                return Err(invalid(
                    field,
                    format!("{}: ready takes one of http, tcp or log", self.name),
                ));
            }
        };
        let restart = match self.restart.as_str() {
            "always" => RestartPolicy::Always,
            "on-failure" => RestartPolicy::OnFailure,
            "never" => RestartPolicy::Never,
            other => {
                let msg = format!(
                    "{}: restart {other:?}: expected always, on-failure or never",
                    self.name
                );
                return Err(invalid(field, msg));
            }
        };
        let mut spec = ServiceSpec::new(&self.name, self.command, &[]);
        spec.args = self.args;
        spec.env = self.env.into_iter().collect();
        spec.cwd = self.cwd;
        spec.readiness = readiness;
        spec.restart = restart;
        spec.grace = Duration::from_millis(self.grace_ms);
        Ok(spec)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ElectionFile {
    heartbeat_interval_ms: u64,
    quiet_heartbeat_per_member_ms: u64,
    peer_timeout_ms: u64,
    suspect_timeout_ms: u64,
    startup_grace_ms: u64,
    probe_interval_ms: u64,
    probe_timeout_ms: u64,
    probe_timeout_max_ms: u64,
    probe_failures: u32,
    check_attempts: u32,
    check_spacing_ms: u64,
    probers: usize,
    indirect_probes: usize,
    probe_datagram_resend_ms: u64,
    probe_connection_after_ms: u64,
}

/// Swarm tuning, the `[network]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub mesh_n: usize,
    pub mesh_n_low: usize,
    pub mesh_n_high: usize,
    pub gossip_lazy: usize,
    pub max_peers: usize,
    pub redial_interval_ms: u64,
    /// The UDP port probe datagrams are answered on (0: any free port;
    /// peers learn it from the heartbeats).
    pub probe_port: u16,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub role: Role,
    /// `--role auto`: why this role (`None`: the role was given).
    pub role_auto: Option<String>,
    pub cluster: String,
    pub bootstrap: Vec<Multiaddr>,
    pub listen: Vec<Multiaddr>,
    pub api: SocketAddr,
    pub mdns: bool,
    pub data_dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub timing: Timing,
    /// Probing the leader (`[election]` probe_*).
    pub probe: crate::election::probe::ProbeTiming,
    /// Followers that probe the leader, and members asked for an indirect probe.
    pub probers: usize,
    pub indirect_probes: usize,
    /// Probes also go as UDP datagrams, sent again this often until
    /// answered (`[election] probe_datagram_resend_ms`; zero: no datagrams).
    pub probe_resend: Duration,
    /// A probe of a peer that answers datagrams goes over the connection
    /// too only if no datagram answer came within this
    /// (`[election] probe_connection_after_ms`, at most half of
    /// `probe_timeout_ms`; zero: both at once).
    pub probe_ping_after: Duration,
    pub network: NetworkConfig,
    /// Extra supervised processes, `[[service]]`.
    pub services: Vec<ServiceSpec>,
    pub ipfs: IpfsConfig,
    pub pins: PinsConfig,
    pub trust: TrustConfig,
    /// The control API's bearer token file; the API asks for it when the
    /// file exists (`<data_dir>/api.token` unless set).
    pub api_token_file: PathBuf,
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn parse_table(text: &str, path: &Path) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn parse_addrs(field: &'static str, list: &[String]) -> Result<Vec<Multiaddr>, ConfigError> {
    list.iter()
        .map(|s| {
            s.parse()
                .map_err(|e| invalid(field, format!("invalid multiaddr {s:?}: {e}")))
        })
        .collect()
}

/// The platform's data directory for the node, e.g. `~/.local/share/ipfs-kit-p2p`.
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("io", "ipfs-kit", "ipfs-kit-p2p")
        .map(|d| d.data_dir().to_owned())
}

impl NodeConfig {
    /// Builds the configuration from the defaults, the config file named by
    /// `args.config` (if any) and the flags/environment in `args`.
    pub fn load(args: &NodeArgs) -> Result<NodeConfig, ConfigError> {
        match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.clone(),
                    source: e,
                })?;
                Self::from_text(&text, path, args)
            }
            None => Self::from_text("", Path::new("<embedded defaults>"), args),
        }
    }

    /// As [`NodeConfig::load`], with the config file's text given (`source`
    /// names it in messages).
    pub fn from_text(
        text: &str,
        source: &Path,
        args: &NodeArgs,
    ) -> Result<NodeConfig, ConfigError> {
        let mut table = parse_table(DEFAULTS, Path::new("<embedded defaults>"))?;
        merge(&mut table, parse_table(text, source)?);
        let source = source.to_owned();
        // The path of the offending key survives the merge, so the message can name it.
        let file: FileConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let message = match e.path().to_string().as_str() {
                    "." => e.inner().message().to_owned(),
                    key => format!("{key}: {}", e.inner().message()),
                };
                ConfigError::Parse {
                    path: source,
                    message,
                }
            })?;
        Self::from_layers(file, args)
    }

    fn from_layers(file: FileConfig, args: &NodeArgs) -> Result<NodeConfig, ConfigError> {
        let pick = |flag: &Vec<Multiaddr>, field, list: &[String]| {
            if flag.is_empty() {
                parse_addrs(field, list)
            } else {
                Ok(flag.clone())
            }
        };
        let api = args.api.clone().unwrap_or(file.api);
        let api = api
            .parse::<SocketAddr>()
            .map_err(|e| invalid("api", format!("{api:?} is not HOST:PORT ({e})")))?;
        let data_dir = match args.data_dir.clone().or(file.data_dir) {
            Some(d) => d,
            None => default_data_dir().ok_or(ConfigError::NoDataDir)?,
        };
        let e = file.election;
        let path_of = |flag: &Option<PathBuf>, file: Option<PathBuf>| {
            flag.clone().or(file).filter(|p| !p.as_os_str().is_empty())
        };
        let trust = TrustConfig {
            operator_key: path_of(&args.operator_key, file.trust.operator_key),
            certificate: path_of(&args.certificate, file.trust.certificate),
            swarm_key: path_of(&args.swarm_key, file.trust.swarm_key),
            revocations: path_of(&None, file.trust.revocations),
        };
        let api_token_file = path_of(&args.api_token_file, file.api_token_file)
            .unwrap_or_else(|| data_dir.join(crate::trust::files::API_TOKEN));
        let listen = pick(&args.listen, "listen", &file.listen)?;
        let ipfs = file.ipfs.validate(
            args.ipfs,
            args.ipfs_api.as_deref(),
            &args.ipfs_swarm,
            crate::ipfs::settings::Follow {
                api,
                listen: &listen,
            },
        )?;
        let (role, role_auto) = match args.role.unwrap_or(file.role) {
            crate::role::RoleSetting::Fixed(r) => (r, None),
            crate::role::RoleSetting::Auto => {
                let have = crate::role::this_machine(&data_dir);
                let (r, why) = crate::role::choose(&have, None).map_err(|e| invalid("role", e))?;
                (r, Some(why))
            }
        };
        let cfg = NodeConfig {
            role,
            role_auto,
            cluster: args.cluster.clone().unwrap_or(file.cluster),
            bootstrap: pick(&args.bootstrap, "bootstrap", &file.bootstrap)?,
            listen,
            api,
            mdns: file.mdns && !args.no_mdns,
            data_dir,
            heartbeat_interval: Duration::from_millis(e.heartbeat_interval_ms),
            timing: Timing {
                peer_timeout: Duration::from_millis(e.peer_timeout_ms),
                suspect_timeout: Duration::from_millis(e.suspect_timeout_ms),
                startup_grace: Duration::from_millis(e.startup_grace_ms),
                heartbeat: Duration::from_millis(e.heartbeat_interval_ms),
                quiet_per_member: Duration::from_millis(e.quiet_heartbeat_per_member_ms),
                successors: e.probers,
                ..Timing::default()
            },
            probe: crate::election::probe::ProbeTiming {
                interval: Duration::from_millis(e.probe_interval_ms),
                timeout: Duration::from_millis(e.probe_timeout_ms),
                timeout_max: Duration::from_millis(e.probe_timeout_max_ms),
                failures: e.probe_failures,
                check_attempts: e.check_attempts,
                check_spacing: Duration::from_millis(e.check_spacing_ms),
            },
            probers: e.probers,
            indirect_probes: e.indirect_probes,
            probe_resend: Duration::from_millis(e.probe_datagram_resend_ms),
            // At most half the shortest deadline, so the probe over the
            // connection has time left (a config with a short
            // probe_timeout_ms and the default here stays valid).
            probe_ping_after: Duration::from_millis(e.probe_connection_after_ms)
                .min(Duration::from_millis(e.probe_timeout_ms) / 2),
            network: file.network,
            services: file
                .service
                .into_iter()
                .map(ServiceFile::into_spec)
                .collect::<Result<_, _>>()?,
            pins: file.pins,
            ipfs,
            trust,
            api_token_file,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        if c.is_empty()
            || c.len() > 64
            || !c
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
        {
            return Err(invalid(
                "cluster",
                format!("{c:?}: use 1-64 letters, digits, '.', '_' or '-'"),
            ));
        }
        if self.listen.is_empty() {
            return Err(invalid("listen", "at least one listen address is needed"));
        }
        if self.heartbeat_interval < Duration::from_millis(50) {
            return Err(invalid(
                "election.heartbeat_interval_ms",
                "must be at least 50",
            ));
        }
        if self.timing.peer_timeout < 2 * self.heartbeat_interval {
            return Err(invalid(
                "election.peer_timeout_ms",
                "must be at least twice election.heartbeat_interval_ms",
            ));
        }
        if self.timing.suspect_timeout.is_zero() {
            return Err(invalid("election.suspect_timeout_ms", "must be above 0"));
        }
        if !self.probe.interval.is_zero() {
            if self.probe.timeout < Duration::from_millis(50) {
                return Err(invalid("election.probe_timeout_ms", "must be at least 50"));
            }
            if self.probe.timeout_max < self.probe.timeout {
                return Err(invalid(
                    "election.probe_timeout_max_ms",
                    "must be at least election.probe_timeout_ms",
                ));
            }
            if self.probe.failures == 0 || self.probers == 0 {
                return Err(invalid(
                    "election.probe_failures",
                    "probe_failures and probers must be at least 1 (probe_interval_ms = 0 turns probing off)",
                ));
            }
        }
        if !self.probe_resend.is_zero() && self.probe_resend < Duration::from_millis(10) {
            return Err(invalid(
                "election.probe_datagram_resend_ms",
                "must be 0 (no probe datagrams) or at least 10",
            ));
        }
        if !(1..=10).contains(&self.probe.check_attempts) {
            return Err(invalid("election.check_attempts", "must be 1 to 10"));
        }
        if self.probe.check_spacing > Duration::from_secs(10) {
            return Err(invalid(
                "election.check_spacing_ms",
                "must be at most 10000",
            ));
        }
        let n = &self.network;
        if !(1 <= n.mesh_n_low && n.mesh_n_low <= n.mesh_n && n.mesh_n <= n.mesh_n_high) {
            return Err(invalid(
                "network.mesh_n",
                "need 1 <= mesh_n_low <= mesh_n <= mesh_n_high",
            ));
        }
        if n.max_peers == 0 {
            return Err(invalid("network.max_peers", "must be above 0"));
        }
        let mut names: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(
                "service",
                format!("two services are named {:?}", w[0]),
            ));
        }
        let p = &self.pins;
        if p.replication_min == 0
            || p.replication_min > p.replication_max
            || p.replication_max > crate::pinset::MAX_REPLICATION
        {
            return Err(invalid(
                "pins.replication_min",
                "need 1 <= replication_min <= replication_max <= 64",
            ));
        }
        if !(1..=16).contains(&p.write_copies) {
            return Err(invalid("pins.write_copies", "need 1 to 16"));
        }
        if p.member_expiry_secs < 60 {
            return Err(invalid("pins.member_expiry_secs", "must be at least 60"));
        }
        if !(1..=256).contains(&p.concurrency) {
            return Err(invalid("pins.concurrency", "need 1 to 256"));
        }
        if p.pin_timeout_secs == 0 {
            return Err(invalid("pins.pin_timeout_secs", "must be at least 1"));
        }
        if p.reconcile_secs == 0 {
            return Err(invalid("pins.reconcile_secs", "must be at least 1"));
        }
        if p.sync_every_secs == 0 {
            return Err(invalid("pins.sync_every_secs", "must be at least 1"));
        }
        if p.removal_horizon_secs == 0 {
            return Err(invalid("pins.removal_horizon_secs", "must be at least 1"));
        }
        let t = &self.trust;
        if t.operator_key.is_some() != t.certificate.is_some() {
            return Err(invalid(
                "trust.operator_key",
                "secured mode needs both trust.operator_key (operator.pub) and \
                 trust.certificate (this node's certificate); set both, or neither for an open cluster",
            ));
        }
        if t.revocations.is_some() && t.operator_key.is_none() {
            return Err(invalid(
                "trust.revocations",
                "a revocation list needs trust.operator_key to be checked against",
            ));
        }
        if n.redial_interval_ms < 100 {
            return Err(invalid(
                "network.redial_interval_ms",
                "must be at least 100",
            ));
        }
        Ok(())
    }

    /// The control API may listen beyond loopback only with a token (checked
    /// when the node starts, with the token it read).
    pub fn check_api_token(&self, token: Option<&str>) -> Result<(), ConfigError> {
        if !self.api.ip().is_loopback() && token.is_none() {
            return Err(invalid(
                "api",
                format!(
                    "the control API would listen on {} (not loopback) without a token: run \
                     `ipfs-kit-p2p api-token --data-dir {}` first (or set api_token_file), or \
                     bind it to 127.0.0.1",
                    self.api,
                    self.data_dir.display()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(file: Option<&str>, args: NodeArgs) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let mut args = NodeArgs {
            data_dir: Some(dir.path().to_owned()),
            ..args
        };
        if let Some(text) = file {
            let path = dir.path().join("c.toml");
            std::fs::write(&path, text).unwrap();
            args.config = Some(path);
        }
        NodeConfig::load(&args)
    }

    #[test]
    fn embedded_defaults_are_valid() {
        let cfg = load_with(None, NodeArgs::default()).unwrap();
        assert_eq!(cfg.role, Role::Worker);
        assert_eq!(cfg.cluster, "default");
        assert_eq!(cfg.listen.len(), 2);
        assert!(cfg.mdns);
        assert_eq!(cfg.api.port(), 5010);
        assert_eq!(cfg.probe, crate::election::probe::ProbeTiming::default());
    }

    #[test]
    fn flags_win_over_the_file() {
        let args = NodeArgs {
            role: Some(Role::Leecher.into()),
            no_mdns: true,
            ..NodeArgs::default()
        };
        let cfg = load_with(
            Some("role = \"master\"\ncluster = \"lab\"\n[election]\npeer_timeout_ms = 20000\n"),
            args,
        )
        .unwrap();
        assert_eq!(cfg.role, Role::Leecher);
        assert_eq!(cfg.cluster, "lab");
        assert!(!cfg.mdns);
        assert_eq!(cfg.timing.peer_timeout, Duration::from_secs(20));
        assert_eq!(
            cfg.heartbeat_interval,
            Duration::from_secs(5),
            "untouched keys keep their default"
        );
    }

    /// Several nodes on one host: each node's IPFS ports follow its own
    /// (+1), so giving each node its own ports is enough; explicit IPFS
    /// addresses win.
    #[test]
    fn the_ipfs_ports_follow_the_nodes_own() {
        let cfg = load_with(None, NodeArgs::default()).unwrap();
        assert_eq!(cfg.ipfs.api.to_string(), "127.0.0.1:5011");
        assert_eq!(cfg.ipfs.swarm, ["/ip4/0.0.0.0/tcp/4011"]);
        let second = NodeArgs {
            api: Some("0.0.0.0:5020".into()),
            listen: vec![
                "/ip4/192.0.2.1/udp/4020/quic-v1".parse().unwrap(),
                "/ip4/192.0.2.1/tcp/4020".parse().unwrap(),
            ],
            ..NodeArgs::default()
        };
        let cfg = load_with(None, second.clone()).unwrap();
        assert_eq!(cfg.ipfs.api.to_string(), "127.0.0.1:5021");
        assert_eq!(cfg.ipfs.swarm, ["/ip4/0.0.0.0/tcp/4021"]);
        let any = NodeArgs {
            api: Some("127.0.0.1:0".into()),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            ..NodeArgs::default()
        };
        let cfg = load_with(None, any).unwrap();
        assert_eq!(cfg.ipfs.api.port(), 0);
        assert_eq!(cfg.ipfs.swarm, ["/ip4/0.0.0.0/tcp/0"]);
        let explicit = NodeArgs {
            ipfs_api: Some("127.0.0.1:7001".into()),
            ipfs_swarm: vec!["/ip4/127.0.0.1/tcp/7002".into()],
            ..second
        };
        let cfg = load_with(None, explicit).unwrap();
        assert_eq!(cfg.ipfs.api.to_string(), "127.0.0.1:7001");
        assert_eq!(cfg.ipfs.swarm, ["/ip4/127.0.0.1/tcp/7002"]);
        let cfg = load_with(
            Some("[ipfs]\napi = \"127.0.0.1:7003\"\n"),
            NodeArgs::default(),
        )
        .unwrap();
        assert_eq!(cfg.ipfs.api.to_string(), "127.0.0.1:7003");
        let top = NodeArgs {
            api: Some("127.0.0.1:65535".into()),
            ..NodeArgs::default()
        };
        assert!(
            load_with(None, top)
                .unwrap_err()
                .to_string()
                .contains("--ipfs-api")
        );
    }

    #[test]
    fn role_auto_picks_a_role_and_says_why() {
        let cfg = load_with(Some("role = \"auto\"\n"), NodeArgs::default()).unwrap();
        let why = cfg.role_auto.expect("auto says why");
        assert!(why.starts_with(&format!("auto: {}", cfg.role)), "{why}");
        let args = NodeArgs {
            role: Some("auto".parse().unwrap()),
            ..NodeArgs::default()
        };
        assert!(load_with(None, args).unwrap().role_auto.is_some());
        assert!(
            load_with(None, NodeArgs::default())
                .unwrap()
                .role_auto
                .is_none()
        );
    }

    #[test]
    fn a_checks_timing_comes_from_the_file() {
        let cfg = load_with(
            Some("[election]\ncheck_attempts = 2\ncheck_spacing_ms = 150\n"),
            NodeArgs::default(),
        )
        .unwrap();
        assert_eq!(cfg.probe.check_attempts, 2);
        assert_eq!(cfg.probe.check_spacing, Duration::from_millis(150));
    }

    #[test]
    fn probe_datagrams_are_on_by_default_and_set_by_the_file() {
        let cfg = load_with(None, NodeArgs::default()).unwrap();
        assert_eq!(cfg.probe_resend, Duration::from_millis(50));
        assert_eq!(cfg.probe_ping_after, Duration::from_millis(100));
        assert_eq!(cfg.network.probe_port, 0);
        let cfg = load_with(
            Some("[election]\nprobe_datagram_resend_ms = 0\nprobe_connection_after_ms = 0\n[network]\nprobe_port = 4012\n"),
            NodeArgs::default(),
        )
        .unwrap();
        assert!(cfg.probe_resend.is_zero(), "0 turns them off");
        assert!(cfg.probe_ping_after.is_zero());
        assert_eq!(cfg.network.probe_port, 4012);
        // Taken as at most half of probe_timeout_ms.
        let cfg = load_with(
            Some("[election]\nprobe_timeout_ms = 80\nprobe_connection_after_ms = 1000\n"),
            NodeArgs::default(),
        )
        .unwrap();
        assert_eq!(cfg.probe_ping_after, Duration::from_millis(40));
    }

    #[test]
    fn errors_name_the_culprit() {
        let err = |text| {
            load_with(Some(text), NodeArgs::default())
                .unwrap_err()
                .to_string()
        };
        assert!(err("rol = \"master\"").contains("rol"));
        assert!(err("role = \"boss\"").contains("boss"));
        assert!(err("[election]\nheartbeat_ms = 1").contains("heartbeat_ms"));
        assert!(err("[election]\ncheck_attempts = 0").contains("election.check_attempts"));
        assert!(
            err("[election]\nprobe_interval_ms = 0\ncheck_attempts = 11")
                .contains("election.check_attempts"),
            "checked with probing off too"
        );
        assert!(err("[election]\ncheck_attempts = -1").contains("check_attempts"));
        assert!(err("[election]\ncheck_spacing_ms = 60000").contains("election.check_spacing_ms"));
        assert!(
            err("[election]\nprobe_datagram_resend_ms = 5")
                .contains("election.probe_datagram_resend_ms")
        );
        assert!(err("[network]\nprobe_port = 70000").contains("probe_port"));
        assert!(err("bootstrap = [\"/ip4/1.2.3\"]").contains("bootstrap"));
        assert!(err("cluster = \"a b\"").contains("cluster"));
        assert!(err("api = \"nonsense\"").contains("api"));
        assert!(err("role = ").contains("c.toml"));
        assert!(
            err("[[service]]\nname = \"x\"\ncommand = \"sh\"\nrestart = \"sometimes\"")
                .contains("sometimes")
        );
        assert!(
            err(
                "[[service]]\nname = \"x\"\ncommand = \"sh\"\nready = { http = \"h\", tcp = \"t\" }"
            )
            .contains("ready")
        );
        assert!(err("[[service]]\nname = \"x\"\ncommand = \"sh\"\n[[service]]\nname = \"x\"\ncommand = \"sh\"").contains("two services"));
        assert!(
            err("[[service]]\nname = \"x\"\ncommand = \"sh\"\nflavour = 1").contains("flavour")
        );
        let missing = NodeArgs {
            config: Some("/nonexistent/x.toml".into()),
            ..NodeArgs::default()
        };
        assert!(
            NodeConfig::load(&missing)
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/x.toml")
        );
    }
}
