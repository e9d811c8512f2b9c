//! The peer transport's series under etcd's rafthttp names and labels: bytes sent to
//! (`To`) and received from (`From`) each peer, send failures, and the round-trip time.
//!
//! The transport measures them (`crate::peer`): bytes are the encoded Raft messages of
//! each frame written to or read from a peer stream; a send failure is a message that
//! did not leave (queue full, stream broken, or dropped while the peer was unreachable),
//! which is what keeps etcd's `etcdMembersDown` alert firing while a peer is down; the
//! round-trip time is the duration of a `Hello` call to the peer, made when a stream is
//! established and then every [`crate::peer::PROBE_INTERVAL`] while it is up (etcd
//! probes its peers the same way).
//!
//! Labels are member IDs in hexadecimal, as etcd writes them.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry,
};

use super::register;

/// The peer series of one member (cheap to clone).
#[derive(Clone)]
pub struct PeerMetrics {
    sent_bytes: IntCounterVec,
    received_bytes: IntCounterVec,
    sent_failures: IntCounterVec,
    received_failures: IntCounterVec,
    rtt: HistogramVec,
}

/// The series about sending to one peer.
#[derive(Clone)]
pub struct PeerLink {
    pub sent_bytes: IntCounter,
    pub sent_failures: IntCounter,
    pub rtt: Histogram,
}

/// The series about receiving from one peer.
#[derive(Clone)]
pub struct PeerSource {
    pub received_bytes: IntCounter,
    pub received_failures: IntCounter,
}

impl std::fmt::Debug for PeerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerMetrics")
    }
}

impl Default for PeerMetrics {
    /// Series registered nowhere: for a transport outside a member (tests).
    fn default() -> PeerMetrics {
        PeerMetrics::new(&Registry::new())
    }
}

impl PeerMetrics {
    pub(super) fn new(r: &Registry) -> PeerMetrics {
        let vec = |name: &str, help: &str, label: &str| {
            register(
                r,
                IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric"),
            )
        };
        PeerMetrics {
            sent_bytes: vec(
                "etcd_network_peer_sent_bytes_total",
                "The total number of bytes sent to peers.",
                "To",
            ),
            received_bytes: vec(
                "etcd_network_peer_received_bytes_total",
                "The total number of bytes received from peers.",
                "From",
            ),
            sent_failures: vec(
                "etcd_network_peer_sent_failures_total",
                "The total number of send failures from peers.",
                "To",
            ),
            received_failures: vec(
                "etcd_network_peer_received_failures_total",
                "The total number of receive failures from peers.",
                "From",
            ),
            // etcd's buckets: 0.1 ms doubling to 3.2768 s.
            rtt: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "etcd_network_peer_round_trip_time_seconds",
                        "Round-Trip-Time histogram between peers",
                    )
                    .buckets(
                        exponential_buckets(0.0001, 2.0, 16).expect("valid bucket parameters"),
                    ),
                    &["To"],
                )
                .expect("valid metric"),
            ),
        }
    }

    /// The series about sending to `peer` (created at 0 if new).
    pub fn sending_to(&self, peer: u64) -> PeerLink {
        let id = format!("{peer:x}");
        PeerLink {
            sent_bytes: self.sent_bytes.with_label_values(&[&id]),
            sent_failures: self.sent_failures.with_label_values(&[&id]),
            rtt: self.rtt.with_label_values(&[&id]),
        }
    }

    /// The series about receiving from `peer` (created at 0 if new).
    pub fn receiving_from(&self, peer: u64) -> PeerSource {
        let id = format!("{peer:x}");
        PeerSource {
            received_bytes: self.received_bytes.with_label_values(&[&id]),
            received_failures: self.received_failures.with_label_values(&[&id]),
        }
    }
}
