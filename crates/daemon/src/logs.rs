//! App logs: each process's stdout and stderr, appended by containerd's shim
//! to `<environment dir>/logs/<app>.log` (workers: `<app>--<process>.log`;
//! services: `service--<name>.log`, shown as `service/<name>`).
//! Rotation copies a file past `[deploy] log_max_mib` to `.1` (older ones
//! shift to `.2` and `.3`) and truncates it in place: the shim appends, so it
//! goes on writing at the new end. `launchway logs` reads the tail and, with
//! `-f`, follows (a truncated file is read again from its start).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use launchway_api::proto;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::Daemon;
use crate::build_api::LogStream;

const ROTATE_EVERY: Duration = Duration::from_secs(15);
const KEPT: u32 = 3;
const FOLLOW_POLL: Duration = Duration::from_millis(200);
const DEFAULT_LINES: usize = 100;

/// Rotates every app log past its size limit until `stop`.
pub(crate) async fn rotate_forever(daemon: Arc<Daemon>, stop: CancellationToken) {
    let limit = daemon.settings.deploy.log_max_mib.max(1) << 20;
    let root = daemon.settings.data_dir.join("environments");
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(ROTATE_EVERY) => {}
        }
        let root = root.clone();
        let _ = tokio::task::spawn_blocking(move || rotate_all(&root, limit)).await;
    }
}

fn rotate_all(root: &Path, limit: u64) {
    let Ok(environments) = std::fs::read_dir(root) else {
        return;
    };
    for environment in environments.flatten() {
        let Ok(files) = std::fs::read_dir(environment.path().join("logs")) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "log")
                && file.metadata().is_ok_and(|m| m.len() > limit)
                && let Err(error) = rotate(&path)
            {
                tracing::warn!(%error, path = %path.display(), "rotating an app log");
            }
        }
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// `x.log` → `x.log.1` (copied), then `x.log` truncated.
pub(crate) fn rotate(path: &Path) -> std::io::Result<()> {
    for n in (1..KEPT).rev() {
        let from = numbered(path, n);
        if from.exists() {
            std::fs::rename(&from, numbered(path, n + 1))?;
        }
    }
    std::fs::copy(path, numbered(path, 1))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(0)
}

/// The last `count` lines of `path`, and the offset it was read to.
pub(crate) fn tail(path: &Path, count: usize) -> (String, u64) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return (String::new(), 0);
    };
    let size = file.metadata().map_or(0, |m| m.len());
    let start = size.saturating_sub(1 << 20);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return (String::new(), size);
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(count)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    (out, start + bytes.len() as u64)
}

/// What was appended to `path` since `offset` (from 0 after a truncation).
fn read_from(path: &Path, offset: &mut u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let size = file.metadata().map_or(0, |m| m.len());
    if size < *offset {
        *offset = 0;
    }
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(*offset)).is_err()
        || file.take(4 << 20).read_to_end(&mut bytes).is_err()
    {
        return String::new();
    }
    *offset += bytes.len() as u64;
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Daemon {
    /// `launchway logs`: the tail of an environment's app logs, then (with
    /// `follow`) what they append.
    pub(crate) fn app_logs(
        self: &Arc<Self>,
        request: &proto::AppLogsRequest,
    ) -> Result<LogStream, Status> {
        self.existing_project(&request.project)?;
        let environment = self
            .store
            .environment(&request.project, &request.environment)
            .map_err(crate::api::internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "project `{}` has no environment `{}`",
                    request.project, request.environment
                ))
            })?;
        let dir = self
            .environment_dir(&environment.project, &environment.name)
            .join("logs");
        let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let stem = name.strip_suffix(".log")?.to_string();
                        let app = stem.split("--").next().unwrap_or_default().to_string();
                        (request.app.is_empty() || request.app == app)
                            .then(|| (stem.replace("--", "/"), e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        if files.is_empty() {
            let what = if request.app.is_empty() {
                "any app".to_string()
            } else {
                format!("app `{}`", request.app)
            };
            return Err(Status::not_found(format!(
                "environment `{}` has no logs of {what} (was it deployed?)",
                environment.name
            )));
        }
        let lines = if request.lines == 0 {
            DEFAULT_LINES
        } else {
            request.lines as usize
        };
        let label = files.len() > 1;
        let follow = request.follow;
        // What the app prints of its sensitive variables is masked too.
        let mut secrets = self
            .store
            .variables(&environment.project)
            .map(|all| crate::variables::secrets(&all))
            .unwrap_or_default();
        // And the passwords of its services, from the serving release.
        if let Some(spec) = self
            .store
            .deployment(&environment.project, &environment.name)
            .ok()
            .flatten()
            .and_then(|deployment| self.store.release(&deployment.release).ok().flatten())
            .and_then(|release| {
                serde_json::from_value::<launchway_deploy::DeploySpec>(release.spec).ok()
            })
        {
            secrets.extend(
                spec.services
                    .iter()
                    .flat_map(|service| service.secrets.iter().cloned()),
            );
        }
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            let prefix = |name: &str, text: String| -> String {
                let text = crate::variables::mask(&text, &secrets);
                if !label {
                    return text;
                }
                text.lines()
                    .map(|line| format!("[{name}] {line}\n"))
                    .collect()
            };
            let mut offsets = Vec::new();
            for (name, path) in &files {
                let (text, offset) = tail(path, lines);
                offsets.push(offset);
                if !text.is_empty() {
                    let chunk = proto::LogChunk {
                        text: prefix(name, text),
                        ..proto::LogChunk::default()
                    };
                    if sender.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
            }
            if !follow {
                return;
            }
            loop {
                tokio::select! {
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                    () = sender.closed() => return,
                }
                for ((name, path), offset) in files.iter().zip(offsets.iter_mut()) {
                    let text = read_from(path, offset);
                    if text.is_empty() {
                        continue;
                    }
                    let chunk = proto::LogChunk {
                        text: prefix(name, text),
                        ..proto::LogChunk::default()
                    };
                    if sender.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_three_and_truncates_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        for round in 0..5 {
            std::fs::write(&path, format!("round {round}\n")).expect("write");
            rotate(&path).expect("rotate");
            assert_eq!(std::fs::metadata(&path).expect("log").len(), 0);
        }
        assert_eq!(
            std::fs::read_to_string(numbered(&path, 1)).expect(".1"),
            "round 4\n"
        );
        assert_eq!(
            std::fs::read_to_string(numbered(&path, 3)).expect(".3"),
            "round 2\n"
        );
        assert!(!numbered(&path, 4).exists());
    }

    #[test]
    fn tails_and_follows_across_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.log");
        std::fs::write(&path, "a\nb\nc\n").expect("write");
        let (text, mut offset) = tail(&path, 2);
        assert_eq!(text, "b\nc\n");
        std::fs::write(&path, "a\nb\nc\nd\n").expect("write");
        assert_eq!(read_from(&path, &mut offset), "d\n");
        std::fs::write(&path, "e\n").expect("write");
        assert_eq!(read_from(&path, &mut offset), "e\n");
    }
}
