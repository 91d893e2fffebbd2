//! `launchway runtimes` against a real daemon and containerd, and the
//! embedded containerd `serve` starts when none answers.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use launchway_containerd::{Engine, Output, Rootfs, StepSpec};
use launchway_integration::{Daemon, containerd_socket};
use tokio_util::sync::CancellationToken;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn busybox_archive(dir: &Path) -> PathBuf {
    let path = dir.join("busybox.tar");
    let status = Command::new(repo_root().join("fixtures/runtimes/busybox-oci.sh"))
        .arg(&path)
        .status()
        .expect("fixture script runs");
    assert!(status.success());
    path
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The daemon's engine, to look inside its namespace.
async fn engine_of(daemon: &Daemon) -> Engine {
    let socket = containerd_socket().expect("LAUNCHWAY_CONTAINERD_SOCKET (run through make test)");
    let namespace = daemon
        .containerd_namespace()
        .expect("namespace in settings");
    Engine::connect(&socket, &namespace, &daemon.scratch("engine"))
        .await
        .expect("containerd answers")
}

async fn remove_images(engine: &Engine) {
    for image in engine.list_images().await.unwrap() {
        engine.delete_image(&image.name).await.unwrap();
    }
    let _ = engine.delete_namespace().await;
}

#[test]
fn the_catalog_is_listed_and_unknown_types_name_the_known_ones() {
    let daemon = Daemon::start();
    let list = daemon.cli_ok(&["runtimes", "list"]);
    for type_name in [
        "python:3.11",
        "nodejs:18",
        "php:8.2",
        "golang:1.19",
        "ruby:3.1",
    ] {
        let line = list
            .lines()
            .find(|l| l.starts_with(type_name))
            .unwrap_or_else(|| panic!("{type_name} missing:\n{list}"));
        assert!(line.contains("not built"), "{line}");
    }
    let out = daemon.cli(&["runtimes", "build", "cobol:85"]);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("unknown runtime type 'cobol:85'"),
        "{message}"
    );
    assert!(
        message.contains("python:3.11") && message.contains("ruby:3.1"),
        "{message}"
    );
}

#[test]
fn an_oci_archive_registers_a_runtime_and_a_corrupt_one_changes_nothing() {
    let daemon = Daemon::start();
    let archive = busybox_archive(&daemon.scratch("fixture"));
    let imported = daemon.cli_ok(&["runtimes", "import", "busybox:1", archive.to_str().unwrap()]);
    assert!(
        imported.starts_with("busybox:1 launchway/runtime/busybox:1 sha256:"),
        "{imported}"
    );
    let list = daemon.cli_ok(&["runtimes", "list"]);
    let line = list
        .lines()
        .find(|l| l.starts_with("busybox:1"))
        .expect("listed");
    assert!(
        line.contains("ready (import)") && line.contains("imported"),
        "{line}"
    );

    // A flipped byte in the layer: refused, and the list is as it was.
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    let corrupt = daemon.scratch("fixture").join("corrupt.tar");
    std::fs::write(&corrupt, &bytes).unwrap();
    let out = daemon.cli(&["runtimes", "import", "other:1", corrupt.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nothing was stored"),
        "{}",
        stderr(&out)
    );
    assert_eq!(daemon.cli_ok(&["runtimes", "list"]), list);

    // A bad type name and a missing file are refused too.
    let out = daemon.cli(&["runtimes", "import", "../x:1", archive.to_str().unwrap()]);
    assert!(stderr(&out).contains("name:version"), "{}", stderr(&out));
    let out = daemon.cli(&["runtimes", "import", "x:1", "/no/such/archive.tar"]);
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = engine_of(&daemon).await;
        remove_images(&engine).await;
    });
}

