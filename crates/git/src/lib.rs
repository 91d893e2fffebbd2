//! Launchway's bare repositories.
//!
//! - [`Git`] runs the real `git` (`init --bare`, `receive-pack`, `upload-pack`)
//!   with a hermetic environment: no system or global config, an empty `HOME`,
//!   no prompts, only the variables Launchway sets.
//! - [`CommitTree`] reads the files of one commit with gix, looking in a push's
//!   quarantine directory first, so a pushed commit can be checked before any
//!   ref points at it. It is the config crate's [`launchway_config::RepoSource`]
//!   for commits.
//! - [`plan`] reads each app's tree at a commit; [`build_key`] is what decides
//!   whether its image can be reused.
//! - [`write_tree_tar`] writes an app's tree as the tar the build unpacks.
//! - [`RefUpdate`] is one line of what `pre-receive`/`post-receive` hooks read.

mod command;
mod export;
mod objects;
mod plan;
mod refs;

pub use command::{Git, GitService, MAINTAIN_PACK_LIMIT, PushLimits};
pub use export::{TarOptions, TarStats, write_tree_tar};
pub use objects::{CommitTree, Objects, count_new_commits};
pub use plan::{AppPlan, BUILD_KEY_VERSION, Plan, build_config, build_key, plan, runtime_type};
pub use refs::{RefUpdate, ZERO_ID};

/// What reading or running git can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// `git` could not be started.
    #[error("cannot run `{program}`")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A git command failed.
    #[error("`git {command}` failed with {status}: {stderr}")]
    Command {
        /// The subcommand.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The repository or one of its objects could not be read.
    #[error("cannot read the repository at {path}: {message}")]
    Read {
        /// The repository.
        path: String,
        /// What failed.
        message: String,
    },
    /// An object is missing.
    #[error("object {0} is missing from the repository")]
    Missing(String),
    /// An id that is not a hex object id.
    #[error("`{0}` is not an object id")]
    BadId(String),
    /// The config at the commit is invalid; the diagnostics say why.
    #[error("the configuration at commit {commit} is invalid")]
    InvalidConfig {
        /// The commit.
        commit: String,
        /// The diagnostics, `file:line:col: error: …`.
        diagnostics: String,
    },
}
