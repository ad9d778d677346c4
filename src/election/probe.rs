//! Probing the leader, as a pure state machine: how a node finds out within
//! seconds that the leader went silent (frozen, cut off, powered down with
//! its connections open), without one slow or lossy link deposing a live
//! leader.
//!
//! * Only the nodes next in line probe the leader (the node loop decides
//!   who; see `docs/failure-detection.md`), so the leader answers a bounded
//!   number of probes whatever the cluster's size.
//! * A probe that goes unanswered within `timeout` counts as a failure;
//!   after `failures` in a row the prober asks other members to probe the
//!   leader for it (SWIM's indirect probe). One "reachable" from any of them,
//!   or a late answer of the leader itself, clears it: the fault is on this
//!   node's own path. Only when every one of them fails too is the leader
//!   declared [`Probe::Silent`].
//! * A node that is not a prober checks for itself before it moves:
//!   [`Prober::verify`] sends one probe, and only its failure gives a
//!   verdict. No node deposes its leader on another node's word alone.
//!
//! There are no sockets and no clocks in here: the node loop sends the
//! probes this asks for, reports what came back, and feeds a verdict to the
//! election as [`super::Input::Silent`].

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Timing of the probes, see the `[election]` section of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    /// Time between probes while the leader answers; zero disables probing.
    pub interval: Duration,
    /// How long a probe, direct or indirect, may take.
    pub timeout: Duration,
    /// Failed direct probes in a row before other members are asked.
    pub failures: u32,
}

impl Default for ProbeTiming {
    fn default() -> Self {
        ProbeTiming {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(1000),
            failures: 2,
        }
    }
}

/// What the node loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe<I> {
    /// Send a probe to `to`; report the answer with [`Prober::answered`] or
    /// its failure with [`Prober::failed`], under `nonce`.
    Ping { to: I, nonce: u64 },
    /// Ask each of `via` to probe `target`; report each answer with
    /// [`Prober::indirect`] under `nonce`.
    Ask { via: Vec<I>, target: I, nonce: u64 },
    /// Every probe failed: `target` is silent.
    Silent(I),
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
    Indirect {
        nonce: u64,
        deadline: Instant,
        waiting: usize,
    },
}

/// A check of the leader before following another claimant: up to
/// [`CHECK_ATTEMPTS`] probes, one at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Check<I> {
    target: I,
    /// The probe under way, and every one it sent (any answer ends it).
    nonce: u64,
    sent: Vec<u64>,
    deadline: Instant,
    left: u32,
}

/// Probes a check sends before it gives a verdict (one lost probe on a lossy
/// link must not move a follower).
pub const CHECK_ATTEMPTS: u32 = 2;

