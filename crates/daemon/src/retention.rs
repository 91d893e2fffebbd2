//! Retention: history is bounded, what matters is kept.
//!
//! A periodic pass (`[retention] interval_secs`) visits every environment
//! of every project that has history, deleted environments included, while
//! holding that environment's queue (so no activity of it — a promotion of
//! the release being judged, a restore — runs meanwhile), and deletes what
//! [`plan`] says. Then it collects images (`gc`), which now also frees the
//! images of deleted and inactive environments.
//!
//! [`plan`] is pure. A record is deleted only when every rule for it holds:
//! - a **release** is not active or deploying, is neither the deployment's
//!   release nor the one it would roll back to, is named by no backup, is not
//!   the environment's newest release waiting for promotion, and is not among
//!   its newest `releases_per_environment` (none for a deleted environment);
//! - a **build** is not running, no kept release of the project names it, it
//!   is not among the newest `keep_builds` complete builds of an active
//!   environment (their images make the next build fast), and it started
//!   more than `build_logs_days` ago;
//! - a kept build's **log** is dropped after `build_logs_days` unless its
//!   release is the deployment's release or previous one;
//! - an **activity** is finished (complete or cancelled) more than
//!   `activities_days` ago, is not among the newest `releases_per_environment`
//!   of its environment (none for a deleted one), and no kept release, kept
//!   build or backup names it.
//!
//! - a **webhook delivery** that ended (delivered or given up) more than
//!   `activities_days` ago.
//!
//! `0` days means age protects nothing: the counts and references alone keep.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use launchway_store::{
    Activity, ActivityState, Build, BuildStatus, Deployment, Release, ReleaseStatus,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Daemon;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The rules' numbers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    pub(crate) activities_days: u64,
    pub(crate) releases_per_environment: usize,
    pub(crate) build_logs_days: u64,
    pub(crate) keep_builds: usize,
}

/// One environment's history, newest first, and what protects part of it.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// The environment record exists (not deleted).
    pub(crate) exists: bool,
    /// It is active (its builds' images are worth keeping).
    pub(crate) active: bool,
    pub(crate) deployment: Option<Deployment>,
    pub(crate) releases: Vec<Release>,
    pub(crate) builds: Vec<Build>,
    pub(crate) activities: Vec<Activity>,
}

/// What protects records across the project's environments.
#[derive(Debug, Default)]
pub(crate) struct ProjectRefs {
    /// Releases a backup names.
    pub(crate) backed_up_releases: BTreeSet<String>,
    /// Activities a backup names.
    pub(crate) backup_activities: BTreeSet<u64>,
    /// Builds named by releases of the project's other environments.
    pub(crate) builds_named_elsewhere: BTreeSet<String>,
}

/// What one pass deletes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Deletions {
    pub(crate) releases: Vec<String>,
    pub(crate) builds: Vec<String>,
    pub(crate) build_logs: Vec<String>,
    pub(crate) activities: Vec<u64>,
}

impl Deletions {
    fn is_empty(&self) -> bool {
        self.releases.is_empty()
            && self.builds.is_empty()
            && self.build_logs.is_empty()
            && self.activities.is_empty()
    }
}

fn older_than(time_ms: u64, days: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(time_ms) > days.saturating_mul(DAY_MS)
}

