//! The web console: server-rendered pages on the API's listener, under
//! `/console`. Like the JSON routes, every page only parses a request into
//! operations and renders their answers: each one is a call of the same
//! service the admin socket serves, marked with the signed-in principal, so
//! what a page shows and what its buttons may do is decided by the core's
//! one authorization table. (Whether to *show* a button is asked of that
//! same table; the click is checked again by the core.)
//!
//! - Sign-in: a one-time link minted over SSH (`ssh git@host login`, by a key
//!   that can push somewhere; valid 10 minutes, used once), or an API token
//!   pasted in a form. Either opens a session (see `sessions.rs`).
//! - Forms are POSTs carrying the session's CSRF token; a POST without it,
//!   or from another origin, is refused before anything runs.
//! - A strict Content-Security-Policy: no inline script or style, no other
//!   origin; the one script is the live log (`console.js`).

mod pages;
mod sessions;

use std::net::IpAddr;

use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use launchway_api::{Launchway, proto};
use launchway_ops::{ActionKind, Principal, Target, authorize};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tonic::{Code, Status};

use crate::dispatch::{Reply, call};
use crate::request::{percent_decode, query_pairs};
use crate::serve::{Body, HttpDoor, Refusal, Uploads, events, full, sse_response};
use pages::Viewer;
pub(crate) use sessions::Sessions;
use sessions::{Session, Subject, same_secret};

/// `__Host-`: the browser refuses it with a `Domain` or a path other than
/// `/`, so an app served under a sibling host name cannot plant or shadow
/// it (apps run on subdomains of the same site).
const COOKIE: &str = "__Host-lw_console";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// The most of a build log one page holds.
const MAX_PAGE_LOG: usize = 1 << 20;
/// The most a form may send.
const MAX_FORM: usize = 16 * 1024;
const STYLE: &str = include_str!("console.css");
const SCRIPT: &str = include_str!("console.js");

/// Whether `path` is the console's (or the bare host, which leads there).
pub(crate) fn is_console(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

fn secure_headers(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: with the latter browsers send
    // `Origin: null` on the console's own forms, and the origin check needs it.
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut response = Response::new(full(page));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(&mut response);
    response
}

fn asset(content_type: &'static str, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(text));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    secure_headers(&mut response);
    response
}

fn redirect(to: &str) -> Response<Body> {
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    secure_headers(&mut response);
    response
}

fn cookie_of(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| value.to_owned())
        })
}

/// A refused POST: the same answer whatever was wrong with it.
fn forged(viewer: Option<&Viewer<'_>>) -> Response<Body> {
    html(
        StatusCode::FORBIDDEN,
        pages::error(
            viewer,
            403,
            "This form was not sent from this console (its CSRF token is missing or wrong): reload the page and try again.",
        ),
    )
}

/// A signed-in request: its session and who it stands for now.
struct SignedIn {
    id: String,
    session: Session,
    who: Principal,
    name: String,
}

impl SignedIn {
    fn viewer(&self) -> Viewer<'_> {
        Viewer {
            name: &self.name,
            csrf: &self.session.csrf,
        }
    }
}

