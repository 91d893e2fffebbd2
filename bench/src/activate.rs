//! `make bench`, environments: activating a branch whose parent holds
//! 1 GiB of mount data in 10 000 files, against `cp -a` of the same tree
//! on the same filesystem in the same run.
//!
//! Measured, per filesystem: the data directory on the host's disk, and
//! (when a loop device and `mkfs.xfs` are available) on an XFS filesystem
//! with reflinks, where the clone is copy-on-write:
//! - activation: `launchway environment activate` from the CLI call until
//!   it returns with the child serving (clone + build reused + deploy);
//! - the clone alone (from the activity log's `Cloned … in X s`, whose
//!   whole line is printed: files, pause, passes);
//! - `cp -a` (coreutils 9 reflinks where it can) and
//!   `cp -a --reflink=never` (a full copy) of the parent's volume;
//! - the parent while it is cloned: requests every 10 ms, failures and the
//!   slowest (its containers are frozen for the last pass), and the pause
//!   the daemon reports.
//!
//! One `cp -a` of the parent's data to a throw-away target runs before the
//! activation, and the measured `cp -a` after it. On XFS the first reflink
//! of a file also sets the source's reflink flag (a transaction on the
//! source): without that first copy, the clone would pay it for every file
//! and the `cp -a` after it would find it done. Both `cp -a` times are
//! printed; the figure is clone / `cp -a` after (target <= 1.0 on XFS with
//! reflinks, reported only on the host disk). The figures go to
//! `$LW_BENCH_DIR/activate-bench.json` (see report.rs).
//!
//! Usage: `activate-bench LAUNCHWAY_BINARY [FILES] [TOTAL_MIB]` (root;
//! containerd from `LAUNCHWAY_CONTAINERD_SOCKET`).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

mod common;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::{LaunchwayServer, XfsMount, fill, git, run};
use report::{Figure, Report, Target};

const CONFIG: &str = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: mkdir -p public/data && echo parent > public/index.html
    mounts:
      public/data:
        source: local
        source_path: data
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
"#;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: activate-bench LAUNCHWAY_BINARY [FILES] [TOTAL_MIB]";
    let launchway = PathBuf::from(args.next().context(usage)?);
    let files: usize = args.next().map_or(Ok(10_000), |n| n.parse())?;
    let total_mib: usize = args.next().map_or(Ok(1024), |n| n.parse())?;
    println!(
        "activation of a child whose parent has {total_mib} MiB of mount data in {files} files"
    );
    let mut report = Report::new("activate-bench");
    let disk = tempfile::tempdir()?;
    measure(
        "host disk",
        disk.path(),
        &launchway,
        files,
        total_mib,
        &mut report,
    )?;
    match XfsMount::new(4096 + 3 * total_mib as u64) {
        Ok(xfs) => {
            let result = measure(
                "XFS, reflink",
                &xfs.dir,
                &launchway,
                files,
                total_mib,
                &mut report,
            );
            drop(xfs);
            result?;
        }
        Err(error) => println!("XFS with reflinks: not measured ({error:#})"),
    }
    report.finish()
}

fn measure(
    label: &str,
    root: &Path,
    launchway: &Path,
    files: usize,
    total_mib: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let key = root.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
        .arg(&key))?;
    let mut server = LaunchwayServer::start(launchway, root, &key)?;
    let result = activation(label, root, &server, files, total_mib, report);
    server.stop();
    result
}

