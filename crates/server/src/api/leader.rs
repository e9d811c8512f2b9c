//! etcd's `hasleader` contract (clientv3's `WithRequireLeader`, which kube-apiserver
//! uses): a request carrying the gRPC metadata `hasleader: true` is refused with
//! `etcdserver: no leader` when this member knows no leader, and a watch or keep-alive
//! stream opened with it is ended with that error as soon as the member loses its
//! leader, so the client moves to a member that has one instead of waiting on a
//! partitioned member forever.

use skiff_api::EtcdError;
use tokio::sync::watch;
use tonic::metadata::MetadataMap;
use tonic::Status;

/// The metadata key etcd's clients send.
pub const HAS_LEADER: &str = "hasleader";

/// Whether the request asked for a leader.
pub fn requires_leader(md: &MetadataMap) -> bool {
    requires_leader_header(md.as_ref())
}

/// [`requires_leader`] read from the call's HTTP/2 headers (the client port's front
/// refuses such calls for every service while there is no leader).
pub fn requires_leader_header(headers: &axum::http::HeaderMap) -> bool {
    headers.get(HAS_LEADER).and_then(|v| v.to_str().ok()) == Some("true")
}

/// What such a request gets without a leader.
pub fn no_leader() -> Status {
    EtcdError::NoLeader.to_status()
}

/// Completes once the member has no leader (never if the member is stopping).
pub async fn leader_lost(leader: &mut watch::Receiver<u64>) {
    if leader.wait_for(|l| *l == 0).await.is_err() {
        std::future::pending::<()>().await;
    }
}
