//! The holder's bookkeeping without an IPFS (nothing runs): state changes,
//! paging of what the leader asks, tombstone pruning, no-op orders.

use super::*;

fn holder(_dir: &std::path::Path) -> Core {
    let limits = Limits {
        role: Role::Worker,
        concurrency: 4,
        reconcile: Duration::from_secs(60),
        restart_grace: Duration::from_secs(600),
    };
    Core::new(limits, [], 0, 7, Instant::now())
}

fn cid(i: usize) -> String {
    let hash = cid::multihash::Multihash::<64>::wrap(0x12, &(i as u64).to_be_bytes().repeat(4))
        .expect("32 bytes fit");
    cid::Cid::new_v1(0x55, hash).to_string()
}

fn ask(h: &Core, session: u64, cursor: u64) -> (u64, u64, bool, bool, Vec<(String, HeldState)>) {
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
    // As if the pin went through: ours.
    h.set(&cid(1), HeldState::Pinned, true);
    let item = h.items.get_mut(&cid(1)).unwrap();
    (item.held, item.claimed) = (true, true);
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
    assert_counts_match(&h);
    // A cursor from before the pruning gets everything afresh (nothing,
    // since all is absent), not a partial list of changes.
    let (_, _, reset, more, items) = ask(&h, session, early);
    assert!(reset && !more);
    assert!(items.is_empty());
}

const LEADER: &str = "leader";

fn ready(limits: Limits, held: &[String], max_epoch: u64) -> (Core, Instant) {
    let now = Instant::now();
    let mut h = Core::new(limits, held.iter().cloned(), max_epoch, 7, now);
    h.step(Input::Ipfs { ready: true }, now);
    (h, now)
}

fn worker(concurrency: usize) -> Limits {
    Limits {
        role: Role::Worker,
        concurrency,
        reconcile: Duration::from_secs(60),
        restart_grace: Duration::from_secs(600),
    }
}

fn orders(epoch: u64, seq: u64, list: &[(usize, bool)]) -> HolderRequest {
    HolderRequest::Orders {
        epoch,
        seq,
        orders: list
            .iter()
            .map(|&(i, pin)| HolderOrder { cid: cid(i), pin })
            .collect(),
        providers: Vec::new(),
    }
}

fn send(h: &mut Core, from: &str, req: HolderRequest, follows: Option<(&str, u64)>) -> Vec<Effect> {
    let leader = follows.map(|(l, e)| (l.to_owned(), e));
    h.step(
        Input::Request {
            from: from.into(),
            req,
            leader,
        },
        Instant::now(),
    )
}

fn reply(fx: &[Effect]) -> &HolderResponse {
    let replies: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Reply(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 1, "one reply per request: {fx:?}");
    replies[0]
}

/// The IPFS calls asked: (cid, pin, claimed) for a pin, (cid, false, true)
/// for an unpin (only ever of a claimed item).
fn calls(fx: &[Effect]) -> Vec<(String, bool, bool)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Pin { cid, claimed } => Some((cid.clone(), true, *claimed)),
            Effect::Unpin { cid } => Some((cid.clone(), false, true)),
            _ => None,
        })
        .collect()
}

/// Orders a pin of cid 2 (batch 1 at epoch 1): with one call slot, it
/// keeps the slot busy until its `done`.
fn occupy_the_slot(h: &mut Core) {
    send(h, LEADER, orders(1, 1, &[(2, true)]), Some((LEADER, 1)));
}

/// A call ended; a pin that did not find the user's pin got as far as its
/// claim.
fn done(h: &mut Core, i: usize, pin: bool, result: Result<bool, String>) -> Vec<Effect> {
    let claimed = pin && result != Ok(true);
    h.step(
        Input::Done {
            cid: cid(i),
            pin,
            result,
            claimed,
        },
        Instant::now(),
    )
}

