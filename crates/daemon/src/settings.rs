//! The daemon's settings file (TOML). Every key is optional; the defaults are
//! the documented embedded ones:
//!
//! ```toml
//! data_dir = "/var/lib/launchway"      # state, repositories, host key, socket
//!
//! [ssh]
//! listen = "127.0.0.1:2222"             # where git connects
//! public_host = ""                      # host in printed remotes; the listen address when empty
//!
//! [api]
//! socket = ""                           # the admin socket; <data_dir>/launchway.sock when empty
//!
//! [git]
//! max_push_bytes = 2147483648           # the largest pack one push may send
//!
//! [containerd]
//! socket = "/run/containerd/containerd.sock"  # when nothing answers there, an embedded
//!                                       # containerd is started under <data_dir>/containerd
//! namespace = "launchway"               # the containerd namespace for everything Launchway makes
//! binary = "containerd"                 # what the embedded default runs
//!
//! [runtimes]
//! mirror = ""                           # Debian mirror for runtime builds; deb.debian.org when empty
//!
//! [build]                               # see launchway_build::BuildSettings
//! concurrency = 1                       # builds at a time
//! timeout_secs = 3600                   # per build
//! memory_mib = 4096                     # per build container
//! cpu_shares = 512                      # below apps' default weight of 1024
//! keep_builds = 10                      # per environment, kept by `launchway gc`
//!
//! [router]
//! listen = "127.0.0.1:8080"             # the HTTP router
//! base_domain = "localhost"             # {default} = <branch>.<project>.<base_domain>
//! public_port = 0                       # the port in printed URLs; the listen port when 0
//! hold_timeout_secs = 30                # a request held during a deploy waits this long, then 503
//!
//! [deploy]
//! start_timeout_secs = 60               # an app must accept connections within this
//! stop_grace_secs = 10                  # SIGTERM, then SIGKILL after this
//! drain_timeout_secs = 10               # in-flight requests to the old version may finish
//! memory_mib = 0                        # per app container; 0 = no limit
//! pids = 4096                           # per app container
//! log_max_mib = 10                      # app logs rotate at this size (3 kept)
//! ```
//!
//! Unknown keys are errors, reported with their line and column.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the settings file is looked for when none is given.
pub const DEFAULT_SETTINGS_PATH: &str = "/etc/launchway/launchway.toml";

/// What loading settings can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid settings.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with its line and column.
        message: String,
    },
}

/// The daemon's settings, defaults applied.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The SSH server.
    pub ssh: SshSettings,
    /// The admin API.
    pub api: ApiSettings,
    /// git.
    pub git: GitSettings,
    /// containerd.
    pub containerd: ContainerdSettings,
    /// Runtime images.
    pub runtimes: RuntimeSettings,
    /// Builds.
    pub build: launchway_build::BuildSettings,
    /// The HTTP router.
    pub router: RouterConfig,
    /// Deploys.
    pub deploy: DeploySettings,
}

/// `[router]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// The listen address.
    pub listen: SocketAddr,
    /// `{default}` = `<branch>.<project>.<base_domain>`.
    pub base_domain: String,
    /// The port in printed URLs (0: the listen port).
    pub public_port: u16,
    /// How long a held request waits.
    pub hold_timeout_secs: u64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            base_domain: "localhost".into(),
            public_port: 0,
            hold_timeout_secs: 30,
        }
    }
}

/// `[deploy]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeploySettings {
    /// How long an app has to accept connections.
    pub start_timeout_secs: u64,
    /// SIGTERM, then SIGKILL after this.
    pub stop_grace_secs: u64,
    /// How long in-flight requests to the old version may take.
    pub drain_timeout_secs: u64,
    /// Memory per app container (0: no limit).
    pub memory_mib: u64,
    /// Processes per app container.
    pub pids: u64,
    /// App log size before rotation.
    pub log_max_mib: u64,
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            start_timeout_secs: 60,
            stop_grace_secs: 10,
            drain_timeout_secs: 10,
            memory_mib: 0,
            pids: 4096,
            log_max_mib: 10,
        }
    }
}

