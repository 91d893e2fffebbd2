//! The deploy's phases, in the seed's order (config-reference §3.4). The
//! daemon persists the phase it enters before doing its work, so a restart
//! knows how far a deploy got: before `Released` the old release is the one
//! to serve (roll back), from `Released` on the new one is (finish).

use serde::{Deserialize, Serialize};

/// Where a deploy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Requests to the environment are held at the router.
    Holding,
    /// The old containers are being stopped (after in-flight requests drained).
    StoppingOld,
    /// Mount directories are made (tmp ones emptied) and attached.
    AttachingMounts,
    /// `pre_start`, `start`, `post_start`, then the readiness check.
    Starting,
    /// `hooks.deploy`, requests still held.
    DeployHook,
    /// Held requests go to the new version.
    Released,
    /// `hooks.post_deploy` with traffic flowing.
    PostDeploy,
    /// Done.
    Complete,
    /// The new version did not become ready; the previous one is started again.
    RollingBack,
    /// The deploy failed (after a rollback, or with nothing to roll back to).
    Failed,
}

impl Phase {
    /// Whether the new release serves (or must, after a restart).
    pub fn is_released(self) -> bool {
        matches!(self, Phase::Released | Phase::PostDeploy | Phase::Complete)
    }

    /// The phase after a successful `self`, on the way to `Complete`.
    pub fn next(self) -> Phase {
        match self {
            Phase::Holding => Phase::StoppingOld,
            Phase::StoppingOld => Phase::AttachingMounts,
            Phase::AttachingMounts => Phase::Starting,
            Phase::Starting => Phase::DeployHook,
            Phase::DeployHook => Phase::Released,
            Phase::Released => Phase::PostDeploy,
            Phase::PostDeploy | Phase::Complete => Phase::Complete,
            Phase::RollingBack | Phase::Failed => Phase::Failed,
        }
    }

    /// The phase after a failure in `self`: a failed start rolls back; a
    /// failing hook does not stop the deploy (as on Platform.sh).
    pub fn on_failure(self) -> Phase {
        match self {
            Phase::DeployHook | Phase::Released | Phase::PostDeploy => self.next(),
            Phase::Complete => Phase::Complete,
            Phase::Failed => Phase::Failed,
            _ => Phase::RollingBack,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Holding => "holding",
            Phase::StoppingOld => "stopping_old",
            Phase::AttachingMounts => "attaching_mounts",
            Phase::Starting => "starting",
            Phase::DeployHook => "deploy_hook",
            Phase::Released => "released",
            Phase::PostDeploy => "post_deploy",
            Phase::Complete => "complete",
            Phase::RollingBack => "rolling_back",
            Phase::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_happy_path_follows_the_seed_order() {
        let mut phase = Phase::Holding;
        let mut seen = vec![phase];
        while phase != Phase::Complete {
            phase = phase.next();
            seen.push(phase);
        }
        assert_eq!(
            seen,
            [
                Phase::Holding,
                Phase::StoppingOld,
                Phase::AttachingMounts,
                Phase::Starting,
                Phase::DeployHook,
                Phase::Released,
                Phase::PostDeploy,
                Phase::Complete
            ]
        );
    }

    #[test]
    fn failures_before_release_roll_back_and_hooks_do_not_stop_the_deploy() {
        assert_eq!(Phase::Starting.on_failure(), Phase::RollingBack);
        assert_eq!(Phase::StoppingOld.on_failure(), Phase::RollingBack);
        assert_eq!(Phase::DeployHook.on_failure(), Phase::Released);
        assert_eq!(Phase::PostDeploy.on_failure(), Phase::Complete);
        assert_eq!(Phase::RollingBack.next(), Phase::Failed);
        assert!(!Phase::DeployHook.is_released());
        assert!(Phase::PostDeploy.is_released());
    }
}
