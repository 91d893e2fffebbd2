//! `make bench`, services: Launchway's service containers against the same
//! servers started directly on the host, in the same run.
//!
//! - (a) start: until PostgreSQL and MariaDB answer a query. Launchway:
//!   the service's container is stopped cleanly, then `launchway redeploy`
//!   starts it again (the deploy log's `Service db answers (X s)`, from
//!   the network link to the first successful `SELECT 1`). Host: the same
//!   binaries (the service image's root, read-only, by `chroot`) on the
//!   same data with the same command line, polled with the same client
//!   every 20 ms.
//! - (b) a branch whose parent holds a 1 GiB PostgreSQL database: the
//!   parent's pause and the time until the child serves (activation), vs
//!   `pg_dump -Fc | pg_restore` of the same database between two servers
//!   on the host. On XFS with reflinks when a loop device is available.
//! - (c) the memory of the idle environment (PostgreSQL, Redis, one app)
//!   by the containers' memory cgroups, vs the same servers on the host in
//!   a memory cgroup of their own.
//!
//! The figures go to `$LW_BENCH_DIR/services-bench.json` (see report.rs).
//!
//! Usage: `services-bench LAUNCHWAY_BINARY [RUNS] [DATABASE_MIB]` (root;
//! containerd from `LAUNCHWAY_CONTAINERD_SOCKET`; service images are built
//! from the Debian mirror on first use).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

mod common;
mod report;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::{LaunchwayServer, XfsMount, git, median, run};
use launchway_containerd::Engine;
use launchway_services::configuration::parse;
use launchway_services::resolve;
use launchway_services::run::{program, ready_command};
use report::{Figure, Report, Target};

const CONFIG: &str = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: mkdir -p public && echo up > public/index.html
    relationships:
      database: "db:postgresql"
      maria: "maria:mysql"
      cache: "cache:redis"
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
services:
  db:
    type: postgresql:15
  maria:
    type: mariadb:10.11
  cache:
    type: redis:7.0
"#;

/// The memory the daemon gives a service by default (MiB).
const MEMORY_MIB: u64 = launchway_deploy::services::DEFAULT_SERVICE_MEMORY_MIB;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: services-bench LAUNCHWAY_BINARY [RUNS] [DATABASE_MIB]";
    let launchway = PathBuf::from(args.next().context(usage)?);
    let runs: usize = args.next().map_or(Ok(3), |n| n.parse())?;
    let database_mib: u64 = args.next().map_or(Ok(1024), |n| n.parse())?;
    let xfs = XfsMount::new(8192 + 4 * database_mib);
    let (root, filesystem) = match &xfs {
        Ok(xfs) => (tempfile::tempdir_in(&xfs.dir)?, "XFS, reflink"),
        Err(error) => {
            println!("XFS with reflinks: not available ({error:#}); the host disk it is");
            (tempfile::tempdir()?, "host disk")
        }
    };
    println!("services: {runs} runs, a {database_mib} MiB database, data on {filesystem}");
    let key = root.path().join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
        .arg(&key))?;
    let mut server = LaunchwayServer::start(&launchway, root.path(), &key)?;
    let mut report = Report::new("services-bench");
    let result = bench(
        root.path(),
        &server,
        runs,
        database_mib,
        filesystem,
        &mut report,
    );
    server.stop();
    drop(root);
    drop(xfs);
    result?;
    report.finish()
}

