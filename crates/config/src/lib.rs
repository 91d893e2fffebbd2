//! Launchway's repository config: discovery, parsing, validation, normalization.
mod diag;
mod model;
mod schema;
mod source;
mod yaml;
pub use diag::{Diagnostic, Diagnostics, Severity, Span};
pub use schema::json_schema;
pub use source::{Entry, EntryKind, MemSource, PathError, RepoPath, RepoSource, SourceError};
