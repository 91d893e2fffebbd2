//! `make bench`, HTTPS half: the router terminating TLS, measured against
//! Debian's nginx terminating TLS in front of the same backend, in the
//! same run.
//!
//! 1. Keep-alive HTTPS: N keep-alive connections, each one TLS session
//!    carrying HTTP/1.1 requests back to back for a fixed time, rounds
//!    alternated: throughput and p99 latency (goal: router / nginx >= 0.9).
//! 2. Handshakes: the same load, but each request on a new TCP connection
//!    with a full TLS handshake (the client never resumes a session) and
//!    `Connection: close`: handshakes (= requests) per second and the p99
//!    of connect + handshake + request.
//!
//! The figures go to `$LW_BENCH_DIR/https-bench.json` (see report.rs).
//!
//! Why the comparison is fair: both sides serve the same certificate (an
//! ECDSA P-256 leaf for the route's host, signed by a CA made for the run,
//! installed in the daemon with `launchway certificate add` and given to
//! nginx as its `ssl_certificate`); both forward to the same backend (the
//! std-only `bench/backend` deployed as an app listening on a unix socket;
//! nginx proxies to that socket with upstream keep-alive, with the same
//! `http` block as deploy-bench's nginx plus TLS); nginx runs as many
//! workers as the router has threads (`available_parallelism()`); both
//! face the same client (one rustls config: TLS 1.2 and 1.3, ALPN
//! http/1.1, the run's CA as the only root, no resumption, X25519 as the
//! only key exchange, so that the router's rustls does not pick the costlier
//! X25519MLKEM768 hybrid that nginx's OpenSSL 3.0 lacks), the same number of
//! connections and the same duration; the negotiated parameters and the
//! certificate each side served are checked and printed before measuring.
//!
//! Usage: `https-bench LAUNCHWAY_BINARY BACKEND_BINARY [ROUNDS]` (root;
//! containerd from `LAUNCHWAY_CONTAINERD_SOCKET`; nginx on PATH).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

mod common;
mod load;
mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::{HostNginx, LaunchwayServer, app_socket, git, nginx_proxy, run};
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use load::{CONNECTIONS, Connect, DURATION, Reuse, Side, race_with, request};
use report::{Figure, Report, Target};
use rustls::pki_types::{CertificateDer, ServerName};

const CONFIG: &str = r#"applications:
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
    upstream: "fast:http"
"#;

const PROJECT: &str = "tls";
/// `{default}` of the project's `main` branch.
const HOST: &str = "main.tls.localhost";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: https-bench LAUNCHWAY_BINARY BACKEND_BINARY [ROUNDS]";
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
    let mut server = LaunchwayServer::start_with_https(&launchway, root, &key)?;
    let https = server.https.context("the daemon serves no HTTPS")?;
    server.use_busybox_runtime()?;
    let remote = server.project(PROJECT)?;
    let work = root.join("work");
    for sub in ["fast", ".upsun"] {
        std::fs::create_dir_all(work.join(sub))?;
    }
    std::fs::write(work.join(".upsun/config.yaml"), CONFIG)?;
    std::fs::copy(&backend, work.join("fast/bench-backend"))?;
    run(git(&work).args(["init", "-q", "--initial-branch=main"]))?;
    run(git(&work).args(["add", "-A"]))?;
    run(git(&work).args(["commit", "-q", "-m", "v0"]))?;
    common::push(&work, &remote, &server.ssh_command)?;

    // One certificate for both, installed as an operator's certificate.
    let pki = Pki::issue(&root.join("tls"), HOST)?;
    server.cli(&[
        "certificate",
        "add",
        "--host",
        HOST,
        &pki.chain.display().to_string(),
        &pki.key.display().to_string(),
    ])?;

    let socket = app_socket(&server.data, "fast")?;
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let tls_directives = format!(
        "    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;\n    keepalive_requests 100000;\n",
        pki.chain.display(),
        pki.key.display()
    );
    let nginx_version = nginx_version(&nginx);
    let nginx = HostNginx::start_with_workers(&nginx, &root.join("nginx"), workers, |address| {
        nginx_proxy(&socket, &format!("{address} ssl"), &tls_directives)
    })?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut report = Report::new("https-bench");
    runtime.block_on(async {
        let config = client_config(pki.ca.clone())?;
        let router = Tls::new(https, config.clone(), HOST)?;
        let baseline = Tls::new(nginx.address, config, HOST)?;
        let ours = probe_until_ready(&router, &pki.leaf).await?;
        let theirs = probe_until_ready(&baseline, &pki.leaf).await?;
        println!(
            "HTTPS: router vs {nginx_version} terminating TLS with the same certificate (ECDSA P-256, {HOST}) in front of the same unix-socket backend app; nginx {workers} workers = router threads"
        );
        println!("  negotiated: router {ours}; nginx {theirs}");
        keep_alive(router.clone(), baseline.clone(), rounds, &mut report).await;
        handshakes(router, baseline, rounds, &mut report).await;
        anyhow::Ok(())
    })?;
    drop(nginx);
    server.stop();
    report.finish()
}

/// A CA made for the run and a leaf for one host it signed, both ECDSA
/// P-256; the leaf's chain and key as PEM files.
struct Pki {
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    chain: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn issue(dir: &Path, host: &str) -> anyhow::Result<Pki> {
        let now = std::time::SystemTime::now();
        let day = Duration::from_secs(86_400);
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "https-bench CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        ca_params.not_before = (now - day).into();
        ca_params.not_after = (now + 30 * day).into();
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, host);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = (now - day).into();
        params.not_after = (now + 30 * day).into();
        let leaf = params.signed_by(&key, &issuer)?;

