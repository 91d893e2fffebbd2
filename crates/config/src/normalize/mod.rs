//! From the validated input model to the canonical [`Config`], with the checks a
//! schema cannot express: names, paths, references between apps, services and
//! routes, cron specs. Each entry is decoded on its own, so one broken app does
//! not hide the problems of the others, and references to an entry that failed
//! to decode are not reported again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::de::DeserializeOwned;

use crate::config::{
    App, Config, Cron, Flavor, Mount, Relationship, Route, RouteTls, Runtime, Service, Web, Worker,
};
use crate::cron;

mod locations;
mod php;
mod relationships;
mod services;
mod stack;

use crate::diag::{Diagnostics, Span, did_you_mean};
use crate::layout::{Assembled, Layout};
use crate::model::{
    Any, AppConfig, ClientAuthentication, FlavorConfig, MountConfig, MountSource, Protocol,
    RelationshipConfig, RouteConfig, RouteTlsConfig, RouteType, ServiceConfig, SocketFamily,
    TlsVersionName,
};
use crate::source::{EntryKind, RepoPath, RepoSource};
use crate::yaml::Node;
use services::default_endpoint;

/// Service types that can serve a route themselves (a cache in front of apps).
const ROUTABLE_SERVICES: [&str; 1] = ["varnish"];

/// Upsun's language runtimes: their versions are dotted numbers, so any
/// other shape is a typo caught at push (other families may be imported
/// runtimes, named freely).
const LANGUAGE_RUNTIMES: [&str; 10] = [
    "dotnet", "elixir", "golang", "java", "lisp", "nodejs", "php", "python", "ruby", "rust",
];

fn is_numeric_version(version: &str) -> bool {
    !version.is_empty()
        && version.split('.').all(|part| {
            !part.is_empty() && part.len() <= 9 && part.bytes().all(|b| b.is_ascii_digit())
        })
}

fn example_version(runtime: &str) -> &'static str {
    match runtime {
        "python" => "3.11",
        "php" => "8.4",
        "nodejs" => "22",
        "golang" => "1.23",
        "ruby" => "3.3",
        "java" => "21",
        _ => "1.0",
    }
}

/// A valid app or service name (also what the daemon accepts as one).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// A cron or worker name: letters of either case, digits, `-` and `_`.
fn valid_process_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Relationships as written, by name.
type Relationships = indexmap::IndexMap<String, Option<RelationshipConfig>>;

struct Normalizer<'a> {
    doc: &'a Node,
    /// The document with every value the schema rejected removed.
    decodable: &'a serde_json::Value,
    diags: &'a mut Diagnostics,
    source: &'a dyn RepoSource,
}

/// Where a target of a relationship or route is defined, by name.
struct Targets {
    apps: BTreeSet<String>,
    services: HashMap<String, Option<(String, Vec<String>)>>,
}

pub(crate) fn normalize(
    assembled: &Assembled,
    decodable: &serde_json::Value,
    source: &dyn RepoSource,
    diags: &mut Diagnostics,
) -> Option<Config> {
    let mut n = Normalizer {
        doc: &assembled.doc,
        decodable,
        diags,
        source,
    };
    let app_names = n.names("applications");
    let service_names = n.names("services");
    for name in app_names
        .iter()
        .filter(|name| service_names.contains(*name))
    {
        let span = n.key_span(&["services", name]);
        n.diags
            .error(
                span,
                format!("`{name}` is both an application and a service"),
            )
            .hint =
            Some("relationships name their target, so names must be unique across both".into());
    }

    let mut services = BTreeMap::new();
    let mut targets = Targets {
        apps: app_names.iter().cloned().collect(),
        services: HashMap::new(),
    };
    // Service relationships can name apps, so they are resolved once all names are known.
    let mut service_relationships: Vec<(String, Option<Relationships>)> = Vec::new();
    for name in &service_names {
        let decoded: Option<ServiceConfig> = n.decode(&["services", name]);
        let service = decoded.and_then(|s| {
            service_relationships.push((name.clone(), s.relationships.clone()));
            n.service(name, s)
        });
        targets.services.insert(
            name.clone(),
            service
                .as_ref()
                .map(|s: &Service| (s.kind.clone(), s.endpoints.clone())),
        );
        if let Some(service) = service {
            services.insert(name.clone(), service);
        }
    }
    let mut apps = BTreeMap::new();
    for name in &app_names {
        if let Some(config) = n.decode::<AppConfig>(&["applications", name])
            && let Some(app) = n.app(name, config, assembled, &targets)
        {
            apps.insert(name.clone(), app);
        }
    }
    for (name, relationships) in service_relationships {
        let resolved = n.relationships(&["services", &name], relationships.as_ref(), &targets);
        if let Some(service) = services.get_mut(&name) {
            service.relationships = resolved;
        }
    }
    n.check_service_cycles(&services, &apps);
    let routes = n.routes(&targets);
    n.check_routed_apps(&routes, &apps);
    // An app that failed to load was reported already; only an empty config is news.
    let nothing_reported = !n.diags.has_errors();
    if assembled.layout == Layout::PlatformSh && app_names.is_empty() && nothing_reported {
        n.diags.error(None, "no application is defined").hint = Some(
            "add a `.platform.app.yaml` with `name` and `type`, or `.platform/applications.yaml`"
                .into(),
        );
    } else if app_names.is_empty() && nothing_reported {
        let span = Some(n.doc.span.clone());
        n.diags.error(span, "no application is defined").hint =
            Some("add an entry under `applications:`, e.g. `app: {type: \"python:3.11\"}`".into());
    }
    if n.diags.has_errors() {
        return None;
    }
    Some(Config {
        layout: assembled.layout,
        applications: apps,
        services,
        routes,
    })
}

