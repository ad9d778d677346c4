//! Membership anti-entropy, as a pure core: the leader's heartbeat carries a
//! digest of the members it holds live, every follower compares it with its
//! own, and one that differs pulls the leader's member list (pushing its own
//! with it), so both dial the members they lack and learn them in the
//! greeting.
//!
//! Greetings and heartbeats are how a node learns members. With quiet
//! followers, whose heartbeats are minutes apart in a large cluster, a
//! missed greeting (a dial that timed out under load, a list of shared peers
//! that was cut at its bound) would leave a member unknown until its next
//! heartbeat; the digest finds the gap at the leader's next heartbeat
//! instead, at the cost of 12 bytes a heartbeat while the views agree.
//!
//! # The rules
//! * **Digest:** the member count and the wrapping sum of a 64-bit hash of
//!   each member's ID (itself included): independent of order, and equal
//!   for equal sets (a differing pair of sets collides with probability
//!   about 2^-64).
//! * **When to pull:** at once on the first difference (a node that joins
//!   learns the cluster in one round trip); after that only when a
//!   difference has lasted `settle` (a member the leader has just learned is
//!   on its way to every follower by greeting anyway), and at most once per
//!   back-off, which doubles while the views keep differing (up to `max`)
//!   and resets when they agree. A view that differs for good (a member one
//!   side cannot reach) so costs one pull per `max`.

use std::time::{Duration, Instant};

/// What a heartbeat says about the members its sender holds live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digest {
    pub count: u32,
    pub hash: u64,
}

/// The digest of a set of member IDs (each given once, in any order).
pub fn digest<'a>(ids: impl IntoIterator<Item = &'a [u8]>) -> Digest {
    ids.into_iter().fold(Digest::default(), |d, id| Digest {
        count: d.count.saturating_add(1),
        hash: d.hash.wrapping_add(member_hash(id)),
    })
}

