//! A running node: one task owns the swarm and the election core, turning
//! swarm events, timers and commands into election inputs and carrying out
//! the actions the core returns. Everything else talks to it through a
//! cloneable [`NodeHandle`].

mod behaviour;
mod datagram;
mod events;
mod handle;
mod ipfs;
mod links;
mod listen;
mod peers;
mod pinset;
mod probe;
mod status;
mod talk;
mod trust;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::gossipsub::IdentTopic;
use libp2p::request_response::OutboundRequestId;
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{NodeConfig, PinsConfig};
use crate::election::Election;
use crate::health::HealthSampler;
use crate::pinset::actor::PinsetHandle;
use crate::store::{DataDir, State, StoreError, write_atomic};
use crate::supervisor::{ServiceStatus, Supervisor};
use crate::wire::{self, Health, Protocols};
use behaviour::Behaviour;
pub use behaviour::BuildError;
use handle::Command;
pub use handle::NodeHandle;
use listen::listen;
use peers::is_loopback;
pub use peers::peer_of;

/// How long a graceful stop waits for peers to acknowledge the departure.
const LEAVE_DEADLINE: Duration = Duration::from_millis(1500);
/// The election ticks when its state could next change on its own
/// ([`Election::next_change`]: a silence, a suspicion or the startup grace
/// running out), at most every `ELECTION_TICK` and at least every
/// `ELECTION_IDLE_TICK` (which also paces the prober's choice of target and
/// the heartbeat schedule). An idle node wakes once a second for it.
const ELECTION_TICK: Duration = Duration::from_millis(200);
const ELECTION_IDLE_TICK: Duration = Duration::from_secs(1);
const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
/// Bound for the set of foreign peers.
const MAX_FOREIGN: usize = 4096;
/// The longest back-off between pulls of the leader's member list while the
/// views keep differing (a member one side cannot reach).
const MEMBER_SYNC_MAX: Duration = Duration::from_secs(60);
/// How long a stopping node waits for the pinset tasks to close their databases.
const PINSET_STOP: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: Multiaddr, message: String },
    #[error("cannot bind the probe datagram socket (network.probe_port = {port}): {message}")]
    ProbePort { port: u16, message: String },
    #[error("{0}")]
    Api(String),
    #[error("gossip topic: {0}")]
    Subscribe(String),
    #[error("IPFS: {0:#}")]
    Ipfs(anyhow::Error),
    #[error("{0}")]
    Pinset(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// What the node hands its control API once the tasks it serves run.
pub struct Frontend {
    /// Where to listen.
    pub addr: std::net::SocketAddr,
    pub node: NodeHandle,
    pub pins: PinsetHandle,
    pub defaults: PinsConfig,
    /// This node's role (index writes are taken on masters only).
    pub role: crate::role::Role,
    /// Cancelled when the node stops serving.
    pub stop: CancellationToken,
    /// The bearer token every request must carry (`None`: no token file).
    pub token: Option<String>,
    /// Where libp2p records its metrics; `GET /metrics` adds the node's.
    pub registry: prometheus_client::registry::Registry,
}

/// The control API being served; it ends once `Frontend::stop` is cancelled.
pub type Serve = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a node until `shutdown` is cancelled, then leaves the cluster
/// gracefully. `serve_api` binds the control API (the node does not know
/// it, the API knows the node's handles) and says where it listens.
pub async fn run<F, Fut>(
    mut cfg: NodeConfig,
    shutdown: CancellationToken,
    serve_api: F,
) -> Result<(), NodeError>
where
    F: FnOnce(Frontend) -> Fut,
    Fut: Future<Output = Result<(std::net::SocketAddr, Serve), String>>,
{
    crate::ipfs::preflight(&cfg.ipfs)?;
    let data = DataDir::open(&cfg.data_dir)?;
    let key = data.identity()?;
    let mut state = data.load_state()?;
    state.incarnation += 1;
    data.save_state(&state)?;
    let me = key.public().to_peer_id();
    if cfg.role_auto.is_some() {
        // `--role auto` never claims more than the certificate grants.
        if let Some(ceiling) = trust::certified_role(&cfg)? {
            let have = crate::role::this_machine(data.path());
            let (role, why) = crate::role::choose(&have, Some(ceiling)).map_err(|e| {
                crate::config::ConfigError::Invalid {
                    field: "role",
                    message: e,
                }
            })?;
            cfg.role = role;
            cfg.role_auto = Some(why);
        }
    }
    if let Some(why) = &cfg.role_auto {
        info!(role = %cfg.role, "{why}");
    }
    let (gate, swarm_key) = trust::load(&cfg, &me, data.path())?;
    let protocols = Protocols::for_cluster(&cfg.cluster);
    // libp2p's metrics and ours in one registry, which the API serves.
    let mut registry = prometheus_client::registry::Registry::default();
    let mut swarm = behaviour::build(
        key.clone(),
        &cfg,
        &protocols,
        swarm_key.as_ref(),
        &mut registry,
    )?;
    let p2p_metrics = libp2p::metrics::Metrics::new(&mut registry);
    let listen_on: Vec<Multiaddr> = match &swarm_key {
        None => cfg.listen.clone(),
        Some(k) => {
            let (tcp, quic): (Vec<Multiaddr>, Vec<Multiaddr>) = cfg
                .listen
                .iter()
                .cloned()
                .partition(|a| !listen::is_quic(a));
            info!(fingerprint = %k.fingerprint(), "private network: only peers with this swarm key can connect");
            if !quic.is_empty() {
                warn!(skipped = ?quic, "private network: QUIC is off (pnet cannot wrap QUIC); listening on TCP only");
            }
            if tcp.is_empty() {
                return Err(crate::config::ConfigError::Invalid {
                    field: "listen",
                    message: "a private network (trust.swarm_key) runs over TCP only: add a /tcp/ listen address".into(),
                }
                .into());
            }
            tcp
        }
    };
    let early = listen(&mut swarm, &listen_on).await?;
    let datagrams = if cfg.probe_resend.is_zero() || cfg.probe.interval.is_zero() {
        None
    } else {
        let d = datagram::Datagrams::bind(&listen_on, cfg.network.probe_port, cfg.probe_resend)
            .await
            .map_err(|e| NodeError::ProbePort {
                port: cfg.network.probe_port,
                message: e.to_string(),
            })?;
        info!(port = d.port(), "probe datagrams on UDP");
        Some(d)
    };
    let topic = IdentTopic::new(protocols.topic.clone());
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| NodeError::Subscribe(e.to_string()))?;

    let (tx, rx) = mpsc::channel(256);
    let handle = NodeHandle { tx };
    // The pinset task: started before the API that uses it, stopped after it.
    let pinset_stop = CancellationToken::new();
    let db = crate::pinset::db::PinDb::open(&data.path().join("pinset.redb"))
        .map_err(|e| NodeError::Pinset(e.to_string()))?;
    let held = crate::pinset::held::HeldStore::open(&data.path().join("held.redb"))
        .map_err(|e| NodeError::Pinset(e.to_string()))?;
    let held = std::sync::Arc::new(held);
    let (removed_tx, removed_rx) = mpsc::channel(64);
    let (view_tx, view_rx) = watch::channel(crate::view::ClusterView::default());
    let replica = crate::pinset::replica::Config {
        write_copies: usize::from(cfg.pins.write_copies),
        member_expiry: Duration::from_secs(cfg.pins.member_expiry_secs),
        pull_every: Duration::from_secs(cfg.pins.sync_every_secs),
        removal_horizon: Duration::from_secs(cfg.pins.removal_horizon_secs),
        ..crate::pinset::replica::Config::default()
    };
    let (pins, pinset_thread) = crate::pinset::actor::spawn(
        db.clone(),
        me.to_base58(),
        cfg.role,
        replica,
        crate::pinset::actor::Wiring {
            view: view_rx.clone(),
            transport: handle.clone(),
            held: held.clone(),
            removed: removed_tx,
            stop: pinset_stop.clone(),
        },
    )
    .map_err(NodeError::Pinset)?;
    let api_stop = CancellationToken::new();
    let token = crate::trust::files::read_token(&cfg.api_token_file).map_err(|e| {
        crate::config::ConfigError::Invalid {
            field: "api_token_file",
            message: e.to_string(),
        }
    })?;
    cfg.check_api_token(token.as_deref())?;
    let (api_addr, serve) = serve_api(Frontend {
        addr: cfg.api,
        node: handle.clone(),
        pins: pins.clone(),
        defaults: cfg.pins,
        role: cfg.role,
        stop: api_stop.clone(),
        token,
        registry,
    })
    .await
    .map_err(NodeError::Api)?;
    let api_task = tokio::spawn(serve);
    write_atomic(
        &data.api_file(),
        crate::store::api_file_text(api_addr).as_bytes(),
        0o644,
    )?;
    info!(peer_id = %me, role = %cfg.role, cluster = %cfg.cluster, incarnation = state.incarnation, api = %api_addr, "node started");
    // The swarm and the API listen: a `Type=notify` unit may go on.
    notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("{} {me}, API on {api_addr}", cfg.role)),
    ]);
    let trust_view = gate.view(crate::clock::unix_ms() / 1000);
    match (&trust_view.cluster_id, &trust_view.certificate) {
        (Some(id), Some(c)) => {
            info!(cluster_id = %id, serial = %c.serial, certified_role = %c.role, not_after = %c.not_after, "secured cluster: peers are members only on a certificate from the operator key")
        }
        _ => warn!("{}", trust_view.warning.clone().unwrap_or_default()),
    }
    if let Some(w) = trust_view.warning.as_ref().filter(|_| gate.is_secured()) {
        warn!("{w}");
    }

    let now = Instant::now();
    let election = Election::new(
        me.to_base58(),
        cfg.role,
        state.incarnation,
        state.max_epoch,
        cfg.timing,
        now,
    )
    .with_vote(state.voted.clone())
    .with_max_peers(cfg.network.max_peers);
    let mut sampler = HealthSampler::new(data.path());
    // Services and IPFS have their own token: they are stopped after the
    // departure, not with it.
    let services_root = CancellationToken::new();
    let ipfs = crate::ipfs::start(&cfg.ipfs, cfg.role, data.path(), &services_root)
        .await
        .map_err(NodeError::Ipfs)?;
    let (ipfs_peers, ipfs_peers_rx) = mpsc::channel(256);
    crate::ipfs::connect::spawn(ipfs.status.clone(), ipfs_peers_rx, services_root.clone());
    let p = cfg.pins;
    let (holder, holder_thread) = crate::pinset::holder::spawn(
        held,
        crate::pinset::holder::HolderSettings {
            role: cfg.role,
            concurrency: p.concurrency,
            pin_timeout: Duration::from_secs(p.pin_timeout_secs),
            reconcile: Duration::from_secs(p.reconcile_secs),
        },
        ipfs.status.clone(),
        view_rx.clone(),
        removed_rx,
        pinset_stop.clone(),
    )
    .map_err(|e| NodeError::Pinset(e.to_string()))?;
    let (keeper, keeper_thread) = crate::pinset::keeper::spawn(
        db,
        pins.watch_progress(),
        view_rx,
        handle.clone(),
        holder.clone(),
        crate::pinset::plan::Limits {
            grace: Duration::from_secs(p.grace_secs),
            retry_after: Duration::from_secs(p.retry_secs),
            min_free: p.min_free_mib * 1024 * 1024,
        },
        pinset_stop.clone(),
    )
    .map_err(|e| NodeError::Pinset(e.to_string()))?;
    let cfg_probe = cfg.probe;
    let mut node = Node {
        health: sampler.sample(),
        swarm,
        election,
        me,
        topic,
        protocols,
        state,
        data,
        addrs: HashMap::new(),
        lost_over_quic: HashSet::new(),
        prober: crate::election::probe::Prober::new(cfg_probe, Instant::now()),
        probe_pending: HashMap::new(),
        probe_counts: Default::default(),
        datagrams,
        probe_ports: HashMap::new(),
        key,
        confirming: HashSet::new(),
        gossip_only: HashMap::new(),
        listed: HashMap::new(),
        rechecking: HashSet::new(),
        links: links::Links::default(),
        bootstrap_peers: HashMap::new(),
        bootstrap_dialled: HashMap::new(),
        hello_sent: HashMap::new(),
        connected: HashMap::new(),
        // A difference must show in two of the leader's heartbeats in a
        // row (after the first pull); at most one pull a heartbeat.
        members_served: HashMap::new(),
        member_sync: crate::election::members::Sync::new(
            cfg.heartbeat_interval / 2,
            cfg.heartbeat_interval,
            MEMBER_SYNC_MAX,
        ),
        peer_health: HashMap::new(),
        gpus: crate::health::gpus(),
        peer_gpus: HashMap::new(),
        foreign: HashSet::new(),
        leaving: HashSet::new(),
        leader_since_ms: 0,
        healthy: HashSet::new(),
        healthy_changed_ms: crate::clock::unix_ms(),
        last_beat: now,
        next_beat: now,
        beat_pinset: None,
        beat_held: None,
        leader_changes: 0,
        p2p_metrics,
        started: now,
        loopback_only: cfg.listen.iter().all(is_loopback),
        services: Vec::new(),
        ipfs: ipfs.status.clone(),
        peer_ipfs: HashMap::new(),
        peer_pinset: HashMap::new(),
        peer_held: HashMap::new(),
        ipfs_peers,
        pins,
        view: view_tx,
        handle,
        rpc_pending: HashMap::new(),
        holder,
        keeper,
        gate,
        drop_soon: Vec::new(),
        swarm_key: swarm_key.map(|k| k.fingerprint()),
        warned: HashMap::new(),
        unadmitted_addrs: HashMap::new(),
        cfg,
    };
    for event in early {
        node.on_swarm_event(event);
    }
    let services: Vec<Supervisor> = node
        .cfg
        .services
        .iter()
        .map(|s| Supervisor::spawn(s.clone(), &services_root))
        .collect();
    node.services = services.iter().map(|s| s.status.clone()).collect();
    node.dial_bootstrap();
    node.run(rx, &mut sampler, shutdown).await;

    // Teardown order: the cluster was told we left; now the services, then the API.
    for service in services {
        service.stop().await;
    }
    ipfs.stop().await;
    api_stop.cancel();
    let _ = api_task.await;
    pinset_stop.cancel();
    // Their databases close as the threads end; a thread still busy after
    // this long is left (redb checks an unclosed file on the next start).
    let threads = [pinset_thread, holder_thread, keeper_thread];
    let joined = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    });
    if tokio::time::timeout(PINSET_STOP, joined).await.is_err() {
        warn!("the pinset tasks did not stop within {PINSET_STOP:?}");
    }
    let _ = std::fs::remove_file(node.data.api_file());
    info!("node stopped");
    Ok(())
}

