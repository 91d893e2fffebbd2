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

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
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
        start: python3 -m http.server $PORT
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

fn list(times: &[Duration]) -> String {
    times
        .iter()
        .map(|t| format!("{:.3}", t.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn run(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn git(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com");
    command
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

fn push(work: &Path, remote: &str, ssh_command: &str) -> anyhow::Result<Duration> {
    push_with(work, remote, ssh_command, &[])
}

fn push_with(
    work: &Path,
    remote: &str,
    ssh_command: &str,
    options: &[&str],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    run(git(work)
        .env("GIT_SSH_COMMAND", ssh_command)
        .arg("push")
        .arg("-q")
        .args(options)
        .args([remote, "main"]))?;
    Ok(started.elapsed())
}

/// `[containerd]` for the containerd `make bench` provides, in a namespace
/// of this run's own.
fn containerd_settings() -> String {
    match launchway_integration::containerd_socket() {
        Some(socket) => format!(
            "[containerd]\nsocket = \"{}\"\nnamespace = \"lwbench-{}\"\n",
            socket.display(),
            launchway_integration::random_hex()
        ),
        None => String::new(),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn ssh_command(key: &Path, known_hosts: &Path) -> String {
    format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null",
        key.display(),
        known_hosts.display()
    )
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what} did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

struct LaunchwayServer {
    binary: PathBuf,
    settings: PathBuf,
    child: Child,
    key: PathBuf,
    ssh_command: String,
}

impl LaunchwayServer {
    fn start(binary: &Path, root: &Path, key: &Path) -> anyhow::Result<LaunchwayServer> {
        let port = free_port()?;
        let data = root.join("launchway");
        let settings = root.join("launchway.toml");
        std::fs::write(
            &settings,
            format!(
                "data_dir = \"{}\"\n[ssh]\nlisten = \"127.0.0.1:{port}\"\n{}",
                data.display(),
                containerd_settings()
            ),
        )?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&settings)
            .arg("serve")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        wait_for("launchway", || data.join("launchway.sock").exists())?;
        let host_key = std::fs::read_to_string(data.join("ssh_host_ed25519_key.pub"))?;
        let known_hosts = root.join("known_hosts_launchway");
        let key_fields: Vec<&str> = host_key.split_whitespace().take(2).collect();
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {}\n", key_fields.join(" ")),
        )?;
        Ok(LaunchwayServer {
            binary: binary.to_path_buf(),
            settings,
            child,
            key: key.to_path_buf(),
            ssh_command: ssh_command(key, &known_hosts),
        })
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new(&self.binary)
            .arg("--config")
            .arg(&self.settings)
            .args(args))
    }

    fn project(&self, name: &str) -> anyhow::Result<String> {
        let remote = self.cli(&["project", "create", name])?.trim().to_owned();
        self.cli(&[
            "keys",
            "add",
            "--project",
            name,
            "--role",
            "admin",
            &self.key.with_extension("pub").display().to_string(),
        ])?;
        Ok(remote)
    }

    fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

struct Sshd {
    child: Child,
    port: u16,
    repos: PathBuf,
    ssh_command: String,
}

impl Sshd {
    fn start(root: &Path, key: &Path) -> anyhow::Result<Sshd> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() {
            bail!("/usr/sbin/sshd is missing: install openssh-server");
        }
        // Debian's sshd wants its privilege separation directory.
        std::fs::create_dir_all("/run/sshd")?;
        let port = free_port()?;
        let host_key = root.join("sshd_host_ed25519_key");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key))?;
        let authorized = root.join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized)?;
        let config = root.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\nPermitRootLogin prohibit-password\nAcceptEnv GIT_PROTOCOL\n",
                host_key.display(),
                authorized.display()
            ),
        )?;
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        wait_for("sshd", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        let known_hosts = root.join("known_hosts_sshd");
        let public = std::fs::read_to_string(host_key.with_extension("pub"))?;
        let key_fields: Vec<&str> = public.split_whitespace().take(2).collect();
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {}\n", key_fields.join(" ")),
        )?;
        let repos = root.join("sshd-repos");
        std::fs::create_dir_all(&repos)?;
        Ok(Sshd {
            child,
            port,
            repos,
            ssh_command: ssh_command(key, &known_hosts),
        })
    }

    fn new_repo(&self, name: &str) -> anyhow::Result<String> {
        let path = self.repos.join(format!("{name}.git"));
        run(git(&self.repos)
            .args(["init", "-q", "--bare", "--initial-branch=main"])
            .arg(&path))?;
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        Ok(format!(
            "ssh://{user}@127.0.0.1:{}{}",
            self.port,
            path.display()
        ))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
