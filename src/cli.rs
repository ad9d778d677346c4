//! Command-line interface. Without a subcommand the binary runs a node.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;

use crate::ipfs::Mode;

pub mod index;
use crate::role::Role;

#[derive(Debug, Parser)]
#[command(
    name = "ipfs-kit-p2p",
    version,
    about = "Turns machines running IPFS into a self-organising cluster"
)]
pub struct Cli {
    #[command(flatten)]
    pub node: NodeArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags of a running node. Each can also be set in the config file and by
/// its environment variable; flags win over the environment, the environment
/// over the file.
#[derive(Debug, Clone, Default, Args)]
pub struct NodeArgs {
    /// master | worker | leecher | auto (picked from free memory, disk and
    /// cores; `status` says why) [default: worker]
    #[arg(long, env = "IPFS_KIT_P2P_ROLE", value_parser = parse_role)]
    pub role: Option<crate::role::RoleSetting>,

    /// Peer to join, e.g. /ip4/192.0.2.10/tcp/4010/p2p/12D3KooW… (repeatable)
    #[arg(long, env = "IPFS_KIT_P2P_BOOTSTRAP", value_delimiter = ',', value_parser = parse_multiaddr)]
    pub bootstrap: Vec<Multiaddr>,

    /// Address to listen on (repeatable) [default: TCP and QUIC on port 4010, all interfaces]
    #[arg(long, env = "IPFS_KIT_P2P_LISTEN", value_delimiter = ',', value_parser = parse_multiaddr)]
    pub listen: Vec<Multiaddr>,

    /// Directory for the identity key, state and the api file [default: the platform data dir]
    #[arg(long, global = true, env = "IPFS_KIT_P2P_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// TOML config file (see config/default.toml for every key)
    #[arg(long, global = true, env = "IPFS_KIT_P2P_CONFIG")]
    pub config: Option<PathBuf>,

    /// Control API address, HOST:PORT (port 0 picks one) [default: 127.0.0.1:5010]
    #[arg(long, global = true, env = "IPFS_KIT_P2P_API")]
    pub api: Option<String>,

    /// Cluster name; nodes only join peers with the same name [default: default]
    #[arg(long, env = "IPFS_KIT_P2P_CLUSTER")]
    pub cluster: Option<String>,

    /// Do not discover peers on the local network with mDNS
    #[arg(long, env = "IPFS_KIT_P2P_NO_MDNS")]
    pub no_mdns: bool,

    /// IPFS: auto | kubo | builtin | external | off [default: auto]
    #[arg(long, env = "IPFS_KIT_P2P_IPFS", value_parser = parse_mode)]
    pub ipfs: Option<Mode>,

    /// IPFS RPC API, HOST:PORT: where kubo or the built-in engine listens
    /// (port 0 picks one), or where the external daemon is [default:
    /// loopback at the node API's port + 1, 127.0.0.1:5011 beside the default 5010]
    #[arg(long, env = "IPFS_KIT_P2P_IPFS_API")]
    pub ipfs_api: Option<String>,

    /// The operator's public key (operator.pub): run as a member of that
    /// cluster only (secured mode; needs --certificate)
    #[arg(long, env = "IPFS_KIT_P2P_OPERATOR_KEY")]
    pub operator_key: Option<PathBuf>,

    /// This node's certificate, signed by the operator key
    #[arg(long, env = "IPFS_KIT_P2P_CERTIFICATE")]
    pub certificate: Option<PathBuf>,

    /// A private network's key (kubo's swarm.key format); TCP only
    #[arg(long, env = "IPFS_KIT_P2P_SWARM_KEY")]
    pub swarm_key: Option<PathBuf>,

    /// The control API token file [default: <data_dir>/api.token]
    #[arg(long, global = true, env = "IPFS_KIT_P2P_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,

