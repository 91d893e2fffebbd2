//! A service's `configuration:`, decoded and checked: for SQL services the
//! databases (PostgreSQL `databases`, MariaDB `schemas`; either name is
//! accepted for both) and the endpoints (a user each, with a default
//! database and a privilege per database); for Redis the eviction policy;
//! for Varnish its VCL (the part a project writes: the platform declares
//! the language version, imports `std` and `directors` and writes
//! `vcl_init`, which makes one director per relationship, as on Upsun);
//! for RabbitMQ its virtual hosts.
//!
//! Defaults follow Upsun's: no `configuration` means one database `main`
//! and one endpoint (`postgresql` or `mysql`) that administers it; endpoints
//! without databases mean `main`. The default endpoint always exists (a
//! relationship that names no endpoint gets it): unless the config defines
//! it, it administers every database. Upsun creates only the endpoints a
//! config lists when it lists any; the extra user here is reachable only
//! by apps whose relationships name it. Problems carry the path of
//! keys they are about, so the config loader can point at the line.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::Kind;

/// What an endpoint may do in one database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    /// Read.
    Ro,
    /// Read and write rows.
    Rw,
    /// Everything, schema changes included.
    Admin,
}

/// One endpoint of a SQL service: a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The database a relationship to it connects to (`path`); none when
    /// it has several and names no default.
    pub default_database: Option<String>,
    /// Its privilege in each database.
    pub privileges: BTreeMap<String, Privilege>,
}

/// The configuration of a SQL service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sql {
    /// Its databases (schemas).
    pub databases: Vec<String>,
    /// Its endpoints by name.
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// A decoded `configuration`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Configuration {
    /// PostgreSQL or MariaDB.
    Sql(Sql),
    /// Redis: `maxmemory-policy`.
    Redis {
        /// The eviction policy.
        maxmemory_policy: String,
    },
    /// Varnish: the project's VCL.
    Varnish {
        /// The VCL as written (its `sub`s; no `vcl 4.x;`, no `vcl_init`).
        vcl: String,
    },
    /// RabbitMQ: its virtual hosts (`/` always exists).
    RabbitMq {
        /// The virtual hosts the config lists.
        vhosts: Vec<String>,
    },
    /// Nothing to apply.
    None,
}

/// Something wrong in a `configuration`, at a path of keys below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Keys from `configuration` down (empty: the whole of it).
    pub path: Vec<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// Redis eviction policies.
pub const MAXMEMORY_POLICIES: &[&str] = &[
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
    "noeviction",
];

