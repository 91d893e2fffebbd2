//! Crons: each app's `crons` run on their schedule in its web process's
//! container, as the app's user, with its environment.
//!
//! - A scheduler wakes at the start of every minute and, for every
//!   environment with a serving release, starts the crons whose schedule
//!   matches that minute in the app's `timezone` (DST included: jiff and
//!   the host's tz database).
//! - A run is an `environment.cron` activity (its log stored like any
//!   other, `activity cancel` stops it) that does not wait in the
//!   environment's queue: a long cron never holds a deploy back.
//! - One run of a cron at a time: a start while one runs is skipped and
//!   said in the running one's log. None starts while another activity
//!   (a deploy, a deactivation…) is queued or running for the environment,
//!   and such an activity cancels the running ones before it begins.
//! - A cancelled run gets `commands.stop` (if any), then
//!   `shutdown_timeout` seconds to end before it is killed; a run that
//!   lasts longer than its `timeout` is killed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use launchway_api::proto;
use launchway_config::Schedule;
use launchway_deploy::{AppSpec, CronSpec, DeploySpec};
use launchway_store::{
    Activity, ActivityKind, ActivityResult, ActivityState, Release, ReleaseStatus,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::info;

use crate::activity::{Ended, Log, Work};
use crate::build_api::LogStream;
use crate::deploy::environment_key;
use crate::{Daemon, now_ms};

/// A run in progress.
#[derive(Debug)]
pub(crate) struct RunningCron {
    pub(crate) activity: u64,
    pub(crate) app: String,
    pub(crate) name: String,
    /// Cancelled to stop the run (stop command, grace, kill).
    pub(crate) cancel: CancellationToken,
    /// Becomes true when the run has ended.
    pub(crate) done: watch::Receiver<bool>,
}

/// Why a cron run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    Schedule,
    Manual,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
        }
    }
}

fn environment_of(project: &str, environment: &str) -> String {
    format!("{project}\0{environment}")
}

/// The description of a cron run's activity; [`parse_description`] reads
/// it back.
fn description(app: &str, name: &str, trigger: Trigger) -> String {
    format!("cron {app}:{name} ({})", trigger.as_str())
}

fn parse_description(text: &str) -> Option<(&str, &str, &str)> {
    let rest = text.strip_prefix("cron ")?;
    let (target, trigger) = rest.rsplit_once(" (")?;
    let (app, name) = target.split_once(':')?;
    Some((app, name, trigger.strip_suffix(')')?))
}

/// The local minute `at` falls in, in `timezone`: (minute, hour, day,
/// month, weekday with Sunday 0).
fn local_minute(at: SystemTime, timezone: &str) -> Option<(u32, u32, u32, u32, u32)> {
    let timestamp = jiff::Timestamp::try_from(at).ok()?;
    let zone = jiff::tz::TimeZone::get(timezone).ok()?;
    let local = timestamp.to_zoned(zone);
    Some((
        u32::try_from(local.minute()).ok()?,
        u32::try_from(local.hour()).ok()?,
        u32::try_from(local.day()).ok()?,
        u32::try_from(local.month()).ok()?,
        u32::from(local.weekday().to_sunday_zero_offset().unsigned_abs()),
    ))
}

