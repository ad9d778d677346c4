//! Probes by UDP datagram ([`wire::Datagram`]), sent beside each
//! request-response `Ping` of [`super::probe`]; the first answer by either
//! way counts.
//!
//! To a peer that has answered this node's probe datagrams at its present
//! address, this node's own probes go by datagram alone at first, and the
//! `Ping` over the connection follows only if no answer came within
//! `[election] probe_connection_after_ms` (100 ms; after
//! [`CONNECTION_ONLY`] such probes in a row answered only over the
//! connection, both ways at once again until the peer answers a datagram). On a healthy network
//! the datagram's answer always comes first, and the connections carry no
//! probes: before, the leader answered each probe both ways, 6 a second
//! with 3 probers. Relays for other members still go both ways at once.
//!
//! Why: a probe over a TCP connection waits behind every packet the
//! connection lost, for a retransmission timeout that doubles with each
//! loss. On a network that loses packets on the way, one connection stalls
//! for seconds now and then (`docs/failure-detection.md`, *Loss where the
//! packet is lost*), longer than a probe's deadline, and the probes of a
//! live leader fail together. A datagram is lost on its own: a probe is
//! sent again every `[election] probe_datagram_resend_ms` until answered or
//! past its deadline, and each try has the loss rate's chance, not the
//! connection's.
//!
//! What is taken: a `Probe` only from a connected peer the gate lets probe
//! (in an open cluster any connected peer, in a secured one a certified
//! member), from an IP address one of its connections comes from and the
//! port its heartbeats announce, at most [`PER_PEER_PER_SEC`] a second per
//! peer and [`MAX_ANSWERS_PER_SEC`] in all; an `Ack` only for a token this
//! node sent, signed by the key of the peer it probed (so no one can answer
//! for a dead peer). A datagram the node cannot use is dropped and counted.
//! Where UDP between nodes is filtered, the datagrams go unanswered and
//! probes ride the connections alone: both ways at once from the start
//! for a peer that never answered one, and for one that did, 100 ms late
//! for [`CONNECTION_ONLY`] probes, then both ways at once again. Datagrams go only to
//! peers with an open connection (the address comes from it).
//!
//! A refusal: when nothing listens at the port a probe went to, the peer's
//! host answers with an ICMP "port unreachable", which the kernel queues on
//! this socket (`IP_RECVERR`, Linux). The peer's process is gone, so the
//! probe fails at once, as a failed request over a TCP connection does:
//! over QUIC, where a killed process's connections stay open until QUIC's
//! idle timeout, this finds a crash at the next probe rather than at the
//! probe's deadline. It counts only
//! - from the host the datagram went to (not a router or firewall on the
//!   way), as port unreachable;
//! - for a peer with no TCP connection open (over TCP the closed connection
//!   tells of a crash already);
//! - at an address where the peer answered a probe datagram before (a
//!   firewall that rejects the probe port, as iptables' `REJECT` does by
//!   default, refuses every datagram to a live peer). So a follower with no
//!   TCP connection to its leader, whose probe datagrams the leader has not
//!   answered at its address yet, sends it one probe by datagram alone
//!   ([`Node::warm_datagrams`]): then its checks of the leader and its
//!   probes for other members take refusals too, not only the probers'.
//!
//! This node's own probe then fails as one past its deadline does (a late
//! answer still counts); a relay for another member answers "unreachable".
//! ICMP is not authenticated: someone who can send packets with the
//! peer's address, and knows both probe ports (fixed ones are, when
//! configured), can make probes over QUIC fail early, much as someone on
//! the path who drops the peer's packets can.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::request_response::OutboundRequestId;
use libp2p::{Multiaddr, PeerId};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::debug;

use super::Node;
use super::probe::Pending;
use crate::status::DatagramCounts;
use crate::wire::{self, Datagram, MAX_DATAGRAM_BYTES};

/// Most probes of this node with datagrams out or remembered at once
/// (a prober has a few a second, each remembered for [`LATE`] past its
/// deadline), of which relays for others at most [`MAX_RELAYS_OUT`], so
/// that relays never crowd out this node's own probes.
const MAX_OUT: usize = 256;
const MAX_RELAYS_OUT: usize = 64;
/// Most probes answered in one second, from one peer (a prober sends a
/// probe every 500 ms, resent every 50 ms under loss, and checks) and in
/// all (a leader answers its few probers, and relays).
pub(super) const PER_PEER_PER_SEC: u32 = 40;
pub(super) const MAX_ANSWERS_PER_SEC: u32 = 500;
/// How long after its deadline a probe still takes a late answer (which
/// clears a suspicion, as a late `Pong` does).
const LATE: Duration = Duration::from_secs(10);
/// Datagrams read but not yet handled by the node's loop; more are dropped.
const QUEUE: usize = 256;
/// Datagrams the reader takes from the socket before it yields.
const READS_PER_ROUND: usize = 64;
/// A follower's [`For::Warm`] probes of its leader: at most one per peer
/// and address this often (a leader whose probe port answers nothing,
/// behind a firewall, is not sent one every heartbeat), at most one per
/// peer this often whatever the address (a leader that restarts on a new
/// port, as one in a crash loop does within a second or two, is warmed
/// again; one announcing port after port gets a few a second, to its own
/// IP address), and peers remembered.
const WARM_EVERY: Duration = Duration::from_secs(30);
const WARM_GAP: Duration = Duration::from_millis(200);
/// Warm probes start spread over this much per connected peer (0.5 s at
/// 100 peers).
const WARM_SPREAD_PER_PEER: Duration = Duration::from_millis(5);
const MAX_WARMED: usize = 16;
/// Most peers whose last answering address is remembered (those this node
/// probes, or relays for: a few).
const MAX_ANSWERED_AT: usize = 1024;
/// Probes of a peer in a row, sent by datagram first, that only the
/// connection answered: past this, the peer no longer counts as answering
/// datagrams at its address (its probes go both ways at once again, and
/// a refusal from there no longer counts) until it answers one.
const CONNECTION_ONLY: u32 = 3;

