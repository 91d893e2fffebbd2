//! Build hosts: the join tokens that admit them and the records of those
//! admitted.
//!
//! - A join token (tree `join_tokens`: id → record) keeps only its secret's
//!   SHA-256, an expiry and the uses left. Redeeming it decrements the uses
//!   with a compare-and-swap, so two builders racing for a single-use token
//!   cannot both get in; a used-up token is removed.
//! - A builder's record (tree `builders`: name → record) keeps the SHA-256 of
//!   the credential it was given when it registered; a builder presents name
//!   and credential on every connection. Registering again under the same
//!   name (a wiped host, with a new join token) replaces the record, so the
//!   old credential stops working.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::{Store, StoreError, encode};

/// The sled tree of join tokens.
pub(crate) const JOIN_TOKENS: &str = "join_tokens";
/// The sled tree of registered builders.
pub(crate) const BUILDERS: &str = "builders";

/// A join token as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// `J` and hex (what the token's text starts with).
    pub id: String,
    /// The secret's SHA-256, hex.
    pub hash: String,
    pub created_at: u64,
    /// UNIX ms.
    pub expires_at: u64,
    pub uses_left: u32,
}

/// A registered builder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderRecord {
    pub name: String,
    /// Its credential's SHA-256, hex.
    pub credential_hash: String,
    pub registered_at: u64,
    /// The slots it said it has.
    pub slots: u32,
    /// Its version.
    pub version: String,
    /// When it was last connected (UNIX ms; written at most once a minute).
    pub last_seen_at: u64,
    /// The address it last connected from.
    pub address: String,
}

/// Why a join token was not accepted. The builder is told only that it was
/// not; the daemon's log says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinRefusal {
    Unknown,
    WrongSecret,
    Expired,
}

