//! Environments (config-reference §3.5): activation, deactivation,
//! deletion, the listing.
//!
//! Activation clones the parent's persistent data (`volumes/` and
//! `services/` of its directory) into the child, then builds the child's
//! head (reusing every build whose key matches, the parent's included) and
//! deploys it. The clone is consistent without stopping the parent: a first
//! pass copies while the parent serves (reflinks where the filesystem has
//! them), a second pass recopies what changed meanwhile; then, in the
//! parent's activity queue (so no deploy of the parent runs), the parent's
//! containers are frozen (cgroup freezer), a last pass copies what changed
//! since the second began, and they are thawed. Requests to the parent
//! wait for that last pass; none fail.
//!
//! Anything that fails during an activation leaves the environment inactive
//! with no data and no containers, as before. Deactivation stops the
//! containers and deletes the environment's directory (data and logs); its
//! releases stay listed. Deletion also removes the branch (unless a push
//! already did), the environment's own variables and its record; its
//! children are handed to its parent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use launchway_api::proto;
use launchway_deploy::DeploySpec;
use launchway_store::{
    Activity, ActivityKind, Environment, EnvironmentStatus, ReleaseStatus, StoreError,
};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::warn;

use crate::Daemon;
use crate::activity::{Ended, Log, Work};
use crate::api::internal;
use crate::build_api::LogStream;
use crate::data_copy::{CopyPurpose, remove_data, remove_tree};
use crate::variables::Effective;

/// The queue key of an environment's activities.
pub(crate) fn queue_key(project: &str, environment: &str) -> String {
    format!("{project}\0{environment}")
}

type Timings = BTreeMap<String, u64>;

impl Daemon {
    /// `name`, then its parent, its parent's parent… (a loop in the
    /// parent links ends the chain).
    pub(crate) fn environment_chain(&self, project: &str, name: &str) -> Vec<String> {
        let environments: BTreeMap<String, Environment> = self
            .store
            .environments(project)
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        let mut chain = vec![name.to_owned()];
        let mut current = environments.get(name).and_then(|e| e.parent.clone());
        while let Some(parent) = current {
            if chain.contains(&parent) {
                break;
            }
            current = environments.get(&parent).and_then(|e| e.parent.clone());
            chain.push(parent);
        }
        chain
    }

    /// The project and environment variables `env` sees.
    pub(crate) fn environment_variables(
        &self,
        env: &Environment,
    ) -> Result<Vec<Effective>, StoreError> {
        let all = self.store.variables(&env.project)?;
        Ok(crate::variables::effective(
            &all,
            &self.environment_chain(&env.project, &env.name),
        ))
    }

