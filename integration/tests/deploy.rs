//! Deploys end to end: real git pushes, containerd, the router over HTTP.
//! The runtime is the busybox fixture (its `httpd` serves the app).
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use launchway_integration::{Daemon, Work, http_get as get};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn setup() -> (Daemon, Work) {
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 20\nstop_grace_secs = 2\n");
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    (daemon, work)
}

/// An app served by busybox httpd from `public/`, built from `version`.
fn app_config(start: &str) -> String {
    format!(
        r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        mkdir -p public
        cp version public/index.html
      deploy: |
        echo "deploy hook ran for $PLATFORM_APPLICATION_NAME on $PLATFORM_BRANCH ($PLATFORM_ENVIRONMENT_TYPE)"
        date >> data/deploys
        echo "deploys so far: $(wc -l < data/deploys)"
        if touch /app/outside-mounts 2>/dev/null; then echo ROOTFS-WRITABLE; else echo ROOTFS-READONLY; fi
        echo "interfaces: $(ip -o link | cut -d: -f2 | cut -d@ -f1 | tr -d ' ' | sort | tr '\n' ' ')"
        if (printf 'GET /health HTTP/1.0\r\n\r\n'; sleep 1) | nc -w 2 127.0.0.1 "$LW_HOST_PORT" 2>/dev/null | grep -q 200; then echo HOST-REACHED; else echo HOST-UNREACHABLE; fi
        echo "self: $( (printf 'GET / HTTP/1.0\r\n\r\n'; sleep 1) | nc -w 2 127.0.0.1 "$PORT" | tail -n 1)"
    mounts:
      data:
        source: local
        source_path: data
      scratch:
        source: tmp
    variables:
      env:
        LW_HOST_PORT: "__ROUTER_PORT__"
    web:
      commands:
        start: {start}
"#
    )
}

const SERVE: &str = "echo web starting; exec httpd -f -vv -p 127.0.0.1:$PORT -h /app/public";

fn write_app(daemon: &Daemon, work: &Work, version: &str, start: &str) {
    let config =
        app_config(start).replace("__ROUTER_PORT__", &daemon.router_addr().port().to_string());
    work.write(".upsun/config.yaml", config);
    work.write("version", format!("{version}\n"));
    work.commit(version);
}

const HOST: &str = "main.shop.localhost";

#[test]
fn a_push_serves_its_commit_with_persistent_mounts_and_an_isolated_network() {
    let (daemon, work) = setup();
    let router = daemon.router_addr();
    write_app(&daemon, &work, "v1", SERVE);
    let log = work.push_ok("main", &[]);
    assert!(
        log.contains("Executing deploy hook for application web"),
        "{log}"
    );
    assert!(
        log.contains("deploy hook ran for web on main (production)"),
        "{log}"
    );
    assert!(log.contains("deploys so far: 1"), "{log}");
    assert!(log.contains("ROOTFS-READONLY"), "{log}");
    // Loopback and its link to the environment network, nothing else.
    assert!(log.contains("interfaces: eth0 lo "), "{log}");
    assert!(log.contains("HOST-UNREACHABLE"), "{log}");
    // The probe works in the container (it reaches the app itself), and
    // the router does answer on the host's loopback at that port.
    assert!(log.contains("self: v1"), "{log}");
    assert_eq!(get(router, "127.0.0.1", "/health").unwrap().0, 200);
    let url = format!("http://{HOST}:{}/", router.port());
    assert!(
        log.contains(&format!("{url} is served by application `web`")),
        "{log}"
    );
    assert_eq!(get(router, HOST, "/").unwrap(), (200, "v1\n".into()));
    // The mount is a host directory that outlives containers.
    let deploys = std::fs::read_dir(daemon.data_dir().join("environments"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("volumes/web/data/deploys"))
        .find(|p| p.exists())
        .expect("the data mount on the host");

    write_app(&daemon, &work, "v2", SERVE);
    let log = work.push_ok("main", &[]);
    assert!(log.contains("deploys so far: 2"), "{log}");
    assert_eq!(get(router, HOST, "/").unwrap(), (200, "v2\n".into()));
    assert_eq!(
        std::fs::read_to_string(&deploys).unwrap().lines().count(),
        2
    );

    // A push with nothing new still deploys (Platform.sh redeploy semantics).
    let out = work.git(&["commit", "--allow-empty", "-m", "again"]);
    assert!(out.status.success());
    let log = work.push_ok("main", &[]);
    assert!(log.contains("Reusing existing build"), "{log}");
    assert!(log.contains("deploys so far: 3"), "{log}");

    // Another environment: its own namespace, its own app on the same port,
    // a copy of main's data (three deploys) to which its own is added.
    work.write("version", "other\n");
    work.commit("other");
    let out = work.push("other", &["environment.status=active"]);
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("self: other"), "{log}");
    assert!(log.contains("deploys so far: 4"), "{log}");
    assert_eq!(
        get(router, "other.shop.localhost", "/").unwrap(),
        (200, "other\n".into())
    );
    assert_eq!(get(router, HOST, "/").unwrap(), (200, "v2\n".into()));

    let logs = daemon.cli_ok(&["logs", "-p", "shop", "-e", "main", "web"]);
    assert!(logs.contains("web starting"), "{logs}");
    let missing = daemon.cli(&["logs", "-p", "shop", "-e", "main", "nope"]);
    assert!(!missing.status.success());

    // Apps outlive the daemon; a restarted one serves them again at once.
    let mut daemon = daemon;
    daemon.stop();
    daemon.spawn();
    assert_eq!(
        get(daemon.router_addr(), HOST, "/").unwrap(),
        (200, "v2\n".into())
    );
}

