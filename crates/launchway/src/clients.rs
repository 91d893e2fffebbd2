//! `launchway sql`, `launchway db dump`, `launchway redis`: a service's own
//! client, run by the daemon in the service's container with a
//! relationship's credentials. Stdin goes to the client, its output comes
//! back as written, and its exit code is this command's.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use launchway_api::proto;
use launchway_api::proto::service_client_input::Input;
use launchway_api::proto::service_client_output::Output;
use tokio::io::AsyncReadExt as _;

use crate::admin::with_client;

/// Which relationship of which environment.
#[derive(Args, Debug)]
pub(crate) struct Target {
    /// The project.
    #[arg(long, short = 'p')]
    project: String,
    /// The environment.
    #[arg(long, short = 'e')]
    environment: String,
    /// The app whose relationship to use (default: any app that has it).
    #[arg(long, short = 'A')]
    app: Option<String>,
    /// The relationship (default: the only one that fits).
    #[arg(long, short = 'r')]
    relationship: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum DbCommand {
    /// Write an SQL dump of the relationship's database to stdout
    /// (pg_dump or mariadb-dump; load it back with `launchway sql`).
    Dump {
        #[command(flatten)]
        target: Target,
    },
}

/// What to run.
pub(crate) enum Mode {
    Sql(Option<String>),
    Dump,
    Redis(Vec<String>),
}

/// Runs the client and relays stdin, stdout, stderr and the exit code.
pub(crate) fn run(
    settings_path: Option<&Path>,
    target: Target,
    mode: Mode,
) -> anyhow::Result<ExitCode> {
    let reads_stdin = match &mode {
        Mode::Sql(command) => command.is_none(),
        Mode::Dump => false,
        Mode::Redis(args) => args.is_empty(),
    };
    let (mode_name, command, args) = match mode {
        Mode::Sql(command) => ("sql", command, Vec::new()),
        Mode::Dump => ("dump", None, Vec::new()),
        Mode::Redis(args) => ("redis", None, args),
    };
    let start = proto::ServiceClientRequest {
        project: target.project,
        environment: target.environment,
        app: target.app.unwrap_or_default(),
        relationship: target.relationship.unwrap_or_default(),
        mode: mode_name.to_owned(),
        command,
        args,
    };
    let code = with_client(settings_path, async |client| {
        let (inputs, input_receiver) = tokio::sync::mpsc::channel(4);
        let first = proto::ServiceClientInput {
            input: Some(Input::Start(start)),
        };
        if inputs.send(first).await.is_err() {
            return Err(tonic::Status::internal("the request could not be queued"));
        }
        let feeder = tokio::spawn(async move {
            if !reads_stdin {
                return;
            }
            let mut stdin = tokio::io::stdin();
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match stdin.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => {
                        let message = proto::ServiceClientInput {
                            input: Some(Input::Stdin(buffer[..read].to_vec())),
                        };
                        if inputs.send(message).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let outputs = client
            .service_client(tokio_stream::wrappers::ReceiverStream::new(input_receiver))
            .await?
            .into_inner();
        let code = relay_output(outputs).await;
        feeder.abort();
        code
    })?;
    Ok(exit_code(code))
}

/// Writes a remote process's output to stdout and stderr as it comes;
/// returns its exit code (`None` if the stream ended without one).
pub(crate) async fn relay_output(
    mut outputs: tonic::Streaming<proto::ServiceClientOutput>,
) -> Result<Option<i32>, tonic::Status> {
    let mut code = None;
    while let Some(message) = outputs.message().await? {
        match message.output {
            Some(Output::Stdout(bytes)) => {
                let mut out = std::io::stdout().lock();
                if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                    // Nobody reads (`| head`): stop, which kills the process.
                    break;
                }
            }
            Some(Output::Stderr(bytes)) => {
                let _ = std::io::stderr().write_all(&bytes);
            }
            Some(Output::ExitCode(exit)) => code = Some(exit),
            None => {}
        }
    }
    Ok(code)
}

/// This command's exit code for a remote process's.
pub(crate) fn exit_code(code: Option<i32>) -> ExitCode {
    match code {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)),
        None => ExitCode::FAILURE,
    }
}
