//! The parallel, fd-relative walk behind [`crate::sync_tree`].
//!
//! Each directory being copied is a [`Node`]: its name in its parent, the
//! device and inode the walk found it as, and a count of unfinished work.
//! Work is a shared LIFO stack of jobs (list a directory, or copy a chunk of
//! its entries), which keeps the walk close to depth-first.
//!
//! # Open fds
//!
//! Nodes and queued jobs hold no fds, so a wide tree cannot make the queue
//! park fds by the hundred. Only the two roots stay open for the whole walk.
//! A thread running a job opens the node's source and target directories
//! from the deepest directory it still has open, or from the roots, one
//! level at a time (`openat` with `O_NOFOLLOW`), checking each source
//! directory's device and inode against what the walk found there; a
//! directory replaced or moved meanwhile is never read as if it were the
//! one found (see [`Reach`]). Each thread keeps the last [`CURSOR_LEVELS`]
//! levels it opened, so moving to a child or a sibling costs one `openat`
//! per tree. While a job runs a thread holds at most, besides those: two
//! fds for a file being copied, one for a listing, or
//! [`REMOVE_DEPTH`](crate::fsops::REMOVE_DEPTH)` + 1` while removing a target
//! subtree. The walk therefore holds at most
//! `2 + threads × (2 × CURSOR_LEVELS + REMOVE_DEPTH + 1)` fds (138 with eight
//! threads; [`crate::sync_tree`] adds one, the target's parent), whatever the
//! width and depth of the tree. (Before the threads start, one more is open
//! for a moment: the unnamed file that finds the target's
//! [`creation_mask`].)
//!
//! A node counts its unfinished jobs and subdirectories; when that reaches
//! zero its owner, mode and times are set (after everything inside it
//! exists, so a read-only directory can still be filled and its mtime is the
//! source's) and its parent is told.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, readlinkat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat, mkdirat};
use nix::unistd::{mkfifoat, symlinkat};

use crate::fsops::{
    self, Budget, CopyError, Fallbacks, Kind, Listed, Method, create_file, creation_mask, kind,
    open_dir, open_read, permissions, read_names, remove_tree, set_meta, set_meta_at,
    set_meta_created,
};
use crate::{Limits, MAX_DEPTH, SyncReport, VolumeError};

/// Entries per copy job. A directory of up to this many entries is copied
/// by one thread, as `cp` would: XFS serialises creates in one directory, so
/// two threads filling it would mostly wait for each other, and parallelism
/// comes from separate directories. Only larger directories are split, so a
/// flat directory of many files still spreads over the threads.
const CHUNK: usize = 1024;

/// How many times an entry whose type changes under the walk (an app
/// swapping a file for a symlink, say) is looked at again before giving up.
const ATTEMPTS: usize = 3;

/// How many levels of open directories (a source and a target fd each) a
/// thread keeps between jobs.
const CURSOR_LEVELS: usize = 4;

/// One directory being copied. Holds no fds.
struct Node {
    /// Its path relative to the roots, for messages; empty for the root.
    rel: PathBuf,
    /// Its name in its parent; empty for the root.
    name: CString,
    parent: Option<Arc<Node>>,
    depth: usize,
    /// Device and inode of the source directory when the walk found it;
    /// every time it is opened again it must still be that one.
    ident: (u64, u64),
    /// The source directory's metadata, from its open fd when it was listed;
    /// unset if it never was (it changed before, and was looked at again or
    /// skipped).
    stat: OnceLock<FileStat>,
    /// Which attempt at its entry in the parent made this node.
    attempt: usize,
    /// Unfinished jobs for this directory plus unfinished subdirectories.
    pending: AtomicUsize,
}

enum Job {
    /// List the node's entries (and, in delta mode, remove stale ones).
    List(Arc<Node>),
    /// Copy these entries of the node.
    Entries(Arc<Node>, Vec<Listed>),
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

/// A source and a target directory, open.
#[derive(Clone, Copy)]
struct Dirs<'a> {
    src: BorrowedFd<'a>,
    dst: BorrowedFd<'a>,
}

