//! The service's own client, run for an operator or developer
//! (`launchway sql`, `launchway db dump`, `launchway redis`) with the
//! credentials of a relationship, as the app holding it would connect.
//!
//! The client runs in the service's container and connects over loopback,
//! as the relationship's user: a read-only endpoint stays read-only. The
//! password goes in the client's environment (`PGPASSWORD`, `MYSQL_PWD`,
//! `REDISCLI_AUTH`), never in its arguments, so no process listing shows
//! it.

use serde_json::Value;

use crate::catalog::Resolved;

/// What the operator asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMode {
    /// An SQL session: `command` if given, else statements read from stdin.
    Sql { command: Option<String> },
    /// A SQL dump of the relationship's database to stdout.
    Dump,
    /// A Redis command (`args`), or commands read from stdin without one.
    Redis { args: Vec<String> },
}

impl ClientMode {
    fn command_name(&self) -> &'static str {
        match self {
            ClientMode::Sql { .. } => "launchway sql",
            ClientMode::Dump => "launchway db dump",
            ClientMode::Redis { .. } => "launchway redis",
        }
    }
}

/// The command to run in the service's container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCommand {
    pub args: Vec<String>,
    /// Holds the password: never logged.
    pub env: Vec<(String, String)>,
}

/// Why no client runs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("relationship '{relationship}' is to {kind}, which {command} does not serve{hint}")]
    WrongKind {
        relationship: String,
        kind: String,
        command: &'static str,
        hint: String,
    },
}

/// The SQL database or Redis the modes serve.
pub fn mode_serves(mode: &ClientMode, kind: &str) -> bool {
    match mode {
        ClientMode::Sql { .. } | ClientMode::Dump => matches!(kind, "postgresql" | "mariadb"),
        ClientMode::Redis { .. } => matches!(kind, "redis" | "redis-persistent"),
    }
}

