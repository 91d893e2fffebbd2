//! A checkout directory as a [`RepoSource`], for `launchway config validate DIR`.
//!
//! Symbolic links are never followed, and a path that resolves outside the
//! directory (through a symlinked parent) is refused, so a config cannot read
//! files beyond the repository. `node_modules` and `.git` are skipped by the
//! config crate's search, which keeps validation fast in a developer's tree.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use launchway_config::{Entry, EntryKind, RepoPath, RepoSource, SourceError};

/// The files of a directory on disk.
#[derive(Debug)]
pub(crate) struct CheckoutSource {
    root: PathBuf,
}

impl CheckoutSource {
    /// Opens `dir`; fails when it is not a readable directory.
    pub(crate) fn open(dir: &Path) -> std::io::Result<CheckoutSource> {
        let root = dir.canonicalize()?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Ok(CheckoutSource { root })
    }

    /// The on-disk path of `path`, or `None` when it does not exist. Errors when
    /// it resolves outside the checkout.
    fn locate(&self, path: &RepoPath) -> Result<Option<PathBuf>, SourceError> {
        if path.is_root() {
            return Ok(Some(self.root.clone()));
        }
        let full = self.root.join(path.as_str());
        let io_error = io_error(path);
        let parent = full.parent().unwrap_or(&self.root);
        let resolved_parent = match parent.canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(None),
            Err(e) => return Err(io_error(e)),
        };
        if !resolved_parent.starts_with(&self.root) {
            return Err(SourceError::Other {
                path: path.to_string(),
                message: "it lies outside the repository (through a symbolic link)".into(),
            });
        }
        match fs::symlink_metadata(&full) {
            Ok(_) => Ok(Some(full)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }
}

/// Wraps an I/O error with the repository path it concerns.
fn io_error(path: &RepoPath) -> impl Fn(std::io::Error) -> SourceError + Copy + '_ {
    move |source| SourceError::Io {
        path: path.to_string(),
        source,
    }
}

impl RepoSource for CheckoutSource {
    fn read(&self, path: &RepoPath, limit: u64) -> Result<Option<Vec<u8>>, SourceError> {
        let Some(full) = self.locate(path)? else {
            return Ok(None);
        };
        let io_error = io_error(path);
        let meta = fs::symlink_metadata(&full).map_err(io_error)?;
        if !meta.is_file() {
            return Err(SourceError::NotAFile(path.to_string()));
        }
        if meta.len() > limit {
            return Err(SourceError::TooLarge {
                size: meta.len(),
                limit,
            });
        }
        let mut bytes = Vec::new();
        fs::File::open(&full)
            .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
            .map_err(io_error)?;
        if bytes.len() as u64 > limit {
            return Err(SourceError::TooLarge {
                size: bytes.len() as u64,
                limit,
            });
        }
        Ok(Some(bytes))
    }

    fn list(&self, path: &RepoPath) -> Result<Option<Vec<Entry>>, SourceError> {
        let Some(full) = self.locate(path)? else {
            return Ok(None);
        };
        let io_error = io_error(path);
        let meta = fs::symlink_metadata(&full).map_err(io_error)?;
        if meta.file_type().is_symlink() {
            return Err(SourceError::Other {
                path: path.to_string(),
                message: "it is a symbolic link, and Launchway does not follow links".into(),
            });
        }
        if !meta.is_dir() {
            return Ok(None);
        }
        let mut entries = Vec::new();
        for entry in fs::read_dir(&full).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let file_type = entry.file_type().map_err(io_error)?;
            let kind = if file_type.is_symlink() {
                EntryKind::Symlink
            } else if file_type.is_dir() {
                EntryKind::Dir
            } else if file_type.is_file() {
                EntryKind::File
            } else {
                EntryKind::Other
            };
            entries.push(Entry { name, kind });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(entries))
    }
}