impl Daemon {
    fn lock_crons(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<RunningCron>>> {
        match self.crons.lock() {
            Ok(crons) => crons,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether activities of the environment are queued or running.
    fn environment_busy(&self, project: &str, environment: &str) -> bool {
        let busy = match self.busy.lock() {
            Ok(busy) => busy,
            Err(poisoned) => poisoned.into_inner(),
        };
        busy.get(&environment_of(project, environment))
            .is_some_and(|count| *count > 0)
    }

    /// Counts an activity of the environment in or out of its queue.
    pub(crate) fn mark_busy(&self, project: &str, environment: &str, joined: bool) {
        let mut busy = match self.busy.lock() {
            Ok(busy) => busy,
            Err(poisoned) => poisoned.into_inner(),
        };
        let count = busy
            .entry(environment_of(project, environment))
            .or_default();
        if joined {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
        }
    }

    /// Cancels every running cron (the daemon is stopping).
    pub(crate) fn cancel_all_crons(&self) {
        for run in self.lock_crons().values().flatten() {
            run.cancel.cancel();
        }
    }

    /// Cancels the environment's running crons and waits until they ended.
    pub(crate) async fn stop_crons(&self, project: &str, environment: &str, log: &Log) {
        let running: Vec<(u64, String, String, watch::Receiver<bool>)> = self
            .lock_crons()
            .get(&environment_of(project, environment))
            .map(|runs| {
                runs.iter()
                    .map(|run| {
                        run.cancel.cancel();
                        (
                            run.activity,
                            run.app.clone(),
                            run.name.clone(),
                            run.done.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (activity, app, name, mut done) in running {
            log.line(&format!(
                "  Stopping cron {app}:{name} (activity {activity}) first"
            ))
            .await;
            let _ = done.wait_for(|ended| *ended).await;
        }
    }

    /// Wakes at every minute and starts the crons due then.
    pub(crate) async fn run_cron_scheduler(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let now = SystemTime::now();
            let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
            let into_minute = Duration::from_millis(since_epoch.as_millis() as u64 % 60_000);
            let wait = Duration::from_secs(60).saturating_sub(into_minute);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
            // A few ms into the minute: the minute it is.
            let minute = SystemTime::now();
            self.start_due_crons(minute).await;
            self.start_due_backups(minute);
        }
    }

    /// Every serving release's crons due at `minute`.
    async fn start_due_crons(self: &Arc<Self>, minute: SystemTime) {
        let Ok(deployments) = self.store.deployments() else {
            return;
        };
        for release in deployments
            .iter()
            .filter_map(|d| self.active_release(&d.project, &d.environment))
        {
            let Ok(spec) = serde_json::from_value::<DeploySpec>(release.spec.clone()) else {
                continue;
            };
            for app in &spec.apps {
                let Some(local) = local_minute(minute, &app.timezone) else {
                    continue;
                };
                for cron in &app.crons {
                    let seed = format!("{}/{}/{}", spec.project, app.name, cron.name);
                    let Ok(schedule) = Schedule::parse(&cron.spec, &seed) else {
                        continue;
                    };
                    let (m, h, d, mo, wd) = local;
                    if !schedule.matches(m, h, d, mo, wd) {
                        continue;
                    }
                    if let Err(why) =
                        self.start_cron(&spec, app, cron, &release.id, Trigger::Schedule, None)
                    {
                        info!(project = %spec.project, environment = %spec.environment, app = %app.name, cron = %cron.name, "cron skipped: {why}");
                    }
                }
            }
        }
    }

    /// The release marked active in an environment (a deploy in progress
    /// leaves the previous one active until it serves): its deployment's
    /// release or previous one, whichever is active; else, read from the
    /// environment's own releases. Not a scan of every project's.
    pub(crate) fn active_release(&self, project: &str, environment: &str) -> Option<Release> {
        let deployment = self.store.deployment(project, environment).ok()??;
        let active = |id: &str| {
            self.store
                .release(id)
                .ok()
                .flatten()
                .filter(|r| r.status == ReleaseStatus::Active)
        };
        active(&deployment.release)
            .or_else(|| deployment.previous.as_deref().and_then(active))
            .or_else(|| {
                self.store
                    .releases(project, Some(environment))
                    .ok()?
                    .into_iter()
                    .find(|r| r.status == ReleaseStatus::Active)
            })
    }

    /// Starts one run of `cron` as an activity; `Err` says why it did not.
    fn start_cron(
        self: &Arc<Self>,
        spec: &DeploySpec,
        app: &AppSpec,
        cron: &CronSpec,
        release: &str,
        trigger: Trigger,
        sink: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    ) -> Result<Activity, String> {
        if self.environment_busy(&spec.project, &spec.environment) {
            return Err("another activity of the environment is queued or running".into());
        }
        let key = environment_of(&spec.project, &spec.environment);
        let mut crons = self.lock_crons();
        let runs = crons.entry(key.clone()).or_default();
        if let Some(running) = runs
            .iter()
            .find(|run| run.app == app.name && run.name == cron.name)
        {
            let message = format!(
                "  Skipped a {} start at {}: this run is still going",
                trigger.as_str(),
                jiff::Timestamp::now().strftime("%H:%M:%S UTC")
            );
            let _ = self
                .store
                .append_log(running.activity, &format!("{message}\n"));
            return Err(format!(
                "its previous run (activity {}) is still running",
                running.activity
            ));
        }
        let id = self.store.next_activity_id().map_err(|e| e.to_string())?;
        let activity = Activity::new(
            id,
            &spec.project,
            &spec.environment,
            ActivityKind::Cron,
            &description(&app.name, &cron.name, trigger),
            now_ms(),
        );
        self.store
            .put_activity(&activity)
            .map_err(|e| e.to_string())?;
        let cancel = CancellationToken::new();
        let (done_sender, done) = watch::channel(false);
        runs.push(RunningCron {
            activity: id,
            app: app.name.clone(),
            name: cron.name.clone(),
            cancel: cancel.clone(),
            done,
        });
        drop(crons);
        self.lock_cancels().insert(id, cancel.clone());
        let daemon = self.clone();
        let work = Work::Cron {
            release: release.to_owned(),
            app: app.name.clone(),
            name: cron.name.clone(),
        };
        let running = activity.clone();
        self.tasks.spawn(async move {
            let _ = daemon.clone().run(running, work, sink, cancel).await;
            daemon.lock_cancels().remove(&id);
            if let Some(runs) = daemon.lock_crons().get_mut(&key) {
                runs.retain(|run| run.activity != id);
            }
            let _ = done_sender.send(true);
        });
        Ok(activity)
    }

    /// The work of a cron activity: the run itself.
    pub(crate) async fn cron_activity(
        &self,
        activity: &Activity,
        release_id: &str,
        app_name: &str,
        name: &str,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<std::collections::BTreeMap<String, u64>, Ended> {
        let spec = self.release_spec_for(release_id, log)?;
        let app = spec
            .apps
            .iter()
            .find(|app| app.name == app_name)
            .ok_or_else(|| Ended::Failed(format!("release {release_id} has no app {app_name}")))?;
        let cron = app
            .crons
            .iter()
            .find(|cron| cron.name == name)
            .ok_or_else(|| Ended::Failed(format!("app {app_name} has no cron {name}")))?;
        let process = app.web().or_else(|| app.processes.first()).ok_or_else(|| {
            Ended::Failed(format!("app {app_name} runs no process to run crons in"))
        })?;
        let owner = environment_key(&activity.project, &activity.environment);
        let Some(container) = self.running_container(&owner, app, process).await else {
            return Err(Ended::Failed(format!("app {app_name} is not running")));
        };
        log.line(&format!("  Running cron {app_name}:{name}: {}", cron.start))
            .await;
        // The run stops when killed: a cancellation kills it only after
        // the stop command and the grace period.
        let kill = CancellationToken::new();
        let run = self.exec_outcome(
            app,
            process,
            &container,
            &cron.start,
            Some(Duration::from_secs(cron.timeout.max(1))),
            log,
            &kill,
        );
        tokio::pin!(run);
        let outcome = tokio::select! {
            outcome = &mut run => outcome,
            () = cancel.cancelled() => {
                log.line("  Cancelled: stopping the run").await;
                let grace = Duration::from_secs(cron.shutdown_timeout);
                if let Some(stop) = &cron.stop {
                    let never = CancellationToken::new();
                    let stopping = self.exec_outcome(
                        app,
                        process,
                        &container,
                        stop,
                        Some(grace.max(Duration::from_secs(1))),
                        log,
                        &never,
                    );
                    let _ = stopping.await;
                }
                let outcome = tokio::select! {
                    outcome = &mut run => outcome,
                    () = tokio::time::sleep(grace) => {
                        log.line(&format!("  The run did not end within {} s: killed", cron.shutdown_timeout)).await;
                        kill.cancel();
                        run.await
                    }
                };
                let _ = outcome;
                return Err(Ended::Cancelled);
            }
        };
        match outcome {
            Ok(outcome) if outcome.success() => {
                log.line(&format!("  Cron {app_name}:{name} succeeded"))
                    .await;
                Ok(std::collections::BTreeMap::new())
            }
            Ok(outcome) if outcome.timed_out => Err(Ended::Failed(format!(
                "cron {app_name}:{name} ran longer than its timeout ({} s) and was killed",
                cron.timeout
            ))),
            Ok(outcome) => Err(Ended::Failed(format!(
                "cron {app_name}:{name} exited with status {}",
                outcome.exit_code
            ))),
            Err(error) => Err(Ended::Failed(format!("cron {app_name}:{name}: {error}"))),
        }
    }

    /// The serving release of an environment and its spec.
    fn serving_spec(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<(String, DeploySpec), Status> {
        self.existing_environment(project, environment)?;
        let release = self.active_release(project, environment).ok_or_else(|| {
            Status::failed_precondition(format!(
                "environment {environment} of {project} serves no release"
            ))
        })?;
        let spec: DeploySpec = serde_json::from_value(release.spec.clone())
            .map_err(|_| Status::internal(format!("release {} cannot be read", release.id)))?;
        Ok((release.id, spec))
    }

    /// `launchway crons`: each cron of the serving release, its last runs.
    pub(crate) fn list_crons(
        &self,
        request: &proto::EnvironmentRequest,
    ) -> Result<proto::CronList, Status> {
        let (_, spec) = self.serving_spec(&request.project, &request.environment)?;
        let activities = self
            .store
            .activities_page(
                Some(&request.project),
                Some(&request.environment),
                None,
                2000,
            )
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut crons = Vec::new();
        for app in &spec.apps {
            for cron in &app.crons {
                let runs = activities
                    .iter()
                    .filter(|activity| {
                        activity.kind == ActivityKind::Cron
                            && activity.environment == request.environment
                    })
                    .filter_map(|activity| {
                        let (run_app, run_name, trigger) =
                            parse_description(&activity.description)?;
                        (run_app == app.name && run_name == cron.name).then(|| proto::CronRun {
                            activity: activity.id,
                            started_at: activity.started_at.unwrap_or(activity.created_at),
                            duration_ms: activity
                                .completed_at
                                .zip(activity.started_at)
                                .map_or(0, |(end, start)| end.saturating_sub(start)),
                            result: match (activity.state, activity.result) {
                                (ActivityState::Cancelled, _) => "cancelled",
                                (_, Some(ActivityResult::Success)) => "success",
                                (_, Some(ActivityResult::Failure)) => "failure",
                                _ => "running",
                            }
                            .into(),
                            trigger: trigger.to_owned(),
                        })
                    })
                    .take(10)
                    .collect();
                crons.push(proto::CronInfo {
                    app: app.name.clone(),
                    name: cron.name.clone(),
                    spec: cron.spec.clone(),
                    timezone: app.timezone.clone(),
                    command: cron.start.clone(),
                    runs,
                });
            }
        }
        Ok(proto::CronList { crons })
    }

    /// `launchway cron run`: one run now, its log streamed.
    pub(crate) fn run_cron_now(
        self: &Arc<Self>,
        request: &proto::RunCronRequest,
    ) -> Result<LogStream, Status> {
        let (release, spec) = self.serving_spec(&request.project, &request.environment)?;
        let found: Vec<(&AppSpec, &CronSpec)> = spec
            .apps
            .iter()
            .filter(|app| request.app.is_empty() || app.name == request.app)
            .flat_map(|app| app.crons.iter().map(move |cron| (app, cron)))
            .filter(|(_, cron)| cron.name == request.name)
            .collect();
        let (app, cron) = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(Status::not_found(format!(
                    "the serving release of {} has no cron {}",
                    request.environment, request.name
                )));
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "several apps have a cron {}: name the app with --app",
                    request.name
                )));
            }
        };
        let (sink, lines) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
        let activity = self
            .start_cron(&spec, app, cron, &release, Trigger::Manual, Some(sink))
            .map_err(|why| Status::failed_precondition(format!("the cron did not start: {why}")))?;
        Ok(crate::build_api::stream_activity(
            self.clone(),
            activity,
            lines,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_read_back() {
        let text = description("web", "nightly", Trigger::Manual);
        assert_eq!(parse_description(&text), Some(("web", "nightly", "manual")));
        assert_eq!(parse_description("alice pushed to main"), None);
    }

    #[test]
    fn minutes_are_local_to_the_app() {
        // 2026-07-01 12:30 UTC is 14:30 in Paris (summer time), a Wednesday.
        let at = UNIX_EPOCH + Duration::from_secs(1_782_909_000);
        assert_eq!(local_minute(at, "UTC"), Some((30, 12, 1, 7, 3)));
        assert_eq!(local_minute(at, "Europe/Paris"), Some((30, 14, 1, 7, 3)));
        assert_eq!(local_minute(at, "Not/A_Zone"), None);
    }
}
