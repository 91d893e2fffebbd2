//! `make bench`, environments: activating a branch whose parent holds
//! 1 GiB of mount data in 10 000 files, against `cp -a` of the same tree
//! on the same filesystem in the same run.
//!
//! Measured, per filesystem: the data directory on the host's disk, and
//! (when a loop device and `mkfs.xfs` are available) on an XFS filesystem
//! with reflinks, where the clone is copy-on-write:
//! - activation: `launchway environment activate` from the CLI call until
//!   it returns with the child serving (clone + build reused + deploy);
//! - the clone alone (from the activity log's `Cloned … in X s`);
//! - `cp -a` (coreutils 9 reflinks where it can) and
//!   `cp -a --reflink=never` (a full copy) of the parent's volume;
//! - the parent while it is cloned: requests every 10 ms, failures and the
//!   slowest (its containers are frozen for the second pass).
//!
//! Usage: `activate-bench LAUNCHWAY_BINARY [FILES] [TOTAL_MIB]` (root;
//! containerd from `LAUNCHWAY_CONTAINERD_SOCKET`).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::{LaunchwayServer, XfsMount, fill, git, run};

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
    let disk = tempfile::tempdir()?;
    measure("host disk", disk.path(), &launchway, files, total_mib)?;
    match XfsMount::new(4096 + 3 * total_mib as u64) {
        Ok(xfs) => {
            let result = measure("XFS, reflink", &xfs.dir, &launchway, files, total_mib);
            drop(xfs);
            result?;
        }
        Err(error) => println!("XFS with reflinks: not measured ({error:#})"),
    }
    Ok(())
}

fn measure(
    label: &str,
    root: &Path,
    launchway: &Path,
    files: usize,
    total_mib: usize,
) -> anyhow::Result<()> {
    let key = root.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
        .arg(&key))?;
    let mut server = LaunchwayServer::start(launchway, root, &key)?;
    let result = activation(label, root, &server, files, total_mib);
    server.stop();
    result
}

fn activation(
    label: &str,
    root: &Path,
    server: &LaunchwayServer,
    files: usize,
    total_mib: usize,
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
    // Files changed in the 2 s before a clone are copied again with the
    // parent frozen (timestamps are too coarse to trust); data written by
    // an app is normally older than that.
    std::thread::sleep(Duration::from_secs(3));

    let probe = Probe::start(server.router, "main.clones.localhost");
    let started = Instant::now();
    let log = server.cli_log(&["environment", "activate", "-p", "clones", "feature"])?;
    let activation = started.elapsed();
    let (failures, slowest, requests) = probe.stop();
    let clone = log
        .lines()
        .find_map(|line| {
            let rest = line.split(" in ").nth(1)?;
            line.contains("Cloned ")
                .then(|| rest.split_whitespace().next()?.parse::<f64>().ok())?
        })
        .context("no `Cloned … in X s` line in the activation log")?;
    if let Some(line) = log.lines().find(|line| line.contains("Cloned ")) {
        println!("[{label}] {}", line.trim());
    }
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
    let cp_default = cp(&[], "cp-a")?;
    let cp_full = cp(&["--reflink=never"], "cp-a-full")?;

    let ratio = |a: f64, b: Duration| a / b.as_secs_f64();
    println!(
        "[{label}] activation (clone + reused build + deploy): {:.3} s",
        activation.as_secs_f64()
    );
    println!("[{label}] clone of the data alone:                   {clone:.3} s");
    println!(
        "[{label}] cp -a of the same tree:                    {:.3} s",
        cp_default.as_secs_f64()
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
        "[{label}] the parent during activation: {requests} requests, {failures} failed, slowest {:.0} ms",
        slowest.as_secs_f64() * 1000.0
    );
    Ok(())
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
