//! Connects this node's IPFS daemon to its cluster peers' daemons
//! (`swarm/connect`), so bitswap finds cluster content without any DHT.
//!
//! The node passes on each peer daemon it hears of (from heartbeats). Every
//! round (on news, when our daemon changes, and every `ROUND`) the task
//! asks our daemon whom it is connected to and dials the others, one address
//! at a time. A daemon that cannot be reached for `GIVE_UP` rounds in a row
//! is forgotten: it died or restarted under a new peer ID, which the node
//! will pass on again.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::IpfsStatus;
use crate::ipfs_rpc::IpfsClient;
use crate::wire::IpfsInfo;

const ROUND: Duration = Duration::from_secs(10);
const GIVE_UP: u32 = 6;
/// Most peer daemons remembered.
const MAX_KNOWN: usize = 1024;

pub fn spawn(
    local: watch::Receiver<IpfsStatus>,
    news: mpsc::Receiver<IpfsInfo>,
    stop: CancellationToken,
) {
    tokio::spawn(run(local, news, stop));
}

struct Known {
    addrs: Vec<String>,
    misses: u32,
}

async fn run(
    mut local: watch::Receiver<IpfsStatus>,
    mut news: mpsc::Receiver<IpfsInfo>,
    stop: CancellationToken,
) {
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut client: Option<IpfsClient> = None;
    let mut tick = tokio::time::interval(ROUND);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            changed = local.changed() => if changed.is_err() { return },
            Some(info) = news.recv() => {
                if known.len() < MAX_KNOWN || known.contains_key(&info.peer_id) {
                    known.insert(info.peer_id, Known { addrs: info.addrs, misses: 0 });
                }
                // Take whatever else queued up before dialling.
                while let Ok(info) = news.try_recv() {
                    if known.len() < MAX_KNOWN || known.contains_key(&info.peer_id) {
                        known.insert(info.peer_id, Known { addrs: info.addrs, misses: 0 });
                    }
                }
            }
        }
        let (api, me) = {
            let st = local.borrow();
            match (&st.api, st.is_ready()) {
                (Some(api), true) => (api.clone(), st.peer_id.clone()),
                _ => continue,
            }
        };
        if known.is_empty() {
            continue;
        }
        // One client (and connection pool) per API address.
        let client = match &mut client {
            Some(c) if c.addr() == api => c,
            slot => slot.insert(IpfsClient::new(api)),
        };
        let connected = match client.swarm_peers().await {
            Ok(p) => p,
            Err(e) => {
                debug!("IPFS swarm/peers: {e}");
                continue;
            }
        };
        for (peer, k) in known.iter_mut() {
            if connected.contains(peer) || Some(peer) == me.as_ref() {
                k.misses = 0;
                continue;
            }
            let mut ok = false;
            for addr in &k.addrs {
                match client.swarm_connect(addr).await {
                    Ok(()) => {
                        info!(ipfs_peer = %peer, %addr, "connected our IPFS to a cluster peer's");
                        ok = true;
                        break;
                    }
                    Err(e) => debug!(%addr, "IPFS swarm/connect: {e}"),
                }
            }
            k.misses = if ok { 0 } else { k.misses + 1 };
        }
        known.retain(|_, k| k.misses < GIVE_UP);
    }
}
