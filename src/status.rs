//! What a node reports of itself: the status and its peers, as `status`
//! prints them and `GET /v1/status` and `GET /v1/peers` answer. A leaf: the
//! node builds these, the API serves them, neither imports the other for it.

use serde::{Deserialize, Serialize};

use crate::role::Role;
use crate::supervisor::ServiceStatus;
use crate::wire::Health;

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub peer_id: String,
    pub role: Role,
    pub cluster: String,
    pub version: String,
    pub incarnation: u64,
    /// Highest epoch this node has seen.
    pub epoch: u64,
    pub leader: Option<LeaderView>,
    pub listen_addrs: Vec<String>,
    pub uptime_ms: u64,
    /// Peers met that belong to another cluster (or are not cluster nodes);
    /// they were disconnected and are not dialled again.
    pub foreign_peers: usize,
    pub peers: Vec<PeerView>,
    /// Supervised `[[service]]` processes.
    pub services: Vec<ServiceStatus>,
    /// This node's IPFS: mode (and why), state, RPC address, pid, restarts, last error.
    pub ipfs: crate::ipfs::IpfsStatus,
    /// Where this node's pinset replica stands.
    #[serde(default)]
    pub pinset: crate::pinset::actor::Progress,
    /// How much each index holds here (see [`crate::index`]).
    #[serde(default)]
    pub indexes: crate::index::Sizes,
    /// Open or secured, this node's certificate, and what was dropped.
    #[serde(default)]
    pub trust: crate::trust::TrustView,
    /// Control API requests refused for a missing or wrong token.
    #[serde(default)]
    pub api_unauthorized: u64,
    /// Items this node's IPFS holds for the cluster, by state.
    #[serde(default)]
    pub held: crate::pinset::holder::core::HeldCounts,
    /// Orders this node sent to holders while it led.
    #[serde(default)]
    pub orders: crate::pinset::keeper::OrderCounts,
    /// Times the leader this node follows changed since it started.
    #[serde(default)]
    pub leader_changes: u64,
    /// This node leads but reaches no other master or worker it knows: it
    /// gives no orders and acknowledges no write alone until one is back.
    #[serde(default)]
    pub isolated: bool,
    /// `--role auto`: which role it chose and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_auto: Option<String>,
    /// This node's GPUs (NVIDIA, through NVML; none elsewhere).
    #[serde(default)]
    pub gpus: Vec<crate::wire::Gpu>,
    /// How many peers this node knows, is connected to, and holds healthy:
    /// always filled, also when `peers` is left out
    /// (`GET /v1/status?peers=false`).
    #[serde(default)]
    pub peer_counts: PeerCounts,
    /// Probes by UDP datagram, since the node started.
    #[serde(default)]
    pub probe_datagrams: DatagramCounts,
}

/// Probes by UDP datagram (`[election] probe_datagram_resend_ms`), and
/// the probes over the connections beside them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatagramCounts {
    /// The UDP port this node answers them on; 0: off.
    pub port: u16,
    /// Probe datagrams and answers to them this node sent (each resend
    /// counted).
    pub sent: u64,
    /// Their bytes (UDP payload), probes and answers.
    pub sent_bytes: u64,
    /// Answers to them, signed by the peer probed.
    pub acked: u64,
    /// Members' probes this node answered.
    pub answered: u64,
    /// Datagrams dropped: oversized or malformed, a probe not from a
    /// connected member at its address and announced port (or over the
    /// rates), an answer to no probe of this node (remembered for 10 s past
    /// its deadline) or not signed by the peer probed. A duplicate answer
    /// to a probe already answered is not counted.
    pub dropped: u64,
    /// This node's probes refused by the peer's host (ICMP port
    /// unreachable: nothing listens at its probe port, so its process is
    /// gone), taken as failed at once. Counted for peers with no TCP
    /// connection only, where no closed connection tells of a crash.
    #[serde(default)]
    pub refused: u64,
    /// This node's probes sent by datagram first (`[election]
    /// probe_connection_after_ms`) that went over the connection too,
    /// unanswered by then.
    #[serde(default)]
    pub pinged_after: u64,
    /// Members' probes this node answered over the connection (`Ping`),
    /// with or without datagrams.
    #[serde(default)]
    pub pings_answered: u64,
    /// Rounds in which this node asked other members to probe its target:
    /// its own probes went unanswered often enough (a suspicion), or, as
    /// the leader's successor, a prober asked it to probe the leader.
    #[serde(default)]
    pub asked_others: u64,
}

/// The peer list in numbers (see [`StatusView::peer_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCounts {
    /// Peers in this node's view, whatever their state.
    pub known: usize,
    /// Live and not suspected: [`PeerView::healthy`].
    pub healthy: usize,
    /// Known peers with an open connection to this node.
    pub connected: usize,
    /// Open connections to peers, any peer: above `connected` while two
    /// nodes hold a second connection between them (closed a few seconds
    /// after it opens), or while a peer not yet known is connected.
    #[serde(default)]
    pub connections: usize,
    /// When the set of healthy peers last changed, a peer coming or going
    /// (Unix time, ms; the node's start if it never did).
    #[serde(default)]
    pub healthy_changed_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderView {
    pub peer_id: String,
    pub role: Role,
    pub epoch: u64,
    /// When this node accepted this leader and epoch (Unix time, ms).
    pub since_unix_ms: u64,
}

/// One entry of `GET /v1/peers` (and of `peers` in the status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    pub peer_id: String,
    pub role: Role,
    /// Live (heartbeats arriving) and not suspected.
    pub healthy: bool,
    /// alive | suspect | dead | left | silent
    pub state: String,
    pub connected: bool,
    /// Time since its last heartbeat.
    pub last_seen_ms: u64,
    pub incarnation: u64,
    pub follows: Option<String>,
    pub addrs: Vec<String>,
    pub health: Health,
    /// Its GPUs, as its heartbeats say.
    #[serde(default)]
    pub gpus: Vec<crate::wire::Gpu>,
    /// What the peer says of its IPFS (`None`: it runs none).
    pub ipfs: Option<crate::wire::IpfsInfo>,
    /// The digest of the pinset changes it has seen (equal to this node's:
    /// in sync).
    #[serde(default)]
    pub pinset: Option<u64>,
}
