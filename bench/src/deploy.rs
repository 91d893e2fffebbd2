//! `make bench`, deploy half: the router and deploys, measured against
//! baselines in the same run.
//!
//! 1. The router vs Debian's nginx as a reverse proxy to the same backend
//!    (a static std-only HTTP server deployed as an app that listens on a
//!    unix socket; nginx proxies to that socket with upstream keep-alive),
//!    with the same closed-loop load tool (this program: N keep-alive
//!    connections for a fixed time): throughput and p99 latency.
//! 2. Requests during deploys: an open-loop load of 200 requests/s to an
//!    app that starts at once (busybox httpd) while it is redeployed several
//!    times (pushes whose build is reused); the longest and p99 extra latency
//!    of requests sent during a deploy, over the median outside deploys, and
//!    every failure counted.
//!
//! Usage: `deploy-bench LAUNCHWAY_BINARY BACKEND_BINARY [ROUNDS]`
//! (root; containerd from `LAUNCHWAY_CONTAINERD_SOCKET`; nginx on PATH).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

mod common;
mod load;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use common::{HostNginx, LaunchwayServer, app_socket, git, nginx_proxy, run};
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use load::{CONNECTIONS, DURATION, get_once, percentile, race};

const CONFIG: &str = r#"applications:
  web:
    type: "python:3.11"
    source:
      root: web
    web:
      commands:
        start: httpd -f -p 127.0.0.1:$PORT -h /app/public
  fast:
    type: "python:3.11"
    source:
      root: fast
    web:
      upstream:
        socket_family: unix
      commands:
        start: exec /app/bench-backend unix "$SOCKET"
routes:
  "https://{default}/":
    type: upstream
    upstream: "web:http"
  "https://fast.{default}/":
    type: upstream
    upstream: "fast:http"
"#;

const WEB_HOST: &str = "main.deploys.localhost";
const FAST_HOST: &str = "fast.main.deploys.localhost";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: deploy-bench LAUNCHWAY_BINARY BACKEND_BINARY [ROUNDS]";
    let launchway = PathBuf::from(args.next().context(usage)?);
    let backend = PathBuf::from(args.next().context(usage)?);
    let rounds: usize = args.next().map_or(Ok(3), |r| r.parse())?;
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("nginx is missing: apt-get install nginx-light")?;
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let key = root.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
        .arg(&key))?;
    let mut server = LaunchwayServer::start(&launchway, root, &key)?;
    server.use_busybox_runtime()?;
    let remote = server.project("deploys")?;
    let work = root.join("work");
    for sub in ["web/public", "fast", ".upsun"] {
        std::fs::create_dir_all(work.join(sub))?;
    }
    std::fs::write(work.join(".upsun/config.yaml"), CONFIG)?;
    std::fs::write(work.join("web/public/index.html"), "v0\n")?;
    std::fs::copy(&backend, work.join("fast/bench-backend"))?;
    run(git(&work).args(["init", "-q", "--initial-branch=main"]))?;
    run(git(&work).args(["add", "-A"]))?;
    run(git(&work).args(["commit", "-q", "-m", "v0"]))?;
    push(&work, &remote, &server.ssh_command)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let router = server.router;
    runtime.block_on(async {
        let (status, body) = get_once(router, FAST_HOST).await?;
        if status != 200 || body != "hello, world\n" {
            bail!("the backend app does not answer through the router: {status} {body:?}");
        }
        Ok(())
    })?;

    let socket = app_socket(&server.data, "fast")?;
    if rounds > 0 {
        let nginx = proxy_nginx(&nginx, root, &socket)?;
        runtime.block_on(router_vs_nginx(router, nginx.address, rounds))?;
        drop(nginx);
    }

    runtime.block_on(requests_during_deploys(
        router,
        &work,
        &remote,
        &server.ssh_command,
    ))?;
    server.stop();
    Ok(())
}

/// Pushes HEAD; returns the push's stderr (its log).
fn push(work: &Path, remote: &str, ssh_command: &str) -> anyhow::Result<String> {
    let out = git(work)
        .env("GIT_SSH_COMMAND", ssh_command)
        .args(["push", remote, "HEAD:main"])
        .output()?;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("push failed:\n{log}");
    }
    Ok(log)
}

/// nginx as a reverse proxy to the backend's socket, with keep-alive.
fn proxy_nginx(binary: &Path, root: &Path, socket: &Path) -> anyhow::Result<HostNginx> {
    HostNginx::start(binary, &root.join("nginx"), |address| {
        nginx_proxy(socket, &address.to_string(), "")
    })
}

