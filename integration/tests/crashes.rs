//! The kill -9 matrix (issue 8): the daemon, built with failpoints, is
//! killed with SIGKILL at every named step of a build and of a deploy,
//! restarted without the failpoint, and checked: the environment serves
//! exactly one release (the old one or the new one, whole), containerd
//! holds no container but that release's, and the next push works.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::os::unix::process::ExitStatusExt as _;
use std::time::Duration;

use launchway_daemon::failpoint::STEPS;
use launchway_integration::{Daemon, Work, failpoints_bin, http_get};

const CONFIG: &str = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        echo "building $(cat version)"
        mkdir -p public
        cp version public/index.html
      deploy: echo "deploying $(cat public/index.html)"
      post_deploy: echo "deployed"
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
"#;

const HOST: &str = "main.shop.localhost";

fn commit(work: &Work, version: &str) {
    work.write(".upsun/config.yaml", CONFIG);
    work.write("version", version);
    work.commit(version);
}

/// The invariants after a restart: one whole release serves.
fn check(daemon: &Daemon, step: &str, old: &str, new: &str) {
    daemon.wait_idle("shop");
    let (status, body) = http_get(daemon.router_addr(), HOST, "/").unwrap();
    assert_eq!(
        status,
        200,
        "{step}: nothing serves: {body}\n{}",
        daemon.log()
    );
    assert!(
        body == old || body == new,
        "{step}: serves {body:?}, neither {old} nor {new}"
    );
    let active = daemon.active_releases("shop", "main");
    assert_eq!(active.len(), 1, "{step}: active releases {active:?}");
    assert_eq!(
        active[0].1, body,
        "{step}: the active release is not what serves"
    );
    let row = daemon.cli_ok(&["environments", "-p", "shop"]);
    assert!(row.contains(&active[0].0), "{step}: {row}");
    let apps = daemon.app_containers(Some("shop/main"));
    assert_eq!(apps.len(), 1, "{step}: app containers {apps:?}");
    let everything = daemon.all_containers();
    assert_eq!(everything, apps, "{step}: containers beyond the app's");
}

/// Points the work tree at the restarted daemon (a new SSH port).
fn follow(work: &mut Work, daemon: &Daemon, key: &launchway_integration::Key) {
    work.set_ssh(daemon.ssh_command(key));
    work.git_ok(&[
        "remote",
        "set-url",
        "launchway",
        &format!("ssh://git@127.0.0.1:{}/shop.git", daemon.port),
    ]);
}

/// After a stop between `released` and `complete`, a recovery activity ran
/// the post_deploy hook of the serving release.
fn assert_post_deploy_recovered(daemon: &Daemon, step: &str) {
    let listed = daemon.cli_ok(&["activities", "-p", "shop", "--json", "--limit", "5"]);
    let activities: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let recovery = activities
        .as_array()
        .unwrap()
        .iter()
        .find(|a| {
            a["description"]
                .as_str()
                .is_some_and(|d| d.contains("post_deploy hooks"))
        })
        .unwrap_or_else(|| panic!("{step}: no post_deploy recovery:\n{listed}"));
    let log = daemon.cli_ok(&["activity", "log", &recovery["id"].to_string()]);
    assert!(
        log.contains("Executing post_deploy hook") && log.contains("deployed"),
        "{step}: {log}"
    );
}

