//! containerd outages while the daemon runs (issue 8): containerd may be
//! killed, crash or be restarted (an upgrade, systemd) under a running
//! daemon. Apps keep serving through it (their tasks live in their shims and
//! the router reaches them directly); what talks to containerd fails until
//! it is back.
//!
//! - The watch probes containerd every second; the embedded one is started
//!   again when it exits.
//! - A deploy whose stop or start fails because containerd is gone (the
//!   error says it is unavailable, or it does not answer a probe now) does
//!   not roll back, which needs containerd too: it leaves the deployment in
//!   its phase, keeps the environment's requests held (each waits at most
//!   the router's hold timeout, then gets a 503) and is listed here.
//! - Once containerd answers, the watch schedules for each listed deploy a
//!   recovery activity ([`Work::Resume`]), as a restart does after a crash:
//!   it deploys the release again (rolling back if that fails), or, when the
//!   outage caught a rollback, the release it was going back to; nothing if
//!   the environment's deploy has moved on meanwhile. A recovery that loses
//!   containerd again is listed again; one that fails otherwise before
//!   deploying ends the deploy as failed and stops holding requests.
//! - A hook whose process never started (containerd gone) runs once
//!   containerd is back (up to a minute later); one that started is waited
//!   for by the engine, never started twice.
//! - A build the outage breaks fails like any failed build (the previous
//!   release keeps serving); the step containers, snapshots and leases it
//!   could not remove are removed once containerd answers
//!   ([`launchway_containerd::Engine::clean_deferred`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use launchway_containerd::embedded::EmbeddedContainerd;
use launchway_deploy::Phase;
use launchway_store::{Activity, ActivityKind, Deployment};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Daemon;
use crate::activity::{Ended, Log, Work};
use crate::deploy::{environment_key, parse_phase};

/// How often the watch probes containerd.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest the watch spends on deferred clean-ups per round.
const CLEANUP_LIMIT: Duration = Duration::from_secs(30);

/// The deploys an outage interrupted: (project, environment, release).
#[derive(Debug, Default)]
pub(crate) struct ContainerdWatch {
    interrupted: std::sync::Mutex<BTreeSet<(String, String, String)>>,
}

/// The release a recovery deploys for a deployment a stop or an outage
/// interrupted: the one it was deploying, or, if it was rolling back, the
/// one it was going back to. `None` when there is nothing to finish.
pub(crate) fn release_to_recover(deployment: &Deployment) -> Option<String> {
    match parse_phase(&deployment.phase)? {
        Phase::RollingBack => deployment.previous.clone(),
        phase if phase.is_released() || phase == Phase::Failed => None,
        _ => Some(deployment.release.clone()),
    }
}

impl Daemon {
    /// Whether containerd does not answer now.
    pub(crate) async fn containerd_lost(&self) -> bool {
        !self.engine.answers(PROBE_TIMEOUT).await
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

    /// Finishes the deploy of `release` an outage interrupted, if the
    /// environment's deploy still is that one (see the module doc).
    pub(crate) async fn resume_activity(
        &self,
        activity: &Activity,
        release: &str,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<String, u64>, Ended> {
        let interrupted = || {
            self.store
                .deployment(&activity.project, &activity.environment)
                .ok()
                .flatten()
                .filter(|d| d.release == release && release_to_recover(d).is_some())
        };
        let Some(deployment) = interrupted() else {
            log.line("  Nothing to resume: the environment's deploy has moved on")
                .await;
            return Ok(BTreeMap::new());
        };
        if !self
            .engine
            .await_answer(launchway_containerd::OUTAGE_WAIT, cancel)
            .await
        {
            self.containerd_interrupted(&deployment);
            return Err(Ended::Failed(
                "containerd is still not answering; the deploy resumes once it does".into(),
            ));
        }
        let target = release_to_recover(&deployment).unwrap_or_else(|| release.to_owned());
        let result = self.promote_activity(activity, &target, log, cancel).await;
        if result.is_err()
            && let Some(mut deployment) = interrupted()
        {
            if self.containerd_lost().await {
                self.containerd_interrupted(&deployment);
            } else {
                // It failed before deploying (its images are gone, say):
                // nothing serves; stop holding requests for it.
                log.line("    E: the deploy cannot be finished; the environment serves nothing")
                    .await;
                deployment.phase = Phase::Failed.as_str().to_owned();
                deployment.updated_at = crate::now_ms();
                if let Err(error) = self.store.put_deployment(&deployment) {
                    warn!(%error, "cannot record the failed deploy");
                }
                self.router.open(
                    &environment_key(&activity.project, &activity.environment),
                    std::collections::HashMap::new(),
                );
            }
        }
        result
    }
}

/// Probes containerd until `stop`, restarting the embedded one when it
/// exits, removing what builds could not during an outage, and resuming
/// interrupted deploys when containerd answers. Returns the embedded
/// containerd for the shutdown to stop.
pub(crate) async fn watch_containerd(
    daemon: Arc<Daemon>,
    mut embedded: Option<EmbeddedContainerd>,
    stop: CancellationToken,
) -> Option<EmbeddedContainerd> {
    let mut down = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return embedded,
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
        if let Some(containerd) = embedded.as_mut()
            && let Some(status) = containerd.exited()
        {
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
        if daemon.containerd_lost().await {
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
        let cleaned = tokio::select! {
            () = stop.cancelled() => return embedded,
            pending = tokio::time::timeout(CLEANUP_LIMIT, daemon.engine.clean_deferred()) => pending,
        };
        if let Ok(pending) = cleaned
            && pending > 0
        {
            warn!(pending, "build leftovers containerd could not remove yet");
        }
        daemon.resume_interrupted_deploys();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(phase: Phase, previous: Option<&str>) -> Deployment {
        Deployment {
            project: "shop".into(),
            environment: "main".into(),
            release: "NEW".into(),
            previous: previous.map(str::to_owned),
            phase: phase.as_str().into(),
            containers: Vec::new(),
            updated_at: 0,
        }
    }

    #[test]
    fn a_recovery_finishes_the_deploy_or_the_rollback_it_interrupted() {
        for phase in [
            Phase::Holding,
            Phase::StoppingOld,
            Phase::Starting,
            Phase::DeployHook,
        ] {
            let interrupted = deployment(phase, Some("OLD"));
            assert_eq!(release_to_recover(&interrupted).as_deref(), Some("NEW"));
        }
        let rollback = deployment(Phase::RollingBack, Some("OLD"));
        assert_eq!(release_to_recover(&rollback).as_deref(), Some("OLD"));
        assert_eq!(
            release_to_recover(&deployment(Phase::RollingBack, None)),
            None
        );
        for done in [
            Phase::Released,
            Phase::PostDeploy,
            Phase::Complete,
            Phase::Failed,
        ] {
            assert_eq!(release_to_recover(&deployment(done, Some("OLD"))), None);
        }
    }
}
