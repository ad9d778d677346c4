//! The node's side of the pinset: what the pinset task knows of the
//! cluster, and carrying its requests and answers over request-response.

use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use tokio::sync::oneshot;
use tracing::debug;

use super::{Command, Node};
use crate::election::Liveness;
use crate::pinset::keeper::HolderTransport;
use crate::view::{ClusterView, DISK_GRAIN, PeerView};
use crate::wire::{HolderRequest, HolderResponse, PinsetRequest, PinsetResponse, Response};

/// How long a peer's request may wait for this node's pinset, holder or
/// keeper task to answer (the requester's own timeout is shorter).
const ANSWER_LIMIT: Duration = Duration::from_secs(30);

impl Node {
    /// Publishes the leader and the live peers to the pinset task (only
    /// when they change). Called after every election input and tick, so
    /// the view is compared where it stands, field by field, and its peer
    /// list is built (every ID and IPFS address cloned) only when it
    /// differs: at 100 members, rebuilding it at every heartbeat and tick
    /// was 5.7 % of an idle follower's CPU samples.
    pub(super) fn publish_view(&mut self) {
        let now = Instant::now();
        let leader = self.election.leader().map(|(l, e)| (l.clone(), *e));
        let my_ipfs = self.ipfs_info();
        let my_disk_free = self.health.disk_free / DISK_GRAIN * DISK_GRAIN;
        let isolated = self.election.isolated(now);
        let unchanged = {
            let v = self.view.borrow();
            v.leader == leader
                && v.my_ipfs == my_ipfs
                && v.my_disk_free == my_disk_free
                && v.isolated == isolated
                && v.me == *self.election.me()
                && v.role == Some(self.cfg.role)
                && self
                    .live_peer_views(now)
                    .eq(v.peers.iter().map(PeerViewRef::of))
                && self.left_peers().eq(v.left.iter())
        };
        let view = (!unchanged || cfg!(debug_assertions)).then(|| ClusterView {
            me: self.election.me().clone(),
            role: Some(self.cfg.role),
            leader,
            peers: self.live_peer_views(now).map(PeerViewRef::owned).collect(),
            left: self.left_peers().cloned().collect(),
            my_ipfs,
            my_disk_free,
            isolated,
        });
        match view {
            // Debug builds check the comparison against the built view.
            Some(view) if unchanged => debug_assert_eq!(*self.view.borrow(), view),
            Some(view) => {
                self.view.send_replace(view);
            }
            None => {}
        }
        self.note_healthy(now);
    }

    /// Whether a peer counts as healthy: live and not suspected.
    pub(super) fn is_healthy(&self, id: &String, now: Instant) -> bool {
        self.election.is_live(id, now)
            && self
                .election
                .peer(id)
                .is_some_and(|p| p.liveness == Liveness::Alive)
    }

    /// Brings [`Node::healthy`] up to date (a walk of the peers, as
    /// [`Node::publish_view`] makes anyway), timing a change.
    pub(super) fn note_healthy(&mut self, now: Instant) {
        let mut count = 0;
        let mut differs = false;
        for (id, _) in self.election.peers() {
            if self.is_healthy(id, now) {
                count += 1;
                differs |= !self.healthy.contains(id);
            }
        }
        if differs || count != self.healthy.len() {
            let healthy: std::collections::HashSet<String> = self
                .election
                .peers()
                .map(|(id, _)| id)
                .filter(|id| self.is_healthy(id, now))
                .cloned()
                .collect();
            self.healthy = healthy;
            self.healthy_changed_ms = crate::clock::unix_ms();
        }
    }

    /// [`Node::note_healthy`] for one peer, after its heartbeat.
    fn note_healthy_one(&mut self, id: &String, now: Instant) {
        let healthy = self.is_healthy(id, now);
        if healthy != self.healthy.contains(id) {
            if healthy {
                self.healthy.insert(id.clone());
            } else {
                self.healthy.remove(id);
            }
            self.healthy_changed_ms = crate::clock::unix_ms();
        }
    }

    /// After a heartbeat from `id`: publishes the view if that peer's entry
    /// in it or the leader changed. A heartbeat changes nothing else the
    /// view holds (in the election it touches only its sender's state);
    /// other election inputs publish through [`Node::input`], and what
    /// time changes (a peer gone silent) the election's next tick. So an
    /// idle node does not walk every member at every heartbeat.
    pub(super) fn publish_view_after(&mut self, id: &String) {
        let now = Instant::now();
        let unchanged = {
            let v = self.view.borrow();
            // Built from the election's `BTreeMap`, so sorted by ID.
            debug_assert!(v.peers.windows(2).all(|w| w[0].id < w[1].id));
            let listed = v
                .peers
                .binary_search_by(|p| p.id.cmp(id))
                .ok()
                .map(|i| PeerViewRef::of(&v.peers[i]));
            let now_listed = self
                .election
                .peer(id)
                .filter(|_| self.election.is_live(id, now))
                .map(|p| self.peer_view_ref(id, p));
            listed == now_listed
                && v.leader.as_ref().map(|(l, e)| (l, *e))
                    == self.election.leader().map(|(l, e)| (l, *e))
        };
        if !unchanged {
            self.publish_view();
        } else {
            self.note_healthy_one(id, now);
        }
    }

