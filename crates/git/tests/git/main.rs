//! launchway-git against real repositories made with the real `git`.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use launchway_git::{CommitTree, GitError, Objects, count_new_commits, plan};

/// `git` with no system or global config and fixed identities and dates.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A stand-in runtime image digest per runtime type (what the daemon gets
/// from containerd).
fn runtime_digest(runtime: &str) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(runtime.as_bytes()))
    )
}

struct Repo {
    _dir: tempfile::TempDir,
    work: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        git(&work, &["init", "-q", "--initial-branch=main"]);
        Repo { _dir: dir, work }
    }

    fn write(&self, path: &str, contents: &str) {
        let full = self.work.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, contents).unwrap();
    }

    fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn git_dir(&self) -> PathBuf {
        self.work.join(".git")
    }

    /// Each app's build key at `commit`.
    fn keys(&self, commit: &str) -> BTreeMap<String, String> {
        let tree = CommitTree::open(Objects::open(&self.git_dir(), None).unwrap(), commit).unwrap();
        plan(&tree)
            .unwrap()
            .apps
            .into_iter()
            .map(|app| {
                let key = app.build_key(&BTreeMap::new(), &runtime_digest(&app.runtime));
                (app.name, key)
            })
            .collect()
    }
}

const BASE: &str = r#"applications:
  web:
    type: "python:3.11"
    source:
      root: web
    dependencies:
      python3:
        gunicorn: "*"
    build:
      flavor: none
    hooks:
      build: echo build
      deploy: echo deploy
    web:
      commands:
        start: python -m http.server $PORT
    mounts:
      data:
        source: storage
    crons:
      tick:
        spec: "*/5 * * * *"
        commands:
          start: echo tick
  api:
    type: "nodejs:20"
    source:
      root: api
    web:
      commands:
        start: node server.js
"#;

fn base_repo() -> (Repo, String) {
    let repo = Repo::new();
    repo.write(".upsun/config.yaml", BASE);
    repo.write("web/app.py", "print('v1')\n");
    repo.write("api/server.js", "// v1\n");
    let commit = repo.commit("base");
    (repo, commit)
}

/// Applies `change` on top of the base commit and returns (web key before, web key after).
fn web_key_around(change: impl FnOnce(&Repo)) -> (String, String) {
    let (repo, base) = base_repo();
    let before = repo.keys(&base)["web"].clone();
    change(&repo);
    let after_commit = repo.commit("change");
    let after = repo.keys(&after_commit)["web"].clone();
    (before, after)
}

/// One edit of the base repository.
type Change = Box<dyn FnOnce(&Repo)>;

fn edit_config(repo: &Repo, from: &str, to: &str) {
    assert!(BASE.contains(from), "{from}");
    repo.write(".upsun/config.yaml", &BASE.replacen(from, to, 1));
}

#[test]
fn runtime_only_changes_keep_the_build_key() {
    let unchanged: [(&str, Change); 5] = [
        (
            "file outside source.root",
            Box::new(|r: &Repo| r.write("api/server.js", "// v2\n")),
        ),
        (
            "file at the repository root",
            Box::new(|r: &Repo| r.write("README.md", "hello\n")),
        ),
        (
            "web.commands.start",
            Box::new(|r: &Repo| edit_config(r, "python -m http.server $PORT", "gunicorn app")),
        ),
        (
            "crons",
            Box::new(|r: &Repo| edit_config(r, "*/5 * * * *", "*/7 * * * *")),
        ),
        (
            "hooks.deploy",
            Box::new(|r: &Repo| edit_config(r, "echo deploy", "echo migrate")),
        ),
    ];
    for (what, change) in unchanged {
        let (before, after) = web_key_around(change);
        assert_eq!(before, after, "a change of {what} changed the build key");
    }
}

