//! The image plane end to end on one host: a real registry (Debian's
//! `docker-registry`, TLS and htpasswd), real pushes, real containerd.
//! Builds are published by digest; a release whose image the local gc took
//! is pulled back before its deploy holds anything; a second daemon sharing
//! the repository reuses a build without running its hook; a registry that
//! is down or sends corrupt content fails the push and the old release
//! serves on.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use launchway_integration::registry::TestRegistry;
use launchway_integration::{Daemon, Work, http_get, random_hex};

const APP: &str = r#"applications:
  web:
    type: "python:3.11"
    source:
      root: web
    hooks:
      build: |
        echo "hook ran for $(cat app.py)"
        cp app.py index.html
    web:
      commands:
        start: httpd -f -p $PORT -h /app
routes:
  "http://{default}/":
    type: upstream
    upstream: "web:http"
"#;

fn push(work: &Work, version: &str) -> std::process::Output {
    work.write("web/app.py", format!("{version}\n"));
    work.commit(version);
    work.git(&["push", "launchway", "HEAD:main"])
}

fn push_ok(work: &Work, version: &str) -> String {
    let out = push(work, version);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "push of {version}:\n{stderr}");
    stderr
}

fn serves(daemon: &Daemon, project: &str, body: &str) {
    let host = format!("main.{project}.localhost");
    let page = http_get(daemon.router_addr(), &host, "/");
    assert!(
        matches!(&page, Ok((200, text)) if text.contains(body)),
        "expected {body:?}, got {page:?}"
    );
}

