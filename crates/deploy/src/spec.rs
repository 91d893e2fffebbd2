//! What a deploy starts: per app its image, where it listens, its processes,
//! its mounts and its runtime variables. Made once from the config at the
//! deployed commit and stored with the release, so a rollback or a restart
//! starts exactly the same thing without reading git again.
//!
//! Choices:
//! - every process container is a member of the environment network
//!   ([`crate::network`]) with an address of its own; every app's web
//!   process gets `PORT=8888` (as on Upsun), or `SOCKET=/run/app.sock` with
//!   `socket_family: unix`; workers get no `PORT`;
//! - an app reaches only what its relationships name: another app at
//!   `http://<relationship>.internal` (port 80; 8888 also answers), which
//!   its `/etc/hosts` maps to that app's web address; what arrives there
//!   for either port reaches the app on `127.0.0.1:8888`, so apps that
//!   listen on localhost only are reachable too;
//! - every process container gets its own run directory on `/run` (so
//!   `/run/app.sock` is a host path the router dials), a generated
//!   `/etc/hosts` and the app's mounts;
//! - a process is the [`SUPERVISOR`] script as PID 1: it sources
//!   `/app/.environment` before each command, runs `pre_start` once, then
//!   runs `start` and restarts it when it exits (1 s doubling to 60 s,
//!   reset after a minute of running); on SIGTERM it signals every process
//!   and waits until they are gone (the stop grace period bounds it); it
//!   records what it does in `/run/.launchway-*` files the daemon reads;
//! - mounts: `local`, `storage` and `instance` are persistent per app
//!   (`volumes/<app>/<source_path>`), `service` per service
//!   (`services/<service>/<source_path>`), `tmp` under `tmp/<app>/…`, emptied
//!   on each deploy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use launchway_build::env::{
    APP_DIR, UserVariable, base64_text, env_variables, merged_variables, tool_env,
};
use launchway_config::App;
use launchway_config::model::{MountSource, SocketFamily};
use launchway_services::run::Backend;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::network::{self, Filter};
use crate::routes::{ResolvedRoute, routes_json};
use crate::services::{
    ServiceSpec, not_run, relationship as service_relationship, service_member, service_spec,
};
use crate::web_server::{NGINX_COMMAND, WebServerSpec, web_server};

/// Where every app's web process listens (`PORT`).
pub const APP_PORT: u16 = 8888;
/// The port a relationship to an app names (`http://<name>.internal`).
pub const APP_RELATIONSHIP_PORT: u16 = 80;
/// The web process's socket with `socket_family: unix`.
pub const SOCKET_PATH: &str = "/run/app.sock";
/// Written by the supervisor once `pre_start` is done and `start` begins.
pub const STARTED_MARKER: &str = ".launchway-started";
/// One line per exit of `start`: its status.
pub const EXITS_FILE: &str = ".launchway-exits";
/// One line per exit of the web server run beside `start`: its status.
pub const SERVER_EXITS_FILE: &str = ".launchway-server-exits";

/// PHP's scan directory when an app turns extensions off.
pub const PHP_SCAN_DIR: &str = "/run/php.d";

/// The `php:NAME` variables of a PHP app as `php.ini` lines (Upsun sets
/// them so: `php:memory_limit` is `memory_limit`). A name or value php.ini
/// cannot hold is left out, with a note.
fn php_ini_lines(
    variables: &serde_json::Map<String, serde_json::Value>,
    notes: &mut Vec<String>,
    app: &str,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, value) in variables {
        let Some(directive) = name.strip_prefix("php:") else {
            continue;
        };
        let value = match value {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Bool(true) => "On".to_owned(),
            serde_json::Value::Bool(false) => "Off".to_owned(),
            serde_json::Value::Number(number) => number.to_string(),
            _ => String::new(),
        };
        let name_ok = !directive.is_empty()
            && directive
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        let value_ok = !value.contains(['"', '\n', '\r', '\0']);
        if !name_ok || !value_ok {
            notes.push(format!(
                "app '{app}': variable `{name}` is not set in php.ini (a directive is letters, digits, `.`, `_` and `-`; a value holds no quote or line break)"
            ));
            continue;
        }
        let plain = !value.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/:".contains(&b));
        if plain {
            lines.push(format!("{directive} = {value}"));
        } else {
            lines.push(format!("{directive} = \"{value}\""));
        }
    }
    lines
}

