use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::pinset::model::Ranges;
use crate::pinset::replica::Member;
use crate::pinset::sync::ReadView;
use crate::pinset::sync::{Cursor, page};

fn cid(n: u64) -> String {
    // Real CIDs: the entries are checked like a peer's.
    let mut digest = [7u8; 32];
    digest[..8].copy_from_slice(&n.to_be_bytes());
    let hash = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
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
                allocation: None,
                meta: Default::default(),
                origins: Vec::new(),
            })
        } else {
            Op::Unpin { cid }
        },
    }
}

fn persist(entries: Vec<Entry>) -> Persist {
    Persist::of(entries)
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
                    allocation: None,
                    meta: Default::default(),
                    origins: Vec::new(),
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

/// A crash after the journal's commit and before the database's: the
/// change is applied on open, once, and the journal is emptied.
#[test]
fn a_change_only_in_the_journal_is_applied_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinset.redb");
    {
        let db = PinDb::open(&path).unwrap();
        db.persist(&[persist(vec![entry(1, 10, 5, 1, true)])])
            .unwrap();
        // As if the process died right after the journal's commit.
        db.journal()
            .append(&[persist(vec![
                entry(2, 11, 5, 2, true),
                entry(1, 12, 5, 3, false),
            ])])
            .unwrap();
    }
    for _ in 0..2 {
        let db = PinDb::open(&path).unwrap();
        let view = db.view().unwrap();
        assert_eq!(
            view.get(&cid(1)).unwrap().unwrap(),
            entry(1, 12, 5, 3, false)
        );
        assert_eq!(
            view.get(&cid(2)).unwrap().unwrap(),
            entry(2, 11, 5, 2, true)
        );
        assert_eq!(
            view.counts().unwrap(),
            Counts {
                pins: 1,
                tombstones: 1
            }
        );
        assert_eq!(db.load().unwrap().vv.get(5), Some(&Ranges::upto(3)));
        assert!(db.journal().rows_after(0).unwrap().is_empty());
    }
}

/// A row whose transaction failed after the journal took it (and was not
/// re-applied by a reload) is applied with the next batch, not skipped.
#[test]
fn a_row_left_out_by_a_failed_transaction_is_applied_with_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let db = PinDb::open(&dir.path().join("pinset.redb")).unwrap();
    db.persist(&[persist(vec![entry(1, 10, 5, 1, true)])])
        .unwrap();
    // As if the database's transaction failed after this append.
    db.journal()
        .append(&[persist(vec![entry(2, 11, 5, 2, true)])])
        .unwrap();
    db.persist(&[persist(vec![entry(3, 12, 5, 3, true)])])
        .unwrap();
    let view = db.view().unwrap();
    assert!(view.get(&cid(2)).unwrap().is_some(), "row 2 skipped");
    assert_eq!(view.counts().unwrap().pins, 3);
    assert_eq!(view.vv().get(5), Some(&Ranges::upto(3)));
    // And a large batch after another left-out row.
    drop(view);
    db.journal()
        .append(&[persist(vec![entry(4, 13, 5, 4, true)])])
        .unwrap();
    let big = journal::DIRECT_ENTRIES as u64 + 1;
    let bulk: Vec<Entry> = (0..big)
        .map(|n| entry(n + 100, 14, 5, n + 5, true))
        .collect();
    db.persist(&[persist(bulk)]).unwrap();
    let view = db.view().unwrap();
    assert!(view.get(&cid(4)).unwrap().is_some(), "row 4 skipped");
    assert_eq!(view.counts().unwrap().pins, 4 + big);
}

/// Small batches (journaled) and large ones (straight to the database)
/// interleaved, then a reopen: every change there, counted once.
#[test]
fn journaled_and_direct_batches_mix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinset.redb");
    let big = journal::DIRECT_ENTRIES as u64 + 10;
    {
        let db = PinDb::open(&path).unwrap();
        db.persist(&[persist(vec![entry(0, 1, 7, 1, true)])])
            .unwrap();
        let bulk: Vec<Entry> = (1..=big)
            .map(|n| entry(n + 1_000, 2, 7, n + 1, true))
            .collect();
        db.persist(&[persist(bulk)]).unwrap();
        db.persist(&[persist(vec![entry(0, 3, 7, big + 2, false)])])
            .unwrap();
        assert_eq!(
            db.view().unwrap().counts().unwrap(),
            Counts {
                pins: big,
                tombstones: 1
            }
        );
    }
    let db = PinDb::open(&path).unwrap();
    assert_eq!(
        db.view().unwrap().counts().unwrap(),
        Counts {
            pins: big,
            tombstones: 1
        }
    );
    assert_eq!(db.load().unwrap().vv.get(7), Some(&Ranges::upto(big + 2)));
}

