//! Releases and the deployment record of each environment.

use crate::{DEPLOYMENTS, Deployment, RELEASES, Release, Store, StoreError, encode, pair_key};

impl Store {
    /// Creates or updates a release.
    pub fn put_release(&self, release: &Release) -> Result<(), StoreError> {
        self.releases
            .insert(release.id.as_bytes(), encode(release))?;
        self.flush()
    }

    /// The release `id`.
    pub fn release(&self, id: &str) -> Result<Option<Release>, StoreError> {
        Self::get(&self.releases, RELEASES, id.as_bytes())
    }

    /// The releases of a project's environment (every one when `None`),
    /// newest first.
    pub fn releases(
        &self,
        project: &str,
        environment: Option<&str>,
    ) -> Result<Vec<Release>, StoreError> {
        let mut found: Vec<Release> = Self::scan(&self.releases, RELEASES, b"")?
            .into_iter()
            .filter(|r: &Release| {
                r.project == project && environment.is_none_or(|e| e == r.environment)
            })
            .collect();
        found.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(found)
    }

    /// Every release of every project.
    pub fn all_releases(&self) -> Result<Vec<Release>, StoreError> {
        Self::scan(&self.releases, RELEASES, b"")
    }

    /// Records an environment's deploy state (before its effect runs).
    pub fn put_deployment(&self, deployment: &Deployment) -> Result<(), StoreError> {
        self.deployments.insert(
            pair_key(&deployment.project, &deployment.environment),
            encode(deployment),
        )?;
        self.flush()
    }

    /// An environment's deploy state.
    pub fn deployment(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<Option<Deployment>, StoreError> {
        Self::get(
            &self.deployments,
            DEPLOYMENTS,
            &pair_key(project, environment),
        )
    }

    /// Every environment's deploy state.
    pub fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        Self::scan(&self.deployments, DEPLOYMENTS, b"")
    }

    /// Forgets an environment's deploy state.
    pub fn delete_deployment(&self, project: &str, environment: &str) -> Result<(), StoreError> {
        self.deployments.remove(pair_key(project, environment))?;
        self.flush()
    }
}
