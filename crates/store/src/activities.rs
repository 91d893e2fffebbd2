//! Activities and their logs.

use std::ops::Bound;

use crate::index::activity_order;
use crate::{ACTIVITIES, Activity, Store, StoreError, decode};

impl Store {
    // Activities.

    /// A new, never reused activity number.
    pub fn next_activity_id(&self) -> Result<u64, StoreError> {
        // sled's ids start at 0; activity ids start at 1 so that 0 never names one.
        Ok(self.db.generate_id()? + 1)
    }

    /// Creates or updates an activity.
    pub fn put_activity(&self, activity: &Activity) -> Result<(), StoreError> {
        self.put_indexed(&self.activities, &self.activity_index, ACTIVITIES, activity)
    }

    /// The activity `id`.
    pub fn activity(&self, id: u64) -> Result<Option<Activity>, StoreError> {
        Self::get(&self.activities, ACTIVITIES, &id.to_be_bytes())
    }

    /// The activities of a project (every project when `None`), newest first,
    /// at most `limit`.
    pub fn activities(
        &self,
        project: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Activity>, StoreError> {
        self.activities_page(project, None, None, limit)
    }

    /// A page of activities, newest first: of a project (every project when
    /// `None`: then of every environment so named) or one of its environments,
    /// numbered below `before` when given, at most `limit`. A project's page
    /// reads its index; every project's reads the activities backwards.
    pub fn activities_page(
        &self,
        project: Option<&str>,
        environment: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Activity>, StoreError> {
        if let Some(project) = project {
            return Self::list_indexed(
                &self.activities,
                &self.activity_index,
                ACTIVITIES,
                project,
                environment,
                before.map(activity_order),
                limit,
            );
        }
        let end = match before {
            Some(before) => Bound::Excluded(before.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut found = Vec::new();
        for item in self
            .activities
            .range::<Vec<u8>, _>((Bound::Unbounded, end))
            .rev()
        {
            if found.len() >= limit {
                break;
            }
            let (key, value) = item?;
            let activity: Activity = decode(ACTIVITIES, &key, &value)?;
            if environment.is_none_or(|e| e == activity.environment) {
                found.push(activity);
            }
        }
        Ok(found)
    }

    /// Deletes an activity and its log (the log first: a crash between
    /// leaves the record, and its removal is tried again).
    pub fn delete_activity(&self, id: u64) -> Result<(), StoreError> {
        let mut log = sled::Batch::default();
        for item in self.logs.scan_prefix(id.to_be_bytes()) {
            let (key, _) = item?;
            log.remove(key);
        }
        self.logs.apply_batch(log)?;
        self.delete_indexed::<Activity>(
            &self.activities,
            &self.activity_index,
            ACTIVITIES,
            &id.to_be_bytes(),
        )?;
        self.flush()
    }

    /// Appends text to an activity's stored log. Not flushed: the log is
    /// flushed with the activity's next state change.
    pub fn append_log(&self, id: u64, text: &str) -> Result<(), StoreError> {
        let mut key = id.to_be_bytes().to_vec();
        key.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        self.logs.insert(key, text.as_bytes())?;
        Ok(())
    }

    /// The pieces of an activity's log stored after position `after` (0:
    /// all), each with its position, oldest first. Positions only grow, so a
    /// reader that resumes after the last one it saw sees every piece once.
    pub fn log_after(&self, id: u64, after: u64) -> Result<Vec<(u64, String)>, StoreError> {
        let mut start = id.to_be_bytes().to_vec();
        // Positions are sled's ids plus one, so 0 can mean "from the start".
        start.extend_from_slice(&after.to_be_bytes());
        let mut pieces = Vec::new();
        for item in self.logs.range(start..) {
            let (key, value) = item?;
            if key.len() != 16 || key[..8] != id.to_be_bytes() {
                break;
            }
            let mut position = [0u8; 8];
            position.copy_from_slice(&key[8..]);
            pieces.push((
                u64::from_be_bytes(position).saturating_add(1),
                String::from_utf8_lossy(&value).into_owned(),
            ));
        }
        Ok(pieces)
    }

    /// The stored log of an activity.
    pub fn log(&self, id: u64) -> Result<String, StoreError> {
        let mut text = String::new();
        for item in self.logs.scan_prefix(id.to_be_bytes()) {
            let (_, value) = item?;
            text.push_str(&String::from_utf8_lossy(&value));
        }
        Ok(text)
    }
}
