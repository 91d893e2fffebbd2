//! A composable image's `stack`: which entries are runtimes
//! (`php@8.4`) and which are packages (`ffmpeg`), and what the packages
//! are on Debian.
//!
//! Upsun builds composable images from Nix; Launchway builds them from the
//! runtime catalog's Debian recipes, so a package is one of the Nix names
//! below, each mapped to the Debian packages that provide the same tools.
//! A name not listed is refused at push (with the nearest listed one).

use crate::model::StackConfig;

/// The runtime families a stack may name (`family@version`).
pub const STACK_RUNTIMES: &[&str] = &["golang", "java", "nodejs", "php", "python", "ruby"];

/// Nix package names a stack may list, with the Debian packages that
/// provide them (present in both bookworm and trixie). The toolset every
/// image has (curl, git, jq, rsync, unzip, …) is accepted too and adds
/// nothing.
pub const STACK_PACKAGES: &[(&str, &[&str])] = &[
    ("ffmpeg", &["ffmpeg"]),
    ("clamav", &["clamav", "clamav-daemon"]),
    ("imagemagick", &["imagemagick"]),
    ("ghostscript", &["ghostscript"]),
    ("poppler_utils", &["poppler-utils"]),
    ("graphviz", &["graphviz"]),
    ("pngquant", &["pngquant"]),
    ("optipng", &["optipng"]),
    ("jpegoptim", &["jpegoptim"]),
    ("gifsicle", &["gifsicle"]),
    ("libwebp", &["webp"]),
    ("vips", &["libvips-tools"]),
    ("sqlite", &["sqlite3"]),
    ("postgresql", &["postgresql-client"]),
    ("mariadb", &["mariadb-client"]),
    ("redis", &["redis-tools"]),
    ("gettext", &["gettext"]),
    ("git-lfs", &["git-lfs"]),
    ("pipenv", &["pipenv"]),
    ("poetry", &["python3-poetry"]),
    ("python3Packages.pip", &["python3-pip"]),
    ("python3Packages.virtualenv", &["python3-virtualenv"]),
    // In every image already.
    ("bash", &[]),
    ("coreutils", &[]),
    ("curl", &[]),
    ("wget", &[]),
    ("git", &[]),
    ("rsync", &[]),
    ("jq", &[]),
    ("unzip", &[]),
    ("zip", &[]),
    ("gnumake", &[]),
    ("gcc", &[]),
    ("openssh", &[]),
    ("nginx", &[]),
    // With a Node.js runtime in the stack, its images' yarn and pnpm.
    ("yarn", &[]),
    ("nodePackages.yarn", &[]),
    ("pnpm", &[]),
    ("nodePackages.pnpm", &[]),
];

/// The Debian packages of stack package `name`: `python312Packages.pip`
/// is read as `python3Packages.pip` (the Python version is the runtime's).
pub fn stack_package(name: &str) -> Option<&'static [&'static str]> {
    let canonical = python_packages(name).unwrap_or_else(|| name.to_owned());
    STACK_PACKAGES
        .iter()
        .find(|(nix, _)| *nix == canonical)
        .map(|(_, debian)| *debian)
}

/// `python312Packages.pip` → `python3Packages.pip`.
fn python_packages(name: &str) -> Option<String> {
    let rest = name.strip_prefix("python3")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let attribute = rest[digits..].strip_prefix("Packages.")?;
    Some(format!("python3Packages.{attribute}"))
}

/// One entry of a stack and where it is written (the path under the
/// app's `stack`, for diagnostics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackEntry {
    /// `php@8.4` or `ffmpeg`.
    pub name: String,
    /// Whether it names a runtime (`family@version`).
    pub runtime: bool,
    /// The keys under `stack` leading to it.
    pub path: Vec<String>,
}

fn entry_name(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(name) => Some(name.clone()),
        // `{"php@8.4": {extensions: […]}}`.
        serde_json::Value::Object(map) if map.len() == 1 => map.keys().next().cloned(),
        _ => None,
    }
}

/// The entries of `stack`, in order: in a list, an entry with `@` is a
/// runtime; in the split form, `runtimes` and `packages` say it.
pub fn stack_entries(stack: &StackConfig) -> Vec<StackEntry> {
    let mut entries = Vec::new();
    let mut add = |values: &[serde_json::Value], section: Option<&str>, runtimes: Option<bool>| {
        for (index, value) in values.iter().enumerate() {
            let Some(name) = entry_name(value) else {
                continue;
            };
            let mut path: Vec<String> = section.map(str::to_owned).into_iter().collect();
            path.push(index.to_string());
            if value.is_object() {
                path.push(name.clone());
            }
            entries.push(StackEntry {
                runtime: runtimes.unwrap_or_else(|| name.contains('@')),
                name,
                path,
            });
        }
    };
    match stack {
        StackConfig::List(values) => add(values, None, None),
        StackConfig::Split { runtimes, packages } => {
            add(runtimes, Some("runtimes"), Some(true));
            add(packages, Some("packages"), Some(false));
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_runtimes_or_packages_by_form() {
        let list: StackConfig = serde_json::from_str(
            r#"["php@8.4", {"nodejs@22": {"x": 1}}, "ffmpeg", "python312Packages.pip"]"#,
        )
        .unwrap();
        let entries = stack_entries(&list);
        let names: Vec<(&str, bool)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.runtime))
            .collect();
        assert_eq!(
            names,
            [
                ("php@8.4", true),
                ("nodejs@22", true),
                ("ffmpeg", false),
                ("python312Packages.pip", false)
            ]
        );
        assert_eq!(entries[1].path, ["1", "nodejs@22"]);
        let split: StackConfig =
            serde_json::from_str(r#"{"runtimes": ["python@3.12"], "packages": ["sqlite"]}"#)
                .unwrap();
        let entries = stack_entries(&split);
        assert_eq!(entries[0].path, ["runtimes", "0"]);
        assert!(entries[0].runtime && !entries[1].runtime);
        assert_eq!(
            stack_package("python312Packages.pip"),
            Some(&["python3-pip"][..])
        );
        assert_eq!(stack_package("sqlite"), Some(&["sqlite3"][..]));
        assert_eq!(stack_package("curl"), Some(&[][..]));
        assert_eq!(stack_package("left-pad"), None);
    }
}
