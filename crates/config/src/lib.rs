//! Launchway's repository config: discovery, parsing, validation, normalization.
//!
//! The entry point is [`load`]: it finds the config in a [`RepoSource`] (a
//! checkout, a git commit, memory), reads every file with positions, resolves
//! `!include`, validates the result against the JSON Schema generated from
//! [`model`], decodes and normalizes it into one canonical [`Config`], and
//! returns that with every [`Diagnostic`] found. The crate is pure: no async, no
//! disk, no clock; all input comes through the source.
//!
//! Invariants:
//! - every problem is reported at once, each with `file:line:col` when it has one;
//! - no input makes it panic, loop or allocate without bound (file size, nesting,
//!   alias expansion and include counts are capped);
//! - a [`Config`] is returned only when there is no error.

mod config;
mod cron;
mod diag;
mod layout;
pub mod model;
mod normalize;
mod schema;
mod source;
pub mod stack;
mod yaml;

pub use config::{
    App, Config, Cron, Flavor, Mount, PhpSizing, Relationship, Route, RouteTls, Runtime, Service,
    Web, Worker,
};
pub use cron::Schedule;
pub use diag::{Diagnostic, Diagnostics, Severity, Span};
pub use layout::{Layout, MAX_FILE_BYTES, MAX_INCLUDE_DEPTH, MAX_INCLUDES, MAX_SEARCHED_DIRS};
pub use normalize::valid_name;
pub use schema::json_schema;
pub use source::{Entry, EntryKind, MemSource, PathError, RepoPath, RepoSource, SourceError};

/// The result of reading a repository's config.
#[derive(Debug)]
pub struct Loaded {
    /// The normalized config; `None` when any diagnostic is an error.
    pub config: Option<Config>,
    /// Every error, warning and note, sorted by location.
    pub diagnostics: Diagnostics,
    /// The config as found, in the native shape, includes resolved, before
    /// validation (for tools and for checking the schema against real files).
    pub document: Option<serde_json::Value>,
}

/// Reads, validates and normalizes the config of the repository state `source`.
pub fn load(source: &dyn RepoSource) -> Loaded {
    let mut diagnostics = Diagnostics::default();
    let mut document = None;
    let config = layout::assemble(source, &mut diagnostics).and_then(|assembled| {
        let json = assembled.doc.to_json();
        let decodable = schema::validate(&assembled.doc, json.clone(), &mut diagnostics);
        document = Some(json);
        normalize::normalize(&assembled, &decodable, source, &mut diagnostics)
    });
    diagnostics.sort();
    let config = if diagnostics.has_errors() {
        None
    } else {
        config
    };
    Loaded {
        config,
        diagnostics,
        document,
    }
}
