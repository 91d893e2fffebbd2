//! The cacheable steps before the build hook, as data. Pure.
//!
//! - **Dependencies** (`dependencies:`): one package manager command per
//!   manager, packages as separate arguments (never through a shell; a name
//!   or version starting with `-` is refused so it cannot become an option).
//! - **Flavor**: npm (`npm prune` then `npm install`) when `package.json`
//!   exists, composer (`composer install`) when `composer.json` exists. The
//!   step sees only the files it reads (the manifest, the lockfile, the
//!   tool's config), not the rest of the app: that is what makes its output
//!   reusable while the lockfile does not change. Lifecycle scripts that need
//!   the whole tree belong in the build hook.
//!
//! Each step's output is cached under [`step_key`]: a hash of the image it
//! starts from, what it runs, the files it reads and the environment.

use std::collections::BTreeMap;

use launchway_config::Flavor;
use sha2::{Digest as _, Sha256};

use crate::env::GLOBAL_DIR;

/// One command of the dependencies step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependencyCommand {
    /// The manager's name as written (`python3`, `nodejs`, …).
    pub manager: String,
    /// The argument vector.
    pub args: Vec<String>,
}

/// The managers `dependencies:` may name.
pub const MANAGERS: &[&str] = &["python3", "python", "nodejs", "php", "ruby"];

fn check_word(what: &str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err(format!("an empty {what}"));
    }
    if text.starts_with('-') {
        return Err(format!("the {what} `{text}` starts with `-`"));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the {what} `{text}` holds spaces or control characters"
        ));
    }
    Ok(())
}

/// `name` at `version` for pip: `*` is any version, a leading comparator is
/// kept (`>=1.2`), anything else is an exact version (`2020.*` included).
fn pip_requirement(name: &str, version: &str) -> String {
    if version == "*" {
        name.to_owned()
    } else if version.starts_with(['<', '>', '=', '!', '~']) {
        format!("{name}{version}")
    } else {
        format!("{name}=={version}")
    }
}

/// The commands that install `dependencies`, in manager order.
pub fn dependency_commands(
    dependencies: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Vec<DependencyCommand>, String> {
    let mut commands = Vec::new();
    for (manager, packages) in dependencies {
        if packages.is_empty() {
            continue;
        }
        for (name, version) in packages {
            check_word("package name", name)?;
            check_word("version", version)?;
        }
        let mut args: Vec<String> = match manager.as_str() {
            "python3" | "python" => [
                "python3",
                "-m",
                "pip",
                "install",
                "--user",
                "--break-system-packages",
                "--no-warn-script-location",
                "--disable-pip-version-check",
                "--no-input",
                "--no-cache-dir",
            ]
            .map(str::to_owned)
            .to_vec(),
            "nodejs" => [
                "npm",
                "install",
                "--global",
                "--no-fund",
                "--no-audit",
                "--prefix",
                GLOBAL_DIR,
            ]
            .map(str::to_owned)
            .to_vec(),
            "php" => [
                "composer",
                "global",
                "require",
                "--no-interaction",
                "--no-progress",
            ]
            .map(str::to_owned)
            .to_vec(),
            "ruby" => {
                // gem takes one version per command; one command per gem.
                for (name, version) in packages {
                    let mut args: Vec<String> = [
                        "gem",
                        "install",
                        "--no-document",
                        "--install-dir",
                        GLOBAL_DIR,
                        "--bindir",
                    ]
                    .map(str::to_owned)
                    .to_vec();
                    args.push(format!("{GLOBAL_DIR}/bin"));
                    args.push(name.clone());
                    if version != "*" {
                        args.push("--version".into());
                        args.push(version.clone());
                    }
                    commands.push(DependencyCommand {
                        manager: manager.clone(),
                        args,
                    });
                }
                continue;
            }
            other => {
                return Err(format!(
                    "`dependencies.{other}` is not a package manager Launchway knows; use one of {}",
                    MANAGERS.join(", ")
                ));
            }
        };
        for (name, version) in packages {
            args.push(match manager.as_str() {
                "python3" | "python" => pip_requirement(name, version),
                "nodejs" => format!("{name}@{version}"),
                _ => format!("{name}:{version}"),
            });
        }
        commands.push(DependencyCommand {
            manager: manager.clone(),
            args,
        });
    }
    Ok(commands)
}

/// The flavor step of an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlavorStep {
    /// `npm` or `composer`.
    pub name: &'static str,
    /// The file whose presence turns the step on.
    pub trigger: &'static str,
    /// The files of the app root the step reads (the trigger included).
    pub inputs: &'static [&'static str],
    /// What runs, by `/bin/sh -e -c` (fixed text: no user input).
    pub script: &'static str,
}

