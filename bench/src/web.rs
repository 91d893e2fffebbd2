//! `make bench`, web-server half: what apps' `web.locations` cost, and
//! how late crons start.
//!
//! 1. Static files: a static site (the catalog's python:3.11 image, no
//!    start command, one `/` location) through the router and the
//!    container's nginx, against Debian's nginx on the host serving the
//!    same files, with the same closed-loop load (N keep-alive
//!    connections for a fixed time, rounds alternated): throughput and
//!    p99 latency ratios (goals: >= 0.8 and <= 1.5).
//! 2. A PHP page (a catalog of 50 items rendered by a front controller,
//!    `passthru: /index.php`) through the router, the container's nginx
//!    and PHP-FPM, against Debian's nginx and PHP-FPM on the host running
//!    the same file with a pool of the same size (goal: >= 0.8).
//! 3. Cron start delay: a `* * * * *` cron's runs, how long after their
//!    minute each started (goal: <= 1 s).
//!
//! The figures go to `$LW_BENCH_DIR/web-bench.json` (see report.rs).
//!
//! Usage: `web-bench LAUNCHWAY_BINARY [ROUNDS]` (root; containerd from
//! `LAUNCHWAY_CONTAINERD_SOCKET`; nginx and php-fpm8.2 on the host; the
//! runtime images are built from Debian on first use). `LW_BENCH_SKIP_PHP`
//! and `LW_BENCH_SKIP_CRON` leave parts out.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

mod common;
mod load;
mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::{HostNginx, LaunchwayServer, git, run};
use load::{CONNECTIONS, DURATION, Side, get_once, race};
use report::{Figure, Report, Target};

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

const PHP_CONFIG: &str = r#"applications:
  shop:
    type: "php:8.2"
    build:
      flavor: none
    web:
      locations:
        "/":
          root: "web"
          passthru: "/index.php"
routes:
  "https://{default}/":
    type: upstream
    upstream: "shop:http"
"#;

const PHP_HOST: &str = "main.php.localhost";

/// A small catalog page, as a PHP front controller renders one.
const PHP_PAGE: &str = r#"<?php
$items = [];
for ($i = 1; $i <= 50; $i++) {
    $items[] = ['id' => $i, 'name' => "Product $i <b>", 'price' => $i * 1.25];
}
header('Content-Type: text/html; charset=utf-8');
echo "<!DOCTYPE html>\n<html><head><title>Catalog</title></head><body><h1>Catalog</h1><ul>\n";
foreach ($items as $item) {
    printf('<li id="p%d">%s: %.2f</li>' . "\n", $item['id'], htmlspecialchars($item['name']), $item['price']);
}
echo '</ul><p>', htmlspecialchars(parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH)), "</p></body></html>\n";
"#;
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
    let nginx_binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
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
    let work = root.join("work");
    let deployed = deploy_repo(
        &server,
        "web",
        &work,
        &[
            (".upsun/config.yaml", CONFIG.to_owned()),
            ("public/index.html", "<h1>bench</h1>\n".to_owned()),
            ("public/assets/site.css", asset()),
        ],
    )?;
    println!(
        "web-bench: the static site deployed in {:.1} s (runtime image included when built now)",
        deployed.as_secs_f64()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (status, body) = runtime.block_on(get_once(server.router, HOST))?;
    if status != 200 || body != "<h1>bench</h1>\n" {
        bail!("the static site does not answer through the router: {status} {body:?}");
    }
    let mut report = Report::new("web-bench");
    let nginx = static_nginx(&nginx_binary, root, &work.join("public"))?;
    runtime.block_on(static_files(
        server.router,
        nginx.address,
        rounds,
        &mut report,
    ));
    drop(nginx);

    if std::env::var_os("LW_BENCH_SKIP_PHP").is_none() {
        php_page(&server, root, &nginx_binary, &runtime, rounds, &mut report)?;
    }

    if std::env::var_os("LW_BENCH_SKIP_CRON").is_none() {
        cron_delay(&server, &mut report)?;
    }
    server.stop();
    report.finish()
}

