//! The Lease service (`etcdserverpb.Lease`): grant and revoke go through Raft;
//! keep-alive, time-to-live and the lease list are answered by the leader's lessor.
//!
//! etcd's answers are kept: a keep-alive for an unknown or expired lease answers
//! TTL 0 (not an error); time-to-live for an unknown lease answers TTL -1; a grant
//! with ID 0 gets an ID from the cluster-unique request ID generator (positive).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use skiff_proto::etcdserverpb::{
    lease_server::Lease, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use skiff_proto::skiffpb::internal_request::Request as Req;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::apply::ApplyOutput;
use crate::server::EtcdServer;
use skiff_api::validate;
use skiff_api::EtcdError;

pub struct LeaseService {
    server: Arc<EtcdServer>,
}

impl LeaseService {
    pub fn new(server: Arc<EtcdServer>) -> LeaseService {
        LeaseService { server }
    }
}

fn lock(s: &EtcdServer) -> std::sync::MutexGuard<'_, crate::lessor::Lessor> {
    s.lessor.lock().unwrap_or_else(|p| p.into_inner())
}

/// Renews lease `id`; etcd's keep-alive answer (TTL 0 when the lease is gone). A
/// follower forwards the renewal to the leader, whose lessor tracks expiry.
async fn keep_alive(server: &EtcdServer, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
    let local = lock(server).keep_alive(id, Instant::now());
    let ttl = match local {
        Ok(ttl) => ttl,
        Err(EtcdError::NotLeader) => {
            let (leader, urls) = server.remote_leader()?;
            server.forwarder.renew(leader, &urls, id).await?
        }
        Err(e) => return Err(e.into()),
    };
    Ok(LeaseKeepAliveResponse {
        header: server.header(),
        id,
        ttl,
    })
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut req = req.into_inner();
        validate::check_lease_ttl(req.ttl)?;
        while req.id == 0 {
            // Positive and unique in the cluster.
            req.id = (self.server.ids.next_id() & (i64::MAX as u64)) as i64;
        }
        let r = self.server.propose(Req::LeaseGrant(req)).await;
        Ok(Response::new(EtcdServer::expect(r, |o| match o {
            ApplyOutput::LeaseGrant(g) => Some(g),
            _ => None,
        })?))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let r = self
            .server
            .propose(Req::LeaseRevoke(req.into_inner()))
            .await;
        Ok(Response::new(EtcdServer::expect(r, |o| match o {
            ApplyOutput::LeaseRevoke(g) => Some(g),
            _ => None,
        })?))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut incoming = req.into_inner();
        let server = self.server.clone();
        let out = async_stream(move |tx| async move {
            while let Some(msg) = incoming.next().await {
                let reply = match msg {
                    Ok(r) => keep_alive(&server, r.id).await,
                    Err(status) => Err(status),
                };
                let stop = reply.is_err();
                if tx.send(reply).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        if !lock(&self.server).is_primary() {
            // Only the leader's lessor knows how long a lease has left.
            if let Ok((leader, urls)) = self.server.remote_leader() {
                let r = self
                    .server
                    .forwarder
                    .time_to_live(leader, &urls, req.id, req.keys)
                    .await?;
                return Ok(Response::new(LeaseTimeToLiveResponse {
                    header: self.server.header(),
                    id: req.id,
                    ttl: r.ttl,
                    granted_ttl: r.granted_ttl,
                    keys: r.keys,
                }));
            }
        }
        let (ttl, granted_ttl, keys) =
            lock(&self.server).time_to_live(req.id, req.keys, Instant::now());
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: self.server.header(),
            id: req.id,
            ttl,
            granted_ttl,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = lock(&self.server)
            .ids()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: self.server.header(),
            leases,
        }))
    }
}

/// A response stream fed by a task through a small channel (backpressure: the task
/// waits while the client is slow).
fn async_stream<T, F, Fut>(f: F) -> impl Stream<Item = T> + Send
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
