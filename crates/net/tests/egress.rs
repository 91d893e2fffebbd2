//! The build hook's proxy, driven from inside its namespace: a listed
//! destination is reached (plain HTTP and CONNECT) and counted, anything
//! else is refused with the hint and never dialled; with an upstream proxy
//! (Debian's tinyproxy) permitted traffic goes through it. Needs root
//! (namespaces).
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use launchway_net::SocketFactory;
use launchway_net::egress::{AllowList, EgressPolicy, EgressProxy, PROXY_PORT};
use launchway_net::upstream::UpstreamProxy;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A host-side server that answers every connection with `hello` and
/// counts them.
fn origin() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            seen.fetch_add(1, Ordering::SeqCst);
            // The whole head: closing on unread bytes would reset the
            // connection before a proxy in between read the answer.
            let mut head = Vec::new();
            let mut chunk = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
            );
        }
    });
    (port, count)
}

/// Sends `request` to the proxy from inside the namespace and returns the
/// whole answer.
async fn ask(factory: &SocketFactory, request: &str) -> String {
    let socket = factory.socket().await.unwrap();
    let mut stream = socket
        .connect(([127, 0, 0, 1], PROXY_PORT).into())
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn the_proxy_lets_listed_destinations_through_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let netns = dir.path().join("hook");
    let (allowed_port, allowed_hits) = origin();
    let (other_port, other_hits) = origin();
    let (log, mut said) = tokio::sync::mpsc::channel(16);
    let policy = EgressPolicy {
        allow: AllowList::parse(&[format!("127.0.0.1:{allowed_port}")]).unwrap(),
        refusal_hint: "not in the list".into(),
        upstream: None,
    };
    let proxy = EgressProxy::start(&netns, policy, log).await.unwrap();
    let factory = SocketFactory::start(proxy.netns()).unwrap();

    // From inside, the host's loopback is out of reach without the proxy.
    let direct = factory
        .socket()
        .await
        .unwrap()
        .connect(([127, 0, 0, 1], allowed_port).into())
        .await;
    assert!(direct.is_err(), "the namespace reached the host directly");

    let plain = ask(
        &factory,
        &format!("GET http://127.0.0.1:{allowed_port}/x HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    assert!(plain.ends_with("hello"), "{plain}");
    let tunnel = ask(
        &factory,
        &format!("CONNECT 127.0.0.1:{allowed_port} HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(
        tunnel.starts_with("HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK"),
        "{tunnel}"
    );
    let refused = ask(
        &factory,
        &format!("CONNECT 127.0.0.1:{other_port} HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("not in the list"), "{refused}");
    let line = said.recv().await.unwrap();
    assert!(
        line.contains(&format!("127.0.0.1:{other_port} refused")),
        "{line}"
    );

    drop(factory);
    let report = proxy.finish().await;
    assert_eq!(allowed_hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "a refused one was dialled"
    );
    let allowed = report
        .hosts
        .iter()
        .find(|h| h.destination == format!("127.0.0.1:{allowed_port}"))
        .unwrap();
    assert_eq!((allowed.connections, allowed.refused), (2, 0));
    assert!(allowed.received >= 2 * 5 && allowed.sent > 0, "{allowed:?}");
    let other = report
        .hosts
        .iter()
        .find(|h| h.destination == format!("127.0.0.1:{other_port}"))
        .unwrap();
    assert_eq!((other.connections, other.refused), (0, 1));
    assert!(report.refused_any());
    assert!(!netns.exists(), "the namespace was left behind");
}

/// Debian's tinyproxy on the host's loopback, logging every request.
struct Tinyproxy {
    child: std::process::Child,
    log: std::path::PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    async fn start() -> Tinyproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("tinyproxy.log");
        let config = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 16\nAllow 127.0.0.1\n",
                log.display()
            ),
        )
        .unwrap();
        let proxy = Tinyproxy {
            child: std::process::Command::new("tinyproxy")
                .arg("-d")
                .arg("-c")
                .arg(&config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("tinyproxy (scripts/setup.sh test installs it)"),
            log,
            port,
            _dir: dir,
        };
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return proxy;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("tinyproxy did not listen on {port}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn permitted_traffic_goes_through_the_upstream_proxy_unless_no_proxy_says_otherwise() {
    let upstream = Tinyproxy::start().await;
    let dir = tempfile::tempdir().unwrap();
    let netns = dir.path().join("hook");
    let (through_port, through_hits) = origin();
    let (log, _said) = tokio::sync::mpsc::channel(16);
    // `localhost` reaches the origin around the proxy, `127.0.0.1` through it.
    let policy = EgressPolicy {
        allow: AllowList::parse(&[
            format!("127.0.0.1:{through_port}"),
            format!("localhost:{through_port}"),
        ])
        .unwrap(),
        refusal_hint: "not in the list".into(),
        upstream: Some(
            UpstreamProxy::parse(&format!("http://127.0.0.1:{}", upstream.port), "localhost")
                .unwrap(),
        ),
    };
    let proxy = EgressProxy::start(&netns, policy, log).await.unwrap();
    let factory = SocketFactory::start(proxy.netns()).unwrap();

    let tunnel = ask(
        &factory,
        &format!("CONNECT 127.0.0.1:{through_port} HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(
        tunnel.starts_with("HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK"),
        "{tunnel}"
    );
    let plain = ask(
        &factory,
        &format!("GET http://127.0.0.1:{through_port}/via HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    assert!(plain.ends_with("hello"), "{plain}");
    let proxied = upstream.log();
    assert!(
        proxied.contains(&format!("127.0.0.1:{through_port}")),
        "the upstream proxy saw no CONNECT: {proxied}"
    );
    assert!(
        proxied.contains("/via"),
        "the upstream proxy saw no request: {proxied}"
    );
    let before = proxied.lines().count();

    let direct = ask(
        &factory,
        &format!("CONNECT localhost:{through_port} HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(direct.contains("HTTP/1.1 200 OK"), "{direct}");
    assert_eq!(through_hits.load(Ordering::SeqCst), 3);
    assert!(
        !upstream
            .log()
            .lines()
            .skip(before)
            .any(|l| l.contains("localhost")),
        "a no_proxy host went through the proxy: {}",
        upstream.log()
    );

    // A proxy that refuses: the hook gets a 502 that says so.
    let mut answer = String::new();
    {
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = dead.local_addr().unwrap().port();
        drop(dead);
        let (log, _said) = tokio::sync::mpsc::channel(16);
        let netns = dir.path().join("hook-dead");
        let policy = EgressPolicy {
            allow: AllowList::parse(&[format!("127.0.0.1:{through_port}")]).unwrap(),
            refusal_hint: String::new(),
            upstream: Some(
                UpstreamProxy::parse(&format!("http://127.0.0.1:{dead_port}"), "").unwrap(),
            ),
        };
        let proxy = EgressProxy::start(&netns, policy, log).await.unwrap();
        let factory = SocketFactory::start(proxy.netns()).unwrap();
        answer.push_str(
            &ask(
                &factory,
                &format!("CONNECT 127.0.0.1:{through_port} HTTP/1.1\r\n\r\n"),
            )
            .await,
        );
        drop(factory);
        proxy.finish().await;
    }
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("upstream proxy"), "{answer}");

    drop(factory);
    proxy.finish().await;
}
