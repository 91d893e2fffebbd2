//! Connections to backends (HTTP/1.1, one request at a time each).
//!
//! Each serving thread keeps its idle backend connections in a [`Pool`]
//! (no lock or count shared with other threads). A request takes the most
//! recently used idle connection to its backend (or dials one), and gives
//! it back when the response body is done ([`Lease`]), so a keep-alive
//! client's next request finds the same connection without pinning it
//! while the client is idle. Idle connections are dropped after
//! [`IDLE_TIMEOUT`], or beyond [`MAX_IDLE`] per backend.
//!
//! A reused connection the backend has closed in the meantime is replaced
//! by another (idle or new), and the request sent again on it if it had not
//! been sent (as hyper-util's pooled client does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::connect::{Registry, Stream, dial, dial_unix};
use crate::{Endpoint, lock};

/// How long a backend connection may stay idle in a pool.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections a pool keeps per backend.
const MAX_IDLE: usize = 256;

type Sender = SendRequest<Incoming>;

/// Why a request got no response from its backend.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[error("connecting: {0}")]
    Connect(#[from] std::io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

struct Idle {
    sender: Sender,
    since: Instant,
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

    /// An idle connection to `authority` (the most recently used one),
    /// open and not expired.
    fn take(&self, authority: &str) -> Option<Sender> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(authority)?;
        while let Some(entry) = list.pop() {
            if !entry.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Keeps `sender` for reuse, unless it is closed or enough are kept.
    fn put(&self, authority: &Arc<str>, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let idle = Idle {
            sender,
            since: Instant::now(),
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

    /// Drops closed and expired idle connections.
    pub(crate) fn sweep(&self) {
        let mut idle = lock(&self.idle);
        idle.retain(|_, list| {
            list.retain(|entry| !entry.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT);
            !list.is_empty()
        });
    }

    /// Idle connections kept now (all backends).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        lock(&self.idle).values().map(Vec::len).sum()
    }

    /// Opens a connection to the backend `authority` names, driven by a
    /// task of the current runtime.
    async fn connect(&self, authority: &str) -> Result<Sender, BackendError> {
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
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                debug!(%error, "backend connection");
            }
        });
        Ok(sender)
    }
}

impl Pool {
    /// Sends `request` to the backend `authority` names, on an idle
    /// connection if there is one. Its URI must be in the form the backend
    /// gets (origin-form). The [`Lease`] gives the connection back.
    pub(crate) async fn send(
        self: &Arc<Pool>,
        authority: Arc<str>,
        mut request: Request<Incoming>,
    ) -> Result<(Response<Incoming>, Lease), BackendError> {
        let (mut sender, mut reused) = match self.take(&authority) {
            Some(sender) => (sender, true),
            None => (self.connect(&authority).await?, false),
        };
        loop {
            // Busy until the previous response has been read; an error
            // means the backend closed it.
            let ready = sender.ready().await;
            let error = match ready {
                Ok(()) => match sender.try_send_request(request).await {
                    Ok(response) => {
                        let lease = Lease {
                            pool: self.clone(),
                            authority,
                            sender: Some(sender),
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
                },
                Err(error) => error,
            };
            // Not sent: a reused connection gets replaced (by another idle
            // one, else a new one); a new one failing is an answer.
            if !reused {
                return Err(error.into());
            }
            debug!(%error, %authority, "reused backend connection closed; sending again");
            (sender, reused) = match self.take(&authority) {
                Some(sender) => (sender, true),
                None => (self.connect(&authority).await?, false),
            };
        }
    }
}

/// A backend connection in use: back to its pool when dropped (with the
/// response body), unless it was [`Lease::forget`]ten.
pub(crate) struct Lease {
    pool: Arc<Pool>,
    authority: Arc<str>,
    sender: Option<Sender>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The backend's authority.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// Keeps the connection out of the pool (it was upgraded).
    pub(crate) fn forget(&mut self) {
        self.sender = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.put(&self.authority, sender);
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

    /// Sends `GET /` through `pool`: the number of the backend connection
    /// that answered, and its lease.
    async fn get(pool: &Arc<Pool>, authority: &Arc<str>) -> (String, Lease) {
        // A request with an `Incoming` body, as the router forwards: made
        // by a loopback server that hands its requests over.
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
        let asked = tokio::spawn(async move {
            let request = Request::get("/")
                .header("host", "backend")
                .body(Full::new(Bytes::new()))
                .expect("request");
            let response = sender.send_request(request).await.expect("loopback");
            response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
        });
        let (request, answer) = request_rx.recv().await.expect("request");
        let (response, lease) = pool
            .send(authority.clone(), request)
            .await
            .expect("backend");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let number = String::from_utf8_lossy(&body).into_owned();
        let _ = answer.send(number.clone());
        asked.await.expect("loopback answer");
        (number, lease)
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
    async fn an_upgraded_connection_is_not_given_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.sock");
        backend(path.clone(), 0).await;
        let pool = pool_for(path);
        let authority: Arc<str> = Arc::from("g1");
        let (_, mut lease) = get(&pool, &authority).await;
        lease.forget();
        drop(lease);
        assert_eq!(pool.idle_count(), 0);
    }
}
