//! `$PLATFORM_CACHE_DIR` through the registry, so any host starts a build
//! hook with the cache the previous build of the app left, wherever it ran.
//!
//! The cache of one app is an OCI artifact in the daemon's repository:
//! a config (`application/vnd.launchway.build-cache.config.v1+json`: project,
//! app, generation) and one `tar+zstd` layer holding the directory, tagged
//! `cache-<first 32 hex of sha256(project\0app)>-g<generation>` (names can be
//! longer than a tag may be). The generation grows with every
//! `launchway clear-build-cache`, so a build that started before a clear
//! uploads to a tag nobody reads again: a clear is never undone by a build
//! that outlives it.
//!
//! - **Before the hook** ([`restore`]): when the tag names another digest
//!   than the one this host last synced (a marker file beside the cache),
//!   the layer is fetched, hashed as it streams, and unpacked into a fresh
//!   directory (entries outside it refused) that then replaces the cache.
//!   No tag: the cache starts empty.
//! - **After a successful build** ([`save`]): uploaded only when the
//!   directory's listing (paths, sizes, times) changed since the restore,
//!   and only below [`MAX_CACHE_BYTES`] (a larger cache stays local, with a
//!   warning in the log).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt as _;
use serde_json::json;
use sha2::Digest as _;
use tokio::sync::mpsc;

use crate::BuildError;
use crate::plane::Plane;

/// The largest cache uploaded (2 GiB, packed).
pub const MAX_CACHE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
const CONFIG_TYPE: &str = "application/vnd.launchway.build-cache.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// The registry tag of `app`'s cache in `project` at `generation`.
pub fn cache_tag(project: &str, app: &str, generation: u64) -> String {
    let hash = sha2::Sha256::digest(format!("{project}\0{app}").as_bytes());
    format!("cache-{}-g{generation}", &hex::encode(hash)[..32])
}

/// Where the digest of the last synced artifact is kept.
fn marker(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!(".{name}.registry-digest"))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BuildError + '_ {
    move |error| BuildError::io(path, error)
}

