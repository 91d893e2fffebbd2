//! The admin API's build calls: list, info, logs, export, import, start,
//! cancel, clear the build cache, collect garbage.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use launchway_api::proto;
use launchway_git::{CommitTree, GitError, Objects, plan};
use launchway_store::{ActivityKind, ActivityResult, ActivityState, Build, BuildStatus, Project};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::Daemon;
use crate::activity::Work;
use crate::api::internal;
use crate::builds::is_build_id;

/// An activity to record and run.
pub(crate) struct Scheduled {
    pub(crate) project: String,
    pub(crate) environment: String,
    pub(crate) kind: ActivityKind,
    pub(crate) description: String,
    pub(crate) work: Work,
}

/// A server stream of log text.
pub(crate) type LogStream = Pin<Box<dyn Stream<Item = Result<proto::LogChunk, Status>> + Send>>;
/// A server stream of bytes.
pub(crate) type DataStream = Pin<Box<dyn Stream<Item = Result<proto::DataChunk, Status>> + Send>>;

/// How often `builds logs -f` looks for more.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Bytes per exported chunk.
const CHUNK: usize = 256 * 1024;

pub(crate) fn build_info(build: &Build) -> proto::BuildInfo {
    proto::BuildInfo {
        id: build.id.clone(),
        project: build.project.clone(),
        environment: build.environment.clone(),
        commit: build.commit.clone(),
        apps: build
            .apps
            .iter()
            .map(|app| proto::BuildAppInfo {
                name: app.name.clone(),
                runtime: app.runtime.clone(),
                tree_id: app.tree_id.clone(),
                build_key: app.build_key.clone().unwrap_or_default(),
                image: app.image.clone().unwrap_or_default(),
                digest: app.digest.clone().unwrap_or_default(),
                reused_from: app.reused_from.clone().unwrap_or_default(),
                built_on: app.built_on.clone().unwrap_or_default(),
                resolved_runtime: app.resolved_runtime.clone().unwrap_or_default(),
                egress: app
                    .egress
                    .iter()
                    .map(|traffic| proto::EgressTraffic {
                        destination: traffic.destination.clone(),
                        connections: traffic.connections,
                        refused: traffic.refused,
                        sent: traffic.sent,
                        received: traffic.received,
                    })
                    .collect(),
            })
            .collect(),
        status: build.status.as_str().into(),
        release: build.release.clone().unwrap_or_default(),
        started_at: build.started_at,
        elapsed_ms: build.elapsed_ms.unwrap_or_default(),
        description: build.description.clone(),
        activity: build.activity.unwrap_or_default(),
        imported_from: build.imported_from.clone().unwrap_or_default(),
    }
}

