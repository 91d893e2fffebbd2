//! Launchway's volume cloning: an environment's persistent data directory
//! (the app-writable mounts) copied into a new child environment; and
//! [`retention`], which scheduled backups of that data to keep (pure).
//!
//! [`sync_tree`] (or [`sync_tree_limited`], with a limit on the data written)
//! copies a tree with blocking std I/O on a few threads of its own; the
//! daemon calls it when an environment is activated.
//!
//! # Two passes
//!
//! Copying a large volume takes time, and the parent environment keeps
//! serving meanwhile. The caller therefore copies twice:
//!
//! 1. [`SyncMode::Full`] while the parent runs. The result may be
//!    inconsistent: files change under the walk.
//! 2. The parent is paused, then [`SyncMode::Delta`] with the time taken
//!    before pass 1 started. Only what changed since (by ctime, which an app
//!    cannot set back, unlike mtime) is copied again, so the pause is short.
//!
//! Entries that vanish or change type during pass 1 are expected with a live
//! app: they are skipped or looked at again, not errors, and pass 2 repairs
//! them. A source root missing at pass 2 is an error
//! ([`VolumeError::SourceMissing`]): the parent's data went away between the
//! passes.
//!
//! # The source is hostile
//!
//! The app owns the source tree and can race the copy, for example by
//! replacing a directory with a symlink to `/etc` between the moment the walk
//! looks at it and the moment it opens it. A walk that resolves path strings
//! would then copy (or, on the target side, write through) whatever the link
//! points at. So:
//!
//! - the source root is opened with `O_DIRECTORY | O_NOFOLLOW`, and every
//!   entry below it is opened with `openat` relative to its parent's fd and
//!   `O_NOFOLLOW`; no path below a root is ever resolved. The paths *above*
//!   the roots are the caller's and are trusted;
//! - a directory opened again later (the walk keeps no fds while work waits
//!   in its queue) is reached the same way, one `openat` per level, and must
//!   still have the device and inode the walk first found: one moved or
//!   replaced meanwhile is looked at again or skipped, never read in the
//!   place of the other;
//! - a symlink is recreated as a symlink with the same text, never followed;
//! - a regular file's type is checked with `fstat` on the opened fd (opened
//!   `O_NONBLOCK | O_NOFOLLOW`, so a FIFO swapped in cannot block the walk
//!   and a symlink is not followed), and its metadata comes from that fd,
//!   not from the directory listing's `d_type` or an `lstat`, which only say
//!   which way to look; nothing is read or created before that check;
//! - FIFOs are made anew (the source FIFO is never read; one swapped in for
//!   a file between the listing, or `lstat`, and the `open` is opened, found
//!   out by the `fstat` and closed unread); sockets and device nodes are
//!   skipped;
//! - setuid and setgid bits are dropped;
//! - the target is written through fds as well, and what a failed full copy
//!   left behind is removed the same way, so a link in the target cannot
//!   send a removal elsewhere either.
//!
//! # Speed
//!
//! Regular files are reflinked (`FICLONE`) where the filesystem shares
//! extents (XFS with `reflink=1`, btrfs), which costs the same whatever the
//! size; else their data ranges (found with `SEEK_DATA`/`SEEK_HOLE`) are
//! copied in the kernel with `copy_file_range`, else read and written, and
//! holes stay holes: a 1 TiB sparse file costs what its data does. A method
//! that fails as unsupported is not tried again in the same run. Directories
//! are spread over up to eight threads; the entries of one directory are
//! created by one thread (XFS serialises creates in a directory), unless it
//! holds more than 1024, which are split in chunks of 1024.
//!
//! A regular file in a full copy costs eight system calls: `open` (directly
//! when the listing's `d_type` says it is a regular file; an entry of any
//! other or an unknown type gets an `lstat` first), `fstat`, `open` of the
//! copy (created with the source's permissions), `FICLONE`, `fchown`,
//! `futimens` and two `close`s; `fchmod` too when the umask (or the target's
//! default ACL) took some of the permissions away at creation, which each run
//! finds out once with an unnamed file in the target root. The umask must
//! therefore not change while a copy runs (the daemon never changes it). A
//! delta pass `lstat`s every entry on both sides to compare them.
//!
//! # Limits
//!
//! - Hard links become separate copies: link counts are not preserved.
//! - Extended attributes and ACLs are not copied.
//! - Preallocated but unwritten ranges (`fallocate`) are copied as holes
//!   unless reflinked.
//! - Reading a symlink updates its atime in the source (Linux has no
//!   `O_NOATIME` for `readlink`); files and directories are read with
//!   `O_NOATIME`.
//! - Nothing is `fsync`ed; call `syncfs` on the target if the copy must
//!   survive a crash.
//! - Directories nest at most [`MAX_DEPTH`] levels, and hold at most
//!   [`MAX_ENTRIES`] entries each (a listing is held in memory).
//! - Open fds: at most `3 + 17 × threads` (139 with eight threads) at any
//!   time, whatever the width and depth of the tree; no work waiting in the
//!   queue holds one (see the `walk` module).

