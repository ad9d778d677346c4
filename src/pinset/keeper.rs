//! The keeper: on the leader, keeps every item of the pinset at its
//! replication factor. It runs on every node and acts only while the node
//! leads.
//!
//! * The pinset comes from this node's replica ([`PinDb`]): the keeper
//!   reads the changes its copy has not seen (by version vector, like a
//!   peer's anti-entropy) into the items to keep and the items removed.
//! * It plans only once the replica has synced with every live master and
//!   worker since this node leads (a finished anti-entropy session, or equal
//!   digests), and it unpins a copy only for a removal the pinset holds:
//!   never because it does not know an item.
//! * What each holder has comes from the holders themselves: the keeper
//!   asks each live master and worker for its state changes
//!   ([`HolderRequest::States`]); a new leader starts from scratch, so the
//!   picture is rebuilt from what the holders' IPFS have, never inherited.
//! * Once every live holder has answered, [`plan`] decides the orders each
//!   round; they go out in batches, one request in flight per holder, each
//!   batch stamped with the leader's epoch and a sequence number.
//! * A holder that fails to answer three times in a row, or whose IPFS is
//!   not ready, counts as down (for the grace period, like a dead one)
//!   until it answers again with its IPFS ready.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::actor::Progress;
use super::db::PinDb;
use super::holder::HolderHandle;
use super::plan::Limits;
use crate::pinset::model::{Entry, Op};
use crate::view::ClusterView;
use crate::wire::{
    HeldState, HolderOrder, HolderRequest, HolderResponse, IpfsInfo, MAX_IPFS_ADDRS, MAX_PROVIDERS,
};

mod core;
pub use core::{Core, Effect};

/// How soon the next round runs, at the soonest, when one is due.
pub(super) const TICK: Duration = Duration::from_millis(100);
/// How often a holder is asked for changes while it carries out orders.
pub(super) const POLL_BUSY: Duration = Duration::from_millis(100);
/// How often, at least, an idle holder is asked (see [`idle_poll`]): a
/// holder's heartbeats say where its changes stand, and the keeper asks as
/// soon as they move, so this only backs that up.
pub(super) const POLL_IDLE: Duration = Duration::from_secs(60);
/// Idle polls a second, in all, past which holders with nothing in
/// progress are asked less often than [`POLL_IDLE`].
pub(super) const IDLE_POLLS_PER_SEC: u32 = 1;
/// How often this node's own holder is asked while idle (a message
/// between threads; its position is not in the view).
pub(super) const POLL_SELF: Duration = Duration::from_secs(1);

/// How long a holder with nothing in progress waits for its next poll, of
/// `holders`: [`POLL_IDLE`], or longer where that would take the leader
/// past [`IDLE_POLLS_PER_SEC`] (beyond 60 holders), so that what an idle
/// leader sends does not grow with the cluster. A holder's own changes
/// while idle (a pin lost under it, found by its reconciliation) do not
/// wait for it: its next heartbeat carries its new position
/// ([`crate::wire::Heartbeat::held`]), brought forward to within one
/// heartbeat interval, and the keeper asks then. Orders in progress are
/// polled at [`POLL_BUSY`] whatever the size.
pub(super) fn idle_poll(holders: usize) -> Duration {
    let holders = u64::try_from(holders).unwrap_or(u64::MAX);
    POLL_IDLE.max(Duration::from_secs(holders) / IDLE_POLLS_PER_SEC)
}
/// Plan at least this often even when nothing changed (grace periods and
/// retries run out with time).
pub(super) const REPLAN: Duration = Duration::from_secs(1);
/// And at most this often (planning walks the whole pinset).
pub(super) const MIN_PLAN_GAP: Duration = Duration::from_millis(200);
/// Missed answers in a row after which a holder counts as down.
pub(super) const MISSES: u32 = 3;
/// Down holders are forgotten after the grace period plus this.
pub(super) const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Sends a holder request to a peer.
pub trait HolderTransport: Clone + Send + Sync + 'static {
    fn holder_request(
        &self,
        peer: &str,
        req: HolderRequest,
    ) -> impl Future<Output = Result<HolderResponse, String>> + Send;
}

enum Msg {
    Answer {
        generation: u64,
        peer: String,
        orders: Vec<HolderOrder>,
        result: Result<HolderResponse, String>,
    },
    Statuses {
        cids: Vec<String>,
        reply: oneshot::Sender<Option<Statuses>>,
    },
}

/// Per item asked, each holder's state.
pub type Statuses = Vec<Vec<(String, HeldState)>>;

/// Talks to the keeper task.
#[derive(Clone)]
pub struct KeeperHandle {
    tx: mpsc::Sender<Msg>,
    orders: std::sync::Arc<OrderCounters>,
}

/// Orders this node sent while it led, by how the holder answered.
#[derive(Debug, Default)]
struct OrderCounters {
    sent: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

/// Orders sent to holders while this node led (`/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderCounts {
    /// Taken by the holder.
    pub sent: u64,
    /// Refused (not the holder's leader, a stale epoch, a fence it could not store).
    pub refused: u64,
    /// Not answered (unreachable, timed out).
    pub failed: u64,
}

impl KeeperHandle {
    pub fn orders(&self) -> OrderCounts {
        let o = &self.orders;
        OrderCounts {
            sent: o.sent.load(Ordering::Relaxed),
            refused: o.refused.load(Ordering::Relaxed),
            failed: o.failed.load(Ordering::Relaxed),
        }
    }

    /// Each holder's state for each of `cids`; `None` when this node is
    /// not leading.
    pub async fn statuses(&self, cids: Vec<String>) -> Result<Option<Statuses>, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Statuses { cids, reply })
            .await
            .map_err(|_| "the keeper task stopped".to_string())?;
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .map_err(|_| "the keeper task did not answer in 5 s".to_string())?
            .map_err(|_| "the keeper task stopped".to_string())
    }
}

