//! Running as a systemd service. This machine's PID 1 is not systemd, so
//! the unit cannot be started here; instead:
//! - `systemd-analyze verify` checks `config/systemd/ipfs-kit-p2p.service`
//!   (every key known, the binary found) and `systemd-analyze security`
//!   rates its hardening;
//! - a stand-in service manager runs the real node the way systemd runs a
//!   `Type=notify` unit: a datagram socket in `$NOTIFY_SOCKET`, READY=1
//!   awaited (and the API must already answer then), SIGTERM to stop,
//!   STOPPING=1 awaited, and the exit within the unit's `TimeoutStopSec`.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::netns::in_ci;

const BIN: &str = env!("CARGO_BIN_EXE_ipfs-kit-p2p");

fn unit_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/systemd/ipfs-kit-p2p.service");
    std::fs::read_to_string(path).unwrap()
}

/// `TimeoutStopSec` of the unit.
fn stop_timeout() -> Duration {
    let text = unit_text();
    let secs = text
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim().parse().ok())
        .expect("the unit sets TimeoutStopSec in seconds");
    Duration::from_secs(secs)
}

#[test]
fn the_unit_file_verifies_and_is_hardened() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            !in_ci(),
            "systemd-analyze is missing, and CI must run this test"
        );
        eprintln!("skipping: systemd-analyze is missing (apt install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("ipfs-kit-p2p.service");
    std::fs::write(
        &unit,
        unit_text().replace("/usr/local/bin/ipfs-kit-p2p", BIN),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    // An unknown key is only a warning to systemd: any word from it fails.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "verify: {said}"
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let level: f64 = report
        .lines()
        .find_map(|l| l.split("exposure level for ipfs-kit-p2p.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(
        level <= 2.0,
        "exposure {level} (systemd calls <= 2 OK):\n{report}"
    );
    let text = unit_text();
    for line in [
        "Type=notify",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=ipfs-kit-p2p",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing");
    }
}

/// Waits for one notification datagram.
fn recv(sock: &UnixDatagram, within: Duration) -> String {
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification within {within:?}: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_node_speaks_systemds_notify_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket).unwrap();
    let data = dir.path().join("node");
    let mut child = Command::new(BIN)
        .args(["--role", "master", "--ipfs", "off", "--no-mdns"])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .env("NOTIFY_SOCKET", &socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = recv(&sock, Duration::from_secs(60));
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=master ")),
        "{ready:?}"
    );
    // READY means the API listens: it answers at once.
    let addr = ipfs_kit_p2p::api::locate(None, &data).expect("the api file exists at READY");
    let health = std::net::TcpStream::connect(&addr);
    assert!(health.is_ok(), "API at {addr} not listening at READY");
    // SIGTERM, as systemd stops it.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let stopping = recv(&sock, Duration::from_secs(30));
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let deadline = Instant::now() + stop_timeout();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running after TimeoutStopSec"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit {status}");
}
