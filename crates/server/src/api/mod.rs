//! The etcd v3 gRPC services. Each service checks a request exactly as etcd does
//! (`crate::validate`), then hands it to a backend trait that the member implements
//! (proposing writes through Raft, serving reads after a ReadIndex or locally), so the
//! wire-facing rules live in one place and are tested without a cluster.

pub mod kv;

pub use kv::{KvBackend, KvService};
