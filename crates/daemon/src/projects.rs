//! Project settings, changed with `launchway project set -p P KEY=VALUE`
//! and shown by `launchway project get -p P`.
//!
//! | key | values | what it does |
//! |---|---|---|
//! | `build.egress` | `none` (default), `registries` | whether build hooks reach the package registries of `[build] egress_allow` through the egress proxy |
//!
//! A setting applies from the next build; builds reused from the cache are
//! not redone (the setting is not part of the build key: a hook that built
//! with it would build the same without it, or fail).

use std::collections::BTreeMap;

use launchway_store::{BuildEgress, Project};
use tonic::Status;

use crate::Daemon;
use crate::api::internal;

/// Every setting key.
pub(crate) const SETTING_KEYS: &[&str] = &["build.egress"];

/// A project's settings as `key → value`.
pub(crate) fn settings_of(project: &Project) -> BTreeMap<String, String> {
    BTreeMap::from([(
        "build.egress".to_owned(),
        project.build_egress.as_str().to_owned(),
    )])
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

impl Daemon {
    /// Sets `key` to `value` on `project`; nothing changes when either is
    /// not known.
    pub(crate) fn set_project_setting(
        &self,
        project: &str,
        key: &str,
        value: &str,
    ) -> Result<Project, Status> {
        let change: Box<dyn Fn(&mut Project)> = match key {
            "build.egress" => {
                let egress = parse_egress(value)?;
                Box::new(move |p: &mut Project| p.build_egress = egress)
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
