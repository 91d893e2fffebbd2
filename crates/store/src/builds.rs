//! Builds and their logs.

use crate::{BUILDS, Build, Store, StoreError, encode, prefix_key};

impl Store {
    /// Creates or updates a build.
    pub fn put_build(&self, build: &Build) -> Result<(), StoreError> {
        self.builds.insert(build.id.as_bytes(), encode(build))?;
        self.flush()
    }

    /// The build `id`.
    pub fn build(&self, id: &str) -> Result<Option<Build>, StoreError> {
        Self::get(&self.builds, BUILDS, id.as_bytes())
    }

    /// The builds of a project (every project when `None`), newest first.
    pub fn builds(&self, project: Option<&str>) -> Result<Vec<Build>, StoreError> {
        let mut found: Vec<Build> = Self::scan(&self.builds, BUILDS, b"")?
            .into_iter()
            .filter(|build: &Build| project.is_none_or(|p| p == build.project))
            .collect();
        found.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
        Ok(found)
    }

    /// Deletes a build record and its log.
    pub fn delete_build(&self, id: &str) -> Result<(), StoreError> {
        self.builds.remove(id.as_bytes())?;
        for item in self.build_logs.scan_prefix(prefix_key(id)) {
            let (key, _) = item?;
            self.build_logs.remove(key)?;
        }
        self.flush()
    }

    /// Appends text to a build's log; returns its sequence number. Not
    /// flushed (the build's next state change flushes it).
    pub fn append_build_log(&self, id: &str, text: &str) -> Result<u64, StoreError> {
        let sequence = self.db.generate_id()?;
        let mut key = prefix_key(id);
        key.extend_from_slice(&sequence.to_be_bytes());
        self.build_logs.insert(key, text.as_bytes())?;
        Ok(sequence)
    }

    /// A build's log pieces after sequence number `after` (all when `None`),
    /// with the sequence number of the last one.
    pub fn build_log_after(
        &self,
        id: &str,
        after: Option<u64>,
    ) -> Result<(String, Option<u64>), StoreError> {
        let prefix = prefix_key(id);
        let mut start = prefix.clone();
        if let Some(after) = after {
            start.extend_from_slice(&(after.saturating_add(1)).to_be_bytes());
        }
        let mut text = String::new();
        let mut last = after;
        for item in self.build_logs.range(start..) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            if let Some(tail) = key
                .get(prefix.len()..)
                .and_then(|t| <[u8; 8]>::try_from(t).ok())
            {
                last = Some(u64::from_be_bytes(tail));
            }
            text.push_str(&String::from_utf8_lossy(&value));
        }
        Ok((text, last))
    }
}
