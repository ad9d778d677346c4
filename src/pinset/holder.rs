//! The holder task: carries out the leader's pin and unpin orders on this
//! node's IPFS and keeps what the leader asks about, the state of every item
//! it was ordered to hold. The decisions are [`core`]'s (what it guarantees
//! is written there); this shell runs its IPFS calls, stores the held set
//! and the epoch fence in `held.redb`, and answers requests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::held::HeldStore;
use crate::ipfs::IpfsStatus;
use crate::ipfs_rpc::{IpfsClient, RpcError};
use crate::role::Role;
use crate::view::ClusterView;
use crate::wire::{HolderRequest, HolderResponse, IpfsInfo, MAX_PIN_ERROR};

pub mod core;
use self::core::{Core, Effect, HeldCounts, Input, Limits};

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

enum Msg {
    Request {
        from: String,
        req: HolderRequest,
        reply: oneshot::Sender<HolderResponse>,
    },
    /// An IPFS call's answer ([`Input::Done`], [`Input::Listed`]).
    Step(Input),
}

/// Talks to the holder task.
#[derive(Clone)]
pub struct HolderHandle {
    tx: mpsc::Sender<Msg>,
    now: watch::Receiver<HeldNow>,
}

/// What the holder task publishes after each step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct HeldNow {
    counts: HeldCounts,
    position: (u64, u64),
}

impl HolderHandle {
    /// How many items this holder has in each state now.
    pub fn counts(&self) -> HeldCounts {
        self.now.borrow().counts
    }

