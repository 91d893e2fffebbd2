//! Building one app: runtime image → cached dependencies step → cached
//! flavor step → the app's tree unpacked into `/app` → the build hook with no
//! network → freeze under the build key. Every step runs in containerd.
//!
//! Images this makes:
//! - `launchway/build/<build key>`: an app's frozen build (reused by key);
//! - `launchway/step/<step key>`: the output of a dependencies or flavor
//!   step, the base the next step starts from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use launchway_containerd::{
    Bind, Engine, EngineError, Image, Limits, Network, Output, OutputLine, OutputStream, Rootfs,
    StepSpec, WEB_UID, Workspace, runtimes,
};
use launchway_git::{AppPlan, Objects, TarOptions, write_tree_tar};
use tokio::sync::{
    OwnedRwLockReadGuard, OwnedRwLockWriteGuard, OwnedSemaphorePermit, RwLock, Semaphore, mpsc,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::BuildError;
use crate::env::{BuildContext, CACHE_DIR, UserVariable, key_variables};
use crate::plane::{Plane, step_tag};
use crate::recipe::{CachedStep, Recipe};
use crate::settings::{BuildSettings, DependencyNetwork};
use crate::steps::{env_bytes, step_key};

/// Names of app builds: `launchway/build/<key>`.
pub const BUILD_IMAGE_PREFIX: &str = "launchway/build/";
/// Names of cached step outputs: `launchway/step/<key>`.
pub const STEP_IMAGE_PREFIX: &str = "launchway/step/";
/// Annotation: the build that made an image.
pub const BUILD_ID_ANNOTATION: &str = "org.launchway.build.id";
/// Annotation: the app an image is a build of.
pub const APP_ANNOTATION: &str = "org.launchway.build.app";
/// Annotation: the tree an image was built from.
pub const TREE_ANNOTATION: &str = "org.launchway.build.tree";
/// Annotation: the build key.
pub const KEY_ANNOTATION: &str = "org.launchway.build.key";
/// Annotation: the step cache images an app build started from (space-separated names).
pub const STEPS_ANNOTATION: &str = "org.launchway.build.steps";
/// The modification time of every file of the app's tree (the runtime
/// images' `SOURCE_DATE_EPOCH`), so the same tree unpacks to the same bytes.
pub const SOURCE_MTIME: u64 = 1_700_000_000;

/// The image of the build under `key`.
pub fn build_image_name(key: &str) -> String {
    format!("{BUILD_IMAGE_PREFIX}{key}")
}

/// Where a build's log lines go (without their newline).
pub type LogSender = mpsc::Sender<String>;

async fn say(log: &LogSender, line: impl Into<String>) {
    let _ = log.send(line.into()).await;
}

/// An app with its runtime image resolved and its build key known.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The runtime image.
    pub runtime: Image,
    /// The runtime type it is (`python:3.11` for a written `python:3.9`).
    pub runtime_type: String,
    /// The build key.
    pub key: String,
}

/// One app to build.
#[derive(Clone, Copy, Debug)]
pub struct AppJob<'a> {
    /// The project.
    pub project: &'a str,
    /// The app at the commit.
    pub plan: &'a AppPlan,
    /// The bare repository.
    pub repo: &'a Path,
    /// The commit.
    pub commit: &'a str,
    /// The build this app is part of.
    pub build_id: &'a str,
    /// The build-visible project and environment variables.
    pub variables: &'a [UserVariable],
    /// `PLATFORM_PROJECT_ENTROPY`.
    pub entropy: &'a str,
    /// Where the build hook runs; `None`: a namespace of its own with only
    /// loopback.
    pub hook_network: Option<&'a HookNetwork>,
    /// The generation of the app's build cache in the registry
    /// ([`crate::cache_artifact`]).
    pub cache_generation: u64,
}

/// The network of a build hook: a namespace with only loopback prepared by
/// the caller (the egress proxy listens in it) and the variables that send
/// the hook's HTTP clients there.
#[derive(Clone, Debug)]
pub struct HookNetwork {
    /// The pinned namespace.
    pub netns: PathBuf,
    /// `HTTP_PROXY` and the like.
    pub env: Vec<(String, String)>,
}

