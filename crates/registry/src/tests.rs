//! The client against stub registries: hyper servers on 127.0.0.1 over plain
//! http (allowed for loopback), each answering as a test needs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper::Response;
use hyper::header::HeaderMap;
use tokio::io::AsyncWriteExt as _;

use super::*;

const REPO: &str = "launchway/abcdef012345";

/// A request as the stub saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// Path and query.
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync>;

struct Stub {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    async fn start(
        handler: impl Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Stub {
        let handler: Handler = Arc::new(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (handler, log) = (handler.clone(), log.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (handler, log) = (handler.clone(), log.clone());
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method.to_string(),
                                uri: parts
                                    .uri
                                    .path_and_query()
                                    .map(ToString::to_string)
                                    .unwrap_or_default(),
                                headers: parts.headers,
                                body,
                            };
                            log.lock().unwrap().push(seen.clone());
                            Ok::<_, std::convert::Infallible>(handler(&seen))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Stub { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn registry(&self, credentials: Option<(&str, &str)>) -> Registry {
        Registry::new(RegistryConfig {
            url: self.url(),
            repository: REPO.to_owned(),
            username: credentials.map(|(u, _)| u.to_owned()),
            password: credentials.map(|(_, p)| p.to_owned()),
            ca_pem: None,
        })
        .unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn reply(status: u16) -> hyper::http::response::Builder {
    Response::builder().status(status)
}

fn empty(status: u16) -> Response<Full<Bytes>> {
    reply(status).body(Full::new(Bytes::new())).unwrap()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn digest_of(bytes: &[u8]) -> String {
    sha256_digest(bytes)
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn sha256_digest_is_lowercase_hex() {
    assert_eq!(
        sha256_digest(b""),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert!(is_digest(&sha256_digest(b"x")));
}

#[test]
fn config_is_checked() {
    let new = |url: &str, repository: &str| {
        Registry::new(RegistryConfig {
            url: url.to_owned(),
            repository: repository.to_owned(),
            ..RegistryConfig::default()
        })
    };
    assert!(new("https://reg.example:5000/", REPO).is_ok());
    assert_eq!(
        new("https://reg.example:5000/", REPO).unwrap().url(),
        "https://reg.example:5000"
    );
    assert!(new("http://127.0.0.1:5000", REPO).is_ok());
    assert!(new("http://localhost:5000", REPO).is_ok());
    for (url, repository, words) in [
        ("http://reg.example:5000", REPO, "plain http"),
        ("reg.example:5000", REPO, "not an http(s) URL"),
        ("https://reg.example/v2", REPO, "only scheme, host and port"),
        ("https://u:p@reg.example", REPO, "must not hold credentials"),
        ("not a url", REPO, "not a URL"),
        (
            "https://reg.example",
            "Launchway/X",
            "not a repository name",
        ),
        ("https://reg.example", "", "not a repository name"),
    ] {
        let error = new(url, repository).unwrap_err();
        assert!(matches!(error, RegistryError::Invalid { .. }), "{error:?}");
        assert!(error.to_string().contains(words), "{url}: {error}");
    }
    let error = Registry::new(RegistryConfig {
        url: "https://reg.example".to_owned(),
        repository: REPO.to_owned(),
        username: Some("u".to_owned()),
        ..RegistryConfig::default()
    })
    .unwrap_err();
    assert!(error.to_string().contains("password_file"), "{error}");
    let error = Registry::new(RegistryConfig {
        url: "https://reg.example".to_owned(),
        repository: REPO.to_owned(),
        ca_pem: Some(b"not pem".to_vec()),
        ..RegistryConfig::default()
    })
    .unwrap_err();
    assert!(error.to_string().contains("ca_file"), "{error}");

    // The password shows in no Debug.
    let config = RegistryConfig {
        url: "https://reg.example".to_owned(),
        repository: REPO.to_owned(),
        username: Some("u".to_owned()),
        password: Some("hunter2".to_owned()),
        ca_pem: None,
    };
    assert!(!format!("{config:?}").contains("hunter2"));
    let registry = Registry::new(config).unwrap();
    assert!(!format!("{registry:?}").contains("hunter2"));
}

#[tokio::test]
async fn bad_input_is_refused_before_sending() {
    let stub = Stub::start(|_| empty(200)).await;
    let registry = stub.registry(None);
    let bad = ["sha256:abc", "sha256:XYZ", "md5:00", "", "../../etc"];
    for digest in bad {
        let error = registry.blob_exists(digest, 1).await.unwrap_err();
        assert!(matches!(error, RegistryError::Invalid { .. }), "{error:?}");
        assert!(error.to_string().contains("is not a digest"), "{error}");
        assert!(registry.manifest_get(digest).await.is_err());
        assert!(registry.blob_get(digest).await.is_err());
        assert!(registry.delete_manifest(digest).await.is_err());
        assert!(
            registry
                .push_blob_bytes(digest, Bytes::from_static(b"x"))
                .await
                .is_err()
        );
    }
    for tag in ["", "-x", "a/b", "a b", &"a".repeat(129), "x?y"] {
        let error = registry.manifest_digest(tag).await.unwrap_err();
        assert!(matches!(error, RegistryError::Invalid { .. }), "{error:?}");
        let error = registry
            .manifest_put(tag, OCI_MANIFEST, Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        assert!(matches!(error, RegistryError::Invalid { .. }), "{error:?}");
    }
    // A manifest put under another digest than its own, or as a non-manifest
    // type, or oversized.
    let other = digest_of(b"other");
    assert!(
        registry
            .manifest_put(&other, OCI_MANIFEST, Bytes::from_static(b"{}"))
            .await
            .is_err()
    );
    assert!(
        registry
            .manifest_put("t", "application/json", Bytes::from_static(b"{}"))
            .await
            .is_err()
    );
    assert!(
        registry
            .manifest_put(
                "t",
                OCI_MANIFEST,
                Bytes::from(vec![b' '; MAX_MANIFEST_BYTES + 1])
            )
            .await
            .is_err()
    );
    // Bytes that are not the digest named.
    let error = registry
        .push_blob_bytes(&other, Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("its digest is"), "{error}");
    assert!(
        stub.seen().is_empty(),
        "nothing was sent: {:?}",
        stub.seen()
    );
}

#[tokio::test]
async fn basic_auth_after_a_401() {
    let expected = basic("launchway", "s3cret");
    let stub = Stub::start(move |seen| {
        if seen.header("authorization") == Some(expected.as_str()) {
            empty(200)
        } else {
            reply(401)
                .header("www-authenticate", "Basic realm=\"Registry Realm\"")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#,
                )))
                .unwrap()
        }
    })
    .await;
    let registry = stub.registry(Some(("launchway", "s3cret")));
    registry.ping().await.unwrap();
    // Credentials learned: the next request carries them at once, clones
    // share them.
    registry.clone().ping().await.unwrap();
    let seen = stub.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[0].header("authorization").is_none());
    assert!(seen[1].header("authorization").is_some());
    assert!(seen[2].header("authorization").is_some());

    // Wrong password: an Auth error naming the URL and the settings.
    let wrong = stub.registry(Some(("launchway", "wrong")));
    let error = wrong.ping().await.unwrap_err();
    assert!(matches!(error, RegistryError::Auth { .. }), "{error:?}");
    let said = error.to_string();
    assert!(
        said.contains(&stub.url())
            && said.contains("refused the credentials (401)")
            && said.contains("[registry] username and password_file"),
        "{said}"
    );
    assert!(!said.contains("wrong"), "{said}");
    // No credentials at all: says to set them.
    let anonymous = stub.registry(None);
    let error = anonymous.ping().await.unwrap_err();
    assert!(
        error.to_string().contains("asks for credentials"),
        "{error}"
    );
}

#[tokio::test]
async fn bearer_token_flow() {
    let tokens_issued = Arc::new(Mutex::new(0));
    let issued = tokens_issued.clone();
    let stub = Stub::start(move |seen| {
        let host = seen.header("host").unwrap_or("").to_owned();
        if seen.path() == "/token" {
            // The basic credentials, the service and the repository's scope.
            assert_eq!(seen.header("authorization"), Some(basic("u", "p").as_str()));
            assert!(seen.uri.contains("service=stub%20registry"), "{}", seen.uri);
            assert!(
                seen.uri
                    .contains("scope=repository%3Alaunchway%2Fabcdef012345%3Apull%2Cpush"),
                "{}",
                seen.uri
            );
            *issued.lock().unwrap() += 1;
            return reply(200)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(
                    br#"{"access_token":"tok-1","expires_in":300}"#,
                )))
                .unwrap();
        }
        if seen.header("authorization") == Some("Bearer tok-1") {
            return empty(200);
        }
        reply(401)
            .header(
                "www-authenticate",
                format!(
                    "Bearer realm=\"http://{host}/token\",service=\"stub registry\",scope=\"repository:{REPO}:pull\""
                ),
            )
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await;
    let registry = stub.registry(Some(("u", "p")));
    registry.ping().await.unwrap();
    registry.ping().await.unwrap();
    assert!(!registry.blob_exists(&digest_of(b"x"), 1).await.unwrap());
    assert_eq!(*tokens_issued.lock().unwrap(), 1, "the token is cached");
    let seen = stub.seen();
    // 401, token, retry, then two requests with the token.
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(seen[2].header("authorization"), Some("Bearer tok-1"));
}

#[tokio::test]
async fn bearer_token_refused() {
    let stub = Stub::start(move |seen| {
        if seen.path() == "/token" {
            return empty(401);
        }
        let host = seen.header("host").unwrap_or("").to_owned();
        reply(401)
            .header(
                "www-authenticate",
                format!("Bearer realm=\"http://{host}/token\""),
            )
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await;
    let error = stub.registry(Some(("u", "p"))).ping().await.unwrap_err();
    assert!(matches!(error, RegistryError::Auth { .. }), "{error:?}");
    assert!(
        error.to_string().contains("refused the credentials"),
        "{error}"
    );
}

#[tokio::test]
async fn push_blob_follows_a_relative_location_with_its_query() {
    let data = Bytes::from_static(b"hello, layer");
    let digest = digest_of(&data);
    let answer = digest.clone();
    let stub = Stub::start(move |seen| match (seen.method.as_str(), seen.path()) {
        ("POST", "/v2/launchway/abcdef012345/blobs/uploads/") => reply(202)
            .header(
                "location",
                "/v2/launchway/abcdef012345/blobs/uploads/u-1?_state=abc%3D%3D",
            )
            .body(Full::new(Bytes::new()))
            .unwrap(),
        ("PUT", "/v2/launchway/abcdef012345/blobs/uploads/u-1") => reply(201)
            .header("docker-content-digest", answer.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap(),
        _ => empty(500),
    })
    .await;
    let registry = stub.registry(None);
    let body: BodyStream = Box::pin(futures_util::stream::iter(vec![
        Ok(data.slice(..5)),
        Ok(data.slice(5..)),
    ]));
    registry
        .push_blob(&digest, data.len() as u64, body)
        .await
        .unwrap();
    let seen = stub.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let put = &seen[1];
    assert_eq!(
        put.uri,
        format!("/v2/launchway/abcdef012345/blobs/uploads/u-1?_state=abc%3D%3D&digest={digest}")
    );
    assert_eq!(put.header("content-length"), Some("12"));
    assert_eq!(put.header("content-type"), Some("application/octet-stream"));
    assert_eq!(put.body, data);

    // The same through the convenience call.
    registry
        .push_blob_bytes(&digest, data.clone())
        .await
        .unwrap();

    // A stream shorter than announced is not sent as a blob.
    let short: BodyStream = Box::pin(futures_util::stream::iter(vec![Ok(data.slice(..3))]));
    let error = registry
        .push_blob(&digest, data.len() as u64, short)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("ended after 3 of the 12 bytes"),
        "{error}"
    );
}

#[tokio::test]
async fn wrong_docker_content_digest_on_put_is_refused() {
    let data = Bytes::from_static(b"blob");
    let digest = digest_of(&data);
    let wrong = digest_of(b"not the blob");
    let answer = wrong.clone();
    let stub = Stub::start(move |seen| match seen.method.as_str() {
        "POST" => reply(202)
            .header("location", "/v2/launchway/abcdef012345/blobs/uploads/u")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        "PUT" => reply(201)
            .header("docker-content-digest", answer.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap(),
        _ => empty(202),
    })
    .await;
    let registry = stub.registry(None);
    let error = registry.push_blob_bytes(&digest, data).await.unwrap_err();
    assert!(matches!(error, RegistryError::Invalid { .. }), "{error:?}");
    let said = error.to_string();
    assert!(
        said.contains(&wrong) && said.contains(&stub.url()),
        "{said}"
    );
    // The half-done upload is cancelled.
    assert!(stub.seen().iter().any(|seen| seen.method == "DELETE"));

    let manifest = Bytes::from_static(br#"{"schemaVersion":2}"#);
    let error = registry
        .manifest_put("v1", OCI_MANIFEST, manifest)
        .await
        .unwrap_err();
    assert!(matches!(error, RegistryError::Invalid { .. }), "{error:?}");
    assert!(
        error.to_string().contains("Docker-Content-Digest"),
        "{error}"
    );
}

#[tokio::test]
async fn manifest_put_sends_the_bytes_unchanged() {
    let stub = Stub::start(|seen| {
        reply(201)
            .header("docker-content-digest", digest_of(&seen.body))
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await;
    let registry = stub.registry(None);
    // Odd whitespace and key order: kept byte for byte.
    let bytes = Bytes::from_static(
        b"{ \"schemaVersion\" : 2,\n\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\" }",
    );
    let digest = registry
        .manifest_put("build-1", OCI_MANIFEST, bytes.clone())
        .await
        .unwrap();
    assert_eq!(digest, digest_of(&bytes));
    let by_digest = registry
        .manifest_put(&digest, OCI_MANIFEST, bytes.clone())
        .await
        .unwrap();
    assert_eq!(by_digest, digest);
    let seen = stub.seen();
    assert_eq!(
        seen[0].path(),
        "/v2/launchway/abcdef012345/manifests/build-1"
    );
    assert_eq!(seen[0].header("content-type"), Some(OCI_MANIFEST));
    assert_eq!(seen[0].body, bytes);
    assert_eq!(
        seen[1].path(),
        format!("/v2/launchway/abcdef012345/manifests/{digest}")
    );
}

/// A stub that answers every manifest GET with `body` as `content_type`.
async fn manifest_stub(content_type: &'static str, body: Bytes) -> Stub {
    Stub::start(move |_| {
        reply(200)
            .header("content-type", content_type)
            .body(Full::new(body.clone()))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn manifest_get_checks_hash_size_and_type() {
    let good = Bytes::from_static(
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
    );
    let digest = digest_of(&good);

    let stub = manifest_stub(OCI_MANIFEST, good.clone()).await;
    let manifest = stub.registry(None).manifest_get(&digest).await.unwrap();
    assert_eq!(manifest.bytes, good);
    assert_eq!(manifest.media_type, OCI_MANIFEST);
    assert_eq!(manifest.digest, digest);
    let accept = stub.seen()[0].header("accept").unwrap().to_owned();
    for media_type in MANIFEST_MEDIA_TYPES {
        assert!(accept.contains(media_type), "{accept}");
    }

    // Another body than the digest asked for.
    let stub = manifest_stub(OCI_MANIFEST, Bytes::from_static(b"{}")).await;
    let error = stub.registry(None).manifest_get(&digest).await.unwrap_err();
    match &error {
        RegistryError::DigestMismatch { expected, actual } => {
            assert_eq!(expected, &digest);
            assert_eq!(actual, &digest_of(b"{}"));
        }
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().contains("does not match"), "{error}");

    // Oversized.
    let stub = manifest_stub(
        OCI_MANIFEST,
        Bytes::from(vec![b' '; MAX_MANIFEST_BYTES + 1]),
    )
    .await;
    let error = stub.registry(None).manifest_get(&digest).await.unwrap_err();
    assert!(matches!(error, RegistryError::Invalid { .. }), "{error:?}");
    assert!(error.to_string().contains("at most 4 MiB"), "{error}");

    // Not a manifest media type.
    let stub = manifest_stub("text/html", good.clone()).await;
    let error = stub.registry(None).manifest_get(&digest).await.unwrap_err();
    assert!(matches!(error, RegistryError::Invalid { .. }), "{error:?}");
    assert!(
        error.to_string().contains("not a manifest media type"),
        "{error}"
    );

    // A parameter on the type is fine.
    let stub = manifest_stub(
        "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8",
        good.clone(),
    )
    .await;
    let manifest = stub.registry(None).manifest_get(&digest).await.unwrap();
    assert_eq!(
        manifest.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
}

#[tokio::test]
async fn manifest_digest_of_a_tag() {
    let digest = digest_of(b"m");
    let answer = digest.clone();
    let stub = Stub::start(move |seen| match seen.path() {
        "/v2/launchway/abcdef012345/manifests/known" => reply(200)
            .header("docker-content-digest", answer.as_str())
            .header("content-type", OCI_MANIFEST)
            .body(Full::new(Bytes::new()))
            .unwrap(),
        "/v2/launchway/abcdef012345/manifests/garbled" => reply(200)
            .header("docker-content-digest", "sha256:nope")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        _ => reply(404)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"unknown"}}]}"#,
            )))
            .unwrap(),
    })
    .await;
    let registry = stub.registry(None);
    assert_eq!(
        registry.manifest_digest("known").await.unwrap(),
        Some(digest)
    );
    assert_eq!(registry.manifest_digest("unknown").await.unwrap(), None);
    assert!(matches!(
        registry.manifest_digest("garbled").await,
        Err(RegistryError::Invalid { .. })
    ));
    let seen = stub.seen();
    assert_eq!(seen[0].method, "HEAD");
    assert!(seen[0].header("accept").unwrap().contains(OCI_MANIFEST));
    // A 404 by digest is NotFound, naming what and where.
    let error = registry
        .manifest_get(&digest_of(b"gone"))
        .await
        .unwrap_err();
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error:?}");
    assert!(error.to_string().contains(&stub.url()), "{error}");
}

#[tokio::test]
async fn errors_bodies_become_status_messages() {
    let stub = Stub::start(|_| {
        reply(400)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":"config blob unknown"},{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#,
            )))
            .unwrap()
    })
    .await;
    let registry = stub.registry(None);
    let error = registry
        .manifest_put("v1", OCI_MANIFEST, Bytes::from_static(b"{}"))
        .await
        .unwrap_err();
    match &error {
        RegistryError::Status { url, code, message } => {
            assert_eq!(url, &stub.url());
            assert_eq!(*code, 400);
            assert!(
                message.contains("manifest invalid (MANIFEST_INVALID): config blob unknown")
                    && message.contains("blob unknown to registry (BLOB_UNKNOWN)")
                    && message.contains("PUT /v2/launchway/abcdef012345/manifests/v1"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().starts_with(&format!(
        "the image registry at {} answered 400",
        stub.url()
    )));

    // Not JSON: the text, clipped; nothing: the reason.
    let stub = Stub::start(|seen| {
        if seen.method == "GET" {
            reply(503)
                .body(Full::new(Bytes::from_static(b"backend down")))
                .unwrap()
        } else {
            empty(405)
        }
    })
    .await;
    let registry = stub.registry(None);
    let error = registry.ping().await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("answered 503: backend down (GET /v2/)"),
        "{error}"
    );
    assert!(error.is_transient());
    let error = registry
        .delete_manifest(&digest_of(b"x"))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("storage.delete.enabled"),
        "{error}"
    );
}

#[tokio::test]
async fn blob_get_follows_a_redirect_without_the_credentials() {
    let data = Bytes::from(vec![7_u8; 100_000]);
    let storage = {
        let data = data.clone();
        Stub::start(move |_| reply(200).body(Full::new(data.clone())).unwrap()).await
    };
    let target = format!("http://localhost:{}/bucket/blob?sig=1", storage.addr.port());
    let expected = basic("u", "p");
    let registry_stub = Stub::start(move |seen| {
        if seen.header("authorization") != Some(expected.as_str()) {
            return reply(401)
                .header("www-authenticate", "Basic realm=x")
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
        match seen.path() {
            p if p.ends_with(
                "/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ) =>
            {
                // Redirects forever.
                reply(307)
                    .header("location", p.to_owned())
                    .body(Full::new(Bytes::new()))
                    .unwrap()
            }
            p if p.contains("/blobs/") => reply(307)
                .header("location", target.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap(),
            _ => empty(404),
        }
    })
    .await;
    let registry = registry_stub.registry(Some(("u", "p")));
    let digest = digest_of(&data);
    let (length, mut stream) = registry.blob_get(&digest).await.unwrap();
    assert_eq!(length, 100_000);
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, data);
    let at_storage = storage.seen();
    assert_eq!(at_storage.len(), 1);
    assert_eq!(at_storage[0].uri, "/bucket/blob?sig=1");
    assert!(
        at_storage[0].header("authorization").is_none(),
        "the registry's credentials went to another host"
    );

    let error = registry
        .blob_get(&format!("sha256:{}", "0".repeat(64)))
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("more than 3 times"), "{error}");
}

#[tokio::test]
async fn blob_exists_compares_the_length() {
    let stub = Stub::start(|seen| {
        if seen.path().ends_with(&digest_of(b"four")) {
            reply(200)
                .header("content-length", "4")
                .body(Full::new(Bytes::new()))
                .unwrap()
        } else {
            empty(404)
        }
    })
    .await;
    let registry = stub.registry(None);
    assert!(registry.blob_exists(&digest_of(b"four"), 4).await.unwrap());
    assert!(!registry.blob_exists(&digest_of(b"four"), 5).await.unwrap());
    assert!(!registry.blob_exists(&digest_of(b"five!"), 5).await.unwrap());
}

#[tokio::test]
async fn a_truncated_blob_is_an_error() {
    // A raw server: announces 100 bytes, sends 10, and closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = [0_u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buffer).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                .await;
            let _ = stream.shutdown().await;
        }
    });
    let registry = Registry::new(RegistryConfig {
        url: format!("http://{addr}"),
        repository: REPO.to_owned(),
        ..RegistryConfig::default()
    })
    .unwrap();
    let (length, mut stream) = registry.blob_get(&digest_of(b"x")).await.unwrap();
    assert_eq!(length, 100);
    let mut got = Vec::new();
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => got.extend_from_slice(&chunk),
            Err(error) => failure = Some(error),
        }
    }
    let failure = failure.expect("the short body is an error");
    assert!(
        matches!(failure, RegistryError::Unreachable { .. }),
        "{failure:?}"
    );
    assert!(failure.to_string().contains("cut off"), "{failure}");
    assert!(got.len() <= 10);
}

#[tokio::test]
async fn tags_are_paginated() {
    let stub = Stub::start(|seen| {
        let (tags, link) = if seen.uri.contains("last=b") {
            (r#"["c"]"#, None)
        } else {
            (
                r#"["a","b"]"#,
                Some("</v2/launchway/abcdef012345/tags/list?last=b&n=1000>; rel=\"next\""),
            )
        };
        let mut builder = reply(200).header("content-type", "application/json");
        if let Some(link) = link {
            builder = builder.header("link", link);
        }
        builder
            .body(Full::new(Bytes::from(format!(
                "{{\"name\":\"{REPO}\",\"tags\":{tags}}}"
            ))))
            .unwrap()
    })
    .await;
    let registry = stub.registry(None);
    assert_eq!(registry.tags().await.unwrap(), ["a", "b", "c"]);
    let seen = stub.seen();
    assert_eq!(seen[0].uri, "/v2/launchway/abcdef012345/tags/list?n=1000");
    assert_eq!(
        seen[1].uri,
        "/v2/launchway/abcdef012345/tags/list?n=1000&last=b"
    );

    // An unknown repository has no tags; `null` is none.
    let stub = Stub::start(|seen| {
        if seen.uri.contains("tags/list") && seen.method == "GET" {
            empty(404)
        } else {
            empty(500)
        }
    })
    .await;
    assert!(stub.registry(None).tags().await.unwrap().is_empty());
    let stub = Stub::start(|_| {
        reply(200)
            .body(Full::new(Bytes::from_static(
                br#"{"name":"x","tags":null}"#,
            )))
            .unwrap()
    })
    .await;
    assert!(stub.registry(None).tags().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_registry_is_named() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let registry = Registry::new(RegistryConfig {
        url: url.clone(),
        repository: REPO.to_owned(),
        ..RegistryConfig::default()
    })
    .unwrap();
    let error = registry.ping().await.unwrap_err();
    assert!(
        matches!(error, RegistryError::Unreachable { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("the image registry at {url} does not answer (connection refused)")
    );
    assert!(error.is_transient());
    let error = registry
        .push_blob_bytes(&digest_of(b"x"), Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, RegistryError::Unreachable { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_connection_that_died_in_the_pool_is_replaced() {
    // A raw server: on its first connection it answers one request and then
    // drops the next unanswered (a restart while the client pooled it);
    // later connections answer every request.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(Mutex::new(0_u32));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let first = {
                let mut count = counted.lock().unwrap();
                *count += 1;
                *count == 1
            };
            tokio::spawn(async move {
                let mut buffer = [0_u8; 4096];
                let mut answered = 0;
                loop {
                    match tokio::io::AsyncReadExt::read(&mut stream, &mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if first && answered == 1 {
                        return; // Dropped: closed without an answer.
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    answered += 1;
                }
            });
        }
    });
    let registry = Registry::new(RegistryConfig {
        url: format!("http://{addr}"),
        repository: REPO.to_owned(),
        ..RegistryConfig::default()
    })
    .unwrap();
    registry.ping().await.unwrap();
    registry.ping().await.unwrap();
    assert_eq!(*connections.lock().unwrap(), 2);
}

/// The client's futures and streams can be spawned on a multi-threaded
/// runtime.
#[test]
fn futures_are_send() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Registry>();
    send_sync::<RegistryError>();
    let registry = Registry::new(RegistryConfig {
        url: "http://127.0.0.1:1".to_owned(),
        repository: REPO.to_owned(),
        ..RegistryConfig::default()
    })
    .unwrap();
    let digest = digest_of(b"x");
    let body: BodyStream = Box::pin(futures_util::stream::empty());
    send(&registry.ping());
    send(&registry.push_blob(&digest, 0, body));
    send(&registry.push_blob_bytes(&digest, Bytes::new()));
    send(&registry.blob_get(&digest));
    send(&registry.manifest_get(&digest));
    send(&registry.manifest_put("t", OCI_MANIFEST, Bytes::new()));
    send(&registry.manifest_digest("t"));
    send(&registry.tags());
    send(&registry.delete_manifest(&digest));
    send(&registry.blob_exists(&digest, 0));
}
