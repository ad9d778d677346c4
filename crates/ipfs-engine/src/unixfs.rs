//! Reading UnixFS files block by block: which bytes of a node lie in a
//! wanted range and which children hold the rest. Pure (no I/O), so `cat`
//! can fetch exactly the blocks a range needs, one at a time in DAG order.
//!
//! A file node's content is its own `Data` bytes followed by its children's
//! content, child `i` holding `blocksizes[i]` bytes (the UnixFS spec). A raw
//! block (codec 0x55) is content as it is.

use std::ops::Range;

use bytes::Bytes;
use ipld_core::cid::Cid;

/// The raw codec: the block is the content.
pub const RAW: u64 = 0x55;
/// The DAG-PB codec, which UnixFS nodes use.
pub const DAG_PB: u64 = 0x70;

/// A decoded file node: its own bytes and its children with their sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNode {
    pub data: Bytes,
    pub children: Vec<(Cid, u64)>,
}

/// Why a block cannot be read as (part of) a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAFile {
    #[error("this dag node is a directory")]
    Directory,
    #[error("not a UnixFS file: {0}")]
    Other(String),
}

impl FileNode {
    /// Decodes a block of codec `codec` as a file node.
    pub fn decode(codec: u64, block: &Bytes) -> Result<FileNode, NotAFile> {
        match codec {
            RAW => Ok(FileNode {
                data: block.clone(),
                children: Vec::new(),
            }),
            DAG_PB => decode_pb(block),
            c => Err(NotAFile::Other(format!("codec 0x{c:x} is not UnixFS"))),
        }
    }

    /// The number of content bytes under this node.
    pub fn size(&self) -> u64 {
        self.data.len() as u64 + self.children.iter().map(|(_, n)| n).sum::<u64>()
    }

    /// What of this node's content (starting at `start` in the file) lies in
    /// `want`: the slice of its own bytes, and the children to visit (with
    /// their start and size), in file order. Children outside `want` are
    /// left out, so their blocks are never fetched.
    pub fn plan(&self, start: u64, want: &Range<u64>) -> (Bytes, Vec<Part>) {
        let own = start..start + self.data.len() as u64;
        let bytes = match overlap(&own, want) {
            Some(r) => self
                .data
                .slice((r.start - start) as usize..(r.end - start) as usize),
            None => Bytes::new(),
        };
        let mut parts = Vec::new();
        let mut at = own.end;
        for (cid, size) in &self.children {
            let span = at..at + size;
            if overlap(&span, want).is_some() {
                parts.push(Part {
                    cid: *cid,
                    start: at,
                    size: *size,
                });
            }
            at = span.end;
        }
        (bytes, parts)
    }
}

/// A child still to read: its block and where its content lies in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub cid: Cid,
    pub start: u64,
    pub size: u64,
}

fn overlap(a: &Range<u64>, b: &Range<u64>) -> Option<Range<u64>> {
    let r = a.start.max(b.start)..a.end.min(b.end);
    (r.start < r.end).then_some(r)
}

/// UnixFS `Data.Type` values.
const T_RAW: u64 = 0;
const T_DIRECTORY: u64 = 1;
const T_FILE: u64 = 2;
const T_HAMT: u64 = 5;

fn decode_pb(block: &Bytes) -> Result<FileNode, NotAFile> {
    let node = ipld_dagpb::PbNode::from_bytes(block.clone())
        .map_err(|e| NotAFile::Other(format!("invalid dag-pb: {e}")))?;
    let Some(data) = node.data else {
        return Err(NotAFile::Other("dag-pb node without UnixFS data".into()));
    };
    let fs = UnixFsData::decode(&data).map_err(NotAFile::Other)?;
    match fs.kind {
        T_FILE | T_RAW => {}
        T_DIRECTORY | T_HAMT => return Err(NotAFile::Directory),
        k => return Err(NotAFile::Other(format!("UnixFS type {k} is not a file"))),
    }
    if fs.blocksizes.len() != node.links.len() {
        return Err(NotAFile::Other(format!(
            "{} links but {} blocksizes",
            node.links.len(),
            fs.blocksizes.len()
        )));
    }
    let children = node
        .links
        .into_iter()
        .zip(fs.blocksizes)
        .map(|(l, n)| (l.cid, n))
        .collect();
    Ok(FileNode {
        data: fs.data.unwrap_or_default(),
        children,
    })
}

/// The fields of UnixFS's `Data` message a file reader needs.
struct UnixFsData {
    kind: u64,
    data: Option<Bytes>,
    blocksizes: Vec<u64>,
}

