//! Consistent copies of an environment's persistent data (`volumes/` and
//! `services/` of its directory), shared by activation (the parent's data
//! into the child), backups (into the backup's directory) and
//! `environment sync --data`.
//!
//! The copy is consistent without stopping the source for long: a first
//! pass copies while it serves (reflinks where the filesystem has them),
//! PostgreSQL services write a checkpoint, a catch-up pass recopies what
//! changed meanwhile; then, with no activity of the source running (its
//! queue joined, or the caller already is that queue's activity), its
//! containers are frozen (cgroup freezer), a last pass copies what changed
//! since the catch-up began, and they are thawed. Requests to the source
//! wait for that last pass; none fail. The result is a crash image of the
//! whole environment at one instant, which every service recovers from as
//! from a power cut.
//!
//! The catch-up only keeps the frozen pass short after a long first pass
//! (a large copy without reflinks). It is skipped when the first pass took
//! less than [`CATCH_UP_AFTER`] or reflinked every file (what changed meanwhile
//! is then quick to copy again, frozen): the frozen pass then copies what
//! changed since the *first* pass began. Either way every entry whose ctime
//! is later than the start of the pass before it (less [`RACY_MARGIN`] and
//! `launchway_volumes::CTIME_MARGIN`) is copied again while frozen, so a file
//! changed during the first pass is in the copy as it was when frozen. A live
//! copy (no frozen pass) always runs the catch-up.
//!
//! [`CopyReport::passes`] says how long each pass took; the activation log
//! prints them after the pause.
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
/// A first pass at least this long is followed by an unfrozen catch-up pass
/// (unless it reflinked every file); a shorter one leaves too little changed
/// for a third walk of the tree to pay for itself.
const CATCH_UP_AFTER: Duration = Duration::from_secs(2);

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
    /// Entries the later passes copied or removed.
    pub(crate) changed: u64,
    /// How long each pass took.
    pub(crate) passes: Passes,
    /// How long the source's containers were frozen.
    pub(crate) paused: Duration,
    /// The source's services (their data is in the copy).
    pub(crate) services: Vec<String>,
    /// Containers that could not be thawed (the log says how to recover).
    pub(crate) still_frozen: usize,
    pub(crate) elapsed: Duration,
}

/// How long the passes of a consistent copy took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Passes {
    /// The full pass, unfrozen.
    pub(crate) first: Duration,
    /// The unfrozen catch-up; `None` when skipped (see the module doc).
    pub(crate) catch_up: Option<Duration>,
    /// The last pass, with the source frozen (its share of the pause);
    /// `None` for a live copy, or when it did not run.
    pub(crate) frozen: Option<Duration>,
}

impl std::fmt::Display for Passes {
    /// `first 180 ms, catch-up skipped, frozen 40 ms`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(f, "first {:.0} ms", ms(self.first))?;
        match self.catch_up {
            Some(d) => write!(f, ", catch-up {:.0} ms", ms(d))?,
            None => f.write_str(", catch-up skipped")?,
        }
        match self.frozen {
            Some(d) => write!(f, ", frozen {:.0} ms", ms(d)),
            None => f.write_str(", no frozen pass"),
        }
    }
}

