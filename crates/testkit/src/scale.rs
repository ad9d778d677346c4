//! The election, probe and membership cores of every node of a large
//! cluster in one deterministic simulation: how long a cluster of N takes
//! to converge after its last node starts, how long a silent leader takes
//! to be replaced, and what each node sends and handles a second while
//! idle, as N grows past what one machine can run as processes.
//!
//! Every simulated node runs the real [`Election`], [`Prober`] and
//! [`members::Sync`], glued together the way `src/node` glues them (who
//! probes, whom it asks, the checks before following a claimant, the member
//! pull, the heartbeat schedule of quiet followers). What is modelled is the
//! network:
//!
//! * **Loss** is packet loss under TCP, which every message here rides: a
//!   packet lost with probability `loss` is sent again after the
//!   retransmission timeout (200 ms, doubling each time, as Linux does), so
//!   loss shows as delay, never as a missing message; after 6 losses in a
//!   row the message is dropped (the connection would be closing).
//! * **Gossip** (heartbeats): a message reaches every other node that is up
//!   after `hops` hops (uniform in 1..=⌈log₃ N⌉ + 1, a mesh of degree 3),
//!   each hop one `hop` plus its retransmissions.
//! * **Direct messages** (Hello, probes, member lists, the leader's
//!   announcements): one hop each way. Every pair of nodes is connected
//!   (the node keeps a full mesh).
//! * **Faults:** a frozen node (SIGSTOP, a cut cable) sends and answers
//!   nothing and keeps its connections; a killed one's connections close,
//!   so its peers see it suspect at once and their re-dials fail.
//!
//! The simulation checks the election's contract after every leadership
//! change: no node follows two leaders at the same epoch. (Two nodes may:
//! two claimants that have not heard of each other take the same epoch, as
//! the two sides of a partition do, and the rightful one then takes an
//! epoch above both; [`Outcome::split_epochs`] counts those epochs.)

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use ipfs_kit_p2p::election::members;
use ipfs_kit_p2p::election::probe::{Probe, ProbeTiming, Prober};
use ipfs_kit_p2p::election::{Action, Election, Input, Liveness, Report, Timing, quiet_delay};
use ipfs_kit_p2p::role::Role;

/// The node loop ticks the election at its next change, at most every
/// `ELECTION_TICK` and at least every `ELECTION_IDLE_TICK` (as in `src/node`).
const ELECTION_TICK: Duration = Duration::from_millis(200);
const ELECTION_IDLE_TICK: Duration = Duration::from_secs(1);
/// A peer is greeted again at most this often (`HELLO_RETRY` in `src/node`).
const HELLO_RETRY: Duration = Duration::from_secs(5);
/// TCP's first retransmission timeout (Linux's minimum).
const RTO: Duration = Duration::from_millis(200);

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Params {
    pub nodes: usize,
    /// Masters, then workers; the rest are leechers.
    pub masters: usize,
    pub workers: usize,
    pub seed: u64,
    /// Loss on every link, 0..1.
    pub loss: f64,
    /// One network hop.
    pub hop: Duration,
    /// Nodes start one after another, this far apart.
    pub start_every: Duration,
    /// After the cluster converged and its first heartbeats went out: idle
    /// for this long (traffic measured), then the leader fails. At least a
    /// quiet follower's interval, so that each sends its share.
    pub idle: Duration,
    /// Give up waiting for convergence or a successor after this long.
    pub deadline: Duration,
    pub timing: Timing,
    pub probe: ProbeTiming,
    /// Followers after the leader that probe it; members asked per indirect probe.
    pub probers: usize,
    pub indirect: usize,
    /// How the leader fails.
    pub fault: Fault,
    /// Direct messages between two nodes arrive in the order they were
    /// sent, as over one TCP connection: a message held up by
    /// retransmissions holds up those sent after it on that link (head-of-
    /// line blocking). With Linux's fast recovery: once a transmission
    /// sent after a lost one arrives, the receiver's acknowledgement of it
    /// marks the lost one lost (RACK), and it is sent again a round trip
    /// later instead of at its timeout; a lost message with nothing sent
    /// after it waits for the timeout (Linux's tail-loss probe of a lone
    /// segment fires at about the same 200 ms). Gossip and a killed node's
    /// closing stay out of it, and a message given up after 6 losses holds
    /// up nothing. Off by default (every message on its own), which the
    /// seeds of the tests were found with.
    pub in_order: bool,
    /// Probes also go by datagram, as the node sends them
    /// (`probe_datagram_resend_ms`): every probe's `Ping`, beside its copy
    /// over the connection, as a datagram sent again this often for
    /// max(the prober's deadline, 2 × `probe_timeout`) (a relay's: for its
    /// window), each try and its answer lost on their own with `loss` and
    /// never sent again; the first answer either way counts. Off by
    /// default (the seeds of the tests were found without), datagrams are
    /// not counted in the traffic.
    pub datagrams: Option<Duration>,
    /// With [`Params::datagrams`], a prober's own probe of a peer that has
    /// answered one of its datagrams goes over the connection only if
    /// still unanswered this much later (`probe_connection_after_ms`, as
    /// the node sends it); `None`, as with 0 there: both at once. Relays
    /// go both ways at once, as in the node.
    pub connection_after: Option<Duration>,
}

/// How the leader fails after the idle period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Silent: frozen or cut off, its connections open (SIGSTOP).
    Freeze,
    /// Crashed: its connections close (SIGKILL).
    Kill,
}

impl Params {
    /// The node's defaults (`config/default.toml`) for `nodes` nodes.
    pub fn defaults(nodes: usize, seed: u64) -> Self {
        Params {
            nodes,
            masters: 3.min(nodes),
            workers: (nodes / 5).min(nodes.saturating_sub(3)),
            seed,
            loss: 0.0,
            hop: Duration::from_micros(500),
            start_every: Duration::from_millis(20),
            idle: Duration::from_secs(30),
            deadline: Duration::from_secs(120),
            timing: Timing {
                peer_timeout: Duration::from_secs(15),
                suspect_timeout: Duration::from_secs(3),
                startup_grace: Duration::from_secs(1),
                forget_after: Duration::from_secs(600),
                heartbeat: Duration::from_secs(5),
                quiet_per_member: Duration::from_millis(1000),
                successors: 3,
            },
            probe: ProbeTiming::default(),
            probers: 3,
            indirect: 3,
            fault: Fault::Freeze,
            in_order: false,
            datagrams: None,
            connection_after: None,
        }
    }
}