/// The child of [`every_acknowledged_batch_survives_sigkill`]: writes
/// batches to the database at `PINDB_CRASH_PATH` and prints each one's
/// number once `persist` returns, until it is killed.
#[test]
#[ignore]
fn crash_child() {
    let Ok(path) = std::env::var("PINDB_CRASH_PATH") else {
        return;
    };
    let first: u64 = std::env::var("PINDB_CRASH_FIRST").unwrap().parse().unwrap();
    let db = PinDb::open(std::path::Path::new(&path)).unwrap();
    use std::io::Write;
    let mut out = std::io::stdout();
    for n in first.. {
        // Author 9, one change a batch; every third re-pins an earlier CID.
        let target = if n % 3 == 0 { n / 3 } else { n };
        db.persist(&[persist(vec![entry(target, n, 9, n, true)])])
            .unwrap();
        writeln!(out, "acked {n}").unwrap();
        out.flush().unwrap();
    }
}

/// SIGKILL at arbitrary points, three times over one database: every batch
/// whose `persist` returned is there after the reopen, the vector says so,
/// and the counters match the state (nothing applied twice).
#[test]
fn every_acknowledged_batch_survives_sigkill() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinset.redb");
    let mut first = 1u64;
    for round in 0..3u64 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "pinset::db::tests::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PINDB_CRASH_PATH", &path)
            .env("PINDB_CRASH_FIRST", first.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Read on a thread, so a child that stalls fails the test in time
        // instead of blocking it.
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Past a checkpoint or two (one a second) in some rounds.
        let stop_after = 200 + round * 700;
        let mut acked = first - 1;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while acked < first - 1 + stop_after {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(e) => panic!("the child stalled or ended at {acked}: {e}"),
            };
            if let Some(n) = line.strip_prefix("acked ") {
                acked = n.parse().unwrap();
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let db = PinDb::open(&path).unwrap();
        let view = db.view().unwrap();
        let loaded = db.load().unwrap();
        let held = loaded.vv.get(9).cloned().unwrap_or_default();
        for n in 1..=acked {
            assert!(
                held.contains(n),
                "round {round}: batch {n} acknowledged, then lost"
            );
            let target = if n % 3 == 0 { n / 3 } else { n };
            let e = view
                .get(&cid(target))
                .unwrap()
                .expect("an acknowledged pin is missing");
            assert!(
                e.stamp.hlc >= n,
                "round {round}: pin {target} older than batch {n}"
            );
        }
        let all = view.entries(None, usize::MAX).unwrap();
        assert_eq!(
            view.counts().unwrap().pins,
            all.len() as u64,
            "round {round}"
        );
        // Numbering goes on after whatever the child reached.
        first = held.max() + 1;
    }
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

/// What one small durable write costs here (through the journal): `cargo
/// test --release --lib commit_cost -- --ignored --nocapture`.
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
        "durable write of one change (journal commit, unsynced apply): p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        times[100], times[180], times[199]
    );
}

