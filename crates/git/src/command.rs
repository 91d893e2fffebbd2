//! Running the real `git` with a hermetic environment.
//!
//! The environment is cleared: `PATH` holds only git's directory and
//! `/usr/bin:/bin`, `HOME` is an empty directory of Launchway's, system and
//! global config are off and nothing may prompt. Settings Launchway relies on
//! are passed with `-c` on every call, so they hold for repositories created
//! by any version: the hooks directory, push options, and the size limit.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::GitError;

/// Packs a repository may have before [`Git::maintain`] repacks them into
/// one (git's default is 50; each push adds one).
pub const MAINTAIN_PACK_LIMIT: u32 = 20;

/// A git service a client asks for over SSH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GitService {
    /// `git-receive-pack`: a push.
    ReceivePack,
    /// `git-upload-pack`: a fetch or clone.
    UploadPack,
}

impl GitService {
    /// The git subcommand.
    pub fn subcommand(self) -> &'static str {
        match self {
            GitService::ReceivePack => "receive-pack",
            GitService::UploadPack => "upload-pack",
        }
    }
}

/// Limits applied to pushes.
#[derive(Clone, Copy, Debug)]
pub struct PushLimits {
    /// `receive.maxInputSize`: the largest pack a push may send, in bytes.
    pub max_pack_bytes: u64,
}

/// How Launchway runs git.
#[derive(Clone, Debug)]
pub struct Git {
    program: PathBuf,
    home: PathBuf,
    hooks: PathBuf,
    limits: PushLimits,
}

impl Git {
    /// `program` is the git binary, `home` an empty directory to use as
    /// `HOME`, `hooks` the directory of Launchway's hook scripts.
    pub fn new(program: PathBuf, home: PathBuf, hooks: PathBuf, limits: PushLimits) -> Git {
        Git {
            program,
            home,
            hooks,
            limits,
        }
    }

