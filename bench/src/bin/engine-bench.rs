//! `make bench`: what `launchway-containerd` costs next to containerd's own
//! tools, measured in the same run on the same containerd, the same image and
//! the same namespace, and their ratios.
//!
//! 1. Step overhead: `/bin/true` from the busybox runtime image through
//!    `Engine::run_step` (read-only rootfs, output discarded) against
//!    `ctr run --rm IMAGE ID /bin/true`. Two warm-ups each, then the runs,
//!    alternating which goes first so drift on the machine hits both.
//! 2. Freeze of 50 MiB: the same files (40 of 1 MiB incompressible data and
//!    10 of 1 MiB log-like text) are made on the host, bind-mounted read-only
//!    into a step on a fresh workspace that copies them into `/app`, and only
//!    `Workspace::freeze` is timed. Baseline: the same host files through
//!    `tar -C DIR -cf - . | gzip > OUT`. Each frozen image is deleted after
//!    its run.
//!
//! The figures go to `$LW_BENCH_DIR/engine-bench.json` (see report.rs).
//!
//! Everything happens in a fresh namespace `lwbench-<random>`, emptied and
//! deleted at the end (also when a measurement fails).
//!
//! Usage: `engine-bench [--runs N] [--freeze-runs N] [--fixture BUSYBOX_OCI_SH]`
//! with `LAUNCHWAY_CONTAINERD_SOCKET` naming the containerd socket (run as
//! root; `scripts/with-containerd.sh` provides one) and `ctr` on the PATH.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../report.rs"]
mod report;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use launchway_containerd::archive::{ImportOptions, import};
use launchway_containerd::{Bind, Engine, Output, Rootfs, StepSpec};
use launchway_integration::random_bytes;
use report::{Figure, Report, Target};
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "bench/busybox:1";
const DEFAULT_FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/runtimes/busybox-oci.sh"
);
const WARM_UPS: usize = 2;
const FILE_BYTES: usize = 1024 * 1024;
const RANDOM_FILES: usize = 40;
const TEXT_FILES: usize = 10;
const MIB: f64 = 1024.0 * 1024.0;
/// Where the step sees the host's files (on its private `/tmp` tmpfs, so the
/// mount point is not part of what gets frozen).
const SOURCE_IN_STEP: &str = "/tmp/src";

#[derive(Debug)]
struct Args {
    runs: usize,
    freeze_runs: usize,
    fixture: PathBuf,
}

const USAGE: &str = "usage: engine-bench [--runs N] [--freeze-runs N] [--fixture BUSYBOX_OCI_SH]";

