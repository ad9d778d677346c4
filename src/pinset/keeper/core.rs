//! The keeper's core: what the leader knows of the pinset and of each
//! holder, and the orders and polls that follow from it, as a synchronous
//! state machine (time, the view, the replica's progress and the holders'
//! answers in; requests out). The replica is read through [`ReadView`],
//! like raft-rs reads its log through `Storage`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::super::actor::Progress;
use super::super::model::Op;
use super::super::model::Vv;
use super::super::plan::{Candidate, Failure, Holding, Key, Limits, Order, Pinset, Want, plan};
use super::super::sync::{self, Cursor, ReadView};
use super::{FORGET_AFTER, MIN_PLAN_GAP, MISSES, POLL_BUSY, POLL_SELF, REPLAN, TICK, idle_poll};
use crate::role::Role;
use crate::view::ClusterView;
#[cfg(doc)]
use crate::view::PeerView;
use crate::wire::{
    HeldState, HolderOrder, HolderRequest, HolderResponse, IpfsInfo, MAX_ORDERS, MAX_PROVIDERS,
};

/// A read of the replica in CID order (the whole pinset) at most this often.
const FULL_READ_GAP: Duration = Duration::from_secs(5);

/// A request for one holder.
#[derive(Debug)]
pub enum Effect {
    /// Send `req` to `peer` (this node's own holder when it is this node)
    /// and hand the answer to [`Core::answer`] with `generation` and
    /// `orders`.
    Request {
        generation: u64,
        peer: String,
        req: HolderRequest,
        orders: Vec<HolderOrder>,
    },
}

/// One holder as the leader sees it.
#[derive(Default)]
struct Book {
    session: u64,
    cursor: u64,
    /// Has answered from scratch since this node leads (or since its
    /// session changed); until every live holder has, nothing is planned.
    synced: bool,
    /// Being rebuilt from scratch (pages of a reset answer).
    rebuilding: Option<(Holding, HashMap<Key, HeldState>)>,
    busy: bool,
    next_poll: Option<Instant>,
    misses: u32,
    /// The position its heartbeats last gave ([`PeerView::held`]), once
    /// seen while no request to it was in flight (a poll follows if it is
    /// past `cursor` and no miss's back-off holds).
    heard: Option<(u64, u64)>,
    /// This node's own holder (polled at [`POLL_SELF`] when idle: it is
    /// a message between threads, and its heartbeats do not reach here).
    local: bool,
    /// Orders not yet sent, and the CIDs of those not yet answered:
    /// state reports for these are older than the order and are skipped.
    outbox: Vec<(Key, bool)>,
    ordered: HashSet<Key>,
    /// States other than pinned, to show (what is held is in `holdings`).
    detail: HashMap<Key, HeldState>,
}

/// The keeper's state: a synchronous machine. The shell feeds it the
/// view, the replica's progress and the holders' answers, and sends the
/// requests it returns.
pub struct Core {
    limits: Limits,
    /// The epoch this node leads in, and a counter of leaderships (answers
    /// to an earlier one are dropped).
    leading: Option<u64>,
    generation: u64,
    seq: u64,
    /// The pinset: what the planner needs of each item, and the removals.
    pinset: Pinset,
    /// The changes read into `pinset`, and the replica's digest then.
    seen: Vv,
    read_digest: Option<u64>,
    /// When the pinset was last read whole (in CID order).
    full_read: Option<Instant>,
    /// When this node started leading.
    since: Option<Instant>,
    books: HashMap<String, Book>,
    holdings: HashMap<String, Holding>,
    /// Masters and workers seen while leading, with when they went down.
    peers: HashMap<String, Candidate>,
    dirty: bool,
    /// The earliest time a round has something to do (a poll due, the
    /// next full read of the replica), from the last round.
    wake: Option<Instant>,
    last_plan: Option<Instant>,
    /// How long the last plan took: planning walks the whole pinset, so
    /// on a large one the gaps between plans grow with it (see `round`).
    plan_cost: Duration,
}

/// Records what a holder says of one item.
fn note(
    holding: &mut Holding,
    detail: &mut HashMap<Key, HeldState>,
    cid: Key,
    state: HeldState,
    now: Instant,
) {
    holding.pinned.remove(&cid);
    holding.in_flight.remove(&cid);
    detail.remove(&cid);
    match state {
        HeldState::Pinned => {
            holding.failed.remove(&cid);
            holding.pinned.insert(cid);
        }
        HeldState::Queued | HeldState::Pinning => {
            holding.in_flight.insert(cid.clone());
            detail.insert(cid, state);
        }
        HeldState::Failed(_) => {
            let count = holding.failed.get(&cid).map_or(0, |f| f.count) + 1;
            holding
                .failed
                .insert(cid.clone(), Failure { at: now, count });
            detail.insert(cid, state);
        }
        HeldState::Unpinning => {
            detail.insert(cid, state);
        }
        HeldState::Absent => {}
    }
}