/// What tools print when they cannot reach the network (curl, wget, git,
/// pip, npm, composer, go, bundler), lowercased.
const NETWORK_FAILURES: &[&str] = &[
    "could not resolve",
    "temporary failure in name resolution",
    "name or service not known",
    "unable to resolve host",
    "network is unreachable",
    "no route to host",
    "eai_again",
    "enotfound",
    "getaddrinfo",
    "failed to establish a new connection",
    "connection refused",
    "from proxy after connect",
    "tunnel connection failed",
    "connect tunnel failed",
    "tunneling socket could not be established",
    "proxyerror",
    "dial tcp",
];

/// Whether `line` of a step's output says the network was out of reach.
pub(crate) fn says_network_failed(line: &str) -> bool {
    let line = line.to_ascii_lowercase();
    NETWORK_FAILURES
        .iter()
        .any(|pattern| line.contains(pattern))
}

/// A finished app build.
#[derive(Clone, Debug)]
pub struct Built {
    /// The frozen image.
    pub image: Image,
    /// The step cache images it started from.
    pub steps: Vec<String>,
}

/// Runs builds: the queue, the caches, the steps.
#[derive(Debug)]
pub struct Builder {
    engine: Engine,
    settings: BuildSettings,
    runtime_options: runtimes::BuildOptions,
    cache_root: PathBuf,
    scratch: PathBuf,
    queue: Arc<Semaphore>,
    project_locks: Mutex<HashMap<String, Arc<RwLock<()>>>>,
    plane: Option<Plane>,
}

/// Holds a build slot and the project's cache directories for a build.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _cache: OwnedRwLockReadGuard<()>,
    deadline: Instant,
}

impl Slot {
    /// When the build must be done.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Builder {
    /// A builder on `engine`, with build caches under `cache_root` and
    /// scratch files under `scratch`.
    pub fn new(
        engine: Engine,
        settings: BuildSettings,
        runtime_options: runtimes::BuildOptions,
        cache_root: PathBuf,
        scratch: PathBuf,
    ) -> Builder {
        let slots = settings.concurrency.max(1);
        Builder {
            engine,
            settings,
            runtime_options,
            cache_root,
            scratch,
            queue: Arc::new(Semaphore::new(slots)),
            project_locks: Mutex::new(HashMap::new()),
            plane: None,
        }
    }

    /// Step images are also looked up in, and published to, `plane`'s
    /// registry (`step-<key>`), so any host starts from them warm.
    pub fn with_plane(mut self, plane: Option<Plane>) -> Builder {
        self.plane = plane;
        self
    }

