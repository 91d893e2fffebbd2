//! Connections to backends (HTTP/1.1, one request at a time each).
//!
//! Each serving thread keeps its idle backend connections in a [`Pool`]
//! (no count shared with other threads; its lock is never contended). A
//! request takes the most recently used idle connection to its backend (or
//! dials one), and gives it back once its response body is done
//! ([`ResponseBody`]), so a keep-alive client's next request finds the same
//! connection without pinning it while the client is idle. Idle
//! connections are dropped after 30 to 60 s ([`SWEEP_PERIOD`]), beyond [`MAX_IDLE`] per
//! backend, or once their backend is unregistered (a deploy replaced it).
//!
//! A connection has no task of its own: the request using it polls it
//! (while waiting for the response head, then from the response body), so
//! reading the backend, answering and reading the next request all happen
//! in the client connection's task, without a wake-up of another task in
//! between (what hyper's pooled client costs per request). An idle
//! connection is polled by nobody: one its backend closed meanwhile is
//! found closed when next used, replaced by another (idle or new), and the
//! request sent on it if it had not been sent (as hyper-util's pooled
//! client does). Upgraded connections (`101`) get a task to carry the
//! tunnel.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::connect::{Registry, Stream, dial, dial_unix};
use crate::{Endpoint, lock};

/// How often a pool drops its expired idle connections: a connection idle
/// through a whole period goes (so after 30 to 60 s idle).
pub(crate) const SWEEP_PERIOD: Duration = Duration::from_secs(30);
/// Idle connections a pool keeps per backend.
const MAX_IDLE: usize = 256;

type Sender = SendRequest<Incoming>;
/// hyper's connection with upgrades (its type cannot be named), boxed once
/// per connection.
type Connection = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// Why a request got no response from its backend.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[error("connecting: {0}")]
    Connect(#[from] std::io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// One connection to a backend: the handle requests are sent with, and the
/// connection's reads and writes, which whoever uses it polls.
struct Backend {
    sender: Sender,
    /// `None` once it ended (closed, failed): dropping it hands requests
    /// queued on it back to their senders.
    connection: Option<Connection>,
}

impl Backend {
    /// Lets the connection read and write; notes its end.
    fn poll_connection(&mut self, cx: &mut Context<'_>) {
        if let Some(connection) = &mut self.connection
            && let Poll::Ready(ended) = connection.as_mut().poll(cx)
        {
            if let Err(error) = ended {
                debug!(%error, "backend connection");
            }
            self.connection = None;
        }
    }

    /// Waits for `future`, which the connection's progress decides,
    /// polling the connection meanwhile.
    async fn drive<T>(connection: &mut Option<Connection>, future: impl Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            // The connection first: what it reads now (a response head)
            // settles `future` in this same poll, not after a wake-up.
            if let Some(open) = connection
                && let Poll::Ready(ended) = open.as_mut().poll(cx)
            {
                if let Err(error) = ended {
                    debug!(%error, "backend connection");
                }
                // Dropped: a request still queued comes back to its sender
                // (with an error), so `future` ends now.
                *connection = None;
            }
            future.as_mut().poll(cx)
        })
        .await
    }

    fn usable(&self) -> bool {
        self.connection.is_some() && !self.sender.is_closed()
    }
}

struct Idle {
    backend: Backend,
    /// Idle through a whole sweep already: the next drops it (so an idle
    /// connection lives between one and two sweep periods, and using one
    /// reads no clock).
    swept: bool,
}

/// Idle backend connections of one serving thread, by authority.
pub(crate) struct Pool {
    registry: Registry,
    idle: Mutex<HashMap<Arc<str>, Vec<Idle>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(registry: Registry) -> Pool {
        Pool {
            registry,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// An idle connection to `authority` (the most recently used one), not
    /// known to be closed, not expired.
    fn take(&self, authority: &str) -> Option<Backend> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(authority)?;
        while let Some(entry) = list.pop() {
            if entry.backend.usable() {
                return Some(entry.backend);
            }
        }
        None
    }

    /// Keeps `backend` for reuse, unless it ended or enough are kept.
    fn put(&self, authority: &Arc<str>, backend: Backend) {
        if !backend.usable() {
            return;
        }
        let idle = Idle {
            backend,
            swept: false,
        };
        let mut pool = lock(&self.idle);
        match pool.get_mut(&**authority) {
            Some(list) if list.len() >= MAX_IDLE => {}
            Some(list) => list.push(idle),
            None => {
                pool.insert(authority.clone(), vec![idle]);
            }
        }
    }

    /// Drops expired idle connections, those their backend closed, and
    /// those of backends no longer registered (a deploy replaced them).
    pub(crate) fn sweep(&self) {
        // Idle connections are polled by nobody: a poll here (woken by
        // nothing) lets each read what its backend sent, an end included.
        let mut unwoken = Context::from_waker(std::task::Waker::noop());
        let mut idle = lock(&self.idle);
        idle.retain(|authority, list| {
            if self.registry.get(authority).is_none() {
                return false;
            }
            list.retain_mut(|entry| {
                entry.backend.poll_connection(&mut unwoken);
                let keep = entry.backend.usable() && !entry.swept;
                entry.swept = true;
                keep
            });
            !list.is_empty()
        });
    }

    /// Idle connections kept now (all backends).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        lock(&self.idle).values().map(Vec::len).sum()
    }

