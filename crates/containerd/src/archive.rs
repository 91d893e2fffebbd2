//! OCI image-layout archives (`oci-layout`, `index.json`, `blobs/sha256/…`
//! in a tar), streamed both ways: an export is written blob by blob as
//! containerd reads it out; an import is read entry by entry and each blob
//! goes straight into a content write. Neither ever holds an archive, or a
//! layer, in memory.
//!
//! An import runs under one lease. Every blob is hashed on the way in and
//! must match its name; every blob the index needs must be present with the
//! size its descriptor says; every layer must unpack to its config's diff id.
//! On the first failure the lease is deleted synchronously, so the blobs and
//! snapshots written so far are collected before the error is returned: a
//! refused archive leaves the store as it was. Image records are only written
//! once everything checked out.
//!
//! Accepted: `ctr images export`, skopeo `oci-archive:` and `docker save`
//! (Docker 25+, which writes an OCI layout) archives; entries may come in any
//! order. Indexes are followed to this host's linux manifest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;

use containerd_client::types::Descriptor;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::digest::{chain_ids, is_sha256_digest};
use crate::engine::{Engine, Lease, MAX_JSON_BLOB};
use crate::error::{EngineError, Result};
use crate::image::{
    descriptor, is_index, is_manifest, parse_json, pick_manifest, snapshot_gc_label,
};

/// Annotation containerd puts the full image name in.
pub const NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation for an image's reference (often just its tag).
pub const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

const READ_CHUNK: usize = 1024 * 1024;

fn refused(reason: impl Into<String>) -> EngineError {
    EngineError::Archive {
        reason: reason.into(),
    }
}

/// What the reading thread hands over.
enum Piece {
    Blob { digest: String, size: u64 },
    Data(Vec<u8>),
    EndOfBlob,
    Index(Vec<u8>),
    Failed(String),
}

/// Reads the tar on a blocking thread, sending entries over `pieces`.
fn read_archive<R: Read>(reader: R, pieces: &mpsc::Sender<Piece>) {
    let send = |piece| pieces.blocking_send(piece).is_ok();
    let mut archive = tar::Archive::new(reader);
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(error) => {
            send(Piece::Failed(format!("not a tar archive: {error}")));
            return;
        }
    };
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                send(Piece::Failed(format!(
                    "the tar is damaged or truncated: {error}"
                )));
                return;
            }
        };
        let path = match entry.path() {
            Ok(path) => path.to_string_lossy().trim_start_matches("./").to_string(),
            Err(error) => {
                send(Piece::Failed(format!(
                    "an entry has an unreadable name: {error}"
                )));
                return;
            }
        };
        let regular = entry.header().entry_type().is_file();
        if path == "index.json" {
            if !regular || entry.size() > MAX_JSON_BLOB {
                send(Piece::Failed(
                    "index.json is not a small regular file".into(),
                ));
                return;
            }
            let mut bytes = Vec::new();
            if let Err(error) = entry.read_to_end(&mut bytes) {
                send(Piece::Failed(format!("reading index.json: {error}")));
                return;
            }
            if !send(Piece::Index(bytes)) {
                return;
            }
        } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            if hex.is_empty() {
                continue;
            }
            let digest = format!("sha256:{hex}");
            if !is_sha256_digest(&digest) {
                send(Piece::Failed(format!(
                    "'{path}' is not named by a sha256 digest"
                )));
                return;
            }
            if !regular {
                send(Piece::Failed(format!("'{path}' is not a regular file")));
                return;
            }
            if !send(Piece::Blob {
                digest,
                size: entry.size(),
            }) {
                return;
            }
            let mut buffer = vec![0u8; READ_CHUNK];
            loop {
                match entry.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(read) => {
                        if !send(Piece::Data(buffer[..read].to_vec())) {
                            return;
                        }
                    }
                    Err(error) => {
                        send(Piece::Failed(format!(
                            "the tar is damaged or truncated in {path}: {error}"
                        )));
                        return;
                    }
                }
            }
            if !send(Piece::EndOfBlob) {
                return;
            }
        }
        // oci-layout, manifest.json (docker), repositories, directories: not needed.
    }
    // Read to the end so that a compressed stream's own check (gzip's CRC and
    // length) runs before anything is named; what follows the tar is padding.
    let mut rest = archive.into_inner().take(MAX_TRAILER + 1);
    match std::io::copy(&mut rest, &mut std::io::sink()) {
        Ok(n) if n > MAX_TRAILER => {
            send(Piece::Failed("data follows the end of the tar".into()));
        }
        Ok(_) => {}
        Err(error) => {
            send(Piece::Failed(format!("the archive is damaged: {error}")));
        }
    }
}

