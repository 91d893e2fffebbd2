//! `make bench`, dedicated build hosts (issue 26): the real daemon (release
//! build), Debian's registry and builders with containerds of their own, each
//! figure against a baseline measured in the same run:
//!
//! 1. Push-to-serving of a changed app built on a builder (daemon A:
//!    `[registry]`, `[builders] listen`, one builder) against the same push
//!    built locally (daemon B: the same `[registry]`, another repository, no
//!    builders): from `git push` start until the router serves the new body.
//!    Two warm-up pushes each, then RUNS pushes each changing one file,
//!    alternating which daemon goes first; medians (goal: ratio <= 1.2).
//! 2. Moving a ~300 MB image (incompressible) from the registry to an app
//!    host: `Plane::pull` into a containerd that holds none of it, against
//!    `skopeo copy` of the same manifest digest into an OCI layout. The fetch
//!    (manifest and blobs into containerd's content store, hashed) is
//!    compared to skopeo (goal: ratio <= 1.1); the full pull (fetch, unpack,
//!    name) is printed beside it. RUNS rounds, alternating order; medians.
//!    Page caches are not dropped: both read the registry's files in the
//!    same page-cache state.
//! 3. Throughput of 8 queued builds (`sleep 3` hooks), builders with
//!    `[build] concurrency = 1`: 8 projects pushed at once, from the first
//!    push's start until the last push is done (deployed), with one builder
//!    and then with two (goal: t(1) / t(2) >= 1.8). On a small machine this
//!    measures dispatch parallelism (the hooks sleep), not CPU scaling.
//!
//! The figures go to `$LW_BENCH_DIR/builders-bench.json` (see report.rs);
//! a figure that could not be measured is a row that is not met.
//!
//! Usage: `builders-bench LAUNCHWAY_BINARY [RUNS]` (root; containerd from
//! `LAUNCHWAY_CONTAINERD_SOCKET`; `/usr/bin/docker-registry` and `skopeo`
//! from scripts/setup.sh).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

mod common;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::{LaunchwayServer, git, list, median, push, run};
use launchway_integration::builders::{TestBuilder, TestContainerd};
use launchway_integration::random_hex;
use launchway_integration::registry::TestRegistry;
use report::{Figure, Report, Target};

/// An app whose build hook runs `hook` (one command per line) and copies
/// `app.py` to what httpd serves.
fn app_config(hook: &str) -> String {
    let mut lines = String::new();
    for command in hook.lines().chain(["cp app.py index.html"]) {
        lines.push_str(&format!("        {command}\n"));
    }
    format!(
        "applications:\n  web:\n    type: \"python:3.11\"\n    source:\n      root: web\n    hooks:\n      build: |\n{lines}    web:\n      commands:\n        start: httpd -f -p $PORT -h /app\nroutes:\n  \"http://{{default}}/\":\n    type: upstream\n    upstream: \"web:http\"\n"
    )
}

/// Figure 1: a little work in the hook, httpd serves what it wrote.
fn changed_config() -> String {
    app_config("")
}

/// Figure 2: an image of ~300 MB of incompressible data.
fn big_config() -> String {
    app_config("head -c 300000000 /dev/urandom > blob")
}

/// Figure 3: a hook that waits, plus a small write.
fn queued_config() -> String {
    app_config("sleep 3")
}

const QUEUED: usize = 8;

/// A figure's row, and what the summary prints after it.
struct Verdict {
    figure: Figure,
    note: String,
}

