//! The native config format as written: every key Launchway reads, in every form
//! Upsun and Platform.sh accept.
//!
//! These types are the single source of truth for the format: the JSON Schema
//! in `config-schema/` is generated from them, and validation runs that schema
//! over the located YAML tree before these types are decoded (so decoding a
//! document that passed validation cannot fail). Normalization into the
//! canonical model ([`crate::Config`]) happens in `normalize`.
//!
//! Keys Launchway does not act on yet are still described here (often as free
//! JSON), so they are kept rather than rejected as unknown.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `runtime:version`, e.g. `python:3.11`, `composable:25.05`, `redis-persistent:7.2`.
pub const TYPE_PATTERN: &str = r"^[a-z][a-z0-9._-]*:[A-Za-z0-9][A-Za-z0-9._+-]*$";

/// Any JSON value, for keys kept as written.
pub type Any = serde_json::Value;

/// A whole config document in the native (Upsun) single-file format.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "Launchway repository configuration",
    description = "The native format of `.launchway/*.yaml` (also read from `.upsun/*.yaml`), compatible with Upsun's single-file configuration."
)]
pub struct ConfigFile {
    /// Applications, keyed by name (lowercase letters, digits, `-` and `_`).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub applications: IndexMap<String, AppConfig>,
    /// Services (databases, caches, …), keyed by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub services: IndexMap<String, ServiceConfig>,
    /// Routes, keyed by URL template such as `https://{default}/`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub routes: IndexMap<String, RouteConfig>,
}

/// One application.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The app's name (Platform.sh layout; in the native format the map key is the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The runtime, as `runtime:version` (e.g. `python:3.11`), or `composable:<channel>` with `stack`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TYPE_PATTERN))]
    pub app_type: Option<String>,
    /// Composable image: runtimes and packages, e.g. `["php@8.4", "nodejs@22"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackConfig>,
    /// Where the app's code is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceConfig>,
    /// How the app is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildConfig>,
    /// Packages installed globally before the build hook, per language manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<BTreeMap<String, BTreeMap<String, ScalarText>>>,
    /// Shell scripts run at build, deploy and post-deploy time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HooksConfig>,
    /// How the app is started and served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebConfig>,
    /// Writable directories, keyed by path relative to the app root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<IndexMap<String, MountConfig>>,
    /// Services and apps this app talks to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationships: Option<IndexMap<String, Option<RelationshipConfig>>>,
    /// Variables by prefix: `env:` ones become environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<BTreeMap<String, Option<BTreeMap<String, Any>>>>,
    /// Disk size in MB (Platform.sh), or null for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    /// Container size (Platform.sh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// Legacy resource sizing (`base_memory`, `memory_ratio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Any>,
    /// CPU:RAM ratio profile (Upsun).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_profile: Option<ContainerProfile>,
    /// Scheduled tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crons: Option<IndexMap<String, CronConfig>>,
    /// Background processes from the same build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<IndexMap<String, WorkerConfig>>,
    /// Time zone for crons (logs stay in UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Who may open a shell in the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessConfig>,
    /// Outbound traffic rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<FirewallConfig>,
    /// Runtime-specific settings (PHP extensions, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Any>,
    /// Extra `/etc/hosts` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_hosts: Option<BTreeMap<String, String>>,
    /// Runtime operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Any>,
    /// Pre-flight checks (schema only upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight: Option<Any>,
}

/// A composable image's stack: a list, or runtimes and packages apart.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum StackConfig {
    /// `["php@8.4", "nodejs@22", {"python@3.12": {…}}]`.
    List(Vec<Any>),
    /// `{runtimes: […], packages: […]}`.
    Split {
        /// Language runtimes.
        #[serde(default)]
        runtimes: Vec<Any>,
        /// Extra packages.
        #[serde(default)]
        packages: Vec<Any>,
    },
}

/// A scalar kept as text (dependency versions, durations): strings, numbers or booleans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ScalarText(pub String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(ScalarText(s)),
            serde_json::Value::Number(n) => Ok(ScalarText(n.to_string())),
            serde_json::Value::Bool(b) => Ok(ScalarText(b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a string or number, found {other}"
            ))),
        }
    }
}

impl JsonSchema for ScalarText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ScalarText".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

/// `source`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The app's directory, relative to the repository root (the build context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// On-demand source operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Any>,
}

/// `build`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// The build flavor; defaults per runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<FlavorConfig>,
    /// Build caches (schema only upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caches: Option<Any>,
}

/// `build.flavor` as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FlavorConfig {
    /// No flavor step.
    None,
    /// The runtime's default (npm for Node.js, composer for PHP).
    Default,
    /// `composer install`.
    Composer,
    /// Legacy PHP flavor; runs composer.
    Drupal,
    /// Legacy PHP flavor; runs composer.
    Symfony,
}

