//! Launchway's services, pure (no I/O, no async): what a config's
//! `services:` asks for and what runs for it.
//!
//! - [`catalog`]: the types and versions this host can run (Debian
//!   packages, per suite) and how an asked version resolves;
//! - [`configuration`]: a service's `configuration:` decoded and checked
//!   (databases, endpoints and privileges; Redis' eviction policy).

pub mod catalog;
pub mod configuration;

pub use catalog::{KINDS, Kind, Offer, ResolveError, Resolved, resolve};
