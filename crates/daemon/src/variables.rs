//! Project and environment variables (config-reference §2.3): which one
//! an environment sees, and the checks on what users set. Pure.
//!
//! Precedence, highest first: the platform's `PLATFORM_*`, the
//! environment's own variables, those of its ancestors (nearest first,
//! only the `inheritable` ones), the project's, then the app config's
//! `variables`. The first two levels are decided here; the builders and the
//! deploy spec put the result over the app config and under the platform's.

use std::collections::BTreeMap;

use launchway_build::env::UserVariable;
use launchway_store::{ReleaseVariable, Variable};

/// The longest variable name accepted.
pub(crate) const MAX_NAME: usize = 256;
/// The largest value accepted (Platform.sh documents a few KiB; apps put
/// certificates and JSON documents in variables).
pub(crate) const MAX_VALUE: usize = 64 * 1024;

/// A variable an environment sees, and the level it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Effective {
    pub(crate) variable: Variable,
    /// `project` or `environment <name>`.
    pub(crate) level: String,
}

/// The variables `chain[0]` sees, by name; `chain` is the environment then
/// its ancestors, nearest first.
pub(crate) fn effective(all: &[Variable], chain: &[String]) -> Vec<Effective> {
    let mut chosen: BTreeMap<String, Effective> = BTreeMap::new();
    let mut offer = |variable: &Variable, level: String| {
        chosen
            .entry(variable.name.clone())
            .or_insert_with(|| Effective {
                variable: variable.clone(),
                level,
            });
    };
    for (depth, environment) in chain.iter().enumerate() {
        for variable in all
            .iter()
            .filter(|v| v.environment.as_deref() == Some(environment.as_str()))
        {
            if depth == 0 || variable.inheritable {
                offer(variable, format!("environment {environment}"));
            }
        }
    }
    for variable in all.iter().filter(|v| v.environment.is_none()) {
        offer(variable, "project".into());
    }
    chosen.into_values().collect()
}

fn user_variable(effective: &Effective) -> UserVariable {
    UserVariable {
        name: effective.variable.name.clone(),
        value: effective.variable.value.clone(),
        json: effective.variable.json,
    }
}

/// What builds see.
pub(crate) fn build_visible(variables: &[Effective]) -> Vec<UserVariable> {
    variables
        .iter()
        .filter(|e| e.variable.visible_build)
        .map(user_variable)
        .collect()
}

/// What the running app and its hooks see.
pub(crate) fn runtime_visible(variables: &[Effective]) -> Vec<UserVariable> {
    variables
        .iter()
        .filter(|e| e.variable.visible_runtime)
        .map(user_variable)
        .collect()
}

/// What a release records of them: never the values.
pub(crate) fn release_variables(variables: &[Effective]) -> Vec<ReleaseVariable> {
    variables
        .iter()
        .map(|e| ReleaseVariable {
            name: e.variable.name.clone(),
            level: e.level.clone(),
            sensitive: e.variable.sensitive,
            visible_build: e.variable.visible_build,
            visible_runtime: e.variable.visible_runtime,
        })
        .collect()
}

