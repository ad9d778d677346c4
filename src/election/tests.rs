//! Election tests: single-node rules, then whole clusters over a simulated
//! network where nodes die, partitions form and heal.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

const SEC: Duration = Duration::from_secs(1);

fn timing() -> Timing {
    Timing {
        peer_timeout: Duration::from_secs(3),
        suspect_timeout: Duration::from_secs(2),
        startup_grace: SEC,
        forget_after: Duration::from_secs(60),
        heartbeat: SEC,
        ..Timing::default()
    }
}

#[test]
fn lone_eligible_node_leads_after_grace_with_a_fresh_epoch() {
    let t0 = Instant::now();
    let mut e = Election::new(7u32, Role::Worker, 1, 41, timing(), t0);
    assert!(e.tick(t0).is_empty(), "no claim during the startup grace");
    assert_eq!(e.leader(), None);
    let actions = e.tick(t0 + SEC);
    assert_eq!(e.leader(), Some(&(7, 42)));
    assert!(actions.contains(&Action::PersistEpoch(42)));
    assert!(actions.contains(&Action::Announce));
}

#[test]
fn leecher_alone_never_leads() {
    let t0 = Instant::now();
    let mut e = Election::new(1u32, Role::Leecher, 1, 0, timing(), t0);
    e.tick(t0 + 10 * SEC);
    assert_eq!(e.leader(), None);
    assert_eq!(e.max_epoch(), 0);
}

fn report(role: Role, seq: u64, max_epoch: u64, follows: Option<(u32, u64)>) -> Report<u32> {
    Report {
        role,
        incarnation: 1,
        seq,
        max_epoch,
        follows,
        voted: follows,
        interval: SEC,
    }
}

#[test]
fn follower_rejects_a_claim_below_the_highest_epoch_seen() {
    let t0 = Instant::now();
    let mut e = Election::new(9u32, Role::Worker, 1, 10, timing(), t0);
    let hb = report(Role::Master, 1, 5, Some((1, 5)));
    e.handle(
        Input::Heartbeat {
            from: 1,
            report: hb,
        },
        t0,
    );
    assert_eq!(e.leader(), None, "epoch 5 < 10 seen");
    let hb = report(Role::Master, 2, 11, Some((1, 11)));
    let actions = e.handle(
        Input::Heartbeat {
            from: 1,
            report: hb,
        },
        t0,
    );
    assert_eq!(e.leader(), Some(&(1, 11)));
    assert!(actions.contains(&Action::PersistEpoch(11)));
}

#[test]
fn one_leader_per_epoch() {
    let t0 = Instant::now();
    let mut e = Election::new(9u32, Role::Worker, 1, 0, timing(), t0);
    e.handle(
        Input::Heartbeat {
            from: 3,
            report: report(Role::Master, 1, 4, Some((3, 4))),
        },
        t0,
    );
    assert_eq!(e.leader(), Some(&(3, 4)));
    // A higher-priority master appears claiming the same epoch: not accepted...
    e.handle(
        Input::Heartbeat {
            from: 2,
            report: report(Role::Master, 1, 4, Some((2, 4))),
        },
        t0,
    );
    assert_ne!(e.leader(), Some(&(2, 4)), "a second leader at epoch 4");
    // ...until it takes a fresh epoch.
    e.handle(
        Input::Heartbeat {
            from: 2,
            report: report(Role::Master, 2, 5, Some((2, 5))),
        },
        t0,
    );
    assert_eq!(e.leader(), Some(&(2, 5)));
}

#[test]
fn flaky_link_needs_confirmation_before_the_leader_is_deposed() {
    let t0 = Instant::now();
    let mut e = Election::new(9u32, Role::Master, 1, 0, timing(), t0);
    e.handle(
        Input::Heartbeat {
            from: 1,
            report: report(Role::Master, 1, 1, Some((1, 1))),
        },
        t0,
    );
    let t1 = t0 + 2 * SEC;
    let actions = e.handle(Input::ConnectionLost(1), t1);
    assert_eq!(actions, vec![Action::ConfirmAlive(1)]);
    assert_eq!(e.leader(), Some(&(1, 1)), "suspect leader still leads");
    e.handle(Input::Connected(1), t1);
    assert_eq!(e.leader(), Some(&(1, 1)));
    e.handle(Input::ConnectionLost(1), t1);
    e.handle(Input::Unreachable(1), t1);
    assert_eq!(
        e.leader(),
        Some(&(9, 2)),
        "confirmed dead: the next master takes over"
    );
}

#[test]
fn heartbeat_in_flight_does_not_resurrect_a_dead_peer() {
    let t0 = Instant::now();
    let mut e = Election::new(9u32, Role::Master, 1, 0, timing(), t0 + 5 * SEC);
    e.handle(
        Input::Heartbeat {
            from: 1,
            report: report(Role::Master, 5, 1, Some((1, 1))),
        },
        t0,
    );
    e.handle(Input::ConnectionLost(1), t0);
    e.handle(Input::Unreachable(1), t0);
    let late = report(Role::Master, 6, 1, Some((1, 1)));
    e.handle(
        Input::Heartbeat {
            from: 1,
            report: late,
        },
        t0 + SEC,
    );
    assert!(!e.is_live(&1, t0 + SEC));
    let much_later = report(Role::Master, 9, 1, Some((1, 1)));
    e.handle(
        Input::Heartbeat {
            from: 1,
            report: much_later,
        },
        t0 + 2 * SEC,
    );
    assert!(
        e.is_live(&1, t0 + 2 * SEC),
        "a peer that keeps talking is alive"
    );
}

#[test]
fn graceful_departure_hands_over_at_once() {
    let t0 = Instant::now();
    let mut e = Election::new(9u32, Role::Worker, 1, 0, timing(), t0);
    e.handle(
        Input::Heartbeat {
            from: 1,
            report: report(Role::Master, 1, 3, Some((1, 3))),
        },
        t0 + SEC,
    );
    assert_eq!(e.leader(), Some(&(1, 3)));
    e.handle(
        Input::Left {
            from: 1,
            incarnation: 1,
        },
        t0 + SEC,
    );
    assert_eq!(e.leader(), Some(&(9, 4)));
}

// ---------------------------------------------------------------------------
// Simulated cluster: every node hears every other node of its side once per
// round; cutting a link delivers `ConnectionLost` + `Unreachable`.

struct Sim {
    nodes: Vec<Election<u32>>,
    /// Side of the partition each node is on; `None` = dead.
    side: Vec<Option<u8>>,
    now: Instant,
    /// Every (node, epoch) seen, to check epochs never decrease.
    last_epoch: Vec<u64>,
}

impl Sim {
    fn new(members: &[(u32, Role)]) -> Sim {
        let now = Instant::now();
        let nodes = members
            .iter()
            .map(|(id, role)| Election::new(*id, *role, 1, 0, timing(), now))
            .collect();
        Sim {
            nodes,
            side: vec![Some(0); members.len()],
            now,
            last_epoch: vec![0; members.len()],
        }
    }

