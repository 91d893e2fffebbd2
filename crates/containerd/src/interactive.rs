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
//! - Inputs wait for the start: a resize before it is lost by the shim (the
//!   first size goes in the spec's `consoleSize` instead).
//! - The end of stdin closes the shim's writer (`CloseIO`); with a pty that
//!   hangs the terminal up, as a closed SSH channel should.
//! - The exec is killed when `cancel` fires or `output`'s receiver goes
//!   away, and its record is deleted on every path through this function.
//!   A caller that may be dropped mid-way runs it in a task and cancels.

use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest,
    ResizePtyRequest,
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

/// What the client sends an interactive exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecInput {
    Stdin(Vec<u8>),
    /// The end of stdin.
    Eof,
    Resize(PtySize),
    /// A signal number for the exec's process.
    Signal(u32),
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
    pub async fn exec_interactive(
        &self,
        id: &str,
        process: &StepSpec,
        tty: Option<PtySize>,
        input: mpsc::Receiver<ExecInput>,
        output: mpsc::Sender<OutputChunk>,
        cancel: &CancellationToken,
    ) -> Result<StepOutcome> {
        self.exec_streams(id, process, tty, EnvBase::Container, input, output, cancel)
            .await
    }

    /// The one exec with stdin and streamed output (`exec_interactive`,
    /// `exec_attached`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn exec_streams(
        &self,
        id: &str,
        process: &StepSpec,
        tty: Option<PtySize>,
        env_base: EnvBase,
        mut input: mpsc::Receiver<ExecInput>,
        output: mpsc::Sender<OutputChunk>,
        cancel: &CancellationToken,
    ) -> Result<StepOutcome> {
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
        let feeder = {
            let engine = self.clone();
            let id = id.to_owned();
            let exec_id = exec_id.clone();
            tokio::spawn(async move {
                if on_start.await.is_err() {
                    return;
                }
                while let Some(message) = input.recv().await {
                    match message {
                        ExecInput::Stdin(bytes) => {
                            if let Some(pipe) = writer.as_mut()
                                && pipe.write_all(&bytes).await.is_err()
                            {
                                writer = None;
                            }
                        }
                        ExecInput::Eof => {
                            if writer.take().is_some() {
                                engine.close_stdin(&id, &exec_id).await;
                            }
                        }
                        ExecInput::Resize(size) => {
                            if size.cols > 0 && size.rows > 0 {
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
                        }
                        ExecInput::Signal(signal) => {
                            let _ = engine
                                .tasks()
                                .kill(engine.request(KillRequest {
                                    container_id: id.clone(),
                                    exec_id: exec_id.clone(),
                                    signal,
                                    all: false,
                                }))
                                .await;
                        }
                    }
                }
                // The client is gone without saying the input ended: the
                // process must not wait for input forever.
                if writer.take().is_some() {
                    engine.close_stdin(&id, &exec_id).await;
                }
            })
        };
        let outcome = self
            .run_exec(id, &exec_id, process.timeout, &reader_gone, Some(started))
            .await;
        feeder.abort();
        exited.cancel();
        for pump in pumps {
            let _ = pump.await;
        }
        self.delete_exec(id, &exec_id).await;
        drop(fifo_dir);
        match outcome {
            Err(EngineError::Cancelled) if !cancel.is_cancelled() => Err(EngineError::Cancelled),
            other => other,
        }
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

    /// The environment the container's own process was given.
    pub async fn container_env(&self, id: &str) -> Result<Vec<String>> {
        let container = self
            .containers()
            .get(self.request(GetContainerRequest { id: id.to_string() }))
            .await
            .map_err(|status| {
                EngineError::rpc("container get", || format!("container {id}"), status)
            })?
            .into_inner()
            .container;
        let Some(spec) = container.and_then(|c| c.spec) else {
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
