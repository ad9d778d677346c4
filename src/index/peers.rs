//! Peer lists: named sets of peers (for example `gpu-workers`), one record
//! per member, `~p/<list>/<peer ID>` with an empty value; removing a
//! member is a tombstone. Two masters adding different members at once
//! both win.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::View;

/// Longest list name, and most members one list may have (checked when
/// written, on the master).
pub const MAX_NAME: usize = 64;
pub const MAX_MEMBERS: usize = 4096;

pub fn check_list_name(name: &str) -> Result<(), String> {
    super::embeddings::check_collection_name(name).map_err(|_| {
        format!("invalid peer list name {name:?}: 1 to {MAX_NAME} of A-Z a-z 0-9 . _ -")
    })
}

/// A peer ID as libp2p writes it.
pub fn check_peer(id: &str) -> Result<(), String> {
    id.parse::<libp2p::PeerId>()
        .map(drop)
        .map_err(|e| format!("invalid peer ID {id:?}: {e}"))
}

/// The record of a member: `(rest, value)`.
pub fn record(list: &str, peer: &str) -> (String, Vec<u8>) {
    (format!("{list}/{peer}"), Vec::new())
}

pub fn check(rest: &str, value: Option<&[u8]>) -> Result<(), String> {
    let (list, peer) = rest
        .split_once('/')
        .ok_or_else(|| format!("malformed peer list record {rest:?}"))?;
    check_list_name(list)?;
    check_peer(peer)?;
    if value.is_some_and(|v| !v.is_empty()) {
        return Err("a peer list record carries no value".into());
    }
    Ok(())
}

#[derive(Default)]
pub struct PeerLists {
    lists: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListInfo {
    pub name: String,
    pub peers: Vec<String>,
}

impl View for PeerLists {
    fn apply(&mut self, _tag: u8, rest: &str, value: Option<&[u8]>) {
        let Some((list, peer)) = rest.split_once('/') else {
            return;
        };
        if value.is_some() {
            self.lists
                .entry(list.to_owned())
                .or_default()
                .insert(peer.to_owned());
        } else if let Some(set) = self.lists.get_mut(list) {
            set.remove(peer);
            if set.is_empty() {
                self.lists.remove(list);
            }
        }
    }
}

impl PeerLists {
    pub fn get(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.lists.get(name)
    }

    pub fn lists(&self) -> Vec<ListInfo> {
        self.lists
            .iter()
            .map(|(n, s)| ListInfo {
                name: n.clone(),
                peers: s.iter().cloned().collect(),
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lists.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }

    /// Members in all lists.
    pub fn members(&self) -> usize {
        self.lists.values().map(BTreeSet::len).sum()
    }
}
