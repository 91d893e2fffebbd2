//! Launchway's SSH front door (russh).
//!
//! Public-key authentication only. The user name chooses the mode:
//! - any name without `:` (`git@host`): a session may exec
//!   `git-receive-pack` or `git-upload-pack` on a project, or `login` (a
//!   one-time console sign-in link the [`Gate`] mints for the key); anything
//!   else (a shell, a pty, other commands, port forwarding) is refused with a
//!   one-line reason and exit status 1;
//! - `PROJECT:ENVIRONMENT[:APP]` ([`parse_target`]): a shell or a command in
//!   that app's running container, with a pty if asked, and `direct-tcpip`
//!   tunnels to the app's relationships ([`session`]).
//!
//! In both modes subsystems, agent and X11 forwarding and remote forwarding
//! stay refused. The crate decides nothing about projects, roles
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
pub mod session;
mod target;

use std::future::Future;
use std::path::PathBuf;

pub use exec::{ExecError, is_project_name, parse_exec};
pub use keys::{KeyError, UserKey, fingerprint, load_or_create_host_key, parse_public_key};
pub use launchway_git::GitService;
pub use server::{SshServer, SshSettings};
pub use session::{Command, Process, ProcessControl, ProcessOutput, ProcessRequest, Pty};
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

    /// Starts a shell or command in `target` for the key `fingerprint` (the
    /// daemon decides whether the key may, and records who ran what), or
    /// says why not (one line). Dropping the [`Process`]'s guard ends it.
    fn start(
        &self,
        fingerprint: &str,
        target: &Target,
        request: ProcessRequest,
    ) -> impl Future<Output = Result<Process, String>> + Send;

    /// Dials relationship `relationship` of `target`'s app on `port` for a
    /// tunnel of the key `fingerprint`, or says why not (one line).
    fn tunnel(
        &self,
        fingerprint: &str,
        target: &Target,
        relationship: &str,
        port: u32,
    ) -> impl Future<Output = Result<tokio::net::TcpStream, String>> + Send;
}
