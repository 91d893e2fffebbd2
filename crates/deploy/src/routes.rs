//! Route templates resolved for one environment.
//!
//! - `{default}` (and `{all}`, which equals it with no custom domains) is
//!   `<branch>.<project>.<base domain>`, the branch lowercased with anything
//!   outside `[a-z0-9-]` turned into `-`;
//! - an absolute host is kept in the production environment and gets the
//!   environment's default host appended elsewhere, so previews never take a
//!   production name;
//! - with an HTTPS listener (`https_port`), `https://` routes resolve to
//!   `https://` URLs on that port and the router redirects plain requests
//!   to them; without one they are served as `http://` on the router's
//!   port. Either way a redirect that would send a host and path to itself
//!   (the generated http→https twins) is dropped, as the router's own
//!   redirect does that job; the first route for a host and path wins;
//! - wildcard hosts and `proxy` routes are not served yet: they are reported,
//!   not silently dropped.

use std::collections::{BTreeSet, HashSet};

use launchway_config::{Route, model::RouteType};
use serde::{Deserialize, Serialize};

/// What the environment's host names are made of.
#[derive(Clone, Debug)]
pub struct RouteContext<'a> {
    pub project: &'a str,
    pub branch: &'a str,
    pub base_domain: &'a str,
    /// The router's public port; omitted from URLs when 80.
    pub port: u16,
    /// The router's public HTTPS port when it serves HTTPS; omitted from
    /// URLs when 443.
    pub https_port: Option<u16>,
    /// The production (default) environment keeps absolute hosts as written.
    pub production: bool,
}

/// Upstream or redirect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    Upstream,
    Redirect,
}

/// One route of an environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedRoute {
    /// `http://host[:port]/path`.
    pub url: String,
    /// Lowercase host.
    pub host: String,
    /// Path prefix, starting with `/`.
    pub path: String,
    pub kind: RouteKind,
    /// The app serving an upstream route.
    pub upstream: Option<String>,
    /// A redirect's resolved target.
    pub to: Option<String>,
    pub original_url: String,
    pub primary: bool,
    pub id: Option<String>,
    pub attributes: serde_json::Value,
    /// An `https://` route's TLS settings.
    #[serde(default)]
    pub tls: Option<launchway_config::RouteTls>,
}

/// A DNS label from a branch or project name.
pub fn host_label(name: &str) -> String {
    let mut label: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    label = label.trim_matches('-').to_string();
    label.truncate(63);
    let label = label.trim_end_matches('-').to_string();
    if label.is_empty() {
        "x".to_string()
    } else {
        label
    }
}

/// `<branch>.<project>.<base domain>`.
pub fn default_host(context: &RouteContext<'_>) -> String {
    format!(
        "{}.{}.{}",
        host_label(context.branch),
        host_label(context.project),
        context.base_domain.trim_matches('.').to_ascii_lowercase()
    )
}

