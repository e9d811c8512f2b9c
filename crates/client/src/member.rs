//! Cluster calls: member list (a read, retried) and member add / remove / update /
//! promote (writes: retried only when provably not sent). A Skiff without membership
//! changes answers those with `Unimplemented` naming the call.

use skiff_proto::etcdserverpb::cluster_client::ClusterClient;
use skiff_proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};

use crate::{Client, Result, Safety};

impl Client {
    /// The members of the cluster (`linearizable`: through the leader, as etcd 3.5+).
    pub async fn member_list(&self, linearizable: bool) -> Result<MemberListResponse> {
        let req = MemberListRequest { linearizable };
        self.unary(Safety::Idempotent, |ch| async move {
            ClusterClient::new(ch).member_list(req).await
        })
        .await
    }

    /// Adds a member with `peer_urls` (as a learner if `is_learner`).
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<MemberAddResponse> {
        let req = MemberAddRequest {
            peer_ur_ls: peer_urls,
            is_learner,
        };
        self.unary(Safety::NotIdempotent, |ch| {
            let req = req.clone();
            async move { ClusterClient::new(ch).member_add(req).await }
        })
        .await
    }

    /// Removes member `id`.
    pub async fn member_remove(&self, id: u64) -> Result<MemberRemoveResponse> {
        let req = MemberRemoveRequest { id };
        self.unary(Safety::NotIdempotent, |ch| async move {
            ClusterClient::new(ch).member_remove(req).await
        })
        .await
    }

    /// Replaces member `id`'s peer URLs.
    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<MemberUpdateResponse> {
        let req = MemberUpdateRequest {
            id,
            peer_ur_ls: peer_urls,
        };
        self.unary(Safety::NotIdempotent, |ch| {
            let req = req.clone();
            async move { ClusterClient::new(ch).member_update(req).await }
        })
        .await
    }

    /// Promotes learner `id` to a voting member.
    pub async fn member_promote(&self, id: u64) -> Result<MemberPromoteResponse> {
        let req = MemberPromoteRequest { id };
        self.unary(Safety::NotIdempotent, |ch| async move {
            ClusterClient::new(ch).member_promote(req).await
        })
        .await
    }
}
