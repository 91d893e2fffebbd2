//! What can go wrong talking to a registry, worded for the operator: every
//! message names the registry and, where there is one, the setting to check.

/// An error from the registry client. Each variant's message names the
/// registry's URL (or the content concerned) and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Nothing answered, the connection broke, TLS failed, or no answer came
    /// in time.
    #[error("the image registry at {url} does not answer ({message})")]
    Unreachable {
        /// The registry's URL.
        url: String,
        /// What failed: "connection refused", "no answer within 30 s", …
        message: String,
    },
    /// The registry refused the credentials or wants some that are not set.
    #[error("the image registry at {url} {message}")]
    Auth {
        /// The registry's URL.
        url: String,
        /// What it said, and the settings to check.
        message: String,
    },
    /// The manifest or blob is not in the repository.
    #[error("the image registry has no {what}")]
    NotFound {
        /// What was asked for, with the repository and the registry's URL.
        what: String,
    },
    /// Content whose sha256 is not the digest it was fetched by.
    #[error(
        "the registry sent content that does not match {expected} (its digest is {actual}): refused"
    )]
    DigestMismatch {
        /// The digest asked for.
        expected: String,
        /// The digest of what came.
        actual: String,
    },
    /// A malformed answer (oversized or non-JSON manifest, wrong
    /// `Content-Type`, wrong `Docker-Content-Digest`, …), or input this client
    /// refuses to send (a malformed digest or tag, a bad URL).
    #[error("image registry {url}: {message}")]
    Invalid {
        /// The registry's URL (as configured).
        url: String,
        /// What was wrong.
        message: String,
    },
    /// Any other answer than the one expected; `message` holds the request
    /// and the registry's `errors` (code and message), when it sent them.
    #[error("the image registry at {url} answered {code}: {message}")]
    Status {
        /// The registry's URL.
        url: String,
        /// The HTTP status code.
        code: u16,
        /// The registry's errors and the request they answer.
        message: String,
    },
}

impl RegistryError {
    /// Whether trying again later (or from a fresh upload) may help: the
    /// registry did not answer, or answered with a server error or 429.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Status { code, .. } => *code >= 500 || *code == 429,
            _ => false,
        }
    }
}

/// Words for the failure of a request: the innermost cause, with the common
/// ones said plainly ("connection refused") and TLS failures pointing at the
/// CA setting.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = Some(error);
    let mut last = error.to_string();
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return tls_words(tls);
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".to_owned(),
                std::io::ErrorKind::TimedOut => {
                    return "no connection within 5 s (connection timed out)".to_owned();
                }
                std::io::ErrorKind::ConnectionReset => return "connection reset".to_owned(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::BrokenPipe => {
                    return "the connection was closed".to_owned();
                }
                _ => {}
            }
            // A wrapped error is looked at itself (its `source` skips it).
            if let Some(inner) = io.get_ref() {
                last = inner.to_string();
                current = Some(inner);
                continue;
            }
        }
        last = error.to_string();
        current = error.source();
    }
    last
}

fn tls_words(error: &rustls::Error) -> String {
    format!("TLS: {error}; check [registry] ca_file and the registry's certificate")
}

/// The registry's `{"errors":[{"code","message","detail"}]}` body, as one
/// line: "manifest invalid (MANIFEST_INVALID: …)"; `None` when the body is not
/// that.
pub(crate) fn parse_errors(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let errors = value.get("errors")?.as_array()?;
    let said: Vec<String> = errors
        .iter()
        .map(|error| {
            let code = error.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let message = error.get("message").and_then(|m| m.as_str()).unwrap_or("");
            let detail = match error.get("detail") {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(detail)) => detail.clone(),
                Some(other) => other.to_string(),
            };
            let mut line = match (message.is_empty(), code.is_empty()) {
                (false, false) => format!("{message} ({code})"),
                (false, true) => message.to_owned(),
                (true, _) => code.to_owned(),
            };
            if !detail.is_empty() {
                line.push_str(": ");
                line.push_str(&clip(&detail, 200));
            }
            line
        })
        .filter(|line| !line.is_empty())
        .collect();
    if said.is_empty() {
        None
    } else {
        Some(said.join("; "))
    }
}

/// `text` cut to at most `max` characters, with "…" when cut.
pub(crate) fn clip(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
