//! Builds end to end: real pushes over OpenSSH, real containerd. The
//! `python:3.11` runtime is the busybox fixture, so hooks run in `sh`.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use launchway_containerd::Engine;
use launchway_integration::{Daemon, Work, containerd_socket, launchway_bin, pause};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A daemon with busybox as `python:3.11`, project `shop` and an admin key.
fn setup_with(extra: &str) -> (Daemon, Work) {
    let daemon = Daemon::start_with(extra);
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    (daemon, work)
}

fn push(work: &Work) -> Output {
    work.git(&["push", "launchway", "HEAD:main"])
}

/// `push` on another thread (as alice), to act on the daemon meanwhile.
fn push_in_background(daemon: &Daemon, work: &Work) -> std::thread::JoinHandle<Output> {
    let dir = work.dir.clone();
    let ssh = daemon.ssh_command(&daemon.existing_key("alice"));
    std::thread::spawn(move || push(&Work::open(dir).with_ssh(ssh)))
}

fn push_ok(work: &Work) -> String {
    let out = push(work);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "push failed:\n{stderr}");
    stderr
}

/// Two apps; each hook counts its runs in the build cache and leaves a file.
fn two_apps(start: &str) -> String {
    format!(
        r#"applications:
  web:
    type: "python:3.11"
    source:
      root: web
    hooks:
      build: |
        echo "built $PLATFORM_APPLICATION_NAME at $PLATFORM_TREE_ID"
        echo run >> "$PLATFORM_CACHE_DIR/runs"
        echo "cache runs: $(wc -l < "$PLATFORM_CACHE_DIR/runs")"
        echo hello > built.txt
    web:
      commands:
        start: {start}
  api:
    type: "python:3.11"
    source:
      root: api
    hooks:
      build: echo run >> "$PLATFORM_CACHE_DIR/runs"
    web:
      commands:
        start: httpd -f -p $PORT -h /app
"#
    )
}

/// How many times an app's build hook ran (its cache file on the host).
fn hook_runs(daemon: &Daemon, app: &str) -> usize {
    std::fs::read_to_string(
        daemon
            .data_dir()
            .join("build-cache/shop")
            .join(app)
            .join("runs"),
    )
    .map(|t| t.lines().count())
    .unwrap_or(0)
}

/// The build ids of `shop`, newest first, with their status.
fn builds(daemon: &Daemon) -> Vec<(String, String)> {
    daemon
        .cli_ok(&["builds", "-p", "shop"])
        .lines()
        .skip(1)
        .map(|line| {
            let mut cells = line.split_whitespace();
            (
                cells.next().unwrap().to_owned(),
                cells.next().unwrap().to_owned(),
            )
        })
        .collect()
}

/// An app's image digest in `builds info`.
fn app_digest(info: &str, app: &str) -> String {
    info.lines()
        .find(|l| l.starts_with(&format!("{app} ")))
        .and_then(|l| l.split_whitespace().find(|c| c.starts_with("sha256:")))
        .unwrap_or_else(|| panic!("no digest for {app} in:\n{info}"))
        .to_owned()
}

async fn engine_of(daemon: &Daemon) -> Engine {
    let socket = containerd_socket().expect("LAUNCHWAY_CONTAINERD_SOCKET (run through make test)");
    Engine::connect(
        &socket,
        &daemon.containerd_namespace().unwrap(),
        &daemon.scratch("engine"),
    )
    .await
    .unwrap()
}

