//! Console sign-ins: a random session id in an `HttpOnly; Secure;
//! SameSite=Strict` cookie, mapped in memory to who signed in and the
//! session's CSRF token. Kept in memory on purpose: a restart signs everyone
//! out (they mint a new link), and no session secret ever reaches the disk.
//! Who the session stands for is re-read at every request (a removed key or a
//! revoked token loses the console at once).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngExt as _;
use sha2::{Digest as _, Sha256};

/// The most sessions kept at once; past it the oldest goes first.
const MAX_SESSIONS: usize = 10_000;
/// The most sessions one key or token holds; past it its own oldest goes,
/// so no one can sign everyone else out by signing in many times.
const MAX_PER_SUBJECT: usize = 32;

/// Who a session was opened for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Subject {
    /// An SSH key, by fingerprint (signed in with a login link).
    Key(String),
    /// An API token (its secret, kept only in this process's memory).
    Token(String),
}

#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub(crate) subject: Subject,
    /// Every form carries it; a POST without it is refused.
    pub(crate) csrf: String,
    opened: Instant,
    expires: Instant,
}

/// The open sessions, by the SHA-256 of their id (a memory dump shows no
/// usable cookie).
#[derive(Debug)]
pub(crate) struct Sessions {
    lifetime: Duration,
    open: Mutex<HashMap<String, Session>>,
}

pub(crate) fn random_hex() -> String {
    hex::encode(rand::rng().random::<[u8; 32]>())
}

fn digest(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

impl Sessions {
    pub(crate) fn new(lifetime: Duration) -> Sessions {
        Sessions {
            lifetime,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Opens a session; returns its id (the cookie's value).
    pub(crate) fn open(&self, subject: Subject) -> String {
        let id = random_hex();
        let now = Instant::now();
        let session = Session {
            subject,
            csrf: random_hex(),
            opened: now,
            expires: now + self.lifetime,
        };
        if let Ok(mut open) = self.open.lock() {
            open.retain(|_, s| s.expires > now);
            let own: Vec<(String, Instant)> = open
                .iter()
                .filter(|(_, s)| s.subject == session.subject)
                .map(|(k, s)| (k.clone(), s.opened))
                .collect();
            if own.len() >= MAX_PER_SUBJECT
                && let Some((oldest, _)) = own.iter().min_by_key(|(_, opened)| *opened)
            {
                open.remove(oldest);
            }
            if open.len() >= MAX_SESSIONS
                && let Some(oldest) = open
                    .iter()
                    .min_by_key(|(_, s)| s.opened)
                    .map(|(k, _)| k.clone())
            {
                open.remove(&oldest);
            }
            open.insert(digest(&id), session);
        }
        id
    }

    /// The live session `id` names.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let open = self.open.lock().ok()?;
        open.get(&digest(id))
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    pub(crate) fn close(&self, id: &str) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&digest(id));
        }
    }
}

/// Equal without telling, by its time, how much of a guess was right.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_until_closed_or_expired() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let id = sessions.open(Subject::Key("SHA256:x".into()));
        let found = sessions.get(&id).map(|s| s.subject);
        assert_eq!(found, Some(Subject::Key("SHA256:x".into())));
        assert!(sessions.get("not-an-id").is_none());
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());

        let expired = Sessions::new(Duration::ZERO);
        let id = expired.open(Subject::Token("lw_api_x".into()));
        assert!(expired.get(&id).is_none());
    }

    #[test]
    fn one_subject_cannot_crowd_out_the_others() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let other = sessions.open(Subject::Key("SHA256:other".into()));
        let first = sessions.open(Subject::Token("lw_api_x".into()));
        for _ in 0..MAX_PER_SUBJECT * 3 {
            sessions.open(Subject::Token("lw_api_x".into()));
        }
        assert!(sessions.get(&other).is_some());
        assert!(sessions.get(&first).is_none());
        let own = sessions
            .open
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.subject == Subject::Token("lw_api_x".into()))
            .count();
        assert_eq!(own, MAX_PER_SUBJECT);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
