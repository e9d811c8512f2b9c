//! The versions Skiff reports. Clients and tools read etcd's version fields to decide
//! which API they may use, so Skiff reports the etcd API version it implements (3.4)
//! there, and its own version separately.

/// The etcd server version Skiff is wire-compatible with (`/version` `etcdserver`,
/// Maintenance.Status `version`).
pub const ETCD_SERVER_VERSION: &str = "3.4.0";
/// The cluster version (`/version` `etcdcluster`).
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";
/// The cluster version as etcd's `etcd_cluster_version` metric labels it.
pub const ETCD_CLUSTER_VERSION_MAJOR_MINOR: &str = "3.4";
/// Skiff's own version.
pub const SKIFF_VERSION: &str = env!("CARGO_PKG_VERSION");
