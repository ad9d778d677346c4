//! The pinset replica as a pure state machine: inputs (client writes,
//! peers' pushes and pages, answers, the cluster view, time) in,
//! [`Effect`]s (durable writes, messages, replies) out. No sockets, no disk
//! and no clock in here: the shell (`pinset::actor`) and the simulator
//! drive the same code.
//!
//! # The contract
//! * **Acknowledged means durable on `write_copies` masters or workers.** A
//!   write is stamped ([`super::model`]), stored here and pushed to every
//!   live peer; it is answered once this node and `need - 1` other masters
//!   or workers have stored it durably, where `need` is `write_copies`
//!   capped by the eligible members this node knows (itself included). A
//!   node that knows no other member answers alone, with `copies: 1`.
//!   Members are remembered on disk: one that left gracefully stops
//!   counting, one that died counts until an operator removes it or it has
//!   not been seen for `member_expiry`. Too few live members to make the
//!   copies: refused at once, nothing stored. Copies not made within
//!   `write_timeout`: refused, the change kept here (it spreads when peers
//!   are reachable; retrying is harmless).
//! * **Nothing is undone but by a later change to the same CID**: states
//!   merge last-writer-wins per CID; a removal is a tombstone.
//! * **Every change reaches every replica**: pushed at once, and pulled by
//!   anti-entropy ([`super::sync`]) from masters and workers whose digest
//!   differs from this one's, one session at a time.
//! * **Authority:** pushes are taken only from live masters and workers;
//!   pages only from the peer asked; every change is checked, and one
//!   stamped too far ahead of this node's clock is refused.
//!
//! # Collecting removals
//! A tombstone may go once no replica can still hold, or send, a change it
//! overtook. A replica learns each member's vector from the last page of
//! its sessions with it (every master and worker is pulled from at least
//! every `pull_every` times their number). Every `collect_every` it takes a
//! snapshot of the members it has stored (those that left or died
//! included: only an operator's removal takes a member out): `S`, the
//! changes every one of them and this replica had seen, and `U`, the
//! changes any of them had seen. Once a later snapshot's `S` covers an
//! earlier one's `U`, that earlier `S` is confirmed, and once
//! `removal_horizon` has passed it is *collected*: its tombstones stamped
//! more than the horizon ago are dropped.
//! * every member has seen them, so holds that CID at or past them;
//! * every change any member could still push or serve from an older view
//!   (a write queued before it saw the removal, a page of an old session)
//!   was in that `U`, so every member has seen it too, and a replica takes
//!   no change it has already seen: nothing can bring the item back;
//! * a member's own later changes are later than every removal it had
//!   seen (its clock moved past them, also past stamps a vector names but
//!   a page never carried: the page's `collected.hlc`).
//!
//! What a replica collected goes with the last page of its sessions, and
//! the asker takes it in, with the peer's clock reading. A replica whose
//! vector does not cover a peer's collected vector (a leecher, a new node,
//! one an operator removed, one cut off for longer than the horizon) is
//! answered `behind` and asks for everything with an empty vector,
//! deleting what the pages show was overtaken ([`Effect::Prune`]); it
//! refuses pushes of changes that peer has seen until the session ends.
//! Confirmed snapshots are kept on disk; members' vectors in memory only
//! (after a restart, new snapshots wait until every member is heard).
//!
//! The limit: a replica no collecting replica counted (removed by an
//! operator, or never met by it) that returns after longer than the
//! horizon with a change older than a collected removal of the same CID,
//! which no counted member saw, brings that item back (a removal is undone,
//! never a pin lost).
//!
//! Durability: [`Effect::Persist`] must be carried out before any effect
//! that follows it (the shell commits every persist of a batch of inputs in
//! one transaction, then sends); everything the core must not forget is in
//! a persist, the rest is rebuilt on start.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::model::{Entry, Hlc, Op, Stamp, Vv};
use super::sync::{Collected, Cursor, check_page};
use crate::role::Role;
use crate::view::ClusterView;

/// Settings of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Masters or workers that must hold a change durably before it is
    /// acknowledged (this node included).
    pub write_copies: usize,
    /// How long a write may wait for its copies.
    pub write_timeout: Duration,
    /// A member not seen for this long stops counting for `write_copies`.
    pub member_expiry: Duration,
    /// Changes stamped further ahead of this node's clock are refused.
    pub max_clock_ahead: Duration,
    /// Push batches in flight to one peer, and changes in one batch.
    pub push_in_flight: usize,
    pub max_push: usize,
    /// Changes queued for one peer; past it the oldest are dropped (anti-entropy
    /// delivers them).
    pub max_queue: usize,
    /// Anti-entropy with some master or worker at least this often, even
    /// when digests agree.
    pub pull_every: Duration,
    /// A request unanswered for this long is given up.
    pub request_timeout: Duration,
    /// How often the members' vectors are compared for removals every
    /// member has seen (see *Collecting removals* above).
    pub collect_every: Duration,
    /// A removal is kept at least this long (and until every member has
    /// seen it).
    pub removal_horizon: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            write_copies: 2,
            write_timeout: Duration::from_secs(5),
            member_expiry: Duration::from_secs(24 * 3600),
            max_clock_ahead: Duration::from_secs(60),
            push_in_flight: 4,
            max_push: 2048,
            max_queue: 65_536,
            pull_every: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            collect_every: Duration::from_secs(10),
            removal_horizon: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Time as the shell (or the simulator) tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    /// This node's wall clock.
    pub unix_ms: u64,
}