    fn feed(&mut self, i: usize, input: Input<u32>) {
        let now = self.now;
        self.nodes[i].handle(input, now);
        self.check_epoch(i);
    }

    fn check_epoch(&mut self, i: usize) {
        let e = self.nodes[i].max_epoch();
        assert!(e >= self.last_epoch[i], "epoch went down on node {i}");
        self.last_epoch[i] = e;
        let led = self.nodes[i].leader().map_or(0, |(_, e)| *e);
        assert!(led <= e, "followed epoch above the highest seen");
        if self.nodes[i].is_leader() {
            assert!(self.nodes[i].role().can_lead(), "a leecher leads");
        }
    }

    fn round(&mut self) {
        self.now += SEC / 2;
        let reports: Vec<_> = (0..self.nodes.len())
            .map(|i| self.side[i].map(|_| self.nodes[i].next_report(self.now)))
            .collect();
        for to in 0..self.nodes.len() {
            for (from, r) in reports.iter().enumerate() {
                if let Some(r) = r
                    && from != to
                    && self.side[to].is_some()
                    && self.side[to] == self.side[from]
                {
                    let from_id = *self.nodes[from].me();
                    self.feed(
                        to,
                        Input::Heartbeat {
                            from: from_id,
                            report: r.clone(),
                        },
                    );
                }
            }
            if self.side[to].is_some() {
                let now = self.now;
                self.nodes[to].tick(now);
                self.check_epoch(to);
                self.check_next_change(to);
            }
        }
    }

    /// A node's state changes on its own only at `next_change`: a tick at
    /// any moment before it changes nothing and reports nothing, and the
    /// same peers are live throughout (the node's driver sleeps until then).
    fn check_next_change(&self, i: usize) {
        let e = &self.nodes[i];
        let now = self.now;
        let at = e.next_change(now);
        let probes = match at {
            Some(at) => {
                assert!(at > now, "node {i}: next change {at:?} not after {now:?}");
                let last = at - Duration::from_millis(1);
                vec![now + (last - now) / 2, last]
            }
            None => vec![now + Duration::from_secs(24 * 3600)],
        };
        let summary = |e: &Election<u32>, t: Instant| {
            let live: Vec<u32> = e.live_peers(t).copied().collect();
            let states: Vec<(u32, std::mem::Discriminant<Liveness>)> = e
                .peers()
                .map(|(id, p)| (*id, std::mem::discriminant(&p.liveness)))
                .collect();
            (e.leader().cloned(), e.isolated(t), live, states)
        };
        let before = summary(e, now);
        for t in probes {
            let mut c = e.clone();
            let actions = c.tick(t);
            assert!(
                actions.is_empty(),
                "node {i}: a tick at {t:?}, before the next change {at:?}, acted: {actions:?}"
            );
            assert_eq!(summary(&c, t), before, "node {i}: changed before {at:?}");
        }
    }

    fn cut(&mut self, a: usize, b: usize) {
        let (ida, idb) = (*self.nodes[a].me(), *self.nodes[b].me());
        if self.side[a].is_some() {
            self.feed(a, Input::ConnectionLost(idb));
            self.feed(a, Input::Unreachable(idb));
        }
        if self.side[b].is_some() {
            self.feed(b, Input::ConnectionLost(ida));
            self.feed(b, Input::Unreachable(ida));
        }
    }

    fn kill(&mut self, k: usize) {
        self.side[k] = None;
        for i in 0..self.nodes.len() {
            if i != k {
                self.cut(i, k);
            }
        }
    }

    fn partition(&mut self, sides: &[u8]) {
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                if self.side[a].is_some() && self.side[b].is_some() && sides[a] != sides[b] {
                    self.cut(a, b);
                }
            }
        }
        for (i, s) in sides.iter().enumerate() {
            if self.side[i].is_some() {
                self.side[i] = Some(*s);
            }
        }
    }

    fn heal(&mut self) {
        let alive: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.side[*i].is_some())
            .collect();
        for &i in &alive {
            self.side[i] = Some(0);
        }
        for &a in &alive {
            for &b in &alive {
                if a != b {
                    let idb = *self.nodes[b].me();
                    self.feed(a, Input::Connected(idb));
                }
            }
        }
    }

    fn alive(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.side[*i].is_some())
    }

    /// The leader a side should have: highest role, lowest id among its live members.
    fn expected(&self, side: u8) -> Option<u32> {
        let cands: Vec<(Role, u32)> = self
            .alive()
            .filter(|i| self.side[*i] == Some(side))
            .map(|i| (self.nodes[i].role(), *self.nodes[i].me()))
            .collect();
        choose_leader(cands.iter().map(|(r, id)| (*r, id))).copied()
    }

    /// Asserts every live node of `side` follows `expected(side)` and that
    /// only it believes it leads. Returns the epoch.
    fn assert_agreed(&self, side: u8) -> Option<u64> {
        let expected = self.expected(side);
        let members: Vec<usize> = self
            .alive()
            .filter(|i| self.side[*i] == Some(side))
            .collect();
        if members.is_empty() {
            return None;
        }
        let views: BTreeSet<_> = members
            .iter()
            .map(|i| self.nodes[*i].leader().cloned())
            .collect();
        assert_eq!(views.len(), 1, "side {side} disagrees: {views:?}");
        let view = views.into_iter().next().flatten();
        assert_eq!(
            view.as_ref().map(|(l, _)| *l),
            expected,
            "side {side} follows the wrong leader"
        );
        let leaders = members
            .iter()
            .filter(|i| self.nodes[**i].is_leader())
            .count();
        assert_eq!(
            leaders,
            usize::from(expected.is_some()),
            "side {side}: {leaders} self-declared leaders"
        );
        view.map(|(_, e)| e)
    }

    fn settle(&mut self) {
        for _ in 0..12 {
            self.round();
        }
    }
}

impl Sim {
    /// Node `k` starts again (a new incarnation, its epoch kept on disk) and
    /// is connected to every live node.
    fn restart(&mut self, k: usize) {
        let old = &self.nodes[k];
        let (id, role, epoch) = (*old.me(), old.role(), old.max_epoch());
        let incarnation = old.incarnation + 1;
        self.nodes[k] = Election::new(id, role, incarnation, epoch, timing(), self.now);
        self.side[k] = Some(0);
        for i in 0..self.nodes.len() {
            if i != k && self.side[i].is_some() {
                let other = *self.nodes[i].me();
                self.feed(i, Input::Connected(id));
                self.feed(k, Input::Connected(other));
            }
        }
    }

    /// Every live node's leader.
    fn leaders(&self) -> Vec<Option<u32>> {
        self.alive()
            .map(|i| self.nodes[i].leader().map(|(l, _)| *l))
            .collect()
    }
}

fn members() -> impl Strategy<Value = Vec<(u32, Role)>> {
    let role = prop_oneof![Just(Role::Master), Just(Role::Worker), Just(Role::Leecher)];
    prop::collection::btree_map(any::<u32>(), role, 1..9).prop_map(|m| m.into_iter().collect())
}

