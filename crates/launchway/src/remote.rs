//! Where the CLI sends its requests: the daemon's unix socket on the
//! server, or a daemon's HTTP API from anywhere else.
//!
//! - `LAUNCHWAY_URL` (`https://host:port`) with `LAUNCHWAY_TOKEN`: that
//!   API, for this command (CI).
//! - Else, without `--config`, the login `launchway login URL` saved in
//!   `~/.config/launchway/remote.toml` (mode 0600).
//! - Else the socket named by the settings.
//!
//! The API's certificate is pinned on first use in
//! `~/.config/launchway/known_hosts` (`$LAUNCHWAY_KNOWN_HOSTS`), like
//! SSH's: a changed certificate is refused with the file to edit.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use launchway_http::RemoteSettings;
use serde::{Deserialize, Serialize};

/// `remote.toml`.
#[derive(Debug, Serialize, Deserialize)]
struct Login {
    url: String,
    token: String,
}

fn config_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("launchway"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".config/launchway"))
}

fn known_hosts() -> PathBuf {
    std::env::var_os("LAUNCHWAY_KNOWN_HOSTS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| config_dir().map(|dir| dir.join("known_hosts")))
        .unwrap_or_else(|| PathBuf::from(".launchway_known_hosts"))
}

fn login_path() -> Option<PathBuf> {
    config_dir().map(|dir| dir.join("remote.toml"))
}

fn notice(message: &str) {
    eprintln!("launchway: {message}");
}

/// The remote daemon this command goes to, if any.
pub(crate) fn remote(settings_path: Option<&Path>) -> anyhow::Result<Option<RemoteSettings>> {
    if let Some(url) = std::env::var("LAUNCHWAY_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        let token = std::env::var("LAUNCHWAY_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .context("LAUNCHWAY_URL is set: set LAUNCHWAY_TOKEN to a token too (`launchway token create` on the server)")?;
        return Ok(Some(RemoteSettings {
            url,
            token,
            known_hosts: known_hosts(),
            notice,
        }));
    }
    if settings_path.is_some() {
        return Ok(None);
    }
    let Some(path) = login_path().filter(|p| p.exists()) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let login: Login = toml::from_str(&text).with_context(|| {
        format!(
            "{} is not a login (remove it, then `launchway login URL`)",
            path.display()
        )
    })?;
    Ok(Some(RemoteSettings {
        url: login.url,
        token: login.token,
        known_hosts: known_hosts(),
        notice,
    }))
}

/// `launchway login URL`: checks the token against the API (pinning its
/// certificate), then saves both for the next commands.
pub(crate) fn login(url: &str) -> anyhow::Result<ExitCode> {
    let token = match std::env::var("LAUNCHWAY_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        Some(token) => token,
        None => {
            eprintln!("Token for {url} (from `launchway token create` on the server):");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim().to_owned()
        }
    };
    anyhow::ensure!(!token.is_empty(), "no token given");
    let settings = RemoteSettings {
        url: url.trim_end_matches('/').to_owned(),
        token,
        known_hosts: known_hosts(),
        notice,
    };
    let info = crate::admin::runtime()?.block_on(async {
        let mut client = launchway_http::connect(&settings)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        client
            .server_info(launchway_api::proto::ServerInfoRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| anyhow::anyhow!("{}", status.message()))
    })?;
    let path = login_path().context("no home directory to save the login in (set HOME)")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = toml::to_string(&Login {
        url: settings.url.clone(),
        token: settings.token,
    })?;
    write_private(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "Logged in to {} (Launchway {}); saved in {}",
        settings.url,
        info.version,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `launchway logout`: forgets the saved login (the pin stays).
pub(crate) fn logout() -> anyhow::Result<ExitCode> {
    match login_path() {
        Some(path) if path.exists() => {
            std::fs::remove_file(&path)?;
            println!("Logged out (removed {})", path.display());
        }
        _ => println!("Not logged in"),
    }
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}