/// The IMAGE column of `builds info`: the digest of each app's build.
fn build_digest(daemon: &Daemon, project: &str) -> String {
    let newest = daemon.cli_ok(&["builds", "-p", project, "--limit", "1"]);
    let id = newest
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().next())
        .unwrap()
        .to_owned();
    let info = daemon.cli_ok(&["builds", "info", &id]);
    info.split_whitespace()
        .find(|word| word.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in:\n{info}"))
        .to_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn builds_are_published_by_digest_and_a_collected_release_is_pulled_back_before_it_deploys() {
    let registry = TestRegistry::start();
    let repository = format!("launchway/it-{}", random_hex());
    let daemon = Daemon::start_with(&format!(
        "{}[build]\nkeep_builds = 1\n",
        registry.settings(&repository)
    ));
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", APP);

    let first = push_ok(&work, "version 1");
    assert!(first.contains("Published to the registry"), "{first}");
    serves(&daemon, "shop", "version 1");
    let digest = build_digest(&daemon, "shop");

    // The registry names that very manifest, byte for byte what containerd holds.
    let client = launchway_registry::Registry::new(registry.config(&repository)).unwrap();
    let tags = runtime().block_on(client.tags()).unwrap();
    let build_tags: Vec<&String> = tags.iter().filter(|t| t.starts_with("build-")).collect();
    assert_eq!(build_tags.len(), 1, "{tags:?}");
    let named = runtime()
        .block_on(client.manifest_digest(build_tags[0]))
        .unwrap();
    assert_eq!(named.as_deref(), Some(digest.as_str()));

    // Two more versions: gc (keep_builds = 1) removes version 1's image here.
    push_ok(&work, "version 2");
    push_ok(&work, "version 3");
    let releases = daemon.cli_ok(&["releases", "-p", "shop", "-e", "main", "--limit", "10"]);
    let oldest = releases
        .lines()
        .last()
        .and_then(|line| line.split_whitespace().next())
        .unwrap()
        .to_owned();
    let out = daemon.cli(&["releases", "promote", &oldest]);
    assert!(
        out.status.success(),
        "promote {oldest}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serves(&daemon, "shop", "version 1");
    assert!(
        daemon
            .log()
            .contains("release image pulled from the registry"),
        "the promotion did not need the registry: gc kept the image"
    );
}

#[test]
fn a_registry_that_is_down_fails_the_push_clearly_and_the_old_release_serves() {
    let mut registry = TestRegistry::start();
    let repository = format!("launchway/it-{}", random_hex());
    let daemon = Daemon::start_with(&registry.settings(&repository));
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", APP);
    push_ok(&work, "version 1");

    registry.stop();
    let out = push(&work, "version 2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the push succeeded:\n{stderr}");
    assert!(
        stderr.contains(registry.url()) && stderr.contains("does not answer"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the serving release is unchanged"),
        "{stderr}"
    );
    assert!(!stderr.contains("hook ran"), "it built anyway:\n{stderr}");
    serves(&daemon, "shop", "version 1");

    registry.restart();
    let again = push_ok(&work, "version 3");
    assert!(again.contains("Published to the registry"), "{again}");
    serves(&daemon, "shop", "version 3");
}

#[test]
fn a_second_daemon_reuses_the_registrys_build_and_refuses_a_corrupt_one() {
    let registry = TestRegistry::start();
    let repository = format!("launchway/it-{}", random_hex());
    let settings = registry.settings(&repository);
    let first = Daemon::start_with(&settings);
    first.use_busybox_runtime("python:3.11");
    let work = first.admin_work("shop");
    work.write(".upsun/config.yaml", APP);
    let out = push_ok(&work, "version 1");
    assert!(out.contains("hook ran for version 1"), "{out}");
    let digest = build_digest(&first, "shop");

    // Another daemon (its own containerd namespace, same repository): the
    // same tree is not built again.
    let second = Daemon::start_with(&settings);
    second.use_busybox_runtime("python:3.11");
    let other = second.admin_work("shop");
    other.write(".upsun/config.yaml", APP);
    let reused = push_ok(&other, "version 1");
    assert!(reused.contains("Reusing the registry's build"), "{reused}");
    assert!(!reused.contains("hook ran"), "{reused}");
    assert_eq!(build_digest(&second, "shop"), digest);
    serves(&second, "shop", "version 1");

    // A layer whose stored bytes changed is refused by its digest.
    work.write("web/app.py", "version 2\n");
    work.commit("version 2");
    push_ok(&work, "version 2");
    let client = launchway_registry::Registry::new(registry.config(&repository)).unwrap();
    let manifest = runtime()
        .block_on(client.manifest_get(&build_digest(&first, "shop")))
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
    let top = parsed["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let hex = top.trim_start_matches("sha256:");
    let data = registry
        .root()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let refused = push(&other, "version 2");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains(&top), "{stderr}");
    serves(&second, "shop", "version 1");
}

#[test]
fn a_registry_answering_garbage_is_refused_and_nothing_is_deployed() {
    // Answers everything with 200: manifests that are not manifests, and
    // text for the rest.
    let port = launchway_integration::serve_http(|path| {
        if path.contains("/manifests/") {
            Some((
                "application/vnd.oci.image.manifest.v1+json",
                b"{\"schemaVersion\": 2, \"config\": garbage".to_vec(),
            ))
        } else {
            Some(("text/plain", b"garbage".to_vec()))
        }
    });
    let daemon = Daemon::start_with(&format!(
        "[registry]\nurl = \"http://127.0.0.1:{port}\"\nrepository = \"launchway/garbage\"\n"
    ));
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", APP);
    let out = push(&work, "version 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("not JSON"), "{stderr}");
    assert!(!stderr.contains("hook ran"), "{stderr}");
    let releases = daemon.cli_ok(&["releases", "-p", "shop", "-e", "main"]);
    assert!(
        releases.lines().count() <= 1,
        "a release was recorded:\n{releases}"
    );
    let page = http_get(daemon.router_addr(), "main.shop.localhost", "/");
    assert!(!matches!(&page, Ok((200, _))), "{page:?}");
}

#[test]
fn registry_tags_follow_the_history_retention_keeps() {
    let registry = TestRegistry::start();
    let repository = format!("launchway/it-{}", random_hex());
    let daemon = Daemon::start_with(&format!(
        "{}[retention]\nactivities_days = 0\nreleases_per_environment = 1\nbuild_logs_days = 0\ninterval_secs = 1\n[build]\nkeep_builds = 1\n",
        registry.settings(&repository)
    ));
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", APP);
    let client = launchway_registry::Registry::new(registry.config(&repository)).unwrap();
    let build_tags = || -> Vec<String> {
        runtime()
            .block_on(client.tags())
            .unwrap()
            .into_iter()
            .filter(|tag| tag.starts_with("build-"))
            .collect()
    };
    for version in 1..=4 {
        push_ok(&work, &format!("version {version}"));
    }
    assert!(build_tags().len() >= 2, "{:?}", build_tags());
    let newest = build_digest(&daemon, "shop");
    // The serving release and the one it rolls back to keep theirs; the
    // others go once retention removed their records.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while build_tags().len() > 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "tags stayed: {:?}\n{}",
            build_tags(),
            daemon.log()
        );
        launchway_integration::pause();
    }
    let serving: Vec<Option<String>> = build_tags()
        .iter()
        .map(|tag| runtime().block_on(client.manifest_digest(tag)).unwrap())
        .collect();
    assert!(serving.contains(&Some(newest)), "{serving:?}");
    serves(&daemon, "shop", "version 4");
}
