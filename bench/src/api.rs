//! `make bench`, HTTP API half (issue 23): the real daemon (release build),
//! its HTTPS API driven by a client on the same host.
//!
//! 1. A project page's API request: `GET /api/v1/projects/P/environments`
//!    of a project with 100 environments, one keep-alive HTTPS connection,
//!    requests back to back: p50/p99 (goal: p99 <= 20 ms). Baseline in the
//!    same run: the same operation over the admin socket (gRPC, one
//!    connection).
//! 2. Live logs: during a push whose build hook prints a line every 100 ms,
//!    a Server-Sent Events client follows the activity: the time to its
//!    first byte, and for each line the delay between the pusher seeing it
//!    over SSH (git's stderr: the baseline, the stream the push itself
//!    feeds) and the SSE client seeing it (goal: <= 100 ms).
//! 3. CI without git: `launchway deploy DIR` of an unchanged checkout over
//!    HTTPS (remote CLI, deploy key) against `git push` of a new commit
//!    with the same tree (goal: ratio <= 1.5). Both reuse the build and
//!    deploy; rounds alternate, medians compared.
//!
//! The figures go to `$LW_BENCH_DIR/api-bench.json` (see report.rs).
//!
//! Usage: `api-bench LAUNCHWAY_BINARY [ROUNDS]` (root; containerd from
//! `LAUNCHWAY_CONTAINERD_SOCKET`).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

mod common;
mod report;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::{LaunchwayServer, git, median, run};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use report::{Figure, Report, Target};

const APP: &str = r#"applications:
  web:
    type: "python:3.11"
    web:
      commands:
        start: httpd -f -p $PORT -h /app
"#;

const SLOW_HOOK_APP: &str = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        i=0
        while [ $i -lt 40 ]; do i=$((i+1)); echo "bench line $i"; sleep 0.1; done
    web:
      commands:
        start: httpd -f -p $PORT -h /app
"#;

