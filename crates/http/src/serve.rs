//! The HTTPS listener and each request's way through the door.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt as _};
use http_body_util::{BodyExt as _, Full, Limited, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use launchway_api::Launchway;
use launchway_ops::{ActionKind, Principal};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tracing::{debug, warn};

use crate::console::Sessions;
use crate::dispatch::{Reply, call};
use crate::limits::Limiter;
use crate::request::{fields, percent_decode, query_pairs};
use crate::routes::{Miss, Route, Shape, find};

/// Operations whose request body is bytes, not JSON: the door hands the
/// body over as it arrives.
pub trait Uploads: Send + Sync + 'static {
    /// `UploadSource`: `start` names the project, environment and whether
    /// to deploy; `data` is the tar. Authorization is the implementor's
    /// (the core's), as for every operation.
    fn receive_upload(
        &self,
        who: Principal,
        start: launchway_api::proto::SourceChunk,
        data: BoxStream<'static, Result<Bytes, Status>>,
    ) -> impl std::future::Future<
        Output = Result<BoxStream<'static, Result<launchway_api::proto::LogChunk, Status>>, Status>,
    > + Send;
}

/// Turns a bearer secret (or a console sign-in) into who it stands for.
pub trait Authenticate: Send + Sync + 'static {
    /// The principal, or why not (said to the client as is: no secrets).
    fn authenticate(&self, secret: &str) -> Result<Principal, String>;

    /// Uses up a console login code (`ssh git@host login`); the fingerprint
    /// of the key it was made for, or why not.
    fn redeem_login(&self, code: &str) -> Result<String, String>;

    /// The key a console login code was made for (its comment and
    /// fingerprint), without using the code up; `None` when unknown.
    fn login_owner(&self, code: &str) -> Option<String>;

    /// Who the key `fingerprint` stands for now (its roles, read afresh), or
    /// why not (it was removed).
    fn member(&self, fingerprint: &str) -> Result<Principal, String>;
}

type BodyError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Body = UnsyncBoxBody<Bytes, BodyError>;

/// The largest JSON body a request may send.
const MAX_BODY: usize = 1 << 20;
/// A TLS handshake must end within this.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The door: the service every operation runs in, and who may knock.
pub struct HttpDoor<S> {
    pub(crate) service: Arc<S>,
    pub(crate) authenticator: Arc<dyn Authenticate>,
    pub(crate) limiter: Limiter,
    pub(crate) sessions: Sessions,
}

impl<S> std::fmt::Debug for HttpDoor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpDoor")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

/// An answer that is not the operation's: refusals of the door itself, and
/// the operation's errors.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    code: &'static str,
    pub(crate) message: String,
    headers: Vec<(header::HeaderName, String)>,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Refusal {
        let (http, code) = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                (StatusCode::BAD_REQUEST, "invalid_argument")
            }
            Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Code::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
            Code::FailedPrecondition | Code::Aborted => {
                (StatusCode::CONFLICT, "failed_precondition")
            }
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "unimplemented"),
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
            Code::Cancelled => (StatusCode::CONFLICT, "cancelled"),
            Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        Refusal::new(http, code, status.message())
    }
}

