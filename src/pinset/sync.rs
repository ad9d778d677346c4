//! Anti-entropy, the serving side, pure: given one consistent view of a
//! replica and the version vector of a peer, the pages of changes the peer
//! has not seen.
//!
//! A replica sends the peer every change in its state (pins and tombstones:
//! the winner for each CID) whose `(author, seq)` is not in the peer's
//! vector, in `(author, seq)` order, a page at a time, from one view (a redb
//! read transaction held across pages); with the last page goes the view's
//! own vector. The peer stores the pages as they come and, with the last,
//! takes that vector into its own. Changes the replica saw but whose CID a
//! later change has since taken are not sent: the later one is, or the
//! peer has already seen it, so the peer's state ends at least as far on
//! for every change the vector names (the invariant in [`super::model`]).

use serde::{Deserialize, Serialize};

use super::model::{Entry, MAX_SEQ, Vv};

/// Where the next page starts: the first change at or after `(author, seq)`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Cursor {
    pub author: u64,
    pub seq: u64,
}

/// What serving a sync reads, from one consistent view of a replica.
pub trait ReadView {
    type Error: std::fmt::Display;

    /// The view's version vector.
    fn vv(&self) -> &Vv;

    /// The state's changes by `author` with `lo <= seq <= hi`, in `seq`
    /// order, to `f` until it returns `false`.
    fn scan_author(
        &self,
        author: u64,
        lo: u64,
        hi: u64,
        f: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<(), Self::Error>;
}

/// One page for a peer whose vector is `want`, from `from` on: at most
/// `max_entries` changes and (past the first) `max_bytes` of encoded size.
/// Returns the changes and where the next page starts (`None`: done).
pub fn page<V: ReadView>(
    view: &V,
    want: &Vv,
    from: Cursor,
    max_entries: usize,
    max_bytes: usize,
) -> Result<(Vec<Entry>, Option<Cursor>), V::Error> {
    let mut out: Vec<Entry> = Vec::new();
    let mut bytes = 0usize;
    let mut next = None;
    for &author in view.vv().0.keys() {
        if author < from.author {
            continue;
        }
        let start = if author == from.author { from.seq } else { 1 };
        let gaps = match want.get(author) {
            Some(r) => r.gaps(MAX_SEQ),
            None => vec![(1, MAX_SEQ)],
        };
        for (lo, hi) in gaps {
            if hi < start {
                continue;
            }
            view.scan_author(author, lo.max(start), hi, &mut |e: Entry| {
                let size = e.size_bound();
                if out.len() >= max_entries || (!out.is_empty() && bytes + size > max_bytes) {
                    next = Some(Cursor { author, seq: e.seq });
                    return false;
                }
                bytes += size;
                out.push(e);
                true
            })?;
            if next.is_some() {
                return Ok((out, next));
            }
        }
    }
    Ok((out, None))
}

/// Checks a page a peer sent against the cursor asked from: changes in
/// strictly increasing `(author, seq)` order from the cursor on, each
/// well-formed, none the asker had already seen, and the next cursor past
/// the last of them.
pub fn check_page(
    entries: &[Entry],
    asked: Cursor,
    next: Option<Cursor>,
    had: &Vv,
) -> Result<(), String> {
    let mut prev: Option<Cursor> = None;
    for e in entries {
        e.check()?;
        let at = Cursor {
            author: e.stamp.author,
            seq: e.seq,
        };
        if at < asked || prev.is_some_and(|p| at <= p) {
            return Err("changes out of order".into());
        }
        if had.contains(e.id()) {
            return Err(format!("sent a change already seen ({at:?})"));
        }
        prev = Some(at);
    }
    if let (Some(n), Some(p)) = (next, prev)
        && n <= p
    {
        return Err("next page would go back".into());
    }
    if next.is_some() && entries.is_empty() {
        return Err("an empty page that is not the last".into());
    }
    Ok(())
}