/// The host and path of a template, `None` when it cannot be served.
fn resolve_template(
    template: &str,
    context: &RouteContext<'_>,
) -> Result<(String, String), String> {
    let rest = template
        .strip_prefix("https://")
        .or_else(|| template.strip_prefix("http://"))
        .unwrap_or(template);
    let (host, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    if host.contains('*') {
        return Err(format!("wildcard host in '{template}' is not served yet"));
    }
    let default = default_host(context);
    let resolved = if host.contains("{default}") || host.contains("{all}") {
        host.replace("{default}", &default)
            .replace("{all}", &default)
    } else if host.is_empty() {
        default
    } else if context.production {
        host.to_string()
    } else {
        format!("{host}.{default}")
    };
    Ok((resolved.to_ascii_lowercase(), path.to_string()))
}

/// The URL a template resolves to: `https://` on the HTTPS port when the
/// template asks for it and the router serves HTTPS.
fn url(template: &str, host: &str, path: &str, context: &RouteContext<'_>) -> String {
    match context.https_port {
        Some(443) if template.starts_with("https://") => format!("https://{host}{path}"),
        Some(port) if template.starts_with("https://") => format!("https://{host}:{port}{path}"),
        _ if context.port == 80 => format!("http://{host}{path}"),
        _ => format!("http://{host}:{}{path}", context.port),
    }
}

/// The environment's routes, in the config's order, and a note for each
/// route that is not served.
pub fn resolve_routes(
    routes: &[Route],
    apps: &BTreeSet<String>,
    context: &RouteContext<'_>,
) -> (Vec<ResolvedRoute>, Vec<String>) {
    let mut notes = Vec::new();
    let mut resolved: Vec<ResolvedRoute> = Vec::new();
    let mut taken: HashSet<(String, String)> = HashSet::new();
    // Upstream routes first, so a redirect never shadows one on the same
    // host and path once schemes are merged.
    let mut ordered: Vec<&Route> = routes
        .iter()
        .filter(|r| r.route_type == RouteType::Upstream)
        .collect();
    ordered.extend(
        routes
            .iter()
            .filter(|r| r.route_type != RouteType::Upstream),
    );
    for route in ordered {
        let (host, path) = match resolve_template(&route.url, context) {
            Ok(resolved) => resolved,
            Err(note) => {
                if !route.generated {
                    notes.push(note);
                }
                continue;
            }
        };
        let key = (host.clone(), path.clone());
        let (kind, upstream, to) = match route.route_type {
            RouteType::Upstream => {
                let target = route.upstream.as_deref().unwrap_or_default();
                let app = target.split(':').next().unwrap_or_default().to_string();
                if !apps.contains(&app) {
                    notes.push(format!(
                        "route '{}' goes to '{target}', which is not an app; it is not served yet",
                        route.url
                    ));
                    continue;
                }
                (RouteKind::Upstream, Some(app), None)
            }
            RouteType::Redirect => {
                let target = route.to.as_deref().unwrap_or_default();
                let to = match resolve_template(target, context) {
                    Ok((to_host, to_path)) => {
                        if (to_host.clone(), to_path.clone()) == key {
                            // An http→https twin: the same place once the
                            // router serves both schemes as one.
                            continue;
                        }
                        url(target, &to_host, &to_path, context)
                    }
                    Err(_) if target.starts_with("http") => target.to_string(),
                    Err(note) => {
                        notes.push(note);
                        continue;
                    }
                };
                (RouteKind::Redirect, None, Some(to))
            }
            RouteType::Proxy => {
                notes.push(format!("proxy route '{}' is not served yet", route.url));
                continue;
            }
        };
        if !taken.insert(key) {
            continue;
        }
        resolved.push(ResolvedRoute {
            url: url(&route.url, &host, &path, context),
            host,
            path,
            kind,
            upstream,
            to,
            original_url: route.url.clone(),
            primary: route.primary,
            id: route.id.clone(),
            attributes: serde_json::to_value(&route.attributes).unwrap_or_default(),
            tls: route
                .tls
                .clone()
                .filter(|_| route.url.starts_with("https://")),
        });
    }
    if !resolved.iter().any(|r| r.primary)
        && let Some(first) = resolved.iter_mut().find(|r| r.kind == RouteKind::Upstream)
    {
        first.primary = true;
    }
    (resolved, notes)
}

/// `PLATFORM_ROUTES`: keyed by URL.
pub fn routes_json(routes: &[ResolvedRoute]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for route in routes {
        let mut entry = serde_json::json!({
            "primary": route.primary,
            "id": route.id,
            "attributes": route.attributes,
            "type": match route.kind { RouteKind::Upstream => "upstream", RouteKind::Redirect => "redirect" },
            "original_url": route.original_url,
        });
        if let Some(app) = &route.upstream {
            entry["upstream"] = serde_json::Value::String(app.clone());
        }
        if let Some(to) = &route.to {
            entry["to"] = serde_json::Value::String(to.clone());
        }
        map.insert(route.url.clone(), entry);
    }
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_config as config;

    fn resolve(yaml: &str, production: bool) -> (Vec<ResolvedRoute>, Vec<String>) {
        let config = config(yaml);
        let apps = config.applications.keys().cloned().collect();
        resolve_routes(
            &config.routes,
            &apps,
            &RouteContext {
                project: "Shop",
                branch: "feature/New_UI",
                base_domain: "localhost",
                port: 8080,
                https_port: None,
                production,
            },
        )
    }

    #[test]
    fn the_default_route_serves_the_only_app_and_its_https_twin_collapses() {
        let (routes, notes) = resolve(
            "applications:\n  web:\n    type: python:3.11\n    web:\n      commands:\n        start: x\n",
            false,
        );
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(routes.len(), 1, "{routes:?}");
        assert_eq!(routes[0].host, "feature-new-ui.shop.localhost");
        assert_eq!(routes[0].url, "http://feature-new-ui.shop.localhost:8080/");
        assert_eq!(routes[0].upstream.as_deref(), Some("web"));
        assert!(routes[0].primary);
        let json = routes_json(&routes);
        let entry = &json["http://feature-new-ui.shop.localhost:8080/"];
        assert_eq!(entry["type"], "upstream");
        assert_eq!(entry["original_url"], "https://{default}/");
    }

    #[test]
    fn absolute_hosts_redirects_and_paths() {
        let yaml = "applications:\n  web:\n    type: python:3.11\n    web:\n      commands:\n        start: x\n  api:\n    type: python:3.11\n    web:\n      commands:\n        start: x\nroutes:\n  \"https://{default}/\":\n    type: upstream\n    upstream: \"web:http\"\n  \"https://{default}/api\":\n    type: upstream\n    upstream: \"api:http\"\n    id: api\n  \"https://www.example.com/\":\n    type: redirect\n    to: \"https://{default}/\"\n  \"https://*.{default}/\":\n    type: upstream\n    upstream: \"web:http\"\n";
        let (routes, notes) = resolve(yaml, true);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("wildcard"));
        let api = routes.iter().find(|r| r.path == "/api").expect("api route");
        assert_eq!(api.upstream.as_deref(), Some("api"));
        let redirect = routes
            .iter()
            .find(|r| r.kind == RouteKind::Redirect)
            .expect("redirect");
        assert_eq!(redirect.host, "www.example.com");
        assert_eq!(
            redirect.to.as_deref(),
            Some("http://feature-new-ui.shop.localhost:8080/")
        );
        let (routes, _) = resolve(yaml, false);
        assert!(
            routes
                .iter()
                .any(|r| r.host == "www.example.com.feature-new-ui.shop.localhost")
        );
    }

    #[test]
    fn labels_are_dns_safe() {
        assert_eq!(host_label("Feature/X_y"), "feature-x-y");
        assert_eq!(host_label("--"), "x");
        assert_eq!(host_label(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn with_an_https_listener_https_routes_get_https_urls_and_their_tls_settings() {
        let config = config(
            "applications:\n  web:\n    type: python:3.11\n    web:\n      commands:\n        start: x\nroutes:\n  \"https://{default}/\":\n    type: upstream\n    upstream: web:http\n    tls:\n      min_version: TLSv1.3\n      strict_transport_security:\n        enabled: true\n  \"http://{default}/\":\n    type: redirect\n    to: \"https://{default}/\"\n  \"http://plain.{default}/\":\n    type: upstream\n    upstream: web:http\n",
        );
        let apps = config.applications.keys().cloned().collect();
        let (routes, notes) = resolve_routes(
            &config.routes,
            &apps,
            &RouteContext {
                project: "shop",
                branch: "main",
                base_domain: "localhost",
                port: 80,
                https_port: Some(8443),
                production: true,
            },
        );
        assert!(notes.is_empty(), "{notes:?}");
        let urls: Vec<&str> = routes.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://main.shop.localhost:8443/",
                "http://plain.main.shop.localhost/"
            ]
        );
        let tls = routes[0].tls.as_ref().expect("tls settings");
        assert!(tls.tls13_only);
        assert_eq!(
            tls.strict_transport_security.as_deref(),
            Some("max-age=31536000")
        );
        assert_eq!(routes[1].tls, None);
    }
}
