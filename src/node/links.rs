//! Second connections between the same two nodes, and which to close.
//!
//! Two nodes that dial each other at once (one learns of the other from a
//! member list or from Kademlia while that one dials it) end up with two
//! connections; about 9 % of an idle 100-node cluster's connections were
//! such second ones, each costing what a connection costs (memory, ping,
//! gossipsub streams, upkeep at every wake-up).
//!
//! The rule, the same at both ends so that they never close every
//! connection between them:
//! - only the node with the higher peer ID closes, and only connections it
//!   dialled itself, once a connection the lower one dialled has been open
//!   for [`GRACE`] (so the `Hello`s and requests that went out at connect
//!   time are answered, and both ends hold it);
//! - the lower node never closes a second connection; when one it did not
//!   dial closes while one it dialled stays, that is the rule at work, not
//!   a sign of a stale connection, so it does not dial again to check
//!   (see `Node::recheck`); nor does the higher node for what it closed.
//!
//! Connections the lower node dialled are never closed by this rule, so a
//! pair keeps at least one.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::swarm::ConnectionId;

/// How long the lower node's connection must have been open before the
/// higher node closes its own second one.
pub(super) const GRACE: Duration = Duration::from_secs(5);

/// One open connection to a peer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Link {
    pub id: ConnectionId,
    /// This node dialled it.
    pub dialer: bool,
    pub since: Instant,
}

/// The connections of this node to each peer with more than none.
#[derive(Default)]
pub(super) struct Links {
    by_peer: HashMap<PeerId, Vec<Link>>,
    /// Closed by this node under the rule, not yet reported closed.
    closing: HashSet<ConnectionId>,
}

impl Links {
    pub fn opened(&mut self, peer: PeerId, link: Link) {
        self.by_peer.entry(peer).or_default().push(link);
    }

    /// Open connections, to all peers.
    pub fn count(&self) -> usize {
        self.by_peer.values().map(Vec::len).sum()
    }

    /// A connection closed: whether it was the rule at work (closed by this
    /// node, or by the peer as the higher end while one this node dialled
    /// stays), so that nothing about the peer is to be checked.
    pub fn closed(&mut self, peer: PeerId, id: ConnectionId) -> bool {
        let ours = self.closing.remove(&id);
        let Some(links) = self.by_peer.get_mut(&peer) else {
            return ours;
        };
        let gone = links
            .iter()
            .position(|l| l.id == id)
            .map(|i| links.remove(i));
        let remains_ours = links.iter().any(|l| l.dialer);
        if links.is_empty() {
            self.by_peer.remove(&peer);
        }
        ours || gone.is_some_and(|l| !l.dialer) && remains_ours
    }

    /// The connections to close now under the rule; each is remembered as
    /// closed by this node until [`Links::closed`] reports it.
    pub fn take_surplus(&mut self, me: &PeerId, now: Instant) -> Vec<ConnectionId> {
        let mut out = Vec::new();
        for (peer, links) in &self.by_peer {
            if links.len() > 1 {
                out.extend(
                    surplus(me > peer, links, now)
                        .into_iter()
                        .filter(|id| !self.closing.contains(id)),
                );
            }
        }
        self.closing.extend(out.iter().copied());
        out
    }
}

/// Which of this node's connections to one peer to close under the rule
/// (module docs): `higher` is whether this node's peer ID is the higher.
pub(super) fn surplus(higher: bool, links: &[Link], now: Instant) -> Vec<ConnectionId> {
    let settled = |l: &Link| now.saturating_duration_since(l.since) >= GRACE;
    if !higher || !links.iter().any(|l| !l.dialer && settled(l)) {
        return Vec::new();
    }
    links
        .iter()
        .filter(|l| l.dialer && settled(l))
        .map(|l| l.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: usize, dialer: bool, since: Instant) -> Link {
        Link {
            id: ConnectionId::new_unchecked(id),
            dialer,
            since,
        }
    }

    /// Every set of up to four connections between a lower node L and a
    /// higher node H, each dialled by either and old or young: H closes
    /// only what it dialled, only once an old one L dialled is there, and
    /// so never the last; L closes nothing; and L, told of H's closes,
    /// never takes them for a stale connection to check while H, told of
    /// its own, does not either.
    #[test]
    fn the_rule_keeps_one_connection_and_checks_nothing_it_closed() {
        let now = Instant::now() + Duration::from_secs(60);
        let old = now - GRACE;
        let young = now - GRACE / 2;
        let (l, h) = {
            let a = PeerId::random();
            let b = PeerId::random();
            if a < b { (a, b) } else { (b, a) }
        };
        for n in 1..=4usize {
            // Per connection: dialled by L or H, old or young.
            for code in 0..(4usize.pow(n as u32)) {
                let mut at_l = Links::default();
                let mut at_h = Links::default();
                let mut by_l = Vec::new();
                for i in 0..n {
                    let c = code / 4usize.pow(i as u32) % 4;
                    let l_dialled = c & 1 == 0;
                    let since = if c & 2 == 0 { old } else { young };
                    by_l.push((l_dialled, since));
                    at_l.opened(h, link(i, l_dialled, since));
                    at_h.opened(l, link(i, !l_dialled, since));
                }
                assert!(
                    at_l.take_surplus(&l, now).is_empty(),
                    "the lower closes nothing"
                );
                let closed = at_h.take_surplus(&h, now);
                let any_old_by_l = by_l.iter().any(|&(d, s)| d && s == old);
                for id in &closed {
                    let (l_dialled, since) = by_l[id_index(*id)];
                    assert!(!l_dialled, "the higher closes only what it dialled");
                    assert_eq!(since, old, "only after the grace");
                }
                let expect: usize = if any_old_by_l {
                    by_l.iter().filter(|&&(d, s)| !d && s == old).count()
                } else {
                    0
                };
                assert_eq!(closed.len(), expect, "{by_l:?}");
                assert!(closed.len() < n, "never the last connection");
                // Again at once: nothing more (the closes are under way).
                assert!(at_h.take_surplus(&h, now).is_empty());
                for id in closed {
                    assert!(
                        at_h.closed(l, id),
                        "the higher does not check what it closed"
                    );
                    assert!(at_l.closed(h, id), "the lower takes it for the rule");
                }
            }
        }
    }

    fn id_index(id: ConnectionId) -> usize {
        // `ConnectionId` shows its number in its debug form only.
        format!("{id:?}")
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    }

    /// A connection closing that the rule did not close is checked as
    /// before: one this node dialled, or any when none it dialled remains.
    #[test]
    fn other_closes_are_still_checked() {
        let now = Instant::now();
        let peer = PeerId::random();
        let mut links = Links::default();
        links.opened(peer, link(1, true, now));
        links.opened(peer, link(2, true, now));
        links.opened(peer, link(3, false, now));
        assert!(
            !links.closed(peer, ConnectionId::new_unchecked(1)),
            "its own dial"
        );
        assert!(
            links.closed(peer, ConnectionId::new_unchecked(3)),
            "the peer's, ours stays"
        );
        links.opened(peer, link(4, false, now));
        assert!(!links.closed(peer, ConnectionId::new_unchecked(2)));
        assert!(
            !links.closed(peer, ConnectionId::new_unchecked(4)),
            "none of ours remains"
        );
        assert!(links.by_peer.is_empty());
    }
}
