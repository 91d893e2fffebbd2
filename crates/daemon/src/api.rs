//! The admin API served on the unix socket.

use std::sync::Arc;

use launchway_api::proto;
use launchway_store::{Project, Role};
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::Daemon;
use crate::admission::principal;
use launchway_ops::{ActionKind, Target};

/// The tonic service.
#[derive(Debug)]
pub(crate) struct ApiService {
    pub(crate) daemon: Arc<Daemon>,
}

impl ApiService {
    pub(crate) fn new(daemon: Arc<Daemon>) -> ApiService {
        ApiService { daemon }
    }
}

/// `admin`, `contributor` or `viewer`, or a refusal that says so.
pub(crate) fn parse_role(text: &str) -> Result<Role, Status> {
    Role::parse(text).ok_or_else(|| {
        Status::invalid_argument(format!(
            "`{text}` is not a role: use admin, contributor or viewer"
        ))
    })
}

/// A state error as a status (logged here, said briefly to the client).
pub(crate) fn internal(error: impl std::fmt::Display) -> Status {
    warn!(%error, "state error");
    Status::internal(format!("the daemon cannot use its state: {error}"))
}

impl ApiService {
    fn project_info(&self, project: &Project) -> proto::ProjectInfo {
        proto::ProjectInfo {
            name: project.name.clone(),
            default_branch: project.default_branch.clone(),
            git_remote: self.daemon.git_remote(&project.name),
            created_at: project.created_at,
            settings: crate::projects::settings_of(project).into_iter().collect(),
        }
    }

    /// The live push session a hook names; hooks outside one are refused.
    fn push_session(&self, token: &str) -> Result<Arc<crate::PushSession>, Status> {
        self.daemon.session(token).ok_or_else(|| {
            Status::permission_denied("this push is not a session of the running daemon")
        })
    }

    fn existing_project(&self, name: &str) -> Result<Project, Status> {
        self.daemon.existing_project(name)
    }
}

#[tonic::async_trait]
impl launchway_api::Launchway for ApiService {
    type BuildRuntimeStream = crate::runtimes::ProgressStream;
    type BuildLogsStream = crate::build_api::LogStream;
    type AppLogsStream = crate::build_api::LogStream;

