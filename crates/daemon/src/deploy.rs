//! Deploys: a build becomes a release that serves (product.md, pipeline
//! step 4; config-reference §3.4).
//!
//! Order. First, while the previous release still serves, the new one is
//! prepared (`deploy_start.rs`): images unpacked, specs rendered, network
//! members attached, containers created but not started. Then, each phase
//! written to the environment's `Deployment` record before its effect:
//! hold requests → drain and stop the old containers (SIGTERM, grace,
//! SIGKILL; kept, not deleted) → empty the `tmp` mounts, write a fresh
//! `/run` and `/etc/hosts` → start every process at once (`pre_start` and
//! `start` under the supervisor, `post_start`) and wait until every web
//! process accepts connections → the deploy hook (requests still held; a
//! failure is reported, the deploy goes on) → release the held requests →
//! delete the old containers → the post_deploy hook. Only `holding` and
//! `released` wait for the disk inside the hold: a crash at any phase
//! between them is recovered the same way.
//!
//! If the new version does not become ready, its containers are removed and
//! the previous release is started again and served; the push fails. Old
//! and new of one app never run side by side. Every push deploys, even when
//! nothing changed (Platform.sh redeploys too).
//!
//! Directories: `<data>/environments/<id>/` holds `volumes/`, `services/`,
//! `tmp/`, `run/<app>-<process>/` (each process's `/run`), `hosts/<app>` and
//! `logs/`; `<data>/netns/<id>` pins the environment network's hub and
//! `<data>/netns/<id>.members/` its members (`launchway_net`): each process
//! container joins a namespace of its own there, with its address and the
//! rules of what it may reach; the router dials web processes from the hub.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use launchway_deploy::{
    AppInput, DeploySpec, EnvironmentInput, Phase, RouteContext, RouteKind, deploy_spec,
    resolve_routes,
};
use launchway_git::Plan;
use launchway_router::SocketFactory;
use launchway_store::{
    Activity, Build, Deployment, Environment, EnvironmentType, Release, ReleaseStatus,
};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::activity::{Ended, Log};
use crate::builds::new_record_id;
use crate::deploy_start::prepared_ids;
use crate::variables::Effective;
use crate::{Daemon, now_ms};
use launchway_build::env::UserVariable;

pub(crate) use crate::environment_runtime::{app_path, environment_key};

/// Lines of an app's log shown when it fails to start.
pub(crate) const LOG_TAIL_LINES: usize = 15;

/// Opens a held environment (with no backends: 502 rather than waiting
/// for nothing) if a deploy leaves early without releasing it.
struct HeldGate<'a> {
    router: &'a launchway_router::Router,
    key: &'a str,
    released: bool,
}

impl Drop for HeldGate<'_> {
    fn drop(&mut self) {
        if !self.released {
            warn!(environment = %self.key, "a deploy stopped early; its requests are no longer held");
            self.router.open(self.key, HashMap::new());
        }
    }
}

/// Where a deploy's hold went: draining and stopping the old version,
/// starting the new one, its readiness, the deploy hooks.
struct HoldTimes {
    stop: Duration,
    start: Duration,
    ready: Duration,
    hooks: Duration,
}

/// Why a release did not start, and what of it is running.
#[derive(Debug)]
pub(crate) struct StartFailure {
    pub(crate) message: String,
    pub(crate) containers: Vec<String>,
    /// containerd did not answer (not the release's fault).
    pub(crate) unavailable: bool,
}

/// A process container of a release.
#[derive(Clone, Debug)]
pub(crate) struct Started {
    pub(crate) app: String,
    pub(crate) process: String,
    pub(crate) id: String,
    /// `PATH` in it: the global dependencies, then the image's own (the
    /// environment processes executed in it need too).
    pub(crate) path: String,
}

pub(crate) fn container_of<'a>(
    started: &'a [Started],
    app: &str,
    process: &str,
) -> Option<&'a Started> {
    started
        .iter()
        .find(|s| s.app == app && s.process == process)
}

pub(crate) fn ids(started: &[Started]) -> Vec<String> {
    started.iter().map(|s| s.id.clone()).collect()
}