impl Normalizer<'_> {
    fn names(&self, section: &str) -> Vec<String> {
        match self.doc.get(section).map(|n| &n.value) {
            Some(crate::yaml::Value::Map(entries)) => {
                entries.iter().map(|(k, _)| k.text.clone()).collect()
            }
            _ => Vec::new(),
        }
    }

    fn node(&self, path: &[&str]) -> Option<&Node> {
        let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        self.doc.at_path(&path).map(|(_, n)| n)
    }

    /// The span of the key at `path`, or of the value when it has no key.
    fn key_span(&self, path: &[&str]) -> Option<Span> {
        let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        self.doc
            .at_path(&path)
            .map(|(k, n)| k.map_or_else(|| n.span.clone(), |k| k.span.clone()))
    }

    fn value_span(&self, path: &[&str]) -> Option<Span> {
        self.node(path).map(|n| n.span.clone())
    }

    /// Decodes one entry; schema errors were already reported, so failure is silent.
    fn decode<T: DeserializeOwned>(&self, path: &[&str]) -> Option<T> {
        let mut value = self.decodable;
        for segment in path {
            value = value.get(segment)?;
        }
        serde_json::from_value(value.clone()).ok()
    }

    fn check_name(&mut self, what: &str, name: &str, path: &[&str]) {
        let valid = match what {
            // Only apps and services become host names; real configs use camelCase crons.
            "cron" | "worker" => valid_process_name(name),
            _ => valid_name(name),
        };
        if !valid {
            let span = self.key_span(path);
            self.diags.error(span, format!("invalid {what} name `{name}`")).hint = Some(
                if matches!(what, "cron" | "worker") {
                    "use letters, digits, `-` and `_` (at most 64)"
                } else {
                    "use lowercase letters, digits, `-` and `_`, starting with a letter or digit (at most 64)"
                }
                .into(),
            );
        }
    }

    fn note_kept(&mut self, path: &[&str], key: &str, what: &str) {
        let mut full: Vec<&str> = path.to_vec();
        full.push(key);
        let span = self.key_span(&full);
        self.diags.note(span, format!("`{key}` is kept but {what}"));
    }

    fn app(
        &mut self,
        name: &str,
        config: AppConfig,
        assembled: &Assembled,
        targets: &Targets,
    ) -> Option<App> {
        let path = ["applications", name];
        self.check_name("application", name, &path);
        if assembled.layout != Layout::PlatformSh
            && let Some(inner) = &config.name
            && inner != name
        {
            let span = self.value_span(&["applications", name, "name"]);
            self.diags.error(
                span,
                format!("`name` differs from the application's key `{name}`"),
            );
        }
        let runtime = self.runtime(name, &config)?;
        let source_root = self.source_root(name, &config, assembled)?;
        // A composable image keeps the defaults of an HTTP app (its start
        // command says how it serves), PHP in its stack or not.
        let is_php = runtime.family() == "php";
        if let Runtime::Composable { stack, .. } = &runtime {
            self.check_stack(name, stack);
        }
        let flavor = match (
            config.build.as_ref().and_then(|b| b.flavor),
            runtime.family(),
        ) {
            (Some(FlavorConfig::None), _) => Flavor::None,
            (Some(FlavorConfig::Composer | FlavorConfig::Drupal | FlavorConfig::Symfony), _) => {
                Flavor::Composer
            }
            (None | Some(FlavorConfig::Default), "php") => Flavor::Composer,
            (None | Some(FlavorConfig::Default), "nodejs") => Flavor::Npm,
            (None | Some(FlavorConfig::Default), _) => Flavor::None,
        };
        let web_config = config.web.clone().unwrap_or_default();
        let commands = web_config.commands.clone().unwrap_or_default();
        let upstream = web_config.upstream.clone().unwrap_or_default();
        let web = Web {
            pre_start: commands.pre_start,
            start: commands
                .start
                .or_else(|| is_php.then(|| "/usr/bin/start-php-app".to_owned())),
            post_start: commands.post_start,
            socket_family: upstream.socket_family.unwrap_or(if is_php {
                SocketFamily::Unix
            } else {
                SocketFamily::Tcp
            }),
            protocol: upstream.protocol.unwrap_or(if is_php {
                Protocol::Fastcgi
            } else {
                Protocol::Http
            }),
            locations: web_config.locations.clone().unwrap_or_default(),
        };
        self.check_locations(name, &web.locations);
        let php_sizing = if is_php {
            self.check_php_runtime(name, config.runtime.as_ref());
            self.php_sizing(name, config.runtime.as_ref())
        } else {
            None
        };
        let mounts = self.mounts(
            &["applications", name, "mounts"],
            config.mounts.as_ref(),
            targets,
        );
        let relationships = self.relationships(
            &["applications", name],
            config.relationships.as_ref(),
            targets,
        );
        let variables = self.variables(
            &["applications", name, "variables"],
            config.variables.as_ref(),
        );
        let crons = self.crons(name, &config);
        let workers = self.workers(name, &config, &mounts, &relationships, &variables, targets);

        let mut kept = BTreeMap::new();
        for (key, value, what) in [
            (
                "disk",
                to_json(&config.disk),
                "disk quotas are not enforced yet",
            ),
            (
                "size",
                to_json(&config.size),
                "container sizes are not applied yet",
            ),
            (
                "resources",
                to_json(&config.resources),
                "resource settings are not applied yet",
            ),
            (
                "container_profile",
                to_json(&config.container_profile),
                "container profiles are not applied yet",
            ),
            (
                "access",
                to_json(&config.access),
                "shell access to apps is not offered yet",
            ),
            (
                "firewall",
                to_json(&config.firewall),
                "outbound firewall rules are not enforced yet",
            ),
            (
                "runtime",
                to_json(&config.runtime).filter(|runtime| {
                    // PHP's extension lists and sizing hints are applied;
                    // other keys are not.
                    !is_php
                        || runtime.as_object().is_some_and(|keys| {
                            keys.keys().any(|k| {
                                !["extensions", "disabled_extensions", "sizing_hints"]
                                    .contains(&k.as_str())
                            })
                        })
                }),
                if is_php {
                    "only `extensions`, `disabled_extensions` and `sizing_hints` are applied yet"
                } else {
                    "runtime settings are not applied yet"
                },
            ),
            (
                "additional_hosts",
                to_json(&config.additional_hosts),
                "extra hosts are not added yet",
            ),
            (
                "operations",
                to_json(&config.operations),
                "runtime operations are not offered yet",
            ),
            (
                "preflight",
                to_json(&config.preflight),
                "preflight checks are not run yet",
            ),
        ] {
            if let Some(value) = value {
                self.note_kept(
                    &path,
                    key,
                    &format!("Launchway does not act on it yet: {what}"),
                );
                kept.insert(key.to_owned(), value);
            }
        }
        if let Some(ops) = config.source.as_ref().and_then(|s| s.operations.clone()) {
            self.note_kept(
                &["applications", name, "source"],
                "operations",
                "Launchway does not offer source operations yet",
            );
            kept.insert("source.operations".into(), ops);
        }
        if let Some(caches) = config.build.as_ref().and_then(|b| b.caches.clone()) {
            self.note_kept(
                &["applications", name, "build"],
                "caches",
                "Launchway does not act on it yet: use `$PLATFORM_CACHE_DIR`",
            );
            kept.insert("build.caches".into(), caches);
        }
        for legacy in [
            "document_root",
            "passthru",
            "index_files",
            "whitelist",
            "blacklist",
            "expires",
            "move_to_root",
        ] {
            if self.node(&["applications", name, "web", legacy]).is_some() {
                self.note_kept(
                    &["applications", name, "web"],
                    legacy,
                    "this legacy `web` key is not acted on",
                );
                if let Some(v) = self
                    .node(&["applications", name, "web", legacy])
                    .map(Node::to_json)
                {
                    kept.insert(format!("web.{legacy}"), v);
                }
            }
        }
        if let Some(tz) = &config.timezone
            && !valid_timezone(tz)
        {
            let span = self.value_span(&["applications", name, "timezone"]);
            self.diags
                .error(span, format!("invalid time zone `{tz}`"))
                .hint = Some("use a tz database name such as `UTC` or `Europe/Paris`".into());
        }
        Some(App {
            name: name.to_owned(),
            runtime,
            source_root: source_root.as_str().to_owned(),
            flavor,
            dependencies: config
                .dependencies
                .unwrap_or_default()
                .into_iter()
                .map(|(manager, pkgs)| (manager, pkgs.into_iter().map(|(p, v)| (p, v.0)).collect()))
                .collect(),
            hooks: config.hooks.unwrap_or_default(),
            web,
            mounts,
            relationships,
            variables,
            crons,
            workers,
            timezone: config.timezone.unwrap_or_else(|| "UTC".into()),
            disabled_extensions: if is_php {
                php::disabled_extensions(config.runtime.as_ref())
            } else {
                Vec::new()
            },
            php_extension_settings: if is_php {
                php::extension_settings(config.runtime.as_ref())
            } else {
                BTreeMap::new()
            },
            php_sizing,
            kept,
        })
    }

    fn runtime(&mut self, name: &str, config: &AppConfig) -> Option<Runtime> {
        let app_type = config.app_type.as_deref();
        match (app_type.and_then(|t| t.split_once(':')), &config.stack) {
            (Some(("composable", channel)), Some(stack)) => Some(Runtime::Composable {
                channel: Some(channel.to_owned()),
                stack: stack.clone(),
            }),
            (None, Some(stack)) if app_type.is_none() => Some(Runtime::Composable {
                channel: None,
                stack: stack.clone(),
            }),
            (Some(("composable", _)), None) => {
                let span = self.value_span(&["applications", name, "type"]);
                self.diags
                    .error(span, "a `composable` type needs a `stack`")
                    .hint = Some(
                    "list the runtimes and packages, e.g. `stack: [\"php@8.4\", \"nodejs@22\"]`"
                        .into(),
                );
                None
            }
            (Some(_), Some(_)) => {
                let span = self.key_span(&["applications", name, "stack"]);
                self.diags.error(
                    span,
                    "`stack` goes with a `composable:<channel>` type, or with no `type`",
                );
                None
            }
            (Some((runtime, version)), None) => {
                if LANGUAGE_RUNTIMES.contains(&runtime) && !is_numeric_version(version) {
                    let span = self.value_span(&["applications", name, "type"]);
                    self.diags
                        .error(
                            span,
                            format!(
                                "`{runtime}:{version}`: a {runtime} version is numbers, such as `{runtime}:{}`",
                                example_version(runtime)
                            ),
                        )
                        .hint = Some(
                        "`launchway runtimes list` shows the versions this host builds; others run the nearest"
                            .into(),
                    );
                    return None;
                }
                Some(Runtime::Single {
                    name: runtime.to_owned(),
                    version: version.to_owned(),
                })
            }
            (None, _) => {
                // A malformed `type` was already reported by the schema.
                if self.node(&["applications", name, "type"]).is_none() {
                    let span = self.key_span(&["applications", name]);
                    self.diags
                        .error(
                            span,
                            format!("missing required key `type` in application `{name}`"),
                        )
                        .hint =
                        Some("e.g. `type: \"python:3.11\"` (or a composable `stack`)".into());
                }
                None
            }
        }
    }

    fn source_root(
        &mut self,
        name: &str,
        config: &AppConfig,
        assembled: &Assembled,
    ) -> Option<RepoPath> {
        let written = config.source.as_ref().and_then(|s| s.root.as_deref());
        let Some(written) = written else {
            return Some(
                assembled
                    .default_roots
                    .get(name)
                    .cloned()
                    .unwrap_or_default(),
            );
        };
        let span = self.value_span(&["applications", name, "source", "root"]);
        let root = match RepoPath::parse(written) {
            Ok(root) => root,
            Err(e) => {
                self.diags.error(span, format!("`source.root`: {e}"));
                return None;
            }
        };
        match self.source.kind(&root) {
            Ok(Some(EntryKind::Dir)) => Some(root),
            Ok(_) => {
                self.diags.error(
                    span,
                    format!("`source.root` `{written}` is not a directory of the repository"),
                );
                None
            }
            Err(e) => {
                self.diags
                    .error(span, format!("`source.root` `{written}`: {e}"));
                None
            }
        }
    }

    fn mounts(
        &mut self,
        path: &[&str],
        mounts: Option<&indexmap::IndexMap<String, MountConfig>>,
        targets: &Targets,
    ) -> BTreeMap<String, Mount> {
        let mut result: BTreeMap<String, Mount> = BTreeMap::new();
        let mut spans: BTreeMap<String, Option<Span>> = BTreeMap::new();
        for (written, config) in mounts.into_iter().flatten() {
            let mut key_path = path.to_vec();
            key_path.push(written);
            let span = self.key_span(&key_path);
            let Some(normalized) = self.mount_path(written, span.clone()) else {
                continue;
            };
            let mount = match config {
                MountConfig::Legacy(text) => match text.strip_prefix("shared:files") {
                    Some(rest) if rest.split('/').any(|c| c == "..") => {
                        let span = self.value_span(&key_path);
                        self.diags
                            .error(span, format!("mount `{text}` must not contain `..`"));
                        continue;
                    }
                    Some(rest) if rest.is_empty() || rest.starts_with('/') => Mount {
                        source: MountSource::Local,
                        source_path: rest.trim_matches('/').to_owned(),
                        service: None,
                    },
                    _ => {
                        let span = self.value_span(&key_path);
                        self.diags.error(span, format!("invalid mount `{text}`")).hint =
                            Some("the short form is `\"shared:files/<path>\"`; otherwise write `{source: local, source_path: <path>}`".into());
                        continue;
                    }
                },
                MountConfig::Full(full) => {
                    let source = if full.source == MountSource::Temporary {
                        MountSource::Tmp
                    } else {
                        full.source
                    };
                    let source_path = match &full.source_path {
                        None => normalized.clone(),
                        Some(sp) => {
                            if sp.split('/').any(|c| c == "..") {
                                let mut sp_path = key_path.clone();
                                sp_path.push("source_path");
                                let span = self.value_span(&sp_path);
                                self.diags.error(
                                    span,
                                    format!("`source_path` `{sp}` must not contain `..`"),
                                );
                                continue;
                            }
                            sp.trim_matches('/').to_owned()
                        }
                    };
                    match (&full.service, source) {
                        (Some(service), MountSource::Service) => {
                            self.check_storage_service(service, &key_path, targets)
                        }
                        (None, MountSource::Service) => {
                            self.diags.error(
                                span.clone(),
                                format!("mount `{written}` has `source: service` but no `service`"),
                            );
                        }
                        (Some(_), _) => {
                            let mut sp = key_path.clone();
                            sp.push("service");
                            let span = self.key_span(&sp);
                            self.diags
                                .warning(span, "`service` is ignored unless `source: service`");
                        }
                        (None, _) => {}
                    }
                    Mount {
                        source,
                        source_path,
                        service: full.service.clone(),
                    }
                }
            };
            if let Some(previous) = spans.get(&normalized) {
                let at = previous
                    .as_ref()
                    .map_or_else(String::new, |s| format!(" (first at {s})"));
                self.diags
                    .error(span, format!("mount `{written}` is defined twice{at}"));
                continue;
            }
            spans.insert(normalized.clone(), span);
            result.insert(normalized, mount);
        }
        // Nested mounts (`var` and `var/log`) work when each has its own storage, as
        // in Magento's official template; when the inner one's data would live inside
        // the outer one's volume, the same files would show at two paths: an error.
        // Sorted order puts a parent before its children.
        let keys: Vec<String> = result.keys().cloned().collect();
        for (i, outer) in keys.iter().enumerate() {
            for inner in &keys[i + 1..] {
                if !inner.starts_with(&format!("{outer}/")) {
                    continue;
                }
                let span = spans.get(inner).cloned().flatten();
                let (a, b) = (&result[outer], &result[inner]);
                if a.source == b.source
                    && a.service == b.service
                    && paths_overlap(&a.source_path, &b.source_path)
                {
                    self.diags
                        .error(span, format!("mount `{inner}` is nested inside mount `{outer}` and shares its storage"))
                        .hint = Some(format!(
                        "their `source_path`s (`{}` and `{}`) overlap, so the same files would appear twice; give them separate `source_path`s or mount the parent only",
                        a.source_path, b.source_path
                    ));
                } else {
                    self.diags
                        .warning(
                            span,
                            format!("mount `{inner}` is nested inside mount `{outer}`"),
                        )
                        .hint = Some(format!(
                        "`{inner}` hides that part of `{outer}`; sibling mounts are clearer"
                    ));
                }
            }
        }
        result
    }

    /// `web/uploads`, `/web/uploads/` → `web/uploads`; a leading `/` means the app root.
    fn mount_path(&mut self, written: &str, span: Option<Span>) -> Option<String> {
        let trimmed = written.trim_matches('/');
        let components: Vec<&str> = trimmed.split('/').collect();
        if trimmed.is_empty() {
            self.diags
                .error(
                    span,
                    format!("mount path `{written}` would hide the whole application"),
                )
                .hint = Some("mount a subdirectory, e.g. `var` or `web/uploads`".into());
            return None;
        }
        if components
            .iter()
            .any(|c| *c == ".." || *c == "." || c.is_empty())
            || written.contains(['\\', '\0'])
        {
            self.diags
                .error(
                    span,
                    format!("mount path `{written}` must be a plain path inside the application"),
                )
                .hint = Some(
                "paths are relative to the app root and cannot contain `..`, `.` or `//`".into(),
            );
            return None;
        }
        Some(components.join("/"))
    }

    fn check_storage_service(&mut self, service: &str, key_path: &[&str], targets: &Targets) {
        let mut sp = key_path.to_vec();
        sp.push("service");
        let span = self.value_span(&sp);
        match targets.services.get(service) {
            None => {
                let d = self
                    .diags
                    .error(span, format!("mount service `{service}` is not defined"));
                if let Some(best) =
                    did_you_mean(service, targets.services.keys().map(String::as_str))
                {
                    d.hint = Some(format!("did you mean `{best}`?"));
                }
            }
            Some(Some((kind, _))) if kind != "network-storage" => {
                self.diags.error(
                    span,
                    format!(
                        "mount service `{service}` is a `{kind}` service, not `network-storage`"
                    ),
                );
            }
            _ => {}
        }
    }

    fn variables(
        &mut self,
        path: &[&str],
        variables: Option<&BTreeMap<String, Option<BTreeMap<String, Any>>>>,
    ) -> BTreeMap<String, BTreeMap<String, Any>> {
        let mut result = BTreeMap::new();
        for (prefix, vars) in variables.into_iter().flatten() {
            let vars = vars.clone().unwrap_or_default();
            if prefix == "env" {
                for (name, value) in &vars {
                    let mut p = path.to_vec();
                    p.push("env");
                    p.push(name);
                    if !valid_env_name(name) {
                        let span = self.key_span(&p);
                        self.diags
                            .error(span, format!("invalid environment variable name `{name}`"))
                            .hint =
                            Some("use letters, digits and `_`, not starting with a digit".into());
                    }
                    if value.is_object() || value.is_array() {
                        let span = self.value_span(&p);
                        self.diags.warning(
                            span,
                            format!(
                                "`env:{name}` is a list or map; it will be passed as JSON text"
                            ),
                        );
                    }
                }
            }
            result.insert(prefix.clone(), vars);
        }
        result
    }

    fn crons(&mut self, app: &str, config: &AppConfig) -> BTreeMap<String, Cron> {
        let mut result = BTreeMap::new();
        for (name, cron) in config.crons.iter().flatten() {
            let path = ["applications", app, "crons", name];
            self.check_name("cron", name, &path);
            if let Err(why) = cron::check(&cron.spec) {
                let span = self.value_span(&["applications", app, "crons", name, "spec"]);
                self.diags
                    .error(span, format!("invalid cron spec `{}`: {why}", cron.spec));
                continue;
            }
            let start = match (&cron.commands, &cron.cmd) {
                (Some(commands), None) => commands.start.clone(),
                (None, Some(cmd)) => cmd.clone(),
                (Some(commands), Some(_)) => {
                    let span = self.key_span(&["applications", app, "crons", name, "cmd"]);
                    self.diags.warning(
                        span,
                        "legacy `cmd` is ignored because `commands.start` is set",
                    );
                    commands.start.clone()
                }
                (None, None) => {
                    let span = self.key_span(&path);
                    self.diags
                        .error(span, format!("cron `{name}` has nothing to run"))
                        .hint = Some("add `commands: {start: \"…\"}`".into());
                    continue;
                }
            };
            result.insert(
                name.clone(),
                Cron {
                    spec: cron.spec.clone(),
                    start,
                    stop: cron.commands.as_ref().and_then(|c| c.stop.clone()),
                    shutdown_timeout: cron.shutdown_timeout.unwrap_or(10),
                    timeout: cron.timeout.unwrap_or(86_400),
                },
            );
        }
        result
    }

    fn workers(
        &mut self,
        app: &str,
        config: &AppConfig,
        mounts: &BTreeMap<String, Mount>,
        relationships: &BTreeMap<String, Relationship>,
        variables: &BTreeMap<String, BTreeMap<String, Any>>,
        targets: &Targets,
    ) -> BTreeMap<String, Worker> {
        let mut result = BTreeMap::new();
        for (name, worker) in config.workers.iter().flatten() {
            let path = ["applications", app, "workers", name];
            self.check_name("worker", name, &path);
            let commands = worker.commands.clone().unwrap_or_default();
            let Some(start) = commands.start else {
                let span = self.key_span(&path);
                self.diags
                    .error(span, format!("worker `{name}` has no `commands.start`"))
                    .hint = Some("a worker is a process: add `commands: {start: \"…\"}`".into());
                continue;
            };
            let own_mounts = worker.mounts.as_ref().map(|m| {
                self.mounts(
                    &["applications", app, "workers", name, "mounts"],
                    Some(m),
                    targets,
                )
            });
            let own_relationships = worker
                .relationships
                .as_ref()
                .map(|r| self.relationships(&path, Some(r), targets));
            let own_variables = worker.variables.as_ref().map(|v| {
                self.variables(
                    &["applications", app, "workers", name, "variables"],
                    Some(v),
                )
            });
            let mut kept = BTreeMap::new();
            keep(&mut kept, "disk", &worker.disk);
            keep(&mut kept, "size", &worker.size);
            keep(&mut kept, "resources", &worker.resources);
            keep(&mut kept, "container_profile", &worker.container_profile);
            keep(&mut kept, "access", &worker.access);
            keep(&mut kept, "firewall", &worker.firewall);
            result.insert(
                name.clone(),
                Worker {
                    pre_start: commands.pre_start,
                    start,
                    post_start: commands.post_start,
                    mounts: own_mounts.unwrap_or_else(|| mounts.clone()),
                    relationships: own_relationships.unwrap_or_else(|| relationships.clone()),
                    variables: own_variables.unwrap_or_else(|| variables.clone()),
                    kept,
                },
            );
        }
        result
    }

    /// Checks a route's `tls` block (Upsun's semantics: HSTS off unless
    /// enabled, a year's `max-age`; client CAs only with
    /// `client_authentication`).
    fn route_tls(&mut self, url: &str, config: &RouteTlsConfig) -> RouteTls {
        let path = ["routes", url, "tls"];
        if !url.starts_with("https://") {
            self.diags.warning(
                self.key_span(&path),
                format!("`tls` of `{url}` is ignored: only `https://` routes use TLS"),
            );
        }
        let strict_transport_security = config
            .strict_transport_security
            .as_ref()
            .filter(|hsts| hsts.enabled == Some(true))
            .map(|hsts| {
                let mut value = format!("max-age={}", hsts.max_age.unwrap_or(31_536_000));
                if hsts.include_subdomains == Some(true) {
                    value.push_str("; includeSubDomains");
                }
                if hsts.preload == Some(true) {
                    value.push_str("; preload");
                }
                value
            });
        if let Some(hsts) = &config.strict_transport_security
            && hsts.preload == Some(true)
            && (hsts.include_subdomains != Some(true)
                || hsts.max_age.is_some_and(|age| age < 31_536_000))
        {
            self.diags.warning(
                self.key_span(&["routes", url, "tls", "strict_transport_security", "preload"]),
                "browsers' preload lists need `include_subdomains: true` and a `max_age` of at least a year",
            );
        }
        let mut client_certificate_authorities = Vec::new();
        for (index, pem) in config
            .client_certificate_authorities
            .iter()
            .flatten()
            .enumerate()
        {
            if pem.contains("-----BEGIN CERTIFICATE-----") {
                client_certificate_authorities.push(pem.clone());
            } else {
                let index = index.to_string();
                self.diags
                    .error(
                        self.value_span(&[
                            "routes",
                            url,
                            "tls",
                            "client_certificate_authorities",
                            &index,
                        ]),
                        "not a PEM certificate (no `-----BEGIN CERTIFICATE-----` block)",
                    )
                    .hint =
                    Some("include the CA's file: `!include {type: string, path: ca.crt}`".into());
            }
        }
        let require_client_certificate =
            config.client_authentication == Some(ClientAuthentication::Require);
        if config.client_authentication.is_some()
            && config
                .client_certificate_authorities
                .as_ref()
                .is_none_or(Vec::is_empty)
        {
            self.diags.error(
                self.key_span(&["routes", url, "tls", "client_authentication"]),
                "`client_authentication` needs `client_certificate_authorities`: the CAs client certificates must chain to",
            );
        }
        if config.client_authentication.is_none() && !client_certificate_authorities.is_empty() {
            self.diags.warning(
                self.key_span(&["routes", url, "tls", "client_certificate_authorities"]),
                "client CAs are ignored without `client_authentication: require`",
            );
            client_certificate_authorities.clear();
        }
        RouteTls {
            strict_transport_security,
            tls13_only: config.min_version == Some(TlsVersionName::Tls13),
            require_client_certificate,
            client_certificate_authorities,
        }
    }

    fn routes(&mut self, targets: &Targets) -> Vec<Route> {
        let urls = self.names("routes");
        let mut routes: Vec<Route> = Vec::new();
        let mut primary_span: Option<Option<Span>> = None;
        let mut ids: HashMap<String, Option<Span>> = HashMap::new();
        for url in &urls {
            let path = ["routes", url.as_str()];
            let Some(config) = self.decode::<RouteConfig>(&path) else {
                continue;
            };
            let key_span = self.key_span(&path);
            if !valid_route_url(url) {
                self.diags.error(key_span.clone(), format!("invalid route `{url}`")).hint =
                    Some("a route is a URL template such as `https://{default}/` or `https://www.{default}/blog`".into());
                continue;
            }
            let mut upstream = None;
            match config.route_type {
                RouteType::Upstream => {
                    let Some(target) = &config.upstream else {
                        self.diags
                            .error(
                                key_span.clone(),
                                format!("upstream route `{url}` has no `upstream`"),
                            )
                            .hint = Some("e.g. `upstream: \"app:http\"`".into());
                        continue;
                    };
                    let span = self.value_span(&["routes", url, "upstream"]);
                    let (app, protocol) = target.split_once(':').unwrap_or((target, "http"));
                    if protocol != "http" {
                        self.diags.error(
                            span.clone(),
                            format!(
                                "route upstream `{target}` must use `http`, as in `{app}:http`"
                            ),
                        );
                    }
                    let routable_service = matches!(
                        targets.services.get(app),
                        Some(Some((kind, _))) if ROUTABLE_SERVICES.contains(&kind.as_str())
                    );
                    // A service whose type or configuration failed was reported.
                    let failed_service = matches!(targets.services.get(app), Some(None));
                    if failed_service {
                        continue;
                    }
                    if !targets.apps.contains(app) && !routable_service {
                        let d = self.diags.error(
                            span,
                            format!("route `{url}` points to `{app}`, which is not an application"),
                        );
                        if let Some(best) =
                            did_you_mean(app, targets.apps.iter().map(String::as_str))
                        {
                            d.hint = Some(format!("did you mean `{best}`?"));
                        }
                        continue;
                    }
                    upstream = Some(app.to_owned());
                }
                RouteType::Redirect | RouteType::Proxy => {
                    if config.to.is_none() {
                        self.diags.error(
                            key_span.clone(),
                            format!(
                                "{} route `{url}` has no `to`",
                                route_type_name(config.route_type)
                            ),
                        );
                        continue;
                    }
                    if config.upstream.is_some() {
                        let span = self.key_span(&["routes", url, "upstream"]);
                        self.diags.warning(
                            span,
                            "`upstream` is ignored on a route that is not `type: upstream`",
                        );
                    }
                }
            }
            if config.primary == Some(true) {
                if let Some(first) = &primary_span {
                    let span = self.key_span(&["routes", url, "primary"]);
                    let at = first
                        .as_ref()
                        .map_or_else(String::new, |s| format!(" (first at {s})"));
                    self.diags
                        .error(span, format!("more than one route is `primary: true`{at}"));
                } else {
                    primary_span = Some(self.key_span(&["routes", url, "primary"]));
                }
            }
            if let Some(id) = &config.id {
                let span = self.value_span(&["routes", url, "id"]);
                if let Some(first) = ids.get(id) {
                    let at = first
                        .as_ref()
                        .map_or_else(String::new, |s| format!(" (first at {s})"));
                    self.diags
                        .error(span, format!("route id `{id}` is used twice{at}"));
                } else {
                    ids.insert(id.clone(), span);
                }
            }
            let mut kept = BTreeMap::new();
            let tls = config.tls.as_ref().map(|tls| self.route_tls(url, tls));
            for (key, value) in [("ssi", &config.ssi), ("sticky", &config.sticky)] {
                if let Some(value) = value {
                    self.note_kept(&path, key, "Launchway's router does not act on it yet");
                    kept.insert(key.to_owned(), value.clone());
                }
            }
            if config.cache.is_some() {
                self.note_kept(&path, "cache", "Launchway's router does not cache yet");
            }
            if config.redirects.is_some() {
                self.note_kept(
                    &path,
                    "redirects",
                    "Launchway's router does not apply partial redirects yet",
                );
            }
            routes.push(Route {
                url: url.clone(),
                route_type: config.route_type,
                upstream,
                to: config.to,
                id: config.id,
                primary: config.primary == Some(true),
                cache: config.cache,
                redirects: config.redirects,
                attributes: config.attributes.unwrap_or_default(),
                generated: false,
                tls,
                kept,
            });
        }
        if urls.is_empty() {
            match targets.apps.iter().next() {
                Some(app) if targets.apps.len() == 1 => routes.push(generated_route(
                    "https://{default}/",
                    RouteType::Upstream,
                    Some(app.clone()),
                    None,
                )),
                Some(_) => {
                    self.diags.warning(None, "no routes are defined, so no application receives traffic").hint =
                        Some("with several applications, add `routes:` naming which app serves which URL".into());
                }
                None => {}
            }
        }
        // http:// twins of https:// routes redirect, unless the author wrote them.
        let written: BTreeSet<String> = routes.iter().map(|r| r.url.clone()).collect();
        let twins: Vec<Route> = routes
            .iter()
            .filter_map(|r| {
                let rest = r.url.strip_prefix("https://")?;
                let http = format!("http://{rest}");
                (!written.contains(&http))
                    .then(|| generated_route(&http, RouteType::Redirect, None, Some(r.url.clone())))
            })
            .collect();
        routes.extend(twins);
        if !routes.iter().any(|r| r.primary)
            && let Some(first) = routes
                .iter_mut()
                .find(|r| r.route_type == RouteType::Upstream)
        {
            first.primary = true;
        }
        routes
    }

    /// An app that a route sends traffic to must have something to serve it with.
    fn check_routed_apps(&mut self, routes: &[Route], apps: &BTreeMap<String, App>) {
        let mut checked = BTreeSet::new();
        // Routes the author wrote first: they make a missing start command an error.
        let mut ordered: Vec<&Route> = routes.iter().filter(|r| !r.generated).collect();
        ordered.extend(routes.iter().filter(|r| r.generated));
        for route in ordered {
            let Some(name) = route.upstream.as_deref() else {
                continue;
            };
            let Some(app) = apps.get(name) else { continue };
            // A composable image's default start command depends on its stack.
            let composable = matches!(app.runtime, Runtime::Composable { .. });
            if !checked.insert(name)
                || composable
                || app.web.start.is_some()
                || !app.web.locations.is_empty()
            {
                continue;
            }
            let span = self.key_span(&["applications", name]);
            let hint = format!(
                "a `{}` app needs a start command that listens on `$PORT`, e.g. `web: {{commands: {{start: \"…\"}}}}`",
                app.runtime.family()
            );
            if route.generated {
                self.diags
                    .warning(span, format!("application `{name}` has no `web.commands.start`, so the default route to it will fail"))
                    .hint = Some(hint);
            } else {
                self.diags
                    .error(span, format!("application `{name}` receives traffic from `{}` but has no `web.commands.start`", route.url))
                    .hint = Some(hint);
            }
        }
    }
}

