//! Project settings, changed with `launchway project set -p P KEY=VALUE`
//! and shown by `launchway project get -p P`.
//!
//! | key | values | what it does |
//! |---|---|---|
//! | `build.egress` | `none` (default), `registries` | whether build hooks reach the package registries of `[build] egress_allow` through the egress proxy |
//! | `backup.max_bytes` | a size (`20G`, `500MiB`, bytes), `none` (default) | the most the project's backups may hold together; a backup past it is refused before it starts |
//! | `backup.schedule.<env>` | a cron spec (UTC), `off` | when environment `<env>` is backed up by the schedule |
//! | `backup.retention.<env>` | `7d,4w,6m,2l` (default `7d,4w`) | which of its scheduled backups stay (d daily, w weekly, m monthly, l the newest N); the rest are deleted after each scheduled backup; manual backups are never deleted by it |
//!
//! A setting applies from the next build; builds reused from the cache are
//! not redone (the setting is not part of the build key: a hook that built
//! with it would build the same without it, or fail).

use std::collections::BTreeMap;

use launchway_api::proto;
use launchway_store::{BuildEgress, Project, StoreError};
use tonic::Status;

use crate::api::internal;
use crate::{Daemon, now_ms};

/// Every setting key (`<env>`: an environment's name).
pub(crate) const SETTING_KEYS: &[&str] = &[
    "build.egress",
    "backup.max_bytes",
    "backup.schedule.<env>",
    "backup.retention.<env>",
];

/// The retention of a schedule set without one.
pub(crate) const DEFAULT_RETENTION: &str = "7d,4w";

/// A project's settings as `key → value`.
pub(crate) fn settings_of(project: &Project) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::from([
        (
            "build.egress".to_owned(),
            project.build_egress.as_str().to_owned(),
        ),
        (
            "backup.max_bytes".to_owned(),
            if project.backup_max_bytes == 0 {
                "none".to_owned()
            } else {
                project.backup_max_bytes.to_string()
            },
        ),
    ]);
    for (environment, schedule) in &project.backup_schedules {
        settings.insert(
            format!("backup.schedule.{environment}"),
            schedule.schedule.clone(),
        );
        settings.insert(
            format!("backup.retention.{environment}"),
            schedule.retention.clone(),
        );
    }
    settings
}

/// `20G`, `500MiB`, `1024`, `none` → bytes (0: no limit).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") || text == "0" {
        return Ok(0);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is no size: write 20G, 500MiB or a number of bytes"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "`{other}` is no size unit: use K, M, G or T (powers of 1024)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

fn parse_egress(value: &str) -> Result<BuildEgress, Status> {
    BuildEgress::ALL
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, egress)| *egress)
        .ok_or_else(|| {
            let known: Vec<&str> = BuildEgress::ALL.iter().map(|(name, _)| *name).collect();
            Status::invalid_argument(format!(
                "`{value}` is not a value of build.egress: use one of {}",
                known.join(", ")
            ))
        })
}

/// A branch name git accepts and Launchway can use as an environment name.
fn is_branch_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

/// The environment a per-environment key names.
fn environment_of(key: &str, prefix: &str) -> Result<String, Status> {
    let environment = &key[prefix.len()..];
    if environment.is_empty()
        || environment
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Status::invalid_argument(format!(
            "`{}` names no environment: write {prefix}<environment>",
            key.escape_debug()
        )));
    }
    Ok(environment.to_owned())
}