/// What the directory holds, to tell whether a hook changed it.
pub fn listing(dir: &Path) -> Vec<(String, u64, i64)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64, i64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let relative = path
                .strip_prefix(root)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            use std::os::unix::fs::MetadataExt as _;
            out.push((
                relative,
                meta.len(),
                meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Brings `dir` (the cache of `app` of `project`) to the registry's
/// version, if it has one and this host does not have it yet.
pub async fn restore(
    plane: &Plane,
    project: &str,
    app: &str,
    generation: u64,
    dir: &Path,
    log: &mpsc::Sender<String>,
) -> Result<(), BuildError> {
    let registry = plane.registry();
    let tag = cache_tag(project, app, generation);
    let marker = marker(dir);
    let synced = std::fs::read_to_string(&marker).unwrap_or_default();
    let Some(digest) = registry.manifest_digest(&tag).await? else {
        if !synced.is_empty() {
            // The cache was cleared (or never uploaded at this generation).
            replace_dir(dir, None)?;
            let _ = std::fs::remove_file(&marker);
        }
        return Ok(());
    };
    if synced.trim() == digest {
        return Ok(());
    }
    let manifest = registry.manifest_get(&digest).await?;
    let value: serde_json::Value = serde_json::from_slice(&manifest.bytes).map_err(|error| {
        BuildError::Config(format!(
            "the build cache artifact {digest} is not JSON: {error}"
        ))
    })?;
    let layer = value
        .get("layers")
        .and_then(|layers| layers.get(0))
        .and_then(|layer| layer.get("digest"))
        .and_then(serde_json::Value::as_str)
        .filter(|d| launchway_registry::is_digest(d))
        .ok_or_else(|| {
            BuildError::Config(format!("the build cache artifact {digest} names no layer"))
        })?
        .to_owned();
    let _ = log
        .send("      Restoring the build cache from the registry".to_owned())
        .await;
    // Fetched to a scratch file, hashed on the way, then unpacked.
    let parent = dir.parent().unwrap_or(dir).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let packed = tempfile::NamedTempFile::new_in(&parent).map_err(io(&parent))?;
    {
        let (_, mut stream) = registry.blob_get(&layer).await?;
        let mut file = std::io::BufWriter::new(packed.reopen().map_err(io(packed.path()))?);
        let mut hasher = sha2::Sha256::new();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            total += chunk.len() as u64;
            if total > MAX_CACHE_BYTES {
                return Err(BuildError::Config(format!(
                    "the build cache artifact {digest} is larger than {MAX_CACHE_BYTES} bytes: refused"
                )));
            }
            hasher.update(&chunk);
            std::io::Write::write_all(&mut file, &chunk).map_err(io(packed.path()))?;
        }
        std::io::Write::flush(&mut file).map_err(io(packed.path()))?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != layer {
            return Err(launchway_registry::RegistryError::DigestMismatch {
                expected: layer,
                actual,
            }
            .into());
        }
    }
    let fresh = tempfile::Builder::new()
        .prefix(".cache-restore-")
        .tempdir_in(&parent)
        .map_err(io(&parent))?;
    let fresh_path = fresh.path().to_path_buf();
    let packed_path = packed.path().to_path_buf();
    tokio::task::spawn_blocking(move || unpack(&packed_path, &fresh_path))
        .await
        .map_err(|error| BuildError::Config(error.to_string()))??;
    replace_dir(dir, Some(fresh.keep()))?;
    std::fs::write(&marker, &digest).map_err(io(&marker))?;
    Ok(())
}

/// Unpacks a tar+zstd file into `into`; entries that would land outside it
/// are refused.
fn unpack(packed: &Path, into: &Path) -> Result<(), BuildError> {
    let file = std::fs::File::open(packed).map_err(io(packed))?;
    let decoder = zstd::stream::read::Decoder::new(file).map_err(io(packed))?;
    let mut archive = tar::Archive::new(decoder.take(MAX_CACHE_BYTES * 8));
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(io(packed))? {
        let mut entry = entry.map_err(io(packed))?;
        if !entry.unpack_in(into).map_err(io(into))? {
            return Err(BuildError::Config(format!(
                "the build cache artifact has an entry outside its directory ({}): refused",
                entry
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )));
        }
    }
    // Everything belongs to the hook's user, whatever the archive says.
    let web = Some(nix::unistd::Uid::from_raw(launchway_containerd::WEB_UID));
    let web_group = Some(nix::unistd::Gid::from_raw(launchway_containerd::WEB_UID));
    let mut pending = vec![into.to_path_buf()];
    while let Some(path) = pending.pop() {
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &path,
            web,
            web_group,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|error| BuildError::io(&path, std::io::Error::from(error)))?;
        if std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_dir()) {
            for entry in std::fs::read_dir(&path).map_err(io(&path))?.flatten() {
                pending.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Replaces `dir` by `with` (or an empty directory), owned as before.
fn replace_dir(dir: &Path, with: Option<PathBuf>) -> Result<(), BuildError> {
    let old = dir.with_extension("replaced");
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(io(dir))?;
    }
    match with {
        Some(new) => std::fs::rename(&new, dir).map_err(io(dir))?,
        None => std::fs::create_dir_all(dir).map_err(io(dir))?,
    }
    let _ = std::fs::remove_dir_all(&old);
    let web = nix::unistd::Uid::from_raw(launchway_containerd::WEB_UID);
    let web_group = nix::unistd::Gid::from_raw(launchway_containerd::WEB_UID);
    let _ = nix::unistd::chown(dir, Some(web), Some(web_group));
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(io(dir))
}

/// Uploads `dir` as the cache of `app` of `project` at `generation`.
pub async fn save(
    plane: &Plane,
    project: &str,
    app: &str,
    generation: u64,
    dir: &Path,
    log: &mpsc::Sender<String>,
) -> Result<(), BuildError> {
    let registry = plane.registry();
    let parent = dir.parent().unwrap_or(dir).to_path_buf();
    let packed = tempfile::NamedTempFile::new_in(&parent).map_err(io(&parent))?;
    let (source, target) = (dir.to_path_buf(), packed.path().to_path_buf());
    let (digest, size) = tokio::task::spawn_blocking(move || pack(&source, &target))
        .await
        .map_err(|error| BuildError::Config(error.to_string()))??;
    if size > MAX_CACHE_BYTES {
        let _ = log
            .send(format!(
                "      W: the build cache is {size} bytes packed, more than the {MAX_CACHE_BYTES} shared through the registry: it stays on this host"
            ))
            .await;
        return Ok(());
    }
    if !registry.blob_exists(&digest, size).await? {
        let file = tokio::fs::File::open(packed.path())
            .await
            .map_err(io(packed.path()))?;
        let body = tokio_util::io::ReaderStream::new(file);
        registry.push_blob(&digest, size, Box::pin(body)).await?;
    }
    let config =
        serde_json::to_vec(&json!({"project": project, "app": app, "generation": generation}))
            .unwrap_or_default();
    let config_digest = launchway_registry::sha256_digest(&config);
    registry
        .push_blob_bytes(&config_digest, Bytes::from(config.clone()))
        .await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": LAYER_TYPE, "digest": digest, "size": size}],
    });
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let tag = cache_tag(project, app, generation);
    let pushed = registry
        .manifest_put(&tag, MANIFEST_TYPE, Bytes::from(bytes))
        .await?;
    let marker = marker(dir);
    std::fs::write(&marker, &pushed).map_err(io(&marker))?;
    let _ = log
        .send(format!(
            "      Build cache saved to the registry ({size} bytes packed)"
        ))
        .await;
    Ok(())
}