/// `hooks`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// Runs at build time, without network, services or mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// Runs at deploy time, requests held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<String>,
    /// Runs after deploy, with traffic flowing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_deploy: Option<String>,
}

/// `web`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// `pre_start`, `start`, `post_start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<WebCommandsConfig>,
    /// How the router talks to the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamConfig>,
    /// Static files and passthru rules, keyed by URL prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<IndexMap<String, LocationConfig>>,
    /// Legacy: the document root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_root: Option<String>,
    /// Legacy: passthru.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthru: Option<Any>,
    /// Legacy: index files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_files: Option<Vec<String>>,
    /// Legacy: allowed patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whitelist: Option<Vec<String>>,
    /// Legacy: denied patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blacklist: Option<Vec<String>>,
    /// Legacy: cache lifetime of static files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<ScalarText>,
    /// Legacy: whether to move the document root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_to_root: Option<bool>,
}

/// `web.commands`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebCommandsConfig {
    /// Runs before `start`; does not block the deploy hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_start: Option<String>,
    /// The app's server; restarted when it exits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Runs after `start`, before the instance receives traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<String>,
}

/// `web.upstream`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `tcp` (listen on `$PORT`) or `unix` (listen on `$SOCKET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_family: Option<SocketFamily>,
    /// `http`, or `fastcgi` (PHP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

/// Where the app listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SocketFamily {
    /// A TCP port, `$PORT`.
    Tcp,
    /// A unix socket, `$SOCKET`.
    Unix,
}

/// What the app speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1.
    Http,
    /// FastCGI (PHP-FPM).
    Fastcgi,
}

/// `web.locations.<prefix>`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    /// Directory served, relative to the app root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// `false`, `true`, or a path such as `/index.php`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthru: Option<Any>,
    /// Index files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Vec<String>>,
    /// Cache lifetime (`-1` = off; ms s m h d w M y).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<ScalarText>,
    /// Whether files are served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<bool>,
    /// Whether scripts run (PHP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scripts: Option<bool>,
    /// Response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, ScalarText>>,
    /// Per-regex overrides (PCRE syntax, kept as text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<IndexMap<String, Any>>,
    /// Request buffering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_buffering: Option<Any>,
}

/// `mounts.<path>`: the full form, or Platform.sh's legacy `"shared:files/<path>"`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum MountConfig {
    /// `{source, source_path, service}`.
    Full(MountFullConfig),
    /// `"shared:files/uploads"`.
    Legacy(String),
}

/// The full form of a mount.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountFullConfig {
    /// What backs the mount.
    pub source: MountSource,
    /// Subdirectory of the volume; defaults to the mount path without slashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
    /// The `network-storage` service, for `source: service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// What backs a mount.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MountSource {
    /// Persistent, on the app's disk (Platform.sh).
    Local,
    /// Persistent, shared by the app's instances (Upsun).
    Storage,
    /// Persistent, per instance (Upsun).
    Instance,
    /// Emptied on each deploy.
    Tmp,
    /// Same as `tmp`.
    Temporary,
    /// A `network-storage` service.
    Service,
}

/// `relationships.<name>` (the null form is an absent value).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RelationshipConfig {
    /// `"service:endpoint"`.
    Legacy(String),
    /// `{service, endpoint}`.
    Long(RelationshipLongConfig),
}

/// The long form of a relationship.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RelationshipLongConfig {
    /// The service or app; defaults to the relationship's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The endpoint; defaults to the service's default endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Container size (Platform.sh).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Size {
    /// Chosen by the platform.
    #[serde(rename = "AUTO")]
    Auto,
    /// Small.
    S,
    /// Medium.
    M,
    /// Large.
    L,
    /// Extra large.
    XL,
    /// 2×XL.
    #[serde(rename = "2XL")]
    Xl2,
    /// 4×XL.
    #[serde(rename = "4XL")]
    Xl4,
}

/// CPU:RAM ratio profile (Upsun).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerProfile {
    /// More CPU per GB.
    HighCpu,
    /// Balanced.
    Balanced,
    /// More memory per CPU.
    HighMemory,
    /// Even more memory per CPU.
    HigherMemory,
}

/// `crons.<name>`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CronConfig {
    /// Five cron fields (`H` allowed for a stable hashed value).
    pub spec: String,
    /// What to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<CronCommandsConfig>,
    /// Legacy: the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Seconds given to `stop` before the cron is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<u64>,
    /// Seconds a run may last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// `crons.<name>.commands`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CronCommandsConfig {
    /// The command.
    pub start: String,
    /// Run when the cron is cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
}

