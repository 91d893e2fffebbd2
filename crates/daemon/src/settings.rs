//! The daemon's settings file (TOML). Every key is optional; the defaults are
//! the documented embedded ones, kept in one file, `crates/daemon/launchway.toml`
//! ([`DEFAULTS_FILE`]): `launchway settings defaults` prints it, `make install`
//! writes it to `/etc/launchway/launchway.toml` when that is absent, and a test
//! checks it parses to exactly [`Settings::default`] with every key present.
//!
//! Unknown keys are errors, reported with their line and column.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The settings file with every key at its default, commented.
pub const DEFAULTS_FILE: &str = include_str!("../launchway.toml");

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
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// At shutdown, how long running activities may take to finish.
    pub shutdown_grace_secs: u64,
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
    /// Services (databases, caches).
    pub services: ServicesSettings,
    /// HTTPS certificates.
    pub tls: TlsSettings,
    /// The HTTP API.
    pub http: HttpSettings,
    /// Webhook deliveries.
    pub webhooks: WebhookSettings,
    /// The state database.
    pub state: StateSettings,
    /// How much history is kept.
    pub retention: RetentionSettings,
    /// The image registry builds are published to.
    pub registry: RegistrySettings,
    /// The door build hosts connect to (on an app host).
    pub builders: BuildersSettings,
    /// The builder role: set `join`, and this `serve` only runs builds.
    pub builder: BuilderSettings,
}

/// `[builders]`: the door dedicated build hosts connect to. Off when
/// `listen` is empty: every build runs on this host.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildersSettings {
    /// gRPC over TLS (`""`: no builders).
    #[serde(with = "optional_address")]
    pub listen: Option<SocketAddr>,
    /// The `host:port` join tokens tell builders to dial; the SSH public
    /// host (or the listen address) and the listen port when empty.
    pub advertise: String,
    /// A build whose builder said nothing for this long is lost, and runs
    /// again elsewhere (once).
    pub lease_secs: u64,
    /// With builders registered but none connected, build here instead of
    /// failing.
    pub local_fallback: bool,
}

impl Default for BuildersSettings {
    fn default() -> Self {
        BuildersSettings {
            listen: None,
            advertise: String::new(),
            lease_secs: 20,
            local_fallback: true,
        }
    }
}

/// `[builder]`: this host as a dedicated build host. With `join` set,
/// `launchway serve` opens no SSH, router, admin socket or HTTP door and
/// keeps no state: it dials the daemons the tokens name and runs the builds
/// they send (`[build] concurrency` at a time), through `[registry]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuilderSettings {
    /// How daemons list this builder; the host name when empty.
    pub name: String,
    /// Join tokens (`launchway builders token` on each daemon).
    pub join: Vec<String>,
}

/// `[registry]`: an OCI distribution registry (Debian's `docker-registry`)
/// every frozen build and step image is published to, by digest. Off when
/// `url` is empty: images then live only in this host's containerd.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    /// `https://host:port` (`http://` only for a loopback address).
    pub url: String,
    /// The repository this daemon's images go to; `launchway/<instance>`
    /// (the first 12 characters of the store's instance id) when empty.
    pub repository: String,
    /// The user, when the registry asks for credentials.
    pub username: String,
    /// A file holding the password (read at start-up; keep it 0600).
    pub password_file: PathBuf,
    /// A PEM file of the CAs the registry's certificate chains to (then the
    /// only ones trusted for it; the system's roots when empty).
    pub ca_file: PathBuf,
}

/// `[state]`: the state database (sled).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSettings {
    /// sled's page cache, in MiB (sled's own default, 1 GiB, lets the
    /// daemon's memory grow with its history).
    pub cache_mib: u64,
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings { cache_mib: 16 }
    }
}

/// `[retention]`: how much history (activities, releases, builds and their
/// logs) is kept. Whatever serves, is deploying, waits for promotion, is
/// named by a backup or runs is always kept.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Finished activities (and their logs) older than this are removed,
    /// beyond the newest `releases_per_environment` of each environment.
    pub activities_days: u64,
    /// Releases kept per environment (the newest); older ones go, and with
    /// them their builds once no release names them.
    pub releases_per_environment: u64,
    /// Build logs older than this are dropped, except those of the releases
    /// an environment serves or could roll back to; builds no release names
    /// go after this long.
    pub build_logs_days: u64,
    /// How often the retention pass runs (0: never).
    pub interval_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            activities_days: 30,
            releases_per_environment: 20,
            build_logs_days: 30,
            interval_secs: 3600,
        }
    }
}

/// `[webhooks]`: how events are delivered.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// After a failed attempt, the first wait; each next one is four times
    /// longer, at most an hour.
    pub first_retry_secs: u64,
    /// Attempts before a delivery is given up.
    pub attempts: u32,
    /// How long a receiver has to answer.
    pub timeout_secs: u64,
    /// Whether webhook URLs may point at this host (loopback) or at
    /// link-local addresses (cloud metadata services). Off: a project
    /// admin's webhook cannot probe the server's own services.
    pub allow_local: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            first_retry_secs: 5,
            attempts: 8,
            timeout_secs: 10,
            allow_local: false,
        }
    }
}

