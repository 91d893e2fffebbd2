//! Newest-first indexes of activities, builds and releases, by project and
//! by environment, so that a listing costs what it shows, not the history
//! of every other project.
//!
//! Each index is two key-only trees: `project\0 ‖ order` and
//! `project\0environment\0 ‖ order`, whose value is the record's key.
//! `order` sorts ascending in the listings' order (newest first, ties by id
//! descending): the complement of the time (or of the activity number),
//! then the complement of the id with a `0xFF` terminator.
//!
//! No transaction: an index key is written before its record and removed
//! after it, and a reader checks each record it reaches against the key. So
//! an index may hold a key whose record is gone or has moved (a crash
//! between the two writes) — skipped on read, removed by the next write or
//! retention pass of that record — but never misses a record.

use std::ops::Bound;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Activity, Build, Release, Store, StoreError, decode, encode, prefix_key};

/// The index layout version; a store opened with a lower one is re-indexed.
const INDEX_VERSION: u32 = 1;
/// The key in the `meta` tree holding [`INDEX_VERSION`].
const INDEX_VERSION_KEY: &str = "index_version";
/// Records indexed per batch when rebuilding an index.
const BACKFILL_BATCH: usize = 10_000;

/// A record kept in a newest-first index.
pub(crate) trait Indexed: Serialize + DeserializeOwned {
    fn project(&self) -> &str;
    fn environment(&self) -> &str;
    /// Its key in the records tree.
    fn record_key(&self) -> Vec<u8>;
    /// Its place in the listings (see the module's header).
    fn order(&self) -> Vec<u8>;
}

fn time_then_id(time: u64, id: &str) -> Vec<u8> {
    let mut order = (!time).to_be_bytes().to_vec();
    order.extend(id.bytes().map(|b| !b));
    order.push(0xFF);
    order
}

impl Indexed for Activity {
    fn project(&self) -> &str {
        &self.project
    }
    fn environment(&self) -> &str {
        &self.environment
    }
    fn record_key(&self) -> Vec<u8> {
        self.id.to_be_bytes().to_vec()
    }
    fn order(&self) -> Vec<u8> {
        activity_order(self.id)
    }
}

pub(crate) fn activity_order(id: u64) -> Vec<u8> {
    (!id).to_be_bytes().to_vec()
}

impl Indexed for Build {
    fn project(&self) -> &str {
        &self.project
    }
    fn environment(&self) -> &str {
        &self.environment
    }
    fn record_key(&self) -> Vec<u8> {
        self.id.as_bytes().to_vec()
    }
    fn order(&self) -> Vec<u8> {
        time_then_id(self.started_at, &self.id)
    }
}

impl Indexed for Release {
    fn project(&self) -> &str {
        &self.project
    }
    fn environment(&self) -> &str {
        &self.environment
    }
    fn record_key(&self) -> Vec<u8> {
        self.id.as_bytes().to_vec()
    }
    fn order(&self) -> Vec<u8> {
        time_then_id(self.created_at, &self.id)
    }
}

/// Where a newest-first listing starts: after this (time, id) — a page
/// cursor — or from the newest.
pub type After<'a> = Option<(u64, &'a str)>;

pub(crate) fn order_after(after: After<'_>) -> Option<Vec<u8>> {
    after.map(|(time, id)| time_then_id(time, id))
}

/// One record kind's two index trees.
#[derive(Clone, Debug)]
pub(crate) struct Index {
    pub(crate) by_project: sled::Tree,
    pub(crate) by_environment: sled::Tree,
}

fn environment_prefix(project: &str, environment: &str) -> Vec<u8> {
    let mut key = prefix_key(project);
    key.extend_from_slice(environment.as_bytes());
    key.push(0);
    key
}

impl Index {
    pub(crate) fn open(db: &sled::Db, name: &str) -> Result<Index, StoreError> {
        Ok(Index {
            by_project: db.open_tree(format!("{name}_by_project"))?,
            by_environment: db.open_tree(format!("{name}_by_environment"))?,
        })
    }

