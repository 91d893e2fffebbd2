//! Images built from Debian packages with `mmdebstrap`: runtimes
//! ([`crate::runtimes`]) and services. Minbase plus the packages; user and
//! group `web` (10000) with home `/app` owned by it; apt lists, caches and
//! logs removed, an empty machine-id; hooks of the image's own after that
//! (a service strips what its packages' install scripts left, such as a
//! PostgreSQL cluster). Timestamps come from `SOURCE_DATE_EPOCH`, fixed
//! unless the caller sets one, so the same package versions give the same
//! bytes. The result is imported, then checked by running its version
//! command as uid 10000.
//!
//! With a root filesystem cache ([`BuildOptions::rootfs_cache`]), the tar
//! mmdebstrap wrote is kept there under a hash of everything that made it
//! (arguments, mirror, timestamp) and imported again instead of rebuilt:
//! another containerd namespace, or an image deleted and asked again, gets
//! it in seconds. Builders of one key wait on a lock file, so concurrent
//! daemons (the end-to-end tests) build it once. An entry is renamed into
//! place whole. Nothing refreshes an entry: the cache is for hosts that
//! rebuild the same images often, not a daemon's usual path (containerd
//! keeps its images).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use sha2::{Digest as _, Sha256};

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::image::Image;
use crate::layer::ImageSettings;

/// The timestamp builds use when the caller sets none (2023-11-14).
const DEFAULT_SOURCE_DATE_EPOCH: &str = "1700000000";
const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Build options.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// A Debian mirror URI (default: deb.debian.org plus updates and security).
    pub mirror: Option<String>,
    /// A directory keeping built root filesystems for reuse.
    pub rootfs_cache: Option<PathBuf>,
    /// Refuse a runtime version the catalog does not offer instead of
    /// building the nearest one.
    pub exact_versions: bool,
}

/// The name of the cache entry of what `args` build at `epoch`.
fn cache_key(args: &[String], output: &Path, epoch: &str) -> String {
    let mut hasher = Sha256::new();
    let output = output.display().to_string();
    for arg in args {
        // The output path is a fresh temporary one each time.
        let part = if *arg == output { "<output>" } else { arg };
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.update(epoch.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// Holds the lock of one cache entry until dropped.
struct EntryLock(#[allow(dead_code)] std::fs::File);

async fn lock_entry(path: PathBuf) -> Result<EntryLock> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| EngineError::io("opening a root filesystem cache lock", error))?;
        file.lock()
            .map_err(|error| EngineError::io("locking a root filesystem cache entry", error))?;
        Ok(EntryLock(file))
    })
    .await
    .map_err(|error| {
        EngineError::io(
            "locking a root filesystem cache entry",
            std::io::Error::other(error),
        )
    })?
}

/// Puts `tar` into the cache as `entry`, whole or not at all.
fn keep_in_cache(tar: &Path, entry: &Path) -> std::io::Result<()> {
    let partial = entry.with_extension("partial");
    std::fs::copy(tar, &partial)?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, entry)
}

/// An image to build from Debian packages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebianImage {
    /// Its image name (`launchway/runtime/python:3.11`).
    pub name: String,
    /// What it is, for progress lines (`runtime python:3.11`).
    pub what: String,
    /// The Debian suite (`bookworm`, `trixie`).
    pub suite: String,
    /// Whether the suite's `-backports` pocket is a source too.
    pub backports: bool,
    /// The packages beyond minbase.
    pub packages: Vec<String>,
    /// Prepended to the base `PATH`, if its tools live elsewhere.
    pub extra_path: Option<String>,
    /// mmdebstrap customize hooks run after the standard ones (`$1` is
    /// the root being built).
    pub extra_hooks: Vec<String>,
    /// The image's labels.
    pub labels: HashMap<String, String>,
    /// Prints its version: run to check the built image.
    pub version_command: Vec<String>,
}

impl DebianImage {
    /// Its environment, working directory, user and labels.
    pub fn settings(&self) -> ImageSettings {
        let path = match &self.extra_path {
            Some(extra) => format!("{extra}:{BASE_PATH}"),
            None => BASE_PATH.to_string(),
        };
        ImageSettings {
            env: vec![
                format!("PATH={path}"),
                "LANG=C.UTF-8".into(),
                "HOME=/app".into(),
            ],
            working_dir: Some("/app".into()),
            user: Some("10000:10000".into()),
            labels: self.labels.clone(),
        }
    }
}

/// The mmdebstrap arguments that build `image` into `output`.
pub fn mmdebstrap_args(image: &DebianImage, output: &Path, options: &BuildOptions) -> Vec<String> {
    let mut args = vec![
        "--variant=minbase".to_string(),
        format!("--include={}", image.packages.join(",")),
        "--format=tar".to_string(),
        "--customize-hook=chroot \"$1\" groupadd --gid 10000 web".to_string(),
        "--customize-hook=chroot \"$1\" useradd --uid 10000 --gid 10000 --home-dir /app --no-create-home --shell /bin/sh web".to_string(),
        "--customize-hook=mkdir -p \"$1/app\" && chown 10000:10000 \"$1/app\"".to_string(),
        "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/* \"$1\"/var/log/* && : > \"$1/etc/machine-id\"".to_string(),
    ];
    args.extend(
        image
            .extra_hooks
            .iter()
            .map(|hook| format!("--customize-hook={hook}")),
    );
    args.push(image.suite.clone());
    args.push(output.display().to_string());
    args.extend(sources(&image.suite, image.backports, options));
    args
}

