//! The parallel, fd-relative walk behind [`crate::sync_tree`].
//!
//! Each directory being copied is a [`Node`] holding an fd on the source
//! directory and one on its copy. Work is a shared LIFO stack of jobs: list a
//! directory, or copy a chunk of its entries. A LIFO keeps the walk close to
//! depth-first, so the fds held stay proportional to depth × threads rather
//! than to the width of the tree. A node counts its unfinished jobs and
//! subdirectories; when that reaches zero its owner, mode and times are set
//! (after everything inside it exists, so a read-only directory can still be
//! filled and its mtime is the source's) and its parent is told.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, readlinkat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat, mkdirat};
use nix::unistd::{mkfifoat, symlinkat};

use crate::fsops::{
    self, Fallbacks, Kind, Method, create_file, kind, open_dir, open_read, permissions, read_names,
    remove_tree, set_meta, set_meta_at,
};
use crate::{MAX_DEPTH, SyncReport, VolumeError};

/// Entries per copy job: small enough that a flat directory of many files
/// spreads over the threads, large enough that the queue is not the cost.
const CHUNK: usize = 64;

/// How many times an entry whose type changes under the walk (an app
/// swapping a file for a symlink, say) is looked at again before giving up.
const ATTEMPTS: usize = 3;

/// One directory being copied.
struct Node {
    /// Its path relative to the roots, for messages; empty for the root.
    rel: PathBuf,
    src: OwnedFd,
    dst: OwnedFd,
    /// The source directory's metadata, taken from its open fd.
    stat: FileStat,
    depth: usize,
    parent: Option<Arc<Node>>,
    /// Unfinished jobs for this directory plus unfinished subdirectories.
    pending: AtomicUsize,
}

enum Job {
    /// List the node's entries (and, in delta mode, remove stale ones).
    List(Arc<Node>),
    /// Copy these entries of the node.
    Entries(Arc<Node>, Vec<CString>),
}

struct Queue {
    jobs: Vec<Job>,
    active: usize,
    error: Option<VolumeError>,
}

#[derive(Default)]
struct Stats {
    files: AtomicU64,
    directories: AtomicU64,
    bytes: AtomicU64,
    reflinked: AtomicU64,
    copied: AtomicU64,
    kept: AtomicU64,
    removed: AtomicU64,
    skipped: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    fn report(&self) -> SyncReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SyncReport {
            files: get(&self.files),
            directories: get(&self.directories),
            bytes: get(&self.bytes),
            reflinked: get(&self.reflinked),
            copied: get(&self.copied),
            kept: get(&self.kept),
            removed: get(&self.removed),
            skipped: get(&self.skipped),
        }
    }
}

/// Why one attempt at an entry did not copy it.
enum Step {
    /// Its type changed between `lstat` and `open`: look again.
    Raced,
    /// It is gone from the source.
    Vanished,
    Failed(VolumeError),
}

impl From<VolumeError> for Step {
    fn from(e: VolumeError) -> Self {
        Self::Failed(e)
    }
}

struct Walk<'a> {
    source: &'a Path,
    target: &'a Path,
    /// Delta mode: entries whose source ctime (ns since the epoch) is before
    /// this may be kept.
    cutoff: Option<i128>,
    fallbacks: Fallbacks,
    stats: Stats,
    stop: AtomicBool,
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// Copies the tree under the open directory `src` into the open, existing
/// directory `dst` with `threads` threads (the caller's included).
pub(crate) fn run(
    source: &Path,
    target: &Path,
    src: OwnedFd,
    dst: OwnedFd,
    cutoff: Option<i128>,
    threads: usize,
) -> Result<SyncReport, VolumeError> {
    let walk = Walk {
        source,
        target,
        cutoff,
        fallbacks: Fallbacks::default(),
        stats: Stats::default(),
        stop: AtomicBool::new(false),
        queue: Mutex::new(Queue {
            jobs: Vec::new(),
            active: 0,
            error: None,
        }),
        wake: Condvar::new(),
    };
    let stat = fstat(src.as_fd()).map_err(|e| walk.source_error(Path::new(""), "inspect", e))?;
    let root = Node {
        rel: PathBuf::new(),
        src,
        dst,
        stat,
        depth: 0,
        parent: None,
        pending: AtomicUsize::new(1),
    };
    walk.push(Job::List(Arc::new(root)));
    std::thread::scope(|scope| {
        for i in 1..threads {
            let spawned = std::thread::Builder::new()
                .name(format!("volumes-{i}"))
                .spawn_scoped(scope, || walk.work());
            if let Err(error) = spawned {
                tracing::warn!(%error, threads = i, "cannot start another copy thread; going on with fewer");
                break;
            }
        }
        walk.work();
    });
    let queue = walk
        .queue
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    match queue.error {
        Some(e) => Err(e),
        None => Ok(walk.stats.report()),
    }
}

