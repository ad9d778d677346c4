//! The pinset's contract with real node processes and real network faults:
//! five nodes, each in a network namespace of its own on a bridge, and
//! nftables rules in those namespaces cutting links (an isolated node, a
//! one-way link failure, a partition). Every test checks, after the heal,
//! that every change the cluster acknowledged holds on every node, and that
//! every node ends with the same pinset.
//!
//! The lab is `testkit::netns`: addresses (10.251.0.0/24) only in
//! namespaces the test creates and removes (also when it fails), the
//! test's own HTTP calls from a control namespace the fault rules leave
//! alone. This needs root, iproute2 and nftables: elsewhere the tests are
//! skipped, except under `CI`, where they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipfs_kit_p2p::api::Client;
use ipfs_kit_p2p::api::pins::PinRequest;
use ipfs_kit_p2p::role::Role;
use testkit::netns::{Lab, LabNode as Node, NEEDS, available, in_ci, on_thread_in};
use testkit::{cid_of, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");
const LONG: Duration = Duration::from_secs(90);
/// Faster failure detection than the defaults, so a test takes seconds.
const CONFIG: &str = "[election]\nheartbeat_interval_ms = 500\npeer_timeout_ms = 3000\n\
                      suspect_timeout_ms = 1000\n[network]\nredial_interval_ms = 500\n";

/// The running nodes; dropping them kills them all and, if the test is
/// failing, prints the end of their logs.
struct Nodes(Vec<Node>);

impl Drop for Nodes {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(Node::kill);
        if std::thread::panicking() {
            for n in &self.0 {
                eprintln!(
                    "----- {} node in {} ({}) -----\n{}",
                    n.role,
                    n.ns,
                    n.dir.display(),
                    n.log_tail(60)
                );
            }
        }
    }
}