#[test]
fn five_node_scenario_from_the_issue() {
    let mut sim = Sim::new(&[
        (30, Role::Master),
        (10, Role::Master),
        (20, Role::Worker),
        (5, Role::Worker),
        (1, Role::Leecher),
    ]);
    sim.settle();
    let e1 = sim.assert_agreed(0).unwrap();
    assert_eq!(sim.nodes[0].leader().map(|l| l.0), Some(10));
    sim.kill(1);
    sim.settle();
    let e2 = sim.assert_agreed(0).unwrap();
    assert_eq!(sim.nodes[2].leader().map(|l| l.0), Some(30));
    assert!(e2 > e1);
    sim.kill(0);
    sim.settle();
    let e3 = sim.assert_agreed(0).unwrap();
    assert_eq!(
        sim.nodes[2].leader().map(|l| l.0),
        Some(5),
        "the lowest-ID worker"
    );
    assert!(e3 > e2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn same_view_same_leader(ms in members(), shuffle_seed in any::<u64>()) {
        let mut shuffled = ms.clone();
        let n = shuffled.len();
        for i in 0..n {
            let j = ((shuffle_seed.rotate_left(i as u32 * 7)) % n as u64) as usize;
            shuffled.swap(i, j);
        }
        let a = choose_leader(ms.iter().map(|(id, r)| (*r, id)));
        let b = choose_leader(shuffled.iter().map(|(id, r)| (*r, id)));
        prop_assert_eq!(a, b);
        if let Some(l) = a {
            let role = ms.iter().find(|(id, _)| id == l).unwrap().1;
            prop_assert!(role.can_lead());
            prop_assert!(ms.iter().all(|(id, r)| *r < role || (*r == role && id >= l)));
        } else {
            prop_assert!(ms.iter().all(|(_, r)| *r == Role::Leecher));
        }
    }

    #[test]
    fn cluster_agrees_and_survives_deaths(ms in members(), kills in prop::collection::vec(any::<prop::sample::Index>(), 0..3)) {
        let mut sim = Sim::new(&ms);
        sim.settle();
        sim.assert_agreed(0);
        for k in kills {
            let alive: Vec<usize> = sim.alive().collect();
            if alive.len() <= 1 { break; }
            let before = sim.nodes[alive[0]].max_epoch();
            sim.kill(*k.get(&alive));
            sim.settle();
            if let Some(e) = sim.assert_agreed(0) {
                let had_leader = before > 0;
                prop_assert!(!had_leader || e >= before);
            }
        }
    }

    #[test]
    fn healed_split_ends_with_one_leader_above_both_sides(
        ms in members(),
        split in prop::collection::vec(any::<bool>(), 9),
        kills in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    ) {
        let mut sim = Sim::new(&ms);
        sim.settle();
        let sides: Vec<u8> = (0..ms.len()).map(|i| u8::from(split[i])).collect();
        sim.partition(&sides);
        sim.settle();
        // Deaths inside the sides move their epochs on independently.
        for k in kills {
            let alive: Vec<usize> = sim.alive().collect();
            if alive.len() > 1 {
                sim.kill(*k.get(&alive));
                sim.settle();
            }
        }
        let e0 = sim.assert_agreed(0);
        let e1 = sim.assert_agreed(1);
        sim.heal();
        sim.settle();
        let e = sim.assert_agreed(0);
        if let (Some(e), Some(e0), Some(e1)) = (e, e0, e1) {
            prop_assert!(e > e0 && e > e1, "epoch {} not above {:?} and {:?}", e, e0, e1);
        }
    }
}

#[test]
fn healed_split_where_the_rightful_side_is_ahead_still_takes_a_new_epoch() {
    let mut sim = Sim::new(&[
        (1, Role::Master),
        (2, Role::Master),
        (3, Role::Master),
        (4, Role::Worker),
        (5, Role::Master),
    ]);
    sim.settle();
    sim.partition(&[1, 0, 0, 1, 0]);
    sim.settle();
    sim.kill(1); // side 0 moves to its second new leader: 3
    sim.settle();
    sim.kill(0); // side 1 falls back to its worker: 4
    sim.settle();
    let e0 = sim.assert_agreed(0).unwrap();
    let e1 = sim.assert_agreed(1).unwrap();
    assert!(
        e0 > e1,
        "the scenario needs the rightful side ahead: {e0} vs {e1}"
    );
    sim.heal();
    sim.settle();
    let e = sim.assert_agreed(0).unwrap();
    assert_eq!(sim.nodes[3].leader().map(|l| l.0), Some(3));
    assert!(e > e0 && e > e1, "{e} not above {e0} and {e1}");
}

#[test]
fn missed_heartbeats_depose_a_silent_leader_even_while_connected() {
    let t0 = Instant::now();
    let mut e = Election::new(9u32, Role::Worker, 1, 0, timing(), t0);
    e.handle(Input::Connected(1), t0);
    e.handle(
        Input::Heartbeat {
            from: 1,
            report: report(Role::Master, 1, 1, Some((1, 1))),
        },
        t0,
    );
    let within = t0 + timing().peer_timeout;
    e.tick(within);
    assert!(e.is_live(&1, within));
    assert_eq!(e.leader(), Some(&(1, 1)));
    let after = within + Duration::from_millis(1);
    e.tick(after);
    assert!(
        !e.is_live(&1, after),
        "a connection is no proof of life without heartbeats"
    );
    assert_eq!(e.leader(), Some(&(9, 2)));
}

#[test]
fn absurd_epochs_are_ignored_and_never_overflow() {
    let t0 = Instant::now();
    let mut e = Election::new(9u32, Role::Master, 1, 3, timing(), t0);
    e.tick(t0 + SEC);
    assert_eq!(e.leader(), Some(&(9, 4)));
    let hostile = report(Role::Leecher, 1, u64::MAX, None);
    e.handle(
        Input::Heartbeat {
            from: 1,
            report: hostile,
        },
        t0 + SEC,
    );
    assert_eq!(e.max_epoch(), 4, "report ignored whole");
    assert!(e.peer(&1).is_none());
    // Even an epoch at the very top (the store refuses one past MAX_EPOCH)
    // cannot overflow: no term is claimed.
    let mut top = Election::new(9u32, Role::Master, 1, u64::MAX, timing(), t0);
    top.tick(t0 + SEC);
    assert_eq!(top.leader(), None);
    assert!(top.epochs_exhausted());
}

/// The epoch limit, exactly at the edge: a report at `MAX_EPOCH` is taken, a
/// claim at `MAX_EPOCH` (from `MAX_EPOCH - 1`) is followed, and a node that
/// has seen `MAX_EPOCH` claims nothing above it (every peer would refuse it)
/// and says the epochs are exhausted.
#[test]
fn the_epoch_limit_holds_exactly_at_the_boundary() {
    let t0 = Instant::now();
    // One below the limit: the rightful node claims the limit itself.
    let mut e = Election::new(1u32, Role::Master, 1, MAX_EPOCH - 1, timing(), t0);
    let actions = e.tick(t0 + SEC);
    assert_eq!(e.leader(), Some(&(1, MAX_EPOCH)));
    assert!(actions.contains(&Action::PersistEpoch(MAX_EPOCH)));
    assert!(e.epochs_exhausted());
    // A follower at MAX_EPOCH - 1 follows that claim.
    let mut f = Election::new(9u32, Role::Worker, 1, MAX_EPOCH - 1, timing(), t0);
    f.handle(
        Input::Heartbeat {
            from: 1,
            report: report(Role::Master, 1, MAX_EPOCH, Some((1, MAX_EPOCH))),
        },
        t0,
    );
    assert_eq!(f.leader(), Some(&(1, MAX_EPOCH)));
    // A report one past the limit is ignored whole.
    let mut g = Election::new(9u32, Role::Worker, 1, 5, timing(), t0);
    let actions = g.handle(
        Input::Heartbeat {
            from: 1,
            report: report(Role::Master, 1, MAX_EPOCH + 1, Some((1, MAX_EPOCH + 1))),
        },
        t0,
    );
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!((g.max_epoch(), g.leader()), (5, None));
    // A report exactly at the limit is taken; the next rightful node then
    // has no epoch to claim and leads nobody (no overflow, no refused term).
    let mut h = Election::new(1u32, Role::Master, 1, 5, timing(), t0);
    h.handle(
        Input::Heartbeat {
            from: 2,
            report: report(Role::Worker, 1, MAX_EPOCH, None),
        },
        t0,
    );
    assert_eq!(h.max_epoch(), MAX_EPOCH);
    let actions = h.tick(t0 + SEC);
    assert_eq!(h.leader(), None);
    assert!(h.epochs_exhausted());
    assert!(!actions.iter().any(|a| matches!(a, Action::PersistEpoch(_))));
}

/// A leecher's epochs move nothing: its claims are never followed.
#[test]
fn a_leechers_epoch_is_not_taken() {
    let t0 = Instant::now();
    let mut e = Election::new(9u32, Role::Worker, 1, 5, timing(), t0);
    let actions = e.handle(
        Input::Heartbeat {
            from: 1,
            report: report(Role::Leecher, 1, MAX_EPOCH, Some((1, MAX_EPOCH))),
        },
        t0,
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::PersistEpoch(_))));
    assert_eq!(e.max_epoch(), 5);
}