impl Daemon {
    /// The project `name`, or a not-found status naming it.
    pub(crate) fn existing_project(&self, name: &str) -> Result<Project, Status> {
        let project = self
            .store
            .project(name)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("there is no project `{name}`")))?;
        self.refuse_deleting(&project)?;
        Ok(project)
    }

    fn existing_build(&self, id: &str) -> Result<Build, Status> {
        self.store
            .build(id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("there is no build {id}")))
    }

    pub(crate) fn list_builds(
        &self,
        request: &proto::ListBuildsRequest,
    ) -> Result<proto::BuildList, Status> {
        self.existing_project(&request.project)?;
        let page = crate::paging::page_from(
            |after, n| {
                self.store
                    .builds_page(
                        &request.project,
                        None,
                        after.map(|(time, id)| (*time, id.as_str())),
                        n,
                    )
                    .map_err(internal)
            },
            |b| (b.started_at, b.id.clone()),
            &request.cursor,
            request.limit,
            20,
        )?;
        Ok(proto::BuildList {
            builds: page.items.iter().map(build_info).collect(),
            next_cursor: page.next_cursor,
        })
    }

    pub(crate) fn get_build(&self, id: &str) -> Result<proto::BuildInfo, Status> {
        Ok(build_info(&self.existing_build(id)?))
    }

    pub(crate) fn build_logs(
        self: &Arc<Self>,
        id: &str,
        follow: bool,
    ) -> Result<LogStream, Status> {
        self.existing_build(id)?;
        let (sender, receiver) = mpsc::channel(16);
        let daemon = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let mut after = None;
            loop {
                // Read the status before the log, so nothing written between is missed.
                let running = matches!(
                    daemon.store.build(&id),
                    Ok(Some(Build {
                        status: BuildStatus::Running,
                        ..
                    }))
                );
                let (text, last) = match daemon.store.build_log_after(&id, after) {
                    Ok(piece) => piece,
                    Err(error) => {
                        let _ = sender.send(Err(internal(error))).await;
                        return;
                    }
                };
                after = last;
                if !text.is_empty() {
                    let chunk = proto::LogChunk {
                        text,
                        ..proto::LogChunk::default()
                    };
                    if sender.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                if !follow || !running {
                    return;
                }
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    pub(crate) fn export_build_stream(self: &Arc<Self>, id: &str) -> Result<DataStream, Status> {
        let build = self.existing_build(id)?;
        if build.status != BuildStatus::Complete {
            return Err(Status::failed_precondition(format!(
                "build {id} is {}; only complete builds can be exported",
                build.status.as_str()
            )));
        }
        let (sender, receiver) = mpsc::channel::<Result<proto::DataChunk, Status>>(8);
        let (mut writer, mut reader) = tokio::io::duplex(CHUNK);
        let daemon = self.clone();
        let errors = sender.clone();
        tokio::spawn(async move {
            if let Err(message) = daemon.export_build(&build, &mut writer).await {
                let _ = errors.send(Err(Status::failed_precondition(message))).await;
            }
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut writer).await;
        });
        tokio::spawn(async move {
            let mut buffer = vec![0u8; CHUNK];
            loop {
                match tokio::io::AsyncReadExt::read(&mut reader, &mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => {
                        let chunk = proto::DataChunk {
                            data: buffer[..read].to_vec(),
                        };
                        if sender.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    pub(crate) async fn import_build_stream(
        &self,
        stream: Streaming<proto::ImportBuildChunk>,
    ) -> Result<proto::BuildInfo, Status> {
        let (project, reader, feeding) = self.import_reader(stream).await?;
        let imported = self.import_build(&project, reader).await;
        let fed = feeding.await;
        let build = imported.map_err(Status::invalid_argument)?;
        if let Ok(Err(status)) = fed {
            return Err(status);
        }
        Ok(build_info(&build))
    }

    /// `launchway plan`: each app's tree and build key at a ref.
    pub(crate) async fn plan_ref(
        &self,
        project: &str,
        reference: String,
    ) -> Result<proto::PlanReply, Status> {
        let project = self.existing_project(project)?;
        let repo = self.repo_path(&project.name);
        let spec = reference;
        // The build-visible variables of the branch's environment (the
        // default one's for a commit): they are part of the key.
        let branch = spec.strip_prefix("refs/heads/").unwrap_or(&spec);
        let environment = self
            .store
            .environment(&project.name, branch)
            .ok()
            .flatten()
            .or_else(|| {
                self.store
                    .environment(&project.name, &project.default_branch)
                    .ok()
                    .flatten()
            });
        let variables = match environment {
            Some(env) => crate::variables::build_visible(
                &self.environment_variables(&env).map_err(internal)?,
            ),
            None => Vec::new(),
        };
        let planned = tokio::task::spawn_blocking(move || -> Result<_, Status> {
            let repository = gix::open_opts(&repo, gix::open::Options::isolated())
                .map_err(|e| Status::internal(format!("cannot open the repository: {e}")))?;
            let commit = repository
                .rev_parse_single(spec.as_str())
                .ok()
                .and_then(|id| id.object().ok())
                .and_then(|object| object.peel_to_commit().ok())
                .ok_or_else(|| {
                    Status::not_found(format!("`{spec}` names no commit in this project"))
                })?;
            let objects =
                Objects::open(&repo, None).map_err(|e| Status::internal(e.to_string()))?;
            let tree = CommitTree::open(objects, &commit.id.to_string())
                .map_err(|e| Status::internal(e.to_string()))?;
            plan(&tree).map_err(|e| match e {
                GitError::InvalidConfig { diagnostics, .. } => {
                    Status::failed_precondition(diagnostics)
                }
                other => Status::internal(other.to_string()),
            })
        })
        .await
        .map_err(|_| Status::internal("planning stopped unexpectedly"))??;
        // The key needs the runtime image; a runtime not built yet has none.
        let mut apps = Vec::new();
        for app in planned.apps {
            let runtime = self.existing_runtime(&app.runtime).await;
            let build_key = runtime.map_or_else(String::new, |runtime| {
                let context = launchway_build::env::BuildContext {
                    project: &project.name,
                    app: &app.app,
                    tree_id: &app.tree_id,
                    variables: &variables,
                    entropy: "",
                };
                app.build_key(
                    &launchway_build::env::key_variables(&context),
                    runtime.digest(),
                )
            });
            apps.push(proto::AppPlan {
                name: app.name,
                runtime: app.runtime,
                source_root: app.source_root,
                tree_id: app.tree_id,
                build_key,
            });
        }
        Ok(proto::PlanReply {
            commit: planned.commit,
            apps,
        })
    }

    pub(crate) fn start_build(
        self: &Arc<Self>,
        project: &str,
        branch: &str,
    ) -> Result<LogStream, Status> {
        let project = self.existing_project(project)?;
        let branch = if branch.is_empty() {
            project.default_branch.clone()
        } else {
            branch.to_owned()
        };
        let env = self
            .store
            .environment(&project.name, &branch)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "there is no environment `{branch}`; push the branch first"
                ))
            })?;
        let head = env.head.clone().ok_or_else(|| {
            Status::failed_precondition(format!("environment `{branch}` has no commit yet"))
        })?;
        self.run_activity(
            &project.name,
            &branch,
            ActivityKind::Build,
            format!("build of {branch} requested"),
            Work::Build { commit: head },
        )
    }

    /// Records and runs one activity of `environment` and streams its log.
    pub(crate) fn run_activity(
        self: &Arc<Self>,
        project: &str,
        environment: &str,
        kind: ActivityKind,
        description: String,
        work: Work,
    ) -> Result<LogStream, Status> {
        self.run_activities(
            String::new(),
            vec![Scheduled {
                project: project.to_owned(),
                environment: environment.to_owned(),
                kind,
                description,
                work,
            }],
        )
    }

    /// Records and runs `scheduled` activities and streams their logs
    /// (after `preface`); the last chunk says whether any failed. A client
    /// that goes away does not stop them.
    pub(crate) fn run_activities(
        self: &Arc<Self>,
        preface: String,
        scheduled: Vec<Scheduled>,
    ) -> Result<LogStream, Status> {
        let (sink, mut lines) = mpsc::channel::<Vec<u8>>(64);
        let mut started = Vec::new();
        for item in scheduled {
            let (activity, handle) = self
                .schedule(
                    &item.project,
                    &item.environment,
                    item.kind,
                    &item.description,
                    item.work,
                    Some(sink.clone()),
                )
                .map_err(internal)?;
            started.push((activity, handle));
        }
        drop(sink);
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(async move {
            let first = started.first().map_or(0, |(activity, _)| activity.id);
            let mut text = preface;
            for (activity, _) in &started {
                text.push_str(&format!(
                    "Activity {}: {}\n",
                    activity.id, activity.description
                ));
            }
            let start = proto::LogChunk {
                text,
                activity: first,
                ..proto::LogChunk::default()
            };
            let _ = sender.send(Ok(start)).await;
            let forwarding = {
                let sender = sender.clone();
                tokio::spawn(async move {
                    while let Some(bytes) = lines.recv().await {
                        let chunk = proto::LogChunk {
                            text: String::from_utf8_lossy(&bytes).into_owned(),
                            ..proto::LogChunk::default()
                        };
                        let _ = sender.send(Ok(chunk)).await;
                    }
                })
            };
            let mut failed = false;
            for (_, handle) in started {
                failed |=
                    handle.await.unwrap_or(ActivityResult::Failure) == ActivityResult::Failure;
            }
            let _ = forwarding.await;
            let done = proto::LogChunk {
                text: String::new(),
                done: true,
                failed,
                activity: first,
            };
            let _ = sender.send(Ok(done)).await;
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    pub(crate) fn cancel_activity(&self, id: &str) -> Result<proto::CancelActivityReply, Status> {
        let activity_id = if is_build_id(id) {
            self.existing_build(id)?.activity.ok_or_else(|| {
                Status::failed_precondition(format!(
                    "build {id} was imported; there is nothing to cancel"
                ))
            })?
        } else {
            id.parse::<u64>().map_err(|_| {
                Status::invalid_argument(format!(
                    "`{id}` is neither an activity number nor a build id"
                ))
            })?
        };
        let activity = self
            .store
            .activity(activity_id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("there is no activity {activity_id}")))?;
        if !matches!(
            activity.state,
            ActivityState::Pending | ActivityState::InProgress
        ) {
            return Err(Status::failed_precondition(format!(
                "activity {activity_id} is {}; only pending and running activities can be cancelled",
                activity.state.as_str()
            )));
        }
        let token = self.lock_cancels().get(&activity_id).cloned();
        let Some(token) = token else {
            return Err(Status::failed_precondition(format!(
                "activity {activity_id} is finishing; it can no longer be cancelled"
            )));
        };
        token.cancel();
        Ok(proto::CancelActivityReply {
            activity: activity_id,
            state: activity.state.as_str().into(),
        })
    }

    pub(crate) async fn clear_build_cache(
        &self,
        project: &str,
        app: &str,
    ) -> Result<proto::ClearBuildCacheReply, Status> {
        self.existing_project(project)?;
        // The registry's copies are left behind by a new generation.
        self.store
            .update_project(project, |record| {
                let generation = record
                    .build_cache_generations
                    .entry(app.to_owned())
                    .or_default();
                *generation = generation.saturating_add(1);
            })
            .map_err(|error| Status::internal(error.to_string()))?;
        let app = (!app.is_empty()).then_some(app);
        let cleared = self
            .builder
            .clear_cache(project, app)
            .await
            .map_err(|error| Status::internal(error.to_string()))?;
        Ok(proto::ClearBuildCacheReply { cleared })
    }

    /// The generation of `app`'s build cache (0 when the project cannot be read).
    pub(crate) fn build_cache_generation(&self, project: &str, app: &str) -> u64 {
        self.store
            .project(project)
            .ok()
            .flatten()
            .map_or(0, |record| record.build_cache_generation(app))
    }

    pub(crate) async fn garbage(&self) -> Result<proto::CollectGarbageReply, Status> {
        let (removed, kept) = self.collect_garbage().await.map_err(Status::unavailable)?;
        Ok(proto::CollectGarbageReply {
            removed,
            kept: u32::try_from(kept).unwrap_or(u32::MAX),
        })
    }
}

impl Daemon {
    /// An import's project (named by its first chunk, which must exist), a
    /// blocking reader of its data and the task feeding it.
    pub(crate) async fn import_reader(
        &self,
        mut stream: Streaming<proto::ImportBuildChunk>,
    ) -> Result<
        (
            String,
            ChannelReader,
            tokio::task::JoinHandle<Result<(), Status>>,
        ),
        Status,
    > {
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("nothing was sent"))?;
        let project = first.project.clone();
        self.existing_project(&project)?;
        let (reader, feeding) = chunk_reader(first.data, stream);
        Ok((project, reader, feeding))
    }
}

/// A blocking `Read` over an import's chunks (`first`'s data, then the
/// stream's), and the task feeding it (its error, if the stream failed).
fn chunk_reader(
    first: Vec<u8>,
    mut stream: Streaming<proto::ImportBuildChunk>,
) -> (ChannelReader, tokio::task::JoinHandle<Result<(), Status>>) {
    // The archive is read on a blocking thread; chunks reach it through a channel.
    let (sender, receiver) = mpsc::channel::<Vec<u8>>(8);
    let feeding = tokio::spawn(async move {
        if !first.is_empty() && sender.send(first).await.is_err() {
            return Ok(());
        }
        while let Some(chunk) = stream.message().await? {
            if sender.send(chunk.data).await.is_err() {
                break;
            }
        }
        Ok::<(), Status>(())
    });
    let reader = ChannelReader {
        receiver,
        current: Vec::new(),
        position: 0,
    };
    (reader, feeding)
}

/// A blocking `Read` over chunks arriving on a channel.
pub(crate) struct ChannelReader {
    receiver: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.position >= self.current.len() {
            match self.receiver.blocking_recv() {
                Some(chunk) => {
                    self.current = chunk;
                    self.position = 0;
                }
                None => return Ok(0),
            }
        }
        let available = &self.current[self.position..];
        let count = available.len().min(buffer.len());
        buffer[..count].copy_from_slice(&available[..count]);
        self.position += count;
        Ok(count)
    }
}

/// Streams the log of `activity`, started elsewhere with `lines` as its
/// sink, and a last chunk saying how it ended (read from the store once
/// the sink is closed, which the activity's end does).
pub(crate) fn stream_activity(
    daemon: Arc<Daemon>,
    activity: launchway_store::Activity,
    mut lines: mpsc::Receiver<Vec<u8>>,
) -> LogStream {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let start = proto::LogChunk {
            text: format!("Activity {}: {}\n", activity.id, activity.description),
            activity: activity.id,
            ..proto::LogChunk::default()
        };
        let _ = sender.send(Ok(start)).await;
        while let Some(bytes) = lines.recv().await {
            let chunk = proto::LogChunk {
                text: String::from_utf8_lossy(&bytes).into_owned(),
                ..proto::LogChunk::default()
            };
            let _ = sender.send(Ok(chunk)).await;
        }
        let failed = daemon
            .store
            .activity(activity.id)
            .ok()
            .flatten()
            .is_none_or(|ended| ended.result != Some(ActivityResult::Success));
        let done = proto::LogChunk {
            text: String::new(),
            done: true,
            failed,
            activity: activity.id,
        };
        let _ = sender.send(Ok(done)).await;
    });
    Box::pin(ReceiverStream::new(receiver))
}
