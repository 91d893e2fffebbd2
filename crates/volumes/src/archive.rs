//! Off-host copies of a data directory: a zstd-compressed tar whose last
//! entry lists the SHA-256 of every file, so an import refuses a corrupt,
//! truncated or foreign archive whole (the caller unpacks into a directory
//! of its own and keeps it only when [`unpack`] returns `Ok`).
//!
//! Layout: every entry is under `launchway-backup/` (the directory's own
//! files first, then its tree, sorted; directories, regular files and
//! symlinks, with mode, owner and mtime), then `launchway-backup.sha256`:
//! `<hex>  <path>` per regular file and a last line `entries <n>`.
//! The zstd frame carries its own checksum too.
//!
//! Unpacking trusts nothing: only those three entry types, only relative
//! paths of normal components under the prefix, no entry below a symlink
//! it made, no entry twice, files created new (never opened through a
//! link).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// The directory every entry of an archive is under.
pub const PREFIX: &str = "launchway-backup";
/// The last entry: the digests.
pub const SUMS: &str = "launchway-backup.sha256";
/// The zstd level: fast, and still a third of the size for text.
const LEVEL: i32 = 3;
/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Entries an archive may hold.
const MAX_ENTRIES: u64 = 50_000_000;
/// Path components an entry may have.
const MAX_DEPTH: usize = 512;

/// What archiving or unpacking can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading the directory or writing the archive failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The archive is not one [`write`] made, or it was changed.
    #[error("not a Launchway backup archive, or a damaged one: {0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(message: impl Into<String>) -> ArchiveError {
    ArchiveError::Invalid(message.into())
}

/// What [`write`] or [`unpack`] went through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Entries (directories, files, links), the root excluded.
    pub entries: u64,
    /// Regular files.
    pub files: u64,
    /// Bytes of file data.
    pub bytes: u64,
}

/// Reads what it wraps and hashes it on the way.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        self.count += read as u64;
        Ok(read)
    }
}

/// The entries of `root`, relative, parents before children, sorted; links
/// never followed.
fn walk(root: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let dir = root.join(&relative);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io(&dir))?;
        names.sort();
        // Reversed onto the stack, so popped in order.
        let mut children = Vec::new();
        for name in names {
            let child = relative.join(&name);
            let meta = std::fs::symlink_metadata(root.join(&child)).map_err(io(&child))?;
            found.push(child.clone());
            if meta.is_dir() {
                children.push(child);
            }
        }
        pending.extend(children.into_iter().rev());
    }
    Ok(found)
}

/// Writes `root` as an archive to `out` (see the module doc).
pub fn write(root: &Path, out: impl Write) -> Result<ArchiveReport, ArchiveError> {
    let mut encoder = zstd::Encoder::new(out, LEVEL).map_err(io(root))?;
    encoder.include_checksum(true).map_err(io(root))?;
    let mut builder = tar::Builder::new(encoder);
    builder.mode(tar::HeaderMode::Complete);
    let mut report = ArchiveReport::default();
    let mut sums = String::new();
    // The directory's own files (the manifest) first, so a reader knows
    // early what it has.
    let mut entries = walk(root)?;
    entries.sort_by_key(|path| (path.components().count() > 1, path.clone()));
    for relative in entries {
        let path = root.join(&relative);
        let name = Path::new(PREFIX).join(&relative);
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        let file_type = meta.file_type();
        if file_type.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder
                .append_data(&mut header, &name, std::io::empty())
                .map_err(io(&path))?;
        } else if file_type.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io(&path))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder
                .append_link(&mut header, &name, &target)
                .map_err(io(&path))?;
        } else if file_type.is_file() {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(&path)
                .map_err(io(&path))?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let mut hashing = Hashing {
                inner: file,
                hasher: Sha256::new(),
                count: 0,
            };
            builder
                .append_data(&mut header, &name, &mut hashing)
                .map_err(io(&path))?;
            sums.push_str(&format!(
                "{}  {}\n",
                hex(&hashing.hasher.finalize()),
                name.display()
            ));
            report.files += 1;
            report.bytes += hashing.count;
        } else {
            // Sockets, FIFOs, devices: nothing a restore can use.
            continue;
        }
        report.entries += 1;
    }
    sums.push_str(&format!("entries {}\n", report.entries));
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(sums.len() as u64);
    builder
        .append_data(&mut header, SUMS, sums.as_bytes())
        .map_err(io(root))?;
    let encoder = builder.into_inner().map_err(io(root))?;
    let mut out = encoder.finish().map_err(io(root))?;
    out.flush().map_err(io(root))?;
    Ok(report)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The path of an entry below the prefix, checked: normal components only.
fn entry_path(raw: &Path) -> Result<PathBuf, ArchiveError> {
    let mut components = raw.components();
    if components.next() != Some(Component::Normal(PREFIX.as_ref())) {
        return Err(invalid(format!(
            "entry `{}` is outside `{PREFIX}/`",
            raw.display()
        )));
    }
    let mut relative = PathBuf::new();
    for component in components {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            _ => {
                return Err(invalid(format!(
                    "entry `{}` climbs out of the archive",
                    raw.display()
                )));
            }
        }
    }
    if relative.components().count() > MAX_DEPTH {
        return Err(invalid(format!("entry `{}` is too deep", raw.display())));
    }
    Ok(relative)
}