#[test]
fn failback_passes_leadership_with_no_gap() {
    let mut sim = Sim::new(&[
        (10, Role::Master),
        (20, Role::Master),
        (30, Role::Worker),
        (40, Role::Leecher),
    ]);
    sim.settle();
    sim.assert_agreed(0);
    sim.kill(0);
    sim.settle();
    let e1 = sim.assert_agreed(0).unwrap();
    assert_eq!(sim.nodes[2].leader().map(|l| l.0), Some(20));
    // The higher-ranked master returns: through its startup grace and its
    // claim, every node always has a leader, and the old one hands over
    // straight to it.
    sim.restart(0);
    let mut seen = Vec::new();
    for _ in 0..12 {
        sim.round();
        let now = sim.leaders();
        assert!(
            now.iter().all(Option::is_some),
            "a node without a leader: {now:?}"
        );
        seen.push(now);
    }
    let e2 = sim.assert_agreed(0).unwrap();
    assert_eq!(e2, e1 + 1, "one claim, no churn");
    assert_eq!(sim.nodes[3].leader().map(|l| l.0), Some(10));
    assert!(
        seen.iter().any(|v| v.iter().all(|l| *l == Some(20))),
        "the returning master followed the current leader during its grace: {seen:?}"
    );
}

#[test]
fn a_leaving_leader_claims_nothing_and_its_last_words_move_no_epoch() {
    let t0 = Instant::now();
    let mut m = Election::new(1u32, Role::Master, 1, 0, timing(), t0);
    let mut w = Election::new(2u32, Role::Worker, 1, 0, timing(), t0);
    let t1 = t0 + SEC;
    let hb = |e: &mut Election<u32>, from: &mut Election<u32>, at| {
        let report = from.next_report(at);
        let id = *from.me();
        e.handle(Input::Heartbeat { from: id, report }, at)
    };
    m.tick(t1);
    hb(&mut w, &mut m, t1);
    assert_eq!(w.leader(), Some(&(1, 1)));
    hb(&mut m, &mut w, t1);
    // The master leaves: the worker takes over at once.
    m.leave(t1);
    assert_eq!(m.leader(), None);
    w.handle(
        Input::Left {
            from: 1,
            incarnation: 1,
        },
        t1,
    );
    assert_eq!(w.leader(), Some(&(2, 2)));
    // The master still hears the worker while it shuts down: it claims
    // nothing, and its own last heartbeat moves no epoch on the worker.
    hb(&mut m, &mut w, t1);
    assert_eq!(m.leader(), None);
    let mut late = m.next_report(t1);
    late.max_epoch = 9;
    w.handle(
        Input::Heartbeat {
            from: 1,
            report: late,
        },
        t1,
    );
    assert_eq!((w.leader(), w.max_epoch()), (Some(&(2, 2)), 2));
}

#[test]
fn a_step_down_heard_before_the_new_claim_leaves_no_gap() {
    let t0 = Instant::now();
    let mut f = Election::new(30u32, Role::Worker, 1, 3, timing(), t0);
    let hb = |f: &mut Election<u32>, from, seq, role, follows| {
        f.handle(
            Input::Heartbeat {
                from,
                report: report(role, seq, 3, follows),
            },
            t0,
        )
    };
    hb(&mut f, 20, 1, Role::Worker, Some((20, 3)));
    assert_eq!(f.leader(), Some(&(20, 3)));
    // A master returns (not claiming yet): the follower stays with 20.
    hb(&mut f, 10, 1, Role::Master, Some((20, 3)));
    assert_eq!(f.leader(), Some(&(20, 3)));
    // 20 hears 10's claim first and says so before 10's own claim arrives.
    let mut step_down = report(Role::Worker, 2, 4, Some((10, 4)));
    step_down.voted = Some((10, 4));
    f.handle(
        Input::Heartbeat {
            from: 20,
            report: step_down,
        },
        t0,
    );
    assert_eq!(f.leader(), Some(&(10, 4)), "straight to the new leader");
    // Another peer's heartbeat makes the follower look again before 10's
    // claim is in: 10's last report (of term 3) does not undo term 4.
    hb(&mut f, 40, 1, Role::Leecher, Some((20, 3)));
    assert_eq!(f.leader(), Some(&(10, 4)));
    hb(&mut f, 10, 2, Role::Master, Some((10, 4)));
    assert_eq!(f.leader(), Some(&(10, 4)));
}

