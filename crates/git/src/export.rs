//! A tree written out as a tar: the app's source, as the build receives it.
//!
//! Entries are owned by the given uid/gid, dated at a fixed time (so the same
//! tree always gives the same bytes and the same image layer), with git's
//! modes (0644, 0755 for executables, symbolic links as links). Submodules
//! (commit entries) have no content in the repository and are skipped.
//! A name git itself would refuse (`.`, `..`, `.git`, with `/` or NUL) fails
//! the export: `transfer.fsckObjects` is off, so a pushed tree is not
//! trusted to be clean.

use std::io::Write;

use gix::hash::ObjectId;
use gix::objs::Kind;
use gix::objs::tree::EntryKind;

use crate::objects::parse_id;
use crate::{GitError, Objects};

/// How to write a tree as a tar.
#[derive(Clone, Debug)]
pub struct TarOptions {
    /// The directory every entry goes under (`app`), created first.
    pub prefix: String,
    /// Owner of every entry.
    pub uid: u64,
    /// Group of every entry.
    pub gid: u64,
    /// Modification time of every entry (seconds since the epoch).
    pub mtime: u64,
    /// The most bytes of file content the tar may hold.
    pub max_bytes: u64,
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TarStats {
    /// Regular files and links.
    pub files: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Submodule entries left out.
    pub submodules: u64,
}

/// The deepest directory nesting an export follows.
const MAX_DEPTH: usize = 256;

struct Exporter<'a, W: Write> {
    objects: &'a Objects,
    builder: tar::Builder<W>,
    options: &'a TarOptions,
    stats: TarStats,
}

fn header(kind: tar::EntryType, mode: u32, size: u64, options: &TarOptions) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(options.uid);
    header.set_gid(options.gid);
    header.set_mtime(options.mtime);
    header
}

fn check_name(name: &[u8]) -> Result<(), String> {
    if name.is_empty() || name == b"." || name == b".." {
        return Err("an empty, `.` or `..` name".into());
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(format!(
            "the name {:?} holds `/` or NUL",
            String::from_utf8_lossy(name)
        ));
    }
    if name.eq_ignore_ascii_case(b".git") {
        return Err("a `.git` entry".into());
    }
    Ok(())
}

impl<W: Write> Exporter<'_, W> {
    fn io(&self, error: std::io::Error) -> GitError {
        GitError::Read {
            path: "the exported tree".into(),
            message: error.to_string(),
        }
    }

    fn refuse(&self, path: &[u8], reason: String) -> GitError {
        GitError::Read {
            path: String::from_utf8_lossy(path).into_owned(),
            message: format!("cannot export this tree: {reason}"),
        }
    }

    fn directory(&mut self, path: &[u8]) -> Result<(), GitError> {
        let mut header = header(tar::EntryType::Directory, 0o755, 0, self.options);
        let mut name = path.to_vec();
        name.push(b'/');
        self.builder
            .append_data(&mut header, bytes_path(&name), std::io::empty())
            .map_err(|e| self.io(e))
    }

    fn tree(&mut self, tree: &ObjectId, path: &[u8], depth: usize) -> Result<(), GitError> {
        if depth > MAX_DEPTH {
            return Err(self.refuse(path, "directories nest too deep".into()));
        }
        let (kind, data) = self.objects.read(tree)?;
        if kind != Kind::Tree {
            return Err(self.refuse(path, format!("{tree} is a {kind}, not a tree")));
        }
        for entry in gix::objs::TreeRefIter::from_bytes(&data, gix::hash::Kind::Sha1) {
            let entry = entry.map_err(|e| self.refuse(path, e.to_string()))?;
            let name: &[u8] = entry.filename.as_ref();
            check_name(name).map_err(|reason| self.refuse(path, reason))?;
            let mut child = path.to_vec();
            child.push(b'/');
            child.extend_from_slice(name);
            let id = entry.oid.to_owned();
            match entry.mode.kind() {
                EntryKind::Tree => {
                    self.directory(&child)?;
                    self.tree(&id, &child, depth + 1)?;
                }
                EntryKind::Blob | EntryKind::BlobExecutable => {
                    let mode = if entry.mode.kind() == EntryKind::BlobExecutable {
                        0o755
                    } else {
                        0o644
                    };
                    let (kind, content) = self.objects.read(&id)?;
                    if kind != Kind::Blob {
                        return Err(self.refuse(&child, format!("{id} is a {kind}, not a blob")));
                    }
                    self.stats.files += 1;
                    self.stats.bytes += content.len() as u64;
                    if self.stats.bytes > self.options.max_bytes {
                        return Err(self.refuse(
                            &child,
                            format!("the app's files exceed {} bytes", self.options.max_bytes),
                        ));
                    }
                    let mut header = header(
                        tar::EntryType::Regular,
                        mode,
                        content.len() as u64,
                        self.options,
                    );
                    self.builder
                        .append_data(&mut header, bytes_path(&child), content.as_slice())
                        .map_err(|e| self.io(e))?;
                }
                EntryKind::Link => {
                    let (_, target) = self.objects.read(&id)?;
                    if target.contains(&0) || target.is_empty() {
                        return Err(
                            self.refuse(&child, "a link with an empty or NUL target".into())
                        );
                    }
                    self.stats.files += 1;
                    let mut header = header(tar::EntryType::Symlink, 0o777, 0, self.options);
                    self.builder
                        .append_link(&mut header, bytes_path(&child), bytes_path(&target))
                        .map_err(|e| self.io(e))?;
                }
                EntryKind::Commit => self.stats.submodules += 1,
            }
        }
        Ok(())
    }
}

fn bytes_path(bytes: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt as _;
    std::path::Path::new(std::ffi::OsStr::from_bytes(bytes))
}

/// Writes the tree `tree_id` (hex) under `options.prefix` as a tar to `out`.
pub fn write_tree_tar<W: Write>(
    objects: &Objects,
    tree_id: &str,
    out: W,
    options: &TarOptions,
) -> Result<TarStats, GitError> {
    let tree = parse_id(tree_id)?;
    let mut exporter = Exporter {
        objects,
        builder: tar::Builder::new(out),
        options,
        stats: TarStats::default(),
    };
    exporter.builder.mode(tar::HeaderMode::Complete);
    let prefix = options.prefix.trim_matches('/').as_bytes().to_vec();
    exporter.directory(&prefix)?;
    exporter.tree(&tree, &prefix, 0)?;
    let stats = exporter.stats;
    let mut out = exporter.builder.into_inner().map_err(|e| GitError::Read {
        path: "the exported tree".into(),
        message: e.to_string(),
    })?;
    out.flush().map_err(|e| GitError::Read {
        path: "the exported tree".into(),
        message: e.to_string(),
    })?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_git_refuses_are_refused() {
        for bad in [&b""[..], b".", b"..", b".git", b".GIT", b"a/b", b"a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in [&b"a"[..], b".gitignore", b"...", b"caf\xc3\xa9"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }
}