/// Unpacks an archive [`write`] made into `into` (a new, empty directory
/// of the caller's), checking every digest. `first` must be the name of
/// the archive's first entry (the manifest), so a foreign archive is told
/// apart at once. On `Err` `into` holds part of it: the caller removes it.
pub fn unpack(input: impl Read, into: &Path, first: &str) -> Result<ArchiveReport, ArchiveError> {
    let mut input = std::io::BufReader::new(input);
    let start = std::io::BufRead::fill_buf(&mut input)
        .map_err(|e| invalid(format!("cannot read it: {e}")))?;
    if !start.starts_with(&ZSTD_MAGIC) {
        return Err(invalid("the data is not zstd-compressed"));
    }
    let decoder = zstd::Decoder::with_buffer(input)
        .map_err(|e| invalid(format!("the data is not zstd-compressed: {e}")))?;
    let mut archive = tar::Archive::new(decoder);
    let mut report = ArchiveReport::default();
    let mut digests: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    let mut links: BTreeSet<PathBuf> = BTreeSet::new();
    let mut sums: Option<String> = None;
    let entries = archive
        .entries()
        .map_err(|e| invalid(format!("cannot read the archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(format!("cannot read an entry: {e}")))?;
        if sums.is_some() {
            return Err(invalid("entries follow the digests"));
        }
        let raw = entry
            .path()
            .map_err(|e| invalid(format!("an entry's name is unreadable: {e}")))?
            .into_owned();
        if raw == Path::new(SUMS) {
            let mut text = String::new();
            entry
                .by_ref()
                .take(1 << 30)
                .read_to_string(&mut text)
                .map_err(|e| invalid(format!("the digests are unreadable: {e}")))?;
            sums = Some(text);
            continue;
        }
        let relative = entry_path(&raw)?;
        if report.entries == 0 && relative != Path::new(first) {
            return Err(invalid(format!(
                "its first entry is `{}`, not `{PREFIX}/{first}`",
                raw.display()
            )));
        }
        report.entries += 1;
        if report.entries > MAX_ENTRIES {
            return Err(invalid("too many entries"));
        }
        if relative.as_os_str().is_empty() || !seen.insert(relative.clone()) {
            return Err(invalid(format!("entry `{}` appears twice", raw.display())));
        }
        if relative.ancestors().skip(1).any(|a| links.contains(a)) {
            return Err(invalid(format!(
                "entry `{}` is below a symlink",
                raw.display()
            )));
        }
        let target = into.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let header = entry.header();
        let mode = header.mode().map_err(|e| invalid(e.to_string()))? & 0o7777;
        let uid = header.uid().map_err(|e| invalid(e.to_string()))?;
        let gid = header.gid().map_err(|e| invalid(e.to_string()))?;
        let mtime = header.mtime().map_err(|e| invalid(e.to_string()))?;
        let owner = (
            u32::try_from(uid).map_err(|_| invalid("an owner is out of range"))?,
            u32::try_from(gid).map_err(|_| invalid("a group is out of range"))?,
        );
        match header.entry_type() {
            tar::EntryType::Directory => {
                match std::fs::create_dir(&target) {
                    Ok(()) => {}
                    // Made as the parent of an earlier entry.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io(&target)(e)),
                }
                chown(&target, owner)?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(io(&target))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| invalid(e.to_string()))?
                    .ok_or_else(|| invalid(format!("symlink `{}` has no target", raw.display())))?
                    .into_owned();
                std::os::unix::fs::symlink(&link, &target).map_err(io(&target))?;
                nix::unistd::fchownat(
                    nix::fcntl::AT_FDCWD,
                    &target,
                    Some(owner.0.into()),
                    Some(owner.1.into()),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| io(&target)(e.into()))?;
                links.insert(relative);
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                    .mode(0o600)
                    .open(&target)
                    .map_err(io(&target))?;
                let mut hashing = Hashing {
                    inner: &mut entry,
                    hasher: Sha256::new(),
                    count: 0,
                };
                std::io::copy(&mut hashing, &mut file)
                    .map_err(|e| invalid(format!("`{}` is cut short: {e}", raw.display())))?;
                digests.insert(raw.clone(), hex(&hashing.hasher.finalize()));
                report.files += 1;
                report.bytes += hashing.count;
                nix::unistd::fchown(&file, Some(owner.0.into()), Some(owner.1.into()))
                    .map_err(|e| io(&target)(e.into()))?;
                file.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(io(&target))?;
                file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))
                    .map_err(io(&target))?;
            }
            other => {
                return Err(invalid(format!(
                    "entry `{}` is a {other:?}, which a backup never holds",
                    raw.display()
                )));
            }
        }
    }
    let sums = sums.ok_or_else(|| invalid("it ends before its digests (truncated?)"))?;
    check_sums(&sums, &digests, report.entries)?;
    // The decoder checks the frame's own checksum only at its end: read it.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink())
        .map_err(|e| invalid(format!("the compressed stream is damaged: {e}")))?;
    Ok(report)
}

