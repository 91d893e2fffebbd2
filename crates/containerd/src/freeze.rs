//! Freezing a workspace into an image (tech-notes §2, the cheap path for a
//! stopped container): diff the writable snapshot against its parent into a
//! gzip layer, commit the snapshot itself under the new chain id (no
//! re-extraction), write config and manifest with the GC labels that keep
//! layer, config and snapshot alive, then point the image record at them.

use std::collections::HashMap;

use oci_spec::image::{
    DescriptorBuilder, Digest, HistoryBuilder, ImageConfiguration, ImageManifestBuilder, MediaType,
    SCHEMA_VERSION,
};

use crate::digest::chain_ids;
use crate::engine::random_id;
use crate::error::{EngineError, Result};
use crate::image::{CONFIG_OCI, Image, LAYER_GZIP, MANIFEST_OCI, descriptor, snapshot_gc_label};
use crate::step::Workspace;

fn invalid(reason: impl Into<String>) -> EngineError {
    EngineError::Invalid {
        what: "frozen image",
        reason: reason.into(),
    }
}

fn digest(value: &str) -> Result<Digest> {
    value
        .parse()
        .map_err(|error: oci_spec::OciSpecError| invalid(error.to_string()))
}

/// The base image's config with one more layer on top.
fn config_with_layer(
    base: &ImageConfiguration,
    diff_id: &str,
    comment: &str,
) -> Result<ImageConfiguration> {
    let mut config = base.clone();
    let mut rootfs = config.rootfs().clone();
    let mut diff_ids = rootfs.diff_ids().clone();
    diff_ids.push(diff_id.to_string());
    rootfs.set_diff_ids(diff_ids);
    config.set_rootfs(rootfs);
    let mut history = config.history().clone().unwrap_or_default();
    history.push(
        HistoryBuilder::default()
            .created_by("launchway freeze".to_string())
            .comment(comment.to_string())
            .build()
            .map_err(|error| invalid(error.to_string()))?,
    );
    config.set_history(Some(history));
    Ok(config)
}

impl Workspace {
    /// Commits the workspace's filesystem into image `name` (replacing any
    /// image of that name) with `annotations` on its manifest and as labels
    /// on its record. The workspace is used up.
    pub async fn freeze(
        mut self,
        name: &str,
        annotations: HashMap<String, String>,
    ) -> Result<Image> {
        let engine = self.engine.clone();
        let lease = self.lease.clone();
        let base = self.image.clone();

        // The diff needs the active snapshot and a view of its parent.
        let view_key = random_id("lw-freeze-view");
        let lower = engine
            .view_snapshot(&lease, &view_key, &base.chain_id)
            .await?;
        let upper = engine.snapshot_mounts(&self.key).await;
        let diffed = match upper {
            Ok(upper) => engine.diff(&lease, lower, upper).await,
            Err(error) => Err(error),
        };
        let _ = engine.remove_snapshot(&view_key).await;
        let (layer, diff_id) = diffed?;

        let comment = annotations
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(" ");
        let config = config_with_layer(&base.config, &diff_id, &comment)?;
        let chain_id = chain_ids(config.rootfs().diff_ids())
            .pop()
            .ok_or_else(|| invalid("no layers"))?;

        // The build's upper directory becomes the image's snapshot as it is.
        match engine
            .commit_snapshot(&lease, &chain_id, &self.key, HashMap::new())
            .await
        {
            Ok(()) => {}
            // The same change was frozen before: keep that snapshot.
            Err(error) if error.is_already_exists() => engine.remove_snapshot(&self.key).await?,
            Err(error) => return Err(error),
        }
        self.finished = true;

        let config_bytes =
            serde_json::to_vec(&config).map_err(|error| invalid(error.to_string()))?;
        let mut config_labels = HashMap::new();
        config_labels.insert(snapshot_gc_label(), chain_id.clone());
        let config_blob = engine
            .write_small_blob(&lease, config_bytes, config_labels)
            .await?;

        let mut layers = base.manifest.layers().clone();
        layers.push(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageLayerGzip)
                .digest(digest(&layer.digest)?)
                .size(layer.size as u64)
                .build()
                .map_err(|error| invalid(error.to_string()))?,
        );
        let mut manifest_labels = HashMap::new();
        manifest_labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            config_blob.digest.clone(),
        );
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
                    .digest(digest(&config_blob.digest)?)
                    .size(config_blob.size)
                    .build()
                    .map_err(|error| invalid(error.to_string()))?,
            )
            .layers(layers)
            .annotations(annotations.clone())
            .build()
            .map_err(|error| invalid(error.to_string()))?;
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|error| invalid(error.to_string()))?;
        let manifest_blob = engine
            .write_small_blob(&lease, manifest_bytes, manifest_labels)
            .await?;
        debug_assert_eq!(LAYER_GZIP, MediaType::ImageLayerGzip.to_string());
        debug_assert_eq!(CONFIG_OCI, MediaType::ImageConfig.to_string());

        let target = descriptor(MANIFEST_OCI, &manifest_blob.digest, manifest_blob.size);
        engine
            .put_image(&lease, name, target.clone(), annotations.clone())
            .await?;
        engine.delete_lease(&lease, false).await?;
        Ok(Image {
            name: name.to_string(),
            manifest_descriptor: target,
            manifest,
            config,
            chain_id,
            labels: annotations,
        })
    }
}
