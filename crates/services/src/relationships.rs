//! What an app sees of a relationship to a service: its entry in
//! `PLATFORM_RELATIONSHIPS`, field for field as Upsun writes it (so
//! `platformshconfig` and the other config readers work unchanged), and the
//! `<RELATIONSHIP>_*` variables Upsun also sets.
//!
//! Shapes, per type (every entry also has `service`, `rel`, `type` as
//! written, `host` = `<relationship>.internal`, `ip`, `hostname`,
//! `cluster`, `epoch`, `instance_ips`, `public`, `host_mapped`):
//! - PostgreSQL: `scheme: pgsql`, port 5432, `username`, `password`, `path`
//!   (the endpoint's default database, or null), `query: {is_master: true}`,
//!   `fragment: null`;
//! - MariaDB / MySQL: the same with `scheme: mysql`, port 3306;
//! - Redis: `scheme: redis`, port 6379, `username`, `password` and `path`
//!   null, `query: []` (an empty list, as Upsun's PHP writes it);
//! - memcached: `scheme: memcached`, port 11211, no credentials at all;
//! - RabbitMQ: `scheme: amqp`, port 5672, `username`, `password`,
//!   `path: null`, `query: []`.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::catalog::Resolved;
use crate::credentials::Credentials;

/// One relationship to a service, as a deploy resolved it.
#[derive(Clone, Debug)]
pub struct ServiceRelationship<'a> {
    /// The relationship's name (`database`).
    pub name: &'a str,
    /// The service's name (`db`).
    pub service: &'a str,
    /// Its type, resolved.
    pub resolved: &'a Resolved,
    /// The endpoint (`postgresql`, `reporter`, `redis`).
    pub endpoint: &'a str,
    /// The endpoint's user, for types that have users.
    pub credentials: Option<&'a Credentials>,
    /// The endpoint's default database, for SQL types.
    pub path: Option<&'a str>,
    /// The service's address on the environment network.
    pub address: Ipv4Addr,
    /// `<project>-<environment>`.
    pub cluster: &'a str,
    /// The service's host name (stable per environment).
    pub hostname: &'a str,
}

/// The `PLATFORM_RELATIONSHIPS` entry (one endpoint object; the variable
/// holds a list of them per relationship name).
pub fn entry(rel: &ServiceRelationship<'_>) -> Value {
    let kind = rel.resolved.kind;
    let host = format!("{}.internal", rel.name);
    let mut entry = json!({
        "service": rel.service,
        "ip": rel.address.to_string(),
        "hostname": rel.hostname,
        "cluster": rel.cluster,
        "host": host,
        "rel": rel.endpoint,
        "scheme": kind.scheme,
        "type": rel.resolved.written,
        "port": kind.port,
        "epoch": 0,
        "instance_ips": [rel.address.to_string()],
        "public": false,
        "host_mapped": false,
    });
    let sql = matches!(kind.name, "postgresql" | "mariadb");
    if kind.name != "memcached"
        && let Some(object) = entry.as_object_mut()
    {
        object.insert(
            "username".into(),
            rel.credentials
                .map_or(Value::Null, |c| c.username.clone().into()),
        );
        object.insert(
            "password".into(),
            rel.credentials
                .map_or(Value::Null, |c| c.password.clone().into()),
        );
        object.insert(
            "path".into(),
            rel.path
                .map_or(Value::Null, |p| Value::String(p.to_owned())),
        );
        object.insert(
            "query".into(),
            if sql {
                json!({"is_master": true})
            } else {
                json!([])
            },
        );
        object.insert("fragment".into(), Value::Null);
    }
    entry
}

/// The URL of an entry: `scheme://user:password@host:port/path`.
pub fn url(entry: &Value) -> String {
    let text = |key: &str| entry.get(key).and_then(Value::as_str).unwrap_or_default();
    let mut url = format!("{}://", text("scheme"));
    if !text("username").is_empty() {
        url.push_str(text("username"));
        if !text("password").is_empty() {
            url.push(':');
            url.push_str(text("password"));
        }
        url.push('@');
    }
    url.push_str(text("host"));
    if let Some(port) = entry.get("port").and_then(Value::as_u64) {
        url.push_str(&format!(":{port}"));
    }
    if !text("path").is_empty() {
        url.push('/');
        url.push_str(text("path"));
    }
    url
}