impl Daemon {
    /// `launchway project create`: a bare repository and the record.
    pub(crate) async fn create_project(
        &self,
        request: proto::CreateProjectRequest,
    ) -> Result<Project, Status> {
        let name = request.name;
        if !launchway_ssh::is_project_name(&name) {
            return Err(Status::invalid_argument(format!(
                "`{name}` is not a project name: use lowercase letters, digits and `-`, at most 63 characters, starting with a letter or digit"
            )));
        }
        let default_branch = if request.default_branch.is_empty() {
            "main".to_owned()
        } else {
            request.default_branch
        };
        if !is_branch_name(&default_branch) {
            return Err(Status::invalid_argument(format!(
                "`{default_branch}` is not a usable branch name"
            )));
        }
        if self.store.project(&name).map_err(internal)?.is_some() {
            return Err(Status::already_exists(format!(
                "project `{name}` already exists"
            )));
        }
        // Records a deletion of an earlier project of this name may have left
        // (a stop between its last two steps) must not show up in this one.
        self.store.purge_project(&name, 0).map_err(internal)?;
        let repo = self.repo_path(&name);
        // A directory left by a creation that failed halfway is replaced.
        if repo.exists() {
            std::fs::remove_dir_all(&repo)
                .map_err(|e| Status::internal(format!("cannot replace {}: {e}", repo.display())))?;
        }
        self.git
            .init_bare(&repo, &default_branch)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let project = Project {
            name: name.clone(),
            default_branch,
            created_at: now_ms(),
            service_secret: crate::services::new_secret(),
            build_egress: BuildEgress::None,
            backup_max_bytes: 0,
            backup_schedules: Default::default(),
            deleting: None,
            build_cache_generations: BTreeMap::new(),
        };
        if let Err(error) = self.store.create_project(&project) {
            let _ = std::fs::remove_dir_all(&repo);
            return Err(match error {
                StoreError::AlreadyExists { .. } => Status::already_exists(error.to_string()),
                other => internal(other),
            });
        }
        Ok(project)
    }

    /// Sets `key` to `value` on `project`; nothing changes when either is
    /// not known.
    pub(crate) fn set_project_setting(
        &self,
        project: &str,
        key: &str,
        value: &str,
    ) -> Result<Project, Status> {
        let invalid = |message: String| Status::invalid_argument(format!("{key}: {message}"));
        let change: Box<dyn Fn(&mut Project)> = match key {
            "build.egress" => {
                let egress = parse_egress(value)?;
                Box::new(move |p: &mut Project| p.build_egress = egress)
            }
            "backup.max_bytes" => {
                let bytes = parse_size(value).map_err(invalid)?;
                Box::new(move |p: &mut Project| p.backup_max_bytes = bytes)
            }
            _ if key.starts_with("backup.schedule.") => {
                let environment = environment_of(key, "backup.schedule.")?;
                let value = value.trim().to_owned();
                if value != "off" {
                    launchway_config::Schedule::parse(&value, &environment)
                        .map_err(|e| invalid(e.to_string()))?;
                }
                Box::new(move |p: &mut Project| {
                    if value == "off" {
                        p.backup_schedules.remove(&environment);
                    } else {
                        let entry = p.backup_schedules.entry(environment.clone()).or_default();
                        entry.schedule = value.clone();
                        if entry.retention.is_empty() {
                            DEFAULT_RETENTION.clone_into(&mut entry.retention);
                        }
                    }
                })
            }
            _ if key.starts_with("backup.retention.") => {
                let environment = environment_of(key, "backup.retention.")?;
                let value = value.trim().to_owned();
                launchway_volumes::retention::Retention::parse(&value).map_err(invalid)?;
                let exists = self
                    .store
                    .project(project)
                    .map_err(internal)?
                    .is_some_and(|p| p.backup_schedules.contains_key(&environment));
                if !exists {
                    return Err(Status::failed_precondition(format!(
                        "environment {environment} has no backup schedule: set backup.schedule.{environment} first"
                    )));
                }
                Box::new(move |p: &mut Project| {
                    if let Some(entry) = p.backup_schedules.get_mut(&environment) {
                        entry.retention = value.clone();
                    }
                })
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "`{key}` is not a project setting: the settings are {}",
                    SETTING_KEYS.join(", ")
                )));
            }
        };
        self.store
            .update_project(project, |record| change(record))
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("there is no project `{project}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::{is_branch_name, parse_size};

    #[test]
    fn branch_names() {
        for good in ["main", "feature/x", "release-1.2", "a_b"] {
            assert!(is_branch_name(good), "{good}");
        }
        for bad in ["", "-x", "a..b", "a b", "x.lock", "/x", "x/", "a@{b", "ä"] {
            assert!(!is_branch_name(bad), "{bad}");
        }
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("none"), Ok(0));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("3 kb"), Ok(3 << 10));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