/// Contract rule 6: orders only from the leader the holder follows, at its
/// epoch, never below the fence; each batch once; the fence is stored
/// before the reply.
#[test]
fn orders_are_taken_only_from_the_followed_leader_at_its_epoch() {
    let refused = |r: &HolderResponse| matches!(r, HolderResponse::Refused { .. });
    let (mut h, _) = ready(worker(8), &[], 5);
    let req = || orders(6, 1, &[(1, true)]);
    assert!(refused(reply(&send(&mut h, LEADER, req(), None))));
    assert!(refused(reply(&send(
        &mut h,
        "other",
        req(),
        Some((LEADER, 6))
    ))));
    assert!(refused(reply(&send(
        &mut h,
        LEADER,
        req(),
        Some((LEADER, 7))
    ))));
    assert!(refused(reply(&send(
        &mut h,
        LEADER,
        orders(4, 1, &[(1, true)]),
        Some((LEADER, 4))
    ))));
    assert!(calls(&send(&mut h, "other", req(), Some((LEADER, 6)))).is_empty());
    let fx = send(&mut h, LEADER, req(), Some((LEADER, 6)));
    assert_eq!(fx[0], Effect::SaveFence(6), "{fx:?}");
    assert!(fx.iter().position(|e| matches!(e, Effect::Reply(_))) > Some(0));
    assert_eq!(reply(&fx), &HolderResponse::Taken);
    assert_eq!(calls(&fx), [(cid(1), true, false)]);
    // A late duplicate, or an older batch, cannot undo a newer order.
    let fx = send(
        &mut h,
        LEADER,
        orders(6, 1, &[(1, false)]),
        Some((LEADER, 6)),
    );
    assert_eq!(reply(&fx), &HolderResponse::Taken);
    assert!(!fx.iter().any(|e| matches!(e, Effect::SaveFence(_))));
    assert!(h.items[&cid(1)].want_pin);
    // A leecher holds nothing.
    let limits = Limits {
        role: Role::Leecher,
        ..worker(8)
    };
    let (mut l, _) = ready(limits, &[], 0);
    assert!(refused(reply(&send(
        &mut l,
        LEADER,
        req(),
        Some((LEADER, 6))
    ))));
}

/// Contract rule 7: what the user pinned before the cluster asked is
/// reported pinned, never stored as the cluster's, and its unpin call
/// touches nothing.
#[test]
fn the_users_own_pin_is_reported_and_never_removed() {
    let (mut h, _) = ready(worker(8), &[], 0);
    send(
        &mut h,
        LEADER,
        orders(1, 1, &[(1, true)]),
        Some((LEADER, 1)),
    );
    let fx = done(&mut h, 1, true, Ok(true));
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Store { .. })),
        "{fx:?}"
    );
    assert_eq!(h.items[&cid(1)].state, HeldState::Pinned);
    let fx = send(
        &mut h,
        LEADER,
        orders(1, 2, &[(1, false)]),
        Some((LEADER, 1)),
    );
    assert!(calls(&fx).is_empty(), "the user's pin is left: {fx:?}");
    assert_eq!(h.items[&cid(1)].state, HeldState::Absent);
}

/// Found by the simulator (seeds 749, 8796, 4471): a batch that pins and
/// unpins an item the user had pinned, before the pin ran, made a real
/// unpin call (`pin/rm`) and removed the user's own pin. An unpin calls
/// IPFS only for what the cluster claimed.
#[test]
fn an_unpin_of_a_pin_still_queued_calls_nothing() {
    let (mut h, _) = ready(worker(1), &[], 0);
    occupy_the_slot(&mut h);
    let fx = send(
        &mut h,
        LEADER,
        orders(1, 2, &[(1, true), (1, false)]),
        Some((LEADER, 1)),
    );
    assert!(calls(&fx).is_empty(), "{fx:?}");
    assert_eq!(h.items[&cid(1)].state, HeldState::Absent);
    let fx = done(&mut h, 2, true, Ok(false));
    assert!(calls(&fx).is_empty(), "nothing left to do: {fx:?}");
}

/// A pin that failed after its claim may be on IPFS: pinning it again
/// skips the `pin/ls` check (what is there is ours), and unpinning it
/// calls `pin/rm`.
#[test]
fn a_claimed_item_is_pinned_without_the_check_and_unpinned_for_real() {
    let (mut h, _) = ready(worker(4), &[], 0);
    let fx = send(
        &mut h,
        LEADER,
        orders(1, 1, &[(1, true)]),
        Some((LEADER, 1)),
    );
    assert_eq!(calls(&fx), [(cid(1), true, false)]);
    let fx = done(&mut h, 1, true, Err("timeout".into()));
    assert!(fx.contains(&Effect::Store {
        add: vec![cid(1)],
        remove: vec![]
    }));
    let fx = send(
        &mut h,
        LEADER,
        orders(1, 2, &[(1, false), (1, true)]),
        Some((LEADER, 1)),
    );
    assert_eq!(calls(&fx), [(cid(1), true, true)]);
    done(&mut h, 1, true, Err("timeout".into()));
    let fx = send(
        &mut h,
        LEADER,
        orders(1, 3, &[(1, false)]),
        Some((LEADER, 1)),
    );
    assert_eq!(calls(&fx), [(cid(1), false, true)]);
}