#[test]
fn a_kill_at_every_step_of_a_build_and_a_deploy_is_repaired_at_restart() {
    let mut daemon = Daemon::start_binary(
        failpoints_bin(),
        "[deploy]\nstart_timeout_secs = 20\nstop_grace_secs = 2\n",
    );
    daemon.use_busybox_runtime("python:3.11");
    let mut work = daemon.admin_work("shop");
    let alice = daemon.existing_key("alice");
    commit(&work, "v0");
    work.push_ok("main", &[]);

    let mut old = "v0".to_owned();
    for (index, step) in STEPS.iter().enumerate() {
        let new = format!("v{}", index + 1);
        daemon.stop();
        daemon.set_failpoint(Some(step));
        daemon.spawn();
        follow(&mut work, &daemon, &alice);
        commit(&work, &new);
        let out = work.push("main", &[]);
        assert!(!out.status.success(), "{step}: the push succeeded");
        let status = daemon
            .wait_exit(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{step}: the failpoint was not reached:\n{}", daemon.log()));
        assert_eq!(status.signal(), Some(9), "{step}: {status:?}");

        daemon.set_failpoint(None);
        daemon.spawn();
        follow(&mut work, &daemon, &alice);
        check(&daemon, step, &old, &new);
        if matches!(*step, "deploy.released" | "deploy.post_deploy") {
            assert_post_deploy_recovered(&daemon, step);
        }
        let (_, body) = http_get(daemon.router_addr(), HOST, "/").unwrap();
        old = body;
    }

    // The next push works.
    commit(&work, "after");
    work.push_ok("main", &[]);
    check(&daemon, "after", "after", "after");
}

/// An app with a persistent Redis: each deploy hook counts itself there
/// (with busybox `nc`, Redis' own protocol), and the eviction policy,
/// which changes each time, restarts the service in every deploy.
/// Restarts the daemon with `failpoint` armed (or none) and points the
/// work tree at it.
fn restart_with_failpoint(
    daemon: &mut Daemon,
    work: &mut Work,
    key: &launchway_integration::Key,
    failpoint: Option<&str>,
) {
    daemon.stop();
    daemon.set_failpoint(failpoint);
    daemon.spawn();
    follow(work, daemon, key);
}

/// The daemon died of SIGKILL at its failpoint `step`.
fn assert_killed_at(daemon: &mut Daemon, step: &str) {
    let status = daemon
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("{step}: the failpoint was not reached:\n{}", daemon.log()));
    assert_eq!(status.signal(), Some(9), "{step}: {status:?}");
}

fn service_config(policy: &str) -> String {
    format!(
        r#"applications:
  web:
    type: "python:3.11"
    relationships:
      cache: "cache:redis"
    hooks:
      build: |
        mkdir -p public
        cp version public/index.html
      deploy: |
        echo "deploys counted: $( (printf 'INCR deploys\r\n'; sleep 1) | nc -w 3 cache.internal 6379 | tr -d ':\r')"
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
services:
  cache:
    type: redis-persistent:7.0
    configuration:
      maxmemory_policy: {policy}
"#
    )
}

fn counted(log: &str) -> u64 {
    log.lines()
        .find_map(|line| line.trim().strip_prefix("deploys counted: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {log}"))
}

#[test]
fn a_kill_while_a_service_restarts_keeps_its_data_and_one_release() {
    use launchway_daemon::failpoint::SERVICE_STEPS;
    let mut daemon = Daemon::start_binary(
        failpoints_bin(),
        "[deploy]\nstart_timeout_secs = 20\nstop_grace_secs = 2\n",
    );
    daemon.use_busybox_runtime("python:3.11");
    let mut work = daemon.admin_work("shop");
    let alice = daemon.existing_key("alice");
    let policies = ["allkeys-lru", "noeviction", "allkeys-lfu"];
    work.write(".upsun/config.yaml", service_config(policies[0]));
    work.write("version", "v0");
    work.commit("v0");
    let log = work.push_ok("main", &[]);
    let mut count = counted(&log);
    assert_eq!(count, 1, "{log}");

    let mut old = "v0".to_owned();
    for (index, step) in SERVICE_STEPS.iter().enumerate() {
        let new = format!("v{}", index + 1);
        restart_with_failpoint(&mut daemon, &mut work, &alice, Some(step));
        work.write(
            ".upsun/config.yaml",
            service_config(policies[(index + 1) % policies.len()]),
        );
        work.write("version", &new);
        work.commit(&new);
        let out = work.push("main", &[]);
        assert!(!out.status.success(), "{step}: the push succeeded");
        assert_killed_at(&mut daemon, step);
        restart_with_failpoint(&mut daemon, &mut work, &alice, None);
        daemon.wait_idle("shop");
        let (status, body) = http_get(daemon.router_addr(), HOST, "/").unwrap();
        assert_eq!(status, 200, "{step}: {body}\n{}", daemon.log());
        assert!(body == old || body == new, "{step}: serves {body:?}");
        assert_eq!(daemon.active_releases("shop", "main").len(), 1, "{step}");
        // One app container and one service container, nothing else.
        let everything = daemon.all_containers();
        assert_eq!(everything.len(), 2, "{step}: {everything:?}");
        let listed = daemon.cli_ok(&["services", "-p", "shop", "-e", "main"]);
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with("cache ") && l.contains("running")),
            "{step}: {listed}"
        );
        // The next deploy counts on from every count recorded so far (the
        // recovery's deploy hook counted too): nothing was lost.
        let before = count;
        work.write("version", format!("{new}-next"));
        work.commit("next");
        let log = work.push_ok("main", &[]);
        count = counted(&log);
        assert!(count > before, "{step}: {before} then {count}\n{log}");
        let (_, body) = http_get(daemon.router_addr(), HOST, "/").unwrap();
        old = body;
    }
}

