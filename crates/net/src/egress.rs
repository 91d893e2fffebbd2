//! Package access for build hooks: an HTTP(S) proxy inside the hook's own
//! network namespace, and nothing else there.
//!
//! A build hook runs in a namespace of its own that has only `lo` (made
//! with [`crate::netns::create`]). When the hook runs, the daemon listens
//! on `127.0.0.1:3128` *inside* that namespace (the listening socket is
//! made on a thread that joined it, as [`crate::netns::SocketFactory`]
//! does) and serves the connections from the daemon's own namespace. The
//! hook gets `HTTP_PROXY`/`HTTPS_PROXY` pointing there; it still has no
//! interface but loopback and no route anywhere.
//!
//! The proxy understands `CONNECT host:port` (HTTPS, git over HTTPS, …) and
//! plain HTTP requests in absolute form (`GET http://host/path`), and lets
//! through only the destinations its [`AllowList`] permits. Everything else
//! gets `403` with a message that says why and what setting changes it.
//! With an empty list (a project whose egress is off) every request is
//! refused, which also tells the daemon that the hook tried the network.
//! Each destination's connections, refusals and bytes are counted for the
//! build log and the build record ([`EgressReport`]).
//!
//! With an upstream proxy ([`crate::upstream`]), a permitted destination
//! is reached through it (`CONNECT`, or the request in absolute form).
//!
//! The allow-list names hosts, not addresses: a name is resolved on the
//! host when the connection is made. An address (`127.0.0.2:8080`) is let
//! through only when the list names it exactly.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sched::CloneFlags;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// The proxy's port on the hook's loopback.
pub const PROXY_PORT: u16 = 3128;

/// The package registries a project with `build.egress=registries` may
/// reach when the daemon's settings do not say otherwise: pip, npm (yarn
/// and pnpm use it too), composer (its packages download from GitHub),
/// rubygems, Go modules and Maven Central.
pub const DEFAULT_ALLOW: &[&str] = &[
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "repo.packagist.org",
    "packagist.org",
    "api.github.com",
    "codeload.github.com",
    "rubygems.org",
    "index.rubygems.org",
    "proxy.golang.org",
    "sum.golang.org",
    "repo.maven.apache.org",
    "repo1.maven.org",
];

/// The longest request head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;
/// How long a client may take to send its request head, and the proxy to
/// reach a destination.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A pattern of the allow-list that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("`{pattern}` is not an egress destination: {reason}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// Why.
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// This name or address only.
    Exact(String),
    /// Any name under this suffix (written `*.example.org`; the suffix keeps
    /// its leading dot, so `example.org` itself is not matched).
    Under(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    host: HostPattern,
    /// `None`: 80 and 443.
    port: Option<u16>,
}

/// The destinations a hook may reach: `host`, `*.domain` or an IPv4
/// address, each optionally with `:port` (without one, 80 and 443).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<Rule>,
}

/// Whether `name` is a lowercase DNS name (labels of letters, digits and
/// inner hyphens).
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl AllowList {
    /// Parses the patterns of `[build] egress_allow`.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<AllowList, PatternError> {
        let mut rules = Vec::new();
        for written in patterns {
            let written = written.as_ref();
            let error = |reason| PatternError {
                pattern: written.to_owned(),
                reason,
            };
            let (host, port) = match written.rsplit_once(':') {
                Some((host, port)) => {
                    let port: u16 = port
                        .parse()
                        .ok()
                        .filter(|p| *p != 0)
                        .ok_or_else(|| error("the port must be a number from 1 to 65535"))?;
                    (host, Some(port))
                }
                None => (written, None),
            };
            if host.contains('[') || host.contains(':') {
                return Err(error("IPv6 addresses are not supported"));
            }
            let host = normalize_host(host);
            let pattern = if let Some(domain) = host.strip_prefix("*.") {
                if !is_host_name(domain) || domain.parse::<Ipv4Addr>().is_ok() {
                    return Err(error("`*.` must be followed by a domain name"));
                }
                HostPattern::Under(format!(".{domain}"))
            } else if host.parse::<Ipv4Addr>().is_ok() || is_host_name(&host) {
                HostPattern::Exact(host)
            } else {
                return Err(error(
                    "write a host name (letters, digits, `-`, `.`), `*.domain` or an IPv4 address",
                ));
            };
            rules.push(Rule {
                host: pattern,
                port,
            });
        }
        Ok(AllowList { rules })
    }

    /// The list of the defaults ([`DEFAULT_ALLOW`]).
    pub fn defaults() -> AllowList {
        // The defaults are written above and parse.
        AllowList::parse(DEFAULT_ALLOW).unwrap_or_default()
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `host:port` may be reached.
    pub fn permits(&self, host: &str, port: u16) -> bool {
        let host = normalize_host(host);
        self.rules.iter().any(|rule| {
            let port_ok = match rule.port {
                Some(allowed) => allowed == port,
                None => port == 80 || port == 443,
            };
            let host_ok = match &rule.host {
                HostPattern::Exact(name) => *name == host,
                HostPattern::Under(suffix) => {
                    host.ends_with(suffix.as_str()) && host.parse::<Ipv4Addr>().is_err()
                }
            };
            port_ok && host_ok
        })
    }
}

