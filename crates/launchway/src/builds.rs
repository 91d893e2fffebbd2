//! `launchway builds …`, `launchway build`, `activity cancel`,
//! `project clear-build-cache` and `gc`.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use launchway_api::proto;

use crate::admin::{exit_code, follow_activities, print_fields, print_table, time, with_client};

#[derive(Debug, Subcommand)]
pub(crate) enum BuildsCommand {
    /// Show one build: its apps, keys and images.
    Info {
        /// The build id (`B…`).
        id: String,
    },
    /// Print a build's log.
    Logs {
        /// The build id.
        id: String,
        /// Keep printing until the build ends.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Write a build (record and images) to stdout as a gzip'd OCI archive.
    Export {
        /// The build id.
        id: String,
    },
    /// Read a build archive from stdin into a project (`-p`) as a new build.
    Import,
}

fn elapsed(build: &proto::BuildInfo) -> String {
    if build.status == "running" {
        return "-".into();
    }
    format!("{:.1}s", build.elapsed_ms as f64 / 1000.0)
}

fn short(text: &str, n: usize) -> String {
    let text = text.strip_prefix("sha256:").unwrap_or(text);
    if text.is_empty() {
        "-".into()
    } else {
        text.chars().take(n).collect()
    }
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_owned()
    }
}

fn need_project(project: Option<String>) -> anyhow::Result<String> {
    project.ok_or_else(|| anyhow::anyhow!("say which project with -p PROJECT"))
}

