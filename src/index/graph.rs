//! The knowledge graph (tag `g`): triples of IRIs, CIDs and literals, in
//! the default graph or in named graphs, with pattern queries and
//! neighbourhoods.
//!
//! # Records
//! A triple is its own key: the value is the triple's bincode encoding and
//! the key part the lowercase hex SHA-256 of that value ([`record`]). So the
//! same triple always makes the same record, adding it twice changes
//! nothing, and removing it is a tombstone under that key. [`check`] accepts
//! a value only if it is the canonical encoding of a valid triple
//! ([`check_triple`]) under its own hash, so no triple is ever held under
//! two keys.
//!
//! # The view
//! [`Graph`] holds exactly the triples whose key's last applied record is a
//! value, so the same final records applied in any order give the same
//! view. A record that fails [`check`] counts as absent; no record makes
//! the view panic.
//!
//! Terms, predicates and graph names are interned to `u32` IDs (one ID per
//! distinct term, an IRI shared by all its roles) and freed when no triple
//! uses them. Each triple is kept in three sorted tables of ID 4-tuples
//! (SPO, POS, OSP, the graph last), so every pattern of fixed and open
//! subject, predicate and object is one range scan: a page costs
//! O(log n + rows scanned), where rows scanned are the matches plus, with a
//! graph filter, the rows of other graphs in the same range. [`Graph::count`]
//! scans its range too, except for a pattern with nothing fixed (O(log g)).
//!
//! Pages hold 1 to [`MAX_PAGE`] triples. Cursors ([`Page::next`]) name a
//! position in a table by IDs: they are valid only on the node that made
//! them (and only until it restarts), and resume strictly after the last
//! triple returned even if triples were added or removed since, so a
//! triple that matches for the whole paging is returned exactly once.
//! Neighbourhoods hold at most [`MAX_NEIGHBOURHOOD`] triples.
//!
//! # Memory
//! A triple costs about 130 bytes: a 16-byte row in each of the three
//! tables and a 24-byte entry keyed by its record key, with B-tree slack. A
//! distinct term costs about 65 bytes and its encoding (its text and 2 to 4
//! bytes): a 24-byte slot, a 16-byte hash entry, one allocation. Measured:
//! 10⁶ triples over 10⁵ terms take 135 MB; 10⁶ triples each with a new
//! subject and a new literal (2·10⁶ terms of about 25 bytes) 305 MB.
//! Removing triples gives their memory back, terms included.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hasher};
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::index::{MAX_VALUE, TAG_TRIPLE, View};
use crate::pinset::canonical_cid;

/// Longest IRI accepted, in bytes.
pub const MAX_IRI: usize = 2048;
/// Longest literal value accepted, in bytes.
pub const MAX_LITERAL: usize = 16 * 1024;
/// Most triples a page holds, whatever limit a query asks for.
pub const MAX_PAGE: usize = 1000;
/// Most triples a neighbourhood holds, whatever it asks for.
pub const MAX_NEIGHBOURHOOD: usize = 10_000;

/// Characters an IRI never contains (RFC 3987), besides whitespace and
/// control characters.
const IRI_FORBIDDEN: &[char] = &['<', '>', '"', '{', '}', '|', '\\', '^', '`'];

/// A node or a value of the graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Term {
    Iri(String),
    /// A canonical CID (as [`canonical_cid`] writes it).
    Cid(String),
    /// A value: a datatype (an IRI) or a language tag, not both.
    Literal {
        value: String,
        datatype: Option<String>,
        lang: Option<String>,
    },
}

/// A term as a client writes it: a short string (a CID if it parses as
/// one, else an IRI) or the full form (needed for literals).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TermInput {
    Short(String),
    Full(Term),
}

impl TermInput {
    /// The checked term, its CID (if any) in canonical form.
    pub fn into_term(self) -> Result<Term, String> {
        let term = match self {
            TermInput::Short(s) => match canonical_cid(&s) {
                Ok(cid) => Term::Cid(cid),
                Err(_) => {
                    check_iri(&s).map_err(|e| format!("neither a CID nor an IRI: {e}"))?;
                    Term::Iri(s)
                }
            },
            TermInput::Full(Term::Cid(cid)) => Term::Cid(canonical_cid(&cid)?),
            TermInput::Full(term) => term,
        };
        check_term(&term)?;
        Ok(term)
    }
}

