//! The daemon's side of the image plane (`[registry]`): opening the
//! registry at start-up, publishing what builds make, reusing what the
//! registry holds, and fetching a release's images before a deploy holds
//! any request.
//!
//! With a registry set, it is where builds live: every build a release names
//! is published there (`build-<key>`), a build key the registry knows is
//! pulled instead of rebuilt, and a release whose images the local gc took
//! is pulled back by the digest its build record names (never by a tag, so
//! nothing the registry says can change what a release runs). A registry
//! that does not answer fails the build before anything is built, so the
//! serving release is untouched. Without one, images live only in this
//! host's containerd, as before.

use launchway_build::plane::{Plane, build_tag};
use launchway_build::{BuildError, KEY_ANNOTATION, build_image_name};
use launchway_containerd::Image;
use launchway_deploy::DeploySpec;
use launchway_registry::{Registry, RegistryConfig};
use launchway_store::Release;
use tokio::sync::mpsc;

use crate::Daemon;
use crate::activity::Ended;
use crate::settings::RegistrySettings;

/// The plane `[registry]` describes, or `None` when `url` is empty. Fails on
/// settings that cannot work (a bad URL, an unreadable password or CA file),
/// not on a registry that does not answer yet.
pub(crate) fn open_plane(
    settings: &RegistrySettings,
    instance_id: &str,
) -> Result<Option<Plane>, String> {
    if settings.url.trim().is_empty() {
        return Ok(None);
    }
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path)
            .map_err(|error| format!("[registry] {what} {}: {error}", path.display()))
    };
    let password = match settings.password_file.as_os_str().is_empty() {
        true => None,
        false => {
            let bytes = read(&settings.password_file, "password_file")?;
            Some(
                String::from_utf8_lossy(&bytes)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            )
        }
    };
    let ca_pem = match settings.ca_file.as_os_str().is_empty() {
        true => None,
        false => Some(read(&settings.ca_file, "ca_file")?),
    };
    let repository = match settings.repository.trim() {
        "" => format!("launchway/{}", &instance_id[..instance_id.len().min(12)]),
        given => given.to_owned(),
    };
    let registry = Registry::new(RegistryConfig {
        url: settings.url.trim().to_owned(),
        repository,
        username: Some(settings.username.clone()).filter(|user| !user.is_empty()),
        password,
        ca_pem,
    })
    .map_err(|error| format!("[registry]: {error}"))?;
    Ok(Some(Plane::new(registry)))
}

/// A registry failure before the build: nothing changed.
fn registry_down(error: BuildError) -> BuildError {
    BuildError::Config(format!(
        "{error}: nothing was built or deployed; the serving release is unchanged"
    ))
}

impl Daemon {
    /// Checks that the registry (when there is one) answers, before a build
    /// starts anything.
    pub(crate) async fn check_registry(&self) -> Result<(), BuildError> {
        match &self.plane {
            Some(plane) => plane.check().await.map_err(registry_down),
            None => Ok(()),
        }
    }

    /// The build under `key` from the registry, fetched into containerd, if
    /// the registry has it. Its annotations must name `key`.
    pub(crate) async fn registry_build(
        &self,
        key: &str,
        log: &mpsc::Sender<String>,
    ) -> Result<Option<Image>, BuildError> {
        let Some(plane) = &self.plane else {
            return Ok(None);
        };
        let Some(digest) = plane.find(&build_tag(key)).await? else {
            return Ok(None);
        };
        let _ = log
            .send(format!(
                "    Pulling the build from the registry ({digest})"
            ))
            .await;
        let (image, fetched) = plane
            .pull(&self.engine, &build_image_name(key), &digest)
            .await?;
        if image.annotations().get(KEY_ANNOTATION).map(String::as_str) != Some(key) {
            let _ = self.engine.delete_image(&image.name).await;
            return Err(BuildError::Config(format!(
                "the registry's build-{key} ({digest}) is not a build of that key: refused"
            )));
        }
        tracing::info!(key, %digest, fetched, "build pulled from the registry");
        Ok(Some(image))
    }

    /// Publishes a build's image as `build-<key>` unless the registry has
    /// that tag already (`in_registry` says how much of it is there).
    pub(crate) async fn publish_build(
        &self,
        key: &str,
        image: &Image,
        in_registry: crate::builds::Published,
        log: &mpsc::Sender<String>,
    ) -> Result<(), BuildError> {
        use crate::builds::Published;
        let Some(plane) = &self.plane else {
            return Ok(());
        };
        let tag = build_tag(key);
        match in_registry {
            Published::Tagged => Ok(()),
            // The manifest's bytes are here: naming it is one request.
            Published::Pushed => {
                let bytes = self.engine.read_small_blob(image.digest()).await?;
                plane
                    .registry()
                    .manifest_put(
                        &tag,
                        &image.manifest_descriptor.media_type,
                        bytes::Bytes::from(bytes),
                    )
                    .await?;
                Ok(())
            }
            Published::No => {
                if plane.find(&tag).await?.as_deref() == Some(image.digest()) {
                    return Ok(());
                }
                let sent = plane.publish(&self.engine, image, &tag).await?;
                let _ = log
                    .send(format!(
                        "    Published to the registry ({}, {} sent)",
                        image.digest(),
                        human_bytes(sent)
                    ))
                    .await;
                Ok(())
            }
        }
    }