fn bench(
    root: &Path,
    server: &LaunchwayServer,
    runs: usize,
    database_mib: u64,
    filesystem: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    server.use_busybox_runtime()?;
    let remote = server.project("svc")?;
    let work = root.join("work");
    std::fs::create_dir_all(work.join(".upsun"))?;
    std::fs::write(work.join(".upsun/config.yaml"), CONFIG)?;
    run(git(&work).args(["init", "-q", "--initial-branch=main"]))?;
    run(git(&work).args(["add", "-A"]))?;
    run(git(&work).args(["commit", "-q", "-m", "v1"]))?;
    let first = Instant::now();
    for branch in ["main", "feature"] {
        run(git(&work)
            .env("GIT_SSH_COMMAND", &server.ssh_command)
            .args(["push", "-q", &remote, &format!("HEAD:{branch}")]))?;
    }
    println!(
        "first deploy (service images built if missing): {:.1} s",
        first.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = launchway_integration::containerd_socket()
        .context("LAUNCHWAY_CONTAINERD_SOCKET: make bench runs under scripts/with-containerd.sh")?;
    let namespace = server.namespace().context("no containerd namespace")?;
    let engine = runtime.block_on(Engine::connect(&socket, namespace, &root.join("scratch")))?;
    let env_dir = server
        .data
        .join("environments")
        .join(launchway_deploy::environment_id("svc", "main"));

    // (a) start until the first answer.
    for (service, kind) in [("db", "postgresql:15"), ("maria", "mariadb:10.11")] {
        let mut launchway_times = Vec::new();
        let mut host_times = Vec::new();
        for _ in 0..runs {
            stop_service(&runtime, &engine, service)?;
            let host = HostServer::start(
                &runtime,
                &engine,
                kind,
                &env_dir.join("services").join(service),
                None,
            )?;
            host_times.push(host.ready_after);
            drop(host);
            let log = server.cli_log(&["redeploy", "-p", "svc", "-e", "main"])?;
            launchway_times.push(answered_after(&log, service)?);
            if let Some(line) = log
                .lines()
                .find(|l| l.contains(&format!("Service {service} answers")))
            {
                println!("(a) {}", line.trim());
            }
        }
        report.add(Figure::timed(
            &format!("{kind} start until it answers / on the host"),
            &launchway_times,
            &host_times,
            Target::AtMost(1.3),
        ));
        let (launchway_median, host_median) =
            (median(&mut launchway_times), median(&mut host_times));
        println!(
            "(a) {kind}: Launchway {} s (median {:.3}), on the host {} s (median {:.3}); ratio {:.2} (goal <= 1.3)",
            common::list(&launchway_times),
            launchway_median.as_secs_f64(),
            common::list(&host_times),
            host_median.as_secs_f64(),
            launchway_median.as_secs_f64() / host_median.as_secs_f64()
        );
    }

    // (c) the idle environment's memory.
    std::thread::sleep(Duration::from_secs(10));
    let containers = runtime.block_on(engine.app_containers(Some("svc/main")))?;
    let mut environment_bytes = 0;
    let mut services_bytes = 0;
    for id in &containers {
        let name = if id.contains("-db-") {
            "postgresql"
        } else if id.contains("-cache-") {
            "redis"
        } else if id.contains("-maria-") {
            continue;
        } else {
            "app"
        };
        let bytes = cgroup_memory(&format!("{namespace}/{id}"))?;
        println!("(c) {name}: {:.1} MiB", bytes as f64 / 1_048_576.0);
        environment_bytes += bytes;
        if name != "app" {
            services_bytes += bytes;
        }
    }
    let host_cgroup = HostCgroup::new()?;
    let host_db = HostServer::start(
        &runtime,
        &engine,
        "postgresql:15",
        &copy_of(&env_dir.join("services/db"), &root.join("host-db"))?,
        Some(&host_cgroup),
    )?;
    let host_cache = HostServer::start(
        &runtime,
        &engine,
        "redis:7.0",
        &root.join("host-cache"),
        Some(&host_cgroup),
    )?;
    std::thread::sleep(Duration::from_secs(10));
    let host_bytes = host_cgroup.memory()?;
    drop((host_db, host_cache));
    println!(
        "(c) idle environment (PostgreSQL + Redis + app): {:.1} MiB; its services {:.1} MiB vs the same servers on the host {:.1} MiB: ratio {:.2}",
        environment_bytes as f64 / 1_048_576.0,
        services_bytes as f64 / 1_048_576.0,
        host_bytes as f64 / 1_048_576.0,
        services_bytes as f64 / host_bytes.max(1) as f64
    );
    report.add(Figure::compared(
        "idle services' memory (PostgreSQL + Redis) / on the host",
        "MiB",
        services_bytes as f64 / 1_048_576.0,
        host_bytes as f64 / 1_048_576.0,
        Target::None,
    ));

    // (b) a branch of a parent with a large database.
    let rows = database_mib * 1024;
    let filled = Instant::now();
    server.cli(&[
        "sql", "-p", "svc", "-e", "main", "-r", "database", "-c",
        &format!("CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 28) AS body FROM generate_series(1, {rows}) g"),
    ])?;
    let size = server.cli(&[
        "sql",
        "-p",
        "svc",
        "-e",
        "main",
        "-r",
        "database",
        "-c",
        "SELECT pg_size_pretty(pg_database_size(current_database()))",
    ])?;
    println!(
        "(b) filled the parent's database ({}) in {:.1} s",
        size.lines().nth(2).unwrap_or("?").trim(),
        filled.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    let log = server.cli_log(&["environment", "activate", "-p", "svc", "feature"])?;
    let activation = started.elapsed();
    let cloned = log
        .lines()
        .find(|line| line.contains("Cloned "))
        .context("no `Cloned …` line in the activation log")?;
    let paused_ms: f64 = cloned
        .split_once("paused ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .context("no pause in the `Cloned …` line")?;
    let child_db = answered_after(&log, "db")?;
    let counted = server.cli(&[
        "sql",
        "-p",
        "svc",
        "-e",
        "feature",
        "-r",
        "database",
        "-c",
        "SELECT count(*) FROM big",
    ])?;
    if !counted.lines().any(|line| line.trim() == rows.to_string()) {
        bail!("the child's copy lacks rows: {counted}");
    }
    println!("(b) {}", cloned.trim());
    println!(
        "(b) activation until the child serves: {:.2} s (its PostgreSQL answered {:.2} s after start, recovery included); the parent paused {paused_ms:.0} ms (goal <= 2000 ms on reflinks)",
        activation.as_secs_f64(),
        child_db.as_secs_f64()
    );
    // The goal is for reflinks; on the host disk the pause is reported.
    let pause_goal = if filesystem.contains("reflink") {
        Target::AtMost(2000.0)
    } else {
        Target::None
    };
    report.add(Figure::value(
        &format!("parent's pause, branch of a {database_mib} MiB database [{filesystem}]"),
        "ms",
        paused_ms,
        pause_goal,
    ));
    let dump_restore = dump_and_restore(&runtime, &engine, &env_dir.join("services/db"), root)?;
    println!(
        "(b) pg_dump -Fc | pg_restore of the same database on the host: {:.2} s; ratio activation / dump-restore {:.3}",
        dump_restore.as_secs_f64(),
        activation.as_secs_f64() / dump_restore.as_secs_f64()
    );
    report.add(Figure::compared(
        &format!("activation of a branch of a {database_mib} MiB database / pg_dump piped to pg_restore [{filesystem}]"),
        "s",
        activation.as_secs_f64(),
        dump_restore.as_secs_f64(),
        Target::None,
    ));
    Ok(())
}

/// `Service NAME answers (X s)` of a deploy log.
fn answered_after(log: &str, service: &str) -> anyhow::Result<Duration> {
    let marker = format!("Service {service} answers (");
    let seconds: f64 = log
        .lines()
        .find_map(|line| {
            line.split(&marker)
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("no `{marker}X s)` in the log:\n{log}"))?;
    Ok(Duration::from_secs_f64(seconds))
}

/// Stops the service's container cleanly (as a stop at shutdown would).
fn stop_service(
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    service: &str,
) -> anyhow::Result<()> {
    let containers = runtime.block_on(engine.app_containers(Some("svc/main")))?;
    let id = containers
        .iter()
        .find(|id| id.starts_with("lws-") && id.contains(&format!("-{service}-")))
        .with_context(|| format!("no container of service {service}: {containers:?}"))?;
    runtime.block_on(engine.stop_app(id, Duration::from_secs(60)))?;
    runtime.block_on(engine.remove_app(id))?;
    Ok(())
}

/// A reflink copy (where the filesystem has them) of `data`.
fn copy_of(data: &Path, target: &Path) -> anyhow::Result<PathBuf> {
    run(Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(data)
        .arg(target))?;
    Ok(target.to_path_buf())
}

/// The root of a service image, mounted read-only by way of a containerd
/// view snapshot, with `/tmp`, `/dev`, `/proc` and the data, for `chroot`.
struct ImageRoot<'a> {
    runtime: &'a tokio::runtime::Runtime,
    engine: &'a Engine,
    lease: launchway_containerd::Lease,
    key: String,
    dir: tempfile::TempDir,
    mounted: Vec<PathBuf>,
}

impl<'a> ImageRoot<'a> {
    fn new(
        runtime: &'a tokio::runtime::Runtime,
        engine: &'a Engine,
        image_type: &str,
        data: &Path,
    ) -> anyhow::Result<ImageRoot<'a>> {
        let image = runtime.block_on(engine.image(&format!("launchway/service/{image_type}")))?;
        let lease = runtime.block_on(engine.create_lease("lwbench-host"))?;
        let key = format!("lwbench-host-{}", launchway_integration::random_hex());
        let mounts = runtime.block_on(engine.view_snapshot(&lease, &key, &image.chain_id))?;
        let mut root = ImageRoot {
            runtime,
            engine,
            lease,
            key,
            dir: tempfile::tempdir()?,
            mounted: Vec::new(),
        };
        let target = root.dir.path().to_path_buf();
        for mount in mounts {
            if mount.r#type == "bind" {
                root.mount(
                    Command::new("mount")
                        .arg("--bind")
                        .arg(&mount.source)
                        .arg(&target),
                )?;
                run(Command::new("mount")
                    .args(["-o", "remount,bind,ro"])
                    .arg(&target))?;
            } else {
                root.mount(
                    Command::new("mount")
                        .args(["-t", &mount.r#type, "-o", &mount.options.join(",")])
                        .arg(&mount.source)
                        .arg(&target),
                )?;
            }
        }
        root.mount(
            Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(target.join("tmp")),
        )?;
        // Recursive: /dev/shm (PostgreSQL's shared memory) and /dev/pts.
        root.mount(
            Command::new("mount")
                .arg("--rbind")
                .arg("/dev")
                .arg(target.join("dev")),
        )?;
        root.mount(
            Command::new("mount")
                .args(["-t", "proc", "proc"])
                .arg(target.join("proc")),
        )?;
        root.mount(
            Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(target.join("mnt")),
        )?;
        std::fs::create_dir(target.join("mnt/data"))?;
        std::fs::create_dir_all(data)?;
        std::os::unix::fs::chown(data, Some(10_000), Some(10_000))?;
        root.mount(
            Command::new("mount")
                .arg("--bind")
                .arg(data)
                .arg(target.join("mnt/data")),
        )?;
        Ok(root)
    }

    fn mount(&mut self, command: &mut Command) -> anyhow::Result<()> {
        run(command)?;
        let target = command
            .get_args()
            .last()
            .map(PathBuf::from)
            .context("a mount without a target")?;
        self.mounted.push(target);
        Ok(())
    }

    /// `args` run in the root as uid 10000.
    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new("chroot");
        command
            .arg("--userspec=10000:10000")
            .arg(self.dir.path())
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/tmp")
            .env("LANG", "C.UTF-8");
        command
    }
}

impl Drop for ImageRoot<'_> {
    fn drop(&mut self) {
        for target in self.mounted.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(target).status();
        }
        let _ = self
            .runtime
            .block_on(self.engine.remove_snapshot(&self.key));
        let _ = self
            .runtime
            .block_on(self.engine.delete_lease(&self.lease, false));
    }
}

