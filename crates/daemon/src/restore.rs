//! Restoring a backup (`launchway backup restore`): an
//! `environment.restore` activity of the target environment's queue.
//!
//! The data is put back atomically: after any failure or a kill -9 at any
//! step the environment has its data from before or the backup's, whole.
//!
//! 1. Checks, nothing changed yet: the backup is whole, the environment
//!    active, the release to deploy readable with its images present (the
//!    backup's release; the serving one with `--no-code`, or when the
//!    backup is restored into another environment: an environment's code is
//!    its branch's).
//! 2. Staging, while the environment serves: the backup's `volumes/` and
//!    `services/` are copied (reflinks where the filesystem has them) into
//!    `<env>/.restore-new/`, synced; then the journal `<env>/restore.json`
//!    says `staged`.
//! 3. The deployment record names the release to deploy (phase `holding`,
//!    the serving release as `previous`), requests are held, in-flight ones
//!    drained, and every container of the environment stops, its services
//!    too (their files are about to change under them).
//! 4. The journal says `swapping`; each live directory is renamed into
//!    `<env>/.restore-old/` and the staged one into its place; the journal
//!    says `swapped`; the old data and the journal are removed.
//! 5. The release is deployed (`deploy_release`): services start on the
//!    restored data, the deploy hook runs, requests flow.
//!
//! Start-up (`reconcile_restores`, before deployments are recovered): a
//! journal at `staged` is rolled back (staging removed; the deployment
//! record goes back to the serving release, which the usual recovery then
//! starts again); at `swapping` the renames are finished (they are made in
//! an order that tells how far they got), then as at `swapped`: old data
//! removed, and the usual recovery deploys the recorded release.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use launchway_api::proto;
use launchway_deploy::{DeploySpec, Phase};
use launchway_store::{Activity, ActivityKind, Deployment, EnvironmentStatus, Release};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{info, warn};

use crate::activity::{Ended, Log, Work};
use crate::backups::{Manifest, human_bytes, sync_dir, sync_filesystem};
use crate::build_api::LogStream;
use crate::data_copy::{PERSISTENT_DIRS, remove_tree, sync_data};
use crate::deploy::{environment_key, parse_phase};
use crate::{Daemon, now_ms};

