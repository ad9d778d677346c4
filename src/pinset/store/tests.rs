use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::pinset::apply;

fn pin(cid: &str, added: u64) -> Op {
    Op::Pin(PinSpec {
        cid: cid.into(),
        name: format!("n{added}"),
        replication_min: 2,
        replication_max: 3,
        added_unix_ms: added,
    })
}

#[test]
fn leader_appends_commit_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinset.redb");
    let mut s = PinStore::open(&path).unwrap();
    let e = s
        .append_local(
            1,
            vec![pin("a", 1), pin("b", 2), Op::Unpin { cid: "a".into() }],
        )
        .unwrap();
    assert_eq!(e.last().unwrap().index, 3);
    assert!(
        s.pins().unwrap().is_empty(),
        "nothing applied before commit"
    );
    s.commit_to(2).unwrap();
    assert_eq!(s.pins().unwrap().len(), 2);
    drop(s);
    let mut s = PinStore::open(&path).unwrap();
    assert_eq!(
        (s.last(), s.commit_index()),
        (LogPos { epoch: 1, index: 3 }, 2)
    );
    s.commit_to(10).unwrap();
    let pins = s.pins().unwrap();
    assert_eq!(
        pins.iter().map(|p| p.cid.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
}

#[test]
fn a_follower_reports_gaps_and_drops_a_conflicting_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = PinStore::open(&dir.path().join("p.redb")).unwrap();
    let first: Vec<Entry> = (1..=3)
        .map(|i| Entry {
            index: i,
            epoch: 1,
            op: pin(&format!("c{i}"), i),
        })
        .collect();
    // Entries that do not follow what it holds are refused, with where it stands.
    let gap = s
        .append(LogPos { epoch: 1, index: 2 }, &first[2..])
        .unwrap();
    assert_eq!(
        gap,
        Appended::Gap {
            have: LogPos::default()
        }
    );
    assert_eq!(
        s.append(LogPos::default(), &first).unwrap(),
        Appended::Ok(LogPos { epoch: 1, index: 3 })
    );
    s.commit_to(1).unwrap();
    // A new leader (epoch 2) never had entries 2 and 3: its entry 2 replaces them.
    let newer = [Entry {
        index: 2,
        epoch: 2,
        op: pin("x", 9),
    }];
    assert_eq!(
        s.append(LogPos { epoch: 1, index: 1 }, &newer).unwrap(),
        Appended::Ok(LogPos { epoch: 2, index: 2 })
    );
    let log = s.entries(1, 10).unwrap().unwrap();
    assert_eq!(
        log.iter().map(|e| (e.index, e.epoch)).collect::<Vec<_>>(),
        [(1, 1), (2, 2)]
    );
    // Re-sending what it holds changes nothing.
    assert_eq!(
        s.append(LogPos { epoch: 1, index: 1 }, &newer).unwrap(),
        Appended::Ok(LogPos { epoch: 2, index: 2 })
    );
    // A committed entry is never replaced.
    let bad = [Entry {
        index: 1,
        epoch: 5,
        op: pin("y", 1),
    }];
    assert!(matches!(
        s.append(LogPos::default(), &bad),
        Err(PinStoreError::ConflictBelowCommit { .. })
    ));
}

#[test]
fn compaction_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = PinStore::open(&dir.path().join("p.redb")).unwrap();
    s.append_local(1, (0..10).map(|i| pin(&format!("c{i}"), i)).collect())
        .unwrap();
    s.commit_to(10).unwrap();
    s.compact(3).unwrap();
    assert!(
        s.entries(5, 100).unwrap().is_none(),
        "compacted entries need a snapshot"
    );
    assert_eq!(s.entries(8, 100).unwrap().unwrap().len(), 3);
    // Appends after the base still line up.
    s.append_local(2, vec![pin("z", 99)]).unwrap();
    assert_eq!(
        s.last(),
        LogPos {
            epoch: 2,
            index: 11
        }
    );

    let mut t = PinStore::open(&dir.path().join("q.redb")).unwrap();
    let stager = crate::pinset::snapshot::Stager::new(&t);
    stager.begin(1).unwrap();
    stager.add(1, &s.pins().unwrap()).unwrap();
    t.install_staged(
        1,
        LogPos {
            epoch: 1,
            index: 10,
        },
    )
    .unwrap();
    assert_eq!(t.pins().unwrap(), s.pins().unwrap());
    assert_eq!(
        s.pos_at(7).unwrap(),
        LogPos { epoch: 1, index: 7 },
        "the base's position is known after compaction"
    );
    let tail = s.entries(11, 10).unwrap().unwrap();
    assert_eq!(
        t.append(
            LogPos {
                epoch: 1,
                index: 10
            },
            &tail
        )
        .unwrap(),
        Appended::Ok(s.last())
    );
}

