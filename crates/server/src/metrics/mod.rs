//! Prometheus metrics under etcd's names, help texts, types and buckets, so the
//! dashboards and alerts written for etcd work on Skiff unchanged.
//!
//! One [`Metrics`] per member, with its own registry (tests can run several members
//! in one process). Updating a metric is lock-free; only [`Metrics::render`] walks
//! the registry.
//!
//! Every series is measured where its event happens; this module only names them:
//! - Raft and requests (`etcd_server_*`): the node loop (leader, leader changes,
//!   committed index, proposals dropped), `EtcdServer::propose` (pending, timed out),
//!   the apply thread (applied index), `/health` (health checks).
//! - Disk (`etcd_disk_*`): the WAL fsync in the node loop's I/O; the backend commit
//!   through the storage crate's commit observer ([`Metrics::backend_commit_observer`],
//!   installed on the member's backend: the page store's commit, its fsyncs included when durable).
//! - Store (`etcd_mvcc_*`, `etcd_debugging_mvcc_*`): sampled by the member's
//!   housekeeping task (file size, keys).
//! - Client gRPC (`grpc_server_*`, `etcd_network_client_grpc_*`): [`grpc`], a
//!   middleware around the client gRPC routes.
//! - Peers (`etcd_network_peer_*`): [`peer`], measured by the peer transport.
//! - The process (`process_*`): [`process`], read from `/proc` at each scrape (Linux).

pub mod grpc;
pub mod peer;
#[cfg(target_os = "linux")]
pub mod process;

use std::sync::Arc;

use prometheus::{
    exponential_buckets, Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntGauge, Opts,
    Registry, TextEncoder,
};

pub use grpc::GrpcMetrics;

use crate::front::GrpcServices;
pub use peer::{PeerLink, PeerMetrics, PeerSource};

/// etcd's version label values, reported as the version Skiff is compatible with.
pub use crate::version::{ETCD_CLUSTER_VERSION_MAJOR_MINOR, ETCD_SERVER_VERSION};

/// The member's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub has_leader: IntGauge,
    pub is_leader: IntGauge,
    pub leader_changes_seen: IntCounter,
    pub proposals_committed: IntGauge,
    pub proposals_applied: IntGauge,
    pub proposals_pending: IntGauge,
    pub proposals_failed: IntCounter,
    pub slow_read_indexes: IntCounter,
    pub slow_applies: IntCounter,
    pub health_success: IntCounter,
    pub health_failures: IntCounter,
    pub wal_fsync_seconds: Histogram,
    pub backend_commit_seconds: Histogram,
    pub db_total_size_bytes: DbSizeGauge,
    pub db_total_size_in_use_bytes: IntGauge,
    pub keys_total: IntGauge,
    pub quota_backend_bytes: IntGauge,
    pub grpc: Arc<GrpcMetrics>,
    pub peer: PeerMetrics,
}

/// The database size, exported under etcd 3.4's two names: `etcd_mvcc_db_total_size_in_bytes`
/// (its dashboard) and `etcd_debugging_mvcc_db_total_size_in_bytes` (its mixin).
#[derive(Clone)]
pub struct DbSizeGauge {
    current: IntGauge,
    debugging: IntGauge,
}

impl DbSizeGauge {
    pub fn set(&self, bytes: i64) {
        self.current.set(bytes);
        self.debugging.set(bytes);
    }

    pub fn get(&self) -> i64 {
        self.current.get()
    }
}

/// Any registration failure here is a programming error (duplicate or malformed
/// names are fixed at compile time), so it is reported as a panic at start-up.
fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique and well-formed");
    c
}

