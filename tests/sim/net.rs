//! The simulated cluster: nodes, network, faults, clients and the checks.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use ipfs_kit_p2p::election::{Action, Election, Input as Vote, Liveness, Report, Timing};
use ipfs_kit_p2p::pinset::actor::Progress;
use ipfs_kit_p2p::pinset::holder::core::{self as holder, Core as Holder};
use ipfs_kit_p2p::pinset::keeper::{self, Core as Keeper};
use ipfs_kit_p2p::pinset::model::{Entry, Op, PinSpec, Stamp, Vv};
use ipfs_kit_p2p::pinset::plan::Limits;
use ipfs_kit_p2p::pinset::replica::{
    Config, Effect, Input, Now, PageAnswer, Replica, WriteError, Written,
};
use ipfs_kit_p2p::pinset::sync::{self, Cursor};
use ipfs_kit_p2p::role::Role;
use ipfs_kit_p2p::view::{ClusterView, PeerView};
use ipfs_kit_p2p::wire::{HolderOrder, HolderRequest, HolderResponse, IpfsInfo};

use crate::store::MemStore;

/// SplitMix64: small, fast, and the same sequence on every platform forever.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

pub const NODES: usize = 5;
const CIDS: u64 = 10;
/// Simulated time of the fault phase, and the most the heal phase may take.
const RUN_MS: u64 = 20_000;
const HEAL_MS: u64 = 60_000;
const TICK_MS: u64 = 50;
/// The transport's timeout for a holder request.
const HOLDER_TIMEOUT_MS: u64 = 2_000;
/// How often a holder checks `pin/ls`.
const RECONCILE_MS: u64 = 5_000;
const BEAT_MS: u64 = 250;
const UNIX_BASE: u64 = 1_750_000_000_000;
/// Small pages, so anti-entropy sessions take several.
const PAGE_ENTRIES: usize = 3;

fn timing() -> Timing {
    Timing {
        peer_timeout: Duration::from_millis(1500),
        suspect_timeout: Duration::from_millis(500),
        startup_grace: Duration::from_millis(300),
        forget_after: Duration::from_secs(3600),
        heartbeat: Duration::from_millis(BEAT_MS),
        ..Timing::default()
    }
}

fn limits() -> Limits {
    Limits {
        grace: Duration::from_secs(1),
        retry_after: Duration::from_secs(1),
        min_free: 0,
    }
}

/// Every master's and worker's (simulated) IPFS is up.
fn ipfs_of(id: &str) -> IpfsInfo {
    IpfsInfo {
        ready: true,
        peer_id: format!("ipfs-{id}"),
        addrs: Vec::new(),
    }
}

fn config() -> Config {
    Config {
        write_copies: 2,
        write_timeout: Duration::from_secs(3),
        member_expiry: Duration::from_secs(3600),
        max_clock_ahead: Duration::from_secs(60),
        push_in_flight: 2,
        max_push: 4,
        max_queue: 32,
        pull_every: Duration::from_secs(5),
        request_timeout: Duration::from_secs(2),
        collect_every: Duration::from_millis(500),
        removal_horizon: Duration::from_secs(2),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Nodes in the bit mask on one side, the rest on the other.
    Partition(u32),
    /// The node's packets to everyone are dropped; theirs reach it.
    OneWay(usize),
    Isolate(usize),
    Heal,
    Pause(usize),
    Resume(usize),
    /// Volatile state lost, disk kept; `Restart` brings it back.
    Crash(usize),
    Restart(usize),
    /// The node's wall clock runs this many ms off.
    Skew(usize, i64),
    Loss(u64),
    Dup(u64),
    Write {
        node: usize,
        cid: u64,
        pin: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Scheduled {
    pub at_ms: u64,
    pub event: Event,
}

/// The events of one seed.
pub fn schedule(seed: u64) -> Vec<Scheduled> {
    let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(7));
    let mut out = Vec::new();
    let mut at = 0;
    while at < RUN_MS {
        at += 50 + rng.below(400);
        let node = rng.below(NODES as u64) as usize;
        let event = if rng.chance(70) {
            Event::Write {
                node,
                cid: rng.below(CIDS),
                pin: rng.chance(65),
            }
        } else {
            match rng.below(12) {
                0 => Event::Partition(1 + rng.below((1 << NODES) - 2) as u32),
                1 => Event::OneWay(node),
                2 => Event::Isolate(node),
                3 | 4 => Event::Heal,
                5 => Event::Pause(node),
                6 => Event::Resume(node),
                7 => Event::Crash(node),
                8 => Event::Restart(node),
                9 => Event::Skew(node, rng.below(6000) as i64 - 3000),
                10 => Event::Loss(rng.below(40)),
                _ => Event::Dup(rng.below(25)),
            }
        };
        out.push(Scheduled { at_ms: at, event });
    }
    out
}

/// A deliberately broken node, to show the checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    None,
    /// Answers pushes without storing them.
    ForgetPushes,
    /// The leader adds to each order batch an unpin of a CID no replica
    /// knows (the bug where a lagging leader unpinned what it had not read).
    UnpinUnknown,
    /// Every tick drops every tombstone a node holds, not only those every
    /// member has seen.
    CollectAll,
}

#[derive(Debug, Clone)]
enum Msg {
    Beat {
        report: Report<String>,
        digest: u64,
        /// The holder's position, as a master's or worker's heartbeat has it.
        held: Option<(u64, u64)>,
    },
    Push {
        batch: u64,
        entries: Vec<Entry>,
    },
    PushReply {
        batch: u64,
        result: Result<(), String>,
    },
    Pull {
        session: u64,
        vv: Option<Vv>,
        from: Cursor,
    },
    Page {
        session: u64,
        result: Result<PageAnswer, String>,
    },
    Write {
        token: u64,
        op: Op,
    },
    /// The leader's keeper to a holder, and the answer.
    Holder {
        id: u64,
        req: HolderRequest,
    },
    HolderReply {
        id: u64,
        result: Result<HolderResponse, String>,
    },
    /// A holder's call to its own IPFS: carried out when it arrives, even
    /// if the node crashed meanwhile (IPFS is another process); the answer
    /// then reaches the holder only if the same incarnation is up.
    IpfsCall {
        cid: String,
        pin: bool,
    },
    IpfsDone {
        cid: String,
        pin: bool,
        result: Result<bool, String>,
        claimed: bool,
    },
    IpfsList {
        at: u64,
    },
}

#[derive(Debug)]
struct Packet {
    from: usize,
    to: usize,
    /// Replies go only to the incarnation that asked.
    to_incarnation: Option<u64>,
    msg: Msg,
}

struct Up {
    replica: Replica,
    election: Election<String>,
    /// The real keeper core (it acts only while this node leads), run as
    /// its shell runs it: on an answer, a new view or new progress, or
    /// when its last round said the next is due.
    keeper: Keeper,
    keeper_due: Option<Instant>,
    kept: Option<(ClusterView, Progress)>,
    /// The real holder core (a leecher's refuses every order).
    holder: Holder,
    /// Its requests awaiting an answer: id → (peer, generation, orders,
    /// deadline). The transport's timeout answers those that get none.
    asking: BTreeMap<u64, (String, u64, Vec<HolderOrder>, u64)>,
    digests: BTreeMap<String, u64>,
    helds: BTreeMap<String, (u64, u64)>,
    view: ClusterView,
    /// Anti-entropy sessions served: a frozen copy of the store and the
    /// asker's vector.
    serving: BTreeMap<(usize, u64), (MemStore, Vv)>,
    /// Push answers owed: token → (peer, batch).
    owed: BTreeMap<u64, (usize, u64)>,
    next_token: u64,
    next_beat: u64,
}

struct Node {
    id: String,
    role: Role,
    store: MemStore,
    up: Option<Up>,
    paused: bool,
    skew: i64,
    /// Masters and workers it has heard from (its members: kept on disk).
    met: BTreeSet<usize>,
    /// Messages that reached the node while it was paused.
    held: Vec<Packet>,
    /// Its IPFS (kept on disk): pinned CIDs, `true` where the user pinned
    /// it before the cluster asked.
    ipfs: BTreeMap<String, bool>,
    /// The holder's held set (kept on disk).
    claimed: BTreeSet<String>,
    /// The highest epoch the holder took orders at (kept on disk).
    fence: u64,
}

#[derive(Debug, Clone)]
struct Acked {
    node: usize,
    cid: String,
    stamp: Stamp,
    copies: usize,
    at: u64,
}

/// What a passing seed did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub acked: u64,
    pub refused: u64,
    pub steps: u64,
    /// Simulated ms from the heal to one pinset everywhere.
    pub converged_ms: u64,
    /// And to every item on its holders as the pinset says.
    pub replicated_ms: u64,
    /// Tombstones dropped (collected, or pruned after a peer collected them).
    pub collected: u64,
    /// And to no tombstone left anywhere.
    pub collected_ms: u64,
}