/// A database or user name both servers take unquoted-safe: letters,
/// digits and `_`, at most 63.
fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An endpoint name (it becomes a user name): lowercase, digits, `_`, `-`.
fn valid_endpoint(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn problem(path: &[&str], message: impl Into<String>, hint: Option<&str>) -> Problem {
    Problem {
        path: path.iter().map(|s| (*s).to_owned()).collect(),
        message: message.into(),
        hint: hint.map(str::to_owned),
    }
}

/// Decodes and checks the `configuration` of a service of `kind`.
pub fn parse(kind: &Kind, configuration: Option<&Value>) -> Result<Configuration, Vec<Problem>> {
    match kind.name {
        "postgresql" => sql(kind, configuration, "databases", "default_database"),
        "mariadb" => sql(kind, configuration, "schemas", "default_schema"),
        "redis" | "redis-persistent" => redis(configuration),
        "varnish" => varnish(configuration),
        "rabbitmq" => rabbitmq(configuration),
        _ => Ok(Configuration::None),
    }
}

/// What the platform writes around a project's VCL, which the project must
/// therefore not write itself.
fn vcl_problem(vcl: &str) -> Option<(&'static str, &'static str)> {
    let code: Vec<&str> = vcl
        .lines()
        .map(|line| line.split("//").next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    if code.first().is_some_and(|line| line.starts_with("vcl ")) {
        return Some((
            "the VCL declares its version; Launchway declares `vcl 4.1;` itself",
            "remove the `vcl 4.x;` line",
        ));
    }
    if code.iter().any(|line| line.starts_with("sub vcl_init")) {
        return Some((
            "the VCL defines `vcl_init`; Launchway writes it, with one director per relationship",
            "remove `sub vcl_init` and use `set req.backend_hint = <relationship>.backend();` in `vcl_recv`",
        ));
    }
    None
}

fn varnish(configuration: Option<&Value>) -> Result<Configuration, Vec<Problem>> {
    match configuration.and_then(|c| c.get("vcl")) {
        None => Err(vec![problem(
            &[],
            "a varnish service needs `configuration.vcl`",
            Some("e.g. `vcl: !include {type: string, path: config.vcl}`"),
        )]),
        Some(Value::String(vcl)) => match vcl_problem(vcl) {
            Some((message, hint)) => Err(vec![problem(&["vcl"], message, Some(hint))]),
            None => Ok(Configuration::Varnish { vcl: vcl.clone() }),
        },
        Some(_) => Err(vec![problem(
            &["vcl"],
            "`vcl` must be the VCL text",
            Some("e.g. `vcl: !include {type: string, path: config.vcl}`"),
        )]),
    }
}

/// A RabbitMQ virtual host name: printable, no `/` but the root's.
fn valid_vhost(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn rabbitmq(configuration: Option<&Value>) -> Result<Configuration, Vec<Problem>> {
    let Some(value) = configuration.and_then(|c| c.get("vhosts")) else {
        return Ok(Configuration::RabbitMq { vhosts: Vec::new() });
    };
    let Some(items) = value.as_array() else {
        return Err(vec![problem(
            &["vhosts"],
            "`vhosts` must be a list of names",
            None,
        )]);
    };
    let mut vhosts: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(name) if valid_vhost(name) && !vhosts.iter().any(|v| v == name) => {
                vhosts.push(name.to_owned());
            }
            Some(name) if valid_vhost(name) => problems.push(problem(
                &["vhosts", &index.to_string()],
                format!("`{name}` is listed twice"),
                None,
            )),
            _ => problems.push(problem(
                &["vhosts", &index.to_string()],
                "a virtual host is a name of letters, digits, `_`, `-` and `.`",
                None,
            )),
        }
    }
    if problems.is_empty() {
        Ok(Configuration::RabbitMq { vhosts })
    } else {
        Err(problems)
    }
}

fn redis(configuration: Option<&Value>) -> Result<Configuration, Vec<Problem>> {
    let policy = configuration
        .and_then(|c| c.get("maxmemory_policy"))
        .map(|value| value.as_str().map(str::to_owned).ok_or(value));
    match policy {
        None => Ok(Configuration::Redis {
            maxmemory_policy: "allkeys-lru".into(),
        }),
        Some(Ok(policy)) if MAXMEMORY_POLICIES.contains(&policy.as_str()) => {
            Ok(Configuration::Redis {
                maxmemory_policy: policy,
            })
        }
        Some(_) => Err(vec![problem(
            &["maxmemory_policy"],
            "unknown `maxmemory_policy`",
            Some(&format!("use one of: {}", MAXMEMORY_POLICIES.join(", "))),
        )]),
    }
}

/// A list of names at `key` (or its alias), checked.
fn names(
    config: &serde_json::Map<String, Value>,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<Vec<String>> {
    let value = config.get(key)?;
    let Some(items) = value.as_array() else {
        problems.push(problem(
            &[key],
            format!("`{key}` must be a list of names"),
            None,
        ));
        return Some(Vec::new());
    };
    let mut out = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let index = index.to_string();
        match item.as_str() {
            Some(name) if valid_identifier(name) => {
                if out.iter().any(|n| n == name) {
                    problems.push(problem(
                        &[key, &index],
                        format!("`{name}` is listed twice"),
                        None,
                    ));
                } else {
                    out.push(name.to_owned());
                }
            }
            _ => problems.push(problem(
                &[key, &index],
                format!("invalid name in `{key}`"),
                Some("use letters, digits and `_` (at most 63)"),
            )),
        }
    }
    Some(out)
}

fn sql(
    kind: &Kind,
    configuration: Option<&Value>,
    databases_key: &str,
    default_key: &str,
) -> Result<Configuration, Vec<Problem>> {
    let mut problems = Vec::new();
    let empty = serde_json::Map::new();
    let config = match configuration {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(vec![problem(&[], "`configuration` must be a map", None)]);
        }
    };
    // Either spelling, whichever the config uses.
    let databases_key = if config.contains_key(databases_key) {
        databases_key
    } else if databases_key == "databases" {
        "schemas"
    } else {
        "databases"
    };
    let listed = names(config, databases_key, &mut problems);
    let mut endpoints = BTreeMap::new();
    match config.get("endpoints") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                if let Some(endpoint) = endpoint(name, value, default_key, &mut problems) {
                    endpoints.insert(name.clone(), endpoint);
                }
            }
        }
        Some(_) => problems.push(problem(
            &["endpoints"],
            "`endpoints` must be a map of endpoint names",
            None,
        )),
    }
    let databases = match listed {
        Some(databases) => databases,
        None => vec!["main".to_owned()],
    };
    // The type's default endpoint is always there (a relationship that
    // names no endpoint gets it), administering every database unless the
    // config defines it otherwise.
    if !endpoints.contains_key(kind.endpoint) {
        let admin: BTreeMap<String, Privilege> = databases
            .iter()
            .map(|db| (db.clone(), Privilege::Admin))
            .collect();
        endpoints.insert(
            kind.endpoint.to_owned(),
            Endpoint {
                default_database: databases.first().cloned(),
                privileges: admin,
            },
        );
    }
    for (name, endpoint) in &endpoints {
        for database in endpoint
            .privileges
            .keys()
            .chain(endpoint.default_database.iter())
        {
            if !databases.contains(database) {
                let path: Vec<&str> = if endpoint.privileges.contains_key(database) {
                    vec!["endpoints", name, "privileges", database]
                } else {
                    vec!["endpoints", name, default_key]
                };
                problems.push(problem(
                    &path,
                    format!("endpoint `{name}` names database `{database}`, which `{databases_key}` does not list"),
                    Some(&format!("`{databases_key}`: {}", databases.join(", "))),
                ));
            }
        }
        if let Some(default) = &endpoint.default_database
            && !endpoint.privileges.contains_key(default)
            && databases.contains(default)
        {
            problems.push(problem(
                &["endpoints", name, default_key],
                format!("endpoint `{name}` has no privilege on its default database `{default}`"),
                Some("add it under `privileges`"),
            ));
        }
    }
    if problems.is_empty() {
        Ok(Configuration::Sql(Sql {
            databases,
            endpoints,
        }))
    } else {
        Err(problems)
    }
}

