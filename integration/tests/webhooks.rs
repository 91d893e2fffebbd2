//! Webhooks end to end (issue 23): a push's events reach a local receiver,
//! signed as Standard Webhooks sign them (checked here with the secret
//! `webhook add` printed); while the receiver is down, deliveries fail,
//! are logged and retried, and arrive once it is back.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use launchway_integration::{Daemon, pause};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const APP: &str = r#"applications:
  web:
    type: "python:3.11"
    web:
      commands:
        start: httpd -f -p $PORT -h /app
"#;

/// One request the receiver got: its event type and whether its signature
/// verified.
#[derive(Clone, Debug)]
struct Received {
    event: String,
    id: String,
    signed: bool,
}

fn verify(secret: &str, id: &str, timestamp: &str, body: &str, signature: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    signature.split(' ').any(|s| s == expected)
}

/// Serves `listener`: every request is recorded, answered 204.
fn receive(listener: TcpListener, secret: String, got: Arc<Mutex<Vec<Received>>>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let length: usize = header("content-length").parse().unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body = text(&body);
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            let id = header("webhook-id");
            got.lock().unwrap().push(Received {
                event: value["type"].as_str().unwrap_or_default().to_owned(),
                signed: verify(
                    &secret,
                    &id,
                    &header("webhook-timestamp"),
                    &body,
                    &header("webhook-signature"),
                ),
                id,
            });
            let mut stream = reader.into_inner();
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
}

#[test]
fn events_are_signed_logged_and_retried_until_the_receiver_is_back() {
    // The receiver runs on this host: allowed here (the default refuses it,
    // see console.rs).
    let daemon = Daemon::start_with("[webhooks]\nfirst_retry_secs = 1\nallow_local = true\n");
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");

    // Bad input: refused with the reason, nothing stored.
    for (url, event) in [
        ("ftp://example.com/", None),
        ("http://127.0.0.1/", Some("deploy.maybe")),
    ] {
        let mut args = vec!["webhook", "add", "-p", "shop", url];
        if let Some(event) = event {
            args.extend(["--event", event]);
        }
        let out = daemon.cli(&args);
        assert!(!out.status.success(), "{url} was accepted");
        assert!(!text(&out.stderr).is_empty());
    }
    assert_eq!(
        daemon.cli_ok(&["webhooks", "-p", "shop"]).lines().count(),
        1
    );

    // The receiver's port, with nothing listening yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = daemon.cli(&[
        "webhook",
        "add",
        "-p",
        "shop",
        &format!("http://127.0.0.1:{port}/hook"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let secret = text(&out.stdout).trim().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let listed = daemon.cli_ok(&["webhooks", "-p", "shop"]);
    assert!(!listed.contains(&secret), "a secret was listed:\n{listed}");

    work.write(".upsun/config.yaml", APP);
    work.commit("first");
    work.push_ok("main", &[]);
    daemon.wait_idle("shop");

    // Down: the deliveries fail, say why, and wait for their next attempt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let log = daemon.cli_ok(&["webhook", "deliveries", "-p", "shop"]);
        if log.contains("cannot reach the receiver") && log.contains("pending") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed attempt:\n{log}"
        );
        pause();
    }

    // Back: every delivery arrives, signed, each event once.
    let got = Arc::new(Mutex::new(Vec::new()));
    receive(
        TcpListener::bind(("127.0.0.1", port)).unwrap(),
        secret,
        got.clone(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let log = daemon.cli_ok(&["webhook", "deliveries", "-p", "shop"]);
        if !log.contains("pending") && log.lines().count() > 1 {
            assert!(!log.contains("failed"), "{log}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered:\n{log}"
        );
        pause();
    }
    let got = got.lock().unwrap().clone();
    let events: Vec<&str> = got.iter().map(|r| r.event.as_str()).collect();
    for event in ["activity.started", "activity.completed", "deploy.succeeded"] {
        assert!(events.contains(&event), "{event} missing: {events:?}");
    }
    assert!(
        got.iter().all(|r| r.signed),
        "a signature did not verify: {got:?}"
    );
    let mut ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "an event arrived twice: {got:?}");
    // The early ones were retried.
    let log = daemon.cli_ok(&["webhook", "deliveries", "-p", "shop"]);
    assert!(
        log.lines().skip(1).any(|line| {
            line.split_whitespace()
                .nth(4)
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n >= 2)
        }),
        "no delivery took more than one attempt:\n{log}"
    );
}
