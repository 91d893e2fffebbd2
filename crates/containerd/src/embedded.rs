//! The embedded default: when no containerd answers, `launchway serve` runs
//! Debian's `containerd` binary itself, with a generated config whose root,
//! state and socket are under the data directory (CRI off), and stops it on
//! shutdown. Its log goes to `containerd/containerd.log` there.
//!
//! Tasks started by it keep running in their shims if it stops (containerd's
//! own behaviour); the next start reconnects to them. If it dies while the
//! daemon runs, the daemon's containerd watch restarts it
//! ([`EmbeddedContainerd::restart`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::engine::Engine;
use crate::error::{EngineError, Result};

/// A containerd this process started.
#[derive(Debug)]
pub struct EmbeddedContainerd {
    child: tokio::process::Child,
    socket: PathBuf,
    log: PathBuf,
    binary: PathBuf,
    config_path: PathBuf,
}

/// Runs `binary` on `config_path`, its output appended to `log`.
fn spawn(
    binary: &Path,
    config_path: &Path,
    socket: &Path,
    log: &Path,
) -> Result<tokio::process::Child> {
    let log_file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|error| EngineError::io(format!("opening {}", log.display()), error))?;
    let log_err = log_file
        .try_clone()
        .map_err(|error| EngineError::io("duplicating the containerd log", error))?;
    // A socket a killed containerd left would refuse connections.
    let _ = std::fs::remove_file(socket);
    tokio::process::Command::new(binary)
        .arg("--config")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| {
            EngineError::io(
                format!(
                    "starting {} (apt-get install containerd runc)",
                    binary.display()
                ),
                error,
            )
        })
}

/// The socket the embedded containerd of `data_dir` listens on.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("containerd").join("containerd.sock")
}

/// The generated configuration (containerd config version 2).
pub fn config(data_dir: &Path) -> String {
    let base = data_dir.join("containerd");
    let quote = |path: PathBuf| toml_string(&path.display().to_string());
    format!(
        "version = 2\nroot = {}\nstate = {}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n[grpc]\n  address = {}\n",
        quote(base.join("root")),
        quote(base.join("state")),
        quote(socket_path(data_dir)),
    )
}

fn toml_string(value: &str) -> String {
    let escaped: String = value
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

impl EmbeddedContainerd {
    /// Starts containerd for `data_dir` and waits (up to 30 s) until it answers.
    pub async fn start(data_dir: &Path, binary: &Path) -> Result<Self> {
        let base = data_dir.join("containerd");
        std::fs::create_dir_all(&base)
            .map_err(|error| EngineError::io(format!("creating {}", base.display()), error))?;
        let config_path = base.join("config.toml");
        std::fs::write(&config_path, config(data_dir)).map_err(|error| {
            EngineError::io(format!("writing {}", config_path.display()), error)
        })?;
        let socket = socket_path(data_dir);
        let log = base.join("containerd.log");
        let child = spawn(binary, &config_path, &socket, &log)?;
        let mut embedded = EmbeddedContainerd {
            child,
            socket,
            log,
            binary: binary.to_path_buf(),
            config_path,
        };
        embedded.wait_until_answering().await?;
        Ok(embedded)
    }

    /// Its exit status, once it has exited (killed, crashed).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Starts it again (after it exited) and waits until it answers. Tasks
    /// it started kept running in their shims; it reconnects to them.
    pub async fn restart(&mut self) -> Result<()> {
        if self.exited().is_none() {
            let _ = self.stop().await;
        }
        self.child = spawn(&self.binary, &self.config_path, &self.socket, &self.log)?;
        self.wait_until_answering().await
    }

    async fn wait_until_answering(&mut self) -> Result<()> {
        let scratch = self.config_path.with_file_name("probe");
        for _ in 0..120 {
            if let Some(status) = self.exited() {
                return Err(EngineError::Unavailable {
                    socket: self.socket.clone(),
                    reason: format!(
                        "the embedded containerd exited ({status}); see {}",
                        self.log.display()
                    ),
                });
            }
            if Engine::connect(&self.socket, crate::DEFAULT_NAMESPACE, &scratch)
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let _ = self.stop().await;
        Err(EngineError::Unavailable {
            socket: self.socket.clone(),
            reason: format!(
                "the embedded containerd did not answer within 30 s; see {}",
                self.log.display()
            ),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops it: SIGTERM, then SIGKILL after 10 s.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(_) => Ok(()),
            Err(_) => {
                let _ = self.child.kill().await;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_puts_everything_under_the_data_dir() {
        let text = config(Path::new("/var/lib/launch\"way"));
        assert!(
            text.contains("root = \"/var/lib/launch\\\"way/containerd/root\""),
            "{text}"
        );
        assert!(text.contains("address = \"/var/lib/launch\\\"way/containerd/containerd.sock\""));
        assert!(text.contains("io.containerd.grpc.v1.cri"));
    }
}
