//! Builds: records, the per-app build-or-reuse loop, garbage collection,
//! export and import.
//!
//! A build record is written (running) before any container starts, updated
//! after each app and finished with its status; its log is stored line by
//! line (capped at [`MAX_BUILD_LOG`]) and streamed into the push.
//! Garbage collection keeps the images of the newest `[build] keep_builds`
//! complete builds of each environment, of running builds and of builds an
//! active (or deploying) release runs or a backup names, plus the step images those were built from; everything
//! else named `launchway/build/…` or `launchway/step/…` is deleted, and
//! containerd collects the content.
//! An export is an OCI image layout (the apps' images) whose `index.json`
//! carries the build record in the annotation [`BUILD_ANNOTATION`]; an import
//! checks every blob's digest and that the record names exactly the images
//! the archive holds before anything is named.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use launchway_build::env::UserVariable;
use launchway_build::{
    AppJob, BUILD_ID_ANNOTATION, BUILD_IMAGE_PREFIX, BuildError, STEP_IMAGE_PREFIX,
    STEPS_ANNOTATION, Slot,
};
use launchway_containerd::archive::{self, ImportOptions, ImportPreview};
use launchway_git::Plan;
use launchway_store::{Activity, Build, BuildApp, BuildStatus, EnvironmentStatus, ReleaseStatus};
use rand::RngExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::activity::{Ended, Log};
use crate::push::short;
use crate::{Daemon, now_ms};

/// The index annotation holding the exported build record (JSON).
pub(crate) const BUILD_ANNOTATION: &str = "org.launchway.build";
/// The most log a build stores.
pub(crate) const MAX_BUILD_LOG: usize = 16 * 1024 * 1024;

/// How far a build's image already is in the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Published {
    /// Not known to be there.
    No,
    /// Its blobs and manifest are (a builder pushed them): only the tag is missing.
    Pushed,
    /// Tagged `build-<key>` (it was pulled by that tag).
    Tagged,
}

/// A new build id: `B` and nine capitals or digits.
pub(crate) fn new_build_id() -> String {
    new_record_id('B')
}

/// `prefix` and nine capitals and digits (Convox's shape for builds and releases).
pub(crate) fn new_record_id(prefix: char) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let mut id = String::from(prefix);
    for _ in 0..9 {
        let index = rng.random_range(0..ALPHABET.len());
        id.push(char::from(ALPHABET[index]));
    }
    id
}

