//! UnixFS import: bytes in, a balanced DAG of blocks out, with the CIDs kubo
//! gives for the same options.
//!
//! rust-ipfs's own `add` takes the root from the blocks produced by the
//! adder's `finish()` alone. When the input is exactly one chunk (262,144
//! bytes with the default chunker), that single leaf is emitted by `push()`
//! and is itself the root, `finish()` emits nothing, and the add fails. The
//! root is the last block the adder produces over the whole run, so this
//! driver tracks that instead.

use ipld_core::cid::{Cid, Version};
use rust_unixfs::file::adder::{Chunker, FileAdder, FileAdderBuilder};

/// The largest chunk accepted (kubo's limit is 1 MiB too).
pub const MAX_CHUNK: usize = 1024 * 1024;
/// kubo's default chunk size.
pub const DEFAULT_CHUNK: usize = 256 * 1024;

/// How to lay out a file, as kubo's `add` options name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub cid_version: u8,
    /// `None`: kubo's default for the CID version (off for v0, on for v1).
    pub raw_leaves: Option<bool>,
    pub chunk: usize,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            cid_version: 0,
            raw_leaves: None,
            chunk: DEFAULT_CHUNK,
        }
    }
}

impl Layout {
    /// Parses kubo's `chunker` option: `size-N`.
    pub fn parse_chunker(s: &str) -> Result<usize, String> {
        let n = s
            .strip_prefix("size-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                format!("unrecognized chunker option: {s} (only size-N is supported)")
            })?;
        if n == 0 || n > MAX_CHUNK {
            return Err(format!(
                "chunker parameters may not exceed the maximum chunk size of {MAX_CHUNK}"
            ));
        }
        Ok(n)
    }
}

/// Feeds bytes to the UnixFS adder and hands out the finished blocks.
pub struct Importer {
    adder: FileAdder,
    root: Option<Cid>,
    /// Sum of every block's size, repeats included: kubo's cumulative `Size`.
    dag_size: u64,
    written: u64,
}

impl Importer {
    pub fn new(layout: Layout) -> Result<Importer, String> {
        let version = match layout.cid_version {
            0 => Version::V0,
            1 => Version::V1,
            v => return Err(format!("unknown CID version: {v}")),
        };
        if version == Version::V0 && layout.raw_leaves == Some(true) {
            // kubo switches to CIDv1 when raw leaves are asked for with v0.
            return Importer::new(Layout {
                cid_version: 1,
                ..layout
            });
        }
        let mut builder = FileAdderBuilder::default()
            .with_chunker(Chunker::Size(layout.chunk))
            .with_cid_version(version);
        if let Some(raw) = layout.raw_leaves {
            builder = builder.with_raw_leaves(raw);
        }
        Ok(Importer {
            adder: builder.build(),
            root: None,
            dag_size: 0,
            written: 0,
        })
    }

    /// Consumes all of `input`; returns the blocks completed on the way.
    pub fn push(&mut self, mut input: &[u8]) -> Vec<(Cid, Vec<u8>)> {
        let mut out = Vec::new();
        while !input.is_empty() {
            let (blocks, consumed) = self.adder.push(input);
            out.extend(blocks);
            input = &input[consumed..];
            self.written += consumed as u64;
        }
        self.track(&out);
        out
    }

    /// The remaining blocks, the root and the DAG's cumulative size.
    pub fn finish(self) -> (Vec<(Cid, Vec<u8>)>, Cid, u64) {
        let Importer {
            adder,
            mut root,
            mut dag_size,
            ..
        } = self;
        let rest: Vec<_> = adder.finish().collect();
        for (cid, data) in &rest {
            root = Some(*cid);
            dag_size += data.len() as u64;
        }
        let root = root.expect("the adder produces at least one block, even for empty input");
        (rest, root, dag_size)
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    fn track(&mut self, blocks: &[(Cid, Vec<u8>)]) {
        for (cid, data) in blocks {
            self.root = Some(*cid);
            self.dag_size += data.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(data: &[u8], layout: Layout, piece: usize) -> (String, u64) {
        let mut imp = Importer::new(layout).unwrap();
        for part in data.chunks(piece.max(1)) {
            imp.push(part);
        }
        let (_, root, size) = imp.finish();
        (root.to_string(), size)
    }

    #[test]
    fn hello_world_matches_kubo() {
        let (cid, size) = import(b"hello world\n", Layout::default(), 5);
        assert_eq!(cid, "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o");
        assert_eq!(size, 20);
    }

    #[test]
    fn empty_input_matches_kubo() {
        let (cid, _) = import(b"", Layout::default(), 1);
        assert_eq!(cid, "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH");
    }

    #[test]
    fn exactly_one_chunk_has_a_root() {
        for size in [
            DEFAULT_CHUNK - 1,
            DEFAULT_CHUNK,
            DEFAULT_CHUNK + 1,
            2 * DEFAULT_CHUNK,
        ] {
            let data = vec![7u8; size];
            let (whole, _) = import(&data, Layout::default(), size);
            let (pieces, _) = import(&data, Layout::default(), 1000);
            assert_eq!(whole, pieces, "size {size}");
        }
    }

    #[test]
    fn chunker_option_is_checked() {
        assert_eq!(Layout::parse_chunker("size-262144"), Ok(262144));
        assert!(Layout::parse_chunker("rabin").is_err());
        assert!(Layout::parse_chunker("size-0").is_err());
        assert!(Layout::parse_chunker("size-99999999").is_err());
    }
}
