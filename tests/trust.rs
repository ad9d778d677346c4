//! Trust with real node processes on loopback (and an in-process libp2p
//! peer where the test needs a peer that breaks the rules the binary keeps):
//! only certified peers are members; roles come from certificates; forged,
//! foreign-signed, expired and revoked certificates are refused, each with
//! a message naming why; the revocation list spreads and survives a
//! restart; a node without the swarm key cannot connect and the other side
//! says why; the control API refuses a non-loopback bind without a token
//! and answers 401 without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, SwarmBuilder, noise, tcp, yamux};

use ipfs_kit_p2p::clock::unix_ms;
use ipfs_kit_p2p::role::Role;
use ipfs_kit_p2p::trust::cert::{CertBody, Certificate, ClusterId, Serial};
use ipfs_kit_p2p::trust::files::load_operator_key;
use ipfs_kit_p2p::wire::{self, Health, Heartbeat, Protocols, Request, Response, RpcCodec};
use testkit::{NodeProc, Spawner, agreed_leader, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");
const WITHIN: Duration = Duration::from_secs(40);

fn cli(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("IPFS_KIT_P2P_API")
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A cluster's operator directory, made with the binary's own commands.
struct Ops {
    dir: PathBuf,
    key: PathBuf,
    public: PathBuf,
}

impl Ops {
    fn init(dir: &Path) -> Ops {
        cli(&["cluster", "init", dir.to_str().unwrap()]);
        Ops {
            dir: dir.to_owned(),
            key: dir.join("operator.key"),
            public: dir.join("operator.pub"),
        }
    }

    /// `id`, then `cert issue`: the node's certificate path.
    fn certify(&self, data: &Path, role: Role) -> PathBuf {
        let id = cli(&["id", "--data-dir", data.to_str().unwrap()]);
        let out = data.with_extension("cert");
        cli(&[
            "cert",
            "issue",
            "--operator-key",
            self.key.to_str().unwrap(),
            "--peer",
            id.trim(),
            "--role",
            role.as_str(),
            "--out",
            out.to_str().unwrap(),
        ]);
        out
    }

    /// A certificate with any window, signed with the operator key.
    fn cert_for(&self, peer: PeerId, role: Role, not_after: u64) -> Certificate {
        let op = load_operator_key(&self.key).unwrap();
        Certificate::issue(
            &op,
            CertBody {
                cluster: ClusterId::of(&op.public()).unwrap().0,
                peer: peer.to_bytes(),
                role,
                serial: Serial(rand::random()),
                not_before: unix_ms() / 1000 - 60,
                not_after,
            },
        )
        .unwrap()
    }

    fn spawner(&self, logs: &Path, cert: &Path) -> Spawner {
        let mut sp = logged(logs);
        sp.extra = vec![
            "--operator-key".into(),
            self.public.display().to_string(),
            "--certificate".into(),
            cert.display().to_string(),
        ];
        sp
    }
}

/// A spawner whose nodes log to `logs/<dir name>.log`.
fn logged(logs: &Path) -> Spawner {
    let mut sp = Spawner::new(BIN);
    sp.log_dir = Some(logs.to_owned());
    sp
}

fn log_of(logs: &Path, name: &str) -> String {
    std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default()
}

async fn wait_log(logs: &Path, name: &str, needle: &str) {
    let found = wait_for(WITHIN, || async {
        log_of(logs, name).contains(needle).then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "{name}'s log never said {needle:?}:\n{}",
        log_of(logs, name)
    );
}

fn sees(s: &ipfs_kit_p2p::api::StatusView, peer: &str) -> bool {
    s.peers.iter().any(|p| p.peer_id == peer && p.healthy)
}

fn dropped(s: &ipfs_kit_p2p::api::StatusView, reason: &str) -> u64 {
    s.trust.dropped.get(reason).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_certified_peers_are_members_and_a_revoked_one_is_dropped_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path();
    let ops = Ops::init(&tmp.path().join("ops"));
    let (dm, dw, dv) = (
        tmp.path().join("m"),
        tmp.path().join("w"),
        tmp.path().join("v"),
    );
    let m_cert = ops.certify(&dm, Role::Master);
    let w_cert = ops.certify(&dw, Role::Worker);
    let v_cert = ops.certify(&dv, Role::Worker);
    let m = ops
        .spawner(logs, &m_cert)
        .spawn(Role::Master, &dm, &[])
        .await
        .unwrap();
    let w = ops
        .spawner(logs, &w_cert)
        .spawn(Role::Worker, &dw, std::slice::from_ref(&m.addr))
        .await
        .unwrap();
    let v = ops
        .spawner(logs, &v_cert)
        .spawn(Role::Worker, &dv, std::slice::from_ref(&m.addr))
        .await
        .unwrap();
    // An open-mode master that knows the cluster name (and the address).
    let open = logged(logs);
    let s = open
        .spawn(
            Role::Master,
            &tmp.path().join("s"),
            std::slice::from_ref(&m.addr),
        )
        .await
        .unwrap();

    let members = [&m, &w, &v];
    let (leader, _, _) = wait_for(WITHIN, || agreed_leader(&members, 2))
        .await
        .expect("m, w and v agree");
    assert_eq!(leader, m.peer_id);
    wait_log(
        logs,
        "s",
        "the peer refused this node: not a member of cluster",
    )
    .await;
    wait_log(logs, "m", "no certificate presented").await;
    let st = m.status().await.unwrap();
    assert!(
        !sees(&st, &s.peer_id),
        "an uncertified peer became a member"
    );
    assert!(dropped(&st, "no certificate") >= 1, "{:?}", st.trust);
    assert_eq!(st.trust.mode, "secured");
    assert_eq!(st.trust.members, 2);
    assert_eq!(st.trust.certificate.as_ref().unwrap().role, Role::Master);
    let open_status = s.status().await.unwrap();
    assert_eq!(open_status.trust.mode, "open");
    assert!(open_status.trust.warning.unwrap().contains("any peer"));

    // Revoke w: published to v only; v passes it on, and m and v drop w
    // within 5 s.
    let serial = {
        let out = cli(&["cert", "show", w_cert.to_str().unwrap(), "--json"]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["serial"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let list = ops.dir.join("revocations");
    cli(&[
        "cert",
        "revoke",
        "--operator-key",
        ops.key.to_str().unwrap(),
        &serial,
        "--out",
        list.to_str().unwrap(),
    ]);
    let t0 = Instant::now();
    let out = cli(&[
        "cert",
        "publish",
        list.to_str().unwrap(),
        "--data-dir",
        dv.to_str().unwrap(),
    ]);
    assert!(out.contains("1 peer(s) dropped"), "{out}");
    let gone = wait_for(Duration::from_secs(5), || async {
        for n in [&m, &v] {
            let st = n.status().await?;
            let p = st.peers.iter().find(|p| p.peer_id == w.peer_id)?;
            // (It keeps dialling in, and each connection is dropped again.)
            if p.healthy || p.state != "left" {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the revoked worker was not dropped by both within 5 s"
    );
    eprintln!(
        "revoked peer dropped by both {:?} after publishing",
        t0.elapsed()
    );
    assert!(
        sees(&m.status().await.unwrap(), &v.peer_id),
        "v stays a member"
    );
    wait_log(logs, "w", "is revoked").await;
    // It stays out: it keeps dialling and is refused.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!sees(&m.status().await.unwrap(), &w.peer_id));

    // The list survives a restart of m.
    let version = m.status().await.unwrap().trust.revocations_version;
    assert!(version.is_some());
    let mut m = m;
    m.terminate();
    m.wait_exit(Duration::from_secs(20)).await.expect("m stops");
    // It dials w (which cannot know its new port), and refuses it.
    let m2 = ops
        .spawner(logs, &m_cert)
        .spawn(Role::Master, &dm, std::slice::from_ref(&w.addr))
        .await
        .unwrap();
    assert_eq!(
        m2.status().await.unwrap().trust.revocations_version,
        version
    );
    let kept_out = wait_for(Duration::from_secs(10), || async {
        let st = m2.status().await?;
        (dropped(&st, "certificate revoked") >= 1).then_some(())
    })
    .await;
    assert!(
        kept_out.is_some(),
        "the restarted master did not refuse the revoked worker"
    );
    assert!(!sees(&m2.status().await.unwrap(), &w.peer_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_with_a_message_naming_the_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path();
    let ops = Ops::init(&tmp.path().join("ops"));
    let (dm, de) = (tmp.path().join("m"), tmp.path().join("e"));
    let m_cert = ops.certify(&dm, Role::Master);
    let m = ops
        .spawner(logs, &m_cert)
        .spawn(Role::Master, &dm, &[])
        .await
        .unwrap();
    // e's certificate ends 8 s from now: it joins, then is dropped.
    let id: PeerId = cli(&["id", "--data-dir", de.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    let short = ops.cert_for(id, Role::Worker, unix_ms() / 1000 + 8);
    let e_cert = tmp.path().join("e.cert");
    std::fs::write(&e_cert, short.to_text()).unwrap();
    let e = ops
        .spawner(logs, &e_cert)
        .spawn(Role::Worker, &de, std::slice::from_ref(&m.addr))
        .await
        .unwrap();
    let joined = wait_for(WITHIN, || async {
        sees(&m.status().await?, &e.peer_id).then_some(())
    })
    .await;
    assert!(
        joined.is_some(),
        "the worker never joined before its certificate expired"
    );
    wait_log(logs, "m", "certificate expired").await;
    // Reconnecting, it is told why.
    wait_log(logs, "e", "expired at").await;
    assert!(!sees(&m.status().await.unwrap(), &e.peer_id));
    // A node does not start on an expired certificate of its own.
    let mut e = e;
    e.kill();
    let out = Command::new(BIN)
        .args([
            "--ipfs",
            "off",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&de)
        .arg("--operator-key")
        .arg(&ops.public)
        .arg("--certificate")
        .arg(&e_cert)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("expired at"), "{err}");
}

// ---------------------------------------------------- an in-process peer

/// A libp2p peer that speaks the node's request-response protocol and
/// sends whatever `Hello` the test makes, certificate and all.
struct Peer {
    swarm: libp2p::Swarm<request_response::Behaviour<RpcCodec>>,
}

impl Peer {
    fn new(key: Keypair) -> Peer {
        let rpc = Protocols::for_cluster("default").rpc;
        let swarm = SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| {
                request_response::Behaviour::with_codec(
                    RpcCodec,
                    [(rpc, ProtocolSupport::Full)],
                    request_response::Config::default(),
                )
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        Peer { swarm }
    }

    fn id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Connects (again, if need be) and sends a Hello; returns the answer.
    async fn hello(&mut self, node: &Multiaddr, role: Role, cert: Option<Vec<u8>>) -> Response {
        let node_id = node.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::P2p(id) => Some(id),
            _ => None,
        });
        let node_id = node_id.unwrap();
        let deadline = tokio::time::sleep(WITHIN);
        tokio::pin!(deadline);
        let mut sent = None;
        loop {
            // The node drops a peer it refused shortly after its answer:
            // connect again (and again, should the Hello race the close).
            if sent.is_none() && !self.swarm.is_connected(&node_id) {
                let _ = self.swarm.dial(node.clone());
            }
            if sent.is_none() && self.swarm.is_connected(&node_id) {
                let hello = Request::Hello(wire::Hello {
                    heartbeat: Heartbeat {
                        role,
                        incarnation: 1,
                        seq: 1,
                        max_epoch: 0,
                        follows: None,
                        voted: None,
                        health: Health::default(),
                        ipfs: None,
                        pinset: None,
                        gpus: vec![],
                        interval_ms: 5000,
                        members: (1, 0),
                        probe_port: 0,
                        held: None,
                    },
                    cert: cert.clone(),
                    revocations: None,
                });
                sent = Some(self.swarm.behaviour_mut().send_request(&node_id, hello));
            }
            tokio::select! {
                event = self.swarm.select_next_some() => match event {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, response },
                        ..
                    }) if Some(request_id) == sent => return response,
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                        request_id, ..
                    }) if Some(request_id) == sent => sent = None,
                    _ => {}
                },
                _ = &mut deadline => panic!("no answer to Hello within {WITHIN:?}"),
            }
        }
    }
}

fn denied(r: &Response) -> Option<&str> {
    match r {
        Response::Denied { reason } => Some(reason),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_certificates_and_roles_above_the_certificate_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path();
    let ops = Ops::init(&tmp.path().join("ops"));
    let dm = tmp.path().join("m");
    let m_cert = ops.certify(&dm, Role::Master);
    let m = ops
        .spawner(logs, &m_cert)
        .spawn(Role::Master, &dm, &[])
        .await
        .unwrap();
    let addr: Multiaddr = m.addr.parse().unwrap();
    let single = [&m];
    wait_for(WITHIN, || agreed_leader(&single, 0))
        .await
        .expect("m leads");
    let year = unix_ms() / 1000 + 365 * 86_400;

    // A peer whose ID sorts first, so that as a master it would lead.
    let key = (0..)
        .map(|_| Keypair::generate_ed25519())
        .find(|k| k.public().to_peer_id().to_base58() < m.peer_id)
        .unwrap();
    let mut rogue = Peer::new(key);
    let rid = rogue.id();

    // The right signer, for another peer ID.
    let other = ops.cert_for(PeerId::random(), Role::Master, year);
    let r = rogue
        .hello(&addr, Role::Master, Some(other.bytes.clone()))
        .await;
    assert!(
        denied(&r).is_some_and(|why| why.contains("issued for peer")),
        "{r:?}"
    );
    // Another operator's key, for the right peer.
    let thief = Ops::init(&tmp.path().join("thief"));
    let forged = thief.cert_for(rid, Role::Master, year);
    let r = rogue.hello(&addr, Role::Master, Some(forged.bytes)).await;
    assert!(
        denied(&r).is_some_and(|why| why.contains("signed by another operator key")),
        "{r:?}"
    );
    // Garbage where the certificate goes.
    let r = rogue
        .hello(&addr, Role::Master, Some(vec![0x0a; 200]))
        .await;
    assert!(denied(&r).is_some(), "{r:?}");

    // A genuine worker certificate, announcing itself as master: answered
    // (it is a member) but its heartbeat is dropped, so it is never elected.
    let worker = ops.cert_for(rid, Role::Worker, year);
    let r = rogue
        .hello(&addr, Role::Master, Some(worker.bytes.clone()))
        .await;
    assert!(matches!(r, Response::Hello { .. }), "{r:?}");
    let st = m.status().await.unwrap();
    assert!(
        dropped(&st, "role above its certificate") >= 1,
        "{:?}",
        st.trust
    );
    assert!(!st.peers.iter().any(|p| p.peer_id == rid.to_base58()));
    assert_eq!(
        st.leader.as_ref().map(|l| l.peer_id.as_str()),
        Some(m.peer_id.as_str())
    );
    // Positive control: the same peer as a worker is taken, as a worker.
    let r = rogue.hello(&addr, Role::Worker, Some(worker.bytes)).await;
    assert!(matches!(r, Response::Hello { .. }), "{r:?}");
    let st = m.status().await.unwrap();
    let p = st
        .peers
        .iter()
        .find(|p| p.peer_id == rid.to_base58())
        .expect("taken as a worker");
    assert_eq!(p.role, Role::Worker);
    assert_eq!(
        st.leader.as_ref().unwrap().peer_id,
        m.peer_id,
        "a worker never outranks a master"
    );
    assert!(dropped(&st, "certificate invalid") >= 3, "{:?}", st.trust);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_swarm_key_cannot_connect_and_the_other_side_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path();
    let ops = Ops::init(&tmp.path().join("ops"));
    let key = ops.dir.join("swarm.key");
    let mut with_key = logged(logs);
    with_key.extra = vec!["--swarm-key".into(), key.display().to_string()];
    let a = with_key
        .spawn(Role::Master, &tmp.path().join("a"), &[])
        .await
        .unwrap();
    let b = with_key
        .spawn(
            Role::Worker,
            &tmp.path().join("b"),
            std::slice::from_ref(&a.addr),
        )
        .await
        .unwrap();
    let pair = [&a, &b];
    wait_for(WITHIN, || agreed_leader(&pair, 1))
        .await
        .expect("a and b connect over pnet");
    assert!(a.status().await.unwrap().trust.swarm_key.is_some());
    // Without a key, and with another key.
    let without = logged(logs);
    let c = without
        .spawn(
            Role::Master,
            &tmp.path().join("c"),
            std::slice::from_ref(&a.addr),
        )
        .await
        .unwrap();
    wait_log(logs, "a", "does not have this cluster's swarm key").await;
    let other = Ops::init(&tmp.path().join("other"));
    let mut other_key = with_key.clone();
    other_key.extra = vec![
        "--swarm-key".into(),
        other.dir.join("swarm.key").display().to_string(),
    ];
    let d = other_key
        .spawn(
            Role::Master,
            &tmp.path().join("d"),
            std::slice::from_ref(&b.addr),
        )
        .await
        .unwrap();
    wait_log(logs, "b", "does not have this cluster's swarm key").await;
    // Nothing ever got through, either way.
    for (n, who) in [(&a, "a"), (&b, "b")] {
        let st = n.status().await.unwrap();
        assert!(
            !st.peers
                .iter()
                .any(|p| p.peer_id == c.peer_id || p.peer_id == d.peer_id),
            "{who}"
        );
    }
    assert!(c.status().await.unwrap().peers.is_empty());
    assert!(d.status().await.unwrap().peers.is_empty());
    // The key itself is never logged.
    let text = std::fs::read_to_string(&key).unwrap();
    let hex = text.lines().last().unwrap();
    for name in ["a", "b"] {
        assert!(!log_of(logs, name).contains(hex), "{name} logged the key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_wants_a_token_beyond_loopback_and_answers_401_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    // Beyond loopback without a token: refused before anything listens.
    let out = Command::new(BIN)
        .args([
            "--ipfs",
            "off",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "0.0.0.0:0",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("api-token"), "{err}");
    // With a token (on loopback here): every request but /health needs it.
    let token = cli(&["api-token", "--data-dir", dir.to_str().unwrap()])
        .trim()
        .to_string();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("api.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let sp = logged(tmp.path());
    let n: NodeProc = sp.spawn(Role::Worker, &dir, &[]).await.unwrap();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", n.client.addr());
    let get = |path: &str, token: Option<&str>| {
        let mut req = http.get(url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/v1/status", None).await, 401);
    assert_eq!(get("/v1/pins", Some("not-the-token-at-all")).await, 401);
    assert_eq!(get("/v1/status", Some(&token)).await, 200);
    assert_eq!(get("/health", None).await, 200, "liveness needs no token");
    // The subcommands read the token from the data directory.
    let out = cli(&["status", "--json", "--data-dir", dir.to_str().unwrap()]);
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["api_unauthorized"], 2, "{out}");
}
