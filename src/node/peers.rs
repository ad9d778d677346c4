//! The address book and dialling: which peers to dial, at which addresses,
//! and keeping the cluster connected.

use std::collections::HashSet;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::DialError;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use tracing::{debug, warn};

use super::{MAX_FOREIGN, Node};
use crate::election::{Liveness, members};
use crate::wire::{self, SharedPeer};

impl Node {
    /// Records addresses for a peer (newest first, bounded) and tells the swarm.
    pub(super) fn learn_addrs(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) {
        if peer == self.me || self.foreign.contains(&peer) {
            return;
        }
        if !self.addrs.contains_key(&peer) && self.addrs.len() >= self.cfg.network.max_peers {
            return;
        }
        let loopback_only = self.loopback_only;
        let book = self.addrs.entry(peer).or_default();
        for addr in addrs {
            let addr = strip_p2p(addr);
            match addr.iter().next() {
                Some(Protocol::Ip4(ip)) if ip.is_unspecified() => continue,
                // A peer's loopback address is this host unless the whole
                // cluster runs on loopback.
                Some(Protocol::Ip4(ip)) if ip.is_loopback() && !loopback_only => continue,
                Some(Protocol::Ip6(ip))
                    if (ip.is_loopback() && !loopback_only) || ip.is_unspecified() =>
                {
                    continue;
                }
                _ => {}
            }
            book.retain(|a| *a != addr);
            book.insert(0, addr.clone());
            self.swarm.add_peer_address(peer, addr);
        }
        book.truncate(wire::MAX_ADDRS_PER_PEER);
    }

    /// Dials a peer at its known addresses, TCP first and one at a time, so a
    /// crash shows up as a closed TCP connection rather than a QUIC timeout.
    ///
    /// A TCP dial goes out from a fresh port: libp2p's default binds it to
    /// the listening port (for hole punching, which this node does not do),
    /// and while a cluster of 100 started that way, about one connection
    /// in twenty failed its upgrade on the listener's side. A peer with
    /// only QUIC addresses keeps the shared UDP socket (a fresh port would
    /// be a socket and a QUIC endpoint per connection). Returns whether a
    /// dial started.
    pub(super) fn dial(&mut self, peer: PeerId) -> bool {
        if peer == self.me || self.foreign.contains(&peer) {
            return false;
        }
        let mut addrs = self.addrs.get(&peer).cloned().unwrap_or_default();
        addrs.sort_by_key(is_quic);
        let tcp = addrs.first().is_some_and(|a| !is_quic(a));
        // Kademlia and identify may know newer addresses than ours (a peer
        // that restarted on another port).
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .override_dial_concurrency_factor(std::num::NonZeroU8::MIN);
        let opts = if tcp { opts.allocate_new_port() } else { opts };
        match self.swarm.dial(opts.build()) {
            Ok(()) => true,
            Err(e) => {
                debug!(%peer, error = %e, "dial not started");
                false
            }
        }
    }

