//! The embeddings view against brute force, and the records' checks.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::index::View;

fn def(dim: u32, metric: Metric, generation: u64) -> Vec<u8> {
    collection_record(
        "c",
        &CollectionDef {
            dim,
            metric,
            generation,
        },
    )
    .1
}

fn item(generation: u64, vector: Vec<f32>, meta: serde_json::Value) -> Vec<u8> {
    let meta = meta_text(Some(&meta)).unwrap();
    item_record(
        "c",
        "k",
        &ItemRecord {
            generation,
            vector,
            meta,
        },
    )
    .1
}

fn view() -> Embeddings {
    Embeddings {
        auto_build: false,
        ..Embeddings::default()
    }
}

/// Brute force: every item's score, best first.
fn brute(items: &[(String, Vec<f32>)], q: &[f32], metric: Metric) -> Vec<(String, f32)> {
    let mut all: Vec<(String, f32)> = items
        .iter()
        .map(|(k, v)| {
            let s = match metric {
                Metric::Dot => v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(),
                Metric::Cosine => {
                    let d: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
                    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt()
                        * q.iter().map(|x| x * x).sum::<f32>().sqrt();
                    if n > 0.0 { d / n } else { 0.0 }
                }
                Metric::L2 => v
                    .iter()
                    .zip(q)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt(),
            };
            (k.clone(), s)
        })
        .collect();
    all.sort_by(|a, b| {
        let o = a.1.total_cmp(&b.1);
        if metric.higher_is_nearer() {
            o.reverse()
        } else {
            o
        }
    });
    all
}

#[test]
fn records_are_checked() {
    let ok = def(3, Metric::Cosine, 7);
    assert!(check(TAG_COLLECTION, "c", Some(&ok)).is_ok());
    assert!(check(TAG_COLLECTION, "bad name", Some(&ok)).is_err());
    assert!(check(TAG_COLLECTION, "c", Some(&def(0, Metric::L2, 1))).is_err());
    assert!(check(TAG_COLLECTION, "c", Some(&def(MAX_DIM + 1, Metric::L2, 1))).is_err());
    assert!(check(TAG_COLLECTION, "c", Some(b"garbage")).is_err());
    let mut trailing = ok.clone();
    trailing.push(0);
    assert!(check(TAG_COLLECTION, "c", Some(&trailing)).is_err());
    let it = item(7, vec![1.0, 2.0, 3.0], json!({"a": 1}));
    assert!(check(TAG_ITEM, "c/k", Some(&it)).is_ok());
    assert!(check(TAG_ITEM, "c/k/with/slashes", Some(&it)).is_ok());
    assert!(check(TAG_ITEM, "c", Some(&it)).is_err());
    assert!(check(TAG_ITEM, "c/", Some(&it)).is_err());
    assert!(check(TAG_ITEM, "c/k", Some(&item(7, vec![f32::NAN], json!({})))).is_err());
    assert!(
        check(
            TAG_ITEM,
            "c/k",
            Some(&item(7, vec![f32::INFINITY], json!({})))
        )
        .is_err()
    );
    assert!(check(TAG_ITEM, "c/k", Some(&item(7, vec![], json!({})))).is_err());
    assert!(check(TAG_ITEM, "c/k", None).is_ok());
    assert!(meta_text(Some(&json!([1]))).is_err());
    assert!(meta_text(Some(&json!({"x": "y".repeat(MAX_ITEM_META)}))).is_err());
    assert!(check_vector(&[1.0, 2.0], 3).is_err());
}

