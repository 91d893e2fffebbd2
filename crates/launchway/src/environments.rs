//! `launchway environments`, `environment activate|deactivate|delete`,
//! `deploy`, `redeploy`, `releases promote` and `variable set|list|delete`:
//! the calls that run activities print their log as it comes and exit
//! non-zero when one failed.

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use launchway_api::proto;

use crate::admin::{exit_code, follow_activities, print_table, time, with_client};

#[derive(Debug, Subcommand)]
pub(crate) enum EnvironmentCommand {
    /// Make an inactive environment active: its parent's data is cloned,
    /// then its branch is built and deployed on its own URL.
    Activate {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The environment (its branch).
        environment: String,
        /// Clone this environment's data instead of the recorded parent's.
        #[arg(long)]
        parent: Option<String>,
        /// Start with empty data.
        #[arg(long)]
        no_clone_parent: bool,
    },
    /// Stop an environment and delete its data (the branch stays).
    Deactivate {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The environment.
        environment: String,
        /// Deactivate the default (production) environment too: its site
        /// goes down and its data is deleted.
        #[arg(long)]
        force: bool,
    },
    /// Deactivate an environment, then delete it and its branch.
    Delete {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The environment.
        environment: String,
    },
    /// Bring a child its parent's data (a consistent copy) and/or code (a
    /// fast-forward of its branch), then redeploy it.
    Sync {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The child environment.
        environment: String,
        /// Replace the child's data by a copy of the parent's.
        #[arg(long)]
        data: bool,
        /// Fast-forward the child's branch to the parent's head.
        #[arg(long)]
        code: bool,
    },
    /// Fast-forward the parent's branch to the child's and deploy the
    /// parent (refused when not a fast-forward). Data stays where it is.
    Merge {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The child environment.
        environment: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum VariableCommand {
    /// Create or update a variable; the environments it changes are redeployed.
    Set {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// An environment variable (a project variable when omitted).
        #[arg(long, short = 'e')]
        environment: Option<String>,
        /// `env:NAME` is exported as `NAME`; every name is in `PLATFORM_VARIABLES`.
        name: String,
        /// The value; `-` reads it from standard input (keeps secrets out of
        /// the shell history and the process list).
        value: String,
        /// Never shown again, masked in logs (cannot be undone).
        #[arg(long)]
        sensitive: bool,
        /// Seen by builds (part of the build key). Default true.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        visible_build: Option<bool>,
        /// Seen by the running app. Default true.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        visible_runtime: Option<bool>,
        /// An environment variable reaches its child environments. Default true.
        #[arg(long, num_args = 0..=1, default_missing_value = "true")]
        inheritable: Option<bool>,
        /// The value is JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the project's variables, or the ones an environment sees.
    List {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The environment.
        #[arg(long, short = 'e')]
        environment: Option<String>,
    },
    /// Delete a variable; the environments it changes are redeployed.
    Delete {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The environment (a project variable when omitted).
        #[arg(long, short = 'e')]
        environment: Option<String>,
        /// The variable.
        name: String,
    },
}

/// `launchway environments -p P`.
pub(crate) fn list(settings_path: Option<&Path>, project: String) -> anyhow::Result<ExitCode> {
    let list = with_client(settings_path, async |client| {
        Ok(client
            .list_environments(proto::ListEnvironmentsRequest {
                project: project.clone(),
            })
            .await?
            .into_inner())
    })?;
    let dash = |text: &str| {
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.to_owned()
        }
    };
    let rows: Vec<Vec<String>> = list
        .environments
        .iter()
        .map(|env| {
            vec![
                env.name.clone(),
                env.r#type.clone(),
                env.status.clone(),
                dash(&env.parent),
                dash(&env.url),
                dash(&env.release),
            ]
        })
        .collect();
    print_table(
        &["NAME", "TYPE", "STATUS", "PARENT", "URL", "RELEASE"],
        &rows,
    );
    // What needs attention about HTTPS, under the table (long reasons).
    for env in &list.environments {
        if !env.https.is_empty() && env.https != "valid" {
            println!("HTTPS {}: {}", env.name, env.https);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `launchway environment …`.
pub(crate) fn environment(
    settings_path: Option<&Path>,
    command: EnvironmentCommand,
) -> anyhow::Result<ExitCode> {
    let failed = with_client(settings_path, async |client| {
        let stream = match command {
            EnvironmentCommand::Activate {
                project,
                environment,
                parent,
                no_clone_parent,
            } => client
                .activate_environment(proto::ActivateEnvironmentRequest {
                    project,
                    environment,
                    parent: parent.unwrap_or_default(),
                    no_clone: no_clone_parent,
                })
                .await?
                .into_inner(),
            EnvironmentCommand::Deactivate {
                project,
                environment,
                force,
            } => client
                .deactivate_environment(proto::EnvironmentRequest {
                    project,
                    environment,
                    force,
                })
                .await?
                .into_inner(),
            EnvironmentCommand::Delete {
                project,
                environment,
            } => client
                .delete_environment(proto::EnvironmentRequest {
                    project,
                    environment,
                    force: false,
                })
                .await?
                .into_inner(),
            EnvironmentCommand::Sync {
                project,
                environment,
                data,
                code,
            } => client
                .sync_environment(proto::SyncEnvironmentRequest {
                    project,
                    environment,
                    data,
                    code,
                })
                .await?
                .into_inner(),
            EnvironmentCommand::Merge {
                project,
                environment,
            } => client
                .merge_environment(proto::EnvironmentRequest {
                    project,
                    environment,
                    force: false,
                })
                .await?
                .into_inner(),
        };
        follow_activities(stream).await
    })?;
    Ok(exit_code(failed))
}

/// `launchway deploy -p P -e ENV` (build the head and deploy it) and
/// `launchway redeploy -p P -e ENV` (the serving release again).
pub(crate) fn deploy(
    settings_path: Option<&Path>,
    project: String,
    environment: String,
    redeploy: bool,
) -> anyhow::Result<ExitCode> {
    let failed = with_client(settings_path, async |client| {
        let request = proto::EnvironmentRequest {
            project,
            environment,
            force: false,
        };
        let stream = if redeploy {
            client.redeploy(request).await?.into_inner()
        } else {
            client.deploy(request).await?.into_inner()
        };
        follow_activities(stream).await
    })?;
    Ok(exit_code(failed))
}

/// `launchway releases promote ID`.
pub(crate) fn promote(settings_path: Option<&Path>, id: String) -> anyhow::Result<ExitCode> {
    let failed = with_client(settings_path, async |client| {
        let stream = client
            .promote_release(proto::PromoteReleaseRequest { id })
            .await?
            .into_inner();
        follow_activities(stream).await
    })?;
    Ok(exit_code(failed))
}

/// `launchway variable …`.
pub(crate) fn variable(
    settings_path: Option<&Path>,
    command: VariableCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        VariableCommand::Set {
            project,
            environment,
            name,
            value,
            sensitive,
            visible_build,
            visible_runtime,
            inheritable,
            json,
        } => {
            let value = if value == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .take(crate::MAX_VARIABLE_INPUT)
                    .read_to_string(&mut text)?;
                // A value piped with `echo` ends with one newline nobody meant.
                text.strip_suffix('\n').map(str::to_owned).unwrap_or(text)
            } else {
                value
            };
            let failed = with_client(settings_path, async |client| {
                let stream = client
                    .set_variable(proto::SetVariableRequest {
                        project,
                        environment: environment.unwrap_or_default(),
                        name,
                        value,
                        sensitive: sensitive.then_some(true),
                        visible_build,
                        visible_runtime,
                        inheritable,
                        json: json.then_some(true),
                    })
                    .await?
                    .into_inner();
                follow_activities(stream).await
            })?;
            Ok(exit_code(failed))
        }
        VariableCommand::Delete {
            project,
            environment,
            name,
        } => {
            let failed = with_client(settings_path, async |client| {
                let stream = client
                    .delete_variable(proto::DeleteVariableRequest {
                        project,
                        environment: environment.unwrap_or_default(),
                        name,
                    })
                    .await?
                    .into_inner();
                follow_activities(stream).await
            })?;
            Ok(exit_code(failed))
        }
        VariableCommand::List {
            project,
            environment,
        } => {
            let list = with_client(settings_path, async |client| {
                Ok(client
                    .list_variables(proto::ListVariablesRequest {
                        project,
                        environment: environment.unwrap_or_default(),
                    })
                    .await?
                    .into_inner())
            })?;
            let yes_no = |flag: bool| if flag { "yes" } else { "no" }.to_owned();
            let rows: Vec<Vec<String>> = list
                .variables
                .iter()
                .map(|v| {
                    vec![
                        v.name.clone(),
                        v.level.clone(),
                        if v.sensitive {
                            "******".to_owned()
                        } else {
                            v.value.replace('\n', "\\n")
                        },
                        yes_no(v.visible_build),
                        yes_no(v.visible_runtime),
                        yes_no(v.inheritable),
                        yes_no(v.sensitive),
                        time(v.updated_at),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "LEVEL",
                    "VALUE",
                    "BUILD",
                    "RUNTIME",
                    "INHERITABLE",
                    "SENSITIVE",
                    "UPDATED",
                ],
                &rows,
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What `launchway services` does besides listing.
#[derive(Debug, Subcommand)]
pub(crate) enum ServicesCommand {
    /// Delete the data of a service the config no longer has (listed as
    /// detached). A service still in the config is refused.
    Delete {
        /// The service.
        service: String,
    },
}

/// `launchway services -p P -e E [delete NAME]`.
pub(crate) fn services(
    settings_path: Option<&Path>,
    project: String,
    environment: String,
    command: Option<ServicesCommand>,
) -> anyhow::Result<ExitCode> {
    if let Some(ServicesCommand::Delete { service }) = command {
        let failed = with_client(settings_path, async |client| {
            let stream = client
                .delete_service_data(proto::DeleteServiceDataRequest {
                    project,
                    environment,
                    service,
                })
                .await?
                .into_inner();
            follow_activities(stream).await
        })?;
        return Ok(exit_code(failed));
    }
    let list = with_client(settings_path, async |client| {
        Ok(client
            .list_services(proto::EnvironmentRequest {
                project: project.clone(),
                environment: environment.clone(),
                force: false,
            })
            .await?
            .into_inner())
    })?;
    let rows: Vec<Vec<String>> = list
        .services
        .iter()
        .map(|service| {
            let version = match (service.asked.as_str(), service.running.as_str()) {
                ("", "") => "-".to_owned(),
                (asked, running) if asked == running => running.to_owned(),
                (asked, running) => format!("{asked} → {running}"),
            };
            vec![
                service.name.clone(),
                version,
                service.status.clone(),
                human_bytes(service.disk_bytes),
                service.restarts.to_string(),
            ]
        })
        .collect();
    print_table(&["NAME", "TYPE", "STATUS", "DISK", "RESTARTS"], &rows);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}
