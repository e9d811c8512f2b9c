//! The Lease API of the member: grant and revoke go through Raft; keep-alive,
//! time-to-live and the lease list are answered by the leader's lease clock (a
//! follower forwards them to the leader over the peer protocol); the keys attached to
//! a lease are asked of the apply thread, which owns the lease table.
//!
//! A lease the leader's clock does not know is asked about again once the leader has
//! applied everything committed, so a keep-alive right after a grant answered by a
//! follower finds the lease (see [`LeaderLeases::caught_up`]).
//!
//! etcd's answers are kept: a keep-alive for an unknown or expired lease answers
//! TTL 0 (not an error); time-to-live for an unknown lease answers TTL -1; a grant
//! with ID 0 gets an ID from the cluster-unique request ID generator (positive).

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::skiffpb::internal_request::Request as Req;
use tokio::sync::oneshot;

use super::EtcdServer;
use crate::facade::{ApiResult, LeaseApi};
use crate::inputs::{ApplyInput, ApplyOutput, RaftStatus};
use crate::lease::ClockHandle;
use crate::wait::AppliedIndex;

/// The leader's side of lease requests: its clock, and the apply thread for keys.
/// Serves this member's own requests and those forwarded by followers.
#[derive(Clone)]
pub struct LeaderLeases {
    pub clock: ClockHandle,
    pub apply: Sender<ApplyInput>,
    pub timeout: Duration,
    /// Raft's commit index and this member's applied index (see [`Self::caught_up`]).
    pub raft: Arc<RaftStatus>,
    pub applied: Arc<AppliedIndex>,
}

impl LeaderLeases {
    /// Waits until this member has applied everything it knows to be committed. A
    /// grant sent to a follower is answered there once the follower applied it, and the
    /// leader's apply thread may not have got that far yet: a keep-alive or a
    /// time-to-live sent right after the grant's answer would find no such lease at
    /// the leader (a keep-alive answered TTL 0, "lease not found" to etcd's clients).
    /// A follower knows an entry is committed only from the leader, so the leader's
    /// commit index covers every grant any member has answered.
    async fn caught_up(&self) -> Result<(), EtcdError> {
        let commit = self.raft.commit.load(Ordering::Acquire);
        tokio::time::timeout(self.timeout, self.applied.wait_for(commit))
            .await
            .map_err(|_| EtcdError::Timeout)
    }

    /// A keep-alive at the leader: the TTL, or 0 for a lease that does not exist (or
    /// has expired) once everything committed is applied here.
    pub async fn renew(&self, id: i64) -> Result<i64, EtcdError> {
        match self.clock.renew(id).await? {
            0 => {
                self.caught_up().await?;
                self.clock.renew(id).await
            }
            ttl => Ok(ttl),
        }
    }

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
        let mut known = self.clock.time_to_live(id).await?;
        if known.is_none() {
            self.caught_up().await?;
            known = self.clock.time_to_live(id).await?;
        }
        match known {
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
        Ok(LeaderLeases::renew(self, id).await?)
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
    /// The leader's side of lease requests, for this member's requests and followers'.
    pub(crate) fn leader_leases(&self) -> LeaderLeases {
        LeaderLeases {
            clock: self.lease_clock.clone(),
            apply: self.apply.clone(),
            timeout: self.request_timeout,
            raft: self.raft.clone(),
            applied: self.applied.clone(),
        }
    }
}

impl EtcdServer {
    /// Renews lease `id` at the leader, from a follower.
    async fn forward_renew(&self, id: i64) -> Result<i64, EtcdError> {
        let (leader, urls) = self.remote_leader()?;
        self.forwarder
            .renew(leader, &urls, id)
            .await
            .map_err(|s| EtcdError::from_status(&s).unwrap_or(EtcdError::Timeout))
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
        // Only the leader's clock tracks deadlines. A member that knows another leads
        // forwards at once, without asking its own clock first.
        let leader = self.leader();
        let ttl = if leader != 0 && leader != self.member_id {
            self.forward_renew(req.id).await?
        } else {
            match self.leader_leases().renew(req.id).await {
                Err(EtcdError::NotLeader) => self.forward_renew(req.id).await?,
                other => other?,
            }
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