pub mod archive;
mod fsops;
pub mod retention;
mod walk;

use std::ffi::{CStr, CString};
use std::num::NonZero;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, fchmod, mkdirat};

use crate::fsops::{open_dir, remove_tree};

/// The deepest directory nesting [`sync_tree`] copies.
pub const MAX_DEPTH: usize = 256;

/// The most entries one directory may hold for [`sync_tree`] to copy it (or,
/// in delta mode, to compare it with an existing copy).
pub const MAX_ENTRIES: usize = 1_000_000;

/// How much earlier than [`SyncMode::Delta`]'s `unchanged_before` a source
/// ctime must be for its entry to be kept: the kernel stamps ctime from a
/// coarse clock that can lag [`SystemTime::now`] by a tick.
pub const CTIME_MARGIN: Duration = Duration::from_secs(1);

/// How [`sync_tree`] treats an existing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// `target` is made from nothing (removed first if it exists).
    Full,
    /// `target` was synced from `source` before: entries whose type, size,
    /// mode, owner and mtime match and whose source ctime is before
    /// `unchanged_before` (less [`CTIME_MARGIN`]) are kept; everything else
    /// is copied again; entries of `target` missing from `source` are
    /// removed. A missing `target` is created. A missing `source` is an
    /// error ([`VolumeError::SourceMissing`]), `target` untouched. On error
    /// `target` is left half-synced: sync again, or discard it.
    Delta {
        /// Typically the time taken just before the full pass started.
        unchanged_before: SystemTime,
    },
}

/// What [`sync_tree`] did. Counts are of entries below the roots.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Non-directories in the target afterwards (regular files, symlinks,
    /// FIFOs), kept ones included.
    pub files: u64,
    /// Directories created or walked.
    pub directories: u64,
    /// Bytes of regular file data written: the data ranges copied (holes are
    /// not written), or a reflinked file's size.
    pub bytes: u64,
    /// Regular files reflinked.
    pub reflinked: u64,
    /// Regular files copied (`copy_file_range` or read/write).
    pub copied: u64,
    /// Entries left as they were ([`SyncMode::Delta`]).
    pub kept: u64,
    /// Target entries removed because the source no longer has them
    /// ([`SyncMode::Delta`]); every entry of a removed directory counts.
    pub removed: u64,
    /// Sockets and device nodes, entries that vanished from the source
    /// during the walk, and ([`SyncMode::Full`]) entries of directories that
    /// were moved or replaced during it.
    pub skipped: u64,
}

impl std::ops::AddAssign for SyncReport {
    /// Adds the counts of another sync (several trees cloned as one).
    fn add_assign(&mut self, other: SyncReport) {
        self.files += other.files;
        self.directories += other.directories;
        self.bytes += other.bytes;
        self.reflinked += other.reflinked;
        self.copied += other.copied;
        self.kept += other.kept;
        self.removed += other.removed;
        self.skipped += other.skipped;
    }
}