impl<S: Launchway + Uploads> HttpDoor<S> {
    pub(crate) async fn console(&self, peer: IpAddr, request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let Some(segments) = path
            .trim_start_matches('/')
            .split('/')
            .map(|segment| percent_decode(segment, false))
            .collect::<Option<Vec<String>>>()
        else {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error(None, 400, "The address has a bad %-escape."),
            );
        };
        let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = request.method().clone();
        match (&method, parts.as_slice()) {
            (&Method::GET, [""] | ["console"]) if path != "/console/" => {
                return redirect("/console/");
            }
            (&Method::GET, ["console", "static", "console.css"]) => {
                return asset("text/css; charset=utf-8", STYLE);
            }
            (&Method::GET, ["console", "static", "console.js"]) => {
                return asset("text/javascript; charset=utf-8", SCRIPT);
            }
            (&Method::GET, ["console", "login"]) => {
                let code = query_pairs(request.uri().query().unwrap_or_default())
                    .ok()
                    .and_then(|pairs| {
                        pairs
                            .into_iter()
                            .find(|(name, _)| name == "code")
                            .map(|(_, v)| v)
                    });
                let owner = code
                    .as_deref()
                    .and_then(|code| self.authenticator.login_owner(code));
                let message = (code.is_some() && owner.is_none()).then_some(
                    "This sign-in link is unknown, used or expired: run `ssh git@HOST login` again.",
                );
                return html(
                    StatusCode::OK,
                    pages::login(code.as_deref().zip(owner.as_deref()), message),
                );
            }
            (&Method::POST, ["console", "login"]) => return self.sign_in(peer, request).await,
            _ => {}
        }
        let Some(signed_in) = self.signed_in(&request) else {
            if method == Method::GET && !path.ends_with("/events") {
                return redirect("/console/login");
            }
            return html(
                StatusCode::UNAUTHORIZED,
                pages::error(None, 401, "Sign in first: your session ended."),
            );
        };
        let result = match (&method, parts.as_slice()) {
            (&Method::POST, ["console", "logout"]) => {
                return match self.checked_form(&signed_in, request).await {
                    Err(response) => response,
                    Ok(()) => {
                        self.sessions.close(&signed_in.id);
                        let mut response = redirect("/console/login");
                        if let Ok(cookie) = HeaderValue::from_str(&format!(
                            "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
                        )) {
                            response.headers_mut().insert(header::SET_COOKIE, cookie);
                        }
                        response
                    }
                };
            }
            (&Method::GET, ["console", ""]) => self.projects_page(&signed_in).await,
            (&Method::GET, ["console", "projects", project]) => {
                self.project_page(&signed_in, project).await
            }
            (&Method::GET, ["console", "projects", project, "environments", environment]) => {
                self.environment_page(&signed_in, project, environment)
                    .await
            }
            (&Method::GET, ["console", "projects", project, "releases", id, "promote"]) => {
                self.confirm_page(&signed_in, project, id).await
            }
            (&Method::POST, ["console", "projects", project, "releases", id, "promote"]) => {
                match self.checked_form(&signed_in, request).await {
                    Err(response) => return response,
                    Ok(()) => self.promote(&signed_in, project, id).await,
                }
            }
            (&Method::GET, ["console", "projects", project, "activities", id]) => {
                self.activity_page(&signed_in, project, id).await
            }
            (&Method::GET, ["console", "projects", project, "activities", id, "events"]) => {
                return self
                    .activity_events(&signed_in, project, id, &request)
                    .await;
            }
            (&Method::GET, ["console", "projects", project, "builds"]) => {
                let cursor = query_pairs(request.uri().query().unwrap_or_default())
                    .ok()
                    .and_then(|pairs| pairs.into_iter().find(|(name, _)| name == "cursor"))
                    .map(|(_, value)| value)
                    .unwrap_or_default();
                self.builds_page(&signed_in, project, &cursor).await
            }
            (&Method::GET, ["console", "projects", project, "builds", id]) => {
                self.build_page(&signed_in, project, id).await
            }
            _ => Err(Status::not_found(format!("there is no page at {path}"))),
        };
        match result {
            Ok(response) => response,
            Err(status) => {
                let refusal = Refusal::from(status);
                html(
                    refusal.status,
                    pages::error(
                        Some(&signed_in.viewer()),
                        refusal.status.as_u16(),
                        &refusal.message,
                    ),
                )
            }
        }
    }

    /// The session the request's cookie names, and who it stands for now.
    fn signed_in(&self, request: &Request<Incoming>) -> Option<SignedIn> {
        let id = cookie_of(request)?;
        let session = self.sessions.get(&id)?;
        let who = match &session.subject {
            Subject::Key(fingerprint) => self.authenticator.member(fingerprint),
            Subject::Token(secret) => self.authenticator.authenticate(secret),
        };
        let Ok(who) = who else {
            self.sessions.close(&id);
            return None;
        };
        let name = who.name();
        Some(SignedIn {
            id,
            session,
            who,
            name,
        })
    }

    /// Reads a POSTed form (the console's forms carry nothing but their
    /// CSRF token: what they act on is in the path); refuses it when its
    /// origin or CSRF token is not this session's.
    async fn checked_form(
        &self,
        signed_in: &SignedIn,
        request: Request<Incoming>,
    ) -> Result<(), Response<Body>> {
        if !same_origin(&request) {
            return Err(forged(Some(&signed_in.viewer())));
        }
        let Some(fields) = read_form(request).await else {
            return Err(forged(Some(&signed_in.viewer())));
        };
        let sent = fields
            .iter()
            .find(|(name, _)| name == "csrf")
            .map(|(_, value)| value.as_str())
            .unwrap_or_default();
        if !same_secret(sent, &signed_in.session.csrf) {
            return Err(forged(Some(&signed_in.viewer())));
        }
        Ok(())
    }

    async fn sign_in(&self, peer: IpAddr, request: Request<Incoming>) -> Response<Body> {
        if let Some(seconds) = self.limiter.retry_after(peer) {
            return html(
                StatusCode::TOO_MANY_REQUESTS,
                pages::login(
                    None,
                    Some(&format!(
                        "Too many failed sign-ins from this address: try again in {seconds} s."
                    )),
                ),
            );
        }
        if !same_origin(&request) {
            return forged(None);
        }
        let Some(fields) = read_form(request).await else {
            return html(
                StatusCode::BAD_REQUEST,
                pages::login(None, Some("The form could not be read.")),
            );
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let subject = if let Some(code) = field("code") {
            self.authenticator.redeem_login(&code).map(Subject::Key)
        } else if let Some(token) = field("token") {
            self.authenticator
                .authenticate(&token)
                .map(|_| Subject::Token(token))
        } else {
            Err("Open the link `ssh git@host login` prints, or paste an API token.".into())
        };
        let subject = match subject {
            Ok(subject) => subject,
            Err(message) => {
                self.limiter.failed(peer);
                return html(StatusCode::UNAUTHORIZED, pages::login(None, Some(&message)));
            }
        };
        let id = self.sessions.open(subject);
        let mut response = redirect("/console/");
        let cookie = format!(
            "{COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
            self.sessions.lifetime().as_secs()
        );
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
        response
    }

    /// Runs a unary operation as `who` and reads its answer.
    async fn ask<T: DeserializeOwned>(
        &self,
        who: &Principal,
        kind: ActionKind,
        fields: Value,
    ) -> Result<T, Status> {
        match call(&*self.service, kind, who, fields).await? {
            Reply::Json(value) => serde_json::from_value(value)
                .map_err(|error| Status::internal(format!("cannot read the answer: {error}"))),
            Reply::Stream(_) | Reply::Data(_) => Err(Status::internal(format!(
                "{} answered a stream",
                kind.name()
            ))),
        }
    }

    async fn projects_page(&self, signed_in: &SignedIn) -> Result<Response<Body>, Status> {
        let list: proto::ProjectList = self
            .ask(&signed_in.who, ActionKind::ListProjects, json!({}))
            .await?;
        Ok(html(
            StatusCode::OK,
            pages::projects(&signed_in.viewer(), &list),
        ))
    }

    /// A project and its environments, the head of its pages.
    async fn project_and_environments(
        &self,
        who: &Principal,
        project: &str,
    ) -> Result<(proto::ProjectInfo, proto::EnvironmentList), Status> {
        let info: proto::ProjectInfo = self
            .ask(who, ActionKind::GetProject, json!({"project": project}))
            .await?;
        let environments: proto::EnvironmentList = self
            .ask(
                who,
                ActionKind::ListEnvironments,
                json!({"project": project}),
            )
            .await?;
        Ok((info, environments))
    }

    async fn project_page(
        &self,
        signed_in: &SignedIn,
        project: &str,
    ) -> Result<Response<Body>, Status> {
        let who = &signed_in.who;
        let (info, environments) = self.project_and_environments(who, project).await?;
        let activities: proto::ActivityList = self
            .ask(
                who,
                ActionKind::ListActivities,
                json!({"project": project, "limit": 15}),
            )
            .await?;
        Ok(html(
            StatusCode::OK,
            pages::project(&signed_in.viewer(), &info, &environments, &activities),
        ))
    }

    async fn environment_page(
        &self,
        signed_in: &SignedIn,
        project: &str,
        environment: &str,
    ) -> Result<Response<Body>, Status> {
        let who = &signed_in.who;
        let (info, environments) = self.project_and_environments(who, project).await?;
        let Some(found) = environments
            .environments
            .iter()
            .find(|e| e.name == environment)
        else {
            return Err(Status::not_found(format!(
                "project `{project}` has no environment `{environment}`"
            )));
        };
        let scope = json!({"project": project, "environment": environment});
        let activities: proto::ActivityList = self
            .ask(
                who,
                ActionKind::ListActivities,
                json!({"project": project, "environment": environment, "limit": 15}),
            )
            .await?;
        let releases: proto::ReleaseList = self
            .ask(
                who,
                ActionKind::ListReleases,
                json!({"project": project, "environment": environment, "limit": 20}),
            )
            .await?;
        let variables: Result<proto::VariableList, Status> = self
            .ask(who, ActionKind::ListVariables, scope.clone())
            .await;
        let services: Result<proto::ServiceList, Status> =
            self.ask(who, ActionKind::ListServices, scope).await;
        let target = Target::environment(project, environment, environment == info.default_branch);
        let may_promote = authorize(who, ActionKind::PromoteRelease, &target, now_ms()).is_ok();
        let hidden = |status: Status| match status.code() {
            Code::PermissionDenied => format!("Not shown to you: {}", status.message()),
            _ => status.message().to_owned(),
        };
        let variables = variables.map_err(hidden);
        let services = services.map_err(hidden);
        let page = pages::EnvironmentPage {
            project,
            environment: found,
            activities: &activities.activities,
            releases: &releases.releases,
            variables: variables
                .as_ref()
                .map(|v| v.variables.as_slice())
                .map_err(Clone::clone),
            services: services
                .as_ref()
                .map(|s| s.services.as_slice())
                .map_err(Clone::clone),
            may_promote,
        };
        Ok(html(
            StatusCode::OK,
            pages::environment(&signed_in.viewer(), &page),
        ))
    }

    async fn release(
        &self,
        who: &Principal,
        project: &str,
        id: &str,
    ) -> Result<proto::ReleaseInfo, Status> {
        let release: proto::ReleaseInfo = self
            .ask(who, ActionKind::GetRelease, json!({"id": id}))
            .await?;
        if release.project != project {
            return Err(Status::not_found(format!(
                "project `{project}` has no release `{id}`"
            )));
        }
        Ok(release)
    }

    async fn confirm_page(
        &self,
        signed_in: &SignedIn,
        project: &str,
        id: &str,
    ) -> Result<Response<Body>, Status> {
        let release = self.release(&signed_in.who, project, id).await?;
        let environments: proto::EnvironmentList = self
            .ask(
                &signed_in.who,
                ActionKind::ListEnvironments,
                json!({"project": project}),
            )
            .await?;
        let serving = environments
            .environments
            .iter()
            .find(|e| e.name == release.environment)
            .map(|e| e.release.clone())
            .unwrap_or_default();
        Ok(html(
            StatusCode::OK,
            pages::confirm_promote(&signed_in.viewer(), project, &release, &serving),
        ))
    }

    /// Starts the promotion and sends the browser to its activity's page
    /// (the deploy goes on in the daemon whether or not anyone watches).
    async fn promote(
        &self,
        signed_in: &SignedIn,
        project: &str,
        id: &str,
    ) -> Result<Response<Body>, Status> {
        self.release(&signed_in.who, project, id).await?;
        let reply = call(
            &*self.service,
            ActionKind::PromoteRelease,
            &signed_in.who,
            json!({"id": id}),
        )
        .await?;
        let Reply::Stream(mut items) = reply else {
            return Err(Status::internal("PromoteRelease answered no stream"));
        };
        let first = items.next().await.transpose()?.unwrap_or_default();
        let activity = first.get("activity").and_then(Value::as_u64).unwrap_or(0);
        if activity == 0 {
            let text = first
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("the release was not promoted");
            return Err(Status::failed_precondition(text.to_owned()));
        }
        Ok(redirect(&format!(
            "/console/projects/{}/activities/{activity}",
            pages::seg(project)
        )))
    }

    async fn activity_info(
        &self,
        who: &Principal,
        project: &str,
        id: &str,
    ) -> Result<proto::ActivityInfo, Status> {
        let number: u64 = id
            .parse()
            .map_err(|_| Status::not_found(format!("there is no activity `{id}`")))?;
        let reply: proto::ActivityLogReply = self
            .ask(who, ActionKind::ActivityLog, json!({"id": number}))
            .await?;
        match reply.activity {
            Some(info) if info.project == project => Ok(info),
            _ => Err(Status::not_found(format!(
                "project `{project}` has no activity {id}"
            ))),
        }
    }

    async fn activity_page(
        &self,
        signed_in: &SignedIn,
        project: &str,
        id: &str,
    ) -> Result<Response<Body>, Status> {
        let info = self.activity_info(&signed_in.who, project, id).await?;
        Ok(html(
            StatusCode::OK,
            pages::activity(&signed_in.viewer(), project, &info),
        ))
    }

    /// The activity's log as Server-Sent Events, from `Last-Event-ID` (a
    /// reconnecting EventSource) or `?after=`.
    async fn activity_events(
        &self,
        signed_in: &SignedIn,
        project: &str,
        id: &str,
        request: &Request<Incoming>,
    ) -> Response<Body> {
        let refused = |status: Status| {
            let refusal = Refusal::from(status);
            html(
                refusal.status,
                pages::error(None, refusal.status.as_u16(), &refusal.message),
            )
        };
        let info = match self.activity_info(&signed_in.who, project, id).await {
            Ok(info) => info,
            Err(status) => return refused(status),
        };
        let after = request
            .headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .or_else(|| {
                query_pairs(request.uri().query().unwrap_or_default())
                    .ok()?
                    .into_iter()
                    .find(|(name, _)| name == "after")?
                    .1
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        let reply = call(
            &*self.service,
            ActionKind::FollowActivity,
            &signed_in.who,
            json!({"id": info.id, "after": after}),
        )
        .await;
        match reply {
            Ok(Reply::Stream(items)) => {
                let mut response = sse_response(events(ActionKind::FollowActivity, items));
                secure_headers(&mut response);
                response
            }
            Ok(_) => refused(Status::internal("FollowActivity answered no stream")),
            Err(status) => refused(status),
        }
    }

    async fn builds_page(
        &self,
        signed_in: &SignedIn,
        project: &str,
        cursor: &str,
    ) -> Result<Response<Body>, Status> {
        let list: proto::BuildList = self
            .ask(
                &signed_in.who,
                ActionKind::ListBuilds,
                json!({"project": project, "limit": 50, "cursor": cursor}),
            )
            .await?;
        Ok(html(
            StatusCode::OK,
            pages::builds(&signed_in.viewer(), project, &list),
        ))
    }

    async fn build_page(
        &self,
        signed_in: &SignedIn,
        project: &str,
        id: &str,
    ) -> Result<Response<Body>, Status> {
        let who = &signed_in.who;
        let build: proto::BuildInfo = self
            .ask(who, ActionKind::GetBuild, json!({"id": id}))
            .await?;
        if build.project != project {
            return Err(Status::not_found(format!(
                "project `{project}` has no build `{id}`"
            )));
        }
        let mut log = String::new();
        if let Reply::Stream(mut chunks) = call(
            &*self.service,
            ActionKind::BuildLogs,
            who,
            json!({"id": id, "follow": false}),
        )
        .await?
        {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                log.push_str(
                    chunk
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
                if log.len() > MAX_PAGE_LOG {
                    log.push_str(&format!(
                        "\n… (the page shows the first {} KiB: `launchway builds logs {id}` prints it all)\n",
                        MAX_PAGE_LOG / 1024
                    ));
                    break;
                }
            }
        }
        Ok(html(
            StatusCode::OK,
            pages::build(&signed_in.viewer(), project, &build, &log),
        ))
    }
}

/// A POST's `Origin`, when the browser sends one, must be this host.
fn same_origin(request: &Request<Incoming>) -> bool {
    let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .strip_prefix("https://")
        .is_some_and(|rest| !host.is_empty() && rest == host)
}

async fn read_form(request: Request<Incoming>) -> Option<Vec<(String, String)>> {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return None;
    }
    let bytes = http_body_util::Limited::new(request.into_body(), MAX_FORM)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let text = std::str::from_utf8(&bytes).ok()?;
    query_pairs(text).ok()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