/// Marks the walk failed if a job panics, so the other threads stop waiting
/// for it (the panic itself reaches the caller through the thread scope).
struct PanicGuard<'w, 'a>(&'w Walk<'a>);

impl Drop for PanicGuard<'_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop.store(true, Ordering::Relaxed);
            let mut queue = self.0.lock();
            queue.active -= 1;
            queue.jobs.clear();
            self.0.wake.notify_all();
        }
    }
}

impl Walk<'_> {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, job: Job) {
        self.lock().jobs.push(job);
        self.wake.notify_one();
    }

    fn work(&self) {
        while let Some(job) = self.next_job() {
            let result = {
                let _guard = PanicGuard(self);
                match job {
                    Job::List(node) => self.list(node),
                    Job::Entries(node, names) => self
                        .entries(&node, &names)
                        .and_then(|()| self.release(node)),
                }
            };
            let mut queue = self.lock();
            queue.active -= 1;
            match result {
                Err(e) => {
                    self.stop.store(true, Ordering::Relaxed);
                    queue.error.get_or_insert(e);
                    queue.jobs.clear();
                    self.wake.notify_all();
                }
                Ok(()) if queue.active == 0 && queue.jobs.is_empty() => self.wake.notify_all(),
                Ok(()) => {}
            }
        }
    }

    fn next_job(&self) -> Option<Job> {
        let mut queue = self.lock();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(job) = queue.jobs.pop() {
                queue.active += 1;
                return Some(job);
            }
            if queue.active == 0 {
                return None;
            }
            queue = self
                .wake
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Lists `node`, removes (delta mode) what the target has and the source
    /// does not, queues all chunks of entries but the first and copies that
    /// one itself.
    fn list(&self, node: Arc<Node>) -> Result<(), VolumeError> {
        let names =
            read_names(node.src.as_fd()).map_err(|e| self.source_error(&node.rel, "list", e))?;
        if self.cutoff.is_some() {
            let wanted: HashSet<&CStr> = names.iter().map(CString::as_c_str).collect();
            let existing = read_names(node.dst.as_fd())
                .map_err(|e| self.target_error(&node.rel, "list", e))?;
            for name in existing.iter().filter(|n| !wanted.contains(n.as_c_str())) {
                let removed = remove_tree(node.dst.as_fd(), name)
                    .map_err(|e| self.target_error(&join(&node.rel, name), "remove", e))?;
                add(&self.stats.removed, removed);
            }
        }
        let mut chunks = names.chunks(CHUNK);
        let first = chunks.next();
        for chunk in chunks {
            node.pending.fetch_add(1, Ordering::AcqRel);
            self.push(Job::Entries(Arc::clone(&node), chunk.to_vec()));
        }
        if let Some(first) = first {
            self.entries(&node, first)?;
        }
        self.release(node)
    }

    fn entries(&self, node: &Arc<Node>, names: &[CString]) -> Result<(), VolumeError> {
        for name in names {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            self.entry(node, name)?;
        }
        Ok(())
    }

    /// One job of `node` is done; when it was the last, sets the directory's
    /// metadata and tells its parent, up the tree.
    fn release(&self, node: Arc<Node>) -> Result<(), VolumeError> {
        let mut node = node;
        loop {
            if node.pending.fetch_sub(1, Ordering::AcqRel) != 1 || self.stop.load(Ordering::Relaxed)
            {
                return Ok(());
            }
            set_meta(node.dst.as_fd(), &node.stat)
                .map_err(|e| self.target_error(&node.rel, "set owner, mode and times of", e))?;
            match node.parent.clone() {
                Some(parent) => node = parent,
                None => return Ok(()),
            }
        }
    }

    /// Copies entry `name` of `node`, looking again if it changes type under
    /// the walk.
    fn entry(&self, node: &Arc<Node>, name: &CStr) -> Result<(), VolumeError> {
        let rel = join(&node.rel, name);
        for _ in 0..ATTEMPTS {
            let st = match fstatat(node.src.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => return self.vanished(node, name, &rel),
                Err(e) => return Err(self.source_error(&rel, "inspect", e)),
            };
            let mut reuse_dir = false;
            if let Some(cutoff) = self.cutoff {
                match fstatat(node.dst.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(existing) if kind(&st) == Kind::Dir && kind(&existing) == Kind::Dir => {
                        reuse_dir = true;
                    }
                    Ok(existing) if unchanged(&st, &existing, cutoff) => {
                        add(&self.stats.kept, 1);
                        add(&self.stats.files, 1);
                        return Ok(());
                    }
                    Ok(_) => {
                        remove_tree(node.dst.as_fd(), name)
                            .map_err(|e| self.target_error(&rel, "replace", e))?;
                    }
                    Err(Errno::ENOENT) => {}
                    Err(e) => return Err(self.target_error(&rel, "inspect", e)),
                }
            }
            let step = match kind(&st) {
                Kind::File => self.copy_file(node, name, &rel),
                Kind::Dir => self.enter_dir(node, name, &rel, reuse_dir),
                Kind::Symlink => self.copy_symlink(node, name, &rel, &st),
                Kind::Fifo => self.make_fifo(node, name, &rel, &st),
                Kind::Other => {
                    tracing::debug!(path = %rel.display(), "skipping a socket or device node");
                    add(&self.stats.skipped, 1);
                    return Ok(());
                }
            };
            match step {
                Ok(()) => return Ok(()),
                Err(Step::Raced) => {}
                Err(Step::Vanished) => return self.vanished(node, name, &rel),
                Err(Step::Failed(e)) => return Err(e),
            }
        }
        Err(VolumeError::Unstable {
            source_root: self.source.to_owned(),
            path: display(&rel),
        })
    }

    /// An entry disappeared from the source while the walk was at it (a live
    /// app deleting a temporary file): not an error; delta mode removes it
    /// from the target too.
    fn vanished(&self, node: &Node, name: &CStr, rel: &Path) -> Result<(), VolumeError> {
        tracing::debug!(path = %rel.display(), "entry vanished from the source during the copy");
        add(&self.stats.skipped, 1);
        if self.cutoff.is_some() {
            let removed = remove_tree(node.dst.as_fd(), name)
                .map_err(|e| self.target_error(rel, "remove", e))?;
            add(&self.stats.removed, removed);
        }
        Ok(())
    }

    fn copy_file(&self, node: &Node, name: &CStr, rel: &Path) -> Result<(), Step> {
        let mut src = match open_read(node.src.as_fd(), name) {
            Ok(file) => file,
            Err(Errno::ENOENT) => return Err(Step::Vanished),
            // Now a symlink (ELOOP) or a socket (ENXIO).
            Err(Errno::ELOOP | Errno::ENXIO) => return Err(Step::Raced),
            Err(e) => return Err(self.source_error(rel, "open", e).into()),
        };
        let st = fstat(src.as_fd()).map_err(|e| self.source_error(rel, "inspect", e))?;
        if kind(&st) != Kind::File {
            return Err(Step::Raced);
        }
        let mut dst =
            create_file(node.dst.as_fd(), name).map_err(|e| self.target_error(rel, "create", e))?;
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let (method, bytes) =
            fsops::copy_data(&mut src, &mut dst, size, &self.fallbacks).map_err(|source| {
                VolumeError::Copy {
                    source_root: self.source.to_owned(),
                    target_root: self.target.to_owned(),
                    path: display(rel),
                    source,
                }
            })?;
        set_meta(dst.as_fd(), &st)
            .map_err(|e| self.target_error(rel, "set owner, mode and times of", e))?;
        add(&self.stats.files, 1);
        add(&self.stats.bytes, bytes);
        match method {
            Method::Reflink => add(&self.stats.reflinked, 1),
            Method::Copy => add(&self.stats.copied, 1),
        }
        Ok(())
    }

    fn enter_dir(
        &self,
        node: &Arc<Node>,
        name: &CStr,
        rel: &Path,
        reuse: bool,
    ) -> Result<(), Step> {
        let src = match open_dir(node.src.as_fd(), name) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(Step::Vanished),
            Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(Step::Raced),
            Err(e) => return Err(self.source_error(rel, "open", e).into()),
        };
        let stat = fstat(src.as_fd()).map_err(|e| self.source_error(rel, "inspect", e))?;
        let depth = node.depth + 1;
        if depth > MAX_DEPTH {
            return Err(Step::Failed(VolumeError::TooDeep {
                source_root: self.source.to_owned(),
                path: display(rel),
                limit: MAX_DEPTH,
            }));
        }
        if !reuse {
            mkdirat(node.dst.as_fd(), name, Mode::from_bits_truncate(0o700))
                .map_err(|e| self.target_error(rel, "create", e))?;
        }
        let dst =
            open_dir(node.dst.as_fd(), name).map_err(|e| self.target_error(rel, "open", e))?;
        add(&self.stats.directories, 1);
        node.pending.fetch_add(1, Ordering::AcqRel);
        let child = Node {
            rel: rel.to_owned(),
            src,
            dst,
            stat,
            depth,
            parent: Some(Arc::clone(node)),
            pending: AtomicUsize::new(1),
        };
        self.push(Job::List(Arc::new(child)));
        Ok(())
    }

    /// Recreates a symlink with the same text; it is never followed.
    fn copy_symlink(
        &self,
        node: &Node,
        name: &CStr,
        rel: &Path,
        st: &FileStat,
    ) -> Result<(), Step> {
        let text = match readlinkat(node.src.as_fd(), name) {
            Ok(text) => text,
            Err(Errno::ENOENT) => return Err(Step::Vanished),
            // No longer a symlink.
            Err(Errno::EINVAL) => return Err(Step::Raced),
            Err(e) => return Err(self.source_error(rel, "read the symlink", e).into()),
        };
        symlinkat(text.as_os_str(), node.dst.as_fd(), name)
            .map_err(|e| self.target_error(rel, "create", e))?;
        set_meta_at(node.dst.as_fd(), name, st)
            .map_err(|e| self.target_error(rel, "set owner and times of", e))?;
        add(&self.stats.files, 1);
        Ok(())
    }

    /// Makes a new FIFO; the source one is never opened.
    fn make_fifo(&self, node: &Node, name: &CStr, rel: &Path, st: &FileStat) -> Result<(), Step> {
        mkfifoat(node.dst.as_fd(), name, permissions(st))
            .map_err(|e| self.target_error(rel, "create", e))?;
        set_meta_at(node.dst.as_fd(), name, st)
            .map_err(|e| self.target_error(rel, "set owner, mode and times of", e))?;
        add(&self.stats.files, 1);
        Ok(())
    }

    fn source_error(&self, rel: &Path, action: &'static str, errno: Errno) -> VolumeError {
        VolumeError::Source {
            root: self.source.to_owned(),
            path: display(rel),
            action,
            source: errno.into(),
        }
    }

    fn target_error(&self, rel: &Path, action: &'static str, errno: Errno) -> VolumeError {
        VolumeError::Target {
            root: self.target.to_owned(),
            path: display(rel),
            action,
            source: errno.into(),
        }
    }
}

fn join(rel: &Path, name: &CStr) -> PathBuf {
    rel.join(OsStr::from_bytes(name.to_bytes()))
}

/// A relative path for messages: `.` for the root.
fn display(rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel.to_owned()
    }
}

/// Whether a target entry can stay as it is in delta mode: same type (not a
/// directory, which is always walked), size, permissions, owner and mtime, and
/// the source has not changed (ctime) since `cutoff`.
fn unchanged(src: &FileStat, dst: &FileStat, cutoff: i128) -> bool {
    let ctime = i128::from(src.st_ctime) * 1_000_000_000 + i128::from(src.st_ctime_nsec);
    kind(src) == kind(dst)
        && !matches!(kind(src), Kind::Dir | Kind::Other)
        && src.st_size == dst.st_size
        && permissions(src).bits() == dst.st_mode & 0o7777
        && src.st_uid == dst.st_uid
        && src.st_gid == dst.st_gid
        && src.st_mtime == dst.st_mtime
        && src.st_mtime_nsec == dst.st_mtime_nsec
        && ctime < cutoff
}