    /// The live peers as [`ClusterView::peers`] lists them, borrowed.
    fn live_peer_views(&self, now: Instant) -> impl Iterator<Item = PeerViewRef<'_>> {
        self.election
            .peers()
            .filter(move |(id, _)| self.election.is_live(id, now))
            .map(|(id, p)| self.peer_view_ref(id, p))
    }

    fn peer_view_ref<'a>(
        &'a self,
        id: &'a String,
        p: &crate::election::PeerState<String>,
    ) -> PeerViewRef<'a> {
        PeerViewRef {
            id,
            role: p.role,
            ipfs: self.peer_ipfs.get(id),
            disk_free: self
                .peer_health
                .get(id)
                .map_or(0, |h| h.disk_free / DISK_GRAIN * DISK_GRAIN),
            pinset: self.peer_pinset.get(id).copied(),
            held: self.peer_held.get(id).copied(),
        }
    }

    /// Peers that left gracefully, as [`ClusterView::left`] lists them.
    fn left_peers(&self) -> impl Iterator<Item = &String> {
        self.election
            .peers()
            .filter(|(_, p)| matches!(p.liveness, Liveness::Left { .. }))
            .map(|(id, _)| id)
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
        let Some(answer) = self.pins.inbound(peer.to_base58(), req) else {
            let _ = self
                .swarm
                .behaviour_mut()
                .rpc
                .send_response(channel, Response::Pinset(refuse("busy".into())));
            return;
        };
        self.respond_when(channel, async move {
            let resp = answer
                .await
                .unwrap_or_else(|_| refuse("pinset task stopped".into()));
            Response::Pinset(resp)
        });
    }

    /// Answers a peer's request once `answer` is ready (within
    /// [`ANSWER_LIMIT`]), without holding up the loop.
    fn respond_when(
        &self,
        channel: ResponseChannel<Response>,
        answer: impl Future<Output = Response> + Send + 'static,
    ) {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            // A task that never answers leaves the peer to its own request
            // timeout: the channel is dropped, not held.
            if let Ok(resp) = tokio::time::timeout(ANSWER_LIMIT, answer).await {
                let _ = handle.tx.send(Command::Respond { channel, resp }).await;
            }
        });
    }

    /// A holder request: orders and state polls go to this node's holder,
    /// status questions to the keeper (which answers while it leads).
    pub(super) fn on_holder_request(
        &mut self,
        peer: PeerId,
        req: HolderRequest,
        channel: ResponseChannel<Response>,
    ) {
        let refuse = |reason: String| HolderResponse::Refused { reason };
        if let Err(e) = req.check() {
            debug!(%peer, error = %e, "holder request refused");
            let resp = Response::Holder(refuse(e.to_string()));
            let _ = self.swarm.behaviour_mut().rpc.send_response(channel, resp);
            return;
        }
        if let HolderRequest::Statuses { cids } = req {
            let keeper = self.keeper.clone();
            self.respond_when(channel, async move {
                Response::Holder(match keeper.statuses(cids).await {
                    Ok(Some(items)) => HolderResponse::Statuses { items },
                    Ok(None) => refuse("not the leader".into()),
                    Err(e) => refuse(e),
                })
            });
            return;
        }
        let Some(answer) = self.holder.inbound(peer.to_base58(), req) else {
            let resp = Response::Holder(refuse("busy".into()));
            let _ = self.swarm.behaviour_mut().rpc.send_response(channel, resp);
            return;
        };
        self.respond_when(channel, async move {
            let resp = answer
                .await
                .unwrap_or_else(|_| refuse("holder task stopped".into()));
            Response::Holder(resp)
        });
    }

    /// Asks the keeper if this node leads, else the leader.
    pub(super) fn pin_peers(
        &mut self,
        cids: Vec<String>,
        reply: oneshot::Sender<Result<crate::pinset::keeper::Statuses, String>>,
    ) {
        let (keeper, handle) = (self.keeper.clone(), self.handle.clone());
        let leader = self.election.leader().map(|(l, _)| l.clone());
        let me = self.election.me().clone();
        tokio::spawn(async move {
            let answer = match leader {
                None => Err("no leader at the moment".to_string()),
                Some(l) if l == me => keeper
                    .statuses(cids)
                    .await
                    .and_then(|s| s.ok_or_else(|| "not leading yet".to_string())),
                Some(l) => match handle
                    .holder_request(&l, HolderRequest::Statuses { cids })
                    .await
                {
                    Ok(HolderResponse::Statuses { items }) => Ok(items),
                    Ok(HolderResponse::Refused { reason }) => Err(format!("the leader: {reason}")),
                    Ok(other) => Err(format!("unexpected answer {other:?}")),
                    Err(e) => Err(format!("leader unreachable: {e}")),
                },
            };
            let _ = reply.send(answer);
        });
    }

    pub(super) fn on_rpc_response(&mut self, id: OutboundRequestId, resp: Response) {
        if let Some(reply) = self.rpc_pending.remove(&id) {
            let _ = reply.send(Ok(resp));
        }
    }

    pub(super) fn on_rpc_failure(&mut self, id: OutboundRequestId, error: String) {
        if let Some(reply) = self.rpc_pending.remove(&id) {
            let _ = reply.send(Err(error));
        }
    }
}

/// A [`PeerView`] borrowed from the node's tables, to compare without
/// cloning.
#[derive(PartialEq)]
struct PeerViewRef<'a> {
    id: &'a String,
    role: crate::role::Role,
    ipfs: Option<&'a crate::wire::IpfsInfo>,
    disk_free: u64,
    pinset: Option<u64>,
    held: Option<(u64, u64)>,
}

impl<'a> PeerViewRef<'a> {
    fn of(p: &'a PeerView) -> Self {
        PeerViewRef {
            id: &p.id,
            role: p.role,
            ipfs: p.ipfs.as_ref(),
            disk_free: p.disk_free,
            pinset: p.pinset,
            held: p.held,
        }
    }

    fn owned(self) -> PeerView {
        PeerView {
            id: self.id.clone(),
            role: self.role,
            ipfs: self.ipfs.cloned(),
            disk_free: self.disk_free,
            pinset: self.pinset,
            held: self.held,
        }
    }
}
