//! The pinset task: drives the [`Replica`] core with the database and the
//! network, on a thread of its own.
//!
//! Each wake-up takes every queued message (up to a bound), steps the core
//! with each, then carries out the effects: first every persist in one
//! durable transaction (group commit), then the sends and answers, so
//! nothing is acknowledged before it is on disk. A transaction that fails
//! answers the batch's writes with an error and restarts the core from the
//! database. (A persist is durable when it returns: see [`super::db`] for
//! the journal that makes small ones cheap.) Anti-entropy pages are served here from a redb read
//! transaction held for the session (a few at once, closed when idle).
//!
//! Reads (the API's list and get, the keeper) go to the database directly
//! through [`PinsetHandle::db`]; redb's readers never wait for the writer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::db::{DbView, PinDb};
use super::held::HeldStore;
use super::model::Vv;
use super::replica::{self, Effect, Input, Now, Replica, WriteError, Written};
use crate::role::Role;
use crate::view::{ClusterView, PeerView};
use crate::wire::{PinsetRequest, PinsetResponse};

/// The tick while a write, a batch or a session waits on a deadline
/// ([`Replica::busy`]), and while none does: an idle node's pinset thread
/// wakes once a second, not five times.
const TICK: Duration = Duration::from_millis(200);
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Sessions served at once, and how long an unread one stays open.
const MAX_SERVED: usize = 4;
const SERVED_IDLE: Duration = Duration::from_secs(30);
/// Messages taken per wake-up (one transaction for all their persists).
const MAX_BATCH: usize = 1024;

mod handle;
mod peers;
mod store;
use handle::Msg;
pub use handle::{PinsetHandle, Progress, Transport};

struct Actor<T: Transport> {
    core: Replica,
    me: String,
    role: Role,
    cfg: replica::Config,
    db: PinDb,
    transport: T,
    tx: mpsc::Sender<Msg>,
    next_token: u64,
    writes: HashMap<u64, oneshot::Sender<Result<Written, WriteError>>>,
    replies: HashMap<u64, oneshot::Sender<PinsetResponse>>,
    served: HashMap<(String, u64), (DbView, Vv, Instant)>,
    progress: watch::Sender<Progress>,
    view: ClusterView,
    /// The node's main runtime: requests to peers run there, beside this
    /// thread's transactions (the next page is fetched while one is stored).
    net: tokio::runtime::Handle,
    /// Pins and tombstones, as the last commit left them.
    counts: super::db::Counts,
    replica_id: String,
    /// This node's holder: removals of items it holds are not collected
    /// yet; it is told of them and unpins them.
    held: Arc<HeldStore>,
    removed: mpsc::Sender<Vec<String>>,
}

fn now() -> Now {
    Now {
        at: Instant::now(),
        unix_ms: crate::clock::unix_ms(),
    }
}

/// What the pinset task works with besides its database.
pub struct Wiring<T: Transport> {
    pub view: watch::Receiver<ClusterView>,
    pub transport: T,
    /// The holder's record of what it pinned, and where to tell it of
    /// removals of those items about to be collected.
    pub held: Arc<HeldStore>,
    pub removed: mpsc::Sender<Vec<String>>,
    pub stop: CancellationToken,
}

/// Starts the task.
pub fn spawn<T: Transport>(
    db: PinDb,
    me: String,
    role: Role,
    cfg: replica::Config,
    wiring: Wiring<T>,
) -> Result<(PinsetHandle, std::thread::JoinHandle<()>), String> {
    let Wiring {
        view,
        transport,
        held,
        removed,
        stop,
    } = wiring;
    let net = tokio::runtime::Handle::try_current()
        .map_err(|_| "the pinset task must be started from a tokio runtime".to_string())?;
    let loaded = db.load().map_err(|e| e.to_string())?;
    let core = Replica::new(me.clone(), role, cfg, loaded, now());
    let (tx, rx) = mpsc::channel(4096);
    let (progress, progress_rx) = watch::channel(Progress::default());
    let mut actor = Actor {
        core,
        me,
        role,
        cfg,
        db: db.clone(),
        transport,
        tx: tx.clone(),
        next_token: 1,
        writes: HashMap::new(),
        replies: HashMap::new(),
        served: HashMap::new(),
        progress,
        view: ClusterView::default(),
        net,
        counts: db
            .view()
            .and_then(|v| v.counts())
            .map_err(|e| e.to_string())?,
        replica_id: String::new(),
        held,
        removed,
    };
    actor.replica_id = format!("{:016x}", actor.core.author());
    actor.publish();
    let thread =
        super::spawn_task("pinset", actor.run(rx, view, stop)).map_err(|e| e.to_string())?;
    let handle = PinsetHandle {
        tx,
        db,
        progress: progress_rx,
    };
    Ok((handle, thread))
}

