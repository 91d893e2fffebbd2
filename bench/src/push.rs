//! `make bench`: pushes through Launchway against the same pushes through
//! OpenSSH's `sshd` running plain `git receive-pack`, measured in the same run:
//!
//! 1. receive only: a 50 MB repository pushed into an empty repository.
//!    Launchway gets `main:refs/heads/receive` in a fresh project: a branch
//!    that is not the default one is created inactive, so nothing is built
//!    or deployed (transport, config check, environment record, activity).
//!    The bench fails unless no build ran, the `receive` environment is
//!    `inactive` and the push said `nothing is built or deployed`. sshd gets
//!    `main`: both receive the same pack;
//! 2. the same tree pushed to an active environment (`main` of a fresh
//!    project) until the router serves it (build, deploy), against an sshd
//!    push, `git archive main web | tar -x` into a directory and `ctr run` of
//!    the same runtime image with that directory bind-mounted read-only at
//!    `/app`, until it serves (report only: Launchway freezes a 50 MB layer,
//!    the baseline packs nothing);
//! 3. push-to-serving of a one-commit push whose build is reused (the commit
//!    changes a file outside `source.root`): from `git push` start until the
//!    router serves the redeployed app, against a plain push to sshd plus
//!    starting the same image with `ctr run` until it serves;
//! 4. the overhead of a cold build around a build hook of `sleep 1`: the
//!    build's own time minus 1 s, and the push's time (build and deploy)
//!    minus 1 s minus the baseline push of the same commit.
//!
//! Both sides get the same client (the stock `ssh` with a pinned host key)
//! and the same commits. `python:3.11` is the busybox runtime fixture, so a
//! build runs on a warm runtime image. Launchway uses the containerd in
//! `LAUNCHWAY_CONTAINERD_SOCKET` (as `make bench` sets it), in a namespace of
//! its own. The figures go to `$LW_BENCH_DIR/push-bench.json` (see
//! report.rs).
//!
//! Usage: `push-bench LAUNCHWAY_BINARY [RUNS]` (run as root: sshd needs it).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

mod common;
mod report;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::{LaunchwayServer, Sshd, git, list, median, push, push_refspec, run};
use launchway_integration::{SAMPLE_CONFIG, random_bytes};
use report::{Figure, Report, Target};

const REPO_BYTES: usize = 50 * 1024 * 1024;

/// The branch the receive-only figure pushes: not the default branch, so
/// its environment is created inactive.
const RECEIVE_BRANCH: &str = "receive";

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
    launchway.use_busybox_runtime()?;
    let sshd = Sshd::start(root, &key)?;

    let mut report = Report::new("push-bench");
    receive_only(&launchway, &sshd, &work, runs, &mut report)?;
    active_push(&launchway, &sshd, root, &work, runs, &mut report)?;
    reused_and_cold_builds(&launchway, &sshd, root, runs, &mut report)?;
    launchway.stop();
    report.finish()
}

/// Figure 1: the 50 MB push that builds nothing.
fn receive_only(
    launchway: &LaunchwayServer,
    sshd: &Sshd,
    work: &Path,
    runs: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let refspec = format!("main:refs/heads/{RECEIVE_BRANCH}");
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
                let (elapsed, said) =
                    push_refspec(work, &remote, &launchway.ssh_command, &[], &refspec)?;
                launchway_growth.push(launchway.peak_rss_kib().saturating_sub(before));
                launchway_times.push(elapsed);
                // After the timer: the CLI calls are not part of the push.
                assert_received_only(launchway, &project, &said)?;
            } else {
                let remote = sshd.new_repo(&format!("bench{run_index}"))?;
                sshd_times.push(push(work, &remote, &sshd.ssh_command)?);
            }
        }
    }
    let figure = Figure::timed(
        "50 MB push, received only (inactive branch)",
        &launchway_times,
        &sshd_times,
        Target::AtMost(1.2),
    );
    let (launchway_median, sshd_median) = (median(&mut launchway_times), median(&mut sshd_times));
    println!(
        "push of a {} MB repository to a new inactive branch (nothing built), {runs} runs each, median:",
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
    println!(
        "  ratio launchway / baseline: {:.3} (target <= 1.2); checked each time: no build, `{RECEIVE_BRANCH}` inactive",
        launchway_median.as_secs_f64() / sshd_median.as_secs_f64()
    );
    println!(
        "  launchway daemon peak memory growth per push: max {} KiB",
        launchway_growth.iter().max().copied().unwrap_or(0)
    );
    report.add(figure);
    Ok(())
}

