//! Build keys: what decides whether an app's frozen image can be reused.
//!
//! An app's build key is the SHA-256 of a canonical JSON document holding the
//! key version ([`BUILD_KEY_VERSION`]), the git tree id of the app's
//! `source.root`, its runtime type, the build-visible variables, and the app's
//! normalized config minus what only matters at run time: `web`, `crons`,
//! `workers`, `relationships`, `access`, the crons' `timezone`, `hooks.deploy`
//! and `hooks.post_deploy`. Mounts count (the build sees their directories).
//! Same key, same image: a push that only changes runtime config redeploys
//! without rebuilding, across environments too.
//!
//! The runtime enters the key as the digest of its image, so rebuilding a
//! runtime image rebuilds the apps on it; bumping [`BUILD_KEY_VERSION`]
//! invalidates every key.

use std::collections::BTreeMap;

use launchway_config::{App, RepoPath, Runtime};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{CommitTree, GitError};

/// The version mixed into every build key.
pub const BUILD_KEY_VERSION: u32 = 2;

/// The top-level app keys that do not affect the build.
const RUNTIME_ONLY_KEYS: &[&str] = &[
    "web",
    "crons",
    "workers",
    "relationships",
    "timezone",
    "php_sizing",
    "php_extension_settings",
];
/// The hooks that run after the build.
const RUNTIME_ONLY_HOOKS: &[&str] = &["deploy", "post_deploy"];
/// Kept (not yet acted on) keys that do not affect the build.
const RUNTIME_ONLY_KEPT: &[&str] = &["access", "firewall", "size", "resources"];

/// One app's plan at a commit.
#[derive(Clone, Debug, Serialize)]
pub struct AppPlan {
    /// The app's name.
    pub name: String,
    /// `python:3.11`, …
    pub runtime: String,
    /// The app's `source.root` (`""` for the repository root).
    pub source_root: String,
    /// The git tree id of `source.root`.
    pub tree_id: String,
    /// The app's normalized config.
    #[serde(skip)]
    pub app: App,
}

impl AppPlan {
    /// The build key, once the runtime image is known.
    pub fn build_key(
        &self,
        build_variables: &BTreeMap<String, String>,
        runtime_digest: &str,
    ) -> String {
        build_key(&self.app, &self.tree_id, build_variables, runtime_digest)
    }
}

/// The plan of every app at one commit.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The commit.
    pub commit: String,
    /// The apps, by name.
    pub apps: Vec<AppPlan>,
    /// The routes, normalized (defaults added).
    #[serde(skip)]
    pub routes: Vec<launchway_config::Route>,
    /// The services.
    #[serde(skip)]
    pub services: Vec<launchway_config::Service>,
}

/// The runtime as written in `type:`.
pub fn runtime_type(runtime: &Runtime) -> String {
    match runtime {
        Runtime::Single { name, version } => format!("{name}:{version}"),
        Runtime::Composable {
            channel: Some(channel),
            ..
        } => format!("composable:{channel}"),
        Runtime::Composable { channel: None, .. } => "composable".to_owned(),
    }
}

/// The app's config as the build sees it: without what only matters at run
/// time. It is part of the build key and of `PLATFORM_APPLICATION`.
pub fn build_config(app: &App) -> serde_json::Value {
    let mut config = serde_json::to_value(app).unwrap_or_default();
    if let Some(object) = config.as_object_mut() {
        for key in RUNTIME_ONLY_KEYS {
            object.remove(*key);
        }
        if let Some(hooks) = object.get_mut("hooks").and_then(|h| h.as_object_mut()) {
            for hook in RUNTIME_ONLY_HOOKS {
                hooks.remove(*hook);
            }
        }
        if let Some(kept) = object.get_mut("kept").and_then(|k| k.as_object_mut()) {
            for key in RUNTIME_ONLY_KEPT {
                kept.remove(*key);
            }
        }
    }
    config
}

/// The build key of `app` whose `source.root` has the tree `tree_id`, built
/// on the runtime image `runtime_digest` with `build_variables` visible.
pub fn build_key(
    app: &App,
    tree_id: &str,
    build_variables: &BTreeMap<String, String>,
    runtime_digest: &str,
) -> String {
    let document = serde_json::json!({
        "version": BUILD_KEY_VERSION,
        "tree": tree_id,
        "runtime": runtime_digest,
        "variables": build_variables,
        "config": build_config(app),
    });
    let digest = Sha256::digest(document.to_string().as_bytes());
    hex::encode(digest)
}

/// Reads and validates the config at `tree`'s commit and plans every app.
pub fn plan(tree: &CommitTree) -> Result<Plan, GitError> {
    let loaded = launchway_config::load(tree);
    let Some(config) = loaded.config else {
        return Err(GitError::InvalidConfig {
            commit: tree.commit_id(),
            diagnostics: loaded.diagnostics.to_string(),
        });
    };
    let mut apps = Vec::new();
    for app in config.applications.values() {
        let root = RepoPath::parse(&app.source_root).map_err(|e| GitError::Read {
            path: app.source_root.clone(),
            message: e.to_string(),
        })?;
        // The config crate has checked that source.root is a directory.
        let tree_id = tree.tree_id(&root)?.ok_or_else(|| GitError::Read {
            path: app.source_root.clone(),
            message: "source.root is not a directory at this commit".into(),
        })?;
        apps.push(AppPlan {
            name: app.name.clone(),
            runtime: runtime_type(&app.runtime),
            source_root: app.source_root.clone(),
            tree_id,
            app: app.clone(),
        });
    }
    Ok(Plan {
        commit: tree.commit_id(),
        apps,
        routes: config.routes.clone(),
        services: config.services.values().cloned().collect(),
    })
}
