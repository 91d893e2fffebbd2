//! Long-running containers: the processes of a deployed app.
//!
//! Unlike a step, an app container outlives the call that made it: its
//! record, its snapshot and its task stay until [`Engine::remove_app`]. The
//! snapshot is a writable one under a read-only root (as `docker
//! --read-only` does) so runc can create bind-mount targets the image lacks;
//! the process sees nothing writable but its binds and `/tmp`. Output goes to
//! a file the shim appends to (`file://`), so an app never blocks on a reader.
//! Processes run inside it later (`exec`: hooks, `post_start`) stream their
//! output line by line.
//!
//! The records are labelled ([`AppLabels`]), so what the daemon made can be
//! found again after a crash.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use containerd_client::services::v1::{
    CreateTaskRequest, ExecProcessRequest, GetRequest, KillRequest, PauseTaskRequest,
    ResumeTaskRequest, StartRequest, WaitRequest,
};
use containerd_client::types::v1::Status as ProcessStatus;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, random_id};

/// The longest a pause or resume may take.
pub(crate) const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an exec that is running waits for containerd to come back
/// after losing it (its process lives on in the shim meanwhile).
pub const OUTAGE_WAIT: Duration = Duration::from_secs(60);
use crate::error::{EngineError, Result};
use crate::spec::{StepSpec, process_spec, runtime_spec};
use crate::step::{Output, OutputStream, StepOutcome, Waited};

pub(crate) const PROCESS_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/Process";
const SIGKILL: u32 = 9;
const SIGTERM: u32 = 15;

/// The label every app container carries, with its owner as value
/// (`<project>/<environment>`).
pub const OWNER_LABEL: &str = "org.launchway.environment";

/// What an app container is, for finding it again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppLabels {
    /// `<project>/<environment>`.
    pub owner: String,
    /// Extra labels (app, process, release).
    pub extra: HashMap<String, String>,
}

impl Engine {
    /// Creates (not starts) a container `id` running `process` on image
    /// `image_name`, read-only root, labelled.
    pub async fn create_app(
        &self,
        id: &str,
        image_name: &str,
        process: &StepSpec,
        labels: &AppLabels,
    ) -> Result<()> {
        let image = self.image(image_name).await?;
        let lease = self.create_lease("lw-app").await?;
        let made = async {
            self.unpack(&lease, &image).await?;
            self.prepare_snapshot(&lease, id, &image.chain_id).await?;
            let mut all_labels = labels.extra.clone();
            all_labels.insert(OWNER_LABEL.into(), labels.owner.clone());
            self.create_container(
                &lease,
                id,
                &image,
                runtime_spec(process, true, self.namespace(), id, &image.env())?,
                id,
                all_labels,
            )
            .await?;
            Ok(())
        }
        .await;
        if made.is_err() {
            let _ = self.remove_snapshot(id).await;
        }
        // The container record now holds the snapshot (and through it the
        // image's layers); the lease only covered the making.
        let released = self.delete_lease(&lease, false).await;
        made.and(released)
    }

    /// Starts the container's process, its stdout and stderr appended to `log`.
    pub async fn start_app(&self, id: &str, log: &std::path::Path) -> Result<()> {
        self.create_task(id, log).await?;
        self.start_task(id).await
    }