/// Starts `roles.len()` nodes, all bootstrapped to the first, and waits
/// until every node sees every other healthy and a leader.
async fn cluster(lab: &Lab, dir: &Path, roles: &[Role]) -> Nodes {
    Nodes(
        lab.cluster(BIN.as_ref(), dir, roles, CONFIG)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// A change a node answered 200 for, with its stamp (`HLC.REPLICA` in hex).
#[derive(Debug, Clone)]
struct Acked {
    cid: String,
    pin: bool,
    stamp: (u64, u64),
}

fn parse_stamp(s: &str) -> (u64, u64) {
    let (h, a) = s.split_once('.').expect("HLC.REPLICA");
    (
        u64::from_str_radix(h, 16).unwrap(),
        u64::from_str_radix(a, 16).unwrap(),
    )
}

/// What a write got: acknowledged, refused with nothing stored, or an
/// unknown outcome (timed out: it may still take effect).
#[derive(Debug)]
enum Outcome {
    Acked(Acked),
    NotStored,
    Unknown,
}

async fn pin(c: &Client, cid: &str) -> Outcome {
    let req = PinRequest {
        cid: cid.to_owned(),
        replication_min: Some(1),
        replication_max: Some(1),
        name: None,
        peers: None,
    };
    match c.pin_add(&req).await {
        Ok((v, _)) => {
            assert!(
                v.copies >= Some(2),
                "acknowledged with {:?} copies",
                v.copies
            );
            Outcome::Acked(Acked {
                cid: cid.to_owned(),
                pin: true,
                stamp: parse_stamp(v.stamp.as_deref().unwrap()),
            })
        }
        Err(e) => classify(&e.to_string()),
    }
}

async fn unpin(c: &Client, cid: &str) -> Outcome {
    match c.pin_rm(cid).await {
        Ok((v, _)) => {
            assert!(v["copies"].as_u64() >= Some(2), "acknowledged with {v}");
            Outcome::Acked(Acked {
                cid: cid.to_owned(),
                pin: false,
                stamp: parse_stamp(v["stamp"].as_str().unwrap()),
            })
        }
        Err(e) => classify(&e.to_string()),
    }
}

fn classify(e: &str) -> Outcome {
    eprintln!("write refused or unanswered: {e}");
    if e.contains("nothing was stored") {
        Outcome::NotStored
    } else {
        Outcome::Unknown
    }
}

/// Every write's outcome, by CID.
#[derive(Default)]
struct Ledger {
    acked: Vec<Acked>,
    not_stored: BTreeSet<String>,
    unknown: BTreeSet<String>,
}

impl Ledger {
    fn note(&mut self, cid: &str, o: Outcome) {
        match o {
            Outcome::Acked(a) => self.acked.push(a),
            Outcome::NotStored => {
                self.not_stored.insert(cid.to_owned());
            }
            Outcome::Unknown => {
                self.unknown.insert(cid.to_owned());
            }
        }
    }

    /// Per CID written only with known outcomes, whether it must end
    /// pinned: as its latest acknowledged change says.
    fn expected(&self) -> BTreeMap<String, bool> {
        let mut last: BTreeMap<String, &Acked> = BTreeMap::new();
        for a in &self.acked {
            if last.get(&a.cid).is_none_or(|b| a.stamp > b.stamp) {
                last.insert(a.cid.clone(), a);
            }
        }
        last.into_iter()
            .filter(|(cid, _)| !self.unknown.contains(cid))
            .map(|(cid, a)| (cid, a.pin))
            .collect()
    }
}

async fn pinset(c: &Client) -> Option<BTreeSet<String>> {
    c.pins()
        .await
        .ok()
        .map(|(p, _)| p.into_iter().map(|p| p.cid).collect())
}

/// After the heal: every live node holds the same pinset, which holds every
/// acknowledged pin and none of the acknowledged removals or of the writes
/// refused with nothing stored.
async fn check_converged(nodes: &[&Node], ledger: &Ledger) {
    let expected = ledger.expected();
    let started = Instant::now();
    if std::env::var("FAULTS_TRACE").is_ok() {
        for _ in 0..60 {
            let mut line = format!("{:>6} ms", started.elapsed().as_millis());
            for n in nodes {
                match n.client.status().await {
                    Ok((s, _)) => {
                        let healthy = s.peers.iter().filter(|p| p.healthy).count();
                        let conn = s.peers.iter().filter(|p| p.connected).count();
                        let same = s
                            .peers
                            .iter()
                            .filter(|p| p.pinset == Some(s.pinset.digest))
                            .count();
                        line.push_str(&format!(
                            " | {} h{healthy} c{conn} same{same} pins{} ",
                            &n.ns[n.ns.len() - 2..],
                            s.pinset.pins
                        ));
                    }
                    Err(_) => line.push_str(" | down"),
                }
            }
            eprintln!("{line}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let converged = wait_for(LONG, || async {
        let first = pinset(&nodes[0].client).await?;
        for n in &nodes[1..] {
            if pinset(&n.client).await? != first {
                return None;
            }
        }
        expected
            .iter()
            .all(|(cid, pinned)| first.contains(cid) == *pinned)
            .then_some(first)
    })
    .await;
    let Some(held) = converged else {
        let mut seen = Vec::new();
        for n in nodes {
            let p = pinset(&n.client).await.unwrap_or_default();
            let wrong: Vec<_> = expected
                .iter()
                .filter(|(c, pinned)| p.contains(*c) != **pinned)
                .collect();
            seen.push((n.ns.clone(), p.len(), wrong));
        }
        panic!("no convergence on the acknowledged changes: {seen:?}");
    };
    for cid in &ledger.not_stored {
        if !ledger.acked.iter().any(|a| a.cid == *cid) {
            assert!(
                !held.contains(cid),
                "{cid} was refused with nothing stored, yet it is pinned"
            );
        }
    }
    eprintln!(
        "converged in {:?}: {} acknowledged, {} refused unstored, {} unknown",
        started.elapsed(),
        ledger.acked.len(),
        ledger.not_stored.len(),
        ledger.unknown.len()
    );
}

/// Runs `test` on a thread inside the lab's control namespace (so its HTTP
/// calls reach the nodes' APIs), or skips it (it passes) where the lab
/// cannot be built, unless under CI.
fn in_lab<F, Fut>(name: &str, nodes: usize, test: F)
where
    F: FnOnce(Lab, PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let skip = |why: String| {
        assert!(
            !in_ci(),
            "fault test cannot run, and CI must run it: {NEEDS}: {why}"
        );
        eprintln!("skipping fault test {name}: {NEEDS}: {why}");
    };
    if let Err(e) = available() {
        return skip(e);
    }
    // One lab at a time: four clusters of debug-built nodes at once starve
    // a 2-core machine until heartbeats miss their (test-short) timeouts.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tag = format!("f{}{}", std::process::id() % 100_000, &name[..3]);
    let lab = match Lab::create(&tag, nodes, "10.251.0") {
        Ok(l) => l,
        Err(e) if e.contains("not permitted") || e.contains("cannot run") => return skip(e),
        Err(e) => panic!("cannot build the lab: {e}"),
    };
    let ctl = lab.ctl();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let outcome = on_thread_in(&ctl, move || test(lab, path));
    if std::env::var("FAULTS_KEEP").is_ok() {
        eprintln!("kept {}", dir.keep().display());
    } else {
        drop(dir);
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

const ROLES: [Role; 5] = testkit::netns::FIVE_ROLES;

/// Which node leads, by index, once all listed nodes agree.
async fn leader_of(nodes: &[Node], among: &[usize]) -> usize {
    let id = wait_for(LONG, || async {
        let mut leader = None;
        for &i in among {
            let l = nodes[i].client.status().await.ok()?.0.leader?.peer_id;
            if leader.as_ref().is_some_and(|x| *x != l) {
                return None;
            }
            leader = Some(l);
        }
        leader
    })
    .await
    .expect("agreement on a leader");
    nodes.iter().position(|n| n.peer_id == id).unwrap()
}

/// An isolated leader takes no write it cannot make durable elsewhere: it
/// answers with errors, and whatever the others acknowledged meanwhile
/// survives its SIGKILL on every remaining node.
#[test]
fn an_isolated_leader_acknowledges_nothing_and_its_death_loses_nothing() {
    in_lab("isolated", 5, |lab, dir| async move {
        let mut nodes = cluster(&lab, &dir, &ROLES).await;
        let l = leader_of(&nodes.0, &[0, 1, 2, 3, 4]).await;
        let mut ledger = Ledger::default();
        lab.isolate(l).unwrap();
        let rest: Vec<usize> = (0..5).filter(|i| *i != l).collect();
        let deadline = Instant::now() + Duration::from_secs(12);
        let mut n = 0u64;
        let mut through_leader = 0;
        while Instant::now() < deadline {
            let cid = cid_of(1000 + n);
            let o = pin(&nodes.0[l].client, &cid).await;
            if matches!(o, Outcome::Acked(_)) {
                through_leader += 1;
            }
            ledger.note(&cid, o);
            let cid = cid_of(2000 + n);
            let o = pin(&nodes.0[rest[(n as usize) % 4]].client, &cid).await;
            ledger.note(&cid, o);
            n += 1;
        }
        assert_eq!(through_leader, 0, "the isolated leader acknowledged writes");
        // It knows it: once the others' heartbeats are overdue it still
        // leads itself, and says it is isolated (and gives no orders).
        let said = wait_for(LONG, || async {
            let s = nodes.0[l].client.status().await.ok()?.0;
            s.isolated.then_some(s)
        })
        .await
        .expect("the cut-off leader never said it was isolated");
        assert_eq!(said.leader.map(|x| x.peer_id), Some(said.peer_id));
        for &i in &rest {
            let s = nodes.0[i].client.status().await.unwrap().0;
            assert!(!s.isolated, "node {i} is connected and not isolated");
        }
        assert!(
            ledger.acked.len() as u64 >= n / 2,
            "the others took writes: {} of {n}",
            ledger.acked.len()
        );
        nodes.0[l].kill();
        lab.heal().unwrap();
        let survivors: Vec<&Node> = rest.iter().map(|i| &nodes.0[*i]).collect();
        check_converged(&survivors, &ledger).await;
    });
}

/// Removals through an isolated node are not acknowledged; removals through
/// connected nodes are, and hold after the heal; the pins stay where only
/// refused removals touched them.
#[test]
fn removals_through_an_isolated_node_are_refused_and_acknowledged_ones_hold() {
    in_lab("removals", 5, |lab, dir| async move {
        let nodes = cluster(&lab, &dir, &ROLES).await;
        let mut ledger = Ledger::default();
        for k in 0..20 {
            let cid = cid_of(3000 + k);
            // Set-up: on a loaded machine a write may find its copies late
            // (503, or no answer); retrying is harmless, and the ledger
            // keeps the acknowledged one.
            let deadline = std::time::Instant::now() + LONG;
            loop {
                let o = pin(&nodes.0[(k as usize) % 5].client, &cid).await;
                // (The same pin again: the acknowledged one's stamp is the
                // latest, so only it goes in the ledger.)
                if matches!(o, Outcome::Acked(_)) {
                    ledger.note(&cid, o);
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "{o:?}");
            }
        }
        // Wait until node 4 holds them all, then cut it off.
        wait_for(LONG, || async {
            (pinset(&nodes.0[4].client).await?.len() >= 20).then_some(())
        })
        .await
        .expect("spread");
        lab.isolate(4).unwrap();
        for k in 0..10 {
            let cid = cid_of(3000 + k);
            let o = unpin(&nodes.0[4].client, &cid).await;
            assert!(
                !matches!(o, Outcome::Acked(_)),
                "an isolated node acknowledged {o:?}"
            );
            ledger.note(&cid, o);
        }
        for k in 10..20 {
            let cid = cid_of(3000 + k);
            let o = unpin(&nodes.0[(k as usize) % 4].client, &cid).await;
            assert!(matches!(o, Outcome::Acked(_)), "{o:?}");
            ledger.note(&cid, o);
        }
        lab.heal().unwrap();
        let all: Vec<&Node> = nodes.0.iter().collect();
        check_converged(&all, &ledger).await;
    });
}

/// A 3/2 partition with writes on both sides, some to the same CIDs: both
/// sides hold two masters or workers, so both keep taking writes; after
/// the heal every node holds the same pinset, where each CID is as its
/// latest acknowledged change left it.
#[test]
fn a_partition_with_writes_on_both_sides_converges_on_every_acknowledged_change() {
    in_lab("partition", 5, |lab, dir| async move {
        let nodes = cluster(&lab, &dir, &ROLES).await;
        let mut ledger = Ledger::default();
        lab.partition(&[0, 2, 4]).unwrap();
        let (a, b) = ([0usize, 2, 4], [1usize, 3]);
        let (mut took_a, mut took_b) = (0, 0);
        for k in 0..60u64 {
            // Distinct CIDs on each side, and a few both sides change.
            let side_a = nodes.0[a[(k as usize) % 3]].client.clone();
            let side_b = nodes.0[b[(k as usize) % 2]].client.clone();
            let (ca, cb, shared) = (cid_of(4000 + k), cid_of(5000 + k), cid_of(6000 + k % 5));
            let o = pin(&side_a, &ca).await;
            took_a += usize::from(matches!(o, Outcome::Acked(_)));
            ledger.note(&ca, o);
            let o = pin(&side_b, &cb).await;
            took_b += usize::from(matches!(o, Outcome::Acked(_)));
            ledger.note(&cb, o);
            let o = if k % 2 == 0 {
                pin(&side_a, &shared).await
            } else {
                unpin(&side_b, &shared).await
            };
            ledger.note(&shared, o);
        }
        assert!(
            took_a >= 50 && took_b >= 50,
            "both sides kept taking writes: {took_a} and {took_b} of 60"
        );
        lab.heal().unwrap();
        let all: Vec<&Node> = nodes.0.iter().collect();
        check_converged(&all, &ledger).await;
    });
}

/// The leader's packets to the others are dropped while theirs reach it:
/// the others elect another leader and keep taking writes; the cut-off
/// leader acknowledges none; after the heal all converge.
#[test]
fn a_one_way_link_failure_loses_no_acknowledged_change() {
    in_lab("oneway", 5, |lab, dir| async move {
        let nodes = cluster(&lab, &dir, &ROLES).await;
        let l = leader_of(&nodes.0, &[0, 1, 2, 3, 4]).await;
        let rest: Vec<usize> = (0..5).filter(|i| *i != l).collect();
        lab.one_way(l).unwrap();
        let mut ledger = Ledger::default();
        let mut through_leader = 0;
        for k in 0..25u64 {
            let cid = cid_of(7000 + k);
            let o = pin(&nodes.0[l].client, &cid).await;
            if matches!(o, Outcome::Acked(_)) {
                through_leader += 1;
            }
            ledger.note(&cid, o);
            let cid = cid_of(8000 + k);
            let o = pin(&nodes.0[rest[(k as usize) % 4]].client, &cid).await;
            ledger.note(&cid, o);
        }
        assert_eq!(through_leader, 0, "the cut-off leader acknowledged writes");
        let others = leader_of(&nodes.0, &rest).await;
        assert_ne!(others, l, "the others follow another leader");
        lab.heal().unwrap();
        let all: Vec<&Node> = nodes.0.iter().collect();
        check_converged(&all, &ledger).await;
    });
}

/// Probe datagrams dropped on their way to the leader (UDP to its probe
/// port, dropped in its namespace): its probers, which send probes by
/// datagram first once it has answered some, send each over the connection
/// `probe_connection_after_ms` later, where it is answered, and after three
/// such in a row probe it both ways at once again. So they do not suspect
/// it (a probe that failed would, after two, ask other members to probe
/// it), and the leadership does not move.
#[test]
fn probes_whose_datagrams_are_dropped_are_answered_over_the_connection() {
    in_lab("udp", 5, |lab, dir| async move {
        let nodes = cluster(&lab, &dir, &ROLES).await;
        let all: Vec<usize> = (0..nodes.0.len()).collect();
        let l = leader_of(&nodes.0, &all).await;
        let status = |i: usize| {
            let c = &nodes.0[i].client;
            async move { c.status_brief().await.ok().map(|s| s.0) }
        };
        // Totals over the nodes, and the leader's own.
        let totals = || async {
            let (mut pinged, mut asked, mut changes) = (0, 0, Vec::new());
            for i in &all {
                let s = status(*i).await?;
                pinged += s.probe_datagrams.pinged_after;
                asked += s.probe_datagrams.asked_others;
                changes.push((s.leader_changes, s.epoch));
            }
            let lead = status(l).await?.probe_datagrams;
            Some((pinged, asked, changes, lead))
        };
        let port = wait_for(LONG, || async {
            let d = status(l).await?.probe_datagrams;
            (d.answered >= 10).then_some(d.port)
        })
        .await
        .expect("the leader answers its probers by datagram");
        let script = format!(
            "table inet probes {{\n  chain input {{ type filter hook input priority 0; policy accept;\n    udp dport {port} drop\n  }}\n}}\n"
        );
        testkit::netns::run(
            "ip",
            &["netns", "exec", &lab.ns(l), "nft", "-f", "-"],
            Some(&script),
        )
        .unwrap();
        let (pinged0, asked0, changes0, lead0) = totals().await.unwrap();
        let (pinged, asked, changes, lead) = wait_for(LONG, || async {
            totals()
                .await
                .filter(|t| t.3.pings_answered >= lead0.pings_answered + 30)
        })
        .await
        .expect("30 probes answered over the connection");
        let (pinged, asked) = (pinged - pinged0, asked - asked0);
        let pongs = lead.pings_answered - lead0.pings_answered;
        eprintln!(
            "{pinged} probes over the connection after no datagram answer, {pongs} answered there, {asked} suspicions"
        );
        assert!(
            pinged >= 1,
            "probes sent by datagram first went over the connection"
        );
        assert!(
            asked * 5 <= pongs,
            "answered in time: {asked} suspicions for {pongs} probes"
        );
        assert_eq!(changes, changes0, "no leader change anywhere");
        // Only datagrams that arrived before the rule, if any.
        assert!(
            lead.answered <= lead0.answered + 3,
            "no datagram reaches the leader"
        );
    });
}