#[test]
fn build_inputs_change_the_build_key() {
    let changed: [(&str, Change); 6] = [
        (
            "a file in source.root",
            Box::new(|r: &Repo| r.write("web/app.py", "print('v2')\n")),
        ),
        (
            "a new file in source.root",
            Box::new(|r: &Repo| r.write("web/extra.txt", "x\n")),
        ),
        (
            "hooks.build",
            Box::new(|r: &Repo| edit_config(r, "echo build", "echo built")),
        ),
        (
            "dependencies",
            Box::new(|r: &Repo| edit_config(r, "gunicorn: \"*\"", "gunicorn: \"21.2\"")),
        ),
        (
            "type",
            Box::new(|r: &Repo| edit_config(r, "python:3.11", "python:3.12")),
        ),
        (
            "mounts",
            Box::new(|r: &Repo| {
                edit_config(
                    r,
                    "data:\n        source: storage",
                    "files:\n        source: storage",
                )
            }),
        ),
    ];
    for (what, change) in changed {
        let (before, after) = web_key_around(change);
        assert_ne!(
            before, after,
            "a change of {what} left the build key unchanged"
        );
    }
}

#[test]
fn the_flavor_changes_the_build_key() {
    // Node.js defaults to the npm flavor; `none` builds differently.
    let (repo, base) = base_repo();
    let before = repo.keys(&base)["api"].clone();
    edit_config(
        &repo,
        "root: api\n",
        "root: api\n    build:\n      flavor: none\n",
    );
    let after = repo.keys(&repo.commit("flavor"))["api"].clone();
    assert_ne!(before, after);
}

#[test]
fn plan_reports_each_apps_tree() {
    let (repo, base) = base_repo();
    let tree = CommitTree::open(Objects::open(&repo.git_dir(), None).unwrap(), &base).unwrap();
    let plan = plan(&tree).unwrap();
    let web = plan.apps.iter().find(|a| a.name == "web").unwrap();
    assert_eq!(web.tree_id, git(&repo.work, &["rev-parse", "HEAD:web"]));
    assert_eq!(web.runtime, "python:3.11");
    assert_eq!(web.build_key(&BTreeMap::new(), "sha256:x").len(), 64);
}

#[test]
fn invalid_config_is_reported_with_locations() {
    let repo = Repo::new();
    repo.write(
        ".upsun/config.yaml",
        "applications:\n  web:\n    type: python:3.11\n    sorce: {}\n",
    );
    let commit = repo.commit("bad");
    let tree = CommitTree::open(Objects::open(&repo.git_dir(), None).unwrap(), &commit).unwrap();
    match plan(&tree) {
        Err(GitError::InvalidConfig { diagnostics, .. }) => {
            assert!(
                diagnostics.contains(".upsun/config.yaml:4:5: error:"),
                "{diagnostics}"
            );
        }
        other => panic!("expected invalid config, got {other:?}"),
    }
}

#[test]
fn quarantined_objects_are_read_before_the_repository() {
    let (repo, base) = base_repo();
    // A clone sharing the repository's objects: its new objects exist only in
    // its own object directory, like a push's quarantine.
    let dir = tempfile::tempdir().unwrap();
    let quarantine_repo = dir.path().join("q");
    git(
        dir.path(),
        &["clone", "-q", "--shared", repo.work.to_str().unwrap(), "q"],
    );
    std::fs::write(quarantine_repo.join("web/app.py"), "print('v3')\n").unwrap();
    git(&quarantine_repo, &["commit", "-q", "-am", "new"]);
    let new = git(&quarantine_repo, &["rev-parse", "HEAD"]);

    let alone = CommitTree::open(Objects::open(&repo.git_dir(), None).unwrap(), &new);
    assert!(matches!(alone, Err(GitError::Missing(_))), "{alone:?}");

    let quarantine = quarantine_repo.join(".git/objects");
    let layered = Objects::open(&repo.git_dir(), Some(&quarantine)).unwrap();
    let tree = CommitTree::open(layered, &new).unwrap();
    let planned = plan(&tree).unwrap();
    assert_ne!(
        planned
            .apps
            .iter()
            .find(|a| a.name == "web")
            .map(|a| a.build_key(&BTreeMap::new(), &runtime_digest(&a.runtime)))
            .unwrap(),
        repo.keys(&base)["web"]
    );
    assert_eq!(
        count_new_commits(&quarantine_repo.join(".git"), Some(&base), &new, &[], 100).unwrap(),
        1
    );
    assert_eq!(
        count_new_commits(&repo.git_dir(), None, &base, &[], 100).unwrap(),
        1
    );
}

