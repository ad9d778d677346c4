//! Everything that crosses the network between nodes: message types,
//! protocol names, versions and size limits, and the request-response codec.
//!
//! Every message is one version byte followed by a bincode body. Decoding
//! rejects oversized input, unknown versions, trailing bytes and malformed
//! bodies with a typed [`WireError`]; nothing a peer sends can panic the node.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{Multiaddr, PeerId, StreamProtocol, request_response};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::election::MAX_EPOCH;
use crate::pinset::model::{Entry, Vv};
use crate::pinset::sync::{Collected, Cursor};
use crate::role::Role;

/// Version byte leading every message.
pub const VERSION: u8 = 14;
/// Largest gossip message accepted (heartbeats are ~200 bytes).
pub const MAX_GOSSIP_BYTES: usize = 4 * 1024;
/// Largest request or response accepted over request-response.
pub const MAX_RPC_BYTES: usize = 1024 * 1024;
/// Most peers shared in one peer exchange, and addresses per peer.
pub const MAX_ADDRS_PER_PEER: usize = 8;
/// Most members a member list carries (the default `network.max_peers`):
/// a `Hello` answer's, or a member pull's.
pub const MAX_MEMBERS: usize = 1024;
/// Most addresses of one member a member list carries.
pub const MAX_MEMBER_ADDRS: usize = 4;

/// Names that keep two clusters on one network apart.
#[derive(Debug, Clone)]
pub struct Protocols {
    pub identify: String,
    pub kad: StreamProtocol,
    pub rpc: StreamProtocol,
    pub topic: String,
}

impl Protocols {
    /// `cluster` must already be validated (see `config`): it becomes part of protocol names.
    pub fn for_cluster(cluster: &str) -> Protocols {
        let owned = |s: String| StreamProtocol::try_from_owned(s).expect("validated cluster name");
        Protocols {
            identify: format!("/ipfs-kit-p2p/{cluster}/1.0.0"),
            kad: owned(format!("/ipfs-kit-p2p/{cluster}/kad/1.0.0")),
            rpc: owned(format!("/ipfs-kit-p2p/{cluster}/rpc/1")),
            topic: format!("ipfs-kit-p2p/{cluster}/membership/1"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message of {0} bytes is over the {1}-byte limit")]
    TooLarge(usize, usize),
    #[error("empty message")]
    Empty,
    #[error("unsupported message version {0} (this node speaks {VERSION})")]
    Version(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("invalid peer ID in message")]
    PeerId,
    #[error("epoch {0} is beyond the limit of {MAX_EPOCH}")]
    EpochTooHigh(u64),
    #[error("pinset message: {0}")]
    Pinset(String),
    #[error("IPFS info beyond the limits ({0})")]
    IpfsInfo(&'static str),
    #[error("more than {MAX_GPUS} GPUs, or a model name over {MAX_GPU_MODEL} bytes")]
    Gpus,
    #[error("heartbeat interval of {0} ms is beyond the limit of one day")]
    Interval(u64),
    #[error("member list of {0} entries is over the limit of {MAX_MEMBERS}")]
    Members(usize),
    #[error("claimed sender {claimed} is not the signer {signer}")]
    /// Peer IDs in base58.
    Forged { claimed: String, signer: String },
}

/// Health figures a node shares in its heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// CPU use of the whole machine, per mille.
    pub cpu_permille: u16,
    pub mem_used: u64,
    pub mem_total: u64,
    /// Free and total bytes on the disk holding the data dir.
    pub disk_free: u64,
    pub disk_total: u64,
}

/// Most IPFS swarm addresses a heartbeat carries, and their longest length.
pub const MAX_IPFS_ADDRS: usize = 8;
pub const MAX_IPFS_ADDR_LEN: usize = 256;

/// A node's IPFS as its peers see it: whether it answers, and where its
/// swarm is, so their daemons can `swarm/connect` to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpfsInfo {
    pub ready: bool,
    /// The daemon's own peer ID (not the node's).
    pub peer_id: String,
    /// Multiaddrs ending in `/p2p/<peer_id>`.
    pub addrs: Vec<String>,
}

impl IpfsInfo {
    pub fn check(&self) -> Result<(), WireError> {
        if self.peer_id.len() > 128 {
            return Err(WireError::IpfsInfo("peer ID longer than 128 bytes"));
        }
        if self.addrs.len() > MAX_IPFS_ADDRS
            || self.addrs.iter().any(|a| a.len() > MAX_IPFS_ADDR_LEN)
        {
            return Err(WireError::IpfsInfo(
                "more than 8 addresses or one over 256 bytes",
            ));
        }
        Ok(())
    }
}

/// A node's periodic announcement of itself. Peer IDs travel as bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub role: Role,
    pub incarnation: u64,
    pub seq: u64,
    pub max_epoch: u64,
    pub follows: Option<(Vec<u8>, u64)>,
    /// The last leader accepted, when it is not `follows` (`None`: same as `follows`).
    pub voted: Option<(Vec<u8>, u64)>,
    pub health: Health,
    /// `None`: this node runs no IPFS.
    pub ipfs: Option<IpfsInfo>,
    /// The digest of the pinset changes the sender has seen: peers pull
    /// from it when theirs differs.
    pub pinset: Option<u64>,
    /// The sender's GPUs (at most [`MAX_GPUS`]).
    pub gpus: Vec<Gpu>,
    /// The sender's next heartbeat is due within this many milliseconds
    /// (longer for quiet followers of a large cluster); at most a day.
    pub interval_ms: u64,
    /// The members the sender holds live, itself included: their number and
    /// the sum of their IDs' hashes (see [`crate::election::members`]).
    /// Followers pull the leader's member list when theirs differs.
    pub members: (u32, u64),
    /// The UDP port the sender answers probe datagrams on ([`Datagram`]),
    /// at the address its connections come from; 0: none.
    pub probe_port: u16,
    /// Where the sender's holder stands: its session and the version of
    /// its newest state change (see [`HolderRequest::States`]); `None`:
    /// it holds nothing (a leecher). The leader asks for the changes as
    /// soon as this moves past what it has read, so it need not poll an
    /// idle holder often.
    pub held: Option<(u64, u64)>,
}

/// A GPU a node has (NVIDIA, read through NVML at start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// The model's name, at most [`MAX_GPU_MODEL`] bytes.
    pub model: String,
    /// Its memory, bytes.
    pub memory: u64,
}

