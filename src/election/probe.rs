//! Probing the leader, as a pure state machine: how a node finds out within
//! seconds that the leader went silent (frozen, cut off, powered down with
//! its connections open), without one slow or lossy link deposing a live
//! leader.
//!
//! * Only the nodes next in line probe the leader (the node loop decides
//!   who; see `docs/failure-detection.md`), so the leader answers a bounded
//!   number of probes whatever the cluster's size.
//! * A probe that goes unanswered within its deadline counts as a failure;
//!   after `failures` in a row the prober asks other members to probe the
//!   leader for it (SWIM's indirect probe). One "reachable" from any of them,
//!   or a late answer of the leader itself, clears it: the fault is on this
//!   node's own path. Only when every one of them fails too is the leader
//!   declared [`Probe::Silent`].
//! * The deadline adapts, so a fast LAN finds a silent leader fast and a
//!   lossy or loaded one does not raise false alarms: it is
//!   [`RTT_FACTOR`] times the slowest of the last [`RTT_SAMPLES`] answers
//!   within [`RTT_WINDOW`] (late ones included), never below `timeout` nor above `timeout_max`,
//!   and [`COLD_DEADLINE`] (within those bounds) until the target has
//!   answered [`WARM_ANSWERS`] probes of this node (a slowest of one or two
//!   answers says little about a lossy link), and stretched by the node's *local health* (Lifeguard): every
//!   suspicion that turns out wrong (a late answer, another member reaching
//!   the leader) raises it, [`HEALTH_DECAY`] answers in time lower it. A
//!   node whose own loop stalled (its ticks came late) extends its
//!   deadlines by the stall: answers may be waiting unread.
//! * The leader's successor, asked by a prober to probe the leader, starts
//!   its own last round at once ([`Prober::urge`]) rather than waiting for
//!   its own probes to fail, so its claim rests on every path failing.
//! * A node that is not a prober checks for itself before it moves:
//!   [`Prober::verify`] sends `check_attempts` probes `check_spacing` apart
//!   ([`CHECK_ATTEMPTS`] and [`CHECK_SPACING`] by default),
//!   and only when all of them fail is there a verdict. No node deposes its
//!   leader on another node's word alone.
//! * After its own verdict a prober keeps probing the silent peer now and
//!   then for [`REVIVE_FOR`]: an answer ([`Probe::Alive`]) shows the verdict
//!   wrong, and the node takes the peer back at once (so does a heartbeat
//!   numbered at least three past the last one seen before the verdict:
//!   see the election), which ends the race for terms a wrong verdict
//!   starts.
//!
//! There are no sockets and no clocks in here: the node loop sends the
//! probes this asks for, reports what came back, and feeds a verdict to the
//! election as [`super::Input::Silent`] (an answer after it as
//! [`super::Input::Answered`]).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Timing of the probes, see the `[election]` section of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    /// Time between probes while the leader answers; zero disables probing.
    pub interval: Duration,
    /// The shortest deadline of a probe, direct or indirect.
    pub timeout: Duration,
    /// The longest deadline of a probe, however slow the answers were.
    pub timeout_max: Duration,
    /// Failed direct probes in a row before other members are asked.
    pub failures: u32,
    /// Probes a check sends before a verdict, all of which must fail
    /// ([`CHECK_ATTEMPTS`] by default).
    pub check_attempts: u32,
    /// Time between a check's probes ([`CHECK_SPACING`] by default).
    pub check_spacing: Duration,
}

impl Default for ProbeTiming {
    fn default() -> Self {
        ProbeTiming {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(300),
            timeout_max: Duration::from_millis(3000),
            failures: 2,
            check_attempts: CHECK_ATTEMPTS,
            check_spacing: CHECK_SPACING,
        }
    }
}

/// What the node loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe<I> {
    /// Send a probe to `to`; report the answer with [`Prober::answered`] or
    /// its failure with [`Prober::failed`], under `nonce`.
    Ping { to: I, nonce: u64 },
    /// Ask each of `via` to probe `target`, each to answer within `within`;
    /// report each answer with [`Prober::indirect`] under `nonce`.
    Ask {
        via: Vec<I>,
        target: I,
        nonce: u64,
        within: Duration,
    },
    /// Every probe failed: `target` is silent.
    Silent(I),
    /// `target`, found silent here, answered a probe sent after the verdict.
    Alive(I),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle {
        next: Instant,
    },
    Direct {
        nonce: u64,
        deadline: Instant,
    },
    /// The last round: the last direct probe, and the members asked to
    /// probe the target, side by side. Each part is `None` once it failed;
    /// both failed is the verdict.
    Last {
        ping: Option<(u64, Instant)>,
        ask: Option<Ask>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ask {
    nonce: u64,
    deadline: Instant,
    waiting: usize,
}

/// A check of the leader before following another claimant: up to
/// `check_attempts` probes, `check_spacing` apart (see [`ProbeTiming`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Check<I> {
    target: I,
    /// Every probe it sent, with its deadline (any answer ends it).
    sent: Vec<(u64, Instant)>,
    next: Instant,
}

/// Probing a peer found silent here, to take it back should it answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Revive<I> {
    target: I,
    until: Instant,
    next: Instant,
    nonces: Vec<u64>,
}

