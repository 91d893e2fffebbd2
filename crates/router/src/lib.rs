//! Launchway's HTTP router (hyper): the one way into environments.
//!
//! - Routes: a host (exact, case-insensitive, port ignored) and a path
//!   prefix (matched on `/` boundaries, the longest wins) lead to an app of an
//!   environment or to a redirect. Environments set their routes as a whole.
//! - Gates: each environment is *open* (its apps' backends known) or *held*
//!   (a deploy runs). A held request waits, unread, until the environment
//!   opens again (then it goes to the new version) or its wait runs out
//!   (`503` with `Retry-After`). Nothing is sent to a backend before the gate
//!   lets it through, so holding is safe for every method.
//! - Drain: requests sent to a backend are counted per environment; a deploy
//!   holds the gate, then waits (bounded) for that count to reach zero before
//!   stopping the old containers.
//! - Forwarding: a pooled HTTP/1.1 client whose connector dials into the
//!   environment's network namespace or a unix socket ([`Endpoint`]); bodies
//!   stream both ways; hop-by-hop headers are dropped; `X-Forwarded-For`,
//!   `-Proto` and `-Host` are set; WebSocket (any `Upgrade`) is tunnelled.
//! - `GET /health` on a host with no route answers the router's own health.
//! - HTTPS ([`Router::serve_tls`], [`tls`]): the ClientHello's name picks
//!   the certificate and the host's policy; requests then go through the
//!   same gates. With an HTTPS port set, a plain request to an `https://`
//!   route gets a 301 there; HTTPS responses of routes with HSTS carry it.

mod connect;
use headers::{path_matches, prepare_headers, request_host, strip_hop_by_hop, text};
mod headers;
mod https;
pub mod tls;

pub use launchway_net::netns;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use connect::{Endpoint, accepts, dial};
pub use netns::SocketFactory;

type ProxyBody = BoxBody<Bytes, hyper::Error>;
type BackendClient = Client<connect::Connector, Incoming>;

/// Binds `count` listeners to `address` with `SO_REUSEPORT` (the kernel
/// spreads connections over them), for [`Router::serve_threads`]. Port 0
/// picks one port for all.
pub fn bind_listeners(
    address: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt,
        socket, sockopt,
    };
    use std::os::fd::AsRawFd as _;
    let errno = |error: nix::Error| std::io::Error::from_raw_os_error(error as i32);
    let mut listeners = Vec::new();
    let mut address = address;
    for _ in 0..count.max(1) {
        let family = if address.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(errno)?;
        setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(errno)?;
        setsockopt(&fd, sockopt::ReusePort, &true).map_err(errno)?;
        bind(fd.as_raw_fd(), &SockaddrStorage::from(address)).map_err(errno)?;
        listen(&fd, Backlog::new(1024).map_err(errno)?).map_err(errno)?;
        let listener = std::net::TcpListener::from(fd);
        address = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// What a route does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Served by the environment's app of this name.
    Upstream { app: String },
    /// Answered with a redirect to `to`.
    Redirect { to: String, code: u16 },
}

/// One route of an environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Lowercase host name, no port.
    pub host: String,
    /// Path prefix, starting with `/`.
    pub path: String,
    pub action: Action,
    /// An `https://` route: with an HTTPS listener, plain HTTP requests to
    /// it are redirected there (301).
    pub https: bool,
    /// The `Strict-Transport-Security` value its HTTPS responses carry.
    pub hsts: Option<String>,
    /// Its host's TLS policy (the first `https://` route of a host sets it).
    pub tls: tls::HostTls,
}

impl RouteEntry {
    /// A plain route: no HTTPS redirect, no HSTS, the default policy.
    pub fn new(host: &str, path: &str, action: Action) -> RouteEntry {
        RouteEntry {
            host: host.to_owned(),
            path: path.to_owned(),
            action,
            https: false,
            hsts: None,
            tls: tls::HostTls::default(),
        }
    }
}

