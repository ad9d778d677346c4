//! The index framework: keys, checks, and the views kept in step with the
//! replica's database (commits, the journal, a reopen, pruning).

use super::*;
use crate::pinset::db::PinDb;
use crate::pinset::model::{Entry, Op, PinSpec, Stamp, Vv};
use crate::pinset::replica::Persist;

#[test]
fn keys_split_and_never_meet_cids() {
    let k = key(TAG_META, "bafy/name");
    assert_eq!(split(&k), Some((TAG_META, "bafy/name")));
    assert!(is_index_key(&k));
    assert_eq!(split("bafyabc"), None);
    assert!(crate::pinset::canonical_cid(&k).is_err());
    let (lo, hi) = tag_range(TAG_ITEM);
    assert!(
        lo.as_str() < key(TAG_ITEM, "c/k").as_str() && key(TAG_ITEM, "c/k").as_str() < hi.as_str()
    );
    assert!(check("~x/anything", Some(b"")).is_err(), "unknown kind");
    assert!(check("~m", None).is_err());
    assert!(check(&format!("~e/{}", "a".repeat(MAX_KEY)), None).is_err());
    assert!(check("~e/c/k\u{7}", None).is_err());
    assert!(check(&key(TAG_META, "bafy/x"), Some(&vec![b'1'; MAX_VALUE + 1])).is_err());
}

fn entry(seq: u64, op: Op) -> Entry {
    Entry {
        stamp: Stamp {
            hlc: 1000 + seq,
            author: 9,
        },
        seq,
        op,
    }
}

fn persist(entries: Vec<Entry>) -> Persist {
    Persist::of(entries)
}

fn meta_put(seq: u64, cid: &str, field: &str, v: serde_json::Value) -> Entry {
    let (rest, value) = metadata::record(cid, field, &v);
    entry(
        seq,
        Op::Put {
            key: key(TAG_META, &rest),
            value,
        },
    )
}

const CID: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";

/// The view follows commits (small ones through the journal, large ones
/// directly), is rebuilt from the database on reopen, and pins are neither
/// counted as index records nor listed with them.
#[test]
fn views_follow_commits_and_are_rebuilt_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinset.redb");
    {
        let db = PinDb::open(&path).unwrap();
        let pin = entry(
            1,
            Op::Pin(PinSpec {
                cid: CID.into(),
                name: "x".into(),
                replication_min: 1,
                replication_max: 1,
                added_unix_ms: 1,
                allocation: None,
                meta: Default::default(),
                origins: Vec::new(),
            }),
        );
        let counts = db
            .persist(&[persist(vec![
                pin,
                meta_put(2, CID, "name", "report".into()),
            ])])
            .unwrap();
        assert_eq!(counts.pins, 1);
        let m = read(&db.indexes().metadata).get(CID).unwrap();
        assert_eq!(m["name"], "report");
        // A large batch (applied directly, not journaled).
        let many: Vec<Entry> = (0..3000)
            .map(|i| {
                let (rest, value) = peers::record(
                    &format!("l{i}"),
                    "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
                );
                entry(
                    10 + i,
                    Op::Put {
                        key: key(TAG_PEERS, &rest),
                        value,
                    },
                )
            })
            .collect();
        db.persist(&[persist(many)]).unwrap();
        assert_eq!(read(&db.indexes().peers).len(), 3000);
        // A removal (a tombstone) takes the field out.
        db.persist(&[persist(vec![entry(
            5000,
            Op::Clear {
                key: key(TAG_META, &metadata::rest(CID, "name")),
            },
        )])])
        .unwrap();
        assert!(read(&db.indexes().metadata).get(CID).is_none());
        db.persist(&[persist(vec![meta_put(5001, CID, "size", 42.into())])])
            .unwrap();
        let view = db.view().unwrap();
        assert_eq!(
            view.pins(None, 10).unwrap().len(),
            1,
            "index records are not pins"
        );
        assert_eq!(view.counts().unwrap().pins, 1);
    }
    let db = PinDb::open(&path).unwrap();
    assert_eq!(read(&db.indexes().peers).len(), 3000);
    assert_eq!(read(&db.indexes().metadata).get(CID).unwrap()["size"], 42);
    assert_eq!(db.indexes().sizes().documents, 1);
    // Pruning (a peer collected a removal this replica missed) takes the
    // record out of the view too.
    let mut seen = Vv::default();
    seen.insert((9, 5001));
    db.prune("~", None, &[], &seen).unwrap();
    assert!(read(&db.indexes().metadata).get(CID).is_none());
    assert_eq!(read(&db.indexes().peers).len(), 3000);
}

/// A change whose record fails its index's check is refused like any
/// malformed change from a peer.
#[test]
fn index_changes_are_checked_like_any_change() {
    let bad = entry(
        1,
        Op::Put {
            key: key(TAG_ITEM, "c/k"),
            value: b"not bincode".to_vec(),
        },
    );
    assert!(bad.check().is_err());
    let bad = entry(
        1,
        Op::Put {
            key: key(TAG_PEERS, "list/not-a-peer"),
            value: Vec::new(),
        },
    );
    assert!(bad.check().is_err());
    let good = meta_put(1, CID, "tags", serde_json::json!(["a"]));
    assert!(good.check().is_ok());
    assert!(!good.is_pin() && !good.is_removal());
}