/// What the socket's reader passes to the node's loop.
#[derive(Debug, PartialEq)]
pub(super) enum Read {
    /// A datagram, and the address it came from.
    Datagram(SocketAddr, Vec<u8>),
    /// A datagram this node sent to that address was refused (ICMP port
    /// unreachable).
    Refused(SocketAddr),
}

/// What a probe's datagrams answer for.
#[derive(Debug, Clone, Copy)]
pub(super) enum For {
    /// This node's own probe, under the prober's nonce, beside the `Ping`
    /// `rpc` over the connection: sent with the first datagram, or, to a
    /// peer that answers datagrams, only once they went unanswered for
    /// `probe_connection_after_ms` (`None` until then; see
    /// [`Node::probe_datagram_first`]).
    Mine(u64, Option<OutboundRequestId>),
    /// A probe for another member (its `Relay` entry in `probe_pending`
    /// under `rpc`, the `Ping` sent beside it).
    Relay(OutboundRequestId),
    /// Datagrams alone, to learn where the leader answers them (see
    /// [`Node::warm_datagrams`]).
    Warm,
}

impl For {
    /// The request-response `Ping` sent beside the datagrams.
    fn rpc(&self) -> Option<OutboundRequestId> {
        match self {
            For::Mine(_, rpc) => *rpc,
            For::Relay(rpc) => Some(*rpc),
            For::Warm => None,
        }
    }
}

/// One probe with datagrams out.
struct Out {
    to: PeerId,
    addr: SocketAddr,
    what: For,
    when: Schedule,
    /// When the `Ping` over the connection goes if no answer came by then
    /// (a [`For::Mine`] probe sent by datagram first).
    ping_at: Option<Instant>,
    /// Sent by datagram first.
    first: bool,
    /// Answered, by datagram or over the connection: nothing more to send,
    /// and further answers are duplicates.
    done: bool,
    /// Refused (see [`Node::on_refused`]): nothing more to send, but an
    /// answer still counts.
    refused: bool,
}

/// When a probe's datagram goes again.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// The next send, while before `until`; `until` once past it.
    next: Instant,
    until: Instant,
}

impl Schedule {
    fn new(now: Instant, resend: Duration, within: Duration) -> Self {
        Schedule {
            next: now + resend,
            until: now + within,
        }
    }

    /// When it needs a tick: the next send, or its end (never an instant a
    /// tick has handled, so a loop that sleeps until it cannot spin).
    fn wake(&self) -> Option<Instant> {
        (self.next < self.until).then_some(self.next)
    }

    /// A tick at `now`: whether to send now.
    fn tick(&mut self, now: Instant, resend: Duration) -> bool {
        if self.next >= self.until || now < self.next {
            return false;
        }
        if now < self.until {
            self.next = now + resend;
            true
        } else {
            self.next = self.until;
            false
        }
    }
}

/// This node's probe socket and its probes in flight.
pub(super) struct Datagrams {
    socket: Arc<UdpSocket>,
    /// The socket is IPv6.
    v6: bool,
    port: u16,
    resend: Duration,
    rx: mpsc::Receiver<Read>,
    reader: tokio::task::AbortHandle,
    out: HashMap<u64, Out>,
    /// The second answers are counted in, how many so far, and per peer.
    window: (Instant, u32),
    per_peer: HashMap<PeerId, u32>,
    /// The address each peer last answered a probe datagram from: a
    /// refusal counts only from there (see [`Node::on_refused`]).
    answered_at: HashMap<PeerId, SocketAddr>,
    /// Per peer in `answered_at`, its probes in a row sent by datagram
    /// first that only the connection answered (see [`CONNECTION_ONLY`]).
    connection_only: HashMap<PeerId, u32>,
    /// Where and when each peer was last sent a [`For::Warm`] probe.
    warmed: HashMap<PeerId, (SocketAddr, Instant)>,
    counts: DatagramCounts,
    /// Datagrams the reader dropped unread (oversized, or the loop's queue
    /// full).
    unread: Arc<AtomicU64>,
}

