//! What one app's build runs, computed where the repository and the
//! daemon's state are, so that it can be executed on another host.
//!
//! A [`Recipe`] holds everything [`crate::Builder::execute`] needs besides
//! the tree's tar: the base image (runtime name and digest, so a builder can
//! fetch exactly the one the build key was made with), the cached steps with
//! the flavor's input files already read, the environments (the hook's, with
//! the build's sensitive variables and the project entropy, and the steps'),
//! the hook, and the image's name and annotations. It is serialisable; it is
//! never written to disk by a builder and never logged, because it carries
//! secrets.

use std::collections::BTreeMap;
use std::path::Path;

use launchway_config::{RepoPath, RepoSource as _};
use launchway_containerd::Image;
use launchway_git::{CommitTree, Objects};
use serde::{Deserialize, Serialize};

use crate::BuildError;
use crate::builder::{
    APP_ANNOTATION, AppJob, BUILD_ID_ANNOTATION, KEY_ANNOTATION, Resolved, TREE_ANNOTATION,
    build_image_name,
};
use crate::env::{BuildContext, build_env};
use crate::steps::{dependency_commands, flavor_step};

/// The version of [`Recipe`]'s shape; a host refuses another.
pub const RECIPE_VERSION: u32 = 1;

/// Build variables the dependencies and flavor steps do not get.
const TREE_SPECIFIC: &[&str] = &["PLATFORM_TREE_ID", "PLATFORM_APPLICATION"];

/// One app's build, ready to execute anywhere.
#[derive(Clone, Serialize, Deserialize)]
pub struct Recipe {
    /// The project.
    pub project: String,
    /// The app.
    pub app: String,
    /// The tree the build unpacks.
    pub tree_id: String,
    /// The build this app is part of.
    pub build_id: String,
    /// The build key.
    pub key: String,
    /// The runtime image the build starts from.
    pub base: String,
    /// Its manifest digest.
    pub base_digest: String,
    /// The hook's environment.
    pub hook_env: Vec<(String, String)>,
    /// The cached steps' environment (without what changes with every tree).
    pub step_env: Vec<(String, String)>,
    /// The dependencies and flavor steps, in order.
    pub steps: Vec<CachedStep>,
    /// `hooks.build`, when it has something to run.
    pub hook: Option<String>,
    /// The name of the frozen image.
    pub image: String,
    /// The frozen image's annotations (the steps it started from are added
    /// by whoever runs them).
    pub annotations: BTreeMap<String, String>,
    /// The generation of the app's build cache in the registry.
    #[serde(default)]
    pub cache_generation: u64,
}

impl std::fmt::Debug for Recipe {
    // The environments carry secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recipe")
            .field("project", &self.project)
            .field("app", &self.app)
            .field("key", &self.key)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A dependencies or flavor step: the files it reads (put in `/app`) and
/// the commands it runs, each with what to call it when it fails.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CachedStep {
    /// `dependencies` or `flavor`.
    pub kind: String,
    /// Its line in the log.
    pub title: String,
    /// The files it reads, by name in the app root.
    #[serde(with = "files_base64")]
    pub files: Vec<(String, Vec<u8>)>,
    /// What runs: what to call it, and its argv.
    pub commands: Vec<(String, Vec<String>)>,
}

