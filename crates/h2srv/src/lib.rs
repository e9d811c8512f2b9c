//! `skiff-h2`: the server side of HTTP/2 for the client port.
//!
//! One future serves one connection ([`serve`]): it reads frames, calls a tower service
//! for each request and writes the responses, polling the service's futures and bodies
//! itself instead of spawning a task per stream, so a unary gRPC call is handled by one
//! task from its HEADERS to its trailers (see `conn` for what of RFC 9113 it keeps).
//! HTTP/1.1 and the choice between the two stay with the caller.

mod body;
mod conn;
mod frame;
mod hpack;

pub use body::{BodyError, RecvBody};
pub use conn::{serve, Config, ConnError};
pub use frame::{Reason, PREFACE};
