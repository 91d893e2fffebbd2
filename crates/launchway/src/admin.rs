//! `launchway serve` and the admin commands, which talk to the daemon over its
//! unix socket.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::Subcommand;
use launchway_api::proto;
use launchway_daemon::Settings;

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectCommand {
    /// Create a project and print its git remote.
    Create {
        /// Lowercase letters, digits and `-`.
        name: String,
        /// The branch of the production environment.
        #[arg(long, default_value = "main")]
        default_branch: String,
    },
    /// List projects.
    List,
    /// Show a project and its settings.
    Get {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
    },
    /// Change project settings: `build.egress=registries` lets build hooks
    /// reach the package registries of the daemon's allow-list.
    Set {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// `KEY=VALUE`, one or more.
        #[arg(required = true)]
        settings: Vec<String>,
    },
    /// Delete a project and everything of it: environments, containers,
    /// data, backups, repository, history (host operators only).
    Delete {
        /// The project.
        name: String,
        /// Confirm: nothing of the project can be recovered afterwards.
        #[arg(long)]
        yes: bool,
    },
    /// Empty the persistent build cache (`$PLATFORM_CACHE_DIR`) of a project.
    ClearBuildCache {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// Only this app's cache.
        #[arg(long)]
        app: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Grant an SSH public key a role on a project.
    Add {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// admin, contributor or viewer.
        #[arg(long, short = 'r')]
        role: String,
        /// The `.pub` file (`-` for stdin).
        file: std::path::PathBuf,
    },
    /// List keys and their roles.
    List {
        /// Only this project.
        #[arg(long, short = 'p')]
        project: Option<String>,
    },
    /// Revoke a key on a project.
    Remove {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// A fingerprint (`SHA256:…`) or a `.pub` file.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ActivityCommand {
    /// Print an activity's log.
    Log {
        /// The activity's id.
        id: u64,
    },
    /// Cancel a pending or running activity (an activity number or a build id).
    Cancel {
        /// The activity's number or the build's id.
        id: String,
    },
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs `body` with a client of the daemon named by the settings.
pub(crate) fn with_client<T>(
    settings_path: Option<&Path>,
    body: impl AsyncFnOnce(
        &mut launchway_api::LaunchwayClient<tonic::transport::Channel>,
    ) -> Result<T, tonic::Status>,
) -> anyhow::Result<T> {
    let remote = crate::remote::remote(settings_path)?;
    let settings = match remote {
        Some(_) => None,
        None => Some(Settings::load(settings_path)?),
    };
    runtime()?.block_on(async {
        let mut client = match (&remote, &settings) {
            (Some(remote), _) => launchway_http::connect(remote)
                .await
                .map_err(|e| anyhow::anyhow!(e))?,
            (None, Some(settings)) => launchway_api::connect(&settings.socket_path()).await?,
            (None, None) => anyhow::bail!("no daemon to talk to"),
        };
        body(&mut client)
            .await
            .map_err(|status| anyhow::anyhow!("{}", status.message()))
    })
}

pub(crate) fn serve(settings_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(settings_path)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // The daemon's activities are deep futures (an activity builds a
    // runtime image inside a build inside a push); unoptimized builds keep
    // large frames while polling them, more than tokio's 2 MiB default.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(16 << 20)
        .build()?
        .block_on(launchway_daemon::serve(settings, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the daemon runs until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Prints one record as `Label        value` lines.
pub(crate) fn print_fields(fields: &[(&str, String)]) {
    for (label, value) in fields {
        println!("{label:<12} {value}");
    }
}

/// Prints the log of an activity stream (`StartBuild`, `Deploy`, …) to
/// stderr as it comes; true when an activity failed (or the stream ended
/// without saying).
pub(crate) async fn follow_activities(
    mut stream: tonic::Streaming<proto::LogChunk>,
) -> Result<bool, tonic::Status> {
    use std::io::Write as _;
    let mut failed = true;
    while let Some(chunk) = stream.message().await? {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(chunk.text.as_bytes());
        let _ = err.flush();
        if chunk.done {
            failed = chunk.failed;
        }
    }
    Ok(failed)
}

/// The exit code of a command that ran activities.
pub(crate) fn exit_code(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints rows as columns separated by two spaces.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let mut text = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                text.push_str(&cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        println!("{}", text.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub(crate) fn time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub(crate) fn project(
    settings_path: Option<&Path>,
    command: ProjectCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        ProjectCommand::Create {
            name,
            default_branch,
        } => {
            let project = with_client(settings_path, async |client| {
                Ok(client
                    .create_project(proto::CreateProjectRequest {
                        name,
                        default_branch,
                    })
                    .await?
                    .into_inner())
            })?;
            eprintln!(
                "Created project {} (default branch {})",
                project.name, project.default_branch
            );
            println!("{}", project.git_remote);
        }
        ProjectCommand::Delete { name, yes } => {
            if !yes {
                anyhow::bail!(
                    "this deletes project {name} for good: its environments and their data, its backups, its repository and its history; run `launchway project delete {name} --yes` to go ahead"
                );
            }
            let failed = with_client(settings_path, async |client| {
                let stream = client
                    .delete_project(proto::DeleteProjectRequest { project: name })
                    .await?
                    .into_inner();
                follow_activities(stream).await
            })?;
            return Ok(exit_code(failed));
        }
        ProjectCommand::Get { project } => {
            let info = with_client(settings_path, async |client| {
                Ok(client
                    .get_project(proto::GetProjectRequest { project })
                    .await?
                    .into_inner())
            })?;
            print_project(&info);
        }
        ProjectCommand::Set { project, settings } => {
            let mut changes = Vec::new();
            for setting in &settings {
                let Some((key, value)) = setting.split_once('=') else {
                    anyhow::bail!("`{setting}` is not KEY=VALUE (e.g. build.egress=registries)");
                };
                changes.push((key.to_owned(), value.to_owned()));
            }
            let info = with_client(settings_path, async |client| {
                let mut last = None;
                for (key, value) in changes {
                    last = Some(
                        client
                            .set_project_setting(proto::SetProjectSettingRequest {
                                project: project.clone(),
                                key,
                                value,
                            })
                            .await?
                            .into_inner(),
                    );
                }
                Ok(last)
            })?;
            if let Some(info) = info {
                print_project(&info);
            }
        }
        ProjectCommand::ClearBuildCache { project, app } => {
            return crate::builds::clear_build_cache(settings_path, project, app);
        }
        ProjectCommand::List => {
            let list = with_client(settings_path, async |client| {
                Ok(client
                    .list_projects(proto::ListProjectsRequest {})
                    .await?
                    .into_inner())
            })?;
            let rows: Vec<Vec<String>> = list
                .projects
                .into_iter()
                .map(|p| vec![p.name, p.default_branch, p.git_remote])
                .collect();
            print_table(&["NAME", "DEFAULT BRANCH", "GIT REMOTE"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_project(info: &proto::ProjectInfo) {
    let mut fields = vec![
        ("Name", info.name.clone()),
        ("Branch", info.default_branch.clone()),
        ("Git remote", info.git_remote.clone()),
    ];
    let mut settings: Vec<(&String, &String)> = info.settings.iter().collect();
    settings.sort();
    fields.extend(settings.into_iter().map(|(k, v)| (k.as_str(), v.clone())));
    print_fields(&fields);
}

pub(crate) fn keys(settings_path: Option<&Path>, command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Add {
            project,
            role,
            file,
        } => {
            let public_key = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                read_key_file(&file)?
            };
            let key = with_client(settings_path, async |client| {
                Ok(client
                    .add_key(proto::AddKeyRequest {
                        project,
                        role,
                        public_key,
                    })
                    .await?
                    .into_inner())
            })?;
            println!(
                "Granted {} on {} to {} {}",
                key.role, key.project, key.fingerprint, key.comment
            );
        }
        KeysCommand::List { project } => {
            let list = with_client(settings_path, async |client| {
                Ok(client
                    .list_keys(proto::ListKeysRequest {
                        project: project.unwrap_or_default(),
                    })
                    .await?
                    .into_inner())
            })?;
            let rows: Vec<Vec<String>> = list
                .keys
                .into_iter()
                .map(|k| vec![k.project, k.role, k.fingerprint, k.comment])
                .collect();
            print_table(&["PROJECT", "ROLE", "FINGERPRINT", "COMMENT"], &rows);
        }
        KeysCommand::Remove { project, key } => {
            let key = if key.starts_with("SHA256:") {
                key
            } else {
                read_key_file(Path::new(&key))?
            };
            let reply = with_client(settings_path, async |client| {
                Ok(client
                    .remove_key(proto::RemoveKeyRequest { project, key })
                    .await?
                    .into_inner())
            })?;
            if !reply.removed {
                eprintln!("error: that key has no access to the project");
                return Ok(ExitCode::from(1));
            }
            println!("Removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a `.pub` file, refusing anything larger than a public key can be.
fn read_key_file(path: &Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if meta.len() > 16 * 1024 {
        anyhow::bail!("{} is too large to be a public key", path.display());
    }
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

pub(crate) fn plan(
    settings_path: Option<&Path>,
    project: &str,
    reference: &str,
) -> anyhow::Result<ExitCode> {
    let (project, reference) = (project.to_owned(), reference.to_owned());
    let plan = with_client(settings_path, async |client| {
        Ok(client
            .plan(proto::PlanRequest {
                project,
                r#ref: reference,
            })
            .await?
            .into_inner())
    })?;
    println!("commit {}", plan.commit);
    let rows: Vec<Vec<String>> = plan
        .apps
        .into_iter()
        .map(|a| {
            let root = if a.source_root.is_empty() {
                "/".into()
            } else {
                a.source_root
            };
            let key = if a.build_key.is_empty() {
                "(runtime image not built yet)".to_owned()
            } else {
                a.build_key
            };
            vec![a.name, a.runtime, root, a.tree_id, key]
        })
        .collect();
    print_table(
        &["APP", "RUNTIME", "SOURCE ROOT", "TREE", "BUILD KEY"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn activities(
    settings_path: Option<&Path>,
    project: Option<String>,
    environment: Option<String>,
    page: crate::Page,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let list = with_client(settings_path, async |client| {
        Ok(client
            .list_activities(proto::ListActivitiesRequest {
                project: project.unwrap_or_default(),
                environment: environment.unwrap_or_default(),
                limit: page.limit,
                cursor: page.cursor.clone(),
            })
            .await?
            .into_inner())
    })?;
    if json {
        let activities: Vec<serde_json::Value> = list
            .activities
            .iter()
            .map(|a| {
                serde_json::json!({
                    "id": a.id,
                    "project": a.project,
                    "environment": a.environment,
                    "type": a.r#type,
                    "description": a.description,
                    "state": a.state,
                    "result": (!a.result.is_empty()).then_some(&a.result),
                    "created_at": a.created_at,
                    "started_at": (a.started_at > 0).then_some(a.started_at),
                    "completed_at": (a.completed_at > 0).then_some(a.completed_at),
                    "timings_ms": a.timings_ms,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&activities)?);
        page.hint_next(&list.next_cursor);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .activities
        .into_iter()
        .map(|a| {
            let elapsed = if a.completed_at >= a.started_at && a.started_at > 0 {
                format!("{:.1}s", (a.completed_at - a.started_at) as f64 / 1000.0)
            } else {
                "-".into()
            };
            let result = if a.result.is_empty() {
                "-".into()
            } else {
                a.result
            };
            vec![
                a.id.to_string(),
                a.state,
                result,
                a.environment,
                time(a.started_at),
                elapsed,
                a.description,
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "STATE",
            "RESULT",
            "ENVIRONMENT",
            "STARTED",
            "ELAPSED",
            "DESCRIPTION",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn activity(
    settings_path: Option<&Path>,
    command: ActivityCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        ActivityCommand::Log { id } => {
            let reply = with_client(settings_path, async |client| {
                Ok(client
                    .activity_log(proto::ActivityLogRequest { id })
                    .await?
                    .into_inner())
            })?;
            print!("{}", reply.log);
            Ok(ExitCode::SUCCESS)
        }
        ActivityCommand::Cancel { id } => crate::builds::cancel(settings_path, id),
    }
}
