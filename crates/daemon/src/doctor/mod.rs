//! `launchway doctor`: is this host ready to run `launchway serve` with these
//! settings? Each check ends in a verdict, what was seen and, when it is not
//! `ok`, the fix. `fail` means `serve` (or the pipeline behind it) cannot work
//! until it is fixed; `warn` means it works, at a cost the line states.
//!
//! The doctor changes nothing that stays: its probes run in temporary
//! directories it removes (an overlay mount and reflinked files in the data
//! directory, a probe containerd under the system's temporary directory when
//! none answers), and it binds a port only to release it at once. A running
//! daemon is asked who it is (`ServerInfo`), so ports it holds are not
//! mistaken for conflicts.

mod host;
mod network;
mod runtime;
mod system;
mod trust;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::Settings;
use network::{mirror, port};
use runtime::{containerd, git, mmdebstrap, nft, runc};
use system::{cgroups, data_directory, disk, overlay, privileges, reflinks};

/// How a check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Ready.
    Ok,
    /// Works, at a cost the detail states.
    Warn,
    /// Must be fixed before the platform works.
    Fail,
    /// Not checked (what it needs failed, or it needs root).
    Skip,
}

impl Verdict {
    /// The word printed in front of the check.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
}

/// One check: what it looked at, what it saw, how to fix it.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What is checked (`containerd`, `ssh port`, …).
    pub name: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// What was seen.
    pub detail: String,
    /// What to do, when the verdict is not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            verdict: Verdict::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            verdict: Verdict::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            verdict: Verdict::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn skip(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            verdict: Verdict::Skip,
            detail: detail.into(),
            fix: None,
        }
    }
}

/// Every check, in the order they are printed.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Where the settings came from (a file, or the built-in defaults).
    pub settings: String,
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// True when no check failed.
    pub fn ready(&self) -> bool {
        self.checks
            .iter()
            .all(|check| check.verdict != Verdict::Fail)
    }

    /// How many checks ended with `verdict`.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.checks
            .iter()
            .filter(|check| check.verdict == verdict)
            .count()
    }
}

/// Below this much free space the data directory fails the disk check: a
/// runtime image alone takes a few hundred MiB.
const DISK_FAIL_BYTES: u64 = 2 << 30;
/// Below this, a warning: builds, images and cloned environments add up.
const DISK_WARN_BYTES: u64 = 10 << 30;
/// How long the mirror and a running daemon have to answer.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);
/// The Debian suite runtime images are built from.
const SUITE: &str = "bookworm";

/// Runs every check for `settings`, read from `source` (a path, or "the
/// built-in defaults"; fixes name it).
pub async fn doctor(settings: &Settings, source: &str) -> Report {
    let label = source;
    // Fixes name the file to edit; with no file yet, the one serve reads.
    let file;
    let source = if Path::new(source).is_absolute() || Path::new(source).exists() {
        source
    } else {
        file = format!(
            "{} (create it with `launchway settings defaults > {}`)",
            crate::DEFAULT_SETTINGS_PATH,
            crate::DEFAULT_SETTINGS_PATH
        );
        &file
    };
    let root = nix::unistd::geteuid().is_root();
    let daemon = running_daemon(settings).await;
    let mut checks = vec![privileges(root)];
    let (data_check, probe) = data_directory(&settings.data_dir, source);
    checks.push(data_check);
    let (containerd, mirror) = tokio::join!(
        containerd(settings, root, daemon.as_ref(), source),
        mirror(&settings.runtimes.mirror, source),
    );
    checks.push(containerd);
    checks.push(runc().await);
    checks.push(nft().await);
    checks.push(cgroups());
    checks.push(overlay(probe.as_ref().map(tempfile::TempDir::path), root));
    checks.push(reflinks(probe.as_ref().map(tempfile::TempDir::path)));
    checks.push(disk(&settings.data_dir, source));
    let held = |pick: fn(&launchway_api::proto::ServerInfoReply) -> &str| {
        daemon
            .as_ref()
            .and_then(|info| pick(info).parse::<SocketAddr>().ok().map(|a| (a, info.pid)))
    };
    checks.push(port(
        "ssh port",
        settings.ssh.listen,
        held(|info| &info.ssh_listen),
        "[ssh] listen",
        source,
    ));
    checks.push(port(
        "router port",
        settings.router.listen,
        held(|info| &info.router_listen),
        "[router] listen",
        source,
    ));
    checks.push(git().await);
    checks.push(mmdebstrap().await);
    checks.push(mirror);
    checks.push(trust::build_cas(&settings.build.ca_bundle, source));
    drop(probe);
    Report {
        settings: label.to_owned(),
        checks,
    }
}

/// The daemon serving these settings' admin socket, if one answers.
async fn running_daemon(settings: &Settings) -> Option<launchway_api::proto::ServerInfoReply> {
    let socket = settings.socket_path();
    if !socket.exists() {
        return None;
    }
    let ask = async {
        let mut client = launchway_api::connect(&socket).await.ok()?;
        client
            .server_info(launchway_api::proto::ServerInfoRequest {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    };
    tokio::time::timeout(Duration::from_secs(3), ask)
        .await
        .ok()
        .flatten()
}

/// The nearest existing directory at or above `path`.
fn existing_ancestor(path: &Path) -> Option<&Path> {
    path.ancestors().find(|dir| dir.is_dir())
}

/// `text`, cut to about `max` bytes.
fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
