//! `sync_tree` on the real filesystem (run as root: files are chowned).
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{
    FileExt as _, MetadataExt as _, PermissionsExt as _, chown, lchown, symlink,
};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use launchway_volumes::{
    CTIME_MARGIN, MAX_DEPTH, SyncMode, SyncReport, VolumeError, supports_reflink, sync_tree,
    sync_tree_limited,
};
use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{Mode, UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

/// One entry as a test compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Not for directories, whose size depends on their history.
    size: Option<u64>,
    mtime: (i64, i64),
    /// Not for directories and symlinks: listing or reading one updates its
    /// atime, and there is no `O_NOATIME` for `readlink`.
    atime: Option<(i64, i64)>,
    /// A hash of a regular file's content, up to 256 MiB (tests check the
    /// content of larger, sparse files themselves).
    content: Option<u64>,
    link: Option<PathBuf>,
}

/// Every entry below `root`, by relative path; metadata is read before any
/// content, so reading does not disturb the atimes compared.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            let meta = fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else if std::os::unix::fs::FileTypeExt::is_fifo(&ft) {
                "fifo"
            } else {
                "other"
            };
            let entry = Entry {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                size: (kind != "dir").then_some(meta.size()),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                atime: (kind != "dir" && kind != "symlink")
                    .then_some((meta.atime(), meta.atime_nsec())),
                content: None,
                link: (kind == "symlink").then(|| fs::read_link(&path).unwrap()),
            };
            out.insert(path.strip_prefix(root).unwrap().to_owned(), entry);
            if kind == "dir" {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    for (rel, entry) in &mut out {
        if entry.kind == "file" && entry.size.unwrap_or(0) <= 256 << 20 {
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&fs::read(root.join(rel)).unwrap(), &mut hasher);
            entry.content = Some(std::hash::Hasher::finish(&hasher));
        }
    }
    out
}

/// What a copy of `source` must look like: no sockets, no setuid/setgid.
fn expected(source: &BTreeMap<PathBuf, Entry>) -> BTreeMap<PathBuf, Entry> {
    source
        .iter()
        .filter(|(_, e)| e.kind != "other")
        .map(|(p, e)| {
            let mut e = e.clone();
            e.mode &= !0o6000;
            (p.clone(), e)
        })
        .collect()
}

fn assert_same_tree(source: &Path, target: &Path) {
    let want = expected(&snapshot(source));
    let got = snapshot(target);
    for (path, entry) in &want {
        assert_eq!(got.get(path), Some(entry), "{} differs", path.display());
    }
    let extra: Vec<_> = got.keys().filter(|p| !want.contains_key(*p)).collect();
    assert!(extra.is_empty(), "target has extra entries {extra:?}");
    let root_want = fs::metadata(source).unwrap();
    let root_got = fs::metadata(target).unwrap();
    assert_eq!(
        root_got.mode() & 0o7777,
        root_want.mode() & 0o1777,
        "root mode"
    );
    assert_eq!(
        (root_got.uid(), root_got.gid()),
        (root_want.uid(), root_want.gid()),
        "root owner"
    );
    assert_eq!(
        (root_got.mtime(), root_got.mtime_nsec()),
        (root_want.mtime(), root_want.mtime_nsec()),
        "root mtime"
    );
}