/// Creates `project`, commits `files` in a new repository at `work` and
/// pushes it; how long the push (build and deploy) took.
fn deploy_repo(
    server: &LaunchwayServer,
    project: &str,
    work: &Path,
    files: &[(&str, String)],
) -> anyhow::Result<Duration> {
    let remote = server.project(project)?;
    for (path, content) in files {
        let path = work.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, content)?;
    }
    run(git(work).args(["init", "-q", "--initial-branch=main"]))?;
    run(git(work).args(["add", "-A"]))?;
    run(git(work).args(["commit", "-q", "-m", project]))?;
    let pushed = Instant::now();
    let out = git(work)
        .env("GIT_SSH_COMMAND", &server.ssh_command)
        .args(["push", "-q", &remote, "HEAD:main"])
        .output()?;
    if !out.status.success() {
        bail!("push failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(pushed.elapsed())
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

fn print_race(ours_label: &str, theirs_label: &str, ours: &Side, theirs: &Side, goals: &str) {
    let line = |label: &str, side: &Side| {
        let rounds: Vec<String> = side.rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "  {label:<38} {:>8.0} req/s  p99 {:>7.2} ms  errors {}  rounds: {}",
            side.rps,
            side.p99.as_secs_f64() * 1000.0,
            side.errors,
            rounds.join(" ")
        );
    };
    line(ours_label, ours);
    line(theirs_label, theirs);
    println!(
        "  throughput ratio: {:.3}; p99 ratio: {:.3} ({goals})",
        ours.rps / theirs.rps,
        ours.p99.as_secs_f64() / theirs.p99.as_secs_f64()
    );
}

/// Throughput and p99 rows of a race.
fn race_rows(
    report: &mut Report,
    what: &str,
    ours: &Side,
    theirs: &Side,
    throughput: Target,
    p99: Target,
) {
    report.add(
        Figure::compared(
            &format!("{what}: throughput / host baseline"),
            "req/s",
            ours.rps,
            theirs.rps,
            throughput,
        )
        .runs(ours.rates.iter().copied()),
    );
    report.add(Figure::compared(
        &format!("{what}: p99 / host baseline"),
        "ms",
        ours.p99.as_secs_f64() * 1000.0,
        theirs.p99.as_secs_f64() * 1000.0,
        p99,
    ));
}

async fn static_files(router: SocketAddr, nginx: SocketAddr, rounds: usize, report: &mut Report) {
    let (ours, theirs) = race(router, nginx, HOST, ASSET, rounds).await;
    println!(
        "static files ({ASSET}, 4 KiB): router + the app container's nginx vs nginx on the host serving the same files, {CONNECTIONS} keep-alive connections, {} s x {rounds} rounds, median:",
        DURATION.as_secs()
    );
    print_race(
        "launchway (router + container nginx):",
        "host nginx (baseline):",
        &ours,
        &theirs,
        "goals: >= 0.8 and <= 1.5",
    );
    race_rows(
        report,
        "static file (4 KiB)",
        &ours,
        &theirs,
        Target::AtLeast(0.8),
        Target::AtMost(1.5),
    );
}

/// Deploys the PHP catalog page and races it against the host's nginx and
/// PHP-FPM serving the same file with a pool of the same size.
fn php_page(
    server: &LaunchwayServer,
    root: &Path,
    nginx_binary: &Path,
    runtime: &tokio::runtime::Runtime,
    rounds: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let fpm_binary = PathBuf::from("/usr/sbin/php-fpm8.2");
    if !fpm_binary.exists() {
        bail!("php-fpm is missing: apt-get install php8.2-fpm (scripts/setup.sh bench)");
    }
    let work = root.join("php-work");
    let deployed = deploy_repo(
        server,
        "php",
        &work,
        &[
            (".upsun/config.yaml", PHP_CONFIG.to_owned()),
            ("web/index.php", PHP_PAGE.to_owned()),
        ],
    )?;
    println!(
        "web-bench: the PHP app deployed in {:.1} s (runtime image included when built now)",
        deployed.as_secs_f64()
    );
    let children = deployed_pool_size(&server.data)?;
    let host = HostPhp::start(&fpm_binary, &root.join("host-php"), children)?;
    let nginx = HostNginx::start(nginx_binary, &root.join("host-php-nginx"), |address| {
        format!(
            r#"  include /etc/nginx/mime.types;
  server {{
    listen {address};
    root {web};
    location / {{
      try_files $uri /index.php$is_args$args;
    }}
    location ~ \.php$ {{
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
      fastcgi_pass unix:{socket};
    }}
  }}"#,
            web = work.join("web").display(),
            socket = host.socket.display()
        )
    })?;
    let ours = runtime.block_on(get_once(server.router, PHP_HOST))?;
    let theirs = runtime.block_on(get_once(nginx.address, PHP_HOST))?;
    if ours.0 != 200 || !ours.1.contains("Product 50 &lt;b&gt;: 62.50") || ours != theirs {
        bail!(
            "the PHP page differs: launchway {} {:?}, host {} {:?}",
            ours.0,
            ours.1,
            theirs.0,
            theirs.1
        );
    }
    let (ours, theirs) =
        runtime.block_on(race(server.router, nginx.address, PHP_HOST, "/", rounds));
    println!(
        "a PHP page (50-item catalog, front controller): router + the container's nginx and PHP-FPM vs nginx + PHP-FPM on the host, {children} FPM workers each, {CONNECTIONS} keep-alive connections, {} s x {rounds} rounds, median:",
        DURATION.as_secs()
    );
    print_race(
        "launchway (router + nginx + PHP-FPM):",
        "host nginx + PHP-FPM (baseline):",
        &ours,
        &theirs,
        "goal: >= 0.8",
    );
    race_rows(
        report,
        "PHP page",
        &ours,
        &theirs,
        Target::AtLeast(0.8),
        Target::None,
    );
    Ok(())
}

/// `pm.max_children` of the PHP-FPM pool Launchway generated for the app.
fn deployed_pool_size(data: &Path) -> anyhow::Result<u32> {
    fn find(dir: &Path, depth: usize) -> Option<PathBuf> {
        let entries = std::fs::read_dir(dir).ok()?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == "php-fpm.conf") {
                return Some(path);
            }
            if depth > 0
                && entry
                    .file_type()
                    .is_ok_and(|t| t.is_dir() && !t.is_symlink())
                && let Some(found) = find(&path, depth - 1)
            {
                return Some(found);
            }
        }
        None
    }
    let path = find(data, 8).context("the deployed app has no php-fpm.conf")?;
    let text = std::fs::read_to_string(&path)?;
    text.lines()
        .find_map(|line| line.strip_prefix("pm.max_children = "))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no pm.max_children in {}", path.display()))
}

