//! Bad input never panics: every input the fuzzers kept (`fuzz/corpus/<target>/`) and every
//! reproducer of a fixed bug (`fuzz/regressions/<target>/`) goes through the same bodies as the
//! fuzz targets (`fuzz/src/lib.rs`, compiled here on stable), without a panic.
//!
//! `fuzz/artifacts/<target>/` holds reproducers of bugs not fixed yet: the ignored test below
//! replays them (`cargo test --test fuzz_corpus -- --ignored`); once it passes, move them to
//! `fuzz/regressions/<target>/`.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_bodies;

use std::path::{Path, PathBuf};

use fuzz_bodies::{TARGETS, run, simulation};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    files
}

/// Each file of `fuzz/<kind>/<target>/` through its target; the ones that panicked, and the count.
fn replay(kind: &str) -> (Vec<String>, Vec<(&'static str, usize)>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind);
    let mut panicked = Vec::new();
    let mut counts = Vec::new();
    for target in TARGETS {
        let inputs = files(&root.join(target));
        counts.push((target, inputs.len()));
        for path in inputs {
            let data = std::fs::read(&path).expect("a readable input");
            if std::panic::catch_unwind(|| run(target, &data)).is_err() {
                panicked.push(path.display().to_string());
            }
        }
    }
    (panicked, counts)
}

#[test]
fn every_kept_fuzz_input_goes_through_without_a_panic() {
    let (mut panicked, counts) = replay("corpus");
    for (target, n) in counts {
        assert!(n > 0, "fuzz/corpus/{target}/ is empty or missing");
    }
    panicked.extend(replay("regressions").0);
    assert!(panicked.is_empty(), "these inputs panic: {panicked:#?}");
}

/// The `migration_row` body plans each row in a simulated upgrade that is migrating: when the
/// plan changes so that the simulation no longer gets there, this says so (the body then skips
/// that part rather than failing every input).
#[test]
fn the_simulated_upgrade_reaches_migrating() {
    simulation().unwrap();
}

#[test]
#[ignore = "reproducers of bugs not fixed yet; once this passes, move fuzz/artifacts/* to fuzz/regressions/"]
fn the_known_crashes_no_longer_panic() {
    let (panicked, _) = replay("artifacts");
    assert!(panicked.is_empty(), "these inputs still panic: {panicked:#?}");
}
