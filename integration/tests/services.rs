//! Services end to end, on the real stack: Debian's PostgreSQL built into a
//! service image, a Python app in Upsun's layout that reads
//! `PLATFORM_RELATIONSHIPS` the way `platformshconfig` does, migrations in
//! its deploy hook, pg8000 (a real driver, fetched from PyPI by the host
//! and served to the dependencies step from the host's loopback).
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::path::Path;

use launchway_integration::{
    Daemon, Work, http_get as get, python_wheels as wheels, serve_wheels as serve,
};

/// The start of a config whose one app, `app`, installs `package` from
/// the wheels served at `links` (and nothing from the index).
fn app_with_wheels(package: &str, links: &str) -> String {
    format!(
        r#"applications:
  app:
    type: "python:3.11"
    dependencies:
      python3:
        {package}: "*"
    variables:
      env:
        PIP_FIND_LINKS: "{links}"
        PIP_NO_INDEX: "1"
"#
    )
}

/// The app: `relationships.py` reads `PLATFORM_RELATIONSHIPS` as the
/// config readers do; `migrate.py` (the deploy hook) creates the table and
/// records the deploy; `server.py` serves the rows and the server's start
/// time.
fn write_app(work: &Work, links: &str, version: &str) {
    work.write(
        ".upsun/config.yaml",
        format!(
            r#"{}    relationships:
      database: "db:postgresql"
      reports: "db:reporter"
    hooks:
      deploy: python3 migrate.py
    web:
      commands:
        start: python3 server.py
services:
  db:
    type: postgresql:12
    configuration:
      databases: [main]
      endpoints:
        reporter:
          default_database: main
          privileges:
            main: ro
"#,
            app_with_wheels("pg8000", links)
        ),
    );
    work.write(
        "relationships.py",
        r#"import base64, json, os

def credentials(name):
    decoded = json.loads(base64.b64decode(os.environ["PLATFORM_RELATIONSHIPS"]))
    return decoded[name][0]

def connect(name):
    import pg8000.native
    c = credentials(name)
    return pg8000.native.Connection(
        c["username"], password=c["password"], host=c["host"], port=c["port"], database=c["path"]
    )
"#,
    );
    work.write(
        "migrate.py",
        r#"from relationships import connect, credentials
db = connect("database")
db.run("CREATE TABLE IF NOT EXISTS deploys (id serial PRIMARY KEY, note text)")
db.run("INSERT INTO deploys (note) VALUES (:note)", note="deploy")
print("migrated; deploys:", db.run("SELECT count(*) FROM deploys")[0][0])
c = credentials("database")
print("relationship:", c["scheme"], c["host"], c["port"], c["path"], c["rel"], c["type"], c["query"])
# The read-only endpoint reads, and cannot write.
reader = connect("reports")
print("reader sees", reader.run("SELECT count(*) FROM deploys")[0][0], "deploys")
try:
    reader.run("INSERT INTO deploys (note) VALUES ('sneaky')")
    print("READER-WROTE")
except Exception as error:
    print("reader refused:", type(error).__name__)
"#,
    );
    work.write(
        "server.py",
        format!(
            r#"import http.server, os
from relationships import connect, credentials

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/password":
            # For the test's process-listing check only.
            body = credentials("database")["password"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        db = connect("database")
        rows = db.run("SELECT count(*) FROM deploys")[0][0]
        started = db.run("SELECT pg_postmaster_start_time()::text")[0][0]
        body = "{version} deploys={{}} started={{}}\n".format(rows, started).encode()
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

fn field<'a>(page: &'a str, name: &str) -> &'a str {
    page.split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {page}"))
}

/// Runs `args` (a client session that lasts a few seconds) and watches
/// every process's command line meanwhile: `needle` shows (the session was
/// seen running), `password` never does.
fn assert_session_hides(daemon: &Daemon, args: &[&str], needle: &str, password: &str) {
    let mut session = daemon
        .cli_command(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline);
            seen |= cmdline.contains(needle) && !cmdline.contains("launchway");
            assert!(
                !cmdline.contains(password),
                "the password on a command line: {cmdline}"
            );
        }
        launchway_integration::pause();
    }
    assert!(seen, "the session's client was seen running");
    assert!(session.wait().unwrap().success());
}

