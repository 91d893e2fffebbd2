//! Reading commits and their files with gix, quarantined objects included.
//!
//! During `pre-receive`, the objects of a push sit in a quarantine directory
//! (`$GIT_OBJECT_DIRECTORY`) that git deletes if the push is refused. gix reads
//! alternates only from `objects/info/alternates`, and that file must not be
//! written into a quarantine (git migrates its contents into the repository),
//! so [`Objects`] layers the stores itself: the quarantine first, then the
//! repository's own objects.

use std::path::{Path, PathBuf};

use gix::hash::ObjectId;
use gix::objs::tree::EntryKind as GitEntryKind;
use gix::objs::{Find as _, Kind};
use gix::odb::Header as _;
use launchway_config::{Entry, EntryKind, RepoPath, RepoSource, SourceError};

use crate::GitError;

/// The object stores of one repository, a push's quarantine first. Not
/// `Send`: open one per blocking task.
pub struct Objects {
    repo: PathBuf,
    stores: Vec<gix::odb::Handle>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects")
            .field("repo", &self.repo)
            .field("stores", &self.stores.len())
            .finish()
    }
}

impl Objects {
    /// The objects of the bare repository `repo`, plus those of the
    /// quarantine directory `quarantine` when given.
    pub fn open(repo: &Path, quarantine: Option<&Path>) -> Result<Objects, GitError> {
        let read_error = |message: String| GitError::Read {
            path: repo.display().to_string(),
            message,
        };
        let mut stores = Vec::new();
        for dir in quarantine
            .into_iter()
            .map(Path::to_path_buf)
            .chain([repo.join("objects")])
        {
            let store = gix::odb::at(&dir, gix::hash::Kind::Sha1)
                .map_err(|e| read_error(format!("{}: {e}", dir.display())))?;
            stores.push(store);
        }
        Ok(Objects {
            repo: repo.to_path_buf(),
            stores,
        })
    }

    fn read_error(&self, message: impl std::fmt::Display) -> GitError {
        GitError::Read {
            path: self.repo.display().to_string(),
            message: message.to_string(),
        }
    }

    fn store_of(&self, id: &ObjectId) -> Result<Option<(&gix::odb::Handle, u64, Kind)>, GitError> {
        for store in &self.stores {
            if let Some(header) = store.try_header(id).map_err(|e| self.read_error(e))? {
                return Ok(Some((store, header.size(), header.kind())));
            }
        }
        Ok(None)
    }

    /// The size and kind of an object, without reading it.
    pub fn header(&self, id: &ObjectId) -> Result<Option<(u64, Kind)>, GitError> {
        Ok(self.store_of(id)?.map(|(_, size, kind)| (size, kind)))
    }

    /// Reads an object whole.
    pub fn read(&self, id: &ObjectId) -> Result<(Kind, Vec<u8>), GitError> {
        let Some((store, _, _)) = self.store_of(id)? else {
            return Err(GitError::Missing(id.to_string()));
        };
        let mut buffer = Vec::new();
        let data = store
            .try_find(id, &mut buffer)
            .map_err(|e| self.read_error(e))?
            .ok_or_else(|| GitError::Missing(id.to_string()))?;
        let kind = data.kind;
        let bytes = data.data.to_vec();
        Ok((kind, bytes))
    }

    /// The root tree of a commit.
    pub fn commit_tree(&self, commit: &ObjectId) -> Result<ObjectId, GitError> {
        let (kind, data) = self.read(commit)?;
        if kind != Kind::Commit {
            return Err(self.read_error(format!("{commit} is a {kind}, not a commit")));
        }
        gix::objs::CommitRefIter::from_bytes(&data, gix::hash::Kind::Sha1)
            .tree_id()
            .map_err(|e| self.read_error(e))
    }

    /// The entries of a tree: name, kind and id.
    pub fn tree_entries(
        &self,
        tree: &ObjectId,
    ) -> Result<Vec<(String, GitEntryKind, ObjectId)>, GitError> {
        let (kind, data) = self.read(tree)?;
        if kind != Kind::Tree {
            return Err(self.read_error(format!("{tree} is a {kind}, not a tree")));
        }
        let mut entries = Vec::new();
        for entry in gix::objs::TreeRefIter::from_bytes(&data, gix::hash::Kind::Sha1) {
            let entry = entry.map_err(|e| self.read_error(e))?;
            entries.push((
                String::from_utf8_lossy(entry.filename).into_owned(),
                entry.mode.kind(),
                entry.oid.to_owned(),
            ));
        }
        Ok(entries)
    }

    /// The entry at `path` under the tree `root`: its kind and id. The root
    /// itself for the empty path.
    pub fn entry_at(
        &self,
        root: &ObjectId,
        path: &RepoPath,
    ) -> Result<Option<(GitEntryKind, ObjectId)>, GitError> {
        let mut current = (GitEntryKind::Tree, *root);
        for component in path.components() {
            if current.0 != GitEntryKind::Tree {
                return Ok(None);
            }
            let Some((_, kind, id)) = self
                .tree_entries(&current.1)?
                .into_iter()
                .find(|(name, _, _)| name == component)
            else {
                return Ok(None);
            };
            current = (kind, id);
        }
        Ok(Some(current))
    }
}

