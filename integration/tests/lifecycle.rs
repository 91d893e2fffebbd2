//! Lifecycle and retention end to end: real pushes over OpenSSH, real
//! containerd; history is bounded by `[retention]` while what serves, what
//! it rolls back to, what a backup names and what is pending stays.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use launchway_integration::{Daemon, Work, http_get, pause};

const APP: &str = r#"applications:
  web:
    type: "python:3.11"
    source:
      root: web
    hooks:
      build: cp app.py index.html
    web:
      commands:
        start: httpd -f -p $PORT -h /app
routes:
  "http://{default}/":
    type: upstream
    upstream: "web:http"
"#;

fn push_version(work: &Work, version: u32) {
    work.write("web/app.py", format!("version {version}\n"));
    work.commit(&format!("version {version}"));
    let out = work.git(&["push", "launchway", "HEAD:main"]);
    assert!(
        out.status.success(),
        "push {version}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `launchway releases` of main: (id, status, build), newest first.
fn releases(daemon: &Daemon) -> Vec<(String, String, String)> {
    daemon
        .cli_ok(&["releases", "-p", "shop", "-e", "main", "--limit", "100"])
        .lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            (
                cells[0].to_owned(),
                cells[2].to_owned(),
                cells[cells.len() - 4].to_owned(),
            )
        })
        .collect()
}

fn build_ids(daemon: &Daemon) -> BTreeSet<String> {
    daemon
        .cli_ok(&["builds", "-p", "shop", "--limit", "100"])
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn release_activity(daemon: &Daemon, release: &str) -> String {
    let info = daemon.cli_ok(&["releases", "info", release]);
    info.lines()
        .find_map(|line| line.strip_prefix("Activity").map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no activity in:\n{info}"))
}

#[test]
fn retention_removes_old_history_and_keeps_what_serves_rolls_back_or_is_backed_up() {
    let daemon = Daemon::start_with(
        "[retention]\nactivities_days = 0\nreleases_per_environment = 2\nbuild_logs_days = 0\ninterval_secs = 1\n\
         [build]\nkeep_builds = 1\n",
    );
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", APP);
    // Each push's release and activity, read while it serves (a pass runs
    // every second: older ones may go at any moment).
    let mut pushed = Vec::new();
    for version in 1..=5 {
        push_version(&work, version);
        let newest = releases(&daemon)[0].0.clone();
        let activity = release_activity(&daemon, &newest);
        pushed.push((newest, activity));
        if version == 2 {
            daemon.cli_ok(&["backup", "create", "-p", "shop", "-e", "main"]);
        }
    }
    daemon.wait_idle("shop");
    let settled = |expected: &[&String]| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = releases(&daemon);
            let ids: Vec<&String> = now.iter().map(|r| &r.0).collect();
            if ids == expected {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "retention never left {expected:?}: {now:?}"
            );
            pause();
        }
    };
    // The newest two, and release 2 that a backup names; 1 and 3 went.
    let (r2, r4, r5) = (&pushed[1].0, &pushed[3].0, &pushed[4].0);
    settled(&[r5, r4, r2]);

    // Release 2 is promoted back: it serves, 5 is what it would roll back
    // to, 4 is among the newest two.
    let out = daemon.cli(&["releases", "promote", r2]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.wait_idle("shop");
    let kept = settled(&[r5, r4, r2]);
    assert_eq!(
        kept.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        ["superseded", "superseded", "active"],
        "{kept:?}"
    );
    let (status, body) = http_get(daemon.router_addr(), "main.shop.localhost", "/").unwrap();
    assert_eq!((status, body.trim()), (200, "version 2"));

    // Their builds stay; the others' builds went with their releases.
    let builds = build_ids(&daemon);
    let named: BTreeSet<String> = kept.iter().map(|r| r.2.clone()).collect();
    assert_eq!(builds, named, "builds {builds:?}, releases {kept:?}");

    // Logs: the rollback target's (release 5) stays; release 4's is dropped
    // (older than build_logs_days = 0, not deployed), as was release 2's
    // while it was only backed up, before its promotion.
    let log = |build: &str| daemon.cli_ok(&["builds", "logs", build]);
    assert!(!log(&kept[0].2).trim().is_empty());
    assert!(log(&kept[1].2).trim().is_empty(), "{}", log(&kept[1].2));

    // Activities: the kept releases' pushes stay, the others' went.
    for (index, (release, activity)) in pushed.iter().enumerate() {
        let out = daemon.cli(&["activity", "log", activity]);
        let gone = index == 0 || index == 2;
        assert_eq!(
            out.status.success(),
            !gone,
            "activity {activity} of release {release}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let activities = daemon.wait_idle("shop");
    let pushes = activities
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "environment.push")
        .count();
    assert_eq!(pushes, 3, "{activities:#}");
}

fn count_files(dir: &std::path::Path, keep: impl Fn(&str) -> bool) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| keep(&e.file_name().to_string_lossy()))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn pushes_stay_packed_and_are_repacked_in_the_background() {
    let daemon = Daemon::start_with("");
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", APP);
    work.write("web/app.py", "version 1\n");
    let pushes = 26;
    for round in 0..pushes {
        // Outside the app's source.root: each push reuses the build.
        work.write("NOTES.md", format!("round {round}\n"));
        work.commit(&format!("round {round}"));
        let out = work.git(&["push", "launchway", "HEAD:main"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let objects = daemon.data_dir().join("repos/shop.git/objects");
    let loose: usize = count_files(&objects, |name| {
        name.len() == 2 && name.chars().all(|c| c.is_ascii_hexdigit())
    });
    assert_eq!(loose, 0, "pushes left loose object directories");
    // 26 pushes made 26 packs; past 20, maintenance repacks them into one.
    let packs = || count_files(&objects.join("pack"), |name| name.ends_with(".pack"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while packs() > 6 {
        assert!(
            Instant::now() < deadline,
            "{} packs after {pushes} pushes",
            packs()
        );
        pause();
    }
    // The repository is whole.
    let fsck = std::process::Command::new("git")
        .args([
            "--git-dir",
            objects.parent().unwrap().to_str().unwrap(),
            "fsck",
            "--no-progress",
        ])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );
}
