//! The Maintenance service (`etcdserverpb.Maintenance`): status, hashes, alarms and
//! the backend snapshot stream.
//!
//! `Status.version` is the etcd API version Skiff implements (clients check it);
//! `dbSize` is the backend file's size; `raftIndex` the commit index and
//! `raftAppliedIndex` the applied one; `errors` lists raised alarms. Defragment, MoveLeader and Downgrade are
//! answered `Unimplemented` until they exist, rather than pretending to succeed.

use std::pin::Pin;
use std::sync::Arc;

use skiff_proto::etcdserverpb::{
    alarm_request::AlarmAction, maintenance_server::Maintenance, AlarmRequest, AlarmResponse,
    DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::apply::ApplyOutput;
use crate::convert;
use crate::server::EtcdServer;
use crate::version::ETCD_SERVER_VERSION;
use skiff_api::EtcdError;
use skiff_proto::skiffpb::internal_request::Request as Req;

pub struct MaintenanceService {
    server: Arc<EtcdServer>,
}

impl MaintenanceService {
    pub fn new(server: Arc<EtcdServer>) -> MaintenanceService {
        MaintenanceService { server }
    }
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("skiff: {what} is not supported yet"))
}

/// Runs blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EtcdError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Status::from),
        Err(_) => Err(EtcdError::Stopped.into()),
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let req = req.into_inner();
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {
                let alarms = self
                    .server
                    .alarms
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(req.alarm);
                Ok(Response::new(AlarmResponse {
                    header: self.server.header(),
                    alarms,
                }))
            }
            _ => {
                let r = self.server.propose(Req::Alarm(req)).await;
                Ok(Response::new(EtcdServer::expect(r, |o| match o {
                    ApplyOutput::Alarm(a) => Some(a),
                    _ => None,
                })?))
            }
        }
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let s = &self.server;
        let db_size = std::fs::metadata(s.store.backend().path())
            .map(|m| m.len() as i64)
            .unwrap_or(0);
        Ok(Response::new(StatusResponse {
            header: s.header(),
            version: ETCD_SERVER_VERSION.to_string(),
            db_size,
            leader: s.leader(),
            raft_index: s.raft.commit.load(std::sync::atomic::Ordering::Acquire),
            raft_term: s.term(),
            raft_applied_index: s.applied.get(),
            errors: s
                .alarms
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .describe(),
            db_size_in_use: db_size,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: s.config.quota_backend_bytes.map(|q| q as i64).unwrap_or(0),
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(not_yet("defragment"))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let store = self.server.store.clone();
        let (hash, revision) =
            blocking(move || store.hash().map_err(|e| convert::store_error(&e))).await?;
        let mut header = self.server.header();
        if let Some(h) = header.as_mut() {
            h.revision = revision;
        }
        Ok(Response::new(HashResponse { header, hash }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let rev = req.into_inner().revision;
        let store = self.server.store.clone();
        let h = blocking(move || store.hash_kv(rev).map_err(|e| convert::store_error(&e))).await?;
        let mut header = self.server.header();
        if let Some(hd) = header.as_mut() {
            hd.revision = h.revision;
        }
        Ok(Response::new(HashKvResponse {
            header,
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(not_yet("snapshot save"))
    }

    async fn move_leader(
        &self,
        _: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(not_yet("move leader"))
    }

    async fn downgrade(
        &self,
        _: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("downgrade"))
    }
}
