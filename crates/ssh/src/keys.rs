//! SSH keys: the host key kept under the data directory, and the public keys
//! users register.

use std::path::Path;

use russh::keys::{HashAlg, PrivateKey, PublicKey};

/// What reading or creating keys can fail with.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The host key file exists but cannot be read.
    #[error("cannot read the SSH host key {path}")]
    ReadHostKey {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: russh::keys::ssh_key::Error,
    },
    /// The host key could not be created.
    #[error("cannot create the SSH host key {path}")]
    WriteHostKey {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: russh::keys::ssh_key::Error,
    },
    /// A public key line that OpenSSH would not accept either.
    #[error("not an OpenSSH public key (expected one line like `ssh-ed25519 AAAA… comment`)")]
    BadPublicKey,
}

/// The daemon's ed25519 host key at `path`, created (mode 0600) on first use;
/// its public half is written next to it as `path.pub`.
pub fn load_or_create_host_key(path: &Path) -> Result<PrivateKey, KeyError> {
    let shown = || path.display().to_string();
    if path.exists() {
        return PrivateKey::read_openssh_file(path).map_err(|source| KeyError::ReadHostKey {
            path: shown(),
            source,
        });
    }
    let mut key = PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519).map_err(
        |source| KeyError::WriteHostKey {
            path: shown(),
            source,
        },
    )?;
    key.set_comment("launchway host key");
    key.write_openssh_file(path, russh::keys::ssh_key::LineEnding::LF)
        .map_err(|source| KeyError::WriteHostKey {
            path: shown(),
            source,
        })?;
    let public = path.with_extension("pub");
    key.public_key()
        .write_openssh_file(&public)
        .map_err(|source| KeyError::WriteHostKey {
            path: public.display().to_string(),
            source,
        })?;
    Ok(key)
}

/// A user's public key, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserKey {
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// `type base64`, without the comment.
    pub public_key: String,
    /// The comment, possibly empty.
    pub comment: String,
}

/// The fingerprint Launchway knows a key by.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Parses one line of an OpenSSH `.pub` file.
pub fn parse_public_key(line: &str) -> Result<UserKey, KeyError> {
    let key = PublicKey::from_openssh(line.trim()).map_err(|_| KeyError::BadPublicKey)?;
    let comment = key.comment().to_string();
    let mut bare = key.clone();
    bare.set_comment("");
    let public_key = bare
        .to_openssh()
        .map_err(|_| KeyError::BadPublicKey)?
        .trim()
        .to_owned();
    Ok(UserKey {
        fingerprint: fingerprint(&key),
        public_key,
        comment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_ed25519_key");
        let first = load_or_create_host_key(&path).unwrap();
        let second = load_or_create_host_key(&path).unwrap();
        assert_eq!(
            first.public_key().key_data(),
            second.public_key().key_data()
        );
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        assert!(public.starts_with("ssh-ed25519 "), "{public}");
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            load_or_create_host_key(&path),
            Err(KeyError::ReadHostKey { .. })
        ));
    }

    #[test]
    fn parses_public_keys() {
        let key = PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519).unwrap();
        let line = format!("{} alice@laptop\n", key.public_key().to_openssh().unwrap());
        let parsed = parse_public_key(&line).unwrap();
        assert_eq!(parsed.comment, "alice@laptop");
        assert!(parsed.fingerprint.starts_with("SHA256:"));
        assert!(!parsed.public_key.contains("alice"));
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-ed25519 AAAAnotbase64!",
            "hello world",
        ] {
            assert!(parse_public_key(bad).is_err(), "{bad}");
        }
    }
}
