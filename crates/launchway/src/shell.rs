//! `launchway run` (a one-off command in a new container of the app, over
//! the daemon's API), `launchway ssh` and `launchway tunnel` (wrappers of
//! the real OpenSSH client with the user name `PROJECT:ENVIRONMENT[:APP]`).
//!
//! The SSH server is `--ssh HOST[:PORT]`, else `$LAUNCHWAY_SSH`, else the
//! daemon's (its port from `ServerInfo`; the host of the API URL when the
//! CLI talks to a remote daemon, loopback otherwise). The client is `ssh`,
//! or `$LAUNCHWAY_SSH_COMMAND` split on spaces (as `GIT_SSH_COMMAND`), so
//! keys, known hosts and options are the user's own.
//!
//! `tunnel` reads the app's `PLATFORM_RELATIONSHIPS` over SSH, forwards a
//! free loopback port to each relationship (one `ssh -N -L…` process),
//! prints the URLs with their credentials, and holds the tunnels until
//! Ctrl-C. Nothing is written to disk.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use launchway_api::proto;

use crate::admin::with_client;

/// Which app of which environment.
#[derive(Args, Debug)]
pub(crate) struct AppTarget {
    /// The project.
    #[arg(long, short = 'p')]
    project: String,
    /// The environment.
    #[arg(long, short = 'e')]
    environment: String,
    /// The app (default: the environment's only app).
    #[arg(long, short = 'A')]
    app: Option<String>,
}

/// Where the SSH server is.
#[derive(Args, Debug)]
pub(crate) struct SshServer {
    /// The SSH server, HOST[:PORT] (default: $LAUNCHWAY_SSH, else the daemon's).
    #[arg(long = "ssh", value_name = "HOST[:PORT]")]
    ssh: Option<String>,
}

impl AppTarget {
    fn user(&self) -> String {
        match &self.app {
            Some(app) => format!("{}:{}:{app}", self.project, self.environment),
            None => format!("{}:{}", self.project, self.environment),
        }
    }
}

/// `launchway run -p P -e E [-A APP] -- COMMAND…`.
pub(crate) fn run(
    settings_path: Option<&Path>,
    target: AppTarget,
    command: Vec<String>,
) -> anyhow::Result<ExitCode> {
    if command.is_empty() {
        bail!("no command: launchway run -p PROJECT -e ENVIRONMENT -- COMMAND");
    }
    let request = proto::RunCommandRequest {
        project: target.project,
        environment: target.environment,
        app: target.app.unwrap_or_default(),
        command: command.join(" "),
    };
    let code = with_client(settings_path, async |client| {
        let outputs = client.run_command(request).await?.into_inner();
        crate::clients::relay_output(outputs).await
    })?;
    Ok(crate::clients::exit_code(code))
}

/// The SSH server's host and port.
fn ssh_server(settings_path: Option<&Path>, server: &SshServer) -> anyhow::Result<(String, u16)> {
    let given = server
        .ssh
        .clone()
        .or_else(|| std::env::var("LAUNCHWAY_SSH").ok())
        .filter(|s| !s.trim().is_empty());
    if let Some(given) = given {
        return Ok(match given.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.starts_with('[') => (
                host.trim_matches(['[', ']']).to_owned(),
                port.parse()
                    .with_context(|| format!("`{given}`: the port is not a number"))?,
            ),
            _ => (given, 22),
        });
    }
    let info = with_client(settings_path, async |client| {
        Ok(client
            .server_info(proto::ServerInfoRequest {})
            .await?
            .into_inner())
    })?;
    let listen: SocketAddr = info
        .ssh_listen
        .parse()
        .with_context(|| format!("the daemon's SSH address `{}`", info.ssh_listen))?;
    let host = match crate::remote::remote(settings_path)? {
        Some(remote) => url_host(&remote.url)
            .with_context(|| format!("no host in {}", remote.url))?
            .to_owned(),
        None if listen.ip().is_unspecified() => "127.0.0.1".to_owned(),
        None => listen.ip().to_string(),
    };
    Ok((host, listen.port()))
}

/// The host of `https://host[:port][/…]`.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.split(':').next()?,
    };
    (!host.is_empty()).then_some(host)
}

/// `ssh` with the user's options and `options`, for `user` at `host:port`
/// (what follows is the command).
fn ssh_command(host: &str, port: u16, user: &str, options: &[String]) -> std::process::Command {
    let configured = std::env::var("LAUNCHWAY_SSH_COMMAND").unwrap_or_default();
    let mut parts = configured.split_whitespace();
    let mut command = std::process::Command::new(parts.next().unwrap_or("ssh"));
    command.args(parts);
    command
        .arg("-p")
        .arg(port.to_string())
        .arg("-l")
        .arg(user)
        .args(options)
        .arg(host);
    command
}

/// `launchway ssh -p P -e E [-A APP] [-- COMMAND…]`.
pub(crate) fn ssh(
    settings_path: Option<&Path>,
    target: AppTarget,
    server: SshServer,
    command: Vec<String>,
) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt as _;
    let (host, port) = ssh_server(settings_path, &server)?;
    let options = if command.is_empty() {
        vec!["-t".to_owned()]
    } else {
        Vec::new()
    };
    let mut ssh = ssh_command(&host, port, &target.user(), &options);
    if !command.is_empty() {
        ssh.arg("--").arg(command.join(" "));
    }
    let error = ssh.exec();
    Err(error).context("cannot run ssh")
}

