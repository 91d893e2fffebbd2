//! Backups (`launchway backup create`, `backups`, `backup delete`): a
//! consistent copy of an environment's persistent data (its mounts'
//! `volumes/` and every service's `services/<name>`), with the release it
//! served (so its code and the variables it ran with).
//!
//! - A backup is an `environment.backup` activity of the environment's
//!   queue (no deploy runs meanwhile). Its data is taken as activation
//!   clones a parent (`data_copy.rs`): two passes while the environment
//!   serves, then a last one with its containers frozen; the pause is
//!   logged and recorded. `--live` skips the freeze, and is refused when a
//!   service's files are not whole when copied running
//!   (`launchway_services::run::copies_online`).
//! - Where: `<data>/backups/<project>/<id>/` holding `volumes/`,
//!   `services/` and `backup.json` (the record and the release). Same
//!   filesystem as the environments, so copies are reflinks where it has
//!   them.
//! - Crash safety: the copy goes to `<id>.partial/`, is synced (syncfs),
//!   gets its manifest, and is renamed into place; only then is the record
//!   written. Start-up removes `*.partial`, adopts a renamed directory
//!   whose record a crash lost (from its manifest), and finishes
//!   deletions (`<id>.deleting`: renamed first, so a backup is whole or
//!   gone). A record whose directory vanished is listed as `missing`.
//! - Space: refused before it starts when its data (logical bytes) would
//!   take the project past `backup.max_bytes`, or (without reflinks) past
//!   90 % of the free space.
//! - A backup's release keeps its build's images (garbage collection);
//!   a backup a restore or an export reads is never deleted meanwhile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use launchway_api::proto;
use launchway_deploy::DeploySpec;
use launchway_store::{Activity, ActivityKind, Backup, EnvironmentStatus, Release, ReleaseStatus};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{info, warn};

use crate::activity::{Ended, Log, Work};
use crate::api::internal;
use crate::build_api::LogStream;
use crate::data_copy::{CopyPurpose, PERSISTENT_DIRS, remove_tree};
use crate::deploy::parse_phase;
use crate::{Daemon, now_ms};

/// The manifest in a backup's directory.
pub(crate) const MANIFEST: &str = "backup.json";
/// The format of [`Manifest`] this version writes and reads.
const MANIFEST_FORMAT: u32 = 1;
const PARTIAL_SUFFIX: &str = ".partial";
const DELETING_SUFFIX: &str = ".deleting";

/// What a backup's directory says about itself: enough to list it again
/// (a crash lost its record, or it was imported) and to deploy its code.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) format: u32,
    pub(crate) backup: Backup,
    /// The release it served, as recorded then.
    pub(crate) release: Option<Release>,
}

impl Manifest {
    /// Reads a manifest, refusing a format this version does not know.
    pub(crate) fn read(dir: &Path) -> Result<Manifest, String> {
        let path = dir.join(MANIFEST);
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a backup manifest: {e}", path.display()))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(format!(
                "{} was written in format {} by another version of Launchway (this one reads {MANIFEST_FORMAT})",
                path.display(),
                manifest.format
            ));
        }
        Ok(manifest)
    }

    /// Writes the manifest into `dir` and syncs it.
    pub(crate) fn write(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let path = dir.join(MANIFEST);
        let mut file = std::fs::File::create(&path)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.sync_all()
    }
}

/// Syncs the filesystem holding `dir` (everything a copy wrote).
pub(crate) fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    let handle = std::fs::File::open(dir)?;
    nix::unistd::syncfs(&handle).map_err(std::io::Error::from)
}

/// Syncs a directory (a rename in it is durable afterwards).
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The logical bytes of an environment's (or a backup's) data.
pub(crate) fn data_bytes(dir: &Path) -> u64 {
    PERSISTENT_DIRS
        .iter()
        .map(|name| crate::service_data::disk_usage(&dir.join(name)))
        .sum()
}

/// Marks a backup as read while it lives: deletion and the retention
/// leave it alone.
pub(crate) struct BackupInUse {
    in_use: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    key: String,
}

