//! Launchway's deploy logic, pure (no I/O, no async): what a deploy does is
//! decided here and carried out by the daemon.
//!
//! - [`routes`]: the config's route templates resolved for one environment
//!   (host names, redirects, `PLATFORM_ROUTES`);
//! - [`spec`]: a [`DeploySpec`] — per app its image, listen address,
//!   processes (web and workers), mounts, runtime variables and hooks —
//!   stored with the release so it can be started again without git;
//! - [`network`]: the environment network: member addresses and the rules
//!   of what each member may reach;
//! - [`services`]: each service's container (image, program, readiness,
//!   configuration) and what apps see of it (relationships, hosts, filter);
//! - [`phase`]: the deploy's phases in order, each persisted before its
//!   effect runs;
//! - [`web_server`]: nginx's configuration from `web.locations` and
//!   PHP-FPM's pool, for the web server in front of an app.

pub mod network;
pub mod phase;
pub mod routes;
pub mod services;
pub mod spec;
pub mod web_server;

pub use phase::Phase;
pub use routes::{ResolvedRoute, RouteContext, RouteKind, resolve_routes, routes_json};
pub use spec::{
    AppInput, AppSpec, CronSpec, DeploySpec, EnvironmentInput, Listen, MountKind, MountSpec,
    ProcessSpec, SUPERVISOR, app_member, deploy_spec, environment_id, hosts_file,
};

/// The config of a one-file Upsun repository, for tests.
#[cfg(test)]
pub(crate) fn test_config(yaml: &str) -> launchway_config::Config {
    let source = launchway_config::MemSource::new().with(".upsun/config.yaml", yaml);
    let loaded = launchway_config::load(&source);
    loaded
        .config
        .unwrap_or_else(|| panic!("{}", loaded.diagnostics))
}
