//! Failed authentications per address: past the limit in a minute, the
//! address is answered `429` until the minute ends, before any token is
//! looked at (a guesser learns nothing more, and costs nothing).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (the oldest windows are dropped first).
const MAX_ADDRESSES: usize = 100_000;

#[derive(Debug)]
pub(crate) struct Limiter {
    per_minute: u32,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Limiter {
    pub(crate) fn new(per_minute: u32) -> Limiter {
        Limiter {
            per_minute: per_minute.max(1),
            failures: Mutex::default(),
        }
    }

    /// Seconds until `address` may try again, when it may not now.
    pub(crate) fn retry_after(&self, address: IpAddr) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (since, count) = failures.get(&address)?;
        let elapsed = since.elapsed();
        (elapsed < WINDOW && *count >= self.per_minute).then(|| (WINDOW - elapsed).as_secs().max(1))
    }

    pub(crate) fn failed(&self, address: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_ADDRESSES {
            failures.retain(|_, (since, _)| since.elapsed() < WINDOW);
        }
        let entry = failures.entry(address).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_held_back_after_its_failures_and_others_are_not() {
        let limiter = Limiter::new(3);
        let guesser: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..2 {
            limiter.failed(guesser);
        }
        assert_eq!(limiter.retry_after(guesser), None);
        limiter.failed(guesser);
        assert!(
            limiter
                .retry_after(guesser)
                .is_some_and(|s| (1..=60).contains(&s))
        );
        assert_eq!(limiter.retry_after(other), None);
    }
}
