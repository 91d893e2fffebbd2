//! From an operation and its JSON input to a call of the service the admin
//! socket serves (the same methods, so the same authorization and logic),
//! marked with the principal the HTTP door authenticated.

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt as _};
use launchway_api::{Launchway, proto};
use launchway_ops::{ActionKind, Principal};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tonic::{Request, Status};

use crate::request::decode;

/// What an operation answered.
pub(crate) enum Reply {
    Json(Value),
    /// A server stream, each item a JSON object.
    Stream(BoxStream<'static, Result<Value, Status>>),
    Data(BoxStream<'static, Result<Bytes, Status>>),
}

fn encode(value: &impl Serialize) -> Result<Value, Status> {
    serde_json::to_value(value)
        .map_err(|error| Status::internal(format!("cannot write the answer as JSON: {error}")))
}

fn request<T>(who: &Principal, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(who.clone());
    request
}

fn input<T: DeserializeOwned + Default + Serialize>(fields: Value) -> Result<T, Status> {
    decode::<T>(fields)
}

macro_rules! dispatch {
    (
        $service:ident, $kind:ident, $who:ident, $fields:ident;
        unary { $($uk:ident => $um:ident($ut:ident),)* }
        stream { $($sk:ident => $sm:ident($st:ident),)* }
        data { $($dk:ident => $dm:ident($dt:ident),)* }
        environment { $($ek:ident => $em:ident,)* }
    ) => {
        match $kind {
            $(ActionKind::$uk => {
                let message: proto::$ut = input($fields)?;
                let answer = $service.$um(request($who, message)).await?.into_inner();
                Ok(Reply::Json(encode(&answer)?))
            })*
            $(ActionKind::$sk => {
                let message: proto::$st = input($fields)?;
                let answer = $service.$sm(request($who, message)).await?.into_inner();
                Ok(Reply::Stream(
                    answer.map(|item| item.and_then(|chunk| encode(&chunk))).boxed(),
                ))
            })*
            $(ActionKind::$dk => {
                let message: proto::$dt = input($fields)?;
                let answer = $service.$dm(request($who, message)).await?.into_inner();
                Ok(Reply::Data(
                    answer.map(|item| item.map(|chunk| Bytes::from(chunk.data))).boxed(),
                ))
            })*
            $(ActionKind::$ek => {
                let message: proto::EnvironmentRequest = input($fields)?;
                let answer = $service.$em(request($who, message)).await?.into_inner();
                Ok(Reply::Stream(
                    answer.map(|item| item.and_then(|chunk| encode(&chunk))).boxed(),
                ))
            })*
            other => Err(Status::unimplemented(format!(
                "{} is not offered over HTTP",
                other.name()
            ))),
        }
    };
}

/// Runs `kind` with `fields` (the request's path, query and body merged)
/// as `who`.
pub(crate) async fn call<S: Launchway>(
    service: &S,
    kind: ActionKind,
    who: &Principal,
    fields: Value,
) -> Result<Reply, Status> {
    // `ListServices` and `ListCrons` answer one object: their own arm.
    match kind {
        ActionKind::ListServices => {
            let message: proto::EnvironmentRequest = input(fields)?;
            let answer = service.list_services(request(who, message)).await?;
            return Ok(Reply::Json(encode(&answer.into_inner())?));
        }
        ActionKind::ListCrons => {
            let message: proto::EnvironmentRequest = input(fields)?;
            let answer = service.list_crons(request(who, message)).await?;
            return Ok(Reply::Json(encode(&answer.into_inner())?));
        }
        ActionKind::DeleteBackup => {
            let message: proto::BackupRequest = input(fields)?;
            let answer = service.delete_backup(request(who, message)).await?;
            return Ok(Reply::Json(encode(&answer.into_inner())?));
        }
        ActionKind::ExportBackup => {
            let message: proto::BackupRequest = input(fields)?;
            let answer = service.export_backup(request(who, message)).await?;
            return Ok(Reply::Data(
                answer
                    .into_inner()
                    .map(|item| item.map(|chunk| Bytes::from(chunk.data)))
                    .boxed(),
            ));
        }
        _ => {}
    }
    dispatch! {
        service, kind, who, fields;
        unary {
            ServerInfo => server_info(ServerInfoRequest),
            CreateProject => create_project(CreateProjectRequest),
            ListProjects => list_projects(ListProjectsRequest),
            GetProject => get_project(GetProjectRequest),
            SetProjectSetting => set_project_setting(SetProjectSettingRequest),
            AddKey => add_key(AddKeyRequest),
            ListKeys => list_keys(ListKeysRequest),
            RemoveKey => remove_key(RemoveKeyRequest),
            Plan => plan(PlanRequest),
            ListActivities => list_activities(ListActivitiesRequest),
            ActivityLog => activity_log(ActivityLogRequest),
            CancelActivity => cancel_activity(CancelActivityRequest),
            ListRuntimes => list_runtimes(ListRuntimesRequest),
            ImportRuntime => import_runtime(ImportRuntimeRequest),
            ListBuilds => list_builds(ListBuildsRequest),
            GetBuild => get_build(GetBuildRequest),
            ClearBuildCache => clear_build_cache(ClearBuildCacheRequest),
            CollectGarbage => collect_garbage(CollectGarbageRequest),
            ListReleases => list_releases(ListReleasesRequest),
            GetRelease => get_release(GetReleaseRequest),
            ListEnvironments => list_environments(ListEnvironmentsRequest),
            ListVariables => list_variables(ListVariablesRequest),
            ListBackups => list_backups(ListBackupsRequest),
            AddCertificate => add_certificate(AddCertificateRequest),
            RemoveCertificate => remove_certificate(RemoveCertificateRequest),
            ListCertificates => list_certificates(ListCertificatesRequest),
            RenewCertificate => renew_certificate(RenewCertificateRequest),
            CreateToken => create_token(CreateTokenRequest),
            ListTokens => list_tokens(ListTokensRequest),
            RevokeToken => revoke_token(RevokeTokenRequest),
            CreateWebhook => create_webhook(CreateWebhookRequest),
            ListWebhooks => list_webhooks(ListWebhooksRequest),
            DeleteWebhook => delete_webhook(DeleteWebhookRequest),
            ListWebhookDeliveries => list_webhook_deliveries(ListWebhookDeliveriesRequest),
        }
        stream {
            FollowActivity => follow_activity(FollowActivityRequest),
            BuildRuntime => build_runtime(BuildRuntimeRequest),
            BuildLogs => build_logs(BuildLogsRequest),
            StartBuild => start_build(StartBuildRequest),
            PromoteRelease => promote_release(PromoteReleaseRequest),
            AppLogs => app_logs(AppLogsRequest),
            ActivateEnvironment => activate_environment(ActivateEnvironmentRequest),
            DeleteProject => delete_project(DeleteProjectRequest),
            SyncEnvironment => sync_environment(SyncEnvironmentRequest),
            DeleteServiceData => delete_service_data(DeleteServiceDataRequest),
            RunCron => run_cron(RunCronRequest),
            CreateBackup => create_backup(CreateBackupRequest),
            SetVariable => set_variable(SetVariableRequest),
            DeleteVariable => delete_variable(DeleteVariableRequest),
            RestoreBackup => restore_backup(RestoreBackupRequest),
        }
        data {
            ExportBuild => export_build(ExportBuildRequest),
        }
        environment {
            DeactivateEnvironment => deactivate_environment,
            DeleteEnvironment => delete_environment,
            Deploy => deploy,
            Redeploy => redeploy,
            MergeEnvironment => merge_environment,
        }
    }
}
