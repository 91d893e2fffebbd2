//! Forgetting a whole project (`launchway project delete`).

use crate::index::Index;
use crate::{Activity, Build, Release, Store, StoreError, prefix_key};

impl Store {
    /// Removes every record of `project` but the project record itself
    /// (its tombstone, removed last with [`Store::delete_project`]) and the
    /// activity `keep` (the deletion's own, still running). Idempotent: a
    /// deletion a crash interrupted runs it again.
    pub fn purge_project(&self, project: &str, keep: u64) -> Result<(), StoreError> {
        let prefix = prefix_key(project);
        for tree in [
            &self.keys,
            &self.environments,
            &self.variables,
            &self.deployments,
            &self.backups,
        ] {
            Self::remove_prefix(tree, &prefix)?;
        }
        for activity in self.activities_page(Some(project), None, None, usize::MAX)? {
            if activity.id != keep {
                self.delete_activity(activity.id)?;
            }
        }
        for build in self.builds_page(project, None, None, usize::MAX)? {
            self.delete_build(&build.id)?;
        }
        for release in self.releases(project, None)? {
            self.delete_release(&release.id)?;
        }
        for token in self.tokens(Some(project))? {
            self.revoke_token(&token.id)?;
        }
        for webhook in self.webhooks(Some(project))? {
            self.delete_webhook(&webhook.id)?;
        }
        for delivery in self.deliveries()? {
            if delivery.project == project {
                self.deliveries.remove(delivery.seq.to_be_bytes())?;
            }
        }
        // Index keys whose record went in a crash.
        for index in [&self.build_index, &self.release_index] {
            index.remove_project(project)?;
        }
        self.activity_index.remove_project_except(project, keep)?;
        self.flush()
    }

    /// Removes the project record: the last step of its deletion.
    pub fn delete_project(&self, project: &str) -> Result<(), StoreError> {
        self.projects.remove(project.as_bytes())?;
        self.flush()
    }

    /// Every key of every tree that mentions `project` as its own (for
    /// tests: what a deletion left behind).
    pub fn records_of_project(&self, project: &str) -> Result<Vec<String>, StoreError> {
        let prefix = prefix_key(project);
        let mut found = Vec::new();
        if self.projects.get(project.as_bytes())?.is_some() {
            found.push(format!("projects/{project}"));
        }
        for (name, tree) in [
            ("keys", &self.keys),
            ("environments", &self.environments),
            ("variables", &self.variables),
            ("deployments", &self.deployments),
            ("backups", &self.backups),
        ] {
            for item in tree.scan_prefix(&prefix) {
                let (key, _) = item?;
                found.push(format!("{name}/{}", String::from_utf8_lossy(&key)));
            }
        }
        let mine = |p: &str| p == project;
        for item in self.activities.iter() {
            let (key, value) = item?;
            let activity: Activity = crate::decode(crate::ACTIVITIES, &key, &value)?;
            if mine(&activity.project) {
                found.push(format!("activities/{}", activity.id));
            }
        }
        for item in self.builds.iter() {
            let (key, value) = item?;
            let build: Build = crate::decode(crate::BUILDS, &key, &value)?;
            if mine(&build.project) {
                found.push(format!("builds/{}", build.id));
            }
        }
        for item in self.releases.iter() {
            let (key, value) = item?;
            let release: Release = crate::decode(crate::RELEASES, &key, &value)?;
            if mine(&release.project) {
                found.push(format!("releases/{}", release.id));
            }
        }
        for token in self.tokens(Some(project))? {
            found.push(format!("tokens/{}", token.id));
        }
        for webhook in self.webhooks(Some(project))? {
            found.push(format!("webhooks/{}", webhook.id));
        }
        for delivery in self.deliveries()? {
            if delivery.project == project {
                found.push(format!("webhook_deliveries/{}", delivery.seq));
            }
        }
        Ok(found)
    }

    fn remove_prefix(tree: &sled::Tree, prefix: &[u8]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for item in tree.scan_prefix(prefix) {
            let (key, _) = item?;
            batch.remove(key);
        }
        tree.apply_batch(batch)?;
        Ok(())
    }
}

impl Index {
    /// Drops every index key of `project`.
    pub(crate) fn remove_project(&self, project: &str) -> Result<(), StoreError> {
        let prefix = prefix_key(project);
        Store::remove_prefix(&self.by_project, &prefix)?;
        Store::remove_prefix(&self.by_environment, &prefix)
    }

    /// Drops every index key of `project` but those naming record `keep`.
    pub(crate) fn remove_project_except(&self, project: &str, keep: u64) -> Result<(), StoreError> {
        let prefix = prefix_key(project);
        let keep = keep.to_be_bytes();
        for tree in [&self.by_project, &self.by_environment] {
            let mut batch = sled::Batch::default();
            for item in tree.scan_prefix(&prefix) {
                let (key, value) = item?;
                if value.as_ref() != keep {
                    batch.remove(key);
                }
            }
            tree.apply_batch(batch)?;
        }
        Ok(())
    }
}
