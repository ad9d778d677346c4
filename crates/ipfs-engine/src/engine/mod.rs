//! The IPFS node: rust-ipfs with a persistent repo, bitswap, identify and
//! ping, and nothing that reaches out on its own (no bootstrap list, DHT,
//! mDNS, relay or UPnP). Every call into rust-ipfs runs under a deadline:
//! its fetches can outlive their own timeout when a peer dies mid-transfer.
//!
//! `blocks` has the single-block calls (`block/*`, `dag/get`), `cat` reads
//! files block by block.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use ipld_core::cid::Cid;
use rust_ipfs::builder::DefaultIpfsBuilder;
use rust_ipfs::{Block, DialOpts, Ipfs, Multiaddr, PeerId, PinMode, Protocol};

use crate::Error;
use crate::add::{Importer, Layout};

mod blocks;
mod cat;
pub use blocks::{Fetch, NotRemoved, PutAs, codec_named};
pub use cat::OpenFile;

/// Ceiling for calls that touch only the local repo.
const LOCAL: Duration = Duration::from_secs(60);
/// How long a dial may take before `swarm/connect` fails.
const DIAL: Duration = Duration::from_secs(10);

pub struct Engine {
    ipfs: Ipfs,
    repo: PathBuf,
}

/// What `add` keeps of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Blocks, pinned recursively (kubo's default).
    Pinned,
    /// Blocks only (`pin=false`).
    Unpinned,
    /// Nothing: the CID only (`only-hash`).
    Nothing,
}

/// A pin as `pin/ls` lists it.
pub struct PinEntry {
    pub cid: String,
    pub kind: &'static str,
}

pub struct RepoStat {
    pub size: u64,
    pub objects: u64,
    pub path: PathBuf,
}

async fn deadline<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| Error::Timeout(format!("{what}: no answer within {limit:?}")))?
}

fn engine_err(e: impl std::fmt::Display) -> Error {
    Error::Engine(e.to_string())
}

pub fn parse_cid(s: &str) -> Result<Cid, Error> {
    let s = s.trim();
    let s = s.strip_prefix("/ipfs/").unwrap_or(s);
    if s.contains('/') {
        return Err(Error::BadArg(format!(
            "invalid path {s:?}: only plain CIDs are supported"
        )));
    }
    Cid::from_str(s).map_err(|e| Error::BadArg(format!("invalid path {s:?}: {e}")))
}

