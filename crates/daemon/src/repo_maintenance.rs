//! Repositories are packed in the background, never during a push.
//!
//! receive-pack keeps each push as one pack and never runs gc itself
//! (`launchway_git::Git::service`). When a push session ends, its project is
//! queued here; a task runs `git gc --auto` on it (which does nothing until
//! there are [`launchway_git::MAINTAIN_PACK_LIMIT`] packs) under the
//! project's repository lock: pushes hold it shared from the moment they are
//! let in until they end, maintenance takes it exclusively and skips the
//! project when a push holds it (that push's end queues it again). A push
//! arriving during maintenance waits for it (a repack of one project).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Daemon;

/// The per-project locks and the queue of projects to look at.
#[derive(Debug)]
pub(crate) struct RepositoryLocks {
    locks: Mutex<HashMap<String, Arc<RwLock<()>>>>,
    queue: mpsc::UnboundedSender<String>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl Default for RepositoryLocks {
    fn default() -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        RepositoryLocks {
            locks: Mutex::default(),
            queue,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

impl RepositoryLocks {
    fn lock(&self, project: &str) -> Arc<RwLock<()>> {
        let mut locks = match self.locks.lock() {
            Ok(locks) => locks,
            Err(poisoned) => poisoned.into_inner(),
        };
        locks.entry(project.to_owned()).or_default().clone()
    }

    /// A push's share of `project`'s repository (waits for maintenance).
    pub(crate) async fn push(&self, project: &str) -> OwnedRwLockReadGuard<()> {
        self.lock(project).read_owned().await
    }

    /// `project`'s repository to itself, unless a push or maintenance holds it.
    pub(crate) fn try_exclusive(&self, project: &str) -> Option<OwnedRwLockWriteGuard<()>> {
        self.lock(project).try_write_owned().ok()
    }

    /// `project`'s repository to itself, once pushes and maintenance let go.
    pub(crate) async fn exclusive(&self, project: &str) -> OwnedRwLockWriteGuard<()> {
        self.lock(project).write_owned().await
    }

    /// Queues `project` for maintenance (a push of it ended).
    pub(crate) fn pushed(&self, project: &str) {
        let _ = self.queue.send(project.to_owned());
    }
}

impl Daemon {
    /// Runs maintenance for the projects pushes queue, until `stop`.
    pub(crate) async fn maintain_repositories_forever(self: Arc<Self>, stop: CancellationToken) {
        let receiver = match self.repository_locks.receiver.lock() {
            Ok(mut receiver) => receiver.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(mut receiver) = receiver else {
            return;
        };
        loop {
            let first = tokio::select! {
                project = receiver.recv() => project,
                () = stop.cancelled() => return,
            };
            let Some(first) = first else {
                return;
            };
            // Every project queued meanwhile, once each.
            let mut projects = BTreeSet::from([first]);
            while let Ok(project) = receiver.try_recv() {
                projects.insert(project);
            }
            for project in projects {
                self.maintain_repository(&project).await;
            }
        }
    }

    /// `git gc --auto` on `project`'s repository, unless a push holds it.
    pub(crate) async fn maintain_repository(&self, project: &str) {
        let lock = self.repository_locks.lock(project);
        let Ok(_exclusive) = lock.try_write_owned() else {
            debug!(%project, "repository maintenance skipped: a push is on");
            return;
        };
        let repo = self.repo_path(project);
        if !repo.exists() {
            return;
        }
        if let Err(error) = self.git.maintain(&repo).await {
            warn!(%project, %error, "repository maintenance failed");
        }
    }
}