struct Keeper<T> {
    core: Core,
    db: PinDb,
    progress: watch::Receiver<Progress>,
    transport: T,
    local: HolderHandle,
    tx: mpsc::Sender<Msg>,
    orders: std::sync::Arc<OrderCounters>,
}

/// Starts the task.
pub fn spawn<T: HolderTransport>(
    db: PinDb,
    progress: watch::Receiver<Progress>,
    view: watch::Receiver<ClusterView>,
    transport: T,
    local: HolderHandle,
    limits: Limits,
    stop: CancellationToken,
) -> std::io::Result<(KeeperHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(1024);
    let orders = std::sync::Arc::new(OrderCounters::default());
    let keeper = Keeper {
        orders: orders.clone(),
        core: Core::new(limits),
        db,
        progress,
        transport,
        local,
        tx: tx.clone(),
    };
    let thread = super::spawn_task("keeper", keeper.run(rx, view, stop))?;
    Ok((KeeperHandle { tx, orders }, thread))
}

impl<T: HolderTransport> Keeper<T> {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        mut view: watch::Receiver<ClusterView>,
        stop: CancellationToken,
    ) {
        // Followers wait for the view (which says when they lead).
        let mut next: Option<Instant> = None;
        let mut progress_open = true;
        let mut last_round = Instant::now();
        loop {
            let due = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    self.on_msg(msg);
                    for _ in 0..1024 {
                        let Ok(msg) = rx.try_recv() else { break };
                        self.on_msg(msg);
                    }
                }
                _ = due => {}
                // New writes are read (and planned) at once, but a burst of
                // them runs a round at most every `TICK`.
                changed = self.progress.changed(), if progress_open && self.core.leading().is_some() => {
                    progress_open = changed.is_ok();
                    let soonest = last_round + TICK;
                    if Instant::now() < soonest {
                        next = Some(next.map_or(soonest, |t| t.min(soonest)));
                        continue;
                    }
                }
                changed = view.changed() => if changed.is_err() { break },
            }
            let v = view.borrow().clone();
            let progress = self.progress.borrow().clone();
            let db = &self.db;
            last_round = Instant::now();
            let fx = self.core.round(&v, &progress, last_round, || {
                db.view().map_err(|e| e.to_string())
            });
            for effect in fx {
                self.execute(effect, &v.me);
            }
            next = self.core.next_round(Instant::now());
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Statuses { cids, reply } => {
                let answer = cids.iter().map(|c| self.core.status(c)).collect();
                let _ = reply.send(answer);
            }
            Msg::Answer {
                generation,
                peer,
                orders,
                result,
            } => self
                .core
                .answer(generation, peer, orders, result, Instant::now()),
        }
    }

    /// The Pinning Service API's `origins` of the items to pin, as
    /// providers the holder's IPFS dials (best effort, within the bounds
    /// of a batch).
    fn add_origins(&self, orders: &[HolderOrder], providers: &mut Vec<IpfsInfo>) {
        for o in orders.iter().filter(|o| o.pin) {
            let Ok(Some(Entry {
                op: Op::Pin(spec), ..
            })) = self.db.get(&o.cid)
            else {
                continue;
            };
            for origin in spec.origins {
                let peer_id = origin.rsplit_once("/p2p/").map_or("", |(_, id)| id);
                let room = providers.len() < MAX_PROVIDERS;
                match providers.iter_mut().find(|p| p.peer_id == peer_id) {
                    Some(p) => {
                        if p.addrs.len() < MAX_IPFS_ADDRS && !p.addrs.contains(&origin) {
                            p.addrs.push(origin)
                        }
                    }
                    None if room => providers.push(IpfsInfo {
                        ready: true,
                        peer_id: peer_id.to_owned(),
                        addrs: vec![origin],
                    }),
                    None => return,
                }
            }
        }
    }

    /// Sends a request (to this node's own holder directly) and feeds the
    /// answer back.
    fn execute(&self, effect: Effect, me: &str) {
        let Effect::Request {
            generation,
            peer,
            mut req,
            orders,
        } = effect;
        if let HolderRequest::Orders { providers, .. } = &mut req {
            self.add_origins(&orders, providers);
        }
        let (transport, local, tx) = (self.transport.clone(), self.local.clone(), self.tx.clone());
        let counters = self.orders.clone();
        let me = me.to_owned();
        tokio::spawn(async move {
            let result = if peer == me {
                local.request(me, req).await
            } else {
                transport.holder_request(&peer, req).await
            };
            let counter = match &result {
                Ok(HolderResponse::Refused { .. }) => &counters.refused,
                Ok(_) => &counters.sent,
                Err(_) => &counters.failed,
            };
            counter.fetch_add(orders.len() as u64, Ordering::Relaxed);
            let _ = tx
                .send(Msg::Answer {
                    generation,
                    peer,
                    orders,
                    result,
                })
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle polls stay at every 60 s up to 60 holders, and within 1 a
    /// second in all beyond, whatever the size.
    #[test]
    fn idle_polls_are_bounded_in_all() {
        for holders in 0..=20_000usize {
            let every = idle_poll(holders);
            assert!(every >= POLL_IDLE, "{holders}: {every:?}");
            let per_sec = holders as f64 / every.as_secs_f64();
            assert!(
                per_sec <= f64::from(IDLE_POLLS_PER_SEC) + 1e-9,
                "{holders}: {per_sec}"
            );
            if holders <= 60 {
                assert_eq!(every, POLL_IDLE);
            }
        }
        assert_eq!(idle_poll(100), Duration::from_secs(100));
        assert_eq!(idle_poll(1000), Duration::from_secs(1000));
    }
}
