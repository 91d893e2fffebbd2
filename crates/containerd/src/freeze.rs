//! Freezing a workspace into an image (tech-notes §2, the cheap path for a
//! stopped container): diff the writable snapshot against its parent into a
//! gzip layer, commit the snapshot itself under the new chain id (no
//! re-extraction), write config and manifest with the GC labels that keep
//! layer, config and snapshot alive, then point the image record at them.

use std::collections::HashMap;

use oci_spec::image::{HistoryBuilder, ImageConfiguration};

use crate::digest::chain_ids;
use crate::engine::random_id;
use crate::error::{EngineError, Result};
use crate::image::{Image, gzip_layer};
use crate::step::Workspace;

fn invalid(reason: impl Into<String>) -> EngineError {
    EngineError::Invalid {
        what: "frozen image",
        reason: reason.into(),
    }
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

        // Sorted, so the same build gives the same config bytes and digest.
        let comment = annotations
            .iter()
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
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

        let mut layers = base.manifest.layers().clone();
        layers.push(gzip_layer(&layer.digest, layer.size as u64)?);
        let image = engine
            .store_image(&lease, name, config, layers, annotations)
            .await?;
        engine.delete_lease(&lease, false).await?;
        Ok(image)
    }
}
