//! Launchway's services, pure (no I/O, no async): what a config's
//! `services:` asks for and what runs for it.
//!
//! - [`catalog`]: the types and versions this host can run (Debian
//!   packages, per suite) and how an asked version resolves.

pub mod catalog;

pub use catalog::{KINDS, Kind, Offer, ResolveError, Resolved, resolve};