#[test]
fn calls_are_bounded_and_an_order_changed_mid_call_is_carried_out_after() {
    let (mut h, _) = ready(worker(2), &[], 0);
    let fx = send(
        &mut h,
        LEADER,
        orders(1, 1, &[(1, true), (2, true), (3, true)]),
        Some((LEADER, 1)),
    );
    assert_eq!(calls(&fx).len(), 2, "at most `concurrency` at once");
    // While cid 1 is being pinned, the leader wants it gone.
    let fx = send(
        &mut h,
        LEADER,
        orders(1, 2, &[(1, false)]),
        Some((LEADER, 1)),
    );
    assert!(calls(&fx).is_empty());
    let fx = done(&mut h, 1, true, Ok(false));
    assert!(fx.contains(&Effect::Store {
        add: vec![cid(1)],
        remove: vec![]
    }));
    // One slot free (2 still runs): the pin of 3 queued first, then the
    // unpin of 1 when 2 ends.
    assert_eq!(calls(&fx), [(cid(3), true, false)]);
    let fx = done(&mut h, 2, true, Ok(false));
    assert_eq!(calls(&fx), [(cid(1), false, true)]);
    let fx = done(&mut h, 1, false, Ok(false));
    assert!(fx.contains(&Effect::Store {
        add: vec![],
        remove: vec![cid(1)]
    }));
    // A duplicated or late answer changes nothing.
    let v = h.version;
    done(&mut h, 1, false, Ok(false));
    assert_eq!(h.version, v);
    assert_counts_match(&h);
    assert_eq!((h.counts().pinned, h.counts().pinning), (1, 1));
}

/// The running counts by state (`/metrics`) equal a recount of the items.
fn assert_counts_match(h: &Core) {
    let n = |f: fn(&HeldState) -> bool| h.items.values().filter(|i| f(&i.state)).count() as u64;
    let recount = HeldCounts {
        queued: n(|s| *s == HeldState::Queued),
        pinning: n(|s| *s == HeldState::Pinning),
        pinned: n(|s| *s == HeldState::Pinned),
        failed: n(|s| matches!(s, HeldState::Failed(_))),
        unpinning: n(|s| *s == HeldState::Unpinning),
    };
    assert_eq!(h.counts(), recount);
}

/// A restarted holder reports what it held as pinned, under a new session
/// (the leader starts from scratch), until `pin/ls` says a pin is gone.
#[test]
fn a_restart_reports_the_held_set_and_pin_ls_corrects_it() {
    let now = Instant::now();
    let limits = Limits {
        restart_grace: Duration::ZERO,
        ..worker(4)
    };
    let mut h = Core::new(limits, [cid(1), cid(2)], 3, 9, now);
    assert!(h.step(Input::Tick, now).is_empty(), "no IPFS, no calls");
    let fx = h.step(Input::Ipfs { ready: true }, now);
    let Some(&Effect::List { at }) = fx.iter().find(|e| matches!(e, Effect::List { .. })) else {
        panic!("no listing at start: {fx:?}");
    };
    let (_, _, reset, _, items) = ask(&h, 7, 0);
    assert!(reset);
    assert_eq!(items.len(), 2);
    let fx = h.step(
        Input::Listed {
            at,
            pinned: Ok([cid(1)].into_iter().collect()),
        },
        now,
    );
    assert!(fx.contains(&Effect::Store {
        add: vec![],
        remove: vec![cid(2)]
    }));
    assert_eq!(h.items[&cid(2)].state, HeldState::Absent);
    // Not listed again before `reconcile`; then it is.
    assert!(
        h.step(Input::Tick, now + Duration::from_secs(59))
            .is_empty()
    );
    let fx = h.step(Input::Tick, now + Duration::from_secs(61));
    assert!(matches!(fx[..], [Effect::List { .. }]), "{fx:?}");
    // Orders below the stored fence are refused at once.
    let fx = send(
        &mut h,
        LEADER,
        orders(2, 1, &[(5, true)]),
        Some((LEADER, 2)),
    );
    assert!(matches!(reply(&fx), HolderResponse::Refused { .. }));
}

