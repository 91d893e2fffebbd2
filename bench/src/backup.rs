//! `make bench`, backups: an environment holding 1 GiB (half in a mount's
//! files, half in PostgreSQL), backed up and restored by Launchway, against
//! what an operator would run by hand in the same run: `tar | zstd` of the
//! mount plus `pg_dump` of the database (through `launchway db dump`: the
//! server's own pg_dump), and, for the restore, `zstd -d | tar -x` plus
//! loading the dump with psql (`launchway sql`).
//!
//! Measured per filesystem (the host's disk, and XFS with reflinks when a
//! loop device and `mkfs.xfs` are available):
//! - `backup create` wall time and the environment's pause (recorded);
//! - `backup restore` wall time (staging, swap, redeploy with its hook);
//! - the baselines, and the ratios Launchway / baseline.
//!
//! The figures go to `$LW_BENCH_DIR/backup-bench.json` (see report.rs).
//!
//! Usage: `backup-bench LAUNCHWAY_BINARY [TOTAL_MIB]` (root; containerd
//! from `LAUNCHWAY_CONTAINERD_SOCKET`).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

mod common;
mod report;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::{LaunchwayServer, XfsMount, fill, git, run};
use report::{Figure, Report, Target};

const CONFIG: &str = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: mkdir -p public && echo up > public/index.html
    relationships:
      database: "db:postgresql"
    mounts:
      uploads:
        source: storage
        source_path: uploads
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
services:
  db:
    type: postgresql:15
"#;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: backup-bench LAUNCHWAY_BINARY [TOTAL_MIB]";
    let launchway = PathBuf::from(args.next().context(usage)?);
    let total_mib: usize = args.next().map_or(Ok(1024), |n| n.parse())?;
    println!(
        "backup and restore of an environment holding {total_mib} MiB: half mount files, half PostgreSQL"
    );
    let mut report = Report::new("backup-bench");
    let disk = tempfile::tempdir()?;
    measure("host disk", disk.path(), &launchway, total_mib, &mut report)?;
    match XfsMount::new(4096 + 6 * total_mib as u64) {
        Ok(xfs) => {
            let result = measure("XFS, reflink", &xfs.dir, &launchway, total_mib, &mut report);
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
    total_mib: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let key = root.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
        .arg(&key))?;
    let mut server = LaunchwayServer::start(launchway, root, &key)?;
    let result = backup_and_restore(label, root, &server, total_mib, report);
    server.stop();
    result
}

/// Runs `command`, timed.
fn timed(command: &mut Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    run(command)?;
    Ok(started.elapsed())
}