/// Fails unless the receive-only push to `project` built and deployed
/// nothing: no build listed, its environment `inactive`, and the push's log
/// says so.
fn assert_received_only(
    launchway: &LaunchwayServer,
    project: &str,
    said: &str,
) -> anyhow::Result<()> {
    let builds = launchway.cli(&["builds", "-p", project])?;
    let lines: Vec<&str> = builds.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != 1 || !lines[0].starts_with("ID") {
        bail!(
            "the receive-only push to {project} ran a build, so the figure would not measure receiving; `launchway builds -p {project}`:\n{builds}"
        );
    }
    let environments = launchway.cli(&["environments", "-p", project])?;
    let status = environments.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.first() == Some(&RECEIVE_BRANCH)).then(|| fields.get(2).copied())?
    });
    if status != Some("inactive") {
        bail!(
            "the `{RECEIVE_BRANCH}` environment of {project} is {status:?}, not inactive; `launchway environments -p {project}`:\n{environments}"
        );
    }
    if !said.contains("nothing is built or deployed") {
        bail!(
            "the receive-only push to {project} did not say `nothing is built or deployed`; it said:\n{said}"
        );
    }
    Ok(())
}

/// Figure 2: the same tree to an active environment, until it serves.
fn active_push(
    launchway: &LaunchwayServer,
    sshd: &Sshd,
    root: &Path,
    work: &Path,
    runs: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let image = launchway_containerd::runtimes::image_name("python:3.11");
    // Warm up once each: the first build on the runtime image, the first
    // `ctr run` of it (its snapshot unpacked).
    launchway_to_serving(launchway, work, "activewarm")?;
    baseline_to_serving(launchway, sshd, root, work, "activewarm", &image)?;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for index in 0..runs {
        let order = if index % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let name = format!("active{index}");
        for launchway_side in order {
            if launchway_side {
                ours.push(launchway_to_serving(launchway, work, &name)?);
            } else {
                theirs.push(baseline_to_serving(
                    launchway, sshd, root, work, &name, &image,
                )?);
            }
        }
    }
    let figure = Figure::timed(
        "50 MB push to an active environment, until it serves",
        &ours,
        &theirs,
        Target::None,
    );
    let (ours_median, theirs_median) = (median(&mut ours), median(&mut theirs));
    println!(
        "push of the same {} MB tree to an active environment (fresh project), until it serves, {runs} runs each, median:",
        REPO_BYTES / (1024 * 1024)
    );
    println!(
        "  launchway (receive, build, deploy, router serves): {:>8.3} s   runs: {}",
        ours_median.as_secs_f64(),
        list(&ours)
    );
    println!(
        "  sshd push + git archive | tar -x + `ctr run` of {image} with it at /app, until it serves (baseline): {:>8.3} s   runs: {}",
        theirs_median.as_secs_f64(),
        list(&theirs)
    );
    println!(
        "  ratio launchway / baseline: {:.3} (reported only: the build freezes a 50 MB layer, the baseline packs nothing)",
        ours_median.as_secs_f64() / theirs_median.as_secs_f64()
    );
    report.add(figure);
    Ok(())
}

/// A fresh project `name`: `main` pushed, until the router serves it.
fn launchway_to_serving(
    launchway: &LaunchwayServer,
    work: &Path,
    name: &str,
) -> anyhow::Result<Duration> {
    let remote = launchway.project(name)?;
    let started = Instant::now();
    let (_, said) = push_refspec(work, &remote, &launchway.ssh_command, &[], "main")?;
    wait_serving(launchway.router, &format!("main.{name}.localhost"))?;
    let elapsed = started.elapsed();
    if said.contains("Reusing") {
        bail!("the push to {name} reused a build: the figure is of a build and a deploy:\n{said}");
    }
    Ok(elapsed)
}