#[test]
fn a_python_app_migrates_and_reads_postgresql_through_its_relationships() {
    let links = serve(wheels(&["pg8000"]));
    let daemon = Daemon::start_with(
        "[deploy]\nstart_timeout_secs = 60\n[services]\nstart_timeout_secs = 20\n",
    );
    let work = daemon.admin_work("shop");
    write_app(&work, &links, "v1");
    let log = work.push_ok("main", &[]);
    // The asked version runs as the nearest, and the log says so.
    assert!(
        log.contains("postgresql:12 is not available here; running postgresql:15"),
        "{log}"
    );
    assert!(log.contains("Starting service db (postgresql:15)"), "{log}");
    assert!(log.contains("Service db configured"), "{log}");
    assert!(log.contains("migrated; deploys: 1"), "{log}");
    assert!(
        log.contains("relationship: pgsql database.internal 5432 main postgresql postgresql:12 {'is_master': True}"),
        "{log}"
    );
    assert!(log.contains("reader sees 1 deploys"), "{log}");
    assert!(log.contains("reader refused: DatabaseError"), "{log}");
    assert!(!log.contains("READER-WROTE"), "{log}");
    let router = daemon.router_addr();
    let (status, page) = get(router, "main.shop.localhost", "/").unwrap();
    assert_eq!(status, 200, "{page}");
    assert_eq!(field(&page, "deploys"), "1");
    let started = field(&page, "started").to_owned();
    // `launchway services` lists it: asked → running, answering.
    let listed = daemon.cli_ok(&["services", "-p", "shop", "-e", "main"]);
    let line = listed
        .lines()
        .find(|line| line.starts_with("db "))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        line.contains("postgresql:12 → postgresql:15") && line.contains("running"),
        "{listed}"
    );
    // `launchway runtimes list` shows the service images: built, or built
    // on first use.
    let runtimes = daemon.cli_ok(&["runtimes", "list"]);
    let row = |image: &str| {
        runtimes
            .lines()
            .find(|line| line.starts_with(&format!("{image} ")))
            .unwrap_or_else(|| panic!("{image} in {runtimes}"))
            .to_owned()
    };
    assert!(row("postgresql:15").contains("ready") && row("postgresql:15").contains("service"));
    assert!(
        row("postgresql:17").contains("built on first use"),
        "{runtimes}"
    );
    // `launchway logs` shows the service's output beside the app's.
    let logs = daemon.cli_ok(&["logs", "-p", "shop", "-e", "main"]);
    assert!(
        logs.contains("[service/db]") && logs.contains("database system is ready"),
        "{logs}"
    );

    // An app-only change: the database keeps running (same start time) and
    // its rows.
    write_app(&work, &links, "v2");
    let log = work.push_ok("main", &[]);
    assert!(
        log.contains("Service db (postgresql:15) is running"),
        "{log}"
    );
    assert!(log.contains("migrated; deploys: 2"), "{log}");
    let (_, page) = get(router, "main.shop.localhost", "/").unwrap();
    assert!(page.starts_with("v2 "), "{page}");
    assert_eq!(field(&page, "deploys"), "2");
    assert_eq!(
        field(&page, "started"),
        started,
        "the database was not restarted"
    );

    // `launchway sql` runs psql as a relationship's user. Two relationships
    // fit: it asks which.
    let ambiguous = daemon.cli(&["sql", "-p", "shop", "-e", "main", "-c", "SELECT 1"]);
    assert!(!ambiguous.status.success());
    let said = String::from_utf8_lossy(&ambiguous.stderr);
    assert!(
        said.contains("choose one with --relationship")
            && said.contains("database")
            && said.contains("reports"),
        "{said}"
    );
    let count = daemon.cli_ok(&[
        "sql",
        "-p",
        "shop",
        "-e",
        "main",
        "-r",
        "database",
        "-c",
        "SELECT count(*) AS n FROM deploys",
    ]);
    assert!(
        count.contains("(1 row)") && count.lines().any(|l| l.trim() == "2"),
        "{count}"
    );
    // The read-only endpoint stays read-only, and the exit code says so.
    let refused = daemon.cli(&[
        "sql",
        "-p",
        "shop",
        "-e",
        "main",
        "-r",
        "reports",
        "-c",
        "DELETE FROM deploys",
    ]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Statements from stdin.
    let made = daemon.cli_with_input(
        &["sql", "-p", "shop", "-e", "main", "-r", "database"],
        b"CREATE TABLE notes (body text);\nINSERT INTO notes VALUES ('kept by the dump');\n",
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // While a session runs, no process shows the password on its command line.
    let password = get(router, "main.shop.localhost", "/password").unwrap().1;
    assert_eq!(password.trim().len(), 32, "{password}");
    assert_session_hides(
        &daemon,
        &[
            "sql",
            "-p",
            "shop",
            "-e",
            "main",
            "-r",
            "database",
            "-c",
            "SELECT pg_sleep(3)",
        ],
        "pg_sleep",
        password.trim(),
    );
    // `launchway db dump` writes a dump that `launchway sql` loads back.
    let dump = daemon.cli(&["db", "dump", "-p", "shop", "-e", "main", "-r", "database"]);
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        text.contains("CREATE TABLE public.notes") && text.contains("kept by the dump"),
        "{text}"
    );
    daemon.cli_ok(&[
        "sql",
        "-p",
        "shop",
        "-e",
        "main",
        "-r",
        "database",
        "-c",
        "DROP TABLE notes",
    ]);
    let loaded = daemon.cli_with_input(
        &["sql", "-p", "shop", "-e", "main", "-r", "database"],
        &dump.stdout,
    );
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let back = daemon.cli_ok(&[
        "sql",
        "-p",
        "shop",
        "-e",
        "main",
        "-r",
        "database",
        "-c",
        "SELECT body FROM notes",
    ]);
    assert!(back.contains("kept by the dump"), "{back}");

    // A branch activated from main gets a copy of main's database (its
    // deploy hook adds its own row to the two it found); the copy and the
    // parent diverge from there, both ways.
    let log = work.push_ok("feature", &["environment.status=active"]);
    assert!(log.contains("migrated; deploys: 3"), "{log}");
    assert!(
        log.contains("Service db of main wrote a checkpoint"),
        "{log}"
    );
    assert!(log.contains("its services db with it)"), "{log}");
    let (_, child) = get(router, "feature.shop.localhost", "/").unwrap();
    assert_eq!(field(&child, "deploys"), "3", "{child}");
    write_app(&work, &links, "v3");
    work.push_ok("main", &[]);
    let (_, parent) = get(router, "main.shop.localhost", "/").unwrap();
    assert_eq!(
        field(&parent, "deploys"),
        "3",
        "main: its two and the new one, not the child's"
    );
    let (_, child) = get(router, "feature.shop.localhost", "/").unwrap();
    assert_eq!(
        field(&child, "deploys"),
        "3",
        "the child does not see main's new row"
    );

    // The data lives in the environment's services/ and says what made it.
    let record = std::fs::read_dir(daemon.data_dir().join("environments"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("services/db/.launchway-service"))
        .find(|p| p.exists())
        .expect("the service's data on the host");
    let recorded = std::fs::read_to_string(&record).unwrap();
    assert!(recorded.contains("\"version\":\"15\""), "{recorded}");
    assert!(
        Path::new(&record)
            .parent()
            .unwrap()
            .join("pgdata/PG_VERSION")
            .exists()
    );
}

/// Two apps: `app` relates to MariaDB (asked as 10.4) and persistent Redis;
/// `lone` relates to nothing and is handed the database's address and
/// password by the test (`__DB_IP__`, `__DB_PASSWORD__`).
fn write_second(
    work: &Work,
    links: &str,
    version: &str,
    db_ip: &str,
    db_password: &str,
    shutdown: bool,
    cache: bool,
) {
    let (cache_relationship, cache_service) = if cache {
        (
            "\n      cache: \"cache:redis\"",
            "\n  cache:\n    type: redis-persistent:7.0",
        )
    } else {
        ("", "")
    };
    let shutdown = if shutdown {
        "python3 -c 'import redis_client; redis_client.shutdown()'"
    } else {
        "true"
    };
    work.write(
        ".upsun/config.yaml",
        format!(
            r#"routes:
  "http://{{default}}/": {{type: upstream, upstream: "app:http"}}
applications:
  app:
    type: "python:3.11"
    source:
      root: app
    dependencies:
      python3:
        pymysql: "*"
        redis: "*"
    variables:
      env:
        PIP_FIND_LINKS: "{links}"
        PIP_NO_INDEX: "1"
    relationships:
      database: "db:mysql"{cache_relationship}
    hooks:
      deploy: |
        python3 migrate.py
        {shutdown}
    web:
      commands:
        start: python3 server.py
  lone:
    type: "python:3.11"
    source:
      root: lone
    variables:
      env:
        LW_DB_IP: "{db_ip}"
        LW_DB_PASSWORD: "{db_password}"
    hooks:
      deploy: python3 probe.py
    web:
      commands:
        start: python3 -m http.server $PORT --bind 127.0.0.1
services:
  db:
    type: mariadb:10.4{cache_service}
"#
        ),
    );
    let common = r#"import base64, json, os
def relationship(name):
    return json.loads(base64.b64decode(os.environ["PLATFORM_RELATIONSHIPS"]))[name][0]
"#;
    work.write("app/common.py", common);
    work.write(
        "app/redis_client.py",
        r#"import redis
from common import relationship
def client():
    c = relationship("cache")
    return redis.Redis(host=c["host"], port=c["port"], socket_timeout=5)
def shutdown():
    try:
        client().shutdown()
    except Exception as error:
        print("redis shutdown:", type(error).__name__)
"#,
    );
    work.write(
        "app/migrate.py",
        r#"import pymysql
from common import relationship
from redis_client import client
c = relationship("database")
db = pymysql.connect(host=c["host"], port=c["port"], user=c["username"], password=c["password"], database=c["path"], autocommit=True)
with db.cursor() as cursor:
    cursor.execute("CREATE TABLE IF NOT EXISTS deploys (id INT AUTO_INCREMENT PRIMARY KEY, note TEXT)")
    cursor.execute("INSERT INTO deploys (note) VALUES ('deploy')")
    cursor.execute("SELECT COUNT(*) FROM deploys")
    print("mariadb deploys:", cursor.fetchone()[0])
    cursor.execute("SELECT VERSION()")
    print("mariadb version:", cursor.fetchone()[0])
print("redis counter:", client().incr("deploys"))
print("DB-IP", c["ip"], "DB-PASSWORD-REVERSED", c["password"][::-1])
"#,
    );
    work.write(
        "app/server.py",
        format!(
            r#"import http.server, os
from redis_client import client

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = "{version} counter={{}}\n".format(int(client().get("deploys") or 0)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#
        ),
    );
    work.write(
        "lone/probe.py",
        r#"import os, socket
ip, password = os.environ["LW_DB_IP"], os.environ["LW_DB_PASSWORD"]
print("lone has the password:", len(password) == 32)
for label, port in (("db", 3306), ("cache", 6379)):
    try:
        socket.create_connection((ip if label == "db" else ip, port), timeout=3).close()
        print("lone->%s: REACHED" % label)
    except OSError as error:
        print("lone->%s: BLOCKED (%s)" % (label, type(error).__name__))
"#,
    );
    work.write("lone/index.html", "lone\n");
    work.commit(version);
}

fn after<'a>(log: &'a str, marker: &str) -> &'a str {
    log.split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {marker} in {log}"))
}

