//! How a service runs in its container: the extra steps of its image, the
//! program its container runs (first start included), how the daemon knows
//! it answers, and the script that applies its `configuration`.
//!
//! Every service runs as uid 10000 with no capabilities on a read-only
//! root; its data is the environment's `services/<name>` directory mounted
//! at [`DATA_DIR`] (memory-only types get none); sockets go to `/tmp`. The
//! server listens on all its addresses: its namespace holds only loopback
//! and its link to the environment network, where the filter of each app
//! decides who reaches it. Administration goes through the server's unix
//! socket in `/tmp`, which only processes of its own container reach.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::catalog::{Kind, Resolved};
use crate::configuration::{Configuration, Privilege, Sql};
use crate::credentials::Credentials;

/// Where a service's data is mounted in its container.
pub const DATA_DIR: &str = "/mnt/data";
/// Where the daemon puts the configuration script for the service to read.
pub const CONFIGURE_FILE: &str = "/tmp/launchway-configure.sql";

/// Extra mmdebstrap customize hooks of a type's image: what the packages'
/// install scripts leave that a service must not start from.
pub fn image_hooks(kind: &Kind) -> Vec<String> {
    match kind.name {
        // postgresql-common makes a `main` cluster; the service makes its own.
        "postgresql" => vec!["rm -rf \"$1\"/var/lib/postgresql/* \"$1\"/etc/postgresql/*".into()],
        // mariadb-server initialises /var/lib/mysql (about 100 MB).
        "mariadb" => vec!["rm -rf \"$1\"/var/lib/mysql/*".into()],
        // rabbitmq-server leaves an Erlang cookie every image would share.
        "rabbitmq" => vec![
            "rm -rf \"$1\"/var/lib/rabbitmq/.erlang.cookie \"$1\"/var/lib/rabbitmq/mnesia".into(),
        ],
        _ => Vec::new(),
    }
}

/// What a built image runs to show its version.
pub fn version_command(resolved: &Resolved) -> Vec<String> {
    let bin = |program: &str| match resolved.offer.bin_dir {
        Some(dir) => format!("{dir}/{program}"),
        None => program.to_owned(),
    };
    match resolved.kind.name {
        "postgresql" => vec![bin("postgres"), "--version".into()],
        "mariadb" => vec!["mariadbd".into(), "--version".into()],
        "redis" | "redis-persistent" => vec!["redis-server".into(), "--version".into()],
        "memcached" => vec!["memcached".into(), "--version".into()],
        "varnish" => vec!["varnishd".into(), "-V".into()],
        _ => vec![
            "sh".into(),
            "-c".into(),
            format!(
                "dpkg-query -W -f='${{Version}}\\n' {}",
                resolved.offer.packages.first().copied().unwrap_or("dpkg")
            ),
        ],
    }
}

/// The memory a server may use for its caches, from the container's.
fn cache_mib(memory_mib: u64) -> u64 {
    (memory_mib / 4).clamp(16, 1024)
}

/// Whether Launchway runs services of this type (network-storage has no
/// process).
pub fn runs(kind: &Kind) -> bool {
    matches!(
        kind.name,
        "postgresql"
            | "mariadb"
            | "redis"
            | "redis-persistent"
            | "memcached"
            | "varnish"
            | "rabbitmq"
    )
}

/// The least memory a service of this type gets, whatever the settings
/// say (MiB): RabbitMQ's Erlang VM idles near 80 MiB and each of its
/// command-line tools (readiness, configuration) starts another VM of
/// about 50 MiB in the same container.
pub fn minimum_memory_mib(kind: &Kind) -> u64 {
    match kind.name {
        "rabbitmq" => 512,
        _ => 0,
    }
}