/// Probes a check sends by default before it gives a verdict (one lost
/// probe on a lossy link must not move a follower), this far apart. A check
/// has no indirect round. When the leader's successor still checked
/// whenever a prober asked it to probe the leader (its verdict a claim;
/// now it runs a last round through other members: [`Prober::urge`]),
/// checks of two attempts were where every false failover of the scale
/// simulation at 30 % loss came from (18 of 4,000 seeds of 10 nodes);
/// with three, 1 of the 4,000. The third attempt costs 100 ms of a silent
/// leader's detection on a LAN (the followers' checks).
pub const CHECK_ATTEMPTS: u32 = 3;
pub const CHECK_SPACING: Duration = Duration::from_millis(100);
/// A deadline is this many times the slowest recent answer: of the last
/// [`RTT_SAMPLES`], within [`RTT_WINDOW`]. A slow moment (a leader that just
/// started) is forgotten within seconds; on a lossy link slow answers keep
/// coming. (A window of 30 s was tried on 2026-12-03 against the stalls of
/// TCP under loss on the way: it doubled a frozen leader's detection at
/// 10 % loss in the scale simulation, p50 3.3 → 6.4 s, and did not tell
/// apart from 5 s at 30 % loss in `bench_loss --loss-at receive`.)
pub const RTT_FACTOR: u32 = 4;
pub const RTT_SAMPLES: usize = 16;
pub const RTT_WINDOW: Duration = Duration::from_secs(5);
/// Answers a new target must give before its deadline adapts: until then
/// it is [`COLD_DEADLINE`]. The slowest of one or two answers says little:
/// at 30 % loss a few fast ones came first often enough that a prober which
/// had just started watching the leader found it silent at the 300 ms
/// floor (the scale simulation, 100 nodes: 4 of 400 seeds deposed a healthy
/// leader that way).
pub const WARM_ANSWERS: u32 = 4;
/// The deadline of a target that has not answered [`WARM_ANSWERS`] probes
/// yet (kept within `timeout` and `timeout_max`): a round trip with three
/// TCP retransmissions in it (0.2 + 0.4 s on one leg, 0.2 s on the other)
/// still counts. It costs the first two seconds of watching a leader, after
/// a start or a failover: a leader that fails then is found in about 3 s
/// instead of 1.5.
pub const COLD_DEADLINE: Duration = Duration::from_secs(1);
/// Highest local health penalty: deadlines grow up to (1 + this) times.
pub const MAX_HEALTH: u32 = 4;
/// Answers in time that lower the local health penalty by one.
pub const HEALTH_DECAY: u32 = 8;
/// A gap between ticks longer than this is a stall of this node's own loop.
pub const STALL: Duration = Duration::from_millis(250);
/// How long a prober keeps probing a peer it found silent, and how often.
pub const REVIVE_FOR: Duration = Duration::from_secs(30);
pub const REVIVE_EVERY: Duration = Duration::from_secs(1);

/// The prober of one node.
#[derive(Debug)]
pub struct Prober<I> {
    timing: ProbeTiming,
    target: Option<I>,
    state: State,
    failed: u32,
    nonce: u64,
    /// The direct probes of this round, with when each went out: an answer
    /// to any of them, however late, shows the target alive.
    pings: Vec<(u64, Instant)>,
    /// How long the target's last answers took.
    rtts: VecDeque<(Instant, Duration)>,
    /// Answers of the target since this node started watching it (up to
    /// [`WARM_ANSWERS`]).
    answers: u32,
    /// Whose answers `rtts` and `answers` are.
    answered_by: Option<I>,
    /// Local health penalty (0 = healthy) and answers in time since it moved.
    health: u32,
    in_time: u32,
    /// This round was started by [`Prober::urge`], not by failed probes of
    /// this node's own.
    urged: bool,
    check: Option<Check<I>>,
    /// When the last check started: at most one per interval.
    last_check: Option<Instant>,
    revive: Option<Revive<I>>,
    /// When the node loop was told to tick next ([`Prober::next_wake`]).
    expected: Option<Instant>,
}

impl<I: Clone + PartialEq + Debug> Prober<I> {
    pub fn new(timing: ProbeTiming, now: Instant) -> Self {
        Prober {
            timing,
            target: None,
            state: State::Idle { next: now },
            failed: 0,
            nonce: 0,
            pings: Vec::new(),
            rtts: VecDeque::new(),
            answers: 0,
            answered_by: None,
            health: 0,
            in_time: 0,
            urged: false,
            check: None,
            last_check: None,
            revive: None,
            expected: None,
        }
    }

    pub fn enabled(&self) -> bool {
        !self.timing.interval.is_zero()
    }

    /// The peer this node probes now: the leader while this node is next in
    /// line, else `None`. A new target starts afresh; the same one taken
    /// back (a leader found silent wrongly, then revived) keeps what its
    /// recent answers taught, or a lossy link would get the cold deadline
    /// again right after a wrong verdict.
    pub fn watch(&mut self, target: Option<I>, now: Instant) {
        if !self.enabled() || target == self.target {
            return;
        }
        if target.is_some() && target != self.answered_by {
            self.rtts.clear();
            self.answers = 0;
            self.answered_by = target.clone();
        }
        self.target = target;
        self.failed = 0;
        self.urged = false;
        self.pings.clear();
        self.state = State::Idle { next: now };
    }

    pub fn target(&self) -> Option<&I> {
        self.target.as_ref()
    }

    /// The local health penalty: deadlines are (1 + this) times longer.
    pub fn health(&self) -> u32 {
        self.health
    }

    /// The deadline of the next probe of the target: adapted to its recent
    /// answers and to this node's health, within the configured bounds.
    pub fn deadline(&self) -> Duration {
        let t = &self.timing;
        // No answer within the window (a target taken back long after)
        // teaches nothing either.
        if self.answers < WARM_ANSWERS || self.rtts.is_empty() {
            return COLD_DEADLINE.clamp(t.timeout, t.timeout_max.max(t.timeout));
        }
        let slowest = self.rtts.iter().map(|(_, d)| *d).max().unwrap_or_default();
        let base = (slowest * RTT_FACTOR).clamp(t.timeout, t.timeout_max.max(t.timeout));
        (base * (1 + self.health)).min(t.timeout_max.max(t.timeout))
    }

    /// Probes a check sends (at least one).
    fn check_attempts(&self) -> usize {
        self.timing.check_attempts.max(1) as usize
    }

    /// A check's deadline: the target's own when it is the one probed and
    /// has answered enough to go by, else twice the shortest.
    fn check_deadline(&self, target: &I) -> Duration {
        let t = &self.timing;
        if self.target.as_ref() == Some(target) && self.answers >= WARM_ANSWERS {
            return self.deadline();
        }
        (2 * t.timeout * (1 + self.health)).min(t.timeout_max.max(t.timeout))
    }