    fn keys<T: Indexed>(record: &T) -> (Vec<u8>, Vec<u8>) {
        let order = record.order();
        let mut by_project = prefix_key(record.project());
        by_project.extend_from_slice(&order);
        let mut by_environment = environment_prefix(record.project(), record.environment());
        by_environment.extend_from_slice(&order);
        (by_project, by_environment)
    }

    fn insert<T: Indexed>(&self, record: &T) -> Result<(), StoreError> {
        let (by_project, by_environment) = Self::keys(record);
        let value = record.record_key();
        self.by_project.insert(by_project, value.as_slice())?;
        self.by_environment.insert(by_environment, value)?;
        Ok(())
    }

    fn remove<T: Indexed>(&self, record: &T) -> Result<(), StoreError> {
        let (by_project, by_environment) = Self::keys(record);
        self.by_project.remove(by_project)?;
        self.by_environment.remove(by_environment)?;
        Ok(())
    }

    fn clear(&self) -> Result<(), StoreError> {
        self.by_project.clear()?;
        self.by_environment.clear()?;
        Ok(())
    }

    /// The index keys of a project (one environment of it when given),
    /// newest first, after `after` (an order, exclusive).
    fn walk(
        &self,
        project: &str,
        environment: Option<&str>,
        after: Option<Vec<u8>>,
    ) -> (Vec<u8>, sled::Iter) {
        let (tree, prefix) = match environment {
            Some(environment) => (
                &self.by_environment,
                environment_prefix(project, environment),
            ),
            None => (&self.by_project, prefix_key(project)),
        };
        let start = match after {
            Some(order) => {
                let mut key = prefix.clone();
                key.extend_from_slice(&order);
                Bound::Excluded(key)
            }
            None => Bound::Included(prefix.clone()),
        };
        let iter = tree.range::<Vec<u8>, _>((start, Bound::Unbounded));
        (prefix, iter)
    }
}

impl Store {
    /// Writes an indexed record: new index keys first, then the record, then
    /// the keys of its old place (if it moved), then a flush.
    pub(crate) fn put_indexed<T: Indexed>(
        &self,
        records: &sled::Tree,
        index: &Index,
        tree: &'static str,
        record: &T,
    ) -> Result<(), StoreError> {
        let key = record.record_key();
        let old: Option<T> = Self::get(records, tree, &key).unwrap_or(None);
        index.insert(record)?;
        records.insert(key, encode(record))?;
        if let Some(old) = old {
            let (old_project, old_environment) = Index::keys(&old);
            let (new_project, new_environment) = Index::keys(record);
            if old_project != new_project {
                index.by_project.remove(old_project)?;
            }
            if old_environment != new_environment {
                index.by_environment.remove(old_environment)?;
            }
        }
        self.flush()
    }

    /// Removes an indexed record (then its index keys); returns it.
    pub(crate) fn delete_indexed<T: Indexed>(
        &self,
        records: &sled::Tree,
        index: &Index,
        tree: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let old: Option<T> = Self::get(records, tree, key)?;
        records.remove(key)?;
        if let Some(old) = &old {
            index.remove(old)?;
        }
        Ok(old)
    }

    /// Up to `limit` records of a project (or one of its environments),
    /// newest first, after the order `after`. Index keys whose record is
    /// gone or elsewhere are skipped.
    pub(crate) fn list_indexed<T: Indexed>(
        records: &sled::Tree,
        index: &Index,
        tree: &'static str,
        project: &str,
        environment: Option<&str>,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        let (prefix, iter) = index.walk(project, environment, after);
        let mut found = Vec::new();
        for item in iter {
            if found.len() >= limit {
                break;
            }
            let (key, record_key) = item?;
            let Some(order) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let Some(record) = Self::get::<T>(records, tree, &record_key)? else {
                continue;
            };
            let here = record.project() == project
                && environment.is_none_or(|e| e == record.environment())
                && record.order() == order;
            if here {
                found.push(record);
            }
        }
        Ok(found)
    }

