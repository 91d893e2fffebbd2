//! The CLI's side of the HTTP door: every operation of the admin API,
//! carried over `/api/v1` to a remote daemon.
//!
//! [`Remote`] implements the same service trait the daemon does, by turning
//! each message into the route the table gives its operation (braced
//! segments from the message's fields, the rest as query or JSON body) and
//! the answer back into the reply message; streams come as Server-Sent
//! Events. [`connect`] serves it in-process to an ordinary client, so every
//! CLI command runs unchanged, with unchanged output, over the socket or
//! over HTTPS.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use launchway_api::{Launchway, LaunchwayClient, LaunchwayServer, proto};
use launchway_ops::ActionKind;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};

use crate::pinning::Pinned;
use crate::routes::{ROUTES, Route, Shape};

/// Where the remote daemon is and how to prove who we are.
#[derive(Clone, Debug)]
pub struct RemoteSettings {
    /// `https://host[:port]`.
    pub url: String,
    /// A token (`lw_api_…` or `lw_deploy_…`).
    pub token: String,
    /// The pin file (`host:port SHA256:…` lines).
    pub known_hosts: PathBuf,
    /// Told when the API's certificate is pinned for the first time.
    pub notice: fn(&str),
}

type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A stream of replies read from Server-Sent Events.
pub type RemoteStream<T> = ReceiverStream<Result<T, Status>>;