#[test]
fn a_leader_that_reaches_no_other_member_knows_it_is_isolated() {
    let t0 = Instant::now();
    let mut e = Election::new(1u32, Role::Master, 1, 0, timing(), t0);
    e.tick(t0 + SEC);
    assert!(e.is_leader());
    assert!(
        !e.isolated(t0 + SEC),
        "alone from the start: no member known, not cut off"
    );
    let beat = |e: &mut Election<u32>, from, role, seq, at| {
        e.handle(
            Input::Heartbeat {
                from,
                report: report(role, seq, 1, Some((1, 1))),
            },
            at,
        );
    };
    let t1 = t0 + 2 * SEC;
    beat(&mut e, 2, Role::Worker, 1, t1);
    beat(&mut e, 3, Role::Leecher, 1, t1);
    assert!(!e.isolated(t1));
    // The worker's heartbeats stop; the leecher's go on: a leecher cannot
    // take copies or writes, so the leader is cut off all the same.
    let t2 = t1 + timing().peer_timeout + SEC;
    beat(&mut e, 3, Role::Leecher, 2, t2);
    e.tick(t2);
    assert!(e.is_leader() && e.isolated(t2));
    // The worker is back: no longer isolated.
    beat(&mut e, 2, Role::Worker, 9, t2);
    assert!(!e.isolated(t2));
    // A worker that left gracefully is not missed.
    e.handle(
        Input::Left {
            from: 2,
            incarnation: 1,
        },
        t2,
    );
    assert!(!e.isolated(t2));
    // A follower is not isolated in this sense (it gives no orders anyway).
    let mut f = Election::new(5u32, Role::Worker, 1, 0, timing(), t0);
    beat(&mut f, 1, Role::Master, 1, t0);
    assert!(f.leader().is_some() && !f.is_leader() && !f.isolated(t0));
}

#[test]
fn a_restarted_node_keeps_its_vote_and_accepts_no_other_leader_at_that_epoch() {
    let t0 = Instant::now();
    let mut f = Election::new(9u32, Role::Worker, 1, 0, timing(), t0);
    let actions = f.handle(
        Input::Heartbeat {
            from: 2,
            report: report(Role::Master, 1, 5, Some((2, 5))),
        },
        t0,
    );
    assert!(actions.contains(&Action::PersistVote(2, 5)), "{actions:?}");
    // Restarted with its epoch and vote from disk: a claim by another at
    // the same epoch (a rival across a split) is not accepted.
    let mut g = Election::new(9u32, Role::Worker, 2, 5, timing(), t0).with_vote(Some((2, 5)));
    g.handle(
        Input::Heartbeat {
            from: 1,
            report: report(Role::Master, 1, 5, Some((1, 5))),
        },
        t0,
    );
    assert_eq!(g.leader(), None, "no second leader at epoch 5");
    // Without the vote (the old behaviour) it would have been.
    let mut h = Election::new(9u32, Role::Worker, 2, 5, timing(), t0);
    h.handle(
        Input::Heartbeat {
            from: 1,
            report: report(Role::Master, 1, 5, Some((1, 5))),
        },
        t0,
    );
    assert_eq!(h.leader(), Some(&(1, 5)));
}

#[test]
fn quiet_followers_beat_slower_as_the_cluster_grows_and_are_judged_by_their_interval() {
    let t0 = Instant::now();
    let quiet = Timing {
        quiet_per_member: SEC / 2,
        successors: 2,
        ..timing()
    };
    // Node 10, a worker, among masters 1-2 and workers 3-9 and 11-29.
    let mut e = Election::new(10u32, Role::Worker, 1, 0, quiet, t0);
    let hear = |e: &mut Election<u32>, id: u32, seq: u64, interval: Duration| {
        let role = if id <= 2 { Role::Master } else { Role::Worker };
        let mut r = report(role, seq, 0, None);
        r.interval = interval;
        e.handle(
            Input::Heartbeat {
                from: id,
                report: r,
            },
            t0,
        );
    };
    for id in (1..=29).filter(|id| *id != 10) {
        hear(&mut e, id, 1, SEC);
    }
    // 29 members: 14.5 s, far down the line.
    assert_eq!(e.beat_interval(t0), Duration::from_millis(14_500));
    assert_eq!(e.next_report(t0).interval, Duration::from_millis(14_500));
    // Masters and workers 3-9 gone: two ahead of it, a likely successor.
    for id in 3..=9 {
        e.handle(
            Input::Left {
                from: id,
                incarnation: 1,
            },
            t0,
        );
    }
    assert_eq!(e.beat_interval(t0), SEC, "a successor keeps the full rate");
    // A peer announcing 20 s stays live for 3 x 20 s (peer_timeout is 3
    // heartbeats), one announcing the base rate for 3 s.
    hear(&mut e, 20, 2, 20 * SEC);
    assert!(e.is_live(&20, t0 + 59 * SEC));
    assert!(!e.is_live(&20, t0 + 61 * SEC));
    assert!(!e.is_live(&21, t0 + 4 * SEC));
    // Forgotten after twice its own timeout, not the shorter forget_after.
    e.tick(t0 + 100 * SEC);
    assert!(e.peer(&20).is_some());
    e.tick(t0 + 121 * SEC);
    assert!(e.peer(&20).is_none());
    // A report announcing more than a day is ignored whole.
    let mut far = report(Role::Worker, 1, 0, None);
    far.interval = MAX_INTERVAL + SEC;
    e.handle(
        Input::Heartbeat {
            from: 77,
            report: far,
        },
        t0,
    );
    assert!(e.peer(&77).is_none());
}

#[test]
fn a_silent_verdict_is_undone_by_an_answer_after_it() {
    let t0 = Instant::now();
    let mut w = Election::new(2u32, Role::Worker, 1, 0, timing(), t0);
    let hb = report(Role::Master, 1, 1, Some((1, 1)));
    w.handle(
        Input::Heartbeat {
            from: 1,
            report: hb,
        },
        t0,
    );
    let t1 = t0 + 2 * SEC;
    w.tick(t1);
    assert_eq!(w.leader(), Some(&(1, 1)));
    w.handle(Input::Silent(1), t1);
    assert!(w.is_leader(), "the master is silent: the worker claims");
    w.handle(Input::Answered(1), t1 + SEC);
    assert!(w.is_live(&1, t1 + SEC));
    assert_eq!(
        w.rightful_leader(t1 + SEC),
        Some(1),
        "the master is rightful again at once"
    );
    // A graceful departure is not undone.
    w.handle(
        Input::Left {
            from: 1,
            incarnation: 1,
        },
        t1 + SEC,
    );
    w.handle(Input::Answered(1), t1 + SEC);
    assert!(!w.is_live(&1, t1 + SEC));
}

#[test]
fn quiet_heartbeats_spread_over_the_last_quarter_and_never_late() {
    let s = Duration::from_secs;
    assert_eq!(
        crate::election::quiet_delay(s(5), s(5), 0.3),
        s(5),
        "full rate: exact"
    );
    assert_eq!(crate::election::quiet_delay(s(100), s(5), 0.0), s(75));
    assert_eq!(crate::election::quiet_delay(s(100), s(5), 1.0), s(100));
    for u in [-1.0, 0.0, 0.25, 0.5, 0.999, 2.0, f64::NAN] {
        let d = crate::election::quiet_delay(s(100), s(5), u);
        assert!(d >= s(75) && d <= s(100), "{u}: {d:?}");
    }
}

