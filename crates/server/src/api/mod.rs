//! The etcd v3 gRPC services. Each service checks a request exactly as etcd does
//! (`skiff_api::validate`), then serves it from the member (`crate::server`): writes
//! through Raft, reads after a ReadIndex or locally. The KV service is generic over a
//! backend trait so the wire rules are tested without a cluster.

pub mod cluster;
pub mod election;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod watch;

pub use cluster::ClusterService;
pub use election::ElectionService;
pub use kv::{KvBackend, KvService};
pub use lease::LeaseService;
pub use lock::LockService;
pub use maintenance::MaintenanceService;
pub use watch::WatchService;