#[test]
fn mariadb_and_redis_serve_only_their_relationships_and_a_crashed_service_restarts() {
    // Debian 12's Python is 3.11.2: redis-py needs async-timeout there.
    let links = serve(wheels(&["pymysql", "redis", "async-timeout"]));
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 60\n");
    let work = daemon.admin_work("shop");
    write_second(&work, &links, "v1", "169.254.0.2", "", false, true);
    let log = work.push_ok("main", &[]);
    assert!(
        log.contains("mariadb:10.4 is not available here; running mariadb:10.11"),
        "{log}"
    );
    assert!(log.contains("mariadb deploys: 1"), "{log}");
    assert!(log.contains("mariadb version: 10.11"), "{log}");
    assert!(log.contains("redis counter: 1"), "{log}");
    let db_ip = after(&log, "DB-IP ").to_owned();
    let password: String = after(&log, "DB-PASSWORD-REVERSED ").chars().rev().collect();

    // `lone` has the address and the password, and no relationship: it
    // reaches neither. `app` stops Redis at the end of its deploy hook.
    write_second(&work, &links, "v2", &db_ip, &password, true, true);
    let log = work.push_ok("main", &[]);
    assert!(log.contains("lone has the password: True"), "{log}");
    assert!(log.contains("lone->db: BLOCKED"), "{log}");
    assert!(log.contains("lone->cache: BLOCKED"), "{log}");
    assert!(log.contains("mariadb deploys: 2"), "{log}");
    assert!(log.contains("redis counter: 2"), "{log}");
    assert!(
        log.contains("Service db (mariadb:10.11) is running"),
        "{log}"
    );

    // The supervisor saw Redis exit and started it again, on its data.
    let exits = std::fs::read_dir(daemon.data_dir().join("environments"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("run/service-cache/.launchway-exits"))
        .find(|p| p.parent().is_some_and(Path::exists))
        .expect("the cache's run directory");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, page) =
            get(daemon.router_addr(), "main.shop.localhost", "/").unwrap_or((0, String::new()));
        if status == 200 && exits.exists() {
            assert_eq!(field(&page, "counter"), "2", "{page}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis did not come back: {page}"
        );
        launchway_integration::pause();
    }
    let listed = daemon.cli_ok(&["services", "-p", "shop", "-e", "main"]);
    let cache = listed
        .lines()
        .find(|line| line.starts_with("cache "))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(cache.contains("running"), "{listed}");
    assert!(
        !cache.trim_end().ends_with(" 0"),
        "its restarts are counted: {listed}"
    );
    // (redis-py retries a command whose connection dropped, so the
    // shutdown may land again on the restarted server: each exit counts.)
    let recorded = std::fs::read_to_string(&exits).unwrap();
    assert!(
        recorded.lines().count() >= 1 && recorded.lines().all(|status| status == "0"),
        "{recorded}"
    );

    // `launchway sql` on MariaDB and `launchway redis`, with no
    // relationship named: the only one that fits.
    let count = daemon.cli_ok(&[
        "sql",
        "-p",
        "shop",
        "-e",
        "main",
        "-c",
        "SELECT COUNT(*) AS n FROM deploys",
    ]);
    assert!(
        count.contains("| n |") && count.contains("| 2 |"),
        "{count}"
    );
    let counter = daemon.cli_ok(&["redis", "-p", "shop", "-e", "main", "--", "GET", "deploys"]);
    assert_eq!(counter.trim(), "2");
    let piped = daemon.cli_with_input(
        &["redis", "-p", "shop", "-e", "main"],
        b"INCR piped\nINCR piped\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1", "2"]
    );
    let wrong = daemon.cli(&[
        "redis", "-p", "shop", "-e", "main", "-r", "database", "--", "PING",
    ]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("use launchway sql"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    // No password on a command line while a session runs.
    assert_session_hides(
        &daemon,
        &["sql", "-p", "shop", "-e", "main", "-c", "SELECT SLEEP(3)"],
        "SLEEP(3)",
        &password,
    );

    // Data of a service in the config cannot be deleted.
    let refused = daemon.cli(&["services", "-p", "shop", "-e", "main", "delete", "cache"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is in the environment's config"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Removed from the config, the service stops and its data stays,
    // listed as detached, until deleted on purpose.
    write_second(&work, &links, "v3", &db_ip, &password, false, false);
    let log = work.push_ok("main", &[]);
    assert!(
        log.contains("Service cache is no longer in the config: stopped; its data is kept"),
        "{log}"
    );
    let data = exits
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap()
        .join("services/cache");
    assert!(data.join("appendonlydir").exists(), "{}", data.display());
    let listed = daemon.cli_ok(&["services", "-p", "shop", "-e", "main"]);
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with("cache ") && line.contains("detached")),
        "{listed}"
    );
    daemon.cli_ok(&["services", "-p", "shop", "-e", "main", "delete", "cache"]);
    assert!(!data.exists());
    let listed = daemon.cli_ok(&["services", "-p", "shop", "-e", "main"]);
    assert!(!listed.contains("cache"), "{listed}");
}

/// Varnish in front of an app, as Upsun projects put it: the route goes to
/// the service, the project's VCL (from `!include`) picks the relationship's
/// director, caches what the app allows and answers some URLs itself.
#[test]
fn varnish_serves_a_route_through_the_project_vcl_and_caches_the_app() {
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 60\n");
    let work = daemon.admin_work("news");
    work.write(
        ".platform/applications.yaml",
        r#"- name: app
  type: "python:3.11"
  web:
    commands:
      start: python3 server.py
"#,
    );
    work.write(
        ".platform/services.yaml",
        r#"cache:
  type: varnish:6.0
  relationships:
    application: "app:http"
  configuration:
    vcl: !include
      type: string
      path: config.vcl
"#,
    );
    work.write(
        ".platform/config.vcl",
        r#"sub vcl_recv {
    set req.backend_hint = application.backend();
    if (req.url == "/vcl") {
        return (synth(200, "answered-by-the-project-vcl"));
    }
    if (req.url ~ "^/fresh") {
        return (pass);
    }
}
"#,
    );
    work.write(
        ".platform/routes.yaml",
        r#""https://{default}/":
  type: upstream
  upstream: "cache:http"
"#,
    );
    work.write(
        "server.py",
        r#"import http.server, itertools, os
served = itertools.count(1)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = "request {}\n".format(next(served)).encode()
        self.send_response(200)
        self.send_header("Cache-Control", "public, max-age=300")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#,
    );
    work.commit("v1");
    let log = work.push_ok("main", &[]);
    assert!(
        log.contains("varnish:6.0 is not available here; running varnish:7.1"),
        "{log}"
    );
    assert!(log.contains("is served by service `cache`"), "{log}");
    let host = "main.news.localhost";
    let fetch = |path: &str| {
        let (status, body) = get(daemon.router_addr(), host, path).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let first = fetch("/");
    assert!(first.starts_with("request "), "{first}");
    assert_eq!(fetch("/"), first, "the second request is Varnish's copy");
    let fresh = fetch("/fresh");
    assert_ne!(fetch("/fresh"), fresh, "passed requests reach the app");
    assert!(fetch("/vcl").contains("answered-by-the-project-vcl"));
    let listed = daemon.cli_ok(&["services", "-p", "news", "-e", "main"]);
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with("cache ") && line.contains("running")),
        "{listed}"
    );
}