impl UnixFsData {
    /// Protobuf: 1 Type (varint), 2 Data (bytes), 4 blocksizes (repeated
    /// varint, packed or not); other fields are skipped.
    fn decode(buf: &Bytes) -> Result<UnixFsData, String> {
        let mut r = Reader { buf, at: 0 };
        let mut out = UnixFsData {
            kind: u64::MAX,
            data: None,
            blocksizes: Vec::new(),
        };
        while !r.done() {
            let key = r.varint()?;
            match (key >> 3, key & 7) {
                (1, 0) => out.kind = r.varint()?,
                (2, 2) => out.data = Some(r.bytes()?),
                (4, 0) => out.blocksizes.push(r.varint()?),
                (4, 2) => {
                    let packed = r.bytes()?;
                    let mut p = Reader {
                        buf: &packed,
                        at: 0,
                    };
                    while !p.done() {
                        out.blocksizes.push(p.varint()?);
                    }
                }
                (_, 0) => {
                    r.varint()?;
                }
                (_, 1) => r.skip(8)?,
                (_, 2) => {
                    r.bytes()?;
                }
                (_, 5) => r.skip(4)?,
                (f, w) => return Err(format!("invalid UnixFS data: field {f} wire type {w}")),
            }
        }
        if out.kind == u64::MAX {
            return Err("invalid UnixFS data: no Type".into());
        }
        Ok(out)
    }
}

struct Reader<'a> {
    buf: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.at >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.at)
                .ok_or("invalid UnixFS data: truncated varint")?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("invalid UnixFS data: varint too long".into())
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        if self.buf.len() - self.at < n {
            return Err("invalid UnixFS data: truncated field".into());
        }
        self.at += n;
        Ok(())
    }

    fn bytes(&mut self) -> Result<Bytes, String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "invalid UnixFS data: length")?;
        let start = self.at;
        self.skip(n)?;
        Ok(self.buf.slice(start..start + n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::add::{Importer, Layout};
    use std::collections::HashMap;

    /// Imports `data` and returns the blocks by CID and the root.
    fn import(data: &[u8], layout: Layout) -> (HashMap<Cid, Bytes>, Cid) {
        let mut imp = Importer::new(layout).unwrap();
        let mut blocks: HashMap<Cid, Bytes> = imp
            .push(data)
            .into_iter()
            .map(|(c, b)| (c, b.into()))
            .collect();
        let (rest, root, _) = imp.finish();
        blocks.extend(rest.into_iter().map(|(c, b)| (c, b.into())));
        (blocks, root)
    }

    /// Reads `want` the way `cat` does; returns the bytes and the blocks read.
    fn read(blocks: &HashMap<Cid, Bytes>, root: Cid, want: Range<u64>) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut stack = vec![(root, 0u64)];
        let mut fetched = 0;
        while let Some((cid, start)) = stack.pop() {
            fetched += 1;
            let node = FileNode::decode(cid.codec(), &blocks[&cid]).unwrap();
            let (bytes, parts) = node.plan(start, &want);
            out.extend_from_slice(&bytes);
            stack.extend(parts.iter().rev().map(|p| (p.cid, p.start)));
        }
        (out, fetched)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn ranges_read_the_right_bytes_from_few_blocks() {
        let chunk = 1000;
        let body = data(10 * chunk + 17);
        for raw in [false, true] {
            let layout = Layout {
                chunk,
                raw_leaves: Some(raw),
                cid_version: u8::from(raw),
            };
            let (blocks, root) = import(&body, layout);
            let size = FileNode::decode(root.codec(), &blocks[&root])
                .unwrap()
                .size();
            assert_eq!(size, body.len() as u64);
            for want in [0..0, 0..1, 999..1001, 2500..2600, 0..10_017, 10_000..10_017] {
                let (got, fetched) = read(&blocks, root, want.clone());
                assert_eq!(
                    got,
                    &body[want.start as usize..want.end as usize],
                    "{want:?}"
                );
                let leaves = if want.is_empty() {
                    0
                } else {
                    (want.end - 1) / 1000 - want.start / 1000 + 1
                };
                assert_eq!(fetched as u64, 1 + leaves, "{want:?} raw={raw}");
            }
        }
    }

    #[test]
    fn deep_trees_are_walked_in_order() {
        // 200 chunks of 100 bytes: more than 174 links, so two levels.
        let body = data(200 * 100 + 3);
        let layout = Layout {
            chunk: 100,
            ..Layout::default()
        };
        let (blocks, root) = import(&body, layout);
        let (got, _) = read(&blocks, root, 0..body.len() as u64);
        assert!(got == body);
        let (got, fetched) = read(&blocks, root, 17_450..17_460);
        assert_eq!(got, &body[17_450..17_460]);
        assert_eq!(fetched, 3, "root, one inner node, one leaf");
    }

    #[test]
    fn single_block_files_and_errors() {
        let (blocks, root) = import(b"hello world\n", Layout::default());
        let (got, _) = read(&blocks, root, 6..100);
        assert_eq!(got, b"world\n");
        assert!(matches!(
            FileNode::decode(0x71, &Bytes::from_static(b"\xa0")),
            Err(NotAFile::Other(_))
        ));
        // An empty directory: dag-pb with UnixFS { Type: Directory }.
        let dir = Bytes::from_static(&[0x0a, 0x02, 0x08, 0x01]);
        assert_eq!(FileNode::decode(DAG_PB, &dir), Err(NotAFile::Directory));
        assert!(FileNode::decode(DAG_PB, &Bytes::from_static(&[0x0a, 0x02, 0x08])).is_err());
    }
}
