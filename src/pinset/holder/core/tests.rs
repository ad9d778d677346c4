//! The holder's bookkeeping without an IPFS (nothing runs): state changes,
//! paging of what the leader asks, tombstone pruning, no-op orders.

use super::*;

fn holder(dir: &std::path::Path) -> Holder {
    let (tx, _rx) = mpsc::channel(8);
    let store = HeldStore::open(&dir.join("held.redb")).unwrap();
    let settings = HolderSettings {
        role: Role::Worker,
        concurrency: 4,
        pin_timeout: Duration::from_secs(1),
        reconcile: Duration::from_secs(60),
    };
    Holder::new(store, settings, tx).unwrap()
}

fn cid(i: usize) -> String {
    let hash = cid::multihash::Multihash::<64>::wrap(0x12, &(i as u64).to_be_bytes().repeat(4))
        .expect("32 bytes fit");
    cid::Cid::new_v1(0x55, hash).to_string()
}

fn ask(h: &Holder, session: u64, cursor: u64) -> (u64, u64, bool, bool, Vec<(String, HeldState)>) {
    match h.states(session, cursor) {
        HolderResponse::States {
            session,
            cursor,
            reset,
            more,
            items,
        } => (session, cursor, reset, more, items),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_leader_pages_through_everything_then_gets_only_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = holder(dir.path());
    for i in 0..2500 {
        h.take(HolderOrder {
            cid: cid(i),
            pin: true,
        });
    }
    let (session, mut cursor, reset, mut more, items) = ask(&h, 0, 0);
    assert!(reset && more);
    let mut seen: Vec<String> = items.into_iter().map(|(c, _)| c).collect();
    while more {
        let (s, c, reset, m, items) = ask(&h, session, cursor);
        assert_eq!(s, session);
        assert!(!reset);
        seen.extend(items.into_iter().map(|(c, _)| c));
        (cursor, more) = (c, m);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 2500);
    // Nothing new: nothing sent.
    assert!(ask(&h, session, cursor).4.is_empty());
    // One change: only it.
    h.set(&cid(7), HeldState::Pinned, true);
    let (_, _, reset, more, items) = ask(&h, session, cursor);
    assert!(!reset && !more);
    assert_eq!(items, [(cid(7), HeldState::Pinned)]);
    // Another session (a restarted holder, as the leader sees it): from scratch.
    assert!(ask(&h, session + 2, cursor).2);
}

#[test]
fn orders_for_what_is_already_so_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = holder(dir.path());
    h.take(HolderOrder {
        cid: cid(1),
        pin: false,
    });
    assert!(h.items.is_empty(), "unpin of an unknown item is a no-op");
    h.take(HolderOrder {
        cid: cid(1),
        pin: true,
    });
    let v = h.version;
    h.take(HolderOrder {
        cid: cid(1),
        pin: true,
    });
    assert_eq!(h.version, v, "a repeated pin is a no-op");
    assert_eq!(h.queue.len(), 1);
    h.set(&cid(1), HeldState::Pinned, true);
    let v = h.version;
    h.take(HolderOrder {
        cid: cid(1),
        pin: true,
    });
    assert_eq!(h.version, v);
    h.take(HolderOrder {
        cid: cid(1),
        pin: false,
    });
    assert_eq!(h.items[&cid(1)].state, HeldState::Unpinning);
}

#[test]
fn tombstones_are_bounded_and_a_leader_behind_them_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = holder(dir.path());
    let n = MAX_TOMBSTONES + 100;
    for i in 0..n {
        h.set(&cid(i), HeldState::Pinned, true);
    }
    let (session, early, _, _, _) = ask(&h, 0, 0);
    for i in 0..n {
        h.set(&cid(i), HeldState::Absent, false);
    }
    assert!(
        h.tombstones <= MAX_TOMBSTONES,
        "{} tombstones",
        h.tombstones
    );
    assert!(h.items.len() <= MAX_TOMBSTONES);
    assert!(h.floor > early);
    // A cursor from before the pruning gets everything afresh (nothing,
    // since all is absent), not a partial list of changes.
    let (_, _, reset, more, items) = ask(&h, session, early);
    assert!(reset && !more);
    assert!(items.is_empty());
}
