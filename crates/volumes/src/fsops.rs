//! The system calls the walk is made of, all relative to directory fds and
//! none following a symlink below the roots.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, futimens, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, Whence, fchown, fchownat, lseek, unlinkat};

/// Flags every open adds.
const BASE: OFlag = OFlag::O_CLOEXEC.union(OFlag::O_NOFOLLOW);

/// How deep [`remove_tree`] descends before it moves a subtree up to the
/// directory being removed, so removing any depth holds at most this many
/// fds (plus one for a listing) and stack frames.
pub(crate) const REMOVE_DEPTH: usize = 8;

/// How many names [`remove_tree`] reads from a directory at a time.
const REMOVE_BATCH: usize = 10_000;

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

/// The kind of a listed entry, from its `d_type`; `None` when the
/// filesystem does not say (`DT_UNKNOWN`).
fn listed_kind(t: rustix::fs::FileType) -> Option<Kind> {
    use rustix::fs::FileType;
    match t {
        FileType::RegularFile => Some(Kind::File),
        FileType::Directory => Some(Kind::Dir),
        FileType::Symlink => Some(Kind::Symlink),
        FileType::Fifo => Some(Kind::Fifo),
        FileType::Socket | FileType::CharacterDevice | FileType::BlockDevice => Some(Kind::Other),
        FileType::Unknown => None,
    }
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

/// Creates `name` in `dir` for writing, with permissions `mode` less what
/// the umask (or the directory's default ACL) takes away; it must not exist.
/// The new file is writable through the returned fd whatever `mode` says.
pub(crate) fn create_file(dir: BorrowedFd<'_>, name: &CStr, mode: Mode) -> nix::Result<File> {
    let flags = BASE | OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
    openat(dir, name, flags, mode).map(File::from)
}

/// The permission bits (of `0o1777`) a file created in `dir` keeps from the
/// mode it is created with: all but those the umask, or `dir`'s default ACL,
/// takes away. Found by creating an unnamed file (`O_TMPFILE`) with mode
/// `0o1777` there; `None` where that is not possible. Subdirectories made by
/// the walk inherit `dir`'s default ACL, and the umask is the process's, so
/// this holds for the whole target tree.
pub(crate) fn creation_mask(dir: BorrowedFd<'_>) -> Option<u32> {
    let flags = OFlag::O_WRONLY | OFlag::O_TMPFILE | OFlag::O_CLOEXEC;
    let probe = openat(dir, c".", flags, Mode::from_bits_truncate(0o1777)).ok()?;
    let st = nix::sys::stat::fstat(probe.as_fd()).ok()?;
    Some(st.st_mode & 0o1777)
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub(crate) name: CString,
    /// Its kind from the listing (`d_type`); `None` if the filesystem did not
    /// say. A hint only: the entry may have been replaced since.
    pub(crate) kind: Option<Kind>,
}

/// Up to `max` entries of directory `dir` (without `.` and `..`).
#[derive(Debug)]
pub(crate) struct Names {
    pub(crate) entries: Vec<Listed>,
    /// Whether `dir` has more entries than were returned.
    pub(crate) truncated: bool,
}

/// The entries of directory `dir` (without `.` and `..`), at most `max` of
/// them, read through a new open file description so the read offset of
/// `dir` is never shared.
pub(crate) fn read_names(dir: BorrowedFd<'_>, max: usize) -> nix::Result<Names> {
    list(open_dir(dir, c".")?, max)
}

/// Reads the names of the directory open as `fd`, then closes it.
///
/// rustix's `Dir` takes the fd as an `OwnedFd` and closes it on every path,
/// failure included. (nix 0.31's `Dir::from_fd` turns it into a raw fd
/// before `fdopendir` and does not close it when that fails: a leak.)
fn list(fd: OwnedFd, max: usize) -> nix::Result<Names> {
    let mut listing = rustix::fs::Dir::new(fd).map_err(errno)?;
    let mut entries = Vec::new();
    while let Some(entry) = listing.read() {
        let entry = entry.map_err(errno)?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        if entries.len() == max {
            return Ok(Names {
                entries,
                truncated: true,
            });
        }
        entries.push(Listed {
            name: name.to_owned(),
            kind: listed_kind(entry.file_type()),
        });
    }
    Ok(Names {
        entries,
        truncated: false,
    })
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// Sets owner, permissions and times of an open file or directory from `st`.
/// Owner first: `chown` clears setuid/setgid, and the mode must come after.
pub(crate) fn set_meta(fd: BorrowedFd<'_>, st: &FileStat) -> nix::Result<()> {
    set_meta_created(fd, st, None)
}

/// [`set_meta`] for a file [`create_file`] just made with mode
/// `permissions(st)` in a directory whose [`creation_mask`] is `mask`: the
/// mode is set only if creation took bits away (or `mask` is unknown). The
/// bits it kept survive `chown`, which clears only setuid and setgid, and a
/// copy never has those.
pub(crate) fn set_meta_created(
    fd: BorrowedFd<'_>,
    st: &FileStat,
    mask: Option<u32>,
) -> nix::Result<()> {
    fchown(
        fd,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )?;
    let mode = permissions(st);
    if mask.is_none_or(|mask| mode.bits() & !mask != 0) {
        fchmod(fd, mode)?;
    }
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

/// A limit on the data [`copy_data`] writes, shared by the walk's threads.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: Option<u64>,
    used: AtomicU64,
}

impl Budget {
    pub(crate) const fn new(limit: Option<u64>) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
        }
    }

    pub(crate) const fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Takes `n` bytes from the budget, or fails if that would exceed it.
    fn take(&self, n: u64) -> Result<(), CopyError> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|total| *total <= limit)
            })
            .map(drop)
            .map_err(|_| CopyError::TooLarge)
    }

    /// Gives back `n` bytes taken but not written.
    fn give_back(&self, n: u64) {
        if self.limit.is_some() && n > 0 {
            self.used.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// Why [`copy_data`] failed.
#[derive(Debug)]
pub(crate) enum CopyError {
    Io(std::io::Error),
    /// The data would exceed the [`Budget`].
    TooLarge,
}

impl From<std::io::Error> for CopyError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<Errno> for CopyError {
    fn from(e: Errno) -> Self {
        Self::Io(e.into())
    }
}

/// Copies the data of `src`, `size` bytes long, into the empty `dst`: a
/// reflink (FICLONE) when the filesystem shares extents, else only the
/// ranges holding data (holes stay holes) with `copy_file_range`, else with
/// reads and writes; `dst` is then made `size` long. Bytes written are taken
/// from `budget` before they are written; a reflink writes none.
///
/// Returns the method and the bytes of data written (the source's size for a
/// reflink).
pub(crate) fn copy_data(
    src: &File,
    dst: &File,
    size: u64,
    fallbacks: &Fallbacks,
    budget: &Budget,
) -> Result<(Method, u64), CopyError> {
    if !fallbacks.no_reflink.load(Ordering::Relaxed) {
        match rustix::fs::ioctl_ficlone(dst.as_fd(), src.as_fd()) {
            Ok(()) => return Ok((Method::Reflink, size)),
            Err(e) if unsupported(Errno::from_raw(e.raw_os_error())) => {
                tracing::debug!(error = %e, "reflink not supported here; copying data instead");
                fallbacks.no_reflink.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
    }
    // Data ranges of [0, size): what the file holds past `size` was written
    // after the copy began, and the delta pass copies it.
    let mut written = 0_u64;
    // `dst` is as long as the end of the last range written to it.
    let mut length = 0_u64;
    let mut pos = 0_u64;
    while pos < size {
        let start = match lseek(src.as_fd(), offset(pos)?, Whence::SeekData) {
            Ok(start) => u64::try_from(start).unwrap_or(u64::MAX),
            // No data after `pos`.
            Err(Errno::ENXIO) => break,
            Err(e) if unsupported(e) => pos,
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = match lseek(src.as_fd(), offset(start)?, Whence::SeekHole) {
            Ok(end) => u64::try_from(end).unwrap_or(u64::MAX).min(size),
            // Truncated meanwhile.
            Err(Errno::ENXIO) => break,
            Err(e) if unsupported(e) => size,
            Err(e) => return Err(e.into()),
        };
        let copied = copy_range(src, dst, start, end, fallbacks, budget)?;
        written += copied;
        if copied > 0 {
            length = start + copied;
        }
        if copied < end - start {
            // The file ended early: it was truncated meanwhile.
            break;
        }
        pos = end;
    }
    // Trailing holes (and what a truncation meanwhile removed).
    if length != size {
        dst.set_len(size)?;
    }
    Ok((Method::Copy, written))
}

fn offset(n: u64) -> std::io::Result<i64> {
    i64::try_from(n).map_err(|_| std::io::Error::from(Errno::EFBIG))
}

/// Copies bytes `start..end` of `src` to the same offsets of `dst`, or up to
/// the end of `src` if that comes first; returns how many.
fn copy_range(
    src: &File,
    dst: &File,
    start: u64,
    end: u64,
    fallbacks: &Fallbacks,
    budget: &Budget,
) -> Result<u64, CopyError> {
    let wanted = end - start;
    budget.take(wanted)?;
    let mut pos = start;
    let result = copy_range_taken(src, dst, &mut pos, end, fallbacks);
    budget.give_back(end - pos);
    result.map(|()| pos - start)
}

/// [`copy_range`] once the budget is taken; `pos` advances with the copy.
fn copy_range_taken(
    src: &File,
    dst: &File,
    pos: &mut u64,
    end: u64,
    fallbacks: &Fallbacks,
) -> Result<(), CopyError> {
    if !fallbacks.no_copy_file_range.load(Ordering::Relaxed) {
        while *pos < end {
            let len = usize::try_from((end - *pos).min(1 << 30)).unwrap_or(1 << 30);
            let mut off_in = offset(*pos)?;
            let mut off_out = off_in;
            match nix::fcntl::copy_file_range(
                src.as_fd(),
                Some(&mut off_in),
                dst.as_fd(),
                Some(&mut off_out),
                len,
            ) {
                Ok(0) => return Ok(()),
                Ok(n) => *pos += n as u64,
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
    while *pos < end {
        let len = usize::try_from(end - *pos).map_or(buffer.len(), |n| n.min(buffer.len()));
        let n = match src.read_at(&mut buffer[..len], *pos) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        dst.write_all_at(&buffer[..n], *pos)?;
        *pos += n as u64;
    }
    Ok(())
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
    // Each batch read is removed (or moved up into `top`, read again later)
    // before the next, so the batches end.
    loop {
        let batch = read_names(top.as_fd(), REMOVE_BATCH)?.entries;
        if batch.is_empty() {
            break;
        }
        for child in batch {
            removed += remove_below(top.as_fd(), top.as_fd(), &child.name, 1, &mut moved)?;
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
    loop {
        let batch = read_names(sub.as_fd(), REMOVE_BATCH)?.entries;
        if batch.is_empty() {
            break;
        }
        for child in batch {
            removed += remove_below(top, sub.as_fd(), &child.name, depth + 1, moved)?;
        }
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    Ok(removed + 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn a_listing_that_fails_closes_its_fd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-directory");
        std::fs::write(&path, "x").unwrap();
        let file = OwnedFd::from(File::open(&path).unwrap());
        let raw = file.as_raw_fd();

        assert_eq!(list(file, 10).unwrap_err(), Errno::ENOTDIR);

        // Closed: the number is free, or another test's fd took it since.
        match std::fs::read_link(format!("/proc/self/fd/{raw}")) {
            Ok(target) => assert_ne!(target, path, "fd {raw} leaked"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        }
    }

    #[test]
    fn read_names_stops_at_the_limit_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(dir.path().join(format!("f{i}")), "").unwrap();
        }
        let fd = OwnedFd::from(File::open(dir.path()).unwrap());

        let all = read_names(fd.as_fd(), 5).unwrap();
        assert_eq!((all.entries.len(), all.truncated), (5, false));
        let some = read_names(fd.as_fd(), 4).unwrap();
        assert_eq!((some.entries.len(), some.truncated), (4, true));
    }

    /// A sparse file: `data` at each offset, `len` long.
    fn sparse(path: &std::path::Path, len: u64, data: &[(u64, &[u8])]) -> File {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .unwrap();
        file.set_len(len).unwrap();
        for (at, bytes) in data {
            file.write_all_at(bytes, *at).unwrap();
        }
        file
    }

    #[test]
    fn reads_and_writes_keep_holes_too() {
        let dir = tempfile::tempdir().unwrap();
        let block = vec![7_u8; 8192];
        let src = sparse(
            &dir.path().join("src"),
            64 << 20,
            &[(0, &block), (20 << 20, &block), (40 << 20, b"tail")],
        );
        let dst = File::create_new(dir.path().join("dst")).unwrap();
        let fallbacks = Fallbacks::default();
        fallbacks.no_reflink.store(true, Ordering::Relaxed);
        fallbacks.no_copy_file_range.store(true, Ordering::Relaxed);

        let (method, written) =
            copy_data(&src, &dst, 64 << 20, &fallbacks, &Budget::new(None)).unwrap();

        assert_eq!(method, Method::Copy);
        assert!(written < 1 << 20, "{written} bytes written");
        let meta = dst.metadata().unwrap();
        assert_eq!(meta.len(), 64 << 20);
        assert!(meta.blocks() * 512 < 1 << 20, "{} blocks", meta.blocks());
        assert!(
            std::fs::read(dir.path().join("src")).unwrap()
                == std::fs::read(dir.path().join("dst")).unwrap()
        );
    }

    #[test]
    fn the_budget_counts_data_only_and_stops_before_writing_past_it() {
        let dir = tempfile::tempdir().unwrap();
        // Block-aligned, so the data range is exactly this.
        let data = vec![1_u8; 65_536];
        let src = sparse(&dir.path().join("src"), 1 << 30, &[(1 << 29, &data)]);
        let fallbacks = Fallbacks::default();
        fallbacks.no_reflink.store(true, Ordering::Relaxed);

        // Room for two copies and a half.
        let budget = Budget::new(Some(163_840));
        let dst = File::create_new(dir.path().join("a")).unwrap();
        copy_data(&src, &dst, 1 << 30, &fallbacks, &budget).unwrap();
        let dst = File::create_new(dir.path().join("b")).unwrap();
        copy_data(&src, &dst, 1 << 30, &fallbacks, &budget).unwrap();
        let dst = File::create_new(dir.path().join("c")).unwrap();
        assert!(matches!(
            copy_data(&src, &dst, 1 << 30, &fallbacks, &budget),
            Err(CopyError::TooLarge)
        ));
        assert_eq!(dst.metadata().unwrap().blocks(), 0, "nothing written");
        assert_eq!(budget.used.load(Ordering::Relaxed), 131_072);
    }
}
