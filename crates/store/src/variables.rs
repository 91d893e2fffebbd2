//! Variables (project- and environment-level).

use crate::{Store, StoreError, VARIABLES, Variable, encode, pair_key, prefix_key};

/// `project\0environment\0name`, the environment empty for a project variable.
fn variable_key(project: &str, environment: Option<&str>, name: &str) -> Vec<u8> {
    let mut key = pair_key(project, environment.unwrap_or(""));
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

impl Store {
    /// Creates or replaces a variable.
    pub fn put_variable(&self, variable: &Variable) -> Result<(), StoreError> {
        self.variables.insert(
            variable_key(
                &variable.project,
                variable.environment.as_deref(),
                &variable.name,
            ),
            encode(variable),
        )?;
        self.flush()
    }

    /// One variable of a project (`environment` `None`) or an environment.
    pub fn variable(
        &self,
        project: &str,
        environment: Option<&str>,
        name: &str,
    ) -> Result<Option<Variable>, StoreError> {
        Self::get(
            &self.variables,
            VARIABLES,
            &variable_key(project, environment, name),
        )
    }

    /// Removes a variable; false when there was none.
    pub fn delete_variable(
        &self,
        project: &str,
        environment: Option<&str>,
        name: &str,
    ) -> Result<bool, StoreError> {
        let removed = self
            .variables
            .remove(variable_key(project, environment, name))?
            .is_some();
        self.flush()?;
        Ok(removed)
    }

    /// Every variable of a project, its own and its environments', by
    /// environment then name.
    pub fn variables(&self, project: &str) -> Result<Vec<Variable>, StoreError> {
        Self::scan(&self.variables, VARIABLES, &prefix_key(project))
    }
}
