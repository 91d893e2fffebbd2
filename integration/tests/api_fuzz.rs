//! Randomized admin API requests (issue 8): every RPC a client can call,
//! with random fields, against a daemon that has a project, a key, an
//! environment, a build and a release. Reads get random everything; calls
//! that change something always carry one invalid name (a NUL, a space, a
//! newline, `../` or a non-ASCII letter), so each must be refused. The
//! daemon must answer every call with a status a user can act on (never
//! `internal` or `unknown`, always a message), keep running, log no panic,
//! and end with exactly the state it started with. The seed is printed so a
//! failure can be replayed (`LAUNCHWAY_FUZZ_SEED`). The same holds for
//! random `launchway` command lines (2 000 of them).
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use launchway_api::proto;
use launchway_integration::{Daemon, Work};
use rand::{Rng, RngExt as _};
use tonic::Code;

const REQUESTS: usize = 20_000;

const CONFIG: &str = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        mkdir -p public
        echo hello > public/index.html
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
"#;

const FRAGMENTS: &[&str] = &[
    "a",
    "Z",
    "0",
    "9",
    "-",
    "_",
    ".",
    ":",
    "/",
    "=",
    "shop",
    "main",
    "env:",
    "..",
    "../",
    "\0",
    " ",
    "\n",
    "\t",
    "é",
    "💥",
    "'",
    "\"",
    "\\",
    "$(",
    "`",
    "%",
    "*",
    "refs/heads/",
    "@{",
    "~",
];

/// What makes any name invalid, wherever it is used.
const INVALID: &[&str] = &["\0", " ", "\n", "../", "é", "\t"];

fn text(rng: &mut impl Rng, max: usize) -> String {
    let len = rng.random_range(0..max);
    let mut text: String = (0..len)
        .map(|_| FRAGMENTS[rng.random_range(0..FRAGMENTS.len())])
        .collect();
    if rng.random_ratio(1, 50) {
        // Oversized.
        text.push_str(&"x".repeat(rng.random_range(1_000..200_000)));
    }
    text
}

/// Random text with an invalid piece somewhere.
fn invalid(rng: &mut impl Rng) -> String {
    let value = text(rng, 12);
    with_one_of(value, INVALID, rng)
}

/// `value` with one of `pieces` inserted at a random place.
fn with_one_of(value: String, pieces: &[&str], rng: &mut impl Rng) -> String {
    let mut chars: Vec<char> = value.chars().collect();
    let at = rng.random_range(0..=chars.len());
    let piece = pieces[rng.random_range(0..pieces.len())];
    chars.splice(at..at, piece.chars());
    chars.into_iter().collect()
}
/// A project: the real one or random text.
fn project(rng: &mut impl Rng) -> String {
    if rng.random_bool(0.5) {
        "shop".to_owned()
    } else {
        text(rng, 8)
    }
}

/// An environment: the real one or random text.
fn environment(rng: &mut impl Rng) -> String {
    if rng.random_bool(0.5) {
        "main".to_owned()
    } else {
        text(rng, 8)
    }
}

type Client = launchway_api::LaunchwayClient<tonic::transport::Channel>;

/// Drains a stream of replies; its error, if any.
async fn drain<T>(
    reply: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
) -> Result<(), tonic::Status> {
    let mut stream = reply?.into_inner();
    while stream.message().await?.is_some() {}
    Ok(())
}

