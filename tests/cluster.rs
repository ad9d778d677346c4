//! Multi-process tests: real `ipfs-kit-p2p` processes on loopback elect a
//! leader, fail over after SIGKILL, hand over after SIGTERM, and take a
//! restarted master back with its old peer ID.

use std::time::Duration;

use ipfs_kit_p2p::role::Role;
use testkit::{NodeProc, Spawner, agreed_leader, expected_leader, start_cluster, wait_for};

const CONVERGE: Duration = Duration::from_secs(40);

fn spawner(logs: &std::path::Path) -> Spawner {
    let mut s = Spawner::new(env!("CARGO_BIN_EXE_ipfs-kit-p2p"));
    s.log_dir = Some(logs.to_owned());
    s
}

/// Waits until all `nodes` agree on one leader at an epoch above `above`;
/// returns (leader, epoch).
async fn agree(nodes: &[&NodeProc], above: u64, what: &str) -> (String, u64) {
    let peers = nodes.len() - 1;
    let t0 = std::time::Instant::now();
    let agreed = || async {
        agreed_leader(nodes, peers)
            .await
            .filter(|(_, e, _)| *e > above)
    };
    match wait_for(CONVERGE, agreed).await {
        Some((leader, epoch, _)) => {
            eprintln!("agreed ({what}) in {:?}", t0.elapsed());
            (leader, epoch)
        }
        None => {
            let mut views = String::new();
            for n in nodes {
                let s = n.status().await;
                views.push_str(&format!(
                    "\n{} ({}): {:?}",
                    n.peer_id,
                    n.role,
                    s.map(|s| (
                        s.leader,
                        s.peers
                            .iter()
                            .map(|p| (p.peer_id.clone(), p.state.clone()))
                            .collect::<Vec<_>>()
                    ))
                ));
            }
            panic!("no agreement on a leader ({what}) within {CONVERGE:?}:{views}");
        }
    }
}

