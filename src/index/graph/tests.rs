use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;

const V0: &str = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";
const V1: &str = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
const XSD_INT: &str = "http://www.w3.org/2001/XMLSchema#integer";

fn iri(s: &str) -> Term {
    Term::Iri(s.into())
}

fn lit(value: &str, datatype: Option<&str>, lang: Option<&str>) -> Term {
    Term::Literal {
        value: value.into(),
        datatype: datatype.map(Into::into),
        lang: lang.map(Into::into),
    }
}

fn triple(s: Term, p: &str, o: Term) -> Triple {
    Triple {
        graph: None,
        s,
        p: p.into(),
        o,
    }
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn add(g: &mut Graph, t: &Triple) {
    let (rest, value) = record(t);
    g.apply(b'g', &rest, Some(&value));
}

fn remove(g: &mut Graph, t: &Triple) {
    let (rest, _) = record(t);
    g.apply(b'g', &rest, None);
}

fn err_of<T: std::fmt::Debug>(r: Result<T, String>) -> String {
    r.expect_err("accepted")
}

// ---- Records and their checks ----

#[test]
fn iris_need_a_scheme_and_no_forbidden_characters() {
    let longest = format!("h:{}", "a".repeat(MAX_IRI - 2));
    for ok in [
        "http://example.org/a",
        "urn:isbn:0451450523",
        "a:b",
        "x+y.z-1:/",
        "http://例え.jp/パス",
        &longest,
    ] {
        assert_eq!(check_iri(ok), Ok(()), "{ok:?}");
    }
    let too_long = format!("h:{}", "a".repeat(MAX_IRI - 1));
    let cases = [
        ("", "bytes"),
        (&too_long, "bytes"),
        ("example.org/a", "no scheme"),
        (":x", "valid scheme"),
        ("1http://x", "valid scheme"),
        ("ht_tp://x", "valid scheme"),
        ("http:", "nothing after"),
        ("http://a b", "contains"),
        ("http://a\tb", "contains"),
        ("http://a\u{2003}b", "contains"),
        ("http://a\u{7f}", "contains"),
        ("http://a\0", "contains"),
    ];
    for (bad, why) in cases {
        let e = err_of(check_iri(bad));
        assert!(e.contains(why), "{bad:?}: {e}");
    }
    for c in ['<', '>', '"', '{', '}', '|', '\\', '^', '`'] {
        assert!(
            check_iri(&format!("http://x/{c}")).is_err(),
            "{c:?} accepted"
        );
    }
}

#[test]
fn triples_are_checked_part_by_part() {
    let base = triple(iri("http://ex/s"), "http://ex/p", lit("v", None, None));
    assert_eq!(check_triple(&base), Ok(()));
    let with = |f: &dyn Fn(&mut Triple)| {
        let mut t = base.clone();
        f(&mut t);
        check_triple(&t)
    };
    let fails_at = |f: &dyn Fn(&mut Triple), part: &str| {
        let e = err_of(with(f));
        assert!(e.starts_with(part), "expected {part}: {e}");
    };

    fails_at(&|t| t.s = lit("x", None, None), "subject");
    fails_at(&|t| t.s = iri("no scheme"), "subject");
    fails_at(&|t| t.p = "p".into(), "predicate");
    fails_at(&|t| t.graph = Some("g".into()), "graph");
    fails_at(&|t| t.o = iri("http://a b"), "object");
    assert_eq!(with(&|t| t.graph = Some("http://ex/g".into())), Ok(()));

    // Literals: bounded, a datatype or a language tag.
    assert_eq!(
        with(&|t| t.o = lit(&"x".repeat(MAX_LITERAL), None, None)),
        Ok(())
    );
    fails_at(
        &|t| t.o = lit(&"x".repeat(MAX_LITERAL + 1), None, None),
        "object",
    );
    assert_eq!(with(&|t| t.o = lit("42", Some(XSD_INT), None)), Ok(()));
    fails_at(&|t| t.o = lit("42", Some("int"), None), "object: datatype");
    fails_at(&|t| t.o = lit("42", Some(XSD_INT), Some("en")), "object");
    for ok in ["en", "en-GB", "zh-Hant-TW", "x-a1b2", "abcdefgh-12345678"] {
        assert_eq!(with(&|t| t.o = lit("hi", None, Some(ok))), Ok(()), "{ok:?}");
    }
    for bad in [
        "",
        "en_GB",
        "abcdefghi",
        "en-",
        "-en",
        "1en",
        "en-123456789",
        "en GB",
    ] {
        fails_at(&|t| t.o = lit("hi", None, Some(bad)), "object");
    }

    // CIDs: only in canonical form.
    for cid in [V0, V1] {
        assert_eq!(with(&|t| t.s = Term::Cid(cid.into())), Ok(()));
        assert_eq!(with(&|t| t.o = Term::Cid(cid.into())), Ok(()));
    }
    let b58 = cid::Cid::try_from(V1)
        .unwrap()
        .to_string_of_base(cid::multibase::Base::Base58Btc)
        .unwrap();
    for bad in [
        V1.to_uppercase(),
        b58,
        format!(" {V1}"),
        "Qm123".into(),
        String::new(),
    ] {
        fails_at(&|t| t.s = Term::Cid(bad.clone()), "subject");
    }
}

#[test]
fn a_triple_always_makes_the_same_record() {
    let t = triple(
        Term::Cid(V1.into()),
        "http://ex/p",
        lit("42", Some(XSD_INT), None),
    );
    let (rest, value) = record(&t);
    assert_eq!(record(&t.clone()), (rest.clone(), value.clone()));
    assert_eq!(rest.len(), 64);
    assert!(
        rest.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(rest, sha_hex(&value));
    assert_eq!(check(&rest, Some(&value)), Ok(()));
    assert_eq!(check(&rest, None), Ok(()));
    assert_eq!(decode(&value), Ok(t.clone()));

    // Any change, the graph included, is another record.
    let named = Triple {
        graph: Some("http://ex/g".into()),
        ..t.clone()
    };
    let typed = Triple {
        o: lit("42", None, None),
        ..t.clone()
    };
    let keys: BTreeSet<String> = [&t, &named, &typed].iter().map(|t| record(t).0).collect();
    assert_eq!(keys.len(), 3);
}

#[test]
fn hostile_records_are_refused_and_ignored() {
    let t = triple(iri("http://ex/s"), "http://ex/p", iri("http://ex/o"));
    let (rest, value) = record(&t);
    let mut g = Graph::default();

    for bad_key in [
        String::new(),
        "abc".into(),
        rest.to_uppercase(),
        format!("{rest}0"),
        rest.replacen(|_| true, "g", 1),
        "é".repeat(32),
    ] {
        assert!(check(&bad_key, None).is_err(), "{bad_key:?}");
        assert!(check(&bad_key, Some(&value)).is_err(), "{bad_key:?}");
        g.apply(b'g', &bad_key, Some(&value));
    }

    // Each value is offered under its own hash, so only the rule at hand can refuse it.
    let mut refused = |v: Vec<u8>, why: &str| {
        let e = err_of(check(&sha_hex(&v), Some(&v)));
        assert!(e.contains(why), "expected {why:?}: {e}");
        g.apply(b'g', &sha_hex(&v), Some(&v));
    };
    refused(Vec::new(), "decode");
    refused(vec![0xff; 10], "decode");
    refused(vec![0; MAX_VALUE + 1], "larger");
    refused([value.clone(), vec![0]].concat(), "after the triple");
    // A length prefix claiming 2⁶⁴ bytes: refused without allocating them.
    refused(
        vec![0, 0, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        "decode",
    );
    // An option tag other than 0 or 1.
    refused([vec![2], value[1..].to_vec()].concat(), "decode");
    // The subject's length (byte 2, after the graph's and the variant's tags)
    // in a longer form: the same triple, other bytes, another key.
    let longer = [&value[..2], &[251, value[2], 0], &value[3..]].concat();
    let (same, _): (Triple, usize) =
        bincode::serde::decode_from_slice(&longer, bincode::config::standard()).unwrap();
    assert_eq!(same, t);
    refused(longer, "canonical");
    refused(
        record(&triple(
            lit("x", None, None),
            "http://ex/p",
            iri("http://ex/o"),
        ))
        .1,
        "subject",
    );
    refused(
        record(&triple(
            Term::Cid(V1.to_uppercase()),
            "http://ex/p",
            iri("http://ex/o"),
        ))
        .1,
        "canonical",
    );

    // A valid value under another triple's key.
    let (other_rest, _) = record(&triple(
        iri("http://ex/s"),
        "http://ex/p",
        iri("http://ex/x"),
    ));
    assert!(err_of(check(&other_rest, Some(&value))).contains("own hash"));
    g.apply(b'g', &other_rest, Some(&value));
    // Another index's tag.
    g.apply(b'm', &rest, Some(&value));

    assert_eq!(g.stats(), GraphStats::default());
    g.apply(b'g', &rest, Some(&value));
    assert_eq!(g.stats().triples, 1);
}

proptest! {
    #[test]
    fn checking_and_applying_any_bytes_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut g = Graph::default();
        let _ = check(&sha_hex(&bytes), Some(&bytes));
        g.apply(b'g', &sha_hex(&bytes), Some(&bytes));
        // A valid record with a few bytes changed: accepted only if it is
        // still a valid triple under its own hash, and then held.
        let t = triple(Term::Cid(V0.into()), "http://ex/p", lit("12", None, Some("en")));
        let mut v = record(&t).1;
        for (i, b) in flips {
            let i = i.index(v.len());
            v[i] = b;
        }
        let ok = check(&sha_hex(&v), Some(&v)).is_ok();
        g.apply(b'g', &sha_hex(&v), Some(&v));
        prop_assert_eq!(g.stats().triples, u64::from(ok) + u64::from(check(&sha_hex(&bytes), Some(&bytes)).is_ok()));
    }
}

// ---- Client input ----

#[test]
fn short_terms_are_cids_or_iris() {
    let parse = |json: &str| serde_json::from_str::<TermInput>(json).unwrap().into_term();
    assert_eq!(parse(r#""http://ex/a""#), Ok(iri("http://ex/a")));
    assert_eq!(parse(&format!("{V0:?}")), Ok(Term::Cid(V0.into())));
    assert_eq!(parse(&format!("{V1:?}")), Ok(Term::Cid(V1.into())));
    assert_eq!(
        parse(&format!("{:?}", V1.to_uppercase())),
        Ok(Term::Cid(V1.into()))
    );
    assert!(err_of(parse(r#""not a term""#)).contains("neither"));
    assert!(parse(r#""""#).is_err());

    let full = r#"{"literal":{"value":"42","datatype":"http://www.w3.org/2001/XMLSchema#integer","lang":null}}"#;
    assert_eq!(parse(full), Ok(lit("42", Some(XSD_INT), None)));
    assert_eq!(
        parse(r#"{"literal":{"value":"hi","lang":"en"}}"#),
        Ok(lit("hi", None, Some("en")))
    );
    assert_eq!(parse(r#"{"iri":"http://ex/a"}"#), Ok(iri("http://ex/a")));
    assert_eq!(
        parse(&format!(r#"{{"cid":{:?}}}"#, V1.to_uppercase())),
        Ok(Term::Cid(V1.into()))
    );
    assert!(parse(r#"{"iri":"bad"}"#).is_err());
    let misspelt = r#"{"literal":{"value":"x","language":"en"}}"#;
    assert!(serde_json::from_str::<TermInput>(misspelt).is_err());
    assert!(parse(r#"{"literal":{"value":"x","datatype":"http://d","lang":"en"}}"#).is_err());
}

#[test]
fn terms_serialize_externally_tagged() {
    let json = |t: &Term| serde_json::to_string(t).unwrap();
    assert_eq!(json(&iri("http://x")), r#"{"iri":"http://x"}"#);
    assert_eq!(json(&Term::Cid(V1.into())), format!(r#"{{"cid":"{V1}"}}"#));
    assert_eq!(
        json(&lit("42", Some(XSD_INT), None)),
        r#"{"literal":{"value":"42","datatype":"http://www.w3.org/2001/XMLSchema#integer","lang":null}}"#
    );
}

#[test]
fn triple_and_pattern_inputs_are_checked() {
    let t: TripleInput = serde_json::from_str(&format!(
        r#"{{"s":"{V1}","p":"http://ex/p","o":{{"literal":{{"value":"x"}}}}}}"#
    ))
    .unwrap();
    assert_eq!(
        t.into_triple(),
        Ok(triple(
            Term::Cid(V1.into()),
            "http://ex/p",
            lit("x", None, None)
        ))
    );
    let literal_subject: TripleInput = serde_json::from_str(
        r#"{"s":{"literal":{"value":"x"}},"p":"http://ex/p","o":"http://ex/o"}"#,
    )
    .unwrap();
    assert!(err_of(literal_subject.into_triple()).starts_with("subject"));
    let bad_object: TripleInput =
        serde_json::from_str(r#"{"s":"http://ex/s","p":"http://ex/p","o":"nope"}"#).unwrap();
    assert!(err_of(bad_object.into_triple()).starts_with("object"));

    let pattern = |json: &str| {
        serde_json::from_str::<PatternInput>(json)
            .unwrap()
            .into_pattern()
    };
    assert_eq!(pattern("{}"), Ok(Pattern::default()));
    assert_eq!(
        pattern(&format!(
            r#"{{"s":"{V1}","p":"http://ex/p","default_graph":true}}"#
        )),
        Ok(Pattern {
            s: Some(Term::Cid(V1.into())),
            p: Some("http://ex/p".into()),
            o: None,
            graph: GraphFilter::Default,
        })
    );
    assert_eq!(
        pattern(r#"{"o":{"literal":{"value":"x"}},"graph":"http://ex/g"}"#).map(|p| (p.o, p.graph)),
        Ok((
            Some(lit("x", None, None)),
            GraphFilter::Named("http://ex/g".into())
        ))
    );
    assert!(pattern(r#"{"graph":"http://ex/g","default_graph":true}"#).is_err());
    assert!(err_of(pattern(r#"{"s":{"literal":{"value":"x"}}}"#)).starts_with("subject"));
    assert!(err_of(pattern(r#"{"p":"p"}"#)).starts_with("predicate"));
    assert!(err_of(pattern(r#"{"graph":"g"}"#)).starts_with("graph"));
    assert!(serde_json::from_str::<PatternInput>(r#"{"subject":"http://ex/s"}"#).is_err());
}

// ---- The view ----

#[test]
fn applying_is_idempotent_and_terms_are_freed() {
    let mut g = Graph::default();
    // One IRI as subject, predicate, object and graph: one term.
    let a = "http://ex/a";
    let t = Triple {
        graph: Some(a.into()),
        s: iri(a),
        p: a.into(),
        o: iri(a),
    };
    add(&mut g, &t);
    add(&mut g, &t);
    assert_eq!(
        g.stats(),
        GraphStats {
            triples: 1,
            terms: 1,
            graphs: 1
        }
    );
    let u = triple(iri(a), "http://ex/p", lit("1", None, None));
    add(&mut g, &u);
    assert_eq!(
        g.stats(),
        GraphStats {
            triples: 2,
            terms: 3,
            graphs: 1
        }
    );
    remove(&mut g, &t);
    remove(&mut g, &t);
    assert_eq!(
        g.stats(),
        GraphStats {
            triples: 1,
            terms: 3,
            graphs: 0
        }
    );
    add(&mut g, &t);
    remove(&mut g, &u);
    assert_eq!(
        g.stats(),
        GraphStats {
            triples: 1,
            terms: 1,
            graphs: 1
        }
    );
    remove(&mut g, &t);
    assert_eq!(g.stats(), GraphStats::default());
    assert!(g.terms.slots.is_empty() && g.terms.by_hash.is_empty() && g.terms.free.is_empty());
}

#[test]
fn a_removal_confirms_the_full_key() {
    // Two triples whose keys share their first 8 bytes, made so by hand
    // (real ones take about 2³² hashes to find): removing one keeps the other.
    let mut g = Graph::default();
    let a = triple(iri("http://ex/a"), "http://ex/p", iri("http://ex/o"));
    let b = triple(iri("http://ex/b"), "http://ex/p", iri("http://ex/o"));
    add(&mut g, &a);
    add(&mut g, &b);
    let key = |t: &Triple| parse_key(&record(t).0).unwrap();
    let b_row = g.find(&key(&b)).unwrap();
    g.by_key.remove(&(short(&key(&b)), b_row));
    g.by_key.insert((short(&key(&a)), b_row));
    remove(&mut g, &a);
    assert!(g.find(&key(&a)).is_none());
    assert_eq!(g.spo.iter().copied().collect::<Vec<_>>(), vec![b_row]);
    assert_eq!(
        g.query(&Pattern::default(), None, 10).unwrap().triples,
        vec![b]
    );
}

#[test]
fn cursors_are_checked_and_node_positions() {
    let mut g = Graph::default();
    for i in 0..5 {
        add(
            &mut g,
            &triple(
                iri("http://ex/s"),
                "http://ex/p",
                lit(&i.to_string(), None, None),
            ),
        );
    }
    let by_s = Pattern {
        s: Some(iri("http://ex/s")),
        ..Pattern::default()
    };
    let page = g.query(&by_s, None, 2).unwrap();
    assert_eq!(page.triples.len(), 2);
    let next = page.next.unwrap();

    for bad in [
        "",
        "s",
        "x",
        "s123",
        "é",
        &format!("x{}", &next[1..]),
        &format!("{}zz", &next[..31]),
        &format!("{next}0"),
    ] {
        assert!(g.query(&by_s, Some(bad), 2).is_err(), "{bad:?}");
    }
    let by_p = Pattern {
        p: Some("http://ex/p".into()),
        ..Pattern::default()
    };
    assert!(err_of(g.query(&by_p, Some(&next), 2)).contains("another shape"));

    // Any well-formed cursor is a position: past the end, or before the start.
    let end = format!("s{}", "f".repeat(32));
    assert_eq!(g.query(&by_s, Some(&end), 2), Ok(Page::default()));
    let start = format!("s{}", "0".repeat(32));
    assert_eq!(g.query(&by_s, Some(&start), 2), g.query(&by_s, None, 2));
    // Limits are taken within 1 to MAX_PAGE.
    assert_eq!(g.query(&by_s, None, 0).unwrap().triples.len(), 1);
    for i in 0..MAX_PAGE {
        add(
            &mut g,
            &triple(
                iri("http://ex/s"),
                "http://ex/q",
                lit(&i.to_string(), None, None),
            ),
        );
    }
    assert_eq!(
        g.query(&by_s, None, usize::MAX).unwrap().triples.len(),
        MAX_PAGE
    );
}

#[test]
fn neighbourhoods_walk_both_ways_hop_by_hop() {
    let mut g = Graph::default();
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|n| iri(&format!("http://ex/{n}")));
    let next = "http://ex/next";
    let other = "http://ex/other";
    for t in [
        triple(a.clone(), next, b.clone()),
        triple(b.clone(), next, c.clone()),
        triple(c.clone(), next, d.clone()),
        triple(b.clone(), other, lit("x", None, None)),
    ] {
        add(&mut g, &t);
    }
    let nodes = |n: &Neighbourhood| n.nodes.iter().cloned().collect::<BTreeSet<_>>();

    let n = g.neighbourhood(&b, 1, None, 100);
    assert_eq!(n.nodes[0], b);
    assert_eq!(
        nodes(&n),
        BTreeSet::from([a.clone(), b.clone(), c.clone(), lit("x", None, None)])
    );
    assert_eq!((n.triples.len(), n.truncated), (3, false));

    let n = g.neighbourhood(&b, 2, Some(&[next.into()]), 100);
    assert_eq!(
        nodes(&n),
        BTreeSet::from([a.clone(), b.clone(), c.clone(), d.clone()])
    );
    assert_eq!(n.nodes.last(), Some(&d));

    let n = g.neighbourhood(&b, 2, None, 2);
    assert_eq!((n.triples.len(), n.truncated), (2, true));
    assert!(!g.neighbourhood(&b, 1, None, 3).truncated);

    let alone = Neighbourhood {
        nodes: vec![b.clone()],
        ..Neighbourhood::default()
    };
    assert_eq!(g.neighbourhood(&b, 0, None, 100), alone);
    assert_eq!(
        g.neighbourhood(&b, 3, Some(&["http://ex/none".into()]), 100),
        alone
    );
    let stranger = iri("http://ex/z");
    assert_eq!(
        g.neighbourhood(&stranger, 3, None, 100).nodes,
        vec![stranger]
    );
}

// ---- The view against a model ----

fn subjects() -> Vec<Term> {
    // `g1` is a subject and a graph name, `a` a subject and a predicate.
    vec![
        iri("http://ex/a"),
        iri("http://ex/b"),
        iri("http://ex/g1"),
        Term::Cid(V0.into()),
        Term::Cid(V1.into()),
    ]
}

fn objects() -> Vec<Term> {
    let mut terms = subjects();
    terms.extend([
        lit("1", None, None),
        lit("1", Some(XSD_INT), None),
        lit("1", None, Some("en")),
    ]);
    terms
}

fn predicates() -> Vec<String> {
    ["http://ex/p", "http://ex/q", "http://ex/a"]
        .map(String::from)
        .to_vec()
}

fn graphs() -> Vec<Option<String>> {
    vec![
        None,
        Some("http://ex/g1".into()),
        Some("http://ex/g2".into()),
    ]
}

fn triple_strategy() -> impl Strategy<Value = Triple> {
    (
        0..subjects().len(),
        0..predicates().len(),
        0..objects().len(),
        0..graphs().len(),
    )
        .prop_map(|(s, p, o, g)| Triple {
            graph: graphs()[g].clone(),
            s: subjects()[s].clone(),
            p: predicates()[p].clone(),
            o: objects()[o].clone(),
        })
}

/// A few triples, and adds (true) and removes of them: so duplicate adds,
/// removes of absent triples and re-adds are common.
fn history() -> impl Strategy<Value = Vec<(bool, Triple)>> {
    prop::collection::vec(triple_strategy(), 1..16).prop_flat_map(|pool| {
        prop::collection::vec((any::<bool>(), 0..pool.len()), 0..60).prop_map(move |ops| {
            ops.into_iter()
                .map(|(add, i)| (add, pool[i].clone()))
                .collect()
        })
    })
}

fn run(history: &[(bool, Triple)], g: &mut Graph, model: &mut BTreeSet<Triple>) {
    for (is_add, t) in history {
        if *is_add {
            add(g, t);
            model.insert(t.clone());
        } else {
            remove(g, t);
            model.remove(t);
        }
    }
}

/// Every pattern over the alphabet, absent terms included: all 8 shapes
/// with every graph filter.
fn all_patterns() -> Vec<Pattern> {
    let terms: Vec<Option<Term>> = std::iter::once(None)
        .chain(objects().into_iter().map(Some))
        .collect();
    let mut preds: Vec<Option<String>> = predicates().into_iter().map(Some).collect();
    preds.extend([None, Some("http://ex/absent".into())]);
    let filters = [
        GraphFilter::Any,
        GraphFilter::Default,
        GraphFilter::Named("http://ex/g1".into()),
        GraphFilter::Named("http://ex/g2".into()),
        GraphFilter::Named("http://ex/a".into()),
    ];
    let mut out = Vec::new();
    for s in &terms {
        for p in &preds {
            for o in &terms {
                for graph in &filters {
                    out.push(Pattern {
                        s: s.clone(),
                        p: p.clone(),
                        o: o.clone(),
                        graph: graph.clone(),
                    });
                }
            }
        }
    }
    out
}

fn matches(q: &Pattern, t: &Triple) -> bool {
    q.s.as_ref().is_none_or(|s| *s == t.s)
        && q.p.as_ref().is_none_or(|p| *p == t.p)
        && q.o.as_ref().is_none_or(|o| *o == t.o)
        && match &q.graph {
            GraphFilter::Any => true,
            GraphFilter::Default => t.graph.is_none(),
            GraphFilter::Named(g) => t.graph.as_ref() == Some(g),
        }
}

/// All matches, page by page; fails on a duplicate or an overfull page.
fn all_pages(g: &Graph, q: &Pattern, limit: usize) -> Result<BTreeSet<Triple>, TestCaseError> {
    let mut seen = BTreeSet::new();
    let mut after = None;
    loop {
        let page = g
            .query(q, after.as_deref(), limit)
            .map_err(TestCaseError::fail)?;
        prop_assert!(page.triples.len() <= limit);
        // A cursor is given only when more matches follow.
        prop_assert!(after.is_none() || !page.triples.is_empty());
        for t in page.triples {
            prop_assert!(seen.insert(t.clone()), "{:?} twice", t);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(seen),
        }
    }
}

/// The view's own bookkeeping: reference counts are the uses by live
/// triples, the tables agree, and freed slots are really free.
fn check_invariants(g: &Graph) -> Result<(), TestCaseError> {
    let mut uses: BTreeMap<Id, u32> = BTreeMap::new();
    for &(short_key, [s, p, o, graph]) in &g.by_key {
        let t = g.triple([s, p, o, graph]).unwrap();
        prop_assert_eq!(short_key, short(&digest(&record(&t).1)));
        for id in [s, p, o, graph]
            .into_iter()
            .filter(|&id| id != DEFAULT_GRAPH)
        {
            *uses.entry(id).or_default() += 1;
        }
    }
    let refs: BTreeMap<Id, u32> = (1..)
        .zip(&g.terms.slots)
        .filter(|(_, s)| s.refs > 0)
        .map(|(id, s)| (id, s.refs))
        .collect();
    prop_assert_eq!(&refs, &uses);
    prop_assert_eq!(g.terms.live, refs.len());
    prop_assert_eq!(g.terms.by_hash.len(), refs.len());
    for &id in &g.terms.free {
        prop_assert!(
            (id as usize) < g.terms.slots.len() && g.terms.slots[id as usize - 1].refs == 0
        );
    }
    prop_assert!(g.terms.slots.last().is_none_or(|s| s.refs > 0));
    prop_assert_eq!(g.terms.free.len() + refs.len(), g.terms.slots.len());
    let spo: BTreeSet<Row> = g.by_key.iter().map(|&(_, row)| row).collect();
    prop_assert_eq!(&g.spo, &spo);
    for order in [Order::Pos, Order::Osp] {
        let back: BTreeSet<Row> = g.table(order).iter().map(|&r| order.spog(r)).collect();
        prop_assert_eq!(&back, &spo);
    }
    prop_assert_eq!(g.per_graph.values().sum::<u64>(), g.by_key.len() as u64);
    Ok(())
}

/// Breadth-first over the model: each term reached with its hop count,
/// and the triples walked.
fn model_walk(
    model: &BTreeSet<Triple>,
    start: &Term,
    depth: u32,
    predicates: Option<&[String]>,
) -> (BTreeMap<Term, u32>, BTreeSet<Triple>) {
    let mut hops = BTreeMap::from([(start.clone(), 0)]);
    let mut walked = BTreeSet::new();
    let mut frontier = vec![start.clone()];
    for hop in 1..=depth {
        let mut next = Vec::new();
        for n in &frontier {
            for t in model {
                if (t.s == *n || t.o == *n) && predicates.is_none_or(|ps| ps.contains(&t.p)) {
                    walked.insert(t.clone());
                    for end in [&t.s, &t.o] {
                        if !hops.contains_key(end) {
                            hops.insert(end.clone(), hop);
                            next.push(end.clone());
                        }
                    }
                }
            }
        }
        frontier = next;
    }
    (hops, walked)
}

fn check_neighbourhood(
    g: &Graph,
    model: &BTreeSet<Triple>,
    start: &Term,
    depth: u32,
    predicates: Option<&[String]>,
    max: usize,
) -> Result<(), TestCaseError> {
    let n = g.neighbourhood(start, depth, predicates, max);
    let (hops, walked) = model_walk(model, start, depth, predicates);
    let nodes: BTreeSet<Term> = n.nodes.iter().cloned().collect();
    let triples: BTreeSet<Triple> = n.triples.iter().cloned().collect();
    prop_assert_eq!(&n.nodes[0], start);
    prop_assert_eq!(nodes.len(), n.nodes.len());
    prop_assert_eq!(triples.len(), n.triples.len());
    prop_assert!(triples.is_subset(&walked));
    // Breadth-first: each node at its true hop count, in order of it.
    let order: Vec<u32> = n
        .nodes
        .iter()
        .map(|t| hops.get(t).copied().unwrap_or(u32::MAX))
        .collect();
    prop_assert!(
        order.windows(2).all(|w| w[0] <= w[1]) && order.iter().all(|&h| h <= depth),
        "{:?}",
        order
    );
    let mut ends: BTreeSet<Term> = triples
        .iter()
        .flat_map(|t| [t.s.clone(), t.o.clone()])
        .collect();
    ends.insert(start.clone());
    prop_assert_eq!(&ends, &nodes);
    if walked.len() > max {
        prop_assert!(n.truncated);
        prop_assert_eq!(triples.len(), max);
    } else {
        prop_assert!(!n.truncated);
        prop_assert_eq!(&triples, &walked);
        prop_assert_eq!(nodes, hops.into_keys().collect::<BTreeSet<_>>());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Queries and counts give exactly the model's matches, for every
    /// shape and graph filter, paged with any limit; neighbourhoods are a
    /// breadth-first walk of the model; removing everything frees every term.
    #[test]
    fn the_view_answers_like_the_model(history in history(), limit in 1usize..4) {
        let mut g = Graph::default();
        let mut model = BTreeSet::new();
        run(&history, &mut g, &mut model);
        check_invariants(&g)?;
        prop_assert_eq!(g.stats().triples, model.len() as u64);

        for q in all_patterns() {
            let expected: BTreeSet<Triple> = model.iter().filter(|t| matches(&q, t)).cloned().collect();
            prop_assert_eq!(&all_pages(&g, &q, limit)?, &expected, "{:?}", q);
            prop_assert_eq!(g.count(&q), expected.len() as u64, "{:?}", q);
        }

        let filters: [Option<Vec<String>>; 3] =
            [None, Some(vec!["http://ex/p".into()]), Some(vec!["http://ex/a".into(), "http://ex/absent".into()])];
        for start in objects().iter().chain([&iri("http://ex/absent")]) {
            for depth in 0..4 {
                for predicates in &filters {
                    for max in [0, 2, 5, usize::MAX] {
                        check_neighbourhood(&g, &model, start, depth, predicates.as_deref(), max)?;
                    }
                }
            }
        }

        for t in &model {
            remove(&mut g, t);
        }
        prop_assert_eq!(g.stats(), GraphStats::default());
        check_invariants(&g)?;
        prop_assert!(g.terms.slots.is_empty());
    }

    /// Paging while the graph changes: every matching triple present for
    /// the whole paging comes exactly once, and every triple returned
    /// matched and was present when its page was read.
    #[test]
    fn cursors_survive_changes(
        history in history(),
        changes in prop::collection::vec((any::<bool>(), triple_strategy()), 0..30),
        pattern in prop::sample::select(all_patterns()),
        limit in 1usize..4,
    ) {
        let mut g = Graph::default();
        let mut model = BTreeSet::new();
        run(&history, &mut g, &mut model);
        let mut stable: BTreeSet<Triple> = model.iter().filter(|t| matches(&pattern, t)).cloned().collect();
        let mut returned = Vec::new();
        let mut changes = changes.chunks(2);
        let mut after: Option<String> = None;
        loop {
            let page = g.query(&pattern, after.as_deref(), limit).map_err(TestCaseError::fail)?;
            for t in &page.triples {
                prop_assert!(matches(&pattern, t) && model.contains(t), "{:?}", t);
            }
            returned.extend(page.triples);
            let Some(next) = page.next else { break };
            after = Some(next);
            if let Some(chunk) = changes.next() {
                for (_, t) in chunk.iter().filter(|(is_add, _)| !is_add) {
                    stable.remove(t);
                }
                run(chunk, &mut g, &mut model);
            }
        }
        for t in &stable {
            prop_assert_eq!(returned.iter().filter(|r| *r == t).count(), 1, "{:?}", t);
        }
        check_invariants(&g)?;
    }
}
