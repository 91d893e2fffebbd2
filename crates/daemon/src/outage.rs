//! containerd outages while the daemon runs (issue 8): containerd may be
//! killed, crash or be restarted (an upgrade, systemd) under a running
//! daemon. Apps keep serving through it (their tasks live in their shims and
//! the router reaches them directly); what talks to containerd fails until
//! it is back.
//!
//! - The watch probes containerd every second; the embedded one is started
//!   again when it exits. Every failed probe (or exit) counts an outage.
//! - A deploy whose stop or start fails while containerd is lost (a probe
//!   fails now, or an outage was counted since the deploy began) does not
//!   roll back, which needs containerd too: it leaves the deployment in its
//!   phase, keeps the environment's requests held (each waits at most the
//!   router's hold timeout, then gets a 503) and is listed here.
//! - Once containerd answers, the watch schedules for each listed deploy a
//!   recovery activity ([`Work::Resume`]): the release is deployed again
//!   (rolling back if that fails), as after a crash, unless the
//!   environment's deploy has moved on meanwhile.
//! - A deploy or post_deploy hook that cannot run for an outage waits (up
//!   to a minute) for containerd and runs then: the release's containers
//!   keep running meanwhile, the requests stay held (deploy hook).
//! - A build the outage breaks fails like any failed build (the previous
//!   release keeps serving); the step containers, snapshots and leases it
//!   could not remove are removed once containerd answers
//!   ([`launchway_containerd::Engine::clean_deferred`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use launchway_containerd::embedded::EmbeddedContainerd;
use launchway_deploy::Phase;
use launchway_store::{Activity, ActivityKind, Deployment};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Daemon;
use crate::activity::{Ended, Log, Work};
use crate::deploy::parse_phase;

/// How often the watch probes containerd.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a deploy hook waits for containerd to come back.
const HOOK_WAIT: Duration = Duration::from_secs(60);

/// What the watch and the deploys share.
#[derive(Debug, Default)]
pub(crate) struct ContainerdWatch {
    /// Failed probes and exits of the embedded containerd so far.
    outages: AtomicU64,
    /// Deploys an outage interrupted: (project, environment, release).
    interrupted: std::sync::Mutex<BTreeSet<(String, String, String)>>,
}

impl Daemon {
    /// The outage count, to compare with [`Daemon::containerd_lost`] later.
    pub(crate) fn containerd_outages(&self) -> u64 {
        self.containerd_watch.outages.load(Ordering::SeqCst)
    }

    /// Whether containerd went away since the count was `since`: it does not
    /// answer now, or it did not at some point in between.
    pub(crate) async fn containerd_lost(&self, since: u64) -> bool {
        !self.engine.answers(PROBE_TIMEOUT).await || self.containerd_outages() != since
    }

    /// Waits (up to a minute, or `cancel`) until containerd answers again.
    pub(crate) async fn wait_for_containerd(&self, cancel: &CancellationToken) -> bool {
        let deadline = tokio::time::Instant::now() + HOOK_WAIT;
        while tokio::time::Instant::now() < deadline {
            if self.engine.answers(PROBE_TIMEOUT).await {
                return true;
            }
            tokio::select! {
                () = cancel.cancelled() => return false,
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
        false
    }

    /// Lists a deploy to resume once containerd answers.
    pub(crate) fn containerd_interrupted(&self, deployment: &Deployment) {
        if let Ok(mut interrupted) = self.containerd_watch.interrupted.lock() {
            interrupted.insert((
                deployment.project.clone(),
                deployment.environment.clone(),
                deployment.release.clone(),
            ));
        }
    }

    /// Schedules the recovery of every deploy an outage interrupted.
    fn resume_interrupted_deploys(self: &Arc<Self>) {
        let interrupted = match self.containerd_watch.interrupted.lock() {
            Ok(mut interrupted) => std::mem::take(&mut *interrupted),
            Err(_) => return,
        };
        for (project, environment, release) in interrupted {
            info!(%project, %environment, %release, "containerd is back; resuming the deploy");
            let scheduled = self.schedule(
                &project,
                &environment,
                ActivityKind::Redeploy,
                &format!(
                    "recovery: containerd stopped answering while release {release} was being deployed"
                ),
                Work::Resume { release },
                None,
            );
            if let Err(error) = scheduled {
                warn!(%error, "cannot schedule the recovery");
            }
        }
    }

    /// Deploys `release` again if the environment's deploy still is the one
    /// the outage interrupted; otherwise there is nothing to do.
    pub(crate) async fn resume_activity(
        &self,
        activity: &Activity,
        release: &str,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<String, u64>, Ended> {
        let deployment = self
            .store
            .deployment(&activity.project, &activity.environment)
            .map_err(|_| Ended::Failed("the deploy state cannot be read".into()))?;
        let interrupted = deployment.as_ref().is_some_and(|d| {
            d.release == release
                && parse_phase(&d.phase)
                    .is_some_and(|phase| !phase.is_released() && phase != Phase::Failed)
        });
        if !interrupted {
            log.line("  Nothing to resume: the environment's deploy has moved on")
                .await;
            return Ok(BTreeMap::new());
        }
        self.promote_activity(activity, release, log, cancel).await
    }
}

/// Probes containerd until `stop`, restarting the embedded one when it
/// exits and resuming interrupted deploys when containerd answers. Returns
/// the embedded containerd for the shutdown to stop.
pub(crate) async fn watch_containerd(
    daemon: Arc<Daemon>,
    mut embedded: Option<EmbeddedContainerd>,
    stop: CancellationToken,
) -> Option<EmbeddedContainerd> {
    let watch = &daemon.containerd_watch;
    let mut down = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return embedded,
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
        if let Some(containerd) = embedded.as_mut()
            && let Some(status) = containerd.exited()
        {
            watch.outages.fetch_add(1, Ordering::SeqCst);
            down = true;
            warn!(%status, "the embedded containerd exited; starting it again");
            let restarted = tokio::select! {
                () = stop.cancelled() => None,
                result = containerd.restart() => Some(result),
            };
            match restarted {
                None => return embedded,
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    warn!(%error, "the embedded containerd did not start again; retrying");
                    continue;
                }
            }
        }
        if !daemon.engine.answers(PROBE_TIMEOUT).await {
            watch.outages.fetch_add(1, Ordering::SeqCst);
            if !down {
                warn!("containerd stopped answering; deploys that need it wait for it");
                down = true;
            }
            continue;
        }
        if down {
            info!("containerd answers again");
            down = false;
        }
        let pending = daemon.engine.clean_deferred().await;
        if pending > 0 {
            warn!(pending, "build leftovers containerd could not remove yet");
        }
        daemon.resume_interrupted_deploys();
    }
}
