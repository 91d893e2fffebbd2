//! Services in a deploy (the seed's "Expose services"): after the mounts and
//! before the apps start, every service of the release runs in a container
//! of its own, answers a real query and has its configuration applied.
//!
//! - A service container is `lws-<environment id>-<name>-<run hash>`: the
//!   `lws-` prefix keeps it out of what a deploy stops as the old version,
//!   and the hash (of its image, program and memory) tells whether the
//!   running one is still the one the release wants. A deploy that does not
//!   change a service leaves it running; one that changes it restarts that
//!   service alone.
//! - Its image (`launchway/service/<type>:<version>`) is built from Debian
//!   packages on first use, its progress in the deploy log.
//! - Its data is the environment's `services/<name>` (owned by uid 10000,
//!   bound at `/mnt/data`), which records the type and version it was made
//!   with in `.launchway-service`: starting another type or major on it is
//!   refused, never attempted.
//! - Like an app process it runs under the supervisor, which restarts it
//!   when it exits (its exits are counted in `run/service-<name>/`).
//! - The configuration script (users, passwords, databases, privileges) is
//!   written to its run directory (mode 0600), run through the server's own
//!   client in the container, and removed.
//! - A service the config no longer has is stopped; its data stays, listed
//!   as detached, until an operator deletes it (`service_data.rs`, with the
//!   listing and the checkpoint before a clone; `service_client.rs` runs
//!   `launchway sql`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use launchway_containerd::debian::DebianImage;
use launchway_containerd::{AppLabels, Bind, Limits, Network, Output, StepSpec};
use launchway_deploy::network::{HUB_ADDRESS, PREFIX_LEN, ruleset};
use launchway_deploy::services::ServiceSpec;
use launchway_deploy::{DeploySpec, SUPERVISOR, environment_id};
use rand::RngExt as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::Daemon;
use crate::activity::Log;
use crate::deploy::environment_key;
use crate::host_fs::{read_no_follow, safe_app_dir, write_file};

/// Service container ids start with this.
pub(crate) const SERVICE_PREFIX: &str = "lws-";
/// Service images are named under this.
pub(crate) const SERVICE_IMAGE_PREFIX: &str = "launchway/service/";
/// The file in a service's data directory that says what made it.
const RECORD_FILE: &str = ".launchway-service";
/// The configuration script, in the service's run directory (`/run`).
const CONFIGURE_NAME: &str = "launchway-configure.sql";
/// Lines of a service's log shown when it does not start.
const LOG_TAIL_LINES: usize = 15;
/// A service that exits this often before it answers has failed to start.
const CRASHES_BEFORE_GIVING_UP: usize = 3;

/// Whether container `id` is a service's.
pub(crate) fn is_service_container(id: &str) -> bool {
    id.starts_with(SERVICE_PREFIX)
}

/// A new project's service secret (32 random bytes, hex).
pub(crate) fn new_secret() -> String {
    let mut rng = rand::rng();
    let bytes: Vec<u8> = (0..32).map(|_| rng.random_range(0..=255u8)).collect();
    hex::encode(bytes)
}

/// What made a service's data directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct DataRecord {
    kind: String,
    version: String,
}

/// The container id of `service` in environment `env_id`.
pub(crate) fn container_id(env_id: &str, service: &ServiceSpec) -> String {
    format!(
        "{SERVICE_PREFIX}{env_id}-{}-{}",
        service.name, service.run_hash
    )
}

/// The service name in a service container id of environment `env_id`.
fn service_of(env_id: &str, id: &str) -> Option<String> {
    let rest = id.strip_prefix(SERVICE_PREFIX)?.strip_prefix(env_id)?;
    let rest = rest.strip_prefix('-')?;
    let (name, hash) = rest.rsplit_once('-')?;
    (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| name.to_owned())
}

