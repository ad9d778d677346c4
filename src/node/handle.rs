//! The cloneable handle other tasks use to reach the node's event loop, and
//! the transports the pinset tasks send their requests through.

use std::time::Duration;

use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use crate::status::StatusView;
use crate::wire::{self, Request};

pub(super) enum Command {
    /// The status; with the list of peers, or only their counts (a list
    /// of hundreds of peers is most of the work and of the answer).
    Status {
        peers: bool,
        reply: oneshot::Sender<StatusView>,
    },
    /// Each holder's state for each item, from the leader.
    PinPeers {
        cids: Vec<String>,
        reply: oneshot::Sender<Result<crate::pinset::keeper::Statuses, String>>,
    },
    /// A request to a peer on behalf of a task (pinset, keeper).
    Send {
        peer: PeerId,
        req: Box<Request>,
        reply: oneshot::Sender<Result<wire::Response, String>>,
    },
    /// A task's answer to a peer's request.
    Respond {
        channel: libp2p::request_response::ResponseChannel<wire::Response>,
        resp: wire::Response,
    },
    /// A revocation list from the API.
    Revocations {
        list: Vec<u8>,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// A cloneable handle to the node's event loop.
#[derive(Clone)]
pub struct NodeHandle {
    pub(super) tx: mpsc::Sender<Command>,
}

impl NodeHandle {
    /// The node's current status; `None` if the loop does not answer within 2 s.
    pub async fn status(&self) -> Option<StatusView> {
        self.status_with(true).await
    }

    /// The status without the list of peers (`peers` empty, `peer_counts`
    /// filled): what a frequent poll needs, at a cost that does not grow
    /// with the cluster.
    pub async fn status_brief(&self) -> Option<StatusView> {
        self.status_with(false).await
    }

    async fn status_with(&self, peers: bool) -> Option<StatusView> {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Status { peers, reply: tx };
        self.tx
            .send_timeout(cmd, Duration::from_secs(2))
            .await
            .ok()?;
        tokio::time::timeout(Duration::from_secs(2), rx)
            .await
            .ok()?
            .ok()
    }
}

impl NodeHandle {
    /// Each holder's state for `cid`, as the leader knows it.
    pub async fn pin_peers(&self, cid: &str) -> Result<Vec<(String, wire::HeldState)>, String> {
        let mut items = self.pin_statuses(vec![cid.to_owned()]).await?;
        items
            .pop()
            .ok_or_else(|| "the leader answered nothing".to_string())
    }

    /// Each holder's state for each of `cids` (at most
    /// [`wire::MAX_STATUS_CIDS`]), from the leader, in the order asked.
    pub async fn pin_statuses(
        &self,
        cids: Vec<String>,
    ) -> Result<crate::pinset::keeper::Statuses, String> {
        let n = cids.len();
        let late = "the keeper did not answer in 10 s";
        let items = self
            .ask(|reply| Command::PinPeers { cids, reply }, late)
            .await??;
        if items.len() != n {
            return Err(format!("the leader answered {} of {n} items", items.len()));
        }
        Ok(items)
    }

    /// Gives the node a revocation list (it spreads it if it is newer).
    /// `Ok(Err(why))`: the node refused the list; `Err`: it did not answer.
    pub async fn revocations(&self, list: Vec<u8>) -> Result<Result<String, String>, String> {
        let late = "the node did not answer in 10 s";
        self.ask(|reply| Command::Revocations { list, reply }, late)
            .await
    }

    /// Sends `req` to `peer` over request-response and waits for the answer.
    async fn rpc(&self, peer: &str, req: Request) -> Result<wire::Response, String> {
        let peer: PeerId = peer.parse().map_err(|e| format!("peer {peer}: {e}"))?;
        let req = Box::new(req);
        // The request-response timeout (5 s) answers first; this is a backstop.
        self.ask(|reply| Command::Send { peer, req, reply }, "no answer")
            .await?
    }

    /// Hands the loop a command with a reply channel (waiting at most 2 s
    /// for room) and waits at most 10 s for the reply; `late` says what
    /// did not answer.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
        late: &str,
    ) -> Result<T, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send_timeout(command(reply), Duration::from_secs(2))
            .await
            .map_err(|_| "node loop busy or stopped".to_string())?;
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .map_err(|_| late.to_string())?
            .map_err(|_| "node loop stopped".to_string())
    }
}

impl crate::pinset::actor::Transport for NodeHandle {
    async fn request(
        &self,
        peer: &str,
        req: wire::PinsetRequest,
    ) -> Result<wire::PinsetResponse, String> {
        match self.rpc(peer, Request::Pinset(req)).await? {
            wire::Response::Pinset(r) => r.check().map(|()| r).map_err(|e| e.to_string()),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}

impl crate::pinset::keeper::HolderTransport for NodeHandle {
    async fn holder_request(
        &self,
        peer: &str,
        req: wire::HolderRequest,
    ) -> Result<wire::HolderResponse, String> {
        match self.rpc(peer, Request::Holder(req)).await? {
            wire::Response::Holder(r) => r.check().map(|()| r).map_err(|e| e.to_string()),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}
