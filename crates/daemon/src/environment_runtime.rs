//! Where an environment's processes live and how they are reached: its
//! directories (`<data>/environments/<id>/…`), its network and socket
//! factory, the router's entries and backends, stopping its containers,
//! and putting routing back at start-up. Used by deploys (`deploy.rs`,
//! `deploy_start.rs`), restores, crons and environment operations alike.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use launchway_containerd::WEB_UID;
use launchway_deploy::network::{HUB_ADDRESS, PREFIX_LEN};
use launchway_deploy::{
    AppSpec, DeploySpec, Listen, Phase, ProcessSpec, RouteKind, environment_id,
};
use launchway_net::EnvironmentNetwork;
use launchway_router::{Action, Endpoint, RouteEntry, SocketFactory};
use launchway_store::ReleaseStatus;
use tracing::warn;

use crate::Daemon;
use crate::deploy::{Started, parse_phase};

/// `<project>/<environment>`: the router's and containers' name for an environment.
pub(crate) fn environment_key(project: &str, environment: &str) -> String {
    format!("{project}/{environment}")
}

/// `PATH` in an app's containers: the global dependencies, then the image's.
pub(crate) fn app_path(image: &launchway_containerd::Image) -> String {
    let image_path = image
        .env()
        .iter()
        .find_map(|e| e.strip_prefix("PATH=").map(str::to_string));
    launchway_build::env::tool_env(image_path.as_deref())
        .into_iter()
        .find(|(name, _)| *name == "PATH")
        .map(|(_, value)| value)
        .unwrap_or_default()
}

/// The file name of nginx's socket for the router, in the web process's
/// run directory (its `/run`).
fn web_server_socket_name() -> &'static str {
    let socket = launchway_deploy::web_server::WEB_SERVER_SOCKET;
    socket.rsplit('/').next().unwrap_or(socket)
}

impl Daemon {
    pub(crate) fn environment_dir(&self, project: &str, environment: &str) -> PathBuf {
        self.settings
            .data_dir
            .join("environments")
            .join(environment_id(project, environment))
    }

    /// The environment's network (its hub and members' namespaces).
    pub(crate) fn network(&self, project: &str, environment: &str) -> EnvironmentNetwork {
        EnvironmentNetwork::new(
            &self.settings.data_dir.join("netns"),
            &environment_id(project, environment),
        )
    }