    /// Opens a connection to the backend `authority` names.
    async fn connect(&self, authority: &str) -> Result<Backend, BackendError> {
        let endpoint = self
            .registry
            .get(authority)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "backend is gone"))?;
        let started = Instant::now();
        let stream = match &endpoint {
            Endpoint::Unix { path, peer_uid } => Stream::Unix(dial_unix(path, *peer_uid).await?),
            Endpoint::Tcp { .. } => Stream::Tcp(dial(&endpoint).await?),
        };
        if started.elapsed() > Duration::from_millis(200) {
            debug!(%authority, elapsed = ?started.elapsed(), "slow connect");
        }
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            // One plain write per request head (and small body), as the
            // server side.
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await?;
        Ok(Backend {
            sender,
            connection: Some(Box::pin(connection.with_upgrades())),
        })
    }

    /// An idle connection to `authority`, else a new one; and whether it
    /// was idle (reused).
    async fn checkout(&self, authority: &str) -> Result<(Backend, bool), BackendError> {
        match self.take(authority) {
            Some(backend) => Ok((backend, true)),
            None => Ok((self.connect(authority).await?, false)),
        }
    }
}

impl Pool {
    /// Sends `request` to the backend `authority` names, on an idle
    /// connection if there is one. Its URI must be in the form the backend
    /// gets (origin-form). The [`Lease`] holds the connection until the
    /// response body is done ([`Lease::body`]).
    pub(crate) async fn send(
        self: &Arc<Pool>,
        authority: Arc<str>,
        mut request: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Lease), BackendError> {
        let (mut backend, mut reused) = self.checkout(&authority).await?;
        loop {
            let Backend { sender, connection } = &mut backend;
            // Busy until the previous response has been read; an error
            // means the connection ended.
            let ready =
                Backend::drive(connection, std::future::poll_fn(|cx| sender.poll_ready(cx))).await;
            let error = match ready {
                Ok(()) => {
                    let sending = sender.try_send_request(request);
                    match Backend::drive(connection, sending).await {
                        Ok(response) => {
                            let lease = Lease {
                                pool: self.clone(),
                                authority,
                                backend: Some(backend),
                            };
                            return Ok((response, lease));
                        }
                        Err(mut error) => match error.take_message() {
                            Some(unsent) => {
                                request = unsent;
                                error.into_error()
                            }
                            None => return Err(error.into_error().into()),
                        },
                    }
                }
                Err(error) => error,
            };
            // Not sent: a reused connection gets replaced (by another idle
            // one, else a new one); a new one failing is an answer.
            if !reused {
                return Err(error.into());
            }
            debug!(%error, %authority, "reused backend connection closed; sending again");
            (backend, reused) = self.checkout(&authority).await?;
        }
    }
}

/// A backend connection in use: back to its pool when dropped, unless its
/// response was not read to its end or it carries a tunnel.
pub(crate) struct Lease {
    pool: Arc<Pool>,
    authority: Arc<str>,
    backend: Option<Backend>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The connection carries a tunnel now (`101`): it gets a task of its
    /// own, which hands it to the upgrade and never comes back.
    pub(crate) fn tunnel(&mut self) {
        if let Some(Backend {
            sender,
            connection: Some(connection),
        }) = self.backend.take()
        {
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    debug!(%error, "upgraded backend connection");
                }
                drop(sender);
            });
        }
    }

    /// The response body `inner` read through this connection.
    pub(crate) fn body(self, inner: Incoming) -> ResponseBody {
        ResponseBody {
            inner,
            lease: self,
            ended: false,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(backend) = self.backend.take() {
            self.pool.put(&self.authority, backend);
        }
    }
}

