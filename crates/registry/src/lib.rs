//! A client for an image registry: the OCI distribution API ("registry v2")
//! over hyper, for the one repository a Launchway daemon uses.
//!
//! It speaks the subset Launchway needs: blobs (HEAD, monolithic streamed
//! upload, streamed download), manifests by digest or tag (sent and kept
//! byte for byte), tags and deletion. Authentication follows the registry's
//! 401: `Basic` (what an htpasswd-protected registry asks) or `Bearer` tokens
//! from the realm it names, fetched with the configured credentials and
//! cached until they expire.
//!
//! Every digest and tag is checked before it is sent, every manifest is
//! hashed when it comes back, and every error names the registry's URL. The
//! password is never logged.

mod auth;
mod error;
mod names;
#[cfg(test)]
mod tests;

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use sha2::{Digest as _, Sha256};
use tracing::{debug, warn};

use auth::{AuthState, BearerChallenge, Challenge, Token};
pub use error::RegistryError;

/// The manifest media types this client asks for and accepts: OCI image
/// manifest, OCI image index, Docker v2 manifest, Docker manifest list.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The largest manifest accepted or sent (4 MiB, as containerd's limit on
/// JSON blobs).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// How long a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the response head may take once the request is sent.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a body (sent or received) may make no progress.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);
/// Redirects followed for one blob download.
const MAX_REDIRECTS: usize = 3;
/// A bearer token's lifetime when the token service does not say.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A token is fetched anew this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(5);
/// Error bodies read at most this much.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Token answers read at most this much.
const TOKEN_BODY_LIMIT: usize = 1024 * 1024;
/// A page of `tags/list` read at most this much.
const TAGS_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Tags asked for per page.
const TAGS_PAGE: usize = 1000;

/// A blob to upload: chunks of bytes, or the error that stopped reading them.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;
/// A blob being downloaded. The caller hashes it: the client does not.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, RegistryError>> + Send>>;

type RequestBody = UnsyncBoxBody<Bytes, std::io::Error>;
type HttpClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// Where the registry is and how to reach it (`[registry]` in the settings).
#[derive(Clone, Default)]
pub struct RegistryConfig {
    /// "https://registry.example:5000"; `http://` only for loopback hosts.
    pub url: String,
    /// The repository every blob, manifest and tag goes to:
    /// "launchway/abcdef012345".
    pub repository: String,
    /// `[registry] username`.
    pub username: Option<String>,
    /// The contents of `[registry] password_file`.
    pub password: Option<String>,
    /// `[registry] ca_file` (PEM): when given, the only trust anchors for the
    /// registry's certificate; otherwise the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("repository", &self.repository)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

/// A manifest as the registry stored it: its bytes are exactly those whose
/// sha256 is `digest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Its `Content-Type`, one of [`MANIFEST_MEDIA_TYPES`].
    pub media_type: String,
    /// The bytes, unchanged.
    pub bytes: Bytes,
    /// "sha256:<hex>" of `bytes`.
    pub digest: String,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Whether `text` is a digest this client sends: `sha256:` and 64 lowercase
/// hex digits.
pub fn is_digest(text: &str) -> bool {
    names::is_digest(text)
}

/// Whether `text` is a tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_tag(text: &str) -> bool {
    names::is_tag(text)
}

/// A client for one repository of one registry. Cheap to clone: clones share
/// the connection pool and the credentials learned.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    origin: String,
    repository: String,
    credentials: Option<Credentials>,
    client: HttpClient,
    auth: Mutex<AuthState>,
}

struct Credentials {
    username: String,
    password: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.inner.url)
            .field("repository", &self.inner.repository)
            .field(
                "username",
                &self.inner.credentials.as_ref().map(|c| &c.username),
            )
            .finish_non_exhaustive()
    }
}

/// What a request carries.
enum Body {
    Empty,
    Bytes(Bytes),
    /// Sent once: a request with it is not retried.
    Stream(Option<RequestBody>, Arc<Progress>),
}

/// A request as the client sends it.
struct Outgoing {
    method: Method,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Body,
    /// Whether the registry's credentials go with it (not to another host).
    authenticate: bool,
}

impl Outgoing {
    fn new(method: Method, uri: Uri) -> Outgoing {
        Outgoing {
            method,
            uri,
            headers: Vec::new(),
            body: Body::Empty,
            authenticate: true,
        }
    }

    fn header(mut self, name: HeaderName, value: HeaderValue) -> Outgoing {
        self.headers.push((name, value));
        self
    }

    fn body(mut self, body: Body) -> Outgoing {
        self.body = body;
        self
    }
}

/// A request that got no answer.
struct Failure {
    error: RegistryError,
    /// It broke a connection that was already open: a new one may do.
    retry: bool,
}

/// How far an upload's body got, for its timeouts, and why it failed if it
/// did on our side.
#[derive(Debug)]
struct Progress {
    state: Mutex<ProgressState>,
}