/// A joining worker that hears of the leader only through a follower (its
/// own greeting from the leader is late) does not claim a term after its
/// grace: it waits for the leader, then follows it. A leader that stays
/// unheard of (the report may be stale) holds it back one heartbeat
/// interval at most.
#[test]
fn a_joining_node_waits_for_a_leader_it_has_only_heard_of() {
    let t0 = Instant::now();
    let t = timing();
    let mut w = Election::new(5u32, Role::Worker, 1, 0, t, t0);
    // Follower 9 (a worker ranked below) follows master 1 at epoch 4; 1 is unknown here.
    w.handle(
        Input::Heartbeat {
            from: 9,
            report: report(Role::Worker, 1, 4, Some((1, 4))),
        },
        t0,
    );
    let after_grace = t0 + t.startup_grace + Duration::from_millis(100);
    w.tick(after_grace);
    assert_eq!(w.leader(), None, "no claim while the leader is unheard of");
    assert_eq!(w.max_epoch(), 4, "no new epoch taken");
    w.handle(
        Input::Heartbeat {
            from: 1,
            report: report(Role::Master, 1, 4, Some((1, 4))),
        },
        after_grace,
    );
    assert_eq!(w.leader(), Some(&(1, 4)));

    // Another joiner whose leader is never heard of: it claims once the
    // bound has passed (its view then holds no one who may lead but it).
    let mut v = Election::new(6u32, Role::Worker, 1, 0, t, t0);
    for k in 1..=3u64 {
        let at = t0 + SEC / 2 * k as u32;
        v.handle(
            Input::Heartbeat {
                from: 9,
                report: report(Role::Worker, k, 4, Some((1, 4))),
            },
            at,
        );
        assert_eq!(v.leader(), None, "{k} half-seconds: still waiting");
    }
    let past = t0 + t.startup_grace + t.heartbeat + Duration::from_millis(100);
    v.handle(
        Input::Heartbeat {
            from: 9,
            report: report(Role::Worker, 4, 4, Some((1, 4))),
        },
        past,
    );
    assert_eq!(
        v.leader(),
        Some(&(6, 5)),
        "claims above the epoch it heard of"
    );
}

/// A joining worker connected to a peer whose greeting has not arrived yet
/// (a loaded leader answers in seconds) does not claim a term after its
/// grace: it waits for the greeting and follows the leader it names. A
/// greeting that never comes holds it back one heartbeat interval at most,
/// and a connection that closes holds it back no longer.
#[test]
fn a_joining_node_waits_for_the_greeting_of_a_connected_peer() {
    let t0 = Instant::now();
    let t = timing();
    let after_grace = t0 + t.startup_grace + Duration::from_millis(100);
    let mut w = Election::new(5u32, Role::Worker, 1, 0, t, t0);
    w.handle(Input::Connected(1), t0 + Duration::from_millis(300));
    w.tick(after_grace);
    assert_eq!(w.leader(), None, "no claim while a greeting is on the way");
    assert_eq!(w.max_epoch(), 0, "no epoch taken");
    w.handle(
        Input::Heartbeat {
            from: 1,
            report: report(Role::Master, 1, 4, Some((1, 4))),
        },
        after_grace,
    );
    assert_eq!(
        w.leader(),
        Some(&(1, 4)),
        "follows the leader that greeted it"
    );

    // The greeting never comes: it claims once the bound has passed.
    let mut v = Election::new(6u32, Role::Worker, 1, 0, t, t0);
    v.handle(Input::Connected(1), t0);
    v.tick(after_grace);
    assert_eq!(v.leader(), None);
    let bound = t0 + t.startup_grace + t.heartbeat;
    assert!(v.next_change(after_grace).is_some_and(|at| at <= bound));
    v.tick(bound + Duration::from_millis(1));
    assert_eq!(v.leader(), Some(&(6, 1)), "claims after the bound");

    // The connection closes before the greeting: nothing left to wait for.
    let mut u = Election::new(7u32, Role::Worker, 1, 0, t, t0);
    u.handle(Input::Connected(1), t0);
    u.handle(Input::ConnectionLost(1), t0 + Duration::from_millis(500));
    u.tick(after_grace);
    assert_eq!(u.leader(), Some(&(7, 1)), "claims after its grace");
}

/// A node probes for the others only once it has joined: its member view
/// matched the leader's, or it has been up for `JOIN_BEATS` heartbeats.
#[test]
fn a_node_probes_only_once_it_has_joined() {
    let t0 = Instant::now();
    let t = timing();
    let e = Election::new(5u32, Role::Worker, 1, 0, t, t0);
    assert!(!e.joined(false, t0));
    assert!(e.joined(true, t0), "views agreed");
    let wait = t.heartbeat * JOIN_BEATS;
    assert!(!e.joined(false, t0 + wait - Duration::from_millis(1)));
    assert!(e.joined(false, t0 + wait), "up long enough");
}

/// The successor is who would lead without the leader; the probers are the
/// `probers` masters and workers next in line (never a leecher, never the
/// leader itself), and only while they follow that leader.
#[test]
fn successor_and_probe_targets_follow_the_rank() {
    let t0 = Instant::now();
    let hb = |e: &mut Election<u32>, from: u32, role: Role, follows: Option<(u32, u64)>| {
        e.handle(
            Input::Heartbeat {
                from,
                report: report(role, 1, 3, follows),
            },
            t0,
        );
    };
    let view = |me: u32, role: Role| {
        let mut e = Election::new(me, role, 1, 3, timing(), t0);
        hb(&mut e, 1, Role::Master, Some((1, 3)));
        for (id, r) in [
            (2, Role::Master),
            (3, Role::Worker),
            (4, Role::Worker),
            (5, Role::Leecher),
        ] {
            if id != me {
                hb(&mut e, id, r, Some((1, 3)));
            }
        }
        e
    };
    for (me, role, successor, probes) in [
        (2, Role::Master, Some(2), true),
        (3, Role::Worker, Some(2), true),
        (4, Role::Worker, Some(2), false),
        (5, Role::Leecher, Some(2), false),
    ] {
        let e = view(me, role);
        assert_eq!(e.leader(), Some(&(1, 3)), "{me} follows 1");
        assert_eq!(e.successor(&1, t0), successor, "{me}");
        assert_eq!(
            e.probe_target(2, t0),
            probes.then_some(1),
            "{me} with 2 probers"
        );
        assert_eq!(
            e.probe_target(3, t0).is_some(),
            role.can_lead(),
            "{me} with 3 probers"
        );
    }
    // Without the leader and node 2, node 3 is next; the leader probes nobody.
    let e = view(3, Role::Worker);
    assert_eq!(e.successor(&2, t0), Some(1));
    let mut lead = Election::new(1u32, Role::Master, 1, 3, timing(), t0);
    lead.tick(t0 + SEC);
    assert!(lead.is_leader());
    assert_eq!(lead.probe_target(3, t0 + SEC), None);
}