#[test]
fn rescue_keeps_the_pins_left_standing_and_empties_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.redb");
    let mut s = PinStore::open(&path).unwrap();
    s.append_local(
        1,
        vec![
            pin("a", 1),
            pin("b", 2),
            Op::Unpin { cid: "a".into() },
            pin("c", 3),
            pin("d", 4),
        ],
    )
    .unwrap();
    s.commit_to(4).unwrap();
    // The cluster lacks entries 2 on: b and c stand (a was unpinned, d
    // never committed, entry 1 is the cluster's too).
    assert_eq!(s.rescue_and_reset(2).unwrap(), 2);
    assert_eq!((s.last(), s.commit_index()), (LogPos::default(), 0));
    assert!(s.pins().unwrap().is_empty());
    let cids = |v: Vec<PinSpec>| v.into_iter().map(|p| p.cid).collect::<Vec<_>>();
    assert_eq!(cids(s.rescued(10).unwrap()), ["b", "c"]);
    drop(s);
    let mut s = PinStore::open(&path).unwrap();
    assert_eq!(
        cids(s.rescued(10).unwrap()),
        ["b", "c"],
        "kept across a restart"
    );
    s.forget_rescued(&["b".to_string()]).unwrap();
    assert_eq!(cids(s.rescued(10).unwrap()), ["c"]);
    // And it follows a leader's log from the start.
    let entries = [Entry {
        index: 1,
        epoch: 2,
        op: pin("x", 9),
    }];
    assert_eq!(
        s.append(LogPos::default(), &entries).unwrap(),
        Appended::Ok(LogPos { epoch: 2, index: 1 })
    );
}

#[test]
fn an_unreadable_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinset.redb");
    std::fs::write(
        &path,
        b"this is not a redb database, and it is long enough to look like one?",
    )
    .unwrap();
    let err = PinStore::open(&path)
        .err()
        .expect("garbage must not open")
        .to_string();
    assert!(err.contains("pinset.redb"), "{err}");
    assert!(
        std::fs::read(&path).unwrap().starts_with(b"this is not"),
        "the file was overwritten"
    );
}