fn check_sums(
    sums: &str,
    digests: &BTreeMap<PathBuf, String>,
    entries: u64,
) -> Result<(), ArchiveError> {
    let mut listed = BTreeMap::new();
    let mut count = None;
    for line in sums.lines() {
        if let Some(number) = line.strip_prefix("entries ") {
            count = number.parse::<u64>().ok();
            continue;
        }
        let (digest, path) = line
            .split_once("  ")
            .ok_or_else(|| invalid("a digest line is malformed"))?;
        listed.insert(PathBuf::from(path), digest.to_owned());
    }
    if count != Some(entries) {
        return Err(invalid(format!(
            "it holds {entries} entries where its digests list {}",
            count.map_or("none".to_owned(), |c| c.to_string())
        )));
    }
    for (path, digest) in digests {
        match listed.remove(path) {
            Some(expected) if &expected == digest => {}
            Some(_) => {
                return Err(invalid(format!(
                    "`{}` does not match its digest",
                    path.display()
                )));
            }
            None => return Err(invalid(format!("`{}` has no digest", path.display()))),
        }
    }
    if let Some(path) = listed.keys().next() {
        return Err(invalid(format!(
            "`{}` is listed but missing",
            path.display()
        )));
    }
    Ok(())
}

fn chown(path: &Path, owner: (u32, u32)) -> Result<(), ArchiveError> {
    nix::unistd::chown(path, Some(owner.0.into()), Some(owner.1.into()))
        .map_err(|e| io(path)(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(root: &Path) {
        std::fs::write(root.join("backup.json"), b"{}").unwrap();
        std::fs::create_dir_all(root.join("volumes/uploads/deep")).unwrap();
        std::fs::write(root.join("volumes/uploads/a.txt"), b"hello").unwrap();
        std::fs::write(root.join("volumes/uploads/deep/b.bin"), vec![7u8; 300_000]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("volumes/uploads/link")).unwrap();
        std::fs::set_permissions(
            root.join("volumes/uploads/a.txt"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
    }

    fn archive_of(root: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        write(root, &mut out).unwrap();
        out
    }

    #[test]
    fn an_archive_unpacks_to_the_same_tree() {
        let source = tempfile::tempdir().unwrap();
        sample(source.path());
        let bytes = archive_of(source.path());
        let target = tempfile::tempdir().unwrap();
        let into = target.path().join("x");
        std::fs::create_dir(&into).unwrap();
        let report = unpack(bytes.as_slice(), &into, "backup.json").unwrap();
        assert_eq!(report.files, 3);
        assert_eq!(report.bytes, 2 + 5 + 300_000);
        assert_eq!(
            std::fs::read(into.join("volumes/uploads/deep/b.bin")).unwrap(),
            vec![7u8; 300_000]
        );
        assert_eq!(
            std::fs::read_link(into.join("volumes/uploads/link")).unwrap(),
            Path::new("/etc/passwd")
        );
        let mode = std::fs::metadata(into.join("volumes/uploads/a.txt"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    fn refused(bytes: &[u8]) -> String {
        let target = tempfile::tempdir().unwrap();
        match unpack(bytes, target.path(), "backup.json") {
            Err(ArchiveError::Invalid(message)) => message,
            other => panic!("accepted or failed otherwise: {other:?}"),
        }
    }

    #[test]
    fn truncated_corrupt_and_foreign_archives_are_refused() {
        let source = tempfile::tempdir().unwrap();
        sample(source.path());
        let bytes = archive_of(source.path());
        // Truncated anywhere.
        for cut in [10, bytes.len() / 2, bytes.len() - 4] {
            refused(&bytes[..cut]);
        }
        // One byte changed in the compressed data.
        let mut corrupt = bytes.clone();
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0x55;
        refused(&corrupt);
        // Not zstd at all.
        assert!(refused(b"just some text").contains("zstd"), "not zstd");
        // A zstd'd tar of something else.
        let mut other = tar::Builder::new(zstd::Encoder::new(Vec::new(), 1).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o644);
        other
            .append_data(&mut header, "etc/passwd", &b"abc"[..])
            .unwrap();
        let foreign = other.into_inner().unwrap().finish().unwrap();
        assert!(refused(&foreign).contains("outside"));
    }

    #[test]
    fn a_changed_file_with_valid_compression_is_refused_by_its_digest() {
        let source = tempfile::tempdir().unwrap();
        sample(source.path());
        let bytes = archive_of(source.path());
        // Re-pack the same entries with one file's content changed.
        let mut decoded = Vec::new();
        zstd::Decoder::new(bytes.as_slice())
            .unwrap()
            .read_to_end(&mut decoded)
            .unwrap();
        let needle = b"hello";
        let at = decoded
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        decoded[at] = b'j';
        // The tar header checksum covers headers only: the data change
        // passes tar, and the digest catches it.
        let repacked = zstd::encode_all(decoded.as_slice(), 1).unwrap();
        assert!(refused(&repacked).contains("digest"));
    }
}