    /// Finds `git` on `PATH`.
    pub fn find_program() -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("git"))
            .find(|candidate| candidate.is_file())
    }

    fn hermetic(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        let mut path = OsString::new();
        if let Some(dir) = self.program.parent() {
            path.push(dir.as_os_str());
            path.push(":");
        }
        path.push("/usr/bin:/bin");
        command
            .env_clear()
            .env("PATH", path)
            .env("HOME", &self.home)
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// A ready-to-spawn `git receive-pack`/`upload-pack` on `repo`, with
    /// stdio piped and `extra_env` (the session token, `GIT_PROTOCOL`) set.
    pub fn service(
        &self,
        service: GitService,
        repo: &Path,
        extra_env: &[(String, String)],
    ) -> tokio::process::Command {
        let mut command = self.hermetic();
        let mut hooks_path = OsString::from("core.hooksPath=");
        hooks_path.push(self.hooks.as_os_str());
        command
            .arg("-c")
            .arg(hooks_path)
            .args(["-c", "receive.advertisePushOptions=true"])
            .args(["-c", "receive.denyDeleteCurrent=false"])
            .args(["-c", "uploadpack.allowFilter=true"])
            // Each push stays one pack (git would explode small ones into
            // loose objects) and receive-pack never runs gc inside a push:
            // [`Git::maintain`] packs in the background.
            .args(["-c", "receive.unpackLimit=1"])
            .args(["-c", "receive.autogc=false"])
            .arg("-c")
            .arg(format!(
                "receive.maxInputSize={}",
                self.limits.max_pack_bytes
            ))
            .arg(service.subcommand())
            .arg(repo)
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Packs `repo` when it needs it (`git gc --auto`: more than
    /// [`MAINTAIN_PACK_LIMIT`] packs or git's loose-object threshold),
    /// in the foreground of this call; the caller keeps pushes out meanwhile.
    /// Objects no ref reaches stay for git's default two weeks, so a reader
    /// holding one (a build, an export) never loses it.
    pub async fn maintain(&self, repo: &Path) -> Result<(), GitError> {
        let mut command = self.hermetic();
        command
            .arg("--git-dir")
            .arg(repo)
            .args(["-c", "gc.autoDetach=false"])
            .arg("-c")
            .arg(format!("gc.autoPackLimit={MAINTAIN_PACK_LIMIT}"))
            .args(["gc", "--auto", "--quiet"]);
        self.run(command, "gc --auto").await
    }

    /// Creates the bare repository `repo` whose `HEAD` names `default_branch`.
    pub async fn init_bare(&self, repo: &Path, default_branch: &str) -> Result<(), GitError> {
        let mut command = self.hermetic();
        command
            .arg("init")
            .arg("--quiet")
            .arg("--bare")
            .arg(format!("--initial-branch={default_branch}"))
            .arg(repo);
        self.run(command, "init --bare").await
    }

    /// Deletes the branch `branch` of `repo` if it still points at
    /// `expected` (a branch moved since is left alone: git refuses).
    pub async fn delete_branch(
        &self,
        repo: &Path,
        branch: &str,
        expected: &str,
    ) -> Result<(), GitError> {
        let mut command = self.hermetic();
        command
            .arg("--git-dir")
            .arg(repo)
            .args(["update-ref", "-d"])
            .arg(format!("refs/heads/{branch}"))
            .arg(expected);
        self.run(command, "update-ref -d").await
    }

    /// Moves the branch `branch` of `repo` to `new` if it still points at
    /// `expected` (git refuses otherwise: a push moved it meanwhile).
    pub async fn update_branch(
        &self,
        repo: &Path,
        branch: &str,
        new: &str,
        expected: &str,
    ) -> Result<(), GitError> {
        let mut command = self.hermetic();
        command
            .arg("--git-dir")
            .arg(repo)
            .arg("update-ref")
            .arg(format!("refs/heads/{branch}"))
            .arg(new)
            .arg(expected);
        self.run(command, "update-ref").await
    }

    /// Whether commit `ancestor` is `descendant` or one of its ancestors.
    pub async fn is_ancestor(
        &self,
        repo: &Path,
        ancestor: &str,
        descendant: &str,
    ) -> Result<bool, GitError> {
        let mut command = self.hermetic();
        command
            .arg("--git-dir")
            .arg(repo)
            .args(["merge-base", "--is-ancestor", ancestor, descendant])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let output = command.output().await.map_err(|source| GitError::Spawn {
            program: self.program.display().to_string(),
            source,
        })?;
        match output.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(GitError::Command {
                command: "merge-base --is-ancestor".to_owned(),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            }),
        }
    }

    /// Records the files of `dir` as a commit of `repo` (parent `parent`),
    /// kept reachable by `reference`; `index` is a scratch index file. The
    /// tree is what `git add -A` sees, so `.gitignore` files in `dir` apply.
    pub async fn commit_directory(
        &self,
        repo: &Path,
        dir: &Path,
        index: &Path,
        parent: Option<&str>,
        message: &str,
        reference: &str,
    ) -> Result<String, GitError> {
        let mut add = self.hermetic();
        add.arg("--git-dir")
            .arg(repo)
            .arg("--work-tree")
            .arg(dir)
            .env("GIT_INDEX_FILE", index)
            .args(["add", "-A", "."])
            .current_dir(dir);
        self.run(add, "add").await?;
        let mut write = self.hermetic();
        write
            .arg("--git-dir")
            .arg(repo)
            .env("GIT_INDEX_FILE", index)
            .arg("write-tree");
        let tree = self.output(write, "write-tree").await?;
        let mut commit = self.hermetic();
        commit
            .arg("--git-dir")
            .arg(repo)
            .envs([
                ("GIT_AUTHOR_NAME", "Launchway"),
                ("GIT_AUTHOR_EMAIL", "launchway@localhost"),
                ("GIT_COMMITTER_NAME", "Launchway"),
                ("GIT_COMMITTER_EMAIL", "launchway@localhost"),
            ])
            .args(["commit-tree", &tree, "-m", message]);
        if let Some(parent) = parent {
            commit.args(["-p", parent]);
        }
        let id = self.output(commit, "commit-tree").await?;
        let mut update = self.hermetic();
        update
            .arg("--git-dir")
            .arg(repo)
            .args(["update-ref", reference, &id]);
        self.run(update, "update-ref").await?;
        Ok(id)
    }

    /// Deletes `reference` of `repo` (an upload refused after all).
    pub async fn delete_ref(&self, repo: &Path, reference: &str) -> Result<(), GitError> {
        let mut command = self.hermetic();
        command
            .arg("--git-dir")
            .arg(repo)
            .args(["update-ref", "-d", reference]);
        self.run(command, "update-ref -d").await
    }

    async fn output(
        &self,
        mut command: tokio::process::Command,
        name: &str,
    ) -> Result<String, GitError> {
        let output = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|source| GitError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(GitError::Command {
                command: name.to_owned(),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    async fn run(&self, command: tokio::process::Command, name: &str) -> Result<(), GitError> {
        self.output(command, name).await.map(drop)
    }
}