/// Most GPUs a heartbeat lists.
pub const MAX_GPUS: usize = 8;
/// Longest GPU model name a heartbeat carries.
pub const MAX_GPU_MODEL: usize = 64;

impl Heartbeat {
    /// Rejects epochs no real cluster reaches (see [`MAX_EPOCH`]) and GPU
    /// lists over their bounds.
    pub fn check(&self) -> Result<(), WireError> {
        if let Some(i) = &self.ipfs {
            i.check()?;
        }
        if self.gpus.len() > MAX_GPUS || self.gpus.iter().any(|g| g.model.len() > MAX_GPU_MODEL) {
            return Err(WireError::Gpus);
        }
        if self.interval_ms > crate::election::MAX_INTERVAL.as_millis() as u64 {
            return Err(WireError::Interval(self.interval_ms));
        }
        let epochs = [&self.follows, &self.voted]
            .into_iter()
            .flatten()
            .map(|(_, e)| *e);
        match epochs.chain([self.max_epoch]).max() {
            Some(e) if e > MAX_EPOCH => Err(WireError::EpochTooHigh(e)),
            _ => Ok(()),
        }
    }
}

/// What goes over the gossip topic.
// Heartbeats are by far the most frequent message and live only while one
// is encoded or handled: boxing them would add an allocation to each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gossip {
    Heartbeat(Heartbeat),
    /// Graceful departure of this incarnation.
    Leaving {
        incarnation: u64,
    },
}

/// A gossip message with the sender it claims; checked against the signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub sender: Vec<u8>,
    pub body: Gossip,
}

/// Direct requests between two nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Sent on connecting: here is my state (and certificate), send me yours.
    Hello(Hello),
    /// A leadership change, pushed directly as well as gossiped.
    Update(Heartbeat),
    /// Graceful departure, sent directly so it arrives before the node exits.
    Leaving { incarnation: u64 },
    /// The replicated pinset.
    Pinset(PinsetRequest),
    /// Replica orders and holders' states.
    Holder(HolderRequest),
    /// A newer revocation list, signed by the operator (see [`crate::trust`]).
    Revocations(Vec<u8>),
    /// Are you there? (the leader's probers; answered with `Pong`).
    Ping,
    /// Probe this peer for me (SWIM's indirect probe); answered with
    /// `Probed` once the peer answers, or unreachable when it has not
    /// within `within_ms` (capped by the asked node).
    ProbeFor { peer: Vec<u8>, within_ms: u32 },
    /// The members the sender holds live (at most [`MAX_MEMBERS`]), sent to
    /// the leader when its member digest differs: answered with the
    /// leader's, and each side dials those it lacks.
    Members(Vec<SharedPeer>),
}

/// The greeting that opens every connection, both ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub heartbeat: Heartbeat,
    /// The sender's certificate (secured mode), as signed.
    pub cert: Option<Vec<u8>>,
    /// The revocation list the sender holds, as signed.
    pub revocations: Option<Vec<u8>>,
}

impl Hello {
    pub fn check(&self) -> Result<(), WireError> {
        self.heartbeat.check()?;
        check_signed(&self.cert, &self.revocations)
    }
}

