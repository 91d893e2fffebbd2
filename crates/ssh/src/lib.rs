//! Launchway's SSH front door (russh).
//!
//! Public-key authentication only. A session may exec `git-receive-pack` or
//! `git-upload-pack` on a project, or `login` (a one-time console sign-in
//! link the [`Gate`] mints for the key); anything else (a shell, a pty, other
//! commands, subsystems, port or agent forwarding) is refused with a one-line
//! reason and exit status 1. The crate decides nothing about projects, roles
//! or builds: it asks a [`Gate`] (the daemon) and pipes the channel to the real
//! git it is told to run.
//!
//! Flow control: the child's stdout and stderr are copied through the
//! channel's writers, which wait for the client's window; client data is
//! written to the child's stdin from the channel's bounded queue, so a slow
//! git slows the client down instead of filling memory.

mod exec;
mod keys;
mod server;
mod target;

use std::future::Future;
use std::path::PathBuf;

pub use exec::{ExecError, is_project_name, parse_exec};
pub use keys::{KeyError, UserKey, fingerprint, load_or_create_host_key, parse_public_key};
pub use launchway_git::GitService;
pub use server::{SshServer, SshSettings};
pub use target::{Target, TargetError, parse_target};

/// What the daemon lets a session run.
#[derive(Debug)]
pub struct Grant {
    /// The bare repository.
    pub repo: PathBuf,
    /// Extra environment for git (the push session token, hook socket).
    pub env: Vec<(String, String)>,
    /// Text the daemon sends to the client's terminal (stderr) while git
    /// runs; the stream ends when the daemon drops its sender.
    pub messages: Option<tokio::sync::mpsc::Receiver<Vec<u8>>>,
    /// The push session, handed back to [`Gate::finish`].
    pub session: Option<String>,
}

/// The daemon's side of a session: who may log in and what they may run.
pub trait Gate: Send + Sync + 'static {
    /// Whether a key with this fingerprint may log in at all.
    fn authenticate(&self, fingerprint: &str) -> impl Future<Output = bool> + Send;

    /// Opens `service` on `project` for the key `fingerprint`; the error is the
    /// one line shown to the client. An unknown project and one the key
    /// cannot see must give the same answer.
    fn open(
        &self,
        fingerprint: &str,
        project: &str,
        service: GitService,
    ) -> impl Future<Output = Result<Grant, String>> + Send;

    /// git exited with `git_status`; returns the exit status the client gets
    /// (non-zero when the push's activities failed) and ends the session.
    fn finish(&self, session: &str, git_status: u32) -> impl Future<Output = u32> + Send;

    /// `ssh git@host login`: a one-time console sign-in link for the key
    /// `fingerprint` (the text printed), or why not (one line).
    fn login(&self, fingerprint: &str) -> impl Future<Output = Result<String, String>> + Send;
}