const NPM: FlavorStep = FlavorStep {
    name: "npm",
    trigger: "package.json",
    inputs: &[
        "package.json",
        "package-lock.json",
        "npm-shrinkwrap.json",
        ".npmrc",
    ],
    script: "npm prune --userconfig .npmrc && npm install --userconfig .npmrc",
};

const COMPOSER: FlavorStep = FlavorStep {
    name: "composer",
    trigger: "composer.json",
    inputs: &["composer.json", "composer.lock", "auth.json"],
    script: "composer --no-ansi --no-interaction install --no-progress --prefer-dist --optimize-autoloader",
};

/// The step `flavor` runs, if any (whether it runs depends on its trigger file).
pub fn flavor_step(flavor: &Flavor) -> Option<FlavorStep> {
    match flavor {
        Flavor::None => None,
        Flavor::Npm => Some(NPM),
        Flavor::Composer => Some(COMPOSER),
    }
}

/// The cache key of a step: every part length-prefixed, so no two different
/// inputs hash alike.
pub fn step_key(kind: &str, parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"launchway-step-v1\0");
    for part in std::iter::once(kind.as_bytes()).chain(parts.iter().copied()) {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// The environment as bytes for [`step_key`].
pub fn env_bytes(env: &[(String, String)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (name, value) in env {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(
        manager: &str,
        packages: &[(&str, &str)],
    ) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut map = BTreeMap::new();
        map.insert(
            manager.to_owned(),
            packages
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        );
        map
    }

    #[test]
    fn each_manager_installs_under_the_global_dir() {
        let pip = dependency_commands(&deps(
            "python3",
            &[("gunicorn", "*"), ("pipenv", "2020.*"), ("flask", ">=2")],
        ))
        .unwrap_or_default();
        assert_eq!(pip.len(), 1);
        assert!(pip[0].args.ends_with(&[
            "flask>=2".to_owned(),
            "gunicorn".to_owned(),
            "pipenv==2020.*".to_owned()
        ]));
        assert!(pip[0].args.contains(&"--user".to_owned()));

        let npm = dependency_commands(&deps("nodejs", &[("sharp", "0.32")])).unwrap_or_default();
        assert_eq!(npm[0].args.last().map(String::as_str), Some("sharp@0.32"));
        assert!(npm[0].args.contains(&GLOBAL_DIR.to_owned()));

        let gems = dependency_commands(&deps("ruby", &[("sass", "3.4.7"), ("rake", "*")]))
            .unwrap_or_default();
        assert_eq!(gems.len(), 2);
        assert!(gems.iter().any(|c| c.args.ends_with(&[
            "sass".to_owned(),
            "--version".to_owned(),
            "3.4.7".to_owned()
        ])));
        assert!(
            gems.iter()
                .any(|c| c.args.last().map(String::as_str) == Some("rake"))
        );

        let php = dependency_commands(&deps("php", &[("drush/drush", "^12")])).unwrap_or_default();
        assert_eq!(
            php[0].args.last().map(String::as_str),
            Some("drush/drush:^12")
        );
    }

    #[test]
    fn options_smuggled_as_packages_and_unknown_managers_are_refused() {
        for bad in [
            ("--index-url=http://evil", "*"),
            ("ok", "--pre"),
            ("a b", "*"),
            ("", "*"),
        ] {
            let error = dependency_commands(&deps("python3", &[bad])).unwrap_err();
            assert!(
                error.contains("package name") || error.contains("version"),
                "{error}"
            );
        }
        let error = dependency_commands(&deps("cargo", &[("ripgrep", "*")])).unwrap_err();
        assert!(
            error.contains("python3, python, nodejs, php, ruby"),
            "{error}"
        );
    }

    #[test]
    fn step_keys_separate_their_parts() {
        assert_ne!(
            step_key("deps", &[b"ab", b"c"]),
            step_key("deps", &[b"a", b"bc"])
        );
        assert_ne!(step_key("deps", &[b"x"]), step_key("flavor", &[b"x"]));
        assert_eq!(step_key("deps", &[b"x"]), step_key("deps", &[b"x"]));
        assert_eq!(flavor_step(&Flavor::None), None);
        assert_eq!(
            flavor_step(&Flavor::Npm).map(|s| s.trigger),
            Some("package.json")
        );
    }
}