/// `workers.<name>`: a process from the app's build, without public traffic.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// What to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<WorkerCommandsConfig>,
    /// Overrides the app's mounts (whole key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<IndexMap<String, MountConfig>>,
    /// Overrides the app's relationships (whole key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationships: Option<IndexMap<String, Option<RelationshipConfig>>>,
    /// Overrides the app's variables (whole key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<BTreeMap<String, Option<BTreeMap<String, Any>>>>,
    /// Disk (Platform.sh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    /// Size (Platform.sh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// Legacy resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Any>,
    /// Profile (Upsun).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_profile: Option<ContainerProfile>,
    /// Shell access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessConfig>,
    /// Outbound traffic rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<FirewallConfig>,
}

/// `workers.<name>.commands`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerCommandsConfig {
    /// Runs before `start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_start: Option<String>,
    /// The worker's process; restarted when it exits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Runs after `start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<String>,
}

/// `access`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// The minimum role allowed to open a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<Role>,
}

/// A project role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Push to non-default branches.
    Contributor,
    /// Read only.
    Viewer,
}

/// `firewall`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Outbound rules; a request passes when any matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<Vec<OutboundRule>>,
}

/// One outbound rule.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundRule {
    /// CIDR ranges (not with `domains`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ips: Option<Vec<String>>,
    /// Domain names (not with `ips`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domains: Option<Vec<String>>,
    /// Ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
}

/// `services.<name>`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `name:version`, e.g. `postgresql:15`.
    #[serde(rename = "type")]
    #[schemars(regex(pattern = TYPE_PATTERN))]
    pub service_type: String,
    /// Disk in MB (Platform.sh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    /// Size (Platform.sh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// Per-service configuration (databases, endpoints, cores, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Any>,
    /// For services that call apps (varnish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationships: Option<IndexMap<String, Option<RelationshipConfig>>>,
    /// Profile (Upsun).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_profile: Option<ContainerProfile>,
    /// Legacy resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Any>,
}

/// `routes.<url>`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `upstream`, `redirect` or `proxy`.
    #[serde(rename = "type")]
    pub route_type: RouteType,
    /// `<app>:http`, for upstream routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Target, for redirect and proxy routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Stable identifier, so an app can find its URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The primary route (at most one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    /// HTTP cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    /// Server-side includes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssi: Option<Any>,
    /// Partial redirects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirects: Option<RedirectsConfig>,
    /// TLS settings of an `https://` route's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RouteTlsConfig>,
    /// Free attributes passed to `PLATFORM_ROUTES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, Any>>,
    /// Sticky sessions by client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Any>,
}

/// What a route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RouteType {
    /// Served by an app.
    Upstream,
    /// A 301 to `to`.
    Redirect,
    /// Proxied to an outside URL.
    Proxy,
}

/// `routes.<url>.tls`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTlsConfig {
    /// The `Strict-Transport-Security` header of HTTPS responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_transport_security: Option<HstsConfig>,
    /// The lowest TLS version accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<TlsVersionName>,
    /// Whether clients must present a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_authentication: Option<ClientAuthentication>,
    /// PEM certificates of the CAs a client certificate must chain to
    /// (usually `!include {type: string, path: ca.crt}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_authorities: Option<Vec<String>>,
}

/// `routes.<url>.tls.strict_transport_security`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HstsConfig {
    /// Whether the header is sent (default: false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Adds `includeSubDomains`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_subdomains: Option<bool>,
    /// Adds `preload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload: Option<bool>,
    /// `max-age`, seconds (default: one year, as Upsun sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
}

/// A TLS version as Upsun names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TlsVersionName {
    #[serde(rename = "TLSv1.0")]
    Tls10,
    #[serde(rename = "TLSv1.1")]
    Tls11,
    #[serde(rename = "TLSv1.2")]
    Tls12,
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

/// `routes.<url>.tls.client_authentication`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthentication {
    /// A certificate is asked for and checked when given.
    Request,
    /// A connection without a valid certificate is refused.
    Require,
}

/// `routes.<url>.cache`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether responses are cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Seconds, when the app sends no cache headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<u64>,
    /// Cookies in the cache key (`["*"]`: any cookie bypasses the cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookies: Option<Vec<String>>,
    /// Request headers in the cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
}

/// `routes.<url>.redirects`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedirectsConfig {
    /// Cache lifetime of the redirects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<ScalarText>,
    /// Redirects by path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<IndexMap<String, RedirectPathConfig>>,
}

/// One partial redirect.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedirectPathConfig {
    /// Target.
    pub to: String,
    /// Whether the key is a regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<bool>,
    /// Whether sub-paths redirect too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<bool>,
    /// Whether the rest of the path is appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_suffix: Option<bool>,
    /// 301, 302, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Cache lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<ScalarText>,
}
