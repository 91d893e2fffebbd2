//! Images as containerd stores them: a record pointing at a manifest (or an
//! index of manifests), a config listing the layers' diff ids, and the
//! unpacked snapshot chain. Resolving follows the OCI and Docker media types.

use std::collections::HashMap;

use containerd_client::types::Descriptor;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use crate::digest::chain_ids;
use crate::engine::{Engine, Lease, random_id};
use crate::error::{EngineError, Result};

pub const MANIFEST_OCI: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_OCI: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_OCI: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MANIFEST_DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const INDEX_DOCKER: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Label containerd's GC follows from a config blob to its unpacked snapshot.
pub(crate) fn snapshot_gc_label() -> String {
    format!(
        "containerd.io/gc.ref.snapshot.{}",
        crate::engine::SNAPSHOTTER
    )
}

/// Whether a media type names a single-platform manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == MANIFEST_OCI || media_type == MANIFEST_DOCKER
}

/// Whether a media type names an index (manifest list).
pub fn is_index(media_type: &str) -> bool {
    media_type == INDEX_OCI || media_type == INDEX_DOCKER
}

/// The GOARCH name of the machine this runs on.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// An image with its manifest and config read.
#[derive(Clone, Debug)]
pub struct Image {
    pub name: String,
    /// The descriptor of the single-platform manifest used.
    pub manifest_descriptor: Descriptor,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
    /// The chain id of the top layer: the committed snapshot to run from.
    pub chain_id: String,
    pub labels: HashMap<String, String>,
}

impl Image {
    pub fn diff_ids(&self) -> &[String] {
        self.config.rootfs().diff_ids()
    }

    /// The image's manifest digest (what identifies its content).
    pub fn digest(&self) -> &str {
        &self.manifest_descriptor.digest
    }

    /// `KEY=value` entries of the image's config.
    pub fn env(&self) -> Vec<String> {
        self.config
            .config()
            .as_ref()
            .and_then(|config| config.env().clone())
            .unwrap_or_default()
    }

    /// The manifest's annotations (commit, tree id, build key on frozen images).
    pub fn annotations(&self) -> HashMap<String, String> {
        self.manifest.annotations().clone().unwrap_or_default()
    }
}

pub(crate) fn descriptor(media_type: &str, digest: &str, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size: size as i64,
        annotations: HashMap::new(),
    }
}

fn invalid(image: &str, reason: impl Into<String>) -> EngineError {
    EngineError::Image {
        image: image.to_string(),
        reason: reason.into(),
    }
}

/// Picks the manifest for this host from an index: linux and the host's
/// architecture, or the only entry when there is one without a platform.
pub(crate) fn pick_manifest(
    index: &ImageIndex,
    image: &str,
) -> Result<oci_spec::image::Descriptor> {
    let arch = host_architecture();
    let manifests = index.manifests();
    let matching = manifests.iter().find(|descriptor| {
        descriptor.platform().as_ref().is_some_and(|platform| {
            platform.os().to_string() == "linux" && platform.architecture().to_string() == arch
        })
    });
    if let Some(found) = matching {
        return Ok(found.clone());
    }
    match manifests.as_slice() {
        [only] if only.platform().is_none() => Ok(only.clone()),
        [] => Err(invalid(image, "its index lists no manifests")),
        _ => Err(invalid(
            image,
            format!("no manifest for linux/{arch} in its index"),
        )),
    }
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    image: &str,
    what: &str,
) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|error| invalid(image, format!("its {what} is not valid: {error}")))
}

/// `value` as JSON with every object's keys sorted: labels and annotations
/// are hash maps, and the same image must always get the same bytes (and so
/// the same digest).
pub(crate) fn canonical_json<T: serde::Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    fn sort(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    serde_json::to_vec(&sort(serde_json::to_value(value)?))
}

/// A gzip layer descriptor for a manifest.
pub(crate) fn gzip_layer(digest: &str, size: u64) -> Result<oci_spec::image::Descriptor> {
    let parsed: oci_spec::image::Digest = digest
        .parse()
        .map_err(|error: oci_spec::OciSpecError| invalid(digest, error.to_string()))?;
    oci_spec::image::DescriptorBuilder::default()
        .media_type(oci_spec::image::MediaType::ImageLayerGzip)
        .digest(parsed)
        .size(size)
        .build()
        .map_err(|error| invalid(digest, error.to_string()))
}

