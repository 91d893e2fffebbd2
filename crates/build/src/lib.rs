//! Launchway's build stage.
//!
//! For each app of a pushed commit: resolve the runtime image (built on
//! first use), compute the build key ([`launchway_git::build_key`] over the
//! tree, the build config, the build-visible variables and the runtime image
//! digest); reuse `launchway/build/<key>` when it exists, otherwise build it
//! with [`Builder::build`]:
//!
//! 1. **dependencies** (`dependencies:`) and 2. the **flavor** (npm,
//!    composer) run with network, each cached as an image under a hash of
//!    what it reads ([`steps`]), so an unchanged lockfile costs nothing;
//! 3. the app's tree is unpacked into `/app`, owned by uid 10000;
//! 4. `hooks.build` runs with `/bin/sh -e -c` (dash on Debian images, as on
//!    Platform.sh), as uid 10000, cwd `/app`, with no network at all (only
//!    loopback; in the namespace its caller prepares, where the egress proxy
//!    listens, see [`HookNetwork`]), no services, no mounts, `/tmp` scratch and
//!    `$PLATFORM_CACHE_DIR` bind-mounted from the project's per-app cache
//!    (`<data>/build-cache/<project>/<app>`, shared by every branch, never in
//!    the image);
//! 5. the workspace is **frozen** into an OCI image.
//!
//! Builds take a slot from a queue (`[build] concurrency`, one by default),
//! and run with CPU, memory and pids limits and a deadline
//! (`[build] timeout_secs`, one hour by default).

mod builder;
pub mod cache_artifact;
pub mod env;
pub mod plane;
mod recipe;
mod settings;
pub mod steps;
pub mod trust;

use std::path::Path;

pub use builder::{
    APP_ANNOTATION, AppJob, BUILD_ID_ANNOTATION, BUILD_IMAGE_PREFIX, Builder, Built, HookNetwork,
    KEY_ANNOTATION, LogSender, Resolved, SOURCE_MTIME, STEP_IMAGE_PREFIX, STEPS_ANNOTATION, Slot,
    TREE_ANNOTATION, build_image_name,
};
pub use recipe::{CachedStep, RECIPE_VERSION, Recipe, build_hook, has_build_hook};
pub use settings::{BuildSettings, DependencyNetwork};

/// What a build can fail with. The messages go to the pusher.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// containerd refused or failed.
    #[error(transparent)]
    Engine(#[from] launchway_containerd::EngineError),
    /// The repository could not be read.
    #[error(transparent)]
    Git(#[from] launchway_git::GitError),
    /// The app's config cannot be built as written.
    #[error("{0}")]
    Config(String),
    /// A step ended badly.
    #[error("{step} {how}")]
    StepFailed {
        /// Which step.
        step: String,
        /// How it ended.
        how: String,
        /// Whether the build hook's output says it tried to reach the
        /// network and could not.
        network_failure: bool,
    },
    /// The build ran out of time.
    #[error("the build took longer than its limit of {limit_secs} s (`[build] timeout_secs`)")]
    TimedOut {
        /// The limit.
        limit_secs: u64,
    },
    /// The build was cancelled.
    #[error("the build was cancelled")]
    Cancelled,
    /// The image registry failed or sent what it must not.
    #[error(transparent)]
    Registry(#[from] launchway_registry::RegistryError),
    /// A file of the data directory.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl BuildError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> BuildError {
        BuildError::Io {
            path: path.display().to_string(),
            message: error.to_string(),
        }
    }
}