/// `[containerd]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerdSettings {
    /// The socket of the containerd to use.
    pub socket: PathBuf,
    /// The namespace Launchway's images and containers live in.
    pub namespace: String,
    /// The containerd program the embedded default starts.
    pub binary: PathBuf,
}

impl Default for ContainerdSettings {
    fn default() -> Self {
        ContainerdSettings {
            socket: PathBuf::from("/run/containerd/containerd.sock"),
            namespace: launchway_containerd::DEFAULT_NAMESPACE.to_string(),
            binary: PathBuf::from("containerd"),
        }
    }
}

/// `[runtimes]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// A Debian mirror URI for runtime builds.
    pub mirror: String,
}

/// `[ssh]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshSettings {
    /// The listen address.
    pub listen: SocketAddr,
    /// The host name printed in git remotes.
    pub public_host: String,
    /// Seconds a connection has to authenticate before it is closed.
    pub auth_timeout_secs: u64,
    /// Connections one IP address may hold at once.
    pub max_connections_per_ip: usize,
}

/// `[api]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// The unix socket.
    pub socket: Option<PathBuf>,
}

/// `[git]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitSettings {
    /// The largest pack a push may send, in bytes.
    pub max_push_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("/var/lib/launchway"),
            ssh: SshSettings::default(),
            api: ApiSettings::default(),
            git: GitSettings::default(),
            containerd: ContainerdSettings::default(),
            runtimes: RuntimeSettings::default(),
            build: launchway_build::BuildSettings::default(),
            router: RouterConfig::default(),
            deploy: DeploySettings::default(),
        }
    }
}

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 2222)),
            public_host: String::new(),
            auth_timeout_secs: 30,
            max_connections_per_ip: 64,
        }
    }
}

impl Default for GitSettings {
    fn default() -> Self {
        GitSettings {
            max_push_bytes: 2 * 1024 * 1024 * 1024,
        }
    }
}

impl Settings {
    /// Parses settings text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Settings, SettingsError> {
        toml::from_str(text).map_err(|e| SettingsError::Invalid {
            path: path.to_owned(),
            message: e.to_string().trim().to_owned(),
        })
    }

    /// Loads `path`, or the default file when it exists, or the defaults.
    pub fn load(path: Option<&Path>) -> Result<Settings, SettingsError> {
        let default = Path::new(DEFAULT_SETTINGS_PATH);
        let path = match path {
            Some(path) => path,
            None if default.exists() => default,
            None => return Ok(Settings::default()),
        };
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Settings::parse(&text, &path.display().to_string())
    }

    /// The admin socket.
    pub fn socket_path(&self) -> PathBuf {
        self.api
            .socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("launchway.sock"))
    }

    /// The host printed in git remotes.
    pub fn public_host(&self) -> String {
        if self.ssh.public_host.is_empty() {
            self.ssh.listen.ip().to_string()
        } else {
            self.ssh.public_host.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let settings = Settings::parse("", "x").unwrap();
        assert_eq!(settings.ssh.listen.to_string(), "127.0.0.1:2222");
        assert_eq!(
            settings.socket_path(),
            PathBuf::from("/var/lib/launchway/launchway.sock")
        );
        let settings = Settings::parse("data_dir = \"/d\"\n[ssh]\nlisten = \"0.0.0.0:22\"\npublic_host = \"git.example.com\"\n", "x").unwrap();
        assert_eq!(settings.socket_path(), PathBuf::from("/d/launchway.sock"));
        assert_eq!(settings.public_host(), "git.example.com");
    }

    #[test]
    fn unknown_keys_are_located() {
        let error =
            Settings::parse("[ssh]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n", "l.toml").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("l.toml") && text.contains("line 3"), "{text}");
        assert!(Settings::parse("[ssh]\nlisten = \"nope\"\n", "l.toml").is_err());
    }
}
