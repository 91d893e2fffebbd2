//! Launchway's services, pure (no I/O, no async): what a config's
//! `services:` asks for and what runs for it.
//!
//! - [`catalog`]: the types and versions this host can run (Debian
//!   packages, per suite) and how an asked version resolves;
//! - [`client`]: the server's own client for `launchway sql`, `db dump`
//!   and `redis`, with a relationship's credentials;
//! - [`configuration`]: a service's `configuration:` decoded and checked
//!   (databases, endpoints and privileges; Redis' eviction policy);
//! - [`credentials`]: endpoint users and passwords, the same in every
//!   environment of a project;
//! - [`relationships`]: `PLATFORM_RELATIONSHIPS` entries and the
//!   `<RELATIONSHIP>_*` variables, as Upsun writes them;
//! - [`run`]: what a service's image and container run: first start,
//!   readiness, the configuration script.

pub mod catalog;
pub mod client;
pub mod configuration;
pub mod credentials;
pub mod relationships;
pub mod run;

pub use catalog::{KINDS, Kind, Offer, ResolveError, Resolved, resolve};
