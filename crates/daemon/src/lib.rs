//! Launchway's daemon: it wires the SSH server, the admin API and the store
//! together and runs the activities pushes create.
//!
//! A push goes: SSH exec ([`launchway_ssh`]) → [`Gate::open`] registers a push
//! session → the real `git receive-pack` runs with Launchway's hooks → the
//! `pre-receive` hook calls [`Launchway::pre_receive`](launchway_api::Launchway)
//! over the admin socket, which checks roles and refs and validates the config
//! at each new commit from the quarantined objects; only then may git move
//! refs → `post-receive` records environments and activities and streams their
//! logs to the pusher → [`Gate::finish`] turns a failed activity into a
//! non-zero exit status for `git push`.
//!
//! Invariants:
//! - state is written to the store before the effect it describes runs;
//! - activities of one environment run one at a time, in creation order;
//! - the messages a pusher sees never include internal error dumps, only
//!   one-line reasons and config diagnostics.

mod acme;
mod activity;
mod activity_views;
mod admission;
mod api;
mod backup_archive;
mod backup_schedule;
mod backups;
mod build_api;
mod build_hosts;
mod builds;
mod certificates;
mod console_login;
mod crons;
mod data_copy;
mod deploy;
mod deploy_start;
pub mod doctor;
mod egress;
mod environment_runtime;
mod environments;
pub mod failpoint;
#[cfg(test)]
mod fuzz;
mod gate;
mod host_fs;
mod http_door;
mod image_plane;
mod keys;
mod logs;
mod outage;
mod paging;
mod policy;
mod project_delete;
mod projects;
mod push;
mod queue;
mod reconcile;
mod release_api;
mod repo_maintenance;
mod restore;
mod retention;
mod run_command;
mod runtimes;
mod service_client;
mod service_data;
mod services;
mod settings;
mod shell;
mod sync;
mod tokens;
mod uploads;
mod variable_api;
mod variables;
mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use launchway_containerd::Engine;
use launchway_containerd::embedded::EmbeddedContainerd;
use launchway_git::{Git, PushLimits};
use launchway_store::{Role, Store};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use settings::{
    ApiSettings, ContainerdSettings, DEFAULT_SETTINGS_PATH, DEFAULTS_FILE, GitSettings,
    RuntimeSettings, Settings, SettingsError, SshSettings,
};

