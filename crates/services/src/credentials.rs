//! Endpoint users and their passwords.
//!
//! A password is derived from a secret of the project (generated once,
//! kept by the daemon like a sensitive variable) and the service and
//! endpoint names, so every environment of a project has the same ones:
//! data cloned from a parent keeps working in the child without rewriting
//! users. Every endpoint has a password, even where Upsun leaves MariaDB's
//! default user without one: the network filter is the first barrier, the
//! password the second.
//!
//! User names are Upsun's: `main` for PostgreSQL's default endpoint, `user`
//! for MariaDB's, the endpoint's own name otherwise.

use sha2::{Digest as _, Sha256};

use crate::catalog::Kind;

/// A user of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// Its password (32 hex digits).
    pub password: String,
}

/// Names an endpoint may not take: the servers' own administrators and the
/// uid the service runs as.
pub const RESERVED_USERS: &[&str] = &["postgres", "root", "web", "mysql", "mariadb.sys"];

/// The user name of `endpoint` of a service of `kind`.
pub fn username(kind: &Kind, endpoint: &str) -> String {
    match (kind.name, endpoint) {
        ("postgresql", "postgresql") => "main".into(),
        ("mariadb", "mysql") => "user".into(),
        _ => endpoint.into(),
    }
}

/// The credentials of `endpoint` of service `service` (of `kind`), from
/// the project's `secret`.
pub fn credentials(secret: &[u8], service: &str, kind: &Kind, endpoint: &str) -> Credentials {
    let mut hasher = Sha256::new();
    hasher.update(b"launchway service password\0");
    hasher.update(secret);
    hasher.update(b"\0");
    hasher.update(service.as_bytes());
    hasher.update(b"\0");
    hasher.update(endpoint.as_bytes());
    let digest = hasher.finalize();
    Credentials {
        username: username(kind, endpoint),
        password: hex::encode(&digest[..16]),
    }
}

/// `PLATFORM_PROJECT_ENTROPY`: 56 characters (RFC 4648 base32 of 35
/// bytes), stable for the project's life, derived from its secret apart
/// from every password. Apps use it as a hash salt or framework secret.
pub fn project_entropy(secret: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bytes = Vec::with_capacity(64);
    for round in [b'1', b'2'] {
        let mut hasher = Sha256::new();
        hasher.update(b"launchway project entropy\0");
        hasher.update([round]);
        hasher.update(secret);
        bytes.extend_from_slice(&hasher.finalize());
    }
    bytes.truncate(35);
    // 35 bytes are 280 bits: 56 groups of 5, no padding.
    let mut text = String::with_capacity(56);
    let mut buffer: u64 = 0;
    let mut bits = 0;
    for byte in bytes {
        buffer = (buffer << 8) | u64::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            text.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::resolve;

    #[test]
    fn project_entropy_is_56_stable_base32_characters_per_secret() {
        let entropy = project_entropy(b"project-a");
        assert_eq!(entropy.len(), 56);
        assert!(
            entropy
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
        assert_eq!(entropy, project_entropy(b"project-a"));
        assert_ne!(entropy, project_entropy(b"project-b"));
    }

    #[test]
    fn passwords_differ_by_secret_service_and_endpoint_but_not_environment() {
        let pg = resolve("postgresql:15", false).unwrap().kind;
        let a = credentials(b"project-a", "db", pg, "postgresql");
        assert_eq!(a.username, "main");
        assert_eq!(a.password.len(), 32);
        assert_eq!(a, credentials(b"project-a", "db", pg, "postgresql"));
        assert_ne!(
            a.password,
            credentials(b"project-b", "db", pg, "postgresql").password
        );
        assert_ne!(
            a.password,
            credentials(b"project-a", "db2", pg, "postgresql").password
        );
        let reporter = credentials(b"project-a", "db", pg, "reporter");
        assert_eq!(reporter.username, "reporter");
        assert_ne!(a.password, reporter.password);
        let maria = resolve("mysql:10.11", false).unwrap().kind;
        assert_eq!(credentials(b"s", "db", maria, "mysql").username, "user");
    }
}
