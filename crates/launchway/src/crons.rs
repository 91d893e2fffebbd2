//! `launchway crons` and `launchway cron run`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use launchway_api::proto;

use crate::admin::{exit_code, follow_activities, print_table, time, with_client};

/// `launchway cron …`.
#[derive(Debug, Subcommand)]
pub(crate) enum CronCommand {
    /// Run a cron now, in the serving release, and print its log.
    Run {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The environment.
        #[arg(long, short = 'e')]
        environment: String,
        /// The app, when several have a cron of that name.
        #[arg(long)]
        app: Option<String>,
        /// The cron's name.
        name: String,
    },
}

/// `launchway crons -p P -e E`: each cron and its last runs.
pub(crate) fn list(
    settings_path: Option<&Path>,
    project: String,
    environment: String,
) -> anyhow::Result<ExitCode> {
    let list = with_client(settings_path, async |client| {
        Ok(client
            .list_crons(proto::EnvironmentRequest {
                project,
                environment,
                force: false,
            })
            .await?
            .into_inner())
    })?;
    if list.crons.is_empty() {
        println!("The serving release has no crons.");
        return Ok(ExitCode::SUCCESS);
    }
    for cron in &list.crons {
        println!(
            "{}:{}  {} ({})  {}",
            cron.app, cron.name, cron.spec, cron.timezone, cron.command
        );
        let rows: Vec<Vec<String>> = cron
            .runs
            .iter()
            .map(|run| {
                vec![
                    format!("  {}", run.activity),
                    time(run.started_at),
                    if run.result == "running" {
                        "-".to_owned()
                    } else {
                        format!("{:.1}s", run.duration_ms as f64 / 1000.0)
                    },
                    run.result.clone(),
                    run.trigger.clone(),
                ]
            })
            .collect();
        if rows.is_empty() {
            println!("  no runs yet");
        } else {
            print_table(
                &["  ACTIVITY", "STARTED", "TOOK", "RESULT", "TRIGGER"],
                &rows,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `launchway cron run`.
pub(crate) fn cron(settings_path: Option<&Path>, command: CronCommand) -> anyhow::Result<ExitCode> {
    match command {
        CronCommand::Run {
            project,
            environment,
            app,
            name,
        } => {
            let failed = with_client(settings_path, async |client| {
                let stream = client
                    .run_cron(proto::RunCronRequest {
                        project,
                        environment,
                        name,
                        app: app.unwrap_or_default(),
                    })
                    .await?
                    .into_inner();
                follow_activities(stream).await
            })?;
            Ok(exit_code(failed))
        }
    }
}