async fn peer_state(observer: &NodeProc, peer: &str) -> Option<String> {
    let s = observer.status().await?;
    s.peers
        .into_iter()
        .find(|p| p.peer_id == peer)
        .map(|p| p.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_elect_fail_over_hand_over_and_rejoin() {
    let tmp = tempfile::tempdir().unwrap();
    let sp = spawner(tmp.path());
    let roles = [
        Role::Master,
        Role::Master,
        Role::Worker,
        Role::Worker,
        Role::Leecher,
    ];
    let first = sp
        .spawn(roles[0], &tmp.path().join("n0"), &[])
        .await
        .unwrap();
    let seed = vec![first.addr.clone()];
    let mut nodes = vec![first];
    for (i, role) in roles.iter().enumerate().skip(1) {
        nodes.push(
            sp.spawn(*role, &tmp.path().join(format!("n{i}")), &seed)
                .await
                .unwrap(),
        );
    }

    // 1. Everyone agrees on the lowest-ID master.
    let all: Vec<&NodeProc> = nodes.iter().collect();
    let (leader, e1) = agree(&all, 0, "cold start").await;
    let want = expected_leader(&all).unwrap();
    assert_eq!(want.role, Role::Master);
    assert_eq!(leader, want.peer_id, "the lowest-ID master leads");
    // The brief status (what `agreed_leader` polls) counts what the full
    // one lists; a malformed query is refused.
    for n in &all {
        let full = n.status().await.expect("status");
        let healthy = full.peers.iter().filter(|p| p.healthy).count();
        let connected = full.peers.iter().filter(|p| p.connected).count();
        let counts = (full.peers.len(), healthy, connected);
        let c = full.peer_counts;
        assert_eq!((c.known, c.healthy, c.connected), counts);
        let brief = n.status_brief().await.expect("brief status");
        assert!(brief.peers.is_empty(), "{:?}", brief.peers);
        assert_eq!(brief.peer_counts.known, 4);
        assert_eq!(brief.leader.map(|l| l.peer_id), Some(leader.clone()));
    }
    let bad = reqwest::get(format!(
        "http://{}/v1/status?peers=maybe",
        all[0].client.addr()
    ))
    .await
    .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let first_master = nodes.iter().position(|n| n.peer_id == leader).unwrap();
    let old_peer_id = nodes[first_master].peer_id.clone();

    // A quiet cluster's healthy sets stay as they are: their time does not
    // move with the ticks (over a second and a half of each node's uptime,
    // more than its idle election tick).
    let mut before = Vec::new();
    for n in &nodes {
        before.push(n.status_brief().await.expect("brief status"));
    }
    for (n, b) in nodes.iter().zip(&before) {
        let later = wait_for(CONVERGE, || async {
            n.status_brief()
                .await
                .filter(|s| s.uptime_ms >= b.uptime_ms + 1_500)
        })
        .await
        .expect("the node's uptime moves on");
        if later.peer_counts.healthy == 4 && b.peer_counts.healthy == 4 {
            assert_eq!(
                later.peer_counts.healthy_changed_unix_ms, b.peer_counts.healthy_changed_unix_ms,
                "{}: the healthy set's time moved while it stayed whole",
                n.peer_id
            );
        }
    }
    // Two nodes hold one connection between them: a second one (both
    // dialled at once) is closed by the higher ID a few seconds after.
    for n in &nodes {
        let one_each = wait_for(CONVERGE, || async {
            n.status_brief()
                .await
                .filter(|s| s.peer_counts.connections == 4 && s.peer_counts.connected == 4)
        })
        .await;
        assert!(
            one_each.is_some(),
            "{}: not one connection per peer: {:?}",
            n.peer_id,
            n.status_brief().await.map(|s| s.peer_counts)
        );
    }
    let healthy_changed: Vec<u64> = before
        .iter()
        .map(|s| s.peer_counts.healthy_changed_unix_ms)
        .collect();

    // 2. SIGKILL it: the other master takes over with a higher epoch.
    nodes[first_master].kill();
    let survivors: Vec<&NodeProc> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first_master)
        .map(|(_, n)| n)
        .collect();
    let (leader2, e2) = agree(&survivors, e1, "after killing the first master").await;
    let other_master = nodes
        .iter()
        .position(|n| n.role == Role::Master && n.peer_id != leader)
        .unwrap();
    assert_eq!(leader2, nodes[other_master].peer_id);
    // Each survivor timed the change of its healthy peers (the dead master
    // left them).
    for (i, n) in nodes.iter().enumerate().filter(|(i, _)| *i != first_master) {
        let s = n.status_brief().await.expect("brief status");
        assert!(
            s.peer_counts.healthy_changed_unix_ms > healthy_changed[i],
            "{}: healthy since {} before the kill, {} after",
            n.peer_id,
            healthy_changed[i],
            s.peer_counts.healthy_changed_unix_ms
        );
    }
    assert!(e2 > e1, "epoch {e2} must be above {e1}");
    assert_eq!(
        peer_state(survivors[0], &old_peer_id).await.as_deref(),
        Some("dead"),
        "confirmed dead, not timed out"
    );
    drop(survivors);

    // 3. SIGKILL the second master: the lowest-ID worker leads.
    nodes[other_master].kill();
    let rest_idx: Vec<usize> = (0..nodes.len())
        .filter(|i| *i != first_master && *i != other_master)
        .collect();
    let rest: Vec<&NodeProc> = rest_idx.iter().map(|i| &nodes[*i]).collect();
    let (leader3, e3) = agree(&rest, e2, "after killing both masters").await;
    let worker = expected_leader(&rest).unwrap();
    assert_eq!(worker.role, Role::Worker);
    assert_eq!(leader3, worker.peer_id, "the lowest-ID worker leads");
    assert!(e3 > e2);
    let (worker_id, worker_addr) = (worker.peer_id.clone(), worker.addr.clone());
    let mut changes_before = Vec::new();
    for n in &rest {
        changes_before.push(n.status().await.unwrap().leader_changes);
    }
    drop(rest);

    // 4. Restart the first master on its data dir: same peer ID, it rejoins and leads again.
    let dir = nodes[first_master].dir.clone();
    let restarted = sp.spawn(Role::Master, &dir, &[worker_addr]).await.unwrap();
    assert_eq!(restarted.peer_id, old_peer_id, "peer ID survives a restart");
    nodes[first_master] = restarted;
    let back: Vec<&NodeProc> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != other_master)
        .map(|(_, n)| n)
        .collect();
    let (leader4, e4) = agree(&back, e3, "after the master restarted").await;
    assert_eq!(leader4, old_peer_id);
    assert!(e4 > e3, "a restart never regresses the epoch: {e4} vs {e3}");
    let st = nodes[first_master].status().await.unwrap();
    assert_eq!(st.incarnation, 2);
    // Failback without a gap: each follower went straight from the worker
    // to the master (one change; through "no leader" it would be two).
    for (i, before) in rest_idx.iter().zip(&changes_before) {
        let after = nodes[*i].status().await.unwrap().leader_changes;
        assert_eq!(
            after,
            before + 1,
            "node {i}: leader changes {before} -> {after}"
        );
    }

    // 5. SIGTERM the leader: it leaves gracefully (exit 0) and the worker takes over.
    nodes[first_master].terminate();
    let code = nodes[first_master]
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("graceful stop within 20 s");
    assert!(code.success(), "graceful stop exits 0: {code}");
    assert!(
        !dir.join("api").exists(),
        "api file removed on a clean stop"
    );
    let rest: Vec<&NodeProc> = rest_idx.iter().map(|i| &nodes[*i]).collect();
    let (leader5, e5) = agree(&rest, e4, "after SIGTERM of the leader").await;
    assert_eq!(leader5, worker_id);
    assert_eq!(
        e5,
        e4 + 1,
        "the successor's term follows at once, no claims churn"
    );
    assert_eq!(
        peer_state(rest[0], &old_peer_id).await.as_deref(),
        Some("left"),
        "departure was announced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_never_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = spawner(tmp.path());
    a.extra = vec!["--cluster".into(), "alpha".into()];
    let mut b = spawner(tmp.path());
    b.extra = vec!["--cluster".into(), "beta".into()];
    let alpha = a
        .spawn(Role::Master, &tmp.path().join("alpha0"), &[])
        .await
        .unwrap();
    let beta = b
        .spawn(
            Role::Master,
            &tmp.path().join("beta0"),
            std::slice::from_ref(&alpha.addr),
        )
        .await
        .unwrap();
    let beta2 = b
        .spawn(
            Role::Worker,
            &tmp.path().join("beta1"),
            &[alpha.addr.clone(), beta.addr.clone()],
        )
        .await
        .unwrap();
    // Both beta nodes dial alpha, learn from identify that it is another cluster, and drop it.
    for n in [&beta, &beta2] {
        let seen = wait_for(CONVERGE, || async {
            n.status().await.filter(|s| s.foreign_peers >= 1)
        })
        .await;
        assert!(seen.is_some(), "{} never met the other cluster", n.peer_id);
    }
    let (leader, _) = agree(&[&beta, &beta2], 0, "beta cluster").await;
    assert_eq!(leader, expected_leader(&[&beta, &beta2]).unwrap().peer_id);
    for n in [&beta, &beta2] {
        let s = n.status().await.unwrap();
        assert_eq!(s.cluster, "beta");
        assert!(
            s.peers.iter().all(|p| p.peer_id != alpha.peer_id),
            "alpha joined beta: {:?}",
            s.peers
        );
    }
    let s = alpha.status().await.unwrap();
    assert!(s.peers.is_empty(), "beta joined alpha: {:?}", s.peers);
    assert_eq!(
        s.leader.map(|l| l.peer_id),
        Some(alpha.peer_id.clone()),
        "alpha leads its own cluster"
    );
}

/// A bootstrap address without `/p2p/ID` is dialled until a peer answers
/// there, and then only while that peer is not connected: each sweep
/// (every second) used to open one more connection to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_address_without_a_peer_id_keeps_one_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let sp = spawner(tmp.path());
    let a = sp
        .spawn(Role::Master, &tmp.path().join("b0"), &[])
        .await
        .unwrap();
    let bare = a.addr.split("/p2p/").next().unwrap().to_owned();
    assert_ne!(bare, a.addr);
    let b = sp
        .spawn(Role::Worker, &tmp.path().join("b1"), &[bare])
        .await
        .unwrap();
    agree(&[&a, &b], 0, "two nodes").await;
    // Several sweeps later (3 s of uptime: three sweeps, and the redial
    // pause of an unanswered address), still one connection each way.
    for n in [&a, &b] {
        let start = n.status_brief().await.expect("status").uptime_ms;
        let later = wait_for(CONVERGE, || async {
            n.status_brief()
                .await
                .filter(|s| s.uptime_ms >= start + 3_000)
        })
        .await
        .expect("the node's uptime moves on");
        assert_eq!(
            (later.peer_counts.connected, later.peer_counts.connections),
            (1, 1),
            "{}",
            n.peer_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_only_nodes_form_a_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sp = spawner(tmp.path());
    sp.listen = "/ip4/127.0.0.1/udp/0/quic-v1".into();
    let a = sp
        .spawn(Role::Worker, &tmp.path().join("q0"), &[])
        .await
        .unwrap();
    assert!(a.addr.contains("/quic-v1/"), "{}", a.addr);
    let b = sp
        .spawn(
            Role::Master,
            &tmp.path().join("q1"),
            std::slice::from_ref(&a.addr),
        )
        .await
        .unwrap();
    let (leader, _) = agree(&[&a, &b], 0, "over QUIC").await;
    assert_eq!(leader, b.peer_id, "the master leads");
}

/// A spawner whose nodes time heartbeats out only after two minutes, so
/// that only the probes can explain a successor within 45 s; `election`
/// adds lines to the `[election]` section.
fn slow_timeouts(tmp: &std::path::Path, election: &str) -> Spawner {
    let config = tmp.join("slow-timeouts.toml");
    std::fs::write(
        &config,
        format!("[election]\nheartbeat_interval_ms = 5000\npeer_timeout_ms = 120000\n{election}"),
    )
    .unwrap();
    let mut sp = spawner(tmp);
    sp.extra = vec!["--config".into(), config.display().to_string()];
    sp
}

/// Stops the agreed leader of `nodes` with `stop` and waits (45 s) until
/// the others agree on its rightful successor at a higher epoch. Returns
/// the stopped leader's index and peer ID, and the successor's epoch.
async fn replace_leader(
    nodes: &mut [NodeProc],
    stop: impl FnOnce(&mut NodeProc),
) -> (usize, String, u64) {
    let all: Vec<&NodeProc> = nodes.iter().collect();
    let (leader, e1) = agree(&all, 0, "at start").await;
    let l = nodes.iter().position(|n| n.peer_id == leader).unwrap();
    stop(&mut nodes[l]);
    let t0 = std::time::Instant::now();
    let rest: Vec<&NodeProc> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != l)
        .map(|(_, n)| n)
        .collect();
    let successor = wait_for(Duration::from_secs(45), || async {
        agreed_leader(&rest, 0)
            .await
            .filter(|(id, e, _)| *id != leader && *e > e1)
    })
    .await
    .unwrap_or_else(|| panic!("no successor within 45 s (heartbeat timeout 120 s)"));
    eprintln!("successor agreed {:?} after the stop", t0.elapsed());
    let expected = expected_leader(&rest).unwrap();
    assert_eq!(successor.0, expected.peer_id, "the rightful survivor leads");
    (l, leader, successor.1)
}

/// A frozen leader (SIGSTOP: its connections stay open, it sends nothing)
/// is replaced through the probes: the heartbeat timeout is set to two
/// minutes here, so only the probes can explain a successor within 45 s.
/// Then it thaws: it follows the successor's higher term or takes the lead
/// back above it, and the cluster agrees again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_by_its_probers_not_by_timeouts() {
    let tmp = tempfile::tempdir().unwrap();
    let sp = slow_timeouts(tmp.path(), "");
    let roles = [Role::Master, Role::Master, Role::Worker, Role::Leecher];
    let mut nodes = start_cluster(&sp, tmp.path(), &roles, CONVERGE)
        .await
        .unwrap();
    // SAFETY: kill(2) on our own child's pid with a valid signal number.
    let freeze = |n: &mut NodeProc| unsafe {
        libc::kill(n.pid() as libc::pid_t, libc::SIGSTOP);
    };
    let (l, leader, epoch) = replace_leader(&mut nodes, freeze).await;
    let survivor = nodes.iter().enumerate().find(|(i, _)| *i != l).unwrap().1;
    assert_eq!(
        peer_state(survivor, &leader).await.as_deref(),
        Some("dead"),
        "the frozen leader counts as dead"
    );
    // Thaw it: one leader again, everyone agreeing.
    unsafe { libc::kill(nodes[l].pid() as libc::pid_t, libc::SIGCONT) };
    let all: Vec<&NodeProc> = nodes.iter().collect();
    wait_for(Duration::from_secs(60), || async {
        let (_, e, _) = agreed_leader(&all, 0).await?;
        (e > epoch).then_some(())
    })
    .await
    .expect("one leader again after the thaw");
    nodes[l].kill();
}

