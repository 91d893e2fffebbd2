//! The walk's open fds do not grow with the width or depth of the tree: it
//! copies a wide and deep tree under a low `RLIMIT_NOFILE`.
//!
//! On its own in this file, so in a process of its own: the limit applies to
//! the whole process.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use launchway_volumes::{SyncMode, sync_tree};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The soft limit the copy runs under. The walk needs at most
/// `3 + 17 × threads` (139 with eight threads); a walk whose queued jobs held
/// two fds each would need hundreds for the tree below.
const SOFT_LIMIT: u64 = 256;

/// Subdirectories per directory: one chunk of entries, so a whole level's
/// worth would be queued at once.
const FAN_OUT: usize = 64;

/// Levels of the deep chain beside the wide part (under `MAX_DEPTH`).
const CHAIN: usize = 200;

fn open_fds() -> usize {
    // The listing's own fd is counted too, on both sides of a comparison.
    fs::read_dir("/proc/self/fd").unwrap().count()
}

fn populate(src: &Path) -> usize {
    let mut dirs = 0;
    for i in 0..FAN_OUT {
        for j in 0..FAN_OUT {
            let leaf = src.join(format!("w{i:02}/w{j:02}"));
            fs::create_dir_all(&leaf).unwrap();
            fs::write(leaf.join("f"), format!("{i}/{j}")).unwrap();
            dirs += 1;
        }
        dirs += 1;
    }
    let mut deep = src.join("chain");
    for level in 0..CHAIN {
        fs::create_dir(&deep).unwrap();
        fs::write(deep.join("f"), format!("level {level}")).unwrap();
        deep.push("c");
        dirs += 1;
    }
    dirs
}

#[test]
fn a_wide_and_deep_tree_copies_under_a_low_fd_limit() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    let dirs = populate(&src);

    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, SOFT_LIMIT.min(hard), hard).unwrap();
    let before = open_fds();
    // The most fds seen open while the copies run; not while this test
    // changes the source (`remove_dir_all` holds an fd per level), which
    // holds `quiet`.
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let quiet = Arc::new(Mutex::new(()));
    let sampler = {
        let (peak, done, quiet) = (Arc::clone(&peak), Arc::clone(&done), Arc::clone(&quiet));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let _sampling = quiet.lock().unwrap_or_else(PoisonError::into_inner);
                peak.fetch_max(open_fds(), Ordering::Relaxed);
            }
        })
    };

    let full = sync_tree(&src, &dst, SyncMode::Full);
    // A delta pass that removes and replaces subtrees too.
    let changes_at = SystemTime::now();
    {
        let _quiet = quiet.lock().unwrap_or_else(PoisonError::into_inner);
        let mut deepest = dst.join("chain");
        for _ in 0..CHAIN - 1 {
            deepest.push("c");
        }
        let bottom = fs::read_to_string(deepest.join("f")).map_err(|e| e.to_string());
        assert_eq!(bottom, Ok(format!("level {}", CHAIN - 1)));
        fs::remove_dir_all(src.join("w07")).unwrap();
        fs::remove_dir_all(src.join("chain/c/c/c")).unwrap();
        fs::write(src.join("chain/c/c/c"), "now a file").unwrap();
    }
    let delta = sync_tree(
        &src,
        &dst,
        SyncMode::Delta {
            unchanged_before: changes_at,
        },
    );

    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let after = open_fds();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let full = full.unwrap();
    let delta = delta.unwrap();
    let peak = peak.load(Ordering::Relaxed);
    println!("{full:?}\n{delta:?}\nfds: {before} before, {after} after, {peak} at most seen");

    assert_eq!(full.directories as usize, dirs);
    assert_eq!(full.files as usize, FAN_OUT * FAN_OUT + CHAIN);
    // w07 and its subdirectories with a file each (the chain below level 3
    // is replaced, which does not count).
    assert_eq!(delta.removed as usize, 1 + 2 * FAN_OUT);
    assert_eq!(after, before, "no fd leaked");
    let threads = std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .clamp(2, 8);
    assert!(
        peak <= before + 3 + 17 * threads,
        "{peak} fds open at once with {threads} threads"
    );
    assert_eq!(fs::read_to_string(dst.join("w63/w63/f")).unwrap(), "63/63");
    assert!(!dst.join("w07").exists());
    assert_eq!(
        fs::read_to_string(dst.join("chain/c/c/c")).unwrap(),
        "now a file"
    );
    let mut deep = dst.join("chain/c/c");
    deep.push("f");
    assert_eq!(fs::read_to_string(&deep).unwrap(), "level 2");
}