    /// The holder's session and newest change ([`Core::position`]).
    pub fn position(&self) -> (u64, u64) {
        self.now.borrow().position
    }

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

struct Holder {
    core: Core,
    store: Arc<HeldStore>,
    settings: HolderSettings,
    tx: mpsc::Sender<Msg>,
    client: Option<IpfsClient>,
    /// Held-set changes not yet stored, the last one per item (stored once
    /// per batch of messages).
    unsaved: BTreeMap<String, bool>,
    /// A task dialling providers runs.
    connecting: Arc<AtomicBool>,
    now: watch::Sender<HeldNow>,
}

/// A pin: the user's own pin is reported (`Ok(true)`), never taken over;
/// otherwise the item is recorded as the cluster's before `pin/add`, so a
/// crash in between cannot make it look like the user's. Returns the result
/// and whether the item is claimed after the call.
async fn pin_once(
    client: &IpfsClient,
    store: &HeldStore,
    cid: &str,
    claimed: bool,
) -> (Result<bool, String>, bool) {
    if !claimed {
        match client.is_pinned(cid).await {
            Ok(true) => return (Ok(true), false),
            Ok(false) => {}
            Err(e) => return (Err(short(e)), false),
        }
        if let Err(e) = store.update(&[cid.to_owned()], &[], None) {
            return (Err(short(e)), false);
        }
    }
    let error = match client.pin_add(cid).await {
        Ok(_) => return (Ok(false), true),
        Err(e) => short(e),
    };
    // Did it go through anyway (a timeout after the daemon pinned)? If
    // not, the claim goes: a pin the user makes later is the user's.
    match client.is_pinned(cid).await {
        Ok(true) => (Ok(false), true),
        Ok(false) => {
            let kept = store.update(&[], &[cid.to_owned()], None).is_err();
            (Err(error), kept)
        }
        Err(_) => (Err(error), true),
    }
}

/// Starts the task.
///
/// `removed`: items whose removal the node's replica is about to collect
/// while this holder still holds them (it unpins them).
pub fn spawn(
    store: Arc<HeldStore>,
    settings: HolderSettings,
    ipfs: watch::Receiver<IpfsStatus>,
    view: watch::Receiver<ClusterView>,
    removed: mpsc::Receiver<Vec<String>>,
    stop: CancellationToken,
) -> Result<(HolderHandle, std::thread::JoinHandle<()>), String> {
    let (tx, rx) = mpsc::channel(1024);
    let (held, max_epoch) = store.load().map_err(|e| e.to_string())?;
    let (now, now_rx) = watch::channel(HeldNow::default());
    let limits = Limits {
        role: settings.role,
        concurrency: settings.concurrency,
        reconcile: settings.reconcile,
        restart_grace: settings.pin_timeout,
    };
    let core = Core::new(
        limits,
        held,
        max_epoch,
        rand::random::<u64>() | 1,
        Instant::now(),
    );
    let h = Holder {
        core,
        store,
        settings,
        tx: tx.clone(),
        client: None,
        unsaved: BTreeMap::new(),
        connecting: Arc::new(AtomicBool::new(false)),
        now,
    };
    h.publish();
    let thread = super::spawn_task("holder", h.run(rx, ipfs, view, removed, stop))
        .map_err(|e| e.to_string())?;
    Ok((HolderHandle { tx, now: now_rx }, thread))
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
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        mut ipfs: watch::Receiver<IpfsStatus>,
        view: watch::Receiver<ClusterView>,
        mut removed: mpsc::Receiver<Vec<String>>,
        stop: CancellationToken,
    ) {
        let mut removed_open = true;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ipfs_open = true;
        self.use_ipfs(&ipfs.borrow_and_update());
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    self.on_msg(msg, &view);
                    for _ in 0..1024 {
                        let Ok(msg) = rx.try_recv() else { break };
                        self.on_msg(msg, &view);
                    }
                    self.flush();
                }
                // A node without IPFS drops the sender: keep answering.
                changed = ipfs.changed(), if ipfs_open => {
                    ipfs_open = changed.is_ok();
                    self.use_ipfs(&ipfs.borrow_and_update());
                }
                cids = removed.recv(), if removed_open => match cids {
                    Some(cids) => {
                        self.step(Input::Removed { cids }, None);
                        self.flush();
                    }
                    None => removed_open = false,
                },
                _ = tick.tick() => self.step(Input::Tick, None),
            }
        }
        self.flush();
    }

    /// Stores the held-set changes in one transaction. Not fatal if it
    /// fails: the leader's picture comes from `pin/ls` too.
    fn flush(&mut self) {
        if self.unsaved.is_empty() {
            return;
        }
        let unsaved = std::mem::take(&mut self.unsaved);
        let cids = |held: bool| -> Vec<String> {
            unsaved
                .iter()
                .filter(|(_, h)| **h == held)
                .map(|(c, _)| c.clone())
                .collect()
        };
        if let Err(e) = self.store.update(&cids(true), &cids(false), None) {
            // Kept for the next flush (a newer change of an item wins).
            warn!("holder: {e}");
            for (cid, held) in unsaved {
                self.unsaved.entry(cid).or_insert(held);
            }
        }
    }

    fn on_msg(&mut self, msg: Msg, view: &watch::Receiver<ClusterView>) {
        match msg {
            Msg::Request { from, req, reply } => {
                let leader = view.borrow().leader.clone();
                self.step(Input::Request { from, req, leader }, Some(reply));
            }
            Msg::Step(input) => self.step(input, None),
        }
    }

    fn use_ipfs(&mut self, st: &IpfsStatus) {
        let ready = match (&st.api, st.is_ready()) {
            (Some(api), true) => {
                if self.client.as_ref().is_none_or(|c| c.addr() != api) {
                    let mut c = IpfsClient::new(api.clone());
                    c.transfer_timeout = self.settings.pin_timeout;
                    self.client = Some(c);
                }
                true
            }
            _ => {
                self.client = None;
                false
            }
        };
        self.step(Input::Ipfs { ready }, None);
    }

    fn publish(&self) {
        let now = HeldNow {
            counts: self.core.counts(),
            position: self.core.position(),
        };
        self.now
            .send_if_modified(|n| std::mem::replace(n, now) != now);
    }

    /// Steps the core and carries out what it asks, in order (the fence is
    /// stored before the reply goes).
    fn step(&mut self, input: Input, mut reply: Option<oneshot::Sender<HolderResponse>>) {
        let mut fence_failed = None;
        let fx = self.core.step(input, Instant::now());
        self.publish();
        for effect in fx {
            match effect {
                Effect::SaveFence(epoch) => {
                    if let Err(e) = self.store.update(&[], &[], Some(epoch)) {
                        // The orders are the followed leader's and are
                        // taken; only the restart fence is weaker. The
                        // leader hears of it and orders again.
                        warn!("holder: {e}");
                        fence_failed = Some(e.to_string());
                    }
                }
                Effect::Reply(resp) => {
                    let resp = match fence_failed.take() {
                        Some(reason) => HolderResponse::Refused { reason },
                        None => resp,
                    };
                    if let Some(r) = reply.take() {
                        let _ = r.send(resp);
                    }
                }
                Effect::Store { add, remove } => {
                    let gone = remove.into_iter().map(|c| (c, false));
                    self.unsaved
                        .extend(add.into_iter().map(|c| (c, true)).chain(gone));
                }
                Effect::Pin { cid, claimed } => self.call(cid, true, claimed),
                Effect::Unpin { cid } => self.call(cid, false, true),
                Effect::List { at } => self.list(at),
                Effect::Connect(providers) => self.connect(providers),
            }
        }
    }

    /// Carries out [`Effect::Pin`] (`pin`) or [`Effect::Unpin`].
    fn call(&self, cid: String, pin: bool, claimed: bool) {
        let (tx, store) = (self.tx.clone(), self.store.clone());
        let client = self.client.clone();
        tokio::spawn(async move {
            let (result, claimed) = match client {
                // The IPFS went away between the step and now.
                None => (Err("no IPFS to call".to_string()), false),
                Some(client) if pin => pin_once(&client, &store, &cid, claimed).await,
                Some(client) => match client.pin_rm(&cid).await {
                    Ok(_) => (Ok(false), false),
                    Err(RpcError::Rpc { message, .. }) if message.contains("not pinned") => {
                        (Ok(false), false)
                    }
                    Err(e) => (Err(short(e)), false),
                },
            };
            let done = Input::Done {
                cid,
                pin,
                result,
                claimed,
            };
            let _ = tx.send(Msg::Step(done)).await;
        });
    }

    fn list(&self, at: u64) {
        let tx = self.tx.clone();
        let client = self.client.clone();
        tokio::spawn(async move {
            let pinned = match client {
                Some(c) => c
                    .pin_ls()
                    .await
                    .map(|l| l.into_iter().collect())
                    .map_err(|e| e.to_string()),
                None => Err("no IPFS to call".to_string()),
            };
            let _ = tx.send(Msg::Step(Input::Listed { at, pinned })).await;
        });
    }

    /// Dials provider daemons our IPFS is not connected to (best effort).
    /// One at a time: a batch that comes while one runs adds nothing (the
    /// leader names the providers again with its next orders).
    fn connect(&self, providers: Vec<IpfsInfo>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let connecting = self.connecting.clone();
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
            // (A task cut short ends with the holder: nothing to reset.)
            connecting.store(false, Ordering::Release);
        });
    }
}