#[test]
fn python_runtime_builds_from_debian_and_runs_as_web() {
    // A root filesystem cache of this test's own: the first build is
    // mmdebstrap's, whatever other tests built.
    let cache = tempfile::tempdir().unwrap();
    let settings = format!(
        "[runtimes]\nrootfs_cache = \"{}\"\n",
        cache.path().display()
    );
    let daemon = Daemon::start_with(&settings);
    let out = daemon.cli(&["runtimes", "build", "python:3.11"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "build failed:\n{stdout}\n{}",
        stderr(&out)
    );
    assert!(
        stdout.contains("Runtime python:3.11 ready: Python 3.11"),
        "{stdout}"
    );
    assert!(stdout.contains("I: success"), "mmdebstrap ran: {stdout}");
    // Another daemon (another containerd namespace) with the same cache
    // imports the same root filesystem instead of building it.
    let other = Daemon::start_with(&settings);
    let reused = other.cli_ok(&["runtimes", "build", "python:3.11"]);
    assert!(
        reused.contains("Reusing the root filesystem built earlier")
            && !reused.contains("I: success")
            && reused.contains("Runtime python:3.11 ready: Python 3.11"),
        "{reused}"
    );
    drop(other);
    let list = daemon.cli_ok(&["runtimes", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("python:3.11") && l.contains("ready")),
        "{list}"
    );
    // Built once: asking again reuses it.
    let again = daemon.cli_ok(&["runtimes", "build", "python:3.11"]);
    assert!(
        !again.contains("mmdebstrap") && !again.contains("Building"),
        "{again}"
    );

    dependencies_are_installed_over_the_network_and_cached(&daemon);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = engine_of(&daemon).await;
        let (sender, mut receiver) = tokio::sync::mpsc::channel(16);
        let outcome = engine
            .run_step(
                Rootfs::Image {
                    name: "launchway/runtime/python:3.11",
                    writable: false,
                },
                &StepSpec::new(["sh", "-c", "id -un; id -u; python3 --version; echo $HOME"]),
                Output::Lines(sender),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        let mut lines = Vec::new();
        while let Some(line) = receiver.recv().await {
            lines.push(line.line);
        }
        assert!(outcome.success(), "{lines:?}");
        assert_eq!(lines[0], "web");
        assert_eq!(lines[1], "10000");
        assert!(lines[2].starts_with("Python 3.11."), "{lines:?}");
        assert_eq!(lines[3], "/app");
        remove_images(&engine).await;
    });
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(needle)
        {
            found.push(pid);
        }
    }
    found
}

