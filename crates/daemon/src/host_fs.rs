//! The host side of a deploy's files: environment directories an app can
//! write are made without following a link it planted, and files it could
//! have replaced are read without following links.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use launchway_containerd::{Bind, WEB_UID};
use launchway_deploy::{AppSpec, MountKind, ProcessSpec};

/// Writes `bytes` to `path` (mode 0644), its directory made first.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

/// `env_dir/relative` as a directory, missing parts made and owned by the
/// app's user. Only plain components are allowed, and no part below
/// `env_dir` may be a symbolic link: apps write into their volumes and could
/// plant a link to a host path for the next deploy to chown or bind.
pub(crate) fn safe_app_dir(env_dir: &Path, relative: &str) -> std::io::Result<PathBuf> {
    let refuse = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let mut path = env_dir.to_path_buf();
    for component in Path::new(relative).components() {
        let std::path::Component::Normal(part) = component else {
            return Err(refuse(format!(
                "volume path `{relative}` is not a plain path"
            )));
        };
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(refuse(format!(
                    "{} is a symbolic link; remove it",
                    path.display()
                )));
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(refuse(format!("{} is not a directory", path.display()))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&path)?;
                nix::unistd::chown(
                    &path,
                    Some(nix::unistd::Uid::from_raw(WEB_UID)),
                    Some(nix::unistd::Gid::from_raw(WEB_UID)),
                )
                .map_err(|errno| std::io::Error::from_raw_os_error(errno as i32))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(path)
}

/// A small file's text, refusing a symbolic link.
pub(crate) fn read_no_follow(path: &Path) -> Option<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .ok()?;
    let mut text = String::new();
    file.take(4096).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Empties the `tmp` mounts of `app` in place, once for all its processes
/// (they share them), before any of its containers starts. In place: the
/// containers' tasks were created before, binding these directories.
pub(crate) fn empty_tmp_mounts(env_dir: &Path, app: &AppSpec) -> std::io::Result<()> {
    let volumes: std::collections::BTreeSet<&str> = app
        .processes
        .iter()
        .flat_map(|p| p.mounts.iter())
        .filter(|m| m.kind == MountKind::Temporary)
        .map(|m| m.volume.as_str())
        .collect();
    for volume in volumes {
        let source = safe_app_dir(env_dir, volume)?;
        empty_in_place(&source)?;
    }
    Ok(())
}

/// Removes everything in the directory `dir`, keeping the directory (a
/// bind mount of it stays valid). Never follows a link: an entry that is
/// one is removed as a link.
pub(crate) fn empty_in_place(dir: &Path) -> std::io::Result<()> {
    if !std::fs::symlink_metadata(dir)?.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The binds of `process`: its mounts (their directories made) and
/// `run_dir` as `/run`. Touches nothing a running process uses, so a deploy
/// computes them before it holds requests.
pub(crate) fn mount_binds(
    env_dir: &Path,
    process: &ProcessSpec,
    run_dir: &Path,
    log_path: &Path,
) -> std::io::Result<Vec<Bind>> {
    // The environment's own directory (a first deploy makes it here).
    std::fs::create_dir_all(env_dir)?;
    let mut binds = Vec::new();
    for mount in &process.mounts {
        let source = safe_app_dir(env_dir, &mount.volume)?;
        binds.push(Bind {
            source,
            target: mount.target.clone(),
            writable: true,
        });
    }
    run_dir
        .strip_prefix(env_dir)
        .map_err(|_| std::io::Error::other("the run directory is outside the environment"))?;
    binds.push(Bind {
        source: run_dir.to_path_buf(),
        target: "/run".into(),
        writable: true,
    });
    if let Some(parent) = log_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    Ok(binds)
}

/// Makes `run_dir` (a process's `/run`) an empty directory: what the
/// previous process left there (pids, sockets, markers) must not be read
/// as the new one's. Emptied in place (a task created before binds it);
/// only once the previous process stopped.
pub(crate) fn fresh_run_dir(env_dir: &Path, run_dir: &Path) -> std::io::Result<()> {
    ensure_run_dir(env_dir, run_dir)?;
    empty_in_place(run_dir)
}

/// Makes `run_dir` if it is missing, as a directory of the app's user.
pub(crate) fn ensure_run_dir(env_dir: &Path, run_dir: &Path) -> std::io::Result<()> {
    let run_relative = run_dir
        .strip_prefix(env_dir)
        .map_err(|_| std::io::Error::other("the run directory is outside the environment"))?;
    safe_app_dir(env_dir, &run_relative.to_string_lossy())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn volume_directories_never_follow_links_or_leave_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env_dir = dir.path().join("env");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).expect("outside");
        std::fs::create_dir_all(&env_dir).expect("env");
        let data = safe_app_dir(&env_dir, "volumes/web/data").expect("made");
        assert_eq!(std::fs::metadata(&data).expect("data").uid(), WEB_UID);
        // A link the app planted in a volume it can write.
        std::os::unix::fs::symlink(&outside, env_dir.join("volumes/web/evil")).expect("link");
        assert!(safe_app_dir(&env_dir, "volumes/web/evil").is_err());
        assert!(safe_app_dir(&env_dir, "volumes/web/evil/x").is_err());
        assert_ne!(std::fs::metadata(&outside).expect("outside").uid(), WEB_UID);
        assert!(!outside.join("x").exists());
        for bad in ["../x", "/etc", "volumes/../../x"] {
            assert!(safe_app_dir(&env_dir, bad).is_err(), "{bad}");
        }
        std::fs::write(data.join("planted"), "").expect("file");
        std::os::unix::fs::symlink("/etc/passwd", data.join("exits")).expect("link");
        assert_eq!(read_no_follow(&data.join("exits")), None);
        assert_eq!(read_no_follow(&data.join("planted")), Some(String::new()));
    }
}
