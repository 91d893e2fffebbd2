//! An environment's service data, outside deploys: `launchway services`
//! (what runs, whether it answers, disk, restarts, detached data), the
//! deletion of detached data (an activity: renamed away, then removed;
//! start-up removes what a stop left), and the checkpoint written before
//! an activation copies a parent's data.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use launchway_api::proto;
use launchway_containerd::{Output, StepSpec};
use launchway_deploy::{DeploySpec, environment_id};
use launchway_store::ActivityKind;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::warn;

use crate::Daemon;
use crate::activity::{Ended, Log, Work};
use crate::deploy::environment_key;
use crate::host_fs::read_no_follow;
use crate::services::{container_id, new_secret};

/// One line of `launchway services`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServiceView {
    pub(crate) name: String,
    pub(crate) asked: String,
    pub(crate) running: String,
    pub(crate) status: &'static str,
    pub(crate) disk_bytes: u64,
    pub(crate) restarts: u32,
}

/// The bytes of the files under `path` (links not followed; iterative,
/// so no depth an app can make exhausts the stack).
pub(crate) fn disk_usage(path: &Path) -> u64 {
    let mut total = 0u64;
    let mut pending = vec![path.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&next) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&next) {
                pending.extend(entries.flatten().map(|entry| entry.path()));
            }
        } else {
            total = total.saturating_add(meta.len());
        }
    }
    total
}

/// The prefix of a service's data being deleted: renamed first (one step,
/// so the data is there whole or gone), removed after; start-up removes
/// what a stop left.
const DELETING_PREFIX: &str = ".deleting-";

impl Daemon {
    /// `launchway services delete`: checks the request, then deletes the
    /// data in an activity of the environment's queue, after any deploy
    /// that could bring the service back.
    pub(crate) fn delete_service_data(
        self: &Arc<Self>,
        request: &proto::DeleteServiceDataRequest,
    ) -> Result<crate::build_api::LogStream, Status> {
        let env = self.existing_environment(&request.project, &request.environment)?;
        if !launchway_config::valid_name(&request.service) {
            return Err(Status::invalid_argument(format!(
                "`{}` is not a service name",
                request.service.escape_debug()
            )));
        }
        self.run_activity(
            &env.project,
            &env.name,
            ActivityKind::ServiceDataDelete,
            format!("deletion of the data of service {}", request.service),
            Work::DeleteServiceData {
                service: request.service.clone(),
            },
        )
    }

