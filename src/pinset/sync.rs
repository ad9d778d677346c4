//! Anti-entropy, the serving side, pure: given one consistent view of a
//! replica and the version vector of a peer, the pages of changes the peer
//! has not seen.
//!
//! A replica sends the peer every change in its state (pins and tombstones:
//! the winner for each CID) whose `(author, seq)` is not in the peer's
//! vector, a page at a time, from one view (a redb read transaction held
//! across pages); with the last page goes the view's own vector. The peer
//! stores the pages as they come and, with the last, takes that vector into
//! its own. Changes the replica saw but whose CID a later change has since
//! taken are not sent: the later one is, or the peer has already seen it,
//! so the peer's state ends at least as far on for every change the vector
//! names (the invariant in [`super::model`]).
//!
//! Two orders:
//! * **By author** (`(author, seq)` order), from an index of the state by
//!   change ID: the cost is what the peer lacks. Used when the peer has seen
//!   most of what this replica has.
//! * **By CID**, a scan of the whole state: for a peer that lacks most of it
//!   (a new node), or whose vector does not cover this replica's *index
//!   floor* (changes it stored without indexing them, see below). The first
//!   page of such a session also carries the view's vector: the receiver
//!   stores the pages without indexing them (B-tree appends, no second
//!   table) after taking that vector into its own floor, with the IDs of
//!   any change in the pages that vector does not name (one the sender
//!   itself holds from a bulk session still under way: the simulator found
//!   that case).

use serde::{Deserialize, Serialize};

use super::model::{Entry, MAX_SEQ, Vv};

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Cursor {
    /// The first change at or after `(author, seq)` (a new session starts at
    /// `(0, 0)`, and the replica picks the order).
    Author { author: u64, seq: u64 },
    /// The first CID at or after this one (a session in CID order).
    Cid(String),
}

impl Default for Cursor {
    fn default() -> Self {
        Cursor::Author { author: 0, seq: 0 }
    }
}

impl Cursor {
    /// Whether this continues a session in CID order.
    pub fn by_cid(&self) -> bool {
        matches!(self, Cursor::Cid(_))
    }

    fn of(e: &Entry, by_cid: bool) -> Cursor {
        if by_cid {
            Cursor::Cid(e.cid().to_owned())
        } else {
            Cursor::Author {
                author: e.stamp.author,
                seq: e.seq,
            }
        }
    }
}

/// What serving a sync reads, from one consistent view of a replica.
pub trait ReadView {
    type Error: std::fmt::Display;

    /// The view's version vector.
    fn vv(&self) -> &Vv;

    /// Changes that may be in the state without being in the by-author index.
    fn floor(&self) -> &Vv;

    /// What the view has collected (see [`super::replica`]).
    fn collected(&self) -> &Collected;

    /// The state's changes by `author` with `lo <= seq <= hi`, in `seq`
    /// order, to `f` until it returns `false`.
    fn scan_author(
        &self,
        author: u64,
        lo: u64,
        hi: u64,
        f: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<(), Self::Error>;

    /// The state's changes with CIDs from `from` on, in CID order, to `f`
    /// until it returns `false`.
    fn scan_cids(&self, from: &str, f: &mut dyn FnMut(Entry) -> bool) -> Result<(), Self::Error>;
}

/// Whether a session for a peer whose vector is `want` goes in CID order:
/// the peer lacks most of the view, or the index cannot answer for it.
pub fn by_cid<V: ReadView>(view: &V, want: &Vv) -> bool {
    !want.covers(view.floor()) || want.count().saturating_mul(2) < view.vv().count()
}

/// Whether a peer whose vector is `want` must be sent everything instead:
/// it has seen something but not every removal the view collected, so it
/// may hold changes those removals overtook, which no page would mend.
pub fn behind<V: ReadView>(view: &V, want: &Vv) -> bool {
    want.count() > 0 && !want.covers(&view.collected().vv)
}

/// What a replica has collected, sent with its vector (see
/// [`super::replica`], *Collecting removals*).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collected {
    /// Changes whose removals may have been dropped: every member had seen
    /// them, at least the removal horizon before.
    pub vv: Vv,
    /// The highest stamp reading stored (the receiver's clock moves past
    /// it with the vector).
    pub hlc: u64,
}

