//! Every fixture gives exactly the diagnostics in its `expected.txt`.
//!
//! `UPDATE_EXPECT=1 cargo test -p launchway-config --test config` rewrites the
//! files; review the diff before committing it.

use crate::{cases, load_dir};

fn check(kind: &str, must_be_valid: bool) {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut failures = Vec::new();
    let all = cases(kind);
    assert!(!all.is_empty(), "no fixtures under fixtures/{kind}");
    for dir in all {
        let loaded = launchway_config::load(&load_dir(&dir));
        let actual = loaded.diagnostics.to_string();
        let expected_path = dir.join("expected.txt");
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if loaded.config.is_some() != must_be_valid {
            failures.push(format!(
                "{name}: expected valid={must_be_valid}, got the opposite\n{actual}"
            ));
        }
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        if actual != expected {
            failures.push(format!(
                "{name}: diagnostics differ\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_fixtures_load_with_exactly_their_expected_notes() {
    check("valid", true);
}

#[test]
fn invalid_fixtures_give_exactly_their_expected_diagnostics() {
    check("invalid", false);
}

#[test]
fn there_are_enough_fixtures() {
    assert!(cases("valid").len() >= 10);
    assert!(cases("invalid").len() >= 30);
}