/// A master or worker this node has met, as kept on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub role: Role,
    pub last_seen_ms: u64,
    /// Left gracefully: does not count.
    pub left: bool,
}

/// What a replica finds on disk when it starts.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// This replica's ID (random, non-zero, taken when its database was created).
    pub author: u64,
    pub vv: Vv,
    /// The highest stamp reading stored.
    pub hlc: u64,
    pub members: BTreeMap<String, Member>,
    /// What this replica has collected.
    pub collected: Vv,
    /// Confirmed snapshots waiting out the removal horizon.
    pub confirmed: Vec<(u64, Vv)>,
}

/// A page of changes, as the peer asked sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageAnswer {
    pub entries: Vec<Entry>,
    /// In CID order (see [`super::sync`]).
    pub by_cid: bool,
    /// Where the next page starts; `None`: the last page, which carries `vv`.
    pub next: Option<Cursor>,
    pub vv: Option<Vv>,
    /// The peer collected removals the asker has not seen: ask again with
    /// an empty vector for everything (entries, `next` and `vv` are empty).
    pub behind: bool,
    /// With `vv`: what the peer has collected.
    pub collected: Option<Collected>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    View(ClusterView),
    /// A client's change (`token` names the answer).
    Write {
        token: u64,
        op: Op,
    },
    /// A peer pushes changes; answer with [`Effect::Reply`] of `token`.
    Push {
        from: String,
        token: u64,
        entries: Vec<Entry>,
    },
    /// A push was answered (or failed).
    Pushed {
        to: String,
        batch: u64,
        result: Result<(), String>,
    },
    /// A page asked for with [`Effect::Pull`] came (or did not).
    Page {
        from: String,
        session: u64,
        result: Result<PageAnswer, String>,
    },
    /// An operator removes a member: it stops counting for `write_copies`.
    RemoveMember {
        id: String,
    },
    Tick,
    /// The end of a batch of inputs: send what the writes queued, a batch
    /// per peer (writes taken together travel together).
    Flush,
}

/// One durable transaction's worth of changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persist {
    /// Merged into the state, last writer wins per CID.
    pub entries: Vec<Entry>,
    /// `entries` go into the state only, not into the by-author index (a
    /// bulk session in CID order; `floor` covers them).
    pub unindexed: bool,
    /// Taken into the index floor: changes that may be stored unindexed.
    pub floor: Vv,
    /// Taken into the stored vector.
    pub seen: Vv,
    /// The highest stamp reading so far.
    pub hlc: u64,
    /// Members added or changed (`None`: removed).
    pub members: Vec<(String, Option<Member>)>,
}

impl Persist {
    /// Stores `entries` and marks them seen (tests, tools).
    pub fn of(entries: Vec<Entry>) -> Persist {
        let mut seen = Vv::default();
        for e in &entries {
            seen.insert(e.id());
        }
        Persist {
            hlc: entries.iter().map(|e| e.stamp.hlc).max().unwrap_or(0),
            entries,
            seen,
            ..Persist::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Persist(Persist),
    Push {
        to: String,
        batch: u64,
        entries: Vec<Entry>,
    },
    /// Ask `to` for the changes this replica lacks: the first page of a
    /// session carries `vv`, later ones resume at `from`.
    Pull {
        to: String,
        session: u64,
        vv: Option<Vv>,
        from: Cursor,
    },
    /// The answer to a peer's push.
    Reply {
        token: u64,
        result: Result<(), String>,
    },
    /// The answer to a client's write.
    Written {
        token: u64,
        result: Result<Written, WriteError>,
    },
    /// Drop the tombstones whose change IDs `upto` names (every member has
    /// seen them) stamped below `before` (the removal horizon ago), except
    /// those of CIDs this node's holder still holds; remember `upto` as
    /// collected, and forget the confirmed snapshots it covers. Losing it
    /// in a crash is harmless.
    Collect {
        upto: Vv,
        before: u64,
    },
    /// Store a confirmed snapshot (`at`: this node's wall clock, ms; the
    /// same `at` again replaces it). Losing it only delays collection.
    Confirm {
        at: u64,
        upto: Vv,
    },
    /// A page of a session that asked for everything (an empty vector),
    /// carried out before the persists of its batch:
    /// the peer's state holds nothing else with CIDs in `[from, to)` than
    /// `keep`, so any change stored here with a CID in that range outside
    /// `keep` whose ID `seen` (the peer's vector) names was overtaken by a
    /// removal the peer collected: delete it. Harmless to lose or repeat.
    Prune {
        from: String,
        to: Option<String>,
        keep: Vec<String>,
        seen: Vv,
    },
}

/// An acknowledged change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub stamp: Stamp,
    /// Masters and workers holding it durably when it was answered.
    pub copies: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("read-only role: leechers take no writes")]
    ReadOnly,
    #[error("index records are written only by masters")]
    MastersOnly,
    #[error(
        "{need} copies are required (pins.write_copies, capped by the masters and workers this \
         node knows) but only {reachable} masters or workers are reachable; nothing was stored"
    )]
    Unreachable { need: usize, reachable: usize },
    #[error(
        "only {have} of the {need} required copies were made within {secs} s; the change is kept \
         on {have} node(s) and will spread when peers are reachable; retrying is harmless"
    )]
    Timeout { need: usize, have: usize, secs: u64 },
    #[error("the pinset task stopped")]
    Stopped,
    #[error("storage error: {0}")]
    Storage(String),
}