/// What the simulation measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub nodes: usize,
    /// From the last start until every node follows the rightful leader at
    /// one epoch and holds every other node live.
    pub convergence: Option<Duration>,
    /// From the leader's failure until every other node follows its
    /// successor.
    pub detection: Option<Duration>,
    /// While idle, per node per second: gossip messages handled, gossip
    /// messages sent (its own heartbeats), direct messages sent.
    pub gossip_in_per_node_s: f64,
    pub gossip_out_per_node_s: f64,
    pub direct_out_per_node_s: f64,
    /// Direct messages the leader sent per second while idle (probe answers).
    pub leader_direct_out_s: f64,
    /// Member pulls while idle, whole cluster, per second.
    pub member_pulls_s: f64,
    /// Highest epoch reached, and leader changes summed over all nodes.
    pub max_epoch: u64,
    /// The highest epoch when the cluster converged, and when the leader
    /// failed: epochs taken between the two are failovers with no fault.
    pub converged_epoch: u64,
    pub fault_epoch: u64,
    /// Epochs at which two nodes followed different leaders: two claimants
    /// that had not heard of each other took the same epoch (the start's
    /// greetings delayed like a partition), each followed by some nodes
    /// until the rightful one took an epoch above both.
    pub split_epochs: u64,
    pub leader_changes: u64,
    /// Simulated events handled.
    pub events: u64,
}

#[derive(Debug, Clone)]
enum Msg {
    /// A heartbeat, by gossip (or directly: a Hello's answer, an Update).
    Beat {
        report: Report<u32>,
        members: members::Digest,
        gossiped: bool,
    },
    /// A Hello: the sender's report; answered with the receiver's.
    Hello {
        report: Report<u32>,
        members: members::Digest,
    },
    /// A probe (`dgram`: one datagram try of it, [`Params::datagrams`]).
    Ping {
        nonce: u64,
        relay: Option<(u32, u64)>,
        dgram: bool,
    },
    Pong {
        nonce: u64,
        relay: Option<(u32, u64)>,
        /// The answer to a datagram.
        dgram: bool,
    },
    /// Probe `target` for me, answer under `nonce`.
    ProbeFor {
        target: u32,
        nonce: u64,
        within: Duration,
    },
    Probed {
        nonce: u64,
        reachable: bool,
    },
    /// A member list (`answer`: it answers a pull).
    Members {
        list: Vec<u32>,
        answer: bool,
    },
    /// The sender's process died: its connection closed.
    Closed,
}

#[derive(Debug, Clone)]
enum Ev {
    Start(u32),
    Deliver {
        from: u32,
        to: u32,
        msg: Msg,
    },
    Tick(u32, Instant),
    Wake(u32, Instant),
    Beat(u32, Instant),
    /// A relay's deadline: answer "unreachable" unless answered already.
    RelayDue {
        at: u32,
        key: u64,
    },
    /// The re-dial of a peer whose connection closed has failed.
    DialFailed {
        at: u32,
        peer: u32,
    },
    Kill(u32),
    Freeze(u32),
    /// A probe sent by datagram first: over the connection now, unless
    /// answered ([`Params::connection_after`]).
    ConnectionPing {
        from: u32,
        to: u32,
        nonce: u64,
    },
    /// A [`Link`]'s next retransmission or hand-over is due.
    Link {
        from: u32,
        to: u32,
        at: Instant,
    },
}

/// One direction of a connection under [`Params::in_order`]: the messages
/// sent on it and not yet handed to the receiver, in the order sent.
#[derive(Default)]
struct Link {
    queue: VecDeque<Segment>,
    /// The instant its [`Ev::Link`] is queued for, if one is.
    due: Option<Instant>,
}

/// A message on a [`Link`].
struct Segment {
    msg: Msg,
    /// When it reached the receiver's end; `None` while its last
    /// transmission is lost.
    arrived: Option<Instant>,
    /// When it was last sent; while lost, when it is sent again, and the
    /// timeout after that.
    sent: Instant,
    resend: Instant,
    rto: Duration,
    losses: u32,
}

struct Node {
    role: Role,
    up: bool,
    frozen: bool,
    election: Election<u32>,
    prober: Prober<u32>,
    sync: members::Sync,
    last_beat: Instant,
    next_beat: Instant,
    wake: Option<Instant>,
    last_tick: Instant,
    tick_at: Instant,
    /// Relayed probes: key -> (asker, asker's nonce), answered once.
    relays: HashMap<u64, (u32, u64)>,
    next_relay: u64,
    /// When this node last greeted each peer (`hello_sent` in `src/node`).
    greeted: HashMap<u32, Instant>,
    /// When this node last swept its known members for silent ones.
    last_sweep: Instant,
    /// Its own probes answered (by datagram or over the connection): a
    /// second answer to one is a duplicate, as in the node.
    answered: std::collections::HashSet<u64>,
    /// Peers that answered one of its probe datagrams (the node's
    /// `answered_at`; in these runs no node comes back on another port),
    /// with its probes of each in a row sent by datagram first that only
    /// the connection answered (the node's `connection_only`: at 3 the
    /// peer is dropped from here).
    datagram_peers: HashMap<u32, u32>,
    /// Its probes sent by datagram first.
    first: std::collections::HashSet<u64>,
}

impl Node {
    /// Whether this node greeted `peer` less than `HELLO_RETRY` ago.
    fn greeted_lately(&self, peer: u32, now: Instant) -> bool {
        self.greeted
            .get(&peer)
            .is_some_and(|at| now.saturating_duration_since(*at) < HELLO_RETRY)
    }
}

/// SplitMix64: small, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Default)]
struct Counts {
    gossip_in: u64,
    gossip_out: u64,
    direct_out: Vec<u64>,
    pulls: u64,
}

/// The simulation.
pub struct Sim {
    p: Params,
    t0: Instant,
    now: Instant,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    rng: Rng,
    nodes: Vec<Node>,
    hops: u64,
    counts: Counts,
    /// The leader each node followed at each epoch, for the contract.
    followed: HashMap<(u32, u64), u32>,
    /// Every leader some node followed at each epoch.
    epochs: BTreeMap<u64, BTreeSet<u32>>,
    leader_changes: u64,
    handled: u64,
    tracing: bool,
    /// With `in_order`: each direction of each connection with messages
    /// not yet handed over.
    links: HashMap<(u32, u32), Link>,
}