        std::fs::create_dir_all(dir)?;
        let chain = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&chain, leaf.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok(Pki {
            ca: ca.der().clone(),
            leaf: leaf.der().clone(),
            chain,
            key: key_path,
        })
    }
}

/// The client both sides face: the run's CA as the only root, TLS 1.2 and
/// 1.3, X25519 only, ALPN http/1.1, never resuming a session.
fn client_config(ca: CertificateDer<'static>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// TCP (`TCP_NODELAY`), then a TLS handshake naming the host.
#[derive(Clone)]
struct Tls {
    address: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl Tls {
    fn new(
        address: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        host: &str,
    ) -> anyhow::Result<Tls> {
        Ok(Tls {
            address,
            connector: tokio_rustls::TlsConnector::from(config),
            name: ServerName::try_from(host.to_owned())?,
        })
    }
}

impl Connect for Tls {
    type Stream = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

    async fn connect(&self) -> anyhow::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(self.address).await?;
        let _ = stream.set_nodelay(true);
        let stream = self.connector.connect(self.name.clone(), stream).await?;
        Ok(TokioIo::new(stream))
    }
}

/// [`probe`] until it succeeds (10 s at most).
async fn probe_until_ready(tls: &Tls, leaf: &CertificateDer<'_>) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match probe(tls, leaf).await {
            Ok(negotiated) => return Ok(negotiated),
            Err(error) if Instant::now() > deadline => {
                return Err(error.context(format!("no HTTPS answer from {}", tls.address)));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One HTTPS request: checks that the bench's certificate was served and
/// the backend answered; what the handshake negotiated.
async fn probe(tls: &Tls, leaf: &CertificateDer<'_>) -> anyhow::Result<String> {
    let stream = tls.connect().await?;
    let (_, connection) = stream.inner().get_ref();
    if connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        != Some(leaf)
    {
        bail!("{} did not serve the bench's certificate", tls.address);
    }
    let version = connection
        .protocol_version()
        .context("no protocol version")?;
    let suite = connection
        .negotiated_cipher_suite()
        .context("no cipher suite")?
        .suite();
    let group = connection
        .negotiated_key_exchange_group()
        .context("no key exchange group")?
        .name();
    let kind = connection.handshake_kind().context("no handshake kind")?;
    let kind = format!("{kind:?}").to_lowercase();
    let negotiated = format!("{version:?} {suite:?} {group:?}, {kind} handshake");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(stream).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request(HOST, "/")?).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    if status != 200 || body.as_ref() != b"hello, world\n" {
        bail!(
            "the backend app does not answer through {}: {status} {:?}",
            tls.address,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(negotiated)
}

/// The first line of `nginx -v` without its prefix (`nginx/1.22.1`).
fn nginx_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("-v")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stderr).into_owned())
        .and_then(|text| {
            text.lines()
                .next()
                .and_then(|line| line.strip_prefix("nginx version: "))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "nginx".into())
}

fn rates(side: &Side) -> String {
    side.rates
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

async fn keep_alive(router: Tls, nginx: Tls, rounds: usize, report: &mut Report) {
    let (ours, theirs) = race_with(router, nginx, Reuse::KeepAlive, HOST, "/", rounds).await;
    println!(
        "keep-alive HTTPS, {CONNECTIONS} connections, {} s x {rounds} rounds, median:",
        DURATION.as_secs()
    );
    for (name, side) in [("launchway router", &ours), ("nginx (baseline)", &theirs)] {
        println!(
            "  {name}: {:>8.0} req/s  p99 {:>7.2} ms  errors {}  reconnects {}  rounds: {}",
            side.rps,
            ms(side.p99),
            side.errors,
            side.reconnects,
            rates(side)
        );
    }
    println!(
        "  throughput ratio router / nginx: {:.3} (target >= 0.9); p99 ratio: {:.3}",
        ours.rps / theirs.rps,
        ours.p99.as_secs_f64() / theirs.p99.as_secs_f64()
    );
    report.add(
        Figure::compared(
            "router / nginx throughput, keep-alive HTTPS",
            "req/s",
            ours.rps,
            theirs.rps,
            Target::AtLeast(0.9),
        )
        .runs(ours.rates.iter().copied()),
    );
    report.add(Figure::compared(
        "router / nginx p99, keep-alive HTTPS",
        "ms",
        ms(ours.p99),
        ms(theirs.p99),
        Target::None,
    ));
}

async fn handshakes(router: Tls, nginx: Tls, rounds: usize, report: &mut Report) {
    let (ours, theirs) = race_with(router, nginx, Reuse::NewConnection, HOST, "/", rounds).await;
    println!(
        "TLS handshakes: a new connection per request (full handshake, no resumption), {CONNECTIONS} connections, {} s x {rounds} rounds, median:",
        DURATION.as_secs()
    );
    for (name, side) in [("launchway router", &ours), ("nginx (baseline)", &theirs)] {
        println!(
            "  {name}: {:>8.0} handshakes/s  p99 {:>7.2} ms (connect + handshake + request)  errors {}  rounds: {}",
            side.rps,
            ms(side.p99),
            side.errors,
            rates(side)
        );
    }
    println!(
        "  handshake ratio router / nginx: {:.3}; p99 ratio: {:.3}",
        ours.rps / theirs.rps,
        ours.p99.as_secs_f64() / theirs.p99.as_secs_f64()
    );
    report.add(
        Figure::compared(
            "router / nginx full TLS handshakes per second",
            "handshakes/s",
            ours.rps,
            theirs.rps,
            Target::None,
        )
        .runs(ours.rates.iter().copied()),
    );
    report.add(Figure::compared(
        "router / nginx p99, connect + handshake + request",
        "ms",
        ms(ours.p99),
        ms(theirs.p99),
        Target::None,
    ));
}