/// Is `text` shaped like a build id?
pub(crate) fn is_build_id(text: &str) -> bool {
    text.len() == 10
        && text.starts_with('B')
        && text
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn failed(error: BuildError) -> Ended {
    match error {
        BuildError::Cancelled => Ended::Cancelled,
        other => Ended::Failed(other.to_string()),
    }
}

impl Daemon {
    /// A build id no build has.
    fn fresh_build_id(&self) -> String {
        loop {
            let id = new_build_id();
            if !matches!(self.store.build(&id), Ok(Some(_))) {
                return id;
            }
        }
    }

    /// Builds (or reuses) every app of `planned` for the activity's
    /// environment, recording a build.
    pub(crate) async fn build_commit(
        &self,
        activity: &Activity,
        planned: &Plan,
        subject: &str,
        variables: &[UserVariable],
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<Build, Ended> {
        let id = self.fresh_build_id();
        let mut build = Build {
            id: id.clone(),
            project: activity.project.clone(),
            environment: activity.environment.clone(),
            commit: planned.commit.clone(),
            apps: planned
                .apps
                .iter()
                .map(|app| BuildApp {
                    name: app.name.clone(),
                    runtime: app.runtime.clone(),
                    tree_id: app.tree_id.clone(),
                    ..BuildApp::default()
                })
                .collect(),
            status: BuildStatus::Running,
            release: None,
            started_at: now_ms(),
            elapsed_ms: None,
            description: subject.to_owned(),
            activity: Some(activity.id),
            imported_from: None,
        };
        self.store
            .put_build(&build)
            .map_err(|e| Ended::Failed(format!("the build cannot be recorded: {e}")))?;
        crate::failpoint::reached("build.recorded");

        // Lines from the builder go to the activity's log, the pusher and the build's log.
        let (lines, mut received) = mpsc::channel::<String>(256);
        let forward = {
            let log = log.clone();
            let store = self.store.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let mut stored = 0usize;
                let mut in_hook = false;
                while let Some(line) = received.recv().await {
                    // The hook's first output: its container is running.
                    if in_hook {
                        crate::failpoint::reached("build.hook");
                    }
                    in_hook = line.contains("Executing build hook...");
                    let line = log.mask(&line);
                    log.line(&line).await;
                    if stored < MAX_BUILD_LOG {
                        stored += line.len() + 1;
                        let text = if stored < MAX_BUILD_LOG {
                            format!("{line}\n")
                        } else {
                            "  (the rest of this build's log was not stored: it exceeds 16 MiB)\n"
                                .to_owned()
                        };
                        if let Err(error) = store.append_build_log(&id, &text) {
                            warn!(%error, "cannot store the build log");
                        }
                    }
                }
            })
        };
        let started = Instant::now();
        let outcome = {
            let _gc = self.gc_lock.read().await;
            self.build_apps(&mut build, planned, variables, &lines, cancel)
                .await
        };
        drop(lines);
        let _ = forward.await;
        build.elapsed_ms = Some(started.elapsed().as_millis() as u64);
        build.status = match &outcome {
            Ok(()) => BuildStatus::Complete,
            Err(BuildError::Cancelled) => BuildStatus::Cancelled,
            Err(_) => BuildStatus::Failed,
        };
        if let Err(error) = self.store.put_build(&build) {
            warn!(%error, "cannot record the build's end");
        }
        outcome.map_err(failed)?;
        crate::failpoint::reached("build.complete");
        // Not waiting for builds still queued (they hold the gc lock shared
        // until they end): this push ends now, and a later build or the
        // retention pass collects.
        if let Ok(exclusive) = self.gc_lock.try_write()
            && let Err(error) = self.collect_garbage_holding(exclusive).await
        {
            warn!(%error, "garbage collection after a build");
        }
        Ok(build)
    }

    async fn build_apps(
        &self,
        build: &mut Build,
        planned: &Plan,
        variables: &[UserVariable],
        log: &mpsc::Sender<String>,
        cancel: &CancellationToken,
    ) -> Result<(), BuildError> {
        let repo = self.repo_path(&build.project);
        let entropy = self
            .service_secret(&build.project)
            .map(|secret| launchway_services::credentials::project_entropy(&secret))
            .map_err(BuildError::Config)?;
        self.check_registry().await?;
        let mut slot: Option<Slot> = None;
        for (index, app) in planned.apps.iter().enumerate() {
            if cancel.is_cancelled() {
                return Err(BuildError::Cancelled);
            }
            let _ = log
                .send(format!(
                    "  Building application '{}' (runtime type: {}, tree: {})",
                    app.name,
                    app.runtime,
                    short(&app.tree_id)
                ))
                .await;
            let resolved = tokio::select! {
                resolved = self.builder.resolve(&build.project, app, variables, log) => resolved?,
                () = cancel.cancelled() => return Err(BuildError::Cancelled),
            };
            build.apps[index].build_key = Some(resolved.key.clone());
            build.apps[index].resolved_runtime =
                (resolved.runtime_type != app.runtime).then(|| resolved.runtime_type.clone());
            let reuse = |image: &launchway_containerd::Image, app: &mut BuildApp| {
                let annotations = image.annotations();
                app.reused_from = annotations.get(BUILD_ID_ANNOTATION).cloned();
                app.steps = annotations
                    .get(STEPS_ANNOTATION)
                    .map(|list| list.split(' ').map(str::to_owned).collect())
                    .unwrap_or_default();
            };
            // How the image gets to the registry: tagged there already (it
            // came from it), its blobs there (a builder pushed them), or not.
            let mut in_registry = Published::No;
            let mut found = self.builder.existing(&resolved.key).await?;
            if found.is_some() {
                let _ = log
                    .send("    Reusing existing build for this tree ID".to_owned())
                    .await;
            } else if let Some(image) = self.registry_build(&resolved.key, log).await? {
                let _ = log
                    .send("    Reusing the registry's build for this tree ID".to_owned())
                    .await;
                found = Some(image);
                in_registry = Published::Tagged;
            }
            let image = match found {
                Some(image) => {
                    reuse(&image, &mut build.apps[index]);
                    image
                }
                None => match self
                    .build_remotely(
                        build,
                        index,
                        app,
                        &planned.commit,
                        variables,
                        &entropy,
                        &resolved,
                        log,
                        cancel,
                    )
                    .await?
                {
                    Some(image) => {
                        in_registry = Published::Pushed;
                        image
                    }
                    None => {
                        let held = match slot.take() {
                            Some(held) => held,
                            None => self.builder.slot(&build.project, log, cancel).await?,
                        };
                        let slot = slot.insert(held);
                        let has_hook = launchway_build::has_build_hook(&app.app);
                        let egress = match has_hook {
                            true => Some(
                                self.start_hook_egress(&build.project, &build.id, index, log)
                                    .await?,
                            ),
                            false => None,
                        };
                        let job = AppJob {
                            project: &build.project,
                            plan: app,
                            repo: &repo,
                            commit: &planned.commit,
                            build_id: &build.id,
                            variables,
                            entropy: &entropy,
                            hook_network: egress.as_ref().map(|e| e.network()),
                            cache_generation: self
                                .build_cache_generation(&build.project, &app.name),
                        };
                        let built = self.builder.build(job, &resolved, slot, log, cancel).await;
                        let egress = match egress {
                            Some(egress) => Some(egress.finish(log).await),
                            None => None,
                        };
                        if let Some(egress) = &egress {
                            build.apps[index].egress = egress.records();
                        }
                        match built {
                            Ok(built) => {
                                crate::failpoint::reached("build.frozen");
                                build.apps[index].steps = built.steps;
                                built.image
                            }
                            Err(error @ BuildError::Registry(_)) => {
                                return Err(BuildError::Config(format!(
                                    "application '{}': {error}; the serving release is unchanged",
                                    app.name
                                )));
                            }
                            Err(BuildError::Cancelled) => return Err(BuildError::Cancelled),
                            Err(error) => {
                                let hint = egress
                                    .and_then(|e| e.hint(&build.project, &error))
                                    .unwrap_or_default();
                                return Err(BuildError::Config(format!(
                                    "application '{}': {error}{hint}",
                                    app.name
                                )));
                            }
                        }
                    }
                },
            };
            self.publish_build(&resolved.key, &image, in_registry, log)
                .await
                .map_err(|error| {
                    BuildError::Config(format!(
                        "application '{}': {error}; the serving release is unchanged",
                        app.name
                    ))
                })?;
            build.apps[index].image = Some(image.name.clone());
            build.apps[index].digest = Some(image.digest().to_owned());
            if let Err(error) = self.store.put_build(build) {
                warn!(%error, "cannot record the build's progress");
            }
        }
        Ok(())
    }

    /// Deletes build and step images no kept build uses. Returns the names
    /// removed and how many were kept.
    pub(crate) async fn collect_garbage(&self) -> Result<(Vec<String>, usize), String> {
        let exclusive = self.gc_lock.write().await;
        self.collect_garbage_holding(exclusive).await
    }

    /// [`Daemon::collect_garbage`] with the gc lock already held.
    async fn collect_garbage_holding(
        &self,
        _exclusive: tokio::sync::RwLockWriteGuard<'_, ()>,
    ) -> Result<(Vec<String>, usize), String> {
        let builds = self.store.builds(None).map_err(|e| e.to_string())?;
        let keep_per_env = self.builder.settings().keep_builds.max(1);
        // Every release: retention bounds how many there are.
        let releases = self.store.all_releases().map_err(|e| e.to_string())?;
        // Builds that serve (or are being deployed) stay whatever their age.
        let serving: BTreeSet<String> = releases
            .iter()
            .filter(|r| matches!(r.status, ReleaseStatus::Active | ReleaseStatus::Deploying))
            .map(|r| r.build.clone())
            .collect();
        // So is the newest release `launchway build` left waiting for a
        // promotion in each environment (older ones may be collected: their
        // promotion then says their images are gone).
        let mut pending: HashMap<(String, String), (u64, String)> = HashMap::new();
        for release in &releases {
            if release.status == ReleaseStatus::Pending {
                let newest = pending
                    .entry((release.project.clone(), release.environment.clone()))
                    .or_insert((0, String::new()));
                if release.created_at >= newest.0 {
                    *newest = (release.created_at, release.build.clone());
                }
            }
        }
        let serving: BTreeSet<String> = serving
            .into_iter()
            .chain(pending.into_values().map(|(_, build)| build))
            .collect();
        // So are those of releases a backup names (a restore deploys them).
        let backed_up: BTreeSet<String> = self
            .store
            .all_backups()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|b| !b.release.is_empty())
            .map(|b| b.release)
            .collect();
        let serving: BTreeSet<String> = serving
            .into_iter()
            .chain(
                releases
                    .iter()
                    .filter(|r| backed_up.contains(&r.id))
                    .map(|r| r.build.clone()),
            )
            .collect();
        // The newest builds stay warm (for reuse) only in environments that
        // exist and are active: a deleted or inactive environment's images
        // go unless they serve, wait for promotion or are backed up.
        let mut warm: HashMap<String, BTreeSet<String>> = HashMap::new();
        let mut complete_seen: HashMap<(String, String), usize> = HashMap::new();
        let mut keep: BTreeSet<String> = BTreeSet::new();
        // Newest first.
        for build in &builds {
            let kept = match build.status {
                BuildStatus::Running => true,
                BuildStatus::Complete => {
                    if !warm.contains_key(&build.project) {
                        let active = self
                            .store
                            .environments(&build.project)
                            .map_err(|e| e.to_string())?
                            .into_iter()
                            .filter(|e| e.status == EnvironmentStatus::Active)
                            .map(|e| e.name)
                            .collect();
                        warm.insert(build.project.clone(), active);
                    }
                    let seen = complete_seen
                        .entry((build.project.clone(), build.environment.clone()))
                        .or_default();
                    *seen += 1;
                    // An imported build stays warm wherever it landed: it was
                    // brought here to be promoted.
                    let warm = build.imported_from.is_some()
                        || warm
                            .get(&build.project)
                            .is_some_and(|active| active.contains(&build.environment));
                    (warm && *seen <= keep_per_env) || serving.contains(&build.id)
                }
                BuildStatus::Failed | BuildStatus::Cancelled => false,
            };
            if kept {
                for app in &build.apps {
                    keep.extend(app.image.iter().cloned());
                    // The step images the kept builds started from.
                    keep.extend(app.steps.iter().cloned());
                }
            }
        }
        let engine = self.builder.engine();
        let images = engine.list_images().await.map_err(|e| e.to_string())?;
        let mut removed = Vec::new();
        let mut kept = 0;
        for image in images {
            let ours = image.name.starts_with(BUILD_IMAGE_PREFIX)
                || image.name.starts_with(STEP_IMAGE_PREFIX);
            if !ours {
                continue;
            }
            if keep.contains(&image.name) {
                kept += 1;
                continue;
            }
            match engine.delete_image(&image.name).await {
                Ok(()) => removed.push(image.name),
                Err(error) if error.is_not_found() => {}
                Err(error) => return Err(error.to_string()),
            }
        }
        Ok((removed, kept))
    }

    /// Marks builds a crash or stop left running as cancelled.
    pub(crate) fn reconcile_builds(&self) -> Result<(), launchway_store::StoreError> {
        for mut build in self.store.builds(None)? {
            if build.status == BuildStatus::Running {
                build.status = BuildStatus::Cancelled;
                self.store.append_build_log(
                    &build.id,
                    "Cancelled: the daemon stopped before this build finished\n",
                )?;
                self.store.put_build(&build)?;
            }
        }
        Ok(())
    }

    /// Writes build `id` (record and images) as an OCI archive to `writer`.
    pub(crate) async fn export_build<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        build: &Build,
        writer: &mut W,
    ) -> Result<(), String> {
        let mut names = Vec::new();
        for app in &build.apps {
            let Some(image) = &app.image else {
                return Err(format!(
                    "build {} has no image for app {} (status {})",
                    build.id,
                    app.name,
                    build.status.as_str()
                ));
            };
            names.push(image.clone());
        }
        let record = serde_json::to_string(build).map_err(|e| e.to_string())?;
        let mut annotations = BTreeMap::new();
        annotations.insert(BUILD_ANNOTATION.to_owned(), record);
        archive::export_annotated(self.builder.engine(), &names, &annotations, writer)
            .await
            .map_err(|error| {
                if error.is_not_found() {
                    format!(
                        "the images of build {} were collected (`launchway gc`); it cannot be exported",
                        build.id
                    )
                } else {
                    error.to_string()
                }
            })
    }

    /// Imports a build archive (plain or gzip) into `project` as a new build.
    pub(crate) async fn import_build<R: Read + Send + 'static>(
        &self,
        project: &str,
        reader: R,
    ) -> Result<Build, String> {
        let record: Arc<std::sync::Mutex<Option<Build>>> = Arc::default();
        let seen = record.clone();
        let accept = move |preview: &ImportPreview| -> Result<(), String> {
            let text = preview
                .annotations
                .get(BUILD_ANNOTATION)
                .ok_or("it is not a Launchway build export (no build record in index.json)")?;
            let build: Build = serde_json::from_str(text)
                .map_err(|e| format!("its build record is unreadable: {e}"))?;
            check_record(&build, preview)?;
            if let Ok(mut slot) = seen.lock() {
                *slot = Some(build);
            }
            Ok(())
        };
        let options = ImportOptions {
            name: None,
            accept: Some(Arc::new(accept)),
        };
        // Sniffing reads the first bytes, which may block on the client: not on this thread.
        let reader = tokio::task::spawn_blocking(move || decompress(reader))
            .await
            .map_err(|e| format!("cannot read the archive: {e}"))?
            .map_err(|e| format!("cannot read the archive: {e}"))?;
        let _gc = self.gc_lock.read().await;
        archive::import(self.builder.engine(), reader, &options)
            .await
            .map_err(|error| format!("the archive was refused, nothing was stored: {error}"))?;
        let original = record
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
            .ok_or("the archive's build record was lost")?;
        let build = Build {
            id: self.fresh_build_id(),
            project: project.to_owned(),
            environment: original.environment.clone(),
            commit: original.commit.clone(),
            apps: original.apps.clone(),
            status: BuildStatus::Complete,
            release: None,
            started_at: now_ms(),
            elapsed_ms: original.elapsed_ms,
            description: original.description.clone(),
            activity: None,
            imported_from: Some(original.id.clone()),
        };
        self.store
            .put_build(&build)
            .map_err(|e| format!("the build cannot be recorded: {e}"))?;
        let _ = self.store.append_build_log(
            &build.id,
            &format!(
                "Imported from build {} of project {}\n",
                original.id, original.project
            ),
        );
        Ok(build)
    }
}

