//! `web.locations`: checked at push so that what nginx is given later
//! cannot fail for a reason the config shows. Prefixes are plain URL
//! paths, a `root` stays inside the app, `expires` has nginx's time
//! shape and `index` names files. Rule regexes are left to nginx (PCRE:
//! see the compatibility notes), which reports a bad one at deploy.

use super::Normalizer;
use crate::model::LocationConfig;

/// Whether `prefix` is a URL path nginx can take unquoted.
fn plain_prefix(prefix: &str) -> bool {
    prefix.starts_with('/')
        && prefix.len() <= 1024
        && prefix.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '/' | '-' | '_' | '.' | '~' | '%' | '+' | '@' | ':' | ',')
        })
}

/// Why `root` does not name a directory inside the app, if it does not.
fn root_problem(root: &str) -> Option<&'static str> {
    if root.contains('\0') || root.contains('\n') {
        return Some("has control characters");
    }
    if root.split('/').any(|part| part == "..") {
        return Some("leaves the application's directory (`..`)");
    }
    if root.contains(['"', '\\', '$', ';', '{', '}']) {
        return Some("holds a character a web server root cannot (`\"`, `\\`, `$`, `;`, `{`, `}`)");
    }
    None
}

/// Whether `expires` is a time nginx takes (`-1`, `0`, `3600`, `1h`, `2d 6h`…).
pub(super) fn valid_expires(expires: &str) -> bool {
    let expires = expires.trim();
    if expires == "-1" || expires == "0" {
        return true;
    }
    !expires.is_empty()
        && expires.split_whitespace().all(|part| {
            let digits = part.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let unit = &part[digits.len()..];
            !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit())
                && matches!(unit, "" | "ms" | "s" | "m" | "h" | "d" | "w" | "M" | "y")
        })
}

impl Normalizer<'_> {
    fn check_expires(&mut self, prefix: &str, expires: &str, at: &[&str]) {
        if !valid_expires(expires) {
            let span = self.value_span(at);
            self.diags
                .error(
                    span,
                    format!("location `{prefix}`: `expires` `{expires}` is not a duration"),
                )
                .hint = Some(
                "a number with a unit (ms s m h d w M y), e.g. `1h` or `7d`; `-1` for none".into(),
            );
        }
    }

    /// Reports what in the app's `web.locations` would make a broken web
    /// server.
    pub(super) fn check_locations(
        &mut self,
        name: &str,
        locations: &indexmap::IndexMap<String, LocationConfig>,
    ) {
        for (prefix, location) in locations {
            let path = ["applications", name, "web", "locations", prefix.as_str()];
            if !plain_prefix(prefix) {
                let span = self.key_span(&path);
                self.diags.error(
                    span,
                    format!("location `{prefix}` is not a URL path: it starts with `/` and has no spaces, quotes or braces"),
                );
            }
            if let Some(root) = &location.root
                && let Some(problem) = root_problem(root)
            {
                let mut root_path = path.to_vec();
                root_path.push("root");
                let span = self.value_span(&root_path);
                self.diags
                    .error(
                        span,
                        format!("location `{prefix}`: `root` `{root}` {problem}"),
                    )
                    .hint = Some(
                    "`root` is a directory of the application, such as `public` or `web/static`"
                        .into(),
                );
            }
            if let Some(expires) = &location.expires {
                let mut at = path.to_vec();
                at.push("expires");
                self.check_expires(prefix, &expires.0, &at);
            }
            for (regex, rule) in location.rules.iter().flatten() {
                if let Some(expires) = rule.get("expires").and_then(|e| match e {
                    serde_json::Value::String(text) => Some(text.clone()),
                    serde_json::Value::Number(number) => Some(number.to_string()),
                    _ => None,
                }) {
                    let mut at = path.to_vec();
                    at.extend(["rules", regex.as_str(), "expires"]);
                    self.check_expires(prefix, &expires, &at);
                }
                if regex.contains(['\n', '\r']) {
                    let mut at = path.to_vec();
                    at.extend(["rules", regex.as_str()]);
                    let span = self.key_span(&at);
                    self.diags.error(
                        span,
                        format!("location `{prefix}`: a rule's expression spans lines"),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        for good in ["-1", "0", "3600", "1h", "7d", "3M", "1y", "500ms", "2d 6h"] {
            assert!(valid_expires(good), "{good}");
        }
        for bad in ["", "1 hour", "h", "1x", "-2d"] {
            assert!(!valid_expires(bad), "{bad}");
        }
        assert!(plain_prefix("/sites/default/files"));
        assert!(!plain_prefix("static"));
        assert!(!plain_prefix("/a b"));
        assert!(root_problem("web/../..").is_some());
        assert!(root_problem("../secrets").is_some());
        assert!(root_problem("public").is_none());
    }
}
