//! `launchway build|deploy DIR`: a directory sent as a tar to be built
//! (and deployed) as a commit of the environment, from CI or a laptop,
//! without `git push`.
//!
//! What goes in: in a git checkout, the files git would commit
//! (`git ls-files --cached --others --exclude-standard`, so `.gitignore`
//! applies); elsewhere, every file but `.git`. Symlinks are sent as
//! symlinks.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::Context as _;
use launchway_api::proto;
use tokio::io::AsyncReadExt as _;

use crate::admin::{exit_code, follow_activities, with_client};

/// The files to send, relative to `dir`.
fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let listed = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output();
    if let Ok(out) = listed
        && out.status.success()
    {
        return Ok(out
            .stdout
            .split(|b| *b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
            // Tracked but deleted in the checkout: not part of it.
            .filter(|name| dir.join(name).symlink_metadata().is_ok())
            .collect());
    }
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(dir.join(&relative))
            .with_context(|| format!("cannot read {}", dir.join(&relative).display()))?
        {
            let entry = entry?;
            let name = relative.join(entry.file_name());
            if entry.file_name() == ".git" {
                continue;
            }
            if entry.file_type()?.is_dir() {
                pending.push(name);
            } else {
                found.push(name);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// A tar of `dir`'s files, in a temporary file.
fn tar_of(dir: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let file = tempfile::NamedTempFile::new()?;
    let mut builder = tar::Builder::new(file.reopen()?);
    builder.follow_symlinks(false);
    for name in files(dir)? {
        builder
            .append_path_with_name(dir.join(&name), &name)
            .with_context(|| format!("cannot read {}", dir.join(&name).display()))?;
    }
    builder.into_inner()?.sync_all()?;
    Ok(file)
}

/// `launchway build DIR` (`deploy` false) and `launchway deploy DIR`.
pub(crate) fn upload(
    settings_path: Option<&Path>,
    project: String,
    environment: Option<String>,
    dir: &Path,
    deploy: bool,
) -> anyhow::Result<ExitCode> {
    let tar = tar_of(dir)?;
    let size = tar.as_file().metadata()?.len();
    let description = format!(
        "{} of {} ({} KiB)",
        if deploy { "deploy" } else { "build" },
        dir.canonicalize()
            .unwrap_or_else(|_| dir.to_owned())
            .display(),
        size.div_ceil(1024)
    );
    let path = tar.path().to_owned();
    let failed = with_client(settings_path, async |client| {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| tonic::Status::internal(format!("cannot read the archive: {e}")))?;
        let mut first = Some(proto::SourceChunk {
            project: project.clone(),
            environment: environment.clone().unwrap_or_default(),
            deploy,
            description,
            data: Vec::new(),
        });
        tokio::spawn(async move {
            loop {
                let mut data = vec![0u8; 256 * 1024];
                let read = match file.read(&mut data).await {
                    Ok(read) => read,
                    Err(_) => return,
                };
                data.truncate(read);
                let chunk = match first.take() {
                    Some(start) => proto::SourceChunk { data, ..start },
                    None if read == 0 => return,
                    None => proto::SourceChunk {
                        data,
                        ..proto::SourceChunk::default()
                    },
                };
                if sender.send(chunk).await.is_err() || read == 0 {
                    return;
                }
            }
        });
        let stream = client
            .upload_source(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await?
            .into_inner();
        follow_activities(stream).await
    })?;
    Ok(exit_code(failed))
}
