//! The system calls the walk is made of, all relative to directory fds and
//! none following a symlink below the roots.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, futimens, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, unlinkat};

/// Flags every open adds.
const BASE: OFlag = OFlag::O_CLOEXEC.union(OFlag::O_NOFOLLOW);

/// How deep [`remove_tree`] descends before it moves a subtree up to the
/// directory being removed (so removing any depth needs a bounded number of
/// fds and stack frames).
const REMOVE_DEPTH: usize = 64;

/// The kind of an entry, from `st_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    /// Sockets and device nodes: never copied.
    Other,
}

pub(crate) fn kind(st: &FileStat) -> Kind {
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFLNK => Kind::Symlink,
        SFlag::S_IFIFO => Kind::Fifo,
        _ => Kind::Other,
    }
}

/// The permission bits a copy gets: setuid and setgid are dropped (the data
/// comes from an app; nothing in it may gain privileges), sticky is kept.
pub(crate) fn permissions(st: &FileStat) -> Mode {
    Mode::from_bits_truncate(st.st_mode & 0o1777)
}

pub(crate) fn atime(st: &FileStat) -> TimeSpec {
    TimeSpec::new(st.st_atime, st.st_atime_nsec)
}

pub(crate) fn mtime(st: &FileStat) -> TimeSpec {
    TimeSpec::new(st.st_mtime, st.st_mtime_nsec)
}