/// The client command for relationship `relationship` (its
/// `PLATFORM_RELATIONSHIPS` entry is `entry`) to a service of `resolved`.
pub fn client_command(
    resolved: &Resolved,
    relationship: &str,
    entry: &Value,
    mode: &ClientMode,
) -> Result<ClientCommand, ClientError> {
    let kind = resolved.kind.name;
    if !mode_serves(mode, kind) {
        let hint = match kind {
            "postgresql" | "mariadb" => "; use launchway sql or launchway db dump",
            "redis" | "redis-persistent" => "; use launchway redis",
            _ => "",
        };
        return Err(ClientError::WrongKind {
            relationship: relationship.to_owned(),
            kind: kind.to_owned(),
            command: mode.command_name(),
            hint: hint.to_owned(),
        });
    }
    let text = |key: &str| {
        entry
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let port = entry
        .get("port")
        .and_then(Value::as_u64)
        .unwrap_or(u64::from(resolved.kind.port))
        .to_string();
    let (username, password, path) = (text("username"), text("password"), text("path"));
    let bin = |program: &str| match resolved.offer.bin_dir {
        Some(dir) => format!("{dir}/{program}"),
        None => program.to_owned(),
    };
    let words = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    let mut env = Vec::new();
    let args = match (kind, mode) {
        ("postgresql", ClientMode::Sql { command }) => {
            env.push(("PGPASSWORD".to_owned(), password));
            let mut args = vec![bin("psql")];
            args.extend(words(&["-X", "-h", "127.0.0.1", "-p"]));
            args.extend([port, "-U".into(), username, "-d".into(), path]);
            // Like `psql -f`: stop at the first error, so its exit says so.
            args.extend(words(&["-v", "ON_ERROR_STOP=1"]));
            if let Some(command) = command {
                args.extend(["-c".into(), command.clone()]);
            }
            args
        }
        ("postgresql", _) => {
            env.push(("PGPASSWORD".to_owned(), password));
            let mut args = vec![bin("pg_dump")];
            args.extend(words(&["-h", "127.0.0.1", "-p"]));
            args.extend([port, "-U".into(), username, "-d".into(), path]);
            // Loadable back over the same database with `launchway sql`
            // (its tables are replaced, as mariadb-dump's are), by any
            // endpoint that may create them.
            args.extend(words(&[
                "--no-owner",
                "--no-privileges",
                "--clean",
                "--if-exists",
            ]));
            args
        }
        ("mariadb", ClientMode::Sql { command }) => {
            env.push(("MYSQL_PWD".to_owned(), password));
            let mut args = words(&["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P"]);
            args.extend([port, "-u".into(), username]);
            if let Some(command) = command {
                // A table, as the interactive client prints, not tabs.
                args.extend(["--table".into(), "-e".into(), command.clone()]);
            }
            args.push(path);
            args
        }
        ("mariadb", _) => {
            env.push(("MYSQL_PWD".to_owned(), password));
            let mut args = words(&["mariadb-dump", "--no-defaults", "-h", "127.0.0.1", "-P"]);
            args.extend([port, "-u".into(), username]);
            // A consistent snapshot without locking; tablespaces need a
            // privilege endpoints do not have.
            args.extend(words(&["--single-transaction", "--no-tablespaces"]));
            args.push(path);
            args
        }
        (_, ClientMode::Redis { args: command }) => {
            if !password.is_empty() {
                env.push(("REDISCLI_AUTH".to_owned(), password));
            }
            let mut args = words(&["redis-cli", "-h", "127.0.0.1", "-p"]);
            args.push(port);
            args.extend(command.iter().cloned());
            args
        }
        // `mode_serves` let nothing else through.
        (_, mode) => {
            return Err(ClientError::WrongKind {
                relationship: relationship.to_owned(),
                kind: kind.to_owned(),
                command: mode.command_name(),
                hint: String::new(),
            });
        }
    };
    Ok(ClientCommand { args, env })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::resolve;
    use serde_json::json;

    fn entry() -> Value {
        json!({"username": "main", "password": "s3cret", "path": "main", "port": 5432})
    }

    #[test]
    fn passwords_never_reach_the_arguments() {
        for (kind, mode) in [
            ("postgresql:15", ClientMode::Sql { command: None }),
            (
                "postgresql:15",
                ClientMode::Sql {
                    command: Some("SELECT 1".into()),
                },
            ),
            ("postgresql:15", ClientMode::Dump),
            ("mariadb:10.11", ClientMode::Sql { command: None }),
            ("mariadb:10.11", ClientMode::Dump),
            ("redis:7.0", ClientMode::Redis { args: vec![] }),
        ] {
            let resolved = resolve(kind, false).unwrap();
            let command = client_command(&resolved, "database", &entry(), &mode).unwrap();
            assert!(
                command.args.iter().all(|arg| !arg.contains("s3cret")),
                "{kind} {mode:?}: {:?}",
                command.args
            );
            assert!(
                command.env.iter().any(|(_, value)| value == "s3cret"),
                "{kind} {mode:?}"
            );
        }
    }

    #[test]
    fn clients_connect_as_the_relationship() {
        let resolved = resolve("postgresql:17", false).unwrap();
        let command = client_command(
            &resolved,
            "database",
            &entry(),
            &ClientMode::Sql {
                command: Some("SELECT 1".into()),
            },
        )
        .unwrap();
        assert_eq!(command.args[0], "/usr/lib/postgresql/17/bin/psql");
        let joined = command.args.join(" ");
        assert!(joined.contains("-U main -d main"), "{joined}");
        assert!(joined.ends_with("-c SELECT 1"), "{joined}");

        let resolved = resolve("mariadb:10.11", false).unwrap();
        let mut mariadb = entry();
        mariadb["port"] = json!(3306);
        let dump = client_command(&resolved, "database", &mariadb, &ClientMode::Dump).unwrap();
        assert_eq!(dump.args[0], "mariadb-dump");
        assert_eq!(dump.args.last().map(String::as_str), Some("main"));
        assert!(dump.args.join(" ").contains("-P 3306 -u main"));

        let resolved = resolve("redis:7.0", false).unwrap();
        let redis = client_command(
            &resolved,
            "cache",
            &json!({"port": 6379, "username": null, "password": null}),
            &ClientMode::Redis {
                args: vec!["GET".into(), "k".into()],
            },
        )
        .unwrap();
        assert_eq!(redis.args.join(" "), "redis-cli -h 127.0.0.1 -p 6379 GET k");
        assert!(redis.env.is_empty(), "no password, no REDISCLI_AUTH");
    }

    #[test]
    fn a_mode_refuses_the_wrong_kind() {
        let resolved = resolve("redis:7.0", false).unwrap();
        let error = client_command(
            &resolved,
            "cache",
            &json!({}),
            &ClientMode::Sql { command: None },
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "relationship 'cache' is to redis, which launchway sql does not serve; use launchway redis"
        );
        let resolved = resolve("postgresql:15", false).unwrap();
        let error = client_command(
            &resolved,
            "database",
            &entry(),
            &ClientMode::Redis { args: vec![] },
        )
        .unwrap_err();
        assert!(error.to_string().contains("use launchway sql"), "{error}");
    }
}
