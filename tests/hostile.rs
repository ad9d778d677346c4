//! A real node against a hostile peer: an in-process libp2p swarm (the
//! "rogue") that speaks the node's protocols for cluster "default" and sends
//! garbage, forged, oversized and malformed messages over gossip and
//! request-response. The node must keep running, keep answering its API, and
//! keep its state clean: no forged peer, no forged epoch, still its own leader.
//!
//! Valid messages from the rogue serve as positive controls: the node
//! processes one connection's gossip in order, so once it shows a valid
//! heartbeat sent after the hostile ones, those were delivered and rejected.
//!
//! An oversized gossip frame makes the node's gossipsub close the inbound
//! stream it came on; the rogue's gossipsub does not notice and keeps writing
//! into it (yamux drops data for a closed stream without a reset), so the
//! rogue reconnects before its last gossip control. The connection itself
//! survives, which the request-response steps in between show.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, identify, noise, ping, tcp, yamux,
};
use sha2::{Digest, Sha256};

use ipfs_kit_p2p::api::{PeerView, StatusView};
use ipfs_kit_p2p::role::Role;
use ipfs_kit_p2p::wire::{
    self, Envelope, Gossip, Health, Heartbeat, MAX_RPC_BYTES, Protocols, Request, Response,
};
use testkit::{NodeProc, Spawner, wait_for};

/// Bound on every wait for a condition.
const WITHIN: Duration = Duration::from_secs(30);
/// The epoch forged claims use; the node's own epoch must stay far below it.
const FORGED_EPOCH: u64 = 1_000_000;
/// Incarnations of the rogue's hostile heartbeats. Its valid ones use 1 to 3,
/// so had the node applied a hostile one (under the signer's ID, as it does),
/// the rogue would show up at one of these, and its later controls would be stale.
const GARBAGE_INCARNATION: u64 = 99;
const FORGED_INCARNATION: u64 = 50;
/// The node's gossipsub refuses frames over 16 KiB; this is well over it.
const OVERSIZED_GOSSIP: usize = 64 * 1024;

// ---------------------------------------------------------------- raw codec

/// Request-response codec that writes whatever bytes it is given and reads
/// everything the other side sends, so the rogue can send broken frames.
#[derive(Debug, Clone, Default)]
struct RawCodec;

async fn read_raw<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(MAX_RPC_BYTES as u64 + 4)
        .read_to_end(&mut buf)
        .await?;
    Ok(buf)
}

async fn write_raw<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: Vec<u8>) -> io::Result<()> {
    io.write_all(&bytes).await?;
    io.close().await
}

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_raw(io).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_raw(io).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        write_raw(io, req).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        write_raw(io, res).await
    }
}

/// A request-response frame as the node's codec expects it: u32 length, then the body.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------- the rogue

#[derive(NetworkBehaviour)]
struct RogueBehaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: gossipsub::Behaviour,
    rpc: request_response::Behaviour<RawCodec>,
}

/// Same IDs as the node's: the signer and its sequence number.
fn message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    let mut h = Sha256::new();
    if let Some(src) = &m.source {
        h.update(src.to_bytes());
    }
    h.update(m.sequence_number.unwrap_or_default().to_be_bytes());
    gossipsub::MessageId::from(h.finalize()[..16].to_vec())
}

fn rogue_behaviour(
    key: &Keypair,
    protocols: &Protocols,
) -> Result<RogueBehaviour, Box<dyn std::error::Error + Send + Sync>> {
    let gossip_cfg = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_secs(1))
        .heartbeat_initial_delay(Duration::from_millis(100))
        .validation_mode(gossipsub::ValidationMode::Strict)
        .message_id_fn(message_id)
        // Large enough to send what the node must refuse.
        .max_transmit_size(1024 * 1024)
        .build()?;
    Ok(RogueBehaviour {
        identify: identify::Behaviour::new(
            identify::Config::new(protocols.identify.clone(), key.public())
                .with_agent_version("hostile-test".into()),
        ),
        // The node closes connections whose ping fails, including "unsupported".
        ping: ping::Behaviour::new(ping::Config::new()),
        gossipsub: gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_cfg,
        )?,
        rpc: request_response::Behaviour::with_codec(
            RawCodec,
            [(protocols.rpc.clone(), ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
        ),
    })
}

