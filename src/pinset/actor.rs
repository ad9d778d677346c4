//! The pinset task: owns the [`PinStore`], follows the leader the election
//! chose, and on the leader replicates the log and commits writes.
//!
//! It learns the cluster from a `watch` of [`ClusterView`] (fed by the node
//! loop) and talks to peers through a [`Transport`] (the node's
//! request-response). Clients (the control API) use a [`PinsetHandle`]:
//! a write is answered once it is committed, i.e. durable on the leader and
//! on one other master-eligible node when one is live.
//!
//! On becoming leader it first catches up from the most advanced live peer,
//! then writes a barrier entry of its epoch, then serves writes. A follower
//! refuses appends from an epoch below the highest it has seen.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::fit_batch;
use super::replicate::{Replicator, Send};
use super::snapshot::{Served, Stager, pull};

mod recover;
use super::store::{Appended, PinStore, PinStoreError};
use super::{Entry, LogPos, Op, PinSpec};
use crate::role::Role;
use crate::wire::{
    IpfsInfo, MAX_PINSET_BATCH, MAX_PINSET_BATCH_BYTES, MAX_WRITE_BATCH, PinsetRequest,
    PinsetResponse,
};
use recover::RESUBMIT_RETRY;

/// A batch unanswered for this long is sent again.
const RESEND: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(50);
/// Forwarded write batches in flight to the leader.
const MAX_FORWARDS: usize = 4;
/// A follower this many entries behind the commit index pulls a snapshot
/// rather than the entries; and this many committed entries stay in the
/// log when it is compacted (compaction runs once twice as many are there).
pub const SNAPSHOT_LAG: u64 = 100_000;

/// The cluster as the election sees it, from the node loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub me: String,
    pub role: Option<Role>,
    /// The leader this node follows, and its epoch.
    pub leader: Option<(String, u64)>,
    /// Live peers (not this node).
    pub peers: Vec<PeerView>,
    /// This node's IPFS and free disk, as its heartbeats say.
    pub my_ipfs: Option<IpfsInfo>,
    pub my_disk_free: u64,
}

/// A live peer as its heartbeats describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub id: String,
    pub role: Role,
    pub ipfs: Option<IpfsInfo>,
    /// Rounded down to [`DISK_GRAIN`], so the view does not change at every write.
    pub disk_free: u64,
}

/// Granularity of free disk in a [`ClusterView`].
pub const DISK_GRAIN: u64 = 64 * 1024 * 1024;

/// Sends a pinset request to a peer and waits for the answer.
pub trait Transport: Clone + std::marker::Send + Sync + 'static {
    fn request(
        &self,
        peer: &str,
        req: PinsetRequest,
    ) -> impl Future<Output = Result<PinsetResponse, String>> + std::marker::Send;
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    #[error("no leader at the moment; retry shortly")]
    NoLeader,
    #[error("read-only role: leechers take no writes")]
    ReadOnly,
    #[error("{0}")]
    Failed(String),
}

enum Msg {
    Inbound {
        req: PinsetRequest,
        reply: oneshot::Sender<PinsetResponse>,
    },
    Write {
        op: Op,
        reply: oneshot::Sender<Result<u64, WriteError>>,
    },
    List {
        reply: oneshot::Sender<Result<Vec<PinSpec>, String>>,
    },
    Get {
        cid: String,
        reply: oneshot::Sender<Result<Option<PinSpec>, String>>,
    },
    /// A forwarded batch was answered.
    Forwarded,
    Replied {
        epoch: u64,
        peer: String,
        upto: u64,
        result: Result<PinsetResponse, String>,
    },
    /// A snapshot pull ended: staged as `(id, at)`, or why not.
    Pulled {
        result: Result<(u64, LogPos), String>,
    },
    /// Rescued pins written again: these are committed; `failed`: some
    /// were not (tried again later).
    Resubmitted { done: Vec<String>, failed: bool },
}