/// No build containers or tasks left behind in the daemon's namespace
/// (deployed apps' containers aside).
fn assert_nothing_running(daemon: &Daemon) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = engine_of(daemon).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let apps = engine.app_containers(None).await.unwrap();
            let containers: Vec<String> = engine
                .list_containers()
                .await
                .unwrap()
                .into_iter()
                .filter(|c| !apps.contains(c))
                .collect();
            let tasks: Vec<String> = engine
                .list_tasks()
                .await
                .unwrap()
                .into_iter()
                .filter(|t| !apps.contains(t))
                .collect();
            if containers.is_empty() && tasks.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: containers {containers:?}, tasks {tasks:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn unchanged_trees_reuse_their_build_and_changed_ones_rebuild_alone() {
    let (daemon, work) = setup_with("");
    work.write(".upsun/config.yaml", two_apps("httpd -f -p $PORT -h /app"));
    work.write("web/app.py", "print('v1')\n");
    work.write("api/server.py", "print('api')\n");
    work.write("README.md", "one\n");
    work.commit("first");

    let first = push_ok(&work);
    for expected in [
        "Building application 'web'",
        "Building application 'api'",
        "Executing build hook...",
        "built web at ",
        "cache runs: 1",
    ] {
        assert!(first.contains(expected), "missing {expected:?}:\n{first}");
    }
    assert_eq!(
        (hook_runs(&daemon, "web"), hook_runs(&daemon, "api")),
        (1, 1)
    );
    let first_build = builds(&daemon)[0].clone();
    assert_eq!(first_build.1, "complete");

    // Outside every source.root: both reused, no hook runs.
    work.write("README.md", "two\n");
    work.commit("docs only");
    let second = push_ok(&work);
    assert_eq!(
        second
            .matches("Reusing existing build for this tree ID")
            .count(),
        2,
        "{second}"
    );
    assert!(!second.contains("Executing build hook"), "{second}");
    assert_eq!(
        (hook_runs(&daemon, "web"), hook_runs(&daemon, "api")),
        (1, 1)
    );

    // Only web.commands.start: a runtime-only change, reused.
    work.write(
        ".upsun/config.yaml",
        two_apps("httpd -f -v -p $PORT -h /app"),
    );
    work.commit("start command");
    let third = push_ok(&work);
    assert_eq!(
        third
            .matches("Reusing existing build for this tree ID")
            .count(),
        2,
        "{third}"
    );
    assert_eq!(
        (hook_runs(&daemon, "web"), hook_runs(&daemon, "api")),
        (1, 1)
    );

    // Inside web's tree: web alone rebuilds; its cache survived.
    work.write("web/app.py", "print('v2')\n");
    work.commit("web v2");
    let fourth = push_ok(&work);
    assert_eq!(
        fourth
            .matches("Reusing existing build for this tree ID")
            .count(),
        1,
        "{fourth}"
    );
    assert!(fourth.contains("cache runs: 2"), "{fourth}");
    assert_eq!(
        (hook_runs(&daemon, "web"), hook_runs(&daemon, "api")),
        (2, 1)
    );

    let listed = builds(&daemon);
    assert_eq!(listed.len(), 4);
    assert!(
        listed.iter().all(|(_, status)| status == "complete"),
        "{listed:?}"
    );
    let info = daemon.cli_ok(&["builds", "info", &listed[0].0]);
    assert!(
        info.contains(&format!("reused from {}", first_build.0)),
        "{info}"
    );
    assert!(info.contains("web v2"), "{info}");
    let first_info = daemon.cli_ok(&["builds", "info", &first_build.0]);
    assert_eq!(app_digest(&info, "api"), app_digest(&first_info, "api"));
    assert_ne!(app_digest(&info, "web"), app_digest(&first_info, "web"));
    let log = daemon.cli_ok(&["builds", "logs", &listed[0].0]);
    assert!(log.contains("cache runs: 2"), "{log}");

    // The cache is not in the image; what the hook wrote is.
    let archive = daemon.scratch("export").join("build.tgz");
    export_to(&daemon, &listed[0].0, &archive);
    let files = layer_files(&archive);
    assert!(files.iter().any(|f| f == "app/built.txt"), "{files:?}");
    assert!(files.iter().any(|f| f == "app/app.py"), "{files:?}");
    assert!(
        !files
            .iter()
            .any(|f| f.contains("tmp/cache") || f.ends_with("/runs")),
        "{files:?}"
    );

    // Clearing the cache: the next build starts from an empty one.
    let cleared = daemon.cli_ok(&["project", "clear-build-cache", "-p", "shop", "--app", "web"]);
    assert!(cleared.contains("web"), "{cleared}");
    assert_eq!(
        (hook_runs(&daemon, "web"), hook_runs(&daemon, "api")),
        (0, 1)
    );
    work.write("web/app.py", "print('v3')\n");
    work.commit("web v3");
    let fifth = push_ok(&work);
    assert!(fifth.contains("cache runs: 1"), "{fifth}");
    assert_nothing_running(&daemon);
}

/// `launchway builds export ID > path` through a shell.
fn export_to(daemon: &Daemon, id: &str, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' --config '{}' builds export {id} > '{}'",
            launchway_bin().display(),
            daemon.settings.display(),
            path.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The file names in every layer of an exported build (gzip'd OCI layout).
fn layer_files(archive: &Path) -> Vec<String> {
    let file = std::fs::File::open(archive).unwrap();
    let mut outer = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut blobs = Vec::new();
    for entry in outer.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        blobs.push(bytes);
    }
    let mut files = Vec::new();
    for blob in blobs.iter().filter(|b| b.starts_with(&[0x1f, 0x8b])) {
        let mut layer = tar::Archive::new(flate2::read::GzDecoder::new(blob.as_slice()));
        for entry in layer.entries().unwrap() {
            let entry = entry.unwrap();
            files.push(
                entry
                    .path()
                    .unwrap()
                    .display()
                    .to_string()
                    .trim_start_matches("./")
                    .to_owned(),
            );
        }
    }
    files
}

fn one_app(hook: &str) -> String {
    let hook = hook.replace('\n', "\n        ");
    format!(
        r#"applications:
  web:
    type: "python:3.11"
    source:
      root: web
    hooks:
      build: |
        {hook}
    web:
      commands:
        start: httpd -f -p $PORT -h /app
"#
    )
}

#[test]
fn the_build_hook_has_no_network_and_its_failure_fails_the_push() {
    let (daemon, work) = setup_with("");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    work.write(
        ".upsun/config.yaml",
        one_app(&format!(
            "echo trying the host\nnc -w 3 127.0.0.1 {port} < /dev/null\necho CONNECTED"
        )),
    );
    work.write("web/app.py", "print('v1')\n");
    work.commit("first");
    let out = push(&work);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "the push should fail:\n{stderr}");
    assert!(stderr.contains("trying the host"), "{stderr}");
    assert!(!stderr.contains("CONNECTED"), "{stderr}");
    assert!(stderr.contains("W: nc: can't connect"), "{stderr}");
    assert!(
        stderr.contains("E: application 'web': the build hook exited with code 1"),
        "{stderr}"
    );
    // Its output says it could not connect: the message names the setting.
    assert!(
        stderr.contains("no network access")
            && stderr.contains("launchway project set -p shop build.egress=registries"),
        "{stderr}"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the hook reached the host's loopback"
    );
    let listed = builds(&daemon);
    assert_eq!(listed[0].1, "failed");
    let info = daemon.cli_ok(&["builds", "info", &listed[0].0]);
    assert!(
        !info.contains("sha256:"),
        "a failed build records no image:\n{info}"
    );
    let refused = daemon.cli(&["builds", "export", &listed[0].0]);
    assert!(!refused.status.success());
    assert_nothing_running(&daemon);

    // The same tree with a working hook builds (nothing of the failure was kept).
    work.write(".upsun/config.yaml", one_app("echo fine"));
    work.commit("fixed");
    let fixed = push_ok(&work);
    assert!(fixed.contains("fine"), "{fixed}");
    assert!(!fixed.contains("Reusing"), "{fixed}");
}

#[test]
fn a_running_build_is_cancelled_mid_hook() {
    let (daemon, work) = setup_with("");
    work.write(
        ".upsun/config.yaml",
        one_app("echo hook started\nsleep 120"),
    );
    work.write("web/app.py", "print('v1')\n");
    work.commit("slow");
    let pushing = push_in_background(&daemon, &work);
    let started = Instant::now();
    let build = loop {
        if let Some((id, _)) = builds(&daemon).into_iter().next() {
            let log = daemon.cli_ok(&["builds", "logs", &id]);
            if log.contains("hook started") {
                break id;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the hook never started"
        );
        pause();
    };
    let cancelled = daemon.cli_ok(&["activity", "cancel", &build]);
    assert!(cancelled.contains("in_progress"), "{cancelled}");
    let out = pushing.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(!out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Cancelled"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(builds(&daemon)[0], (build.clone(), "cancelled".to_owned()));
    let activities = daemon.cli_ok(&["activities", "-p", "shop"]);
    assert!(
        activities.lines().nth(1).unwrap().contains("cancelled"),
        "{activities}"
    );
    assert_nothing_running(&daemon);
    let again = daemon.cli(&["activity", "cancel", &build]);
    assert!(!again.status.success());
}

#[test]
fn an_exported_build_imports_with_the_same_digest_and_a_flipped_byte_is_refused() {
    let (daemon, work) = setup_with("");
    work.write(".upsun/config.yaml", one_app("echo built > out.txt"));
    work.write("web/app.py", "print('v1')\n");
    work.commit("first");
    push_ok(&work);
    let (id, _) = builds(&daemon)[0].clone();
    let digest = app_digest(&daemon.cli_ok(&["builds", "info", &id]), "web");
    let archive = daemon.scratch("export").join("build.tgz");
    export_to(&daemon, &id, &archive);

    // A second project on the same daemon.
    daemon.project("blog");
    let imported = import_from(&daemon, "blog", &archive);
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let new_id = text(&imported.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_ne!(new_id, id);
    let info = daemon.cli_ok(&["builds", "info", &new_id]);
    assert_eq!(app_digest(&info, "web"), digest);
    assert!(info.contains(&format!("from build {id}")), "{info}");

    // A second daemon (own data directory and namespace), through a pipe.
    let other = Daemon::start();
    other.project("shop");
    let piped = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{bin}' --config '{a}' builds export {id} | '{bin}' --config '{b}' builds import -p shop",
            bin = launchway_bin().display(),
            a = daemon.settings.display(),
            b = other.settings.display(),
        ))
        .output()
        .unwrap();
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    let other_id = text(&piped.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let other_info = other.cli_ok(&["builds", "info", &other_id]);
    assert_eq!(app_digest(&other_info, "web"), digest);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let image = runtime.block_on(async {
        let engine = engine_of(&other).await;
        let images = engine.list_images().await.unwrap();
        images
            .into_iter()
            .find(|i| i.name.starts_with("launchway/build/"))
            .unwrap()
    });
    assert_eq!(image.target.unwrap().digest, digest);

    // One flipped byte anywhere in the gzip stream: refused, nothing stored.
    let bytes = std::fs::read(&archive).unwrap();
    for position in [bytes.len() / 3, bytes.len() - 12] {
        let mut corrupt = bytes.clone();
        corrupt[position] ^= 0x01;
        let path = daemon
            .scratch("export")
            .join(format!("corrupt-{position}.tgz"));
        std::fs::write(&path, &corrupt).unwrap();
        let before = other.cli_ok(&["builds", "-p", "shop"]);
        let out = import_from(&other, "shop", &path);
        assert!(!out.status.success(), "a corrupt archive was accepted");
        assert!(
            text(&out.stderr).contains("refused") || text(&out.stderr).contains("cannot read"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(other.cli_ok(&["builds", "-p", "shop"]), before);
    }
    // Not a build at all.
    let runtime_archive: PathBuf = launchway_integration::busybox_archive().to_path_buf();
    let out = import_from(&other, "shop", &runtime_archive);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a Launchway build export"),
        "{}",
        text(&out.stderr)
    );
}

fn import_from(daemon: &Daemon, project: &str, archive: &Path) -> Output {
    std::process::Command::new(launchway_bin())
        .arg("--config")
        .arg(&daemon.settings)
        .args(["builds", "import", "-p", project])
        .stdin(std::fs::File::open(archive).unwrap())
        .output()
        .unwrap()
}

#[test]
fn gc_keeps_the_newest_builds_and_collects_the_rest() {
    let (daemon, work) = setup_with("[build]\nkeep_builds = 1\n");
    work.write(".upsun/config.yaml", one_app("echo built"));
    for version in 1..=3 {
        work.write("web/app.py", format!("print('v{version}')\n"));
        work.commit(&format!("v{version}"));
        push_ok(&work);
    }
    let listed = builds(&daemon);
    assert_eq!(listed.len(), 3);
    // Garbage collection ran after each build: only the newest image is left.
    let out = daemon.cli_ok(&["gc"]);
    assert!(out.contains("1 kept"), "{out}");
    let old = daemon.cli(&["builds", "export", &listed[2].0]);
    assert!(!old.status.success());
    assert!(
        text(&old.stderr).contains("collected"),
        "{}",
        text(&old.stderr)
    );
    // The newest one still exports and its tree is still reused.
    export_to(
        &daemon,
        &listed[0].0,
        &daemon.scratch("export").join("newest.tgz"),
    );
    let again = push_ok_after_noop(&work);
    assert!(again.contains("Reusing existing build"), "{again}");
}

fn push_ok_after_noop(work: &Work) -> String {
    work.write("README.md", "docs\n");
    work.commit("docs");
    push_ok(work)
}

#[test]
fn builds_wait_for_a_slot_and_stop_at_their_time_limit() {
    let (daemon, work) = setup_with("[build]\nconcurrency = 1\ntimeout_secs = 4\n");
    // Over the limit: the hook is killed and the build fails with the reason.
    work.write(".upsun/config.yaml", one_app("echo long hook\nsleep 30"));
    work.write("web/app.py", "print('v1')\n");
    work.commit("slow");
    let started = Instant::now();
    let out = push(&work);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(25), "{stderr}");
    assert!(stderr.contains("longer than its limit of 4 s"), "{stderr}");
    assert_nothing_running(&daemon);

    // One slot: a second project's build waits for the first one's.
    work.write(".upsun/config.yaml", one_app("sleep 2"));
    work.commit("two seconds");
    let remote = daemon.project("blog");
    daemon.grant(&daemon.existing_key("alice"), "blog", "admin");
    let first = push_in_background(&daemon, &work);
    // Let the first build take the slot.
    let waited = Instant::now();
    while !daemon
        .cli_ok(&["builds", "-p", "shop"])
        .lines()
        .any(|l| l.contains("running"))
    {
        assert!(waited.elapsed() < Duration::from_secs(30));
        pause();
    }
    let second = work.git(&["push", &remote, "HEAD:main"]);
    let second_log = text(&second.stderr);
    assert!(second.status.success(), "{second_log}");
    assert!(
        second_log.contains("Waiting for a build slot"),
        "{second_log}"
    );
    assert!(first.join().unwrap().status.success());

    // `launchway build` builds a head again without a push: here, a reuse.
    let built = daemon.cli(&["build", "-p", "blog"]);
    assert!(built.status.success(), "{}", text(&built.stderr));
    assert!(
        text(&built.stderr).contains("Reusing existing build for this tree ID"),
        "{}",
        text(&built.stderr)
    );
}

#[test]
fn a_runtime_version_not_offered_runs_the_nearest_and_says_so() {
    let (daemon, work) = setup_with("");
    work.write(
        ".upsun/config.yaml",
        one_app("echo building").replace("python:3.11", "python:3.9"),
    );
    work.write("web/app.py", "print('v1')\n");
    work.commit("first");
    let pushed = push_ok(&work);
    assert!(
        pushed.contains("python:3.9 is not available here; running python:3.11"),
        "{pushed}"
    );
    let listed = builds(&daemon);
    let info = daemon.cli_ok(&["builds", "info", &listed[0].0]);
    assert!(info.contains("python:3.11 (asked python:3.9)"), "{info}");

    // A host that demands exact versions refuses it, naming the setting.
    let strict = Daemon::start_with("[runtimes]\nexact_versions = true\n");
    strict.use_busybox_runtime("python:3.11");
    let strict_work = strict.admin_work("shop");
    strict_work.write(
        ".upsun/config.yaml",
        one_app("echo building").replace("python:3.11", "python:3.9"),
    );
    strict_work.write("web/app.py", "print('v1')\n");
    strict_work.commit("first");
    let out = push(&strict_work);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("python:3.9 is not available here (it offers python:3.11, python:3.13)")
            && stderr.contains("exact_versions"),
        "{stderr}"
    );
    assert!(builds(&strict)[0].1 == "failed");
}
