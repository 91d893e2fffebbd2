//! Shells, commands and tunnels into an environment's app, over SSH (the
//! user name `PROJECT:ENVIRONMENT[:APP]`, see `launchway_ssh::session`).
//!
//! Rules, decided here once through the actions table:
//! - a shell or a command is [`ActionKind::Shell`], a tunnel
//!   [`ActionKind::Tunnel`]: contributor and up on an environment that is
//!   not the default one, admin on the default one, viewers never (the
//!   rules of a push); an unknown project and one the key cannot see answer
//!   alike;
//! - the environment must be active and serve a release; the app is the
//!   one named, or the only one (several: the refusal lists them);
//! - a shell runs in the app's *running* web container (else its first
//!   process's), as the app's user, in `/app`, with the container's own
//!   environment (what the deploy gave it) and `/app/.environment` sourced;
//! - a tunnel reaches only what the app's relationships name, on the
//!   relationship's own port, dialed from the environment's hub (as the
//!   router dials apps);
//! - each shell or command is an activity of the environment (kind
//!   `environment.ssh`): who, when, which command (never the keystrokes),
//!   and how it ended.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use launchway_containerd::{ExecControl, OutputStream, PtySize, StepSpec};
use launchway_deploy::DeploySpec;
use launchway_deploy::spec::{AppSpec, ProcessSpec};
use launchway_ops::{ActionKind, Principal};
use launchway_ssh::{Command, Process, ProcessControl, ProcessOutput, ProcessRequest, Target};
use launchway_store::{Activity, ActivityKind, ActivityResult, ActivityState, EnvironmentStatus};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::warn;

use crate::{Daemon, now_ms};

/// Runs a login-like interactive shell: `.environment` sourced, bash when
/// the image has it. Not `-l`: a login shell's `/etc/profile` would reset
/// the `PATH` the deploy set.
const SHELL: &str = "[ -r /app/.environment ] && . /app/.environment; \
if command -v bash >/dev/null 2>&1; then exec bash -i; else exec sh -i; fi";
/// Runs one command line (`$1`) after sourcing `.environment`.
const COMMAND: &str = "[ -r /app/.environment ] && . /app/.environment; eval \"$1\"";

/// What a target resolved to, for one key.
pub(crate) struct ResolvedApp {
    /// The key's name, for records.
    pub(crate) who: String,
    pub(crate) spec: DeploySpec,
    pub(crate) app: AppSpec,
}

/// The message of a refusal status.
fn said(status: Status) -> String {
    status.message().to_owned()
}