impl Sim {
    pub fn new(p: Params) -> Self {
        let t0 = Instant::now();
        let n = p.nodes;
        let role = |i: usize| {
            if i < p.masters {
                Role::Master
            } else if i < p.masters + p.workers {
                Role::Worker
            } else {
                Role::Leecher
            }
        };
        let nodes = (0..n)
            .map(|i| Node {
                role: role(i),
                up: false,
                frozen: false,
                election: Election::new(i as u32, role(i), 1, 0, p.timing, t0),
                prober: Prober::new(p.probe, t0),
                sync: members::Sync::new(
                    p.timing.heartbeat / 2,
                    p.timing.heartbeat,
                    Duration::from_secs(60),
                ),
                last_beat: t0,
                next_beat: t0,
                wake: None,
                last_tick: t0,
                tick_at: t0,
                relays: HashMap::new(),
                next_relay: 0,
                greeted: HashMap::new(),
                last_sweep: t0,
                answered: Default::default(),
                datagram_peers: Default::default(),
                first: Default::default(),
            })
            .collect();
        let hops = (n.max(2) as f64).log(3.0).ceil() as u64 + 1;
        let counts = Counts {
            direct_out: vec![0; n],
            ..Counts::default()
        };
        Sim {
            rng: Rng(p.seed),
            p,
            t0,
            now: t0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            nodes,
            hops,
            counts,
            followed: HashMap::new(),
            epochs: BTreeMap::new(),
            leader_changes: 0,
            handled: 0,
            tracing: std::env::var_os("SIM_TRACE").is_some(),
            links: HashMap::new(),
        }
    }