fn endpoint(
    name: &str,
    value: &Value,
    default_key: &str,
    problems: &mut Vec<Problem>,
) -> Option<Endpoint> {
    if crate::credentials::RESERVED_USERS.contains(&name) {
        problems.push(problem(
            &["endpoints", name],
            format!("`{name}` is the server's own user and cannot be an endpoint"),
            Some("rename the endpoint"),
        ));
        return None;
    }
    if !valid_endpoint(name) {
        problems.push(problem(
            &["endpoints", name],
            format!("invalid endpoint name `{name}`"),
            Some("use lowercase letters, digits, `_` and `-` (at most 32)"),
        ));
        return None;
    }
    let map = match value {
        Value::Object(map) => map,
        Value::Null => &serde_json::Map::new(),
        _ => {
            problems.push(problem(
                &["endpoints", name],
                "an endpoint is a map (`default_database`, `privileges`)",
                None,
            ));
            return None;
        }
    };
    let default_database = map
        .get(default_key)
        .or_else(|| {
            // Either spelling.
            let other = if default_key == "default_database" {
                "default_schema"
            } else {
                "default_database"
            };
            map.get(other)
        })
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut privileges = BTreeMap::new();
    if let Some(value) = map.get("privileges") {
        let Some(entries) = value.as_object() else {
            problems.push(problem(
                &["endpoints", name, "privileges"],
                "`privileges` maps database names to ro, rw or admin",
                None,
            ));
            return None;
        };
        for (database, privilege) in entries {
            let parsed = match privilege.as_str() {
                Some("ro") => Some(Privilege::Ro),
                Some("rw") => Some(Privilege::Rw),
                Some("admin") => Some(Privilege::Admin),
                _ => None,
            };
            match parsed {
                Some(privilege) => {
                    privileges.insert(database.clone(), privilege);
                }
                None => {
                    // Kept (as the least), so nothing else is reported
                    // about this database; the problem rejects the config.
                    privileges.insert(database.clone(), Privilege::Ro);
                    problems.push(problem(
                        &["endpoints", name, "privileges", database],
                        format!(
                            "unknown privilege `{}`",
                            privilege.as_str().unwrap_or("(not text)")
                        ),
                        Some("use ro, rw or admin (replication endpoints are not offered here)"),
                    ));
                }
            }
        }
    }
    Some(Endpoint {
        default_database,
        privileges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::resolve;

    fn parsed(type_name: &str, yaml_json: Value) -> Result<Configuration, Vec<Problem>> {
        let kind = resolve(type_name, false).unwrap().kind;
        parse(kind, Some(&yaml_json))
    }

    #[test]
    fn varnish_takes_the_project_vcl_and_refuses_what_the_platform_writes() {
        let vcl = "sub vcl_recv {\n  set req.backend_hint = application.backend();\n}\n";
        assert_eq!(
            parsed("varnish:7.1", serde_json::json!({ "vcl": vcl })),
            Ok(Configuration::Varnish { vcl: vcl.into() })
        );
        for (text, wanted) in [
            (
                "// cache\nvcl 4.1;\nsub vcl_recv {}\n",
                "declares its version",
            ),
            ("sub vcl_init {\n}\n", "defines `vcl_init`"),
        ] {
            let problems = parsed("varnish:7.1", serde_json::json!({ "vcl": text })).unwrap_err();
            assert_eq!(problems[0].path, ["vcl"]);
            assert!(problems[0].message.contains(wanted), "{problems:?}");
        }
        let missing = parsed("varnish:7.1", serde_json::json!({})).unwrap_err();
        assert!(missing[0].message.contains("needs `configuration.vcl`"));
        let not_text = parsed("varnish:7.1", serde_json::json!({ "vcl": 3 })).unwrap_err();
        assert_eq!(not_text[0].path, ["vcl"]);
    }

    #[test]
    fn rabbitmq_vhosts_are_checked_names() {
        assert_eq!(
            parsed(
                "rabbitmq:3.10",
                serde_json::json!({ "vhosts": ["main", "jobs.v2"] })
            ),
            Ok(Configuration::RabbitMq {
                vhosts: vec!["main".into(), "jobs.v2".into()]
            })
        );
        let problems = parsed(
            "rabbitmq:3.10",
            serde_json::json!({ "vhosts": ["a", "a", "b c"] }),
        )
        .unwrap_err();
        let paths: Vec<String> = problems.iter().map(|p| p.path.join(".")).collect();
        assert_eq!(paths, ["vhosts.1", "vhosts.2"]);
        assert!(parsed("rabbitmq:3.10", serde_json::json!({ "vhosts": "main" })).is_err());
    }

    fn sql_of(result: Result<Configuration, Vec<Problem>>) -> Sql {
        match result {
            Ok(Configuration::Sql(sql)) => sql,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_upsuns() {
        let pg = sql_of(parse(resolve("postgresql:15", false).unwrap().kind, None));
        assert_eq!(pg.databases, ["main"]);
        let endpoint = &pg.endpoints["postgresql"];
        assert_eq!(endpoint.default_database.as_deref(), Some("main"));
        assert_eq!(endpoint.privileges["main"], Privilege::Admin);
        let maria = sql_of(parse(resolve("mariadb:10.11", false).unwrap().kind, None));
        assert!(maria.endpoints.contains_key("mysql"));
        // Databases only: the default endpoint administers them all.
        let two = sql_of(parsed(
            "postgresql:15",
            serde_json::json!({"databases": ["main", "legacy"]}),
        ));
        assert_eq!(two.endpoints["postgresql"].privileges.len(), 2);
    }

    #[test]
    fn endpoints_with_privileges_and_either_spelling() {
        let sql = sql_of(parsed(
            "mariadb:10.11",
            serde_json::json!({
                "schemas": ["main", "reports"],
                "endpoints": {
                    "admin": {"default_schema": "main", "privileges": {"main": "admin", "reports": "rw"}},
                    "reporter": {"default_schema": "reports", "privileges": {"reports": "ro"}},
                }
            }),
        ));
        // Plus the default endpoint, administering both.
        assert_eq!(sql.endpoints.len(), 3);
        assert_eq!(sql.endpoints["mysql"].privileges.len(), 2);
        assert_eq!(
            sql.endpoints["reporter"].privileges["reports"],
            Privilege::Ro
        );
        // PostgreSQL written with MariaDB's words.
        let pg = sql_of(parsed(
            "postgresql:15",
            serde_json::json!({"schemas": ["app"], "endpoints": {"app": {"default_schema": "app", "privileges": {"app": "admin"}}}}),
        ));
        assert_eq!(pg.databases, ["app"]);
        assert_eq!(pg.endpoints["app"].default_database.as_deref(), Some("app"));
    }

    #[test]
    fn problems_name_their_keys() {
        let problems = parsed(
            "postgresql:15",
            serde_json::json!({
                "databases": ["main"],
                "endpoints": {
                    "ghost": {"default_database": "main", "privileges": {"main": "rw", "nope": "ro"}},
                    "bad": {"privileges": {"main": "superuser"}},
                }
            }),
        )
        .unwrap_err();
        let paths: Vec<String> = problems.iter().map(|p| p.path.join(".")).collect();
        assert!(
            paths.contains(&"endpoints.ghost.privileges.nope".to_owned()),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"endpoints.bad.privileges.main".to_owned()),
            "{paths:?}"
        );
        let redis = parsed(
            "redis:7.0",
            serde_json::json!({"maxmemory_policy": "sometimes"}),
        )
        .unwrap_err();
        assert_eq!(redis[0].path, ["maxmemory_policy"]);
        assert!(matches!(
            parsed(
                "redis:7.0",
                serde_json::json!({"maxmemory_policy": "noeviction"})
            ),
            Ok(Configuration::Redis { .. })
        ));
    }
}
