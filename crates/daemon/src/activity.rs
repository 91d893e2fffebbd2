//! Activities: created pending, run one at a time per environment in
//! creation order, their log stored line by line and, while the pusher waits,
//! streamed to the pusher's terminal.
//!
//! A push activity counts the new commits, plans each app (tree id) and, for
//! an active environment, builds it (`builds.rs`) and deploys the build
//! (`deploy.rs`); `launchway build` only builds. Every activity has a cancellation token
//! (`activity cancel`): a pending one is cancelled before it starts, a
//! running build is stopped and its containers removed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::variables::Effective;
use launchway_git::{CommitTree, Objects, Plan, RefUpdate, count_new_commits, plan};
use launchway_store::{
    Activity, ActivityKind, ActivityResult, ActivityState, EnvironmentStatus, StoreError,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, warn};

use crate::push::short;
use crate::{Daemon, now_ms};

/// What an activity does.
#[derive(Clone, Debug)]
pub(crate) enum Work {
    /// Commits pushed; `activate` when the push asked an inactive
    /// environment to become active (`-o environment.status=active`).
    Push { update: RefUpdate, activate: bool },
    /// `launchway build`: build a commit, deploy nothing.
    Build { commit: String },
    /// `launchway build|deploy DIR`: build an uploaded commit (`uploads.rs`),
    /// and deploy it with `deploy`.
    Upload { commit: String, deploy: bool },
    /// Build the branch head and deploy it (`launchway deploy`, and a
    /// variable change: the build is reused unless a build-visible one changed).
    DeployHead,
    /// Clone the parent's data, build and deploy.
    Activate,
    /// Stop the containers and delete the data (`force`: the default
    /// environment too).
    Deactivate { force: bool },
    /// Deactivate and forget the environment; `remove_branch` unless a push
    /// already deleted it.
    Delete { remove_branch: bool },
    /// Deploy the serving release again.
    Redeploy,
    /// Deploy a recorded release again.
    Promote { release: String },
    /// Deploy `release` again if containerd's outage interrupted its deploy
    /// and nothing moved the environment on since (`outage.rs`).
    Resume { release: String },
    /// Run the post_deploy hooks of the serving release (after a stop
    /// between its release and the hooks).
    PostDeploy { release: String },
    /// Delete the data of a service the config no longer has.
    DeleteServiceData { service: String },
    /// Take a backup of the environment's data (`backups.rs`).
    Backup { live: bool, scheduled: bool },
    /// Put a backup's data back, then deploy (`restore.rs`).
    Restore { backup: String, no_code: bool },
    /// Bring the parent's data and/or code down (`sync.rs`).
    Sync { data: bool, code: bool },
    /// Fast-forward the parent to `child` and deploy it (`sync.rs`; runs
    /// in the parent's queue).
    Merge { child: String },
    /// Delete the whole project (`project_delete.rs`; queue `P\0`).
    DeleteProject,
    /// One run of a cron of `release` (not queued: see `crons.rs`).
    Cron {
        release: String,
        app: String,
        name: String,
    },
}

/// How an activity ended other than well.
#[derive(Debug)]
pub(crate) enum Ended {
    /// It failed; the message says why.
    Failed(String),
    /// `activity cancel` stopped it.
    Cancelled,
}

impl From<String> for Ended {
    fn from(message: String) -> Self {
        Ended::Failed(message)
    }
}

/// Where an activity's log goes: the store, and the pusher while they wait.
/// Every line is masked: no sensitive variable's value is stored or sent.
#[derive(Clone)]
pub(crate) struct Log {
    daemon: Arc<Daemon>,
    id: u64,
    sink: Option<mpsc::Sender<Vec<u8>>>,
    secrets: Arc<std::sync::RwLock<Vec<String>>>,
}

impl Log {
    /// `text` with the sensitive values of the project masked.
    pub(crate) fn mask(&self, text: &str) -> String {
        match self.secrets.read() {
            Ok(secrets) => crate::variables::mask(text, &secrets),
            Err(poisoned) => crate::variables::mask(text, &poisoned.into_inner()),
        }
    }

    /// Masks `values` too from now on (the variables a build or deploy is
    /// about to use, read after the activity started; a promoted release's).
    pub(crate) fn add_secrets(&self, values: Vec<String>) {
        let mut secrets = match self.secrets.write() {
            Ok(secrets) => secrets,
            Err(poisoned) => poisoned.into_inner(),
        };
        secrets.extend(values);
        let all = std::mem::take(&mut *secrets);
        *secrets = crate::variables::secret_values(all);
    }

