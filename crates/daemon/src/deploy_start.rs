//! Deploys, second half: starting a release's containers (mounts, the
//! supervisor, `pre_start`/`start`/`post_start`), waiting until the web
//! process accepts connections, and the hooks run in them (`deploy`,
//! `post_deploy`) with their logs. `deploy.rs` drives the phases.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use launchway_containerd::{AppLabels, Bind, Limits, Network, Output, StepSpec};
use launchway_deploy::network::{HUB_ADDRESS, PREFIX_LEN, ruleset};
use launchway_deploy::{
    AppSpec, DeploySpec, Listen, ProcessSpec, SUPERVISOR, environment_id, hosts_file,
};
use launchway_router::SocketFactory;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::Daemon;
use crate::activity::Log;
use crate::builds::new_record_id;
use crate::deploy::{
    LOG_TAIL_LINES, StartFailure, Started, app_path, container_of, environment_key, ids,
};
use crate::host_fs::{
    empty_tmp_mounts, ensure_run_dir, fresh_run_dir, mount_binds, read_no_follow, write_file,
};

/// A process container a deploy made before holding requests: created
/// (image unpacked, snapshot prepared, spec rendered, network member
/// attached) with its task (`runc create`: namespaces, mounts, cgroup),
/// nothing of the app run yet.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    pub(crate) container: Started,
    run_dir: PathBuf,
}

/// Where the time of a start went (the deploy log prints it).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StartTimes {
    /// From the tasks started until every web process accepts connections.
    pub(crate) ready: Duration,
}

pub(crate) fn prepared_ids(prepared: &[Prepared]) -> Vec<String> {
    prepared.iter().map(|p| p.container.id.clone()).collect()
}

impl Daemon {
    /// Makes mounts, starts every process of `spec` and waits until each web
    /// process is ready: [`Self::prepare_release`] then
    /// [`Self::start_prepared`], for the paths where nothing of the
    /// environment runs any more (a rollback, a recovery).
    pub(crate) async fn start_release(
        &self,
        spec: &DeploySpec,
        log: &Log,
        factory: &Arc<SocketFactory>,
        cancel: &CancellationToken,
    ) -> Result<Vec<Started>, StartFailure> {
        self.retain_release_members(spec).await;
        let prepared = self.prepare_release(spec, log).await?;
        self.start_prepared(spec, &prepared, log, factory, cancel)
            .await
            .map(|(started, _)| started)
    }

    /// Removes the network members no process of `spec` uses (the previous
    /// release's, once it stopped).
    pub(crate) async fn retain_release_members(&self, spec: &DeploySpec) {
        let network = self.network(&spec.project, &spec.environment);
        let members = release_members(spec);
        let retained = tokio::task::spawn_blocking(move || network.retain_members(&members)).await;
        if let Ok(Err(error)) = retained {
            warn!(%error, "removing the network members of the previous release");
        }
    }

    /// Everything of a start that can happen while the previous release
    /// still serves: each process's image unpacked, its spec rendered, its
    /// network member attached and its container created. Nothing a running process uses is touched: its `/run`,
    /// `/etc/hosts` and `tmp` mounts are renewed by [`Self::start_prepared`].
    /// On failure the containers made are in the error, for the caller to
    /// remove.
    pub(crate) async fn prepare_release(
        &self,
        spec: &DeploySpec,
        log: &Log,
    ) -> Result<Vec<Prepared>, StartFailure> {
        if release_members(spec).contains(&std::net::Ipv4Addr::UNSPECIFIED) {
            return Err(StartFailure {
                message: "this release was made by an older Launchway, before environment networks; deploy the branch head instead (`launchway deploy`)".into(),
                containers: Vec::new(),
                unavailable: false,
            });
        }
        // One app after the other: this is before the hold, and the
        // network's hub and an image's layers are made once, by one.
        let mut prepared = Vec::new();
        for app in &spec.apps {
            log.line(&format!(
                "    Opening application {} and its relationships",
                app.name
            ))
            .await;
            match self.prepare_app(spec, app).await {
                Ok(containers) => prepared.extend(containers),
                Err((made, mut fault)) => {
                    prepared.extend(made);
                    fault.containers = prepared_ids(&prepared);
                    return Err(fault);
                }
            }
        }
        Ok(prepared)
    }

