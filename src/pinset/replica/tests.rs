//! Unit tests of the replica core's rules; the simulator (`tests/sim`)
//! drives whole clusters of it through faults.

use std::time::{Duration, Instant};

use super::*;
use crate::pinset::model::{PinSpec, Ranges};
use crate::view::PeerView;

const CID: &str = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";

fn now(base: Instant, ms: u64) -> Now {
    Now {
        at: base + Duration::from_millis(ms),
        unix_ms: 1_700_000_000_000 + ms,
    }
}

fn pin() -> Op {
    Op::Pin(PinSpec {
        cid: CID.into(),
        name: String::new(),
        replication_min: 1,
        replication_max: 2,
        added_unix_ms: 0,
    })
}

fn peer(id: &str, role: Role) -> PeerView {
    PeerView {
        id: id.into(),
        role,
        ipfs: None,
        disk_free: 0,
        pinset: None,
    }
}

fn view(peers: Vec<PeerView>) -> ClusterView {
    ClusterView {
        me: "me".into(),
        role: Some(Role::Worker),
        peers,
        ..ClusterView::default()
    }
}

fn replica(base: Instant) -> Replica {
    let loaded = Loaded {
        author: 7,
        ..Loaded::default()
    };
    Replica::new(
        "me".into(),
        Role::Worker,
        Config::default(),
        loaded,
        now(base, 0),
    )
}

fn written(fx: &[Effect]) -> Vec<&Result<Written, WriteError>> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Written { result, .. } => Some(result),
            _ => None,
        })
        .collect()
}

#[test]
fn a_node_that_never_met_a_member_acknowledges_alone_after_storing() {
    let base = Instant::now();
    let mut r = replica(base);
    let fx = r.step(
        Input::Write {
            token: 1,
            op: pin(),
        },
        now(base, 1),
    );
    assert!(matches!(fx[0], Effect::Persist(ref p) if p.entries.len() == 1));
    assert!(matches!(written(&fx)[..], [Ok(Written { copies: 1, .. })]));
}

#[test]
fn a_known_member_counts_while_away_until_removed() {
    let base = Instant::now();
    let mut r = replica(base);
    r.step(
        Input::View(view(vec![peer("w2", Role::Worker)])),
        now(base, 0),
    );
    assert_eq!(r.counting_members(now(base, 0)), 1);
    // Gone from the view (dead, cut off): still counts, so nothing is stored.
    r.step(Input::View(view(vec![])), now(base, 10));
    let fx = r.step(
        Input::Write {
            token: 1,
            op: pin(),
        },
        now(base, 20),
    );
    assert_eq!(fx.len(), 1);
    assert!(matches!(
        written(&fx)[..],
        [Err(WriteError::Unreachable {
            need: 2,
            reachable: 1
        })]
    ));
    // An operator removes it: writes go through alone again.
    let fx = r.step(Input::RemoveMember { id: "w2".into() }, now(base, 30));
    assert!(matches!(fx[0], Effect::Persist(ref p) if p.members == [("w2".to_string(), None)]));
    let fx = r.step(
        Input::Write {
            token: 2,
            op: pin(),
        },
        now(base, 40),
    );
    assert!(matches!(written(&fx)[..], [Ok(Written { copies: 1, .. })]));
}

#[test]
fn a_member_that_left_gracefully_or_expired_stops_counting() {
    let base = Instant::now();
    let mut r = replica(base);
    r.step(
        Input::View(view(vec![
            peer("w2", Role::Worker),
            peer("w3", Role::Master),
        ])),
        now(base, 0),
    );
    let mut v = view(vec![]);
    v.left = vec!["w2".into()];
    r.step(Input::View(v), now(base, 1));
    assert_eq!(r.counting_members(now(base, 1)), 1);
    let day = Config::default().member_expiry.as_millis() as u64;
    assert_eq!(r.counting_members(now(base, day + 1)), 0);
}