impl Drop for Datagrams {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The IP address of a multiaddr (`/ip4/…` or `/ip6/…` first).
pub(super) fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

impl Datagrams {
    /// Binds the probe socket on the IP of the first listen address that
    /// has one (every IPv4 interface otherwise) at `port` (0: any free).
    pub async fn bind(listen: &[Multiaddr], port: u16, resend: Duration) -> std::io::Result<Self> {
        let ip = listen
            .iter()
            .find_map(ip_of)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let socket = Arc::new(UdpSocket::bind(SocketAddr::new(ip, port)).await?);
        if let Err(e) = refusals::listen(&socket, ip.is_ipv6()) {
            tracing::warn!(error = %e, "probe socket: refusals (ICMP) not reported, probes go by their deadlines");
        }
        let port = socket.local_addr()?.port();
        // `try_send_to` sends nothing until the runtime has seen the socket
        // writable: wait for that once, so the first probe goes.
        socket.writable().await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let reading = socket.clone();
        let unread = Arc::new(AtomicU64::new(0));
        let dropped = unread.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM_BYTES + 1];
            let pass = |read: Read| {
                if tx.try_send(read).is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            };
            loop {
                let ready = match reading.ready(refusals::INTEREST).await {
                    Ok(ready) => ready,
                    Err(e) => {
                        debug!(error = %e, "probe socket");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                // ICMP errors about earlier sends, whichever read or send
                // the socket's pending error was told to.
                if ready.is_error() {
                    let (refused, failed) = refusals::drain(&reading);
                    for to in refused {
                        pass(Read::Refused(to));
                    }
                    if failed {
                        // Yield, so an error that repeats cannot spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                // At most so many datagrams a round, then the others'
                // turn (`try_recv_from` never yields by itself).
                for _ in 0..READS_PER_ROUND {
                    match reading.try_recv_from(&mut buf) {
                        // Over the limit (the buffer is one byte longer) is dropped here.
                        Ok((n, from)) if n <= MAX_DATAGRAM_BYTES => {
                            pass(Read::Datagram(from, buf[..n].to_vec()));
                        }
                        Ok(_) => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        // The socket's pending error: an ICMP error, told in
                        // full in the error queue.
                        Err(e) if refusals::reported(&e) => {}
                        Err(e) => {
                            debug!(error = %e, "probe socket");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            break;
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
        })
        .abort_handle();
        Ok(Datagrams {
            v6: ip.is_ipv6(),
            socket,
            port,
            resend,
            rx,
            reader,
            out: HashMap::new(),
            window: (Instant::now(), 0),
            per_peer: HashMap::new(),
            answered_at: HashMap::new(),
            connection_only: HashMap::new(),
            warmed: HashMap::new(),
            counts: DatagramCounts {
                port,
                ..DatagramCounts::default()
            },
            unread,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn counts(&self) -> DatagramCounts {
        DatagramCounts {
            dropped: self.counts.dropped + self.unread.load(Ordering::Relaxed),
            ..self.counts
        }
    }

    fn send(&mut self, addr: SocketAddr, d: &Datagram) {
        // An IPv6 socket (dual-stack) reaches IPv4 peers at their mapped
        // address; an IPv4 one cannot reach IPv6 peers (the send fails).
        let addr = match addr {
            SocketAddr::V4(a) if self.v6 => {
                SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port())
            }
            a => a,
        };
        // A full socket buffer drops the datagram, as the network might.
        let bytes = wire::encode(d);
        // Only `try_send_to`: once the socket had an ICMP error, tokio
        // keeps it "write closed" (mio reads EPOLLERR with EPOLLOUT so), and
        // an awaited send would spin on a full buffer.
        let sent = match self.socket.try_send_to(&bytes, addr) {
            // The socket's pending error, an ICMP error about an earlier
            // datagram (the reader takes it from the error queue), told to
            // this send instead of the datagram going: once more.
            Err(e) if refusals::reported(&e) => self.socket.try_send_to(&bytes, addr),
            sent => sent,
        };
        if sent.is_ok() {
            self.counts.sent += 1;
            self.counts.sent_bytes += bytes.len() as u64;
        }
    }

    /// Sends a probe's first datagram (a warm probe's goes at its scheduled
    /// start instead) and keeps it for resends until `until`; whether there
    /// was room for it.
    fn start(&mut self, me: &PeerId, probe: Out) -> bool {
        let relays = || {
            self.out
                .values()
                .filter(|o| matches!(o.what, For::Relay(_)))
                .count()
        };
        if self.out.len() >= MAX_OUT
            || matches!(probe.what, For::Relay(_)) && relays() >= MAX_RELAYS_OUT
        {
            return false;
        }
        let token = rand::random::<u64>();
        if !matches!(probe.what, For::Warm) {
            let d = Datagram::Probe {
                from: me.to_bytes(),
                token,
            };
            self.send(probe.addr, &d);
        }
        self.out.insert(token, probe);
        true
    }

    /// Sends what is due again; forgets probes long past their deadline.
    fn resend_due(&mut self, me: &PeerId, now: Instant) {
        self.out.retain(|_, o| now < o.when.until + LATE);
        let resend = self.resend;
        let due: Vec<(u64, SocketAddr)> = self
            .out
            .iter_mut()
            .filter_map(|(token, o)| {
                (!o.done && !o.refused && o.when.tick(now, resend)).then_some((*token, o.addr))
            })
            .collect();
        for (token, addr) in due {
            let d = Datagram::Probe {
                from: me.to_bytes(),
                token,
            };
            self.send(addr, &d);
        }
    }

    /// When [`Datagrams::resend_due`] has something to do next: a resend,
    /// or marking a probe past its deadline (so never an instant it has
    /// already handled).
    fn wake(&self) -> Option<Instant> {
        let resends = self
            .out
            .values()
            .filter(|o| !o.done && !o.refused)
            .filter_map(|o| o.when.wake());
        let pings = self
            .out
            .values()
            .filter(|o| !o.done && !o.refused)
            .filter_map(|o| o.ping_at);
        resends.chain(pings).min()
    }

    /// Probes sent by datagram first that are still unanswered (and not
    /// refused: the probe failed, the peer's process is gone) at their
    /// `ping_at`: the token, peer and nonce of each (each told once).
    fn pings_due(&mut self, now: Instant) -> Vec<(u64, PeerId, u64)> {
        self.out
            .iter_mut()
            .filter(|(_, o)| !o.done && !o.refused && o.ping_at.is_some_and(|at| at <= now))
            .filter_map(|(token, o)| {
                o.ping_at = None;
                match o.what {
                    For::Mine(nonce, None) => Some((*token, o.to, nonce)),
                    _ => None,
                }
            })
            .collect()
    }

    /// The `Ping` sent beside a probe was settled: its datagrams stop, and
    /// answers to them are duplicates. A probe sent by datagram first and
    /// answered first over the connection counts towards
    /// [`CONNECTION_ONLY`].
    fn settled(&mut self, rpc: OutboundRequestId) {
        let mut missed = Vec::new();
        for o in self.out.values_mut().filter(|o| o.what.rpc() == Some(rpc)) {
            if o.first && !o.done {
                missed.push(o.to);
            }
            o.done = true;
        }
        for peer in missed {
            self.connection_answered(peer);
        }
    }

    /// `peer` answered a probe sent by datagram first over the connection
    /// only: the [`CONNECTION_ONLY`]th in a row, it no longer counts as
    /// answering datagrams.
    fn connection_answered(&mut self, peer: PeerId) {
        let n = self.connection_only.entry(peer).or_default();
        *n += 1;
        if *n >= CONNECTION_ONLY {
            debug!(%peer, "its probe datagrams went unanswered {CONNECTION_ONLY} times while the connection answered: probing both ways at once");
            self.connection_only.remove(&peer);
            self.answered_at.remove(&peer);
        }
    }

    /// Whether one more of `peer`'s probes may be answered this second.
    fn may_answer(&mut self, peer: PeerId, now: Instant) -> bool {
        if now.saturating_duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
            self.per_peer.clear();
        }
        let theirs = self.per_peer.entry(peer).or_default();
        if *theirs >= PER_PEER_PER_SEC || self.window.1 >= MAX_ANSWERS_PER_SEC {
            return false;
        }
        *theirs += 1;
        self.window.1 += 1;
        true
    }
}

/// The next datagram read or refusal, if the node has a probe socket.
pub(super) async fn next(d: &mut Option<Datagrams>) -> Option<Read> {
    match d {
        Some(d) => d.rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Node {
    /// Where `peer`'s probe datagrams go: the IP address of its oldest
    /// connection, at the probe port its heartbeats announce.
    fn probe_addr(&self, peer: &PeerId) -> Option<SocketAddr> {
        let port = self.probe_ports.get(peer).copied().filter(|p| *p != 0)?;
        let ip = self.links.ips(peer).next()?;
        Some(SocketAddr::new(ip, port))
    }

    /// Sends datagrams to `to` for `within`, for `what`; whether they are
    /// on their way (there is a socket, an address, and room).
    pub(super) fn datagram_probe(&mut self, to: PeerId, what: For, within: Duration) -> bool {
        let Some(addr) = self.probe_addr(&to) else {
            return false;
        };
        let Some(d) = self.datagrams.as_mut() else {
            return false;
        };
        let now = Instant::now();
        let probe = Out {
            to,
            addr,
            what,
            when: Schedule::new(now, d.resend, within),
            ping_at: matches!(what, For::Mine(_, None)).then(|| now + self.cfg.probe_ping_after),
            first: matches!(what, For::Mine(_, None)),
            done: false,
            refused: false,
        };
        d.start(&self.me, probe)
    }

    /// Whether a probe of `peer` goes by datagram alone at first, the
    /// `Ping` over the connection only if no answer came within
    /// `[election] probe_connection_after_ms`: when that is not zero, the
    /// datagram deadline `within` leaves time after it, and `peer` has
    /// answered one of this node's probe datagrams at the address they go
    /// to now. Elsewhere (UDP blocked, a peer just met, a new port) both go
    /// at once. On a healthy network the datagram's answer comes first, so
    /// the connection carries no probes at all: the leader answered each of
    /// its probers' pings both ways before, most of its idle bytes.
    pub(super) fn probe_datagram_first(&self, peer: &PeerId, within: Duration) -> bool {
        let after = self.cfg.probe_ping_after;
        if after.is_zero() || after >= within {
            return false;
        }
        let Some(addr) = self.probe_addr(peer) else {
            return false;
        };
        self.datagrams
            .as_ref()
            .is_some_and(|d| d.answered_at.get(peer) == Some(&addr))
    }

    /// The leader's heartbeat, to a follower with no TCP connection to it:
    /// when the leader has not answered one of this node's probe datagrams
    /// at its address yet, one probe by datagram alone (sent again every
    /// `probe_datagram_resend_ms` for 2 × `probe_timeout_ms` until answered
    /// or refused), so that a refusal from there counts later (see
    /// [`Node::on_refused`]). A follower that is not one of the leader's
    /// probers checks the leader only when another member claims (and
    /// relays for the probers when asked); without this, those checks would
    /// wait out their deadlines where the leader's process is gone.
    ///
    /// It starts at a random point within [`WARM_SPREAD_PER_PEER`] times
    /// the peers this node is connected to (at most a heartbeat interval),
    /// so that a large cluster's followers, who all hear a new leader at
    /// once, do not all warm it at once (the leader answers at most
    /// [`MAX_ANSWERS_PER_SEC`]): about 200 a second whatever the size. At
    /// most one per peer and address every [`WARM_EVERY`], and one per peer
    /// every [`WARM_GAP`] whatever the address (a leader announcing port
    /// after port is not warmed at each).
    pub(super) fn warm_datagrams(&mut self, leader: PeerId) {
        if self.links.tcp(&leader) {
            return;
        }
        let Some(addr) = self.probe_addr(&leader) else {
            return;
        };
        let spread = (WARM_SPREAD_PER_PEER
            * u32::try_from(self.connected.len()).unwrap_or(u32::MAX))
        .min(self.cfg.heartbeat_interval);
        let delay = spread.mul_f64(rand::random::<f64>());
        let within = self.cfg.probe.timeout * 2;
        let Some(d) = self.datagrams.as_mut() else {
            return;
        };
        if d.answered_at.get(&leader) == Some(&addr) {
            return;
        }
        let now = Instant::now();
        d.warmed
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < WARM_EVERY);
        let recent = d
            .warmed
            .get(&leader)
            .is_some_and(|(a, at)| *a == addr || now.saturating_duration_since(*at) < WARM_GAP);
        if recent || d.warmed.len() >= MAX_WARMED {
            return;
        }
        let probe = Out {
            to: leader,
            addr,
            what: For::Warm,
            when: Schedule {
                next: now + delay,
                until: now + delay + within,
            },
            ping_at: None,
            first: false,
            done: false,
            refused: false,
        };
        if d.start(&self.me, probe) {
            d.warmed.insert(leader, (addr, now));
        }
    }

    /// Resends what is due, and sends the `Ping` over the connection for
    /// each probe sent by datagram first that is still unanswered.
    pub(super) fn datagram_tick(&mut self, now: Instant) {
        let Some(d) = self.datagrams.as_mut() else {
            return;
        };
        d.resend_due(&self.me, now);
        for (token, to, nonce) in d.pings_due(now) {
            let rpc = self.ping(&to, nonce);
            if let Some(d) = self.datagrams.as_mut() {
                d.counts.pinged_after += 1;
                if let Some(o) = d.out.get_mut(&token) {
                    o.what = For::Mine(nonce, Some(rpc));
                }
            }
        }
    }

    pub(super) fn datagram_wake(&self) -> Option<Instant> {
        self.datagrams.as_ref().and_then(Datagrams::wake)
    }

    /// The `Ping` `rpc` was answered over its connection, or it was a
    /// relay's and the relay is settled.
    pub(super) fn datagram_settled(&mut self, rpc: OutboundRequestId) {
        if let Some(d) = self.datagrams.as_mut() {
            d.settled(rpc);
        }
    }

    pub(super) fn datagram_counts(&self) -> DatagramCounts {
        let super::probe::ProbeCounts {
            pings_answered,
            asked_others,
        } = self.probe_counts;
        DatagramCounts {
            pings_answered,
            asked_others,
            ..self
                .datagrams
                .as_ref()
                .map(Datagrams::counts)
                .unwrap_or_default()
        }
    }

    /// A datagram read from the probe socket.
    pub(super) fn on_datagram(&mut self, from: SocketAddr, bytes: Vec<u8>) {
        let used = match wire::decode::<Datagram>(&bytes, MAX_DATAGRAM_BYTES) {
            Ok(Datagram::Probe { from: peer, token }) => self.answer_datagram(from, &peer, token),
            Ok(Datagram::Ack { token, key, sig }) => self.take_ack(token, &key, &sig),
            Err(e) => {
                debug!(%from, error = %e, "probe datagram dropped");
                false
            }
        };
        if !used && let Some(d) = self.datagrams.as_mut() {
            d.counts.dropped += 1;
        }
    }

    /// What the probe socket's reader passed on.
    pub(super) fn on_datagram_read(&mut self, read: Read) {
        match read {
            Read::Datagram(from, bytes) => self.on_datagram(from, bytes),
            Read::Refused(to) => self.on_refused(to),
        }
    }

    /// A datagram to `to` was refused (ICMP port unreachable from that
    /// very host): each of this node's probes with datagrams out to that
    /// address fails at once, if its peer has no TCP connection and has
    /// answered a probe datagram sent to that address before. This node's
    /// own probe fails as one past its deadline does: its request stays
    /// pending and a late answer, either way, still counts; a relay for
    /// another member answers "unreachable". A refusal for a peer over
    /// TCP, or at an address never answered from (a firewall that rejects
    /// the probe port of a live peer refuses every datagram), changes
    /// nothing.
    fn on_refused(&mut self, to: SocketAddr) {
        let Some(d) = self.datagrams.as_mut() else {
            return;
        };
        let same = |a: &SocketAddr| {
            (a.ip().to_canonical(), a.port()) == (to.ip().to_canonical(), to.port())
        };
        // Nothing listens where a warm probe went: no use sending it again
        // (and nothing to count).
        for o in d.out.values_mut() {
            if matches!(o.what, For::Warm) && same(&o.addr) {
                o.refused = true;
            }
        }
        let links = &self.links;
        let answered_at = &d.answered_at;
        let failed: Vec<For> = d
            .out
            .values_mut()
            .filter(|o| !o.done && !o.refused && same(&o.addr))
            .filter(|o| !matches!(o.what, For::Warm))
            .filter(|o| !links.tcp(&o.to) && answered_at.get(&o.to).is_some_and(same))
            .map(|o| {
                o.refused = true;
                o.what
            })
            .collect();
        if failed.is_empty() {
            return;
        }
        d.counts.refused += 1;
        debug!(%to, probes = failed.len(), "probe refused: nothing listens at the peer's probe port");
        let now = Instant::now();
        for what in failed {
            match what {
                For::Mine(nonce, rpc) => {
                    // Settled over the connection already (an unanswered
                    // probe sent by datagram first has no `Ping` yet).
                    if rpc.is_some_and(|rpc| {
                        !matches!(self.probe_pending.get(&rpc), Some(Pending::Mine(n)) if *n == nonce)
                    }) {
                        continue;
                    }
                    self.probe_failed(nonce, now);
                }
                For::Relay(rpc) => {
                    self.probe_settled(rpc, false);
                }
                For::Warm => {}
            }
        }
    }

    /// A peer announced another probe port (it restarted): answers at the
    /// old one say nothing of the new one.
    pub(super) fn datagram_port_changed(&mut self, peer: &PeerId) {
        if let Some(d) = self.datagrams.as_mut() {
            d.answered_at.remove(peer);
            d.connection_only.remove(peer);
        }
    }

    /// A peer's probe: answered when it comes from a connected peer that
    /// may probe, from an IP address one of its connections comes from and
    /// the port its heartbeats announce, within the rates.
    fn answer_datagram(&mut self, from: SocketAddr, peer: &[u8], token: u64) -> bool {
        let Ok(peer) = PeerId::from_bytes(peer) else {
            return false;
        };
        let at = from.ip().to_canonical();
        let known = self.connected.contains_key(&peer)
            && self.probe_ports.get(&peer) == Some(&from.port())
            && self.links.ips(&peer).any(|ip| ip.to_canonical() == at);
        if !known || !self.allowed(&peer, crate::trust::Kind::Probe) {
            debug!(%peer, %from, "probe datagram not from a connected member at its address and port: dropped");
            return false;
        }
        let now = Instant::now();
        let Some(d) = self.datagrams.as_mut() else {
            return false;
        };
        if !d.may_answer(peer, now) {
            return false;
        }
        let Some(ack) = wire::probe_ack(&self.key, &self.cfg.cluster, token, &peer) else {
            return false;
        };
        d.send(from, &ack);
        d.counts.answered += 1;
        true
    }

    /// An answer to one of this node's probes: settles the probe as the
    /// `Pong` would, once its signature shows it is the probed peer's.
    fn take_ack(&mut self, token: u64, key: &[u8], sig: &[u8]) -> bool {
        let Some(d) = self.datagrams.as_mut() else {
            return false;
        };
        let Some(out) = d.out.get_mut(&token) else {
            debug!(token, "probe answer for no probe of this node: dropped");
            return false;
        };
        if !wire::probe_ack_valid(&self.cfg.cluster, token, &self.me, &out.to, key, sig) {
            debug!(token, peer = %out.to, "probe answer not signed by the peer probed: dropped");
            return false;
        }
        let (what, to, addr, first) = (out.what, out.to, out.addr, !out.done);
        out.done = true;
        // The peer listens there: a refusal from there later means it is gone.
        if d.answered_at.len() >= MAX_ANSWERED_AT && !d.answered_at.contains_key(&to) {
            d.answered_at.clear();
            d.connection_only.clear();
        }
        d.answered_at.insert(to, addr);
        d.connection_only.remove(&to);
        if !first {
            // A resend's answer, or one after the `Pong`: nothing new.
            return true;
        }
        d.counts.acked += 1;
        match what {
            For::Mine(nonce, rpc) => {
                // The Ping's own answer, when it comes, is stray now.
                if let Some(rpc) = rpc
                    && matches!(self.probe_pending.get(&rpc), Some(Pending::Mine(n)) if *n == nonce)
                {
                    self.probe_pending.remove(&rpc);
                }
                let alive = self.prober.answered(nonce, Instant::now());
                self.run_probes(alive.into_iter().collect());
            }
            For::Relay(rpc) => {
                self.probe_settled(rpc, true);
            }
            For::Warm => {}
        }
        true
    }
}

/// The kernel's reports of refused datagrams (Linux: `IP_RECVERR` and the
/// socket's error queue); elsewhere none are read.
#[cfg(target_os = "linux")]
mod refusals {
    use std::io::{self, IoSliceMut};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
    };
    use tokio::io::Interest;
    use tokio::net::UdpSocket;

    /// Asks the kernel to queue ICMP errors for this socket's datagrams
    /// (for IPv4-mapped peers too, on an IPv6 socket).
    pub fn listen(socket: &UdpSocket, v6: bool) -> io::Result<()> {
        if v6 {
            setsockopt(socket, sockopt::Ipv6RecvErr, &true)?;
        }
        setsockopt(socket, sockopt::Ipv4RecvErr, &true)?;
        Ok(())
    }

    /// Whether `recv_from`'s error is the socket's pending ICMP error,
    /// which the error queue tells in full.
    pub fn reported(e: &io::Error) -> bool {
        use io::ErrorKind::*;
        matches!(
            e.kind(),
            ConnectionRefused | HostUnreachable | NetworkUnreachable
        )
    }

    /// What the reader waits for: datagrams, and reports in the error queue.
    pub const INTEREST: Interest = Interest::READABLE.add(Interest::ERROR);

    /// Reads the error queue to its end (which clears the socket's error
    /// readiness): the addresses of datagrams refused (port unreachable);
    /// other errors (a host or network unreachable: no sign of a dead
    /// process) are passed over. Also whether a read failed otherwise.
    pub fn drain(socket: &UdpSocket) -> (Vec<SocketAddr>, bool) {
        let mut refused = Vec::new();
        // Bounded: what is left keeps the socket ready for the next round.
        for _ in 0..64 {
            match socket.try_io(Interest::ERROR, || read_one(socket)) {
                Ok(Some(to)) => refused.push(to),
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return (refused, true),
            }
        }
        (refused, false)
    }

    fn read_one(socket: &UdpSocket) -> io::Result<Option<SocketAddr>> {
        let mut data = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut data)];
        let mut control = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
        let msg = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        )?;
        let to = msg.address.as_ref().and_then(address);
        // Port unreachable (ICMP type 3 code 3, ICMPv6 type 1 code 4), sent
        // by the host the datagram went to, not by a router or firewall on
        // the way.
        let refused_by = msg.cmsgs()?.find_map(|c| {
            let (e, from) = match c {
                ControlMessageOwned::Ipv4RecvErr(e, from) => (
                    e,
                    from.map(|a| IpAddr::from(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)))),
                ),
                ControlMessageOwned::Ipv6RecvErr(e, from) => (
                    e,
                    from.map(|a| IpAddr::from(Ipv6Addr::from(a.sin6_addr.s6_addr))),
                ),
                _ => return None,
            };
            let port_unreachable = (e.ee_origin == libc::SO_EE_ORIGIN_ICMP
                && e.ee_type == 3
                && e.ee_code == 3)
                || (e.ee_origin == libc::SO_EE_ORIGIN_ICMP6 && e.ee_type == 1 && e.ee_code == 4);
            (e.ee_errno == libc::ECONNREFUSED as u32 && port_unreachable).then_some(from)?
        });
        Ok(
            to.filter(|to| {
                refused_by.is_some_and(|ip| ip.to_canonical() == to.ip().to_canonical())
            }),
        )
    }

    fn address(a: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = a.as_sockaddr_in() {
            return Some(SocketAddr::from((v4.ip(), v4.port())));
        }
        a.as_sockaddr_in6()
            .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
    }
}

#[cfg(not(target_os = "linux"))]
mod refusals {
    use std::io;
    use std::net::SocketAddr;

