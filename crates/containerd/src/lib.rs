//! Launchway's only link to containerd (gRPC via `containerd-client`).
//!
//! - [`Engine`]: a namespace-scoped client; leases around everything it
//!   creates; gRPC statuses mapped to [`EngineError`] variants callers can branch on.
//! - [`Engine::run_step`]: one process in a locked-down container ([`spec`]),
//!   output line by line, timeout, cancellation, cleanup on every path.
//! - [`Workspace`] and [`Workspace::freeze`]: steps on a writable snapshot,
//!   then committed into a new OCI image with annotations.
//! - [`archive`]: streamed OCI image-layout export and digest-checked import.
//! - [`runtimes`]: the runtime image catalog built with mmdebstrap.
//! - [`embedded`]: a private containerd when none answers.

mod app;
pub mod archive;
mod attached;
mod content;
pub mod debian;
pub mod digest;
pub mod embedded;
mod engine;
mod error;
mod freeze;
pub mod image;
mod interactive;
pub mod layer;
mod ownership;
pub mod runtimes;
pub mod spec;
mod step;

pub use app::{AppLabels, OUTAGE_WAIT, OWNER_LABEL};
pub use attached::OutputChunk;
pub use engine::{Blob, DEFAULT_NAMESPACE, Engine, Inventory, Lease, SNAPSHOTTER, is_identifier};
pub use error::{EngineError, Result};
pub use image::Image;
pub use interactive::{ExecControl, PtySize};
pub use oci_spec::runtime::Capability;
pub use ownership::{Claim, HEARTBEAT, INSTANCE_LABEL, OWNER_LEASE};
pub use spec::{Bind, Limits, Network, StepSpec, WEB_UID};
pub use step::{MAX_LINE, Output, OutputLine, OutputStream, Rootfs, StepOutcome, Workspace};