fn error_json(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn refusal_response(refusal: Refusal) -> Response<Body> {
    let mut response = json_response(refusal.status, &error_json(refusal.code, &refusal.message));
    for (name, value) in refusal.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// One Server-Sent Event.
fn event(id: Option<u64>, name: Option<&str>, data: &Value) -> Bytes {
    let mut text = String::new();
    if let Some(id) = id {
        text.push_str(&format!("id: {id}\n"));
    }
    if let Some(name) = name {
        text.push_str(&format!("event: {name}\n"));
    }
    // JSON has no raw newlines, so one `data:` line holds it.
    text.push_str(&format!("data: {data}\n\n"));
    Bytes::from(text)
}

pub(crate) fn sse_response(events: BoxStream<'static, Bytes>) -> Response<Body> {
    let body = StreamBody::new(events.map(|bytes| Ok::<_, BodyError>(Frame::data(bytes))));
    let mut response = Response::new(http_body_util::BodyExt::boxed_unsync(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// A stream of JSON items as events: activity log entries carry their
/// position as the event id and end with a `done` event; a failure in the
/// middle is an `error` event, then the end.
pub(crate) fn events(
    kind: ActionKind,
    items: BoxStream<'static, Result<Value, Status>>,
) -> BoxStream<'static, Bytes> {
    let follow = kind == ActionKind::FollowActivity;
    items
        .scan(false, move |ended, item| {
            if *ended {
                return std::future::ready(None);
            }
            let bytes = match item {
                Ok(value) => {
                    let done = value.get("done").and_then(Value::as_bool).unwrap_or(false);
                    let id = follow
                        .then(|| value.get("seq").and_then(Value::as_u64))
                        .flatten();
                    event(id, (follow && done).then_some("done"), &value)
                }
                Err(status) => {
                    *ended = true;
                    let refusal = Refusal::from(status);
                    event(
                        None,
                        Some("error"),
                        &error_json(refusal.code, &refusal.message),
                    )
                }
            };
            std::future::ready(Some(bytes))
        })
        .boxed()
}

impl<S: Launchway + Uploads> HttpDoor<S> {
    pub fn new(
        service: Arc<S>,
        authenticator: Arc<dyn Authenticate>,
        failed_authentications_per_minute: u32,
        console_session: Duration,
    ) -> Arc<HttpDoor<S>> {
        Arc::new(HttpDoor {
            service,
            authenticator,
            limiter: Limiter::new(failed_authentications_per_minute),
            sessions: Sessions::new(console_session),
        })
    }

    /// Serves HTTPS on `listener` until `stop`; open connections (followed
    /// logs) end with it.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        stop: CancellationToken,
    ) {
        let acceptor = TlsAcceptor::from(tls);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stop.cancelled() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "the HTTP API cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let door = self.clone();
            let acceptor = acceptor.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        debug!(%error, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                door.connection(tls, peer, stop).await;
            });
        }
    }

    async fn connection<IO>(self: Arc<Self>, io: IO, peer: SocketAddr, stop: CancellationToken)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper::service::service_fn(move |request| {
            let door = self.clone();
            async move { Ok::<_, Infallible>(door.handle(peer.ip(), request).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(io), service);
        tokio::select! {
            result = connection => {
                if let Err(error) = result {
                    debug!(%error, %peer, "HTTP connection ended");
                }
            }
            () = stop.cancelled() => {}
        }
    }

    async fn handle(&self, peer: IpAddr, request: Request<Incoming>) -> Response<Body> {
        if crate::console::is_console(request.uri().path()) {
            return self.console(peer, request).await;
        }
        match self.respond(peer, request).await {
            Ok(response) => response,
            Err(refusal) => refusal_response(refusal),
        }
    }

    fn authenticate(
        &self,
        peer: IpAddr,
        request: &Request<Incoming>,
    ) -> Result<Principal, Refusal> {
        if let Some(seconds) = self.limiter.retry_after(peer) {
            let mut refusal = Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                format!(
                    "too many failed authentications from this address: try again in {seconds} s"
                ),
            );
            refusal
                .headers
                .push((header::RETRY_AFTER, seconds.to_string()));
            return Err(refusal);
        }
        let unauthenticated = |message: String| {
            let mut refusal = Refusal::new(StatusCode::UNAUTHORIZED, "unauthenticated", message);
            refusal
                .headers
                .push((header::WWW_AUTHENTICATE, "Bearer".into()));
            refusal
        };
        let Some(value) = request.headers().get(header::AUTHORIZATION) else {
            return Err(unauthenticated(
                "this API needs a token: send `Authorization: Bearer <token>` (an operator makes one with `launchway token create`)".into(),
            ));
        };
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        match self.authenticator.authenticate(secret) {
            Ok(principal) => Ok(principal),
            Err(message) => {
                self.limiter.failed(peer);
                Err(unauthenticated(message))
            }
        }
    }

    async fn respond(
        &self,
        peer: IpAddr,
        request: Request<Incoming>,
    ) -> Result<Response<Body>, Refusal> {
        let path = request.uri().path().to_owned();
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(|segment| percent_decode(segment, false))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_path",
                    "the path has a bad %-escape",
                )
            })?;
        let method = request.method().as_str().to_owned();
        let (route, values) = find(&method, &segments).map_err(|miss| match miss {
            Miss::NotFound => Refusal::new(
                StatusCode::NOT_FOUND,
                "no_route",
                format!("no API at {path}: the routes are listed in api-schema/openapi.json"),
            ),
            Miss::Method(allowed) => {
                let allowed = allowed.join(", ");
                let mut refusal = Refusal::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{path} takes {allowed}, not {method}"),
                );
                refusal.headers.push((header::ALLOW, allowed));
                refusal
            }
        })?;
        let who = self.authenticate(peer, &request)?;
        let wants_events = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        let last_event = request
            .headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut texts: Vec<(String, String)> = values
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        let query = query_pairs(request.uri().query().unwrap_or_default())
            .map_err(|message| Refusal::new(StatusCode::BAD_REQUEST, "bad_query", message))?;
        texts.extend(query);
        if route.kind == ActionKind::FollowActivity
            && let Some(last) = last_event
            && !texts.iter().any(|(name, _)| name == "after")
        {
            texts.push(("after".into(), last));
        }
        if route.shape == Shape::Upload {
            let fields = fields::<launchway_api::proto::SourceChunk>(&texts, None)?;
            let start: launchway_api::proto::SourceChunk = crate::request::decode(fields)?;
            let data = http_body_util::BodyStream::new(request.into_body())
                .filter_map(|frame| {
                    std::future::ready(match frame {
                        Ok(frame) => frame.into_data().ok().map(Ok),
                        Err(error) => Some(Err(Status::cancelled(format!(
                            "the upload broke off: {error}"
                        )))),
                    })
                })
                .boxed();
            let chunks = self.service.receive_upload(who, start, data).await?;
            let items = chunks
                .map(|item| {
                    item.and_then(|chunk| {
                        serde_json::to_value(chunk).map_err(|e| Status::internal(e.to_string()))
                    })
                })
                .boxed();
            return Ok(render(route, Reply::Stream(items), wants_events).await);
        }
        let body = read_body(request.into_body()).await?;
        let fields = message_fields(route.kind, &texts, body)?;
        let reply = call(&*self.service, route.kind, &who, fields).await?;
        Ok(render(route, reply, wants_events).await)
    }
}