/// Found by the simulator (seed 423): a batch that unpins and re-pins an
/// item the cluster holds queued an unpin, then a pin whose `pin/ls` check
/// found the cluster's own pin and took it for the user's; the later unpin
/// then left it on IPFS for good. Our pin stays ours.
#[test]
fn a_queued_unpin_cancelled_by_a_pin_keeps_the_pin_ours() {
    let (mut h, _) = ready(worker(1), &[cid(1)], 0);
    // The single call slot is busy, so the unpin stays queued.
    occupy_the_slot(&mut h);
    let fx = send(
        &mut h,
        LEADER,
        orders(1, 2, &[(1, false), (1, true)]),
        Some((LEADER, 1)),
    );
    assert!(calls(&fx).is_empty(), "{fx:?}");
    assert_eq!(h.items[&cid(1)].state, HeldState::Pinned);
    let fx = done(&mut h, 2, true, Ok(false));
    assert!(
        calls(&fx).is_empty(),
        "no pin call for what we hold: {fx:?}"
    );
    let fx = send(
        &mut h,
        LEADER,
        orders(1, 3, &[(1, false)]),
        Some((LEADER, 1)),
    );
    assert_eq!(
        calls(&fx),
        [(cid(1), false, true)],
        "the unpin is a real one"
    );
}

/// Found in review: a claim that outlived a failed pin made a pin the user
/// made later look like the cluster's. The claim goes when the shell finds
/// the failed pin absent, or when `pin/ls` does; then an unpin calls
/// nothing and a new pin checks `pin/ls` again.
#[test]
fn a_failed_pin_that_is_not_there_gives_its_claim_up() {
    let (mut h, now) = ready(worker(4), &[], 0);
    send(
        &mut h,
        LEADER,
        orders(1, 1, &[(1, true), (2, true)]),
        Some((LEADER, 1)),
    );
    let gone = |fx: &[Effect], i| {
        fx.contains(&Effect::Store {
            add: vec![],
            remove: vec![cid(i)],
        })
    };
    // 1: the shell checked after the failure and gave the claim up.
    let input = Input::Done {
        cid: cid(1),
        pin: true,
        result: Err("timeout".into()),
        claimed: false,
    };
    h.step(input, now);
    // 2: failed with the claim kept (IPFS did not answer the check) ...
    let fx = done(&mut h, 2, true, Err("timeout".into()));
    assert!(fx.contains(&Effect::Store {
        add: vec![cid(2)],
        remove: vec![]
    }));
    // ... until pin/ls shows it is not there.
    let at = h.version;
    let fx = h.step(
        Input::Listed {
            at,
            pinned: Ok(HashSet::new()),
        },
        now,
    );
    assert!(gone(&fx, 2), "{fx:?}");
    let fx = send(
        &mut h,
        LEADER,
        orders(1, 2, &[(1, false), (2, false)]),
        Some((LEADER, 1)),
    );
    assert!(calls(&fx).is_empty(), "{fx:?}");
    let fx = send(
        &mut h,
        LEADER,
        orders(1, 3, &[(1, true), (2, true)]),
        Some((LEADER, 1)),
    );
    let mut asked = calls(&fx);
    asked.sort();
    assert_eq!(asked, [(cid(1), true, false), (cid(2), true, false)]);
}

