//! Who may run what: [`authorize`] is the only place a role is compared.

use std::collections::BTreeMap;
use std::fmt;

use crate::{ActionKind, Need, Role};

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The host's operator: the 0600 admin socket, so anyone who is root or
    /// the daemon's user on the server.
    Operator,
    /// An API token (or a deploy key), already authenticated.
    Token { id: String, access: Access },
    /// A person known by an SSH key (signed in to the console with a login
    /// link): the key's role in each project it was added to, read at each
    /// request so a removed key loses its rights at once.
    Member {
        /// The key's comment (or fingerprint), for records.
        name: String,
        fingerprint: String,
        roles: BTreeMap<String, Role>,
    },
}

impl Principal {
    /// The one project a token is limited to; `None` for the operator and
    /// members (who are checked project by project: [`Self::sees_project`]).
    pub fn project(&self) -> Option<&str> {
        match self {
            Principal::Operator | Principal::Member { .. } => None,
            Principal::Token { access, .. } => Some(&access.project),
        }
    }

    /// Whether the principal may see anything of `project` (lists are
    /// filtered with it).
    pub fn sees_project(&self, project: &str) -> bool {
        match self {
            Principal::Operator => true,
            Principal::Token { access, .. } => access.project == project,
            Principal::Member { roles, .. } => roles.contains_key(project),
        }
    }

    /// How the principal is named in records (`created_by`, audit).
    pub fn name(&self) -> String {
        match self {
            Principal::Operator => "operator".into(),
            Principal::Token { id, .. } => format!("token {id}"),
            Principal::Member { name, .. } => name.clone(),
        }
    }
}

/// What a token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub project: String,
    pub role: Role,
    /// Limited to one environment.
    pub environment: Option<String>,
    /// A deploy key: only the operations [`ActionKind::deploy_key`] allows.
    pub deploy_only: bool,
    /// UNIX ms; `None`: never.
    pub expires_at: Option<u64>,
}

/// What an operation acts on, resolved from the daemon's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// `None`: the host as a whole (every project).
    pub project: Option<String>,
    /// `None`: the project as a whole.
    pub environment: Option<String>,
    /// Whether `environment` is the project's default one.
    pub default_environment: bool,
}

impl Target {
    /// The host as a whole.
    pub fn host() -> Target {
        Target::default()
    }

    /// A project as a whole.
    pub fn project(project: &str) -> Target {
        Target {
            project: Some(project.into()),
            ..Target::default()
        }
    }

    /// One environment of a project.
    pub fn environment(project: &str, environment: &str, default_environment: bool) -> Target {
        Target {
            project: Some(project.into()),
            environment: Some(environment.into()),
            default_environment,
        }
    }
}

/// Why a principal may not run an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The target is another project's: answered exactly like a missing one.
    Hidden,
    Role {
        kind: ActionKind,
        need: Role,
        have: Role,
    },
    OutsideEnvironment {
        kind: ActionKind,
        allowed: String,
    },
    DeployOnly {
        kind: ActionKind,
    },
    Expired,
    OperatorOnly {
        kind: ActionKind,
    },
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Hidden => f.write_str("not found"),
            Denied::Role { kind, need, have } => write!(
                f,
                "{} needs the {need} role here; you have {have}",
                kind.name()
            ),
            Denied::OutsideEnvironment { kind, allowed } => write!(
                f,
                "this token is limited to environment `{allowed}`: {} is outside it",
                kind.name()
            ),
            Denied::DeployOnly { kind } => write!(
                f,
                "a deploy key may only build, deploy and read builds, releases and activities; {} needs an API token",
                kind.name()
            ),
            Denied::Expired => f.write_str("this token has expired: create a new one"),
            Denied::OperatorOnly { kind } => write!(
                f,
                "{} is for the host's operator (the admin socket on the server), or name a project",
                kind.name()
            ),
        }
    }
}

