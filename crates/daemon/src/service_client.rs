//! `launchway sql`, `launchway db dump`, `launchway redis`: the service's
//! own client, run in the service's container with the credentials of a
//! relationship of the serving release (see `launchway_services::client`).
//!
//! - The relationship is the one asked for, or the only one of the
//!   environment's apps that fits the command (an SQL service for `sql` and
//!   `dump`, Redis for `redis`); several are an error that lists them.
//! - The password travels in the client's environment only: never on a
//!   command line, in a process listing or in the daemon's log.
//! - It is not an activity: it reads and writes the service as an app
//!   would, and runs beside deploys (a deploy that restarts the service
//!   ends the session, as it would end an app's connection).

use std::collections::BTreeMap;

use launchway_api::proto;
use launchway_containerd::{OutputChunk, OutputStream, StepSpec};
use launchway_deploy::services::ServiceSpec;
use launchway_deploy::{DeploySpec, environment_id};
use launchway_services::client::{ClientCommand, ClientMode, client_command, mode_serves};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::Daemon;
use crate::api::internal;
use crate::services::{container_id, is_service_container};

/// A relationship of an app of the serving release to a service.
struct Candidate {
    app: String,
    relationship: String,
    entry: serde_json::Value,
    service: ServiceSpec,
}

/// The relationships of `spec`'s apps (of `app` only, if not empty) to the
/// services it runs.
fn candidates(spec: &DeploySpec, app: &str) -> Vec<Candidate> {
    use base64::Engine as _;
    let mut found = Vec::new();
    for spec_app in spec.apps.iter().filter(|a| app.is_empty() || a.name == app) {
        let Some((_, encoded)) = spec_app
            .env
            .iter()
            .find(|(key, _)| key == "PLATFORM_RELATIONSHIPS")
        else {
            continue;
        };
        let Some(relationships) = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| {
                serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(&bytes).ok()
            })
        else {
            continue;
        };
        for (name, entries) in relationships {
            let Some(entry) = entries.get(0).cloned() else {
                continue;
            };
            let target = entry
                .get("service")
                .and_then(|s| s.as_str())
                .unwrap_or_default();
            if let Some(service) = spec.services.iter().find(|s| s.name == target) {
                found.push(Candidate {
                    app: spec_app.name.clone(),
                    relationship: name,
                    entry,
                    service: service.clone(),
                });
            }
        }
    }
    found
}

fn mode_of(request: &proto::ServiceClientRequest) -> Result<ClientMode, Status> {
    match request.mode.as_str() {
        "sql" => Ok(ClientMode::Sql {
            command: request.command.clone(),
        }),
        "dump" => Ok(ClientMode::Dump),
        "redis" => Ok(ClientMode::Redis {
            args: request.args.clone(),
        }),
        other => Err(Status::invalid_argument(format!(
            "unknown client mode `{}` (sql, dump, redis)",
            other.escape_debug()
        ))),
    }
}

/// Picks the relationship the request names, or the only one that fits.
fn choose(
    candidates: Vec<Candidate>,
    request: &proto::ServiceClientRequest,
    mode: &ClientMode,
) -> Result<Candidate, Status> {
    let where_ = if request.app.is_empty() {
        format!("environment {}", request.environment)
    } else {
        format!("app {} of {}", request.app, request.environment)
    };
    if !request.relationship.is_empty() {
        return candidates
            .into_iter()
            .find(|c| c.relationship == request.relationship)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no app of {where_} has a relationship `{}` to a service it runs",
                    request.relationship.escape_debug()
                ))
            });
    }
    let mut fitting: Vec<Candidate> = candidates
        .into_iter()
        .filter(|c| mode_serves(mode, &c.service.kind))
        .collect();
    let mut names: Vec<String> = fitting
        .iter()
        .map(|c| {
            format!(
                "{} (app {}, service {})",
                c.relationship, c.app, c.service.name
            )
        })
        .collect();
    names.dedup();
    let distinct = {
        let mut targets: Vec<(&str, &str)> = fitting
            .iter()
            .map(|c| (c.relationship.as_str(), c.service.name.as_str()))
            .collect();
        targets.sort_unstable();
        targets.dedup();
        targets.len()
    };
    match distinct {
        0 => Err(Status::not_found(format!(
            "no app of {where_} has a relationship to {}",
            match mode {
                ClientMode::Redis { .. } => "a Redis service",
                _ => "an SQL service (postgresql, mariadb)",
            }
        ))),
        1 => Ok(fitting.remove(0)),
        _ => Err(Status::failed_precondition(format!(
            "{where_} has several relationships that fit; choose one with --relationship: {}",
            names.join(", ")
        ))),
    }
}

/// Output of a service client, as the doors stream it.
pub(crate) enum ClientOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(i32),
}

