//! Launchway's operations as a closed set, and the one table that says who
//! may run each.
//!
//! Pure vocabulary shared by every door (the admin socket, the HTTP API, the
//! console, SSH): no I/O, no async. The daemon resolves an operation's
//! [`Target`] from its state and calls [`authorize`] once, at the entry of
//! the operation, whatever door the request came through (firecracker's
//! model: a door only parses a request into one of [`ActionKind::ALL`]).

mod actions;
mod auth;

pub use actions::{ActionKind, Need};
pub use auth::{Access, Denied, Principal, Target, authorize};

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a key or token may do on a project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read: fetch and clone, list and read builds, releases, activities.
    Viewer,
    /// Also push to, deploy and change any environment but the default one.
    Contributor,
    /// Also the default environment and the project's own settings.
    Admin,
}

impl Role {
    /// The role's name as users write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Contributor => "contributor",
            Role::Admin => "admin",
        }
    }

    /// Parses `admin`, `contributor` or `viewer`.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "contributor" => Some(Role::Contributor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
