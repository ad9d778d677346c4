//! The holder as a synchronous state machine: requests, IPFS answers and
//! the time in; replies, IPFS calls and disk writes out. The shell
//! ([`super`]) runs the calls on a real IPFS; the simulator runs them on a
//! model of one, through the same core.
//!
//! What it guarantees (the shell must carry out [`Effect::SaveFence`]
//! before it sends the [`Effect::Reply`] that follows it):
//! * Orders are taken only from the leader this node follows, at that
//!   leader's epoch, never below the highest epoch seen (kept on disk), and
//!   never on a leecher. Within one leadership a batch at or below the last
//!   one taken is ignored (a late duplicate cannot undo a newer order), and
//!   an order for what is already so is a no-op.
//! * An item already pinned on this IPFS before the cluster asked (the
//!   user's own pin: the shell checks `pin/ls` before `pin/add`) is
//!   reported pinned but never owned. An unpin call is made only for an
//!   item the cluster *claimed* (recorded as its own before `pin/add`);
//!   an unpin of anything else (the user's pin, a pin still queued, a pin
//!   that failed before its claim) just marks it absent. A pin of an item
//!   already claimed skips the `pin/ls` check: what IPFS has is ours.
//! * At most `concurrency` IPFS calls run at once; the rest wait, queued.
//! * Every state change gets a version; the leader asks for the changes
//!   after the last version it saw ([`HolderRequest::States`]), so a new
//!   leader rebuilds the picture from scratch and a running one cheaply.
//! * `Pinned` is what this IPFS says: an item is marked so when `pin/add`
//!   succeeded, and `pin/ls` is checked at start and every `reconcile` so a
//!   pin lost under us is reported `Absent` (and re-ordered by the leader).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::role::Role;
use crate::wire::{HeldState, HolderOrder, HolderRequest, HolderResponse, IpfsInfo, MAX_STATES};

/// Tombstones (items unpinned) kept for leaders that follow changes; a
/// leader further behind starts from scratch.
pub const MAX_TOMBSTONES: usize = 16 * 1024;
/// How soon a failed `pin/ls` is tried again.
const LIST_RETRY: Duration = Duration::from_secs(5);

/// What the core needs of the holder's settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub role: Role,
    /// IPFS calls at once.
    pub concurrency: usize,
    /// How often `pin/ls` is checked against what is held.
    pub reconcile: Duration,
    /// How long a claim made before a restart outlives `pin/ls` not
    /// showing it: the previous run's `pin/add` may still finish (IPFS is
    /// another process), at most its deadline later.
    pub restart_grace: Duration,
}

#[derive(Debug)]
pub enum Input {
    /// A request from `from` (a peer ID, or this node's own keeper);
    /// `leader` is the leader this node follows now, with its epoch.
    Request {
        from: String,
        req: HolderRequest,
        leader: Option<(String, u64)>,
    },
    /// A call ended; for a pin, `Ok(true)` means the item was already the
    /// user's pin, and `claimed` whether it is recorded as the cluster's
    /// after the call (it got as far as `pin/add` and, if that failed, the
    /// pin may be there all the same).
    Done {
        cid: String,
        pin: bool,
        result: Result<bool, String>,
        claimed: bool,
    },
    /// `pin/ls` as of version `at`.
    Listed {
        at: u64,
        pinned: Result<HashSet<String>, String>,
    },
    /// Whether an IPFS is there to call.
    Ipfs {
        ready: bool,
    },
    /// This node's replica holds removals of these items and is about to
    /// collect them: unpin them as an order would (the leader may no
    /// longer know them to order it).
    Removed {
        cids: Vec<String>,
    },
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Store the highest epoch taken orders from, before the reply.
    SaveFence(u64),
    /// The answer to the request just stepped (exactly one per request).
    Reply(HolderResponse),
    /// Pin `cid`; answer with [`Input::Done`]. Unless `claimed`, check
    /// `pin/ls` first (pinned already: the user's, answer `Ok(true)` and
    /// touch nothing), then store the item as held *before* `pin/add`, so
    /// a crash in between cannot make the cluster's pin look like the
    /// user's. `claimed`: the item is the cluster's already, `pin/add` it.
    Pin { cid: String, claimed: bool },
    /// Unpin `cid` (`pin/rm`; "not pinned" is success); answer with
    /// [`Input::Done`]. Only ever for an item the cluster claimed.
    Unpin { cid: String },
    /// List this IPFS's pins; answer with [`Input::Listed`] at `at`.
    List { at: u64 },
    /// Dial these IPFS daemons (best effort, nothing answers).
    Connect(Vec<IpfsInfo>),
    /// The held set changed: store it (not fatal if it fails: the leader's
    /// picture comes from `pin/ls` too).
    Store {
        add: Vec<String>,
        remove: Vec<String>,
    },
}

