//! The web server inside an app container, pure: nginx's configuration
//! from the app's `web.locations`, and PHP-FPM's pool.
//!
//! As on Upsun, an app with `locations` (or a PHP app, whose FastCGI the
//! router cannot speak) gets nginx from its runtime image in front of it,
//! in its web process's container: nginx listens on [`WEB_SERVER_PORT`]
//! (relationships call that) and on [`WEB_SERVER_SOCKET`] (the router calls
//! that: a unix socket skips the veth, bridge and conntrack an environment
//! network's TCP crosses, which cost nginx more than serving the file), and
//! hands what it does not serve itself to the app on `PORT`/`SOCKET`, over
//! HTTP or FastCGI.
//! An app with no start command serves its locations only (a static
//! site). nginx runs as the app's user with everything it writes on the
//! process's `/run`; its errors and access log go to the app's log.
//!
//! How Upsun's keys map:
//! - a location is a prefix match (the longest wins); `root` is a
//!   directory of the app (`root` for `/`, `alias` below it); a request
//!   outside every location gets 404;
//! - `passthru: true` sends what is not a file to the app; a path
//!   (`/index.php`, `/index.php?q=$1`) runs that script with PHP, or is
//!   the URI the app gets otherwise; `passthru: false` answers 404;
//! - `allow: false` serves no files (passthru still applies); `index`,
//!   `expires` (`-1`: none) and `headers` apply to files served;
//! - `scripts` (PHP; default true) runs `.php` files of the location;
//!   when false they are never served as text either;
//! - `rules` are regular expressions on the URI, each a nested nginx
//!   location with its own `allow`, `passthru`, `expires`, `headers`,
//!   `scripts`; nginx compiles them with PCRE, as Upsun's does, so their
//!   syntax is whatever nginx accepts (a bad one fails the deploy with
//!   nginx's message);
//! - `request_buffering` (`enabled`, `max_request_size`, default 250m).
//!
//! Header values are literal: a `$` in one is not an nginx variable.
//!
//! `sendfile` is off: on the router's unix socket it sends a response's
//! header and body apart, waking the router twice, and the small files
//! sites are made of came out 1.5x faster copied (web-bench).

use std::fmt::Write as _;

use launchway_config::model::{LocationConfig, Protocol};
use launchway_config::{App, PhpSizing};
use serde::{Deserialize, Serialize};

use crate::spec::Listen;

/// Where nginx listens in an app's web container.
pub const WEB_SERVER_PORT: u16 = 8080;
/// Where nginx also listens for the router, in the web process's `/run`
/// (a host directory, so the router dials it without entering the
/// environment's network).
pub const WEB_SERVER_SOCKET: &str = "/run/.launchway-web.sock";
/// nginx's configuration file, in the web process's `/run`.
pub const NGINX_CONFIG: &str = "nginx.conf";
/// PHP-FPM's configuration file, in the web process's `/run`.
pub const PHP_FPM_CONFIG: &str = "php-fpm.conf";
/// The command that runs nginx in the foreground.
/// A socket left by an nginx that was killed would make its restart fail.
pub const NGINX_COMMAND: &str =
    "rm -f /run/.launchway-web.sock; exec nginx -e stderr -c /run/nginx.conf";
/// The start command Upsun gives PHP apps by default: PHP-FPM.
pub const PHP_DEFAULT_START: &str = "/usr/bin/start-php-app";
/// The container memory PHP-FPM is sized for when no limit is set.
const UNLIMITED_MEMORY_MIB: u64 = 1024;

/// The web server of one app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebServerSpec {
    /// nginx's port.
    pub port: u16,
    /// The contents of `/run/nginx.conf`.
    pub nginx_config: String,
    /// The contents of `/run/php-fpm.conf`, when PHP-FPM runs.
    pub php_fpm_config: Option<String>,
    /// Whether the app's own start command runs behind nginx (false: a
    /// static site, nginx is the web process).
    pub app_behind: bool,
}

/// Whether `app` runs behind a web server.
pub fn needs_web_server(app: &App) -> bool {
    !app.web.locations.is_empty() || app.web.protocol == Protocol::Fastcgi
}