/// Debian's PHP-FPM on the host, with the pool Launchway generates.
struct HostPhp {
    child: std::process::Child,
    socket: PathBuf,
}

impl HostPhp {
    fn start(binary: &Path, dir: &Path, children: u32) -> anyhow::Result<HostPhp> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("php.sock");
        let config = dir.join("php-fpm.conf");
        let d = dir.display();
        std::fs::write(
            &config,
            format!(
                "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\ndaemonize = no\n\n[bench]\nuser = root\ngroup = root\nlisten = {socket}\nlisten.mode = 0660\npm = dynamic\npm.max_children = {children}\npm.start_servers = {start}\npm.min_spare_servers = 1\npm.max_spare_servers = {spare}\npm.max_requests = 1000\nclear_env = no\n",
                socket = socket.display(),
                start = children.min(2),
                spare = children.min(4),
            ),
        )?;
        let child = Command::new(binary)
            .args(["-F", "-R", "-y"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        common::wait_for("php-fpm", || socket.exists())?;
        Ok(HostPhp { child, socket })
    }
}

impl Drop for HostPhp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for two scheduled runs of the `tick` cron and prints how long
/// after their minute they started.
fn cron_delay(server: &LaunchwayServer, report: &mut Report) -> anyhow::Result<()> {
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
    report.add(
        Figure::value(
            "cron start delay after its minute, worst",
            "ms",
            worst as f64,
            Target::AtMost(1000.0),
        )
        .runs(delays.iter().map(|d| *d as f64)),
    );
    Ok(())
}