/// Each figure's measure (the row's name), unit and goal.
const CHANGED: (&str, &str, Target) = (
    "1. push-to-serving, built on a builder / built locally",
    "s",
    Target::AtMost(1.2),
);
const BIG: (&str, &str, Target) = (
    "2. registry -> app host, Plane::pull fetch / skopeo copy",
    "s",
    Target::AtMost(1.1),
);
const QUEUED_BUILDS: (&str, &str, Target) = (
    "3. 8 queued builds, t(1 builder) / t(2 builders)",
    "s",
    Target::AtLeast(1.8),
);

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: builders-bench LAUNCHWAY_BINARY [RUNS]";
    let binary = PathBuf::from(args.next().context(usage)?);
    let binary = binary.canonicalize().unwrap_or(binary);
    let runs: usize = args.next().map_or(Ok(5), |r| r.parse())?;
    if !Path::new("/usr/bin/skopeo").exists()
        && run(Command::new("skopeo").arg("--version")).is_err()
    {
        bail!("skopeo is missing: scripts/setup.sh bench installs it");
    }
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let key = root.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
        .arg(&key))?;

    let registry = TestRegistry::start();
    println!(
        "builders: {runs} runs; Debian's docker-registry on {} (TLS, htpasswd); {} cores",
        registry.host(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );

    // Daemon A: builds go to builders. Daemon B: builds here.
    let repo_a = format!("launchway/bench-a-{}", random_hex());
    let repo_b = format!("launchway/bench-b-{}", random_hex());
    std::fs::create_dir_all(root.join("a"))?;
    std::fs::create_dir_all(root.join("b"))?;
    let daemon_a = LaunchwayServer::start_with_settings(
        &binary,
        &root.join("a"),
        &key,
        &format!(
            "{}[builders]\nlisten = \"127.0.0.1:0\"\n",
            registry.settings(&repo_a)
        ),
    )?;
    daemon_a.use_busybox_runtime()?;
    let daemon_b = LaunchwayServer::start_with_settings(
        &binary,
        &root.join("b"),
        &key,
        &registry.settings(&repo_b),
    )?;
    daemon_b.use_busybox_runtime()?;
    let builder_toml = format!("{}[build]\nconcurrency = 1\n", registry.settings("ignored"));
    let b1 = start_builder(&daemon_a, &binary, "b1", &builder_toml)?;

    // A figure that fails is reported; the others still run.
    // `LW_BENCH_FIGURES=13` runs only those; with `LW_BENCH_LOG` set, the
    // builder's log is printed at the end (stderr).
    let figures = std::env::var("LW_BENCH_FIGURES").unwrap_or_else(|_| "123".into());
    let mut verdicts = Vec::new();
    if figures.contains('1') {
        verdicts.push((CHANGED, changed_app(&daemon_a, &daemon_b, root, runs)));
    }
    if figures.contains('2') {
        verdicts.push((BIG, big_image(&daemon_b, &registry, &repo_b, root, runs)));
    }
    if figures.contains('3') {
        verdicts.push((
            QUEUED_BUILDS,
            queued_builds(&daemon_a, &binary, &builder_toml, root),
        ));
    }
    if std::env::var_os("LW_BENCH_LOG").is_some() {
        eprintln!("--- builder b1's log:\n{}", b1.log());
    }
    drop(b1);

    println!();
    println!("summary (builders-bench, {runs} runs):");
    let mut failed = false;
    let mut report = Report::new("builders-bench");
    for ((measure, unit, target), verdict) in verdicts {
        match verdict {
            Ok(verdict) => {
                let row = verdict.figure.json("builders-bench");
                println!(
                    "  {:<58} {:>6.3}  (goal {}) {}{}",
                    verdict.figure.measure,
                    verdict.figure.ratio().unwrap_or(f64::NAN),
                    report::target_text(&row),
                    report::met_text(&row["met"]),
                    verdict.note
                );
                report.add(verdict.figure);
            }
            Err(error) => {
                failed = true;
                println!("  {measure}: failed: {error:#}");
                report.add(Figure::failed(measure, unit, target));
            }
        }
    }
    drop(daemon_a);
    drop(daemon_b);
    drop(registry);
    report.finish()?;
    if failed {
        bail!("a figure could not be measured");
    }
    Ok(())
}