/// An in-process hostile peer; every wait polls its swarm so it stays responsive.
struct Rogue {
    swarm: Swarm<RogueBehaviour>,
    topic: IdentTopic,
    node: PeerId,
    node_subscribed: bool,
    outcomes: HashMap<OutboundRequestId, Result<Vec<u8>, OutboundFailure>>,
    /// The node's own requests (its Hello) the rogue answered with garbage.
    hellos_answered: usize,
    /// Why connections to the node closed, for failure messages.
    closed: Vec<String>,
}

impl Rogue {
    fn new(protocols: &Protocols, node: PeerId) -> Rogue {
        let mut swarm = SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp transport")
            .with_behaviour(|key| rogue_behaviour(key, protocols))
            .expect("rogue behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let topic = IdentTopic::new(protocols.topic.clone());
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .expect("subscribe");
        Rogue {
            swarm,
            topic,
            node,
            node_subscribed: false,
            outcomes: HashMap::new(),
            hellos_answered: 0,
            closed: Vec::new(),
        }
    }

    fn id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    fn on_event(&mut self, event: SwarmEvent<RogueBehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionClosed { peer_id, cause, .. } if peer_id == self.node => {
                self.closed.push(format!("{cause:?}"));
            }
            SwarmEvent::Behaviour(RogueBehaviourEvent::Gossipsub(
                gossipsub::Event::Subscribed { peer_id, topic, .. },
            )) if peer_id == self.node && topic == self.topic.hash() => {
                self.node_subscribed = true;
            }
            SwarmEvent::Behaviour(RogueBehaviourEvent::Rpc(request_response::Event::Message {
                message,
                ..
            })) => match message {
                // The node's Hello: answer with a malformed frame.
                request_response::Message::Request { channel, .. } => {
                    let garbage = frame(&[wire::VERSION, 0xde, 0xad, 0xbe, 0xef]);
                    if self
                        .swarm
                        .behaviour_mut()
                        .rpc
                        .send_response(channel, garbage)
                        .is_ok()
                    {
                        self.hellos_answered += 1;
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    self.outcomes.insert(request_id, Ok(response));
                }
            },
            SwarmEvent::Behaviour(RogueBehaviourEvent::Rpc(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) => {
                self.outcomes.insert(request_id, Err(error));
            }
            _ => {}
        }
    }

    /// Polls the swarm until `done` yields, or panics after `within`.
    async fn drive_until<T>(
        &mut self,
        within: Duration,
        what: &str,
        mut done: impl FnMut(&mut Rogue) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(v) = done(self) {
                return v;
            }
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(event) => self.on_event(event),
                Err(_) => panic!(
                    "rogue: {what} not within {within:?} (closed: {:?})",
                    self.closed
                ),
            }
        }
    }

    /// Runs `fut` while keeping the swarm polled.
    async fn while_driving<F: Future>(&mut self, fut: F) -> F::Output {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return out,
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
    }

    /// Dials the node and waits until it has announced its topic.
    async fn connect(&mut self, addr: &Multiaddr) {
        self.node_subscribed = false;
        self.swarm.dial(addr.clone()).expect("dial the node");
        self.drive_until(WITHIN, "node subscribed to the topic", |r| {
            r.node_subscribed.then_some(())
        })
        .await;
    }

    /// Closes the connection to the node and connects again.
    async fn reconnect(&mut self, addr: &Multiaddr) {
        let closes = self.closed.len();
        let node = self.node;
        assert!(
            self.swarm.disconnect_peer_id(node).is_ok(),
            "rogue not connected"
        );
        self.drive_until(WITHIN, "connection closed", |r| {
            (r.closed.len() > closes).then_some(())
        })
        .await;
        self.connect(addr).await;
    }

    /// A short pause between sends (not used to wait for anything).
    async fn pause(&mut self) {
        self.while_driving(tokio::time::sleep(Duration::from_millis(20)))
            .await;
    }

    fn publish(&mut self, what: &str, data: Vec<u8>) {
        let topic = self.topic.clone();
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
            panic!("rogue could not publish {what}: {e}");
        }
    }

    /// Sends raw bytes on the node's rpc protocol and waits for the outcome.
    async fn request(&mut self, what: &str, bytes: Vec<u8>) -> Result<Vec<u8>, OutboundFailure> {
        let node = self.node;
        let id = self.swarm.behaviour_mut().rpc.send_request(&node, bytes);
        self.drive_until(WITHIN, what, |r| r.outcomes.remove(&id))
            .await
    }
}

// ---------------------------------------------------------------- messages