#[test]
fn items_show_only_under_their_collection_and_generation() {
    let mut v = view();
    // The item arrives before its collection (a sync in key order).
    v.apply(TAG_ITEM, "c/k", Some(&item(7, vec![1.0, 0.0], json!({}))));
    assert!(v.get("c", "k").is_none());
    assert!(v.collection("c").is_none());
    v.apply(TAG_COLLECTION, "c", Some(&def(2, Metric::Cosine, 7)));
    assert_eq!(v.get("c", "k").unwrap().vector, vec![1.0, 0.0]);
    // Created again: a new generation hides the old item.
    v.apply(TAG_COLLECTION, "c", Some(&def(2, Metric::Cosine, 8)));
    assert!(v.get("c", "k").is_none());
    assert_eq!(v.collection("c").unwrap().stray, 1);
    // The old generation back (a later record said so): it shows again.
    v.apply(TAG_COLLECTION, "c", Some(&def(2, Metric::Cosine, 7)));
    assert!(v.get("c", "k").is_some());
    v.apply(TAG_COLLECTION, "c", None);
    assert!(v.collection("c").is_none());
    v.apply(TAG_ITEM, "c/k", None);
    assert!(v.collections().is_empty());
    assert!(v.all_keys("c").is_empty());
}

#[test]
fn searches_filter_on_metadata() {
    let mut v = view();
    v.apply(TAG_COLLECTION, "c", Some(&def(2, Metric::Dot, 1)));
    for (k, x, meta) in [
        ("a", 1.0, json!({"lang": "en"})),
        ("b", 2.0, json!({"lang": "fr"})),
        ("c", 3.0, json!({"tags": ["x", "en"]})),
    ] {
        let rec = ItemRecord {
            generation: 1,
            vector: vec![x, 0.0],
            meta: meta.to_string(),
        };
        v.apply(
            TAG_ITEM,
            &item_record("c", k, &rec).0,
            Some(&item_record("c", k, &rec).1),
        );
    }
    let f = json!({"lang": "en"});
    let found = v
        .search("c", &[1.0, 0.0], 5, f.as_object(), Mode::Auto)
        .unwrap();
    assert_eq!(found.method, "exact");
    assert_eq!(
        found
            .hits
            .iter()
            .map(|h| h.key.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    let f = json!({"tags": "en"});
    let found = v
        .search("c", &[1.0, 0.0], 5, f.as_object(), Mode::Auto)
        .unwrap();
    assert_eq!(
        found
            .hits
            .iter()
            .map(|h| h.key.as_str())
            .collect::<Vec<_>>(),
        ["c"]
    );
    let all = v.search("c", &[1.0, 0.0], 2, None, Mode::Auto).unwrap();
    assert_eq!(
        all.hits.iter().map(|h| h.key.as_str()).collect::<Vec<_>>(),
        ["c", "b"]
    );
    assert!(
        v.search("c", &[1.0], 2, None, Mode::Auto).is_err(),
        "wrong dimension"
    );
    assert!(
        v.search("c", &[f32::NAN, 0.0], 2, None, Mode::Auto)
            .is_err()
    );
    assert!(v.search("nope", &[1.0, 0.0], 2, None, Mode::Auto).is_err());
    assert!(
        v.search("c", &[1.0, 0.0], 2, None, Mode::Approximate)
            .is_err(),
        "no graph yet"
    );
}

fn metric() -> impl Strategy<Value = Metric> {
    prop_oneof![Just(Metric::Cosine), Just(Metric::Dot), Just(Metric::L2)]
}

proptest! {
    /// Exact search equals brute force over the model's items, after any
    /// sequence of upserts and removals (scores compared, ties allowed).
    #[test]
    fn exact_search_is_brute_force(
        metric in metric(),
        ops in prop::collection::vec((0u8..24, prop::option::of(prop::collection::vec(-4i8..5, 4))), 1..120),
        q in prop::collection::vec(-4i8..5, 4),
        k in 1usize..8,
    ) {
        let mut v = view();
        v.apply(TAG_COLLECTION, "c", Some(&def(4, metric, 3)));
        let mut model: std::collections::BTreeMap<String, Vec<f32>> = Default::default();
        for (key, vec) in ops {
            let key = format!("k{key}");
            match vec {
                Some(x) => {
                    let x: Vec<f32> = x.into_iter().map(f32::from).collect();
                    let rec = ItemRecord { generation: 3, vector: x.clone(), meta: String::new() };
                    let (rest, val) = item_record("c", &key, &rec);
                    v.apply(TAG_ITEM, &rest, Some(&val));
                    model.insert(key, x);
                }
                None => {
                    v.apply(TAG_ITEM, &format!("c/{key}"), None);
                    model.remove(&key);
                }
            }
        }
        let q: Vec<f32> = q.into_iter().map(f32::from).collect();
        let items: Vec<(String, Vec<f32>)> = model.clone().into_iter().collect();
        let want = brute(&items, &q, metric);
        let got = v.search("c", &q, k, None, Mode::Exact).unwrap();
        prop_assert_eq!(got.hits.len(), want.len().min(k));
        for (h, w) in got.hits.iter().zip(&want) {
            prop_assert!((h.score - w.1).abs() < 1e-4, "{} vs {}", h.score, w.1);
            prop_assert!((brute(&[(h.key.clone(), model[&h.key].clone())], &q, metric)[0].1 - h.score).abs() < 1e-4);
        }
        prop_assert_eq!(v.collection("c").unwrap().items, model.len());
        for (key, x) in &model {
            prop_assert_eq!(&v.get("c", key).unwrap().vector, x);
        }
    }
}

/// The approximate index finds what exact search finds, for every metric,
/// and keeps doing so for items added and removed after it was built.
#[test]
fn approximate_search_recalls_exact_search() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        let mut v = view();
        v.apply(TAG_COLLECTION, "c", Some(&def(16, metric, 1)));
        let put = |v: &mut Embeddings, i: usize, rng: &mut rand::rngs::StdRng| {
            let x: Vec<f32> = (0..16).map(|_| rng.random_range(-1.0..1.0)).collect();
            let rec = ItemRecord {
                generation: 1,
                vector: x,
                meta: String::new(),
            };
            let (rest, val) = item_record("c", &format!("i{i}"), &rec);
            v.apply(TAG_ITEM, &rest, Some(&val));
        };
        for i in 0..1000 {
            put(&mut v, i, &mut rng);
        }
        v.build_now("c", 1);
        // Changes after the build: new items, removals.
        for i in 1000..1100 {
            put(&mut v, i, &mut rng);
        }
        for i in 0..100 {
            v.apply(TAG_ITEM, &format!("c/i{i}"), None);
        }
        let (mut hit, mut total) = (0, 0);
        for _ in 0..30 {
            let q: Vec<f32> = (0..16).map(|_| rng.random_range(-1.0..1.0)).collect();
            let exact = v.search("c", &q, 10, None, Mode::Exact).unwrap();
            let approx = v.search("c", &q, 10, None, Mode::Approximate).unwrap();
            assert_eq!(approx.method, "approximate");
            // Beyond the graph's breadth: exact, never a short answer.
            let many = v.search("c", &q, 200, None, Mode::Auto).unwrap();
            assert_eq!((many.method, many.hits.len()), ("exact", 200));
            assert!(v.search("c", &q, 200, None, Mode::Approximate).is_err());
            for h in &approx.hits {
                assert!(v.get("c", &h.key).is_some(), "a removed item answered");
            }
            let want: std::collections::BTreeSet<_> =
                exact.hits.iter().map(|h| h.key.clone()).collect();
            hit += approx.hits.iter().filter(|h| want.contains(&h.key)).count();
            total += want.len();
        }
        let recall = hit as f64 / total as f64;
        assert!(recall >= 0.9, "{metric:?}: recall@10 {recall}");
    }
}

/// A due build waits for the collection to go quiet (a bulk load is not
/// rebuilt at every tenth of growth), but not for ever.
#[test]
fn a_build_waits_for_quiet_or_for_max_wait() {
    use std::time::{Duration, Instant};
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut slot = AnnSlot::default();
    assert!(slot.may_start(t0), "never changed: at once");
    slot.changed = Some(t0);
    assert!(!slot.may_start(ms(500)));
    assert!(slot.may_start(ms(1000)), "quiet for a second");
    // Changes every half second: deferred until it has waited 30 s.
    let mut started = None;
    for i in 0..100u64 {
        slot.changed = Some(ms(i * 500));
        if slot.may_start(ms(i * 500 + 1)) {
            started = Some(i * 500);
            break;
        }
    }
    assert_eq!(started, Some(30_000));
    assert!(!slot.may_start(ms(30_002)), "the wait starts again");
}