/// A peer's allowed silence stretches with its announced interval, and
/// saturates instead of overflowing on an absurd `peer_timeout`.
#[test]
fn silence_stretches_with_the_interval_and_never_overflows() {
    let t = Timing {
        peer_timeout: Duration::from_secs(15),
        heartbeat: Duration::from_secs(5),
        ..Timing::default()
    };
    assert_eq!(
        silence_for(&t, Duration::from_secs(5)),
        Duration::from_secs(15)
    );
    assert_eq!(
        silence_for(&t, Duration::from_secs(1)),
        Duration::from_secs(15)
    );
    assert_eq!(
        silence_for(&t, Duration::from_secs(100)),
        Duration::from_secs(300)
    );
    let absurd = Timing {
        peer_timeout: Duration::from_millis(u64::MAX / 2),
        heartbeat: Duration::from_millis(50),
        ..Timing::default()
    };
    assert_eq!(silence_for(&absurd, MAX_INTERVAL), Duration::MAX);
}

#[test]
fn the_next_change_is_the_earliest_deadline_a_tick_would_act_on() {
    let t = timing();
    let t0 = Instant::now();
    let mut e = Election::new(1u32, Role::Master, 1, 0, t, t0);
    let ms = Duration::from_millis(1);
    // Alone: only the startup grace (and the joiner's wait after it).
    assert_eq!(e.next_change(t0), Some(t0 + t.startup_grace));
    let after_grace = t0 + t.startup_grace + t.heartbeat;
    assert_eq!(e.next_change(after_grace - ms), Some(after_grace));
    assert_eq!(e.next_change(after_grace), None);
    e.tick(after_grace);
    assert!(e.is_leader());
    // A peer heard now: live until its allowed silence runs out.
    let heard = after_grace;
    e.handle(
        Input::Heartbeat {
            from: 2,
            report: report(Role::Worker, 1, 1, Some((1, 1))),
        },
        heard,
    );
    assert_eq!(e.next_change(heard), Some(heard + t.peer_timeout + ms));
    // Suspected a second later: confirmed dead at the suspect timeout,
    // before its silence runs out.
    let lost = heard + SEC;
    e.handle(Input::ConnectionLost(2), lost);
    assert_eq!(e.next_change(lost), Some(lost + t.suspect_timeout + ms));
    e.tick(lost + t.suspect_timeout + ms);
    assert!(!e.is_live(&2, lost + t.suspect_timeout + ms));
    // Dead: only forgetting it is left.
    let dead = lost + t.suspect_timeout + ms;
    assert_eq!(e.next_change(dead), Some(heard + t.forget_after + ms));
}

/// The scans the peer-table indexes replaced, kept as the reference the
/// indexed answers are checked against.
mod by_scan {
    use super::*;

    pub fn rightful_leader(e: &Election<u32>, now: Instant) -> Option<u32> {
        let me = e.role.can_lead().then_some((e.role, &e.me));
        let others = e
            .peers()
            .filter(|(_, p)| p.role.can_lead() && e.live(p, now))
            .map(|(id, p)| (p.role, id));
        choose_leader(me.into_iter().chain(others)).cloned()
    }

    pub fn successor(e: &Election<u32>, leader: &u32, now: Instant) -> Option<u32> {
        let me = e.role.can_lead().then_some((e.role, &e.me));
        let others = e
            .peers()
            .filter(|(id, p)| *id != leader && p.role.can_lead() && e.live(p, now))
            .map(|(id, p)| (p.role, id));
        choose_leader(others.chain(me)).cloned()
    }

    pub fn probe_target(e: &Election<u32>, probers: usize, now: Instant) -> Option<u32> {
        let (leader, _) = e.leader.as_ref()?;
        if *leader == e.me || !e.role.can_lead() {
            return None;
        }
        let mut line: Vec<(Role, &u32)> = e
            .peers()
            .filter(|(id, p)| *id != leader && p.role.can_lead() && e.live(p, now))
            .map(|(id, p)| (p.role, id))
            .chain([(e.role, &e.me)])
            .collect();
        line.sort_by(|(ra, ia), (rb, ib)| rb.cmp(ra).then_with(|| ia.cmp(ib)));
        line.iter()
            .take(probers)
            .any(|(_, id)| **id == e.me)
            .then_some(*leader)
    }

    pub fn beat_interval(e: &Election<u32>, now: Instant) -> Duration {
        let t = &e.timing;
        if t.quiet_per_member.is_zero() || e.is_leader() || e.leaving {
            return t.heartbeat;
        }
        let mut members: u32 = 1;
        let mut ahead = 0;
        for (id, p) in e.peers() {
            if !e.live(p, now) {
                continue;
            }
            members = members.saturating_add(1);
            if p.role.can_lead() && (p.role > e.role || (p.role == e.role && *id < e.me)) {
                ahead += 1;
            }
        }
        if e.role.can_lead() && ahead <= t.successors {
            return t.heartbeat;
        }
        t.quiet_per_member
            .saturating_mul(members)
            .clamp(t.heartbeat, MAX_INTERVAL)
    }

    pub fn isolated(e: &Election<u32>, now: Instant) -> bool {
        if !e.is_leader() {
            return false;
        }
        let mut known = e
            .peers()
            .map(|(_, p)| p)
            .filter(|p| p.role.can_lead() && !matches!(p.liveness, Liveness::Left { .. }))
            .peekable();
        known.peek().is_some() && !known.any(|p| e.live(p, now))
    }

    pub fn term_conflicted(e: &Election<u32>, epoch: u64, now: Instant) -> bool {
        e.max_epoch > epoch
            || e.peers().any(|(_, p)| {
                e.live(p, now) && matches!(&p.voted, Some((l, ev)) if *l != e.me && *ev >= epoch)
            })
            || rival_claims(e, now)
                .iter()
                .any(|c| !e.overtaken.contains(c))
    }

    pub fn follows_unknown_leader(e: &Election<u32>, now: Instant) -> bool {
        e.peers().any(|(_, p)| {
            e.live(p, now)
                && matches!(&p.follows, Some((l, _)) if *l != e.me && e.peer(l).is_none())
        })
    }

    pub fn rival_claims(e: &Election<u32>, now: Instant) -> Vec<(u32, u64)> {
        e.peers()
            .filter_map(|(id, p)| match &p.follows {
                Some((l, ep)) if l == id && e.live(p, now) => Some((*id, *ep)),
                _ => None,
            })
            .collect()
    }

    pub fn next_change(e: &Election<u32>, now: Instant) -> Option<Instant> {
        const PAST: Duration = Duration::from_millis(1);
        let t = &e.timing;
        let grace = [t.startup_grace, t.startup_grace + t.heartbeat]
            .map(|d| e.started.checked_add(d).and_then(|at| at.checked_sub(PAST)));
        let peers = e.peers().flat_map(|(_, p)| {
            let forget = t.forget_after.max(p.silence.saturating_mul(2));
            let silent = match p.liveness {
                Liveness::Alive | Liveness::Suspect { .. } => p.last_heard.checked_add(p.silence),
                _ => None,
            };
            let confirmed = match p.liveness {
                Liveness::Suspect { since } => since.checked_add(t.suspect_timeout),
                _ => None,
            };
            [silent, confirmed, p.last_heard.checked_add(forget)]
        });
        grace
            .into_iter()
            .chain(peers)
            .flatten()
            .filter(|at| *at >= now)
            .map(|at| at + PAST)
            .min()
    }
}

