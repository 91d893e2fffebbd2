//! The runtime-image half of the admin API: list, build (streamed), import.

use std::path::Path;
use std::pin::Pin;

use launchway_api::proto;
use launchway_containerd::EngineError;
use launchway_containerd::runtimes::{BuildOptions, RuntimeEntry, image_name};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

use crate::Daemon;

/// The server stream of `BuildRuntime`.
pub(crate) type ProgressStream =
    Pin<Box<dyn Stream<Item = Result<proto::RuntimeProgress, Status>> + Send>>;

/// gRPC status of an engine error, with the user-facing message.
pub(crate) fn engine_status(error: &EngineError) -> Status {
    // Sent in a stream's trailers too, which no layer shortens.
    let message = launchway_api::shorten_message(&error.to_string());
    match error {
        EngineError::UnknownRuntime { .. } | EngineError::NotFound { .. } => {
            Status::not_found(message)
        }
        EngineError::Invalid { .. }
        | EngineError::Archive { .. }
        | EngineError::DigestMismatch { .. }
        | EngineError::Image { .. } => Status::invalid_argument(message),
        EngineError::Unavailable { .. } => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

fn info(entry: &RuntimeEntry) -> proto::RuntimeInfo {
    proto::RuntimeInfo {
        r#type: entry.type_name.clone(),
        in_catalog: entry.in_catalog,
        image_digest: entry.image_digest.clone().unwrap_or_default(),
        source: entry.source.clone().unwrap_or_default(),
        image: image_name(&entry.type_name),
        origin: launchway_containerd::runtimes::recipe(&entry.type_name)
            .map(|recipe| recipe.source())
            .unwrap_or_default(),
        tools: launchway_containerd::runtimes::recipe(&entry.type_name)
            .map(|recipe| recipe.tools.to_owned())
            .unwrap_or_default(),
    }
}

impl Daemon {
    fn build_options(&self) -> BuildOptions {
        self.settings.runtimes.build_options()
    }

    /// The runtime image `written` would build on, if it exists yet: the
    /// image of that very type, else that of the version it resolves to.
    pub(crate) async fn existing_runtime(
        &self,
        written: &str,
    ) -> Option<launchway_containerd::Image> {
        if let Ok(image) = self.engine.image(&image_name(written)).await {
            return Some(image);
        }
        let resolution =
            launchway_containerd::runtimes::resolve(written, self.settings.runtimes.exact_versions)
                .ok()?;
        self.engine
            .image(&image_name(&resolution.runtime))
            .await
            .ok()
    }

    async fn runtime_info(&self, type_name: &str) -> Result<proto::RuntimeInfo, Status> {
        let entries = self
            .engine
            .runtimes()
            .await
            .map_err(|e| engine_status(&e))?;
        entries
            .iter()
            .find(|entry| entry.type_name == type_name)
            .map(info)
            .ok_or_else(|| Status::not_found(format!("runtime {type_name} is gone")))
    }

    pub(crate) async fn list_runtimes(&self) -> Result<proto::RuntimeList, Status> {
        let entries = self
            .engine
            .runtimes()
            .await
            .map_err(|e| engine_status(&e))?;
        let version = self
            .engine
            .version()
            .await
            .unwrap_or_else(|error| format!("of unknown version ({error})"));
        let mut services = Vec::new();
        for image_type in launchway_services::catalog::image_types() {
            let image = format!("{}{image_type}", crate::services::SERVICE_IMAGE_PREFIX);
            let digest = match self.engine.get_image(&image).await {
                Ok(found) => found.target.map(|t| t.digest).unwrap_or_default(),
                Err(_) => String::new(),
            };
            services.push(proto::RuntimeInfo {
                r#type: image_type,
                in_catalog: true,
                image_digest: digest,
                source: String::new(),
                image,
                ..Default::default()
            });
        }
        Ok(proto::RuntimeList {
            services,
            runtimes: entries.iter().map(info).collect(),
            containerd: format!(
                "{} (containerd {version}, namespace {})",
                self.engine.socket().display(),
                self.engine.namespace()
            ),
        })
    }

    pub(crate) fn build_runtime(
        self: &std::sync::Arc<Self>,
        type_name: String,
        rebuild: bool,
    ) -> ProgressStream {
        let (sender, receiver) = mpsc::channel::<Result<proto::RuntimeProgress, Status>>(64);
        let daemon = self.clone();
        self.tasks.spawn(async move {
            let (lines, mut lines_in) = mpsc::channel::<String>(64);
            let forward = {
                let sender = sender.clone();
                tokio::spawn(async move {
                    while let Some(line) = lines_in.recv().await {
                        let progress = proto::RuntimeProgress { line, done: None };
                        if sender.send(Ok(progress)).await.is_err() {
                            break;
                        }
                    }
                })
            };
            let options = daemon.build_options();
            let built = if rebuild {
                daemon
                    .engine
                    .build_runtime(&type_name, &lines, &options)
                    .await
            } else {
                daemon
                    .engine
                    .ensure_runtime(&type_name, &lines, &options)
                    .await
            };
            drop(lines);
            let _ = forward.await;
            let last = match built {
                Ok(_) => daemon
                    .runtime_info(&type_name)
                    .await
                    .map(|done| proto::RuntimeProgress {
                        line: format!("Runtime {type_name} is available"),
                        done: Some(done),
                    }),
                Err(error) => Err(engine_status(&error)),
            };
            let _ = sender.send(last).await;
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
    }

    pub(crate) async fn import_runtime(
        &self,
        type_name: &str,
        archive: &str,
    ) -> Result<proto::RuntimeInfo, Status> {
        let path = Path::new(archive);
        if !path.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "the archive path '{archive}' must be absolute"
            )));
        }
        let file = std::fs::File::open(path)
            .map_err(|error| Status::not_found(format!("cannot open {archive}: {error}")))?;
        self.engine
            .import_runtime(type_name, file)
            .await
            .map_err(|e| engine_status(&e))?;
        self.runtime_info(type_name).await
    }
}