impl Daemon {
    /// The deploy spec of `build` (a complete build of `plan`) for `env`.
    fn plan_deploy(
        &self,
        env: &Environment,
        build: &Build,
        plan: &Plan,
        variables: &[UserVariable],
        service_secret: &[u8],
    ) -> DeploySpec {
        // Routes go to apps, or to a service that serves HTTP (Varnish).
        let upstreams: std::collections::BTreeSet<String> = plan
            .apps
            .iter()
            .map(|a| a.name.clone())
            .chain(
                plan.services
                    .iter()
                    .filter(|s| launchway_deploy::services::routable(s))
                    .map(|s| s.name.clone()),
            )
            .collect();
        let (routes, route_notes) = resolve_routes(
            &plan.routes,
            &upstreams,
            &RouteContext {
                project: &env.project,
                branch: &env.name,
                base_domain: &self.settings.router.base_domain,
                port: self.public_router_port(),
                https_port: self.public_https_port(),
                production: env.kind == EnvironmentType::Production,
            },
        );
        let inputs: Vec<AppInput<'_>> = plan
            .apps
            .iter()
            .map(|app| AppInput {
                app: &app.app,
                runtime: app.runtime.clone(),
                tree_id: &app.tree_id,
                image: build
                    .apps
                    .iter()
                    .find(|b| b.name == app.name)
                    .and_then(|b| b.image.clone())
                    .unwrap_or_default(),
            })
            .collect();
        deploy_spec(
            &EnvironmentInput {
                project: &env.project,
                environment: &env.name,
                kind: env.kind.as_str(),
                routes,
                route_notes,
                variables,
                services: &plan.services,
                service_secret,
                service_memory_mib: self.settings.services.memory_mib,
                app_memory_mib: self.settings.deploy.memory_mib,
            },
            &inputs,
        )
    }

    /// Marks every other active (or deploying) release of the environment
    /// superseded: one release serves at a time.
    pub(crate) fn supersede_others(&self, project: &str, environment: &str, serving: &str) {
        for mut other in self
            .store
            .releases(project, Some(environment))
            .unwrap_or_default()
        {
            if other.id != serving
                && matches!(
                    other.status,
                    ReleaseStatus::Active | ReleaseStatus::Deploying
                )
            {
                other.status = ReleaseStatus::Superseded;
                self.note_store("release", self.store.put_release(&other));
            }
        }
    }

    /// A record update the deploy goes on without: logged, not fatal (the
    /// serving state is the `Deployment` record, which is checked).
    pub(crate) fn note_store(&self, what: &str, result: Result<(), launchway_store::StoreError>) {
        if let Err(error) = result {
            warn!(%error, record = what, "cannot update a record");
        }
    }

    fn put_deployment_phase(&self, deployment: &mut Deployment, phase: Phase) -> Result<(), Ended> {
        deployment.phase = phase.as_str().to_string();
        deployment.updated_at = now_ms();
        // The phases inside the hold, after the flushed `holding`, need not
        // wait for the disk: a crash in any of them is recovered as one in
        // `holding` (the release is deployed again; every container
        // labelled for the environment is stopped first).
        let recorded = match phase {
            Phase::StoppingOld | Phase::AttachingMounts | Phase::Starting | Phase::DeployHook => {
                self.store.put_deployment_unflushed(deployment)
            }
            _ => self.store.put_deployment(deployment),
        };
        recorded.map_err(|_| Ended::Failed("the deploy state cannot be recorded".into()))?;
        crate::failpoint::reached(&format!("deploy.{}", phase.as_str()));
        Ok(())
    }

    /// Deploys `build` of `plan` to `env` as a new release, with the
    /// variables the environment sees now.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn deploy_build(
        &self,
        activity: &Activity,
        env: &Environment,
        build: &Build,
        plan: &Plan,
        variables: &[Effective],
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<Release, Ended> {
        let release = self
            .record_release(
                activity,
                env,
                build,
                plan,
                variables,
                log,
                ReleaseStatus::Deploying,
            )
            .await?;
        self.deploy_release(activity, env, release, true, log, cancel)
            .await
    }