/// The record must name exactly the images the archive holds, with their digests.
fn check_record(build: &Build, preview: &ImportPreview) -> Result<(), String> {
    if !is_build_id(&build.id) {
        return Err("its build record has no valid build id".into());
    }
    if build.status != BuildStatus::Complete {
        return Err(format!(
            "build {} is {}, only complete builds can be imported",
            build.id,
            build.status.as_str()
        ));
    }
    let archived: BTreeMap<&str, &str> = preview
        .images
        .iter()
        .map(|image| (image.name.as_str(), image.digest.as_str()))
        .collect();
    let mut named = BTreeSet::new();
    for app in &build.apps {
        let (Some(image), Some(digest)) = (&app.image, &app.digest) else {
            return Err(format!("app {} has no image in the build record", app.name));
        };
        if !image.starts_with(BUILD_IMAGE_PREFIX) {
            return Err(format!(
                "app {} names the image {image}, not a build image",
                app.name
            ));
        }
        match archived.get(image.as_str()) {
            Some(found) if found == digest => {}
            Some(found) => {
                return Err(format!(
                    "app {}: the record says {digest}, the archive holds {found}",
                    app.name
                ));
            }
            None => return Err(format!("app {}: the image {image} is missing", app.name)),
        }
        named.insert(image.as_str());
    }
    if let Some(extra) = archived.keys().find(|name| !named.contains(*name)) {
        return Err(format!(
            "the archive holds {extra}, which the record does not name"
        ));
    }
    Ok(())
}

