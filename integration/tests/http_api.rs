//! The HTTP API end to end (issue 23): real curl over HTTPS against a real
//! daemon. Every route of the API's own table is tried by every kind of
//! token, and the answer must be what the one authorization table says;
//! long operations answer 202 and their logs stream as Server-Sent Events
//! that resume from `Last-Event-ID` with nothing lost or repeated.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Command;

use launchway_integration::{Daemon, Work, pause};
use launchway_ops::{Access, ActionKind, Denied, Principal, Role, Target, authorize};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One answer: status, headers (lower-case names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// `curl` to the API (`-k`: the daemon's self-signed certificate).
fn curl(
    address: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
    extra: &[&str],
) -> Answer {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let out_body = dir.path().join("body");
    let mut command = Command::new("curl");
    command
        .args(["-sk", "--http1.1", "--noproxy", "*", "--max-time", "20"])
        .args(["-X", method, "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&out_body)
        .arg(format!("https://{address}{path}"));
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    if let Some(body) = body {
        command.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    command.args(extra);
    let out = command.output().unwrap();
    let head = std::fs::read_to_string(&headers).unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no answer to {method} {path}: {}", text(&out.stderr)));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let bytes = std::fs::read(&out_body).unwrap_or_default();
    let body = if bytes.len() > 1 << 20 {
        format!("({} bytes)", bytes.len())
    } else {
        text(&bytes)
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// The events of a Server-Sent Events body: (id, event name, data).
fn events(body: &str) -> Vec<(Option<u64>, Option<String>, serde_json::Value)> {
    body.split("\n\n")
        .filter(|block| block.lines().any(|l| l.starts_with("data: ")))
        .map(|block| {
            let mut id = None;
            let mut name = None;
            let mut data = serde_json::Value::Null;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).unwrap();
                }
            }
            (id, name, data)
        })
        .collect()
}

/// The log text a followed activity's events carry.
fn log_of(events: &[(Option<u64>, Option<String>, serde_json::Value)]) -> String {
    events
        .iter()
        .filter_map(|(_, _, data)| data["text"].as_str())
        .collect()
}

const APP: &str = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        for i in 1 2 3 4 5; do echo "build line $i"; done
    web:
      commands:
        start: httpd -f -p $PORT -h /app
"#;

/// A token made over the socket; `args` after `-p shop`.
fn token(daemon: &Daemon, project: &str, args: &[&str]) -> (String, String) {
    let mut all = vec!["token", "create", "-p", project];
    all.extend_from_slice(args);
    let out = daemon.cli(&all);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let secret = text(&out.stdout).trim().to_owned();
    let id = text(&out.stderr)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    (secret, id)
}

fn access(project: &str, role: Role, environment: Option<&str>, deploy_only: bool) -> Access {
    Access {
        project: project.into(),
        role,
        environment: environment.map(str::to_owned),
        deploy_only,
        expires_at: None,
    }
}

struct Caller {
    name: &'static str,
    secret: Option<String>,
    /// `None`: not authenticated at all (no, revoked or expired token).
    principal: Option<Principal>,
}

struct Ids {
    activity: String,
    build: String,
    release: String,
    backup: String,
    token: String,
    webhook: String,
}

/// What the route acts on, as the daemon resolves it, for `environment`.
fn target_of(route: &launchway_http::Route, environment: &str) -> Target {
    let path = route.path;
    let env_target = |env: &str| Target::environment("shop", env, env == "main");
    match route.kind {
        ActionKind::StartBuild => env_target("main"),
        ActionKind::MergeEnvironment => env_target("main"),
        ActionKind::ListTokens
        | ActionKind::CreateToken
        | ActionKind::RevokeToken
        | ActionKind::DeleteWebhook => Target::project("shop"),
        ActionKind::ListCertificates => Target::project("shop"),
        _ if path.contains("{environment}") => env_target(environment),
        _ if path.starts_with("/api/v1/activities/")
            || path.starts_with("/api/v1/builds/")
            || path.starts_with("/api/v1/releases/")
            || path.contains("/backups/{id}") =>
        {
            env_target("main")
        }
        _ if path.contains("{project}") => Target::project("shop"),
        _ => Target::host(),
    }
}

fn fill(route: &launchway_http::Route, environment: &str, ids: &Ids) -> String {
    let id = if route.path.starts_with("/api/v1/activities/") {
        &ids.activity
    } else if route.path.starts_with("/api/v1/builds/") {
        &ids.build
    } else if route.path.starts_with("/api/v1/releases/") {
        &ids.release
    } else if route.path.starts_with("/api/v1/tokens/") {
        &ids.token
    } else if route.path.starts_with("/api/v1/webhooks/") {
        &ids.webhook
    } else {
        &ids.backup
    };
    let mut path = route
        .path
        .replace("{project}", "shop")
        .replace("{environment}", environment)
        .replace("{id}", id)
        .replace("{key}", "SHA256%3Anothing")
        .replace("{name}", "NIGHTLY")
        .replace("{service}", "db")
        .replace("{type}", "python:3.11")
        .replace("{pattern}", "example.com")
        .replace("{host}", "example.com");
    if matches!(
        route.kind,
        ActionKind::ListTokens | ActionKind::ListCertificates | ActionKind::CreateToken
    ) {
        path.push_str("?project=shop");
    }
    path
}

#[test]
fn every_route_answers_as_the_authorization_table_says() {
    let daemon = Daemon::start_with(
        "[http]\nlisten = \"127.0.0.1:0\"\nfailed_auth_per_minute = 100000\n[webhooks]\nallow_local = true\n",
    );
    let api = daemon.http_api_addr();
    daemon.use_busybox_runtime("python:3.11");
    let work: Work = daemon.admin_work("shop");
    daemon.project("blog");
    work.write(".upsun/config.yaml", APP);
    work.write("index.html", "hello\n");
    work.commit("first");
    let pushed = work.push_ok("main", &[]);
    work.git_ok(&["checkout", "-q", "-b", "feature"]);
    work.write("index.html", "feature\n");
    work.commit("feature");
    work.push_ok("feature", &[]);
    daemon.cli_ok(&["environment", "activate", "-p", "shop", "feature"]);
    daemon.wait_idle("shop");
    let (short_lived, _) = token(&daemon, "shop", &["--role", "admin", "--expires", "1m"]);
    let started = std::time::Instant::now();

    let (admin, _) = token(&daemon, "shop", &["--role", "admin", "--name", "ops"]);
    let get = |path: &str| curl(api, Some(&admin), "GET", path, None, &[]);

    // Long operations: 202, the activity, and where to follow it.
    let deploy = curl(
        api,
        Some(&admin),
        "POST",
        "/api/v1/projects/shop/environments/main/redeploy",
        None,
        &[],
    );
    assert_eq!(deploy.status, 202, "{deploy:?}");
    let activity = deploy.json()["activity"].as_u64().unwrap();
    assert_eq!(
        deploy.header("location"),
        Some(format!("/api/v1/activities/{activity}/log").as_str())
    );
    // Its log as events, to the end: ids grow, the last event says done.
    let followed = curl(
        api,
        Some(&admin),
        "GET",
        &format!("/api/v1/activities/{activity}/log"),
        None,
        &[],
    );
    assert_eq!(followed.status, 200, "{followed:?}");
    assert_eq!(followed.header("content-type"), Some("text/event-stream"));
    let all = events(&followed.body);
    let (_, last_name, last) = all.last().unwrap();
    assert_eq!(last_name.as_deref(), Some("done"), "{}", followed.body);
    assert_eq!(last["failed"], false, "{}", followed.body);
    // Positions grow strictly; the end repeats the last one.
    let ids: Vec<u64> = all
        .iter()
        .filter(|(_, name, _)| name.is_none())
        .filter_map(|(id, _, _)| *id)
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(all.last().unwrap().0, ids.last().copied());
    let stored = get(&format!("/api/v1/activities/{activity}")).json();
    assert_eq!(log_of(&all), stored["log"].as_str().unwrap());
    // A reconnect from the middle gets exactly the rest.
    let lines: Vec<_> = all.iter().filter(|(_, name, _)| name.is_none()).collect();
    assert!(lines.len() >= 3, "{}", followed.body);
    let middle = lines[lines.len() / 2].0.unwrap();
    let resumed = curl(
        api,
        Some(&admin),
        "GET",
        &format!("/api/v1/activities/{activity}/log"),
        None,
        &["-H", &format!("Last-Event-ID: {middle}")],
    );
    let rest = events(&resumed.body);
    let expected: Vec<_> = all
        .iter()
        .skip_while(|(id, _, _)| *id != Some(middle))
        .skip(1)
        .cloned()
        .collect();
    assert_eq!(rest, expected);

    // The push's own activity, followed over SSE, is what the pusher saw.
    let activities = get("/api/v1/projects/shop/activities?environment=main&limit=50").json();
    let push = activities["activities"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|a| a["type"] == "environment.push")
        .unwrap_or_else(|| panic!("no push activity: {activities}"));
    let push_id = push["id"].as_u64().unwrap();
    let push_log = log_of(&events(
        &get(&format!("/api/v1/activities/{push_id}/log")).body,
    ));
    let seen: String = pushed
        .lines()
        .map(|line| line.strip_prefix("remote: ").unwrap_or(line).trim_end())
        .map(|line| format!("{line}\n"))
        .collect();
    let push_log_trimmed: String = push_log
        .lines()
        .map(|line| format!("{}\n", line.trim_end()))
        .collect();
    assert!(
        seen.contains(&push_log_trimmed),
        "the push printed:\n{seen}\nits activity log is:\n{push_log}"
    );

    // What every route needs, to find its target.
    let builds = get("/api/v1/projects/shop/builds").json();
    let build = builds["builds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["environment"] == "main")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let release =
        get("/api/v1/projects/shop/releases?environment=main").json()["releases"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
    daemon.cli_ok(&["backup", "create", "-p", "shop", "-e", "main"]);
    let backup = get("/api/v1/projects/shop/backups").json()["backups"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, victim) = token(&daemon, "shop", &["--role", "viewer", "--name", "victim"]);
    let out = daemon.cli(&["webhook", "add", "-p", "shop", "http://127.0.0.1:9/"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let webhook = text(&out.stderr)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let ids = Ids {
        activity: activity.to_string(),
        build,
        release,
        backup,
        token: victim,
        webhook,
    };

    let (revoked, revoked_id) = token(&daemon, "shop", &["--role", "admin"]);
    daemon.cli_ok(&["token", "revoke", &revoked_id]);
    let mut callers = vec![
        Caller {
            name: "no token",
            secret: None,
            principal: None,
        },
        Caller {
            name: "revoked",
            secret: Some(revoked),
            principal: None,
        },
        Caller {
            name: "malformed",
            secret: Some("lw_api_nonsense".into()),
            principal: None,
        },
    ];
    for (name, project, args, access) in [
        (
            "blog admin",
            "blog",
            vec!["--role", "admin"],
            access("blog", Role::Admin, None, false),
        ),
        (
            "viewer",
            "shop",
            vec!["--role", "viewer"],
            access("shop", Role::Viewer, None, false),
        ),
        (
            "deploy key",
            "shop",
            vec!["--role", "admin", "--deploy-key"],
            access("shop", Role::Admin, None, true),
        ),
        (
            "feature contributor",
            "shop",
            vec!["--role", "contributor", "-e", "feature"],
            access("shop", Role::Contributor, Some("feature"), false),
        ),
        (
            "contributor",
            "shop",
            vec!["--role", "contributor"],
            access("shop", Role::Contributor, None, false),
        ),
        (
            "admin",
            "shop",
            vec!["--role", "admin"],
            access("shop", Role::Admin, None, false),
        ),
    ] {
        let (secret, id) = token(&daemon, project, &args);
        callers.push(Caller {
            name,
            secret: Some(secret),
            principal: Some(Principal::Token { id, access }),
        });
    }

    let mut failures = Vec::new();
    let mut tried = 0;
    for caller in &callers {
        for route in launchway_http::ROUTES {
            let environments: &[&str] = if route.path.contains("{environment}") {
                if route.kind == ActionKind::MergeEnvironment {
                    &["feature"]
                } else if route.kind == ActionKind::DeleteEnvironment {
                    // A branch never pushed: deleting `feature` would take
                    // it from the callers after this one.
                    &["doomed", "main"]
                } else {
                    &["feature", "main"]
                }
            } else {
                &["main"]
            };
            for environment in environments {
                let path = fill(route, environment, &ids);
                let answer = curl(
                    api,
                    caller.secret.as_deref(),
                    route.method,
                    &path,
                    None,
                    &["--max-time", "5"],
                );
                tried += 1;
                let expected = match &caller.principal {
                    None => Err(Denied::Expired),
                    Some(principal) => {
                        authorize(principal, route.kind, &target_of(route, environment), 0)
                    }
                };
                let hidden_answer =
                    answer.status == 404 && answer.body.contains("there is no project `shop`");
                let fits = match &expected {
                    Ok(()) => !matches!(answer.status, 401 | 403 | 429) && !hidden_answer,
                    Err(Denied::Hidden) => answer.status == 404,
                    Err(Denied::Expired) => answer.status == 401,
                    Err(_) => answer.status == 403,
                };
                // Every refusal is JSON with a message.
                if answer.status >= 400 && answer.header("content-type") == Some("application/json")
                {
                    let message = answer.json()["error"]["message"].as_str().map(str::len);
                    if message.is_none_or(|n| n == 0) {
                        failures.push(format!(
                            "{} {path}: no message: {}",
                            route.method, answer.body
                        ));
                    }
                }
                if answer.status >= 500 {
                    failures.push(format!(
                        "{}: {} {path}: {} {}",
                        caller.name, route.method, answer.status, answer.body
                    ));
                } else if !fits {
                    failures.push(format!(
                        "{}: {} {path}: expected {expected:?}, got {} {}",
                        caller.name, route.method, answer.status, answer.body
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {tried} answers are wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // A token of blog sees nothing of shop, even in lists.
    let blog = &callers.iter().find(|c| c.name == "blog admin").unwrap();
    let projects = curl(
        api,
        blog.secret.as_deref(),
        "GET",
        "/api/v1/projects",
        None,
        &[],
    )
    .json();
    let names: Vec<_> = projects["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["blog".to_owned()]);

    // Lists page with a cursor: pages of 3 put together are the whole list,
    // each item once, in order.
    let admin = &callers.iter().find(|c| c.name == "admin").unwrap();
    for (path, field, key) in [
        ("/api/v1/projects/shop/activities", "activities", "id"),
        ("/api/v1/projects/shop/builds", "builds", "id"),
        ("/api/v1/projects/shop/releases", "releases", "id"),
    ] {
        let all = curl(
            api,
            admin.secret.as_deref(),
            "GET",
            &format!("{path}?limit=1000"),
            None,
            &[],
        )
        .json();
        let all: Vec<String> = all[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i[key].to_string())
            .collect();
        assert!(all.len() > 3, "{path}: too few to page: {all:?}");
        let mut paged = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = curl(
                api,
                admin.secret.as_deref(),
                "GET",
                &format!("{path}?limit=3&cursor={cursor}"),
                None,
                &[],
            )
            .json();
            paged.extend(
                page[field]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i[key].to_string()),
            );
            cursor = page["next_cursor"].as_str().unwrap_or_default().to_owned();
            if cursor.is_empty() {
                break;
            }
        }
        assert_eq!(paged, all, "{path}");
    }
    let bad = curl(
        api,
        admin.secret.as_deref(),
        "GET",
        "/api/v1/projects/shop/activities?cursor=nonsense",
        None,
        &[],
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("not a cursor"), "{}", bad.body);

    // A token that has expired is refused as such.
    loop {
        let answer = curl(
            api,
            Some(&short_lived),
            "GET",
            "/api/v1/projects/shop",
            None,
            &[],
        );
        if answer.status == 401 {
            assert!(answer.body.contains("expired"), "{}", answer.body);
            break;
        }
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the 1-minute token never expired"
        );
        pause();
    }
}

#[test]
fn refusals_are_json_that_says_what_to_do_and_guessing_is_slowed() {
    let daemon = Daemon::start_with("[http]\nlisten = \"127.0.0.1:0\"\n");
    let api = daemon.http_api_addr();
    daemon.project("shop");
    let (viewer, _) = token(&daemon, "shop", &["--role", "viewer"]);

    let answer = curl(api, None, "GET", "/api/v1/projects", None, &[]);
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("launchway token create")
    );

    let answer = curl(api, Some(&viewer), "GET", "/api/v1/nowhere", None, &[]);
    assert_eq!(answer.status, 404, "{answer:?}");
    let answer = curl(
        api,
        Some(&viewer),
        "PATCH",
        "/api/v1/projects/shop",
        None,
        &[],
    );
    assert_eq!(answer.status, 405, "{answer:?}");
    assert_eq!(answer.header("allow"), Some("DELETE, GET"));
    let answer = curl(
        api,
        Some(&viewer),
        "GET",
        "/api/v1/projects/shop/activities?limit=many",
        None,
        &[],
    );
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(
        answer.json()["error"]["message"],
        "`limit` must be a whole number, not `many`"
    );
    let answer = curl(
        api,
        Some(&viewer),
        "GET",
        "/api/v1/projects/shop/activities?colour=red",
        None,
        &[],
    );
    assert_eq!(answer.status, 400, "{answer:?}");
    let answer = curl(
        api,
        Some(&viewer),
        "POST",
        "/api/v1/releases/r1/promote",
        Some("[1, 2"),
        &[],
    );
    assert_eq!(answer.status, 400, "{answer:?}");
    let answer = curl(
        api,
        Some(&viewer),
        "PUT",
        "/api/v1/projects/shop/settings/keep_builds",
        Some(r#"{"value": "3"}"#),
        &[],
    );
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(
        answer.body.contains("needs the admin role"),
        "{}",
        answer.body
    );

    // Ten wrong guesses a minute from one address, then 429 for all of
    // its requests, good token or not, until the minute ends.
    for _ in 0..10 {
        let answer = curl(
            api,
            Some("lw_api_wrong"),
            "GET",
            "/api/v1/projects",
            None,
            &[],
        );
        assert_eq!(answer.status, 401, "{answer:?}");
    }
    let answer = curl(api, Some(&viewer), "GET", "/api/v1/projects", None, &[]);
    assert_eq!(answer.status, 429, "{answer:?}");
    let wait: u64 = answer.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
}

fn junk(rng: &mut rand::rngs::StdRng) -> String {
    use rand::RngExt as _;
    // What a client may put in a URL (the rest it must escape; hyper
    // itself answers a raw one with a bare 400), bad escapes included; no
    // real name, so no request is a valid change by chance.
    const PIECES: &[&str] = &[
        "%",
        "%2",
        "%zz",
        "%00",
        "%2F",
        "..",
        ".",
        "%C3%A9",
        "%F0%9F%98%80",
        "%FF",
        "a",
        "%7Bid%7D",
        "'",
        "%22",
        "%3C",
        "%3E",
        ";",
        "=",
        "&",
        "?",
        "%23",
        "~",
        "-",
        "_",
        "0",
        "18446744073709551616",
        "%20",
    ];
    let n = rng.random_range(0..5);
    (0..n)
        .map(|_| PIECES[rng.random_range(0..PIECES.len())])
        .collect::<String>()
}

/// A JSON value no scalar or list-of-text field takes.
fn wrong_value(rng: &mut rand::rngs::StdRng) -> serde_json::Value {
    use rand::RngExt as _;
    match rng.random_range(0..3) {
        0 => serde_json::json!({"nested": junk(rng)}),
        1 => serde_json::json!([{"x": 1}, {}]),
        _ => serde_json::json!({}),
    }
}

/// What a caller can see of the project, to show nothing changed.
fn state(api: SocketAddr, token: &str) -> Vec<String> {
    [
        "/api/v1/projects",
        "/api/v1/projects/shop/environments",
        "/api/v1/projects/shop/releases",
        "/api/v1/projects/shop/builds",
        "/api/v1/projects/shop/variables",
        "/api/v1/projects/shop/activities?limit=1000",
        "/api/v1/projects/shop/keys",
        "/api/v1/tokens?project=shop",
    ]
    .iter()
    .map(|path| curl(api, Some(token), "GET", path, None, &[]).body)
    .collect()
}

#[test]
fn random_requests_to_every_route_are_refused_with_a_message_and_change_nothing() {
    use rand::RngExt as _;
    let daemon = Daemon::start_with(
        "[http]\nlisten = \"127.0.0.1:0\"\nfailed_auth_per_minute = 100000\n[webhooks]\nallow_local = true\n",
    );
    let api = daemon.http_api_addr();
    daemon.use_busybox_runtime("python:3.11");
    let work: Work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", APP);
    work.commit("first");
    work.push_ok("main", &[]);
    daemon.wait_idle("shop");
    let (admin, _) = token(&daemon, "shop", &["--role", "admin"]);
    let before = state(api, &admin);
    let mut rng = launchway_integration::fuzz_rng();
    let description = launchway_http::openapi();
    let mut failures = Vec::new();
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
    for round in 0..300 {
        let route = &launchway_http::ROUTES[rng.random_range(0..launchway_http::ROUTES.len())];
        let (method, path, body) = match round % 4 {
            // The route, with junk in its braced segments.
            0 => {
                let path: String = route
                    .path
                    .split('/')
                    .map(|part| {
                        if part.starts_with('{') {
                            let piece = junk(&mut rng);
                            if piece.is_empty() {
                                "x".to_owned()
                            } else {
                                piece
                            }
                        } else {
                            part.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                (route.method, path, None)
            }
            // Real fields of the operation with values of no field's type.
            1 | 2 => {
                let operation =
                    &description["paths"][route.path][route.method.to_ascii_lowercase()];
                let mut names: Vec<String> = operation["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter_map(|p| p["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(properties) =
                    operation["requestBody"]["content"]["application/json"]["schema"]["properties"]
                        .as_object()
                {
                    names.extend(properties.keys().cloned());
                }
                names.push("not_a_field".into());
                let mut body = serde_json::Map::new();
                for _ in 0..rng.random_range(1..3) {
                    let name = names[rng.random_range(0..names.len())].clone();
                    body.insert(name, wrong_value(&mut rng));
                }
                let path = route
                    .path
                    .replace("{project}", "shop")
                    .replace("{environment}", "main");
                let path = path
                    .split('/')
                    .map(|part| if part.starts_with('{') { "x" } else { part })
                    .collect::<Vec<_>>()
                    .join("/");
                let method = if route.method == "GET" {
                    "POST"
                } else {
                    route.method
                };
                let body = if rng.random_range(0..5) == 0 {
                    // Never empty: an empty body is a valid request.
                    format!("x{}", junk(&mut rng))
                } else {
                    serde_json::Value::Object(body).to_string()
                };
                if route.method == "GET" {
                    (
                        route.method,
                        format!("{path}?{}={}", junk(&mut rng), junk(&mut rng)),
                        None,
                    )
                } else {
                    (method, path, Some(body))
                }
            }
            // Anywhere, any method.
            _ => (
                methods[rng.random_range(0..methods.len())],
                format!("/api/v1/{}/{}", junk(&mut rng), junk(&mut rng)),
                None,
            ),
        };
        let path = path.replace(' ', "%20");
        let answer = curl(
            api,
            Some(&admin),
            method,
            &path,
            body.as_deref(),
            &["--max-time", "5", "--path-as-is"],
        );
        let message = serde_json::from_str::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned));
        // Requests that happen to be valid are answered; every other one
        // is a 4xx with a message; none is a 5xx.
        let fine = match answer.status {
            200..300 => true,
            400..500 => message.is_some_and(|m| !m.is_empty()),
            _ => false,
        };
        if !fine {
            failures.push(format!(
                "{method} {path} {body:?}: {} {}",
                answer.status, answer.body
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} answers were not refusals with a message:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let after = state(api, &admin);
    for (before, after) in before.iter().zip(&after) {
        assert_eq!(before, after, "random requests changed something");
    }
}