struct Pending {
    need: usize,
    have: BTreeSet<String>,
    stamp: Stamp,
    deadline: Instant,
}

#[derive(Default)]
struct Outbox {
    /// Changes not yet sent, with the write each answers (if local).
    queue: VecDeque<(Entry, Option<u64>)>,
    /// batch → (sent at, the writes it carries).
    in_flight: BTreeMap<u64, (Instant, Vec<u64>)>,
}

struct Session {
    peer: String,
    id: u64,
    /// The vector sent: nothing in it may come back.
    had: Vv,
    asked: Cursor,
    /// The session goes in CID order: its changes are stored unindexed
    /// (the first page's vector, kept here, went into the index floor) and
    /// marked seen only with the last page's vector.
    bulk: Option<Vv>,
    sent_at: Instant,
    started: Instant,
    pages: usize,
    /// The peer's digest when the session started.
    digest: Option<u64>,
}

/// Pages one anti-entropy session may take, and how long.
pub const MAX_SESSION_PAGES: usize = 4096;
pub const MAX_SESSION_TIME: Duration = Duration::from_secs(600);
/// After a finished session with a peer, the next waits at least this long
/// (under a stream of writes every heartbeat shows a new digest; the pushes
/// deliver those changes, and a session per heartbeat would only repeat them).
pub const MIN_PULL_GAP: Duration = Duration::from_secs(1);
/// A stored member's last sighting is refreshed on disk this often.
const MEMBER_REFRESH_MS: u64 = 3_600_000;
/// Snapshots of the members' vectors kept while waiting for a later one
/// to cover them.
const MAX_SNAPSHOTS: usize = 64;
/// Every this many snapshot periods, what was collected is collected again
/// (cheap: a range read per author) for the tombstones kept back then.
const RECOLLECT_EVERY: u32 = 30;
/// Confirmed snapshots waiting out the removal horizon (newer ones within
/// a 64th of it replace the last).
const MAX_PENDING: u32 = 64;

/// One node's pinset replica.
pub struct Replica {
    cfg: Config,
    me: String,
    role: Role,
    author: u64,
    vv: Vv,
    digest: u64,
    hlc: Hlc,
    hlc_stored: u64,
    members: BTreeMap<String, Member>,
    /// When each member's sighting was last stored.
    stored_seen: BTreeMap<String, u64>,
    view: ClusterView,
    pending: BTreeMap<u64, Pending>,
    out: BTreeMap<String, Outbox>,
    next_batch: u64,
    session: Option<Session>,
    next_session: u64,
    /// Per peer: the digest of the last completed session's start, when
    /// that session started, and when the next attempt may start.
    pulled: BTreeMap<String, (Option<u64>, Instant)>,
    backoff: BTreeMap<String, (Instant, Duration)>,
    last_pull: Option<Instant>,
    /// Peers whose vector showed this replica's ID beyond its own history.
    stale: bool,
    /// Each master's or worker's vector, as its last page showed it.
    reports: BTreeMap<String, Vv>,
    /// (what every member had seen, what some member had seen), oldest first.
    snapshots: VecDeque<(Vv, Vv)>,
    /// What every member had seen, as confirmed at that time (this node's
    /// wall clock, ms), oldest first; kept on disk.
    confirmed: VecDeque<(u64, Vv)>,
    next_snapshot: Instant,
    collected: Vv,
    /// When collection runs again over everything collected so far
    /// (tombstones kept for the holder go then).
    next_recollect: Instant,
}

impl Replica {
    pub fn new(me: String, role: Role, cfg: Config, loaded: Loaded, now: Now) -> Replica {
        let digest = loaded.vv.digest();
        let mut hlc = Hlc::new(loaded.hlc);
        hlc.observe(Hlc::at(now.unix_ms));
        Replica {
            cfg,
            me,
            role,
            author: loaded.author,
            stored_seen: loaded
                .members
                .iter()
                .map(|(k, m)| (k.clone(), m.last_seen_ms))
                .collect(),
            members: loaded.members,
            vv: loaded.vv,
            digest,
            hlc,
            hlc_stored: loaded.hlc,
            view: ClusterView::default(),
            pending: BTreeMap::new(),
            out: BTreeMap::new(),
            next_batch: 1,
            session: None,
            // Unpredictable across restarts, so a peer never takes a new
            // session for one it still serves from before.
            next_session: (loaded.author ^ now.unix_ms.rotate_left(29))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                | 1,
            pulled: BTreeMap::new(),
            backoff: BTreeMap::new(),
            last_pull: None,
            stale: false,
            reports: BTreeMap::new(),
            snapshots: VecDeque::new(),
            confirmed: loaded.confirmed.into_iter().collect(),
            next_snapshot: now.at,
            collected: loaded.collected,
            next_recollect: now.at,
        }
    }

    /// The digest of the changes seen (heartbeats carry it).
    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn vv(&self) -> &Vv {
        &self.vv
    }

    pub fn author(&self) -> u64 {
        self.author
    }

    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    /// Writes waiting for their copies.
    pub fn pending_writes(&self) -> usize {
        self.pending.len()
    }