impl Core {
    pub fn new(limits: Limits) -> Core {
        Core {
            limits,
            leading: None,
            generation: 0,
            seq: 0,
            pinset: Pinset::default(),
            seen: Vv::default(),
            read_digest: None,
            full_read: None,
            since: None,
            books: HashMap::new(),
            holdings: HashMap::new(),
            peers: HashMap::new(),
            dirty: false,
            wake: None,
            last_plan: None,
            plan_cost: Duration::ZERO,
        }
    }

    /// The epoch this node leads in, if it does.
    pub fn leading(&self) -> Option<u64> {
        self.leading
    }

    /// When the next round is due if no answer or view change comes first
    /// (`None`: not leading, nothing to do until the view changes): soon
    /// while a plan waits, else at the next poll due, at least every
    /// [`REPLAN`] (grace periods run out with time). An idle leader of a
    /// large cluster thus runs a round a second, not ten.
    pub fn next_round(&self, now: Instant) -> Option<Instant> {
        self.leading?;
        let at = if self.dirty {
            now + TICK
        } else {
            self.wake.map_or(now + REPLAN, |t| t.min(now + REPLAN))
        };
        Some(at.max(now + TICK))
    }

    /// Each holder's state for `cid`; `None` when this node is not leading.
    pub fn status(&self, cid: &str) -> Option<Vec<(String, HeldState)>> {
        self.leading?;
        let mut out: Vec<(String, HeldState)> = self
            .books
            .iter()
            .filter_map(|(id, b)| {
                if self
                    .holdings
                    .get(id)
                    .is_some_and(|h| h.pinned.contains(cid))
                {
                    Some((id.clone(), HeldState::Pinned))
                } else {
                    b.detail.get(cid).map(|s| (id.clone(), s.clone()))
                }
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Some(out)
    }

    /// A holder's answer to the request [`Effect::Request`] sent it (or its
    /// failure); answers to an earlier leadership are dropped.
    pub fn answer(
        &mut self,
        generation: u64,
        peer: String,
        orders: Vec<HolderOrder>,
        result: Result<HolderResponse, String>,
        now: Instant,
    ) {
        if generation != self.generation {
            return;
        }
        let idle = idle_poll(self.peers.len());
        let Some(book) = self.books.get_mut(&peer) else {
            return;
        };
        let idle = if book.local { POLL_SELF } else { idle };
        let held = self.holdings.entry(peer.clone()).or_default();
        book.busy = false;
        let sent_orders = !orders.is_empty();
        match result {
            Ok(HolderResponse::Taken) => {
                for o in &orders {
                    book.ordered.remove(o.cid.as_str());
                }
                book.misses = 0;
                book.next_poll = Some(now);
            }
            Ok(HolderResponse::States {
                session,
                cursor,
                reset,
                more,
                items,
            }) => {
                book.misses = 0;
                if reset || session != book.session {
                    book.rebuilding = Some(Default::default());
                    book.synced = false;
                }
                book.session = session;
                book.cursor = cursor;
                let (holding, detail) = match book.rebuilding.as_mut() {
                    Some((h, d)) => (h, d),
                    None => (&mut *held, &mut book.detail),
                };
                for (cid, state) in items {
                    if !book.ordered.contains(cid.as_str()) {
                        note(holding, detail, intern(&self.pinset.pins, cid), state, now);
                    }
                }
                if !more && let Some((h, d)) = book.rebuilding.take() {
                    // Orders given meanwhile stand until the holder says otherwise.
                    let (old_h, old_d) = (
                        std::mem::replace(held, h),
                        std::mem::replace(&mut book.detail, d),
                    );
                    for cid in &book.ordered {
                        if old_h.in_flight.contains(cid) {
                            held.in_flight.insert(cid.clone());
                        }
                        if let Some(s) = old_d.get(cid) {
                            book.detail.insert(cid.clone(), s.clone());
                        }
                    }
                    book.synced = true;
                    debug!(%peer, pinned = held.pinned.len(), "keeper: holder synced");
                }
                let busy = !held.in_flight.is_empty()
                    || book.detail.values().any(|s| *s == HeldState::Unpinning);
                book.next_poll = Some(if more {
                    now
                } else if busy {
                    now + POLL_BUSY
                } else {
                    now + idle
                });
                self.dirty = true;
            }
            Ok(other) => {
                let reason = match other {
                    HolderResponse::Refused { reason } => reason,
                    other => format!("unexpected answer {other:?}"),
                };
                debug!(%peer, %reason, "keeper: holder refused");
                self.miss(&peer, &orders, now);
            }
            Err(e) => {
                debug!(%peer, error = %e, sent_orders, "keeper: holder unreachable");
                self.miss(&peer, &orders, now);
            }
        }
    }

    /// A request failed: orders in it are undone (planned again), the
    /// holder re-read from scratch when it answers again.
    fn miss(&mut self, peer: &str, orders: &[HolderOrder], now: Instant) {
        let Some(book) = self.books.get_mut(peer) else {
            return;
        };
        book.misses += 1;
        book.next_poll = Some(now + POLL_BUSY * 5 * book.misses.min(10));
        let held = self.holdings.entry(peer.to_owned()).or_default();
        for o in orders {
            book.ordered.remove(o.cid.as_str());
            held.in_flight.remove(o.cid.as_str());
            book.detail.remove(o.cid.as_str());
        }
        if !orders.is_empty() {
            book.synced = false;
            book.rebuilding = None;
        }
        self.dirty = true;
    }

    /// Leadership, the pinset copy, the holders, and a plan; returns the
    /// requests to send. `open` opens a read of the replica, used only when
    /// `progress` says it has changes this copy has not read.
    pub fn round<V: ReadView>(
        &mut self,
        v: &ClusterView,
        progress: &Progress,
        now: Instant,
        open: impl FnOnce() -> Result<V, String>,
    ) -> Vec<Effect> {
        let epoch = v
            .leader
            .as_ref()
            .filter(|(l, _)| *l == v.me)
            .map(|(_, e)| *e);
        if epoch != self.leading {
            self.generation += 1;
            self.books.clear();
            self.holdings.clear();
            self.peers.clear();
            self.pinset = Pinset::default();
            self.seen = Vv::default();
            self.read_digest = None;
            self.full_read = None;
            self.since = epoch.map(|_| now);
            self.seq = 0;
            self.last_plan = None;
            self.leading = epoch;
            if let Some(e) = epoch {
                info!(epoch = e, "keeper: keeping replicas");
            }
        }
        self.wake = None;
        if self.leading.is_none() {
            return Vec::new();
        }
        if let Err(e) = self.catch_up(progress, now, open) {
            warn!("keeper: {e}");
            return Vec::new();
        }
        self.see_peers(v, now);
        // Cut off, a leader gives no orders: it would only pile copies of
        // what the others hold onto itself, to be trimmed once it heals.
        if v.isolated {
            return Vec::new();
        }
        let ready = self
            .peers
            .values()
            .filter(|c| c.live)
            .all(|c| self.books.get(&c.id).is_some_and(|b| b.synced))
            && self.pinset_synced(v, progress, now);
        let since = self
            .last_plan
            .map_or(REPLAN, |t| now.saturating_duration_since(t));
        // At most ~10 % of a core on planning while things change, ~5 %
        // while they do not, however large the pinset.
        let (gap, replan) = (
            MIN_PLAN_GAP.max(self.plan_cost * 10),
            REPLAN.max(self.plan_cost * 20),
        );
        if ready && ((self.dirty && since >= gap) || since >= replan) {
            // Planning's own cost paces it: measured, not simulated.
            let started = Instant::now();
            self.plan(now);
            self.plan_cost = started.elapsed();
        }
        self.send(v, now)
    }

    /// Whether the replica has synced with every live master and worker
    /// since this node leads: planning before that could act on a pinset
    /// missing changes a peer holds.
    fn pinset_synced(&self, v: &ClusterView, p: &Progress, now: Instant) -> bool {
        let since = self.since.unwrap_or(now);
        v.peers
            .iter()
            .filter(|peer| peer.role.can_lead())
            .all(|peer| {
                peer.pinset == Some(p.digest)
                    || p.synced
                        .get(&peer.id)
                        .is_some_and(|t| t.is_some_and(|t| t >= since))
            })
    }

    /// Reads the changes of the replica this copy has not seen.
    fn catch_up<V: ReadView>(
        &mut self,
        progress: &Progress,
        now: Instant,
        open: impl FnOnce() -> Result<V, String>,
    ) -> Result<(), String> {
        let digest = progress.digest;
        if self.read_digest == Some(digest) {
            return Ok(());
        }
        let view = open()?;
        // A read in CID order walks the whole pinset: at most every 5 s
        // (the replica takes a large one in pages meanwhile).
        if sync::by_cid(&view, &self.seen) && !self.seen.0.is_empty() {
            if let Some(t) = self.full_read
                && now.saturating_duration_since(t) < FULL_READ_GAP
            {
                self.wake = Some(t + FULL_READ_GAP);
                return Ok(());
            }
            self.full_read = Some(now);
        }
        let mut from = Cursor::default();
        loop {
            let sync::Page { entries, next, .. } =
                sync::page(&view, &self.seen, &from, 4096, usize::MAX)
                    .map_err(|e| e.to_string())?;
            for e in entries {
                match e.op {
                    Op::Pin(spec) => {
                        let key = intern(&self.pinset.pins, spec.cid.clone());
                        self.pinset.removed.remove(&key);
                        self.pinset.pins.insert(key, Want::from(&spec));
                    }
                    Op::Unpin { cid } => {
                        let key = intern(&self.pinset.pins, cid);
                        self.pinset.pins.remove(&key);
                        self.pinset.removed.insert(key);
                    }
                    // Of the index records, the keeper follows peer lists
                    // (pins may be allocated to one).
                    Op::Put { key, .. } => self.list_member(&key, true),
                    Op::Clear { key } => self.list_member(&key, false),
                }
            }
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
        self.seen = view.vv().clone();
        self.read_digest = Some(digest);
        self.dirty = true;
        Ok(())
    }

    /// A peer list record changed (others are ignored).
    fn list_member(&mut self, key: &str, present: bool) {
        let Some((crate::index::TAG_PEERS, rest)) = crate::index::split(key) else {
            return;
        };
        let Some((list, peer)) = rest.split_once('/') else {
            return;
        };
        let lists = &mut self.pinset.lists;
        if present {
            lists
                .entry(list.to_owned())
                .or_default()
                .insert(peer.to_owned());
        } else if let Some(members) = lists.get_mut(list) {
            members.remove(peer);
            if members.is_empty() {
                lists.remove(list);
            }
        }
    }

    /// Masters and workers as candidates: live from the view (and while
    /// they answer), down since they left it.
    fn see_peers(&mut self, v: &ClusterView, now: Instant) {
        let mut live: HashMap<&str, (Role, bool, u64)> = v
            .peers
            .iter()
            .filter(|p| p.role.can_lead())
            .map(|p| {
                let ready = p.ipfs.as_ref().is_some_and(|i| i.ready);
                (p.id.as_str(), (p.role, ready, p.disk_free))
            })
            .collect();
        if let Some(role) = v.role.filter(|r| r.can_lead()) {
            let ready = v.my_ipfs.as_ref().is_some_and(|i| i.ready);
            live.insert(v.me.as_str(), (role, ready, v.my_disk_free));
        }
        for (id, (role, ready, disk)) in &live {
            // A holder whose IPFS is down holds nothing usable: it counts
            // as down (for the grace period) until its IPFS is back.
            let answering = *ready && self.books.get(*id).is_none_or(|b| b.misses < MISSES);
            let c = self
                .peers
                .entry(id.to_string())
                .or_insert_with(|| Candidate {
                    id: id.to_string(),
                    role: *role,
                    live: true,
                    down_since: None,
                    ipfs_ready: *ready,
                    disk_free: *disk,
                });
            c.role = *role;
            c.ipfs_ready = *ready;
            c.disk_free = *disk;
            if answering != c.live {
                self.dirty = true;
            }
            c.live = answering;
            c.down_since = if answering {
                None
            } else {
                c.down_since.or(Some(now))
            };
        }
        let forget = self.limits.grace + FORGET_AFTER;
        let mut gone = Vec::new();
        for c in self.peers.values_mut() {
            if live.contains_key(c.id.as_str()) {
                continue;
            }
            if c.live {
                c.live = false;
                c.down_since = Some(now);
                self.dirty = true;
            }
            if c.down_since
                .is_some_and(|t| now.saturating_duration_since(t) > forget)
            {
                gone.push(c.id.clone());
            }
        }
        for id in gone {
            self.peers.remove(&id);
            self.books.remove(&id);
            self.holdings.remove(&id);
        }
    }

    fn plan(&mut self, now: Instant) {
        self.dirty = false;
        self.last_plan = Some(now);
        let mut candidates: Vec<Candidate> = self.peers.values().cloned().collect();
        candidates.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let orders = plan(&self.pinset, &candidates, &self.holdings, &self.limits, now);
        if !orders.is_empty() {
            debug!(count = orders.len(), "keeper: orders");
        }
        for order in orders {
            let (peer, cid, pin) = match order {
                Order::Pin { peer, cid } => (peer, cid, true),
                Order::Unpin { peer, cid } => (peer, cid, false),
            };
            let held = self.holdings.entry(peer.clone()).or_default();
            let book = self.books.entry(peer).or_default();
            if pin {
                held.in_flight.insert(cid.clone());
                book.detail.insert(cid.clone(), HeldState::Queued);
            } else {
                held.pinned.remove(&cid);
                held.in_flight.remove(&cid);
                book.detail.insert(cid.clone(), HeldState::Unpinning);
            }
            book.ordered.insert(cid.clone());
            book.outbox.push((cid, pin));
        }
    }

    /// One request per idle live holder: orders first, else a poll when due.
    fn send(&mut self, v: &ClusterView, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        let mut ids: Vec<String> = self
            .peers
            .values()
            .filter(|c| live_in(v, &c.id))
            .map(|c| c.id.clone())
            .collect();
        // In a fixed order, so a simulated run replays exactly.
        ids.sort_unstable();
        for id in ids {
            let heard = if id == v.me {
                None
            } else {
                v.peer(&id).and_then(|p| p.held)
            };
            let book = self.books.entry(id.clone()).or_default();
            book.local = id == v.me;
            if book.busy {
                continue;
            }
            // Its heartbeat says it changed after what was read: ask now
            // (once per position heard; after a miss, the back-off holds).
            if let Some(h) = heard
                && book.heard != Some(h)
            {
                book.heard = Some(h);
                if book.misses == 0 && (h.0 != book.session || h.1 > book.cursor) {
                    book.next_poll = Some(now);
                }
            }
            let (req, orders) = if !book.outbox.is_empty() && book.synced {
                let n = book.outbox.len().min(MAX_ORDERS);
                let orders: Vec<HolderOrder> = book
                    .outbox
                    .drain(..n)
                    .map(|(cid, pin)| HolderOrder {
                        cid: cid.to_string(),
                        pin,
                    })
                    .collect();
                book.busy = true;
                self.seq += 1;
                let providers = self.providers(&orders, &id, v);
                let req = HolderRequest::Orders {
                    epoch: self.leading.unwrap_or_default(),
                    seq: self.seq,
                    orders: orders.clone(),
                    providers,
                };
                (req, orders)
            } else if book.next_poll.is_none_or(|t| now >= t) {
                book.busy = true;
                // Session 0 asks for everything from scratch.
                let continuing = book.synced || book.rebuilding.is_some();
                let req = HolderRequest::States {
                    session: if continuing { book.session } else { 0 },
                    cursor: if continuing { book.cursor } else { 0 },
                };
                (req, Vec::new())
            } else {
                if let Some(t) = book.next_poll {
                    self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
                }
                continue;
            };
            fx.push(Effect::Request {
                generation: self.generation,
                peer: id,
                req,
                orders,
            });
        }
        fx
    }

    /// Daemons that hold some of these items, to fetch them from.
    fn providers(&self, orders: &[HolderOrder], to: &str, v: &ClusterView) -> Vec<IpfsInfo> {
        let mut out: Vec<IpfsInfo> = Vec::new();
        for (id, held) in &self.holdings {
            if out.len() == MAX_PROVIDERS {
                break;
            }
            if id == to
                || !orders
                    .iter()
                    .any(|o| o.pin && held.pinned.contains(o.cid.as_str()))
            {
                continue;
            }
            let info = if *id == v.me {
                v.my_ipfs.clone()
            } else {
                v.peers
                    .iter()
                    .find(|p| p.id == *id)
                    .and_then(|p| p.ipfs.clone())
            };
            if let Some(info) = info.filter(|i| i.ready) {
                out.push(info);
            }
        }
        out
    }
}

/// The pinset's own copy of `cid` if it is in the pinset (one allocation
/// for every mention), else a new one.
fn intern(pins: &std::collections::BTreeMap<Key, Want>, cid: String) -> Key {
    match pins.get_key_value(cid.as_str()) {
        Some((k, _)) => k.clone(),
        None => Key::from(cid),
    }
}

fn live_in(v: &ClusterView, id: &str) -> bool {
    id == v.me || v.peers.iter().any(|p| p.id == id)
}