/// The newer majors come from Debian 13 (trixie): PostgreSQL 17, MariaDB
/// 11.8 and Redis 8.0 run as asked, no note, and answer as themselves.
#[test]
fn newer_majors_run_from_trixie() {
    let daemon = Daemon::start_with(
        "[deploy]\nstart_timeout_secs = 60\n[services]\nexact_versions = true\n",
    );
    let work = daemon.admin_work("next");
    work.write(
        ".upsun/config.yaml",
        r#"applications:
  app:
    type: "python:3.11"
    relationships:
      postgresql: "pg:postgresql"
      mariadb: "maria:mysql"
      redis: "cache:redis"
    hooks:
      deploy: |
        python3 -c 'import base64, json, os; r = json.loads(base64.b64decode(os.environ["PLATFORM_RELATIONSHIPS"])); print("RELATED", sorted((k, v[0]["type"]) for k, v in r.items()))'
    web:
      commands:
        start: python3 -m http.server "$PORT"
services:
  pg:
    type: postgresql:17
  maria:
    type: mariadb:11.8
  cache:
    type: redis-persistent:8.0
"#,
    );
    work.commit("v1");
    let log = work.push_ok("main", &[]);
    assert!(!log.contains("is not available here"), "{log}");
    assert!(
        log.contains("RELATED [('mariadb', 'mariadb:11.8'), ('postgresql', 'postgresql:17'), ('redis', 'redis-persistent:8.0')]"),
        "{log}"
    );
    let sql = |relationship: &str, statement: &str| {
        daemon.cli_ok(&[
            "sql",
            "-p",
            "next",
            "-e",
            "main",
            "-r",
            relationship,
            "-c",
            statement,
        ])
    };
    let postgresql = sql("postgresql", "SHOW server_version");
    assert!(postgresql.contains(" 17."), "{postgresql}");
    let mariadb = sql("mariadb", "SELECT VERSION() AS v");
    assert!(mariadb.contains("| 11.8."), "{mariadb}");
    let info = daemon.cli_ok(&["redis", "-p", "next", "-e", "main", "--", "INFO", "server"]);
    assert!(info.contains("redis_version:8.0."), "{info}");
    let listed = daemon.cli_ok(&["services", "-p", "next", "-e", "main"]);
    for line in ["pg ", "maria ", "cache "] {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(line) && l.contains("running")),
            "{listed}"
        );
    }
}

