//! What the git hooks ask the daemon: may these refs move (`pre-receive`), and
//! what to do now that they have (`post-receive`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use launchway_git::{CommitTree, Objects, RefUpdate};
use launchway_store::{
    ActivityKind, ActivityResult, Environment, EnvironmentStatus, EnvironmentType,
};
use tracing::warn;

use crate::activity::Work;
use crate::policy::{check_ref, parse_push_options};
use crate::{Daemon, PushSession, now_ms};

/// The first 7 digits of an id, as git shows them.
pub(crate) fn short(id: &str) -> &str {
    id.get(..7).unwrap_or(id)
}

impl Daemon {
    /// Sends text to the pusher's terminal.
    pub(crate) async fn tell(session: &PushSession, text: &str) {
        let _ = session.messages.send(text.as_bytes().to_vec()).await;
    }

    /// The `pre-receive` decision: every update allowed and every new commit's
    /// config valid, or nothing moves.
    pub(crate) async fn pre_receive(
        &self,
        session: &PushSession,
        lines: &[String],
        options: &[String],
        quarantine: &str,
    ) -> bool {
        let Ok(Some(project)) = self.store.project(&session.project) else {
            Self::tell(session, "  E: the project no longer exists\n").await;
            return false;
        };
        let mut errors = Vec::new();
        let parsed = parse_push_options(options);
        for warning in &parsed.warnings {
            Self::tell(session, &format!("  W: {warning}\n")).await;
        }
        errors.extend(parsed.errors);
        if let Some(parent) = &parsed.options.parent {
            match self.store.environment(&project.name, parent) {
                Ok(Some(_)) => {}
                _ => errors.push(format!(
                    "push option `environment.parent={parent}`: there is no environment `{parent}`"
                )),
            }
        }
        let mut updates = Vec::new();
        for line in lines {
            match RefUpdate::parse(line) {
                Some(update) => updates.push(update),
                None => errors.push("git sent an update Launchway cannot read".into()),
            }
        }
        for update in &updates {
            if let Err(reason) = check_ref(update, session.role, &project.default_branch) {
                errors.push(reason);
            }
            if let (Some(parent), Some(branch)) = (&parsed.options.parent, update.branch())
                && self
                    .environment_chain(&project.name, parent)
                    .iter()
                    .any(|name| name == branch)
            {
                errors.push(format!(
                    "push option `environment.parent={parent}`: {branch} cannot be its own ancestor"
                ));
            }
        }
        for error in &errors {
            Self::tell(session, &format!("  E: {error}\n")).await;
        }
        let repo = self.repo_path(&project.name);
        let quarantine = match self.quarantine_dir(&repo, quarantine) {
            Ok(dir) => dir,
            Err(()) => {
                Self::tell(
                    session,
                    "  E: git reported an unexpected object directory\n",
                )
                .await;
                return false;
            }
        };
        let mut valid = true;
        let pushed: Vec<&RefUpdate> = updates
            .iter()
            .filter(|u| !u.is_delete() && u.branch().is_some())
            .collect();
        if errors.is_empty() && !pushed.is_empty() {
            Self::tell(session, "Validating configuration files\n").await;
            for update in pushed {
                let branch = update.branch().unwrap_or_default().to_owned();
                match validate_commit(repo.clone(), quarantine.clone(), update.new.clone()).await {
                    Ok(diagnostics) if diagnostics.is_empty() => {}
                    Ok(diagnostics) => {
                        Self::tell(session, &diagnostics).await;
                    }
                    Err(diagnostics) => {
                        valid = false;
                        Self::tell(
                            session,
                            &format!(
                                "  E: the configuration of {branch} at {} is invalid:\n{diagnostics}",
                                short(&update.new)
                            ),
                        )
                        .await;
                    }
                }
            }
        }
        let accept = errors.is_empty() && valid;
        if !accept {
            Self::tell(session, "  E: push refused; no branch was changed\n").await;
        }
        accept
    }

    /// The quarantine directory git named, if it lies inside the repository's
    /// object directory (anything else is refused).
    fn quarantine_dir(&self, repo: &Path, quarantine: &str) -> Result<Option<PathBuf>, ()> {
        if quarantine.is_empty() {
            return Ok(None);
        }
        let objects = repo.join("objects").canonicalize().map_err(|_| ())?;
        let dir = Path::new(quarantine).canonicalize().map_err(|_| ())?;
        if dir.starts_with(&objects) && dir != objects {
            Ok(Some(dir))
        } else {
            Err(())
        }
    }

