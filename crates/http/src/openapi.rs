//! The OpenAPI description of `/api/v1`, generated from the route table and
//! the messages' own types, committed as `api-schema/openapi.json` and
//! checked for drift by a test (rerun with `LAUNCHWAY_UPDATE_SNAPSHOTS=1`,
//! or `make schema`, after a change, and review the diff: it is an API
//! change).

use launchway_api::proto;
use launchway_ops::ActionKind;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::routes::{ROUTES, Shape};

/// The request message and the reply (or stream item) of an operation.
fn register<Request: JsonSchema, Reply: JsonSchema>(
    generator: &mut SchemaGenerator,
) -> (String, Value) {
    generator.subschema_for::<Request>();
    let reply = generator.subschema_for::<Reply>();
    (Request::schema_name().into_owned(), reply.to_value())
}

macro_rules! messages {
    ($($kind:ident => $request:ident -> $reply:ident,)*) => {
        fn messages(kind: ActionKind, generator: &mut SchemaGenerator) -> Option<(String, Value)> {
            match kind {
                $(ActionKind::$kind => Some(register::<proto::$request, proto::$reply>(generator)),)*
                _ => None,
            }
        }
    };
}

messages! {
    ServerInfo => ServerInfoRequest -> ServerInfoReply,
    CreateProject => CreateProjectRequest -> ProjectInfo,
    ListProjects => ListProjectsRequest -> ProjectList,
    GetProject => GetProjectRequest -> ProjectInfo,
    SetProjectSetting => SetProjectSettingRequest -> ProjectInfo,
    AddKey => AddKeyRequest -> KeyInfo,
    ListKeys => ListKeysRequest -> KeyList,
    RemoveKey => RemoveKeyRequest -> RemoveKeyReply,
    Plan => PlanRequest -> PlanReply,
    ListActivities => ListActivitiesRequest -> ActivityList,
    ActivityLog => ActivityLogRequest -> ActivityLogReply,
    FollowActivity => FollowActivityRequest -> LogEntry,
    CancelActivity => CancelActivityRequest -> CancelActivityReply,
    ListRuntimes => ListRuntimesRequest -> RuntimeList,
    BuildRuntime => BuildRuntimeRequest -> RuntimeProgress,
    ImportRuntime => ImportRuntimeRequest -> RuntimeInfo,
    ListBuilds => ListBuildsRequest -> BuildList,
    GetBuild => GetBuildRequest -> BuildInfo,
    BuildLogs => BuildLogsRequest -> LogChunk,
    StartBuild => StartBuildRequest -> LogChunk,
    UploadSource => SourceChunk -> LogChunk,
    ExportBuild => ExportBuildRequest -> DataChunk,
    ClearBuildCache => ClearBuildCacheRequest -> ClearBuildCacheReply,
    CollectGarbage => CollectGarbageRequest -> CollectGarbageReply,
    ListReleases => ListReleasesRequest -> ReleaseList,
    GetRelease => GetReleaseRequest -> ReleaseInfo,
    PromoteRelease => PromoteReleaseRequest -> LogChunk,
    AppLogs => AppLogsRequest -> LogChunk,
    ListEnvironments => ListEnvironmentsRequest -> EnvironmentList,
    ActivateEnvironment => ActivateEnvironmentRequest -> LogChunk,
    DeleteProject => DeleteProjectRequest -> LogChunk,
    DeactivateEnvironment => EnvironmentRequest -> LogChunk,
    DeleteEnvironment => EnvironmentRequest -> LogChunk,
    Deploy => EnvironmentRequest -> LogChunk,
    Redeploy => EnvironmentRequest -> LogChunk,
    SyncEnvironment => SyncEnvironmentRequest -> LogChunk,
    MergeEnvironment => EnvironmentRequest -> LogChunk,
    ListServices => EnvironmentRequest -> ServiceList,
    DeleteServiceData => DeleteServiceDataRequest -> LogChunk,
    ListCrons => EnvironmentRequest -> CronList,
    RunCron => RunCronRequest -> LogChunk,
    CreateBackup => CreateBackupRequest -> LogChunk,
    ListBackups => ListBackupsRequest -> BackupList,
    RestoreBackup => RestoreBackupRequest -> LogChunk,
    DeleteBackup => BackupRequest -> DeleteBackupReply,
    ExportBackup => BackupRequest -> DataChunk,
    ListVariables => ListVariablesRequest -> VariableList,
    SetVariable => SetVariableRequest -> LogChunk,
    DeleteVariable => DeleteVariableRequest -> LogChunk,
    AddCertificate => AddCertificateRequest -> CertificateInfo,
    RemoveCertificate => RemoveCertificateRequest -> RemoveCertificateReply,
    ListCertificates => ListCertificatesRequest -> CertificateList,
    RenewCertificate => RenewCertificateRequest -> RenewCertificateReply,
    CreateToken => CreateTokenRequest -> TokenInfo,
    ListTokens => ListTokensRequest -> TokenList,
    RevokeToken => RevokeTokenRequest -> RevokeTokenReply,
    CreateWebhook => CreateWebhookRequest -> WebhookInfo,
    ListWebhooks => ListWebhooksRequest -> WebhookList,
    DeleteWebhook => DeleteWebhookRequest -> DeleteWebhookReply,
    ListWebhookDeliveries => ListWebhookDeliveriesRequest -> WebhookDeliveryList,
}

