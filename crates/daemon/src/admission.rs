//! Authorization at the entry of every operation, whatever door it came
//! through: the admin socket marks its requests [`Principal::Operator`], the
//! HTTP API marks them with the token it authenticated, and each RPC starts
//! with [`ApiService::admit`], which resolves the request's [`Target`] from
//! the state and asks [`launchway_ops::authorize`] (the one table).
//!
//! A request without a principal is refused (fail closed: a door that
//! forgot to say who is asking gets nothing). A target of a project the
//! principal may not see answers exactly as a missing one.

use launchway_api::proto;
use launchway_ops::{ActionKind, Denied, Need, Principal, Target, authorize};
use tonic::{Request, Status};

use crate::api::{ApiService, internal};
use crate::{Daemon, now_ms};

/// What an operation acts on, resolved for one principal.
pub(crate) struct Resolver<'a> {
    daemon: &'a Daemon,
    who: &'a Principal,
}

impl Resolver<'_> {
    fn hidden_project(name: &str) -> Status {
        Status::not_found(format!("there is no project `{name}`"))
    }

    /// A project the principal may see (else: the missing project's answer).
    pub(crate) fn project(&self, name: &str) -> Result<Target, Status> {
        if name.is_empty() {
            return Ok(Target::host());
        }
        if !self.who.sees_project(name) {
            return Err(Self::hidden_project(name));
        }
        self.daemon.existing_project(name)?;
        Ok(Target::project(name))
    }

    /// An environment (which need not exist yet: the operation says so
    /// itself); `""` is the project as a whole.
    pub(crate) fn environment(&self, project: &str, environment: &str) -> Result<Target, Status> {
        let mut target = self.project(project)?;
        if environment.is_empty() || target.project.is_none() {
            return Ok(target);
        }
        let default_branch = self.daemon.existing_project(project)?.default_branch;
        target.default_environment = environment == default_branch;
        target.environment = Some(environment.to_owned());
        Ok(target)
    }

    fn owned(&self, project: &str, environment: &str, missing: String) -> Result<Target, Status> {
        if !self.who.sees_project(project) {
            return Err(Status::not_found(missing));
        }
        self.environment(project, environment)
    }

    pub(crate) fn build(&self, id: &str) -> Result<Target, Status> {
        let missing = format!("there is no build {id}");
        let build = self
            .daemon
            .store
            .build(id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(missing.clone()))?;
        self.owned(&build.project, &build.environment, missing)
    }

    pub(crate) fn release(&self, id: &str) -> Result<Target, Status> {
        let missing = format!("there is no release {id}");
        let release = self
            .daemon
            .store
            .release(id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(missing.clone()))?;
        self.owned(&release.project, &release.environment, missing)
    }

    pub(crate) fn activity(&self, id: u64) -> Result<Target, Status> {
        let missing = format!("there is no activity {id}");
        let activity = self
            .daemon
            .store
            .activity(id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(missing.clone()))?;
        self.owned(&activity.project, &activity.environment, missing)
    }

    /// `CancelActivity` names an activity or a build.
    fn activity_or_build(&self, id: &str) -> Result<Target, Status> {
        if crate::builds::is_build_id(id) {
            self.build(id)
        } else if let Ok(number) = id.parse::<u64>() {
            self.activity(number)
        } else {
            Err(Status::invalid_argument(format!(
                "`{id}` is neither an activity number nor a build id"
            )))
        }
    }

    fn backup(&self, project: &str, id: &str, to_environment: &str) -> Result<Target, Status> {
        self.project(project)?;
        let backup = self
            .daemon
            .store
            .backup(project, id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("there is no backup {id} in {project}")))?;
        let environment = if to_environment.is_empty() {
            backup.environment
        } else {
            to_environment.to_owned()
        };
        self.environment(project, &environment)
    }

    fn token(&self, id: &str) -> Result<Target, Status> {
        let missing = || Status::not_found(format!("no token `{id}`"));
        let token = self
            .daemon
            .store
            .tokens(self.who.project())
            .map_err(internal)?
            .into_iter()
            .find(|token| token.id == id.trim())
            .ok_or_else(missing)?;
        self.project(&token.project)
    }

    fn webhook(&self, id: &str) -> Result<Target, Status> {
        let missing = format!("there is no webhook {id}");
        let webhook = self
            .daemon
            .store
            .webhook(id.trim())
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(missing.clone()))?;
        if !self.who.sees_project(&webhook.project) {
            return Err(Status::not_found(missing));
        }
        self.project(&webhook.project)
    }

    /// The environment a merge changes: the child's parent.
    fn merge(&self, project: &str, child: &str) -> Result<Target, Status> {
        self.project(project)?;
        let parent = self
            .daemon
            .existing_environment(project, child)?
            .parent
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "environment `{child}` has no parent to merge into"
                ))
            })?;
        self.environment(project, &parent)
    }
}

