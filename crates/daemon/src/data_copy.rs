//! Consistent copies of an environment's persistent data (`volumes/` and
//! `services/` of its directory), shared by activation (the parent's data
//! into the child), backups (into the backup's directory) and
//! `environment sync --data`.
//!
//! The copy is consistent without stopping the source for long: a first
//! pass copies while it serves (reflinks where the filesystem has them),
//! PostgreSQL services write a checkpoint, a second pass recopies what
//! changed meanwhile; then, with no activity of the source running (its
//! queue joined, or the caller already is that queue's activity), its
//! containers are frozen (cgroup freezer), a last pass copies what changed
//! since the second began, and they are thawed. Requests to the source
//! wait for that last pass; none fail. The result is a crash image of the
//! whole environment at one instant, which every service recovers from as
//! from a power cut.
//!
//! Nothing here removes what it copied when it fails: the caller owns the
//! target and knows what to do with half a copy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use launchway_store::{EnvironmentStatus, StoreError};
use launchway_volumes::{SyncMode, SyncReport};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::Daemon;
use crate::activity::{Ended, Log};
use crate::deploy::environment_key;
use crate::environments::queue_key;

/// The directories of an environment that hold data worth copying.
pub(crate) const PERSISTENT_DIRS: [&str; 2] = ["volumes", "services"];
/// How far back the catch-up and last passes trust nothing: timestamps are coarse
/// (a jiffy on ext4) and clocks drift a little.
const RACY_MARGIN: Duration = Duration::from_secs(2);

/// Why a copy is made: names its crash-test steps and what the log says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CopyPurpose {
    /// A child's activation (runs in the child's queue: joins the source's).
    Activation,
    /// A backup (runs in the source's own queue).
    Backup,
    /// `environment sync --data` (runs in the child's queue: joins the
    /// source's).
    Sync,
}

impl CopyPurpose {
    fn first_pass_step(self) -> &'static str {
        match self {
            CopyPurpose::Activation => "activate.first_pass",
            CopyPurpose::Backup => "backup.first_pass",
            CopyPurpose::Sync => "sync.first_pass",
        }
    }

    fn paused_step(self) -> &'static str {
        match self {
            CopyPurpose::Activation => "activate.parent_paused",
            CopyPurpose::Backup => "backup.paused",
            CopyPurpose::Sync => "sync.parent_paused",
        }
    }

    /// Whether the activity making the copy runs in the source's queue
    /// already (joining it again would wait for itself).
    fn in_source_queue(self) -> bool {
        self == CopyPurpose::Backup
    }
}

/// What a consistent copy did.
#[derive(Debug, Default)]
pub(crate) struct CopyReport {
    /// The first pass (what the target holds, nearly).
    pub(crate) first: SyncReport,
    /// Entries the two later passes copied or removed.
    pub(crate) changed: u64,
    /// How long the source's containers were frozen.
    pub(crate) paused: Duration,
    /// The source's services (their data is in the copy).
    pub(crate) services: Vec<String>,
    /// Containers that could not be thawed (the log says how to recover).
    pub(crate) still_frozen: usize,
    pub(crate) elapsed: Duration,
}

impl CopyReport {
    /// `copy-on-write`, `partly copy-on-write` or `copied`.
    pub(crate) fn how(&self) -> &'static str {
        if self.first.reflinked > 0 && self.first.copied == 0 {
            "copy-on-write"
        } else if self.first.reflinked > 0 {
            "partly copy-on-write"
        } else {
            "copied"
        }
    }
}