/// PID 1 of every app process container. `$1` = pre_start, `$2` = start,
/// `$3` = a web server run beside `start` (and restarted alike).
pub const SUPERVISOR: &str = r#"
stopping=
child=
trap 'stopping=1; kill -TERM -1 2>/dev/null' TERM INT
in_env() {
  sh -c 'lw_command=$1; if [ -r /app/.environment ]; then . /app/.environment; fi; eval "$lw_command"' launchway "$1"
}
stop() {
  # Every process got SIGTERM; wait for them (the stop grace period bounds
  # this), so PID 1 leaving does not SIGKILL an app still shutting down.
  while kill -0 -1 2>/dev/null; do sleep 0.02; wait 2>/dev/null; done
  exit 0
}
if [ -n "${LAUNCHWAY_PHP_DISABLED:-}${LAUNCHWAY_PHP_INI:-}" ]; then
  mkdir -p /run/php.d
  for ini in /etc/php/*/cli/conf.d/*.ini; do
    [ -e "$ini" ] || continue
    extension=$(basename "$ini" .ini); extension=${extension#*-}
    case " $LAUNCHWAY_PHP_DISABLED " in *" $extension "*) continue ;; esac
    ln -sf "$ini" "/run/php.d/$(basename "$ini")"
  done
  if [ -n "${LAUNCHWAY_PHP_INI:-}" ]; then
    printf '%s\n' "$LAUNCHWAY_PHP_INI" > /run/php.d/99-launchway-variables.ini
  fi
fi
if [ -n "$1" ]; then
  in_env "$1" || echo "launchway: pre_start exited with status $?" >&2
fi
[ -n "$stopping" ] && stop
if [ -n "$3" ]; then
  (
    trap - TERM INT
    delay=1
    while :; do
      in_env "$3"
      status=$?
      echo "$status" >> /run/.launchway-server-exits
      echo "launchway: the web server exited with status $status; restarting in ${delay}s" >&2
      sleep "$delay"
      delay=$(( delay * 2 )); if [ "$delay" -gt 60 ]; then delay=60; fi
    done
  ) &
fi
: > /run/.launchway-started
delay=1
while [ -z "$stopping" ]; do
  began=$(date +%s)
  in_env "$2" &
  child=$!
  wait "$child"
  status=$?
  while [ -z "$stopping" ] && kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
  child=
  [ -n "$stopping" ] && stop
  echo "$status" >> /run/.launchway-exits
  if [ $(( $(date +%s) - began )) -ge 60 ]; then delay=1; fi
  echo "launchway: the start command exited with status $status; restarting in ${delay}s" >&2
  sleep "$delay" &
  child=$!
  wait "$child"
  child=
  [ -n "$stopping" ] && stop
  delay=$(( delay * 2 ))
  if [ "$delay" -gt 60 ]; then delay=60; fi
done
stop
"#;

/// Where an app's web process listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Listen {
    /// `PORT` on the web process's address (or `0.0.0.0`).
    Port(u16),
    /// A unix socket: the container path (on `/run`).
    Socket(String),
}

/// Persistent or emptied on each deploy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Persistent,
    Temporary,
}

/// One mount of a process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// `/app/<path>`.
    pub target: String,
    pub kind: MountKind,
    /// The host directory, relative to the environment's directory.
    pub volume: String,
}

/// One supervised process (its own container).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// `web`, or `worker-<name>`.
    pub name: String,
    pub pre_start: Option<String>,
    pub start: String,
    pub post_start: Option<String>,
    /// The web server the supervisor runs beside `start` (nginx in front
    /// of the app).
    #[serde(default)]
    pub server: Option<String>,
    /// Whether this process takes the app's traffic.
    pub web: bool,
    pub mounts: Vec<MountSpec>,
    /// Added to the app's variables (a worker's own).
    pub extra_env: Vec<(String, String)>,
    /// Its address on the environment network (unspecified in releases
    /// made before environment networks, which cannot be deployed again).
    #[serde(default = "unspecified")]
    pub address: Ipv4Addr,
}

fn unspecified() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}

/// One app of a deploy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSpec {
    pub name: String,
    pub runtime: String,
    /// The frozen image (`launchway/build/<key>`).
    pub image: String,
    pub tree_id: String,
    pub listen: Listen,
    /// The runtime variables (without `PORT`/`SOCKET`, which depend on the process).
    pub env: Vec<(String, String)>,
    pub processes: Vec<ProcessSpec>,
    pub deploy_hook: Option<String>,
    pub post_deploy_hook: Option<String>,
    /// `<relationship>.internal` names and their addresses, for `/etc/hosts`.
    #[serde(default)]
    pub hosts: Vec<(String, Ipv4Addr)>,
    /// What its processes may reach on the environment network.
    #[serde(default)]
    pub reach: Filter,
    /// Whether a route or a relationship sends it requests: only then must
    /// its web process accept connections for a deploy to go on (a helper
    /// that nothing calls only has to run).
    #[serde(default = "called_by_default")]
    pub called: bool,
    /// The web server in front of the app, when it has one: callers reach
    /// it instead of the app.
    #[serde(default)]
    pub web_server: Option<WebServerSpec>,
    /// Its crons, run in its web process's container.
    #[serde(default)]
    pub crons: Vec<CronSpec>,
    /// The time zone its crons' schedules are read in.
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// One cron of an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronSpec {
    pub name: String,
    /// The schedule (`*/5 * * * *`, `@daily`, `H * * * *`).
    pub spec: String,
    pub start: String,
    /// Runs when a run is cancelled, before it is stopped.
    pub stop: Option<String>,
    /// Seconds a cancelled run gets to end after `stop`.
    pub shutdown_timeout: u64,
    /// Seconds a run may last.
    pub timeout: u64,
}

/// Specs recorded before `called` existed always waited for connections.
fn called_by_default() -> bool {
    true
}

impl AppSpec {
    /// The web process, if the app has one.
    pub fn web(&self) -> Option<&ProcessSpec> {
        self.processes.iter().find(|p| p.web)
    }

    /// The TCP port callers reach on the web process's address: the web
    /// server's, else the app's own (none for an app on a socket).
    pub fn front_port(&self) -> Option<u16> {
        match (&self.web_server, &self.listen) {
            (Some(server), _) => Some(server.port),
            (None, Listen::Port(port)) => Some(*port),
            (None, Listen::Socket(_)) => None,
        }
    }

    /// The variables of `process`.
    pub fn process_env(&self, process: &ProcessSpec) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.extend(process.extra_env.iter().cloned());
        if process.web {
            match &self.listen {
                Listen::Port(port) => env.push(("PORT".into(), port.to_string())),
                Listen::Socket(path) => env.push(("SOCKET".into(), path.clone())),
            }
        }
        env
    }
}

/// Everything a deploy of one environment starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySpec {
    pub project: String,
    pub environment: String,
    pub routes: Vec<ResolvedRoute>,
    pub apps: Vec<AppSpec>,
    /// The services (each in its own container, kept across deploys that
    /// do not change it).
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// What the config asks for that is not provided, or runs otherwise
    /// than asked (a nearer service version).
    pub notes: Vec<String>,
}

/// An app to deploy: its config, tree and built image.
#[derive(Clone, Debug)]
pub struct AppInput<'a> {
    pub app: &'a App,
    /// `python:3.11`, …
    pub runtime: String,
    pub tree_id: &'a str,
    pub image: String,
}

/// The environment a deploy is for.
#[derive(Clone, Debug)]
pub struct EnvironmentInput<'a> {
    pub project: &'a str,
    pub environment: &'a str,
    /// `production`, `staging` or `development`.
    pub kind: &'a str,
    pub routes: Vec<ResolvedRoute>,
    pub route_notes: Vec<String>,
    /// The runtime-visible project and environment variables, resolved
    /// by level; they beat the app config's and lose to the platform's.
    pub variables: &'a [UserVariable],
    /// The config's services.
    pub services: &'a [launchway_config::Service],
    /// The project's secret the service passwords derive from.
    pub service_secret: &'a [u8],
    /// Memory per service container (MiB).
    pub service_memory_mib: u64,
    /// Memory per app container (MiB; 0: no limit), which sizes PHP-FPM.
    pub app_memory_mib: u64,
}

/// A short, stable id for an environment's directories and namespace.
pub fn environment_id(project: &str, environment: &str) -> String {
    let digest = Sha256::digest(format!("{project}\0{environment}").as_bytes());
    hex::encode(&digest[..6])
}

/// `/run/config.json` of an app's processes: the environment's routes
/// (`PLATFORM_ROUTES`, decoded) and what the app is (`info`), for apps
/// that read files rather than variables. No secrets: relationships stay
/// in the environment.
pub fn run_config(spec: &DeploySpec, app: &AppSpec) -> String {
    serde_json::json!({
        "routes": routes_json(&spec.routes),
        "info": {
            "project": spec.project,
            "environment": spec.environment,
            "branch": spec.environment,
            "application": app.name,
        },
    })
    .to_string()
}

/// `/etc/hosts` for an app's containers.
pub fn hosts_file(app: &AppSpec) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (name, address) in &app.hosts {
        text.push_str(&format!("{address}\t{name}\n"));
    }
    text
}

/// The member name of an app's process on the environment network.
pub fn app_member(app: &str, process: &str) -> String {
    format!("app/{app}/{process}")
}

/// The name of a worker's process.
fn worker_process(name: &str) -> String {
    format!("worker-{}", crate::routes::host_label(name))
}

fn mount_specs(app: &str, mounts: &BTreeMap<String, launchway_config::Mount>) -> Vec<MountSpec> {
    mounts
        .iter()
        .map(|(path, mount)| {
            let path = path.trim_matches('/');
            let source_path = mount.source_path.trim_matches('/');
            let join = |base: String| {
                if source_path.is_empty() {
                    base
                } else {
                    format!("{base}/{source_path}")
                }
            };
            let (kind, volume) = match mount.source {
                MountSource::Tmp | MountSource::Temporary => {
                    (MountKind::Temporary, join(format!("tmp/{app}")))
                }
                MountSource::Service => (
                    MountKind::Persistent,
                    join(format!(
                        "services/{}",
                        mount.service.as_deref().unwrap_or("storage")
                    )),
                ),
                _ => (MountKind::Persistent, join(format!("volumes/{app}"))),
            };
            MountSpec {
                target: format!("{APP_DIR}/{path}"),
                kind,
                volume,
            }
        })
        .collect()
}

/// The deploy of `apps` (all of the environment's) into `environment`.
pub fn deploy_spec(environment: &EnvironmentInput<'_>, apps: &[AppInput<'_>]) -> DeploySpec {
    let mut sorted: Vec<&AppInput<'_>> = apps.iter().collect();
    sorted.sort_by(|a, b| a.app.name.cmp(&b.app.name));
    let listens: BTreeMap<String, Listen> = sorted
        .iter()
        .map(|input| {
            let listen = match input.app.web.socket_family {
                SocketFamily::Unix => Listen::Socket(SOCKET_PATH.into()),
                SocketFamily::Tcp => Listen::Port(APP_PORT),
            };
            (input.app.name.clone(), listen)
        })
        .collect();
    let servers: BTreeMap<String, WebServerSpec> = sorted
        .iter()
        .filter_map(|input| {
            let listen = listens.get(&input.app.name)?;
            web_server(input.app, listen, environment.app_memory_mib)
                .map(|server| (input.app.name.clone(), server))
        })
        .collect();
    // The TCP port callers reach on each app's web address.
    let fronts: BTreeMap<String, u16> = listens
        .iter()
        .filter_map(|(name, listen)| match (servers.get(name), listen) {
            (Some(server), _) => Some((name.clone(), server.port)),
            (None, Listen::Port(port)) => Some((name.clone(), *port)),
            (None, Listen::Socket(_)) => None,
        })
        .collect();
    let routes = routes_json(&environment.routes).to_string();
    let mut notes = environment.route_notes.clone();
    // Every process is a member of the environment network.
    let members: Vec<String> = sorted
        .iter()
        .flat_map(|input| {
            let app = input.app;
            (app.web.start.is_some() || servers.contains_key(&app.name))
                .then(|| app_member(&app.name, "web"))
                .into_iter()
                .chain(
                    app.workers
                        .keys()
                        .map(|name| app_member(&app.name, &worker_process(name))),
                )
        })
        .chain(
            environment
                .services
                .iter()
                .map(|service| service_member(&service.name)),
        )
        .collect();
    let addresses = network::addresses(members.iter().map(String::as_str));
    let services_by_name: BTreeMap<&str, &launchway_config::Service> = environment
        .services
        .iter()
        .filter(|service| not_run(service).is_none())
        .map(|service| (service.name.as_str(), service))
        .collect();
    notes.extend(environment.services.iter().filter_map(not_run));
    let web_address = |app: &str| addresses.get(&app_member(app, "web")).copied();
    // The apps something sends requests to: routes, and relationships of
    // apps and services.
    let called: BTreeSet<&str> = environment
        .routes
        .iter()
        .filter_map(|route| route.upstream.as_deref())
        .chain(
            sorted
                .iter()
                .flat_map(|input| input.app.relationships.values())
                .chain(
                    sorted
                        .iter()
                        .flat_map(|input| input.app.workers.values())
                        .flat_map(|worker| worker.relationships.values()),
                )
                .chain(
                    environment
                        .services
                        .iter()
                        .flat_map(|service| service.relationships.values()),
                )
                .map(|relationship| relationship.service.as_str()),
        )
        .collect();
    let service_specs: Vec<ServiceSpec> = environment
        .services
        .iter()
        .filter_map(|service| {
            let address = addresses.get(&service_member(&service.name)).copied()?;
            // The apps a service calls (Varnish), where they listen.
            let mut backends = Vec::new();
            for (name, relationship) in &service.relationships {
                match (fronts.get(&relationship.service), web_address(&relationship.service)) {
                    (Some(port), Some(address)) => backends.push(Backend {
                        name: name.clone(),
                        address,
                        port: *port,
                    }),
                    _ => notes.push(format!(
                        "service '{}': relationship '{name}' to '{}' is not provided (only apps that serve TCP can be called)",
                        service.name, relationship.service
                    )),
                }
            }
            service_spec(
                service,
                address,
                environment.service_secret,
                environment.service_memory_mib,
                &backends,
            )
        })
        .collect();
    for spec in &service_specs {
        if let Some(note) = &spec.note {
            notes.push(format!("service '{}': {note}", spec.name));
        }
    }

    let specs = sorted
        .iter()
        .map(|input| {
            let app = input.app;
            let mut relationships = serde_json::Map::new();
            let mut relationship_variables: Vec<(String, String)> = Vec::new();
            let mut hosts = Vec::new();
            let mut reach = Filter::default();
            for (name, relationship) in &app.relationships {
                let target = fronts
                    .get(&relationship.service)
                    .zip(web_address(&relationship.service));
                match target {
                    Some((port, address)) => {
                        let host = format!("{name}.internal");
                        hosts.push((host.clone(), address));
                        reach.allowed.insert((address, APP_RELATIONSHIP_PORT));
                        reach.allowed.insert((address, *port));
                        relationships.insert(
                            name.clone(),
                            serde_json::json!([{
                                "scheme": "http",
                                "host": host,
                                "port": APP_RELATIONSHIP_PORT,
                                "username": null,
                                "password": null,
                                "path": null,
                                "query": {},
                                "fragment": null,
                                "rel": relationship.endpoint,
                                "service": relationship.service,
                                "type": "app",
                                "ip": address.to_string(),
                                "instance_ips": [address.to_string()],
                                "hostname": host,
                                "cluster": environment.environment,
                                "epoch": 0,
                                "public": false,
                                "host_mapped": false,
                            }]),
                        );
                    }
                    _ => {
                        let provided = services_by_name
                            .get(relationship.service.as_str())
                            .zip(
                                addresses
                                    .get(&service_member(&relationship.service))
                                    .copied(),
                            )
                            .and_then(|(service, address)| {
                                service_relationship(
                                    name,
                                    service,
                                    &relationship.endpoint,
                                    address,
                                    environment.service_secret,
                                    environment.project,
                                    environment.environment,
                                )
                                .map(|provided| (address, provided))
                            })
                            .filter(|(_, provided)| provided.port != 0);
                        match provided {
                            Some((address, provided)) => {
                                let host = format!("{name}.internal");
                                hosts.push((host, address));
                                reach.allowed.insert((address, provided.port));
                                relationships.insert(
                                    name.clone(),
                                    serde_json::Value::Array(vec![provided.entry]),
                                );
                                relationship_variables.extend(provided.variables);
                            }
                            None => notes.push(format!(
                                "app '{}': relationship '{name}' to '{}' is not provided yet",
                                app.name, relationship.service
                            )),
                        }
                    }
                }
            }
            reach.web_port = fronts.get(&app.name).copied();
            let server = servers.get(&app.name).cloned();
            if let (Some(server), Some(Listen::Port(port))) = (&server, listens.get(&app.name))
                && server.app_behind
            {
                reach.forwarded.insert(*port);
            }
            let (variables, all_variables) = merged_variables(app, environment.variables);
            let php_ini = if app.runtime.has_php() {
                // The extensions' configuration first, the `php:` variables
                // over it.
                let mut settings: serde_json::Map<String, serde_json::Value> = app
                    .php_extension_settings
                    .iter()
                    .map(|(name, value)| {
                        (
                            format!("php:{name}"),
                            serde_json::Value::String(value.clone()),
                        )
                    })
                    .collect();
                for (name, value) in &all_variables {
                    if name.starts_with("php:") {
                        settings.insert(name.clone(), value.clone());
                    }
                }
                php_ini_lines(&settings, &mut notes, &app.name)
            } else {
                Vec::new()
            };
            let mut env: BTreeMap<String, String> = variables;
            let mut platform: Vec<(&str, String)> = tool_env(None)
                .into_iter()
                .filter(|(name, _)| *name != "PATH")
                .collect();
            let application = serde_json::to_value(app).unwrap_or_default();
            let relationship_variables: Vec<(&str, String)> = relationship_variables
                .iter()
                .map(|(name, value)| (name.as_str(), value.clone()))
                .collect();
            platform.extend(relationship_variables);
            platform.extend([
                (
                    "PLATFORM_APPLICATION",
                    base64_text(application.to_string().as_bytes()),
                ),
                ("PLATFORM_APPLICATION_NAME", app.name.clone()),
                ("PLATFORM_PROJECT", environment.project.to_string()),
                ("PLATFORM_TREE_ID", input.tree_id.to_string()),
                ("PLATFORM_BRANCH", environment.environment.to_string()),
                ("PLATFORM_ENVIRONMENT", environment.environment.to_string()),
                ("PLATFORM_ENVIRONMENT_TYPE", environment.kind.to_string()),
                ("PLATFORM_ROUTES", base64_text(routes.as_bytes())),
                (
                    "PLATFORM_RELATIONSHIPS",
                    base64_text(
                        serde_json::Value::Object(relationships)
                            .to_string()
                            .as_bytes(),
                    ),
                ),
                (
                    "PLATFORM_VARIABLES",
                    base64_text(
                        serde_json::Value::Object(all_variables)
                            .to_string()
                            .as_bytes(),
                    ),
                ),
            ]);
            platform.extend([
                (
                    "PLATFORM_PROJECT_ENTROPY",
                    launchway_services::credentials::project_entropy(environment.service_secret),
                ),
                // Launchway relays no mail: empty, as Upsun has it with mail off.
                ("PLATFORM_SMTP_HOST", String::new()),
            ]);
            for (name, command) in [
                ("PLATFORM_PRE_APP_COMMAND", &app.web.pre_start),
                ("PLATFORM_APP_COMMAND", &app.web.start),
                ("PLATFORM_POST_APP_COMMAND", &app.web.post_start),
            ] {
                if let Some(command) = command {
                    platform.push((name, command.clone()));
                }
            }
            if let Some(root) = app.web.locations.get("/").and_then(|l| l.root.as_deref()) {
                let root = root.trim_matches('/');
                let path = if root.is_empty() {
                    APP_DIR.to_owned()
                } else {
                    format!("{APP_DIR}/{root}")
                };
                platform.push(("PLATFORM_DOCUMENT_ROOT", path));
            }
            if !app.disabled_extensions.is_empty() || !php_ini.is_empty() {
                // The supervisor links Debian's conf.d files but these
                // into /run/php.d, PHP's scan directory from then on, and
                // writes the `php:` variables there last.
                platform.push(("LAUNCHWAY_PHP_DISABLED", app.disabled_extensions.join(" ")));
                platform.push(("LAUNCHWAY_PHP_INI", php_ini.join("\n")));
                platform.push(("PHP_INI_SCAN_DIR", PHP_SCAN_DIR.to_owned()));
            }
            // A worker's own `variables` are app config: they beat the
            // app's, not the user's nor the platform's.
            let mut protected: BTreeSet<String> = environment
                .variables
                .iter()
                .filter_map(|v| v.name.strip_prefix("env:").map(str::to_owned))
                .collect();
            protected.extend(["PORT".to_owned(), "SOCKET".to_owned()]);
            for (name, value) in platform {
                protected.insert(name.to_string());
                env.insert(name.to_string(), value);
            }

            let app_mounts = mount_specs(&app.name, &app.mounts);
            let mut processes = Vec::new();
            // With a web server, nginx runs beside the app's start command,
            // or alone for a static site.
            let web_commands = match (&app.web.start, &server) {
                (Some(start), Some(_)) => Some((start.clone(), Some(NGINX_COMMAND.to_owned()))),
                (Some(start), None) => Some((start.clone(), None)),
                (None, Some(_)) => Some((NGINX_COMMAND.to_owned(), None)),
                (None, None) => None,
            };
            if let Some((start, server_command)) = web_commands {
                processes.push(ProcessSpec {
                    name: "web".into(),
                    pre_start: app.web.pre_start.clone(),
                    start,
                    post_start: app.web.post_start.clone(),
                    server: server_command,
                    web: true,
                    mounts: app_mounts.clone(),
                    extra_env: Vec::new(),
                    address: addresses
                        .get(&app_member(&app.name, "web"))
                        .copied()
                        .unwrap_or(Ipv4Addr::UNSPECIFIED),
                });
            }
            for (name, worker) in &app.workers {
                let mut mounts = app_mounts.clone();
                for extra in mount_specs(&app.name, &worker.mounts) {
                    mounts.retain(|m| m.target != extra.target);
                    mounts.push(extra);
                }
                let mut worker_env = env_variables(&worker.variables);
                worker_env.retain(|name, _| !protected.contains(name));
                let process = worker_process(name);
                processes.push(ProcessSpec {
                    address: addresses
                        .get(&app_member(&app.name, &process))
                        .copied()
                        .unwrap_or(Ipv4Addr::UNSPECIFIED),
                    name: process,
                    pre_start: worker.pre_start.clone(),
                    start: worker.start.clone(),
                    post_start: worker.post_start.clone(),
                    server: None,
                    web: false,
                    mounts,
                    extra_env: worker_env.into_iter().collect(),
                });
            }
            AppSpec {
                name: app.name.clone(),
                runtime: input.runtime.clone(),
                image: input.image.clone(),
                tree_id: input.tree_id.to_string(),
                listen: listens
                    .get(&app.name)
                    .cloned()
                    .unwrap_or(Listen::Port(APP_PORT)),
                env: env.into_iter().collect(),
                processes,
                deploy_hook: app.hooks.deploy.clone(),
                post_deploy_hook: app.hooks.post_deploy.clone(),
                hosts,
                reach,
                called: called.contains(app.name.as_str()),
                web_server: server,
                crons: app
                    .crons
                    .iter()
                    .map(|(name, cron)| CronSpec {
                        name: name.clone(),
                        spec: cron.spec.clone(),
                        start: cron.start.clone(),
                        stop: cron.stop.clone(),
                        shutdown_timeout: cron.shutdown_timeout,
                        timeout: cron.timeout,
                    })
                    .collect(),
                timezone: app.timezone.clone(),
            }
        })
        .collect();
    DeploySpec {
        project: environment.project.to_string(),
        environment: environment.environment.to_string(),
        routes: environment.routes.clone(),
        apps: specs,
        services: service_specs,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_variables_become_php_ini_lines() {
        let variables: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"php:memory_limit": "256M", "php:display_errors": true, "php:max_input_vars": 5000,
                "php:date.timezone": "Europe/Paris", "php:error_log": "/var/log/app errors.log",
                "php:bad\"name": "x", "php:auto_prepend_file": "a\"b", "env:PHP_X": "1"}"#,
        )
        .unwrap();
        let mut notes = Vec::new();
        let lines = php_ini_lines(&variables, &mut notes, "web");
        assert_eq!(
            lines,
            // In the order written (the config's, then the user's).
            [
                "memory_limit = 256M",
                "display_errors = On",
                "max_input_vars = 5000",
                "date.timezone = Europe/Paris",
                "error_log = \"/var/log/app errors.log\"",
            ]
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes.iter().any(|n| n.contains("php:auto_prepend_file")),
            "{notes:?}"
        );
    }
    use crate::routes::{RouteContext, resolve_routes};

    use crate::test_config as config;

    fn decode(value: &str) -> serde_json::Value {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    #[test]
    fn apps_get_ports_sockets_processes_mounts_and_variables() {
        let config = config(
            r#"applications:
  web:
    type: python:3.11
    relationships:
      backend: "api:http"
      db: "database:postgresql"
    mounts:
      uploads: {source: local, source_path: files}
      cache: {source: tmp}
    variables:
      env:
        MODE: live
    web:
      commands:
        start: serve
        post_start: check
    workers:
      queue:
        commands:
          start: work
        variables:
          env:
            MODE: worker
            PLATFORM_BRANCH: spoofed
            QUEUE: jobs
  api:
    type: python:3.11
    web:
      commands:
        start: api
  files:
    type: python:3.11
    web:
      upstream:
        socket_family: unix
      commands:
        start: files
services:
  database:
    type: postgresql:15
  front:
    type: varnish:7.1
    relationships:
      application: "api:http"
      sockets: "files:http"
    configuration:
      vcl: "sub vcl_recv { set req.backend_hint = application.backend(); }"
"#,
        );
        let apps: std::collections::BTreeSet<String> =
            config.applications.keys().cloned().collect();
        let (routes, route_notes) = resolve_routes(
            &config.routes,
            &apps,
            &RouteContext {
                project: "shop",
                branch: "main",
                base_domain: "localhost",
                port: 80,
                https_port: None,
                production: true,
            },
        );
        let services: Vec<launchway_config::Service> = config.services.values().cloned().collect();
        let inputs: Vec<AppInput<'_>> = config
            .applications
            .values()
            .map(|app| AppInput {
                app,
                runtime: "python:3.11".into(),
                tree_id: "t1",
                image: format!("launchway/build/{}", app.name),
            })
            .collect();
        let spec = deploy_spec(
            &EnvironmentInput {
                project: "shop",
                environment: "main",
                kind: "production",
                routes,
                route_notes,
                variables: &[
                    UserVariable {
                        name: "env:MODE".into(),
                        value: "from the environment".into(),
                        json: false,
                    },
                    UserVariable {
                        name: "env:PLATFORM_BRANCH".into(),
                        value: "spoofed".into(),
                        json: false,
                    },
                ],
                services: &services,
                service_secret: b"project secret",
                service_memory_mib: 256,
                app_memory_mib: 0,
            },
            &inputs,
        );
        // Sorted by name: api, files (on a socket), web; every app on 8888.
        assert_eq!(spec.apps[0].listen, Listen::Port(APP_PORT));
        assert_eq!(spec.apps[1].listen, Listen::Socket(SOCKET_PATH.into()));
        let web = &spec.apps[2];
        assert_eq!(web.listen, Listen::Port(APP_PORT));
        assert_eq!(web.processes.len(), 2);
        assert_eq!(web.processes[1].name, "worker-queue");
        let env: BTreeMap<String, String> = web
            .process_env(web.web().expect("web"))
            .into_iter()
            .collect();
        assert_eq!(env["PORT"], "8888");
        assert_eq!(
            env["MODE"], "from the environment",
            "user variables beat the app config"
        );
        assert_eq!(env["PLATFORM_BRANCH"], "main", "the platform's win");
        assert_eq!(
            decode(&env["PLATFORM_VARIABLES"])["env:MODE"],
            "from the environment"
        );
        assert_eq!(env["PLATFORM_ENVIRONMENT_TYPE"], "production");
        assert_eq!(env["PLATFORM_APP_DIR"], "/app");
        let worker_env: BTreeMap<String, String> =
            web.process_env(&web.processes[1]).into_iter().collect();
        assert!(!worker_env.contains_key("PORT"));
        assert_eq!(worker_env["QUEUE"], "jobs");
        assert_eq!(
            worker_env["MODE"], "from the environment",
            "a worker's config variables lose to user variables"
        );
        assert_eq!(worker_env["PLATFORM_BRANCH"], "main");
        let relationships = decode(&env["PLATFORM_RELATIONSHIPS"]);
        // App-to-app: reachable on port 80 of the target's address.
        let api = &spec.apps[0];
        let api_address = api.web().expect("api's web").address;
        assert_eq!(relationships["backend"][0]["host"], "backend.internal");
        assert_eq!(relationships["backend"][0]["port"], 80);
        assert_eq!(relationships["backend"][0]["ip"], api_address.to_string());
        assert!(web.reach.allowed.contains(&(api_address, 80)));
        assert!(web.reach.allowed.contains(&(api_address, APP_PORT)));
        assert_eq!(api.reach.web_port, Some(APP_PORT));
        assert!(api.called, "`web` relates to it");
        assert!(spec.apps[1].called, "the Varnish `front` relates to it");
        assert!(
            !web.called,
            "no route here, and nothing relates to `web`: {:?}",
            spec.routes
        );
        assert_eq!(spec.apps[1].reach.web_port, None, "on a socket");
        // Every process has an address of its own.
        let all: BTreeSet<Ipv4Addr> = spec
            .apps
            .iter()
            .flat_map(|app| app.processes.iter().map(|p| p.address))
            .collect();
        assert_eq!(all.len(), 4, "{all:?}");
        // The service: its entry, its address in /etc/hosts, its port in
        // the filter, its variables, and its container in the spec.
        let database = &spec.services[0];
        assert_eq!(database.name, "database");
        assert_eq!(relationships["db"][0]["scheme"], "pgsql");
        assert_eq!(relationships["db"][0]["ip"], database.address.to_string());
        assert_eq!(relationships["db"][0]["password"], database.secrets[0]);
        assert!(web.reach.allowed.contains(&(database.address, 5432)));
        assert!(hosts_file(web).contains(&format!("{}\tdb.internal", database.address)));
        assert_eq!(env["DB_HOST"], "db.internal");
        assert!(env["DB_URL"].starts_with("pgsql://main:"));
        assert!(hosts_file(web).contains(&format!("{api_address}\tbackend.internal")));
        // Varnish calls the app it names, and only that; port 80 is its own.
        let front = &spec.services[1];
        assert_eq!(front.name, "front");
        assert_eq!(
            front.filter.allowed,
            BTreeSet::from([(api_address, APP_PORT)])
        );
        assert_eq!(front.filter.web_port, Some(8080));
        assert!(
            front
                .program
                .contains(&format!(".host = \"{api_address}\""))
        );
        assert_eq!(
            database.filter,
            Filter::default(),
            "a database calls no one"
        );
        assert_eq!(
            spec.notes,
            [
                "service 'front': relationship 'sockets' to 'files' is not provided (only apps that serve TCP can be called)"
            ]
        );
        let routes = decode(&env["PLATFORM_ROUTES"]);
        assert!(routes.is_object(), "{routes}");
        let uploads = web.processes[0]
            .mounts
            .iter()
            .find(|m| m.target == "/app/uploads")
            .expect("uploads");
        assert_eq!(
            (uploads.kind, uploads.volume.as_str()),
            (MountKind::Persistent, "volumes/web/files")
        );
        let cache = web.processes[0]
            .mounts
            .iter()
            .find(|m| m.target == "/app/cache")
            .expect("cache");
        assert_eq!(
            (cache.kind, cache.volume.as_str()),
            (MountKind::Temporary, "tmp/web/cache")
        );
        assert_eq!(environment_id("shop", "main").len(), 12);
        assert_ne!(
            environment_id("shop", "main"),
            environment_id("shop", "dev")
        );
    }
}