async fn read_body(body: Incoming) -> Result<Option<Map<String, Value>>, Refusal> {
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("a request body is at most {MAX_BODY} bytes of JSON"),
            )
        })?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "the body must be a JSON object",
        )),
        Err(error) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("the body is not JSON: {error}"),
        )),
    }
}

/// The message fields for `kind`, typed by its request message.
fn message_fields(
    kind: ActionKind,
    texts: &[(String, String)],
    body: Option<Map<String, Value>>,
) -> Result<Value, Status> {
    use launchway_api::proto;
    use launchway_ops::ActionKind as K;
    macro_rules! typed {
        ($($kind:ident => $message:ident,)*) => {
            match kind {
                $(K::$kind => fields::<proto::$message>(texts, body),)*
                _ => fields::<proto::EnvironmentRequest>(texts, body),
            }
        };
    }
    typed! {
        ServerInfo => ServerInfoRequest,
        CreateProject => CreateProjectRequest,
        ListProjects => ListProjectsRequest,
        GetProject => GetProjectRequest,
        SetProjectSetting => SetProjectSettingRequest,
        AddKey => AddKeyRequest,
        ListKeys => ListKeysRequest,
        RemoveKey => RemoveKeyRequest,
        Plan => PlanRequest,
        ListActivities => ListActivitiesRequest,
        ActivityLog => ActivityLogRequest,
        FollowActivity => FollowActivityRequest,
        CancelActivity => CancelActivityRequest,
        ListRuntimes => ListRuntimesRequest,
        BuildRuntime => BuildRuntimeRequest,
        ImportRuntime => ImportRuntimeRequest,
        ListBuilds => ListBuildsRequest,
        GetBuild => GetBuildRequest,
        BuildLogs => BuildLogsRequest,
        StartBuild => StartBuildRequest,
        ExportBuild => ExportBuildRequest,
        ClearBuildCache => ClearBuildCacheRequest,
        CollectGarbage => CollectGarbageRequest,
        ListReleases => ListReleasesRequest,
        GetRelease => GetReleaseRequest,
        PromoteRelease => PromoteReleaseRequest,
        AppLogs => AppLogsRequest,
        ListEnvironments => ListEnvironmentsRequest,
        ActivateEnvironment => ActivateEnvironmentRequest,
        DeleteProject => DeleteProjectRequest,
        SyncEnvironment => SyncEnvironmentRequest,
        DeleteServiceData => DeleteServiceDataRequest,
        RunCron => RunCronRequest,
        CreateBackup => CreateBackupRequest,
        ListBackups => ListBackupsRequest,
        RestoreBackup => RestoreBackupRequest,
        DeleteBackup => BackupRequest,
        ExportBackup => BackupRequest,
        ListVariables => ListVariablesRequest,
        SetVariable => SetVariableRequest,
        DeleteVariable => DeleteVariableRequest,
        AddCertificate => AddCertificateRequest,
        RemoveCertificate => RemoveCertificateRequest,
        ListCertificates => ListCertificatesRequest,
        RenewCertificate => RenewCertificateRequest,
        CreateToken => CreateTokenRequest,
        ListTokens => ListTokensRequest,
        RevokeToken => RevokeTokenRequest,
        CreateWebhook => CreateWebhookRequest,
        ListWebhooks => ListWebhooksRequest,
        DeleteWebhook => DeleteWebhookRequest,
        ListWebhookDeliveries => ListWebhookDeliveriesRequest,
    }
}

