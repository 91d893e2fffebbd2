//! Helpers for the end-to-end tests in `tests/`: they drive the real `launchway`
//! binary the way users do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod builders;
pub mod registry;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The workspace's target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// The root filesystem cache every test daemon shares, so an image built
/// from Debian packages is made once per checkout (each daemon still
/// imports it into its own containerd namespace). In the target
/// directory: a fresh checkout builds everything once.
pub fn rootfs_cache() -> PathBuf {
    target_dir().join("test-rootfs-cache")
}

/// The `launchway` binary, built once per test run.
pub fn launchway_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "launchway"])
            .current_dir(workspace())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building launchway failed");
        target_dir().join("debug/launchway")
    })
}

/// The `launchway` binary with failpoints compiled in (the crash tests),
/// built once per test run as `launchway-failpoints`: the plain binary
/// never has them, and the dependencies are the workspace's own build.
pub fn failpoints_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "launchway", "--features", "failpoints"])
            .args(["--bin", "launchway-failpoints"])
            .current_dir(workspace())
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building launchway with failpoints failed"
        );
        target_dir().join("debug/launchway-failpoints")
    })
}

/// Runs `launchway ARGS…` and returns its output.
pub fn launchway(args: &[&str]) -> Output {
    Command::new(launchway_bin())
        .args(args)
        .output()
        .expect("launchway runs")
}

/// A `launchway serve` of its own: a temporary data directory, an ephemeral
/// SSH port, the host key pinned in a `known_hosts` file. Stopped with
/// SIGTERM when dropped.
#[derive(Debug)]
pub struct Daemon {
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    /// The settings file.
    pub settings: PathBuf,
    /// The SSH port.
    pub port: u16,
    /// `known_hosts` with the daemon's host key.
    pub known_hosts: PathBuf,
    /// The binary `spawn` runs.
    binary: PathBuf,
    /// `$LAUNCHWAY_FAILPOINT` for the next `spawn`.
    failpoint: Option<String>,
    /// `$LAUNCHWAY_FAILPOINT_RUN` for the next `spawn`.
    failpoint_command: Option<String>,
}

/// A user's SSH key pair.
#[derive(Debug)]
pub struct Key {
    /// The private key file.
    pub private: PathBuf,
    /// The public key file.
    pub public: PathBuf,
}

impl Daemon {
    /// Starts a daemon with the default settings plus `extra` TOML lines.
    pub fn start_with(extra: &str) -> Daemon {
        Daemon::start_binary(launchway_bin(), extra)
    }

    /// [`Daemon::start_with`] running `binary` (e.g. [`failpoints_bin`]).
    pub fn start_binary(binary: &Path, extra: &str) -> Daemon {
        let mut daemon = Daemon::prepare(binary, extra);
        daemon.spawn();
        daemon
    }

    /// A daemon's settings and directories, not started yet (the caller may
    /// put a filesystem at [`Daemon::data_dir`] first), then [`Daemon::spawn`].
    pub fn prepare(binary: &Path, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = dir.path().join("launchway.toml");
        // The containerd `make test` provides, in a namespace of this daemon's own.
        let containerd = match containerd_socket() {
            Some(socket) if !extra.contains("[containerd]") => format!(
                "[containerd]\nsocket = \"{}\"\nnamespace = \"lwit-{}\"\n",
                socket.display(),
                random_hex()
            ),
            _ => String::new(),
        };
        // Activities a stop catches get 30 s, well within `Daemon::stop`'s wait.
        let grace = if extra.contains("shutdown_grace_secs") {
            ""
        } else {
            "shutdown_grace_secs = 30\n"
        };
        let router = if extra.contains("[router]") {
            String::new()
        } else {
            "[router]\nlisten = \"127.0.0.1:0\"\n".to_string()
        };
        let runtimes = if extra.contains("[runtimes]") {
            String::new()
        } else {
            format!(
                "[runtimes]\nrootfs_cache = \"{}\"\n",
                rootfs_cache().display()
            )
        };
        // An ephemeral SSH port, in the `[ssh]` table `extra` may already have.
        let (extra, ssh) = if extra.contains("[ssh]\nlisten") {
            (extra.to_owned(), String::new())
        } else if extra.contains("[ssh]") {
            (
                extra.replacen("[ssh]\n", "[ssh]\nlisten = \"127.0.0.1:0\"\n", 1),
                String::new(),
            )
        } else {
            (
                extra.to_owned(),
                "[ssh]\nlisten = \"127.0.0.1:0\"\n".to_owned(),
            )
        };
        std::fs::write(
            &settings,
            format!(
                "data_dir = \"{}\"\n{grace}{extra}\n{ssh}{router}{containerd}{runtimes}",
                dir.path().join("data").display()
            ),
        )
        .expect("settings written");
        Daemon {
            known_hosts: dir.path().join("known_hosts"),
            settings,
            port: 0,
            child: None,
            dir,
            binary: binary.to_path_buf(),
            failpoint: None,
            failpoint_command: None,
        }
    }

