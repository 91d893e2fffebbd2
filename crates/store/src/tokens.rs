//! API tokens (issue 23's first part: the records and the secret's
//! format; the HTTP door that accepts them comes next).
//!
//! - A secret is `lw_<kind>_<body>_<check>`: `kind` is `api` or `deploy`
//!   (a deploy key), `body` 32 random bytes in base62, `check` 6 base62
//!   characters of the body's SHA-256, so a scanner can tell a leaked
//!   Launchway token from noise offline and a typo is refused before any
//!   lookup; `_` lets a double-click select it whole.
//! - Only the secret's SHA-256 is stored (tree `token_hashes`: hash → id);
//!   the record (tree `tokens`: id → record) holds its scope: project, role,
//!   optional environment, deploy-only, expiry. Both trees change in one
//!   transaction, so a token is whole or absent after a kill.

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use sled::Transactional as _;

use crate::{Role, Store, StoreError, encode};

/// The sled tree of token records.
pub(crate) const TOKENS: &str = "tokens";
/// The sled tree from a secret's SHA-256 (hex) to its token's id.
pub(crate) const TOKEN_HASHES: &str = "token_hashes";

/// What a token may do, and for how long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// `T` and nine capitals and digits (what `token revoke` names).
    pub id: String,
    /// A name for people (`ci`).
    pub name: String,
    pub project: String,
    pub role: Role,
    /// Limited to one environment.
    pub environment: Option<String>,
    /// A deploy key: build and deploy the project, read builds, releases
    /// and activities, nothing else.
    pub deploy_only: bool,
    pub created_at: u64,
    /// UNIX ms; `None`: never.
    pub expires_at: Option<u64>,
    /// Who made it (an SSH key's fingerprint, `operator`, a token id).
    pub created_by: String,
    /// The secret's SHA-256, hex.
    pub hash: String,
}