#[derive(Debug)]
struct Item {
    state: HeldState,
    version: u64,
    /// What the last order asked.
    want_pin: bool,
    running: bool,
    /// The cluster's own pin is on this IPFS: a pin order for it needs
    /// no call.
    held: bool,
    /// Recorded as the cluster's (in the held set): it may be on IPFS as
    /// ours, so an unpin calls `pin/rm` and a pin skips the `pin/ls` check.
    claimed: bool,
    /// Claimed before the restart, and neither seen on IPFS nor called
    /// for since.
    inherited: bool,
}

/// Items a holder has in each state (`GET /v1/status`, `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldCounts {
    pub queued: u64,
    pub pinning: u64,
    pub pinned: u64,
    pub failed: u64,
    pub unpinning: u64,
}

fn state_index(s: &HeldState) -> usize {
    match s {
        HeldState::Queued => 0,
        HeldState::Pinning => 1,
        HeldState::Pinned => 2,
        HeldState::Failed(_) => 3,
        HeldState::Unpinning => 4,
        HeldState::Absent => 5,
    }
}

pub struct Core {
    limits: Limits,
    /// Changes between sessions (restarts) are not comparable.
    session: u64,
    version: u64,
    items: HashMap<String, Item>,
    /// version → cid, the latest version of each item only.
    by_version: BTreeMap<u64, String>,
    tombstones: usize,
    /// Items per state, as [`HeldCounts`] orders them.
    counts: [u64; 6],
    /// Cursors below this were pruned: their leader starts from scratch.
    floor: u64,
    max_epoch: u64,
    /// The last batch taken: leader, epoch, number.
    last_batch: (String, u64, u64),
    queue: VecDeque<String>,
    running: usize,
    ipfs: bool,
    /// Whether `pin/ls` is under way (asked when), and when it is next due.
    listing: bool,
    list_asked: Instant,
    next_list: Instant,
    /// Claims from before the restart are kept until a `pin/ls` asked
    /// after this.
    inherited_until: Instant,
    /// Held-set changes not yet stored.
    add: Vec<String>,
    remove: Vec<String>,
}

impl Core {
    /// A holder that held `held` (from disk) and took orders up to
    /// `max_epoch`; `session` must differ from any earlier run's.
    pub fn new(
        limits: Limits,
        held: impl IntoIterator<Item = String>,
        max_epoch: u64,
        session: u64,
        now: Instant,
    ) -> Core {
        let mut h = Core {
            limits,
            session,
            version: 0,
            items: HashMap::new(),
            by_version: BTreeMap::new(),
            tombstones: 0,
            counts: [0; 6],
            floor: 0,
            max_epoch,
            last_batch: (String::new(), max_epoch, 0),
            queue: VecDeque::new(),
            running: 0,
            ipfs: false,
            listing: false,
            list_asked: now,
            next_list: now,
            inherited_until: now + limits.restart_grace,
            add: Vec::new(),
            remove: Vec::new(),
        };
        // Held before the restart: pinned unless `pin/ls` says otherwise.
        for cid in held {
            h.set(&cid, HeldState::Pinned, true);
            if let Some(i) = h.items.get_mut(&cid) {
                i.held = true;
                i.claimed = true;
                i.inherited = true;
            }
        }
        h
    }

    /// This run's session and the version of its newest change: what a
    /// keeper's [`HolderRequest::States`] would read up to. Heartbeats
    /// carry it, so the leader asks as soon as it moves.
    pub fn position(&self) -> (u64, u64) {
        (self.session, self.version)
    }