pub fn check_signed(cert: &Option<Vec<u8>>, list: &Option<Vec<u8>>) -> Result<(), WireError> {
    use crate::trust::cert::{MAX_CERT_BYTES, MAX_REVOCATIONS_BYTES};
    match (cert, list) {
        (Some(c), _) if c.len() > MAX_CERT_BYTES => {
            Err(WireError::TooLarge(c.len(), MAX_CERT_BYTES))
        }
        (_, Some(l)) if l.len() > MAX_REVOCATIONS_BYTES => {
            Err(WireError::TooLarge(l.len(), MAX_REVOCATIONS_BYTES))
        }
        _ => Ok(()),
    }
}

/// Most changes in one [`PinsetRequest::Push`] or [`PinsetResponse::Page`];
/// senders also keep a batch under [`MAX_PINSET_BATCH_BYTES`] (a change is at
/// most ~480 bytes encoded, so a full count of small ones fits, a full
/// count of the largest does not).
pub const MAX_PINSET_BATCH: usize = 8192;
/// Encoded size a sender keeps a batch of changes under (well below
/// [`MAX_RPC_BYTES`], leaving room for a version vector).
pub const MAX_PINSET_BATCH_BYTES: usize = 768 * 1024;

/// The replicated pinset between nodes (see [`crate::pinset::replica`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PinsetRequest {
    /// Changes the sender made: store them durably, then answer `Stored`.
    Push { entries: Vec<Entry> },
    /// Anti-entropy: the changes the sender has not seen. The first page of
    /// a session carries the sender's vector (the answering node freezes
    /// its state for the session); later pages resume at `from`.
    Pull {
        session: u64,
        vv: Option<Vv>,
        from: Cursor,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PinsetResponse {
    /// Every pushed change is durable here (or overtaken by a later one).
    Stored,
    /// A page of changes; `next: None` is the last, which carries the
    /// answering node's vector (so does the first of a session in CID
    /// order, `by_cid`).
    Page {
        entries: Vec<Entry>,
        next: Option<Cursor>,
        vv: Option<Vv>,
        by_cid: bool,
        /// With the vector: what the answering node has collected.
        collected: Option<Collected>,
    },
    Refused {
        reason: String,
    },
    /// The answering node collected removals the asker's vector does not
    /// name: ask again with an empty vector, for everything.
    Behind,
}

fn check_entries(entries: &[Entry]) -> Result<(), WireError> {
    if entries.len() > MAX_PINSET_BATCH {
        return Err(WireError::Pinset(format!(
            "{} changes in one batch",
            entries.len()
        )));
    }
    entries
        .iter()
        .try_for_each(|e| e.check().map_err(WireError::Pinset))
}

fn check_vv(vv: &Option<Vv>) -> Result<(), WireError> {
    vv.as_ref()
        .map_or(Ok(()), |v| v.check().map_err(WireError::Pinset))
}

impl PinsetRequest {
    /// Bounds and contents a peer cannot be trusted with.
    pub fn check(&self) -> Result<(), WireError> {
        match self {
            PinsetRequest::Push { entries } => check_entries(entries),
            PinsetRequest::Pull { vv, from, .. } => {
                if let Cursor::Cid(c) = from {
                    check_key(c)?;
                }
                check_vv(vv)
            }
        }
    }
}

impl PinsetResponse {
    /// Bounds and contents a peer cannot be trusted with.
    pub fn check(&self) -> Result<(), WireError> {
        match self {
            PinsetResponse::Page {
                entries,
                vv,
                next,
                collected,
                ..
            } => {
                check_entries(entries)?;
                if let Some(Cursor::Cid(c)) = next {
                    check_key(c)?;
                }
                check_vv(vv)?;
                match collected {
                    Some(c) => c.vv.check().map_err(WireError::Pinset),
                    None => Ok(()),
                }
            }
            PinsetResponse::Stored | PinsetResponse::Behind => Ok(()),
            PinsetResponse::Refused { reason } if reason.len() > MAX_REASON => {
                Err(WireError::Pinset("reason too long".into()))
            }
            PinsetResponse::Refused { .. } => Ok(()),
        }
    }
}

/// Longest refusal reason accepted.
pub const MAX_REASON: usize = 1024;

/// Most orders in one [`HolderRequest::Orders`], states in one
/// [`HolderResponse::States`], and provider daemons named with an order batch.
pub const MAX_ORDERS: usize = 512;
pub const MAX_STATES: usize = 1024;
pub const MAX_PROVIDERS: usize = 8;
/// Most items one status question names.
pub const MAX_STATUS_CIDS: usize = 256;
/// Highest order batch number accepted (a leader numbers its batches from 1
/// in each epoch; far beyond any real leadership).
pub const MAX_ORDER_SEQ: u64 = 1 << 48;
/// Longest error text a holder reports for a failed pin.
pub const MAX_PIN_ERROR: usize = 256;

/// The leader's orders to holders, and what holders have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HolderRequest {
    /// Leader → holder: pin or unpin these. `(epoch, seq)` grows with every
    /// batch a leader sends; a holder refuses an epoch below the highest it
    /// has seen, and ignores a batch it has already taken. `providers` are
    /// daemons that hold some of the items, to fetch them from.
    Orders {
        epoch: u64,
        seq: u64,
        orders: Vec<HolderOrder>,
        providers: Vec<IpfsInfo>,
    },
    /// Leader → holder: the items whose state changed after `cursor` in
    /// holder session `session` (`cursor` 0: all of them).
    States { session: u64, cursor: u64 },
    /// Any node → the leader: each holder's state for each of these items
    /// (at most [`MAX_STATUS_CIDS`]).
    Statuses { cids: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderOrder {
    pub cid: String,
    /// `false`: unpin.
    pub pin: bool,
}

/// An item on a holder, as its IPFS has it (`Pinned`, `Absent`) or as its
/// order stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeldState {
    Queued,
    Pinning,
    Pinned,
    Failed(String),
    Unpinning,
    Absent,
}

impl HeldState {
    pub fn name(&self) -> &'static str {
        match self {
            HeldState::Queued => "queued",
            HeldState::Pinning => "pinning",
            HeldState::Pinned => "pinned",
            HeldState::Failed(_) => "failed",
            HeldState::Unpinning => "unpinning",
            HeldState::Absent => "absent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HolderResponse {
    /// The orders are taken (queued or already done).
    Taken,
    /// Changes after the asked cursor, oldest first, up to `cursor`.
    /// `reset`: the asked cursor is from another session or too old, and
    /// these start from scratch; `more`: ask again from `cursor`.
    States {
        session: u64,
        cursor: u64,
        reset: bool,
        more: bool,
        items: Vec<(String, HeldState)>,
    },
    /// The leader's view of one item: per peer ID, its state there.
    /// The leader's view of each item asked, in the order asked: per peer
    /// ID, its state there.
    Statuses {
        items: Vec<Vec<(String, HeldState)>>,
    },
    Refused {
        reason: String,
    },
}

fn check_cid(cid: &str) -> Result<(), WireError> {
    crate::pinset::model::canonical_cid(cid)
        .map(drop)
        .map_err(WireError::Pinset)
}

/// A key of the replicated state: a CID or an index record's key.
fn check_key(key: &str) -> Result<(), WireError> {
    if crate::index::is_index_key(key) {
        return crate::index::check(key, None).map_err(WireError::Pinset);
    }
    check_cid(key)
}

fn check_states<'a>(
    states: impl ExactSizeIterator<Item = &'a (String, HeldState)>,
) -> Result<(), WireError> {
    if states.len() > MAX_STATES {
        return Err(WireError::Pinset(format!(
            "{} states in one answer",
            states.len()
        )));
    }
    for (key, state) in states {
        if key.len() > 128 {
            return Err(WireError::Pinset("key longer than 128 bytes".into()));
        }
        if let HeldState::Failed(e) = state
            && e.len() > MAX_PIN_ERROR
        {
            return Err(WireError::Pinset("error text too long".into()));
        }
    }
    Ok(())
}

impl HolderRequest {
    pub fn check(&self) -> Result<(), WireError> {
        match self {
            HolderRequest::Orders {
                epoch,
                seq,
                orders,
                providers,
            } => {
                if *epoch > MAX_EPOCH {
                    return Err(WireError::EpochTooHigh(*epoch));
                }
                if *seq > MAX_ORDER_SEQ {
                    return Err(WireError::Pinset(format!(
                        "order batch number {seq} out of range"
                    )));
                }
                if orders.len() > MAX_ORDERS || providers.len() > MAX_PROVIDERS {
                    return Err(WireError::Pinset(format!(
                        "{} orders and {} providers in one batch",
                        orders.len(),
                        providers.len()
                    )));
                }
                for p in providers {
                    p.check()?;
                }
                orders.iter().try_for_each(|o| check_cid(&o.cid))
            }
            HolderRequest::States { .. } => Ok(()),
            HolderRequest::Statuses { cids } => {
                if cids.len() > MAX_STATUS_CIDS {
                    return Err(WireError::Pinset(format!(
                        "{} items in one status question",
                        cids.len()
                    )));
                }
                cids.iter().try_for_each(|c| check_cid(c))
            }
        }
    }
}

impl HolderResponse {
    pub fn check(&self) -> Result<(), WireError> {
        match self {
            HolderResponse::States { items, .. } => {
                check_states(items.iter())?;
                items.iter().try_for_each(|(cid, _)| check_cid(cid))
            }
            HolderResponse::Statuses { items } => {
                if items.len() > MAX_STATUS_CIDS {
                    return Err(WireError::Pinset(format!(
                        "{} items in one answer",
                        items.len()
                    )));
                }
                items
                    .iter()
                    .try_for_each(|peers| check_states(peers.iter()))
            }
            HolderResponse::Taken | HolderResponse::Refused { .. } => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Hello {
        heartbeat: Box<Heartbeat>,
        peers: Vec<SharedPeer>,
        cert: Option<Vec<u8>>,
        revocations: Option<Vec<u8>>,
    },
    Ack,
    /// The sender is not (or no longer) taken as a member: why.
    Denied {
        reason: String,
    },
    Pinset(PinsetResponse),
    Holder(HolderResponse),
    Pong,
    Probed {
        reachable: bool,
    },
    /// The answer to [`Request::Members`].
    Members(Vec<SharedPeer>),
}

/// A peer and the addresses it can be dialled at, as shared in
/// [`Response::Hello`] and the member lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedPeer {
    pub peer: Vec<u8>,
    pub addrs: Vec<Vec<u8>>,
}

impl SharedPeer {
    pub fn new(peer: &PeerId, addrs: &[Multiaddr]) -> Self {
        SharedPeer {
            peer: peer.to_bytes(),
            addrs: addrs
                .iter()
                .take(MAX_ADDRS_PER_PEER)
                .map(|a| a.to_vec())
                .collect(),
        }
    }

    /// A member list's entry: fewer addresses (newest first).
    pub fn member(peer: &PeerId, addrs: &[Multiaddr]) -> Self {
        Self::new(peer, &addrs[..addrs.len().min(MAX_MEMBER_ADDRS)])
    }

    /// The peer and its well-formed addresses; `None` if the peer ID is invalid.
    pub fn parse(&self) -> Option<(PeerId, Vec<Multiaddr>)> {
        let peer = PeerId::from_bytes(&self.peer).ok()?;
        let addrs = self
            .addrs
            .iter()
            .take(MAX_ADDRS_PER_PEER)
            .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
            .collect();
        Some((peer, addrs))
    }
}

/// Checks a member list's bound ([`Request::Members`], [`Response::Members`]);
/// its entries are parsed (and the malformed skipped) where they are used.
pub fn check_members(list: &[SharedPeer]) -> Result<(), WireError> {
    if list.len() > MAX_MEMBERS {
        return Err(WireError::Members(list.len()));
    }
    Ok(())
}

/// Largest probe datagram sent or taken ([`Datagram`]; an `Ack` is about
/// 120 bytes).
pub const MAX_DATAGRAM_BYTES: usize = 512;

/// A probe by UDP datagram, sent beside the request-response
/// [`Request::Ping`] so that a probe does not wait behind a TCP connection
/// held up by retransmissions: the first answer by either way counts.
/// Taken only from a connected member, at the address its connection comes
/// from; answered with a signature the prober checks against the peer it
/// probed, so no one else can answer for a dead peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Datagram {
    /// Are you there? From `from` (a peer ID), under a random `token`.
    Probe { from: Vec<u8>, token: u64 },
    /// Yes: the prober's token, signed ([`probe_ack_message`]) by the key
    /// (protobuf-encoded) of the peer answering.
    Ack {
        token: u64,
        key: Vec<u8>,
        sig: Vec<u8>,
    },
}

/// What an [`Datagram::Ack`] signs: the cluster, the token and the prober,
/// so an answer cannot be replayed to another probe, another prober or
/// another cluster.
pub fn probe_ack_message(cluster: &str, token: u64, prober: &PeerId) -> Vec<u8> {
    let mut m = b"ipfs-kit-p2p probe ack 1\0".to_vec();
    m.extend_from_slice(cluster.as_bytes());
    m.push(0);
    m.extend_from_slice(&token.to_be_bytes());
    m.extend_from_slice(&prober.to_bytes());
    m
}

/// The answer to `token` from `prober`, signed with `key`.
pub fn probe_ack(
    key: &libp2p::identity::Keypair,
    cluster: &str,
    token: u64,
    prober: &PeerId,
) -> Option<Datagram> {
    let sig = key.sign(&probe_ack_message(cluster, token, prober)).ok()?;
    Some(Datagram::Ack {
        token,
        key: key.public().encode_protobuf(),
        sig,
    })
}

/// Whether an answer to `token` (sent by `prober`) is `probed`'s own: its
/// key is that peer's and the signature holds.
pub fn probe_ack_valid(
    cluster: &str,
    token: u64,
    prober: &PeerId,
    probed: &PeerId,
    key: &[u8],
    sig: &[u8],
) -> bool {
    let Ok(key) = libp2p::identity::PublicKey::try_decode_protobuf(key) else {
        return false;
    };
    key.to_peer_id() == *probed && key.verify(&probe_ack_message(cluster, token, prober), sig)
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_RPC_BYTES>()
}

/// Encodes a message: version byte, then the bincode body.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    // Encoding our own in-memory types into a Vec cannot fail.
    let body = bincode::serde::encode_to_vec(msg, bincode_config()).unwrap_or_default();
    out.extend_from_slice(&body);
    out
}