    fn at(&mut self, when: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((when, self.seq)));
        self.events.insert(self.seq, ev);
    }

    /// Runs events up to `until`, or until `done` holds (checked every
    /// 100 ms of simulated time); whether `done` held.
    fn run_until(
        &mut self,
        until: Instant,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Result<bool, String> {
        let mut next_check = self.now;
        while let Some(Reverse((when, seq))) = self.queue.peek().copied() {
            if when > until {
                break;
            }
            if when >= next_check {
                self.now = next_check.max(self.now);
                if done(self) {
                    return Ok(true);
                }
                next_check = when.max(next_check) + Duration::from_millis(100);
            }
            self.queue.pop();
            let ev = self
                .events
                .remove(&seq)
                .expect("every queued event is stored");
            self.now = when;
            self.handled += 1;
            self.handle(ev)?;
        }
        self.now = until;
        Ok(done(self))
    }

    fn handle(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Start(i) => self.start(i),
            Ev::Deliver { from, to, msg } => return self.deliver(from, to, msg),
            Ev::Tick(i, at) => {
                let n = &mut self.nodes[i as usize];
                if n.up && n.tick_at == at {
                    n.last_tick = self.now;
                    if n.frozen {
                        // Its loop stands still; it ticks again when thawed
                        // (never, in these runs).
                        let next = self.now + ELECTION_IDLE_TICK;
                        n.tick_at = next;
                        self.at(next, Ev::Tick(i, next));
                    } else {
                        self.tick(i)?;
                    }
                }
            }
            Ev::Wake(i, at) => {
                let n = &self.nodes[i as usize];
                if n.up && !n.frozen && n.wake == Some(at) {
                    self.nodes[i as usize].wake = None;
                    self.probe_tick(i)?;
                }
            }
            Ev::Beat(i, at) => {
                let n = &self.nodes[i as usize];
                if n.up && !n.frozen && n.next_beat == at {
                    self.beat(i, false);
                }
            }
            Ev::RelayDue { at, key } => {
                if let Some((asker, nonce)) = self.nodes[at as usize].relays.remove(&key) {
                    let reachable = false;
                    self.send(at, asker, Msg::Probed { nonce, reachable });
                }
            }
            Ev::DialFailed { at, peer } => {
                if self.nodes[at as usize].up && !self.nodes[at as usize].frozen {
                    self.input(at, Input::Unreachable(peer))?;
                }
            }
            Ev::Kill(i) => {
                self.nodes[i as usize].up = false;
                // Its connections close: every peer sees it go at once.
                for j in 0..self.nodes.len() as u32 {
                    if j != i && self.nodes[j as usize].up {
                        let at = self.now + self.p.hop;
                        self.at(
                            at,
                            Ev::Deliver {
                                from: i,
                                to: j,
                                msg: Msg::Closed,
                            },
                        );
                    }
                }
            }
            Ev::Freeze(i) => self.nodes[i as usize].frozen = true,
            Ev::ConnectionPing { from, to, nonce } => {
                let n = &self.nodes[from as usize];
                if n.up && !n.frozen && !n.answered.contains(&nonce) {
                    let ping = Msg::Ping {
                        nonce,
                        relay: None,
                        dgram: false,
                    };
                    self.send(from, to, ping);
                }
            }
            Ev::Link { from, to, at } => return self.pump(from, to, at),
        }
        Ok(())
    }

    fn start(&mut self, i: u32) {
        let now = self.now;
        let n = &mut self.nodes[i as usize];
        n.up = true;
        n.election = Election::new(i, n.role, 1, 0, self.p.timing, now);
        n.prober = Prober::new(self.p.probe, now);
        n.last_beat = now;
        n.last_tick = now;
        let next = now + ELECTION_TICK;
        n.tick_at = next;
        self.at(next, Ev::Tick(i, next));
        // Greets the bootstrap node (node 0), which answers with its
        // heartbeat and its member list (as `Response::Hello` does).
        if i != 0 {
            self.greet(i, 0);
        }
        self.beat(i, false);
    }

    fn greet(&mut self, from: u32, to: u32) {
        let now = self.now;
        self.nodes[from as usize].greeted.insert(to, now);
        let (report, members) = self.report(from);
        self.send(from, to, Msg::Hello { report, members });
    }

    fn digest(&self, i: u32) -> members::Digest {
        let e = &self.nodes[i as usize].election;
        let ids: Vec<[u8; 4]> = std::iter::once(i)
            .chain(e.live_peers(self.now).copied())
            .map(u32::to_be_bytes)
            .collect();
        members::digest(ids.iter().map(|b| b.as_slice()))
    }

    /// A heartbeat of node `i`, with its member digest when it claims to
    /// lead (only a claimant's digest is compared with: computing every
    /// node's for every greeting would cost O(N) each, O(N³) in all).
    fn report(&mut self, i: u32) -> (Report<u32>, members::Digest) {
        let report = self.nodes[i as usize].election.next_report(self.now);
        let claims = matches!(&report.follows, Some((l, _)) if *l == i);
        let members = if claims {
            self.digest(i)
        } else {
            members::Digest::default()
        };
        (report, members)
    }

    /// One hop over TCP: `hop`, plus a retransmission timeout for every
    /// loss of the packet (see the module's model); `None` when it is lost
    /// 6 times in a row.
    fn leg(&mut self) -> Option<Duration> {
        let mut delay = self.p.hop;
        let mut rto = RTO;
        for _ in 0..6 {
            if self.rng.unit() >= self.p.loss {
                return Some(delay);
            }
            delay += rto;
            rto *= 2;
        }
        None
    }

    /// The highest epoch some node followed a leader at so far.
    fn max_epoch(&self) -> u64 {
        self.epochs.keys().next_back().copied().unwrap_or(0)
    }

    /// With `SIM_TRACE` set, what happened when, on stderr.
    fn trace(&self, what: impl FnOnce() -> String) {
        if self.tracing {
            let t = self.now.saturating_duration_since(self.t0);
            eprintln!("{:>10.3} s  {}", t.as_secs_f64(), what());
        }
    }

    /// A direct message.
    fn send(&mut self, from: u32, to: u32, msg: Msg) {
        self.counts.direct_out[from as usize] += 1;
        if self.p.in_order {
            let now = self.now;
            let segment = Segment {
                msg,
                arrived: None,
                sent: now,
                resend: now,
                rto: RTO,
                losses: 0,
            };
            self.links
                .entry((from, to))
                .or_default()
                .queue
                .push_back(segment);
            self.transmit(from, to);
            self.schedule(from, to);
        } else if let Some(d) = self.leg() {
            self.at(self.now + d, Ev::Deliver { from, to, msg });
        }
    }

    /// A probe's `Ping`: over the connection, and with
    /// [`Params::datagrams`] as datagram tries too, each lost on its own.
    fn probe(
        &mut self,
        from: u32,
        to: u32,
        nonce: u64,
        relay: Option<(u32, u64)>,
        window: Duration,
    ) {
        let ping = |dgram| Msg::Ping {
            nonce,
            relay,
            dgram,
        };
        let resend = self.p.datagrams.filter(|r| !r.is_zero());
        let first = self
            .p
            .connection_after
            .filter(|a| !a.is_zero() && *a < window && resend.is_some() && relay.is_none())
            .filter(|_| self.nodes[from as usize].datagram_peers.contains_key(&to));
        match first {
            Some(after) => {
                self.nodes[from as usize].first.insert(nonce);
                self.at(self.now + after, Ev::ConnectionPing { from, to, nonce })
            }
            None => self.send(from, to, ping(false)),
        }
        let Some(resend) = resend else {
            return;
        };
        let mut after = Duration::ZERO;
        while after < window {
            if self.rng.unit() >= self.p.loss {
                let at = self.now + after + self.p.hop;
                self.at(
                    at,
                    Ev::Deliver {
                        from,
                        to,
                        msg: ping(true),
                    },
                );
            }
            after += resend;
        }
    }

    /// Sends again, now, every message on the link whose retransmission is
    /// due (a fresh one's first transmission included). When one gets
    /// through, the acknowledgement of it, a round trip later, marks every
    /// lost one sent before it lost (RACK): those go again then, unless
    /// their timeout comes first.
    fn transmit(&mut self, from: u32, to: u32) {
        let (now, hop, loss) = (self.now, self.p.hop, self.p.loss);
        let link = self
            .links
            .get_mut(&(from, to))
            .expect("a link with a queue");
        // The last message in the queue that got through now.
        let mut delivered = None;
        for (i, segment) in link.queue.iter_mut().enumerate() {
            if segment.arrived.is_some() || segment.resend > now {
                continue;
            }
            segment.sent = now;
            if self.rng.unit() >= loss {
                segment.arrived = Some(now + hop);
                delivered = Some(i);
            } else {
                segment.losses += 1;
                segment.resend = now + segment.rto;
                segment.rto *= 2;
            }
        }
        if let Some(last) = delivered {
            // Sent before it: earlier, or now but ahead of it in the stream.
            let acked = now + 2 * hop;
            for (i, segment) in link.queue.iter_mut().enumerate() {
                let before = segment.sent < now || i < last;
                if segment.arrived.is_none() && before && segment.resend > acked {
                    segment.resend = acked;
                }
            }
        }
        // Given up after 6 losses: the message holds up nothing.
        link.queue.retain(|s| s.losses < 6);
    }

    /// Queues the link's next event: the head's hand-over or the first
    /// retransmission, whichever comes first.
    fn schedule(&mut self, from: u32, to: u32) {
        let link = self.links.get_mut(&(from, to)).expect("a link");
        let head = link.queue.front().and_then(|s| s.arrived);
        let resend = link
            .queue
            .iter()
            .filter(|s| s.arrived.is_none())
            .map(|s| s.resend)
            .min();
        // Never before now: messages that arrived behind one just given up
        // are handed over at once.
        let next = match (head, resend) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
        .map(|t| t.max(self.now));
        if next.is_none() {
            self.links.remove(&(from, to));
            return;
        }
        if next != link.due {
            link.due = next;
            let at = next.expect("checked");
            self.at(at, Ev::Link { from, to, at });
        }
    }

    /// A link's event: retransmissions due now, then every message at the
    /// head that has arrived, handed over in order.
    fn pump(&mut self, from: u32, to: u32, at: Instant) -> Result<(), String> {
        match self.links.get(&(from, to)) {
            Some(link) if link.due == Some(at) => {}
            _ => return Ok(()),
        }
        self.links.get_mut(&(from, to)).expect("checked").due = None;
        self.transmit(from, to);
        let now = self.now;
        let mut ready = Vec::new();
        let link = self.links.get_mut(&(from, to)).expect("checked");
        while link
            .queue
            .front()
            .is_some_and(|s| s.arrived.is_some_and(|a| a <= now))
        {
            ready.push(link.queue.pop_front().expect("checked").msg);
        }
        self.schedule(from, to);
        for msg in ready {
            self.deliver(from, to, msg)?;
        }
        Ok(())
    }

    /// A heartbeat over gossip to every node that is up (see the module's model).
    fn gossip(&mut self, from: u32, report: Report<u32>, members: members::Digest) {
        self.counts.gossip_out += 1;
        for to in 0..self.nodes.len() as u32 {
            if to == from || !self.nodes[to as usize].up {
                continue;
            }
            let hops = 1 + self.rng.below(self.hops);
            let mut delay = Some(Duration::ZERO);
            for _ in 0..hops {
                delay = delay.zip(self.leg()).map(|(a, b)| a + b);
            }
            let Some(d) = delay else { continue };
            let msg = Msg::Beat {
                report: report.clone(),
                members,
                gossiped: true,
            };
            self.at(self.now + d, Ev::Deliver { from, to, msg });
        }
    }

    fn beat(&mut self, i: u32, announce: bool) {
        let (report, members) = self.report(i);
        let now = self.now;
        let unit = self.rng.unit();
        let n = &mut self.nodes[i as usize];
        n.last_beat = now;
        n.next_beat = now + quiet_delay(report.interval, self.p.timing.heartbeat, unit);
        let next = n.next_beat;
        self.at(next, Ev::Beat(i, next));
        if announce {
            for to in 0..self.nodes.len() as u32 {
                if to != i && self.nodes[to as usize].up {
                    let msg = Msg::Beat {
                        report: report.clone(),
                        members,
                        gossiped: false,
                    };
                    self.send(i, to, msg);
                }
            }
        }
        self.gossip(i, report, members);
    }

    fn deliver(&mut self, from: u32, to: u32, msg: Msg) -> Result<(), String> {
        let n = &self.nodes[to as usize];
        if !n.up || n.frozen {
            return Ok(());
        }
        match msg {
            Msg::Beat {
                report,
                members,
                gossiped,
            } => {
                self.counts.gossip_in += 1;
                // The first contact between two nodes greets both ways, as
                // the node's connection does (or its dial of a peer it
                // first hears of by gossip): a heartbeat of a node this one
                // never heard of (it started after the lists this node
                // took) brings a greeting, whose answer brings this node's
                // own report to it.
                let n = &self.nodes[to as usize];
                if gossiped && n.election.peer(&from).is_none() && !n.greeted_lately(from, self.now)
                {
                    self.greet(to, from);
                }
                self.on_heartbeat(to, from, report, members)?;
            }
            Msg::Hello { report, members } => {
                // As `on_hello` does: a fellow follower of this node's
                // leader gets the member list from the leader, not here.
                let ours = self.nodes[to as usize].election.leader().map(|(l, _)| *l);
                let same_leader = matches!((&report.follows, ours),
                    (Some((theirs, _)), Some(l)) if *theirs == l && l != to);
                self.on_heartbeat(to, from, report, members)?;
                let (report, members) = self.report(to);
                self.send(
                    to,
                    from,
                    Msg::Beat {
                        report,
                        members,
                        gossiped: false,
                    },
                );
                if !same_leader {
                    let list = self.member_list(to);
                    self.send(to, from, Msg::Members { list, answer: true });
                }
            }
            Msg::Ping {
                nonce,
                relay,
                dgram: false,
            } => {
                let pong = Msg::Pong {
                    nonce,
                    relay,
                    dgram: false,
                };
                self.send(to, from, pong);
            }
            Msg::Ping {
                nonce,
                relay,
                dgram: true,
            } => {
                if self.rng.unit() >= self.p.loss {
                    let msg = Msg::Pong {
                        nonce,
                        relay,
                        dgram: true,
                    };
                    let to_asker = Ev::Deliver {
                        from: to,
                        to: from,
                        msg,
                    };
                    self.at(self.now + self.p.hop, to_asker);
                }
            }
            Msg::Pong {
                nonce,
                relay: None,
                dgram,
            } => {
                let n = &mut self.nodes[to as usize];
                let first = n.first.remove(&nonce);
                if dgram {
                    n.datagram_peers.insert(from, 0);
                }
                if !n.answered.insert(nonce) {
                    return Ok(());
                }
                // Sent by datagram first, answered first over the connection.
                if first
                    && !dgram
                    && let Some(k) = n.datagram_peers.get_mut(&from)
                {
                    *k += 1;
                    if *k >= 3 {
                        n.datagram_peers.remove(&from);
                    }
                }
                let probe = self.nodes[to as usize].prober.answered(nonce, self.now);
                self.run_probes(to, probe.into_iter().collect())?;
            }
            Msg::Pong {
                relay: Some((_, key)),
                ..
            } => {
                if let Some((asker, nonce)) = self.nodes[to as usize].relays.remove(&key) {
                    self.send(
                        to,
                        asker,
                        Msg::Probed {
                            nonce,
                            reachable: true,
                        },
                    );
                }
            }
            Msg::ProbeFor {
                target,
                nonce,
                within,
            } => {
                self.check_own_leader(to, target)?;
                let n = &mut self.nodes[to as usize];
                n.next_relay += 1;
                let key = n.next_relay;
                n.relays.insert(key, (from, nonce));
                let window = within.min(self.p.probe.timeout_max);
                self.at(self.now + window, Ev::RelayDue { at: to, key });
                self.probe(to, target, 0, Some((from, key)), window);
            }
            Msg::Probed { nonce, reachable } => {
                let probes = self.nodes[to as usize]
                    .prober
                    .indirect(nonce, reachable, self.now);
                self.run_probes(to, probes)?;
            }
            Msg::Closed => self.input(to, Input::ConnectionLost(from))?,
            Msg::Members { list, answer } => {
                if !answer {
                    let mine = self.member_list(to);
                    self.send(
                        to,
                        from,
                        Msg::Members {
                            list: mine,
                            answer: true,
                        },
                    );
                }
                for m in list {
                    let n = &self.nodes[to as usize];
                    if m != to && n.election.peer(&m).is_none() && !n.greeted_lately(m, self.now) {
                        // Dial and greet it.
                        self.greet(to, m);
                    }
                }
            }
        }
        Ok(())
    }

    fn member_list(&self, i: u32) -> Vec<u32> {
        self.nodes[i as usize]
            .election
            .live_peers(self.now)
            .copied()
            .collect()
    }

    fn on_heartbeat(
        &mut self,
        at: u32,
        from: u32,
        report: Report<u32>,
        members: members::Digest,
    ) -> Result<(), String> {
        let claims = matches!(&report.follows, Some((l, _)) if *l == from);
        let actions = self.nodes[at as usize]
            .election
            .handle(Input::Heartbeat { from, report }, self.now);
        if claims {
            self.check_leader_on_claim(at, from)?;
            let follows =
                matches!(self.nodes[at as usize].election.leader(), Some((l, _)) if *l == from);
            if follows {
                let own = self.digest(at);
                let now = self.now;
                if self.nodes[at as usize].sync.observe(members, own, now) {
                    self.counts.pulls += 1;
                    let list = self.member_list(at);
                    self.send(
                        at,
                        from,
                        Msg::Members {
                            list,
                            answer: false,
                        },
                    );
                }
            }
        }
        self.execute(at, actions)
    }

    fn input(&mut self, at: u32, input: Input<u32>) -> Result<(), String> {
        let actions = self.nodes[at as usize].election.handle(input, self.now);
        self.execute(at, actions)?;
        // As the node does: a new leader or place in line is probed at once.
        let target = self.probe_target(at);
        self.nodes[at as usize].prober.watch(target, self.now);
        self.reschedule(at);
        Ok(())
    }

    fn execute(&mut self, at: u32, actions: Vec<Action<u32>>) -> Result<(), String> {
        for a in actions {
            match a {
                Action::PersistEpoch(_) | Action::PersistVote(..) => {}
                Action::Announce => self.beat(at, true),
                Action::ConfirmAlive(peer) => {
                    let p = &self.nodes[peer as usize];
                    if p.up {
                        self.input(at, Input::Connected(peer))?;
                    } else {
                        let when = self.now + self.p.hop * 2;
                        self.at(when, Ev::DialFailed { at, peer });
                    }
                }
                Action::LeaderChanged(leader) => {
                    self.leader_changes += 1;
                    self.trace(|| format!("node {at} follows {leader:?}"));
                    if let Some((l, e)) = leader {
                        match self.followed.insert((at, e), l) {
                            Some(other) if other != l => {
                                return Err(format!(
                                    "node {at} followed two leaders at epoch {e}: {other} and {l}"
                                ));
                            }
                            _ => {
                                self.epochs.entry(e).or_default().insert(l);
                            }
                        }
                    }
                }
            }
        }
        self.reschedule(at);
        Ok(())
    }

    /// Brings the next heartbeat forward when the interval shrank, and
    /// keeps the probe wake-up scheduled.
    fn reschedule(&mut self, i: u32) {
        let now = self.now;
        let n = &mut self.nodes[i as usize];
        let due = n.last_beat + n.election.beat_interval(now);
        if due < n.next_beat {
            n.next_beat = due.max(now);
            let next = n.next_beat;
            self.at(next, Ev::Beat(i, next));
        }
        let n = &mut self.nodes[i as usize];
        if let Some(w) = n.prober.next_wake().map(|w| w.max(now))
            && n.wake != Some(w)
        {
            n.wake = Some(w);
            self.at(w, Ev::Wake(i, w));
        }
        let n = &mut self.nodes[i as usize];
        let idle = n.last_tick + ELECTION_IDLE_TICK;
        let tick_at = n
            .election
            .next_change(now)
            .map_or(idle, |at| at.min(idle))
            .max(n.last_tick + ELECTION_TICK)
            .max(now);
        if tick_at != n.tick_at {
            n.tick_at = tick_at;
            self.at(tick_at, Ev::Tick(i, tick_at));
        }
    }

    fn tick(&mut self, i: u32) -> Result<(), String> {
        self.sweep(i);
        let actions = self.nodes[i as usize].election.tick(self.now);
        let target = self.probe_target(i);
        self.nodes[i as usize].prober.watch(target, self.now);
        self.execute(i, actions)
    }

    /// As the node's sweep (`redial`) does, every `HELLO_RETRY` here: a
    /// known member that is not live and has not left is dialled afresh
    /// (its connection closed first when it is silent over it), and the
    /// greetings on the new connection bring its current report. A
    /// heartbeat dropped after its retransmissions (the one announcing a
    /// quiet follower's long interval, say) so costs seconds, not the
    /// follower's next heartbeat minutes later. A frozen or killed member
    /// answers nothing.
    fn sweep(&mut self, i: u32) {
        let now = self.now;
        let n = &self.nodes[i as usize];
        if now.saturating_duration_since(n.last_sweep) < HELLO_RETRY {
            return;
        }
        let quiet: Vec<u32> = n
            .election
            .peers()
            .filter(|(id, p)| {
                !matches!(p.liveness, Liveness::Left { .. })
                    && !n.election.is_live(id, now)
                    && !n.greeted_lately(**id, now)
            })
            .map(|(id, _)| *id)
            .collect();
        self.nodes[i as usize].last_sweep = now;
        for m in quiet {
            self.greet(i, m);
        }
    }

    fn probe_tick(&mut self, i: u32) -> Result<(), String> {
        let target = self.probe_target(i);
        let now = self.now;
        self.nodes[i as usize].prober.watch(target, now);
        let helpers = self.nodes[i as usize]
            .prober
            .target()
            .copied()
            .map(|t| self.helpers(i, t))
            .unwrap_or_default();
        let probes = self.nodes[i as usize].prober.tick(now, move |_| helpers);
        self.run_probes(i, probes)?;
        self.reschedule(i);
        Ok(())
    }

    fn probe_target(&self, i: u32) -> Option<u32> {
        let n = &self.nodes[i as usize];
        if !n.election.joined(n.sync.agreed(), self.now) {
            return None;
        }
        n.election.probe_target(self.p.probers, self.now)
    }

    fn successor(&self, i: u32, leader: u32) -> Option<u32> {
        self.nodes[i as usize].election.successor(&leader, self.now)
    }

    /// `probe_helpers`: the target's successor first, the rest at random.
    fn helpers(&mut self, i: u32, target: u32) -> Vec<u32> {
        let now = self.now;
        let first = self
            .successor(i, target)
            .filter(|s| *s != i && *s != target);
        let n = &self.nodes[i as usize];
        let mut rest: Vec<u32> = n
            .election
            .live_peers(now)
            .copied()
            .filter(|id| *id != target && Some(*id) != first)
            .collect();
        let mut all: Vec<u32> = first.into_iter().collect();
        while all.len() < self.p.indirect && !rest.is_empty() {
            let k = self.rng.below(rest.len() as u64) as usize;
            all.push(rest.swap_remove(k));
        }
        all
    }

    fn run_probes(&mut self, i: u32, probes: Vec<Probe<u32>>) -> Result<(), String> {
        for probe in probes {
            match probe {
                Probe::Ping { to, nonce } => {
                    if self.nodes[to as usize].up {
                        let deadline = self.nodes[i as usize].prober.deadline();
                        let window = deadline.max(self.p.probe.timeout * 2);
                        self.probe(i, to, nonce, None, window);
                    } else {
                        // Refused at once: nothing listens there.
                        let probes = {
                            let helpers = self.helpers(i, to);
                            self.nodes[i as usize]
                                .prober
                                .failed(nonce, self.now, move |_| helpers)
                        };
                        self.run_probes(i, probes)?;
                    }
                }
                Probe::Ask {
                    via,
                    target,
                    nonce,
                    within,
                } => {
                    for h in via {
                        self.send(
                            i,
                            h,
                            Msg::ProbeFor {
                                target,
                                nonce,
                                within,
                            },
                        );
                    }
                }
                Probe::Silent(peer) => {
                    let d = self.nodes[i as usize].prober.deadline();
                    self.trace(|| format!("node {i} finds {peer} silent (deadline {d:?})"));
                    self.input(i, Input::Silent(peer))?
                }
                Probe::Alive(peer) => self.input(i, Input::Answered(peer))?,
            }
        }
        self.reschedule(i);
        Ok(())
    }

    fn check_leader_on_claim(&mut self, i: u32, claimant: u32) -> Result<(), String> {
        let now = self.now;
        let n = &self.nodes[i as usize];
        let Some((leader, _)) = n.election.leader().copied() else {
            return Ok(());
        };
        if leader == claimant || leader == i || !n.election.is_live(&leader, now) {
            return Ok(());
        }
        let claims = n.election.peer(&claimant).is_some_and(|p| {
            p.role.can_lead()
                && matches!(&p.follows, Some((l, _)) if *l == claimant)
                && n.election.is_live(&claimant, now)
        });
        if !claims || self.successor(i, leader) != Some(claimant) {
            return Ok(());
        }
        let p = self.nodes[i as usize].prober.verify(leader, now);
        self.run_probes(i, p.into_iter().collect())
    }

    fn check_own_leader(&mut self, i: u32, leader: u32) -> Result<(), String> {
        let now = self.now;
        let follows = matches!(self.nodes[i as usize].election.leader(), Some((l, _)) if *l == leader && *l != i);
        if !follows || self.successor(i, leader) != Some(i) {
            return Ok(());
        }
        let helpers = self.helpers(i, leader);
        let prober = &mut self.nodes[i as usize].prober;
        let probes = match prober.urge(&leader, now, move |_| helpers) {
            Some(probes) => probes,
            None => prober.verify(leader, now).into_iter().collect(),
        };
        self.run_probes(i, probes)
    }

    /// Whether every node that is up and not frozen follows `leader` at one
    /// epoch and holds every other such node live.
    fn agreed(&self, leader: u32, above: u64, all_live: bool) -> Option<u64> {
        let ups: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|i| self.nodes[*i as usize].up && !self.nodes[*i as usize].frozen)
            .collect();
        let mut epoch = None;
        for &i in &ups {
            let e = &self.nodes[i as usize].election;
            let (l, ep) = *e.leader()?;
            if l != leader || ep <= above || epoch.is_some_and(|x| x != ep) {
                return None;
            }
            epoch = Some(ep);
            if all_live && e.live_peers(self.now).count() < ups.len() - 1 {
                return None;
            }
        }
        epoch
    }

    /// Starts every node, waits for convergence, idles, freezes the leader
    /// and waits for its successor.
    pub fn run(p: Params) -> Result<Outcome, String> {
        let mut sim = Sim::new(p.clone());
        let mut last_start = sim.t0;
        for i in 0..p.nodes as u32 {
            last_start = sim.t0 + p.start_every * i;
            sim.at(last_start, Ev::Start(i));
        }
        let mut out = Outcome {
            nodes: p.nodes,
            ..Outcome::default()
        };
        let until = last_start + p.deadline;
        let done = sim.run_until(until, |s| {
            s.now >= last_start && s.agreed(0, 0, true).is_some()
        })?;
        if !done {
            // What was left, for whoever reads the run: who follows whom,
            // and the nodes that do not hold every other live.
            let mut leaders = BTreeMap::new();
            let mut short = Vec::new();
            for (i, n) in sim.nodes.iter().enumerate() {
                *leaders
                    .entry(format!("{:?}", n.election.leader()))
                    .or_insert(0) += 1;
                let live = n.election.live_peers(sim.now).count();
                if live < p.nodes - 1 {
                    short.push((i, live, n.election.peers().count()));
                }
            }
            eprintln!(
                "not converged: leaders {leaders:?}; nodes short of members (node, live, known): \
                 {:?}",
                &short[..short.len().min(20)]
            );
            out.events = sim.handled;
            return Ok(out);
        }
        out.convergence = Some(sim.now.saturating_duration_since(last_start));
        let epoch = sim.agreed(0, 0, true).unwrap_or(0);
        // Every node's first heartbeat after its start goes out one
        // `heartbeat` after it (it knew no members yet): let those pass.
        let settled = sim.now + p.timing.heartbeat + Duration::from_secs(1);
        sim.run_until(settled, |_| false)?;
        // Idle: count what goes out.
        let idle_start = sim.now;
        let before = (
            sim.counts.gossip_in,
            sim.counts.gossip_out,
            sim.counts.direct_out.iter().sum::<u64>(),
            sim.counts.direct_out[0],
            sim.counts.pulls,
        );
        sim.run_until(idle_start + p.idle, |_| false)?;
        let secs = p.idle.as_secs_f64();
        let n = p.nodes as f64;
        out.gossip_in_per_node_s = (sim.counts.gossip_in - before.0) as f64 / n / secs;
        out.gossip_out_per_node_s = (sim.counts.gossip_out - before.1) as f64 / n / secs;
        out.direct_out_per_node_s =
            (sim.counts.direct_out.iter().sum::<u64>() - before.2) as f64 / n / secs;
        out.leader_direct_out_s = (sim.counts.direct_out[0] - before.3) as f64 / secs;
        out.member_pulls_s = (sim.counts.pulls - before.4) as f64 / secs;
        // Stop the leader; wait for every other node to follow node 1.
        let frozen_at = sim.now;
        out.converged_epoch = epoch;
        out.fault_epoch = sim.max_epoch();
        let fault = match p.fault {
            Fault::Freeze => Ev::Freeze(0),
            Fault::Kill => Ev::Kill(0),
        };
        sim.at(frozen_at, fault);
        let succeeded = sim.run_until(frozen_at + p.deadline, |s| {
            s.agreed(1, epoch, false).is_some()
        })?;
        if succeeded {
            out.detection = Some(sim.now.saturating_duration_since(frozen_at));
        }
        out.max_epoch = sim.max_epoch();
        out.split_epochs = sim.epochs.values().filter(|l| l.len() > 1).count() as u64;
        out.leader_changes = sim.leader_changes;
        out.events = sim.handled;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_cluster_converges_and_replaces_a_failed_leader() {
        for seed in 0..4 {
            let mut p = Params::defaults(30, seed);
            p.idle = Duration::from_secs(10);
            p.fault = if seed % 2 == 0 {
                Fault::Freeze
            } else {
                Fault::Kill
            };
            let o = Sim::run(p).unwrap();
            assert!(o.convergence.is_some(), "seed {seed}: {o:?}");
            let d = o.detection.expect("a successor");
            assert!(d < Duration::from_secs(5), "seed {seed}: {o:?}");
            assert_eq!(o.split_epochs, 0, "seed {seed}: {o:?}");
            assert!(o.gossip_out_per_node_s > 0.0 && o.gossip_in_per_node_s > 0.0);
        }
    }

    /// The same seed, the same run: every figure equal.
    #[test]
    fn runs_are_deterministic() {
        let run = || {
            let mut p = Params::defaults(20, 7);
            p.idle = Duration::from_secs(5);
            p.loss = 0.1;
            format!("{:?}", Sim::run(p).unwrap())
        };
        assert_eq!(run(), run());
    }

    /// Runs `seeds` of `nodes` at 30 % loss, idle 20 s: each converges,
    /// takes no epoch while idle, and replaces its frozen leader.
    fn no_false_failover_at_30_percent_loss(nodes: usize, seeds: &[u64]) {
        no_false_failover(nodes, seeds, false);
    }

    /// The same, with direct messages in order on each link ([`Params::in_order`]).
    fn no_false_failover(nodes: usize, seeds: &[u64], in_order: bool) {
        for &seed in seeds {
            let mut p = Params::defaults(nodes, seed);
            p.idle = Duration::from_secs(20);
            p.loss = 0.3;
            p.in_order = in_order;
            let o = Sim::run(p).unwrap();
            assert!(
                o.convergence.is_some() && o.detection.is_some(),
                "seed {seed}: {o:?}"
            );
            assert_eq!(o.fault_epoch, o.converged_epoch, "seed {seed}: {o:?}");
        }
    }

    /// Seeds of `sim_scale --nodes 10 --loss 30 --in-order` in which the
    /// leader's successor, asked by a prober to probe the leader, checked
    /// it with probes of its own only: three probes over its one link to
    /// the leader, held up together behind a retransmission, and its claim
    /// deposed a healthy leader (66 of 4,000 seeds; with the last round
    /// through other members instead, 3). Deadlines of 1 s (cold), 300 ms,
    /// 3 s and 804 ms.
    #[test]
    fn a_successor_asked_to_probe_the_leader_confirms_through_other_members() {
        no_false_failover(10, &[123, 135, 271, 311], true);
    }

    /// The 3 seeds of 4,000 of `sim_scale --nodes 10 --loss 30 --in-order`
    /// in which a healthy leader's term still moved with probes over the
    /// connections only: with probes by datagram too (`--datagrams-ms 50`,
    /// the node's default) none did, in those 4,000 seeds or these.
    #[test]
    fn probe_datagrams_keep_a_leader_whose_links_stall() {
        const SEEDS: [u64; 3] = [147, 1251, 2725];
        let run = |seed, datagrams| {
            let mut p = Params::defaults(10, seed);
            p.idle = Duration::from_secs(20);
            p.loss = 0.3;
            p.in_order = true;
            p.datagrams = datagrams;
            Sim::run(p).unwrap()
        };
        for seed in SEEDS {
            let without = run(seed, None);
            assert_ne!(
                without.fault_epoch, without.converged_epoch,
                "seed {seed} found the fault"
            );
            let with = run(seed, Some(Duration::from_millis(50)));
            assert!(
                with.convergence.is_some() && with.detection.is_some(),
                "seed {seed}: {with:?}"
            );
            assert_eq!(
                with.fault_epoch, with.converged_epoch,
                "seed {seed}: {with:?}"
            );
        }
    }

    /// Probes by datagram first (`probe_connection_after_ms`): on a clean
    /// network the leader answers nothing over its connections while idle
    /// (it answered every probe both ways before) and a frozen leader is
    /// found as soon; through 30 % loss on links that stall (the seeds
    /// above) the leader still holds.
    #[test]
    fn probes_by_datagram_first_leave_the_connections_quiet_and_hold_through_loss() {
        let run = |seed, loss, after: Option<u64>| {
            let mut p = Params::defaults(10, seed);
            p.idle = Duration::from_secs(20);
            p.loss = loss;
            p.in_order = loss > 0.0;
            p.datagrams = Some(Duration::from_millis(50));
            p.connection_after = after.map(Duration::from_millis);
            Sim::run(p).unwrap()
        };
        for seed in 0..3 {
            let both = run(seed, 0.0, None);
            let first = run(seed, 0.0, Some(100));
            assert!(both.leader_direct_out_s > 4.0, "seed {seed}: {both:?}");
            assert!(first.leader_direct_out_s < 1.0, "seed {seed}: {first:?}");
            let (d0, d1) = (both.detection.unwrap(), first.detection.unwrap());
            assert!(
                d1 <= d0 + Duration::from_millis(150),
                "seed {seed}: {d1:?} against {d0:?}"
            );
        }
        for seed in [147, 1251, 2725] {
            let with = run(seed, 0.3, Some(100));
            assert!(with.detection.is_some(), "seed {seed}: {with:?}");
            // Probes whose datagrams were lost for 100 ms went over the
            // connection, and the leader answered them there.
            assert!(with.leader_direct_out_s > 0.5, "seed {seed}: {with:?}");
            assert_eq!(
                with.fault_epoch, with.converged_epoch,
                "seed {seed}: {with:?}"
            );
        }
    }

    /// Seeds of `sim_scale --nodes 100 --loss 30` in which a prober that
    /// had just started watching the leader judged it silent at the 300 ms
    /// floor (one or two fast answers were all its deadline went by) and
    /// deposed it, with every node healthy: epochs 1 to 7 while idle.
    #[test]
    fn a_fresh_prober_on_a_lossy_network_does_not_depose_a_healthy_leader() {
        no_false_failover_at_30_percent_loss(100, &[16, 160, 234, 395]);
    }

    /// Seeds of `sim_scale --nodes 10 --loss 30` in which the leader's
    /// successor, asked by a prober to probe the leader, checked it for
    /// itself, lost both of its two probes past their deadlines (0.8 and
    /// 2.4 s) and claimed: a healthy leader deposed, epochs 1 to 7 while
    /// idle. A check now takes three attempts.
    #[test]
    fn a_check_on_a_lossy_network_does_not_depose_a_healthy_leader() {
        no_false_failover_at_30_percent_loss(10, &[42, 198, 274, 781]);
    }

    /// `sim_scale --nodes 10 --loss 30`, seed 26: a greeting held up by
    /// retransmissions at the start left two masters unaware of each other
    /// past the startup grace; both claimed epoch 1, each followed by some
    /// nodes, until the rightful one took an epoch above both. The
    /// election allows that (as for two sides of a partition); what it
    /// must never do is have one node follow two leaders at one epoch.
    #[test]
    fn two_claimants_unaware_of_each_other_may_share_an_epoch_but_no_node_follows_both() {
        let mut p = Params::defaults(10, 26);
        p.idle = Duration::from_secs(20);
        p.loss = 0.3;
        let o = Sim::run(p).unwrap();
        assert!(o.convergence.is_some() && o.detection.is_some(), "{o:?}");
        assert!(
            o.split_epochs >= 1,
            "the seed no longer splits an epoch: {o:?}"
        );
    }

    /// Lossy links (10 %): no node follows two leaders at one epoch
    /// (checked at every change), none shared by two claimants either,
    /// convergence and a successor.
    #[test]
    fn lossy_links_keep_the_contract() {
        for seed in 0..3 {
            let mut p = Params::defaults(25, 100 + seed);
            p.idle = Duration::from_secs(20);
            p.loss = 0.1;
            let o = Sim::run(p).unwrap();
            assert!(
                o.convergence.is_some() && o.detection.is_some(),
                "seed {seed}: {o:?}"
            );
            assert_eq!(o.split_epochs, 0, "seed {seed}: {o:?}");
        }
    }
}
