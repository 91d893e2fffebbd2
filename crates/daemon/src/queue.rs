//! One-at-a-time, in-order execution per environment.
//!
//! Each environment has a tail: the completion signal of its newest activity.
//! A new activity takes the tail's place and waits for the old one, so
//! activities run one after another in the order they joined, even when their
//! tasks are scheduled in another order.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// The tails of every environment's queue.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    tails: Mutex<HashMap<String, oneshot::Receiver<()>>>,
}

/// One activity's place in its queue.
#[derive(Debug)]
pub(crate) struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
}

impl Queues {
    /// Joins the queue `key`, running `create` while holding the queue's lock
    /// so that what it creates (an activity id) is ordered like the queue.
    pub(crate) fn join<T, E>(
        &self,
        key: &str,
        create: impl FnOnce() -> Result<T, E>,
    ) -> Result<(T, Turn), E> {
        let mut tails = match self.tails.lock() {
            Ok(tails) => tails,
            Err(poisoned) => poisoned.into_inner(),
        };
        let created = create()?;
        let (done, tail) = oneshot::channel();
        let previous = tails.insert(key.to_owned(), tail);
        Ok((created, Turn { previous, done }))
    }
}

impl Queues {
    /// Forgets the tails of queues whose last activity is done (deleted
    /// environments', idle ones'): a later join finds no tail and runs at
    /// once, as it would after waiting on a finished one.
    pub(crate) fn prune(&self) {
        let mut tails = match self.tails.lock() {
            Ok(tails) => tails,
            Err(poisoned) => poisoned.into_inner(),
        };
        tails.retain(|_, tail| matches!(tail.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
    }
}

impl Turn {
    /// Waits until every earlier activity of the queue is done.
    pub(crate) async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // An error means the previous activity's task ended without
            // signalling, which also means it is done.
            let _ = previous.await;
        }
    }

    /// Lets the next activity run.
    pub(crate) fn finish(self) {
        let _ = self.done.send(());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turns_run_one_at_a_time_in_joining_order() {
        let queues = Queues::default();
        let record = Arc::new(Mutex::new(Vec::new()));
        let mut turns = Vec::new();
        for i in 0..4 {
            let (id, turn) = queues.join("shop\0main", || Ok::<_, ()>(i)).unwrap();
            turns.push((id, turn));
        }
        let (other, mut other_turn) = queues.join("shop\0feature", || Ok::<_, ()>(99)).unwrap();
        // Spawn in reverse so the scheduler's order cannot be what orders them.
        let mut handles = Vec::new();
        for (id, mut turn) in turns.into_iter().rev() {
            let record = record.clone();
            handles.push(tokio::spawn(async move {
                turn.wait().await;
                let start = Instant::now();
                tokio::time::sleep(Duration::from_millis(30)).await;
                record.lock().unwrap().push((id, start, Instant::now()));
                turn.finish();
            }));
        }
        // Another environment's queue does not wait for this one.
        let started = Instant::now();
        other_turn.wait().await;
        assert!(started.elapsed() < Duration::from_millis(30));
        other_turn.finish();
        assert_eq!(other, 99);
        for handle in handles {
            handle.await.unwrap();
        }
        let record = record.lock().unwrap();
        let order: Vec<i32> = record.iter().map(|(id, _, _)| *id).collect();
        assert_eq!(order, vec![0, 1, 2, 3]);
        for pair in record.windows(2) {
            assert!(pair[0].2 <= pair[1].1, "turns overlapped");
        }
    }

    #[tokio::test]
    async fn a_turn_dropped_without_finishing_releases_the_next() {
        let queues = Queues::default();
        let (_, first) = queues.join("q", || Ok::<_, ()>(())).unwrap();
        let (_, mut second) = queues.join("q", || Ok::<_, ()>(())).unwrap();
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), second.wait())
            .await
            .unwrap();
        assert!(queues.join("q", || Err::<(), _>("no")).is_err());
    }
}
