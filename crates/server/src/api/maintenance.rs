//! The Maintenance service (`etcdserverpb.Maintenance`), each call handed to the
//! facade.

use std::pin::Pin;
use std::sync::Arc;

use skiff_proto::etcdserverpb::{
    maintenance_server::Maintenance, AlarmRequest, AlarmResponse, DefragmentRequest,
    DefragmentResponse, DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse,
    HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::facade::MaintenanceApi;

/// The gRPC Maintenance service over a facade.
pub struct MaintenanceService<F> {
    facade: Arc<F>,
}

impl<F: MaintenanceApi> MaintenanceService<F> {
    pub fn new(facade: Arc<F>) -> MaintenanceService<F> {
        MaintenanceService { facade }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<F: MaintenanceApi> Maintenance for MaintenanceService<F> {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        Ok(Response::new(self.facade.alarm(req.into_inner()).await?))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.facade.status(req.into_inner()).await?))
    }

    async fn defragment(
        &self,
        req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Ok(Response::new(
            self.facade.defragment(req.into_inner()).await?,
        ))
    }

    async fn hash(&self, req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Ok(Response::new(self.facade.hash(req.into_inner()).await?))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        Ok(Response::new(self.facade.hash_kv(req.into_inner()).await?))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let chunks = self.facade.snapshot(req.into_inner()).await?;
        Ok(Response::new(Box::pin(
            chunks.map(|c| c.map_err(Status::from)),
        )))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Ok(Response::new(
            self.facade.move_leader(req.into_inner()).await?,
        ))
    }

    async fn downgrade(
        &self,
        req: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Ok(Response::new(
            self.facade.downgrade(req.into_inner()).await?,
        ))
    }
}