const PROJECT: &str = "api";
const REQUESTS: usize = 1000;

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    let index = ((times.len() as f64 - 1.0) * p).round() as usize;
    times[index.min(times.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A TLS client that trusts the daemon's own (self-signed) API certificate.
fn tls_client(data: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let pem = std::fs::read(data.join("http/cert.pem"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>;

async fn connect(api: SocketAddr, tls: &tokio_rustls::TlsConnector) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(api).await?;
    tcp.set_nodelay(true)?;
    let stream = tls
        .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    sender.ready().await?;
    Ok(sender)
}

fn get(
    path: &str,
    token: &str,
    accept: Option<&str>,
) -> anyhow::Result<hyper::Request<Empty<bytes::Bytes>>> {
    let mut request = hyper::Request::get(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    Ok(request.body(Empty::new())?)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: api-bench LAUNCHWAY_BINARY [ROUNDS]";
    let launchway = PathBuf::from(args.next().context(usage)?);
    let rounds: usize = args.next().map_or(Ok(5), |r| r.parse())?;
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let key = root.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key))?;
    let mut server = LaunchwayServer::start(&launchway, root, &key)?;
    let mut report = Report::new("api-bench");
    let result = bench(&server, root, rounds, &mut report);
    server.stop();
    result?;
    report.finish()
}

fn bench(
    server: &LaunchwayServer,
    root: &Path,
    rounds: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    server.use_busybox_runtime()?;
    let remote = server.project(PROJECT)?;
    let work = root.join("work");
    std::fs::create_dir_all(work.join(".upsun"))?;
    run(git(&work).args(["init", "-q", "-b", "main"]))?;
    std::fs::write(work.join(".upsun/config.yaml"), APP)?;
    std::fs::write(work.join("index.html"), "hello\n")?;
    run(git(&work).args(["add", "-A"]))?;
    run(git(&work).args(["commit", "-q", "-m", "first"]))?;
    run(git(&work).args(["remote", "add", "launchway", &remote]))?;
    common::push(&work, "launchway", &server.ssh_command)?;
    // 99 more environments, inactive (stored, not built), in one push.
    let mut refspecs: Vec<String> = (1..100)
        .map(|i| format!("main:refs/heads/env{i:03}"))
        .collect();
    refspecs.insert(0, "launchway".into());
    run(git(&work)
        .env("GIT_SSH_COMMAND", &server.ssh_command)
        .arg("push")
        .arg("-q")
        .args(&refspecs))?;
    let token = server
        .cli(&["token", "create", "-p", PROJECT, "--role", "viewer"])?
        .trim()
        .to_owned();
    let deploy_key = server
        .cli(&[
            "token",
            "create",
            "-p",
            PROJECT,
            "--role",
            "admin",
            "--deploy-key",
        ])?
        .trim()
        .to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tls = tls_client(&server.data)?;

    // 1. A project page.
    let (mut http, mut socket) = runtime.block_on(async {
        let path = format!("/api/v1/projects/{PROJECT}/environments");
        let mut sender = connect(server.api, &tls).await?;
        let first = sender.send_request(get(&path, &token, None)?).await?;
        let body = first.into_body().collect().await?.to_bytes();
        let listed: serde_json::Value = serde_json::from_slice(&body)?;
        let count = listed["environments"].as_array().map_or(0, Vec::len);
        if count != 100 {
            bail!("the project has {count} environments, not 100: {listed}");
        }
        let mut http = Vec::with_capacity(REQUESTS);
        for _ in 0..REQUESTS {
            let started = Instant::now();
            sender.ready().await?;
            let response = sender.send_request(get(&path, &token, None)?).await?;
            response.into_body().collect().await?;
            http.push(started.elapsed());
        }
        let mut client = launchway_api::connect(&server.data.join("launchway.sock")).await?;
        let mut socket = Vec::with_capacity(REQUESTS);
        for _ in 0..REQUESTS {
            let started = Instant::now();
            client
                .list_environments(launchway_api::proto::ListEnvironmentsRequest {
                    project: PROJECT.into(),
                })
                .await?;
            socket.push(started.elapsed());
        }
        Ok::<_, anyhow::Error>((http, socket))
    })?;
    let (http_p50, http_p99) = (percentile(&mut http, 0.5), percentile(&mut http, 0.99));
    let (socket_p50, socket_p99) = (percentile(&mut socket, 0.5), percentile(&mut socket, 0.99));
    println!(
        "project page (100 environments), {REQUESTS} requests: HTTPS API p50 {:.2} ms p99 {:.2} ms; admin socket p50 {:.2} ms p99 {:.2} ms; p99 ratio {:.2} (goal: p99 <= 20 ms: {})",
        ms(http_p50),
        ms(http_p99),
        ms(socket_p50),
        ms(socket_p99),
        ms(http_p99) / ms(socket_p99),
        if ms(http_p99) <= 20.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    report.add(
        Figure::value(
            "project page (100 environments) over the HTTPS API, p99",
            "ms",
            ms(http_p99),
            Target::AtMost(20.0),
        )
        .beside(ms(socket_p99)),
    );

    // 3. CI without git: deploy DIR vs git push, same tree.
    let checkout = root.join("checkout");
    std::fs::create_dir_all(checkout.join(".upsun"))?;
    std::fs::write(checkout.join(".upsun/config.yaml"), APP)?;
    std::fs::write(checkout.join("index.html"), "hello\n")?;
    let url = format!("https://{}", server.api);
    let home = root.join("ci-home");
    std::fs::create_dir_all(&home)?;
    let mut pushes = Vec::new();
    let mut uploads = Vec::new();
    for round in 0..rounds {
        run(git(&work).args([
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            &format!("round {round}"),
        ]))?;
        pushes.push(common::push(&work, "launchway", &server.ssh_command)?);
        let started = Instant::now();
        let out = Command::new(server.binary())
            .env("HOME", &home)
            .env("LAUNCHWAY_URL", &url)
            .env("LAUNCHWAY_TOKEN", &deploy_key)
            .args(["deploy", "-p", PROJECT])
            .arg(&checkout)
            .output()?;
        uploads.push(started.elapsed());
        if !out.status.success() {
            bail!(
                "deploy DIR failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let said = String::from_utf8_lossy(&out.stderr);
        if !said.contains("Reusing existing build") {
            bail!("deploy DIR did not reuse the build:\n{said}");
        }
    }
    let (push, upload) = (median(&mut pushes), median(&mut uploads));
    println!(
        "unchanged checkout, build reused and deployed: launchway deploy DIR over HTTPS {:.3} s vs git push {:.3} s (medians of {rounds}); ratio {:.2} (goal <= 1.5: {})",
        upload.as_secs_f64(),
        push.as_secs_f64(),
        upload.as_secs_f64() / push.as_secs_f64(),
        if upload.as_secs_f64() / push.as_secs_f64() <= 1.5 {
            "met"
        } else {
            "NOT met"
        }
    );
    report.add(Figure::timed(
        "launchway deploy DIR over HTTPS / git push (build reused)",
        &uploads,
        &pushes,
        Target::AtMost(1.5),
    ));

    // 2. Live logs during a push.
    std::fs::write(work.join(".upsun/config.yaml"), SLOW_HOOK_APP)?;
    run(git(&work).args(["commit", "-q", "-am", "slow hook"]))?;
    let ssh_seen: Arc<Mutex<Vec<(Instant, u32)>>> = Arc::default();
    let mut push = git(&work)
        .env("GIT_SSH_COMMAND", &server.ssh_command)
        .args(["push", "launchway", "main"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let stderr = push.stderr.take().context("git's stderr")?;
    let reader = {
        let ssh_seen = ssh_seen.clone();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stderr);
            let mut line = Vec::new();
            // git rewrites progress with \r: split on both.
            loop {
                line.clear();
                match lines.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line);
                for part in text.split('\r') {
                    if let Some(n) = part
                        .split("bench line ")
                        .nth(1)
                        .and_then(|n| n.trim().parse().ok())
                    {
                        ssh_seen
                            .lock()
                            .map(|mut seen| seen.push((Instant::now(), n)))
                            .ok();
                    }
                }
            }
        })
    };
    let (first_byte, sse_seen) = runtime.block_on(async {
        // The push's activity, once it runs.
        let deadline = Instant::now() + Duration::from_secs(30);
        let activity = loop {
            let mut sender = connect(server.api, &tls).await?;
            let response = sender
                .send_request(get(
                    &format!("/api/v1/projects/{PROJECT}/activities?environment=main&limit=1"),
                    &token,
                    None,
                )?)
                .await?;
            let body = response.into_body().collect().await?.to_bytes();
            let listed: serde_json::Value = serde_json::from_slice(&body)?;
            let latest = &listed["activities"][0];
            if latest["state"] == "in_progress" && latest["type"] == "environment.push" {
                break latest["id"].as_u64().context("an activity id")?;
            }
            if Instant::now() > deadline {
                bail!("the push's activity did not start: {listed}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut sender = connect(server.api, &tls).await?;
        let started = Instant::now();
        let response = sender
            .send_request(get(
                &format!("/api/v1/activities/{activity}/log"),
                &token,
                Some("text/event-stream"),
            )?)
            .await?;
        let mut body = response.into_body();
        let mut first_byte = None;
        let mut seen = Vec::new();
        let mut buffer = String::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            let now = Instant::now();
            first_byte.get_or_insert(now - started);
            buffer.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if let Some(n) = event.split("bench line ").nth(1).and_then(|rest| {
                    rest.split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse::<u32>()
                        .ok()
                }) {
                    seen.push((now, n));
                }
            }
        }
        Ok::<_, anyhow::Error>((first_byte.unwrap_or_default(), seen))
    })?;
    let status = push.wait()?;
    let _ = reader.join();
    if !status.success() {
        bail!("the slow push failed");
    }
    let ssh_seen = ssh_seen.lock().map(|s| s.clone()).unwrap_or_default();
    let mut delays: Vec<Duration> = Vec::new();
    let mut ahead = 0;
    for (at, n) in &sse_seen {
        if let Some((ssh_at, _)) = ssh_seen.iter().find(|(_, m)| m == n) {
            match at.checked_duration_since(*ssh_at) {
                Some(delay) => delays.push(delay),
                None => {
                    ahead += 1;
                    delays.push(Duration::ZERO);
                }
            }
        }
    }
    if delays.len() < 20 {
        bail!(
            "too few lines seen on both sides: SSE {}, SSH {}",
            sse_seen.len(),
            ssh_seen.len()
        );
    }
    let max = delays.iter().max().copied().unwrap_or_default();
    let (p50, p99) = (percentile(&mut delays, 0.5), percentile(&mut delays, 0.99));
    println!(
        "live log during a push: first SSE byte {:.1} ms; each line seen over SSE after the pusher saw it over SSH: p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} lines, {ahead} seen over SSE first) (goal <= 100 ms: {})",
        ms(first_byte),
        ms(p50),
        ms(p99),
        ms(max),
        delays.len(),
        if ms(p99) <= 100.0 && ms(first_byte) <= 100.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    report.add(Figure::value(
        "live log over SSE: first byte",
        "ms",
        ms(first_byte),
        Target::AtMost(100.0),
    ));
    report.add(Figure::value(
        "live log over SSE: each line after SSH saw it, p99",
        "ms",
        ms(p99),
        Target::AtMost(100.0),
    ));
    Ok(())
}