/// What to delete of one environment's history (see the module's header).
pub(crate) fn plan(history: &History, refs: &ProjectRefs, rules: &Rules, now_ms: u64) -> Deletions {
    let floor = if history.exists {
        rules.releases_per_environment
    } else {
        0
    };
    let deployed: BTreeSet<&str> = history
        .deployment
        .iter()
        .flat_map(|d| std::iter::once(d.release.as_str()).chain(d.previous.as_deref()))
        .collect();
    let newest_pending = history
        .releases
        .iter()
        .find(|r| r.status == ReleaseStatus::Pending)
        .map(|r| r.id.as_str());

    let mut deletions = Deletions::default();
    let mut kept_releases: Vec<&Release> = Vec::new();
    for (position, release) in history.releases.iter().enumerate() {
        let keep = position < floor
            || matches!(
                release.status,
                ReleaseStatus::Active | ReleaseStatus::Deploying
            )
            || deployed.contains(release.id.as_str())
            || refs.backed_up_releases.contains(&release.id)
            || newest_pending == Some(release.id.as_str());
        if keep {
            kept_releases.push(release);
        } else {
            deletions.releases.push(release.id.clone());
        }
    }
    let named: BTreeSet<&str> = kept_releases.iter().map(|r| r.build.as_str()).collect();
    let deployed_builds: BTreeSet<&str> = kept_releases
        .iter()
        .filter(|r| deployed.contains(r.id.as_str()))
        .map(|r| r.build.as_str())
        .collect();

    let mut kept_builds: Vec<&Build> = Vec::new();
    let mut complete_seen = 0;
    for build in &history.builds {
        let warm = history.active
            && build.status == BuildStatus::Complete
            && complete_seen < rules.keep_builds;
        if build.status == BuildStatus::Complete {
            complete_seen += 1;
        }
        let keep = build.status == BuildStatus::Running
            || named.contains(build.id.as_str())
            || refs.builds_named_elsewhere.contains(&build.id)
            || warm
            || !older_than(build.started_at, rules.build_logs_days, now_ms);
        if keep {
            kept_builds.push(build);
            if older_than(build.started_at, rules.build_logs_days, now_ms)
                && build.status != BuildStatus::Running
                && !deployed_builds.contains(build.id.as_str())
            {
                deletions.build_logs.push(build.id.clone());
            }
        } else {
            deletions.builds.push(build.id.clone());
        }
    }

    let named_activities: BTreeSet<u64> = kept_releases
        .iter()
        .filter_map(|r| r.activity)
        .chain(kept_builds.iter().filter_map(|b| b.activity))
        .chain(refs.backup_activities.iter().copied())
        .collect();
    for (position, activity) in history.activities.iter().enumerate() {
        let finished = matches!(
            activity.state,
            ActivityState::Complete | ActivityState::Cancelled
        );
        let ended = activity.completed_at.unwrap_or(activity.created_at);
        let keep = !finished
            || position < floor
            || !older_than(ended, rules.activities_days, now_ms)
            || named_activities.contains(&activity.id);
        if !keep {
            deletions.activities.push(activity.id);
        }
    }
    deletions
}

/// Counts of one pass, for the log.
#[derive(Debug, Default)]
struct Totals {
    releases: usize,
    builds: usize,
    build_logs: usize,
    activities: usize,
    deliveries: usize,
}