    /// The environment network's hub (made if needed) and the socket
    /// factory that dials into it.
    pub(crate) fn socket_factory(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<Arc<SocketFactory>, String> {
        let key = environment_key(project, environment);
        let mut factories = match self.factories.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(factory) = factories.get(&key) {
            return Ok(factory.clone());
        }
        let network = self.network(project, environment);
        let path = network.hub().to_path_buf();
        let made = launchway_net::link::ensure_hub(&path, HUB_ADDRESS, PREFIX_LEN)
            .map_err(|error| error.to_string())
            .and_then(|()| SocketFactory::start(&path).map_err(|error| error.to_string()));
        let factory = Arc::new(made.map_err(|error| {
            warn!(%error, path = %path.display(), "network namespace");
            format!("cannot create the environment's network: {error}")
        })?);
        factories.insert(key, factory.clone());
        Ok(factory)
    }

    /// The routes the router serves for `spec`.
    pub(crate) fn router_entries(spec: &DeploySpec) -> Vec<RouteEntry> {
        spec.routes
            .iter()
            .filter_map(|route| {
                let action = match route.kind {
                    RouteKind::Upstream => Action::Upstream {
                        app: route.upstream.clone()?,
                    },
                    RouteKind::Redirect => Action::Redirect {
                        to: route.to.clone()?,
                        code: 301,
                    },
                };
                let mut entry = RouteEntry::new(&route.host, &route.path, action);
                // Redirected from plain HTTP only once the router serves HTTPS.
                entry.https = route.original_url.starts_with("https://");
                if let Some(tls) = &route.tls {
                    entry.hsts = tls.strict_transport_security.clone();
                    // The CAs were checked as PEM when the config was read;
                    // one rustls still cannot use fails closed: the host
                    // refuses handshakes rather than skip client checks.
                    entry.tls = launchway_router::tls::HostTls::new(
                        tls.tls13_only,
                        &tls.client_certificate_authorities,
                        !tls.require_client_certificate,
                    )
                    .unwrap_or_else(|error| {
                        warn!(host = %route.host, %error, "route TLS settings cannot be applied; the host refuses HTTPS");
                        launchway_router::tls::HostTls {
                            refused: Some(format!("client CAs of {}: {error}", route.host)),
                            ..Default::default()
                        }
                    });
                }
                Some(entry)
            })
            .collect()
    }

    /// `[deploy] ca_bundle`, staged for app containers; `None` when off.
    pub(crate) fn app_ca_bundle(&self) -> std::io::Result<Option<PathBuf>> {
        let source = launchway_build::trust::CaSource::parse(&self.settings.deploy.ca_bundle)
            .unwrap_or(launchway_build::trust::CaSource::Off);
        let Some(file) = source.file() else {
            return Ok(None);
        };
        let dir = self.settings.data_dir.join("ca-bundle-apps");
        launchway_build::trust::stage_bundle(&file, &dir)
            .map(Some)
            .map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    error
                        .to_string()
                        .replace("[build] ca_bundle", "[deploy] ca_bundle"),
                )
            })
    }

    pub(crate) fn run_dir(&self, spec: &DeploySpec, app: &str, process: &str) -> PathBuf {
        self.environment_dir(&spec.project, &spec.environment)
            .join("run")
            .join(format!("{app}-{process}"))
    }

    pub(crate) fn log_path(
        &self,
        project: &str,
        environment: &str,
        app: &str,
        process: &str,
    ) -> PathBuf {
        let name = if process == "web" {
            format!("{app}.log")
        } else {
            format!("{app}--{process}.log")
        };
        self.environment_dir(project, environment)
            .join("logs")
            .join(name)
    }

    /// Where each app of `spec` takes its traffic.
    /// Where `app` itself listens (behind its web server, if it has one).
    pub(crate) fn app_endpoint(
        &self,
        spec: &DeploySpec,
        app: &AppSpec,
        factory: &Arc<SocketFactory>,
    ) -> Endpoint {
        let address = app.web().map_or(HUB_ADDRESS, |web| web.address);
        match &app.listen {
            Listen::Port(port) => Endpoint::Tcp {
                netns: Some(factory.clone()),
                address: std::net::SocketAddr::new(address.into(), *port),
            },
            Listen::Socket(path) => {
                let name = Path::new(path)
                    .file_name()
                    .map_or_else(|| "app.sock".into(), |n| n.to_os_string());
                Endpoint::Unix {
                    path: self.run_dir(spec, &app.name, "web").join(name),
                    peer_uid: Some(WEB_UID),
                }
            }
        }
    }

    pub(crate) fn backends(
        &self,
        spec: &DeploySpec,
        factory: &Arc<SocketFactory>,
    ) -> HashMap<String, Endpoint> {
        spec.apps
            .iter()
            .filter(|app| app.web().is_some())
            .map(|app| {
                let endpoint = match &app.web_server {
                    Some(_) => Endpoint::Unix {
                        path: self
                            .run_dir(spec, &app.name, "web")
                            .join(web_server_socket_name()),
                        peer_uid: Some(WEB_UID),
                    },
                    None => self.app_endpoint(spec, app, factory),
                };
                (app.name.clone(), endpoint)
            })
            .chain(
                spec.services
                    .iter()
                    .filter(|service| service.filter.web_port.is_some())
                    .map(|service| {
                        let endpoint = Endpoint::Tcp {
                            netns: Some(factory.clone()),
                            address: std::net::SocketAddr::new(
                                service.address.into(),
                                launchway_deploy::spec::APP_RELATIONSHIP_PORT,
                            ),
                        };
                        (service.name.clone(), endpoint)
                    }),
            )
            .collect()
    }

    pub(crate) fn public_router_port(&self) -> u16 {
        if self.settings.router.public_port != 0 {
            self.settings.router.public_port
        } else {
            self.router_addr.port()
        }
    }

    /// The HTTPS port printed in URLs, when the router serves HTTPS.
    pub(crate) fn public_https_port(&self) -> Option<u16> {
        let bound = self.router_https_addr?;
        Some(match self.settings.router.https_public_port {
            0 => bound.port(),
            port => port,
        })
    }

    /// Stops containers (SIGTERM, grace, SIGKILL) until their processes
    /// ended, all at once, keeping their tasks, records and snapshots (a
    /// deploy deletes them once requests flow again). Returns those still
    /// running, and whether containerd was not answering for any of them.
    pub(crate) async fn stop_only(&self, ids: &[String]) -> (Vec<String>, bool) {
        let grace = Duration::from_secs(self.settings.deploy.stop_grace_secs);
        left_behind(ids.iter().map(|id| async move {
            match self.engine.halt_app(id, grace).await {
                Err(error) if !error.is_not_found() => {
                    warn!(%error, container = %id, "stopping");
                    Some((id.clone(), error.is_unavailable()))
                }
                _ => None,
            }
        }))
        .await
    }

    /// Stops and removes containers (SIGTERM, grace, SIGKILL). Returns
    /// those that could not be removed, and whether containerd was not
    /// answering for any of them.
    pub(crate) async fn stop_containers(&self, ids: &[String]) -> (Vec<String>, bool) {
        let grace = Duration::from_secs(self.settings.deploy.stop_grace_secs);
        left_behind(ids.iter().map(|id| async move {
            if let Err(error) = self.engine.stop_app(id, grace).await {
                warn!(%error, container = %id, "stopping");
            }
            match self.engine.remove_app(id).await {
                Err(error) if !error.is_not_found() => {
                    warn!(%error, container = %id, "removing");
                    Some((id.clone(), error.is_unavailable()))
                }
                _ => None,
            }
        }))
        .await
    }

    /// The running container of `process` of `app` in the environment of
    /// `owner`, if it runs.
    pub(crate) async fn running_container(
        &self,
        owner: &str,
        app: &AppSpec,
        process: &ProcessSpec,
    ) -> Option<Started> {
        let candidates = self
            .engine
            .app_container(owner, &app.name, &process.name)
            .await
            .ok()?;
        // Two during a deploy: the one the deployment record lists is the
        // one that runs (the other was created for the next release).
        let recorded = owner
            .split_once('/')
            .and_then(|(project, environment)| {
                self.store.deployment(project, environment).ok().flatten()
            })
            .map(|deployment| deployment.containers)
            .unwrap_or_default();
        let id = match candidates.iter().find(|id| recorded.contains(id)) {
            Some(id) => id.clone(),
            None => candidates.into_iter().next()?,
        };
        let image = self.engine.image(&app.image).await.ok()?;
        Some(Started {
            app: app.name.clone(),
            process: process.name.clone(),
            id,
            path: app_path(&image),
        })
    }

    /// At start-up: serve every environment whose release was serving.
    pub(crate) async fn restore_routing(&self) {
        // A clone interrupted by a stop can have left a parent frozen.
        for id in self.engine.app_containers(None).await.unwrap_or_default() {
            let _ = self.engine.resume_app(&id).await;
        }
        let Ok(deployments) = self.store.deployments() else {
            return;
        };
        // A release a stop caught mid-deploy: active if its deploy got as far
        // as serving, else superseded (it can be promoted again).
        for mut release in self.store.all_releases().unwrap_or_default() {
            if release.status != ReleaseStatus::Deploying {
                continue;
            }
            let served = deployments.iter().any(|d| {
                d.project == release.project
                    && d.environment == release.environment
                    && d.release == release.id
                    && parse_phase(&d.phase).is_some_and(Phase::is_released)
            });
            release.status = if served {
                ReleaseStatus::Active
            } else {
                ReleaseStatus::Superseded
            };
            self.note_store("release", self.store.put_release(&release));
        }
        for deployment in deployments {
            let Some(phase) = parse_phase(&deployment.phase) else {
                continue;
            };
            if !phase.is_released() {
                // Finished by a recovery activity; until then its requests
                // are held (bounded by the hold timeout), never sent to a
                // half-started version.
                if phase != Phase::Failed
                    && let Some(spec) = self
                        .store
                        .release(&deployment.release)
                        .ok()
                        .flatten()
                        .and_then(|r| serde_json::from_value::<DeploySpec>(r.spec).ok())
                {
                    let key = environment_key(&deployment.project, &deployment.environment);
                    self.router.set_routes(&key, Self::router_entries(&spec));
                    self.router.hold(&key);
                }
                continue;
            }
            let Some(spec) = self
                .store
                .release(&deployment.release)
                .ok()
                .flatten()
                .and_then(|r| serde_json::from_value::<DeploySpec>(r.spec).ok())
            else {
                continue;
            };
            let key = environment_key(&deployment.project, &deployment.environment);
            match self.socket_factory(&deployment.project, &deployment.environment) {
                Ok(factory) => {
                    self.router.set_routes(&key, Self::router_entries(&spec));
                    self.router.open(&key, self.backends(&spec, &factory));
                }
                Err(message) => warn!(%message, %key, "cannot serve the environment"),
            }
        }
    }

    /// Stops an environment's containers and forgets its namespace (its
    /// data stays).
    pub(crate) async fn stop_environment(&self, project: &str, environment: &str) {
        let key = environment_key(project, environment);
        self.router.remove(&key);
        if let Ok(ids) = self.engine.app_containers(Some(&key)).await {
            self.stop_containers(&ids).await;
        }
        self.note_store(
            "deployment",
            self.store.delete_deployment(project, environment),
        );
        let factory = match self.factories.lock() {
            Ok(mut guard) => guard.remove(&key),
            Err(poisoned) => poisoned.into_inner().remove(&key),
        };
        drop(factory);
        let network = self.network(project, environment);
        match tokio::task::spawn_blocking(move || network.remove()).await {
            Ok(Err(error)) => warn!(%error, %key, "cannot remove the environment's network"),
            Err(error) => warn!(%error, %key, "cannot remove the environment's network"),
            Ok(Ok(())) => {}
        }
    }
}

/// Runs `operations` at once; the containers they left (each `Some((id,
/// containerd unavailable))`), and whether containerd was unavailable for
/// any.
async fn left_behind(
    operations: impl Iterator<Item = impl std::future::Future<Output = Option<(String, bool)>>>,
) -> (Vec<String>, bool) {
    let left: Vec<(String, bool)> = futures_util::future::join_all(operations)
        .await
        .into_iter()
        .flatten()
        .collect();
    let unavailable = left.iter().any(|(_, unavailable)| *unavailable);
    (left.into_iter().map(|(id, _)| id).collect(), unavailable)
}
