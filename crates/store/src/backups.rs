//! Backup records: what `launchway backups` lists. The data itself lives
//! under the data directory (`backups/<project>/<id>/`); a record is written
//! only once that directory is whole, so a record never names half a
//! backup.

use serde::{Deserialize, Serialize};

use crate::{Store, StoreError, pair_key, prefix_key};

/// The sled tree of backup records.
pub(crate) const BACKUPS: &str = "backups";

/// A backup of an environment's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// `S` (snapshot: builds have `B`) and nine capitals and digits.
    pub id: String,
    pub project: String,
    /// The environment it was taken from.
    pub environment: String,
    pub created_at: u64,
    /// The release the environment served (its spec has the variables it
    /// ran with); empty when it served none.
    pub release: String,
    /// Bytes of data it holds (shared extents counted whole).
    pub size_bytes: u64,
    /// Taken without pausing the environment (services that copy online).
    pub live: bool,
    /// How long the environment's containers were paused, in ms.
    pub paused_ms: u64,
    /// The activity that took it.
    pub activity: Option<u64>,
    /// The commit of its release.
    #[serde(default)]
    pub commit: String,
    /// Taken by the environment's schedule: the retention may remove it.
    #[serde(default)]
    pub scheduled: bool,
}

impl Store {
    /// Records a backup whose data is in place.
    pub fn put_backup(&self, backup: &Backup) -> Result<(), StoreError> {
        self.backups
            .insert(pair_key(&backup.project, &backup.id), crate::encode(backup))?;
        self.flush()
    }

    /// The backup `id` of `project`.
    pub fn backup(&self, project: &str, id: &str) -> Result<Option<Backup>, StoreError> {
        Self::get(&self.backups, BACKUPS, &pair_key(project, id))
    }

    /// The backups of a project (of one environment when given), newest
    /// first.
    pub fn backups(
        &self,
        project: &str,
        environment: Option<&str>,
    ) -> Result<Vec<Backup>, StoreError> {
        let mut found: Vec<Backup> = Self::scan(&self.backups, BACKUPS, &prefix_key(project))?
            .into_iter()
            .filter(|b: &Backup| environment.is_none_or(|e| e == b.environment))
            .collect();
        found.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(found)
    }

    /// Every backup of every project (garbage collection keeps their
    /// releases' builds).
    pub fn all_backups(&self) -> Result<Vec<Backup>, StoreError> {
        Self::scan(&self.backups, BACKUPS, &[])
    }

    /// Forgets a backup (its data is removed first by the caller); whether
    /// there was one.
    pub fn delete_backup(&self, project: &str, id: &str) -> Result<bool, StoreError> {
        let existed = self.backups.remove(pair_key(project, id))?.is_some();
        self.flush()?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(project: &str, id: &str, environment: &str, created_at: u64) -> Backup {
        Backup {
            id: id.into(),
            project: project.into(),
            environment: environment.into(),
            created_at,
            release: "R1".into(),
            size_bytes: 42,
            live: false,
            paused_ms: 120,
            activity: Some(7),
            commit: "abc".into(),
            scheduled: false,
        }
    }

    #[test]
    fn backups_are_listed_per_project_newest_first_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        {
            let store = Store::open(&path).unwrap();
            store.put_backup(&backup("shop", "B1", "main", 10)).unwrap();
            store.put_backup(&backup("shop", "B2", "dev", 20)).unwrap();
            store.put_backup(&backup("shop", "B3", "main", 30)).unwrap();
            // A project whose name is a prefix of another's sees only its own.
            store
                .put_backup(&backup("shopx", "B4", "main", 40))
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let ids = |list: Vec<Backup>| list.into_iter().map(|b| b.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.backups("shop", None).unwrap()),
            ["B3", "B2", "B1"]
        );
        assert_eq!(
            ids(store.backups("shop", Some("main")).unwrap()),
            ["B3", "B1"]
        );
        assert_eq!(
            store.backup("shop", "B2").unwrap(),
            Some(backup("shop", "B2", "dev", 20))
        );
        assert_eq!(store.backup("shopx", "B2").unwrap(), None);
        assert!(store.delete_backup("shop", "B2").unwrap());
        assert!(!store.delete_backup("shop", "B2").unwrap());
        assert_eq!(ids(store.backups("shop", None).unwrap()), ["B3", "B1"]);
    }
}
