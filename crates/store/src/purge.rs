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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{
        ActivityKind, BuildEgress, Environment, EnvironmentStatus, EnvironmentType, KeyGrant,
        NewToken, Project, ReleaseStatus, Role, Webhook,
    };

    fn fill(store: &Store, project: &str) -> u64 {
        store
            .create_project(&Project {
                name: project.into(),
                default_branch: "main".into(),
                created_at: 1,
                service_secret: String::new(),
                build_egress: BuildEgress::None,
                backup_max_bytes: 0,
                backup_schedules: Default::default(),
                deleting: None,
                build_cache_generations: std::collections::BTreeMap::new(),
            })
            .unwrap();
        store
            .put_environment(&Environment::new(
                project,
                "main",
                None,
                EnvironmentType::Production,
                EnvironmentStatus::Active,
            ))
            .unwrap();
        store
            .put_key(&KeyGrant {
                project: project.into(),
                fingerprint: "SHA256:k".into(),
                public_key: "ssh-ed25519 AAAA".into(),
                comment: String::new(),
                role: Role::Admin,
                added_at: 1,
            })
            .unwrap();
        let id = store.next_activity_id().unwrap();
        store
            .put_activity(&Activity::new(
                id,
                project,
                "main",
                ActivityKind::Push,
                "",
                1,
            ))
            .unwrap();
        store.append_log(id, "log\n").unwrap();
        let build_id = format!("B{project:0>9}");
        store
            .put_build(&Build {
                id: build_id.clone(),
                project: project.into(),
                environment: "main".into(),
                commit: String::new(),
                apps: Vec::new(),
                status: crate::BuildStatus::Complete,
                release: None,
                started_at: 1,
                elapsed_ms: None,
                description: String::new(),
                activity: Some(id),
                imported_from: None,
            })
            .unwrap();
        store.append_build_log(&build_id, "built\n").unwrap();
        store
            .put_release(&Release {
                id: format!("R{project:0>9}"),
                project: project.into(),
                environment: "main".into(),
                build: build_id,
                commit: String::new(),
                created_at: 1,
                description: String::new(),
                status: ReleaseStatus::Active,
                spec: serde_json::Value::Null,
                activity: Some(id),
                variables: Vec::new(),
                config: serde_json::Value::Null,
            })
            .unwrap();
        store
            .create_token(&NewToken {
                name: "ci".into(),
                project: project.into(),
                role: Role::Viewer,
                environment: None,
                deploy_only: false,
                created_at: 1,
                expires_at: None,
                created_by: String::new(),
            })
            .unwrap();
        store
            .put_webhook(&Webhook {
                id: format!("W{project:0>9}"),
                project: project.into(),
                url: "https://example.com/".into(),
                secret: String::new(),
                events: Vec::new(),
                created_at: 1,
            })
            .unwrap();
        id
    }

    #[test]
    fn a_purge_removes_one_project_and_not_one_whose_name_extends_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let running = fill(&store, "a");
        fill(&store, "ab");
        let before = store.records_of_project("ab").unwrap();
        assert_eq!(before.len(), 8, "{before:?}");

        // The deletion's own activity (`running`) stays until it ends.
        store.purge_project("a", running).unwrap();
        assert_eq!(
            store.records_of_project("a").unwrap(),
            ["projects/a".to_owned(), format!("activities/{running}")]
        );
        store.delete_activity(running).unwrap();
        store.delete_project("a").unwrap();
        assert!(store.records_of_project("a").unwrap().is_empty());
        assert_eq!(store.records_of_project("ab").unwrap(), before);
        assert_eq!(store.activities(Some("ab"), 10).unwrap().len(), 1);
        assert!(store.activities(Some("a"), 10).unwrap().is_empty());
        // Purging again changes nothing (a resumed deletion).
        store.purge_project("a", 0).unwrap();
        assert_eq!(store.records_of_project("ab").unwrap(), before);
    }
}
