//! Attached execs: a process in a running container whose stdin this side
//! feeds and whose output comes back as bytes, as written (`launchway sql`,
//! `launchway db dump`: a dump is large and not made of lines).
//!
//! Stdin is a FIFO the shim opens when the process starts. The shim also
//! holds the FIFO open for writing itself, so the process sees end of input
//! only once this side has written everything, closed its end (not before
//! the start: a FIFO nobody holds open loses what it buffered) *and* asked
//! containerd to close the shim's (`CloseIO`). This side opens its end
//! read-write, so the open never waits for the shim and a process that
//! exits without reading its input cannot make a write fail: the writer is
//! simply dropped at the end.

use containerd_client::services::v1::{CloseIoRequest, DeleteProcessRequest, ExecProcessRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, random_id};
use crate::error::{EngineError, Result};
use crate::spec::StepSpec;
use crate::step::{OutputStream, StepOutcome, make_fifo, open_fifo};

/// A piece of an attached process's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: OutputStream,
    pub bytes: Vec<u8>,
}

impl Engine {
    /// Runs `process` in the running container `id` with `stdin` as its
    /// input (its end closes the process's stdin) and its output sent to
    /// `output` as it comes. If `output`'s receiver goes away, the process
    /// is killed: nobody reads it any more.
    pub async fn exec_attached(
        &self,
        id: &str,
        process: &StepSpec,
        mut stdin: mpsc::Receiver<Vec<u8>>,
        output: mpsc::Sender<OutputChunk>,
        cancel: &CancellationToken,
    ) -> Result<StepOutcome> {
        let spec = self.exec_process(id, process).await?;
        let exec_id = random_id("attach");
        let fifo_dir = tempfile::Builder::new()
            .prefix(&exec_id)
            .tempdir_in(self.scratch())
            .map_err(|error| EngineError::io("creating a FIFO directory", error))?;
        let input = make_fifo(fifo_dir.path(), "stdin")?;
        let out = make_fifo(fifo_dir.path(), "stdout")?;
        let err = make_fifo(fifo_dir.path(), "stderr")?;
        let mut writer = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&input)
            .map_err(|error| EngineError::io(format!("opening FIFO {}", input.display()), error))?;
        let readers = [
            (open_fifo(&out)?, OutputStream::Stdout),
            (open_fifo(&err)?, OutputStream::Stderr),
        ];
        self.tasks()
            .exec(self.request(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: input.display().to_string(),
                stdout: out.display().to_string(),
                stderr: err.display().to_string(),
                terminal: false,
                spec: Some(spec),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(|status| EngineError::rpc("task exec", || format!("task {id}"), status))?;
        let reader_gone = cancel.child_token();
        let pumps: Vec<_> = readers
            .into_iter()
            .map(|(receiver, stream)| {
                tokio::spawn(pump_bytes(
                    receiver,
                    stream,
                    output.clone(),
                    reader_gone.clone(),
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
                while let Some(bytes) = stdin.recv().await {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                // The shim opens its end of the FIFO when the process
                // starts: closing ours before would drop what the pipe
                // holds. Its own writer closes only when asked.
                let started = on_start.await.is_ok();
                drop(writer);
                if started {
                    let _ = engine
                        .tasks()
                        .close_io(engine.request(CloseIoRequest {
                            container_id: id,
                            exec_id,
                            stdin: true,
                        }))
                        .await;
                }
            })
        };
        let outcome = self
            .run_exec(id, &exec_id, process.timeout, &reader_gone, Some(started))
            .await;
        feeder.abort();
        for pump in pumps {
            let _ = pump.await;
        }
        let _ = self
            .tasks()
            .delete_process(self.request(DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id,
            }))
            .await;
        drop(fifo_dir);
        match outcome {
            // Killed because its reader went away, not because it was asked.
            Err(EngineError::Cancelled) if !cancel.is_cancelled() => Err(EngineError::Cancelled),
            other => other,
        }
    }
}

/// Copies one output FIFO to `output` until its end. When `output`'s
/// receiver is gone, `reader_gone` is cancelled (the process is killed).
pub(crate) async fn pump_bytes(
    mut receiver: tokio::net::unix::pipe::Receiver,
    stream: OutputStream,
    output: mpsc::Sender<OutputChunk>,
    reader_gone: CancellationToken,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match receiver.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let chunk = OutputChunk {
            stream,
            bytes: buffer[..read].to_vec(),
        };
        if output.send(chunk).await.is_err() {
            reader_gone.cancel();
            return;
        }
    }
}