    pub(crate) async fn line(&self, text: &str) {
        let line = format!("{}\n", self.mask(text));
        if let Err(error) = self.daemon.store.append_log(self.id, &line) {
            warn!(%error, activity = self.id, "cannot store the activity log");
        }
        self.daemon.log_written.notify_waiters();
        if let Some(sink) = &self.sink {
            let _ = sink.send(line.into_bytes()).await;
        }
    }
}

impl Daemon {
    /// Records a pending activity and starts it once the environment's
    /// previous activity is done.
    pub(crate) fn schedule(
        self: &Arc<Self>,
        project: &str,
        environment: &str,
        kind: ActivityKind,
        description: &str,
        work: Work,
        sink: Option<mpsc::Sender<Vec<u8>>>,
    ) -> Result<(Activity, JoinHandle<ActivityResult>), StoreError> {
        let queue_key = format!("{project}\0{environment}");
        let (activity, mut turn) = self.queues.join(&queue_key, || {
            let id = self.store.next_activity_id()?;
            let activity = Activity::new(id, project, environment, kind, description, now_ms());
            self.store.put_activity(&activity)?;
            Ok::<_, StoreError>(activity)
        })?;
        let daemon = self.clone();
        let span = tracing::info_span!("activity", id = activity.id, %project, %environment);
        let running = activity.clone();
        let cancel = CancellationToken::new();
        self.lock_cancels().insert(activity.id, cancel.clone());
        // No cron starts while this waits or runs.
        self.mark_busy(project, environment, true);
        let handle = self.tasks.spawn(
            async move {
                turn.wait().await;
                let id = running.id;
                let (project, environment) = (running.project.clone(), running.environment.clone());
                let result = daemon.clone().run(running, work, sink, cancel).await;
                daemon.lock_cancels().remove(&id);
                daemon.mark_busy(&project, &environment, false);
                turn.finish();
                result
            }
            .instrument(span),
        );
        Ok((activity, handle))
    }

