//! The route table: every operation the HTTP API offers, once. Requests are
//! matched here, the OpenAPI description and the authorization matrix test
//! are generated from it, and a test checks that every operation is either
//! routed or listed in [`SOCKET_ONLY`] with the reason.

use launchway_ops::ActionKind::{self, *};

/// What a route answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One JSON object.
    Unary,
    /// A long operation: `202 Accepted` with its activities and a
    /// `Location` to follow (or, asked with `Accept: text/event-stream`,
    /// the operation's output as it comes).
    Activity,
    /// Server-Sent Events, each a JSON object.
    Events,
    /// Bytes (`application/octet-stream`).
    Data,
    /// The request's body is bytes (a tar); answered as [`Shape::Activity`].
    Upload,
}

/// One route.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: &'static str,
    /// Segments in braces are the request's fields of that name.
    pub path: &'static str,
    pub kind: ActionKind,
    pub shape: Shape,
}

const fn route(method: &'static str, path: &'static str, kind: ActionKind, shape: Shape) -> Route {
    Route {
        method,
        path,
        kind,
        shape,
    }
}

use Shape::{Activity, Data, Events, Unary, Upload};

const P: &str = "/api/v1/projects/{project}";

macro_rules! at {
    ($tail:literal) => {
        concat!("/api/v1/projects/{project}", $tail)
    };
}

/// Every route of `/api/v1`.
pub const ROUTES: &[Route] = &[
    route("GET", "/api/v1/server", ServerInfo, Unary),
    route(
        "DELETE",
        "/api/v1/projects/{project}",
        DeleteProject,
        Activity,
    ),
    route("GET", "/api/v1/projects", ListProjects, Unary),
    route("POST", "/api/v1/projects", CreateProject, Unary),
    route("GET", P, GetProject, Unary),
    route("PUT", at!("/settings/{key}"), SetProjectSetting, Unary),
    route("GET", at!("/keys"), ListKeys, Unary),
    route("POST", at!("/keys"), AddKey, Unary),
    route("DELETE", at!("/keys/{key}"), RemoveKey, Unary),
    route("GET", at!("/plan"), Plan, Unary),
    route("GET", at!("/activities"), ListActivities, Unary),
    route("GET", "/api/v1/activities/{id}", ActivityLog, Unary),
    route("GET", "/api/v1/activities/{id}/log", FollowActivity, Events),
    route(
        "POST",
        "/api/v1/activities/{id}/cancel",
        CancelActivity,
        Unary,
    ),
    route("GET", "/api/v1/runtimes", ListRuntimes, Unary),
    route(
        "POST",
        "/api/v1/runtimes/{type}/build",
        BuildRuntime,
        Events,
    ),
    route(
        "POST",
        "/api/v1/runtimes/{type}/import",
        ImportRuntime,
        Unary,
    ),
    route("GET", at!("/builds"), ListBuilds, Unary),
    route("POST", at!("/builds"), StartBuild, Activity),
    route(
        "POST",
        at!("/environments/{environment}/source"),
        UploadSource,
        Upload,
    ),
    route("GET", "/api/v1/builds/{id}", GetBuild, Unary),
    route("GET", "/api/v1/builds/{id}/log", BuildLogs, Events),
    route("GET", "/api/v1/builds/{id}/export", ExportBuild, Data),
    route("DELETE", at!("/build-cache"), ClearBuildCache, Unary),
    route("POST", "/api/v1/gc", CollectGarbage, Unary),
    route("GET", at!("/releases"), ListReleases, Unary),
    route("GET", "/api/v1/releases/{id}", GetRelease, Unary),
    route(
        "POST",
        "/api/v1/releases/{id}/promote",
        PromoteRelease,
        Activity,
    ),
    route("GET", at!("/environments"), ListEnvironments, Unary),
    route(
        "DELETE",
        at!("/environments/{environment}"),
        DeleteEnvironment,
        Activity,
    ),
    route(
        "POST",
        at!("/environments/{environment}/activate"),
        ActivateEnvironment,
        Activity,
    ),
    route(
        "POST",
        at!("/environments/{environment}/deactivate"),
        DeactivateEnvironment,
        Activity,
    ),
    route(
        "POST",
        at!("/environments/{environment}/deploy"),
        Deploy,
        Activity,
    ),
    route(
        "POST",
        at!("/environments/{environment}/redeploy"),
        Redeploy,
        Activity,
    ),
    route(
        "POST",
        at!("/environments/{environment}/sync"),
        SyncEnvironment,
        Activity,
    ),
    route(
        "POST",
        at!("/environments/{environment}/merge"),
        MergeEnvironment,
        Activity,
    ),
    route(
        "GET",
        at!("/environments/{environment}/logs"),
        AppLogs,
        Events,
    ),
    route(
        "GET",
        at!("/environments/{environment}/services"),
        ListServices,
        Unary,
    ),
    route(
        "DELETE",
        at!("/environments/{environment}/services/{service}/data"),
        DeleteServiceData,
        Activity,
    ),
    route(
        "GET",
        at!("/environments/{environment}/crons"),
        ListCrons,
        Unary,
    ),
    route(
        "POST",
        at!("/environments/{environment}/crons/{name}/run"),
        RunCron,
        Activity,
    ),
    route(
        "POST",
        at!("/environments/{environment}/backups"),
        CreateBackup,
        Activity,
    ),
    route("GET", at!("/variables"), ListVariables, Unary),
    route("PUT", at!("/variables/{name}"), SetVariable, Activity),
    route("DELETE", at!("/variables/{name}"), DeleteVariable, Activity),
    route("GET", at!("/backups"), ListBackups, Unary),
    route(
        "POST",
        at!("/backups/{id}/restore"),
        RestoreBackup,
        Activity,
    ),
    route("DELETE", at!("/backups/{id}"), DeleteBackup, Unary),
    route("GET", at!("/backups/{id}/export"), ExportBackup, Data),
    route("GET", "/api/v1/certificates", ListCertificates, Unary),
    route("POST", "/api/v1/certificates", AddCertificate, Unary),
    route(
        "DELETE",
        "/api/v1/certificates/{pattern}",
        RemoveCertificate,
        Unary,
    ),
    route(
        "POST",
        "/api/v1/certificates/{host}/renew",
        RenewCertificate,
        Unary,
    ),
    route("GET", "/api/v1/tokens", ListTokens, Unary),
    route("POST", "/api/v1/tokens", CreateToken, Unary),
    route("DELETE", "/api/v1/tokens/{id}", RevokeToken, Unary),
    route("GET", at!("/webhooks"), ListWebhooks, Unary),
    route("POST", at!("/webhooks"), CreateWebhook, Unary),
    route("DELETE", "/api/v1/webhooks/{id}", DeleteWebhook, Unary),
    route(
        "GET",
        at!("/webhook-deliveries"),
        ListWebhookDeliveries,
        Unary,
    ),
];