/// Tells systemd how the node stands (`Type=notify`): READY once the swarm
/// and the API listen, STOPPING when it starts to leave. A no-op without
/// `$NOTIFY_SOCKET`.
fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        warn!(error = %e, "cannot notify systemd");
    }
}

struct Node {
    swarm: Swarm<Behaviour>,
    election: Election<String>,
    me: PeerId,
    topic: IdentTopic,
    protocols: Protocols,
    cfg: NodeConfig,
    data: DataDir,
    state: State,
    /// Known addresses per peer, most recent first, bounded per peer and in total.
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Peers whose last connection, now closed, was QUIC: confirming them
    /// alive may take QUIC (see [`Node::confirm`]).
    lost_over_quic: HashSet<PeerId>,
    /// Probing the leader, and the probes on the wire.
    prober: crate::election::probe::Prober<String>,
    probe_pending: HashMap<OutboundRequestId, probe::Pending>,
    probe_counts: probe::ProbeCounts,
    /// Probes by UDP datagram beside them (`None`: off), and the port each
    /// peer's heartbeats announce for them (0: none).
    datagrams: Option<datagram::Datagrams>,
    probe_ports: HashMap<PeerId, u16>,
    /// This node's identity key (it signs answers to probe datagrams).
    key: libp2p::identity::Keypair,
    /// Peers a confirming dial (TCP only) is under way to.
    confirming: HashSet<PeerId>,
    /// Peers heard of only through gossip so far: the first heartbeat's
    /// incarnation, sequence number and arrival.
    gossip_only: HashMap<PeerId, (u64, u64, Instant)>,
    /// Peers a member list named that this node has not met yet, and when
    /// a list first named them: dialled again at every sweep until they
    /// greet, for [`LISTED_KEEP`](peers::LISTED_KEEP) at most (a dial or a
    /// young connection that failed would otherwise wait for the next
    /// list, or for the peer to find this node).
    listed: HashMap<PeerId, Instant>,
    /// Peers a TCP dial checks after one of their TCP connections closed.
    rechecking: HashSet<PeerId>,
    /// Open connections per peer, for closing second ones ([`links`]).
    links: links::Links,
    /// Bootstrap addresses without a peer ID: the peer that answered at
    /// each, and when each was last dialled (such an address is dialled
    /// again only when that peer is not connected and no dial of it is
    /// young; each sweep dialled it anew, a connection a second).
    bootstrap_peers: HashMap<Multiaddr, PeerId>,
    bootstrap_dialled: HashMap<Multiaddr, (Instant, libp2p::swarm::ConnectionId)>,
    /// When this node last sent each connected peer its `Hello`.
    hello_sent: HashMap<PeerId, Instant>,
    /// Connected peers, with their text form (the election's key): the
    /// once-a-second sweeps compare against it instead of encoding or
    /// parsing every peer's ID in base58 every time.
    connected: HashMap<PeerId, String>,
    /// When to pull the leader's member list (its digest differs from ours).
    member_sync: crate::election::members::Sync,
    /// When this node (as leader) last answered each peer's member pull.
    members_served: HashMap<PeerId, Instant>,
    peer_health: HashMap<String, Health>,
    /// This node's GPUs (read once at start), and its peers'.
    gpus: Vec<wire::Gpu>,
    peer_gpus: HashMap<String, Vec<wire::Gpu>>,
    /// Peers of other clusters or other software: never dialled again.
    foreign: HashSet<PeerId>,
    /// Departure notices awaiting an acknowledgement.
    leaving: HashSet<OutboundRequestId>,
    leader_since_ms: u64,
    /// The peers this node holds healthy (live, not suspected), and when
    /// that set last changed (Unix ms): the status's
    /// `peer_counts.healthy_changed_unix_ms`.
    healthy: HashSet<String>,
    healthy_changed_ms: u64,
    /// When this node last gossiped its heartbeat, when the next is due
    /// (see [`crate::election::Election::beat_interval`]), and the pinset
    /// digest and holder position it carried.
    last_beat: Instant,
    next_beat: Instant,
    beat_pinset: Option<u64>,
    beat_held: Option<(u64, u64)>,
    /// Leader changes seen (`/metrics`).
    leader_changes: u64,
    /// libp2p's own metrics (swarm, identify, Kademlia, ping, gossipsub).
    p2p_metrics: libp2p::metrics::Metrics,
    health: Health,
    started: Instant,
    /// Every listen address is loopback (tests, single-host clusters).
    loopback_only: bool,
    /// The supervised `[[service]]` processes.
    services: Vec<watch::Receiver<ServiceStatus>>,
    /// This node's IPFS, and what peers say of theirs.
    ipfs: watch::Receiver<crate::ipfs::IpfsStatus>,
    peer_ipfs: HashMap<String, wire::IpfsInfo>,
    /// The digest of each peer's pinset replica, from its heartbeats.
    peer_pinset: HashMap<String, u64>,
    /// Where each peer's holder stands, from its heartbeats.
    peer_held: HashMap<String, (u64, u64)>,
    /// Peers' IPFS addresses, to the task that connects our daemon to theirs.
    ipfs_peers: mpsc::Sender<wire::IpfsInfo>,
    /// The pinset task, what it knows of the cluster, and its requests in flight.
    pins: crate::pinset::actor::PinsetHandle,
    view: watch::Sender<crate::view::ClusterView>,
    /// This loop's own handle (answers from the pinset task come back through it).
    handle: NodeHandle,
    /// Tasks' requests to peers in flight.
    rpc_pending: HashMap<OutboundRequestId, oneshot::Sender<Result<wire::Response, String>>>,
    /// This node's holder, and the keeper (which acts while it leads).
    holder: crate::pinset::holder::HolderHandle,
    keeper: crate::pinset::keeper::KeeperHandle,
    /// Who is a member and what each may send (see [`crate::trust`]).
    gate: crate::trust::Gate,
    /// Peers refused in `Hello`: disconnected at the next sweep, once the
    /// answer saying why has gone out.
    drop_soon: Vec<PeerId>,
    /// The private network's key fingerprint, if there is one.
    swarm_key: Option<String>,
    /// When a refusal (by or of a peer or an address) was last logged.
    warned: HashMap<String, Instant>,
    /// Listen addresses of connected peers not yet admitted (secured mode).
    unadmitted_addrs: HashMap<PeerId, Vec<Multiaddr>>,
}