fn set_times(path: &Path, sec: i64, nsec: i64) {
    let atime = TimeSpec::new(sec - 1000, nsec / 2);
    let mtime = TimeSpec::new(sec, nsec);
    utimensat(
        AT_FDCWD,
        path,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn write(path: &Path, content: &[u8], mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A source tree with every kind of entry; returns its root.
fn populate(root: &Path) -> PathBuf {
    let src = root.join("src");
    fs::create_dir_all(src.join("a/b/c")).unwrap();
    fs::create_dir(src.join("empty")).unwrap();
    fs::create_dir(src.join("readonly")).unwrap();
    write(&src.join("plain.txt"), b"hello\n", 0o644);
    write(&src.join("secret"), b"s3cret", 0o600);
    write(&src.join("tool"), b"#!/bin/sh\necho hi\n", 0o4755);
    write(&src.join("shared"), b"group", 0o2775);
    write(&src.join("empty-file"), b"", 0o640);
    let big: Vec<u8> = (0..3_000_000_u32).map(|i| (i % 251) as u8).collect();
    write(&src.join("a/b/c/big.bin"), &big, 0o644);
    write(&src.join("a/b/owned"), b"app data", 0o664);
    write(&src.join("readonly/inside"), b"in a read-only dir", 0o444);
    symlink("/etc", src.join("etc-link")).unwrap();
    symlink("nowhere/at/all", src.join("dangling")).unwrap();
    symlink("../plain.txt", src.join("a/relative")).unwrap();
    nix::unistd::mkfifo(&src.join("a/pipe"), Mode::from_bits_truncate(0o620)).unwrap();
    let _socket = UnixListener::bind(src.join("a/socket")).unwrap();
    for path in ["a/b/owned", "a/b", "empty", "a/pipe", "readonly/inside"] {
        chown(src.join(path), Some(10000), Some(10000)).unwrap();
    }
    lchown(src.join("dangling"), Some(10000), Some(10001)).unwrap();
    fs::set_permissions(src.join("empty"), fs::Permissions::from_mode(0o700)).unwrap();
    // Times last, innermost first, so creating entries does not move them.
    let mut n = 0;
    for path in [
        "plain.txt",
        "secret",
        "tool",
        "shared",
        "empty-file",
        "a/b/c/big.bin",
        "a/b/owned",
        "readonly/inside",
        "etc-link",
        "dangling",
        "a/relative",
        "a/pipe",
        "a/b/c",
        "a/b",
        "empty",
        "readonly",
        "a",
    ] {
        n += 1;
        set_times(&src.join(path), 1_600_000_000 + n * 3600, 123_456_789 + n);
    }
    fs::set_permissions(src.join("readonly"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o751)).unwrap();
    set_times(&src, 1_500_000_000, 42);
    src
}

#[test]
fn full_copy_preserves_contents_modes_owners_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let src = populate(dir.path());
    let dst = dir.path().join("dst");

    let report = sync_tree(&src, &dst, SyncMode::Full).unwrap();

    assert_same_tree(&src, &dst);
    assert_eq!(
        fs::read_link(dst.join("etc-link")).unwrap(),
        Path::new("/etc")
    );
    assert!(!dst.join("a/socket").exists());
    assert_eq!(
        fs::metadata(dst.join("tool")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        fs::metadata(dst.join("shared")).unwrap().mode() & 0o7777,
        0o775
    );
    let source = snapshot(&src);
    let regular: Vec<_> = source.values().filter(|e| e.kind == "file").collect();
    assert_eq!(regular.len(), 8);
    assert_eq!(
        report.files,
        8 + 3 + 1,
        "files, symlinks, the FIFO: {report:?}"
    );
    assert_eq!(report.directories, 5, "{report:?}");
    assert_eq!(report.skipped, 1, "the socket: {report:?}");
    assert_eq!(report.reflinked + report.copied, 8, "{report:?}");
    assert_eq!(
        report.bytes,
        regular.iter().map(|e| e.size.unwrap()).sum::<u64>()
    );
    assert_eq!((report.kept, report.removed), (0, 0));
}

#[test]
fn a_symlink_to_etc_is_copied_as_a_link_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    symlink("/etc", src.join("a")).unwrap();
    fs::create_dir(src.join("b")).unwrap();
    symlink("/etc/passwd", src.join("b/passwd")).unwrap();
    let dst = dir.path().join("dst");

    sync_tree(&src, &dst, SyncMode::Full).unwrap();

    assert!(
        fs::symlink_metadata(dst.join("a"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_link(dst.join("a")).unwrap(), Path::new("/etc"));
    assert!(
        fs::symlink_metadata(dst.join("b/passwd"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let entries: Vec<_> = snapshot(&dst).into_keys().collect();
    assert_eq!(entries, [PathBuf::from("a"), "b".into(), "b/passwd".into()]);
}

/// An app swapping a directory for a symlink to `/etc` while the copy runs:
/// whatever the timing, nothing from `/etc` lands in the target.
#[test]
fn a_directory_swapped_for_a_symlink_mid_copy_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("d/sub")).unwrap();
    for i in 0..50 {
        fs::write(src.join(format!("d/f{i}")), format!("app-data {i}")).unwrap();
        fs::write(src.join(format!("d/sub/g{i}")), format!("app-data {i}")).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (src, stop) = (src.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut swaps = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                fs::rename(src.join("d"), src.join("d.real")).unwrap();
                symlink("/etc", src.join("d")).unwrap();
                fs::remove_file(src.join("d")).unwrap();
                fs::rename(src.join("d.real"), src.join("d")).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let (mut ok, mut failed, mut as_link) = (0, 0, 0);
    for round in 0..40 {
        let dst = dir.path().join(format!("dst{round}"));
        match sync_tree(&src, &dst, SyncMode::Full) {
            Ok(_) => ok += 1,
            Err(VolumeError::Unstable { .. }) => {
                failed += 1;
                assert!(!dst.exists(), "a failed copy leaves nothing");
                continue;
            }
            Err(e) => panic!("{e}"),
        }
        for (path, entry) in snapshot(&dst) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.starts_with('f')
                    || name.starts_with('g')
                    || ["d", "d.real", "sub"].contains(&name.as_str()),
                "{} came from elsewhere",
                path.display()
            );
            if entry.kind == "symlink" {
                assert_eq!(entry.link.as_deref(), Some(Path::new("/etc")));
                as_link += 1;
            }
            if entry.kind == "file" && entry.size.unwrap_or(0) <= 256 << 20 {
                let content = fs::read(dst.join(&path)).unwrap();
                assert!(content.starts_with(b"app-data"), "{}", path.display());
            }
        }
        fs::remove_dir_all(&dst).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    println!(
        "{ok} copies ({as_link} caught `d` as a link), {failed} gave up on an unstable entry, \
         {swaps} swaps"
    );
}

/// Entries per copy job in the walk: directories larger than this are split
/// over several jobs.
const CHUNK: usize = 1024;

/// An app swapping two directories while the copy runs: the walk opens
/// directories again by name when it gets to them, and must never list one in
/// the place of the other. Each copied directory holds the files of one
/// source directory only (more than one chunk of them, so several jobs open
/// it).
#[test]
fn directories_swapped_mid_copy_are_never_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for side in ["a", "b"] {
        for sub in ["", "/sub", "/sub/deeper"] {
            let d = src.join(format!("{side}{sub}"));
            fs::create_dir_all(&d).unwrap();
            for i in 0..CHUNK + 100 {
                fs::write(d.join(format!("{side}{i}")), side).unwrap();
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (src, stop) = (src.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut swaps = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                fs::rename(src.join("a"), src.join("t")).unwrap();
                fs::rename(src.join("b"), src.join("a")).unwrap();
                fs::rename(src.join("t"), src.join("b")).unwrap();
                fs::rename(src.join("a/sub"), src.join("a/t")).unwrap();
                fs::rename(src.join("a/t"), src.join("a/sub")).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let (mut skipped, mut unstable) = (0, 0);
    for round in 0..30 {
        let dst = dir.path().join(format!("dst{round}"));
        match sync_tree(&src, &dst, SyncMode::Full) {
            Ok(report) => skipped += report.skipped,
            Err(VolumeError::Unstable { .. }) => {
                unstable += 1;
                continue;
            }
            Err(e) => panic!("{e}"),
        }
        let mut by_dir: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
        for (path, entry) in snapshot(&dst) {
            if entry.kind == "file" {
                let side = fs::read_to_string(dst.join(&path)).unwrap();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                assert!(name.starts_with(&side), "{}", path.display());
                by_dir
                    .entry(path.parent().unwrap().to_owned())
                    .or_default()
                    .push(side);
            }
        }
        for (parent, sides) in by_dir {
            assert!(
                sides.iter().all(|s| *s == sides[0]),
                "{} mixes directories",
                parent.display()
            );
        }
        fs::remove_dir_all(&dst).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    println!("{skipped} entries skipped, {unstable} copies gave up, {swaps} swaps");
}

/// Lets the clock move past `CTIME_MARGIN` so what was written before counts
/// as unchanged (ctime cannot be set).
#[allow(clippy::disallowed_methods)]
fn wait_past_margin() {
    std::thread::sleep(CTIME_MARGIN + Duration::from_millis(100));
}

#[test]
fn delta_after_full_copies_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let src = populate(dir.path());
    fs::create_dir(src.join("gone-dir")).unwrap();
    fs::write(src.join("gone-dir/x"), "x").unwrap();
    fs::create_dir(src.join("becomes-link")).unwrap();
    fs::write(src.join("becomes-link/y"), "y").unwrap();
    let dst = dir.path().join("dst");
    sync_tree(&src, &dst, SyncMode::Full).unwrap();
    let kept_inode = fs::metadata(dst.join("a/b/c/big.bin")).unwrap().ino();
    wait_past_margin();

    let before = SystemTime::now();
    // Same size, new content, mtime set back: only ctime tells.
    let old = fs::metadata(src.join("plain.txt"))
        .unwrap()
        .modified()
        .unwrap();
    fs::write(src.join("plain.txt"), b"HELLO\n").unwrap();
    let file = fs::File::options()
        .write(true)
        .open(src.join("plain.txt"))
        .unwrap();
    file.set_modified(old).unwrap();
    drop(file);
    fs::write(src.join("new-file"), b"new").unwrap();
    fs::remove_file(src.join("secret")).unwrap();
    fs::remove_file(src.join("empty-file")).unwrap();
    fs::create_dir(src.join("empty-file")).unwrap();
    fs::write(src.join("empty-file/inside"), b"now a directory").unwrap();
    fs::remove_dir_all(src.join("gone-dir")).unwrap();
    fs::remove_dir_all(src.join("becomes-link")).unwrap();
    symlink("a/b", src.join("becomes-link")).unwrap();
    fs::set_permissions(src.join("a/b/owned"), fs::Permissions::from_mode(0o600)).unwrap();
    // A link in the target where the source now has a directory.
    fs::create_dir(src.join("a/b/c/deeper")).unwrap();
    fs::write(src.join("a/b/c/deeper/z"), "z").unwrap();
    symlink("/etc", dst.join("a/b/c/deeper")).unwrap();

    let report = sync_tree(
        &src,
        &dst,
        SyncMode::Delta {
            unchanged_before: before,
        },
    )
    .unwrap();

    assert_same_tree(&src, &dst);
    assert_eq!(fs::read(dst.join("plain.txt")).unwrap(), b"HELLO\n");
    assert_eq!(
        fs::metadata(dst.join("a/b/c/big.bin")).unwrap().ino(),
        kept_inode
    );
    assert!(report.kept >= 8, "{report:?}");
    // secret, gone-dir and its file
    assert_eq!(report.removed, 3, "{report:?}");
    assert_eq!(report.skipped, 1, "the socket: {report:?}");
}

#[test]
fn full_replaces_an_existing_target_without_following_its_links() {
    let dir = tempfile::tempdir().unwrap();
    let src = populate(dir.path());
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), "keep").unwrap();
    let dst = dir.path().join("dst");
    fs::create_dir_all(dst.join("old/deep")).unwrap();
    fs::write(dst.join("old/deep/junk"), "junk").unwrap();
    symlink(&outside, dst.join("a")).unwrap();

    sync_tree(&src, &dst, SyncMode::Full).unwrap();
    assert_same_tree(&src, &dst);
    assert_eq!(fs::read(outside.join("keep")).unwrap(), b"keep");

    // The target root itself a symlink: replaced, not written through.
    let dst2 = dir.path().join("dst2");
    symlink(&outside, &dst2).unwrap();
    sync_tree(&src, &dst2, SyncMode::Full).unwrap();
    assert!(fs::symlink_metadata(&dst2).unwrap().is_dir());
    assert_same_tree(&src, &dst2);
    let outside_names: Vec<_> = snapshot(&outside).into_keys().collect();
    assert_eq!(outside_names, [PathBuf::from("keep")]);
}

#[test]
fn a_missing_source_gives_an_empty_target_in_full_and_an_error_in_delta() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("never-written");
    let dst = dir.path().join("dst");
    fs::create_dir(&dst).unwrap();
    fs::write(dst.join("stale"), "stale").unwrap();

    let report = sync_tree(&src, &dst, SyncMode::Full).unwrap();
    assert_eq!(
        report.files + report.directories + report.bytes,
        0,
        "{report:?}"
    );
    assert!(fs::metadata(&dst).unwrap().is_dir());
    assert_eq!(fs::read_dir(&dst).unwrap().count(), 0);

    // The parent's data removed between the passes: an error, and the
    // target is left as it was.
    fs::create_dir_all(dst.join("x/y")).unwrap();
    let delta = SyncMode::Delta {
        unchanged_before: SystemTime::now(),
    };
    let error = sync_tree(&src, &dst, delta).unwrap_err();
    assert!(
        matches!(&error, VolumeError::SourceMissing { path } if path == &src),
        "{error:?}"
    );
    assert!(error.to_string().contains("no longer exists"), "{error}");
    assert!(dst.join("x/y").is_dir());

    let missing = dir.path().join("never-made");
    let error = sync_tree(&src, &missing, delta).unwrap_err();
    assert!(
        matches!(error, VolumeError::SourceMissing { .. }),
        "{error:?}"
    );
    assert!(!missing.exists());
}

#[test]
fn a_source_root_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    fs::create_dir(&real).unwrap();
    fs::write(real.join("f"), "f").unwrap();
    let src = dir.path().join("src");
    symlink(&real, &src).unwrap();
    let dst = dir.path().join("dst");

    let error = sync_tree(&src, &dst, SyncMode::Full).unwrap_err();
    assert!(
        matches!(error, VolumeError::SourceSymlink { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&*src.to_string_lossy()),
        "{error}"
    );
    assert!(!dst.exists());

    let file = dir.path().join("file");
    fs::write(&file, "").unwrap();
    let error = sync_tree(&file, &dst, SyncMode::Full).unwrap_err();
    assert!(
        matches!(error, VolumeError::SourceNotDirectory { .. }),
        "{error:?}"
    );
}

#[test]
fn a_target_whose_parent_is_a_file_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = populate(dir.path());
    let parent = dir.path().join("a-file");
    fs::write(&parent, "").unwrap();

    let error = sync_tree(&src, &parent.join("dst"), SyncMode::Full).unwrap_err();
    assert!(
        matches!(error, VolumeError::PrepareTarget { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("a-file/dst"), "{error}");
    assert_eq!(fs::read(&parent).unwrap(), b"");
}

#[test]
fn a_failure_mid_copy_removes_the_partial_target() {
    let dir = tempfile::tempdir().unwrap();
    let src = populate(dir.path());
    let mut deep = src.join("nest");
    for _ in 0..=MAX_DEPTH {
        deep.push("n");
    }
    fs::create_dir_all(&deep).unwrap();
    let dst = dir.path().join("dst");

    let error = sync_tree(&src, &dst, SyncMode::Full).unwrap_err();
    assert!(matches!(error, VolumeError::TooDeep { .. }), "{error:?}");
    assert!(error.to_string().contains("nest/n/n/n"), "{error}");
    assert!(!dst.exists(), "the partial copy is gone");
}

#[test]
fn overlapping_source_and_target_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = populate(dir.path());
    // Reading contents for the snapshot moves atimes: leave them out.
    let contents = |root: &Path| {
        let mut tree = snapshot(root);
        tree.values_mut().for_each(|e| e.atime = None);
        tree
    };
    let before = contents(&src);
    for target in [src.clone(), src.join("a/inside"), dir.path().to_owned()] {
        let error = sync_tree(&src, &target, SyncMode::Full).unwrap_err();
        assert!(
            matches!(error, VolumeError::Overlap { .. }),
            "{}: {error:?}",
            target.display()
        );
    }
    assert_eq!(contents(&src), before);
}

/// An app swapping a regular file and a FIFO at one name while the copy
/// runs, so the walk finds one where its listing (`d_type`) or `lstat` said
/// the other: it never blocks, never reads the FIFO (the bytes waiting in it
/// are all still there), and copies either the file, whole, or a new FIFO.
#[test]
fn a_fifo_swapped_in_for_a_file_is_never_read() {
    use nix::fcntl::{OFlag, RenameFlags, open, renameat2};

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let hidden = dir.path().join("hidden");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::create_dir(&hidden).unwrap();
    // Entries around it, so time passes between the listing and the open.
    for i in 0..100 {
        fs::write(src.join(format!("d/f{i}")), format!("file {i}")).unwrap();
    }
    fs::write(src.join("d/swap"), "the file's data").unwrap();
    nix::unistd::mkfifo(&hidden.join("swap"), Mode::from_bits_truncate(0o644)).unwrap();
    // Open at both ends (never blocks), holding bytes an app wrote.
    let pipe = fs::File::from(
        open(
            &hidden.join("swap"),
            OFlag::O_RDWR | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .unwrap(),
    );
    let waiting = b"bytes for the app's reader";
    std::io::Write::write_all(&mut &pipe, waiting).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (src, hidden, stop) = (src.clone(), hidden.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut swaps = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                renameat2(
                    AT_FDCWD,
                    &hidden.join("swap"),
                    AT_FDCWD,
                    &src.join("d/swap"),
                    RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let (mut as_file, mut as_fifo, mut unstable) = (0, 0, 0);
    for round in 0..50 {
        let dst = dir.path().join(format!("dst{round}"));
        match sync_tree(&src, &dst, SyncMode::Full) {
            Ok(_) => {}
            Err(VolumeError::Unstable { .. }) => {
                unstable += 1;
                continue;
            }
            Err(e) => panic!("{e}"),
        }
        let copy = dst.join("d/swap");
        let ft = fs::symlink_metadata(&copy).unwrap().file_type();
        if ft.is_file() {
            assert_eq!(fs::read(&copy).unwrap(), b"the file's data");
            as_file += 1;
        } else {
            assert!(std::os::unix::fs::FileTypeExt::is_fifo(&ft), "{ft:?}");
            as_fifo += 1;
        }
        assert_eq!(fs::read_dir(dst.join("d")).unwrap().count(), 101);
        fs::remove_dir_all(&dst).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();

    let mut back = vec![0; 100];
    let n = std::io::Read::read(&mut &pipe, &mut back).unwrap();
    assert_eq!(&back[..n], waiting, "the FIFO was read");
    println!(
        "{as_file} copies of the file, {as_fifo} of the FIFO, {unstable} unstable, {swaps} swaps"
    );
    assert!(as_file + as_fifo > 0);
}

/// A directory larger than a chunk is copied by several jobs: every entry
/// (files, directories, symlinks) gets there, and a delta pass over it
/// removes and replaces across chunks.
#[test]
fn a_directory_of_3000_entries_is_copied_whole() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..3000 {
        let path = src.join(format!("e{i:04}"));
        match i % 10 {
            0 => {
                fs::create_dir(&path).unwrap();
                fs::write(path.join("inside"), format!("{i}")).unwrap();
            }
            1 => symlink(format!("e{:04}", i - 1), &path).unwrap(),
            _ => write(
                &path,
                format!("{i}").as_bytes(),
                0o600 + (i as u32 % 8) * 0o11,
            ),
        }
    }
    let dst = dir.path().join("dst");

    let report = sync_tree(&src, &dst, SyncMode::Full).unwrap();

    assert_eq!(report.directories, 300, "{report:?}");
    assert_eq!(report.files, 300 + 300 + 2400, "{report:?}");
    assert_same_tree(&src, &dst);

    wait_past_margin();
    let changes_at = SystemTime::now();
    for i in [5, 1502, 2999] {
        fs::remove_file(src.join(format!("e{i:04}"))).unwrap();
    }
    fs::write(src.join("e2002"), "changed").unwrap();
    fs::remove_dir_all(src.join("e2990")).unwrap();
    let report = sync_tree(
        &src,
        &dst,
        SyncMode::Delta {
            unchanged_before: changes_at,
        },
    )
    .unwrap();
    assert_eq!(report.removed, 3 + 2, "{report:?}");
    // Reading the source for the first comparison moved its atimes, which
    // a delta pass does not compare: leave them out.
    let contents = |root: &Path| {
        let mut tree = expected(&snapshot(root));
        tree.values_mut().for_each(|e| e.atime = None);
        tree
    };
    assert_eq!(contents(&dst), contents(&src));
}

/// Copies are created with their permissions, and `fchmod`ed when the
/// umask took some away: every mode comes out as the source's (without
/// setuid and setgid) whatever the umask.
#[test]
fn every_permission_survives_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let modes = [
        0o000, 0o400, 0o444, 0o600, 0o644, 0o666, 0o700, 0o755, 0o777, 0o1644, 0o1777, 0o4777,
        0o2666, 0o6755, 0o7777,
    ];
    for mode in modes {
        write(&src.join(format!("m{mode:04o}")), b"x", mode);
    }
    let dst = dir.path().join("dst");

    sync_tree(&src, &dst, SyncMode::Full).unwrap();

    assert_same_tree(&src, &dst);
    for mode in modes {
        let got = fs::metadata(dst.join(format!("m{mode:04o}")))
            .unwrap()
            .mode()
            & 0o7777;
        assert_eq!(got, mode & 0o1777, "{mode:04o}");
    }
}

/// An app writing to files during the full pass (same size, mtime set back:
/// only ctime tells): a delta pass whose cutoff is the full pass's start,
/// as the frozen pass of an activation without a catch-up, copies every one
/// of them again, and keeps the files untouched since before the margin.
#[test]
fn files_written_during_the_full_pass_are_caught_by_a_delta_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in 0..20 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..50 {
            fs::write(src.join(format!("d{d}/f{f}")), format!("v{:06}", 0)).unwrap();
        }
    }
    fs::write(src.join("still"), "untouched").unwrap();
    wait_past_margin();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let writer = {
        let (src, stop, started) = (src.clone(), Arc::clone(&stop), Arc::clone(&started));
        std::thread::spawn(move || {
            let mut writes = 0_u64;
            while !started.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
            'writing: loop {
                for d in 0..20 {
                    for f in (0..50).step_by(7) {
                        if stop.load(Ordering::Relaxed) {
                            break 'writing;
                        }
                        let path = src.join(format!("d{d}/f{f}"));
                        let file = fs::File::options().write(true).open(&path).unwrap();
                        let mtime = file.metadata().unwrap().modified().unwrap();
                        writes += 1;
                        file.write_all_at(format!("v{writes:06}").as_bytes(), 0)
                            .unwrap();
                        file.set_modified(mtime).unwrap();
                    }
                }
            }
            writes
        })
    };
    let dst = dir.path().join("dst");

    let full_began = SystemTime::now();
    started.store(true, Ordering::Relaxed);
    sync_tree(&src, &dst, SyncMode::Full).unwrap();
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    // Nothing writes now: the app is frozen.
    let report = sync_tree(
        &src,
        &dst,
        SyncMode::Delta {
            unchanged_before: full_began,
        },
    )
    .unwrap();

    println!("{writes} writes during the full pass; then {report:?}");
    assert!(writes > 0);
    assert_same_tree(&src, &dst);
    assert!(report.kept >= 1, "the untouched file is kept: {report:?}");
}

#[test]
fn many_files_in_one_directory_are_all_copied() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..1000 {
        fs::write(src.join(format!("f{i:04}")), format!("{i}")).unwrap();
    }
    let dst = dir.path().join("dst");
    let report = sync_tree(&src, &dst, SyncMode::Full).unwrap();
    assert_eq!(report.files, 1000);
    assert_same_tree(&src, &dst);
}

/// A loop-mounted filesystem, unmounted (and its loop device freed) on drop.
struct LoopFs {
    mountpoint: PathBuf,
}

impl LoopFs {
    /// XFS with reflinks.
    fn xfs(dir: &Path) -> Result<Self, String> {
        Self::mount(dir, "mkfs.xfs", &["-q", "-m", "reflink=1"])
    }

    /// ext4 without its `filetype` feature: listings give no types.
    fn ext4_without_d_type(dir: &Path) -> Result<Self, String> {
        Self::mount(dir, "mkfs.ext4", &["-q", "-F", "-O", "^filetype"])
    }

    /// Mounts a filesystem `mkfs` with `options` makes.
    fn mount(dir: &Path, mkfs: &str, options: &[&str]) -> Result<Self, String> {
        let image = dir.join("fs.img");
        let mountpoint = dir.join("mnt");
        fs::create_dir(&mountpoint).map_err(|e| e.to_string())?;
        fs::File::create(&image)
            .and_then(|f| f.set_len(1 << 30))
            .map_err(|e| e.to_string())?;
        let image_arg = image.to_string_lossy();
        let mut args = options.to_vec();
        args.push(&image_arg);
        run(mkfs, &args)?;
        run(
            "mount",
            &[
                "-o",
                "loop",
                &image.to_string_lossy(),
                &mountpoint.to_string_lossy(),
            ],
        )?;
        Ok(Self { mountpoint })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        use nix::mount::{MntFlags, umount2};
        if umount2(&self.mountpoint, MntFlags::empty()).is_err() {
            let _ = umount2(&self.mountpoint, MntFlags::MNT_DETACH);
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[test]
fn on_xfs_files_are_reflinked() {
    let dir = tempfile::tempdir().unwrap();
    let xfs = match LoopFs::xfs(dir.path()) {
        Ok(xfs) => xfs,
        Err(e) => {
            println!("SKIPPED on_xfs_files_are_reflinked: cannot mount a loop XFS: {e}");
            return;
        }
    };
    assert!(supports_reflink(&xfs.mountpoint));
    let src = populate(&xfs.mountpoint);
    let dst = xfs.mountpoint.join("dst");
    let started = Instant::now();

    let report = sync_tree(&src, &dst, SyncMode::Full).unwrap();

    println!("{report:?} in {:?}", started.elapsed());
    assert_eq!((report.reflinked, report.copied), (8, 0), "{report:?}");
    assert_same_tree(&src, &dst);
    wait_past_margin();
    let report: SyncReport = sync_tree(
        &src,
        &dst,
        SyncMode::Delta {
            unchanged_before: SystemTime::now(),
        },
    )
    .unwrap();
    assert_eq!(
        report.reflinked + report.copied,
        0,
        "all files kept: {report:?}"
    );
}

/// Where directory listings give no types (`DT_UNKNOWN`: ext4 without its
/// `filetype` feature here), every entry gets an `lstat` instead, in both
/// passes.
#[test]
fn without_types_in_listings_every_kind_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let ext4 = match LoopFs::ext4_without_d_type(dir.path()) {
        Ok(ext4) => ext4,
        Err(e) => {
            println!("SKIPPED: cannot mount a loop ext4 without d_type: {e}");
            return;
        }
    };
    let src = populate(&ext4.mountpoint);
    let listing = rustix::fs::Dir::new(
        fs::File::open(&src)
            .map(std::os::fd::OwnedFd::from)
            .unwrap(),
    )
    .unwrap();
    for entry in listing {
        let entry = entry.unwrap();
        assert_eq!(
            entry.file_type(),
            rustix::fs::FileType::Unknown,
            "{:?} has a listed type",
            entry.file_name()
        );
    }
    let dst = ext4.mountpoint.join("dst");

    let report = sync_tree(&src, &dst, SyncMode::Full).unwrap();

    assert_same_tree(&src, &dst);
    assert_eq!(report.files, 8 + 3 + 1, "{report:?}");
    assert_eq!(report.skipped, 1, "the socket: {report:?}");
    wait_past_margin();
    let changes_at = SystemTime::now();
    fs::write(src.join("a/b/owned"), "new data").unwrap();
    fs::remove_file(src.join("secret")).unwrap();
    let report = sync_tree(
        &src,
        &dst,
        SyncMode::Delta {
            unchanged_before: changes_at,
        },
    )
    .unwrap();
    assert_eq!(report.removed, 1, "{report:?}");
    assert_eq!(report.copied + report.reflinked, 1, "{report:?}");
    assert_eq!(fs::read(dst.join("a/b/owned")).unwrap(), b"new data");
}

#[test]
fn without_reflinks_files_are_copied() {
    let dir = tempfile::tempdir().unwrap();
    if supports_reflink(dir.path()) {
        println!("SKIPPED: {} supports reflinks", dir.path().display());
        return;
    }
    let src = populate(dir.path());
    let report = sync_tree(&src, &dir.path().join("dst"), SyncMode::Full).unwrap();
    assert_eq!((report.reflinked, report.copied), (0, 8), "{report:?}");
}

const TIB: u64 = 1 << 40;

/// A 1 TiB file holding 4 KiB of data at 512 GiB, owned by someone else.
fn terabyte_sparse_file(path: &Path) -> Vec<u8> {
    let data: Vec<u8> = (0..4096_u32).map(|i| (i % 253) as u8).collect();
    let file = fs::File::create_new(path).unwrap();
    file.set_len(TIB).unwrap();
    file.write_all_at(&data, TIB / 2).unwrap();
    drop(file);
    chown(path, Some(10000), Some(10000)).unwrap();
    data
}

#[test]
fn a_terabyte_sparse_file_is_cloned_with_its_holes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let data = terabyte_sparse_file(&src.join("huge"));
    // Data, hole, data, and a trailing hole.
    let mixed = fs::File::create_new(src.join("mixed")).unwrap();
    mixed.set_len(64 << 20).unwrap();
    mixed.write_all_at(b"head", 0).unwrap();
    mixed.write_all_at(&[9; 10_000], 30 << 20).unwrap();
    drop(mixed);
    let dst = dir.path().join("dst");
    let started = Instant::now();

    let report = sync_tree(&src, &dst, SyncMode::Full).unwrap();

    let elapsed = started.elapsed();
    println!("{report:?} in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    // Before reading the copy, which moves its atime.
    assert_same_tree(&src, &dst);
    let copy = fs::File::open(dst.join("huge")).unwrap();
    let meta = copy.metadata().unwrap();
    assert_eq!(meta.len(), TIB);
    assert!(
        meta.blocks() * 512 <= 1 << 20,
        "{} blocks allocated",
        meta.blocks()
    );
    let mut back = vec![0; 4096];
    copy.read_exact_at(&mut back, TIB / 2).unwrap();
    assert_eq!(back, data);
    let mut before = vec![1; 4096];
    copy.read_exact_at(&mut before, TIB / 2 - 4096).unwrap();
    assert!(before.iter().all(|b| *b == 0));
    if report.copied > 0 {
        assert!(report.bytes < 1 << 20, "holes are not written: {report:?}");
    }
    assert!(fs::metadata(dst.join("mixed")).unwrap().blocks() * 512 < 1 << 20);
}

#[test]
fn the_byte_limit_counts_data_not_holes_and_a_failed_full_copy_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    terabyte_sparse_file(&src.join("huge"));
    fs::write(src.join("small"), [5; 1000]).unwrap();
    let dst = dir.path().join("dst");

    let report = sync_tree_limited(&src, &dst, SyncMode::Full, Some(1 << 20)).unwrap();
    assert_eq!(report.files, 2, "{report:?}");
    assert_same_tree(&src, &dst);

    if supports_reflink(dir.path()) {
        println!("SKIPPED the over-limit half: reflinked files cost nothing here");
        return;
    }
    fs::write(src.join("sub/dense"), vec![3; 3 << 20]).unwrap();
    let error = sync_tree_limited(&src, &dst, SyncMode::Full, Some(2 << 20)).unwrap_err();
    assert!(
        matches!(error, VolumeError::TooLarge { limit } if limit == 2 << 20),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("the data to clone exceeds 2097152 bytes"),
        "{error}"
    );
    assert!(!dst.exists(), "the partial copy is gone");
}