/// The refusals every operation may answer, by status.
const REFUSALS: &[(&str, &str)] = &[
    ("400", "The request does not fit."),
    ("401", "No token, or a wrong, revoked or expired one."),
    ("403", "The token may not do this here."),
    ("404", "No such thing (or not one this token may see)."),
    ("409", "Not in this state."),
    ("429", "Too many failed authentications from this address."),
];

/// The whole description.
pub fn openapi() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut paths: Map<String, Value> = Map::new();
    for route in ROUTES {
        let Some((request, reply)) = messages(route.kind, &mut generator) else {
            continue;
        };
        let properties = generator
            .definitions()
            .get(&request)
            .and_then(|schema| schema.get("properties"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let in_path: Vec<&str> = route
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let mut parameters: Vec<Value> = in_path
            .iter()
            .map(|name| {
                json!({
                    "name": name, "in": "path", "required": true,
                    "schema": properties.get(*name).cloned().unwrap_or(json!({"type": "string"}))
                })
            })
            .collect();
        let rest: Map<String, Value> = properties
            .iter()
            .filter(|(name, _)| !in_path.contains(&name.as_str()))
            .map(|(name, schema)| (name.clone(), schema.clone()))
            .collect();
        let mut operation = Map::new();
        operation.insert("operationId".into(), json!(route.kind.name()));
        operation.insert(
            "x-launchway-needs".into(),
            json!(format!("{:?}", route.kind.need())),
        );
        operation.insert(
            "x-launchway-deploy-key".into(),
            json!(route.kind.deploy_key()),
        );
        if route.shape == Shape::Upload {
            parameters.extend(rest.iter().filter(|(name, _)| *name != "data").map(
                |(name, schema)| {
                    json!({"name": name, "in": "query", "required": false, "schema": schema})
                },
            ));
            operation.insert(
                "requestBody".into(),
                json!({
                    "required": true,
                    "description": "A tar of the source tree.",
                    "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}
                }),
            );
        } else if matches!(route.method, "GET" | "DELETE") {
            parameters.extend(rest.iter().map(|(name, schema)| {
                json!({"name": name, "in": "query", "required": false, "schema": schema})
            }));
        } else if !rest.is_empty() {
            operation.insert(
                "requestBody".into(),
                json!({
                    "required": false,
                    "content": {"application/json": {"schema": {
                        "type": "object", "additionalProperties": false, "properties": rest
                    }}}
                }),
            );
        }
        if route.kind == ActionKind::FollowActivity {
            parameters.push(json!({
                "name": "Last-Event-ID", "in": "header", "required": false,
                "description": "Resume after this event (the `seq` of the last entry seen).",
                "schema": {"type": "integer", "minimum": 0}
            }));
        }
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        let events = json!({"text/event-stream": {"schema": {
            "description": "Server-Sent Events; each `data:` line is one of these, as JSON. An `error` event ends the stream.",
            "allOf": [reply]
        }}});
        let mut responses = Map::new();
        match route.shape {
            Shape::Unary => {
                responses.insert(
                    "200".into(),
                    json!({"description": "Done.", "content": {"application/json": {"schema": reply}}}),
                );
            }
            Shape::Events => {
                responses.insert(
                    "200".into(),
                    json!({"description": "A stream of events.", "content": events}),
                );
            }
            Shape::Activity | Shape::Upload => {
                responses.insert(
                    "202".into(),
                    json!({
                        "description": "Started: follow the activity at the Location header.",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}
                    }),
                );
                responses.insert(
                    "200".into(),
                    json!({
                        "description": "With `Accept: text/event-stream`, the operation's output as it comes; otherwise, when no activity was needed, its whole output.",
                        "content": events
                    }),
                );
            }
            Shape::Data => {
                responses.insert(
                    "200".into(),
                    json!({"description": "The archive.", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}),
                );
            }
        }
        for (status, _) in REFUSALS {
            responses.insert(
                (*status).into(),
                json!({"$ref": format!("#/components/responses/Refused{status}")}),
            );
        }
        operation.insert("responses".into(), Value::Object(responses));
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(methods) = entry.as_object_mut() {
            methods.insert(route.method.to_ascii_lowercase(), Value::Object(operation));
        }
    }
    let mut schemas: Map<String, Value> = generator.take_definitions(true);
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
        }}}),
    );
    schemas.insert(
        "Accepted".into(),
        json!({"type": "object", "properties": {
            "activity": {"type": "integer"},
            "activities": {"type": "array", "items": {"type": "integer"}},
            "preface": {"type": "string"}
        }}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Launchway API",
            "version": "v1",
            "description": "Every operation of the launchway CLI. Authenticate with `Authorization: Bearer <token>` (`launchway token create`). Generated from the daemon's route table: do not edit."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": REFUSALS.iter().map(|(status, description)| {
                (format!("Refused{status}"), json!({
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }))
            }).collect::<Map<String, Value>>(),
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"token": []}]
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_committed_description_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../api-schema/openapi.json");
        let generated = format!("{}\n", serde_json::to_string_pretty(&openapi()).unwrap());
        if std::env::var_os("LAUNCHWAY_UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "api-schema/openapi.json is stale: run `make schema` and review the diff"
        );
    }

    #[test]
    fn every_route_is_described() {
        let description = openapi();
        for route in ROUTES {
            let operation = &description["paths"][route.path][route.method.to_ascii_lowercase()];
            assert_eq!(
                operation["operationId"],
                route.kind.name(),
                "{} {}",
                route.method,
                route.path
            );
        }
    }
}
