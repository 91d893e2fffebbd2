//! Dedicated build hosts end to end on one machine, all real: Debian's
//! registry, two builders each with its own containerd (own root, state and
//! socket), and the daemon with the test containerd. Builds run on the
//! builders, the app host pulls by digest and serves; a builder killed
//! mid-hook loses its job to the other; join tokens that are forged, expired
//! or pin another daemon are refused, and a builder that reports a digest
//! it did not build is refused with nothing recorded.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use launchway_integration::builders::TestBuilder;
use launchway_integration::registry::TestRegistry;
use launchway_integration::{Daemon, Work, failpoints_bin, http_get, pause, random_hex};

const APP: &str = r#"applications:
  web:
    type: "python:3.11"
    source:
      root: web
    hooks:
      build: |
        echo "hook started on $(hostname)"
        echo run >> "$PLATFORM_CACHE_DIR/runs"
        echo "cached runs: $(wc -l < "$PLATFORM_CACHE_DIR/runs")"
        sleep "$(cat delay 2>/dev/null || echo 0)"
        cp app.py index.html
    web:
      commands:
        start: httpd -f -p $PORT -h /app
routes:
  "http://{default}/":
    type: upstream
    upstream: "web:http"
"#;

/// A daemon with a registry and a builder door.
fn app_host(registry: &TestRegistry) -> Daemon {
    let repository = format!("launchway/it-{}", random_hex());
    let daemon = Daemon::start_with(&format!(
        "{}[builders]\nlisten = \"127.0.0.1:0\"\nlease_secs = 6\n",
        registry.settings(&repository)
    ));
    daemon.use_busybox_runtime("python:3.11");
    daemon
}

fn token(daemon: &Daemon, args: &[&str]) -> String {
    let mut command = vec!["builders", "token"];
    command.extend_from_slice(args);
    daemon.cli_ok(&command).trim().to_owned()
}

/// A builder joined to `daemon`, its `[registry]` credentials its own.
fn builder(daemon: &Daemon, registry: &TestRegistry, name: &str) -> TestBuilder {
    let builder = TestBuilder::start(name, &token(daemon, &[]), &registry.settings("ignored"));
    wait_connected(daemon, name);
    builder
}

fn wait_connected(daemon: &Daemon, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = daemon.cli_ok(&["builders"]);
        if list
            .lines()
            .any(|line| line.starts_with(name) && !line.contains("offline"))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never connected:\n{list}");
        pause();
    }
}

fn serves(daemon: &Daemon, host: &str, body: &str) {
    let page = http_get(daemon.router_addr(), host, "/");
    assert!(
        matches!(&page, Ok((200, text)) if text.contains(body)),
        "expected {body:?}, got {page:?}"
    );
}

fn commit(work: &Work, version: &str, delay: u32) {
    work.write("web/app.py", format!("{version}\n"));
    work.write("web/delay", format!("{delay}\n"));
    work.commit(version);
}

fn newest_build_info(daemon: &Daemon) -> String {
    let list = daemon.cli_ok(&["builds", "-p", "shop", "--limit", "1"]);
    let id = list
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().next())
        .unwrap()
        .to_owned();
    daemon.cli_ok(&["builds", "info", &id])
}

/// Pushes main in a thread (the test watches the builders meanwhile).
fn push_in_background(
    daemon: &Daemon,
    work: &Work,
) -> std::thread::JoinHandle<std::process::Output> {
    let dir = work.dir.clone();
    let ssh = daemon.ssh_command(&daemon.existing_key("alice"));
    std::thread::spawn(move || {
        Work::open(dir)
            .with_ssh(ssh)
            .git(&["push", "launchway", "HEAD:main"])
    })
}

/// Which of `builders` runs a build container (waits for one to).
fn building_on(daemon: &Daemon, builders: [&TestBuilder; 2]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(index) = builders.iter().position(|b| !b.containers().is_empty()) {
            return index;
        }
        assert!(
            Instant::now() < deadline,
            "no builder ran the build:\n{}",
            daemon.log()
        );
        pause();
    }
}