/// Over QUIC a killed process's connections do not close at once (UDP
/// carries no close, and nothing listens to confirm a refusal on TCP), so in a
/// cluster that speaks QUIC only, the probes find a killed leader as they
/// find a frozen one. The heartbeat timeout is two minutes here; QUIC's
/// idle timeout (10 s) would also close the connections in time, so the
/// survivors' logs must show a prober's verdict, written after the kill.
/// (With probing off, `probe_interval_ms = 0`, the successor still comes,
/// by that timeout, and the verdict is missing.) The verdict is logged at
/// `info`, the nodes' level unless `NODE_LOG` says otherwise. The killed
/// process's probe port is closed, so the survivors' probe datagrams come
/// back refused (ICMP port unreachable) and are taken as failed probes at
/// once. One prober only here (`probers = 1`), and one master, which leads
/// from the start: the other worker is no prober, yet it learns where the
/// leader answers probe datagrams (one probe by datagram after the leader's
/// heartbeat; before the kill nothing else of its own is answered by
/// datagram), so its check of the leader and its relays for the prober
/// take refusals too, and it counts one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_of_a_quic_only_cluster_is_replaced_by_its_probers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sp = slow_timeouts(tmp.path(), "probers = 1\n");
    sp.listen = "/ip4/127.0.0.1/udp/0/quic-v1".into();
    let roles = [Role::Master, Role::Worker, Role::Worker];
    let mut nodes = start_cluster(&sp, tmp.path(), &roles, CONVERGE)
        .await
        .unwrap();
    assert!(nodes.iter().all(|n| n.addr.contains("/quic-v1/")));
    let log = |n: &NodeProc| {
        let name = n.dir.file_name().unwrap().to_string_lossy();
        std::fs::read_to_string(tmp.path().join(format!("{name}.log"))).unwrap_or_default()
    };
    let all: Vec<&NodeProc> = nodes.iter().collect();
    let (leader, _) = agree(&all, 0, "at start").await;
    assert_eq!(leader, nodes[0].peer_id, "the master leads");
    // The refusal counts only from where the leader answered a probe
    // datagram before: wait until both workers, the prober and the other,
    // have had such an answer.
    wait_for(Duration::from_secs(30), || async {
        for n in &nodes[1..] {
            if n.status_brief().await?.probe_datagrams.acked == 0 {
                return None;
            }
        }
        Some(())
    })
    .await
    .expect("the leader's answers by datagram, at both workers");
    // Only what the survivors log after the kill counts.
    let before: Vec<usize> = nodes.iter().map(|n| log(n).len()).collect();
    let (l, leader, _) = replace_leader(&mut nodes, NodeProc::kill).await;
    let verdict = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != l)
        .any(|(i, n)| {
            log(n)
                .get(before[i]..)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("it answered no probe") && l.contains(&leader))
        });
    assert!(verdict, "a prober found the killed leader silent");
    // The prober took over; the other worker is the one that probed nothing.
    let rest: Vec<&NodeProc> = nodes[1..].iter().collect();
    let (successor, _, _) = agreed_leader(&rest, 0).await.expect("the survivors agree");
    let other = rest
        .iter()
        .find(|n| n.peer_id != successor)
        .expect("the worker that does not lead");
    let refused = other
        .status_brief()
        .await
        .map_or(0, |s| s.probe_datagrams.refused);
    assert!(
        refused > 0,
        "the worker that was no prober counted no refusal"
    );
}

