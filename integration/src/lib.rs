//! Helpers for the end-to-end tests in `tests/`: they drive the real `launchway`
//! binary the way users do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `launchway` binary, built once per test run.
pub fn launchway_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "launchway"])
            .current_dir(workspace())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building launchway failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"));
        target.join("debug/launchway")
    })
}

/// Runs `launchway ARGS…` and returns its output.
pub fn launchway(args: &[&str]) -> Output {
    Command::new(launchway_bin())
        .args(args)
        .output()
        .expect("launchway runs")
}