    pub(crate) fn lock_cancels(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, CancellationToken>> {
        match self.cancels.lock() {
            Ok(cancels) => cancels,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) async fn run(
        self: Arc<Self>,
        mut activity: Activity,
        work: Work,
        sink: Option<mpsc::Sender<Vec<u8>>>,
        cancel: CancellationToken,
    ) -> ActivityResult {
        let started = now_ms();
        let variables = self.store.variables(&activity.project);
        let secrets = variables
            .as_ref()
            .map(|all| crate::variables::secrets(all))
            .unwrap_or_default();
        let log = Log {
            daemon: self.clone(),
            id: activity.id,
            sink,
            secrets: Arc::new(std::sync::RwLock::new(secrets)),
        };
        if cancel.is_cancelled() {
            activity.state = ActivityState::Cancelled;
            activity.completed_at = Some(started);
            log.line(&format!(
                "Cancelled before it started: {}",
                activity.description
            ))
            .await;
            if let Err(error) = self.store.put_activity(&activity) {
                warn!(%error, "cannot record the activity end");
            }
            self.log_written.notify_waiters();
            return ActivityResult::Failure;
        }
        activity.state = ActivityState::InProgress;
        activity.started_at = Some(started);
        activity
            .timings
            .insert("wait".into(), started.saturating_sub(activity.created_at));
        if let Err(error) = self.store.put_activity(&activity) {
            warn!(%error, "cannot record the activity start");
        }
        self.emit("activity.started", &activity);
        log.line(&format!("Processing activity: {}", activity.description))
            .await;
        // Builds leave the running containers alone, and a backup freezes
        // a running cron with the rest (its copy is consistent); everything
        // else in the queue acts on them, so running crons end first.
        if !matches!(
            work,
            Work::Cron { .. }
                | Work::Build { .. }
                | Work::Upload { deploy: false, .. }
                | Work::Backup { .. }
        ) {
            self.stop_crons(&activity.project, &activity.environment, &log)
                .await;
        }
        let result = match &work {
            // Without them nothing can be masked: do nothing.
            _ if variables.is_err() => Err(Ended::Failed(
                "the project's variables cannot be read; nothing was done".into(),
            )),
            Work::Push { update, activate } => {
                self.push_activity(&activity, update, *activate, &log, &cancel)
                    .await
            }
            Work::Build { commit } => {
                self.build_commit_activity(&activity, commit, false, &log, &cancel)
                    .await
            }
            Work::Upload { commit, deploy } => {
                self.build_commit_activity(&activity, commit, *deploy, &log, &cancel)
                    .await
            }
            Work::DeployHead => self.deploy_head_activity(&activity, &log, &cancel).await,
            Work::Activate => self.activate_activity(&activity, &log, &cancel).await,
            Work::Deactivate { force } => self.deactivate_activity(&activity, *force, &log).await,
            Work::Delete { remove_branch } => {
                self.delete_activity(&activity, *remove_branch, &log).await
            }
            Work::Redeploy => self.redeploy_activity(&activity, &log, &cancel).await,
            Work::PostDeploy { release } => {
                self.post_deploy_activity(&activity, release, &log, &cancel)
                    .await
            }
            Work::Promote { release } => {
                self.promote_activity(&activity, release, &log, &cancel)
                    .await
            }
            Work::Resume { release } => {
                self.resume_activity(&activity, release, &log, &cancel)
                    .await
            }
            Work::DeleteServiceData { service } => {
                self.delete_service_data_activity(&activity, service, &log)
                    .await
            }
            Work::Backup { live, scheduled } => {
                self.backup_activity(&activity, *live, *scheduled, &log, &cancel)
                    .await
            }
            Work::Restore { backup, no_code } => {
                self.restore_activity(&activity, backup, *no_code, &log, &cancel)
                    .await
            }
            Work::Sync { data, code } => {
                self.sync_activity(&activity, *data, *code, &log, &cancel)
                    .await
            }
            Work::Merge { child } => self.merge_activity(&activity, child, &log, &cancel).await,
            Work::Cron { release, app, name } => {
                self.cron_activity(&activity, release, app, name, &log, &cancel)
                    .await
            }
            Work::DeleteProject => self.delete_project_activity(&activity, &log).await,
        };
        let (state, result) = match result {
            Ok(timings) => {
                activity.timings.extend(timings);
                (ActivityState::Complete, Some(ActivityResult::Success))
            }
            Err(Ended::Failed(message)) => {
                log.line(&format!("  E: {message}")).await;
                (ActivityState::Complete, Some(ActivityResult::Failure))
            }
            Err(Ended::Cancelled) => {
                log.line("  Cancelled: nothing was changed").await;
                (ActivityState::Cancelled, None)
            }
        };
        let completed = now_ms();
        activity.state = state;
        activity.result = result;
        activity.completed_at = Some(completed);
        activity
            .timings
            .insert("total".into(), completed.saturating_sub(started));
        if let Err(error) = self.store.put_activity(&activity) {
            warn!(%error, "cannot record the activity end");
        }
        self.log_written.notify_waiters();
        self.emit_completed(&activity);
        // A deleted project keeps nothing, not even the record of its deletion.
        if activity.kind == ActivityKind::ProjectDelete
            && result == Some(ActivityResult::Success)
            && let Err(error) = self.store.delete_activity(activity.id)
        {
            warn!(%error, "cannot forget the deletion's activity");
        }
        result.unwrap_or(ActivityResult::Failure)
    }

    async fn push_activity(
        &self,
        activity: &Activity,
        update: &RefUpdate,
        activate: bool,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<String, u64>, Ended> {
        let timings = BTreeMap::new();
        let repo = self.repo_path(&activity.project);
        let update = update.clone();
        let env = self.activity_environment(activity)?;
        let other_heads: Vec<String> = self
            .store
            .environments(&activity.project)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.name != activity.environment)
            .filter_map(|e| e.head)
            .collect();
        let started = Instant::now();
        let counted = {
            let repo = repo.clone();
            let update = update.clone();
            tokio::task::spawn_blocking(move || {
                let old = (!update.is_create()).then_some(update.old.as_str());
                count_new_commits(&repo, old, &update.new, &other_heads, 10_000)
            })
            .await
        };
        match counted {
            Ok(Ok(1)) => log.line("  Found 1 new commit").await,
            Ok(Ok(n)) => log.line(&format!("  Found {n} new commits")).await,
            _ => log.line("  Could not count the new commits").await,
        }
        if env.status == EnvironmentStatus::Inactive && activate {
            return self.activate_activity(activity, log, cancel).await;
        }
        if env.status == EnvironmentStatus::Inactive {
            log.line(&format!(
                "  Environment {} is inactive: its branch is stored, nothing is built or deployed",
                env.name
            ))
            .await;
            log.line("  Activate it with: git push -o environment.status=active")
                .await;
            return Ok(timings);
        }
        self.build_and_report(
            activity,
            &env,
            &update.new,
            log,
            cancel,
            timings,
            started,
            true,
        )
        .await
    }

    /// The environment an activity acts on.
    pub(crate) fn activity_environment(
        &self,
        activity: &Activity,
    ) -> Result<launchway_store::Environment, Ended> {
        self.store
            .environment(&activity.project, &activity.environment)
            .map_err(|_| Ended::Failed("the environment cannot be read".into()))?
            .ok_or_else(|| {
                Ended::Failed(format!(
                    "environment {} no longer exists",
                    activity.environment
                ))
            })
    }

    /// A commit (`launchway build`, or an uploaded directory's) built as any
    /// commit is, and deployed with `deploy`.
    async fn build_commit_activity(
        &self,
        activity: &Activity,
        commit: &str,
        deploy: bool,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<String, u64>, Ended> {
        let env = self.activity_environment(activity)?;
        self.build_and_report(
            activity,
            &env,
            commit,
            log,
            cancel,
            BTreeMap::new(),
            Instant::now(),
            deploy,
        )
        .await
    }

    /// `launchway deploy` and variable changes: the head of an active
    /// environment's branch, built (or reused) and deployed.
    async fn deploy_head_activity(
        &self,
        activity: &Activity,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<String, u64>, Ended> {
        let env = self.activity_environment(activity)?;
        if env.status == EnvironmentStatus::Inactive {
            log.line(&format!(
                "  Environment {} is inactive: nothing to deploy",
                env.name
            ))
            .await;
            return Ok(BTreeMap::new());
        }
        let head = env
            .head
            .clone()
            .ok_or_else(|| Ended::Failed(format!("environment {} has no commit yet", env.name)))?;
        self.build_and_report(
            activity,
            &env,
            &head,
            log,
            cancel,
            BTreeMap::new(),
            Instant::now(),
            true,
        )
        .await
    }

    /// Plans and builds `commit` for `env` (reusing builds): the build,
    /// its plan and the variables the environment sees.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn plan_and_build(
        &self,
        activity: &Activity,
        env: &launchway_store::Environment,
        commit: &str,
        log: &Log,
        cancel: &CancellationToken,
        timings: &mut BTreeMap<String, u64>,
        started: Instant,
    ) -> Result<(launchway_store::Build, Plan, Vec<Effective>), Ended> {
        let repo = self.repo_path(&activity.project);
        let planned = {
            let commit = commit.to_owned();
            tokio::task::spawn_blocking(move || {
                let objects = Objects::open(&repo, None)?;
                let tree = CommitTree::open(objects, &commit)?;
                let subject = tree.subject();
                plan(&tree).map(|plan| (plan, subject))
            })
            .await
        };
        let (planned, subject) = match planned {
            Ok(Ok(planned)) => planned,
            Ok(Err(error)) => return Err(Ended::Failed(error.to_string())),
            Err(_) => return Err(Ended::Failed("planning stopped unexpectedly".into())),
        };
        timings.insert("plan".into(), started.elapsed().as_millis() as u64);
        let all = self
            .store
            .variables(&env.project)
            .map_err(|_| Ended::Failed("the project's variables cannot be read".into()))?;
        log.add_secrets(crate::variables::secrets(&all));
        let variables =
            crate::variables::effective(&all, &self.environment_chain(&env.project, &env.name));
        let build_visible = crate::variables::build_visible(&variables);
        let build_started = Instant::now();
        let build = self
            .build_commit(activity, &planned, &subject, &build_visible, log, cancel)
            .await?;
        timings.insert("build".into(), build_started.elapsed().as_millis() as u64);
        Ok((build, planned, variables))
    }

    /// Plans and builds `commit` for `env`, then says where things stand.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn build_and_report(
        &self,
        activity: &Activity,
        env: &launchway_store::Environment,
        commit: &str,
        log: &Log,
        cancel: &CancellationToken,
        mut timings: BTreeMap<String, u64>,
        started: Instant,
        deploy: bool,
    ) -> Result<BTreeMap<String, u64>, Ended> {
        let (build, planned, variables) = self
            .plan_and_build(activity, env, commit, log, cancel, &mut timings, started)
            .await?;
        if !deploy {
            let release = self
                .record_release(
                    activity,
                    env,
                    &build,
                    &planned,
                    &variables,
                    log,
                    launchway_store::ReleaseStatus::Pending,
                )
                .await?;
            log.line(&format!(
                "  Build {} is complete; release {} is ready, not deployed: `launchway releases promote {}` serves it",
                build.id, release.id, release.id
            ))
            .await;
            return Ok(timings);
        }
        let deploy_started = Instant::now();
        let release = self
            .deploy_build(activity, env, &build, &planned, &variables, log, cancel)
            .await;
        timings.insert("deploy".into(), deploy_started.elapsed().as_millis() as u64);
        let release = release?;
        log.line(&format!(
            "  Environment {} ({}) is at {}, release {}",
            env.name,
            env.kind.as_str(),
            short(commit),
            release.id
        ))
        .await;
        Ok(timings)
    }
}