#[test]
fn a_kill_while_a_branch_clones_service_data_leaves_the_parent_serving_and_whole() {
    use launchway_daemon::failpoint::CLONE_STEPS;
    let mut daemon = Daemon::start_binary(
        failpoints_bin(),
        "[deploy]\nstart_timeout_secs = 20\nstop_grace_secs = 2\n",
    );
    daemon.use_busybox_runtime("python:3.11");
    let mut work = daemon.admin_work("shop");
    let alice = daemon.existing_key("alice");
    work.write(".upsun/config.yaml", service_config("allkeys-lru"));
    work.write("version", "v0");
    work.commit("v0");
    let log = work.push_ok("main", &[]);
    let mut count = counted(&log);
    // The branch exists, inactive, until activated.
    work.push_ok("feature", &[]);

    for step in CLONE_STEPS {
        restart_with_failpoint(&mut daemon, &mut work, &alice, Some(step));
        let out = daemon.cli(&["environment", "activate", "-p", "shop", "feature"]);
        assert!(!out.status.success(), "{step}: the activation succeeded");
        assert_killed_at(&mut daemon, step);
        restart_with_failpoint(&mut daemon, &mut work, &alice, None);
        daemon.wait_idle("shop");
        // The parent serves: a kill with its containers paused left none
        // frozen.
        let (status, body) = http_get(daemon.router_addr(), HOST, "/").unwrap();
        assert_eq!(status, 200, "{step}: {body}\n{}", daemon.log());
        assert_eq!(body, "v0", "{step}");
        // The interrupted activation was undone: the child is inactive and
        // nothing of it runs.
        let environments = daemon.cli_ok(&["environments", "-p", "shop"]);
        assert!(
            environments
                .lines()
                .any(|l| l.starts_with("feature ") && l.contains("inactive")),
            "{step}: {environments}"
        );
        assert_eq!(daemon.all_containers().len(), 2, "{step}");

        // Activated again, the child starts on a whole copy of the parent's
        // service data: its deploy hook counts on from the parent's count.
        let out = daemon.cli(&["environment", "activate", "-p", "shop", "feature"]);
        let log = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{step}: {log}");
        assert_eq!(counted(&log), count + 1, "{step}: {log}");
        // The parent's service is its own: it counts on from its own count.
        work.write("version", "v0");
        work.write(".keep", step);
        work.commit(step);
        let log = work.push_ok("main", &[]);
        count += 1;
        assert_eq!(counted(&log), count, "{step}: {log}");
        daemon.cli_ok(&["environment", "deactivate", "-p", "shop", "feature"]);
    }
}

/// An app whose worker writes to a persistent Redis without pause, and
/// appends each key Redis acknowledged to a file of a mount; each deploy
/// changes the eviction policy, so Redis restarts in every deploy.
fn loaded_config(policy: &str) -> String {
    format!(
        r#"applications:
  web:
    type: "python:3.11"
    relationships:
      cache: "cache:redis"
    mounts:
      committed:
        source: local
        source_path: committed
    hooks:
      build: |
        mkdir -p public
        cp version public/index.html
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
    workers:
      writer:
        commands:
          start: |
            while true; do
              key=$(cat /proc/sys/kernel/random/uuid)
              reply=$( (printf 'RPUSH rows %s\r\nQUIT\r\n' "$key"; sleep 0.1) | nc -w 2 cache.internal 6379 | tr -d '\r')
              case "$reply" in :[0-9]*) echo "$key" >> /app/committed/acknowledged ;; esac
            done
services:
  cache:
    type: redis-persistent:7.0
    configuration:
      maxmemory_policy: {policy}
"#
    )
}

