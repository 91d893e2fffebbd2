//! `launchway build|deploy DIR`: deploys from CI without `git push` (the
//! Convox way). The CLI sends a tar of the directory (what `.gitignore`
//! lets through); the daemon records it as a commit whose parent is the
//! environment's head, kept by `refs/launchway/uploads/<id>` rather than
//! on the branch (a developer's next `git push` of the branch must not be
//! refused as a non-fast-forward because CI deployed in between),
//! validates its configuration exactly as a push's, then builds it in the
//! environment's queue like any commit, so build keys and reuse are the
//! same: an unchanged directory is not built again.
//!
//! Refused before anything is stored in the repository's refs: an
//! oversized upload (`[git] max_push_bytes`), a file that is not a tar,
//! entries other than files, directories and symlinks, paths leaving the
//! directory, an invalid configuration (with its `file:line:col`
//! diagnostics), an inactive environment for a deploy.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt as _};
use launchway_api::proto;
use launchway_store::{ActivityKind, EnvironmentStatus};
use tokio::io::AsyncWriteExt as _;
use tonic::Status;

use crate::activity::Work;
use crate::api::internal;
use crate::build_api::LogStream;
use crate::{Daemon, push};

/// The tar's bytes, as a door received them.
pub(crate) type ByteStream = BoxStream<'static, Result<Bytes, Status>>;

/// Unpacks `tar` into `into`, refusing what a source tree cannot hold.
fn unpack(tar: &Path, into: &Path) -> Result<(), String> {
    let file = std::fs::File::open(tar).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(file);
    archive.set_preserve_permissions(false);
    archive.set_overwrite(true);
    let entries = archive.entries().map_err(|e| e.to_string())?;
    let mut files = 0usize;
    for entry in entries {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            let path = entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(format!(
                "`{path}` is neither a file, a directory nor a symlink"
            ));
        }
        // `unpack_in` refuses absolute paths and `..` components.
        let unpacked = entry.unpack_in(into).map_err(|e| e.to_string())?;
        if !unpacked {
            let path = entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(format!("`{path}` leaves the directory"));
        }
        files += usize::from(!kind.is_dir());
    }
    if files == 0 {
        return Err("it holds no file".into());
    }
    Ok(())
}

impl Daemon {
    /// `UploadSource` (both doors): receives, records, validates, then
    /// schedules the build (and deploy) and streams its log.
    pub(crate) async fn upload_source(
        self: &Arc<Self>,
        start: &proto::SourceChunk,
        mut data: ByteStream,
    ) -> Result<LogStream, Status> {
        let project = self.existing_project(&start.project)?;
        let branch = if start.environment.is_empty() {
            project.default_branch.clone()
        } else {
            start.environment.clone()
        };
        let env = self.existing_environment(&project.name, &branch)?;
        if start.deploy && env.status != EnvironmentStatus::Active {
            return Err(Status::failed_precondition(format!(
                "environment {branch} is inactive: activate it first (launchway environment activate -p {} {branch})",
                project.name
            )));
        }
        let uploads = self.settings.data_dir.join("uploads");
        std::fs::create_dir_all(&uploads).map_err(internal)?;
        let scratch = tempfile::Builder::new()
            .prefix("upload-")
            .tempdir_in(&uploads)
            .map_err(internal)?;
        let tar_path = scratch.path().join("source.tar");
        let mut file = tokio::fs::File::create(&tar_path).await.map_err(internal)?;
        let limit = self.settings.git.max_push_bytes;
        let mut received: u64 = 0;
        while let Some(piece) = data.next().await {
            let piece = piece?;
            received = received.saturating_add(piece.len() as u64);
            if received > limit {
                return Err(Status::resource_exhausted(format!(
                    "the upload is larger than {limit} bytes ([git] max_push_bytes); nothing was stored"
                )));
            }
            file.write_all(&piece).await.map_err(internal)?;
        }
        file.flush().await.map_err(internal)?;
        drop(file);
        let tree = scratch.path().join("tree");
        std::fs::create_dir_all(&tree).map_err(internal)?;
        {
            let (tar_path, tree) = (tar_path.clone(), tree.clone());
            tokio::task::spawn_blocking(move || unpack(&tar_path, &tree))
                .await
                .map_err(internal)?
                .map_err(|reason| {
                    Status::invalid_argument(format!(
                        "the upload is not a tar of a source tree: {reason}; nothing was stored"
                    ))
                })?;
        }
        let repo = self.repo_path(&project.name);
        let id = crate::builds::new_record_id('U');
        let reference = format!("refs/launchway/uploads/{id}");
        let message = if start.description.trim().is_empty() {
            format!("Upload {id}")
        } else {
            start.description.trim().chars().take(200).collect()
        };
        let commit = self
            .git
            .commit_directory(
                &repo,
                &tree,
                &scratch.path().join("index"),
                env.head.as_deref(),
                &message,
                &reference,
            )
            .await
            .map_err(internal)?;
        if let Err(diagnostics) = push::validate_commit(repo.clone(), None, commit.clone()).await {
            let _ = self.git.delete_ref(&repo, &reference).await;
            return Err(Status::invalid_argument(format!(
                "the configuration is invalid; nothing was built:\n{diagnostics}"
            )));
        }
        let what = if start.deploy { "deploy" } else { "build" };
        self.run_activity(
            &project.name,
            &branch,
            ActivityKind::Upload,
            format!(
                "{what} of an upload ({}) to {branch}",
                crate::push::short(&commit)
            ),
            Work::Upload {
                commit,
                deploy: start.deploy,
            },
        )
    }
}

impl launchway_http::Uploads for crate::api::ApiService {
    async fn receive_upload(
        &self,
        who: launchway_ops::Principal,
        start: proto::SourceChunk,
        data: ByteStream,
    ) -> Result<BoxStream<'static, Result<proto::LogChunk, Status>>, Status> {
        self.check(&who, launchway_ops::ActionKind::UploadSource, |resolve| {
            resolve.environment(&start.project, &start.environment)
        })?;
        Ok(self.daemon.upload_source(&start, data).await?.boxed())
    }
}

impl crate::api::ApiService {
    /// `UploadSource` over the socket: the first message names where (and
    /// is authorized), the data of every message is the tar.
    pub(crate) async fn receive_upload_stream(
        &self,
        request: tonic::Request<tonic::Streaming<proto::SourceChunk>>,
    ) -> Result<tonic::Response<LogStream>, Status> {
        let who = crate::admission::principal(&request)?;
        let mut chunks = request.into_inner();
        let start = chunks.message().await?.ok_or_else(|| {
            Status::invalid_argument("an upload starts with a message naming its project")
        })?;
        self.check(&who, launchway_ops::ActionKind::UploadSource, |resolve| {
            resolve.environment(&start.project, &start.environment)
        })?;
        let first = bytes::Bytes::from(start.data.clone());
        let rest = futures_util::stream::unfold(chunks, |mut chunks| async move {
            match chunks.message().await {
                Ok(Some(chunk)) => Some((Ok(bytes::Bytes::from(chunk.data)), chunks)),
                Ok(None) => None,
                Err(status) => Some((Err(status), chunks)),
            }
        });
        let data = futures_util::StreamExt::boxed(futures_util::StreamExt::chain(
            futures_util::stream::once(async move { Ok(first) }),
            rest,
        ));
        Ok(tonic::Response::new(
            self.daemon.upload_source(&start, data).await?,
        ))
    }
}
