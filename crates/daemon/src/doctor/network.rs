//! Checks of the network: the SSH and router ports, the Debian mirror.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use super::{Check, NETWORK_TIMEOUT, SUITE, host};

/// Whether `addr` can be bound, or is held by the running daemon.
pub(super) fn port(
    name: &'static str,
    addr: SocketAddr,
    held_by_daemon: Option<(SocketAddr, u32)>,
    key: &str,
    source: &str,
) -> Check {
    if let Some((bound, pid)) = held_by_daemon
        && (bound == addr || (addr.port() == 0 && bound.ip() == addr.ip()))
    {
        return Check::ok(name, format!("{bound} is held by this daemon (pid {pid})"));
    }
    if addr.port() == 0 {
        return Check::ok(name, format!("{addr}: the system picks a free port"));
    }
    let fix_elsewhere = format!("or set {key} in {source} to another address");
    match std::net::TcpListener::bind(addr) {
        Ok(listener) => {
            drop(listener);
            Check::ok(name, format!("{addr} is free"))
        }
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            let owner = port_owner(addr)
                .map(|(pid, command)| format!(" by {command} (pid {pid})"))
                .unwrap_or_else(|| " by another program".to_owned());
            Check::fail(
                name,
                format!("{addr} is in use{owner}"),
                format!("stop that program, {fix_elsewhere}"),
            )
        }
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => Check::fail(
            name,
            format!("{addr} cannot be bound: {error}"),
            format!("ports below 1024 need root (or CAP_NET_BIND_SERVICE), {fix_elsewhere}"),
        ),
        Err(error) => Check::fail(
            name,
            format!("{addr} cannot be bound: {error}"),
            format!("use an address of this host, {fix_elsewhere}"),
        ),
    }
}

/// The process listening on `addr`: its pid and command name, from `/proc`
/// (all of it is readable as root; otherwise only our own processes).
fn port_owner(addr: SocketAddr) -> Option<(u32, String)> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(host::listening_inodes(&text, addr));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes
        .iter()
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && wanted.iter().any(|w| target.as_os_str() == w.as_str())
            {
                let command = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_else(|_| "?".into());
                return Some((pid, command));
            }
        }
    }
    None
}

pub(super) async fn mirror(setting: &str, source: &str) -> Check {
    const NAME: &str = "debian mirror";
    let fix = format!(
        "check this host's network and proxy (http_proxy), or set [runtimes] mirror in {source} to a Debian mirror it reaches; runtime images can also be imported (`launchway runtimes import`)"
    );
    match host::mirror(setting) {
        host::Mirror::Http { authority, path } => {
            let url = format!("http://{authority}{path}/dists/{SUITE}/InRelease");
            let started = Instant::now();
            match tokio::time::timeout(NETWORK_TIMEOUT, http_get_status(&authority, &url)).await {
                Ok(Ok(status)) if status.is_success() => Check::ok(
                    NAME,
                    format!(
                        "http://{authority}{path} answers ({SUITE} InRelease in {} ms)",
                        started.elapsed().as_millis()
                    ),
                ),
                Ok(Ok(status)) if status.is_redirection() => Check::ok(
                    NAME,
                    format!("http://{authority}{path} answers ({status}, a redirect apt follows)"),
                ),
                Ok(Ok(status)) => Check::fail(
                    NAME,
                    format!("{url} answers {status}: not a Debian mirror with {SUITE}"),
                    fix,
                ),
                Ok(Err(error)) => Check::fail(NAME, format!("cannot fetch {url}: {error}"), fix),
                Err(_) => Check::fail(
                    NAME,
                    format!(
                        "{url} did not answer within {} s",
                        NETWORK_TIMEOUT.as_secs()
                    ),
                    fix,
                ),
            }
        }
        host::Mirror::Https { authority } => {
            let target = if authority.contains(':') {
                authority.clone()
            } else {
                format!("{authority}:443")
            };
            match tokio::time::timeout(NETWORK_TIMEOUT, tokio::net::TcpStream::connect(&target))
                .await
            {
                Ok(Ok(_)) => Check::ok(
                    NAME,
                    format!(
                        "{target} accepts connections (HTTPS; its certificate is apt's to check)"
                    ),
                ),
                Ok(Err(error)) => Check::fail(NAME, format!("cannot reach {target}: {error}"), fix),
                Err(_) => Check::fail(
                    NAME,
                    format!(
                        "{target} did not answer within {} s",
                        NETWORK_TIMEOUT.as_secs()
                    ),
                    fix,
                ),
            }
        }
        host::Mirror::Local(path) => {
            if Path::new(&path).join("dists").join(SUITE).is_dir() {
                Check::ok(NAME, format!("{path} holds {SUITE}"))
            } else {
                Check::fail(NAME, format!("{path} holds no dists/{SUITE}"), fix)
            }
        }
        host::Mirror::Unknown(text) => Check::warn(
            NAME,
            format!("cannot tell whether `{text}` is reachable"),
            "use an http://, https:// or file:// mirror URI",
        ),
    }
}

/// The status of a GET of `url` (on `authority`), through `http_proxy` when
/// it is set, as apt inside mmdebstrap would go.
async fn http_get_status(authority: &str, url: &str) -> Result<hyper::StatusCode, String> {
    use http_body_util::Empty;
    let proxy = ["http_proxy", "HTTP_PROXY"]
        .iter()
        .find_map(|name| std::env::var(name).ok())
        .filter(|proxy| !proxy.is_empty() && !no_proxy(authority));
    let (connect_to, target) = match &proxy {
        Some(proxy) => {
            let rest = proxy.strip_prefix("http://").unwrap_or(proxy);
            let host = rest.split('/').next().unwrap_or(rest).to_owned();
            // A proxy takes the absolute URI.
            (host, url.to_owned())
        }
        None => {
            let path = url
                .strip_prefix("http://")
                .and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned()))
                .unwrap_or_else(|| "/".into());
            (authority.to_owned(), path)
        }
    };
    let connect_to = if connect_to.contains(':') {
        connect_to
    } else {
        format!("{connect_to}:80")
    };
    let stream = tokio::net::TcpStream::connect(&connect_to)
        .await
        .map_err(|e| format!("connecting to {connect_to}: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(target)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "launchway-doctor")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    driver.abort();
    Ok(response?.status())
}

/// Whether `no_proxy` exempts `authority`.
fn no_proxy(authority: &str) -> bool {
    let host = authority.split(':').next().unwrap_or(authority);
    ["no_proxy", "NO_PROXY"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .flat_map(|list| {
            list.split(',')
                .map(|s| s.trim().trim_start_matches('.').to_owned())
                .collect::<Vec<_>>()
        })
        .any(|entry| {
            entry == "*"
                || (!entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}"))))
        })
}