/// Where a node's copy of the log stands (in `status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PinsetPosition {
    pub last_index: u64,
    pub last_epoch: u64,
    pub commit: u64,
    /// The log holds entries after this one; the state holds the rest
    /// (compacted, or installed from a snapshot).
    #[serde(default)]
    pub base_index: u64,
}

/// Talks to the pinset task.
#[derive(Clone)]
pub struct PinsetHandle {
    tx: mpsc::Sender<Msg>,
    position: watch::Receiver<PinsetPosition>,
}

impl PinsetHandle {
    pub fn position(&self) -> PinsetPosition {
        *self.position.borrow()
    }

    /// Applies `op` cluster-wide; `Ok(index)` once committed.
    pub async fn write(&self, op: Op) -> Result<u64, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Write { op, reply })
            .await
            .map_err(|_| WriteError::Failed("the pinset task stopped".into()))?;
        rx.await
            .map_err(|_| WriteError::Failed("the pinset task stopped".into()))?
    }

    /// The committed pinset as this node holds it.
    pub async fn list(&self) -> Result<Vec<PinSpec>, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::List { reply })
            .await
            .map_err(|e| e.to_string())?;
        rx.await.map_err(|e| e.to_string())?
    }

    pub async fn get(&self, cid: &str) -> Result<Option<PinSpec>, String> {
        let (reply, rx) = oneshot::channel();
        let cid = cid.to_owned();
        self.tx
            .send(Msg::Get { cid, reply })
            .await
            .map_err(|e| e.to_string())?;
        rx.await.map_err(|e| e.to_string())?
    }

    /// A peer's request; the answer comes on the receiver. `None` when the
    /// task is overloaded or gone (the peer retries).
    pub fn inbound(&self, req: PinsetRequest) -> Option<oneshot::Receiver<PinsetResponse>> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Msg::Inbound { req, reply }).ok()?;
        Some(rx)
    }
}

struct Leading {
    epoch: u64,
    rep: Replicator,
    /// Writes not yet appended.
    queued: Vec<(Op, oneshot::Sender<Result<u64, WriteError>>)>,
    /// Writes waiting for their index to commit.
    waiting: BTreeMap<u64, Vec<oneshot::Sender<Result<u64, WriteError>>>>,
}

struct Actor<T: Transport> {
    store: PinStore,
    transport: T,
    tx: mpsc::Sender<Msg>,
    leading: Option<Leading>,
    /// Highest leader epoch heard from: appends below it are refused.
    seen_epoch: u64,
    /// Writes for the leader, not yet sent; batches in flight.
    forward: Vec<(Op, oneshot::Sender<Result<u64, WriteError>>)>,
    forwarding: usize,
    position: watch::Sender<PinsetPosition>,
    /// Snapshots peers are pulling from this node.
    served: Served,
    /// A snapshot pull from the leader is under way.
    pulling: bool,
    /// Rescued pins may wait to be written again (see
    /// [`PinStore::rescue_and_reset`]); a round of them is in flight; a
    /// failed round is retried after this.
    rescue_due: bool,
    resubmitting: bool,
    resubmit_after: Option<Instant>,
}

/// Starts the task.
pub fn spawn<T: Transport>(
    store: PinStore,
    view: watch::Receiver<ClusterView>,
    transport: T,
    stop: CancellationToken,
) -> std::io::Result<(PinsetHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(1024);
    let (position, position_rx) = watch::channel(PinsetPosition::default());
    let actor = Actor {
        position,
        store,
        transport,
        tx: tx.clone(),
        leading: None,
        seen_epoch: 0,
        forward: Vec::new(),
        forwarding: 0,
        served: Served::default(),
        pulling: false,
        rescue_due: true,
        resubmitting: false,
        resubmit_after: None,
    };
    let thread = super::spawn_task("pinset", actor.run(rx, view, stop))?;
    let handle = PinsetHandle {
        tx,
        position: position_rx,
    };
    Ok((handle, thread))
}

fn pos_of(e: &Entry) -> LogPos {
    LogPos {
        epoch: e.epoch,
        index: e.index,
    }
}

