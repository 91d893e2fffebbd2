//! Backups end to end, on the real stack: a Python app in Upsun's layout
//! with PostgreSQL (its deploy hook migrates) and a mount; backup, a bad
//! migration, restore (data and code), restore into another environment,
//! export | import into another project, and the refusals; sync and merge;
//! scheduled backups with their retention, and the byte budget.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use launchway_integration::{Daemon, Work, http_get, pause, python_wheels, serve_wheels};

/// The app. `migrate.py` (the deploy hook) seeds `notes` and a file in the
/// `uploads` mount when empty, or, in the bad version, drops them;
/// `server.py` serves what is there, and `/add?NOTE` adds a row.
fn write_app(work: &Work, links: &str, version: &str, bad_migration: bool) {
    work.write(
        ".upsun/config.yaml",
        format!(
            r#"applications:
  app:
    type: "python:3.11"
    dependencies:
      python3:
        pg8000: "*"
    variables:
      env:
        PIP_FIND_LINKS: "{links}"
        PIP_NO_INDEX: "1"
    relationships:
      database: "db:postgresql"
    mounts:
      uploads:
        source: storage
        source_path: uploads
    hooks:
      deploy: python3 migrate.py
    web:
      commands:
        start: python3 server.py
services:
  db:
    type: postgresql:15
"#
        ),
    );
    work.write(
        "db.py",
        r#"import base64, json, os
def connect():
    import pg8000.native
    c = json.loads(base64.b64decode(os.environ["PLATFORM_RELATIONSHIPS"]))["database"][0]
    return pg8000.native.Connection(c["username"], password=c["password"], host=c["host"], port=c["port"], database=c["path"])
"#,
    );
    let migration = if bad_migration {
        r#"db.run("DROP TABLE IF EXISTS notes")
if os.path.exists("uploads/hello.txt"):
    os.remove("uploads/hello.txt")
print("dropped the notes")
"#
    } else {
        r#"db.run("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, note text)")
if db.run("SELECT count(*) FROM notes")[0][0] == 0:
    db.run("INSERT INTO notes (note) VALUES ('alpha'), ('beta')")
if not os.path.exists("uploads/hello.txt"):
    with open("uploads/hello.txt", "w") as f:
        f.write("kept")
    with open("uploads/blob.bin", "wb") as f:
        f.write(os.urandom(3 * 1024 * 1024))
print("migrated")
"#
    };
    work.write(
        "migrate.py",
        format!("import os\nfrom db import connect\ndb = connect()\n{migration}"),
    );
    work.write(
        "server.py",
        format!(
            r#"import http.server, os
from db import connect

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        db = connect()
        if self.path.startswith("/add?"):
            db.run("INSERT INTO notes (note) VALUES (:n)", n=self.path[5:])
        try:
            notes = ",".join(r[0] for r in db.run("SELECT note FROM notes ORDER BY id"))
        except Exception:
            notes = "NONE"
        try:
            with open("uploads/hello.txt") as f:
                kept = f.read()
        except OSError:
            kept = "MISSING"
        body = "{version} notes={{}} file={{}}\n".format(notes, kept).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#
        ),
    );
    work.commit(version);
}

fn page(daemon: &Daemon, host: &str, path: &str) -> String {
    let (status, body) = http_get(daemon.router_addr(), host, path).unwrap();
    assert_eq!(status, 200, "{host}{path}: {body}");
    body.trim().to_owned()
}

fn cli(daemon: &Daemon, args: &[&str]) -> (bool, String) {
    let out = daemon.cli(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs an activity command that must succeed; its log (stderr).
fn activity_ok(daemon: &Daemon, args: &[&str]) -> String {
    let (ok, output) = cli(daemon, args);
    assert!(ok, "launchway {args:?} failed:\n{output}");
    output
}

fn backups(daemon: &Daemon, project: &str) -> Vec<serde_json::Value> {
    let listed = daemon.cli_ok(&["backups", "-p", project, "--json"]);
    serde_json::from_str::<Vec<serde_json::Value>>(&listed).unwrap()
}

/// Every file under a backup's data, by relative path, with its bytes.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                let name = entry
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .display()
                    .to_string();
                found.insert(name, std::fs::read(entry.path()).unwrap());
            }
        }
    }
    found
}

