//! The binary's command line: bad input exits 2 naming the culprit, a data
//! dir is never shared, `status`/`peers` talk to a running node, and a
//! graceful stop exits 0 and cleans up.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ipfs_kit_p2p::api::StatusView;
use ipfs_kit_p2p::role::Role;
use testkit::Spawner;

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");

/// Runs the binary to completion; fails the test (and kills it) if it is
/// still running after a minute, e.g. a node that should have refused to start.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("IPFS_KIT_P2P_API")
        .env_remove("IPFS_KIT_P2P_DATA_DIR")
        .env("IPFS_KIT_P2P_IPFS", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the binary");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for the binary").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "{args:?} still running after 60 s; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

fn assert_usage_error(args: &[&str], culprit: &str) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} should exit 2; stderr: {stderr}"
    );
    assert!(
        stderr.contains(culprit),
        "{args:?}: message should name {culprit:?}: {stderr}"
    );
}

#[test]
fn bad_flags_and_config_exit_2_naming_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert_usage_error(&["--role", "boss", "--data-dir", d], "boss");
    assert_usage_error(
        &["--bootstrap", "/ip4/1.2.3/tcp/4010", "--data-dir", d],
        "/ip4/1.2.3/tcp/4010",
    );
    assert_usage_error(&["--listen", "not-an-addr", "--data-dir", d], "not-an-addr");
    assert_usage_error(
        &["--config", "/nonexistent/ipfs-kit.toml", "--data-dir", d],
        "/nonexistent/ipfs-kit.toml",
    );
    assert_usage_error(&["--api", "localhost", "--data-dir", d], "api");
    assert_usage_error(&["--cluster", "two words", "--data-dir", d], "cluster");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "role = \"master\"\nreplicas = 3\n").unwrap();
    assert_usage_error(
        &["--config", cfg.to_str().unwrap(), "--data-dir", d],
        "replicas",
    );
    std::fs::write(&cfg, "[election]\nheartbeat_interval_ms = \"fast\"\n").unwrap();
    assert_usage_error(
        &["--config", cfg.to_str().unwrap(), "--data-dir", d],
        "heartbeat_interval_ms",
    );
    // Nothing was started: no identity was created.
    assert!(!dir.path().join("identity.key").exists());
}

#[test]
fn status_without_a_node_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["status", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("api") && stderr.contains("running"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_peers_single_data_dir_and_clean_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n0");
    let mut node = Spawner::new(BIN)
        .spawn(Role::Master, &dir, &[])
        .await
        .unwrap();
    let d = dir.to_str().unwrap().to_owned();

    // A second node on the same data dir is refused.
    let out = run(&[
        "--role",
        "worker",
        "--data-dir",
        &d,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--api",
        "127.0.0.1:0",
        "--no-mdns",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("in use by another running ipfs-kit-p2p node")
    );

    // The identity key is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("identity.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // status --json is the API's JSON; the table names the peer and role.
    let out = run(&["status", "--json", "--data-dir", &d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: StatusView = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(status.peer_id, node.peer_id);
    assert_eq!(status.role, Role::Master);
    assert_eq!(status.cluster, "default");
    let raw: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "peer_id",
        "role",
        "cluster",
        "leader",
        "listen_addrs",
        "peers",
    ] {
        assert!(raw.get(key).is_some(), "status JSON lacks {key}");
    }
    let table = run(&["status", "--data-dir", &d]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&node.peer_id) && table.contains("master"),
        "{table}"
    );
    let peers = run(&["peers", "--json", "--data-dir", &d]);
    let peers: serde_json::Value = serde_json::from_slice(&peers.stdout).unwrap();
    assert!(peers.is_array());
    // --api reaches the same node.
    let api = std::fs::read_to_string(dir.join("api")).unwrap();
    let out = run(&["status", "--json", "--api", api.trim()]);
    assert!(out.status.success());

    // A lone master leads itself once its startup grace is over.
    let leader = testkit::wait_for(Duration::from_secs(20), || async {
        node.status().await.and_then(|s| s.leader)
    })
    .await
    .expect("a lone master leads");
    assert_eq!(leader.peer_id, node.peer_id);

    // SIGTERM: exit 0, api file gone, data dir free again.
    node.terminate();
    let code = node
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("stops within 20 s");
    assert!(code.success(), "{code}");
    assert!(!dir.join("api").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_listen_port_stops_the_node_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Spawner::new(BIN)
        .spawn(Role::Worker, &tmp.path().join("a"), &[])
        .await
        .unwrap();
    let status = first.status().await.unwrap();
    let taken = status.listen_addrs[0].clone();
    // A node started on `listen` with data in `dir`: its exit code and
    // standard error.
    let start_on = |dir: &std::path::Path, listen: &str| {
        let out = run(&[
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            listen,
            "--api",
            "127.0.0.1:0",
            "--no-mdns",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    };
    let d = tmp.path().join("b");
    let (code, stderr) = start_on(&d, &taken);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {taken}")),
        "{stderr}"
    );
    assert!(
        !d.join("api").exists(),
        "no api file for a node that never ran"
    );
    // A QUIC port in use: the message says why, not just where.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let quic = format!(
        "/ip4/127.0.0.1/udp/{}/quic-v1",
        udp.local_addr().unwrap().port()
    );
    let (code, stderr) = start_on(&tmp.path().join("c"), &quic);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {quic}: ")) && stderr.contains("in use"),
        "{stderr}"
    );
}

/// A second node on one host whose IPFS would take a port already in use
/// (here the port after its API's, which its IPFS RPC follows) refuses to
/// start, naming the flags, instead of running on with a crash-looping IPFS.
#[test]
fn a_taken_ipfs_port_stops_the_node_naming_the_flags() {
    // A free port A whose successor can be taken by this test.
    let (api, _held) = (0..50)
        .find_map(|_| {
            let a = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
            let port = a.local_addr().ok()?.port();
            drop(a);
            let held = std::net::TcpListener::bind(("127.0.0.1", port.checked_add(1)?)).ok()?;
            Some((port, held))
        })
        .expect("two adjacent free ports");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("n");
    let out = run(&[
        "--data-dir",
        d.to_str().unwrap(),
        "--ipfs",
        "builtin",
        "--api",
        &format!("127.0.0.1:{api}"),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--no-mdns",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{}", api + 1)),
        "{stderr}"
    );
    assert!(stderr.contains("--ipfs-api"), "{stderr}");
    assert!(
        !d.join("api").exists(),
        "no api file for a node that never ran"
    );
}

/// Completions for every shell clap knows and the man page come from the
/// CLI definition; an unknown shell exits 2 naming the choices.
#[test]
fn completions_and_the_man_page_are_generated() {
    // Their output is larger than a pipe holds: read it as it comes.
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .output()
            .expect("run the binary")
    };
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef ipfs-kit-p2p"),
        ("fish", "complete -c ipfs-kit-p2p"),
    ] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: no {marker:?}");
        assert!(
            text.contains("index") && text.contains("bootstrap"),
            "{shell}"
        );
    }
    let out = run(&["man"]);
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH ipfs-kit-p2p"),
        "{page:.200}"
    );
    assert!(page.contains("bootstrap"));
    let out = run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}

