//! The leader's side of log replication, pure: where each follower's log
//! stands, what to send it next (one batch in flight per follower), and the
//! commit index.
//!
//! Commit rule: an entry is committed once it is durable on the leader and
//! on at least one live master-eligible follower, or on the leader alone
//! when it has no such follower. As in Raft, the count is only taken for
//! entries of the leader's own epoch (a new leader writes an
//! [`super::Op::Barrier`] first); earlier entries commit with them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What a follower needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Send {
    /// Entries from `from` on, after the entry at `from - 1`.
    Entries { from: u64 },
    /// It needs entries from `from` on, but those are compacted away or
    /// too many: it pulls the state instead.
    Snapshot { from: u64 },
}

#[derive(Debug, Clone)]
struct Follower {
    /// A master-eligible follower: its copy counts for the commit.
    counts: bool,
    /// Highest index known to match the leader's log.
    matched: u64,
    /// Next index to send.
    next: u64,
    /// When the batch now in flight was sent, and the commit index it carries.
    in_flight: Option<Instant>,
    commit_sent: u64,
    /// The commit index the follower has acknowledged hearing.
    commit_told: u64,
}

#[derive(Debug, Clone)]
pub struct Replicator {
    /// The first index written in the leader's epoch (its barrier).
    epoch_start: u64,
    followers: BTreeMap<String, Follower>,
    /// A batch unanswered for this long may be sent again.
    timeout: Duration,
}

impl Replicator {
    pub fn new(epoch_start: u64, timeout: Duration) -> Self {
        Replicator {
            epoch_start,
            followers: BTreeMap::new(),
            timeout,
        }
    }