    use tokio::net::UdpSocket;

    pub fn listen(_: &UdpSocket, _: bool) -> io::Result<()> {
        Ok(())
    }

    pub fn reported(_: &io::Error) -> bool {
        false
    }

    pub const INTEREST: tokio::io::Interest = tokio::io::Interest::READABLE;

    pub fn drain(_: &UdpSocket) -> (Vec<SocketAddr>, bool) {
        (Vec::new(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram to a loopback port nothing listens on comes back as a
    /// refusal naming that address (the kernel's ICMP port unreachable,
    /// read from the socket's error queue), and the socket goes on
    /// receiving datagrams after it.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_datagram_to_a_closed_port_is_reported_refused() {
        let lo: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        let mut d = Some(
            Datagrams::bind(&[lo], 0, Duration::from_millis(50))
                .await
                .unwrap(),
        );
        // A port that was just free: bound, then closed.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let probe = Datagram::Probe {
            from: PeerId::random().to_bytes(),
            token: 7,
        };
        // The first send from a fresh socket goes (`bind` waited until the
        // runtime saw it writable).
        d.as_mut().unwrap().send(closed, &probe);
        assert_eq!(d.as_ref().unwrap().counts().sent, 1);
        let within = Duration::from_secs(10);
        let read = tokio::time::timeout(within, next(&mut d)).await;
        assert_eq!(
            read.expect("no refusal within 10 s"),
            Some(Read::Refused(closed))
        );
        // Still reading datagrams.
        let me = SocketAddr::from(([127, 0, 0, 1], d.as_ref().unwrap().port()));
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"hello", me).unwrap();
        let read = tokio::time::timeout(within, next(&mut d)).await;
        let from = peer.local_addr().unwrap();
        assert_eq!(
            read.expect("no datagram within 10 s"),
            Some(Read::Datagram(from, b"hello".to_vec()))
        );
    }