/// The activity numbers a long operation's first output names
/// (`Activity N: …` lines).
fn activity_ids(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| {
            line.strip_prefix("Activity ")?
                .split_once(':')?
                .0
                .parse()
                .ok()
        })
        .collect()
}

async fn render(route: &Route, reply: Reply, wants_events: bool) -> Response<Body> {
    match reply {
        Reply::Json(value) => json_response(StatusCode::OK, &value),
        Reply::Data(chunks) => {
            let body = StreamBody::new(chunks.map(|item| {
                item.map(Frame::data)
                    .map_err(|status| -> BodyError { status.message().to_owned().into() })
            }));
            let mut response = Response::new(http_body_util::BodyExt::boxed_unsync(body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        Reply::Stream(items)
            if !matches!(route.shape, Shape::Activity | Shape::Upload) || wants_events =>
        {
            sse_response(events(route.kind, items))
        }
        Reply::Stream(mut items) => {
            let first = match items.next().await {
                Some(Ok(first)) => first,
                Some(Err(status)) => return refusal_response(status.into()),
                None => return json_response(StatusCode::OK, &json!({"log": "", "failed": false})),
            };
            let text = first
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let activity = first.get("activity").and_then(Value::as_u64).unwrap_or(0);
            if activity != 0 {
                // The operation goes on in the daemon; the client follows it
                // at the Location (dropping this stream does not stop it).
                let mut response = json_response(
                    StatusCode::ACCEPTED,
                    &json!({"activity": activity, "activities": activity_ids(&text), "preface": text}),
                );
                if let Ok(location) =
                    HeaderValue::from_str(&format!("/api/v1/activities/{activity}/log"))
                {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                return response;
            }
            // No activity started: the whole (short) answer at once.
            let mut log = text;
            let mut failed = first
                .get("failed")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            while let Some(item) = items.next().await {
                match item {
                    Ok(chunk) => {
                        log.push_str(
                            chunk
                                .get("text")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                        );
                        failed |= chunk
                            .get("failed")
                            .and_then(Value::as_bool)
                            .unwrap_or(false);
                    }
                    Err(status) => return refusal_response(status.into()),
                }
            }
            json_response(StatusCode::OK, &json!({"log": log, "failed": failed}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activities_are_read_from_the_preface() {
        assert_eq!(
            activity_ids("Deploying\nActivity 12: deploy main\nActivity 13: x: y\n"),
            vec![12, 13]
        );
        assert!(activity_ids("nothing").is_empty());
    }

    #[test]
    fn statuses_map_to_http() {
        let refusal = Refusal::from(Status::permission_denied("no"));
        assert_eq!(refusal.status, StatusCode::FORBIDDEN);
        let refusal = Refusal::from(Status::not_found("gone"));
        assert_eq!(
            (refusal.status, refusal.message.as_str()),
            (StatusCode::NOT_FOUND, "gone")
        );
    }
}
