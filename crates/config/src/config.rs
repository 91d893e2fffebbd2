//! The canonical config: one shape whatever the layout, with defaults applied.
//!
//! Everything downstream (build keys, the deploy, the router) reads these types,
//! never the input model. Keys Launchway does not act on yet are kept, as
//! written, in each item's `kept` map so nothing the author wrote is lost.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::layout::Layout;
use crate::model::{
    Any, CacheConfig, HooksConfig, LocationConfig, MountSource, Protocol, RedirectsConfig,
    RouteType, SocketFamily, StackConfig,
};

/// A validated, normalized repository config.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// The layout it was read from.
    pub layout: Layout,
    /// Applications by name.
    pub applications: BTreeMap<String, App>,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// Routes in the order written, then the generated ones.
    pub routes: Vec<Route>,
}

/// One application.
#[derive(Clone, Debug, Serialize)]
pub struct App {
    /// The app's name.
    pub name: String,
    /// What it runs on.
    pub runtime: Runtime,
    /// The build context, relative to the repository root (`""` is the root).
    pub source_root: String,
    /// The flavor step run before the build hook.
    pub flavor: Flavor,
    /// Global packages per manager (`python3`, `nodejs`, `php`, `ruby`, …), versions as text.
    pub dependencies: BTreeMap<String, BTreeMap<String, String>>,
    /// Build, deploy and post-deploy hooks.
    pub hooks: HooksConfig,
    /// Commands and upstream.
    pub web: Web,
    /// Mounts by normalized path (relative to the app root, no leading or trailing `/`).
    pub mounts: BTreeMap<String, Mount>,
    /// Relationships by name.
    pub relationships: BTreeMap<String, Relationship>,
    /// Variables by prefix (`env`, `php`, …), then name.
    pub variables: BTreeMap<String, BTreeMap<String, Any>>,
    /// Crons by name.
    pub crons: BTreeMap<String, Cron>,
    /// Workers by name.
    pub workers: BTreeMap<String, Worker>,
    /// Time zone of the crons.
    pub timezone: String,
    /// PHP extensions turned off (`runtime.disabled_extensions`, those
    /// this host has).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disabled_extensions: Vec<String>,
    /// php.ini settings of the extensions' `configuration`
    /// (`redis.serializer` → `igbinary`), those this host has.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub php_extension_settings: BTreeMap<String, String>,
    /// PHP-FPM's sizing (`runtime.sizing_hints`), when the app writes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub php_sizing: Option<PhpSizing>,
    /// Keys kept as written that Launchway does not act on yet.
    pub kept: BTreeMap<String, Any>,
}

/// `runtime.sizing_hints` of a PHP app: how PHP-FPM's worker count is
/// derived from the container's memory, `(memory - reserved) / request`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PhpSizing {
    /// Memory one request takes, MiB (Upsun's default: 45).
    pub request_memory_mib: u64,
    /// Memory kept for the rest of the container, MiB (Upsun's default: 70).
    pub reserved_memory_mib: u64,
}

impl Default for PhpSizing {
    fn default() -> Self {
        PhpSizing {
            request_memory_mib: 45,
            reserved_memory_mib: 70,
        }
    }
}

/// What an app runs on.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Runtime {
    /// One runtime image, such as `python:3.11`.
    Single {
        /// `python`.
        name: String,
        /// `3.11`.
        version: String,
    },
    /// A composable image built from a stack.
    Composable {
        /// The channel of `composable:<channel>`, when given.
        channel: Option<String>,
        /// The runtimes and packages.
        stack: StackConfig,
    },
}

impl Runtime {
    /// The runtime family, e.g. `python` or `composable`.
    pub fn family(&self) -> &str {
        match self {
            Runtime::Single { name, .. } => name,
            Runtime::Composable { .. } => "composable",
        }
    }

    /// Whether PHP runs the app: a `php:` type, or a stack with PHP.
    pub fn has_php(&self) -> bool {
        match self {
            Runtime::Single { name, .. } => name == "php",
            Runtime::Composable { stack, .. } => crate::stack::stack_entries(stack)
                .iter()
                .any(|entry| entry.runtime && entry.name.starts_with("php@")),
        }
    }
}

/// The flavor step of a build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// Nothing.
    None,
    /// `npm prune && npm install` when `package.json` exists.
    Npm,
    /// `composer install` when `composer.json` exists.
    Composer,
}