/// Starts a node (`--ipfs off`, loopback) with the open-file limit set to
/// `soft`:`hard` in the child, its stderr in `log`.
fn spawn_with_nofile(
    dir: &std::path::Path,
    log: &std::path::Path,
    soft: u64,
    hard: u64,
    extra: &[&str],
) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(BIN);
    cmd.args(extra)
        .args([
            "--role",
            "worker",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
            "--no-mdns",
            "--ipfs",
            "off",
            "--data-dir",
        ])
        .arg(dir)
        .env_remove("IPFS_KIT_P2P_API")
        .env_remove("IPFS_KIT_P2P_BOOTSTRAP")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: between fork and exec only setrlimit(2), which is
    // async-signal-safe, on a value copied into the closure.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd.spawn().expect("start the node")
}

/// The soft and hard limits on open files of a running process.
fn nofile_of(pid: u32) -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line["Max open files".len()..].split_whitespace();
    Some((nums.next()?.parse().ok()?, nums.next()?.parse().ok()?))
}

/// The processes of `parent` named `name` (from `/proc`).
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) state ppid ..."
            let Some((comm, rest)) = stat.split_once(") ") else {
                return false;
            };
            comm.ends_with(&format!("({name}"))
                && rest.split_whitespace().nth(1) == Some(parent.to_string().as_str())
        })
        .collect()
}

/// A shell's soft limit of a few hundred open files would run out with a
/// cluster of hundreds: the node raises it to the hard limit (here below
/// the 65,536 it asks for) and logs it, while its services get the limit
/// it was started with; with a hard limit too low for `network.max_peers`
/// (1,024 members), it warns, naming the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_file_limit_is_raised_and_a_short_one_named() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("service.toml");
    std::fs::write(
        &config,
        "[[service]]\nname = \"sleeper\"\ncommand = \"sleep\"\nargs = [\"600\"]\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let cases = [
        (
            "raised",
            256,
            4096,
            (4096, 4096),
            "raised the limit on open files",
        ),
        ("short", 512, 1024, (1024, 1024), "open-file limit is below"),
    ];
    for (name, soft, hard, want, line) in cases {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let log = tmp.path().join(format!("{name}.log"));
        let mut child = spawn_with_nofile(&dir, &log, soft, hard, &["--config", config]);
        let pid = child.id();
        let service = || {
            children_named(pid, "sleep")
                .first()
                .and_then(|c| nofile_of(*c))
        };
        let seen = testkit::wait_for(Duration::from_secs(30), || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let no_warning = name != "raised" || !text.contains("open-file limit is below");
            (nofile_of(pid) == Some(want)
                && text.contains(line)
                && no_warning
                && service() == Some((soft, hard)))
            .then_some(())
        })
        .await;
        let (node_limits, service_limits) = (nofile_of(pid), service());
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            seen.is_some(),
            "{name}: limits {node_limits:?}, wanted {want:?}; the service's \
             {service_limits:?}, wanted ({soft}, {hard}); a log line with {line:?} \
             (and no warning if raised); log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}