/// The restore journal, in the environment's directory.
const JOURNAL: &str = "restore.json";
/// The backup's data, staged in the environment's directory.
pub(crate) const STAGING: &str = ".restore-new";
/// The data it replaced, until the swap is over.
const REPLACED: &str = ".restore-old";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum JournalState {
    /// The backup's data is whole in the staging directory; the live data
    /// is untouched.
    Staged,
    /// Directories are being renamed; finish them.
    Swapping,
    /// The backup's data is live.
    Swapped,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Journal {
    project: String,
    environment: String,
    /// What the data comes from (`backup S…`, `main`).
    source: String,
    /// The release the restore deploys.
    release: String,
    /// The release that served before.
    previous: Option<String>,
    state: JournalState,
}

impl Journal {
    /// Writes the journal atomically and durably.
    fn write(&self, env_dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let temporary = env_dir.join(format!("{JOURNAL}.tmp"));
        let mut file = std::fs::File::create(&temporary)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, env_dir.join(JOURNAL))?;
        sync_dir(env_dir)
    }

    fn read(env_dir: &Path) -> std::io::Result<Option<Journal>> {
        match std::fs::read(env_dir.join(JOURNAL)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Renames the staged directories into place, the live ones away first.
/// Idempotent: run again after a stop at any point, it finishes the job
/// (a staged directory still there has not been moved in yet; its live
/// one is moved away first unless that was done already).
fn swap_in(env_dir: &Path) -> std::io::Result<()> {
    let staging = env_dir.join(STAGING);
    let replaced = env_dir.join(REPLACED);
    std::fs::create_dir_all(&replaced)?;
    for (index, dir) in PERSISTENT_DIRS.iter().enumerate() {
        let staged = staging.join(dir);
        if !exists(&staged) {
            continue;
        }
        let live = env_dir.join(dir);
        if exists(&live) {
            if exists(&replaced.join(dir)) {
                return Err(std::io::Error::other(format!(
                    "{} and {} both exist: the restore cannot tell which data is older",
                    live.display(),
                    replaced.join(dir).display()
                )));
            }
            std::fs::rename(&live, replaced.join(dir))?;
        }
        std::fs::rename(&staged, &live)?;
        if index == 0 {
            crate::failpoint::reached("restore.half_swapped");
        }
    }
    sync_dir(env_dir)
}

/// Removes what a finished (or rolled back) restore leaves, journal last.
fn clean_up(env_dir: &Path) -> std::io::Result<()> {
    for dir in [STAGING, REPLACED] {
        match std::fs::remove_dir_all(env_dir.join(dir)) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    match std::fs::remove_file(env_dir.join(JOURNAL)) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    sync_dir(env_dir)
}

impl Daemon {
    /// `launchway backup restore`: checks the request, then restores in an
    /// activity of the target environment's queue.
    pub(crate) fn restore_backup(
        self: &Arc<Self>,
        request: &proto::RestoreBackupRequest,
    ) -> Result<LogStream, Status> {
        let backup = self.existing_backup(&request.project, &request.id)?;
        let target = if request.to_environment.is_empty() {
            backup.environment.clone()
        } else {
            request.to_environment.clone()
        };
        let env = self.existing_environment(&request.project, &target)?;
        if env.status != EnvironmentStatus::Active {
            return Err(Status::failed_precondition(format!(
                "environment {} is inactive: activate it first (`launchway environment activate -p {} {}`), then restore into it",
                env.name, env.project, env.name
            )));
        }
        if let Err(message) = Manifest::read(&self.backup_dir(&backup.project, &backup.id)) {
            return Err(Status::failed_precondition(format!(
                "backup {} cannot be restored: {message}",
                backup.id
            )));
        }
        self.run_activity(
            &env.project,
            &env.name,
            ActivityKind::BackupRestore,
            format!(
                "restore of backup {} (taken from {}) into {}",
                backup.id, backup.environment, env.name
            ),
            Work::Restore {
                backup: backup.id.clone(),
                no_code: request.no_code,
            },
        )
    }

    /// The release a restore deploys, checked: the backup's, or the
    /// serving one.
    async fn release_to_restore(
        &self,
        backup: &launchway_store::Backup,
        env: &launchway_store::Environment,
        no_code: bool,
        log: &Log,
    ) -> Result<Release, Ended> {
        let serving = self.serving_release(&env.project, &env.name);
        let with_code = !no_code && backup.environment == env.name && !backup.release.is_empty();
        let release = if with_code {
            self.store
                .release(&backup.release)
                .ok()
                .flatten()
                .ok_or_else(|| {
                    Ended::Failed(format!(
                        "release {} of backup {} is no longer recorded; restore the data alone with --no-code",
                        backup.release, backup.id
                    ))
                })?
        } else {
            if !no_code && backup.environment != env.name {
                log.line(&format!(
                    "  The data goes into {}, which keeps its own code (release {}): an environment's code is its branch's",
                    env.name,
                    serving.as_ref().map_or("none", |r| r.id.as_str())
                ))
                .await;
            }
            serving.ok_or_else(|| {
                Ended::Failed(format!(
                    "environment {} serves no release to run on the restored data; deploy it first (`launchway deploy -p {} -e {}`)",
                    env.name, env.project, env.name
                ))
            })?
        };
        let spec: DeploySpec = serde_json::from_value(release.spec.clone())
            .map_err(|_| Ended::Failed(format!("release {} cannot be read", release.id)))?;
        // A service would refuse the backup's data (another major): say so
        // now, before anything changes.
        let services = self
            .backup_dir(&backup.project, &backup.id)
            .join("services");
        for service in &spec.services {
            if let Some(why) = crate::services::data_refused(&services.join(&service.name), service)
            {
                return Err(Ended::Failed(format!(
                    "release {} cannot run on backup {}: {why}; nothing was changed",
                    release.id, backup.id
                )));
            }
        }
        self.ensure_release_images(&release, &spec)
            .await
            .map_err(|ended| match ended {
                Ended::Failed(message) if with_code => Ended::Failed(format!(
                    "{message}; or restore the data alone with --no-code"
                )),
                other => other,
            })?;
        Ok(release)
    }

    /// The activity (see the module doc for its steps).
    pub(crate) async fn restore_activity(
        &self,
        activity: &Activity,
        id: &str,
        no_code: bool,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<String, u64>, Ended> {
        let backup = self
            .store
            .backup(&activity.project, id)
            .ok()
            .flatten()
            .ok_or_else(|| Ended::Failed(format!("there is no backup {id}")))?;
        let _in_use = self.use_backup(&backup.project, &backup.id);
        let env = self.activity_environment(activity)?;
        if env.status != EnvironmentStatus::Active {
            return Err(Ended::Failed(format!(
                "environment {} is inactive: activate it first",
                env.name
            )));
        }
        let source = self.backup_dir(&backup.project, &backup.id);
        Manifest::read(&source).map_err(Ended::Failed)?;
        // Images stay while the release deploys: garbage collection waits.
        let _gc = self.gc_lock.read().await;
        let release = self.release_to_restore(&backup, &env, no_code, log).await?;
        let started = Instant::now();
        let env_dir = self.environment_dir(&env.project, &env.name);

        // 2. Staging, while the environment serves.
        log.line(&format!(
            "  Restoring backup {} ({}, taken from {} at release {}) into {}",
            backup.id,
            human_bytes(backup.size_bytes),
            backup.environment,
            if backup.release.is_empty() {
                "none"
            } else {
                backup.release.as_str()
            },
            env.name
        ))
        .await;
        let staging = env_dir.join(STAGING);
        for leftover in [STAGING, REPLACED] {
            remove_tree(&env_dir.join(leftover)).await?;
        }
        let staged = sync_data(&source, &staging, launchway_volumes::SyncMode::Full).await;
        let staged = match staged {
            Ok(report) => report,
            Err(message) => {
                let _ = remove_tree(&staging).await;
                return Err(Ended::Failed(format!(
                    "the backup's data could not be copied into place: {message}; nothing was changed"
                )));
            }
        };
        log.line(&format!(
            "    Staged {} files ({}) in {:.2} s while the environment served",
            staged.files,
            if staged.reflinked > 0 && staged.copied == 0 {
                "copy-on-write"
            } else {
                "copied"
            },
            started.elapsed().as_secs_f64()
        ))
        .await;
        let what = format!("backup {}", backup.id);
        let (deployed, held) = self
            .swap_staged_and_deploy(activity, &env, &what, release, false, log, cancel)
            .await?;
        log.line(&format!(
            "  Environment {} is at release {} with the data of {what} (requests held {:.2} s)",
            env.name,
            deployed.id,
            held.as_secs_f64()
        ))
        .await;
        Ok(BTreeMap::from([(
            "restore".to_owned(),
            started.elapsed().as_millis() as u64,
        )]))
    }

    /// Puts the data staged in the environment's `.restore-new/` in place
    /// and deploys `release` on it (steps 2 to 5 of the module doc; `what`
    /// names the data in the journal and the log). Returns the release and
    /// how long requests were held.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn swap_staged_and_deploy(
        &self,
        activity: &Activity,
        env: &launchway_store::Environment,
        what: &str,
        release: Release,
        fresh: bool,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(Release, Duration), Ended> {
        let env_dir = self.environment_dir(&env.project, &env.name);
        let staging = env_dir.join(STAGING);
        if cancel.is_cancelled() {
            let _ = remove_tree(&staging).await;
            return Err(Ended::Cancelled);
        }
        let previous = self.serving_release(&env.project, &env.name).map(|r| r.id);
        let mut journal = Journal {
            project: env.project.clone(),
            environment: env.name.clone(),
            source: what.to_owned(),
            release: release.id.clone(),
            previous: previous.clone(),
            state: JournalState::Staged,
        };
        let written = {
            let journal = journal.clone();
            let env_dir = env_dir.clone();
            let staging = staging.clone();
            tokio::task::spawn_blocking(move || {
                for dir in PERSISTENT_DIRS {
                    std::fs::create_dir_all(staging.join(dir))?;
                }
                sync_filesystem(&staging)?;
                journal.write(&env_dir)
            })
            .await
        };
        if !matches!(written, Ok(Ok(()))) {
            let _ = remove_tree(&staging).await;
            let _ = std::fs::remove_file(env_dir.join(JOURNAL));
            return Err(Ended::Failed(
                "the restore journal cannot be written; nothing was changed".into(),
            ));
        }
        crate::failpoint::reached("restore.staged");

        // 3. Hold, drain, stop everything of the environment.
        let key = environment_key(&env.project, &env.name);
        let containers = self.engine.app_containers(Some(&key)).await;
        let containers = match containers {
            Ok(containers) => containers,
            Err(error) => {
                let _ = tokio::task::spawn_blocking(move || clean_up(&env_dir)).await;
                return Err(Ended::Failed(format!(
                    "cannot list the environment's containers: {error}; nothing was changed"
                )));
            }
        };
        let deployment = Deployment {
            project: env.project.clone(),
            environment: env.name.clone(),
            release: release.id.clone(),
            previous: previous.clone(),
            phase: Phase::Holding.as_str().to_owned(),
            containers: containers.clone(),
            updated_at: now_ms(),
        };
        if self.store.put_deployment(&deployment).is_err() {
            let _ = tokio::task::spawn_blocking(move || clean_up(&env_dir)).await;
            return Err(Ended::Failed(
                "the deployment cannot be recorded; nothing was changed".into(),
            ));
        }
        let held_at = Instant::now();
        self.router.hold(&key);
        if !self
            .router
            .drain(
                &key,
                Duration::from_secs(self.settings.deploy.drain_timeout_secs),
            )
            .await
        {
            log.line("    W: requests were still running; stopping the environment anyway")
                .await;
        }
        let (still_running, _) = self.stop_containers(&containers).await;
        if !still_running.is_empty() {
            // The data cannot change under a running service: back out,
            // and start again what was stopped.
            let cleaned = {
                let env_dir = env_dir.clone();
                tokio::task::spawn_blocking(move || clean_up(&env_dir)).await
            };
            if !matches!(cleaned, Ok(Ok(()))) {
                warn!("a backed-out restore left its staging; start-up removes it");
            }
            log.line(&format!(
                "    E: {} container(s) could not be stopped; the data is left as it was",
                still_running.len()
            ))
            .await;
            if let Some(previous) = previous.and_then(|id| self.store.release(&id).ok().flatten()) {
                let _ = self
                    .deploy_release(activity, env, previous, false, log, cancel)
                    .await;
            }
            return Err(Ended::Failed(
                "the restore was abandoned: the environment's containers did not stop".into(),
            ));
        }
        crate::failpoint::reached("restore.stopped");

        // 4. The swap.
        journal.state = JournalState::Swapping;
        let swapped = {
            let env_dir = env_dir.clone();
            let mut journal = journal.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                journal.write(&env_dir)?;
                swap_in(&env_dir)?;
                journal.state = JournalState::Swapped;
                journal.write(&env_dir)?;
                crate::failpoint::reached("restore.swapped");
                clean_up(&env_dir)
            })
            .await
        };
        match swapped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                // Requests stay held: the next start finishes or undoes it.
                return Err(Ended::Failed(format!(
                    "the data could not be swapped ({error}); the environment stays held until the daemon restarts, which finishes the restore"
                )));
            }
            Err(_) => {
                return Err(Ended::Failed("the swap stopped unexpectedly".into()));
            }
        }
        log.line(&format!(
            "    The backup's data is in place ({:.2} s after requests were held)",
            held_at.elapsed().as_secs_f64()
        ))
        .await;

        // 5. Deploy on the new data.
        let deployed = self
            .deploy_release(activity, env, release, fresh, log, cancel)
            .await;
        let deployed = deployed.map_err(|ended| match ended {
            Ended::Failed(message) => {
                Ended::Failed(format!("the data of {what} is in place, but {message}"))
            }
            other => other,
        })?;
        Ok((deployed, held_at.elapsed()))
    }

    /// Start-up: finishes or undoes every restore a stop interrupted (see
    /// the module doc). Runs before deployments are recovered, which then
    /// start what the deployment record names.
    pub(crate) fn reconcile_restores(&self) {
        let root = self.settings.data_dir.join("environments");
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let env_dir = entry.path();
            let journal = match Journal::read(&env_dir) {
                Ok(Some(journal)) => journal,
                Ok(None) => {
                    // A restore that never wrote its journal: only staging.
                    if exists(&env_dir.join(STAGING))
                        && let Err(error) = std::fs::remove_dir_all(env_dir.join(STAGING))
                    {
                        warn!(%error, "cannot remove a restore's staging");
                    }
                    continue;
                }
                Err(error) => {
                    warn!(%error, dir = %env_dir.display(), "a restore journal cannot be read; the environment's data is left as it is");
                    continue;
                }
            };
            let outcome = match journal.state {
                JournalState::Staged => {
                    info!(environment = %journal.environment, source = %journal.source, "a restore was interrupted before its swap: undone");
                    self.undo_restore_deployment(&journal);
                    clean_up(&env_dir)
                }
                JournalState::Swapping | JournalState::Swapped => {
                    info!(environment = %journal.environment, source = %journal.source, "a restore was interrupted during or after its swap: finished");
                    swap_in(&env_dir).and_then(|()| clean_up(&env_dir))
                }
            };
            if let Err(error) = outcome {
                warn!(%error, environment = %journal.environment, "the interrupted restore could not be settled; its journal stays for the next start");
            }
        }
    }

    /// A restore undone before its swap: the deployment record goes back
    /// to the release that served (the recovery starts it again).
    fn undo_restore_deployment(&self, journal: &Journal) {
        let Ok(Some(mut deployment)) = self
            .store
            .deployment(&journal.project, &journal.environment)
        else {
            return;
        };
        self.fail_release(&journal.release);
        let released = parse_phase(&deployment.phase).is_some_and(Phase::is_released);
        if released || deployment.release != journal.release {
            return;
        }
        match &journal.previous {
            Some(previous) => {
                deployment.release = previous.clone();
                deployment.previous = Some(previous.clone());
            }
            None => deployment.phase = Phase::Failed.as_str().to_owned(),
        }
        deployment.updated_at = now_ms();
        if let Err(error) = self.store.put_deployment(&deployment) {
            warn!(%error, "cannot record the undone restore's deployment");
        }
    }
}