    /// The containerd namespace this daemon uses (from its settings).
    pub fn containerd_namespace(&self) -> Option<String> {
        self.containerd_endpoint().map(|(_, namespace)| namespace)
    }

    /// The containerd socket and namespace this daemon uses: the configured
    /// socket, or its embedded containerd's when nothing answers there.
    pub fn containerd_endpoint(&self) -> Option<(PathBuf, String)> {
        let text = std::fs::read_to_string(&self.settings).ok()?;
        let settings: toml::Table = text.parse().ok()?;
        let table = settings.get("containerd").and_then(toml::Value::as_table);
        let field = |name: &str| {
            table
                .and_then(|t| t.get(name))
                .and_then(toml::Value::as_str)
                .map(str::to_owned)
        };
        let namespace = field("namespace").unwrap_or_else(|| "launchway".to_owned());
        let configured = field("socket").map(PathBuf::from);
        let embedded = self.data_dir().join("containerd/containerd.sock");
        let socket = match configured {
            Some(socket) if socket.exists() => socket,
            _ if embedded.exists() => embedded,
            _ => return None,
        };
        Some((socket, namespace))
    }

    /// Starts a daemon with the default settings.
    pub fn start() -> Daemon {
        Daemon::start_with("")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    /// `launchway serve` with these settings and failpoints, its log to `log`.
    fn serve_command(&self, log: &Path) -> std::process::Child {
        let log = std::fs::File::create(log).expect("log file");
        let mut command = Command::new(&self.binary);
        if let Some(failpoint) = &self.failpoint {
            command.env("LAUNCHWAY_FAILPOINT", failpoint);
        }
        if let Some(run) = &self.failpoint_command {
            command.env("LAUNCHWAY_FAILPOINT_RUN", run);
        }
        command
            .arg("--config")
            .arg(&self.settings)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("launchway serve starts")
    }

    /// Starts (or restarts) the process and waits until it serves.
    pub fn spawn(&mut self) {
        let child = self.serve_command(&self.log_path());
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if let Some(port) = log
                .split("ssh=127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse().ok())
            {
                self.port = port;
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon did not start:\n{log}"
            );
            pause();
        }
        let host_key = std::fs::read_to_string(self.data_dir().join("ssh_host_ed25519_key.pub"))
            .expect("host key");
        let mut parts = host_key.split_whitespace();
        let (kind, base64) = (parts.next().expect("type"), parts.next().expect("key"));
        std::fs::write(
            &self.known_hosts,
            format!("[127.0.0.1]:{} {kind} {base64}\n", self.port),
        )
        .expect("known_hosts written");
    }

    /// Runs `launchway serve` with these settings and waits up to `timeout`
    /// for it to exit by itself (a daemon that refuses to start): its exit
    /// status and log, or `None` when it was still running (then killed).
    pub fn serve_expecting_exit(
        &self,
        timeout: std::time::Duration,
    ) -> Option<(std::process::ExitStatus, String)> {
        let log_path = self.dir.path().join("refused.log");
        let mut child = self.serve_command(&log_path);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((
                    status,
                    std::fs::read_to_string(&log_path).unwrap_or_default(),
                ));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            pause();
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The failpoint the next [`Daemon::spawn`] arms (`None`: none).
    pub fn set_failpoint(&mut self, failpoint: Option<&str>) {
        self.failpoint = failpoint.map(str::to_owned);
    }

    /// Makes the failpoint the next [`Daemon::spawn`] arms run `command`
    /// (a shell command) and go on, instead of killing the daemon.
    pub fn set_failpoint_command(&mut self, command: Option<&str>) {
        self.failpoint_command = command.map(str::to_owned);
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            pause();
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            pause();
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// The daemon's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A scratch directory that lives as long as the daemon.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).expect("scratch dir");
        path
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs `launchway --config SETTINGS ARGS…`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(launchway_bin())
            .arg("--config")
            .arg(&self.settings)
            .args(args)
            .output()
            .expect("launchway runs")
    }

    /// The command `launchway --config SETTINGS ARGS…`, to run as the test
    /// needs (stdin, in the background).
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(launchway_bin());
        command.arg("--config").arg(&self.settings).args(args);
        command
    }

    /// Runs the CLI with `input` as its stdin.
    pub fn cli_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write as _;
        let mut child = self
            .cli_command(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("launchway runs");
        let mut stdin = child.stdin.take().expect("its stdin");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let output = child.wait_with_output().expect("launchway ends");
        let _ = writer.join();
        output
    }

    /// Runs the CLI and returns stdout, failing the test when it fails.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "launchway {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (up to two minutes) until no activity of `project` is pending
    /// or running; the activities, newest first.
    pub fn wait_idle(&self, project: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let listed = self.cli_ok(&["activities", "-p", project, "--json", "--limit", "100"]);
            let activities: serde_json::Value =
                serde_json::from_str(&listed).expect("activities as JSON");
            let busy = activities.as_array().is_some_and(|all| {
                all.iter()
                    .any(|a| a["state"] == "pending" || a["state"] == "in_progress")
            });
            if !busy {
                return activities;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "activities never ended:\n{listed}"
            );
            pause();
        }
    }

