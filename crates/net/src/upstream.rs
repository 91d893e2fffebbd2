//! An upstream HTTP proxy, for networks where nothing leaves without one
//! (`[build] https_proxy`, `no_proxy`).
//!
//! Networked build steps get it as `HTTPS_PROXY`/`HTTP_PROXY`; a hook's
//! egress proxy dials through it ([`UpstreamProxy::tunnel`]) rather than
//! directly, so the hook's allow-list still applies first. Only `http://`
//! proxies are spoken (as curl, pip and npm do for `HTTPS_PROXY` in most
//! setups: the tunnel to the destination carries TLS, the hop to the proxy
//! does not). `no_proxy` takes the usual forms: `host`, `.domain` or
//! `*.domain` (the domain and everything under it), an IPv4 address, `*`.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The longest answer head the upstream proxy may send to a `CONNECT`.
const MAX_ANSWER: usize = 16 * 1024;

/// A proxy URL or `no_proxy` list that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamError(String);

/// An upstream proxy and the hosts that bypass it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamProxy {
    /// `http://host:port`, as given (without credentials).
    pub url: String,
    host: String,
    port: u16,
    no_proxy: Vec<String>,
}

impl UpstreamProxy {
    /// Parses `url` (`http://host[:port]`, port 80 when absent, as curl
    /// has it) and a comma-separated `no_proxy`.
    pub fn parse(url: &str, no_proxy: &str) -> Result<UpstreamProxy, UpstreamError> {
        let url = url.trim().trim_end_matches('/');
        let Some(authority) = url.strip_prefix("http://") else {
            return Err(UpstreamError(format!(
                "'{url}' is no http:// URL (the hop to the proxy is plain HTTP; TLS goes through its tunnel)"
            )));
        };
        if authority.contains('@') {
            return Err(UpstreamError(format!(
                "'{url}' carries credentials: proxies that need them are not supported"
            )));
        }
        if authority.contains('/') {
            return Err(UpstreamError(format!(
                "'{url}' has a path: give host:port only"
            )));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| UpstreamError(format!("'{url}': '{port}' is no port")))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        {
            return Err(UpstreamError(format!(
                "'{url}': '{host}' is no host name or IPv4 address"
            )));
        }
        let no_proxy = no_proxy
            .split(',')
            .map(|entry| entry.trim().to_ascii_lowercase())
            .filter(|entry| !entry.is_empty())
            .collect();
        Ok(UpstreamProxy {
            url: format!("http://{host}:{port}"),
            host: host.to_ascii_lowercase(),
            port,
            no_proxy,
        })
    }

    /// The `no_proxy` list, comma-separated.
    pub fn no_proxy(&self) -> String {
        self.no_proxy.join(",")
    }

    /// Whether a connection to `host` goes through the proxy.
    pub fn applies_to(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        !self.no_proxy.iter().any(|entry| {
            if entry == "*" {
                return true;
            }
            let domain = entry
                .strip_prefix("*.")
                .or_else(|| entry.strip_prefix('.'))
                .unwrap_or(entry);
            host == domain || host.ends_with(&format!(".{domain}"))
        })
    }

    /// The variables that send a step's HTTP clients through the proxy.
    pub fn env(&self) -> Vec<(String, String)> {
        let no_proxy = self.no_proxy();
        let mut env = Vec::new();
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            env.push((name.to_owned(), self.url.clone()));
        }
        if !no_proxy.is_empty() {
            env.push(("NO_PROXY".to_owned(), no_proxy.clone()));
            env.push(("no_proxy".to_owned(), no_proxy));
        }
        env
    }

    /// Opens a connection to the proxy itself.
    pub async fn dial(&self, timeout: Duration) -> io::Result<TcpStream> {
        match tokio::time::timeout(timeout, TcpStream::connect((self.host.as_str(), self.port)))
            .await
        {
            Ok(connected) => connected.map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("the upstream proxy {}: {error}", self.url),
                )
            }),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the upstream proxy {} did not answer", self.url),
            )),
        }
    }

    /// A tunnel to `host:port` through the proxy (`CONNECT`).
    pub async fn tunnel(&self, host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
        let mut stream = self.dial(timeout).await?;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        let answer = async {
            stream.write_all(request.as_bytes()).await?;
            read_answer(&mut stream).await
        };
        let head = match tokio::time::timeout(timeout, answer).await {
            Ok(head) => head?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the upstream proxy {} did not answer CONNECT {authority}",
                        self.url
                    ),
                ));
            }
        };
        let status_line = head.lines().next().unwrap_or_default();
        let status = status_line.split(' ').nth(1).unwrap_or_default();
        if status != "200" {
            return Err(io::Error::other(format!(
                "the upstream proxy {} answered CONNECT {authority} with '{status_line}'",
                self.url
            )));
        }
        Ok(stream)
    }
}

/// Reads a `CONNECT` answer's head byte by byte, so nothing of the tunnel
/// after it is consumed.
async fn read_answer(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_ANSWER {
            return Err(io::Error::other("the upstream proxy's answer is too long"));
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the upstream proxy closed the connection",
            ));
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_bypass_lists_parse() {
        let proxy = UpstreamProxy::parse(
            "http://proxy.corp:8080/",
            " .internal, localhost,*.corp.example ,10.0.0.1",
        )
        .unwrap();
        assert_eq!(proxy.url, "http://proxy.corp:8080");
        assert!(proxy.applies_to("pypi.org"));
        assert!(!proxy.applies_to("git.internal"));
        assert!(!proxy.applies_to("internal"));
        assert!(!proxy.applies_to("LOCALHOST"));
        assert!(!proxy.applies_to("a.b.corp.example"));
        assert!(!proxy.applies_to("10.0.0.1"));
        assert!(proxy.applies_to("notinternal"));
        assert_eq!(
            UpstreamProxy::parse("http://p", "").unwrap().url,
            "http://p:80"
        );
        assert!(
            !UpstreamProxy::parse("http://p:1", "*")
                .unwrap()
                .applies_to("x")
        );
        for (bad, reason) in [
            ("https://p:1", "no http:// URL"),
            ("p:3128", "no http:// URL"),
            ("http://u:pw@p:1", "credentials"),
            ("http://p:99999", "no port"),
            ("http://p:1/x", "has a path"),
            ("http://:1", "no host"),
        ] {
            let error = UpstreamProxy::parse(bad, "").unwrap_err().to_string();
            assert!(error.contains(reason), "{bad}: {error}");
        }
        let env = UpstreamProxy::parse("http://p:1", "a,b").unwrap().env();
        assert!(env.contains(&("HTTPS_PROXY".into(), "http://p:1".into())));
        assert!(env.contains(&("no_proxy".into(), "a,b".into())));
    }
}