impl Recipe {
    /// The recipe of `job`, whose runtime and key are `resolved`.
    pub async fn new(job: &AppJob<'_>, resolved: &Resolved) -> Result<Recipe, BuildError> {
        let plan = job.plan;
        let context = BuildContext {
            project: job.project,
            app: &plan.app,
            tree_id: &plan.tree_id,
            variables: job.variables,
            entropy: job.entropy,
        };
        let image_path = path_of(&resolved.runtime);
        let hook_env = build_env(&context, image_path.as_deref());
        // The cached steps do not see what changes with every tree or hook,
        // so their key (which hashes their environment) survives those changes.
        let step_env: Vec<(String, String)> = hook_env
            .iter()
            .filter(|(name, _)| !TREE_SPECIFIC.contains(&name.as_str()))
            .cloned()
            .collect();
        let mut steps = Vec::new();
        // Dependencies, with network.
        let commands = dependency_commands(&plan.app.dependencies).map_err(BuildError::Config)?;
        if !commands.is_empty() {
            steps.push(CachedStep {
                kind: "dependencies".into(),
                title: "Installing build dependencies...".into(),
                files: Vec::new(),
                commands: commands
                    .into_iter()
                    .map(|c| (format!("installing {} dependencies", c.manager), c.args))
                    .collect(),
            });
        }
        // The flavor, with network, when its trigger file exists.
        if let Some(flavor) = flavor_step(&plan.app.flavor) {
            let files = read_inputs(job.repo, job.commit, &plan.source_root, flavor.inputs).await?;
            if files.iter().any(|(name, _)| name == flavor.trigger) {
                let script = vec![
                    "/bin/sh".into(),
                    "-e".into(),
                    "-c".into(),
                    flavor.script.into(),
                ];
                steps.push(CachedStep {
                    kind: "flavor".into(),
                    title: format!("Running the {} flavor...", flavor.name),
                    files,
                    commands: vec![(format!("the {} flavor", flavor.name), script)],
                });
            }
        }
        let hook = build_hook(&plan.app).map(str::to_owned);
        let annotations = BTreeMap::from([
            (BUILD_ID_ANNOTATION.to_owned(), job.build_id.to_owned()),
            (APP_ANNOTATION.to_owned(), plan.name.clone()),
            (TREE_ANNOTATION.to_owned(), plan.tree_id.clone()),
            (KEY_ANNOTATION.to_owned(), resolved.key.clone()),
        ]);
        Ok(Recipe {
            project: job.project.to_owned(),
            app: plan.name.clone(),
            tree_id: plan.tree_id.clone(),
            build_id: job.build_id.to_owned(),
            key: resolved.key.clone(),
            base: resolved.runtime.name.clone(),
            base_digest: resolved.runtime.digest().to_owned(),
            hook_env,
            step_env,
            steps,
            hook,
            image: build_image_name(&resolved.key),
            annotations,
            cache_generation: job.cache_generation,
        })
    }

    /// The recipe as bytes for another host.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A recipe another host sent, checked for what a build relies on.
    pub fn from_json(bytes: &[u8]) -> Result<Recipe, BuildError> {
        let recipe: Recipe = serde_json::from_slice(bytes).map_err(|error| {
            BuildError::Config(format!("the build recipe cannot be read: {error}"))
        })?;
        let key_ok = recipe.key.len() == 64 && recipe.key.bytes().all(|b| b.is_ascii_hexdigit());
        if !key_ok || recipe.image != build_image_name(&recipe.key) {
            return Err(BuildError::Config(format!(
                "the build recipe names an invalid key or image ({})",
                recipe.image
            )));
        }
        if recipe.steps.iter().any(|step| {
            step.files.iter().any(|(name, _)| {
                name.is_empty()
                    || name.contains('/')
                    || name.contains('\0')
                    || name == "."
                    || name == ".."
            })
        }) {
            return Err(BuildError::Config(
                "the build recipe has a step input outside the app root".into(),
            ));
        }
        Ok(recipe)
    }
}

/// `hooks.build`, when it has something to run.
pub fn build_hook(app: &launchway_config::App) -> Option<&str> {
    app.hooks
        .build
        .as_deref()
        .filter(|hook| !hook.trim().is_empty())
}

/// Whether `app` has a build hook to run.
pub fn has_build_hook(app: &launchway_config::App) -> bool {
    build_hook(app).is_some()
}

/// The image's `PATH`, if it sets one.
fn path_of(image: &Image) -> Option<String> {
    image
        .env()
        .into_iter()
        .find_map(|entry| entry.strip_prefix("PATH=").map(str::to_owned))
}