fn heartbeat(role: Role, incarnation: u64, seq: u64) -> Heartbeat {
    Heartbeat {
        role,
        incarnation,
        seq,
        max_epoch: 0,
        follows: None,
        voted: None,
        health: Health::default(),
        ipfs: None,
        pinset: None,
        gpus: vec![],
        interval_ms: 5000,
        members: (1, 0),
        probe_port: 0,
        held: None,
    }
}

fn envelope(sender: &PeerId, hb: Heartbeat) -> Vec<u8> {
    wire::encode(&Envelope {
        sender: sender.to_bytes(),
        body: Gossip::Heartbeat(hb),
    })
}

/// Deterministic noise (xorshift), so a failure can be replayed.
fn noise_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Gossip the node must reject.
fn garbage_gossip(rogue: &PeerId) -> Vec<(&'static str, Vec<u8>)> {
    let valid = envelope(rogue, heartbeat(Role::Leecher, GARBAGE_INCARNATION, 1));
    let mut wrong_version = valid.clone();
    wrong_version[0] = wire::VERSION.wrapping_add(1);
    let mut trailing = valid.clone();
    trailing.push(0);
    let bad_sender = wire::encode(&Envelope {
        sender: vec![0xff; 7],
        body: Gossip::Leaving { incarnation: 1 },
    });
    let bad_leader = envelope(
        rogue,
        Heartbeat {
            max_epoch: FORGED_EPOCH,
            follows: Some((vec![0xff; 5], FORGED_EPOCH)),
            ..heartbeat(Role::Master, GARBAGE_INCARNATION, 2)
        },
    );
    vec![
        ("empty message", Vec::new()),
        ("random bytes", noise_bytes(512)),
        ("wrong version byte", wrong_version),
        ("truncated envelope", valid[..valid.len() / 2].to_vec()),
        ("trailing byte", trailing),
        ("invalid sender peer ID", bad_sender),
        ("invalid leader peer ID at a huge epoch", bad_leader),
        // Under the node's 16 KiB transport limit, over the 4 KiB wire limit.
        ("8 KiB message", vec![wire::VERSION; 8 * 1024]),
    ]
}

/// Request-response frames the node must refuse without answering.
fn garbage_rpc() -> Vec<(&'static str, Vec<u8>)> {
    let mut over_limit = ((MAX_RPC_BYTES + 1) as u32).to_be_bytes().to_vec();
    over_limit.extend_from_slice(&[wire::VERSION, 0, 0, 0]);
    let mut max_len = u32::MAX.to_be_bytes().to_vec();
    max_len.extend_from_slice(&noise_bytes(64));
    let forged_hello = Request::Hello(wire::Hello {
        heartbeat: Heartbeat {
            max_epoch: FORGED_EPOCH,
            ..heartbeat(Role::Master, GARBAGE_INCARNATION, 1)
        },
        cert: None,
        revocations: None,
    });
    let mut wrong_version = wire::encode(&forged_hello);
    wrong_version[0] = wire::VERSION.wrapping_add(1);
    let mut trailing = wire::encode(&Request::Leaving {
        incarnation: GARBAGE_INCARNATION,
    });
    trailing.push(0);
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&noise_bytes(10));
    vec![
        ("length prefix over MAX_RPC_BYTES", over_limit),
        ("length prefix u32::MAX", max_len),
        (
            "malformed body",
            frame(&[wire::VERSION, 0xde, 0xad, 0xbe, 0xef]),
        ),
        ("random body", frame(&noise_bytes(300))),
        ("wrong version byte", frame(&wrong_version)),
        ("trailing byte", frame(&trailing)),
        ("frame shorter than its length", truncated),
        ("empty stream", Vec::new()),
    ]
}

// ---------------------------------------------------------------- node view