/// Probes also go as UDP datagrams (`[election] probe_datagram_resend_ms`):
/// the leader's probers get signed answers by datagram, and the leader
/// answers its connected members only, from their connections' address and
/// their announced port. What it cannot use (a probe naming a peer it is
/// not connected to, a member's ID from another address or another port,
/// an answer to no probe of its own, garbage, an oversized datagram) it
/// drops, counts and does not answer, and it keeps leading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_are_answered_by_datagram_and_strangers_datagrams_are_dropped() {
    use ipfs_kit_p2p::wire::{self, Datagram};
    let tmp = tempfile::tempdir().unwrap();
    let sp = spawner(tmp.path());
    let roles = [Role::Master, Role::Worker, Role::Worker];
    let nodes = start_cluster(&sp, tmp.path(), &roles, CONVERGE)
        .await
        .unwrap();
    let all: Vec<&NodeProc> = nodes.iter().collect();
    let (leader, epoch) = agree(&all, 0, "at start").await;
    let l = nodes.iter().position(|n| n.peer_id == leader).unwrap();
    let counts = |i: usize| {
        let n = &nodes[i];
        async move { n.status_brief().await.map(|s| s.probe_datagrams) }
    };
    // Both followers probe the leader (3 probers by default), by datagram too.
    let answered = wait_for(CONVERGE, || async {
        let lead = counts(l).await?;
        let mut acked = 0;
        for i in (0..nodes.len()).filter(|i| *i != l) {
            acked += counts(i).await?.acked;
        }
        (lead.answered >= 4 && acked >= 4).then_some(lead)
    })
    .await
    .expect("the leader answers its probers by datagram, and they take the answers");
    assert_ne!(answered.port, 0);

    let stranger = libp2p::identity::Keypair::generate_ed25519();
    let from = stranger.public().to_peer_id();
    let probe = |from: libp2p::PeerId| {
        wire::encode(&Datagram::Probe {
            from: from.to_bytes(),
            token: 1,
        })
    };
    let member: libp2p::PeerId = nodes[(l + 1) % nodes.len()].peer_id.parse().unwrap();
    let ack = wire::encode(&wire::probe_ack(&stranger, "default", 2, &from).unwrap());
    let garbage = vec![wire::VERSION, 0xde, 0xad, 0xbe, 0xef];
    let here = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let elsewhere = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let to = ("127.0.0.1", answered.port);
    let before = counts(l).await.unwrap().dropped;
    let sends: [(&tokio::net::UdpSocket, Vec<u8>); 6] = [
        (&here, probe(from)),        // a peer it is not connected to
        (&here, probe(member)),      // a member, but not from its announced port
        (&elsewhere, probe(member)), // a member, but not from its address
        (&here, ack),                // an answer to no probe of the leader's
        (&here, garbage),
        (&here, vec![0u8; 2000]), // over the limit
    ];
    for (socket, d) in &sends {
        socket.send_to(d, to).await.unwrap();
    }
    let after = wait_for(Duration::from_secs(20), || async {
        counts(l).await.filter(|c| c.dropped >= before + 6)
    })
    .await
    .expect("the leader drops and counts what it cannot use");
    assert_eq!(after.dropped, before + 6);
    let mut buf = [0u8; 512];
    for socket in [&here, &elsewhere] {
        assert!(socket.try_recv_from(&mut buf).is_err(), "no answer sent");
    }
    let (still, e) = agree(&all, 0, "after the stranger's datagrams").await;
    assert_eq!((still, e), (leader, epoch), "the leadership did not move");
}

