//! What a build step sees: the `PLATFORM_*` build variables, the app's
//! `variables`, and where global dependencies go. Pure.
//!
//! Global dependencies (`dependencies:`) are installed under `/app/.global`
//! (`bin/` on `PATH`), as Platform.sh does, so they are part of the image and
//! the app finds them at run time: pip with `PYTHONUSERBASE`, npm with
//! `NPM_CONFIG_PREFIX`, gem with `GEM_HOME`, composer with `COMPOSER_HOME`.

use std::collections::BTreeMap;

use base64::Engine as _;
use launchway_config::App;
use serde::{Deserialize, Serialize};

/// The app's directory in every container.
pub const APP_DIR: &str = "/app";
/// Where global dependencies are installed.
pub const GLOBAL_DIR: &str = "/app/.global";
/// `$PLATFORM_CACHE_DIR` inside the build container: under the `/tmp`
/// tmpfs, so its mount point never lands in the image.
pub const CACHE_DIR: &str = "/tmp/cache";

/// Who and what a build is for.
#[derive(Clone, Debug)]
pub struct BuildContext<'a> {
    /// The project.
    pub project: &'a str,
    /// The app, normalized.
    pub app: &'a App,
    /// The git tree id of its `source.root`.
    pub tree_id: &'a str,
    /// The project and environment variables visible to builds, already
    /// resolved by level (config-reference §2.3).
    pub variables: &'a [UserVariable],
    /// `PLATFORM_PROJECT_ENTROPY` (stable per project; empty where only
    /// the build key is computed: it follows from the project).
    pub entropy: &'a str,
}

/// A project or environment variable as a stage sees it: the level that
/// won has been chosen, visibility already applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserVariable {
    /// `env:NAME` (exported as `NAME`) or any other name
    /// (`PLATFORM_VARIABLES` only).
    pub name: String,
    pub value: String,
    /// The value is JSON: decoded in `PLATFORM_VARIABLES`.
    pub json: bool,
}

impl UserVariable {
    /// The value as `PLATFORM_VARIABLES` holds it.
    fn json_value(&self) -> serde_json::Value {
        if self.json
            && let Ok(value) = serde_json::from_str(&self.value)
        {
            return value;
        }
        serde_json::Value::String(self.value.clone())
    }
}

/// The variables a stage sees apart from the platform's: the app config's
/// `variables`, then the user variables over them (they take precedence).
/// Returns the exported ones and the `PLATFORM_VARIABLES` map.
pub fn merged_variables(
    app: &App,
    user: &[UserVariable],
) -> (
    BTreeMap<String, String>,
    serde_json::Map<String, serde_json::Value>,
) {
    let (mut env, mut all) = config_variables(app);
    for variable in user {
        if let Some(name) = variable.name.strip_prefix("env:") {
            env.insert(name.to_owned(), variable.value.clone());
        }
        all.insert(variable.name.clone(), variable.json_value());
    }
    (env, all)
}

/// A config variable's value as an environment string: strings as written,
/// anything else as JSON.
fn variable_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The build-visible variables that enter the build key besides the config:
/// the ones a build sees that the app's config does not already hold.
pub fn key_variables(context: &BuildContext<'_>) -> BTreeMap<String, String> {
    let mut variables = BTreeMap::new();
    variables.insert("PLATFORM_PROJECT".to_owned(), context.project.to_owned());
    for variable in context.variables {
        let kind = if variable.json { "json" } else { "text" };
        variables.insert(
            format!("variable:{}", variable.name),
            format!("{kind}:{}", variable.value),
        );
    }
    variables
}

/// The `env:` entries of a `variables` block, as variables.
pub fn env_variables(
    variables: &BTreeMap<String, BTreeMap<String, serde_json::Value>>,
) -> BTreeMap<String, String> {
    variables
        .get("env")
        .map(|names| {
            names
                .iter()
                .map(|(name, value)| (name.clone(), variable_text(value)))
                .collect()
        })
        .unwrap_or_default()
}

/// The app-config `variables`: the `env:` ones as variables, and every
/// prefix as `prefix:name` for `PLATFORM_VARIABLES`.
pub fn config_variables(
    app: &App,
) -> (
    BTreeMap<String, String>,
    serde_json::Map<String, serde_json::Value>,
) {
    let mut all = serde_json::Map::new();
    for (prefix, names) in &app.variables {
        for (name, value) in names {
            all.insert(format!("{prefix}:{name}"), value.clone());
        }
    }
    (env_variables(&app.variables), all)
}

/// Where the app's tools are found, at build and at run time: `HOME`,
/// `PATH` with the global dependencies first, and each package manager's
/// global prefix.
pub fn tool_env(image_path: Option<&str>) -> Vec<(&'static str, String)> {
    let path = image_path.unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    vec![
        ("HOME", APP_DIR.to_owned()),
        (
            "PATH",
            format!("{GLOBAL_DIR}/bin:{GLOBAL_DIR}/composer/vendor/bin:{path}"),
        ),
        ("PYTHONUSERBASE", GLOBAL_DIR.to_owned()),
        ("NPM_CONFIG_PREFIX", GLOBAL_DIR.to_owned()),
        ("GEM_HOME", GLOBAL_DIR.to_owned()),
        ("COMPOSER_HOME", format!("{GLOBAL_DIR}/composer")),
        ("PLATFORM_APP_DIR", APP_DIR.to_owned()),
    ]
}