    /// A probe sent by datagram first asks for a tick at its `ping_at`, is
    /// told due then exactly once, and never once answered or refused (the
    /// refusal failed it: the peer's process is gone).
    #[tokio::test]
    async fn a_probe_sent_by_datagram_first_is_due_over_the_connection_once_unless_answered() {
        let lo: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        let resend = Duration::from_millis(50);
        let mut d = Datagrams::bind(&[lo], 0, resend).await.unwrap();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let to = PeerId::random();
        // Nothing listens there; the sends are beside the point.
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let out = |what, ping_at: Option<Instant>| Out {
            to,
            addr,
            what,
            when: Schedule {
                next: t0 + resend,
                until: t0 + ms(600),
            },
            ping_at,
            first: ping_at.is_some(),
            done: false,
            refused: false,
        };
        for (token, nonce) in [(1, 7), (2, 8), (4, 9)] {
            d.out
                .insert(token, out(For::Mine(nonce, None), Some(t0 + ms(100))));
        }
        d.out.insert(3, out(For::Warm, None));
        assert_eq!(d.wake(), Some(t0 + resend), "the resends come first");
        for token in [1, 3, 4] {
            d.out.get_mut(&token).unwrap().refused = token != 1;
        }
        d.out.get_mut(&2).unwrap().done = true;
        assert!(d.pings_due(t0 + ms(99)).is_empty(), "not before");
        let due = d.pings_due(t0 + ms(100));
        assert_eq!(
            due,
            vec![(1, to, 7)],
            "not the answered one, nor the refused"
        );
        assert!(d.pings_due(t0 + ms(500)).is_empty(), "once");
        d.out.get_mut(&1).unwrap().done = true;
        assert_eq!(d.wake(), None, "nothing left to do");
    }

