use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::pinset::sync::{Cursor, page};

fn cid(n: u64) -> String {
    // Real CIDs: the entries are checked like a peer's.
    let hash = cid::multihash::Multihash::<64>::wrap(0x12, &[n as u8; 32]).unwrap();
    cid::Cid::new_v1(0x55, hash).to_string()
}

fn entry(n: u64, hlc: u64, author: u64, seq: u64, pin: bool) -> Entry {
    let cid = cid(n);
    Entry {
        stamp: Stamp { hlc, author },
        seq,
        op: if pin {
            Op::Pin(PinSpec {
                cid,
                name: format!("n{hlc}"),
                replication_min: 1,
                replication_max: 2,
                added_unix_ms: hlc,
            })
        } else {
            Op::Unpin { cid }
        },
    }
}

fn persist(entries: Vec<Entry>) -> Persist {
    let mut seen = Vv::default();
    for e in &entries {
        seen.insert(e.id());
    }
    Persist {
        hlc: entries.iter().map(|e| e.stamp.hlc).max().unwrap_or(0),
        entries,
        seen,
        ..Persist::default()
    }
}

#[test]
fn changes_members_and_the_clock_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinset.redb");
    let author;
    {
        let db = PinDb::open(&path).unwrap();
        let loaded = db.load().unwrap();
        author = loaded.author;
        assert_ne!(author, 0);
        let mut p = persist(vec![entry(1, 10, 5, 1, true), entry(2, 11, 5, 2, false)]);
        p.members = vec![(
            "w".into(),
            Some(Member {
                role: crate::role::Role::Worker,
                last_seen_ms: 99,
                left: false,
            }),
        )];
        db.persist(&[p]).unwrap();
    }
    let db = PinDb::open(&path).unwrap();
    let loaded = db.load().unwrap();
    assert_eq!(loaded.author, author, "the replica ID is kept");
    assert_eq!(loaded.hlc, 11);
    assert_eq!(loaded.vv.get(5), Some(&Ranges::upto(2)));
    assert_eq!(loaded.members["w"].last_seen_ms, 99);
    let view = db.view().unwrap();
    assert_eq!(
        view.counts().unwrap(),
        Counts {
            pins: 1,
            tombstones: 1
        }
    );
    assert_eq!(
        view.get(&cid(1)).unwrap().unwrap(),
        entry(1, 10, 5, 1, true)
    );
    assert_eq!(view.pins(None, 10).unwrap().len(), 1);
}

#[test]
fn an_unreadable_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinset.redb");
    std::fs::write(&path, b"not a database at all, just some bytes").unwrap();
    let e = PinDb::open(&path).err().expect("garbage opened");
    assert!(e.to_string().contains("pinset.redb"), "{e}");
}

#[test]
fn a_database_of_the_earlier_log_format_is_moved_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinset.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut pins: redb::Table<&str, &[u8]> =
                txn.open_table(TableDefinition::new("pins")).unwrap();
            for n in 0..3u64 {
                let spec = PinSpec {
                    cid: cid(n),
                    name: format!("old{n}"),
                    replication_min: 2,
                    replication_max: 3,
                    added_unix_ms: 1_000 + n,
                };
                pins.insert(cid(n).as_str(), bin(&spec).as_slice()).unwrap();
            }
            let mut meta: redb::Table<&str, u64> =
                txn.open_table(TableDefinition::new("meta")).unwrap();
            meta.insert("commit", 9).unwrap();
            let mut log: redb::Table<u64, &[u8]> =
                txn.open_table(TableDefinition::new("log.0")).unwrap();
            log.insert(1, [1u8, 2].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let db = PinDb::open(&path).unwrap();
    let view = db.view().unwrap();
    let pins = view.pins(None, 10).unwrap();
    assert_eq!(pins.len(), 3);
    assert_eq!(pins.iter().find(|p| p.cid == cid(1)).unwrap().name, "old1");
    let author = db.load().unwrap().author;
    assert_eq!(view.vv().get(author), Some(&Ranges::upto(3)));
    // Stamped with when each was added: any new change is later.
    assert_eq!(
        view.get(&cid(2)).unwrap().unwrap().stamp.hlc,
        Hlc::at(1_002)
    );
    drop(view);
    // The old tables are gone; a second open changes nothing.
    let names: Vec<String> = {
        let txn = db.db.begin_read().unwrap();
        txn.list_tables()
            .unwrap()
            .map(|t| t.name().to_owned())
            .collect()
    };
    assert!(names.iter().all(|n| n.starts_with("crdt.")), "{names:?}");
    drop(db);
    let again = PinDb::open(&path).unwrap();
    assert_eq!(again.view().unwrap().pins(None, 10).unwrap().len(), 3);
}

