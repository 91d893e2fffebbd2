//! Containment (issue 8): builds and apps try to escape, and must fail.
//! Each probe prints `PROBE <name>: <what happened>`; the test reads the
//! push log. The runtime is the busybox fixture (its applets are the tools).
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use launchway_integration::{Daemon, Work};

/// Probes that must be refused, in the build hook and in the deploy hook.
const PROBES: &str = r#"
        probe() { name=$1; shift; if out=$("$@" 2>&1); then echo "PROBE $name: ALLOWED $out"; else echo "PROBE $name: refused: $out"; fi; }
        probe chown-root sh -c 'touch /tmp/f && chown 0:0 /tmp/f'
        probe mount mount -t tmpfs none /tmp
        probe mknod mknod /tmp/mem c 1 1
        probe user-namespace unshare -r true
        probe net-namespace unshare -n true
        probe chroot chroot / true
        probe write-etc touch /etc/escape
        probe sysrq sh -c 'echo h > /proc/sysrq-trigger'
        probe data-dir ls __DATA_DIR__
        probe network sh -c 'nc -w 2 1.1.1.1 80 </dev/null'
        echo "PROBE other-data: found $(find / -name 'marker-*' 2>/dev/null | grep -v -e "marker-cache-$PLATFORM_PROJECT" -e "marker-$PLATFORM_PROJECT-" | wc -l)"
"#;

fn config(data_dir: &str) -> String {
    let probes = PROBES.replace("__DATA_DIR__", data_dir);
    format!(
        r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        mkdir -p public data
        echo ok > public/index.html
        echo secret > "$PLATFORM_CACHE_DIR/marker-cache-$PLATFORM_PROJECT"
        echo "PROBE phase: build"{probes}
      deploy: |
        echo secret > "data/marker-$PLATFORM_PROJECT-$PLATFORM_BRANCH"
        echo "PROBE phase: deploy"{probes}
        probe write-app touch /app/escape
    mounts:
      data:
        source: local
        source_path: data
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
"#
    )
}

fn push_project(daemon: &Daemon, project: &str, branch: &str, options: &[&str]) -> String {
    let key = daemon.key(&format!("key-{project}"), project, "admin");
    let work =
        Work::init(daemon.scratch(&format!("work-{project}"))).with_ssh(daemon.ssh_command(&key));
    let remote = format!("ssh://git@127.0.0.1:{}/{project}.git", daemon.port);
    work.git_ok(&["remote", "add", "launchway", &remote]);
    work.write(
        ".upsun/config.yaml",
        config(&daemon.data_dir().display().to_string()),
    );
    work.commit("probe");
    work.push_ok(branch, options)
}

/// `(name, result)` of every probe line in `log`.
fn probes(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|line| line.trim().strip_prefix("PROBE "))
        .filter_map(|rest| rest.split_once(": "))
        .map(|(name, result)| (name.to_owned(), result.to_owned()))
        .collect()
}

fn assert_contained(log: &str, phase: &str) {
    let all = probes(log);
    let start = all
        .iter()
        .position(|(name, result)| name == "phase" && result == phase)
        .unwrap_or_else(|| panic!("no {phase} probes:\n{log}"));
    let mut tried = 0;
    for (name, result) in all[start + 1..]
        .iter()
        .take_while(|(name, _)| name != "phase")
    {
        tried += 1;
        match name.as_str() {
            "other-data" => assert_eq!(result, "found 0", "{phase}: {name}\n{log}"),
            _ => assert!(
                result.starts_with("refused:"),
                "{phase}: escape `{name}` was allowed: {result}\n{log}"
            ),
        }
    }
    assert!(tried >= 10, "{phase}: only {tried} probes ran:\n{log}");
}

#[test]
fn builds_and_apps_cannot_escape_or_see_each_other() {
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 20\nstop_grace_secs = 2\n");
    daemon.use_busybox_runtime("python:3.11");
    daemon.project("alpha");
    daemon.project("beta");
    let alpha = push_project(&daemon, "alpha", "main", &[]);
    assert_contained(&alpha, "build");
    assert_contained(&alpha, "deploy");
    // Another project: its build cannot see alpha's cache, its app cannot
    // see alpha's data.
    let beta = push_project(&daemon, "beta", "main", &[]);
    assert_contained(&beta, "build");
    assert_contained(&beta, "deploy");
    assert!(
        beta.contains("PROBE write-app: refused:") && beta.contains("Read-only"),
        "{beta}"
    );
}

const LIMIT_PROBES: &str = r#"
        probe() { name=$1; shift; if out=$("$@" 2>&1); then echo "PROBE $name: ALLOWED $out"; else echo "PROBE $name: refused: $(echo "$out" | tail -n 1)"; fi; }
        probe pids sh -c 'for i in $(seq 200); do sleep 3 & done; wait'
        probe memory awk 'BEGIN { s = "x"; while (length(s) < 400000000) s = s s; print length(s) }'
"#;

#[test]
fn fork_bombs_and_memory_hogs_hit_their_limits() {
    let daemon = Daemon::start_with(
        "[build]\nmemory_mib = 64\npids = 64\n[deploy]\nmemory_mib = 64\npids = 64\nstart_timeout_secs = 20\nstop_grace_secs = 2\n",
    );
    daemon.use_busybox_runtime("python:3.11");
    daemon.project("hog");
    let key = daemon.key("key-hog", "hog", "admin");
    let work = Work::init(daemon.scratch("work-hog")).with_ssh(daemon.ssh_command(&key));
    let remote = format!("ssh://git@127.0.0.1:{}/hog.git", daemon.port);
    work.git_ok(&["remote", "add", "launchway", &remote]);
    work.write(
        ".upsun/config.yaml",
        format!(
            r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        mkdir -p public
        echo ok > public/index.html
        echo "PROBE phase: build"{LIMIT_PROBES}
      deploy: |
        echo "PROBE phase: deploy"{LIMIT_PROBES}
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
"#
        ),
    );
    work.commit("hogs");
    let log = work.push_ok("main", &[]);
    for phase in ["build", "deploy"] {
        let all = probes(&log);
        let start = all
            .iter()
            .position(|(name, result)| name == "phase" && result == phase)
            .unwrap_or_else(|| panic!("no {phase} probes:\n{log}"));
        let tried: Vec<&(String, String)> = all[start + 1..]
            .iter()
            .take_while(|(name, _)| name != "phase")
            .collect();
        assert_eq!(tried.len(), 2, "{phase}:\n{log}");
        for (name, result) in tried {
            assert!(
                result.starts_with("refused:"),
                "{phase}: `{name}` was not limited: {result}\n{log}"
            );
        }
    }
    // The host and the daemon are fine.
    daemon.cli_ok(&["activities", "-p", "hog"]);
}
