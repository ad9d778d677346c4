//! A running node: one task owns the swarm and the election core, turning
//! swarm events, timers and commands into election inputs and carrying out
//! the actions the core returns. Everything else talks to it through a
//! cloneable [`NodeHandle`].

mod behaviour;
mod events;
mod ipfs;
mod peers;
mod pinset;
mod status;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::clock::unix_ms;

use futures::StreamExt;
use libp2p::gossipsub::IdentTopic;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{NodeConfig, PinsConfig};
use crate::election::{Action, Election, Input};
use crate::health::HealthSampler;
use crate::pinset::actor::PinsetHandle;
use crate::status::StatusView;
use crate::store::{DataDir, State, StoreError, write_atomic};
use crate::supervisor::{ServiceStatus, Supervisor};
use crate::wire::{self, Envelope, Gossip, Health, Heartbeat, Protocols, Request};
use behaviour::Behaviour;
pub use behaviour::BuildError;
use peers::is_loopback;
pub use peers::peer_of;

/// How long a graceful stop waits for peers to acknowledge the departure.
const LEAVE_DEADLINE: Duration = Duration::from_millis(1500);
const ELECTION_TICK: Duration = Duration::from_millis(200);
const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
/// Bound for the set of foreign peers.
const MAX_FOREIGN: usize = 4096;
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
    #[error("{0}")]
    Api(String),
    #[error("gossip topic: {0}")]
    Subscribe(String),
    #[error("IPFS: {0:#}")]
    Ipfs(anyhow::Error),
    #[error("{0}")]
    Pinset(String),
}

enum Command {
    Status(oneshot::Sender<StatusView>),
    /// Each holder's state for one item, from the leader.
    PinPeers {
        cid: String,
        reply: oneshot::Sender<Result<Vec<(String, wire::HeldState)>, String>>,
    },
    /// A request to a peer on behalf of a task (pinset, keeper).
    Send {
        peer: PeerId,
        req: Box<Request>,
        reply: oneshot::Sender<Result<wire::Response, String>>,
    },
    /// A task's answer to a peer's request.
    Respond {
        channel: libp2p::request_response::ResponseChannel<wire::Response>,
        resp: wire::Response,
    },
}

/// A cloneable handle to the node's event loop.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
}

impl NodeHandle {
    /// The node's current status; `None` if the loop does not answer within 2 s.
    pub async fn status(&self) -> Option<StatusView> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send_timeout(Command::Status(tx), Duration::from_secs(2))
            .await
            .ok()?;
        tokio::time::timeout(Duration::from_secs(2), rx)
            .await
            .ok()?
            .ok()
    }
}

impl NodeHandle {
    /// Each holder's state for `cid`, as the leader knows it.
    pub async fn pin_peers(&self, cid: &str) -> Result<Vec<(String, wire::HeldState)>, String> {
        let (reply, rx) = oneshot::channel();
        let cid = cid.to_owned();
        self.tx
            .send_timeout(Command::PinPeers { cid, reply }, Duration::from_secs(2))
            .await
            .map_err(|_| "node loop busy or stopped".to_string())?;
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .map_err(|_| "the keeper did not answer in 10 s".to_string())?
            .map_err(|_| "node loop stopped".to_string())?
    }

    /// Sends `req` to `peer` over request-response and waits for the answer.
    async fn rpc(&self, peer: &str, req: Request) -> Result<wire::Response, String> {
        let peer: PeerId = peer.parse().map_err(|e| format!("peer {peer}: {e}"))?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send_timeout(
                Command::Send {
                    peer,
                    req: Box::new(req),
                    reply,
                },
                Duration::from_secs(2),
            )
            .await
            .map_err(|_| "node loop busy or stopped".to_string())?;
        // The request-response timeout (5 s) answers first; this is a backstop.
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .map_err(|_| "no answer".to_string())?
            .map_err(|_| "node loop stopped".to_string())?
    }
}