#[test]
fn serve_starts_an_embedded_containerd_when_none_answers_and_stops_it() {
    let mut daemon =
        Daemon::start_with("[containerd]\nsocket = \"/nonexistent/containerd.sock\"\n");
    let config = daemon.data_dir().join("containerd").join("config.toml");
    let needle = config.display().to_string();
    assert_eq!(
        processes_mentioning(&needle).len(),
        1,
        "one embedded containerd runs"
    );
    let list = daemon.cli(&["runtimes", "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let socket = daemon.data_dir().join("containerd").join("containerd.sock");
    assert!(
        stderr(&list).contains(&socket.display().to_string()),
        "{}",
        stderr(&list)
    );
    let status = daemon.stop().expect("was running");
    assert!(status.success(), "{status:?}");
    assert!(
        processes_mentioning(&needle).is_empty(),
        "containerd still runs after shutdown"
    );
}

/// CRC-32 (IEEE), for the test wheel's zip entries.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A zip archive of `files`, stored uncompressed.
fn zip(files: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, content) in files {
        let offset = out.len() as u32;
        let crc = crc32(content.as_bytes());
        let size = content.len() as u32;
        let fields = |sig: u32, central: bool| {
            let mut h = Vec::new();
            h.extend(sig.to_le_bytes());
            if central {
                h.extend(20u16.to_le_bytes());
            }
            h.extend(20u16.to_le_bytes()); // version needed
            h.extend(0u16.to_le_bytes()); // flags
            h.extend(0u16.to_le_bytes()); // stored
            h.extend(0u16.to_le_bytes()); // time
            h.extend(0x21u16.to_le_bytes()); // date: 1980-01-01
            h.extend(crc.to_le_bytes());
            h.extend(size.to_le_bytes());
            h.extend(size.to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes()); // extra
            if central {
                h.extend(0u16.to_le_bytes()); // comment
                h.extend(0u16.to_le_bytes()); // disk
                h.extend(0u16.to_le_bytes()); // internal attributes
                h.extend(0u32.to_le_bytes()); // external attributes
                h.extend(offset.to_le_bytes());
            }
            h.extend(name.as_bytes());
            h
        };
        out.extend(fields(0x0403_4b50, false));
        out.extend(content.as_bytes());
        central.extend(fields(0x0201_4b50, true));
    }
    let central_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((files.len() as u16).to_le_bytes());
    out.extend((files.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(central_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// A PEP 503 index on the host's loopback serving one wheel, `lwdemo 1.0`;
/// returns its URL and the number of requests it answered.
fn serve_index() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let wheel = zip(&[
        ("lwdemo/__init__.py", "VALUE = 42\n"),
        (
            "lwdemo-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: lwdemo\nVersion: 1.0\n",
        ),
        (
            "lwdemo-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: launchway-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        (
            "lwdemo-1.0.dist-info/RECORD",
            "lwdemo/__init__.py,,\nlwdemo-1.0.dist-info/METADATA,,\nlwdemo-1.0.dist-info/WHEEL,,\nlwdemo-1.0.dist-info/RECORD,,\n",
        ),
    ]);
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    let port = launchway_integration::serve_http(move |path| {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if path.starts_with("/simple/lwdemo") {
            let html = "<!DOCTYPE html><html><body><a href=\"/files/lwdemo-1.0-py3-none-any.whl\">lwdemo-1.0-py3-none-any.whl</a></body></html>";
            Some(("text/html", html.as_bytes().to_vec()))
        } else if path == "/files/lwdemo-1.0-py3-none-any.whl" {
            Some(("application/octet-stream", wheel.clone()))
        } else {
            None
        }
    });
    (format!("http://127.0.0.1:{port}/simple/"), served)
}

/// A push whose `dependencies:` come from an index on the host's loopback:
/// the dependencies step reaches it, the build hook imports what it
/// installed, and a second build with the same dependencies asks nothing.
fn dependencies_are_installed_over_the_network_and_cached(daemon: &Daemon) {
    let (index, served) = serve_index();
    let remote = daemon.project("deps");
    let key = daemon.key("dev", "deps", "admin");
    let work = launchway_integration::Work::init(daemon.scratch("deps-work"))
        .with_ssh(daemon.ssh_command(&key));
    work.git_ok(&["remote", "add", "launchway", &remote]);
    work.write(
        ".upsun/config.yaml",
        format!(
            r#"applications:
  app:
    type: "python:3.11"
    dependencies:
      python3:
        lwdemo: "1.0"
    variables:
      env:
        PIP_INDEX_URL: "{index}"
    hooks:
      build: python3 -c "import lwdemo; print('lwdemo says', lwdemo.VALUE)"
    web:
      commands:
        start: python3 -m http.server $PORT
"#
        ),
    );
    work.write("app.py", "print('v1')\n");
    work.commit("first");
    let out = work.git(&["push", "launchway", "HEAD:main"]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("Installing build dependencies..."), "{log}");
    assert!(log.contains("lwdemo says 42"), "{log}");
    let asked = served.load(std::sync::atomic::Ordering::SeqCst);
    assert!(asked >= 2, "the index answered {asked} requests");

    work.write("app.py", "print('v2')\n");
    work.commit("second");
    let out = work.git(&["push", "launchway", "HEAD:main"]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("Installing build dependencies... (reused: unchanged)"),
        "{log}"
    );
    assert!(log.contains("lwdemo says 42"), "{log}");
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), asked);
}

/// A composable image in Upsun's layout: a stack of a runtime and a
/// package becomes one Debian image (built here from the catalog's recipe
/// plus the package), the hook uses both, the app serves with the runtime,
/// and a second push reuses the image.
#[test]
fn a_composable_stack_builds_one_image_with_its_runtime_and_packages() {
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 60\n");
    let work = daemon.admin_work("shop");
    work.write(
        ".upsun/config.yaml",
        r#"applications:
  app:
    type: "composable:25.05"
    stack: ["python@3.11", "sqlite"]
    hooks:
      build: |
        set -e
        sqlite3 built.db "create table t(x); insert into t values (42);"
        python3 -c "import sqlite3; print('hook reads', sqlite3.connect('built.db').execute('select x from t').fetchone()[0])"
    web:
      commands:
        start: python3 -m http.server $PORT
"#,
    );
    work.write("index.html", "composed\n");
    work.commit("composable");
    let log = work.push_ok("main", &[]);
    assert!(log.contains("hook reads 42"), "{log}");
    let listed = daemon.cli_ok(&["builds", "-p", "shop"]);
    let id = listed
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let info = daemon.cli_ok(&["builds", "info", &id]);
    assert!(
        info.contains("composable python:3.11 + sqlite (Debian bookworm) (asked composable:25.05)"),
        "{info}"
    );
    let page = launchway_integration::http_fetch(
        daemon.router_addr(),
        "main.shop.localhost",
        "/index.html",
    )
    .unwrap();
    assert_eq!(page.body, "composed\n", "{page:?}");
    let runtimes = daemon.cli_ok(&["runtimes", "list"]);
    assert!(
        runtimes.lines().any(|l| l.starts_with("composable:")),
        "{runtimes}"
    );
}