/// Whether data made as `recorded` may run `service`: the same type (the
/// MySQL names are MariaDB) and the same major version.
fn data_fits(recorded: &DataRecord, service: &ServiceSpec) -> Result<(), String> {
    let major = |version: &str| version.split('.').next().unwrap_or_default().to_owned();
    let family = |kind: &str| match kind {
        "redis-persistent" => "redis".to_owned(),
        other => other.to_owned(),
    };
    if family(&recorded.kind) != family(&service.kind) {
        return Err(format!(
            "service '{}' holds {} data, and the config now asks for {}: a service's type cannot change. Give the new type a new service name (its data starts empty); the old data stays until deleted",
            service.name, recorded.kind, service.kind
        ));
    }
    if major(&recorded.version) != major(&service.version) {
        return Err(format!(
            "service '{}' holds data of {} {}, and {} would run {}: its data is not converted in place. Dump it (`launchway db dump`), give the new version a new service name, and load the dump into it",
            service.name, recorded.kind, recorded.version, service.written_type, service.version
        ));
    }
    Ok(())
}

impl Daemon {
    /// The project's service secret, made and stored the first time a
    /// project made before services needs one.
    pub(crate) fn service_secret(&self, project: &str) -> Result<Vec<u8>, String> {
        let record = self
            .store
            .update_project(project, |record| {
                if record.service_secret.is_empty() {
                    record.service_secret = new_secret();
                }
            })
            .map_err(|e| format!("the project cannot be recorded: {e}"))?
            .ok_or_else(|| format!("there is no project {project}"))?;
        hex::decode(&record.service_secret)
            .map_err(|_| "the project's service secret is damaged".to_owned())
    }

    fn service_run_dir(&self, spec: &DeploySpec, name: &str) -> PathBuf {
        self.environment_dir(&spec.project, &spec.environment)
            .join("run")
            .join(format!("service-{name}"))
    }

    fn service_log_path(&self, project: &str, environment: &str, name: &str) -> PathBuf {
        self.environment_dir(project, environment)
            .join("logs")
            .join(format!("service--{name}.log"))
    }

    /// Runs every service of `spec` as it wants (see the module doc) and
    /// stops those it no longer has. A failure names the service.
    pub(crate) async fn ensure_services(
        &self,
        spec: &DeploySpec,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let env_id = environment_id(&spec.project, &spec.environment);
        let owner = environment_key(&spec.project, &spec.environment);
        let running: Vec<String> = self
            .engine
            .app_containers(Some(&owner))
            .await
            .map_err(|e| format!("cannot list the environment's containers: {e}"))?
            .into_iter()
            .filter(|id| is_service_container(id))
            .collect();
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for id in running {
            if let Some(name) = service_of(&env_id, &id) {
                by_name.entry(name).or_default().push(id);
            }
        }
        for service in &spec.services {
            let wanted = container_id(&env_id, service);
            let existing = by_name.remove(&service.name).unwrap_or_default();
            let kept =
                existing.contains(&wanted) && self.service_answers(&wanted, service, cancel).await;
            if kept {
                log.line(&format!(
                    "    Service {} ({}:{}) is running",
                    service.name, service.kind, service.version
                ))
                .await;
            } else {
                if !existing.is_empty() {
                    log.line(&format!("    Restarting service {}", service.name))
                        .await;
                    self.stop_containers(&existing).await;
                }
                self.start_service(spec, service, &wanted, &owner, log, cancel)
                    .await?;
            }
            self.configure_service(spec, service, &wanted, log, cancel)
                .await?;
        }
        for (name, ids) in by_name {
            log.line(&format!(
                "    Service {name} is no longer in the config: stopped; its data is kept (detached) until deleted"
            ))
            .await;
            self.stop_containers(&ids).await;
        }
        Ok(())
    }

    /// Whether the service in container `id` answers its readiness query.
    pub(crate) async fn service_answers(
        &self,
        id: &str,
        service: &ServiceSpec,
        cancel: &CancellationToken,
    ) -> bool {
        self.readiness(id, service, cancel).await.0
    }