impl Drop for BackupInUse {
    fn drop(&mut self) {
        let mut in_use = match self.in_use.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(count) = in_use.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                in_use.remove(&self.key);
            }
        }
    }
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl Daemon {
    /// Where a project's backups live.
    pub(crate) fn backups_dir(&self, project: &str) -> PathBuf {
        self.settings.data_dir.join("backups").join(project)
    }

    pub(crate) fn backup_dir(&self, project: &str, id: &str) -> PathBuf {
        self.backups_dir(project).join(id)
    }

    pub(crate) fn use_backup(&self, project: &str, id: &str) -> BackupInUse {
        let key = format!("{project}\0{id}");
        let mut in_use = match self.backups_in_use.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *in_use.entry(key.clone()).or_default() += 1;
        BackupInUse {
            in_use: self.backups_in_use.clone(),
            key,
        }
    }

    pub(crate) fn backup_is_used(&self, project: &str, id: &str) -> bool {
        let in_use = match self.backups_in_use.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        in_use.contains_key(&format!("{project}\0{id}"))
    }

    /// The release serving an environment (released, not failed).
    pub(crate) fn serving_release(&self, project: &str, environment: &str) -> Option<Release> {
        let deployment = self.store.deployment(project, environment).ok().flatten()?;
        if !parse_phase(&deployment.phase).is_some_and(launchway_deploy::Phase::is_released) {
            return None;
        }
        self.store
            .release(&deployment.release)
            .ok()
            .flatten()
            .filter(|r| r.status == ReleaseStatus::Active)
    }

    /// The backup `id` of `project`, or a status a person can act on.
    pub(crate) fn existing_backup(&self, project: &str, id: &str) -> Result<Backup, Status> {
        self.existing_project(project)?;
        self.store
            .backup(project, id)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "there is no backup `{}` in project {project}; list them with `launchway backups -p {project}`",
                    id.escape_debug()
                ))
            })
    }

    /// `launchway backup create`: checks the request, then takes the
    /// backup in an activity of the environment's queue.
    pub(crate) fn create_backup(
        self: &Arc<Self>,
        request: &proto::CreateBackupRequest,
    ) -> Result<LogStream, Status> {
        let env = self.existing_environment(&request.project, &request.environment)?;
        if env.status != EnvironmentStatus::Active {
            return Err(Status::failed_precondition(format!(
                "environment {} is inactive: it has no data to back up",
                env.name
            )));
        }
        self.run_activity(
            &env.project,
            &env.name,
            ActivityKind::BackupCreate,
            format!(
                "{}backup of {}",
                if request.live { "live " } else { "" },
                env.name
            ),
            Work::Backup {
                live: request.live,
                scheduled: false,
            },
        )
    }

    /// The activity: space checks, the consistent copy into
    /// `<id>.partial`, manifest, rename, record.
    pub(crate) async fn backup_activity(
        &self,
        activity: &Activity,
        live: bool,
        scheduled: bool,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<String, u64>, Ended> {
        let env = self.activity_environment(activity)?;
        if env.status != EnvironmentStatus::Active {
            return Err(Ended::Failed(format!(
                "environment {} is inactive: it has no data to back up",
                env.name
            )));
        }
        let release = self.serving_release(&env.project, &env.name);
        if live {
            let spec = release
                .as_ref()
                .and_then(|r| serde_json::from_value::<DeploySpec>(r.spec.clone()).ok());
            let offline: Vec<String> = spec
                .iter()
                .flat_map(|spec| spec.services.iter())
                .filter(|s| !launchway_services::run::copies_online(&s.kind))
                .map(|s| format!("{} ({})", s.name, s.kind))
                .collect();
            if !offline.is_empty() {
                return Err(Ended::Failed(format!(
                    "a live backup would copy the files of {} while it writes them, which it cannot start from; \
                     take the backup without --live (the environment pauses only for the last pass)",
                    offline.join(", ")
                )));
            }
        }
        let source = self.environment_dir(&env.project, &env.name);
        let backups = self.backups_dir(&env.project);
        let estimate = {
            let source = source.clone();
            tokio::task::spawn_blocking(move || data_bytes(&source))
                .await
                .map_err(|_| Ended::Failed("the data could not be measured".into()))?
        };
        self.check_backup_space(&env.project, &backups, estimate)
            .await?;

        let id = crate::builds::new_record_id('S');
        let partial = backups.join(format!("{id}{PARTIAL_SUFFIX}"));
        let started = Instant::now();
        log.line(&format!(
            "  Backing up environment {} ({}{}) as {id}",
            env.name,
            human_bytes(estimate),
            if live { ", live" } else { "" }
        ))
        .await;
        let copied = self
            .copy_consistently(
                &env.project,
                &env.name,
                &partial,
                CopyPurpose::Backup,
                live,
                log,
                cancel,
            )
            .await;
        let copied = match copied {
            Ok(copied) => copied,
            Err(ended) => {
                if let Err(error) = remove_tree(&partial).await {
                    warn!(%error, "cannot remove a failed backup's copy");
                }
                return Err(match ended {
                    Ended::Failed(message) => {
                        Ended::Failed(format!("the backup could not be taken: {message}"))
                    }
                    Ended::Cancelled => Ended::Cancelled,
                });
            }
        };
        let record = Backup {
            id: id.clone(),
            project: env.project.clone(),
            environment: env.name.clone(),
            created_at: now_ms(),
            release: release.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
            size_bytes: 0,
            live,
            paused_ms: copied.paused.as_millis() as u64,
            activity: Some(activity.id),
            commit: release
                .as_ref()
                .map(|r| r.commit.clone())
                .unwrap_or_default(),
            scheduled,
        };
        let finished = {
            let partial = partial.clone();
            let target = self.backup_dir(&env.project, &id);
            let mut record = record.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<Backup> {
                record.size_bytes = data_bytes(&partial);
                for dir in PERSISTENT_DIRS {
                    std::fs::create_dir_all(partial.join(dir))?;
                }
                Manifest {
                    format: MANIFEST_FORMAT,
                    backup: record.clone(),
                    release,
                }
                .write(&partial)?;
                sync_filesystem(&partial)?;
                std::fs::rename(&partial, &target)?;
                if let Some(parent) = target.parent() {
                    sync_dir(parent)?;
                }
                Ok(record)
            })
            .await
        };
        let record = match finished {
            Ok(Ok(record)) => record,
            Ok(Err(error)) => {
                let _ = remove_tree(&partial).await;
                return Err(Ended::Failed(format!(
                    "the backup could not be stored: {error}"
                )));
            }
            Err(_) => {
                let _ = remove_tree(&partial).await;
                return Err(Ended::Failed("the backup stopped unexpectedly".into()));
            }
        };
        crate::failpoint::reached("backup.renamed");
        self.store
            .put_backup(&record)
            .map_err(|_| Ended::Failed("the backup cannot be recorded".into()))?;
        let services = if copied.services.is_empty() {
            String::new()
        } else {
            format!(" and services {}", copied.services.join(", "))
        };
        let paused = if live {
            "not paused (live)".to_owned()
        } else {
            format!("paused {:.0} ms", copied.paused.as_secs_f64() * 1000.0)
        };
        log.line(&format!(
            "  Backup {id} of {}: {} files ({}, {}) of its mounts{services} in {:.2} s; the environment was {paused}",
            env.name,
            copied.first.files,
            human_bytes(record.size_bytes),
            copied.how(),
            started.elapsed().as_secs_f64(),
        ))
        .await;
        log.line(&format!(
            "  Restore it with: launchway backup restore -p {} {id}",
            env.project
        ))
        .await;
        if scheduled {
            self.apply_retention(&env.project, &env.name, log).await;
        }
        Ok(BTreeMap::from([
            ("backup".to_owned(), started.elapsed().as_millis() as u64),
            ("paused".to_owned(), record.paused_ms),
        ]))
    }

    /// Refuses a backup of `estimate` bytes that would take the project
    /// past its budget, or the disk past 90 % of its free space (unless
    /// copies are reflinks there).
    async fn check_backup_space(
        &self,
        project: &str,
        backups: &Path,
        estimate: u64,
    ) -> Result<(), Ended> {
        let budget = self
            .store
            .project(project)
            .ok()
            .flatten()
            .map_or(0, |p| p.backup_max_bytes);
        if budget > 0 {
            let used: u64 = self
                .store
                .backups(project, None)
                .map_err(|_| Ended::Failed("the project's backups cannot be read".into()))?
                .iter()
                .map(|b| b.size_bytes)
                .sum();
            if used.saturating_add(estimate) > budget {
                return Err(Ended::Failed(format!(
                    "the backup ({}) would take project {project}'s backups to {}, past its budget of {} (backup.max_bytes); \
                     delete old ones with `launchway backup delete -p {project} ID` or raise the budget",
                    human_bytes(estimate),
                    human_bytes(used.saturating_add(estimate)),
                    human_bytes(budget)
                )));
            }
        }
        let backups = backups.to_path_buf();
        let free = tokio::task::spawn_blocking(move || -> std::io::Result<Option<u64>> {
            std::fs::create_dir_all(&backups)?;
            if launchway_volumes::supports_reflink(&backups) {
                return Ok(None);
            }
            let fs = nix::sys::statvfs::statvfs(&backups).map_err(std::io::Error::from)?;
            Ok(Some(
                fs.blocks_available().saturating_mul(fs.fragment_size()) / 10 * 9,
            ))
        })
        .await
        .map_err(|_| Ended::Failed("the free space could not be measured".into()))?
        .map_err(|e| Ended::Failed(format!("the backups' directory is not usable: {e}")))?;
        if let Some(free) = free
            && estimate > free
        {
            return Err(Ended::Failed(format!(
                "the backup needs {} and the disk has {} to spare (90 % of what is free); nothing was copied",
                human_bytes(estimate),
                human_bytes(free)
            )));
        }
        Ok(())
    }

    /// `launchway backups -p P [-e E]`.
    pub(crate) fn list_backups(
        &self,
        request: &proto::ListBackupsRequest,
    ) -> Result<proto::BackupList, Status> {
        self.existing_project(&request.project)?;
        let environment = (!request.environment.is_empty()).then_some(request.environment.as_str());
        let backups = self
            .store
            .backups(&request.project, environment)
            .map_err(internal)?
            .into_iter()
            .map(|backup| self.backup_info(&backup))
            .collect();
        Ok(proto::BackupList { backups })
    }

    pub(crate) fn backup_info(&self, backup: &Backup) -> proto::BackupInfo {
        let present = self
            .backup_dir(&backup.project, &backup.id)
            .join(MANIFEST)
            .exists();
        proto::BackupInfo {
            id: backup.id.clone(),
            project: backup.project.clone(),
            environment: backup.environment.clone(),
            created_at: backup.created_at,
            size_bytes: backup.size_bytes,
            release: backup.release.clone(),
            live: backup.live,
            paused_ms: backup.paused_ms,
            status: if present { "complete" } else { "missing" }.into(),
            commit: backup.commit.clone(),
            scheduled: backup.scheduled,
        }
    }

    /// `launchway backup delete`: renamed away (whole or gone), record
    /// forgotten, data removed.
    pub(crate) async fn delete_backup(&self, project: &str, id: &str) -> Result<(), Status> {
        self.existing_backup(project, id)?;
        if self.backup_is_used(project, id) {
            return Err(Status::failed_precondition(format!(
                "backup {id} is being restored or exported; delete it once that is done"
            )));
        }
        self.remove_backup(project, id)
            .await
            .map_err(Status::internal)
    }

    pub(crate) async fn remove_backup(&self, project: &str, id: &str) -> Result<(), String> {
        let dir = self.backup_dir(project, id);
        let deleting = self
            .backups_dir(project)
            .join(format!("{id}{DELETING_SUFFIX}"));
        match std::fs::rename(&dir, &deleting) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(format!("backup {id} cannot be moved away: {error}")),
        }
        crate::failpoint::reached("backup.deleting");
        self.store
            .delete_backup(project, id)
            .map_err(|_| format!("backup {id} cannot be forgotten"))?;
        remove_tree(&deleting).await
    }

    /// Start-up: removes half-taken backups, finishes deletions, adopts
    /// whole backups a crash left without a record.
    pub(crate) fn reconcile_backups(&self) {
        let root = self.settings.data_dir.join("backups");
        for project in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let project_name = project.file_name().to_string_lossy().into_owned();
            for entry in std::fs::read_dir(project.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if let Some(id) = name.strip_suffix(DELETING_SUFFIX) {
                    if let Err(error) = self.store.delete_backup(&project_name, id) {
                        warn!(%error, %id, "cannot forget a deleted backup");
                    }
                    if let Err(error) = std::fs::remove_dir_all(&path) {
                        warn!(%error, path = %path.display(), "cannot remove a deleted backup");
                    }
                    continue;
                }
                if name.ends_with(PARTIAL_SUFFIX) || name.starts_with(".import-") {
                    info!(path = %path.display(), "removing a backup a stop interrupted");
                    if let Err(error) = std::fs::remove_dir_all(&path) {
                        warn!(%error, path = %path.display(), "cannot remove a half-taken backup");
                    }
                    continue;
                }
                if matches!(self.store.backup(&project_name, &name), Ok(Some(_))) {
                    continue;
                }
                match Manifest::read(&path) {
                    Ok(manifest)
                        if manifest.backup.id == name
                            && manifest.backup.project == project_name =>
                    {
                        info!(id = %name, project = %project_name, "recording a backup a stop left unrecorded");
                        if let Err(error) = self.store.put_backup(&manifest.backup) {
                            warn!(%error, "cannot record a backup");
                        }
                    }
                    Ok(_) => {
                        warn!(path = %path.display(), "a backup directory names another backup; left alone")
                    }
                    Err(message) => {
                        warn!(%message, "a backup directory cannot be read; left alone")
                    }
                }
            }
        }
    }
}