/// What cloning a volume can fail with. Paths inside the trees are relative
/// to the root named beside them.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The source root is a symlink, which is never followed.
    #[error("source {path} is a symlink; pass the real data directory")]
    SourceSymlink {
        /// The source root.
        path: PathBuf,
    },
    /// [`SyncMode::Delta`] found no source root: the data was removed after
    /// the full pass.
    #[error(
        "source {path} no longer exists; the parent's data was removed while it was cloned, so clone again from an active parent"
    )]
    SourceMissing {
        /// The source root.
        path: PathBuf,
    },
    /// The source root exists but is not a directory.
    #[error("source {path} is not a directory; pass the environment's data directory")]
    SourceNotDirectory {
        /// The source root.
        path: PathBuf,
    },
    /// The source root cannot be opened.
    #[error("cannot open source {path}: {source}; check that it is a readable directory")]
    OpenSource {
        /// The source root.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The target path has no last component to create.
    #[error(
        "target {path} does not name a directory to create; pass a path like /var/lib/launchway/volumes/ENV"
    )]
    TargetPath {
        /// The target root.
        path: PathBuf,
    },
    /// Source and target are the same directory or one contains the other.
    #[error(
        "source {source_root} and target {target_root} overlap; clone into a directory outside the source"
    )]
    Overlap {
        /// The source root.
        source_root: PathBuf,
        /// The target root.
        target_root: PathBuf,
    },
    /// The target root cannot be removed, created or opened.
    #[error(
        "cannot {action} target {path}: {source}; check that its parent directory exists and is writable"
    )]
    PrepareTarget {
        /// The target root.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An entry of the source cannot be read.
    #[error(
        "cannot {action} {path} in source {root}: {source}; check that entry, then clone again"
    )]
    Source {
        /// The source root.
        root: PathBuf,
        /// The entry, relative to `root`.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An entry of the target cannot be written.
    #[error(
        "cannot {action} {path} in target {root}: {source}; check space and permissions on the target filesystem, then clone again"
    )]
    Target {
        /// The target root.
        root: PathBuf,
        /// The entry, relative to `root`.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A regular file's data could not be copied.
    #[error(
        "cannot copy the data of {path} from {source_root} to {target_root}: {source}; check space on the target filesystem, then clone again"
    )]
    Copy {
        /// The source root.
        source_root: PathBuf,
        /// The target root.
        target_root: PathBuf,
        /// The file, relative to both roots.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The source nests directories deeper than [`MAX_DEPTH`].
    #[error(
        "{path} in source {source_root} is nested deeper than {limit} directories; flatten that tree, then clone again"
    )]
    TooDeep {
        /// The source root.
        source_root: PathBuf,
        /// The directory, relative to `source_root`.
        path: PathBuf,
        /// [`MAX_DEPTH`].
        limit: usize,
    },
    /// An entry kept changing type while the walk looked at it, or (delta
    /// mode) a directory was moved or replaced during the walk.
    #[error(
        "{path} in source {source_root} kept changing during the copy; pause the app, then clone again"
    )]
    Unstable {
        /// The source root.
        source_root: PathBuf,
        /// The entry, relative to `source_root`.
        path: PathBuf,
    },
    /// A directory holds more than [`MAX_ENTRIES`] entries.
    #[error(
        "directory {path} in {root} has more than {limit} entries; spread them over subdirectories, then clone again"
    )]
    TooManyEntries {
        /// The source or target root.
        root: PathBuf,
        /// The directory, relative to `root`.
        path: PathBuf,
        /// [`MAX_ENTRIES`].
        limit: usize,
    },
    /// The data to write exceeds the limit given to [`sync_tree_limited`].
    #[error(
        "the data to clone exceeds {limit} bytes (holes in sparse files and reflinked files not counted); remove data from the source or raise the limit, then clone again"
    )]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
}

/// Copies the tree at `source` to `target` as [`SyncMode`] says, with no
/// limit on the data written: [`sync_tree_limited`] with `None`.
///
/// # Errors
///
/// As [`sync_tree_limited`].
pub fn sync_tree(source: &Path, target: &Path, mode: SyncMode) -> Result<SyncReport, VolumeError> {
    sync_tree_limited(source, target, mode, None)
}