#[test]
fn an_app_that_crashes_on_start_fails_the_push_and_the_previous_release_serves() {
    let (daemon, work) = setup();
    let router = daemon.router_addr();
    write_app(&daemon, &work, "v1", SERVE);
    work.push_ok("main", &[]);
    write_app(&daemon, &work, "v2", "echo about to fail; exit 3");
    let out = work.push("main", &[]);
    let log = text(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("exited with status 3"), "{log}");
    assert!(
        log.contains("about to fail"),
        "the app's output is shown:\n{log}"
    );
    assert!(log.contains("is serving again"), "{log}");
    assert_eq!(get(router, HOST, "/").unwrap(), (200, "v1\n".into()));

    // Two releases: the failed one and the one serving again.
    let listed = daemon.cli_ok(&["releases", "-p", "shop", "-e", "main"]);
    let rows: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    assert!(
        rows[0].contains("failed") && rows[0].contains("v2"),
        "{listed}"
    );
    assert!(
        rows[1].contains("active *") && rows[1].contains("v1"),
        "{listed}"
    );
    let id = rows[1].split_whitespace().next().unwrap();
    let info = daemon.cli_ok(&["releases", "info", id]);
    assert!(info.contains("port 8888") && info.contains("web"), "{info}");
    assert!(info.contains(&format!("route http://{HOST}:")), "{info}");
    assert!(
        !daemon
            .cli(&["releases", "info", "RNOSUCH0000"])
            .status
            .success()
    );
}

#[test]
fn requests_through_ten_deploys_never_fail_and_held_ones_reach_the_new_version() {
    let (daemon, work) = setup();
    let router = daemon.router_addr();
    write_app(&daemon, &work, "v0", SERVE);
    work.push_ok("main", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen: Vec<u32> = Vec::new();
                let mut failures: Vec<String> = Vec::new();
                let mut after_stop = 0;
                loop {
                    if stop.load(Ordering::SeqCst) {
                        after_stop += 1;
                        if seen.last() == Some(&10) || after_stop > 100 {
                            break;
                        }
                    }
                    match get(router, HOST, "/") {
                        Ok((200, body)) => match body.trim().strip_prefix('v') {
                            Some(n) => seen.push(n.parse().unwrap_or(u32::MAX)),
                            None => failures.push(format!("body {body:?}")),
                        },
                        Ok((status, body)) => failures.push(format!("{status} {body}")),
                        Err(error) => failures.push(error.to_string()),
                    }
                }
                (seen, failures)
            })
        })
        .collect();
    for version in 1..=10 {
        write_app(&daemon, &work, &format!("v{version}"), SERVE);
        work.push_ok("main", &[]);
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        let (seen, failures) = client.join().unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        assert!(seen.len() > 20, "too few requests: {}", seen.len());
        assert!(seen.iter().all(|v| *v <= 10), "unknown versions: {seen:?}");
        // One client's requests are sequential: versions never go back.
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "a response came from an older version after a newer one: {seen:?}"
        );
        assert_eq!(seen.last(), Some(&10));
    }
}