/// Whether `who` may run `kind` on `target` at `now_ms`. The one check every
/// door goes through.
pub fn authorize(
    who: &Principal,
    kind: ActionKind,
    target: &Target,
    now_ms: u64,
) -> Result<(), Denied> {
    let access = match who {
        Principal::Operator => return Ok(()),
        Principal::Token { access, .. } => access,
        Principal::Member { roles, .. } => return authorize_member(roles, kind, target),
    };
    if access.expires_at.is_some_and(|at| at <= now_ms) {
        return Err(Denied::Expired);
    }
    let need = kind.need();
    if need == Need::Operator {
        return Err(Denied::OperatorOnly { kind });
    }
    if access.deploy_only && !kind.deploy_key() {
        return Err(Denied::DeployOnly { kind });
    }
    if need == Need::Authenticated {
        return Ok(());
    }
    let Some(project) = &target.project else {
        return Err(Denied::OperatorOnly { kind });
    };
    if *project != access.project {
        return Err(Denied::Hidden);
    }
    if let Some(allowed) = &access.environment {
        let inside = match &target.environment {
            Some(environment) => environment == allowed,
            // The project as a whole: reading it is fine (its lists and
            // settings), changing it is not the environment's to do.
            None => kind.reads_only(),
        };
        if !inside {
            return Err(Denied::OutsideEnvironment {
                kind,
                allowed: allowed.clone(),
            });
        }
    }
    has_role(access.role, kind, target)
}

/// A member: their key's role in the target's project, as a token of that
/// role limited to nothing narrower than the project.
fn authorize_member(
    roles: &BTreeMap<String, Role>,
    kind: ActionKind,
    target: &Target,
) -> Result<(), Denied> {
    match kind.need() {
        Need::Operator => return Err(Denied::OperatorOnly { kind }),
        Need::Authenticated => return Ok(()),
        Need::Read | Need::Change | Need::Admin => {}
    }
    let Some(project) = &target.project else {
        return Err(Denied::OperatorOnly { kind });
    };
    let Some(role) = roles.get(project) else {
        return Err(Denied::Hidden);
    };
    has_role(*role, kind, target)
}