#[test]
fn builds_run_on_builders_and_a_builder_killed_mid_hook_loses_its_build_to_the_other() {
    let registry = TestRegistry::start();
    let daemon = app_host(&registry);
    let mut b1 = builder(&daemon, &registry, "b1");
    let mut b2 = builder(&daemon, &registry, "b2");
    let list = daemon.cli_ok(&["builders"]);
    assert!(list.starts_with("NAME"), "{list}");
    for name in ["b1", "b2"] {
        let row = list.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(row.contains("127.0.0.1:"), "{row}");
    }

    // A push builds on a builder: its log streams into the push, and the
    // build's container runs in that builder's containerd, never here.
    let work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", APP);
    commit(&work, "version 1", 3);
    let push = push_in_background(&daemon, &work);
    let running_on = if building_on(&daemon, [&b1, &b2]) == 0 {
        "b1"
    } else {
        "b2"
    };
    assert!(
        daemon.all_containers().is_empty(),
        "a container ran on the app host during a remote build"
    );
    let out = push.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("Building on builder {running_on}")),
        "{stderr}"
    );
    assert!(stderr.contains("hook started on"), "{stderr}");
    assert!(stderr.contains("cached runs: 1"), "{stderr}");
    assert!(
        stderr.contains("Build cache saved to the registry"),
        "{stderr}"
    );
    serves(&daemon, "main.shop.localhost", "version 1");
    let info = newest_build_info(&daemon);
    assert!(info.contains(&format!("on builder {running_on}")), "{info}");
    // Builders keep no app container and no build image.
    for builder in [&b1, &b2] {
        assert!(
            builder.containers().is_empty(),
            "{:?}",
            builder.containers()
        );
        assert!(
            builder
                .images()
                .iter()
                .all(|image| !image.starts_with("launchway/build/")),
            "{:?}",
            builder.images()
        );
    }

    // The same tree in another environment: reused, built nowhere.
    work.git_ok(&["push", "launchway", "HEAD:feature"]);
    let out = daemon.cli(&["environment", "activate", "-p", "shop", "feature"]);
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Reusing existing build"), "{text}");
    assert!(!text.contains("Building on builder"), "{text}");

    // Killed mid-hook: the other builder builds it, once.
    commit(&work, "version 2", 8);
    let push = push_in_background(&daemon, &work);
    let (killed, other) = if building_on(&daemon, [&b1, &b2]) == 0 {
        b1.kill();
        ("b1", "b2")
    } else {
        b2.kill();
        ("b2", "b1")
    };
    let out = push.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("Builder {killed} was lost during the build")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("Building on builder {other}")),
        "{stderr}"
    );
    // Whichever builder ran version 1, the cache its hook left came along.
    assert!(stderr.contains("cached runs: 2"), "{stderr}");
    serves(&daemon, "main.shop.localhost", "version 2");
    let info = newest_build_info(&daemon);
    assert!(
        info.contains(&format!("on builder {other} (after {killed} was lost)")),
        "{info}"
    );
    let list = daemon.cli_ok(&["builders"]);
    let row = list.lines().find(|l| l.starts_with(killed)).unwrap();
    assert!(row.contains("offline"), "{list}");

    // Silent (stopped, not dead): its lease runs out and the other builds.
    let (mut restarted, mut survivor) = if killed == "b1" { (b1, b2) } else { (b2, b1) };
    restarted.spawn();
    wait_connected(&daemon, killed);
    commit(&work, "version 3", 8);
    let push = push_in_background(&daemon, &work);
    let (frozen, other) = if building_on(&daemon, [&restarted, &survivor]) == 0 {
        (&restarted, &survivor)
    } else {
        (&survivor, &restarted)
    };
    frozen.freeze();
    let out = push.join().unwrap();
    frozen.resume();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Builder {} was lost during the build (no word from it for 6 s)",
            frozen.name
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("Building on builder {}", other.name)),
        "{stderr}"
    );
    serves(&daemon, "main.shop.localhost", "version 3");
    let other = other.name.clone();
    let (b1, b2) = (&mut restarted, &mut survivor);

    // Removed, a builder's credential stops working.
    daemon.cli_ok(&["builders", "remove", &other]);
    let list = daemon.cli_ok(&["builders"]);
    assert!(!list.lines().any(|l| l.starts_with(&other)), "{list}");
    b1.kill();
    b2.kill();
}

#[test]
fn forged_expired_or_misdirected_tokens_and_a_wrong_digest_are_refused() {
    let registry = TestRegistry::start();
    let daemon = app_host(&registry);
    let registry_toml = registry.settings("ignored");
    let refused = |token: &str, expected: &str| {
        let mut builder = TestBuilder::prepare("bad", token, &registry_toml);
        let (status, log) = builder
            .serve_expecting_exit(Duration::from_secs(30))
            .expect("the builder kept running with a bad token");
        assert!(!status.success(), "{log}");
        assert!(log.contains(expected), "{log}");
    };
    let good = token(&daemon, &[]);
    // Another secret.
    let (head, rest) = good.split_once('@').unwrap();
    let forged = format!("{}{}@{rest}", &head[..head.len() - 4], "0000");
    refused(&forged, "the join token is unknown, expired or used up");
    // Another daemon's certificate.
    let (place, _) = good.rsplit_once('/').unwrap();
    let misdirected = format!("{place}/SHA256:{}", "0".repeat(64));
    refused(&misdirected, "not the");
    // Expired.
    let short = token(&daemon, &["--expires", "1s"]);
    #[allow(clippy::disallowed_methods, reason = "the token must expire")]
    std::thread::sleep(Duration::from_secs(2));
    refused(&short, "the join token is unknown, expired or used up");
    let list = daemon.cli_ok(&["builders"]);
    assert_eq!(list.lines().count(), 1, "something was registered:\n{list}");

    // A builder that reports the runtime's digest instead of its build's.
    let mut liar = TestBuilder::prepare("liar", &good, &registry_toml);
    liar.set_failpoint(failpoints_bin(), "builder.wrong_digest");
    liar.spawn();
    wait_connected(&daemon, "liar");
    let work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", APP);
    commit(&work, "version 1", 0);
    let out = work.git(&["push", "launchway", "HEAD:main"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("builder liar reported sha256:"), "{stderr}");
    assert!(
        stderr.contains("which is not the build it was given"),
        "{stderr}"
    );
    let info = newest_build_info(&daemon);
    assert!(info.contains("failed"), "{info}");
    let page = http_get(daemon.router_addr(), "main.shop.localhost", "/");
    assert!(!matches!(&page, Ok((200, _))), "{page:?}");
}
