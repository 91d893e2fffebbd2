//! Sending one app's build to a builder and taking its result.
//!
//! The attempt's lease is its `RunJob` stream: any message renews it (the
//! builder ticks every few seconds while a step runs); a stream that breaks
//! (a builder killed: its TCP connection resets) or stays silent for
//! `[builders] lease_secs` (a builder stopped or cut off) loses it. A lost
//! job runs once more, on another builder or, with none, here; a second
//! loss fails the build. A builder's result counts only on the stream of
//! the attempt it was given (a claim names the attempt's epoch), and only
//! once the image it names has been pulled by that digest and its
//! annotations name this very job.

use std::path::Path;
use std::time::Duration;

use launchway_api::builder_door::proto::{
    DaemonEvent, JobInput, JobSpec, Offer, daemon_event, job_input, job_result, job_update,
};
use launchway_build::env::UserVariable;
use launchway_build::{
    APP_ANNOTATION, AppJob, BUILD_ID_ANNOTATION, BuildError, KEY_ANNOTATION, RECIPE_VERSION,
    Recipe, Resolved, TREE_ANNOTATION, build_image_name,
};
use launchway_containerd::Image;
use launchway_git::AppPlan;
use launchway_store::{Build, BuildEgress};
use tokio::io::AsyncReadExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::{Claimed, Offered, lock};
use crate::Daemon;

/// How long a builder has to claim a job it was offered.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);
/// After a cancel, how long the builder has to say it stopped.
const CANCEL_GRACE: Duration = Duration::from_secs(10);
/// The tree goes in pieces of this size.
const TAR_CHUNK: usize = 1024 * 1024;

/// A build a builder made, checked.
#[derive(Debug)]
pub(crate) struct RemoteBuilt {
    pub(crate) image: Image,
    pub(crate) steps: Vec<String>,
    /// `builder b2`, or `builder b2 (after b1 was lost)`.
    pub(crate) built_on: String,
}

/// How one attempt ended.
enum Attempt {
    Built { digest: String, steps: Vec<String> },
    Lost(String),
    Failed(BuildError),
}

