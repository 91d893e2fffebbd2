//! Finding the config in a repository and assembling it into one native-shaped tree.
//!
//! Discovery order (the first layout present wins; a warning names the files of
//! the others, which are ignored):
//! 1. `.launchway/`: every first-level `*.yaml`, in name order;
//! 2. `.upsun/`: the same rule;
//! 3. Platform.sh: every `.platform.app.yaml` in the tree (its directory is the
//!    app's default `source.root`) and/or `.platform/applications.yaml` (a list
//!    or a map), plus `.platform/services.yaml` and `.platform/routes.yaml`.
//!
//! Several files in one directory merge by top-level section and then by entry:
//! `applications.app` defined again in a later file replaces the earlier one
//! whole (with a warning). `!include` is resolved here, before validation, so
//! included text is validated like any other (its diagnostics point into the
//! included file). Every path is confined to the repository, every file to
//! [`MAX_FILE_BYTES`], and includes to [`MAX_INCLUDES`] per config.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;

use crate::diag::{Diagnostics, Span, did_you_mean};
use crate::source::{EntryKind, PathError, RepoPath, RepoSource, SourceError};
use crate::yaml::{self, Key, Node, Value};

/// Largest config (or included) file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most `!include`s resolved for one config.
pub const MAX_INCLUDES: usize = 256;
/// Deepest chain of includes.
pub const MAX_INCLUDE_DEPTH: usize = 8;
/// Most directories searched for `.platform.app.yaml` files.
pub const MAX_SEARCHED_DIRS: usize = 20_000;

const APP_FILE: &str = ".platform.app.yaml";
const SECTIONS: [&str; 3] = ["applications", "services", "routes"];

/// Which layout the config was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `.launchway/*.yaml`.
    Launchway,
    /// `.upsun/*.yaml`.
    Upsun,
    /// `.platform.app.yaml` files and `.platform/`.
    #[serde(rename = "platform.sh")]
    PlatformSh,
}

/// The assembled config: one tree of the native shape, plus what the layout implies.
#[derive(Debug)]
pub(crate) struct Assembled {
    pub(crate) layout: Layout,
    pub(crate) doc: Node,
    /// Default `source.root` of apps defined by a `.platform.app.yaml` (its directory).
    pub(crate) default_roots: HashMap<String, RepoPath>,
}

struct Reader<'a> {
    source: &'a dyn RepoSource,
    diags: &'a mut Diagnostics,
    includes: usize,
}

/// Finds and reads the config; `None` when there is none or it cannot be read
/// (the reason is in `diags`).
pub(crate) fn assemble(source: &dyn RepoSource, diags: &mut Diagnostics) -> Option<Assembled> {
    let mut reader = Reader {
        source,
        diags,
        includes: 0,
    };
    let launchway = reader.yaml_files_in(".launchway");
    let upsun = reader.yaml_files_in(".upsun");
    let platform_dir: Vec<RepoPath> = ["applications", "services", "routes"]
        .iter()
        .filter_map(|name| {
            let path = RepoPath::join(&RepoPath::parse(".platform").ok()?, &format!("{name}.yaml"));
            matches!(reader.kind(&path), Ok(Some(EntryKind::File))).then_some(path)
        })
        .collect();

    if !launchway.is_empty() {
        reader.warn_ignored(".launchway/", &upsun, &platform_dir);
        return reader.native(Layout::Launchway, &launchway);
    }
    if !upsun.is_empty() {
        reader.warn_ignored(".upsun/", &[], &platform_dir);
        return reader.native(Layout::Upsun, &upsun);
    }
    let app_files = reader.find_app_files()?;
    if app_files.is_empty() && platform_dir.is_empty() {
        reader.diags.error(None, "no configuration found").hint = Some(
            "add `.launchway/config.yaml` (or `.upsun/config.yaml`, or a Platform.sh `.platform.app.yaml`)"
                .into(),
        );
        return None;
    }
    reader.platform(&app_files, &platform_dir)
}

