//! skiff-chaos: a fault-injection harness for etcd-compatible servers, and the checkers
//! that judge the histories it records.
//!
//! - [`history`]: the recorded operations, watch streams and member hashes (serde);
//! - [`check`]: linearizability (per-key Wing-Gong/Lowe search), global revision order,
//!   serializable reads, watch guarantees with a replay of the store, convergence.

pub mod check;
pub mod history;
