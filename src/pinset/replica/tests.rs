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
        allocation: None,
        meta: Default::default(),
        origins: Vec::new(),
    })
}

fn peer(id: &str, role: Role) -> PeerView {
    PeerView {
        id: id.into(),
        role,
        ipfs: None,
        disk_free: 0,
        pinset: None,
        held: None,
    }
}

fn view(mut peers: Vec<PeerView>) -> ClusterView {
    peers.sort_by(|a, b| a.id.cmp(&b.id));
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

/// Index records come only from masters: a worker's replica refuses to
/// write one, and a push holding one from a worker is refused whole (a
/// push carries only its sender's own writes).
#[test]
fn index_records_are_written_and_pushed_only_by_masters() {
    let base = Instant::now();
    let (rest, value) = crate::index::metadata::record(CID, "f", &serde_json::json!(1));
    let record = Op::Put {
        key: crate::index::key(crate::index::TAG_META, &rest),
        value,
    };
    let mut worker = Replica::new(
        "w".into(),
        Role::Worker,
        Config::default(),
        Loaded {
            author: 3,
            ..Loaded::default()
        },
        now(base, 0),
    );
    let fx = worker.step(
        Input::Write {
            token: 1,
            op: record.clone(),
        },
        now(base, 1),
    );
    assert!(matches!(written(&fx)[..], [Err(WriteError::MastersOnly)]));
    let mut r = replica(base);
    r.step(
        Input::View(view(vec![peer("w", Role::Worker), peer("m", Role::Master)])),
        now(base, 0),
    );
    let entry = |op: Op| Entry {
        stamp: Stamp {
            hlc: Hlc::at(1_700_000_000_000),
            author: 5,
        },
        seq: 1,
        op,
    };
    let push = |from: &str, ops: Vec<Op>| Input::Push {
        from: from.into(),
        token: 4,
        entries: ops.into_iter().map(entry).collect(),
    };
    let fx = r.step(push("w", vec![pin(), record.clone()]), now(base, 2));
    assert!(
        matches!(&fx[..], [Effect::Reply { result: Err(e), .. }] if e.contains("only by masters")),
        "{fx:?}"
    );
    assert!(!r.vv().contains((5, 1)));
    let fx = r.step(push("m", vec![record]), now(base, 3));
    assert!(matches!(
        fx.last(),
        Some(Effect::Reply { result: Ok(()), .. })
    ));
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
                behind: false,
                collected: None,
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
                behind: false,
                collected: None,
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
                behind: false,
                collected: None,
                entries: vec![entry(a, 3)],
                next: Some(Cursor::Cid(b.into())),
                vv: Some(theirs.clone()),
            }),
        },
        now(base, 1),
    );
    // Asked with an empty vector, so the peer sent its whole state: what
    // it lacks before `b` is pruned here first (nothing in this test).
    assert_eq!(
        fx[0],
        Effect::Prune {
            from: String::new(),
            to: Some(b.into()),
            keep: vec![a.into()],
            seen: theirs.clone(),
        }
    );
    let Effect::Persist(p) = &fx[1] else {
        panic!("{fx:?}")
    };
    assert!(p.unindexed && p.seen.0.is_empty());
    assert!(p.floor.covers(&theirs) && p.floor.contains((5, 3)));
    assert!(matches!(&fx[2], Effect::Pull { from: Cursor::Cid(c), vv: None, .. } if c == b));
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
                behind: false,
                collected: None,
                entries: vec![entry(b, 1)],
                next: None,
                vv: Some(theirs.clone()),
            }),
        },
        now(base, 2),
    );
    assert!(matches!(&fx[0], Effect::Prune { from, to: None, .. } if from == b));
    let Effect::Persist(p) = &fx[1] else {
        panic!("{fx:?}")
    };
    assert!(p.unindexed && p.seen == theirs && p.floor.0.is_empty());
    assert!(r.vv().covers(&theirs) && !r.vv().contains((5, 3)));
}

/// A removal of `CID` by author 5, sequence `seq`.
fn removal(seq: u64) -> Entry {
    Entry {
        stamp: Stamp {
            hlc: Hlc::at(1_700_000_000_000) + seq,
            author: 5,
        },
        seq,
        op: Op::Unpin { cid: CID.into() },
    }
}

fn upto(n: u64) -> Vv {
    let mut v = Vv::default();
    v.0.insert(5, Ranges::upto(n));
    v
}

fn collects(fx: &[Effect]) -> Vec<&Vv> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Collect { upto, .. } => Some(upto),
            _ => None,
        })
        .collect()
}

/// The last page of a session with `w` showing `theirs`.
fn last_page(
    r: &mut Replica,
    session: u64,
    entries: Vec<Entry>,
    theirs: Vv,
    at: Now,
) -> Vec<Effect> {
    r.step(
        Input::Page {
            from: "w".into(),
            session,
            result: Ok(PageAnswer {
                by_cid: false,
                behind: false,
                collected: None,
                entries,
                next: None,
                vv: Some(theirs),
            }),
        },
        at,
    )
}