/// One statement: `s` `p` `o`, in a named graph or the default graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Triple {
    /// A named graph's IRI; `None`: the default graph.
    pub graph: Option<String>,
    /// An IRI or a CID, never a literal.
    pub s: Term,
    /// An IRI.
    pub p: String,
    pub o: Term,
}

/// A triple as a client writes it (terms in short or full form).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TripleInput {
    pub graph: Option<String>,
    pub s: TermInput,
    pub p: String,
    pub o: TermInput,
}

impl TripleInput {
    /// The checked triple ([`check_triple`]).
    pub fn into_triple(self) -> Result<Triple, String> {
        let t = Triple {
            graph: self.graph,
            s: self.s.into_term().map_err(|e| format!("subject: {e}"))?,
            p: self.p,
            o: self.o.into_term().map_err(|e| format!("object: {e}"))?,
        };
        check_triple(&t)?;
        Ok(t)
    }
}

/// Checks a triple's parts; the message names the part at fault.
pub fn check_triple(t: &Triple) -> Result<(), String> {
    if let Some(g) = &t.graph {
        check_iri(g).map_err(|e| format!("graph: {e}"))?;
    }
    if matches!(t.s, Term::Literal { .. }) {
        return Err("subject: a literal cannot be a subject".into());
    }
    check_term(&t.s).map_err(|e| format!("subject: {e}"))?;
    check_iri(&t.p).map_err(|e| format!("predicate: {e}"))?;
    check_term(&t.o).map_err(|e| format!("object: {e}"))
}

/// Checks one term: IRIs with [`check_iri`], CIDs canonical, literals
/// bounded with a valid datatype or language tag.
pub fn check_term(term: &Term) -> Result<(), String> {
    match term {
        Term::Iri(iri) => check_iri(iri),
        Term::Cid(cid) => {
            let canonical = canonical_cid(cid)?;
            if canonical != *cid {
                return Err(format!(
                    "CID {cid:?} is not canonical (it is {canonical:?})"
                ));
            }
            Ok(())
        }
        Term::Literal {
            value,
            datatype,
            lang,
        } => {
            if value.len() > MAX_LITERAL {
                return Err(format!(
                    "literal of {} bytes, longer than {MAX_LITERAL}",
                    value.len()
                ));
            }
            match (datatype, lang) {
                (Some(_), Some(_)) => {
                    Err("a literal has a datatype or a language tag, not both".into())
                }
                (Some(d), None) => check_iri(d).map_err(|e| format!("datatype: {e}")),
                (None, Some(l)) => check_lang(l),
                (None, None) => Ok(()),
            }
        }
    }
}

/// Checks an absolute IRI: 1 to [`MAX_IRI`] bytes, a scheme
/// (`[A-Za-z][A-Za-z0-9+.-]*:`) and something after it, no whitespace,
/// control characters, `<`, `>`, `"`, `{`, `}`, `|`, `\`, `^` or backtick.
pub fn check_iri(iri: &str) -> Result<(), String> {
    if iri.is_empty() || iri.len() > MAX_IRI {
        return Err(format!(
            "IRI of {} bytes, expected 1 to {MAX_IRI}",
            iri.len()
        ));
    }
    if let Some(c) = iri
        .chars()
        .find(|&c| c.is_whitespace() || c.is_control() || IRI_FORBIDDEN.contains(&c))
    {
        return Err(format!("IRI {iri:?} contains {c:?}"));
    }
    let Some((scheme, after)) = iri.split_once(':') else {
        return Err(format!("IRI {iri:?} has no scheme (like `https:`)"));
    };
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'));
    if !scheme_ok {
        return Err(format!("IRI {iri:?} has no valid scheme (like `https:`)"));
    }
    if after.is_empty() {
        return Err(format!("IRI {iri:?} has nothing after its scheme"));
    }
    Ok(())
}

/// Checks a language tag: `[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*`.
fn check_lang(lang: &str) -> Result<(), String> {
    let mut parts = lang.split('-');
    let first_ok = parts
        .next()
        .is_some_and(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()));
    if first_ok
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        Ok(())
    } else {
        Err(format!("language tag {lang:?} is not like `en` or `en-GB`"))
    }
}

/// The record of a triple: the key part (after `~g/`) and the value. Adding
/// the triple stores both; removing it stores a tombstone under the key.
pub fn record(t: &Triple) -> (String, Vec<u8>) {
    let value = encode(t);
    (hex::encode(digest(&value)), value)
}

