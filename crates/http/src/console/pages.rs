//! The console's HTML: plain server-rendered pages, every value escaped on
//! the way in ([`esc`]). No page holds a secret: sensitive variables come
//! without their values from the core, tokens are never listed here, and the
//! only per-session value is the CSRF token of the forms.

use std::fmt::Write as _;

use launchway_api::proto;

/// Text made safe for HTML content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment made safe for a URL inside an attribute.
pub(crate) fn seg(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Who is signed in, for the header.
pub(crate) struct Viewer<'a> {
    pub(crate) name: &'a str,
    pub(crate) csrf: &'a str,
}

pub(crate) fn layout(title: &str, viewer: Option<&Viewer<'_>>, body: &str) -> String {
    let user = viewer.map_or_else(String::new, |v| {
        format!(
            r#"<span class="who">{}</span><form method="post" action="/console/logout" class="inline">{}<button type="submit">Sign out</button></form>"#,
            esc(v.name),
            csrf_field(v.csrf)
        )
    });
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Launchway</title><link rel="stylesheet" href="/console/static/console.css"><script src="/console/static/console.js" defer></script></head>
<body><header><a class="brand" href="/console">Launchway</a><nav>{user}</nav></header>
<main>{body}</main></body></html>
"#,
        title = esc(title),
    )
}

pub(crate) fn csrf_field(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

fn when(ms: u64) -> String {
    if ms == 0 {
        return "—".into();
    }
    let secs = ms / 1000;
    let days = secs / 86_400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02} {h:02}:{m:02}:{s:02} UTC")
}