/// The admin API over HTTPS.
pub struct Remote {
    host: String,
    port: u16,
    token: String,
    tls: tokio_rustls::TlsConnector,
    pinned: Arc<Pinned>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// `https://host[:port][/]` → host, port.
fn parse_url(url: &str) -> Result<(String, u16), String> {
    let rest = url.trim().strip_prefix("https://").ok_or_else(|| {
        format!("`{url}` is not an https:// URL (the API is served over HTTPS only)")
    })?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(format!(
            "`{url}` should be just https://host or https://host:port"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{url}`: an IPv6 address needs its closing ]"))?;
        (host.to_owned(), rest.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        None => 443,
        Some(port) => port
            .parse()
            .map_err(|_| format!("`{url}`: `{port}` is not a port"))?,
    };
    Ok((host, port))
}

impl Remote {
    pub fn new(settings: &RemoteSettings) -> Result<Remote, String> {
        let (host, port) = parse_url(&settings.url)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let pinned = Arc::new(Pinned {
            name: format!("{host}:{port}"),
            file: settings.known_hosts.clone(),
            provider: provider.clone(),
            refusal: Mutex::new(None),
            notice: settings.notice,
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(pinned.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Remote {
            host,
            port,
            token: settings.token.trim().to_owned(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            pinned,
        })
    }

    fn unreachable(&self, error: impl std::fmt::Display) -> Status {
        let pinned = self.pinned.refusal.lock().ok().and_then(|mut r| r.take());
        Status::unavailable(pinned.unwrap_or_else(|| {
            format!(
                "cannot reach the Launchway API at https://{}:{}: {error}",
                self.host, self.port
            )
        }))
    }

    /// Sends one request on a connection of its own.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        events: bool,
    ) -> Result<Response<Incoming>, Status> {
        let json = body.is_some();
        let body = Full::new(Bytes::from(body.unwrap_or_default()))
            .map_err(|never| match never {})
            .boxed_unsync();
        self.send_body(method, path, body, json, events).await
    }

    /// Sends one request with `body` on a connection of its own.
    async fn send_body(
        &self,
        method: &str,
        path: &str,
        body: UnsyncBoxBody<Bytes, BodyError>,
        json: bool,
        events: bool,
    ) -> Result<Response<Incoming>, Status> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.unreachable(e))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| self.unreachable(e))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| self.unreachable(e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.unreachable(e))?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, format!("{}:{}", self.host, self.port))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(
                header::USER_AGENT,
                concat!("launchway/", env!("CARGO_PKG_VERSION")),
            );
        if events {
            request = request.header(header::ACCEPT, "text/event-stream");
        }
        request = request.header(
            header::CONTENT_TYPE,
            if json {
                "application/json"
            } else {
                "application/x-tar"
            },
        );
        let request = request
            .body(body)
            .map_err(|e| Status::internal(e.to_string()))?;
        // The connection must be ready (its task polled once) before the
        // first request, or hyper refuses it as "not ready".
        sender.ready().await.map_err(|e| self.unreachable(e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(refusal(response).await)
        }
    }

    /// The route, path and body of `kind` with `message`.
    fn request_of(
        kind: ActionKind,
        message: &impl Serialize,
    ) -> Result<(&'static Route, String, Option<Vec<u8>>), Status> {
        let route = ROUTES
            .iter()
            .find(|route| route.kind == kind)
            .ok_or_else(|| {
                Status::unimplemented(format!(
                    "{} is not offered over HTTP: run it on the server",
                    kind.name()
                ))
            })?;
        let mut fields = match serde_json::to_value(message) {
            Ok(Value::Object(fields)) => fields,
            _ => Map::new(),
        };
        let mut path = String::new();
        for part in route.path.trim_start_matches('/').split('/') {
            path.push('/');
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => {
                    let value = fields
                        .shift_remove(name)
                        .map(|v| text_of(&v))
                        .unwrap_or_default();
                    if value.is_empty() {
                        return Err(Status::invalid_argument(format!("`{name}` is required")));
                    }
                    path.push_str(&percent_encode(&value));
                }
                None => path.push_str(part),
            }
        }
        fields.retain(|_, value| !is_default(value));
        if matches!(route.method, "GET" | "DELETE") || route.shape == Shape::Upload {
            let mut query = Vec::new();
            for (name, value) in &fields {
                match value {
                    Value::Array(items) => {
                        for item in items {
                            query.push(format!("{name}={}", percent_encode(&text_of(item))));
                        }
                    }
                    other => query.push(format!("{name}={}", percent_encode(&text_of(other)))),
                }
            }
            if !query.is_empty() {
                path.push('?');
                path.push_str(&query.join("&"));
            }
            Ok((route, path, None))
        } else {
            let body = serde_json::to_vec(&Value::Object(fields))
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok((route, path, Some(body)))
        }
    }

    async fn unary<T: DeserializeOwned>(
        &self,
        kind: ActionKind,
        message: &impl Serialize,
    ) -> Result<tonic::Response<T>, Status> {
        let (route, path, body) = Self::request_of(kind, message)?;
        let response = self.send(route.method, &path, body, false).await?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(e))?
            .to_bytes();
        serde_json::from_slice(&bytes)
            .map(tonic::Response::new)
            .map_err(|e| {
                Status::internal(format!(
                    "the API's answer does not fit this CLI (versions differ?): {e}"
                ))
            })
    }

    async fn stream<T: DeserializeOwned + Send + 'static>(
        &self,
        kind: ActionKind,
        message: &impl Serialize,
    ) -> Result<tonic::Response<RemoteStream<T>>, Status> {
        let (route, path, body) = Self::request_of(kind, message)?;
        let response = self
            .send(route.method, &path, body, route.shape != Shape::Data)
            .await?;
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(read_events(response.into_body(), sender));
        Ok(tonic::Response::new(ReceiverStream::new(receiver)))
    }

    /// `UploadSource`: the first message names where, the data of every
    /// message is the request's body as it comes.
    async fn upload(
        &self,
        mut chunks: tonic::Streaming<proto::SourceChunk>,
    ) -> Result<tonic::Response<RemoteStream<proto::LogChunk>>, Status> {
        let start = chunks.message().await?.ok_or_else(|| {
            Status::invalid_argument("an upload starts with a message naming its project")
        })?;
        let mut first = proto::SourceChunk {
            data: Vec::new(),
            ..start.clone()
        };
        // The route names the environment: the project's default one when
        // the caller named none, as over the socket.
        if first.environment.is_empty() {
            let project: tonic::Response<proto::ProjectInfo> = self
                .unary(
                    ActionKind::GetProject,
                    &proto::GetProjectRequest {
                        project: first.project.clone(),
                    },
                )
                .await?;
            first.environment = project.into_inner().default_branch;
        }
        let (route, path, _) = Self::request_of(ActionKind::UploadSource, &first)?;
        let head = Bytes::from(start.data);
        let rest = futures_util::stream::unfold(chunks, |mut chunks| async move {
            match chunks.message().await {
                Ok(Some(chunk)) => Some((Ok(Bytes::from(chunk.data)), chunks)),
                Ok(None) => None,
                Err(status) => Some((Err(status), chunks)),
            }
        });
        let frames = futures_util::StreamExt::map(
            futures_util::StreamExt::chain(
                futures_util::stream::once(async move { Ok(head) }),
                rest,
            ),
            |item: Result<Bytes, Status>| {
                item.map(hyper::body::Frame::data)
                    .map_err(|status| -> BodyError { status.message().to_owned().into() })
            },
        );
        let body = StreamBody::new(frames).boxed_unsync();
        let response = self
            .send_body(route.method, &path, body, false, true)
            .await?;
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(read_events(response.into_body(), sender));
        Ok(tonic::Response::new(ReceiverStream::new(receiver)))
    }

    async fn data(
        &self,
        kind: ActionKind,
        message: &impl Serialize,
    ) -> Result<tonic::Response<RemoteStream<proto::DataChunk>>, Status> {
        let (route, path, body) = Self::request_of(kind, message)?;
        let mut response = self.send(route.method, &path, body, false).await?;
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(frame) = response.body_mut().frame().await {
                let item = match frame {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => Ok(proto::DataChunk {
                            data: data.to_vec(),
                        }),
                        Err(_) => continue,
                    },
                    Err(error) => Err(Status::unavailable(format!(
                        "the download broke off: {error}"
                    ))),
                };
                let failed = item.is_err();
                if sender.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(receiver)))
    }
}

fn is_default(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_u64() == Some(0) || n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn code_of(name: &str, status: StatusCode) -> Code {
    match name {
        "invalid_argument" | "bad_path" | "bad_query" | "bad_body" => Code::InvalidArgument,
        "not_found" | "no_route" => Code::NotFound,
        "already_exists" => Code::AlreadyExists,
        "failed_precondition" => Code::FailedPrecondition,
        "permission_denied" => Code::PermissionDenied,
        "unauthenticated" => Code::Unauthenticated,
        "resource_exhausted" | "too_many_failures" => Code::ResourceExhausted,
        "unavailable" => Code::Unavailable,
        "unimplemented" | "method_not_allowed" => Code::Unimplemented,
        "deadline_exceeded" => Code::DeadlineExceeded,
        "cancelled" => Code::Cancelled,
        _ if status.is_client_error() => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

fn status_of_error(value: &Value, http: StatusCode) -> Status {
    let code = value["error"]["code"].as_str().unwrap_or_default();
    let message = value["error"]["message"]
        .as_str()
        .map_or_else(|| format!("the API answered {http}"), str::to_owned);
    Status::new(code_of(code, http), message)
}

/// A refusal's JSON as a status with the daemon's own message.
async fn refusal(response: Response<Incoming>) -> Status {
    let http = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) => status_of_error(&value, http),
        Err(_) => Status::new(
            code_of("", http),
            format!("the API answered {http} without an explanation"),
        ),
    }
}

/// Server-Sent Events, each `data:` a reply; an `error` event ends the
/// stream with its status.
async fn read_events<T: DeserializeOwned>(
    mut body: Incoming,
    sender: mpsc::Sender<Result<T, Status>>,
) {
    let mut buffer = String::new();
    loop {
        let frame = match body.frame().await {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                let _ = sender
                    .send(Err(Status::unavailable(format!(
                        "the stream broke off: {error}"
                    ))))
                    .await;
                return;
            }
            None => return,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = None;
            let mut payload = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = Some(value.to_owned());
                } else if let Some(value) = line.strip_prefix("data: ") {
                    payload.push_str(value);
                }
            }
            if payload.is_empty() {
                continue;
            }
            let item = match (name.as_deref(), serde_json::from_str::<Value>(&payload)) {
                (Some("error"), Ok(value)) => Err(status_of_error(&value, StatusCode::OK)),
                (_, Ok(value)) => serde_json::from_value::<T>(value)
                    .map_err(|e| Status::internal(format!("an event does not fit this CLI: {e}"))),
                (_, Err(e)) => Err(Status::internal(format!("an event is not JSON: {e}"))),
            };
            let failed = item.is_err();
            if sender.send(item).await.is_err() || failed {
                return;
            }
        }
    }
}

fn over_the_socket(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not offered over HTTP yet: run it on the server"
    ))
}

/// Build hosts join the host's build pool: the operator manages them on
/// the server, never over HTTP.
fn operator_only_builders() -> Status {
    Status::unimplemented(
        "build hosts are the host operator's (they join the build pool): run `launchway builders` on the server",
    )
}

macro_rules! remote_service {
    (
        unary { $($um:ident($ut:ident) -> $ur:ident = $uk:ident,)* }
        stream { $($sm:ident($st:ident) -> $si:ident as $sn:ident = $sk:ident,)* }
        data { $($dm:ident($dt:ident) as $dn:ident = $dk:ident,)* }
    ) => {
        #[tonic::async_trait]
        impl Launchway for Remote {
            $(async fn $um(&self, request: tonic::Request<proto::$ut>) -> Result<tonic::Response<proto::$ur>, Status> {
                self.unary(ActionKind::$uk, request.get_ref()).await
            })*
            $(type $sn = RemoteStream<proto::$si>;
            async fn $sm(&self, request: tonic::Request<proto::$st>) -> Result<tonic::Response<Self::$sn>, Status> {
                self.stream(ActionKind::$sk, request.get_ref()).await
            })*
            $(type $dn = RemoteStream<proto::DataChunk>;
            async fn $dm(&self, request: tonic::Request<proto::$dt>) -> Result<tonic::Response<Self::$dn>, Status> {
                self.data(ActionKind::$dk, request.get_ref()).await
            })*

            type UploadSourceStream = RemoteStream<proto::LogChunk>;
            async fn upload_source(&self, request: tonic::Request<tonic::Streaming<proto::SourceChunk>>) -> Result<tonic::Response<Self::UploadSourceStream>, Status> {
                self.upload(request.into_inner()).await
            }

            async fn pre_receive(&self, _: tonic::Request<proto::HookRequest>) -> Result<tonic::Response<proto::HookReply>, Status> {
                Err(over_the_socket("a git hook"))
            }
            async fn post_receive(&self, _: tonic::Request<proto::HookRequest>) -> Result<tonic::Response<proto::HookReply>, Status> {
                Err(over_the_socket("a git hook"))
            }
            async fn import_build(&self, _: tonic::Request<tonic::Streaming<proto::ImportBuildChunk>>) -> Result<tonic::Response<proto::BuildInfo>, Status> {
                Err(over_the_socket("importing a build"))
            }
            async fn import_backup(&self, _: tonic::Request<tonic::Streaming<proto::ImportBuildChunk>>) -> Result<tonic::Response<proto::BackupInfo>, Status> {
                Err(over_the_socket("importing a backup"))
            }
            type ServiceClientStream = RemoteStream<proto::ServiceClientOutput>;
            async fn service_client(&self, _: tonic::Request<tonic::Streaming<proto::ServiceClientInput>>) -> Result<tonic::Response<Self::ServiceClientStream>, Status> {
                Err(over_the_socket("a service's client"))
            }
            type RunCommandStream = RemoteStream<proto::ServiceClientOutput>;
            async fn run_command(&self, _: tonic::Request<proto::RunCommandRequest>) -> Result<tonic::Response<Self::RunCommandStream>, Status> {
                Err(over_the_socket("a one-off command (over SSH: ssh PROJECT:ENVIRONMENT:APP@HOST -- COMMAND)"))
            }
            async fn list_builders(&self, _: tonic::Request<proto::ListBuildersRequest>) -> Result<tonic::Response<proto::BuilderList>, Status> {
                Err(operator_only_builders())
            }
            async fn create_builder_token(&self, _: tonic::Request<proto::CreateBuilderTokenRequest>) -> Result<tonic::Response<proto::BuilderToken>, Status> {
                Err(operator_only_builders())
            }
            async fn remove_builder(&self, _: tonic::Request<proto::RemoveBuilderRequest>) -> Result<tonic::Response<proto::RemoveBuilderReply>, Status> {
                Err(operator_only_builders())
            }
        }
    };
}

remote_service! {
    unary {
        server_info(ServerInfoRequest) -> ServerInfoReply = ServerInfo,
        create_project(CreateProjectRequest) -> ProjectInfo = CreateProject,
        list_projects(ListProjectsRequest) -> ProjectList = ListProjects,
        get_project(GetProjectRequest) -> ProjectInfo = GetProject,
        set_project_setting(SetProjectSettingRequest) -> ProjectInfo = SetProjectSetting,
        add_key(AddKeyRequest) -> KeyInfo = AddKey,
        list_keys(ListKeysRequest) -> KeyList = ListKeys,
        remove_key(RemoveKeyRequest) -> RemoveKeyReply = RemoveKey,
        plan(PlanRequest) -> PlanReply = Plan,
        list_activities(ListActivitiesRequest) -> ActivityList = ListActivities,
        activity_log(ActivityLogRequest) -> ActivityLogReply = ActivityLog,
        cancel_activity(CancelActivityRequest) -> CancelActivityReply = CancelActivity,
        list_runtimes(ListRuntimesRequest) -> RuntimeList = ListRuntimes,
        import_runtime(ImportRuntimeRequest) -> RuntimeInfo = ImportRuntime,
        list_builds(ListBuildsRequest) -> BuildList = ListBuilds,
        get_build(GetBuildRequest) -> BuildInfo = GetBuild,
        clear_build_cache(ClearBuildCacheRequest) -> ClearBuildCacheReply = ClearBuildCache,
        collect_garbage(CollectGarbageRequest) -> CollectGarbageReply = CollectGarbage,
        list_releases(ListReleasesRequest) -> ReleaseList = ListReleases,
        get_release(GetReleaseRequest) -> ReleaseInfo = GetRelease,
        list_environments(ListEnvironmentsRequest) -> EnvironmentList = ListEnvironments,
        list_services(EnvironmentRequest) -> ServiceList = ListServices,
        list_variables(ListVariablesRequest) -> VariableList = ListVariables,
        list_crons(EnvironmentRequest) -> CronList = ListCrons,
        list_backups(ListBackupsRequest) -> BackupList = ListBackups,
        delete_backup(BackupRequest) -> DeleteBackupReply = DeleteBackup,
        add_certificate(AddCertificateRequest) -> CertificateInfo = AddCertificate,
        remove_certificate(RemoveCertificateRequest) -> RemoveCertificateReply = RemoveCertificate,
        list_certificates(ListCertificatesRequest) -> CertificateList = ListCertificates,
        renew_certificate(RenewCertificateRequest) -> RenewCertificateReply = RenewCertificate,
        create_token(CreateTokenRequest) -> TokenInfo = CreateToken,
        list_tokens(ListTokensRequest) -> TokenList = ListTokens,
        revoke_token(RevokeTokenRequest) -> RevokeTokenReply = RevokeToken,
        create_webhook(CreateWebhookRequest) -> WebhookInfo = CreateWebhook,
        list_webhooks(ListWebhooksRequest) -> WebhookList = ListWebhooks,
        delete_webhook(DeleteWebhookRequest) -> DeleteWebhookReply = DeleteWebhook,
        list_webhook_deliveries(ListWebhookDeliveriesRequest) -> WebhookDeliveryList = ListWebhookDeliveries,
    }
    stream {
        follow_activity(FollowActivityRequest) -> LogEntry as FollowActivityStream = FollowActivity,
        build_runtime(BuildRuntimeRequest) -> RuntimeProgress as BuildRuntimeStream = BuildRuntime,
        build_logs(BuildLogsRequest) -> LogChunk as BuildLogsStream = BuildLogs,
        app_logs(AppLogsRequest) -> LogChunk as AppLogsStream = AppLogs,
        start_build(StartBuildRequest) -> LogChunk as StartBuildStream = StartBuild,
        delete_service_data(DeleteServiceDataRequest) -> LogChunk as DeleteServiceDataStream = DeleteServiceData,
        activate_environment(ActivateEnvironmentRequest) -> LogChunk as ActivateEnvironmentStream = ActivateEnvironment,
        delete_project(DeleteProjectRequest) -> LogChunk as DeleteProjectStream = DeleteProject,
        deactivate_environment(EnvironmentRequest) -> LogChunk as DeactivateEnvironmentStream = DeactivateEnvironment,
        delete_environment(EnvironmentRequest) -> LogChunk as DeleteEnvironmentStream = DeleteEnvironment,
        deploy(EnvironmentRequest) -> LogChunk as DeployStream = Deploy,
        redeploy(EnvironmentRequest) -> LogChunk as RedeployStream = Redeploy,
        promote_release(PromoteReleaseRequest) -> LogChunk as PromoteReleaseStream = PromoteRelease,
        set_variable(SetVariableRequest) -> LogChunk as SetVariableStream = SetVariable,
        delete_variable(DeleteVariableRequest) -> LogChunk as DeleteVariableStream = DeleteVariable,
        run_cron(RunCronRequest) -> LogChunk as RunCronStream = RunCron,
        sync_environment(SyncEnvironmentRequest) -> LogChunk as SyncEnvironmentStream = SyncEnvironment,
        merge_environment(EnvironmentRequest) -> LogChunk as MergeEnvironmentStream = MergeEnvironment,
        create_backup(CreateBackupRequest) -> LogChunk as CreateBackupStream = CreateBackup,
        restore_backup(RestoreBackupRequest) -> LogChunk as RestoreBackupStream = RestoreBackup,
    }
    data {
        export_build(ExportBuildRequest) as ExportBuildStream = ExportBuild,
        export_backup(BackupRequest) as ExportBackupStream = ExportBackup,
    }
}

/// A client whose every call goes to the remote daemon's HTTP API: the
/// same client type the socket gives, so callers cannot tell the two apart.
pub async fn connect(settings: &RemoteSettings) -> Result<LaunchwayClient<Channel>, String> {
    let remote = Arc::new(Remote::new(settings)?);
    let channel = Endpoint::from_static("http://launchway.remote")
        .connect_with_connector(tower_service(remote))
        .await
        .map_err(|e| format!("cannot start the remote client: {e}"))?;
    Ok(LaunchwayClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024))
}

/// Each connection the client opens is an in-memory pipe to a server of
/// `remote` on this process.
fn tower_service(
    remote: Arc<Remote>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio::io::DuplexStream>,
    Error = std::io::Error,
    Future = std::future::Ready<Result<TokioIo<tokio::io::DuplexStream>, std::io::Error>>,
> + Clone {
    PipeConnector { remote }
}

#[derive(Clone)]
struct PipeConnector {
    remote: Arc<Remote>,
}

impl tower::Service<Uri> for PipeConnector {
    type Response = TokioIo<tokio::io::DuplexStream>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (client, server) = tokio::io::duplex(1 << 16);
        let service = LaunchwayServer::from_arc(self.remote.clone())
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::once(Ok::<_, std::io::Error>(server)))
                .await;
        });
        std::future::ready(Ok(TokioIo::new(client)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urls_are_https_host_and_port() {
        assert_eq!(
            parse_url("https://ci.example.com").unwrap(),
            ("ci.example.com".into(), 443)
        );
        assert_eq!(
            parse_url("https://10.0.0.2:7443/").unwrap(),
            ("10.0.0.2".into(), 7443)
        );
        assert_eq!(
            parse_url("https://[::1]:7443").unwrap(),
            ("::1".into(), 7443)
        );
        assert!(parse_url("http://x").is_err());
        assert!(parse_url("https://x/api").is_err());
        assert!(parse_url("https://x:http").is_err());
    }

    #[test]
    fn messages_become_the_routes_paths_queries_and_bodies() {
        let (route, path, body) = Remote::request_of(
            ActionKind::ListActivities,
            &proto::ListActivitiesRequest {
                project: "shop".into(),
                environment: "feature/x".into(),
                limit: 5,
                cursor: String::new(),
            },
        )
        .unwrap();
        assert_eq!(route.method, "GET");
        assert_eq!(
            path,
            "/api/v1/projects/shop/activities?environment=feature%2Fx&limit=5"
        );
        assert!(body.is_none());
        let (_, path, body) = Remote::request_of(
            ActionKind::SetVariable,
            &proto::SetVariableRequest {
                project: "shop".into(),
                name: "A B".into(),
                value: "1".into(),
                sensitive: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(path, "/api/v1/projects/shop/variables/A%20B");
        let body: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(body, serde_json::json!({"value": "1", "sensitive": true}));
        assert!(
            Remote::request_of(ActionKind::GetProject, &proto::GetProjectRequest::default())
                .is_err()
        );
    }
}