/// The sources mmdebstrap is given. None is its default (the suite, its
/// updates and security from deb.debian.org); naming any source turns
/// that default off, so backports list every pocket. A mirror gives the
/// suite, its updates (and backports): security updates are then the
/// mirror operator's business, as a host that needs a mirror usually
/// cannot reach `debian-security` either.
fn sources(suite: &str, backports: bool, options: &BuildOptions) -> Vec<String> {
    let mut lines = match &options.mirror {
        None if !backports => return Vec::new(),
        None => vec![
            format!("deb http://deb.debian.org/debian {suite} main"),
            format!("deb http://deb.debian.org/debian {suite}-updates main"),
            format!("deb http://deb.debian.org/debian-security {suite}-security main"),
        ],
        Some(mirror) => vec![
            format!("deb {mirror} {suite} main"),
            format!("deb {mirror} {suite}-updates main"),
        ],
    };
    let base = options
        .mirror
        .as_deref()
        .unwrap_or("http://deb.debian.org/debian");
    if backports {
        lines.push(format!("deb {base} {suite}-backports main"));
    }
    lines
}

impl Engine {
    /// Builds (or rebuilds) `image` with mmdebstrap, sending progress
    /// lines, imports it and checks it runs its version command as uid
    /// 10000 (a failed check deletes it).
    pub async fn build_debian_image(
        &self,
        image: &DebianImage,
        progress: &mpsc::Sender<String>,
        options: &BuildOptions,
    ) -> Result<Image> {
        let say = |line: String| async move {
            let _ = progress.send(line).await;
        };
        say(format!(
            "Building {} from Debian {}: {}",
            image.what,
            image.suite,
            image.packages.join(" ")
        ))
        .await;
        let dir = tempfile::Builder::new()
            .prefix("image-")
            .tempdir_in(self.scratch())
            .map_err(|error| EngineError::io("creating a build directory", error))?;
        let tar = dir.path().join("rootfs.tar");
        let args = mmdebstrap_args(image, &tar, options);
        let epoch =
            std::env::var("SOURCE_DATE_EPOCH").unwrap_or_else(|_| DEFAULT_SOURCE_DATE_EPOCH.into());
        let mut cache = None;
        if let Some(cache_dir) = &options.rootfs_cache {
            std::fs::create_dir_all(cache_dir)
                .map_err(|error| EngineError::io("creating the root filesystem cache", error))?;
            let key = cache_key(&args, &tar, &epoch);
            let lock = lock_entry(cache_dir.join(format!("{key}.lock"))).await?;
            let entry = cache_dir.join(format!("{key}.tar"));
            if entry.is_file() {
                say(format!(
                    "Reusing the root filesystem built earlier ({})",
                    entry.display()
                ))
                .await;
                let imported = self.import_and_check(image, &entry, progress).await;
                if imported.is_err() {
                    // The next build makes it again rather than fail alike.
                    let _ = std::fs::remove_file(&entry);
                }
                return imported;
            }
            cache = Some((entry, lock));
        }
        let mut command = tokio::process::Command::new("mmdebstrap");
        command
            .args(&args)
            .env("SOURCE_DATE_EPOCH", &epoch)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|error| {
            EngineError::io("starting mmdebstrap (apt-get install mmdebstrap)", error)
        })?;
        let mut tail: Vec<String> = Vec::new();
        let (lines_out, mut lines) = mpsc::channel::<String>(64);
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let sender = lines_out.clone();
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if sender.send(line).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(lines_out);
        while let Some(line) = lines.recv().await {
            tail.push(line.clone());
            if tail.len() > 20 {
                tail.remove(0);
            }
            say(format!("  {line}")).await;
        }
        let status = child
            .wait()
            .await
            .map_err(|error| EngineError::io("waiting for mmdebstrap", error))?;
        if !status.success() {
            return Err(EngineError::Invalid {
                what: "image build",
                reason: format!(
                    "mmdebstrap failed ({status}); its last lines:\n{}",
                    tail.join("\n")
                ),
            });
        }
        if let Some((entry, _lock)) = &cache
            && let Err(error) = keep_in_cache(&tar, entry)
        {
            say(format!(
                "(not kept in the root filesystem cache: {}: {error})",
                entry.display()
            ))
            .await;
        }
        drop(cache);
        self.import_and_check(image, &tar, progress).await
    }

    /// Imports the root filesystem `tar` as `image` and checks it runs.
    async fn import_and_check(
        &self,
        image: &DebianImage,
        tar: &Path,
        progress: &mpsc::Sender<String>,
    ) -> Result<Image> {
        let say = |line: String| async move {
            let _ = progress.send(line).await;
        };
        let size = std::fs::metadata(tar).map(|m| m.len()).unwrap_or(0);
        say(format!(
            "Importing the root filesystem ({:.0} MB)",
            size as f64 / 1e6
        ))
        .await;
        let built = self
            .import_rootfs(tar, &image.name, &image.settings())
            .await?;
        let command: Vec<&str> = image.version_command.iter().map(String::as_str).collect();
        match self.check_runtime(&built, &command).await {
            Ok(version) => {
                let mut what = image.what.clone();
                if let Some(first) = what.get_mut(..1) {
                    first.make_ascii_uppercase();
                }
                say(format!("{what} ready: {version} ({})", built.digest())).await;
                Ok(built)
            }
            Err(error) => {
                let _ = self.delete_image(&built.name).await;
                Err(error)
            }
        }
    }
}