/// The archive's bytes, gunzipped when they are gzip.
fn decompress<R: Read + Send + 'static>(reader: R) -> std::io::Result<Box<dyn Read + Send>> {
    let mut buffered = std::io::BufReader::new(reader);
    let head = std::io::BufRead::fill_buf(&mut buffered)?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(buffered)))
    } else {
        Ok(Box::new(buffered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_look_like_convox_ones() {
        for _ in 0..100 {
            let id = new_build_id();
            assert!(is_build_id(&id), "{id}");
        }
        assert!(!is_build_id("B123"));
        assert!(!is_build_id("Babcdefghi"));
        assert!(!is_build_id("12"));
    }

    #[test]
    fn records_must_match_the_archived_images() {
        let build = Build {
            id: "BABCDEFGHI".into(),
            project: "shop".into(),
            environment: "main".into(),
            commit: "c".into(),
            apps: vec![BuildApp {
                name: "web".into(),
                image: Some("launchway/build/k1".into()),
                digest: Some("sha256:aa".into()),
                ..BuildApp::default()
            }],
            status: BuildStatus::Complete,
            release: None,
            started_at: 1,
            elapsed_ms: Some(1),
            description: String::new(),
            activity: None,
            imported_from: None,
        };
        let preview = |images: &[(&str, &str)]| ImportPreview {
            images: images
                .iter()
                .map(|(name, digest)| archive::Imported {
                    name: (*name).into(),
                    digest: (*digest).into(),
                })
                .collect(),
            annotations: BTreeMap::new(),
        };
        assert!(check_record(&build, &preview(&[("launchway/build/k1", "sha256:aa")])).is_ok());
        let wrong = check_record(&build, &preview(&[("launchway/build/k1", "sha256:bb")]));
        assert!(wrong.unwrap_err().contains("the archive holds sha256:bb"));
        let extra = check_record(
            &build,
            &preview(&[
                ("launchway/build/k1", "sha256:aa"),
                ("launchway/runtime/x", "sha256:cc"),
            ]),
        );
        assert!(extra.unwrap_err().contains("launchway/runtime/x"));
        assert!(check_record(&build, &preview(&[])).is_err());
    }
}
