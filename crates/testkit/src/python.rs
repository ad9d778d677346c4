//! A Python interpreter with the packages a test checks the node with
//! (a real Prometheus parser, the Pinning Service API's contract tester).
//! `.ci/run` makes one in `target/py`; elsewhere `IPFS_KIT_TEST_PYTHON`,
//! then `target/py/bin/python3`, then `python3` on the PATH are tried.

use std::path::PathBuf;
use std::process::Command;

/// The first interpreter that imports every module of `modules`.
pub fn python_with(modules: &[&str]) -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut tried = Vec::new();
    let candidates = std::env::var_os("IPFS_KIT_TEST_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([root.join("target/py/bin/python3"), PathBuf::from("python3")]);
    let script = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    for py in candidates {
        match Command::new(&py).args(["-c", &script]).output() {
            Ok(out) if out.status.success() => return Ok(py),
            Ok(out) => tried.push(format!(
                "{}: {}",
                py.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )),
            Err(e) => tried.push(format!("{}: {e}", py.display())),
        }
    }
    Err(format!(
        "no Python with {} ({}); `.ci/run` installs them in target/py",
        modules.join(", "),
        tried.join("; ")
    ))
}

/// `python_with`, or: under CI, a failure; elsewhere `None` after saying
/// why the test skips.
pub fn python_or_skip(test: &str, modules: &[&str]) -> Option<PathBuf> {
    match python_with(modules) {
        Ok(py) => Some(py),
        Err(why) => {
            assert!(
                !crate::netns::in_ci(),
                "{test} cannot run, and CI must run it: {why}"
            );
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}