    /// The settings.
    pub fn settings(&self) -> &BuildSettings {
        &self.settings
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn project_lock(&self, project: &str) -> Arc<RwLock<()>> {
        let mut locks = match self.project_locks.lock() {
            Ok(locks) => locks,
            Err(poisoned) => poisoned.into_inner(),
        };
        locks.entry(project.to_owned()).or_default().clone()
    }

    /// Waits for a build slot (saying so when it has to wait), or for `cancel`.
    pub async fn slot(
        &self,
        project: &str,
        log: &LogSender,
        cancel: &CancellationToken,
    ) -> Result<Slot, BuildError> {
        let permit = match self.queue.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                say(
                    log,
                    "    Waiting for a build slot (other builds are running)",
                )
                .await;
                tokio::select! {
                    permit = self.queue.clone().acquire_owned() => permit.map_err(|_| BuildError::Cancelled)?,
                    () = cancel.cancelled() => return Err(BuildError::Cancelled),
                }
            }
        };
        let cache = tokio::select! {
            guard = self.project_lock(project).read_owned() => guard,
            () = cancel.cancelled() => return Err(BuildError::Cancelled),
        };
        Ok(Slot {
            _permit: permit,
            _cache: cache,
            deadline: Instant::now() + self.settings.timeout(),
        })
    }

    /// A build slot if one is free now (a builder taking a job it is offered).
    pub fn try_slot(&self, project: &str) -> Option<Slot> {
        let permit = self.queue.clone().try_acquire_owned().ok()?;
        let cache = self.project_lock(project).try_read_owned().ok()?;
        Some(Slot {
            _permit: permit,
            _cache: cache,
            deadline: Instant::now() + self.settings.timeout(),
        })
    }

    /// How many build slots are free now.
    pub fn free_slots(&self) -> usize {
        self.queue.available_permits()
    }

    /// The runtime image of `plan` (built on first use) and its build key.
    pub async fn resolve(
        &self,
        project: &str,
        plan: &AppPlan,
        variables: &[UserVariable],
        log: &LogSender,
    ) -> Result<Resolved, BuildError> {
        let (progress, mut lines) = mpsc::channel::<String>(64);
        let forward = {
            let log = log.clone();
            tokio::spawn(async move {
                while let Some(line) = lines.recv().await {
                    say(&log, format!("      {line}")).await;
                }
            })
        };
        let runtime = match &plan.app.runtime {
            launchway_config::Runtime::Composable { stack, .. } => {
                let entries = launchway_config::stack::stack_entries(stack);
                let (runtimes, packages): (Vec<_>, Vec<_>) =
                    entries.into_iter().partition(|entry| entry.runtime);
                let names = |list: Vec<launchway_config::stack::StackEntry>| -> Vec<String> {
                    list.into_iter().map(|entry| entry.name).collect()
                };
                self.engine
                    .resolve_composable(
                        &names(runtimes),
                        &names(packages),
                        &progress,
                        &self.runtime_options,
                    )
                    .await
                    .map(|(composition, image)| {
                        let summary = format!("composable {}", composition.summary);
                        (summary, image)
                    })
            }
            _ => self
                .engine
                .resolve_runtime(&plan.runtime, &progress, &self.runtime_options)
                .await
                .map(|(resolution, image)| (resolution.runtime, image)),
        };
        drop(progress);
        let _ = forward.await;
        let (runtime_type, runtime) = runtime?;
        let context = BuildContext {
            project,
            app: &plan.app,
            tree_id: &plan.tree_id,
            variables,
            entropy: "",
        };
        let key = plan.build_key(&key_variables(&context), runtime.digest());
        Ok(Resolved {
            runtime,
            runtime_type,
            key,
        })
    }

    /// The frozen image under `key`, if there is one.
    pub async fn existing(&self, key: &str) -> Result<Option<Image>, BuildError> {
        self.find_image(&build_image_name(key)).await
    }

    /// The host directory behind `$PLATFORM_CACHE_DIR` for `app` of `project`.
    pub fn cache_dir(&self, project: &str, app: &str) -> PathBuf {
        self.cache_root.join(project).join(app)
    }

    /// Empties the build cache of `project` (one app, or all), once no build
    /// of the project is using it. Returns the apps whose cache was removed.
    pub async fn clear_cache(
        &self,
        project: &str,
        app: Option<&str>,
    ) -> Result<Vec<String>, BuildError> {
        let _exclusive: OwnedRwLockWriteGuard<()> = self.project_lock(project).write_owned().await;
        let root = self.cache_root.join(project);
        let mut cleared = Vec::new();
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(cleared),
            Err(error) => return Err(BuildError::io(&root, error)),
        };
        for entry in entries {
            let entry = entry.map_err(|error| BuildError::io(&root, error))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if app.is_some_and(|app| app != name) {
                continue;
            }
            let path = entry.path();
            tokio::task::spawn_blocking({
                let path = path.clone();
                move || std::fs::remove_dir_all(&path)
            })
            .await
            .map_err(|error| BuildError::io(&path, std::io::Error::other(error.to_string())))?
            .map_err(|error| BuildError::io(&path, error))?;
            cleared.push(name);
        }
        cleared.sort();
        Ok(cleared)
    }

    fn prepare_cache_dir(&self, project: &str, app: &str) -> Result<PathBuf, BuildError> {
        let dir = self.cache_dir(project, app);
        std::fs::create_dir_all(&dir).map_err(|error| BuildError::io(&dir, error))?;
        let web = nix::unistd::Uid::from_raw(WEB_UID);
        let web_group = nix::unistd::Gid::from_raw(WEB_UID);
        if let Err(error) = nix::unistd::chown(&dir, Some(web), Some(web_group)) {
            tracing::warn!(%error, dir = %dir.display(), "cannot hand the build cache to uid 10000");
        }
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|error| BuildError::io(&dir, error))?;
        Ok(dir)
    }

    /// Builds one app into `launchway/build/<key>` here: its recipe, its
    /// tree's tar, then [`Builder::execute`].
    pub async fn build(
        &self,
        job: AppJob<'_>,
        resolved: &Resolved,
        slot: &Slot,
        log: &LogSender,
        cancel: &CancellationToken,
    ) -> Result<Built, BuildError> {
        let recipe = Recipe::new(&job, resolved).await?;
        let tar = self.source_tar(job.repo, &job.plan.tree_id).await?;
        self.execute(
            &recipe,
            tar.path(),
            job.hook_network,
            self.plane.as_ref(),
            slot,
            log,
            cancel,
        )
        .await
    }

    /// Runs `recipe` on this host's containerd: the cached steps, the tree
    /// (`tar`, as [`Builder::source_tar`] writes it) into `/app`, the hook,
    /// the freeze. Everything it needs that depends on the repository or
    /// the daemon's state is in the recipe, so another host can run it.
    #[allow(clippy::too_many_arguments)]
    pub async fn execute(
        &self,
        recipe: &Recipe,
        tar: &Path,
        hook_network: Option<&HookNetwork>,
        plane: Option<&Plane>,
        slot: &Slot,
        log: &LogSender,
        cancel: &CancellationToken,
    ) -> Result<Built, BuildError> {
        let mut base = recipe.base.clone();
        let mut base_digest = recipe.base_digest.clone();
        let mut steps = Vec::new();
        for step in &recipe.steps {
            let image = self
                .cached_step(
                    step,
                    &base,
                    &base_digest,
                    &recipe.step_env,
                    plane,
                    slot,
                    log,
                    cancel,
                )
                .await?;
            base = image.name.clone();
            base_digest = image.digest().to_owned();
            steps.push(image.name);
        }

        // The app's tree, then the hook with no network.
        let workspace = self.engine.workspace(&base).await?;
        workspace.apply_tar(tar).await?;
        let mut cache_before = None;
        if let Some(hook) = recipe.hook.as_deref() {
            let cache = self.prepare_cache_dir(&recipe.project, &recipe.app)?;
            if let Some(plane) = plane {
                if let Err(error) = crate::cache_artifact::restore(
                    plane,
                    &recipe.project,
                    &recipe.app,
                    recipe.cache_generation,
                    &cache,
                    log,
                )
                .await
                {
                    say(
                        log,
                        format!(
                            "      W: the build cache was not restored from the registry: {error}"
                        ),
                    )
                    .await;
                }
                cache_before = Some(crate::cache_artifact::listing(&cache));
            }
            say(log, "      Executing build hook...").await;
            let (network, env) = match hook_network {
                Some(hook_network) => (
                    Network::Join(hook_network.netns.clone()),
                    [recipe.hook_env.as_slice(), hook_network.env.as_slice()].concat(),
                ),
                None => (Network::None, recipe.hook_env.clone()),
            };
            self.run(
                &workspace,
                "the build hook",
                vec!["/bin/sh".into(), "-e".into(), "-c".into(), hook.to_owned()],
                &env,
                network,
                vec![Bind {
                    source: cache,
                    target: CACHE_DIR.into(),
                    writable: true,
                }],
                slot,
                log,
                cancel,
            )
            .await?;
        }
        if cancel.is_cancelled() {
            return Err(BuildError::Cancelled);
        }
        say(log, "      Freezing the application...").await;
        let mut annotations: HashMap<String, String> =
            recipe.annotations.clone().into_iter().collect();
        if !steps.is_empty() {
            annotations.insert(STEPS_ANNOTATION.to_owned(), steps.join(" "));
        }
        let image = workspace.freeze(&recipe.image, annotations).await?;
        if let (Some(plane), Some(before)) = (plane, cache_before) {
            let cache = self.cache_dir(&recipe.project, &recipe.app);
            if crate::cache_artifact::listing(&cache) != before
                && let Err(error) = crate::cache_artifact::save(
                    plane,
                    &recipe.project,
                    &recipe.app,
                    recipe.cache_generation,
                    &cache,
                    log,
                )
                .await
            {
                say(
                    log,
                    format!("      W: the build cache was not saved to the registry: {error}"),
                )
                .await;
            }
        }
        Ok(Built { image, steps })
    }

    fn dependency_network(&self) -> Network {
        match self.settings.dependency_network {
            DependencyNetwork::Host => Network::Host,
            DependencyNetwork::None => Network::None,
        }
    }

    async fn find_image(&self, name: &str) -> Result<Option<Image>, BuildError> {
        match self.engine.image(name).await {
            Ok(image) => Ok(Some(image)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// The image of `step` on top of `base`: reused when the same step on the
    /// same base already ran, otherwise run (with the dependency network) and
    /// frozen as `launchway/step/<key>`.
    #[allow(clippy::too_many_arguments)]
    async fn cached_step(
        &self,
        step: &CachedStep,
        base: &str,
        base_digest: &str,
        env: &[(String, String)],
        plane: Option<&Plane>,
        slot: &Slot,
        log: &LogSender,
        cancel: &CancellationToken,
    ) -> Result<Image, BuildError> {
        let mut parts: Vec<&[u8]> = Vec::new();
        let env_part = env_bytes(env);
        let joined: Vec<String> = step
            .commands
            .iter()
            .map(|(_, args)| args.join("\0"))
            .collect();
        parts.push(base_digest.as_bytes());
        parts.push(&env_part);
        parts.extend(joined.iter().map(|c| c.as_bytes()));
        for (name, content) in &step.files {
            parts.push(name.as_bytes());
            parts.push(content);
        }
        let key = step_key(&step.kind, &parts);
        let name = format!("{STEP_IMAGE_PREFIX}{key}");
        if let Some(image) = self.find_image(&name).await? {
            say(log, format!("      {} (reused: unchanged)", step.title)).await;
            return Ok(image);
        }
        if let Some(plane) = plane
            && let Some(digest) = plane.find(&step_tag(&key)).await?
        {
            let (image, _) = plane.pull(&self.engine, &name, &digest).await?;
            say(
                log,
                format!("      {} (reused from the registry: unchanged)", step.title),
            )
            .await;
            return Ok(image);
        }
        say(log, format!("      {}", step.title)).await;
        let workspace = self.engine.workspace(base).await?;
        if !step.files.is_empty() {
            let tar = self.files_tar(&step.files).await?;
            workspace.apply_tar(tar.path()).await?;
        }
        for (what, args) in &step.commands {
            self.run(
                &workspace,
                what,
                args.clone(),
                env,
                self.dependency_network(),
                Vec::new(),
                slot,
                log,
                cancel,
            )
            .await?;
        }
        let mut annotations = HashMap::new();
        annotations.insert("org.launchway.step".to_owned(), step.kind.clone());
        let image = workspace.freeze(&name, annotations).await?;
        if let Some(plane) = plane {
            plane.publish(&self.engine, &image, &step_tag(&key)).await?;
        }
        Ok(image)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        workspace: &Workspace,
        what: &str,
        args: Vec<String>,
        env: &[(String, String)],
        network: Network,
        binds: Vec<Bind>,
        slot: &Slot,
        log: &LogSender,
        cancel: &CancellationToken,
    ) -> Result<(), BuildError> {
        let remaining = slot.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(BuildError::TimedOut {
                limit_secs: self.settings.timeout_secs,
            });
        }
        let mut spec = StepSpec::new(args);
        spec.env = env.to_vec();
        spec.binds = binds;
        spec.cwd = crate::env::APP_DIR.into();
        // Only a hook's output is read for network failures: the other
        // steps have the network the daemon's settings give them.
        let watch_network = matches!(network, Network::Join(_) | Network::None);
        let networked = matches!(network, Network::Join(_) | Network::Host);
        if networked {
            self.add_trust(&mut spec, matches!(network, Network::Host))?;
        }
        spec.network = network;
        spec.tmp_size_bytes = self.settings.tmp_mib.max(16) * 1024 * 1024;
        spec.timeout = Some(remaining);
        spec.hostname = "build".into();
        spec.limits = Limits {
            memory_bytes: (self.settings.memory_mib > 0)
                .then(|| self.settings.memory_mib * 1024 * 1024),
            cpu_shares: (self.settings.cpu_shares > 0).then_some(self.settings.cpu_shares),
            pids: (self.settings.pids > 0).then_some(self.settings.pids),
        };
        let (lines, mut received) = mpsc::channel::<OutputLine>(256);
        let network_failure = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tls_untrusted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let forward = {
            let log = log.clone();
            let network_failure = network_failure.clone();
            let tls_untrusted = tls_untrusted.clone();
            tokio::spawn(async move {
                while let Some(line) = received.recv().await {
                    if watch_network && says_network_failed(&line.line) {
                        network_failure.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    if networked && crate::trust::says_tls_untrusted(&line.line) {
                        tls_untrusted.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    let text = match line.stream {
                        OutputStream::Stdout => format!("        {}", line.line),
                        OutputStream::Stderr => format!("        W: {}", line.line),
                    };
                    say(&log, text).await;
                }
            })
        };
        let outcome = self
            .engine
            .run_step(
                Rootfs::Workspace(workspace),
                &spec,
                Output::Lines(lines),
                cancel,
            )
            .await;
        let _ = forward.await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(EngineError::Cancelled) => return Err(BuildError::Cancelled),
            Err(error) => return Err(error.into()),
        };
        if outcome.timed_out {
            return Err(BuildError::TimedOut {
                limit_secs: self.settings.timeout_secs,
            });
        }
        if !outcome.success() {
            let mut how = outcome.describe();
            if tls_untrusted.load(std::sync::atomic::Ordering::Relaxed) {
                how.push_str(&self.tls_hint());
            }
            return Err(BuildError::StepFailed {
                step: what.to_owned(),
                how,
                network_failure: network_failure.load(std::sync::atomic::Ordering::Relaxed),
            });
        }
        Ok(())
    }

    /// Gives a networked step the CA bundle and, on the host's network,
    /// the upstream proxy ([`crate::trust`]).
    fn add_trust(&self, spec: &mut StepSpec, host_network: bool) -> Result<(), BuildError> {
        if let Some(source) = self.settings.ca_source().file() {
            let dir = self.scratch.join("ca-bundle");
            let staged = crate::trust::stage_bundle(&source, &dir)
                .map_err(|error| BuildError::io(&dir, error))?;
            spec.binds.push(Bind {
                source: staged,
                target: crate::trust::CA_DIR.into(),
                writable: false,
            });
            spec.env.extend(crate::trust::ca_env(crate::trust::CA_FILE));
        }
        if host_network && let Some(upstream) = self.settings.upstream_proxy() {
            spec.env.extend(upstream.env());
        }
        Ok(())
    }

    /// What a step that did not trust a certificate is told.
    fn tls_hint(&self) -> String {
        match self.settings.ca_source().file() {
            None => "; a TLS certificate was not trusted: if this network intercepts TLS, \
                     name the CA bundle that vouches for it with `[build] ca_bundle` in the \
                     daemon's settings (now off)"
                .to_owned(),
            Some(file) => format!(
                "; a TLS certificate was not trusted, not even by the bundle networked steps \
                 get (`[build] ca_bundle`: {}): add the CA that signed it there",
                file.display()
            ),
        }
    }

    /// The tar of `tree_id` a build unpacks into `/app` (owned by uid
    /// 10000, fixed mtime), in a scratch file.
    pub async fn source_tar(
        &self,
        repo: &Path,
        tree_id: &str,
    ) -> Result<tempfile::NamedTempFile, BuildError> {
        let scratch = self.scratch.clone();
        let repo = repo.to_path_buf();
        let tree_id = tree_id.to_owned();
        let max_bytes = self.settings.max_source_mib.saturating_mul(1024 * 1024);
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&scratch).map_err(|error| BuildError::io(&scratch, error))?;
            let file = tempfile::NamedTempFile::new_in(&scratch)
                .map_err(|error| BuildError::io(&scratch, error))?;
            let writer = std::io::BufWriter::new(
                file.reopen()
                    .map_err(|error| BuildError::io(file.path(), error))?,
            );
            let objects = Objects::open(&repo, None)?;
            let options = TarOptions {
                prefix: "app".into(),
                uid: u64::from(WEB_UID),
                gid: u64::from(WEB_UID),
                mtime: SOURCE_MTIME,
                max_bytes,
            };
            write_tree_tar(&objects, &tree_id, writer, &options)?;
            Ok(file)
        })
        .await
        .map_err(|error| BuildError::io(&self.scratch, std::io::Error::other(error.to_string())))?
    }

    async fn files_tar(
        &self,
        files: &[(String, Vec<u8>)],
    ) -> Result<tempfile::NamedTempFile, BuildError> {
        let scratch = self.scratch.clone();
        let files = files.to_vec();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&scratch).map_err(|error| BuildError::io(&scratch, error))?;
            let file = tempfile::NamedTempFile::new_in(&scratch)
                .map_err(|error| BuildError::io(&scratch, error))?;
            let writer = std::io::BufWriter::new(
                file.reopen()
                    .map_err(|error| BuildError::io(file.path(), error))?,
            );
            let mut builder = tar::Builder::new(writer);
            let header = |kind: tar::EntryType, mode: u32, size: u64| {
                let mut header = tar::Header::new_ustar();
                header.set_entry_type(kind);
                header.set_mode(mode);
                header.set_size(size);
                header.set_uid(u64::from(WEB_UID));
                header.set_gid(u64::from(WEB_UID));
                header.set_mtime(SOURCE_MTIME);
                header
            };
            let io = |error| BuildError::io(Path::new("a flavor input"), error);
            builder
                .append_data(
                    &mut header(tar::EntryType::Directory, 0o755, 0),
                    "app/",
                    std::io::empty(),
                )
                .map_err(io)?;
            for (name, content) in &files {
                builder
                    .append_data(
                        &mut header(tar::EntryType::Regular, 0o644, content.len() as u64),
                        format!("app/{name}"),
                        content.as_slice(),
                    )
                    .map_err(io)?;
            }
            builder.into_inner().map_err(io)?;
            Ok(file)
        })
        .await
        .map_err(|error| BuildError::io(&self.scratch, std::io::Error::other(error.to_string())))?
    }
}

#[cfg(test)]
mod tests {
    use super::says_network_failed;

    #[test]
    fn what_tools_print_without_network_is_recognised() {
        for line in [
            "curl: (6) Could not resolve host: example.org",
            "curl: (56) CONNECT tunnel failed, response 403",
            "curl: (56) Received HTTP code 403 from proxy after CONNECT",
            "npm ERR! code EAI_AGAIN",
            "npm error request to https://registry.npmjs.org/x failed, reason: getaddrinfo ENOTFOUND registry.npmjs.org",
            "WARNING: Retrying ... NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')",
            "ERROR: Could not install packages due to an OSError: ProxyError('Cannot connect to proxy.')",
            "fatal: unable to access 'https://github.com/x/y/': Could not resolve host: github.com",
            "go: github.com/x/y@v1: Get \"https://proxy.golang.org/...\": dial tcp: lookup proxy.golang.org: no such host",
            "wget: unable to resolve host address 'example.org'",
        ] {
            assert!(says_network_failed(line), "{line}");
        }
        for line in ["Collecting flask", "added 12 packages in 2s", "Build OK"] {
            assert!(!says_network_failed(line), "{line}");
        }
    }
}