impl Metrics {
    /// Metrics for the member `member_id`.
    pub fn new(member_id: u64) -> Metrics {
        let r = Registry::new();
        let gauge =
            |name: &str, help: &str| register(&r, IntGauge::new(name, help).expect("valid metric"));
        let counter = |name: &str, help: &str| {
            register(&r, IntCounter::new(name, help).expect("valid metric"))
        };
        // etcd's disk histograms: 1 ms doubling to 8.192 s.
        let disk_histogram = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help)
                .buckets(exponential_buckets(0.001, 2.0, 14).expect("valid bucket parameters"));
            register(&r, Histogram::with_opts(opts).expect("valid metric"))
        };
        let labelled_one = |name: &str, help: &str, label: &str, value: &str| {
            let vec = register(
                &r,
                GaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric"),
            );
            vec.with_label_values(&[value]).set(1.0);
        };

        let m = Metrics {
            has_leader: gauge(
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: gauge(
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            leader_changes_seen: counter(
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            // etcd exports the committed and applied totals as gauges.
            proposals_committed: gauge(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            proposals_applied: gauge(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            proposals_pending: gauge(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            proposals_failed: counter(
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            slow_read_indexes: counter(
                "etcd_server_slow_read_indexes_total",
                "The total number of pending read indexes not in sync with leader's or timed out read index requests.",
            ),
            slow_applies: counter(
                "etcd_server_slow_apply_total",
                "The total number of slow apply requests (likely overloaded from slow disk).",
            ),
            health_success: counter(
                "etcd_server_health_success",
                "The total number of successful health checks",
            ),
            health_failures: counter(
                "etcd_server_health_failures",
                "The total number of failed health checks",
            ),
            wal_fsync_seconds: disk_histogram(
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
            ),
            backend_commit_seconds: disk_histogram(
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
            ),
            db_total_size_bytes: DbSizeGauge {
                current: gauge(
                    "etcd_mvcc_db_total_size_in_bytes",
                    "Total size of the underlying database physically allocated in bytes.",
                ),
                debugging: gauge(
                    "etcd_debugging_mvcc_db_total_size_in_bytes",
                    "Total size of the underlying database physically allocated in bytes.",
                ),
            },
            db_total_size_in_use_bytes: gauge(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            ),
            keys_total: gauge("etcd_debugging_mvcc_keys_total", "Total number of keys."),
            quota_backend_bytes: gauge(
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            ),
            grpc: Arc::new(GrpcMetrics::new(&r)),
            peer: PeerMetrics::new(&r),
            registry: r.clone(),
        };
        labelled_one(
            "etcd_server_id",
            "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
            "server_id",
            &format!("{member_id:x}"),
        );
        labelled_one(
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            "server_version",
            ETCD_SERVER_VERSION,
        );
        labelled_one(
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            "cluster_version",
            ETCD_CLUSTER_VERSION_MAJOR_MINOR,
        );
        #[cfg(target_os = "linux")]
        r.register(Box::new(process::ProcessCollector::for_self()))
            .expect("the process series' names are unique and well-formed");
        m
    }

    /// What the member installs on its backend ([`skiff_storage::backend::Backend::observe_commits`])
    /// to measure `etcd_disk_backend_commit_duration_seconds`.
    pub fn backend_commit_observer(&self) -> skiff_storage::backend::CommitObserver {
        let h = self.backend_commit_seconds.clone();
        Box::new(move |took| h.observe(took.as_secs_f64()))
    }

    /// The client gRPC `services` with `grpc_server_*` measured (see [`grpc`]).
    pub fn instrument_grpc(&self, services: GrpcServices) -> GrpcServices {
        services.measured(self.grpc.clone())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        encode(&self.registry)
    }
}

pub(crate) fn encode(registry: &Registry) -> String {
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for the text format.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_etcd_names_and_types() {
        let m = Metrics::new(0x8e9e05c52164694d);
        m.has_leader.set(1);
        m.leader_changes_seen.inc();
        m.wal_fsync_seconds.observe(0.0005);
        m.proposals_committed.set(5);
        let text = m.render();
        for line in [
            "# TYPE etcd_server_has_leader gauge",
            "etcd_server_has_leader 1",
            "# TYPE etcd_server_leader_changes_seen_total counter",
            "etcd_server_leader_changes_seen_total 1",
            "# TYPE etcd_disk_wal_fsync_duration_seconds histogram",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 1",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"8.192\"} 1",
            "# TYPE etcd_mvcc_db_total_size_in_bytes gauge",
            "# TYPE etcd_server_proposals_committed_total gauge",
            "etcd_server_proposals_committed_total 5",
            "etcd_server_id{server_id=\"8e9e05c52164694d\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
