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
//!   dialled itself, once a connection the lower one dialled over the same
//!   transport (TCP or QUIC) has been open for [`GRACE`] (so the `Hello`s
//!   and requests that went out at connect time are answered, and both
//!   ends hold it; and a peer's crash still closes a TCP connection at
//!   once where there was one, rather than waiting for QUIC's timeout);
//! - the lower node never closes a second connection; when one it did not
//!   dial closes while one it dialled stays, that is the rule at work, not
//!   a sign of a stale connection, so it does not dial again to check
//!   (see `Node::recheck`); nor does the higher node for what it closed.
//!
//! Connections the lower node dialled are never closed by this rule, so a
//! pair keeps at least one.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
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
    /// Over QUIC (else TCP).
    pub quic: bool,
    pub since: Instant,
    /// The peer's IP address, as this connection sees it.
    pub ip: Option<IpAddr>,
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

    /// The peer's IP addresses, as its open connections see them, the
    /// oldest connection's first.
    pub fn ips(&self, peer: &PeerId) -> impl Iterator<Item = IpAddr> + '_ {
        self.by_peer
            .get(peer)
            .into_iter()
            .flatten()
            .filter_map(|l| l.ip)
    }

    /// Whether a TCP connection to the peer is open (its close would tell
    /// of the peer's crash at once).
    pub fn tcp(&self, peer: &PeerId) -> bool {
        self.by_peer
            .get(peer)
            .is_some_and(|links| links.iter().any(|l| !l.quic))
    }

    /// Open connections, to all peers.
    pub fn count(&self) -> usize {
        self.by_peer.values().map(Vec::len).sum()
    }

    /// A connection closed: whether it was the rule at work (closed by this
    /// node, or one the peer dialled, the peer being the higher end, while
    /// one this node dialled stays), so that nothing about the peer is to
    /// be checked.
    pub fn closed(&mut self, me: &PeerId, peer: PeerId, id: ConnectionId) -> bool {
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
        ours || peer > *me && gone.is_some_and(|l| !l.dialer) && remains_ours
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
fn surplus(higher: bool, links: &[Link], now: Instant) -> Vec<ConnectionId> {
    let settled = |l: &Link| now.saturating_duration_since(l.since) >= GRACE;
    if !higher {
        return Vec::new();
    }
    let kept = |quic: bool| {
        links
            .iter()
            .any(|l| !l.dialer && l.quic == quic && settled(l))
    };
    links
        .iter()
        .filter(|l| l.dialer && settled(l) && kept(l.quic))
        .map(|l| l.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: usize, dialer: bool, quic: bool, since: Instant) -> Link {
        Link {
            ip: None,
            id: ConnectionId::new_unchecked(id),
            dialer,
            quic,
            since,
        }
    }

    fn ordered() -> (PeerId, PeerId) {
        let a = PeerId::random();
        let b = PeerId::random();
        if a < b { (a, b) } else { (b, a) }
    }

    /// Every set of up to four connections between a lower node L and a
    /// higher node H, each dialled by either, old or young, over TCP or
    /// QUIC: H closes exactly what it dialled that is old and has an old
    /// one L dialled over the same transport beside it, so never the last;
    /// L closes nothing; and L, told of H's closes, never takes them for a
    /// stale connection to check, while H, told of its own, does not
    /// either.
    #[test]
    fn the_rule_keeps_one_connection_and_checks_nothing_it_closed() {
        let now = Instant::now() + Duration::from_secs(60);
        let old = now - GRACE;
        let young = now - GRACE / 2;
        let (l, h) = ordered();
        for n in 1..=4usize {
            // Per connection: dialled by L or H, old or young, TCP or QUIC.
            for code in 0..(8usize.pow(n as u32)) {
                let mut at_l = Links::default();
                let mut at_h = Links::default();
                let mut conns = Vec::new();
                for i in 0..n {
                    let c = code / 8usize.pow(i as u32) % 8;
                    let by_l = c & 1 == 0;
                    let is_old = c & 2 == 0;
                    let quic = c & 4 != 0;
                    let since = if is_old { old } else { young };
                    conns.push((by_l, is_old, quic));
                    at_l.opened(h, link(i, by_l, quic, since));
                    at_h.opened(l, link(i, !by_l, quic, since));
                }
                assert!(
                    at_l.take_surplus(&l, now).is_empty(),
                    "the lower closes nothing"
                );
                let mut closed = at_h.take_surplus(&h, now);
                closed.sort();
                let expect: Vec<ConnectionId> = conns
                    .iter()
                    .enumerate()
                    .filter(|&(_, &(by_l, is_old, quic))| {
                        !by_l && is_old && conns.iter().any(|&(d, o, q)| d && o && q == quic)
                    })
                    .map(|(i, _)| ConnectionId::new_unchecked(i))
                    .collect();
                assert_eq!(closed, expect, "{conns:?}");
                assert!(closed.len() < n, "never the last connection");
                // Again at once: nothing more (the closes are under way).
                assert!(at_h.take_surplus(&h, now).is_empty());
                for id in closed {
                    assert!(
                        at_h.closed(&h, l, id),
                        "the higher does not check what it closed"
                    );
                    assert!(at_l.closed(&l, h, id), "the lower takes it for the rule");
                }
                assert!(at_h.closing.is_empty() && at_l.closing.is_empty());
                assert_eq!(at_h.count(), at_l.count());
            }
        }
    }

    /// A close the rule did not make is checked as before: one this node
    /// dialled, one at the higher end (the lower never closes by the rule),
    /// or any when none this node dialled remains.
    #[test]
    fn other_closes_are_still_checked() {
        let now = Instant::now();
        let (l, h) = ordered();
        let id = ConnectionId::new_unchecked;
        // At the lower end.
        let mut links = Links::default();
        links.opened(h, link(1, true, false, now));
        links.opened(h, link(2, true, false, now));
        links.opened(h, link(3, false, false, now));
        assert!(!links.closed(&l, h, id(1)), "its own dial");
        assert!(
            links.closed(&l, h, id(3)),
            "the higher's, ours stays: the rule"
        );
        links.opened(h, link(4, false, false, now));
        assert!(!links.closed(&l, h, id(2)));
        assert!(!links.closed(&l, h, id(4)), "none of ours remains");
        assert_eq!(links.count(), 0);
        // At the higher end: the lower never closes by the rule.
        let mut links = Links::default();
        links.opened(l, link(5, true, false, now));
        links.opened(l, link(6, false, false, now));
        assert!(!links.closed(&h, l, id(6)), "the lower's close is checked");
        assert!(!links.closed(&h, l, id(5)));
        assert!(links.by_peer.is_empty());
    }
}