/// A builder (the release binary, its own containerd) joined to `daemon`,
/// once the daemon lists it connected.
fn start_builder(
    daemon: &LaunchwayServer,
    binary: &Path,
    name: &str,
    extra: &str,
) -> anyhow::Result<TestBuilder> {
    let token = daemon.cli(&["builders", "token"])?.trim().to_owned();
    let mut builder = TestBuilder::prepare(name, &token, extra);
    builder.set_binary(binary);
    builder.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = daemon.cli(&["builders"])?;
        if listed
            .lines()
            .any(|line| line.starts_with(name) && !line.contains("offline"))
        {
            return Ok(builder);
        }
        if Instant::now() > deadline {
            bail!(
                "builder {name} never connected:\n{listed}\n{}",
                builder.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A git checkout with `config` and `web/app.py` = `body`, committed.
fn new_work(root: &Path, name: &str, config: &str, body: &str) -> anyhow::Result<PathBuf> {
    let work = root.join(format!("work-{name}"));
    std::fs::create_dir_all(work.join("web"))?;
    std::fs::create_dir_all(work.join(".upsun"))?;
    std::fs::write(work.join(".upsun/config.yaml"), config)?;
    std::fs::write(work.join("web/app.py"), format!("{body}\n"))?;
    run(git(&work).args(["init", "-q", "--initial-branch=main"]))?;
    run(git(&work).args(["add", "-A"]))?;
    run(git(&work).args(["commit", "-q", "-m", body]))?;
    Ok(work)
}

/// `web/app.py` = `body`, committed.
fn change(work: &Path, body: &str) -> anyhow::Result<()> {
    std::fs::write(work.join("web/app.py"), format!("{body}\n"))?;
    run(git(work).args(["commit", "-q", "-am", body]))?;
    Ok(())
}

/// Waits until the router serves `body` for `host`.
fn wait_body(daemon: &LaunchwayServer, host: &str, body: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(page) = common::http_get(daemon.router, host, "/")
            && page.contains(body)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{host} never served {body:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pushes and waits for the new body: push-to-serving.
fn push_to_serving(
    daemon: &LaunchwayServer,
    work: &Path,
    remote: &str,
    host: &str,
    body: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    push(work, remote, &daemon.ssh_command)?;
    wait_body(daemon, host, body)?;
    Ok(started.elapsed())
}

/// The newest build of `project` (`builds info`).
fn newest_build_info(daemon: &LaunchwayServer, project: &str) -> anyhow::Result<String> {
    let listed = daemon.cli(&["builds", "-p", project, "--limit", "1"])?;
    let id = listed
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .context("no build listed")?
        .to_owned();
    daemon.cli(&["builds", "info", &id])
}

/// Figure 1.
fn changed_app(
    daemon_a: &LaunchwayServer,
    daemon_b: &LaunchwayServer,
    root: &Path,
    runs: usize,
) -> anyhow::Result<Verdict> {
    let sides = [(daemon_a, "a"), (daemon_b, "b")];
    let mut works = Vec::new();
    for (daemon, side) in sides {
        let project = format!("changed{side}");
        let remote = daemon.project(&project)?;
        let work = new_work(
            root,
            &project,
            &changed_config(),
            &format!("{side} warm-up 0"),
        )?;
        works.push((work, remote, format!("main.{project}.localhost")));
    }
    for warm in 0..2 {
        for (index, (daemon, side)) in sides.iter().enumerate() {
            let (work, remote, host) = &works[index];
            let body = format!("{side} warm-up {warm}");
            if warm > 0 {
                change(work, &body)?;
            }
            push_to_serving(daemon, work, remote, host, &body)?;
        }
    }
    let info = newest_build_info(daemon_a, "changeda")?;
    if !info.contains("on builder") {
        bail!("daemon A did not build on its builder:\n{info}");
    }
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for round in 0..runs {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for index in order {
            let (daemon, side) = sides[index];
            let (work, remote, host) = &works[index];
            let body = format!("{side} version {round}");
            change(work, &body)?;
            times[index].push(push_to_serving(daemon, work, remote, host, &body)?);
        }
    }
    let [mut remote_times, mut local_times] = times;
    let remote = median(&mut remote_times);
    let local = median(&mut local_times);
    let ratio = remote.as_secs_f64() / local.as_secs_f64();
    println!();
    println!(
        "1. push-to-serving of a changed app (hook `cp app.py index.html`), {runs} pushes each after 2 warm-up, median:"
    );
    println!(
        "  built on a builder (build there, publish, pull by digest): {:>7.3} s   runs: {}",
        remote.as_secs_f64(),
        list(&remote_times)
    );
    println!(
        "  built locally, published to the same registry (baseline): {:>7.3} s   runs: {}",
        local.as_secs_f64(),
        list(&local_times)
    );
    println!(
        "  newest remote build: {}",
        info.lines()
            .filter(|l| l.starts_with("Elapsed") || l.starts_with("web "))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let local_info = newest_build_info(daemon_b, "changedb")?;
    println!(
        "  newest local build:  {}",
        local_info
            .lines()
            .filter(|l| l.starts_with("Elapsed") || l.starts_with("web "))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!(
        "  ratio builder / local: {ratio:.3} (goal <= 1.2: {})",
        met(ratio <= 1.2)
    );
    let (measure, _, target) = CHANGED;
    Ok(Verdict {
        figure: Figure::timed(measure, &remote_times, &local_times, target),
        note: String::new(),
    })
}

/// Figure 2.
fn big_image(
    daemon_b: &LaunchwayServer,
    registry: &TestRegistry,
    repository: &str,
    root: &Path,
    runs: usize,
) -> anyhow::Result<Verdict> {
    // The image: built once on daemon B, which publishes it.
    let remote = daemon_b.project("big")?;
    let work = new_work(root, "big", &big_config(), "big 0")?;
    let made = Instant::now();
    push(&work, &remote, &daemon_b.ssh_command)?;
    let info = newest_build_info(daemon_b, "big")?;
    let digest = info
        .lines()
        .find(|l| l.starts_with("web "))
        .and_then(|l| l.split_whitespace().find(|f| f.starts_with("sha256:")))
        .with_context(|| format!("no image digest in the build:\n{info}"))?
        .to_owned();
    let plane = launchway_build::plane::Plane::new(launchway_registry::Registry::new(
        registry.config(repository),
    )?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let manifest = runtime.block_on(plane.registry().manifest_get(&digest))?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.bytes)?;
    let layers: Vec<u64> = manifest["layers"]
        .as_array()
        .map(|layers| layers.iter().filter_map(|l| l["size"].as_u64()).collect())
        .unwrap_or_default();
    let total: u64 = layers.iter().sum::<u64>() + manifest["config"]["size"].as_u64().unwrap_or(0);
    println!();
    println!(
        "2. moving a {:.0} MB image registry -> app host ({} layers: {} bytes; made and published in {:.1} s), {runs} rounds, median:",
        total as f64 / 1e6,
        layers.len(),
        layers
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" + "),
        made.elapsed().as_secs_f64()
    );

    // The app host's side: a containerd of its own, holding nothing (the
    // system containerd shares content between namespaces, and daemon B
    // holds this image there).
    let containerd = TestContainerd::start();
    let scratch = root.join("pull-scratch");
    std::fs::create_dir_all(&scratch)?;
    let reference = format!("docker://{}/{repository}@{digest}", registry.host());
    let (mut fetch, mut adopt, mut full, mut skopeo) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..runs {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for ours in order {
            if ours {
                let namespace = format!("lwbench-pull-{}", random_hex());
                let (fetched, times, elapsed) = runtime.block_on(async {
                    let engine = launchway_containerd::Engine::connect(
                        containerd.socket(),
                        &namespace,
                        &scratch,
                    )
                    .await?;
                    let started = Instant::now();
                    let (image, fetched, times) = plane
                        .pull_timed(&engine, "launchway/bench-pull", &digest)
                        .await?;
                    let elapsed = started.elapsed();
                    engine.delete_image(&image.name).await?;
                    let mut deleted = engine.delete_namespace().await;
                    for _ in 0..50 {
                        if deleted.is_ok() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        deleted = engine.delete_namespace().await;
                    }
                    if let Err(error) = deleted {
                        eprintln!("namespace {namespace} not deleted: {error}");
                    }
                    Ok::<_, anyhow::Error>((fetched, times, elapsed))
                })?;
                if fetched < total {
                    bail!("the pull fetched {fetched} bytes of {total}: something was present");
                }
                fetch.push(times.fetch);
                adopt.push(times.adopt);
                full.push(elapsed);
            } else {
                let out = root.join(format!("skopeo-{round}"));
                let started = Instant::now();
                run(Command::new("skopeo")
                    .arg("copy")
                    .arg("--quiet")
                    .arg("--src-cert-dir")
                    .arg(registry.cert_dir())
                    .arg("--src-creds")
                    .arg(format!("{}:{}", registry.username(), registry.password()))
                    .arg(&reference)
                    .arg(format!("oci:{}:x", out.display())))?;
                skopeo.push(started.elapsed());
                std::fs::remove_dir_all(&out)?;
            }
        }
    }
    drop(containerd);
    let (fetch_m, adopt_m, full_m, skopeo_m) = (
        median(&mut fetch),
        median(&mut adopt),
        median(&mut full),
        median(&mut skopeo),
    );
    let ratio = fetch_m.as_secs_f64() / skopeo_m.as_secs_f64();
    let full_ratio = full_m.as_secs_f64() / skopeo_m.as_secs_f64();
    let mb_s = |d: Duration| total as f64 / 1e6 / d.as_secs_f64();
    println!(
        "  Plane::pull fetch (manifest + blobs into containerd, hashed): {:>7.3} s ({:.0} MB/s)   runs: {}",
        fetch_m.as_secs_f64(),
        mb_s(fetch_m),
        list(&fetch)
    );
    println!(
        "  Plane::pull adopt (layers unpacked and checked, named):      {:>7.3} s   runs: {}",
        adopt_m.as_secs_f64(),
        list(&adopt)
    );
    println!(
        "  Plane::pull in full:                                         {:>7.3} s   runs: {}",
        full_m.as_secs_f64(),
        list(&full)
    );
    println!(
        "  skopeo copy docker://…@digest oci:DIR (baseline):            {:>7.3} s ({:.0} MB/s)   runs: {}",
        skopeo_m.as_secs_f64(),
        mb_s(skopeo_m),
        list(&skopeo)
    );
    println!(
        "  (page caches not dropped: both read the registry's files in the same page-cache state; both write to the same disk)"
    );
    println!(
        "  ratio fetch / skopeo: {ratio:.3} (goal <= 1.1: {}); full pull / skopeo: {full_ratio:.3} (unpacking is work skopeo does not do)",
        met(ratio <= 1.1)
    );
    let (measure, _, target) = BIG;
    Ok(Verdict {
        figure: Figure::timed(measure, &fetch, &skopeo, target),
        note: format!("   (full pull with unpack / skopeo: {full_ratio:.3})"),
    })
}

/// Figure 3.
fn queued_builds(
    daemon: &LaunchwayServer,
    binary: &Path,
    builder_toml: &str,
    root: &Path,
) -> anyhow::Result<Verdict> {
    let one = queued_round(daemon, root, "one")?;
    let b2 = start_builder(daemon, binary, "b2", builder_toml)?;
    // Warm b2 up (runtime image pulled, first build): two builds at once,
    // one per builder, each builder taking one at a time.
    let warm: Vec<(PathBuf, String)> = (0..2)
        .map(|index| {
            let project = format!("warm{index}");
            let remote = daemon.project(&project)?;
            let work = new_work(root, &project, &queued_config(), &format!("warm {index}"))?;
            Ok((work, remote))
        })
        .collect::<anyhow::Result<_>>()?;
    std::thread::scope(|scope| {
        let pushes: Vec<_> = warm
            .iter()
            .map(|(work, remote)| scope.spawn(|| push(work, remote, &daemon.ssh_command)))
            .collect();
        pushes
            .into_iter()
            .map(|p| p.join().map_err(|_| anyhow::anyhow!("a push panicked"))?)
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let on_b2 = (0..2)
        .filter_map(|index| newest_build_info(daemon, &format!("warm{index}")).ok())
        .any(|info| info.contains("on builder b2"));
    let two = queued_round(daemon, root, "two")?;
    drop(b2);
    let ratio = one.0.as_secs_f64() / two.0.as_secs_f64();
    println!();
    println!(
        "3. {QUEUED} builds queued at once (hook `sleep 3` + a small write; builders with [build] concurrency = 1), first push start to last push done:"
    );
    println!(
        "  one builder:  {:>7.3} s   each push: {}",
        one.0.as_secs_f64(),
        list(&one.1)
    );
    println!(
        "  two builders: {:>7.3} s   each push: {}   (builds per builder: {})",
        two.0.as_secs_f64(),
        list(&two.1),
        two.2
    );
    if !on_b2 {
        println!("  (warm-up: neither warm-up build ran on b2)");
    }
    println!(
        "  (on a 2-core machine this measures dispatch parallelism: the hooks sleep; it is not CPU scaling)"
    );
    println!(
        "  ratio t(1) / t(2): {ratio:.3} (goal >= 1.8: {})",
        met(ratio >= 1.8)
    );
    let (measure, unit, target) = QUEUED_BUILDS;
    Ok(Verdict {
        figure: Figure::compared(
            measure,
            unit,
            one.0.as_secs_f64(),
            two.0.as_secs_f64(),
            target,
        ),
        note: String::new(),
    })
}

/// Creates QUEUED projects, pushes them all at once: the wall time, each
/// push's time and how many builds each builder ran.
fn queued_round(
    daemon: &LaunchwayServer,
    root: &Path,
    round: &str,
) -> anyhow::Result<(Duration, Vec<Duration>, String)> {
    let mut works = Vec::new();
    for index in 0..QUEUED {
        let project = format!("queue{round}{index}");
        let remote = daemon.project(&project)?;
        let work = new_work(
            root,
            &project,
            &queued_config(),
            &format!("{project} {round}"),
        )?;
        works.push((project, work, remote));
    }
    let started = Instant::now();
    let times = std::thread::scope(|scope| {
        let pushes: Vec<_> = works
            .iter()
            .map(|(_, work, remote)| {
                scope.spawn(move || {
                    push(work, remote, &daemon.ssh_command)?;
                    Ok::<_, anyhow::Error>(started.elapsed())
                })
            })
            .collect();
        pushes
            .into_iter()
            .map(|p| p.join().map_err(|_| anyhow::anyhow!("a push panicked"))?)
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let wall = started.elapsed();
    let mut per_builder = std::collections::BTreeMap::<String, usize>::new();
    for (project, _, _) in &works {
        let info = newest_build_info(daemon, project)?;
        let builder = info
            .split("on builder ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("local")
            .to_owned();
        *per_builder.entry(builder).or_default() += 1;
    }
    let spread = per_builder
        .iter()
        .map(|(name, count)| format!("{name} {count}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((wall, times, spread))
}