impl crate::pinset::actor::Transport for NodeHandle {
    async fn request(
        &self,
        peer: &str,
        req: wire::PinsetRequest,
    ) -> Result<wire::PinsetResponse, String> {
        match self.rpc(peer, Request::Pinset(req)).await? {
            wire::Response::Pinset(r) => r.check().map(|()| r).map_err(|e| e.to_string()),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}

impl crate::pinset::keeper::HolderTransport for NodeHandle {
    async fn holder_request(
        &self,
        peer: &str,
        req: wire::HolderRequest,
    ) -> Result<wire::HolderResponse, String> {
        match self.rpc(peer, Request::Holder(req)).await? {
            wire::Response::Holder(r) => r.check().map(|()| r).map_err(|e| e.to_string()),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}

/// What the node hands its control API once the tasks it serves run.
pub struct Frontend {
    /// Where to listen.
    pub addr: std::net::SocketAddr,
    pub node: NodeHandle,
    pub pins: PinsetHandle,
    pub defaults: PinsConfig,
    /// Cancelled when the node stops serving.
    pub stop: CancellationToken,
}

/// The control API being served; it ends once `Frontend::stop` is cancelled.
pub type Serve = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a node until `shutdown` is cancelled, then leaves the cluster
/// gracefully. `serve_api` binds the control API (the node does not know
/// it, the API knows the node's handles) and says where it listens.
pub async fn run<F, Fut>(
    cfg: NodeConfig,
    shutdown: CancellationToken,
    serve_api: F,
) -> Result<(), NodeError>
where
    F: FnOnce(Frontend) -> Fut,
    Fut: Future<Output = Result<(std::net::SocketAddr, Serve), String>>,
{
    let data = DataDir::open(&cfg.data_dir)?;
    let key = data.identity()?;
    let mut state = data.load_state()?;
    state.incarnation += 1;
    data.save_state(&state)?;
    let me = key.public().to_peer_id();
    let protocols = Protocols::for_cluster(&cfg.cluster);
    let mut swarm = behaviour::build(key, &cfg, &protocols)?;
    let early = listen(&mut swarm, &cfg.listen).await?;
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
    let (view_tx, view_rx) = watch::channel(crate::view::ClusterView::default());
    let replica = crate::pinset::replica::Config {
        write_copies: usize::from(cfg.pins.write_copies),
        member_expiry: Duration::from_secs(cfg.pins.member_expiry_secs),
        ..crate::pinset::replica::Config::default()
    };
    let (pins, pinset_thread) = crate::pinset::actor::spawn(
        db.clone(),
        me.to_base58(),
        cfg.role,
        replica,
        view_rx.clone(),
        handle.clone(),
        pinset_stop.clone(),
    )
    .map_err(NodeError::Pinset)?;
    let api_stop = CancellationToken::new();
    let (api_addr, serve) = serve_api(Frontend {
        addr: cfg.api,
        node: handle.clone(),
        pins: pins.clone(),
        defaults: cfg.pins,
        stop: api_stop.clone(),
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

    let now = Instant::now();
    let election = Election::new(
        me.to_base58(),
        cfg.role,
        state.incarnation,
        state.max_epoch,
        cfg.timing,
        now,
    )
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
        peer_health: HashMap::new(),
        foreign: HashSet::new(),
        leaving: HashSet::new(),
        leader_since_ms: 0,
        started: now,
        loopback_only: cfg.listen.iter().all(is_loopback),
        services: Vec::new(),
        ipfs: ipfs.status.clone(),
        peer_ipfs: HashMap::new(),
        peer_pinset: HashMap::new(),
        ipfs_peers,
        pins,
        view: view_tx,
        handle,
        rpc_pending: HashMap::new(),
        holder,
        keeper,
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

/// Starts every listener and waits (at most 5 s) until each is up, so a busy
/// port or an unusable address stops the node with an error naming it.
/// Returns the other events seen meanwhile, to be handled once the node runs.
async fn listen(
    swarm: &mut Swarm<Behaviour>,
    addrs: &[Multiaddr],
) -> Result<Vec<SwarmEvent<behaviour::BehaviourEvent>>, NodeError> {
    let fail = |addr: &Multiaddr, message: String| NodeError::Listen {
        addr: addr.clone(),
        message,
    };
    let mut pending = HashMap::new();
    for addr in addrs {
        probe_tcp_port(addr).map_err(|e| fail(addr, e.to_string()))?;
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| fail(addr, e.to_string()))?;
        pending.insert(id, addr.clone());
    }
    let mut early = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(deadline);
    while !pending.is_empty() {
        let event = tokio::select! {
            event = swarm.select_next_some() => event,
            _ = &mut deadline => break,
        };
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                ref address,
            } => {
                info!(address = %format!("{address}/p2p/{}", swarm.local_peer_id()), "listening");
                pending.remove(&listener_id);
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some(addr) = pending.get(&listener_id) {
                    return Err(fail(addr, error.to_string()));
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(addr) = pending.get(&listener_id) {
                    let why = reason.err().map_or("closed".to_string(), |e| e.to_string());
                    return Err(fail(addr, why));
                }
            }
            other => early.push(other),
        }
    }
    Ok(early)
}

/// libp2p's TCP listeners set SO_REUSEPORT, so a second process can bind a
/// port another node already listens on and silently share its connections.
/// Binding it once without that option first turns that into an error.
fn probe_tcp_port(addr: &Multiaddr) -> std::io::Result<()> {
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    match parts.next() {
        Some(Protocol::Tcp(port)) if port != 0 => std::net::TcpListener::bind((ip, port)).map(drop),
        _ => Ok(()),
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
    peer_health: HashMap<String, Health>,
    /// Peers of other clusters or other software: never dialled again.
    foreign: HashSet<PeerId>,
    /// Departure notices awaiting an acknowledgement.
    leaving: HashSet<OutboundRequestId>,
    leader_since_ms: u64,
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
}

impl Node {
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Command>,
        sampler: &mut HealthSampler,
        shutdown: CancellationToken,
    ) {
        let mut heartbeat = tokio::time::interval(self.cfg.heartbeat_interval);
        let mut tick = tokio::time::interval(ELECTION_TICK);
        let mut redial =
            tokio::time::interval(Duration::from_millis(self.cfg.network.redial_interval_ms));
        let mut health = tokio::time::interval(HEALTH_INTERVAL);
        for t in [&mut heartbeat, &mut tick, &mut redial, &mut health] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(cmd) = rx.recv() => match cmd {
                    Command::Status(reply) => { let _ = reply.send(self.status()); }
                    Command::PinPeers { cid, reply } => self.pin_peers(cid, reply),
                    Command::Send { peer, req, reply } => {
                        let id = self.swarm.behaviour_mut().rpc.send_request(&peer, *req);
                        self.rpc_pending.insert(id, reply);
                    }
                    Command::Respond { channel, resp } => {
                        let _ = self.swarm.behaviour_mut().rpc.send_response(channel, resp);
                    }
                },
                _ = heartbeat.tick() => self.beat(),
                _ = tick.tick() => {
                    let actions = self.election.tick(Instant::now());
                    self.execute(actions);
                    self.publish_view();
                }
                _ = redial.tick() => self.redial(),
                _ = health.tick() => self.health = sampler.sample(),
                // Peers learn at once when our IPFS comes up, goes down or moves.
                Ok(()) = self.ipfs.changed() => self.beat(),
                _ = shutdown.cancelled() => break,
            }
        }
        self.leave().await;
    }

    /// Announces the departure over gossip and directly to every connected
    /// peer, and waits (bounded) for their acknowledgements so the successor
    /// takes over at once.
    async fn leave(&mut self) {
        let incarnation = self.state.incarnation;
        info!(leader = self.election.is_leader(), "leaving the cluster");
        self.publish(Gossip::Leaving { incarnation });
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let id = self
                .swarm
                .behaviour_mut()
                .rpc
                .send_request(&peer, Request::Leaving { incarnation });
            self.leaving.insert(id);
        }
        let deadline = tokio::time::sleep(LEAVE_DEADLINE);
        tokio::pin!(deadline);
        while !self.leaving.is_empty() {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = &mut deadline => {
                    warn!(unacknowledged = self.leaving.len(), "departure not acknowledged by every peer");
                    break;
                }
            }
        }
    }

    fn heartbeat(&mut self) -> Heartbeat {
        let r = self.election.next_report();
        let id_bytes =
            |(id, e): (String, u64)| id.parse::<PeerId>().ok().map(|p| (p.to_bytes(), e));
        Heartbeat {
            role: r.role,
            incarnation: r.incarnation,
            seq: r.seq,
            max_epoch: r.max_epoch,
            // The vote travels only when it differs from the leader followed
            // (rarely): following a leader means having voted for it.
            voted: if r.voted == r.follows {
                None
            } else {
                r.voted.and_then(id_bytes)
            },
            follows: r.follows.and_then(id_bytes),
            health: self.health,
            ipfs: self.ipfs_info(),
            pinset: Some(self.pins.progress().digest),
        }
    }

    /// Periodic heartbeat: gossip only.
    fn beat(&mut self) {
        let hb = self.heartbeat();
        self.publish(Gossip::Heartbeat(hb));
    }

    /// A leadership change: gossip, and directly to every connected peer,
    /// because a mesh torn by the death that caused it is only repaired at
    /// the next gossipsub heartbeat. Rare, so it costs nothing when idle.
    fn announce(&mut self) {
        let hb = self.heartbeat();
        self.publish(Gossip::Heartbeat(hb.clone()));
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            self.swarm
                .behaviour_mut()
                .rpc
                .send_request(&peer, Request::Update(hb.clone()));
        }
    }