/// `launchway builds [-p P] [COMMAND]`.
pub(crate) fn builds(
    settings_path: Option<&Path>,
    project: Option<String>,
    page: crate::Page,
    command: Option<BuildsCommand>,
) -> anyhow::Result<ExitCode> {
    match command {
        None => {
            let project = need_project(project)?;
            let list = with_client(settings_path, async |client| {
                Ok(client
                    .list_builds(proto::ListBuildsRequest {
                        project: project.clone(),
                        limit: page.limit,
                        cursor: page.cursor.clone(),
                    })
                    .await?
                    .into_inner())
            })?;
            let rows: Vec<Vec<String>> = list
                .builds
                .iter()
                .map(|build| {
                    vec![
                        build.id.clone(),
                        build.status.clone(),
                        or_dash(&build.release),
                        time(build.started_at),
                        elapsed(build),
                        build.description.clone(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "STATUS",
                    "RELEASE",
                    "STARTED",
                    "ELAPSED",
                    "DESCRIPTION",
                ],
                &rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(BuildsCommand::Info { id }) => {
            let build = with_client(settings_path, async |client| {
                Ok(client
                    .get_build(proto::GetBuildRequest { id: id.clone() })
                    .await?
                    .into_inner())
            })?;
            let mut fields = vec![
                ("Id", build.id.clone()),
                ("Project", build.project.clone()),
                ("Environment", build.environment.clone()),
                ("Commit", build.commit.clone()),
                ("Status", build.status.clone()),
                ("Release", or_dash(&build.release)),
                ("Started", time(build.started_at)),
                (
                    "Elapsed",
                    if build.status == "running" {
                        "-".to_owned()
                    } else {
                        format!("{:.3}s", build.elapsed_ms as f64 / 1000.0)
                    },
                ),
                ("Description", build.description.clone()),
            ];
            if build.activity > 0 {
                fields.push(("Activity", build.activity.to_string()));
            }
            if !build.imported_from.is_empty() {
                fields.push(("Imported", format!("from build {}", build.imported_from)));
            }
            print_fields(&fields);
            println!();
            let rows: Vec<Vec<String>> = build
                .apps
                .iter()
                .map(|app| {
                    vec![
                        app.name.clone(),
                        if app.resolved_runtime.is_empty() {
                            app.runtime.clone()
                        } else {
                            format!("{} (asked {})", app.resolved_runtime, app.runtime)
                        },
                        short(&app.tree_id, 7),
                        short(&app.build_key, 12),
                        or_dash(&app.digest),
                        if !app.reused_from.is_empty() {
                            format!("reused from {}", app.reused_from)
                        } else if !app.built_on.is_empty() {
                            format!("on {}", app.built_on)
                        } else {
                            "-".to_owned()
                        },
                    ]
                })
                .collect();
            print_table(&["APP", "RUNTIME", "TREE", "KEY", "IMAGE", "BUILT"], &rows);
            let egress: Vec<Vec<String>> = build
                .apps
                .iter()
                .flat_map(|app| {
                    app.egress.iter().map(|traffic| {
                        vec![
                            app.name.clone(),
                            traffic.destination.clone(),
                            traffic.connections.to_string(),
                            traffic.refused.to_string(),
                            crate::environments::human_bytes(traffic.sent),
                            crate::environments::human_bytes(traffic.received),
                        ]
                    })
                })
                .collect();
            if !egress.is_empty() {
                println!();
                print_table(
                    &[
                        "APP",
                        "HOOK REACHED",
                        "CONNECTIONS",
                        "REFUSED",
                        "SENT",
                        "RECEIVED",
                    ],
                    &egress,
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(BuildsCommand::Logs { id, follow }) => {
            with_client(settings_path, async |client| {
                let mut stream = client
                    .build_logs(proto::BuildLogsRequest {
                        id: id.clone(),
                        follow,
                    })
                    .await?
                    .into_inner();
                print_chunks(&mut stream).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Some(BuildsCommand::Export { id }) => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                anyhow::bail!(
                    "the export is binary; redirect it: launchway builds export {id} > build.tgz"
                );
            }
            let mut encoder =
                flate2::write::GzEncoder::new(stdout.lock(), flate2::Compression::fast());
            with_client(settings_path, async |client| {
                let mut stream = client
                    .export_build(proto::ExportBuildRequest { id: id.clone() })
                    .await?
                    .into_inner();
                while let Some(chunk) = stream.message().await? {
                    encoder
                        .write_all(&chunk.data)
                        .map_err(|e| tonic::Status::aborted(format!("writing stdout: {e}")))?;
                }
                Ok(())
            })?;
            encoder.finish()?.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Some(BuildsCommand::Import) => {
            let project = need_project(project)?;
            let receiver = stdin_chunks(project);
            let build = with_client(settings_path, async |client| {
                Ok(client
                    .import_build(tokio_stream::wrappers::ReceiverStream::new(receiver))
                    .await?
                    .into_inner())
            })?;
            println!(
                "{} imported from build {} ({} apps)",
                build.id,
                build.imported_from,
                build.apps.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `launchway build -p P [--ref BRANCH]`: builds without deploying.
pub(crate) fn build(
    settings_path: Option<&Path>,
    project: String,
    branch: Option<String>,
) -> anyhow::Result<ExitCode> {
    let failed = with_client(settings_path, async |client| {
        let stream = client
            .start_build(proto::StartBuildRequest {
                project: project.clone(),
                branch: branch.clone().unwrap_or_default(),
            })
            .await?
            .into_inner();
        follow_activities(stream).await
    })?;
    Ok(exit_code(failed))
}

/// `launchway activity cancel ID`.
pub(crate) fn cancel(settings_path: Option<&Path>, id: String) -> anyhow::Result<ExitCode> {
    let reply = with_client(settings_path, async |client| {
        Ok(client
            .cancel_activity(proto::CancelActivityRequest { id: id.clone() })
            .await?
            .into_inner())
    })?;
    println!(
        "Activity {} ({}) is being cancelled",
        reply.activity, reply.state
    );
    Ok(ExitCode::SUCCESS)
}

/// `launchway project clear-build-cache -p P [--app A]`.
pub(crate) fn clear_build_cache(
    settings_path: Option<&Path>,
    project: String,
    app: Option<String>,
) -> anyhow::Result<ExitCode> {
    let reply = with_client(settings_path, async |client| {
        Ok(client
            .clear_build_cache(proto::ClearBuildCacheRequest {
                project: project.clone(),
                app: app.clone().unwrap_or_default(),
            })
            .await?
            .into_inner())
    })?;
    if reply.cleared.is_empty() {
        println!("The build cache of {project} was already empty");
    } else {
        println!("Cleared the build cache of {}", reply.cleared.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// `launchway gc`.
pub(crate) fn gc(settings_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let reply = with_client(settings_path, async |client| {
        Ok(client
            .collect_garbage(proto::CollectGarbageRequest {})
            .await?
            .into_inner())
    })?;
    for name in &reply.removed {
        println!("removed {name}");
    }
    println!(
        "{} images removed, {} kept",
        reply.removed.len(),
        reply.kept
    );
    Ok(ExitCode::SUCCESS)
}

/// `launchway logs`.
pub(crate) fn app_logs(
    settings_path: Option<&Path>,
    request: proto::AppLogsRequest,
) -> anyhow::Result<ExitCode> {
    with_client(settings_path, async |client| {
        let mut stream = client.app_logs(request).await?.into_inner();
        print_chunks(&mut stream).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Copies a stream of log chunks to stdout as they come.
async fn print_chunks(stream: &mut tonic::Streaming<proto::LogChunk>) -> Result<(), tonic::Status> {
    while let Some(chunk) = stream.message().await? {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(chunk.text.as_bytes());
        let _ = out.flush();
    }
    Ok(())
}

/// Standard input as import chunks on their own thread; the first names
/// the project (sent even when stdin is empty).
pub(crate) fn stdin_chunks(
    project: String,
) -> tokio::sync::mpsc::Receiver<proto::ImportBuildChunk> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<proto::ImportBuildChunk>(8);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut first = true;
        loop {
            let mut buffer = vec![0u8; 256 * 1024];
            let read = match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            buffer.truncate(read);
            let chunk = proto::ImportBuildChunk {
                project: if first {
                    project.clone()
                } else {
                    String::new()
                },
                data: buffer,
            };
            first = false;
            if sender.blocking_send(chunk).is_err() {
                break;
            }
        }
        if first {
            let _ = sender.blocking_send(proto::ImportBuildChunk {
                project,
                data: Vec::new(),
            });
        }
    });
    receiver
}
