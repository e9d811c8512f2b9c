//! The Cluster API of the member: the member list from the member table (persisted in
//! the backend, so names and client URLs of members that are down are kept), sorted
//! by ID as etcd lists it. Changing membership (add, remove, update, promote) is not
//! built yet and answers `Unimplemented` naming the call.

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;

use super::EtcdServer;
use crate::facade::{ApiResult, ClusterApi};

#[tonic::async_trait]
impl ClusterApi for EtcdServer {
    async fn member_add(&self, _: pb::MemberAddRequest) -> ApiResult<pb::MemberAddResponse> {
        Err(EtcdError::UnsupportedMemberAdd)
    }

    async fn member_remove(
        &self,
        _: pb::MemberRemoveRequest,
    ) -> ApiResult<pb::MemberRemoveResponse> {
        Err(EtcdError::UnsupportedMemberRemove)
    }

    async fn member_update(
        &self,
        _: pb::MemberUpdateRequest,
    ) -> ApiResult<pb::MemberUpdateResponse> {
        Err(EtcdError::UnsupportedMemberUpdate)
    }

    async fn member_list(&self, _: pb::MemberListRequest) -> ApiResult<pb::MemberListResponse> {
        let members = self
            .members_now()
            .iter()
            .map(|m| pb::Member {
                id: m.id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: m.client_urls.clone(),
                is_learner: m.is_learner,
            })
            .collect();
        // Membership calls do not touch the key-value store: no revision, as etcd.
        let header = self
            .header()
            .map(|h| pb::ResponseHeader { revision: 0, ..h });
        Ok(pb::MemberListResponse { header, members })
    }

    async fn member_promote(
        &self,
        _: pb::MemberPromoteRequest,
    ) -> ApiResult<pb::MemberPromoteResponse> {
        Err(EtcdError::UnsupportedMemberPromote)
    }
}
