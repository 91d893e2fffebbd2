//! `launchway run`: a one-off command (a migration, a management task) in a
//! *new* container of an app of the serving release, as Convox's `run` or
//! Dokku's `run` do, not in the running one.
//!
//! - The container is the app's web process's (else its first one's): its
//!   image with a read-only root, its mounts, `/etc/hosts`, variables,
//!   relationships, CA bundle, its place in the environment network (the
//!   same member as the running process, so the same rules) and the
//!   deploy's limits; a `/run` of its own (never the running process's,
//!   which a fresh `/run` would wipe).
//! - The command runs through the app's shell after `.environment` is
//!   sourced, in `/app`, as the app's user.
//! - It is killed and removed when the client goes away; a daemon that
//!   dies meanwhile removes the container at its next start (it carries no
//!   environment label: every unlabelled container is a leftover).
//! - Authorization is `RunCommand` (a change: contributor on a non-default
//!   environment, admin on the default one); each run is an activity of
//!   kind `environment.run` recording who ran which command and how it
//!   ended. It runs beside the environment's queue, not in it.

use launchway_api::proto;
use launchway_containerd::{Output, OutputChunk, OutputStream, Rootfs};
use launchway_ops::{ActionKind, Principal};
use launchway_store::ActivityKind;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::warn;

use crate::Daemon;
use crate::api::internal;
use crate::deploy::app_path;
use crate::service_client::ClientOutput;
use crate::shell::{SessionEnd, main_process, principal_name};

/// The longest command line accepted.
const MAX_COMMAND: usize = 32 * 1024;
/// Runs `$1` after sourcing `.environment`.
const WRAPPER: &str = "[ -r /app/.environment ] && . /app/.environment; eval \"$1\"";

impl Daemon {
    /// Starts `request`'s command; its output and then its exit code come
    /// on the returned channel. A receiver that goes away kills it.
    pub(crate) async fn run_command(
        &self,
        who: &Principal,
        request: &proto::RunCommandRequest,
    ) -> Result<mpsc::Receiver<ClientOutput>, Status> {
        if request.command.trim().is_empty() {
            return Err(Status::invalid_argument(
                "no command: launchway run -p PROJECT -e ENVIRONMENT -- COMMAND",
            ));
        }
        if request.command.len() > MAX_COMMAND || request.command.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "the command must be at most {MAX_COMMAND} bytes, without NUL"
            )));
        }
        let app_name = (!request.app.is_empty()).then_some(request.app.as_str());
        let (spec, app) = self.resolve_app(
            who,
            &request.project,
            &request.environment,
            app_name,
            ActionKind::RunCommand,
        )?;
        let process = main_process(&app)?.clone();
        let image = self.engine.image(&app.image).await.map_err(|error| {
            Status::failed_precondition(format!(
                "the image of app {} is not available: {error}",
                app.name
            ))
        })?;
        let env_dir = self.environment_dir(&spec.project, &spec.environment);
        let run_dir = env_dir.join("run").join(format!(
            "once-{}",
            crate::builds::new_record_id('r').to_ascii_lowercase()
        ));
        // Removed when the run ends, or if this request is dropped first.
        let run_dir_guard = RunDir(run_dir.clone());
        let log_path = self.log_path(&spec.project, &spec.environment, &app.name, &process.name);
        let args = vec![
            "/bin/sh".to_owned(),
            "-c".into(),
            WRAPPER.into(),
            "launchway-run".into(),
            request.command.clone(),
        ];
        let step = self
            .app_step(
                &spec,
                &app,
                &process,
                &app_path(&image),
                &run_dir,
                &log_path,
                args,
            )
            .await
            .map_err(internal)?;
        let shown = crate::shell::shown_command(&request.command);
        let activity = self.record_session(
            &spec.project,
            &spec.environment,
            ActivityKind::Run,
            &format!(
                "{} ran `{shown}` in a new container of app {}",
                principal_name(who),
                app.name
            ),
        );
        let (sender, output) = mpsc::channel(16);
        let engine = self.engine.clone();
        let store = self.store.clone();
        let image_name = app.image.clone();
        self.tasks.spawn(async move {
            let cancel = CancellationToken::new();
            let (chunks, mut chunk_receiver) = mpsc::channel::<OutputChunk>(16);
            let forward = {
                let sender = sender.clone();
                let cancel = cancel.clone();
                async move {
                    loop {
                        let chunk = tokio::select! {
                            chunk = chunk_receiver.recv() => chunk,
                            () = sender.closed() => {
                                // The client went away: end the command.
                                cancel.cancel();
                                return;
                            }
                        };
                        let Some(chunk) = chunk else { return };
                        let message = match chunk.stream {
                            OutputStream::Stdout => ClientOutput::Stdout(chunk.bytes),
                            OutputStream::Stderr => ClientOutput::Stderr(chunk.bytes),
                        };
                        if sender.send(message).await.is_err() {
                            cancel.cancel();
                            return;
                        }
                    }
                }
            };
            let run = engine.run_step(
                Rootfs::App { name: &image_name },
                &step,
                Output::Bytes(chunks),
                &cancel,
            );
            let (outcome, ()) = tokio::join!(run, forward);
            drop(run_dir_guard);
            let end = SessionEnd::of(&outcome);
            if let Some(error) = &end.error {
                let said = format!("launchway: the command could not run: {error}\n");
                let _ = sender.send(ClientOutput::Stderr(said.into_bytes())).await;
            }
            let code = i32::try_from(end.status).unwrap_or(255);
            let _ = sender.send(ClientOutput::Exit(code)).await;
            end.record(&store, activity);
        });
        Ok(output)
    }
}

/// A run's own `/run` directory, removed when dropped.
struct RunDir(std::path::PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            warn!(%error, dir = %self.0.display(), "cannot remove a run directory");
        }
    }
}

impl crate::api::ApiService {
    /// `RunCommand`.
    pub(crate) async fn run_command_rpc(
        &self,
        request: tonic::Request<proto::RunCommandRequest>,
    ) -> Result<tonic::Response<crate::service_client::ServiceClientStream>, Status> {
        use proto::service_client_output::Output as Out;
        use tokio_stream::StreamExt as _;
        let who = crate::admission::principal(&request)?;
        let outputs = self.daemon.run_command(&who, request.get_ref()).await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(outputs).map(|output| {
            Ok(proto::ServiceClientOutput {
                output: Some(match output {
                    ClientOutput::Stdout(bytes) => Out::Stdout(bytes),
                    ClientOutput::Stderr(bytes) => Out::Stderr(bytes),
                    ClientOutput::Exit(code) => Out::ExitCode(code),
                }),
            })
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}