impl Daemon {
    /// Copies the persistent data of environment `source` of `project`
    /// into `target` (a directory that gets `volumes/` and `services/`),
    /// consistently (see the module doc). `live`: no freeze, the last pass
    /// is skipped (files are copied as they are; see `backups.rs` for when
    /// that is whole).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn copy_consistently(
        &self,
        project: &str,
        source: &str,
        target: &Path,
        purpose: CopyPurpose,
        live: bool,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<CopyReport, Ended> {
        let source_dir = self.environment_dir(project, source);
        let started = Instant::now();
        let first_pass_began = SystemTime::now();
        let first = sync_data(&source_dir, target, SyncMode::Full).await?;
        crate::failpoint::reached(purpose.first_pass_step());
        // Databases flush now, so the catch-up copies what they wrote and
        // the frozen pass has little left.
        let services = self.checkpoint_services(project, source, log, cancel).await;
        // Catch up unfrozen with what changed during the first pass (long
        // without reflinks), so the frozen pass has little left to copy.
        let catch_up_began = SystemTime::now();
        let catch_up = sync_data(
            &source_dir,
            target,
            SyncMode::Delta {
                unchanged_before: before(first_pass_began),
            },
        )
        .await?;
        let mut report = CopyReport {
            changed: catch_up.copied + catch_up.reflinked + catch_up.removed,
            first,
            services,
            ..CopyReport::default()
        };
        if live {
            report.elapsed = started.elapsed();
            return Ok(report);
        }

        // The last pass, with nothing of the source running or changing.
        let mut turn = None;
        if !purpose.in_source_queue() {
            let (_, mut joined) = self
                .queues
                .join(&queue_key(project, source), || Ok::<_, StoreError>(()))
                .map_err(|_| Ended::Failed(format!("the queue of {source} cannot be joined")))?;
            tokio::select! {
                () = joined.wait() => {}
                () = cancel.cancelled() => return Err(Ended::Cancelled),
            }
            turn = Some(joined);
        }
        let finish = |turn: Option<crate::queue::Turn>| {
            if let Some(turn) = turn {
                turn.finish();
            }
        };
        // The source may have been deactivated or deleted meanwhile.
        let still_there = matches!(
            self.store.environment(project, source),
            Ok(Some(e)) if e.status == EnvironmentStatus::Active
        );
        if !still_there {
            finish(turn);
            return Err(Ended::Failed(format!(
                "{source} was deactivated or deleted while it was copied"
            )));
        }
        let containers = match self
            .engine
            .app_containers(Some(&environment_key(project, source)))
            .await
        {
            Ok(containers) => containers,
            Err(error) => {
                finish(turn);
                return Err(Ended::Failed(format!(
                    "cannot list the containers of {source} to freeze them: {error}"
                )));
            }
        };
        let frozen_at = Instant::now();
        // Every container a pause was asked of is resumed, even one whose
        // pause reported an error (it may have frozen anyway).
        let mut attempted = Vec::new();
        let mut pause_error = None;
        for id in &containers {
            attempted.push(id.clone());
            if let Err(error) = self.engine.pause_app(id).await {
                pause_error = Some(error.to_string());
                break;
            }
        }
        let last = match &pause_error {
            None => {
                crate::failpoint::reached(purpose.paused_step());
                sync_data(
                    &source_dir,
                    target,
                    SyncMode::Delta {
                        unchanged_before: before(catch_up_began),
                    },
                )
                .await
                .map_err(Ended::Failed)
            }
            Some(error) => Err(Ended::Failed(format!(
                "cannot freeze the containers of {source} for a consistent copy: {error}"
            ))),
        };
        let mut still_frozen = Vec::new();
        for id in &attempted {
            if self.engine.resume_app(id).await.is_err()
                && let Err(error) = self.engine.resume_app(id).await
            {
                warn!(%error, container = %id, "cannot thaw a container");
                still_frozen.push(id.clone());
            }
        }
        report.paused = frozen_at.elapsed();
        finish(turn);
        if !still_frozen.is_empty() {
            log.line(&format!(
                "  E: {} container(s) of {source} could not be thawed; redeploy it: launchway redeploy -p {project} -e {source}",
                still_frozen.len(),
            ))
            .await;
        }
        report.still_frozen = still_frozen.len();
        let last = last?;
        report.changed += last.copied + last.reflinked + last.removed;
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

fn before(time: SystemTime) -> SystemTime {
    time.checked_sub(RACY_MARGIN).unwrap_or(time)
}

/// Syncs every persistent directory of an environment from `source` to
/// `target` (directories holding `volumes/` and `services/`) off the
/// runtime's threads.
pub(crate) async fn sync_data(
    source: &Path,
    target: &Path,
    mode: SyncMode,
) -> Result<SyncReport, String> {
    let source = source.to_path_buf();
    let target = target.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        // Never fill the host's disk: at most 90 % of what is free (holes
        // and reflinked data cost nothing).
        let budget = nix::sys::statvfs::statvfs(&target)
            .ok()
            .map(|fs| fs.blocks_available().saturating_mul(fs.fragment_size()) / 10 * 9);
        let mut total = SyncReport::default();
        for dir in PERSISTENT_DIRS {
            // A directory the source never had (no service mounts) is
            // absent from both sides; one it lost meanwhile is an error.
            let absent = |path: PathBuf| {
                matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
            };
            if absent(source.join(dir))
                && (matches!(mode, SyncMode::Full) || absent(target.join(dir)))
            {
                continue;
            }
            let report = launchway_volumes::sync_tree_limited(
                &source.join(dir),
                &target.join(dir),
                mode,
                budget.map(|b| b.saturating_sub(total.bytes)),
            )
            .map_err(|e| e.to_string())?;
            total += report;
        }
        Ok(total)
    })
    .await
    .map_err(|_| "the copy stopped unexpectedly".to_owned())?
}

/// Removes an environment's persistent data (or a copy's).
pub(crate) async fn remove_data(env_dir: &Path) -> Result<(), String> {
    for dir in PERSISTENT_DIRS {
        remove_tree(&env_dir.join(dir)).await?;
    }
    Ok(())
}

/// Removes a directory tree (never following links), if it exists.
pub(crate) async fn remove_tree(path: &Path) -> Result<(), String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(format!("cannot remove {}: {error}", path.display())),
    })
    .await
    .map_err(|_| "the removal stopped unexpectedly".to_owned())?
}
