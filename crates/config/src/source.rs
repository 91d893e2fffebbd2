//! Reading the repository: the small trait the config crate sees files through.
//!
//! The crate does no I/O of its own. A [`RepoSource`] is a checkout directory
//! (in the `launchway` binary), a git commit (in `launchway-git`, reading the
//! pushed objects before refs move) or an in-memory map ([`MemSource`]) in tests.
//! Every path handed to a source is a [`RepoPath`]: relative, normalized and
//! unable to name anything outside the repository.

use std::collections::BTreeMap;
use std::fmt;

/// A normalized path inside the repository: no leading `/`, no `.` or `..`
/// components, no empty components. The root is the empty path.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoPath(String);

/// Why a path cannot be a [`RepoPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `..` would climb above the repository root.
    #[error("path `{0}` escapes the repository")]
    Escapes(String),
    /// NUL bytes or backslashes, which no repository path may contain.
    #[error("path `{0}` contains a character not allowed in a repository path")]
    BadCharacter(String),
}

impl RepoPath {
    /// The repository root.
    pub fn root() -> RepoPath {
        RepoPath(String::new())
    }

    /// Resolves `path` against the directory `base`. A leading `/` makes `path`
    /// relative to the repository root instead. `..` may climb inside the
    /// repository but never above its root.
    pub fn resolve(base: &RepoPath, path: &str) -> Result<RepoPath, PathError> {
        if path.contains('\0') || path.contains('\\') {
            return Err(PathError::BadCharacter(path.to_owned()));
        }
        let mut parts: Vec<&str> = if path.starts_with('/') {
            Vec::new()
        } else {
            base.components().collect()
        };
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(PathError::Escapes(path.to_owned()));
                    }
                }
                other => parts.push(other),
            }
        }
        Ok(RepoPath(parts.join("/")))
    }

    /// Parses a path relative to the repository root.
    pub fn parse(path: &str) -> Result<RepoPath, PathError> {
        RepoPath::resolve(&RepoPath::root(), path)
    }

    /// The path as text; empty for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the repository root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// `self/name`.
    pub fn join(&self, name: &str) -> RepoPath {
        if self.0.is_empty() {
            RepoPath(name.to_owned())
        } else {
            RepoPath(format!("{}/{}", self.0, name))
        }
    }

    /// The directory holding this path (the root for a top-level name).
    pub fn parent(&self) -> RepoPath {
        match self.0.rfind('/') {
            Some(i) => RepoPath(self.0[..i].to_owned()),
            None => RepoPath::root(),
        }
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// The path as users write it in config: `/` for the root, otherwise no leading slash.
    pub fn display_dir(&self) -> String {
        if self.0.is_empty() {
            "/".to_owned()
        } else {
            self.0.clone()
        }
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (or blob).
    File,
    /// A directory (or tree).
    Dir,
    /// A symbolic link; never followed by the config reader.
    Symlink,
    /// Anything else (submodule, device, …); ignored.
    Other,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry's name within its directory.
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
}

/// What a source can fail with. `NotFound` is not an error: reads return `None`.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file is larger than the reader allows.
    #[error("file is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The file's size.
        size: u64,
        /// The limit asked for.
        limit: u64,
    },
    /// The path names something that is not a regular file or directory.
    #[error("`{0}` is not a regular file")]
    NotAFile(String),
    /// The underlying storage failed.
    #[error("cannot read `{path}`")]
    Io {
        /// The path being read.
        path: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The underlying storage failed in a way specific to it (a git object, …).
    #[error("cannot read `{path}`: {message}")]
    Other {
        /// The path being read.
        path: String,
        /// What failed.
        message: String,
    },
}

/// Read-only access to the files of one repository state (a checkout or a commit).
pub trait RepoSource {
    /// The contents of the file at `path`, or `None` when there is no such file.
    /// Files larger than `limit` bytes fail with [`SourceError::TooLarge`] without
    /// being read whole.
    fn read(&self, path: &RepoPath, limit: u64) -> Result<Option<Vec<u8>>, SourceError>;