#[test]
fn acknowledged_once_another_master_or_worker_stored_it_leecher_acks_do_not_count() {
    let base = Instant::now();
    let mut r = replica(base);
    r.step(
        Input::View(view(vec![
            peer("l", Role::Leecher),
            peer("w", Role::Worker),
        ])),
        now(base, 0),
    );
    let mut fx = r.step(
        Input::Write {
            token: 9,
            op: pin(),
        },
        now(base, 1),
    );
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Push { .. })),
        "pushed at the flush"
    );
    fx.extend(r.step(Input::Flush, now(base, 1)));
    let pushes: Vec<(String, u64)> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Push { to, batch, .. } => Some((to.clone(), *batch)),
            _ => None,
        })
        .collect();
    assert_eq!(pushes.len(), 2, "pushed to every live peer");
    assert!(written(&fx).is_empty());
    let leecher = pushes.iter().find(|(to, _)| to == "l").unwrap();
    let fx = r.step(
        Input::Pushed {
            to: "l".into(),
            batch: leecher.1,
            result: Ok(()),
        },
        now(base, 2),
    );
    assert!(written(&fx).is_empty());
    let worker = pushes.iter().find(|(to, _)| to == "w").unwrap();
    let fx = r.step(
        Input::Pushed {
            to: "w".into(),
            batch: worker.1,
            result: Ok(()),
        },
        now(base, 3),
    );
    assert!(matches!(written(&fx)[..], [Ok(Written { copies: 2, .. })]));
}

#[test]
fn copies_not_made_in_time_are_a_timeout_with_the_change_kept() {
    let base = Instant::now();
    let mut r = replica(base);
    r.step(
        Input::View(view(vec![peer("w", Role::Worker)])),
        now(base, 0),
    );
    let fx = r.step(
        Input::Write {
            token: 1,
            op: pin(),
        },
        now(base, 1),
    );
    assert!(matches!(fx[0], Effect::Persist(_)));
    let fx = r.step(Input::Tick, now(base, 6_000));
    assert!(matches!(
        written(&fx)[..],
        [Err(WriteError::Timeout {
            need: 2,
            have: 1,
            ..
        })]
    ));
}

#[test]
fn leechers_refuse_writes_and_pushes_come_only_from_live_masters_or_workers() {
    let base = Instant::now();
    let mut r = Replica::new(
        "me".into(),
        Role::Leecher,
        Config::default(),
        Loaded {
            author: 3,
            ..Loaded::default()
        },
        now(base, 0),
    );
    let fx = r.step(
        Input::Write {
            token: 1,
            op: pin(),
        },
        now(base, 1),
    );
    assert!(matches!(written(&fx)[..], [Err(WriteError::ReadOnly)]));
    let entry = Entry {
        stamp: Stamp {
            hlc: Hlc::at(1_700_000_000_000),
            author: 5,
        },
        seq: 1,
        op: pin(),
    };
    let push = |from: &str| Input::Push {
        from: from.into(),
        token: 4,
        entries: vec![entry.clone()],
    };
    let fx = r.step(push("stranger"), now(base, 2));
    assert!(matches!(&fx[..], [Effect::Reply { result: Err(_), .. }]));
    r.step(
        Input::View(view(vec![peer("l2", Role::Leecher)])),
        now(base, 3),
    );
    let fx = r.step(push("l2"), now(base, 4));
    assert!(matches!(&fx[..], [Effect::Reply { result: Err(_), .. }]));
    r.step(
        Input::View(view(vec![peer("w", Role::Worker)])),
        now(base, 5),
    );
    let fx = r.step(push("w"), now(base, 6));
    assert!(matches!(&fx[0], Effect::Persist(p) if p.entries == [entry.clone()]));
    assert!(matches!(&fx[1], Effect::Reply { result: Ok(()), .. }));
    assert!(r.vv().contains((5, 1)));
}

#[test]
fn changes_stamped_far_ahead_of_the_clock_are_refused_whole() {
    let base = Instant::now();
    let mut r = replica(base);
    r.step(
        Input::View(view(vec![peer("w", Role::Worker)])),
        now(base, 0),
    );
    let at = |ms: u64| Entry {
        stamp: Stamp {
            hlc: Hlc::at(1_700_000_000_000 + ms),
            author: 5,
        },
        seq: 1,
        op: pin(),
    };
    let fx = r.step(
        Input::Push {
            from: "w".into(),
            token: 1,
            entries: vec![at(0), at(61_000)],
        },
        now(base, 0),
    );
    assert!(matches!(&fx[..], [Effect::Reply { result: Err(e), .. }] if e.contains("clock")));
    assert!(r.vv().0.is_empty());
}

