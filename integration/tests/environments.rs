//! Environments, releases and variables end to end: real git pushes,
//! containerd, the router over HTTP and the CLI (issue 7). The runtime is
//! the busybox fixture; its `httpd` serves `public/`, whose `data/` is a
//! persistent mount and `run/` a tmp mount where the app writes its
//! environment at start.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::process::Output;

use launchway_integration::{Daemon, Work, http_get};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn setup() -> (Daemon, Work) {
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 20\nstop_grace_secs = 2\n");
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    (daemon, work)
}

const CONFIG: &str = r#"applications:
  web:
    type: "python:3.11"
    variables:
      env:
        LEVEL: app
    hooks:
      build: |
        mkdir -p public/data public/run
        cp version public/index.html
        echo "build sees ${SECRET:-no secret}"
        echo "${BUILD_VAR:-unset}" > public/build-var
      deploy: |
        echo "$PLATFORM_BRANCH" > public/data/last
        [ -f public/data/origin ] || echo "$PLATFORM_BRANCH" > public/data/origin
        [ -f public/data/blob ] || head -c 300000 /dev/urandom > public/data/blob
        [ "$PLATFORM_BRANCH" = main ] || echo x >> public/data/child-deploys
        echo "deploy sees ${SECRET:-no secret}"
    mounts:
      public/data:
        source: local
        source_path: data
      public/run:
        source: tmp
    web:
      commands:
        start: echo "app sees ${SECRET:-no secret}"; env | sort > public/run/env.txt; exec httpd -f -p 127.0.0.1:$PORT -h /app/public
"#;

fn commit_version(work: &Work, version: &str) {
    work.write(".upsun/config.yaml", CONFIG);
    work.write("version", format!("{version}\n"));
    work.commit(version);
}