    /// The containers of `app`'s processes, created; on failure, those
    /// made so far with why.
    async fn prepare_app(
        &self,
        spec: &DeploySpec,
        app: &AppSpec,
    ) -> Result<Vec<Prepared>, (Vec<Prepared>, StartFailure)> {
        let mut made: Vec<Prepared> = Vec::new();
        let fault = |message: String, unavailable: bool| StartFailure {
            message,
            containers: Vec::new(),
            unavailable,
        };
        let image = match self.engine.image(&app.image).await {
            Ok(image) => image,
            Err(error) => {
                return Err((
                    made,
                    fault(
                        format!("the image of app '{}' is not available: {error}", app.name),
                        error.is_unavailable(),
                    ),
                ));
            }
        };
        let path = app_path(&image);
        let owner = environment_key(&spec.project, &spec.environment);
        // Bound by the tasks made below: they must exist. A running process
        // may read them, so only a missing one is written now (the hold
        // writes them in place).
        let env_dir = self.environment_dir(&spec.project, &spec.environment);
        let hosts = env_dir.join("hosts").join(&app.name);
        if !hosts.exists()
            && let Err(error) = write_file(&hosts, hosts_file(app).as_bytes())
        {
            return Err((
                made,
                fault(format!("cannot write /etc/hosts: {error}"), false),
            ));
        }
        for process in &app.processes {
            let run_dir = self.run_dir(spec, &app.name, &process.name);
            let log_path =
                self.log_path(&spec.project, &spec.environment, &app.name, &process.name);
            let args = vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                SUPERVISOR.to_string(),
                "launchway-supervise".to_string(),
                process.pre_start.clone().unwrap_or_default(),
                process.start.clone(),
                process.server.clone().unwrap_or_default(),
            ];
            // Boxed: the deploy's future is deep already, and debug builds
            // copy large futures on the worker's stack.
            let step = match Box::pin(
                self.render_step(spec, app, process, &path, &run_dir, &log_path, args),
            )
            .await
            {
                Ok(step) => step,
                Err(message) => return Err((made, fault(message, false))),
            };
            let id = format!(
                "lw-{}-{}-{}-{}",
                environment_id(&spec.project, &spec.environment),
                launchway_deploy::routes::host_label(&app.name),
                process.name,
                &new_record_id('x')[1..7].to_ascii_lowercase()
            );
            let labels = AppLabels {
                owner: owner.clone(),
                extra: HashMap::from([
                    ("org.launchway.app".to_string(), app.name.clone()),
                    ("org.launchway.process".to_string(), process.name.clone()),
                ]),
            };
            if let Err(error) = self
                .engine
                .create_app(&id, &app.image, &step, &labels)
                .await
            {
                return Err((
                    made,
                    fault(
                        format!("cannot create the container of app '{}': {error}", app.name),
                        error.is_unavailable(),
                    ),
                ));
            }
            made.push(Prepared {
                container: Started {
                    app: app.name.clone(),
                    process: process.name.clone(),
                    id: id.clone(),
                    path: path.clone(),
                },
                run_dir: run_dir.clone(),
            });
            if let Err(error) = ensure_run_dir(&env_dir, &run_dir) {
                return Err((
                    made,
                    fault(
                        format!("cannot prepare the mounts of app '{}': {error}", app.name),
                        false,
                    ),
                ));
            }
            if let Err(error) = self.engine.create_task(&id, &log_path).await {
                return Err((
                    made,
                    fault(
                        format!("cannot start app '{}': {error}", app.name),
                        error.is_unavailable(),
                    ),
                ));
            }
        }
        Ok(made)
    }

    /// Starts prepared containers once nothing of the previous release
    /// runs: services first (the apps' hooks use them), then each app's
    /// `tmp` mounts emptied, `/etc/hosts` and a fresh `/run` written, every
    /// task started at once, and every web process waited for at once.
    pub(crate) async fn start_prepared(
        &self,
        spec: &DeploySpec,
        prepared: &[Prepared],
        log: &Log,
        factory: &Arc<SocketFactory>,
        cancel: &CancellationToken,
    ) -> Result<(Vec<Started>, StartTimes), StartFailure> {
        let containers: Vec<Started> = prepared.iter().map(|p| p.container.clone()).collect();
        let fail = |message: String, unavailable: bool| StartFailure {
            message,
            containers: ids(&containers),
            unavailable,
        };
        let env_dir = self.environment_dir(&spec.project, &spec.environment);
        if let Err(message) = self.ensure_services(spec, log, cancel).await {
            return Err(StartFailure {
                unavailable: self.containerd_lost().await,
                message,
                containers: ids(&containers),
            });
        }
        crate::failpoint::reached("deploy.services_ready");
        for app in &spec.apps {
            if let Err(error) = empty_tmp_mounts(&env_dir, app) {
                return Err(fail(
                    format!("cannot empty the tmp mounts of app '{}': {error}", app.name),
                    false,
                ));
            }
            let hosts = env_dir.join("hosts").join(&app.name);
            if let Err(error) = write_file(&hosts, hosts_file(app).as_bytes()) {
                return Err(fail(format!("cannot write /etc/hosts: {error}"), false));
            }
            for process in &app.processes {
                let Some(made) = prepared
                    .iter()
                    .find(|p| p.container.app == app.name && p.container.process == process.name)
                else {
                    continue;
                };
                if let Err(message) = fill_run_dir(&env_dir, spec, app, &made.run_dir) {
                    return Err(fail(message, false));
                }
                if let (true, Some(server)) = (process.web, &app.web_server)
                    && let Err(error) = write_web_server_files(&made.run_dir, server)
                {
                    return Err(fail(
                        format!("cannot write the web server's configuration: {error}"),
                        false,
                    ));
                }
            }
        }
        let starts = prepared.iter().map(|made| async move {
            self.engine
                .start_task(&made.container.id)
                .await
                .map_err(|error| (made.container.app.clone(), error))
        });
        for outcome in futures_util::future::join_all(starts).await {
            if let Err((app, error)) = outcome {
                return Err(fail(
                    format!("cannot start app '{app}': {error}"),
                    error.is_unavailable(),
                ));
            }
        }
        let started_at = Instant::now();
        let waits = spec.apps.iter().filter_map(|app| {
            let web = app.web()?;
            let container = container_of(&containers, &app.name, "web")?;
            Some(async move {
                self.wait_ready(spec, app, web, container, factory, log, cancel)
                    .await
                    .map_err(|message| (app.name.clone(), message))
            })
        });
        if let Err((app, message)) = futures_util::future::try_join_all(waits).await {
            let log_path = self.log_path(&spec.project, &spec.environment, &app, "web");
            let (tail, _) = crate::logs::tail(&log_path, LOG_TAIL_LINES);
            for line in tail.lines() {
                log.line(&format!("      | {line}")).await;
            }
            return Err(fail(message, false));
        }
        let times = StartTimes {
            ready: started_at.elapsed(),
        };
        Ok((containers, times))
    }

    /// The container step of `process` of `app` running `args`, with a
    /// fresh `run_dir` holding `/run/config.json`: [`Self::render_step`]
    /// for a container started at once (`launchway run`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn app_step(
        &self,
        spec: &DeploySpec,
        app: &AppSpec,
        process: &ProcessSpec,
        image_path: &str,
        run_dir: &Path,
        log_path: &Path,
        args: Vec<String>,
    ) -> Result<StepSpec, String> {
        let env_dir = self.environment_dir(&spec.project, &spec.environment);
        fill_run_dir(&env_dir, spec, app, run_dir)?;
        self.render_step(spec, app, process, image_path, run_dir, log_path, args)
            .await
    }

    /// The container step of `process` of `app` running `args`: its mounts,
    /// `run_dir` as `/run`, `/etc/hosts`, the app's variables, `PATH`
    /// (`image_path`), the CA bundle, its place in the environment network
    /// (attached now, its rules loaded) and the deploy's limits. Writes no
    /// file a running process reads, so it runs before a deploy holds
    /// requests; a process address the previous release used keeps its
    /// namespace, which gets the new release's rules a moment before the
    /// new process starts in it. The caller checked `image_path` against
    /// the app's image.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn render_step(
        &self,
        spec: &DeploySpec,
        app: &AppSpec,
        process: &ProcessSpec,
        image_path: &str,
        run_dir: &Path,
        log_path: &Path,
        args: Vec<String>,
    ) -> Result<StepSpec, String> {
        let env_dir = self.environment_dir(&spec.project, &spec.environment);
        let hosts = env_dir.join("hosts").join(&app.name);
        let mut binds = mount_binds(&env_dir, process, run_dir, log_path)
            .map_err(|error| format!("cannot prepare the mounts of app '{}': {error}", app.name))?;
        binds.push(Bind {
            source: hosts,
            target: "/etc/hosts".into(),
            writable: false,
        });
        let mut env = app.process_env(process);
        env.push(("PATH".into(), image_path.to_owned()));
        if let Some(dir) = self.app_ca_bundle().map_err(|error| error.to_string())? {
            binds.push(Bind {
                source: dir,
                target: launchway_build::trust::CA_DIR.into(),
                writable: false,
            });
            env.extend(launchway_build::trust::ca_env(
                launchway_build::trust::CA_FILE,
            ));
        }
        let mut step = StepSpec::new(args);
        step.env = env;
        step.cwd = launchway_build::env::APP_DIR.into();
        step.binds = binds;
        let member = {
            let network = self.network(&spec.project, &spec.environment);
            let (address, rules) = (process.address, ruleset(&app.reach));
            tokio::task::spawn_blocking(move || {
                network.ensure_member(address, PREFIX_LEN, HUB_ADDRESS, &rules)
            })
            .await
        };
        let member = match member {
            Ok(Ok(member)) => member,
            Ok(Err(error)) => {
                return Err(format!(
                    "cannot connect app '{}' ({}) to the environment network: {error}",
                    app.name, process.name
                ));
            }
            Err(error) => {
                return Err(format!(
                    "the network set-up of app '{}' stopped: {error}",
                    app.name
                ));
            }
        };
        step.network = Network::Join(member);
        step.hostname = launchway_deploy::routes::host_label(&app.name);
        step.limits = Limits {
            memory_bytes: (self.settings.deploy.memory_mib > 0)
                .then_some(self.settings.deploy.memory_mib << 20),
            cpu_shares: None,
            pids: Some(self.settings.deploy.pids),
        };
        Ok(step)
    }

    /// Waits until `pre_start` is done, runs `post_start`, then waits until
    /// the web process accepts connections, failing early if `start` exits.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn wait_ready(
        &self,
        spec: &DeploySpec,
        app: &AppSpec,
        web: &ProcessSpec,
        container: &Started,
        factory: &Arc<SocketFactory>,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let run_dir = self.run_dir(spec, &app.name, "web");
        let deadline =
            Instant::now() + Duration::from_secs(self.settings.deploy.start_timeout_secs);
        let exits = run_dir.join(launchway_deploy::spec::EXITS_FILE);
        // The app can write its /run: never follow a link it planted.
        let crashed = || {
            read_no_follow(&exits).and_then(|text| {
                text.lines()
                    .next()
                    .filter(|l| l.chars().all(|c| c.is_ascii_digit()))
                    .map(str::to_string)
            })
        };
        let started = run_dir.join(launchway_deploy::spec::STARTED_MARKER);
        while !started.exists() {
            if Instant::now() > deadline {
                return Err(format!(
                    "app '{}': pre_start did not finish in time",
                    app.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(post_start) = &web.post_start {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = self
                .exec_logged(
                    app,
                    web,
                    container,
                    post_start,
                    Some(remaining),
                    log,
                    cancel,
                )
                .await;
            match outcome {
                Ok(true) => {}
                Ok(false) => return Err(format!("app '{}': post_start failed", app.name)),
                Err(error) => return Err(format!("app '{}': {error}", app.name)),
            }
        }
        if !app.called {
            // Nothing routes to it and nothing relates to it: running is
            // all it has to do (a helper, a queue consumer on `web`). One
            // second tells a start command that fails at once.
            let grace = Instant::now() + Duration::from_secs(1);
            let mut exited = crashed();
            while exited.is_none() && Instant::now() < grace {
                tokio::time::sleep(Duration::from_millis(20)).await;
                exited = crashed();
            }
            if let Some(status) = exited {
                log.line(&format!(
                    "    W: app '{}' exited with status {status}; nothing sends it requests, so the deploy goes on (it is restarted; see `launchway logs`)",
                    app.name
                ))
                .await;
            }
            return Ok(());
        }
        let server_exits = run_dir.join(launchway_deploy::spec::SERVER_EXITS_FILE);
        let server_crashed = || {
            read_no_follow(&server_exits).and_then(|text| {
                text.lines()
                    .next()
                    .filter(|l| l.chars().all(|c| c.is_ascii_digit()))
                    .map(str::to_string)
            })
        };
        let own_what = match &app.listen {
            Listen::Port(port) => format!("port {port}"),
            Listen::Socket(path) => format!("socket {path}"),
        };
        // The app behind a web server first, then what callers reach: a
        // request let through before both answer would fail.
        let mut waits = Vec::new();
        match &app.web_server {
            Some(server) => {
                if server.app_behind {
                    waits.push((self.app_endpoint(spec, app, factory), own_what));
                }
                let front = self
                    .backends(spec, factory)
                    .remove(&app.name)
                    .ok_or_else(|| format!("app '{}' has no web process", app.name))?;
                waits.push((front, format!("port {} (its web server)", server.port)));
            }
            None => {
                let endpoint = self
                    .backends(spec, factory)
                    .remove(&app.name)
                    .ok_or_else(|| format!("app '{}' has no web process", app.name))?;
                waits.push((endpoint, own_what));
            }
        }
        for (endpoint, what) in waits {
            loop {
                if let Some(status) = crashed() {
                    return Err(format!(
                        "app '{}' exited with status {status} before accepting connections on {what} (see `launchway logs`)",
                        app.name
                    ));
                }
                if let Some(status) = server_crashed() {
                    return Err(format!(
                        "the web server of app '{}' (nginx) exited with status {status}; its message is in the log below",
                        app.name
                    ));
                }
                if launchway_router::accepts(&endpoint).await {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "app '{}' did not accept connections on {what} within {} s",
                        app.name, self.settings.deploy.start_timeout_secs
                    ));
                }
                if cancel.is_cancelled() {
                    return Err("cancelled".into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }

    /// Runs `command` in `container` with the app's environment, its output
    /// in the activity log; `Ok(success)`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn exec_logged(
        &self,
        app: &AppSpec,
        process: &ProcessSpec,
        container: &Started,
        command: &str,
        timeout: Option<Duration>,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<bool, launchway_containerd::EngineError> {
        self.exec_outcome(app, process, container, command, timeout, log, cancel)
            .await
            .map(|outcome| outcome.success())
    }

    /// [`Self::exec_logged`], with how the command ended.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn exec_outcome(
        &self,
        app: &AppSpec,
        process: &ProcessSpec,
        container: &Started,
        command: &str,
        timeout: Option<Duration>,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<launchway_containerd::StepOutcome, launchway_containerd::EngineError> {
        let mut step = StepSpec::new([
            "/bin/sh".to_string(),
            "-c".to_string(),
            "lw_command=$1; if [ -r /app/.environment ]; then . /app/.environment; fi; set -e; eval \"$lw_command\""
                .to_string(),
            "launchway".to_string(),
            command.to_string(),
        ]);
        step.env = app.process_env(process);
        step.env.push(("PATH".into(), container.path.clone()));
        step.cwd = launchway_build::env::APP_DIR.into();
        step.timeout = timeout;
        let (sender, mut lines) =
            tokio::sync::mpsc::channel::<launchway_containerd::OutputLine>(256);
        let forward = {
            let log = log.clone();
            async move {
                let mut first = true;
                while let Some(line) = lines.recv().await {
                    if std::mem::take(&mut first) {
                        crate::failpoint::reached("deploy.exec_output");
                    }
                    let prefix = match line.stream {
                        launchway_containerd::OutputStream::Stdout => "",
                        launchway_containerd::OutputStream::Stderr => "W: ",
                    };
                    log.line(&format!("      {prefix}{}", line.line)).await;
                }
            }
        };
        let run = self
            .engine
            .exec_in_app(&container.id, &step, Output::Lines(sender), cancel);
        let (outcome, ()) = tokio::join!(run, forward);
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn run_hook(
        &self,
        app: &AppSpec,
        started: &[Started],
        hook: &str,
        name: &str,
        log: &Log,
        cancel: &CancellationToken,
    ) {
        let Some(process) = app.web().or_else(|| app.processes.first()) else {
            log.line(&format!(
                "      W: app '{}' runs no process; its {name} hook was skipped",
                app.name
            ))
            .await;
            return;
        };
        let Some(container) = container_of(started, &app.name, &process.name) else {
            return;
        };
        log.line(&format!(
            "    Executing {name} hook for application {}",
            app.name
        ))
        .await;
        let mut retried = false;
        loop {
            match self
                .exec_logged(app, process, container, hook, None, log, cancel)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    log.line(&format!(
                        "      W: the {name} hook of application {} failed; the deploy goes on",
                        app.name
                    ))
                    .await;
                }
                // It never started, containerd being gone (one that started
                // is waited for by the engine, never run twice): the
                // containers outlive the outage, so run it once it is back.
                Err(error) if error.is_unavailable() && !retried => {
                    log.line(&format!(
                        "      W: containerd stopped answering; the {name} hook runs once it is back"
                    ))
                    .await;
                    retried = true;
                    if self
                        .engine
                        .await_answer(launchway_containerd::OUTAGE_WAIT, cancel)
                        .await
                    {
                        continue;
                    }
                    log.line(&format!(
                        "      W: containerd did not come back; the {name} hook was not run"
                    ))
                    .await;
                }
                Err(error) => {
                    log.line(&format!(
                        "      W: the {name} hook could not run: app '{}': {error}",
                        app.name
                    ))
                    .await;
                }
            }
            return;
        }
    }
}

fn write_web_server_files(
    run_dir: &Path,
    server: &launchway_deploy::web_server::WebServerSpec,
) -> std::io::Result<()> {
    write_file(
        &run_dir.join(launchway_deploy::web_server::NGINX_CONFIG),
        server.nginx_config.as_bytes(),
    )?;
    if let Some(php_fpm) = &server.php_fpm_config {
        write_file(
            &run_dir.join(launchway_deploy::web_server::PHP_FPM_CONFIG),
            php_fpm.as_bytes(),
        )?;
    }
    Ok(())
}

/// The network addresses of `spec`'s processes and services.
fn release_members(spec: &DeploySpec) -> std::collections::BTreeSet<std::net::Ipv4Addr> {
    spec.apps
        .iter()
        .flat_map(|app| app.processes.iter().map(|p| p.address))
        .chain(spec.services.iter().map(|service| service.address))
        .collect()
}

/// Replaces `run_dir` with one holding only `/run/config.json`.
fn fill_run_dir(
    env_dir: &Path,
    spec: &DeploySpec,
    app: &AppSpec,
    run_dir: &Path,
) -> Result<(), String> {
    fresh_run_dir(env_dir, run_dir)
        .map_err(|error| format!("cannot prepare the mounts of app '{}': {error}", app.name))?;
    write_file(
        &run_dir.join("config.json"),
        launchway_deploy::spec::run_config(spec, app).as_bytes(),
    )
    .map_err(|error| format!("cannot write /run/config.json: {error}"))
}
