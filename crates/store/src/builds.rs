//! Builds and their logs.

use crate::index::{After, order_after};
use crate::{BUILDS, Build, Store, StoreError, prefix_key};

impl Store {
    /// Creates or updates a build.
    pub fn put_build(&self, build: &Build) -> Result<(), StoreError> {
        self.put_indexed(&self.builds, &self.build_index, BUILDS, build)
    }

    /// The build `id`.
    pub fn build(&self, id: &str) -> Result<Option<Build>, StoreError> {
        Self::get(&self.builds, BUILDS, id.as_bytes())
    }

    /// The builds of a project (every project when `None`), newest first.
    /// A project's come from its index; every project's from a full scan.
    pub fn builds(&self, project: Option<&str>) -> Result<Vec<Build>, StoreError> {
        if let Some(project) = project {
            return self.builds_page(project, None, None, usize::MAX);
        }
        let mut found: Vec<Build> = Self::scan(&self.builds, BUILDS, b"")?;
        found.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
        Ok(found)
    }

    /// A page of a project's builds (or one environment's), newest first,
    /// after the (start time, id) `after`, at most `limit`.
    pub fn builds_page(
        &self,
        project: &str,
        environment: Option<&str>,
        after: After<'_>,
        limit: usize,
    ) -> Result<Vec<Build>, StoreError> {
        Self::list_indexed(
            &self.builds,
            &self.build_index,
            BUILDS,
            project,
            environment,
            order_after(after),
            limit,
        )
    }

    /// Deletes a build record and its log (the log first).
    pub fn delete_build(&self, id: &str) -> Result<(), StoreError> {
        let mut log = sled::Batch::default();
        for item in self.build_logs.scan_prefix(prefix_key(id)) {
            let (key, _) = item?;
            log.remove(key);
        }
        self.build_logs.apply_batch(log)?;
        self.delete_indexed::<Build>(&self.builds, &self.build_index, BUILDS, id.as_bytes())?;
        self.flush()
    }

    /// Drops a build's log, keeping the record (retention of old logs).
    pub fn delete_build_log(&self, id: &str) -> Result<(), StoreError> {
        let mut log = sled::Batch::default();
        for item in self.build_logs.scan_prefix(prefix_key(id)) {
            let (key, _) = item?;
            log.remove(key);
        }
        self.build_logs.apply_batch(log)?;
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
