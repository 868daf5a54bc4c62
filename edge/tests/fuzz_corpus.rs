//! The committed fuzz corpus (`fuzz/corpus/<target>/`: seeds, and every input a fuzzing
//! run found and fixed) replayed through the fuzz targets' own checks, without a
//! sanitizer build: a regression of a fixed crash fails `cargo test`, not only the fuzz
//! smoke. See `docs/fuzzing.md`.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/lib.rs"]
mod harness;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    files.sort();
    files
}

/// Runs every corpus file of `target`; names the file that fails.
fn replay(target: &str, run: fn(&[u8])) {
    let files = corpus(target);
    assert!(
        files.len() >= 10,
        "{target}: only {} corpus files",
        files.len()
    );
    for file in files {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", file.display());
    }
}

#[test]
fn sip_message_corpus() {
    replay("sip_message", harness::sip_message);
}

#[test]
fn refer_headers_corpus() {
    replay("refer_headers", harness::refer_headers);
}

#[test]
fn rcml_corpus() {
    replay("rcml", harness::rcml);
}
