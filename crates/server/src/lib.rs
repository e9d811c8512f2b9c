//! One Skiff member: configuration (etcd's flags), identity (etcd's ID derivation),
//! the Raft node loop and the apply thread, and the front ends (the etcd v3 gRPC
//! services and the HTTP endpoints on the client port) over one request facade.
//!
//! Module map (`ARCHITECTURE.md` at the repository root has the whole picture):
//! - wiring: [`member`] builds, connects, starts and stops the parts; [`tasks`] the
//!   background loops; [`bootstrap`] the Raft state from the data directory;
//!   [`corrupt`] the HashKV comparisons with peers (initial and periodic).
//! - front ends: [`api`] the gRPC services, [`http`] `/health` `/version` `/metrics`,
//!   [`gateway`] etcd's JSON gateway (`/v3/...`), [`serve`] one listener carrying them
//!   ([`h2c_authority`] accepts endpoints written as URLs); all written against
//!   [`facade`] (the traits, and layers such as quota that wrap them).
//! - the request side: [`server`] implements the facade (validate, propose and wait,
//!   read after the ReadIndex barrier); [`wait`] request waiters and the applied
//!   index; [`ids`] member, cluster and request IDs.
//! - the state machine: [`node`] the Raft node loop (WAL group commit, batched
//!   ReadIndex, snapshots) and its effects; [`apply`] committed entries into the MVCC
//!   store and the state the apply thread owns: [`lease`] (table and clock),
//!   [`membership`], [`alarms`], [`auth`] (users, roles, permissions, tokens);
//!   [`inputs`] the messages between these threads.
//! - [`restore`] a data dir from an etcd snapshot file (`skiffctl snapshot restore`);
//!   [`restore_etcd`] etcd 3.4's data dir from one (`--etcd-layout`).
//! - [`peer`] the transport between members; [`config`] flags; [`metrics`] etcd-named
//!   Prometheus metrics; [`convert`] wire types to and from the store's; [`version`];
//!   [`allocator`] how soon freed memory goes back to the kernel.

pub mod alarms;
pub mod allocator;
pub mod api;
pub mod apply;
pub mod auth;
pub mod bootstrap;
pub mod budget;
pub mod client_conns;
pub mod config;
pub mod convert;
pub mod corrupt;
pub mod etcd_db;
pub mod etcd_import;
pub mod etcd_in_place;
pub mod etcd_replay;
pub mod facade;
pub mod front;
pub mod gateway;
pub mod h2c_authority;
pub mod http;
pub mod ids;
pub mod inputs;
pub mod lease;
pub mod member;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod restore;
pub mod restore_etcd;
pub mod serve;
pub mod server;
pub mod session;
pub mod tasks;
pub mod tls;
pub mod version;
pub mod wait;