/// What starting or running the daemon can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A directory or file of the data directory.
    #[error("cannot prepare {path}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state database.
    #[error(transparent)]
    Store(#[from] launchway_store::StoreError),
    /// The host key.
    #[error(transparent)]
    HostKey(#[from] launchway_ssh::KeyError),
    /// No `git` on `PATH`.
    #[error("`git` was not found on PATH; install git")]
    GitMissing,
    /// A listen address is taken or not allowed.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address or socket path.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The SSH server stopped with an error.
    #[error("the SSH server failed")]
    Ssh(#[source] std::io::Error),
    /// The API server stopped with an error.
    #[error("the API server failed")]
    Api(#[source] tonic::transport::Error),
    /// The HTTP API's listener cannot be set up.
    #[error("the HTTP API: {0}")]
    Http(String),
    /// No containerd to run containers with.
    #[error("no containerd: {0}")]
    Containerd(#[source] launchway_containerd::EngineError),
    /// Another live daemon owns the containerd namespace.
    #[error("{0}")]
    NamespaceTaken(#[source] launchway_containerd::EngineError),
    /// `[registry]` cannot be used as written.
    #[error("{0}")]
    Registry(String),
    /// The builder role cannot start.
    #[error("{0}")]
    Builder(String),
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Raises the soft limit on open files to the hard one: the daemon holds
/// many sockets, repositories and, while it clones a volume, directories.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        warn!(%error, "cannot raise the open files limit");
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A push in progress: who pushes where, and the pusher's terminal.
#[derive(Debug)]
pub(crate) struct PushSession {
    pub(crate) project: String,
    pub(crate) role: Role,
    /// The key's comment, or its fingerprint when it has none.
    pub(crate) who: String,
    pub(crate) messages: mpsc::Sender<Vec<u8>>,
    /// Set when an activity of this push failed.
    pub(crate) failed: AtomicBool,
    /// Keeps repository maintenance out while the push runs.
    pub(crate) _repository: tokio::sync::OwnedRwLockReadGuard<()>,
}

/// The running daemon's shared state.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub(crate) settings: Settings,
    pub(crate) store: Store,
    pub(crate) git: Arc<Git>,
    pub(crate) repos: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) ssh_addr: SocketAddr,
    pub(crate) sessions: std::sync::Mutex<HashMap<String, Arc<PushSession>>>,
    /// Per project: pushes read-lock its repository, maintenance write-locks it.
    pub(crate) repository_locks: repo_maintenance::RepositoryLocks,
    /// Per environment, activities run one at a time, in creation order.
    pub(crate) queues: queue::Queues,
    pub(crate) tasks: TaskTracker,
    /// containerd, in the configured namespace.
    pub(crate) engine: Engine,
    /// Builds: queue, caches, steps.
    pub(crate) builder: launchway_build::Builder,
    /// The image registry builds are published to (`[registry]`), if any.
    pub(crate) plane: Option<launchway_build::plane::Plane>,
    /// Builders connected now and jobs offered to them.
    pub(crate) build_hosts: build_hosts::BuildHosts,
    /// Where the builder door listens, when it does.
    pub(crate) builders_addr: Option<SocketAddr>,
    /// The cancellation tokens of pending and running activities.
    pub(crate) cancels: std::sync::Mutex<HashMap<u64, CancellationToken>>,
    /// Builds hold it shared; garbage collection exclusively.
    pub(crate) gc_lock: tokio::sync::RwLock<()>,
    /// The HTTP router.
    pub(crate) router: launchway_router::Router,
    /// Where the router listens.
    pub(crate) router_addr: SocketAddr,
    /// Where the router serves HTTPS, when it does.
    pub(crate) router_https_addr: Option<SocketAddr>,
    /// Where the HTTP API listens, when it does.
    pub(crate) http_addr: Option<SocketAddr>,
    /// ACME: each host's last outcome and the account (`certificates.rs`).
    pub(crate) acme: certificates::AcmeState,
    /// Per environment (`project/env`), the socket factory of its namespace.
    pub(crate) factories: std::sync::Mutex<HashMap<String, Arc<launchway_router::SocketFactory>>>,
    /// containerd outages and the deploys they interrupted.
    pub(crate) containerd_watch: outage::ContainerdWatch,
    /// Per environment (`project\0env`), the cron runs in progress.
    pub(crate) crons: std::sync::Mutex<HashMap<String, Vec<crons::RunningCron>>>,
    /// Per environment, how many activities are queued or running.
    pub(crate) busy: std::sync::Mutex<HashMap<String, usize>>,
    /// Backups (`project\0id`) a restore or an export is reading: never
    /// deleted meanwhile.
    pub(crate) backups_in_use: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    /// Woken whenever an activity's log grows or an activity ends
    /// (followers of activity logs wait on it).
    pub(crate) log_written: tokio::sync::Notify,
    /// Woken when a webhook delivery is recorded.
    pub(crate) deliveries_due: tokio::sync::Notify,
    /// Console login codes made over SSH and not yet used.
    pub(crate) console_logins: console_login::LoginCodes,
}

/// Who is serving, for `launchway doctor` and operators.
#[derive(Clone, Debug)]
pub(crate) struct ServerInfo {
    pub(crate) version: &'static str,
    pub(crate) pid: u32,
    pub(crate) ssh_listen: SocketAddr,
    pub(crate) router_listen: SocketAddr,
    pub(crate) router_https_listen: Option<SocketAddr>,
    pub(crate) http_listen: Option<SocketAddr>,
    pub(crate) data_dir: PathBuf,
    pub(crate) containerd_socket: PathBuf,
    pub(crate) embedded_containerd: bool,
}

impl ServerInfo {
    pub(crate) fn to_proto(&self) -> launchway_api::proto::ServerInfoReply {
        let address = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        launchway_api::proto::ServerInfoReply {
            version: self.version.into(),
            pid: self.pid,
            ssh_listen: self.ssh_listen.to_string(),
            router_listen: self.router_listen.to_string(),
            data_dir: self.data_dir.display().to_string(),
            containerd_socket: self.containerd_socket.display().to_string(),
            embedded_containerd: self.embedded_containerd,
            router_https_listen: address(self.router_https_listen),
            http_listen: address(self.http_listen),
        }
    }
}

impl Daemon {
    /// Who is serving: version, process, the addresses actually bound.
    pub(crate) fn server_info(&self) -> ServerInfo {
        ServerInfo {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            ssh_listen: self.ssh_addr,
            router_listen: self.router_addr,
            router_https_listen: self.router_https_addr,
            http_listen: self.http_addr,
            data_dir: self.settings.data_dir.clone(),
            containerd_socket: self.engine.socket().to_path_buf(),
            embedded_containerd: self.engine.socket() != self.settings.containerd.socket,
        }
    }

    /// The bare repository of `project`.
    pub(crate) fn repo_path(&self, project: &str) -> PathBuf {
        self.repos.join(format!("{project}.git"))
    }

    /// `ssh://git@HOST:PORT/NAME.git`.
    pub(crate) fn git_remote(&self, project: &str) -> String {
        let host = self.settings.public_host();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        format!("ssh://git@{host}:{}/{project}.git", self.ssh_addr.port())
    }
}

fn create_dir(path: &Path, mode: u32) -> Result<(), DaemonError> {
    std::fs::create_dir_all(path).map_err(io_error(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_error(path))
}

/// Writes the hook scripts that call back into this binary.
fn write_hooks(dir: &Path) -> Result<(), DaemonError> {
    let exe = std::env::current_exe().map_err(io_error(dir))?;
    let quoted = exe.display().to_string().replace('\'', "'\\''");
    for hook in ["pre-receive", "post-receive"] {
        let path = dir.join(hook);
        let script = format!("#!/bin/sh\nexec '{quoted}' hook {hook}\n");
        std::fs::write(&path, script).map_err(io_error(&path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(io_error(&path))?;
    }
    Ok(())
}

/// Runs the daemon until `shutdown` resolves, then stops accepting work,
/// lets running activities finish (for up to `shutdown_grace_secs`) and
/// returns.
pub async fn serve(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    raise_open_file_limit();
    let data = settings.data_dir.clone();
    create_dir(&data, 0o700)?;
    if !settings.builder.join.is_empty() {
        return build_hosts::host::serve_builder(settings, shutdown).await;
    }
    let repos = data.join("repos");
    let home = data.join("git-home");
    let hooks = data.join("hooks");
    for dir in [&repos, &home, &hooks] {
        create_dir(dir, 0o700)?;
    }
    write_hooks(&hooks)?;
    let store = Store::open_with_cache(
        &data.join("state"),
        settings.state.cache_mib.max(1).saturating_mul(1 << 20),
    )?;
    let host_key = launchway_ssh::load_or_create_host_key(&data.join("ssh_host_ed25519_key"))?;
    let program = Git::find_program().ok_or(DaemonError::GitMissing)?;
    let git = Arc::new(Git::new(
        program,
        home,
        hooks,
        PushLimits {
            max_pack_bytes: settings.git.max_push_bytes,
        },
    ));

    let (mut engine, embedded) = connect_containerd(&settings).await?;
    claim_namespace(&mut engine, &store, &data).await?;

    let listener = tokio::net::TcpListener::bind(settings.ssh.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            address: settings.ssh.listen.to_string(),
            source,
        })?;
    let ssh_addr = listener.local_addr().map_err(|source| DaemonError::Bind {
        address: settings.ssh.listen.to_string(),
        source,
    })?;
    let socket = settings.socket_path();
    let api_listener = bind_socket(&socket)?;
    let router_threads = std::thread::available_parallelism().map_or(1, usize::from);
    let router_listen = settings.router.listen.to_string();
    let bind_error = move |source| DaemonError::Bind {
        address: router_listen.clone(),
        source,
    };
    let router_listeners = launchway_router::bind_listeners(settings.router.listen, router_threads)
        .map_err(&bind_error)?;
    let router_addr = router_listeners
        .first()
        .map(std::net::TcpListener::local_addr)
        .transpose()
        .map_err(&bind_error)?
        .unwrap_or(settings.router.listen);
    let https_listeners = match settings.router.https_listen {
        Some(address) => {
            let listeners =
                launchway_router::bind_listeners(address, router_threads).map_err(|source| {
                    DaemonError::Bind {
                        address: address.to_string(),
                        source,
                    }
                })?;
            let bound = listeners
                .first()
                .map(std::net::TcpListener::local_addr)
                .transpose()
                .map_err(|source| DaemonError::Bind {
                    address: address.to_string(),
                    source,
                })?
                .unwrap_or(address);
            Some((listeners, bound))
        }
        None => None,
    };
    let router_https_addr = https_listeners.as_ref().map(|(_, bound)| *bound);
    let http = match settings.http.listen {
        Some(address) => {
            let bind = |source| DaemonError::Bind {
                address: address.to_string(),
                source,
            };
            let listener = tokio::net::TcpListener::bind(address).await.map_err(bind)?;
            let bound = listener.local_addr().map_err(bind)?;
            let tls = http_door::tls_config(&settings.http, &data)
                .map_err(|error| DaemonError::Http(error.to_string()))?;
            Some((listener, bound, tls))
        }
        None => None,
    };
    let http_addr = http.as_ref().map(|(_, bound, _)| *bound);
    let router = launchway_router::Router::new(launchway_router::RouterSettings {
        hold_timeout: Duration::from_secs(settings.router.hold_timeout_secs),
        ..Default::default()
    });

    let (instance, _) = store.instance_id()?;
    let plane =
        image_plane::open_plane(&settings.registry, &instance).map_err(DaemonError::Registry)?;
    let builder = launchway_build::Builder::new(
        engine.clone(),
        settings.build.clone(),
        settings.runtimes.build_options(),
        data.join("build-cache"),
        data.join("scratch"),
    )
    .with_plane(plane.clone());
    if let Some(plane) = &plane {
        info!(registry = %plane.registry().url(), repository = %plane.registry().repository(), "builds are published to the image registry");
        if let Err(error) = plane.check().await {
            warn!(%error, "the image registry does not answer yet: builds fail until it does");
        }
    }
    let builders_door = match settings.builders.listen {
        Some(address) => {
            let bind = |source| DaemonError::Bind {
                address: address.to_string(),
                source,
            };
            let listener = tokio::net::TcpListener::bind(address).await.map_err(bind)?;
            let bound = listener.local_addr().map_err(bind)?;
            let (tls, pin) = build_hosts::door_tls(&data).map_err(DaemonError::Builder)?;
            Some((listener, bound, tls, pin))
        }
        None => None,
    };
    let builders_addr = builders_door.as_ref().map(|(_, bound, _, _)| *bound);
    let daemon = Arc::new(Daemon {
        builder,
        plane,
        build_hosts: build_hosts::BuildHosts::default(),
        builders_addr,
        cancels: std::sync::Mutex::new(HashMap::new()),
        gc_lock: tokio::sync::RwLock::new(()),
        router: router.clone(),
        router_addr,
        router_https_addr,
        http_addr,
        acme: certificates::AcmeState::default(),
        factories: std::sync::Mutex::new(HashMap::new()),
        settings,
        store,
        git: git.clone(),
        repos,
        socket: socket.clone(),
        ssh_addr,
        sessions: std::sync::Mutex::new(HashMap::new()),
        repository_locks: repo_maintenance::RepositoryLocks::default(),
        queues: queue::Queues::default(),
        tasks: TaskTracker::new(),
        engine,
        containerd_watch: outage::ContainerdWatch::default(),
        crons: std::sync::Mutex::new(HashMap::new()),
        busy: std::sync::Mutex::new(HashMap::new()),
        backups_in_use: Arc::default(),
        log_written: tokio::sync::Notify::new(),
        deliveries_due: tokio::sync::Notify::new(),
        console_logins: console_login::LoginCodes::default(),
    });
    daemon.load_certificates()?;
    if router_https_addr.is_some() && daemon.settings.tls.fallback == settings::TlsFallback::LocalCa
    {
        info!(ca = %daemon.local_ca_path().display(), "hosts without a certificate get one from the local CA: trust it to browse them without warnings");
    }
    daemon.reconcile_at_start().await?;
    daemon.resume_project_deletions();
    let https = router_https_addr.map_or_else(String::new, |address| address.to_string());
    let http_api = http_addr.map_or_else(String::new, |address| address.to_string());
    info!(ssh = %ssh_addr, api = %socket.display(), http_api = %http_api, router = %router_addr, https = %https, data = %data.display(), "launchway is serving");

    let stop = CancellationToken::new();
    let mut router_threads = router
        .serve_threads(router_listeners, stop.clone())
        .map_err(&bind_error)?;
    if let Some((listeners, bound)) = https_listeners {
        let port = daemon.public_https_port().unwrap_or(bound.port());
        router_threads.extend(
            router
                .serve_tls_threads(listeners, port, stop.clone())
                .map_err(|source| DaemonError::Bind {
                    address: bound.to_string(),
                    source,
                })?,
        );
    }
    let acme_task = tokio::spawn(daemon.clone().renew_certificates_forever(stop.clone()));
    let webhooks_task = tokio::spawn(daemon.clone().deliver_webhooks_forever(stop.clone()));
    let rotation = tokio::spawn(logs::rotate_forever(daemon.clone(), stop.clone()));
    let cron_scheduler = tokio::spawn(daemon.clone().run_cron_scheduler(stop.clone()));
    let retention_task = tokio::spawn(daemon.clone().run_retention_forever(stop.clone()));
    let maintenance_task = tokio::spawn(daemon.clone().maintain_repositories_forever(stop.clone()));
    // The claim outlives `stop`: activities may run through the shutdown grace.
    let claim_stop = CancellationToken::new();
    let claim_task = tokio::spawn(keep_namespace_claim(
        daemon.clone(),
        stop.clone(),
        claim_stop.clone(),
    ));
    let containerd_watch = tokio::spawn(outage::watch_containerd(
        daemon.clone(),
        embedded,
        stop.clone(),
    ));
    let ssh = launchway_ssh::SshServer::new(
        daemon.clone(),
        git,
        host_key,
        &launchway_ssh::SshSettings {
            auth_timeout: Duration::from_secs(daemon.settings.ssh.auth_timeout_secs.max(1)),
            max_connections_per_ip: daemon.settings.ssh.max_connections_per_ip,
            keepalive_interval: Duration::from_secs(daemon.settings.ssh.keepalive_secs.max(1)),
            ..launchway_ssh::SshSettings::default()
        },
    );
    let ssh_task = tokio::spawn(ssh.run(listener, stop.clone().cancelled_owned()));
    let api_task = tokio::spawn(launchway_api::serve(
        api::ApiService::new(daemon.clone()),
        api_listener,
        stop.clone().cancelled_owned(),
    ));

    if let Some((listener, _, tls)) = http {
        let door = launchway_http::HttpDoor::new(
            Arc::new(api::ApiService::new(daemon.clone())),
            Arc::new(http_door::TokenAuthenticator {
                daemon: daemon.clone(),
            }),
            daemon.settings.http.failed_auth_per_minute,
            Duration::from_secs(daemon.settings.http.session_hours.max(1) * 3600),
        );
        tokio::spawn(door.serve(listener, tls, stop.clone()));
    }
    if let Some((listener, bound, tls, pin)) = builders_door {
        info!(builders = %bound, %pin, "the builder door is open");
        daemon.build_hosts.set_pin(pin);
        tokio::spawn(build_hosts::serve_door(
            daemon.clone(),
            listener,
            tls,
            stop.clone().cancelled_owned(),
        ));
    }
    let mut ssh_task = ssh_task;
    let mut api_task = api_task;
    let early = tokio::select! {
        () = shutdown => None,
        result = &mut ssh_task => Some(result.map_or(Ok(()), |r| r.map_err(DaemonError::Ssh))),
        result = &mut api_task => Some(result.map_or(Ok(()), |r| r.map_err(DaemonError::Api))),
    };
    info!("shutting down");
    stop.cancel();
    daemon.cancel_all_crons();
    daemon.tasks.close();
    let grace = Duration::from_secs(daemon.settings.shutdown_grace_secs);
    if tokio::time::timeout(grace, daemon.tasks.wait())
        .await
        .is_err()
    {
        warn!(
            "activities still running at shutdown; they will be marked as interrupted at the next start"
        );
    }
    if early.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = (&mut ssh_task).await;
            let _ = (&mut api_task).await;
        })
        .await;
    }
    let _ = std::fs::remove_file(&socket);
    for thread in router_threads {
        let _ = thread.join();
    }
    rotation.abort();
    cron_scheduler.abort();
    retention_task.abort();
    maintenance_task.abort();
    claim_stop.cancel();
    claim_task.abort();
    acme_task.abort();
    webhooks_task.abort();
    daemon.store.flush()?;
    if let Err(error) = daemon.engine.release_namespace().await {
        warn!(%error, "cannot release the containerd namespace claim");
    }
    // The watch ends at `stop`; a containerd that hangs a clean-up must not
    // hang the shutdown (dropping the watch kills the embedded containerd).
    let containerd_watch_abort = containerd_watch.abort_handle();
    let embedded = tokio::time::timeout(Duration::from_secs(10), containerd_watch).await;
    if embedded.is_err() {
        containerd_watch_abort.abort();
    }
    if let Ok(Ok(Some(mut containerd))) = embedded {
        info!("stopping the embedded containerd");
        if let Err(error) = containerd.stop().await {
            warn!(%error, "stopping the embedded containerd");
        }
    }
    early.unwrap_or(Ok(()))
}

/// The configured containerd if it answers, otherwise the embedded default
/// started under the data directory.
pub(crate) async fn connect_containerd(
    settings: &Settings,
) -> Result<(Engine, Option<EmbeddedContainerd>), DaemonError> {
    let scratch = settings.data_dir.join("scratch");
    let namespace = &settings.containerd.namespace;
    match Engine::connect(&settings.containerd.socket, namespace, &scratch).await {
        Ok(engine) => {
            info!(socket = %settings.containerd.socket.display(), "using containerd");
            return Ok((engine, None));
        }
        Err(error @ launchway_containerd::EngineError::Invalid { .. }) => {
            return Err(DaemonError::Containerd(error));
        }
        Err(error) => info!(%error, "starting the embedded containerd"),
    }
    let embedded = EmbeddedContainerd::start(&settings.data_dir, &settings.containerd.binary)
        .await
        .map_err(DaemonError::Containerd)?;
    let engine = Engine::connect(embedded.socket(), namespace, &scratch)
        .await
        .map_err(DaemonError::Containerd)?;
    info!(socket = %embedded.socket().display(), "embedded containerd is up");
    Ok((engine, Some(embedded)))
}

/// The store milestone recording that unlabelled resources were adopted.
const ADOPTED_MILESTONE: &str = "namespace_adopted";

/// Claims the containerd namespace for this data directory's instance
/// (`launchway_containerd::ownership`); refuses to go on when another live
/// daemon owns it.
async fn claim_namespace(
    engine: &mut Engine,
    store: &Store,
    data: &Path,
) -> Result<(), DaemonError> {
    let (instance, _) = store.instance_id()?;
    let claim = engine
        .claim_namespace(
            &instance,
            &data.display().to_string(),
            launchway_containerd::HEARTBEAT * 3,
        )
        .await
        .map_err(|error| match error {
            taken @ launchway_containerd::EngineError::NamespaceTaken { .. } => {
                DaemonError::NamespaceTaken(taken)
            }
            other => DaemonError::Containerd(other),
        })?;
    info!(%instance, namespace = %engine.namespace(), ?claim, "containerd namespace claimed");
    // Until it has once succeeded, unlabelled containers and images in the
    // namespace are an older Launchway's (without ownership): this
    // instance's. Not after a takeover: they may be the dead owner's.
    if !matches!(claim, launchway_containerd::Claim::TakenOver { .. })
        && !store.milestone(ADOPTED_MILESTONE)?
    {
        match engine.adopt_unlabelled().await {
            Ok((containers, images)) => {
                if containers + images > 0 {
                    info!(
                        containers,
                        images, "adopted the namespace's unlabelled containers and images"
                    );
                }
                store.reach_milestone(ADOPTED_MILESTONE)?;
            }
            Err(error) => {
                warn!(%error, "cannot adopt the namespace's unlabelled resources; tried again at the next start");
            }
        }
    }
    Ok(())
}

/// Keeps the namespace claim's heartbeat fresh; when another daemon took
/// the namespace over (this one stalled past the claim's limit), stops
/// serving rather than fight over it.
async fn keep_namespace_claim(
    daemon: Arc<Daemon>,
    stop: CancellationToken,
    claim_stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(launchway_containerd::HEARTBEAT) => {}
            () = claim_stop.cancelled() => return,
        }
        match daemon.engine.heartbeat().await {
            Ok(()) => {}
            Err(error @ launchway_containerd::EngineError::NamespaceTaken { .. }) => {
                tracing::error!(%error, "the containerd namespace was taken over: stopping");
                stop.cancel();
                return;
            }
            Err(error) => warn!(%error, "cannot refresh the containerd namespace claim"),
        }
    }
}

/// Binds the admin socket with mode 0600, replacing a stale one.
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, DaemonError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::Bind {
                address: path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another launchway daemon is serving this socket",
                ),
            });
        }
        std::fs::remove_file(path).map_err(io_error(path))?;
    }
    let bind_error = |source| DaemonError::Bind {
        address: path.display().to_string(),
        source,
    };
    let listener = tokio::net::UnixListener::bind(path).map_err(&bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_error(path))?;
    Ok(listener)
}
