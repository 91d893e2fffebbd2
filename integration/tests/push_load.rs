//! Pushes under load: a 100 MB push within a memory bound, pushes to two
//! projects at once, and two pushes to one branch whose activities must not
//! interleave.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::thread;

use launchway_integration::{Daemon, SAMPLE_CONFIG, Work, random_bytes};

/// A daemon whose `python:3.11` is the busybox fixture, so that builds
/// run offline in about a second.
fn started() -> Daemon {
    let daemon = Daemon::start();
    daemon.use_busybox_runtime("python:3.11");
    daemon
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn project_with_work(daemon: &Daemon, project: &str) -> Work {
    let remote = daemon.project(project);
    let key = daemon.key(&format!("{project}-admin"), project, "admin");
    let work =
        Work::init(daemon.scratch(&format!("work-{project}"))).with_ssh(daemon.ssh_command(&key));
    work.write(".upsun/config.yaml", SAMPLE_CONFIG);
    work.write("web/app.py", format!("print('{project}')\n"));
    work.commit("first");
    work.git_ok(&["remote", "add", "launchway", &remote]);
    work
}

#[test]
fn a_100_mb_push_works_and_the_daemon_stays_small() {
    let daemon = started();
    let work = project_with_work(&daemon, "big");
    // Warm up: the first push loads everything a push needs.
    work.git_ok(&["push", "-q", "launchway", "main"]);
    let before = daemon.peak_rss_kib();
    assert!(before > 0, "cannot read the daemon's memory");
    // Outside the app's source.root: this measures the push, not the build
    // (which holds one file of the app in memory at a time).
    work.write("assets/blob.bin", random_bytes(100 * 1024 * 1024, 42));
    let head = work.commit("100 MB");
    let out = work.git(&["push", "launchway", "main"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = daemon.peak_rss_kib();
    let grew_mib = after.saturating_sub(before) / 1024;
    assert!(
        grew_mib < 64,
        "the daemon's peak memory grew by {grew_mib} MiB during a 100 MB push ({before} KiB → {after} KiB)"
    );
    assert!(
        work.git_ok(&["ls-remote", "launchway", "main"])
            .starts_with(&head)
    );
}

#[test]
fn pushes_to_two_projects_at_once_both_succeed() {
    let daemon = started();
    let works = [
        project_with_work(&daemon, "one"),
        project_with_work(&daemon, "two"),
    ];
    for work in &works {
        work.write("web/data.bin", random_bytes(5 * 1024 * 1024, 3));
        work.commit("data");
    }
    let outputs: Vec<_> = thread::scope(|scope| {
        let handles: Vec<_> = works
            .iter()
            .map(|work| scope.spawn(|| work.git(&["push", "launchway", "main"])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (work, out) in works.iter().zip(outputs) {
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            work.git_ok(&["ls-remote", "launchway", "main"])
                .starts_with(&work.head())
        );
    }
}

#[test]
fn two_pushes_to_one_branch_never_interleave_their_activities() {
    let daemon = started();
    let work = project_with_work(&daemon, "shop");
    work.git_ok(&["push", "-q", "launchway", "main"]);
    // Two clones each force-push their own commit to `feature`.
    let clones: Vec<Work> = (0..2)
        .map(|i| {
            let dir = daemon.scratch(&format!("clone-{i}"));
            let out = launchway_integration::hermetic_git(&work.dir, None)
                .args(["clone", "-q", "--no-local"])
                .arg(&work.dir)
                .arg(&dir)
                .output()
                .unwrap();
            assert!(out.status.success());
            let clone =
                Work::open(dir).with_ssh(daemon.ssh_command(&daemon.existing_key("shop-admin")));
            let remote = work.git_ok(&["remote", "get-url", "launchway"]);
            clone.git_ok(&["remote", "add", "launchway", remote.trim()]);
            clone.write(&format!("web/file-{i}.txt"), format!("{i}\n"));
            clone.commit(&format!("clone {i}"));
            clone
        })
        .collect();
    // git itself serializes ref updates of one branch, so the pushes follow
    // each other; the first returns as soon as its refs moved
    // (`launchway.wait=false`), while its activity may still run.
    for (i, clone) in clones.iter().enumerate() {
        let mut args = vec!["push", "-f", "-o", "environment.status=active"];
        if i == 0 {
            args.extend(["-o", "launchway.wait=false"]);
        }
        args.extend(["launchway", "HEAD:refs/heads/feature"]);
        let out = clone.git(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let listed = daemon.cli_ok(&["activities", "-p", "shop", "-e", "feature"]);
    let ids: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids.len(), 2, "{listed}");
    // Each log is whole: it starts with its own header and has exactly one of each step.
    for id in &ids {
        let log = daemon.cli_ok(&["activity", "log", id]);
        assert_eq!(log.matches("Processing activity").count(), 1, "{log}");
        assert_eq!(
            log.matches("Building application 'web'").count(),
            1,
            "{log}"
        );
    }
    // The store records when each ran: one finished before the other started.
    let intervals = activity_intervals(&daemon, &ids);
    let (first, second) = if intervals[0].0 <= intervals[1].0 {
        (intervals[0], intervals[1])
    } else {
        (intervals[1], intervals[0])
    };
    assert!(first.1 <= second.0, "activities overlapped: {intervals:?}");
}

/// (started_at, completed_at) of each activity, from `activities --json`.
fn activity_intervals(daemon: &Daemon, ids: &[&str]) -> Vec<(u64, u64)> {
    let json = daemon.cli_ok(&["activities", "-p", "shop", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    ids.iter()
        .map(|id| {
            let activity = list
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["id"].as_u64().unwrap().to_string() == *id)
                .unwrap();
            (
                activity["started_at"].as_u64().unwrap(),
                activity["completed_at"].as_u64().unwrap(),
            )
        })
        .collect()
}
