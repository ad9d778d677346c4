use proptest::prelude::*;

use super::*;

const LIMITS: Limits = Limits {
    grace: Duration::from_secs(30),
    retry_after: Duration::from_secs(60),
    min_free: 1024,
};

fn peer(id: &str, role: Role, disk_free: u64) -> Candidate {
    Candidate {
        id: id.into(),
        role,
        live: true,
        down_since: None,
        ipfs_ready: true,
        disk_free,
    }
}

fn pinset(cids: &[&str], min: u8, max: u8) -> Pinset {
    Pinset {
        pins: pins_of(cids, min, max),
        removed: BTreeSet::new(),
        lists: BTreeMap::new(),
    }
}

fn pins_of(cids: &[&str], min: u8, max: u8) -> BTreeMap<Key, Want> {
    cids.iter()
        .map(|c| {
            (
                Key::from(*c),
                Want {
                    min,
                    max,
                    list: None,
                },
            )
        })
        .collect()
}

fn pinned_on(orders: &[Order]) -> Vec<(&str, &str)> {
    orders
        .iter()
        .filter_map(|o| match o {
            Order::Pin { peer, cid } => Some((peer.as_str(), &**cid)),
            _ => None,
        })
        .collect()
}

#[test]
fn copies_go_to_the_roomiest_eligible_peers_never_a_leecher() {
    let peers = [
        peer("m", Role::Master, 50_000),
        peer("w1", Role::Worker, 90_000),
        peer("w2", Role::Worker, 70_000),
        peer("full", Role::Worker, 10),
        peer("l", Role::Leecher, 1 << 40),
        Candidate {
            ipfs_ready: false,
            ..peer("noipfs", Role::Worker, 1 << 40)
        },
    ];
    let orders = plan(
        &pinset(&["c"], 2, 3),
        &peers,
        &HashMap::new(),
        &LIMITS,
        Instant::now(),
    );
    assert_eq!(pinned_on(&orders), [("w1", "c"), ("w2", "c"), ("m", "c")]);
}

#[test]
fn a_dead_holder_is_replaced_only_after_the_grace_period() {
    let t0 = Instant::now();
    let mut peers = vec![
        peer("a", Role::Worker, 1 << 30),
        peer("b", Role::Worker, 1 << 30),
        peer("c", Role::Worker, 1 << 20),
    ];
    let mut holdings = HashMap::new();
    for id in ["a", "b"] {
        holdings.insert(
            id.to_string(),
            Holding {
                pinned: [Key::from("x")].into(),
                ..Holding::default()
            },
        );
    }
    let pins = pinset(&["x"], 2, 2);
    assert!(plan(&pins, &peers, &holdings, &LIMITS, t0).is_empty());
    peers[0].live = false;
    peers[0].down_since = Some(t0);
    assert!(
        plan(
            &pins,
            &peers,
            &holdings,
            &LIMITS,
            t0 + Duration::from_secs(10)
        )
        .is_empty()
    );
    let later = plan(
        &pins,
        &peers,
        &holdings,
        &LIMITS,
        t0 + Duration::from_secs(31),
    );
    assert_eq!(pinned_on(&later), [("c", "x")]);
}

#[test]
fn failures_wait_for_a_retry_and_removed_items_are_unpinned_unknown_ones_kept() {
    let t0 = Instant::now();
    let peers = [peer("a", Role::Worker, 1 << 30)];
    let mut h = Holding {
        pinned: [Key::from("gone"), Key::from("unknown")].into(),
        ..Holding::default()
    };
    h.failed.insert("x".into(), Failure { at: t0, count: 1 });
    let holdings = HashMap::from([("a".to_string(), h)]);
    let mut pins = pinset(&["x"], 1, 1);
    pins.removed.insert("gone".into());
    assert_eq!(
        plan(
            &pins,
            &peers,
            &holdings,
            &LIMITS,
            t0 + Duration::from_secs(5)
        ),
        [Order::Unpin {
            peer: "a".into(),
            cid: "gone".into()
        }]
    );
    let retry = plan(
        &pins,
        &peers,
        &holdings,
        &LIMITS,
        t0 + Duration::from_secs(61),
    );
    assert_eq!(pinned_on(&retry), [("a", "x")]);
}

#[test]
fn repeated_failures_back_off_exponentially() {
    let t0 = Instant::now();
    let peers = [peer("a", Role::Worker, 1 << 30)];
    let pins = pinset(&["x"], 1, 1);
    let at = |count: u32, after: u64| {
        let mut h = Holding::default();
        h.failed.insert("x".into(), Failure { at: t0, count });
        let holdings = HashMap::from([("a".to_string(), h)]);
        let orders = plan(
            &pins,
            &peers,
            &holdings,
            &LIMITS,
            t0 + Duration::from_secs(after),
        );
        !orders.is_empty()
    };
    // retry_after is 60 s: 60, 120, 240 ... at most 32 times that.
    assert!(!at(2, 119) && at(2, 120));
    assert!(!at(3, 239) && at(3, 240));
    assert!(!at(40, 32 * 60 - 1) && at(40, 32 * 60));
}

#[test]
fn extras_above_the_maximum_are_trimmed() {
    let peers: Vec<Candidate> = (0..4)
        .map(|i| peer(&format!("p{i}"), Role::Worker, 1000 + i))
        .collect();
    let holdings: HashMap<String, Holding> = peers
        .iter()
        .map(|p| {
            (
                p.id.clone(),
                Holding {
                    pinned: [Key::from("x")].into(),
                    ..Holding::default()
                },
            )
        })
        .collect();
    let orders = plan(
        &pinset(&["x"], 1, 2),
        &peers,
        &holdings,
        &LIMITS,
        Instant::now(),
    );
    assert_eq!(
        orders,
        [
            Order::Unpin {
                peer: "p1".into(),
                cid: "x".into()
            },
            Order::Unpin {
                peer: "p0".into(),
                cid: "x".into()
            }
        ]
    );
}