async fn router_vs_nginx(
    router: SocketAddr,
    nginx: SocketAddr,
    rounds: usize,
) -> anyhow::Result<()> {
    let (ours, theirs) = race(router, nginx, FAST_HOST, "/", rounds).await;
    let (our_rps, our_p99, our_errors, our_all) = (ours.rps, ours.p99, ours.errors, ours.rates);
    let (nginx_rps, nginx_p99, nginx_errors, nginx_all) =
        (theirs.rps, theirs.p99, theirs.errors, theirs.rates);
    println!(
        "router vs nginx 1.22 (reverse proxy to the same unix-socket backend app), {CONNECTIONS} keep-alive connections, {} s x {rounds} rounds, median:",
        DURATION.as_secs()
    );
    let rates = |all: &[f64]| {
        all.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "  launchway router: {our_rps:>8.0} req/s  p99 {:>7.2} ms  errors {our_errors}  rounds: {}",
        our_p99.as_secs_f64() * 1000.0,
        rates(&our_all)
    );
    println!(
        "  nginx (baseline): {nginx_rps:>8.0} req/s  p99 {:>7.2} ms  errors {nginx_errors}  rounds: {}",
        nginx_p99.as_secs_f64() * 1000.0,
        rates(&nginx_all)
    );
    println!(
        "  throughput ratio router / nginx: {:.3} (target >= 0.9); p99 ratio: {:.3} (target <= 1.2)",
        our_rps / nginx_rps,
        our_p99.as_secs_f64() / nginx_p99.as_secs_f64()
    );
    Ok(())
}

/// One request of the open-loop load.
struct Sample {
    sent: Instant,
    latency: Duration,
    ok: bool,
}

async fn requests_during_deploys(
    router: SocketAddr,
    work: &Path,
    remote: &str,
    ssh_command: &str,
) -> anyhow::Result<()> {
    const RATE: u64 = 200;
    let deploys: usize = std::env::var("LW_BENCH_DEPLOYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let load = {
        let samples = samples.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            let mut inflight = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                ticks.tick().await;
                let client = client.clone();
                let samples = samples.clone();
                inflight.push(tokio::spawn(async move {
                    let sent = Instant::now();
                    let Ok(uri) = format!("http://{router}/").parse::<hyper::Uri>() else {
                        return;
                    };
                    let Ok(request) = Request::get(uri)
                        .header("host", WEB_HOST)
                        .body(Empty::new())
                    else {
                        return;
                    };
                    let outcome = tokio::time::timeout(Duration::from_secs(40), async {
                        let response = client.request(request).await.ok()?;
                        let ok = response.status().is_success();
                        response.into_body().collect().await.ok()?;
                        Some(ok)
                    })
                    .await;
                    let ok = matches!(outcome, Ok(Some(true)));
                    if let Ok(mut samples) = samples.lock() {
                        samples.push(Sample {
                            sent,
                            latency: sent.elapsed(),
                            ok,
                        });
                    }
                }));
            }
            for task in inflight {
                let _ = task.await;
            }
        })
    };
    // Baseline, then deploys one after another with quiet time between.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut windows = Vec::new();
    let mut held = Vec::new();
    for index in 0..deploys {
        let work = work.to_path_buf();
        let remote = remote.to_string();
        let ssh_command = ssh_command.to_string();
        let started = Instant::now();
        let log = tokio::task::spawn_blocking(move || {
            run(git(&work).args([
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                &format!("redeploy {index}"),
            ]))?;
            push(&work, &remote, &ssh_command)
        })
        .await??;
        windows.push((started, Instant::now()));
        if let Some(seconds) = log
            .lines()
            .find_map(|l| l.trim().strip_prefix("Requests were held for "))
            .and_then(|rest| rest.trim_end_matches(" s").parse::<f64>().ok())
        {
            held.push(seconds);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.await?;
    let samples = std::mem::take(&mut *samples.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let in_deploy = |sample: &Sample| {
        windows
            .iter()
            .any(|(start, end)| sample.sent >= *start && sample.sent <= *end)
    };
    let failures = samples.iter().filter(|s| !s.ok).count();
    let mut quiet: Vec<Duration> = samples
        .iter()
        .filter(|s| !in_deploy(s))
        .map(|s| s.latency)
        .collect();
    quiet.sort();
    let mut during: Vec<Duration> = samples
        .iter()
        .filter(|s| in_deploy(s))
        .map(|s| s.latency)
        .collect();
    during.sort();
    let baseline = percentile(&quiet, 0.5);
    let extra = |d: Duration| d.saturating_sub(baseline).as_secs_f64() * 1000.0;
    println!(
        "requests during {deploys} deploys of an app that starts at once (busybox httpd), open loop at {RATE} req/s:"
    );
    println!(
        "  requests: {} ({} sent while a push deployed), failures (errors or non-2xx): {failures}",
        samples.len(),
        during.len()
    );
    println!(
        "  latency outside deploys: median {:.2} ms, p99 {:.2} ms",
        baseline.as_secs_f64() * 1000.0,
        percentile(&quiet, 0.99).as_secs_f64() * 1000.0
    );
    println!(
        "  extra latency during deploys: longest {:.1} ms, p99 {:.1} ms (target: hold <= 300 ms beyond the app's own start)",
        extra(during.last().copied().unwrap_or_default()),
        extra(percentile(&during, 0.99))
    );
    println!(
        "  hold per deploy as the daemon reports it (stop old, start new, ready, hooks): {}",
        held.iter()
            .map(|s| format!("{:.0} ms", s * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