    /// Runs the readiness query: whether it succeeded, and its last lines
    /// and outcome. (Its output is read, not discarded: an exec's output
    /// must go somewhere for it to run.)
    async fn readiness(
        &self,
        id: &str,
        service: &ServiceSpec,
        cancel: &CancellationToken,
    ) -> (bool, Vec<String>) {
        let mut step = StepSpec::new(service.ready.iter().cloned());
        step.timeout = Some(Duration::from_secs(10));
        let (sender, mut lines) = tokio::sync::mpsc::channel(64);
        let (outcome, said) = tokio::join!(
            self.engine
                .exec_in_app(id, &step, Output::Lines(sender), cancel),
            async {
                let mut said: Vec<String> = Vec::new();
                while let Some(line) = lines.recv().await {
                    let line: launchway_containerd::OutputLine = line;
                    said.push(line.line);
                }
                said
            }
        );
        let mut said: Vec<String> = said.into_iter().rev().take(5).rev().collect();
        let success = match outcome {
            Ok(outcome) => {
                said.push(outcome.describe());
                outcome.success()
            }
            Err(error) => {
                said.push(error.to_string());
                false
            }
        };
        (success, said)
    }

    /// The service's image, built from Debian packages on first use.
    async fn service_image(&self, service: &ServiceSpec, log: &Log) -> Result<String, String> {
        let name = format!("{SERVICE_IMAGE_PREFIX}{}", service.image_type);
        match self.engine.image(&name).await {
            Ok(_) => return Ok(name),
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(format!("the image of service '{}': {error}", service.name)),
        }
        let resolved =
            launchway_services::resolve(&service.image_type, true).map_err(|e| e.to_string())?;
        let image = DebianImage {
            name: name.clone(),
            what: format!("service image {}", service.image_type),
            suite: service.suite.clone(),
            backports: false,
            packages: service.packages.clone(),
            extra_path: resolved.offer.bin_dir.map(str::to_owned),
            extra_hooks: launchway_services::run::image_hooks(resolved.kind),
            labels: HashMap::from([(
                "org.launchway.service.type".to_string(),
                service.image_type.clone(),
            )]),
            version_command: launchway_services::run::version_command(&resolved),
        };
        let (sender, mut lines) = tokio::sync::mpsc::channel::<String>(64);
        let forward = {
            let log = log.clone();
            async move {
                while let Some(line) = lines.recv().await {
                    log.line(&format!("      {line}")).await;
                }
            }
        };
        let options = self.settings.runtimes.build_options();
        let (built, ()) = tokio::join!(
            async {
                let built = self
                    .engine
                    .build_debian_image(&image, &sender, &options)
                    .await;
                drop(sender);
                built
            },
            forward
        );
        built
            .map(|_| name)
            .map_err(|e| format!("building the image of service '{}': {e}", service.name))
    }