fn activation(
    label: &str,
    root: &Path,
    server: &LaunchwayServer,
    files: usize,
    total_mib: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    server.use_busybox_runtime()?;
    let remote = server.project("clones")?;
    let work = root.join("work");
    std::fs::create_dir_all(work.join(".upsun"))?;
    std::fs::write(work.join(".upsun/config.yaml"), CONFIG)?;
    run(git(&work).args(["init", "-q", "--initial-branch=main"]))?;
    run(git(&work).args(["add", "-A"]))?;
    run(git(&work).args(["commit", "-q", "-m", "v1"]))?;
    for branch in ["main", "feature"] {
        run(git(&work)
            .env("GIT_SSH_COMMAND", &server.ssh_command)
            .args(["push", "-q", &remote, &format!("HEAD:{branch}")]))?;
    }

    // The parent's data, as its app would have written it (uid 10000).
    let volume = server
        .data
        .join("environments")
        .join(launchway_deploy::environment_id("clones", "main"))
        .join("volumes/web/data");
    if !volume.is_dir() {
        bail!("the parent's volume {} is missing", volume.display());
    }
    let filled = Instant::now();
    fill(&volume, files, total_mib << 20)?;
    run(&mut Command::new("sync"))?;
    println!(
        "[{label}] wrote the parent's data in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    let cp = |extra: &[&str], name: &str| -> anyhow::Result<Duration> {
        let target = root.join(name);
        let started = Instant::now();
        run(Command::new("cp")
            .arg("-a")
            .args(extra)
            .arg(&volume)
            .arg(&target))?;
        let took = started.elapsed();
        std::fs::remove_dir_all(&target)?;
        Ok(took)
    };
    // The first reflink of each file is paid here, not by the clone.
    let cp_before = cp(&[], "cp-a-first")?;
    run(&mut Command::new("sync"))?;
    // Files changed in the 2 s before a clone are copied again with the
    // parent frozen (timestamps are too coarse to trust); data written by
    // an app is normally older than that.
    std::thread::sleep(Duration::from_secs(3));

    let probe = Probe::start(server.router, "main.clones.localhost");
    let started = Instant::now();
    let log = server.cli_log(&["environment", "activate", "-p", "clones", "feature"])?;
    let activation = started.elapsed();
    let (failures, slowest, requests) = probe.stop();
    let cloned = log
        .lines()
        .find(|line| line.contains("Cloned "))
        .context("no `Cloned …` line in the activation log")?;
    // The whole line: files, time, pause, and whatever follows (passes).
    println!("[{label}] {}", cloned.trim());
    let clone = seconds_after_in(cloned)
        .with_context(|| format!("no `in X s` in the activation log's line {cloned:?}"))?;
    let paused_ms = cloned
        .split_once("paused ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok());
    let child_page = common::http_get(server.router, "feature.clones.localhost", "/")?;
    if child_page != "parent\n" {
        bail!("the child does not serve: {child_page:?}");
    }
    let cloned_file = server
        .data
        .join("environments")
        .join(launchway_deploy::environment_id("clones", "feature"))
        .join("volumes/web/data/d0/f0");
    if std::fs::read(&cloned_file)? != std::fs::read(volume.join("d0/f0"))? {
        bail!("the child's copy differs from the parent's");
    }

    let cp_default = cp(&[], "cp-a")?;
    let cp_full = cp(&["--reflink=never"], "cp-a-full")?;

    let ratio = |a: f64, b: Duration| a / b.as_secs_f64();
    println!(
        "[{label}] activation (clone + reused build + deploy): {:.3} s",
        activation.as_secs_f64()
    );
    println!("[{label}] clone of the data alone:                   {clone:.3} s");
    println!(
        "[{label}] cp -a of the same tree, after the clone:   {:.3} s (before the activation, the first cp -a: {:.3} s)",
        cp_default.as_secs_f64(),
        cp_before.as_secs_f64()
    );
    println!(
        "[{label}] cp -a --reflink=never:                     {:.3} s",
        cp_full.as_secs_f64()
    );
    println!(
        "[{label}] ratio activation / cp -a = {:.2}; clone / cp -a = {:.2}; activation / full copy = {:.2}; clone / full copy = {:.2}",
        ratio(activation.as_secs_f64(), cp_default),
        ratio(clone, cp_default),
        ratio(activation.as_secs_f64(), cp_full),
        ratio(clone, cp_full),
    );
    println!(
        "[{label}] the parent during activation: {requests} requests, {failures} failed, slowest {:.0} ms; paused {} (daemon's report)",
        slowest.as_secs_f64() * 1000.0,
        paused_ms.map_or_else(|| "?".to_owned(), |ms| format!("{ms:.0} ms"))
    );
    // The issue's target is on a reflink filesystem; elsewhere both copy.
    let target = if label.contains("reflink") {
        Target::AtMost(1.0)
    } else {
        Target::None
    };
    report.add(Figure::compared(
        &format!("clone / cp -a [{label}]"),
        "s",
        clone,
        cp_default.as_secs_f64(),
        target,
    ));
    report.add(Figure::compared(
        &format!("activation / cp -a [{label}]"),
        "s",
        activation.as_secs_f64(),
        cp_default.as_secs_f64(),
        Target::None,
    ));
    if let Some(ms) = paused_ms {
        report.add(Figure::value(
            &format!("parent's pause during the clone [{label}]"),
            "ms",
            ms,
            Target::None,
        ));
    }
    Ok(())
}

/// The seconds of the first `in X s` of a `Cloned …` line (what follows,
/// such as the passes' times, is not read).
fn seconds_after_in(line: &str) -> Option<f64> {
    let mut from = 0;
    while let Some(at) = line[from..].find(" in ") {
        let mut words = line[from + at + 4..].split_whitespace();
        if let Some(seconds) = words.next().and_then(|w| w.parse::<f64>().ok())
            && matches!(words.next(), Some("s" | "s;" | "s,"))
        {
            return Some(seconds);
        }
        from += at + 1;
    }
    None
}

/// Requests to the parent every 10 ms while it is cloned.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Duration, usize)>,
}

impl Probe {
    fn start(router: std::net::SocketAddr, host: &'static str) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut failures, mut slowest, mut requests) = (0, Duration::ZERO, 0);
            while !flag.load(Ordering::SeqCst) {
                let started = Instant::now();
                match common::http_get(router, host, "/") {
                    Ok(body) if body == "parent\n" => {}
                    _ => failures += 1,
                }
                requests += 1;
                slowest = slowest.max(started.elapsed());
                std::thread::sleep(Duration::from_millis(10));
            }
            (failures, slowest, requests)
        });
        Probe { stop, thread }
    }

    fn stop(self) -> (usize, Duration, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .unwrap_or((usize::MAX, Duration::ZERO, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::seconds_after_in;

    #[test]
    fn the_clone_time_is_read_with_or_without_a_suffix() {
        let today = "    Cloned 10000 files (1024.0 MiB, reflinked) from main in 0.28 s; 0 changed while copying (the parent was paused 12 ms)";
        assert_eq!(seconds_after_in(today), Some(0.28));
        let later = "    Cloned 10000 files (1024.0 MiB, reflinked) from main in 0.281 s; 0 changed while copying (the parent was paused 12 ms); passes: first 180 ms, catch-up skipped, frozen 40 ms";
        assert_eq!(seconds_after_in(later), Some(0.281));
        assert_eq!(
            seconds_after_in("Cloned 1 files from in in 2.5 s;"),
            Some(2.5)
        );
        assert_eq!(seconds_after_in("Cloned nothing"), None);
    }
}