#[test]
fn ten_deploys_under_a_steady_write_load_lose_no_acknowledged_write() {
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 20\nstop_grace_secs = 2\n");
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    let policies = ["allkeys-lru", "noeviction", "allkeys-lfu"];
    let acknowledged = || {
        std::fs::read_dir(daemon.data_dir().join("environments"))
            .unwrap()
            .flatten()
            .flat_map(|env| walk(&env.path().join("volumes")))
            .find(|path| path.ends_with("acknowledged"))
            .map(|path| std::fs::read_to_string(path).unwrap())
            .unwrap_or_default()
    };
    for round in 0..=10 {
        if round > 0 {
            // The writer is writing when the deploy begins.
            let before = acknowledged().lines().count();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while acknowledged().lines().count() < before + 10 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{round}: the writer does not write"
                );
                launchway_integration::pause();
            }
        }
        work.write(
            ".upsun/config.yaml",
            loaded_config(policies[round % policies.len()]),
        );
        work.write("version", format!("v{round}"));
        work.commit(&format!("v{round}"));
        let log = work.push_ok("main", &[]);
        if round > 0 {
            assert!(log.contains("Restarting service cache"), "{round}: {log}");
        }
    }
    // Whatever was acknowledged before this read is in Redis after it.
    let acknowledged = acknowledged();
    let stored = daemon.cli_ok(&[
        "redis", "-p", "shop", "-e", "main", "--", "LRANGE", "rows", "0", "-1",
    ]);
    let stored: std::collections::HashSet<&str> = stored.lines().map(str::trim).collect();
    let keys: Vec<&str> = acknowledged.lines().collect();
    assert!(keys.len() >= 100, "too few writes to tell: {}", keys.len());
    let lost: Vec<&&str> = keys.iter().filter(|key| !stored.contains(**key)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        keys.len()
    );
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// An app with a persistent Redis and a mount: the test writes a
/// "generation" into both, so a whole state has the same one in each.
fn generation_config() -> String {
    r#"applications:
  web:
    type: "python:3.11"
    relationships:
      cache: "cache:redis"
    mounts:
      state:
        source: storage
        source_path: state
    hooks:
      build: |
        mkdir -p public
        cp version public/index.html
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
services:
  cache:
    type: redis-persistent:7.0
"#
    .to_owned()
}

/// Writes generation `name` into Redis and the mount (the environment
/// serves; Redis's AOF has it before it answers).
fn write_generation(daemon: &Daemon, name: &str) {
    daemon.cli_ok(&[
        "redis",
        "-p",
        "shop",
        "-e",
        "main",
        "--",
        "SET",
        "generation",
        name,
    ]);
    let file = generation_file(daemon);
    std::fs::write(&file, name).unwrap();
}

fn generation_file(daemon: &Daemon) -> std::path::PathBuf {
    daemon
        .data_dir()
        .join("environments")
        .join(launchway_deploy::environment_id("shop", "main"))
        .join("volumes/web/state/generation")
}

/// The generation Redis and the mount hold: the same in both, or the
/// test fails (a mix of before and after).
fn read_generation(daemon: &Daemon, step: &str) -> String {
    let redis = daemon.cli_ok(&[
        "redis",
        "-p",
        "shop",
        "-e",
        "main",
        "--",
        "GET",
        "generation",
    ]);
    let file = std::fs::read_to_string(generation_file(daemon)).unwrap_or_default();
    assert_eq!(
        redis.trim(),
        file.trim(),
        "{step}: Redis and the mount disagree: a mix of two states"
    );
    file.trim().to_owned()
}