/// RabbitMQ as a Symfony-style app uses it: a durable queue on a virtual
/// host from `configuration.vhosts`, reached with the relationship's user
/// (no `guest`), messages surviving a restart of the broker.
fn write_queue_app(work: &Work, links: &str, vhosts: &str, version: &str) {
    work.write(
        ".upsun/config.yaml",
        format!(
            r#"{}    relationships:
      rabbitmq: "queue:rabbitmq"
    hooks:
      deploy: python3 publish.py {version}
    web:
      commands:
        start: python3 -m http.server "$PORT"
services:
  queue:
    type: rabbitmq:3.9
    configuration:
      vhosts: [{vhosts}]
"#,
            app_with_wheels("pika", links)
        ),
    );
    work.write(
        "publish.py",
        r#"import base64, json, os, sys
import pika
c = json.loads(base64.b64decode(os.environ["PLATFORM_RELATIONSHIPS"]))["rabbitmq"][0]
print("relationship:", c["scheme"], c["host"], c["port"], c["username"], c["query"])
def connect(user, password):
    params = pika.ConnectionParameters(
        host=c["host"], port=c["port"], virtual_host="jobs",
        credentials=pika.PlainCredentials(user, password), connection_attempts=1)
    return pika.BlockingConnection(params)
try:
    connect("guest", "guest")
    print("GUEST-LOGGED-IN")
except Exception as error:
    print("guest refused:", type(error).__name__)
connection = connect(c["username"], c["password"])
channel = connection.channel()
channel.confirm_delivery()
channel.queue_declare(queue="deploys", durable=True)
channel.basic_publish(exchange="", routing_key="deploys", body=sys.argv[1],
                      properties=pika.BasicProperties(delivery_mode=2))
depth = channel.queue_declare(queue="deploys", durable=True, passive=True).method.message_count
print("queued messages:", depth)
connection.close()
"#,
    );
    work.commit(version);
}

#[test]
fn rabbitmq_keeps_a_durable_queue_for_the_relationship_user_only() {
    let links = serve(wheels(&["pika"]));
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 60\n");
    let work = daemon.admin_work("jobs");
    write_queue_app(&work, &links, "jobs", "v1");
    let log = work.push_ok("main", &[]);
    assert!(
        log.contains("rabbitmq:3.9 is not available here; running rabbitmq:3.10"),
        "{log}"
    );
    assert!(
        log.contains("relationship: amqp rabbitmq.internal 5672 rabbitmq []"),
        "{log}"
    );
    assert!(log.contains("guest refused:"), "{log}");
    assert!(log.contains("queued messages: 1"), "{log}");
    // A new virtual host restarts the broker; the queue is still there.
    write_queue_app(&work, &links, "jobs, audit", "v2");
    let log = work.push_ok("main", &[]);
    assert!(log.contains("Starting service queue"), "{log}");
    assert!(log.contains("queued messages: 2"), "{log}");
    let listed = daemon.cli_ok(&["services", "-p", "jobs", "-e", "main"]);
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with("queue ") && line.contains("running")),
        "{listed}"
    );
}