#[test]
fn a_backup_brings_back_a_dropped_table_and_file_and_travels_to_another_project() {
    let links = serve_wheels(python_wheels(&["pg8000"]));
    let daemon = Daemon::start_with(
        "[deploy]\nstart_timeout_secs = 60\n[services]\nstart_timeout_secs = 20\n",
    );
    let work = daemon.admin_work("shop");
    write_app(&work, &links, "v1", false);
    let log = work.push_ok("main", &[]);
    assert!(log.contains("migrated"), "{log}");
    let main = "main.shop.localhost";
    assert_eq!(page(&daemon, main, "/"), "v1 notes=alpha,beta file=kept");

    // A live backup would copy PostgreSQL's files as it writes them.
    let (ok, output) = cli(
        &daemon,
        &["backup", "create", "-p", "shop", "-e", "main", "--live"],
    );
    assert!(!ok && output.contains("db (postgresql)"), "{output}");
    assert!(backups(&daemon, "shop").is_empty());

    let log = activity_ok(&daemon, &["backup", "create", "-p", "shop", "-e", "main"]);
    assert!(log.contains("the environment was paused"), "{log}");
    assert!(log.contains("services db"), "{log}");
    let listed = backups(&daemon, "shop");
    assert_eq!(listed.len(), 1, "{listed:?}");
    let backup = listed[0]["id"].as_str().unwrap().to_owned();
    assert!(backup.starts_with('S'), "{backup}");
    assert_eq!(listed[0]["environment"], "main");
    assert_eq!(listed[0]["status"], "complete");
    assert!(listed[0]["size_bytes"].as_u64().unwrap() > 3 * 1024 * 1024);
    let backed_up_release = listed[0]["release"].as_str().unwrap().to_owned();
    assert!(backed_up_release.starts_with('R'));
    let table = daemon.cli_ok(&["backups", "-p", "shop"]);
    assert!(
        table.contains(&backup) && table.contains("paused"),
        "{table}"
    );

    // Data written after the backup, and a child cloned with it.
    assert_eq!(
        page(&daemon, main, "/add?gamma"),
        "v1 notes=alpha,beta,gamma file=kept"
    );
    work.push_ok("dev", &["environment.status=active"]);
    let dev = "dev.shop.localhost";
    assert_eq!(
        page(&daemon, dev, "/"),
        "v1 notes=alpha,beta,gamma file=kept"
    );

    // Restored into dev: dev gets the backup's data, main keeps its own.
    let log = activity_ok(
        &daemon,
        &[
            "backup",
            "restore",
            "-p",
            "shop",
            &backup,
            "--to-environment",
            "dev",
        ],
    );
    assert!(log.contains("keeps its own code"), "{log}");
    assert_eq!(page(&daemon, dev, "/"), "v1 notes=alpha,beta file=kept");
    assert_eq!(
        page(&daemon, main, "/"),
        "v1 notes=alpha,beta,gamma file=kept"
    );

    // A bad migration drops the table and the file.
    write_app(&work, &links, "v2", true);
    let log = work.push_ok("main", &[]);
    assert!(log.contains("dropped the notes"), "{log}");
    assert_eq!(page(&daemon, main, "/"), "v2 notes=NONE file=MISSING");

    // The restore brings back both, and the code that served with them.
    let log = activity_ok(&daemon, &["backup", "restore", "-p", "shop", &backup]);
    assert!(log.contains("Requests were held"), "{log}");
    assert!(
        log.contains(&format!("with the data of backup {backup}")),
        "{log}"
    );
    assert_eq!(page(&daemon, main, "/"), "v1 notes=alpha,beta file=kept");
    let serving = daemon.active_releases("shop", "main");
    assert_eq!(serving.len(), 1, "{serving:?}");
    assert_eq!(serving[0].0, backed_up_release);
    // Nothing of the swap is left behind.
    let env_dir = daemon
        .data_dir()
        .join("environments")
        .join(launchway_deploy::environment_id("shop", "main"));
    for leftover in ["restore.json", ".restore-new", ".restore-old"] {
        assert!(!env_dir.join(leftover).exists(), "{leftover} is left");
    }

    // Export, then import into another project: the same bytes.
    let export = daemon.scratch("export").join("backup.tar.zst");
    let out = daemon
        .cli_command(&["backup", "export", "-p", "shop", &backup])
        .stdout(std::fs::File::create(&export).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive = std::fs::read(&export).unwrap();
    let copy_remote = daemon.project("copy");
    let alice = daemon.existing_key("alice");
    daemon.grant(&alice, "copy", "admin");
    let copy = Work::init(daemon.scratch("work-copy")).with_ssh(daemon.ssh_command(&alice));
    copy.git_ok(&["remote", "add", "launchway", &copy_remote]);
    write_app(&copy, &links, "v1", false);
    copy.push_ok("main", &[]);
    let out = daemon.cli_with_input(&["backup", "import", "-p", "copy"], &archive);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported = backups(&daemon, "copy");
    assert_eq!(imported.len(), 1, "{imported:?}");
    let imported_id = imported[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(imported[0]["release"], "");
    let original = files(
        &daemon
            .data_dir()
            .join("backups/shop")
            .join(&backup)
            .join("volumes"),
    );
    let copied = files(
        &daemon
            .data_dir()
            .join("backups/copy")
            .join(&imported_id)
            .join("volumes"),
    );
    assert!(
        original.contains_key("app/uploads/blob.bin"),
        "{:?}",
        original.keys()
    );
    assert_eq!(original, copied);
    page(&daemon, "main.copy.localhost", "/add?delta");
    activity_ok(&daemon, &["backup", "restore", "-p", "copy", &imported_id]);
    assert_eq!(
        page(&daemon, "main.copy.localhost", "/"),
        "v1 notes=alpha,beta file=kept"
    );

    // Refused, changing nothing: damaged or foreign archives, a backup of
    // another project, an inactive target.
    let mut corrupt = archive.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x5a;
    let truncated = archive[..archive.len() * 2 / 3].to_vec();
    let foreign = b"PK\x03\x04 this is a zip, not a backup".to_vec();
    for (what, bytes) in [
        ("corrupt", corrupt),
        ("truncated", truncated),
        ("foreign", foreign),
    ] {
        let out = daemon.cli_with_input(&["backup", "import", "-p", "copy"], &bytes);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a {what} archive was imported");
        assert!(stderr.contains("nothing was stored"), "{what}: {stderr}");
    }
    assert_eq!(backups(&daemon, "copy").len(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(daemon.data_dir().join("backups/copy"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    let (ok, output) = cli(&daemon, &["backup", "restore", "-p", "copy", &backup]);
    assert!(!ok && output.contains("no backup"), "{output}");
    work.push_ok("old", &[]);
    let (ok, output) = cli(
        &daemon,
        &[
            "backup",
            "restore",
            "-p",
            "shop",
            &backup,
            "--to-environment",
            "old",
        ],
    );
    assert!(!ok && output.contains("inactive"), "{output}");
    assert_eq!(page(&daemon, main, "/"), "v1 notes=alpha,beta file=kept");

    // Deleted: listed no more, its directory gone.
    daemon.cli_ok(&["backup", "delete", "-p", "shop", &backup]);
    assert!(backups(&daemon, "shop").is_empty());
    assert!(
        !daemon
            .data_dir()
            .join("backups/shop")
            .join(&backup)
            .exists()
    );
}

#[test]
fn sync_brings_the_parents_rows_and_code_down_and_merge_fast_forwards_the_parent() {
    let links = serve_wheels(python_wheels(&["pg8000"]));
    let daemon = Daemon::start_with(
        "[deploy]\nstart_timeout_secs = 60\n[services]\nstart_timeout_secs = 20\n",
    );
    let work = daemon.admin_work("team");
    let (main, dev) = ("main.team.localhost", "dev.team.localhost");
    write_app(&work, &links, "v1", false);
    work.push_ok("main", &[]);
    work.push_ok("dev", &["environment.status=active"]);
    page(&daemon, main, "/add?gamma");
    assert_eq!(page(&daemon, dev, "/"), "v1 notes=alpha,beta file=kept");

    // Nothing asked: refused.
    let (ok, output) = cli(&daemon, &["environment", "sync", "-p", "team", "dev"]);
    assert!(!ok && output.contains("--data"), "{output}");

    // Data: the parent's new rows come down; the parent was paused briefly.
    let log = activity_ok(
        &daemon,
        &["environment", "sync", "-p", "team", "dev", "--data"],
    );
    assert!(log.contains("main was paused"), "{log}");
    assert_eq!(
        page(&daemon, dev, "/"),
        "v1 notes=alpha,beta,gamma file=kept"
    );

    // Merge: main's branch fast-forwards to dev's and deploys; its data stays.
    write_app(&work, &links, "v3", false);
    work.push_ok("dev", &[]);
    page(&daemon, dev, "/add?only-in-dev");
    let log = activity_ok(&daemon, &["environment", "merge", "-p", "team", "dev"]);
    assert!(log.contains("fast-forwarded"), "{log}");
    assert_eq!(
        page(&daemon, main, "/"),
        "v3 notes=alpha,beta,gamma file=kept"
    );

    // Code: dev fast-forwards to main's newer commit and deploys it.
    let v4 = {
        write_app(&work, &links, "v4", false);
        work.head()
    };
    work.push_ok("main", &[]);
    let log = activity_ok(
        &daemon,
        &["environment", "sync", "-p", "team", "dev", "--code"],
    );
    assert!(log.contains("fast-forwarded"), "{log}");
    assert!(page(&daemon, dev, "/").starts_with("v4 "));

    // Diverged: both refused, nothing changed.
    write_app(&work, &links, "v5", false);
    work.push_ok("main", &[]);
    work.git_ok(&["reset", "-q", "--hard", &v4]);
    write_app(&work, &links, "v6", false);
    work.push_ok("dev", &[]);
    let (ok, output) = cli(&daemon, &["environment", "merge", "-p", "team", "dev"]);
    assert!(!ok && output.contains("fast-forward"), "{output}");
    let (ok, output) = cli(
        &daemon,
        &["environment", "sync", "-p", "team", "dev", "--code"],
    );
    assert!(!ok && output.contains("diverged"), "{output}");
    assert!(page(&daemon, main, "/").starts_with("v5 "));
    assert!(page(&daemon, dev, "/").starts_with("v6 "));
}

const SCHEDULED_CONFIG: &str = r#"applications:
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

fn set_setting(daemon: &Daemon, setting: &str) -> (bool, String) {
    let out = daemon.cli(&["project", "set", "-p", "sched", setting]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_schedule_takes_backups_the_retention_prunes_them_and_the_budget_refuses_one() {
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 20\n");
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("sched");
    work.write(".upsun/config.yaml", SCHEDULED_CONFIG);
    work.write("index.html", "v1\n");
    work.commit("v1");
    work.push_ok("main", &[]);

    // The budget: 64 KiB of data cannot fit in 16 KiB; nothing is kept.
    assert!(set_setting(&daemon, "backup.max_bytes=16K").0);
    let out = daemon.cli(&["backup", "create", "-p", "sched", "-e", "main"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("past its budget"), "{log}");
    assert!(backups(&daemon, "sched").is_empty());
    let dir = daemon.data_dir().join("backups/sched");
    let entries = std::fs::read_dir(&dir).map_or(0, |d| d.count());
    assert_eq!(entries, 0, "something was left in {}", dir.display());
    assert!(set_setting(&daemon, "backup.max_bytes=none").0);
    daemon.cli_ok(&["backup", "create", "-p", "sched", "-e", "main"]);
    let manual = backups(&daemon, "sched")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bad values are refused and change nothing.
    for (setting, says) in [
        ("backup.retention.main=2l", "no backup schedule"),
        ("backup.schedule.main=61 * * * *", "backup.schedule.main"),
        ("backup.max_bytes=lots", "no size"),
        ("backup.schedule.=* * * * *", "names no environment"),
    ] {
        let (ok, stderr) = set_setting(&daemon, setting);
        assert!(!ok && stderr.contains(says), "{setting}: {stderr}");
    }
    assert!(set_setting(&daemon, "backup.schedule.main=* * * * *").0);
    let (ok, stderr) = set_setting(&daemon, "backup.retention.main=0d");
    assert!(!ok && stderr.contains("keeps no backup"), "{stderr}");
    assert!(set_setting(&daemon, "backup.retention.main=2l").0);
    let shown = daemon.cli_ok(&["project", "get", "-p", "sched"]);
    assert!(
        shown.contains("backup.retention.main") && shown.contains("2l"),
        "{shown}"
    );

    // Every minute a scheduled backup; past two, the oldest goes.
    let deadline = Instant::now() + Duration::from_secs(230);
    let mut pruned = false;
    let mut listed = Vec::new();
    while Instant::now() < deadline && !pruned {
        listed = backups(&daemon, "sched");
        let activities = daemon.cli_ok(&["activities", "-p", "sched", "--json", "--limit", "50"]);
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
    let listed = backups(&daemon, "sched");
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