/// Operations only the admin socket offers, and why.
pub const SOCKET_ONLY: &[(ActionKind, &str)] = &[
    (PreReceive, "a git hook of a push in progress on the server"),
    (
        PostReceive,
        "a git hook of a push in progress on the server",
    ),
    (
        ImportBuild,
        "an upload streamed in messages; not offered over HTTP yet",
    ),
    (
        ImportBackup,
        "an upload streamed in messages; not offered over HTTP yet",
    ),
    (
        ServiceClient,
        "an interactive session; from elsewhere, open a tunnel over SSH (launchway tunnel)",
    ),
    (
        RunCommand,
        "a streamed process; from elsewhere, run it over SSH: ssh PROJECT:ENVIRONMENT:APP@HOST -- COMMAND",
    ),
    (Shell, "over SSH only: ssh -t PROJECT:ENVIRONMENT:APP@HOST"),
    (
        Tunnel,
        "over SSH only: ssh -L PORT:RELATIONSHIP:PORT PROJECT:ENVIRONMENT:APP@HOST",
    ),
    (
        ListBuilders,
        "joins a host to the build pool; operator only",
    ),
    (
        CreateBuilderToken,
        "joins a host to the build pool; operator only",
    ),
    (
        RemoveBuilder,
        "joins a host to the build pool; operator only",
    ),
];

/// Why no route answers a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    NotFound,
    /// The path exists with these methods.
    Method(Vec<&'static str>),
}

/// The values of a route's braced segments, by name.
pub(crate) type PathFields = Vec<(&'static str, String)>;

/// The route of `method` and `segments` (already percent-decoded), with the
/// values of its braced segments.
pub(crate) fn find(
    method: &str,
    segments: &[String],
) -> Result<(&'static Route, PathFields), Miss> {
    let mut allowed = Vec::new();
    for route in ROUTES {
        let Some(values) = matches(route.path, segments) else {
            continue;
        };
        if route.method == method {
            return Ok((route, values));
        }
        allowed.push(route.method);
    }
    if allowed.is_empty() {
        Err(Miss::NotFound)
    } else {
        Err(Miss::Method(allowed))
    }
}

fn matches(pattern: &'static str, segments: &[String]) -> Option<PathFields> {
    let parts: Vec<&'static str> = pattern.trim_start_matches('/').split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut values = Vec::new();
    for (part, segment) in parts.into_iter().zip(segments) {
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if segment.is_empty() {
                return None;
            }
            values.push((name, segment.clone()));
        } else if part != segment {
            return None;
        }
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_routed_once_or_said_socket_only() {
        for kind in ActionKind::ALL {
            let routed = ROUTES.iter().filter(|r| r.kind == *kind).count();
            let socket = SOCKET_ONLY.iter().filter(|(k, _)| k == kind).count();
            assert_eq!(
                routed + socket,
                1,
                "{kind:?}: {routed} routes, {socket} socket-only"
            );
        }
    }

    #[test]
    fn no_two_routes_answer_the_same_request() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                let same_shape = a.path.split('/').count() == b.path.split('/').count()
                    && a.path
                        .split('/')
                        .zip(b.path.split('/'))
                        .all(|(x, y)| x == y || (x.starts_with('{') && y.starts_with('{')));
                assert!(
                    !(same_shape && a.method == b.method),
                    "{} {} and {}",
                    a.method,
                    a.path,
                    b.path
                );
            }
        }
    }

    fn segments(path: &str) -> Vec<String> {
        path.trim_start_matches('/')
            .split('/')
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn paths_match_with_their_fields() {
        let (route, values) = find(
            "POST",
            &segments("/api/v1/projects/shop/environments/main/deploy"),
        )
        .unwrap_or_else(|_| panic!("no route"));
        assert_eq!(route.kind, Deploy);
        assert_eq!(
            values,
            vec![
                ("project", "shop".to_owned()),
                ("environment", "main".to_owned())
            ]
        );
        assert_eq!(
            find("PATCH", &segments("/api/v1/projects/shop")).err(),
            Some(Miss::Method(vec!["DELETE", "GET"]))
        );
        assert_eq!(
            find("GET", &segments("/api/v1/nothing")).err(),
            Some(Miss::NotFound)
        );
    }
}
