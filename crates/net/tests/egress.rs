//! The build hook's proxy, driven from inside its namespace: a listed
//! destination is reached (plain HTTP and CONNECT) and counted, anything
//! else is refused with the hint and never dialled. Needs root (namespaces).
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use launchway_net::SocketFactory;
use launchway_net::egress::{AllowList, EgressPolicy, EgressProxy, PROXY_PORT};
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
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
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