/// Base64 of bytes, as the `PLATFORM_*` JSON variables are encoded.
pub fn base64_text(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The environment of every build step of the app (the image's own
/// environment comes underneath; these win).
pub fn build_env(context: &BuildContext<'_>, image_path: Option<&str>) -> Vec<(String, String)> {
    let app = context.app;
    let (mut env, all) = merged_variables(app, context.variables);
    let mut platform = tool_env(image_path);
    platform.extend([
        ("CI", "true".to_owned()),
        // Launchway builds as Upsun does, whatever the config's layout.
        ("PLATFORM_VENDOR", "upsun".to_owned()),
        ("PLATFORM_OUTPUT_DIR", APP_DIR.to_owned()),
        ("PLATFORM_PROJECT_ENTROPY", context.entropy.to_owned()),
        ("PLATFORM_APPLICATION_NAME", app.name.clone()),
        ("PLATFORM_PROJECT", context.project.to_owned()),
        ("PLATFORM_TREE_ID", context.tree_id.to_owned()),
        ("PLATFORM_CACHE_DIR", CACHE_DIR.to_owned()),
        (
            "PLATFORM_APPLICATION",
            base64_text(launchway_git::build_config(app).to_string().as_bytes()),
        ),
        (
            "PLATFORM_VARIABLES",
            base64_text(serde_json::Value::Object(all).to_string().as_bytes()),
        ),
    ]);
    // Platform-provided variables take precedence over the app's.
    for (name, value) in platform {
        env.insert(name.to_owned(), value);
    }
    env.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_with(yaml: &str) -> App {
        let source = launchway_config::MemSource::new().with(".upsun/config.yaml", yaml);
        let loaded = launchway_config::load(&source);
        let config = loaded
            .config
            .unwrap_or_else(|| panic!("{}", loaded.diagnostics));
        config
            .applications
            .values()
            .next()
            .cloned()
            .unwrap_or_else(|| panic!("no app"))
    }

    #[test]
    fn platform_variables_win_and_env_variables_are_exported() {
        let app = app_with(
            "applications:\n  web:\n    type: python:3.11\n    variables:\n      env:\n        NODE_ENV: production\n        PLATFORM_PROJECT: mine\n        COUNT: 3\n      php:\n        memory_limit: 256M\n",
        );
        let user = [
            UserVariable {
                name: "env:NODE_ENV".into(),
                value: "staging".into(),
                json: false,
            },
            UserVariable {
                name: "env:PLATFORM_TREE_ID".into(),
                value: "mine".into(),
                json: false,
            },
            UserVariable {
                name: "limits".into(),
                value: "{\"max\": 3}".into(),
                json: true,
            },
        ];
        let context = BuildContext {
            project: "shop",
            app: &app,
            tree_id: "abc",
            variables: &user,
            entropy: "ENTROPY",
        };
        let env: BTreeMap<String, String> = build_env(&context, Some("/usr/bin:/bin"))
            .into_iter()
            .collect();
        assert_eq!(
            env["NODE_ENV"], "staging",
            "a user variable beats the config"
        );
        assert_eq!(env["COUNT"], "3");
        assert_eq!(env["PLATFORM_PROJECT"], "shop");
        assert_eq!(env["PLATFORM_TREE_ID"], "abc");
        assert_eq!(env["PLATFORM_CACHE_DIR"], CACHE_DIR);
        assert_eq!(env["PLATFORM_PROJECT_ENTROPY"], "ENTROPY");
        assert_eq!(env["PLATFORM_OUTPUT_DIR"], "/app");
        assert_eq!(env["PLATFORM_VENDOR"], "upsun");
        assert_eq!(env["CI"], "true");
        assert!(env["PATH"].starts_with("/app/.global/bin:"));
        assert!(env["PATH"].ends_with(":/usr/bin:/bin"));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&env["PLATFORM_VARIABLES"])
            .unwrap_or_default();
        let variables: serde_json::Value = serde_json::from_slice(&decoded).unwrap_or_default();
        assert_eq!(variables["php:memory_limit"], "256M");
        assert_eq!(variables["env:NODE_ENV"], "staging");
        assert_eq!(variables["limits"]["max"], 3);
        let bare = BuildContext {
            variables: &[],
            ..context.clone()
        };
        assert_ne!(
            key_variables(&bare),
            key_variables(&context),
            "build-visible variables are part of the key"
        );
        let application = base64::engine::general_purpose::STANDARD
            .decode(&env["PLATFORM_APPLICATION"])
            .unwrap_or_default();
        let application: serde_json::Value =
            serde_json::from_slice(&application).unwrap_or_default();
        assert_eq!(application["name"], "web");
        assert!(
            application.get("web").is_none(),
            "runtime-only keys are left out"
        );
    }
}