/// Checks a record a writer made or a peer sent (`None`: a tombstone).
pub fn check(rest: &str, value: Option<&[u8]>) -> Result<(), String> {
    if parse_key(rest).is_none() {
        return Err(format!(
            "triple key {rest:?}: expected the 64 lowercase hex digits of its value's SHA-256"
        ));
    }
    let Some(value) = value else {
        return Ok(());
    };
    if value.len() > MAX_VALUE {
        return Err(format!("triple record larger than {MAX_VALUE} bytes"));
    }
    let t = decode(value)?;
    check_triple(&t)?;
    if hex::encode(digest(value)) != rest {
        return Err(format!(
            "triple record under {rest:?}, not under its own hash"
        ));
    }
    Ok(())
}

/// Encoding a triple (strings and options) cannot fail; an empty value
/// would be refused by [`check`] anyway.
fn encode(t: &Triple) -> Vec<u8> {
    bincode::serde::encode_to_vec(t, bincode::config::standard()).unwrap_or_default()
}

/// Decodes a value that must be a triple's canonical encoding: bincode
/// accepts longer forms of the same integers, which would give one triple
/// two keys.
fn decode(value: &[u8]) -> Result<Triple, String> {
    // The limit stops a length prefix from allocating more than the value.
    let config = bincode::config::standard().with_limit::<{ MAX_VALUE }>();
    let (t, used): (Triple, usize) = bincode::serde::decode_from_slice(value, config)
        .map_err(|e| format!("triple record does not decode: {e}"))?;
    if used != value.len() {
        return Err(format!(
            "triple record with {} bytes after the triple",
            value.len() - used
        ));
    }
    if encode(&t) != value {
        return Err("triple record not in canonical encoding".into());
    }
    Ok(t)
}

fn digest(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

/// The first 8 bytes of a record key.
fn short(hash: &[u8; 32]) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = *hash;
    u64::from_be_bytes([a, b, c, d, e, f, g, h])
}

/// The SHA-256 a key part names, if it is 64 lowercase hex digits.
fn parse_key(rest: &str) -> Option<[u8; 32]> {
    let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    if rest.len() != 64 || !rest.as_bytes().iter().all(lower_hex) {
        return None;
    }
    let mut hash = [0; 32];
    hex::decode_to_slice(rest, &mut hash).ok()?;
    Some(hash)
}

/// Which graphs a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphFilter {
    /// The default graph and every named graph.
    #[default]
    Any,
    /// The default graph only.
    Default,
    /// One named graph, by its IRI.
    Named(String),
}

/// A triple pattern: `None` matches anything in that place, a term only
/// itself (a CID in canonical form: [`PatternInput`] makes it so).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pattern {
    pub s: Option<Term>,
    pub p: Option<String>,
    pub o: Option<Term>,
    #[serde(default)]
    pub graph: GraphFilter,
}

/// A pattern as an HTTP client writes it: terms in short or full form,
/// a named graph or the default graph (neither: any graph).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternInput {
    pub s: Option<TermInput>,
    pub p: Option<String>,
    pub o: Option<TermInput>,
    /// Only this named graph.
    pub graph: Option<String>,
    /// Only the default graph (default false; not with `graph`).
    #[serde(default)]
    pub default_graph: bool,
}

impl PatternInput {
    /// The checked pattern.
    pub fn into_pattern(self) -> Result<Pattern, String> {
        let term = |t: Option<TermInput>, part: &str| {
            t.map(|t| t.into_term().map_err(|e| format!("{part}: {e}")))
                .transpose()
        };
        let s = term(self.s, "subject")?;
        if matches!(s, Some(Term::Literal { .. })) {
            return Err("subject: a literal cannot be a subject".into());
        }
        if let Some(p) = &self.p {
            check_iri(p).map_err(|e| format!("predicate: {e}"))?;
        }
        let graph = match (self.graph, self.default_graph) {
            (Some(_), true) => {
                return Err("graph: a named graph or the default graph, not both".into());
            }
            (Some(g), false) => {
                check_iri(&g).map_err(|e| format!("graph: {e}"))?;
                GraphFilter::Named(g)
            }
            (None, true) => GraphFilter::Default,
            (None, false) => GraphFilter::Any,
        };
        Ok(Pattern {
            s,
            p: self.p,
            o: term(self.o, "object")?,
            graph,
        })
    }
}