/// Opens directory `name` in `dir`, refusing a symlink.
pub(crate) fn open_dir(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<OwnedFd> {
    open_noatime(dir, name, BASE | OFlag::O_RDONLY | OFlag::O_DIRECTORY)
}

/// Opens `name` in `dir` for reading, refusing a symlink; `O_NONBLOCK` so an
/// entry swapped for a FIFO cannot block the walk (the caller checks the type
/// with `fstat` afterwards).
pub(crate) fn open_read(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<File> {
    let flags = BASE | OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    open_noatime(dir, name, flags).map(File::from)
}

/// Opens with `O_NOATIME`, so reading the source leaves its access times as
/// they were; without it where that is not allowed (not the owner and no
/// `CAP_FOWNER`).
fn open_noatime(dir: BorrowedFd<'_>, name: &CStr, flags: OFlag) -> nix::Result<OwnedFd> {
    match openat(dir, name, flags | OFlag::O_NOATIME, Mode::empty()) {
        Err(Errno::EPERM) => openat(dir, name, flags, Mode::empty()),
        result => result,
    }
}

/// Creates `name` in `dir` for writing; it must not exist.
pub(crate) fn create_file(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<File> {
    let flags = BASE | OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
    openat(dir, name, flags, Mode::from_bits_truncate(0o600)).map(File::from)
}

/// The names in directory `dir` (without `.` and `..`), read through a new
/// open file description so the read offset of `dir` is never shared.
pub(crate) fn read_names(dir: BorrowedFd<'_>) -> nix::Result<Vec<CString>> {
    let fd = open_dir(dir, c".")?;
    let mut listing = Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Sets owner, permissions and times of an open file or directory from `st`.
/// Owner first: `chown` clears setuid/setgid, and the mode must come after.
pub(crate) fn set_meta(fd: BorrowedFd<'_>, st: &FileStat) -> nix::Result<()> {
    fchown(
        fd,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )?;
    fchmod(fd, permissions(st))?;
    futimens(fd, &atime(st), &mtime(st))
}

/// Sets owner, permissions (unless a symlink, whose mode Linux ignores) and
/// times of `name` in `dir` from `st`, never following a symlink.
pub(crate) fn set_meta_at(dir: BorrowedFd<'_>, name: &CStr, st: &FileStat) -> nix::Result<()> {
    let (uid, gid) = (Uid::from_raw(st.st_uid), Gid::from_raw(st.st_gid));
    fchownat(
        dir,
        name,
        Some(uid),
        Some(gid),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    if kind(st) != Kind::Symlink {
        // `name` is a FIFO this walk just made in a directory only it writes
        // to; `chmod` on a FIFO does not open it.
        fchmodat(dir, name, permissions(st), FchmodatFlags::FollowSymlink)?;
    }
    utimensat(
        dir,
        name,
        &atime(st),
        &mtime(st),
        UtimensatFlags::NoFollowSymlink,
    )
}

/// How a regular file's data was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Reflink,
    Copy,
}

/// Which ways of copying data this run has given up on.
#[derive(Debug, Default)]
pub(crate) struct Fallbacks {
    pub(crate) no_reflink: AtomicBool,
    pub(crate) no_copy_file_range: AtomicBool,
}

/// Errors that say "this way of copying does not work here", not "this file is
/// broken".
fn unsupported(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL | Errno::ENOTTY | Errno::ENOSYS
    )
}

/// Copies the data of `src` into the empty `dst`: a reflink (FICLONE) when
/// the filesystem shares extents, else `copy_file_range`, else read/write.
/// Returns the method and the bytes copied (the source's size for a reflink).
pub(crate) fn copy_data(
    src: &mut File,
    dst: &mut File,
    size: u64,
    fallbacks: &Fallbacks,
) -> std::io::Result<(Method, u64)> {
    if !fallbacks.no_reflink.load(Ordering::Relaxed) {
        match rustix::fs::ioctl_ficlone(dst.as_fd(), src.as_fd()) {
            Ok(()) => return Ok((Method::Reflink, size)),
            Err(e) if unsupported(Errno::from_raw(e.raw_os_error())) => {
                tracing::debug!(error = %e, "reflink not supported here; copying data instead");
                fallbacks.no_reflink.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut copied = 0_u64;
    if !fallbacks.no_copy_file_range.load(Ordering::Relaxed) {
        loop {
            // Offsets `None`: the file positions advance, so the read/write
            // fallback below continues where this stopped.
            match nix::fcntl::copy_file_range(src.as_fd(), None, dst.as_fd(), None, 1 << 30) {
                Ok(0) => return Ok((Method::Copy, copied)),
                Ok(n) => copied += n as u64,
                Err(Errno::EINTR) => {}
                Err(e) if unsupported(e) => {
                    tracing::debug!(error = %e, "copy_file_range not supported here; reading and writing instead");
                    fallbacks.no_copy_file_range.store(true, Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut buffer = vec![0_u8; 256 * 1024];
    loop {
        let n = match src.read(&mut buffer) {
            Ok(0) => return Ok((Method::Copy, copied)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buffer[..n])?;
        copied += n as u64;
    }
}

/// Removes `name` from `dir` whatever it is, a whole tree included, without
/// following symlinks; a missing entry is fine. Returns how many entries went.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<u64> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(1),
        Err(Errno::ENOENT) => return Ok(0),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e),
    }
    let top = open_dir(dir, name)?;
    let mut removed = 0;
    let mut moved = 0_u64;
    loop {
        let names = read_names(top.as_fd())?;
        if names.is_empty() {
            break;
        }
        for child in names {
            removed += remove_below(top.as_fd(), top.as_fd(), &child, 1, &mut moved)?;
        }
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    Ok(removed + 1)
}

/// Removes `name` in `dir`, which is `depth` levels below `top`; a directory
/// at [`REMOVE_DEPTH`] is moved into `top` instead, for [`remove_tree`]'s
/// next pass.
fn remove_below(
    top: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    name: &CStr,
    depth: usize,
    moved: &mut u64,
) -> nix::Result<u64> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(1),
        Err(Errno::ENOENT) => return Ok(0),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e),
    }
    if depth >= REMOVE_DEPTH {
        loop {
            *moved += 1;
            let new_name =
                CString::new(format!(".launchway-removing-{moved}")).map_err(|_| Errno::EINVAL)?;
            match nix::fcntl::renameat(dir, name, top, new_name.as_c_str()) {
                Ok(()) => return Ok(0),
                // Taken (by an app's entry or an earlier move): next name.
                Err(Errno::EEXIST | Errno::ENOTEMPTY | Errno::ENOTDIR) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let sub = open_dir(dir, name)?;
    let mut removed = 0;
    for child in read_names(sub.as_fd())? {
        removed += remove_below(top, sub.as_fd(), &child, depth + 1, moved)?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    Ok(removed + 1)
}