impl Engine {
    /// Writes `config` and a manifest of `layers` (whose blobs are stored
    /// already) with the GC labels that keep layers, config and the unpacked
    /// snapshot alive, then points image `name` at them with `annotations` on
    /// the manifest and as record labels.
    pub(crate) async fn store_image(
        &self,
        lease: &Lease,
        name: &str,
        config: ImageConfiguration,
        layers: Vec<oci_spec::image::Descriptor>,
        annotations: HashMap<String, String>,
    ) -> Result<Image> {
        use oci_spec::image::{DescriptorBuilder, ImageManifestBuilder, MediaType, SCHEMA_VERSION};
        let fail = |error: &dyn std::fmt::Display| invalid(name, error.to_string());
        let chain_id = chain_ids(config.rootfs().diff_ids())
            .pop()
            .ok_or_else(|| invalid(name, "it has no layers"))?;
        let config_bytes = canonical_json(&config).map_err(|e| fail(&e))?;
        let config_labels = HashMap::from([(snapshot_gc_label(), chain_id.clone())]);
        let config_blob = self
            .write_small_blob(lease, config_bytes, config_labels)
            .await?;
        let config_digest: oci_spec::image::Digest = config_blob
            .digest
            .parse()
            .map_err(|e: oci_spec::OciSpecError| fail(&e))?;

        let mut manifest_labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            config_blob.digest.clone(),
        )]);
        for (i, layer) in layers.iter().enumerate() {
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest().to_string(),
            );
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageManifest)
            .config(
                DescriptorBuilder::default()
                    .media_type(MediaType::ImageConfig)
                    .digest(config_digest)
                    .size(config_blob.size)
                    .build()
                    .map_err(|e| fail(&e))?,
            )
            .layers(layers)
            .annotations(annotations.clone())
            .build()
            .map_err(|e| fail(&e))?;
        let manifest_bytes = canonical_json(&manifest).map_err(|e| fail(&e))?;
        let manifest_blob = self
            .write_small_blob(lease, manifest_bytes, manifest_labels)
            .await?;
        let target = descriptor(MANIFEST_OCI, &manifest_blob.digest, manifest_blob.size);
        let image = Image {
            name: name.to_string(),
            manifest_descriptor: target.clone(),
            manifest,
            config,
            chain_id,
            labels: annotations.clone(),
        };
        self.unpack(lease, &image).await?;
        self.put_image(lease, name, target, annotations).await?;
        Ok(image)
    }

    /// Names `name` an image whose manifest (`manifest_digest`, of type
    /// `media_type`), config and layers are all in the content store under
    /// `lease` already (fetched from a registry): checks that they fit
    /// together, labels them so containerd's collector keeps them with the
    /// image, unpacks every layer (checking it against its diff id) and only
    /// then writes the image record, with the manifest's annotations as its
    /// labels. On an error nothing is named; the caller drops the lease.
    pub async fn adopt_manifest(
        &self,
        lease: &Lease,
        name: &str,
        media_type: &str,
        manifest_digest: &str,
    ) -> Result<Image> {
        if !is_manifest(media_type) {
            return Err(invalid(
                name,
                format!("unsupported media type {media_type}"),
            ));
        }
        let manifest_bytes = self.read_small_blob(manifest_digest).await?;
        let manifest: ImageManifest = parse_json(&manifest_bytes, name, "manifest")?;
        let config_digest = manifest.config().digest().to_string();
        let config: ImageConfiguration =
            parse_json(&self.read_small_blob(&config_digest).await?, name, "config")?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() || diff_ids.is_empty() {
            return Err(invalid(
                name,
                format!(
                    "its config lists {} layers and its manifest {}",
                    diff_ids.len(),
                    manifest.layers().len()
                ),
            ));
        }
        let mut manifest_labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            config_digest.clone(),
        )]);
        for (i, layer) in manifest.layers().iter().enumerate() {
            let info = self.content_info(layer.digest().as_ref()).await?;
            if info.size < 0 || info.size as u64 != layer.size() {
                return Err(invalid(
                    name,
                    format!(
                        "layer {} is {} bytes, its descriptor says {}",
                        layer.digest(),
                        info.size,
                        layer.size()
                    ),
                ));
            }
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest().to_string(),
            );
        }
        let chain_id = chain_ids(diff_ids)
            .pop()
            .ok_or_else(|| invalid(name, "it has no layers"))?;
        self.label_content(
            &config_digest,
            &HashMap::from([(snapshot_gc_label(), chain_id.clone())]),
        )
        .await?;
        self.label_content(manifest_digest, &manifest_labels)
            .await?;
        let annotations = manifest.annotations().clone().unwrap_or_default();
        let target = descriptor(media_type, manifest_digest, manifest_bytes.len() as u64);
        let image = Image {
            name: name.to_string(),
            manifest_descriptor: target.clone(),
            manifest,
            config,
            chain_id,
            labels: annotations.clone(),
        };
        self.unpack(lease, &image).await?;
        self.put_image(lease, name, target, annotations).await?;
        Ok(image)
    }

    /// Reads image `name`: its manifest for this host and its config.
    pub async fn image(&self, name: &str) -> Result<Image> {
        let record = self.get_image(name).await?;
        let mut target = record
            .target
            .clone()
            .ok_or_else(|| invalid(name, "its record has no target"))?;
        // An index may nest another index; two levels is as deep as real images go.
        for _ in 0..3 {
            if !is_index(&target.media_type) {
                break;
            }
            let index: ImageIndex =
                parse_json(&self.read_small_blob(&target.digest).await?, name, "index")?;
            let chosen = pick_manifest(&index, name)?;
            target = descriptor(
                chosen.media_type().as_ref(),
                chosen.digest().as_ref(),
                chosen.size(),
            );
        }
        if !is_manifest(&target.media_type) {
            return Err(invalid(
                name,
                format!("unsupported media type {}", target.media_type),
            ));
        }
        let manifest: ImageManifest = parse_json(
            &self.read_small_blob(&target.digest).await?,
            name,
            "manifest",
        )?;
        let config: ImageConfiguration = parse_json(
            &self
                .read_small_blob(manifest.config().digest().as_ref())
                .await?,
            name,
            "config",
        )?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(invalid(
                name,
                format!(
                    "its config lists {} layers and its manifest {}",
                    diff_ids.len(),
                    manifest.layers().len()
                ),
            ));
        }
        let chain_id = chain_ids(diff_ids)
            .pop()
            .ok_or_else(|| invalid(name, "it has no layers"))?;
        Ok(Image {
            name: name.to_string(),
            manifest_descriptor: target,
            manifest,
            config,
            chain_id,
            labels: record.labels,
        })
    }

    /// Makes sure every layer of `image` is unpacked into a committed snapshot
    /// named by its chain id (the snapshot a step runs on).
    pub async fn unpack(&self, lease: &Lease, image: &Image) -> Result<()> {
        let chain = chain_ids(image.diff_ids());
        let mut parent = String::new();
        for (layer, (chain_id, diff_id)) in image
            .manifest
            .layers()
            .iter()
            .zip(chain.iter().zip(image.diff_ids()))
        {
            if !self.snapshot_exists(chain_id).await? {
                let key = random_id("lw-extract");
                let mounts = self.prepare_snapshot(lease, &key, &parent).await?;
                let layer_descriptor = descriptor(
                    layer.media_type().as_ref(),
                    layer.digest().as_ref(),
                    layer.size(),
                );
                let unpacked = async {
                    let applied = self.apply(lease, layer_descriptor, mounts).await?;
                    if &applied != diff_id {
                        return Err(invalid(
                            &image.name,
                            format!(
                                "layer {} unpacks to {applied}, its config says {diff_id}",
                                layer.digest()
                            ),
                        ));
                    }
                    match self
                        .commit_snapshot(lease, chain_id, &key, HashMap::new())
                        .await
                    {
                        Err(error) if error.is_already_exists() => self.remove_snapshot(&key).await,
                        other => other,
                    }
                }
                .await;
                if unpacked.is_err() {
                    let _ = self.remove_snapshot(&key).await;
                }
                unpacked?;
            }
            parent = chain_id.clone();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = serde_json::json!({"b": {"z": 1, "a": [{"y": 2, "x": 3}]}, "a": 0});
        let bytes = canonical_json(&value).expect("serializes");
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"a":0,"b":{"a":[{"x":3,"y":2}],"z":1}}"#
        );
    }
}
