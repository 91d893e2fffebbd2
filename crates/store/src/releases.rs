//! Releases and the deployment record of each environment.

use crate::index::{After, order_after};
use crate::{DEPLOYMENTS, Deployment, RELEASES, Release, Store, StoreError, encode, pair_key};

impl Store {
    /// Creates or updates a release.
    pub fn put_release(&self, release: &Release) -> Result<(), StoreError> {
        self.put_indexed(&self.releases, &self.release_index, RELEASES, release)
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
        self.releases_page(project, environment, None, usize::MAX)
    }

    /// A page of a project's releases (or one environment's), newest first,
    /// after the (creation time, id) `after`, at most `limit`.
    pub fn releases_page(
        &self,
        project: &str,
        environment: Option<&str>,
        after: After<'_>,
        limit: usize,
    ) -> Result<Vec<Release>, StoreError> {
        Self::list_indexed(
            &self.releases,
            &self.release_index,
            RELEASES,
            project,
            environment,
            order_after(after),
            limit,
        )
    }

    /// Deletes a release record.
    pub fn delete_release(&self, id: &str) -> Result<(), StoreError> {
        self.delete_indexed::<Release>(
            &self.releases,
            &self.release_index,
            RELEASES,
            id.as_bytes(),
        )?;
        self.flush()
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

    /// Records a deploy phase without waiting for the disk: for the phases
    /// inside the hold, which a crash treats like the flushed `holding`
    /// before them (recovery redeploys the release either way).
    pub fn put_deployment_unflushed(&self, deployment: &Deployment) -> Result<(), StoreError> {
        self.deployments.insert(
            pair_key(&deployment.project, &deployment.environment),
            encode(deployment),
        )?;
        Ok(())
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
