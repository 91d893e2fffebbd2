//! `make bench`: pushes through Launchway against the same pushes through
//! OpenSSH's `sshd` running plain `git receive-pack`, measured in the same run:
//!
//! 1. a 50 MB repository into an empty repository, to an inactive
//!    environment (transport, config check, activity; no build);
//! 2. a one-commit push whose apps are all reused (the commit changes a file
//!    outside `source.root`), from `git push` start to its exit;
//! 3. the overhead of a cold build around a build hook of `sleep 1`: the
//!    build's own time minus 1 s, and the push's time minus 1 s minus the
//!    baseline push of the same commit.
//!
//! Both sides get the same client (the stock `ssh` with a pinned host key)
//! and the same commits. `python:3.11` is the busybox runtime fixture, so a
//! build runs on a warm runtime image. Launchway uses the containerd in
//! `LAUNCHWAY_CONTAINERD_SOCKET` (as `make bench` sets it), in a namespace of
//! its own.
//!
//! Usage: `push-bench LAUNCHWAY_BINARY [RUNS]` (run as root: sshd needs it).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use common::{LaunchwayServer, Sshd, git, list, median, push, push_with, run};
use launchway_integration::{SAMPLE_CONFIG, random_bytes};

const REPO_BYTES: usize = 50 * 1024 * 1024;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let launchway = PathBuf::from(
        args.next()
            .context("usage: push-bench LAUNCHWAY_BINARY [RUNS]")?,
    );
    let runs: usize = args.next().map_or(Ok(5), |r| r.parse())?;
    let dir = tempfile::tempdir()?;
    let root = dir.path();

    let key = root.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
        .arg(&key))?;

    let work = root.join("work");
    make_repo(&work)?;

    let mut launchway = LaunchwayServer::start(&launchway, root, &key)?;
    launchway.cli(&[
        "runtimes",
        "import",
        "python:3.11",
        &launchway_integration::busybox_archive()
            .display()
            .to_string(),
    ])?;
    let sshd = Sshd::start(root, &key)?;

    let mut launchway_times = Vec::new();
    let mut sshd_times = Vec::new();
    let mut launchway_growth = Vec::new();
    for run_index in 0..runs {
        // Alternate which goes first so drift on the machine hits both.
        let order: [bool; 2] = if run_index % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for through_launchway in order {
            if through_launchway {
                let project = format!("bench{run_index}");
                let remote = launchway.project(&project)?;
                let before = launchway.peak_rss_kib();
                let elapsed = push_with(
                    &work,
                    &remote,
                    &launchway.ssh_command,
                    &["-o", "environment.status=inactive"],
                )?;
                launchway_growth.push(launchway.peak_rss_kib().saturating_sub(before));
                launchway_times.push(elapsed);
            } else {
                let remote = sshd.new_repo(&format!("bench{run_index}"))?;
                sshd_times.push(push(&work, &remote, &sshd.ssh_command)?);
            }
        }
    }
    let launchway_median = median(&mut launchway_times);
    let sshd_median = median(&mut sshd_times);
    let ratio = launchway_median.as_secs_f64() / sshd_median.as_secs_f64();
    println!(
        "push of a {} MB repository, {runs} runs each, median:",
        REPO_BYTES / (1024 * 1024)
    );
    println!(
        "  launchway (russh + git receive-pack + checks): {:>8.3} s   runs: {}",
        launchway_median.as_secs_f64(),
        list(&launchway_times)
    );
    println!(
        "  openssh sshd + git receive-pack (baseline):    {:>8.3} s   runs: {}",
        sshd_median.as_secs_f64(),
        list(&sshd_times)
    );
    println!("  ratio launchway / baseline: {ratio:.3} (target <= 1.2)");
    println!(
        "  launchway daemon peak memory growth per push: max {} KiB",
        launchway_growth.iter().max().copied().unwrap_or(0)
    );

    reused_and_cold_builds(&launchway, &sshd, root, runs)?;
    launchway.stop();
    Ok(())
}

const BUILD_CONFIG: &str = r#"applications:
  web:
    type: "python:3.11"
    source:
      root: web
    hooks:
      build: sleep 1
    web:
      commands:
        start: httpd -f -p 127.0.0.1:$PORT -h /app
"#;

