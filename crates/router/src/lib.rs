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
//! - Drain: requests sent to a backend are counted per environment (each
//!   router thread on its own counter, summed when read); a deploy holds the
//!   gate, then waits (bounded) for that count to reach zero before stopping
//!   the old containers.
//! - Forwarding: HTTP/1.1 connections dialled into the environment's
//!   network namespace or to a unix socket ([`Endpoint`]), pooled per router
//!   thread (the most recently used first, so a keep-alive client's next
//!   request finds the connection its last one used); bodies stream both
//!   ways; hop-by-hop headers are dropped; `X-Forwarded-For`, `-Proto` and
//!   `-Host` are set; WebSocket (any `Upgrade`) is tunnelled.
//! - The only lock a request shares with other router threads is the read
//!   lock of its gate's phase: each thread keeps a copy of the route table
//!   (taken again when it changes) and a route holds its environment's gate.
//! - `GET /health` on a host with no route answers the router's own health.
//! - HTTPS ([`Router::serve_tls`], [`tls`]): the ClientHello's name picks
//!   the certificate and the host's policy; requests then go through the
//!   same gates. With an HTTPS port set, a plain request to an `https://`
//!   route gets a 301 there; HTTPS responses of routes with HSTS carry it.

mod backend;
mod connect;
mod gate;
use gate::{Gate, InFlight, Passage, Phase};
use headers::{forwarded_for, path_matches, prepare_headers, request_host, strip_hop_by_hop, text};
mod headers;
mod https;
pub mod tls;

pub use launchway_net::netns;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use connect::{Endpoint, accepts, dial};
pub use netns::SocketFactory;

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

/// The 301 to `https://host[:port]/target` a plain request to an
/// `https://` route gets.
fn https_redirect(host: &str, https_port: u16, uri: &Uri) -> Response<ProxyBody> {
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut response = text(StatusCode::MOVED_PERMANENTLY, "");
    if let Ok(location) = HeaderValue::from_str(&format!("https://{host}{port}{target}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
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

/// What the router answers with: its own text, or a backend's body, which
/// keeps its request counted until it is done. (An enum, not a boxed body:
/// no allocation per response.)
enum ProxyBody {
    Text(Full<Bytes>),
    Backend {
        /// Gives the backend connection back once it is done.
        body: backend::ResponseBody,
        _in_flight: InFlight,
    },
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Text(text) => std::pin::Pin::new(text)
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(|never| match never {}))),
            ProxyBody::Backend { body, .. } => std::pin::Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Text(text) => text.is_end_stream(),
            ProxyBody::Backend { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ProxyBody::Text(text) => text.size_hint(),
            ProxyBody::Backend { body, .. } => body.size_hint(),
        }
    }
}

/// A client connection, as its requests see it.
#[derive(Debug)]
struct Client {
    router: Router,
    /// Its `X-Forwarded-For` part.
    address: Option<HeaderValue>,
    /// Its thread's backend connections.
    backends: Arc<backend::Pool>,
    /// Over TLS.
    secure: bool,
}

/// A route as looked up: shared by the table and the requests it serves.
#[derive(Debug)]
struct Entry {
    path: String,
    action: Action,
    environment: Arc<str>,
    /// The environment's gate (the one [`Router::gate`] gives).
    gate: Arc<Gate>,
    https: bool,
    hsts: Option<HeaderValue>,
}

#[derive(Debug, Default)]
struct Table {
    /// Host → its routes, longest prefix first.
    hosts: HashMap<String, Vec<Arc<Entry>>>,
    /// Host → TLS policy.
    policies: HashMap<String, tls::HostTls>,
}

/// A router thread's copy of the current table, so a lookup takes no
/// lock: refreshed when the router's table generation moved.
struct CachedTable {
    router: u64,
    generation: u64,
    table: Arc<Table>,
}

thread_local! {
    static CACHED_TABLE: std::cell::RefCell<Option<CachedTable>> =
        const { std::cell::RefCell::new(None) };
}

