//! A practical five-node cluster on one machine, walked through: the
//! original system's example set-up (master-primary, master-secondary,
//! worker-alpha, worker-beta, leecher-gamma), each node a real
//! `ipfs-kit-p2p` process with its own data directory and built-in IPFS.
//!
//! ```sh
//! cargo run --release --example cluster
//! ```
//!
//! It prints every command an operator would type for each step and checks
//! what the step promises: the election, replication of a real file to its
//! factor, a leecher refusing a write, the indexes, the IPFS Pinning Service
//! API, metrics, a failover when the primary dies, the cluster healing, the
//! primary's return, and a graceful stop of every node. It stops everything
//! it started, also on an error or Ctrl-C, and exits 1 if a step did not
//! hold.
//!
//! Options: `--base-port N` (4100; each node takes a block of ten ports
//! above the first free base found, on 127.0.0.1 only), `--dir DIR` (where
//! the data directories go; default a new directory under the system's
//! temporary one, removed afterwards), `--keep` (keep it), `--bin PATH`
//! (the `ipfs-kit-p2p` binary; default the one next to this example, built
//! first in the same profile).

mod nodes;
mod walk;

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cluster: {e}");
            eprintln!("usage: cluster [--base-port N] [--dir DIR] [--keep] [--bin PATH]");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let code = rt.block_on(async {
        tokio::select! {
            r = walk::run(opts) => match r {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!("\ncluster: {e}");
                    1
                }
            },
            // Dropping the walk kills every node it started.
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\ncluster: interrupted; the nodes are stopped");
                130
            }
        }
    });
    std::process::exit(code);
}

fn parse_args() -> Result<walk::Options, String> {
    let mut base_port = 4100;
    let mut dir = None;
    let mut keep = false;
    let mut bin = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--base-port" => {
                base_port = val()?.parse().map_err(|e| format!("--base-port: {e}"))?;
                if base_port < 1024 {
                    return Err("--base-port must be 1024 or above".into());
                }
            }
            "--dir" => dir = Some(PathBuf::from(val()?)),
            "--keep" => keep = true,
            "--bin" => bin = Some(PathBuf::from(val()?)),
            other => return Err(format!("unknown option {other}")),
        }
    }
    let bin = match bin {
        Some(b) => b,
        None => node_binary()?,
    };
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("ipfs-kit-cluster-{}", std::process::id()))
    });
    Ok(walk::Options {
        bin,
        dir,
        base_port,
        keep,
    })
}

/// The node binary of this example's build profile (`target/<profile>/`),
/// built first so it is never stale.
fn node_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory")?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // With this example, so features resolve as they did for it (the binary
    // alone would resolve them without the dev-dependencies and rebuild).
    cmd.args([
        "build",
        "--quiet",
        "--bin",
        "ipfs-kit-p2p",
        "--example",
        "cluster",
    ]);
    if release {
        cmd.arg("--release");
    }
    let ok = cmd
        .status()
        .map_err(|e| format!("cannot run cargo to build the node: {e}"))?;
    if !ok.success() {
        return Err("cargo build of the node binary failed".into());
    }
    Ok(profile_dir.join("ipfs-kit-p2p"))
}
