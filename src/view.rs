//! The cluster as this node's election sees it: a leaf every subsystem may
//! import. The node loop publishes a [`ClusterView`] on a `watch` whenever
//! it changes; the pinset replica, the keeper and the holder follow it.

use crate::role::Role;
use crate::wire::IpfsInfo;

/// The cluster as the election sees it, from the node loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub me: String,
    pub role: Option<Role>,
    /// The leader this node follows, and its epoch.
    pub leader: Option<(String, u64)>,
    /// Live peers (not this node), sorted by ID ([`ClusterView::peer`]
    /// looks one up by bisection).
    pub peers: Vec<PeerView>,
    /// Peers that left gracefully (their incarnation will not come back).
    pub left: Vec<String>,
    /// This node's IPFS and free disk, as its heartbeats say.
    pub my_ipfs: Option<IpfsInfo>,
    pub my_disk_free: u64,
    /// This node leads but reaches no other master or worker it knows
    /// ([`crate::election::Election::isolated`]).
    pub isolated: bool,
}

/// A live peer as its heartbeats describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub id: String,
    pub role: Role,
    pub ipfs: Option<IpfsInfo>,
    /// Rounded down to [`DISK_GRAIN`], so the view does not change at every write.
    pub disk_free: u64,
    /// The digest of the changes its pinset replica has seen
    /// ([`crate::pinset::model::Vv::digest`]); `None` before it said.
    pub pinset: Option<u64>,
    /// Where its holder stands: session and newest change
    /// ([`crate::pinset::holder::core::Core::position`]); `None` before it
    /// said, or for a peer that holds nothing.
    pub held: Option<(u64, u64)>,
}

/// Granularity of free disk in a [`ClusterView`].
pub const DISK_GRAIN: u64 = 64 * 1024 * 1024;

impl ClusterView {
    /// This node's epoch if it leads.
    pub fn leading(&self) -> Option<u64> {
        self.leader
            .as_ref()
            .filter(|(l, _)| *l == self.me)
            .map(|(_, e)| *e)
    }

    /// A live peer by ID: O(log N), because a subsystem that looks up
    /// every peer of a 1,024-member view at each change would otherwise
    /// spend O(N²) on it.
    pub fn peer(&self, id: &str) -> Option<&PeerView> {
        self.peers
            .binary_search_by(|p| p.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.peers[i])
    }

    /// Whether `id` is a live master or worker (this node included).
    pub fn is_live_eligible(&self, id: &str) -> bool {
        if id == self.me {
            return self.role.is_some_and(Role::can_lead);
        }
        self.peer(id).is_some_and(|p| p.role.can_lead())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_found_by_its_id_and_only_it() {
        let peer = |id: &str| PeerView {
            id: id.into(),
            role: Role::Worker,
            ipfs: None,
            disk_free: 0,
            pinset: None,
            held: None,
        };
        for n in 0..6 {
            let ids: Vec<String> = (0..n).map(|i| format!("p{:02}", 2 * i + 1)).collect();
            let view = ClusterView {
                peers: ids.iter().map(|id| peer(id)).collect(),
                ..ClusterView::default()
            };
            for i in 0..=2 * n + 1 {
                let id = format!("p{i:02}");
                let found = view.peer(&id).map(|p| p.id.clone());
                assert_eq!(found, ids.contains(&id).then_some(id), "{n} peers");
            }
        }
    }
}
