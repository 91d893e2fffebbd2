//! The SSH user name as a target for shells, commands and tunnels: `PROJECT:ENVIRONMENT[:APP]`, e.g.
//! `ssh -t shop:main:web@host`. `:` is the separator because none of the
//! three may contain it (git refuses it in ref names; project and app names
//! are letters, digits, `-` and `_`), so the split is never ambiguous,
//! unlike Upsun's `<project>-<environment>--<app>` where all three may hold
//! `-`. A user name without `:` (`git`) keeps today's meaning: git and
//! `login`. See `docs/design/ssh-shell-and-tunnels.md`.

use crate::exec::is_project_name;

/// What a user name points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub project: String,
    pub environment: String,
    /// `None`: the environment's only (or first) app, chosen by the daemon.
    pub app: Option<String>,
}

/// Why a user name is not a target; shown to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "`{0}` is not a project name: the user is PROJECT:ENVIRONMENT[:APP], e.g. shop:main:web"
    )]
    Project(String),
    #[error(
        "`{0}` is not an environment name: the user is PROJECT:ENVIRONMENT[:APP], e.g. shop:main:web"
    )]
    Environment(String),
    #[error("`{0}` is not an app name: the user is PROJECT:ENVIRONMENT[:APP], e.g. shop:main:web")]
    App(String),
    #[error("too many `:` in the user name: it is PROJECT:ENVIRONMENT[:APP], e.g. shop:main:web")]
    TooManyParts,
}

fn shown(text: &str) -> String {
    text.chars()
        .take(80)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

fn is_environment_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.contains("..")
        && !name.contains("//")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

fn is_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The target a user name names; `None` when it names none (no `:`: git).
pub fn parse_target(user: &str) -> Option<Result<Target, TargetError>> {
    if !user.contains(':') {
        return None;
    }
    let mut parts = user.splitn(4, ':');
    let project = parts.next().unwrap_or_default();
    let environment = parts.next().unwrap_or_default();
    let app = parts.next();
    Some(if parts.next().is_some() {
        Err(TargetError::TooManyParts)
    } else if !is_project_name(project) {
        Err(TargetError::Project(shown(project)))
    } else if !is_environment_name(environment) {
        Err(TargetError::Environment(shown(environment)))
    } else if let Some(app) = app.filter(|app| !is_app_name(app)) {
        Err(TargetError::App(shown(app)))
    } else {
        Ok(Target {
            project: project.to_owned(),
            environment: environment.to_owned(),
            app: app.map(str::to_owned),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_split_on_colons_only() {
        assert_eq!(parse_target("git"), None);
        assert_eq!(
            parse_target("shop:feature/x-1:web"),
            Some(Ok(Target {
                project: "shop".into(),
                environment: "feature/x-1".into(),
                app: Some("web".into()),
            }))
        );
        assert_eq!(
            parse_target("my-shop:main"),
            Some(Ok(Target {
                project: "my-shop".into(),
                environment: "main".into(),
                app: None,
            }))
        );
    }

    #[test]
    fn bad_parts_are_named() {
        assert!(matches!(
            parse_target("Shop:main"),
            Some(Err(TargetError::Project(_)))
        ));
        assert!(matches!(
            parse_target(":main"),
            Some(Err(TargetError::Project(_)))
        ));
        assert!(matches!(
            parse_target("shop:"),
            Some(Err(TargetError::Environment(_)))
        ));
        assert!(matches!(
            parse_target("shop:../x"),
            Some(Err(TargetError::Environment(_)))
        ));
        assert!(matches!(
            parse_target("shop:main:"),
            Some(Err(TargetError::App(_)))
        ));
        assert!(matches!(
            parse_target("shop:main:w eb"),
            Some(Err(TargetError::App(_)))
        ));
        assert!(matches!(
            parse_target("a:b:c:d"),
            Some(Err(TargetError::TooManyParts))
        ));
        let long = format!("shop:{}", "x".repeat(10_000));
        let said = parse_target(&long)
            .and_then(Result::err)
            .map(|e| e.to_string());
        assert!(said.is_some_and(|s| s.len() < 300));
    }
}