proptest! {
    /// The store merges like the model (last writer wins per CID, in any
    /// batching), keeps its index and counters true, and serves pages that
    /// bring a peer with any vector to the same state.
    #[test]
    fn the_store_merges_like_the_model_and_serves_what_a_peer_lacks(
        batches in prop::collection::vec(
            (prop::collection::vec((0u64..6, 0u64..30, 1u64..4, any::<bool>()), 0..8), any::<bool>()),
            1..6),
        known in prop::collection::vec((1u64..4, 1u64..10), 0..6),
        page_size in 1usize..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = PinDb::open(&dir.path().join("p.redb")).unwrap();
        let mut model: BTreeMap<String, Entry> = BTreeMap::new();
        let mut seq: BTreeMap<u64, u64> = BTreeMap::new();
        let mut all = Vec::new();
        for (batch, unindexed) in batches {
            let entries: Vec<Entry> = batch.into_iter().map(|(n, hlc, author, pin)| {
                let s = seq.entry(author).or_default();
                *s += 1;
                entry(n, hlc, author, *s, pin)
            }).collect();
            for e in &entries {
                if wins(e.order(), model.get(e.cid()).map(Entry::order)) {
                    model.insert(e.cid().to_owned(), e.clone());
                }
            }
            all.extend(entries.clone());
            // Some batches as a bulk session stores them: unindexed, covered
            // by the floor.
            let mut p = persist(entries);
            if unindexed {
                p.unindexed = true;
                p.floor = p.seen.clone();
            }
            db.persist(&[p]).unwrap();
        }
        let view = db.view().unwrap();
        let stored = view.entries(None, 100).unwrap();
        prop_assert_eq!(stored.iter().collect::<Vec<_>>(), model.values().collect::<Vec<_>>());
        prop_assert!(view.indexed().unwrap() <= model.len() as u64);
        let pins = model.values().filter(|e| e.is_pin()).count() as u64;
        prop_assert_eq!(view.counts().unwrap(), Counts { pins, tombstones: model.len() as u64 - pins });
        // A peer that has seen `known` (and so holds, by the invariant, at
        // least those changes) pulls pages until done.
        let mut peer: BTreeMap<String, Entry> = BTreeMap::new();
        let mut want = Vv::default();
        for &(author, s) in &known {
            if let Some(e) = all.iter().find(|e| e.id() == (author, s)) {
                want.insert(e.id());
                if wins(e.order(), peer.get(e.cid()).map(Entry::order)) {
                    peer.insert(e.cid().to_owned(), e.clone());
                }
            }
        }
        // By the invariant the peer holds the winners of what it has seen.
        for e in all.iter().filter(|e| want.contains(e.id())) {
            let w = &model[e.cid()];
            if wins(w.order(), peer.get(e.cid()).map(Entry::order)) {
                peer.insert(e.cid().to_owned(), w.clone());
            }
        }
        let mut from = Cursor::default();
        loop {
            let crate::pinset::sync::Page { entries, next, .. } =
                page(&view, &want, &from, page_size, usize::MAX).unwrap();
            for e in entries {
                prop_assert!(!want.contains(e.id()), "sent a change the peer had seen");
                if wins(e.order(), peer.get(e.cid()).map(Entry::order)) {
                    peer.insert(e.cid().to_owned(), e);
                }
            }
            match next {
                Some(n) => { prop_assert!(n > from); from = n; }
                None => break,
            }
        }
        prop_assert_eq!(peer, model);
    }
}

/// What one small durable commit costs here: `cargo test --release --lib
/// commit_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn commit_cost() {
    let dir = tempfile::tempdir().unwrap();
    let db = PinDb::open(&dir.path().join("a.redb")).unwrap();
    let mut times = Vec::new();
    for i in 0..200u64 {
        let t = std::time::Instant::now();
        db.persist(&[persist(vec![entry(i % 200, 1_000 + i, 5, i + 1, true)])])
            .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "durable commit of one change: p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        times[100], times[180], times[199]
    );
}