/// One page of a query's matches.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Page {
    pub triples: Vec<Triple>,
    /// Pass as `after` for the next page; `None`: no more matches.
    pub next: Option<String>,
}

/// The triples around a node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Neighbourhood {
    /// Every term reached, the start first, in breadth-first order.
    pub nodes: Vec<Term>,
    pub triples: Vec<Triple>,
    /// The walk stopped at `max_triples` with more to take.
    pub truncated: bool,
}

/// The size of the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct GraphStats {
    pub triples: u64,
    /// Distinct terms, predicates and graph names (an IRI in several roles
    /// counts once).
    pub terms: u64,
    /// Named graphs holding at least one triple.
    pub graphs: u64,
}

/// A term's ID; 0 is the default graph and never a term.
type Id = u32;
const DEFAULT_GRAPH: Id = 0;
/// A triple as IDs in one table's order, the graph always last.
type Row = [Id; 4];

/// The view of the graph records.
#[derive(Default)]
pub struct Graph {
    terms: Terms,
    spo: BTreeSet<Row>,
    pos: BTreeSet<Row>,
    osp: BTreeSet<Row>,
    /// Record keys (their first 8 bytes) with the triple held under them,
    /// in SPO order: half the size of full keys; [`Graph::find`] confirms
    /// the full key.
    by_key: BTreeSet<(u64, Row)>,
    /// Triples per graph, for counting patterns with nothing fixed.
    per_graph: BTreeMap<Id, u64>,
}

impl View for Graph {
    fn apply(&mut self, tag: u8, rest: &str, value: Option<&[u8]>) {
        if tag != TAG_TRIPLE {
            return;
        }
        let Some(hash) = parse_key(rest) else {
            return;
        };
        match value {
            None => self.remove(&hash),
            Some(value) => {
                // `decode` insists on the canonical encoding, so the hash of
                // the value is the triple's own key.
                if let Ok(t) = decode(value)
                    && check_triple(&t).is_ok()
                    && digest(value) == hash
                {
                    self.insert(hash, &t);
                }
            }
        }
    }
}

impl Graph {
    fn insert(&mut self, hash: [u8; 32], t: &Triple) {
        if self.find(&hash).is_some() {
            return;
        }
        let s = self.terms.acquire(&t.s);
        let p = self.terms.acquire(&Term::Iri(t.p.clone()));
        let o = self.terms.acquire(&t.o);
        let g = match &t.graph {
            Some(g) => self.terms.acquire(&Term::Iri(g.clone())),
            None => DEFAULT_GRAPH,
        };
        let spog = [s, p, o, g];
        for order in [Order::Spo, Order::Pos, Order::Osp] {
            self.table_mut(order).insert(order.row(spog));
        }
        self.by_key.insert((short(&hash), spog));
        *self.per_graph.entry(g).or_default() += 1;
    }

    fn remove(&mut self, hash: &[u8; 32]) {
        let Some(spog) = self.find(hash) else {
            return;
        };
        self.by_key.remove(&(short(hash), spog));
        for order in [Order::Spo, Order::Pos, Order::Osp] {
            self.table_mut(order).remove(&order.row(spog));
        }
        let [s, p, o, g] = spog;
        if let Some(n) = self.per_graph.get_mut(&g) {
            *n -= 1;
            if *n == 0 {
                self.per_graph.remove(&g);
            }
        }
        for id in [s, p, o, g] {
            if id != DEFAULT_GRAPH {
                self.terms.release(id);
            }
        }
    }

    /// The triple (SPOG) held under a record key.
    fn find(&self, hash: &[u8; 32]) -> Option<Row> {
        let short = short(hash);
        self.by_key
            .range((short, [0; 4])..=(short, [Id::MAX; 4]))
            .map(|&(_, spog)| spog)
            .find(|&spog| {
                self.triple(spog)
                    .is_some_and(|t| digest(&encode(&t)) == *hash)
            })
    }

    /// The matches of `q` after the cursor `after` (from the previous
    /// page's [`Page::next`]), at most `limit` of them (1 to [`MAX_PAGE`]),
    /// in the order of the table the pattern's shape picks. Errs on a
    /// malformed cursor or one from a query of another shape.
    pub fn query(&self, q: &Pattern, after: Option<&str>, limit: usize) -> Result<Page, String> {
        let order = Order::for_shape(q);
        let after = match after {
            Some(cursor) => {
                let (from, row) = parse_cursor(cursor)?;
                if from != order {
                    return Err("cursor from a query of another shape".into());
                }
                Some(row)
            }
            None => None,
        };
        let Some(plan) = self.plan(q) else {
            return Ok(Page::default());
        };
        let mut rows = self.scan(plan, after);
        let mut page = Page::default();
        let mut last = None;
        for row in rows.by_ref().take(limit.clamp(1, MAX_PAGE)) {
            page.triples.extend(self.triple(order.spog(row)));
            last = Some(row);
        }
        if let Some(last) = last
            && rows.next().is_some()
        {
            page.next = Some(cursor(order, last));
        }
        Ok(page)
    }