    /// The entries of the directory at `path`, sorted by name, or `None` when
    /// there is no such directory.
    fn list(&self, path: &RepoPath) -> Result<Option<Vec<Entry>>, SourceError>;

    /// What `path` is, if it exists.
    fn kind(&self, path: &RepoPath) -> Result<Option<EntryKind>, SourceError> {
        if path.is_root() {
            return Ok(Some(EntryKind::Dir));
        }
        let name = path.file_name();
        Ok(self
            .list(&path.parent())?
            .and_then(|entries| entries.into_iter().find(|e| e.name == name))
            .map(|e| e.kind))
    }
}

/// An in-memory repository: a map from file path to contents. Directories exist
/// implicitly as the parents of files.
#[derive(Clone, Debug, Default)]
pub struct MemSource {
    files: BTreeMap<RepoPath, Vec<u8>>,
}

impl MemSource {
    /// An empty repository.
    pub fn new() -> MemSource {
        MemSource::default()
    }

    /// Adds (or replaces) a file; a path that escapes the repository is ignored.
    pub fn with(mut self, path: &str, contents: impl Into<Vec<u8>>) -> MemSource {
        self.insert(path, contents);
        self
    }

    /// Adds (or replaces) a file; a path that escapes the repository is ignored.
    pub fn insert(&mut self, path: &str, contents: impl Into<Vec<u8>>) {
        if let Ok(p) = RepoPath::parse(path) {
            self.files.insert(p, contents.into());
        }
    }
}

impl RepoSource for MemSource {
    fn read(&self, path: &RepoPath, limit: u64) -> Result<Option<Vec<u8>>, SourceError> {
        match self.files.get(path) {
            Some(bytes) if bytes.len() as u64 > limit => Err(SourceError::TooLarge {
                size: bytes.len() as u64,
                limit,
            }),
            Some(bytes) => Ok(Some(bytes.clone())),
            None => Ok(None),
        }
    }

    fn list(&self, path: &RepoPath) -> Result<Option<Vec<Entry>>, SourceError> {
        let prefix = if path.is_root() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut entries: BTreeMap<String, EntryKind> = BTreeMap::new();
        for file in self.files.keys() {
            let Some(rest) = file.as_str().strip_prefix(&prefix) else {
                continue;
            };
            match rest.split_once('/') {
                Some((dir, _)) => entries.insert(dir.to_owned(), EntryKind::Dir),
                None => entries.insert(rest.to_owned(), EntryKind::File),
            };
        }
        if entries.is_empty() && !path.is_root() {
            return Ok(None);
        }
        Ok(Some(
            entries
                .into_iter()
                .map(|(name, kind)| Entry { name, kind })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_inside_the_repository_only() {
        let base = RepoPath::parse("a/b").unwrap();
        assert_eq!(
            RepoPath::resolve(&base, "c.yaml").unwrap().as_str(),
            "a/b/c.yaml"
        );
        assert_eq!(RepoPath::resolve(&base, "../c").unwrap().as_str(), "a/c");
        assert_eq!(RepoPath::resolve(&base, "/x/./y/").unwrap().as_str(), "x/y");
        assert_eq!(
            RepoPath::resolve(&base, "../../..").unwrap_err(),
            PathError::Escapes("../../..".into())
        );
        assert!(RepoPath::parse("a\\b").is_err());
        assert!(RepoPath::parse("../x").is_err());
    }

    #[test]
    fn lists_implicit_directories() {
        let src = MemSource::new().with("a/b.yaml", "x").with("c", "y");
        let root = src.list(&RepoPath::root()).unwrap().unwrap();
        assert_eq!(root.len(), 2);
        assert_eq!(
            root[0],
            Entry {
                name: "a".into(),
                kind: EntryKind::Dir
            }
        );
        assert_eq!(
            src.kind(&RepoPath::parse("a").unwrap()).unwrap(),
            Some(EntryKind::Dir)
        );
        assert!(
            src.list(&RepoPath::parse("nope").unwrap())
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            src.read(&RepoPath::parse("c").unwrap(), 0),
            Err(SourceError::TooLarge { size: 1, limit: 0 })
        ));
    }
}