fn status(word: &str) -> String {
    format!(r#"<span class="status s-{0}">{0}</span>"#, esc(word))
}

/// A link to `url` when it is an http(s) URL (the only kind routes make);
/// anything else shows as text.
fn url_link(url: &str) -> String {
    if url.starts_with("https://") || url.starts_with("http://") {
        format!(
            r#"<a class="url" href="{0}" rel="noopener noreferrer">{0}</a>"#,
            esc(url)
        )
    } else {
        esc(url)
    }
}

/// The sign-in page; `link` is a login code and the key it was made for.
pub(crate) fn login(link: Option<(&str, &str)>, message: Option<&str>) -> String {
    let mut body = String::from("<h1>Sign in</h1>");
    if let Some(message) = message {
        let _ = write!(body, r#"<p class="error">{}</p>"#, esc(message));
    }
    if let Some((code, owner)) = link {
        let _ = write!(
            body,
            r#"<form method="post" action="/console/login" class="card"><input type="hidden" name="code" value="{}"><p>This one-time link was made with <code>ssh … login</code> by the SSH key <b id="owner">{}</b>. Sign in as that key's owner? (If it is not your key, close this page.)</p><button type="submit" id="sign-in">Sign in</button></form>"#,
            esc(code),
            esc(owner)
        );
    } else {
        body.push_str(r#"<p>Run <code>ssh git@THIS-HOST login</code> with a key that can push, and open the link it prints. Or sign in with an API token:</p>"#);
    }
    body.push_str(r#"<form method="post" action="/console/login" class="card"><label>API token <input type="password" name="token" autocomplete="off" required></label> <button type="submit">Sign in with the token</button></form>"#);
    layout("Sign in", None, &body)
}

pub(crate) fn error(viewer: Option<&Viewer<'_>>, status: u16, message: &str) -> String {
    layout(
        "Error",
        viewer,
        &format!(
            r#"<h1>{status}</h1><p class="error" id="error">{}</p><p><a href="/console">Projects</a></p>"#,
            esc(message)
        ),
    )
}

pub(crate) fn projects(viewer: &Viewer<'_>, list: &proto::ProjectList) -> String {
    let mut body = String::from("<h1>Projects</h1>");
    if list.projects.is_empty() {
        body.push_str("<p>No project you can see. An operator adds your key to one with <code>launchway key add</code>.</p>");
    }
    body.push_str(r#"<ul class="projects">"#);
    for project in &list.projects {
        let _ = write!(
            body,
            r#"<li><a href="/console/projects/{}">{}</a> <span class="muted">default branch {}</span></li>"#,
            seg(&project.name),
            esc(&project.name),
            esc(&project.default_branch)
        );
    }
    body.push_str("</ul>");
    layout("Projects", Some(viewer), &body)
}

fn environment_tree(
    project: &str,
    environments: &[proto::EnvironmentInfo],
    roots: &[&proto::EnvironmentInfo],
    seen: &mut std::collections::BTreeSet<String>,
    out: &mut String,
) {
    let fresh: Vec<&proto::EnvironmentInfo> = roots
        .iter()
        .copied()
        .filter(|e| !seen.contains(&e.name))
        .collect();
    if fresh.is_empty() {
        return;
    }
    out.push_str("<ul>");
    for environment in fresh {
        if !seen.insert(environment.name.clone()) {
            continue;
        }
        let url = if environment.url.is_empty() {
            String::new()
        } else {
            format!(" {}", url_link(&environment.url))
        };
        let release = if environment.release.is_empty() {
            String::new()
        } else {
            format!(
                r#" <span class="muted">release {}</span>"#,
                esc(&environment.release)
            )
        };
        let _ = write!(
            out,
            r#"<li class="env" data-environment="{name}"><a href="/console/projects/{p}/environments/{e}">{name}</a> {status} <span class="muted">{kind}</span>{url}{release}"#,
            name = esc(&environment.name),
            p = seg(project),
            e = seg(&environment.name),
            status = status(&environment.status),
            kind = esc(&environment.r#type),
        );
        let children: Vec<&proto::EnvironmentInfo> = environments
            .iter()
            .filter(|e| e.parent == environment.name)
            .collect();
        environment_tree(project, environments, &children, seen, out);
        out.push_str("</li>");
    }
    out.push_str("</ul>");
}

fn activities_table(project: &str, activities: &[proto::ActivityInfo]) -> String {
    if activities.is_empty() {
        return "<p class=\"muted\">No activity yet.</p>".into();
    }
    let mut out = String::from(
        r#"<table class="activities"><tr><th>#</th><th>Environment</th><th>What</th><th>State</th><th>Created</th></tr>"#,
    );
    for activity in activities {
        let state = if activity.result.is_empty() {
            activity.state.clone()
        } else {
            activity.result.clone()
        };
        let _ = write!(
            out,
            r#"<tr><td><a href="/console/projects/{p}/activities/{id}">{id}</a></td><td>{env}</td><td>{what}</td><td>{state}</td><td>{created}</td></tr>"#,
            p = seg(project),
            id = activity.id,
            env = esc(&activity.environment),
            what = esc(&activity.description),
            state = status(&state),
            created = when(activity.created_at),
        );
    }
    out.push_str("</table>");
    out
}

pub(crate) fn project(
    viewer: &Viewer<'_>,
    project: &proto::ProjectInfo,
    environments: &proto::EnvironmentList,
    activities: &proto::ActivityList,
) -> String {
    let mut body = format!(
        r#"<p class="crumbs"><a href="/console">Projects</a> / {}</p><h1>{}</h1><p class="muted">git remote <code>{}</code> · <a href="/console/projects/{}/builds">builds</a></p><h2>Environments</h2><div class="tree" id="environments">"#,
        esc(&project.name),
        esc(&project.name),
        esc(&project.git_remote),
        seg(&project.name),
    );
    let all = &environments.environments;
    let mut tree = String::new();
    let mut seen = std::collections::BTreeSet::new();
    // Roots: no parent, or one that is gone or itself; then whatever a
    // cycle of parents kept out, so every environment shows once.
    let roots: Vec<&proto::EnvironmentInfo> = all
        .iter()
        .filter(|e| {
            e.parent.is_empty() || e.parent == e.name || !all.iter().any(|o| o.name == e.parent)
        })
        .collect();
    environment_tree(&project.name, all, &roots, &mut seen, &mut tree);
    let rest: Vec<&proto::EnvironmentInfo> = all.iter().collect();
    environment_tree(&project.name, all, &rest, &mut seen, &mut tree);
    if tree.is_empty() {
        tree = "<p class=\"muted\">No environment yet: push a branch.</p>".into();
    }
    body.push_str(&tree);
    body.push_str("</div><h2>Recent activities</h2>");
    body.push_str(&activities_table(&project.name, &activities.activities));
    layout(&project.name, Some(viewer), &body)
}

/// What the environment page shows besides its header.
pub(crate) struct EnvironmentPage<'a> {
    pub(crate) project: &'a str,
    pub(crate) environment: &'a proto::EnvironmentInfo,
    pub(crate) activities: &'a [proto::ActivityInfo],
    pub(crate) releases: &'a [proto::ReleaseInfo],
    /// `Err`: why they are not shown (the role, most often).
    pub(crate) variables: Result<&'a [proto::VariableInfo], String>,
    pub(crate) services: Result<&'a [proto::ServiceInfo], String>,
    /// Whether the viewer may promote releases here (buttons shown).
    pub(crate) may_promote: bool,
}

pub(crate) fn environment(viewer: &Viewer<'_>, page: &EnvironmentPage<'_>) -> String {
    let environment = page.environment;
    let p = seg(page.project);
    let mut body = format!(
        r#"<p class="crumbs"><a href="/console">Projects</a> / <a href="/console/projects/{p}">{project}</a> / {name}</p><h1>{name} {status}</h1><dl class="facts"><dt>Type</dt><dd>{kind}</dd><dt>Parent</dt><dd>{parent}</dd><dt>URL</dt><dd>{url}</dd><dt>Serving release</dt><dd id="serving">{release}</dd><dt>Head</dt><dd><code>{head}</code></dd></dl>"#,
        project = esc(page.project),
        name = esc(&environment.name),
        status = status(&environment.status),
        kind = esc(&environment.r#type),
        parent = esc(if environment.parent.is_empty() {
            "—"
        } else {
            &environment.parent
        }),
        url = if environment.url.is_empty() {
            "—".to_owned()
        } else {
            url_link(&environment.url)
        },
        release = esc(if environment.release.is_empty() {
            "none"
        } else {
            &environment.release
        }),
        head = esc(environment.head.get(..12).unwrap_or(&environment.head)),
    );
    body.push_str("<h2>Releases</h2>");
    if page.releases.is_empty() {
        body.push_str("<p class=\"muted\">No release yet.</p>");
    } else {
        body.push_str(r#"<table class="releases" id="releases"><tr><th>Release</th><th>Commit</th><th>What</th><th>Status</th><th>Created</th><th></th></tr>"#);
        let serving_created = page
            .releases
            .iter()
            .find(|r| r.id == environment.release)
            .map(|r| r.created_at);
        for release in page.releases {
            let action = if !page.may_promote
                || release.id == environment.release
                || release.status == "failed"
                || release.status == "deploying"
            {
                String::new()
            } else {
                // Only a release that served can be rolled back to; an
                // older pending one (built, never served) is promoted.
                let label = if release.status == "superseded"
                    && serving_created.is_some_and(|at| release.created_at < at)
                {
                    "Roll back to this"
                } else {
                    "Promote"
                };
                format!(
                    r#"<a class="button" href="/console/projects/{p}/releases/{id}/promote">{label}</a>"#,
                    id = seg(&release.id)
                )
            };
            let _ = write!(
                body,
                r#"<tr data-release="{id}"><td><code>{id}</code></td><td><code>{commit}</code></td><td>{what}</td><td>{status}</td><td>{created}</td><td>{action}</td></tr>"#,
                id = esc(&release.id),
                commit = esc(release.commit.get(..12).unwrap_or(&release.commit)),
                what = esc(&release.description),
                status = status(&release.status),
                created = when(release.created_at),
            );
        }
        body.push_str("</table>");
    }
    body.push_str("<h2>Activities</h2>");
    body.push_str(&activities_table(page.project, page.activities));
    body.push_str("<h2>Variables</h2>");
    match &page.variables {
        Err(why) => {
            let _ = write!(body, r#"<p class="muted">{}</p>"#, esc(why));
        }
        Ok([]) => body.push_str("<p class=\"muted\">No variable.</p>"),
        Ok(variables) => {
            body.push_str(
                r#"<table class="variables"><tr><th>Name</th><th>Level</th><th>Value</th></tr>"#,
            );
            for variable in *variables {
                let value = if variable.sensitive {
                    r#"<span class="muted">sensitive: never shown</span>"#.to_owned()
                } else {
                    format!("<code>{}</code>", esc(&variable.value))
                };
                let _ = write!(
                    body,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{value}</td></tr>",
                    esc(&variable.name),
                    esc(&variable.level)
                );
            }
            body.push_str("</table>");
        }
    }
    body.push_str("<h2>Services</h2>");
    match &page.services {
        Err(why) => {
            let _ = write!(body, r#"<p class="muted">{}</p>"#, esc(why));
        }
        Ok([]) => body.push_str("<p class=\"muted\">No service.</p>"),
        Ok(services) => {
            body.push_str(r#"<table class="services"><tr><th>Name</th><th>Type</th><th>Running</th><th>Status</th><th>Disk</th></tr>"#);
            for service in *services {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} MiB</td></tr>",
                    esc(&service.name),
                    esc(&service.asked),
                    esc(&service.running),
                    status(&service.status),
                    service.disk_bytes / (1024 * 1024)
                );
            }
            body.push_str("</table>");
        }
    }
    layout(
        &format!("{} · {}", environment.name, page.project),
        Some(viewer),
        &body,
    )
}

pub(crate) fn confirm_promote(
    viewer: &Viewer<'_>,
    project: &str,
    release: &proto::ReleaseInfo,
    serving: &str,
) -> String {
    let body = format!(
        r#"<p class="crumbs"><a href="/console">Projects</a> / <a href="/console/projects/{p}">{project}</a> / <a href="/console/projects/{p}/environments/{e}">{env}</a></p><h1>Serve release {id}?</h1><p>Environment <b>{env}</b> serves <code>{serving}</code> now. Release <code>{id}</code> ({what}, commit <code>{commit}</code>) will serve instead, after a deploy that holds requests for its duration.</p><form method="post" action="/console/projects/{p}/releases/{rid}/promote">{csrf}<button type="submit" id="confirm">Serve {id}</button> <a href="/console/projects/{p}/environments/{e}">Cancel</a></form>"#,
        p = seg(project),
        e = seg(&release.environment),
        rid = seg(&release.id),
        project = esc(project),
        env = esc(&release.environment),
        id = esc(&release.id),
        serving = esc(if serving.is_empty() {
            "nothing"
        } else {
            serving
        }),
        what = esc(&release.description),
        commit = esc(release.commit.get(..12).unwrap_or(&release.commit)),
        csrf = csrf_field(viewer.csrf),
    );
    layout("Confirm", Some(viewer), &body)
}

pub(crate) fn activity(viewer: &Viewer<'_>, project: &str, info: &proto::ActivityInfo) -> String {
    let state = if info.result.is_empty() {
        info.state.clone()
    } else {
        info.result.clone()
    };
    let body = format!(
        r#"<p class="crumbs"><a href="/console">Projects</a> / <a href="/console/projects/{p}">{project}</a> / <a href="/console/projects/{p}/environments/{e}">{env}</a></p><h1>Activity {id}</h1><p>{what} · <span id="state">{state}</span> · created {created}</p><pre id="log" class="log" data-events="/console/projects/{p}/activities/{id}/events"></pre><noscript><p>The live log needs JavaScript; <code>launchway activity log {id}</code> prints it.</p></noscript>"#,
        p = seg(project),
        e = seg(&info.environment),
        project = esc(project),
        env = esc(&info.environment),
        id = info.id,
        what = esc(&info.description),
        state = status(&state),
        created = when(info.created_at),
    );
    layout(&format!("Activity {}", info.id), Some(viewer), &body)
}

pub(crate) fn builds(viewer: &Viewer<'_>, project: &str, list: &proto::BuildList) -> String {
    let p = seg(project);
    let mut body = format!(
        r#"<p class="crumbs"><a href="/console">Projects</a> / <a href="/console/projects/{p}">{}</a></p><h1>Builds</h1>"#,
        esc(project)
    );
    if list.builds.is_empty() {
        body.push_str("<p class=\"muted\">No build yet.</p>");
    } else {
        body.push_str(r#"<table class="builds"><tr><th>Build</th><th>Environment</th><th>Commit</th><th>Status</th><th>Started</th><th>Took</th></tr>"#);
        for build in &list.builds {
            let _ = write!(
                body,
                r#"<tr><td><a href="/console/projects/{p}/builds/{bid}"><code>{id}</code></a></td><td>{env}</td><td><code>{commit}</code></td><td>{status}</td><td>{started}</td><td>{took}</td></tr>"#,
                bid = seg(&build.id),
                id = esc(&build.id),
                env = esc(&build.environment),
                commit = esc(build.commit.get(..12).unwrap_or(&build.commit)),
                status = status(&build.status),
                started = when(build.started_at),
                took = if build.elapsed_ms == 0 {
                    "—".to_owned()
                } else {
                    format!("{:.1} s", build.elapsed_ms as f64 / 1000.0)
                },
            );
        }
        body.push_str("</table>");
    }
    if !list.next_cursor.is_empty() {
        let _ = write!(
            body,
            r#"<p><a id="older" href="/console/projects/{p}/builds?cursor={}">Older builds</a></p>"#,
            seg(&list.next_cursor)
        );
    }
    layout(&format!("Builds · {project}"), Some(viewer), &body)
}

pub(crate) fn build(
    viewer: &Viewer<'_>,
    project: &str,
    build: &proto::BuildInfo,
    log: &str,
) -> String {
    let p = seg(project);
    let mut apps = String::new();
    for app in &build.apps {
        let reused = if app.reused_from.is_empty() {
            String::new()
        } else {
            format!(" (reused from {})", esc(&app.reused_from))
        };
        let _ = write!(
            apps,
            "<li>{} <span class=\"muted\">{} · tree {}</span>{reused}</li>",
            esc(&app.name),
            esc(&app.runtime),
            esc(app.tree_id.get(..12).unwrap_or(&app.tree_id)),
        );
    }
    let body = format!(
        r#"<p class="crumbs"><a href="/console">Projects</a> / <a href="/console/projects/{p}">{project}</a> / <a href="/console/projects/{p}/builds">builds</a></p><h1>Build {id} {status}</h1><p>{what} · environment {env} · commit <code>{commit}</code></p><ul>{apps}</ul><pre class="log" id="build-log">{log}</pre>"#,
        project = esc(project),
        id = esc(&build.id),
        status = status(&build.status),
        what = esc(&build.description),
        env = esc(&build.environment),
        commit = esc(&build.commit),
        log = esc(log),
    );
    layout(&format!("Build {}", build.id), Some(viewer), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            esc(r#"<script>"a"&'b'</script>"#),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn every_environment_shows_once_whatever_its_parents() {
        let env = |name: &str, parent: &str| proto::EnvironmentInfo {
            name: name.into(),
            parent: parent.into(),
            ..Default::default()
        };
        let all = vec![
            env("main", ""),
            env("feature", "main"),
            env("sub", "feature"),
            env("orphan", "gone"),
            env("orphan-child", "orphan"),
            env("me", "me"),
            env("a", "b"),
            env("b", "a"),
        ];
        let page = project(
            &Viewer {
                name: "x",
                csrf: "c",
            },
            &proto::ProjectInfo {
                name: "shop".into(),
                ..Default::default()
            },
            &proto::EnvironmentList {
                environments: all.clone(),
            },
            &proto::ActivityList::default(),
        );
        for e in &all {
            let marker = format!("data-environment=\"{}\"", e.name);
            assert_eq!(page.matches(&marker).count(), 1, "{}", e.name);
        }
    }

    #[test]
    fn times_read_as_dates() {
        assert_eq!(when(0), "—");
        assert_eq!(when(86_400_000 * 365), "1971-01-01 00:00:00 UTC");
        assert_eq!(when(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
    }
}