/// The web server of `app` listening at `listen`, or `None` when the
/// router calls the app directly.
pub fn web_server(app: &App, listen: &Listen, memory_mib: u64) -> Option<WebServerSpec> {
    if !needs_web_server(app) {
        return None;
    }
    let php = app.runtime.family() == "php";
    let fastcgi = app.web.protocol == Protocol::Fastcgi;
    let app_behind = app.web.start.is_some();
    let mut locations: Vec<(String, LocationConfig)> = app
        .web
        .locations
        .iter()
        .map(|(prefix, location)| (prefix.clone(), location.clone()))
        .collect();
    if locations.is_empty() {
        // A PHP app that wrote no locations: its front controller.
        locations.push((
            "/".to_owned(),
            LocationConfig {
                passthru: Some(serde_json::Value::String("/index.php".into())),
                ..LocationConfig::default()
            },
        ));
    }
    let upstream = match listen {
        Listen::Port(port) => format!("127.0.0.1:{port}"),
        Listen::Socket(path) => format!("unix:{path}"),
    };
    let context = Context {
        php,
        fastcgi,
        app_behind,
    };
    let php_fpm_config = (php && app.web.start.as_deref() == Some(PHP_DEFAULT_START))
        .then(|| php_fpm_config(listen, memory_mib, app.php_sizing.unwrap_or_default()));
    Some(WebServerSpec {
        port: WEB_SERVER_PORT,
        nginx_config: nginx_config(&locations, &upstream, &context),
        php_fpm_config,
        app_behind,
    })
}

#[derive(Clone, Copy)]
struct Context {
    php: bool,
    fastcgi: bool,
    app_behind: bool,
}

/// What a location or a rule does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Passthru {
    Off,
    App,
    /// A path, with its query when written (`/index.php?q=$1`).
    Path(String),
}

fn passthru_of(value: Option<&serde_json::Value>) -> Option<Passthru> {
    match value? {
        serde_json::Value::Bool(true) => Some(Passthru::App),
        serde_json::Value::Bool(false) | serde_json::Value::Null => Some(Passthru::Off),
        serde_json::Value::String(path) if path.starts_with('/') => {
            Some(Passthru::Path(path.clone()))
        }
        serde_json::Value::String(text) if text == "true" => Some(Passthru::App),
        _ => Some(Passthru::Off),
    }
}