/// Whether two volume subdirectories overlap (one is the other, or inside it).
fn paths_overlap(a: &str, b: &str) -> bool {
    a.is_empty()
        || b.is_empty()
        || a == b
        || b.starts_with(&format!("{a}/"))
        || a.starts_with(&format!("{b}/"))
}

fn route_type_name(t: RouteType) -> &'static str {
    match t {
        RouteType::Upstream => "upstream",
        RouteType::Redirect => "redirect",
        RouteType::Proxy => "proxy",
    }
}

fn generated_route(
    url: &str,
    route_type: RouteType,
    upstream: Option<String>,
    to: Option<String>,
) -> Route {
    Route {
        url: url.to_owned(),
        route_type,
        upstream,
        to,
        id: None,
        primary: false,
        cache: None,
        redirects: None,
        attributes: BTreeMap::new(),
        generated: true,
        tls: None,
        kept: BTreeMap::new(),
    }
}

/// `http(s)://` + a host made of `{default}`, `{all}`, `*.` and DNS labels + an optional path.
fn valid_route_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    let host = host.strip_prefix("*.").unwrap_or(host);
    !host.is_empty()
        && host
            .replace("{default}", "d")
            .replace("{all}", "a")
            .split('.')
            .all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
        && !rest.contains(char::is_whitespace)
}

