//! Launchway's state: the only crate that knows sled.
//!
//! One sled database under the data directory holds typed trees, one file
//! per group: projects, key grants and environments (`projects.rs`),
//! activities and their logs (`activities.rs`), builds and their logs
//! (`builds.rs`), releases and deployments (`releases.rs`), variables
//! (`variables.rs`), backups (`backups.rs`) and certificates
//! (`certificates.rs`), API tokens (`tokens.rs`); the record types are in `records.rs`. Every record
//! is stored as one version byte followed by JSON ([`SCHEMA_VERSION`]); a record
//! written by a newer Launchway is refused with [`StoreError::Version`] rather
//! than misread. Writes are flushed before the call returns, so a state change
//! is durable before its effect runs.

mod activities;
mod backups;
mod builders;
mod builds;
mod certificates;
mod index;
mod projects;
mod purge;
mod records;
mod releases;
mod tokens;
mod variables;
mod webhooks;

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use backups::Backup;
pub use builders::{BuilderRecord, JoinRefusal, JoinToken};
pub use certificates::{AcmeAccount, CertificateRecord, CertificateSource};
pub use index::After;
pub use records::{
    Activity, ActivityKind, ActivityResult, ActivityState, BackupSchedule, Build, BuildApp,
    BuildEgress, BuildStatus, Deployment, EgressTraffic, Environment, EnvironmentStatus,
    EnvironmentType, KeyGrant, Project, Release, ReleaseStatus, ReleaseVariable, Role, Variable,
};
pub use tokens::{NewToken, TokenRecord, secret_is_well_formed, token_hash};
pub use webhooks::{Delivery, DeliveryState, Webhook};

/// The encoding version written in front of every record.
pub const SCHEMA_VERSION: u8 = 1;

/// What the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (disk full, corruption, permissions).
    #[error("state database failed")]
    Database(#[from] sled::Error),
    /// A record could not be decoded.
    #[error("state record `{key}` in `{tree}` is corrupt")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// The record's key.
        key: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A record was written by a newer version of Launchway.
    #[error(
        "state record `{key}` in `{tree}` has encoding version {found}; this Launchway reads version {SCHEMA_VERSION}"
    )]
    Version {
        /// The tree.
        tree: &'static str,
        /// The record's key.
        key: String,
        /// The version found.
        found: u8,
    },
    /// Creating something that exists.
    #[error("{what} `{name}` already exists")]
    AlreadyExists {
        /// `project`, …
        what: &'static str,
        /// Its name.
        name: String,
    },
}

/// The state database.
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    projects: sled::Tree,
    keys: sled::Tree,
    environments: sled::Tree,
    activities: sled::Tree,
    logs: sled::Tree,
    builds: sled::Tree,
    build_logs: sled::Tree,
    releases: sled::Tree,
    deployments: sled::Tree,
    variables: sled::Tree,
    backups: sled::Tree,
    certificates: sled::Tree,
    tokens: sled::Tree,
    token_hashes: sled::Tree,
    join_tokens: sled::Tree,
    builders: sled::Tree,
    webhooks: sled::Tree,
    deliveries: sled::Tree,
    meta: sled::Tree,
    activity_index: index::Index,
    build_index: index::Index,
    release_index: index::Index,
}

const PROJECTS: &str = "projects";
const KEYS: &str = "keys";
const ENVIRONMENTS: &str = "environments";
const ACTIVITIES: &str = "activities";
const LOGS: &str = "activity_logs";
const BUILDS: &str = "builds";
const BUILD_LOGS: &str = "build_logs";
const RELEASES: &str = "releases";
const DEPLOYMENTS: &str = "deployments";
const VARIABLES: &str = "variables";
const META: &str = "meta";
const INSTANCE_ID_KEY: &str = "instance_id";

/// sled's page cache when no size is given: 16 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 16 << 20;

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![SCHEMA_VERSION];
    // Serializing these plain records cannot fail: no maps with non-string keys.
    bytes.extend(serde_json::to_vec(value).unwrap_or_default());
    bytes
}

fn decode<T: DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    let key_text = || String::from_utf8_lossy(key).replace('\0', "/");
    match bytes.split_first() {
        Some((&SCHEMA_VERSION, body)) => {
            serde_json::from_slice(body).map_err(|source| StoreError::Corrupt {
                tree,
                key: key_text(),
                source,
            })
        }
        Some((&found, _)) => Err(StoreError::Version {
            tree,
            key: key_text(),
            found,
        }),
        None => Err(StoreError::Version {
            tree,
            key: key_text(),
            found: 0,
        }),
    }
}