/// FNV-1a over the ID, then the SplitMix64 finaliser so that a sum of
/// hashes of similar IDs does not cancel out: stable across builds and
/// platforms, like the pinset's digest.
fn member_hash(id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// When to pull the leader's member list (see the module's rules).
#[derive(Debug, Clone)]
pub struct Sync {
    settle: Duration,
    min: Duration,
    max: Duration,
    backoff: Duration,
    /// Since when the views have differed (`None`: they agree).
    differs_since: Option<Instant>,
    next_pull: Option<Instant>,
    pulled: bool,
    /// The views agreed at least once.
    agreed: bool,
}

impl Sync {
    /// `settle`: how long a difference must last before a pull (after the
    /// first); `min`..`max`: the back-off between pulls.
    pub fn new(settle: Duration, min: Duration, max: Duration) -> Self {
        Sync {
            settle,
            min,
            max: max.max(min),
            backoff: min,
            differs_since: None,
            next_pull: None,
            pulled: false,
            agreed: false,
        }
    }

    /// Whether this node's view matched the leader's at least once: it
    /// knows the members, so it knows its own place in line.
    pub fn agreed(&self) -> bool {
        self.agreed
    }

    /// The leader's digest against this node's: whether to pull now.
    pub fn observe(&mut self, leader: Digest, own: Digest, now: Instant) -> bool {
        if leader == own {
            self.agreed = true;
            self.differs_since = None;
            self.backoff = self.min;
            return false;
        }
        let since = *self.differs_since.get_or_insert(now);
        let settled = !self.pulled || now.saturating_duration_since(since) >= self.settle;
        let due = self.next_pull.is_none_or(|at| now >= at);
        if !(settled && due) {
            return false;
        }
        self.pulled = true;
        self.next_pull = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.max);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ids: &[&str]) -> Digest {
        digest(ids.iter().map(|s| s.as_bytes()))
    }

    #[test]
    fn digest_ignores_order_and_tells_sets_apart() {
        assert_eq!(d(&["a", "b", "c"]), d(&["c", "a", "b"]));
        assert_eq!(d(&["a", "b", "c"]).count, 3);
        assert_ne!(d(&["a", "b", "c"]), d(&["a", "b"]));
        assert_ne!(d(&["a", "b"]), d(&["a", "c"]));
        assert_eq!(d(&[]), Digest::default());
        // Every pair of 1..=300 distinct IDs of the shape the node uses
        // (base58 peer IDs differ in a few characters) gives distinct sums.
        let ids: Vec<String> = (0..300).map(|i| format!("12D3KooW{i:044}")).collect();
        let mut seen = std::collections::HashSet::new();
        for i in 0..ids.len() {
            for j in i + 1..ids.len() {
                let pair = digest([ids[i].as_bytes(), ids[j].as_bytes()]);
                assert!(seen.insert(pair.hash), "pair {i},{j} collides");
            }
        }
    }

    #[test]
    fn agreement_is_remembered_once_seen() {
        let t0 = Instant::now();
        let mut s = Sync::new(
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(8),
        );
        let (a, b) = (d(&["a"]), d(&["a", "b"]));
        assert!(!s.agreed());
        s.observe(b, a, t0);
        assert!(!s.agreed(), "views differ");
        s.observe(b, b, t0);
        assert!(s.agreed());
        s.observe(a, b, t0 + Duration::from_secs(5));
        assert!(s.agreed(), "a later difference does not undo it");
    }

    #[test]
    fn digest_is_stable_across_builds() {
        // Nodes of different builds compare digests: this value must not move.
        assert_eq!(d(&["a"]).hash, member_hash(b"a"));
        assert_eq!(member_hash(b""), 0xf52a_15e9_a9b5_e89b);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_difference_pulls_at_once_later_ones_settle_and_back_off() {
        let t0 = Instant::now();
        let mut s = Sync::new(ms(1000), ms(2000), ms(8000));
        let (a, b) = (d(&["a"]), d(&["a", "b"]));
        assert!(!s.observe(a, a, t0), "views agree");
        assert!(s.observe(a, b, t0), "first difference: at once");
        assert!(!s.observe(a, b, t0 + ms(500)), "within the back-off");
        assert!(s.observe(a, b, t0 + ms(2000)), "back-off over, settled");
        assert!(!s.observe(a, b, t0 + ms(3999)), "back-off doubled to 4 s");
        assert!(s.observe(a, b, t0 + ms(6000)));
        assert!(!s.observe(a, b, t0 + ms(13_999)), "capped at 8 s");
        assert!(s.observe(a, b, t0 + ms(14_000)));
        // Agreement resets the back-off; a new difference must settle.
        assert!(!s.observe(a, a, t0 + ms(20_000)));
        assert!(!s.observe(a, b, t0 + ms(25_000)), "just differed");
        assert!(!s.observe(a, b, t0 + ms(25_999)));
        assert!(s.observe(a, b, t0 + ms(26_000)), "settled");
        assert!(!s.observe(a, b, t0 + ms(27_999)), "back-off back at 2 s");
        assert!(s.observe(a, b, t0 + ms(28_000)));
    }

    /// Whatever the sequence of observations, pulls are never closer than
    /// `min` apart and, after the first, never within `settle` of a new
    /// difference.
    #[test]
    fn pulls_are_bounded_for_every_schedule() {
        let (a, b) = (d(&["a"]), d(&["b"]));
        for seed in 0..2000u64 {
            let t0 = Instant::now();
            let mut s = Sync::new(ms(1000), ms(2000), ms(16_000));
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut now = t0;
            let mut last_pull: Option<Instant> = None;
            let mut differs_since: Option<Instant> = None;
            let mut pulls = 0;
            for _ in 0..200 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                now += ms(x % 3000);
                let same = x % 5 == 0;
                if same {
                    differs_since = None;
                } else {
                    differs_since.get_or_insert(now);
                }
                if s.observe(a, if same { a } else { b }, now) {
                    assert!(!same);
                    if let Some(p) = last_pull {
                        assert!(now - p >= ms(2000), "seed {seed}: pulls too close");
                        assert!(
                            now - differs_since.unwrap() >= ms(1000),
                            "seed {seed}: pulled before the difference settled"
                        );
                    }
                    last_pull = Some(now);
                    pulls += 1;
                }
            }
            assert!(pulls > 0, "seed {seed}: a lasting difference never pulled");
        }
    }
}