/// `web`, normalized.
#[derive(Clone, Debug, Serialize)]
pub struct Web {
    /// Runs before `start`.
    pub pre_start: Option<String>,
    /// The server command (PHP defaults to `/usr/bin/start-php-app`).
    pub start: Option<String>,
    /// Readiness gate after `start`.
    pub post_start: Option<String>,
    /// `tcp` (`$PORT`) or `unix` (`$SOCKET`).
    pub socket_family: SocketFamily,
    /// `http` or `fastcgi`.
    pub protocol: Protocol,
    /// Locations by prefix, as written.
    pub locations: IndexMap<String, LocationConfig>,
}

/// One mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// What backs it (`temporary` is normalized to `tmp`).
    pub source: MountSource,
    /// The subdirectory of the volume.
    pub source_path: String,
    /// The `network-storage` service, for `source: service`.
    pub service: Option<String>,
}

/// One relationship, with its defaults resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Relationship {
    /// The service or app it reaches.
    pub service: String,
    /// The endpoint.
    pub endpoint: String,
}

/// One cron.
#[derive(Clone, Debug, Serialize)]
pub struct Cron {
    /// The schedule.
    pub spec: String,
    /// What runs.
    pub start: String,
    /// What runs on cancellation.
    pub stop: Option<String>,
    /// Seconds given to `stop`.
    pub shutdown_timeout: u64,
    /// Seconds a run may last.
    pub timeout: u64,
}

/// One worker: the app's build, another command, no public traffic.
#[derive(Clone, Debug, Serialize)]
pub struct Worker {
    /// Runs before `start`.
    pub pre_start: Option<String>,
    /// The process.
    pub start: String,
    /// Runs after `start`.
    pub post_start: Option<String>,
    /// The app's mounts unless the worker gives its own.
    pub mounts: BTreeMap<String, Mount>,
    /// The app's relationships unless the worker gives its own.
    pub relationships: BTreeMap<String, Relationship>,
    /// The app's variables unless the worker gives its own.
    pub variables: BTreeMap<String, BTreeMap<String, Any>>,
    /// Keys kept as written that Launchway does not act on yet.
    pub kept: BTreeMap<String, Any>,
}

/// One service.
#[derive(Clone, Debug, Serialize)]
pub struct Service {
    /// The service's name.
    pub name: String,
    /// `postgresql`.
    pub kind: String,
    /// `15`.
    pub version: String,
    /// Endpoints relationships may name; empty when the type is not known to Launchway.
    pub endpoints: Vec<String>,
    /// Relationships of services that call apps.
    pub relationships: BTreeMap<String, Relationship>,
    /// Keys kept as written that Launchway does not act on yet.
    pub kept: BTreeMap<String, Any>,
}

/// One route.
#[derive(Clone, Debug, Serialize)]
pub struct Route {
    /// The URL template as written, e.g. `https://{default}/`.
    pub url: String,
    /// What it does.
    #[serde(rename = "type")]
    pub route_type: RouteType,
    /// What serves an upstream route: an app, or a routable service (varnish).
    pub upstream: Option<String>,
    /// The target of a redirect or proxy route.
    pub to: Option<String>,
    /// Stable id.
    pub id: Option<String>,
    /// Whether this is the primary route (exactly one is).
    pub primary: bool,
    /// HTTP cache.
    pub cache: Option<CacheConfig>,
    /// Partial redirects.
    pub redirects: Option<RedirectsConfig>,
    /// Free attributes.
    pub attributes: BTreeMap<String, Any>,
    /// True for routes Launchway added (the default route, http→https redirects).
    pub generated: bool,
    /// Its host's TLS settings (`https://` routes).
    pub tls: Option<RouteTls>,
    /// Keys kept as written that Launchway does not act on yet.
    pub kept: BTreeMap<String, Any>,
}

/// A route's TLS settings, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTls {
    /// The `Strict-Transport-Security` value, when enabled.
    pub strict_transport_security: Option<String>,
    /// Only TLS 1.3 (`min_version: TLSv1.3`); lower minimums are what the
    /// router offers anyway (TLS 1.2 and 1.3).
    pub tls13_only: bool,
    /// Clients must present a certificate chaining to these CAs.
    pub require_client_certificate: bool,
    /// PEM texts of the client CAs.
    pub client_certificate_authorities: Vec<String>,
}
