use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn spec(cid: &str) -> PinSpec {
    PinSpec {
        cid: cid.into(),
        name: String::new(),
        replication_min: 2,
        replication_max: 3,
        added_unix_ms: 0,
        allocation: None,
        meta: Default::default(),
        origins: Vec::new(),
    }
}

#[test]
fn cids_are_parsed_and_made_canonical() {
    let v0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";
    assert_eq!(canonical_cid(v0).unwrap(), v0);
    assert_eq!(canonical_cid(&format!(" {v0}\n")).unwrap(), v0);
    let v1 = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
    assert_eq!(canonical_cid(v1).unwrap(), v1);
    // The same CIDv1 in base58btc is one item with its base32 form.
    let c = cid::Cid::try_from(v1).unwrap();
    let b58 = c
        .to_string_of_base(cid::multibase::Base::Base58Btc)
        .unwrap();
    assert_eq!(canonical_cid(&b58).unwrap(), v1);
    for bad in ["", "hello", "Qm123", "bafy!!", &"Qm".repeat(100)] {
        assert!(canonical_cid(bad).is_err(), "{bad:?} accepted");
    }
    // A peer must send the canonical form.
    assert!(Op::Unpin { cid: b58 }.check().is_err());
}

#[test]
fn pin_specs_are_checked() {
    let ok = spec("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o");
    assert!(ok.check().is_ok());
    for bad in [
        PinSpec {
            replication_min: 0,
            ..ok.clone()
        },
        PinSpec {
            replication_min: 4,
            ..ok.clone()
        },
        PinSpec {
            replication_max: 65,
            ..ok.clone()
        },
        PinSpec {
            name: "n".repeat(256),
            ..ok.clone()
        },
        PinSpec {
            cid: "nope".into(),
            ..ok.clone()
        },
    ] {
        assert!(bad.check().is_err(), "{bad:?}");
    }
    let entry = |seq, author| Entry {
        stamp: Stamp { hlc: 1, author },
        seq,
        op: Op::Pin(ok.clone()),
    };
    assert!(entry(1, 7).check().is_ok());
    assert!(entry(0, 7).check().is_err());
    assert!(entry(MAX_SEQ + 1, 7).check().is_err());
    assert!(entry(1, 0).check().is_err());
}

#[test]
fn the_clock_never_runs_back_and_passes_what_it_observes() {
    let mut c = Hlc::new(0);
    let a = c.tick(1000);
    assert_eq!(a, Hlc::at(1000));
    // The wall clock stepping back does not take the clock with it.
    let b = c.tick(900);
    assert!(b > a);
    c.observe(Hlc::at(5000) + 7);
    let d = c.tick(1000);
    assert_eq!(d, Hlc::at(5000) + 8);
    assert_eq!(Hlc::millis(d), 5000);
    // 65,536 changes in one millisecond carry into the next.
    let mut c = Hlc::new(0);
    let first = c.tick(10);
    let mut last = first;
    for _ in 0..70_000 {
        let t = c.tick(10);
        assert!(t > last);
        last = t;
    }
    assert_eq!(Hlc::millis(last), 11);
    // Far-future wall times are clamped, not wrapped.
    assert!(Hlc::new(0).tick(u64::MAX) > 0);
}

#[test]
fn later_stamps_win_ties_go_to_the_higher_replica_and_equal_is_no_change() {
    let s = |hlc, author| (Stamp { hlc, author }, 1);
    assert!(wins(s(1, 1), None));
    assert!(wins(s(2, 1), Some(s(1, 9))));
    assert!(!wins(s(1, 9), Some(s(2, 1))));
    assert!(wins(s(5, 3), Some(s(5, 2))));
    assert!(!wins(s(5, 2), Some(s(5, 3))));
    assert!(!wins(s(5, 2), Some(s(5, 2))));
    // Alike stamps (a faulty replica): the sequence number decides.
    let st = Stamp { hlc: 5, author: 2 };
    assert!(wins((st, 4), Some((st, 3))));
}

/// Applying changes in any order, any number of times, gives one state.
fn apply_all(entries: &[Entry]) -> BTreeMap<String, Entry> {
    let mut state: BTreeMap<String, Entry> = BTreeMap::new();
    for e in entries {
        if wins(e.order(), state.get(e.cid()).map(Entry::order)) {
            state.insert(e.cid().to_owned(), e.clone());
        }
    }
    state
}