fn arb_peer() -> impl Strategy<Value = (u8, bool, bool, u64)> {
    (0u8..3, any::<bool>(), any::<bool>(), 0u64..4096)
}

proptest! {
    /// With every order carried out at once, planning converges in a few
    /// rounds to a fixed point where each item has as many copies as its
    /// maximum allows (or as eligible peers exist), all on eligible peers.
    #[test]
    fn planning_converges_on_eligible_peers(
        raw in proptest::collection::vec(arb_peer(), 1..8),
        items in proptest::collection::vec((1u8..4, 0u8..3), 1..20),
    ) {
        let now = Instant::now();
        let peers: Vec<Candidate> = raw.iter().enumerate().map(|(i, (role, live, ready, disk))| Candidate {
            id: format!("p{i}"),
            role: [Role::Leecher, Role::Worker, Role::Master][usize::from(*role)],
            live: *live,
            down_since: (!live).then(|| now - Duration::from_secs(3600)),
            ipfs_ready: *ready,
            disk_free: *disk,
        }).collect();
        let pins = Pinset {
            pins: items.iter().enumerate().map(|(i, (min, extra))| {
                (Key::from(format!("c{i}")), Want { min: *min, max: min + extra, list: None })
            }).collect(),
            removed: BTreeSet::new(),
            lists: BTreeMap::new(),
        };
        let eligible: Vec<&Candidate> = peers.iter().filter(|p| takes_new(p, &LIMITS)).collect();
        // Holders may also hold items the pinset does not know (a lagging
        // leader's view): never unpinned.
        let mut holdings: HashMap<String, Holding> = peers.iter().map(|p| {
            (p.id.clone(), Holding { pinned: [Key::from("unknown")].into(), ..Holding::default() })
        }).collect();
        let mut rounds = 0;
        loop {
            let orders = plan(&pins, &peers, &holdings, &LIMITS, now);
            if orders.is_empty() { break; }
            rounds += 1;
            prop_assert!(rounds <= 3, "no fixed point after 3 rounds: {orders:?}");
            for o in orders {
                match o {
                    Order::Pin { peer, cid } => {
                        prop_assert!(eligible.iter().any(|p| p.id == peer), "pin ordered on ineligible {peer}");
                        prop_assert!(holdings.entry(peer).or_default().pinned.insert(cid));
                    }
                    Order::Unpin { peer, cid } => {
                        prop_assert!(&*cid != "unknown", "unpinned an item the pinset does not know");
                        prop_assert!(holdings.entry(peer).or_default().pinned.remove(&cid));
                    }
                }
            }
        }
        for (cid, want) in &pins.pins {
            let n = holdings.values().filter(|h| h.pinned.contains(cid)).count();
            let max = usize::from(want.max.max(want.min));
            prop_assert_eq!(n, max.min(eligible.len()), "copies of {}", cid);
        }
    }
}

/// An item allocated to a peer list gets copies only on the list's live
/// masters and workers; its copies elsewhere go once the list holds the
/// minimum, never before; an unknown list gives it no copies.
#[test]
fn allocated_items_stay_on_their_peer_list() {
    let peers = vec![
        peer("a", Role::Master, 10_000),
        peer("b", Role::Worker, 90_000),
        peer("c", Role::Worker, 80_000),
        peer("d", Role::Leecher, 99_000),
    ];
    let mut ps = pinset(&["x"], 2, 2);
    ps.pins.get_mut("x").unwrap().list = Some(Key::from("gpu"));
    ps.lists.insert(
        "gpu".into(),
        ["a", "c", "d"].iter().map(|s| s.to_string()).collect(),
    );
    let now = Instant::now();
    let mut orders = plan(&ps, &peers, &HashMap::new(), &LIMITS, now);
    orders.sort();
    assert_eq!(
        orders,
        vec![
            Order::Pin {
                peer: "a".into(),
                cid: Key::from("x")
            },
            Order::Pin {
                peer: "c".into(),
                cid: Key::from("x")
            },
        ],
        "b has the most room but is not on the list; d is a leecher"
    );
    // b holds a copy (made before the allocation): kept while the list
    // holds fewer than the minimum, unpinned once it holds it.
    let held = |ids: &[&str]| -> HashMap<String, Holding> {
        ids.iter()
            .map(|id| {
                let mut h = Holding::default();
                h.pinned.insert(Key::from("x"));
                (id.to_string(), h)
            })
            .collect()
    };
    let orders = plan(&ps, &peers, &held(&["b", "a"]), &LIMITS, now);
    assert_eq!(
        orders,
        vec![Order::Pin {
            peer: "c".into(),
            cid: Key::from("x")
        }]
    );
    let orders = plan(&ps, &peers, &held(&["b", "a", "c"]), &LIMITS, now);
    assert_eq!(
        orders,
        vec![Order::Unpin {
            peer: "b".into(),
            cid: Key::from("x")
        }]
    );
    // An unknown list: no copies anywhere.
    ps.pins.get_mut("x").unwrap().list = Some(Key::from("nobody"));
    assert!(plan(&ps, &peers, &HashMap::new(), &LIMITS, now).is_empty());
}