/// A page as [`page`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// Where the next page starts (`None`: done).
    pub next: Option<Cursor>,
    /// The page (and its session) goes in CID order.
    pub by_cid: bool,
}

/// One page for a peer whose vector is `want`, from `from` on: at most
/// `max_entries` changes and (past the first) `max_bytes` of encoded size.
pub fn page<V: ReadView>(
    view: &V,
    want: &Vv,
    from: &Cursor,
    max_entries: usize,
    max_bytes: usize,
) -> Result<Page, V::Error> {
    let cid_order = match from {
        Cursor::Cid(_) => true,
        c if *c == Cursor::default() => by_cid(view, want),
        _ => false,
    };
    let mut page = Collector {
        out: Vec::new(),
        bytes: 0,
        next: None,
        max_entries,
        max_bytes,
        cid_order,
    };
    if cid_order {
        let start = match from {
            Cursor::Cid(c) => c.as_str(),
            _ => "",
        };
        view.scan_cids(start, &mut |e: Entry| want.contains(e.id()) || page.take(e))?;
        return Ok(page.done());
    }
    let (from_author, from_seq) = match from {
        Cursor::Author { author, seq } => (*author, *seq),
        Cursor::Cid(_) => unreachable!("handled above"),
    };
    for &author in view.vv().0.keys() {
        if author < from_author {
            continue;
        }
        let start = if author == from_author { from_seq } else { 1 };
        let gaps = match want.get(author) {
            Some(r) => r.gaps(MAX_SEQ),
            None => vec![(1, MAX_SEQ)],
        };
        for (lo, hi) in gaps {
            if hi < start {
                continue;
            }
            view.scan_author(author, lo.max(start), hi, &mut |e| page.take(e))?;
            if page.next.is_some() {
                return Ok(page.done());
            }
        }
    }
    Ok(page.done())
}

/// A page being filled.
struct Collector {
    out: Vec<Entry>,
    bytes: usize,
    next: Option<Cursor>,
    max_entries: usize,
    max_bytes: usize,
    cid_order: bool,
}

impl Collector {
    fn done(self) -> Page {
        Page {
            entries: self.out,
            next: self.next,
            by_cid: self.cid_order,
        }
    }

    /// Adds `e`, or, when the page is full, notes it as where the next starts.
    fn take(&mut self, e: Entry) -> bool {
        let size = e.size_bound();
        if self.out.len() >= self.max_entries
            || (!self.out.is_empty() && self.bytes + size > self.max_bytes)
        {
            self.next = Some(Cursor::of(&e, self.cid_order));
            return false;
        }
        self.bytes += size;
        self.out.push(e);
        true
    }
}

/// Checks a page a peer sent against the cursor asked from: changes in
/// strictly increasing order (by ID, or by CID when `by_cid`) from the
/// cursor on, each well-formed, none the asker had already seen, and the
/// next cursor past the last of them, in the same order.
pub fn check_page(
    entries: &[Entry],
    by_cid: bool,
    asked: &Cursor,
    next: Option<&Cursor>,
    had: &Vv,
) -> Result<(), String> {
    let mid_session = *asked != Cursor::default();
    if (mid_session && asked.by_cid() != by_cid) || next.is_some_and(|n| n.by_cid() != by_cid) {
        return Err("a page in another order than its session".into());
    }
    let mut prev: Option<Cursor> = None;
    for e in entries {
        e.check()?;
        let at = Cursor::of(e, by_cid);
        let before_start = match (asked, &at) {
            (Cursor::Cid(a), Cursor::Cid(c)) => c < a,
            (Cursor::Author { .. }, Cursor::Author { .. }) => at < *asked,
            // A CID-order session starting from the default cursor.
            _ => false,
        };
        if before_start || prev.as_ref().is_some_and(|p| at <= *p) {
            return Err("changes out of order".into());
        }
        if had.contains(e.id()) {
            return Err(format!("sent a change already seen ({:?})", e.id()));
        }
        prev = Some(at);
    }
    if let (Some(n), Some(p)) = (next, &prev)
        && n <= p
    {
        return Err("next page would go back".into());
    }
    if next.is_some() && entries.is_empty() {
        return Err("an empty page that is not the last".into());
    }
    Ok(())
}
