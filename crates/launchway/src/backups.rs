//! `launchway backups` and `launchway backup …`: take, list, restore,
//! delete, export and import backups of an environment's data.

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use launchway_api::proto;

use crate::admin::{exit_code, follow_activities, print_table, time, with_client};
use crate::environments::human_bytes;

#[derive(Debug, Subcommand)]
pub(crate) enum BackupCommand {
    /// Back up an environment's mounts and services (paused for the last
    /// pass of the copy; the log says how long).
    Create {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The environment.
        #[arg(long, short = 'e')]
        environment: String,
        /// Do not pause the environment (refused when a service's files
        /// cannot be copied running: databases).
        #[arg(long)]
        live: bool,
    },
    /// Put a backup's data back (requests held meanwhile) and deploy its
    /// release again.
    Restore {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The backup id (`S…`).
        id: String,
        /// Restore into this environment instead (its code stays).
        #[arg(long)]
        to_environment: Option<String>,
        /// Put back the data only; the serving code stays.
        #[arg(long)]
        no_code: bool,
    },
    /// Delete a backup.
    Delete {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The backup id.
        id: String,
    },
    /// Write a backup to stdout as a zstd-compressed tar with digests.
    Export {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The backup id.
        id: String,
    },
    /// Read an exported backup from stdin into a project (refused whole
    /// when damaged).
    Import {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
    },
}

/// `launchway backups -p P [-e E]`.
pub(crate) fn list(
    settings_path: Option<&Path>,
    project: String,
    environment: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let list = with_client(settings_path, async |client| {
        Ok(client
            .list_backups(proto::ListBackupsRequest {
                project: project.clone(),
                environment: environment.clone().unwrap_or_default(),
            })
            .await?
            .into_inner())
    })?;
    if json {
        let backups: Vec<serde_json::Value> = list
            .backups
            .iter()
            .map(|b| {
                serde_json::json!({
                    "id": b.id,
                    "environment": b.environment,
                    "created_at": b.created_at,
                    "size_bytes": b.size_bytes,
                    "release": b.release,
                    "commit": b.commit,
                    "live": b.live,
                    "paused_ms": b.paused_ms,
                    "scheduled": b.scheduled,
                    "status": b.status,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&backups)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .backups
        .iter()
        .map(|b| {
            let mut how = Vec::new();
            if b.live {
                how.push("live".to_owned());
            } else {
                how.push(format!("paused {} ms", b.paused_ms));
            }
            if b.scheduled {
                how.push("scheduled".to_owned());
            }
            if b.status != "complete" {
                how.push(b.status.to_uppercase());
            }
            vec![
                b.id.clone(),
                b.environment.clone(),
                time(b.created_at),
                human_bytes(b.size_bytes),
                if b.release.is_empty() {
                    "-".into()
                } else {
                    b.release.clone()
                },
                how.join(", "),
            ]
        })
        .collect();
    print_table(
        &["ID", "ENVIRONMENT", "CREATED", "SIZE", "RELEASE", "TAKEN"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// `launchway backup …`.
pub(crate) fn backup(
    settings_path: Option<&Path>,
    command: BackupCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        BackupCommand::Create {
            project,
            environment,
            live,
        } => {
            let failed = with_client(settings_path, async |client| {
                let stream = client
                    .create_backup(proto::CreateBackupRequest {
                        project: project.clone(),
                        environment: environment.clone(),
                        live,
                    })
                    .await?
                    .into_inner();
                follow_activities(stream).await
            })?;
            Ok(exit_code(failed))
        }
        BackupCommand::Restore {
            project,
            id,
            to_environment,
            no_code,
        } => {
            let failed = with_client(settings_path, async |client| {
                let stream = client
                    .restore_backup(proto::RestoreBackupRequest {
                        project: project.clone(),
                        id: id.clone(),
                        to_environment: to_environment.clone().unwrap_or_default(),
                        no_code,
                    })
                    .await?
                    .into_inner();
                follow_activities(stream).await
            })?;
            Ok(exit_code(failed))
        }
        BackupCommand::Delete { project, id } => {
            with_client(settings_path, async |client| {
                client
                    .delete_backup(proto::BackupRequest {
                        project: project.clone(),
                        id: id.clone(),
                    })
                    .await?;
                Ok(())
            })?;
            println!("Backup {id} deleted");
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Export { project, id } => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                anyhow::bail!(
                    "the export is binary; redirect it: launchway backup export -p {project} {id} > backup.tar.zst"
                );
            }
            let mut out = stdout.lock();
            with_client(settings_path, async |client| {
                let mut stream = client
                    .export_backup(proto::BackupRequest {
                        project: project.clone(),
                        id: id.clone(),
                    })
                    .await?
                    .into_inner();
                while let Some(chunk) = stream.message().await? {
                    out.write_all(&chunk.data)
                        .map_err(|e| tonic::Status::aborted(format!("writing stdout: {e}")))?;
                }
                Ok(())
            })?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Import { project } => {
            let receiver = crate::builds::stdin_chunks(project.clone());
            let backup = with_client(settings_path, async |client| {
                Ok(client
                    .import_backup(tokio_stream::wrappers::ReceiverStream::new(receiver))
                    .await?
                    .into_inner())
            })?;
            println!(
                "{} imported into {project} (taken from {} at {}; {})",
                backup.id,
                backup.environment,
                time(backup.created_at),
                human_bytes(backup.size_bytes)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
