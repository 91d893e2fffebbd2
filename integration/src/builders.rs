//! Dedicated build hosts for tests: a containerd of their own (own root,
//! state and socket, as on a separate machine) and `launchway serve` in the
//! builder role joined to a test daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::{launchway_bin, pause, random_hex, rootfs_cache};

/// A containerd of its own, killed when dropped.
#[derive(Debug)]
pub struct TestContainerd {
    dir: PathBuf,
    child: Option<Child>,
    socket: PathBuf,
}

impl TestContainerd {
    /// Starts one and waits until it answers.
    pub fn start() -> TestContainerd {
        let dir = PathBuf::from(format!("/var/lib/launchway-it-containerd/{}", random_hex()));
        std::fs::create_dir_all(&dir).expect("containerd directory");
        let socket = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{socket}\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                socket = socket.display(),
            ),
        )
        .expect("containerd config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd starts");
        let containerd = TestContainerd {
            dir,
            child: Some(child),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.answers() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                std::fs::read_to_string(containerd.dir.join("containerd.log")).unwrap_or_default()
            );
            pause();
        }
        containerd
    }

    fn answers(&self) -> bool {
        self.socket.exists() && self.with_engine("default", async |_| true).unwrap_or(false)
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runs `body` with an engine on `namespace`; `None` when none answers.
    pub fn with_engine<T>(
        &self,
        namespace: &str,
        body: impl AsyncFnOnce(&launchway_containerd::Engine) -> T,
    ) -> Option<T> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let scratch = self.dir.join("scratch");
        runtime.block_on(async {
            let engine = launchway_containerd::Engine::connect(&self.socket, namespace, &scratch)
                .await
                .ok()?;
            Some(body(&engine).await)
        })
    }
}

impl Drop for TestContainerd {
    fn drop(&mut self) {
        // Shims outlive their containerd: those of this one go first, with
        // whatever still runs under them (a killed builder's step).
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for pid in $(pgrep -f -- '-address {}$'); do pkill -KILL -P \"$pid\"; kill -KILL \"$pid\"; done",
                self.socket.display()
            ))
            .status();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {0}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null; rm -rf --one-file-system {0}",
                self.dir.display()
            ))
            .status();
    }
}

/// `launchway serve` as a builder, with its own containerd; SIGKILLed when
/// dropped.
#[derive(Debug)]
pub struct TestBuilder {
    /// Its name.
    pub name: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    settings: PathBuf,
    namespace: String,
    containerd: TestContainerd,
    /// The `launchway` binary; [`launchway_bin`] (built on first use) when
    /// `None`.
    binary: Option<PathBuf>,
    failpoint: Option<String>,
}

impl TestBuilder {
    /// Settings for a builder named `name` joining with `token`, plus
    /// `extra` TOML (its `[registry]` table, `[build]`…). Not started.
    pub fn prepare(name: &str, token: &str, extra: &str) -> TestBuilder {
        let dir = tempfile::tempdir().expect("tempdir");
        let containerd = TestContainerd::start();
        let namespace = format!("lwb-{}", random_hex());
        let settings = dir.path().join("launchway.toml");
        std::fs::write(
            &settings,
            format!(
                "data_dir = \"{data}\"\n{extra}\n[containerd]\nsocket = \"{socket}\"\nnamespace = \"{namespace}\"\n[runtimes]\nrootfs_cache = \"{cache}\"\n[builder]\nname = \"{name}\"\njoin = [\"{token}\"]\n",
                data = dir.path().join("data").display(),
                socket = containerd.socket().display(),
                cache = rootfs_cache().display(),
            ),
        )
        .expect("builder settings");
        TestBuilder {
            name: name.to_owned(),
            dir,
            child: None,
            settings,
            namespace,
            containerd,
            binary: None,
            failpoint: None,
        }
    }

    /// A builder started and serving.
    pub fn start(name: &str, token: &str, extra: &str) -> TestBuilder {
        let mut builder = TestBuilder::prepare(name, token, extra);
        builder.spawn();
        builder
    }

    /// Runs `binary` with `$LAUNCHWAY_FAILPOINT` = `failpoint` from the
    /// next [`TestBuilder::spawn`] on.
    pub fn set_failpoint(&mut self, binary: &Path, failpoint: &str) {
        self.binary = Some(binary.to_path_buf());
        self.failpoint = Some(failpoint.to_owned());
    }

    /// Runs `binary` (e.g. a release build) from the next
    /// [`TestBuilder::spawn`] on, instead of the debug build.
    pub fn set_binary(&mut self, binary: &Path) {
        self.binary = Some(binary.to_path_buf());
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("builder.log")
    }

    /// Its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn command(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("builder log");
        let binary: &Path = match &self.binary {
            Some(binary) => binary,
            None => launchway_bin(),
        };
        let mut command = Command::new(binary);
        if let Some(failpoint) = &self.failpoint {
            command.env("LAUNCHWAY_FAILPOINT", failpoint);
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

    /// Starts (or restarts) it and waits until it serves.
    pub fn spawn(&mut self) {
        let before = self.log().len();
        self.child = Some(self.command());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            if log[before.min(log.len())..].contains("builder is serving") {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the builder exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "the builder did not start:\n{log}"
            );
            pause();
        }
    }

    /// Runs it and waits up to `timeout` for it to exit by itself: its
    /// status and log (`None`: still running, then killed).
    pub fn serve_expecting_exit(
        &mut self,
        timeout: Duration,
    ) -> Option<(std::process::ExitStatus, String)> {
        let mut child = self.command();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((status, self.log()));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            pause();
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`resume` sends SIGCONT).
    pub fn freeze(&self) {
        let _ = Command::new("kill")
            .arg("-STOP")
            .arg(self.pid().to_string())
            .status();
    }

    /// SIGCONT.
    pub fn resume(&self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.pid().to_string())
            .status();
    }

    /// Every container in its namespace of its containerd.
    pub fn containers(&self) -> Vec<String> {
        self.containerd
            .with_engine(&self.namespace, async |engine| {
                engine.list_containers().await.unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// The names of the images in its containerd.
    pub fn images(&self) -> Vec<String> {
        self.containerd
            .with_engine(&self.namespace, async |engine| {
                engine
                    .list_images()
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|image| image.name)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for TestBuilder {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        self.containerd
            .with_engine(&self.namespace, async |engine| {
                for id in engine.list_containers().await.unwrap_or_default() {
                    let _ = engine.remove_app(&id).await;
                }
            });
    }
}
