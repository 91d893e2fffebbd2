//! Activities: created pending, run one at a time per environment in
//! creation order, their log stored line by line and, while the pusher waits,
//! streamed to the pusher's terminal.
//!
//! A push activity counts the new commits and plans each app (tree id and
//! build key). Builds and deploys attach here in later versions; until then an
//! activity ends after the plan.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use launchway_git::{CommitTree, Objects, RefUpdate, count_new_commits, plan};
use launchway_store::{
    Activity, ActivityKind, ActivityResult, ActivityState, EnvironmentStatus, StoreError,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument as _, warn};

use crate::push::short;
use crate::{Daemon, now_ms};

/// What an activity works on.
#[derive(Clone, Debug)]
pub(crate) struct Work {
    pub(crate) update: RefUpdate,
}

/// Where an activity's log goes: the store, and the pusher while they wait.
struct Log {
    daemon: Arc<Daemon>,
    id: u64,
    sink: Option<mpsc::Sender<Vec<u8>>>,
}

impl Log {
    async fn line(&self, text: &str) {
        let line = format!("{text}\n");
        if let Err(error) = self.daemon.store.append_log(self.id, &line) {
            warn!(%error, activity = self.id, "cannot store the activity log");
        }
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
        let handle = self.tasks.spawn(
            async move {
                turn.wait().await;
                let result = daemon.run(running, work, sink).await;
                turn.finish();
                result
            }
            .instrument(span),
        );
        Ok((activity, handle))
    }

    async fn run(
        self: Arc<Self>,
        mut activity: Activity,
        work: Work,
        sink: Option<mpsc::Sender<Vec<u8>>>,
    ) -> ActivityResult {
        let started = now_ms();
        activity.state = ActivityState::InProgress;
        activity.started_at = Some(started);
        activity
            .timings
            .insert("wait".into(), started.saturating_sub(activity.created_at));
        if let Err(error) = self.store.put_activity(&activity) {
            warn!(%error, "cannot record the activity start");
        }
        let log = Log {
            daemon: self.clone(),
            id: activity.id,
            sink,
        };
        log.line(&format!("Processing activity: {}", activity.description))
            .await;
        let result = match activity.kind {
            ActivityKind::Push => self.push_activity(&activity, &work, &log).await,
            ActivityKind::BranchDelete => self.delete_activity(&activity, &log).await,
        };
        let result = match result {
            Ok(timings) => {
                activity.timings.extend(timings);
                ActivityResult::Success
            }
            Err(message) => {
                log.line(&format!("  E: {message}")).await;
                ActivityResult::Failure
            }
        };
        let completed = now_ms();
        activity.state = ActivityState::Complete;
        activity.result = Some(result);
        activity.completed_at = Some(completed);
        activity
            .timings
            .insert("total".into(), completed.saturating_sub(started));
        if let Err(error) = self.store.put_activity(&activity) {
            warn!(%error, "cannot record the activity end");
        }
        result
    }

    async fn push_activity(
        &self,
        activity: &Activity,
        work: &Work,
        log: &Log,
    ) -> Result<BTreeMap<String, u64>, String> {
        let mut timings = BTreeMap::new();
        let repo = self.repo_path(&activity.project);
        let update = work.update.clone();
        let env = self
            .store
            .environment(&activity.project, &activity.environment)
            .map_err(|_| "the environment cannot be read".to_owned())?
            .ok_or_else(|| format!("environment {} no longer exists", activity.environment))?;
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
        let planned = {
            let repo = repo.clone();
            let commit = update.new.clone();
            tokio::task::spawn_blocking(move || {
                let objects = Objects::open(&repo, None)?;
                let tree = CommitTree::open(objects, &commit)?;
                plan(&tree, &BTreeMap::new())
            })
            .await
        };
        let planned = match planned {
            Ok(Ok(planned)) => planned,
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err("planning stopped unexpectedly".into()),
        };
        timings.insert("plan".into(), started.elapsed().as_millis() as u64);
        for app in &planned.apps {
            log.line(&format!(
                "  Building application '{}' (runtime type: {}, tree: {})",
                app.name,
                app.runtime,
                short(&app.tree_id)
            ))
            .await;
            log.line(&format!("    Build key: {}", app.build_key)).await;
        }
        log.line("  Building and deploying are not enabled in this version; the plan is recorded")
            .await;
        log.line(&format!(
            "  Environment {} ({}) is at {}",
            env.name,
            env.kind.as_str(),
            short(&update.new)
        ))
        .await;
        Ok(timings)
    }

    async fn delete_activity(
        &self,
        activity: &Activity,
        log: &Log,
    ) -> Result<BTreeMap<String, u64>, String> {
        match self
            .store
            .delete_environment(&activity.project, &activity.environment)
        {
            Ok(_) => {
                log.line(&format!("  Deleted environment {}", activity.environment))
                    .await;
                Ok(BTreeMap::new())
            }
            Err(_) => Err("the environment could not be deleted".into()),
        }
    }
}
