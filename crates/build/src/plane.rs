//! The image plane: frozen images to and from an OCI distribution registry,
//! by digest.
//!
//! - **Push**: the config and every layer are read from containerd's content
//!   store and streamed to the registry, only those it lacks; then the
//!   manifest's bytes go unchanged, by digest, so the registry's digest is
//!   containerd's. Naming (a tag) is a separate, later step: whoever checked
//!   the image names it.
//! - **Pull**: the manifest is fetched by digest and its hash checked; every
//!   blob containerd lacks is streamed into the content store, hashed on the
//!   way in (a mismatch aborts the ingest before containerd commits it);
//!   then the image is adopted ([`Engine::adopt_manifest`]: layers unpacked
//!   and checked against their diff ids) and named. All of it runs under one
//!   lease, deleted synchronously on any failure, so a refused pull leaves
//!   nothing behind, as an archive import does.
//!
//! Tags in the registry (one repository per daemon): `build-<key>`,
//! `step-<key>`.

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::StreamExt as _;
use launchway_containerd::{Engine, EngineError, Image};
use launchway_registry::{Registry, RegistryError};

use crate::BuildError;

/// The registry tag of the build under `key`.
pub fn build_tag(key: &str) -> String {
    format!("build-{key}")
}

/// The registry tag of the step image under `key`.
pub fn step_tag(key: &str) -> String {
    format!("step-{key}")
}

/// Moves images between one containerd and one registry repository.
#[derive(Clone, Debug)]
pub struct Plane {
    registry: Registry,
}