/// How many bytes may follow the tar's end (block padding) before the
/// archive is refused.
const MAX_TRAILER: u64 = 1024 * 1024;

/// What an archive holds, shown to [`ImportOptions::accept`] once every
/// blob is stored and checked and before any image is named.
#[derive(Clone, Debug, Default)]
pub struct ImportPreview {
    /// The images and the manifest (or index) digest each would get.
    pub images: Vec<Imported>,
    /// The annotations of the archive's `index.json`.
    pub annotations: BTreeMap<String, String>,
}

/// Decides whether an archive may be imported; `Err` refuses it with a reason.
pub type AcceptFn = dyn Fn(&ImportPreview) -> std::result::Result<(), String> + Send + Sync;

/// How to name what an archive holds.
#[derive(Clone, Default)]
pub struct ImportOptions {
    /// Store the (single) image under this name instead of the archive's.
    pub name: Option<String>,
    /// Called before any image is named; refusing stores nothing.
    pub accept: Option<std::sync::Arc<AcceptFn>>,
}

impl std::fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field("name", &self.name)
            .field("accept", &self.accept.is_some())
            .finish()
    }
}

/// An image an import stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    pub name: String,
    pub digest: String,
}

/// Imports an OCI archive read from `reader` (a file, stdin, a socket).
pub async fn import<R>(engine: &Engine, reader: R, options: &ImportOptions) -> Result<Vec<Imported>>
where
    R: Read + Send + 'static,
{
    let lease = engine.create_lease("lw-import").await?;
    let result = import_in(engine, &lease, reader, options).await;
    match result {
        Ok(imported) => {
            engine.delete_lease(&lease, false).await?;
            Ok(imported)
        }
        Err(error) => {
            // Collect everything written under the lease before answering.
            if let Err(cleanup) = engine.delete_lease(&lease, true).await {
                tracing::warn!(%cleanup, "releasing a refused import");
            }
            Err(error)
        }
    }
}

