//! Running one step: a container from an image (or a workspace's writable
//! snapshot), its process, its output, its end, and the cleanup of every
//! resource it made — on success, failure, timeout, cancellation, and when
//! the caller drops the future half-way (the cleanup then finishes in the
//! background; the lease expires in any case).
//!
//! Call order (tech-notes §1): lease → unpack → snapshot → Containers.Create →
//! FIFOs opened → Tasks.Create (rootfs mounts given explicitly) → readers
//! start → Tasks.Start → Tasks.Wait (killed on timeout or cancel) → readers
//! drained → Tasks.Delete → Containers.Delete → snapshot removed → lease
//! deleted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, KillRequest, StartRequest, WaitRequest, container::Runtime,
};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, Lease, random_id};
use crate::error::{EngineError, Result};
use crate::image::Image;
use crate::spec::{StepSpec, runtime_spec};

const RUNTIME: &str = "io.containerd.runc.v2";
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Lines longer than this are delivered in pieces, so one endless line
/// cannot exhaust memory.
pub const MAX_LINE: usize = 64 * 1024;
/// SIGKILL.
const KILL: u32 = 9;

/// Which of the process's outputs a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// One line of a step's output, without its newline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: OutputStream,
    pub line: String,
}

/// Where a step's output goes.
#[derive(Debug)]
pub enum Output {
    /// Line by line, as written (FIFOs this side reads). If the receiver is
    /// dropped, the output is still read and discarded, never blocking the step.
    Lines(mpsc::Sender<OutputLine>),
    /// Byte for byte, as written (FIFOs this side reads). After the process
    /// ends, read until quiet (a background child may hold it open).
    Bytes(mpsc::Sender<crate::attached::OutputChunk>),
    /// Appended to a file by containerd's shim (for long-running processes:
    /// nothing can block them if nobody reads).
    File(PathBuf),
    Discard,
}

