//! Request plumbing: route prefixes, the request's host, hop-by-hop and
//! forwarded headers, and the router's own plain-text answers.

use std::borrow::Cow;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode, Uri};

use crate::ProxyBody;

/// Whether `path` is under the route prefix `prefix` (on `/` boundaries).
pub(crate) fn path_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" || prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The request's host (the URI's, else the `Host` header), lowercase,
/// without port; borrowed unless it had to be lowercased.
pub(crate) fn request_host<'a>(uri: &'a Uri, host: Option<&'a HeaderValue>) -> Cow<'a, str> {
    let raw = uri
        .host()
        .or_else(|| host.and_then(|h| h.to_str().ok()))
        .unwrap_or_default();
    let host = strip_port(raw);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The hop-by-hop headers (RFC 9110 §7.6.1, plus `Keep-Alive` and
/// `Proxy-Connection`), as names: removing them parses nothing.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers and those `Connection` lists; with
/// `keep_upgrade` (a protocol switch), `Upgrade` stays and `Connection`
/// becomes `upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Names listed in `Connection` (parsed only when it is there).
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in listed {
            if keep_upgrade && name == header::UPGRADE {
                continue;
            }
            headers.remove(name);
        }
    }
    // Most messages carry none: one pass over their few names (standard
    // names compare as numbers) costs less than nine hashed removals.
    if headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        for name in &HOP_BY_HOP {
            if keep_upgrade && (name == header::UPGRADE || name == header::CONNECTION) {
                continue;
            }
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The `X-Forwarded-For` value a client at `peer` adds (computed once per
/// client connection).
pub(crate) fn forwarded_for(peer: SocketAddr) -> Option<HeaderValue> {
    HeaderValue::from_str(&peer.ip().to_string()).ok()
}

/// Readies a request's headers for the backend: hop-by-hop ones go;
/// `X-Forwarded-For` gets `client` (see [`forwarded_for`]) appended,
/// `X-Forwarded-Proto` and `-Host` are set (the URI's host when the request
/// has no `Host` header, which it then gets).
pub(crate) fn prepare_headers(
    headers: &mut HeaderMap,
    uri: &Uri,
    client: Option<&HeaderValue>,
    upgrade: bool,
    secure: bool,
) {
    strip_hop_by_hop(headers, upgrade);
    if let Some(client) = client {
        let appended = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::to_str) {
            Some(Ok(previous)) => {
                let mut value = Vec::with_capacity(previous.len() + 2 + client.len());
                value.extend_from_slice(previous.as_bytes());
                value.extend_from_slice(b", ");
                value.extend_from_slice(client.as_bytes());
                HeaderValue::from_bytes(&value).ok()
            }
            Some(Err(_)) | None => Some(client.clone()),
        };
        if let Some(value) = appended {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if secure { "https" } else { "http" }),
    );
    if let Some(original) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, original);
    } else if let Ok(value) = HeaderValue::from_str(&request_host(uri, None)) {
        headers.insert(X_FORWARDED_HOST, value.clone());
        headers.insert(header::HOST, value);
    }
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Text(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    if !body.is_empty() {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(path_matches("/", "/anything"));
        assert!(path_matches("/api", "/api"));
        assert!(path_matches("/api", "/api/x"));
        assert!(!path_matches("/api", "/apix"));
        assert!(path_matches("/api/", "/api/x"));
        assert!(!path_matches("/api/", "/api"));
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("main.p.localhost:8080"), "main.p.localhost");
        assert_eq!(strip_port("main.p.localhost"), "main.p.localhost");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }

    #[test]
    fn hop_by_hop_headers_go_and_listed_ones_too() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.get("x-secret").is_none());
        assert!(headers.get("keep-alive").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get("x-kept").is_some());
    }

    #[test]
    fn every_hop_by_hop_header_goes_however_it_was_spelt() {
        for name in &HOP_BY_HOP {
            // Parsed from the wire (as hyper does), compared with the
            // constant: the same name whichever representation each has.
            let parsed = HeaderName::from_bytes(name.as_str().to_uppercase().as_bytes())
                .expect("header name");
            assert_eq!(&parsed, name);
            let mut headers = HeaderMap::new();
            headers.insert(parsed, HeaderValue::from_static("1"));
            headers.insert("x-kept", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut headers, false);
            assert!(headers.get(name).is_none(), "{name} stays");
            assert_eq!(headers.len(), 1);
        }
    }

    #[test]
    fn a_protocol_switch_keeps_upgrade() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, x-secret"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert_eq!(headers[header::CONNECTION], "upgrade");
        assert!(headers.get("x-secret").is_none());
        assert!(headers.get("keep-alive").is_none());
        assert!(headers.get(header::TE).is_none());
    }

    #[test]
    fn a_response_without_connection_loses_only_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("13"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[header::CONTENT_LENGTH], "13");
    }

    #[test]
    fn hosts_are_lowercased_only_when_they_need_it() {
        let host = |uri: &'static str, header: Option<&'static str>| {
            let uri = Uri::from_static(uri);
            let header = header.map(HeaderValue::from_static);
            let host = request_host(&uri, header.as_ref());
            (host.clone().into_owned(), matches!(host, Cow::Borrowed(_)))
        };
        assert_eq!(
            host("/", Some("a.example:8080")),
            ("a.example".to_string(), true)
        );
        assert_eq!(
            host("/", Some("A.Example")),
            ("a.example".to_string(), false)
        );
        // The URI's authority (absolute-form) wins over the header.
        assert_eq!(
            host("http://B.example/x", Some("a.example")),
            ("b.example".to_string(), false)
        );
        assert_eq!(host("/", None), (String::new(), true));
    }

    #[test]
    fn forwarded_headers_append_the_client() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("a.example:8080"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let client = forwarded_for("127.0.0.2:5555".parse().expect("addr"));
        let uri = Uri::from_static("/");
        prepare_headers(&mut headers, &uri, client.as_ref(), false, false);
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(headers["x-forwarded-host"], "a.example:8080");
        assert_eq!(headers["x-forwarded-proto"], "http");
    }

    #[test]
    fn forwarded_headers_start_and_a_missing_host_comes_from_the_uri() {
        let mut headers = HeaderMap::new();
        let client = forwarded_for("[::1]:5555".parse().expect("addr"));
        let uri = Uri::from_static("http://A.example:8080/x");
        prepare_headers(&mut headers, &uri, client.as_ref(), false, true);
        assert_eq!(headers["x-forwarded-for"], "::1");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-host"], "a.example");
        assert_eq!(headers[header::HOST], "a.example");
    }
}
