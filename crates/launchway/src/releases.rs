//! `launchway releases`: what each deploy ran.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use launchway_api::proto;

use crate::admin::{print_fields, print_table, time, with_client};

#[derive(Debug, Subcommand)]
pub(crate) enum ReleasesCommand {
    /// Show one release: its build, apps, routes and variables.
    Info {
        /// The release id (`R…`).
        id: String,
    },
    /// Deploy a release again, with no build: a rollback, or a promotion.
    Promote {
        /// The release id (`R…`).
        id: String,
    },
}

/// `launchway releases -p P [-e ENV]` and `launchway releases info ID`.
pub(crate) fn releases(
    settings_path: Option<&Path>,
    project: Option<String>,
    environment: Option<String>,
    page: crate::Page,
    command: Option<ReleasesCommand>,
) -> anyhow::Result<ExitCode> {
    match command {
        None => {
            let project = project.ok_or_else(|| {
                anyhow::anyhow!("name the project: launchway releases -p PROJECT")
            })?;
            let list = with_client(settings_path, async |client| {
                Ok(client
                    .list_releases(proto::ListReleasesRequest {
                        project: project.clone(),
                        environment: environment.clone().unwrap_or_default(),
                        limit: page.limit,
                        cursor: page.cursor.clone(),
                    })
                    .await?
                    .into_inner())
            })?;
            let rows: Vec<Vec<String>> = list
                .releases
                .iter()
                .map(|release| {
                    vec![
                        release.id.clone(),
                        release.environment.clone(),
                        if release.status == "active" {
                            "active *".into()
                        } else {
                            release.status.clone()
                        },
                        release.build.clone(),
                        time(release.created_at),
                        release.description.clone(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "ENVIRONMENT",
                    "STATUS",
                    "BUILD",
                    "CREATED",
                    "DESCRIPTION",
                ],
                &rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(ReleasesCommand::Info { id }) => {
            let release = with_client(settings_path, async |client| {
                Ok(client
                    .get_release(proto::GetReleaseRequest { id: id.clone() })
                    .await?
                    .into_inner())
            })?;
            print_fields(&[
                ("Id", release.id.clone()),
                ("Project", release.project.clone()),
                ("Environment", release.environment.clone()),
                ("Status", release.status.clone()),
                ("Build", release.build.clone()),
                ("Commit", release.commit.clone()),
                ("Created", time(release.created_at)),
                ("Description", release.description.clone()),
                ("Activity", release.activity.to_string()),
            ]);
            let rows: Vec<Vec<String>> = release
                .apps
                .iter()
                .map(|app| {
                    vec![
                        app.name.clone(),
                        app.runtime.clone(),
                        app.listen.clone(),
                        app.processes.join(","),
                        app.image.clone(),
                    ]
                })
                .collect();
            print_table(&["APP", "RUNTIME", "LISTENS", "PROCESSES", "IMAGE"], &rows);
            for route in &release.routes {
                println!("route {route}");
            }
            for variable in &release.variables {
                let mut seen = Vec::new();
                if variable.visible_build {
                    seen.push("build");
                }
                if variable.visible_runtime {
                    seen.push("runtime");
                }
                if variable.sensitive {
                    seen.push("sensitive");
                }
                println!(
                    "variable {} ({}; {})",
                    variable.name,
                    variable.level,
                    seen.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(ReleasesCommand::Promote { id }) => crate::environments::promote(settings_path, id),
    }
}
