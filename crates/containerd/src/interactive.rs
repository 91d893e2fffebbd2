//! Interactive execs: a shell or a command in a running app container, as
//! `ssh` into an app asks (a pty or not, window-size changes, signals).
//!
//! - With a pty, runc gives the process a console: output is one stream
//!   (stderr goes through the terminal too, so no stderr FIFO is given: the
//!   shim would never open it and the reader would never end) and Ctrl-C is
//!   byte 0x03 on stdin, which the terminal turns into SIGINT for the
//!   foreground group: no signal needs sending for it.
//! - The process's environment is the *container's* (what the deploy gave
//!   the app: `PLATFORM_*`, `PATH`, the CA variables) with the exec's own
//!   variables over it, not the image's.
//! - Stdin and control (resizes, signals) come on separate channels, so a
//!   process that does not read its input still gets its signals; both wait
//!   for the start: a resize before it is lost by the shim (the first size
//!   goes in the spec's `consoleSize` instead).
//! - The end of stdin (its sender dropped) closes the shim's writer
//!   (`CloseIO`); with a pty that hangs the terminal up.
//! - runc makes an exec's process a session and group leader: signals and
//!   the final kill go to its whole group from the host (`kill(-pid)`), so
//!   the command a wrapper shell runs does not outlive it.
//! - The exec is killed when `cancel` fires or `output`'s receiver goes
//!   away, and its record is deleted on every path through this function.
//!   A caller that may be dropped mid-way runs it in a task and cancels.

use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, ResizePtyRequest,
};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::attached::{OutputChunk, pump_bytes};
use crate::engine::{Engine, random_id};
use crate::error::{EngineError, Result};
use crate::spec::{StepSpec, process_spec};
use crate::step::{OutputStream, StepOutcome, make_fifo};

/// A terminal's size in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtySize {
    pub cols: u16,
    pub rows: u16,
}

/// What a client asks of a running interactive exec, besides its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecControl {
    Resize(PtySize),
    /// A signal number for the exec's process group.
    Signal(i32),
}

/// The streams of an exec with input.
pub(crate) struct ExecIo {
    /// Its input; the sender dropped is the end of input.
    pub(crate) stdin: mpsc::Receiver<Vec<u8>>,
    pub(crate) control: Option<mpsc::Receiver<ExecControl>>,
    pub(crate) output: mpsc::Sender<OutputChunk>,
}

/// Sends `signal` to the process group `group` leads (runc makes an exec's
/// process a session leader); nothing for an unknown group or signal.
fn signal_group(group: u32, signal: i32) {
    let (Ok(group), Ok(signal)) = (
        i32::try_from(group),
        nix::sys::signal::Signal::try_from(signal),
    ) else {
        return;
    };
    if group > 1 {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), signal);
    }
}

/// Which environment an exec's own variables go over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EnvBase {
    /// The image's, as the container's process started from.
    Image,
    /// What the container's process was given (the deploy's variables).
    Container,
}

