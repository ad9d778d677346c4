//! `cat`: a UnixFS file (or a range of it) read one block at a time in DAG
//! order, each block from the repo or over bitswap within its own deadline.
//! Only the blocks the range touches are fetched (see [`crate::unixfs`]).
//!
//! One want at a time is what `pin/add` does too; rust-ipfs's own
//! `cat_unixfs` keeps a window of 16 wants open and stalled for multiples of
//! 30 s against kubo.

use std::ops::Range;

use bytes::Bytes;
use futures::Stream;
use ipld_core::cid::Cid;
use rust_ipfs::Ipfs;

use super::Engine;
use super::blocks::{Fetch, get_block};
use crate::Error;
use crate::unixfs::{FileNode, NotAFile, Part};

/// A file opened for reading: its size is known, nothing else fetched yet.
pub struct OpenFile {
    ipfs: Ipfs,
    root: Cid,
    node: FileNode,
    fetch: Fetch,
}

impl OpenFile {
    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.node.size()
    }

    /// The bytes of `range` (clamped to the file) as a stream of pieces.
    /// An error ends the stream.
    pub fn read(self, range: Range<u64>) -> impl Stream<Item = Result<Bytes, Error>> + Send {
        let size = self.size();
        let want = range.start.min(size)..range.end.min(size);
        let walk = Walk {
            ipfs: self.ipfs,
            fetch: self.fetch,
            want,
            first: Some(self.node),
            stack: Vec::new(),
            root: self.root,
        };
        futures::stream::try_unfold(walk, |mut walk| async move {
            match walk.next().await? {
                Some(b) => Ok(Some((b, walk))),
                None => Ok(None),
            }
        })
    }
}

struct Walk {
    ipfs: Ipfs,
    fetch: Fetch,
    want: Range<u64>,
    root: Cid,
    /// The root, already fetched by `open`.
    first: Option<FileNode>,
    /// Children still to read, the next on top.
    stack: Vec<Part>,
}

impl Walk {
    /// The next non-empty piece, or `None` at the end.
    async fn next(&mut self) -> Result<Option<Bytes>, Error> {
        if self.want.is_empty() {
            return Ok(None);
        }
        loop {
            let (node, start) = if let Some(root) = self.first.take() {
                (root, 0)
            } else if let Some(part) = self.stack.pop() {
                let block = get_block(&self.ipfs, part.cid, self.fetch).await?;
                let (cid, data) = block.into_inner();
                let node = FileNode::decode(cid.codec(), &data).map_err(|e| bad(cid, e))?;
                if node.size() != part.size {
                    return Err(Error::Engine(format!(
                        "cat {}: block {cid} holds {} bytes, its parent says {}",
                        self.root,
                        node.size(),
                        part.size
                    )));
                }
                (node, part.start)
            } else {
                return Ok(None);
            };
            let (bytes, parts) = node.plan(start, &self.want);
            self.stack.extend(parts.into_iter().rev());
            if !bytes.is_empty() {
                return Ok(Some(bytes));
            }
        }
    }
}

fn bad(cid: Cid, e: NotAFile) -> Error {
    Error::Engine(format!("{cid}: {e}"))
}

impl Engine {
    /// Fetches the root of a UnixFS file: a directory or another kind of
    /// node is an error here, before any byte is sent.
    pub async fn open_file(&self, cid: Cid, fetch: Fetch) -> Result<OpenFile, Error> {
        let block = get_block(&self.ipfs, cid, fetch).await?;
        let (_, data) = block.into_inner();
        let node = FileNode::decode(cid.codec(), &data).map_err(|e| match e {
            NotAFile::Directory => Error::Engine(e.to_string()),
            other => bad(cid, other),
        })?;
        Ok(OpenFile {
            ipfs: self.ipfs.clone(),
            root: cid,
            node,
            fetch,
        })
    }
}
