//! The auto-update script (`scripts/ipfs-kit-update`) end to end, on a
//! temporary git repository whose "build" is a shell script committed in it,
//! with real nodes: a worker run from the installed binary (restarted by a
//! script that stands in for `systemctl restart`) and a master it follows.
//!
//! Guarantees checked: a held lock or the disable switch defers the update;
//! a good commit is built, swapped in and restarted into a healthy node with
//! a leader, the old binary kept; a commit whose binary fails health is
//! rolled back (the old bytes installed, the node healthy and in the cluster
//! again) and never tried again; a failed build and a diverged checkout
//! leave the binary and the running node alone. Needs bash, git, flock and curl: without one the
//! test fails, naming it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipfs_kit_p2p::api::Client;
use ipfs_kit_p2p::role::Role;
use testkit::{NodeProc, Spawner, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ipfs-kit-update");
/// The script's bound for health and a leader after each restart.
const HEALTH_TIMEOUT_S: u64 = 30;
/// The node under update has an API token, so `status` needs it.
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// The stand-in for `cargo build`: the real node binary (`node`) with a line
/// appended (an ELF binary runs with bytes after it), so each build's bytes
/// differ.
fn good_build(node: &Path, n: u32) -> String {
    format!(
        "set -e\nmkdir -p target/release\ncp '{}' target/release/ipfs-kit-p2p\n\
         echo 'build {n}' >>target/release/ipfs-kit-p2p\n",
        node.display()
    )
}

/// Builds a binary that exits at once: it never answers /health.
const BROKEN_BUILD: &str = "set -e\nmkdir -p target/release\n\
    printf '#!/bin/sh\\necho broken build >&2\\nexit 1\\n' >target/release/ipfs-kit-p2p\n\
    chmod +x target/release/ipfs-kit-p2p\n";

/// A build that fails.
const FAILING_BUILD: &str = "echo 'error[E0308]: mismatched types' >&2\nexit 1\n";

/// Everything the scenarios share, under one temporary directory; dropping
/// it kills the node under update (the master is a [`NodeProc`], killed on
/// its own drop).
struct Lab {
    // Before `dir`: fields drop in order, and the master must be gone
    // before its directory is removed.
    master: NodeProc,
    origin: PathBuf,
    checkout: PathBuf,
    installed: PathBuf,
    /// The node binary the good builds copy, and the first one installed.
    node: PathBuf,
    pidfile: PathBuf,
    api: String,
    dir: tempfile::TempDir,
}

/// One run of the script: its exit code and everything it printed.
struct Run {
    code: Option<i32>,
    output: String,
}

impl Lab {
    /// A repository with one good commit, its clone as the checkout, the
    /// real binary installed, a master and the worker under update running.
    async fn new() -> Lab {
        require_tools();
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_owned();
        // A copy of the node binary: cargo may replace BIN while this runs.
        let node = root.join("node-binary");
        std::fs::copy(BIN, &node).expect("copy the node binary");
        let (origin, checkout) = (root.join("origin"), root.join("checkout"));
        git(&root, &["init", "-q", "-b", "main", "origin"]);
        commit(&origin, &good_build(&node, 0), "build 0");
        git(&root, &["clone", "-q", "origin", "checkout"]);

        std::fs::create_dir_all(root.join("bin")).unwrap();
        let installed = root.join("bin/ipfs-kit-p2p");
        std::fs::copy(&node, &installed).expect("install the node binary");

        let master = Spawner::new(&node)
            .spawn(Role::Master, &root.join("master"), &[])
            .await
            .expect("start the master");
        std::fs::write(root.join("node.token"), TOKEN).unwrap();
        let lab = Lab {
            api: format!("127.0.0.1:{}", free_port()),
            pidfile: root.join("node.pid"),
            dir,
            origin,
            checkout,
            installed,
            node,
            master,
        };
        lab.write_restart_script();
        let started = isolated(Command::new("sh"), lab.root())
            .arg(lab.root().join("restart.sh"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(started, "the restart script could not start the node");
        lab.wait_in_cluster().await;
        lab
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The test's `systemctl restart`: SIGTERM the node under update, wait
    /// until it is gone (a zombie counts as gone), start it again from the
    /// installed binary on the fixed API port.
    fn write_restart_script(&self) {
        let root = self.root().display();
        let script = format!(
            r#"set -eu
gone() {{ [ ! -e "/proc/$1" ] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }}
if [ -s '{pidfile}' ]; then
    pid=$(cat '{pidfile}')
    kill -TERM "$pid" 2>/dev/null || true
    n=0
    until gone "$pid"; do
        n=$((n + 1))
        if [ "$n" -gt 600 ]; then echo "node $pid still runs 30 s after SIGTERM" >&2; exit 1; fi
        sleep 0.05
    done
fi
'{installed}' --role worker --ipfs off --no-mdns --listen /ip4/127.0.0.1/tcp/0 \
    --api {api} --data-dir '{root}/node' --api-token-file '{root}/node.token' \
    --bootstrap {boot} </dev/null >>'{root}/node.log' 2>&1 &
echo $! >'{pidfile}'
"#,
            pidfile = self.pidfile.display(),
            installed = self.installed.display(),
            api = self.api,
            boot = self.master.addr,
        );
        std::fs::write(self.root().join("restart.sh"), script).unwrap();
    }

    /// Runs the update script with a clean environment, bounded.
    fn update(&self) -> Run {
        self.update_with(&[])
    }

    /// [`Lab::update`] with extra environment.
    fn update_with(&self, env: &[(&str, &str)]) -> Run {
        let root = self.root();
        let log = root.join("update.log");
        let out = File::create(&log).unwrap();
        let mut child = isolated(Command::new("bash"), root)
            .arg(SCRIPT)
            .env("IPFS_KIT_UPDATE_DEFAULTS", root.join("no-defaults"))
            .env("IPFS_KIT_REPO", &self.checkout)
            .env("IPFS_KIT_BUILD_CMD", "sh build.sh")
            .env("IPFS_KIT_BINARY", &self.installed)
            .env(
                "IPFS_KIT_RESTART_CMD",
                format!("sh {}", root.join("restart.sh").display()),
            )
            .env("IPFS_KIT_API", &self.api)
            .env("IPFS_KIT_DATA_DIR", root.join("node"))
            .env("IPFS_KIT_API_TOKEN", TOKEN)
            .env("IPFS_KIT_HEALTH_TIMEOUT", HEALTH_TIMEOUT_S.to_string())
            .env("IPFS_KIT_STATE_DIR", self.state())
            .envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("run the update script");
        // Two health waits and a restart or two, with room to spare.
        let deadline = Instant::now() + Duration::from_secs(3 * HEALTH_TIMEOUT_S + 60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the update script did not finish in time:\n{}", read(&log));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let run = Run {
            code: status.code(),
            output: read(&log),
        };
        // Shown with --nocapture, or when the test fails.
        eprintln!("ipfs-kit-update exited {:?}:\n{}", run.code, run.output);
        run
    }

    fn state(&self) -> PathBuf {
        self.root().join("state")
    }

    /// A copy of the installed binary as it is now, to compare with later.
    fn snapshot_installed(&self, name: &str) -> PathBuf {
        let copy = self.root().join(name);
        std::fs::copy(&self.installed, &copy).expect("copy the installed binary");
        copy
    }

    fn head(&self) -> String {
        git(&self.checkout, &["rev-parse", "HEAD"])
    }

    fn failed_versions(&self) -> String {
        std::fs::read_to_string(self.state().join("failed-versions")).unwrap_or_default()
    }

    /// The pid of the node under update; it must be running.
    fn node_pid(&self) -> u32 {
        let pid = read(&self.pidfile).trim().parse().unwrap_or(0);
        assert!(running(pid), "the node under update ({pid}) is not running");
        pid
    }

    /// The installed binary still holds `before`'s bytes, and the node
    /// still runs as `pid`.
    fn assert_untouched(&self, before: &Path, pid: u32) {
        assert_same(&self.installed, before, "the installed binary is untouched");
        assert_eq!(self.node_pid(), pid, "the node was restarted");
    }

    /// The node runs the installed file as it is now (not a replaced one,
    /// which /proc shows as "(deleted)").
    fn assert_runs_installed(&self) {
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.node_pid())).unwrap();
        assert_eq!(exe, self.installed, "the node runs {}", exe.display());
    }

    /// Waits until /health answers 200 and the node follows the master.
    async fn wait_in_cluster(&self) {
        let client = Client::new(self.api.clone()).with_token(Some(TOKEN.into()));
        let master = self.master.peer_id.clone();
        let ok = wait_for(Duration::from_secs(30), || async {
            client.text("/health").await.ok()?;
            let (status, _) = client.status().await.ok()?;
            status.leader.filter(|l| l.peer_id == master).map(|_| ())
        })
        .await;
        assert!(
            ok.is_some(),
            "the node under update is not healthy with the master as leader; its log:\n{}",
            read(&self.root().join("node.log"))
        );
    }
}

impl Drop for Lab {
    /// Kills the node under update and waits (5 s at most) until it is
    /// gone, so its directory can be removed.
    fn drop(&mut self) {
        let Ok(pid) = read(&self.pidfile).trim().parse::<i32>() else {
            return;
        };
        // SAFETY: kill(2) with a valid signal, on the pid of the node this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while running(pid as u32) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether a process runs (a zombie does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_rolls_forward_and_back() {
    let started = Instant::now();
    let lab = Lab::new().await;
    let good = commit(&lab.origin, &good_build(&lab.node, 1), "a good change");
    nothing_happens_while_locked_or_disabled(&lab);
    a_good_commit_is_installed(&lab, &good).await;
    a_broken_commit_is_rolled_back_and_not_retried(&lab, &good).await;
    a_failed_build_changes_nothing(&lab, &good);
    a_diverged_checkout_is_refused(&lab);
    eprintln!("update scenarios took {:.1?}", started.elapsed());
}

/// While another run holds the lock, or with IPFS_KIT_UPDATE_DISABLE=1, a
/// run exits 0 and changes nothing, though there is a new commit.
fn nothing_happens_while_locked_or_disabled(lab: &Lab) {
    let (head, pid) = (lab.head(), lab.node_pid());
    let run = lab.update_with(&[("IPFS_KIT_UPDATE_DISABLE", "1")]);
    assert_run(&run, 0, "disabled");
    std::fs::create_dir_all(lab.state()).unwrap();
    let lock = File::create(lab.state().join("lock")).unwrap();
    lock.try_lock().expect("take the update lock");
    assert_run(&lab.update(), 0, "another update is running");
    assert_eq!((lab.head(), lab.node_pid()), (head, pid), "nothing changed");
}

/// A good commit: fast-forwarded, built, swapped in, restarted, healthy,
/// the old binary kept.
async fn a_good_commit_is_installed(lab: &Lab, good: &str) {
    let (head, pid) = (lab.head(), lab.node_pid());
    let says = format!("updated {} -> {}", short(&head), short(good));
    assert_run(&lab.update(), 0, &says);
    assert_eq!(lab.head(), good);
    let built = lab.checkout.join("target/release/ipfs-kit-p2p");
    assert_same(&lab.installed, &built, "the new build is installed");
    let previous = lab.root().join("bin/ipfs-kit-p2p.previous");
    assert_same(&previous, &lab.node, "the old binary is kept");
    assert_ne!(lab.node_pid(), pid, "the node was restarted");
    lab.assert_runs_installed();
    lab.wait_in_cluster().await;
    assert_run(&lab.update(), 0, "up to date");
}

/// A commit whose binary never becomes healthy: the old binary is restored
/// and restarted, the commit recorded, and the next run skips it.
async fn a_broken_commit_is_rolled_back_and_not_retried(lab: &Lab, good: &str) {
    let before = lab.snapshot_installed("installed-before-broken");
    let broken = commit(&lab.origin, BROKEN_BUILD, "a broken change");
    let run = lab.update();
    assert_run(&run, 1, &format!("{} failed: health", short(&broken)));
    assert_run(&run, 1, "rolled back");
    assert_same(&lab.installed, &before, "the old binary is installed again");
    assert_eq!(lab.head(), good, "the checkout is back at the good commit");
    assert!(lab.failed_versions().starts_with(&broken));
    lab.assert_runs_installed();
    lab.wait_in_cluster().await;

    let pid = lab.node_pid();
    assert_run(&lab.update(), 0, "recorded as failed");
    lab.assert_untouched(&before, pid);
    assert_eq!(lab.head(), good);
}

/// A build that fails is recorded; the binary and the node are untouched.
fn a_failed_build_changes_nothing(lab: &Lab, good: &str) {
    let before = lab.snapshot_installed("installed-before-failed-build");
    let pid = lab.node_pid();
    let failing = commit(&lab.origin, FAILING_BUILD, "a change that does not build");
    let run = lab.update();
    assert_run(&run, 1, &format!("{} failed: build", short(&failing)));
    lab.assert_untouched(&before, pid);
    assert_eq!(lab.head(), good);
    assert!(lab.failed_versions().contains(&failing));
    assert_run(&lab.update(), 0, "recorded as failed");
}

/// A checkout with a commit of its own is never updated, and nothing is
/// recorded against the remote's commit.
fn a_diverged_checkout_is_refused(lab: &Lab) {
    let before = lab.snapshot_installed("installed-before-diverged");
    let pid = lab.node_pid();
    let theirs = commit(&lab.origin, &good_build(&lab.node, 2), "a good change");
    let local = commit(&lab.checkout, &good_build(&lab.node, 3), "a local change");
    assert_run(&lab.update(), 2, "diverged");
    assert_eq!(lab.head(), local, "the checkout is untouched");
    lab.assert_untouched(&before, pid);
    assert!(!lab.failed_versions().contains(&theirs));
}

fn short(commit: &str) -> &str {
    &commit[..12]
}

fn assert_same(a: &Path, b: &Path, what: &str) {
    assert!(
        same_bytes(a, b),
        "{what}: {} != {}",
        a.display(),
        b.display()
    );
}

fn assert_run(run: &Run, code: i32, says: &str) {
    assert_eq!(
        run.code,
        Some(code),
        "exit {code} expected; output:\n{}",
        run.output
    );
    assert!(
        run.output.contains(says),
        "output should say {says:?}:\n{}",
        run.output
    );
}

/// Fails the test, naming the tool, unless bash, git, flock and curl run.
fn require_tools() {
    for (tool, package) in [
        ("bash", "bash"),
        ("git", "git"),
        ("flock", "util-linux"),
        ("curl", "curl"),
    ] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "tests/update.rs needs {tool} (package {package}) on the PATH"
        );
    }
}

/// A command with only PATH from the environment, HOME in the lab and no
/// git config but the command line's, so the machine's settings (git's, the
/// node's `IPFS_KIT_P2P_*`) never leak in.
fn isolated(mut cmd: Command, home: &Path) -> Command {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::null());
    cmd
}

/// Runs git in `dir`; fails the test unless it succeeds. Returns its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = isolated(Command::new("git"), dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Commits `build.sh` with this content in `repo`; returns the commit's hash.
fn commit(repo: &Path, build: &str, message: &str) -> String {
    std::fs::write(repo.join("build.sh"), build).unwrap();
    git(repo, &["add", "build.sh"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

/// A loopback port free right now (the node under update keeps it).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Whether two files hold the same bytes, read a MiB at a time (the node
/// binary is hundreds of MiB in a debug build).
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (Ok(mut fa), Ok(mut fb)) = (File::open(a), File::open(b)) else {
        return false;
    };
    let len = |f: &File| f.metadata().map(|m| m.len()).ok();
    let Some(mut left) = len(&fa).filter(|l| Some(*l) == len(&fb)) else {
        return false;
    };
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    while left > 0 {
        let n = left.min(1 << 20) as usize;
        if fa.read_exact(&mut x[..n]).is_err() || fb.read_exact(&mut y[..n]).is_err() {
            return false;
        }
        if x[..n] != y[..n] {
            return false;
        }
        left -= n as u64;
    }
    true
}
