//! Composable images: a stack's runtimes and packages as one Debian image.
//!
//! Each runtime (`php@8.4`) resolves to a catalog recipe as a `type:`
//! does (the exact version, else the nearest), all from one Debian suite:
//! the suite where the most entries are exact (ties: the suite of the
//! first runtime's own resolution). Recipes made of downloaded binaries
//! only (Node.js 22 and 24) fit any suite. The image is the union of the
//! recipes' packages, downloads and setup hooks plus the Debian packages
//! of the stack's packages ([`launchway_config::stack::STACK_PACKAGES`]),
//! named by a hash of all that: the same stack gives the same image.

use sha2::{Digest as _, Sha256};

use super::catalog::{CATALOG, Recipe, Suite, TOOLSET, version_numbers};

/// A stack resolved to what its image is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Composition {
    /// `composable:<12 hex>`, the image's runtime type.
    pub type_name: String,
    /// The suite and whether its backports are needed.
    pub suite: Suite,
    /// The runtimes' recipes, in stack order.
    pub recipes: Vec<&'static Recipe>,
    /// The Debian packages of the stack's packages.
    pub packages: Vec<&'static str>,
    /// `python:3.11 + sqlite (Debian bookworm)`, for logs and records.
    pub summary: String,
    /// One line per runtime that resolved to another version.
    pub notes: Vec<String>,
}

/// Why a stack cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    /// A runtime the catalog does not build.
    #[error("`{entry}`: this host builds no {family} runtime (it builds {families})")]
    UnknownRuntime {
        entry: String,
        family: String,
        families: String,
    },
    /// A runtime whose version is not numbers.
    #[error("`{entry}`: a stack runtime is `family@version`, the version in numbers")]
    Shape { entry: String },
    /// A package no mapping names.
    #[error("`{entry}` is not a package Launchway's composable images offer")]
    UnknownPackage { entry: String },
    /// Exact versions are demanded and no suite has them all.
    #[error(
        "no Debian release here has {entries} exactly; pick versions one release has (`launchway runtimes list`), or set `[runtimes] exact_versions = false` to run the nearest"
    )]
    NotExact { entries: String },
}

/// A recipe made only of downloads (and libraries every suite has) fits
/// any suite.
fn portable(recipe: &Recipe) -> bool {
    !recipe.tarballs.is_empty() && recipe.packages.iter().all(|p| *p == "libstdc++6")
}

/// The offers of `family` usable in `suite`, with their versions.
fn offers_in(family: &str, suite: Option<&str>) -> Vec<(&'static Recipe, Vec<u64>)> {
    CATALOG
        .iter()
        .filter(|recipe| recipe.family() == family)
        .filter(|recipe| suite.is_none_or(|s| recipe.suite.name == s || portable(recipe)))
        .filter_map(|recipe| version_numbers(recipe.version()).map(|n| (recipe, n)))
        .collect()
}

fn is_exact(asked: &[u64], offered: &[u64]) -> bool {
    let common = asked.len().min(offered.len());
    asked[..common] == offered[..common]
}