/// `[http]`: the HTTPS API and the web console, for remote CLIs, CI and people.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// The listen address (`""`: no HTTP API).
    #[serde(with = "optional_address")]
    pub listen: Option<SocketAddr>,
    /// A PEM certificate chain; empty: a self-signed one made on first
    /// start in `<data_dir>/http/`.
    pub certificate: PathBuf,
    /// Its PEM private key.
    pub key: PathBuf,
    /// Failed authentications one address may make in a minute before it
    /// is answered 429 until the minute ends.
    pub failed_auth_per_minute: u32,
    /// The console's address as people reach it (`https://deploy.example.com`),
    /// used in login links; empty: `https://<host name>:<listen port>`.
    pub public_url: String,
    /// How long a console sign-in lasts.
    pub session_hours: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: None,
            certificate: PathBuf::new(),
            key: PathBuf::new(),
            failed_auth_per_minute: 10,
            public_url: String::new(),
            session_hours: 12,
        }
    }
}

/// `[services]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesSettings {
    /// Memory per service container, MiB.
    pub memory_mib: u64,
    /// How long a service has to answer queries after it starts.
    pub start_timeout_secs: u64,
    /// Refuse a service version this host does not offer instead of
    /// running the nearest one.
    pub exact_versions: bool,
}

impl Default for ServicesSettings {
    fn default() -> Self {
        ServicesSettings {
            memory_mib: 256,
            start_timeout_secs: 120,
            exact_versions: false,
        }
    }
}

/// `[router]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
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
    /// The HTTPS listen address (`""`: no HTTPS).
    #[serde(with = "optional_address")]
    pub https_listen: Option<SocketAddr>,
    /// The port in printed `https://` URLs (0: the HTTPS listen port).
    pub https_public_port: u16,
}

/// `""` or a socket address.
mod optional_address {
    use std::net::SocketAddr;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<SocketAddr>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.map(|a| a.to_string()).unwrap_or_default())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        text.trim().parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not an address such as \"0.0.0.0:443\" (or \"\" for no HTTPS)"
            ))
        })
    }
}

/// `[tls]`: where the router's certificates come from.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// Certificates for hosts with no other.
    pub fallback: TlsFallback,
    /// Obtain certificates from an ACME server.
    pub acme: bool,
    /// The ACME directory URL.
    pub acme_directory: String,
    /// Use Let's Encrypt's staging directory instead of `acme_directory`.
    pub acme_staging: bool,
    /// The account's contact (`mailto:…`).
    pub acme_contact: String,
    /// A PEM file the ACME server's own certificate chains to (test
    /// servers); empty: the system's roots.
    pub acme_ca_bundle: String,
    /// Renew this many days before expiry (a third of a short
    /// certificate's lifetime at most).
    pub renew_before_days: u64,
    /// The first wait after a failed issuance; it doubles up to a day.
    pub acme_retry_secs: u64,
}

/// Let's Encrypt's production directory.
pub(crate) const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory.
pub(crate) const LETS_ENCRYPT_STAGING: &str =
    "https://acme-staging-v02.api.letsencrypt.org/directory";

impl TlsSettings {
    /// The directory URL in use.
    pub fn directory(&self) -> &str {
        if self.acme_staging && self.acme_directory == LETS_ENCRYPT {
            LETS_ENCRYPT_STAGING
        } else {
            &self.acme_directory
        }
    }
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            fallback: TlsFallback::LocalCa,
            acme: false,
            acme_directory: LETS_ENCRYPT.into(),
            acme_staging: false,
            acme_contact: String::new(),
            acme_ca_bundle: String::new(),
            renew_before_days: 30,
            acme_retry_secs: 60,
        }
    }
}

/// What serves a host that has no operator or ACME certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsFallback {
    /// A certificate from a CA generated for this host (trust its root
    /// once: `<data_dir>/tls/local-ca.pem`).
    LocalCa,
    /// A self-signed certificate per host.
    SelfSigned,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            base_domain: "localhost".into(),
            public_port: 0,
            hold_timeout_secs: 30,
            https_listen: None,
            https_public_port: 0,
        }
    }
}

/// `[deploy]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
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
    /// The CA certificates apps trust besides their image's: `off` (the
    /// default: runtime images keep Debian's bundle), `system` (the host's)
    /// or a PEM file; for apps calling internal APIs behind a TLS-
    /// intercepting proxy. Mounted and pointed at as in builds.
    #[serde(deserialize_with = "ca_bundle")]
    pub ca_bundle: String,
}

fn ca_bundle<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let setting = String::deserialize(deserializer)?;
    launchway_build::trust::CaSource::parse(&setting).map_err(serde::de::Error::custom)?;
    Ok(setting)
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
            ca_bundle: "off".to_owned(),
        }
    }
}