    /// Makes an inactive environment active: data cloned from the parent,
    /// then built and deployed.
    pub(crate) async fn activate_activity(
        &self,
        activity: &Activity,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<Timings, Ended> {
        let mut env = self.activity_environment(activity)?;
        if env.status == EnvironmentStatus::Active {
            log.line(&format!("  Environment {} is already active", env.name))
                .await;
            return Ok(Timings::new());
        }
        let head = env.head.clone().ok_or_else(|| {
            Ended::Failed(format!(
                "environment {} has no commit yet; push its branch first",
                env.name
            ))
        })?;
        env.status = EnvironmentStatus::Active;
        self.store
            .put_environment(&env)
            .map_err(|_| Ended::Failed("the environment cannot be recorded".into()))?;
        let outcome = async {
            let mut timings = Timings::new();
            let cloning = Instant::now();
            self.clone_parent_data(&env, log, cancel).await?;
            timings.insert("clone".into(), cloning.elapsed().as_millis() as u64);
            self.build_and_report(
                activity,
                &env,
                &head,
                log,
                cancel,
                timings,
                Instant::now(),
                true,
            )
            .await
        }
        .await;
        if outcome.is_err() {
            log.line(&format!(
                "  Activation failed: environment {} stays inactive",
                env.name
            ))
            .await;
            if let Err(message) = self.deactivate_environment(&env.project, &env.name).await {
                log.line(&format!("  E: {message}")).await;
            }
        }
        outcome
    }

    /// Replaces the environment's data by a copy of its parent's.
    async fn clone_parent_data(
        &self,
        env: &Environment,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), Ended> {
        let target = self.environment_dir(&env.project, &env.name);
        remove_data(&target).await.map_err(Ended::Failed)?;
        let parent = match env.parent.as_deref() {
            Some(parent) => self.store.environment(&env.project, parent).ok().flatten(),
            None => None,
        };
        let Some(parent) = parent else {
            log.line(&format!(
                "  Activating environment {} with empty data (it has no parent)",
                env.name
            ))
            .await;
            return Ok(());
        };
        if !env.clone_parent {
            log.line(&format!(
                "  Activating environment {} with empty data (clone_parent_on_create is off)",
                env.name
            ))
            .await;
            return Ok(());
        }
        if parent.status != EnvironmentStatus::Active {
            log.line(&format!(
                "  W: the parent {} is inactive and has no data; {} starts empty",
                parent.name, env.name
            ))
            .await;
            return Ok(());
        }
        log.line(&format!(
            "  Activating environment {}, as a clone of {}",
            env.name, parent.name
        ))
        .await;
        let copied = self
            .copy_consistently(
                &env.project,
                &parent.name,
                &target,
                CopyPurpose::Activation,
                false,
                log,
                cancel,
            )
            .await;
        let copied = match copied {
            Ok(report) => report,
            Err(ended) => {
                if let Err(error) = remove_data(&target).await {
                    warn!(%error, target = %target.display(), "cannot remove a failed clone's data");
                }
                return Err(match ended {
                    Ended::Failed(message) => Ended::Failed(format!(
                        "cannot clone the data of {}: {message}",
                        parent.name
                    )),
                    Ended::Cancelled => Ended::Cancelled,
                });
            }
        };
        let with_services = if copied.services.is_empty() {
            String::new()
        } else {
            format!(", its services {} with it", copied.services.join(", "))
        };
        log.line(&format!(
            "    Cloned {} files ({:.1} MiB, {}) from {} in {:.2} s; {} changed while copying (the parent was paused {:.0} ms{with_services}); passes: {}",
            copied.first.files,
            copied.first.bytes as f64 / 1_048_576.0,
            copied.how(),
            parent.name,
            copied.elapsed.as_secs_f64(),
            copied.changed,
            copied.paused.as_secs_f64() * 1000.0,
            copied.passes,
        ))
        .await;
        Ok(())
    }

    /// Stops the environment, deletes its data and marks it inactive (the
    /// status first: a crash half way leaves an inactive environment).
    pub(crate) async fn deactivate_environment(
        &self,
        project: &str,
        name: &str,
    ) -> Result<(), String> {
        if let Ok(Some(mut env)) = self.store.environment(project, name)
            && env.status != EnvironmentStatus::Inactive
        {
            env.status = EnvironmentStatus::Inactive;
            self.store
                .put_environment(&env)
                .map_err(|_| "the environment cannot be recorded".to_owned())?;
        }
        self.stop_environment(project, name).await;
        let dir = self.environment_dir(project, name);
        remove_tree(&dir).await?;
        for mut release in self.store.releases(project, Some(name)).unwrap_or_default() {
            if matches!(
                release.status,
                ReleaseStatus::Active | ReleaseStatus::Deploying
            ) {
                release.status = ReleaseStatus::Superseded;
                if let Err(error) = self.store.put_release(&release) {
                    warn!(%error, "cannot record a release");
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn deactivate_activity(
        &self,
        activity: &Activity,
        force: bool,
        log: &Log,
    ) -> Result<Timings, Ended> {
        let env = self.activity_environment(activity)?;
        if self.is_default_environment(&env) {
            if !force {
                return Err(Ended::Failed(format!(
                    "{} is the default environment; it cannot be deactivated without --force",
                    env.name
                )));
            }
            log.line(&format!(
                "  {} is the default environment: its site goes down (reactivate it with `launchway environment activate`)",
                env.name
            ))
            .await;
        }
        self.deactivate_environment(&env.project, &env.name)
            .await
            .map_err(Ended::Failed)?;
        log.line(&format!(
            "  Deactivated environment {}: its containers and data are gone (reactivating clones {} again)",
            env.name,
            env.parent.as_deref().unwrap_or("nothing")
        ))
        .await;
        Ok(Timings::new())
    }

    pub(crate) async fn delete_activity(
        &self,
        activity: &Activity,
        remove_branch: bool,
        log: &Log,
    ) -> Result<Timings, Ended> {
        let project = &activity.project;
        let name = &activity.environment;
        let env = self.store.environment(project, name).ok().flatten();
        if let Some(env) = &env
            && self.is_default_environment(env)
        {
            return Err(Ended::Failed(format!(
                "{name} is the default environment; it cannot be deleted"
            )));
        }
        self.deactivate_environment(project, name)
            .await
            .map_err(Ended::Failed)?;
        if remove_branch && let Some(head) = env.as_ref().and_then(|e| e.head.as_deref()) {
            self.git
                .delete_branch(&self.repo_path(project), name, head)
                .await
                .map_err(|error| {
                    warn!(%error, "cannot delete a branch");
                    Ended::Failed(format!(
                        "the branch {name} could not be deleted (was it pushed to meanwhile?)"
                    ))
                })?;
        }
        let parent = env.as_ref().and_then(|e| e.parent.clone());
        let failed = |_| Ended::Failed("the environment could not be deleted".into());
        for mut child in self.store.environments(project).map_err(failed)? {
            if child.parent.as_deref() == Some(name.as_str()) {
                child.parent = parent.clone();
                self.store.put_environment(&child).map_err(failed)?;
            }
        }
        for variable in self.store.variables(project).map_err(failed)? {
            if variable.environment.as_deref() == Some(name.as_str()) {
                self.store
                    .delete_variable(project, Some(name), &variable.name)
                    .map_err(failed)?;
            }
        }
        self.store
            .delete_environment(project, name)
            .map_err(failed)?;
        log.line(&format!("  Deleted environment {name}")).await;
        Ok(Timings::new())
    }

    fn is_default_environment(&self, env: &Environment) -> bool {
        self.store
            .project(&env.project)
            .ok()
            .flatten()
            .is_some_and(|p| p.default_branch == env.name)
    }

    /// The environment `name` of `project`, or a status saying there is none.
    pub(crate) fn existing_environment(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Environment, Status> {
        self.existing_project(project)?;
        self.store
            .environment(project, name)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "there is no environment `{name}` in {project}; push its branch first"
                ))
            })
    }

    /// `launchway environments`.
    pub(crate) fn list_environments(
        &self,
        project: &str,
    ) -> Result<proto::EnvironmentList, Status> {
        self.existing_project(project)?;
        let environments = self
            .store
            .environments(project)
            .map_err(internal)?
            .iter()
            .map(|env| self.environment_info(env))
            .collect();
        Ok(proto::EnvironmentList { environments })
    }

    fn environment_info(&self, env: &Environment) -> proto::EnvironmentInfo {
        let deployment = self
            .store
            .deployment(&env.project, &env.name)
            .ok()
            .flatten();
        let release = deployment
            .as_ref()
            .and_then(|d| self.store.release(&d.release).ok().flatten())
            .filter(|r| r.status == ReleaseStatus::Active);
        let url = release
            .as_ref()
            .and_then(|r| serde_json::from_value::<DeploySpec>(r.spec.clone()).ok())
            .and_then(|spec| {
                spec.routes
                    .iter()
                    .find(|r| r.primary)
                    .or_else(|| spec.routes.first())
                    .map(|r| r.url.clone())
            })
            .unwrap_or_default();
        proto::EnvironmentInfo {
            name: env.name.clone(),
            title: env.title.clone().unwrap_or_default(),
            r#type: env.kind.as_str().into(),
            status: env.status.as_str().into(),
            parent: env.parent.clone().unwrap_or_default(),
            url,
            release: release.map(|r| r.id).unwrap_or_default(),
            head: env.head.clone().unwrap_or_default(),
            https: self.https_summary(&env.project, &env.name),
        }
    }

    /// `launchway environment activate`: an activity that clones, builds
    /// and deploys.
    pub(crate) fn activate_environment(
        self: &Arc<Self>,
        request: &proto::ActivateEnvironmentRequest,
    ) -> Result<LogStream, Status> {
        let mut env = self.existing_environment(&request.project, &request.environment)?;
        if env.status == EnvironmentStatus::Active {
            return Err(Status::failed_precondition(format!(
                "environment {} is already active (deactivate it first to clone it again)",
                env.name
            )));
        }
        if !request.parent.is_empty() && env.parent.as_deref() != Some(request.parent.as_str()) {
            self.existing_environment(&request.project, &request.parent)?;
            if self
                .environment_chain(&request.project, &request.parent)
                .contains(&env.name)
            {
                return Err(Status::invalid_argument(format!(
                    "{} cannot be its own ancestor: choose another parent than {}",
                    env.name, request.parent
                )));
            }
            if self.is_default_environment(&env) {
                return Err(Status::invalid_argument(
                    "the default environment has no parent",
                ));
            }
            env.parent = Some(request.parent.clone());
        }
        env.clone_parent = !request.no_clone;
        self.store.put_environment(&env).map_err(internal)?;
        let description = match &env.parent {
            Some(parent) if env.clone_parent => {
                format!("activation of {} as a clone of {parent}", env.name)
            }
            _ => format!("activation of {}", env.name),
        };
        self.run_activity(
            &env.project,
            &env.name,
            ActivityKind::Activate,
            description,
            Work::Activate,
        )
    }

    /// `launchway environment deactivate|delete`.
    pub(crate) fn remove_environment(
        self: &Arc<Self>,
        request: &proto::EnvironmentRequest,
        delete: bool,
    ) -> Result<LogStream, Status> {
        let env = self.existing_environment(&request.project, &request.environment)?;
        if self.is_default_environment(&env) && (delete || !request.force) {
            return Err(Status::failed_precondition(if delete {
                format!(
                    "{} is the default environment; it cannot be deleted (delete the project, or deactivate it with --force)",
                    env.name
                )
            } else {
                format!(
                    "{} is the default environment: deactivating it takes the production site down and deletes its data; add --force to do it",
                    env.name
                )
            }));
        }
        let (kind, description, work) = if delete {
            (
                ActivityKind::Delete,
                format!("deletion of {}", env.name),
                Work::Delete {
                    remove_branch: true,
                },
            )
        } else {
            (
                ActivityKind::Deactivate,
                format!("deactivation of {}", env.name),
                Work::Deactivate {
                    force: request.force,
                },
            )
        };
        self.run_activity(&env.project, &env.name, kind, description, work)
    }

    /// `launchway deploy` and `launchway redeploy`.
    pub(crate) fn deploy_environment(
        self: &Arc<Self>,
        request: &proto::EnvironmentRequest,
        redeploy: bool,
    ) -> Result<LogStream, Status> {
        let env = self.existing_environment(&request.project, &request.environment)?;
        if env.status != EnvironmentStatus::Active {
            return Err(Status::failed_precondition(format!(
                "environment {} is inactive; activate it with `launchway environment activate -p {} {}`",
                env.name, env.project, env.name
            )));
        }
        let (kind, description, work) = if redeploy {
            (
                ActivityKind::Redeploy,
                format!("redeploy of {}", env.name),
                Work::Redeploy,
            )
        } else {
            (
                ActivityKind::Deploy,
                format!("deploy of {} requested", env.name),
                Work::DeployHead,
            )
        };
        self.run_activity(&env.project, &env.name, kind, description, work)
    }
}
