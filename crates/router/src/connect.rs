//! Dialing backends.
//!
//! An authority names a backend generation (`g<n>`); the registry maps it
//! to where the app listens. A new deploy registers new generations, so
//! pooled connections to a stopped version are never reused.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use launchway_net::SocketFactory;

/// Where an app listens.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// An address inside a network namespace (or the router's own when
    /// `None`): a member of an environment network, dialled from its hub.
    Tcp {
        netns: Option<Arc<SocketFactory>>,
        address: std::net::SocketAddr,
    },
    /// A unix socket path on the host (a directory bind-mounted in the
    /// app). The app can write that directory, so it could replace the
    /// socket with a link to a host socket: with `peer_uid`, a connection
    /// whose peer is another user is refused.
    Unix {
        path: PathBuf,
        peer_uid: Option<u32>,
    },
}

/// Backend generations by authority.
#[derive(Clone, Debug, Default)]
pub(crate) struct Registry {
    endpoints: Arc<Mutex<HashMap<String, Endpoint>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Endpoint>> {
        match self.endpoints.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn insert(&self, authority: String, endpoint: Endpoint) {
        self.lock().insert(authority, endpoint);
    }

    pub(crate) fn remove(&self, authority: &str) {
        self.lock().remove(authority);
    }

    pub(crate) fn get(&self, authority: &str) -> Option<Endpoint> {
        self.lock().get(authority).cloned()
    }
}

/// A connection to a backend.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Unix(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(stream) => stream.is_write_vectored(),
            Stream::Unix(stream) => stream.is_write_vectored(),
        }
    }
}

/// How long one connection attempt may wait for the handshake. A backend
/// whose accept queue is full (a burst of released requests meeting an app
/// with a small listen backlog, as busybox httpd or Python's `http.server`
/// have) drops the SYN, and the kernel would retry only after a second, then
/// two, four…; a fresh attempt after this short wait gets in as soon as the
/// app has accepted what was queued.
const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(25);
/// How long dialing keeps trying before the request fails (502).
const DIAL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens a connection to `endpoint`.
pub async fn dial(endpoint: &Endpoint) -> io::Result<tokio::net::TcpStream> {
    let Endpoint::Tcp { netns, address } = endpoint else {
        return Err(io::Error::other("a unix endpoint has no TCP stream"));
    };
    let address = *address;
    let deadline = tokio::time::Instant::now() + DIAL_DEADLINE;
    loop {
        let socket = match netns {
            Some(factory) => factory.socket().await?,
            None => tokio::net::TcpSocket::new_v4()?,
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, socket.connect(address)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(Err(error)) => return Err(error),
            Err(_) if tokio::time::Instant::now() < deadline => continue,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the app did not accept the connection",
                ));
            }
        }
    }
}

/// Connects to a unix socket, checking who listens on it.
pub(crate) async fn dial_unix(
    path: &std::path::Path,
    peer_uid: Option<u32>,
) -> io::Result<tokio::net::UnixStream> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    if let Some(expected) = peer_uid {
        let uid = stream.peer_cred()?.uid();
        if uid != expected {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is served by uid {uid}, not the app's", path.display()),
            ));
        }
    }
    Ok(stream)
}

/// Whether something accepts connections at `endpoint` (a readiness probe).
pub async fn accepts(endpoint: &Endpoint) -> bool {
    match endpoint {
        Endpoint::Tcp { .. } => dial(endpoint).await.is_ok(),
        Endpoint::Unix { path, peer_uid } => dial_unix(path, *peer_uid).await.is_ok(),
    }
}