    /// Records the release of `build` for `env`: `Deploying`, ready for
    /// [`Daemon::deploy_release`] with `fresh`, or `Pending` (built only,
    /// deployed by a later promotion).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn record_release(
        &self,
        activity: &Activity,
        env: &Environment,
        build: &Build,
        plan: &Plan,
        variables: &[Effective],
        log: &Log,
        status: ReleaseStatus,
    ) -> Result<Release, Ended> {
        let runtime = crate::variables::runtime_visible(variables);
        let secret = self.service_secret(&env.project).map_err(Ended::Failed)?;
        let spec = self.plan_deploy(env, build, plan, &runtime, &secret);
        for note in &spec.notes {
            log.line(&format!("  W: {note}")).await;
        }
        if self.settings.services.exact_versions
            && let Some(service) = spec.services.iter().find(|s| s.note.is_some())
        {
            return Err(Ended::Failed(format!(
                "service '{}' asks for {}, which this host does not offer ([services] exact_versions is set)",
                service.name, service.written_type
            )));
        }
        let spec_json = serde_json::to_value(&spec)
            .map_err(|_| Ended::Failed("the deploy spec cannot be recorded".into()))?;
        let config = serde_json::json!({
            "applications": plan
                .apps
                .iter()
                .map(|app| (app.name.clone(), serde_json::to_value(&app.app).unwrap_or_default()))
                .collect::<serde_json::Map<String, serde_json::Value>>(),
            "routes": serde_json::to_value(&plan.routes).unwrap_or_default(),
        });
        let release_id = loop {
            let id = new_record_id('R');
            if !matches!(self.store.release(&id), Ok(Some(_))) {
                break id;
            }
        };
        let release = Release {
            id: release_id,
            project: env.project.clone(),
            environment: env.name.clone(),
            build: build.id.clone(),
            commit: build.commit.clone(),
            created_at: now_ms(),
            description: build.description.clone(),
            status,
            spec: spec_json,
            activity: Some(activity.id),
            variables: crate::variables::release_variables(variables),
            config,
        };
        self.store
            .put_release(&release)
            .map_err(|_| Ended::Failed("the release cannot be recorded".into()))?;
        crate::failpoint::reached("deploy.release_recorded");
        Ok(release)
    }

    /// Deploys `release` to `env` through the whole sequence (hold, stop,
    /// mounts, start, hooks, release). `fresh` for a release never deployed
    /// before; otherwise it is a promotion, a rollback or a redeploy.
    pub(crate) async fn deploy_release(
        &self,
        activity: &Activity,
        env: &Environment,
        mut release: Release,
        fresh: bool,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<Release, Ended> {
        let release_id = release.id.clone();
        let spec: DeploySpec = serde_json::from_value(release.spec.clone()).map_err(|_| {
            Ended::Failed(format!(
                "release {release_id} cannot be read (was it written by another version of Launchway?)"
            ))
        })?;
        // The values it runs with (today's, or older ones for a promotion).
        log.add_secrets(crate::release_api::release_secrets(&release, &spec));
        let status_before = release.status;
        if !fresh {
            release.status = ReleaseStatus::Deploying;
            release.activity = Some(activity.id);
            self.store
                .put_release(&release)
                .map_err(|_| Ended::Failed("the release cannot be recorded".into()))?;
        }
        let current = self
            .store
            .deployment(&env.project, &env.name)
            .ok()
            .flatten();
        // What serves now: the recorded release once released; before that
        // (a deploy a crash interrupted) the one that served before it.
        let previous_release = current.as_ref().and_then(|d| match parse_phase(&d.phase) {
            Some(phase) if phase.is_released() => Some(d.release.clone()),
            Some(Phase::Failed) | None => None,
            Some(_) => d.previous.clone(),
        });
        let key = environment_key(&env.project, &env.name);
        // The record, plus anything labelled for the environment that a
        // crash left unrecorded: nothing old may run beside the new version.
        // Services are not the old version: they run on unless the new
        // release changes them (`services.rs`).
        let mut old_containers = current.map(|d| d.containers).unwrap_or_default();
        for id in self
            .engine
            .app_containers(Some(&key))
            .await
            .unwrap_or_default()
        {
            if !old_containers.contains(&id) && !crate::services::is_service_container(&id) {
                old_containers.push(id);
            }
        }
        let mut deployment = Deployment {
            project: env.project.clone(),
            environment: env.name.clone(),
            release: release_id.clone(),
            previous: previous_release.clone(),
            phase: String::new(),
            containers: old_containers.clone(),
            updated_at: now_ms(),
        };
        let key = environment_key(&env.project, &env.name);
        let factory = self
            .socket_factory(&env.project, &env.name)
            .map_err(Ended::Failed)?;

        // Everything that can be done while the previous release serves.
        // Collected before: the new containers carry the environment's
        // label too, and are not "old".
        let prepared = match self.prepare_release(&spec, log).await {
            Ok(prepared) => prepared,
            Err(failure) => {
                log.line(&format!("    E: {}", failure.message)).await;
                self.stop_containers(&failure.containers).await;
                release.status = if fresh {
                    ReleaseStatus::Failed
                } else {
                    status_before
                };
                self.note_store("release", self.store.put_release(&release));
                return Err(Ended::Failed(format!(
                    "the deploy of release {release_id} failed before requests were held \
                     (the serving release is unchanged): {}",
                    failure.message
                )));
            }
        };
        crate::failpoint::reached("deploy.prepared");

        // Hold.
        self.put_deployment_phase(&mut deployment, Phase::Holding)?;
        self.router.hold(&key);
        let mut held = HeldGate {
            router: &self.router,
            key: &key,
            released: false,
        };
        let held_at = Instant::now();
        self.router.set_routes(&key, Self::router_entries(&spec));
        log.line(&format!(
            "  Deploying release {release_id} (build {})",
            release.build
        ))
        .await;

        // Stop the old version once its in-flight requests are done; its
        // containers are deleted once requests flow again.
        self.put_deployment_phase(&mut deployment, Phase::StoppingOld)?;
        if !self
            .router
            .drain(
                &key,
                Duration::from_secs(self.settings.deploy.drain_timeout_secs),
            )
            .await
        {
            log.line(
                "    W: requests to the previous version were still running; stopping it anyway",
            )
            .await;
        }
        // A service container listed as old (a restore stops everything)
        // goes at once, so that the start below makes it again; an app's
        // is only stopped here.
        let (old_services, old_apps): (Vec<String>, Vec<String>) = old_containers
            .iter()
            .cloned()
            .partition(|id| crate::services::is_service_container(id));
        let ((mut still_running, services_unavailable), (apps_running, apps_unavailable)) = tokio::join!(
            self.stop_containers(&old_services),
            self.stop_only(&old_apps)
        );
        still_running.extend(apps_running);
        let unavailable = services_unavailable || apps_unavailable;
        if !still_running.is_empty() && (unavailable || self.containerd_lost().await) {
            let mut left = still_running;
            left.extend(prepared_ids(&prepared));
            return Err(self
                .defer_to_containerd(&mut deployment, left, &mut held, log)
                .await);
        }
        let stopped_at = Instant::now();

        // Mounts, start, readiness.
        deployment.containers = prepared_ids(&prepared);
        self.put_deployment_phase(&mut deployment, Phase::AttachingMounts)?;
        self.put_deployment_phase(&mut deployment, Phase::Starting)?;
        let started = self
            .start_prepared(&spec, &prepared, log, &factory, cancel)
            .await;
        let (started, start_times) = match started {
            Ok(started) => started,
            Err(failure) => {
                log.line(&format!("    E: {}", failure.message)).await;
                if failure.unavailable || self.containerd_lost().await {
                    return Err(self
                        .defer_to_containerd(&mut deployment, failure.containers, &mut held, log)
                        .await);
                }
                deployment.containers = failure.containers.clone();
                self.put_deployment_phase(&mut deployment, Phase::RollingBack)?;
                self.stop_containers(&failure.containers).await;
                self.stop_containers(&old_containers).await;
                deployment.containers.clear();
                release.status = if fresh {
                    ReleaseStatus::Failed
                } else {
                    status_before
                };
                self.note_store("release", self.store.put_release(&release));
                let restored = self
                    .restore_previous(previous_release.as_deref(), &key, &factory, log, cancel)
                    .await;
                held.released = true;
                match restored {
                    Some((previous, containers)) => {
                        if previous == release_id {
                            release.status = ReleaseStatus::Active;
                            self.note_store("release", self.store.put_release(&release));
                        }
                        deployment.release = previous;
                        deployment.containers = containers;
                        deployment.previous = None;
                        self.put_deployment_phase(&mut deployment, Phase::Complete)?;
                    }
                    None if self.containerd_lost().await => {
                        return Err(self
                            .defer_to_containerd(&mut deployment, Vec::new(), &mut held, log)
                            .await);
                    }
                    None => {
                        // Nothing serves: no release of the environment is active.
                        if release.status == ReleaseStatus::Active {
                            release.status = ReleaseStatus::Superseded;
                            self.note_store("release", self.store.put_release(&release));
                        }
                        self.supersede_others(&env.project, &env.name, &release_id);
                        self.put_deployment_phase(&mut deployment, Phase::Failed)?;
                    }
                }
                return Err(Ended::Failed(format!(
                    "the deploy of release {release_id} failed: {}",
                    failure.message
                )));
            }
        };
        deployment.containers = ids(&started);
        crate::failpoint::reached("deploy.started");

        // The deploy hook, requests still held.
        let hooks_began = Instant::now();
        self.put_deployment_phase(&mut deployment, Phase::DeployHook)?;
        for app in &spec.apps {
            if let Some(hook) = &app.deploy_hook {
                self.run_hook(app, &started, hook, "deploy", log, cancel)
                    .await;
            }
        }

        // Release.
        self.put_deployment_phase(&mut deployment, Phase::Released)?;
        self.router.open(&key, self.backends(&spec, &factory));
        held.released = true;
        let released_at = Instant::now();
        let held_for = released_at - held_at;
        let hold = HoldTimes {
            stop: stopped_at - held_at,
            start: hooks_began.saturating_duration_since(stopped_at + start_times.ready),
            ready: start_times.ready,
            hooks: released_at - hooks_began,
        };
        // The old containers (stopped) and network members go now that
        // requests flow; what a failure leaves is labelled for the
        // environment, so the next deploy or a restart removes it.
        let (left, _) = self.stop_containers(&old_apps).await;
        if !left.is_empty() {
            warn!(environment = %key, left = left.len(), "cannot delete the previous release's containers yet");
        }
        self.retain_release_members(&spec).await;
        release.status = ReleaseStatus::Active;
        self.note_store("release", self.store.put_release(&release));
        self.supersede_others(&env.project, &env.name, &release_id);
        if let Ok(Some(mut record)) = self.store.build(&release.build) {
            record.release = Some(release_id.clone());
            self.note_store("build", self.store.put_build(&record));
        }
        log.line("  Opening environment").await;
        log.line(&format!(
            "    Requests were held for {:.3} s (stop {} ms, start {} ms, ready {} ms, hooks {} ms)",
            held_for.as_secs_f64(),
            hold.stop.as_millis(),
            hold.start.as_millis(),
            hold.ready.as_millis(),
            hold.hooks.as_millis(),
        ))
        .await;

        // post_deploy, traffic flowing.
        self.put_deployment_phase(&mut deployment, Phase::PostDeploy)?;
        for app in &spec.apps {
            if let Some(hook) = &app.post_deploy_hook {
                self.run_hook(app, &started, hook, "post_deploy", log, cancel)
                    .await;
            }
        }
        deployment.previous = None;
        self.put_deployment_phase(&mut deployment, Phase::Complete)?;
        self.report_routes(&spec, log).await;
        Ok(release)
    }

    /// Leaves a deploy that containerd's outage interrupted where it is (no
    /// rollback: that needs containerd too), its requests held, for the
    /// containerd watch to resume once containerd answers (`outage.rs`).
    async fn defer_to_containerd(
        &self,
        deployment: &mut Deployment,
        containers: Vec<String>,
        held: &mut HeldGate<'_>,
        log: &Log,
    ) -> Ended {
        for id in containers {
            if !deployment.containers.contains(&id) {
                deployment.containers.push(id);
            }
        }
        deployment.updated_at = now_ms();
        self.note_store("deployment", self.store.put_deployment(deployment));
        self.router.hold(held.key);
        held.released = true;
        self.containerd_interrupted(deployment);
        log.line(
            "    E: containerd stopped answering; the deploy resumes as soon as it answers again \
             (requests to the environment wait meanwhile, each up to the router's hold timeout)",
        )
        .await;
        Ended::Failed(format!(
            "containerd stopped answering while release {} was being deployed ({}); \
             a recovery activity deploys it again once containerd is back",
            deployment.release, deployment.phase
        ))
    }

    async fn report_routes(&self, spec: &DeploySpec, log: &Log) {
        log.line("  Environment configuration").await;
        for app in &spec.apps {
            log.line(&format!("    {} (type: {})", app.name, app.runtime))
                .await;
        }
        log.line("  Environment routes").await;
        for route in &spec.routes {
            match route.kind {
                RouteKind::Upstream => {
                    let upstream = route.upstream.as_deref().unwrap_or_default();
                    let what = if spec.services.iter().any(|s| s.name == upstream) {
                        "service"
                    } else {
                        "application"
                    };
                    log.line(&format!(
                        "    {} is served by {what} `{upstream}`",
                        route.url,
                    ))
                    .await;
                }
                RouteKind::Redirect => {
                    log.line(&format!(
                        "    {} redirects to {}",
                        route.url,
                        route.to.as_deref().unwrap_or_default()
                    ))
                    .await;
                }
            }
        }
    }

    /// Starts the release that served before a failed deploy, and serves it.
    async fn restore_previous(
        &self,
        previous: Option<&str>,
        key: &str,
        factory: &Arc<SocketFactory>,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Option<(String, Vec<String>)> {
        let Some(previous) = previous else {
            log.line("    No previous release to go back to").await;
            self.router.open(key, HashMap::new());
            return None;
        };
        let spec = self
            .store
            .release(previous)
            .ok()
            .flatten()
            .and_then(|r| serde_json::from_value::<DeploySpec>(r.spec).ok());
        let Some(spec) = spec else {
            log.line(&format!("    E: release {previous} cannot be read"))
                .await;
            self.router.open(key, HashMap::new());
            return None;
        };
        log.line(&format!(
            "    Starting the previous release {previous} again"
        ))
        .await;
        self.router.set_routes(key, Self::router_entries(&spec));
        match self.start_release(&spec, log, factory, cancel).await {
            Ok(started) => {
                self.router.open(key, self.backends(&spec, factory));
                log.line(&format!("    Release {previous} is serving again"))
                    .await;
                Some((previous.to_string(), ids(&started)))
            }
            Err(failure) => {
                log.line(&format!(
                    "    E: the previous release did not start either: {}",
                    failure.message
                ))
                .await;
                self.stop_containers(&failure.containers).await;
                self.router.open(key, HashMap::new());
                None
            }
        }
    }

    /// The spec of recorded release `release_id`, its secrets masked in
    /// `log` from now on.
    pub(crate) fn release_spec_for(
        &self,
        release_id: &str,
        log: &Log,
    ) -> Result<DeploySpec, Ended> {
        let release = self
            .store
            .release(release_id)
            .ok()
            .flatten()
            .ok_or_else(|| Ended::Failed(format!("there is no release {release_id}")))?;
        let spec: DeploySpec = serde_json::from_value(release.spec.clone())
            .map_err(|_| Ended::Failed(format!("release {release_id} cannot be read")))?;
        log.add_secrets(crate::release_api::release_secrets(&release, &spec));
        Ok(spec)
    }

    /// Runs the post_deploy hooks of the serving release again in its
    /// running containers (a stop came between `released` and `complete`),
    /// then records the deploy complete.
    pub(crate) async fn post_deploy_activity(
        &self,
        activity: &Activity,
        release_id: &str,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<std::collections::BTreeMap<String, u64>, Ended> {
        let spec = self.release_spec_for(release_id, log)?;
        let owner = environment_key(&activity.project, &activity.environment);
        for app in &spec.apps {
            let Some(hook) = &app.post_deploy_hook else {
                continue;
            };
            let Some(process) = app.web().or_else(|| app.processes.first()) else {
                continue;
            };
            let Some(container) = self.running_container(&owner, app, process).await else {
                log.line(&format!(
                    "    W: application {} is not running; its post_deploy hook was skipped",
                    app.name
                ))
                .await;
                continue;
            };
            let started = [container];
            self.run_hook(app, &started, hook, "post_deploy", log, cancel)
                .await;
        }
        if let Ok(Some(mut deployment)) = self
            .store
            .deployment(&activity.project, &activity.environment)
            && deployment.release == release_id
        {
            deployment.previous = None;
            self.put_deployment_phase(&mut deployment, Phase::Complete)?;
        }
        Ok(std::collections::BTreeMap::new())
    }
}

/// A phase as recorded (`None`: written by another version).
pub(crate) fn parse_phase(text: &str) -> Option<Phase> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}
