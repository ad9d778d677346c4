//! Turning swarm events into election inputs, address-book updates and dials.

use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::request_response::{self, Message};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{PeerId, identify, kad, mdns, ping};
use tracing::{debug, error, info, warn};

use super::Node;
use super::behaviour::BehaviourEvent;
use crate::election::Input;
use crate::wire::{self, Gossip, Request, Response};

impl Node {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
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
                num_established,
                endpoint,
                ..
            } => {
                if endpoint.is_dialer() {
                    self.learn_addrs(peer_id, [endpoint.get_remote_address().clone()]);
                }
                if num_established.get() == 1 && !self.foreign.contains(&peer_id) {
                    debug!(peer = %peer_id, "connected");
                    self.input(Input::Connected(peer_id.to_base58()));
                    let hello = Request::Hello(self.heartbeat());
                    self.swarm.behaviour_mut().rpc.send_request(&peer_id, hello);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                debug!(peer = %peer_id, cause = ?cause, "disconnected");
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
                if !self.swarm.is_connected(&peer) {
                    debug!(%peer, error = %error, "dial failed");
                    self.input(Input::Unreachable(peer.to_base58()));
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocol_version != self.protocols.identify {
                    debug!(peer = %peer_id, protocol = %info.protocol_version, "not a member of this cluster");
                    self.mark_foreign(peer_id);
                    return;
                }
                for addr in &info.listen_addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                }
                self.learn_addrs(peer_id, info.listen_addrs);
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
                self.on_rpc_failure(request_id, error.to_string());
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

    /// Checks and applies one gossip message; the verdict decides whether gossipsub forwards it.
    fn on_gossip(&mut self, message: gossipsub::Message) -> MessageAcceptance {
        let Some(signer) = message.source else {
            return MessageAcceptance::Reject;
        };
        if message.topic != self.topic.hash() {
            return MessageAcceptance::Ignore;
        }
        match wire::decode_gossip(&message.data, &signer) {
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
                request, channel, ..
            } => {
                let response = match request {
                    Request::Pinset(_) | Request::Holder(_) => unreachable!("matched above"),
                    Request::Hello(hb) => {
                        self.on_heartbeat(peer, hb);
                        Response::Hello {
                            heartbeat: Box::new(self.heartbeat()),
                            peers: self.shared_peers(),
                        }
                    }
                    Request::Update(hb) => {
                        self.on_heartbeat(peer, hb);
                        Response::Ack
                    }
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
            Message::Response {
                request_id,
                response,
            } => match response {
                Response::Hello { heartbeat, peers } => {
                    self.on_heartbeat(peer, *heartbeat);
                    for shared in peers.iter().take(wire::MAX_SHARED_PEERS) {
                        if let Some((p, addrs)) = shared.parse() {
                            self.learn_addrs(p, addrs);
                            if !self.swarm.is_connected(&p) {
                                self.dial(p);
                            }
                        }
                    }
                }
                Response::Ack => {
                    self.leaving.remove(&request_id);
                }
                resp @ (Response::Pinset(_) | Response::Holder(_)) => {
                    self.on_rpc_response(request_id, resp)
                }
            },
        }
    }
}
