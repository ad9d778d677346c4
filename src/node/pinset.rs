//! The node's side of the pinset: what the pinset task knows of the
//! cluster, and carrying its requests and answers over request-response.

use std::time::Instant;

use libp2p::PeerId;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use tracing::debug;

use super::{Command, Node};
use crate::pinset::actor::ClusterView;
use crate::wire::{PinsetRequest, PinsetResponse, Response};

impl Node {
    /// Publishes the leader and the live peers to the pinset task (only
    /// when they change).
    pub(super) fn publish_view(&mut self) {
        let now = Instant::now();
        let view = ClusterView {
            me: self.election.me().clone(),
            role: Some(self.cfg.role),
            leader: self.election.leader().map(|(l, e)| (l.clone(), *e)),
            peers: self
                .election
                .peers()
                .filter(|(id, _)| self.election.is_live(id, now))
                .map(|(id, p)| (id.clone(), p.role))
                .collect(),
        };
        self.view.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
    }

    /// A peer's pinset request: checked here, answered by the pinset task.
    pub(super) fn on_pinset_request(
        &mut self,
        peer: PeerId,
        req: PinsetRequest,
        channel: ResponseChannel<Response>,
    ) {
        let refuse = |reason: String| PinsetResponse::Refused { reason };
        if let Err(e) = req.check() {
            debug!(%peer, error = %e, "pinset request refused");
            let _ = self
                .swarm
                .behaviour_mut()
                .rpc
                .send_response(channel, Response::Pinset(refuse(e.to_string())));
            return;
        }
        let Some(answer) = self.pins.inbound(req) else {
            let _ = self
                .swarm
                .behaviour_mut()
                .rpc
                .send_response(channel, Response::Pinset(refuse("busy".into())));
            return;
        };
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let resp = answer
                .await
                .unwrap_or_else(|_| refuse("pinset task stopped".into()));
            let _ = handle
                .tx
                .send(Command::RespondPinset { channel, resp })
                .await;
        });
    }

    pub(super) fn on_pinset_response(&mut self, id: OutboundRequestId, resp: PinsetResponse) {
        if let Some(reply) = self.pinset_pending.remove(&id) {
            let _ = reply.send(Ok(resp));
        }
    }

    pub(super) fn on_pinset_failure(&mut self, id: OutboundRequestId, error: String) {
        if let Some(reply) = self.pinset_pending.remove(&id) {
            let _ = reply.send(Err(error));
        }
    }
}
