//! Parsing what an SSH client asks to run. Only `git-receive-pack` and
//! `git-upload-pack` with one repository argument are accepted (the argument
//! names a project, never a path), and `login` (a console sign-in link).

use launchway_git::GitService;

/// Why an exec request is refused; the text is shown to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// Not a git command.
    #[error(
        "only git push, git fetch/clone and `login` (a console sign-in link) are available here (asked to run `{0}`)"
    )]
    NotGit(String),
    /// The repository argument is not `'NAME.git'`.
    #[error("`{0}` is not a repository name: use ssh://git@HOST:PORT/PROJECT.git")]
    BadRepository(String),
}

/// A valid project name: lowercase letters, digits and `-`, starting with a
/// letter or digit, at most 63 characters.
pub fn is_project_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Whether the client asked for a console sign-in link (`ssh git@host login`).
pub(crate) fn is_login(command: &[u8]) -> bool {
    command.trim_ascii() == b"login"
}

/// Parses `git-receive-pack '/project.git'` (quoted or not, with or without
/// the leading `/` and the `.git`) into the service and the project name.
pub fn parse_exec(command: &[u8]) -> Result<(GitService, String), ExecError> {
    let text = String::from_utf8_lossy(command);
    let shown: String = text.chars().take(80).collect();
    let (verb, argument) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| ExecError::NotGit(shown.clone()))?;
    let service = match verb {
        "git-receive-pack" => GitService::ReceivePack,
        "git-upload-pack" => GitService::UploadPack,
        _ => return Err(ExecError::NotGit(shown)),
    };
    let argument = argument.trim();
    let bad = || ExecError::BadRepository(argument.chars().take(80).collect());
    let unquoted = match argument.strip_prefix('\'') {
        Some(rest) => rest.strip_suffix('\'').ok_or_else(bad)?,
        None => argument,
    };
    let path = unquoted.strip_prefix('/').unwrap_or(unquoted);
    let name = path.strip_suffix(".git").unwrap_or(path);
    if is_project_name(name) {
        Ok((service, name.to_owned()))
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_git_sends() {
        for (command, service) in [
            ("git-receive-pack '/shop.git'", GitService::ReceivePack),
            ("git-receive-pack 'shop.git'", GitService::ReceivePack),
            ("git-upload-pack '/shop.git'", GitService::UploadPack),
            ("git-upload-pack /shop", GitService::UploadPack),
            ("git-upload-pack shop.git", GitService::UploadPack),
        ] {
            assert_eq!(
                parse_exec(command.as_bytes()),
                Ok((service, "shop".into())),
                "{command}"
            );
        }
    }

    #[test]
    fn refuses_everything_else() {
        for command in [
            "ls",
            "sh -c 'git-receive-pack x.git'",
            "git-receive-pack",
            "git upload-pack 'shop.git'",
            "git-upload-archive 'shop.git'",
            "scp -t /tmp",
        ] {
            assert!(
                matches!(parse_exec(command.as_bytes()), Err(ExecError::NotGit(_))),
                "{command}"
            );
        }
        for command in [
            "git-receive-pack '../x.git'",
            "git-receive-pack '/../x.git'",
            "git-receive-pack '/srv/repos/x.git'",
            "git-receive-pack '/x.git/'",
            "git-receive-pack 'x.git",
            "git-receive-pack \"x.git\"",
            "git-receive-pack 'x'\\''y.git'",
            "git-receive-pack 'x.git' extra",
            "git-receive-pack 'X.git'",
            "git-receive-pack '-x.git'",
            "git-receive-pack '.git'",
            "git-receive-pack ''",
            "git-receive-pack 'x\0y.git'",
        ] {
            assert!(
                matches!(
                    parse_exec(command.as_bytes()),
                    Err(ExecError::BadRepository(_))
                ),
                "{command}"
            );
        }
        assert!(parse_exec(b"\xff\xfe").is_err());
    }
}
