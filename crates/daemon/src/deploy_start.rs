//! Deploys, second half: starting a release's containers (mounts, the
//! supervisor, `pre_start`/`start`/`post_start`), waiting until the web
//! process accepts connections, and the hooks run in them (`deploy`,
//! `post_deploy`) with their logs. `deploy.rs` drives the phases.

use std::collections::HashMap;
use std::path::Path;
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
use crate::host_fs::{empty_tmp_mounts, prepare_mounts, read_no_follow, write_file};

impl Daemon {
    /// Makes mounts, starts every process of `spec` and waits until each web
    /// process is ready.
    pub(crate) async fn start_release(
        &self,
        spec: &DeploySpec,
        log: &Log,
        factory: &Arc<SocketFactory>,
        cancel: &CancellationToken,
    ) -> Result<Vec<Started>, StartFailure> {
        let mut containers: Vec<Started> = Vec::new();
        let fail = |message: String, containers: &Vec<Started>| StartFailure {
            message,
            containers: ids(containers),
            unavailable: false,
        };
        let engine_fail = |message: String,
                           error: &launchway_containerd::EngineError,
                           containers: &Vec<Started>| StartFailure {
            message,
            containers: ids(containers),
            unavailable: error.is_unavailable(),
        };
        let env_dir = self.environment_dir(&spec.project, &spec.environment);
        let owner = environment_key(&spec.project, &spec.environment);
        let network = self.network(&spec.project, &spec.environment);
        // Members of the network no process of this release is (the old
        // release's, now stopped) go.
        let members: std::collections::BTreeSet<std::net::Ipv4Addr> = spec
            .apps
            .iter()
            .flat_map(|app| app.processes.iter().map(|p| p.address))
            .chain(spec.services.iter().map(|service| service.address))
            .collect();
        if members.contains(&std::net::Ipv4Addr::UNSPECIFIED) {
            return Err(fail(
                "this release was made by an older Launchway, before environment networks; deploy the branch head instead (`launchway deploy`)".into(),
                &containers,
            ));
        }
        let retained = {
            let network = network.clone();
            let members = members.clone();
            tokio::task::spawn_blocking(move || network.retain_members(&members)).await
        };
        if let Ok(Err(error)) = retained {
            warn!(%error, "removing the network members of the previous release");
        }
        // Services first: the apps' deploy hooks use them.
        if let Err(message) = self.ensure_services(spec, log, cancel).await {
            return Err(StartFailure {
                unavailable: self.containerd_lost().await,
                message,
                containers: Vec::new(),
            });
        }
        crate::failpoint::reached("deploy.services_ready");
        for app in &spec.apps {
            log.line(&format!(
                "    Opening application {} and its relationships",
                app.name
            ))
            .await;
            let image = match self.engine.image(&app.image).await {
                Ok(image) => image,
                Err(error) => {
                    return Err(engine_fail(
                        format!("the image of app '{}' is not available: {error}", app.name),
                        &error,
                        &containers,
                    ));
                }
            };
            let path = app_path(&image);
            if let Err(error) = empty_tmp_mounts(&env_dir, app) {
                return Err(fail(
                    format!("cannot empty the tmp mounts of app '{}': {error}", app.name),
                    &containers,
                ));
            }
            let hosts = env_dir.join("hosts").join(&app.name);
            if let Err(error) = write_file(&hosts, hosts_file(app).as_bytes()) {
                return Err(fail(
                    format!("cannot write /etc/hosts: {error}"),
                    &containers,
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
                // Boxed: the deploy's future is deep already, and debug
                // builds copy large futures on the worker's stack.
                let step = match Box::pin(
                    self.app_step(spec, app, process, &path, &run_dir, &log_path, args),
                )
                .await
                {
                    Ok(step) => step,
                    Err(message) => return Err(fail(message, &containers)),
                };
                if let (true, Some(server)) = (process.web, &app.web_server)
                    && let Err(error) = write_web_server_files(&run_dir, server)
                {
                    return Err(fail(
                        format!("cannot write the web server's configuration: {error}"),
                        &containers,
                    ));
                }
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
                    return Err(engine_fail(
                        format!("cannot create the container of app '{}': {error}", app.name),
                        &error,
                        &containers,
                    ));
                }
                containers.push(Started {
                    app: app.name.clone(),
                    process: process.name.clone(),
                    id: id.clone(),
                    path: path.clone(),
                });
                if let Err(error) = self.engine.start_app(&id, &log_path).await {
                    return Err(engine_fail(
                        format!("cannot start app '{}': {error}", app.name),
                        &error,
                        &containers,
                    ));
                }
            }
        }
        for app in &spec.apps {
            if let Some(web) = app.web() {
                let Some(container) = container_of(&containers, &app.name, "web") else {
                    continue;
                };
                if let Err(message) = self
                    .wait_ready(spec, app, web, container, factory, log, cancel)
                    .await
                {
                    let log_path =
                        self.log_path(&spec.project, &spec.environment, &app.name, "web");
                    let (tail, _) = crate::logs::tail(&log_path, LOG_TAIL_LINES);
                    for line in tail.lines() {
                        log.line(&format!("      | {line}")).await;
                    }
                    return Err(fail(message, &containers));
                }
            }
        }
        Ok(containers)
    }

    /// The container step of `process` of `app` running `args`: its mounts
    /// and a fresh `run_dir` as `/run`, `/etc/hosts`, `/run/config.json`,
    /// the app's variables, `PATH` (`image_path`), the CA bundle, its place
    /// in the environment network and the deploy's limits. The caller
    /// checked `image_path` against the app's image.
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
        let hosts = env_dir.join("hosts").join(&app.name);
        let mut binds = prepare_mounts(&env_dir, process, run_dir, log_path)
            .map_err(|error| format!("cannot prepare the mounts of app '{}': {error}", app.name))?;
        binds.push(Bind {
            source: hosts,
            target: "/etc/hosts".into(),
            writable: false,
        });
        write_file(
            &run_dir.join("config.json"),
            launchway_deploy::spec::run_config(spec, app).as_bytes(),
        )
        .map_err(|error| format!("cannot write /run/config.json: {error}"))?;
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
