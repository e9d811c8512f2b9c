//! skiff-chaos: a fault-injection harness for etcd-compatible servers, and the checkers
//! that judge the histories it records.
//!
//! - [`history`]: the recorded operations, watch streams and member hashes (serde);
//! - [`check`]: linearizability (per-key Wing-Gong/Lowe search), global revision order,
//!   serializable reads, watch guarantees with a replay of the store, convergence;
//! - [`cluster`]: server processes run from a temporary directory, killed on drop;
//! - [`net`]: network namespaces for partitions;
//! - [`proxy`]: TCP proxies on peer links, for delays and drops;
//! - [`tls`]: a CA and a member certificate for runs with client and peer mTLS.

pub mod check;
pub mod cluster;
pub mod history;
pub mod net;
pub mod proxy;
pub mod tls;