/// After the process ended, its output is read until it has been quiet
/// this long: a background child it left may hold the pipe open.
pub(crate) const QUIET_AFTER_EXIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Engine {
    /// Runs `process` in the running container `id` with the container's
    /// environment under the process's own, a pty of `tty`'s size if given,
    /// fed by `input`, its output sent to `output` as it comes.
    #[allow(clippy::too_many_arguments)]
    pub async fn exec_interactive(
        &self,
        id: &str,
        process: &StepSpec,
        tty: Option<PtySize>,
        stdin: mpsc::Receiver<Vec<u8>>,
        control: mpsc::Receiver<ExecControl>,
        output: mpsc::Sender<OutputChunk>,
        cancel: &CancellationToken,
    ) -> Result<StepOutcome> {
        let io = ExecIo {
            stdin,
            control: Some(control),
            output,
        };
        self.exec_streams(id, process, tty, EnvBase::Container, io, cancel)
            .await
    }

    /// The one exec with stdin and streamed output (`exec_interactive`,
    /// `exec_attached`).
    pub(crate) async fn exec_streams(
        &self,
        id: &str,
        process: &StepSpec,
        tty: Option<PtySize>,
        env_base: EnvBase,
        io: ExecIo,
        cancel: &CancellationToken,
    ) -> Result<StepOutcome> {
        let ExecIo {
            mut stdin,
            control,
            output,
        } = io;
        let base_env = match env_base {
            EnvBase::Container => self.container_env(id).await?,
            EnvBase::Image => self.exec_image_env(id).await?,
        };
        let mut spec = process_spec(process, &base_env)?;
        if let Some(size) = tty {
            spec.set_terminal(Some(true));
            spec.set_console_size(Some(
                oci_spec::runtime::BoxBuilder::default()
                    .width(u64::from(size.cols))
                    .height(u64::from(size.rows))
                    .build()
                    .map_err(|error| EngineError::Invalid {
                        what: "console size",
                        reason: error.to_string(),
                    })?,
            ));
        }
        let value = serde_json::to_vec(&spec).map_err(|error| EngineError::Invalid {
            what: "process spec",
            reason: error.to_string(),
        })?;
        let exec_id = random_id(match env_base {
            EnvBase::Container => "shell",
            EnvBase::Image => "attach",
        });
        let fifo_dir = tempfile::Builder::new()
            .prefix(&exec_id)
            .tempdir_in(self.scratch())
            .map_err(|error| EngineError::io("creating a FIFO directory", error))?;
        let stdin_path = make_fifo(fifo_dir.path(), "stdin")?;
        let out = make_fifo(fifo_dir.path(), "stdout")?;
        let mut writer = Some(
            tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(&stdin_path)
                .map_err(|error| {
                    EngineError::io(format!("opening FIFO {}", stdin_path.display()), error)
                })?,
        );
        let mut readers = vec![(crate::step::open_fifo(&out)?, OutputStream::Stdout)];
        let stderr = if tty.is_some() {
            String::new()
        } else {
            let err = make_fifo(fifo_dir.path(), "stderr")?;
            readers.push((crate::step::open_fifo(&err)?, OutputStream::Stderr));
            err.display().to_string()
        };
        self.tasks()
            .exec(self.request(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: stdin_path.display().to_string(),
                stdout: out.display().to_string(),
                stderr,
                terminal: tty.is_some(),
                spec: Some(prost_types::Any {
                    type_url: crate::app::PROCESS_TYPE_URL.into(),
                    value,
                }),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(|status| EngineError::rpc("task exec", || format!("task {id}"), status))?;
        let reader_gone = cancel.child_token();
        let exited = CancellationToken::new();
        let pumps: Vec<_> = readers
            .into_iter()
            .map(|(receiver, stream)| {
                tokio::spawn(pump_bytes(
                    receiver,
                    stream,
                    output.clone(),
                    reader_gone.clone(),
                    exited.clone(),
                ))
            })
            .collect();
        drop(output);
        let (started, on_start) = oneshot::channel::<()>();
        // The exec's host pid once it runs (0 before): its process group.
        let (pid_sender, pid) = tokio::sync::watch::channel(0u32);
        let feeder = {
            let engine = self.clone();
            let id = id.to_owned();
            let exec_id = exec_id.clone();
            let mut pid = pid.clone();
            tokio::spawn(async move {
                if pid.wait_for(|pid| *pid != 0).await.is_err() {
                    return;
                }
                while let Some(bytes) = stdin.recv().await {
                    if let Some(pipe) = writer.as_mut()
                        && pipe.write_all(&bytes).await.is_err()
                    {
                        writer = None;
                    }
                }
                if writer.take().is_some() {
                    engine.close_stdin(&id, &exec_id).await;
                }
            })
        };
        let controller = control.map(|mut control| {
            let engine = self.clone();
            let id = id.to_owned();
            let exec_id = exec_id.clone();
            let mut pid = pid.clone();
            tokio::spawn(async move {
                if pid.wait_for(|pid| *pid != 0).await.is_err() {
                    return;
                }
                let group = *pid.borrow();
                while let Some(message) = control.recv().await {
                    match message {
                        ExecControl::Resize(size) if size.cols > 0 && size.rows > 0 => {
                            let _ = engine
                                .tasks()
                                .resize_pty(engine.request(ResizePtyRequest {
                                    container_id: id.clone(),
                                    exec_id: exec_id.clone(),
                                    width: u32::from(size.cols),
                                    height: u32::from(size.rows),
                                }))
                                .await;
                        }
                        ExecControl::Resize(_) => {}
                        ExecControl::Signal(signal) => signal_group(group, signal),
                    }
                }
            })
        });
        // The start is told, then the pid looked up, before any input moves.
        let pid_lookup = {
            let engine = self.clone();
            let id = id.to_owned();
            let exec_id = exec_id.clone();
            tokio::spawn(async move {
                if on_start.await.is_err() {
                    return;
                }
                // Unknown (an outage): the input still moves, signals do not.
                let pid = match engine.exec_pid(&id, &exec_id).await {
                    Ok(pid) if pid != 0 => pid,
                    _ => u32::MAX,
                };
                let _ = pid_sender.send(pid);
            })
        };
        // Killing the exec kills its process only: its group goes too.
        let group_killer = {
            let (reader_gone, pid) = (reader_gone.clone(), pid.clone());
            tokio::spawn(async move {
                reader_gone.cancelled().await;
                let group = *pid.borrow();
                signal_group(group, nix::sys::signal::Signal::SIGKILL as i32);
            })
        };
        let outcome = self
            .run_exec(id, &exec_id, process.timeout, &reader_gone, Some(started))
            .await;
        feeder.abort();
        pid_lookup.abort();
        if let Some(controller) = controller {
            controller.abort();
        }
        if reader_gone.is_cancelled() {
            let _ = group_killer.await;
        } else {
            group_killer.abort();
        }
        exited.cancel();
        for pump in pumps {
            let _ = pump.await;
        }
        self.delete_exec(id, &exec_id).await;
        drop(fifo_dir);
        outcome
    }

    /// The host pid of exec `exec_id` of `id`.
    async fn exec_pid(&self, id: &str, exec_id: &str) -> Result<u32> {
        Ok(self.process_record(id, exec_id).await?.map_or(0, |p| p.pid))
    }

    /// Frees the shim's record of exec `exec_id` (its status, its FIFOs).
    pub(crate) async fn delete_exec(&self, id: &str, exec_id: &str) {
        let _ = self
            .tasks()
            .delete_process(self.request(DeleteProcessRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
            }))
            .await;
    }

    async fn close_stdin(&self, id: &str, exec_id: &str) {
        let _ = self
            .tasks()
            .close_io(self.request(CloseIoRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                stdin: true,
            }))
            .await;
    }

    /// Container `id`'s record.
    pub(crate) async fn container_record(
        &self,
        id: &str,
    ) -> Result<Option<containerd_client::services::v1::Container>> {
        Ok(self
            .containers()
            .get(self.request(GetContainerRequest { id: id.to_string() }))
            .await
            .map_err(|status| {
                EngineError::rpc("container get", || format!("container {id}"), status)
            })?
            .into_inner()
            .container)
    }

    /// The environment the container's own process was given.
    pub async fn container_env(&self, id: &str) -> Result<Vec<String>> {
        let Some(spec) = self.container_record(id).await?.and_then(|c| c.spec) else {
            return Ok(Vec::new());
        };
        let spec: oci_spec::runtime::Spec =
            serde_json::from_slice(&spec.value).map_err(|error| EngineError::Invalid {
                what: "container spec",
                reason: error.to_string(),
            })?;
        Ok(spec
            .process()
            .as_ref()
            .and_then(|p| p.env().clone())
            .unwrap_or_default())
    }
}