/// The files of `names` at the app root that exist at the commit.
async fn read_inputs(
    repo: &Path,
    commit: &str,
    source_root: &str,
    names: &'static [&'static str],
) -> Result<Vec<(String, Vec<u8>)>, BuildError> {
    let repo = repo.to_path_buf();
    let commit = commit.to_owned();
    let root = source_root.to_owned();
    tokio::task::spawn_blocking(move || {
        let tree = CommitTree::open(Objects::open(&repo, None)?, &commit)?;
        let mut found = Vec::new();
        for name in names {
            let path = if root.is_empty() {
                (*name).to_owned()
            } else {
                format!("{}/{name}", root.trim_end_matches('/'))
            };
            let Ok(path) = RepoPath::parse(&path) else {
                continue;
            };
            match tree.read(&path, 64 * 1024 * 1024) {
                Ok(Some(content)) => found.push(((*name).to_owned(), content)),
                Ok(None) => {}
                Err(error) => return Err(BuildError::Config(format!("reading {path}: {error}"))),
            }
        }
        Ok(found)
    })
    .await
    .map_err(|error| BuildError::Config(error.to_string()))?
}

/// Step input files as `[name, base64]` pairs: lockfiles can be large, and
/// JSON arrays of numbers would quadruple them.
mod files_base64 {
    use base64::Engine as _;
    use serde::{Deserialize as _, Deserializer, Serializer, ser::SerializeSeq as _};

    pub(super) fn serialize<S: Serializer>(
        files: &[(String, Vec<u8>)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(files.len()))?;
        for (name, content) in files {
            let encoded = base64::engine::general_purpose::STANDARD.encode(content);
            seq.serialize_element(&(name, encoded))?;
        }
        seq.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
        let pairs = Vec::<(String, String)>::deserialize(deserializer)?;
        pairs
            .into_iter()
            .map(|(name, encoded)| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map(|content| (name, content))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Recipe {
        Recipe {
            project: "shop".into(),
            app: "web".into(),
            tree_id: "t".into(),
            build_id: "B123456789".into(),
            key: "a".repeat(64),
            base: "launchway/runtime/python:3.11".into(),
            base_digest: format!("sha256:{}", "b".repeat(64)),
            hook_env: vec![("SECRET".into(), "s3cret".into())],
            step_env: Vec::new(),
            steps: vec![CachedStep {
                kind: "flavor".into(),
                title: "Running the npm flavor...".into(),
                files: vec![("package.json".into(), b"{\"a\":1}\n\xff".to_vec())],
                commands: vec![("the npm flavor".into(), vec!["/bin/sh".into()])],
            }],
            hook: Some("echo hi".into()),
            image: build_image_name(&"a".repeat(64)),
            annotations: BTreeMap::new(),
            cache_generation: 0,
        }
    }

    #[test]
    fn a_recipe_survives_the_wire_and_hides_its_secrets_from_debug() {
        let recipe = sample();
        let back = Recipe::from_json(&recipe.to_json()).expect("valid");
        assert_eq!(back.steps[0].files, recipe.steps[0].files);
        assert_eq!(back.hook_env, recipe.hook_env);
        assert!(!format!("{recipe:?}").contains("s3cret"));
    }

    #[test]
    fn a_recipe_with_a_bad_key_image_or_input_is_refused() {
        let mut bad_key = sample();
        bad_key.key = "../x".into();
        assert!(Recipe::from_json(&bad_key.to_json()).is_err());
        let mut other_image = sample();
        other_image.image = "launchway/build/other".into();
        assert!(Recipe::from_json(&other_image.to_json()).is_err());
        let mut escaping = sample();
        escaping.steps[0].files[0].0 = "../etc/passwd".into();
        assert!(Recipe::from_json(&escaping.to_json()).is_err());
        assert!(Recipe::from_json(b"{not json").is_err());
    }
}
