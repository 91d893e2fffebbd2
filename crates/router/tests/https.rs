//! HTTPS on the router over real sockets with a real TLS client (rustls):
//! certificates by SNI from a local CA, `https://` routes redirected from
//! plain HTTP, HSTS on HTTPS responses, a host that asks for TLS 1.3 only,
//! requests held during a deploy.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use launchway_router::tls::{Certificates, HostTls, new_local_ca};
use launchway_router::{Action, Endpoint, RouteEntry, Router, RouterSettings};
use rustls::pki_types::pem::PemObject as _;
use tokio_util::sync::CancellationToken;

/// A backend answering `backend <x-forwarded-proto>`.
fn backend(listener: tokio::net::TcpListener) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: Request<hyper::body::Incoming>| async move {
                        let proto = request
                            .headers()
                            .get("x-forwarded-proto")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from(format!("backend {proto}"))),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// A TLS client trusting `ca` only, offering `versions`.
fn client(
    ca: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// GET `/path` over TLS to `host`; status, `Strict-Transport-Security`, body.
async fn get_tls(
    connector: &tokio_rustls::TlsConnector,
    address: std::net::SocketAddr,
    host: &str,
) -> Result<(u16, Option<String>, String), String> {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap();
    let tls = connector
        .connect(name, stream)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::get("/path?q=1")
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let hsts = response
        .headers()
        .get("strict-transport-security")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok((status, hsts, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn https_by_sni_with_redirects_hsts_and_a_tls13_only_host() {
    let router = Router::new(RouterSettings::default());
    let (ca, ca_key) = new_local_ca("Launchway test CA").unwrap();
    router.set_certificates(Certificates::with_local_ca(&ca, &ca_key).unwrap());
    let stop = CancellationToken::new();
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_address = plain.local_addr().unwrap();
    let secure = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let secure_address = secure.local_addr().unwrap();
    router.set_https_port(secure_address.port());
    {
        let (router, stop) = (router.clone(), stop.clone());
        tokio::spawn(async move { router.serve(plain, stop).await });
    }
    {
        let (router, stop) = (router.clone(), stop.clone());
        tokio::spawn(async move { router.serve_tls(secure, stop).await });
    }
    let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web_port = web.local_addr().unwrap().port();
    backend(web);

    let mut main = RouteEntry::new(
        "main.p.localhost",
        "/",
        Action::Upstream { app: "web".into() },
    );
    main.https = true;
    main.hsts = Some("max-age=31536000; includeSubDomains".into());
    let mut strict = RouteEntry::new(
        "strict.p.localhost",
        "/",
        Action::Upstream { app: "web".into() },
    );
    strict.https = true;
    strict.tls = HostTls {
        tls13_only: true,
        ..HostTls::default()
    };
    let plain_only = RouteEntry::new(
        "plain.p.localhost",
        "/",
        Action::Upstream { app: "web".into() },
    );
    router.set_routes("p/main", vec![main, strict, plain_only]);
    router.open(
        "p/main",
        HashMap::from([(
            "web".to_string(),
            Endpoint::Tcp {
                netns: None,
                address: ([127, 0, 0, 1], web_port).into(),
            },
        )]),
    );

    // Plain HTTP to an https:// route: 301 to the same place over HTTPS.
    let stream = tokio::net::TcpStream::connect(plain_address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender
        .send_request(
            Request::get("/path?q=1")
                .header("host", "main.p.localhost")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 301);
    assert_eq!(
        response.headers()["location"],
        format!(
            "https://main.p.localhost:{}/path?q=1",
            secure_address.port()
        )
        .as_str()
    );
    // A plain http:// route is still served as is.
    let response = sender
        .send_request(
            Request::get("/")
                .header("host", "plain.p.localhost")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // HTTPS: the local CA's certificate for the SNI name verifies; HSTS
    // where the route asks; the backend hears `https`.
    let both = client(&ca, rustls::ALL_VERSIONS);
    let (status, hsts, body) = get_tls(&both, secure_address, "main.p.localhost")
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "backend https"));
    assert_eq!(hsts.as_deref(), Some("max-age=31536000; includeSubDomains"));
    // TLS 1.2 only: accepted by the default policy, refused by the strict host.
    let old = client(&ca, &[&rustls::version::TLS12]);
    assert!(
        get_tls(&old, secure_address, "main.p.localhost")
            .await
            .is_ok()
    );
    let refused = get_tls(&old, secure_address, "strict.p.localhost").await;
    assert!(refused.is_err(), "{refused:?}");
    let (status, hsts, _) = get_tls(&both, secure_address, "strict.p.localhost")
        .await
        .unwrap();
    assert_eq!((status, hsts), (200, None));
    // A deploy holds HTTPS requests as it holds plain ones: the request
    // waits, unanswered, until the environment opens again.
    router.hold("p/main");
    let held = {
        let both = both.clone();
        tokio::spawn(async move { get_tls(&both, secure_address, "main.p.localhost").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !held.is_finished(),
        "an HTTPS request went through a held gate"
    );
    router.open(
        "p/main",
        HashMap::from([(
            "web".to_string(),
            Endpoint::Tcp {
                netns: None,
                address: ([127, 0, 0, 1], web_port).into(),
            },
        )]),
    );
    let (status, _, body) = held.await.unwrap().unwrap();
    assert_eq!((status, body.as_str()), (200, "backend https"));
    // A client trusting another CA refuses the certificate.
    let (other, _) = new_local_ca("Someone else").unwrap();
    let stranger = client(&other, rustls::ALL_VERSIONS);
    assert!(
        get_tls(&stranger, secure_address, "main.p.localhost")
            .await
            .is_err()
    );
    stop.cancel();
}