impl Plane {
    /// The plane of `registry`.
    pub fn new(registry: Registry) -> Plane {
        Plane { registry }
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether the registry answers and takes our credentials.
    pub async fn check(&self) -> Result<(), BuildError> {
        Ok(self.registry.ping().await?)
    }

    /// The digest `tag` names in the registry, if any.
    pub async fn find(&self, tag: &str) -> Result<Option<String>, BuildError> {
        Ok(self.registry.manifest_digest(tag).await?)
    }

    /// Sends `image` (blobs the registry lacks, then its manifest by digest).
    /// Returns how many bytes of blobs were sent.
    pub async fn push(&self, engine: &Engine, image: &Image) -> Result<u64, BuildError> {
        let mut blobs = vec![(
            image.manifest.config().digest().to_string(),
            image.manifest.config().size(),
        )];
        blobs.extend(
            image
                .manifest
                .layers()
                .iter()
                .map(|layer| (layer.digest().to_string(), layer.size())),
        );
        let mut sent = 0;
        for (digest, size) in blobs {
            if self.registry.blob_exists(&digest, size).await? {
                continue;
            }
            let stream = engine.read_content(&digest).await?;
            let body = stream.map(|chunk| {
                chunk
                    .map(Bytes::from)
                    .map_err(|error| std::io::Error::other(error.to_string()))
            });
            self.registry
                .push_blob(&digest, size, Box::pin(body))
                .await?;
            sent += size;
        }
        let bytes = engine.read_small_blob(image.digest()).await?;
        let pushed = self
            .registry
            .manifest_put(
                image.digest(),
                &image.manifest_descriptor.media_type,
                Bytes::from(bytes),
            )
            .await?;
        if pushed != image.digest() {
            return Err(RegistryError::DigestMismatch {
                expected: image.digest().to_owned(),
                actual: pushed,
            }
            .into());
        }
        Ok(sent)
    }

    /// Names the manifest `digest` (in the registry already) `tag`.
    pub async fn tag(&self, digest: &str, tag: &str) -> Result<(), BuildError> {
        let manifest = self.registry.manifest_get(digest).await?;
        self.registry
            .manifest_put(tag, &manifest.media_type, manifest.bytes)
            .await?;
        Ok(())
    }

    /// Pushes `image` and names it `tag`.
    pub async fn publish(
        &self,
        engine: &Engine,
        image: &Image,
        tag: &str,
    ) -> Result<u64, BuildError> {
        let sent = self.push(engine, image).await?;
        let bytes = engine.read_small_blob(image.digest()).await?;
        self.registry
            .manifest_put(
                tag,
                &image.manifest_descriptor.media_type,
                Bytes::from(bytes),
            )
            .await?;
        Ok(sent)
    }

    /// Fetches the image `digest` into containerd and names it `name`.
    /// Returns the image and how many bytes of blobs were fetched.
    pub async fn pull(
        &self,
        engine: &Engine,
        name: &str,
        digest: &str,
    ) -> Result<(Image, u64), BuildError> {
        let (image, fetched, _) = self.pull_timed(engine, name, digest).await?;
        Ok((image, fetched))
    }

    /// As [`Plane::pull`], also saying how long its phases took (for the
    /// benchmark).
    pub async fn pull_timed(
        &self,
        engine: &Engine,
        name: &str,
        digest: &str,
    ) -> Result<(Image, u64, PullTimes), BuildError> {
        let started = std::time::Instant::now();
        let manifest = self.registry.manifest_get(digest).await?;
        let lease = engine.create_lease("lw-pull").await?;
        let outcome = self
            .pull_in(engine, &lease, name, digest, manifest, started)
            .await;
        match &outcome {
            Ok(_) => engine.delete_lease(&lease, false).await?,
            Err(_) => {
                // Collect what the lease alone held before answering.
                if let Err(error) = engine.delete_lease(&lease, true).await {
                    tracing::warn!(%error, "cannot drop a failed pull's lease");
                }
            }
        }
        outcome
    }

    async fn pull_in(
        &self,
        engine: &Engine,
        lease: &launchway_containerd::Lease,
        name: &str,
        digest: &str,
        manifest: launchway_registry::Manifest,
        started: std::time::Instant,
    ) -> Result<(Image, u64, PullTimes), BuildError> {
        let blobs = manifest_blobs(&manifest.bytes).map_err(|reason| {
            BuildError::Registry(RegistryError::Invalid {
                url: self.registry.url().to_owned(),
                message: format!("the manifest {digest}: {reason}"),
            })
        })?;
        engine
            .write_small_blob(lease, manifest.bytes.to_vec(), HashMap::new())
            .await?;
        let mut fetched = 0;
        for (blob, size) in blobs {
            let present = match engine.content_info(&blob).await {
                Ok(info) => info.size >= 0 && info.size as u64 == size,
                Err(error) if error.is_not_found() => false,
                Err(error) => return Err(error.into()),
            };
            if present {
                engine.hold_content(lease, &blob).await?;
                continue;
            }
            let (_, stream) = self.registry.blob_get(&blob).await?;
            let chunks = stream.map(|chunk| {
                chunk
                    .map(|bytes| bytes.to_vec())
                    .map_err(|error| EngineError::Archive {
                        reason: error.to_string(),
                    })
            });
            engine
                .write_content(lease, &blob, size, chunks, HashMap::new())
                .await
                .map_err(|error| match error {
                    EngineError::Archive { reason } => {
                        BuildError::Registry(RegistryError::Invalid {
                            url: self.registry.url().to_owned(),
                            message: format!("refused blob {blob}: {reason}"),
                        })
                    }
                    other => other.into(),
                })?;
            fetched += size;
        }
        let fetch = started.elapsed();
        let image = engine
            .adopt_manifest(lease, name, &manifest.media_type, digest)
            .await?;
        let adopt = started.elapsed().saturating_sub(fetch);
        Ok((image, fetched, PullTimes { fetch, adopt }))
    }
}

/// How long a pull's phases took.
#[derive(Clone, Copy, Debug, Default)]
pub struct PullTimes {
    /// The manifest and every missing blob into the content store, hashed.
    pub fetch: std::time::Duration,
    /// Adopting the image: layers unpacked and checked, the image named.
    pub adopt: std::time::Duration,
}

/// The config and layer blobs (digest, size) a manifest names.
fn manifest_blobs(bytes: &[u8]) -> Result<Vec<(String, u64)>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|error| format!("not JSON: {error}"))?;
    let descriptor = |entry: &serde_json::Value| -> Result<(String, u64), String> {
        let digest = entry
            .get("digest")
            .and_then(serde_json::Value::as_str)
            .filter(|digest| launchway_containerd::digest::is_sha256_digest(digest))
            .ok_or("a descriptor without a sha256 digest")?;
        let size = entry
            .get("size")
            .and_then(serde_json::Value::as_u64)
            .ok_or("a descriptor without a size")?;
        Ok((digest.to_owned(), size))
    };
    let mut blobs = vec![descriptor(value.get("config").ok_or("no config")?)?];
    let layers = value
        .get("layers")
        .and_then(serde_json::Value::as_array)
        .ok_or("no layers")?;
    if layers.is_empty() {
        return Err("no layers".into());
    }
    for layer in layers {
        blobs.push(descriptor(layer)?);
    }
    Ok(blobs)
}

#[cfg(test)]
mod tests {
    use super::manifest_blobs;

    #[test]
    fn a_manifest_names_its_config_and_layers_or_is_refused() {
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let good = serde_json::json!({
            "schemaVersion": 2,
            "config": {"digest": digest('a'), "size": 10},
            "layers": [{"digest": digest('b'), "size": 20}],
        });
        let blobs = manifest_blobs(&serde_json::to_vec(&good).unwrap_or_default());
        assert_eq!(blobs, Ok(vec![(digest('a'), 10), (digest('b'), 20)]));
        for bad in [
            serde_json::json!({"config": {"digest": "md5:x", "size": 1}, "layers": [{"digest": digest('b'), "size": 1}]}),
            serde_json::json!({"config": {"digest": digest('a'), "size": 1}, "layers": []}),
            serde_json::json!({"config": {"digest": digest('a')}, "layers": [{"digest": digest('b'), "size": 1}]}),
            serde_json::json!({"layers": [{"digest": digest('b'), "size": 1}]}),
        ] {
            assert!(
                manifest_blobs(&serde_json::to_vec(&bad).unwrap_or_default()).is_err(),
                "{bad}"
            );
        }
        assert!(manifest_blobs(b"garbage").is_err());
    }
}
