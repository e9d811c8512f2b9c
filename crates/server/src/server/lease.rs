//! The Lease API of the member: grant and revoke go through Raft; keep-alive,
//! time-to-live and the lease list are answered by the leader's lease clock (a
//! follower forwards them to the leader over the peer protocol); the keys attached to
//! a lease are asked of the apply thread, which owns the lease table.
//!
//! etcd's answers are kept: a keep-alive for an unknown or expired lease answers
//! TTL 0 (not an error); time-to-live for an unknown lease answers TTL -1; a grant
//! with ID 0 gets an ID from the cluster-unique request ID generator (positive).

use std::sync::mpsc::Sender;
use std::time::Duration;

use bytes::Bytes;
use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::skiffpb::internal_request::Request as Req;
use tokio::sync::oneshot;

use super::EtcdServer;
use crate::facade::{ApiResult, LeaseApi};
use crate::inputs::{ApplyInput, ApplyOutput};
use crate::lease::ClockHandle;

/// The leader's side of lease requests: its clock, and the apply thread for keys.
/// Serves this member's own requests and those forwarded by followers.
#[derive(Clone)]
pub struct LeaderLeases {
    pub clock: ClockHandle,
    pub apply: Sender<ApplyInput>,
    pub timeout: Duration,
}

impl LeaderLeases {
    /// The keys attached to lease `id`, as of everything applied before the question.
    async fn keys(&self, id: i64) -> Result<Vec<Bytes>, EtcdError> {
        let (tx, rx) = oneshot::channel();
        self.apply
            .send(ApplyInput::LeaseKeys { id, reply: tx })
            .map_err(|_| EtcdError::Stopped)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(keys)) => Ok(keys),
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::Timeout),
        }
    }

    /// (remaining TTL or -1, granted TTL, keys when asked); `not leader` on a follower.
    pub async fn time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<(i64, i64, Vec<Bytes>), EtcdError> {
        match self.clock.time_to_live(id).await? {
            None => Ok((-1, 0, Vec::new())),
            Some((ttl, granted)) => {
                let keys = if keys {
                    self.keys(id).await?
                } else {
                    Vec::new()
                };
                Ok((ttl, granted, keys))
            }
        }
    }
}

#[tonic::async_trait]
impl crate::peer::LeaseHandler for LeaderLeases {
    async fn renew(&self, id: i64) -> Result<i64, tonic::Status> {
        Ok(self.clock.renew(id).await?)
    }

    async fn time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<(i64, i64, Vec<Bytes>), tonic::Status> {
        Ok(LeaderLeases::time_to_live(self, id, keys).await?)
    }
}

impl EtcdServer {
    fn leader_leases(&self) -> LeaderLeases {
        LeaderLeases {
            clock: self.lease_clock.clone(),
            apply: self.apply.clone(),
            timeout: self.request_timeout,
        }
    }
}

#[tonic::async_trait]
impl LeaseApi for EtcdServer {
    async fn lease_grant(
        &self,
        mut req: pb::LeaseGrantRequest,
    ) -> ApiResult<pb::LeaseGrantResponse> {
        while req.id == 0 {
            // Positive and unique in the cluster.
            req.id = (self.ids.next_id() & (i64::MAX as u64)) as i64;
        }
        self.propose_for(Req::LeaseGrant(req), |o| match o {
            ApplyOutput::LeaseGrant(g) => Some(g),
            _ => None,
        })
        .await
    }

    async fn lease_revoke(
        &self,
        req: pb::LeaseRevokeRequest,
    ) -> ApiResult<pb::LeaseRevokeResponse> {
        self.propose_for(Req::LeaseRevoke(req), |o| match o {
            ApplyOutput::LeaseRevoke(r) => Some(r),
            _ => None,
        })
        .await
    }

    async fn lease_keep_alive(
        &self,
        req: pb::LeaseKeepAliveRequest,
    ) -> ApiResult<pb::LeaseKeepAliveResponse> {
        let ttl = match self.lease_clock.renew(req.id).await {
            Err(EtcdError::NotLeader) => {
                // Only the leader's clock tracks deadlines.
                let (leader, urls) = self.remote_leader()?;
                self.forwarder
                    .renew(leader, &urls, req.id)
                    .await
                    .map_err(|s| EtcdError::from_status(&s).unwrap_or(EtcdError::Timeout))?
            }
            other => other?,
        };
        Ok(pb::LeaseKeepAliveResponse {
            header: self.header(),
            id: req.id,
            ttl,
        })
    }

    async fn lease_time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> ApiResult<pb::LeaseTimeToLiveResponse> {
        let (ttl, granted_ttl, keys) =
            match self.leader_leases().time_to_live(req.id, req.keys).await {
                Err(EtcdError::NotLeader) => {
                    let (leader, urls) = self.remote_leader()?;
                    let r = self
                        .forwarder
                        .time_to_live(leader, &urls, req.id, req.keys)
                        .await
                        .map_err(|s| EtcdError::from_status(&s).unwrap_or(EtcdError::Timeout))?;
                    (r.ttl, r.granted_ttl, r.keys)
                }
                other => other?,
            };
        Ok(pb::LeaseTimeToLiveResponse {
            header: self.header(),
            id: req.id,
            ttl,
            granted_ttl,
            keys,
        })
    }

    async fn lease_leases(
        &self,
        _req: pb::LeaseLeasesRequest,
    ) -> ApiResult<pb::LeaseLeasesResponse> {
        let leases = self
            .lease_clock
            .ids()
            .await?
            .into_iter()
            .map(|id| pb::LeaseStatus { id })
            .collect();
        Ok(pb::LeaseLeasesResponse {
            header: self.header(),
            leases,
        })
    }
}