impl Daemon {
    /// The retention pass every `[retention] interval_secs`, the first a
    /// minute after start (or sooner with a shorter interval).
    pub(crate) async fn run_retention_forever(self: Arc<Self>, stop: CancellationToken) {
        let interval = self.settings.retention.interval_secs;
        if interval == 0 {
            return;
        }
        let mut wait = Duration::from_secs(interval.min(60));
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
            wait = Duration::from_secs(interval);
            self.retention_pass(&stop).await;
        }
    }

    /// One pass over every project.
    pub(crate) async fn retention_pass(&self, stop: &CancellationToken) {
        let rules = Rules {
            activities_days: self.settings.retention.activities_days,
            releases_per_environment: usize::try_from(
                self.settings.retention.releases_per_environment,
            )
            .unwrap_or(usize::MAX),
            build_logs_days: self.settings.retention.build_logs_days,
            keep_builds: self.builder.settings().keep_builds.max(1),
        };
        let projects = match self.store.projects() {
            Ok(projects) => projects,
            Err(error) => {
                warn!(%error, "retention: cannot list projects");
                return;
            }
        };
        let mut totals = Totals::default();
        for project in projects {
            if stop.is_cancelled() {
                return;
            }
            if let Err(error) = self
                .retain_project(&project.name, &rules, &mut totals)
                .await
            {
                warn!(project = %project.name, %error, "retention pass failed");
            }
        }
        totals.deliveries = self.prune_deliveries(rules.activities_days);
        self.queues.prune();
        match self.collect_garbage().await {
            Ok((removed, kept)) => info!(
                releases = totals.releases,
                builds = totals.builds,
                build_logs = totals.build_logs,
                activities = totals.activities,
                deliveries = totals.deliveries,
                images_removed = removed.len(),
                images_kept = kept,
                "retention pass done"
            ),
            Err(error) => warn!(%error, "retention: image collection failed"),
        }
        match self.collect_registry_garbage().await {
            Ok(removed) if !removed.is_empty() => {
                info!(
                    tags_removed = removed.len(),
                    "retention: registry tags no record names removed"
                );
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "retention: registry collection failed"),
        }
    }

    async fn retain_project(
        &self,
        project: &str,
        rules: &Rules,
        totals: &mut Totals,
    ) -> Result<(), launchway_store::StoreError> {
        let store = &self.store;
        let mut environments = store.history_environments(project)?;
        let records = store.environments(project)?;
        environments.extend(records.iter().map(|e| e.name.clone()));
        for name in environments {
            let mut turn = match self
                .queues
                .join(&format!("{project}\0{name}"), || Ok::<_, Infallible>(()))
            {
                Ok(((), turn)) => turn,
                Err(never) => match never {},
            };
            turn.wait().await;
            // Read once this environment's queue is ours: a backup or a
            // release made while waiting is seen.
            let backups = store.backups(project, None)?;
            // Which environment's releases name which build (a restore into
            // another environment deploys a release there naming this one's).
            let named: Vec<(String, String)> = store
                .releases(project, None)?
                .into_iter()
                .map(|r| (r.environment, r.build))
                .collect();
            let record = store.environment(project, &name)?;
            let history = History {
                exists: record.is_some(),
                active: record
                    .is_some_and(|e| e.status == launchway_store::EnvironmentStatus::Active),
                deployment: store.deployment(project, &name)?,
                releases: store.releases(project, Some(&name))?,
                builds: store.builds_page(project, Some(&name), None, usize::MAX)?,
                activities: store.activities_page(Some(project), Some(&name), None, usize::MAX)?,
            };
            let refs = ProjectRefs {
                backed_up_releases: backups.iter().map(|b| b.release.clone()).collect(),
                backup_activities: backups.iter().filter_map(|b| b.activity).collect(),
                builds_named_elsewhere: named
                    .iter()
                    .filter(|(environment, _)| *environment != name)
                    .map(|(_, build)| build.clone())
                    .collect(),
            };
            let deletions = plan(&history, &refs, rules, crate::now_ms());
            let applied = self.apply_deletions(&deletions);
            turn.finish();
            applied?;
            if !deletions.is_empty() {
                info!(
                    %project,
                    environment = %name,
                    releases = deletions.releases.len(),
                    builds = deletions.builds.len(),
                    build_logs = deletions.build_logs.len(),
                    activities = deletions.activities.len(),
                    "retention removed old history"
                );
            }
            totals.releases += deletions.releases.len();
            totals.builds += deletions.builds.len();
            totals.build_logs += deletions.build_logs.len();
            totals.activities += deletions.activities.len();
        }
        Ok(())
    }

    /// Webhook deliveries that ended (delivered or given up) more than
    /// `days` ago; pending ones always stay. Returns how many went.
    fn prune_deliveries(&self, days: u64) -> usize {
        let now = crate::now_ms();
        let Ok(deliveries) = self.store.deliveries() else {
            return 0;
        };
        let mut removed = 0;
        for delivery in deliveries {
            let ended = delivery.state != launchway_store::DeliveryState::Pending;
            let at = delivery.delivered_at.unwrap_or(delivery.created_at);
            if ended
                && older_than(at, days, now)
                && self.store.delete_delivery(delivery.seq).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    /// Releases first (a build or activity a crash leaves behind is judged
    /// again next pass), then builds, logs and activities.
    fn apply_deletions(&self, deletions: &Deletions) -> Result<(), launchway_store::StoreError> {
        for id in &deletions.releases {
            self.store.delete_release(id)?;
        }
        for id in &deletions.builds {
            self.store.delete_build(id)?;
        }
        for id in &deletions.build_logs {
            self.store.delete_build_log(id)?;
        }
        for id in &deletions.activities {
            self.store.delete_activity(*id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use launchway_store::ActivityKind;

    const NOW: u64 = 100 * DAY_MS;

    fn release(n: u64, status: ReleaseStatus) -> Release {
        Release {
            id: format!("R{n}"),
            project: "p".into(),
            environment: "main".into(),
            build: format!("B{n}"),
            commit: String::new(),
            created_at: n * DAY_MS,
            description: String::new(),
            status,
            spec: serde_json::Value::Null,
            activity: Some(n),
            variables: Vec::new(),
            config: serde_json::Value::Null,
        }
    }

    fn build(n: u64, status: BuildStatus) -> Build {
        Build {
            id: format!("B{n}"),
            project: "p".into(),
            environment: "main".into(),
            commit: String::new(),
            apps: Vec::new(),
            status,
            release: Some(format!("R{n}")),
            started_at: n * DAY_MS,
            elapsed_ms: None,
            description: String::new(),
            activity: Some(n),
            imported_from: None,
        }
    }

    fn activity(n: u64, state: ActivityState) -> Activity {
        let mut activity = Activity::new(n, "p", "main", ActivityKind::Push, "", n * DAY_MS);
        activity.state = state;
        activity.completed_at = Some(n * DAY_MS);
        activity
    }

    /// Ten pushes (1..=10, newest first), release 10 serving after 9.
    fn history() -> History {
        let mut releases: Vec<Release> = (1..=10)
            .rev()
            .map(|n| release(n, ReleaseStatus::Superseded))
            .collect();
        releases[0].status = ReleaseStatus::Active;
        History {
            exists: true,
            active: true,
            deployment: Some(Deployment {
                project: "p".into(),
                environment: "main".into(),
                release: "R10".into(),
                previous: Some("R9".into()),
                phase: "released".into(),
                containers: Vec::new(),
                updated_at: 0,
            }),
            releases,
            builds: (1..=10)
                .rev()
                .map(|n| build(n, BuildStatus::Complete))
                .collect(),
            activities: (1..=10)
                .rev()
                .map(|n| activity(n, ActivityState::Complete))
                .collect(),
        }
    }

    fn rules() -> Rules {
        Rules {
            activities_days: 0,
            releases_per_environment: 3,
            build_logs_days: 0,
            keep_builds: 2,
        }
    }

    #[test]
    fn beyond_the_floor_only_what_nothing_names_goes() {
        let mut history = history();
        // An old release promoted back would be active; one a backup names;
        // one waiting for promotion (the newest pending).
        history.releases[7].status = ReleaseStatus::Pending; // R3
        history.releases[8].status = ReleaseStatus::Pending; // R2
        let refs = ProjectRefs {
            backed_up_releases: ["R5".to_owned()].into(),
            backup_activities: [1].into(),
            builds_named_elsewhere: ["B6".to_owned()].into(),
        };
        let deletions = plan(&history, &refs, &rules(), NOW);
        assert_eq!(deletions.releases, ["R7", "R6", "R4", "R2", "R1"]);
        // B6 is named by another environment's release.
        assert_eq!(deletions.builds, ["B7", "B4", "B2", "B1"]);
        // Old logs go except those of the serving release and its previous.
        assert_eq!(deletions.build_logs, ["B8", "B6", "B5", "B3"]);
        // Activities of kept releases and builds, and a backup's, stay.
        assert_eq!(deletions.activities, [7, 4, 2]);
    }

    #[test]
    fn age_protects_within_its_days_and_unfinished_work_always() {
        let mut history = history();
        history.activities[9].state = ActivityState::InProgress; // activity 1
        history.builds[9].status = BuildStatus::Running; // B1
        let rules = Rules {
            activities_days: 95,
            build_logs_days: 95,
            ..rules()
        };
        let deletions = plan(&history, &ProjectRefs::default(), &rules, NOW);
        assert_eq!(
            deletions.releases,
            ["R7", "R6", "R5", "R4", "R3", "R2", "R1"]
        );
        // B1 runs; B5..B10 are younger than 95 days (days 5..10 of 100).
        assert_eq!(deletions.builds, ["B4", "B3", "B2"]);
        assert!(deletions.build_logs.is_empty());
        assert_eq!(deletions.activities, [4, 3, 2]);
    }

    #[test]
    fn a_deleted_environment_keeps_only_what_is_referenced() {
        let mut history = history();
        history.exists = false;
        history.active = false;
        history.deployment = None;
        history.releases[0].status = ReleaseStatus::Superseded;
        let refs = ProjectRefs {
            backed_up_releases: ["R2".to_owned()].into(),
            ..ProjectRefs::default()
        };
        let deletions = plan(&history, &refs, &rules(), NOW);
        assert_eq!(deletions.releases.len(), 9);
        assert!(!deletions.releases.contains(&"R2".to_owned()));
        assert_eq!(deletions.builds.len(), 9);
        assert_eq!(deletions.activities.len(), 9);
    }

    #[test]
    fn nothing_goes_under_the_defaults_in_a_young_project() {
        let rules = Rules {
            activities_days: 30,
            releases_per_environment: 20,
            build_logs_days: 30,
            keep_builds: 2,
        };
        let deletions = plan(&history(), &ProjectRefs::default(), &rules, 12 * DAY_MS);
        assert_eq!(deletions, Deletions::default());
    }
}