/// One read with random fields.
async fn read(
    client: &mut Client,
    rng: &mut impl Rng,
) -> (&'static str, Result<(), tonic::Status>) {
    match rng.random_range(0..21) {
        20 => (
            "ListBuilders",
            client
                .list_builders(proto::ListBuildersRequest {})
                .await
                .map(drop),
        ),
        18 => {
            let request = proto::ListCertificatesRequest {
                project: text(rng, 8),
                environment: environment(rng),
            };
            (
                "ListCertificates",
                client.list_certificates(request).await.map(drop),
            )
        }
        19 => {
            let request = proto::ListTokensRequest {
                project: text(rng, 8),
            };
            ("ListTokens", client.list_tokens(request).await.map(drop))
        }
        17 => (
            "GetProject",
            client
                .get_project(proto::GetProjectRequest {
                    project: project(rng),
                })
                .await
                .map(drop),
        ),
        0 => (
            "ListProjects",
            client
                .list_projects(proto::ListProjectsRequest {})
                .await
                .map(drop),
        ),
        1 => {
            let request = proto::ListKeysRequest {
                project: project(rng),
            };
            ("ListKeys", client.list_keys(request).await.map(drop))
        }
        2 => {
            let request = proto::ListEnvironmentsRequest {
                project: project(rng),
            };
            (
                "ListEnvironments",
                client.list_environments(request).await.map(drop),
            )
        }
        3 => {
            let request = proto::ListVariablesRequest {
                project: project(rng),
                environment: environment(rng),
            };
            (
                "ListVariables",
                client.list_variables(request).await.map(drop),
            )
        }
        4 => {
            let request = proto::ListActivitiesRequest {
                project: project(rng),
                environment: environment(rng),
                limit: rng.random(),
                cursor: text(rng, 12),
            };
            (
                "ListActivities",
                client.list_activities(request).await.map(drop),
            )
        }
        5 => {
            let request = proto::ActivityLogRequest {
                id: rng.random_range(0..20),
            };
            ("ActivityLog", client.activity_log(request).await.map(drop))
        }
        6 => {
            let request = proto::ListBuildsRequest {
                project: project(rng),
                limit: rng.random(),
                cursor: text(rng, 12),
            };
            ("ListBuilds", client.list_builds(request).await.map(drop))
        }
        7 => {
            let request = proto::GetBuildRequest { id: text(rng, 12) };
            ("GetBuild", client.get_build(request).await.map(drop))
        }
        8 => {
            let request = proto::BuildLogsRequest {
                id: text(rng, 12),
                follow: false,
            };
            ("BuildLogs", drain(client.build_logs(request).await).await)
        }
        9 => {
            let request = proto::ListReleasesRequest {
                project: project(rng),
                environment: environment(rng),
                limit: rng.random(),
                cursor: text(rng, 12),
            };
            (
                "ListReleases",
                client.list_releases(request).await.map(drop),
            )
        }
        10 => {
            let request = proto::GetReleaseRequest { id: text(rng, 12) };
            ("GetRelease", client.get_release(request).await.map(drop))
        }
        11 => {
            let request = proto::PlanRequest {
                project: project(rng),
                r#ref: text(rng, 12),
            };
            ("Plan", client.plan(request).await.map(drop))
        }
        12 => {
            let request = proto::ExportBuildRequest { id: text(rng, 12) };
            (
                "ExportBuild",
                drain(client.export_build(request).await).await,
            )
        }
        14 => {
            let request = proto::EnvironmentRequest {
                project: project(rng),
                environment: environment(rng),
                force: false,
            };
            (
                "ListServices",
                client.list_services(request).await.map(drop),
            )
        }
        15 => {
            let start = proto::ServiceClientRequest {
                project: project(rng),
                environment: environment(rng),
                app: text(rng, 6),
                relationship: text(rng, 6),
                mode: ["sql", "dump", "redis", ""][rng.random_range(0..4)].to_owned(),
                command: rng.random_bool(0.5).then(|| text(rng, 12)),
                args: vec![text(rng, 6)],
            };
            // Now and then the first message is stdin, not what to run.
            let first = if rng.random_ratio(1, 4) {
                proto::service_client_input::Input::Stdin(text(rng, 8).into_bytes())
            } else {
                proto::service_client_input::Input::Start(start)
            };
            let inputs = tokio_stream::iter(vec![proto::ServiceClientInput { input: Some(first) }]);
            (
                "ServiceClient",
                drain(client.service_client(inputs).await).await,
            )
        }
        13 => (
            "ServerInfo",
            client
                .server_info(proto::ServerInfoRequest {})
                .await
                .map(drop),
        ),
        _ => {
            let request = proto::AppLogsRequest {
                project: project(rng),
                environment: environment(rng),
                app: text(rng, 6),
                follow: false,
                ..Default::default()
            };
            ("AppLogs", drain(client.app_logs(request).await).await)
        }
    }
}

