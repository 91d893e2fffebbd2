//! Releases: what each deploy ran (`launchway releases`), and deploying
//! one again (`releases promote`, `redeploy`).
//!
//! A promotion deploys a recorded release through the whole deploy
//! sequence with no build: its images, processes, routes and variables are
//! the ones it was made with (variables set since apply to the next
//! `launchway deploy`). Its build's images must still exist: garbage
//! collection keeps those of serving releases and the newest builds only.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use launchway_api::proto;
use launchway_deploy::{DeploySpec, Listen, Phase, RouteKind};
use launchway_store::{Activity, ActivityKind, EnvironmentStatus, Release};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::Daemon;
use crate::activity::{Ended, Log, Work};
use crate::api::internal;
use crate::build_api::LogStream;

pub(crate) fn release_info(release: &Release) -> proto::ReleaseInfo {
    // A spec written by another version still lists; only its details go.
    let spec = serde_json::from_value::<DeploySpec>(release.spec.clone()).ok();
    let apps = spec
        .as_ref()
        .map(|spec| {
            spec.apps
                .iter()
                .map(|app| proto::ReleaseApp {
                    name: app.name.clone(),
                    runtime: app.runtime.clone(),
                    image: app.image.clone(),
                    listen: match &app.listen {
                        Listen::Port(port) => format!("port {port}"),
                        Listen::Socket(path) => format!("socket {path}"),
                    },
                    processes: app.processes.iter().map(|p| p.name.clone()).collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    let routes = spec
        .as_ref()
        .map(|spec| {
            spec.routes
                .iter()
                .map(|route| match route.kind {
                    RouteKind::Upstream => format!(
                        "{} -> {}",
                        route.url,
                        route.upstream.as_deref().unwrap_or_default()
                    ),
                    RouteKind::Redirect => format!(
                        "{} => {}",
                        route.url,
                        route.to.as_deref().unwrap_or_default()
                    ),
                })
                .collect()
        })
        .unwrap_or_default();
    proto::ReleaseInfo {
        id: release.id.clone(),
        project: release.project.clone(),
        environment: release.environment.clone(),
        build: release.build.clone(),
        commit: release.commit.clone(),
        created_at: release.created_at,
        description: release.description.clone(),
        status: release.status.as_str().into(),
        activity: release.activity.unwrap_or_default(),
        apps,
        routes,
        variables: release
            .variables
            .iter()
            .map(|v| proto::ReleaseVariableInfo {
                name: v.name.clone(),
                level: v.level.clone(),
                sensitive: v.sensitive,
                visible_build: v.visible_build,
                visible_runtime: v.visible_runtime,
            })
            .collect(),
    }
}

impl Daemon {
    pub(crate) fn list_releases(
        &self,
        request: &proto::ListReleasesRequest,
    ) -> Result<proto::ReleaseList, Status> {
        self.existing_project(&request.project)?;
        let environment = (!request.environment.is_empty()).then_some(request.environment.as_str());
        let page = crate::paging::page_from(
            |after, n| {
                self.store
                    .releases_page(
                        &request.project,
                        environment,
                        after.map(|(time, id)| (*time, id.as_str())),
                        n,
                    )
                    .map_err(internal)
            },
            |r| (r.created_at, r.id.clone()),
            &request.cursor,
            request.limit,
            20,
        )?;
        Ok(proto::ReleaseList {
            releases: page.items.iter().map(release_info).collect(),
            next_cursor: page.next_cursor,
        })
    }

    pub(crate) fn get_release(&self, id: &str) -> Result<proto::ReleaseInfo, Status> {
        self.store
            .release(id)
            .map_err(internal)?
            .map(|release| release_info(&release))
            .ok_or_else(|| Status::not_found(format!("there is no release {id}")))
    }

    /// `launchway releases promote ID`.
    pub(crate) fn promote_release(self: &Arc<Self>, id: &str) -> Result<LogStream, Status> {
        let release = self
            .store
            .release(id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("there is no release {id}")))?;
        let env = self.existing_environment(&release.project, &release.environment)?;
        if env.status != EnvironmentStatus::Active {
            return Err(Status::failed_precondition(format!(
                "environment {} is inactive; activate it first",
                env.name
            )));
        }
        self.run_activity(
            &env.project,
            &env.name,
            ActivityKind::Promote,
            format!("promotion of release {id} in {}", env.name),
            Work::Promote {
                release: id.to_owned(),
            },
        )
    }

    pub(crate) async fn promote_activity(
        &self,
        activity: &Activity,
        id: &str,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<String, u64>, Ended> {
        let release = self
            .store
            .release(id)
            .ok()
            .flatten()
            .ok_or_else(|| Ended::Failed(format!("there is no release {id}")))?;
        self.deploy_again(activity, release, log, cancel).await
    }

    /// Deploys the release serving the environment again.
    pub(crate) async fn redeploy_activity(
        &self,
        activity: &Activity,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<String, u64>, Ended> {
        let serving = self
            .store
            .deployment(&activity.project, &activity.environment)
            .ok()
            .flatten()
            .filter(|d| d.phase != Phase::Failed.as_str())
            .and_then(|d| self.store.release(&d.release).ok().flatten())
            .ok_or_else(|| {
                Ended::Failed(format!(
                    "environment {} has no release to redeploy; deploy it with `launchway deploy`",
                    activity.environment
                ))
            })?;
        self.deploy_again(activity, serving, log, cancel).await
    }

    pub(crate) async fn deploy_again(
        &self,
        activity: &Activity,
        release: Release,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<String, u64>, Ended> {
        let env = self.activity_environment(activity)?;
        if release.project != env.project || release.environment != env.name {
            return Err(Ended::Failed(format!(
                "release {} belongs to {}, not {}",
                release.id, release.environment, env.name
            )));
        }
        if env.status != EnvironmentStatus::Active {
            return Err(Ended::Failed(format!(
                "environment {} is inactive; activate it first",
                env.name
            )));
        }
        let spec: DeploySpec = serde_json::from_value(release.spec.clone())
            .map_err(|_| Ended::Failed(format!("release {} cannot be read", release.id)))?;
        // Its images must still exist (nothing is built here), and stay
        // while it deploys: garbage collection waits.
        let _gc = self.gc_lock.read().await;
        self.ensure_release_images(&release, &spec).await?;
        log.line(&format!(
            "  Deploying release {} again (build {}, commit {}): nothing is built",
            release.id,
            release.build,
            crate::push::short(&release.commit)
        ))
        .await;
        let started = std::time::Instant::now();
        let deployed = self
            .deploy_release(activity, &env, release, false, log, cancel)
            .await?;
        log.line(&format!(
            "  Environment {} ({}) is at {}, release {}",
            env.name,
            env.kind.as_str(),
            crate::push::short(&deployed.commit),
            deployed.id
        ))
        .await;
        Ok(BTreeMap::from([(
            "deploy".to_owned(),
            started.elapsed().as_millis() as u64,
        )]))
    }
}

/// The values of a release's sensitive variables, from its spec: the
/// exported `env:` ones, every one in `PLATFORM_VARIABLES`, and the
/// encoded `PLATFORM_VARIABLES` itself when it holds one (an app that
/// prints its environment prints it).
pub(crate) fn release_secrets(release: &Release, spec: &DeploySpec) -> Vec<String> {
    let sensitive: Vec<&str> = release
        .variables
        .iter()
        .filter(|v| v.sensitive)
        .map(|v| v.name.as_str())
        .collect();
    // Service passwords, and what carries them whole (the encoded
    // relationships, the `<RELATIONSHIP>_URL`s).
    let mut values: Vec<String> = spec
        .services
        .iter()
        .flat_map(|service| service.secrets.iter().cloned())
        .collect();
    if !values.is_empty() {
        for app in &spec.apps {
            for (name, value) in &app.env {
                if name == "PLATFORM_RELATIONSHIPS"
                    || values.iter().any(|secret| value.contains(secret.as_str()))
                {
                    values.push(value.clone());
                }
            }
        }
    }
    if sensitive.is_empty() {
        return values;
    }
    for app in &spec.apps {
        for (name, value) in &app.env {
            if sensitive
                .iter()
                .any(|s| s.strip_prefix("env:") == Some(name.as_str()))
            {
                values.push(value.clone());
            }
            if name == "PLATFORM_VARIABLES"
                && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(value)
                && let Ok(serde_json::Value::Object(map)) =
                    serde_json::from_slice::<serde_json::Value>(&bytes)
            {
                for name in &sensitive {
                    match map.get(*name) {
                        Some(serde_json::Value::String(text)) => values.push(text.clone()),
                        Some(other) => values.push(other.to_string()),
                        None => continue,
                    }
                    values.push(value.clone());
                }
            }
        }
    }
    values
}