/// Decodes a message of at most `limit` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, WireError> {
    if bytes.len() > limit {
        return Err(WireError::TooLarge(bytes.len(), limit));
    }
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let (msg, read) = bincode::serde::decode_from_slice(body, bincode_config())
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if read != body.len() {
        return Err(WireError::Trailing(body.len() - read));
    }
    Ok(msg)
}

/// Decodes a gossip message and checks that the claimed sender signed it.
pub fn decode_gossip(bytes: &[u8], signer: &PeerId) -> Result<Gossip, WireError> {
    let env: Envelope = decode(bytes, MAX_GOSSIP_BYTES)?;
    let claimed = PeerId::from_bytes(&env.sender).map_err(|_| WireError::PeerId)?;
    if claimed != *signer {
        return Err(WireError::Forged {
            claimed: claimed.to_base58(),
            signer: signer.to_base58(),
        });
    }
    if let Gossip::Heartbeat(hb) = &env.body {
        hb.check()?;
    }
    Ok(env.body)
}

/// Length-prefixed bincode frames for request-response.
#[derive(Debug, Clone, Default)]
pub struct RpcCodec;

async fn read_frame<T: AsyncRead + Unpin + Send, M: DeserializeOwned>(io: &mut T) -> io::Result<M> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_RPC_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            WireError::TooLarge(len, MAX_RPC_BYTES),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    decode(&buf, MAX_RPC_BYTES).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_frame<T: AsyncWrite + Unpin + Send, M: Serialize>(
    io: &mut T,
    msg: &M,
) -> io::Result<()> {
    let buf = encode(msg);
    if buf.len() > MAX_RPC_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            WireError::TooLarge(buf.len(), MAX_RPC_BYTES),
        ));
    }
    io.write_all(&(buf.len() as u32).to_be_bytes()).await?;
    io.write_all(&buf).await?;
    io.close().await
}

