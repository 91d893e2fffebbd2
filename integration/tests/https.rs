//! HTTPS end to end: the router's HTTPS listener with the local CA,
//! operators' certificates (and the bad ones refused), Upsun's route `tls`
//! settings checked with curl, and ACME against Debian's `pebble` (a real
//! RFC 8555 server): issuance, a renewal under load, and pebble gone.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use launchway_integration::{Daemon, Work, pause};

const HOST: &str = "main.shop.localhost";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A busybox app behind `https://{default}/` with `tls` settings, and the
/// `http://` twin Upsun configs carry.
fn write_app(work: &Work, version: &str, extra_routes: &str) {
    work.write(
        ".upsun/config.yaml",
        format!(
            r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        mkdir -p public
        cp version public/index.html
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
routes:
  "https://{{default}}/":
    type: upstream
    upstream: web:http
    tls:
      min_version: TLSv1.3
      strict_transport_security:
        enabled: true
        include_subdomains: true
  "http://{{default}}/":
    type: redirect
    to: "https://{{default}}/"
{extra_routes}"#
        ),
    );
    work.write("version", format!("{version}\n"));
    work.commit(version);
}

/// curl with the daemon's hosts resolved to loopback.
fn curl(daemon: &Daemon, host: &str, args: &[&str]) -> Output {
    let https = daemon.router_https_addr().port();
    let http = daemon.router_addr().port();
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .arg("--resolve")
        .arg(format!("{host}:{https}:127.0.0.1"))
        .arg("--resolve")
        .arg(format!("{host}:{http}:127.0.0.1"))
        .args(args)
        .output()
        .expect("curl runs")
}

fn https_url(daemon: &Daemon, host: &str) -> String {
    format!("https://{host}:{}/", daemon.router_https_addr().port())
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
}

/// A CA (`<name>-ca.pem`/`-ca.key`) and a certificate it signs for
/// `names` valid `days` from `start_days` ago.
fn issue(dir: &Path, name: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf, PathBuf) {
    let ca = format!("{name}-ca");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-days",
            "30",
            "-subj",
            &format!("/CN={name} test CA"),
        ],
    );
    let san = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={}", names[0]),
            "-addext",
            &format!("subjectAltName={san}"),
        ],
    );
    let mut sign = vec![
        "x509",
        "-req",
        "-in",
        &format!("{name}.csr"),
        "-CA",
        &format!("{ca}.pem"),
        "-CAkey",
        &format!("{ca}.key"),
        "-out",
        &format!("{name}.pem"),
        "-copy_extensions",
        "copy",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<String>>();
    if expired {
        // Valid from two days ago to yesterday: `openssl ca` backdates.
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n[p]\ncommonName = supplied\n",
        )
        .unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "01\n").unwrap();
        let (from, to) = (jiff_like_date(-2), jiff_like_date(-1));
        openssl(
            dir,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-notext",
                "-startdate",
                &from,
                "-enddate",
                &to,
                "-in",
                &format!("{name}.csr"),
                "-out",
                &format!("{name}.pem"),
                "-keyfile",
                &format!("{ca}.key"),
                "-cert",
                &format!("{ca}.pem"),
            ],
        );
        return (
            dir.join(format!("{ca}.pem")),
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
    } else {
        sign.extend(["-days".into(), "20".into()]);
    }
    let sign: Vec<&str> = sign.iter().map(String::as_str).collect();
    openssl(dir, &sign);
    (
        dir.join(format!("{ca}.pem")),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

/// `YYYYMMDDHHMMSSZ`, `days` from now (openssl's date form).
fn jiff_like_date(days: i64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("{days} days"), "+%Y%m%d%H%M%SZ"])
        .output()
        .unwrap();
    text(&out.stdout).trim().to_owned()
}

fn certificates(daemon: &Daemon) -> Vec<serde_json::Value> {
    let out = daemon.cli_ok(&["certificates", "--json"]);
    serde_json::from_str(&out).unwrap()
}

fn row<'a>(rows: &'a [serde_json::Value], host: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|row| row["host"] == host)
        .unwrap_or_else(|| panic!("no row for {host}: {rows:#?}"))
}

