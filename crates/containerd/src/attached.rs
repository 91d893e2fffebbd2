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

use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::error::Result;
use crate::interactive::{EnvBase, ExecIo};
use crate::spec::StepSpec;
use crate::step::{OutputStream, StepOutcome};

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
        stdin: mpsc::Receiver<Vec<u8>>,
        output: mpsc::Sender<OutputChunk>,
        cancel: &CancellationToken,
    ) -> Result<StepOutcome> {
        let io = ExecIo {
            stdin,
            control: None,
            output,
        };
        self.exec_streams(id, process, None, EnvBase::Image, io, cancel)
            .await
    }
}

/// Copies one output FIFO to `output` until its end, or, once `exited` is
/// cancelled, until it has been quiet for a while (a background child may
/// hold it open). When `output`'s receiver is gone, `reader_gone` is
/// cancelled (the process is killed).
pub(crate) async fn pump_bytes(
    mut receiver: tokio::net::unix::pipe::Receiver,
    stream: OutputStream,
    output: mpsc::Sender<OutputChunk>,
    reader_gone: CancellationToken,
    exited: CancellationToken,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            read = receiver.read(&mut buffer) => read,
            () = async {
                exited.cancelled().await;
                tokio::time::sleep(crate::interactive::QUIET_AFTER_EXIT).await;
            } => return,
        };
        let read = match read {
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
