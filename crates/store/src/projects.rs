//! Projects, SSH key grants and environments.

use crate::{
    ENVIRONMENTS, Environment, KEYS, KeyGrant, PROJECTS, Project, Store, StoreError, decode,
    encode, pair_key, prefix_key,
};

impl Store {
    // Projects.

    /// Records a new project; fails when the name is taken.
    pub fn create_project(&self, project: &Project) -> Result<(), StoreError> {
        let swapped = self.projects.compare_and_swap(
            project.name.as_bytes(),
            None as Option<&[u8]>,
            Some(encode(project)),
        )?;
        if swapped.is_err() {
            return Err(StoreError::AlreadyExists {
                what: "project",
                name: project.name.clone(),
            });
        }
        self.flush()
    }

    /// Changes the project `name` with `change`, atomically against other
    /// writers (retried when the record changed meanwhile); returns the new
    /// record, or `None` when there is no such project.
    pub fn update_project(
        &self,
        name: &str,
        mut change: impl FnMut(&mut Project),
    ) -> Result<Option<Project>, StoreError> {
        loop {
            let Some(current) = self.projects.get(name.as_bytes())? else {
                return Ok(None);
            };
            let mut project: Project = decode(PROJECTS, name.as_bytes(), &current)?;
            change(&mut project);
            let encoded = encode(&project);
            if encoded == current.as_ref() {
                return Ok(Some(project));
            }
            let swapped =
                self.projects
                    .compare_and_swap(name.as_bytes(), Some(&current), Some(encoded))?;
            if swapped.is_ok() {
                self.flush()?;
                return Ok(Some(project));
            }
        }
    }

    /// The project called `name`.
    pub fn project(&self, name: &str) -> Result<Option<Project>, StoreError> {
        Self::get(&self.projects, PROJECTS, name.as_bytes())
    }

    /// Every project, by name.
    pub fn projects(&self) -> Result<Vec<Project>, StoreError> {
        Self::scan(&self.projects, PROJECTS, b"")
    }

    // Keys.

    /// Grants (or re-grants, replacing the role) a key on a project.
    pub fn put_key(&self, grant: &KeyGrant) -> Result<(), StoreError> {
        self.keys
            .insert(pair_key(&grant.project, &grant.fingerprint), encode(grant))?;
        self.flush()
    }

    /// The grants of a project, or of every project.
    pub fn keys(&self, project: Option<&str>) -> Result<Vec<KeyGrant>, StoreError> {
        let prefix = project.map(prefix_key).unwrap_or_default();
        Self::scan(&self.keys, KEYS, &prefix)
    }

    /// The grant of key `fingerprint` on `project`.
    pub fn key(&self, project: &str, fingerprint: &str) -> Result<Option<KeyGrant>, StoreError> {
        Self::get(&self.keys, KEYS, &pair_key(project, fingerprint))
    }

    /// Whether the key is granted on any project.
    pub fn key_is_known(&self, fingerprint: &str) -> Result<bool, StoreError> {
        Ok(self
            .keys(None)?
            .iter()
            .any(|grant| grant.fingerprint == fingerprint))
    }

    /// Removes a grant; false when there was none.
    pub fn remove_key(&self, project: &str, fingerprint: &str) -> Result<bool, StoreError> {
        let removed = self.keys.remove(pair_key(project, fingerprint))?.is_some();
        self.flush()?;
        Ok(removed)
    }

    // Environments.

    /// The environment of `branch` in `project`.
    pub fn environment(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<Environment>, StoreError> {
        Self::get(&self.environments, ENVIRONMENTS, &pair_key(project, name))
    }

    /// Creates or updates an environment.
    pub fn put_environment(&self, env: &Environment) -> Result<(), StoreError> {
        self.environments
            .insert(pair_key(&env.project, &env.name), encode(env))?;
        self.flush()
    }

    /// Removes an environment; false when there was none.
    pub fn delete_environment(&self, project: &str, name: &str) -> Result<bool, StoreError> {
        let removed = self.environments.remove(pair_key(project, name))?.is_some();
        self.flush()?;
        Ok(removed)
    }

    /// The environments of a project, by name.
    pub fn environments(&self, project: &str) -> Result<Vec<Environment>, StoreError> {
        Self::scan(&self.environments, ENVIRONMENTS, &prefix_key(project))
    }
}