    /// Makes sure every image of `release` is in containerd: one the local
    /// gc removed is pulled back from the registry by the digest its build
    /// record names. Runs before the deploy holds any request.
    pub(crate) async fn ensure_release_images(
        &self,
        release: &Release,
        spec: &DeploySpec,
    ) -> Result<(), Ended> {
        for app in &spec.apps {
            match self.engine.image(&app.image).await {
                Ok(_) => continue,
                Err(error) if error.is_not_found() => {}
                Err(error) => {
                    return Err(Ended::Failed(format!(
                        "the image of app '{}' cannot be read: {error}",
                        app.name
                    )));
                }
            }
            let gone = || {
                Ended::Failed(format!(
                    "the image of app '{}' in release {} (build {}) was garbage-collected; build the commit again with `launchway deploy`",
                    app.name, release.id, release.build
                ))
            };
            let Some(plane) = &self.plane else {
                return Err(gone());
            };
            let digest = self
                .store
                .build(&release.build)
                .ok()
                .flatten()
                .and_then(|build| {
                    build
                        .apps
                        .into_iter()
                        .find(|built| built.image.as_deref() == Some(app.image.as_str()))
                        .and_then(|built| built.digest)
                })
                .ok_or_else(gone)?;
            plane
                .pull(&self.engine, &app.image, &digest)
                .await
                .map_err(|error| {
                    Ended::Failed(format!(
                        "the image of app '{}' in release {} is gone from this host and cannot be fetched from the registry: {error}; nothing was deployed",
                        app.name, release.id
                    ))
                })?;
            tracing::info!(image = %app.image, %digest, "release image pulled from the registry");
        }
        Ok(())
    }
}

impl Daemon {
    /// Untags, in the registry, the builds and steps no build record names
    /// any more (retention removed their records), so the repository
    /// follows the history this daemon keeps. A build tag names an image
    /// no other key can have (its annotations hold the key); a step tag may
    /// share its digest with another, which then goes too: steps are a
    /// cache, and a missing one is rebuilt. The blobs themselves are freed
    /// by the registry's own offline `garbage-collect`. Returns the tags
    /// removed.
    pub(crate) async fn collect_registry_garbage(&self) -> Result<Vec<String>, String> {
        let Some(plane) = &self.plane else {
            return Ok(Vec::new());
        };
        let registry = plane.registry();
        let _exclusive = self.gc_lock.write().await;
        let builds = self.store.builds(None).map_err(|e| e.to_string())?;
        let mut named = std::collections::BTreeSet::new();
        for build in &builds {
            for app in &build.apps {
                if let Some(key) = &app.build_key {
                    named.insert(build_tag(key));
                }
                for step in &app.steps {
                    if let Some(key) = step.strip_prefix(launchway_build::STEP_IMAGE_PREFIX) {
                        named.insert(launchway_build::plane::step_tag(key));
                    }
                }
            }
        }
        let tags = registry.tags().await.map_err(|e| e.to_string())?;
        let mut removed = Vec::new();
        for tag in tags {
            let ours = tag.starts_with("build-") || tag.starts_with("step-");
            if !ours || named.contains(&tag) {
                continue;
            }
            let Some(digest) = registry
                .manifest_digest(&tag)
                .await
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            registry
                .delete_manifest(&digest)
                .await
                .map_err(|e| e.to_string())?;
            removed.push(tag);
        }
        Ok(removed)
    }
}

/// `12.3 MB`, `512 B`.
fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_url_means_no_plane_and_bad_files_are_named() {
        let off = RegistrySettings::default();
        assert!(matches!(open_plane(&off, "0123456789abcdef"), Ok(None)));
        let missing = RegistrySettings {
            url: "https://127.0.0.1:5000".into(),
            password_file: "/nonexistent/password".into(),
            ..RegistrySettings::default()
        };
        let error = open_plane(&missing, "0123456789abcdef")
            .err()
            .unwrap_or_default();
        assert!(
            error.contains("password_file /nonexistent/password"),
            "{error}"
        );
        let plane = open_plane(
            &RegistrySettings {
                url: "https://127.0.0.1:5000".into(),
                ..RegistrySettings::default()
            },
            "0123456789abcdef",
        );
        let repository = plane
            .ok()
            .flatten()
            .map(|plane| plane.registry().repository().to_owned());
        assert_eq!(repository.as_deref(), Some("launchway/0123456789ab"));
    }
}