    /// Makes the container's task (the shim, `runc create`: namespaces,
    /// mounts and cgroup made, nothing of the image run yet), its stdout
    /// and stderr to be appended to `log`. Its bind mounts are fixed now:
    /// a directory bound must later be changed in place, not replaced.
    pub async fn create_task(&self, id: &str, log: &std::path::Path) -> Result<()> {
        let mounts = self.snapshot_mounts(id).await?;
        let uri = format!("file://{}", log.display());
        self.tasks()
            .create(self.request(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdout: uri.clone(),
                stderr: uri,
                terminal: false,
                ..Default::default()
            }))
            .await
            .map_err(|status| EngineError::rpc("task create", || format!("task {id}"), status))?;
        Ok(())
    }

    /// Runs the process of a task [`Engine::create_task`] made.
    pub async fn start_task(&self, id: &str) -> Result<()> {
        self.tasks()
            .start(self.request(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|status| EngineError::rpc("task start", || format!("task {id}"), status))?;
        Ok(())
    }

    /// Stops the container's processes: SIGTERM to its first process,
    /// SIGKILL to all of them after `grace`, then deletes the task. No task
    /// is not an error.
    ///
    /// SIGTERM goes to the first process only: it is the supervisor, which
    /// passes it on to every other process and waits for them. Sent to all,
    /// each process got it twice (once from containerd, once from the
    /// supervisor), and a shell trap could run twice.
    pub async fn stop_app(&self, id: &str, grace: Duration) -> Result<()> {
        self.halt_app(id, grace).await?;
        self.delete_task(id).await
    }

    /// [`Engine::stop_app`] up to the end of the container's first process,
    /// which ends every other (its PID namespace goes with it); the task is
    /// left for a later [`Engine::stop_app`] or [`Engine::remove_app`] to
    /// delete (the shim's exit and `runc delete` cost more than the stop).
    pub async fn halt_app(&self, id: &str, grace: Duration) -> Result<()> {
        let signal = |signal: u32, all: bool| {
            let mut tasks = self.tasks();
            let request = self.request(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all,
            });
            async move { tasks.kill(request).await }
        };
        match signal(SIGTERM, false).await {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(()),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {}
            Err(status) => {
                return Err(EngineError::rpc(
                    "task kill",
                    || format!("task {id}"),
                    status,
                ));
            }
        }
        let wait = || {
            let mut tasks = self.tasks();
            let request = self.request(WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            });
            async move { tasks.wait(request).await }
        };
        if tokio::time::timeout(grace, wait()).await.is_err() {
            let _ = signal(SIGKILL, true).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), wait()).await;
        }
        Ok(())
    }

    /// Freezes every process of the container (the cgroup freezer), so its
    /// files stop changing; [`Engine::resume_app`] thaws it. A container
    /// with no running task is not an error (there is nothing to freeze).
    /// Bounded by [`FREEZE_TIMEOUT`].
    pub async fn pause_app(&self, id: &str) -> Result<()> {
        let request = self.request(PauseTaskRequest {
            container_id: id.to_string(),
        });
        let mut tasks = self.tasks();
        Self::freeze_outcome(id, "task pause", tasks.pause(request)).await
    }

    /// Thaws a container [`Engine::pause_app`] froze; one that is not
    /// paused (or has no task) is left as it is.
    pub async fn resume_app(&self, id: &str) -> Result<()> {
        let request = self.request(ResumeTaskRequest {
            container_id: id.to_string(),
        });
        let mut tasks = self.tasks();
        Self::freeze_outcome(id, "task resume", tasks.resume(request)).await
    }

    /// A pause or resume bounded by [`FREEZE_TIMEOUT`]; no task, or one not
    /// in the state to change, is nothing to do.
    async fn freeze_outcome<T>(
        id: &str,
        operation: &'static str,
        call: impl std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    ) -> Result<()> {
        match tokio::time::timeout(FREEZE_TIMEOUT, call).await {
            Err(_) => Err(EngineError::Rpc {
                operation,
                code: tonic::Code::DeadlineExceeded,
                message: format!("{id} did not answer within {} s", FREEZE_TIMEOUT.as_secs()),
            }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status))
                if matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition
                ) =>
            {
                Ok(())
            }
            Ok(Err(status)) => Err(EngineError::rpc(operation, || format!("task {id}"), status)),
        }
    }

    /// Stops (at once) and deletes the container and its snapshot. A
    /// container that is already gone is not an error.
    pub async fn remove_app(&self, id: &str) -> Result<()> {
        self.stop_app(id, Duration::ZERO).await?;
        self.delete_container(id).await?;
        self.remove_snapshot(id).await
    }

    /// At start-up, when nothing of Launchway's runs: removes every
    /// container that is not an app's (build steps and workspaces a crash
    /// left, with their snapshots), then every lease, so that containerd
    /// collects what only they held (half-imported blobs, unfrozen layers).
    /// Returns the containers and leases removed.
    pub async fn remove_leftovers(&self) -> Result<(Vec<String>, usize)> {
        let apps = self.app_containers(None).await?;
        let mut removed = Vec::new();
        let own = self.instance_filter().into_iter().collect();
        for id in self.find_containers(own).await? {
            if !apps.contains(&id) {
                self.remove_app(&id).await?;
                removed.push(id);
            }
        }
        let leases = self.list_leases().await?;
        for (index, id) in leases.iter().enumerate() {
            self.delete_lease_id(id, index + 1 == leases.len()).await?;
        }
        Ok((removed, leases.len()))
    }

    /// The ids of the app containers of `owner` (`<project>/<environment>`),
    /// or of every owner when `None`.
    pub async fn app_containers(&self, owner: Option<&str>) -> Result<Vec<String>> {
        let mut filter = match owner {
            Some(owner) => format!("labels.\"{OWNER_LABEL}\"=={owner}"),
            None => format!("labels.\"{OWNER_LABEL}\""),
        };
        if let Some(instance) = self.instance_filter() {
            filter = format!("{filter},{instance}");
        }
        self.find_containers(vec![filter]).await
    }

    /// The containers of `owner` for `process` of `app` (the deploy labels
    /// them `org.launchway.app` and `org.launchway.process`): one, or for a
    /// moment during a deploy two (the serving one and the next release's,
    /// created before requests are held).
    pub async fn app_container(
        &self,
        owner: &str,
        app: &str,
        process: &str,
    ) -> Result<Vec<String>> {
        let mut filter = format!(
            "labels.\"{OWNER_LABEL}\"=={owner},labels.\"org.launchway.app\"=={app},labels.\"org.launchway.process\"=={process}"
        );
        if let Some(instance) = self.instance_filter() {
            filter = format!("{filter},{instance}");
        }
        self.find_containers(vec![filter]).await
    }

    /// Runs `process` inside the running container `id` (its args, env,
    /// cwd and user; its binds, network and limits are the container's) to
    /// its end or its timeout. Output lines go to `output`.
    pub async fn exec_in_app(
        &self,
        id: &str,
        process: &StepSpec,
        output: Output,
        cancel: &CancellationToken,
    ) -> Result<StepOutcome> {
        let spec = self.exec_process(id, process).await?;
        let exec_id = random_id("exec");
        let fifo_dir = tempfile::Builder::new()
            .prefix(&exec_id)
            .tempdir_in(self.scratch())
            .map_err(|error| EngineError::io("creating a FIFO directory", error))?;
        let (sink, direct) = crate::step::Sink::split(output);
        let (stdout, stderr, readers) = match direct {
            Some(target) if target.is_empty() => (String::new(), String::new(), Vec::new()),
            Some(path) => {
                let uri = format!("file://{path}");
                (uri.clone(), uri, Vec::new())
            }
            None => {
                let out = crate::step::make_fifo(fifo_dir.path(), "stdout")?;
                let err = crate::step::make_fifo(fifo_dir.path(), "stderr")?;
                let readers = vec![
                    (crate::step::open_fifo(&out)?, OutputStream::Stdout),
                    (crate::step::open_fifo(&err)?, OutputStream::Stderr),
                ];
                (
                    out.display().to_string(),
                    err.display().to_string(),
                    readers,
                )
            }
        };
        self.tasks()
            .exec(self.request(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: String::new(),
                stdout,
                stderr,
                terminal: false,
                spec: Some(spec),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(|status| EngineError::rpc("task exec", || format!("task {id}"), status))?;
        let exited = CancellationToken::new();
        let pumps: Vec<_> = match &sink {
            Some(sink) => readers
                .into_iter()
                .map(|(reader, stream)| sink.spawn_pump(reader, stream, &exited))
                .collect(),
            None => Vec::new(),
        };
        drop(sink);
        let outcome = self
            .run_exec(id, &exec_id, process.timeout, cancel, None)
            .await;
        exited.cancel();
        // A background child the command left keeps the output open: give
        // the readers a moment to finish, then stop reading.
        for mut pump in pumps {
            if tokio::time::timeout(Duration::from_secs(2), &mut pump)
                .await
                .is_err()
            {
                pump.abort();
            }
        }
        self.delete_exec(id, &exec_id).await;
        drop(fifo_dir);
        outcome
    }

    /// The process spec of an exec of `process` in container `id`.
    pub(crate) async fn exec_process(
        &self,
        id: &str,
        process: &StepSpec,
    ) -> Result<prost_types::Any> {
        let spec = process_spec(process, &self.exec_image_env(id).await?)?;
        let value = serde_json::to_vec(&spec).map_err(|error| EngineError::Invalid {
            what: "process spec",
            reason: error.to_string(),
        })?;
        Ok(prost_types::Any {
            type_url: PROCESS_TYPE_URL.into(),
            value,
        })
    }

    /// The environment of container `id`'s image. An exec does not inherit
    /// the container's environment: hooks start from the image's, as the
    /// container did.
    pub(crate) async fn exec_image_env(&self, id: &str) -> Result<Vec<String>> {
        let image = self
            .container_record(id)
            .await?
            .map(|c| c.image)
            .unwrap_or_default();
        Ok(self.image(&image).await?.env())
    }

    /// Starts exec `exec_id` of `id` (saying so on `started`) and waits for
    /// its end, its timeout or `cancel`.
    pub(crate) async fn run_exec(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
        on_start: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<StepOutcome> {
        let started = Instant::now();
        let deadline = timeout.map(|limit| started + limit);
        let start = || {
            let mut tasks = self.tasks();
            let request = self.request(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            });
            async move {
                tasks.start(request).await.map_err(|status| {
                    EngineError::rpc("exec start", || format!("task {id}"), status)
                })
            }
        };
        if let Err(error) = start().await {
            // The start may have reached the shim before containerd went:
            // once it is back, start it only if it did not.
            if !error.is_unavailable() || !self.await_answer(OUTAGE_WAIT, cancel).await {
                return Err(error);
            }
            if self.process_status(id, exec_id).await? == ProcessStatus::Created {
                start().await?;
            }
        }
        if let Some(on_start) = on_start {
            let _ = on_start.send(());
        }
        loop {
            let left = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            match self.wait_process(id, exec_id, left, false, cancel).await {
                Ok(Waited::Exited(exit_code)) => return Ok(self.outcome(exit_code, false, started)),
                Ok(Waited::TimedOut(exit_code)) => {
                    return Ok(self.outcome(exit_code, true, started));
                }
                Ok(Waited::Cancelled) => return Err(EngineError::Cancelled),
                // The process runs on in its shim: wait for containerd and
                // for the same process, never start it twice.
                Err(error) if error.is_unavailable() => {
                    if !self.await_answer(OUTAGE_WAIT, cancel).await {
                        return Err(EngineError::Lost {
                            what: format!("a process in {id}"),
                        });
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn outcome(&self, exit_code: u32, timed_out: bool, started: Instant) -> StepOutcome {
        StepOutcome {
            exit_code,
            timed_out,
            out_of_memory: false,
            elapsed: started.elapsed(),
        }
    }

    /// The state of process `exec_id` of `id`'s task.
    async fn process_status(&self, id: &str, exec_id: &str) -> Result<ProcessStatus> {
        let process = self.process_record(id, exec_id).await?;
        Ok(process.map_or(ProcessStatus::Unknown, |p| p.status()))
    }

    /// Process `exec_id` of `id`'s task (`""`: its main process) as the
    /// shim reports it.
    pub(crate) async fn process_record(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<Option<containerd_client::types::v1::Process>> {
        Ok(self
            .tasks()
            .get(self.request(GetRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(|status| EngineError::rpc("task get", || format!("task {id}"), status))?
            .into_inner()
            .process)
    }
}