    /// The activity: refuses a service the serving release runs (or a
    /// directory its apps mount), renames the data away, then removes it.
    pub(crate) async fn delete_service_data_activity(
        &self,
        activity: &launchway_store::Activity,
        service: &str,
        log: &Log,
    ) -> Result<BTreeMap<String, u64>, Ended> {
        let environment = self
            .store
            .environment(&activity.project, &activity.environment)
            .ok()
            .flatten()
            .ok_or_else(|| Ended::Failed("the environment is gone".into()))?;
        let listed = self.list_services(&environment).await;
        let Some(view) = listed.iter().find(|view| view.name == service) else {
            return Err(Ended::Failed(format!(
                "environment {} has no data of a service `{service}`",
                environment.name
            )));
        };
        if view.status != "detached" {
            return Err(Ended::Failed(format!(
                "service {service} is in the environment's config ({}): remove it from the config and deploy first; its data is only deleted once detached",
                view.status
            )));
        }
        let services = self
            .environment_dir(&environment.project, &environment.name)
            .join("services");
        let trash = services.join(format!("{DELETING_PREFIX}{service}-{}", &new_secret()[..8]));
        std::fs::rename(services.join(service), &trash).map_err(|e| {
            Ended::Failed(format!(
                "the data of service {service} cannot be moved away: {e}"
            ))
        })?;
        log.line(&format!(
            "  The data of service {service} ({} bytes) is deleted",
            view.disk_bytes
        ))
        .await;
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&trash)).await;
        if !matches!(removed, Ok(Ok(()))) {
            warn!(%service, "what remains of deleted service data is removed at the next start");
        }
        Ok(BTreeMap::new())
    }

    /// Removes what deletions a stop interrupted left (start-up).
    pub(crate) fn remove_deleted_service_data(&self) {
        let root = self.settings.data_dir.join("environments");
        for environment in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let services = environment.path().join("services");
            for entry in std::fs::read_dir(&services).into_iter().flatten().flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(DELETING_PREFIX)
                    && let Err(error) = std::fs::remove_dir_all(entry.path())
                {
                    warn!(%error, path = %entry.path().display(), "removing deleted service data");
                }
            }
        }
    }

    /// An environment's services, as its serving release has them, and
    /// the data of services it no longer has.
    pub(crate) async fn list_services(
        &self,
        environment: &launchway_store::Environment,
    ) -> Vec<ServiceView> {
        let spec = self
            .store
            .deployment(&environment.project, &environment.name)
            .ok()
            .flatten()
            .and_then(|deployment| self.store.release(&deployment.release).ok().flatten())
            .and_then(|release| serde_json::from_value::<DeploySpec>(release.spec).ok());
        let env_dir = self.environment_dir(&environment.project, &environment.name);
        let env_id = environment_id(&environment.project, &environment.name);
        let owner = environment_key(&environment.project, &environment.name);
        let running: Vec<String> = self
            .engine
            .app_containers(Some(&owner))
            .await
            .unwrap_or_default();
        let cancel = CancellationToken::new();
        let mut views = Vec::new();
        let mut known = std::collections::BTreeSet::new();
        for service in spec.iter().flat_map(|spec| spec.services.iter()) {
            known.insert(service.name.clone());
            let id = container_id(&env_id, service);
            let status = if !running.contains(&id) {
                "stopped"
            } else if self.service_answers(&id, service, &cancel).await {
                "running"
            } else {
                "not answering"
            };
            let exits = env_dir
                .join("run")
                .join(format!("service-{}", service.name))
                .join(launchway_deploy::spec::EXITS_FILE);
            views.push(ServiceView {
                name: service.name.clone(),
                asked: service.written_type.clone(),
                running: format!("{}:{}", service.kind, service.version),
                status,
                disk_bytes: disk_usage(&env_dir.join("services").join(&service.name)),
                restarts: read_no_follow(&exits).map_or(0, |text| {
                    u32::try_from(text.lines().count()).unwrap_or(u32::MAX)
                }),
            });
        }
        for entry in std::fs::read_dir(env_dir.join("services"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if known.contains(&name) {
                continue;
            }
            let storage = spec.iter().any(|spec| {
                spec.apps.iter().any(|app| {
                    app.processes.iter().any(|process| {
                        process.mounts.iter().any(|mount| {
                            mount.volume == format!("services/{name}")
                                || mount.volume.starts_with(&format!("services/{name}/"))
                        })
                    })
                })
            });
            views.push(ServiceView {
                name,
                asked: String::new(),
                running: String::new(),
                status: if storage { "storage" } else { "detached" },
                disk_bytes: disk_usage(&entry.path()),
                restarts: 0,
            });
        }
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    /// Before an environment's data is copied: PostgreSQL services write
    /// a checkpoint, so the copy (a crash image: the freeze makes it whole)
    /// replays little WAL when the child starts. Returns the names of the
    /// services running in the environment, for the activity log.
    pub(crate) async fn checkpoint_services(
        &self,
        project: &str,
        environment: &str,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Vec<String> {
        let spec = self
            .store
            .deployment(project, environment)
            .ok()
            .flatten()
            .and_then(|deployment| self.store.release(&deployment.release).ok().flatten())
            .and_then(|release| serde_json::from_value::<DeploySpec>(release.spec).ok());
        let Some(spec) = spec else {
            return Vec::new();
        };
        let env_id = environment_id(project, environment);
        let mut names = Vec::new();
        for service in &spec.services {
            names.push(service.name.clone());
            let Some(command) =
                launchway_services::run::checkpoint_command(&service.kind, &service.version)
            else {
                continue;
            };
            let started = Instant::now();
            let mut step = StepSpec::new(command);
            step.timeout = Some(Duration::from_secs(120));
            let (sender, mut lines) = tokio::sync::mpsc::channel(16);
            let drain = async { while lines.recv().await.is_some() {} };
            let id = container_id(&env_id, service);
            let (outcome, ()) = tokio::join!(
                self.engine
                    .exec_in_app(&id, &step, Output::Lines(sender), cancel),
                drain
            );
            match outcome {
                Ok(outcome) if outcome.success() => {
                    log.line(&format!(
                        "    Service {} of {environment} wrote a checkpoint ({:.2} s)",
                        service.name,
                        started.elapsed().as_secs_f64()
                    ))
                    .await;
                }
                // The copy is whole without it: the child's server recovers.
                _ => warn!(service = %service.name, %environment, "no checkpoint before the copy"),
            }
        }
        names
    }
}