/// A fresh sshd repository `name`: `main` pushed, its `web` unpacked into
/// a directory, the runtime image started on it until it serves.
fn baseline_to_serving(
    launchway: &LaunchwayServer,
    sshd: &Sshd,
    root: &Path,
    work: &Path,
    name: &str,
    image: &str,
) -> anyhow::Result<Duration> {
    let remote = sshd.new_repo(name)?;
    let unpacked = root.join(format!("unpacked-{name}"));
    std::fs::create_dir_all(&unpacked)?;
    let started = Instant::now();
    push(work, &remote, &sshd.ssh_command)?;
    archive_web(&sshd.repo_path(name), &unpacked)?;
    let container = BaselineContainer::start(launchway, image, Some(&unpacked.join("web")))?;
    let elapsed = started.elapsed();
    drop(container);
    std::fs::remove_dir_all(&unpacked)?;
    Ok(elapsed)
}

/// `git --git-dir=BARE archive main web | tar -x -C INTO`.
fn archive_web(bare: &Path, into: &Path) -> anyhow::Result<()> {
    let mut archive = git(bare)
        .arg("--git-dir")
        .arg(bare)
        .args(["archive", "main", "web"])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run git archive")?;
    let tar_input = archive.stdout.take().context("git archive's stdout")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .stdin(tar_input)
        .status()
        .context("cannot run tar")?;
    let archived = archive.wait()?;
    if !archived.success() || !tar.success() {
        bail!("git archive main web | tar -x failed ({archived}, {tar})");
    }
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
    report: &mut Report,
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
        // (a) Outside web/: every app reused; Launchway deploys it and
        // serves it; the baseline pushes and starts the same image.
        commit("README.md", format!("docs {index}\n"), "docs")?;
        let image = last_build_image(launchway, "builds")?;
        let to_serving = |launchway_side: bool| -> anyhow::Result<Duration> {
            if launchway_side {
                let started = std::time::Instant::now();
                push(&work, &launchway_remote, &launchway.ssh_command)?;
                wait_serving(launchway.router, "main.builds.localhost")?;
                Ok(started.elapsed())
            } else {
                let started = std::time::Instant::now();
                push(&work, &sshd_remote, &sshd.ssh_command)?;
                let container = BaselineContainer::start(launchway, &image, None)?;
                let elapsed = started.elapsed();
                drop(container);
                Ok(elapsed)
            }
        };
        let order = if index % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for launchway_side in order {
            let elapsed = to_serving(launchway_side)?;
            if launchway_side {
                reused.push(elapsed);
            } else {
                reused_base.push(elapsed);
            }
        }
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
    report.add(Figure::timed(
        "push of a reused build, until it serves",
        &reused,
        &reused_base,
        Target::AtMost(1.5),
    ));
    let (reused_median, reused_base_median) = (median(&mut reused), median(&mut reused_base));
    println!(
        "push of one commit whose build is reused, until the app serves it, {runs} runs each, median:"
    );
    println!(
        "  launchway (reuse, deploy, router serves):      {:>8.3} s   runs: {}",
        reused_median.as_secs_f64(),
        list(&reused)
    );
    println!(
        "  sshd push + `ctr run` of the image until it serves (baseline): {:>8.3} s   runs: {}",
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
    report.add(
        Figure::value(
            "cold build around `sleep 1`: build time - 1 s",
            "s",
            build_median.saturating_sub(one).as_secs_f64(),
            Target::AtMost(1.5),
        )
        .runs(cold_build.iter().map(|t| t.as_secs_f64() - 1.0)),
    );
    report.add(Figure::value(
        "cold build around `sleep 1`: push - 1 s - baseline push",
        "s",
        cold_median.as_secs_f64() - 1.0 - cold_base_median.as_secs_f64(),
        Target::None,
    ));
    Ok(())
}

/// The image of the newest build of `project`'s app `web`.
fn last_build_image(launchway: &LaunchwayServer, project: &str) -> anyhow::Result<String> {
    let info = launchway.cli(&["builds", "info", &last_build_id(launchway, project)?])?;
    // APP RUNTIME TREE KEY (12 characters) …; images are `launchway/build/<key>`.
    let key = info
        .lines()
        .find(|l| l.starts_with("web "))
        .and_then(|l| l.split_whitespace().nth(3))
        .context("no web app in the build")?
        .to_string();
    let socket = launchway_integration::containerd_socket()
        .context("LAUNCHWAY_CONTAINERD_SOCKET is not set")?;
    let images = run(Command::new("ctr")
        .arg("--address")
        .arg(&socket)
        .args(["-n", launchway.namespace().context("no namespace")?])
        .args(["images", "ls", "-q"]))?;
    images
        .lines()
        .find(|name| name.starts_with(&format!("launchway/build/{key}")))
        .map(str::to_string)
        .context("the build's image is not in containerd")
}

/// Waits until the router answers 200 for `host`.
fn wait_serving(router: std::net::SocketAddr, host: &str) -> anyhow::Result<()> {
    common::wait_for("the app", || http_ok(router, host))
}

/// One `GET /` with `Host: host`; true when the app answered (the router
/// says 502 or 503 when it cannot; busybox httpd says 404 for `/` here).
fn http_ok(address: std::net::SocketAddr, host: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    if write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
        && !head.ends_with(b"502")
        && !head.ends_with(b"503")
}

/// The baseline's container: the same image and command, started with
/// containerd's own client (`ctr run`: the host's network, a read-only
/// root; ctr 1.6 cannot pick a user, so it runs as root), with `app`, when
/// given, bind-mounted read-only at `/app`.
struct BaselineContainer {
    ctr: Vec<String>,
    id: String,
}

impl BaselineContainer {
    fn start(
        launchway: &LaunchwayServer,
        image: &str,
        app: Option<&Path>,
    ) -> anyhow::Result<BaselineContainer> {
        let socket = launchway_integration::containerd_socket()
            .context("LAUNCHWAY_CONTAINERD_SOCKET is not set")?;
        let ctr = vec![
            "--address".to_string(),
            socket.display().to_string(),
            "-n".to_string(),
            launchway.namespace().context("no namespace")?.to_string(),
        ];
        let port = common::free_port()?;
        let id = format!("baseline-{}", launchway_integration::random_hex());
        let mount = app.map(|dir| {
            vec![
                "--mount".to_owned(),
                format!("type=bind,src={},dst=/app,options=rbind:ro", dir.display()),
            ]
        });
        run(Command::new("ctr")
            .args(&ctr)
            .args(["run", "-d", "--net-host", "--read-only"])
            .args(mount.unwrap_or_default())
            .args([
                image,
                &id,
                "httpd",
                "-f",
                "-p",
                &format!("127.0.0.1:{port}"),
                "-h",
                "/app",
            ]))?;
        let container = BaselineContainer { ctr, id };
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        common::wait_for("the baseline container", || http_ok(address, "localhost"))?;
        Ok(container)
    }
}

impl Drop for BaselineContainer {
    fn drop(&mut self) {
        let _ = Command::new("ctr")
            .args(&self.ctr)
            .args(["task", "kill", "-s", "SIGKILL", &self.id])
            .output();
        for _ in 0..50 {
            let removed = Command::new("ctr")
                .args(&self.ctr)
                .args(["task", "rm", &self.id])
                .output();
            if removed.is_ok_and(|o| o.status.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("ctr")
            .args(&self.ctr)
            .args(["container", "rm", &self.id])
            .output();
    }
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

/// The id of the newest build of `project`.
fn last_build_id(launchway: &LaunchwayServer, project: &str) -> anyhow::Result<String> {
    let list = launchway.cli(&["builds", "-p", project, "--limit", "1"])?;
    list.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
        .context("no build listed")
}

/// The elapsed time of the newest build of `project` (from `builds info`).
fn last_build_elapsed(launchway: &LaunchwayServer, project: &str) -> anyhow::Result<Duration> {
    let info = launchway.cli(&["builds", "info", &last_build_id(launchway, project)?])?;
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