#[derive(Debug)]
struct ProgressState {
    last: Instant,
    finished: bool,
    failure: Option<String>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            state: Mutex::new(ProgressState {
                last: Instant::now(),
                finished: false,
                failure: None,
            }),
        }
    }

    fn update(&self, change: impl FnOnce(&mut ProgressState)) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut state);
        state.last = Instant::now();
    }

    /// When the request times out as things stand, and the words for it.
    fn deadline(&self) -> (Instant, &'static str) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.finished {
            (state.last + HEAD_TIMEOUT, "no answer within 30 s")
        } else {
            (
                state.last + PROGRESS_TIMEOUT,
                "the upload made no progress for 60 s",
            )
        }
    }

    fn failure(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failure
            .clone()
    }
}

/// `body` as a request body that must be exactly `size` bytes, reporting to
/// `progress`.
fn upload_body(body: BodyStream, size: u64, progress: Arc<Progress>) -> RequestBody {
    let chunks = futures_util::stream::unfold(
        (body, 0_u64, false, progress),
        move |(mut body, sent, done, progress)| async move {
            if done {
                return None;
            }
            let failed = |message: String, body, sent, progress: Arc<Progress>| {
                progress.update(|state| state.failure = Some(message.clone()));
                Some((
                    Err(std::io::Error::other(message)),
                    (body, sent, true, progress),
                ))
            };
            match body.next().await {
                Some(Ok(chunk)) => {
                    let sent = sent.saturating_add(chunk.len() as u64);
                    if sent > size {
                        return failed(
                            format!("the blob's data is longer than the {size} bytes announced"),
                            body,
                            sent,
                            progress,
                        );
                    }
                    progress.update(|_| {});
                    Some((Ok(Frame::data(chunk)), (body, sent, false, progress)))
                }
                Some(Err(error)) => failed(
                    format!("reading the blob's data failed: {error}"),
                    body,
                    sent,
                    progress,
                ),
                None if sent < size => failed(
                    format!("the blob's data ended after {sent} of the {size} bytes announced"),
                    body,
                    sent,
                    progress,
                ),
                None => {
                    progress.update(|state| state.finished = true);
                    None
                }
            }
        },
    );
    StreamBody::new(chunks).boxed_unsync()
}