impl<T: Transport> Actor<T> {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        mut view: watch::Receiver<ClusterView>,
        stop: CancellationToken,
    ) {
        let mut next_tick = tokio::time::Instant::now() + TICK;
        loop {
            let mut inputs = Vec::new();
            tokio::select! {
                _ = stop.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(m) => {
                        self.on_msg(m, &mut inputs);
                        for _ in 0..MAX_BATCH {
                            let Ok(m) = rx.try_recv() else { break };
                            self.on_msg(m, &mut inputs);
                        }
                    }
                    None => break,
                },
                changed = view.changed() => {
                    if changed.is_err() { break }
                    self.view = view.borrow_and_update().clone();
                    inputs.push(Input::View(self.view.clone()));
                }
                _ = tokio::time::sleep_until(next_tick) => {
                    inputs.push(Input::Tick);
                    next_tick = tokio::time::Instant::now() + IDLE_TICK;
                }
            }
            let at = now();
            let mut fx = Vec::new();
            inputs.push(Input::Flush);
            for input in inputs {
                fx.extend(self.core.step(input, at));
            }
            self.execute(fx);
            self.publish();
            if self.core.busy() {
                next_tick = next_tick.min(tokio::time::Instant::now() + TICK);
            }
        }
        for (_, w) in self.writes.drain() {
            let _ = w.send(Err(WriteError::Stopped));
        }
        // Not needed for safety (the journal is replayed on open); a clean
        // stop just leaves nothing to replay.
        if let Err(e) = self.db.checkpoint() {
            warn!("pinset: final checkpoint: {e}");
        }
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn on_msg(&mut self, msg: Msg, inputs: &mut Vec<Input>) {
        match msg {
            Msg::Write { op, reply } => {
                let token = self.token();
                self.writes.insert(token, reply);
                inputs.push(Input::Write { token, op });
            }
            Msg::Inbound {
                from,
                req: PinsetRequest::Push { entries },
                reply,
            } => {
                let token = self.token();
                self.replies.insert(token, reply);
                inputs.push(Input::Push {
                    from,
                    token,
                    entries,
                });
            }
            Msg::Inbound {
                from,
                req:
                    PinsetRequest::Pull {
                        session,
                        vv,
                        from: at,
                    },
                reply,
            } => {
                let _ = reply.send(self.serve(from, session, vv, at));
            }
            Msg::Step(input) => inputs.push(input),
            Msg::RemoveMember { id, reply } => {
                let known = self.core.members().contains_key(&id);
                inputs.push(Input::RemoveMember { id });
                let _ = reply.send(known);
            }
        }
    }

    fn execute(&mut self, fx: Vec<Effect>) {
        // Pulls first: they depend on nothing being stored, and the next
        // page then travels while this batch is committed.
        let (pulls, fx): (Vec<Effect>, Vec<Effect>) = fx
            .into_iter()
            .partition(|e| matches!(e, Effect::Pull { .. }));
        for pull in pulls {
            if let Effect::Pull {
                to,
                session,
                vv,
                from,
            } = pull
            {
                self.pull(to, session, vv, from);
            }
        }
        let Some(fx) = self.store(fx) else {
            return;
        };
        // What is committed shows in `status` before any write is
        // acknowledged: a client that reads it right after its answer
        // sees its own write counted.
        self.publish();
        for effect in fx {
            match effect {
                Effect::Persist(_)
                | Effect::Pull { .. }
                | Effect::Collect { .. }
                | Effect::Confirm { .. }
                | Effect::Prune { .. } => {}
                Effect::Push { to, batch, entries } => {
                    let (transport, tx) = (self.transport.clone(), self.tx.clone());
                    self.net.spawn(async move {
                        let result = match transport
                            .request(&to, PinsetRequest::Push { entries })
                            .await
                        {
                            Ok(PinsetResponse::Stored) => Ok(()),
                            Ok(PinsetResponse::Refused { reason }) => Err(reason),
                            Ok(other) => Err(format!("unexpected answer {other:?}")),
                            Err(e) => Err(e),
                        };
                        if let Err(e) = &result {
                            debug!(peer = %to, error = %e, "pinset: push failed");
                        }
                        let pushed = Input::Pushed { to, batch, result };
                        let _ = tx.send(Msg::Step(pushed)).await;
                    });
                }
                Effect::Reply { token, result } => {
                    if let Some(r) = self.replies.remove(&token) {
                        let _ = r.send(match result {
                            Ok(()) => PinsetResponse::Stored,
                            Err(reason) => PinsetResponse::Refused { reason },
                        });
                    }
                }
                Effect::Written { token, result } => {
                    if let Some(w) = self.writes.remove(&token) {
                        let _ = w.send(result);
                    }
                }
            }
        }
    }

    /// After a failed transaction: every answer owed is an error, and the
    /// core starts again from what the database holds.
    fn restart(&mut self, why: &str) {
        for (_, w) in self.writes.drain() {
            let _ = w.send(Err(WriteError::Storage(why.to_owned())));
        }
        for (_, r) in self.replies.drain() {
            let _ = r.send(PinsetResponse::Refused {
                reason: format!("storage error: {why}"),
            });
        }
        if let Ok(c) = self.db.view().and_then(|v| v.counts()) {
            self.counts = c;
        }
        match self.db.load() {
            Ok(loaded) => {
                let at = now();
                self.core = Replica::new(self.me.clone(), self.role, self.cfg, loaded, at);
                let fx = self.core.step(Input::View(self.view.clone()), at);
                // Members only: retried at the next view if this fails too.
                let persists: Vec<_> = fx
                    .into_iter()
                    .filter_map(|e| match e {
                        Effect::Persist(p) => Some(p),
                        _ => None,
                    })
                    .collect();
                if let Err(e) = self.db.persist(&persists) {
                    warn!("pinset: {e}");
                }
                info!("pinset: replica restarted from its database");
            }
            Err(e) => error!("pinset: cannot reload the replica: {e}"),
        }
    }

    /// Publishes the replica's progress when it changed. Runs after every
    /// step, so the per-peer part (`synced`) is rebuilt only when a peer's
    /// entry differs from the one published.
    fn publish(&mut self) {
        let counts = self.counts;
        let at = now();
        let p = Progress {
            digest: self.core.digest(),
            changes: self.core.vv().count(),
            pins: counts.pins,
            tombstones: counts.tombstones,
            collect_waits_for: self.core.unheard(),
            pending_writes: self.core.pending_writes(),
            members: self.core.counting_members(at),
            stale: self.core.is_stale(),
            replica_id: self.replica_id.clone(),
            synced: BTreeMap::new(),
        };
        let (peers, core) = (&self.view.peers, &self.core);
        self.progress
            .send_if_modified(|old| replace_progress(old, p, peers, |id| core.synced_at(id)));
    }
}