/// One call that would change something, with one invalid name.
async fn write(
    client: &mut Client,
    rng: &mut impl Rng,
) -> (&'static str, Result<(), tonic::Status>) {
    match rng.random_range(0..26) {
        25 => {
            let request = proto::RemoveBuilderRequest { name: invalid(rng) };
            (
                "RemoveBuilder",
                client.remove_builder(request).await.map(drop),
            )
        }
        19 => {
            let request = proto::AddCertificateRequest {
                pattern: invalid(rng),
                chain_pem: text(rng, 80),
                key_pem: text(rng, 80),
            };
            (
                "AddCertificate",
                client.add_certificate(request).await.map(drop),
            )
        }
        20 => {
            let request = proto::RemoveCertificateRequest {
                pattern: invalid(rng),
            };
            (
                "RemoveCertificate",
                client.remove_certificate(request).await.map(drop),
            )
        }
        21 => {
            let request = proto::RenewCertificateRequest { host: invalid(rng) };
            (
                "RenewCertificate",
                client.renew_certificate(request).await.map(drop),
            )
        }
        22 => {
            let request = proto::CreateTokenRequest {
                project: invalid(rng),
                role: text(rng, 8),
                environment: environment(rng),
                expires: text(rng, 4),
                name: text(rng, 8),
                deploy_key: rng.random(),
            };
            ("CreateToken", client.create_token(request).await.map(drop))
        }
        23 => {
            let request = proto::RevokeTokenRequest { id: invalid(rng) };
            ("RevokeToken", client.revoke_token(request).await.map(drop))
        }
        24 => {
            let request = proto::DeleteProjectRequest {
                project: invalid(rng),
            };
            (
                "DeleteProject",
                drain(client.delete_project(request).await).await,
            )
        }
        18 => {
            let request = proto::SetProjectSettingRequest {
                project: project(rng),
                key: if rng.random() {
                    "build.egress".to_owned()
                } else {
                    invalid(rng)
                },
                value: invalid(rng),
            };
            (
                "SetProjectSetting",
                client.set_project_setting(request).await.map(drop),
            )
        }
        0 => {
            let request = proto::CreateProjectRequest {
                name: invalid(rng),
                default_branch: text(rng, 8),
            };
            (
                "CreateProject",
                client.create_project(request).await.map(drop),
            )
        }
        1 => {
            let request = proto::AddKeyRequest {
                project: invalid(rng),
                role: text(rng, 8),
                public_key: text(rng, 80),
            };
            ("AddKey", client.add_key(request).await.map(drop))
        }
        2 => {
            let request = proto::RemoveKeyRequest {
                project: project(rng),
                key: invalid(rng),
            };
            ("RemoveKey", client.remove_key(request).await.map(drop))
        }
        3 => {
            let request = proto::ActivateEnvironmentRequest {
                project: project(rng),
                environment: invalid(rng),
                parent: text(rng, 8),
                no_clone: rng.random(),
            };
            (
                "ActivateEnvironment",
                drain(client.activate_environment(request).await).await,
            )
        }
        4 => {
            let request = proto::EnvironmentRequest {
                project: project(rng),
                environment: invalid(rng),
                force: false,
            };
            (
                "DeactivateEnvironment",
                drain(client.deactivate_environment(request).await).await,
            )
        }
        5 => {
            let request = proto::EnvironmentRequest {
                project: project(rng),
                environment: invalid(rng),
                force: false,
            };
            (
                "DeleteEnvironment",
                drain(client.delete_environment(request).await).await,
            )
        }
        6 => {
            let request = proto::EnvironmentRequest {
                project: invalid(rng),
                environment: environment(rng),
                force: false,
            };
            ("Deploy", drain(client.deploy(request).await).await)
        }
        7 => {
            let request = proto::EnvironmentRequest {
                project: project(rng),
                environment: invalid(rng),
                force: false,
            };
            ("Redeploy", drain(client.redeploy(request).await).await)
        }
        8 => {
            let request = proto::PromoteReleaseRequest { id: invalid(rng) };
            (
                "PromoteRelease",
                drain(client.promote_release(request).await).await,
            )
        }
        9 => {
            let request = proto::SetVariableRequest {
                project: project(rng),
                environment: if rng.random_bool(0.3) {
                    String::new()
                } else {
                    environment(rng)
                },
                name: invalid(rng),
                value: text(rng, 40),
                sensitive: rng.random::<bool>().then(|| rng.random()),
                visible_build: rng.random::<bool>().then(|| rng.random()),
                visible_runtime: rng.random::<bool>().then(|| rng.random()),
                inheritable: rng.random::<bool>().then(|| rng.random()),
                json: rng.random::<bool>().then(|| rng.random()),
            };
            (
                "SetVariable",
                drain(client.set_variable(request).await).await,
            )
        }
        10 => {
            let request = proto::DeleteVariableRequest {
                project: project(rng),
                environment: environment(rng),
                name: invalid(rng),
            };
            (
                "DeleteVariable",
                drain(client.delete_variable(request).await).await,
            )
        }
        11 => {
            let request = proto::StartBuildRequest {
                project: project(rng),
                branch: invalid(rng),
            };
            ("StartBuild", drain(client.start_build(request).await).await)
        }
        12 => {
            let request = proto::CancelActivityRequest { id: invalid(rng) };
            (
                "CancelActivity",
                client.cancel_activity(request).await.map(drop),
            )
        }
        13 => {
            let request = proto::ClearBuildCacheRequest {
                project: invalid(rng),
                app: text(rng, 6),
            };
            (
                "ClearBuildCache",
                client.clear_build_cache(request).await.map(drop),
            )
        }
        14 => {
            let request = proto::ImportRuntimeRequest {
                r#type: invalid(rng),
                archive_path: text(rng, 20),
            };
            (
                "ImportRuntime",
                client.import_runtime(request).await.map(drop),
            )
        }
        16 => {
            let request = proto::BuildRuntimeRequest {
                r#type: invalid(rng),
                rebuild: rng.random(),
            };
            (
                "BuildRuntime",
                drain(client.build_runtime(request).await).await,
            )
        }
        15 => {
            let request = proto::HookRequest {
                session: invalid(rng),
                updates: (0..rng.random_range(0..3)).map(|_| text(rng, 40)).collect(),
                push_options: (0..rng.random_range(0..3)).map(|_| text(rng, 20)).collect(),
                quarantine: text(rng, 20),
            };
            if rng.random() {
                ("PreReceive", client.pre_receive(request).await.map(drop))
            } else {
                ("PostReceive", client.post_receive(request).await.map(drop))
            }
        }
        _ => {
            // An import whose first chunk names a project that cannot exist,
            // then random bytes.
            let mut chunks = vec![proto::ImportBuildChunk {
                project: invalid(rng),
                data: (0..rng.random_range(0..512))
                    .map(|_| rng.random())
                    .collect(),
            }];
            for _ in 0..rng.random_range(0..3) {
                chunks.push(proto::ImportBuildChunk {
                    project: String::new(),
                    data: (0..rng.random_range(0..4096))
                        .map(|_| rng.random())
                        .collect(),
                });
            }
            let stream = tokio_stream::iter(chunks);
            ("ImportBuild", client.import_build(stream).await.map(drop))
        }
    }
}

