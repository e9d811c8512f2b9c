//! What a Skiff client can see, shared by the server, the storage and (later) the
//! client and the CLI: [`errors`] holds the one table of etcd's client-visible errors
//! (gRPC code and exact message), [`validate`] the one implementation of etcd's
//! request checks, written over a small view trait so the wire types and the store's
//! own request types are checked by the same code.
//!
//! This crate depends on neither the server nor the storage.

pub mod errors;
pub mod validate;

pub use errors::EtcdError;