    /// The serving releases of `environment`: `(id, description)` of each
    /// `active *` row of `launchway releases`.
    pub fn active_releases(&self, project: &str, environment: &str) -> Vec<(String, String)> {
        self.cli_ok(&[
            "releases",
            "-p",
            project,
            "-e",
            environment,
            "--limit",
            "100",
        ])
        .lines()
        .skip(1)
        .filter(|line| line.contains("active *"))
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            Some((cells.first()?.to_string(), cells.last()?.to_string()))
        })
        .collect()
    }

    /// Project `project`, an admin key `alice` on it and a work tree (the
    /// scratch directory `work`) pushing as alice to remote `launchway`.
    pub fn admin_work(&self, project: &str) -> Work {
        let remote = self.project(project);
        let alice = self.key("alice", project, "admin");
        let work = Work::init(self.scratch("work")).with_ssh(self.ssh_command(&alice));
        work.git_ok(&["remote", "add", "launchway", &remote]);
        work
    }

    /// Creates a project and returns its git remote.
    pub fn project(&self, name: &str) -> String {
        self.cli_ok(&["project", "create", name]).trim().to_owned()
    }

    /// A new ed25519 key pair named `name` (also its comment).
    pub fn new_key(&self, name: &str) -> Key {
        let private = self.scratch("keys").join(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&private)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success());
        Key {
            public: private.with_extension("pub"),
            private,
        }
    }

    /// The key pair `name` made earlier by [`Daemon::new_key`].
    pub fn existing_key(&self, name: &str) -> Key {
        let private = self.scratch("keys").join(name);
        Key {
            public: private.with_extension("pub"),
            private,
        }
    }

    /// A new key granted `role` on `project`.
    pub fn key(&self, name: &str, project: &str, role: &str) -> Key {
        let key = self.new_key(name);
        self.grant(&key, project, role);
        key
    }

    /// Grants `key` a role on a project.
    pub fn grant(&self, key: &Key, project: &str, role: &str) {
        self.cli_ok(&[
            "keys",
            "add",
            "--project",
            project,
            "--role",
            role,
            key.public.to_str().expect("utf-8 path"),
        ]);
    }

    /// The `ssh` command line git should use with `key`: the host key is
    /// pinned, nothing from the user's configuration is read.
    pub fn ssh_command(&self, key: &Key) -> String {
        format!(
            "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null",
            key.private.display(),
            self.known_hosts.display()
        )
    }

    /// Runs `ssh ARGS…` against the daemon as `key`.
    pub fn ssh(&self, key: &Key, args: &[&str]) -> Output {
        let command = self.ssh_command(key);
        let mut parts = command.split(' ');
        Command::new(parts.next().expect("ssh"))
            .args(parts)
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("ssh runs")
    }

    /// The highest resident memory of the daemon so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// The daemon's resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }
}