/// A token to create (the store makes its id and secret).
#[derive(Clone, Debug)]
pub struct NewToken {
    pub name: String,
    pub project: String,
    pub role: Role,
    pub environment: Option<String>,
    pub deploy_only: bool,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub created_by: String,
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `bytes` as a base62 number, at least `width` characters.
fn base62(bytes: &[u8], width: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = Vec::new();
    while number.iter().any(|&b| b != 0) {
        let mut remainder = 0u32;
        for byte in &mut number {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 62) as u8;
            remainder = value % 62;
        }
        digits.push(BASE62[remainder as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

fn checksum(body: &str) -> String {
    let digest = sha2::Sha256::digest(body.as_bytes());
    let mut check = base62(&digest[..8], 6);
    check.truncate(6);
    check
}

/// The SHA-256 of a secret, hex: what is stored.
pub fn token_hash(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// A new secret of `kind` (`api` or `deploy`).
fn new_secret(kind: &str) -> String {
    let random: [u8; 32] = rand::random();
    let body = base62(&random, 43);
    format!("lw_{kind}_{body}_{}", checksum(&body))
}

/// Whether `secret` has a token's shape and its checksum holds.
pub fn secret_is_well_formed(secret: &str) -> bool {
    let mut parts = secret.split('_');
    let (Some("lw"), Some(kind), Some(body), Some(check), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    matches!(kind, "api" | "deploy")
        && body.len() == 43
        && body.bytes().all(|b| b.is_ascii_alphanumeric())
        && check == checksum(body)
}

fn new_token_id() -> String {
    let random: [u8; 8] = rand::random();
    let mut id = base62(&random, 9).to_ascii_uppercase();
    id.truncate(9);
    format!("T{id}")
}

impl Store {
    /// Creates a token; returns its record and its secret, which is not
    /// kept anywhere (only its hash).
    pub fn create_token(&self, new: &NewToken) -> Result<(TokenRecord, String), StoreError> {
        let secret = new_secret(if new.deploy_only { "deploy" } else { "api" });
        let record = TokenRecord {
            id: new_token_id(),
            name: new.name.clone(),
            project: new.project.clone(),
            role: new.role,
            environment: new.environment.clone(),
            deploy_only: new.deploy_only,
            created_at: new.created_at,
            expires_at: new.expires_at,
            created_by: new.created_by.clone(),
            hash: token_hash(&secret),
        };
        let bytes = encode(&record);
        (&self.tokens, &self.token_hashes)
            .transaction(|(tokens, hashes)| {
                tokens.insert(record.id.as_bytes(), bytes.as_slice())?;
                hashes.insert(record.hash.as_bytes(), record.id.as_bytes())?;
                Ok(())
            })
            .map_err(
                |error: sled::transaction::TransactionError<()>| match error {
                    sled::transaction::TransactionError::Storage(error) => StoreError::from(error),
                    sled::transaction::TransactionError::Abort(()) => StoreError::from(
                        sled::Error::Unsupported("token transaction aborted".into()),
                    ),
                },
            )?;
        self.flush()?;
        Ok((record, secret))
    }

    /// The token a secret belongs to (`None`: malformed, unknown or
    /// revoked; expiry is the caller's to judge).
    pub fn token_by_secret(&self, secret: &str) -> Result<Option<TokenRecord>, StoreError> {
        if !secret_is_well_formed(secret) {
            return Ok(None);
        }
        let Some(id) = self.token_hashes.get(token_hash(secret).as_bytes())? else {
            return Ok(None);
        };
        Self::get(&self.tokens, TOKENS, &id)
    }

    /// A project's tokens (every token when `None`), oldest first.
    pub fn tokens(&self, project: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        let mut found: Vec<TokenRecord> = Self::scan(&self.tokens, TOKENS, &[])?
            .into_iter()
            .filter(|t: &TokenRecord| project.is_none_or(|p| p == t.project))
            .collect();
        found.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(found)
    }

    /// Revokes a token; whether there was one.
    pub fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let Some(record) = Self::get::<TokenRecord>(&self.tokens, TOKENS, id.as_bytes())? else {
            return Ok(false);
        };
        (&self.tokens, &self.token_hashes)
            .transaction(|(tokens, hashes)| {
                tokens.remove(record.id.as_bytes())?;
                hashes.remove(record.hash.as_bytes())?;
                Ok(())
            })
            .map_err(
                |error: sled::transaction::TransactionError<()>| match error {
                    sled::transaction::TransactionError::Storage(error) => StoreError::from(error),
                    sled::transaction::TransactionError::Abort(()) => StoreError::from(
                        sled::Error::Unsupported("token transaction aborted".into()),
                    ),
                },
            )?;
        self.flush()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_token(project: &str, deploy_only: bool) -> NewToken {
        NewToken {
            name: "ci".into(),
            project: project.into(),
            role: Role::Contributor,
            environment: None,
            deploy_only,
            created_at: 1,
            expires_at: Some(10),
            created_by: "operator".into(),
        }
    }

    #[test]
    fn secrets_have_a_checksum_that_catches_typos() {
        let secret = new_secret("api");
        assert!(secret.starts_with("lw_api_"), "{secret}");
        assert!(secret_is_well_formed(&secret), "{secret}");
        // One character changed in the body: refused before any lookup.
        let mut typo: Vec<char> = secret.chars().collect();
        let at = 10;
        typo[at] = if typo[at] == 'a' { 'b' } else { 'a' };
        let typo: String = typo.into_iter().collect();
        assert!(!secret_is_well_formed(&typo));
        for bad in [
            "",
            "lw_api_",
            "lw_x_abc_def",
            "Bearer x",
            &format!("{secret}_"),
        ] {
            assert!(!secret_is_well_formed(bad), "{bad}");
        }
        assert_ne!(new_secret("api"), new_secret("api"));
    }

    #[test]
    fn base62_is_a_number_in_62_digits() {
        assert_eq!(base62(&[0], 1), "0");
        assert_eq!(base62(&[61], 1), "z");
        assert_eq!(base62(&[62], 1), "10");
        assert_eq!(base62(&[1, 0], 3), "048"); // 256 = 4 * 62 + 8
    }

    #[test]
    fn only_the_hash_is_kept_and_revocation_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let (record, secret, deploy_secret) = {
            let store = Store::open(&path).unwrap();
            let (record, secret) = store.create_token(&new_token("shop", false)).unwrap();
            let (_, deploy_secret) = store.create_token(&new_token("blog", true)).unwrap();
            (record, secret, deploy_secret)
        };
        let store = Store::open(&path).unwrap();
        assert!(deploy_secret.starts_with("lw_deploy_"));
        assert_eq!(
            store.token_by_secret(&secret).unwrap(),
            Some(record.clone())
        );
        assert_eq!(record.hash, token_hash(&secret));
        let on_disk = std::fs::read_dir(&path)
            .unwrap()
            .flatten()
            .filter(|entry| entry.path().is_file())
            .any(|entry| {
                std::fs::read(entry.path())
                    .unwrap_or_default()
                    .windows(secret.len())
                    .any(|window| window == secret.as_bytes())
            });
        assert!(!on_disk, "the secret itself was written to the state");
        let shop: Vec<String> = store
            .tokens(Some("shop"))
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(shop, std::slice::from_ref(&record.id));
        assert_eq!(store.tokens(None).unwrap().len(), 2);
        assert!(store.revoke_token(&record.id).unwrap());
        assert!(!store.revoke_token(&record.id).unwrap());
        assert_eq!(store.token_by_secret(&secret).unwrap(), None);
        assert_eq!(store.tokens(Some("shop")).unwrap(), []);
    }
}
