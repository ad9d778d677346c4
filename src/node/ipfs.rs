//! The node's side of IPFS: what its heartbeats say about its daemon, and
//! passing peers' daemon addresses on to the connector.

use libp2p::Multiaddr;

use super::Node;
use super::peers::is_loopback;
use crate::ipfs::Mode;
use crate::wire::{IpfsInfo, MAX_IPFS_ADDR_LEN, MAX_IPFS_ADDRS};

impl Node {
    /// `None` when this node runs no IPFS. Loopback addresses are left out
    /// unless the node itself is loopback-only: on a peer they name the peer's host.
    pub(super) fn ipfs_info(&self) -> Option<IpfsInfo> {
        let st = self.ipfs.borrow();
        if st.mode == Mode::Off {
            return None;
        }
        let addrs = st
            .addrs
            .iter()
            .filter(|a| a.len() <= MAX_IPFS_ADDR_LEN)
            .filter(|a| {
                self.loopback_only || a.parse::<Multiaddr>().is_ok_and(|m| !is_loopback(&m))
            })
            .take(MAX_IPFS_ADDRS)
            .cloned()
            .collect();
        Some(IpfsInfo {
            ready: st.is_ready(),
            peer_id: st.peer_id.clone().unwrap_or_default(),
            addrs,
        })
    }

    /// Remembers a peer's IPFS; a newly ready or moved daemon goes to the connector.
    pub(super) fn on_peer_ipfs(&mut self, peer: String, info: Option<IpfsInfo>) {
        let Some(info) = info else {
            self.peer_ipfs.remove(&peer);
            return;
        };
        let changed = self.peer_ipfs.get(&peer) != Some(&info);
        let our_own = self.ipfs.borrow().peer_id.as_deref() == Some(info.peer_id.as_str());
        if changed && info.ready && !info.addrs.is_empty() && !our_own {
            // Full channel: the connector catches up at its next round.
            let _ = self.ipfs_peers.try_send(info.clone());
        }
        self.peer_ipfs.insert(peer, info);
    }
}
