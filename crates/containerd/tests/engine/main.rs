//! Tests against a real containerd (the one `make test` provides through
//! `LAUNCHWAY_CONTAINERD_SOCKET`). Each test works in a namespace of its own
//! with the busybox runtime from `fixtures/runtimes/busybox-oci.sh` imported,
//! and removes the namespace at the end.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

mod archive;
mod attached;
mod freeze;
mod steps;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use launchway_containerd::archive::{ImportOptions, import};
use launchway_containerd::{Engine, Output, OutputLine, Rootfs, StepOutcome, StepSpec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const BUSYBOX: &str = "test/busybox:1";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The busybox OCI archive, made once per test run.
pub fn busybox_archive() -> &'static Path {
    static ARCHIVE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = ARCHIVE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("busybox.tar");
        let status =
            std::process::Command::new(repo_root().join("fixtures/runtimes/busybox-oci.sh"))
                .arg(&path)
                .status()
                .expect("run busybox-oci.sh");
        assert!(status.success(), "busybox-oci.sh failed");
        (dir, path)
    });
    path
}

pub fn socket() -> PathBuf {
    std::env::var_os("LAUNCHWAY_CONTAINERD_SOCKET")
        .map(PathBuf::from)
        .expect("LAUNCHWAY_CONTAINERD_SOCKET must name a containerd socket (run through `make test`, which starts one)")
}

/// A namespace of its own with busybox imported; removed on `finish`.
#[derive(Debug)]
pub struct Ns {
    pub engine: Engine,
    _scratch: tempfile::TempDir,
}

impl Ns {
    pub async fn new() -> Ns {
        let scratch = tempfile::tempdir().expect("scratch");
        let namespace = format!("lwtest-{}", hex_id());
        let engine = Engine::connect(&socket(), &namespace, scratch.path())
            .await
            .expect("containerd answers");
        let file = std::fs::File::open(busybox_archive()).expect("archive");
        import(
            &engine,
            file,
            &ImportOptions {
                name: Some(BUSYBOX.into()),
                ..Default::default()
            },
        )
        .await
        .expect("busybox imports");
        Ns {
            engine,
            _scratch: scratch,
        }
    }

    /// Deletes every image and the namespace; fails if anything else is left.
    pub async fn finish(self) {
        remove_namespace(&self.engine).await;
    }
}

pub async fn remove_namespace(engine: &Engine) {
    for image in engine.list_images().await.expect("list images") {
        engine
            .delete_image(&image.name)
            .await
            .expect("delete image");
    }
    let left = engine.inventory().await.expect("inventory");
    assert_eq!(
        left,
        Default::default(),
        "namespace {} not empty at the end",
        engine.namespace()
    );
    engine.delete_namespace().await.expect("namespace deleted");
}

pub fn hex_id() -> String {
    let bytes: [u8; 6] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `script` with busybox `sh -c` and collects its output lines.
pub async fn run_sh(
    engine: &Engine,
    rootfs: Rootfs<'_>,
    step: StepSpec,
) -> (StepOutcome, Vec<OutputLine>) {
    let (sender, mut receiver) = mpsc::channel(1024);
    let collect = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(line) = receiver.recv().await {
            lines.push(line);
        }
        lines
    });
    let outcome = engine
        .run_step(
            rootfs,
            &step,
            Output::Lines(sender),
            &CancellationToken::new(),
        )
        .await
        .expect("step runs");
    (outcome, collect.await.expect("collector"))
}

pub fn sh(script: &str) -> StepSpec {
    StepSpec::new(["/bin/sh", "-c", script])
}

pub fn busybox() -> Rootfs<'static> {
    Rootfs::Image {
        name: BUSYBOX,
        writable: false,
    }
}

pub fn stdout_of(lines: &[OutputLine]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.stream == launchway_containerd::OutputStream::Stdout)
        .map(|l| l.line.clone())
        .collect()
}