    /// How many triples match `q`.
    pub fn count(&self, q: &Pattern) -> u64 {
        let Some(plan) = self.plan(q) else {
            return 0;
        };
        match (plan.len, plan.graph) {
            (0, None) => self.by_key.len() as u64,
            (0, Some(g)) => self.per_graph.get(&g).copied().unwrap_or(0),
            _ => self.scan(plan, None).count() as u64,
        }
    }

    /// The triples up to `depth` hops from `node` (1: its own triples),
    /// following triples both ways (the node as subject and as object),
    /// only those with a predicate in `predicates` if given, in every
    /// graph; breadth-first, each triple once, at most `max_triples` (and
    /// [`MAX_NEIGHBOURHOOD`]).
    /// A literal reached is walked like any node: it links the triples
    /// that share it as object.
    pub fn neighbourhood(
        &self,
        node: &Term,
        depth: u32,
        predicates: Option<&[String]>,
        max_triples: usize,
    ) -> Neighbourhood {
        let max_triples = max_triples.min(MAX_NEIGHBOURHOOD);
        let mut out = Neighbourhood {
            nodes: vec![node.clone()],
            ..Neighbourhood::default()
        };
        let Some(start) = self.terms.id(node) else {
            return out;
        };
        let predicates: Option<Vec<Id>> = predicates.map(|ps| {
            let ids: BTreeSet<Id> = ps
                .iter()
                .filter_map(|p| self.terms.id(&Term::Iri(p.clone())))
                .collect();
            ids.into_iter().collect()
        });
        let mut reached = BTreeSet::from([start]);
        let mut taken = BTreeSet::new();
        let mut frontier = vec![start];
        for _ in 0..depth {
            let mut next = Vec::new();
            for &n in &frontier {
                for spog in self.edges(n, predicates.as_deref()) {
                    if taken.contains(&spog) {
                        continue;
                    }
                    if out.triples.len() >= max_triples {
                        out.truncated = true;
                        return out;
                    }
                    let Some(t) = self.triple(spog) else {
                        continue;
                    };
                    taken.insert(spog);
                    out.triples.push(t);
                    for end in [spog[0], spog[2]] {
                        if reached.insert(end) {
                            next.push(end);
                            out.nodes.extend(self.terms.term(end));
                        }
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        out
    }

    /// The size of the view (O(named graphs)).
    pub fn stats(&self) -> GraphStats {
        GraphStats {
            triples: self.by_key.len() as u64,
            terms: self.terms.live as u64,
            graphs: self
                .per_graph
                .keys()
                .filter(|&&g| g != DEFAULT_GRAPH)
                .count() as u64,
        }
    }

    /// The triples of `n` as subject and as object (SPOG IDs), with one of
    /// `predicates` if given; a triple of `n` to itself comes twice.
    fn edges<'a>(
        &'a self,
        n: Id,
        predicates: Option<&'a [Id]>,
    ) -> Box<dyn Iterator<Item = Row> + 'a> {
        let rows = move |order: Order, prefix: &[Id]| {
            self.range(order, prefix, None)
                .map(move |&row| order.spog(row))
        };
        match predicates {
            None => Box::new(rows(Order::Spo, &[n]).chain(rows(Order::Osp, &[n]))),
            Some(ps) => Box::new(
                ps.iter()
                    .flat_map(move |&p| rows(Order::Spo, &[n, p]).chain(rows(Order::Pos, &[p, n]))),
            ),
        }
    }

    /// A pattern as IDs; `None` when a fixed term is in no triple.
    fn plan(&self, q: &Pattern) -> Option<Plan> {
        let id = |t: Option<&Term>| match t {
            Some(t) => self.terms.id(t).map(Some),
            None => Some(None),
        };
        let s = id(q.s.as_ref())?;
        let p = id(q.p.clone().map(Term::Iri).as_ref())?;
        let o = id(q.o.as_ref())?;
        let graph = match &q.graph {
            GraphFilter::Any => None,
            GraphFilter::Default => Some(DEFAULT_GRAPH),
            GraphFilter::Named(g) => Some(self.terms.id(&Term::Iri(g.clone()))?),
        };
        let order = Order::for_shape(q);
        // The shape picks a table whose leading places are the fixed ones.
        let mut plan = Plan {
            order,
            fixed: [0; 3],
            len: 0,
            graph,
        };
        for id in order.row([s, p, o, None]).into_iter().map_while(|id| id) {
            plan.fixed[plan.len] = id;
            plan.len += 1;
        }
        Some(plan)
    }

    /// The rows matching a plan, strictly after `after`.
    fn scan(&self, plan: Plan, after: Option<Row>) -> impl Iterator<Item = Row> + '_ {
        let graph = plan.graph;
        self.range(plan.order, &plan.fixed[..plan.len], after)
            .copied()
            .filter(move |row| graph.is_none_or(|g| row[3] == g))
    }

    /// The rows of a table that start with `prefix`, strictly after `after`.
    fn range(
        &self,
        order: Order,
        prefix: &[Id],
        after: Option<Row>,
    ) -> std::collections::btree_set::Range<'_, Row> {
        let mut lo = [0; 4];
        let mut hi = [Id::MAX; 4];
        lo[..prefix.len()].copy_from_slice(prefix);
        hi[..prefix.len()].copy_from_slice(prefix);
        // A cursor outside the range is a position before or after all of it.
        let start = match after {
            Some(row) if row >= hi => Bound::Excluded(hi),
            Some(row) if row >= lo => Bound::Excluded(row),
            _ => Bound::Included(lo),
        };
        self.table(order).range((start, Bound::Included(hi)))
    }