#[test]
fn removals_are_collected_once_a_later_snapshot_covers_what_any_member_had_seen() {
    let base = Instant::now();
    let mut r = replica(base);
    let (session, ..) = first_pull(&mut r, base);
    // The first tick's snapshot waits: `w` has not been heard.
    assert!(collects(&r.step(Input::Tick, now(base, 1))).is_empty());
    assert_eq!(r.unheard(), ["w"]);
    // `w` had seen 1..=3; this replica takes 1..=2 of them (a page
    // carrying fewer changes than the vector names, as after overtaking).
    last_page(
        &mut r,
        session,
        vec![removal(1), removal(2)],
        upto(3),
        now(base, 2),
    );
    assert!(r.unheard().is_empty());
    assert!(r.vv().covers(&upto(3)), "the page's vector is taken in");
    // Every member has seen 1..=3 and no member more: confirmed at once,
    // collected once the removal horizon has passed.
    let step = Config::default().collect_every.as_millis() as u64;
    let fx = r.step(Input::Tick, now(base, step + 3));
    assert!(collects(&fx).is_empty());
    assert!(r.collected().0.is_empty(), "not before the horizon");
    let fx = r.step(Input::Tick, now(base, step + 3 + horizon_ms()));
    assert!(collects(&fx).contains(&&upto(3)), "{fx:?}");
    assert!(r.collected().covers(&upto(3)));
    // Nothing new: nothing collected again until the periodic recollection.
    let later = 2 * step + 4 + horizon_ms();
    assert!(collects(&r.step(Input::Tick, now(base, later))).is_empty());
}

#[test]
fn a_removal_waits_while_some_member_has_seen_what_others_have_not() {
    let base = Instant::now();
    let mut r = replica(base);
    let (session, ..) = first_pull(&mut r, base);
    // `w` has seen 1..=3, this replica 1..=2 only (change 3 still on its
    // way): 1..=2 is seen by all, but change 3 could still reach this
    // replica from a queue or an old page, so nothing goes yet.
    r.step(
        Input::Push {
            from: "w".into(),
            token: 1,
            entries: vec![removal(1), removal(2)],
        },
        now(base, 1),
    );
    r.reports.insert("w".into(), upto(3));
    let _ = session;
    let step = Config::default().collect_every.as_millis() as u64;
    assert!(collects(&r.step(Input::Tick, now(base, step + 1))).is_empty());
    // Change 3 arrives: the earlier snapshot's "some member" (1..=3) is
    // now covered by what every member has seen; it collects what every
    // member had seen then (1..=2), the later one all three.
    r.step(
        Input::Push {
            from: "w".into(),
            token: 2,
            entries: vec![removal(3)],
        },
        now(base, step + 2),
    );
    assert!(collects(&r.step(Input::Tick, now(base, 2 * step + 3))).is_empty());
    let fx = r.step(Input::Tick, now(base, 2 * step + 3 + horizon_ms()));
    assert!(collects(&fx).contains(&&upto(3)), "{fx:?}");
}

fn horizon_ms() -> u64 {
    Config::default().removal_horizon.as_millis() as u64
}

#[test]
fn a_member_never_heard_blocks_collection_until_an_operator_removes_it() {
    let base = Instant::now();
    let mut r = replica(base);
    let (session, ..) = first_pull(&mut r, base);
    // A second member, met once and gone.
    let mut seen = view(vec![peer("w", Role::Worker), peer("gone", Role::Master)]);
    for p in seen.peers.iter_mut().filter(|p| p.id == "w") {
        p.pinset = Some(42);
    }
    r.step(Input::View(seen), now(base, 1));
    r.step(
        Input::View(view(vec![peer("w", Role::Worker)])),
        now(base, 2),
    );
    last_page(&mut r, session, vec![removal(1)], upto(1), now(base, 3));
    let step = Config::default().collect_every.as_millis() as u64;
    assert!(collects(&r.step(Input::Tick, now(base, step + 4))).is_empty());
    assert_eq!(r.unheard(), ["gone"]);
    r.step(
        Input::RemoveMember { id: "gone".into() },
        now(base, step + 5),
    );
    r.step(Input::Tick, now(base, 2 * step + 6));
    let fx = r.step(Input::Tick, now(base, 2 * step + 6 + horizon_ms()));
    assert!(collects(&fx).contains(&&upto(1)), "{fx:?}");
}

#[test]
fn a_change_already_seen_is_not_taken_again() {
    let base = Instant::now();
    let mut r = replica(base);
    r.step(
        Input::View(view(vec![peer("w", Role::Worker)])),
        now(base, 0),
    );
    let fx = r.step(
        Input::Push {
            from: "w".into(),
            token: 1,
            entries: vec![removal(1)],
        },
        now(base, 1),
    );
    assert!(matches!(&fx[0], Effect::Persist(p) if p.entries.len() == 1));
    // Again (its removal may since have been collected): answered, not stored.
    let fx = r.step(
        Input::Push {
            from: "w".into(),
            token: 2,
            entries: vec![removal(1)],
        },
        now(base, 2),
    );
    assert!(
        matches!(&fx[0], Effect::Persist(p) if p.entries.is_empty()),
        "{fx:?}"
    );
    assert!(matches!(&fx[1], Effect::Reply { result: Ok(()), .. }));
}