#[test]
fn a_kill_at_every_step_of_a_backup_and_a_restore_leaves_one_whole_state() {
    use launchway_daemon::failpoint::{BACKUP_STEPS, RESTORE_STEPS};
    let mut daemon = Daemon::start_binary(
        failpoints_bin(),
        "[deploy]\nstart_timeout_secs = 20\nstop_grace_secs = 2\n",
    );
    daemon.use_busybox_runtime("python:3.11");
    let mut work = daemon.admin_work("shop");
    let alice = daemon.existing_key("alice");
    work.write(".upsun/config.yaml", generation_config());
    work.write("version", "v0");
    work.commit("v0");
    work.push_ok("main", &[]);
    let backups = |daemon: &Daemon| -> Vec<serde_json::Value> {
        serde_json::from_str(&daemon.cli_ok(&["backups", "-p", "shop", "--json"])).unwrap()
    };

    // A kill during a backup: the environment serves (not left frozen),
    // nothing half-taken is listed or left on disk, the next one works.
    write_generation(&daemon, "B");
    for step in BACKUP_STEPS {
        restart_with_failpoint(&mut daemon, &mut work, &alice, Some(step));
        let out = daemon.cli(&["backup", "create", "-p", "shop", "-e", "main"]);
        assert!(!out.status.success(), "{step}: the backup succeeded");
        assert_killed_at(&mut daemon, step);
        restart_with_failpoint(&mut daemon, &mut work, &alice, None);
        daemon.wait_idle("shop");
        let (status, body) = http_get(daemon.router_addr(), HOST, "/").unwrap();
        assert_eq!(status, 200, "{step}: {body}\n{}", daemon.log());
        let listed = backups(&daemon);
        let on_disk: Vec<String> = std::fs::read_dir(daemon.data_dir().join("backups/shop"))
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        // Renamed into place means whole: recorded at the restart.
        let expected = usize::from(*step == "backup.renamed");
        assert_eq!(listed.len(), expected, "{step}: {listed:?}");
        assert_eq!(on_disk.len(), expected, "{step}: {on_disk:?}");
        for backup in &listed {
            assert_eq!(backup["status"], "complete", "{step}");
            daemon.cli_ok(&[
                "backup",
                "delete",
                "-p",
                "shop",
                backup["id"].as_str().unwrap(),
            ]);
        }
    }
    let out = daemon.cli(&["backup", "create", "-p", "shop", "-e", "main"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backup = backups(&daemon)[0]["id"].as_str().unwrap().to_owned();

    // A kill at every step of a restore: afterwards the environment serves
    // with generation A (before) or B (the backup's) in both places.
    for step in RESTORE_STEPS {
        write_generation(&daemon, "A");
        restart_with_failpoint(&mut daemon, &mut work, &alice, Some(step));
        let out = daemon.cli(&["backup", "restore", "-p", "shop", &backup]);
        assert!(!out.status.success(), "{step}: the restore succeeded");
        assert_killed_at(&mut daemon, step);
        restart_with_failpoint(&mut daemon, &mut work, &alice, None);
        daemon.wait_idle("shop");
        let (status, body) = http_get(daemon.router_addr(), HOST, "/").unwrap();
        assert_eq!(status, 200, "{step}: {body}\n{}", daemon.log());
        let generation = read_generation(&daemon, step);
        // Before the swap began: undone; from its first rename: finished.
        let expected = if matches!(*step, "restore.staged" | "restore.stopped") {
            "A"
        } else {
            "B"
        };
        assert_eq!(generation, expected, "{step}");
        assert_eq!(daemon.active_releases("shop", "main").len(), 1, "{step}");
        let env_dir = generation_file(&daemon)
            .ancestors()
            .nth(4)
            .unwrap()
            .to_path_buf();
        for leftover in ["restore.json", ".restore-new", ".restore-old"] {
            assert!(!env_dir.join(leftover).exists(), "{step}: {leftover} left");
        }
    }
    // And a restore that is not interrupted still works.
    write_generation(&daemon, "A");
    let out = daemon.cli(&["backup", "restore", "-p", "shop", &backup]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_generation(&daemon, "after"), "B");
}