impl Daemon {
    /// Finds what to run for `request`: the service's container and the
    /// client command with the relationship's credentials.
    async fn client_target(
        &self,
        request: &proto::ServiceClientRequest,
    ) -> Result<(String, ClientCommand), Status> {
        let mode = mode_of(request)?;
        let environment = self.existing_environment(&request.project, &request.environment)?;
        let spec = self
            .store
            .deployment(&environment.project, &environment.name)
            .map_err(internal)?
            .and_then(|deployment| self.store.release(&deployment.release).ok().flatten())
            .and_then(|release| serde_json::from_value::<DeploySpec>(release.spec).ok())
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "environment {} serves no release: deploy it first",
                    environment.name
                ))
            })?;
        if !request.app.is_empty() && !spec.apps.iter().any(|a| a.name == request.app) {
            return Err(Status::not_found(format!(
                "environment {} has no app `{}`",
                environment.name,
                request.app.escape_debug()
            )));
        }
        let chosen = choose(candidates(&spec, &request.app), request, &mode)?;
        let resolved = launchway_services::resolve(
            &format!("{}:{}", chosen.service.kind, chosen.service.version),
            true,
        )
        .map_err(|e| internal(format!("the serving release's service cannot run: {e}")))?;
        let command = client_command(&resolved, &chosen.relationship, &chosen.entry, &mode)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let container = container_id(
            &environment_id(&spec.project, &spec.environment),
            &chosen.service,
        );
        let running = self
            .engine
            .app_containers(Some(&crate::deploy::environment_key(
                &spec.project,
                &spec.environment,
            )))
            .await
            .map_err(internal)?;
        if !running
            .iter()
            .any(|id| id == &container && is_service_container(id))
        {
            return Err(Status::unavailable(format!(
                "service {} of {} is not running; see launchway services -p {} -e {}",
                chosen.service.name, environment.name, environment.project, environment.name
            )));
        }
        Ok((container, command))
    }

    /// Runs the client `request` asks for, `stdin` as its input; its output
    /// and then its exit code come on the returned channel. A receiver that
    /// goes away kills the client.
    pub(crate) async fn service_client(
        &self,
        request: &proto::ServiceClientRequest,
        stdin: mpsc::Receiver<Vec<u8>>,
    ) -> Result<mpsc::Receiver<ClientOutput>, Status> {
        let (container, command) = self.client_target(request).await?;
        let mut step = StepSpec::new(command.args);
        step.env = command.env;
        let (sender, output) = mpsc::channel(16);
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let (chunks, mut chunk_receiver) = mpsc::channel::<OutputChunk>(16);
            let cancel = CancellationToken::new();
            let forward = {
                let sender = sender.clone();
                async move {
                    while let Some(chunk) = chunk_receiver.recv().await {
                        let message = match chunk.stream {
                            OutputStream::Stdout => ClientOutput::Stdout(chunk.bytes),
                            OutputStream::Stderr => ClientOutput::Stderr(chunk.bytes),
                        };
                        if sender.send(message).await.is_err() {
                            // Dropping the receiver kills the client.
                            return;
                        }
                    }
                }
            };
            let (outcome, ()) = tokio::join!(
                engine.exec_attached(&container, &step, stdin, chunks, &cancel),
                forward
            );
            let last = match outcome {
                Ok(outcome) => ClientOutput::Exit(i32::try_from(outcome.exit_code).unwrap_or(255)),
                Err(error) => {
                    let said = format!("launchway: the client did not run to its end: {error}\n");
                    let _ = sender.send(ClientOutput::Stderr(said.into_bytes())).await;
                    ClientOutput::Exit(255)
                }
            };
            let _ = sender.send(last).await;
        });
        Ok(output)
    }
}

/// What `ServiceClient` answers.
pub(crate) type ServiceClientStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<proto::ServiceClientOutput, Status>> + Send>,
>;

impl crate::api::ApiService {
    /// `ServiceClient`: the first message names what to run (and is
    /// authorized), the rest are stdin.
    pub(crate) async fn run_service_client(
        &self,
        request: tonic::Request<tonic::Streaming<proto::ServiceClientInput>>,
    ) -> Result<tonic::Response<ServiceClientStream>, Status> {
        use proto::service_client_input::Input;
        use proto::service_client_output::Output;
        let who = crate::admission::principal(&request)?;
        let mut inputs = request.into_inner();
        let Some(Input::Start(start)) = inputs.message().await?.and_then(|m| m.input) else {
            return Err(Status::invalid_argument(
                "the first message of a service client names what to run",
            ));
        };
        self.check(&who, launchway_ops::ActionKind::ServiceClient, |resolve| {
            resolve.environment(&start.project, &start.environment)
        })?;
        let (stdin, stdin_receiver) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(message)) = inputs.message().await {
                if let Some(Input::Stdin(bytes)) = message.input
                    && stdin.send(bytes).await.is_err()
                {
                    return;
                }
            }
        });
        let outputs = self.daemon.service_client(&start, stdin_receiver).await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(outputs).map(|output| {
            Ok(proto::ServiceClientOutput {
                output: Some(match output {
                    crate::service_client::ClientOutput::Stdout(bytes) => Output::Stdout(bytes),
                    crate::service_client::ClientOutput::Stderr(bytes) => Output::Stderr(bytes),
                    crate::service_client::ClientOutput::Exit(code) => Output::ExitCode(code),
                }),
            })
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}