#[test]
fn a_removal_about_to_be_collected_unpins_the_clusters_copy_only() {
    let limits = Limits {
        role: Role::Worker,
        concurrency: 4,
        reconcile: Duration::from_secs(60),
        restart_grace: Duration::from_secs(600),
    };
    let now = Instant::now();
    // Held from before a restart: the cluster's own pins of 1 and 2.
    let mut h = Core::new(limits, [cid(1), cid(2)], 0, 7, now);
    h.step(Input::Ipfs { ready: true }, now);
    // The user's own pin of 3, reported as a copy, never the cluster's.
    h.set(&cid(3), HeldState::Pinned, true);
    let fx = h.step(
        Input::Removed {
            cids: vec![cid(1), cid(3), cid(9)],
        },
        now,
    );
    let calls: Vec<&Effect> = fx
        .iter()
        .filter(|e| matches!(e, Effect::Pin { .. } | Effect::Unpin { .. }))
        .collect();
    assert_eq!(calls, [&Effect::Unpin { cid: cid(1) }]);
    assert_eq!(
        h.items[&cid(2)].state,
        HeldState::Pinned,
        "not removed: kept"
    );
    assert_eq!(
        h.items[&cid(3)].state,
        HeldState::Absent,
        "no longer a cluster copy"
    );
    assert!(!h.items.contains_key(&cid(9)), "unknown: nothing to do");
}

/// Found by the simulator (seed 35352, when index records joined its
/// workload): a node crashed while its `pin/add` was on its way to IPFS,
/// restarted, `pin/ls` did not show the pin yet, so the claim was dropped;
/// then the pin landed, the cluster's pin looked like the user's and was
/// never removed. A claim from before a restart now outlives `pin/ls` for
/// `restart_grace`: reported absent meanwhile, held again once IPFS shows
/// it (the leader can then unpin it), dropped if it is still absent from a
/// listing asked after the grace.
#[test]
fn a_claim_from_before_a_restart_outlives_pin_ls_for_the_grace() {
    let now = Instant::now();
    let limits = Limits {
        restart_grace: Duration::from_secs(90),
        ..worker(4)
    };
    let mut h = Core::new(limits, [cid(1), cid(2)], 3, 9, now);
    let fx = h.step(Input::Ipfs { ready: true }, now);
    let Some(&Effect::List { at }) = fx.iter().find(|e| matches!(e, Effect::List { .. })) else {
        panic!("no listing at start: {fx:?}");
    };
    let fx = h.step(
        Input::Listed {
            at,
            pinned: Ok(HashSet::new()),
        },
        now,
    );
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Store { .. })),
        "claims kept: {fx:?}"
    );
    assert_eq!(h.items[&cid(1)].state, HeldState::Absent);
    assert_eq!(h.items[&cid(2)].state, HeldState::Absent);
    // The previous run's pin of cid(2) lands; the next listing finds it.
    let fx = h.step(Input::Tick, now + Duration::from_secs(61));
    let [Effect::List { at }] = fx[..] else {
        panic!("{fx:?}");
    };
    let fx = h.step(
        Input::Listed {
            at,
            pinned: Ok([cid(2)].into_iter().collect()),
        },
        now + Duration::from_secs(61),
    );
    assert!(!fx.iter().any(|e| matches!(e, Effect::Store { .. })));
    assert_eq!(h.items[&cid(2)].state, HeldState::Pinned);
    let (_, _, _, _, items) = ask(&h, 0, 0);
    assert!(items.contains(&(cid(2), HeldState::Pinned)), "{items:?}");
    // Ours: an unpin order calls `pin/rm`.
    let fx = send(
        &mut h,
        LEADER,
        orders(3, 1, &[(2, false)]),
        Some((LEADER, 3)),
    );
    assert!(fx.contains(&Effect::Unpin { cid: cid(2) }), "{fx:?}");
    // cid(1) never shows: a listing asked after the grace drops its claim.
    let fx = h.step(Input::Tick, now + Duration::from_secs(122));
    let Some(&Effect::List { at }) = fx.iter().find(|e| matches!(e, Effect::List { .. })) else {
        panic!("{fx:?}");
    };
    let fx = h.step(
        Input::Listed {
            at,
            pinned: Ok(HashSet::new()),
        },
        now + Duration::from_secs(122),
    );
    assert!(
        fx.contains(&Effect::Store {
            add: vec![],
            remove: vec![cid(1)]
        }),
        "{fx:?}"
    );
    // An unpin order for it now calls nothing: nothing of ours is there.
    let fx = send(
        &mut h,
        LEADER,
        orders(3, 2, &[(1, false)]),
        Some((LEADER, 3)),
    );
    assert!(
        !fx.iter().any(|e| matches!(e, Effect::Unpin { .. })),
        "{fx:?}"
    );
}
