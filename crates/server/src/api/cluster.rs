//! The Cluster service (`etcdserverpb.Cluster`): the member list, sorted by ID as
//! etcd lists it. Changing membership (add, remove, update, promote) belongs to the
//! multi-member work and is answered `Unimplemented` until then, so a client learns
//! the truth instead of a silent no-op.

use std::sync::Arc;

use skiff_proto::etcdserverpb::{
    cluster_server::Cluster, Member, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use crate::server::EtcdServer;

pub struct ClusterService {
    server: Arc<EtcdServer>,
}

impl ClusterService {
    pub fn new(server: Arc<EtcdServer>) -> ClusterService {
        ClusterService { server }
    }
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "skiff: {what} is not supported yet (single-member release)"
    ))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(not_yet("member add"))
    }

    async fn member_remove(
        &self,
        _: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(not_yet("member remove"))
    }

    async fn member_update(
        &self,
        _: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(not_yet("member update"))
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let s = &self.server;
        let mut members: Vec<Member> = s
            .members
            .read()
            .map(|m| m.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                // This member's name and client URLs are known locally; a peer's are
                // published by the peer once it serves.
                let own = m.id == s.member_id;
                Member {
                    id: m.id,
                    name: if own { s.config.name.clone() } else { m.name },
                    peer_ur_ls: m.peer_urls,
                    client_ur_ls: if own {
                        s.config
                            .advertise_client_urls
                            .iter()
                            .map(|u| u.to_string())
                            .collect()
                    } else {
                        m.client_urls
                    },
                    is_learner: m.is_learner,
                }
            })
            .collect();
        members.sort_by_key(|m| m.id);
        // Membership calls do not touch the key-value store: no revision, as etcd.
        let header = s
            .header()
            .map(|h| skiff_proto::etcdserverpb::ResponseHeader { revision: 0, ..h });
        Ok(Response::new(MemberListResponse { header, members }))
    }

    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(not_yet("member promote"))
    }
}