    fn publish(&mut self, body: Gossip) {
        let bytes = wire::encode(&Envelope {
            sender: self.me.to_bytes(),
            body,
        });
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), bytes)
        {
            Ok(_) => {}
            Err(libp2p::gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                debug!("no peers to gossip to yet")
            }
            Err(e) => warn!(error = %e, "gossip publish failed"),
        }
    }

    /// Feeds a peer's heartbeat to the election core.
    fn on_heartbeat(&mut self, from: PeerId, hb: Heartbeat) {
        if let Err(e) = hb.check() {
            warn!(peer = %from, error = %e, "heartbeat dropped");
            return;
        }
        let id = |b: Option<(Vec<u8>, u64)>| -> Result<Option<(String, u64)>, ()> {
            b.map(|(bytes, e)| {
                PeerId::from_bytes(&bytes)
                    .map(|p| (p.to_base58(), e))
                    .map_err(|_| ())
            })
            .transpose()
        };
        let (Ok(follows), Ok(voted)) = (id(hb.follows), id(hb.voted)) else {
            warn!(peer = %from, "heartbeat with an invalid peer ID dropped");
            return;
        };
        let voted = voted.or_else(|| follows.clone());
        let report = crate::election::Report {
            role: hb.role,
            incarnation: hb.incarnation,
            seq: hb.seq,
            max_epoch: hb.max_epoch,
            follows,
            voted,
        };
        let key = from.to_base58();
        let actions = self.election.handle(
            Input::Heartbeat {
                from: key.clone(),
                report,
            },
            Instant::now(),
        );
        if self.election.peer(&key).is_some() {
            self.peer_health.insert(key.clone(), hb.health);
            match hb.pinset {
                Some(d) => self.peer_pinset.insert(key.clone(), d),
                None => self.peer_pinset.remove(&key),
            };
            self.on_peer_ipfs(key, hb.ipfs);
        }
        self.publish_view();
        self.execute(actions);
    }

    fn input(&mut self, input: Input<String>) {
        let actions = self.election.handle(input, Instant::now());
        self.execute(actions);
    }

    fn execute(&mut self, actions: Vec<Action<String>>) {
        for action in actions {
            match action {
                Action::PersistEpoch(epoch) => {
                    self.state.max_epoch = epoch;
                    if let Err(e) = self.data.save_state(&self.state) {
                        error!(error = %e, epoch, "cannot persist the epoch");
                    }
                }
                Action::Announce => self.announce(),
                Action::ConfirmAlive(peer) => {
                    if let Ok(peer) = peer.parse::<PeerId>() {
                        debug!(%peer, "connection lost; re-dialling to confirm");
                        self.dial(peer);
                    }
                }
                Action::LeaderChanged(leader) => {
                    self.leader_since_ms = unix_ms();
                    match leader {
                        Some((l, epoch)) if l == self.election.me().as_str() => {
                            info!(epoch, "this node leads")
                        }
                        Some((l, epoch)) => info!(leader = %l, epoch, "following a new leader"),
                        None if self.election.epochs_exhausted() => error!(
                            "no leader: the highest epoch seen is the limit ({}), so no \
                             node can claim a new term; stop every node and reset \
                             max_epoch in each node's state.json",
                            crate::election::MAX_EPOCH
                        ),
                        None => info!("no leader"),
                    }
                    self.publish_view();
                }
            }
        }
    }
}