#[test]
fn a_replica_behind_a_peers_collected_removals_asks_it_for_everything() {
    let base = Instant::now();
    // Something seen already, so the first session sends a vector.
    let loaded = Loaded {
        author: 7,
        vv: upto(1),
        ..Loaded::default()
    };
    let mut r = Replica::new(
        "me".into(),
        Role::Worker,
        Config::default(),
        loaded,
        now(base, 0),
    );
    let (session, vv, _) = first_pull(&mut r, base);
    assert_eq!(vv, Some(upto(1)));
    let fx = r.step(
        Input::Page {
            from: "w".into(),
            session,
            result: Ok(PageAnswer {
                by_cid: false,
                behind: true,
                collected: None,
                entries: Vec::new(),
                next: None,
                vv: None,
            }),
        },
        now(base, 2),
    );
    let Some(Effect::Pull {
        to,
        session: full,
        vv,
        from,
    }) = fx.iter().find(|e| matches!(e, Effect::Pull { .. }))
    else {
        panic!("no pull: {fx:?}")
    };
    assert_eq!(
        (to.as_str(), vv, from),
        ("w", &Some(Vv::default()), &Cursor::default())
    );
    // Its first page names what the peer has seen: pushes of those changes
    // are refused until the session is done (it brings them, or a removal
    // it pruned for overtook them).
    let fx = r.step(
        Input::Page {
            from: "w".into(),
            session: *full,
            result: Ok(PageAnswer {
                by_cid: true,
                behind: false,
                collected: None,
                entries: vec![removal(1)],
                next: Some(Cursor::Cid("zz".into())),
                vv: Some(upto(3)),
            }),
        },
        now(base, 3),
    );
    assert!(
        matches!(&fx[0], Effect::Prune { from, to: Some(t), .. } if from.is_empty() && t == "zz")
    );
    let fx = r.step(
        Input::Push {
            from: "w".into(),
            token: 2,
            entries: vec![removal(2)],
        },
        now(base, 4),
    );
    assert!(
        matches!(&fx[..], [Effect::Reply { result: Err(e), .. }] if e.contains("syncing everything")),
        "{fx:?}"
    );
    // A "behind" answer to a session that sent nothing is a peer's error.
    let mut fresh = replica(base);
    let (session, ..) = first_pull(&mut fresh, base);
    let fx = fresh.step(
        Input::Page {
            from: "w".into(),
            session,
            result: Ok(PageAnswer {
                by_cid: false,
                behind: true,
                collected: None,
                entries: Vec::new(),
                next: None,
                vv: None,
            }),
        },
        now(base, 2),
    );
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Pull { .. })),
        "{fx:?}"
    );
}

#[test]
fn a_peers_collection_comes_with_its_last_page_and_moves_the_clock() {
    let base = Instant::now();
    let mut r = replica(base);
    let (session, ..) = first_pull(&mut r, base);
    let far = Hlc::at(1_700_000_000_000 + 30_000);
    let fx = r.step(
        Input::Page {
            from: "w".into(),
            session,
            result: Ok(PageAnswer {
                by_cid: false,
                behind: false,
                entries: Vec::new(),
                next: None,
                vv: Some(upto(2)),
                collected: Some(Collected {
                    vv: upto(2),
                    hlc: far,
                }),
            }),
        },
        now(base, 1),
    );
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Collect { upto: u, .. } if *u == upto(2))),
        "{fx:?}"
    );
    assert!(r.collected().covers(&upto(2)));
    // The vector names changes it never saw stamped: its own next change
    // is later than the peer's clock all the same.
    let fx = r.step(
        Input::Write {
            token: 9,
            op: pin(),
        },
        now(base, 2),
    );
    let stored = fx.iter().find_map(|e| match e {
        Effect::Persist(p) => p.entries.first().cloned(),
        _ => None,
    });
    assert!(stored.is_some_and(|e| e.stamp.hlc > far));
}

#[test]
fn a_confirmed_snapshot_survives_a_restart_and_is_collected_after_the_horizon() {
    let base = Instant::now();
    let confirmed_at = now(base, 0).unix_ms;
    let loaded = Loaded {
        author: 7,
        vv: upto(3),
        confirmed: vec![(confirmed_at, upto(3))],
        ..Loaded::default()
    };
    let at = |ms| now(base, ms);
    let mut r = Replica::new("me".into(), Role::Worker, Config::default(), loaded, at(0));
    // Before the horizon, nothing (and no member heard yet: no new snapshot).
    assert!(collects(&r.step(Input::Tick, at(1))).is_empty());
    let fx = r.step(Input::Tick, at(horizon_ms() + 1));
    assert!(collects(&fx).contains(&&upto(3)), "{fx:?}");
}