#[test]
fn collecting_drops_the_named_tombstones_but_those_held_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinset.redb");
    {
        let db = PinDb::open(&path).unwrap();
        db.persist(&[persist(vec![
            entry(1, 10, 5, 1, false),
            entry(2, 11, 5, 2, false),
            entry(3, 12, 5, 3, true),
            entry(4, 13, 5, 4, false),
            entry(5, 14, 6, 1, false),
        ])])
        .unwrap();
        // A removal overtaken by a pin: its index row goes with it.
        db.persist(&[persist(vec![entry(4, 20, 6, 2, true)])])
            .unwrap();
        let mut upto = Vv::default();
        upto.0.insert(5, Ranges::upto(4));
        // Removals stamped from 11 on are too young yet.
        let (counts, kept) = db.collect(&upto, 11, &|_| false).unwrap();
        assert!(kept.is_empty());
        assert_eq!(counts.tombstones, 2, "only 1 went");
        let held = cid(2);
        let (counts, kept) = db.collect(&upto, 100, &|c: &str| c == held).unwrap();
        assert_eq!(kept, [cid(2)], "a held item's removal waits for its unpin");
        assert_eq!(
            counts,
            Counts {
                pins: 2,
                tombstones: 2
            }
        );
        let view = db.view().unwrap();
        assert_eq!(view.get(&cid(1)).unwrap(), None);
        assert!(view.get(&cid(2)).unwrap().is_some());
        assert!(view.get(&cid(5)).unwrap().is_some(), "not named: kept");
        assert_eq!(view.collected().vv, upto);
        // The vector still names the collected change: it is never taken again.
        assert!(view.vv().contains((5, 1)));
        // Again, the item no longer held: it goes; idempotent otherwise.
        let (counts, kept) = db.collect(&upto, 100, &|_| false).unwrap();
        assert!(kept.is_empty());
        assert_eq!(
            counts,
            Counts {
                pins: 2,
                tombstones: 1
            }
        );
        assert_eq!(db.view().unwrap().indexed().unwrap(), 3);
    }
    {
        // Confirmed snapshots are kept until a collection covers them.
        let db = PinDb::open(&path).unwrap();
        let mut later = Vv::default();
        later.0.insert(5, Ranges::upto(9));
        db.confirm(1000, &later).unwrap();
        db.confirm(900, &Vv::default()).unwrap();
    }
    let db = PinDb::open(&path).unwrap();
    let loaded = db.load().unwrap();
    assert_eq!(loaded.confirmed.len(), 2);
    assert_eq!(loaded.confirmed[1].0, 1000);
    db.collect(&Vv::default(), 0, &|_| false).unwrap();
    assert_eq!(
        db.load().unwrap().confirmed.len(),
        1,
        "the empty one is covered"
    );
    let loaded = db.load().unwrap();
    assert_eq!(loaded.collected.get(5), Some(&Ranges::upto(4)));
    assert_eq!(
        db.view().unwrap().counts().unwrap(),
        Counts {
            pins: 2,
            tombstones: 1
        }
    );
}

#[test]
fn pruning_drops_only_changes_the_peer_saw_and_lacks_in_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let db = PinDb::open(&dir.path().join("pinset.redb")).unwrap();
    let mut cids: Vec<(String, u64)> = (1..=5).map(|n| (cid(n), n)).collect();
    cids.sort();
    let entries: Vec<Entry> = cids
        .iter()
        .enumerate()
        .map(|(i, (_, n))| entry(*n, 10 + i as u64, 5, i as u64 + 1, i % 2 == 0))
        .collect();
    db.persist(&[persist(entries.clone())]).unwrap();
    // The peer saw changes 1..=4 of author 5 and, in [cids[0], cids[4]),
    // holds only cids[1]: cids[0], [2] and [3] were overtaken by removals
    // it collected; cids[4] is outside the range.
    let mut seen = Vv::default();
    seen.0.insert(5, Ranges::upto(4));
    let (counts, gone) = db
        .prune(&cids[0].0, Some(&cids[4].0), &[cids[1].0.clone()], &seen)
        .unwrap();
    assert_eq!(
        gone,
        [cids[0].0.clone(), cids[2].0.clone(), cids[3].0.clone()]
    );
    let view = db.view().unwrap();
    let left: Vec<bool> = cids
        .iter()
        .map(|(c, _)| view.get(c).unwrap().is_some())
        .collect();
    assert_eq!(left, [false, true, false, false, true]);
    assert_eq!(counts, view.counts().unwrap());
    assert_eq!(counts.pins + counts.tombstones, 2);
    // A change the peer never saw stays, whatever the peer lacks.
    let mut unseen = Vv::default();
    unseen.0.insert(9, Ranges::upto(1));
    let (after, gone) = db.prune("", None, &[], &unseen).unwrap();
    assert!(gone.is_empty());
    assert_eq!(after, counts);
}
