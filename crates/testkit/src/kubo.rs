//! kubo's CIDs computed by hand: DAG-PB/UnixFS blocks encoded here from
//! the spec (CIDv0, 256 KiB chunks, balanced layout, one level: files of up
//! to 174 chunks), so a test can judge an engine's or a client's CIDs
//! without kubo.

use sha2::{Digest, Sha256};

/// kubo's default chunk size.
pub const CHUNK: usize = 262_144;

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn field_bytes(tag: u8, data: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

fn multihash(block: &[u8]) -> Vec<u8> {
    let mut mh = vec![0x12, 0x20];
    mh.extend_from_slice(&Sha256::digest(block));
    mh
}

fn cid_v0(block: &[u8]) -> String {
    bs58::encode(multihash(block)).into_string()
}

/// A UnixFS file leaf as kubo writes it with CIDv0: a DAG-PB node whose
/// Data is `UnixFS { Type: File, Data, filesize }`.
fn leaf(data: &[u8]) -> Vec<u8> {
    let mut unixfs = vec![0x08, 0x02];
    // An empty file has no Data field at all (kubo's empty-file CID).
    if !data.is_empty() {
        field_bytes(0x12, data, &mut unixfs);
    }
    unixfs.push(0x18);
    varint(data.len() as u64, &mut unixfs);
    let mut node = Vec::new();
    field_bytes(0x0a, &unixfs, &mut node);
    node
}

/// The root over leaves: links (hash, empty name, block size) first, then
/// `UnixFS { Type: File, filesize, blocksizes }`.
fn root(leaves: &[(Vec<u8>, usize)]) -> Vec<u8> {
    let mut node = Vec::new();
    for (block, _) in leaves {
        let mut link = Vec::new();
        field_bytes(0x0a, &multihash(block), &mut link);
        field_bytes(0x12, b"", &mut link);
        link.push(0x18);
        varint(block.len() as u64, &mut link);
        field_bytes(0x12, &link, &mut node);
    }
    let total: usize = leaves.iter().map(|(_, n)| n).sum();
    let mut unixfs = vec![0x08, 0x02, 0x18];
    varint(total as u64, &mut unixfs);
    for (_, n) in leaves {
        unixfs.push(0x20);
        varint(*n as u64, &mut unixfs);
    }
    field_bytes(0x0a, &unixfs, &mut node);
    node
}

/// kubo's CID and cumulative size for `data` (at most 174 chunks: one level).
pub fn kubo_cid(data: &[u8]) -> (String, u64) {
    if data.len() <= CHUNK {
        let b = leaf(data);
        return (cid_v0(&b), b.len() as u64);
    }
    let leaves: Vec<(Vec<u8>, usize)> = data.chunks(CHUNK).map(|c| (leaf(c), c.len())).collect();
    let r = root(&leaves);
    let size = r.len() + leaves.iter().map(|(b, _)| b.len()).sum::<usize>();
    (cid_v0(&r), size as u64)
}