    fn triple(&self, [s, p, o, g]: Row) -> Option<Triple> {
        Some(Triple {
            graph: if g == DEFAULT_GRAPH {
                None
            } else {
                Some(self.terms.iri(g)?)
            },
            s: self.terms.term(s)?,
            p: self.terms.iri(p)?,
            o: self.terms.term(o)?,
        })
    }

    fn table(&self, order: Order) -> &BTreeSet<Row> {
        match order {
            Order::Spo => &self.spo,
            Order::Pos => &self.pos,
            Order::Osp => &self.osp,
        }
    }

    fn table_mut(&mut self, order: Order) -> &mut BTreeSet<Row> {
        match order {
            Order::Spo => &mut self.spo,
            Order::Pos => &mut self.pos,
            Order::Osp => &mut self.osp,
        }
    }
}

/// The order of a table's rows; the graph is always last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Spo,
    Pos,
    Osp,
}

impl Order {
    /// The table a pattern's shape (which of s, p, o are fixed) scans.
    fn for_shape(q: &Pattern) -> Order {
        match (q.s.is_some(), q.p.is_some(), q.o.is_some()) {
            (true, false, true) => Order::Osp,
            (true, _, _) | (false, false, false) => Order::Spo,
            (false, true, _) => Order::Pos,
            (false, false, true) => Order::Osp,
        }
    }

    /// A triple's row in this order, from SPOG.
    fn row<T>(self, [s, p, o, g]: [T; 4]) -> [T; 4] {
        match self {
            Order::Spo => [s, p, o, g],
            Order::Pos => [p, o, s, g],
            Order::Osp => [o, s, p, g],
        }
    }

    /// SPOG from a row in this order.
    fn spog(self, row: Row) -> Row {
        let [a, b, c, g] = row;
        match self {
            Order::Spo => [a, b, c, g],
            Order::Pos => [c, a, b, g],
            Order::Osp => [b, c, a, g],
        }
    }

    fn letter(self) -> char {
        match self {
            Order::Spo => 's',
            Order::Pos => 'p',
            Order::Osp => 'o',
        }
    }
}

/// A pattern resolved to IDs: the table, its fixed leading IDs
/// (`fixed[..len]`) and the graph to keep (`None`: any).
#[derive(Clone, Copy)]
struct Plan {
    order: Order,
    fixed: [Id; 3],
    len: usize,
    graph: Option<Id>,
}

/// A cursor: the table's letter, then the last row returned in hex.
fn cursor(order: Order, row: Row) -> String {
    let [a, b, c, d] = row;
    format!("{}{a:08x}{b:08x}{c:08x}{d:08x}", order.letter())
}