/// One step of [`indexed_queries_answer_as_the_scans_did`].
fn index_step() -> impl Strategy<Value = (u8, u32, u8, u64, u32, u64, u8, u64)> {
    (
        0u8..10,
        0u32..24,
        0u8..3,
        0u64..6,
        0u32..26,
        0u64..6,
        0u8..4,
        0u64..4000,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Every query the indexes serve answers as the plain scan of the
    /// peer table did, after every input and tick of a random history
    /// (heartbeats of every role, claims, votes, intervals, departures,
    /// lost and regained connections, silences, time passing); the indexes
    /// themselves are checked against a fresh build after every step (see
    /// `Election::check_index`).
    #[test]
    fn indexed_queries_answer_as_the_scans_did(
        my_role in 0u8..3,
        steps in prop::collection::vec(index_step(), 1..120),
    ) {
        let roles = [Role::Leecher, Role::Worker, Role::Master];
        let t = Timing {
            quiet_per_member: Duration::from_millis(300),
            successors: 2,
            ..timing()
        };
        let t0 = Instant::now();
        let me = 12u32;
        let mut e = Election::new(me, roles[my_role as usize], 1, 0, t, t0);
        let mut now = t0;
        let mut seq = 0;
        for (kind, peer, role, inc, other, epoch, interval, advance) in steps {
            now += Duration::from_millis(advance);
            seq += 1;
            // `other` past 23 names nobody known: no leader, or an unknown one.
            let follows = (other < 25).then_some((other, epoch));
            let input = match kind {
                0..=3 => Input::Heartbeat {
                    from: peer,
                    report: Report {
                        role: roles[role as usize],
                        incarnation: inc.min(2),
                        seq: if kind == 3 { seq / 2 } else { seq },
                        max_epoch: epoch,
                        follows: if kind == 2 { Some((peer, epoch)) } else { follows },
                        voted: follows,
                        interval: SEC * (1 + 3 * u32::from(interval)),
                    },
                },
                4 => Input::Left { from: peer, incarnation: inc },
                5 => Input::ConnectionLost(peer),
                6 => Input::Connected(peer),
                7 => Input::Silent(peer),
                8 => Input::Answered(peer),
                _ => Input::Unreachable(peer),
            };
            if advance % 3 == 0 {
                e.tick(now);
            } else {
                e.handle(input, now);
            }
            for at in [now, now + SEC, now + 5 * SEC] {
                prop_assert_eq!(e.rightful_leader(at), by_scan::rightful_leader(&e, at));
                prop_assert_eq!(e.successor(&peer, at), by_scan::successor(&e, &peer, at));
                for k in 0..4 {
                    prop_assert_eq!(e.probe_target(k, at), by_scan::probe_target(&e, k, at));
                }
                prop_assert_eq!(e.beat_interval(at), by_scan::beat_interval(&e, at));
                prop_assert_eq!(e.isolated(at), by_scan::isolated(&e, at));
                prop_assert_eq!(e.next_change(at), by_scan::next_change(&e, at));
                prop_assert_eq!(e.follows_unknown_leader(at), by_scan::follows_unknown_leader(&e, at));
                prop_assert_eq!(e.rival_claims(at).collect::<Vec<_>>(), by_scan::rival_claims(&e, at));
                for ep in 0..7 {
                    prop_assert_eq!(e.term_conflicted(ep, at), by_scan::term_conflicted(&e, ep, at));
                }
            }
        }
    }
}

/// A master's heartbeat that claims `follows`' term.
fn hb(from: u32, seq: u64, follows: (u32, u64)) -> Input<u32> {
    Input::Heartbeat {
        from,
        report: report(Role::Master, seq, follows.1, Some(follows)),
    }
}

/// A worker that follows master 2 at epoch 5.
fn following_master_2_at_epoch_5() -> (Instant, Election<u32>) {
    let t0 = Instant::now();
    let mut f = Election::new(9u32, Role::Worker, 1, 0, timing(), t0);
    f.handle(hb(2, 1, (2, 5)), t0);
    assert_eq!(f.leader(), Some(&(2, 5)));
    (t0, f)
}

/// The leader takes a fresh epoch (it overtook a rival claim) while the
/// rightful master, back within its startup grace, has not claimed yet: a
/// follower moves to the leader's new term instead of dropping it, so the
/// cluster is never without a leader.
#[test]
fn a_follower_keeps_a_leader_that_takes_a_fresh_epoch_during_a_failback() {
    let (t0, mut f) = following_master_2_at_epoch_5();
    // The returning master 1 outranks 2 and follows it during its grace.
    let t1 = t0 + Duration::from_millis(100);
    f.handle(hb(1, 1, (2, 5)), t1);
    assert_eq!(f.leader(), Some(&(2, 5)));
    // Leader 2 moves to epoch 6 before 1 claims.
    let t2 = t1 + Duration::from_millis(100);
    let actions = f.handle(hb(2, 2, (2, 6)), t2);
    assert_eq!(f.leader(), Some(&(2, 6)), "no leaderless gap: {actions:?}");
    assert!(actions.contains(&Action::PersistEpoch(6)));
    assert!(actions.contains(&Action::PersistVote(2, 6)));
    f.tick(t2 + Duration::from_millis(200));
    assert_eq!(f.leader(), Some(&(2, 6)));
    // The rightful master claims above it: followed at once.
    let t3 = t2 + Duration::from_millis(300);
    f.handle(hb(1, 2, (1, 7)), t3);
    assert_eq!(f.leader(), Some(&(1, 7)));
}

/// Once the rightful master claims (here a term this node may not accept:
/// it already voted for the current leader at that epoch), a fresh term of
/// the current leader is not taken: the follower waits for the rightful
/// one's next claim, as before.
#[test]
fn a_fresh_term_of_the_leader_is_not_taken_once_the_rightful_one_claims() {
    let (t0, mut f) = following_master_2_at_epoch_5();
    let t1 = t0 + Duration::from_millis(100);
    f.handle(hb(1, 1, (1, 5)), t1);
    assert_eq!(
        f.leader(),
        Some(&(2, 5)),
        "keeps its term: 1's claim at 5 comes too late"
    );
    let t2 = t1 + Duration::from_millis(100);
    let actions = f.handle(hb(2, 2, (2, 6)), t2);
    assert_eq!(f.leader(), None, "{actions:?}");
    assert!(!actions.contains(&Action::PersistVote(2, 6)));
    let t3 = t2 + Duration::from_millis(100);
    f.handle(hb(1, 2, (1, 7)), t3);
    assert_eq!(f.leader(), Some(&(1, 7)));
}
