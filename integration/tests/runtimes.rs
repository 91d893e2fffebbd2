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
    let daemon = Daemon::start();
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
