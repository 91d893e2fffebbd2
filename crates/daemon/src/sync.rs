//! `launchway environment sync` and `environment merge`: Upsun's
//! `environment:synchronize` and `environment:merge`, fast-forward only.
//!
//! - Sync is an `environment.synchronize` activity of the child. `--code`:
//!   the child's branch moves to the parent's head when that is a
//!   fast-forward (nothing to do when the child already has it; refused,
//!   changing nothing, when they diverged). `--data`: the parent's data is
//!   copied consistently (as activation does: the parent is paused for the
//!   last pass only) into the child's staging directory and swapped in as a
//!   restore does (`restore.rs`: the same journal, the same crash safety).
//!   Then the child deploys: its new head when the code moved (built
//!   first, before its data is touched), else its serving release again on
//!   the new data.
//! - Merge is an `environment.merge` activity of the parent: its branch
//!   moves to the child's head when that is a fast-forward (refused
//!   otherwise), then it builds (reusing the child's builds) and deploys.
//!   Data never goes up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use launchway_api::proto;
use launchway_store::{Activity, ActivityKind, Environment, EnvironmentStatus};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::Daemon;
use crate::activity::{Ended, Log, Work};
use crate::build_api::LogStream;
use crate::data_copy::CopyPurpose;
use crate::push::short;

/// How a branch relates to the commit it would move to.
#[derive(Debug, PartialEq, Eq)]
enum BranchMove {
    /// It is there already, or already contains it.
    UpToDate,
    /// It can move there: a fast-forward.
    Forward,
    /// Both have commits the other lacks.
    Diverged,
}

impl Daemon {
    async fn branch_move(&self, project: &str, from: &str, to: &str) -> Result<BranchMove, Ended> {
        if from == to {
            return Ok(BranchMove::UpToDate);
        }
        let repo = self.repo_path(project);
        let failed = |e: launchway_git::GitError| Ended::Failed(format!("git: {e}"));
        if self
            .git
            .is_ancestor(&repo, from, to)
            .await
            .map_err(failed)?
        {
            return Ok(BranchMove::Forward);
        }
        if self
            .git
            .is_ancestor(&repo, to, from)
            .await
            .map_err(failed)?
        {
            return Ok(BranchMove::UpToDate);
        }
        Ok(BranchMove::Diverged)
    }

    /// Moves `env`'s branch from `old` to `new` and records its head.
    async fn move_branch(&self, env: &mut Environment, old: &str, new: &str) -> Result<(), Ended> {
        self.git
            .update_branch(&self.repo_path(&env.project), &env.name, new, old)
            .await
            .map_err(|_| {
                Ended::Failed(format!(
                    "the branch {} moved meanwhile (a push?); nothing was changed",
                    env.name
                ))
            })?;
        env.head = Some(new.to_owned());
        self.store
            .put_environment(env)
            .map_err(|_| Ended::Failed("the environment cannot be recorded".into()))
    }

    /// `launchway environment sync`: checks the request, then runs it in
    /// an activity of the child's queue.
    pub(crate) fn sync_environment(
        self: &Arc<Self>,
        request: &proto::SyncEnvironmentRequest,
    ) -> Result<LogStream, Status> {
        if !request.data && !request.code {
            return Err(Status::invalid_argument(
                "say what to bring down from the parent: --data, --code or both",
            ));
        }
        let env = self.existing_environment(&request.project, &request.environment)?;
        let parent = env.parent.clone().ok_or_else(|| {
            Status::failed_precondition(format!("{} has no parent to synchronize from", env.name))
        })?;
        let parent_env = self.existing_environment(&request.project, &parent)?;
        if env.status != EnvironmentStatus::Active {
            return Err(Status::failed_precondition(format!(
                "environment {} is inactive; activate it (which clones {parent}'s data) instead",
                env.name
            )));
        }
        if request.data && parent_env.status != EnvironmentStatus::Active {
            return Err(Status::failed_precondition(format!(
                "the parent {parent} is inactive and has no data to copy"
            )));
        }
        let what = match (request.code, request.data) {
            (true, true) => "code and data",
            (true, false) => "code",
            _ => "data",
        };
        self.run_activity(
            &env.project,
            &env.name,
            ActivityKind::Sync,
            format!("synchronization of {} with {parent}'s {what}", env.name),
            Work::Sync {
                data: request.data,
                code: request.code,
            },
        )
    }