/// What a hook's proxy lets through.
#[derive(Clone, Debug)]
pub struct EgressPolicy {
    /// The destinations; empty when the project's egress is off.
    pub allow: AllowList,
    /// Said to the hook (and in the build log) with each refusal: what to
    /// change to let it through.
    pub refusal_hint: String,
    /// Where permitted connections go when the network needs a proxy.
    pub upstream: Option<crate::upstream::UpstreamProxy>,
}

/// The traffic to one destination during a hook.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostTraffic {
    /// `host:port`.
    pub destination: String,
    /// Connections let through.
    pub connections: u64,
    /// Requests refused.
    pub refused: u64,
    /// Bytes from the hook to the destination.
    pub sent: u64,
    /// Bytes from the destination to the hook.
    pub received: u64,
}

/// Every destination a hook asked for, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressReport {
    /// By destination.
    pub hosts: Vec<HostTraffic>,
}

impl EgressReport {
    /// Whether the hook asked for anything that was refused.
    pub fn refused_any(&self) -> bool {
        self.hosts.iter().any(|h| h.refused > 0)
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

type Traffic = Arc<Mutex<BTreeMap<String, Arc<Counters>>>>;

fn counters(traffic: &Traffic, destination: &str) -> Arc<Counters> {
    let mut map = traffic.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(destination.to_owned()).or_default().clone()
}

/// A running proxy in a hook's namespace. [`EgressProxy::finish`] stops it
/// and removes the namespace.
#[derive(Debug)]
pub struct EgressProxy {
    netns: PathBuf,
    accept: JoinHandle<()>,
    traffic: Traffic,
}

/// Binds `127.0.0.1:port` inside the namespace at `path` on a thread that
/// joined it; the socket stays in that namespace.
fn bind_inside(path: &Path, port: u16) -> io::Result<std::net::TcpListener> {
    let target = path.to_path_buf();
    std::thread::Builder::new()
        .name("lw-egress-bind".into())
        .spawn(move || -> io::Result<std::net::TcpListener> {
            let file = std::fs::File::open(&target)?;
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })?
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

impl EgressProxy {
    /// Makes the namespace pinned at `netns` (its directory must exist)
    /// and starts the proxy in it. Refusals are said on `log` as they
    /// happen.
    pub async fn start(
        netns: &Path,
        policy: EgressPolicy,
        log: mpsc::Sender<String>,
    ) -> io::Result<EgressProxy> {
        let path = netns.to_path_buf();
        let listener = tokio::task::spawn_blocking(move || {
            crate::netns::create(&path)?;
            bind_inside(&path, PROXY_PORT).inspect_err(|_| {
                let _ = crate::netns::remove(&path);
            })
        })
        .await
        .map_err(|_| io::Error::other("the namespace task failed"))??;
        let listener = TcpListener::from_std(listener)?;
        let traffic = Traffic::default();
        let accept = tokio::spawn(accept_loop(
            listener,
            Arc::new(policy),
            traffic.clone(),
            log,
        ));
        Ok(EgressProxy {
            netns: netns.to_path_buf(),
            accept,
            traffic,
        })
    }

    /// The namespace the hook joins.
    pub fn netns(&self) -> &Path {
        &self.netns
    }

    /// The variables that send a hook's HTTP clients to the proxy. The
    /// hook's own loopback stays direct.
    pub fn env(&self) -> Vec<(String, String)> {
        let url = format!("http://127.0.0.1:{PROXY_PORT}");
        let no_proxy = "localhost,127.0.0.1,::1".to_owned();
        vec![
            ("HTTP_PROXY".into(), url.clone()),
            ("HTTPS_PROXY".into(), url.clone()),
            ("http_proxy".into(), url.clone()),
            ("https_proxy".into(), url),
            ("NO_PROXY".into(), no_proxy.clone()),
            ("no_proxy".into(), no_proxy),
        ]
    }

    /// Stops the proxy (connections still open are cut), removes the
    /// namespace and returns what went through.
    pub async fn finish(self) -> EgressReport {
        self.accept.abort();
        let _ = self.accept.await;
        let path = self.netns.clone();
        let removed = tokio::task::spawn_blocking(move || crate::netns::remove(&path)).await;
        if let Ok(Err(error)) = removed {
            tracing::warn!(%error, netns = %self.netns.display(), "cannot remove a build hook's namespace");
        }
        let map = self.traffic.lock().unwrap_or_else(|e| e.into_inner());
        EgressReport {
            hosts: map
                .iter()
                .map(|(destination, c)| HostTraffic {
                    destination: destination.clone(),
                    connections: c.connections.load(Ordering::Relaxed),
                    refused: c.refused.load(Ordering::Relaxed),
                    sent: c.sent.load(Ordering::Relaxed),
                    received: c.received.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    policy: Arc<EgressPolicy>,
    traffic: Traffic,
    log: mpsc::Sender<String>,
) {
    // Dropped with this task: every connection ends with the proxy.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // Out of descriptors, most likely: let some close.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                connections.spawn(serve(client, policy.clone(), traffic.clone(), log.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A request the proxy understands.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// `CONNECT host:port`: a tunnel.
    Connect { host: String, port: u16 },
    /// `METHOD http://host[:port]/path`: one plain HTTP request, forwarded
    /// with this head (origin form, `Connection: close`).
    Forward {
        host: String,
        port: u16,
        head: Vec<u8>,
        /// The same head in absolute form, for an upstream proxy.
        proxy_head: Vec<u8>,
    },
}

/// Splits `host:port` (or `host` with `default_port`); `[v6]:port` keeps
/// its brackets out.
fn split_authority(authority: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port?,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((authority.to_owned(), default_port?)),
    }
    .filter(|(host, _)| !host.is_empty())
}

/// Parses a request head (everything up to the blank line, included).
fn parse_head(head: &[u8]) -> Result<Request, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if !version.starts_with("HTTP/1.") {
        return Err("only HTTP/1 is spoken here");
    }
    if method == "CONNECT" {
        let (host, port) = split_authority(target, None).ok_or("CONNECT needs host:port")?;
        return Ok(Request::Connect { host, port });
    }
    let Some(rest) = target.strip_prefix("http://") else {
        return Err("a proxy request names an absolute http:// URL (HTTPS goes through CONNECT)");
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = split_authority(authority, Some(80)).ok_or("malformed URL authority")?;
    let mut out = String::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        let hop_by_hop = [
            "connection",
            "proxy-connection",
            "keep-alive",
            "proxy-authorization",
        ];
        if hop_by_hop.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    Ok(Request::Forward {
        host,
        port,
        head: format!("{method} {path} {version}\r\n{out}").into_bytes(),
        proxy_head: format!("{method} {target} {version}\r\n{out}").into_bytes(),
    })
}

/// Reads up to the end of the request head; returns the head and what
/// came after it.
async fn read_head(client: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buffer.split_off(end + 4);
            return Ok((buffer, rest));
        }
        if buffer.len() > MAX_HEAD {
            return Err("the request head is too long");
        }
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err("the connection ended before the request did"),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn answer(client: &mut TcpStream, status: &str, message: &str) {
    let body = format!("launchway: {message}\n");
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(reply.as_bytes()).await;
    let _ = client.shutdown().await;
}

fn destination(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{}:{port}", normalize_host(host))
    }
}

async fn serve(
    mut client: TcpStream,
    policy: Arc<EgressPolicy>,
    traffic: Traffic,
    log: mpsc::Sender<String>,
) {
    let head = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_head(&mut client)).await;
    let (head, early) = match head {
        Ok(Ok(read)) => read,
        Ok(Err(reason)) => return answer(&mut client, "400 Bad Request", reason).await,
        Err(_) => return answer(&mut client, "408 Request Timeout", "no request came").await,
    };
    let request = match parse_head(&head) {
        Ok(request) => request,
        Err(reason) => return answer(&mut client, "400 Bad Request", reason).await,
    };
    let (host, port) = match &request {
        Request::Connect { host, port } | Request::Forward { host, port, .. } => {
            (host.clone(), *port)
        }
    };
    let target = destination(&host, port);
    let counts = counters(&traffic, &target);
    if !policy.allow.permits(&host, port) {
        counts.refused.fetch_add(1, Ordering::Relaxed);
        let message = format!("{target} refused: {}", policy.refusal_hint);
        let _ = log.send(format!("      Build egress: {message}")).await;
        return answer(&mut client, "403 Forbidden", &message).await;
    }
    let through = policy
        .upstream
        .as_ref()
        .filter(|upstream| upstream.applies_to(&host));
    let connected = match (through, &request) {
        (Some(upstream), Request::Connect { .. }) => {
            Some(upstream.tunnel(&host, port, HANDSHAKE_TIMEOUT).await)
        }
        (Some(upstream), Request::Forward { .. }) => Some(upstream.dial(HANDSHAKE_TIMEOUT).await),
        (None, _) => {
            tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect((host.as_str(), port)))
                .await
                .ok()
        }
    };
    let mut upstream = match connected {
        Some(Ok(stream)) => stream,
        Some(Err(error)) => {
            let message = format!("cannot reach {target}: {error}");
            return answer(&mut client, "502 Bad Gateway", &message).await;
        }
        None => {
            let message = format!("cannot reach {target}: no answer in 30 s");
            return answer(&mut client, "504 Gateway Timeout", &message).await;
        }
    };
    counts.connections.fetch_add(1, Ordering::Relaxed);
    let first = match request {
        Request::Connect { .. } => {
            if client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            early
        }
        Request::Forward {
            head, proxy_head, ..
        } => match through {
            Some(_) => [proxy_head, early].concat(),
            None => [head, early].concat(),
        },
    };
    if upstream.write_all(&first).await.is_err() {
        return;
    }
    counts.sent.fetch_add(first.len() as u64, Ordering::Relaxed);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    tokio::join!(
        pump(client_read, upstream_write, &counts.sent),
        pump(upstream_read, client_write, &counts.received),
    );
}

/// Copies until end of stream, counting; then closes the writing side.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: &AtomicU64,
) {
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_matches_names_wildcards_ports_and_exact_addresses() {
        let list = AllowList::parse(&[
            "pypi.org",
            "*.pythonhosted.org",
            "127.0.0.2:8080",
            "Repo.Example.COM:8443",
        ])
        .unwrap();
        assert!(list.permits("pypi.org", 443));
        assert!(list.permits("PyPI.org.", 80));
        assert!(!list.permits("pypi.org", 8443));
        assert!(!list.permits("evil-pypi.org", 443));
        assert!(!list.permits("pypi.org.evil.net", 443));
        assert!(list.permits("files.pythonhosted.org", 443));
        assert!(!list.permits("pythonhosted.org", 443));
        assert!(list.permits("127.0.0.2", 8080));
        assert!(!list.permits("127.0.0.2", 443));
        assert!(!list.permits("127.0.0.1", 8080));
        assert!(list.permits("repo.example.com", 8443));
        assert!(!list.permits("repo.example.com", 443));
        assert!(AllowList::default().is_empty());
        assert!(!AllowList::default().permits("pypi.org", 443));
        assert!(AllowList::defaults().permits("registry.npmjs.org", 443));
        assert_eq!(AllowList::defaults().rules.len(), DEFAULT_ALLOW.len());
    }

    #[test]
    fn bad_patterns_say_why() {
        for (pattern, reason) in [
            ("pypi.org:0", "port"),
            ("pypi.org:http", "port"),
            ("*.", "domain"),
            ("*.1.2.3.4", "domain"),
            ("[::1]:80", "IPv6"),
            ("pypi .org", "host name"),
            ("", "host name"),
            ("a_b.org", "host name"),
        ] {
            let error = AllowList::parse(&[pattern]).unwrap_err();
            assert!(error.to_string().contains(reason), "{pattern}: {error}");
        }
    }

    #[test]
    fn requests_are_parsed_into_tunnels_and_origin_form_forwards() {
        assert_eq!(
            parse_head(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n"),
            Ok(Request::Connect {
                host: "pypi.org".into(),
                port: 443
            })
        );
        let Ok(Request::Forward {
            host,
            port,
            head,
            proxy_head,
        }) = parse_head(
            b"GET http://127.0.0.2:8080/lw-demo?x=1 HTTP/1.1\r\nHost: 127.0.0.2:8080\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n",
        ) else {
            panic!("not a forward");
        };
        assert_eq!(
            String::from_utf8(proxy_head).unwrap(),
            "GET http://127.0.0.2:8080/lw-demo?x=1 HTTP/1.1\r\nHost: 127.0.0.2:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        assert_eq!((host.as_str(), port), ("127.0.0.2", 8080));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /lw-demo?x=1 HTTP/1.1\r\nHost: 127.0.0.2:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let Ok(Request::Forward {
            host, port, head, ..
        }) = parse_head(b"GET http://example.org HTTP/1.0\r\n\r\n")
        else {
            panic!("not a forward");
        };
        assert_eq!((host.as_str(), port), ("example.org", 80));
        assert!(head.starts_with(b"GET / HTTP/1.0\r\n"));
        assert_eq!(
            parse_head(b"CONNECT [::1]:443 HTTP/1.1\r\n\r\n"),
            Ok(Request::Connect {
                host: "::1".into(),
                port: 443
            })
        );
        for bad in [
            &b"GET /local HTTP/1.1\r\n\r\n"[..],
            b"GET https://pypi.org/ HTTP/1.1\r\n\r\n",
            b"CONNECT pypi.org HTTP/1.1\r\n\r\n",
            b"CONNECT :443 HTTP/1.1\r\n\r\n",
            b"GET http://x/ SPDY/3\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