#[test]
fn workers_environment_file_tmp_mounts_and_hook_failures() {
    let (daemon, work) = setup();
    let router = daemon.router_addr();
    let config = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        mkdir -p public
        echo built > public/index.html
      deploy: |
        echo "greeting: $GREETING"
        echo "tmp entries: $(ls scratch | wc -l)"
        touch scratch/leftover
        echo "routes: $(echo "$PLATFORM_ROUTES" | base64 -d)"
        exit 1
      post_deploy: echo "post_deploy ran with $GREETING"
    mounts:
      scratch:
        source: tmp
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
    workers:
      queue:
        commands:
          start: echo "worker up $GREETING"; sleep 1; exit 4
"#;
    work.write(".upsun/config.yaml", config);
    work.write(".environment", "export GREETING=\"from .environment\"\n");
    work.commit("workers");
    for round in 0..2 {
        if round > 0 {
            work.git_ok(&["commit", "--allow-empty", "-m", "again"]);
        }
        let log = work.push_ok("main", &[]);
        assert!(log.contains("greeting: from .environment"), "{log}");
        assert!(log.contains("tmp entries: 0"), "round {round}: {log}");
        assert!(
            log.contains("the deploy hook of application web failed; the deploy goes on"),
            "{log}"
        );
        assert!(
            log.contains("post_deploy ran with from .environment"),
            "{log}"
        );
        assert!(log.contains("\"type\":\"upstream\""), "{log}");
        assert_eq!(get(router, HOST, "/").unwrap(), (200, "built\n".into()));
    }
    // The worker runs in its own container and is restarted when it exits.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let logs = daemon.cli_ok(&["logs", "-p", "shop", "-e", "main"]);
        let ups = logs
            .matches("[web/worker-queue] worker up from .environment")
            .count();
        if ups >= 2 && logs.contains("exited with status 4; restarting") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{logs}");
        launchway_integration::pause();
    }
}

/// Every variable and file Upsun gives an app and its build, read from
/// inside them: build-only ones in the build hook, runtime ones in the
/// deploy hook and in the web process, `/run/config.json` as a file.
#[test]
fn upsun_provided_variables_and_run_config_reach_the_build_and_the_app() {
    // The real python:3.11 image: its locations put nginx in front.
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 60\nstop_grace_secs = 2\n");
    let work = daemon.admin_work("shop");
    let config = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        mkdir -p public
        echo "BUILD CI=$CI VENDOR=$PLATFORM_VENDOR OUTPUT=$PLATFORM_OUTPUT_DIR ENTROPY=$PLATFORM_PROJECT_ENTROPY"
        echo "BUILD has-branch=${PLATFORM_BRANCH+yes} has-smtp=${PLATFORM_SMTP_HOST+yes}"
      deploy: |
        echo "RUN ENTROPY=$PLATFORM_PROJECT_ENTROPY SMTP=[${PLATFORM_SMTP_HOST-unset}] ROOT=$PLATFORM_DOCUMENT_ROOT"
        echo "RUN PRE=[$PLATFORM_PRE_APP_COMMAND] APP=[$PLATFORM_APP_COMMAND] POST=[$PLATFORM_POST_APP_COMMAND]"
        echo "RUN has-ci=${CI+yes} has-output=${PLATFORM_OUTPUT_DIR+yes}"
        echo "RUN CONFIG $(cat /run/config.json)"
    web:
      locations:
        "/":
          root: public
          passthru: true
      commands:
        pre_start: echo warming
        start: exec python3 -m http.server $PORT --bind 127.0.0.1 --directory /app/public
        post_start: "true"
"#;
    work.write(".upsun/config.yaml", config);
    work.commit("variables");
    let log = work.push_ok("main", &[]);
    let entropy = log
        .split("BUILD CI=true VENDOR=upsun OUTPUT=/app ENTROPY=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no build variables in:\n{log}"))
        .to_owned();
    assert_eq!(entropy.len(), 56, "{entropy}");
    assert!(
        log.contains("BUILD has-branch= has-smtp="),
        "runtime-only variables stay out of the build: {log}"
    );
    assert!(
        log.contains(&format!("RUN ENTROPY={entropy} SMTP=[] ROOT=/app/public")),
        "{log}"
    );
    assert!(
        log.contains(
            "RUN PRE=[echo warming] APP=[exec python3 -m http.server $PORT --bind 127.0.0.1 --directory /app/public] POST=[true]"
        ),
        "{log}"
    );
    assert!(log.contains("RUN has-ci= has-output="), "{log}");
    let config_line = log
        .lines()
        .find_map(|line| line.split("RUN CONFIG ").nth(1))
        .unwrap_or_else(|| panic!("{log}"));
    let run_config: serde_json::Value = serde_json::from_str(config_line).unwrap();
    assert_eq!(run_config["info"]["application"], "web");
    assert_eq!(run_config["info"]["project"], "shop");
    let routes = run_config["routes"].as_object().expect("routes");
    assert!(
        routes.values().any(|route| route["upstream"] == "web"),
        "{run_config}"
    );
    // The same project keeps its entropy in every environment.
    let branch = work.push_ok("dev", &["environment.status=active"]);
    assert!(
        branch.contains(&format!("RUN ENTROPY={entropy} ")),
        "{branch}"
    );
}

