//! Membership over the peer protocol: what a new member asks its peers to learn the
//! cluster it joins (`Members`, etcd's `GET /members` on the peer URLs), a follower's
//! `member promote` forwarded to the leader (only the leader knows whether a learner
//! is in sync, as in etcd), a follower about to remove the leader asking it to hand
//! leadership over first (`HandOff`), and how long each peer's stream has been up (etcd's
//! `ActiveSince`, which its reconfiguration checks read).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use skiff_api::EtcdError;
use skiff_proto::skiffpb::peer_client::PeerClient;
use skiff_proto::skiffpb::{
    HandOffRequest, MemberPromoteRequest, MemberRecord, MembersRequest, MembersResponse,
};
use skiff_raft::NodeId;

use super::{dial, read_lock, write_lock, Forwarder, PeerConfig, PeerError};

/// What the member answers to membership questions from peers.
#[tonic::async_trait]
pub trait MembershipHandler: Send + Sync {
    /// The cluster as this member knows it.
    fn members(&self) -> MembersResponse;
    /// Promotes learner `id` (asked of the leader by a follower).
    async fn promote(&self, id: u64) -> Result<Vec<MemberRecord>, EtcdError>;
    /// Hands leadership to a caught-up voter if this member leads (asked of the leader
    /// by a follower about to remove it); whether it moved.
    async fn hand_off(&self) -> bool;
}

/// Where the member installs its [`MembershipHandler`].
pub type MembershipSlot = Arc<std::sync::OnceLock<Arc<dyn MembershipHandler>>>;

/// Since when each peer's outbound stream has been up (absent: down).
#[derive(Clone, Default)]
pub struct PeerActivity(Arc<RwLock<HashMap<NodeId, Instant>>>);

impl PeerActivity {
    pub(super) fn up(&self, id: NodeId) {
        write_lock(&self.0).entry(id).or_insert_with(Instant::now);
    }

    pub(super) fn down(&self, id: NodeId) {
        write_lock(&self.0).remove(&id);
    }

    /// How many peers' streams are up.
    pub fn active(&self) -> usize {
        read_lock(&self.0).len()
    }

    /// Since when the stream to `id` is up, if it is.
    pub fn active_since(&self, id: NodeId) -> Option<Instant> {
        read_lock(&self.0).get(&id).copied()
    }
}

impl Forwarder {
    /// Asks the leader to promote learner `id`; etcd's error when it refuses.
    pub async fn promote(
        &self,
        leader: NodeId,
        urls: &[String],
        id: u64,
    ) -> Result<Vec<MemberRecord>, EtcdError> {
        let mut c = self
            .client(leader, urls)
            .await
            .map_err(|_| EtcdError::TimeoutDueToConnectionLost)?;
        let req = MemberPromoteRequest {
            cluster_id: self.cfg.cluster_id,
            from: self.cfg.local_id,
            member_id: id,
        };
        let r = c.member_promote(req).await;
        let r = self.forget_on_failure(leader, r).await.map_err(|s| {
            EtcdError::from_status(&s).unwrap_or(EtcdError::TimeoutDueToConnectionLost)
        })?;
        let r = r.into_inner();
        if r.error.is_empty() {
            return Ok(r.members);
        }
        Err(EtcdError::from_message(&r.error).unwrap_or(EtcdError::Timeout))
    }
}

impl Forwarder {
    /// Asks the leader to hand leadership over (before a follower removes it); whether
    /// it moved. A leader that cannot be reached is reported as not moved.
    pub async fn hand_off(&self, leader: NodeId, urls: &[String]) -> bool {
        let Ok(mut c) = self.client(leader, urls).await else {
            return false;
        };
        let req = HandOffRequest {
            cluster_id: self.cfg.cluster_id,
            from: self.cfg.local_id,
        };
        let r = c.hand_off(req).await;
        matches!(self.forget_on_failure(leader, r).await, Ok(r) if r.get_ref().moved)
    }
}

/// Asks the peers at `urls` (any of them) for the cluster, for a member joining it;
/// `cfg` says how to dial (its IDs are not used: nothing is checked yet).
pub async fn fetch_members(
    cfg: &PeerConfig,
    urls: &[String],
) -> Result<MembersResponse, PeerError> {
    let mut last = PeerError::NoUrls;
    for url in urls {
        let channel = match dial(cfg, url).await {
            Ok(c) => c,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let mut client = PeerClient::new(channel);
        match tokio::time::timeout(cfg.dial_timeout * 2, client.members(MembersRequest {})).await {
            Ok(Ok(r)) => return Ok(r.into_inner()),
            Ok(Err(s)) => last = PeerError::Refused(s),
            Err(_) => last = PeerError::Refused(tonic::Status::deadline_exceeded("no answer")),
        }
    }
    Err(last)
}