fn parse_args() -> anyhow::Result<Args> {
    let mut parsed = Args {
        runs: 20,
        freeze_runs: 3,
        fixture: PathBuf::from(DEFAULT_FIXTURE),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value; {USAGE}"))
        };
        match arg.as_str() {
            "--runs" => parsed.runs = value()?.parse().context("--runs")?,
            "--freeze-runs" => parsed.freeze_runs = value()?.parse().context("--freeze-runs")?,
            "--fixture" => parsed.fixture = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument '{other}'; {USAGE}"),
        }
    }
    ensure!(
        parsed.runs > 0 && parsed.freeze_runs > 0,
        "run counts must be positive"
    );
    Ok(parsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let socket = std::env::var_os("LAUNCHWAY_CONTAINERD_SOCKET")
        .map(PathBuf::from)
        .context("LAUNCHWAY_CONTAINERD_SOCKET must name a containerd socket (scripts/with-containerd.sh exports one)")?;
    let dir = tempfile::tempdir()?;
    let root = dir.path();

    let archive = root.join("busybox.tar");
    let made = tokio::process::Command::new(&args.fixture)
        .arg(&archive)
        .status()
        .await
        .with_context(|| format!("cannot run {}", args.fixture.display()))?;
    ensure!(made.success(), "{} failed", args.fixture.display());

    let random: [u8; 6] = rand::random();
    let namespace = format!(
        "lwbench-{}",
        random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let engine = Engine::connect(&socket, &namespace, &root.join("scratch")).await?;

    let mut report = Report::new("engine-bench");
    let measured = async {
        import(
            &engine,
            std::fs::File::open(&archive)?,
            &ImportOptions {
                name: Some(IMAGE.into()),
                ..Default::default()
            },
        )
        .await?;
        step_overhead(&engine, &socket, args.runs, &mut report).await?;
        freeze(&engine, root, args.freeze_runs, &mut report).await
    }
    .await;
    let cleaned = clean_up(&engine, &socket).await;
    measured?;
    cleaned?;
    report.finish()
}

/// Mean and median in milliseconds.
fn stats_ms(times: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let middle = ms.len() / 2;
    let median = if ms.len().is_multiple_of(2) {
        (ms[middle - 1] + ms[middle]) / 2.0
    } else {
        ms[middle]
    };
    (mean, median)
}

fn list_s(times: &[Duration]) -> String {
    times
        .iter()
        .map(|t| format!("{:.3}", t.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn launchway_true(engine: &Engine) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let outcome = engine
        .run_step(
            Rootfs::Image {
                name: IMAGE,
                writable: false,
            },
            &StepSpec::new(["/bin/true"]),
            Output::Discard,
            &CancellationToken::new(),
        )
        .await?;
    let elapsed = started.elapsed();
    ensure!(outcome.success(), "/bin/true {}", outcome.describe());
    Ok(elapsed)
}

async fn ctr_true(engine: &Engine, socket: &Path, id: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = tokio::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", engine.namespace()])
        .args(["run", "--rm", IMAGE, id, "/bin/true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .context("cannot run ctr (is containerd's ctr installed?)")?;
    let elapsed = started.elapsed();
    ensure!(
        out.status.success(),
        "ctr run failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(elapsed)
}

async fn step_overhead(
    engine: &Engine,
    socket: &Path,
    runs: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut ctr_ids = 0usize;
    let mut next_id = || {
        ctr_ids += 1;
        format!("lwbench-ctr-{ctr_ids}")
    };
    for _ in 0..WARM_UPS {
        launchway_true(engine).await?;
        ctr_true(engine, socket, &next_id()).await?;
    }
    let mut launchway = Vec::with_capacity(runs);
    let mut ctr = Vec::with_capacity(runs);
    for run in 0..runs {
        let order = if run.is_multiple_of(2) {
            [true, false]
        } else {
            [false, true]
        };
        for through_launchway in order {
            if through_launchway {
                launchway.push(launchway_true(engine).await?);
            } else {
                ctr.push(ctr_true(engine, socket, &next_id()).await?);
            }
        }
    }
    let (launchway_mean, launchway_median) = stats_ms(&launchway);
    let (ctr_mean, ctr_median) = stats_ms(&ctr);
    println!(
        "step overhead: launchway run_step /bin/true  mean {launchway_mean:7.1} ms  median {launchway_median:7.1} ms  ({runs} runs after {WARM_UPS} warm-ups)"
    );
    println!(
        "step overhead: ctr run --rm /bin/true        mean {ctr_mean:7.1} ms  median {ctr_median:7.1} ms  ({runs} runs after {WARM_UPS} warm-ups)"
    );
    println!(
        "step overhead ratio (launchway/ctr): median {:.2}  mean {:.2}  (target <= 1.0)",
        launchway_median / ctr_median,
        launchway_mean / ctr_mean
    );
    report.add(
        Figure::compared(
            "step /bin/true: run_step / ctr run --rm (median)",
            "ms",
            launchway_median,
            ctr_median,
            Target::AtMost(1.0),
        )
        .runs(launchway.iter().map(|t| t.as_secs_f64() * 1000.0)),
    );
    Ok(())
}

/// About 1 MiB of log-like text (compresses roughly like build output).
fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    let noise = random_bytes(len / 8, seed);
    let mut text = String::with_capacity(len + 128);
    let mut line = 0usize;
    while text.len() < len {
        let n = |i: usize| u64::from(noise[(line * 4 + i) % noise.len()]);
        text.push_str(&format!(
            "2025-01-01T00:{:02}:{:02}Z INFO request id={:08x} path=/api/items/{} status={} bytes={} took={}ms\n",
            (line / 60) % 60,
            line % 60,
            line as u64 * 2_654_435_761 % 0xffff_ffff,
            n(0) * 7 + n(1),
            if n(2) < 230 { 200 } else { 404 },
            n(3) * 97,
            n(1) % 50
        ));
        line += 1;
    }
    text.truncate(len);
    text.into_bytes()
}

/// The files both sides freeze: `RANDOM_FILES` + `TEXT_FILES` of `FILE_BYTES`.
fn make_files(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    // The step runs as uid 10000: it must be able to read the bind mount.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let mut total = 0u64;
    for file in 0..RANDOM_FILES {
        let bytes = random_bytes(FILE_BYTES, 0x9e37_79b9_7f4a_7c15 + file as u64);
        std::fs::write(dir.join(format!("random-{file:02}.bin")), &bytes)?;
        total += bytes.len() as u64;
    }
    for file in 0..TEXT_FILES {
        let bytes = text_bytes(FILE_BYTES, 0x5851_f42d_4c95_7f2d + file as u64);
        std::fs::write(dir.join(format!("text-{file:02}.log")), &bytes)?;
        total += bytes.len() as u64;
    }
    Ok(total)
}

/// One freeze: a fresh workspace, the files copied in (not timed), the
/// freeze (timed), the image deleted. Returns the time and the layer's size.
async fn freeze_once(
    engine: &Engine,
    source: &Path,
    run: usize,
) -> anyhow::Result<(Duration, u64)> {
    let workspace = engine.workspace(IMAGE).await?;
    let mut copy = StepSpec::new([
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!(
            "cp {SOURCE_IN_STEP}/* /app/ && test \"$(ls /app | wc -l)\" -eq {}",
            RANDOM_FILES + TEXT_FILES
        ),
    ]);
    copy.binds.push(Bind {
        source: source.to_path_buf(),
        target: SOURCE_IN_STEP.into(),
        writable: false,
    });
    let outcome = engine
        .run_step(
            Rootfs::Workspace(&workspace),
            &copy,
            Output::Discard,
            &CancellationToken::new(),
        )
        .await?;
    ensure!(
        outcome.success(),
        "copying the files into /app {}",
        outcome.describe()
    );
    let name = format!("bench/frozen:{run}");
    let annotations: HashMap<String, String> =
        [("org.launchway.bench".to_string(), format!("freeze-{run}"))].into();
    let started = Instant::now();
    let image = workspace.freeze(&name, annotations).await?;
    let elapsed = started.elapsed();
    let layer = image
        .manifest
        .layers()
        .last()
        .map_or(0, |layer| layer.size());
    engine.delete_image(&name).await?;
    Ok((elapsed, layer))
}

/// The baseline: `tar | gzip` of the same files into a file on the same disk.
async fn tar_gzip_once(source: &Path, out: &Path) -> anyhow::Result<(Duration, u64)> {
    let _ = std::fs::remove_file(out);
    let started = Instant::now();
    let status = tokio::process::Command::new("bash")
        .args([
            "-c",
            "set -o pipefail; tar -C \"$1\" -cf - . | gzip > \"$2\"",
            "tar-gzip",
        ])
        .arg(source)
        .arg(out)
        .stdin(Stdio::null())
        .status()
        .await
        .context("cannot run bash")?;
    let elapsed = started.elapsed();
    ensure!(status.success(), "tar | gzip failed");
    Ok((elapsed, std::fs::metadata(out)?.len()))
}

async fn freeze(
    engine: &Engine,
    root: &Path,
    runs: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let source = root.join("src");
    let total = make_files(&source)?;
    let out = root.join("baseline.tar.gz");
    let mut launchway = Vec::with_capacity(runs);
    let mut baseline = Vec::with_capacity(runs);
    let mut layer_size = 0;
    let mut gzip_size = 0;
    for run in 0..runs {
        let order = if run.is_multiple_of(2) {
            [true, false]
        } else {
            [false, true]
        };
        for through_launchway in order {
            if through_launchway {
                let (elapsed, size) = freeze_once(engine, &source, run).await?;
                launchway.push(elapsed);
                layer_size = size;
            } else {
                let (elapsed, size) = tar_gzip_once(&source, &out).await?;
                baseline.push(elapsed);
                gzip_size = size;
            }
        }
    }
    let _ = std::fs::remove_file(&out);
    let mib = total as f64 / MIB;
    let (_, launchway_median) = stats_ms(&launchway);
    let (_, baseline_median) = stats_ms(&baseline);
    let (launchway_s, baseline_s) = (launchway_median / 1000.0, baseline_median / 1000.0);
    println!(
        "freeze {mib:.0} MiB ({RANDOM_FILES} random + {TEXT_FILES} text files of 1 MiB), {runs} runs each, median:"
    );
    println!(
        "freeze: launchway Workspace::freeze       {launchway_s:7.3} s  {:6.1} MiB/s  layer {:5.1} MiB  runs: {}",
        mib / launchway_s,
        layer_size as f64 / MIB,
        list_s(&launchway)
    );
    println!(
        "freeze: tar -cf - . | gzip (baseline)     {baseline_s:7.3} s  {:6.1} MiB/s  gzip  {:5.1} MiB  runs: {}",
        mib / baseline_s,
        gzip_size as f64 / MIB,
        list_s(&baseline)
    );
    println!(
        "freeze ratio (freeze / tar|gzip): {:.2}",
        launchway_s / baseline_s
    );
    report.add(
        Figure::compared(
            "freeze 50 MiB / tar piped to gzip",
            "s",
            launchway_s,
            baseline_s,
            Target::None,
        )
        .runs(launchway.iter().map(Duration::as_secs_f64)),
    );
    Ok(())
}

/// Empties and deletes the namespace: containers a failed `ctr run` may have
/// left, then every image (which takes their blobs and snapshots along).
async fn clean_up(engine: &Engine, socket: &Path) -> anyhow::Result<()> {
    for id in engine.list_containers().await? {
        for args in [
            ["task", "rm", "-f"].as_slice(),
            ["container", "rm"].as_slice(),
        ] {
            let _ = tokio::process::Command::new("ctr")
                .arg("--address")
                .arg(socket)
                .args(["--namespace", engine.namespace()])
                .args(args)
                .arg(&id)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
    }
    for image in engine.list_images().await? {
        engine.delete_image(&image.name).await?;
    }
    engine
        .delete_namespace()
        .await
        .with_context(|| format!("namespace {} not empty at the end", engine.namespace()))
}