    /// How many items are in each state here.
    pub fn counts(&self) -> HeldCounts {
        let [queued, pinning, pinned, failed, unpinning, _absent] = self.counts;
        HeldCounts {
            queued,
            pinning,
            pinned,
            failed,
            unpinning,
        }
    }

    pub fn step(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Request { from, req, leader } => self.request(&from, req, leader, &mut fx),
            Input::Done {
                cid,
                pin,
                result,
                claimed,
            } => self.done(cid, pin, result, claimed),
            Input::Listed { at, pinned } => self.listed(at, pinned, now),
            Input::Ipfs { ready } => self.ipfs = ready,
            Input::Removed { cids } => {
                for cid in cids {
                    self.take(HolderOrder { cid, pin: false });
                }
            }
            Input::Tick => {}
        }
        if !self.add.is_empty() || !self.remove.is_empty() {
            fx.push(Effect::Store {
                add: std::mem::take(&mut self.add),
                remove: std::mem::take(&mut self.remove),
            });
        }
        self.pump(&mut fx);
        if self.ipfs && !self.listing && now >= self.next_list {
            self.listing = true;
            self.list_asked = now;
            fx.push(Effect::List { at: self.version });
        }
        fx
    }

    /// Records a new state for `cid` under a new version.
    fn set(&mut self, cid: &str, state: HeldState, want_pin: bool) {
        self.version += 1;
        let version = self.version;
        let was_tomb = match self.items.get_mut(cid) {
            Some(item) => {
                let was = item.state == HeldState::Absent;
                self.counts[state_index(&item.state)] -= 1;
                self.by_version.remove(&item.version);
                item.state = state.clone();
                item.version = version;
                item.want_pin = want_pin;
                was
            }
            None => {
                self.items.insert(
                    cid.to_owned(),
                    Item {
                        state: state.clone(),
                        version,
                        want_pin,
                        running: false,
                        held: false,
                        claimed: false,
                        inherited: false,
                    },
                );
                false
            }
        };
        self.counts[state_index(&state)] += 1;
        self.by_version.insert(version, cid.to_owned());
        match (was_tomb, state == HeldState::Absent) {
            (false, true) => self.tombstones += 1,
            (true, false) => self.tombstones -= 1,
            _ => {}
        }
        if self.tombstones > MAX_TOMBSTONES {
            self.prune();
        }
    }

    /// Forgets the older half of the tombstones.
    fn prune(&mut self) {
        let target = MAX_TOMBSTONES / 2;
        let old: Vec<(u64, String)> = self
            .by_version
            .iter()
            .filter(|(_, cid)| {
                self.items
                    .get(*cid)
                    .is_some_and(|i| i.state == HeldState::Absent && !i.running && !i.want_pin)
            })
            .take(self.tombstones - target)
            .map(|(v, c)| (*v, c.clone()))
            .collect();
        for (v, cid) in old {
            self.by_version.remove(&v);
            if let Some(item) = self.items.remove(&cid) {
                self.counts[state_index(&item.state)] -= 1;
            }
            self.tombstones -= 1;
            self.floor = self.floor.max(v);
        }
    }

    fn request(
        &mut self,
        from: &str,
        req: HolderRequest,
        leader: Option<(String, u64)>,
        fx: &mut Vec<Effect>,
    ) {
        let reply = match req {
            HolderRequest::Orders {
                epoch,
                seq,
                orders,
                providers,
            } => match self.admit(from, epoch, seq, leader) {
                Err(reason) => HolderResponse::Refused { reason },
                Ok(fresh) => {
                    if epoch > self.max_epoch {
                        self.max_epoch = epoch;
                        fx.push(Effect::SaveFence(epoch));
                    }
                    if fresh {
                        self.last_batch = (from.to_owned(), epoch, seq);
                        for order in orders {
                            self.take(order);
                        }
                        if self.ipfs && !providers.is_empty() {
                            fx.push(Effect::Connect(providers));
                        }
                    }
                    HolderResponse::Taken
                }
            },
            HolderRequest::States { session, cursor } => self.states(session, cursor),
            HolderRequest::Statuses { .. } => HolderResponse::Refused {
                reason: "ask the leader".into(),
            },
        };
        fx.push(Effect::Reply(reply));
    }

    /// Whether a batch may be taken: `Ok(false)` for one already taken.
    fn admit(
        &self,
        from: &str,
        epoch: u64,
        seq: u64,
        leader: Option<(String, u64)>,
    ) -> Result<bool, String> {
        if self.limits.role == Role::Leecher {
            return Err("read-only role: leechers hold no cluster pins".into());
        }
        let Some((leader, leader_epoch)) = leader else {
            return Err("this node follows no leader at the moment".into());
        };
        if from != leader {
            return Err(format!("{from} is not the leader this node follows"));
        }
        if epoch != leader_epoch || epoch < self.max_epoch {
            debug!(%from, epoch, leader_epoch, "holder: stale orders refused");
            return Err(format!(
                "epoch {epoch} is not the followed leader's ({leader_epoch}) or is below {} seen",
                self.max_epoch
            ));
        }
        let (last_from, last_epoch, last_seq) = &self.last_batch;
        Ok(!(last_from == from && *last_epoch == epoch && seq <= *last_seq))
    }

    fn take(&mut self, order: HolderOrder) {
        let HolderOrder { cid, pin } = order;
        let (state, running, held, claimed) = match self.items.get_mut(&cid) {
            Some(i) => {
                i.want_pin = pin;
                (i.state.clone(), i.running, i.held, i.claimed)
            }
            None if !pin => return,
            None => (HeldState::Absent, false, false, false),
        };
        if running {
            // Reconsidered when the call in progress ends.
            return;
        }
        match (pin, state) {
            (true, HeldState::Pinned | HeldState::Queued) => {}
            // An unpin still queued, and our pin is in place: it stays,
            // and nothing is called.
            (true, _) if held => self.set(&cid, HeldState::Pinned, true),
            (false, HeldState::Absent | HeldState::Unpinning) => {}
            // Nothing of ours on IPFS (the user's pin, a pin still queued,
            // one that failed before its claim): nothing to call.
            (false, _) if !claimed => self.set(&cid, HeldState::Absent, false),
            (true, _) => {
                self.set(&cid, HeldState::Queued, true);
                self.queue.push_back(cid);
            }
            (false, _) => {
                self.set(&cid, HeldState::Unpinning, false);
                self.queue.push_back(cid);
            }
        }
    }

    /// Session 0 (never a real one) asks for everything from scratch.
    pub fn states(&self, session: u64, cursor: u64) -> HolderResponse {
        let reset = session != self.session || cursor < self.floor;
        let from = if reset { 0 } else { cursor };
        let mut items = Vec::new();
        let mut last = from;
        let mut more = false;
        for (v, cid) in self.by_version.range(from + 1..) {
            if items.len() == MAX_STATES {
                more = true;
                break;
            }
            last = *v;
            let Some(item) = self.items.get(cid) else {
                continue;
            };
            // From scratch, what is absent goes without saying.
            if from == 0 && item.state == HeldState::Absent {
                continue;
            }
            items.push((cid.clone(), item.state.clone()));
        }
        if !more {
            last = self.version.max(last);
        }
        HolderResponse::States {
            session: self.session,
            cursor: last,
            reset,
            more,
            items,
        }
    }

    /// Starts queued calls while there is room and an IPFS to call.
    fn pump(&mut self, fx: &mut Vec<Effect>) {
        while self.ipfs && self.running < self.limits.concurrency {
            let Some(cid) = self.queue.pop_front() else {
                return;
            };
            let Some(item) = self.items.get(&cid) else {
                continue;
            };
            let (pin, claimed) = (item.want_pin, item.claimed);
            let done = match &item.state {
                HeldState::Pinned => pin,
                HeldState::Absent => !pin,
                _ => false,
            };
            if item.running || done {
                continue;
            }
            let state = if pin {
                HeldState::Pinning
            } else {
                HeldState::Unpinning
            };
            self.set(&cid, state, pin);
            if let Some(i) = self.items.get_mut(&cid) {
                i.running = true;
            }
            self.running += 1;
            fx.push(if pin {
                Effect::Pin { cid, claimed }
            } else {
                Effect::Unpin { cid }
            });
        }
    }

    fn done(&mut self, cid: String, pin: bool, result: Result<bool, String>, claimed: bool) {
        let Some(item) = self.items.get_mut(&cid) else {
            return;
        };
        if !item.running {
            return;
        }
        item.running = false;
        item.inherited = false;
        self.running -= 1;
        let want_pin = item.want_pin;
        if pin && claimed != item.claimed {
            // The shell's word on the claim after the call.
            item.claimed = claimed;
            if claimed {
                self.add.push(cid.clone());
            } else {
                self.remove.push(cid.clone());
            }
        }
        let state = match (pin, result) {
            (true, Ok(true)) => {
                info!(%cid, "holder: already pinned by the user; reported, never unpinned");
                HeldState::Pinned
            }
            (true, Ok(false)) => {
                item.held = true;
                HeldState::Pinned
            }
            (false, Ok(_)) => {
                item.held = false;
                item.claimed = false;
                self.remove.push(cid.clone());
                HeldState::Absent
            }
            (true, Err(e)) => {
                debug!(%cid, error = %e, "holder: pin failed");
                HeldState::Failed(e)
            }
            // Still pinned as far as we know; the leader orders it again.
            (false, Err(e)) => {
                debug!(%cid, error = %e, "holder: unpin failed");
                HeldState::Pinned
            }
        };
        self.set(&cid, state, want_pin);
        if want_pin != pin {
            // The order changed while the call ran.
            self.take(HolderOrder { cid, pin: want_pin });
        }
    }

    /// Items marked pinned that IPFS does not have (and that did not change
    /// since the listing began) are absent.
    fn listed(&mut self, at: u64, pinned: Result<HashSet<String>, String>, now: Instant) {
        self.listing = false;
        let pinned = match pinned {
            Ok(p) => p,
            Err(e) => {
                warn!("holder: pin/ls failed: {e}");
                self.next_list = now + LIST_RETRY;
                return;
            }
        };
        self.next_list = now + self.limits.reconcile;
        // Pinned as reported, or claimed after a failed pin: not on IPFS.
        let lost: BTreeSet<String> = self
            .items
            .iter()
            .filter(|(cid, i)| {
                (i.state == HeldState::Pinned || i.claimed)
                    && !i.running
                    && i.version <= at
                    && !pinned.contains(*cid)
            })
            .map(|(c, _)| c.clone())
            .collect();
        if !lost.is_empty() {
            info!(
                count = lost.len(),
                "holder: pins missing from IPFS, reported absent"
            );
        }
        // A claim from before the restart stays while the previous run's
        // `pin/add` may still finish: reported absent, still ours.
        let keep_inherited = self.list_asked < self.inherited_until;
        for cid in lost {
            let Some(i) = self.items.get_mut(&cid) else {
                continue;
            };
            if i.claimed && !(i.inherited && keep_inherited) {
                self.remove.push(cid.clone());
                i.claimed = false;
            }
            i.held = false;
            if i.state == HeldState::Pinned {
                self.set(&cid, HeldState::Absent, false);
            }
        }
        // What is ours and on IPFS is held: a claim reported absent whose
        // pin finished after all (the leader then sees it, and unpins it
        // if the cluster no longer wants it).
        let found: Vec<String> = self
            .items
            .iter()
            .filter(|(cid, i)| {
                i.claimed
                    && !i.running
                    && i.version <= at
                    && i.state == HeldState::Absent
                    && pinned.contains(*cid)
            })
            .map(|(c, _)| c.clone())
            .collect();
        for cid in found {
            let Some(i) = self.items.get_mut(&cid) else {
                continue;
            };
            (i.held, i.inherited) = (true, false);
            let want_pin = i.want_pin;
            self.set(&cid, HeldState::Pinned, want_pin);
        }
        for (cid, i) in self.items.iter_mut() {
            if i.inherited && pinned.contains(cid) {
                i.inherited = false;
            }
        }
    }
}

#[cfg(test)]
mod tests;
