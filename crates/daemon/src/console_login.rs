//! Console sign-in by SSH key: `ssh git@host login` mints a one-time link
//! (the SSH server's `Gate::login`), the console redeems it
//! (`Authenticate::redeem_login`) and from then on asks who the key stands
//! for at every request (`Authenticate::member`), so removing a key from a
//! project takes its console rights away at once.
//!
//! Codes live in memory only (a restart voids them), are stored by their
//! SHA-256, are good for [`CODE_LIFETIME`] and once. Only a key that can push
//! somewhere (contributor or admin in a project) gets one: a viewer's key
//! reads with git and the CLI, a console is for people who change things.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use launchway_ops::{Principal, Role};
use rand::RngExt as _;
use sha2::{Digest as _, Sha256};
use tracing::warn;

use crate::Daemon;

/// How long a login link may wait before it is used.
pub(crate) const CODE_LIFETIME: Duration = Duration::from_secs(600);
/// At most this many unused codes at once (the oldest go first).
const MAX_PENDING: usize = 1_000;
/// At most this many unused codes per key (its own oldest go first), so one
/// key cannot void everyone else's links.
const MAX_PER_KEY: usize = 5;

#[derive(Debug)]
struct Pending {
    fingerprint: String,
    expires: Instant,
}

/// The login codes made and not yet used.
#[derive(Debug, Default)]
pub(crate) struct LoginCodes {
    pending: Mutex<HashMap<String, Pending>>,
}

fn digest(code: &str) -> String {
    hex::encode(Sha256::digest(code.trim().as_bytes()))
}

impl LoginCodes {
    fn mint(&self, fingerprint: &str) -> String {
        let code = hex::encode(rand::rng().random::<[u8; 32]>());
        let now = Instant::now();
        if let Ok(mut pending) = self.pending.lock() {
            pending.retain(|_, p| p.expires > now);
            let own: Vec<(String, Instant)> = pending
                .iter()
                .filter(|(_, p)| p.fingerprint == fingerprint)
                .map(|(k, p)| (k.clone(), p.expires))
                .collect();
            if own.len() >= MAX_PER_KEY
                && let Some((oldest, _)) = own.iter().min_by_key(|(_, expires)| *expires)
            {
                pending.remove(oldest);
            }
            if pending.len() >= MAX_PENDING
                && let Some(oldest) = pending
                    .iter()
                    .min_by_key(|(_, p)| p.expires)
                    .map(|(k, _)| k.clone())
            {
                pending.remove(&oldest);
            }
            pending.insert(
                digest(&code),
                Pending {
                    fingerprint: fingerprint.to_owned(),
                    expires: now + CODE_LIFETIME,
                },
            );
        }
        code
    }

    fn peek(&self, code: &str) -> Option<String> {
        let pending = self.pending.lock().ok()?;
        pending
            .get(&digest(code))
            .filter(|p| p.expires > Instant::now())
            .map(|p| p.fingerprint.clone())
    }

    fn redeem(&self, code: &str) -> Option<String> {
        let mut pending = self.pending.lock().ok()?;
        let found = pending.remove(&digest(code))?;
        (found.expires > Instant::now()).then_some(found.fingerprint)
    }
}

impl Daemon {
    /// The key's role in each project it was added to.
    fn key_roles(&self, fingerprint: &str) -> Result<(String, BTreeMap<String, Role>), String> {
        let grants = self.store.keys(None).map_err(|error| {
            warn!(%error, "cannot read keys");
            "the server cannot read its keys right now; try again".to_owned()
        })?;
        let mut name = String::new();
        let mut roles = BTreeMap::new();
        for grant in grants.into_iter().filter(|g| g.fingerprint == fingerprint) {
            if name.is_empty() && !grant.comment.is_empty() {
                name = grant.comment.clone();
            }
            roles.insert(grant.project, grant.role);
        }
        if name.is_empty() {
            name = fingerprint.to_owned();
        }
        Ok((name, roles))
    }

    /// Where people reach the console.
    fn console_base(&self) -> Option<String> {
        let configured = self.settings.http.public_url.trim().trim_end_matches('/');
        if !configured.is_empty() {
            return Some(configured.to_owned());
        }
        let address = self.http_addr?;
        let host = if address.ip().is_unspecified() {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.to_str().map(str::to_owned))
                .unwrap_or_else(|| "localhost".into())
        } else if address.is_ipv6() {
            format!("[{}]", address.ip())
        } else {
            address.ip().to_string()
        };
        Some(format!("https://{host}:{}", address.port()))
    }

    /// `ssh git@host login`: a one-time console link for the key.
    pub(crate) fn console_login_link(&self, fingerprint: &str) -> Result<String, String> {
        let Some(base) = self.console_base() else {
            return Err(
                "the console is off on this host: its operator sets `[http] listen` in the settings"
                    .into(),
            );
        };
        let (_, roles) = self.key_roles(fingerprint)?;
        if !roles.values().any(|role| *role >= Role::Contributor) {
            return Err(
                "console links are for keys that can push (contributor or admin in a project); yours can only fetch"
                    .into(),
            );
        }
        let code = self.console_logins.mint(fingerprint);
        Ok(format!(
            "{base}/console/login?code={code}\n(one use, valid {} minutes)",
            CODE_LIFETIME.as_secs() / 60
        ))
    }

    /// Whose key a pending code was made for: "comment (fingerprint)".
    pub(crate) fn console_login_owner(&self, code: &str) -> Option<String> {
        let fingerprint = self.console_logins.peek(code)?;
        let (name, _) = self.key_roles(&fingerprint).ok()?;
        Some(if name == fingerprint {
            fingerprint
        } else {
            format!("{name} ({fingerprint})")
        })
    }

    pub(crate) fn redeem_console_login(&self, code: &str) -> Result<String, String> {
        self.console_logins.redeem(code).ok_or_else(|| {
            "this sign-in link is unknown, used or expired: run `ssh git@HOST login` again".into()
        })
    }

    pub(crate) fn console_member(&self, fingerprint: &str) -> Result<Principal, String> {
        let (name, roles) = self.key_roles(fingerprint)?;
        if roles.is_empty() {
            return Err("this key was removed from every project".into());
        }
        Ok(Principal::Member {
            name,
            fingerprint: fingerprint.to_owned(),
            roles,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once() {
        let codes = LoginCodes::default();
        let code = codes.mint("SHA256:abc");
        assert_eq!(codes.redeem("nonsense"), None);
        assert_eq!(codes.peek(&code), Some("SHA256:abc".into()));
        assert_eq!(codes.redeem(&code), Some("SHA256:abc".into()));
        assert_eq!(codes.redeem(&code), None);
    }

    #[test]
    fn one_key_cannot_void_the_others_links() {
        let codes = LoginCodes::default();
        let theirs = codes.mint("SHA256:theirs");
        for _ in 0..MAX_PENDING * 2 {
            codes.mint("SHA256:noisy");
        }
        assert_eq!(codes.redeem(&theirs), Some("SHA256:theirs".into()));
    }
}
