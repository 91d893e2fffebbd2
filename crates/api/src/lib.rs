//! Launchway's admin API: the generated protobuf types and tonic service, plus
//! the unix-socket plumbing both ends use.
//!
//! The socket is the only way in: it lives in the data directory with mode
//! 0600, so only the daemon's user (and root) can call it. The git hooks
//! authenticate further with the push session token the SSH server hands to
//! `git receive-pack`.

pub mod builder_door;

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// The generated messages, client and server.
#[allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic
)]
pub mod proto {
    tonic::include_proto!("launchway.v1");
}

pub use proto::launchway_client::LaunchwayClient;
pub use proto::launchway_server::{Launchway, LaunchwayServer};

/// What connecting to the daemon can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens on the socket.
    #[error("cannot reach the Launchway daemon at {path} (is `launchway serve` running?)")]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}

/// A client connected to the daemon's socket at `path`.
pub async fn connect(path: &Path) -> Result<LaunchwayClient<Channel>, ConnectError> {
    let socket = path.to_path_buf();
    // The URI is required by tonic but unused: every connection goes to the socket.
    let channel = Endpoint::from_static("http://launchway.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|source| ConnectError::Unreachable {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(LaunchwayClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024))
}

/// The longest status message the daemon sends (in bytes). A refusal that
/// quotes an oversized request field would otherwise overflow the client's
/// header limit and turn a clear error into an HTTP/2 protocol error.
pub const MAX_STATUS_MESSAGE: usize = 2048;

/// `message`, cut to a quarter of [`MAX_STATUS_MESSAGE`] bytes (each byte
/// may take three once percent-encoded in a header) if it is longer. For
/// errors sent in a stream's trailers, which the server layer does not see.
pub fn shorten_message(message: &str) -> String {
    let mut end = MAX_STATUS_MESSAGE / 4;
    if message.len() <= end {
        return message.to_owned();
    }
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (shortened)", &message[..end])
}

/// Shortens an error response's status message to [`MAX_STATUS_MESSAGE`].
fn bound_status_message<B>(
    mut response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let headers = response.headers_mut();
    let oversized = headers
        .get("grpc-message")
        .is_some_and(|value| value.len() > MAX_STATUS_MESSAGE);
    if let Some(status) = oversized
        .then(|| tonic::Status::from_header_map(headers))
        .flatten()
    {
        let message = shorten_message(status.message());
        let _ = tonic::Status::new(status.code(), message).add_header(headers);
    }
    response
}

/// Serves `service` on `listener` until `shutdown` resolves.
pub async fn serve<S: Launchway>(
    service: S,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(bound_status_message))
        // Whoever can open the 0600 socket is the host's operator: every
        // request is marked so, and the service authorizes by that mark.
        .add_service(LaunchwayServer::with_interceptor(
            service,
            |mut request: tonic::Request<()>| {
                request
                    .extensions_mut()
                    .insert(launchway_ops::Principal::Operator);
                Ok(request)
            },
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        assert_eq!(
            shorten_message("there is no release x"),
            "there is no release x"
        );
        let long = format!("there is no release {}", "é".repeat(10_000));
        let short = shorten_message(&long);
        assert!(short.len() < MAX_STATUS_MESSAGE / 2, "{}", short.len());
        assert!(short.starts_with("there is no release é"));
        assert!(short.ends_with("… (shortened)"));
    }
}
