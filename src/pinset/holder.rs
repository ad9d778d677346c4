//! The holder task: carries out the leader's pin and unpin orders on this
//! node's IPFS and keeps what the leader asks about, the state of every item
//! it was ordered to hold.
//!
//! * Orders are taken only from the leader this node follows, at that
//!   leader's epoch, never below the highest epoch seen (kept on disk), and
//!   never on a leecher. Within one leadership a batch at or below the last
//!   one taken is ignored (a late duplicate cannot undo a newer order), and
//!   an order for what is already so is a no-op.
//! * An item already pinned on this IPFS before the cluster asked (the
//!   user's own pin, found with `pin/ls`) is reported pinned but never
//!   owned: the cluster never unpins it.
//! * At most `concurrency` IPFS calls run at once; the rest wait, queued.
//! * Every state change gets a version; the leader asks for the changes
//!   after the last version it saw ([`HolderRequest::States`]), so a new
//!   leader rebuilds the picture from scratch and a running one cheaply.
//! * `Pinned` is what this IPFS says: an item is marked so when `pin/add`
//!   succeeded, and `pin/ls` is checked at start and every `reconcile` so a
//!   pin lost under us is reported `Absent` (and re-ordered by the leader).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::held::HeldStore;
use crate::ipfs::IpfsStatus;
use crate::ipfs_rpc::{IpfsClient, RpcError};
use crate::role::Role;
use crate::view::ClusterView;
use crate::wire::{
    HeldState, HolderOrder, HolderRequest, HolderResponse, IpfsInfo, MAX_PIN_ERROR, MAX_STATES,
};

/// Settings of the holder.
#[derive(Debug, Clone, Copy)]
pub struct HolderSettings {
    pub role: Role,
    /// IPFS calls at once.
    pub concurrency: usize,
    /// Deadline of one `pin/add`.
    pub pin_timeout: Duration,
    /// How often `pin/ls` is checked against what is held.
    pub reconcile: Duration,
}

/// Tombstones (items unpinned) kept for leaders that follow changes; a
/// leader further behind starts from scratch.
const MAX_TOMBSTONES: usize = 16 * 1024;

enum Msg {
    Request {
        from: String,
        req: HolderRequest,
        reply: oneshot::Sender<HolderResponse>,
    },
    /// A call ended; for a pin, `Ok(true)` means the item was already the
    /// user's pin.
    Done {
        cid: String,
        pin: bool,
        result: Result<bool, String>,
    },
    /// `pin/ls` as of version `at`.
    Listed {
        at: u64,
        pinned: Result<HashSet<String>, String>,
    },
}

/// Talks to the holder task.
#[derive(Clone)]
pub struct HolderHandle {
    tx: mpsc::Sender<Msg>,
}

impl HolderHandle {
    /// A request from `from` (a peer ID, or this node's own keeper); `None`
    /// when the task is overloaded or gone.
    pub fn inbound(
        &self,
        from: String,
        req: HolderRequest,
    ) -> Option<oneshot::Receiver<HolderResponse>> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Msg::Request { from, req, reply }).ok()?;
        Some(rx)
    }

    pub async fn request(
        &self,
        from: String,
        req: HolderRequest,
    ) -> Result<HolderResponse, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Request { from, req, reply })
            .await
            .map_err(|_| "the holder task stopped".to_string())?;
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .map_err(|_| "the holder task did not answer in 30 s".to_string())?
            .map_err(|_| "the holder task stopped".to_string())
    }
}

struct Item {
    state: HeldState,
    version: u64,
    /// What the last order asked.
    want_pin: bool,
    running: bool,
    /// Pinned by the user before the cluster asked: never unpinned here.
    user: bool,
}

struct Holder {
    store: HeldStore,
    settings: HolderSettings,
    tx: mpsc::Sender<Msg>,
    /// Changes between sessions (restarts) are not comparable.
    session: u64,
    version: u64,
    items: HashMap<String, Item>,
    /// version → cid, the latest version of each item only.
    by_version: BTreeMap<u64, String>,
    tombstones: usize,
    /// Cursors below this were pruned: their leader starts from scratch.
    floor: u64,
    max_epoch: u64,
    /// The last batch taken: leader, epoch, number.
    last_batch: (String, u64, u64),
    queue: VecDeque<String>,
    running: usize,
    client: Option<IpfsClient>,
    /// Whether `pin/ls` has been checked in this session, and when next.
    listing: bool,
    next_list: Option<Instant>,
    /// Held-set changes not yet on disk.
    add: Vec<String>,
    remove: Vec<String>,
}

/// Starts the task.
pub fn spawn(
    store: HeldStore,
    settings: HolderSettings,
    ipfs: watch::Receiver<IpfsStatus>,
    view: watch::Receiver<ClusterView>,
    stop: CancellationToken,
) -> Result<(HolderHandle, std::thread::JoinHandle<()>), String> {
    let (tx, rx) = mpsc::channel(1024);
    let h = Holder::new(store, settings, tx.clone()).map_err(|e| e.to_string())?;
    let thread =
        super::spawn_task("holder", h.run(rx, ipfs, view, stop)).map_err(|e| e.to_string())?;
    Ok((HolderHandle { tx }, thread))
}