/// The nearest offer to `asked`, as [`super::catalog::resolve`] picks.
fn nearest(offers: &[(&'static Recipe, Vec<u64>)], asked: &[u64]) -> Option<&'static Recipe> {
    let named: Vec<(&'static str, Vec<u64>)> = offers
        .iter()
        .map(|(recipe, numbers)| (recipe.type_name, numbers.clone()))
        .collect();
    let chosen = super::catalog::nearest_type(&named, asked);
    offers
        .iter()
        .map(|(recipe, _)| *recipe)
        .find(|recipe| recipe.type_name == chosen)
}

/// Resolves a stack: `runtimes` as `family@version`, `packages` as the
/// stack names them.
pub fn compose(
    runtimes: &[String],
    packages: &[String],
    exact: bool,
) -> Result<Composition, ComposeError> {
    let mut asked: Vec<(&str, &str, Vec<u64>)> = Vec::new();
    for entry in runtimes {
        let (family, version) = entry.split_once('@').unwrap_or((entry, ""));
        if offers_in(family, None).is_empty() {
            return Err(ComposeError::UnknownRuntime {
                entry: entry.clone(),
                family: family.to_owned(),
                families: super::catalog::families().join(", "),
            });
        }
        let numbers = version_numbers(version).ok_or_else(|| ComposeError::Shape {
            entry: entry.clone(),
        })?;
        asked.push((entry, family, numbers));
    }
    let mut debian: Vec<&'static str> = Vec::new();
    let mut package_names = Vec::new();
    for entry in packages {
        let mapped = launchway_config::stack::stack_package(entry).ok_or_else(|| {
            ComposeError::UnknownPackage {
                entry: entry.clone(),
            }
        })?;
        package_names.push(entry.as_str());
        for package in mapped {
            if !debian.contains(package) && !TOOLSET.contains(package) {
                debian.push(package);
            }
        }
    }

    // The first runtime's own choice breaks ties between suites.
    let preferred = asked
        .first()
        .and_then(|(_, family, numbers)| nearest(&offers_in(family, None), numbers))
        .map_or("trixie", |recipe| recipe.suite.name);
    let mut suites: Vec<&'static str> = Vec::new();
    for recipe in CATALOG {
        if !suites.contains(&recipe.suite.name) {
            suites.push(recipe.suite.name);
        }
    }
    suites.sort_by_key(|suite| *suite != preferred);
    let mut best: Option<(usize, &'static str, Vec<&'static Recipe>)> = None;
    for suite in suites {
        let chosen: Option<Vec<&'static Recipe>> = asked
            .iter()
            .map(|(_, family, numbers)| nearest(&offers_in(family, Some(suite)), numbers))
            .collect();
        let Some(chosen) = chosen else { continue };
        let exact_count = chosen
            .iter()
            .zip(&asked)
            .filter(|(recipe, (_, _, numbers))| {
                version_numbers(recipe.version()).is_some_and(|offered| is_exact(numbers, &offered))
            })
            .count();
        if best
            .as_ref()
            .is_none_or(|(count, _, _)| exact_count > *count)
        {
            best = Some((exact_count, suite, chosen));
        }
    }
    let (exact_count, suite_name, recipes) = best.unwrap_or((0, preferred, Vec::new()));
    if exact && exact_count < asked.len() {
        return Err(ComposeError::NotExact {
            entries: runtimes.join(", "),
        });
    }
    let suite = Suite {
        name: suite_name,
        backports: recipes
            .iter()
            .any(|recipe| recipe.suite.backports && recipe.suite.name == suite_name),
    };
    let notes = recipes
        .iter()
        .zip(&asked)
        .filter(|(recipe, (_, _, numbers))| {
            !version_numbers(recipe.version()).is_some_and(|offered| is_exact(numbers, &offered))
        })
        .map(|(recipe, (entry, _, _))| {
            format!(
                "{entry} is not available here; the stack uses {} instead",
                recipe.type_name
            )
        })
        .collect();
    let mut parts: Vec<&str> = recipes.iter().map(|recipe| recipe.type_name).collect();
    parts.extend(package_names);
    let summary = format!("{} (Debian {suite_name})", parts.join(" + "));
    let mut hash = Sha256::new();
    hash.update(suite_name.as_bytes());
    hash.update([u8::from(suite.backports)]);
    for recipe in &recipes {
        hash.update(b"\0runtime:");
        hash.update(recipe.type_name.as_bytes());
    }
    let mut sorted = debian.clone();
    sorted.sort_unstable();
    for package in &sorted {
        hash.update(b"\0package:");
        hash.update(package.as_bytes());
    }
    let type_name = format!("composable:{}", &hex::encode(hash.finalize())[..12]);
    Ok(Composition {
        type_name,
        suite,
        recipes,
        packages: debian,
        summary,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_stack_takes_one_suite_where_the_most_runtimes_are_exact() {
        let c = compose(
            &strings(&["php@8.4", "nodejs@22"]),
            &strings(&["ffmpeg"]),
            false,
        )
        .unwrap();
        assert_eq!(c.suite.name, "trixie");
        let types: Vec<&str> = c.recipes.iter().map(|r| r.type_name).collect();
        assert_eq!(types, ["php:8.4", "nodejs:22"]);
        assert_eq!(c.packages, ["ffmpeg"]);
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        assert_eq!(c.summary, "php:8.4 + nodejs:22 + ffmpeg (Debian trixie)");

        // php 8.2 is bookworm's, python 3.11 too: bookworm, both exact.
        let c = compose(&strings(&["php@8.2", "python@3.11"]), &[], false).unwrap();
        assert_eq!(c.suite.name, "bookworm");
        assert!(c.notes.is_empty());

        // Node.js 22 is downloaded: it goes with bookworm's Python.
        let c = compose(&strings(&["python@3.11", "nodejs@22"]), &[], false).unwrap();
        assert_eq!(c.suite.name, "bookworm");
        let types: Vec<&str> = c.recipes.iter().map(|r| r.type_name).collect();
        assert_eq!(types, ["python:3.11", "nodejs:22"]);

        // No suite has both exactly: the nearest in the first's, said.
        let c = compose(&strings(&["python@3.11", "php@8.4"]), &[], false).unwrap();
        assert_eq!(c.suite.name, "bookworm");
        assert_eq!(
            c.notes,
            ["php@8.4 is not available here; the stack uses php:8.2 instead"]
        );
        assert!(matches!(
            compose(&strings(&["python@3.11", "php@8.4"]), &[], true),
            Err(ComposeError::NotExact { .. })
        ));
    }

    #[test]
    fn the_same_stack_is_the_same_image_and_bad_entries_are_named() {
        let a = compose(
            &strings(&["python@3.11"]),
            &strings(&["sqlite", "curl"]),
            false,
        )
        .unwrap();
        let b = compose(&strings(&["python@3.11"]), &strings(&["sqlite"]), false).unwrap();
        assert_eq!(a.type_name, b.type_name, "toolset packages add nothing");
        assert!(super::super::is_type_name(&a.type_name), "{}", a.type_name);
        let c = compose(&strings(&["python@3.11"]), &strings(&["ffmpeg"]), false).unwrap();
        assert_ne!(a.type_name, c.type_name);
        let only_packages = compose(&[], &strings(&["clamav"]), false).unwrap();
        assert!(only_packages.recipes.is_empty());
        assert_eq!(only_packages.packages, ["clamav", "clamav-daemon"]);

        assert!(matches!(
            compose(&strings(&["cobol@85"]), &[], false),
            Err(ComposeError::UnknownRuntime { .. })
        ));
        assert!(matches!(
            compose(&strings(&["python@three"]), &[], false),
            Err(ComposeError::Shape { .. })
        ));
        assert!(matches!(
            compose(&strings(&["python@3.11"]), &strings(&["left-pad"]), false),
            Err(ComposeError::UnknownPackage { .. })
        ));
    }
}