/// Frees what a test's namespace holds on the shared containerd (images,
/// leases, snapshots, then the namespace): every test imports root
/// filesystems of hundreds of MB, and a whole `make test` would otherwise
/// keep them all until the end and fill a CI machine's disk.
async fn empty_namespace(engine: &launchway_containerd::Engine) {
    for image in engine.list_images().await.unwrap_or_default() {
        let _ = engine.delete_image(&image.name).await;
    }
    for lease in engine.list_leases().await.unwrap_or_default() {
        let _ = engine.delete_lease_id(&lease, true).await;
    }
    // A snapshot with children is refused: remove leaves first, a layer a pass.
    for _ in 0..64 {
        let snapshots = engine.list_snapshots().await.unwrap_or_default();
        if snapshots.is_empty() {
            break;
        }
        for snapshot in snapshots {
            let _ = engine.remove_snapshot(&snapshot).await;
        }
    }
    let _ = engine.delete_namespace().await;
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // An embedded containerd stops with the daemon: remove the apps first.
        let embedded = self
            .containerd_endpoint()
            .is_some_and(|(socket, _)| socket.starts_with(self.data_dir()));
        if embedded {
            self.remove_environments();
            self.stop();
        } else {
            self.stop();
            self.remove_environments();
            self.with_engine_if_any(empty_namespace);
        }
    }
}

impl Daemon {
    /// Removes what deploys left running (apps outlive the daemon by
    /// design): the app containers in the daemon's namespace and the
    /// pinned network namespaces under its data directory.
    pub fn remove_environments(&self) {
        self.with_engine_if_any(async |engine| {
            for id in engine.app_containers(None).await.unwrap_or_default() {
                let _ = engine.remove_app(&id).await;
            }
        });
        launchway_net::remove_networks_except(
            &self.data_dir().join("netns"),
            &std::collections::BTreeSet::new(),
        );
    }

    /// Runs `body` with an engine on the daemon's containerd namespace when
    /// one answers (for clean-up, which never fails a test).
    fn with_engine_if_any(&self, body: impl AsyncFnOnce(&launchway_containerd::Engine)) {
        let Some((socket, namespace)) = self.containerd_endpoint() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let scratch = self.scratch("cleanup");
        runtime.block_on(async {
            if let Ok(engine) =
                launchway_containerd::Engine::connect(&socket, &namespace, &scratch).await
            {
                body(&engine).await;
            }
        });
    }

