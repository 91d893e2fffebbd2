//! Dedicated build hosts ("builders").
//!
//! - **Joining.** `launchway builders token` makes a join token:
//!   `lwj1.<id>.<secret>@<host:port>/SHA256:<hex>`, the last part the
//!   fingerprint of this daemon's builder-door certificate. A builder dials
//!   that address, accepts only that certificate, and calls `Register` with
//!   the id and secret; it gets a credential it presents on every later
//!   call (`authorization: Builder <name>:<credential>`). The store keeps
//!   hashes only (`launchway_store::builders`). So each end knows the other:
//!   the builder by the pin its operator-made token carries, the daemon by a
//!   credential only a token redeemed once could have obtained.
//! - **Sessions.** A connected builder keeps one `Session`: heartbeats with
//!   its free slots in, offers out. What is connected lives in memory
//!   ([`BuildHosts`]); the store only records who is registered and when it
//!   was last seen.
//! - **Jobs** ([`dispatch`]): one app's build. The daemon offers it to the
//!   connected builder with the most free slots; the builder claims it with
//!   `RunJob`, receives the [`launchway_build::Recipe`] and the tree's tar,
//!   streams its log back (live into `git push`), pushes the frozen image to
//!   the registry by digest and answers that digest. The daemon pulls the
//!   image by that digest, checks its annotations name the job's key, app,
//!   tree and build, and only then names it (`build-<key>` in the registry).
//!   Every message of the job renews its lease; a job whose stream breaks or
//!   stays silent for `[builders] lease_secs` is lost and runs once more on
//!   another builder (or here).
//! - **The builder role** ([`host`]): `launchway serve` with `[builder] join`.

pub(crate) mod dispatch;
mod door;
pub(crate) mod host;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use launchway_api::builder_door::proto::{DaemonEvent, JobInput, JobUpdate};
use tokio::sync::{Notify, mpsc, oneshot};
use tonic::Status;

use crate::{Daemon, now_ms};

pub(crate) use door::{door_tls, serve_door};

/// The prefix of join tokens (version 1).
const TOKEN_PREFIX: &str = "lwj1.";

/// A parsed join token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JoinToken {
    pub(crate) id: String,
    pub(crate) secret: String,
    pub(crate) address: String,
    pub(crate) pin: String,
}

impl JoinToken {
    pub(crate) fn text(&self) -> String {
        format!(
            "{TOKEN_PREFIX}{}.{}@{}/{}",
            self.id, self.secret, self.address, self.pin
        )
    }

    pub(crate) fn parse(text: &str) -> Result<JoinToken, String> {
        let bad = || {
            "not a join token (`lwj1.<id>.<secret>@<host:port>/SHA256:<hex>`; make one with `launchway builders token`)".to_owned()
        };
        let rest = text.trim().strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
        let (credentials, place) = rest.split_once('@').ok_or_else(bad)?;
        let (id, secret) = credentials.split_once('.').ok_or_else(bad)?;
        let (address, pin) = place.split_once('/').ok_or_else(bad)?;
        let hex_ok =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        let pin_ok = pin
            .strip_prefix("SHA256:")
            .is_some_and(|hex| hex_ok(hex, 64));
        let id_ok = id.strip_prefix('J').is_some_and(|hex| hex_ok(hex, 12));
        if !id_ok || !hex_ok(secret, 64) || !pin_ok || !address.contains(':') {
            return Err(bad());
        }
        Ok(JoinToken {
            id: id.to_owned(),
            secret: secret.to_owned(),
            address: address.to_owned(),
            pin: pin.to_owned(),
        })
    }
}

/// Where a builder's session takes offers.
type Offers = mpsc::Sender<Result<DaemonEvent, Status>>;

/// A connected builder.
#[derive(Debug)]
struct Live {
    session: u64,
    offers: Offers,
    address: String,
    slots: u32,
    free: u32,
    running: Vec<String>,
    last_seen: Instant,
    stored_seen: Instant,
}

/// What a builder claiming a job hands the dispatcher: the job's two streams.
pub(crate) struct Claimed {
    pub(crate) updates: tonic::Streaming<JobUpdate>,
    pub(crate) inputs: mpsc::Sender<Result<JobInput, Status>>,
}

/// A job offered and not yet claimed.
struct Offered {
    builder: String,
    epoch: u64,
    claim: oneshot::Sender<Claimed>,
}

/// Builders connected now and jobs offered to them.
#[derive(Debug, Default)]
pub(crate) struct BuildHosts {
    live: std::sync::Mutex<HashMap<String, Live>>,
    offered: std::sync::Mutex<HashMap<String, Offered>>,
    sessions: AtomicU64,
    epochs: AtomicU64,
    /// Woken when a builder connects or reports free slots.
    changed: Notify,
    /// The door's certificate fingerprint (join tokens carry it).
    pin: std::sync::Mutex<String>,
    /// Runtime images known to be in the registry (by digest).
    published_runtimes: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Offered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offered")
            .field("builder", &self.builder)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One row of `launchway builders`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BuilderRow {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) slots: u32,
    pub(crate) running: u32,
    pub(crate) last_seen_at: u64,
    pub(crate) connected: bool,
}

impl BuildHosts {
    pub(crate) fn set_pin(&self, pin: String) {
        *lock(&self.pin) = pin;
    }