async fn import_in<R>(
    engine: &Engine,
    lease: &Lease,
    reader: R,
    options: &ImportOptions,
) -> Result<Vec<Imported>>
where
    R: Read + Send + 'static,
{
    let (sender, mut pieces) = mpsc::channel::<Piece>(4);
    let reading = tokio::task::spawn_blocking(move || read_archive(reader, &sender));

    let mut index_bytes = None;
    let mut present: HashMap<String, u64> = HashMap::new();
    let outcome: Result<()> = async {
        while let Some(piece) = pieces.recv().await {
            match piece {
                Piece::Index(bytes) => index_bytes = Some(bytes),
                Piece::Failed(reason) => return Err(refused(reason)),
                Piece::Blob { digest, size } => {
                    let chunks = futures_util::stream::unfold(&mut pieces, |pieces| async move {
                        match pieces.recv().await {
                            Some(Piece::Data(bytes)) => Some((Ok(bytes), pieces)),
                            Some(Piece::Failed(reason)) => Some((Err(refused(reason)), pieces)),
                            Some(Piece::EndOfBlob) | None => None,
                            Some(_) => {
                                Some((Err(refused("the archive reader lost its place")), pieces))
                            }
                        }
                    });
                    let mut chunks = Box::pin(chunks);
                    engine
                        .write_content(lease, &digest, size, &mut chunks, HashMap::new())
                        .await?;
                    present.insert(digest, size);
                }
                Piece::Data(_) | Piece::EndOfBlob => {
                    return Err(refused("the archive reader lost its place"));
                }
            }
        }
        Ok(())
    }
    .await;
    drop(pieces);
    let _ = reading.await;
    outcome?;

    let index_bytes =
        index_bytes.ok_or_else(|| refused("no index.json: not an OCI image layout"))?;
    let index: ImageIndex = serde_json::from_slice(&index_bytes)
        .map_err(|error| refused(format!("index.json is not a valid OCI index: {error}")))?;
    if index.manifests().is_empty() {
        return Err(refused("index.json lists no images"));
    }
    if options.name.is_some() && index.manifests().len() > 1 {
        return Err(refused(format!(
            "it holds {} images; a name can only be given to one",
            index.manifests().len()
        )));
    }

    let check_present = |digest: &str, size: u64, what: &str| -> Result<()> {
        match present.get(digest) {
            Some(&found) if found == size => Ok(()),
            Some(&found) => Err(refused(format!(
                "{what} {digest} is {found} bytes, its descriptor says {size}"
            ))),
            None => Err(refused(format!(
                "{what} {digest} is missing from the archive"
            ))),
        }
    };

    // Check and label everything first; name images only when all is well.
    let mut to_name: Vec<(String, Descriptor)> = Vec::new();
    for entry in index.manifests() {
        let annotations = entry.annotations().clone().unwrap_or_default();
        let name = match &options.name {
            Some(name) => name.clone(),
            None => annotations
                .get(NAME_ANNOTATION)
                .or_else(|| annotations.get(REF_ANNOTATION))
                .cloned()
                .ok_or_else(|| {
                    refused(format!(
                        "image {} has no name in index.json; give one",
                        entry.digest()
                    ))
                })?,
        };
        let mut target = descriptor(
            entry.media_type().as_ref(),
            entry.digest().as_ref(),
            entry.size(),
        );
        check_present(&target.digest, entry.size(), "manifest")?;
        // Follow indexes down to this host's manifest.
        let mut depth = 0;
        while is_index(&target.media_type) {
            depth += 1;
            if depth > 3 {
                return Err(refused("indexes nest too deep"));
            }
            let nested: ImageIndex = parse_json(
                &engine.read_small_blob(&target.digest).await?,
                &name,
                "index",
            )?;
            let mut labels = HashMap::new();
            for (i, child) in nested.manifests().iter().enumerate() {
                if present.contains_key(child.digest().as_ref()) {
                    labels.insert(
                        format!("containerd.io/gc.ref.content.m.{i}"),
                        child.digest().to_string(),
                    );
                }
            }
            engine.label_content(&target.digest, &labels).await?;
            let chosen = pick_manifest(&nested, &name)?;
            check_present(chosen.digest().as_ref(), chosen.size(), "manifest")?;
            target = descriptor(
                chosen.media_type().as_ref(),
                chosen.digest().as_ref(),
                chosen.size(),
            );
        }
        if !is_manifest(&target.media_type) {
            return Err(refused(format!(
                "{name}: unsupported media type {}",
                target.media_type
            )));
        }
        let manifest: ImageManifest = parse_json(
            &engine.read_small_blob(&target.digest).await?,
            &name,
            "manifest",
        )?;
        let config_digest = manifest.config().digest().to_string();
        check_present(&config_digest, manifest.config().size(), "config")?;
        let config: ImageConfiguration = parse_json(
            &engine.read_small_blob(&config_digest).await?,
            &name,
            "config",
        )?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() || diff_ids.is_empty() {
            return Err(refused(format!(
                "{name}: its config lists {} layers, its manifest {}",
                diff_ids.len(),
                manifest.layers().len()
            )));
        }
        let mut manifest_labels = HashMap::new();
        manifest_labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            config_digest.clone(),
        );
        for (i, layer) in manifest.layers().iter().enumerate() {
            check_present(layer.digest().as_ref(), layer.size(), "layer")?;
            manifest_labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest().to_string(),
            );
        }
        let chain = chain_ids(diff_ids).pop().unwrap_or_default();
        let mut config_labels = HashMap::new();
        config_labels.insert(snapshot_gc_label(), chain);
        engine.label_content(&config_digest, &config_labels).await?;
        engine
            .label_content(&target.digest, &manifest_labels)
            .await?;
        let top = descriptor(
            entry.media_type().as_ref(),
            entry.digest().as_ref(),
            entry.size(),
        );
        if top.digest != target.digest {
            let mut labels = HashMap::new();
            labels.insert(
                "containerd.io/gc.ref.content.m.0".to_string(),
                target.digest.clone(),
            );
            engine.label_content(&top.digest, &labels).await?;
        }
        // Unpacking checks every layer against its diff id.
        let image = crate::image::Image {
            name: name.clone(),
            manifest_descriptor: target.clone(),
            manifest,
            config,
            chain_id: String::new(),
            labels: HashMap::new(),
        };
        engine
            .unpack(lease, &image)
            .await
            .map_err(|error| match error {
                EngineError::Image { reason, .. } => refused(reason),
                other => other,
            })?;
        to_name.push((name, top));
    }

    if let Some(accept) = &options.accept {
        let preview = ImportPreview {
            images: to_name
                .iter()
                .map(|(name, target)| Imported {
                    name: name.clone(),
                    digest: target.digest.clone(),
                })
                .collect(),
            annotations: index
                .annotations()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        };
        accept(&preview).map_err(refused)?;
    }

    let mut imported = Vec::new();
    for (name, target) in to_name {
        let digest = target.digest.clone();
        if let Err(error) = engine.put_image(lease, &name, target, HashMap::new()).await {
            for done in &imported {
                let Imported { name, .. } = done;
                let _ = engine.delete_image(name).await;
            }
            return Err(error);
        }
        imported.push(Imported { name, digest });
    }
    Ok(imported)
}

