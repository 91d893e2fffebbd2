//! Scheduled backups and their retention (project settings
//! `backup.schedule.<env>` and `backup.retention.<env>`, `projects.rs`).
//!
//! The cron scheduler's minute tick (`crons.rs`) also starts, for every
//! active environment whose schedule matches that minute in UTC, a backup
//! activity in the environment's queue (so it waits for a deploy, and a
//! deploy waits for it). After each scheduled backup, the environment's
//! scheduled backups the retention does not keep are deleted, except one
//! a restore or an export is reading (kept until the next pass). Backups
//! taken by hand are never deleted by a schedule.

use std::sync::Arc;
use std::time::SystemTime;

use launchway_config::Schedule;
use launchway_store::{ActivityKind, EnvironmentStatus};
use launchway_volumes::retention::{Dated, Retention};
use tracing::{info, warn};

use crate::Daemon;
use crate::activity::{Log, Work};

impl Daemon {
    /// Starts the scheduled backups due at `minute` (UTC).
    pub(crate) fn start_due_backups(self: &Arc<Self>, minute: SystemTime) {
        let Ok(timestamp) = jiff::Timestamp::try_from(minute) else {
            return;
        };
        let utc = timestamp.to_zoned(jiff::tz::TimeZone::UTC);
        let fields = (
            u32::try_from(utc.minute()).unwrap_or(u32::MAX),
            u32::try_from(utc.hour()).unwrap_or(u32::MAX),
            u32::try_from(utc.day()).unwrap_or(u32::MAX),
            u32::try_from(utc.month()).unwrap_or(u32::MAX),
            u32::try_from(utc.weekday().to_sunday_zero_offset()).unwrap_or(u32::MAX),
        );
        let Ok(projects) = self.store.projects() else {
            return;
        };
        for project in projects.into_iter().filter(|p| p.deleting.is_none()) {
            for (environment, schedule) in &project.backup_schedules {
                let seed = format!("{}/{environment}/backup", project.name);
                let Ok(parsed) = Schedule::parse(&schedule.schedule, &seed) else {
                    continue;
                };
                let (m, h, d, mo, wd) = fields;
                if !parsed.matches(m, h, d, mo, wd) {
                    continue;
                }
                let active = matches!(
                    self.store.environment(&project.name, environment),
                    Ok(Some(env)) if env.status == EnvironmentStatus::Active
                );
                if !active {
                    continue;
                }
                info!(project = %project.name, %environment, "scheduled backup");
                let scheduled = self.schedule(
                    &project.name,
                    environment,
                    ActivityKind::BackupCreate,
                    &format!("scheduled backup of {environment}"),
                    Work::Backup {
                        live: false,
                        scheduled: true,
                    },
                    None,
                );
                if let Err(error) = scheduled {
                    warn!(%error, "cannot schedule a backup");
                }
            }
        }
    }

    /// Deletes the scheduled backups of `environment` its retention does
    /// not keep (after a scheduled backup).
    pub(crate) async fn apply_retention(&self, project: &str, environment: &str, log: &Log) {
        let retention = self
            .store
            .project(project)
            .ok()
            .flatten()
            .and_then(|p| p.backup_schedules.get(environment).cloned())
            .map(|s| s.retention);
        let Some(Ok(retention)) = retention.as_deref().map(Retention::parse) else {
            return;
        };
        let Ok(backups) = self.store.backups(project, Some(environment)) else {
            return;
        };
        let scheduled: Vec<Dated> = backups
            .iter()
            .filter(|b| b.scheduled)
            .map(|b| Dated {
                id: b.id.clone(),
                created_unix: i64::try_from(b.created_at / 1000).unwrap_or(i64::MAX),
            })
            .collect();
        let keep = retention.keep(&scheduled);
        let mut removed = Vec::new();
        for backup in scheduled.iter().filter(|b| !keep.contains(&b.id)) {
            if self.backup_is_used(project, &backup.id) {
                log.line(&format!(
                    "  Backup {} is past the retention but in use; it goes at the next scheduled backup",
                    backup.id
                ))
                .await;
                continue;
            }
            match self.remove_backup(project, &backup.id).await {
                Ok(()) => removed.push(backup.id.clone()),
                Err(message) => log.line(&format!("  W: {message}")).await,
            }
        }
        if !removed.is_empty() {
            log.line(&format!(
                "  Retention ({}): deleted scheduled backup(s) {}",
                retention_text(&retention),
                removed.join(", ")
            ))
            .await;
        }
    }
}

fn retention_text(retention: &Retention) -> String {
    let mut parts = Vec::new();
    for (count, unit) in [
        (retention.daily, "daily"),
        (retention.weekly, "weekly"),
        (retention.monthly, "monthly"),
        (retention.last, "newest"),
    ] {
        if count > 0 {
            parts.push(format!("{count} {unit}"));
        }
    }
    format!("keeps {}", parts.join(", "))
}
