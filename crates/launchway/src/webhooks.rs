//! `launchway webhooks` and `launchway webhook …`: a project's events,
//! signed (Standard Webhooks), sent to URLs, with their delivery log.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use launchway_api::proto;

use crate::admin::{print_table, time, with_client};

#[derive(Debug, Subcommand)]
pub(crate) enum WebhookCommand {
    /// Send a project's events to URL; the signing secret is printed once.
    Add {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// Where to POST the events (http:// or https://).
        url: String,
        /// Only these events (activity.started, activity.completed,
        /// deploy.succeeded, deploy.failed); all when omitted.
        #[arg(long = "event")]
        events: Vec<String>,
    },
    /// Stop sending to a webhook (its deliveries stay in the log).
    Remove {
        /// The webhook's id (`W…`).
        id: String,
    },
    /// The delivery log, newest first: each event, its attempts and outcome.
    Deliveries {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// Only this webhook's.
        #[arg(long)]
        webhook: Option<String>,
        /// At most this many.
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: u32,
    },
}

/// `launchway webhooks -p P`.
pub(crate) fn list(settings_path: Option<&Path>, project: String) -> anyhow::Result<ExitCode> {
    let list = with_client(settings_path, async |client| {
        Ok(client
            .list_webhooks(proto::ListWebhooksRequest {
                project: project.clone(),
            })
            .await?
            .into_inner())
    })?;
    let rows: Vec<Vec<String>> = list
        .webhooks
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.url.clone(),
                if w.events.is_empty() {
                    "*".into()
                } else {
                    w.events.join(",")
                },
                time(w.created_at),
            ]
        })
        .collect();
    print_table(&["ID", "URL", "EVENTS", "CREATED"], &rows);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn webhook(
    settings_path: Option<&Path>,
    command: WebhookCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        WebhookCommand::Add {
            project,
            url,
            events,
        } => {
            let info = with_client(settings_path, async |client| {
                Ok(client
                    .create_webhook(proto::CreateWebhookRequest {
                        project: project.clone(),
                        url: url.clone(),
                        events: events.clone(),
                    })
                    .await?
                    .into_inner())
            })?;
            eprintln!(
                "Webhook {} sends {} events to {}. Its signing secret, shown only now:",
                info.id, info.project, info.url
            );
            println!("{}", info.secret);
        }
        WebhookCommand::Remove { id } => {
            with_client(settings_path, async |client| {
                client
                    .delete_webhook(proto::DeleteWebhookRequest { id: id.clone() })
                    .await?;
                Ok(())
            })?;
            println!("Removed webhook {id}");
        }
        WebhookCommand::Deliveries {
            project,
            webhook,
            limit,
        } => {
            let list = with_client(settings_path, async |client| {
                Ok(client
                    .list_webhook_deliveries(proto::ListWebhookDeliveriesRequest {
                        project: project.clone(),
                        webhook: webhook.clone().unwrap_or_default(),
                        limit,
                    })
                    .await?
                    .into_inner())
            })?;
            let rows: Vec<Vec<String>> = list
                .deliveries
                .iter()
                .map(|d| {
                    vec![
                        d.message_id.clone(),
                        d.webhook.clone(),
                        d.event.clone(),
                        d.state.clone(),
                        d.attempts.to_string(),
                        if d.last_status == 0 {
                            "-".into()
                        } else {
                            d.last_status.to_string()
                        },
                        time(d.created_at),
                        if d.last_error.is_empty() {
                            "-".into()
                        } else {
                            d.last_error.clone()
                        },
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID", "WEBHOOK", "EVENT", "STATE", "ATTEMPTS", "STATUS", "CREATED", "ERROR",
                ],
                &rows,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
