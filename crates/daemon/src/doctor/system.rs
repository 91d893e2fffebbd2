//! Checks of this machine: privileges, the data directory, cgroups,
//! overlayfs, reflinks, free disk.

use std::path::Path;

use super::{Check, DISK_FAIL_BYTES, DISK_WARN_BYTES, existing_ancestor, host};

pub(super) fn privileges(root: bool) -> Check {
    if root {
        Check::ok("privileges", "running as root")
    } else {
        Check::fail(
            "privileges",
            "not running as root: `launchway serve` makes network namespaces and mounts and runs containerd",
            "run `launchway serve` (and this check) as root; `make install` sets it up as a systemd service",
        )
    }
}

/// Whether the data directory can be written (or created), and a
/// temporary directory in it (or where it will be created) for the
/// filesystem probes.
pub(super) fn data_directory(dir: &Path, source: &str) -> (Check, Option<tempfile::TempDir>) {
    const NAME: &str = "data directory";
    let fix_elsewhere = format!("or set data_dir in {source} to a directory the daemon can write");
    if dir.exists() && !dir.is_dir() {
        return (
            Check::fail(
                NAME,
                format!("{} exists and is not a directory", dir.display()),
                format!("move that file away, {fix_elsewhere}"),
            ),
            None,
        );
    }
    let Some(base) = existing_ancestor(dir) else {
        return (
            Check::fail(
                NAME,
                format!("no directory above {} exists", dir.display()),
                fix_elsewhere,
            ),
            None,
        );
    };
    let probe = tempfile::Builder::new()
        .prefix(".launchway-doctor-")
        .tempdir_in(base);
    match probe {
        Ok(probe) => {
            let detail = if base == dir {
                format!("{} is writable", dir.display())
            } else {
                format!(
                    "{} does not exist yet; serve creates it (in {}, which is writable)",
                    dir.display(),
                    base.display()
                )
            };
            (Check::ok(NAME, detail), Some(probe))
        }
        Err(error) => {
            let fix = match error.kind() {
                std::io::ErrorKind::ReadOnlyFilesystem => format!(
                    "{} is on a read-only filesystem: remount it read-write, {fix_elsewhere}",
                    base.display()
                ),
                std::io::ErrorKind::PermissionDenied => format!(
                    "run the daemon as root or give it write access to {}, {fix_elsewhere}",
                    base.display()
                ),
                _ => format!("make {} writable, {fix_elsewhere}", base.display()),
            };
            (
                Check::fail(
                    NAME,
                    format!("cannot write in {}: {error}", base.display()),
                    fix,
                ),
                None,
            )
        }
    }
}

pub(super) fn cgroups() -> Check {
    const NAME: &str = "cgroups";
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let Some(mountinfo) = read("/proc/self/mountinfo") else {
        return Check::fail(
            NAME,
            "cannot read /proc/self/mountinfo",
            "mount /proc (the daemon must run on a Linux host)",
        );
    };
    let found = host::cgroups(
        &mountinfo,
        &read("/proc/cgroups").unwrap_or_default(),
        read("/sys/fs/cgroup/cgroup.controllers").as_deref(),
    );
    let needed: &[&str] = if found.version == 2 {
        &host::NEEDED_V2
    } else {
        &host::NEEDED_V1
    };
    if found.missing.is_empty() {
        return Check::ok(
            NAME,
            format!("cgroup v{}: {} available", found.version, needed.join(", ")),
        );
    }
    let missing = found.missing.join(", ");
    let fix = if found.version == 2 {
        format!(
            "enable them for the daemon's cgroup (e.g. echo '{}' > /sys/fs/cgroup/cgroup.subtree_control; under systemd, Delegate=yes)",
            found
                .missing
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    } else {
        "enable and mount them (kernel command line, e.g. cgroup_enable=memory; see /proc/cgroups), then reboot".to_owned()
    };
    Check::fail(
        NAME,
        format!(
            "cgroup v{}: {missing} not available (container limits and pausing need {})",
            found.version,
            needed.join(", ")
        ),
        fix,
    )
}

/// The filesystem name of `path` (`ext4`, `xfs`, …).
fn filesystem(path: &Path) -> &'static str {
    nix::sys::statfs::statfs(path).map_or("an unknown filesystem", |stat| {
        host::filesystem_name(i64::from(stat.filesystem_type().0 as u32))
    })
}