    /// A peer whose probes sent by datagram first are answered over the
    /// connection only, three times in a row, no longer counts as answering
    /// datagrams (its probes go both ways at once again); one answer by
    /// datagram in between starts the count again.
    #[tokio::test]
    async fn a_peer_that_stops_answering_datagrams_is_probed_both_ways_again() {
        let lo: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
        let mut d = Datagrams::bind(&[lo], 0, Duration::from_millis(50))
            .await
            .unwrap();
        let peer = PeerId::random();
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        d.answered_at.insert(peer, addr);
        d.connection_answered(peer);
        d.connection_answered(peer);
        // A datagram answer (as `take_ack` records it) starts again.
        d.connection_only.remove(&peer);
        d.connection_answered(peer);
        d.connection_answered(peer);
        assert_eq!(d.answered_at.get(&peer), Some(&addr), "two in a row");
        d.connection_answered(peer);
        assert_eq!(d.answered_at.get(&peer), None, "three in a row");
        assert!(d.connection_only.is_empty());
    }

    /// A loop that sleeps until `wake` and then ticks never gets an instant
    /// it has handled again (it spun for 10 s when the last resend fell
    /// just before the deadline and the tick came after it), sends every
    /// `resend` until `until` and not after, and then needs no more ticks;
    /// whatever lateness the ticks come with.
    #[test]
    fn a_schedule_never_asks_twice_for_one_instant_and_ends() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        for within in [0, 1, 49, 50, 51, 99, 100, 300, 1000] {
            for resend in [10, 50, 60] {
                for late in [0, 1, 5, 49, 50, 200] {
                    let mut s = Schedule::new(t0, ms(resend), ms(within));
                    let (mut sent, mut ticks, mut last) = (0, 0, t0);
                    while let Some(at) = s.wake() {
                        let now = at + ms(late);
                        assert!(at > last || ticks == 0, "asked again for {at:?}");
                        if s.tick(now, ms(resend)) {
                            assert!(now < t0 + ms(within), "sent past the end");
                            sent += 1;
                        }
                        last = now;
                        ticks += 1;
                        assert!(ticks < 1000, "no end: {within} {resend} {late}");
                    }
                    if late == 0 {
                        // One send at t0 (by the caller), then every resend.
                        let expect = within.saturating_sub(1) / resend;
                        assert_eq!(sent, expect, "{within} {resend}");
                    }
                    // A tick at any later time does nothing.
                    assert!(!s.tick(t0 + ms(5000), ms(resend)));
                }
            }
        }
    }
}
