//! `launchway project delete P`: everything of a project goes, crash-safely.
//!
//! Refused while any activity of the project is queued or runs, a cron or a
//! push is on, or a backup is being read (export, restore). Otherwise the
//! project record gets its tombstone (`deleting`), which from then on
//! refuses every other operation on it (API, pushes, schedules), and a
//! `project.delete` activity (queue `P\0`, environment "") runs these
//! steps, each idempotent:
//! 1. every environment, deleted ones included: its queue is waited for,
//!    crons stopped, containers stopped and removed, network and data
//!    removed (as a deactivation);
//! 2. its backups, then its build cache, then its repository (renamed to
//!    `.P.git.deleting` first, so a half-removed one never looks whole);
//! 3. every record of it in the store (`Store::purge_project`);
//! 4. images no other project's build keeps (`gc`);
//! 5. the project record, last.
//!
//! A daemon killed midway finds the tombstone at start-up and runs the
//! deletion again from the start; the end is the same. The deletion's own
//! activity record is removed once it has ended well: nothing of the
//! project stays (the daemon's log keeps the line).

use std::sync::Arc;

use launchway_store::{ActivityKind, StoreError};
use tonic::Status;
use tracing::{info, warn};

use crate::activity::{Ended, Log, Work};
use crate::api::internal;
use crate::build_api::LogStream;
use crate::data_copy::remove_tree;
use crate::{Daemon, now_ms};

type Timings = std::collections::BTreeMap<String, u64>;

impl Daemon {
    /// Refuses operations on a project being deleted.
    pub(crate) fn refuse_deleting(&self, project: &launchway_store::Project) -> Result<(), Status> {
        match project.deleting {
            Some(_) => Err(Status::failed_precondition(format!(
                "project `{}` is being deleted",
                project.name
            ))),
            None => Ok(()),
        }
    }

    /// What keeps `project` from being deleted now, if anything.
    fn deletion_blockers(&self, project: &str) -> Vec<String> {
        let prefix = format!("{project}\0");
        let mut blockers = Vec::new();
        let queued: usize = match self.busy.lock() {
            Ok(busy) => busy,
            Err(poisoned) => poisoned.into_inner(),
        }
        .iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .map(|(_, count)| *count)
        .sum();
        if queued > 0 {
            blockers.push(format!("{queued} activities are queued or running"));
        }
        let crons: usize = match self.crons.lock() {
            Ok(crons) => crons,
            Err(poisoned) => poisoned.into_inner(),
        }
        .iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .map(|(_, runs)| runs.len())
        .sum();
        if crons > 0 {
            blockers.push(format!("{crons} crons are running"));
        }
        let pushes = match self.sessions.lock() {
            Ok(sessions) => sessions,
            Err(poisoned) => poisoned.into_inner(),
        }
        .values()
        .filter(|s| s.project == project)
        .count();
        if pushes > 0 {
            blockers.push(format!("{pushes} pushes are in progress"));
        }
        let reading: usize = match self.backups_in_use.lock() {
            Ok(in_use) => in_use,
            Err(poisoned) => poisoned.into_inner(),
        }
        .iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .map(|(_, count)| *count)
        .sum();
        if reading > 0 {
            blockers.push(format!("{reading} backups are being read"));
        }
        blockers
    }