/// Runs the CLI; `(success, stdout + stderr)` (activity logs go to stderr).
fn cli(daemon: &Daemon, args: &[&str]) -> (bool, String) {
    let out: Output = daemon.cli(args);
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

fn cli_ok(daemon: &Daemon, args: &[&str]) -> String {
    let (ok, output) = cli(daemon, args);
    assert!(ok, "launchway {args:?} failed:\n{output}");
    output
}

fn host(environment: &str) -> String {
    format!("{environment}.shop.localhost")
}

fn page(daemon: &Daemon, environment: &str, path: &str) -> (u16, String) {
    http_get(daemon.router_addr(), &host(environment), path).unwrap()
}

fn body(daemon: &Daemon, environment: &str, path: &str) -> String {
    let (status, body) = page(daemon, environment, path);
    assert_eq!(status, 200, "{environment}{path}: {body}");
    body
}

/// The `launchway environments` row of `name`.
fn environment_row(daemon: &Daemon, name: &str) -> Vec<String> {
    let listing = cli_ok(daemon, &["environments", "-p", "shop"]);
    listing
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{listing}"))
}

fn environment_dir(daemon: &Daemon, name: &str) -> std::path::PathBuf {
    daemon
        .data_dir()
        .join("environments")
        .join(launchway_deploy::environment_id("shop", name))
}

#[test]
fn a_branch_is_activated_with_a_copy_of_its_parents_data_deactivated_and_deleted() {
    let (daemon, work) = setup();
    commit_version(&work, "v1");
    work.push_ok("main", &[]);
    assert_eq!(body(&daemon, "main", "/data/origin"), "main\n");
    let parent_blob = body(&daemon, "main", "/data/blob");

    // A plain push of a new branch: code only.
    let log = work.push_ok("feature", &[]);
    assert!(log.contains("Environment feature is inactive"), "{log}");
    assert_eq!(environment_row(&daemon, "feature")[2], "inactive");
    assert!(daemon.app_containers(Some("shop/feature")).is_empty());
    assert_eq!(page(&daemon, "feature", "/").0, 404);
    assert!(!environment_dir(&daemon, "feature").exists());

    // Activation: a clone of main's data, its own URL.
    let log = cli_ok(
        &daemon,
        &["environment", "activate", "-p", "shop", "feature"],
    );
    assert!(log.contains("as a clone of main"), "{log}");
    assert!(log.contains("Cloned "), "{log}");
    assert_eq!(body(&daemon, "feature", "/"), "v1\n");
    assert_eq!(body(&daemon, "feature", "/data/origin"), "main\n");
    assert_eq!(body(&daemon, "feature", "/data/blob"), parent_blob);
    assert_eq!(body(&daemon, "feature", "/data/last"), "feature\n");
    assert_eq!(body(&daemon, "feature", "/data/child-deploys"), "x\n");
    // The child's writes never reach the parent.
    assert_eq!(body(&daemon, "main", "/data/last"), "main\n");
    assert_eq!(page(&daemon, "main", "/data/child-deploys").0, 404);
    let row = environment_row(&daemon, "feature");
    assert_eq!(row[2], "active", "{row:?}");
    assert_eq!(row[3], "main", "{row:?}");
    assert!(row[4].contains("feature.shop.localhost"), "{row:?}");
    assert!(row[5].starts_with('R'), "{row:?}");
    assert_eq!(daemon.app_containers(Some("shop/feature")).len(), 1);
    // Refused, changing nothing: activating it again, an unknown one.
    for args in [
        ["environment", "activate", "-p", "shop", "feature"],
        ["environment", "activate", "-p", "shop", "nope"],
    ] {
        let (ok, output) = cli(&daemon, &args);
        assert!(!ok, "{args:?} was accepted:\n{output}");
    }
    assert_eq!(body(&daemon, "feature", "/data/child-deploys"), "x\n");

    // Deactivation: containers and data gone; the default one refuses.
    cli_ok(
        &daemon,
        &["environment", "deactivate", "-p", "shop", "feature"],
    );
    assert_eq!(page(&daemon, "feature", "/").0, 404);
    assert!(daemon.app_containers(Some("shop/feature")).is_empty());
    assert!(!environment_dir(&daemon, "feature").exists());
    assert_eq!(environment_row(&daemon, "feature")[2], "inactive");
    let (ok, output) = cli(
        &daemon,
        &["environment", "deactivate", "-p", "shop", "main"],
    );
    assert!(!ok && output.contains("default environment"), "{output}");
    assert_eq!(body(&daemon, "main", "/"), "v1\n");

    // Reactivation clones afresh: the child's own earlier writes are gone.
    cli_ok(
        &daemon,
        &["environment", "activate", "-p", "shop", "feature"],
    );
    assert_eq!(body(&daemon, "feature", "/data/child-deploys"), "x\n");

    // Activation by push option, then deletion with the branch.
    let log = work.push_ok("review", &["environment.status=active"]);
    assert!(log.contains("as a clone of main"), "{log}");
    assert_eq!(body(&daemon, "review", "/data/origin"), "main\n");
    cli_ok(&daemon, &["environment", "delete", "-p", "shop", "review"]);
    assert_eq!(page(&daemon, "review", "/").0, 404);
    assert!(daemon.app_containers(Some("shop/review")).is_empty());
    let branches = work.git_ok(&["ls-remote", "launchway"]);
    assert!(!branches.contains("refs/heads/review"), "{branches}");
    assert!(branches.contains("refs/heads/feature"), "{branches}");
    let listing = cli_ok(&daemon, &["environments", "-p", "shop"]);
    assert!(!listing.contains("review"), "{listing}");
    assert_eq!(body(&daemon, "feature", "/"), "v1\n");
}

/// The release ids of main, newest first, with their descriptions.
fn releases(daemon: &Daemon) -> Vec<(String, String, String)> {
    cli_ok(daemon, &["releases", "-p", "shop", "-e", "main"])
        .lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let status = if cells[2] == "active" && cells.get(3) == Some(&"*") {
                "active *".to_owned()
            } else {
                cells[2].to_owned()
            };
            (
                cells[0].to_owned(),
                status,
                cells.last().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn an_older_release_is_promoted_without_a_build_and_redeploy_and_deploy_work() {
    let (daemon, work) = setup();
    commit_version(&work, "v1");
    work.push_ok("main", &[]);
    commit_version(&work, "v2");
    work.push_ok("main", &[]);
    assert_eq!(body(&daemon, "main", "/"), "v2\n");
    let listed = releases(&daemon);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let (v1, _, _) = listed.iter().find(|r| r.2 == "v1").unwrap().clone();
    let builds_before = cli_ok(&daemon, &["builds", "-p", "shop"]).lines().count();

    let log = cli_ok(&daemon, &["releases", "promote", &v1]);
    assert!(log.contains("nothing is built"), "{log}");
    assert!(!log.contains("Building application"), "{log}");
    assert!(!log.contains("Executing build hook"), "{log}");
    assert_eq!(body(&daemon, "main", "/"), "v1\n");
    let listed = releases(&daemon);
    assert_eq!(listed.len(), 2, "a promotion makes no release: {listed:?}");
    assert!(
        listed.iter().any(|r| r.0 == v1 && r.1 == "active *"),
        "{listed:?}"
    );
    assert_eq!(
        cli_ok(&daemon, &["builds", "-p", "shop"]).lines().count(),
        builds_before,
        "no build"
    );

    let log = cli_ok(&daemon, &["redeploy", "-p", "shop", "-e", "main"]);
    assert!(
        log.contains(&format!("Deploying release {v1} again")),
        "{log}"
    );
    assert_eq!(body(&daemon, "main", "/"), "v1\n");

    // `deploy` builds the head (reused) and deploys it as a new release.
    let log = cli_ok(&daemon, &["deploy", "-p", "shop", "-e", "main"]);
    assert!(log.contains("Reusing existing build"), "{log}");
    assert_eq!(body(&daemon, "main", "/"), "v2\n");
    assert_eq!(releases(&daemon).len(), 3);

    let (ok, output) = cli(&daemon, &["releases", "promote", "RNOSUCHREL"]);
    assert!(!ok && output.contains("there is no release"), "{output}");
}

const SECRET: &str = "hunter2-sensitive-value";

fn app_env(daemon: &Daemon, environment: &str) -> String {
    body(daemon, environment, "/run/env.txt")
}

#[test]
fn variables_reach_builds_and_apps_by_precedence_and_sensitive_ones_are_never_shown() {
    let (daemon, work) = setup();
    commit_version(&work, "v1");
    work.push_ok("main", &[]);
    assert!(app_env(&daemon, "main").contains("LEVEL=app\n"));

    // Runtime-only: a redeploy, no rebuild; project beats the app config.
    let log = cli_ok(
        &daemon,
        &[
            "variable",
            "set",
            "-p",
            "shop",
            "env:LEVEL",
            "project",
            "--visible-build=false",
        ],
    );
    assert!(log.contains("Reusing existing build"), "{log}");
    assert!(!log.contains("Executing build hook"), "{log}");
    assert!(app_env(&daemon, "main").contains("LEVEL=project\n"));
    // The environment beats the project.
    cli_ok(
        &daemon,
        &[
            "variable",
            "set",
            "-p",
            "shop",
            "-e",
            "main",
            "env:LEVEL",
            "main-env",
            "--visible-build=false",
        ],
    );
    assert!(app_env(&daemon, "main").contains("LEVEL=main-env\n"));
    cli_ok(
        &daemon,
        &[
            "variable",
            "set",
            "-p",
            "shop",
            "-e",
            "main",
            "env:PRIVATE",
            "main-only",
            "--inheritable=false",
        ],
    );

    // A sensitive, build-visible variable: a rebuild; masked everywhere.
    let log = cli_ok(
        &daemon,
        &[
            "variable",
            "set",
            "-p",
            "shop",
            "env:SECRET",
            SECRET,
            "--sensitive",
        ],
    );
    assert!(log.contains("Executing build hook"), "{log}");
    assert!(log.contains("build sees ******"), "{log}");
    assert!(log.contains("deploy sees ******"), "{log}");
    assert!(app_env(&daemon, "main").contains(&format!("SECRET={SECRET}\n")));
    let listing = cli_ok(&daemon, &["variable", "list", "-p", "shop"]);
    assert!(
        listing.contains("env:SECRET") && listing.contains("******"),
        "{listing}"
    );

    // Build-visible only: rebuilds, and the app does not see it.
    let log = cli_ok(
        &daemon,
        &[
            "variable",
            "set",
            "-p",
            "shop",
            "env:BUILD_VAR",
            "one",
            "--visible-runtime=false",
        ],
    );
    assert!(log.contains("Executing build hook"), "{log}");
    assert_eq!(body(&daemon, "main", "/build-var"), "one\n");
    assert!(!app_env(&daemon, "main").contains("BUILD_VAR"));

    // A child inherits what is inheritable; its push log masks the secret.
    let log = work.push_ok("feature", &["environment.status=active"]);
    assert!(log.contains("deploy sees ******"), "{log}");
    let child = app_env(&daemon, "feature");
    assert!(child.contains("LEVEL=main-env\n"), "{child}");
    assert!(!child.contains("PRIVATE"), "{child}");
    assert!(child.contains(&format!("SECRET={SECRET}\n")), "{child}");
    assert!(app_env(&daemon, "main").contains("PRIVATE=main-only\n"));
    let listing = cli_ok(
        &daemon,
        &["variable", "list", "-p", "shop", "-e", "feature"],
    );
    assert!(listing.contains("environment main"), "{listing}");

    // Deleting main's LEVEL: main and its child both fall back to the project's.
    let log = cli_ok(
        &daemon,
        &[
            "variable",
            "delete",
            "-p",
            "shop",
            "-e",
            "main",
            "env:LEVEL",
        ],
    );
    assert!(log.contains("redeploying feature"), "{log}");
    assert!(app_env(&daemon, "main").contains("LEVEL=project\n"));
    assert!(app_env(&daemon, "feature").contains("LEVEL=project\n"));

    // Bad input changes nothing.
    for bad in [
        vec!["variable", "set", "-p", "shop", "env:1BAD", "x"],
        vec!["variable", "set", "-p", "shop", "j", "{nope", "--json"],
        vec![
            "variable",
            "set",
            "-p",
            "shop",
            "env:SECRET",
            "x",
            "--sensitive=false",
        ],
        vec!["variable", "set", "-p", "shop", "-e", "nope", "env:A", "x"],
    ] {
        let (ok, output) = cli(&daemon, &bad);
        assert!(!ok, "{bad:?} was accepted:\n{output}");
    }

    // The value appears in no CLI output, activity log, release or daemon log.
    let mut seen = String::new();
    seen.push_str(&cli_ok(&daemon, &["variable", "list", "-p", "shop"]));
    seen.push_str(&cli_ok(
        &daemon,
        &["variable", "list", "-p", "shop", "-e", "main"],
    ));
    let activities: serde_json::Value = serde_json::from_str(&cli_ok(
        &daemon,
        &["activities", "-p", "shop", "--json", "--limit", "100"],
    ))
    .unwrap();
    for activity in activities.as_array().unwrap() {
        let id = activity["id"].to_string();
        seen.push_str(&cli_ok(&daemon, &["activity", "log", &id]));
    }
    for (id, _, _) in releases(&daemon) {
        seen.push_str(&cli_ok(&daemon, &["releases", "info", &id]));
    }
    for line in cli_ok(&daemon, &["builds", "-p", "shop"]).lines().skip(1) {
        let id = line.split_whitespace().next().unwrap();
        seen.push_str(&cli_ok(&daemon, &["builds", "logs", id]));
    }
    let app_log = cli_ok(&daemon, &["logs", "-p", "shop", "-e", "main", "web"]);
    assert!(app_log.contains("app sees ******"), "{app_log}");
    seen.push_str(&app_log);
    seen.push_str(&daemon.log());
    assert!(seen.contains("env:SECRET"), "the listing names it");
    assert!(
        !seen.contains(SECRET),
        "the sensitive value leaked:\n{seen}"
    );
}
