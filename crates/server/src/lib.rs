//! One Skiff member: configuration (etcd's flags), identity (etcd's ID derivation),
//! the etcd v3 gRPC services and the HTTP endpoints on the client port.
//!
//! Module map: [`config`] flags and their checks; [`ids`] member, cluster and request
//! IDs; [`bootstrap`] the Raft state from the data directory; [`node`] the Raft node loop
//! (WAL group commit, batched ReadIndex, snapshots); [`apply`] committed entries into
//! the MVCC store and the lessor; [`server`] propose-and-wait and reads; [`api`] the
//! gRPC services; [`lessor`] leases; [`alarms`] raised alarms; [`member`] start-up
//! and shutdown; [`http`] `/health`, `/version`, `/metrics`; [`metrics`] etcd-named
//! Prometheus metrics; [`peer`] the transport between members; [`serve`] one listener
//! carrying both gRPC and HTTP; [`version`] the versions reported; [`convert`] wire
//! types to and from the store's; [`inputs`] the messages between the member's
//! threads; [`wait`] request waiters and the applied-index wait. etcd's
//! client-visible errors and request checks are `skiff_api`'s (`EtcdError`,
//! `validate`), shared with the storage.

pub mod alarms;
pub mod api;
pub mod apply;
pub mod bootstrap;
pub mod config;
pub mod convert;
pub mod http;
pub mod ids;
pub mod inputs;
pub mod lessor;
pub mod member;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod serve;
pub mod server;
pub mod version;
pub mod wait;
