//! The deploy's phases, in the seed's order (config-reference §3.4). The
//! daemon persists the phase it enters before doing its work, so a restart
//! knows how far a deploy got: before `Released` the old release is the one
//! to serve (roll back), from `Released` on the new one is (finish). A
//! failure before `Released` rolls back; a failing hook does not stop the
//! deploy (as on Platform.sh).

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
    fn only_phases_from_the_release_on_serve_the_new_version() {
        let released: Vec<Phase> = [
            Phase::Holding,
            Phase::StoppingOld,
            Phase::AttachingMounts,
            Phase::Starting,
            Phase::DeployHook,
            Phase::Released,
            Phase::PostDeploy,
            Phase::Complete,
            Phase::RollingBack,
            Phase::Failed,
        ]
        .into_iter()
        .filter(|p| p.is_released())
        .collect();
        assert_eq!(
            released,
            [Phase::Released, Phase::PostDeploy, Phase::Complete]
        );
        // The text the store holds reads back as the same phase.
        for phase in released {
            let text = serde_json::Value::String(phase.as_str().into());
            assert_eq!(serde_json::from_value::<Phase>(text).ok(), Some(phase));
        }
    }
}