    /// Lets time pass: sends the next probe, or gives up on overdue ones.
    /// `helpers` picks the members to ask for an indirect probe of a target.
    pub fn tick(&mut self, now: Instant, helpers: impl FnOnce(&I) -> Vec<I>) -> Vec<Probe<I>> {
        let mut out = Vec::new();
        while self
            .rtts
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > RTT_WINDOW)
        {
            self.rtts.pop_front();
        }
        if let Some(expected) = self.expected.take() {
            let late = now.saturating_duration_since(expected);
            if late > STALL {
                self.stalled(late + STALL);
            }
        }
        out.extend(self.check_tick(now));
        out.extend(self.revive_tick(now));
        let Some(target) = self.target.clone() else {
            return out;
        };
        match self.state {
            State::Idle { next } if now >= next => {
                self.nonce += 1;
                self.pings.push((self.nonce, now));
                self.state = State::Direct {
                    nonce: self.nonce,
                    deadline: now + self.deadline(),
                };
                out.push(Probe::Ping {
                    to: target,
                    nonce: self.nonce,
                });
            }
            State::Direct { deadline, .. } if now >= deadline => {
                out.extend(self.direct_failed(target, now, helpers));
            }
            State::Last { ping, ask } => {
                let mut last = (ping, ask);
                if ping.is_some_and(|(_, d)| now >= d) {
                    last.0 = None;
                }
                if ask.is_some_and(|a| now >= a.deadline) {
                    last.1 = None;
                }
                out.extend(self.settle_last(last, target, now));
            }
            _ => {}
        }
        out
    }

    /// The last round moved on: the verdict once both parts failed.
    fn settle_last(
        &mut self,
        (ping, ask): (Option<(u64, Instant)>, Option<Ask>),
        target: I,
        now: Instant,
    ) -> Option<Probe<I>> {
        if ping.is_none() && ask.is_none() {
            return Some(self.verdict(target, now));
        }
        self.state = State::Last { ping, ask };
        None
    }

    /// When the node loop must call [`Prober::tick`] next (`None`: nothing
    /// to wait for). A tick that comes more than [`STALL`] after it shows a
    /// stall of the node's own loop.
    pub fn next_wake(&mut self) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        if self.target.is_some() {
            match &self.state {
                State::Idle { next } => at(*next),
                State::Direct { deadline, .. } => at(*deadline),
                State::Last { ping, ask } => {
                    if let Some((_, d)) = ping {
                        at(*d);
                    }
                    if let Some(a) = ask {
                        at(a.deadline);
                    }
                }
            }
        }
        if let Some(c) = &self.check {
            // The verdict needs every attempt out and overdue: wake for the
            // next attempt, then for the last deadline (an earlier one that
            // passed would wake the loop for nothing, again and again).
            if c.sent.len() < self.check_attempts() {
                at(c.next);
            } else if let Some(last) = c.sent.iter().map(|(_, d)| *d).max() {
                at(last);
            }
        }
        if let Some(r) = &self.revive {
            at(r.next.min(r.until));
        }
        self.expected = wake;
        wake
    }

    /// This node's loop did not run for `gap`: nothing it waited for can be
    /// judged on that time (answers may be waiting unread).
    fn stalled(&mut self, gap: Duration) {
        match &mut self.state {
            State::Direct { deadline, .. } => *deadline += gap,
            State::Last { ping, ask } => {
                if let Some((_, d)) = ping {
                    *d += gap;
                }
                if let Some(a) = ask {
                    a.deadline += gap;
                }
            }
            State::Idle { .. } => {}
        }
        if let Some(c) = &mut self.check {
            for (_, d) in &mut c.sent {
                *d += gap;
            }
        }
    }

    fn check_tick(&mut self, now: Instant) -> Option<Probe<I>> {
        let deadline = self
            .check
            .as_ref()
            .map(|c| self.check_deadline(&c.target))?;
        let (attempts, spacing) = (self.check_attempts(), self.timing.check_spacing);
        let c = self.check.as_mut()?;
        if c.sent.len() < attempts && now >= c.next {
            self.nonce += 1;
            c.sent.push((self.nonce, now + deadline));
            c.next = now + spacing;
            return Some(Probe::Ping {
                to: c.target.clone(),
                nonce: self.nonce,
            });
        }
        if c.sent.len() >= attempts && c.sent.iter().all(|(_, d)| now >= *d) {
            let target = c.target.clone();
            self.check = None;
            return Some(Probe::Silent(target));
        }
        None
    }

    fn revive_tick(&mut self, now: Instant) -> Option<Probe<I>> {
        let r = self.revive.as_mut()?;
        if now >= r.until {
            self.revive = None;
            return None;
        }
        if now < r.next {
            return None;
        }
        self.nonce += 1;
        r.next = now + REVIVE_EVERY;
        r.nonces.push(self.nonce);
        Some(Probe::Ping {
            to: r.target.clone(),
            nonce: self.nonce,
        })
    }

    /// The target's answer to probe `nonce` (direct, a check, or a probe of
    /// a peer found silent, which is then [`Probe::Alive`]).
    pub fn answered(&mut self, nonce: u64, now: Instant) -> Option<Probe<I>> {
        if self
            .check
            .as_ref()
            .is_some_and(|c| c.sent.iter().any(|(n, _)| *n == nonce))
        {
            self.check = None;
        }
        if let Some(r) = self.revive.take_if(|r| r.nonces.contains(&nonce)) {
            return Some(Probe::Alive(r.target));
        }
        // Every direct probe of the round counts, however late: before the
        // next tick too, while the prober waits to send the next one.
        let sent = self.pings.iter().find(|(n, _)| *n == nonce).map(|p| p.1)?;
        if self.rtts.len() == RTT_SAMPLES {
            self.rtts.pop_front();
        }
        self.rtts
            .push_back((now, now.saturating_duration_since(sent)));
        self.answers = (self.answers + 1).min(WARM_ANSWERS);
        let suspected = self.failed > 0 || self.urged;
        if suspected {
            self.worse();
        } else {
            self.in_time += 1;
            if self.in_time >= HEALTH_DECAY {
                self.in_time = 0;
                self.health = self.health.saturating_sub(1);
            }
        }
        self.cleared(now);
        None
    }

    /// A suspicion turned out wrong: this node's own view is the slow one
    /// (unless the suspicion was another member's: [`Prober::urge`]).
    fn worse(&mut self) {
        if self.urged {
            return;
        }
        self.health = (self.health + 1).min(MAX_HEALTH);
        self.in_time = 0;
    }

    /// Probe `nonce` failed before its deadline (no connection, an error).
    pub fn failed(
        &mut self,
        nonce: u64,
        now: Instant,
        helpers: impl FnOnce(&I) -> Vec<I>,
    ) -> Vec<Probe<I>> {
        if let Some(c) = &mut self.check
            && let Some(p) = c.sent.iter_mut().find(|(n, _)| *n == nonce)
        {
            p.1 = now;
            return self.check_tick(now).into_iter().collect();
        }
        match (self.state.clone(), self.target.clone()) {
            (State::Direct { nonce: n, .. }, Some(target)) if n == nonce => {
                self.direct_failed(target, now, helpers)
            }
            (State::Last { ping, ask }, Some(target)) if ping.is_some_and(|(n, _)| n == nonce) => {
                self.settle_last((None, ask), target, now)
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// A member's answer to the indirect probe `nonce`.
    pub fn indirect(&mut self, nonce: u64, reachable: bool, now: Instant) -> Vec<Probe<I>> {
        let (
            State::Last {
                ping,
                ask: Some(mut ask),
            },
            Some(target),
        ) = (self.state.clone(), self.target.clone())
        else {
            return Vec::new();
        };
        if ask.nonce != nonce {
            return Vec::new();
        }
        if reachable {
            self.worse();
            self.cleared(now);
            return Vec::new();
        }
        ask.waiting = ask.waiting.saturating_sub(1);
        let ask = (ask.waiting > 0).then_some(ask);
        self.settle_last((ping, ask), target, now)
            .into_iter()
            .collect()
    }

    /// Checks `target` (a node about to follow another claimant while its
    /// leader still looks live): `check_attempts` probes `check_spacing`
    /// apart, all unanswered by their deadlines, are a verdict; any answer
    /// ends it. One check at a time, at most one started per interval.
    pub fn verify(&mut self, target: I, now: Instant) -> Option<Probe<I>> {
        let recent = self
            .last_check
            .is_some_and(|t| now.saturating_duration_since(t) < self.timing.interval);
        if !self.enabled() || self.check.is_some() || recent {
            return None;
        }
        self.last_check = Some(now);
        self.check = Some(Check {
            target,
            sent: Vec::new(),
            next: now,
        });
        self.check_tick(now)
    }

    /// A direct probe failed. Before the last one, probe again at once (it
    /// has been silent for a whole deadline); the last goes out together
    /// with the request to other members to probe the target, so their
    /// answers take no extra round.
    fn direct_failed(
        &mut self,
        target: I,
        now: Instant,
        helpers: impl FnOnce(&I) -> Vec<I>,
    ) -> Vec<Probe<I>> {
        self.failed += 1;
        let failures = self.timing.failures.max(1);
        if self.failed + 1 < failures {
            self.state = State::Idle { next: now };
            return Vec::new();
        }
        self.last_round(target, now, helpers)
    }

    /// The last round, now: a direct probe (unless the failures are all in
    /// already) and the request to other members to probe the target.
    fn last_round(
        &mut self,
        target: I,
        now: Instant,
        helpers: impl FnOnce(&I) -> Vec<I>,
    ) -> Vec<Probe<I>> {
        let failures = self.timing.failures.max(1);
        let d = self.deadline();
        let mut out = Vec::new();
        let ping = (self.failed < failures).then(|| {
            self.nonce += 1;
            self.pings.push((self.nonce, now));
            out.push(Probe::Ping {
                to: target.clone(),
                nonce: self.nonce,
            });
            (self.nonce, now + d)
        });
        let via = helpers(&target);
        // No one else to ask (a cluster of two): the direct probes decide.
        let ask = (!via.is_empty()).then(|| {
            self.nonce += 1;
            // The helpers probe with a deadline of their own and answer
            // before this one, which allows for the legs to them and back.
            out.push(Probe::Ask {
                via: via.clone(),
                target: target.clone(),
                nonce: self.nonce,
                within: d * 3 / 2,
            });
            Ask {
                nonce: self.nonce,
                deadline: now + 2 * d,
                waiting: via.len(),
            }
        });
        out.extend(self.settle_last((ping, ask), target, now));
        out
    }

    /// A member that cannot reach `target` asked this node to probe it
    /// (the node's `Request::ProbeFor`). When `target` is the one this node
    /// probes, the last round starts now, as if its own direct probes had
    /// failed: a direct probe side by side with other members' indirect
    /// ones, every one of which must fail for the verdict. So the leader's
    /// successor, asked by a prober, claims on evidence from several paths
    /// rather than from its own probes over its one connection to the
    /// leader (which, on a lossy network, stalls whole seconds in TCP's
    /// retransmission back-off). A suspicion raised this way that turns out
    /// wrong is the asker's, so it costs this node no local health. `None`
    /// when `target` is not this node's, probing is off, or there is no
    /// member to ask (the caller checks instead: [`Prober::verify`]);
    /// empty when a last round is under way already.
    pub fn urge(
        &mut self,
        target: &I,
        now: Instant,
        helpers: impl FnOnce(&I) -> Vec<I>,
    ) -> Option<Vec<Probe<I>>> {
        if !self.enabled() || self.target.as_ref() != Some(target) {
            return None;
        }
        if matches!(self.state, State::Last { .. }) {
            return Some(Vec::new());
        }
        // With no one to ask, a round would rest on one direct probe: the
        // caller checks instead.
        let via = helpers(target);
        if via.is_empty() {
            return None;
        }
        // A direct probe still waiting stays in `pings`: its answer counts.
        // A failure of this node's own already is its own suspicion.
        self.urged = self.failed == 0;
        self.failed = self.failed.max(self.timing.failures.max(1) - 1);
        Some(self.last_round(target.clone(), now, move |_| via))
    }

    fn cleared(&mut self, now: Instant) {
        self.failed = 0;
        self.urged = false;
        self.pings.clear();
        self.state = State::Idle {
            next: now + self.timing.interval,
        };
    }

    fn verdict(&mut self, target: I, now: Instant) -> Probe<I> {
        self.cleared(now);
        self.revive = Some(Revive {
            target: target.clone(),
            until: now + REVIVE_FOR,
            next: now + REVIVE_EVERY,
            nonces: Vec::new(),
        });
        Probe::Silent(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The defaults, but probes every 200 ms.
    fn timing() -> ProbeTiming {
        ProbeTiming {
            interval: 200 * MS,
            ..ProbeTiming::default()
        }
    }

    /// A prober of 1 that is warm by `t0`: 1 answered its first
    /// [`WARM_ANSWERS`] probes within a millisecond, 3 s before, so its
    /// deadline is the 300 ms floor and its next probe is due at `t0`.
    fn prober(t0: Instant) -> Prober<u32> {
        let start = t0 - 3000 * MS;
        let mut p = Prober::new(timing(), start);
        p.watch(Some(1), start);
        let mut now = start;
        for _ in 0..WARM_ANSWERS {
            let n = ping_nonce(&p.tick(now, |_| Vec::new()));
            assert_eq!(p.answered(n, now + MS), None);
            now += timing().interval + MS;
        }
        assert_eq!(p.deadline(), 300 * MS);
        p
    }

    #[test]
    fn a_new_target_gets_the_cold_deadline_until_it_answered_a_few_probes() {
        let t0 = Instant::now();
        let mut p: Prober<u32> = Prober::new(timing(), t0);
        p.watch(Some(1), t0);
        let mut now = t0;
        for answered in 0..WARM_ANSWERS {
            assert_eq!(p.deadline(), 1000 * MS, "after {answered} answers");
            let n = ping_nonce(&until_out(&mut p, &mut now, &[2]));
            now += 2 * MS;
            assert_eq!(p.answered(n, now), None);
        }
        assert_eq!(p.deadline(), 300 * MS, "warm: fast answers, the floor");
        p.watch(Some(7), now);
        assert_eq!(p.deadline(), 1000 * MS, "another target starts cold");
        // A cold target's answer after 350 ms (one retransmission and a
        // bit) is no failure, and raises no suspicion.
        let mut p: Prober<u32> = Prober::new(timing(), t0);
        p.watch(Some(1), t0);
        let n = ping_nonce(&p.tick(t0, |_| vec![2]));
        for ms in [150, 300, 350] {
            assert!(p.tick(t0 + ms * MS, |_| vec![2]).is_empty(), "{ms} ms");
        }
        assert_eq!(p.answered(n, t0 + 350 * MS), None);
        assert_eq!(p.health(), 0);
    }

    fn ping_nonce(out: &[Probe<u32>]) -> u64 {
        match out {
            [Probe::Ping { to: 1, nonce }] => *nonce,
            other => panic!("expected one ping of 1, got {other:?}"),
        }
    }

    /// The nonce and `within` of a last round: a direct probe of 1 and the
    /// request to 2 and 3 to probe it.
    fn last_round(out: &[Probe<u32>]) -> (u64, Duration) {
        match out {
            [
                Probe::Ping { to: 1, .. },
                Probe::Ask {
                    via,
                    target: 1,
                    nonce,
                    within,
                },
            ] if *via == vec![2, 3] => (*nonce, *within),
            other => panic!("expected a last round, got {other:?}"),
        }
    }

    /// Ticks every 10 ms from `now` until something comes out.
    fn until_out(p: &mut Prober<u32>, now: &mut Instant, helpers: &[u32]) -> Vec<Probe<u32>> {
        for _ in 0..10_000 {
            let out = p.tick(*now, |_| helpers.to_vec());
            if !out.is_empty() {
                return out;
            }
            *now += 10 * MS;
        }
        panic!("nothing in 100 s")
    }

    #[test]
    fn a_leader_that_answers_is_probed_every_interval_and_never_suspected() {
        let t0 = Instant::now();
        let mut p = prober(t0);
        let mut now = t0;
        for _ in 0..100 {
            let n = ping_nonce(&p.tick(now, |_| vec![2, 3]));
            now += 10 * MS;
            assert!(p.tick(now, |_| vec![2, 3]).is_empty());
            assert_eq!(p.answered(n, now), None);
            now += 150 * MS;
            assert!(p.tick(now, |_| vec![2, 3]).is_empty(), "too early");
            now += 50 * MS;
        }
        assert_eq!(
            p.deadline(),
            300 * MS,
            "fast answers: the shortest deadline"
        );
    }

    #[test]
    fn silence_needs_the_direct_failures_and_every_indirect_probe() {
        let t0 = Instant::now();
        let mut p = prober(t0);
        ping_nonce(&p.tick(t0, |_| vec![2, 3]));
        // (Ticks no more than STALL apart: a longer gap is a stall.)
        assert!(p.tick(t0 + 150 * MS, |_| vec![2, 3]).is_empty());
        let t1 = t0 + 300 * MS;
        // The first timeout: the last direct probe and the request to the
        // others go out together.
        let (nonce, within) = last_round(&p.tick(t1, |_| vec![2, 3]));
        assert_eq!(within, 450 * MS);
        assert!(p.indirect(nonce, false, t1 + 10 * MS).is_empty());
        assert!(
            p.indirect(nonce, false, t1 + 20 * MS).is_empty(),
            "every helper failed, but the direct probe is not overdue yet"
        );
        assert!(p.tick(t1 + 150 * MS, |_| vec![2, 3]).is_empty());
        assert_eq!(
            p.tick(t1 + 300 * MS, |_| vec![2, 3]),
            vec![Probe::Silent(1)]
        );
    }

    #[test]
    fn any_reachable_answer_or_a_late_pong_clears_the_suspicion_and_costs_health() {
        let t0 = Instant::now();
        for late_pong in [false, true] {
            let mut p = prober(t0);
            let first = ping_nonce(&p.tick(t0, |_| vec![2, 3, 4]));
            p.tick(t0 + 150 * MS, |_| vec![2, 3, 4]);
            let t1 = t0 + 300 * MS;
            let Some(Probe::Ask { nonce, .. }) = p.tick(t1, |_| vec![2, 3, 4]).pop() else {
                panic!()
            };
            let t2 = t1 + 10 * MS;
            assert!(p.indirect(nonce, false, t2).is_empty());
            if late_pong {
                // The answer to the first, overdue probe shows it alive.
                assert_eq!(p.answered(first, t2), None);
            } else {
                assert!(p.indirect(nonce, true, t2).is_empty());
            }
            // Cleared: the other helpers' failures are stale, no verdict at
            // the deadline, and the next probe comes after the interval.
            assert!(p.indirect(nonce, false, t2).is_empty());
            assert!(p.tick(t2 + 199 * MS, |_| vec![2]).is_empty(), "{late_pong}");
            let out = p.tick(t2 + 200 * MS, |_| vec![2]);
            assert!(
                matches!(out[..], [Probe::Ping { to: 1, .. }]),
                "{late_pong}: {out:?}"
            );
            // The wrong suspicion stretches the deadlines (local health);
            // a late answer also counts as a slow sample (310 ms x 4 x 2).
            assert_eq!(p.health(), 1);
            let want = if late_pong { 2480 } else { 600 };
            assert_eq!(p.deadline(), want * MS, "{late_pong}");
        }
    }

    #[test]
    fn urged_by_a_member_the_last_round_starts_at_once_and_needs_the_indirect_probes_too() {
        let t0 = Instant::now();
        // Idle, and waiting on a direct probe of its own: either way, both
        // parts of the last round go out at once.
        for own_probe_out in [false, true] {
            let mut p = prober(t0);
            let now = if own_probe_out {
                ping_nonce(&p.tick(t0, |_| vec![2, 3]));
                t0 + 100 * MS
            } else {
                t0 - 100 * MS
            };
            assert_eq!(p.urge(&7, now, |_| vec![2, 3]), None, "not its target");
            let (nonce, _) = last_round(&p.urge(&1, now, |_| vec![2, 3]).expect("its target"));
            assert_eq!(
                p.urge(&1, now, |_| vec![2, 3]),
                Some(Vec::new()),
                "under way"
            );
            // Its own direct probe failing decides nothing: the helpers have
            // not answered.
            assert!(p.tick(now + 310 * MS, |_| vec![2, 3]).is_empty());
            assert!(p.indirect(nonce, false, now + 320 * MS).is_empty());
            assert_eq!(
                p.indirect(nonce, false, now + 330 * MS),
                vec![Probe::Silent(1)],
                "{own_probe_out}: every path failed"
            );
        }
        // Any path that answers clears it, and the suspicion was another
        // member's: no local health lost.
        for late_pong in [false, true] {
            let mut p = prober(t0);
            let now = t0 - 100 * MS;
            let out = p.urge(&1, now, |_| vec![2, 3]).expect("its target");
            let (ping, ask) = match &out[..] {
                [Probe::Ping { nonce: n, .. }, Probe::Ask { nonce, .. }] => (*n, *nonce),
                other => panic!("{other:?}"),
            };
            if late_pong {
                assert_eq!(p.answered(ping, now + 400 * MS), None);
            } else {
                assert!(p.indirect(ask, true, now + 50 * MS).is_empty());
            }
            assert!(p.indirect(ask, false, now + 600 * MS).is_empty(), "cleared");
            assert_eq!(p.health(), 0, "{late_pong}");
        }
        // Probing off: nothing to urge.
        let mut off = Prober::<u32>::new(
            ProbeTiming {
                interval: Duration::ZERO,
                ..timing()
            },
            t0,
        );
        off.watch(Some(1), t0);
        assert_eq!(off.urge(&1, t0, |_| vec![2]), None);
    }

    #[test]
    fn deadlines_follow_the_slowest_recent_answer_within_bounds() {
        let t0 = Instant::now();
        let mut p = prober(t0);
        let mut now = t0;
        let answer = |p: &mut Prober<u32>, rtt: u32, now: &mut Instant| {
            let n = ping_nonce(&until_out(p, now, &[2]));
            *now += rtt * MS;
            p.answered(n, *now);
        };
        answer(&mut p, 100, &mut now);
        assert_eq!(p.deadline(), 400 * MS, "4 x 100 ms");
        answer(&mut p, 5, &mut now);
        assert_eq!(p.deadline(), 400 * MS, "the slowest of the last answers");
        for _ in 0..RTT_SAMPLES {
            answer(&mut p, 5, &mut now);
        }
        assert_eq!(
            p.deadline(),
            300 * MS,
            "old samples age out; the floor holds"
        );
        answer(&mut p, 500, &mut now);
        assert_eq!(p.deadline(), 2000 * MS, "4 x 500 ms");
        answer(&mut p, 2000, &mut now);
        assert_eq!(p.deadline(), 3000 * MS, "capped at timeout_max");
    }

    #[test]
    fn health_recovers_after_answers_in_time() {
        let t0 = Instant::now();
        let mut p = prober(t0);
        let mut now = t0;
        // Two wrong suspicions in a row: indirect answers say reachable.
        for _ in 0..2 {
            let nonce = loop {
                let out = until_out(&mut p, &mut now, &[2]);
                now += 10 * MS;
                if let Some(Probe::Ask { nonce, .. }) = out.last() {
                    break *nonce;
                }
            };
            p.indirect(nonce, true, now);
        }
        assert_eq!(p.health(), 2);
        assert_eq!(p.deadline(), 900 * MS, "300 ms x (1 + 2)");
        for _ in 0..2 * HEALTH_DECAY {
            let n = ping_nonce(&until_out(&mut p, &mut now, &[2]));
            p.answered(n, now + MS);
        }
        assert_eq!(p.health(), 0);
    }

    #[test]
    fn a_stall_of_this_node_extends_its_deadlines() {
        let t0 = Instant::now();
        let mut p = prober(t0);
        let n = ping_nonce(&p.tick(t0, |_| vec![2]));
        assert_eq!(p.next_wake(), Some(t0 + 300 * MS), "the probe's deadline");
        // The loop woke 1.8 s late: the probe is not failed for it.
        assert!(p.tick(t0 + 2100 * MS, |_| vec![2]).is_empty());
        assert_eq!(p.answered(n, t0 + 2110 * MS), None);
        assert_eq!(p.health(), 0, "no suspicion was raised");
    }

    #[test]
    fn the_loop_wakes_only_when_something_is_due() {
        let t0 = Instant::now();
        let mut p: Prober<u32> = Prober::new(timing(), t0);
        assert_eq!(p.next_wake(), None, "nothing to probe: no wake-ups");
        p.watch(Some(1), t0);
        assert_eq!(p.next_wake(), Some(t0), "a new target: probe at once");
        let n = ping_nonce(&p.tick(t0, |_| vec![2]));
        assert_eq!(
            p.next_wake(),
            Some(t0 + 1000 * MS),
            "a cold target's deadline"
        );
        p.answered(n, t0 + 5 * MS);
        assert_eq!(p.next_wake(), Some(t0 + 205 * MS), "the next probe");
        p.watch(None, t0 + 10 * MS);
        assert_eq!(p.next_wake(), None);
    }

    #[test]
    fn overdue_indirect_answers_count_as_failures() {
        let t0 = Instant::now();
        let mut p = prober(t0);
        let mut now = t0;
        let mut out = Vec::new();
        for _ in 0..40 {
            out = p.tick(now, |_| vec![2]);
            if matches!(out.first(), Some(Probe::Silent(_))) {
                break;
            }
            now += 100 * MS;
        }
        assert_eq!(out, vec![Probe::Silent(1)]);
        // A timeout at 300, then the last probe and the request to the
        // helper, whose deadline (twice the probe's) passes at 900.
        assert_eq!(now - t0, 900 * MS, "two direct timeouts, then one indirect");
    }

    /// With more failures before the indirect round than two, the answer
    /// to a failed probe that comes before the next one went out (the
    /// prober waits for its tick) still clears the suspicion: it used to be
    /// dropped, and the round went on as if the leader were silent.
    #[test]
    fn a_late_answer_between_two_direct_probes_clears_the_suspicion() {
        let t0 = Instant::now();
        let timing = ProbeTiming {
            failures: 3,
            ..timing()
        };
        let mut p: Prober<u32> = Prober::new(timing, t0);
        p.watch(Some(1), t0);
        let first = ping_nonce(&p.tick(t0, |_| vec![2]));
        // A cold target's deadline: 1 s. One failure: probe again at once.
        assert!(p.tick(t0 + 1000 * MS, |_| vec![2]).is_empty());
        assert_eq!(p.answered(first, t0 + 1001 * MS), None);
        assert_eq!(p.health(), 1, "a suspicion that turned out wrong");
        assert!(
            p.tick(t0 + 1002 * MS, |_| vec![2]).is_empty(),
            "cleared: the next probe waits an interval"
        );
        assert_eq!(p.next_wake(), Some(t0 + 1201 * MS));
        ping_nonce(&p.tick(t0 + 1201 * MS, |_| vec![2]));
    }

    #[test]
    fn after_a_verdict_the_silent_peer_is_probed_and_an_answer_takes_it_back() {
        let t0 = Instant::now();
        let mut p = prober(t0);
        let n = ping_nonce(&p.tick(t0, |_| Vec::new()));
        let n = ping_nonce(&p.failed(n, t0 + MS, |_| Vec::new()));
        assert_eq!(
            p.failed(n, t0 + 2 * MS, |_| Vec::new()),
            vec![Probe::Silent(1)]
        );
        p.watch(None, t0 + 3 * MS);
        assert!(p.tick(t0 + 500 * MS, |_| Vec::new()).is_empty());
        let n = ping_nonce(&p.tick(t0 + 1002 * MS, |_| Vec::new()));
        assert_eq!(p.answered(n, t0 + 1100 * MS), Some(Probe::Alive(1)));
        assert!(p.tick(t0 + 5000 * MS, |_| Vec::new()).is_empty(), "done");
        // Without an answer, it stops after REVIVE_FOR.
        let mut p = prober(t0);
        let n = ping_nonce(&p.tick(t0, |_| Vec::new()));
        let n = ping_nonce(&p.failed(n, t0, |_| Vec::new()));
        p.failed(n, t0, |_| Vec::new());
        p.watch(None, t0);
        let pings = (1..=40)
            .filter(|s| !p.tick(t0 + *s * 1000 * MS, |_| Vec::new()).is_empty())
            .count();
        assert_eq!(pings, 29);
    }

    #[test]
    fn alone_with_the_leader_the_direct_probes_decide() {
        let t0 = Instant::now();
        let mut p = prober(t0);
        let n = ping_nonce(&p.tick(t0, |_| Vec::new()));
        let n = ping_nonce(&p.failed(n, t0 + 5 * MS, |_| Vec::new()));
        assert_eq!(
            p.failed(n, t0 + 9 * MS, |_| Vec::new()),
            vec![Probe::Silent(1)]
        );
    }

    #[test]
    fn a_new_target_starts_afresh_and_none_stops_probing() {
        let t0 = Instant::now();
        let mut p = prober(t0);
        ping_nonce(&p.tick(t0, |_| vec![2]));
        p.tick(t0 + 200 * MS, |_| vec![2]);
        p.watch(Some(7), t0 + 200 * MS);
        match &p.tick(t0 + 200 * MS, |_| vec![2])[..] {
            [Probe::Ping { to: 7, .. }] => {}
            other => panic!("{other:?}"),
        }
        p.watch(None, t0 + 210 * MS);
        for s in 1..=90 {
            assert!(p.tick(t0 + s * 100 * MS, |_| vec![2]).is_empty());
        }
    }

    #[test]
    fn a_target_taken_back_keeps_its_deadline_and_a_new_one_starts_cold() {
        let t0 = Instant::now();
        let mut p = prober(t0);
        let mut now = t0;
        let n = ping_nonce(&until_out(&mut p, &mut now, &[2]));
        now += 500 * MS;
        assert_eq!(p.answered(n, now), None);
        assert_eq!(p.deadline(), 2000 * MS, "4 x a slow answer");
        // Found silent (the node stops probing it), then taken back.
        p.watch(None, now);
        p.watch(Some(1), now + 100 * MS);
        assert_eq!(p.deadline(), 2000 * MS, "what its answers taught stays");
        // Taken back after its answers aged out: nothing to go by.
        p.watch(None, now + 200 * MS);
        let later = now + RTT_WINDOW + 1000 * MS;
        p.watch(Some(1), later);
        ping_nonce(&p.tick(later, |_| vec![2]));
        assert_eq!(p.deadline(), COLD_DEADLINE, "no recent answer");
        // Another peer starts cold, and so does 1 after it.
        let mut p = prober(t0);
        p.watch(Some(7), t0);
        assert_eq!(p.deadline(), COLD_DEADLINE);
        p.watch(Some(1), t0);
        assert_eq!(p.deadline(), COLD_DEADLINE);
    }

    #[test]
    fn an_urged_round_needs_someone_to_ask_and_leaves_health_to_this_nodes_own_suspicions() {
        let t0 = Instant::now();
        // No member to ask: the caller checks instead.
        let mut p = prober(t0);
        assert_eq!(p.urge(&1, t0 - 100 * MS, |_| Vec::new()), None);
        // One failure allowed before asking: a late answer to an urged
        // round moves health neither way.
        for failures in [1, 2, 3] {
            let timing = ProbeTiming {
                failures,
                ..timing()
            };
            let mut p = Prober::new(timing, t0);
            p.watch(Some(1), t0);
            p.health = 2;
            let out = p.urge(&1, t0, |_| vec![2, 3]).expect("its target");
            let Some(Probe::Ping { nonce, .. }) = out.first() else {
                panic!("{out:?}")
            };
            assert_eq!(p.answered(*nonce, t0 + 2000 * MS), None);
            assert_eq!(p.health(), 2, "{failures}");
        }
        // Its own failure first (3 allowed): the suspicion is its own too.
        let timing = ProbeTiming {
            failures: 3,
            ..timing()
        };
        let mut p = Prober::new(timing, t0);
        p.watch(Some(1), t0);
        let first = ping_nonce(&p.tick(t0, |_| vec![2, 3]));
        assert!(p.failed(first, t0 + 10 * MS, |_| vec![2, 3]).is_empty());
        let out = p
            .urge(&1, t0 + 20 * MS, |_| vec![2, 3])
            .expect("its target");
        let Some(Probe::Ping { nonce, .. }) = out.first() else {
            panic!("{out:?}")
        };
        assert_eq!(p.answered(*nonce, t0 + 30 * MS), None);
        assert_eq!(p.health(), 1, "a wrong suspicion of its own");
    }

    #[test]
    fn a_check_takes_every_attempt_failing_and_any_answer_ends_it() {
        let t0 = Instant::now();
        let mut p: Prober<u32> = Prober::new(timing(), t0);
        let Some(Probe::Ping { to: 5, nonce }) = p.verify(5, t0) else {
            panic!()
        };
        assert_eq!(p.verify(5, t0), None, "one check at a time");
        p.answered(nonce, t0 + 10 * MS);
        assert!(p.tick(t0 + 5000 * MS, |_| Vec::new()).is_empty());
        let Some(Probe::Ping { nonce, .. }) = p.verify(5, t0 + 5000 * MS) else {
            panic!()
        };
        // The other attempts go out CHECK_SPACING apart, before the first
        // is overdue (a deadline of 600 ms: no answers of 5 to go by).
        let mut nonces = vec![nonce];
        for at in [5100, 5200] {
            assert!(p.tick(t0 + (at - 1) * MS, |_| Vec::new()).is_empty());
            let again = p.tick(t0 + at * MS, |_| Vec::new());
            let [Probe::Ping { to: 5, nonce }] = again[..] else {
                panic!("{again:?}")
            };
            assert!(!nonces.contains(&nonce));
            nonces.push(nonce);
        }
        assert_eq!(nonces.len(), CHECK_ATTEMPTS as usize);
        assert_eq!(p.next_wake(), Some(t0 + 5800 * MS), "the last deadline");
        // The first failing is not yet a verdict; all overdue are.
        assert!(
            p.failed(nonces[0], t0 + 5300 * MS, |_| Vec::new())
                .is_empty()
        );
        for at in [5400, 5600, 5700, 5799] {
            assert!(p.tick(t0 + at * MS, |_| Vec::new()).is_empty(), "{at}");
        }
        assert_eq!(
            p.tick(t0 + 5800 * MS, |_| Vec::new()),
            vec![Probe::Silent(5)]
        );
        // An answer to any attempt ends a check with no verdict: the first
        // one's, and the last one's.
        let Some(Probe::Ping { nonce, .. }) = p.verify(5, t0 + 7000 * MS) else {
            panic!()
        };
        assert_eq!(p.next_wake(), Some(t0 + 7100 * MS), "the next attempt");
        p.tick(t0 + 7100 * MS, |_| Vec::new());
        p.answered(nonce, t0 + 7150 * MS);
        assert_eq!(p.next_wake(), None, "nothing left to wait for");
        assert!(p.tick(t0 + 20_000 * MS, |_| Vec::new()).is_empty());
        p.verify(5, t0 + 21_000 * MS);
        let mut last = 0;
        for at in [21_100, 21_200] {
            if let [Probe::Ping { nonce, .. }] = p.tick(t0 + at * MS, |_| Vec::new())[..] {
                last = nonce;
            }
        }
        p.answered(last, t0 + 21_700 * MS);
        assert!(p.tick(t0 + 25_000 * MS, |_| Vec::new()).is_empty());
        // At most one check started per interval, however many claims arrive.
        let Some(Probe::Ping { nonce, .. }) = p.verify(5, t0 + 30_000 * MS) else {
            panic!()
        };
        p.answered(nonce, t0 + 30_001 * MS);
        assert_eq!(
            p.verify(5, t0 + 30_002 * MS),
            None,
            "one check per interval"
        );
        assert!(p.verify(5, t0 + 30_200 * MS).is_some());
    }

    #[test]
    fn disabled_probing_asks_for_nothing() {
        let t0 = Instant::now();
        let timing = ProbeTiming {
            interval: Duration::ZERO,
            ..ProbeTiming::default()
        };
        let mut p: Prober<u32> = Prober::new(timing, t0);
        p.watch(Some(1), t0);
        assert!(p.tick(t0 + 10_000 * MS, |_| Vec::new()).is_empty());
        assert_eq!(p.verify(1, t0), None);
    }
}