fn bool_of(value: Option<&serde_json::Value>) -> Option<bool> {
    match value? {
        serde_json::Value::Bool(b) => Some(*b),
        serde_json::Value::String(text) => match text.as_str() {
            "true" | "on" | "yes" => Some(true),
            "false" | "off" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn text_of(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The settings of a location or rule, each inherited when unset.
#[derive(Clone, Debug)]
struct Settings {
    passthru: Passthru,
    allow: bool,
    scripts: bool,
    expires: Option<String>,
    headers: Vec<(String, String)>,
}

/// An nginx string: quoted, `"` and `\` escaped, `$` literal.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '$' => out.push_str("${launchway_dollar}"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A regular expression as an nginx `location ~` argument: quoted, its
/// backslashes kept for PCRE.
fn regex_quoted(regex: &str) -> String {
    let mut out = String::with_capacity(regex.len() + 2);
    out.push('"');
    for c in regex.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\n' | '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A passthru path's `$1`-style captures stay nginx variables; nothing
/// else may expand.
fn passthru_text(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            '$' => out.push_str("${launchway_dollar}"),
            '"' | '\\' | ';' | '{' | '}' | ' ' | '\n' | '\r' | '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// `expires` as nginx takes it, or `None` for none (`-1`, `0`, empty).
fn expires_value(expires: &str) -> Option<String> {
    let expires = expires.trim();
    if expires.is_empty() || expires == "-1" || expires == "0" {
        return None;
    }
    let valid = expires
        .trim_start_matches('-')
        .char_indices()
        .all(|(_, c)| c.is_ascii_alphanumeric());
    valid.then(|| expires.to_owned())
}

/// The directory a location's `root` names, under `/app`.
fn root_directory(root: Option<&str>) -> String {
    let root = root.unwrap_or("").trim_matches('/');
    if root.is_empty() {
        "/app".to_owned()
    } else {
        format!("/app/{root}")
    }
}

fn php_fpm_config(listen: &Listen, memory_mib: u64, sizing: PhpSizing) -> String {
    let memory = if memory_mib == 0 {
        UNLIMITED_MEMORY_MIB
    } else {
        memory_mib
    };
    let PhpSizing {
        request_memory_mib,
        reserved_memory_mib,
    } = sizing;
    let children =
        (memory.saturating_sub(reserved_memory_mib) / request_memory_mib.max(1)).clamp(2, 128);
    let listen_line = match listen {
        Listen::Port(port) => format!("listen = 127.0.0.1:{port}"),
        Listen::Socket(path) => format!("listen = {path}\nlisten.mode = 0660"),
    };
    format!(
        "; Generated by Launchway: PHP-FPM sized for {memory} MiB ({request_memory_mib} MiB a request, {reserved_memory_mib} MiB reserved).\n\
[global]\n\
error_log = /proc/self/fd/2\n\
log_limit = 8192\n\
daemonize = no\n\
pid = /run/php-fpm.pid\n\
\n\
[web]\n\
{listen_line}\n\
pm = dynamic\n\
pm.max_children = {children}\n\
pm.start_servers = {start}\n\
pm.min_spare_servers = 1\n\
pm.max_spare_servers = {spare}\n\
pm.max_requests = 1000\n\
clear_env = no\n\
catch_workers_output = yes\n\
decorate_workers_output = no\n",
        start = children.min(2),
        spare = children.min(4),
    )
}

fn nginx_config(
    locations: &[(String, LocationConfig)],
    upstream: &str,
    context: &Context,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "# Generated by Launchway from web.locations.\n\
worker_processes auto;\n\
daemon off;\n\
pid /run/nginx.pid;\n\
error_log stderr warn;\n\
events {{\n  worker_connections 1024;\n}}\n\
http {{\n\
  include /etc/nginx/mime.types;\n\
  default_type application/octet-stream;\n\
  access_log /dev/stdout combined buffer=32k flush=1s;\n\
  sendfile off;\n\
  tcp_nopush on;\n\
  keepalive_timeout 65;\n\
  server_tokens off;\n\
  open_file_cache max=2000 inactive=20s;\n\
  client_body_temp_path /run/.nginx-client-body;\n\
  proxy_temp_path /run/.nginx-proxy;\n\
  fastcgi_temp_path /run/.nginx-fastcgi;\n\
  uwsgi_temp_path /run/.nginx-uwsgi;\n\
  scgi_temp_path /run/.nginx-scgi;\n\
  geo $launchway_dollar {{ default \"$\"; }}\n\
  map $uri $launchway_file {{ \"~/$\" /nonexistent-launchway; default $uri; }}\n\
  map $uri $launchway_dir {{ \"~/$\" $uri; default /nonexistent-launchway/; }}\n\
  upstream launchway_app {{\n    server {upstream};\n    keepalive 32;\n  }}\n\
  server {{\n\
    listen {WEB_SERVER_PORT} default_server;\n\
    listen unix:{WEB_SERVER_SOCKET} default_server;\n\
    server_name _;\n\
    root /nonexistent;\n\
    absolute_redirect off;\n"
    );
    let mut sorted: Vec<&(String, LocationConfig)> = locations.iter().collect();
    // nginx picks the longest prefix itself; sorting keeps the file stable.
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut has_root = false;
    for (index, (prefix, location)) in sorted.iter().enumerate() {
        has_root |= prefix.trim_end_matches('/').is_empty();
        write_location(&mut out, index, prefix, location, context);
    }
    if !has_root {
        out.push_str("    location / {\n      return 404;\n    }\n");
    }
    out.push_str("  }\n}\n");
    out
}

fn write_location(
    out: &mut String,
    index: usize,
    prefix: &str,
    location: &LocationConfig,
    context: &Context,
) {
    let directory = root_directory(location.root.as_deref());
    let trimmed = prefix.trim_end_matches('/');
    let is_root = trimmed.is_empty();
    let settings = Settings {
        passthru: passthru_of(location.passthru.as_ref()).unwrap_or(Passthru::Off),
        allow: location.allow.unwrap_or(true),
        scripts: location.scripts.unwrap_or(true),
        expires: location
            .expires
            .as_ref()
            .and_then(|expires| expires_value(&expires.0)),
        headers: location
            .headers
            .iter()
            .flatten()
            .map(|(name, value)| (name.clone(), value.0.clone()))
            .collect(),
    };
    let (enabled, max_size) = request_buffering(location.request_buffering.as_ref());
    if is_root {
        let _ = writeln!(out, "    location / {{\n      root {};", quoted(&directory));
    } else {
        // `/static` covers `/static/…` (and redirects `/static` there),
        // not `/staticfoo`. Prefixes are plain paths (checked at push).
        let _ = writeln!(
            out,
            "    location = {trimmed} {{\n      return 301 {trimmed}/$is_args$args;\n    }}"
        );
        let _ = writeln!(
            out,
            "    location {trimmed}/ {{\n      alias {};",
            quoted(&format!("{directory}/"))
        );
    }
    let _ = writeln!(out, "      client_max_body_size {max_size};");
    if !enabled {
        out.push_str("      proxy_request_buffering off;\n      fastcgi_request_buffering off;\n");
    }
    let index_files: Vec<String> = location
        .index
        .iter()
        .flatten()
        .filter(|name| is_plain_name(name))
        // A PHP index runs through the passthru, never as a file.
        .filter(|name| !(context.php && name.ends_with(".php")))
        .cloned()
        .collect();
    let name = format!("location{index}");
    let handling = Handling {
        directory: &directory,
        alias: !is_root,
        index: &index_files,
        context,
    };
    write_handling(out, &name, &settings, &handling, "      ");
    for (rule_index, (regex, rule)) in location.rules.iter().flatten().enumerate() {
        let Some(rule) = rule.as_object() else {
            continue;
        };
        let rule_settings = Settings {
            passthru: passthru_of(rule.get("passthru")).unwrap_or(settings.passthru.clone()),
            allow: bool_of(rule.get("allow")).unwrap_or(settings.allow),
            scripts: bool_of(rule.get("scripts")).unwrap_or(settings.scripts),
            expires: match text_of(rule.get("expires")) {
                Some(expires) => expires_value(&expires),
                None => settings.expires.clone(),
            },
            headers: match rule.get("headers").and_then(|h| h.as_object()) {
                Some(headers) => headers
                    .iter()
                    .filter_map(|(name, value)| {
                        text_of(Some(value)).map(|value| (name.clone(), value))
                    })
                    .collect(),
                None => settings.headers.clone(),
            },
        };
        let _ = writeln!(out, "      location ~ {} {{", regex_quoted(regex));
        write_handling(
            out,
            &format!("{name}_rule{rule_index}"),
            &rule_settings,
            &handling,
            "        ",
        );
        out.push_str("      }\n");
    }
    out.push_str("    }\n");
    write_named_passthru(out, &name, &directory, &settings.passthru, context);
    for (rule_index, (_, rule)) in location.rules.iter().flatten().enumerate() {
        if let Some(passthru) = rule
            .as_object()
            .and_then(|rule| passthru_of(rule.get("passthru")))
        {
            write_named_passthru(
                out,
                &format!("{name}_rule{rule_index}"),
                &directory,
                &passthru,
                context,
            );
        } else {
            write_named_passthru(
                out,
                &format!("{name}_rule{rule_index}"),
                &directory,
                &settings.passthru,
                context,
            );
        }
    }
}

fn request_buffering(value: Option<&serde_json::Value>) -> (bool, String) {
    let object = value.and_then(|v| v.as_object());
    let enabled = object
        .and_then(|o| bool_of(o.get("enabled")))
        .unwrap_or(true);
    let size = object
        .and_then(|o| text_of(o.get("max_request_size")))
        .filter(|size| {
            !size.is_empty()
                && size.len() <= 12
                && size
                    .trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G'])
                    .chars()
                    .all(|c| c.is_ascii_digit())
        })
        .unwrap_or_else(|| "250m".to_owned());
    (enabled, size)
}

/// Whether `name` is a plain file name (for `index`).
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// What a location's handling depends on besides its settings.
struct Handling<'a> {
    directory: &'a str,
    alias: bool,
    index: &'a [String],
    context: &'a Context,
}

/// How a location or rule answers: files (when allowed), PHP scripts
/// (when allowed), else its passthru.
fn write_handling(
    out: &mut String,
    name: &str,
    settings: &Settings,
    handling: &Handling<'_>,
    indent: &str,
) {
    let fallback = match settings.passthru {
        Passthru::Off => "=404".to_owned(),
        _ => format!("@{name}"),
    };
    let context = handling.context;
    if context.php && settings.scripts {
        // Under an alias `$document_root` is the alias: the script is the
        // request's file.
        let script_filename = if handling.alias {
            "$request_filename"
        } else {
            "$document_root$fastcgi_script_name"
        };
        let try_script = if handling.alias {
            "$uri"
        } else {
            "$fastcgi_script_name"
        };
        let _ = writeln!(
            out,
            "{indent}location ~ \"\\.php(/|$)\" {{\n\
{indent}  fastcgi_split_path_info \"^(.+?\\.php)(/.*)$\";\n\
{indent}  try_files {try_script} {fallback};\n\
{indent}  include /etc/nginx/fastcgi_params;\n\
{indent}  fastcgi_param SCRIPT_FILENAME {script_filename};\n\
{indent}  fastcgi_param PATH_INFO $fastcgi_path_info;\n\
{indent}  fastcgi_pass launchway_app;\n\
{indent}}}"
        );
    } else if context.php {
        // Never hand out PHP sources.
        let _ = writeln!(
            out,
            "{indent}location ~ \"\\.php(/|$)\" {{\n{indent}  try_files /nonexistent-launchway {fallback};\n{indent}}}"
        );
    }
    let _ = handling.directory;
    if settings.allow {
        if let Some(expires) = &settings.expires {
            let _ = writeln!(out, "{indent}expires {expires};");
        }
        for (header, value) in &settings.headers {
            if header
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                let _ = writeln!(out, "{indent}add_header {header} {} always;", quoted(value));
            }
        }
        // Files; a directory (`…/`) only through its index files.
        let indexes: Vec<String> = handling
            .index
            .iter()
            .map(|index| format!("${{launchway_dir}}{index}"))
            .collect();
        let _ = writeln!(
            out,
            "{indent}try_files $launchway_file {}{fallback};",
            indexes
                .iter()
                .map(|index| format!("{index} "))
                .collect::<String>()
        );
    } else {
        let _ = writeln!(out, "{indent}try_files /nonexistent-launchway {fallback};");
    }
}

/// The named location a passthru goes to.
fn write_named_passthru(
    out: &mut String,
    name: &str,
    directory: &str,
    passthru: &Passthru,
    context: &Context,
) {
    let body = match (passthru, context.fastcgi, context.app_behind) {
        (Passthru::Off, _, _) => return,
        (_, _, false) => "      return 404;\n".to_owned(),
        (Passthru::Path(path), true, true) => {
            let (script, query) = path.split_once('?').unwrap_or((path, ""));
            let script = passthru_text(script);
            let query = if query.is_empty() {
                "$args".to_owned()
            } else {
                passthru_text(query)
            };
            format!(
                "      include /etc/nginx/fastcgi_params;\n\
      fastcgi_param SCRIPT_FILENAME {};\n\
      fastcgi_param SCRIPT_NAME {};\n\
      fastcgi_param QUERY_STRING {};\n\
      fastcgi_pass launchway_app;\n",
                quoted_keep(&format!("{directory}{script}")),
                quoted_keep(&script),
                quoted_keep(&query),
            )
        }
        (Passthru::App, true, true) => {
            format!(
                "      include /etc/nginx/fastcgi_params;\n\
      fastcgi_param SCRIPT_FILENAME {};\n\
      fastcgi_param SCRIPT_NAME /index.php;\n\
      fastcgi_pass launchway_app;\n",
                quoted_keep(&format!("{directory}/index.php"))
            )
        }
        (Passthru::Path(path), false, true) => format!(
            "      rewrite ^ {} break;\n{}",
            quoted_keep(&passthru_text(path)),
            PROXY
        ),
        (Passthru::App, false, true) => PROXY.to_owned(),
    };
    let _ = write!(out, "    location @{name} {{\n{body}    }}\n");
}

/// A string whose `$` were made safe by [`passthru_text`] (or that has
/// none): quoted, nothing else escaped.
fn quoted_keep(text: &str) -> String {
    format!("\"{text}\"")
}

const PROXY: &str = "      proxy_pass http://launchway_app;\n\
      proxy_http_version 1.1;\n\
      proxy_set_header Connection \"\";\n\
      proxy_set_header Host $http_host;\n\
      proxy_read_timeout 300s;\n\
      proxy_send_timeout 300s;\n\
      proxy_redirect off;\n\
      proxy_pass_header Server;\n\
      proxy_buffering off;\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_config as config;

    fn app_of(yaml: &str) -> App {
        config(yaml)
            .applications
            .into_values()
            .next()
            .expect("one app")
    }

    #[test]
    fn apps_without_locations_are_routed_directly() {
        let app = app_of(
            "applications:\n  app:\n    type: python:3.11\n    web:\n      commands:\n        start: run\n",
        );
        assert!(web_server(&app, &Listen::Port(8888), 0).is_none());
    }

    #[test]
    fn a_php_front_controller_goes_to_fpm_and_files_are_served() {
        let app = app_of(
            r#"applications:
  app:
    type: php:8.4
    web:
      locations:
        "/":
          root: web
          passthru: /index.php
          expires: 1h
          headers:
            X-Frame-Options: SAMEORIGIN
          rules:
            '\.(css|js)$':
              expires: 2d
        "/uploads":
          root: files
          scripts: false
          allow: true
"#,
        );
        let server = web_server(&app, &Listen::Socket("/run/app.sock".into()), 512).expect("nginx");
        let nginx = &server.nginx_config;
        assert!(nginx.contains("server unix:/run/app.sock;"), "{nginx}");
        // The router dials the socket; a stale one must not stop a restart.
        assert!(
            nginx.contains(&format!("listen unix:{WEB_SERVER_SOCKET} default_server;")),
            "{nginx}"
        );
        assert!(NGINX_COMMAND.starts_with(&format!("rm -f {WEB_SERVER_SOCKET};")));
        assert!(nginx.contains("root \"/app/web\";"), "{nginx}");
        assert!(
            nginx.contains("fastcgi_param SCRIPT_FILENAME \"/app/web/index.php\";"),
            "{nginx}"
        );
        assert!(
            nginx.contains("expires 1h;") && nginx.contains("expires 2d;"),
            "{nginx}"
        );
        assert!(
            nginx.contains("add_header X-Frame-Options \"SAMEORIGIN\" always;"),
            "{nginx}"
        );
        assert!(nginx.contains("location ~ \"\\.(css|js)$\" {"), "{nginx}");
        assert!(
            nginx.contains("location /uploads/ {\n      alias \"/app/files/\";"),
            "{nginx}"
        );
        // Scripts off: PHP is neither run nor handed out.
        assert!(
            nginx.contains("try_files /nonexistent-launchway =404;"),
            "{nginx}"
        );
        let fpm = server.php_fpm_config.expect("php-fpm");
        assert!(fpm.contains("listen = /run/app.sock"), "{fpm}");
        assert!(fpm.contains("pm.max_children = 9"), "{fpm}");
        assert!(server.app_behind);
    }

    #[test]
    fn php_fpm_is_sized_from_the_memory_and_the_sizing_hints() {
        let app = app_of(
            r#"applications:
  app:
    type: php:8.2
    runtime:
      sizing_hints:
        request_memory: 100
        reserved_memory: 200
"#,
        );
        let server = web_server(&app, &Listen::Socket("/run/app.sock".into()), 512).expect("nginx");
        let fpm = server.php_fpm_config.expect("php-fpm");
        assert!(fpm.contains("pm.max_children = 3\n"), "{fpm}");
        assert!(fpm.contains("100 MiB a request, 200 MiB reserved"), "{fpm}");
        // Never fewer than two, whatever the hints.
        let server = web_server(&app, &Listen::Socket("/run/app.sock".into()), 256).expect("nginx");
        let fpm = server.php_fpm_config.expect("php-fpm");
        assert!(fpm.contains("pm.max_children = 2\n"), "{fpm}");
    }

    #[test]
    fn a_static_site_serves_files_only_and_values_stay_literal() {
        let app = app_of(
            r#"applications:
  site:
    type: nodejs:22
    web:
      locations:
        "/":
          root: dist
          index: [index.html]
          headers:
            X-Price: "$5"
routes:
  "https://{default}/":
    type: upstream
    upstream: site:http
"#,
        );
        let server = web_server(&app, &Listen::Port(8888), 0).expect("nginx");
        assert!(!server.app_behind);
        assert!(server.php_fpm_config.is_none());
        let nginx = &server.nginx_config;
        assert!(nginx.contains("\"${launchway_dollar}5\""), "{nginx}");
        assert!(
            nginx.contains("try_files $launchway_file ${launchway_dir}index.html =404;"),
            "{nginx}"
        );
        assert!(!nginx.contains("fastcgi_pass"), "{nginx}");
    }

    #[test]
    fn an_http_app_behind_locations_gets_the_rest_proxied() {
        let app = app_of(
            r#"applications:
  app:
    type: python:3.11
    web:
      commands:
        start: gunicorn app
      locations:
        "/":
          passthru: true
        "/static":
          root: static
          expires: 7d
          allow: true
          passthru: false
"#,
        );
        let server = web_server(&app, &Listen::Port(8888), 0).expect("nginx");
        let nginx = &server.nginx_config;
        assert!(nginx.contains("server 127.0.0.1:8888;"), "{nginx}");
        assert!(
            nginx.contains("proxy_pass http://launchway_app;"),
            "{nginx}"
        );
        assert!(nginx.contains("location = /static {"), "{nginx}");
        assert!(nginx.contains("alias \"/app/static/\";"), "{nginx}");
        assert!(!nginx.contains("fastcgi_pass"), "{nginx}");
    }
}