/// A probe of a leader that has answered this node's probe datagrams goes
/// by datagram alone first, and over the connection only if no answer came
/// within `[election] probe_connection_after_ms` (100 ms): on a healthy
/// network the leader's connections carry few probes. With it at 0 every
/// probe goes both ways at once (the control, as before): the leader
/// answers about one `Ping` for each datagram.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_go_over_the_connection_only_when_their_datagrams_go_unanswered() {
    let tmp = tempfile::tempdir().unwrap();
    for after_ms in [100, 0] {
        let dir = tmp.path().join(format!("after-{after_ms}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("probes.toml");
        std::fs::write(
            &config,
            format!("[election]\nprobe_connection_after_ms = {after_ms}\n"),
        )
        .unwrap();
        let mut sp = spawner(&dir);
        sp.extra = vec!["--config".into(), config.display().to_string()];
        let roles = [Role::Master, Role::Worker, Role::Worker];
        let nodes = start_cluster(&sp, &dir, &roles, CONVERGE).await.unwrap();
        let all: Vec<&NodeProc> = nodes.iter().collect();
        let (leader, epoch) = agree(&all, 0, "at start").await;
        let l = nodes.iter().position(|n| n.peer_id == leader).unwrap();
        let counts = || async { nodes[l].status_brief().await.map(|s| s.probe_datagrams) };
        // From the leader's first datagram answers on: until then probes go
        // both ways (a peer's datagrams are trusted once it answered one).
        let start = wait_for(CONVERGE, || async {
            counts().await.filter(|c| c.answered >= 4)
        })
        .await
        .expect("the leader answers its probers by datagram");
        let end = wait_for(Duration::from_secs(60), || async {
            counts().await.filter(|c| c.answered >= start.answered + 40)
        })
        .await
        .expect("40 more probes answered by datagram");
        let datagrams = end.answered - start.answered;
        let pings = end.pings_answered - start.pings_answered;
        eprintln!(
            "probe_connection_after_ms = {after_ms}: {datagrams} by datagram, {pings} over the connections"
        );
        if after_ms == 0 {
            assert!(
                pings * 2 >= datagrams,
                "both ways at once: {pings} of {datagrams}"
            );
        } else {
            assert!(
                pings * 4 <= datagrams,
                "datagram first: {pings} pings for {datagrams}"
            );
        }
        let (still, e) = agree(&all, 0, "after the probes").await;
        assert_eq!((still, e), (leader, epoch), "the leadership did not move");
    }
}
