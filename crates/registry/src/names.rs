//! What the client checks before it sends: digests, tags, repository names
//! and the registry URL.

use hyper::Uri;

/// Whether `text` is `sha256:` and 64 lowercase hex digits.
pub(crate) fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether `text` is a tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub(crate) fn is_tag(text: &str) -> bool {
    let mut bytes = text.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    first_ok
        && text.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `text` is a repository name of the distribution spec:
/// `/`-separated components of lowercase letters and digits joined by `.`,
/// `_`, `__` or dashes; at most 255 characters.
pub(crate) fn is_repository(text: &str) -> bool {
    !text.is_empty() && text.len() <= 255 && text.split('/').all(is_component)
}

fn is_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    // Separators: one '.', one or two '_', or any number of '-', between
    // alphanumerics.
    let mut run = String::new();
    for b in bytes {
        if alnum(b) {
            if !(run.is_empty()
                || run == "."
                || run == "_"
                || run == "__"
                || run.bytes().all(|c| c == b'-'))
            {
                return false;
            }
            run.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            run.push(char::from(*b));
        } else {
            return false;
        }
    }
    true
}

/// Whether `host` (as in a URI, IPv6 in brackets or not) is a loopback
/// address or `localhost`.
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The scheme and authority of `uri`: "https://host:port" (the port made
/// explicit), to tell whether two URLs reach the same server.
pub(crate) fn origin(uri: &Uri) -> Option<String> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    Some(format!("{scheme}://{host}:{port}"))
}

/// Whether this client may send requests to `uri`: https anywhere, plain
/// http only to loopback hosts. `Err` says why not.
pub(crate) fn check_scheme(uri: &Uri) -> Result<(), String> {
    let host = uri.host().unwrap_or("");
    if host.is_empty() {
        return Err(format!("{uri} has no host"));
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(host) => Ok(()),
        Some("http") => Err(format!(
            "{uri} is plain http to a host that is not this machine's loopback: use https"
        )),
        _ => Err(format!("{uri} is not an http(s) URL")),
    }
}

/// `location` (absolute, or relative to `base`) as an absolute URI, its
/// query kept.
pub(crate) fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let location = location.trim();
    if location.is_empty() {
        return None;
    }
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return location.parse().ok();
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}").parse().ok();
    }
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}").parse().ok();
    }
    // Relative to the base's directory.
    let path = base.path();
    let dir = path.rfind('/').map_or("/", |at| &path[..=at]);
    format!("{scheme}://{authority}{dir}{location}")
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_tags_and_repositories() {
        let hex = "0123456789abcdef".repeat(4);
        assert!(is_digest(&format!("sha256:{hex}")));
        assert!(!is_digest(&format!("sha256:{}", hex.to_uppercase())));
        assert!(!is_digest(&format!("sha512:{hex}")));
        assert!(!is_digest(&format!("sha256:{}", &hex[1..])));
        assert!(!is_digest("sha256:"));
        assert!(!is_digest(""));

        assert!(is_tag("build-0123"));
        assert!(is_tag("_x.y-z"));
        assert!(is_tag(&"a".repeat(128)));
        assert!(!is_tag(&"a".repeat(129)));
        assert!(!is_tag(""));
        assert!(!is_tag("-x"));
        assert!(!is_tag(".x"));
        assert!(!is_tag("a/b"));
        assert!(!is_tag("a:b"));
        assert!(!is_tag("é"));

        assert!(is_repository("launchway/abcdef012345"));
        assert!(is_repository("a.b/c__d/e---f"));
        assert!(!is_repository(""));
        assert!(!is_repository("Launchway/x"));
        assert!(!is_repository("a//b"));
        assert!(!is_repository("a/-b"));
        assert!(!is_repository("a..b"));
        assert!(!is_repository("a___b"));
        assert!(!is_repository("a/b/"));
    }

    #[test]
    fn loopback_and_schemes() {
        for host in ["127.0.0.1", "127.3.4.5", "localhost", "[::1]", "::1"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.1", "example.com", "[::2]", "localhost.example"] {
            assert!(!is_loopback(host), "{host}");
        }
        let ok = |url: &str| check_scheme(&url.parse().unwrap()).is_ok();
        assert!(ok("https://reg.example:5000/"));
        assert!(ok("http://127.0.0.1:5000"));
        assert!(ok("http://[::1]:5000"));
        assert!(!ok("http://reg.example:5000"));
        assert!(!ok("ftp://127.0.0.1"));
    }

    #[test]
    fn locations_resolve_with_their_query() {
        let base: Uri = "https://127.0.0.1:5000/v2/a/b/blobs/uploads/"
            .parse()
            .unwrap();
        let resolved = |location: &str| resolve(&base, location).map(|uri| uri.to_string());
        assert_eq!(
            resolved("/v2/a/b/blobs/uploads/u1?_state=x%3D").as_deref(),
            Some("https://127.0.0.1:5000/v2/a/b/blobs/uploads/u1?_state=x%3D")
        );
        assert_eq!(
            resolved("https://other:1/up?x=1").as_deref(),
            Some("https://other:1/up?x=1")
        );
        assert_eq!(
            resolved("u2?y=2").as_deref(),
            Some("https://127.0.0.1:5000/v2/a/b/blobs/uploads/u2?y=2")
        );
        assert_eq!(resolved("//cdn:8/x").as_deref(), Some("https://cdn:8/x"));
        assert_eq!(resolved(""), None);
        assert_eq!(
            origin(&"HTTPS://Reg.Example/x".parse().unwrap()).as_deref(),
            Some("https://reg.example:443")
        );
    }
}