pub struct Sim {
    trace: bool,
    mutation: Mutation,
    rng: Rng,
    base: Instant,
    t: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    packets: BTreeMap<u64, Packet>,
    nodes: Vec<Node>,
    cut: BTreeSet<(usize, usize)>,
    loss: u64,
    dup: u64,
    /// Writes asked: (node, token) → the change.
    asked: BTreeMap<(usize, u64), Op>,
    acked: Vec<Acked>,
    /// Every change ever stored anywhere: (author, seq) → (cid, stamp, pin).
    created: BTreeMap<(u64, u64), (String, Stamp, bool)>,
    /// (node, epoch) → the leader it followed, across its restarts.
    leaders: BTreeMap<(usize, u64), String>,
    outcome: Outcome,
}

thread_local! {
    /// Whether a third of the writes are index records (the regression
    /// seeds replay the pins-only workload they were found with).
    pub static INDEX_WORKLOAD: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// An index record's change for key number `c`: a metadata field set (its
/// value the time) or removed.
fn index_op(c: u64, set: bool, t: u64) -> Op {
    use ipfs_kit_p2p::index::{TAG_META, key, metadata};
    let cid = cid(c);
    if set {
        let (rest, value) = metadata::record(&cid, "f", &serde_json::json!(t));
        Op::Put {
            key: key(TAG_META, &rest),
            value,
        }
    } else {
        Op::Clear {
            key: key(TAG_META, &metadata::rest(&cid, "f")),
        }
    }
}

fn cid(n: u64) -> String {
    testkit::cid_of(n)
}

impl Sim {
    pub fn run(seed: u64, events: &[Scheduled], trace: bool) -> Result<Outcome, String> {
        Sim::run_with(seed, events, trace, Mutation::None)
    }

    pub fn run_with(
        seed: u64,
        events: &[Scheduled],
        trace: bool,
        mutation: Mutation,
    ) -> Result<Outcome, String> {
        let mut rng = Rng::new(seed);
        // Roles: at least two masters or workers; the rest drawn.
        let roles: Vec<Role> = (0..NODES)
            .map(|i| match (i, rng.below(3)) {
                (0, _) => Role::Master,
                (1, _) => Role::Worker,
                (_, 0) => Role::Master,
                (_, 1) => Role::Worker,
                _ => Role::Leecher,
            })
            .collect();
        let base = Instant::now();
        let nodes = roles
            .iter()
            .enumerate()
            .map(|(i, role)| Node {
                id: format!("n{i}"),
                role: *role,
                store: MemStore::new(rng.next() | 1),
                up: None,
                paused: false,
                skew: 0,
                met: BTreeSet::new(),
                held: Vec::new(),
                // The user pinned one CID of the workload on a third of
                // the nodes before the cluster asked for it.
                ipfs: (i % 3 == 0)
                    .then(|| (cid(i as u64 % CIDS), true))
                    .into_iter()
                    .collect(),
                claimed: BTreeSet::new(),
                fence: 0,
            })
            .collect();
        let mut sim = Sim {
            trace,
            mutation,
            rng,
            base,
            t: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            packets: BTreeMap::new(),
            nodes,
            cut: BTreeSet::new(),
            loss: 0,
            dup: 0,
            asked: BTreeMap::new(),
            acked: Vec::new(),
            created: BTreeMap::new(),
            leaders: BTreeMap::new(),
            outcome: Outcome::default(),
        };
        for i in 0..NODES {
            sim.start(i);
        }
        let mut events = events.iter().peekable();
        let mut next_tick = TICK_MS;
        while sim.t < RUN_MS {
            let next_event = events.peek().map_or(u64::MAX, |e| e.at_ms);
            let next_packet = sim.queue.peek().map_or(u64::MAX, |Reverse((at, _))| *at);
            let t = next_event.min(next_packet).min(next_tick).min(RUN_MS);
            sim.t = t;
            if t == next_tick {
                next_tick += TICK_MS;
                sim.tick_all()?;
            } else if t == next_event {
                let e = events.next().expect("peeked").event.clone();
                sim.event(e)?;
            } else if t == next_packet {
                sim.deliver_next()?;
            }
            sim.outcome.steps += 1;
        }
        sim.heal(next_tick)?;
        sim.outcome.acked = sim.acked.len() as u64;
        Ok(sim.outcome)
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            println!("{:>6} ms  {}", self.t, what());
        }
    }

    fn now(&self, i: usize) -> Now {
        Now {
            at: self.base + Duration::from_millis(self.t),
            unix_ms: (UNIX_BASE + self.t).saturating_add_signed(self.nodes[i].skew),
        }
    }

    fn start(&mut self, i: usize) {
        let now = self.now(i);
        let n = &mut self.nodes[i];
        n.store.incarnation += 1;
        let replica = Replica::new(n.id.clone(), n.role, config(), n.store.loaded(), now);
        let election = Election::new(
            n.id.clone(),
            n.role,
            n.store.incarnation,
            n.store.epoch,
            timing(),
            now.at,
        )
        .with_vote(n.store.voted.clone());
        let holder_limits = holder::Limits {
            role: n.role,
            concurrency: 4,
            reconcile: Duration::from_millis(RECONCILE_MS),
            // Longer than any call to IPFS takes here (at most 1 s).
            restart_grace: Duration::from_millis(2_000),
        };
        let mut holder = Holder::new(
            holder_limits,
            n.claimed.iter().cloned(),
            n.fence,
            n.store.incarnation,
            now.at,
        );
        let holder_fx = holder.step(holder::Input::Ipfs { ready: true }, now.at);
        n.up = Some(Up {
            replica,
            election,
            keeper: Keeper::new(limits()),
            keeper_due: None,
            kept: None,
            holder,
            asking: BTreeMap::new(),
            digests: BTreeMap::new(),
            helds: BTreeMap::new(),
            view: ClusterView::default(),
            serving: BTreeMap::new(),
            owed: BTreeMap::new(),
            next_token: 1,
            next_beat: self.t,
        });
        self.log(|| format!("n{i} starts"));
        self.holder_effects(i, holder_fx);
    }

    fn send(&mut self, from: usize, to: usize, to_incarnation: Option<u64>, msg: Msg) {
        if self.cut.contains(&(from, to)) || self.rng.chance(self.loss) {
            return;
        }
        let copies = if self.rng.chance(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = if self.rng.chance(5) {
                100 + self.rng.below(400)
            } else {
                1 + self.rng.below(20)
            };
            self.seq += 1;
            self.queue.push(Reverse((self.t + delay, self.seq)));
            self.packets.insert(
                self.seq,
                Packet {
                    from,
                    to,
                    to_incarnation,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn deliver_next(&mut self) -> Result<(), String> {
        let Some(Reverse((_, seq))) = self.queue.pop() else {
            return Ok(());
        };
        let p = self.packets.remove(&seq).expect("queued");
        self.deliver(p)
    }

    fn deliver(&mut self, mut p: Packet) -> Result<(), String> {
        if let Msg::IpfsCall { cid, pin, .. } = p.msg {
            let (result, claimed) = self.ipfs_call(p.to, &cid, pin);
            p.msg = Msg::IpfsDone {
                cid,
                pin,
                result,
                claimed,
            };
        }
        let node = &mut self.nodes[p.to];
        if node.up.is_none() {
            return Ok(());
        }
        if p.to_incarnation
            .is_some_and(|inc| inc != node.store.incarnation)
        {
            return Ok(());
        }
        if node.paused {
            node.held.push(p);
            return Ok(());
        }
        let i = p.to;
        let from_id = self.nodes[p.from].id.clone();
        let now = self.now(i);
        let inc = self.nodes[p.from].store.incarnation;
        match p.msg {
            Msg::Beat {
                report,
                digest,
                held,
            } => {
                if report.role.can_lead() {
                    self.nodes[i].met.insert(p.from);
                }
                let up = self.up(i);
                up.digests.insert(from_id.clone(), digest);
                let stamp = (report.incarnation, report.seq);
                let actions = up.election.handle(
                    Vote::Heartbeat {
                        from: from_id.clone(),
                        report,
                    },
                    now.at,
                );
                // The holder's position from the newest heartbeat only, as
                // the node takes it (a duplicate or reordered one is older).
                if up
                    .election
                    .peer(&from_id)
                    .is_some_and(|p| (p.incarnation, p.last_seq) == stamp)
                {
                    match held {
                        Some(h) => up.helds.insert(from_id, h),
                        None => up.helds.remove(&from_id),
                    };
                }
                self.election_actions(i, actions)?;
            }
            Msg::Push { batch, entries } => {
                let up = self.up(i);
                let token = up.next_token;
                up.next_token += 1;
                up.owed.insert(token, (p.from, batch));
                if self.mutation == Mutation::ForgetPushes {
                    self.up(i).owed.remove(&token);
                    self.send(
                        i,
                        p.from,
                        Some(inc),
                        Msg::PushReply {
                            batch,
                            result: Ok(()),
                        },
                    );
                    return Ok(());
                }
                let fx = self.up(i).replica.step(
                    Input::Push {
                        from: from_id,
                        token,
                        entries,
                    },
                    now,
                );
                self.effects(i, fx)?;
            }
            Msg::PushReply { batch, result } => {
                let fx = self.up(i).replica.step(
                    Input::Pushed {
                        to: from_id,
                        batch,
                        result,
                    },
                    now,
                );
                self.effects(i, fx)?;
            }
            Msg::Pull { session, vv, from } => {
                let result = self.serve(i, p.from, session, vv, from);
                self.log(|| {
                    format!(
                        "n{i} serves n{} session {session}: {:?}",
                        p.from,
                        result.as_ref().map(|a| (
                            a.entries
                                .iter()
                                .map(|e| (e.cid()[..12].to_owned(), e.id().1))
                                .collect::<Vec<_>>(),
                            a.next.clone(),
                            a.vv.as_ref().map(|v| v.count())
                        ))
                    )
                });
                self.send(i, p.from, Some(inc), Msg::Page { session, result });
            }
            Msg::Page { session, result } => {
                let fx = self.up(i).replica.step(
                    Input::Page {
                        from: from_id,
                        session,
                        result,
                    },
                    now,
                );
                self.effects(i, fx)?;
            }
            Msg::Write { token, op } => {
                let mut fx = self.up(i).replica.step(Input::Write { token, op }, now);
                fx.extend(self.up(i).replica.step(Input::Flush, now));
                self.effects(i, fx)?;
            }
            Msg::Holder { id, req } => {
                let asked = format!("{req:?}");
                let result = self.hold(i, p.from, req)?;
                self.log(|| format!("n{i} holder: n{} asked {asked}: {result:?}", p.from));
                self.send(i, p.from, Some(inc), Msg::HolderReply { id, result });
            }
            Msg::IpfsDone {
                cid,
                pin,
                result,
                claimed,
            } => {
                let input = holder::Input::Done {
                    cid,
                    pin,
                    result,
                    claimed,
                };
                let fx = self.up(i).holder.step(input, now.at);
                self.holder_effects(i, fx);
            }
            Msg::IpfsList { at } => {
                let pinned = self.nodes[i].ipfs.keys().cloned().collect();
                let input = holder::Input::Listed {
                    at,
                    pinned: Ok(pinned),
                };
                let fx = self.up(i).holder.step(input, now.at);
                self.holder_effects(i, fx);
            }
            Msg::IpfsCall { .. } => unreachable!("carried out on arrival"),
            Msg::HolderReply { id, result } => {
                let up = self.up(i);
                if let Some((peer, generation, orders, _)) = up.asking.remove(&id) {
                    up.keeper.answer(generation, peer, orders, result, now.at);
                    self.keep(i, true)?;
                }
            }
        }
        self.refresh_view(i)
    }

    /// The holder core takes the request (orders only from the leader it
    /// follows, at that leader's epoch, as the real shell feeds it); every
    /// unpin in a batch it takes is checked against the ordering leader's
    /// replica.
    fn hold(
        &mut self,
        i: usize,
        from: usize,
        req: HolderRequest,
    ) -> Result<Result<HolderResponse, String>, String> {
        let from_id = self.nodes[from].id.clone();
        let unpins: Vec<String> = match &req {
            HolderRequest::Orders { orders, .. } => orders
                .iter()
                .filter(|o| !o.pin)
                .map(|o| o.cid.clone())
                .collect(),
            _ => Vec::new(),
        };
        let at = self.now(i).at;
        let up = self.up(i);
        let leader = up.view.leader.clone();
        let fx = up.holder.step(
            holder::Input::Request {
                from: from_id,
                req,
                leader,
            },
            at,
        );
        let reply = self.holder_effects(i, fx);
        if reply == Some(HolderResponse::Taken) {
            for cid in &unpins {
                self.check_unpin(from, cid)?;
            }
        }
        Ok(reply.ok_or_else(|| "the holder did not answer".to_string()))
    }

    /// Carries out a holder core's effects; returns its reply, if any.
    fn holder_effects(&mut self, i: usize, fx: Vec<holder::Effect>) -> Option<HolderResponse> {
        let mut reply = None;
        for effect in fx {
            match effect {
                holder::Effect::SaveFence(epoch) => {
                    let n = &mut self.nodes[i];
                    n.fence = n.fence.max(epoch);
                }
                holder::Effect::Reply(r) => reply = Some(r),
                holder::Effect::Pin { cid, claimed } => {
                    // The shell's `pin/ls` check and its claim happen while
                    // the process runs; `pin/add` goes on without it.
                    let n = &mut self.nodes[i];
                    let msg = if claimed {
                        Msg::IpfsCall { cid, pin: true }
                    } else if n.ipfs.contains_key(&cid) {
                        let (pin, result, claimed) = (true, Ok(true), false);
                        Msg::IpfsDone {
                            cid,
                            pin,
                            result,
                            claimed,
                        }
                    } else {
                        n.claimed.insert(cid.clone());
                        Msg::IpfsCall { cid, pin: true }
                    };
                    self.local(i, msg);
                }
                holder::Effect::Unpin { cid } => {
                    self.local(i, Msg::IpfsCall { cid, pin: false });
                }
                holder::Effect::List { at } => self.local(i, Msg::IpfsList { at }),
                holder::Effect::Connect(_) => {}
                holder::Effect::Store { add, remove } => {
                    let n = &mut self.nodes[i];
                    n.claimed.extend(add);
                    for cid in remove {
                        n.claimed.remove(&cid);
                    }
                }
            }
        }
        reply
    }

    /// A call to the node's own IPFS, answered after a while (no loss,
    /// nothing cut), to this incarnation only.
    fn local(&mut self, i: usize, msg: Msg) {
        let delay = if self.rng.chance(5) {
            200 + self.rng.below(800)
        } else {
            1 + self.rng.below(50)
        };
        self.seq += 1;
        self.queue.push(Reverse((self.t + delay, self.seq)));
        let to_incarnation = Some(self.nodes[i].store.incarnation);
        let packet = Packet {
            from: i,
            to: i,
            to_incarnation,
            msg,
        };
        self.packets.insert(self.seq, packet);
    }

    /// What IPFS does for [`holder::Effect::Pin`] (of a claimed item:
    /// the check and the claim came first) and [`holder::Effect::Unpin`]
    /// (removes the pin, whoever made it, as `pin/rm` would). Returns the
    /// result and the claim.
    fn ipfs_call(&mut self, i: usize, cid: &str, pin: bool) -> (Result<bool, String>, bool) {
        let had = self.nodes[i].ipfs.get(cid).copied();
        self.log(|| format!("n{i} ipfs: pin {pin} {} had {had:?}", &cid[..12]));
        let n = &mut self.nodes[i];
        if pin {
            n.ipfs.entry(cid.to_owned()).or_insert(false);
            (Ok(false), true)
        } else {
            n.ipfs.remove(cid);
            (Ok(false), false)
        }
    }

    /// The contract's rule 5: a leader orders an unpin only for an item its
    /// replica knows: for a removal it holds, or to bring a pinned item
    /// down to its `replication_max`; never because it does not know it.
    /// (Its state may hold changes its vector does not name yet: those of
    /// a sync session under way.)
    fn check_unpin(&self, leader: usize, cid: &str) -> Result<(), String> {
        match self.nodes[leader].store.state.get(cid) {
            Some(_) => Ok(()),
            // Its removal since collected.
            None if self.removal_seen(leader, cid).is_some() => Ok(()),
            None => Err(format!(
                "n{leader} ordered an unpin of {cid}, which its replica does not know"
            )),
        }
    }

    /// Runs the node's keeper over its replica and sends what it asks.
    /// A keeper round, if `forced` (an answer came) or the shell would run
    /// one now.
    fn keep(&mut self, i: usize, forced: bool) -> Result<(), String> {
        let now = self.now(i);
        let node = &mut self.nodes[i];
        let Some(up) = node.up.as_mut() else {
            return Ok(());
        };
        let progress = Progress {
            digest: up.replica.digest(),
            synced: up
                .view
                .peers
                .iter()
                .map(|p| (p.id.clone(), up.replica.synced_at(&p.id)))
                .collect(),
            ..Progress::default()
        };
        let store = &node.store;
        let view = up.view.clone();
        let moved = up
            .kept
            .as_ref()
            .is_none_or(|(v, p)| *v != view || *p != progress);
        let due = up.keeper_due.is_some_and(|t| t <= now.at);
        if !(forced || moved || due) {
            return Ok(());
        }
        let fx = up
            .keeper
            .round(&view, &progress, now.at, || Ok(store.clone()));
        up.keeper_due = up.keeper.next_round(now.at);
        up.kept = Some((view, progress));
        for keeper::Effect::Request {
            generation,
            peer,
            req,
            orders,
        } in fx
        {
            let to = self.index_of(&peer);
            let id = self.seq;
            self.seq += 1;
            let deadline = self.t + HOLDER_TIMEOUT_MS;
            self.up(i)
                .asking
                .insert(id, (peer, generation, orders, deadline));
            let mut req = req;
            if self.mutation == Mutation::UnpinUnknown
                && let HolderRequest::Orders { orders: o, .. } = &mut req
            {
                o.push(HolderOrder {
                    cid: cid(CIDS + 1),
                    pin: false,
                });
            }
            let msg = Msg::Holder { id, req };
            self.send(i, to, None, msg);
        }
        Ok(())
    }

    fn up(&mut self, i: usize) -> &mut Up {
        self.nodes[i].up.as_mut().expect("node is up")
    }

    /// Serves one anti-entropy page from a frozen copy of the store.
    fn serve(
        &mut self,
        i: usize,
        asker: usize,
        session: u64,
        vv: Option<Vv>,
        from: Cursor,
    ) -> Result<PageAnswer, String> {
        let frozen = self.nodes[i].store.clone();
        if let Some(want) = &vv
            && sync::behind(&frozen, want)
        {
            return Ok(PageAnswer {
                entries: Vec::new(),
                next: None,
                vv: None,
                by_cid: false,
                behind: true,
                collected: None,
            });
        }
        let up = self.up(i);
        if let Some(want) = vv
            && up
                .serving
                .get(&(asker, session))
                .is_none_or(|(_, w)| *w != want)
        {
            up.serving.insert((asker, session), (frozen, want));
        }
        let Some((view, want)) = up.serving.get(&(asker, session)) else {
            return Err("no such session".into());
        };
        let p =
            sync::page(view, want, &from, PAGE_ENTRIES, 64 * 1024).map_err(|e| e.to_string())?;
        let first_by_cid = from == Cursor::default() && p.by_cid;
        let vv = (p.next.is_none() || first_by_cid).then(|| view.vv.clone());
        let collected = vv.as_ref().map(|_| view.collected.clone());
        if p.next.is_none() {
            up.serving.remove(&(asker, session));
        }
        Ok(PageAnswer {
            entries: p.entries,
            next: p.next,
            vv,
            by_cid: p.by_cid,
            behind: false,
            collected,
        })
    }

    fn effects(&mut self, i: usize, fx: Vec<Effect>) -> Result<(), String> {
        for e in fx {
            match e {
                Effect::Persist(p) => {
                    for e in &p.entries {
                        let known = (e.cid().to_owned(), e.stamp, !e.is_removal());
                        if let Some(prev) = self.created.insert(e.id(), known.clone())
                            && prev != known
                        {
                            return Err(format!(
                                "two different changes share the ID {:?}: {prev:?} and {known:?}",
                                e.id()
                            ));
                        }
                    }
                    self.log(|| {
                        format!(
                            "n{i} persists {:?} unindexed={} seen={:?} floor={:?}",
                            p.entries
                                .iter()
                                .map(|e| (e.cid()[..12].to_owned(), e.stamp.author % 1000, e.seq))
                                .collect::<Vec<_>>(),
                            p.unindexed,
                            p.seen
                                .0
                                .iter()
                                .map(|(a, r)| (a % 1000, r.as_slice().to_vec()))
                                .collect::<Vec<_>>(),
                            p.floor
                                .0
                                .iter()
                                .map(|(a, r)| (a % 1000, r.as_slice().to_vec()))
                                .collect::<Vec<_>>(),
                        )
                    });
                    self.nodes[i].store.apply(&p);
                    self.check_invariant(i)?;
                }
                Effect::Push { to, batch, entries } => {
                    let to = self.index_of(&to);
                    self.send(i, to, None, Msg::Push { batch, entries });
                }
                Effect::Pull {
                    to,
                    session,
                    vv,
                    from,
                } => {
                    let to = self.index_of(&to);
                    self.log(|| format!("n{i} asks n{to} session {session} from {from:?}"));
                    self.send(i, to, None, Msg::Pull { session, vv, from });
                }
                Effect::Reply { token, result } => {
                    if let Some((peer, batch)) = self.up(i).owed.remove(&token) {
                        let inc = self.nodes[peer].store.incarnation;
                        self.send(i, peer, Some(inc), Msg::PushReply { batch, result });
                    }
                }
                Effect::Written { token, result } => self.written(i, token, result)?,
                Effect::Confirm { at, upto } => {
                    self.nodes[i].store.confirmed.insert(at, upto);
                }
                Effect::Collect { upto, before } => {
                    let n = &mut self.nodes[i];
                    let was = n.store.dropped;
                    let kept = n.store.collect(&upto, before, &n.claimed);
                    let dropped = n.store.dropped - was;
                    self.log(|| format!("n{i} collects {dropped} removals, keeps {kept:?}"));
                    self.check_invariant(i)?;
                    if !kept.is_empty() {
                        let at = self.now(i).at;
                        let fx = self
                            .up(i)
                            .holder
                            .step(holder::Input::Removed { cids: kept }, at);
                        self.holder_effects(i, fx);
                    }
                }
                Effect::Prune {
                    from,
                    to,
                    keep,
                    seen,
                } => {
                    let dropped = self.nodes[i]
                        .store
                        .prune(&from, to.as_deref(), &keep, &seen);
                    self.log(|| {
                        format!("n{i} prunes {} in [{from:.12}, {to:.12?})", dropped.len())
                    });
                    // Only what a removal overtook.
                    for e in &dropped {
                        let overtaken = e.is_removal()
                            || self
                                .created
                                .values()
                                .any(|(c, stamp, pin)| c == e.cid() && !pin && *stamp > e.stamp);
                        if !overtaken {
                            return Err(format!(
                                "n{i} pruned {:?} of {}, which no removal overtook",
                                e.id(),
                                e.cid()
                            ));
                        }
                    }
                    self.check_invariant(i)?;
                }
            }
        }
        Ok(())
    }

    fn index_of(&self, id: &str) -> usize {
        id[1..].parse().expect("node IDs are nN")
    }

    fn written(
        &mut self,
        i: usize,
        token: u64,
        result: Result<Written, WriteError>,
    ) -> Result<(), String> {
        let op = self
            .asked
            .remove(&(i, token))
            .ok_or("answer to an unknown write")?;
        match result {
            Ok(w) => {
                // Never alone while it knows another master or worker.
                let need = (1 + self.nodes[i].met.len()).min(config().write_copies);
                if w.copies < need {
                    return Err(format!(
                        "n{i} acknowledged {op:?} with {} copies while it knew {} other masters \
                         or workers",
                        w.copies,
                        self.nodes[i].met.len()
                    ));
                }
                let cid = op.cid().to_owned();
                self.log(|| {
                    format!(
                        "n{i} acknowledged {op:?} at {:?} with {} copies",
                        w.stamp, w.copies
                    )
                });
                let a = Acked {
                    node: i,
                    cid,
                    stamp: w.stamp,
                    copies: w.copies,
                    at: self.t,
                };
                self.check_acked(&a, "when acknowledged")?;
                self.acked.push(a);
            }
            Err(e) => {
                self.log(|| format!("n{i} refused {op:?}: {e}"));
                self.outcome.refused += 1;
            }
        }
        Ok(())
    }

    /// An acknowledged change is held (or overtaken by a later one for its
    /// CID) by at least as many masters or workers as the answer said.
    fn check_acked(&self, a: &Acked, when: &str) -> Result<(), String> {
        let holders = self
            .nodes
            .iter()
            .filter(|n| n.role.can_lead())
            .filter(|n| self.holds(n, &a.cid, a.stamp))
            .count();
        if holders < a.copies.max(1) {
            return Err(format!(
                "acknowledged change lost {when}: {} at {:?} (n{} at {} ms, {} copies) is held by \
                 {holders} masters or workers",
                a.cid, a.stamp, a.node, a.at, a.copies
            ));
        }
        Ok(())
    }

    /// Every change a node's vector names is matched or overtaken in its
    /// state, or overtaken by a removal it has seen and collected: per CID,
    /// the state holds the latest change seen or later, or nothing when
    /// that is a removal.
    fn check_invariant(&self, i: usize) -> Result<(), String> {
        let s = &self.nodes[i].store;
        let mut latest: BTreeMap<&str, (Stamp, bool, (u64, u64))> = BTreeMap::new();
        for (author, ranges) in &s.vv.0 {
            for &(lo, hi) in ranges.as_slice() {
                for seq in lo..=hi {
                    let Some((cid, stamp, pin)) = self.created.get(&(*author, seq)) else {
                        return Err(format!(
                            "invariant: n{i} claims to have seen ({author}, {seq}), which no \
                             replica ever stored"
                        ));
                    };
                    let l = latest.entry(cid).or_insert((*stamp, *pin, (*author, seq)));
                    if *stamp > l.0 {
                        *l = (*stamp, *pin, (*author, seq));
                    }
                }
            }
        }
        for (cid, (stamp, pin, id)) in latest {
            let ok = match s.state.get(cid) {
                Some(e) => e.stamp >= stamp,
                // A pruned pin: overtaken by a removal (checked when pruned).
                None => !pin || s.pruned.contains(cid),
            };
            if !ok {
                return Err(format!(
                    "invariant: n{i} has seen {id:?} for {cid} at {stamp:?} (a pin: {pin}) \
                     but holds {:?}",
                    s.state.get(cid).map(|e| e.stamp)
                ));
            }
        }
        Ok(())
    }

    /// The latest removal of `cid` node `i` has seen, if any.
    fn removal_seen(&self, i: usize, cid: &str) -> Option<Stamp> {
        let vv = &self.nodes[i].store.vv;
        self.created
            .iter()
            .filter(|(id, (c, _, pin))| c == cid && !pin && vv.contains(**id))
            .map(|(_, (_, s, _))| *s)
            .max()
    }

    /// Whether `n` holds the change to `cid` stamped `stamp` or a later
    /// one (a collected removal counts, once seen).
    fn holds(&self, n: &Node, cid: &str, stamp: Stamp) -> bool {
        match n.store.state.get(cid) {
            Some(e) => e.stamp >= stamp,
            None => {
                let i = self.index_of(&n.id);
                self.removal_seen(i, cid).is_some_and(|s| s >= stamp)
            }
        }
    }

    fn election_actions(&mut self, i: usize, actions: Vec<Action<String>>) -> Result<(), String> {
        for a in actions {
            match a {
                Action::PersistEpoch(e) => self.nodes[i].store.epoch = e,
                Action::PersistVote(l, e) => self.nodes[i].store.voted = Some((l, e)),
                Action::Announce => self.beat(i),
                Action::ConfirmAlive(_) => {}
                // A node follows at most one leader per epoch while it runs,
                // never one below the highest epoch it saw (kept on disk).
                // Two sides of a partition may each have one: fencing is
                // per follower.
                // At most one leader per epoch on a node, across its
                // restarts too (the vote is kept on disk).
                Action::LeaderChanged(Some((l, e))) => {
                    self.log(|| format!("n{i} follows {l} at epoch {e}"));
                    if let Some(other) = self.leaders.insert((i, e), l.clone())
                        && other != l
                    {
                        return Err(format!(
                            "n{i} followed two leaders at epoch {e}: {other} and {l}"
                        ));
                    }
                }
                Action::LeaderChanged(None) => {}
            }
        }
        Ok(())
    }

    fn beat(&mut self, i: usize) {
        let at = self.now(i).at;
        let up = self.up(i);
        let report = up.election.next_report(at);
        let digest = up.replica.digest();
        let held = report.role.can_lead().then(|| up.holder.position());
        for to in 0..NODES {
            if to != i {
                self.send(
                    i,
                    to,
                    None,
                    Msg::Beat {
                        report: report.clone(),
                        digest,
                        held,
                    },
                );
            }
        }
    }

    /// Feeds the node's replica the view its election gives, if it changed.
    fn refresh_view(&mut self, i: usize) -> Result<(), String> {
        let now = self.now(i);
        let role = self.nodes[i].role;
        let me = self.nodes[i].id.clone();
        let my_ipfs = role.can_lead().then(|| ipfs_of(&me));
        let up = self.up(i);
        let e = &up.election;
        let v = ClusterView {
            me,
            role: Some(role),
            leader: e.leader().cloned(),
            peers: e
                .peers()
                .filter(|(id, _)| e.is_live(id, now.at))
                .map(|(id, p)| PeerView {
                    id: id.clone(),
                    role: p.role,
                    ipfs: p.role.can_lead().then(|| ipfs_of(id)),
                    disk_free: 1 << 40,
                    pinset: up.digests.get(id).copied(),
                    held: up.helds.get(id).copied(),
                })
                .collect(),
            left: e
                .peers()
                .filter(|(_, p)| matches!(p.liveness, Liveness::Left { .. }))
                .map(|(id, _)| id.clone())
                .collect(),
            my_ipfs,
            my_disk_free: 1 << 40,
            isolated: e.isolated(now.at),
        };
        let up = self.up(i);
        if v != up.view {
            up.view = v.clone();
            let fx = up.replica.step(Input::View(v), now);
            self.effects(i, fx)?;
        }
        Ok(())
    }

    fn tick_all(&mut self) -> Result<(), String> {
        for i in 0..NODES {
            if self.nodes[i].up.is_none() || self.nodes[i].paused {
                continue;
            }
            let now = self.now(i);
            let actions = self.up(i).election.tick(now.at);
            self.election_actions(i, actions)?;
            if self.up(i).next_beat <= self.t {
                self.up(i).next_beat = self.t + BEAT_MS;
                self.beat(i);
            }
            self.refresh_view(i)?;
            let fx = self.up(i).replica.step(Input::Tick, now);
            self.effects(i, fx)?;
            if self.mutation == Mutation::CollectAll {
                let n = &mut self.nodes[i];
                let mut all = Vv::default();
                for e in n.store.state.values().filter(|e| e.is_removal()) {
                    all.insert(e.id());
                }
                n.store.collect(&all, u64::MAX, &BTreeSet::new());
            }
            // Requests unanswered in time fail, as the transport's do.
            let t = self.t;
            let up = self.up(i);
            let late: Vec<u64> = up
                .asking
                .iter()
                .filter(|(_, (.., deadline))| *deadline <= t)
                .map(|(id, _)| *id)
                .collect();
            let timed_out = !late.is_empty();
            for id in late {
                let (peer, generation, orders, _) = up.asking.remove(&id).expect("listed");
                let timeout = Err("timeout".to_string());
                up.keeper.answer(generation, peer, orders, timeout, now.at);
            }
            let fx = up.holder.step(holder::Input::Tick, now.at);
            self.holder_effects(i, fx);
            self.keep(i, timed_out)?;
        }
        Ok(())
    }

    fn event(&mut self, e: Event) -> Result<(), String> {
        self.log(|| format!("event {e:?}"));
        match e {
            Event::Partition(mask) => {
                self.cut.clear();
                for a in 0..NODES {
                    for b in 0..NODES {
                        if (mask >> a & 1) != (mask >> b & 1) {
                            self.cut.insert((a, b));
                        }
                    }
                }
            }
            Event::OneWay(n) => {
                for b in (0..NODES).filter(|b| *b != n) {
                    self.cut.insert((n, b));
                }
            }
            Event::Isolate(n) => {
                for b in (0..NODES).filter(|b| *b != n) {
                    self.cut.insert((n, b));
                    self.cut.insert((b, n));
                }
            }
            Event::Heal => self.cut.clear(),
            Event::Pause(n) => self.nodes[n].paused = true,
            Event::Resume(n) => self.resume(n)?,
            Event::Crash(n) => {
                let node = &mut self.nodes[n];
                node.up = None;
                node.paused = false;
                node.held.clear();
                // Its writes in progress will never be answered.
                self.asked.retain(|(at, _), _| *at != n);
            }
            Event::Restart(n) => {
                if self.nodes[n].up.is_none() {
                    self.start(n);
                }
            }
            Event::Skew(n, ms) => self.nodes[n].skew = ms,
            Event::Loss(p) => self.loss = p,
            Event::Dup(p) => self.dup = p,
            Event::Write { node, cid: c, pin } => {
                if self.nodes[node].up.is_none() {
                    return Ok(());
                }
                // A third of the keys are index records (metadata fields),
                // written by masters (as the API allows): the same
                // replication, merge and collection as pins.
                if c % 3 == 0 && INDEX_WORKLOAD.get() && self.nodes[node].role == Role::Master {
                    return self.write(node, index_op(c, pin, self.t));
                }
                let cid = cid(c);
                let op = if pin {
                    Op::Pin(PinSpec {
                        cid,
                        name: format!("w{}", self.t),
                        replication_min: 1,
                        replication_max: 2,
                        added_unix_ms: UNIX_BASE + self.t,
                        allocation: None,
                        meta: Default::default(),
                        origins: Vec::new(),
                    })
                } else {
                    Op::Unpin { cid }
                };
                self.write(node, op)?;
            }
        }
        Ok(())
    }

    /// A client's write through `node`'s API (a paused node answers on resume).
    fn write(&mut self, node: usize, op: Op) -> Result<(), String> {
        let up = self.up(node);
        let token = up.next_token;
        up.next_token += 1;
        self.asked.insert((node, token), op.clone());
        let p = Packet {
            from: node,
            to: node,
            to_incarnation: Some(self.nodes[node].store.incarnation),
            msg: Msg::Write { token, op },
        };
        self.deliver(p)
    }

    fn resume(&mut self, n: usize) -> Result<(), String> {
        let node = &mut self.nodes[n];
        if !node.paused {
            return Ok(());
        }
        node.paused = false;
        for p in std::mem::take(&mut node.held) {
            self.deliver(p)?;
        }
        Ok(())
    }

    /// Ends every fault, then runs until every node holds the same pinset,
    /// and checks it holds every acknowledged change.
    fn heal(&mut self, mut next_tick: u64) -> Result<(), String> {
        self.log(|| "heal: faults end".into());
        self.cut.clear();
        self.loss = 0;
        self.dup = 0;
        for n in 0..NODES {
            self.nodes[n].skew = 0;
            self.resume(n)?;
            if self.nodes[n].up.is_none() {
                self.start(n);
            }
        }
        let healed = self.t;
        let deadline = healed + HEAL_MS;
        let mut checks = 0;
        loop {
            let next_packet = self.queue.peek().map_or(u64::MAX, |Reverse((at, _))| *at);
            let t = next_packet.min(next_tick);
            if t > deadline {
                self.dump();
                let states: Vec<usize> = self.nodes.iter().map(|n| n.store.state.len()).collect();
                return Err(format!(
                    "no convergence within {HEAL_MS} ms of the heal (pinset sizes {states:?})"
                ));
            }
            self.t = t;
            if t == next_tick {
                next_tick += TICK_MS;
                self.tick_all()?;
                checks += 1;
                if checks % 4 == 0 && self.converged() {
                    break;
                }
            } else {
                self.deliver_next()?;
            }
            self.outcome.steps += 1;
        }
        self.outcome.converged_ms = self.t - healed;
        // Then the leader's keeper brings every item to its copies: each
        // pinned CID held by at least `replication_min` (1) of the holders,
        // no removed one held by any.
        loop {
            let next_packet = self.queue.peek().map_or(u64::MAX, |Reverse((at, _))| *at);
            let t = next_packet.min(next_tick);
            if t > deadline {
                return Err(format!(
                    "holders not as the pinset says within {HEAL_MS} ms of the heal: {}",
                    self.unreplicated().unwrap_or_default()
                ));
            }
            self.t = t;
            if t == next_tick {
                next_tick += TICK_MS;
                self.tick_all()?;
                if self.unreplicated().is_none() {
                    break;
                }
            } else {
                self.deliver_next()?;
            }
            self.outcome.steps += 1;
        }
        self.outcome.replicated_ms = self.t - healed;
        // Then, quiet, every removal is seen by every member and collected
        // everywhere, and nothing comes back.
        loop {
            let next_packet = self.queue.peek().map_or(u64::MAX, |Reverse((at, _))| *at);
            let t = next_packet.min(next_tick);
            if t > deadline {
                self.dump();
                return Err(format!(
                    "tombstones not collected within {HEAL_MS} ms of the heal: {:?}",
                    self.nodes
                        .iter()
                        .map(|n| n.store.state.values().filter(|e| e.is_removal()).count())
                        .collect::<Vec<_>>()
                ));
            }
            self.t = t;
            if t == next_tick {
                next_tick += TICK_MS;
                self.tick_all()?;
                let left = self
                    .nodes
                    .iter()
                    .any(|n| n.store.state.values().any(|e| e.is_removal()));
                if !left {
                    break;
                }
            } else {
                self.deliver_next()?;
            }
            self.outcome.steps += 1;
        }
        self.outcome.collected_ms = self.t - healed;
        if !self.converged() {
            return Err("the pinsets differ once removals are collected".into());
        }
        if let Some(wrong) = self.unreplicated() {
            return Err(format!("once removals are collected: {wrong}"));
        }
        self.outcome.collected = self.nodes.iter().map(|n| n.store.dropped).sum();
        self.dump();
        for a in &self.acked {
            self.check_acked(a, "after the heal")?;
            for (i, n) in self.nodes.iter().enumerate() {
                if !self.holds(n, &a.cid, a.stamp) {
                    return Err(format!(
                        "acknowledged change undone: n{i} ends with {:?} for {} acknowledged at \
                         {:?}",
                        n.store.state.get(&a.cid).map(|e| e.stamp),
                        a.cid,
                        a.stamp
                    ));
                }
            }
        }
        Ok(())
    }

    fn dump(&self) {
        if !self.trace {
            return;
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let state: Vec<(String, u64, u64)> = n
                .store
                .state
                .iter()
                .map(|(c, e)| (c[..12].to_owned(), e.stamp.author % 1000, e.seq))
                .collect();
            println!(
                "n{i} {:?} state {state:?}\n   vv {:?}\n   floor {:?}\n   index {:?}",
                n.role,
                n.store
                    .vv
                    .0
                    .iter()
                    .map(|(a, r)| (a % 1000, r.as_slice().to_vec()))
                    .collect::<Vec<_>>(),
                n.store
                    .floor
                    .0
                    .iter()
                    .map(|(a, r)| (a % 1000, r.as_slice().to_vec()))
                    .collect::<Vec<_>>(),
                n.store
                    .index
                    .keys()
                    .map(|(a, q)| (a % 1000, *q))
                    .collect::<Vec<_>>(),
            );
        }
    }

    /// What the holders' IPFS lack or hold beyond the (converged) pinset,
    /// if anything; and every user pin is still pinned. (A user's pin of an
    /// item counts as a copy; a removed item may stay as a user's pin.)
    fn unreplicated(&self) -> Option<String> {
        let mut wrong = Vec::new();
        // Removed items too, their tombstones collected or not.
        let cids: BTreeSet<&String> = self.nodes[0]
            .store
            .state
            .keys()
            .chain(self.nodes.iter().flat_map(|n| n.ipfs.keys()))
            .collect();
        for cid in cids {
            let pinned = self.nodes[0]
                .store
                .state
                .get(cid)
                .is_some_and(|e| e.is_pin());
            let holders = self
                .nodes
                .iter()
                .filter(|n| n.role.can_lead() && n.ipfs.contains_key(cid))
                .count();
            let cluster_pins: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.ipfs.get(cid) == Some(&false))
                .map(|n| n.id.clone())
                .collect();
            if pinned && holders == 0 {
                wrong.push(format!("{} held nowhere", &cid[..12]));
            } else if !pinned && !cluster_pins.is_empty() {
                wrong.push(format!(
                    "{} removed but held by {cluster_pins:?}",
                    &cid[..12]
                ));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if i % 3 == 0 && n.ipfs.get(&cid(i as u64 % CIDS)) != Some(&true) {
                wrong.push(format!("n{i}'s user pin is gone"));
            }
        }
        (!wrong.is_empty()).then(|| wrong.join(", "))
    }

    /// One pinset everywhere: the same latest change for every CID, where a
    /// collected removal counts as the removal the node has seen.
    fn converged(&self) -> bool {
        let effective = |i: usize| -> BTreeMap<&str, Stamp> {
            let n = &self.nodes[i];
            let mut out: BTreeMap<&str, Stamp> = BTreeMap::new();
            for (id, (cid, stamp, pin)) in &self.created {
                if !pin && n.store.vv.contains(*id) {
                    let e = out.entry(cid.as_str()).or_insert(*stamp);
                    *e = (*e).max(*stamp);
                }
            }
            for (cid, e) in &n.store.state {
                out.insert(cid.as_str(), e.stamp);
            }
            out
        };
        let first = effective(0);
        (1..NODES).all(|i| effective(i) == first)
    }
}
