//! Launchway's HTTP door: `/api/v1` over HTTPS.
//!
//! A request is matched against [`ROUTES`] (one table: method, path, the
//! operation it parses into, the answer's shape), its bearer token is
//! authenticated into a [`Principal`](launchway_ops::Principal), its path,
//! query and JSON body become the operation's message, and the message is
//! handed to the same service the admin socket serves, marked with that
//! principal: authorization and logic are the core's, decided once for
//! every door. This crate only parses and renders.
//!
//! - JSON in and out; field names are the protobuf messages' (the CLI's
//!   shapes); unknown or mistyped fields are refused with their name.
//! - Long operations answer `202 Accepted` with their activities and a
//!   `Location` (`/api/v1/activities/{id}/log`), or stream their output as
//!   Server-Sent Events when asked with `Accept: text/event-stream`.
//! - Activity logs stream as Server-Sent Events whose `id` is the log's
//!   position: a client that reconnects with `Last-Event-ID` misses nothing
//!   and sees nothing twice.
//! - Errors are `{"error": {"code", "message"}}` with the HTTP status of
//!   their kind; failed authentications are limited per address
//!   (`429` with `Retry-After` past the limit).
//! - The web console (`/console`, module `console`) is a third door on the
//!   same listener: pages rendered from the same operations, signed in with
//!   a one-time link from `ssh git@host login` or a token.

mod console;
mod dispatch;
mod limits;
mod openapi;
mod pinning;
mod remote;
mod request;
mod routes;
mod serve;

pub use openapi::openapi;
pub use remote::{Remote, RemoteSettings, RemoteStream, connect};
pub use routes::{ROUTES, Route, SOCKET_ONLY, Shape};
pub use serve::{Authenticate, HttpDoor, Uploads};