/// The last lines of the node's log, for failure messages.
fn log_tail(logs: &Path) -> String {
    let text = std::fs::read_to_string(logs.join("master.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn peer<'a>(s: &'a StatusView, id: &PeerId) -> Option<&'a PeerView> {
    let id = id.to_base58();
    s.peers.iter().find(|p| p.peer_id == id)
}

/// Polls the node's status (keeping the rogue polled) until `pred` holds.
async fn status_until(
    rogue: &mut Rogue,
    node: &NodeProc,
    logs: &Path,
    what: &str,
    pred: impl Fn(&StatusView) -> bool,
) -> StatusView {
    let pred = &pred;
    let found = rogue
        .while_driving(wait_for(WITHIN, move || async move {
            node.status().await.filter(|s| pred(s))
        }))
        .await;
    match found {
        Some(s) => s,
        None => panic!(
            "node: {what} not within {WITHIN:?}\nlast status: {:?}\nrogue connection closes: {:?}\nnode log:\n{}",
            node.status().await,
            rogue.closed,
            log_tail(logs)
        ),
    }
}

/// The node's state is clean: it leads at its own epoch and knows no forged peer.
fn assert_clean(s: &StatusView, node: &NodeProc, epoch: u64, forged: &[PeerId], when: &str) {
    let leader = s.leader.as_ref().map(|l| (l.peer_id.as_str(), l.epoch));
    assert_eq!(
        leader,
        Some((node.peer_id.as_str(), epoch)),
        "{when}: leader changed"
    );
    assert_eq!(
        s.epoch, epoch,
        "{when}: epoch moved (forged claims were at {FORGED_EPOCH})"
    );
    for f in forged {
        assert!(
            peer(s, f).is_none(),
            "{when}: forged sender {f} was accepted: {:?}",
            s.peers
        );
    }
}

// ---------------------------------------------------------------- the tests

/// A master node on loopback, leading alone, and a rogue connected to it.
struct Setup {
    /// Holds the node's data dir and its log (`master.log`).
    tmp: tempfile::TempDir,
    node: NodeProc,
    addr: Multiaddr,
    rogue: Rogue,
    /// The node's epoch before any attack.
    epoch: u64,
}

async fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let mut spawner = Spawner::new(env!("CARGO_BIN_EXE_ipfs-kit-p2p"));
    spawner.log_dir = Some(tmp.path().to_owned());
    let node = spawner
        .spawn(Role::Master, &tmp.path().join("master"), &[])
        .await
        .unwrap();
    let node_id: PeerId = node.peer_id.parse().unwrap();
    let mut rogue = Rogue::new(&Protocols::for_cluster("default"), node_id);
    let s = status_until(&mut rogue, &node, tmp.path(), "leading", |s| {
        s.leader.as_ref().is_some_and(|l| l.peer_id == s.peer_id)
    })
    .await;
    assert!(
        s.epoch < 1000,
        "a fresh node starts at a small epoch, not {}",
        s.epoch
    );
    let addr: Multiaddr = node.addr.parse().unwrap();
    rogue.connect(&addr).await;
    Setup {
        tmp,
        node,
        addr,
        rogue,
        epoch: s.epoch,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_survives_a_hostile_peer_and_keeps_its_state_clean() {
    let started = Instant::now();
    let Setup {
        tmp,
        mut node,
        addr,
        mut rogue,
        epoch,
    } = setup().await;
    let logs = tmp.path();
    let node_id = rogue.node;
    let rogue_id = rogue.id();
    // Forged senders: a stranger, and the node itself.
    let fake_id = Keypair::generate_ed25519().public().to_peer_id();
    let forged = [fake_id, node_id];

    // 1. Garbage on the topic.
    for (what, bytes) in garbage_gossip(&rogue_id) {
        rogue.publish(what, bytes);
        rogue.pause().await;
    }
    // 2. Well-formed heartbeats whose sender is not the signer, claiming to lead at a huge epoch.
    for (i, f) in forged.iter().enumerate() {
        let hb = Heartbeat {
            max_epoch: FORGED_EPOCH,
            follows: Some((f.to_bytes(), FORGED_EPOCH)),
            ..heartbeat(Role::Master, FORGED_INCARNATION, i as u64 + 1)
        };
        rogue.publish("forged heartbeat", envelope(f, hb));
        rogue.pause().await;
    }
    // Positive control: a valid heartbeat of the rogue itself, sent last, arrives.
    rogue.publish(
        "valid heartbeat",
        envelope(&rogue_id, heartbeat(Role::Leecher, 1, 1)),
    );
    let s = status_until(
        &mut rogue,
        &node,
        logs,
        "the rogue's valid heartbeat",
        |s| peer(s, &rogue_id).is_some(),
    )
    .await;
    let seen = peer(&s, &rogue_id).unwrap();
    assert_eq!(
        (seen.incarnation, seen.role),
        (1, Role::Leecher),
        "a rejected message was applied as the rogue's heartbeat \
         (incarnation {GARBAGE_INCARNATION}: garbage, {FORGED_INCARNATION}: forged)"
    );
    assert_clean(&s, &node, epoch, &forged, "after garbage and forged gossip");

    // 3. A gossip frame over the node's transport limit. The node drops the
    // gossip stream it came on (and the rogue's later gossip on this
    // connection with it), but not the connection.
    rogue.publish("oversized gossip", vec![wire::VERSION; OVERSIZED_GOSSIP]);
    rogue.pause().await;

    // 4. Broken request-response frames on the same connection: each refused, none answered.
    for (what, bytes) in garbage_rpc() {
        match rogue.request(what, bytes).await {
            // The node drops the stream: the rogue reads nothing, or an I/O error.
            Ok(answer) if answer.is_empty() => {}
            Err(OutboundFailure::Io(_)) => {}
            Ok(answer) => panic!("rpc {what}: the node answered {} bytes", answer.len()),
            Err(e) => panic!("rpc {what}: not delivered or not refused: {e:?}"),
        }
        rogue.pause().await;
    }
    // Positive control: a valid Hello is answered with the node's own heartbeat.
    let hello = frame(&wire::encode(&Request::Hello(wire::Hello {
        heartbeat: heartbeat(Role::Leecher, 2, 1),
        cert: None,
        revocations: None,
    })));
    let answer = rogue
        .request("valid hello", hello)
        .await
        .expect("valid hello answered");
    let body = answer.get(4..).expect("answer is a frame");
    match wire::decode::<Response>(body, MAX_RPC_BYTES) {
        Ok(Response::Hello {
            heartbeat, peers, ..
        }) => {
            assert_eq!(heartbeat.role, Role::Master);
            assert_eq!(
                heartbeat.follows,
                Some((node_id.to_bytes(), epoch)),
                "node follows itself"
            );
            assert!(
                peers
                    .iter()
                    .all(|p| forged.iter().all(|f| p.peer != f.to_bytes()))
            );
        }
        other => panic!("valid hello: unexpected answer {other:?}"),
    }
    assert!(
        rogue.hellos_answered >= 1,
        "the node never sent its Hello to the rogue"
    );
    assert!(
        rogue.closed.is_empty(),
        "the node dropped the rogue: {:?}",
        rogue.closed
    );
    let s = status_until(&mut rogue, &node, logs, "the rogue's hello applied", |s| {
        peer(s, &rogue_id).is_some_and(|p| p.incarnation == 2)
    })
    .await;
    assert_clean(&s, &node, epoch, &forged, "after broken rpc frames");

    // 5. On a new connection the node takes the rogue's valid gossip again.
    rogue.reconnect(&addr).await;
    rogue.publish(
        "valid heartbeat",
        envelope(&rogue_id, heartbeat(Role::Leecher, 3, 1)),
    );
    let s = status_until(&mut rogue, &node, logs, "gossip after reconnecting", |s| {
        peer(s, &rogue_id).is_some_and(|p| p.incarnation == 3)
    })
    .await;

    // 6. Still running, still answering, still clean.
    assert!(
        node.child.try_wait().unwrap().is_none(),
        "node exited\nnode log:\n{}",
        log_tail(logs)
    );
    assert_clean(&s, &node, epoch, &forged, "at the end");
    eprintln!("hostile peer test passed in {:?}", started.elapsed());
}

/// Any member may raise the epoch (that is how a follower learns of a newer
/// term), but not beyond `election::MAX_EPOCH`: a validly signed heartbeat
/// at `u64::MAX` once overflowed `max_epoch + 1` and crashed the node. It is
/// now rejected whole; a valid heartbeat sent after it shows it was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_claiming_the_last_epoch_does_not_crash_the_node() {
    let Setup {
        tmp,
        mut node,
        mut rogue,
        ..
    } = setup().await;
    let logs = tmp.path();
    let rogue_id = rogue.id();
    let hb = Heartbeat {
        max_epoch: u64::MAX,
        ..heartbeat(Role::Leecher, 1, 1)
    };
    rogue.publish("heartbeat at the last epoch", envelope(&rogue_id, hb));
    rogue.publish(
        "valid heartbeat",
        envelope(&rogue_id, heartbeat(Role::Leecher, 1, 2)),
    );
    let s = status_until(
        &mut rogue,
        &node,
        logs,
        "the rogue's valid heartbeat",
        |s| peer(s, &rogue_id).is_some(),
    )
    .await;
    assert!(
        node.child.try_wait().unwrap().is_none(),
        "node exited\n{}",
        log_tail(logs)
    );
    assert!(
        s.epoch < ipfs_kit_p2p::election::MAX_EPOCH,
        "epoch jumped to {}",
        s.epoch
    );
    let leader = s.leader.as_ref().map(|l| l.peer_id.as_str());
    assert_eq!(
        leader,
        Some(node.peer_id.as_str()),
        "the master still leads"
    );
}
