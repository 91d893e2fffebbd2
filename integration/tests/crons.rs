//! Crons end to end: a schedule firing each minute in the app's
//! container, a run now with `launchway cron run`, a cron overlapping
//! itself (the second start skipped), and a deploy that stops a running
//! cron with its stop command. The runtime is the busybox fixture.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use launchway_integration::{Daemon, pause};

const CONFIG: &str = r#"applications:
  web:
    type: "python:3.11"
    timezone: "Europe/Paris"
    mounts:
      data:
        source: local
        source_path: data
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app
    crons:
      tick:
        spec: "* * * * *"
        commands:
          start: date >> data/ticks; echo "ticks so far $(wc -l < data/ticks)"; cat data/long-stopped 2>/dev/null || true
      long:
        spec: "* * * * *"
        commands:
          start: echo long begins; sleep 300
          stop: echo stopped > data/long-stopped
        shutdown_timeout: 5
      nightly:
        spec: "H 3 * * *"
        cmd: "echo nightly"
routes:
  "http://{default}/": {type: upstream, upstream: "web:http"}
"#;

fn half_a_second() {
    for _ in 0..25 {
        pause();
    }
}

/// `launchway crons` output once `ready` holds, waiting up to `limit`.
fn crons_until(daemon: &Daemon, limit: Duration, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let listed = daemon.cli_ok(&["crons", "-p", "shop", "-e", "main"]);
        if ready(&listed) || Instant::now() > deadline {
            return listed;
        }
        half_a_second();
    }
}

/// The activity of the first run listed under `cron` whose line has
/// every word of `what`.
fn run_of(listed: &str, cron: &str, what: &str) -> Option<String> {
    let section = listed.split(&format!("web:{cron} ")).nth(1)?;
    let section = section.split("\nweb:").next()?;
    section
        .lines()
        .skip(1)
        .find(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            what.split_whitespace().all(|word| words.contains(&word))
        })
        .and_then(|line| line.split_whitespace().next())
        .map(str::to_owned)
}

#[test]
fn crons_run_on_schedule_never_overlap_and_stop_for_a_deploy() {
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 20\nstop_grace_secs = 2\n");
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", CONFIG);
    work.write("index.html", "v1\n");
    work.commit("crons");
    work.push_ok("main", &[]);

    // A run now, on demand.
    let out = daemon.cli(&["cron", "run", "-p", "shop", "-e", "main", "tick"]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("ticks so far 1"), "{log}");
    let listed = daemon.cli_ok(&["crons", "-p", "shop", "-e", "main"]);
    assert!(
        listed.contains("web:nightly  H 3 * * * (Europe/Paris)  echo nightly"),
        "{listed}"
    );
    assert!(run_of(&listed, "tick", "manual").is_some(), "{listed}");

    // The schedule: within the next minute both `* * * * *` crons start.
    let listed = crons_until(&daemon, Duration::from_secs(75), |listed| {
        run_of(listed, "tick", "success  schedule").is_some()
            && run_of(listed, "long", "running  schedule").is_some()
    });
    let tick = run_of(&listed, "tick", "success  schedule")
        .unwrap_or_else(|| panic!("no scheduled tick:\n{listed}"));
    let tick_log = daemon.cli_ok(&["activity", "log", &tick]);
    assert!(tick_log.contains("ticks so far 2"), "{tick_log}");
    let long = run_of(&listed, "long", "running  schedule")
        .unwrap_or_else(|| panic!("no running long cron:\n{listed}"));

    // A minute later `long` is still running: its next start is skipped.
    let deadline = Instant::now() + Duration::from_secs(75);
    let mut long_log = String::new();
    while Instant::now() < deadline {
        long_log = daemon.cli_ok(&["activity", "log", &long]);
        if long_log.contains("Skipped a schedule start") {
            break;
        }
        half_a_second();
    }
    assert!(
        long_log.contains("Skipped a schedule start") && long_log.contains("long begins"),
        "{long_log}"
    );
    let listed = daemon.cli_ok(&["crons", "-p", "shop", "-e", "main"]);
    let long_runs = listed
        .split("web:long ")
        .nth(1)
        .unwrap()
        .split("\nweb:")
        .next()
        .unwrap()
        .lines()
        .filter(|line| line.contains("schedule"))
        .count();
    assert_eq!(long_runs, 1, "one run of long at a time:\n{listed}");

    // A deploy stops the running cron first (its stop command runs).
    work.write("index.html", "v2\n");
    work.commit("v2");
    let deployed = work.push_ok("main", &[]);
    assert!(
        deployed.contains(&format!("Stopping cron web:long (activity {long}) first")),
        "{deployed}"
    );
    let long_log = daemon.cli_ok(&["activity", "log", &long]);
    assert!(
        long_log.contains("Cancelled: stopping the run"),
        "{long_log}"
    );
    let listed = daemon.cli_ok(&["crons", "-p", "shop", "-e", "main"]);
    assert!(
        run_of(&listed, "long", "cancelled").as_deref() == Some(long.as_str()),
        "{listed}"
    );
    let out = daemon.cli(&["cron", "run", "-p", "shop", "-e", "main", "tick"]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let count: usize = log
        .rsplit("ticks so far ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{log}"));
    assert!(count >= 3, "the mount kept the ticks: {log}");
    // The stop command ran in the old container: its file is on the mount.
    assert!(log.contains("stopped"), "{log}");
    let out = daemon.cli(&["cron", "run", "-p", "shop", "-e", "main", "nightly"]);
    assert!(out.status.success());
    let unknown = daemon.cli(&["cron", "run", "-p", "shop", "-e", "main", "weekly"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("has no cron weekly"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}
