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

/// Commits `contents` to `path` and pushes main.
fn commit_and_push(work: &Work, path: &str, contents: &str) {
    work.write(path, contents);
    work.commit(contents.trim());
    let out = work.git(&["push", "launchway", "HEAD:main"]);
    assert!(
        out.status.success(),
        "push of {contents:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn push_version(work: &Work, version: u32) {
    commit_and_push(work, "web/app.py", &format!("version {version}\n"));
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
        commit_and_push(&work, "NOTES.md", &format!("round {round}\n"));
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

/// Project `name`, alice (made once) its admin, a work tree pushing as her.
fn project_work(daemon: &Daemon, name: &str) -> Work {
    let remote = daemon.project(name);
    let alice = if daemon.scratch("keys").join("alice").exists() {
        let alice = daemon.existing_key("alice");
        daemon.grant(&alice, name, "admin");
        alice
    } else {
        daemon.key("alice", name, "admin")
    };
    let work =
        Work::init(daemon.scratch(&format!("work-{name}"))).with_ssh(daemon.ssh_command(&alice));
    work.git_ok(&["remote", "add", "launchway", &remote]);
    work
}

/// Project `name` with main serving `version`, a backup, a variable and a
/// token; its work tree pushes as alice.
fn populated_project(daemon: &Daemon, name: &str, work: &Work) {
    work.write(".upsun/config.yaml", APP);
    commit_and_push(work, "web/app.py", &format!("{name} 1\n"));
    daemon.cli_ok(&["backup", "create", "-p", name, "-e", "main"]);
    daemon.cli_ok(&["variable", "set", "-p", name, "env:GREETING", "hi"]);
    daemon.cli_ok(&[
        "token", "create", "-p", name, "--name", "ci", "--role", "viewer",
    ]);
}

/// Nothing of `project` is left: containers, files, records.
fn assert_nothing_left(daemon: &mut Daemon, project: &str) {
    let containers: Vec<String> = daemon
        .all_containers()
        .into_iter()
        .filter(|id| id.contains(project))
        .collect();
    assert!(
        daemon
            .app_containers(Some(&format!("{project}/main")))
            .is_empty()
            && containers.is_empty(),
        "containers left: {containers:?}"
    );
    let data = daemon.data_dir();
    for path in [
        format!("repos/{project}.git"),
        format!("repos/.{project}.git.deleting"),
        format!("backups/{project}"),
        format!("build-cache/{project}"),
    ] {
        assert!(!data.join(&path).exists(), "{path} is left");
    }
    let listed = daemon.cli_ok(&["project", "list"]);
    assert!(
        !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(project)),
        "{listed}"
    );
    daemon.stop();
    let store = launchway_store::Store::open(&data.join("state")).unwrap();
    let left = store.records_of_project(project).unwrap();
    assert!(left.is_empty(), "records left: {left:?}");
    drop(store);
}

#[test]
fn deleting_a_project_removes_everything_of_it_and_nothing_else() {
    let mut daemon = Daemon::start_with("");
    daemon.use_busybox_runtime("python:3.11");
    let shop = project_work(&daemon, "shop");
    populated_project(&daemon, "shop", &shop);
    let blog = project_work(&daemon, "blog");
    populated_project(&daemon, "blog", &blog);
    let environments_before = std::fs::read_dir(daemon.data_dir().join("environments"))
        .unwrap()
        .count();
    assert_eq!(environments_before, 2);

    // Unconfirmed: refused, nothing changed.
    let out = daemon.cli(&["project", "delete", "shop"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let (status, _) = http_get(daemon.router_addr(), "main.shop.localhost", "/").unwrap();
    assert_eq!(status, 200);

    let out = daemon.cli(&["project", "delete", "shop", "--yes"]);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("Deleted project shop"), "{printed}");
    // The other project serves on, whole.
    let (status, body) = http_get(daemon.router_addr(), "main.blog.localhost", "/").unwrap();
    assert_eq!((status, body.trim()), (200, "blog 1"));
    let (status, _) = http_get(daemon.router_addr(), "main.shop.localhost", "/").unwrap();
    assert_eq!(status, 404);
    assert_eq!(
        std::fs::read_dir(daemon.data_dir().join("environments"))
            .unwrap()
            .count(),
        1
    );
    // A push to it is refused; the name can be taken again.
    let out = shop.git(&["push", "launchway", "HEAD:main"]);
    assert!(!out.status.success());
    assert_nothing_left(&mut daemon, "shop");
    daemon.spawn();
    let blog_store_view = daemon.cli_ok(&["backups", "-p", "blog", "--json"]);
    assert!(
        blog_store_view.contains("\"complete\""),
        "{blog_store_view}"
    );
    daemon.cli_ok(&["project", "create", "shop"]);
}

#[test]
fn a_project_deletion_killed_at_any_step_is_finished_at_start_up() {
    use launchway_daemon::failpoint::PROJECT_DELETE_STEPS;
    use launchway_integration::failpoints_bin;
    let mut daemon = Daemon::start_binary(failpoints_bin(), "");
    daemon.use_busybox_runtime("python:3.11");
    for (round, step) in PROJECT_DELETE_STEPS.iter().enumerate() {
        let name = format!("shop{round}");
        let work = project_work(&daemon, &name);
        populated_project(&daemon, &name, &work);
        daemon.stop();
        daemon.set_failpoint(Some(step));
        daemon.spawn();
        let out = daemon.cli(&["project", "delete", &name, "--yes"]);
        assert!(!out.status.success(), "{step}: the deletion finished");
        let status = daemon
            .wait_exit(Duration::from_secs(120))
            .unwrap_or_else(|| panic!("{step}: not reached:\n{}", daemon.log()));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{step}: {status:?}"
        );
        daemon.set_failpoint(None);
        daemon.spawn();
        // Start-up finishes the deletion.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let listed = daemon.cli_ok(&["project", "list"]);
            if !listed.contains(&name) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{step}: never finished:\n{}",
                daemon.log()
            );
            pause();
        }
        assert_nothing_left(&mut daemon, &name);
        let environments = std::fs::read_dir(daemon.data_dir().join("environments"))
            .map(|dir| dir.count())
            .unwrap_or(0);
        assert_eq!(environments, 0, "{step}: environment directories left");
        daemon.spawn();
    }
}