/// A service's server run on the host from its image's root.
struct HostServer<'a> {
    child: Child,
    ready_after: Duration,
    root: ImageRoot<'a>,
}

impl<'a> HostServer<'a> {
    fn start(
        runtime: &'a tokio::runtime::Runtime,
        engine: &'a Engine,
        kind: &str,
        data: &Path,
        cgroup: Option<&HostCgroup>,
    ) -> anyhow::Result<HostServer<'a>> {
        let resolved = resolve(kind, true)?;
        let configuration =
            parse(resolved.kind, None).map_err(|problems| anyhow::anyhow!("{problems:?}"))?;
        let root = ImageRoot::new(runtime, engine, &resolved.image_type(), data)?;
        let started = Instant::now();
        let mut command = root.command(&[
            "sh".into(),
            "-c".into(),
            program(&resolved, &configuration, MEMORY_MIB, &[]),
        ]);
        if let Some(cgroup) = cgroup {
            // Joins the cgroup before it starts anything, so every process
            // of the server is counted.
            let mut joined = Command::new("sh");
            joined
                .arg("-c")
                .arg(r#"echo $$ > "$0" && exec "$@""#)
                .arg(cgroup.dir.join("cgroup.procs"))
                .arg(command.get_program())
                .args(command.get_args())
                .env_clear()
                .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))));
            command = joined;
        }
        let server_log = root.dir.path().join("tmp/server.log");
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&server_log)?)
            .spawn()?;
        let mut server = HostServer {
            child,
            ready_after: Duration::ZERO,
            root,
        };
        let ready = ready_command(&resolved);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let answered = server
                .root
                .command(&ready)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if answered {
                server.ready_after = started.elapsed();
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!(
                    "{kind} on the host did not answer: {}",
                    std::fs::read_to_string(&server_log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HostServer<'_> {
    fn drop(&mut self) {
        // A clean stop, as the container's.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A memory cgroup for the servers run on the host.
struct HostCgroup {
    dir: PathBuf,
    v1: bool,
}

impl HostCgroup {
    fn new() -> anyhow::Result<HostCgroup> {
        let v1 = Path::new("/sys/fs/cgroup/memory").is_dir();
        let base = if v1 {
            "/sys/fs/cgroup/memory"
        } else {
            "/sys/fs/cgroup"
        };
        let dir = Path::new(base).join(format!("lwbench-{}", launchway_integration::random_hex()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(HostCgroup { dir, v1 })
    }

    fn memory(&self) -> anyhow::Result<u64> {
        memory_of(&self.dir, self.v1)
    }
}

impl Drop for HostCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The memory a cgroup's processes use (resident memory and page cache:
/// what the memory limit counts), v1 or v2.
fn memory_of(dir: &Path, v1: bool) -> anyhow::Result<u64> {
    let file = if v1 {
        "memory.usage_in_bytes"
    } else {
        "memory.current"
    };
    let text = std::fs::read_to_string(dir.join(file))
        .with_context(|| format!("reading {}", dir.join(file).display()))?;
    Ok(text.trim().parse()?)
}

/// The memory of container cgroup `path` (`<namespace>/<id>`).
fn cgroup_memory(path: &str) -> anyhow::Result<u64> {
    let v1 = Path::new("/sys/fs/cgroup/memory").is_dir();
    let base = if v1 {
        "/sys/fs/cgroup/memory"
    } else {
        "/sys/fs/cgroup"
    };
    memory_of(&Path::new(base).join(path), v1)
}

/// `pg_dump -Fc | pg_restore` of a copy of `data` into a new server, both
/// on the host; the time of the dump and restore alone.
fn dump_and_restore(
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    data: &Path,
    root: &Path,
) -> anyhow::Result<Duration> {
    let source = HostServer::start(
        runtime,
        engine,
        "postgresql:15",
        &copy_of(data, &root.join("dump-source"))?,
        None,
    )?;
    let bin = "/usr/lib/postgresql/15/bin";
    // On the same filesystem as the data Launchway copies.
    let target_data = "/mnt/data/restore-target";
    let mut init = source.root.command(&[
        format!("{bin}/initdb"),
        "-D".into(),
        target_data.into(),
        "-U".into(),
        "postgres".into(),
        "--auth=trust".into(),
    ]);
    run(init.stdout(Stdio::null()))?;
    let mut target = source
        .root
        .command(&[
            format!("{bin}/postgres"),
            "-D".into(),
            target_data.into(),
            "-c".into(),
            "port=5433".into(),
            "-c".into(),
            "listen_addresses=".into(),
            "-c".into(),
            "unix_socket_directories=/tmp".into(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let psql = |port: &str, database: &str, sql: &str| {
        source.root.command(&[
            format!("{bin}/psql"),
            "-h".into(),
            "/tmp".into(),
            "-p".into(),
            port.into(),
            "-U".into(),
            "postgres".into(),
            "-d".into(),
            database.into(),
            "-tAc".into(),
            sql.into(),
        ])
    };
    common::wait_for("the target server", || {
        psql("5433", "postgres", "SELECT 1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })?;
    run(&mut psql("5433", "postgres", "CREATE DATABASE main"))?;
    let started = Instant::now();
    let script = format!(
        "{bin}/pg_dump -Fc -h /tmp -p 5432 -U postgres -d main | {bin}/pg_restore --no-owner --no-privileges -h /tmp -p 5433 -U postgres -d main"
    );
    let outcome = run(&mut source.root.command(&["sh".into(), "-c".into(), script]));
    let took = started.elapsed();
    let rows = psql("5433", "main", "SELECT count(*) FROM big").output()?;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(target.id().to_string())
        .status();
    let _ = target.wait();
    outcome?;
    if !String::from_utf8_lossy(&rows.stdout)
        .trim()
        .parse::<u64>()
        .is_ok_and(|n| n > 0)
    {
        bail!("the restored database has no rows");
    }
    Ok(took)
}