/// A backend's response body: polling it lets its connection read; the
/// connection goes back to the pool once the body was read to its end.
pub(crate) struct ResponseBody {
    inner: Incoming,
    lease: Lease,
    ended: bool,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(backend) = &mut this.lease.backend {
            backend.poll_connection(cx);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Not read to its end (the client left): the rest is still on the
        // connection, which cannot serve another request.
        if !(self.ended || self.inner.is_end_stream()) {
            self.lease.backend = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};

    /// A backend on a unix socket that answers each request with the
    /// number of its connection, closing connections after `per_connection`
    /// requests (0: never).
    async fn backend(path: std::path::PathBuf, per_connection: usize) {
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let number = connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_: Request<Incoming>| {
                        let count = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                        async move {
                            let mut response =
                                hyper::Response::new(Full::new(Bytes::from(number.to_string())));
                            if per_connection != 0 && count >= per_connection {
                                response.headers_mut().insert(
                                    hyper::header::CONNECTION,
                                    hyper::header::HeaderValue::from_static("close"),
                                );
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }

    /// A `GET /` with an `Incoming` body, as the router forwards: sent by a
    /// loopback client to a loopback server that hands it over, with what
    /// answers the loopback client.
    async fn forwarded_request() -> (Request<Incoming>, tokio::sync::oneshot::Sender<String>) {
        let (request_tx, mut request_rx) = tokio::sync::mpsc::channel(1);
        let (server_side, client_side) = tokio::net::UnixStream::pair().expect("pair");
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let request_tx = request_tx.clone();
            async move {
                let (answer_tx, answer_rx) = tokio::sync::oneshot::channel::<String>();
                let _ = request_tx.send((request, answer_tx)).await;
                let answer = answer_rx.await.unwrap_or_default();
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(answer))))
            }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server_side), service),
        );
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(client_side))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        tokio::spawn(async move {
            let request = Request::get("/")
                .header("host", "backend")
                .body(Full::new(Bytes::new()))
                .expect("request");
            if let Ok(response) = sender.send_request(request).await {
                let _ = response.into_body().collect().await;
            }
        });
        request_rx.recv().await.expect("request")
    }

    /// Sends `GET /` through `pool`: the number of the backend connection
    /// that answered, and its response body (read).
    async fn get(pool: &Arc<Pool>, authority: &Arc<str>) -> (String, ResponseBody) {
        let (request, answer) = forwarded_request().await;
        let (response, lease) = pool
            .send(authority.clone(), request)
            .await
            .expect("backend");
        // Read to its end, as the router's client connection would, and
        // kept: dropping it gives the connection back.
        let mut body = lease.body(response.into_body());
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("body").into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        let number = String::from_utf8_lossy(&bytes).into_owned();
        let _ = answer.send(number.clone());
        (number, body)
    }

    fn pool_for(path: std::path::PathBuf) -> Arc<Pool> {
        let registry = Registry::default();
        registry.insert(
            "g1".into(),
            Endpoint::Unix {
                path,
                peer_uid: None,
            },
        );
        Arc::new(Pool::new(registry))
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_is_done() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.sock");
        backend(path.clone(), 0).await;
        let pool = pool_for(path);
        let authority: Arc<str> = Arc::from("g1");
        let (first, lease) = get(&pool, &authority).await;
        assert_eq!(first, "0");
        drop(lease);
        let (again, first_lease) = get(&pool, &authority).await;
        assert_eq!(again, "0", "a keep-alive client's next request");
        // Meanwhile, another request needs a connection of its own.
        let (second, second_lease) = get(&pool, &authority).await;
        assert_eq!(second, "1");
        assert_eq!(pool.idle_count(), 0);
        drop(first_lease);
        drop(second_lease);
        assert_eq!(pool.idle_count(), 2);
        // The most recently given back goes first.
        let (next, _lease) = get(&pool, &authority).await;
        assert_eq!(next, "1");
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.sock");
        // Every connection closes after its first answer.
        backend(path.clone(), 1).await;
        let pool = pool_for(path);
        let authority: Arc<str> = Arc::from("g1");
        for expected in ["0", "1", "2"] {
            let (number, lease) = get(&pool, &authority).await;
            assert_eq!(number, expected);
            drop(lease);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        pool.sweep();
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_response_not_read_to_its_end_gives_no_connection_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        // One answer of 4 MiB, far more than a connection buffers.
        tokio::spawn(async move {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = hyper::service::service_fn(|_: Request<Incoming>| async {
                let big = Bytes::from(vec![b'x'; 4 << 20]);
                Ok::<_, Infallible>(hyper::Response::new(Full::new(big)))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let pool = pool_for(path);
        let authority: Arc<str> = Arc::from("g1");
        let (request, _answer) = forwarded_request().await;
        let (response, lease) = pool.send(authority, request).await.expect("backend");
        let mut body = lease.body(response.into_body());
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.into_data().is_ok_and(|data| !data.is_empty()));
        drop(body);
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn idle_connections_of_a_backend_deploys_replaced_are_swept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.sock");
        backend(path.clone(), 0).await;
        let pool = pool_for(path);
        let authority: Arc<str> = Arc::from("g1");
        let (_, body) = get(&pool, &authority).await;
        drop(body);
        pool.sweep();
        assert_eq!(pool.idle_count(), 1, "registered, open, new: kept");
        pool.sweep();
        assert_eq!(pool.idle_count(), 0, "idle through a whole period");
        let (_, body) = get(&pool, &authority).await;
        drop(body);
        pool.registry.remove("g1");
        pool.sweep();
        assert_eq!(pool.idle_count(), 0, "its backend is gone");
    }

    #[tokio::test]
    async fn an_upgraded_connection_is_not_given_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.sock");
        backend(path.clone(), 0).await;
        let pool = pool_for(path);
        let authority: Arc<str> = Arc::from("g1");
        let (_, mut body) = get(&pool, &authority).await;
        body.lease.tunnel();
        drop(body);
        assert_eq!(pool.idle_count(), 0);
    }
}
