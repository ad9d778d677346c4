//! Single blocks: get (local, or over bitswap within a deadline), put, stat,
//! rm (refused for pinned blocks, as kubo refuses), and `dag/get`'s decoding.

use std::time::Duration;

use bytes::Bytes;
use ipld_core::cid::Cid;
use multihash_codetable::{Code, MultihashDigest};
use rust_ipfs::{Block, Ipfs};

use super::{Engine, LOCAL, deadline, engine_err};
use crate::Error;

/// Where a block may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// The local repo only (kubo's `offline=true`).
    Offline,
    /// The repo, else bitswap within this deadline.
    Within(Duration),
}

/// A block to store, as `block/put` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutAs {
    pub codec: u64,
    /// CIDv0 (dag-pb only), kubo's legacy `format=v0`.
    pub v0: bool,
    pub pin: bool,
}

/// Why one block of `block/rm` was not removed (kubo's messages).
#[derive(Debug)]
pub struct NotRemoved(pub String);

/// Fetches one block: from the repo, else over bitswap within the limit.
pub(crate) async fn get_block(ipfs: &Ipfs, cid: Cid, fetch: Fetch) -> Result<Block, Error> {
    let repo = ipfs.repo();
    match fetch {
        Fetch::Offline => {
            deadline(LOCAL, &format!("reading {cid}"), async {
                repo.get_block_now(cid)
                    .await
                    .map_err(engine_err)?
                    .ok_or_else(|| {
                        Error::Engine(format!(
                            "block was not found locally (offline): ipld: could not find {cid}"
                        ))
                    })
            })
            .await
        }
        Fetch::Within(limit) => {
            // The outer deadline also covers a fetch that ignores its own timeout.
            let outer = limit + Duration::from_secs(5);
            deadline(outer, &format!("fetching {cid}"), async {
                repo.get_block(cid)
                    .timeout(limit)
                    .await
                    .map_err(|e| Error::Timeout(format!("fetching {cid}: {e}")))
            })
            .await
        }
    }
}

impl Engine {
    pub async fn block_get(&self, cid: Cid, fetch: Fetch) -> Result<Bytes, Error> {
        let block = get_block(&self.ipfs, cid, fetch).await?;
        Ok(block.into_inner().1)
    }

    /// Stores `data` under a sha2-256 CID of the given codec; returns the CID.
    pub async fn block_put(&self, data: Bytes, how: PutAs) -> Result<Cid, Error> {
        let mh = Code::Sha2_256.digest(&data);
        let cid = if how.v0 {
            Cid::new_v0(mh).map_err(|e| Error::BadArg(format!("CIDv0: {e}")))?
        } else {
            Cid::new_v1(how.codec, mh)
        };
        let block = Block::new_unchecked(cid, data);
        deadline(LOCAL, "writing a block", async {
            self.ipfs
                .repo()
                .put_blocks(vec![block])
                .await
                .map_err(engine_err)?;
            if how.pin && !self.ipfs.is_pinned(&cid).await.map_err(engine_err)? {
                // kubo pins a put block recursively, fetching nothing.
                self.ipfs
                    .insert_pin(cid)
                    .recursive()
                    .local()
                    .await
                    .map_err(|e| Error::Engine(format!("pin {cid}: {e}")))?;
            }
            Ok(())
        })
        .await?;
        Ok(cid)
    }

    /// Whether the repo holds `cid`, without fetching it.
    pub async fn has_block(&self, cid: Cid) -> Result<bool, Error> {
        deadline(LOCAL, "checking a block", async {
            self.ipfs.repo().contains(cid).await.map_err(engine_err)
        })
        .await
    }

    /// Removes one block. `Ok(Err(..))` is kubo's per-block refusal (pinned,
    /// or absent without `force`); `Err` is a failure of the engine.
    pub async fn block_rm(&self, cid: Cid, force: bool) -> Result<Result<(), NotRemoved>, Error> {
        deadline(LOCAL, &format!("removing {cid}"), async {
            let pins = self.ipfs.query_pins(vec![cid], None).await.ok();
            if let Some((_, kind)) = pins.as_ref().and_then(|k| k.first()) {
                return Ok(Err(NotRemoved(pinned_as(kind))));
            }
            if !self.ipfs.repo().contains(cid).await.map_err(engine_err)? {
                return Ok(if force {
                    Ok(())
                } else {
                    Err(NotRemoved(format!("ipld: could not find {cid}")))
                });
            }
            match self.ipfs.remove_block(cid, false).await {
                Ok(_) => Ok(Ok(())),
                Err(e) => Ok(Err(NotRemoved(e.to_string()))),
            }
        })
        .await
    }

    /// Decodes one block (dag-pb, dag-cbor, dag-json or raw) and encodes it
    /// as `codec` (`dag-json` or `dag-cbor`); the same codec as the block's
    /// gives its bytes unchanged.
    pub async fn dag_get(&self, cid: Cid, codec: u64, fetch: Fetch) -> Result<Vec<u8>, Error> {
        let block = get_block(&self.ipfs, cid, fetch).await?;
        if codec == cid.codec() {
            return Ok(block.data().to_vec());
        }
        let ipld = block
            .to_ipld()
            .map_err(|e| Error::Engine(format!("decoding {cid}: {e}")))?;
        match codec {
            DAG_JSON => serde_ipld_dagjson::to_vec(&ipld)
                .map_err(|e| Error::Engine(format!("encoding {cid} as dag-json: {e}"))),
            DAG_CBOR => serde_ipld_dagcbor::to_vec(&ipld)
                .map_err(|e| Error::Engine(format!("encoding {cid} as dag-cbor: {e}"))),
            c => Err(Error::BadArg(format!(
                "cannot encode {cid} (codec 0x{:x}) as codec 0x{c:x}",
                cid.codec()
            ))),
        }
    }
}

pub const RAW: u64 = 0x55;
pub const DAG_PB: u64 = 0x70;
pub const DAG_CBOR: u64 = 0x71;
pub const DAG_JSON: u64 = 0x0129;

/// A codec by its multicodec name, among those the engine reads and writes.
pub fn codec_named(name: &str) -> Option<u64> {
    match name {
        "raw" => Some(RAW),
        "dag-pb" => Some(DAG_PB),
        "dag-cbor" => Some(DAG_CBOR),
        "dag-json" => Some(DAG_JSON),
        _ => None,
    }
}

/// boxo's `Pinned.String()`: why a pinned block stays.
fn pinned_as(kind: &rust_ipfs::PinKind<Cid>) -> String {
    match kind {
        rust_ipfs::PinKind::IndirectFrom(root) => format!("pinned via {root}"),
        rust_ipfs::PinKind::Direct => "pinned: direct".into(),
        rust_ipfs::PinKind::Recursive(_) | rust_ipfs::PinKind::RecursiveIntention => {
            "pinned: recursive".into()
        }
    }
}
