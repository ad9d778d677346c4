//! A running node: one task owns the swarm and the election core, turning
//! swarm events, timers and commands into election inputs and carrying out
//! the actions the core returns. Everything else talks to it through a
//! cloneable [`NodeHandle`].

mod behaviour;
mod events;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::gossipsub::IdentTopic;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::api::{self, LeaderView, PeerView, StatusView};
use crate::config::NodeConfig;
use crate::election::{Action, Election, Input, Liveness};
use crate::health::HealthSampler;
use crate::store::{DataDir, State, StoreError, write_atomic};
use crate::wire::{self, Envelope, Gossip, Health, Heartbeat, Protocols, Request, SharedPeer};
use behaviour::Behaviour;
pub use behaviour::BuildError;

/// How long a graceful stop waits for peers to acknowledge the departure.
const LEAVE_DEADLINE: Duration = Duration::from_millis(1500);
const ELECTION_TICK: Duration = Duration::from_millis(200);
const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
/// Bounds for the address book and the set of foreign peers.
const MAX_FOREIGN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: Multiaddr, message: String },
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error("gossip topic: {0}")]
    Subscribe(String),
}

enum Command {
    Status(oneshot::Sender<StatusView>),
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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs a node until `shutdown` is cancelled, then leaves the cluster gracefully.
pub async fn run(cfg: NodeConfig, shutdown: CancellationToken) -> Result<(), NodeError> {
    let data = DataDir::open(&cfg.data_dir)?;
    let key = data.identity()?;
    let mut state = data.load_state()?;
    state.incarnation += 1;
    data.save_state(&state)?;
    let me = key.public().to_peer_id();
    let protocols = Protocols::for_cluster(&cfg.cluster);
    let mut swarm = behaviour::build(key, &cfg, &protocols)?;
    for addr in &cfg.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Listen {
                addr: addr.clone(),
                message: e.to_string(),
            })?;
    }
    let topic = IdentTopic::new(protocols.topic.clone());
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| NodeError::Subscribe(e.to_string()))?;

    let (tx, rx) = mpsc::channel(64);
    let api_stop = CancellationToken::new();
    let (api_addr, serve) = api::bind(cfg.api, NodeHandle { tx }, api_stop.clone()).await?;
    let api_task = tokio::spawn(serve);
    write_atomic(
        &data.api_file(),
        api::api_file_text(api_addr).as_bytes(),
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
        cfg,
    };
    node.dial_bootstrap();
    node.run(rx, &mut sampler, shutdown).await;

    api_stop.cancel();
    let _ = api_task.await;
    let _ = std::fs::remove_file(node.data.api_file());
    info!("node stopped");
    Ok(())
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
                },
                _ = heartbeat.tick() => self.announce(),
                _ = tick.tick() => {
                    let actions = self.election.tick(Instant::now());
                    self.execute(actions);
                }
                _ = redial.tick() => self.redial(),
                _ = health.tick() => self.health = sampler.sample(),
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
        }
    }

    fn announce(&mut self) {
        let hb = self.heartbeat();
        self.publish(Gossip::Heartbeat(hb));
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
            self.peer_health.insert(key, hb.health);
        }
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
                        None => info!("no leader"),
                    }
                }
            }
        }
    }

    /// Records addresses for a peer (newest first, bounded) and tells the swarm.
    fn learn_addrs(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) {
        if peer == self.me || self.foreign.contains(&peer) {
            return;
        }
        if !self.addrs.contains_key(&peer) && self.addrs.len() >= self.cfg.network.max_peers {
            return;
        }
        let loopback_only = self.loopback_only;
        let book = self.addrs.entry(peer).or_default();
        for addr in addrs {
            let addr = strip_p2p(addr);
            match addr.iter().next() {
                Some(Protocol::Ip4(ip)) if ip.is_unspecified() => continue,
                // A peer's loopback address is this host unless the whole
                // cluster runs on loopback.
                Some(Protocol::Ip4(ip)) if ip.is_loopback() && !loopback_only => continue,
                Some(Protocol::Ip6(ip))
                    if (ip.is_loopback() && !loopback_only) || ip.is_unspecified() =>
                {
                    continue;
                }
                _ => {}
            }
            book.retain(|a| *a != addr);
            book.insert(0, addr.clone());
            self.swarm.add_peer_address(peer, addr);
        }
        book.truncate(wire::MAX_ADDRS_PER_PEER);
    }

    /// Dials a peer at its known addresses, TCP first and one at a time, so a
    /// crash shows up as a closed TCP connection rather than a QUIC timeout.
    fn dial(&mut self, peer: PeerId) {
        if peer == self.me || self.foreign.contains(&peer) {
            return;
        }
        let mut addrs = self.addrs.get(&peer).cloned().unwrap_or_default();
        addrs.sort_by_key(|a| !a.iter().any(|p| matches!(p, Protocol::Tcp(_))));
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .addresses(addrs)
            .override_dial_concurrency_factor(std::num::NonZeroU8::MIN)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(%peer, error = %e, "dial not started");
        }
    }

    fn dial_bootstrap(&mut self) {
        for addr in self.cfg.bootstrap.clone() {
            match peer_of(&addr) {
                Some(peer) if self.swarm.is_connected(&peer) => {}
                Some(peer) => {
                    self.learn_addrs(peer, [addr]);
                    self.dial(peer);
                }
                None => {
                    if let Err(e) = self.swarm.dial(addr.clone()) {
                        debug!(%addr, error = %e, "bootstrap dial not started");
                    }
                }
            }
        }
    }

    /// Keeps the cluster connected: bootstrap peers and every live peer.
    fn redial(&mut self) {
        self.dial_bootstrap();
        let now = Instant::now();
        let live: Vec<PeerId> = self
            .election
            .peers()
            .filter(|(id, _)| self.election.is_live(id, now))
            .filter_map(|(id, _)| id.parse().ok())
            .filter(|p| !self.swarm.is_connected(p))
            .collect();
        for peer in live {
            self.dial(peer);
        }
        self.addrs.retain(|p, _| {
            self.election.peer(&p.to_base58()).is_some() || self.swarm.is_connected(p)
        });
    }

    fn mark_foreign(&mut self, peer: PeerId) {
        if self.foreign.len() >= MAX_FOREIGN {
            self.foreign.clear();
        }
        self.foreign.insert(peer);
        self.addrs.remove(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn shared_peers(&self) -> Vec<SharedPeer> {
        self.swarm
            .connected_peers()
            .filter_map(|p| self.addrs.get(p).map(|a| SharedPeer::new(p, a)))
            .take(wire::MAX_SHARED_PEERS)
            .collect()
    }

    fn status(&mut self) -> StatusView {
        let now = Instant::now();
        let role_of = |id: &str| {
            if id == self.election.me().as_str() {
                Some(self.election.role())
            } else {
                self.election.peer(&id.to_owned()).map(|p| p.role)
            }
        };
        let leader = self.election.leader().and_then(|(id, epoch)| {
            role_of(id).map(|role| LeaderView {
                peer_id: id.clone(),
                role,
                epoch: *epoch,
                since_unix_ms: self.leader_since_ms,
            })
        });
        let peers = self
            .election
            .peers()
            .map(|(id, p)| {
                let live = self.election.is_live(id, now);
                let pid = id.parse::<PeerId>().ok();
                let state = match p.liveness {
                    Liveness::Alive if live => "alive",
                    Liveness::Suspect { .. } if live => "suspect",
                    Liveness::Dead { .. } => "dead",
                    Liveness::Left { .. } => "left",
                    _ => "silent",
                };
                PeerView {
                    peer_id: id.clone(),
                    role: p.role,
                    healthy: live && p.liveness == Liveness::Alive,
                    state: state.into(),
                    connected: pid.is_some_and(|p| self.swarm.is_connected(&p)),
                    last_seen_ms: now.saturating_duration_since(p.last_heard).as_millis() as u64,
                    incarnation: p.incarnation,
                    follows: p.follows.as_ref().map(|(l, _)| l.clone()),
                    addrs: pid
                        .and_then(|p| self.addrs.get(&p))
                        .map(|a| a.iter().map(|a| a.to_string()).collect())
                        .unwrap_or_default(),
                    health: self.peer_health.get(id).copied().unwrap_or_default(),
                }
            })
            .collect();
        StatusView {
            peer_id: self.me.to_base58(),
            role: self.cfg.role,
            cluster: self.cfg.cluster.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            incarnation: self.state.incarnation,
            epoch: self.election.max_epoch(),
            leader,
            listen_addrs: self.swarm.listeners().map(|a| a.to_string()).collect(),
            uptime_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            peers,
        }
    }
}

/// The peer ID at the end of a multiaddr, if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

fn is_loopback(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

fn strip_p2p(addr: Multiaddr) -> Multiaddr {
    addr.into_iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}