fn parse_cursor(s: &str) -> Result<(Order, Row), String> {
    let malformed = || "malformed cursor (pass a page's `next` as it is)".to_string();
    let Some((letter, digits)) = s.split_at_checked(1) else {
        return Err(malformed());
    };
    let order = match letter {
        "s" => Order::Spo,
        "p" => Order::Pos,
        "o" => Order::Osp,
        _ => return Err(malformed()),
    };
    let mut bytes = [0u8; 16];
    hex::decode_to_slice(digits, &mut bytes).map_err(|_| malformed())?;
    let mut row = [0; 4];
    for (id, chunk) in row.iter_mut().zip(bytes.chunks_exact(4)) {
        *id = Id::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    Ok((order, row))
}

/// The interned terms: each distinct term once, as its bincode encoding,
/// with the number of uses by triples (a triple uses each of its subject,
/// predicate, object and graph once).
#[derive(Default)]
struct Terms {
    /// Term `id` at `slots[id - 1]`; `refs == 0`: a free slot.
    slots: Vec<Slot>,
    /// `(hash of the encoding, ID)`: finds a term's ID, collisions resolved
    /// by comparing encodings.
    by_hash: BTreeSet<(u64, Id)>,
    /// Free slots below the last used one, the lowest reused first so the
    /// slots stay dense and shrink with the graph.
    free: BTreeSet<Id>,
    live: usize,
}

#[derive(Default)]
struct Slot {
    packed: Box<[u8]>,
    refs: u32,
}

impl Terms {
    fn id(&self, term: &Term) -> Option<Id> {
        self.find(&pack(term))
    }

    fn find(&self, packed: &[u8]) -> Option<Id> {
        let h = hash(packed);
        self.by_hash
            .range((h, 0)..=(h, Id::MAX))
            .map(|&(_, id)| id)
            .find(|&id| self.slot(id).is_some_and(|slot| *slot.packed == *packed))
    }

    /// The term's ID, interning it if new, with one more use.
    fn acquire(&mut self, term: &Term) -> Id {
        let packed = pack(term);
        if let Some(id) = self.find(&packed)
            && let Some(slot) = self.slot_mut(id)
        {
            slot.refs += 1;
            return id;
        }
        let id = match self.free.pop_first() {
            Some(id) => id,
            None => {
                self.slots.push(Slot::default());
                self.slots.len() as Id
            }
        };
        self.by_hash.insert((hash(&packed), id));
        if let Some(slot) = self.slot_mut(id) {
            *slot = Slot {
                packed: packed.into_boxed_slice(),
                refs: 1,
            };
        }
        self.live += 1;
        id
    }

    /// One use fewer; the term is freed with its last use.
    fn release(&mut self, id: Id) {
        let Some(slot) = self.slot_mut(id) else {
            return;
        };
        slot.refs = slot.refs.saturating_sub(1);
        if slot.refs > 0 {
            return;
        }
        let packed = std::mem::take(&mut slot.packed);
        self.by_hash.remove(&(hash(&packed), id));
        self.live -= 1;
        self.free.insert(id);
        while let Some(&last) = self.free.last()
            && last as usize == self.slots.len()
        {
            self.free.pop_last();
            self.slots.pop();
        }
        if self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to(self.slots.len() * 2);
        }
    }

    fn term(&self, id: Id) -> Option<Term> {
        let slot = self.slot(id).filter(|slot| slot.refs > 0)?;
        let (term, _) =
            bincode::serde::decode_from_slice(&slot.packed, bincode::config::standard()).ok()?;
        Some(term)
    }

    fn iri(&self, id: Id) -> Option<String> {
        match self.term(id)? {
            Term::Iri(iri) => Some(iri),
            _ => None,
        }
    }

    fn slot(&self, id: Id) -> Option<&Slot> {
        self.slots.get((id as usize).checked_sub(1)?)
    }

    fn slot_mut(&mut self, id: Id) -> Option<&mut Slot> {
        self.slots.get_mut((id as usize).checked_sub(1)?)
    }
}

/// A term's interned form; like [`encode`], it cannot fail.
fn pack(term: &Term) -> Vec<u8> {
    bincode::serde::encode_to_vec(term, bincode::config::standard()).unwrap_or_default()
}

/// A fixed hash (SipHash with zero keys) keeps the view deterministic;
/// terms whose hashes collide are told apart by their encodings.
fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests;