/// `UTC`, or `Area/Location` made of tz database characters.
fn valid_timezone(tz: &str) -> bool {
    !tz.is_empty()
        && tz.len() <= 64
        && tz
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
        && !tz.starts_with('/')
        && !tz.contains("..")
}

fn to_json<T: serde::Serialize>(value: &Option<T>) -> Option<Any> {
    value.as_ref().and_then(|v| serde_json::to_value(v).ok())
}

fn keep<T: serde::Serialize>(kept: &mut BTreeMap<String, Any>, key: &str, value: &Option<T>) {
    if let Some(v) = to_json(value) {
        kept.insert(key.to_owned(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates() {
        for ok in [
            "https://{default}/",
            "http://www.{default}/blog",
            "https://*.{default}/",
            "https://{all}/",
            "https://example.com/",
        ] {
            assert!(valid_route_url(ok), "{ok}");
        }
        for bad in [
            "{default}/",
            "ftp://{default}/",
            "https:///",
            "https://a b/",
            "https://a..b/",
        ] {
            assert!(!valid_route_url(bad), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(valid_name("app") && valid_name("my_app-2") && valid_name("2fa"));
        assert!(!valid_name("App") && !valid_name("-x") && !valid_name("") && !valid_name("a b"));
        assert!(valid_env_name("NODE_ENV") && !valid_env_name("1X") && !valid_env_name("A-B"));
    }
}