    /// Whether anything here waits on a deadline shorter than the idle tick:
    /// a write waiting for its copies, a batch in flight or queued, an
    /// anti-entropy session. Otherwise only the snapshot, the pull timer and
    /// back-offs wait, and they are counted in seconds.
    pub fn busy(&self) -> bool {
        !self.pending.is_empty()
            || self.session.is_some()
            || self
                .out
                .values()
                .any(|o| !o.queue.is_empty() || !o.in_flight.is_empty())
    }

    /// When this replica last finished an anti-entropy session with `peer`
    /// (its start), or found their digests equal; the keeper plans only from
    /// a replica synced with every live master and worker since it leads.
    pub fn synced_at(&self, peer: &str) -> Option<Instant> {
        self.pulled.get(peer).map(|(_, at)| *at)
    }

    /// Whether a peer's vector showed this replica's ID used beyond its own
    /// history (its database was restored from an old copy).
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Masters and workers that count for `write_copies`, this node excluded.
    pub fn counting_members(&self, now: Now) -> usize {
        let expiry = self.cfg.member_expiry.as_millis() as u64;
        self.members
            .values()
            .filter(|m| {
                m.role.can_lead() && !m.left && now.unix_ms.saturating_sub(m.last_seen_ms) < expiry
            })
            .count()
    }