/// Everything the API shows of the state.
async fn state(client: &mut Client) -> String {
    let projects = client
        .list_projects(proto::ListProjectsRequest {})
        .await
        .unwrap()
        .into_inner();
    let keys = client
        .list_keys(proto::ListKeysRequest {
            project: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let environments = client
        .list_environments(proto::ListEnvironmentsRequest {
            project: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut variables = Vec::new();
    for environment in ["", "main"] {
        variables.push(
            client
                .list_variables(proto::ListVariablesRequest {
                    project: "shop".into(),
                    environment: environment.into(),
                })
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let mut activities = client
        .list_activities(proto::ListActivitiesRequest {
            project: "shop".into(),
            environment: String::new(),
            limit: 1000,
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // A map prints in any order: compare the sorted timings.
    let timings: Vec<_> = activities
        .activities
        .iter_mut()
        .map(|activity| {
            std::mem::take(&mut activity.timings_ms)
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>()
        })
        .collect();
    let builds = client
        .list_builds(proto::ListBuildsRequest {
            project: "shop".into(),
            limit: 1000,
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let releases = client
        .list_releases(proto::ListReleasesRequest {
            project: "shop".into(),
            environment: "main".into(),
            limit: 1000,
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let runtimes = client
        .list_runtimes(proto::ListRuntimesRequest {})
        .await
        .unwrap()
        .into_inner();
    // Settings are a map: printed sorted, so two reads of one state match.
    let projects: Vec<String> = projects
        .projects
        .iter()
        .map(|p| {
            let settings: std::collections::BTreeMap<_, _> = p.settings.iter().collect();
            format!(
                "{} {} {} {} {settings:?}",
                p.name, p.default_branch, p.git_remote, p.created_at
            )
        })
        .collect();
    let tokens = client
        .list_tokens(proto::ListTokensRequest::default())
        .await
        .unwrap()
        .into_inner();
    format!(
        "{projects:?}\n{tokens:?}\n{keys:?}\n{environments:?}\n{variables:?}\n{activities:?}\n{timings:?}\n{builds:?}\n{releases:?}\n{runtimes:?}"
    )
}

/// A daemon with project `shop`, a key, and main deployed from a push.
fn shop_with_a_release() -> (Daemon, Work) {
    let daemon = Daemon::start();
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", CONFIG);
    work.commit("v0");
    work.push_ok("main", &[]);
    (daemon, work)
}

#[test]
fn random_api_requests_are_answered_or_refused_and_change_nothing() {
    let (daemon, work) = shop_with_a_release();
    let mut rng = launchway_integration::fuzz_rng();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = daemon.data_dir().join("launchway.sock");
        let mut client = launchway_api::connect(&socket).await.unwrap();
        let before = state(&mut client).await;
        let mut refused = 0usize;
        for index in 0..REQUESTS {
            let changes = rng.random_bool(0.6);
            let (call, result) = if changes {
                write(&mut client, &mut rng).await
            } else {
                read(&mut client, &mut rng).await
            };
            match result {
                Ok(()) => assert!(
                    !changes,
                    "request {index}: {call} with an invalid name was accepted"
                ),
                Err(status) => {
                    refused += 1;
                    assert!(
                        !matches!(
                            status.code(),
                            Code::Internal | Code::Unknown | Code::Unavailable
                        ),
                        "request {index}: {call}: {status:?}\n{}",
                        daemon.log()
                    );
                    assert!(
                        !status.message().trim().is_empty(),
                        "request {index}: {call}: {status:?}"
                    );
                }
            }
        }
        println!("{REQUESTS} requests, {refused} refused");
        let after = state(&mut client).await;
        assert_eq!(before, after, "random requests changed the state");
    });
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    // The daemon still serves pushes.
    work.write("more", "1");
    work.commit("v1");
    work.push_ok("main", &[]);
}

/// A CLI argument: random text without NUL (no argument can hold one),
/// at most 100 000 bytes (Linux takes up to 128 KiB per argument).
fn arg(rng: &mut impl Rng) -> String {
    let mut value = text(rng, 8).replace('\0', "");
    while value.len() > 100_000 {
        value.pop();
    }
    value
}

/// A CLI argument no name can be (the invalid pieces but NUL).
fn bad_arg(rng: &mut impl Rng) -> String {
    let value = arg(rng);
    with_one_of(value, &INVALID[1..], rng)
}
/// Random `launchway` arguments: a command that changes something always
/// gets one invalid name (it must fail); reads get anything.
fn cli_args(rng: &mut impl Rng) -> (Vec<String>, bool) {
    let mut pick = |real: &str| {
        if rng.random_bool(0.5) {
            real.to_owned()
        } else {
            arg(rng)
        }
    };
    let (p, e) = (pick("shop"), pick("main"));
    let r = arg(rng);
    let bad = bad_arg(rng);
    let changes = rng.random_bool(0.6);
    let setting = format!("build.egress={bad}");
    let args: Vec<&str> = if changes {
        match rng.random_range(0..18) {
            17 => vec!["builders", "remove", &bad],
            16 => vec!["project", "set", "-p", &p, &setting],
            0 => vec!["project", "create", &bad],
            1 => vec!["keys", "add", "-p", &bad, "-r", &r, &r],
            2 => vec!["keys", "remove", "-p", &p, &bad],
            3 => vec!["activity", "cancel", &bad],
            4 => vec!["build", "-p", &bad],
            5 => vec!["deploy", "-p", &p, "-e", &bad],
            6 => vec!["redeploy", "-p", &bad, "-e", &e],
            7 => vec!["environment", "activate", "-p", &p, &bad],
            8 => vec!["environment", "deactivate", "-p", &p, &bad],
            9 => vec!["environment", "delete", "-p", &p, &bad],
            10 => vec!["variable", "set", "-p", &p, &bad, &r],
            11 => vec!["variable", "set", "-p", &p, "-e", &e, &bad, &r],
            12 => vec!["variable", "delete", "-p", &p, &bad],
            13 => vec!["releases", "promote", &bad],
            14 => vec!["runtimes", "import", &bad, &r],
            _ => vec!["builds", "import", "-p", &bad],
        }
    } else {
        match rng.random_range(0..17) {
            16 => vec!["builders"],
            15 => vec!["project", "get", "-p", &p],
            12 => vec!["sql", "-p", &p, "-e", &e, "-c", &r],
            13 => vec!["db", "dump", "-p", &p, "-e", &e, "-r", &r],
            14 => vec!["redis", "-p", &p, "-e", &e, "--", &r],
            0 => vec!["activities", "-p", &p, "-e", &e],
            1 => vec!["activity", "log", &r],
            2 => vec!["builds", "-p", &p],
            3 => vec!["builds", "export", &r],
            4 => vec!["plan", &p, &r],
            5 => vec!["environments", "-p", &p],
            6 => vec!["variable", "list", "-p", &p, "-e", &e],
            7 => vec!["releases", "-p", &p, "-e", &e],
            8 => vec!["logs", "-p", &p, "-e", &e, &r],
            9 => vec!["config", "validate", &r],
            10 => vec!["runtimes"],
            _ => vec!["project", "list"],
        }
    };
    let mut args: Vec<String> = args.into_iter().map(str::to_owned).collect();
    // Now and then a stray word or option somewhere.
    if rng.random_ratio(1, 5) {
        let stray = ["--json", "--limit", "-x", "--", "-", "--project", &r][rng.random_range(0..7)];
        let at = rng.random_range(0..=args.len());
        args.insert(at, stray.to_owned());
    }
    (args, changes)
}

#[test]
fn random_cli_arguments_get_a_message_never_a_panic_and_change_nothing() {
    let (daemon, _work) = shop_with_a_release();
    let mut rng = launchway_integration::fuzz_rng();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = daemon.data_dir().join("launchway.sock");
    let before = runtime
        .block_on(async { state(&mut launchway_api::connect(&socket).await.unwrap()).await });
    let runs = 2_000;
    let mut failed = 0;
    for index in 0..runs {
        let (args, changes) = cli_args(&mut rng);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = daemon.cli(&argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        assert!(
            code.is_some() && code != Some(101) && !stderr.contains("panicked"),
            "run {index}: launchway {args:?}: {:?}\n{stderr}",
            out.status
        );
        if changes {
            assert_ne!(code, Some(0), "run {index}: launchway {args:?} succeeded");
        }
        if code != Some(0) {
            failed += 1;
            assert!(
                !stderr.trim().is_empty(),
                "run {index}: launchway {args:?}: no message"
            );
        }
    }
    println!("{runs} command lines, {failed} refused");
    let after = runtime
        .block_on(async { state(&mut launchway_api::connect(&socket).await.unwrap()).await });
    assert_eq!(before, after, "random command lines changed the state");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}
