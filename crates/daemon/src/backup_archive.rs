//! Off-host copies of backups: `launchway backup export ID > b.tar.zst`
//! and `launchway backup import -p P < b.tar.zst`
//! (`launchway_volumes::archive`: zstd'd tar, SHA-256 of every file in its
//! last entry).
//!
//! An import unpacks into `<backups>/<project>/.import-<random>/`, which
//! nothing lists; only when every digest matched and the manifest reads
//! does it become a backup of the project, under a new id, renamed into
//! place and then recorded (start-up removes an interrupted import). So a
//! corrupt, truncated or foreign archive is refused whole, with nothing
//! stored. An imported backup names no release (releases belong to the
//! project that made them): restoring it puts the data back under the code
//! that serves.

use std::sync::Arc;

use launchway_api::proto;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::warn;

use crate::backups::{MANIFEST, Manifest, sync_dir, sync_filesystem};
use crate::build_api::DataStream;
use crate::data_copy::remove_tree;
use crate::{Daemon, now_ms};

/// Bytes per chunk of an export.
const CHUNK: usize = 256 * 1024;

/// A blocking `Write` that sends what it is given as export chunks.
struct ChunkWriter {
    sender: mpsc::Sender<Result<proto::DataChunk, Status>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.sender
            .blocking_send(Ok(proto::DataChunk { data }))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Daemon {
    /// `launchway backup export`.
    pub(crate) fn export_backup_stream(
        self: &Arc<Self>,
        request: &proto::BackupRequest,
    ) -> Result<DataStream, Status> {
        let backup = self.existing_backup(&request.project, &request.id)?;
        let dir = self.backup_dir(&backup.project, &backup.id);
        Manifest::read(&dir).map_err(|message| {
            Status::failed_precondition(format!(
                "backup {} cannot be exported: {message}",
                backup.id
            ))
        })?;
        let in_use = self.use_backup(&backup.project, &backup.id);
        let (sender, receiver) = mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            let _in_use = in_use;
            let mut writer = ChunkWriter {
                sender: sender.clone(),
                buffer: Vec::with_capacity(CHUNK),
            };
            if let Err(error) = launchway_volumes::archive::write(&dir, &mut writer) {
                // The client sees an error, not a short archive.
                let _ = sender.blocking_send(Err(Status::internal(format!(
                    "the export stopped: {error}"
                ))));
            }
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    /// `launchway backup import`: see the module doc.
    pub(crate) async fn import_backup_stream(
        &self,
        stream: Streaming<proto::ImportBuildChunk>,
    ) -> Result<proto::BackupInfo, Status> {
        let (project, reader, feeding) = self.import_reader(stream).await?;
        let backups = self.backups_dir(&project);
        let staging = backups.join(format!(".import-{}", &crate::services::new_secret()[..12]));
        let unpacked = {
            let staging = staging.clone();
            tokio::task::spawn_blocking(move || -> Result<Manifest, String> {
                std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
                launchway_volumes::archive::unpack(reader, &staging, MANIFEST)
                    .map_err(|e| e.to_string())?;
                Manifest::read(&staging)
            })
            .await
        };
        let fed = feeding.await;
        let manifest = match unpacked {
            Ok(Ok(manifest)) => manifest,
            Ok(Err(message)) => {
                let _ = remove_tree(&staging).await;
                if let Ok(Err(status)) = fed {
                    return Err(status);
                }
                return Err(Status::invalid_argument(format!(
                    "the archive was refused and nothing was stored: {message}"
                )));
            }
            Err(_) => {
                let _ = remove_tree(&staging).await;
                return Err(Status::internal("the import stopped unexpectedly"));
            }
        };
        let id = crate::builds::new_record_id('S');
        let mut record = manifest.backup.clone();
        let origin = format!("{}/{}", record.project, record.id);
        record.id = id.clone();
        record.project = project.clone();
        record.release = String::new();
        record.activity = None;
        record.scheduled = false;
        record.created_at = record.created_at.min(now_ms());
        let target = self.backup_dir(&project, &id);
        let placed = {
            let staging = staging.clone();
            let record = record.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                Manifest {
                    format: manifest.format,
                    backup: record,
                    release: None,
                }
                .write(&staging)?;
                sync_filesystem(&staging)?;
                std::fs::rename(&staging, &target)?;
                if let Some(parent) = target.parent() {
                    sync_dir(parent)?;
                }
                Ok(())
            })
            .await
        };
        if !matches!(placed, Ok(Ok(()))) {
            let _ = remove_tree(&staging).await;
            return Err(Status::internal(
                "the imported backup could not be stored; nothing was kept",
            ));
        }
        if let Err(error) = self.store.put_backup(&record) {
            // Start-up adopts it from its manifest.
            warn!(%error, "cannot record an imported backup");
        }
        tracing::info!(%id, %project, %origin, "backup imported");
        Ok(self.backup_info(&record))
    }
}
