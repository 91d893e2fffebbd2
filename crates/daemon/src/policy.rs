//! Pure rules of a push: which ref updates a role may make, and what the push
//! options mean. No I/O.

use launchway_git::RefUpdate;
use launchway_store::{EnvironmentStatus, EnvironmentType, Role};

/// Why one ref update is refused, shown to the pusher.
pub(crate) fn check_ref(
    update: &RefUpdate,
    role: Role,
    default_branch: &str,
) -> Result<(), String> {
    let Some(branch) = update.branch() else {
        return Err(format!(
            "{}: only branches can be pushed; tags and other refs are refused",
            update.name
        ));
    };
    if role == Role::Viewer {
        return Err(format!("{branch}: your key can only fetch (role viewer)"));
    }
    if update.is_delete() {
        if branch == default_branch {
            return Err(format!("{branch}: the default branch cannot be deleted"));
        }
        if role != Role::Admin {
            return Err(format!(
                "{branch}: deleting a branch needs the admin role (your key is {role})"
            ));
        }
        return Ok(());
    }
    if branch == default_branch && role != Role::Admin {
        return Err(format!(
            "{branch}: pushing the default branch needs the admin role (your key is {role})"
        ));
    }
    Ok(())
}

/// What `git push -o` asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PushOptions {
    /// `environment.status=active|inactive`.
    pub(crate) status: Option<EnvironmentStatus>,
    /// `environment.parent=NAME`.
    pub(crate) parent: Option<String>,
    /// `environment.type=production|staging|development`.
    pub(crate) kind: Option<EnvironmentType>,
    /// `environment.title=…`.
    pub(crate) title: Option<String>,
    /// `launchway.wait=false` returns once refs moved.
    pub(crate) no_wait: bool,
    /// `environment.clone_parent_on_create=False` activates with empty data.
    pub(crate) clone_parent: Option<bool>,
}

/// Parsed options, plus warnings (unknown options) and errors (bad values).
#[derive(Debug, Default)]
pub(crate) struct ParsedOptions {
    pub(crate) options: PushOptions,
    pub(crate) warnings: Vec<String>,
    pub(crate) errors: Vec<String>,
}

/// Parses the push options in order; a later value replaces an earlier one.
pub(crate) fn parse_push_options(raw: &[String]) -> ParsedOptions {
    let mut parsed = ParsedOptions::default();
    for option in raw {
        let (key, value) = option.split_once('=').unwrap_or((option.as_str(), ""));
        let shown: String = option.chars().take(80).collect();
        match key {
            "environment.status" => match value {
                "active" => parsed.options.status = Some(EnvironmentStatus::Active),
                "inactive" => parsed.options.status = Some(EnvironmentStatus::Inactive),
                _ => parsed
                    .errors
                    .push(format!("push option `{shown}`: the status is `active` or `inactive`")),
            },
            "environment.type" => match EnvironmentType::parse(value) {
                Some(kind) => parsed.options.kind = Some(kind),
                None => parsed.errors.push(format!(
                    "push option `{shown}`: the type is `production`, `staging` or `development`"
                )),
            },
            "environment.parent" if !value.is_empty() => {
                parsed.options.parent = Some(value.to_owned());
            }
            "environment.parent" => parsed
                .errors
                .push(format!("push option `{shown}`: name the parent environment")),
            "environment.title" => {
                parsed.options.title = Some(value.chars().take(200).collect());
            }
            // Platform.sh's CLI sends Python booleans; accept either case.
            "environment.clone_parent_on_create" => {
                match value.to_ascii_lowercase().as_str() {
                    "true" => parsed.options.clone_parent = Some(true),
                    "false" => parsed.options.clone_parent = Some(false),
                    _ => parsed.errors.push(format!(
                        "push option `{shown}`: the value is `True` or `False`"
                    )),
                }
            }
            "launchway.wait" => match value {
                "false" => parsed.options.no_wait = true,
                "true" => parsed.options.no_wait = false,
                _ => parsed
                    .errors
                    .push(format!("push option `{shown}`: the value is `true` or `false`")),
            },
            _ => parsed.warnings.push(format!(
                "unknown push option `{shown}` ignored (known: environment.status, environment.parent, environment.type, environment.title, environment.clone_parent_on_create, launchway.wait)"
            )),
        }
    }
    parsed
}

#[cfg(test)]
mod tests {
    use launchway_git::ZERO_ID;

    use super::*;

    fn update(old: &str, new: &str, name: &str) -> RefUpdate {
        RefUpdate {
            old: old.into(),
            new: new.into(),
            name: name.into(),
        }
    }

    #[test]
    fn roles_and_refs() {
        let a = "a".repeat(40);
        let push_main = update(&a, &a, "refs/heads/main");
        let push_feature = update(ZERO_ID, &a, "refs/heads/feature");
        let delete_feature = update(&a, ZERO_ID, "refs/heads/feature");
        let delete_main = update(&a, ZERO_ID, "refs/heads/main");
        let tag = update(ZERO_ID, &a, "refs/tags/v1");
        let check = |u: &RefUpdate, role| check_ref(u, role, "main").is_ok();
        assert!(check(&push_main, Role::Admin));
        assert!(!check(&push_main, Role::Contributor));
        assert!(check(&push_feature, Role::Contributor));
        assert!(!check(&push_feature, Role::Viewer));
        assert!(check(&delete_feature, Role::Admin));
        assert!(!check(&delete_feature, Role::Contributor));
        assert!(!check(&delete_main, Role::Admin));
        assert!(!check(&tag, Role::Admin));
        assert!(
            check_ref(&tag, Role::Admin, "main")
                .unwrap_err()
                .contains("refs/tags/v1")
        );
    }

    #[test]
    fn push_options() {
        let raw: Vec<String> = [
            "environment.status=active",
            "environment.parent=main",
            "environment.type=staging",
            "environment.title=Review of x",
            "launchway.wait=false",
            "environment.clone_parent_on_create=False",
            "colour=blue",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let parsed = parse_push_options(&raw);
        assert_eq!(
            parsed.options,
            PushOptions {
                status: Some(EnvironmentStatus::Active),
                parent: Some("main".into()),
                kind: Some(EnvironmentType::Staging),
                title: Some("Review of x".into()),
                no_wait: true,
                clone_parent: Some(false),
            }
        );
        assert_eq!(parsed.warnings.len(), 1);
        assert!(parsed.errors.is_empty());
        let bad = parse_push_options(&[
            "environment.type=prod".into(),
            "launchway.wait=maybe".into(),
            "environment.parent=".into(),
            "environment.clone_parent_on_create=maybe".into(),
        ]);
        assert_eq!(bad.errors.len(), 4, "{:?}", bad.errors);
    }
}
