//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the
//! same entry points the fuzz targets call, so every input the fuzzers kept
//! (and every crash they found, once fixed) is checked by `cargo test` on
//! stable Rust. See `fuzz/README.md` for running the fuzzers.

use std::path::Path;

#[test]
fn every_committed_fuzz_input_is_handled_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, target) in ipfs_kit_p2p::fuzzing::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target has a corpus)", dir.display()));
        let mut n = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&bytes));
            assert!(outcome.is_ok(), "{name}: {} panicked", path.display());
            n += 1;
        }
        assert!(n > 0, "{name}: empty corpus");
        eprintln!("{name}: {n} inputs");
    }
}