    /// Every environment name of a project that has activities, builds or
    /// releases, deleted ones included (retention reaches their history
    /// through this). Reads one key per environment and tree.
    pub fn history_environments(
        &self,
        project: &str,
    ) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let mut found = std::collections::BTreeSet::new();
        let prefix = prefix_key(project);
        for index in [&self.activity_index, &self.build_index, &self.release_index] {
            let mut start = prefix.clone();
            loop {
                let Some(item) = index
                    .by_environment
                    .range::<Vec<u8>, _>((Bound::Included(start.clone()), Bound::Unbounded))
                    .next()
                else {
                    break;
                };
                let (key, _) = item?;
                let Some(rest) = key.strip_prefix(prefix.as_slice()) else {
                    break;
                };
                let Some(end) = rest.iter().position(|&b| b == 0) else {
                    break;
                };
                let name = &rest[..end];
                found.insert(String::from_utf8_lossy(name).into_owned());
                // Past every key of this environment: `name\x01` sorts
                // after `name\0…` and before any longer name.
                start = prefix.clone();
                start.extend_from_slice(name);
                start.push(1);
            }
        }
        Ok(found)
    }

    /// Rebuilds the indexes when they are older than this code's layout (or
    /// absent: a store from before indexes). A crash midway leaves the old
    /// version recorded, so the next open starts over.
    pub(crate) fn ensure_indexes(&self) -> Result<(), StoreError> {
        let current = self
            .meta
            .get(INDEX_VERSION_KEY)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes);
        if current == Some(INDEX_VERSION) {
            return Ok(());
        }
        self.activity_index.clear()?;
        self.build_index.clear()?;
        self.release_index.clear()?;
        Self::backfill::<Activity>(&self.activities, &self.activity_index, crate::ACTIVITIES)?;
        Self::backfill::<Build>(&self.builds, &self.build_index, crate::BUILDS)?;
        Self::backfill::<Release>(&self.releases, &self.release_index, crate::RELEASES)?;
        self.flush()?;
        self.meta
            .insert(INDEX_VERSION_KEY, INDEX_VERSION.to_be_bytes().as_slice())?;
        self.flush()
    }

    fn backfill<T: Indexed>(
        records: &sled::Tree,
        index: &Index,
        tree: &'static str,
    ) -> Result<(), StoreError> {
        let mut by_project = sled::Batch::default();
        let mut by_environment = sled::Batch::default();
        let mut pending = 0;
        for item in records.iter() {
            let (key, value) = item?;
            let record: T = decode(tree, &key, &value)?;
            let (project_key, environment_key) = Index::keys(&record);
            by_project.insert(project_key, key.clone());
            by_environment.insert(environment_key, key);
            pending += 1;
            if pending == BACKFILL_BATCH {
                index
                    .by_project
                    .apply_batch(std::mem::take(&mut by_project))?;
                index
                    .by_environment
                    .apply_batch(std::mem::take(&mut by_environment))?;
                pending = 0;
            }
        }
        index.by_project.apply_batch(by_project)?;
        index.by_environment.apply_batch(by_environment)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{ActivityKind, BuildStatus, ReleaseStatus};

    fn release(id: &str, project: &str, environment: &str, at: u64) -> Release {
        Release {
            id: id.into(),
            project: project.into(),
            environment: environment.into(),
            build: "B".into(),
            commit: "c".into(),
            created_at: at,
            description: String::new(),
            status: ReleaseStatus::Superseded,
            spec: serde_json::Value::Null,
            activity: None,
            variables: Vec::new(),
            config: serde_json::Value::Null,
        }
    }

    fn ids(releases: &[Release]) -> Vec<&str> {
        releases.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn listings_are_newest_first_per_project_and_environment_and_page_after_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_release(&release("R1", "a", "main", 1)).unwrap();
        store.put_release(&release("R3", "a", "dev", 2)).unwrap();
        store.put_release(&release("R2", "a", "main", 2)).unwrap();
        store.put_release(&release("R22", "a", "main", 2)).unwrap();
        // A project whose name extends another's, and an environment whose
        // name extends another's: neither leaks into the other's listing.
        store.put_release(&release("R9", "ab", "main", 9)).unwrap();
        store
            .put_release(&release("R8", "a", "mainline", 9))
            .unwrap();

        let all = store.releases("a", None).unwrap();
        assert_eq!(ids(&all), ["R8", "R3", "R22", "R2", "R1"]);
        let main = store.releases("a", Some("main")).unwrap();
        assert_eq!(ids(&main), ["R22", "R2", "R1"]);
        let page = store
            .releases_page("a", Some("main"), Some((2, "R22")), 1)
            .unwrap();
        assert_eq!(ids(&page), ["R2"]);
        let page = store.releases_page("a", None, Some((2, "R3")), 10).unwrap();
        assert_eq!(ids(&page), ["R22", "R2", "R1"]);

        // A record that moves (an import re-dated it) is listed once, at
        // its new place.
        store.put_release(&release("R1", "a", "main", 5)).unwrap();
        assert_eq!(
            ids(&store.releases("a", Some("main")).unwrap()),
            ["R1", "R22", "R2"]
        );
        assert_eq!(
            store
                .history_environments("a")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            ["dev", "main", "mainline"]
        );
        store.delete_release("R22").unwrap();
        assert_eq!(
            ids(&store.releases("a", None).unwrap()),
            ["R8", "R1", "R3", "R2"]
        );
    }

    #[test]
    fn a_dangling_index_key_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_release(&release("R1", "a", "main", 1)).unwrap();
        store.put_release(&release("R2", "a", "main", 2)).unwrap();
        // As a crash between removing the record and its index keys leaves it.
        store.releases.remove("R2").unwrap();
        assert_eq!(ids(&store.releases("a", Some("main")).unwrap()), ["R1"]);
        assert_eq!(
            ids(&store.releases_page("a", None, None, 1).unwrap()),
            ["R1"]
        );
    }

    #[test]
    fn activities_page_by_environment_and_across_projects() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut made = Vec::new();
        for (project, environment) in [("a", "main"), ("b", "main"), ("a", "dev"), ("a", "main")] {
            let id = store.next_activity_id().unwrap();
            let activity = Activity::new(id, project, environment, ActivityKind::Push, "p", 1);
            store.put_activity(&activity).unwrap();
            store.put_activity(&activity).unwrap();
            store.append_log(id, "line\n").unwrap();
            made.push(id);
        }
        let listed = |page: Vec<Activity>| page.iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(
            listed(
                store
                    .activities_page(Some("a"), Some("main"), None, 10)
                    .unwrap()
            ),
            [made[3], made[0]]
        );
        assert_eq!(
            listed(
                store
                    .activities_page(Some("a"), None, Some(made[3]), 10)
                    .unwrap()
            ),
            [made[2], made[0]]
        );
        assert_eq!(
            listed(
                store
                    .activities_page(None, None, Some(made[2]), 10)
                    .unwrap()
            ),
            [made[1], made[0]]
        );
        assert_eq!(
            listed(store.activities_page(None, Some("dev"), None, 10).unwrap()),
            [made[2]]
        );
        store.delete_activity(made[0]).unwrap();
        assert_eq!(store.log(made[0]).unwrap(), "");
        assert_eq!(store.log(made[3]).unwrap(), "line\n");
        assert_eq!(
            listed(store.activities(Some("a"), 10).unwrap()),
            [made[3], made[2]]
        );
    }

    #[test]
    fn a_store_without_indexes_is_indexed_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_release(&release("R1", "a", "main", 1)).unwrap();
            let build = Build {
                id: "B1".into(),
                project: "a".into(),
                environment: "main".into(),
                commit: String::new(),
                apps: Vec::new(),
                status: BuildStatus::Complete,
                release: None,
                started_at: 3,
                elapsed_ms: None,
                description: String::new(),
                activity: None,
                imported_from: None,
            };
            store.put_build(&build).unwrap();
            // As a store written before indexes existed, or a re-index a
            // crash interrupted.
            store.release_index.clear().unwrap();
            store.build_index.clear().unwrap();
            store.meta.remove(INDEX_VERSION_KEY).unwrap();
            store.flush().unwrap();
            assert!(store.releases("a", None).unwrap().is_empty());
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(ids(&store.releases("a", Some("main")).unwrap()), ["R1"]);
        assert_eq!(store.builds(Some("a")).unwrap().len(), 1);
        assert_eq!(
            store.builds_page("a", Some("main"), None, 5).unwrap().len(),
            1
        );
    }
}
