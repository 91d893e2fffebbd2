//! Scheduled backups with their retention, and the project's byte budget,
//! end to end (busybox fixture runtime: no service, files in a mount).
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use launchway_integration::{Daemon, pause};

const CONFIG: &str = r#"applications:
  web:
    type: "python:3.11"
    mounts:
      data:
        source: storage
        source_path: data
    hooks:
      deploy: dd if=/dev/zero of=data/blob bs=1024 count=64 2>/dev/null; echo wrote
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app
routes:
  "http://{default}/": {type: upstream, upstream: "web:http"}
"#;

fn backups(daemon: &Daemon) -> Vec<serde_json::Value> {
    let listed = daemon.cli_ok(&["backups", "-p", "shop", "--json"]);
    serde_json::from_str(&listed).unwrap()
}

fn set(daemon: &Daemon, setting: &str) -> (bool, String) {
    let out = daemon.cli(&["project", "set", "-p", "shop", setting]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_schedule_takes_backups_the_retention_prunes_them_and_the_budget_refuses_one() {
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 20\n");
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", CONFIG);
    work.write("index.html", "v1\n");
    work.commit("v1");
    work.push_ok("main", &[]);

    // The budget: 64 KiB of data cannot fit in 16 KiB; nothing is kept.
    assert!(set(&daemon, "backup.max_bytes=16K").0);
    let out = daemon.cli(&["backup", "create", "-p", "shop", "-e", "main"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("past its budget"), "{log}");
    assert!(backups(&daemon).is_empty());
    let dir = daemon.data_dir().join("backups/shop");
    let entries = std::fs::read_dir(&dir).map_or(0, |d| d.count());
    assert_eq!(entries, 0, "something was left in {}", dir.display());
    assert!(set(&daemon, "backup.max_bytes=none").0);
    daemon.cli_ok(&["backup", "create", "-p", "shop", "-e", "main"]);
    let manual = backups(&daemon)[0]["id"].as_str().unwrap().to_owned();

    // Bad values are refused and change nothing.
    for (setting, says) in [
        ("backup.retention.main=2l", "no backup schedule"),
        ("backup.schedule.main=61 * * * *", "backup.schedule.main"),
        ("backup.max_bytes=lots", "no size"),
        ("backup.schedule.=* * * * *", "names no environment"),
    ] {
        let (ok, stderr) = set(&daemon, setting);
        assert!(!ok && stderr.contains(says), "{setting}: {stderr}");
    }
    assert!(set(&daemon, "backup.schedule.main=* * * * *").0);
    let (ok, stderr) = set(&daemon, "backup.retention.main=0d");
    assert!(!ok && stderr.contains("keeps no backup"), "{stderr}");
    assert!(set(&daemon, "backup.retention.main=2l").0);
    let shown = daemon.cli_ok(&["project", "get", "-p", "shop"]);
    assert!(
        shown.contains("backup.retention.main") && shown.contains("2l"),
        "{shown}"
    );

    // Every minute a scheduled backup; past two, the oldest goes.
    let deadline = Instant::now() + Duration::from_secs(230);
    let mut pruned = false;
    let mut listed = Vec::new();
    while Instant::now() < deadline && !pruned {
        listed = backups(&daemon);
        let activities = daemon.cli_ok(&["activities", "-p", "shop", "--json", "--limit", "50"]);
        let activities: serde_json::Value = serde_json::from_str(&activities).unwrap();
        pruned = activities.as_array().unwrap().iter().any(|a| {
            a["description"] == "scheduled backup of main"
                && a["state"] == "complete"
                && daemon
                    .cli_ok(&["activity", "log", &a["id"].to_string()])
                    .contains("Retention (keeps 2 newest): deleted")
        });
        for _ in 0..50 {
            pause();
        }
    }
    assert!(pruned, "no scheduled backup was pruned: {listed:#?}");
    let listed = backups(&daemon);
    let scheduled: Vec<_> = listed.iter().filter(|b| b["scheduled"] == true).collect();
    assert_eq!(scheduled.len(), 2, "{listed:#?}");
    assert!(
        listed.iter().any(|b| b["id"] == manual.as_str()),
        "the manual backup was deleted: {listed:#?}"
    );
    // The pruned one's directory is gone with its record.
    let on_disk = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(on_disk, listed.len(), "{listed:#?}");
}