    fn pin(&self) -> String {
        lock(&self.pin).clone()
    }

    /// How many builders are connected.
    pub(crate) fn connected(&self) -> usize {
        lock(&self.live).len()
    }

    fn next_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The connected builder with the most free slots (then by name), not
    /// among `skip`, with one of its slots counted as taken (until its next
    /// heartbeat says otherwise), so that two builds never both count on it.
    fn pick(&self, skip: &[String]) -> Option<(String, String, Offers)> {
        let mut live = lock(&self.live);
        let (name, builder) = live
            .iter_mut()
            .filter(|(name, builder)| builder.free > 0 && !skip.contains(name))
            .max_by(|(a_name, a), (b_name, b)| a.free.cmp(&b.free).then(b_name.cmp(a_name)))?;
        builder.free -= 1;
        Some((
            name.clone(),
            builder.address.clone(),
            builder.offers.clone(),
        ))
    }

    fn any_other(&self, skip: &[String]) -> bool {
        lock(&self.live).keys().any(|name| !skip.contains(name))
    }

    /// Totals for a waiting line: (connected, slots, busy).
    fn load(&self) -> (usize, u32, u32) {
        let live = lock(&self.live);
        let slots = live.values().map(|b| b.slots).sum();
        let free: u32 = live.values().map(|b| b.free).sum();
        (live.len(), slots, slots.saturating_sub(free))
    }
}

impl Daemon {
    /// A join token for one more builder (`uses` of them), valid for
    /// `expires_secs`.
    pub(crate) fn create_builder_token(
        &self,
        expires_secs: u64,
        uses: u32,
    ) -> Result<(String, u64), Status> {
        let Some(listen) = self.builders_addr else {
            return Err(Status::failed_precondition(
                "this daemon has no builder door: set `[builders] listen` (e.g. \"0.0.0.0:7444\") in its settings and restart it",
            ));
        };
        if self.plane.is_none() {
            return Err(Status::failed_precondition(
                "builders send images through the image registry: set `[registry] url` in this daemon's settings first",
            ));
        }
        let advertise = match self.settings.builders.advertise.trim() {
            "" => {
                let host = match self.settings.ssh.public_host.trim() {
                    "" => listen.ip().to_string(),
                    host => host.to_owned(),
                };
                format!("{host}:{}", listen.port())
            }
            given => given.to_owned(),
        };
        let now = now_ms();
        let expires_at = now.saturating_add(expires_secs.max(1).saturating_mul(1000));
        let (id, secret) = self
            .store
            .create_join_token(now, expires_at, uses.max(1))
            .map_err(|e| Status::internal(format!("the token cannot be recorded: {e}")))?;
        let token = JoinToken {
            id,
            secret,
            address: advertise,
            pin: self.build_hosts.pin(),
        };
        Ok((token.text(), expires_at))
    }

    /// Every registered builder, with what the connected ones report.
    pub(crate) fn list_builders(&self) -> Result<Vec<BuilderRow>, Status> {
        let records = self
            .store
            .builders()
            .map_err(|e| Status::internal(format!("builders cannot be read: {e}")))?;
        let live = lock(&self.build_hosts.live);
        Ok(records
            .into_iter()
            .map(|record| match live.get(&record.name) {
                Some(builder) => BuilderRow {
                    address: builder.address.clone(),
                    slots: builder.slots,
                    running: builder.running.len() as u32,
                    last_seen_at: now_ms()
                        .saturating_sub(builder.last_seen.elapsed().as_millis() as u64),
                    connected: true,
                    name: record.name,
                },
                None => BuilderRow {
                    address: record.address,
                    slots: record.slots,
                    running: 0,
                    last_seen_at: record.last_seen_at,
                    connected: false,
                    name: record.name,
                },
            })
            .collect())
    }

    /// Forgets builder `name` and ends its session.
    pub(crate) fn remove_builder(&self, name: &str) -> Result<(), Status> {
        let removed = self
            .store
            .remove_builder(name)
            .map_err(|e| Status::internal(format!("the builder cannot be removed: {e}")))?;
        let ended = lock(&self.build_hosts.live).remove(name).is_some();
        if !removed && !ended {
            return Err(Status::not_found(format!("no builder is named {name}")));
        }
        tracing::info!(builder = name, "builder removed");
        Ok(())
    }

    /// Whether builds go to builders: some are registered.
    pub(crate) fn builders_registered(&self) -> bool {
        self.builders_addr.is_some()
            && self.plane.is_some()
            && self.store.builders().is_ok_and(|list| !list.is_empty())
    }
}

/// `dir/name`, created 0700.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_round_trip_and_malformed_ones_are_refused() {
        let token = JoinToken {
            id: "J0123456789ab".into(),
            secret: "f".repeat(64),
            address: "10.0.0.7:7444".into(),
            pin: format!("SHA256:{}", "a".repeat(64)),
        };
        assert_eq!(JoinToken::parse(&token.text()), Ok(token.clone()));
        let text = token.text();
        for bad in [
            "",
            "lwj2.x",
            &text.replace("SHA256:", "MD5:"),
            &text.replace('@', "#"),
            &text.replace("J0123", "K0123"),
            &text[..text.len() - 1],
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }
}