/// The next data chunk of `body` (trailers skipped), or why there is none.
async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, String> {
    loop {
        match tokio::time::timeout(PROGRESS_TIMEOUT, body.frame()).await {
            Err(_) => return Err("no data for 60 s".to_owned()),
            Ok(None) => return Ok(None),
            Ok(Some(Err(error))) => return Err(error::describe(&error)),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

fn header_value(text: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(text).map_err(|_| format!("{text:?} cannot be sent in a header"))
}

fn header_text<'a>(response: &'a Response<Incoming>, name: &HeaderName) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

fn content_length(response: &Response<Incoming>) -> Option<u64> {
    header_text(response, &header::CONTENT_LENGTH).and_then(|text| text.parse().ok())
}

fn docker_content_digest(response: &Response<Incoming>) -> Option<&str> {
    header_text(response, &HeaderName::from_static("docker-content-digest"))
}

fn accept_manifests() -> HeaderValue {
    HeaderValue::from_static(
        "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json",
    )
}

impl Registry {
    /// A client for `config`. Checks the URL (https, or http to a loopback
    /// host), the repository name, the credentials' shape and the CA file;
    /// it does not connect (see [`Registry::ping`]).
    pub fn new(config: RegistryConfig) -> Result<Self, RegistryError> {
        let url = config.url.trim().trim_end_matches('/').to_owned();
        let invalid = |message: String| RegistryError::Invalid {
            url: url.clone(),
            message,
        };
        let base: Uri = url.parse().map_err(|error| {
            invalid(format!(
                "[registry] url is not a URL ({error}): write it as https://host:port"
            ))
        })?;
        names::check_scheme(&base).map_err(|why| invalid(format!("[registry] url: {why}")))?;
        if base.path() != "/" || base.query().is_some() {
            return Err(invalid(
                "[registry] url must be only scheme, host and port: the API is at /v2/ on the host"
                    .to_owned(),
            ));
        }
        if base.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(invalid(
                "[registry] url must not hold credentials: set [registry] username and password_file"
                    .to_owned(),
            ));
        }
        let origin =
            names::origin(&base).ok_or_else(|| invalid("[registry] url has no host".to_owned()))?;
        if !names::is_repository(&config.repository) {
            return Err(invalid(format!(
                "[registry] repository {:?} is not a repository name (lowercase letters and digits, separated by '/', '.', '_' or '-')",
                config.repository
            )));
        }
        let credentials = match (config.username, config.password) {
            (Some(username), Some(password)) => {
                if username.is_empty() || username.contains(':') {
                    return Err(invalid(
                        "[registry] username must be non-empty and without ':'".to_owned(),
                    ));
                }
                Some(Credentials { username, password })
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "[registry] username is set without a password: set [registry] password_file"
                        .to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "a password is set without [registry] username".to_owned(),
                ));
            }
        };

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match &config.ca_pem {
            Some(pem) => {
                use rustls::pki_types::CertificateDer;
                use rustls::pki_types::pem::PemObject as _;
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|error| {
                        invalid(format!(
                            "[registry] ca_file is not PEM certificates ({error})"
                        ))
                    })?;
                    roots.add(cert).map_err(|error| {
                        invalid(format!(
                            "[registry] ca_file holds an unusable certificate ({error})"
                        ))
                    })?;
                }
                if roots.is_empty() {
                    return Err(invalid(
                        "[registry] ca_file holds no certificate".to_owned(),
                    ));
                }
                let tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|error| invalid(format!("TLS setup failed: {error}")))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                builder.with_tls_config(tls)
            }
            None => match builder.with_provider_and_native_roots(provider.clone()) {
                Ok(builder) => builder,
                Err(error) => {
                    if base.scheme_str() == Some("https") {
                        warn!(%error, url, "no system certificates: set [registry] ca_file to reach the image registry");
                    }
                    let tls = rustls::ClientConfig::builder_with_provider(provider)
                        .with_safe_default_protocol_versions()
                        .map_err(|error| invalid(format!("TLS setup failed: {error}")))?
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth();
                    hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
                }
            },
        };
        if base.scheme_str() == Some("http") {
            warn!(
                url,
                "the image registry is reached over plain http (allowed for loopback only)"
            );
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Registry {
            inner: Arc::new(Inner {
                url,
                origin,
                repository: config.repository,
                credentials,
                client,
                auth: Mutex::new(AuthState::default()),
            }),
        })
    }

    /// The registry's URL, as configured (without a trailing '/').
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The repository this client works in.
    pub fn repository(&self) -> &str {
        &self.inner.repository
    }

    /// `GET /v2/`: the registry answers and accepts the credentials (it
    /// authenticates on the way, so later requests carry them at once).
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let uri = self.endpoint("/v2/")?;
        let response = self.send(Outgoing::new(Method::GET, uri.clone())).await?;
        if response.status() == StatusCode::OK {
            self.discard(response).await;
            Ok(())
        } else {
            Err(self.status_error(&Method::GET, &uri, response).await)
        }
    }

    /// Whether the repository has the blob `digest` of `size` bytes: true
    /// only when the registry answers 200 with that `Content-Length`.
    pub async fn blob_exists(&self, digest: &str, size: u64) -> Result<bool, RegistryError> {
        self.check_digest(digest)?;
        let uri = self.repo_endpoint(&format!("blobs/{digest}"))?;
        let response = self.send(Outgoing::new(Method::HEAD, uri.clone())).await?;
        match response.status() {
            StatusCode::OK => {
                let length = content_length(&response);
                if length != Some(size) {
                    debug!(digest, size, ?length, "blob present with another length");
                }
                Ok(length == Some(size))
            }
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(&Method::HEAD, &uri, response).await),
        }
    }

    /// Uploads the blob `digest` of `size` bytes from `body`: a `POST` to
    /// open the upload (which authenticates), then one streamed `PUT` with
    /// the digest. The registry hashes what it received and refuses a
    /// mismatch; a `Docker-Content-Digest` it answers must be `digest`.
    pub async fn push_blob(
        &self,
        digest: &str,
        size: u64,
        body: BodyStream,
    ) -> Result<(), RegistryError> {
        self.check_digest(digest)?;
        let uploads = self.repo_endpoint("blobs/uploads/")?;
        let response = self
            .send(
                Outgoing::new(Method::POST, uploads.clone())
                    .header(header::CONTENT_LENGTH, HeaderValue::from_static("0")),
            )
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(&Method::POST, &uploads, response).await);
        }
        let location = header_text(&response, &header::LOCATION)
            .and_then(|location| names::resolve(&uploads, location))
            .ok_or_else(|| {
                self.invalid(format!(
                    "answered the upload of {digest} without a usable Location"
                ))
            })?;
        self.discard(response).await;
        names::check_scheme(&location).map_err(|why| {
            self.invalid(format!("sent an upload location that is refused: {why}"))
        })?;
        let separator = if location.query().is_some() { '&' } else { '?' };
        let put: Uri = format!("{location}{separator}digest={digest}")
            .parse()
            .map_err(|_| self.invalid(format!("sent an unusable upload location {location}")))?;

        let progress = Arc::new(Progress::new());
        let request = Outgoing {
            method: Method::PUT,
            uri: put.clone(),
            headers: vec![
                (header::CONTENT_LENGTH, HeaderValue::from(size)),
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
            ],
            body: Body::Stream(Some(upload_body(body, size, progress.clone())), progress),
            authenticate: names::origin(&put).as_deref() == Some(self.inner.origin.as_str()),
        };
        let outcome = match self.send(request).await {
            Ok(response) if response.status() == StatusCode::CREATED => match docker_content_digest(
                &response,
            ) {
                Some(answered) if answered != digest => Err(self.invalid(format!(
                    "stored the upload of {digest} as {answered} (Docker-Content-Digest): refused"
                ))),
                _ => {
                    self.discard(response).await;
                    Ok(())
                }
            },
            Ok(response) => Err(self.status_error(&Method::PUT, &put, response).await),
            Err(error) => Err(error),
        };
        if outcome.is_err() {
            // Best effort: the registry drops the half-done upload.
            let cancel = self.send(Outgoing {
                authenticate: names::origin(&location).as_deref()
                    == Some(self.inner.origin.as_str()),
                ..Outgoing::new(Method::DELETE, location)
            });
            let _ = tokio::time::timeout(Duration::from_secs(5), cancel).await;
        }
        outcome
    }

    /// Uploads `bytes` as the blob `digest` (which must be their sha256),
    /// trying once more from a fresh upload when the first attempt fails for
    /// a reason that may pass (no answer, a server error).
    pub async fn push_blob_bytes(&self, digest: &str, bytes: Bytes) -> Result<(), RegistryError> {
        self.check_digest(digest)?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(self.invalid(format!(
                "refused to upload data as {digest}: its digest is {actual}"
            )));
        }
        let stream = |bytes: Bytes| -> BodyStream {
            Box::pin(futures_util::stream::once(async move { Ok(bytes) }))
        };
        let size = bytes.len() as u64;
        match self.push_blob(digest, size, stream(bytes.clone())).await {
            Err(error) if error.is_transient() => {
                warn!(digest, %error, "uploading the blob again");
                self.push_blob(digest, size, stream(bytes)).await
            }
            other => other,
        }
    }

    /// The digest the tag (or digest) `tag` names, from a `HEAD` that accepts
    /// every manifest type; `None` when the registry does not know it. The
    /// digest is the registry's word: fetch by it with
    /// [`Registry::manifest_get`], which verifies.
    pub async fn manifest_digest(&self, tag: &str) -> Result<Option<String>, RegistryError> {
        self.check_reference(tag)?;
        let uri = self.repo_endpoint(&format!("manifests/{tag}"))?;
        let response = self
            .send(
                Outgoing::new(Method::HEAD, uri.clone()).header(header::ACCEPT, accept_manifests()),
            )
            .await?;
        match response.status() {
            StatusCode::OK => match docker_content_digest(&response) {
                Some(digest) if names::is_digest(digest) => Ok(Some(digest.to_owned())),
                Some(other) => Err(self.invalid(format!(
                    "answered manifest {tag} with Docker-Content-Digest {other:?}, which is not a sha256 digest"
                ))),
                None => {
                    // No header: the digest of the manifest itself.
                    let response = self
                        .send(
                            Outgoing::new(Method::GET, uri.clone())
                                .header(header::ACCEPT, accept_manifests()),
                        )
                        .await?;
                    if response.status() == StatusCode::NOT_FOUND {
                        return Ok(None);
                    }
                    if response.status() != StatusCode::OK {
                        return Err(self.status_error(&Method::GET, &uri, response).await);
                    }
                    let bytes = self.read_manifest_body(response, tag).await?;
                    Ok(Some(sha256_digest(&bytes)))
                }
            },
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.status_error(&Method::HEAD, &uri, response).await),
        }
    }

    /// The manifest `reference_digest` (a digest, never a tag): at most
    /// [`MAX_MANIFEST_BYTES`], of a manifest media type, and hashing to the
    /// digest asked for.
    pub async fn manifest_get(&self, reference_digest: &str) -> Result<Manifest, RegistryError> {
        let digest = reference_digest;
        self.check_digest(digest)?;
        let uri = self.repo_endpoint(&format!("manifests/{digest}"))?;
        let response = self
            .send(
                Outgoing::new(Method::GET, uri.clone()).header(header::ACCEPT, accept_manifests()),
            )
            .await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(self.not_found(&format!("manifest {digest}"))),
            _ => return Err(self.status_error(&Method::GET, &uri, response).await),
        }
        let content_type = header_text(&response, &header::CONTENT_TYPE).unwrap_or("");
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !MANIFEST_MEDIA_TYPES.contains(&media_type.as_str()) {
            return Err(self.invalid(format!(
                "sent manifest {digest} as {content_type:?}, which is not a manifest media type"
            )));
        }
        let bytes = self.read_manifest_body(response, digest).await?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                expected: digest.to_owned(),
                actual,
            });
        }
        Ok(Manifest {
            media_type,
            bytes,
            digest: actual,
        })
    }

    /// Stores `bytes` (unchanged) as a manifest of `media_type` under
    /// `reference`, a tag or its own digest; returns its digest. The registry
    /// must answer 201, and a `Docker-Content-Digest` it sends must be that
    /// digest.
    pub async fn manifest_put(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<String, RegistryError> {
        self.check_reference(reference)?;
        if !MANIFEST_MEDIA_TYPES.contains(&media_type) {
            return Err(self.invalid(format!(
                "refused to send a manifest as {media_type:?}, which is not a manifest media type"
            )));
        }
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(self.invalid(format!(
                "refused to send a manifest of {} bytes (at most 4 MiB)",
                bytes.len()
            )));
        }
        let digest = sha256_digest(&bytes);
        if names::is_digest(reference) && reference != digest {
            return Err(self.invalid(format!(
                "refused to store a manifest as {reference}: its digest is {digest}"
            )));
        }
        let uri = self.repo_endpoint(&format!("manifests/{reference}"))?;
        let content_type = header_value(media_type).map_err(|why| self.invalid(why))?;
        let response = self
            .send(
                Outgoing::new(Method::PUT, uri.clone())
                    .header(header::CONTENT_TYPE, content_type)
                    .body(Body::Bytes(bytes)),
            )
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self.status_error(&Method::PUT, &uri, response).await);
        }
        if let Some(answered) = docker_content_digest(&response)
            && answered != digest
        {
            return Err(self.invalid(format!(
                "stored manifest {digest} as {answered} (Docker-Content-Digest): refused"
            )));
        }
        self.discard(response).await;
        Ok(digest)
    }

    /// The blob `digest` as a stream, and its length when the registry says
    /// (else 0). Redirects (to storage) are followed, at most 3, without
    /// the registry's credentials when they lead to another host. The caller
    /// hashes the stream.
    pub async fn blob_get(&self, digest: &str) -> Result<(u64, BlobStream), RegistryError> {
        self.check_digest(digest)?;
        let mut uri = self.repo_endpoint(&format!("blobs/{digest}"))?;
        let mut authenticate = true;
        for hop in 0..=MAX_REDIRECTS {
            let response = self
                .send(Outgoing {
                    authenticate,
                    ..Outgoing::new(Method::GET, uri.clone())
                })
                .await?;
            let status = response.status();
            if status == StatusCode::OK {
                let length = content_length(&response).unwrap_or(0);
                return Ok((length, self.blob_stream(response.into_body(), digest)));
            }
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                if hop == MAX_REDIRECTS {
                    break;
                }
                let next = header_text(&response, &header::LOCATION)
                    .and_then(|location| names::resolve(&uri, location))
                    .ok_or_else(|| {
                        self.invalid(format!(
                            "redirected blob {digest} ({status}) without a usable Location"
                        ))
                    })?;
                names::check_scheme(&next).map_err(|why| {
                    self.invalid(format!("redirected blob {digest} to a refused URL: {why}"))
                })?;
                // The credentials are the registry's: not for another host.
                authenticate = names::origin(&next).as_deref() == Some(self.inner.origin.as_str());
                debug!(digest, hop, authenticate, "following a blob redirect");
                self.discard(response).await;
                uri = next;
                continue;
            }
            if status == StatusCode::NOT_FOUND && hop == 0 {
                return Err(self.not_found(&format!("blob {digest}")));
            }
            return Err(self.status_error(&Method::GET, &uri, response).await);
        }
        Err(self.invalid(format!(
            "redirected blob {digest} more than {MAX_REDIRECTS} times"
        )))
    }

    /// Every tag of the repository, sorted; empty when the repository does
    /// not exist yet. Follows the registry's pages (`n`, `last`, `Link`).
    pub async fn tags(&self) -> Result<Vec<String>, RegistryError> {
        let mut tags: Vec<String> = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let query = match &last {
                None => format!("tags/list?n={TAGS_PAGE}"),
                Some(last) => format!("tags/list?n={TAGS_PAGE}&last={}", auth::query_escape(last)),
            };
            let uri = self.repo_endpoint(&query)?;
            let response = self.send(Outgoing::new(Method::GET, uri.clone())).await?;
            match response.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND if last.is_none() => {
                    self.discard(response).await;
                    return Ok(Vec::new());
                }
                _ => return Err(self.status_error(&Method::GET, &uri, response).await),
            }
            let next_link = response
                .headers()
                .get_all(header::LINK)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .any(|value| value.contains("rel=\"next\"") || value.contains("rel=next"));
            let body = self
                .read_body(response.into_body(), TAGS_BODY_LIMIT, "the tag list")
                .await?;
            let value: serde_json::Value = serde_json::from_slice(&body).map_err(|error| {
                self.invalid(format!("sent a tag list that is not JSON ({error})"))
            })?;
            let page: Vec<String> = match value.get("tags") {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .filter_map(|item| item.as_str())
                    .filter(|tag| names::is_tag(tag))
                    .map(str::to_owned)
                    .collect(),
                Some(_) => {
                    return Err(self.invalid("sent a tag list without a list of tags".to_owned()));
                }
            };
            let honoured_n = page.len() <= TAGS_PAGE;
            let more = honoured_n && (next_link || page.len() == TAGS_PAGE);
            let page_last = page.iter().max().cloned();
            tags.extend(page);
            match page_last {
                // A further page only when this one moved forward.
                Some(page_last) if more && last.as_ref().is_none_or(|last| page_last > *last) => {
                    last = Some(page_last);
                }
                _ => break,
            }
        }
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// Deletes the manifest `digest` (and so every tag naming it). Already
    /// gone is fine. The registry must allow deletes
    /// (`storage.delete.enabled`).
    pub async fn delete_manifest(&self, digest: &str) -> Result<(), RegistryError> {
        self.check_digest(digest)?;
        let uri = self.repo_endpoint(&format!("manifests/{digest}"))?;
        let response = self
            .send(Outgoing::new(Method::DELETE, uri.clone()))
            .await?;
        match response.status() {
            StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NOT_FOUND => {
                self.discard(response).await;
                Ok(())
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                match self.status_error(&Method::DELETE, &uri, response).await {
                    RegistryError::Status { url, code, message } => Err(RegistryError::Status {
                        url,
                        code,
                        message: format!(
                            "{message}; the registry must allow deletes (storage.delete.enabled: true)"
                        ),
                    }),
                    other => Err(other),
                }
            }
            _ => Err(self.status_error(&Method::DELETE, &uri, response).await),
        }
    }

    // ---- requests ----

    /// Sends `request`, authenticating on a 401 and trying once more when
    /// its body can be sent again. A 401 that remains is an `Auth` error.
    async fn send(&self, mut request: Outgoing) -> Result<Response<Incoming>, RegistryError> {
        let mut attempt = 0;
        let mut reconnected = false;
        loop {
            let authorization = if request.authenticate {
                self.authorization().await?
            } else {
                None
            };
            let sent_credentials = authorization.is_some();
            let (body, progress, replayable) = match &mut request.body {
                Body::Empty => (
                    Empty::<Bytes>::new()
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                    None,
                    true,
                ),
                Body::Bytes(bytes) => (
                    Full::new(bytes.clone())
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                    None,
                    true,
                ),
                Body::Stream(body, progress) => match body.take() {
                    Some(body) => (body, Some(progress.clone()), false),
                    None => {
                        return Err(self.invalid(
                            "an upload cannot be sent twice (internal error)".to_owned(),
                        ));
                    }
                },
            };
            let mut builder = Request::builder()
                .method(request.method.clone())
                .uri(request.uri.clone());
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            if let Some(authorization) = authorization {
                builder = builder.header(header::AUTHORIZATION, authorization);
            }
            let http_request = builder
                .body(body)
                .map_err(|error| self.invalid(format!("a request could not be made: {error}")))?;
            debug!(method = %request.method, path = request.uri.path(), "registry request");
            let response = match self.exchange(http_request, progress.as_deref()).await {
                Ok(response) => response,
                // A connection the pool kept may have died with the server
                // (a restart): once more, on a new connection.
                Err(failure) if failure.retry && replayable && !reconnected => {
                    debug!(method = %request.method, path = request.uri.path(), error = %failure.error, "registry request failed on an open connection; trying again");
                    reconnected = true;
                    continue;
                }
                Err(failure) => return Err(failure.error),
            };
            debug!(method = %request.method, path = request.uri.path(), status = response.status().as_u16(), "registry answer");
            if response.status() != StatusCode::UNAUTHORIZED || !request.authenticate {
                return Ok(response);
            }
            let challenges: Vec<Challenge> = response
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(auth::parse_challenges)
                .collect();
            self.discard(response).await;
            if attempt > 0 || !replayable {
                return Err(self.unauthorized());
            }
            self.learn(&challenges, sent_credentials)?;
            attempt += 1;
        }
    }

    /// Sends one request with the client's timeouts: the head within 30 s of
    /// the request (or of the end of its streamed body), and a streamed body
    /// never stalled for 60 s.
    async fn execute(
        &self,
        request: Request<RequestBody>,
        progress: Option<&Progress>,
    ) -> Result<Response<Incoming>, RegistryError> {
        self.exchange(request, progress)
            .await
            .map_err(|failure| failure.error)
    }

    /// [`Registry::execute`], telling whether the failure broke a
    /// connection that was already open (worth one more try).
    async fn exchange(
        &self,
        request: Request<RequestBody>,
        progress: Option<&Progress>,
    ) -> Result<Response<Incoming>, Failure> {
        let started = Instant::now();
        let deadline = || match progress {
            Some(progress) => progress.deadline(),
            None => (started + HEAD_TIMEOUT, "no answer within 30 s"),
        };
        let mut response = std::pin::pin!(self.inner.client.request(request));
        loop {
            let (at, words) = deadline();
            match tokio::time::timeout_at(at.into(), &mut response).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(error)) => {
                    if let Some(failure) = progress.and_then(Progress::failure) {
                        return Err(Failure {
                            error: self.invalid(format!("the upload was not sent: {failure}")),
                            retry: false,
                        });
                    }
                    return Err(Failure {
                        error: RegistryError::Unreachable {
                            url: self.inner.url.clone(),
                            message: error::describe(&error),
                        },
                        retry: !error.is_connect(),
                    });
                }
                Err(_) => {
                    // A body that moved on since pushes the deadline.
                    if deadline().0 > Instant::now() {
                        continue;
                    }
                    return Err(Failure {
                        error: RegistryError::Unreachable {
                            url: self.inner.url.clone(),
                            message: words.to_owned(),
                        },
                        retry: false,
                    });
                }
            }
        }
    }

    /// The `Authorization` the next request carries, fetching a bearer token
    /// when the one held is missing or about to expire.
    async fn authorization(&self) -> Result<Option<HeaderValue>, RegistryError> {
        let state = self
            .inner
            .auth
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match state {
            AuthState::Anonymous => Ok(None),
            AuthState::Basic => Ok(self.basic()),
            AuthState::Bearer { challenge, token } => {
                if let Some(token) = token
                    && token.expires > Instant::now() + TOKEN_MARGIN
                {
                    return self.bearer(&token.value).map(Some);
                }
                let token = self.fetch_token(&challenge).await?;
                let header = self.bearer(&token.value)?;
                *self
                    .inner
                    .auth
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = AuthState::Bearer {
                    challenge,
                    token: Some(token),
                };
                Ok(Some(header))
            }
        }
    }

    fn basic(&self) -> Option<HeaderValue> {
        let credentials = self.inner.credentials.as_ref()?;
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credentials.username, credentials.password));
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    fn bearer(&self, token: &str) -> Result<HeaderValue, RegistryError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            self.invalid("the token service sent a token that cannot be sent back".to_owned())
        })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// What a 401's challenges teach: the scheme to use from now on.
    fn learn(&self, challenges: &[Challenge], sent_credentials: bool) -> Result<(), RegistryError> {
        let mut state = self
            .inner
            .auth
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let bearer = challenges.iter().find_map(|challenge| match challenge {
            Challenge::Bearer(bearer) => Some(bearer.clone()),
            _ => None,
        });
        if let Some(challenge) = bearer {
            // A token that was refused is not sent again.
            *state = AuthState::Bearer {
                challenge,
                token: None,
            };
            return Ok(());
        }
        if challenges.contains(&Challenge::Basic) {
            if self.inner.credentials.is_none() {
                return Err(self.unauthorized());
            }
            if sent_credentials && matches!(*state, AuthState::Basic) {
                return Err(self.unauthorized());
            }
            *state = AuthState::Basic;
            return Ok(());
        }
        let schemes: Vec<String> = challenges
            .iter()
            .filter_map(|challenge| match challenge {
                Challenge::Other(scheme) => Some(scheme.clone()),
                _ => None,
            })
            .collect();
        Err(RegistryError::Auth {
            url: self.inner.url.clone(),
            message: if schemes.is_empty() {
                "answered 401 without saying how to authenticate (no WWW-Authenticate)".to_owned()
            } else {
                format!(
                    "asks for {} authentication (401), which this client does not speak (it speaks Basic and Bearer)",
                    schemes.join(", ")
                )
            },
        })
    }

    /// A bearer token for pull and push in the repository, from the realm,
    /// with the configured credentials (anonymous without them).
    async fn fetch_token(&self, challenge: &BearerChallenge) -> Result<Token, RegistryError> {
        let scope = format!("repository:{}:pull,push", self.inner.repository);
        let mut url = challenge.realm.clone();
        url.push(if url.contains('?') { '&' } else { '?' });
        if let Some(service) = &challenge.service {
            url.push_str("service=");
            url.push_str(&auth::query_escape(service));
            url.push('&');
        }
        url.push_str("scope=");
        url.push_str(&auth::query_escape(&scope));
        let realm = &challenge.realm;
        let uri: Uri = url.parse().map_err(|_| {
            self.invalid(format!(
                "names the token realm {realm:?}, which is not a URL"
            ))
        })?;
        names::check_scheme(&uri)
            .map_err(|why| self.invalid(format!("names a token realm that is refused: {why}")))?;
        let mut builder = Request::get(uri.clone())
            .header(header::ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(basic) = self.basic() {
            builder = builder.header(header::AUTHORIZATION, basic);
        }
        let request = builder
            .body(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|error| self.invalid(format!("a token request could not be made: {error}")))?;
        let response = self.execute(request, None).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                self.discard(response).await;
                return Err(self.unauthorized());
            }
            _ => return Err(self.status_error(&Method::GET, &uri, response).await),
        }
        let body = self
            .read_body(response.into_body(), TOKEN_BODY_LIMIT, "the token")
            .await?;
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| self.invalid(format!("the token service at {realm} sent no JSON")))?;
        let token = ["token", "access_token"]
            .iter()
            .find_map(|name| {
                value
                    .get(name)
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty())
            })
            .ok_or_else(|| self.invalid(format!("the token service at {realm} sent no token")))?;
        let lifetime = value
            .get("expires_in")
            .and_then(serde_json::Value::as_u64)
            .filter(|seconds| *seconds > 0)
            .map_or(DEFAULT_TOKEN_LIFETIME, |seconds| {
                Duration::from_secs(seconds.min(24 * 3600))
            });
        debug!(
            realm,
            lifetime_secs = lifetime.as_secs(),
            "registry token fetched"
        );
        Ok(Token {
            value: token.to_owned(),
            expires: Instant::now() + lifetime,
        })
    }

    // ---- bodies ----

    /// The whole body, at most `limit` bytes.
    async fn read_body(
        &self,
        mut body: Incoming,
        limit: usize,
        what: &str,
    ) -> Result<Bytes, RegistryError> {
        let mut out: Vec<u8> = Vec::new();
        loop {
            match next_chunk(&mut body).await {
                Ok(Some(chunk)) => {
                    if out.len().saturating_add(chunk.len()) > limit {
                        return Err(self
                            .invalid(format!("sent more than {limit} bytes for {what}: refused")));
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(Bytes::from(out)),
                Err(why) => {
                    return Err(RegistryError::Unreachable {
                        url: self.inner.url.clone(),
                        message: format!("{what} was cut off: {why}"),
                    });
                }
            }
        }
    }

    /// A manifest body: at most [`MAX_MANIFEST_BYTES`], refused before
    /// reading when its `Content-Length` says more.
    async fn read_manifest_body(
        &self,
        response: Response<Incoming>,
        reference: &str,
    ) -> Result<Bytes, RegistryError> {
        if let Some(length) = content_length(&response)
            && length > MAX_MANIFEST_BYTES as u64
        {
            return Err(self.invalid(format!(
                "sent manifest {reference} of {length} bytes (at most 4 MiB): refused"
            )));
        }
        self.read_body(
            response.into_body(),
            MAX_MANIFEST_BYTES,
            &format!("manifest {reference} (at most 4 MiB)"),
        )
        .await
    }

    /// Reads and drops a small body, so the connection can be used again.
    async fn discard(&self, response: Response<Incoming>) {
        let mut body = response.into_body();
        let mut read = 0_usize;
        while let Ok(Some(chunk)) = next_chunk(&mut body).await {
            read += chunk.len();
            if read > ERROR_BODY_LIMIT {
                break;
            }
        }
    }

    fn blob_stream(&self, body: Incoming, digest: &str) -> BlobStream {
        let url = self.inner.url.clone();
        let digest = digest.to_owned();
        Box::pin(futures_util::stream::unfold(Some(body), move |body| {
            let (url, digest) = (url.clone(), digest.clone());
            async move {
                let mut body = body?;
                match next_chunk(&mut body).await {
                    Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
                    Ok(None) => None,
                    Err(why) => Some((
                        Err(RegistryError::Unreachable {
                            url,
                            message: format!("the download of blob {digest} was cut off: {why}"),
                        }),
                        None,
                    )),
                }
            }
        }))
    }

    // ---- errors and names ----

    fn endpoint(&self, path: &str) -> Result<Uri, RegistryError> {
        format!("{}{path}", self.inner.url)
            .parse()
            .map_err(|_| self.invalid(format!("{path} does not make a URL")))
    }

    fn repo_endpoint(&self, rest: &str) -> Result<Uri, RegistryError> {
        self.endpoint(&format!("/v2/{}/{rest}", self.inner.repository))
    }

    fn invalid(&self, message: String) -> RegistryError {
        RegistryError::Invalid {
            url: self.inner.url.clone(),
            message,
        }
    }

    fn not_found(&self, what: &str) -> RegistryError {
        RegistryError::NotFound {
            what: format!(
                "{what} in repository {} (registry {})",
                self.inner.repository, self.inner.url
            ),
        }
    }

    fn unauthorized(&self) -> RegistryError {
        RegistryError::Auth {
            url: self.inner.url.clone(),
            message: if self.inner.credentials.is_some() {
                "refused the credentials (401): check [registry] username and password_file"
                    .to_owned()
            } else {
                "asks for credentials (401): set [registry] username and password_file".to_owned()
            },
        }
    }

    fn check_digest(&self, digest: &str) -> Result<(), RegistryError> {
        if names::is_digest(digest) {
            Ok(())
        } else {
            Err(self.invalid(format!(
                "{:?} is not a digest (sha256: and 64 lowercase hex digits)",
                error::clip(digest, 100)
            )))
        }
    }

    fn check_reference(&self, reference: &str) -> Result<(), RegistryError> {
        if names::is_tag(reference) || names::is_digest(reference) {
            Ok(())
        } else {
            Err(self.invalid(format!(
                "{:?} is neither a tag ([A-Za-z0-9_][A-Za-z0-9._-], at most 128) nor a sha256 digest",
                error::clip(reference, 140)
            )))
        }
    }

    /// A `Status` error for an unexpected answer, with the registry's
    /// `errors` when it sent them.
    async fn status_error(
        &self,
        method: &Method,
        uri: &Uri,
        response: Response<Incoming>,
    ) -> RegistryError {
        let status = response.status();
        let mut body = response.into_body();
        let mut read: Vec<u8> = Vec::new();
        while let Ok(Some(chunk)) = next_chunk(&mut body).await {
            read.extend_from_slice(&chunk);
            if read.len() > ERROR_BODY_LIMIT {
                break;
            }
        }
        let said = error::parse_errors(&read)
            .or_else(|| {
                let text = String::from_utf8_lossy(&read);
                let text = text.trim();
                (!text.is_empty() && !text.starts_with('<')).then(|| error::clip(text, 200))
            })
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("no reason").to_owned());
        let message = match status {
            StatusCode::FORBIDDEN => format!(
                "{said} ({method} {}); check that [registry] username may pull and push {}",
                uri.path(),
                self.inner.repository
            ),
            _ => format!("{said} ({method} {})", uri.path()),
        };
        RegistryError::Status {
            url: self.inner.url.clone(),
            code: status.as_u16(),
            message,
        }
    }
}