/// The environment RabbitMQ and its tools share: the node is always
/// `rabbit@localhost` (a clone of its data boots anywhere), its cookie and
/// Mnesia live in the data directory, `localhost` resolves through an
/// Erlang resolver file (the container has no `/etc/hosts`), and the
/// node's distribution ports stay on loopback.
const RABBITMQ_ENV: &[(&str, &str)] = &[
    ("HOME", DATA_DIR),
    ("PATH", "/usr/lib/rabbitmq/bin:/usr/bin:/bin"),
    ("RABBITMQ_NODENAME", "rabbit@localhost"),
    ("ERL_INETRC", "/tmp/erl_inetrc"),
];

fn rabbitmq_env() -> String {
    RABBITMQ_ENV
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A RabbitMQ command-line tool run with the node's environment (the
/// Debian wrappers in /usr/sbin refuse any uid but root and rabbitmq).
fn rabbitmq_tool(tool: &str, args: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "exec env {} /usr/lib/rabbitmq/bin/{tool} {args}",
            rabbitmq_env()
        ),
    ]
}

/// A RabbitMQ password hash (`rabbit_password_hashing_sha256`): base64 of
/// a 4-byte salt and the SHA-256 of salt and password. The salt comes from
/// the password, so the same password gives the same script.
pub fn rabbitmq_password_hash(password: &str) -> String {
    use base64::Engine as _;
    use sha2::{Digest as _, Sha256};
    let salt_digest = Sha256::digest(format!("launchway rabbitmq salt\0{password}").as_bytes());
    let salt = &salt_digest[..4];
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    let mut bytes = salt.to_vec();
    bytes.extend_from_slice(&hasher.finalize());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An app a service calls (Varnish's relationships).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// The relationship's name: the VCL's director.
    pub name: String,
    /// The app's address on the environment network.
    pub address: std::net::Ipv4Addr,
    /// Its port.
    pub port: u16,
}

/// The port Varnish listens on in its container (uid 10000 cannot bind
/// 80; its namespace's rules send port 80 here).
pub const VARNISH_PORT: u16 = 8080;

/// The whole VCL Varnish loads: the version, the imports, a backend and a
/// round-robin director per relationship (named after it, as on Upsun, so
/// `set req.backend_hint = <relationship>.backend();` works), then the
/// project's VCL.
pub fn varnish_vcl(vcl: &str, backends: &[Backend]) -> String {
    let mut text = String::from("vcl 4.1;\nimport std;\nimport directors;\n\n");
    if backends.is_empty() {
        text.push_str("backend launchway_none none;\n");
    }
    for backend in backends {
        let _ = writeln!(
            text,
            "backend {}_0 {{\n  .host = \"{}\";\n  .port = \"{}\";\n  .connect_timeout = 5s;\n  .first_byte_timeout = 60s;\n}}",
            backend.name, backend.address, backend.port
        );
    }
    text.push_str("\nsub vcl_init {\n");
    for backend in backends {
        let _ = writeln!(
            text,
            "  new {name} = directors.round_robin();\n  {name}.add_backend({name}_0);",
            name = backend.name
        );
    }
    text.push_str("}\n\n");
    text.push_str(vcl);
    if !vcl.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// `text` as one single-quoted shell word.
fn shell_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The shell program of the service's container (PID 1 runs
/// `sh -c <program>`): initialise the data directory on first start, then
/// run the server in the foreground.
pub fn program(
    resolved: &Resolved,
    configuration: &Configuration,
    memory_mib: u64,
    backends: &[Backend],
) -> String {
    let bin = resolved
        .offer
        .bin_dir
        .map_or(String::new(), |dir| format!("{dir}/"));
    let cache = cache_mib(memory_mib);
    match resolved.kind.name {
        "postgresql" => format!(
            r#"set -eu
data={DATA_DIR}/pgdata
if [ ! -s "$data/PG_VERSION" ]; then
  mkdir -p "$data" && chmod 700 "$data"
  {bin}initdb -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/tmp/initdb.log 2>&1 || {{ cat /tmp/initdb.log >&2; exit 1; }}
  printf 'host all all 0.0.0.0/0 scram-sha-256\n' >> "$data/pg_hba.conf"
fi
exec {bin}postgres -D "$data" -c listen_addresses='*' -c port=5432 -c unix_socket_directories=/tmp -c shared_buffers={cache}MB -c password_encryption=scram-sha-256 -c logging_collector=off
"#
        ),
        "mariadb" => format!(
            r#"set -eu
data={DATA_DIR}/mysql
if [ ! -d "$data/mysql" ]; then
  mkdir -p "$data"
  mariadb-install-db --no-defaults --force --skip-name-resolve --datadir="$data" --auth-root-authentication-method=socket --skip-test-db --user=web >/tmp/install.log 2>&1 || {{ cat /tmp/install.log >&2; exit 1; }}
fi
exec mariadbd --no-defaults --datadir="$data" --socket=/tmp/mysqld.sock --bind-address=0.0.0.0 --port=3306 --skip-name-resolve --innodb-buffer-pool-size={cache}M --innodb-log-file-size=16M --innodb-use-native-aio=0 --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci
"#
        ),
        "redis" | "redis-persistent" => {
            let policy = match configuration {
                Configuration::Redis { maxmemory_policy } => maxmemory_policy.as_str(),
                _ => "allkeys-lru",
            };
            let persistence = if resolved.kind.persistent {
                format!("--dir {DATA_DIR} --appendonly yes --save ''")
            } else {
                "--dir /tmp --appendonly no --save ''".to_owned()
            };
            format!(
                "exec redis-server --bind 0.0.0.0 --port 6379 --protected-mode no --daemonize no {persistence} --maxmemory {}mb --maxmemory-policy {policy}\n",
                (memory_mib * 3 / 4).max(16)
            )
        }
        "memcached" => format!("exec memcached -l 0.0.0.0 -p 11211 -U 0 -m {cache}\n"),
        "varnish" => {
            let vcl = match configuration {
                Configuration::Varnish { vcl } => vcl.as_str(),
                _ => "",
            };
            // The VCL is compiled (by gcc) into the working directory, on
            // the container's /tmp; one small thread pool suits the pids
            // limit of a container.
            format!(
                "set -eu\nprintf '%s' {} > /tmp/launchway.vcl\nexec varnishd -F -a 0.0.0.0:{VARNISH_PORT} -T 127.0.0.1:6082 -f /tmp/launchway.vcl -n /tmp/varnish -s malloc,{cache}m -p thread_pools=1 -p thread_pool_min=8 -p thread_pool_max=200\n",
                shell_quoted(&varnish_vcl(vcl, backends))
            )
        }
        "rabbitmq" => {
            let vhosts = match configuration {
                Configuration::RabbitMq { vhosts } => vhosts.as_slice(),
                _ => &[],
            };
            // Read at every boot: the virtual hosts, lazy queues (a burst
            // of messages goes to disk, not into a container's memory), and
            // no `guest` user (a definitions file stops its seeding).
            let mut names = vec!["/".to_owned()];
            names.extend(vhosts.iter().filter(|v| *v != "/").cloned());
            let definitions = serde_json::json!({
                "vhosts": names.iter().map(|name| serde_json::json!({"name": name})).collect::<Vec<_>>(),
                "policies": names.iter().map(|name| serde_json::json!({
                    "vhost": name,
                    "name": "launchway-lazy",
                    "pattern": ".*",
                    "apply-to": "queues",
                    "priority": 0,
                    "definition": {"queue-mode": "lazy"},
                })).collect::<Vec<_>>(),
            });
            let exports: String = RABBITMQ_ENV
                .iter()
                .map(|(name, value)| format!("export {name}={value}\n"))
                .collect();
            format!(
                r#"set -eu
umask 077
{exports}export RABBITMQ_MNESIA_BASE={DATA_DIR}/mnesia RABBITMQ_LOG_BASE=/tmp RABBITMQ_LOGS=- RABBITMQ_CONFIG_FILE=/tmp/rabbitmq.conf RABBITMQ_ENABLED_PLUGINS_FILE=/tmp/enabled_plugins RABBITMQ_PID_FILE=/tmp/rabbitmq.pid ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_MAX_NUMBER_OF_PROCESSES=65536 RABBITMQ_MAX_NUMBER_OF_ATOMS=1048576 ERL_MAX_PORTS=4096
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {{127,0,0,1}}' RABBITMQ_CTL_ERL_ARGS='-kernel inet_dist_use_interface {{127,0,0,1}}'
if [ ! -e {DATA_DIR}/.erlang.cookie ]; then
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > {DATA_DIR}/.erlang.cookie
  chmod 400 {DATA_DIR}/.erlang.cookie
fi
printf '%s\n' 'listeners.tcp.default = 5672' 'load_definitions = /tmp/definitions.json' 'total_memory_available_override_value = {memory_mib}MiB' 'vm_memory_high_watermark.relative = 0.5' > /tmp/rabbitmq.conf
printf '%s\n' '[].' > /tmp/enabled_plugins
printf '%s\n' '{{host, {{127,0,0,1}}, ["localhost"]}}.' '{{lookup, [file, native]}}.' > /tmp/erl_inetrc
printf '%s\n' {definitions} > /tmp/definitions.json
cd /tmp
exec rabbitmq-server
"#,
                definitions = shell_quoted(&definitions.to_string()),
            )
        }
        other => format!("echo 'launchway cannot run {other} yet' >&2; exit 1\n"),
    }
}

/// What the daemon runs in the container until it succeeds: the server
/// answers a real query.
pub fn ready_command(resolved: &Resolved) -> Vec<String> {
    let bin = resolved
        .offer
        .bin_dir
        .map_or(String::new(), |dir| format!("{dir}/"));
    let words: &[&str] = match resolved.kind.name {
        "postgresql" => &[],
        "mariadb" => &[
            "mariadb",
            "--no-defaults",
            "--socket=/tmp/mysqld.sock",
            "-u",
            "web",
            "-N",
            "-e",
            "SELECT 1",
        ],
        "redis" | "redis-persistent" => &["redis-cli", "-p", "6379", "PING"],
        // The manager answers once the child has loaded the VCL.
        "varnish" => &["varnishadm", "-n", "/tmp/varnish", "-t", "2", "status"],
        // (`ping` answers before the broker has booted.)
        "rabbitmq" => return rabbitmq_tool("rabbitmq-diagnostics", "-q check_running"),
        "memcached" => &[
            "sh",
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/11211 2>/dev/null || exit 1",
        ],
        _ => &["false"],
    };
    if resolved.kind.name == "postgresql" {
        return vec![
            format!("{bin}psql"),
            "-h".into(),
            "/tmp".into(),
            "-U".into(),
            "postgres".into(),
            "-d".into(),
            "postgres".into(),
            "-tAc".into(),
            "SELECT 1".into(),
        ];
    }
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// Whether a copy of a service's data taken while it runs (a live
/// backup) is one it can start from: services that keep nothing on disk,
/// and `network-storage`, whose files are as whole as a mount's. A
/// database's files copied while it writes are not (PostgreSQL's and
/// MariaDB's pages, Redis's AOF rewrite, RabbitMQ's Mnesia tables), so
/// those are backed up paused.
pub fn copies_online(kind: &str) -> bool {
    crate::catalog::KINDS
        .iter()
        .any(|k| k.name == kind && (!k.persistent || k.name == "network-storage"))
}

/// What the daemon runs in the container of a service of `kind` and
/// `version` before its data is copied, if anything: PostgreSQL flushes
/// its dirty pages, so a copy replays little WAL.
pub fn checkpoint_command(kind: &str, version: &str) -> Option<Vec<String>> {
    let resolved = crate::catalog::resolve(&format!("{kind}:{version}"), true).ok()?;
    if resolved.kind.name != "postgresql" {
        return None;
    }
    let mut command = ready_command(&resolved);
    let last = command.last_mut()?;
    "CHECKPOINT".clone_into(last);
    Some(command)
}

/// What the daemon runs to apply [`configure_script`] (written to
/// [`CONFIGURE_FILE`]), if the type has one.
pub fn configure_command(resolved: &Resolved) -> Option<Vec<String>> {
    let bin = resolved
        .offer
        .bin_dir
        .map_or(String::new(), |dir| format!("{dir}/"));
    let words: Vec<String> = match resolved.kind.name {
        "postgresql" => vec![
            format!("{bin}psql"),
            "-h".into(),
            "/tmp".into(),
            "-U".into(),
            "postgres".into(),
            "-d".into(),
            "postgres".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
            "-q".into(),
            "-f".into(),
            CONFIGURE_FILE.into(),
        ],
        "mariadb" => vec![
            "sh".into(),
            "-c".into(),
            format!(
                "exec mariadb --no-defaults --socket=/tmp/mysqld.sock -u web < {CONFIGURE_FILE}"
            ),
        ],
        "rabbitmq" => rabbitmq_tool(
            "rabbitmqctl",
            &format!("-q import_definitions < {CONFIGURE_FILE}"),
        ),
        _ => return None,
    };
    Some(words)
}

/// A quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A MariaDB identifier.
fn backquoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The script that applies a SQL service's configuration, idempotently:
/// every run brings users, passwords, databases and privileges to what the
/// config says. Databases the config no longer lists are left as they are
/// (never dropped: that is the operator's to do).
pub fn configure_script(
    resolved: &Resolved,
    configuration: &Configuration,
    credentials: &BTreeMap<String, Credentials>,
) -> Option<String> {
    if let Configuration::RabbitMq { vhosts } = configuration {
        return Some(rabbitmq_definitions(vhosts, credentials));
    }
    let Configuration::Sql(sql) = configuration else {
        return None;
    };
    match resolved.kind.name {
        "postgresql" => Some(postgresql_script(sql, credentials)),
        "mariadb" => Some(mariadb_script(sql, credentials)),
        _ => None,
    }
}

/// RabbitMQ definitions giving each endpoint's user its password and every
/// virtual host, imported on every deploy (imports add and update, never
/// delete).
fn rabbitmq_definitions(vhosts: &[String], credentials: &BTreeMap<String, Credentials>) -> String {
    let mut names = vec!["/".to_owned()];
    names.extend(vhosts.iter().filter(|v| *v != "/").cloned());
    let users: Vec<serde_json::Value> = credentials
        .values()
        .map(|c| {
            serde_json::json!({
                "name": c.username,
                "password_hash": rabbitmq_password_hash(&c.password),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            })
        })
        .collect();
    let permissions: Vec<serde_json::Value> = credentials
        .values()
        .flat_map(|c| {
            names.iter().map(move |vhost| {
                serde_json::json!({
                    "user": c.username,
                    "vhost": vhost,
                    "configure": ".*",
                    "write": ".*",
                    "read": ".*",
                })
            })
        })
        .collect();
    serde_json::json!({
        "users": users,
        "vhosts": names.iter().map(|name| serde_json::json!({"name": name})).collect::<Vec<_>>(),
        "permissions": permissions,
    })
    .to_string()
}

/// The owner of `database`: its first admin endpoint's user (by name),
/// else `postgres`.
fn owner<'a>(
    sql: &Sql,
    database: &str,
    credentials: &'a BTreeMap<String, Credentials>,
) -> Option<&'a str> {
    sql.endpoints
        .iter()
        .filter(|(_, endpoint)| endpoint.privileges.get(database) == Some(&Privilege::Admin))
        .find_map(|(name, _)| credentials.get(name).map(|c| c.username.as_str()))
}

fn postgresql_script(sql: &Sql, credentials: &BTreeMap<String, Credentials>) -> String {
    let mut out = String::from("SET client_min_messages = warning;\n");
    for user in credentials.values() {
        let _ = writeln!(
            out,
            "SELECT format('CREATE ROLE %I LOGIN', {name}) WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name})\\gexec",
            name = literal(&user.username)
        );
        let _ = writeln!(
            out,
            "ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {};",
            ident(&user.username),
            literal(&user.password)
        );
    }
    for database in &sql.databases {
        let owner = owner(sql, database, credentials).unwrap_or("postgres");
        let _ = writeln!(
            out,
            "SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L', {db}, {owner}, 'UTF8') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = {db})\\gexec",
            db = literal(database),
            owner = literal(owner)
        );
        let _ = writeln!(
            out,
            "ALTER DATABASE {} OWNER TO {};\nREVOKE ALL ON DATABASE {} FROM PUBLIC;",
            ident(database),
            ident(owner),
            ident(database)
        );
        let _ = writeln!(out, "\\connect {}", ident(database));
        let _ = writeln!(
            out,
            "SET client_min_messages = warning;\nALTER SCHEMA public OWNER TO {};",
            ident(owner)
        );
        for (name, endpoint) in &sql.endpoints {
            let Some(user) = credentials.get(name) else {
                continue;
            };
            let user_ident = ident(&user.username);
            let on_db = ident(database);
            match endpoint.privileges.get(database) {
                Some(Privilege::Admin) if user.username == owner => {}
                Some(Privilege::Admin) => {
                    // Another administrator acts as the owner, so what it
                    // creates belongs to the owner and the others' grants
                    // cover it.
                    let _ = writeln!(
                        out,
                        "GRANT {owner} TO {user_ident};\nALTER ROLE {user_ident} IN DATABASE {on_db} SET role TO {owner};\nGRANT ALL ON DATABASE {on_db} TO {user_ident};",
                        owner = ident(owner)
                    );
                }
                Some(privilege) => {
                    let tables = if *privilege == Privilege::Rw {
                        "SELECT, INSERT, UPDATE, DELETE"
                    } else {
                        "SELECT"
                    };
                    let sequences = if *privilege == Privilege::Rw {
                        "USAGE, SELECT, UPDATE"
                    } else {
                        "SELECT"
                    };
                    let _ = writeln!(
                        out,
                        "GRANT CONNECT ON DATABASE {on_db} TO {user_ident};\nGRANT USAGE ON SCHEMA public TO {user_ident};\nGRANT {tables} ON ALL TABLES IN SCHEMA public TO {user_ident};\nGRANT {sequences} ON ALL SEQUENCES IN SCHEMA public TO {user_ident};\nALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT {tables} ON TABLES TO {user_ident};\nALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT {sequences} ON SEQUENCES TO {user_ident};",
                        owner = ident(owner)
                    );
                    if *privilege == Privilege::Ro {
                        // What an earlier config granted beyond reading goes.
                        let _ = writeln!(
                            out,
                            "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public FROM {user_ident};\nALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON TABLES FROM {user_ident};",
                            owner = ident(owner)
                        );
                    }
                }
                None => {
                    let _ = writeln!(out, "REVOKE ALL ON DATABASE {on_db} FROM {user_ident};");
                }
            }
        }
        let _ = writeln!(out, "\\connect postgres");
    }
    out
}

fn mariadb_script(sql: &Sql, credentials: &BTreeMap<String, Credentials>) -> String {
    let mut out = String::new();
    for database in &sql.databases {
        let _ = writeln!(
            out,
            "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;",
            backquoted(database)
        );
    }
    for (name, endpoint) in &sql.endpoints {
        let Some(user) = credentials.get(name) else {
            continue;
        };
        let account = format!("{}@'%'", literal(&user.username));
        let _ = writeln!(
            out,
            "CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {pw};\nALTER USER {account} IDENTIFIED BY {pw};\nREVOKE ALL PRIVILEGES, GRANT OPTION FROM {account};",
            pw = literal(&user.password)
        );
        for (database, privilege) in &endpoint.privileges {
            let grants = match privilege {
                Privilege::Ro => "SELECT, CREATE TEMPORARY TABLES, SHOW VIEW",
                Privilege::Rw => {
                    "SELECT, CREATE TEMPORARY TABLES, SHOW VIEW, INSERT, UPDATE, DELETE, EVENT, EXECUTE, INDEX, TRIGGER, LOCK TABLES"
                }
                Privilege::Admin => "ALL PRIVILEGES",
            };
            let _ = writeln!(
                out,
                "GRANT {grants} ON {}.* TO {account};",
                backquoted(database)
            );
        }
    }
    out.push_str("FLUSH PRIVILEGES;\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::resolve;
    use crate::configuration::parse;
    use crate::credentials::credentials;

    #[test]
    fn only_services_whose_files_stay_whole_copy_online() {
        for kind in ["redis", "memcached", "network-storage"] {
            assert!(copies_online(kind), "{kind}");
        }
        for kind in [
            "postgresql",
            "mariadb",
            "redis-persistent",
            "rabbitmq",
            "nosuch",
        ] {
            assert!(!copies_online(kind), "{kind}");
        }
    }

    #[test]
    fn postgresql_checkpoints_before_a_copy_and_others_need_nothing() {
        let command = checkpoint_command("postgresql", "17").unwrap();
        assert_eq!(command[0], "/usr/lib/postgresql/17/bin/psql");
        assert_eq!(command.last().map(String::as_str), Some("CHECKPOINT"));
        assert!(command.join(" ").contains("-U postgres"));
        assert_eq!(checkpoint_command("redis-persistent", "7.0"), None);
        assert_eq!(checkpoint_command("mariadb", "10.11"), None);
        assert_eq!(
            checkpoint_command("postgresql", "9"),
            None,
            "not a version here"
        );
    }

    fn users(resolved: &Resolved, configuration: &Configuration) -> BTreeMap<String, Credentials> {
        let Configuration::Sql(sql) = configuration else {
            return BTreeMap::new();
        };
        sql.endpoints
            .keys()
            .map(|name| {
                (
                    name.clone(),
                    credentials(b"secret", "db", resolved.kind, name),
                )
            })
            .collect()
    }

    #[test]
    fn postgresql_program_initialises_once_and_listens_everywhere() {
        let resolved = resolve("postgresql:15", false).unwrap();
        let configuration = parse(resolved.kind, None).unwrap();
        let text = program(&resolved, &configuration, 256, &[]);
        assert!(
            text.contains("/usr/lib/postgresql/15/bin/initdb -D \"$data\""),
            "{text}"
        );
        assert!(text.contains("if [ ! -s \"$data/PG_VERSION\" ]"), "{text}");
        assert!(text.contains("listen_addresses='*'"), "{text}");
        assert!(text.contains("shared_buffers=64MB"), "{text}");
        assert_eq!(
            ready_command(&resolved)[0],
            "/usr/lib/postgresql/15/bin/psql"
        );
        assert_eq!(image_hooks(resolved.kind).len(), 1);
    }

    #[test]
    fn postgresql_script_sets_users_databases_and_privileges() {
        let resolved = resolve("postgresql:15", false).unwrap();
        let configuration = parse(
            resolved.kind,
            Some(&serde_json::json!({
                "databases": ["main"],
                "endpoints": {
                    "admin": {"default_database": "main", "privileges": {"main": "admin"}},
                    "reader": {"default_database": "main", "privileges": {"main": "ro"}},
                }
            })),
        )
        .unwrap();
        let users = users(&resolved, &configuration);
        let script = configure_script(&resolved, &configuration, &users).unwrap();
        assert!(
            script.contains("CREATE ROLE %I LOGIN', 'reader'"),
            "{script}"
        );
        assert!(script.contains(&format!(
            "ALTER ROLE \"reader\" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{}'",
            users["reader"].password
        )));
        // The first admin owns the database; the default endpoint
        // (`postgresql`, user `main`) administers it as the owner.
        assert!(
            script.contains("ALTER DATABASE \"main\" OWNER TO \"admin\";"),
            "{script}"
        );
        assert!(script.contains("GRANT \"admin\" TO \"main\";"), "{script}");
        assert!(script.contains("GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"reader\";"));
        assert!(script.contains("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public FROM \"reader\";"));
        assert!(!script.contains("DROP"), "nothing is ever dropped");
    }

    #[test]
    fn mariadb_script_grants_per_schema() {
        let resolved = resolve("mariadb:10.11", false).unwrap();
        let configuration = parse(resolved.kind, None).unwrap();
        let users = users(&resolved, &configuration);
        let script = configure_script(&resolved, &configuration, &users).unwrap();
        assert!(
            script.contains("CREATE DATABASE IF NOT EXISTS `main`"),
            "{script}"
        );
        assert!(
            script.contains("CREATE USER IF NOT EXISTS 'user'@'%'"),
            "{script}"
        );
        assert!(
            script.contains("GRANT ALL PRIVILEGES ON `main`.* TO 'user'@'%';"),
            "{script}"
        );
    }

    #[test]
    fn varnish_gets_a_director_per_relationship_and_the_project_vcl_quoted() {
        let resolved = crate::catalog::resolve("varnish:6.0", false).unwrap();
        let vcl = "sub vcl_recv {\n  set req.backend_hint = application.backend(); # it's here\n}";
        let backends = [Backend {
            name: "application".into(),
            address: std::net::Ipv4Addr::new(169, 254, 7, 9),
            port: 8888,
        }];
        let whole = varnish_vcl(vcl, &backends);
        assert!(whole.starts_with("vcl 4.1;\nimport std;\nimport directors;\n"));
        assert!(
            whole.contains(
                "backend application_0 {\n  .host = \"169.254.7.9\";\n  .port = \"8888\";"
            )
        );
        assert!(whole.contains("new application = directors.round_robin();"));
        assert!(whole.ends_with("# it's here\n}\n"));
        assert!(varnish_vcl("", &[]).contains("backend launchway_none none;"));
        let text = program(
            &resolved,
            &Configuration::Varnish { vcl: vcl.into() },
            256,
            &backends,
        );
        // The quote in the VCL survives the shell.
        assert!(text.contains("# it'\\''s here"), "{text}");
        assert!(text.contains("exec varnishd -F -a 0.0.0.0:8080"));
        assert_eq!(ready_command(&resolved)[0], "varnishadm");
    }

    #[test]
    fn rabbitmq_hashes_are_salted_sha256_as_the_broker_checks_them() {
        use base64::Engine as _;
        use sha2::{Digest as _, Sha256};
        let hash = rabbitmq_password_hash("s3cret");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&hash)
            .unwrap();
        assert_eq!(bytes.len(), 36);
        let (salt, digest) = bytes.split_at(4);
        let mut hasher = Sha256::new();
        hasher.update(salt);
        hasher.update(b"s3cret");
        assert_eq!(digest, hasher.finalize().as_slice());
        assert_eq!(hash, rabbitmq_password_hash("s3cret"), "stable");
        assert_ne!(hash, rabbitmq_password_hash("other"));
    }

    #[test]
    fn redis_program_follows_persistence_and_policy() {
        let ephemeral = resolve("redis:7.0", false).unwrap();
        let policy = Configuration::Redis {
            maxmemory_policy: "noeviction".into(),
        };
        let text = program(&ephemeral, &policy, 128, &[]);
        assert!(
            text.contains("--appendonly no") && text.contains("--maxmemory-policy noeviction"),
            "{text}"
        );
        let persistent = resolve("redis-persistent:7.0", false).unwrap();
        let text = program(&persistent, &policy, 128, &[]);
        assert!(text.contains("--dir /mnt/data --appendonly yes"), "{text}");
        assert!(configure_command(&persistent).is_none());
    }
}