/// Checks a name and a value before anything is stored.
pub(crate) fn check(name: &str, value: &str, json: bool) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "a variable name has 1 to {MAX_NAME} characters; `{}` does not",
            name.escape_debug()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(format!(
            "variable name `{}`: `{}` is not allowed (use letters, digits, `_`, `-`, `.` and `:`)",
            name.escape_debug(),
            bad.escape_debug()
        ));
    }
    if let Some(exported) = name.strip_prefix("env:") {
        let valid = exported
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && exported
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "variable `{name}`: after `env:` comes an environment variable name (letters, digits and `_`, not starting with a digit)"
            ));
        }
    }
    if value.len() > MAX_VALUE {
        return Err(format!(
            "the value of `{name}` has {} bytes; the most is {MAX_VALUE}",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err(format!(
            "the value of `{name}` contains a NUL byte, which no environment variable can hold"
        ));
    }
    if json && let Err(error) = serde_json::from_str::<serde_json::Value>(value) {
        return Err(format!(
            "the value of `{name}` is not JSON ({error}); drop --json to store it as text"
        ));
    }
    Ok(())
}

/// The values no log may show: every sensitive value of a project. Values
/// shorter than [`MIN_MASKED`] are not masked (masking `1` everywhere would
/// make logs unreadable); Launchway itself never prints any of them.
pub(crate) fn secrets(all: &[Variable]) -> Vec<String> {
    secret_values(
        all.iter()
            .filter(|v| v.sensitive)
            .map(|v| v.value.clone())
            .collect(),
    )
}

/// The strings to mask for `values`: each value, and each line of a
/// multi-line one (logs are masked line by line), longest first.
pub(crate) fn secret_values(values: Vec<String>) -> Vec<String> {
    let mut values: Vec<String> = values
        .iter()
        .flat_map(|value| {
            let mut parts = vec![value.clone()];
            if value.contains('\n') {
                parts.extend(value.lines().map(|line| line.trim().to_owned()));
            }
            parts
        })
        .filter(|part| part.len() >= MIN_MASKED)
        .collect();
    // Longest first, so a secret containing another is masked whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.dedup();
    values
}

/// The shortest sensitive value masked in logs.
pub(crate) const MIN_MASKED: usize = 3;

/// `text` with every secret replaced by `******`.
pub(crate) fn mask(text: &str, secrets: &[String]) -> String {
    let mut masked = text.to_owned();
    for secret in secrets {
        if masked.contains(secret.as_str()) {
            masked = masked.replace(secret.as_str(), "******");
        }
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variable(environment: Option<&str>, name: &str, value: &str) -> Variable {
        Variable {
            project: "shop".into(),
            environment: environment.map(str::to_owned),
            name: name.into(),
            value: value.into(),
            sensitive: false,
            visible_build: true,
            visible_runtime: true,
            inheritable: true,
            json: false,
            updated_at: 0,
        }
    }

    fn values(effective: &[Effective]) -> Vec<(String, String, String)> {
        effective
            .iter()
            .map(|e| {
                (
                    e.variable.name.clone(),
                    e.variable.value.clone(),
                    e.level.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn nearest_environment_wins_then_ancestors_then_the_project() {
        let mut private = variable(Some("main"), "env:PRIVATE", "main only");
        private.inheritable = false;
        let all = vec![
            variable(None, "env:A", "project"),
            variable(None, "env:B", "project"),
            variable(None, "env:C", "project"),
            variable(Some("main"), "env:A", "main"),
            variable(Some("main"), "env:B", "main"),
            variable(Some("staging"), "env:B", "staging"),
            private,
            variable(Some("other"), "env:C", "other branch"),
        ];
        let chain = ["feature".to_owned(), "staging".into(), "main".into()];
        assert_eq!(
            values(&effective(&all, &chain)),
            [
                ("env:A".into(), "main".into(), "environment main".into()),
                (
                    "env:B".into(),
                    "staging".into(),
                    "environment staging".into()
                ),
                ("env:C".into(), "project".into(), "project".into()),
            ]
        );
        // Not inheritable: main itself sees it, its children do not.
        let main = effective(&all, &["main".to_owned()]);
        assert!(main.iter().any(|e| e.variable.name == "env:PRIVATE"));
    }

    #[test]
    fn visibility_splits_build_and_runtime() {
        let mut build_only = variable(None, "env:TOKEN", "t");
        build_only.visible_runtime = false;
        let mut runtime_only = variable(None, "env:DSN", "d");
        runtime_only.visible_build = false;
        let all = effective(&[build_only, runtime_only], &["main".to_owned()]);
        let names =
            |list: Vec<UserVariable>| -> Vec<String> { list.into_iter().map(|v| v.name).collect() };
        assert_eq!(names(build_visible(&all)), ["env:TOKEN"]);
        assert_eq!(names(runtime_visible(&all)), ["env:DSN"]);
    }

    #[test]
    fn names_and_values_are_checked() {
        assert!(check("env:NODE_ENV", "production", false).is_ok());
        assert!(check("php:memory_limit", "256M", false).is_ok());
        assert!(check("d8config:system.site:name", "x", false).is_ok());
        assert!(check("limits", "{\"max\": 3}", true).is_ok());
        for bad in [
            "", "env:", "env:1X", "env:A-B", "a b", "a=b", "x\ny", "naïve",
        ] {
            assert!(check(bad, "v", false).is_err(), "{bad:?}");
        }
        assert!(check(&"n".repeat(MAX_NAME + 1), "v", false).is_err());
        assert!(check("big", &"v".repeat(MAX_VALUE + 1), false).is_err());
        assert!(check("nul", "a\0b", false).is_err());
        let error = check("limits", "{max", true).unwrap_err();
        assert!(error.contains("not JSON"), "{error}");
    }

    #[test]
    fn sensitive_values_are_masked_longest_first() {
        let mut secret = variable(None, "env:KEY", "hunter2");
        secret.sensitive = true;
        let mut longer = variable(Some("main"), "env:KEY2", "hunter2-extended");
        longer.sensitive = true;
        let mut short = variable(None, "env:ONE", "1");
        short.sensitive = true;
        let plain = variable(None, "env:PLAIN", "visible");
        let mut pem = variable(
            None,
            "env:KEY_PEM",
            "-----BEGIN-----\nc2VjcmV0\n-----END-----",
        );
        pem.sensitive = true;
        let secrets = secrets(&[secret, longer, short, plain, pem]);
        assert_eq!(
            mask("a hunter2-extended b hunter2 c 1 visible", &secrets),
            "a ****** b ****** c 1 visible"
        );
        assert_eq!(mask("line: c2VjcmV0", &secrets), "line: ******");
    }
}