/// Copies the tree at `source` to `target` as [`SyncMode`] says, writing at
/// most `max_bytes` bytes of file data if given.
///
/// Copies regular files (reflinked where possible; else their data, holes
/// kept as holes), directories, symlinks (as symlinks) and FIFOs with their
/// owner, permissions (setuid and setgid dropped) and atime/mtime in
/// nanoseconds; skips sockets and device nodes. [`SyncMode::Full`] treats a
/// missing `source` as an empty directory; [`SyncMode::Delta`] fails.
/// `target`'s parent must exist. If a [`SyncMode::Full`] copy fails,
/// `target` is removed.
///
/// `max_bytes` counts the data this call writes: the data ranges of files
/// copied, not their apparent size (a hole costs nothing), and nothing for a
/// reflinked file (it shares the source's extents). Exceeding it fails with
/// [`VolumeError::TooLarge`] before the data past it is written. In delta
/// mode it counts that pass's writes only.
///
/// Blocks; runs on up to eight threads of its own.
///
/// # Errors
///
/// The source root is a symlink or not a directory (or, in delta mode,
/// missing), source and target overlap, an entry cannot be read or written,
/// or a limit is exceeded (see [`VolumeError`]).
pub fn sync_tree_limited(
    source: &Path,
    target: &Path,
    mode: SyncMode,
    max_bytes: Option<u64>,
) -> Result<SyncReport, VolumeError> {
    sync_tree_with(
        source,
        target,
        mode,
        Limits {
            max_bytes,
            max_entries: MAX_ENTRIES,
        },
    )
}

/// Limits on one [`sync_tree`] run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_bytes: Option<u64>,
    pub(crate) max_entries: usize,
}

fn sync_tree_with(
    source: &Path,
    target: &Path,
    mode: SyncMode,
    limits: Limits,
) -> Result<SyncReport, VolumeError> {
    let src = open_source(source)?;
    let (parent, name) = open_target_parent(target)?;
    if src.is_some() {
        check_disjoint(source, target)?;
    }
    let threads = std::thread::available_parallelism()
        .map_or(2, NonZero::get)
        .clamp(2, 8);
    let prepare = |action, errno: Errno| VolumeError::PrepareTarget {
        path: target.to_owned(),
        action,
        source: errno.into(),
    };
    match mode {
        SyncMode::Full => {
            remove_tree(parent.as_fd(), &name).map_err(|e| prepare("remove the existing", e))?;
            mkdirat(
                parent.as_fd(),
                name.as_c_str(),
                Mode::from_bits_truncate(0o700),
            )
            .map_err(|e| prepare("create", e))?;
            let result = open_dir(parent.as_fd(), &name)
                .map_err(|e| prepare("open", e))
                .and_then(|dst| match src {
                    Some(src) => walk::run(source, target, src, dst, None, limits, threads),
                    None => {
                        fchmod(dst.as_fd(), Mode::from_bits_truncate(0o755))
                            .map_err(|e| prepare("set the mode of", e))?;
                        Ok(SyncReport::default())
                    }
                });
            if result.is_err()
                && let Err(error) = remove_tree(parent.as_fd(), &name)
            {
                tracing::warn!(target = %target.display(), %error, "cannot remove the partial copy");
            }
            result
        }
        SyncMode::Delta { unchanged_before } => {
            let Some(src) = src else {
                return Err(VolumeError::SourceMissing {
                    path: source.to_owned(),
                });
            };
            let dst = open_or_create_dir(parent.as_fd(), &name).map_err(|e| prepare("open", e))?;
            let margin = i128::try_from(CTIME_MARGIN.as_nanos()).unwrap_or(i128::MAX);
            let cutoff = nanos_since_epoch(unchanged_before).saturating_sub(margin);
            walk::run(source, target, src, dst, Some(cutoff), limits, threads)
        }
    }
}

/// Whether files in `dir` can be reflinked: tries `FICLONE` between two
/// unnamed temporary files there.
pub fn supports_reflink(dir: &Path) -> bool {
    let probe = || -> nix::Result<()> {
        let dir = open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut a = temp_file(dir.as_fd())?;
        std::io::Write::write_all(&mut a, b"launchway reflink probe")
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
        let b = temp_file(dir.as_fd())?;
        rustix::fs::ioctl_ficlone(b.as_fd(), a.as_fd())
            .map_err(|e| Errno::from_raw(e.raw_os_error()))
    };
    match probe() {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(dir = %dir.display(), %error, "no reflinks here");
            false
        }
    }
}