/// Parses a 40-digit hex id.
pub(crate) fn parse_id(text: &str) -> Result<ObjectId, GitError> {
    ObjectId::from_hex(text.as_bytes()).map_err(|_| GitError::BadId(text.to_owned()))
}

/// The files of one commit, as the config crate reads them.
#[derive(Debug)]
pub struct CommitTree {
    objects: Objects,
    commit: ObjectId,
    tree: ObjectId,
}

impl CommitTree {
    /// The commit `commit` (hex) read through `objects`.
    pub fn open(objects: Objects, commit: &str) -> Result<CommitTree, GitError> {
        let commit = parse_id(commit)?;
        let tree = objects.commit_tree(&commit)?;
        Ok(CommitTree {
            objects,
            commit,
            tree,
        })
    }

    /// The first line of the commit's message (empty when unreadable).
    pub fn subject(&self) -> String {
        let Ok((Kind::Commit, data)) = self.objects.read(&self.commit) else {
            return String::new();
        };
        gix::objs::CommitRef::from_bytes(&data, gix::hash::Kind::Sha1)
            .map(|commit| String::from_utf8_lossy(commit.message_summary().as_ref()).into_owned())
            .unwrap_or_default()
    }

    /// The commit's id.
    pub fn commit_id(&self) -> String {
        self.commit.to_string()
    }

    /// The id of the tree at `path` (the root tree for the empty path), or
    /// `None` when there is no directory there.
    pub fn tree_id(&self, path: &RepoPath) -> Result<Option<String>, GitError> {
        Ok(match self.objects.entry_at(&self.tree, path)? {
            Some((GitEntryKind::Tree, id)) => Some(id.to_string()),
            _ => None,
        })
    }

    fn source_error(path: &RepoPath, error: GitError) -> SourceError {
        SourceError::Other {
            path: path.to_string(),
            message: error.to_string(),
        }
    }
}

impl RepoSource for CommitTree {
    fn read(&self, path: &RepoPath, limit: u64) -> Result<Option<Vec<u8>>, SourceError> {
        let error = |e| Self::source_error(path, e);
        match self.objects.entry_at(&self.tree, path).map_err(error)? {
            None => Ok(None),
            Some((GitEntryKind::Blob | GitEntryKind::BlobExecutable, id)) => {
                let size = self
                    .objects
                    .header(&id)
                    .map_err(error)?
                    .map_or(0, |(s, _)| s);
                if size > limit {
                    return Err(SourceError::TooLarge { size, limit });
                }
                Ok(Some(self.objects.read(&id).map_err(error)?.1))
            }
            Some(_) => Err(SourceError::NotAFile(path.to_string())),
        }
    }

    fn list(&self, path: &RepoPath) -> Result<Option<Vec<Entry>>, SourceError> {
        let error = |e| Self::source_error(path, e);
        let Some((GitEntryKind::Tree, id)) =
            self.objects.entry_at(&self.tree, path).map_err(error)?
        else {
            return Ok(None);
        };
        let mut entries: Vec<Entry> = self
            .objects
            .tree_entries(&id)
            .map_err(error)?
            .into_iter()
            .map(|(name, kind, _)| Entry {
                name,
                kind: match kind {
                    GitEntryKind::Tree => EntryKind::Dir,
                    GitEntryKind::Blob | GitEntryKind::BlobExecutable => EntryKind::File,
                    GitEntryKind::Link => EntryKind::Symlink,
                    GitEntryKind::Commit => EntryKind::Other,
                },
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(entries))
    }
}

/// How many commits `new` brings that `old` (or, for a new branch, any of
/// `other_heads`) did not have, counting at most `cap`.
pub fn count_new_commits(
    repo: &Path,
    old: Option<&str>,
    new: &str,
    other_heads: &[String],
    cap: usize,
) -> Result<usize, GitError> {
    let read_error = |message: String| GitError::Read {
        path: repo.display().to_string(),
        message,
    };
    let repository = gix::open_opts(repo, gix::open::Options::isolated())
        .map_err(|e| read_error(e.to_string()))?;
    let mut hidden = Vec::new();
    for id in old
        .into_iter()
        .chain(other_heads.iter().map(String::as_str))
    {
        hidden.push(parse_id(id)?);
    }
    let walk = repository
        .rev_walk([parse_id(new)?])
        .with_hidden(hidden)
        .all()
        .map_err(|e| read_error(e.to_string()))?;
    let mut count = 0;
    for info in walk.take(cap) {
        info.map_err(|e| read_error(e.to_string()))?;
        count += 1;
    }
    Ok(count)
}