impl Node {
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Command>,
        sampler: &mut HealthSampler,
        shutdown: CancellationToken,
    ) {
        let mut last_tick = Instant::now();
        let mut redial =
            tokio::time::interval(Duration::from_millis(self.cfg.network.redial_interval_ms));
        let mut health = tokio::time::interval(HEALTH_INTERVAL);
        for t in [&mut redial, &mut health] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            let probe_wake = self.probe_wake();
            let idle_tick = last_tick + ELECTION_IDLE_TICK;
            let tick_at = self
                .election
                .next_change(Instant::now())
                .map_or(idle_tick, |at| at.min(idle_tick))
                .max(last_tick + ELECTION_TICK);
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(read) = datagram::next(&mut self.datagrams) => self.on_datagram_read(read),
                Some(cmd) = rx.recv() => match cmd {
                    Command::Status { peers, reply } => { let _ = reply.send(self.status(peers)); }
                    Command::PinPeers { cids, reply } => self.pin_peers(cids, reply),
                    Command::Send { peer, req, reply } => {
                        let id = self.swarm.behaviour_mut().rpc.send_request(&peer, *req);
                        self.rpc_pending.insert(id, reply);
                    }
                    Command::Respond { channel, resp } => {
                        let _ = self.swarm.behaviour_mut().rpc.send_response(channel, resp);
                    }
                    Command::Revocations { list, reply } => {
                        let _ = reply.send(self.take_revocations(&list, None));
                    }
                },
                _ = tokio::time::sleep_until(self.next_beat.into()) => self.beat(),
                _ = tokio::time::sleep_until(tick_at.into()) => {
                    let now = Instant::now();
                    last_tick = now;
                    let actions = self.election.tick(now);
                    self.execute(actions);
                    self.watch_leader(now);
                    self.reschedule_beat(now);
                    self.publish_view();
                }
                // When a probe is due or overdue, and only then: an idle node
                // does not wake up for the prober at all.
                _ = tokio::time::sleep_until(probe_wake.unwrap_or(self.next_beat).into()),
                    if probe_wake.is_some() => self.probe_tick(),
                _ = redial.tick() => {
                    self.sweep_trust();
                    self.redial();
                }
                _ = health.tick() => {
                    self.health = sampler.sample();
                    crate::health::trim_heap();
                    self.publish_view(); // this node's free disk
                }
                // Peers learn at once when our IPFS comes up, goes down or
                // moves, and so does the pinset task.
                Ok(()) = self.ipfs.changed() => {
                    self.beat();
                    self.publish_view();
                }
                _ = shutdown.cancelled() => break,
            }
        }
        notify_systemd(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("leaving the cluster"),
        ]);
        self.leave().await;
    }
}
