//! A root filesystem tar (what mmdebstrap writes) into a one-layer image:
//! the tar is hashed (diff id) and gzip-compressed on a blocking thread into
//! a scratch file, the compressed layer streamed into the content store,
//! then config, manifest and image record are written and the layer
//! unpacked — all under one lease, deleted synchronously if anything fails.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder, RootFsBuilder};
use tokio::io::AsyncReadExt;

use crate::digest::Hasher;
use crate::engine::{Engine, Lease};
use crate::error::{EngineError, Result};
use crate::image::{Image, LAYER_TAR, descriptor, gzip_layer, host_architecture};
use crate::step::Workspace;

/// What goes into the image config besides the layer.
#[derive(Clone, Debug, Default)]
pub struct ImageSettings {
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// Labels on the config and the image record (and manifest annotations).
    pub labels: HashMap<String, String>,
}

fn invalid(reason: impl Into<String>) -> EngineError {
    EngineError::Invalid {
        what: "root filesystem image",
        reason: reason.into(),
    }
}

/// Counts and hashes what passes through to the inner writer.
struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct Compressed {
    diff_id: String,
    digest: String,
    size: u64,
    file: tempfile::NamedTempFile,
}

fn compress(tar: &Path, scratch: &Path) -> std::io::Result<Compressed> {
    let mut input = std::fs::File::open(tar)?;
    let file = tempfile::NamedTempFile::new_in(scratch)?;
    let output = HashingWriter {
        inner: std::io::BufWriter::new(file.reopen()?),
        hasher: Hasher::default(),
        written: 0,
    };
    let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::fast());
    let mut uncompressed = Hasher::default();
    let mut buffer = vec![0u8; 1024 * 1024];
    loop {
        let read = input.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        uncompressed.update(&buffer[..read]);
        encoder.write_all(&buffer[..read])?;
    }
    let mut output = encoder.finish()?;
    output.flush()?;
    Ok(Compressed {
        diff_id: uncompressed.finish(),
        digest: output.hasher.finish(),
        size: output.written,
        file,
    })
}

impl Engine {
    /// Streams `file` (already hashed to `digest`) into the content store.
    async fn write_file_content(
        &self,
        lease: &Lease,
        file: std::fs::File,
        digest: &str,
        size: u64,
    ) -> Result<()> {
        let file = tokio::fs::File::from_std(file);
        let chunks = futures_util::stream::unfold(file, |mut file| async move {
            let mut buffer = vec![0u8; 1024 * 1024];
            match file.read(&mut buffer).await {
                Ok(0) => None,
                Ok(read) => {
                    buffer.truncate(read);
                    Some((Ok(buffer), file))
                }
                Err(error) => Some((Err(EngineError::io("reading a layer file", error)), file)),
            }
        });
        let mut chunks = Box::pin(chunks);
        self.write_content(lease, digest, size, &mut chunks, HashMap::new())
            .await?;
        Ok(())
    }

    /// Makes image `name` from the root filesystem in the tar at `tar`.
    pub async fn import_rootfs(
        &self,
        tar: &Path,
        name: &str,
        settings: &ImageSettings,
    ) -> Result<Image> {
        let scratch = self.scratch().to_path_buf();
        let source = tar.to_path_buf();
        let compressed = tokio::task::spawn_blocking(move || compress(&source, &scratch))
            .await
            .map_err(|error| invalid(error.to_string()))?
            .map_err(|error| EngineError::io(format!("compressing {}", tar.display()), error))?;
        let lease = self.create_lease("lw-rootfs").await?;
        match self
            .import_rootfs_in(&lease, &compressed, name, settings)
            .await
        {
            Ok(image) => {
                self.delete_lease(&lease, false).await?;
                Ok(image)
            }
            Err(error) => {
                let _ = self.delete_lease(&lease, true).await;
                Err(error)
            }
        }
    }

    async fn import_rootfs_in(
        &self,
        lease: &Lease,
        layer: &Compressed,
        name: &str,
        settings: &ImageSettings,
    ) -> Result<Image> {
        let file = layer
            .file
            .reopen()
            .map_err(|error| EngineError::io("reopening the compressed layer", error))?;
        self.write_file_content(lease, file, &layer.digest, layer.size)
            .await?;

        let oci = |error: oci_spec::OciSpecError| invalid(error.to_string());
        let mut config = ConfigBuilder::default()
            .env(settings.env.clone())
            .labels(settings.labels.clone());
        if let Some(dir) = &settings.working_dir {
            config = config.working_dir(dir.clone());
        }
        if let Some(user) = &settings.user {
            config = config.user(user.clone());
        }
        let architecture: oci_spec::image::Arch = host_architecture().into();
        let image_config = ImageConfigurationBuilder::default()
            .architecture(architecture)
            .os(oci_spec::image::Os::Linux)
            .config(config.build().map_err(oci)?)
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![layer.diff_id.clone()])
                    .build()
                    .map_err(oci)?,
            )
            .build()
            .map_err(oci)?;
        let layers = vec![gzip_layer(&layer.digest, layer.size)?];
        self.store_image(lease, name, image_config, layers, settings.labels.clone())
            .await
    }
}

fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut input = std::fs::File::open(path)?;
    let mut hasher = Hasher::default();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 1024 * 1024];
    loop {
        let read = input.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok((hasher.finish(), size))
}

impl Workspace {
    /// Unpacks the (uncompressed) tar at `tar` onto the workspace, as a layer
    /// would be: owners, modes and times as the tar says. The blob lives
    /// under the workspace's lease and goes with it.
    pub async fn apply_tar(&self, tar: &Path) -> Result<()> {
        let source = tar.to_path_buf();
        let (digest, size) = tokio::task::spawn_blocking(move || hash_file(&source))
            .await
            .map_err(|error| invalid(error.to_string()))?
            .map_err(|error| EngineError::io(format!("reading {}", tar.display()), error))?;
        let file = std::fs::File::open(tar)
            .map_err(|error| EngineError::io(format!("reading {}", tar.display()), error))?;
        self.engine
            .write_file_content(&self.lease, file, &digest, size)
            .await?;
        let mounts = self.engine.snapshot_mounts(&self.key).await?;
        self.engine
            .apply(&self.lease, descriptor(LAYER_TAR, &digest, size), mounts)
            .await?;
        Ok(())
    }
}