    /// IPFS swarm listen multiaddr (repeatable) [default: the node's TCP
    /// port + 1 on all interfaces, /ip4/0.0.0.0/tcp/4011 beside the default 4010]
    #[arg(long, env = "IPFS_KIT_P2P_IPFS_SWARM", value_delimiter = ',', value_parser = parse_swarm)]
    pub ipfs_swarm: Vec<String>,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

fn parse_swarm(s: &str) -> Result<String, String> {
    parse_multiaddr(s).map(|a| a.to_string())
}

#[derive(Debug, Subcommand)]
pub enum PeersCommand {
    /// Forget a master or worker that will not come back, so it no longer
    /// counts for `pins.write_copies` (a dead member counts until removed
    /// or unseen for `pins.member_expiry_secs`)
    Rm {
        /// Its peer ID
        peer: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Who this node is, who leads (and at which epoch), and its peers
    Status {
        /// Print the control API's JSON
        #[arg(long)]
        json: bool,
    },
    /// The peers this node knows, their roles and health
    Peers {
        /// Print the control API's JSON
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: Option<PeersCommand>,
    },
    /// The cluster pinset: add, remove, list, show
    #[command(subcommand)]
    Pin(PinCommand),
    /// Add a file to this node's IPFS and pin it cluster-wide
    Add(AddArgs),
    /// The cluster's indexes: vectors, graph, metadata, peer lists
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Set up a secured cluster
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print this node's peer ID (creating its identity key if there is
    /// none) without starting it, to issue its certificate
    Id,
    /// Node certificates and revocation lists
    #[command(subcommand)]
    Cert(CertCommand),
    /// Print the control API token, creating it (mode 0600) if missing
    ApiToken,
    /// Run the built-in IPFS engine (kubo's RPC API on rust-ipfs); the node
    /// starts this itself in `builtin` IPFS mode
    IpfsDaemon(DaemonArgs),
    /// Print shell completions (e.g. `ipfs-kit-p2p completions bash >
    /// /etc/bash_completion.d/ipfs-kit-p2p`)
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff; `ipfs-kit-p2p man | man -l -`)
    Man,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create DIR/operator.key (keep it offline), DIR/operator.pub (the
    /// cluster's identity, for every node) and DIR/swarm.key
    Init { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Sign a certificate for one node
    Issue {
        /// The operator key (operator.key)
        #[arg(long)]
        operator_key: PathBuf,
        /// The node's peer ID (`ipfs-kit-p2p id`)
        #[arg(long)]
        peer: String,
        /// master | worker | leecher: the highest role the node may take
        #[arg(long, value_parser = parse_fixed_role)]
        role: Role,
        /// Days it is valid from now
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Where to write it
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a certificate or revocation list (and check it against the
    /// operator's key when given)
    Show {
        file: PathBuf,
        /// operator.pub (or operator.key) to check the signature with
        #[arg(long)]
        operator_key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Sign a revocation list naming these serials (and those of the
    /// previous list), with a higher version
    Revoke {
        #[arg(long)]
        operator_key: PathBuf,
        /// Serials (hex, as `cert show` prints them)
        #[arg(required = true)]
        serials: Vec<String>,
        /// The list in force, to keep its serials and supersede it
        #[arg(long)]
        previous: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Give a revocation list to the running node; it spreads it through
    /// the cluster
    Publish { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum PinCommand {
    /// Pin a CID cluster-wide; returns once the change is committed
    Add {
        cid: String,
        /// Fewest copies to keep [default: pins.replication_min]
        #[arg(long)]
        replication_min: Option<u8>,
        /// Most copies to keep [default: pins.replication_max]
        #[arg(long)]
        replication_max: Option<u8>,
        #[arg(long)]
        name: Option<String>,
        /// Keep copies only on the masters and workers of this peer list
        /// (`index peers`)
        #[arg(long)]
        peers: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove a CID from the cluster pinset
    Rm { cid: String },
    /// The cluster pinset
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// One pin
    Status {
        cid: String,
        #[arg(long)]
        json: bool,
    },
}

/// `--wait`: return only once enough holders have the item pinned.
#[derive(Debug, Clone, Copy, Args)]
pub struct WaitArgs {
    /// Wait until replication_min holders have it pinned, showing progress;
    /// when the cluster has fewer live masters and workers than that, say
    /// so at once, wait for the copies it can hold, and exit 3
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (exit 1)
    #[arg(long, default_value_t = 600, requires = "wait")]
    pub timeout: u64,
}

#[derive(Debug, Clone, Args)]
pub struct AddArgs {
    /// The file to add
    pub path: PathBuf,
    /// Copies to keep (sets both min and max)
    #[arg(long, conflicts_with_all = ["replication_min", "replication_max"])]
    pub replication: Option<u8>,
    /// Fewest copies to keep [default: pins.replication_min]
    #[arg(long)]
    pub replication_min: Option<u8>,
    /// Most copies to keep [default: pins.replication_max]
    #[arg(long)]
    pub replication_max: Option<u8>,
    /// Name of the pin [default: the file name]
    #[arg(long)]
    pub name: Option<String>,
    /// Keep copies only on the masters and workers of this peer list
    #[arg(long)]
    pub peers: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Where the built-in IPFS engine keeps its data and listens. Its RPC API
/// address is the global `--api` (default 127.0.0.1:5011; port 0 picks one
/// and `<repo>/api` says which).
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Repo directory (blocks, pins, the `api` file)
    #[arg(long)]
    pub repo: PathBuf,
    /// Swarm listen multiaddr (repeatable)
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/4011", value_parser = parse_multiaddr)]
    pub swarm: Vec<Multiaddr>,
}

fn parse_multiaddr(s: &str) -> Result<Multiaddr, String> {
    s.parse::<Multiaddr>()
        .map_err(|e| format!("invalid multiaddr {s:?}: {e}"))
}

fn parse_role(s: &str) -> Result<crate::role::RoleSetting, String> {
    s.parse()
}

/// A certificate's role: never `auto`.
fn parse_fixed_role(s: &str) -> Result<Role, String> {
    s.parse()
}