/// A worker `w` appears with another digest: the replica's first pull
/// from it (session, vector, cursor).
fn first_pull(r: &mut Replica, base: Instant) -> (u64, Option<Vv>, Cursor) {
    let mut w = peer("w", Role::Worker);
    w.pinset = Some(42);
    let fx = r.step(Input::View(view(vec![w])), now(base, 0));
    match fx.into_iter().find(|e| matches!(e, Effect::Pull { .. })) {
        Some(Effect::Pull {
            session, vv, from, ..
        }) => (session, vv, from),
        other => panic!("no pull: {other:?}"),
    }
}

#[test]
fn anti_entropy_pulls_from_a_peer_whose_digest_differs_and_checks_its_pages() {
    let base = Instant::now();
    let mut r = replica(base);
    let (session, vv, from) = first_pull(&mut r, base);
    assert_eq!((vv, from), (Some(Vv::default()), Cursor::default()));
    let entry = |seq| Entry {
        stamp: Stamp {
            hlc: Hlc::at(1_700_000_000_000),
            author: 5,
        },
        seq,
        op: pin(),
    };
    // Out of order: refused, nothing stored, tried again after a back-off.
    let fx = r.step(
        Input::Page {
            from: "w".into(),
            session,
            result: Ok(PageAnswer {
                by_cid: false,
                entries: vec![entry(2), entry(1)],
                next: None,
                vv: Some(Vv::default()),
            }),
        },
        now(base, 1),
    );
    assert!(!fx.iter().any(|e| matches!(e, Effect::Persist(_))));
    let fx = r.step(Input::Tick, now(base, 2_000));
    let Some(Effect::Pull { session, .. }) = fx.iter().find(|e| matches!(e, Effect::Pull { .. }))
    else {
        panic!("no second pull in {fx:?}")
    };
    let mut theirs = Vv::default();
    theirs.0.insert(5, Ranges::upto(3));
    let fx = r.step(
        Input::Page {
            from: "w".into(),
            session: *session,
            result: Ok(PageAnswer {
                by_cid: false,
                entries: vec![entry(3)],
                next: None,
                vv: Some(theirs.clone()),
            }),
        },
        now(base, 2_001),
    );
    assert!(matches!(&fx[0], Effect::Persist(p) if p.entries.len() == 1 && p.seen == theirs));
    assert!(r.vv().covers(&theirs));
    assert!(r.synced_at("w").is_some());
}

#[test]
fn a_session_in_cid_order_stores_unindexed_under_the_floor_and_marks_seen_at_the_end() {
    let base = Instant::now();
    let mut r = replica(base);
    let (session, ..) = first_pull(&mut r, base);
    let entry = |cid: &str, seq| Entry {
        stamp: Stamp {
            hlc: Hlc::at(1_700_000_000_000),
            author: 5,
        },
        seq,
        op: Op::Unpin { cid: cid.into() },
    };
    let (a, b) = (
        "bafkreiaaxy6b6qkqfgaiu3mrbr3ftrpgsf6lwnuo4uu5nkigbgbjhbvxsy",
        "bafkreibuy3hoiyfpgdbkvtjkzxtkgxhyuum3f6h6bcpv5iaojjcbmz5w6m",
    );
    let mut theirs = Vv::default();
    theirs.0.insert(5, Ranges::upto(2));
    // The first page carries the peer's vector; one change in it (seq 3)
    // is one the peer holds but has not named (its own bulk under way).
    let fx = r.step(
        Input::Page {
            from: "w".into(),
            session,
            result: Ok(PageAnswer {
                by_cid: true,
                entries: vec![entry(a, 3)],
                next: Some(Cursor::Cid(b.into())),
                vv: Some(theirs.clone()),
            }),
        },
        now(base, 1),
    );
    let Effect::Persist(p) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert!(p.unindexed && p.seen.0.is_empty());
    assert!(p.floor.covers(&theirs) && p.floor.contains((5, 3)));
    assert!(matches!(&fx[1], Effect::Pull { from: Cursor::Cid(c), vv: None, .. } if c == b));
    assert!(
        r.vv().0.is_empty(),
        "nothing marked seen before the last page"
    );
    let fx = r.step(
        Input::Page {
            from: "w".into(),
            session,
            result: Ok(PageAnswer {
                by_cid: true,
                entries: vec![entry(b, 1)],
                next: None,
                vv: Some(theirs.clone()),
            }),
        },
        now(base, 2),
    );
    let Effect::Persist(p) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert!(p.unindexed && p.seen == theirs && p.floor.0.is_empty());
    assert!(r.vv().covers(&theirs) && !r.vv().contains((5, 3)));
}