/// What the filesystem of a step is.
#[derive(Debug)]
pub enum Rootfs<'a> {
    /// A fresh snapshot of the image: read-only (a view) or writable (thrown
    /// away after the step).
    Image { name: &'a str, writable: bool },
    /// An app's image as its containers see it: a read-only root over a
    /// writable snapshot (so runc can make the bind targets the image
    /// lacks), thrown away after the step.
    App { name: &'a str },
    /// The writable snapshot of a workspace, which outlives the step.
    Workspace(&'a Workspace),
}

/// How a step ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepOutcome {
    pub exit_code: u32,
    /// Killed because it ran past its timeout (exit code 137).
    pub timed_out: bool,
    /// The kernel's OOM killer ended a process of the step (memory limit).
    pub out_of_memory: bool,
    pub elapsed: Duration,
}

impl StepOutcome {
    pub fn success(&self) -> bool {
        self.exit_code == 0 && !self.timed_out
    }

    /// A sentence for a build log.
    pub fn describe(&self) -> String {
        if self.timed_out {
            format!(
                "killed after its time limit ({:.1} s)",
                self.elapsed.as_secs_f64()
            )
        } else if self.out_of_memory {
            format!(
                "killed for exceeding its memory limit (exit code {})",
                self.exit_code
            )
        } else {
            format!("exited with code {}", self.exit_code)
        }
    }
}

/// A writable snapshot of an image that steps run on one after another and
/// that can then be frozen into a new image.
#[derive(Debug)]
pub struct Workspace {
    pub(crate) engine: Engine,
    pub(crate) lease: Lease,
    pub(crate) key: String,
    pub(crate) image: Image,
    pub(crate) finished: bool,
}

impl Workspace {
    /// The image the workspace started from.
    pub fn base(&self) -> &Image {
        &self.image
    }

    /// Removes the snapshot and its lease.
    pub async fn discard(mut self) -> Result<()> {
        self.finished = true;
        self.leftovers().clean().await
    }

    fn leftovers(&self) -> Leftovers {
        Leftovers {
            engine: self.engine.clone(),
            id: self.key.clone(),
            lease: Some(self.lease.clone()),
            snapshot: Some(self.key.clone()),
            container: false,
            task: false,
            fifo_dir: None,
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut leftovers = self.leftovers();
            runtime.spawn(async move {
                let _ = leftovers.clean().await;
            });
        }
    }
}

/// Everything a step made, undone in reverse order.
#[derive(Debug)]
struct Leftovers {
    engine: Engine,
    id: String,
    lease: Option<Lease>,
    snapshot: Option<String>,
    container: bool,
    task: bool,
    fifo_dir: Option<tempfile::TempDir>,
}

/// What a step or workspace could not remove while containerd was not
/// answering, kept for [`Engine::clean_deferred`].
#[derive(Debug)]
pub(crate) struct Deferred {
    id: String,
    lease: Option<Lease>,
    snapshot: Option<String>,
    container: bool,
    task: bool,
}

impl Leftovers {
    /// Removes what is left. What fails because containerd is not
    /// answering is kept on the engine for [`Engine::clean_deferred`].
    async fn clean(&mut self) -> Result<()> {
        let engine = self.engine.clone();
        let mut first_error = None;
        let mut later = Deferred {
            id: self.id.clone(),
            lease: None,
            snapshot: None,
            container: false,
            task: false,
        };
        let mut note = |result: Result<()>| -> bool {
            match result {
                Ok(()) => false,
                Err(error) => {
                    tracing::warn!(step = %self.id, %error, "cleaning up a step");
                    let unavailable = error.is_unavailable();
                    first_error.get_or_insert(error);
                    unavailable
                }
            }
        };
        if self.task {
            later.task = note(remove_task(&engine, &self.id).await);
            self.task = false;
        }
        if self.container {
            later.container = note(engine.delete_container(&self.id).await);
            self.container = false;
        }
        if let Some(key) = self.snapshot.take()
            && note(engine.remove_snapshot(&key).await)
        {
            later.snapshot = Some(key);
        }
        if let Some(lease) = self.lease.take()
            && note(engine.delete_lease(&lease, false).await)
        {
            later.lease = Some(lease);
        }
        self.fifo_dir = None;
        let unfinished =
            later.task || later.container || later.snapshot.is_some() || later.lease.is_some();
        if unfinished && let Ok(mut deferred) = engine.deferred.lock() {
            deferred.push(later);
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Engine {
    /// Retries the clean-ups containerd's outage deferred (build steps and
    /// workspaces it could not remove). Returns how many are still pending.
    pub async fn clean_deferred(&self) -> usize {
        let pending = match self.deferred.lock() {
            Ok(mut deferred) => std::mem::take(&mut *deferred),
            Err(_) => return 0,
        };
        for entry in pending {
            let mut leftovers = Leftovers {
                engine: self.clone(),
                id: entry.id,
                lease: entry.lease,
                snapshot: entry.snapshot,
                container: entry.container,
                task: entry.task,
                fifo_dir: None,
            };
            let _ = leftovers.clean().await;
        }
        self.deferred.lock().map_or(0, |deferred| deferred.len())
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if !self.task && !self.container && self.snapshot.is_none() && self.lease.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut rest = Leftovers {
            engine: self.engine.clone(),
            id: self.id.clone(),
            lease: self.lease.take(),
            snapshot: self.snapshot.take(),
            container: std::mem::take(&mut self.container),
            task: std::mem::take(&mut self.task),
            fifo_dir: self.fifo_dir.take(),
        };
        runtime.spawn(async move {
            let _ = rest.clean().await;
        });
    }
}

/// Kills (if still running), waits for and deletes the task of `id`.
async fn remove_task(engine: &Engine, id: &str) -> Result<()> {
    let _ = engine
        .tasks()
        .kill(engine.request(KillRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            signal: KILL,
            all: true,
        }))
        .await;
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        engine.tasks().wait(engine.request(WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })),
    )
    .await;
    engine.delete_task(id).await
}

/// Where the output read from FIFOs goes.
pub(crate) enum Sink {
    Lines(mpsc::Sender<OutputLine>),
    Bytes(mpsc::Sender<crate::attached::OutputChunk>),
}

impl Sink {
    /// The sink of `output` read from FIFOs, or else the shim's own target
    /// for both streams (a `file://` path, or nothing).
    pub(crate) fn split(output: Output) -> (Option<Sink>, Option<String>) {
        match output {
            Output::Lines(sender) => (Some(Sink::Lines(sender)), None),
            Output::Bytes(sender) => (Some(Sink::Bytes(sender)), None),
            Output::File(path) => (None, Some(path.display().to_string())),
            Output::Discard => (None, Some(String::new())),
        }
    }

    /// Reads `receiver` into this sink; `exited` is cancelled when the
    /// process ended.
    pub(crate) fn spawn_pump(
        &self,
        receiver: tokio::net::unix::pipe::Receiver,
        stream: OutputStream,
        exited: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        match self {
            Sink::Lines(sender) => tokio::spawn(pump(receiver, stream, sender.clone())),
            Sink::Bytes(sender) => tokio::spawn(crate::attached::pump_bytes(
                receiver,
                stream,
                sender.clone(),
                CancellationToken::new(),
                exited.clone(),
            )),
        }
    }
}

/// Reads a FIFO to its end, sending each line (or `MAX_LINE` piece).
pub(crate) async fn pump(
    mut receiver: tokio::net::unix::pipe::Receiver,
    stream: OutputStream,
    sender: mpsc::Sender<OutputLine>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut receiver_gone = false;
    let send = async |bytes: &[u8], receiver_gone: &mut bool| {
        if *receiver_gone {
            return;
        }
        let line = OutputLine {
            stream,
            line: String::from_utf8_lossy(bytes).into_owned(),
        };
        if sender.send(line).await.is_err() {
            *receiver_gone = true;
        }
    };
    loop {
        let read = match receiver.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        pending.extend_from_slice(&chunk[..read]);
        let mut start = 0;
        while let Some(position) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + position;
            send(&pending[start..end], &mut receiver_gone).await;
            start = end + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            let piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
            send(&piece, &mut receiver_gone).await;
        }
    }
    if !pending.is_empty() {
        send(&pending, &mut receiver_gone).await;
    }
}