/// `[containerd]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// A Debian mirror URI for runtime builds.
    pub mirror: String,
    /// A directory keeping the root filesystems of images built from Debian
    /// packages, reused instead of rebuilt (empty: none; containerd keeps
    /// the images themselves).
    pub rootfs_cache: PathBuf,
    /// Refuse a runtime version the catalog does not offer instead of
    /// building the nearest one.
    pub exact_versions: bool,
}

impl RuntimeSettings {
    /// How images are built from Debian packages.
    pub fn build_options(&self) -> launchway_containerd::runtimes::BuildOptions {
        launchway_containerd::runtimes::BuildOptions {
            mirror: (!self.mirror.is_empty()).then(|| self.mirror.clone()),
            rootfs_cache: (!self.rootfs_cache.as_os_str().is_empty())
                .then(|| self.rootfs_cache.clone()),
            exact_versions: self.exact_versions,
        }
    }
}

/// `[ssh]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
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
    /// Seconds between keepalives to a quiet client; three unanswered
    /// close the connection (and end its shells, commands and tunnels).
    pub keepalive_secs: u64,
}

/// `[api]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// The unix socket (empty: `<data_dir>/launchway.sock`).
    pub socket: PathBuf,
}

/// `[git]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitSettings {
    /// The largest pack a push may send, in bytes.
    pub max_push_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("/var/lib/launchway"),
            shutdown_grace_secs: 120,
            ssh: SshSettings::default(),
            api: ApiSettings::default(),
            git: GitSettings::default(),
            containerd: ContainerdSettings::default(),
            runtimes: RuntimeSettings::default(),
            build: launchway_build::BuildSettings::default(),
            router: RouterConfig::default(),
            deploy: DeploySettings::default(),
            services: ServicesSettings::default(),
            tls: TlsSettings::default(),
            http: HttpSettings::default(),
            state: StateSettings::default(),
            retention: RetentionSettings::default(),
            registry: RegistrySettings::default(),
            builders: BuildersSettings::default(),
            builder: BuilderSettings::default(),
            webhooks: WebhookSettings::default(),
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
            keepalive_secs: 30,
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

    /// Where [`Settings::load`] reads from: `path`, the default file when it
    /// exists, or "the built-in defaults".
    pub fn source(path: Option<&Path>) -> String {
        match path {
            Some(path) => path.display().to_string(),
            None if Path::new(DEFAULT_SETTINGS_PATH).exists() => DEFAULT_SETTINGS_PATH.to_owned(),
            None => "the built-in defaults".to_owned(),
        }
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
        if self.api.socket.as_os_str().is_empty() {
            self.data_dir.join("launchway.sock")
        } else {
            self.api.socket.clone()
        }
    }

    /// The settings as a TOML file (what `launchway settings show` prints).
    pub fn to_toml(&self) -> String {
        // Every field is a string, a number, an address or a path, all of
        // which TOML holds; a failure would be a bug in these types.
        toml::to_string(self).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
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
    fn the_defaults_file_is_the_defaults_with_every_key() {
        let parsed = Settings::parse(DEFAULTS_FILE, "launchway.toml").unwrap();
        assert_eq!(parsed, Settings::default());
        // Every key the settings have is written out in the file, so it
        // documents them all.
        let written: toml::Table = toml::from_str(DEFAULTS_FILE).unwrap();
        let all: toml::Table = toml::from_str(&Settings::default().to_toml()).unwrap();
        assert_eq!(written, all);
        assert_eq!(Settings::parse(&parsed.to_toml(), "shown").unwrap(), parsed);
        // The README shows the same file.
        let readme = include_str!("../../../README.md");
        assert!(
            readme.contains(DEFAULTS_FILE.trim_end()),
            "README.md must carry crates/daemon/launchway.toml verbatim"
        );
    }

    #[test]
    fn unknown_keys_are_located() {
        let error =
            Settings::parse("[ssh]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n", "l.toml").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("l.toml") && text.contains("line 3"), "{text}");
        assert!(Settings::parse("[ssh]\nlisten = \"nope\"\n", "l.toml").is_err());
    }

    #[test]
    fn a_bad_egress_destination_is_located_and_named() {
        let settings = Settings::parse(
            "[build]\negress_allow = [\"*.npmjs.org\", \"127.0.0.2:4873\"]\n",
            "l.toml",
        )
        .unwrap();
        assert!(
            settings
                .build
                .egress_allow_list()
                .permits("registry.npmjs.org", 443)
        );
        let error = Settings::parse(
            "[build]\nconcurrency = 1\negress_allow = [\"pypi.org\", \"pypi.org:https\"]\n",
            "l.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("l.toml") && error.contains("line 3"),
            "{error}"
        );
        assert!(
            error.contains("`pypi.org:https`") && error.contains("port"),
            "{error}"
        );
    }
}