    /// Dials a peer whose last connection closed, to learn whether it is
    /// alive: over TCP first when it has TCP addresses, since a crashed
    /// process's port refuses at once, while a QUIC dial to it waits out the
    /// dial timeout (QUIC acts on no refusal over UDP), which would hold a
    /// failover for seconds. If that dial fails and the lost connection was
    /// QUIC, a refusal still settles it (the process no longer listens);
    /// any other failure gets a second dial at every address (see
    /// [`Node::confirm_failed`]).
    pub(super) fn confirm(&mut self, peer: PeerId) {
        let tcp = self.tcp_addrs(peer);
        if tcp.is_empty() {
            self.dial(peer);
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .addresses(tcp)
            .override_dial_concurrency_factor(std::num::NonZeroU8::MIN)
            .allocate_new_port()
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.confirming.insert(peer);
            }
            Err(e) => debug!(%peer, error = %e, "confirming dial not started"),
        }
    }

    /// A dial failed: whether it settles that the peer is unreachable.
    /// Only a TCP-only confirming dial of a peer last reached over QUIC
    /// that failed other than by a refusal does not; it is followed by a
    /// dial at every address.
    pub(super) fn confirm_failed(&mut self, peer: PeerId, error: &DialError) -> bool {
        if !self.confirming.remove(&peer) || !self.lost_over_quic.contains(&peer) || refused(error)
        {
            return true;
        }
        self.dial(peer);
        false
    }

    /// A TCP connection to a peer closed while others (QUIC ones, say)
    /// remain. When a process dies its TCP connections close at once but
    /// its QUIC ones linger until they time out (UDP carries no close), so
    /// a TCP dial checks it: a refusal means nothing listens there any
    /// more, and the remaining connections are closed as stale, which
    /// makes the peer suspect at once (see [`Node::recheck_failed`]).
    pub(super) fn recheck(&mut self, peer: PeerId) {
        if !self.swarm.is_connected(&peer) || self.rechecking.contains(&peer) {
            return;
        }
        let tcp = self.tcp_addrs(peer);
        if tcp.is_empty() {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            // Connected already, so not `Disconnected`; but never a second
            // dial while one is under way.
            .condition(PeerCondition::NotDialing)
            .addresses(tcp)
            .override_dial_concurrency_factor(std::num::NonZeroU8::MIN)
            .allocate_new_port()
            .build();
        if self.swarm.dial(opts).is_ok() {
            self.rechecking.insert(peer);
        }
    }

    /// A dial failed: whether it was a [`Node::recheck`] (handled here).
    pub(super) fn recheck_failed(&mut self, peer: PeerId, error: &DialError) -> bool {
        if !self.rechecking.remove(&peer) {
            return false;
        }
        if refused(error) && self.swarm.is_connected(&peer) {
            debug!(%peer, "its TCP port refuses: closing its remaining connections as stale");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        true
    }

    fn tcp_addrs(&self, peer: PeerId) -> Vec<Multiaddr> {
        self.addrs
            .get(&peer)
            .into_iter()
            .flatten()
            .filter(|a| !is_quic(a))
            .cloned()
            .collect()
    }

    pub(super) fn dial_bootstrap(&mut self) {
        for addr in self.cfg.bootstrap.clone() {
            match peer_of(&addr) {
                Some(peer) if self.swarm.is_connected(&peer) => {}
                Some(peer) => {
                    self.learn_addrs(peer, [addr]);
                    self.dial(peer);
                }
                None => {
                    let answered = self.bootstrap_peers.get(&addr);
                    if answered.is_some_and(|p| self.swarm.is_connected(p))
                        || self
                            .bootstrap_dialled
                            .get(&addr)
                            .is_some_and(|(at, _)| at.elapsed() < BOOTSTRAP_REDIAL)
                    {
                        continue;
                    }
                    let opts = DialOpts::unknown_peer_id().address(addr.clone());
                    let opts = if is_quic(&addr) {
                        opts
                    } else {
                        opts.allocate_new_port()
                    }
                    .build();
                    let id = opts.connection_id();
                    self.bootstrap_dialled
                        .insert(addr.clone(), (std::time::Instant::now(), id));
                    if let Err(e) = self.swarm.dial(opts) {
                        debug!(%addr, error = %e, "bootstrap dial not started");
                    }
                }
            }
        }
    }

    /// Keeps the cluster connected: bootstrap peers and every live peer.
    /// Dials the bootstrap addresses and every known peer that has not left
    /// (dead or cut off ones too, until forgotten: a healed partition is
    /// found within about one redial interval) and is not connected.
    pub(super) fn redial(&mut self) {
        self.dial_bootstrap();
        self.close_second_connections();
        // A peer gone silent over an open connection (a cut-off network, a
        // frozen process): its connections are presumed broken and closed,
        // so a healed network is used over fresh ones, not over TCP
        // connections deep in retransmission back-off.
        let now = std::time::Instant::now();
        let silent: Vec<PeerId> = self
            .election
            .peers()
            .filter(|(id, p)| {
                !matches!(p.liveness, Liveness::Left { .. }) && !self.election.is_live(id, now)
            })
            .filter_map(|(id, _)| id.parse().ok())
            .filter(|p| self.swarm.is_connected(p))
            .collect();
        for peer in silent {
            debug!(%peer, "silent peer: closing its connections to dial it afresh");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let connected: HashSet<&str> = self.connected.values().map(String::as_str).collect();
        let known: Vec<PeerId> = self
            .election
            .peers()
            .filter(|(id, p)| {
                !matches!(p.liveness, Liveness::Left { .. }) && !connected.contains(id.as_str())
            })
            .filter_map(|(id, _)| id.parse().ok())
            .filter(|p| !self.swarm.is_connected(p))
            .collect();
        for peer in known {
            self.dial(peer);
        }
        let election = &self.election;
        self.listed.retain(|p, at| {
            now.saturating_duration_since(*at) < LISTED_KEEP
                && election.peer(&p.to_base58()).is_none()
        });
        let listed: Vec<PeerId> = self
            .listed
            .keys()
            .filter(|p| !self.swarm.is_connected(p))
            .copied()
            .collect();
        // Dials still under way count for nothing, so every listed peer
        // gets its turn.
        let mut started = 0;
        for peer in listed {
            if started == MAX_LISTED_REDIALS {
                break;
            }
            started += usize::from(self.dial(peer));
        }
        // A connected peer this node still knows nothing of: its Hello (or
        // ours) was lost, and a quiet follower's next heartbeat may be
        // minutes away. Greet it again, at most every HELLO_RETRY.
        let unknown: Vec<PeerId> = self
            .connected
            .iter()
            .filter(|&(p, id)| {
                self.election.peer(id).is_none()
                    && !self.foreign.contains(p)
                    && self
                        .hello_sent
                        .get(p)
                        .is_none_or(|at| now.saturating_duration_since(*at) >= HELLO_RETRY)
            })
            .map(|(p, _)| *p)
            .take(MAX_HELLO_RETRIES)
            .collect();
        for peer in unknown {
            debug!(%peer, "connected but unknown: greeting it again");
            self.send_hello(peer);
        }
        let swarm = &self.swarm;
        self.hello_sent.retain(|p, _| swarm.is_connected(p));
        self.addrs.retain(|p, _| {
            self.swarm.is_connected(p)
                || self.listed.contains_key(p)
                || self.election.peer(&p.to_base58()).is_some()
        });
        let addrs = &self.addrs;
        self.lost_over_quic.retain(|p| addrs.contains_key(p));
        self.gossip_only
            .retain(|_, (_, _, at)| now.saturating_duration_since(*at) < GOSSIP_ONLY_KEEP);
        self.confirming.retain(|p| addrs.contains_key(p));
        self.rechecking.retain(|p| addrs.contains_key(p));
    }

    /// Sends this node's `Hello` to a connected peer.
    pub(super) fn send_hello(&mut self, peer: PeerId) {
        let hello = wire::Request::Hello(self.hello());
        self.swarm.behaviour_mut().rpc.send_request(&peer, hello);
        self.hello_sent.insert(peer, std::time::Instant::now());
    }

    pub(super) fn mark_foreign(&mut self, peer: PeerId) {
        self.not_dialled(peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// Never dialled again (within the bound of the set), and forgotten by
    /// the address book and Kademlia.
    pub(super) fn not_dialled(&mut self, peer: PeerId) {
        if self.foreign.len() >= MAX_FOREIGN {
            self.foreign.clear();
        }
        self.foreign.insert(peer);
        self.addrs.remove(&peer);
        self.unadmitted_addrs.remove(&peer);
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
    }

    /// Addresses a peer's identify gave before it was a member.
    pub(super) fn stash_addrs(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if self.unadmitted_addrs.len() >= MAX_FOREIGN {
            self.unadmitted_addrs.clear();
        }
        self.unadmitted_addrs.insert(peer, addrs);
    }

    /// A member's listen addresses: kept, and given to Kademlia.
    pub(super) fn learn_member_addrs(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        for addr in &addrs {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
        }
        self.learn_addrs(peer, addrs);
    }

    /// The members this node holds live, itself included (see
    /// [`crate::election::members`]).
    pub(super) fn member_digest(&self) -> (u32, u64) {
        let now = std::time::Instant::now();
        let me = self.election.me().as_bytes();
        let peers = self.election.live_peers(now).map(|id| id.as_bytes());
        let d = members::digest(std::iter::once(me).chain(peers));
        (d.count, d.hash)
    }

    /// The leader's heartbeat said which members it holds live: when that
    /// differs from this node's view (and the back-off allows), this node
    /// sends the leader its member list and gets the leader's back.
    pub(super) fn compare_members(&mut self, leader: PeerId, theirs: (u32, u64)) {
        let own = self.member_digest();
        let d = |(count, hash)| members::Digest { count, hash };
        if !self
            .member_sync
            .observe(d(theirs), d(own), std::time::Instant::now())
        {
            return;
        }
        debug!(%leader, theirs = theirs.0, own = own.0, "member views differ: pulling the leader's");
        let list = self.member_list();
        self.swarm
            .behaviour_mut()
            .rpc
            .send_request(&leader, wire::Request::Members(list));
    }

    /// A member's pull: answered by the leader only (followers pull from
    /// it), at most once per half heartbeat interval per peer, so a member
    /// cannot make this node build and send its member list at will; an
    /// empty list otherwise.
    pub(super) fn on_members_request(
        &mut self,
        peer: PeerId,
        list: &[SharedPeer],
    ) -> wire::Response {
        let now = std::time::Instant::now();
        let min = self.cfg.heartbeat_interval / 2;
        let recent = self
            .members_served
            .get(&peer)
            .is_some_and(|at| now.saturating_duration_since(*at) < min);
        if !self.election.is_leader() || recent {
            // An empty list: nothing to learn (a refusal would be logged
            // as one by a follower that pulled just as leadership moved).
            return wire::Response::Members(Vec::new());
        }
        if self.members_served.len() >= self.cfg.network.max_peers {
            self.members_served
                .retain(|_, at| now.saturating_duration_since(*at) < min);
        }
        self.members_served.insert(peer, now);
        self.take_members(peer, list);
        wire::Response::Members(self.member_list())
    }

    /// The live members this node knows an address of (in a secured
    /// cluster, certified ones only), for [`wire::Request::Members`].
    pub(super) fn member_list(&self) -> Vec<SharedPeer> {
        let now = std::time::Instant::now();
        let secured = self.gate.is_secured();
        self.election
            .live_peers(now)
            .filter_map(|id| id.parse::<PeerId>().ok())
            .filter(|p| !secured || self.gate.member(p).is_some())
            .filter_map(|p| self.addrs.get(&p).map(|a| SharedPeer::member(&p, a)))
            .take(wire::MAX_MEMBERS)
            .collect()
    }

    /// Closes this node's second connections under the rule of
    /// [`links`](super::links).
    fn close_second_connections(&mut self) {
        for id in self.links.take_surplus(&self.me, std::time::Instant::now()) {
            debug!(connection = ?id, "closing a second connection to a peer (the rule: the higher ID closes what it dialled)");
            self.swarm.close_connection(id);
        }
    }

    /// A peer's ID in text (the election's key): taken from the connected
    /// peers' cache when it is there. Encoding base58 was 2 % of a node's CPU
    /// while 100 nodes started, most of it for member lists of peers already
    /// known.
    pub(super) fn id_text(&self, peer: &PeerId) -> String {
        match self.connected.get(peer) {
            Some(text) => text.clone(),
            None => peer.to_base58(),
        }
    }

    /// A peer's member list (in its `Hello` answer, or a member pull): the
    /// addresses are kept, the members not connected are dialled, and the
    /// connected ones this node does not know yet are greeted again (the
    /// greeting makes them known).
    pub(super) fn take_members(&mut self, from: PeerId, list: &[SharedPeer]) {
        if let Err(e) = wire::check_members(list) {
            warn!(peer = %from, error = %e, "member list dropped");
            return;
        }
        let mut new = 0;
        for shared in list {
            let Some((p, addrs)) = shared.parse() else {
                continue;
            };
            if p == self.me || self.foreign.contains(&p) {
                continue;
            }
            let known = self.election.peer(&self.id_text(&p)).is_some();
            let connected = self.swarm.is_connected(&p);
            if known && connected {
                // Nothing to learn: identify keeps its addresses current.
                continue;
            }
            if !connected && self.listed.contains_key(&p) {
                // Named by an earlier list and dialled since; the sweep
                // dials it again while it stays listed.
                continue;
            }
            new += usize::from(!known);
            // A known member's addresses come from itself (identify, its
            // connections), never from a third party's list.
            if !known {
                self.learn_addrs(p, addrs);
                // Timed from the first list that named it, so a peer that
                // never answers is dialled for LISTED_KEEP after each time
                // it is listed anew, not for as long as lists keep coming.
                // Bounded well below the address book, which a list of
                // strangers must not fill for long.
                if self.listed.len() < MAX_LISTED && self.addrs.contains_key(&p) {
                    self.listed.entry(p).or_insert_with(std::time::Instant::now);
                }
            }
            if !connected {
                self.dial(p);
            } else if !known
                && self
                    .hello_sent
                    .get(&p)
                    .is_none_or(|at| at.elapsed() >= HELLO_RETRY)
            {
                self.send_hello(p);
            }
        }
        if new > 0 {
            debug!(peer = %from, new, "members learned from a member list");
        }
    }
}

/// The peer ID at the end of a multiaddr, if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

pub(super) fn is_loopback(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

fn strip_p2p(addr: Multiaddr) -> Multiaddr {
    addr.into_iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// How long a peer named in a member list is dialled again while it has
/// not greeted this node, and how many such dials one sweep starts at most
/// (a hostile list of unreachable peers costs at most this many dials a
/// second, for this long).
pub(super) const LISTED_KEEP: std::time::Duration = std::time::Duration::from_secs(10);
const MAX_LISTED_REDIALS: usize = 32;
/// Most peers held as listed at once.
const MAX_LISTED: usize = 128;

/// How long a peer heard of only through gossip is remembered.
const GOSSIP_ONLY_KEEP: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether an address is QUIC's (UDP).
pub(super) fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::QuicV1 | Protocol::Udp(_)))
}

/// Whether a dial failed because the peer's host refused the connection
/// (nothing listens at that port any more).
fn refused(error: &DialError) -> bool {
    fn io_refused(e: &(dyn std::error::Error + 'static)) -> bool {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
            // io::Error's source() skips the error it wraps.
            if io.get_ref().is_some_and(|inner| io_refused(inner)) {
                return true;
            }
        }
        e.source().is_some_and(io_refused)
    }
    match error {
        DialError::Transport(errors) => errors.iter().any(|(_, e)| match e {
            libp2p::TransportError::Other(e) => io_refused(e),
            libp2p::TransportError::MultiaddrNotSupported(_) => false,
        }),
        _ => false,
    }
}

/// How long a dial of a bootstrap address without a peer ID is given
/// before the address is dialled again.
const BOOTSTRAP_REDIAL: std::time::Duration = std::time::Duration::from_secs(3);

/// A connected peer still unknown is greeted again at most this often, and
/// at most this many in one sweep.
const HELLO_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
const MAX_HELLO_RETRIES: usize = 16;
