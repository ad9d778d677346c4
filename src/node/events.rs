//! Turning swarm events into election inputs, address-book updates and dials.

use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::request_response::{self, Message};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{PeerId, identify, kad, mdns, ping};
use tracing::{debug, error, info, warn};

use super::behaviour::BehaviourEvent;
use super::datagram::ip_of;
use super::peers::is_quic;
use super::{Node, links};
use crate::election::Input;
use crate::trust::Kind;
use crate::wire::{self, Gossip, HolderRequest, PinsetRequest, Request, Response};

impl Node {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        use libp2p::metrics::Recorder;
        self.p2p_metrics.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(address = %format!("{address}/p2p/{}", self.me), "listening");
            }
            SwarmEvent::ListenerClosed {
                addresses,
                reason: Err(error),
                ..
            } => {
                error!(?addresses, %error, "listener failed");
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => {
                let link = links::Link {
                    id: connection_id,
                    dialer: endpoint.is_dialer(),
                    quic: is_quic(endpoint.get_remote_address()),
                    since: std::time::Instant::now(),
                    ip: ip_of(endpoint.get_remote_address()),
                };
                self.links.opened(peer_id, link);
                self.confirming.remove(&peer_id);
                self.rechecking.remove(&peer_id);
                if endpoint.is_dialer() {
                    let bootstrap = self
                        .bootstrap_dialled
                        .iter()
                        .find(|(_, (_, id))| *id == connection_id)
                        .map(|(addr, _)| addr.clone());
                    if let Some(addr) = bootstrap {
                        self.bootstrap_dialled.remove(&addr);
                        self.bootstrap_peers.insert(addr, peer_id);
                    }
                    self.learn_addrs(peer_id, [endpoint.get_remote_address().clone()]);
                }
                if num_established.get() == 1 {
                    self.connected.insert(peer_id, peer_id.to_base58());
                }
                if num_established.get() == 1
                    && !self.gate.connected(peer_id, std::time::Instant::now())
                {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                if num_established.get() == 1 && !self.foreign.contains(&peer_id) {
                    debug!(peer = %peer_id, "connected");
                    self.input(Input::Connected(peer_id.to_base58()));
                    self.send_hello(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                endpoint,
                ..
            } => {
                // A second connection closed under the rule of [`links`] is
                // no sign of a stale one: nothing to check.
                let by_rule = self.links.closed(&self.me, peer_id, connection_id);
                if num_established > 0 {
                    if !by_rule && !is_quic(endpoint.get_remote_address()) {
                        self.recheck(peer_id);
                    }
                    return;
                }
                debug!(peer = %peer_id, cause = ?cause, "disconnected");
                self.connected.remove(&peer_id);
                if is_quic(endpoint.get_remote_address()) {
                    self.lost_over_quic.insert(peer_id);
                } else {
                    self.lost_over_quic.remove(&peer_id);
                }
                self.gate.disconnected(&peer_id);
                self.input(Input::ConnectionLost(peer_id.to_base58()));
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                if matches!(
                    error,
                    DialError::DialPeerConditionFalse(_) | DialError::LocalPeerId { .. }
                ) {
                    return;
                }
                if let DialError::WrongPeerId { obtained, .. } = &error {
                    debug!(expected = %peer, %obtained, "a different node answers at that address");
                }
                if self.recheck_failed(peer, &error) {
                    return;
                }
                if !self.swarm.is_connected(&peer) && self.confirm_failed(peer, &error) {
                    debug!(%peer, error = %error, "dial failed");
                    self.input(Input::Unreachable(peer.to_base58()));
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => self.on_handshake_failure(send_back_addr.to_string(), error_chain(&error)),
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        use libp2p::metrics::Recorder;
        match &event {
            BehaviourEvent::Identify(e) => self.p2p_metrics.record(e),
            BehaviourEvent::Kad(e) => self.p2p_metrics.record(e),
            BehaviourEvent::Ping(e) => self.p2p_metrics.record(e),
            BehaviourEvent::Gossipsub(e) => self.p2p_metrics.record(e),
            _ => {}
        }
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocol_version != self.protocols.identify {
                    debug!(peer = %peer_id, protocol = %info.protocol_version, "not a member of this cluster");
                    self.mark_foreign(peer_id);
                    return;
                }
                // In a secured cluster a peer's addresses are kept (and
                // given to Kademlia and to other members) only once it is a
                // member; until then they wait for its certificate.
                if self.gate.is_secured() && self.gate.member(&peer_id).is_none() {
                    self.stash_addrs(peer_id, info.listen_addrs);
                    return;
                }
                self.learn_member_addrs(peer_id, info.listen_addrs);
            }
            // A peer that does not speak ping at all (not a node of this
            // kind) is the gate's to judge, through its Hello: closing here
            // raced its Hello's answer and could drop it.
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Err(ping::Failure::Unsupported),
                ..
            }) => {
                debug!(%peer, "the peer does not answer pings (no ping protocol)");
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(error),
                ..
            }) => {
                warn!(%peer, %error, "ping failed; closing the connection");
                self.swarm.close_connection(connection);
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, addresses, ..
            }) => {
                if self.gate.is_secured() && self.gate.member(&peer).is_none() {
                    return;
                }
                self.learn_addrs(peer, addresses.into_vec());
                if !self.swarm.is_connected(&peer) {
                    self.dial(peer);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    debug!(%peer, %addr, "discovered by mDNS");
                    self.learn_addrs(peer, [addr]);
                    if !self.swarm.is_connected(&peer) {
                        self.dial(peer);
                    }
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let verdict = self.on_gossip(message);
                let gs = &mut self.swarm.behaviour_mut().gossipsub;
                gs.report_message_validation_result(&message_id, &propagation_source, verdict);
            }
            BehaviourEvent::Rpc(request_response::Event::Message { peer, message, .. }) => {
                self.on_rpc(peer, message);
            }
            BehaviourEvent::Rpc(request_response::Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            }) => {
                self.leaving.remove(&request_id);
                if !self.probe_settled(request_id, false) {
                    self.on_rpc_failure(request_id, error.to_string());
                }
                debug!(%peer, error = %error, "request failed");
            }
            BehaviourEvent::Rpc(request_response::Event::InboundFailure {
                peer, error, ..
            }) => {
                debug!(%peer, error = %error, "inbound request failed");
            }
            _ => {}
        }
    }

    /// Whether an unknown, unconnected peer's gossiped heartbeat follows an
    /// earlier one of the same incarnation by at least half a heartbeat
    /// interval (then it is live, not a replay); remembers the first.
    fn heard_again(&mut self, peer: PeerId, incarnation: u64, seq: u64) -> bool {
        let now = std::time::Instant::now();
        let half = self.cfg.heartbeat_interval / 2;
        match self.gossip_only.get(&peer) {
            Some(&(inc, s, at))
                if inc == incarnation && seq > s && now.saturating_duration_since(at) >= half =>
            {
                self.gossip_only.remove(&peer);
                true
            }
            Some(&(inc, s, _)) if (inc, s) >= (incarnation, seq) => false,
            Some(_) => {
                // A newer incarnation, or too soon: start counting from it.
                self.gossip_only.insert(peer, (incarnation, seq, now));
                false
            }
            None => {
                if self.gossip_only.len() < self.cfg.network.max_peers {
                    self.gossip_only.insert(peer, (incarnation, seq, now));
                }
                false
            }
        }
    }

    /// Checks and applies one gossip message; the verdict decides whether gossipsub forwards it.
    fn on_gossip(&mut self, message: gossipsub::Message) -> MessageAcceptance {
        let Some(signer) = message.source else {
            return MessageAcceptance::Reject;
        };
        if message.topic != self.topic.hash() {
            return MessageAcceptance::Ignore;
        }
        match wire::decode_gossip(&message.data, &signer) {
            // Not from a member (or a role above its certificate): not
            // taken, not passed on, and not held against the peer that
            // passed it (it may be an honest member relaying).
            Ok(Gossip::Heartbeat(hb)) if !self.allowed(&signer, Kind::Heartbeat(hb.role)) => {
                MessageAcceptance::Ignore
            }
            Ok(Gossip::Leaving { .. }) if !self.allowed(&signer, Kind::Leaving) => {
                MessageAcceptance::Ignore
            }
            // A peer first heard of through gossip, with no connection to
            // it: the heartbeat may be an old one a fresh node pulls from
            // its neighbours' message caches (a node SIGKILLed seconds ago
            // would look live, and its stale claim would make a returning
            // master take its term twice). It counts once a connection
            // brings its current heartbeat in the hello, or once a newer
            // heartbeat of it arrives at least half a heartbeat interval
            // after the first (cache replays come together; a peer reachable
            // only through relays still gets in).
            Ok(Gossip::Heartbeat(hb))
                if self.election.peer(&self.id_text(&signer)).is_none()
                    && !self.swarm.is_connected(&signer)
                    && !self.heard_again(signer, hb.incarnation, hb.seq) =>
            {
                debug!(peer = %signer, "heartbeat of an unknown, unconnected peer: dialling it for its hello");
                // A quiet follower's next heartbeat may be minutes away.
                self.dial(signer);
                MessageAcceptance::Accept
            }
            Ok(Gossip::Heartbeat(hb)) => {
                self.on_heartbeat(signer, hb);
                MessageAcceptance::Accept
            }
            Ok(Gossip::Leaving { incarnation }) => {
                info!(peer = %signer, "peer is leaving");
                self.input(Input::Left {
                    from: signer.to_base58(),
                    incarnation,
                });
                MessageAcceptance::Accept
            }
            Err(e) => {
                warn!(peer = %signer, error = %e, "rejected gossip message");
                MessageAcceptance::Reject
            }
        }
    }

    fn on_rpc(&mut self, peer: PeerId, message: Message<Request, Response>) {
        match message {
            Message::Request {
                request, channel, ..
            } if !self.may_ask(&peer, &request) => {
                let reason = format!(
                    "this node does not take that from {peer}: not a certified member, or \
                     its certificate's role does not allow it"
                );
                let rpc = &mut self.swarm.behaviour_mut().rpc;
                let _ = rpc.send_response(channel, Response::Denied { reason });
            }
            Message::Request {
                request: Request::Pinset(req),
                channel,
                ..
            } => self.on_pinset_request(peer, req, channel),
            Message::Request {
                request: Request::Holder(req),
                channel,
                ..
            } => self.on_holder_request(peer, req, channel),
            Message::Request {
                request: request @ (Request::Ping | Request::ProbeFor { .. }),
                channel,
                ..
            } => self.on_probe_request(peer, request, channel),
            Message::Request {
                request, channel, ..
            } => {
                let response = match request {
                    Request::Pinset(_)
                    | Request::Holder(_)
                    | Request::Ping
                    | Request::ProbeFor { .. } => unreachable!("matched above"),
                    Request::Hello(hello) => self.on_hello(peer, hello),
                    Request::Members(list) => self.on_members_request(peer, &list),
                    Request::Update(hb) => {
                        self.on_heartbeat(peer, hb);
                        Response::Ack
                    }
                    Request::Revocations(list) => match self.take_revocations(&list, Some(peer)) {
                        Ok(_) => Response::Ack,
                        Err(reason) => Response::Denied { reason },
                    },
                    Request::Leaving { incarnation } => {
                        info!(%peer, "peer is leaving");
                        self.input(Input::Left {
                            from: peer.to_base58(),
                            incarnation,
                        });
                        Response::Ack
                    }
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_response(channel, response);
            }
            // An answer to a probe: any answer of the peer probed shows it
            // alive; `Probed` is a helper's verdict; a refusal (busy, or not
            // yet admitted) gives no evidence either way, so it counts for
            // the peer: a probe must never depose anyone on no evidence.
            Message::Response {
                request_id,
                response,
            } if self.probe_pending.contains_key(&request_id) => match response {
                Response::Probed { reachable } => self.on_probed(request_id, reachable),
                _ => {
                    self.probe_settled(request_id, true);
                }
            },
            Message::Response {
                request_id,
                response,
            } => match response {
                Response::Hello {
                    heartbeat,
                    peers,
                    cert,
                    revocations,
                } => {
                    if let Err(e) = wire::check_signed(&cert, &revocations) {
                        warn!(%peer, error = %e, "Hello answer dropped");
                        return;
                    }
                    if self
                        .on_credentials(peer, cert.as_deref(), revocations.as_deref())
                        .is_err()
                    {
                        return;
                    }
                    self.on_heartbeat(peer, *heartbeat);
                    self.take_members(peer, &peers);
                }
                Response::Ack => {
                    self.leaving.remove(&request_id);
                }
                Response::Members(list) => {
                    if self.allowed(&peer, Kind::Members) {
                        self.take_members(peer, &list);
                    }
                }
                // (Probe answers are taken above; these are stray.)
                Response::Pong | Response::Probed { .. } => {}
                Response::Denied { reason } => {
                    self.leaving.remove(&request_id);
                    let reason: String = reason.chars().take(wire::MAX_REASON).collect();
                    if self.once_a_minute(format!("denied by {peer}")) {
                        warn!(%peer, "the peer refused this node: {reason}");
                    }
                    self.on_rpc_failure(request_id, format!("refused: {reason}"));
                }
                resp @ (Response::Pinset(_) | Response::Holder(_)) => {
                    let kind = match resp {
                        Response::Pinset(_) => Kind::PinsetAnswer,
                        _ => Kind::HolderAnswer,
                    };
                    if self.allowed(&peer, kind) {
                        self.on_rpc_response(request_id, resp)
                    } else {
                        let e = "the answer is not from a certified master or worker";
                        self.on_rpc_failure(request_id, e.into());
                    }
                }
            },
        }
    }

    /// Whether a peer's request passes the gate (`Hello` always does: it
    /// carries the certificate; heartbeats are checked where they are taken).
    fn may_ask(&mut self, peer: &PeerId, request: &Request) -> bool {
        let kind = match request {
            Request::Hello(_) | Request::Update(_) => return true,
            Request::Leaving { .. } => Kind::Leaving,
            Request::Revocations(_) => Kind::Revocations,
            Request::Ping | Request::ProbeFor { .. } => Kind::Probe,
            Request::Members(_) => Kind::Members,
            Request::Pinset(PinsetRequest::Push { .. }) => Kind::PinsetPush,
            Request::Pinset(PinsetRequest::Pull { .. }) => Kind::PinsetPull,
            Request::Holder(HolderRequest::Statuses { .. }) => Kind::HolderStatus,
            Request::Holder(_) => Kind::HolderOrders,
        };
        self.allowed(peer, kind)
    }

    /// A peer's `Hello`: its certificate first, then its heartbeat.
    fn on_hello(&mut self, peer: PeerId, hello: wire::Hello) -> Response {
        if let Err(e) = hello.check() {
            warn!(%peer, error = %e, "Hello refused");
            return Response::Denied {
                reason: e.to_string(),
            };
        }
        if let Err(reason) =
            self.on_credentials(peer, hello.cert.as_deref(), hello.revocations.as_deref())
        {
            return Response::Denied { reason };
        }
        // The member list goes to a greeter that needs it from this node:
        // one that follows no leader yet or another one, or this node's
        // own follower. A fellow follower gets the list from the leader
        // (in its greeting, or pulled when the leader's member digest
        // differs from its view); a joiner greets every member, and 100
        // lists of 100 members each cost a cluster that starts together
        // more than the lists it needs.
        let ours = self.election.leader().map(|(l, _)| l.clone());
        let same_leader = match (&hello.heartbeat.follows, &ours) {
            (Some((theirs, _)), Some(l)) => PeerId::from_bytes(theirs)
                .is_ok_and(|p| p.to_base58() == *l && *l != *self.election.me()),
            _ => false,
        };
        self.on_heartbeat(peer, hello.heartbeat);
        let (cert, revocations) = self.gate.credentials();
        Response::Hello {
            heartbeat: Box::new(self.heartbeat()),
            peers: if same_leader {
                Vec::new()
            } else {
                self.member_list()
            },
            cert,
            revocations,
        }
    }

    /// A connection that failed before it was a connection. With a swarm
    /// key, that is nearly always a peer without it (or with another).
    fn on_handshake_failure(&mut self, from: String, error: String) {
        let Some(fingerprint) = self.swarm_key.clone() else {
            debug!(%from, %error, "incoming connection failed");
            return;
        };
        let host: String = from
            .parse::<libp2p::Multiaddr>()
            .ok()
            .and_then(|a| a.iter().next().map(|p| p.to_string()))
            .unwrap_or(from.clone());
        if !self.once_a_minute(host) {
            return;
        }
        warn!(
            %from,
            our_key = %fingerprint,
            "connection refused: the peer does not have this cluster's swarm key \
             (wrong or missing swarm key, or not an ipfs-kit-p2p node; handshake error: {error})"
        );
    }
}

/// An error with its causes, outermost first: libp2p's connection errors
/// say only "Failed to negotiate transport protocol(s)" at the top.
/// An error and its causes, `: `-separated; a level that says nothing
/// (libp2p's `TransportError::Other` prints as empty) is left out.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut cause = Some(error);
    while let Some(e) = cause {
        let text = e.to_string();
        if !text.is_empty() && parts.last() != Some(&text) {
            parts.push(text);
        }
        cause = e.source();
    }
    parts.join(": ")
}