/// Replaces `old` with `p` and, in its `synced`, when each of `peers` was
/// last synced with; says whether anything changed. The map is rebuilt
/// (every ID cloned) only when an entry differs.
fn replace_progress(
    old: &mut Progress,
    mut p: Progress,
    peers: &[PeerView],
    synced_at: impl Fn(&str) -> Option<std::time::Instant>,
) -> bool {
    let synced = std::mem::take(&mut old.synced);
    let same = synced.len() == peers.len()
        && peers
            .iter()
            .all(|q| synced.get(&q.id) == Some(&synced_at(&q.id)));
    p.synced = BTreeMap::new();
    let changed = !same || *old != p; // both without `synced` here
    p.synced = if same {
        synced
    } else {
        peers
            .iter()
            .map(|q| (q.id.clone(), synced_at(&q.id)))
            .collect()
    };
    *old = p;
    changed
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::role::Role;

    fn peer(id: &str) -> PeerView {
        PeerView {
            id: id.into(),
            role: Role::Worker,
            ipfs: None,
            disk_free: 0,
            pinset: None,
            held: None,
        }
    }

    /// The published progress is what a fresh build gives, and a change
    /// is reported exactly when it differs from the one before.
    #[test]
    fn progress_is_replaced_and_changes_reported_as_a_fresh_build_would() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let (a, b, c) = (peer("a"), peer("b"), peer("c"));
        type Case = (Vec<PeerView>, Vec<(&'static str, Instant)>, u64);
        let cases: Vec<Case> = vec![
            (vec![a.clone(), b.clone()], vec![], 1),
            (vec![a.clone(), b.clone()], vec![], 1), // nothing changed
            (vec![a.clone(), b.clone()], vec![], 2), // the digest moved
            (vec![a.clone(), b.clone()], vec![("a", t0)], 2), // a synced
            (vec![a.clone(), b.clone()], vec![("a", t1)], 2), // again
            (vec![a.clone(), b.clone()], vec![("a", t1)], 2), // nothing
            (vec![a.clone(), b.clone(), c.clone()], vec![("a", t1)], 2), // c came
            (vec![a.clone(), c.clone()], vec![("a", t1)], 2), // b went
            (vec![b.clone(), c.clone()], vec![], 2), // as many, not the same
            (vec![], vec![], 2),
        ];
        let mut old = Progress::default();
        for (i, (peers, at, digest)) in cases.into_iter().enumerate() {
            let synced_at = |id: &str| at.iter().find(|(i, _)| *i == id).map(|(_, t)| *t);
            let p = Progress {
                digest,
                ..Progress::default()
            };
            let mut fresh = p.clone();
            fresh.synced = peers
                .iter()
                .map(|q| (q.id.clone(), synced_at(&q.id)))
                .collect();
            let differs = old != fresh;
            let changed = replace_progress(&mut old, p, &peers, synced_at);
            assert_eq!(changed, differs, "case {i}");
            assert_eq!(old, fresh, "case {i}");
        }
    }
}
