//! Replays every committed fuzz input through its target, on stable, in seconds: the files of
//! `fuzz/corpus/<target>/` (what the fuzzer kept, minimised, and the inputs of crashes fixed)
//! and of `fuzz/artifacts/<target>/` when a local fuzz run left some. An input that once
//! failed keeps failing this test until it is fixed.
//!
//! `fuzz/findings/<target>/` holds inputs that fail because of a bug found and reported but
//! not fixed yet (in code its owner is changing): they must go on failing, and once one
//! passes, the test says to move it into the corpus, where it keeps the fix.

use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("targets/ is inside fuzz/")
        .to_path_buf()
}

/// The files directly in `dir`, in name order (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs each input through `target`; the names of those that panicked.
fn failing(inputs: &[PathBuf], target: fn(&[u8])) -> Vec<String> {
    inputs
        .iter()
        .filter(|file| {
            let data = std::fs::read(file).expect("a corpus file is readable");
            catch_unwind(|| target(&data)).is_err()
        })
        .map(|file| file.display().to_string())
        .collect()
}

fn replay(name: &str) {
    let (_, target) = mailroom_fuzz_targets::TARGETS
        .into_iter()
        .find(|(n, _)| *n == name)
        .expect("a known target");
    let corpus = files(&fuzz_dir().join("corpus").join(name));
    assert!(
        corpus.len() >= 10,
        "fuzz/corpus/{name} has {} files; run the fuzzer (README, Fuzzing) and keep its corpus",
        corpus.len()
    );
    let mut inputs = corpus;
    inputs.extend(files(&fuzz_dir().join("artifacts").join(name)));
    let failed = failing(&inputs, target);
    assert!(
        failed.is_empty(),
        "{} of {} inputs fail the {name} target (each printed its panic above): {failed:#?}",
        failed.len(),
        inputs.len()
    );
}

#[test]
fn list_filter_corpus() {
    replay("list_filter");
}

#[test]
fn address_corpus() {
    replay("address");
}

#[test]
fn envelope_corpus() {
    replay("envelope");
}

#[test]
fn page_token_corpus() {
    replay("page_token");
}

#[test]
fn imap_guard_corpus() {
    replay("imap_guard");
}

#[test]
fn open_findings_still_fail() {
    for (name, target) in mailroom_fuzz_targets::TARGETS {
        let findings = files(&fuzz_dir().join("findings").join(name));
        let still_failing = failing(&findings, target);
        let fixed: Vec<String> = findings
            .iter()
            .map(|f| f.display().to_string())
            .filter(|f| !still_failing.contains(f))
            .collect();
        assert!(
            fixed.is_empty(),
            "these findings of the {name} target pass now: the bug is fixed, so move them into \
             fuzz/corpus/{name}/ to keep it fixed: {fixed:#?}"
        );
    }
}