/// `a\0b`: composite keys sort by their first part, then the second. Names
/// never contain NUL (projects and branches are validated before they get here).
fn pair_key(a: &str, b: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(a.len() + b.len() + 1);
    key.extend_from_slice(a.as_bytes());
    key.push(0);
    key.extend_from_slice(b.as_bytes());
    key
}

fn prefix_key(a: &str) -> Vec<u8> {
    let mut key = a.as_bytes().to_vec();
    key.push(0);
    key
}

impl Store {
    /// Opens (or creates) the database in the directory `path`, with sled's
    /// page cache bounded to [`DEFAULT_CACHE_BYTES`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the database, its page cache bounded to
    /// `cache_bytes` (sled's own default, 1 GiB, lets a daemon's memory
    /// follow the size of its history).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let config = sled::Config::new().path(path).cache_capacity(cache_bytes);
        // A database dropped a moment ago may still be locked by its
        // flusher thread finishing a flush: wait for it, briefly.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(error))
                    if error.kind() == std::io::ErrorKind::Other
                        && error.to_string().contains("could not acquire lock")
                        && attempts < 30 =>
                {
                    attempts += 1;
                    #[allow(
                        clippy::disallowed_methods,
                        reason = "opening is synchronous and happens before anything is served"
                    )]
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(error) => return Err(error.into()),
            }
        };
        let store = Store {
            projects: db.open_tree(PROJECTS)?,
            keys: db.open_tree(KEYS)?,
            environments: db.open_tree(ENVIRONMENTS)?,
            activities: db.open_tree(ACTIVITIES)?,
            logs: db.open_tree(LOGS)?,
            builds: db.open_tree(BUILDS)?,
            build_logs: db.open_tree(BUILD_LOGS)?,
            releases: db.open_tree(RELEASES)?,
            deployments: db.open_tree(DEPLOYMENTS)?,
            variables: db.open_tree(VARIABLES)?,
            backups: db.open_tree(backups::BACKUPS)?,
            certificates: db.open_tree(certificates::CERTIFICATES)?,
            tokens: db.open_tree(tokens::TOKENS)?,
            token_hashes: db.open_tree(tokens::TOKEN_HASHES)?,
            join_tokens: db.open_tree(builders::JOIN_TOKENS)?,
            builders: db.open_tree(builders::BUILDERS)?,
            webhooks: db.open_tree(webhooks::WEBHOOKS)?,
            deliveries: db.open_tree(webhooks::DELIVERIES)?,
            meta: db.open_tree(META)?,
            activity_index: index::Index::open(&db, ACTIVITIES)?,
            build_index: index::Index::open(&db, BUILDS)?,
            release_index: index::Index::open(&db, RELEASES)?,
            db,
        };
        store.ensure_indexes()?;
        Ok(store)
    }

    /// This data directory's daemon instance id (16 random bytes, hex),
    /// made on first use; `true` when it was made by this call.
    pub fn instance_id(&self) -> Result<(String, bool), StoreError> {
        if let Some(id) = self.meta.get(INSTANCE_ID_KEY)? {
            return Ok((String::from_utf8_lossy(&id).into_owned(), false));
        }
        let id = hex::encode(rand::random::<[u8; 16]>());
        let won =
            self.meta
                .compare_and_swap(INSTANCE_ID_KEY, None::<&[u8]>, Some(id.as_bytes()))?;
        self.flush()?;
        match won {
            Ok(()) => Ok((id, true)),
            Err(current) => Ok((
                current
                    .current
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or(id),
                false,
            )),
        }
    }

    /// Whether the one-time step `name` is recorded as done.
    pub fn milestone(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.meta.get(format!("done:{name}"))?.is_some())
    }

    /// Records the one-time step `name` as done.
    pub fn reach_milestone(&self, name: &str) -> Result<(), StoreError> {
        self.meta.insert(format!("done:{name}"), b"1".as_slice())?;
        self.flush()
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn scan<T: DeserializeOwned>(
        tree: &sled::Tree,
        name: &'static str,
        prefix: &[u8],
    ) -> Result<Vec<T>, StoreError> {
        tree.scan_prefix(prefix)
            .map(|item| {
                let (key, value) = item?;
                decode(name, &key, &value)
            })
            .collect()
    }

    fn get<T: DeserializeOwned>(
        tree: &sled::Tree,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        tree.get(key)?
            .map(|value| decode(name, key, &value))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        (dir, store)
    }

    fn project(name: &str) -> Project {
        Project {
            name: name.into(),
            default_branch: "main".into(),
            created_at: 1,
            service_secret: String::new(),
            build_egress: BuildEgress::None,
            backup_max_bytes: 0,
            backup_schedules: Default::default(),
            deleting: None,
            build_cache_generations: std::collections::BTreeMap::new(),
        }
    }

    #[test]
    fn projects_are_unique_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        {
            let store = Store::open(&path).unwrap();
            store.create_project(&project("shop")).unwrap();
            let again = store.create_project(&project("shop")).unwrap_err();
            assert!(matches!(again, StoreError::AlreadyExists { .. }), "{again}");
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.projects().unwrap(), vec![project("shop")]);
    }

    #[test]
    fn key_grants_are_per_project() {
        let (_dir, store) = store();
        let grant = |project: &str, role| KeyGrant {
            project: project.into(),
            fingerprint: "SHA256:abc".into(),
            public_key: "ssh-ed25519 AAAA".into(),
            comment: "dev".into(),
            role,
            added_at: 2,
        };
        store.put_key(&grant("a", Role::Admin)).unwrap();
        store.put_key(&grant("ab", Role::Viewer)).unwrap();
        assert_eq!(
            store.keys(Some("a")).unwrap(),
            vec![grant("a", Role::Admin)]
        );
        assert_eq!(store.keys(None).unwrap().len(), 2);
        assert!(store.key_is_known("SHA256:abc").unwrap());
        assert!(store.remove_key("a", "SHA256:abc").unwrap());
        assert!(!store.remove_key("a", "SHA256:abc").unwrap());
        assert_eq!(
            store.key("ab", "SHA256:abc").unwrap().unwrap().role,
            Role::Viewer
        );
    }

    #[test]
    fn newer_records_are_refused_not_misread() {
        let (_dir, store) = store();
        store.projects.insert("x", b"\x02{}".as_slice()).unwrap();
        let error = store.project("x").unwrap_err();
        assert!(
            matches!(error, StoreError::Version { found: 2, .. }),
            "{error}"
        );
        store
            .projects
            .insert("y", b"\x01{not json".as_slice())
            .unwrap();
        assert!(matches!(
            store.project("y").unwrap_err(),
            StoreError::Corrupt { .. }
        ));
    }

    #[test]
    fn activities_list_newest_first_with_their_logs() {
        let (_dir, store) = store();
        let mut ids = Vec::new();
        for project in ["a", "b", "a"] {
            let id = store.next_activity_id().unwrap();
            ids.push(id);
            store
                .put_activity(&Activity::new(
                    id,
                    project,
                    "main",
                    ActivityKind::Push,
                    "pushed",
                    5,
                ))
                .unwrap();
            store.append_log(id, "line 1\n").unwrap();
            store.append_log(id, "line 2\n").unwrap();
        }
        let listed: Vec<u64> = store
            .activities(Some("a"), 10)
            .unwrap()
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(listed, vec![ids[2], ids[0]]);
        assert_eq!(store.activities(None, 1).unwrap().len(), 1);
        assert_eq!(store.log(ids[1]).unwrap(), "line 1\nline 2\n");
        assert_eq!(store.log(999).unwrap(), "");
    }

    #[test]
    fn environments_by_project() {
        let (_dir, store) = store();
        let env = Environment::new(
            "a",
            "main",
            None,
            EnvironmentType::Production,
            EnvironmentStatus::Active,
        );
        store.put_environment(&env).unwrap();
        store
            .put_environment(&Environment::new(
                "ab",
                "main",
                None,
                EnvironmentType::Production,
                EnvironmentStatus::Active,
            ))
            .unwrap();
        assert_eq!(store.environments("a").unwrap(), vec![env.clone()]);
        assert_eq!(store.environment("a", "main").unwrap(), Some(env));
        assert!(store.delete_environment("a", "main").unwrap());
        assert_eq!(store.environment("a", "main").unwrap(), None);
    }

    #[test]
    fn variables_by_level_and_project() {
        let (_dir, store) = store();
        let variable = |project: &str, environment: Option<&str>, name: &str| Variable {
            project: project.into(),
            environment: environment.map(str::to_owned),
            name: name.into(),
            value: "v".into(),
            sensitive: false,
            visible_build: true,
            visible_runtime: true,
            inheritable: true,
            json: false,
            updated_at: 1,
        };
        store.put_variable(&variable("p", None, "env:A")).unwrap();
        store
            .put_variable(&variable("p", Some("main"), "env:A"))
            .unwrap();
        store
            .put_variable(&variable("p", Some("dev"), "b"))
            .unwrap();
        store.put_variable(&variable("pp", None, "env:A")).unwrap();
        let listed: Vec<(Option<String>, String)> = store
            .variables("p")
            .unwrap()
            .into_iter()
            .map(|v| (v.environment, v.name))
            .collect();
        assert_eq!(
            listed,
            [
                (None, "env:A".to_owned()),
                (Some("dev".to_owned()), "b".to_owned()),
                (Some("main".to_owned()), "env:A".to_owned()),
            ]
        );
        assert!(
            store
                .variable("p", Some("main"), "env:A")
                .unwrap()
                .is_some()
        );
        assert!(store.delete_variable("p", Some("main"), "env:A").unwrap());
        assert!(!store.delete_variable("p", Some("main"), "env:A").unwrap());
        assert!(store.variable("p", None, "env:A").unwrap().is_some());
    }

    #[test]
    fn releases_and_deployments_round_trip() {
        let (_dir, store) = store();
        let release = |id: &str, at| Release {
            id: id.into(),
            project: "p".into(),
            environment: "main".into(),
            build: "B1".into(),
            commit: "c".into(),
            created_at: at,
            description: String::new(),
            status: ReleaseStatus::Active,
            spec: serde_json::json!({"apps": []}),
            activity: None,
            variables: Vec::new(),
            config: serde_json::Value::Null,
        };
        store.put_release(&release("R1", 1)).unwrap();
        store.put_release(&release("R2", 2)).unwrap();
        let ids: Vec<String> = store
            .releases("p", Some("main"))
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["R2", "R1"]);
        assert!(store.releases("p", Some("dev")).unwrap().is_empty());
        let deployment = Deployment {
            project: "p".into(),
            environment: "main".into(),
            release: "R2".into(),
            previous: Some("R1".into()),
            phase: "starting".into(),
            containers: vec!["c1".into()],
            updated_at: 3,
        };
        store.put_deployment(&deployment).unwrap();
        assert_eq!(store.deployment("p", "main").unwrap(), Some(deployment));
        assert_eq!(store.deployments().unwrap().len(), 1);
        store.delete_deployment("p", "main").unwrap();
        assert!(store.deployment("p", "main").unwrap().is_none());
    }

    #[test]
    fn builds_list_newest_first_and_logs_resume_after_a_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let build = |id: &str, project: &str, at: u64| Build {
            id: id.into(),
            project: project.into(),
            environment: "main".into(),
            commit: "c".repeat(40),
            apps: vec![BuildApp {
                name: "web".into(),
                ..BuildApp::default()
            }],
            status: BuildStatus::Running,
            release: None,
            started_at: at,
            elapsed_ms: None,
            description: "first".into(),
            activity: Some(1),
            imported_from: None,
        };
        store.put_build(&build("BAAAAAAAAA", "shop", 1)).unwrap();
        store.put_build(&build("BBBBBBBBBB", "shop", 2)).unwrap();
        store.put_build(&build("BCCCCCCCCC", "blog", 3)).unwrap();
        let ids: Vec<String> = store
            .builds(Some("shop"))
            .unwrap()
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(ids, ["BBBBBBBBBB", "BAAAAAAAAA"]);
        assert_eq!(store.builds(None).unwrap().len(), 3);

        store.append_build_log("BAAAAAAAAA", "one\n").unwrap();
        let (text, last) = store.build_log_after("BAAAAAAAAA", None).unwrap();
        assert_eq!(text, "one\n");
        store.append_build_log("BAAAAAAAAA", "two\n").unwrap();
        store
            .append_build_log("BAAAAAAAAAX", "other build\n")
            .unwrap();
        let (text, _) = store.build_log_after("BAAAAAAAAA", last).unwrap();
        assert_eq!(text, "two\n");

        store.delete_build("BAAAAAAAAA").unwrap();
        assert!(store.build("BAAAAAAAAA").unwrap().is_none());
        assert_eq!(store.build_log_after("BAAAAAAAAA", None).unwrap().0, "");
        assert_eq!(
            store.build_log_after("BAAAAAAAAAX", None).unwrap().0,
            "other build\n"
        );
    }
}