fn backup_and_restore(
    label: &str,
    root: &Path,
    server: &LaunchwayServer,
    total_mib: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    server.use_busybox_runtime()?;
    let remote = server.project("data")?;
    let work = root.join("work");
    std::fs::create_dir_all(work.join(".upsun"))?;
    std::fs::write(work.join(".upsun/config.yaml"), CONFIG)?;
    run(git(&work).args(["init", "-q", "--initial-branch=main"]))?;
    run(git(&work).args(["add", "-A"]))?;
    run(git(&work).args(["commit", "-q", "-m", "v1"]))?;
    run(git(&work)
        .env("GIT_SSH_COMMAND", &server.ssh_command)
        .args(["push", "-q", &remote, "HEAD:main"]))?;

    // Half the data as files in the mount (what an app's uploads are).
    let env_dir = server
        .data
        .join("environments")
        .join(launchway_deploy::environment_id("data", "main"));
    let volume = env_dir.join("volumes/web/uploads");
    if !volume.is_dir() {
        bail!("the mount {} is missing", volume.display());
    }
    let filled = Instant::now();
    fill(&volume, 5_000, (total_mib / 2) << 20)?;
    // The other half in a table (rows of ~1 KiB).
    let rows = (total_mib / 2) * 1024;
    server.cli(&[
        "sql",
        "-p",
        "data",
        "-e",
        "main",
        "-c",
        &format!(
            "CREATE TABLE blobs AS SELECT g AS id, md5(g::text) || repeat(md5((g * 7)::text), 30) AS body FROM generate_series(1, {rows}) g"
        ),
    ])?;
    run(&mut Command::new("sync"))?;
    println!(
        "[{label}] wrote the data in {:.1} s (mount {} MiB, services/ {} MiB)",
        filled.elapsed().as_secs_f64(),
        du_mib(&env_dir.join("volumes"))?,
        du_mib(&env_dir.join("services"))?,
    );
    // Files changed in the 2 s before a copy are copied again paused.
    std::thread::sleep(Duration::from_secs(3));

    // Launchway's backup.
    let started = Instant::now();
    let log = server.cli_log(&["backup", "create", "-p", "data", "-e", "main"])?;
    let backup_time = started.elapsed();
    if let Some(line) = log.lines().find(|l| l.contains("the environment was")) {
        println!("[{label}] {}", line.trim());
    }
    let listed: serde_json::Value =
        serde_json::from_str(&server.cli(&["backups", "-p", "data", "--json"])?)?;
    let backup = listed[0]["id"]
        .as_str()
        .context("no backup listed")?
        .to_owned();
    let paused = Duration::from_millis(listed[0]["paused_ms"].as_u64().unwrap_or(0));

    // By hand: tar | zstd of the mount, pg_dump of the database.
    let archive = root.join("uploads.tar.zst");
    let tar_time = timed(Command::new("sh").arg("-c").arg(format!(
        "tar -C '{}' -cf - . | zstd -q -T0 -3 -o '{}'",
        volume.display(),
        archive.display()
    )))?;
    let dump = root.join("dump.sql");
    let started = Instant::now();
    let status = server
        .cli_command(&["db", "dump", "-p", "data", "-e", "main"])
        .stdout(std::fs::File::create(&dump)?)
        .status()?;
    if !status.success() {
        bail!("launchway db dump failed");
    }
    let dump_time = started.elapsed();
    run(&mut Command::new("sync"))?;
    let baseline = tar_time + dump_time;

    // Launchway's restore (staging, swap, redeploy).
    let started = Instant::now();
    let log = server.cli_log(&["backup", "restore", "-p", "data", &backup])?;
    let restore_time = started.elapsed();
    let held = log
        .lines()
        .find_map(|l| {
            l.split("requests held ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(f64::NAN);

    // By hand: untar into a fresh directory, load the dump with psql.
    let untarred = root.join("untarred");
    std::fs::create_dir_all(&untarred)?;
    let untar_time = timed(Command::new("sh").arg("-c").arg(format!(
        "zstd -q -dc '{}' | tar -C '{}' -xf -",
        archive.display(),
        untarred.display()
    )))?;
    server.cli(&["sql", "-p", "data", "-e", "main", "-c", "DROP TABLE blobs"])?;
    let started = Instant::now();
    let status = server
        .cli_command(&["sql", "-p", "data", "-e", "main"])
        .stdin(std::fs::File::open(&dump)?)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("loading the dump failed");
    }
    let load_time = started.elapsed();
    let restore_baseline = untar_time + load_time;

    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "[{label}] backup create:              {:.2} s (environment paused {:.0} ms)",
        secs(backup_time),
        paused.as_secs_f64() * 1000.0
    );
    println!(
        "[{label}] tar | zstd + pg_dump:       {:.2} s ({:.2} + {:.2})",
        secs(baseline),
        secs(tar_time),
        secs(dump_time)
    );
    println!(
        "[{label}] backup restore:             {:.2} s (requests held {held:.2} s)",
        secs(restore_time)
    );
    println!(
        "[{label}] untar + psql < dump:        {:.2} s ({:.2} + {:.2})",
        secs(restore_baseline),
        secs(untar_time),
        secs(load_time)
    );
    println!(
        "[{label}] ratio backup / (tar|zstd + pg_dump) = {:.2}; pause = {:.2} s (goal ≤ 2 s with reflinks); restore / (untar + load) = {:.2}",
        secs(backup_time) / secs(baseline),
        paused.as_secs_f64(),
        secs(restore_time) / secs(restore_baseline)
    );
    report.add(Figure::compared(
        &format!("backup / (tar piped to zstd + pg_dump) [{label}]"),
        "s",
        secs(backup_time),
        secs(baseline),
        Target::None,
    ));
    // The goal is for reflinks; on the host disk the pause is reported.
    let pause_goal = if label.contains("reflink") {
        Target::AtMost(2.0)
    } else {
        Target::None
    };
    report.add(Figure::value(
        &format!("environment's pause during the backup [{label}]"),
        "s",
        paused.as_secs_f64(),
        pause_goal,
    ));
    report.add(Figure::compared(
        &format!("restore / (untar + psql < dump) [{label}]"),
        "s",
        secs(restore_time),
        secs(restore_baseline),
        Target::None,
    ));
    Ok(())
}

fn du_mib(path: &Path) -> anyhow::Result<String> {
    let out = run(Command::new("du").args(["-sm"]).arg(path))?;
    Ok(out.split_whitespace().next().unwrap_or("?").to_owned())
}