impl Daemon {
    /// Authorizes `kind` on an environment for `who` and finds the app of
    /// its serving release that `app` names (or its only one).
    pub(crate) fn resolve_app(
        &self,
        who: &Principal,
        project: &str,
        environment: &str,
        app: Option<&str>,
        kind: ActionKind,
    ) -> Result<(DeploySpec, AppSpec), Status> {
        self.check_action(who, kind, |resolve| {
            resolve.environment(project, environment)
        })?;
        let found = self.existing_environment(project, environment)?;
        if found.status != EnvironmentStatus::Active {
            return Err(Status::failed_precondition(format!(
                "environment {environment} is not active: activate it with launchway environments activate -p {project} {environment}"
            )));
        }
        let spec = self
            .serving_release(project, environment)
            .and_then(|release| serde_json::from_value::<DeploySpec>(release.spec).ok())
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "environment {environment} serves no release: deploy it first"
                ))
            })?;
        let names = || {
            spec.apps
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let chosen = match app {
            Some(name) => spec.apps.iter().find(|a| a.name == name).ok_or_else(|| {
                Status::not_found(format!(
                    "environment {environment} has no app `{}`; its apps: {}",
                    name.escape_debug(),
                    names()
                ))
            })?,
            None if spec.apps.len() == 1 => &spec.apps[0],
            None => {
                return Err(Status::failed_precondition(format!(
                    "environment {environment} has several apps; name one: {}",
                    names()
                )));
            }
        };
        let chosen = chosen.clone();
        Ok((spec, chosen))
    }

    fn ssh_target(
        &self,
        fingerprint: &str,
        target: &Target,
        kind: ActionKind,
    ) -> Result<(Principal, ResolvedApp), String> {
        let hidden = || {
            format!(
                "project `{}` does not exist or your key has no access to it",
                target.project
            )
        };
        let who = self.console_member(fingerprint).map_err(|_| hidden())?;
        let name = principal_name(&who);
        let (spec, app) = self
            .resolve_app(
                &who,
                &target.project,
                &target.environment,
                target.app.as_deref(),
                kind,
            )
            .map_err(said)?;
        Ok((
            who,
            ResolvedApp {
                who: name,
                spec,
                app,
            },
        ))
    }

    /// Records an activity that runs outside the environment's queue (a
    /// shell does not wait for a deploy, nor hold one up).
    pub(crate) fn record_session(
        &self,
        project: &str,
        environment: &str,
        kind: ActivityKind,
        description: &str,
    ) -> Option<Activity> {
        let recorded = self.store.next_activity_id().and_then(|id| {
            let now = now_ms();
            let mut activity = Activity::new(id, project, environment, kind, description, now);
            activity.state = ActivityState::InProgress;
            activity.started_at = Some(now);
            self.store.put_activity(&activity).map(|()| activity)
        });
        match recorded {
            Ok(activity) => Some(activity),
            Err(error) => {
                warn!(%error, "cannot record a session");
                None
            }
        }
    }

    /// `launchway_ssh::Gate::start`.
    pub(crate) async fn start_shell(
        &self,
        fingerprint: &str,
        target: &Target,
        request: ProcessRequest,
    ) -> Result<Process, String> {
        let (_, resolved) = self.ssh_target(fingerprint, target, ActionKind::Shell)?;
        let ResolvedApp { who, spec, app } = resolved;
        let owner = crate::deploy::environment_key(&spec.project, &spec.environment);
        let process = main_process(&app).map_err(said)?;
        let container = self
            .running_container(&owner, &app, process)
            .await
            .ok_or_else(|| {
                format!(
                    "app {} of {} is not running; see launchway logs -p {} -e {}",
                    app.name, spec.environment, spec.project, spec.environment
                )
            })?;
        let (args, shown) = match &request.command {
            Command::Shell => (
                vec!["/bin/sh".to_owned(), "-c".into(), SHELL.into()],
                "a shell".to_owned(),
            ),
            Command::Exec(line) => (
                vec![
                    "/bin/sh".to_owned(),
                    "-c".into(),
                    COMMAND.into(),
                    "launchway-ssh".into(),
                    line.clone(),
                ],
                format!("`{}`", shown_command(line)),
            ),
        };
        let mut step = StepSpec::new(args);
        step.cwd = launchway_build::env::APP_DIR.into();
        step.env = request.env.clone();
        if let Some(pty) = &request.pty {
            step.env.push(("TERM".into(), pty.term.clone()));
        }
        let tty = request.pty.as_ref().map(|pty| PtySize {
            cols: pty.cols,
            rows: pty.rows,
        });
        let activity = self.record_session(
            &spec.project,
            &spec.environment,
            ActivityKind::Shell,
            &format!("{who} ran {shown} in app {} over SSH", app.name),
        );

        let (stdin, stdin_receiver) = mpsc::channel::<Vec<u8>>(16);
        let (control, mut client_control) = mpsc::channel::<ProcessControl>(16);
        let (output, process_output) = mpsc::channel::<ProcessOutput>(16);
        let cancel = CancellationToken::new();
        let guard = cancel.clone().drop_guard();
        let engine = self.engine.clone();
        let store = self.store.clone();
        self.tasks.spawn(async move {
            let (exec_control, exec_control_receiver) = mpsc::channel(16);
            let relay = tokio::spawn(async move {
                while let Some(message) = client_control.recv().await {
                    let message = match message {
                        ProcessControl::Resize { cols, rows } => {
                            ExecControl::Resize(PtySize { cols, rows })
                        }
                        ProcessControl::Signal(number) => ExecControl::Signal(number),
                    };
                    if exec_control.send(message).await.is_err() {
                        return;
                    }
                }
            });
            let (chunks, mut chunk_receiver) = mpsc::channel(16);
            let forward = {
                let output = output.clone();
                async move {
                    while let Some(chunk) = chunk_receiver.recv().await {
                        let chunk: launchway_containerd::OutputChunk = chunk;
                        let message = match chunk.stream {
                            OutputStream::Stdout => ProcessOutput::Stdout(chunk.bytes),
                            OutputStream::Stderr => ProcessOutput::Stderr(chunk.bytes),
                        };
                        if output.send(message).await.is_err() {
                            return;
                        }
                    }
                }
            };
            let (outcome, ()) = tokio::join!(
                engine.exec_interactive(
                    &container.id,
                    &step,
                    tty,
                    stdin_receiver,
                    exec_control_receiver,
                    chunks,
                    &cancel
                ),
                forward
            );
            relay.abort();
            let end = SessionEnd::of(&outcome);
            if let Some(error) = &end.error {
                let said = format!("launchway: the session ended: {error}\r\n");
                let _ = output.send(ProcessOutput::Stderr(said.into_bytes())).await;
            }
            let _ = output.send(ProcessOutput::Exit(end.status)).await;
            end.record(&store, activity);
        });
        Ok(Process {
            stdin,
            control,
            output: process_output,
            guard,
        })
    }

    /// `launchway_ssh::Gate::tunnel`.
    pub(crate) async fn open_tunnel(
        &self,
        fingerprint: &str,
        target: &Target,
        relationship: &str,
        port: u32,
    ) -> Result<tokio::net::TcpStream, String> {
        let (_, resolved) = self.ssh_target(fingerprint, target, ActionKind::Tunnel)?;
        let ResolvedApp { spec, app, .. } = resolved;
        let endpoints = relationship_endpoints(&app);
        let Some(&(ip, expected)) = endpoints.get(relationship) else {
            let names: Vec<&str> = endpoints.keys().map(String::as_str).collect();
            return Err(format!(
                "app {} has no relationship `{relationship}`; it has: {}",
                app.name,
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ));
        };
        if u32::from(expected) != port {
            return Err(format!(
                "relationship `{relationship}` listens on port {expected}, not {port}"
            ));
        }
        let factory = self
            .socket_factory(&spec.project, &spec.environment)
            .map_err(|error| format!("the environment's network is not reachable: {error}"))?;
        let socket = factory
            .socket()
            .await
            .map_err(|error| format!("cannot open a socket in the environment: {error}"))?;
        socket
            .connect(SocketAddr::from((ip, expected)))
            .await
            .map_err(|error| format!("`{relationship}` does not answer: {error}"))
    }
}