fn short(e: impl std::fmt::Display) -> String {
    let mut s = e.to_string();
    if s.len() > MAX_PIN_ERROR {
        let mut end = MAX_PIN_ERROR - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

impl Holder {
    fn new(
        store: HeldStore,
        settings: HolderSettings,
        tx: mpsc::Sender<Msg>,
    ) -> Result<Holder, super::held::HeldStoreError> {
        let (held, max_epoch) = store.load()?;
        let mut h = Holder {
            store,
            settings,
            tx,
            session: rand::random::<u64>() | 1,
            version: 0,
            items: HashMap::new(),
            by_version: BTreeMap::new(),
            tombstones: 0,
            floor: 0,
            max_epoch,
            last_batch: (String::new(), max_epoch, 0),
            queue: VecDeque::new(),
            running: 0,
            client: None,
            listing: false,
            next_list: Some(Instant::now()),
            add: Vec::new(),
            remove: Vec::new(),
        };
        // Held before the restart: pinned unless `pin/ls` says otherwise.
        for cid in held {
            h.set(&cid, HeldState::Pinned, true);
        }
        Ok(h)
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        mut ipfs: watch::Receiver<IpfsStatus>,
        view: watch::Receiver<ClusterView>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ipfs_open = true;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    self.on_msg(msg, &view.borrow());
                    for _ in 0..1024 {
                        let Ok(msg) = rx.try_recv() else { break };
                        self.on_msg(msg, &view.borrow());
                    }
                }
                // A node without IPFS drops the sender: keep answering.
                changed = ipfs.changed(), if ipfs_open => ipfs_open = changed.is_ok(),
                _ = tick.tick() => {}
            }
            self.flush();
            self.use_ipfs(&ipfs.borrow());
            self.pump();
            self.maybe_list();
        }
        self.flush();
    }

    /// Writes held-set changes in one transaction.
    fn flush(&mut self) {
        if self.add.is_empty() && self.remove.is_empty() {
            return;
        }
        if let Err(e) = self.store.update(&self.add, &self.remove, None) {
            // Not fatal: the leader's picture comes from `pin/ls` too.
            warn!("holder: {e}");
        }
        self.add.clear();
        self.remove.clear();
    }

    fn use_ipfs(&mut self, st: &IpfsStatus) {
        match (&st.api, st.is_ready()) {
            (Some(api), true) => {
                if self.client.as_ref().is_none_or(|c| c.addr() != api) {
                    let mut c = IpfsClient::new(api.clone());
                    c.transfer_timeout = self.settings.pin_timeout;
                    self.client = Some(c);
                }
            }
            _ => self.client = None,
        }
    }

    /// Records a new state for `cid` under a new version.
    fn set(&mut self, cid: &str, state: HeldState, want_pin: bool) {
        self.version += 1;
        let version = self.version;
        let was_tomb;
        match self.items.get_mut(cid) {
            Some(item) => {
                was_tomb = item.state == HeldState::Absent;
                self.by_version.remove(&item.version);
                item.state = state.clone();
                item.version = version;
                item.want_pin = want_pin;
            }
            None => {
                was_tomb = false;
                self.items.insert(
                    cid.to_owned(),
                    Item {
                        state: state.clone(),
                        version,
                        want_pin,
                        running: false,
                        user: false,
                    },
                );
            }
        }
        self.by_version.insert(version, cid.to_owned());
        let is_tomb = state == HeldState::Absent;
        match (was_tomb, is_tomb) {
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
            self.items.remove(&cid);
            self.tombstones -= 1;
            self.floor = self.floor.max(v);
        }
    }

    fn on_msg(&mut self, msg: Msg, view: &ClusterView) {
        match msg {
            Msg::Request { from, req, reply } => {
                let _ = reply.send(self.on_request(&from, req, view));
            }
            Msg::Done { cid, pin, result } => self.on_done(cid, pin, result),
            Msg::Listed { at, pinned } => self.on_listed(at, pinned),
        }
    }

    fn on_request(&mut self, from: &str, req: HolderRequest, view: &ClusterView) -> HolderResponse {
        let refused = |reason: String| HolderResponse::Refused { reason };
        match req {
            HolderRequest::Orders {
                epoch,
                seq,
                orders,
                providers,
            } => {
                if self.settings.role == Role::Leecher {
                    return refused("read-only role: leechers hold no cluster pins".into());
                }
                let Some((leader, leader_epoch)) = view.leader.clone() else {
                    return refused("this node follows no leader at the moment".into());
                };
                if from != leader {
                    return refused(format!("{from} is not the leader this node follows"));
                }
                if epoch != leader_epoch || epoch < self.max_epoch {
                    debug!(%from, epoch, leader_epoch, "holder: stale orders refused");
                    return refused(format!(
                        "epoch {epoch} is not the followed leader's ({leader_epoch}) or is below \
                         {} seen",
                        self.max_epoch
                    ));
                }
                if epoch > self.max_epoch {
                    if let Err(e) = self.store.update(&[], &[], Some(epoch)) {
                        return refused(e.to_string());
                    }
                    self.max_epoch = epoch;
                }
                let (last_from, last_epoch, last_seq) = &self.last_batch;
                if *last_from == from && *last_epoch == epoch && seq <= *last_seq {
                    return HolderResponse::Taken;
                }
                self.last_batch = (from.to_owned(), epoch, seq);
                for order in orders {
                    self.take(order);
                }
                self.connect(providers);
                HolderResponse::Taken
            }
            HolderRequest::States { session, cursor } => self.states(session, cursor),
            HolderRequest::Status { .. } => refused("ask the leader".into()),
        }
    }

    fn take(&mut self, order: HolderOrder) {
        let HolderOrder { cid, pin } = order;
        let (state, running) = match self.items.get_mut(&cid) {
            Some(i) => {
                i.want_pin = pin;
                (i.state.clone(), i.running)
            }
            None if !pin => return,
            None => (HeldState::Absent, false),
        };
        if running {
            // Reconsidered when the call in progress ends.
            return;
        }
        match (pin, state) {
            (true, HeldState::Pinned | HeldState::Queued) => {}
            (false, HeldState::Absent | HeldState::Unpinning) => {}
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

    /// Dials provider daemons our IPFS is not connected to (best effort).
    fn connect(&self, providers: Vec<IpfsInfo>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        if providers.is_empty() {
            return;
        }
        tokio::spawn(async move {
            let connected = client.swarm_peers().await.unwrap_or_default();
            for p in providers {
                if !p.ready || connected.contains(&p.peer_id) {
                    continue;
                }
                for addr in &p.addrs {
                    if client.swarm_connect(addr).await.is_ok() {
                        break;
                    }
                }
            }
        });
    }

    /// Session 0 (never a real one) asks for everything from scratch.
    fn states(&self, session: u64, cursor: u64) -> HolderResponse {
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
    fn pump(&mut self) {
        let Some(client) = self.client.clone() else {
            return;
        };
        while self.running < self.settings.concurrency {
            let Some(cid) = self.queue.pop_front() else {
                return;
            };
            let Some(item) = self.items.get(&cid) else {
                continue;
            };
            let pin = item.want_pin;
            let user = item.user;
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
            let (client, tx) = (client.clone(), self.tx.clone());
            tokio::spawn(async move {
                let result = if pin {
                    // The user's own pin is reported, never taken over.
                    match client.is_pinned(&cid).await {
                        Ok(true) => Ok(true),
                        Ok(false) => client.pin_add(&cid).await.map(|_| false).map_err(short),
                        Err(e) => Err(short(e)),
                    }
                } else if user {
                    Ok(false)
                } else {
                    match client.pin_rm(&cid).await {
                        Ok(_) => Ok(false),
                        Err(RpcError::Rpc { message, .. }) if message.contains("not pinned") => {
                            Ok(false)
                        }
                        Err(e) => Err(short(e)),
                    }
                };
                let _ = tx.send(Msg::Done { cid, pin, result }).await;
            });
        }
    }

    fn on_done(&mut self, cid: String, pin: bool, result: Result<bool, String>) {
        self.running -= 1;
        let Some(item) = self.items.get_mut(&cid) else {
            return;
        };
        item.running = false;
        let want_pin = item.want_pin;
        let state = match (pin, result) {
            (true, Ok(users)) => {
                if users {
                    info!(%cid, "holder: already pinned by the user; reported, never unpinned");
                    item.user = true;
                } else {
                    item.user = false;
                    self.add.push(cid.clone());
                }
                HeldState::Pinned
            }
            (false, Ok(_)) => {
                item.user = false;
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

    /// Lists the IPFS pins at start and every `reconcile`.
    fn maybe_list(&mut self) {
        let Some(client) = self.client.clone() else {
            return;
        };
        if self.listing || self.next_list.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.listing = true;
        let (tx, at) = (self.tx.clone(), self.version);
        tokio::spawn(async move {
            let pinned = client
                .pin_ls()
                .await
                .map(|l| l.into_iter().collect())
                .map_err(|e| e.to_string());
            let _ = tx.send(Msg::Listed { at, pinned }).await;
        });
    }

    /// Items marked pinned that IPFS does not have (and that did not change
    /// since the listing began) are absent.
    fn on_listed(&mut self, at: u64, pinned: Result<HashSet<String>, String>) {
        self.listing = false;
        let pinned = match pinned {
            Ok(p) => p,
            Err(e) => {
                warn!("holder: pin/ls failed: {e}");
                self.next_list = Some(Instant::now() + Duration::from_secs(5));
                return;
            }
        };
        self.next_list = Some(Instant::now() + self.settings.reconcile);
        let lost: BTreeSet<String> = self
            .items
            .iter()
            .filter(|(cid, i)| {
                i.state == HeldState::Pinned
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
        for cid in lost {
            self.remove.push(cid.clone());
            self.set(&cid, HeldState::Absent, false);
        }
    }
}

#[cfg(test)]
mod tests;