/// Writes one tar entry header for a regular file.
fn tar_header(path: &str, size: u64) -> Result<[u8; 512]> {
    let mut header = tar::Header::new_ustar();
    header
        .set_path(path)
        .map_err(|error| EngineError::io(format!("naming {path} in the archive"), error))?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut bytes = [0u8; 512];
    bytes.copy_from_slice(header.as_bytes());
    Ok(bytes)
}

async fn write_entry_bytes<W: AsyncWrite + Unpin>(
    writer: &mut W,
    path: &str,
    bytes: &[u8],
) -> Result<()> {
    let io = |error| EngineError::io("writing the archive", error);
    writer
        .write_all(&tar_header(path, bytes.len() as u64)?)
        .await
        .map_err(io)?;
    writer.write_all(bytes).await.map_err(io)?;
    pad(writer, bytes.len() as u64).await
}

async fn pad<W: AsyncWrite + Unpin>(writer: &mut W, size: u64) -> Result<()> {
    let remainder = (size % 512) as usize;
    if remainder != 0 {
        writer
            .write_all(&[0u8; 512][..512 - remainder])
            .await
            .map_err(|error| EngineError::io("writing the archive", error))?;
    }
    Ok(())
}

async fn write_blob_entry<W: AsyncWrite + Unpin>(
    engine: &Engine,
    writer: &mut W,
    digest: &str,
    size: u64,
) -> Result<()> {
    use futures_util::StreamExt;
    let io = |error| EngineError::io("writing the archive", error);
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    writer
        .write_all(&tar_header(&format!("blobs/sha256/{hex}"), size)?)
        .await
        .map_err(io)?;
    let mut stream = engine.read_content(digest).await?;
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        written += chunk.len() as u64;
        writer.write_all(&chunk).await.map_err(io)?;
    }
    if written != size {
        return Err(EngineError::Image {
            image: digest.to_string(),
            reason: format!("the store returned {written} bytes, expected {size}"),
        });
    }
    pad(writer, size).await
}

/// Writes images `names` as one OCI image-layout tar to `writer`, streaming
/// each blob from containerd. `ctr images import` and [`import`] accept it.
pub async fn export<W: AsyncWrite + Unpin>(
    engine: &Engine,
    names: &[String],
    writer: &mut W,
) -> Result<()> {
    export_annotated(engine, names, &BTreeMap::new(), writer).await
}

/// [`export`] with `annotations` on the archive's `index.json` (what
/// [`ImportPreview::annotations`] shows on import).
pub async fn export_annotated<W: AsyncWrite + Unpin>(
    engine: &Engine,
    names: &[String],
    annotations: &BTreeMap<String, String>,
    writer: &mut W,
) -> Result<()> {
    let io = |error| EngineError::io("writing the archive", error);
    write_entry_bytes(writer, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).await?;
    let mut written: HashSet<String> = HashSet::new();
    let mut manifests = Vec::new();
    for name in names {
        let image = engine.image(name).await?;
        let mut blobs: BTreeMap<usize, (String, u64)> = BTreeMap::new();
        blobs.insert(
            0,
            (
                image.manifest_descriptor.digest.clone(),
                image.manifest_descriptor.size as u64,
            ),
        );
        blobs.insert(
            1,
            (
                image.manifest.config().digest().to_string(),
                image.manifest.config().size(),
            ),
        );
        for (i, layer) in image.manifest.layers().iter().enumerate() {
            blobs.insert(2 + i, (layer.digest().to_string(), layer.size()));
        }
        for (digest, size) in blobs.into_values() {
            if written.insert(digest.clone()) {
                write_blob_entry(engine, writer, &digest, size).await?;
            }
        }
        let tag = name
            .rsplit_once(':')
            .map_or("latest", |(_, tag)| tag)
            .to_string();
        manifests.push(serde_json::json!({
            "mediaType": image.manifest_descriptor.media_type,
            "digest": image.manifest_descriptor.digest,
            "size": image.manifest_descriptor.size,
            "annotations": { NAME_ANNOTATION: name, REF_ANNOTATION: tag },
            "platform": { "architecture": image.config.architecture().to_string(), "os": image.config.os().to_string() },
        }));
    }
    let mut index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::image::INDEX_OCI,
        "manifests": manifests,
    });
    if !annotations.is_empty() {
        index["annotations"] = serde_json::json!(annotations);
    }
    let index_bytes = serde_json::to_vec(&index).map_err(|error| EngineError::Invalid {
        what: "index.json",
        reason: error.to_string(),
    })?;
    write_entry_bytes(writer, "index.json", &index_bytes).await?;
    writer.write_all(&[0u8; 1024]).await.map_err(io)?;
    writer.flush().await.map_err(io)?;
    Ok(())
}
