//! The router over real sockets: routes, redirects, holding, draining and a
//! backend inside a network namespace the host cannot reach.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use launchway_router::{
    Action, Endpoint, RouteEntry, Router, RouterSettings, SocketFactory, netns,
};
use tokio_util::sync::CancellationToken;

/// Serves `reply` (plus the request's path and `Host`) on `listener`.
fn backend(listener: tokio::net::TcpListener, reply: &'static str, delay: Duration) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: Request<hyper::body::Incoming>| async move {
                        tokio::time::sleep(delay).await;
                        let host = request
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let forwarded = request
                            .headers()
                            .get("x-forwarded-for")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let text = format!("{reply} {host} {forwarded} {}", body.len());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn get(
    router: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> (u16, String, HashMap<String, String>) {
    let stream = tokio::net::TcpStream::connect(router).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), headers)
}

async fn start_router(
    settings: RouterSettings,
) -> (Router, std::net::SocketAddr, CancellationToken) {
    let router = Router::new(settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let serving = router.clone();
    let token = stop.clone();
    tokio::spawn(async move { serving.serve(listener, token).await });
    (router, address, stop)
}

fn upstream(host: &str, path: &str, app: &str) -> RouteEntry {
    RouteEntry::new(host, path, Action::Upstream { app: app.into() })
}

#[tokio::test]
async fn routes_redirects_and_health() {
    let (router, address, _stop) = start_router(RouterSettings::default()).await;
    let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web_port = web.local_addr().unwrap().port();
    backend(web, "web", Duration::ZERO);
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_port = api.local_addr().unwrap().port();
    backend(api, "api", Duration::ZERO);
    router.set_routes(
        "p/main",
        vec![
            upstream("main.p.localhost", "/", "web"),
            upstream("main.p.localhost", "/api", "api"),
            RouteEntry::new(
                "old.p.localhost",
                "/",
                Action::Redirect {
                    to: "http://main.p.localhost/".into(),
                    code: 301,
                },
            ),
        ],
    );
    router.open(
        "p/main",
        HashMap::from([
            (
                "web".to_string(),
                Endpoint::Tcp {
                    netns: None,
                    address: SocketAddr::from(([127, 0, 0, 1], web_port)),
                },
            ),
            (
                "api".to_string(),
                Endpoint::Tcp {
                    netns: None,
                    address: SocketAddr::from(([127, 0, 0, 1], api_port)),
                },
            ),
        ]),
    );
    let (status, body, _) = get(address, "Main.P.localhost:8080", "/x").await;
    assert_eq!(status, 200);
    assert_eq!(body, "web Main.P.localhost:8080 127.0.0.1 3");
    let (_, body, _) = get(address, "main.p.localhost", "/api/v1").await;
    assert!(body.starts_with("api "), "{body}");
    let (_, body, _) = get(address, "main.p.localhost", "/apix").await;
    assert!(body.starts_with("web "), "{body}");
    let (status, _, headers) = get(address, "old.p.localhost", "/").await;
    assert_eq!(status, 301);
    assert_eq!(headers["location"], "http://main.p.localhost/");
    let (status, body, _) = get(address, "nowhere.localhost", "/").await;
    assert_eq!(status, 404);
    assert!(body.contains("no route"));
    let (status, _, _) = get(address, "127.0.0.1", "/health").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn held_requests_wait_then_go_to_the_new_backend_or_time_out() {
    let settings = RouterSettings {
        hold_timeout: Duration::from_millis(800),
        ..Default::default()
    };
    let (router, address, _stop) = start_router(settings).await;
    let old = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_port = old.local_addr().unwrap().port();
    backend(old, "old", Duration::from_millis(300));
    let new = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let new_port = new.local_addr().unwrap().port();
    backend(new, "new", Duration::ZERO);
    router.set_routes("p/main", vec![upstream("main.p.localhost", "/", "app")]);
    router.open(
        "p/main",
        HashMap::from([(
            "app".to_string(),
            Endpoint::Tcp {
                netns: None,
                address: SocketAddr::from(([127, 0, 0, 1], old_port)),
            },
        )]),
    );

    // A slow request to the old version is in flight when the deploy holds.
    let slow = tokio::spawn(get(address, "main.p.localhost", "/slow"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(router.in_flight("p/main"), 1);
    router.hold("p/main");
    let held = tokio::spawn(get(address, "main.p.localhost", "/held"));
    let drained_at = Instant::now();
    assert!(router.drain("p/main", Duration::from_secs(5)).await);
    assert!(drained_at.elapsed() >= Duration::from_millis(100));
    assert!(slow.await.unwrap().1.starts_with("old "));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "a held request must wait");
    router.open(
        "p/main",
        HashMap::from([(
            "app".to_string(),
            Endpoint::Tcp {
                netns: None,
                address: SocketAddr::from(([127, 0, 0, 1], new_port)),
            },
        )]),
    );
    let (status, body, _) = held.await.unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("new "), "{body}");

    router.hold("p/main");
    let (status, _, headers) = get(address, "main.p.localhost", "/").await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "5");
}

#[tokio::test]
async fn backends_inside_a_namespace_are_reached_only_through_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns");
    netns::create(&path).unwrap();
    assert!(netns::is_namespace(&path));
    let factory = Arc::new(SocketFactory::start(&path).unwrap());
    let socket = factory.socket().await.unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    backend(socket.listen(64).unwrap(), "inside", Duration::ZERO);

    // The host's loopback is another network: nothing listens there.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );

    let (router, address, _stop) = start_router(RouterSettings::default()).await;
    router.set_routes("p/ns", vec![upstream("ns.p.localhost", "/", "app")]);
    router.open(
        "p/ns",
        HashMap::from([(
            "app".to_string(),
            Endpoint::Tcp {
                netns: Some(factory.clone()),
                address: SocketAddr::from(([127, 0, 0, 1], port)),
            },
        )]),
    );
    for _ in 0..3 {
        let (status, body, _) = get(address, "ns.p.localhost", "/").await;
        assert_eq!(status, 200);
        assert!(body.starts_with("inside "), "{body}");
    }
    router.remove("p/ns");
    drop(factory);
    netns::remove(&path).unwrap();
    assert!(!path.exists());
}

