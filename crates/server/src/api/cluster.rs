//! The Cluster service (`etcdserverpb.Cluster`), each call handed to the facade.

use std::sync::Arc;

use skiff_proto::etcdserverpb::{
    cluster_server::Cluster, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use crate::facade::ClusterApi;

/// The gRPC Cluster service over a facade.
pub struct ClusterService<F> {
    facade: Arc<F>,
}

impl<F: ClusterApi> ClusterService<F> {
    pub fn new(facade: Arc<F>) -> ClusterService<F> {
        ClusterService { facade }
    }
}

#[tonic::async_trait]
impl<F: ClusterApi> Cluster for ClusterService<F> {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Ok(Response::new(
            self.facade.member_add(req.into_inner()).await?,
        ))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Ok(Response::new(
            self.facade.member_remove(req.into_inner()).await?,
        ))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Ok(Response::new(
            self.facade.member_update(req.into_inner()).await?,
        ))
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(
            self.facade.member_list(req.into_inner()).await?,
        ))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Ok(Response::new(
            self.facade.member_promote(req.into_inner()).await?,
        ))
    }
}