/// An app nothing routes to and nothing relates to (a helper running
/// `sleep`) deploys without accepting connections; one whose start command
/// exits deploys with a warning. The routed app must still answer.
#[test]
fn apps_nothing_calls_only_have_to_run() {
    let (daemon, work) = setup();
    let config = |helper_start: &str| {
        format!(
            r#"routes:
  "http://{{default}}/": {{type: upstream, upstream: "web:http"}}
applications:
  web:
    type: "python:3.11"
    source:
      root: web
    hooks:
      build: mkdir -p public && echo served > public/index.html
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
  helper:
    type: "python:3.11"
    source:
      root: helper
    web:
      commands:
        start: {helper_start}
"#
        )
    };
    work.write("web/.keep", "");
    work.write("helper/.keep", "");
    work.write(".upsun/config.yaml", config("exec sleep 100000"));
    work.commit("sleeping helper");
    let log = work.push_ok("main", &[]);
    assert!(!log.contains("W: app 'helper'"), "{log}");
    assert_eq!(
        get(daemon.router_addr(), HOST, "/").unwrap(),
        (200, "served\n".into())
    );
    work.write(".upsun/config.yaml", config("echo giving up; exit 3"));
    work.commit("failing helper");
    let log = work.push_ok("main", &[]);
    assert!(
        log.contains("W: app 'helper' exited with status 3; nothing sends it requests"),
        "{log}"
    );
    // A routed app that never listens still fails its deploy.
    work.write(
        ".upsun/config.yaml",
        config("exec sleep 100000").replace(
            "exec httpd -f -p 127.0.0.1:$PORT -h /app/public",
            "exec sleep 100000",
        ),
    );
    work.commit("web that never listens");
    let out = work.push("main", &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("app 'web' did not accept connections"),
        "{}",
        text(&out.stderr)
    );
}

/// Old and new never run side by side, even though the next release's
/// containers are created before requests are held: each process appends
/// `start vN` when it starts and `stop vN` when it is told to stop, to a
/// persistent mount, and across five deploys each file alternates strictly.
/// The worker takes a moment to shut down, as real ones do: a second SIGTERM
/// in that moment would run its trap twice (it did, when containerd and the
/// supervisor both signalled every process).
#[test]
fn old_and_new_processes_never_run_side_by_side() {
    let (daemon, work) = setup();
    let config = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        mkdir -p public
        cp version public/index.html
      deploy: |
        echo "LIFE web: $(tr '\n' ',' < data/web)"
        echo "LIFE queue: $(tr '\n' ',' < data/queue)"
    mounts:
      data:
        source: local
        source_path: data
    web:
      commands:
        start: |
          v=$(cat /app/version)
          echo "start $v" >> /app/data/web
          httpd -f -p 127.0.0.1:$PORT -h /app/public &
          server=$!
          trap 'echo "stop $v" >> /app/data/web; kill $server; exit 0' TERM
          wait $server
    workers:
      queue:
        commands:
          start: |
            v=$(cat /app/version)
            echo "start $v" >> /app/data/queue
            trap 'echo "stop $v" >> /app/data/queue; sleep 0.3; exit 0' TERM
            while :; do sleep 1 & wait $!; done
"#;
    work.write(".upsun/config.yaml", config);
    let mut last = String::new();
    for version in 0..=5 {
        work.write("version", format!("v{version}\n"));
        work.commit(&format!("v{version}"));
        last = work.push_ok("main", &[]);
        let (status, body) = get(daemon.router_addr(), HOST, "/").unwrap();
        assert_eq!((status, body.trim()), (200, format!("v{version}").as_str()));
    }
    for process in ["web", "queue"] {
        let prefix = format!("LIFE {process}: ");
        let line = last
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix} line in:\n{last}"));
        let events: Vec<&str> = line.split(',').filter(|e| !e.is_empty()).collect();
        let mut expected = Vec::new();
        for version in 0..5 {
            expected.push(format!("start v{version}"));
            expected.push(format!("stop v{version}"));
        }
        expected.push("start v5".into());
        assert_eq!(events, expected, "{process}: {line}");
    }
}
