//! `launchway`: one binary, subcommands. Parsing, printing and exit codes live
//! here; the work is done by the library crates.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod admin;
mod backups;
mod builders;
mod builds;
mod certificates;
mod checkout;
mod clients;
mod crons;
mod doctor;
mod environments;
mod hook;
mod releases;
mod remote;
mod runtimes;
mod shell;
mod tokens;
mod upload;
mod webhooks;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use launchway_config::Severity;

/// The largest variable value read from standard input (the daemon
/// refuses more than 64 KiB; reading a little past shows the error).
pub(crate) const MAX_VARIABLE_INPUT: u64 = 65 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "launchway",
    version,
    about = "Self-hosted git-push build and deploy"
)]
struct Cli {
    /// The daemon's settings file (default: /etc/launchway/launchway.toml when
    /// it exists, else the built-in defaults). The admin commands read it to
    /// find the daemon's socket. (No `-c`: that is `launchway sql -c`, as
    /// psql's.)
    #[arg(long, global = true, env = "LAUNCHWAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// One page of a newest-first list.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Page {
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    pub(crate) limit: u32,
    /// Start after this point (the cursor the previous page printed).
    #[arg(long, default_value = "")]
    pub(crate) cursor: String,
}

impl Page {
    /// Says, on stderr, how to see the next page when there is one.
    pub(crate) fn hint_next(&self, next_cursor: &str) {
        if !next_cursor.is_empty() {
            eprintln!("(more: add --cursor {next_cursor})");
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with a repository's configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run the daemon: SSH for git, the admin API on a unix socket.
    Serve,
    /// Use a daemon's HTTP API from this machine: checks the token (read
    /// from LAUNCHWAY_TOKEN or stdin), pins the API's certificate, and saves
    /// both for the next commands (without --config).
    Login {
        /// `https://host:port` of the daemon's `[http] listen`.
        url: String,
    },
    /// Forget the saved login.
    Logout,
    /// Check that this host can run `launchway serve` with these settings:
    /// each check passes or says what is wrong and how to fix it; exits 1
    /// when something needed fails.
    Doctor {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Print the daemon's settings.
    Settings {
        #[command(subcommand)]
        command: doctor::SettingsCommand,
    },
    /// Create and list projects.
    Project {
        #[command(subcommand)]
        command: admin::ProjectCommand,
    },
    /// Grant, list and revoke SSH keys.
    Keys {
        #[command(subcommand)]
        command: admin::KeysCommand,
    },
    /// Print each app's source tree and build key at a ref.
    Plan {
        /// The project.
        project: String,
        /// A branch, a full ref or a commit id.
        #[arg(name = "REF")]
        reference: String,
    },
    /// List activities, newest first.
    Activities {
        /// The project (all projects when omitted).
        #[arg(long, short = 'p')]
        project: Option<String>,
        /// Only this environment.
        #[arg(long, short = 'e')]
        environment: Option<String>,
        #[command(flatten)]
        page: Page,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Work with one activity.
    Activity {
        #[command(subcommand)]
        command: admin::ActivityCommand,
    },
    /// List builds (`-p P`), or show, follow, export and import one.
    Builds {
        /// The project.
        #[arg(long, short = 'p', global = true)]
        project: Option<String>,
        #[command(flatten)]
        page: Page,
        #[command(subcommand)]
        command: Option<builds::BuildsCommand>,
    },
    /// Dedicated build hosts (operator, on the server): list them (the
    /// default), make a join token (`token`), forget one (`remove NAME`).
    Builders {
        #[command(subcommand)]
        command: Option<builders::BuildersCommand>,
    },
    /// Build an environment's head without deploying it.
    Build {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The branch (the project's default branch when omitted).
        #[arg(long = "ref", short = 'e', alias = "environment")]
        branch: Option<String>,
        /// Build this directory instead (a checkout: what .gitignore lets
        /// through), as a commit of the environment, without `git push`.
        dir: Option<PathBuf>,
    },
    /// Build an environment's head (reusing builds) and deploy it; or, with
    /// DIR, build and deploy that directory (CI without `git push`).
    Deploy {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The environment (with DIR: the project's default one when
        /// omitted).
        #[arg(long, short = 'e')]
        environment: Option<String>,
        /// Deploy this directory (a checkout: what .gitignore lets through).
        dir: Option<PathBuf>,
    },
    /// Deploy the serving release again (nothing is built).
    Redeploy {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The environment.
        #[arg(long, short = 'e')]
        environment: String,
    },
    /// List a project's environments.
    Environments {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
    },
    /// List an environment's services: type (asked → running), status,
    /// disk, restarts; data of removed services as detached. `delete NAME`
    /// deletes detached data.
    Services {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The environment.
        #[arg(long, short = 'e')]
        environment: String,
        #[command(subcommand)]
        command: Option<environments::ServicesCommand>,
    },
    /// Run the SQL client of a relationship's database (psql or mariadb)
    /// with its credentials: the statement from `-c`, or from stdin.
    Sql {
        #[command(flatten)]
        target: clients::Target,
        /// The statement to run (default: read statements from stdin).
        #[arg(long, short = 'c')]
        command: Option<String>,
    },
    /// Database commands: `db dump` writes an SQL dump to stdout.
    Db {
        #[command(subcommand)]
        command: clients::DbCommand,
    },
    /// Run redis-cli on a relationship's Redis: `launchway redis -p P -e E
    /// -- GET key` (default: commands from stdin).
    Redis {
        #[command(flatten)]
        target: clients::Target,
        /// The command and its arguments.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a command in a new container of an app of the serving release
    /// (its mounts, relationships and variables): `launchway run -p P -e E
    /// -- php bin/console doctrine:migrations:migrate`.
    Run {
        #[command(flatten)]
        target: shell::AppTarget,
        /// The command and its arguments (run by the app's shell).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Open a shell in an app's running container over SSH (or run
    /// `-- COMMAND` there): wraps `ssh -t PROJECT:ENVIRONMENT[:APP]@HOST`.
    Ssh {
        #[command(flatten)]
        target: shell::AppTarget,
        #[command(flatten)]
        server: shell::SshServer,
        /// A command to run instead of a shell.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Forward local ports to the app's relationships over SSH and print
    /// their URLs (until Ctrl-C).
    Tunnel {
        #[command(flatten)]
        target: shell::AppTarget,
        #[command(flatten)]
        server: shell::SshServer,
        /// Only this relationship (default: all of them).
        #[arg(long, short = 'r')]
        relationship: Option<String>,
    },
    /// Activate, deactivate or delete an environment.
    Environment {
        #[command(subcommand)]
        command: environments::EnvironmentCommand,
    },
    /// Set, list and delete project and environment variables.
    Variable {
        #[command(subcommand)]
        command: environments::VariableCommand,
    },
    /// Delete build images no kept build uses (`[build] keep_builds`).
    Gc,
    /// List the crons of an environment's serving release with their last
    /// runs (start, duration, result).
    Crons {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The environment.
        #[arg(long, short = 'e')]
        environment: String,
    },
    /// Crons: `cron run -p P -e E NAME` runs one now.
    Cron {
        #[command(subcommand)]
        command: crons::CronCommand,
    },
    /// List a project's backups, newest first.
    Backups {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// Only this environment's.
        #[arg(long, short = 'e')]
        environment: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Take, restore, delete, export and import backups of an
    /// environment's data.
    Backup {
        #[command(subcommand)]
        command: backups::BackupCommand,
    },
    /// The HTTPS certificates of the routed hosts: HOST ISSUER EXPIRES
    /// STATUS.
    Certificates {
        /// Only this project's hosts.
        #[arg(long, short = 'p')]
        project: Option<String>,
        /// Only this environment's hosts.
        #[arg(long, short = 'e')]
        environment: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List a project's webhooks.
    Webhooks {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
    },
    /// Webhooks: add (the signing secret is shown once), remove, and the
    /// delivery log.
    Webhook {
        #[command(subcommand)]
        command: webhooks::WebhookCommand,
    },
    /// API tokens: create (the secret is shown once), list, revoke.
    Token {
        #[command(subcommand)]
        command: tokens::TokenCommand,
    },
    /// Add or remove operators' certificates; renew an ACME one now.
    Certificate {
        #[command(subcommand)]
        command: certificates::CertificateCommand,
    },
    /// List releases (`-p P [-e ENV]`; `*` marks the serving one), or show one.
    Releases {
        /// The project.
        #[arg(long, short = 'p', global = true)]
        project: Option<String>,
        /// Only this environment.
        #[arg(long, short = 'e', global = true)]
        environment: Option<String>,
        #[command(flatten)]
        page: Page,
        #[command(subcommand)]
        command: Option<releases::ReleasesCommand>,
    },
    /// Print an environment's app logs (every app when APP is omitted).
    Logs {
        /// The project.
        #[arg(long, short = 'p')]
        project: String,
        /// The environment.
        #[arg(long, short = 'e')]
        environment: String,
        /// Only this app.
        app: Option<String>,
        /// Keep printing what the apps write.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Lines of tail to start with.
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: u32,
    },
    /// List, build and import runtime images.
    Runtimes {
        #[command(subcommand)]
        command: runtimes::RuntimesCommand,
    },
    /// Run by git inside a push (Launchway installs these hooks itself).
    #[command(hide = true)]
    Hook {
        /// `pre-receive` or `post-receive`.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check the configuration of a checkout: diagnostics on stderr, exit 1 on errors.
    Validate {
        /// The repository checkout to read.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Print the normalized configuration (JSON) on stdout.
        #[arg(long)]
        show: bool,
    },
    /// Print the JSON Schema of the native format.
    Schema,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// `file:line:col: severity: message`, for people and editors.
    Text,
    /// One JSON document on stdout, for tools.
    Json,
}

/// Runs the command line and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings_path = cli.config.clone();
    match cli.command {
        Command::Serve => admin::serve(settings_path.as_deref()),
        Command::Login { url } => remote::login(&url),
        Command::Logout => remote::logout(),
        Command::Doctor { json } => doctor::doctor(settings_path.as_deref(), json),
        Command::Settings { command } => doctor::settings(settings_path.as_deref(), command),
        Command::Hook { name } => hook::run(&name),
        Command::Project { command } => admin::project(settings_path.as_deref(), command),
        Command::Keys { command } => admin::keys(settings_path.as_deref(), command),
        Command::Plan { project, reference } => {
            admin::plan(settings_path.as_deref(), &project, &reference)
        }
        Command::Activities {
            project,
            environment,
            page,
            json,
        } => admin::activities(settings_path.as_deref(), project, environment, page, json),
        Command::Activity { command } => admin::activity(settings_path.as_deref(), command),
        Command::Runtimes { command } => runtimes::runtimes(settings_path.as_deref(), command),
        Command::Builds {
            project,
            page,
            command,
        } => builds::builds(settings_path.as_deref(), project, page, command),
        Command::Build {
            project,
            branch,
            dir: Some(dir),
        } => upload::upload(settings_path.as_deref(), project, branch, &dir, false),
        Command::Build {
            project,
            branch,
            dir: None,
        } => builds::build(settings_path.as_deref(), project, branch),
        Command::Builders { command } => builders::builders(settings_path.as_deref(), command),
        Command::Gc => builds::gc(settings_path.as_deref()),
        Command::Crons {
            project,
            environment,
        } => crons::list(settings_path.as_deref(), project, environment),
        Command::Cron { command } => crons::cron(settings_path.as_deref(), command),
        Command::Deploy {
            project,
            environment,
            dir: Some(dir),
        } => upload::upload(settings_path.as_deref(), project, environment, &dir, true),
        Command::Deploy {
            project,
            environment,
            dir: None,
        } => {
            let environment = anyhow::Context::context(
                environment,
                "name the environment to deploy with -e (or give a directory to deploy)",
            )?;
            environments::deploy(settings_path.as_deref(), project, environment, false)
        }
        Command::Redeploy {
            project,
            environment,
        } => environments::deploy(settings_path.as_deref(), project, environment, true),
        Command::Environments { project } => environments::list(settings_path.as_deref(), project),
        Command::Services {
            project,
            environment,
            command,
        } => environments::services(settings_path.as_deref(), project, environment, command),
        Command::Sql { target, command } => clients::run(
            settings_path.as_deref(),
            target,
            clients::Mode::Sql(command),
        ),
        Command::Db {
            command: clients::DbCommand::Dump { target },
        } => clients::run(settings_path.as_deref(), target, clients::Mode::Dump),
        Command::Redis { target, args } => {
            clients::run(settings_path.as_deref(), target, clients::Mode::Redis(args))
        }
        Command::Run { target, command } => shell::run(settings_path.as_deref(), target, command),
        Command::Ssh {
            target,
            server,
            command,
        } => shell::ssh(settings_path.as_deref(), target, server, command),
        Command::Tunnel {
            target,
            server,
            relationship,
        } => shell::tunnel(settings_path.as_deref(), target, server, relationship),
        Command::Environment { command } => {
            environments::environment(settings_path.as_deref(), command)
        }
        Command::Backups {
            project,
            environment,
            json,
        } => backups::list(settings_path.as_deref(), project, environment, json),
        Command::Backup { command } => backups::backup(settings_path.as_deref(), command),
        Command::Certificates {
            project,
            environment,
            json,
        } => certificates::list(settings_path.as_deref(), project, environment, json),
        Command::Token { command } => tokens::token(settings_path.as_deref(), command),
        Command::Webhooks { project } => webhooks::list(settings_path.as_deref(), project),
        Command::Webhook { command } => webhooks::webhook(settings_path.as_deref(), command),
        Command::Certificate { command } => {
            certificates::certificate(settings_path.as_deref(), command)
        }
        Command::Variable { command } => environments::variable(settings_path.as_deref(), command),
        Command::Releases {
            project,
            environment,
            page,
            command,
        } => releases::releases(
            settings_path.as_deref(),
            project,
            environment,
            page,
            command,
        ),
        Command::Logs {
            project,
            environment,
            app,
            follow,
            lines,
        } => builds::app_logs(
            settings_path.as_deref(),
            launchway_api::proto::AppLogsRequest {
                project,
                environment,
                app: app.unwrap_or_default(),
                follow,
                lines,
            },
        ),
        Command::Config {
            command: ConfigCommand::Schema,
        } => {
            print!("{}", launchway_config::json_schema());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Validate { dir, format, show },
        } => validate(&dir, format, show),
    }
}

fn validate(dir: &std::path::Path, format: Format, show: bool) -> anyhow::Result<ExitCode> {
    let source = checkout::CheckoutSource::open(dir)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", dir.display()))?;
    let loaded = launchway_config::load(&source);
    let diags = &loaded.diagnostics;
    let valid = loaded.config.is_some();
    match format {
        Format::Json => {
            let mut doc = serde_json::json!({
                "valid": valid,
                "diagnostics": diags,
            });
            if let (true, Some(config)) = (show, &loaded.config) {
                doc["config"] = serde_json::to_value(config)?;
            }
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Text => {
            let mut err = std::io::stderr().lock();
            write!(err, "{diags}")?;
            let counts = format!(
                "{} error(s), {} warning(s), {} note(s)",
                diags.count(Severity::Error),
                diags.count(Severity::Warning),
                diags.count(Severity::Note)
            );
            match &loaded.config {
                Some(config) => {
                    writeln!(
                        err,
                        "configuration is valid ({} layout; {} application(s), {} service(s), {} route(s)); {counts}",
                        serde_json::to_value(config.layout)?
                            .as_str()
                            .unwrap_or_default(),
                        config.applications.len(),
                        config.services.len(),
                        config.routes.len()
                    )?;
                    if show {
                        println!("{}", serde_json::to_string_pretty(config)?);
                    }
                }
                None => writeln!(err, "configuration is invalid: {counts}")?,
            }
        }
    }
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
