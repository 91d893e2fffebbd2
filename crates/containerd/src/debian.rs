//! Images built from Debian packages with `mmdebstrap`: runtimes
//! ([`crate::runtimes`]) and services. Minbase plus the packages; user and
//! group `web` (10000) with home `/app` owned by it; apt lists, caches and
//! logs removed, an empty machine-id; hooks of the image's own after that
//! (a service strips what its packages' install scripts left, such as a
//! PostgreSQL cluster). Timestamps come from `SOURCE_DATE_EPOCH`, fixed
//! unless the caller sets one, so the same package versions give the same
//! bytes. The result is imported, then checked by running its version
//! command as uid 10000.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;

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
    if let Some(mirror) = &options.mirror {
        args.push(mirror.clone());
    }
    args
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
        let mut command = tokio::process::Command::new("mmdebstrap");
        command
            .args(mmdebstrap_args(image, &tar, options))
            .env(
                "SOURCE_DATE_EPOCH",
                std::env::var("SOURCE_DATE_EPOCH")
                    .unwrap_or_else(|_| DEFAULT_SOURCE_DATE_EPOCH.into()),
            )
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
        let size = std::fs::metadata(&tar).map(|m| m.len()).unwrap_or(0);
        say(format!(
            "Importing the root filesystem ({:.0} MB)",
            size as f64 / 1e6
        ))
        .await;
        let built = self
            .import_rootfs(&tar, &image.name, &image.settings())
            .await?;
        drop(dir);
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