/// One level a thread has open.
struct Open {
    node: Arc<Node>,
    src: OwnedFd,
    dst: OwnedFd,
    /// `fstat` of `src` when it was opened.
    stat: FileStat,
}

/// The directories one thread has open between jobs: a chain of at most
/// [`CURSOR_LEVELS`] nodes, each the parent of the next.
#[derive(Default)]
struct Cursor {
    chain: Vec<Open>,
}

impl Cursor {
    fn position(&self, node: &Arc<Node>) -> Option<usize> {
        self.chain.iter().position(|o| Arc::ptr_eq(&o.node, node))
    }

    fn push(&mut self, open: Open) {
        self.chain.push(open);
        if self.chain.len() > CURSOR_LEVELS {
            self.chain.remove(0);
        }
    }
}

/// What opening a node's directories again found.
enum Reach {
    /// They are open: the node is the root, or at the end of the cursor.
    Open,
    /// The node's source directory is gone, or is another directory than the
    /// one the walk found there. Its parent's directories are open.
    Changed,
    /// The directory at this path (relative to the roots), above the node,
    /// is gone or is another one.
    AncestorChanged(PathBuf),
}

struct Walk<'a> {
    source: &'a Path,
    target: &'a Path,
    /// The roots, open for the whole walk.
    root_src: OwnedFd,
    root_dst: OwnedFd,
    /// Delta mode: entries whose source ctime (ns since the epoch) is before
    /// this may be kept.
    cutoff: Option<i128>,
    max_entries: usize,
    /// The bits of a mode that creating a file in the target keeps
    /// ([`creation_mask`]); `None`: unknown, always `fchmod`.
    create_mask: Option<u32>,
    budget: Budget,
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
    limits: Limits,
    threads: usize,
) -> Result<SyncReport, VolumeError> {
    let stat = fstat(src.as_fd()).map_err(|e| VolumeError::Source {
        root: source.to_owned(),
        path: PathBuf::from("."),
        action: "inspect",
        source: e.into(),
    })?;
    let create_mask = creation_mask(dst.as_fd());
    let walk = Walk {
        source,
        target,
        root_src: src,
        root_dst: dst,
        cutoff,
        max_entries: limits.max_entries,
        create_mask,
        budget: Budget::new(limits.max_bytes),
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
    let root = Node {
        rel: PathBuf::new(),
        name: CString::default(),
        parent: None,
        depth: 0,
        ident: (stat.st_dev, stat.st_ino),
        stat: OnceLock::from(stat),
        attempt: 0,
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
        let mut cursor = Cursor::default();
        while let Some(job) = self.next_job() {
            let result = {
                let _guard = PanicGuard(self);
                match job {
                    Job::List(node) => self.list(&mut cursor, node),
                    Job::Entries(node, entries) => self.entries_job(&mut cursor, node, &entries),
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

    /// The open directories of `node`, which [`Self::reach`] opened (or the
    /// roots).
    fn dirs<'c>(&'c self, cursor: &'c Cursor, node: &Arc<Node>) -> Dirs<'c> {
        match cursor.chain.last() {
            Some(open) if node.parent.is_some() => {
                debug_assert!(Arc::ptr_eq(&open.node, node), "the cursor ends at the node");
                Dirs {
                    src: open.src.as_fd(),
                    dst: open.dst.as_fd(),
                }
            }
            _ => Dirs {
                src: self.root_src.as_fd(),
                dst: self.root_dst.as_fd(),
            },
        }
    }

    /// Opens the directories of `node` at the end of `cursor`, down from the
    /// deepest of its ancestors the cursor has open (or the roots), checking
    /// that each source directory is still the one the walk found.
    fn reach(&self, cursor: &mut Cursor, node: &Arc<Node>) -> Result<Reach, VolumeError> {
        // The nodes to open, deepest first.
        let mut path: Vec<&Arc<Node>> = Vec::new();
        let mut at = node;
        let keep = loop {
            if let Some(i) = cursor.position(at) {
                break i + 1;
            }
            match &at.parent {
                Some(parent) => {
                    path.push(at);
                    at = parent;
                }
                // The roots stay open and need no cursor.
                None if path.is_empty() => return Ok(Reach::Open),
                None => break 0,
            }
        };
        cursor.chain.truncate(keep);
        while let Some(next) = path.pop() {
            let changed = || {
                if path.is_empty() {
                    Reach::Changed
                } else {
                    Reach::AncestorChanged(next.rel.clone())
                }
            };
            let parent = match cursor.chain.last() {
                Some(open) => Dirs {
                    src: open.src.as_fd(),
                    dst: open.dst.as_fd(),
                },
                None => Dirs {
                    src: self.root_src.as_fd(),
                    dst: self.root_dst.as_fd(),
                },
            };
            let src = match open_dir(parent.src, &next.name) {
                Ok(fd) => fd,
                Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => return Ok(changed()),
                Err(e) => return Err(self.source_error(&next.rel, "open", e)),
            };
            let stat =
                fstat(src.as_fd()).map_err(|e| self.source_error(&next.rel, "inspect", e))?;
            if (stat.st_dev, stat.st_ino) != next.ident {
                return Ok(changed());
            }
            let dst = open_dir(parent.dst, &next.name)
                .map_err(|e| self.target_error(&next.rel, "open", e))?;
            cursor.push(Open {
                node: Arc::clone(next),
                src,
                dst,
                stat,
            });
        }
        Ok(Reach::Open)
    }

    /// Calls `f` with the target directory of `node`, opened (without the
    /// source) down from the deepest of its ancestors `cursor` has open.
    fn at_target<R>(
        &self,
        cursor: &Cursor,
        node: &Arc<Node>,
        f: impl FnOnce(BorrowedFd<'_>) -> nix::Result<R>,
    ) -> nix::Result<R> {
        let mut path: Vec<&CStr> = Vec::new();
        let mut at = node;
        let base = loop {
            if let Some(i) = cursor.position(at) {
                break cursor.chain[i].dst.as_fd();
            }
            match &at.parent {
                Some(parent) => {
                    path.push(&at.name);
                    at = parent;
                }
                None => break self.root_dst.as_fd(),
            }
        };
        let Some(first) = path.pop() else {
            return f(base);
        };
        let mut fd = open_dir(base, first)?;
        while let Some(name) = path.pop() {
            fd = open_dir(fd.as_fd(), name)?;
        }
        f(fd.as_fd())
    }

    /// Lists `node`, removes (delta mode) what the target has and the source
    /// does not, queues all chunks of entries but the first and copies that
    /// one itself.
    fn list(&self, cursor: &mut Cursor, node: Arc<Node>) -> Result<(), VolumeError> {
        match self.reach(cursor, &node)? {
            Reach::Open => {}
            Reach::Changed => return self.look_again(cursor, node),
            Reach::AncestorChanged(rel) => {
                self.changed_under(&rel, 1)?;
                return self.release(cursor, node);
            }
        }
        if let Some(open) = cursor.chain.last()
            && node.parent.is_some()
        {
            let _ = node.stat.set(open.stat);
        }
        let dirs = self.dirs(cursor, &node);
        let entries = self.names(dirs.src, &node.rel, true)?;
        if self.cutoff.is_some() {
            let wanted: HashSet<&CStr> = entries.iter().map(|e| e.name.as_c_str()).collect();
            let existing = self.names(dirs.dst, &node.rel, false)?;
            for name in existing
                .iter()
                .map(|e| e.name.as_c_str())
                .filter(|n| !wanted.contains(n))
            {
                let removed = remove_tree(dirs.dst, name)
                    .map_err(|e| self.target_error(&join(&node.rel, name), "remove", e))?;
                add(&self.stats.removed, removed);
            }
        }
        let mut chunks = entries.chunks(CHUNK);
        let first = chunks.next();
        for chunk in chunks {
            node.pending.fetch_add(1, Ordering::AcqRel);
            self.push(Job::Entries(Arc::clone(&node), chunk.to_vec()));
        }
        if let Some(first) = first {
            self.entries(&node, dirs, first)?;
        }
        self.release(cursor, node)
    }

    /// The entries of a directory of the source (`in_source`) or the
    /// target, refusing more than the limit.
    fn names(
        &self,
        dir: BorrowedFd<'_>,
        rel: &Path,
        in_source: bool,
    ) -> Result<Vec<Listed>, VolumeError> {
        let listing = read_names(dir, self.max_entries).map_err(|e| {
            if in_source {
                self.source_error(rel, "list", e)
            } else {
                self.target_error(rel, "list", e)
            }
        })?;
        if listing.truncated {
            return Err(VolumeError::TooManyEntries {
                root: if in_source { self.source } else { self.target }.to_owned(),
                path: display(rel),
                limit: self.max_entries,
            });
        }
        Ok(listing.entries)
    }

    /// A directory changed between the moment the walk found it and the
    /// moment it was opened to be listed: its entry in the parent is looked
    /// at again, from scratch, up to [`ATTEMPTS`] times in all, after which
    /// it is treated as one moved away ([`Self::changed_under`]).
    fn look_again(&self, cursor: &Cursor, node: Arc<Node>) -> Result<(), VolumeError> {
        let Some(parent) = node.parent.clone() else {
            // The roots are never opened again.
            return self.release(cursor, node);
        };
        tracing::debug!(path = %node.rel.display(), "directory changed before it was listed; looking again");
        let dirs = self.dirs(cursor, &parent);
        // Nothing else writes into the copy: its only job is this one.
        remove_tree(dirs.dst, &node.name)
            .map_err(|e| self.target_error(&node.rel, "replace", e))?;
        self.stats.directories.fetch_sub(1, Ordering::Relaxed);
        if node.attempt + 1 < ATTEMPTS {
            self.entry(&parent, dirs, &node.name, None, node.attempt + 1)?;
        } else {
            // Replaced again and again: as if moved away.
            self.changed_under(&node.rel, 1)?;
        }
        self.release(cursor, node)
    }

    /// Directory `rel` changed after the walk listed it, under `entries`
    /// entries still to copy. A live app moving directories around during
    /// the full pass: those entries are skipped, and the delta pass copies
    /// them. During the delta pass the app must be paused: an error.
    fn changed_under(&self, rel: &Path, entries: usize) -> Result<(), VolumeError> {
        if self.cutoff.is_some() {
            return Err(VolumeError::Unstable {
                source_root: self.source.to_owned(),
                path: display(rel),
            });
        }
        tracing::debug!(path = %rel.display(), entries, "directory moved or replaced during the copy; skipping entries below it");
        add(&self.stats.skipped, entries as u64);
        Ok(())
    }

    fn entries_job(
        &self,
        cursor: &mut Cursor,
        node: Arc<Node>,
        entries: &[Listed],
    ) -> Result<(), VolumeError> {
        match self.reach(cursor, &node)? {
            Reach::Open => {
                let dirs = self.dirs(cursor, &node);
                self.entries(&node, dirs, entries)?;
            }
            Reach::Changed => self.changed_under(&node.rel, entries.len())?,
            Reach::AncestorChanged(rel) => self.changed_under(&rel, entries.len())?,
        }
        self.release(cursor, node)
    }

    fn entries(
        &self,
        node: &Arc<Node>,
        dirs: Dirs<'_>,
        entries: &[Listed],
    ) -> Result<(), VolumeError> {
        for entry in entries {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            self.entry(node, dirs, &entry.name, entry.kind, 0)?;
        }
        Ok(())
    }

    /// One job of `node` is done; when it was the last, sets the directory's
    /// metadata and tells its parent, up the tree.
    fn release(&self, cursor: &Cursor, node: Arc<Node>) -> Result<(), VolumeError> {
        let mut node = node;
        loop {
            if node.pending.fetch_sub(1, Ordering::AcqRel) != 1 || self.stop.load(Ordering::Relaxed)
            {
                return Ok(());
            }
            if let Some(stat) = node.stat.get() {
                self.at_target(cursor, &node, |fd| set_meta(fd, stat))
                    .map_err(|e| self.target_error(&node.rel, "set owner, mode and times of", e))?;
            }
            match node.parent.clone() {
                Some(parent) => node = parent,
                None => return Ok(()),
            }
        }
    }

    /// Copies entry `name` of `node` (open as `dirs`), looking again if it
    /// changes type under the walk; `attempt` attempts were made already.
    /// `listed`: its kind from the listing, if known.
    ///
    /// In full mode an entry listed as a regular file is opened at once,
    /// without an `lstat` first: the `fstat` of the open fd is what decides
    /// (see [`Self::copy_file`]), so the `lstat` would only say it twice. An
    /// entry replaced since the listing (by a FIFO, a directory, a symlink)
    /// is then looked at with `lstat` like any other, and that first try does
    /// not count as an attempt. Every other entry, an unknown kind
    /// (`DT_UNKNOWN`) included, and every entry in delta mode (which compares
    /// ctimes) gets the `lstat`.
    fn entry(
        &self,
        node: &Arc<Node>,
        dirs: Dirs<'_>,
        name: &CStr,
        listed: Option<Kind>,
        attempt: usize,
    ) -> Result<(), VolumeError> {
        let rel = join(&node.rel, name);
        if self.cutoff.is_none() && listed == Some(Kind::File) {
            match self.copy_file(dirs, name, &rel) {
                Ok(()) => return Ok(()),
                Err(Step::Raced) => {}
                Err(Step::Vanished) => return self.vanished(dirs, name, &rel),
                Err(Step::Failed(e)) => return Err(e),
            }
        }
        for attempt in attempt..ATTEMPTS {
            let st = match fstatat(dirs.src, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => return self.vanished(dirs, name, &rel),
                Err(e) => return Err(self.source_error(&rel, "inspect", e)),
            };
            let mut reuse_dir = false;
            if let Some(cutoff) = self.cutoff {
                match fstatat(dirs.dst, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(existing) if kind(&st) == Kind::Dir && kind(&existing) == Kind::Dir => {
                        reuse_dir = true;
                    }
                    Ok(existing) if unchanged(&st, &existing, cutoff) => {
                        add(&self.stats.kept, 1);
                        add(&self.stats.files, 1);
                        return Ok(());
                    }
                    Ok(_) => {
                        remove_tree(dirs.dst, name)
                            .map_err(|e| self.target_error(&rel, "replace", e))?;
                    }
                    Err(Errno::ENOENT) => {}
                    Err(e) => return Err(self.target_error(&rel, "inspect", e)),
                }
            }
            let step = match kind(&st) {
                Kind::File => self.copy_file(dirs, name, &rel),
                Kind::Dir => self.enter_dir(node, dirs, name, rel.clone(), &st, reuse_dir, attempt),
                Kind::Symlink => self.copy_symlink(dirs, name, &rel, &st),
                Kind::Fifo => self.make_fifo(dirs, name, &rel, &st),
                Kind::Other => {
                    tracing::debug!(path = %rel.display(), "skipping a socket or device node");
                    add(&self.stats.skipped, 1);
                    return Ok(());
                }
            };
            match step {
                Ok(()) => return Ok(()),
                Err(Step::Raced) => {}
                Err(Step::Vanished) => return self.vanished(dirs, name, &rel),
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
    fn vanished(&self, dirs: Dirs<'_>, name: &CStr, rel: &Path) -> Result<(), VolumeError> {
        tracing::debug!(path = %rel.display(), "entry vanished from the source during the copy");
        add(&self.stats.skipped, 1);
        if self.cutoff.is_some() {
            let removed =
                remove_tree(dirs.dst, name).map_err(|e| self.target_error(rel, "remove", e))?;
            add(&self.stats.removed, removed);
        }
        Ok(())
    }

    /// Copies regular file `name`. Opened `O_NOFOLLOW | O_NONBLOCK`, so a
    /// symlink swapped in fails and a FIFO cannot block; its `fstat` must say
    /// it is a regular file before anything is read or created, and its
    /// metadata comes from that `fstat`. The copy is created with the
    /// source's permissions, and `fchmod`ed only if creation took bits away.
    fn copy_file(&self, dirs: Dirs<'_>, name: &CStr, rel: &Path) -> Result<(), Step> {
        let src = match open_read(dirs.src, name) {
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
        let dst = create_file(dirs.dst, name, permissions(&st))
            .map_err(|e| self.target_error(rel, "create", e))?;
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let (method, bytes) = fsops::copy_data(&src, &dst, size, &self.fallbacks, &self.budget)
            .map_err(|e| match e {
                CopyError::TooLarge => VolumeError::TooLarge {
                    limit: self.budget.limit().unwrap_or(0),
                },
                CopyError::Io(source) => VolumeError::Copy {
                    source_root: self.source.to_owned(),
                    target_root: self.target.to_owned(),
                    path: display(rel),
                    source,
                },
            })?;
        set_meta_created(dst.as_fd(), &st, self.create_mask)
            .map_err(|e| self.target_error(rel, "set owner, mode and times of", e))?;
        add(&self.stats.files, 1);
        add(&self.stats.bytes, bytes);
        match method {
            Method::Reflink => add(&self.stats.reflinked, 1),
            Method::Copy => add(&self.stats.copied, 1),
        }
        Ok(())
    }

    /// Creates the copy of directory `name` (unless `reuse`: delta mode, it
    /// exists) and queues its listing. Opens nothing: the job opens the
    /// directory when it runs, and checks that it is still the one `st`
    /// describes.
    #[allow(clippy::too_many_arguments)]
    fn enter_dir(
        &self,
        node: &Arc<Node>,
        dirs: Dirs<'_>,
        name: &CStr,
        rel: PathBuf,
        st: &FileStat,
        reuse: bool,
        attempt: usize,
    ) -> Result<(), Step> {
        let depth = node.depth + 1;
        if depth > MAX_DEPTH {
            return Err(Step::Failed(VolumeError::TooDeep {
                source_root: self.source.to_owned(),
                path: display(&rel),
                limit: MAX_DEPTH,
            }));
        }
        if !reuse {
            mkdirat(dirs.dst, name, Mode::from_bits_truncate(0o700))
                .map_err(|e| self.target_error(&rel, "create", e))?;
        }
        add(&self.stats.directories, 1);
        node.pending.fetch_add(1, Ordering::AcqRel);
        let child = Node {
            rel,
            name: name.to_owned(),
            parent: Some(Arc::clone(node)),
            depth,
            ident: (st.st_dev, st.st_ino),
            stat: OnceLock::new(),
            attempt,
            pending: AtomicUsize::new(1),
        };
        self.push(Job::List(Arc::new(child)));
        Ok(())
    }

    /// Recreates a symlink with the same text; it is never followed.
    fn copy_symlink(
        &self,
        dirs: Dirs<'_>,
        name: &CStr,
        rel: &Path,
        st: &FileStat,
    ) -> Result<(), Step> {
        let text = match readlinkat(dirs.src, name) {
            Ok(text) => text,
            Err(Errno::ENOENT) => return Err(Step::Vanished),
            // No longer a symlink.
            Err(Errno::EINVAL) => return Err(Step::Raced),
            Err(e) => return Err(self.source_error(rel, "read the symlink", e).into()),
        };
        symlinkat(text.as_os_str(), dirs.dst, name)
            .map_err(|e| self.target_error(rel, "create", e))?;
        set_meta_at(dirs.dst, name, st)
            .map_err(|e| self.target_error(rel, "set owner and times of", e))?;
        add(&self.stats.files, 1);
        Ok(())
    }

    /// Makes a new FIFO; the source one is never opened.
    fn make_fifo(
        &self,
        dirs: Dirs<'_>,
        name: &CStr,
        rel: &Path,
        st: &FileStat,
    ) -> Result<(), Step> {
        mkfifoat(dirs.dst, name, permissions(st))
            .map_err(|e| self.target_error(rel, "create", e))?;
        set_meta_at(dirs.dst, name, st)
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
