//! The daemon as the SSH server's [`Gate`]: keys, projects, roles, sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use launchway_ssh::{Gate, GitService, Grant};
use launchway_store::Role;
use rand::RngExt as _;
use tokio::sync::mpsc;
use tracing::warn;

use crate::{Daemon, PushSession};

/// How many messages to the pusher may queue before the activity waits for
/// the client to read them.
const MESSAGE_QUEUE: usize = 256;

impl Gate for Daemon {
    async fn start(
        &self,
        fingerprint: &str,
        target: &launchway_ssh::Target,
        request: launchway_ssh::ProcessRequest,
    ) -> Result<launchway_ssh::Process, String> {
        self.start_shell(fingerprint, target, request).await
    }

    async fn tunnel(
        &self,
        fingerprint: &str,
        target: &launchway_ssh::Target,
        relationship: &str,
        port: u32,
    ) -> Result<tokio::net::TcpStream, String> {
        self.open_tunnel(fingerprint, target, relationship, port)
            .await
    }

    async fn login(&self, fingerprint: &str) -> Result<String, String> {
        self.console_login_link(fingerprint)
    }

    async fn authenticate(&self, fingerprint: &str) -> bool {
        match self.store.key_is_known(fingerprint) {
            Ok(known) => known,
            Err(error) => {
                warn!(%error, "cannot read keys");
                false
            }
        }
    }

    async fn open(
        &self,
        fingerprint: &str,
        project: &str,
        service: GitService,
    ) -> Result<Grant, String> {
        let hidden =
            || format!("project `{project}` does not exist or your key has no access to it");
        let internal = |error: launchway_store::StoreError| {
            warn!(%error, "cannot read state");
            "the server cannot read its state right now".to_owned()
        };
        let Some(found) = self.store.project(project).map_err(internal)? else {
            return Err(hidden());
        };
        if found.deleting.is_some() {
            return Err(format!("project `{project}` is being deleted"));
        }
        let Some(grant) = self.store.key(project, fingerprint).map_err(internal)? else {
            return Err(hidden());
        };
        let repo = self.repo_path(&found.name);
        match service {
            GitService::UploadPack => Ok(Grant {
                repo,
                env: Vec::new(),
                messages: None,
                session: None,
            }),
            GitService::ReceivePack if grant.role == Role::Viewer => Err(format!(
                "your key can only fetch from `{project}` (role viewer)"
            )),
            GitService::ReceivePack => {
                let token = hex::encode(rand::rng().random::<[u8; 16]>());
                let (sender, receiver) = mpsc::channel(MESSAGE_QUEUE);
                let who = if grant.comment.is_empty() {
                    grant.fingerprint.clone()
                } else {
                    grant.comment.clone()
                };
                let repository = self.repository_locks.push(&found.name).await;
                // A deletion takes the repository exclusively while it marks
                // the project: read the mark again now that no deletion can
                // be between its check and its mark.
                if self
                    .store
                    .project(project)
                    .map_err(internal)?
                    .is_none_or(|p| p.deleting.is_some())
                {
                    return Err(format!("project `{project}` is being deleted"));
                }
                let session = Arc::new(PushSession {
                    project: found.name.clone(),
                    role: grant.role,
                    who,
                    messages: sender,
                    failed: AtomicBool::new(false),
                    _repository: repository,
                });
                if let Ok(mut sessions) = self.sessions.lock() {
                    sessions.insert(token.clone(), session);
                }
                Ok(Grant {
                    repo,
                    env: vec![
                        ("LAUNCHWAY_SESSION".into(), token.clone()),
                        ("LAUNCHWAY_SOCKET".into(), self.socket.display().to_string()),
                    ],
                    messages: Some(receiver),
                    session: Some(token),
                })
            }
        }
    }

    async fn finish(&self, session: &str, git_status: u32) -> u32 {
        let ended = self
            .sessions
            .lock()
            .ok()
            .and_then(|mut s| s.remove(session));
        let failed = ended
            .as_ref()
            .is_some_and(|s| s.failed.load(Ordering::SeqCst));
        // Dropping the session releases its share of the repository.
        let project = ended.map(|s| s.project.clone());
        let status = match git_status {
            0 if failed => 1,
            status => status,
        };
        if let Some(project) = project {
            self.repository_locks.pushed(&project);
        }
        status
    }
}

impl Daemon {
    /// The live push session `token`.
    pub(crate) fn session(&self, token: &str) -> Option<Arc<PushSession>> {
        self.sessions.lock().ok()?.get(token).cloned()
    }
}
