//! Skiff's durable storage: the write-ahead log (`wal`), snapshot files (`snap`), the
//! redb backend (`backend`), the MVCC key-value store (`mvcc`) and the watchable store
//! (`watch`). Nothing here knows about the server; the raft crate's types are what the
//! WAL records carry.

pub mod backend;
pub mod bbolt;
pub mod etcd_wal;
pub mod gradual;
pub mod mvcc;
pub mod snap;
pub mod wal;
pub mod watch;
