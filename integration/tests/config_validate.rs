//! `launchway config validate` end to end: the real binary on real directories.
// An integration test crate is itself the test module, and may unwrap like one.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::symlink;
use std::process::Command;

use launchway_integration::{launchway, workspace};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_valid_checkout_exits_zero_and_says_so() {
    let dir = workspace().join("fixtures/valid/upsun-multi-root");
    let out = launchway(&["config", "validate", dir.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "configuration is valid (upsun layout; 2 application(s), 1 service(s), 6 route(s))"
        ),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn an_invalid_checkout_exits_one_with_every_located_error() {
    let dir = workspace().join("fixtures/invalid/many-problems");
    let out = launchway(&["config", "validate", dir.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 4, "{stderr}");
    assert!(
        errors.iter().all(|l| l.starts_with(".upsun/config.yaml:")),
        "{stderr}"
    );
    assert!(stderr.contains("help: did you mean `web`?"), "{stderr}");
}

#[test]
fn json_format_and_show_print_machine_readable_output() {
    let dir = workspace().join("fixtures/valid/platform-list");
    let out = launchway(&[
        "config",
        "validate",
        "--format",
        "json",
        "--show",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["config"]["layout"], "platform.sh");
    assert_eq!(
        doc["config"]["applications"]["backend"]["source_root"],
        "backend"
    );
    assert_eq!(
        doc["config"]["applications"]["backend"]["relationships"]["database"]["endpoint"],
        "mysql"
    );
    let notes = doc["diagnostics"].as_array().unwrap();
    // Notes, and the warning that a service version runs as the nearest.
    assert!(
        notes
            .iter()
            .all(|d| (d["severity"] == "note" || d["severity"] == "warning") && d["line"].is_u64()),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|d| d["message"] == "redis:7.2 is not available here; running redis:7.0"),
        "{notes:?}"
    );

    let bad = workspace().join("fixtures/invalid/route-unknown-app");
    let out = launchway(&[
        "config",
        "validate",
        "--format",
        "json",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["diagnostics"][0]["file"], ".upsun/config.yaml");
    assert_eq!(doc["diagnostics"][0]["line"], 10);
    assert_eq!(doc["diagnostics"][0]["column"], 15);
    assert_eq!(doc["diagnostics"][0]["hint"], "did you mean `app`?");
}

#[test]
fn show_prints_the_normalized_config_on_stdout() {
    let dir = workspace().join("fixtures/valid/upsun-single");
    let out = launchway(&["config", "validate", "--show", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let routes = config["routes"].as_array().unwrap();
    assert_eq!(routes[0]["url"], "https://{default}/");
    assert_eq!(routes[0]["upstream"], "app");
    assert_eq!(routes[0]["primary"], true);
    assert_eq!(routes[1]["url"], "http://{default}/");
    assert_eq!(routes[1]["type"], "redirect");
    assert_eq!(config["applications"]["app"]["web"]["socket_family"], "tcp");
}

#[test]
fn a_git_checkout_with_a_symlink_out_of_the_repository_is_refused() {
    let repo = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret.sh"), "cat /etc/shadow\n").unwrap();
    fs::create_dir_all(repo.path().join(".upsun")).unwrap();
    fs::write(
        repo.path().join(".upsun/config.yaml"),
        "applications:\n  app:\n    type: python:3.11\n    hooks:\n      build: !include {type: string, path: ../scripts/secret.sh}\n    web:\n      commands:\n        start: run\n",
    )
    .unwrap();
    symlink(outside.path(), repo.path().join("scripts")).unwrap();
    let git = Command::new("git")
        .args(["init", "-q"])
        .current_dir(repo.path())
        .status()
        .unwrap();
    assert!(git.success());
    let out = launchway(&["config", "validate", repo.path().to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(".upsun/config.yaml:5:23: error: included file `../scripts/secret.sh`: cannot read `scripts`: it is a symbolic link, and Launchway does not follow links"),
        "{stderr}"
    );
    assert_eq!(stderr.matches(": error: ").count(), 1, "{stderr}");
}

#[test]
fn an_oversized_config_file_is_refused_without_reading_it() {
    let repo = tempfile::tempdir().unwrap();
    fs::create_dir_all(repo.path().join(".upsun")).unwrap();
    let mut big =
        String::from("applications:\n  app:\n    type: python:3.11\n    variables:\n      env:\n");
    while big.len() <= 2 * 1024 * 1024 {
        big.push_str("        PADDING_VARIABLE_NAME: some padding value to fill the file up\n");
    }
    fs::write(repo.path().join(".upsun/config.yaml"), big).unwrap();
    let out = launchway(&["config", "validate", repo.path().to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(".upsun/config.yaml:1:1: error: file is "),
        "{stderr}"
    );
    assert!(
        stderr.contains("over the limit of 1048576 bytes"),
        "{stderr}"
    );
}

#[test]
fn a_missing_directory_is_a_usage_error() {
    let out = launchway(&["config", "validate", "/nonexistent/launchway-test"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error: cannot open /nonexistent/launchway-test"));
}

#[test]
fn the_schema_command_prints_the_committed_schema() {
    let out = launchway(&["config", "schema"]);
    assert_eq!(out.status.code(), Some(0));
    let committed = fs::read(workspace().join("config-schema/launchway.schema.json")).unwrap();
    assert!(out.stdout == committed, "run `make schema`");
}