/// Whether the kernel OOM-killed a process in the step's memory cgroup.
/// Read between exit and task delete, while the cgroup still exists.
fn oom_killed(namespace: &str, id: &str) -> bool {
    let v2 = PathBuf::from(format!("/sys/fs/cgroup/{namespace}/{id}/memory.events"));
    let v1 = PathBuf::from(format!(
        "/sys/fs/cgroup/memory/{namespace}/{id}/memory.oom_control"
    ));
    [v2, v1].iter().any(|path| {
        std::fs::read_to_string(path).is_ok_and(|text| {
            text.lines().any(|line| {
                line.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}

pub(crate) fn make_fifo(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(
        |errno| EngineError::io(format!("creating FIFO {}", path.display()), errno.into()),
    )?;
    Ok(path)
}

pub(crate) fn open_fifo(path: &Path) -> Result<tokio::net::unix::pipe::Receiver> {
    tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(|error| EngineError::io(format!("opening FIFO {}", path.display()), error))
}

impl Engine {
    /// Deletes the (stopped) task of container `id`; none is not an error.
    pub(crate) async fn delete_task(&self, id: &str) -> Result<()> {
        match self
            .tasks()
            .delete(self.request(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(EngineError::rpc(
                "task delete",
                || format!("task {id}"),
                status,
            )),
        }
    }

    /// Deletes the container record `id`; one already gone is not an error.
    pub(crate) async fn delete_container(&self, id: &str) -> Result<()> {
        match self
            .containers()
            .delete(self.request(DeleteContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(EngineError::rpc(
                "container delete",
                || format!("container {id}"),
                status,
            )),
        }
    }

    /// Creates the container record `id`: `spec` on `image`, its root the
    /// snapshot `snapshot_key`, with `labels`, under `lease`.
    pub(crate) async fn create_container(
        &self,
        lease: &Lease,
        id: &str,
        image: &Image,
        spec: oci_spec::runtime::Spec,
        snapshot_key: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let spec_json = serde_json::to_vec(&spec).map_err(|error| EngineError::Invalid {
            what: "container spec",
            reason: error.to_string(),
        })?;
        let mut labels = labels;
        self.label_instance(&mut labels);
        let container = Container {
            id: id.to_string(),
            image: image.name.clone(),
            labels,
            runtime: Some(Runtime {
                name: RUNTIME.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.into(),
                value: spec_json,
            }),
            snapshotter: crate::engine::SNAPSHOTTER.into(),
            snapshot_key: snapshot_key.to_string(),
            ..Default::default()
        };
        self.containers()
            .create(self.leased(
                CreateContainerRequest {
                    container: Some(container),
                },
                lease,
            ))
            .await
            .map_err(|status| {
                EngineError::rpc("container create", || format!("container {id}"), status)
            })?;
        Ok(())
    }
}

/// How waiting for a process ended.
#[derive(Debug)]
pub(crate) enum Waited {
    Exited(u32),
    /// Killed at its time limit; the exit code it then had.
    TimedOut(u32),
    Cancelled,
}

impl Engine {
    /// Waits for the process `exec_id` of task `id` (`""` for the task's
    /// own) to exit; kills it (all of the task's processes with
    /// `kill_all`) at `timeout` or when `cancel` fires.
    pub(crate) async fn wait_process(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Option<Duration>,
        kill_all: bool,
        cancel: &CancellationToken,
    ) -> Result<Waited> {
        let wait = || {
            let mut tasks = self.tasks();
            let request = self.request(WaitRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            });
            async move {
                tasks
                    .wait(request)
                    .await
                    .map(|response| response.into_inner().exit_status)
                    .map_err(|status| EngineError::rpc("task wait", || "task".into(), status))
            }
        };
        let kill = || {
            let mut tasks = self.tasks();
            let request = self.request(KillRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                signal: KILL,
                all: kill_all,
            });
            async move {
                let _ = tasks.kill(request).await;
            }
        };
        let deadline = async {
            match timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            exit = wait() => Ok(Waited::Exited(exit?)),
            () = deadline => {
                kill().await;
                Ok(Waited::TimedOut(wait().await?))
            }
            () = cancel.cancelled() => {
                kill().await;
                let _ = wait().await;
                Ok(Waited::Cancelled)
            }
        }
    }

    /// Starts a workspace: a writable snapshot of image `image_name`.
    pub async fn workspace(&self, image_name: &str) -> Result<Workspace> {
        let image = self.image(image_name).await?;
        let lease = self.create_lease("lw-workspace").await?;
        let key = random_id("lw-workspace");
        let prepared = async {
            self.unpack(&lease, &image).await?;
            self.prepare_snapshot(&lease, &key, &image.chain_id).await
        }
        .await;
        if let Err(error) = prepared {
            let _ = self.delete_lease(&lease, false).await;
            return Err(error);
        }
        Ok(Workspace {
            engine: self.clone(),
            lease,
            key,
            image,
            finished: false,
        })
    }

    /// Runs one step to its end and removes everything it made. Returns how
    /// it ended; `Err(Cancelled)` when `cancel` fired first (the process is
    /// killed and cleaned up before this returns).
    pub async fn run_step(
        &self,
        rootfs: Rootfs<'_>,
        step: &StepSpec,
        output: Output,
        cancel: &CancellationToken,
    ) -> Result<StepOutcome> {
        let id = random_id("step");
        let mut leftovers = Leftovers {
            engine: self.clone(),
            id: id.clone(),
            lease: None,
            snapshot: None,
            container: false,
            task: false,
            fifo_dir: None,
        };
        let outcome = self
            .run_in(&mut leftovers, rootfs, step, output, cancel)
            .await;
        let cleaned = leftovers.clean().await;
        let outcome = outcome?;
        cleaned?;
        Ok(outcome)
    }

    async fn run_in(
        &self,
        leftovers: &mut Leftovers,
        rootfs: Rootfs<'_>,
        step: &StepSpec,
        output: Output,
        cancel: &CancellationToken,
    ) -> Result<StepOutcome> {
        let id = leftovers.id.clone();
        let lease = self.create_lease("lw-step").await?;
        leftovers.lease = Some(lease.clone());

        let (image, mounts, readonly, snapshot_key) = match rootfs {
            Rootfs::Image { name, writable } => {
                let image = self.image(name).await?;
                self.unpack(&lease, &image).await?;
                leftovers.snapshot = Some(id.clone());
                let mounts = if writable {
                    self.prepare_snapshot(&lease, &id, &image.chain_id).await?
                } else {
                    self.view_snapshot(&lease, &id, &image.chain_id).await?
                };
                (image, mounts, !writable, id.clone())
            }
            Rootfs::App { name } => {
                let image = self.image(name).await?;
                self.unpack(&lease, &image).await?;
                leftovers.snapshot = Some(id.clone());
                let mounts = self.prepare_snapshot(&lease, &id, &image.chain_id).await?;
                (image, mounts, true, id.clone())
            }
            Rootfs::Workspace(workspace) => {
                let mounts = self.snapshot_mounts(&workspace.key).await?;
                (
                    workspace.image.clone(),
                    mounts,
                    false,
                    workspace.key.clone(),
                )
            }
        };

        // Marked before the call: if this future is dropped while the call is
        // in flight, the cleanup must still look for what it may have made.
        leftovers.container = true;
        self.create_container(
            &lease,
            &id,
            &image,
            runtime_spec(step, readonly, self.namespace(), &id, &image.env())?,
            &snapshot_key,
            HashMap::new(),
        )
        .await?;

        // stdio: FIFOs are opened for reading before the task exists; reading
        // starts once containerd has opened the write ends (Tasks.Create).
        let mut readers = Vec::new();
        let (sink, direct) = Sink::split(output);
        let (stdout, stderr) = match direct {
            Some(target) => (target.clone(), target),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix(&id)
                    .tempdir_in(self.scratch())
                    .map_err(|error| EngineError::io("creating a FIFO directory", error))?;
                let out = make_fifo(dir.path(), "stdout")?;
                let err = make_fifo(dir.path(), "stderr")?;
                readers.push((open_fifo(&out)?, OutputStream::Stdout));
                readers.push((open_fifo(&err)?, OutputStream::Stderr));
                leftovers.fifo_dir = Some(dir);
                (out.display().to_string(), err.display().to_string())
            }
        };

        leftovers.task = true;
        self.tasks()
            .create(self.leased(
                CreateTaskRequest {
                    container_id: id.clone(),
                    rootfs: mounts,
                    stdin: String::new(),
                    stdout,
                    stderr,
                    terminal: false,
                    ..Default::default()
                },
                &lease,
            ))
            .await
            .map_err(|status| EngineError::rpc("task create", || format!("task {id}"), status))?;

        let exited = CancellationToken::new();
        let pumps: Vec<_> = match &sink {
            Some(sink) => readers
                .into_iter()
                .map(|(reader, stream)| sink.spawn_pump(reader, stream, &exited))
                .collect(),
            None => Vec::new(),
        };
        drop(sink);

        let started = Instant::now();
        self.tasks()
            .start(self.request(StartRequest {
                container_id: id.clone(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|status| EngineError::rpc("task start", || format!("task {id}"), status))?;

        let (exit_code, timed_out) = match self
            .wait_process(&id, "", step.timeout, true, cancel)
            .await
            .inspect(|_| exited.cancel())?
        {
            Waited::Exited(code) => (code, false),
            Waited::TimedOut(code) => (code, true),
            Waited::Cancelled => {
                for pump in pumps {
                    let _ = pump.await;
                }
                return Err(EngineError::Cancelled);
            }
        };
        let elapsed = started.elapsed();
        let out_of_memory =
            step.limits.memory_bytes.is_some() && !timed_out && oom_killed(self.namespace(), &id);
        for pump in pumps {
            let _ = pump.await;
        }
        Ok(StepOutcome {
            exit_code,
            timed_out,
            out_of_memory,
            elapsed,
        })
    }
}