/// SHA-256 hex of a secret.
fn hash(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// Equal without telling how much of them matched by the time it took.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// 32 random bytes, hex.
fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Store {
    /// Makes a join token; returns its id and secret (kept nowhere but in
    /// the answer).
    pub fn create_join_token(
        &self,
        now: u64,
        expires_at: u64,
        uses: u32,
    ) -> Result<(String, String), StoreError> {
        let id = format!("J{}", hex::encode(rand::random::<[u8; 6]>()));
        let secret = new_secret();
        let record = JoinToken {
            id: id.clone(),
            hash: hash(&secret),
            created_at: now,
            expires_at,
            uses_left: uses.max(1),
        };
        self.join_tokens.insert(id.as_bytes(), encode(&record))?;
        self.flush()?;
        Ok((id, secret))
    }

    /// Uses join token `id` once if `secret` is its secret and it has not
    /// expired at `now`.
    pub fn redeem_join_token(
        &self,
        id: &str,
        secret: &str,
        now: u64,
    ) -> Result<Result<(), JoinRefusal>, StoreError> {
        loop {
            let Some(old) = self.join_tokens.get(id.as_bytes())? else {
                return Ok(Err(JoinRefusal::Unknown));
            };
            let token: JoinToken = crate::decode(JOIN_TOKENS, id.as_bytes(), &old)?;
            if !same(&token.hash, &hash(secret)) {
                return Ok(Err(JoinRefusal::WrongSecret));
            }
            if now >= token.expires_at {
                self.join_tokens.remove(id.as_bytes())?;
                return Ok(Err(JoinRefusal::Expired));
            }
            let new = match token.uses_left {
                0 | 1 => None,
                left => Some(encode(&JoinToken {
                    uses_left: left - 1,
                    ..token
                })),
            };
            if self
                .join_tokens
                .compare_and_swap(id.as_bytes(), Some(old), new)?
                .is_ok()
            {
                self.flush()?;
                return Ok(Ok(()));
            }
        }
    }

    /// Records builder `name` (replacing one of that name); returns the
    /// credential it must present from now on.
    pub fn register_builder(
        &self,
        name: &str,
        slots: u32,
        version: &str,
        address: &str,
        now: u64,
    ) -> Result<String, StoreError> {
        let credential = new_secret();
        let record = BuilderRecord {
            name: name.to_owned(),
            credential_hash: hash(&credential),
            registered_at: now,
            slots,
            version: version.to_owned(),
            last_seen_at: now,
            address: address.to_owned(),
        };
        self.builders.insert(name.as_bytes(), encode(&record))?;
        self.flush()?;
        Ok(credential)
    }

    /// Builder `name`, if `credential` is the one it was given.
    pub fn authenticate_builder(
        &self,
        name: &str,
        credential: &str,
    ) -> Result<Option<BuilderRecord>, StoreError> {
        let record: Option<BuilderRecord> = Self::get(&self.builders, BUILDERS, name.as_bytes())?;
        Ok(record.filter(|record| same(&record.credential_hash, &hash(credential))))
    }

    /// Notes when and from where builder `name` was last seen.
    pub fn touch_builder(&self, name: &str, now: u64, address: &str) -> Result<(), StoreError> {
        if let Some(mut record) =
            Self::get::<BuilderRecord>(&self.builders, BUILDERS, name.as_bytes())?
        {
            record.last_seen_at = now;
            address.clone_into(&mut record.address);
            self.builders.insert(name.as_bytes(), encode(&record))?;
        }
        Ok(())
    }

    /// Every registered builder, by name.
    pub fn builders(&self) -> Result<Vec<BuilderRecord>, StoreError> {
        Self::scan(&self.builders, BUILDERS, &[])
    }

    /// Forgets builder `name`; whether it was registered.
    pub fn remove_builder(&self, name: &str) -> Result<bool, StoreError> {
        let removed = self.builders.remove(name.as_bytes())?.is_some();
        self.flush()?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(&dir.path().join("state")).unwrap_or_else(|e| panic!("{e}"));
        (dir, store)
    }

    #[test]
    fn a_join_token_admits_as_many_times_as_it_says_until_it_expires() {
        let (_dir, store) = store();
        let (id, secret) = store.create_join_token(0, 1_000, 2).unwrap_or_default();
        assert_eq!(
            store.redeem_join_token(&id, "nope", 1).ok(),
            Some(Err(JoinRefusal::WrongSecret))
        );
        assert_eq!(store.redeem_join_token(&id, &secret, 1).ok(), Some(Ok(())));
        assert_eq!(store.redeem_join_token(&id, &secret, 2).ok(), Some(Ok(())));
        assert_eq!(
            store.redeem_join_token(&id, &secret, 3).ok(),
            Some(Err(JoinRefusal::Unknown))
        );
        let (late, late_secret) = store.create_join_token(0, 1_000, 1).unwrap_or_default();
        assert_eq!(
            store.redeem_join_token(&late, &late_secret, 1_000).ok(),
            Some(Err(JoinRefusal::Expired))
        );
    }

    #[test]
    fn a_builder_is_known_by_its_latest_credential_only() {
        let (_dir, store) = store();
        let first = store
            .register_builder("b1", 2, "0.1", "10.0.0.7:1", 5)
            .unwrap_or_default();
        assert!(matches!(
            store.authenticate_builder("b1", &first),
            Ok(Some(_))
        ));
        assert!(matches!(store.authenticate_builder("b1", "x"), Ok(None)));
        let second = store
            .register_builder("b1", 2, "0.1", "10.0.0.7:1", 6)
            .unwrap_or_default();
        assert!(matches!(store.authenticate_builder("b1", &first), Ok(None)));
        assert!(matches!(
            store.authenticate_builder("b1", &second),
            Ok(Some(_))
        ));
        assert!(matches!(store.remove_builder("b1"), Ok(true)));
        assert!(matches!(
            store.authenticate_builder("b1", &second),
            Ok(None)
        ));
    }
}
