//! Start-up repair: the store against containerd and the data directory,
//! before anything is served (issue 8).
//!
//! In order:
//! 1. activities a stop interrupted are ended (`push.rs` `reconcile`):
//!    running ones failed, pending ones cancelled; builds left running are
//!    cancelled and name no image;
//! 2. containerd: every container that is not an app's (build steps and
//!    workspaces) is removed, then every lease, so what only they held
//!    (half-imported blobs, unfrozen layers, their snapshots) is collected;
//! 3. restores a stop interrupted are undone (before their swap) or
//!    finished (`restore.rs`), half-taken backups removed and whole ones
//!    recorded (`backups.rs`);
//! 3. an interrupted activation is undone (the environment goes back to
//!    inactive, no data; `restore_routing` thaws the parent it paused);
//! 4. each environment's deployment: one whose environment is gone or
//!    inactive is stopped; a released one keeps exactly its recorded
//!    containers (strays from an interrupted deploy are removed), and if
//!    the stop came before its post_deploy hooks ended, they are run again
//!    by a recovery activity; one a stop caught mid-deploy is finished by a
//!    recovery activity that deploys its release again (which rolls back to
//!    the previous release if that fails), or, if it was rolling back, the
//!    release it was going back to, its requests held meanwhile;
//! 5. app containers of environments without a deployment, and network
//!    namespaces nothing uses, are removed;
//! 6. routing is restored and the recovery activities are scheduled.

use std::collections::BTreeSet;
use std::sync::Arc;

use launchway_deploy::{Phase, environment_id};
use launchway_store::{ActivityKind, EnvironmentStatus};
use tracing::{info, warn};

use crate::Daemon;
use crate::activity::Work;
use crate::deploy::{environment_key, parse_phase};

impl Daemon {
    /// Repairs what a crash or a stop left (see the module doc).
    pub(crate) async fn reconcile_at_start(self: &Arc<Self>) -> Result<(), crate::DaemonError> {
        let interrupted_activations = self.reconcile()?;
        self.remove_deleted_service_data();
        // Before deployments: a restore's data is settled first, and the
        // deployment record it left is then recovered like any deploy's.
        self.reconcile_restores();
        self.reconcile_backups();
        self.reconcile_builds()?;
        match self.engine.remove_leftovers().await {
            Ok((containers, leases)) => {
                if !containers.is_empty() || leases > 0 {
                    info!(
                        containers = containers.len(),
                        leases, "removed what interrupted builds left in containerd"
                    );
                }
            }
            Err(error) => warn!(%error, "cannot remove leftovers in containerd"),
        }
        for (project, environment) in interrupted_activations {
            warn!(%project, %environment, "an activation was interrupted; the environment is deactivated");
            if let Err(message) = self.deactivate_environment(&project, &environment).await {
                warn!(%message, %project, %environment, "cannot deactivate");
            }
        }

        let mut recover = Vec::new();
        let mut post_deploys = Vec::new();
        let mut deployed = BTreeSet::new();
        for deployment in self.store.deployments()? {
            let key = environment_key(&deployment.project, &deployment.environment);
            let active = matches!(
                self.store.environment(&deployment.project, &deployment.environment),
                Ok(Some(env)) if env.status == EnvironmentStatus::Active
            );
            if !active {
                self.stop_environment(&deployment.project, &deployment.environment)
                    .await;
                continue;
            }
            deployed.insert(key.clone());
            let labelled = self
                .engine
                .app_containers(Some(&key))
                .await
                .unwrap_or_default();
            match parse_phase(&deployment.phase) {
                Some(phase) if phase.is_released() => {
                    // Services outlive releases: the next deploy decides
                    // about them.
                    let strays: Vec<String> = labelled
                        .into_iter()
                        .filter(|id| {
                            !deployment.containers.contains(id)
                                && !crate::services::is_service_container(id)
                        })
                        .collect();
                    if !strays.is_empty() {
                        warn!(%key, strays = strays.len(), "removing containers no release owns");
                        self.stop_containers(&strays).await;
                    }
                    // A stop between `released` and the release records.
                    if let Ok(Some(mut release)) = self.store.release(&deployment.release)
                        && release.status != launchway_store::ReleaseStatus::Active
                    {
                        release.status = launchway_store::ReleaseStatus::Active;
                        if let Err(error) = self.store.put_release(&release) {
                            warn!(%error, %key, "cannot record the release");
                        }
                    }
                    self.supersede_others(
                        &deployment.project,
                        &deployment.environment,
                        &deployment.release,
                    );
                    if phase != Phase::Complete {
                        // The release serves; its post_deploy hooks may not
                        // have run (or not to their end): run them.
                        post_deploys.push(deployment.clone());
                    }
                }
                Some(Phase::Failed) | None => {}
                Some(_) => match crate::outage::release_to_recover(&deployment) {
                    Some(release) => recover.push((deployment.clone(), release)),
                    // A rollback with nothing to go back to: nothing serves.
                    None => {
                        let mut failed = deployment.clone();
                        failed.phase = Phase::Failed.as_str().to_owned();
                        if let Err(error) = self.store.put_deployment(&failed) {
                            warn!(%error, %key, "cannot record the failed deploy");
                        }
                    }
                },
            }
        }

        // Containers of environments that have no deployment at all.
        // Only when every deployed environment's containers are known: a
        // lookup that failed must not make serving containers look orphaned.
        let mut owned = Some(BTreeSet::new());
        for key in &deployed {
            match self.engine.app_containers(Some(key)).await {
                Ok(ids) => owned
                    .iter_mut()
                    .for_each(|set| set.extend(ids.iter().cloned())),
                Err(error) => {
                    warn!(%error, %key, "cannot list containers; orphans are left for the next start");
                    owned = None;
                }
            }
        }
        if let Some(owned) = owned {
            for id in self.engine.app_containers(None).await.unwrap_or_default() {
                if !owned.contains(&id) {
                    warn!(container = %id, "removing an app container of no deployed environment");
                    self.stop_containers(std::slice::from_ref(&id)).await;
                }
            }
        }
        // Network namespaces nothing deploys into.
        let wanted: BTreeSet<String> = deployed
            .iter()
            .filter_map(|key| key.split_once('/'))
            .map(|(project, environment)| environment_id(project, environment))
            .collect();
        launchway_net::remove_networks_except(&self.settings.data_dir.join("netns"), &wanted);
        // No build runs yet: every hook namespace is a leftover.
        self.remove_stale_hook_namespaces();

        self.restore_routing().await;
        for deployment in post_deploys {
            let scheduled = self.schedule(
                &deployment.project,
                &deployment.environment,
                ActivityKind::Redeploy,
                &format!(
                    "recovery: the daemon stopped before the post_deploy hooks of release {} ran",
                    deployment.release
                ),
                Work::PostDeploy {
                    release: deployment.release.clone(),
                },
                None,
            );
            if let Err(error) = scheduled {
                warn!(%error, "cannot schedule the post_deploy recovery");
            }
        }
        for (deployment, release) in recover {
            warn!(project = %deployment.project, environment = %deployment.environment,
                phase = %deployment.phase, "a deploy was interrupted; finishing it");
            let scheduled = self.schedule(
                &deployment.project,
                &deployment.environment,
                ActivityKind::Redeploy,
                &format!(
                    "recovery: the daemon stopped while release {} was being deployed ({})",
                    deployment.release, deployment.phase
                ),
                Work::Promote { release },
                None,
            );
            if let Err(error) = scheduled {
                warn!(%error, "cannot schedule the recovery");
            }
        }
        Ok(())
    }
}