/// Whether the unfrozen catch-up pass runs after a first pass that took
/// `took` and did `first` (see the module doc). A live copy has no frozen
/// pass to make short, only the catch-up to bring the checkpoint's writes.
fn catch_up_needed(took: Duration, first: &SyncReport, live: bool) -> bool {
    live || (took >= CATCH_UP_AFTER && first.copied > 0)
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
        let mut passes = Passes {
            first: started.elapsed(),
            ..Passes::default()
        };
        crate::failpoint::reached(purpose.first_pass_step());
        // Databases flush now, so the catch-up (or the frozen pass) copies
        // what they wrote.
        let services = self.checkpoint_services(project, source, log, cancel).await;
        // What changed since this began is copied again while frozen.
        let mut last_pass_since = first_pass_began;
        let mut changed = 0;
        if catch_up_needed(passes.first, &first, live) {
            // Catch up unfrozen with what changed during a long first pass,
            // so the frozen pass has little left to copy.
            let catch_up_started = Instant::now();
            last_pass_since = SystemTime::now();
            let catch_up = sync_data(
                &source_dir,
                target,
                SyncMode::Delta {
                    unchanged_before: before(first_pass_began),
                },
            )
            .await?;
            passes.catch_up = Some(catch_up_started.elapsed());
            changed = catch_up.copied + catch_up.reflinked + catch_up.removed;
        }
        let mut report = CopyReport {
            changed,
            first,
            passes,
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
                let frozen_started = Instant::now();
                let last = sync_data(
                    &source_dir,
                    target,
                    SyncMode::Delta {
                        unchanged_before: before(last_pass_since),
                    },
                )
                .await
                .map_err(Ended::Failed);
                report.passes.frozen = Some(frozen_started.elapsed());
                last
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::FileExt as _;

    use super::*;

    #[test]
    fn the_catch_up_runs_only_after_a_long_first_pass_that_copied_data() {
        let copied = SyncReport {
            copied: 3,
            reflinked: 5,
            ..SyncReport::default()
        };
        let reflinked = SyncReport {
            reflinked: 8,
            ..SyncReport::default()
        };
        let long = CATCH_UP_AFTER;
        let short = CATCH_UP_AFTER - Duration::from_millis(1);
        assert!(catch_up_needed(long, &copied, false));
        assert!(!catch_up_needed(short, &copied, false));
        assert!(!catch_up_needed(long, &reflinked, false));
        assert!(!catch_up_needed(long, &SyncReport::default(), false));
        // Live: the catch-up is the last pass.
        assert!(catch_up_needed(short, &reflinked, true));
    }

    #[test]
    fn passes_read_in_the_log() {
        let passes = Passes {
            first: Duration::from_millis(180),
            catch_up: None,
            frozen: Some(Duration::from_micros(40_400)),
        };
        assert_eq!(
            passes.to_string(),
            "first 180 ms, catch-up skipped, frozen 40 ms"
        );
        let passes = Passes {
            catch_up: Some(Duration::from_secs(1)),
            frozen: None,
            ..passes
        };
        assert_eq!(
            passes.to_string(),
            "first 180 ms, catch-up 1000 ms, no frozen pass"
        );
    }

    /// With the catch-up skipped, the frozen pass's cutoff is the first
    /// pass's start: a file rewritten after the first pass copied it (same
    /// size, mtime set back: only its ctime tells) is copied again, while
    /// files older than the margins are kept.
    #[tokio::test]
    async fn a_file_changed_during_the_first_pass_is_in_the_copy_without_a_catch_up() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        let target = dir.path().join("target");
        let data = source.join("volumes/web/data");
        std::fs::create_dir_all(&data).unwrap();
        for i in 0..20 {
            std::fs::write(data.join(format!("old{i}")), format!("old {i}")).unwrap();
        }
        std::fs::write(data.join("db"), "version 1").unwrap();
        // Older than both margins, so the frozen pass may keep them.
        tokio::time::sleep(
            RACY_MARGIN + launchway_volumes::CTIME_MARGIN + Duration::from_millis(200),
        )
        .await;

        let first_pass_began = SystemTime::now();
        let first = sync_data(&source, &target, SyncMode::Full).await.unwrap();
        assert_eq!(first.files, 21, "{first:?}");
        // The app writes during the first pass, after the walk copied `db`.
        let file = std::fs::File::options()
            .write(true)
            .open(data.join("db"))
            .unwrap();
        let mtime = file.metadata().unwrap().modified().unwrap();
        file.write_all_at(b"version 2", 0).unwrap();
        file.set_modified(mtime).unwrap();
        drop(file);
        assert!(!catch_up_needed(Duration::from_millis(50), &first, false));

        // The frozen pass, as `copy_consistently` runs it then.
        let last = sync_data(
            &source,
            &target,
            SyncMode::Delta {
                unchanged_before: before(first_pass_began),
            },
        )
        .await
        .unwrap();

        let copy = target.join("volumes/web/data");
        assert_eq!(
            std::fs::read_to_string(copy.join("db")).unwrap(),
            "version 2"
        );
        assert_eq!(last.kept, 20, "the old files are kept: {last:?}");
        assert_eq!(last.copied + last.reflinked, 1, "{last:?}");
    }
}
