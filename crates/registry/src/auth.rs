//! `WWW-Authenticate` challenges and the credentials state a client keeps.

use std::time::Instant;

/// How requests are authenticated, learned from the registry's 401s.
#[derive(Clone, Debug, Default)]
pub(crate) enum AuthState {
    /// No challenge seen yet: requests go without `Authorization`.
    #[default]
    Anonymous,
    /// `Basic`: the configured username and password on every request.
    Basic,
    /// `Bearer`: a token from the realm, reused until it expires.
    Bearer {
        challenge: BearerChallenge,
        token: Option<Token>,
    },
}

/// A token and when it stops being used.
#[derive(Clone)]
pub(crate) struct Token {
    pub(crate) value: String,
    pub(crate) expires: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

/// Where to get a bearer token, from a `Bearer` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BearerChallenge {
    pub(crate) realm: String,
    pub(crate) service: Option<String>,
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer(BearerChallenge),
    /// A scheme this client does not speak (its name).
    Other(String),
}

/// The challenges of one `WWW-Authenticate` value: `Scheme k=v, k="v", …`,
/// possibly several schemes in one value. Malformed text gives what could be
/// read, never a panic.
pub(crate) fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut challenges = Vec::new();
    let mut rest = header.trim_start();
    while !rest.is_empty() {
        let scheme_end = rest
            .find(|c: char| c.is_whitespace() || c == ',')
            .unwrap_or(rest.len());
        let scheme = &rest[..scheme_end];
        rest = rest[scheme_end..].trim_start();
        let mut params: Vec<(String, String)> = Vec::new();
        // Parameters until the next token that is not followed by '='.
        loop {
            rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
            let name_end = rest
                .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
                .unwrap_or(rest.len());
            let after_name = rest[name_end..].trim_start();
            if name_end == 0 || !after_name.starts_with('=') {
                break;
            }
            let name = rest[..name_end].to_ascii_lowercase();
            let value_text = after_name[1..].trim_start();
            let (value, consumed) = read_value(value_text);
            params.push((name, value));
            rest = &value_text[consumed..];
        }
        if !scheme.is_empty() {
            challenges.push(challenge(scheme, &params));
        } else if rest.is_empty() {
            break;
        } else {
            // Not a token: skip one character so the loop ends.
            let mut chars = rest.chars();
            chars.next();
            rest = chars.as_str();
        }
    }
    challenges
}

fn challenge(scheme: &str, params: &[(String, String)]) -> Challenge {
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Challenge::Basic
    } else if scheme.eq_ignore_ascii_case("bearer") {
        match param("realm") {
            Some(realm) if !realm.is_empty() => Challenge::Bearer(BearerChallenge {
                realm,
                service: param("service"),
            }),
            _ => Challenge::Other("Bearer without a realm".to_owned()),
        }
    } else {
        Challenge::Other(scheme.to_owned())
    }
}

/// A quoted string (with `\` escapes) or a token; the value and the bytes
/// read.
fn read_value(text: &str) -> (String, usize) {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut value = String::new();
        let mut escaped = false;
        for (at, c) in quoted.char_indices() {
            if escaped {
                value.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                return (value, 1 + at + 1);
            } else {
                value.push(c);
            }
        }
        (value, text.len())
    } else {
        let end = text
            .find(|c: char| c == ',' || c.is_whitespace())
            .unwrap_or(text.len());
        (text[..end].to_owned(), end)
    }
}

/// `value` percent-encoded for a URL query (everything but the unreserved
/// characters).
pub(crate) fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic_and_bearer() {
        assert_eq!(
            parse_challenges("Basic realm=\"Registry Realm\""),
            vec![Challenge::Basic]
        );
        assert_eq!(
            parse_challenges(
                "Bearer realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:a/b:pull,push\""
            ),
            vec![Challenge::Bearer(BearerChallenge {
                realm: "https://auth.example/token".to_owned(),
                service: Some("registry.example".to_owned()),
            })]
        );
        assert_eq!(
            parse_challenges("Bearer realm=\"r\\\"q\", Basic realm=x"),
            vec![
                Challenge::Bearer(BearerChallenge {
                    realm: "r\"q".to_owned(),
                    service: None
                }),
                Challenge::Basic
            ]
        );
        assert_eq!(
            parse_challenges("Negotiate"),
            vec![Challenge::Other("Negotiate".to_owned())]
        );
        assert_eq!(
            parse_challenges("Bearer service=x"),
            vec![Challenge::Other("Bearer without a realm".to_owned())]
        );
        // Garbage never panics.
        for text in [
            "",
            ",,,",
            "=",
            "Bearer realm=\"unterminated",
            "\"x",
            "a=b=c, ,=",
        ] {
            let _ = parse_challenges(text);
        }
    }

    #[test]
    fn escapes_query_values() {
        assert_eq!(
            query_escape("repository:launchway/ab:pull,push"),
            "repository%3Alaunchway%2Fab%3Apull%2Cpush"
        );
    }
}