    /// Runs `body` with an engine on the daemon's containerd namespace.
    fn with_engine<T>(&self, body: impl AsyncFnOnce(&launchway_containerd::Engine) -> T) -> T {
        let Some((socket, namespace)) = self.containerd_endpoint() else {
            panic!(
                "no containerd answers for this test; settings:\n{}",
                std::fs::read_to_string(&self.settings).unwrap_or_default()
            );
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let scratch = self.scratch("containers");
        runtime.block_on(async {
            let engine = launchway_containerd::Engine::connect(&socket, &namespace, &scratch)
                .await
                .expect("containerd");
            body(&engine).await
        })
    }

    /// The app containers of `owner` (`project/environment`; all when `None`).
    pub fn app_containers(&self, owner: Option<&str>) -> Vec<String> {
        self.with_engine(async |engine| engine.app_containers(owner).await.expect("containers"))
    }

    /// Every container in the daemon's namespace, an app's or not.
    pub fn all_containers(&self) -> Vec<String> {
        self.with_engine(async |engine| engine.inventory().await.expect("inventory").containers)
    }

    /// The router's HTTPS address (from the daemon's log).
    pub fn router_https_addr(&self) -> std::net::SocketAddr {
        let log = self.log();
        log.split(" https=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("no HTTPS address in the log:\n{log}"))
    }

    /// The HTTP API's address (from the daemon's log).
    pub fn http_api_addr(&self) -> std::net::SocketAddr {
        let log = self.log();
        log.split(" http_api=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP API address in the log:\n{log}"))
    }

    /// The router's address (from the daemon's log).
    pub fn router_addr(&self) -> std::net::SocketAddr {
        let log = self.log();
        log.split("router=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("no router address in the log:\n{log}"))
    }
}

/// Wheels of `packages` (and what they need), downloaded by the host's pip.
pub fn python_wheels(packages: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join("launchway-test-wheels");
    std::fs::create_dir_all(&dir).expect("the wheels directory");
    let out = std::process::Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--only-binary=:all:"])
        .args(["--python-version", "3.11", "-d"])
        .arg(&dir)
        .args(packages)
        .output()
        .expect("pip runs");
    assert!(
        out.status.success(),
        "pip download {packages:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Serves the files of `dir` over HTTP on the host's loopback, with an
/// index page of links (what pip's `--find-links` reads).
pub fn serve_wheels(dir: PathBuf) -> String {
    let port = serve_http(move |path| {
        let name = path.trim_start_matches('/');
        if name.is_empty() {
            let mut html = String::from("<html><body>");
            for entry in std::fs::read_dir(&dir).ok()?.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                html.push_str(&format!("<a href=\"/{file}\">{file}</a>\n"));
            }
            html.push_str("</body></html>");
            Some(("text/html", html.into_bytes()))
        } else if !name.contains('/') && !name.contains("..") {
            std::fs::read(dir.join(name))
                .ok()
                .map(|body| ("application/octet-stream", body))
        } else {
            None
        }
    });
    format!("http://127.0.0.1:{port}/")
}

/// A tiny HTTP/1.1 server on the host's loopback for the tests' package
/// indexes: `respond` maps a request path to a content type and a body
/// (`None`: 404). Returns its port; it serves until the test ends.
pub fn serve_http(
    respond: impl Fn(&str) -> Option<(&'static str, Vec<u8>)> + Send + 'static,
) -> u16 {
    serve_http_on(std::net::Ipv4Addr::LOCALHOST, respond)
}

/// [`serve_http`] on another address (`127.0.0.2`: a loopback address
/// that hooks' `NO_PROXY` does not name).
pub fn serve_http_on(
    ip: std::net::Ipv4Addr,
    respond: impl Fn(&str) -> Option<(&'static str, Vec<u8>)> + Send + 'static,
) -> u16 {
    use std::io::{BufRead as _, Write as _};
    let listener = std::net::TcpListener::bind((ip, 0)).expect("a loopback port");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(reading) = stream.try_clone() else {
                continue;
            };
            let mut reader = std::io::BufReader::new(reading);
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) <= 2 {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, kind, body) = match respond(path) {
                Some((kind, body)) => ("200 OK", kind, body),
                None => ("404 Not Found", "text/plain", b"not found".to_vec()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    port
}

/// An HTTP response: status, headers (names lowercased), body.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.0 request (`GET path`, `Host: host`) to `addr`, with its
/// headers (HTTP/1.0: no chunked body to decode).
pub fn http_fetch(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> std::io::Result<HttpResponse> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(40)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {response:?}")))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {response:?}")))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// One HTTP/1.1 request (`GET path`, `Host: host`) to `addr`; `(status, body)`.
pub fn http_get(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(40)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A git working repository driven by the real `git`, hermetic (no system or
/// global config, fixed identities and dates).
#[derive(Debug)]
pub struct Work {
    /// The working directory.
    pub dir: PathBuf,
    ssh: Option<String>,
}

impl Work {
    /// A new repository at `dir` on branch `main`.
    pub fn init(dir: PathBuf) -> Work {
        std::fs::create_dir_all(&dir).expect("work dir");
        let work = Work { dir, ssh: None };
        work.git_ok(&["init", "-q", "--initial-branch=main"]);
        work
    }

    /// An existing directory (a clone).
    pub fn open(dir: PathBuf) -> Work {
        Work { dir, ssh: None }
    }

    /// Uses `ssh_command` for remotes (see [`Daemon::ssh_command`]).
    pub fn with_ssh(mut self, ssh_command: String) -> Work {
        self.ssh = Some(ssh_command);
        self
    }

    /// Sets the ssh command.
    pub fn set_ssh(&mut self, ssh_command: String) {
        self.ssh = Some(ssh_command);
    }

    /// Writes a file.
    pub fn write(&self, path: &str, contents: impl AsRef<[u8]>) {
        let full = self.dir.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("dirs");
        std::fs::write(full, contents).expect("file written");
    }

    /// Commits everything and returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git_ok(&["add", "-A"]);
        self.git_ok(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    /// `git rev-parse HEAD`.
    pub fn head(&self) -> String {
        self.git_ok(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// `git push launchway [-o OPTION]… HEAD:branch`.
    pub fn push(&self, branch: &str, options: &[&str]) -> Output {
        let mut args = vec!["push".to_string(), "launchway".into()];
        for option in options {
            args.push("-o".into());
            args.push((*option).into());
        }
        args.push(format!("HEAD:{branch}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.git(&args)
    }

    /// [`Work::push`] that must succeed; returns its log (git's stderr).
    pub fn push_ok(&self, branch: &str, options: &[&str]) -> String {
        let out = self.push(branch, options);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "push failed:\n{log}");
        log
    }

    /// Runs git in the repository.
    pub fn git(&self, args: &[&str]) -> Output {
        hermetic_git(&self.dir, self.ssh.as_deref())
            .args(args)
            .output()
            .expect("git runs")
    }

    /// Runs git and returns stdout, failing the test when it fails.
    pub fn git_ok(&self, args: &[&str]) -> String {
        let out = self.git(args);
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `git` with no system or global config, fixed identities and dates, and
/// `ssh_command` as `GIT_SSH_COMMAND`.
pub fn hermetic_git(dir: &Path, ssh_command: Option<&str>) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("LC_ALL", "C")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z");
    if let Some(ssh) = ssh_command {
        command.env("GIT_SSH_COMMAND", ssh);
    }
    command
}

/// A valid single-app config (Upsun layout) whose app lives in `web/`.
pub const SAMPLE_CONFIG: &str = r#"applications:
  web:
    type: "python:3.11"
    source:
      root: web
    web:
      commands:
        start: httpd -f -p 127.0.0.1:$PORT -h /app
routes:
  "https://{default}/":
    type: upstream
    upstream: "web:http"
"#;

/// Waits a little before polling a real process again.
#[allow(clippy::disallowed_methods)] // These helpers are synchronous; sleeping is what they mean.
pub fn pause() {
    std::thread::sleep(std::time::Duration::from_millis(20));
}

/// `len` incompressible bytes from a small xorshift generator seeded by `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.max(1);
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// The containerd socket `make test` provides (`LAUNCHWAY_CONTAINERD_SOCKET`).
pub fn containerd_socket() -> Option<PathBuf> {
    std::env::var_os("LAUNCHWAY_CONTAINERD_SOCKET").map(PathBuf::from)
}

/// 12 random hex digits.
pub fn random_hex() -> String {
    let bytes: [u8; 6] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The busybox runtime fixture as an OCI archive, made once per test process.
pub fn busybox_archive() -> &'static Path {
    static ARCHIVE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("launchway-it-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fixture dir");
        let path = dir.join("busybox.tar");
        let status = Command::new(workspace().join("fixtures/runtimes/busybox-oci.sh"))
            .arg(&path)
            .status()
            .expect("fixture script runs");
        assert!(status.success(), "busybox-oci.sh failed");
        path
    })
}

impl Daemon {
    /// Registers the busybox fixture as runtime `type_name` (e.g. `python:3.11`),
    /// so builds run offline in a second instead of building a Debian image.
    pub fn use_busybox_runtime(&self, type_name: &str) {
        let archive = busybox_archive();
        self.cli_ok(&[
            "runtimes",
            "import",
            type_name,
            archive.to_str().expect("utf-8 path"),
        ]);
    }
}

/// A generator from `$LAUNCHWAY_FUZZ_SEED`, or a random seed (printed, so a
/// failure can be replayed).
#[allow(clippy::print_stdout)] // the seed must reach the test output
pub fn fuzz_rng() -> rand::rngs::StdRng {
    use rand::{RngExt as _, SeedableRng as _};
    let seed: u64 = std::env::var("LAUNCHWAY_FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("seed {seed} (LAUNCHWAY_FUZZ_SEED replays it)");
    rand::rngs::StdRng::seed_from_u64(seed)
}