/// The `<RELATIONSHIP>_<FIELD>` variables of an entry, plus `_URL`, as
/// Upsun sets them: the name upper-cased, anything but letters, digits and
/// `_` turned into `_`; lists joined by commas; maps as JSON.
pub fn variables(name: &str, entry: &Value) -> Vec<(String, String)> {
    let prefix: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_uppercase();
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut out = Vec::new();
    if let Some(object) = entry.as_object() {
        for (field, value) in object {
            let text = match value {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Array(items) => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map_or_else(|| item.to_string(), str::to_owned)
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                Value::Object(_) => value.to_string(),
            };
            out.push((format!("{prefix}_{}", field.to_ascii_uppercase()), text));
        }
    }
    out.push((format!("{prefix}_URL"), url(entry)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::resolve;

    fn relationship<'a>(
        resolved: &'a Resolved,
        credentials: Option<&'a Credentials>,
        path: Option<&'a str>,
        endpoint: &'a str,
    ) -> ServiceRelationship<'a> {
        ServiceRelationship {
            name: "database",
            service: "db",
            resolved,
            endpoint,
            credentials,
            path,
            address: Ipv4Addr::new(169, 254, 7, 9),
            cluster: "shop-main",
            hostname: "db.main.shop.service.launchway",
        }
    }

    #[test]
    fn postgresql_entries_have_upsuns_fields() {
        let resolved = resolve("postgresql:12", false).unwrap();
        let credentials = Credentials {
            username: "main".into(),
            password: "secret".into(),
        };
        let entry = super::entry(&relationship(
            &resolved,
            Some(&credentials),
            Some("main"),
            "postgresql",
        ));
        assert_eq!(entry["type"], "postgresql:12", "the type as written");
        assert_eq!(entry["scheme"], "pgsql");
        assert_eq!(entry["host"], "database.internal");
        assert_eq!(entry["port"], 5432);
        assert_eq!(entry["path"], "main");
        assert_eq!(entry["query"], json!({"is_master": true}));
        assert_eq!(entry["instance_ips"], json!(["169.254.7.9"]));
        assert!(entry["fragment"].is_null());
        for field in [
            "username",
            "password",
            "scheme",
            "host",
            "port",
            "path",
            "query",
            "fragment",
            "rel",
            "service",
            "type",
            "ip",
            "hostname",
            "cluster",
            "epoch",
            "instance_ips",
            "public",
            "host_mapped",
        ] {
            assert!(entry.get(field).is_some(), "{field} missing");
        }
        assert_eq!(
            url(&entry),
            "pgsql://main:secret@database.internal:5432/main"
        );
        let vars: std::collections::BTreeMap<String, String> =
            variables("database", &entry).into_iter().collect();
        assert_eq!(vars["DATABASE_HOST"], "database.internal");
        assert_eq!(vars["DATABASE_PORT"], "5432");
        assert_eq!(vars["DATABASE_PASSWORD"], "secret");
        assert_eq!(
            vars["DATABASE_URL"],
            "pgsql://main:secret@database.internal:5432/main"
        );
        assert_eq!(vars["DATABASE_INSTANCE_IPS"], "169.254.7.9");
    }

    #[test]
    fn redis_and_memcached_shapes() {
        let redis = resolve("redis:7.0", false).unwrap();
        let redis_entry = entry(&relationship(&redis, None, None, "redis"));
        assert_eq!(redis_entry["query"], json!([]));
        assert!(redis_entry["username"].is_null() && redis_entry["password"].is_null());
        assert_eq!(url(&redis_entry), "redis://database.internal:6379");
        let memcached = resolve("memcached:1.6", false).unwrap();
        let memcached_entry = entry(&relationship(&memcached, None, None, "memcached"));
        assert!(
            memcached_entry.get("username").is_none() && memcached_entry.get("query").is_none()
        );
        assert_eq!(memcached_entry["port"], 11211);
        let vars: Vec<(String, String)> = variables("cache-1", &memcached_entry);
        assert!(vars.iter().any(|(name, _)| name == "CACHE_1_URL"));
    }
}