/// The prober of one node.
#[derive(Debug)]
pub struct Prober<I> {
    timing: ProbeTiming,
    target: Option<I>,
    state: State,
    failed: u32,
    nonce: u64,
    /// The direct probes of this round: an answer to any of them, however
    /// late, shows the target alive.
    pings: Vec<u64>,
    check: Option<Check<I>>,
    /// When the last check started: at most one per interval.
    last_check: Option<Instant>,
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
            check: None,
            last_check: None,
        }
    }

    pub fn enabled(&self) -> bool {
        !self.timing.interval.is_zero()
    }

    /// The peer this node probes now: the leader while this node is next in
    /// line, else `None`. A new target starts afresh.
    pub fn watch(&mut self, target: Option<I>, now: Instant) {
        if !self.enabled() || target == self.target {
            return;
        }
        self.target = target;
        self.failed = 0;
        self.pings.clear();
        self.state = State::Idle { next: now };
    }

    pub fn target(&self) -> Option<&I> {
        self.target.as_ref()
    }

    /// Lets time pass: sends the next probe, or gives up on overdue ones.
    /// `helpers` picks the members to ask for an indirect probe of a target.
    pub fn tick(&mut self, now: Instant, helpers: impl FnOnce(&I) -> Vec<I>) -> Vec<Probe<I>> {
        let mut out = Vec::new();
        if self.check.as_ref().is_some_and(|c| now >= c.deadline) {
            out.extend(self.check_failed(now));
        }
        let Some(target) = self.target.clone() else {
            return out;
        };
        match self.state {
            State::Idle { next } if now >= next => {
                self.nonce += 1;
                self.pings.push(self.nonce);
                self.state = State::Direct {
                    nonce: self.nonce,
                    deadline: now + self.timing.timeout,
                };
                out.push(Probe::Ping {
                    to: target,
                    nonce: self.nonce,
                });
            }
            State::Direct { deadline, .. } if now >= deadline => {
                out.extend(self.direct_failed(target, now, helpers));
            }
            State::Indirect { deadline, .. } if now >= deadline => {
                out.push(self.verdict(target, now));
            }
            _ => {}
        }
        out
    }

    /// The target's answer to probe `nonce` (direct, or the one-off check).
    pub fn answered(&mut self, nonce: u64, now: Instant) {
        if self.check.as_ref().is_some_and(|c| c.sent.contains(&nonce)) {
            self.check = None;
        }
        if self.pings.contains(&nonce) && !matches!(self.state, State::Idle { .. }) {
            self.cleared(now);
        }
    }

    /// Probe `nonce` failed before its deadline (no connection, an error).
    pub fn failed(
        &mut self,
        nonce: u64,
        now: Instant,
        helpers: impl FnOnce(&I) -> Vec<I>,
    ) -> Vec<Probe<I>> {
        if self.check.as_ref().is_some_and(|c| c.nonce == nonce) {
            return self.check_failed(now).into_iter().collect();
        }
        match (&self.state, self.target.clone()) {
            (State::Direct { nonce: n, .. }, Some(target)) if *n == nonce => {
                self.direct_failed(target, now, helpers)
            }
            _ => Vec::new(),
        }
    }

    /// A member's answer to the indirect probe `nonce`.
    pub fn indirect(&mut self, nonce: u64, reachable: bool, now: Instant) -> Vec<Probe<I>> {
        let State::Indirect {
            nonce: n, waiting, ..
        } = &mut self.state
        else {
            return Vec::new();
        };
        if *n != nonce {
            return Vec::new();
        }
        if reachable {
            self.cleared(now);
            return Vec::new();
        }
        *waiting = waiting.saturating_sub(1);
        match (*waiting, self.target.clone()) {
            (0, Some(target)) => vec![self.verdict(target, now)],
            _ => Vec::new(),
        }
    }

    /// Checks `target` (a node about to follow another claimant while its
    /// leader still looks live): [`CHECK_ATTEMPTS`] failed probes in a row
    /// are a verdict, any answer ends it. One check at a time, at most one
    /// started per interval.
    pub fn verify(&mut self, target: I, now: Instant) -> Option<Probe<I>> {
        let recent = self
            .last_check
            .is_some_and(|t| now.saturating_duration_since(t) < self.timing.interval);
        if !self.enabled() || self.check.is_some() || recent {
            return None;
        }
        self.last_check = Some(now);
        self.nonce += 1;
        self.check = Some(Check {
            target: target.clone(),
            nonce: self.nonce,
            sent: vec![self.nonce],
            deadline: now + self.timing.timeout,
            left: CHECK_ATTEMPTS.saturating_sub(1),
        });
        Some(Probe::Ping {
            to: target,
            nonce: self.nonce,
        })
    }

    /// The check's probe failed: another attempt, or the verdict.
    fn check_failed(&mut self, now: Instant) -> Option<Probe<I>> {
        let c = self.check.as_mut()?;
        if c.left == 0 {
            let target = c.target.clone();
            self.check = None;
            return Some(Probe::Silent(target));
        }
        c.left -= 1;
        self.nonce += 1;
        c.nonce = self.nonce;
        c.sent.push(self.nonce);
        c.deadline = now + self.timing.timeout;
        Some(Probe::Ping {
            to: c.target.clone(),
            nonce: self.nonce,
        })
    }

    fn direct_failed(
        &mut self,
        target: I,
        now: Instant,
        helpers: impl FnOnce(&I) -> Vec<I>,
    ) -> Vec<Probe<I>> {
        self.failed += 1;
        if self.failed < self.timing.failures.max(1) {
            // Probe again at once: it has been silent for a whole timeout.
            self.state = State::Idle { next: now };
            return Vec::new();
        }
        let via = helpers(&target);
        if via.is_empty() {
            // No one else to ask (a cluster of two): the direct probes decide.
            return vec![self.verdict(target, now)];
        }
        self.nonce += 1;
        self.state = State::Indirect {
            nonce: self.nonce,
            deadline: now + self.timing.timeout,
            waiting: via.len(),
        };
        vec![Probe::Ask {
            via,
            target,
            nonce: self.nonce,
        }]
    }

    fn cleared(&mut self, now: Instant) {
        self.failed = 0;
        self.pings.clear();
        self.state = State::Idle {
            next: now + self.timing.interval,
        };
    }

    fn verdict(&mut self, target: I, now: Instant) -> Probe<I> {
        self.cleared(now);
        Probe::Silent(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn prober(t0: Instant) -> Prober<u32> {
        let mut p = Prober::new(ProbeTiming::default(), t0);
        p.watch(Some(1), t0);
        p
    }

    fn ping_nonce(out: &[Probe<u32>]) -> u64 {
        match out {
            [Probe::Ping { to: 1, nonce }] => *nonce,
            other => panic!("expected one ping of 1, got {other:?}"),
        }
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
            p.answered(n, now);
            now += 400 * MS;
            assert!(p.tick(now, |_| vec![2, 3]).is_empty(), "too early");
            now += 100 * MS;
        }
    }

    #[test]
    fn silence_needs_the_direct_failures_and_every_indirect_probe() {
        let t0 = Instant::now();
        let mut p = prober(t0);
        ping_nonce(&p.tick(t0, |_| vec![2, 3]));
        let t1 = t0 + 1000 * MS;
        // First timeout: probe again at once, nobody asked yet.
        assert!(p.tick(t1, |_| vec![2, 3]).is_empty());
        ping_nonce(&p.tick(t1, |_| vec![2, 3]));
        let t2 = t1 + 1000 * MS;
        let out = p.tick(t2, |_| vec![2, 3]);
        let nonce = match &out[..] {
            [
                Probe::Ask {
                    via,
                    target: 1,
                    nonce,
                },
            ] if *via == vec![2, 3] => *nonce,
            other => panic!("{other:?}"),
        };
        assert!(
            p.indirect(nonce, false, t2 + 10 * MS).is_empty(),
            "one helper left"
        );
        assert_eq!(
            p.indirect(nonce, false, t2 + 20 * MS),
            vec![Probe::Silent(1)]
        );
    }

    #[test]
    fn any_reachable_answer_or_a_late_pong_clears_the_suspicion() {
        let t0 = Instant::now();
        for late_pong in [false, true] {
            let mut p = prober(t0);
            let first = ping_nonce(&p.tick(t0, |_| vec![2, 3, 4]));
            let t1 = t0 + 1000 * MS;
            p.tick(t1, |_| vec![2, 3, 4]);
            ping_nonce(&p.tick(t1, |_| vec![2, 3, 4]));
            let t2 = t1 + 1000 * MS;
            let Probe::Ask { nonce, .. } = p.tick(t2, |_| vec![2, 3, 4]).remove(0) else {
                panic!()
            };
            assert!(p.indirect(nonce, false, t2).is_empty());
            if late_pong {
                // The answer to the first, overdue probe shows it alive.
                p.answered(first, t2);
            } else {
                assert!(p.indirect(nonce, true, t2).is_empty());
            }
            // Cleared: the other helpers' failures are stale, no verdict at
            // the deadline, and the next probe comes after the interval.
            assert!(p.indirect(nonce, false, t2).is_empty());
            assert!(p.tick(t2 + 499 * MS, |_| vec![2]).is_empty(), "{late_pong}");
            let out = p.tick(t2 + 1000 * MS, |_| vec![2]);
            assert!(
                matches!(out[..], [Probe::Ping { to: 1, .. }]),
                "{late_pong}: {out:?}"
            );
        }
    }

    #[test]
    fn overdue_indirect_answers_count_as_failures() {
        let t0 = Instant::now();
        let mut p = prober(t0);
        let mut now = t0;
        let mut out = Vec::new();
        for _ in 0..20 {
            out = p.tick(now, |_| vec![2]);
            if matches!(out.first(), Some(Probe::Silent(_))) {
                break;
            }
            now += 250 * MS;
        }
        assert_eq!(out, vec![Probe::Silent(1)]);
        // Ticks every 250 ms: a timeout at 1000, the next probe at the next
        // tick (1250), its timeout at 2250, then the helper's at 3250.
        assert_eq!(
            now - t0,
            3250 * MS,
            "two direct timeouts, then one indirect"
        );
    }

    #[test]
    fn alone_with_the_leader_the_direct_probes_decide() {
        let t0 = Instant::now();
        let mut p = prober(t0);
        let n = ping_nonce(&p.tick(t0, |_| Vec::new()));
        assert!(p.failed(n, t0 + 5 * MS, |_| Vec::new()).is_empty());
        let n = ping_nonce(&p.tick(t0 + 5 * MS, |_| Vec::new()));
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
        p.tick(t0 + 1000 * MS, |_| vec![2]);
        p.watch(Some(7), t0 + 1000 * MS);
        match &p.tick(t0 + 1000 * MS, |_| vec![2])[..] {
            [Probe::Ping { to: 7, .. }] => {}
            other => panic!("{other:?}"),
        }
        p.watch(None, t0 + 1100 * MS);
        assert!(p.tick(t0 + 9000 * MS, |_| vec![2]).is_empty());
    }

    #[test]
    fn a_check_is_one_probe_and_only_its_failure_is_a_verdict() {
        let t0 = Instant::now();
        let mut p: Prober<u32> = Prober::new(ProbeTiming::default(), t0);
        let Some(Probe::Ping { to: 5, nonce }) = p.verify(5, t0) else {
            panic!()
        };
        assert_eq!(p.verify(5, t0), None, "one check at a time");
        p.answered(nonce, t0 + 10 * MS);
        assert!(p.tick(t0 + 5000 * MS, |_| Vec::new()).is_empty());
        let Some(Probe::Ping { nonce, .. }) = p.verify(5, t0 + 5000 * MS) else {
            panic!()
        };
        assert!(p.tick(t0 + 5999 * MS, |_| Vec::new()).is_empty());
        // The first attempt times out: a second probe, not yet a verdict.
        let again = p.tick(t0 + 6000 * MS, |_| Vec::new());
        let [
            Probe::Ping {
                to: 5,
                nonce: second,
            },
        ] = again[..]
        else {
            panic!("{again:?}")
        };
        assert_ne!(second, nonce);
        // A failure of the second is the verdict.
        assert_eq!(
            p.failed(second, t0 + 6100 * MS, |_| Vec::new()),
            vec![Probe::Silent(5)]
        );
        // And an answer to either attempt ends a check with no verdict.
        let Some(Probe::Ping { nonce, .. }) = p.verify(5, t0 + 7000 * MS) else {
            panic!()
        };
        p.tick(t0 + 8000 * MS, |_| Vec::new());
        p.answered(nonce, t0 + 8100 * MS);
        assert!(p.tick(t0 + 20_000 * MS, |_| Vec::new()).is_empty());
        // At most one check started per interval (500 ms), however many
        // claims arrive.
        let Some(Probe::Ping { nonce, .. }) = p.verify(5, t0 + 30_000 * MS) else {
            panic!()
        };
        p.answered(nonce, t0 + 30_001 * MS);
        assert_eq!(
            p.verify(5, t0 + 30_002 * MS),
            None,
            "one check per interval"
        );
        assert!(p.verify(5, t0 + 30_500 * MS).is_some());
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
