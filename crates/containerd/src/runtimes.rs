//! Runtime images: what a config's `type: python:3.11` runs on.
//!
//! The catalog maps each type to Debian bookworm packages. An image is built
//! with `mmdebstrap` (minbase plus the packages; apt lists, caches and logs
//! removed; an empty machine-id; user and group `web`, 10000, home `/app`
//! owned by it; timestamps from `SOURCE_DATE_EPOCH`, fixed unless the caller
//! sets one, so the same package versions give the same bytes), imported as
//! `launchway/runtime/<type>`, and checked by running the runtime's version
//! command as uid 10000. It is built on first use and kept.
//!
//! Any type can also be registered from an OCI archive (`runtimes import`),
//! which is how an operator brings a runtime the catalog lacks, or a
//! pre-built one onto a host without a Debian mirror.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::archive::{ImportOptions, import};
use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::image::Image;
use crate::layer::ImageSettings;
use crate::spec::StepSpec;
use crate::step::{Output, Rootfs};

/// Image names of runtimes start with this.
pub const IMAGE_PREFIX: &str = "launchway/runtime/";
/// Label naming the runtime type an image provides.
pub const TYPE_LABEL: &str = "org.launchway.runtime";
/// Where a runtime image came from: `catalog` or `import`.
pub const SOURCE_LABEL: &str = "org.launchway.runtime.source";
/// The timestamp builds use when the caller sets none (2023-11-14).
const DEFAULT_SOURCE_DATE_EPOCH: &str = "1700000000";
const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How to build one runtime type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recipe {
    pub type_name: &'static str,
    pub packages: &'static [&'static str],
    /// Prepended to the base `PATH`, if the runtime's tools live elsewhere.
    pub extra_path: Option<&'static str>,
    /// Prints the runtime's version; run to check a built image.
    pub version_command: &'static [&'static str],
}

/// The runtime types Launchway can build, with bookworm's versions.
pub const CATALOG: &[Recipe] = &[
    Recipe {
        type_name: "python:3.11",
        packages: &["python3", "python3-pip", "python3-venv", "ca-certificates"],
        extra_path: None,
        version_command: &["python3", "--version"],
    },
    Recipe {
        type_name: "nodejs:18",
        packages: &["nodejs", "npm", "ca-certificates"],
        extra_path: None,
        version_command: &["node", "--version"],
    },
    Recipe {
        type_name: "php:8.2",
        packages: &["php8.2-cli", "composer", "ca-certificates"],
        extra_path: None,
        version_command: &["php", "--version"],
    },
    Recipe {
        type_name: "golang:1.19",
        packages: &["golang-1.19-go", "ca-certificates", "git"],
        extra_path: Some("/usr/lib/go-1.19/bin"),
        version_command: &["go", "version"],
    },
    Recipe {
        type_name: "ruby:3.1",
        packages: &["ruby3.1", "ruby", "bundler", "ca-certificates"],
        extra_path: None,
        version_command: &["ruby", "--version"],
    },
];

/// The catalog's recipe for `type_name`.
pub fn recipe(type_name: &str) -> Option<&'static Recipe> {
    CATALOG.iter().find(|recipe| recipe.type_name == type_name)
}

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

/// Build options.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// A Debian mirror URI (default: deb.debian.org plus updates and security).
    pub mirror: Option<String>,
}

fn settings_for(recipe: &Recipe) -> ImageSettings {
    let path = match recipe.extra_path {
        Some(extra) => format!("{extra}:{BASE_PATH}"),
        None => BASE_PATH.to_string(),
    };
    ImageSettings {
        env: vec![
            format!("PATH={path}"),
            "LANG=C.UTF-8".into(),
            "HOME=/app".into(),
        ],
        working_dir: Some("/app".into()),
        user: Some("10000:10000".into()),
        labels: HashMap::from([
            (TYPE_LABEL.to_string(), recipe.type_name.to_string()),
            (SOURCE_LABEL.to_string(), "catalog".to_string()),
            (
                "org.launchway.runtime.packages".to_string(),
                recipe.packages.join(","),
            ),
        ]),
    }
}

