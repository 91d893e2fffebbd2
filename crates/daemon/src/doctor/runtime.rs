//! Checks of what runs containers and builds: containerd (configured,
//! embedded, or a probe started for the check), runc, git, mmdebstrap.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use launchway_containerd::Engine;
use launchway_containerd::embedded::{self, EmbeddedContainerd};

use super::{Check, shorten};
use crate::Settings;

/// The version of the containerd at `socket`, if it answers.
async fn containerd_version(
    socket: &Path,
    namespace: &str,
    scratch: &Path,
) -> Result<String, launchway_containerd::EngineError> {
    let engine = Engine::connect(socket, namespace, scratch).await?;
    tokio::time::timeout(Duration::from_secs(5), engine.version())
        .await
        .map_err(|_| launchway_containerd::EngineError::Unavailable {
            socket: socket.to_path_buf(),
            reason: "no answer within 5 s".into(),
        })?
}

/// The reason in an engine error, without the socket it already names.
fn reason(error: &launchway_containerd::EngineError) -> String {
    match error {
        launchway_containerd::EngineError::Unavailable { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

pub(super) async fn containerd(
    settings: &Settings,
    root: bool,
    daemon: Option<&launchway_api::proto::ServerInfoReply>,
    source: &str,
) -> Check {
    const NAME: &str = "containerd";
    let Ok(scratch) = tempfile::Builder::new()
        .prefix("launchway-doctor-")
        .tempdir()
    else {
        return Check::skip(NAME, "no temporary directory to probe containerd from");
    };
    let namespace = &settings.containerd.namespace;
    let socket = &settings.containerd.socket;
    let configured = match containerd_version(socket, namespace, scratch.path()).await {
        Ok(version) => {
            return Check::ok(
                NAME,
                format!("containerd {version} answers at {}", socket.display()),
            );
        }
        Err(error @ launchway_containerd::EngineError::Invalid { .. }) => {
            return Check::fail(
                NAME,
                error.to_string(),
                format!("set [containerd] namespace in {source} to letters and digits"),
            );
        }
        Err(error) => reason(&error),
    };
    // The running daemon's own containerd, or one a daemon left running.
    let mut own = vec![embedded::socket_path(&settings.data_dir)];
    if let Some(info) = daemon {
        own.insert(0, PathBuf::from(&info.containerd_socket));
    }
    for candidate in own {
        if candidate.exists()
            && let Ok(version) = containerd_version(&candidate, namespace, scratch.path()).await
        {
            return Check::ok(
                NAME,
                format!(
                    "containerd {version} answers at {} (the daemon's embedded one; nothing answers at {}: {configured})",
                    candidate.display(),
                    socket.display()
                ),
            );
        }
    }
    let hung = socket.exists();
    let not_here = if hung {
        format!(
            "the containerd at {} does not answer ({configured})",
            socket.display()
        )
    } else {
        format!("no containerd at {} ({configured})", socket.display())
    };
    let install = format!(
        "apt-get install containerd runc (or set [containerd] binary in {source}), or start a containerd and set [containerd] socket in {source} to its socket"
    );
    if !root {
        return Check::fail(
            NAME,
            format!("{not_here}, and starting the embedded one needs root"),
            "run as root",
        );
    }
    let started = Instant::now();
    let probe = match EmbeddedContainerd::start(scratch.path(), &settings.containerd.binary).await {
        Ok(mut probe) => {
            let version = containerd_version(probe.socket(), namespace, scratch.path()).await;
            let _ = probe.stop().await;
            version
        }
        Err(error) => Err(error),
    };
    match probe {
        Ok(version) if hung => Check::warn(
            NAME,
            format!(
                "{not_here}; serve starts its own instead (containerd {version} from `{}` started here in {:.1} s)",
                settings.containerd.binary.display(),
                started.elapsed().as_secs_f64()
            ),
            format!(
                "restart that containerd (systemctl restart containerd) if the daemon should use it; otherwise remove the stale socket {}",
                socket.display()
            ),
        ),
        Ok(version) => Check::ok(
            NAME,
            format!(
                "{not_here}; serve starts its own: containerd {version} from `{}` started here in {:.1} s",
                settings.containerd.binary.display(),
                started.elapsed().as_secs_f64()
            ),
        ),
        Err(error) => {
            let log = std::fs::read_to_string(scratch.path().join("containerd/containerd.log"))
                .unwrap_or_default();
            let last = log
                .lines()
                .rev()
                .find(|line| line.contains("level=error") || line.contains("level=fatal"))
                .map(|line| format!(" (its log: {})", shorten(line, 300)))
                .unwrap_or_default();
            Check::fail(
                NAME,
                format!(
                    "{not_here}, and the embedded one does not start: {}{last}",
                    reason(&error)
                ),
                install,
            )
        }
    }
}

/// `name` on `PATH` or in the sbin directories (where Debian puts runc).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The first line `program arg` prints (on stdout or stderr).
async fn version_line(program: &Path, arg: &str) -> Option<String> {
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(program)
            .arg(arg)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    let text = if output.stdout.is_empty() {
        output.stderr
    } else {
        output.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|line| line.trim().to_owned())
        .filter(|line| !line.is_empty())
}

/// A program the platform runs: present, and what it says its version is.
async fn program(
    name: &'static str,
    found: Option<PathBuf>,
    flag: &str,
    needed_for: &str,
    fix: &str,
) -> Check {
    let Some(path) = found else {
        return Check::fail(
            name,
            format!("`{name}` is not installed ({needed_for})"),
            fix,
        );
    };
    match version_line(&path, flag).await {
        Some(version) => Check::ok(name, format!("{version} ({})", path.display())),
        None => Check::fail(
            name,
            format!("{} does not run (`{name} {flag}` failed)", path.display()),
            fix,
        ),
    }
}

pub(super) async fn runc() -> Check {
    program(
        "runc",
        find_program("runc"),
        "--version",
        "containerd runs every container with it",
        "apt-get install runc",
    )
    .await
}

pub(super) async fn git() -> Check {
    program(
        "git",
        launchway_git::Git::find_program(),
        "--version",
        "pushes run git receive-pack",
        "apt-get install git",
    )
    .await
}

pub(super) async fn nft() -> Check {
    program(
        "nft",
        find_program("nft"),
        "--version",
        "it loads the rules of what each container may reach on its environment network",
        "apt-get install nftables",
    )
    .await
}

pub(super) async fn mmdebstrap() -> Check {
    program(
        "mmdebstrap",
        find_program("mmdebstrap"),
        "--version",
        "runtime images are built with it",
        "apt-get install mmdebstrap (or bring runtime images with `launchway runtimes import`)",
    )
    .await
}