#[test]
fn https_serves_with_the_local_ca_route_settings_and_operators_certificates() {
    let daemon = Daemon::start_with(
        "[router]\nlisten = \"127.0.0.1:0\"\nhttps_listen = \"127.0.0.1:0\"\n[deploy]\nstart_timeout_secs = 20\nstop_grace_secs = 2\n",
    );
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    let dir = tempfile::tempdir().unwrap();
    let (client_ca, client_cert, client_key) =
        issue(dir.path(), "client", &["client.shop.localhost"], false);
    work.write(".upsun/client-ca.crt", std::fs::read(&client_ca).unwrap());
    write_app(
        &work,
        "v1",
        "  \"https://api.{default}/\":\n    type: upstream\n    upstream: web:http\n    tls:\n      client_authentication: require\n      client_certificate_authorities:\n        - !include\n          type: string\n          path: client-ca.crt\n",
    );
    let log = work.push_ok("main", &[]);
    let https_port = daemon.router_https_addr().port();
    assert!(
        log.contains(&format!("https://{HOST}:{https_port}/")),
        "the push prints the https URL:\n{log}"
    );
    let local_ca = daemon.data_dir().join("tls/local-ca.pem");
    assert!(
        daemon.log().contains(local_ca.to_str().unwrap()),
        "the log names the local CA"
    );

    // Plain HTTP redirects to HTTPS; HTTPS verifies against the local CA
    // and carries the route's HSTS header.
    let http = format!("http://{HOST}:{}/page?q=1", daemon.router_addr().port());
    let out = curl(
        &daemon,
        HOST,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            &http,
        ],
    );
    assert_eq!(
        text(&out.stdout),
        format!("301 https://{HOST}:{https_port}/page?q=1")
    );
    let url = https_url(&daemon, HOST);
    let ca = local_ca.to_str().unwrap();
    let out = curl(&daemon, HOST, &["--cacert", ca, "-D", "-", &url]);
    let response = text(&out.stdout);
    assert!(out.status.success(), "{response}{}", text(&out.stderr));
    assert!(response.ends_with("v1\n"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000; includesubdomains"),
        "{response}"
    );
    // `min_version: TLSv1.3`: a client that stops at TLS 1.2 is refused.
    let out = curl(&daemon, HOST, &["--cacert", ca, "--tls-max", "1.2", &url]);
    assert!(
        !out.status.success(),
        "TLS 1.2 was accepted: {}",
        text(&out.stdout)
    );
    // `client_authentication: require`: no client certificate, no answer.
    let api = format!("api.{HOST}");
    let api_url = https_url(&daemon, &api);
    let out = curl(&daemon, &api, &["--cacert", ca, &api_url]);
    assert!(!out.status.success(), "served without a client certificate");
    let (cert, key) = (client_cert.to_str().unwrap(), client_key.to_str().unwrap());
    let out = curl(
        &daemon,
        &api,
        &["--cacert", ca, "--cert", cert, "--key", key, &api_url],
    );
    assert!(
        out.status.success(),
        "with a client certificate: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "v1\n");
    let rows = certificates(&daemon);
    assert_eq!(row(&rows, HOST)["source"], "local-ca", "{rows:#?}");

    // Bad certificates are refused with a reason, and nothing changes.
    let (_, good_cert, good_key) = issue(dir.path(), "good", &["*.shop.localhost"], false);
    let (_, _, other_key) = issue(dir.path(), "other", &["main.shop.localhost"], false);
    let (_, expired_cert, expired_key) =
        issue(dir.path(), "expired", &["main.shop.localhost"], true);
    let (_, stranger_cert, stranger_key) =
        issue(dir.path(), "stranger", &["www.example.org"], false);
    let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let refused = |host: &str, cert: &PathBuf, key: &PathBuf, why: &str| {
        let out = daemon.cli(&[
            "certificate",
            "add",
            "--host",
            host,
            &path(cert),
            &path(key),
        ]);
        assert!(!out.status.success(), "{host} accepted");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(why), "{host}: {stderr}");
    };
    refused("*.shop.localhost", &good_cert, &other_key, "does not match");
    refused(HOST, &expired_cert, &expired_key, "expired on");
    refused(
        "www.example.org",
        &stranger_cert,
        &stranger_key,
        "no route of an active environment",
    );
    refused(HOST, &stranger_cert, &stranger_key, "names");
    refused("not a host", &good_cert, &good_key, "not a host name");
    assert_eq!(
        certificates(&daemon),
        rows,
        "a refused certificate changed something"
    );

    // A good wildcard serves at once and wins over the fallback.
    let added = daemon.cli_ok(&[
        "certificate",
        "add",
        "--host",
        "*.shop.localhost",
        &path(&good_cert),
        &path(&good_key),
    ]);
    assert!(added.contains("*.shop.localhost"), "{added}");
    let good_ca = dir.path().join("good-ca.pem");
    let out = curl(
        &daemon,
        HOST,
        &["--cacert", good_ca.to_str().unwrap(), &url],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "v1\n");
    let listed = daemon.cli_ok(&["certificates", "-p", "shop"]);
    assert!(
        listed.contains("HOST") && listed.contains("EXPIRES"),
        "{listed}"
    );
    assert_eq!(row(&certificates(&daemon), HOST)["source"], "custom");
    // It survives a restart; removing it brings the local CA back.
    let mut daemon = daemon;
    daemon.stop();
    daemon.spawn();
    let out = curl(
        &daemon,
        HOST,
        &[
            "--cacert",
            good_ca.to_str().unwrap(),
            &https_url(&daemon, HOST),
        ],
    );
    assert!(
        out.status.success(),
        "after a restart: {}",
        text(&out.stderr)
    );
    daemon.cli_ok(&["certificate", "remove", "--host", "*.shop.localhost"]);
    let out = curl(&daemon, HOST, &["--cacert", ca, &https_url(&daemon, HOST)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A free loopback port (bound, then released for the caller).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Pebble {
    children: Vec<Child>,
    dir: tempfile::TempDir,
    /// The CA pebble's own HTTPS certificate chains to.
    tls_ca: PathBuf,
    directory: String,
    management: String,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Pebble {
    /// pebble and its DNS (every name is 127.0.0.1), validating HTTP-01 on
    /// `http_port`.
    fn start(http_port: u16) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let (tls_ca, cert, key) = issue(dir.path(), "pebble", &["localhost", "127.0.0.1"], false);
        // `127.0.0.1` as a DNS SAN is not an IP SAN: ask for both.
        let _ = (cert, key);
        openssl(
            dir.path(),
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ],
        );
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "pebble-ca.pem",
                "-CAkey",
                "pebble-ca.key",
                "-out",
                "server.pem",
                "-copy_extensions",
                "copy",
                "-days",
                "5",
            ],
        );
        let (listen, management, dns) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.path().join("server.pem"),
                "privateKey": dir.path().join("server.key"),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble) runs");
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble (Debian package pebble) runs");
        let pebble = Pebble {
            children: vec![dns_server, pebble],
            tls_ca: tls_ca.clone(),
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: format!("https://127.0.0.1:{management}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("curl")
                .args([
                    "-sf",
                    "--cacert",
                    tls_ca.to_str().unwrap(),
                    &pebble.directory,
                ])
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not start: {}",
                pebble.logs()
            );
            pause();
        }
        pebble
    }

    fn logs(&self) -> String {
        ["pebble.log", "pebble.err", "challtestsrv.err"]
            .iter()
            .map(|name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The root pebble made at start (a new one each run).
    fn root(&self) -> PathBuf {
        let out = Command::new("curl")
            .args(["-sf", "--cacert", self.tls_ca.to_str().unwrap()])
            .arg(format!("{}/roots/0", self.management))
            .output()
            .unwrap();
        assert!(out.status.success(), "pebble's root: {}", text(&out.stderr));
        let path = self.dir.path().join("root.pem");
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }

    fn stop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for(daemon: &Daemon, what: &str, mut ok: impl FnMut(&[serde_json::Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = certificates(daemon);
        if ok(&rows) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {rows:#?}\n{}",
            daemon.log()
        );
        pause();
    }
}

#[test]
fn acme_certificates_from_pebble_are_issued_renewed_under_load_and_survive_pebble_going_away() {
    let http_port = free_port();
    let mut pebble = Pebble::start(http_port);
    let daemon = Daemon::start_with(&format!(
        "[router]\nlisten = \"127.0.0.1:{http_port}\"\nhttps_listen = \"127.0.0.1:0\"\n\
         [tls]\nacme = true\nacme_directory = \"{}\"\nacme_ca_bundle = \"{}\"\nacme_contact = \"mailto:ops@shop.localhost\"\nacme_retry_secs = 2\n\
         [deploy]\nstart_timeout_secs = 20\nstop_grace_secs = 2\n",
        pebble.directory,
        pebble.tls_ca.display()
    ));
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    write_app(&work, "v1", "");
    work.push_ok("main", &[]);

    wait_for(&daemon, "an ACME certificate", |rows| {
        rows.iter()
            .any(|row| row["host"] == HOST && row["source"] == "acme")
    });
    let root = pebble.root();
    let url = https_url(&daemon, HOST);
    let out = curl(&daemon, HOST, &["--cacert", root.to_str().unwrap(), &url]);
    assert!(
        out.status.success(),
        "pebble's chain verifies: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "v1\n");
    let first = row(&certificates(&daemon), HOST).clone();

    // A renewal while requests (each a new TLS connection) keep coming:
    // none fails, and the new certificate is served.
    // The next certificate must differ in its expiry (one-second steps).
    let issued_at = Instant::now();
    while issued_at.elapsed() < Duration::from_millis(1100) {
        pause();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = {
        let (stop, served, failures) = (stop.clone(), served.clone(), failures.clone());
        let https = daemon.router_https_addr().port();
        let root = root.clone();
        let url = url.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let out = Command::new("curl")
                    .args(["-sS", "--max-time", "10", "--resolve"])
                    .arg(format!("{HOST}:{https}:127.0.0.1"))
                    .args(["--cacert", root.to_str().unwrap(), &url])
                    .output()
                    .unwrap();
                if out.status.success() && out.stdout == b"v1\n" {
                    served.fetch_add(1, Ordering::SeqCst);
                } else {
                    failures.lock().unwrap().push(text(&out.stderr));
                }
            }
        })
    };
    daemon.cli_ok(&["certificate", "renew", "--host", HOST]);
    wait_for(&daemon, "a renewed certificate", |rows| {
        rows.iter().any(|row| {
            row["host"] == HOST && row["source"] == "acme" && row["not_after"] != first["not_after"]
        })
    });
    let before = served.load(Ordering::SeqCst);
    while served.load(Ordering::SeqCst) < before + 5 {
        pause();
    }
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "requests failed during the renewal: {failures:?}"
    );
    assert!(served.load(Ordering::SeqCst) > 5);

    // Pebble gone: the served certificate stays, a renewal fails with a
    // reason, and a new host gets the fallback (no outage).
    pebble.stop();
    daemon.cli_ok(&["certificate", "renew", "--host", HOST]);
    wait_for(&daemon, "a failed renewal's status", |rows| {
        rows.iter().any(|row| {
            row["host"] == HOST
                && row["source"] == "acme"
                && row["status"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("ACME failed")
        })
    });
    let out = curl(&daemon, HOST, &["--cacert", root.to_str().unwrap(), &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    write_app(
        &work,
        "v2",
        "  \"https://www.{default}/\":\n    type: upstream\n    upstream: web:http\n",
    );
    work.push_ok("main", &[]);
    let www = format!("www.{HOST}");
    wait_for(&daemon, "the fallback with the reason", |rows| {
        rows.iter().any(|row| {
            row["host"] == www.as_str()
                && row["source"] == "local-ca"
                && row["status"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("ACME failed")
        })
    });
    let environments = daemon.cli_ok(&["environments", "-p", "shop"]);
    assert!(
        environments.contains(&format!("HTTPS main: {www} (local-ca): ACME failed")),
        "{environments}"
    );
    let local_ca = daemon.data_dir().join("tls/local-ca.pem");
    let out = curl(
        &daemon,
        &www,
        &[
            "--cacert",
            local_ca.to_str().unwrap(),
            &https_url(&daemon, &www),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "v2\n");
}