impl Daemon {
    /// Builds app `index` of `build` on a builder when builders are
    /// registered; `Ok(None)`: it is for this host to build.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn build_remotely(
        &self,
        build: &mut Build,
        index: usize,
        app: &AppPlan,
        commit: &str,
        variables: &[UserVariable],
        entropy: &str,
        resolved: &Resolved,
        log: &mpsc::Sender<String>,
        cancel: &CancellationToken,
    ) -> Result<Option<Image>, BuildError> {
        if !self.builders_registered() {
            return Ok(None);
        }
        let has_hook = launchway_build::has_build_hook(&app.app);
        let egress = self
            .store
            .project(&build.project)
            .ok()
            .flatten()
            .map(|project| project.build_egress)
            .unwrap_or_default();
        if has_hook && egress != BuildEgress::None {
            let _ = log
                .send("    Building on this host: this project's build hook reaches package registries through this host's egress proxy".to_owned())
                .await;
            return Ok(None);
        }
        if self.build_hosts.connected() == 0 {
            if self.settings.builders.local_fallback {
                let _ = log
                    .send("    No builder is connected: building on this host".to_owned())
                    .await;
                return Ok(None);
            }
            return Err(BuildError::Config(
                "no builder is connected, and `[builders] local_fallback` is off: start a builder or turn it on".into(),
            ));
        }
        let repo = self.repo_path(&build.project);
        let job = AppJob {
            project: &build.project,
            plan: app,
            repo: &repo,
            commit,
            build_id: &build.id,
            variables,
            entropy,
            hook_network: None,
            cache_generation: self.build_cache_generation(&build.project, &app.name),
        };
        let recipe = Recipe::new(&job, resolved).await?;
        let tar = self.builder.source_tar(&repo, &app.tree_id).await?;
        self.publish_runtime(&resolved.runtime).await?;
        let remote = self
            .build_on_builders(&recipe, tar.path(), log, cancel)
            .await
            .map_err(|error| match error {
                BuildError::Cancelled => BuildError::Cancelled,
                other => BuildError::Config(format!("application '{}': {other}", app.name)),
            })?;
        Ok(remote.map(|remote| {
            crate::failpoint::reached("build.frozen");
            build.apps[index].steps = remote.steps;
            build.apps[index].built_on = Some(remote.built_on);
            remote.image
        }))
    }

    /// Builds `recipe` (its tree in `tar`) on a builder. `Ok(None)`: no
    /// builder could take it (none connected, or the one retry found no
    /// other): the caller builds here.
    pub(crate) async fn build_on_builders(
        &self,
        recipe: &Recipe,
        tar: &Path,
        log: &mpsc::Sender<String>,
        cancel: &CancellationToken,
    ) -> Result<Option<RemoteBuilt>, BuildError> {
        let hosts = &self.build_hosts;
        let lease = Duration::from_secs(self.settings.builders.lease_secs.max(2));
        let job = format!("{}.{}", recipe.build_id, recipe.app);
        let mut skip: Vec<String> = Vec::new();
        let mut lost: Vec<String> = Vec::new();
        let mut said_waiting = false;
        loop {
            if cancel.is_cancelled() {
                return Err(BuildError::Cancelled);
            }
            let Some((name, address, offers)) = hosts.pick(&skip) else {
                if !hosts.any_other(&skip) {
                    if !lost.is_empty() || !skip.is_empty() {
                        let _ = log
                            .send(format!(
                                "    No other builder is connected: building '{}' on this host",
                                recipe.app
                            ))
                            .await;
                    }
                    return Ok(None);
                }
                if !said_waiting {
                    let (connected, slots, busy) = hosts.load();
                    let _ = log
                        .send(format!(
                            "    Waiting for a builder ({connected} connected, {busy} of {slots} slots busy)"
                        ))
                        .await;
                    said_waiting = true;
                }
                let changed = hosts.changed.notified();
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = cancel.cancelled() => return Err(BuildError::Cancelled),
                }
                continue;
            };
            let epoch = hosts.next_epoch();
            let (claim_tx, claim_rx) = oneshot::channel();
            lock(&hosts.offered).insert(
                job.clone(),
                Offered {
                    builder: name.clone(),
                    epoch,
                    claim: claim_tx,
                },
            );
            let offer = DaemonEvent {
                kind: Some(daemon_event::Kind::Offer(Offer {
                    job: job.clone(),
                    epoch,
                    project: recipe.project.clone(),
                    app: recipe.app.clone(),
                })),
            };
            if offers.send(Ok(offer)).await.is_err() {
                // Its session is gone.
                lock(&hosts.offered).remove(&job);
                skip.push(name);
                continue;
            }
            let answer = tokio::select! {
                answer = tokio::time::timeout(CLAIM_TIMEOUT, claim_rx) => answer,
                () = cancel.cancelled() => {
                    lock(&hosts.offered).remove(&job);
                    return Err(BuildError::Cancelled);
                }
            };
            let claimed = match answer {
                Ok(Ok(claimed)) => claimed,
                Ok(Err(_)) => {
                    // Declined (its slots were taken meanwhile): another
                    // builder, or this one once it reports a free slot.
                    continue;
                }
                Err(_) => {
                    lock(&hosts.offered).remove(&job);
                    tracing::info!(builder = %name, %job, "builder did not claim the job: trying another");
                    skip.push(name);
                    continue;
                }
            };
            let _ = log
                .send(format!("    Building on builder {name} ({address})"))
                .await;
            match self
                .attempt_on_builder(claimed, recipe, tar, log, cancel, lease)
                .await
            {
                Attempt::Built { digest, steps } => {
                    let image = self.check_remote_build(&name, recipe, &digest).await?;
                    let built_on = match lost.first() {
                        Some(first) => format!("builder {name} (after {first} was lost)"),
                        None => format!("builder {name}"),
                    };
                    return Ok(Some(RemoteBuilt {
                        image,
                        steps,
                        built_on,
                    }));
                }
                Attempt::Failed(error) => return Err(error),
                Attempt::Lost(reason) => {
                    tracing::warn!(builder = %name, %job, %reason, "a builder lost its job");
                    if !lost.is_empty() {
                        return Err(BuildError::Config(format!(
                            "application '{}': builder {name} was lost too ({reason}); not retried again",
                            recipe.app
                        )));
                    }
                    lost.push(name.clone());
                    skip.push(name.clone());
                    let _ = log
                        .send(format!(
                            "    Builder {name} was lost during the build ({reason}): building '{}' again (the one retry)",
                            recipe.app
                        ))
                        .await;
                }
            }
        }
    }

    /// One attempt on a builder that claimed the job.
    async fn attempt_on_builder(
        &self,
        claimed: Claimed,
        recipe: &Recipe,
        tar: &Path,
        log: &mpsc::Sender<String>,
        cancel: &CancellationToken,
        lease: Duration,
    ) -> Attempt {
        let Claimed {
            mut updates,
            inputs,
        } = claimed;
        let send = |kind: job_input::Kind| {
            let inputs = inputs.clone();
            async move { inputs.send(Ok(JobInput { kind: Some(kind) })).await.is_ok() }
        };
        let spec = JobSpec {
            recipe_json: recipe.to_json(),
            recipe_version: RECIPE_VERSION,
            timeout_secs: self.settings.build.timeout_secs,
        };
        if !send(job_input::Kind::Spec(spec)).await {
            return Attempt::Lost("the connection closed".into());
        }
        let mut file = match tokio::fs::File::open(tar).await {
            Ok(file) => file,
            Err(error) => {
                return Attempt::Failed(BuildError::Io {
                    path: tar.display().to_string(),
                    message: error.to_string(),
                });
            }
        };
        let mut buffer = vec![0u8; TAR_CHUNK];
        loop {
            let read = match file.read(&mut buffer).await {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) => {
                    return Attempt::Failed(BuildError::Io {
                        path: tar.display().to_string(),
                        message: error.to_string(),
                    });
                }
            };
            let sent = tokio::select! {
                sent = send(job_input::Kind::Tar(buffer[..read].to_vec())) => sent,
                () = tokio::time::sleep(lease) => false,
            };
            if !sent {
                return Attempt::Lost("the connection closed while the tree was sent".into());
            }
        }
        if !send(job_input::Kind::TarEnd(true)).await {
            return Attempt::Lost("the connection closed".into());
        }
        let mut cancelled_at: Option<tokio::time::Instant> = None;
        loop {
            let wait = match cancelled_at {
                Some(at) => CANCEL_GRACE.saturating_sub(at.elapsed()),
                None => lease,
            };
            let next = tokio::select! {
                next = tokio::time::timeout(wait, updates.next()) => next,
                () = cancel.cancelled(), if cancelled_at.is_none() => {
                    cancelled_at = Some(tokio::time::Instant::now());
                    let _ = send(job_input::Kind::Cancel(true)).await;
                    continue;
                }
            };
            let update = match next {
                Err(_) if cancelled_at.is_some() => return Attempt::Failed(BuildError::Cancelled),
                Err(_) => {
                    return Attempt::Lost(format!("no word from it for {} s", lease.as_secs()));
                }
                Ok(None) => return Attempt::Lost("it ended the job without a result".into()),
                Ok(Some(Err(status))) => {
                    return Attempt::Lost(format!("the connection broke: {}", status.message()));
                }
                Ok(Some(Ok(update))) => update,
            };
            match update.kind {
                Some(job_update::Kind::Log(line)) => {
                    let _ = log.send(line).await;
                }
                Some(job_update::Kind::Result(result)) => {
                    return match result.kind {
                        Some(job_result::Kind::Built(built)) => Attempt::Built {
                            digest: built.manifest_digest,
                            steps: built.steps,
                        },
                        Some(job_result::Kind::Failed(failed)) if failed.kind == "cancelled" => {
                            Attempt::Failed(BuildError::Cancelled)
                        }
                        Some(job_result::Kind::Failed(failed)) => {
                            Attempt::Failed(BuildError::Config(failed.message))
                        }
                        None => Attempt::Lost("it sent an empty result".into()),
                    };
                }
                Some(job_update::Kind::Tick(_) | job_update::Kind::Claim(_)) | None => {}
            }
        }
    }

    /// The image `digest` a builder reported for `recipe`, pulled into
    /// containerd, if it is a build of exactly that job.
    async fn check_remote_build(
        &self,
        builder: &str,
        recipe: &Recipe,
        digest: &str,
    ) -> Result<Image, BuildError> {
        let Some(plane) = &self.plane else {
            return Err(BuildError::Config("no image registry is set".into()));
        };
        let refused = |why: String| {
            BuildError::Config(format!(
                "builder {builder} reported {digest} for '{}', {why}: refused",
                recipe.app
            ))
        };
        if !launchway_registry::is_digest(digest) {
            return Err(refused("which is not a digest".into()));
        }
        let name = build_image_name(&recipe.key);
        let (image, fetched) = plane
            .pull(&self.engine, &name, digest)
            .await
            .map_err(|error| refused(format!("which cannot be fetched ({error})")))?;
        let annotations = image.annotations();
        let expected = [
            (KEY_ANNOTATION, recipe.key.as_str()),
            (APP_ANNOTATION, recipe.app.as_str()),
            (TREE_ANNOTATION, recipe.tree_id.as_str()),
            (BUILD_ID_ANNOTATION, recipe.build_id.as_str()),
        ];
        if let Some((what, _)) = expected
            .iter()
            .find(|(what, value)| annotations.get(*what).map(String::as_str) != Some(*value))
        {
            if let Err(error) = self.engine.delete_image(&name).await {
                tracing::warn!(%error, "cannot remove a refused build's image");
            }
            return Err(refused(format!(
                "which is not the build it was given (its {what} differs; key {})",
                &recipe.key[..12.min(recipe.key.len())]
            )));
        }
        tracing::info!(builder, %digest, fetched, "remote build pulled");
        Ok(image)
    }

    /// Makes sure the registry has runtime image `image`, so builders can
    /// fetch it by the digest build keys were made with.
    pub(crate) async fn publish_runtime(&self, image: &Image) -> Result<(), BuildError> {
        let Some(plane) = &self.plane else {
            return Ok(());
        };
        if lock(&self.build_hosts.published_runtimes).contains(image.digest()) {
            return Ok(());
        }
        plane.push(&self.engine, image).await?;
        lock(&self.build_hosts.published_runtimes).insert(image.digest().to_owned());
        Ok(())
    }
}