/// Packs `dir` into a tar+zstd file; returns its digest and size.
fn pack(dir: &Path, target: &Path) -> Result<(String, u64), BuildError> {
    let file = std::fs::File::create(target).map_err(io(target))?;
    let encoder = zstd::stream::write::Encoder::new(file, 3).map_err(io(target))?;
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir).map_err(io(dir))?;
    let encoder = builder.into_inner().map_err(io(target))?;
    encoder.finish().map_err(io(target))?;
    let mut hasher = sha2::Sha256::new();
    let mut file = std::fs::File::open(target).map_err(io(target))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = file.read(&mut buffer).map_err(io(target))?;
        if read == 0 {
            break;
        }
        size += read as u64;
        hasher.update(&buffer[..read]);
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_short_safe_and_change_with_the_generation() {
        let tag = cache_tag(&"p".repeat(63), "web", 0);
        assert!(launchway_registry::is_tag(&tag), "{tag}");
        assert_ne!(tag, cache_tag(&"p".repeat(63), "web", 1));
        assert_ne!(cache_tag("ab", "c", 0), cache_tag("a", "bc", 0));
    }

    #[test]
    fn a_packed_directory_unpacks_the_same_and_escaping_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let source = dir.path().join("source");
        std::fs::create_dir_all(source.join("sub")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(source.join("sub/file"), b"cached").unwrap_or_else(|e| panic!("{e}"));
        let packed = dir.path().join("packed.tar.zst");
        let (digest, size) = pack(&source, &packed).unwrap_or_else(|e| panic!("{e}"));
        assert!(launchway_registry::is_digest(&digest) && size > 0);
        let into = dir.path().join("into");
        std::fs::create_dir_all(&into).unwrap_or_else(|e| panic!("{e}"));
        unpack(&packed, &into).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read(into.join("sub/file")).ok(),
            Some(b"cached".to_vec())
        );

        // An archive whose entry climbs out.
        let evil = dir.path().join("evil.tar.zst");
        {
            let file = std::fs::File::create(&evil).unwrap_or_else(|e| panic!("{e}"));
            let encoder =
                zstd::stream::write::Encoder::new(file, 3).unwrap_or_else(|e| panic!("{e}"));
            let mut builder = tar::Builder::new(encoder);
            let mut header = tar::Header::new_gnu();
            header.set_size(1);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            let name = b"../escaped";
            if let Some(gnu) = header.as_gnu_mut() {
                gnu.name[..name.len()].copy_from_slice(name);
            }
            header.set_cksum();
            builder
                .append(&header, &b"x"[..])
                .unwrap_or_else(|e| panic!("{e}"));
            let encoder = builder.into_inner().unwrap_or_else(|e| panic!("{e}"));
            encoder.finish().unwrap_or_else(|e| panic!("{e}"));
        }
        let target = dir.path().join("target");
        std::fs::create_dir_all(&target).unwrap_or_else(|e| panic!("{e}"));
        assert!(unpack(&evil, &target).is_err());
        assert!(!dir.path().join("escaped").exists());
    }
}
