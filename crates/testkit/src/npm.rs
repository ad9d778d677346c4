//! Node.js with an npm package some test drives the engine with (the
//! `kubo-rpc-client`). `.ci/run` installs it with `npm install --prefix
//! target/npm`; `IPFS_KIT_TEST_NPM_PREFIX` names another prefix.

use std::path::PathBuf;
use std::process::Command;

/// `node` and the npm prefix holding `package` at `version`.
pub fn node_with(package: &str, version: &str) -> Result<(PathBuf, PathBuf), String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let prefix = std::env::var_os("IPFS_KIT_TEST_NPM_PREFIX")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/npm"));
    let node = PathBuf::from("node");
    match Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Err(format!("node --version failed: {}", out.status)),
        Err(e) => return Err(format!("no node on the PATH: {e}")),
    }
    let manifest = prefix
        .join("node_modules")
        .join(package)
        .join("package.json");
    let text =
        std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let found = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_default();
    if found != version {
        return Err(format!(
            "{package} {found:?} in {}, not {version}",
            prefix.display()
        ));
    }
    Ok((node, prefix))
}

/// `node_with`, or: under CI, a failure; elsewhere `None` after saying why
/// the test skips.
pub fn node_or_skip(test: &str, package: &str, version: &str) -> Option<(PathBuf, PathBuf)> {
    match node_with(package, version) {
        Ok(found) => Some(found),
        Err(why) => {
            assert!(
                !crate::netns::in_ci(),
                "{test} cannot run, and CI must run it: {why}; `.ci/run` installs \
                 {package}@{version} in target/npm"
            );
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}