/// Measures (a) all-reused pushes and (b) cold builds, against sshd pushes
/// of the same commits.
fn reused_and_cold_builds(
    launchway: &LaunchwayServer,
    sshd: &Sshd,
    root: &Path,
    runs: usize,
) -> anyhow::Result<()> {
    let work = root.join("build-work");
    std::fs::create_dir_all(work.join("web"))?;
    std::fs::create_dir_all(work.join(".upsun"))?;
    std::fs::write(work.join(".upsun/config.yaml"), BUILD_CONFIG)?;
    std::fs::write(work.join("web/app.py"), "print('v0')\n")?;
    run(git(&work).args(["init", "-q", "--initial-branch=main"]))?;
    run(git(&work).args(["add", "-A"]))?;
    run(git(&work).args(["commit", "-q", "-m", "v0"]))?;
    let launchway_remote = launchway.project("builds")?;
    let sshd_remote = sshd.new_repo("builds")?;
    // Warm up: the first build, and the baseline's first push.
    push(&work, &launchway_remote, &launchway.ssh_command)?;
    push(&work, &sshd_remote, &sshd.ssh_command)?;

    let commit = |path: &str, content: String, message: &str| -> anyhow::Result<()> {
        std::fs::write(work.join(path), content)?;
        run(git(&work).args(["commit", "-q", "-am", message]))?;
        Ok(())
    };
    let mut reused = Vec::new();
    let mut reused_base = Vec::new();
    let mut cold = Vec::new();
    let mut cold_base = Vec::new();
    let mut cold_build = Vec::new();
    std::fs::write(work.join("README.md"), "docs\n")?;
    run(git(&work).args(["add", "README.md"]))?;
    for index in 0..runs {
        // (a) Outside web/: every app reused.
        commit("README.md", format!("docs {index}\n"), "docs")?;
        let pair = timed_pair(
            index,
            &work,
            launchway,
            &launchway_remote,
            sshd,
            &sshd_remote,
        )?;
        reused.push(pair.0);
        reused_base.push(pair.1);
        // (b) Inside web/: a cold build of a `sleep 1` hook.
        commit("web/app.py", format!("print('v{}')\n", index + 1), "code")?;
        let pair = timed_pair(
            index,
            &work,
            launchway,
            &launchway_remote,
            sshd,
            &sshd_remote,
        )?;
        cold.push(pair.0);
        cold_base.push(pair.1);
        cold_build.push(last_build_elapsed(launchway, "builds")?);
    }
    let (reused_median, reused_base_median) = (median(&mut reused), median(&mut reused_base));
    println!("push of one commit whose apps are all reused, {runs} runs each, median:");
    println!(
        "  launchway (validate, plan, resolve, reuse):    {:>8.3} s   runs: {}",
        reused_median.as_secs_f64(),
        list(&reused)
    );
    println!(
        "  openssh sshd + git receive-pack (baseline):    {:>8.3} s   runs: {}",
        reused_base_median.as_secs_f64(),
        list(&reused_base)
    );
    println!(
        "  ratio launchway / baseline: {:.3} (target <= 1.5)",
        reused_median.as_secs_f64() / reused_base_median.as_secs_f64()
    );
    let one = Duration::from_secs(1);
    let build_median = median(&mut cold_build);
    let cold_median = median(&mut cold);
    let cold_base_median = median(&mut cold_base);
    println!("cold build around a `sleep 1` build hook (warm runtime image), {runs} runs, median:");
    println!(
        "  build time (record's elapsed) - 1 s:           {:>8.3} s   builds: {} (target <= 1.5)",
        build_median.saturating_sub(one).as_secs_f64(),
        list(&cold_build)
    );
    println!(
        "  push time - 1 s:                               {:>8.3} s   pushes: {}",
        cold_median.saturating_sub(one).as_secs_f64(),
        list(&cold)
    );
    println!(
        "  push time - 1 s - baseline push:               {:>8.3} s   baseline: {}",
        cold_median.as_secs_f64() - 1.0 - cold_base_median.as_secs_f64(),
        list(&cold_base)
    );
    Ok(())
}

/// Pushes HEAD to both remotes, alternating which goes first.
fn timed_pair(
    index: usize,
    work: &Path,
    launchway: &LaunchwayServer,
    launchway_remote: &str,
    sshd: &Sshd,
    sshd_remote: &str,
) -> anyhow::Result<(Duration, Duration)> {
    if index.is_multiple_of(2) {
        let a = push(work, launchway_remote, &launchway.ssh_command)?;
        let b = push(work, sshd_remote, &sshd.ssh_command)?;
        Ok((a, b))
    } else {
        let b = push(work, sshd_remote, &sshd.ssh_command)?;
        let a = push(work, launchway_remote, &launchway.ssh_command)?;
        Ok((a, b))
    }
}

/// The elapsed time of the newest build of `project` (from `builds info`).
fn last_build_elapsed(launchway: &LaunchwayServer, project: &str) -> anyhow::Result<Duration> {
    let list = launchway.cli(&["builds", "-p", project, "--limit", "1"])?;
    let id = list
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .context("no build listed")?;
    let info = launchway.cli(&["builds", "info", id])?;
    let seconds: f64 = info
        .lines()
        .find_map(|l| l.strip_prefix("Elapsed"))
        .map(|rest| rest.trim().trim_end_matches('s').to_owned())
        .context("no elapsed time")?
        .parse()?;
    Ok(Duration::from_secs_f64(seconds))
}

/// A repository of about 50 MB of incompressible data plus a valid config.
fn make_repo(work: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(work.join("web"))?;
    std::fs::create_dir_all(work.join(".upsun"))?;
    std::fs::write(work.join(".upsun/config.yaml"), SAMPLE_CONFIG)?;
    for file in 0..10u64 {
        let bytes = random_bytes(REPO_BYTES / 10, 0x9e37_79b9_7f4a_7c15 + file);
        std::fs::write(work.join(format!("web/data-{file}.bin")), bytes)?;
    }
    run(git(work).args(["init", "-q", "--initial-branch=main"]))?;
    run(git(work).args(["add", "-A"]))?;
    run(git(work).args(["commit", "-q", "-m", "50 MB"]))?;
    // Pack once so both sides receive the same pack from the same objects.
    run(git(work).args(["repack", "-adq"]))?;
    Ok(())
}
