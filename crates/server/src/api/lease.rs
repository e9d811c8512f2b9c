//! The Lease service (`etcdserverpb.Lease`): each call handed to the facade; the
//! keep-alive stream answers each request in order and ends at the first error.

use std::pin::Pin;
use std::sync::Arc;

use skiff_proto::etcdserverpb::{
    lease_server::Lease, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::facade::{LeaseApi, WatchApi};

/// The gRPC Lease service over a facade.
pub struct LeaseService<F> {
    facade: Arc<F>,
}

impl<F: LeaseApi + WatchApi> LeaseService<F> {
    pub fn new(facade: Arc<F>) -> LeaseService<F> {
        LeaseService { facade }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<F: LeaseApi + WatchApi> Lease for LeaseService<F> {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        Ok(Response::new(
            self.facade.lease_grant(req.into_inner()).await?,
        ))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        Ok(Response::new(
            self.facade.lease_revoke(req.into_inner()).await?,
        ))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let require_leader = super::leader::requires_leader(req.metadata());
        let mut leader = self.facade.leader_changes();
        let mut incoming = req.into_inner();
        let facade = self.facade.clone();
        // Backpressure: the task waits while the client is slow to read.
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        // The stream's keep-alives are the caller's (the auth layer checks each).
        tokio::spawn(crate::facade::caller::inherit(async move {
            loop {
                let msg = tokio::select! {
                    msg = incoming.next() => msg,
                    _ = super::leader::leader_lost(&mut leader), if require_leader => {
                        // etcd ends hasleader streams when its member loses the leader.
                        let _ = tx.send(Err(super::leader::no_leader())).await;
                        break;
                    }
                };
                let Some(msg) = msg else { break };
                let reply = match msg {
                    Ok(r) => facade.lease_keep_alive(r).await.map_err(Status::from),
                    Err(status) => Err(status),
                };
                let stop = reply.is_err();
                if tx.send(reply).await.is_err() || stop {
                    break;
                }
            }
        }));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        Ok(Response::new(
            self.facade.lease_time_to_live(req.into_inner()).await?,
        ))
    }

    async fn lease_leases(
        &self,
        req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        Ok(Response::new(
            self.facade.lease_leases(req.into_inner()).await?,
        ))
    }
}