proptest! {
    #[test]
    fn merging_commutes_and_is_idempotent(
        ops in prop::collection::vec((0u8..4, 0u64..20, 1u64..4, any::<bool>()), 0..40),
        order in prop::collection::vec(any::<usize>(), 0..80),
    ) {
        let entries: Vec<Entry> = ops.iter().enumerate().map(|(i, &(cid, hlc, author, pin))| {
            let cid = format!("c{cid}");
            Entry {
                stamp: Stamp { hlc, author },
                seq: i as u64 + 1,
                op: if pin { Op::Pin(spec(&cid)) } else { Op::Unpin { cid } },
            }
        }).collect();
        let reference = apply_all(&entries);
        // Any sequence drawn from the entries (repeats allowed) that
        // contains each at least once gives the same state.
        let mut shuffled: Vec<Entry> = order.iter().filter(|_| !entries.is_empty())
            .map(|i| entries[i % entries.len()].clone()).collect();
        shuffled.extend(entries.iter().rev().cloned());
        prop_assert_eq!(
            apply_all(&shuffled).into_iter().map(|(c, e)| (c, e.order())).collect::<Vec<_>>(),
            reference.into_iter().map(|(c, e)| (c, e.order())).collect::<Vec<_>>()
        );
    }

    #[test]
    fn ranges_hold_exactly_what_was_inserted(
        inserts in prop::collection::vec((1u64..60, 0u64..6), 0..30),
        probe in 0u64..70,
    ) {
        let mut r = Ranges::default();
        let mut model = BTreeSet::new();
        for (lo, len) in inserts {
            let grew = r.insert(lo, lo + len);
            let before = model.len();
            model.extend(lo..=lo + len);
            prop_assert_eq!(grew, model.len() > before);
            prop_assert!(r.check().is_ok(), "{:?}", r);
        }
        prop_assert_eq!(r.contains(probe), model.contains(&probe));
        prop_assert_eq!(r.count(), model.len() as u64);
        prop_assert_eq!(r.max(), model.iter().next_back().copied().unwrap_or(0));
        // The gaps up to a bound are exactly what is missing below it.
        let gaps: BTreeSet<u64> = r.gaps(probe).iter().flat_map(|&(lo, hi)| lo..=hi).collect();
        let missing: BTreeSet<u64> = (1..=probe).filter(|s| !model.contains(s)).collect();
        prop_assert_eq!(gaps, missing);
    }

    #[test]
    fn vectors_cover_what_they_took_in(
        a in prop::collection::vec((1u64..4, 1u64..30), 0..20),
        b in prop::collection::vec((1u64..4, 1u64..30), 0..20),
    ) {
        let mut va = Vv::default();
        let mut vb = Vv::default();
        for id in &a { va.insert(*id); }
        for id in &b { vb.insert(*id); }
        let mut u = va.clone();
        u.union(&vb);
        prop_assert!(u.covers(&va) && u.covers(&vb));
        prop_assert_eq!(va.covers(&vb), b.iter().all(|id| va.contains(*id)));
        prop_assert_eq!(u.count(), a.iter().chain(&b).collect::<BTreeSet<_>>().len() as u64);
        // Equal vectors, equal digests.
        let mut again = Vv::default();
        for id in b.iter().chain(&a) { again.insert(*id); }
        prop_assert_eq!(again.digest(), u.digest());
        // Intersection and difference, change by change, and kept well-formed.
        let both = va.intersect(&vb);
        let rest = va.minus(&vb);
        prop_assert!(both.check().is_ok() && rest.check().is_ok());
        for x in 0..4u64 {
            for seq in 1..70u64 {
                let id = (x, seq);
                prop_assert_eq!(both.contains(id), va.contains(id) && vb.contains(id));
                prop_assert_eq!(rest.contains(id), va.contains(id) && !vb.contains(id));
            }
        }
        prop_assert!(vb.covers(&both) && !rest.0.values().any(Ranges::is_empty));
    }
}

#[test]
fn ranges_from_a_peer_are_checked() {
    assert!(Ranges(vec![(1, 5), (7, 9)]).check().is_ok());
    for bad in [
        vec![(0, 5)],
        vec![(3, 2)],
        vec![(1, 5), (6, 9)],
        vec![(5, 9), (1, 2)],
        vec![(1, MAX_SEQ + 1)],
    ] {
        assert!(Ranges(bad.clone()).check().is_err(), "{bad:?}");
    }
    let many = Ranges(
        (0..=MAX_RANGES as u64)
            .map(|i| (3 * i + 1, 3 * i + 1))
            .collect(),
    );
    assert!(many.check().is_err());
    // Inserting past the cap forgets the highest ranges, never merges wrongly.
    let mut r = Ranges::default();
    for i in 0..(MAX_RANGES as u64 + 10) {
        r.insert(3 * i + 1, 3 * i + 1);
    }
    assert_eq!(r.as_slice().len(), MAX_RANGES);
    assert!(r.check().is_ok());
    assert!(r.contains(1) && !r.contains(2));
}