    async fn list_releases(
        &self,
        request: Request<proto::ListReleasesRequest>,
    ) -> Result<Response<proto::ReleaseList>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.list_releases(&request.into_inner())?,
        ))
    }

    async fn get_release(
        &self,
        request: Request<proto::GetReleaseRequest>,
    ) -> Result<Response<proto::ReleaseInfo>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.get_release(&request.into_inner().id)?,
        ))
    }

    async fn app_logs(
        &self,
        request: Request<proto::AppLogsRequest>,
    ) -> Result<Response<Self::AppLogsStream>, Status> {
        self.admit(&request)?;
        Ok(Response::new(self.daemon.app_logs(&request.into_inner())?))
    }
    type ExportBuildStream = crate::build_api::DataStream;
    type StartBuildStream = crate::build_api::LogStream;

    async fn list_builds(
        &self,
        request: Request<proto::ListBuildsRequest>,
    ) -> Result<Response<proto::BuildList>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        Ok(Response::new(self.daemon.list_builds(&request)?))
    }

    async fn get_build(
        &self,
        request: Request<proto::GetBuildRequest>,
    ) -> Result<Response<proto::BuildInfo>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.get_build(&request.into_inner().id)?,
        ))
    }

    async fn build_logs(
        &self,
        request: Request<proto::BuildLogsRequest>,
    ) -> Result<Response<Self::BuildLogsStream>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        Ok(Response::new(
            self.daemon.build_logs(&request.id, request.follow)?,
        ))
    }

    async fn export_build(
        &self,
        request: Request<proto::ExportBuildRequest>,
    ) -> Result<Response<Self::ExportBuildStream>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.export_build_stream(&request.into_inner().id)?,
        ))
    }

    async fn import_build(
        &self,
        request: Request<tonic::Streaming<proto::ImportBuildChunk>>,
    ) -> Result<Response<proto::BuildInfo>, Status> {
        // Imports name their project inside the stream: the socket's
        // operator only, until a door streams them.
        self.check(&principal(&request)?, ActionKind::ImportBuild, |_| {
            Ok(Target::host())
        })?;
        Ok(Response::new(
            self.daemon
                .import_build_stream(request.into_inner())
                .await?,
        ))
    }

    type UploadSourceStream = crate::build_api::LogStream;

    async fn upload_source(
        &self,
        request: Request<tonic::Streaming<proto::SourceChunk>>,
    ) -> Result<Response<Self::UploadSourceStream>, Status> {
        self.receive_upload_stream(request).await
    }

    async fn start_build(
        &self,
        request: Request<proto::StartBuildRequest>,
    ) -> Result<Response<Self::StartBuildStream>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        Ok(Response::new(
            self.daemon.start_build(&request.project, &request.branch)?,
        ))
    }

    async fn cancel_activity(
        &self,
        request: Request<proto::CancelActivityRequest>,
    ) -> Result<Response<proto::CancelActivityReply>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.cancel_activity(&request.into_inner().id)?,
        ))
    }

    async fn clear_build_cache(
        &self,
        request: Request<proto::ClearBuildCacheRequest>,
    ) -> Result<Response<proto::ClearBuildCacheReply>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        Ok(Response::new(
            self.daemon
                .clear_build_cache(&request.project, &request.app)
                .await?,
        ))
    }

    async fn collect_garbage(
        &self,
        request: Request<proto::CollectGarbageRequest>,
    ) -> Result<Response<proto::CollectGarbageReply>, Status> {
        self.admit(&request)?;
        Ok(Response::new(self.daemon.garbage().await?))
    }

    type ActivateEnvironmentStream = crate::build_api::LogStream;
    type DeactivateEnvironmentStream = crate::build_api::LogStream;
    type DeleteProjectStream = crate::build_api::LogStream;
    type DeleteServiceDataStream = crate::build_api::LogStream;
    type DeleteEnvironmentStream = crate::build_api::LogStream;
    type DeployStream = crate::build_api::LogStream;
    type RedeployStream = crate::build_api::LogStream;
    type PromoteReleaseStream = crate::build_api::LogStream;
    type RunCronStream = crate::build_api::LogStream;
    type SetVariableStream = crate::build_api::LogStream;
    type CreateBackupStream = crate::build_api::LogStream;
    type SyncEnvironmentStream = crate::build_api::LogStream;
    type MergeEnvironmentStream = crate::build_api::LogStream;
    type RestoreBackupStream = crate::build_api::LogStream;
    type ExportBackupStream = crate::build_api::DataStream;
    type DeleteVariableStream = crate::build_api::LogStream;

    async fn sync_environment(
        &self,
        request: Request<proto::SyncEnvironmentRequest>,
    ) -> Result<Response<Self::SyncEnvironmentStream>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.sync_environment(&request.into_inner())?,
        ))
    }

    async fn merge_environment(
        &self,
        request: Request<proto::EnvironmentRequest>,
    ) -> Result<Response<Self::MergeEnvironmentStream>, Status> {
        self.admit_as(ActionKind::MergeEnvironment, &request)?;
        Ok(Response::new(
            self.daemon.merge_environment(&request.into_inner())?,
        ))
    }

    async fn create_backup(
        &self,
        request: Request<proto::CreateBackupRequest>,
    ) -> Result<Response<Self::CreateBackupStream>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.create_backup(&request.into_inner())?,
        ))
    }

    async fn list_backups(
        &self,
        request: Request<proto::ListBackupsRequest>,
    ) -> Result<Response<proto::BackupList>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.list_backups(&request.into_inner())?,
        ))
    }

    async fn restore_backup(
        &self,
        request: Request<proto::RestoreBackupRequest>,
    ) -> Result<Response<Self::RestoreBackupStream>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.restore_backup(&request.into_inner())?,
        ))
    }

    async fn delete_backup(
        &self,
        request: Request<proto::BackupRequest>,
    ) -> Result<Response<proto::DeleteBackupReply>, Status> {
        self.admit_as(ActionKind::DeleteBackup, &request)?;
        let request = request.into_inner();
        self.daemon
            .delete_backup(&request.project, &request.id)
            .await?;
        Ok(Response::new(proto::DeleteBackupReply {}))
    }

    async fn export_backup(
        &self,
        request: Request<proto::BackupRequest>,
    ) -> Result<Response<Self::ExportBackupStream>, Status> {
        self.admit_as(ActionKind::ExportBackup, &request)?;
        Ok(Response::new(
            self.daemon.export_backup_stream(&request.into_inner())?,
        ))
    }

    async fn import_backup(
        &self,
        request: Request<tonic::Streaming<proto::ImportBuildChunk>>,
    ) -> Result<Response<proto::BackupInfo>, Status> {
        // Imports name their project inside the stream: the socket's
        // operator only, until a door streams them.
        self.check(&principal(&request)?, ActionKind::ImportBackup, |_| {
            Ok(Target::host())
        })?;
        Ok(Response::new(
            self.daemon
                .import_backup_stream(request.into_inner())
                .await?,
        ))
    }

    async fn list_environments(
        &self,
        request: Request<proto::ListEnvironmentsRequest>,
    ) -> Result<Response<proto::EnvironmentList>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon
                .list_environments(&request.into_inner().project)?,
        ))
    }

    async fn list_services(
        &self,
        request: Request<proto::EnvironmentRequest>,
    ) -> Result<Response<proto::ServiceList>, Status> {
        self.admit_as(ActionKind::ListServices, &request)?;
        let request = request.into_inner();
        let environment = self
            .daemon
            .existing_environment(&request.project, &request.environment)?;
        let services = self.daemon.list_services(&environment).await;
        Ok(Response::new(proto::ServiceList {
            services: services
                .into_iter()
                .map(|service| proto::ServiceInfo {
                    name: service.name,
                    asked: service.asked,
                    running: service.running,
                    status: service.status.to_owned(),
                    disk_bytes: service.disk_bytes,
                    restarts: service.restarts,
                })
                .collect(),
        }))
    }

    async fn delete_service_data(
        &self,
        request: Request<proto::DeleteServiceDataRequest>,
    ) -> Result<Response<Self::DeleteServiceDataStream>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.delete_service_data(&request.into_inner())?,
        ))
    }

    type ServiceClientStream = crate::service_client::ServiceClientStream;

    async fn service_client(
        &self,
        request: Request<tonic::Streaming<proto::ServiceClientInput>>,
    ) -> Result<Response<Self::ServiceClientStream>, Status> {
        self.run_service_client(request).await
    }

    type RunCommandStream = crate::service_client::ServiceClientStream;

    async fn run_command(
        &self,
        request: Request<proto::RunCommandRequest>,
    ) -> Result<Response<Self::RunCommandStream>, Status> {
        self.run_command_rpc(request).await
    }

    async fn activate_environment(
        &self,
        request: Request<proto::ActivateEnvironmentRequest>,
    ) -> Result<Response<Self::ActivateEnvironmentStream>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.activate_environment(&request.into_inner())?,
        ))
    }

    async fn delete_project(
        &self,
        request: Request<proto::DeleteProjectRequest>,
    ) -> Result<Response<Self::DeleteProjectStream>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.delete_project(&request.into_inner().project)?,
        ))
    }

    async fn deactivate_environment(
        &self,
        request: Request<proto::EnvironmentRequest>,
    ) -> Result<Response<Self::DeactivateEnvironmentStream>, Status> {
        self.admit_as(ActionKind::DeactivateEnvironment, &request)?;
        Ok(Response::new(
            self.daemon
                .remove_environment(&request.into_inner(), false)?,
        ))
    }

    async fn delete_environment(
        &self,
        request: Request<proto::EnvironmentRequest>,
    ) -> Result<Response<Self::DeleteEnvironmentStream>, Status> {
        self.admit_as(ActionKind::DeleteEnvironment, &request)?;
        Ok(Response::new(
            self.daemon
                .remove_environment(&request.into_inner(), true)?,
        ))
    }

    async fn deploy(
        &self,
        request: Request<proto::EnvironmentRequest>,
    ) -> Result<Response<Self::DeployStream>, Status> {
        self.admit_as(ActionKind::Deploy, &request)?;
        Ok(Response::new(
            self.daemon
                .deploy_environment(&request.into_inner(), false)?,
        ))
    }

    async fn redeploy(
        &self,
        request: Request<proto::EnvironmentRequest>,
    ) -> Result<Response<Self::RedeployStream>, Status> {
        self.admit_as(ActionKind::Redeploy, &request)?;
        Ok(Response::new(
            self.daemon
                .deploy_environment(&request.into_inner(), true)?,
        ))
    }

    async fn promote_release(
        &self,
        request: Request<proto::PromoteReleaseRequest>,
    ) -> Result<Response<Self::PromoteReleaseStream>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.promote_release(&request.into_inner().id)?,
        ))
    }

    async fn list_variables(
        &self,
        request: Request<proto::ListVariablesRequest>,
    ) -> Result<Response<proto::VariableList>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.list_variables(&request.into_inner())?,
        ))
    }

    async fn set_variable(
        &self,
        request: Request<proto::SetVariableRequest>,
    ) -> Result<Response<Self::SetVariableStream>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.set_variable(&request.into_inner())?,
        ))
    }

    async fn list_crons(
        &self,
        request: Request<proto::EnvironmentRequest>,
    ) -> Result<Response<proto::CronList>, Status> {
        self.admit_as(ActionKind::ListCrons, &request)?;
        Ok(Response::new(
            self.daemon.list_crons(&request.into_inner())?,
        ))
    }

    async fn run_cron(
        &self,
        request: Request<proto::RunCronRequest>,
    ) -> Result<Response<Self::RunCronStream>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.run_cron_now(&request.into_inner())?,
        ))
    }

    async fn delete_variable(
        &self,
        request: Request<proto::DeleteVariableRequest>,
    ) -> Result<Response<Self::DeleteVariableStream>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.delete_variable(&request.into_inner())?,
        ))
    }

    async fn list_runtimes(
        &self,
        request: Request<proto::ListRuntimesRequest>,
    ) -> Result<Response<proto::RuntimeList>, Status> {
        self.admit(&request)?;
        Ok(Response::new(self.daemon.list_runtimes().await?))
    }

    async fn build_runtime(
        &self,
        request: Request<proto::BuildRuntimeRequest>,
    ) -> Result<Response<Self::BuildRuntimeStream>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        Ok(Response::new(
            self.daemon.build_runtime(request.r#type, request.rebuild),
        ))
    }

    async fn import_runtime(
        &self,
        request: Request<proto::ImportRuntimeRequest>,
    ) -> Result<Response<proto::RuntimeInfo>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        Ok(Response::new(
            self.daemon
                .import_runtime(&request.r#type, &request.archive_path)
                .await?,
        ))
    }

    async fn create_project(
        &self,
        request: Request<proto::CreateProjectRequest>,
    ) -> Result<Response<proto::ProjectInfo>, Status> {
        self.admit(&request)?;
        let project = self.daemon.create_project(request.into_inner()).await?;
        Ok(Response::new(self.project_info(&project)))
    }

    async fn server_info(
        &self,
        request: Request<proto::ServerInfoRequest>,
    ) -> Result<Response<proto::ServerInfoReply>, Status> {
        self.admit(&request)?;
        Ok(Response::new(self.daemon.server_info().to_proto()))
    }

    async fn add_certificate(
        &self,
        request: Request<proto::AddCertificateRequest>,
    ) -> Result<Response<proto::CertificateInfo>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.add_certificate(&request.into_inner())?,
        ))
    }

    async fn remove_certificate(
        &self,
        request: Request<proto::RemoveCertificateRequest>,
    ) -> Result<Response<proto::RemoveCertificateReply>, Status> {
        self.admit(&request)?;
        self.daemon
            .remove_certificate(&request.into_inner().pattern)?;
        Ok(Response::new(proto::RemoveCertificateReply {}))
    }

    async fn list_certificates(
        &self,
        request: Request<proto::ListCertificatesRequest>,
    ) -> Result<Response<proto::CertificateList>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.list_certificates(&request.into_inner())?,
        ))
    }

    async fn create_token(
        &self,
        request: Request<proto::CreateTokenRequest>,
    ) -> Result<Response<proto::TokenInfo>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.create_token(&request.into_inner())?,
        ))
    }

    async fn list_tokens(
        &self,
        request: Request<proto::ListTokensRequest>,
    ) -> Result<Response<proto::TokenList>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.list_tokens(&request.into_inner().project)?,
        ))
    }

    async fn revoke_token(
        &self,
        request: Request<proto::RevokeTokenRequest>,
    ) -> Result<Response<proto::RevokeTokenReply>, Status> {
        self.admit(&request)?;
        self.daemon.revoke_token(&request.into_inner().id)?;
        Ok(Response::new(proto::RevokeTokenReply {}))
    }

    async fn renew_certificate(
        &self,
        request: Request<proto::RenewCertificateRequest>,
    ) -> Result<Response<proto::RenewCertificateReply>, Status> {
        self.admit(&request)?;
        self.daemon.renew_certificate(&request.into_inner().host)?;
        Ok(Response::new(proto::RenewCertificateReply {}))
    }

    async fn list_projects(
        &self,
        request: Request<proto::ListProjectsRequest>,
    ) -> Result<Response<proto::ProjectList>, Status> {
        let who = self.admit(&request)?;
        let projects = self.daemon.store.projects().map_err(internal)?;
        Ok(Response::new(proto::ProjectList {
            projects: projects
                .iter()
                .filter(|project| who.sees_project(&project.name))
                .map(|p| self.project_info(p))
                .collect(),
        }))
    }

    async fn get_project(
        &self,
        request: Request<proto::GetProjectRequest>,
    ) -> Result<Response<proto::ProjectInfo>, Status> {
        self.admit(&request)?;
        let project = self.existing_project(&request.into_inner().project)?;
        Ok(Response::new(self.project_info(&project)))
    }

    async fn set_project_setting(
        &self,
        request: Request<proto::SetProjectSettingRequest>,
    ) -> Result<Response<proto::ProjectInfo>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        let project =
            self.daemon
                .set_project_setting(&request.project, &request.key, &request.value)?;
        Ok(Response::new(self.project_info(&project)))
    }

    async fn add_key(
        &self,
        request: Request<proto::AddKeyRequest>,
    ) -> Result<Response<proto::KeyInfo>, Status> {
        self.admit(&request)?;
        Ok(Response::new(self.daemon.add_key(&request.into_inner())?))
    }

    async fn list_keys(
        &self,
        request: Request<proto::ListKeysRequest>,
    ) -> Result<Response<proto::KeyList>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.list_keys(&request.into_inner().project)?,
        ))
    }

    async fn remove_key(
        &self,
        request: Request<proto::RemoveKeyRequest>,
    ) -> Result<Response<proto::RemoveKeyReply>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.remove_key(&request.into_inner())?,
        ))
    }

    async fn plan(
        &self,
        request: Request<proto::PlanRequest>,
    ) -> Result<Response<proto::PlanReply>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        Ok(Response::new(
            self.daemon
                .plan_ref(&request.project, request.r#ref)
                .await?,
        ))
    }

    async fn list_activities(
        &self,
        request: Request<proto::ListActivitiesRequest>,
    ) -> Result<Response<proto::ActivityList>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.list_activities(&request.into_inner())?,
        ))
    }

    async fn activity_log(
        &self,
        request: Request<proto::ActivityLogRequest>,
    ) -> Result<Response<proto::ActivityLogReply>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.activity_log(request.into_inner().id)?,
        ))
    }

    async fn create_webhook(
        &self,
        request: Request<proto::CreateWebhookRequest>,
    ) -> Result<Response<proto::WebhookInfo>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.create_webhook(request.get_ref())?,
        ))
    }

    async fn list_webhooks(
        &self,
        request: Request<proto::ListWebhooksRequest>,
    ) -> Result<Response<proto::WebhookList>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.list_webhooks(&request.get_ref().project)?,
        ))
    }

    async fn delete_webhook(
        &self,
        request: Request<proto::DeleteWebhookRequest>,
    ) -> Result<Response<proto::DeleteWebhookReply>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.delete_webhook(&request.get_ref().id)?,
        ))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<proto::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<proto::WebhookDeliveryList>, Status> {
        self.admit(&request)?;
        Ok(Response::new(
            self.daemon.list_deliveries(request.get_ref())?,
        ))
    }

    async fn list_builders(
        &self,
        request: Request<proto::ListBuildersRequest>,
    ) -> Result<Response<proto::BuilderList>, Status> {
        self.admit(&request)?;
        let builders = self
            .daemon
            .list_builders()?
            .into_iter()
            .map(|row| proto::BuilderInfo {
                name: row.name,
                address: row.address,
                slots: row.slots,
                running: row.running,
                last_seen_at: row.last_seen_at,
                connected: row.connected,
            })
            .collect();
        Ok(Response::new(proto::BuilderList { builders }))
    }

    async fn create_builder_token(
        &self,
        request: Request<proto::CreateBuilderTokenRequest>,
    ) -> Result<Response<proto::BuilderToken>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        // 0: the defaults, an hour and one builder.
        let expires_secs = match request.expires_secs {
            0 => 3600,
            secs => secs,
        };
        let uses = match request.uses {
            0 => 1,
            uses => uses,
        };
        let (token, expires_at) = self.daemon.create_builder_token(expires_secs, uses)?;
        Ok(Response::new(proto::BuilderToken { token, expires_at }))
    }

    async fn remove_builder(
        &self,
        request: Request<proto::RemoveBuilderRequest>,
    ) -> Result<Response<proto::RemoveBuilderReply>, Status> {
        self.admit(&request)?;
        let name = request.into_inner().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("name the builder to remove"));
        }
        self.daemon.remove_builder(&name)?;
        Ok(Response::new(proto::RemoveBuilderReply {}))
    }

    type FollowActivityStream = crate::activity_views::FollowStream;

    async fn follow_activity(
        &self,
        request: Request<proto::FollowActivityRequest>,
    ) -> Result<Response<Self::FollowActivityStream>, Status> {
        self.admit(&request)?;
        let request = request.into_inner();
        Ok(Response::new(
            self.daemon.follow_activity(request.id, request.after)?,
        ))
    }

    async fn pre_receive(
        &self,
        request: Request<proto::HookRequest>,
    ) -> Result<Response<proto::HookReply>, Status> {
        self.check(&principal(&request)?, ActionKind::PreReceive, |_| {
            Ok(Target::host())
        })?;
        let request = request.into_inner();
        let session = self.push_session(&request.session)?;
        let accept = self
            .daemon
            .pre_receive(
                &session,
                &request.updates,
                &request.push_options,
                &request.quarantine,
            )
            .await;
        Ok(Response::new(proto::HookReply { accept }))
    }

    async fn post_receive(
        &self,
        request: Request<proto::HookRequest>,
    ) -> Result<Response<proto::HookReply>, Status> {
        self.check(&principal(&request)?, ActionKind::PostReceive, |_| {
            Ok(Target::host())
        })?;
        let request = request.into_inner();
        let session = self.push_session(&request.session)?;
        let accept = self
            .daemon
            .post_receive(&session, &request.updates, &request.push_options)
            .await;
        Ok(Response::new(proto::HookReply { accept }))
    }
}
