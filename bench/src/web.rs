//! `make bench`, web-server half: what apps' `web.locations` cost, and
//! how late crons start.
//!
//! 1. Static files: a static site (the catalog's python:3.11 image, no
//!    start command, one `/` location) through the router and the
//!    container's nginx, against Debian's nginx on the host serving the
//!    same files, with the same closed-loop load (N keep-alive
//!    connections for a fixed time, rounds alternated): throughput and
//!    p99 latency ratios (goals: >= 0.8 and <= 1.5).
//! 2. Cron start delay: a `* * * * *` cron's runs, how long after their
//!    minute each started (goal: <= 1 s).
//!
//! Usage: `web-bench LAUNCHWAY_BINARY [ROUNDS]` (root; containerd from
//! `LAUNCHWAY_CONTAINERD_SOCKET`; nginx on PATH; the runtime image is
//! built from Debian on first use).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

mod common;
mod load;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::{HostNginx, LaunchwayServer, git, run};
use load::{Load, closed_loop, get_once, percentile};

const CONFIG: &str = r#"applications:
  site:
    type: "python:3.11"
    web:
      locations:
        "/":
          root: "public"
          index: [index.html]
    crons:
      tick:
        spec: "* * * * *"
        commands:
          start: "true"
routes:
  "https://{default}/":
    type: upstream
    upstream: "site:http"
"#;

const HOST: &str = "main.web.localhost";
/// The file measured: a small stylesheet, as most static requests are.
const ASSET: &str = "/assets/site.css";

fn asset() -> String {
    let mut css = String::new();
    let mut index = 0;
    while css.len() < 4096 {
        css.push_str(&format!(".rule-{index} {{ margin: {index}px; }}\n"));
        index += 1;
    }
    css
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: web-bench LAUNCHWAY_BINARY [ROUNDS]";
    let launchway = PathBuf::from(args.next().context(usage)?);
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
    let remote = server.project("web")?;
    let work = root.join("work");
    std::fs::create_dir_all(work.join("public/assets"))?;
    std::fs::create_dir_all(work.join(".upsun"))?;
    std::fs::write(work.join(".upsun/config.yaml"), CONFIG)?;
    std::fs::write(work.join("public/index.html"), "<h1>bench</h1>\n")?;
    std::fs::write(work.join("public/assets/site.css"), asset())?;
    run(git(&work).args(["init", "-q", "--initial-branch=main"]))?;
    run(git(&work).args(["add", "-A"]))?;
    run(git(&work).args(["commit", "-q", "-m", "site"]))?;
    let pushed = Instant::now();
    let out = git(&work)
        .env("GIT_SSH_COMMAND", &server.ssh_command)
        .args(["push", "-q", &remote, "HEAD:main"])
        .output()?;
    if !out.status.success() {
        bail!("push failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    println!(
        "web-bench: the static site deployed in {:.1} s (runtime image included when built now)",
        pushed.elapsed().as_secs_f64()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (status, body) = runtime.block_on(get_once(server.router, HOST))?;
    if status != 200 || body != "<h1>bench</h1>\n" {
        bail!("the static site does not answer through the router: {status} {body:?}");
    }
    let nginx = static_nginx(&nginx, root, &work.join("public"))?;
    runtime.block_on(static_files(server.router, nginx.address, rounds));
    drop(nginx);

    if std::env::var_os("LW_BENCH_SKIP_CRON").is_none() {
        cron_delay(&server)?;
    }
    server.stop();
    Ok(())
}

/// Debian's nginx on the host, serving `public` as the container's does.
fn static_nginx(binary: &Path, root: &Path, public: &Path) -> anyhow::Result<HostNginx> {
    HostNginx::start(binary, &root.join("host-nginx"), |address| {
        format!(
            r#"  include /etc/nginx/mime.types;
  sendfile on;
  tcp_nopush on;
  open_file_cache max=2000 inactive=20s;
  server {{
    listen {address};
    root {public};
    location / {{
      index index.html;
      try_files $uri $uri/ =404;
    }}
  }}"#,
            public = public.display()
        )
    })
}

async fn static_files(router: SocketAddr, nginx: SocketAddr, rounds: usize) {
    const CONNECTIONS: usize = 32;
    const DURATION: Duration = Duration::from_secs(5);
    closed_loop(router, HOST, ASSET, CONNECTIONS, Duration::from_secs(1)).await;
    closed_loop(nginx, HOST, ASSET, CONNECTIONS, Duration::from_secs(1)).await;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..rounds.max(1) {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for through_router in order {
            let address = if through_router { router } else { nginx };
            let load = closed_loop(address, HOST, ASSET, CONNECTIONS, DURATION).await;
            if through_router {
                ours.push(load);
            } else {
                theirs.push(load);
            }
        }
    }
    let median = |loads: &[Load]| {
        let mut rates: Vec<f64> = loads.iter().map(Load::throughput).collect();
        rates.sort_by(f64::total_cmp);
        let mut p99s: Vec<Duration> = loads
            .iter()
            .map(|l| percentile(&l.latencies, 0.99))
            .collect();
        p99s.sort();
        let errors: usize = loads.iter().map(|l| l.errors).sum();
        (rates[rates.len() / 2], p99s[p99s.len() / 2], errors)
    };
    let (our_rps, our_p99, our_errors) = median(&ours);
    let (host_rps, host_p99, host_errors) = median(&theirs);
    println!(
        "static files ({ASSET}, 4 KiB): router + the app container's nginx vs nginx on the host serving the same files, {CONNECTIONS} keep-alive connections, {} s x {rounds} rounds, median:",
        DURATION.as_secs()
    );
    println!(
        "  launchway (router + container nginx): {our_rps:>8.0} req/s  p99 {:>7.2} ms  errors {our_errors}",
        our_p99.as_secs_f64() * 1000.0
    );
    println!(
        "  host nginx (baseline):                {host_rps:>8.0} req/s  p99 {:>7.2} ms  errors {host_errors}",
        host_p99.as_secs_f64() * 1000.0
    );
    println!(
        "  throughput ratio: {:.3} (goal >= 0.8); p99 ratio: {:.3} (goal <= 1.5)",
        our_rps / host_rps,
        our_p99.as_secs_f64() / host_p99.as_secs_f64()
    );
}

/// Waits for two scheduled runs of the `tick` cron and prints how long
/// after their minute they started.
fn cron_delay(server: &LaunchwayServer) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut delays: Vec<u64> = Vec::new();
    while Instant::now() < deadline {
        let listed = server.cli(&[
            "activities",
            "-p",
            "web",
            "-e",
            "main",
            "--json",
            "--limit",
            "50",
        ])?;
        let activities: Vec<serde_json::Value> =
            serde_json::from_str(&listed).context("activities --json")?;
        delays = activities
            .iter()
            .filter(|a| {
                a["description"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("cron site:tick (schedule)"))
            })
            .filter_map(|a| a["started_at"].as_u64())
            .map(|started| started % 60_000)
            .collect();
        if delays.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    if delays.is_empty() {
        bail!("the cron never ran");
    }
    let worst = delays.iter().copied().max().unwrap_or(0);
    println!(
        "cron start delay after its minute: {} (worst {worst} ms; goal <= 1000 ms)",
        delays
            .iter()
            .map(|d| format!("{d} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
