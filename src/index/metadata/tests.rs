use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::*;

/// A canonical CIDv1 (raw, "sha2-256" of a made-up digest).
fn cid_of(digest: &[u8]) -> String {
    let digest = cid::multihash::Multihash::<64>::wrap(0x12, digest).unwrap();
    cid::Cid::new_v1(0x55, digest).to_string()
}

fn cid(i: u8) -> String {
    cid_of(&[i; 32])
}

fn doc(value: Value) -> Doc {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn apply_all(view: &mut Metadata, records: &[Record]) {
    for (rest, value) in records {
        view.apply(TAG_META, rest, value.as_deref());
    }
}

fn set(rest: &str, json: &str) -> Record {
    (rest.to_string(), Some(json.as_bytes().to_vec()))
}

fn cids(found: &Found) -> Vec<&str> {
    found.items.iter().map(|(c, _)| c.as_str()).collect()
}

#[test]
fn records_are_checked() {
    let c = cid(1);
    let ok = |field: &str, value: &[u8]| check(&rest(&c, field), Some(value));
    assert_eq!(ok("name", br#""cat.jpg""#), Ok(()));
    assert_eq!(ok("size", b" 12 "), Ok(()));
    assert_eq!(ok(&"f".repeat(MAX_FIELD), b"[1,{\"a\":[]}]"), Ok(()));
    assert_eq!(check(&rest(&c, "gone"), None), Ok(()));
    let (r, v) = record(&c, "tags", &json!(["a", "b"]));
    assert_eq!(check(&r, Some(&v)), Ok(()));

    // Keys.
    let v0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";
    assert_eq!(check(&rest(v0, "name"), None), Ok(()));
    let b58 = cid::Cid::try_from(c.as_str())
        .unwrap()
        .to_string_of_base(cid::multibase::Base::Base58Btc)
        .unwrap();
    for bad in [
        c.clone(),
        format!("{c}/"),
        "nope/name".into(),
        "/name".into(),
        rest(&b58, "name"),
        rest(&format!(" {c}"), "name"),
        rest(&c, "a/b"),
        rest(&c, "tab\there"),
        rest(&c, "nul\0"),
        rest(&c, &"f".repeat(MAX_FIELD + 1)),
    ] {
        assert!(check(&bad, None).is_err(), "{bad:?} accepted");
        assert!(check(&bad, Some(b"1")).is_err(), "{bad:?} accepted");
    }

    // Values.
    for bad in [
        &b"null"[..],
        b" null\n",
        b"",
        b"{",
        b"nan",
        b"1e400",
        b"\"\xff\xfe\"",
        b"\xc3\x28",
        b"[1,]",
        b"1 2",
    ] {
        assert!(
            ok("f", bad).is_err(),
            "{:?} accepted",
            String::from_utf8_lossy(bad)
        );
    }
    let big = format!("\"{}\"", "x".repeat(MAX_VALUE - 2));
    assert_eq!(ok("f", big.as_bytes()), Ok(()));
    let too_big = format!("\"{}\"", "x".repeat(MAX_VALUE - 1));
    assert!(ok("f", too_big.as_bytes()).is_err());
}

#[test]
fn errors_name_the_field() {
    let c = cid(1);
    for value in [&b"null"[..], b"{", &b"[".repeat(40)] {
        let e = check(&rest(&c, "colour"), Some(value)).unwrap_err();
        assert!(e.contains("\"colour\""), "{e}");
    }
    let e = check(&rest(&c, "a/b"), None).unwrap_err();
    assert!(e.contains("\"a/b\""), "{e}");
}

#[test]
fn nesting_is_bounded_exactly_and_without_recursion() {
    let c = cid(1);
    let nest = |depth: usize| {
        let mut s = String::new();
        for i in 0..depth {
            s.push_str(if i % 2 == 0 { "[" } else { "{\"k\":" });
        }
        s.push('1');
        for i in (0..depth).rev() {
            s.push(if i % 2 == 0 { ']' } else { '}' });
        }
        s
    };
    assert_eq!(
        check(&rest(&c, "f"), Some(nest(MAX_DEPTH).as_bytes())),
        Ok(())
    );
    assert!(check(&rest(&c, "f"), Some(nest(MAX_DEPTH + 1).as_bytes())).is_err());
    // Brackets inside strings, escaped quotes included, are not nesting.
    let quoted = format!("[\"\\\"{}\", \"\\\\\"]", "[{".repeat(1000));
    assert_eq!(check(&rest(&c, "f"), Some(quoted.as_bytes())), Ok(()));

    // Hostile input: refused by the byte scan, never parsed.
    let deep = b"[".repeat(100_000);
    assert!(nested_deeper_than(&deep, MAX_DEPTH));
    assert!(check(&rest(&c, "f"), Some(&deep)).is_err());
    let deep = b"[".repeat(60_000);
    let e = check(&rest(&c, "f"), Some(&deep)).unwrap_err();
    assert!(e.contains("nested"), "{e}");
    let deep = "{\"a\":".repeat(10_000);
    assert!(check(&rest(&c, "f"), Some(deep.as_bytes())).is_err());
    let mut view = Metadata::default();
    view.apply(TAG_META, &rest(&c, "f"), Some(deep.as_bytes()));
    assert_eq!(view.stats(), MetadataStats::default());
}

#[test]
fn put_replaces_the_document() {
    let c = cid(1);
    assert_eq!(
        plan_put(None, &c, &doc(json!({"name": "a", "size": 3}))),
        Ok(vec![
            set(&rest(&c, "name"), "\"a\""),
            set(&rest(&c, "size"), "3")
        ])
    );
    let current = doc(json!({"name": "a", "size": 3, "tags": ["x"]}));
    let plan = plan_put(Some(&current), &c, &doc(json!({"name": "a", "size": 4}))).unwrap();
    // The unchanged name is not written again; the missing tags are removed.
    assert_eq!(
        plan,
        vec![set(&rest(&c, "size"), "4"), (rest(&c, "tags"), None)]
    );
    assert_eq!(plan_put(Some(&current), &c, &current), Ok(vec![]));
    assert_eq!(plan_put(Some(&current), &c, &Doc::new()).unwrap().len(), 3);
}

#[test]
fn put_refuses_invalid_documents() {
    let c = cid(1);
    let new = doc(json!({"name": "a"}));
    assert!(plan_put(None, "nope", &new).is_err());
    assert!(plan_put(None, &format!("{c} "), &new).is_err());
    for bad in [
        json!({"name": null}),
        json!({"a/b": 1}),
        json!({"": 1}),
        json!({"x\n": 1}),
        json!({"big": "x".repeat(MAX_VALUE)}),
    ] {
        let e = plan_put(None, &c, &doc(bad.clone()));
        assert!(e.is_err(), "{bad} accepted");
    }
    let e = plan_put(None, &c, &doc(json!({"name": null, "ok": 1}))).unwrap_err();
    assert!(e.contains("\"name\""), "{e}");
}

fn fields(n: usize) -> Doc {
    (0..n).map(|i| (format!("f{i}"), json!(i))).collect()
}

#[test]
fn document_limits_hold_at_write_time() {
    let c = cid(1);
    assert!(plan_put(None, &c, &fields(MAX_FIELDS)).is_ok());
    let e = plan_put(None, &c, &fields(MAX_FIELDS + 1)).unwrap_err();
    assert!(e.contains("fields"), "{e}");
    let big = |n: usize| -> Doc {
        (0..n)
            .map(|i| (format!("f{i}"), json!("x".repeat(60_000))))
            .collect()
    };
    assert!(plan_put(None, &c, &big(4)).is_ok());
    let e = plan_put(None, &c, &big(5)).unwrap_err();
    assert!(e.contains("bytes"), "{e}");

    // Merges are bounded by the document they leave behind.
    let full = fields(MAX_FIELDS);
    assert!(plan_merge(Some(&full), &c, &doc(json!({"more": 1}))).is_err());
    let swap = doc(json!({"more": 1, "f0": null}));
    assert_eq!(plan_merge(Some(&full), &c, &swap).unwrap().len(), 2);
    let current = big(4);
    assert!(plan_merge(Some(&current), &c, &doc(json!({"f4": "x".repeat(60_000)}))).is_err());
    assert!(plan_merge(Some(&current), &c, &doc(json!({"f3": "y"}))).is_ok());
}

#[test]
fn merge_sets_and_removes_fields() {
    let c = cid(1);
    let current = doc(json!({"name": "a", "size": 3, "tags": ["x"]}));
    let patch =
        doc(json!({"name": "a", "size": null, "tags": ["x", "y"], "kind": "image", "never": null}));
    assert_eq!(
        plan_merge(Some(&current), &c, &patch),
        Ok(vec![
            set(&rest(&c, "kind"), "\"image\""),
            (rest(&c, "size"), None),
            set(&rest(&c, "tags"), "[\"x\",\"y\"]"),
        ])
    );
    assert_eq!(plan_merge(None, &c, &doc(json!({"a": null}))), Ok(vec![]));
    assert!(plan_merge(None, "nope", &doc(json!({"a": 1}))).is_err());
    assert!(plan_merge(None, &c, &doc(json!({"a/b": null}))).is_err());
    assert_eq!(
        plan_delete(Some(&current), &c),
        vec![
            (rest(&c, "name"), None),
            (rest(&c, "size"), None),
            (rest(&c, "tags"), None)
        ]
    );
    assert_eq!(plan_delete(None, &c), vec![]);
}

#[test]
fn the_view_holds_valid_fields_only() {
    let (a, b) = (cid(1), cid(2));
    let mut view = Metadata::default();
    apply_all(
        &mut view,
        &[
            set(&rest(&a, "name"), "\"x\""),
            set(&rest(&a, "size"), " 3 "),
            set(&rest(&b, "name"), "\"y\""),
        ],
    );
    assert_eq!(view.get(&a), Some(doc(json!({"name": "x", "size": 3}))));
    assert_eq!(
        view.stats(),
        MetadataStats {
            documents: 2,
            fields: 3
        }
    );

    // A value that fails the checks counts as absent.
    view.apply(TAG_META, &rest(&a, "size"), Some(b"null"));
    assert_eq!(view.get(&a), Some(doc(json!({"name": "x"}))));
    view.apply(TAG_META, &rest(&a, "name"), Some(b"\xff"));
    assert_eq!(view.get(&a), None);
    assert_eq!(
        view.stats(),
        MetadataStats {
            documents: 1,
            fields: 1
        }
    );
    assert_eq!(view.find("name", &json!("x"), None, 10), Found::default());

    // Malformed keys and other kinds are ignored.
    for rest in ["", "/", "nope/name", &b.clone(), &format!("{b}/a/b")] {
        view.apply(TAG_META, rest, Some(b"1"));
        view.apply(TAG_META, rest, None);
    }
    view.apply(b'g', &rest(&b, "name"), None);
    assert_eq!(view.get(&b), Some(doc(json!({"name": "y"}))));
    view.apply(TAG_META, &rest(&b, "name"), None);
    assert_eq!(view.stats(), MetadataStats::default());
    assert!(view.docs.is_empty() && view.table.is_empty());
}

#[test]
fn find_matches_values_and_array_elements() {
    let (a, b, c) = (cid(1), cid(2), cid(3));
    let mut view = Metadata::default();
    apply_all(
        &mut view,
        &[
            set(&rest(&a, "tags"), r#"["cat", "pet", ["cat"]]"#),
            set(&rest(&b, "tags"), r#""cat""#),
            set(&rest(&c, "tags"), r#"[["cat"]]"#),
            set(&rest(&a, "dims"), r#"{"w": 2, "h": 1}"#),
            set(&rest(&b, "size"), "1"),
            set(&rest(&c, "size"), "1.0"),
        ],
    );
    let mut by_cid = [a.as_str(), b.as_str()];
    by_cid.sort();
    assert_eq!(cids(&view.tagged("cat", None, 10)), by_cid);
    assert_eq!(cids(&view.tagged("pet", None, 10)), [a.as_str()]);
    // Elements are one level deep; a whole array is a value too.
    let mut nested = [a.as_str(), c.as_str()];
    nested.sort();
    assert_eq!(cids(&view.find("tags", &json!(["cat"]), None, 10)), nested);
    assert_eq!(
        cids(&view.find("tags", &json!([["cat"]]), None, 10)),
        [c.as_str()]
    );
    // Objects compare whatever the order of their keys; 1 is not 1.0.
    assert_eq!(
        cids(&view.find("dims", &json!({"h": 1, "w": 2}), None, 10)),
        [a.as_str()]
    );
    assert_eq!(cids(&view.find("size", &json!(1), None, 10)), [b.as_str()]);
    assert_eq!(
        cids(&view.find("size", &json!(1.0), None, 10)),
        [c.as_str()]
    );
    assert_eq!(view.find("nothing", &json!(1), None, 10), Found::default());

    let first = view.tagged("cat", None, 1);
    assert_eq!(cids(&first), [by_cid[0]]);
    assert_eq!(first.next.as_deref(), Some(by_cid[0]));
    let second = view.tagged("cat", first.next.as_deref(), 1);
    assert_eq!(cids(&second), [by_cid[1]]);
    assert_eq!(second.next, None);
}

#[test]
fn names_are_searched_by_prefix_in_name_order() {
    let mut view = Metadata::default();
    let names = [
        (1, "\"beta\""),
        (2, "\"alpha\""),
        (3, "\"alp\""),
        (4, "[\"alpine\"]"),
        (5, "\"alpha\""),
        (6, "7"),
    ];
    for (i, name) in names {
        view.apply(TAG_META, &rest(&cid(i), "name"), Some(name.as_bytes()));
    }
    let mut alpha = [cid(2), cid(5)];
    alpha.sort();
    let want = [cid(3), alpha[0].clone(), alpha[1].clone()];
    let all = view.name_prefix("alp", None, 10).unwrap();
    assert_eq!(
        cids(&all),
        want.iter().map(|c| c.as_str()).collect::<Vec<_>>()
    );
    assert_eq!(all.next, None);

    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let page = view.name_prefix("alp", cursor.as_deref(), 1).unwrap();
        got.extend(page.items.into_iter().map(|(c, _)| c));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(got, want);
    assert_eq!(view.name_prefix("", None, 10).unwrap().items.len(), 4);
    assert_eq!(
        view.name_prefix("alpine", None, 10).unwrap(),
        Found::default()
    );
    // A cursor before the prefix starts at the prefix.
    let before = format!("{}/\"a\"", cid(9));
    assert_eq!(
        cids(&view.name_prefix("b", Some(&before), 10).unwrap()),
        [cid(1).as_str()]
    );
    for bad in ["", "nocid", "/\"a\"", &format!("{}/a", cid(1))] {
        assert!(
            view.name_prefix("a", Some(bad), 10).is_err(),
            "{bad:?} accepted"
        );
    }
}

#[test]
fn pages_hold_one_to_max_page_documents() {
    let mut view = Metadata::default();
    for i in 0..=255u8 {
        for j in 0..5u8 {
            view.apply(TAG_META, &rest(&cid_of(&[i, j]), "kind"), Some(b"\"k\""));
        }
    }
    assert_eq!(view.stats().documents, 1280);
    assert_eq!(view.list(None, 0).items.len(), 1);
    let page = view.find("kind", &json!("k"), None, usize::MAX);
    assert_eq!(page.items.len(), MAX_PAGE);
    assert!(page.next.is_some());
}

// ---------------------------------------------------------------------------
// Property tests: the view against a model, and against reordering.

const FIELDS: [&str; 5] = ["name", "tags", "size", "kind", "x"];
const WORDS: [&str; 6] = ["a", "ab", "abc", "b", "a\"", "é"];
const CIDS: u8 = 4;

fn word() -> impl Strategy<Value = Value> {
    prop::sample::select(&WORDS[..]).prop_map(Value::from)
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => word(),
        2 => (0i64..3).prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => Just(json!(1.5)),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => leaf(),
        3 => prop::collection::vec(leaf(), 0..3).prop_map(Value::from),
        1 => prop::collection::vec(prop::collection::vec(word(), 0..2).prop_map(Value::from), 0..2)
            .prop_map(Value::from),
        1 => (word(), leaf()).prop_map(|(a, b)| json!({"k": a, "j": b})),
    ]
}

fn document(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Doc> {
    prop::collection::btree_map(prop::sample::select(&FIELDS[..]), values, 0..4)
        .prop_map(|m| m.into_iter().map(|(f, v)| (f.to_string(), v)).collect())
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Doc),
    Merge(u8, Doc),
    Delete(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..CIDS, document(value())).prop_map(|(c, d)| Op::Put(c, d)),
        3 => (0..CIDS, document(prop_oneof![3 => value(), 1 => Just(Value::Null)]))
            .prop_map(|(c, d)| Op::Merge(c, d)),
        1 => (0..CIDS).prop_map(Op::Delete),
    ]
}

fn cid_of_op(op: &Op) -> String {
    match op {
        Op::Put(c, _) | Op::Merge(c, _) | Op::Delete(c) => cid(*c),
    }
}

/// Plans `op` against the view's document, checking every record planned.
fn plan(view: &Metadata, op: &Op) -> Vec<Record> {
    let c = cid_of_op(op);
    let current = view.get(&c);
    let records = match op {
        Op::Put(_, new) => plan_put(current.as_ref(), &c, new).unwrap(),
        Op::Merge(_, patch) => plan_merge(current.as_ref(), &c, patch).unwrap(),
        Op::Delete(_) => plan_delete(current.as_ref(), &c),
    };
    for (rest, value) in &records {
        assert_eq!(check(rest, value.as_deref()), Ok(()));
    }
    records
}

/// What `op` does to a model of the documents.
fn update(model: &mut BTreeMap<String, Doc>, op: &Op) {
    let c = cid_of_op(op);
    let mut after = model.remove(&c).unwrap_or_default();
    match op {
        Op::Put(_, new) => after = new.clone(),
        Op::Merge(_, patch) => {
            for (f, v) in patch {
                match v {
                    Value::Null => after.remove(f),
                    v => after.insert(f.clone(), v.clone()),
                };
            }
        }
        Op::Delete(_) => after.clear(),
    }
    if !after.is_empty() {
        model.insert(c, after);
    }
}

/// Every page of a query, checking each page's size and cursor.
fn all_pages(
    limits: &[usize],
    mut page: impl FnMut(Option<&str>, usize) -> Found,
) -> Vec<(String, Doc)> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for round in 0.. {
        assert!(round < 1000, "paging never ends");
        let limit = limits[round % limits.len()];
        let found = page(cursor.as_deref(), limit);
        match found.next {
            Some(next) => {
                assert_eq!(found.items.len(), limit, "a short page with more to come");
                items.extend(found.items);
                cursor = Some(next);
            }
            None => {
                assert!(found.items.len() <= limit);
                items.extend(found.items);
                return items;
            }
        }
    }
    unreachable!()
}

fn has(value: &Value, q: &Value) -> bool {
    value == q || matches!(value, Value::Array(items) if items.contains(q))
}

fn query_values() -> Vec<Value> {
    let mut values: Vec<Value> = WORDS.iter().map(|w| json!(w)).collect();
    values.extend([
        json!(0),
        json!(1),
        json!(2),
        json!(true),
        json!(1.5),
        json!([]),
        json!(["a"]),
    ]);
    values
}

fn check_queries(view: &Metadata, model: &BTreeMap<String, Doc>, limits: &[usize]) {
    for (c, d) in model {
        assert_eq!(view.get(c).as_ref(), Some(d));
    }
    for c in 0..CIDS {
        assert_eq!(view.get(&cid(c)).as_ref(), model.get(&cid(c)));
    }
    let everything: Vec<(String, Doc)> =
        model.iter().map(|(c, d)| (c.clone(), d.clone())).collect();
    assert_eq!(
        all_pages(limits, |after, n| view.list(after, n)),
        everything
    );
    assert_eq!(
        view.stats(),
        MetadataStats {
            documents: model.len() as u64,
            fields: model.values().map(|d| d.len() as u64).sum(),
        }
    );
    for field in FIELDS {
        for q in query_values() {
            let want: Vec<_> = everything
                .iter()
                .filter(|(_, d)| d.get(field).is_some_and(|v| has(v, &q)))
                .cloned()
                .collect();
            let got = all_pages(limits, |after, n| view.find(field, &q, after, n));
            assert_eq!(got, want, "find {field} = {q}");
        }
    }
    for tag in WORDS {
        let want: Vec<_> = everything
            .iter()
            .filter(|(_, d)| d.get("tags").is_some_and(|v| has(v, &json!(tag))))
            .cloned()
            .collect();
        assert_eq!(
            all_pages(limits, |after, n| view.tagged(tag, after, n)),
            want
        );
    }
    for prefix in ["", "a", "ab", "a\"", "b", "é", "c"] {
        let mut want: Vec<_> = everything
            .iter()
            .filter_map(|(c, d)| match d.get("name") {
                Some(Value::String(n)) if n.starts_with(prefix) => {
                    Some((json!(n).to_string(), c.clone(), d.clone()))
                }
                _ => None,
            })
            .collect();
        want.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let want: Vec<_> = want.into_iter().map(|(_, c, d)| (c, d)).collect();
        let got = all_pages(limits, |after, n| {
            view.name_prefix(prefix, after, n).unwrap()
        });
        assert_eq!(got, want, "names starting with {prefix:?}");
    }
}

const DEEP: &[u8] = b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]";

/// A record that fails [`check`] for a valid key, or a malformed key.
fn garbage() -> impl Strategy<Value = Record> {
    (
        0..CIDS,
        prop::sample::select(&FIELDS[..]),
        prop::sample::select(vec![&b"null"[..], b"[", b"\xff", b"", DEEP]),
        any::<bool>(),
    )
        .prop_map(|(c, f, v, bad_key)| {
            let rest = if bad_key {
                format!("{}/{f}/x", cid(c))
            } else {
                rest(&cid(c), f)
            };
            (rest, Some(v.to_vec()))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever a peer sends, checking it and applying it never panics.
    #[test]
    fn hostile_records_never_panic(
        rest in prop_oneof![any::<String>(), "[a-z0-9/]{0,80}", Just(format!("{}/f", cid(1)))],
        value in prop::option::of(prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            "[\\[\\]{}\":,1a\\\\ ]{0,64}".prop_map(String::into_bytes),
        ]),
    ) {
        let _ = check(&rest, value.as_deref());
        let mut view = Metadata::default();
        view.apply(TAG_META, &rest, value.as_deref());
        let ok = check(&rest, value.as_deref()).is_ok() && value.is_some();
        prop_assert_eq!(view.stats().fields, u64::from(ok));
    }

    /// The byte scan measures the nesting the parser sees.
    #[test]
    fn the_depth_scan_agrees_with_the_parser(
        shape in prop::collection::vec(any::<bool>(), 0..40),
        filler in "[\\[\\]{}\"\\\\a]{0,8}",
    ) {
        let mut value = json!(filler);
        for &array in &shape {
            value = if array { json!([1, value]) } else { json!({"k": value, "[": "]"}) };
        }
        let ok = check(&rest(&cid(1), "f"), Some(value.to_string().as_bytes())).is_ok();
        prop_assert_eq!(ok, shape.len() <= MAX_DEPTH);
    }

    /// Guarantee: the view answers every query as a model of the documents
    /// does, when puts, merges and deletes are planned against the view and
    /// applied record by record.
    #[test]
    fn the_view_answers_like_the_model(
        ops in prop::collection::vec(op(), 1..25),
        limits in prop::collection::vec(1usize..4, 1..4),
    ) {
        let mut view = Metadata::default();
        let mut model = BTreeMap::new();
        for op in &ops {
            let c = cid_of_op(op);
            let seen = view.get(&c);
            prop_assert_eq!(seen.as_ref(), model.get(&c));
            let records = plan(&view, op);
            apply_all(&mut view, &records);
            update(&mut model, op);
        }
        check_queries(&view, &model, &limits);
        prop_assert!(view.docs.values().all(|d| !d.is_empty()));
        prop_assert!(view.table.values().all(|t| !t.is_empty()));
    }

    /// Guarantee: the view is a function of each key's last write, whatever
    /// order records arrive in and however often (the replicated store
    /// applies a record only if it is at least as new as the key's current).
    #[test]
    fn the_view_does_not_depend_on_record_order(
        ops in prop::collection::vec(op(), 1..25),
        junk in prop::collection::vec((0usize..25, garbage()), 0..6),
        order in prop::collection::vec(any::<u16>(), 1..64),
        repeats in prop::collection::vec(0usize..200, 0..10),
    ) {
        let mut first = Metadata::default();
        let mut stream: Vec<Record> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            for (at, record) in &junk {
                if *at == i {
                    apply_all(&mut first, std::slice::from_ref(record));
                    stream.push(record.clone());
                }
            }
            let records = plan(&first, op);
            apply_all(&mut first, &records);
            stream.extend(records);
        }
        // The stamp of a record is its place in the stream.
        let mut arrival: Vec<usize> = (0..stream.len()).collect();
        arrival.sort_by_key(|&i| (order[i % order.len()], i));
        arrival.extend(repeats.iter().filter(|&&r| r < stream.len()));
        let mut second = Metadata::default();
        let mut newest: BTreeMap<&str, usize> = BTreeMap::new();
        for i in arrival {
            let (rest, value) = &stream[i];
            if newest.get(rest.as_str()).is_none_or(|&n| n <= i) {
                newest.insert(rest, i);
                second.apply(TAG_META, rest, value.as_deref());
            }
        }
        prop_assert_eq!(&first.docs, &second.docs);
        prop_assert_eq!(&first.table, &second.table);
        prop_assert_eq!(first.fields, second.fields);
    }
}