    /// Makes the service's directories and network member, then creates
    /// and starts its container and waits until it answers.
    async fn start_service(
        &self,
        spec: &DeploySpec,
        service: &ServiceSpec,
        id: &str,
        owner: &str,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        log.line(&format!(
            "    Starting service {} ({}:{})",
            service.name, service.kind, service.version
        ))
        .await;
        let image = self.service_image(service, log).await?;
        let env_dir = self.environment_dir(&spec.project, &spec.environment);
        std::fs::create_dir_all(&env_dir).map_err(|e| format!("{}: {e}", env_dir.display()))?;
        let mut binds = Vec::new();
        if service.persistent {
            let data = safe_app_dir(&env_dir, &format!("services/{}", service.name))
                .map_err(|e| format!("the data of service '{}': {e}", service.name))?;
            self.check_data(&data, service)?;
            binds.push(Bind {
                source: data,
                target: launchway_services::run::DATA_DIR.into(),
                writable: true,
            });
        }
        let run_dir = self.service_run_dir(spec, &service.name);
        if run_dir.exists() {
            std::fs::remove_dir_all(&run_dir)
                .map_err(|e| format!("clearing {}: {e}", run_dir.display()))?;
        }
        let run_relative = format!("run/service-{}", service.name);
        safe_app_dir(&env_dir, &run_relative)
            .map_err(|e| format!("the run directory of service '{}': {e}", service.name))?;
        binds.push(Bind {
            source: run_dir,
            target: "/run".into(),
            writable: true,
        });
        // What `make bench` compares with the same server started on the
        // host: from here (image ready) until it answers.
        let started = Instant::now();
        let network = self.network(&spec.project, &spec.environment);
        let member = network.member(service.address);
        // The link is made while containerd creates the container: only
        // the start needs it.
        let linking = {
            let address = service.address;
            // A service opens no connection but to the apps it calls.
            let rules = ruleset(&service.filter);
            async move {
                let linked = Instant::now();
                tokio::task::spawn_blocking(move || {
                    network.ensure_member(address, PREFIX_LEN, HUB_ADDRESS, &rules)
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|made| made.map(|_| ()).map_err(|e| e.to_string()))
                .map(|()| linked.elapsed())
            }
        };
        let mut step = StepSpec::new([
            "/bin/sh".to_string(),
            "-c".to_string(),
            SUPERVISOR.to_string(),
            "launchway-supervise".to_string(),
            String::new(),
            service.program.clone(),
        ]);
        step.cwd = "/".into();
        step.binds = binds;
        step.network = Network::Join(member);
        step.hostname = service.name.clone();
        step.limits = Limits {
            memory_bytes: Some(service.memory_mib << 20),
            cpu_shares: None,
            pids: Some(self.settings.deploy.pids),
        };
        let labels = AppLabels {
            owner: owner.to_owned(),
            extra: HashMap::from([
                ("org.launchway.service".to_string(), service.name.clone()),
                (
                    "org.launchway.service.type".to_string(),
                    format!("{}:{}", service.kind, service.version),
                ),
            ]),
        };
        let log_path = self.service_log_path(&spec.project, &spec.environment, &service.name);
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let creating = async {
            let created = Instant::now();
            self.engine
                .create_app(id, &image, &step, &labels)
                .await
                .map(|()| created.elapsed())
        };
        let (linked, created) = tokio::join!(linking, creating);
        let created = created.map_err(|e| {
            format!(
                "cannot create the container of service '{}': {e}",
                service.name
            )
        })?;
        let linked = match linked {
            Ok(took) => took,
            Err(error) => {
                self.stop_containers(&[id.to_owned()]).await;
                return Err(format!(
                    "cannot connect service '{}' to the environment network: {error}",
                    service.name
                ));
            }
        };
        let starting = Instant::now();
        if let Err(error) = self.engine.start_app(id, &log_path).await {
            self.stop_containers(&[id.to_owned()]).await;
            return Err(format!("cannot start service '{}': {error}", service.name));
        }
        let start_took = starting.elapsed();
        let mut listening_after = None;
        let deadline =
            Instant::now() + Duration::from_secs(self.settings.services.start_timeout_secs);
        let mut interval = Duration::from_millis(20);
        // The real query is an exec (tens of milliseconds): ask it once the
        // server's port takes connections, which a connection from the
        // environment's hub tells in microseconds.
        let port =
            launchway_services::resolve(&format!("{}:{}", service.kind, service.version), true)
                .ok()
                .map(|resolved| resolved.kind.port);
        let factory = self.socket_factory(&spec.project, &spec.environment).ok();
        loop {
            let listening = match (&factory, port) {
                (Some(factory), Some(port)) => {
                    port_accepts(factory, std::net::SocketAddr::from((service.address, port))).await
                }
                _ => true,
            };
            if listening && listening_after.is_none() {
                listening_after = Some(started.elapsed());
            }
            if listening && self.service_answers(id, service, cancel).await {
                let total = started.elapsed();
                log.line(&format!(
                    "      Service {} answers ({:.2} s: network link {:.0} ms beside container {:.0} ms, start {:.0} ms, port open at {:.0} ms)",
                    service.name,
                    total.as_secs_f64(),
                    linked.as_secs_f64() * 1000.0,
                    created.as_secs_f64() * 1000.0,
                    start_took.as_secs_f64() * 1000.0,
                    listening_after.unwrap_or(total).as_secs_f64() * 1000.0,
                ))
                .await;
                crate::failpoint::reached("deploy.service_started");
                return Ok(());
            }
            // A server that keeps exiting will not answer: say so early.
            let exits = read_no_follow(
                &self
                    .service_run_dir(spec, &service.name)
                    .join(launchway_deploy::spec::EXITS_FILE),
            )
            .map_or(0, |text| text.lines().count());
            let crashing = exits >= CRASHES_BEFORE_GIVING_UP;
            if crashing || Instant::now() > deadline || cancel.is_cancelled() {
                let (tail, _) = crate::logs::tail(&log_path, LOG_TAIL_LINES);
                for line in tail.lines() {
                    log.line(&format!("      | {line}")).await;
                }
                for line in self.readiness(id, service, cancel).await.1 {
                    log.line(&format!("      readiness check: {line}")).await;
                }
                self.stop_containers(&[id.to_owned()]).await;
                return Err(if crashing {
                    format!(
                        "service '{}' exited {exits} times while starting (its log is above)",
                        service.name
                    )
                } else {
                    format!(
                        "service '{}' did not answer within {} s (its log and the readiness check are above)",
                        service.name, self.settings.services.start_timeout_secs
                    )
                });
            }
            if listening {
                // Most servers answer within a second: ask often at first.
                tokio::time::sleep(interval).await;
                interval = (interval * 2).min(Duration::from_millis(250));
            } else {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// Why `service` would refuse the data in `data` (made by another type or
/// major, or a damaged record), if it would; reads only.
pub(crate) fn data_refused(data: &Path, service: &ServiceSpec) -> Option<String> {
    let text = read_no_follow(&data.join(RECORD_FILE))?;
    match serde_json::from_str::<DataRecord>(&text) {
        Ok(recorded) => data_fits(&recorded, service).err(),
        Err(_) => Some(format!(
            "the data of service '{}' has a damaged {RECORD_FILE}",
            service.name
        )),
    }
}

impl Daemon {
    /// Refuses data made by another type or major; records what makes new
    /// data.
    fn check_data(&self, data: &Path, service: &ServiceSpec) -> Result<(), String> {
        let record_path = data.join(RECORD_FILE);
        let wanted = DataRecord {
            kind: service.kind.clone(),
            version: service.version.clone(),
        };
        match read_no_follow(&record_path) {
            Some(text) => {
                let recorded: DataRecord = serde_json::from_str(&text).map_err(|_| {
                    format!(
                        "the data of service '{}' has a damaged {RECORD_FILE}; it is not started",
                        service.name
                    )
                })?;
                data_fits(&recorded, service)
            }
            None => {
                let text = serde_json::to_string(&wanted).map_err(|e| e.to_string())?;
                write_file(&record_path, text.as_bytes())
                    .map_err(|e| format!("recording the data of service '{}': {e}", service.name))
            }
        }
    }

    /// Applies the service's configuration (idempotent; every deploy).
    async fn configure_service(
        &self,
        spec: &DeploySpec,
        service: &ServiceSpec,
        id: &str,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let (Some(command), Some(script)) = (&service.configure, &service.configure_script) else {
            return Ok(());
        };
        let file = self
            .service_run_dir(spec, &service.name)
            .join(CONFIGURE_NAME);
        write_private(&file, script.as_bytes()).map_err(|e| {
            format!(
                "writing the configuration of service '{}': {e}",
                service.name
            )
        })?;
        let mut step = StepSpec::new(command.iter().map(|part| {
            part.replace(
                launchway_services::run::CONFIGURE_FILE,
                &format!("/run/{CONFIGURE_NAME}"),
            )
        }));
        step.timeout = Some(Duration::from_secs(120));
        let (sender, mut lines) = tokio::sync::mpsc::channel(64);
        let outcome = {
            let run = self
                .engine
                .exec_in_app(id, &step, Output::Lines(sender), cancel);
            let collect = async {
                let mut said = Vec::new();
                while let Some(line) = lines.recv().await {
                    let line: launchway_containerd::OutputLine = line;
                    said.push(line.line);
                }
                said
            };
            tokio::join!(run, collect)
        };
        if let Err(error) = std::fs::remove_file(&file) {
            warn!(%error, file = %file.display(), "removing a service's configuration script");
        }
        match outcome {
            (Ok(outcome), _) if outcome.success() => {
                log.line(&format!("      Service {} configured", service.name))
                    .await;
                Ok(())
            }
            (Ok(outcome), said) => {
                for line in said.iter().rev().take(5).rev() {
                    log.line(&format!("      | {line}")).await;
                }
                Err(format!(
                    "the configuration of service '{}' failed ({})",
                    service.name,
                    outcome.describe()
                ))
            }
            (Err(error), _) => Err(format!(
                "the configuration of service '{}' could not run: {error}",
                service.name
            )),
        }
    }
}

/// Whether `address` takes a TCP connection made from the environment's
/// hub (within 100 ms).
async fn port_accepts(
    factory: &launchway_net::netns::SocketFactory,
    address: std::net::SocketAddr,
) -> bool {
    let Ok(socket) = factory.socket().await else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(100), socket.connect(address)).await,
        Ok(Ok(_))
    )
}

/// Writes `bytes` to `path` readable by the service's user only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    file.write_all(bytes)?;
    nix::unistd::fchown(
        &file,
        Some(nix::unistd::Uid::from_raw(launchway_containerd::WEB_UID)),
        Some(nix::unistd::Gid::from_raw(launchway_containerd::WEB_UID)),
    )
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, version: &str) -> ServiceSpec {
        ServiceSpec {
            name: "db".into(),
            written_type: format!("{kind}:{version}"),
            kind: kind.into(),
            version: version.into(),
            image_type: format!("{kind}:{version}"),
            suite: "bookworm".into(),
            packages: Vec::new(),
            note: None,
            address: std::net::Ipv4Addr::new(169, 254, 1, 1),
            persistent: true,
            program: String::new(),
            ready: Vec::new(),
            configure: None,
            configure_script: None,
            secrets: Vec::new(),
            memory_mib: 256,
            run_hash: "0123456789abcdef".into(),
            filter: launchway_deploy::network::Filter::default(),
        }
    }

    #[test]
    fn container_ids_name_their_service() {
        let service = spec("postgresql", "15");
        let id = container_id("abc123", &service);
        assert!(is_service_container(&id));
        assert_eq!(service_of("abc123", &id).as_deref(), Some("db"));
        assert_eq!(service_of("other1", &id), None);
        let mut dashed = spec("redis", "7.0");
        dashed.name = "cache-2".into();
        assert_eq!(
            service_of("abc123", &container_id("abc123", &dashed)).as_deref(),
            Some("cache-2")
        );
        assert!(!is_service_container("lw-abc123-web-web-x1y2z3"));
    }

    #[test]
    fn data_runs_only_its_own_type_and_major() {
        let record = DataRecord {
            kind: "postgresql".into(),
            version: "15".into(),
        };
        assert!(data_fits(&record, &spec("postgresql", "15")).is_ok());
        let error = data_fits(&record, &spec("postgresql", "17")).unwrap_err();
        assert!(
            error.contains("not converted in place") && error.contains("db dump"),
            "{error}"
        );
        assert!(data_fits(&record, &spec("mariadb", "10.11")).is_err());
        let redis = DataRecord {
            kind: "redis-persistent".into(),
            version: "7.0".into(),
        };
        assert!(data_fits(&redis, &spec("redis", "7.0")).is_ok());
    }
}