#[test]
fn a_project_with_running_work_is_not_deleted_and_the_default_environment_deactivates_only_with_force()
 {
    let daemon = Daemon::start_with("");
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    work.write(
        ".upsun/config.yaml",
        APP.replace("cp app.py index.html", "cp app.py index.html; sleep 4"),
    );
    work.write("web/app.py", "slow\n");
    work.commit("slow build");
    let dir = work.dir.clone();
    let ssh = daemon.ssh_command(&daemon.existing_key("alice"));
    let pusher = std::thread::spawn(move || {
        Work::open(dir)
            .with_ssh(ssh)
            .git(&["push", "launchway", "HEAD:main"])
    });
    // Once the push's activity runs, the deletion is refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = daemon.cli_ok(&["activities", "-p", "shop", "--json"]);
        if listed.contains("in_progress") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the push never started: {listed}"
        );
        pause();
    }
    let out = daemon.cli(&["project", "delete", "shop", "--yes"]);
    assert!(!out.status.success(), "deleted during a push");
    let refused = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(refused.contains("cannot be deleted now"), "{refused}");
    assert!(refused.contains("wait"), "{refused}");
    assert!(pusher.join().unwrap().status.success());
    let (status, body) = http_get(daemon.router_addr(), "main.shop.localhost", "/").unwrap();
    assert_eq!((status, body.trim()), (200, "slow"));

    // The default environment: refused without --force, then taken down.
    let out = daemon.cli(&["environment", "deactivate", "-p", "shop", "main"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let (status, _) = http_get(daemon.router_addr(), "main.shop.localhost", "/").unwrap();
    assert_eq!(status, 200);
    let out = daemon.cli(&["environment", "deactivate", "-p", "shop", "main", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = http_get(daemon.router_addr(), "main.shop.localhost", "/").unwrap();
    assert_ne!(status, 200);
    assert!(daemon.app_containers(Some("shop/main")).is_empty());
    // Activating it again serves the branch head again.
    daemon.cli_ok(&["environment", "activate", "-p", "shop", "main"]);
    let (status, body) = http_get(daemon.router_addr(), "main.shop.localhost", "/").unwrap();
    assert_eq!((status, body.trim()), (200, "slow"));
}

#[test]
fn a_second_daemon_on_the_same_namespace_refuses_to_start_and_takes_over_only_a_dead_ones() {
    let mut first = Daemon::start_with("");
    first.use_busybox_runtime("python:3.11");
    let work = first.admin_work("shop");
    work.write(".upsun/config.yaml", APP);
    commit_and_push(&work, "web/app.py", "first\n");
    let serving = first.app_containers(Some("shop/main"));
    assert!(!serving.is_empty());

    let (socket, namespace) = first.containerd_endpoint().unwrap();
    let shared = format!(
        "[containerd]\nsocket = \"{}\"\nnamespace = \"{namespace}\"\n",
        socket.display()
    );
    let mut second = Daemon::prepare(launchway_integration::launchway_bin(), &shared);
    let (status, log) = second
        .serve_expecting_exit(Duration::from_secs(60))
        .expect("the second daemon kept running on a namespace another one owns");
    assert!(!status.success());
    assert!(log.contains("belongs to another Launchway daemon"), "{log}");
    // The first serves on, untouched.
    let (code, body) = http_get(first.router_addr(), "main.shop.localhost", "/").unwrap();
    assert_eq!((code, body.trim()), (200, "first"));
    assert_eq!(first.app_containers(Some("shop/main")), serving);

    // The first dies without a word: once its heartbeat is stale, the
    // second takes the namespace over, and leaves the first's containers
    // alone (they carry the first's instance).
    first.kill();
    let died = Instant::now();
    loop {
        let attempt = second.serve_expecting_exit(Duration::from_secs(5));
        match attempt {
            Some((_, log)) => {
                assert!(log.contains("belongs to another Launchway daemon"), "{log}");
                assert!(
                    died.elapsed() < Duration::from_secs(90),
                    "never taken over:\n{log}"
                );
                pause();
            }
            None => break,
        }
    }
    second.spawn();
    assert!(second.log().contains("TakenOver"), "{}", second.log());
    assert_eq!(second.app_containers(Some("shop/main")), serving);
    second.stop();
}