/// A file in `dir` with no name: `O_TMPFILE`, or a new name unlinked at once
/// where the filesystem lacks `O_TMPFILE`.
fn temp_file(dir: BorrowedFd<'_>) -> nix::Result<std::fs::File> {
    let flags = OFlag::O_RDWR | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(0o600);
    match nix::fcntl::openat(dir, c".", flags | OFlag::O_TMPFILE, mode) {
        Ok(fd) => return Ok(fd.into()),
        Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {}
        Err(e) => return Err(e),
    }
    let flags = flags | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    for n in 0..100 {
        let name = CString::new(format!(
            ".launchway-reflink-probe-{}-{n}",
            std::process::id()
        ))
        .map_err(|_| Errno::EINVAL)?;
        match nix::fcntl::openat(dir, name.as_c_str(), flags, mode) {
            Ok(fd) => {
                nix::unistd::unlinkat(
                    dir,
                    name.as_c_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                )?;
                return Ok(fd.into());
            }
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EEXIST)
}

/// Opens the source root, refusing a symlink; `None` if it does not exist.
fn open_source(source: &Path) -> Result<Option<OwnedFd>, VolumeError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match open(source, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::ELOOP | Errno::ENOTDIR) => match std::fs::symlink_metadata(source) {
            Ok(meta) if meta.file_type().is_symlink() => Err(VolumeError::SourceSymlink {
                path: source.to_owned(),
            }),
            _ => Err(VolumeError::SourceNotDirectory {
                path: source.to_owned(),
            }),
        },
        Err(e) => Err(VolumeError::OpenSource {
            path: source.to_owned(),
            source: e.into(),
        }),
    }
}

/// Opens the directory `target` is to be made in, and names it there.
fn open_target_parent(target: &Path) -> Result<(OwnedFd, CString), VolumeError> {
    let name = target
        .file_name()
        .and_then(|name| CString::new(name.as_bytes()).ok())
        .ok_or_else(|| VolumeError::TargetPath {
            path: target.to_owned(),
        })?;
    let parent = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let fd = open(parent, flags, Mode::empty()).map_err(|e| VolumeError::PrepareTarget {
        path: target.to_owned(),
        action: "open the parent of",
        source: e.into(),
    })?;
    Ok((fd, name))
}

/// Refuses a target that is the source, inside it, or contains it: a full
/// copy starts by removing the target.
fn check_disjoint(source: &Path, target: &Path) -> Result<(), VolumeError> {
    let overlap = || VolumeError::Overlap {
        source_root: source.to_owned(),
        target_root: target.to_owned(),
    };
    let source = std::fs::canonicalize(source).map_err(|source_error| VolumeError::OpenSource {
        path: source.to_owned(),
        source: source_error,
    })?;
    // The target itself may be missing or a symlink (which a full copy
    // replaces): resolve its parent only.
    let parent = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let resolved = std::fs::canonicalize(parent)
        .map(|parent| parent.join(target.file_name().unwrap_or_default()))
        .map_err(|e| VolumeError::PrepareTarget {
            path: target.to_owned(),
            action: "resolve the parent of",
            source: e,
        })?;
    if resolved.starts_with(&source) || source.starts_with(&resolved) {
        return Err(overlap());
    }
    Ok(())
}

/// Opens directory `name` in `parent`, creating it if missing and replacing
/// it if it is not a directory.
fn open_or_create_dir(parent: BorrowedFd<'_>, name: &CStr) -> nix::Result<OwnedFd> {
    match open_dir(parent, name) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(Errno::ELOOP | Errno::ENOTDIR) => {
            remove_tree(parent, name)?;
        }
        Err(e) => return Err(e),
    }
    mkdirat(parent, name, Mode::from_bits_truncate(0o700))?;
    open_dir(parent, name)
}

fn nanos_since_epoch(time: SystemTime) -> i128 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_directory_over_the_entry_limit_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        for i in 0..11 {
            std::fs::write(src.join("sub").join(format!("f{i}")), "").unwrap();
        }
        let dst = dir.path().join("dst");
        let limits = Limits {
            max_bytes: None,
            max_entries: 10,
        };

        let error = sync_tree_with(&src, &dst, SyncMode::Full, limits).unwrap_err();

        assert!(
            matches!(&error, VolumeError::TooManyEntries { root, path, limit: 10 }
                if root == &src && path == Path::new("sub")),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("more than 10 entries"),
            "{error}"
        );
        assert!(!dst.exists());
        let limits = Limits {
            max_bytes: None,
            max_entries: 11,
        };
        sync_tree_with(&src, &dst, SyncMode::Full, limits).unwrap();
    }
}