/// What a follower sees: successive leaders, each sharing a prefix of the
/// log with it (never below the commit index), sending their own entries.
#[derive(Debug, Clone)]
enum Step {
    Leader { keep: u64, ops: Vec<(u8, bool)> },
    Commit(u64),
    Compact(u64),
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u64..20, proptest::collection::vec((0u8..8, any::<bool>()), 1..6))
            .prop_map(|(keep, ops)| Step::Leader { keep, ops }),
        2 => (0u64..30).prop_map(Step::Commit),
        1 => (0u64..10).prop_map(Step::Compact),
        1 => Just(Step::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn the_store_matches_a_model_log(steps in proptest::collection::vec(step(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.redb");
        let mut s = PinStore::open(&path).unwrap();
        let mut log: Vec<Entry> = Vec::new();
        let mut commit = 0u64;
        let mut epoch = 0u64;
        for st in steps {
            match st {
                Step::Leader { keep, ops } => {
                    epoch += 1;
                    // The new leader shares the log up to `cut` (at least the commit).
                    let cut = (commit + keep).min(log.len() as u64);
                    log.truncate(cut as usize);
                    let prev = log.last().map_or(LogPos::default(), |e| LogPos { epoch: e.epoch, index: e.index });
                    let new: Vec<Entry> = ops.iter().enumerate().map(|(i, (c, add))| Entry {
                        index: cut + 1 + i as u64,
                        epoch,
                        op: if *add { pin(&format!("c{c}"), u64::from(*c)) } else { Op::Unpin { cid: format!("c{c}") } },
                    }).collect();
                    log.extend(new.iter().cloned());
                    let got = s.append(prev, &new).unwrap();
                    prop_assert_eq!(got, Appended::Ok(LogPos { epoch, index: log.len() as u64 }));
                }
                Step::Commit(i) => {
                    let target = i.min(log.len() as u64).max(commit);
                    commit = s.commit_to(target).unwrap();
                    prop_assert_eq!(commit, target);
                }
                Step::Compact(keep) => { s.compact(keep).unwrap(); }
                Step::Reopen => { drop(s); s = PinStore::open(&path).unwrap(); }
            }
            let mut model = BTreeMap::new();
            for e in &log[..commit as usize] { apply(&mut model, &e.op); }
            let pins: BTreeMap<String, PinSpec> = s.pins().unwrap().into_iter().map(|p| (p.cid.clone(), p)).collect();
            prop_assert_eq!(pins, model);
            prop_assert_eq!(s.commit_index(), commit);
            prop_assert_eq!(s.last().index, log.len() as u64);
            if let Some(tail) = s.entries(commit + 1, 1000).unwrap() {
                prop_assert_eq!(&tail[..], &log[commit as usize..]);
            }
        }
    }
}

/// How long compaction takes on a large log: `cargo test --release --lib
/// compaction_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn compaction_cost() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = PinStore::open(&dir.path().join("p.redb")).unwrap();
    let n = 300_000u64;
    let mut i = 0;
    while i < n {
        let ops = (i..i + 10_000)
            .map(|k| {
                pin(
                    &format!("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy{k}"),
                    k,
                )
            })
            .collect();
        s.append_local(1, ops).unwrap();
        i += 10_000;
    }
    s.commit_to(n).unwrap();
    let t = std::time::Instant::now();
    s.compact(100_000).unwrap();
    println!("compacted {} entries: {:?}", s.base().index, t.elapsed());
}

fn segments(path: &std::path::Path) -> usize {
    use redb::{ReadableDatabase, TableHandle};
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    txn.list_tables()
        .unwrap()
        .filter(|t| t.name().starts_with("log."))
        .count()
}

#[test]
fn the_log_spans_segments_and_compaction_drops_whole_ones() {
    use super::log::SEGMENT;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.redb");
    let mut s = PinStore::open(&path).unwrap();
    let n = 3 * SEGMENT + 10;
    s.append_local(1, (0..n).map(|i| pin(&format!("c{i}"), i)).collect())
        .unwrap();
    assert_eq!(s.entries(SEGMENT - 1, 3).unwrap().unwrap().len(), 3);
    // A conflicting suffix cut across a segment boundary.
    let cut = 2 * SEGMENT - 5;
    let newer: Vec<Entry> = (cut..cut + 3)
        .map(|index| Entry {
            index,
            epoch: 2,
            op: pin("new", index),
        })
        .collect();
    let prev = s.pos_at(cut - 1).unwrap();
    assert_eq!(
        s.append(prev, &newer).unwrap(),
        Appended::Ok(LogPos {
            epoch: 2,
            index: cut + 2
        })
    );
    assert!(s.entries(cut + 3, 10).unwrap().unwrap().is_empty());
    drop(s);
    let mut s = PinStore::open(&path).unwrap();
    assert_eq!(
        s.last(),
        LogPos {
            epoch: 2,
            index: cut + 2
        },
        "found after a reopen"
    );
    s.commit_to(cut + 2).unwrap();
    assert_eq!(s.pins().unwrap().len() as u64, cut - 1 + 1);
    drop(s);
    assert_eq!(segments(&path), 2);
    let mut s = PinStore::open(&path).unwrap();
    s.compact(10).unwrap();
    let base = cut + 2 - 10;
    assert_eq!(s.base().index, base);
    assert!(s.entries(base, 5).unwrap().is_none());
    assert_eq!(s.entries(base + 1, 100).unwrap().unwrap().len(), 10);
    drop(s);
    assert_eq!(segments(&path), 1, "the segment below the base is gone");
    let s = PinStore::open(&path).unwrap();
    assert_eq!(s.last().index, cut + 2);
    assert_eq!(s.base().index, base);
}

#[test]
fn a_log_from_before_segments_is_moved_into_them() {
    use redb::{ReadableDatabase, TableDefinition};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut log = txn
                .open_table(TableDefinition::<u64, &[u8]>::new("log"))
                .unwrap();
            for i in 1..=5u64 {
                log.insert(i, encode(&(1u64, pin(&format!("c{i}"), i))).as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        let _ = db.begin_read().unwrap();
    }
    let mut s = PinStore::open(&path).unwrap();
    assert_eq!(s.last(), LogPos { epoch: 1, index: 5 });
    s.commit_to(5).unwrap();
    assert_eq!(s.pins().unwrap().len(), 5);
    drop(s);
    assert_eq!(segments(&path), 1);
}
