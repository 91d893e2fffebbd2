//! Tests of `launchway-config` over the repository's `fixtures/` and `config-schema/`.
// An integration test crate is itself the test module, and may unwrap like one.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

mod fixtures;
mod randomized;
mod schema;

use std::path::{Path, PathBuf};

use launchway_config::MemSource;

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file under `dir` as (path relative to `dir`, contents), `expected.txt` left out.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
                if rel != "expected.txt" {
                    out.push((rel, std::fs::read(&path).unwrap()));
                }
            }
        }
    }
    out
}

/// Loads a fixture directory into memory.
fn load_dir(dir: &Path) -> MemSource {
    let mut source = MemSource::new();
    for (path, bytes) in files(dir) {
        source.insert(&path, bytes);
    }
    source
}

/// Every case directory under `fixtures/<kind>/`, sorted.
fn cases(kind: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace().join("fixtures").join(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}
