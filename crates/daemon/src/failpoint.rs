//! Failpoints for the crash tests: with the `failpoints` feature (test
//! builds only), the daemon kills itself with SIGKILL when it reaches the
//! step named in `$LAUNCHWAY_FAILPOINT` (a step, or several separated by
//! commas), or, when `$LAUNCHWAY_FAILPOINT_RUN` is set, runs that shell
//! command there with `$LAUNCHWAY_FAILPOINT_STEP` naming the step (the
//! outage tests kill containerd with it) and goes on. Without the feature every call is empty and the
//! variables are never read.
//!
//! Steps: `build.recorded`, `build.hook`, `build.frozen`, `build.complete`,
//! `deploy.release_recorded`, `deploy.<phase>` for every phase the deploy
//! records (`holding`, `stopping_old`, `attaching_mounts`, `starting`,
//! `deploy_hook`, `released`, `post_deploy`, `complete`, `rolling_back`),
//! `deploy.started` (the new containers run, before the hook),
//! `deploy.exec_output` (a hook's first line of output: it is running),
//! [`SERVICE_STEPS`], [`CLONE_STEPS`], [`BACKUP_STEPS`], [`RESTORE_STEPS`],
//! [`PROJECT_DELETE_STEPS`]
//! and `sync.first_pass`, `sync.parent_paused` (a sync's copy, as a clone's).

/// Every step a failpoint can name, in the order a push reaches them.
pub const STEPS: &[&str] = &[
    "build.recorded",
    "build.hook",
    "build.frozen",
    "build.complete",
    "deploy.release_recorded",
    "deploy.prepared",
    "deploy.holding",
    "deploy.stopping_old",
    "deploy.attaching_mounts",
    "deploy.starting",
    "deploy.started",
    "deploy.deploy_hook",
    "deploy.exec_output",
    "deploy.released",
    "deploy.post_deploy",
    "deploy.complete",
];

/// The steps of a deploy that (re)starts a service; the crash test for
/// services kills the daemon at each.
pub const SERVICE_STEPS: &[&str] = &["deploy.service_started", "deploy.services_ready"];

/// The steps of an activation's clone of its parent's data (services
/// included): after the first pass, and with the parent's containers
/// paused for the last one.
pub const CLONE_STEPS: &[&str] = &["activate.first_pass", "activate.parent_paused"];

/// The steps of a backup: after the first pass of its copy, with the
/// environment paused for the last one, and once its directory is renamed
/// into place but not yet recorded.
pub const BACKUP_STEPS: &[&str] = &["backup.first_pass", "backup.paused", "backup.renamed"];

/// The steps of a project deletion (`project_delete.rs`): every environment
/// removed, the files (backups, build cache, repository) removed, the
/// records purged (the project record, its tombstone, still there).
pub const PROJECT_DELETE_STEPS: &[&str] = &[
    "project_delete.environments",
    "project_delete.files",
    "project_delete.records",
];

/// The steps of a restore (`restore.rs`): the backup's data staged and
/// journalled, the environment's containers stopped, the first directory
/// swapped, both swapped (journal `swapped`), and the deploy on the restored
/// data with its containers started.
pub const RESTORE_STEPS: &[&str] = &[
    "restore.staged",
    "restore.stopped",
    "restore.half_swapped",
    "restore.swapped",
    "deploy.started",
];

/// Dies here if the failpoint names `step`.
#[cfg(feature = "failpoints")]
pub(crate) fn reached(step: &str) {
    if std::env::var("LAUNCHWAY_FAILPOINT")
        .is_ok_and(|names| names.split(',').any(|name| name == step))
    {
        if let Ok(command) = std::env::var("LAUNCHWAY_FAILPOINT_RUN") {
            tracing::warn!(failpoint = step, %command, "failpoint reached: running its command");
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .env("LAUNCHWAY_FAILPOINT_STEP", step)
                .status();
            tracing::warn!(failpoint = step, ?status, "failpoint command ended");
            return;
        }
        tracing::error!(failpoint = step, "failpoint reached: killing the daemon");
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; this only waits for it to land.
        loop {
            std::thread::park();
        }
    }
}

/// Dies here if the failpoint names `step` (not compiled in: nothing).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn reached(_step: &str) {}

/// Whether the failpoint names `behaviour`: a test-only misbehaviour (not
/// a death) such as `builder.wrong_digest`, a builder reporting another
/// image's digest than the one it pushed.
#[cfg(feature = "failpoints")]
pub(crate) fn misbehaves(behaviour: &str) -> bool {
    std::env::var("LAUNCHWAY_FAILPOINT")
        .is_ok_and(|names| names.split(',').any(|name| name == behaviour))
}

/// Whether the failpoint names `behaviour` (not compiled in: never).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn misbehaves(_behaviour: &str) -> bool {
    false
}