/// How a session's process ended, for its client and its activity.
pub(crate) struct SessionEnd {
    pub(crate) status: u32,
    result: ActivityResult,
    ended: String,
    /// Why it could not run to its end, for the client.
    pub(crate) error: Option<String>,
}

impl SessionEnd {
    pub(crate) fn of(
        outcome: &Result<launchway_containerd::StepOutcome, launchway_containerd::EngineError>,
    ) -> SessionEnd {
        match outcome {
            Ok(outcome) => SessionEnd {
                status: outcome.exit_code,
                result: if outcome.success() {
                    ActivityResult::Success
                } else {
                    ActivityResult::Failure
                },
                ended: outcome.describe(),
                error: None,
            },
            Err(launchway_containerd::EngineError::Cancelled) => SessionEnd {
                status: 255,
                result: ActivityResult::Failure,
                ended: "ended: the client went away".to_owned(),
                error: None,
            },
            Err(error) => SessionEnd {
                status: 255,
                result: ActivityResult::Failure,
                ended: format!("failed: {error}"),
                error: Some(error.to_string()),
            },
        }
    }

    /// Completes the session's activity with how it ended.
    pub(crate) fn record(&self, store: &launchway_store::Store, activity: Option<Activity>) {
        let Some(mut activity) = activity else {
            return;
        };
        activity.state = ActivityState::Complete;
        activity.result = Some(self.result);
        activity.completed_at = Some(now_ms());
        activity.description = format!("{} ({})", activity.description, self.ended);
        if let Err(error) = store.put_activity(&activity) {
            warn!(%error, "cannot record the end of a session");
        }
    }
}

/// A command line as activities record it: at most 200 characters, the
/// values of `NAME=value` words and of options that look secret hidden
/// (`PGPASSWORD=… psql`), since viewers read activities.
pub(crate) fn shown_command(line: &str) -> String {
    let hidden: Vec<String> = line
        .split_whitespace()
        .map(|word| match word.split_once('=') {
            Some((name, _))
                if is_variable_name(name) || {
                    let name = name.to_ascii_lowercase();
                    ["pass", "secret", "token", "key"]
                        .iter()
                        .any(|needle| name.contains(needle))
                } =>
            {
                format!("{name}=…")
            }
            _ => word.to_owned(),
        })
        .collect();
    let joined = hidden.join(" ");
    match joined.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &joined[..end]),
        None => joined,
    }
}

fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Who a principal is, for records.
pub(crate) fn principal_name(who: &Principal) -> String {
    match who {
        Principal::Operator => "the operator".to_owned(),
        Principal::Token { id, .. } => format!("token {id}"),
        Principal::Member { name, .. } => name.clone(),
    }
}

/// The process a shell or a command joins: the web one, else the first.
pub(crate) fn main_process(app: &AppSpec) -> Result<&ProcessSpec, Status> {
    app.processes
        .iter()
        .find(|p| p.web)
        .or_else(|| app.processes.first())
        .ok_or_else(|| Status::failed_precondition(format!("app {} runs no process", app.name)))
}

/// Each relationship of `app` with its address and port.
pub(crate) fn relationship_endpoints(app: &AppSpec) -> BTreeMap<String, (Ipv4Addr, u16)> {
    use base64::Engine as _;
    let Some((_, encoded)) = app
        .env
        .iter()
        .find(|(key, _)| key == "PLATFORM_RELATIONSHIPS")
    else {
        return BTreeMap::new();
    };
    let Some(relationships) = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| {
            serde_json::from_slice::<BTreeMap<String, Vec<serde_json::Value>>>(&bytes).ok()
        })
    else {
        return BTreeMap::new();
    };
    relationships
        .into_iter()
        .filter_map(|(name, entries)| {
            let entry = entries.first()?;
            let ip = entry.get("ip")?.as_str()?.parse().ok()?;
            let port = u16::try_from(entry.get("port")?.as_u64()?).ok()?;
            Some((name, (ip, port)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_commands_hide_assigned_values() {
        assert_eq!(
            shown_command("PGPASSWORD=s3cret psql -c 'SELECT 1'"),
            "PGPASSWORD=… psql -c 'SELECT 1'"
        );
        assert_eq!(
            shown_command("mysql --password=hunter2 --host=db"),
            "mysql --password=… --host=db"
        );
        assert_eq!(
            shown_command("php bin/console cache:clear"),
            "php bin/console cache:clear"
        );
        let long = "x".repeat(300);
        assert_eq!(shown_command(&long).chars().count(), 201);
    }
}
