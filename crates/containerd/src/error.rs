use std::path::PathBuf;

/// What went wrong talking to containerd or handling an image.
///
/// gRPC statuses are mapped to the variants callers branch on (`NotFound`,
/// `AlreadyExists`, `Unavailable`), so an idempotent caller can treat "already
/// gone" as success without matching on message text.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("containerd is not answering at {socket}: {reason}")]
    Unavailable { socket: PathBuf, reason: String },
    #[error("{what} not found in containerd")]
    NotFound { what: String },
    #[error("{what} already exists in containerd")]
    AlreadyExists { what: String },
    #[error("containerd refused {operation}: {message}")]
    Rpc {
        operation: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("image {image}: {reason}")]
    Image { image: String, reason: String },
    #[error("archive refused, nothing was stored: {reason}")]
    Archive { reason: String },
    #[error(
        "archive refused, nothing was stored: blob {expected} does not match its content (it hashes to {actual})"
    )]
    DigestMismatch { expected: String, actual: String },
    #[error("unknown runtime type '{name}'; available: {}", available.join(", "))]
    UnknownRuntime {
        name: String,
        available: Vec<String>,
    },
    #[error("the step was cancelled")]
    Cancelled,
    #[error(
        "containerd went away while {what} ran and did not come back within a minute; it may still be running"
    )]
    Lost { what: String },
    #[error(
        "containerd namespace `{namespace}` at {socket} belongs to another Launchway daemon (instance {owner}, data directory {data_dir}, heartbeat {seen_secs_ago} s ago); give this daemon its own namespace with `[containerd] namespace = \"…\"`, or stop the other one"
    )]
    NamespaceTaken {
        namespace: String,
        socket: PathBuf,
        owner: String,
        data_dir: String,
        seen_secs_ago: u64,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    pub(crate) fn rpc(
        operation: &'static str,
        what: impl FnOnce() -> String,
        status: tonic::Status,
    ) -> Self {
        // containerd's own answers never carry a source error; a status
        // made on this side from a transport failure does (the connection
        // refused, reset mid-call or closed before the call went out, as
        // `unknown`, `unavailable`, `cancelled` or `internal`): containerd
        // is gone, not refusing.
        let transport = std::error::Error::source(&status).is_some();
        match status.code() {
            _ if transport => EngineError::Rpc {
                operation,
                code: tonic::Code::Unavailable,
                message: status.message().to_string(),
            },
            tonic::Code::NotFound => EngineError::NotFound { what: what() },
            tonic::Code::AlreadyExists => EngineError::AlreadyExists { what: what() },
            code => EngineError::Rpc {
                operation,
                code,
                message: status.message().to_string(),
            },
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        EngineError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, EngineError::NotFound { .. })
    }

    /// containerd did not answer (down, restarting, connection lost): not
    /// the request's fault, worth retrying once it is back.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            EngineError::Unavailable { .. }
                | EngineError::Rpc {
                    code: tonic::Code::Unavailable,
                    ..
                }
        )
    }

    pub fn is_already_exists(&self) -> bool {
        matches!(self, EngineError::AlreadyExists { .. })
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_unavailable_and_a_refusal_is_not() {
        let lost = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert!(EngineError::rpc("task wait", || "task".into(), lost).is_unavailable());
        let mut closed = tonic::Status::cancelled("operation was canceled");
        closed.set_source(std::sync::Arc::new(std::io::Error::other("closed")));
        assert!(EngineError::rpc("container get", || "c".into(), closed).is_unavailable());
        let refused = tonic::Status::unknown("the server says no");
        assert!(!EngineError::rpc("task wait", || "task".into(), refused).is_unavailable());
        let gone = tonic::Status::not_found("no such task");
        assert!(EngineError::rpc("task wait", || "task".into(), gone).is_not_found());
    }
}