impl Reader<'_> {
    /// What `path` is; `Err` when the source failed (already reported).
    fn kind(&mut self, path: &RepoPath) -> Result<Option<EntryKind>, ()> {
        self.source
            .kind(path)
            .map_err(|e| self.source_error(path, &e))
    }

    fn source_error(&mut self, path: &RepoPath, error: &SourceError) {
        let file: Arc<str> = Arc::from(path.as_str());
        let message = match error {
            SourceError::TooLarge { size, limit } => {
                format!("file is {size} bytes, over the limit of {limit} bytes for config files")
            }
            other => other.to_string(),
        };
        self.diags.error(Some(Span::file_start(&file)), message);
    }

    /// First-level `*.yaml` files of `dir`, in name order.
    fn yaml_files_in(&mut self, dir: &str) -> Vec<RepoPath> {
        let Ok(dir) = RepoPath::parse(dir) else {
            return Vec::new();
        };
        let entries = match self.source.list(&dir) {
            Ok(Some(entries)) => entries,
            Ok(None) => return Vec::new(),
            Err(e) => {
                self.source_error(&dir, &e);
                return Vec::new();
            }
        };
        let mut files = Vec::new();
        for entry in entries {
            let path = dir.join(&entry.name);
            if entry.name.ends_with(".yaml") && entry.kind == EntryKind::File {
                files.push(path);
            } else if entry.name.ends_with(".yml") && entry.kind == EntryKind::File {
                let file: Arc<str> = Arc::from(path.as_str());
                self.diags
                    .warning(
                        Some(Span::file_start(&file)),
                        "file ignored: only `*.yaml` files are read",
                    )
                    .hint = Some(format!(
                    "rename it to `{}`",
                    entry.name.trim_end_matches(".yml").to_owned() + ".yaml"
                ));
            }
        }
        files.sort();
        files
    }

    fn warn_ignored(&mut self, winner: &str, upsun: &[RepoPath], platform_dir: &[RepoPath]) {
        let mut ignored: Vec<RepoPath> = upsun.iter().chain(platform_dir).cloned().collect();
        // Only the root `.platform.app.yaml`: searching the whole tree for files that
        // will be ignored anyway is not worth its cost in a large repository.
        if let Ok(root_app) = RepoPath::parse(APP_FILE)
            && matches!(self.kind(&root_app), Ok(Some(EntryKind::File)))
        {
            ignored.push(root_app);
        }
        for path in ignored {
            let file: Arc<str> = Arc::from(path.as_str());
            self.diags.warning(
                Some(Span::file_start(&file)),
                format!("file ignored: the configuration in `{winner}` takes precedence"),
            );
        }
    }

    /// Every `.platform.app.yaml` in the tree, skipping `.git` and `node_modules`.
    fn find_app_files(&mut self) -> Option<Vec<RepoPath>> {
        let mut found = Vec::new();
        let mut pending = vec![RepoPath::root()];
        let mut searched = 0usize;
        while let Some(dir) = pending.pop() {
            searched += 1;
            if searched > MAX_SEARCHED_DIRS {
                self.diags.error(
                    None,
                    format!("the repository has more than {MAX_SEARCHED_DIRS} directories to search for `{APP_FILE}` files"),
                );
                return None;
            }
            let entries = match self.source.list(&dir) {
                Ok(entries) => entries.unwrap_or_default(),
                Err(e) => {
                    self.source_error(&dir, &e);
                    continue;
                }
            };
            for entry in entries {
                match entry.kind {
                    EntryKind::Dir if entry.name != ".git" && entry.name != "node_modules" => {
                        pending.push(dir.join(&entry.name));
                    }
                    EntryKind::File if entry.name == APP_FILE => found.push(dir.join(&entry.name)),
                    _ => {}
                }
            }
        }
        found.sort();
        Some(found)
    }

    /// Reads one file as a located YAML tree, includes resolved.
    fn read_yaml(
        &mut self,
        path: &RepoPath,
        app_root: Option<&RepoPath>,
        depth: usize,
    ) -> Option<Node> {
        let text = self.read_text(path)?;
        let file: Arc<str> = Arc::from(path.as_str());
        let mut node = yaml::parse(&file, &text, self.diags)?;
        self.resolve_includes(&mut node, &path.parent(), app_root, depth);
        Some(node)
    }

    fn read_bytes(&mut self, path: &RepoPath) -> Option<Vec<u8>> {
        match self.source.read(path, MAX_FILE_BYTES) {
            Ok(Some(bytes)) => Some(bytes),
            Ok(None) => None,
            Err(e) => {
                self.source_error(path, &e);
                None
            }
        }
    }

    fn read_text(&mut self, path: &RepoPath) -> Option<String> {
        let bytes = self.read_bytes(path)?;
        match String::from_utf8(bytes) {
            Ok(text) => Some(text),
            Err(_) => {
                let file: Arc<str> = Arc::from(path.as_str());
                self.diags
                    .error(Some(Span::file_start(&file)), "file is not valid UTF-8");
                None
            }
        }
    }

    /// Replaces every `!include` (and checks every `!archive`) below `node`.
    fn resolve_includes(
        &mut self,
        node: &mut Node,
        file_dir: &RepoPath,
        app_root: Option<&RepoPath>,
        depth: usize,
    ) {
        match node.tag.as_deref() {
            Some("include") => {
                if let Some(replacement) = self.include(node, file_dir, app_root, depth) {
                    *node = replacement;
                } else {
                    node.value = Value::Null;
                    node.tag = None;
                }
                return;
            }
            Some("archive") => {
                self.check_archive(node, file_dir, app_root);
                node.tag = None;
                return;
            }
            Some("str") | None => {}
            Some(other) => {
                self.diags
                    .warning(
                        Some(node.span.clone()),
                        format!("unknown tag `!{other}` ignored"),
                    )
                    .hint = Some("Launchway understands `!include` and `!archive`".into());
                node.tag = None;
            }
        }
        match &mut node.value {
            Value::Seq(items) => {
                for item in items {
                    self.resolve_includes(item, file_dir, app_root, depth);
                }
            }
            Value::Map(entries) => {
                for (_, value) in entries {
                    self.resolve_includes(value, file_dir, app_root, depth);
                }
            }
            _ => {}
        }
    }

    /// Finds an included file: next to the including file first, then under the app root.
    fn locate(
        &mut self,
        raw: &str,
        span: &Span,
        file_dir: &RepoPath,
        app_root: Option<&RepoPath>,
        what: &str,
    ) -> Option<(RepoPath, EntryKind)> {
        let mut candidates = Vec::new();
        for base in std::iter::once(file_dir).chain(app_root) {
            match RepoPath::resolve(base, raw) {
                Ok(path) => {
                    if !candidates.contains(&path) {
                        candidates.push(path);
                    }
                }
                Err(PathError::Escapes(_)) => {
                    self.diags.error(
                        Some(span.clone()),
                        format!("{what} path `{raw}` escapes the repository"),
                    );
                    return None;
                }
                Err(e) => {
                    self.diags.error(Some(span.clone()), e.to_string());
                    return None;
                }
            }
        }
        for path in &candidates {
            match self.source.kind(path) {
                Ok(Some(kind)) => return Some((path.clone(), kind)),
                Ok(None) => {}
                Err(e) => {
                    self.diags
                        .error(Some(span.clone()), format!("{what} `{raw}`: {e}"));
                    return None;
                }
            }
        }
        let tried: Vec<String> = candidates.iter().map(|p| format!("`{p}`")).collect();
        self.diags.error(
            Some(span.clone()),
            format!(
                "{what} `{raw}` not found (looked for {})",
                tried.join(" and ")
            ),
        );
        None
    }

    fn include(
        &mut self,
        node: &Node,
        file_dir: &RepoPath,
        app_root: Option<&RepoPath>,
        depth: usize,
    ) -> Option<Node> {
        let (kind, raw_path) = match &node.value {
            Value::Str(path) => ("yaml".to_owned(), path.clone()),
            Value::Map(entries) => {
                for (key, _) in entries {
                    if key.text != "type" && key.text != "path" {
                        let d = self.diags.error(
                            Some(key.span.clone()),
                            format!("unknown key `{}` in `!include`", key.text),
                        );
                        if let Some(best) = did_you_mean(&key.text, ["type", "path"]) {
                            d.hint = Some(format!("did you mean `{best}`?"));
                        }
                    }
                }
                let kind = match node.get("type") {
                    None => "yaml".to_owned(),
                    Some(t) => match t.as_str() {
                        Some(k @ ("yaml" | "string" | "binary")) => k.to_owned(),
                        _ => {
                            self.diags.error(
                                Some(t.span.clone()),
                                "`!include` type must be `yaml`, `string` or `binary`",
                            );
                            return None;
                        }
                    },
                };
                let Some(path) = node.get("path").and_then(Node::as_str) else {
                    self.diags
                        .error(Some(node.span.clone()), "`!include` needs a `path`");
                    return None;
                };
                (kind, path.to_owned())
            }
            _ => {
                self.diags.error(
                    Some(node.span.clone()),
                    "`!include` takes a path, or a map `{type: yaml|string|binary, path: …}`",
                );
                return None;
            }
        };
        if depth >= MAX_INCLUDE_DEPTH {
            self.diags.error(
                Some(node.span.clone()),
                format!("includes nest deeper than {MAX_INCLUDE_DEPTH} levels"),
            );
            return None;
        }
        self.includes += 1;
        if self.includes > MAX_INCLUDES {
            if self.includes == MAX_INCLUDES + 1 {
                self.diags.error(
                    Some(node.span.clone()),
                    format!("more than {MAX_INCLUDES} includes in one configuration"),
                );
            }
            return None;
        }
        let (path, entry_kind) =
            self.locate(&raw_path, &node.span, file_dir, app_root, "included file")?;
        if entry_kind != EntryKind::File {
            self.diags.error(
                Some(node.span.clone()),
                format!("included path `{raw_path}` is not a regular file"),
            );
            return None;
        }
        match kind.as_str() {
            "yaml" => self.read_yaml(&path, app_root, depth + 1),
            "string" => {
                let text = self.read_text(&path)?;
                Some(Node::new(Value::Str(text), node.span.clone()))
            }
            _ => {
                let bytes = self.read_bytes(&path)?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
                Some(Node::new(Value::Str(encoded), node.span.clone()))
            }
        }
    }

    fn check_archive(&mut self, node: &Node, file_dir: &RepoPath, app_root: Option<&RepoPath>) {
        let Some(raw) = node.as_str() else {
            self.diags
                .error(Some(node.span.clone()), "`!archive` takes a directory path");
            return;
        };
        if let Some((_, kind)) =
            self.locate(raw, &node.span, file_dir, app_root, "archive directory")
            && kind != EntryKind::Dir
        {
            self.diags.error(
                Some(node.span.clone()),
                format!("archive path `{raw}` is not a directory"),
            );
        }
    }

    /// `.launchway/` or `.upsun/`: merge the files by section, then by entry.
    fn native(mut self, layout: Layout, files: &[RepoPath]) -> Option<Assembled> {
        let mut top: Vec<(Key, Node)> = Vec::new();
        let mut any_read = false;
        for path in files {
            let text = self.read_text(path);
            let Some(text) = text else { continue };
            let file: Arc<str> = Arc::from(path.as_str());
            let Some(mut node) = yaml::parse(&file, &text, self.diags) else {
                continue;
            };
            any_read = true;
            let entries = match &mut node.value {
                Value::Null => continue,
                Value::Map(entries) => std::mem::take(entries),
                _ => {
                    self.diags.error(
                        Some(node.span.clone()),
                        format!("the top level must be a map, found {}", node.kind_name()),
                    );
                    continue;
                }
            };
            for (key, mut value) in entries {
                if key.text == "applications"
                    && let Value::Map(apps) = &mut value.value
                {
                    for (_, app) in apps.iter_mut() {
                        let root = app
                            .get("source")
                            .and_then(|s| s.get("root"))
                            .and_then(Node::as_str)
                            .and_then(|r| RepoPath::parse(r).ok());
                        self.resolve_includes(app, &path.parent(), root.as_ref(), 0);
                    }
                } else {
                    self.resolve_includes(&mut value, &path.parent(), None, 0);
                }
                self.merge_top(&mut top, key, value);
            }
        }
        if !any_read {
            return None;
        }
        // `services: null` (or a section holding only comments) means an empty section.
        for (key, value) in &mut top {
            if SECTIONS.contains(&key.text.as_str()) && matches!(value.value, Value::Null) {
                *value = Node::new(Value::Map(Vec::new()), value.span.clone());
            }
        }
        let span = Span::file_start(&Arc::from(files.first().map_or("", RepoPath::as_str)));
        Some(Assembled {
            layout,
            doc: Node::new(Value::Map(top), span),
            default_roots: HashMap::new(),
        })
    }

    fn merge_top(&mut self, top: &mut Vec<(Key, Node)>, key: Key, value: Node) {
        let existing = top.iter_mut().find(|(k, _)| k.text == key.text);
        match existing {
            None => top.push((key, value)),
            Some((_, old)) => {
                let mergeable = SECTIONS.contains(&key.text.as_str());
                match (&mut old.value, value.value) {
                    (Value::Map(old_entries), Value::Map(new_entries)) if mergeable => {
                        for (k, v) in new_entries {
                            if let Some(slot) =
                                old_entries.iter_mut().find(|(ok, _)| ok.text == k.text)
                            {
                                self.diags
                                    .warning(
                                        Some(k.span.clone()),
                                        format!("`{}.{}` replaces the one defined at {}", key.text, k.text, slot.0.span),
                                    )
                                    .hint = Some("files merge by top-level key; a repeated entry replaces the earlier one whole".into());
                                *slot = (k, v);
                            } else {
                                old_entries.push((k, v));
                            }
                        }
                    }
                    (_, new_value) => {
                        if !matches!(new_value, Value::Null) {
                            self.diags.warning(
                                Some(key.span.clone()),
                                format!("`{}` replaces the one defined at {}", key.text, old.span),
                            );
                            *old = Node::new(new_value, value.span);
                        }
                    }
                }
            }
        }
    }

    /// Platform.sh: app files and `.platform/`.
    fn platform(mut self, app_files: &[RepoPath], platform_dir: &[RepoPath]) -> Option<Assembled> {
        let mut apps: Vec<(Key, Node)> = Vec::new();
        let mut default_roots = HashMap::new();
        let mut services = None;
        let mut routes = None;
        let mut first_span = None;
        for path in platform_dir {
            let file: Arc<str> = Arc::from(path.as_str());
            first_span.get_or_insert_with(|| Span::file_start(&file));
            match path.file_name() {
                "applications.yaml" => {
                    if let Some(node) = self.read_yaml(path, None, 0) {
                        self.platform_applications(node, &mut apps);
                    }
                }
                "services.yaml" => services = self.read_yaml(path, None, 0).map(|n| (file, n)),
                _ => routes = self.read_yaml(path, None, 0).map(|n| (file, n)),
            }
        }
        for path in app_files {
            let dir = path.parent();
            let file: Arc<str> = Arc::from(path.as_str());
            first_span.get_or_insert_with(|| Span::file_start(&file));
            let Some(node) = self.read_yaml(path, Some(&dir), 0) else {
                continue;
            };
            match &node.value {
                Value::Map(_) => {}
                Value::Null => {
                    self.diags.error(
                        Some(Span::file_start(&file)),
                        "the application file is empty",
                    );
                    continue;
                }
                _ => {
                    self.diags.error(
                        Some(node.span.clone()),
                        format!("an application must be a map, found {}", node.kind_name()),
                    );
                    continue;
                }
            }
            let Some(name) = self.app_name(&node, &file) else {
                continue;
            };
            if self.add_app(&mut apps, name.clone(), node) {
                default_roots.insert(name.text, dir);
            }
        }
        let span = first_span.unwrap_or_else(|| Span::file_start(&Arc::from("")));
        let mut top = vec![(
            key("applications", &span),
            Node::new(Value::Map(apps), span.clone()),
        )];
        for (section, found) in [("services", services), ("routes", routes)] {
            if let Some((file, node)) = found {
                let node = if matches!(node.value, Value::Null) {
                    Node::new(Value::Map(Vec::new()), node.span)
                } else {
                    node
                };
                top.push((key(section, &Span::file_start(&file)), node));
            }
        }
        Some(Assembled {
            layout: Layout::PlatformSh,
            doc: Node::new(Value::Map(top), span),
            default_roots,
        })
    }

    fn app_name(&mut self, node: &Node, file: &Arc<str>) -> Option<Key> {
        match node.entry("name") {
            Some((_, value)) if value.as_str().is_some() => Some(Key {
                text: value.as_str().unwrap_or_default().to_owned(),
                span: value.span.clone(),
            }),
            Some((_, value)) => {
                self.diags.error(
                    Some(value.span.clone()),
                    format!("`name` must be a string, found {}", value.kind_name()),
                );
                None
            }
            None => {
                self.diags
                    .error(Some(node.span.clone()), "missing required key `name`")
                    .hint = Some(format!(
                    "every Platform.sh application needs a `name` (in `{file}`)"
                ));
                None
            }
        }
    }

    /// Adds an app unless its name is taken; returns whether it was added.
    fn add_app(&mut self, apps: &mut Vec<(Key, Node)>, name: Key, node: Node) -> bool {
        if let Some((first, _)) = apps.iter().find(|(k, _)| k.text == name.text) {
            self.diags.error(
                Some(name.span.clone()),
                format!(
                    "duplicate application name `{}` (first defined at {})",
                    name.text, first.span
                ),
            );
            return false;
        }
        apps.push((name, node));
        true
    }

    /// `.platform/applications.yaml`: a list of apps with `name`, or a map keyed by name.
    fn platform_applications(&mut self, node: Node, apps: &mut Vec<(Key, Node)>) {
        let file = Arc::clone(&node.span.file);
        match node.value {
            Value::Seq(items) => {
                for item in items {
                    if !matches!(item.value, Value::Map(_)) {
                        self.diags.error(
                            Some(item.span.clone()),
                            format!("an application must be a map, found {}", item.kind_name()),
                        );
                        continue;
                    }
                    if let Some(name) = self.app_name(&item, &file) {
                        self.add_app(apps, name, item);
                    }
                }
            }
            Value::Map(entries) => {
                for (name, app) in entries {
                    if let Some((_, inner)) = app.entry("name")
                        && inner.as_str() != Some(name.text.as_str())
                    {
                        self.diags.error(
                            Some(inner.span.clone()),
                            format!("`name` differs from the application's key `{}`", name.text),
                        );
                    }
                    self.add_app(apps, name, app);
                }
            }
            Value::Null => {}
            _ => {
                self.diags.error(
                    Some(node.span.clone()),
                    format!("`.platform/applications.yaml` must hold a list or a map of applications, found {}", node.kind_name()),
                );
            }
        }
    }
}

fn key(text: &str, span: &Span) -> Key {
    Key {
        text: text.to_owned(),
        span: span.clone(),
    }
}