/// The mmdebstrap arguments that build `recipe` into `output`.
pub fn mmdebstrap_args(recipe: &Recipe, output: &Path, options: &BuildOptions) -> Vec<String> {
    let mut args = vec![
        "--variant=minbase".to_string(),
        format!("--include={}", recipe.packages.join(",")),
        "--format=tar".to_string(),
        "--customize-hook=chroot \"$1\" groupadd --gid 10000 web".to_string(),
        "--customize-hook=chroot \"$1\" useradd --uid 10000 --gid 10000 --home-dir /app --no-create-home --shell /bin/sh web".to_string(),
        "--customize-hook=mkdir -p \"$1/app\" && chown 10000:10000 \"$1/app\"".to_string(),
        "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/* \"$1\"/var/log/* && : > \"$1/etc/machine-id\"".to_string(),
        "bookworm".to_string(),
        output.display().to_string(),
    ];
    if let Some(mirror) = &options.mirror {
        args.push(mirror.clone());
    }
    args
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
        let say = |line: String| async move {
            let _ = progress.send(line).await;
        };
        say(format!(
            "Building runtime {type_name} from Debian bookworm: {}",
            recipe.packages.join(" ")
        ))
        .await;
        let dir = tempfile::Builder::new()
            .prefix("runtime-")
            .tempdir_in(self.scratch())
            .map_err(|error| EngineError::io("creating a build directory", error))?;
        let tar = dir.path().join("rootfs.tar");
        let mut command = tokio::process::Command::new("mmdebstrap");
        command
            .args(mmdebstrap_args(recipe, &tar, options))
            .env(
                "SOURCE_DATE_EPOCH",
                std::env::var("SOURCE_DATE_EPOCH")
                    .unwrap_or_else(|_| DEFAULT_SOURCE_DATE_EPOCH.into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|error| {
            EngineError::io("starting mmdebstrap (apt-get install mmdebstrap)", error)
        })?;
        let mut tail: Vec<String> = Vec::new();
        let (lines_out, mut lines) = mpsc::channel::<String>(64);
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let sender = lines_out.clone();
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if sender.send(line).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(lines_out);
        while let Some(line) = lines.recv().await {
            tail.push(line.clone());
            if tail.len() > 20 {
                tail.remove(0);
            }
            say(format!("  {line}")).await;
        }
        let status = child
            .wait()
            .await
            .map_err(|error| EngineError::io("waiting for mmdebstrap", error))?;
        if !status.success() {
            return Err(EngineError::Invalid {
                what: "runtime build",
                reason: format!(
                    "mmdebstrap failed ({status}); its last lines:\n{}",
                    tail.join("\n")
                ),
            });
        }
        let size = std::fs::metadata(&tar).map(|m| m.len()).unwrap_or(0);
        say(format!(
            "Importing the root filesystem ({:.0} MB)",
            size as f64 / 1e6
        ))
        .await;
        let image = self
            .import_rootfs(&tar, &image_name(type_name), &settings_for(recipe))
            .await?;
        drop(dir);
        match self.check_runtime(&image, recipe.version_command).await {
            Ok(version) => {
                say(format!(
                    "Runtime {type_name} ready: {version} ({})",
                    image.digest()
                ))
                .await;
                Ok(image)
            }
            Err(error) => {
                let _ = self.delete_image(&image.name).await;
                Err(error)
            }
        }
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
        assert!(args.iter().any(|a| a.starts_with("--include=python3,")));
        assert!(args.iter().any(|a| a.contains("useradd --uid 10000")));
        assert_eq!(args[args.len() - 2], "bookworm");
        let settings = settings_for(recipe);
        assert_eq!(settings.user.as_deref(), Some("10000:10000"));
    }
}