/// A request of one operation, and what it acts on.
pub(crate) trait Targeted {
    const KIND: ActionKind;
    fn target(&self, resolve: &Resolver<'_>) -> Result<Target, Status>;
}

macro_rules! targeted {
    ($($request:ident => $kind:ident, |$this:ident, $resolve:ident| $body:expr;)*) => {
        $(impl Targeted for proto::$request {
            const KIND: ActionKind = ActionKind::$kind;
            fn target(&self, $resolve: &Resolver<'_>) -> Result<Target, Status> {
                let $this = self;
                $body
            }
        })*
    };
}

targeted! {
    ServerInfoRequest => ServerInfo, |_r, _x| Ok(Target::host());
    CreateProjectRequest => CreateProject, |_r, _x| Ok(Target::host());
    ListProjectsRequest => ListProjects, |_r, _x| Ok(Target::host());
    GetProjectRequest => GetProject, |r, x| x.project(&r.project);
    DeleteProjectRequest => DeleteProject, |_r, _x| Ok(Target::host());
    SetProjectSettingRequest => SetProjectSetting, |r, x| x.project(&r.project);
    AddKeyRequest => AddKey, |r, x| x.project(&r.project);
    ListKeysRequest => ListKeys, |r, x| x.project(&r.project);
    RemoveKeyRequest => RemoveKey, |r, x| x.project(&r.project);
    PlanRequest => Plan, |r, x| x.project(&r.project);
    ListActivitiesRequest => ListActivities, |r, x| x.environment(&r.project, &r.environment);
    ActivityLogRequest => ActivityLog, |r, x| x.activity(r.id);
    FollowActivityRequest => FollowActivity, |r, x| x.activity(r.id);
    CancelActivityRequest => CancelActivity, |r, x| x.activity_or_build(&r.id);
    ListRuntimesRequest => ListRuntimes, |_r, _x| Ok(Target::host());
    BuildRuntimeRequest => BuildRuntime, |_r, _x| Ok(Target::host());
    ImportRuntimeRequest => ImportRuntime, |_r, _x| Ok(Target::host());
    ListBuildsRequest => ListBuilds, |r, x| x.project(&r.project);
    GetBuildRequest => GetBuild, |r, x| x.build(&r.id);
    BuildLogsRequest => BuildLogs, |r, x| x.build(&r.id);
    StartBuildRequest => StartBuild, |r, x| {
        let project = x.project(&r.project)?;
        if r.branch.is_empty() && project.project.is_some() {
            let default_branch = x.daemon.existing_project(&r.project)?.default_branch;
            x.environment(&r.project, &default_branch)
        } else {
            x.environment(&r.project, &r.branch)
        }
    };
    ExportBuildRequest => ExportBuild, |r, x| x.build(&r.id);
    ClearBuildCacheRequest => ClearBuildCache, |r, x| x.project(&r.project);
    CollectGarbageRequest => CollectGarbage, |_r, _x| Ok(Target::host());
    ListReleasesRequest => ListReleases, |r, x| x.environment(&r.project, &r.environment);
    GetReleaseRequest => GetRelease, |r, x| x.release(&r.id);
    PromoteReleaseRequest => PromoteRelease, |r, x| x.release(&r.id);
    AppLogsRequest => AppLogs, |r, x| x.environment(&r.project, &r.environment);
    ListEnvironmentsRequest => ListEnvironments, |r, x| x.project(&r.project);
    ActivateEnvironmentRequest => ActivateEnvironment, |r, x| x.environment(&r.project, &r.environment);
    SyncEnvironmentRequest => SyncEnvironment, |r, x| x.environment(&r.project, &r.environment);
    DeleteServiceDataRequest => DeleteServiceData, |r, x| x.environment(&r.project, &r.environment);
    ListVariablesRequest => ListVariables, |r, x| x.environment(&r.project, &r.environment);
    SetVariableRequest => SetVariable, |r, x| x.environment(&r.project, &r.environment);
    DeleteVariableRequest => DeleteVariable, |r, x| x.environment(&r.project, &r.environment);
    RunCronRequest => RunCron, |r, x| x.environment(&r.project, &r.environment);
    CreateBackupRequest => CreateBackup, |r, x| x.environment(&r.project, &r.environment);
    ListBackupsRequest => ListBackups, |r, x| x.environment(&r.project, &r.environment);
    RestoreBackupRequest => RestoreBackup, |r, x| x.backup(&r.project, &r.id, &r.to_environment);
    AddCertificateRequest => AddCertificate, |_r, _x| Ok(Target::host());
    RemoveCertificateRequest => RemoveCertificate, |_r, _x| Ok(Target::host());
    RenewCertificateRequest => RenewCertificate, |_r, _x| Ok(Target::host());
    ListCertificatesRequest => ListCertificates, |r, x| x.environment(&r.project, &r.environment);
    CreateTokenRequest => CreateToken, |r, x| x.project(&r.project);
    ListTokensRequest => ListTokens, |r, x| x.project(&r.project);
    RevokeTokenRequest => RevokeToken, |r, x| x.token(&r.id);
    CreateWebhookRequest => CreateWebhook, |r, x| x.project(&r.project);
    ListWebhooksRequest => ListWebhooks, |r, x| x.project(&r.project);
    DeleteWebhookRequest => DeleteWebhook, |r, x| x.webhook(&r.id);
    ListWebhookDeliveriesRequest => ListWebhookDeliveries, |r, x| x.project(&r.project);
    ListBuildersRequest => ListBuilders, |_r, _x| Ok(Target::host());
    CreateBuilderTokenRequest => CreateBuilderToken, |_r, _x| Ok(Target::host());
    RemoveBuilderRequest => RemoveBuilder, |_r, _x| Ok(Target::host());
}

/// A request type several operations share (`EnvironmentRequest`,
/// `BackupRequest`): its target depends on the operation.
pub(crate) trait SharedTargeted {
    fn target_for(&self, kind: ActionKind, resolve: &Resolver<'_>) -> Result<Target, Status>;
}

impl SharedTargeted for proto::EnvironmentRequest {
    fn target_for(&self, kind: ActionKind, resolve: &Resolver<'_>) -> Result<Target, Status> {
        if kind == ActionKind::MergeEnvironment {
            resolve.merge(&self.project, &self.environment)
        } else {
            resolve.environment(&self.project, &self.environment)
        }
    }
}

impl SharedTargeted for proto::BackupRequest {
    fn target_for(&self, _: ActionKind, resolve: &Resolver<'_>) -> Result<Target, Status> {
        resolve.backup(&self.project, &self.id, "")
    }
}

/// The principal a door attached to a request.
pub(crate) fn principal<R>(request: &Request<R>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the request names no caller"))
}

impl ApiService {
    /// Authorizes a request of a single-operation type; the principal is
    /// returned for operations that filter what they answer.
    pub(crate) fn admit<R: Targeted>(&self, request: &Request<R>) -> Result<Principal, Status> {
        let who = principal(request)?;
        self.check(&who, R::KIND, |resolve| request.get_ref().target(resolve))?;
        Ok(who)
    }