fn has_role(have: Role, kind: ActionKind, target: &Target) -> Result<(), Denied> {
    let needed = match kind.need() {
        Need::Read => Role::Viewer,
        Need::Change => {
            ActionKind::change_role(target.default_environment, target.environment.is_some())
        }
        Need::Admin | Need::Operator | Need::Authenticated => Role::Admin,
    };
    if have < needed {
        return Err(Denied::Role {
            kind,
            need: needed,
            have,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn token(role: Role) -> Principal {
        Principal::Token {
            id: "T1".into(),
            access: Access {
                project: "shop".into(),
                role,
                environment: None,
                deploy_only: false,
                expires_at: None,
            },
        }
    }

    fn with(principal: Principal, change: impl FnOnce(&mut Access)) -> Principal {
        match principal {
            Principal::Token { id, mut access } => {
                change(&mut access);
                Principal::Token { id, access }
            }
            other => other,
        }
    }

    /// The whole table, one line per operation: what a viewer, a
    /// contributor, an admin and a deploy key (admin role) may do on the
    /// default environment, another environment and the project as a whole.
    fn table() -> String {
        let targets = [
            ("main", Target::environment("shop", "main", true)),
            ("feature", Target::environment("shop", "feature", false)),
            ("project", Target::project("shop")),
        ];
        let principals = [
            ("viewer", token(Role::Viewer)),
            ("contributor", token(Role::Contributor)),
            ("admin", token(Role::Admin)),
            (
                "deploy-key",
                with(token(Role::Admin), |a| a.deploy_only = true),
            ),
        ];
        let mut out =
            String::from("# operation: principal on main/feature/project (y = allowed)\n");
        for kind in ActionKind::ALL {
            out.push_str(&format!("{:<22}", kind.name()));
            for (name, who) in &principals {
                let marks: String = targets
                    .iter()
                    .map(|(_, target)| {
                        if authorize(who, *kind, target, 0).is_ok() {
                            'y'
                        } else {
                            '.'
                        }
                    })
                    .collect();
                out.push_str(&format!(" {name}={marks}"));
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn the_table_is_the_reviewed_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/authorization.txt");
        let table = table();
        if std::env::var_os("LAUNCHWAY_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(path, &table).unwrap();
        }
        let reviewed = std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(
            table, reviewed,
            "the authorization table changed: review it and rerun with LAUNCHWAY_UPDATE_SNAPSHOTS=1"
        );
    }

    #[test]
    fn the_operator_may_do_everything() {
        for kind in ActionKind::ALL {
            assert_eq!(
                authorize(&Principal::Operator, *kind, &Target::host(), 0),
                Ok(())
            );
        }
    }

    #[test]
    fn another_projects_target_is_hidden() {
        let other = Target::environment("blog", "feature", false);
        for kind in ActionKind::ALL {
            let result = authorize(&token(Role::Admin), *kind, &other, 0);
            match kind.need() {
                Need::Operator => {
                    assert_eq!(result, Err(Denied::OperatorOnly { kind: *kind }))
                }
                Need::Authenticated => assert_eq!(result, Ok(())),
                _ => assert_eq!(result, Err(Denied::Hidden), "{kind:?}"),
            }
        }
    }

    #[test]
    fn expiry_is_checked_before_anything() {
        let expired = with(token(Role::Admin), |a| a.expires_at = Some(1_000));
        let target = Target::project("shop");
        assert_eq!(
            authorize(&expired, ActionKind::GetProject, &target, 1_000),
            Err(Denied::Expired)
        );
        assert_eq!(
            authorize(&expired, ActionKind::GetProject, &target, 999),
            Ok(())
        );
    }

    #[test]
    fn an_environment_token_stays_in_its_environment() {
        let scoped = with(token(Role::Admin), |a| {
            a.environment = Some("feature".into())
        });
        let feature = Target::environment("shop", "feature", false);
        let main = Target::environment("shop", "main", true);
        assert_eq!(authorize(&scoped, ActionKind::Deploy, &feature, 0), Ok(()));
        assert!(matches!(
            authorize(&scoped, ActionKind::Deploy, &main, 0),
            Err(Denied::OutsideEnvironment { .. })
        ));
        assert_eq!(
            authorize(
                &scoped,
                ActionKind::ListReleases,
                &Target::project("shop"),
                0
            ),
            Ok(())
        );
        assert!(matches!(
            authorize(
                &scoped,
                ActionKind::SetVariable,
                &Target::project("shop"),
                0
            ),
            Err(Denied::OutsideEnvironment { .. })
        ));
    }

    #[test]
    fn a_member_has_their_keys_role_in_each_project_and_nothing_elsewhere() {
        let member = Principal::Member {
            name: "alice".into(),
            fingerprint: "SHA256:x".into(),
            roles: BTreeMap::from([
                ("shop".to_owned(), Role::Contributor),
                ("blog".to_owned(), Role::Viewer),
            ]),
        };
        let shop_feature = Target::environment("shop", "feature", false);
        let shop_main = Target::environment("shop", "main", true);
        let blog_main = Target::environment("blog", "main", true);
        let news_main = Target::environment("news", "main", true);
        assert_eq!(
            authorize(&member, ActionKind::Deploy, &shop_feature, 0),
            Ok(())
        );
        assert!(matches!(
            authorize(&member, ActionKind::PromoteRelease, &shop_main, 0),
            Err(Denied::Role {
                need: Role::Admin,
                have: Role::Contributor,
                ..
            })
        ));
        assert_eq!(
            authorize(&member, ActionKind::ListReleases, &blog_main, 0),
            Ok(())
        );
        assert!(matches!(
            authorize(&member, ActionKind::Deploy, &blog_main, 0),
            Err(Denied::Role { .. })
        ));
        assert_eq!(
            authorize(&member, ActionKind::ListReleases, &news_main, 0),
            Err(Denied::Hidden)
        );
        assert_eq!(
            authorize(&member, ActionKind::CreateProject, &Target::host(), 0),
            Err(Denied::OperatorOnly {
                kind: ActionKind::CreateProject
            })
        );
        assert!(member.sees_project("blog") && !member.sees_project("news"));
        // Viewers and contributors: the same table as tokens of that role.
        for kind in ActionKind::ALL {
            for target in [&shop_feature, &shop_main, &Target::project("shop")] {
                assert_eq!(
                    authorize(&member, *kind, target, 0).is_ok(),
                    authorize(&token(Role::Contributor), *kind, target, 0).is_ok(),
                    "{kind:?} on {target:?}"
                );
            }
        }
    }

    #[test]
    fn refusals_say_what_to_do() {
        let denied = authorize(
            &token(Role::Viewer),
            ActionKind::PromoteRelease,
            &Target::environment("shop", "main", true),
            0,
        )
        .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "PromoteRelease needs the admin role here; you have viewer"
        );
    }
}
