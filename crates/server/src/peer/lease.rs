//! Lease requests that only the leader can answer (keep-alive, time-to-live: only its
//! lessor tracks expiry), forwarded by followers over the peer protocol.
//!
//! The leader side is a [`LeaseHandler`] the member installs on its transport; the
//! follower side is the [`Forwarder`], which keeps one client per leader so a stream
//! of keep-alives reuses one connection.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use skiff_proto::skiffpb::peer_client::PeerClient;
use skiff_proto::skiffpb::{LeaseRenewRequest, LeaseTtlRequest};
use skiff_raft::NodeId;
use tonic::transport::Channel;
use tonic::Status;

use super::{connect_one, PeerConfig};

/// The leader's answers to forwarded lease requests.
#[tonic::async_trait]
pub trait LeaseHandler: Send + Sync {
    /// Renews lease `id`: its TTL in seconds, 0 if it does not exist, or an error
    /// (e.g. `etcdserver: not leader` when leadership moved meanwhile).
    async fn renew(&self, id: i64) -> Result<i64, Status>;
    /// (remaining seconds or -1, granted TTL, attached keys when asked).
    async fn time_to_live(&self, id: i64, keys: bool) -> Result<(i64, i64, Vec<Bytes>), Status>;
}

/// The remaining TTL of a forwarded time-to-live query.
pub struct TimeToLive {
    pub ttl: i64,
    pub granted_ttl: i64,
    pub keys: Vec<Bytes>,
}

/// Forwards lease requests to the leader.
pub struct Forwarder {
    pub(super) cfg: Arc<PeerConfig>,
    clients: tokio::sync::Mutex<HashMap<NodeId, PeerClient<Channel>>>,
}

impl Forwarder {
    pub(super) fn new(cfg: Arc<PeerConfig>) -> Forwarder {
        Forwarder {
            cfg,
            clients: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub(super) async fn client(
        &self,
        leader: NodeId,
        urls: &[String],
    ) -> Result<PeerClient<Channel>, Status> {
        if let Some(c) = self.clients.lock().await.get(&leader) {
            return Ok(c.clone());
        }
        let mut last = Status::unavailable("etcdserver: no leader");
        for url in urls {
            match connect_one(&self.cfg, leader, url).await {
                Ok(c) => {
                    self.clients.lock().await.insert(leader, c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    tracing::debug!(leader = format!("{leader:x}"), error = %e, "cannot reach the leader");
                    last = Status::unavailable(
                        "etcdserver: request timed out, possibly due to connection lost",
                    );
                }
            }
        }
        Err(last)
    }

    /// Forgets the client of `leader` after a connection failure, so the next call
    /// reconnects; passes the outcome through.
    pub(super) async fn forget_on_failure<T>(
        &self,
        leader: NodeId,
        r: Result<T, Status>,
    ) -> Result<T, Status> {
        if let Err(e) = &r {
            if matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Unknown) {
                self.clients.lock().await.remove(&leader);
            }
        }
        r
    }

    pub async fn renew(&self, leader: NodeId, urls: &[String], id: i64) -> Result<i64, Status> {
        let mut c = self.client(leader, urls).await?;
        let req = LeaseRenewRequest {
            cluster_id: self.cfg.cluster_id,
            from: self.cfg.local_id,
            id,
        };
        let r = c.lease_renew(req).await.map(|r| r.into_inner().ttl);
        self.forget_on_failure(leader, r).await
    }

    pub async fn time_to_live(
        &self,
        leader: NodeId,
        urls: &[String],
        id: i64,
        keys: bool,
    ) -> Result<TimeToLive, Status> {
        let mut c = self.client(leader, urls).await?;
        let req = LeaseTtlRequest {
            cluster_id: self.cfg.cluster_id,
            from: self.cfg.local_id,
            id,
            keys,
        };
        let r = c.lease_time_to_live(req).await.map(|r| {
            let r = r.into_inner();
            TimeToLive {
                ttl: r.ttl,
                granted_ttl: r.granted_ttl,
                keys: r.keys,
            }
        });
        self.forget_on_failure(leader, r).await
    }
}