impl Engine {
    /// Opens (or creates) the repo and starts listening on `swarm`.
    pub async fn start(repo: &Path, swarm: &[String]) -> Result<Engine, Error> {
        let addrs = swarm
            .iter()
            .map(|a| {
                Multiaddr::from_str(a)
                    .map_err(|e| Error::BadArg(format!("invalid swarm address {a:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A fresh identity on every start: peers that knew an earlier run
        // under the same peer ID stop exchanging blocks with it.
        let ipfs = DefaultIpfsBuilder::new()
            .set_path(repo)
            .with_identify(Default::default())
            .with_bitswap()
            .with_ping(Default::default())
            .enable_tcp()
            .set_listening_addrs(addrs.clone())
            .start()
            .await
            .map_err(|e| {
                Error::Engine(format!("cannot open the repo at {}: {e:#}", repo.display()))
            })?;
        let engine = Engine {
            ipfs,
            repo: repo.to_path_buf(),
        };
        // rust-ipfs only logs a listener that fails; insist on one per address.
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let up = engine.ipfs.listening_addresses().await.unwrap_or_default();
                if up.len() >= addrs.len() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if waited.is_err() {
            return Err(Error::Engine(format!(
                "cannot listen on every swarm address in {swarm:?} (is a port in use?)"
            )));
        }
        Ok(engine)
    }

    pub fn peer_id(&self) -> String {
        self.ipfs.keypair().public().to_peer_id().to_string()
    }

    /// The public key, protobuf-encoded (as kubo's `id` gives it, base64).
    pub fn public_key(&self) -> Vec<u8> {
        self.ipfs.keypair().public().encode_protobuf()
    }

    /// Listening addresses, each ending in `/p2p/<id>`.
    pub async fn addresses(&self) -> Result<Vec<String>, Error> {
        let me = self.ipfs.keypair().public().to_peer_id();
        let addrs = deadline(LOCAL, "listening addresses", async {
            self.ipfs.listening_addresses().await.map_err(engine_err)
        })
        .await?;
        Ok(addrs
            .into_iter()
            .map(|mut a| {
                if !matches!(a.iter().last(), Some(Protocol::P2p(_))) {
                    a.push(Protocol::P2p(me));
                }
                a.to_string()
            })
            .collect())
    }

    /// Imports one file; returns the root, the cumulative DAG size and the byte count.
    pub async fn add<S>(
        &self,
        layout: Layout,
        keep: Keep,
        mut data: S,
    ) -> Result<(Cid, u64, u64), Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + Unpin,
    {
        let repo = self.ipfs.repo();
        let mut imp = Importer::new(layout).map_err(Error::BadArg)?;
        let mut pending: Vec<Block> = Vec::new();
        let mut pending_bytes = 0usize;
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            for (cid, block) in imp.push(&chunk) {
                if keep != Keep::Nothing {
                    pending_bytes += block.len();
                    pending.push(Block::new_unchecked(cid, block));
                }
            }
            // Write in batches of a few MiB: bounded memory for any input size.
            if pending_bytes >= 4 * 1024 * 1024 {
                let batch = std::mem::take(&mut pending);
                pending_bytes = 0;
                deadline(LOCAL, "writing blocks", async {
                    repo.put_blocks(batch).await.map_err(engine_err)
                })
                .await?;
            }
        }
        let written = imp.written();
        let (rest, root, dag_size) = imp.finish();
        if keep != Keep::Nothing {
            pending.extend(rest.into_iter().map(|(c, b)| Block::new_unchecked(c, b)));
        }
        deadline(LOCAL, "writing blocks", async {
            repo.put_blocks(pending).await.map_err(engine_err)
        })
        .await?;
        if keep == Keep::Pinned {
            deadline(LOCAL, "pinning", async {
                if !self.ipfs.is_pinned(&root).await.map_err(engine_err)? {
                    self.ipfs
                        .insert_pin(root)
                        .recursive()
                        .local()
                        .await
                        .map_err(engine_err)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok((root, dag_size, written))
    }

    /// Pins recursively, fetching what is missing over bitswap.
    pub async fn pin_add(&self, cid: Cid, limit: Duration) -> Result<(), Error> {
        deadline(limit, &format!("pin {cid}"), async {
            if self.ipfs.is_pinned(&cid).await.map_err(engine_err)? {
                // Already pinned (maybe only directly): make it recursive.
                let kinds = self
                    .ipfs
                    .query_pins(vec![cid], Some(PinMode::Recursive))
                    .await;
                if kinds.is_ok() {
                    return Ok(());
                }
            }
            self.ipfs
                .insert_pin(cid)
                .recursive()
                .timeout(limit)
                .await
                .map_err(engine_err)
        })
        .await
    }

    pub async fn pin_rm(&self, cid: Cid) -> Result<(), Error> {
        deadline(LOCAL, &format!("unpin {cid}"), async {
            if !self.ipfs.is_pinned(&cid).await.map_err(engine_err)? {
                return Err(Error::Engine("not pinned or pinned indirectly".into()));
            }
            self.ipfs
                .remove_pin(cid)
                .recursive()
                .await
                .map_err(|e| Error::Engine(format!("{e}")))
        })
        .await
    }

    /// Pins of the given kind (`all` for every kind), or the given CIDs.
    pub async fn pin_ls(&self, kind: &str, cids: Vec<Cid>) -> Result<Vec<PinEntry>, Error> {
        let filter = match kind {
            "all" => None,
            "recursive" => Some(PinMode::Recursive),
            "direct" => Some(PinMode::Direct),
            "indirect" => Some(PinMode::Indirect),
            other => {
                return Err(Error::BadArg(format!(
                    "invalid type '{other}', must be one of {{direct, indirect, recursive, all}}"
                )));
            }
        };
        deadline(LOCAL, "listing pins", async {
            if !cids.is_empty() {
                let mut out = Vec::new();
                for cid in cids {
                    let found = self
                        .ipfs
                        .query_pins(vec![cid], filter)
                        .await
                        .map_err(|_| Error::Engine(format!("path '{cid}' is not pinned")))?;
                    for (c, k) in found {
                        out.push(PinEntry {
                            cid: c.to_string(),
                            kind: kind_name(&k),
                        });
                    }
                }
                return Ok(out);
            }
            let pins: Vec<(Cid, PinMode)> = self
                .ipfs
                .list_pins(filter)
                .await
                .try_collect()
                .await
                .map_err(engine_err)?;
            Ok(pins
                .into_iter()
                .map(|(c, m)| PinEntry {
                    cid: c.to_string(),
                    kind: match m {
                        PinMode::Recursive => "recursive",
                        PinMode::Direct => "direct",
                        PinMode::Indirect => "indirect",
                    },
                })
                .collect())
        })
        .await
    }

    pub async fn repo_stat(&self, size_only: bool) -> Result<RepoStat, Error> {
        deadline(LOCAL, "repo stat", async {
            let repo = self.ipfs.repo();
            let size = repo.get_total_size().await.map_err(engine_err)? as u64;
            let objects = if size_only {
                0
            } else {
                repo.list_blocks().await.count().await as u64
            };
            Ok(RepoStat {
                size,
                objects,
                path: self.repo.clone(),
            })
        })
        .await
    }

    /// Dials `addr` (which must end in `/p2p/<id>`) and waits for the
    /// connection; a peer already connected is a success, as in kubo.
    pub async fn connect(&self, addr: &str) -> Result<String, Error> {
        let mut ma = Multiaddr::from_str(addr)
            .map_err(|e| Error::BadArg(format!("invalid multiaddr {addr:?}: {e}")))?;
        let Some(Protocol::P2p(peer)) = ma.pop() else {
            return Err(Error::BadArg(format!(
                "invalid peer address {addr:?}: it must end in /p2p/<peer id>"
            )));
        };
        if peer == self.ipfs.keypair().public().to_peer_id() {
            return Err(Error::Engine(format!(
                "connect {peer} failure: dial to self attempted"
            )));
        }
        let opts = DialOpts::peer_id(peer).addresses(vec![ma]).build();
        deadline(DIAL, &format!("connect {peer}"), async {
            // kubo answers success for a peer already connected; rust-ipfs
            // refuses that dial (its condition is "not connected yet").
            if self.ipfs.is_connected(peer).await.map_err(engine_err)? {
                return Ok(());
            }
            let dialed = self.ipfs.connect(opts).await;
            if let Err(e) = dialed {
                // The peer may have dialled us meanwhile: that is a success too.
                if !self.ipfs.is_connected(peer).await.map_err(engine_err)? {
                    return Err(Error::Engine(format!("connect {peer} failure: {e}")));
                }
            }
            while !self.ipfs.is_connected(peer).await.map_err(engine_err)? {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })
        .await?;
        Ok(peer.to_string())
    }

    /// Connected peers with one address each (empty when none is known).
    pub async fn peers(&self) -> Result<Vec<(String, String)>, Error> {
        deadline(LOCAL, "swarm peers", async {
            let connected = self.ipfs.connected().await.map_err(engine_err)?;
            let known = self.ipfs.addrs().await.unwrap_or_default();
            Ok(connected
                .into_iter()
                .map(|p: PeerId| {
                    let addr = known
                        .iter()
                        .find(|(k, _)| *k == p)
                        .and_then(|(_, a)| a.first())
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    (p.to_string(), addr)
                })
                .collect())
        })
        .await
    }

    pub async fn stop(self) {
        self.ipfs.exit_daemon().await;
    }
}

fn kind_name(k: &rust_ipfs::PinKind<Cid>) -> &'static str {
    match k {
        rust_ipfs::PinKind::IndirectFrom(_) => "indirect",
        rust_ipfs::PinKind::Direct => "direct",
        rust_ipfs::PinKind::Recursive(_) | rust_ipfs::PinKind::RecursiveIntention => "recursive",
    }
}