    /// The `post-receive` work: record environments and activities, run them
    /// and, unless the pusher asked not to wait, stream their logs.
    pub(crate) async fn post_receive(
        self: &Arc<Self>,
        session: &PushSession,
        lines: &[String],
        options: &[String],
    ) -> bool {
        let Ok(Some(project)) = self.store.project(&session.project) else {
            return false;
        };
        let options = parse_push_options(options).options;
        let mut handles = Vec::new();
        for update in lines.iter().filter_map(|l| RefUpdate::parse(l)) {
            let Some(branch) = update.branch().map(str::to_owned) else {
                continue;
            };
            let (kind, description, work) = if update.is_delete() {
                (
                    ActivityKind::BranchDelete,
                    format!("{} deleted branch {branch}", session.who),
                    Work::Delete {
                        remove_branch: false,
                    },
                )
            } else {
                let activate = match self.record_environment(&project, &branch, &update, &options) {
                    Ok(activate) => activate,
                    Err(error) => {
                        warn!(%error, "cannot record environment");
                        Self::tell(
                            session,
                            "  E: the server could not record the environment\n",
                        )
                        .await;
                        session.failed.store(true, Ordering::SeqCst);
                        continue;
                    }
                };
                if options.status == Some(EnvironmentStatus::Inactive) {
                    Self::tell(
                        session,
                        "  W: environment.status=inactive is ignored; deactivate with `launchway environment deactivate`\n",
                    )
                    .await;
                }
                (
                    ActivityKind::Push,
                    format!("{} pushed to {branch}", session.who),
                    Work::Push {
                        update: update.clone(),
                        activate,
                    },
                )
            };
            let sink = (!options.no_wait).then(|| session.messages.clone());
            match self.schedule(&project.name, &branch, kind, &description, work, sink) {
                Ok((activity, handle)) => {
                    if options.no_wait {
                        Self::tell(
                            session,
                            &format!(
                                "Activity {} queued: {description}\n  Follow it with: launchway activity log {}\n",
                                activity.id, activity.id
                            ),
                        )
                        .await;
                    }
                    handles.push(handle);
                }
                Err(error) => {
                    warn!(%error, "cannot create activity");
                    Self::tell(session, "  E: the server could not record the activity\n").await;
                    session.failed.store(true, Ordering::SeqCst);
                }
            }
        }
        if !options.no_wait {
            for handle in handles {
                let result = handle.await.unwrap_or(ActivityResult::Failure);
                if result == ActivityResult::Failure {
                    session.failed.store(true, Ordering::SeqCst);
                }
            }
        }
        true
    }

    /// Creates or updates the environment of a pushed branch (before its
    /// activity runs). True when the push asked to activate an inactive
    /// environment: its activity does that (the data is cloned first).
    fn record_environment(
        &self,
        project: &launchway_store::Project,
        branch: &str,
        update: &RefUpdate,
        options: &crate::policy::PushOptions,
    ) -> Result<bool, launchway_store::StoreError> {
        let is_default = branch == project.default_branch;
        let mut env = match self.store.environment(&project.name, branch)? {
            Some(env) => env,
            None if is_default => Environment::new(
                &project.name,
                branch,
                None,
                EnvironmentType::Production,
                EnvironmentStatus::Active,
            ),
            None => Environment::new(
                &project.name,
                branch,
                Some(&project.default_branch),
                EnvironmentType::Development,
                EnvironmentStatus::Inactive,
            ),
        };
        let activate = options.status == Some(EnvironmentStatus::Active)
            && env.status == EnvironmentStatus::Inactive;
        if let Some(clone_parent) = options.clone_parent {
            env.clone_parent = clone_parent;
        }
        if let Some(kind) = options.kind {
            env.kind = kind;
        }
        if let Some(title) = &options.title {
            env.title = Some(title.clone());
        }
        if let Some(parent) = &options.parent
            && !is_default
            && !self
                .environment_chain(&project.name, parent)
                .iter()
                .any(|name| name == branch)
        {
            env.parent = Some(parent.clone());
        }
        env.head = Some(update.new.clone());
        self.store.put_environment(&env)?;
        Ok(activate)
    }

    /// Marks activities a crash or stop left unfinished as cancelled.
    /// Returns the environments whose activation was interrupted: they are
    /// deactivated before anything serves (an activation that did not
    /// finish stores nothing).
    pub(crate) fn reconcile(&self) -> Result<Vec<(String, String)>, launchway_store::StoreError> {
        let mut interrupted = Vec::new();
        for mut activity in self.store.activities(None, usize::MAX)? {
            if matches!(
                activity.state,
                launchway_store::ActivityState::Pending
                    | launchway_store::ActivityState::InProgress
            ) {
                if activity.state == launchway_store::ActivityState::InProgress
                    && matches!(activity.kind, ActivityKind::Activate | ActivityKind::Push)
                {
                    interrupted.push((activity.project.clone(), activity.environment.clone()));
                }
                activity.completed_at = Some(now_ms());
                if activity.state == launchway_store::ActivityState::InProgress {
                    activity.state = launchway_store::ActivityState::Complete;
                    activity.result = Some(ActivityResult::Failure);
                    self.store.append_log(
                        activity.id,
                        "  E: the daemon stopped while this activity ran; what it started was undone at restart\n",
                    )?;
                } else {
                    activity.state = launchway_store::ActivityState::Cancelled;
                    self.store.append_log(
                        activity.id,
                        "Cancelled: the daemon stopped before this activity started\n",
                    )?;
                }
                self.store.put_activity(&activity)?;
            }
        }
        // A push only activates when its environment has no deployment yet.
        interrupted.retain(|(project, environment)| {
            !matches!(self.store.deployment(project, environment), Ok(Some(_)))
                && matches!(
                    self.store.environment(project, environment),
                    Ok(Some(env)) if env.status == EnvironmentStatus::Active
                        && env.parent.is_some()
                )
        });
        Ok(interrupted)
    }
}

/// Reads the config at `commit` (quarantined objects first): `Ok` with the
/// warnings text, or `Err` with the diagnostics.
pub(crate) async fn validate_commit(
    repo: PathBuf,
    quarantine: Option<PathBuf>,
    commit: String,
) -> Result<String, String> {
    let checked = tokio::task::spawn_blocking(move || {
        let objects =
            Objects::open(&repo, quarantine.as_deref()).map_err(|e| format!("  E: {e}\n"))?;
        let tree = CommitTree::open(objects, &commit).map_err(|e| format!("  E: {e}\n"))?;
        let loaded = launchway_config::load(&tree);
        let text = loaded.diagnostics.to_string();
        if loaded.config.is_some() {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;
    checked.unwrap_or_else(|_| Err("  E: the configuration check stopped unexpectedly\n".into()))
}