impl<T: Transport> Actor<T> {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        mut view: watch::Receiver<ClusterView>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(m) => {
                        let v = view.borrow().clone();
                        self.on_msg(m, &v);
                        // Take what else is queued before driving (bounded).
                        for _ in 0..1024 {
                            let Ok(m) = rx.try_recv() else { break };
                            self.on_msg(m, &v);
                        }
                    }
                    None => break,
                },
                // Only a leader has timers to run (resends), and a node with
                // rescued pins to write again; others act on messages and
                // view changes alone.
                _ = tick.tick(), if self.leading.is_some() || self.rescue_due => {}
                changed = view.changed() => if changed.is_err() { break },
            }
            let v = view.borrow().clone();
            if let Err(e) = self.drive(&v).await {
                warn!("pinset: {e}");
            }
            let last = self.store.last();
            let now = PinsetPosition {
                last_index: last.index,
                last_epoch: last.epoch,
                commit: self.store.commit_index(),
                base_index: self.store.base().index,
            };
            self.position
                .send_if_modified(|p| std::mem::replace(p, now) != now);
        }
        self.step_down();
    }

    fn pos_at(&self, index: u64) -> Result<LogPos, PinStoreError> {
        self.store.pos_at(index)
    }

    /// Folds old committed entries into the state once enough piled up.
    fn compact_if_due(&mut self) -> Result<(), PinStoreError> {
        if self.store.commit_index() - self.store.base().index >= 2 * SNAPSHOT_LAG {
            self.store.compact(SNAPSHOT_LAG)?;
            debug!(base = ?self.store.base(), "pinset: log compacted");
        }
        Ok(())
    }

    fn step_down(&mut self) {
        if let Some(l) = self.leading.take() {
            info!(epoch = l.epoch, "pinset: no longer leading");
            let queued = l.queued.into_iter().map(|(_, w)| w);
            for w in l.waiting.into_values().flatten().chain(queued) {
                let _ = w.send(Err(WriteError::NoLeader));
            }
        }
    }

    fn on_msg(&mut self, msg: Msg, view: &ClusterView) {
        match msg {
            Msg::Inbound {
                req: PinsetRequest::Write { ops },
                reply,
            } => {
                // Only the leader takes forwarded writes (no forwarding loops).
                if self.leading.is_none() {
                    let _ = reply.send(PinsetResponse::Refused {
                        reason: "not the leader".into(),
                    });
                    return;
                }
                let mut answers = Vec::with_capacity(ops.len());
                for op in ops {
                    let (done, rx) = oneshot::channel();
                    self.on_write(op, done, view);
                    answers.push(rx);
                }
                tokio::spawn(async move {
                    let mut last = 0;
                    for rx in answers {
                        match rx.await {
                            Ok(Ok(index)) => last = last.max(index),
                            Ok(Err(e)) => {
                                let reason = e.to_string();
                                let _ = reply.send(PinsetResponse::Refused { reason });
                                return;
                            }
                            Err(_) => {
                                let reason = "the pinset task stopped".into();
                                let _ = reply.send(PinsetResponse::Refused { reason });
                                return;
                            }
                        }
                    }
                    let _ = reply.send(PinsetResponse::Written { index: last });
                });
            }
            Msg::Inbound { req, reply } => {
                let _ = reply.send(self.on_request(req, view));
            }
            Msg::Resubmitted { done, failed } => {
                self.resubmitting = false;
                if !done.is_empty() {
                    info!(count = done.len(), "pinset: rescued pins committed again");
                }
                if let Err(e) = self.store.forget_rescued(&done) {
                    warn!("pinset: {e}");
                }
                if failed {
                    self.resubmit_after = Some(Instant::now() + RESUBMIT_RETRY);
                }
            }
            Msg::Pulled { result } => {
                self.pulling = false;
                let installed = result.and_then(|(id, at)| {
                    self.store
                        .install_staged(id, at)
                        .map(|()| at)
                        .map_err(|e| e.to_string())
                });
                match installed {
                    Ok(at) => info!(?at, "pinset: snapshot installed"),
                    Err(e) => warn!("pinset: snapshot pull failed: {e}"),
                }
            }
            Msg::Write { op, reply } => self.on_write(op, reply, view),
            Msg::List { reply } => {
                let _ = reply.send(self.store.pins().map_err(|e| e.to_string()));
            }
            Msg::Get { cid, reply } => {
                let _ = reply.send(self.store.pin(&cid).map_err(|e| e.to_string()));
            }
            Msg::Forwarded => self.forwarding = self.forwarding.saturating_sub(1),
            Msg::Replied {
                epoch,
                peer,
                upto,
                result,
            } => {
                let Some(l) = self.leading.as_mut().filter(|l| l.epoch == epoch) else {
                    return;
                };
                match result {
                    // After a snapshot, `last` is the follower's commit.
                    Ok(PinsetResponse::Appended { ok: true, last }) => {
                        l.rep.on_ok(&peer, upto.min(last.index))
                    }
                    // Still pulling: asked again once the send times out.
                    Ok(PinsetResponse::Pulling) => {}
                    Ok(PinsetResponse::Reset) => l.rep.on_reset(&peer),
                    Ok(PinsetResponse::Appended { ok: false, last }) => {
                        l.rep.on_gap(&peer, last.index)
                    }
                    Ok(other) => {
                        debug!(%peer, ?other, "pinset append refused");
                        l.rep.on_failure(&peer);
                    }
                    Err(e) => {
                        debug!(%peer, "pinset append failed: {e}");
                        l.rep.on_failure(&peer);
                    }
                }
            }
        }
    }

    fn on_write(
        &mut self,
        op: Op,
        reply: oneshot::Sender<Result<u64, WriteError>>,
        view: &ClusterView,
    ) {
        if view.role == Some(Role::Leecher) {
            let _ = reply.send(Err(WriteError::ReadOnly));
            return;
        }
        if let Some(l) = self.leading.as_mut() {
            // Appended with whatever else arrives before the next drive:
            // one durable transaction for the lot (group commit).
            l.queued.push((op, reply));
            return;
        }
        // Not leading: queued for the leader, sent in batches by `forward`.
        self.forward.push((op, reply));
    }

    /// Sends queued writes to the leader, a batch at a time (at most
    /// [`MAX_FORWARDS`] batches in flight), so a burst of clients costs a
    /// few streams, not one each.
    fn forward(&mut self, view: &ClusterView) {
        if let Some(l) = self.leading.as_mut() {
            // Became the leader meanwhile: they are ours to append.
            l.queued.append(&mut self.forward);
            return;
        }
        if self.forward.is_empty() {
            return;
        }
        let Some((leader, _)) = view.leader.clone().filter(|(l, _)| *l != view.me) else {
            for (_, reply) in self.forward.drain(..) {
                let _ = reply.send(Err(WriteError::NoLeader));
            }
            return;
        };
        while self.forwarding < MAX_FORWARDS && !self.forward.is_empty() {
            let n = self.forward.len().min(MAX_WRITE_BATCH);
            let (ops, replies): (Vec<Op>, Vec<_>) = self.forward.drain(..n).unzip();
            self.forwarding += 1;
            let (transport, tx, leader) = (self.transport.clone(), self.tx.clone(), leader.clone());
            tokio::spawn(async move {
                let answer = match transport
                    .request(&leader, PinsetRequest::Write { ops })
                    .await
                {
                    Ok(PinsetResponse::Written { index }) => Ok(index),
                    Ok(PinsetResponse::Refused { reason }) => {
                        Err(WriteError::Failed(format!("the leader refused: {reason}")))
                    }
                    Ok(other) => Err(WriteError::Failed(format!("unexpected answer {other:?}"))),
                    Err(e) => Err(WriteError::Failed(format!("leader unreachable: {e}"))),
                };
                for reply in replies {
                    let _ = reply.send(answer.clone());
                }
                let _ = tx.send(Msg::Forwarded).await;
            });
        }
    }

    /// An epoch a leader speaks in: refused if stale, else remembered (a
    /// leader of an older one steps down).
    fn hear_epoch(&mut self, epoch: u64) -> Result<(), PinsetResponse> {
        if epoch < self.seen_epoch {
            return Err(PinsetResponse::Refused {
                reason: format!("stale epoch {epoch} (seen {})", self.seen_epoch),
            });
        }
        self.seen_epoch = epoch;
        if self.leading.as_ref().is_some_and(|l| l.epoch < epoch) {
            self.step_down();
        }
        Ok(())
    }

    fn on_request(&mut self, req: PinsetRequest, view: &ClusterView) -> PinsetResponse {
        let refused = |reason: String| PinsetResponse::Refused { reason };
        match req {
            PinsetRequest::Append {
                epoch,
                prev,
                entries,
                commit,
            } => {
                if let Err(r) = self.hear_epoch(epoch) {
                    return r;
                }
                let sent_upto = prev.index + entries.len() as u64;
                match self.store.append(prev, &entries) {
                    Ok(Appended::Ok(_)) => {
                        if let Err(e) = self
                            .store
                            .commit_to(commit.min(sent_upto))
                            .and_then(|_| self.compact_if_due())
                        {
                            return refused(e.to_string());
                        }
                        PinsetResponse::Appended {
                            ok: true,
                            last: self.store.last(),
                        }
                    }
                    Ok(Appended::Gap { have }) => PinsetResponse::Appended {
                        ok: false,
                        last: have,
                    },
                    Err(PinStoreError::ConflictBelowCommit { index, commit }) => {
                        // The cluster went on without entries only this
                        // node (and others down with it) kept.
                        warn!(
                            index,
                            commit, "pinset: the leader's log lacks entries committed here"
                        );
                        match self.rescue_from(index) {
                            Ok(()) => PinsetResponse::Reset,
                            Err(e) => refused(e.to_string()),
                        }
                    }
                    Err(e) => refused(e.to_string()),
                }
            }
            PinsetRequest::Position => PinsetResponse::Position {
                last: self.store.last(),
                commit: self.store.commit_index(),
            },
            PinsetRequest::Fetch { from } => match self.store.entries(from, MAX_PINSET_BATCH) {
                Ok(Some(mut entries)) => {
                    fit_batch(&mut entries, MAX_PINSET_BATCH_BYTES);
                    PinsetResponse::Entries { entries }
                }
                Ok(None) => refused("entries compacted: a snapshot is needed".into()),
                Err(e) => refused(e.to_string()),
            },
            PinsetRequest::Write { .. } => refused("not the leader".into()),
            PinsetRequest::Snapshot { epoch, from } => {
                if let Err(r) = self.hear_epoch(epoch) {
                    return r;
                }
                let commit = self.store.commit_index();
                if commit >= from {
                    return match self.pos_at(commit) {
                        Ok(last) => PinsetResponse::Appended { ok: true, last },
                        Err(e) => refused(e.to_string()),
                    };
                }
                if self.pulling {
                    return PinsetResponse::Pulling;
                }
                // Pulled from the leader this node follows in that epoch.
                let Some((leader, _)) = view.leader.clone().filter(|(_, e)| *e == epoch) else {
                    return refused(format!("not following a leader of epoch {epoch}"));
                };
                info!(%leader, from, commit, "pinset: pulling a snapshot");
                self.pulling = true;
                let (transport, tx, stager) = (
                    self.transport.clone(),
                    self.tx.clone(),
                    Stager::new(&self.store),
                );
                tokio::spawn(async move {
                    let result = pull(&transport, &leader, stager).await;
                    let _ = tx.send(Msg::Pulled { result }).await;
                });
                PinsetResponse::Pulling
            }
            PinsetRequest::ReadSnapshot { id, after } => {
                self.served.read(&self.store, id, after, Instant::now())
            }
        }
    }

    /// Leadership changes, replication, commits.
    async fn drive(&mut self, v: &ClusterView) -> Result<(), PinStoreError> {
        self.resubmit(v);
        self.forward(v);
        let my_epoch = v
            .leader
            .as_ref()
            .filter(|(l, _)| *l == v.me)
            .map(|(_, e)| *e);
        match (my_epoch, self.leading.as_ref().map(|l| l.epoch)) {
            (Some(e), Some(cur)) if e == cur => {}
            (Some(e), _) if e >= self.seen_epoch => {
                self.step_down();
                self.catch_up(v).await?;
                self.seen_epoch = e;
                let barrier = self.store.append_local(e, vec![Op::Barrier])?;
                let start = barrier.last().map_or(1, |b| b.index);
                info!(epoch = e, from = start, "pinset: leading");
                self.leading = Some(Leading {
                    epoch: e,
                    rep: Replicator::new(start, RESEND),
                    queued: Vec::new(),
                    waiting: BTreeMap::new(),
                });
            }
            (Some(_), _) => self.step_down(),
            (None, Some(_)) => self.step_down(),
            (None, None) => {}
        }
        let Some(l) = self.leading.as_mut() else {
            return Ok(());
        };
        if !l.queued.is_empty() {
            let epoch = l.epoch;
            let (ops, replies): (Vec<Op>, Vec<_>) =
                std::mem::take(&mut l.queued).into_iter().unzip();
            match self.store.append_local(epoch, ops) {
                Ok(entries) => {
                    let l = self.leading.as_mut().expect("still leading");
                    for (e, reply) in entries.iter().zip(replies) {
                        l.waiting.entry(e.index).or_default().push(reply);
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(WriteError::Failed(e.to_string())));
                    }
                }
            }
        }
        let Some(l) = self.leading.as_mut() else {
            return Ok(());
        };
        let last = self.store.last().index;
        l.rep.set_followers(
            v.peers
                .iter()
                .filter(|p| p.id != v.me)
                .map(|p| (p.id.as_str(), p.role.can_lead())),
            last,
        );
        let now = Instant::now();
        let ids: Vec<String> = v.peers.iter().map(|p| p.id.clone()).collect();
        let (epoch, commit) = (l.epoch, self.store.commit_index());
        let snapshot_below = (self.store.base().index).max(commit.saturating_sub(SNAPSHOT_LAG));
        for id in ids {
            let Some(l) = self.leading.as_mut() else {
                break;
            };
            let (req, upto) = match l.rep.next_send(&id, last, commit, snapshot_below, now) {
                None => continue,
                Some(Send::Snapshot { from }) => {
                    (PinsetRequest::Snapshot { epoch, from }, u64::MAX)
                }
                Some(Send::Entries { from }) => {
                    let prev = self.pos_at(from - 1)?;
                    let mut entries = self
                        .store
                        .entries(from, MAX_PINSET_BATCH)?
                        .unwrap_or_default();
                    fit_batch(&mut entries, MAX_PINSET_BATCH_BYTES);
                    let upto = prev.index + entries.len() as u64;
                    let req = PinsetRequest::Append {
                        epoch,
                        prev,
                        entries,
                        commit,
                    };
                    (req, upto)
                }
            };
            let (transport, tx) = (self.transport.clone(), self.tx.clone());
            tokio::spawn(async move {
                let result = transport.request(&id, req).await;
                let _ = tx
                    .send(Msg::Replied {
                        epoch,
                        peer: id,
                        upto,
                        result,
                    })
                    .await;
            });
        }
        let Some(l) = self.leading.as_mut() else {
            return Ok(());
        };
        let target = l.rep.commit_index(last);
        if target > self.store.commit_index() {
            let committed = self.store.commit_to(target)?;
            let l = self.leading.as_mut().expect("still leading");
            let later = l.waiting.split_off(&(committed + 1));
            for (index, waiters) in std::mem::replace(&mut l.waiting, later) {
                for w in waiters {
                    let _ = w.send(Ok(index));
                }
            }
        }
        self.compact_if_due()
    }
}