    /// `launchway project delete P`.
    pub(crate) fn delete_project(self: &Arc<Self>, name: &str) -> Result<LogStream, Status> {
        let project = self
            .store
            .project(name)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("there is no project `{name}`")))?;
        if project.deleting.is_none() {
            // Exclusive use of the repository while checking and marking: a
            // push either holds it (and is counted) or reads the mark.
            let Some(_repository) = self.repository_locks.try_exclusive(name) else {
                return Err(Status::failed_precondition(format!(
                    "project `{name}` cannot be deleted now: a push or the repository's maintenance is in progress; wait, then try again"
                )));
            };
            let blockers = self.deletion_blockers(name);
            if !blockers.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "project `{name}` cannot be deleted now: {}; cancel them or wait, then try again",
                    blockers.join(", ")
                )));
            }
            self.store
                .update_project(name, |p| {
                    p.deleting.get_or_insert(now_ms());
                })
                .map_err(internal)?;
        }
        self.run_activity(
            name,
            "",
            ActivityKind::ProjectDelete,
            format!("deletion of project {name}"),
            Work::DeleteProject,
        )
    }

    /// Start-up: deletions a stop interrupted run again.
    pub(crate) fn resume_project_deletions(self: &Arc<Self>) {
        let projects = match self.store.projects() {
            Ok(projects) => projects,
            Err(error) => {
                warn!(%error, "cannot look for interrupted project deletions");
                return;
            }
        };
        for project in projects.into_iter().filter(|p| p.deleting.is_some()) {
            info!(project = %project.name, "finishing the deletion of the project");
            if let Err(error) = self.schedule(
                &project.name,
                "",
                ActivityKind::ProjectDelete,
                &format!("deletion of project {} (resumed)", project.name),
                Work::DeleteProject,
                None,
            ) {
                warn!(%error, project = %project.name, "cannot resume the project's deletion");
            }
        }
    }

    pub(crate) async fn delete_project_activity(
        &self,
        activity: &launchway_store::Activity,
        log: &Log,
    ) -> Result<Timings, Ended> {
        let project = activity.project.clone();
        let failed = |what: &str| {
            let what = what.to_owned();
            move |error: StoreError| {
                warn!(%error, "project deletion: {what}");
                Ended::Failed(format!(
                    "the project's {what} cannot be read or removed; run the deletion again"
                ))
            }
        };
        let mut environments = self
            .store
            .history_environments(&project)
            .map_err(failed("history"))?;
        environments.extend(
            self.store
                .environments(&project)
                .map_err(failed("environments"))?
                .into_iter()
                .map(|e| e.name),
        );
        environments.remove("");
        for name in &environments {
            // Whatever of this environment was queued before the tombstone
            // ends first.
            let mut turn = match self.queues.join(&format!("{project}\0{name}"), || {
                Ok::<_, std::convert::Infallible>(())
            }) {
                Ok(((), turn)) => turn,
                Err(never) => match never {},
            };
            turn.wait().await;
            self.stop_crons(&project, name, log).await;
            let result = self.deactivate_environment(&project, name).await;
            turn.finish();
            result.map_err(Ended::Failed)?;
            log.line(&format!(
                "  Removed environment {name}: containers, network, data"
            ))
            .await;
        }
        crate::failpoint::reached("project_delete.environments");

        for backup in self
            .store
            .backups(&project, None)
            .map_err(failed("backups"))?
        {
            self.remove_backup(&project, &backup.id)
                .await
                .map_err(Ended::Failed)?;
        }
        remove_tree(&self.backups_dir(&project))
            .await
            .map_err(Ended::Failed)?;
        self.builder
            .clear_cache(&project, None)
            .await
            .map_err(|error| {
                Ended::Failed(format!("the build cache cannot be removed: {error}"))
            })?;
        remove_tree(&self.settings.data_dir.join("build-cache").join(&project))
            .await
            .map_err(Ended::Failed)?;
        // Maintenance may still be packing it: wait for that, keep it out.
        let _repository = self.repository_locks.exclusive(&project).await;
        let repo = self.repo_path(&project);
        let doomed = self.repos.join(format!(".{project}.git.deleting"));
        match std::fs::rename(&repo, &doomed) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(Ended::Failed(format!(
                    "the repository cannot be moved away: {error}"
                )));
            }
        }
        remove_tree(&doomed).await.map_err(Ended::Failed)?;
        log.line("  Removed backups, build cache and repository")
            .await;
        crate::failpoint::reached("project_delete.files");

        self.store
            .purge_project(&project, activity.id)
            .map_err(failed("records"))?;
        crate::failpoint::reached("project_delete.records");
        match self.collect_garbage().await {
            Ok((removed, _)) => {
                log.line(&format!(
                    "  Removed {} images no other build keeps",
                    removed.len()
                ))
                .await;
            }
            // The records are gone: the next gc collects them.
            Err(error) => warn!(%error, "gc after a project deletion"),
        }
        self.store
            .delete_project(&project)
            .map_err(failed("record"))?;
        log.line(&format!("  Deleted project {project}")).await;
        info!(%project, "project deleted");
        Ok(Timings::new())
    }
}