    pub(crate) async fn sync_activity(
        &self,
        activity: &Activity,
        data: bool,
        code: bool,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<String, u64>, Ended> {
        let mut env = self.activity_environment(activity)?;
        if env.status != EnvironmentStatus::Active {
            return Err(Ended::Failed(format!(
                "environment {} is inactive",
                env.name
            )));
        }
        let parent_name = env
            .parent
            .clone()
            .ok_or_else(|| Ended::Failed(format!("{} has no parent", env.name)))?;
        let parent = self
            .store
            .environment(&env.project, &parent_name)
            .ok()
            .flatten()
            .ok_or_else(|| Ended::Failed(format!("the parent {parent_name} is gone")))?;
        let started = Instant::now();
        let mut timings = BTreeMap::new();

        // Code: decided (and refused) before anything changes.
        let mut new_head = None;
        if code {
            let (Some(ours), Some(theirs)) = (env.head.clone(), parent.head.clone()) else {
                return Err(Ended::Failed(format!(
                    "{} or {parent_name} has no commit yet",
                    env.name
                )));
            };
            match self.branch_move(&env.project, &ours, &theirs).await? {
                BranchMove::UpToDate => {
                    log.line(&format!(
                        "  Code: {} already has every commit of {parent_name}",
                        env.name
                    ))
                    .await;
                }
                BranchMove::Forward => new_head = Some((ours, theirs)),
                BranchMove::Diverged => {
                    return Err(Ended::Failed(format!(
                        "{} and {parent_name} have diverged (each has commits the other lacks), so the code cannot be fast-forwarded; \
                         merge {parent_name} into {} in a clone and push it, then sync the data alone",
                        env.name, env.name
                    )));
                }
            }
        }
        if !data && new_head.is_none() {
            return Ok(timings);
        }
        if let Some((old, new)) = &new_head {
            self.move_branch(&mut env, old, new).await?;
            log.line(&format!(
                "  Code: branch {} fast-forwarded from {} to {parent_name}'s {}",
                env.name,
                short(old),
                short(new)
            ))
            .await;
        }
        if !data {
            let head = env.head.clone().unwrap_or_default();
            return self
                .build_and_report(activity, &env, &head, log, cancel, timings, started, true)
                .await;
        }

        // Data: the release to run on it first (a build that fails changes
        // no data), then the copy, then the swap.
        let serving = self.serving_release(&env.project, &env.name);
        let (release, fresh) = match serving {
            Some(release) if new_head.is_none() => (release, false),
            _ => {
                let head = env.head.clone().ok_or_else(|| {
                    Ended::Failed(format!("environment {} has no commit yet", env.name))
                })?;
                let (build, planned, variables) = self
                    .plan_and_build(activity, &env, &head, log, cancel, &mut timings, started)
                    .await?;
                let release = self
                    .record_release(
                        activity,
                        &env,
                        &build,
                        &planned,
                        &variables,
                        log,
                        launchway_store::ReleaseStatus::Deploying,
                    )
                    .await?;
                (release, true)
            }
        };
        let env_dir = self.environment_dir(&env.project, &env.name);
        let staging = env_dir.join(crate::restore::STAGING);
        crate::data_copy::remove_tree(&staging).await?;
        log.line(&format!(
            "  Data: copying {parent_name}'s data into {}",
            env.name
        ))
        .await;
        let copy_started = Instant::now();
        let copied = self
            .copy_consistently(
                &env.project,
                &parent_name,
                &staging,
                CopyPurpose::Sync,
                false,
                log,
                cancel,
            )
            .await;
        let copied = match copied {
            Ok(copied) => copied,
            Err(ended) => {
                let _ = crate::data_copy::remove_tree(&staging).await;
                if fresh {
                    self.fail_release(&release.id);
                }
                return Err(ended);
            }
        };
        log.line(&format!(
            "    Copied {} files ({}) in {:.2} s; {parent_name} was paused {:.0} ms",
            copied.first.files,
            copied.how(),
            copy_started.elapsed().as_secs_f64(),
            copied.paused.as_secs_f64() * 1000.0
        ))
        .await;
        timings.insert("copy".into(), copy_started.elapsed().as_millis() as u64);
        let what = format!("{parent_name}'s data");
        let release_id = release.id.clone();
        let (deployed, held) = self
            .swap_staged_and_deploy(activity, &env, &what, release, fresh, log, cancel)
            .await
            .inspect_err(|_| {
                if fresh {
                    self.fail_release(&release_id);
                }
            })?;
        log.line(&format!(
            "  Environment {} is at release {} with {what} (requests held {:.2} s)",
            env.name,
            deployed.id,
            held.as_secs_f64()
        ))
        .await;
        Ok(timings)
    }

    /// `launchway environment merge`: checks the request, then runs it in
    /// an activity of the parent's queue.
    pub(crate) fn merge_environment(
        self: &Arc<Self>,
        request: &proto::EnvironmentRequest,
    ) -> Result<LogStream, Status> {
        let child = self.existing_environment(&request.project, &request.environment)?;
        let parent = child.parent.clone().ok_or_else(|| {
            Status::failed_precondition(format!("{} has no parent to merge into", child.name))
        })?;
        let parent_env = self.existing_environment(&request.project, &parent)?;
        if parent_env.status != EnvironmentStatus::Active {
            return Err(Status::failed_precondition(format!(
                "the parent {parent} is inactive: nothing would deploy the merge"
            )));
        }
        self.run_activity(
            &parent_env.project,
            &parent_env.name,
            ActivityKind::Merge,
            format!("merge of {} into {parent}", child.name),
            Work::Merge {
                child: child.name.clone(),
            },
        )
    }

    pub(crate) async fn merge_activity(
        &self,
        activity: &Activity,
        child: &str,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<String, u64>, Ended> {
        let mut env = self.activity_environment(activity)?;
        let child_env = self
            .store
            .environment(&env.project, child)
            .ok()
            .flatten()
            .ok_or_else(|| Ended::Failed(format!("environment {child} is gone")))?;
        if child_env.parent.as_deref() != Some(env.name.as_str()) {
            return Err(Ended::Failed(format!(
                "{child}'s parent is no longer {}",
                env.name
            )));
        }
        let (Some(ours), Some(theirs)) = (env.head.clone(), child_env.head.clone()) else {
            return Err(Ended::Failed(format!(
                "{} or {child} has no commit yet",
                env.name
            )));
        };
        match self.branch_move(&env.project, &ours, &theirs).await? {
            BranchMove::UpToDate => {
                log.line(&format!(
                    "  {} already has every commit of {child}: nothing to merge",
                    env.name
                ))
                .await;
                Ok(BTreeMap::new())
            }
            BranchMove::Diverged => Err(Ended::Failed(format!(
                "{} has commits {child} lacks, so {child} cannot be merged as a fast-forward; \
                 sync its code first (`launchway environment sync -p {} {child} --code` after merging {} into it in a clone)",
                env.name, env.project, env.name
            ))),
            BranchMove::Forward => {
                self.move_branch(&mut env, &ours, &theirs).await?;
                log.line(&format!(
                    "  Branch {} fast-forwarded from {} to {child}'s {}",
                    env.name,
                    short(&ours),
                    short(&theirs)
                ))
                .await;
                self.build_and_report(
                    activity,
                    &env,
                    &theirs,
                    log,
                    cancel,
                    BTreeMap::new(),
                    Instant::now(),
                    true,
                )
                .await
            }
        }
    }

    /// Marks a release that will never deploy as failed.
    pub(crate) fn fail_release(&self, id: &str) {
        if let Ok(Some(mut release)) = self.store.release(id)
            && release.status == launchway_store::ReleaseStatus::Deploying
        {
            release.status = launchway_store::ReleaseStatus::Failed;
            if let Err(error) = self.store.put_release(&release) {
                tracing::warn!(%error, "cannot record a release");
            }
        }
    }
}