    /// Authorizes one of the operations that share a request type.
    pub(crate) fn admit_as<R: SharedTargeted>(
        &self,
        kind: ActionKind,
        request: &Request<R>,
    ) -> Result<Principal, Status> {
        let who = principal(request)?;
        self.check(&who, kind, |resolve| {
            request.get_ref().target_for(kind, resolve)
        })?;
        Ok(who)
    }

    /// Authorizes `kind` on a target resolved by `target` (client-streamed
    /// requests name theirs in their first message).
    pub(crate) fn check(
        &self,
        who: &Principal,
        kind: ActionKind,
        target: impl FnOnce(&Resolver<'_>) -> Result<Target, Status>,
    ) -> Result<(), Status> {
        self.daemon.check_action(who, kind, target)
    }
}

impl Daemon {
    /// Authorizes `kind` for `who` on a target resolved by `target`: the
    /// one check every door (the socket, HTTP, the console, SSH) goes through.
    pub(crate) fn check_action(
        &self,
        who: &Principal,
        kind: ActionKind,
        target: impl FnOnce(&Resolver<'_>) -> Result<Target, Status>,
    ) -> Result<(), Status> {
        // The operator may do everything: its requests keep exactly the
        // answers they had before doors existed (no lookups added).
        if *who == Principal::Operator {
            return Ok(());
        }
        // Host-wide operations are refused before anything is looked up,
        // as the table orders them.
        if kind.need() == Need::Operator {
            return authorize(who, kind, &Target::host(), now_ms())
                .map_err(|denied| Status::permission_denied(denied.to_string()));
        }
        let resolver = Resolver { daemon: self, who };
        let target = target(&resolver)?;
        authorize(who, kind, &target, now_ms()).map_err(|denied| match denied {
            Denied::Hidden => Status::not_found(match &target.project {
                Some(project) => format!("there is no project `{project}`"),
                None => "not found".to_owned(),
            }),
            Denied::Expired => Status::unauthenticated(denied.to_string()),
            other => Status::permission_denied(other.to_string()),
        })
    }
}