    /// The live followers now, each with whether it is master-eligible (its
    /// copy counts for the commit; leechers only follow). New ones start
    /// probing at the leader's end, vanished ones are forgotten.
    pub fn set_followers<'a>(&mut self, ids: impl IntoIterator<Item = (&'a str, bool)>, last: u64) {
        let ids: Vec<(&str, bool)> = ids.into_iter().collect();
        self.followers
            .retain(|id, _| ids.iter().any(|(i, _)| i == id));
        for (id, counts) in ids {
            self.followers
                .entry(id.to_owned())
                .or_insert(Follower {
                    counts,
                    matched: 0,
                    next: last + 1,
                    in_flight: None,
                    commit_sent: 0,
                    commit_told: 0,
                })
                .counts = counts;
        }
    }

    /// What to send `id` now, if anything; marks it in flight. An empty
    /// batch goes out when the follower has not heard the latest `commit`.
    /// A follower that needs entries at or below `snapshot_below` gets a
    /// snapshot instead.
    pub fn next_send(
        &mut self,
        id: &str,
        last: u64,
        commit: u64,
        snapshot_below: u64,
        now: Instant,
    ) -> Option<Send> {
        let f = self.followers.get_mut(id)?;
        if f.in_flight
            .is_some_and(|t| now.saturating_duration_since(t) < self.timeout)
        {
            return None;
        }
        // Something new, nothing confirmed yet (an empty batch probes where
        // it stands), or a commit index it has not heard.
        if f.next > last && f.matched >= last && f.commit_told >= commit {
            return None;
        }
        f.in_flight = Some(now);
        f.commit_sent = commit;
        if f.next <= snapshot_below {
            Some(Send::Snapshot { from: f.next })
        } else {
            Some(Send::Entries { from: f.next })
        }
    }

    /// The follower stored everything up to `upto` and it matches.
    pub fn on_ok(&mut self, id: &str, upto: u64) {
        if let Some(f) = self.followers.get_mut(id) {
            f.matched = f.matched.max(upto);
            f.next = f.matched + 1;
            f.commit_told = f.commit_told.max(f.commit_sent);
            f.in_flight = None;
        }
    }

    /// The follower's log does not reach (or differs at) what was sent;
    /// it holds up to `have` at most.
    pub fn on_gap(&mut self, id: &str, have: u64) {
        if let Some(f) = self.followers.get_mut(id) {
            f.next = (have + 1).min(f.next.saturating_sub(1)).max(f.matched + 1);
            f.in_flight = None;
        }
    }

    /// The follower emptied its log: everything is to be sent again.
    pub fn on_reset(&mut self, id: &str) {
        if let Some(f) = self.followers.get_mut(id) {
            f.matched = 0;
            f.next = 1;
            f.commit_told = 0;
            f.in_flight = None;
        }
    }

    /// No answer: may be sent again at once.
    pub fn on_failure(&mut self, id: &str) {
        if let Some(f) = self.followers.get_mut(id) {
            f.in_flight = None;
        }
    }

    /// The commit index, given the leader's last index.
    pub fn commit_index(&self, last: u64) -> u64 {
        // Only master-eligible followers count; leechers just follow.
        let mut voters = self.followers.values().filter(|f| f.counts).peekable();
        let durable = if voters.peek().is_none() {
            last
        } else {
            voters.map(|f| f.matched).max().unwrap_or(0).min(last)
        };
        if durable >= self.epoch_start {
            durable
        } else {
            0
        }
    }

    pub fn matched(&self, id: &str) -> Option<u64> {
        self.followers.get(id).map(|f| f.matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn commits_once_one_follower_holds_an_entry_of_this_epoch() {
        let now = Instant::now();
        // Entries 1-4 from earlier epochs; this leader's barrier is entry 5.
        let mut r = Replicator::new(5, T);
        r.set_followers([("a", true), ("b", true)], 5);
        assert_eq!(
            r.next_send("a", 5, 0, 0, now),
            Some(Send::Entries { from: 6 })
        );
        assert_eq!(r.next_send("a", 5, 0, 0, now), None, "one batch in flight");
        r.on_gap("a", 2);
        assert_eq!(
            r.next_send("a", 5, 0, 0, now),
            Some(Send::Entries { from: 3 })
        );
        r.on_ok("a", 4);
        assert_eq!(
            r.commit_index(5),
            0,
            "entries of earlier epochs do not count alone"
        );
        assert_eq!(
            r.next_send("a", 5, 0, 0, now),
            Some(Send::Entries { from: 5 })
        );
        r.on_ok("a", 5);
        assert_eq!(r.commit_index(5), 5);
        assert_eq!(r.commit_index(9), 5, "b holds nothing yet, a only up to 5");
    }

    #[test]
    fn alone_the_leader_commits_what_it_holds() {
        let mut r = Replicator::new(1, T);
        r.set_followers([], 3);
        assert_eq!(r.commit_index(3), 3);
        r.set_followers([("leecher", false)], 3);
        assert_eq!(r.commit_index(3), 3);
    }

    #[test]
    fn lagging_followers_get_a_snapshot_and_silent_ones_a_resend() {
        let now = Instant::now();
        let mut r = Replicator::new(100, T);
        r.set_followers([("a", true)], 100);
        r.next_send("a", 100, 0, 50, now);
        r.on_gap("a", 10);
        assert_eq!(
            r.next_send("a", 100, 0, 50, now),
            Some(Send::Snapshot { from: 11 })
        );
        r.on_ok("a", 50);
        assert_eq!(
            r.next_send("a", 100, 0, 50, now),
            Some(Send::Entries { from: 51 })
        );
        assert_eq!(
            r.next_send("a", 100, 0, 50, now + T),
            Some(Send::Entries { from: 51 }),
            "resent after the timeout"
        );
        r.on_ok("a", 100);
        assert_eq!(r.next_send("a", 100, 0, 50, now + T), None, "up to date");
        r.set_followers([("b", true)], 100);
        assert_eq!(r.matched("a"), None, "gone followers are forgotten");
    }
}

/// Leaders, followers, crashes and returns over real stores: an entry is
/// acknowledged only once another node holds it (if one lives); the most
/// advanced live node, which takes over, holds every acknowledged entry
/// that any live node holds; and once every node is back, every
/// acknowledged pin is in the pinset, even those whose every holder was
/// down while the cluster went on (a returning node rescues them and they
/// are written again, as the pinset task does).
#[cfg(test)]
mod sim {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::pinset::store::{Appended, PinStore, PinStoreError};
    use crate::pinset::{Entry, LogPos, Op, PinSpec};

    const NODES: usize = 4;

    #[derive(Debug, Clone)]
    enum Step {
        /// The leader appends this many pins.
        Write(u8),
        /// The leader sends to follower n; the reply is lost if `lost`.
        Deliver { to: usize, lost: bool },
        /// The leader crashes; the most advanced live node takes over.
        Crash,
        /// Crashed node n (if it is down) comes back.
        Return(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (1u8..4).prop_map(Step::Write),
            5 => (0usize..NODES, proptest::bool::weighted(0.2)).prop_map(|(to, lost)| Step::Deliver { to, lost }),
            1 => Just(Step::Crash),
            1 => (0usize..NODES).prop_map(Step::Return),
        ]
    }

    fn op(n: u64) -> Op {
        Op::Pin(PinSpec {
            cid: format!("c{n}"),
            name: String::new(),
            replication_min: 1,
            replication_max: 1,
            added_unix_ms: n,
        })
    }

    fn pos_at(s: &PinStore, index: u64) -> LogPos {
        if index == 0 {
            return LogPos::default();
        }
        let e = s
            .entries(index, 1)
            .unwrap()
            .expect("not compacted in this test");
        LogPos {
            index,
            epoch: e[0].epoch,
        }
    }

    struct Cluster {
        stores: Vec<PinStore>,
        alive: [bool; NODES],
        leader: usize,
        epoch: u64,
        rep: Replicator,
        /// Rescued pins written again: (node, index, epoch, cids), until committed.
        resubmitted: Vec<(usize, u64, u64, Vec<String>)>,
        /// Every pin ever acknowledged.
        acked: BTreeSet<String>,
        /// Acknowledged entries (index, epoch), for the takeover check.
        acked_entries: BTreeSet<(u64, u64)>,
        /// Nodes that crashed and came back: they may hold acknowledged
        /// entries the cluster went on without.
        returned: [bool; NODES],
    }

    impl Cluster {
        fn followers(&self) -> Vec<usize> {
            (0..NODES)
                .filter(|i| *i != self.leader && self.alive[*i])
                .collect()
        }

        fn set_followers(&mut self) {
            let ids: Vec<String> = self.followers().iter().map(|i| i.to_string()).collect();
            let last = self.stores[self.leader].last().index;
            self.rep
                .set_followers(ids.iter().map(|i| (i.as_str(), true)), last);
        }

        /// One append to follower `f`; `true` if anything was sent.
        fn deliver(&mut self, f: usize, lost: bool) -> bool {
            let id = f.to_string();
            let (leader, now) = (self.leader, Instant::now());
            let last = self.stores[leader].last().index;
            let Some(Send::Entries { from }) = self.rep.next_send(&id, last, 0, 0, now) else {
                return false;
            };
            let prev = pos_at(&self.stores[leader], from - 1);
            let batch: Vec<Entry> = self.stores[leader].entries(from, 3).unwrap().unwrap();
            let upto = prev.index + batch.len() as u64;
            let leader_commit = self.stores[leader].commit_index();
            let reply = match self.stores[f].append(prev, &batch) {
                Ok(r) => {
                    if matches!(r, Appended::Ok(_)) {
                        self.stores[f].commit_to(leader_commit.min(upto)).unwrap();
                    }
                    r
                }
                Err(PinStoreError::ConflictBelowCommit { index, .. }) => {
                    // A returning node holding what the cluster lost.
                    self.stores[f].rescue_and_reset(index).unwrap();
                    self.rep.on_reset(&id);
                    return true;
                }
                Err(e) => panic!("{e}"),
            };
            if lost {
                self.rep.on_failure(&id);
                return true;
            }
            match reply {
                Appended::Ok(_) => self.rep.on_ok(&id, upto),
                Appended::Gap { have } => self.rep.on_gap(&id, have.index),
            }
            true
        }

        /// Live nodes write their rescued pins again through the leader.
        fn resubmit(&mut self) {
            for n in (0..NODES).filter(|n| self.alive[*n]) {
                let waiting: BTreeSet<&String> = self
                    .resubmitted
                    .iter()
                    .filter(|r| r.0 == n)
                    .flat_map(|r| &r.3)
                    .collect();
                let pins: Vec<PinSpec> = self.stores[n]
                    .rescued(usize::MAX)
                    .unwrap()
                    .into_iter()
                    .filter(|p| !waiting.contains(&p.cid))
                    .collect();
                if pins.is_empty() {
                    continue;
                }
                let cids = pins.iter().map(|p| p.cid.clone()).collect();
                let ops = pins.into_iter().map(Op::Pin).collect();
                let entries = self.stores[self.leader]
                    .append_local(self.epoch, ops)
                    .unwrap();
                let last = entries.last().unwrap().index;
                self.resubmitted.push((n, last, self.epoch, cids));
            }
        }

        fn commit(&mut self) -> Result<(), TestCaseError> {
            self.set_followers();
            let l = self.leader;
            let target = self.rep.commit_index(self.stores[l].last().index);
            let commit = self.stores[l].commit_to(target).unwrap();
            let followers = self.followers();
            for e in self.stores[l].entries(1, usize::MAX).unwrap().unwrap() {
                if e.index > commit || !self.acked_entries.insert((e.index, e.epoch)) {
                    continue;
                }
                if let Op::Pin(p) = &e.op {
                    self.acked.insert(p.cid.clone());
                }
                // Acknowledged means on the leader and, if a follower lives, on one.
                let held = followers.iter().any(|f| {
                    self.stores[*f].last().index >= e.index
                        && pos_at(&self.stores[*f], e.index).epoch == e.epoch
                });
                prop_assert!(
                    followers.is_empty() || held,
                    "entry {} acknowledged on the leader alone",
                    e.index
                );
            }
            // Committed again: the rescuer forgets them.
            let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.resubmitted)
                .into_iter()
                .partition(|(_, i, ep, _)| {
                    *i <= commit && pos_at(&self.stores[l], *i).epoch == *ep
                });
            self.resubmitted = waiting;
            for (n, _, _, cids) in done {
                self.stores[n].forget_rescued(&cids).unwrap();
            }
            Ok(())
        }

        fn take_over(&mut self) -> Result<(), TestCaseError> {
            let Some(new) = (0..NODES)
                .filter(|i| self.alive[*i])
                .max_by_key(|i| self.stores[*i].last())
            else {
                return Ok(());
            };
            self.leader = new;
            // The most advanced live node holds every acknowledged entry
            // any live node holds. (Not once a node came back: its stale
            // log may then be the most advanced, and what the others
            // committed is rescued instead; the end of the test checks
            // that no acknowledged pin is lost that way.)
            let checked = if self.returned.iter().any(|r| *r) {
                &BTreeSet::new()
            } else {
                &self.acked_entries
            };
            for &(i, ep) in checked {
                let holds = |n: usize| {
                    self.stores[n].last().index >= i && pos_at(&self.stores[n], i).epoch == ep
                };
                let live_holder = (0..NODES).any(|n| self.alive[n] && holds(n));
                prop_assert!(
                    !live_holder || holds(new),
                    "new leader {new} lacks acknowledged entry {i}"
                );
            }
            // Written again to the new leader.
            self.resubmitted.clear();
            self.epoch += 1;
            let start = self.stores[new].last().index + 1;
            self.stores[new]
                .append_local(self.epoch, vec![Op::Barrier])
                .unwrap();
            self.rep = Replicator::new(start, Duration::from_secs(5));
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
        #[test]
        fn acknowledged_pins_survive_failovers_and_returns(steps in proptest::collection::vec(step(), 1..50)) {
            let dir = tempfile::tempdir().unwrap();
            let stores: Vec<PinStore> = (0..NODES)
                .map(|i| PinStore::open(&dir.path().join(format!("n{i}.redb"))).unwrap())
                .collect();
            let mut c = Cluster {
                stores,
                alive: [true; NODES],
                leader: 0,
                epoch: 1,
                rep: Replicator::new(1, Duration::from_secs(5)),
                resubmitted: Vec::new(),
                acked: BTreeSet::new(),
                acked_entries: BTreeSet::new(),
                returned: [false; NODES],
            };
            c.stores[0].append_local(1, vec![Op::Barrier]).unwrap();
            let mut next_op = 0u64;
            for st in steps {
                c.set_followers();
                match st {
                    Step::Write(n) => {
                        let ops = (0..n).map(|_| { next_op += 1; op(next_op) }).collect();
                        let e = c.epoch;
                        c.stores[c.leader].append_local(e, ops).unwrap();
                    }
                    Step::Deliver { to, lost } => {
                        let followers = c.followers();
                        let Some(&f) = followers.get(to % followers.len().max(1)) else { continue };
                        c.deliver(f, lost);
                    }
                    Step::Crash => {
                        if c.followers().is_empty() {
                            continue;
                        }
                        c.alive[c.leader] = false;
                        c.take_over()?;
                        continue;
                    }
                    Step::Return(n) => {
                        if !c.alive[n] {
                            c.alive[n] = true;
                            c.returned[n] = true;
                        }
                    }
                }
                c.resubmit();
                c.commit()?;
            }
            // Everyone back, deliveries until nothing moves.
            c.alive = [true; NODES];
            for _ in 0..2000 {
                c.set_followers();
                c.resubmit();
                let mut sent = false;
                for f in c.followers() {
                    sent |= c.deliver(f, false);
                }
                c.commit()?;
                let rescued_left = (0..NODES).any(|n| !c.stores[n].rescued(1).unwrap().is_empty());
                if !sent && !rescued_left {
                    break;
                }
            }
            let pins: BTreeSet<String> = c.stores[c.leader].pins().unwrap().into_iter().map(|p| p.cid).collect();
            let lost: Vec<&String> = c.acked.difference(&pins).collect();
            prop_assert!(lost.is_empty(), "acknowledged pins lost: {lost:?}");
        }
    }
}
