//! `launchway token …`: API tokens scoped to a project, which the HTTP API
//! (`[http] listen`) accepts.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use launchway_api::proto;

use crate::admin::{print_table, time, with_client};

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token; its secret is printed once and never again.
    Create {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// viewer, contributor or admin.
        #[arg(long)]
        role: String,
        /// Only this environment.
        #[arg(long, short = 'e')]
        environment: Option<String>,
        /// Lifetime: 90m, 12h, 30d (default: never).
        #[arg(long)]
        expires: Option<String>,
        /// A name for people (e.g. ci).
        #[arg(long, default_value = "")]
        name: String,
        /// A deploy key: build and deploy the project, nothing else.
        #[arg(long)]
        deploy_key: bool,
    },
    /// List tokens (without their secrets).
    List {
        /// Only this project's.
        #[arg(long, short = 'p')]
        project: Option<String>,
    },
    /// Revoke a token at once.
    Revoke {
        /// The token's id (`T…`).
        id: String,
    },
}

pub(crate) fn token(
    settings_path: Option<&Path>,
    command: TokenCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create {
            project,
            role,
            environment,
            expires,
            name,
            deploy_key,
        } => {
            let info = with_client(settings_path, async |client| {
                Ok(client
                    .create_token(proto::CreateTokenRequest {
                        project: project.clone(),
                        role: role.clone(),
                        environment: environment.clone().unwrap_or_default(),
                        expires: expires.clone().unwrap_or_default(),
                        name: name.clone(),
                        deploy_key,
                    })
                    .await?
                    .into_inner())
            })?;
            eprintln!(
                "Token {} for {} ({}{}), expires {}. Its secret, shown only now:",
                info.id,
                info.project,
                if info.deploy_key { "deploy key, " } else { "" },
                info.role,
                if info.expires_at == 0 {
                    "never".to_owned()
                } else {
                    time(info.expires_at)
                }
            );
            println!("{}", info.secret);
        }
        TokenCommand::List { project } => {
            let list = with_client(settings_path, async |client| {
                Ok(client
                    .list_tokens(proto::ListTokensRequest {
                        project: project.clone().unwrap_or_default(),
                    })
                    .await?
                    .into_inner())
            })?;
            let rows: Vec<Vec<String>> = list
                .tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        if t.name.is_empty() {
                            "-".into()
                        } else {
                            t.name.clone()
                        },
                        t.project.clone(),
                        if t.deploy_key {
                            "deploy key".into()
                        } else {
                            t.role.clone()
                        },
                        if t.environment.is_empty() {
                            "*".into()
                        } else {
                            t.environment.clone()
                        },
                        time(t.created_at),
                        if t.expires_at == 0 {
                            "never".into()
                        } else {
                            time(t.expires_at)
                        },
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "NAME",
                    "PROJECT",
                    "ROLE",
                    "ENVIRONMENT",
                    "CREATED",
                    "EXPIRES",
                ],
                &rows,
            );
        }
        TokenCommand::Revoke { id } => {
            with_client(settings_path, async |client| {
                client
                    .revoke_token(proto::RevokeTokenRequest { id: id.clone() })
                    .await?;
                Ok(())
            })?;
            println!("Revoked token {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
