//! The MVCC key-value store with etcd v3 semantics.
//!
//! Every write creates a new store *revision* (one main revision per request or txn, with
//! a sub-revision per key written inside it). Each key keeps its versions: `create_revision`
//! (start of its current life), `mod_revision` (last write) and `version` (writes since
//! creation). Old revisions stay readable until compacted. The data lives in the backend's
//! `key` table as revision -> KeyValue rows (etcd's exact encoding, see [`codec`]); an
//! in-memory key index (rebuilt from those rows at start) maps each key to its revisions.
//!
//! - [`types`]: plain mirrors of etcd's KV messages (convert 1:1 to protobuf).
//! - [`validate`]: the store's request types as `skiff_api::validate`'s views, so
//!   etcd's request checks (empty key, duplicate keys in a txn, ...) run on them.
//! - [`KvStore`]: apply (put, delete range, txn, compaction, with the raft index),
//!   range, compaction, hash and HashKV.
//! - [`testing`]: test-only tools that alter a stopped member's file (corruption tests).
//! - [`Error`]: request errors (a `skiff_api::EtcdError`) or storage failures.

pub mod codec;
mod error;
mod key_index;
mod store;
pub mod testing;
pub mod types;
pub mod validate;

pub use codec::Revision;
pub use error::{Error, Result};
pub use store::{
    row_cost, AnyLease, Applied, ApplyEntry, AuxOp, AuxTable, Charge, KvStore, LeaseCheck,
    Recorder, StoreConfig, ROW_OVERHEAD,
};
pub use types::*;