/// Where ACME servers fetch HTTP-01 answers.
const ACME_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// The largest request line plus headers the router reads.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Router settings.
#[derive(Clone, Debug)]
pub struct RouterSettings {
    /// How long a request may wait at a held gate before a 503.
    pub hold_timeout: Duration,
    /// How long a client may take to send its request headers.
    pub header_timeout: Duration,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            hold_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug)]
enum Phase {
    Held,
    /// App name → backend authority.
    Open(Arc<HashMap<String, String>>),
}

#[derive(Debug)]
struct Gate {
    phase: watch::Sender<Phase>,
    in_flight: AtomicUsize,
    idle: Notify,
    /// The authorities this environment registered, to unregister.
    authorities: std::sync::Mutex<Vec<String>>,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            phase: watch::Sender::new(Phase::Held),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            authorities: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn take_authorities(&self) -> Vec<String> {
        match self.authorities.lock() {
            Ok(mut list) => std::mem::take(&mut *list),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

/// Counts a request sent to an environment's backend until dropped.
#[derive(Debug)]
struct InFlight(Arc<Gate>);

impl InFlight {
    fn enter(gate: &Arc<Gate>) -> InFlight {
        gate.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(gate.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A response body that keeps its request counted until it is done.
struct Tracked {
    inner: Incoming,
    _in_flight: InFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A route as looked up.
#[derive(Clone, Debug)]
struct Entry {
    path: String,
    action: Action,
    environment: String,
    https: bool,
    hsts: Option<String>,
}

#[derive(Debug, Default)]
struct Table {
    /// Host → its routes, longest prefix first.
    hosts: HashMap<String, Vec<Entry>>,
    /// Host → TLS policy.
    policies: HashMap<String, tls::HostTls>,
}

#[derive(Debug)]
struct Inner {
    settings: RouterSettings,
    routes: std::sync::Mutex<BTreeMap<String, Vec<RouteEntry>>>,
    table: RwLock<Arc<Table>>,
    gates: std::sync::Mutex<HashMap<String, Arc<Gate>>>,
    registry: connect::Registry,
    generation: AtomicU64,
    tls: https::TlsState,
}

/// The router: cheap to clone, shared by the server and the deployer.
#[derive(Clone, Debug)]
pub struct Router {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Router {
    pub fn new(settings: RouterSettings) -> Router {
        let registry = connect::Registry::default();
        Router {
            inner: Arc::new(Inner {
                settings,
                routes: std::sync::Mutex::new(BTreeMap::new()),
                table: RwLock::new(Arc::new(Table::default())),
                gates: std::sync::Mutex::new(HashMap::new()),
                registry,
                generation: AtomicU64::new(0),
                tls: https::TlsState::new(),
            }),
        }
    }

    fn gate(&self, environment: &str) -> Arc<Gate> {
        lock(&self.inner.gates)
            .entry(environment.to_string())
            .or_insert_with(|| Arc::new(Gate::new()))
            .clone()
    }

    /// Replaces the routes of `environment`. A host another environment
    /// already routes stays with that one (the first by name).
    pub fn set_routes(&self, environment: &str, routes: Vec<RouteEntry>) {
        let _ = self.gate(environment);
        let mut all = lock(&self.inner.routes);
        all.insert(environment.to_string(), routes);
        self.rebuild(&all);
    }

    fn rebuild(&self, all: &BTreeMap<String, Vec<RouteEntry>>) {
        let mut table = Table::default();
        for (environment, routes) in all {
            for route in routes {
                let entries = table.hosts.entry(route.host.clone()).or_default();
                if let Some(first) = entries.first()
                    && first.environment != *environment
                {
                    warn!(host = %route.host, %environment, owner = %first.environment, "host already routed to another environment");
                    continue;
                }
                if entries.iter().any(|entry| entry.path == route.path) {
                    continue;
                }
                entries.push(Entry {
                    path: route.path.clone(),
                    action: route.action.clone(),
                    environment: environment.clone(),
                    https: route.https,
                    hsts: route.hsts.clone(),
                });
                if route.https {
                    table
                        .policies
                        .entry(route.host.clone())
                        .or_insert_with(|| route.tls.clone());
                }
            }
        }
        for entries in table.hosts.values_mut() {
            entries.sort_by_key(|entry| std::cmp::Reverse(entry.path.len()));
        }
        lock(&self.inner.tls.configs).clear();
        let mut current = match self.inner.table.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = Arc::new(table);
    }

    /// Every routed host: environment, host, and whether an `https://`
    /// route names it (what needs a certificate), sorted.
    pub fn routed_hosts(&self) -> Vec<(String, String, bool)> {
        let mut hosts: BTreeMap<(String, String), bool> = BTreeMap::new();
        for (environment, routes) in lock(&self.inner.routes).iter() {
            for route in routes {
                *hosts
                    .entry((environment.clone(), route.host.clone()))
                    .or_default() |= route.https;
            }
        }
        hosts
            .into_iter()
            .map(|((environment, host), https)| (environment, host, https))
            .collect()
    }

    /// Holds new requests to `environment` until [`Router::open`].
    pub fn hold(&self, environment: &str) {
        self.gate(environment).phase.send_replace(Phase::Held);
    }

    /// Sends `environment`'s requests (held ones first) to these backends.
    pub fn open(&self, environment: &str, backends: HashMap<String, Endpoint>) {
        let gate = self.gate(environment);
        let mut authorities = HashMap::new();
        let mut registered = Vec::new();
        for (app, endpoint) in backends {
            let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
            let authority = format!("g{generation}");
            self.inner.registry.insert(authority.clone(), endpoint);
            registered.push(authority.clone());
            authorities.insert(app, authority);
        }
        let old = {
            let mut list = lock(&gate.authorities);
            std::mem::replace(&mut *list, registered)
        };
        gate.phase.send_replace(Phase::Open(Arc::new(authorities)));
        for authority in old {
            self.inner.registry.remove(&authority);
        }
    }

    /// Waits until no request is being served by `environment`'s backends,
    /// for at most `limit`. Returns whether it drained.
    pub async fn drain(&self, environment: &str, limit: Duration) -> bool {
        let gate = self.gate(environment);
        tokio::time::timeout(limit, async {
            loop {
                let idle = gate.idle.notified();
                if gate.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await
        .is_ok()
    }

    /// Requests being served by `environment`'s backends now.
    pub fn in_flight(&self, environment: &str) -> usize {
        self.gate(environment).in_flight.load(Ordering::SeqCst)
    }

    /// Forgets `environment`: its routes go; waiting requests get a 503.
    pub fn remove(&self, environment: &str) {
        let mut all = lock(&self.inner.routes);
        all.remove(environment);
        self.rebuild(&all);
        if let Some(gate) = lock(&self.inner.gates).remove(environment) {
            gate.phase.send_replace(Phase::Held);
            for authority in gate.take_authorities() {
                self.inner.registry.remove(&authority);
            }
        }
    }

    /// A pooled client for the current runtime (connections to backends
    /// live on the runtime that made them).
    pub(crate) fn client(&self) -> BackendClient {
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .build(connect::Connector {
                registry: self.inner.registry.clone(),
            })
    }

    /// Serves HTTP on `listeners` (bound with `SO_REUSEPORT` to one
    /// address), one thread with its own single-threaded runtime each, as
    /// nginx runs a worker per core: a request, its client connection and
    /// its backend connection stay on one thread, with no cross-thread
    /// wakeups. Returns when `stop` fires and every thread is done.
    pub fn serve_threads(
        &self,
        listeners: Vec<std::net::TcpListener>,
        stop: CancellationToken,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        self.spawn_threads(listeners, false, stop)
    }

    /// One thread with a single-threaded runtime per listener, serving
    /// HTTP or (`secure`) HTTPS.
    fn spawn_threads(
        &self,
        listeners: Vec<std::net::TcpListener>,
        secure: bool,
        stop: CancellationToken,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        let mut threads = Vec::new();
        for (index, listener) in listeners.into_iter().enumerate() {
            listener.set_nonblocking(true)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let router = self.clone();
            let stop = stop.clone();
            let name = if secure { "lw-https" } else { "lw-router" };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-{index}"))
                    .spawn(move || {
                        runtime.block_on(async move {
                            match tokio::net::TcpListener::from_std(listener) {
                                Ok(listener) if secure => router.serve_tls(listener, stop).await,
                                Ok(listener) => router.serve(listener, stop).await,
                                Err(error) => warn!(%error, "router listener"),
                            }
                        });
                    })?,
            );
        }
        Ok(threads)
    }

    /// Serves HTTP on `listener` until `stop` fires.
    pub async fn serve(&self, listener: tokio::net::TcpListener, stop: CancellationToken) {
        let client = self.client();
        self.accept_each(&listener, &stop, |router, stream, peer| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                router
                    .serve_connection(TokioIo::new(stream), peer, client, false, stop)
                    .await;
            });
        })
        .await;
    }

    /// Accepts connections (no Nagle) until `stop` fires, handing each to
    /// `on_connection`; a failed accept (out of descriptors) is retried.
    pub(crate) async fn accept_each(
        &self,
        listener: &tokio::net::TcpListener,
        stop: &CancellationToken,
        mut on_connection: impl FnMut(Router, tokio::net::TcpStream, SocketAddr),
    ) {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    debug!(%error, "accept");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            on_connection(self.clone(), stream, peer);
        }
    }

    /// Serves HTTP/1.1 on one client connection (plain or TLS).
    pub(crate) async fn serve_connection<IO>(
        self,
        io: IO,
        peer: SocketAddr,
        client: BackendClient,
        secure: bool,
        stop: CancellationToken,
    ) where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let header_timeout = self.inner.settings.header_timeout;
        let router = self.clone();
        let service = hyper::service::service_fn(move |request| {
            let router = router.clone();
            let client = client.clone();
            async move { Ok::<_, Infallible>(router.handle(request, peer, &client, secure).await) }
        });
        // half_close: a client may shut down its sending side and
        // still wait for the answer (nc, some proxies); without it
        // hyper drops such a connection unanswered when it sees EOF.
        let connection = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .timer(TokioTimer::new())
            .header_read_timeout(Some(header_timeout))
            // Request heads beyond this get 431, not unbounded memory.
            .max_buf_size(MAX_REQUEST_HEAD)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::select! {
            () = stop.cancelled() => {}
            result = connection => {
                if let Err(error) = result {
                    debug!(%error, "client connection");
                }
            }
        }
    }

    fn table(&self) -> Arc<Table> {
        match self.inner.table.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn lookup(&self, host: &str, path: &str) -> Option<Entry> {
        let table = self.table();
        let entries = table.hosts.get(host)?;
        entries
            .iter()
            .find(|entry| path_matches(&entry.path, path))
            .cloned()
    }

    async fn handle(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
        client: &BackendClient,
        secure: bool,
    ) -> Response<ProxyBody> {
        let host = request_host(&request);
        let path = request.uri().path().to_string();
        if let Some(token) = path.strip_prefix(ACME_CHALLENGE_PATH)
            && !secure
            && let Some(answer) = self.inner.tls.challenge(token)
        {
            return text(StatusCode::OK, &answer);
        }
        let Some(entry) = self.lookup(&host, &path) else {
            if path == "/health" {
                return text(StatusCode::OK, "ok\n");
            }
            return text(
                StatusCode::NOT_FOUND,
                &format!("no route for host '{host}'\n"),
            );
        };
        let https_port = self
            .inner
            .tls
            .https_port
            .load(std::sync::atomic::Ordering::Relaxed);
        if !secure && entry.https && https_port != 0 {
            let port = if https_port == 443 {
                String::new()
            } else {
                format!(":{https_port}")
            };
            let target = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let mut response = text(StatusCode::MOVED_PERMANENTLY, "");
            if let Ok(location) = HeaderValue::from_str(&format!("https://{host}{port}{target}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            return response;
        }
        let hsts = if secure { entry.hsts.clone() } else { None };
        let environment = entry.environment.clone();
        let app = match entry.action {
            Action::Redirect { to, code } => {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
                let mut response = text(status, "");
                if let Ok(location) = HeaderValue::from_str(&to) {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                return response;
            }
            Action::Upstream { app } => app,
        };
        let gate = self.gate(&environment);
        let (authority, in_flight) = match self.pass_gate(&gate, &app).await {
            Ok(passed) => passed,
            Err(response) => return response,
        };

        let upgrade = request.headers().contains_key(header::UPGRADE);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        prepare_headers(request.headers_mut(), &host, peer, upgrade, secure);
        let path_and_query = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let Ok(uri) = Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(path_and_query)
            .build()
        else {
            return text(StatusCode::BAD_REQUEST, "bad request target\n");
        };
        *request.uri_mut() = uri;
        *request.version_mut() = hyper::Version::HTTP_11;

        let sent_at = std::time::Instant::now();
        let mut response = match client.request(request).await {
            Ok(response) => {
                if sent_at.elapsed() > Duration::from_millis(500) {
                    debug!(%app, %environment, %authority, elapsed = ?sent_at.elapsed(), "slow backend response");
                }
                response
            }
            Err(error) => {
                debug!(%error, %app, %environment, "backend request failed");
                return text(
                    StatusCode::BAD_GATEWAY,
                    &format!("app '{app}' did not answer\n"),
                );
            }
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let backend_upgrade = hyper::upgrade::on(&mut response);
            let tunnel_in_flight = InFlight::enter(&in_flight.0);
            tokio::spawn(async move {
                let _counted = tunnel_in_flight;
                if let (Ok(client), Ok(backend)) = tokio::join!(client_upgrade, backend_upgrade) {
                    let mut client = TokioIo::new(client);
                    let mut backend = TokioIo::new(backend);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                }
            });
        }
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        strip_hop_by_hop(response.headers_mut(), switching);
        if let Some(hsts) = hsts
            && let Ok(value) = HeaderValue::from_str(&hsts)
        {
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, value);
        }
        response.map(|body| {
            Tracked {
                inner: body,
                _in_flight: in_flight,
            }
            .boxed()
        })
    }

    /// Waits at `gate` until it is open (bounded); then the request counts
    /// as in flight. The count is taken *before* the phase is read, so a
    /// deploy that holds and then drains sees every request already past.
    async fn pass_gate(
        &self,
        gate: &Arc<Gate>,
        app: &str,
    ) -> Result<(String, InFlight), Response<ProxyBody>> {
        let mut waiting = gate.phase.subscribe();
        let deadline = tokio::time::Instant::now() + self.inner.settings.hold_timeout;
        loop {
            let counted = InFlight::enter(gate);
            let phase = waiting.borrow_and_update().clone();
            if let Phase::Open(backends) = phase {
                return match backends.get(app) {
                    Some(authority) => Ok((authority.clone(), counted)),
                    None => Err(text(
                        StatusCode::BAD_GATEWAY,
                        &format!("app '{app}' is not running\n"),
                    )),
                };
            }
            drop(counted);
            match tokio::time::timeout_at(deadline, waiting.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    let mut response = text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the environment is being deployed; retry shortly\n",
                    );
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                    return Err(response);
                }
            }
        }
    }
}