pub(super) fn overlay(probe: Option<&Path>, root: bool) -> Check {
    const NAME: &str = "overlayfs";
    let listed = std::fs::read_to_string("/proc/filesystems").is_ok_and(|text| {
        text.lines()
            .any(|line| line.trim_end().ends_with("overlay"))
    });
    let Some(probe) = probe else {
        return Check::skip(NAME, "not tried: the data directory is not writable");
    };
    if !root {
        return if listed {
            Check::skip(NAME, "the kernel lists overlay; a test mount needs root")
        } else {
            Check::fail(
                NAME,
                "the kernel does not list overlay (containerd's snapshotter needs it)",
                "modprobe overlay (and list it in /etc/modules)",
            )
        };
    }
    let fs = filesystem(probe);
    match try_overlay(&probe.join("overlay")) {
        Ok(()) => Check::ok(
            NAME,
            format!("an overlay mount works on the data directory's filesystem ({fs})"),
        ),
        Err(error) => {
            let fix = if fs == "overlay" {
                "the data directory is itself on overlayfs (inside a container?): put data_dir on ext4 or XFS".to_owned()
            } else if listed {
                format!("overlayfs refuses {fs} as its upper layer: put data_dir on ext4 or XFS")
            } else {
                "modprobe overlay (and list it in /etc/modules)".to_owned()
            };
            Check::fail(
                NAME,
                format!(
                    "cannot mount overlayfs on the data directory's filesystem ({fs}): {error}"
                ),
                fix,
            )
        }
    }
}

/// Mounts an overlay of a lower and an upper directory under `dir`, reads a
/// file through it and unmounts it.
fn try_overlay(dir: &Path) -> Result<(), String> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| dir.join(d));
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    std::fs::write(lower.join("probe"), b"overlay")
        .map_err(|e| format!("writing the probe file: {e}"))?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| e.to_string())?;
    let read = std::fs::read(merged.join("probe"));
    let _ = umount2(&merged, MntFlags::MNT_DETACH);
    match read {
        Ok(content) if content == b"overlay" => Ok(()),
        Ok(_) => Err("the overlay shows other content than its lower layer".into()),
        Err(error) => Err(format!("reading through the overlay: {error}")),
    }
}

pub(super) fn reflinks(probe: Option<&Path>) -> Check {
    const NAME: &str = "reflinks";
    let Some(probe) = probe else {
        return Check::skip(NAME, "not tried: the data directory is not writable");
    };
    let fs = filesystem(probe);
    if launchway_volumes::supports_reflink(probe) {
        Check::ok(
            NAME,
            format!(
                "{fs} shares extents: activating an environment clones its parent's data in about constant time and no extra space"
            ),
        )
    } else {
        Check::warn(
            NAME,
            format!(
                "{fs} has no reflinks: activating an environment copies its parent's mounts and service data byte for byte (time and disk grow with the data, about as long as `cp -a`)"
            ),
            "for large data, put data_dir on XFS (mkfs.xfs, reflink=1 is its default) or btrfs",
        )
    }
}

pub(super) fn disk(dir: &Path, source: &str) -> Check {
    const NAME: &str = "disk";
    let Some(base) = existing_ancestor(dir) else {
        return Check::skip(NAME, "no directory of the data directory's path exists");
    };
    let stat = match nix::sys::statvfs::statvfs(base) {
        Ok(stat) => stat,
        Err(error) => {
            return Check::skip(NAME, format!("cannot stat {}: {error}", base.display()));
        }
    };
    let free = stat.blocks_available().saturating_mul(stat.fragment_size());
    let gib = free as f64 / f64::from(1u32 << 30);
    let detail = format!("{gib:.1} GiB free for {}", base.display());
    let fix = format!("free space there, or set data_dir in {source} to a larger filesystem");
    if free < DISK_FAIL_BYTES {
        Check::fail(
            NAME,
            format!("{detail}: too little for runtime images and builds (at least 2 GiB)"),
            fix,
        )
    } else if free < DISK_WARN_BYTES {
        Check::warn(
            NAME,
            format!("{detail}: builds, images and cloned environments will fill it soon"),
            fix,
        )
    } else {
        Check::ok(NAME, detail)
    }
}