#[tokio::test]
async fn upgrades_are_tunnelled_both_ways() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // A backend that switches protocols, then echoes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.contains("upgrade: websocket"), "{head}");
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 64];
        loop {
            let read = stream.read(&mut buffer).await.unwrap();
            if read == 0 {
                return;
            }
            stream.write_all(&buffer[..read]).await.unwrap();
        }
    });
    let (router, address, _stop) = start_router(RouterSettings::default()).await;
    router.set_routes("p/ws", vec![upstream("ws.p.localhost", "/", "app")]);
    router.open(
        "p/ws",
        HashMap::from([(
            "app".to_string(),
            Endpoint::Tcp {
                netns: None,
                address: SocketAddr::from(([127, 0, 0, 1], port)),
            },
        )]),
    );
    let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
    client
        .write_all(b"GET /chat HTTP/1.1\r\nHost: ws.p.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    client.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    client.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
}

#[tokio::test]
async fn a_client_that_half_closes_still_gets_its_answer() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (_router, address, _stop) = start_router(RouterSettings::default()).await;
    for _ in 0..20 {
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client
            .write_all(b"GET /health HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let mut response = String::new();
        client.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.0 200"), "{response:?}");
    }
}

/// Sends `head` on a raw connection; what comes back before the router
/// closes it (or `None` if it stays open past `wait`).
async fn raw_exchange(
    address: std::net::SocketAddr,
    head: &[u8],
    wait: Duration,
) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let _ = stream.write_all(head).await;
    let mut answer = Vec::new();
    match tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await {
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn oversized_heads_are_refused_and_slow_ones_cut_off() {
    let (_router, address, stop) = start_router(RouterSettings {
        header_timeout: Duration::from_secs(1),
        ..RouterSettings::default()
    })
    .await;
    // A head past the limit: 431, not a read without end.
    let mut head = b"GET / HTTP/1.1\r\nHost: a.localhost\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(
        b'a',
        launchway_router::MAX_REQUEST_HEAD * 2,
    ));
    head.extend_from_slice(b"\r\n\r\n");
    let answer = raw_exchange(address, &head, Duration::from_secs(10))
        .await
        .expect("the connection is closed");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    // Slowloris: half a head, then silence; cut off after the header timeout.
    let started = std::time::Instant::now();
    let answer = raw_exchange(
        address,
        b"GET / HTTP/1.1\r\nHost: a.localhost\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.is_some(), "a slow client kept its connection");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The router still answers.
    let (status, _, _) = get(address, "a.localhost", "/health").await;
    assert_eq!(status, 200);
    stop.cancel();
}