impl request_response::Codec for RpcCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Request> {
        read_frame(io).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Response> {
        read_frame(io).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()> {
        write_frame(io, &req).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()> {
        write_frame(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;
    use proptest::prelude::*;

    fn heartbeat() -> Heartbeat {
        let leader = Keypair::generate_ed25519().public().to_peer_id().to_bytes();
        Heartbeat {
            role: Role::Master,
            incarnation: 3,
            seq: 99,
            max_epoch: 7,
            follows: Some((leader.clone(), 7)),
            voted: Some((leader, 7)),
            health: Health {
                cpu_permille: 120,
                mem_used: 1 << 30,
                mem_total: 8 << 30,
                disk_free: 1 << 40,
                disk_total: 2 << 40,
            },
            ipfs: Some(IpfsInfo {
                ready: true,
                peer_id: "12D3KooWJjGq6R2Fjrj7bL2h1gLcbbRvAp6bn9vzAWKc2ioTZ1BB".into(),
                addrs: vec![
                    "/ip4/192.168.1.20/tcp/4011/p2p/12D3KooWJjGq6R2Fjrj7bL2h1gLcbbRvAp6bn9vzAWKc2ioTZ1BB".into(),
                ],
            }),
            pinset: Some(u64::MAX),
            gpus: vec![Gpu {
                model: "NVIDIA A100-SXM4-80GB".into(),
                memory: 80 << 30,
            }],
            interval_ms: 5000,
            members: (100, u64::MAX),
            probe_port: 4011,
            held: Some((u64::MAX, u64::MAX)),
        }
    }

    /// An answer verifies only for the token, prober, cluster and peer it
    /// was made for, with that peer's own key and an intact signature.
    #[test]
    fn probe_acks_hold_only_for_what_they_answer() {
        let leader = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519();
        let prober = other.public().to_peer_id();
        let stranger = Keypair::generate_ed25519().public().to_peer_id();
        let me = leader.public().to_peer_id();
        let Some(Datagram::Ack { token, key, sig }) = probe_ack(&leader, "c", 7, &prober) else {
            panic!("an ack");
        };
        assert_eq!(token, 7);
        assert!(probe_ack_valid("c", 7, &prober, &me, &key, &sig));
        assert!(
            !probe_ack_valid("c", 8, &prober, &me, &key, &sig),
            "another token"
        );
        assert!(
            !probe_ack_valid("d", 7, &prober, &me, &key, &sig),
            "another cluster"
        );
        assert!(
            !probe_ack_valid("c", 7, &stranger, &me, &key, &sig),
            "another prober"
        );
        assert!(
            !probe_ack_valid("c", 7, &prober, &stranger, &key, &sig),
            "another peer probed"
        );
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert!(
            !probe_ack_valid("c", 7, &prober, &me, &key, &bad),
            "a bit flipped"
        );
        assert!(
            !probe_ack_valid("c", 7, &prober, &me, &[1, 2, 3], &sig),
            "no key"
        );
        // Someone else's valid signature, with their key, is not the leader's.
        let Some(Datagram::Ack {
            key: k2, sig: s2, ..
        }) = probe_ack(&other, "c", 7, &prober)
        else {
            panic!("an ack");
        };
        assert!(!probe_ack_valid("c", 7, &prober, &me, &k2, &s2));
        assert!(!probe_ack_valid("c", 7, &prober, &me, &key, &s2));
    }

    #[test]
    fn probe_datagrams_round_trip_within_their_limit() {
        let key = Keypair::generate_ed25519();
        let me = key.public().to_peer_id();
        let probe = Datagram::Probe {
            from: me.to_bytes(),
            token: u64::MAX,
        };
        let ack = probe_ack(&key, &"c".repeat(64), u64::MAX, &me).unwrap();
        for d in [probe, ack] {
            let bytes = encode(&d);
            assert!(bytes.len() < 200, "{} bytes", bytes.len());
            assert_eq!(decode::<Datagram>(&bytes, MAX_DATAGRAM_BYTES).unwrap(), d);
            let mut long = bytes.clone();
            long.push(0);
            assert!(decode::<Datagram>(&long, MAX_DATAGRAM_BYTES).is_err());
            assert!(decode::<Datagram>(&bytes[..bytes.len() - 1], MAX_DATAGRAM_BYTES).is_err());
        }
        assert!(matches!(
            decode::<Datagram>(&[VERSION; MAX_DATAGRAM_BYTES + 1], MAX_DATAGRAM_BYTES),
            Err(WireError::TooLarge(..))
        ));
    }

    #[test]
    fn ipfs_info_is_bounded() {
        let mut hb = heartbeat();
        assert!(hb.check().is_ok());
        let full = IpfsInfo {
            ready: true,
            peer_id: "p".repeat(128),
            addrs: vec!["a".repeat(MAX_IPFS_ADDR_LEN); MAX_IPFS_ADDRS],
        };
        hb.ipfs = Some(full.clone());
        hb.gpus = vec![
            Gpu {
                model: "g".repeat(MAX_GPU_MODEL),
                memory: u64::MAX,
            };
            MAX_GPUS
        ];
        assert!(hb.check().is_ok());
        // The largest heartbeat a checked peer can send still fits a gossip message.
        let env = Envelope {
            sender: vec![0; 38],
            body: Gossip::Heartbeat(hb.clone()),
        };
        assert!(encode(&env).len() < MAX_GOSSIP_BYTES);
        let mut gpus = hb.clone();
        gpus.gpus.push(gpus.gpus[0].clone());
        assert!(matches!(gpus.check(), Err(WireError::Gpus)));
        gpus.gpus.pop();
        gpus.gpus[0].model.push('x');
        assert!(matches!(gpus.check(), Err(WireError::Gpus)));
        let mut many = full.clone();
        many.addrs.push("x".into());
        hb.ipfs = Some(many);
        assert!(matches!(hb.check(), Err(WireError::IpfsInfo(_))));
        let mut long = full;
        long.addrs[0].push('x');
        hb.ipfs = Some(long);
        assert!(matches!(hb.check(), Err(WireError::IpfsInfo(_))));
    }

    #[test]
    fn gossip_round_trips_and_fits_well_under_the_limit() {
        let me = Keypair::generate_ed25519().public().to_peer_id();
        let env = Envelope {
            sender: me.to_bytes(),
            body: Gossip::Heartbeat(heartbeat()),
        };
        let bytes = encode(&env);
        assert!(bytes.len() < 500, "heartbeat is {} bytes", bytes.len());
        assert_eq!(decode_gossip(&bytes, &me).unwrap(), env.body);
    }

    #[test]
    fn forged_sender_is_rejected() {
        let me = Keypair::generate_ed25519().public().to_peer_id();
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let env = Envelope {
            sender: other.to_bytes(),
            body: Gossip::Leaving { incarnation: 1 },
        };
        assert!(matches!(
            decode_gossip(&encode(&env), &me),
            Err(WireError::Forged { .. })
        ));
    }

    #[test]
    fn absurd_epochs_are_rejected() {
        let me = Keypair::generate_ed25519().public().to_peer_id();
        let mut hb = heartbeat();
        hb.max_epoch = u64::MAX;
        let env = Envelope {
            sender: me.to_bytes(),
            body: Gossip::Heartbeat(hb),
        };
        assert!(matches!(
            decode_gossip(&encode(&env), &me),
            Err(WireError::EpochTooHigh(u64::MAX))
        ));
    }

    /// Exactly at the edge: the limit itself is a valid epoch anywhere in a
    /// heartbeat, one past it is refused (see the election's own test).
    #[test]
    fn the_epoch_limit_is_checked_exactly_at_the_boundary() {
        for epoch in [MAX_EPOCH, MAX_EPOCH + 1] {
            let at = |mut hb: Heartbeat, f: fn(&mut Heartbeat, u64)| {
                f(&mut hb, epoch);
                hb.check()
            };
            let sets: [fn(&mut Heartbeat, u64); 3] = [
                |h, e| h.max_epoch = e,
                |h, e| h.follows.as_mut().unwrap().1 = e,
                |h, e| h.voted.as_mut().unwrap().1 = e,
            ];
            for set in sets {
                let r = at(heartbeat(), set);
                if epoch == MAX_EPOCH {
                    assert!(r.is_ok(), "{r:?}");
                } else {
                    assert!(matches!(r, Err(WireError::EpochTooHigh(e)) if e == epoch));
                }
            }
        }
    }

    #[test]
    fn bad_input_gets_typed_errors() {
        let me = Keypair::generate_ed25519().public().to_peer_id();
        assert!(matches!(decode_gossip(&[], &me), Err(WireError::Empty)));
        assert!(matches!(
            decode_gossip(&[VERSION + 1, 1, 2], &me),
            Err(WireError::Version(v)) if v == VERSION + 1
        ));
        assert!(matches!(
            decode_gossip(&vec![1; MAX_GOSSIP_BYTES + 1], &me),
            Err(WireError::TooLarge(..))
        ));
        let mut bytes = encode(&Envelope {
            sender: me.to_bytes(),
            body: Gossip::Leaving { incarnation: 1 },
        });
        bytes.push(0);
        assert!(matches!(
            decode_gossip(&bytes, &me),
            Err(WireError::Trailing(1))
        ));
    }

    #[test]
    fn a_full_member_list_fits_a_frame_and_a_longer_one_is_refused() {
        let addrs: Vec<Multiaddr> = (0..MAX_ADDRS_PER_PEER)
            .map(|i| format!("/ip6/fd00::{i}/udp/65535/quic-v1").parse().unwrap())
            .collect();
        let member = SharedPeer::member(&PeerId::random(), &addrs);
        assert_eq!(member.addrs.len(), MAX_MEMBER_ADDRS);
        let mut list = vec![member; MAX_MEMBERS];
        assert!(check_members(&list).is_ok());
        let bytes = encode(&Response::Members(list.clone()));
        assert!(bytes.len() < MAX_RPC_BYTES / 4, "{} bytes", bytes.len());
        assert_eq!(
            decode::<Response>(&bytes, MAX_RPC_BYTES).unwrap(),
            Response::Members(list.clone())
        );
        list.push(list[0].clone());
        assert!(matches!(check_members(&list), Err(WireError::Members(n)) if n == MAX_MEMBERS + 1));
    }

    #[test]
    fn rpc_frames_round_trip_and_refuse_oversized_lengths() {
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            let hello = Request::Hello(Hello {
                heartbeat: heartbeat(),
                cert: Some(vec![7; 300]),
                revocations: None,
            });
            write_frame(&mut futures::io::Cursor::new(&mut buf), &hello)
                .await
                .unwrap();
            let back: Request = read_frame(&mut futures::io::Cursor::new(&buf))
                .await
                .unwrap();
            assert_eq!(back, hello);
            let huge = ((MAX_RPC_BYTES + 1) as u32).to_be_bytes();
            let err = read_frame::<_, Request>(&mut futures::io::Cursor::new(&huge[..]))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        });
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let me = Keypair::generate_ed25519().public().to_peer_id();
            let _ = decode_gossip(&bytes, &me);
            let _ = decode::<Request>(&bytes, MAX_RPC_BYTES);
            let mut framed = (bytes.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            let _ = futures::executor::block_on(read_frame::<_, Response>(&mut futures::io::Cursor::new(&framed)));
        }

        #[test]
        fn truncated_messages_are_errors(cut in 0usize..120) {
            let me = Keypair::generate_ed25519().public().to_peer_id();
            let bytes = encode(&Envelope { sender: me.to_bytes(), body: Gossip::Heartbeat(heartbeat()) });
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(decode_gossip(&bytes[..cut], &me).is_err());
        }
    }
}