    pub fn step(&mut self, input: Input, now: Now) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::View(v) => self.on_view(v, now, &mut fx),
            Input::Write { token, op } => self.on_write(token, op, now, &mut fx),
            Input::Push {
                from,
                token,
                entries,
            } => {
                let result = self.on_push(&from, entries, now, &mut fx);
                fx.push(Effect::Reply { token, result });
            }
            Input::Pushed { to, batch, result } => self.on_pushed(&to, batch, result, now, &mut fx),
            Input::Page {
                from,
                session,
                result,
            } => self.on_page(&from, session, result, now, &mut fx),
            Input::RemoveMember { id } => {
                if self.members.remove(&id).is_some() {
                    self.stored_seen.remove(&id);
                    self.reports.remove(&id);
                    fx.push(Effect::Persist(Persist {
                        members: vec![(id, None)],
                        ..self.persist_base()
                    }));
                }
            }
            Input::Tick => self.on_tick(now, &mut fx),
            Input::Flush => self.pump_all(now, &mut fx),
        }
        self.maybe_pull(now, &mut fx);
        fx
    }

    fn persist_base(&self) -> Persist {
        Persist {
            hlc: self.hlc_stored,
            ..Persist::default()
        }
    }

    fn eligible(&self, id: &str) -> bool {
        self.view.peer(id).is_some_and(|p| p.role.can_lead())
            || self
                .members
                .get(id)
                .is_some_and(|m| m.role.can_lead() && !m.left)
    }

    fn on_view(&mut self, v: ClusterView, now: Now, fx: &mut Vec<Effect>) {
        let mut changed = Vec::new();
        for p in &v.peers {
            let m = Member {
                role: p.role,
                last_seen_ms: now.unix_ms,
                left: false,
            };
            let stored = self.stored_seen.get(&p.id).copied();
            let known = self.members.get(&p.id).copied();
            let refresh = stored.is_none_or(|t| now.unix_ms.saturating_sub(t) >= MEMBER_REFRESH_MS);
            let differs = known.is_none_or(|k| k.role != m.role || k.left);
            if !p.role.can_lead() && known.is_none() {
                continue; // leechers are not members
            }
            self.members.insert(p.id.clone(), m);
            if differs || refresh {
                self.stored_seen.insert(p.id.clone(), now.unix_ms);
                changed.push((p.id.clone(), Some(m)));
            }
            // Digests equal: in sync as of now.
            if p.pinset == Some(self.digest) {
                self.pulled
                    .insert(p.id.clone(), (Some(self.digest), now.at));
            }
        }
        for id in &v.left {
            if let Some(m) = self.members.get_mut(id)
                && !m.left
            {
                m.left = true;
                changed.push((id.clone(), Some(*m)));
            }
        }
        // A peer back in the view (a healed link, a restart) is asked at
        // once, whatever back-off its failures built up.
        for p in &v.peers {
            if self.view.peer(&p.id).is_none() {
                self.backoff.remove(&p.id);
            }
        }
        // Peers no longer live get no pushes; their batches in flight are
        // given up (answers may still come and are ignored).
        self.out.retain(|id, _| v.peer(id).is_some());
        self.view = v;
        self.role = self.view.role.unwrap_or(self.role);
        if !changed.is_empty() {
            fx.push(Effect::Persist(Persist {
                members: changed,
                ..self.persist_base()
            }));
        }
    }

    fn on_write(&mut self, token: u64, op: Op, now: Now, fx: &mut Vec<Effect>) {
        if !self.role.can_lead() || (op.is_index() && self.role != Role::Master) {
            let e = if self.role.can_lead() {
                WriteError::MastersOnly
            } else {
                WriteError::ReadOnly
            };
            fx.push(Effect::Written {
                token,
                result: Err(e),
            });
            return;
        }
        let need = self
            .cfg
            .write_copies
            .clamp(1, 1 + self.counting_members(now));
        let reachable = 1 + self.view.peers.iter().filter(|p| p.role.can_lead()).count();
        if reachable < need {
            fx.push(Effect::Written {
                token,
                result: Err(WriteError::Unreachable { need, reachable }),
            });
            return;
        }
        let stamp = Stamp {
            hlc: self.hlc.tick(now.unix_ms),
            author: self.author,
        };
        let seq = self.vv.get(self.author).map_or(0, |r| r.max()) + 1;
        let entry = Entry { stamp, seq, op };
        self.see(entry.id());
        let mut seen = Vv::default();
        seen.insert(entry.id());
        self.hlc_stored = self.hlc_stored.max(stamp.hlc);
        fx.push(Effect::Persist(Persist {
            entries: vec![entry.clone()],
            seen,
            ..self.persist_base()
        }));
        if need <= 1 {
            fx.push(Effect::Written {
                token,
                result: Ok(Written { stamp, copies: 1 }),
            });
        } else {
            self.pending.insert(
                token,
                Pending {
                    need,
                    have: BTreeSet::from([self.me.clone()]),
                    stamp,
                    deadline: now.at + self.cfg.write_timeout,
                },
            );
        }
        // Sent at the next flush, with the other writes of this batch.
        for p in &self.view.peers {
            let q = &mut self.out.entry(p.id.clone()).or_default().queue;
            q.push_back((entry.clone(), (need > 1).then_some(token)));
            if q.len() > self.cfg.max_queue {
                q.pop_front();
            }
        }
    }

    /// Pumps every peer with changes queued. The others have nothing to
    /// send, and this runs at every flush (the end of each batch of
    /// inputs) and tick, so it does not clone every peer's ID.
    fn pump_all(&mut self, now: Now, fx: &mut Vec<Effect>) {
        let ids: Vec<String> = self
            .out
            .iter()
            .filter(|(_, o)| !o.queue.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.pump(&id, now, fx);
        }
    }

    /// Sends queued changes to `id` while it has room for batches in flight.
    fn pump(&mut self, id: &str, now: Now, fx: &mut Vec<Effect>) {
        let Some(out) = self.out.get_mut(id) else {
            return;
        };
        while out.in_flight.len() < self.cfg.push_in_flight && !out.queue.is_empty() {
            // Index records may be large (vectors): a batch also stays
            // under the wire's byte bound.
            let (mut n, mut bytes) = (0, 0);
            for (e, _) in out.queue.iter().take(self.cfg.max_push) {
                bytes += e.size_bound();
                if n > 0 && bytes > crate::wire::MAX_PINSET_BATCH_BYTES {
                    break;
                }
                n += 1;
            }
            let (entries, tokens): (Vec<Entry>, Vec<Option<u64>>) = out.queue.drain(..n).unzip();
            let batch = self.next_batch;
            self.next_batch += 1;
            out.in_flight
                .insert(batch, (now.at, tokens.into_iter().flatten().collect()));
            fx.push(Effect::Push {
                to: id.to_owned(),
                batch,
                entries,
            });
        }
    }

    /// Checks a change a peer sent against this node's clock.
    fn check_entry(&self, e: &Entry, now: Now) -> Result<(), String> {
        e.check()?;
        let limit = Hlc::at(now.unix_ms + self.cfg.max_clock_ahead.as_millis() as u64);
        if e.stamp.hlc > limit {
            return Err(format!(
                "a change stamped {} ms ahead of this node's clock (more than {} s): check the \
                 clocks",
                Hlc::millis(e.stamp.hlc).saturating_sub(now.unix_ms),
                self.cfg.max_clock_ahead.as_secs()
            ));
        }
        Ok(())
    }

    /// Marks a change seen (in memory; the caller persists it).
    fn see(&mut self, id: (u64, u64)) {
        if self.vv.insert(id) {
            self.digest = self.vv.digest();
        }
    }

    /// Stores changes (and marks them seen) in one persist.
    fn take(&mut self, mut entries: Vec<Entry>, extra: Option<&Vv>, fx: &mut Vec<Effect>) {
        // Seen already: held, overtaken, or overtaken by a removal since
        // collected (which must not come back).
        entries.retain(|e| !self.vv.contains(e.id()));
        let mut seen = Vv::default();
        let mut grew = false;
        for e in &entries {
            self.hlc.observe(e.stamp.hlc);
            self.hlc_stored = self.hlc_stored.max(e.stamp.hlc);
            seen.insert(e.id());
            grew |= self.vv.insert(e.id());
        }
        if let Some(v) = extra {
            seen.union(v);
            grew |= !self.vv.union(v).is_empty();
        }
        if grew {
            self.digest = self.vv.digest();
        }
        self.notice_stale(&seen);
        fx.push(Effect::Persist(Persist {
            entries,
            seen,
            ..self.persist_base()
        }));
    }

    /// A peer knows changes under this replica's ID that it never made: this
    /// database is an old copy (restored from a backup?). Reported in the
    /// status and the log so the operator can act.
    fn notice_stale(&mut self, seen: &Vv) {
        let mine = self.vv.get(self.author).map_or(0, |r| r.max());
        if seen.get(self.author).is_some_and(|r| r.max() > mine) {
            self.stale = true;
        }
    }

    fn on_push(
        &mut self,
        from: &str,
        entries: Vec<Entry>,
        now: Now,
        fx: &mut Vec<Effect>,
    ) -> Result<(), String> {
        let Some(role) = self
            .view
            .peer(from)
            .map(|p| p.role)
            .filter(|r| r.can_lead())
        else {
            return Err(format!("{from} is not a live master or worker"));
        };
        // A push carries only its sender's own writes, and only masters
        // write index records.
        if role != Role::Master && entries.iter().any(|e| e.op.is_index()) {
            return Err(format!(
                "{from} is a {role}: index records are written only by masters"
            ));
        }
        for e in &entries {
            self.check_entry(e, now)?;
        }
        // While this replica takes everything from a peer that collected
        // removals, a change that peer has seen either comes with the
        // session or was overtaken by one of them: taken now, after its
        // removal was pruned, it would come back. Refused: nothing is
        // counted, and the session brings it.
        if let Some(Session {
            peer,
            bulk: Some(theirs),
            had,
            ..
        }) = &self.session
            && had.count() == 0
            && entries
                .iter()
                .any(|e| theirs.contains(e.id()) && !self.vv.contains(e.id()))
        {
            return Err(format!("syncing everything from {peer}; retry later"));
        }
        self.take(entries, None, fx);
        Ok(())
    }

    fn on_pushed(
        &mut self,
        to: &str,
        batch: u64,
        result: Result<(), String>,
        now: Now,
        fx: &mut Vec<Effect>,
    ) {
        let Some((_, tokens)) = self
            .out
            .get_mut(to)
            .and_then(|o| o.in_flight.remove(&batch))
        else {
            return;
        };
        if result.is_ok() && self.eligible(to) {
            for token in tokens {
                let Some(p) = self.pending.get_mut(&token) else {
                    continue;
                };
                p.have.insert(to.to_owned());
                if p.have.len() >= p.need {
                    let p = self.pending.remove(&token).expect("just seen");
                    fx.push(Effect::Written {
                        token,
                        result: Ok(Written {
                            stamp: p.stamp,
                            copies: p.have.len(),
                        }),
                    });
                }
            }
        }
        self.pump(to, now, fx);
    }

    fn on_page(
        &mut self,
        from: &str,
        session: u64,
        result: Result<PageAnswer, String>,
        now: Now,
        fx: &mut Vec<Effect>,
    ) {
        let Some(s) = self.session.take_if(|s| s.peer == from && s.id == session) else {
            return;
        };
        if let Ok(page) = &result
            && page.behind
        {
            let well_formed = page.entries.is_empty() && page.next.is_none() && page.vv.is_none();
            if well_formed && s.pages == 0 && s.had.count() > 0 {
                // Everything again, pruning what the peer collected.
                tracing::info!(peer = %from, "pinset: behind the peer's collected removals; syncing everything from it");
                self.start_session(s.peer, Vv::default(), s.digest, now, fx);
            } else {
                self.fail_pull(from, now);
            }
            return;
        }
        let checked = result.and_then(|page| {
            check_page(
                &page.entries,
                page.by_cid,
                &s.asked,
                page.next.as_ref(),
                &s.had,
            )?;
            let first_bulk = s.pages == 0 && page.by_cid && page.next.is_some();
            match (&page.next, &page.vv) {
                (Some(_), Some(_)) if !first_bulk => {
                    return Err("a vector with a page that is not the last".into());
                }
                (None, None) => return Err("the last page came without a vector".into()),
                _ => {}
            }
            if let Some(v) = &page.vv {
                v.check()?;
            }
            let limit = Hlc::at(now.unix_ms + self.cfg.max_clock_ahead.as_millis() as u64);
            match &page.collected {
                Some(_) if page.vv.is_none() => {
                    return Err("what was collected without a vector".into());
                }
                Some(c) if c.hlc > limit => {
                    return Err("a clock reading ahead of this node's clock".into());
                }
                Some(c) => c.vv.check()?,
                None => {}
            }
            for e in &page.entries {
                self.check_entry(e, now)?;
            }
            if s.pages + 1 >= MAX_SESSION_PAGES
                || now.at.saturating_duration_since(s.started) > MAX_SESSION_TIME
            {
                return Err("session over its page or time budget".into());
            }
            Ok((page, first_bulk))
        });
        match checked {
            Err(e) => {
                tracing::debug!(peer = %from, error = %e, "pinset: anti-entropy failed");
                self.fail_pull(from, now);
            }
            Ok((page, first_bulk)) => {
                let bulk = if first_bulk {
                    page.vv.clone()
                } else {
                    s.bulk.clone()
                };
                let last = page.next.is_none();
                if let Some(v) = &page.vv {
                    self.reports.insert(from.to_owned(), v.clone());
                }
                if let Some(c) = &page.collected {
                    // The vector names changes whose stamps this replica may
                    // never see (overtaken, or collected): its clock moves
                    // past them all the same, so its own later changes are
                    // later than any of them.
                    self.hlc.observe(c.hlc);
                    self.hlc_stored = self.hlc_stored.max(c.hlc);
                }
                // The peer sends its whole state when asked with an empty
                // vector: what it lacks in this page's range was collected.
                // Pruned before the page's vector is taken in, so no crash
                // leaves a seen removal beside the change it overtook.
                let prune = (s.had.count() == 0 && page.by_cid)
                    .then(|| bulk.clone().or_else(|| page.vv.clone()))
                    .flatten()
                    .map(|seen| Effect::Prune {
                        from: match &s.asked {
                            Cursor::Cid(c) => c.clone(),
                            Cursor::Author { .. } => String::new(),
                        },
                        to: match &page.next {
                            Some(Cursor::Cid(c)) => Some(c.clone()),
                            _ => None,
                        },
                        keep: page.entries.iter().map(|e| e.cid().to_owned()).collect(),
                        seen,
                    });
                fx.extend(prune);
                if let Some(theirs) = &bulk {
                    self.take_bulk(
                        page.entries,
                        theirs,
                        first_bulk,
                        last.then_some(()).and(page.vv.as_ref()),
                        fx,
                    );
                } else {
                    self.take(page.entries, page.vv.as_ref(), fx);
                }
                // The peer's collection is this replica's too once its
                // vector is taken in (so others behind it learn it here).
                if let Some(c) = page
                    .collected
                    .filter(|c| last && !self.collected.covers(&c.vv))
                {
                    self.collected.union(&c.vv);
                    fx.push(Effect::Collect {
                        upto: c.vv,
                        before: self.before(now),
                    });
                }
                match page.next {
                    Some(next) => {
                        fx.push(Effect::Pull {
                            to: s.peer.clone(),
                            session: s.id,
                            vv: None,
                            from: next.clone(),
                        });
                        self.session = Some(Session {
                            asked: next,
                            sent_at: now.at,
                            pages: s.pages + 1,
                            bulk,
                            ..s
                        });
                    }
                    None => {
                        tracing::debug!(
                            peer = %from,
                            pages = s.pages + 1,
                            bulk = s.bulk.is_some() || first_bulk,
                            ms = now.at.saturating_duration_since(s.started).as_millis() as u64,
                            "pinset: anti-entropy done"
                        );
                        self.backoff.remove(from);
                        self.pulled.insert(s.peer, (s.digest, s.started));
                    }
                }
            }
        }
    }

    /// Stores a page of a session in CID order: unindexed, and not marked
    /// seen change by change (only `last`, the peer's vector, marks them all
    /// at the end). The index floor covers them before or as they are
    /// stored: `theirs` (the peer's vector, with the first page) and the IDs
    /// of any change in the page it does not name.
    fn take_bulk(
        &mut self,
        mut entries: Vec<Entry>,
        theirs: &Vv,
        first: bool,
        last: Option<&Vv>,
        fx: &mut Vec<Effect>,
    ) {
        entries.retain(|e| !self.vv.contains(e.id()));
        let mut floor = if first { theirs.clone() } else { Vv::default() };
        for e in &entries {
            self.hlc.observe(e.stamp.hlc);
            self.hlc_stored = self.hlc_stored.max(e.stamp.hlc);
            if !theirs.contains(e.id()) {
                floor.insert(e.id());
            }
        }
        let mut seen = Vv::default();
        if let Some(v) = last {
            seen = v.clone();
            if !self.vv.union(v).is_empty() {
                self.digest = self.vv.digest();
            }
            self.notice_stale(v);
        }
        fx.push(Effect::Persist(Persist {
            entries,
            unindexed: true,
            floor,
            seen,
            ..self.persist_base()
        }));
    }

    fn fail_pull(&mut self, peer: &str, now: Now) {
        let wait = self
            .backoff
            .get(peer)
            .map_or(Duration::from_millis(500), |(_, w)| {
                (*w * 2).min(Duration::from_secs(30))
            });
        self.backoff.insert(peer.to_owned(), (now.at + wait, wait));
    }

    fn on_tick(&mut self, now: Now, fx: &mut Vec<Effect>) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.at >= p.deadline)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            let p = self.pending.remove(&token).expect("listed");
            fx.push(Effect::Written {
                token,
                result: Err(WriteError::Timeout {
                    need: p.need,
                    have: p.have.len(),
                    secs: self.cfg.write_timeout.as_secs(),
                }),
            });
        }
        let timeout = self.cfg.request_timeout;
        for out in self.out.values_mut() {
            out.in_flight
                .retain(|_, (at, _)| now.at.saturating_duration_since(*at) < timeout);
        }
        self.pump_all(now, fx);
        if now.at >= self.next_snapshot {
            self.next_snapshot = now.at + self.cfg.collect_every;
            self.snapshot(now, fx);
            self.release(now, fx);
        }
        if now.at >= self.next_recollect {
            self.next_recollect = now.at + self.cfg.collect_every * RECOLLECT_EVERY;
            if self.collected.count() > 0 {
                fx.push(Effect::Collect {
                    upto: self.collected.clone(),
                    before: self.before(now),
                });
            }
        }
        if let Some(s) = &self.session
            && now.at.saturating_duration_since(s.sent_at) >= timeout
        {
            let peer = s.peer.clone();
            self.session = None;
            self.fail_pull(&peer, now);
        }
    }

    /// Starts an anti-entropy session when none runs: with a master or
    /// worker whose digest differs from this replica's and from the one it
    /// had when last pulled from; or, every `pull_every`, with the one
    /// pulled from least recently.
    fn maybe_pull(&mut self, now: Now, fx: &mut Vec<Effect>) {
        if self.session.is_some() {
            return;
        }
        let ready = |id: &str| {
            self.backoff
                .get(id)
                .is_none_or(|(until, _)| now.at >= *until)
        };
        let candidates = self
            .view
            .peers
            .iter()
            .filter(|p| p.role.can_lead() && ready(&p.id));
        // Never pulled from sorts first (`None` < `Some`).
        let mut pick: Option<(Option<Instant>, &str)> = None;
        let mut oldest: Option<(Option<Instant>, &str)> = None;
        for p in candidates {
            let last = self.pulled.get(&p.id);
            let at = last.map(|(_, t)| *t);
            let differs = p
                .pinset
                .is_some_and(|d| d != self.digest && last.is_none_or(|(ld, _)| *ld != Some(d)));
            if differs && pick.is_none_or(|(t, _)| at < t) {
                pick = Some((at, p.id.as_str()));
            }
            if oldest.is_none_or(|(t, _)| at < t) {
                oldest = Some((at, p.id.as_str()));
            }
        }
        let due = self
            .last_pull
            .is_none_or(|t| now.at.saturating_duration_since(t) >= self.cfg.pull_every);
        let target = match (pick, oldest) {
            (Some((_, id)), _) => id.to_owned(),
            (None, Some((_, id))) if due => id.to_owned(),
            _ => return,
        };
        let digest = self.view.peer(&target).and_then(|p| p.pinset);
        tracing::debug!(peer = %target, ?digest, mine = self.digest, "pinset: anti-entropy starts");
        self.start_session(target, self.vv.clone(), digest, now, fx);
    }

    /// Asks `peer` for the changes `had` does not name.
    fn start_session(
        &mut self,
        peer: String,
        had: Vv,
        digest: Option<u64>,
        now: Now,
        fx: &mut Vec<Effect>,
    ) {
        let id = self.next_session;
        self.next_session = self.next_session.wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.last_pull = Some(now.at);
        fx.push(Effect::Pull {
            to: peer.clone(),
            session: id,
            vv: Some(had.clone()),
            from: Cursor::default(),
        });
        self.session = Some(Session {
            peer,
            id,
            had,
            asked: Cursor::default(),
            bulk: None,
            sent_at: now.at,
            started: now.at,
            pages: 0,
            digest,
        });
    }

    /// Takes a snapshot of the members' vectors; the newest earlier one it
    /// confirms waits out the removal horizon (see the module docs).
    fn snapshot(&mut self, now: Now, fx: &mut Vec<Effect>) {
        let (mut every, mut some) = (self.vv.clone(), self.vv.clone());
        for id in self.counted() {
            let Some(r) = self.reports.get(id) else {
                return; // not heard since this replica started
            };
            every = every.intersect(r);
            some.union(r);
        }
        if self.snapshots.len() >= MAX_SNAPSHOTS {
            self.snapshots.pop_front();
        }
        self.snapshots.push_back((every, some));
        let now_every = &self.snapshots.back().expect("just pushed").0;
        let Some(k) = self
            .snapshots
            .iter()
            .rposition(|(_, u)| now_every.covers(u))
        else {
            return;
        };
        let (upto, _) = self
            .snapshots
            .drain(..=k)
            .next_back()
            .expect("k is in range");
        // Collected once the removal horizon has passed: until then what
        // is collected (which others are told, and judged behind by) stays
        // well behind what every member has seen.
        let step = (self.cfg.removal_horizon / MAX_PENDING).as_millis() as u64;
        match self.confirmed.back_mut() {
            // Nothing new (a quiet cluster): nothing to store.
            Some((_, last)) if *last == upto => return,
            Some((at, last)) if now.unix_ms.saturating_sub(*at) < step => *last = upto,
            _ => self.confirmed.push_back((now.unix_ms, upto)),
        }
        let (at, upto) = self.confirmed.back().expect("just set").clone();
        fx.push(Effect::Confirm { at, upto });
    }

    /// The members collection counts: masters and workers met, this node
    /// excluded (those that left or died included).
    fn counted(&self) -> impl Iterator<Item = &String> {
        self.members
            .iter()
            .filter(|(id, m)| **id != self.me && m.role.can_lead())
            .map(|(id, _)| id)
    }

    /// Collects the confirmed snapshots the removal horizon has passed.
    fn release(&mut self, now: Now, fx: &mut Vec<Effect>) {
        let horizon = self.cfg.removal_horizon.as_millis() as u64;
        while self
            .confirmed
            .front()
            .is_some_and(|(at, _)| now.unix_ms.saturating_sub(*at) >= horizon)
        {
            let (_, upto) = self.confirmed.pop_front().expect("checked");
            if !self.collected.covers(&upto) {
                self.collected.union(&upto);
                fx.push(Effect::Collect {
                    upto,
                    before: self.before(now),
                });
            }
        }
    }

    /// Removals stamped below this reading are old enough to collect.
    fn before(&self, now: Now) -> u64 {
        Hlc::at(
            now.unix_ms
                .saturating_sub(self.cfg.removal_horizon.as_millis() as u64),
        )
    }

    /// Masters and workers whose vector this replica has not heard since it
    /// started (removals wait for them; an operator may remove the gone).
    pub fn unheard(&self) -> Vec<String> {
        self.counted()
            .filter(|id| !self.reports.contains_key(*id))
            .cloned()
            .collect()
    }

    /// Removals this replica may have collected.
    pub fn collected(&self) -> &Vv {
        &self.collected
    }
}

#[cfg(test)]
mod tests;