#[derive(Debug)]
struct Inner {
    settings: RouterSettings,
    routes: std::sync::Mutex<BTreeMap<String, Vec<RouteEntry>>>,
    table: RwLock<Arc<Table>>,
    /// Bumped after each table swap: threads compare it with their copy.
    table_generation: AtomicU64,
    /// Tells this router's tables from another's in a thread's cache.
    id: u64,
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
                table_generation: AtomicU64::new(0),
                id: {
                    static ROUTERS: AtomicU64 = AtomicU64::new(0);
                    ROUTERS.fetch_add(1, Ordering::Relaxed)
                },
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
                    && *first.environment != **environment
                {
                    warn!(host = %route.host, %environment, owner = %first.environment, "host already routed to another environment");
                    continue;
                }
                if entries.iter().any(|entry| entry.path == route.path) {
                    continue;
                }
                let environment: Arc<str> = match entries.first() {
                    Some(first) => first.environment.clone(),
                    None => Arc::from(environment.as_str()),
                };
                entries.push(Arc::new(Entry {
                    path: route.path.clone(),
                    action: route.action.clone(),
                    gate: self.gate(&environment),
                    environment,
                    https: route.https,
                    hsts: route
                        .hsts
                        .as_deref()
                        .and_then(|hsts| HeaderValue::from_str(hsts).ok()),
                }));
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
        self.inner.table_generation.fetch_add(1, Ordering::Release);
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
            authorities.insert(app, Arc::from(authority));
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
        self.gate(environment).drain(limit).await
    }

    /// Requests being served by `environment`'s backends now.
    pub fn in_flight(&self, environment: &str) -> usize {
        self.gate(environment).in_flight()
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

    /// The idle backend connections of the current runtime (connections to
    /// backends live on the runtime that made them), swept until `stop`.
    pub(crate) fn pool(&self, stop: &CancellationToken) -> Arc<backend::Pool> {
        let pool = Arc::new(backend::Pool::new(self.inner.registry.clone()));
        let (swept, stop) = (Arc::downgrade(&pool), stop.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(backend::SWEEP_PERIOD);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                match swept.upgrade() {
                    Some(pool) => pool.sweep(),
                    None => return,
                }
            }
        });
        pool
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
        // Each connection polls its stop token whenever it is polled: a
        // token of this listener's own, so that check takes a lock no
        // other thread takes.
        let stop = stop.child_token();
        let pool = self.pool(&stop);
        self.accept_each(&listener, &stop, |router, stream, peer| {
            let (pool, stop) = (pool.clone(), stop.clone());
            tokio::spawn(async move {
                router
                    .serve_connection(TokioIo::new(stream), peer, pool, false, stop)
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
        pool: Arc<backend::Pool>,
        secure: bool,
        stop: CancellationToken,
    ) where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let header_timeout = self.inner.settings.header_timeout;
        // What its requests share, cloned per request (a count only this
        // thread touches, unlike the router's own).
        let client = Arc::new(Client {
            router: self.clone(),
            address: forwarded_for(peer),
            backends: pool,
            secure,
        });
        let service = hyper::service::service_fn(move |request| {
            let client = client.clone();
            async move { Ok::<_, Infallible>(client.router.handle(request, &client).await) }
        });
        // half_close: a client may shut down its sending side and
        // still wait for the answer (nc, some proxies); without it
        // hyper drops such a connection unanswered when it sees EOF.
        let connection = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            // Head and body copied into one buffer, one plain write: less
            // CPU per small response than a vectored write (measured).
            .writev(false)
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

    /// The route for `host` and `path`, from this thread's copy of the
    /// table (taken again when the table changed).
    fn lookup(&self, host: &str, path: &str) -> Option<Arc<Entry>> {
        let generation = self.inner.table_generation.load(Ordering::Acquire);
        CACHED_TABLE.with(|cached| {
            let mut cached = cached.borrow_mut();
            let current = matches!(&*cached, Some(copy) if copy.router == self.inner.id && copy.generation == generation);
            if !current {
                *cached = Some(CachedTable {
                    router: self.inner.id,
                    generation,
                    table: self.table(),
                });
            }
            let table = &cached.as_ref()?.table;
            table
                .hosts
                .get(host)?
                .iter()
                .find(|entry| path_matches(&entry.path, path))
                .cloned()
        })
    }

    async fn handle(&self, request: Request<Incoming>, client: &Client) -> Response<ProxyBody> {
        let Client {
            address: client_address,
            backends,
            secure,
            ..
        } = client;
        let (client_address, secure) = (client_address.as_ref(), *secure);
        let (mut parts, body) = request.into_parts();
        let entry = {
            let host = request_host(&parts.uri, parts.headers.get(header::HOST));
            let path = parts.uri.path();
            if let Some(token) = path.strip_prefix(ACME_CHALLENGE_PATH)
                && !secure
                && let Some(answer) = self.inner.tls.challenge(token)
            {
                return text(StatusCode::OK, &answer);
            }
            let Some(entry) = self.lookup(&host, path) else {
                if path == "/health" {
                    return text(StatusCode::OK, "ok\n");
                }
                return text(
                    StatusCode::NOT_FOUND,
                    &format!("no route for host '{host}'\n"),
                );
            };
            if !secure && entry.https {
                let https_port = self.inner.tls.https_port.load(Ordering::Relaxed);
                if https_port != 0 {
                    return https_redirect(&host, https_port, &parts.uri);
                }
            }
            entry
        };
        let app = match &entry.action {
            Action::Redirect { to, code } => {
                let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
                let mut response = text(status, "");
                if let Ok(location) = HeaderValue::from_str(to) {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                return response;
            }
            Action::Upstream { app } => app.as_str(),
        };
        let environment = &*entry.environment;
        let (authority, in_flight) = match self.pass_gate(&entry.gate, app).await {
            Ok(passed) => passed,
            Err(response) => return response,
        };

        let upgrade = parts.headers.contains_key(header::UPGRADE);
        let client_upgrade = if upgrade {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        prepare_headers(
            &mut parts.headers,
            &parts.uri,
            client_address,
            upgrade,
            secure,
        );
        // The backend gets the origin-form (a proxy's client may have sent
        // the absolute-form).
        if parts.uri.scheme().is_some() && parts.method != hyper::Method::CONNECT {
            parts.uri = match parts.uri.path_and_query() {
                Some(target) => Uri::from(target.clone()),
                None => Uri::from_static("/"),
            };
        }
        parts.version = hyper::Version::HTTP_11;
        let request = Request::from_parts(parts, body);

        let (mut response, mut lease) = match backends.send(authority, request).await {
            Ok(sent) => sent,
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
            let tunnel_in_flight = in_flight.again();
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
        if switching {
            // The connection is the tunnel's now (or closed).
            lease.tunnel();
        }
        strip_hop_by_hop(response.headers_mut(), switching);
        if secure && let Some(hsts) = &entry.hsts {
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        response.map(|inner| ProxyBody::Backend {
            body: lease.body(inner),
            _in_flight: in_flight,
        })
    }

    /// Waits at `gate` until it is open (bounded); then the request counts
    /// as in flight (see [`Gate::pass`]).
    async fn pass_gate(
        &self,
        gate: &Arc<Gate>,
        app: &str,
    ) -> Result<(Arc<str>, InFlight), Response<ProxyBody>> {
        let mut deadline = None;
        loop {
            match gate.pass(app) {
                Passage::Open(authority, counted) => return Ok((authority, counted)),
                Passage::NoApp => {
                    return Err(text(
                        StatusCode::BAD_GATEWAY,
                        &format!("app '{app}' is not running\n"),
                    ));
                }
                Passage::Held => {}
            }
            let deadline = *deadline.get_or_insert_with(|| {
                tokio::time::Instant::now() + self.inner.settings.hold_timeout
            });
            if !gate.wait_open(deadline).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(host: &str, path: &str, app: &str) -> RouteEntry {
        RouteEntry::new(
            host,
            path,
            Action::Upstream {
                app: app.to_string(),
            },
        )
    }

    /// The app the router's lookup on this thread finds.
    fn app_for(router: &Router, host: &str, path: &str) -> Option<String> {
        router
            .lookup(host, path)
            .and_then(|entry| match &entry.action {
                Action::Upstream { app } => Some(app.clone()),
                Action::Redirect { .. } => None,
            })
    }

    #[test]
    fn a_thread_with_a_cached_table_sees_the_next_one() {
        let router = Router::new(RouterSettings::default());
        router.set_routes("main", vec![upstream("a.example", "/", "web")]);
        // Cached on this thread and on another one.
        assert_eq!(app_for(&router, "a.example", "/x").as_deref(), Some("web"));
        let (cached_tx, cached_rx) = std::sync::mpsc::channel::<()>();
        let (swapped_tx, swapped_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn({
            let router = router.clone();
            move || {
                let before = app_for(&router, "a.example", "/x");
                let _ = cached_tx.send(());
                swapped_rx.recv().expect("swapped");
                (before, app_for(&router, "a.example", "/x"))
            }
        });
        cached_rx.recv().expect("cached");
        router.set_routes(
            "main",
            vec![
                upstream("a.example", "/", "web"),
                upstream("a.example", "/x", "api"),
            ],
        );
        let _ = swapped_tx.send(());
        assert_eq!(app_for(&router, "a.example", "/x").as_deref(), Some("api"));
        let (before, after) = other.join().expect("other thread");
        assert_eq!(before.as_deref(), Some("web"));
        assert_eq!(after.as_deref(), Some("api"));
        // Gone with its environment.
        router.remove("main");
        assert_eq!(app_for(&router, "a.example", "/x"), None);
    }

    #[test]
    fn routers_on_one_thread_keep_their_own_tables() {
        let first = Router::new(RouterSettings::default());
        let second = Router::new(RouterSettings::default());
        first.set_routes("main", vec![upstream("a.example", "/", "one")]);
        second.set_routes("main", vec![upstream("a.example", "/", "two")]);
        for _ in 0..2 {
            assert_eq!(app_for(&first, "a.example", "/").as_deref(), Some("one"));
            assert_eq!(app_for(&second, "a.example", "/").as_deref(), Some("two"));
        }
    }

    #[tokio::test]
    async fn a_route_passes_its_environments_gate() {
        let router = Router::new(RouterSettings::default());
        router.set_routes("main", vec![upstream("a.example", "/", "web")]);
        let entry = router.lookup("a.example", "/").expect("route");
        router.open(
            "main",
            HashMap::from([(
                "web".to_string(),
                Endpoint::Unix {
                    path: "/nonexistent".into(),
                    peer_uid: None,
                },
            )]),
        );
        let Passage::Open(_, counted) = entry.gate.pass("web") else {
            panic!("open after open()");
        };
        assert_eq!(router.in_flight("main"), 1);
        assert!(!router.drain("main", Duration::from_millis(20)).await);
        drop(counted);
        assert!(router.drain("main", Duration::from_secs(1)).await);
        router.hold("main");
        assert!(matches!(entry.gate.pass("web"), Passage::Held));
    }
}