#[test]
fn symlinks_and_oversized_files_are_not_read() {
    use launchway_config::{RepoPath, RepoSource, SourceError};
    let repo = Repo::new();
    repo.write("big.yaml", &"x".repeat(2000));
    std::os::unix::fs::symlink("/etc/passwd", repo.work.join("link.yaml")).unwrap();
    let commit = repo.commit("files");
    let tree = CommitTree::open(Objects::open(&repo.git_dir(), None).unwrap(), &commit).unwrap();
    let big = tree.read(&RepoPath::parse("big.yaml").unwrap(), 1000);
    assert!(
        matches!(
            big,
            Err(SourceError::TooLarge {
                size: 2000,
                limit: 1000
            })
        ),
        "{big:?}"
    );
    let link = tree.read(&RepoPath::parse("link.yaml").unwrap(), 1000);
    assert!(matches!(link, Err(SourceError::NotAFile(_))), "{link:?}");
    assert_eq!(
        tree.read(&RepoPath::parse("missing").unwrap(), 1000)
            .unwrap(),
        None
    );
}

#[test]
fn a_new_runtime_image_changes_every_key() {
    let (repo, base) = base_repo();
    let tree = CommitTree::open(Objects::open(&repo.git_dir(), None).unwrap(), &base).unwrap();
    let planned = plan(&tree).unwrap();
    let web = planned.apps.iter().find(|a| a.name == "web").unwrap();
    let vars = BTreeMap::new();
    assert_eq!(
        web.build_key(&vars, "sha256:one"),
        web.build_key(&vars, "sha256:one")
    );
    assert_ne!(
        web.build_key(&vars, "sha256:one"),
        web.build_key(&vars, "sha256:two")
    );
    let mut visible = BTreeMap::new();
    visible.insert("PLATFORM_PROJECT".to_owned(), "shop".to_owned());
    assert_ne!(
        web.build_key(&vars, "sha256:one"),
        web.build_key(&visible, "sha256:one")
    );
}

#[test]
fn a_tree_exports_as_a_tar_with_modes_links_and_owner() {
    let (repo, _) = base_repo();
    repo.write("web/bin/run", "#!/bin/sh\n");
    std::fs::set_permissions(
        repo.work.join("web/bin/run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("app.py", repo.work.join("web/link.py")).unwrap();
    let commit = repo.commit("more");
    let tree = CommitTree::open(Objects::open(&repo.git_dir(), None).unwrap(), &commit).unwrap();
    let web_tree = tree
        .tree_id(&launchway_config::RepoPath::parse("web").unwrap())
        .unwrap()
        .unwrap();
    let options = launchway_git::TarOptions {
        prefix: "app".into(),
        uid: 10000,
        gid: 10000,
        mtime: 1_700_000_000,
        max_bytes: 1 << 20,
    };
    let objects = Objects::open(&repo.git_dir(), None).unwrap();
    let mut bytes = Vec::new();
    let stats = launchway_git::write_tree_tar(&objects, &web_tree, &mut bytes, &options).unwrap();
    assert_eq!((stats.files, stats.submodules), (3, 0));
    let mut again = Vec::new();
    launchway_git::write_tree_tar(&objects, &web_tree, &mut again, &options).unwrap();
    assert_eq!(bytes, again, "the same tree must give the same bytes");

    let mut seen = BTreeMap::new();
    for entry in tar::Archive::new(bytes.as_slice()).entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        assert_eq!(
            (header.uid().unwrap(), header.gid().unwrap()),
            (10000, 10000)
        );
        let path = entry.path().unwrap().display().to_string();
        let link = entry.link_name().unwrap().map(|l| l.display().to_string());
        seen.insert(path, (header.mode().unwrap(), link));
    }
    assert_eq!(seen["app/"].0, 0o755);
    assert_eq!(seen["app/app.py"], (0o644, None));
    assert_eq!(seen["app/bin/run"], (0o755, None));
    assert_eq!(seen["app/link.py"].1.as_deref(), Some("app.py"));

    let small = launchway_git::TarOptions {
        max_bytes: 4,
        ..options
    };
    let refused = launchway_git::write_tree_tar(&objects, &web_tree, std::io::sink(), &small);
    assert!(refused.unwrap_err().to_string().contains("exceed"));
}