/// `launchway tunnel -p P -e E [-A APP] [-r RELATIONSHIP]`.
pub(crate) fn tunnel(
    settings_path: Option<&Path>,
    target: AppTarget,
    server: SshServer,
    only: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (host, port) = ssh_server(settings_path, &server)?;
    let user = target.user();
    let read = ssh_command(&host, port, &user, &[])
        .arg("--")
        .arg("printf %s \"$PLATFORM_RELATIONSHIPS\"")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run ssh")?;
    if !read.status.success() {
        bail!("cannot read the app's relationships over SSH (see above)");
    }
    let relationships = decode_relationships(&read.stdout)?;
    let chosen: Vec<(&String, &serde_json::Value)> = relationships
        .iter()
        .filter(|(name, _)| only.as_deref().is_none_or(|only| only == name.as_str()))
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = relationships.keys().map(String::as_str).collect();
        bail!(
            "no relationship to open{}; the app has: {}",
            only.map(|o| format!(" named `{o}`")).unwrap_or_default(),
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        );
    }
    let mut options: Vec<String> = ["-N", "-o", "ExitOnForwardFailure=yes"]
        .map(str::to_owned)
        .to_vec();
    let mut opened = Vec::new();
    for (name, entry) in chosen {
        let remote_port = entry
            .get("port")
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("relationship {name} has no port"))?;
        let local = free_port()?;
        options.push("-L".into());
        options.push(format!("127.0.0.1:{local}:{name}:{remote_port}"));
        opened.push((name.clone(), local, connection_url(entry, local)));
    }
    let mut child = ssh_command(&host, port, &user, &options)
        .stdin(Stdio::null())
        .spawn()
        .context("cannot run ssh")?;
    // Ready once every local port takes connections.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (_, local, _) in &opened {
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("ssh ended ({status}) before the tunnels opened (see above)");
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, *local)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the tunnels did not open within 30 s");
            }
            // Polling with a deadline: ssh says nothing when its ports listen.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut out = std::io::stdout().lock();
    for (name, local, url) in &opened {
        writeln!(out, "{name}: 127.0.0.1:{local}  {url}")?;
    }
    writeln!(out, "Tunnels open; Ctrl-C closes them.")?;
    out.flush()?;
    drop(out);
    let status = child.wait()?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A loopback port free now (the kernel's pick).
fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot find a free local port")?;
    Ok(listener.local_addr()?.port())
}

/// `PLATFORM_RELATIONSHIPS` (base64 JSON): each relationship's first entry.
fn decode_relationships(encoded: &[u8]) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(encoded);
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .context("PLATFORM_RELATIONSHIPS is not base64")?;
    let all: BTreeMap<String, Vec<serde_json::Value>> =
        serde_json::from_slice(&bytes).context("PLATFORM_RELATIONSHIPS is not JSON")?;
    Ok(all
        .into_iter()
        .filter_map(|(name, mut entries)| {
            (!entries.is_empty()).then(|| (name, entries.swap_remove(0)))
        })
        .collect())
}

/// The URL a local client uses for `entry` through the tunnel at `local`.
fn connection_url(entry: &serde_json::Value, local: u16) -> String {
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    };
    let scheme = match field("scheme") {
        "pgsql" => "postgresql",
        "" => "tcp",
        other => other,
    };
    let credentials = match (field("username"), field("password")) {
        ("", "") => String::new(),
        (user, "") => format!("{}@", encode(user)),
        (user, password) => format!("{}:{}@", encode(user), encode(password)),
    };
    let path = match field("path") {
        "" => String::new(),
        path => format!("/{}", path.trim_start_matches('/')),
    };
    format!("{scheme}://{credentials}127.0.0.1:{local}{path}")
}

/// Percent-encodes what may not stand in a URL's user or password.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_use_the_local_port_and_encode_credentials() {
        let entry = serde_json::json!({
            "scheme": "pgsql", "username": "main", "password": "a:b@c",
            "path": "main", "port": 5432, "host": "database.internal"
        });
        assert_eq!(
            connection_url(&entry, 40000),
            "postgresql://main:a%3Ab%40c@127.0.0.1:40000/main"
        );
        let redis = serde_json::json!({"scheme": "redis", "port": 6379});
        assert_eq!(connection_url(&redis, 1), "redis://127.0.0.1:1");
    }

    #[test]
    fn hosts_come_from_api_urls() {
        assert_eq!(
            url_host("https://deploy.example.com:8443"),
            Some("deploy.example.com")
        );
        assert_eq!(url_host("https://[::1]:8443/x"), Some("::1"));
        assert_eq!(url_host("https://"), None);
    }

    #[test]
    fn relationships_decode_to_their_first_entry() {
        use base64::Engine as _;
        let json = r#"{"database":[{"port":5432}],"empty":[]}"#;
        let encoded = base64::engine::general_purpose::STANDARD.encode(json);
        let decoded = decode_relationships(encoded.as_bytes()).unwrap();
        assert_eq!(decoded.keys().collect::<Vec<_>>(), vec!["database"]);
        assert!(decode_relationships(b"!!").is_err());
        assert!(decode_relationships(b"").unwrap().is_empty());
    }
}
