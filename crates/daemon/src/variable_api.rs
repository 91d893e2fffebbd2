//! `launchway variable set|list|delete`.
//!
//! A change is stored, then every active environment whose variables it
//! changes (the level it was set at, and the children that inherit it and
//! do not override it) gets an activity that builds its head and deploys
//! it: the build is reused unless a build-visible variable changed (they
//! are part of the build key), so a runtime-only change only redeploys.
//! Sensitive values are never sent back, and are masked in every log.

use std::sync::Arc;

use launchway_api::proto;
use launchway_store::{ActivityKind, EnvironmentStatus, Variable};
use tonic::Status;

use crate::Daemon;
use crate::activity::Work;
use crate::api::internal;
use crate::build_api::{LogStream, Scheduled};
use crate::variables::{Effective, check, effective};

fn variable_info(variable: &Variable, level: &str) -> proto::VariableInfo {
    proto::VariableInfo {
        name: variable.name.clone(),
        level: level.to_owned(),
        value: if variable.sensitive {
            String::new()
        } else {
            variable.value.clone()
        },
        sensitive: variable.sensitive,
        visible_build: variable.visible_build,
        visible_runtime: variable.visible_runtime,
        inheritable: variable.inheritable,
        json: variable.json,
        updated_at: variable.updated_at,
    }
}

fn level_of(environment: Option<&str>) -> String {
    environment.map_or_else(|| "project".to_owned(), |e| format!("environment {e}"))
}

impl Daemon {
    pub(crate) fn list_variables(
        &self,
        request: &proto::ListVariablesRequest,
    ) -> Result<proto::VariableList, Status> {
        self.existing_project(&request.project)?;
        let variables = if request.environment.is_empty() {
            self.store
                .variables(&request.project)
                .map_err(internal)?
                .iter()
                .filter(|v| v.environment.is_none())
                .map(|v| variable_info(v, "project"))
                .collect()
        } else {
            let env = self.existing_environment(&request.project, &request.environment)?;
            self.environment_variables(&env)
                .map_err(internal)?
                .iter()
                .map(|e| variable_info(&e.variable, &e.level))
                .collect()
        };
        Ok(proto::VariableList { variables })
    }

    /// The effective variables of every active environment of `project`.
    fn active_variables(&self, project: &str) -> Result<Vec<(String, Vec<Effective>)>, Status> {
        let all = self.store.variables(project).map_err(internal)?;
        Ok(self
            .store
            .environments(project)
            .map_err(internal)?
            .into_iter()
            .filter(|e| e.status == EnvironmentStatus::Active)
            .map(|e| {
                let chain = self.environment_chain(project, &e.name);
                (e.name, effective(&all, &chain))
            })
            .collect())
    }

    /// Stores a change, then redeploys the environments it changes.
    fn apply_variable_change(
        self: &Arc<Self>,
        project: &str,
        change: impl FnOnce() -> Result<(), Status>,
        kind: ActivityKind,
        what: String,
    ) -> Result<LogStream, Status> {
        let before = self.active_variables(project)?;
        change()?;
        let after = self.active_variables(project)?;
        let scheduled: Vec<Scheduled> = after
            .into_iter()
            .filter(|(name, now)| {
                before
                    .iter()
                    .find(|(other, _)| other == name)
                    .is_none_or(|(_, then)| then != now)
            })
            .map(|(environment, _)| Scheduled {
                project: project.to_owned(),
                description: format!("{what}; redeploying {environment}"),
                environment,
                kind,
                work: Work::DeployHead,
            })
            .collect();
        let mut preface = format!("{what}\n");
        if scheduled.is_empty() {
            preface.push_str("No active environment sees a difference: nothing to redeploy\n");
        }
        self.run_activities(preface, scheduled)
    }

    pub(crate) fn set_variable(
        self: &Arc<Self>,
        request: &proto::SetVariableRequest,
    ) -> Result<LogStream, Status> {
        self.existing_project(&request.project)?;
        let environment = (!request.environment.is_empty()).then_some(request.environment.as_str());
        if let Some(environment) = environment {
            self.existing_environment(&request.project, environment)?;
        }
        let existing = self
            .store
            .variable(&request.project, environment, &request.name)
            .map_err(internal)?;
        let json = request
            .json
            .or(existing.as_ref().map(|v| v.json))
            .unwrap_or(false);
        check(&request.name, &request.value, json).map_err(Status::invalid_argument)?;
        let sensitive = request.sensitive.unwrap_or(false);
        if existing.as_ref().is_some_and(|v| v.sensitive) && request.sensitive == Some(false) {
            return Err(Status::invalid_argument(format!(
                "`{}` is sensitive, which cannot be undone; delete it and set it again",
                request.name
            )));
        }
        if environment.is_none() && request.inheritable == Some(false) {
            return Err(Status::invalid_argument(
                "--inheritable applies to environment variables; project variables reach every environment",
            ));
        }
        let variable = Variable {
            project: request.project.clone(),
            environment: environment.map(str::to_owned),
            name: request.name.clone(),
            value: request.value.clone(),
            sensitive: sensitive || existing.as_ref().is_some_and(|v| v.sensitive),
            visible_build: request
                .visible_build
                .or(existing.as_ref().map(|v| v.visible_build))
                .unwrap_or(true),
            visible_runtime: request
                .visible_runtime
                .or(existing.as_ref().map(|v| v.visible_runtime))
                .unwrap_or(true),
            inheritable: request
                .inheritable
                .or(existing.as_ref().map(|v| v.inheritable))
                .unwrap_or(true),
            json,
            updated_at: crate::now_ms(),
        };
        if !variable.visible_build && !variable.visible_runtime {
            return Err(Status::invalid_argument(format!(
                "`{}` would be visible neither to builds nor at run time",
                request.name
            )));
        }
        let unchanged = existing.as_ref().is_some_and(|old| {
            Variable {
                updated_at: old.updated_at,
                ..variable.clone()
            } == *old
        });
        let level = level_of(environment);
        if unchanged {
            return self.run_activities(
                format!("Variable {} ({level}) is unchanged\n", request.name),
                Vec::new(),
            );
        }
        let verb = if existing.is_some() {
            "Updated"
        } else {
            "Created"
        };
        let what = format!("{verb} variable {} ({level})", request.name);
        let store = self.store.clone();
        self.apply_variable_change(
            &request.project,
            move || store.put_variable(&variable).map_err(internal),
            ActivityKind::VariableUpdate,
            what,
        )
    }

    pub(crate) fn delete_variable(
        self: &Arc<Self>,
        request: &proto::DeleteVariableRequest,
    ) -> Result<LogStream, Status> {
        self.existing_project(&request.project)?;
        let environment = (!request.environment.is_empty()).then_some(request.environment.as_str());
        let level = level_of(environment);
        if self
            .store
            .variable(&request.project, environment, &request.name)
            .map_err(internal)?
            .is_none()
        {
            return Err(Status::not_found(format!(
                "there is no variable `{}` ({level})",
                request.name
            )));
        }
        let store = self.store.clone();
        let project = request.project.clone();
        let name = request.name.clone();
        let environment = environment.map(str::to_owned);
        self.apply_variable_change(
            &request.project,
            move || {
                store
                    .delete_variable(&project, environment.as_deref(), &name)
                    .map(|_| ())
                    .map_err(internal)
            },
            ActivityKind::VariableDelete,
            format!("Deleted variable {} ({level})", request.name),
        )
    }
}
