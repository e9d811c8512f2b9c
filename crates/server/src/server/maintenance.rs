//! The Maintenance API of the member: status, hashes, alarms, and the `/health`
//! check. `Status.version` is the etcd API version Skiff implements (clients check
//! it); `dbSize` is the backend file's size, `dbSizeInUse` the bytes of its pages in
//! use (recounted while writes are idle, see `skiff_storage::backend`); `raftIndex` the commit index and
//! `raftAppliedIndex` the applied one; `errors` lists raised alarms. MoveLeader hands
//! leadership over with Raft's leader transfer, as etcd does. Snapshot streams the
//! backend in etcd's file format (`server::snapshot`). Defragment rebuilds the backend
//! file online (`skiff_storage::backend` defrag). Downgrade is not built yet and
//! answers `Unimplemented` naming the call, rather than
//! pretending to succeed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::skiffpb::internal_request::Request as Req;

use super::EtcdServer;
use crate::convert;
use crate::facade::{ApiResult, MaintenanceApi, SnapshotStream, Unhealthy};
use crate::inputs::{ApplyOutput, NodeInput};
use crate::version::ETCD_SERVER_VERSION;

/// Runs blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EtcdError> + Send + 'static,
) -> Result<T, EtcdError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(EtcdError::Stopped))
}

#[tonic::async_trait]
impl MaintenanceApi for EtcdServer {
    async fn alarm(&self, req: pb::AlarmRequest) -> ApiResult<pb::AlarmResponse> {
        if req.action == pb::alarm_request::AlarmAction::Get as i32 {
            return Ok(pb::AlarmResponse {
                header: self.header(),
                alarms: self.alarms.borrow().get(req.alarm),
            });
        }
        self.propose_for(Req::Alarm(req), |o| match o {
            ApplyOutput::Alarm(a) => Some(a),
            _ => None,
        })
        .await
    }

    async fn status(&self, _: pb::StatusRequest) -> ApiResult<pb::StatusResponse> {
        let db_size = self.store.backend().size_bytes().unwrap_or(0) as i64;
        Ok(pb::StatusResponse {
            header: self.header(),
            version: ETCD_SERVER_VERSION.to_string(),
            db_size,
            leader: self.leader(),
            raft_index: self.raft.commit.load(Ordering::Acquire),
            raft_term: self.term(),
            raft_applied_index: self.applied.get(),
            errors: self.alarms.borrow().describe(),
            db_size_in_use: (self.store.backend().in_use_bytes() as i64).min(db_size),
            is_learner: self.is_learner(),
            storage_version: String::new(),
            db_size_quota: self
                .config
                .quota_backend_bytes
                .map(|q| q as i64)
                .unwrap_or(0),
            downgrade_info: None,
        })
    }

    /// Rebuilds this member's backend file while writes continue (they wait only for
    /// the swap); local to the member, as etcd's.
    async fn defragment(&self, _: pb::DefragmentRequest) -> ApiResult<pb::DefragmentResponse> {
        let store = self.store.clone();
        blocking(move || {
            store.defragment().map_err(|e| {
                tracing::warn!(error = %e, "defragment failed");
                convert::store_error(&e)
            })
        })
        .await?;
        Ok(pb::DefragmentResponse {
            header: self.header(),
        })
    }

    async fn hash(&self, _: pb::HashRequest) -> ApiResult<pb::HashResponse> {
        let store = self.store.clone();
        let (hash, revision) =
            blocking(move || store.hash().map_err(|e| convert::store_error(&e))).await?;
        let header = self.header().map(|h| pb::ResponseHeader { revision, ..h });
        Ok(pb::HashResponse { header, hash })
    }

    async fn hash_kv(&self, req: pb::HashKvRequest) -> ApiResult<pb::HashKvResponse> {
        let store = self.store.clone();
        let rev = req.revision;
        let h = blocking(move || store.hash_kv(rev).map_err(|e| convert::store_error(&e))).await?;
        let header = self.header().map(|hd| pb::ResponseHeader {
            revision: h.revision,
            ..hd
        });
        Ok(pb::HashKvResponse {
            header,
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        })
    }

    /// The backend as an etcd `db` file, then its SHA-256 (see `server::snapshot`).
    async fn snapshot(&self, _: pb::SnapshotRequest) -> ApiResult<SnapshotStream> {
        super::snapshot::stream(self.store.clone()).await
    }

    /// etcd's MoveLeader: only the leader accepts it; the target must be a voting
    /// member; answered once the target leads, or `leader transfer took too long`.
    async fn move_leader(&self, req: pb::MoveLeaderRequest) -> ApiResult<pb::MoveLeaderResponse> {
        if self.leader() != self.member_id {
            return Err(EtcdError::NotLeader);
        }
        let target = req.target_id;
        let voter = self
            .members_now()
            .iter()
            .any(|m| m.id == target && !m.is_learner);
        if !voter {
            return Err(EtcdError::BadLeaderTransferee);
        }
        if target != self.member_id {
            let mut leader = self.raft.leader.subscribe();
            self.node
                .send(NodeInput::TransferLeader(target))
                .map_err(|_| EtcdError::Stopped)?;
            let moved = tokio::time::timeout(self.request_timeout, async {
                leader.wait_for(|l| *l == target).await.is_ok()
            })
            .await;
            match moved {
                Ok(true) => {}
                Ok(false) => return Err(EtcdError::Stopped),
                Err(_) => return Err(EtcdError::TimeoutLeaderTransfer),
            }
        }
        Ok(pb::MoveLeaderResponse {
            header: self.header(),
        })
    }

    async fn downgrade(&self, _: pb::DowngradeRequest) -> ApiResult<pb::DowngradeResponse> {
        Err(EtcdError::UnsupportedDowngrade)
    }

    async fn health(&self, serializable: bool) -> Result<(), Unhealthy> {
        if let Some(first) = self.alarms.borrow().describe().into_iter().next() {
            return Err(Unhealthy::Alarm(first));
        }
        if self.leader() == 0 {
            return Err(Unhealthy::NoLeader);
        }
        if serializable {
            return Ok(());
        }
        // Like etcd: a request must make it through Raft within a second.
        let noop = Req::Noop(skiff_proto::skiffpb::Noop {});
        match tokio::time::timeout(Duration::from_secs(1), self.propose(noop)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Unhealthy::CommitFailed(e.to_string())),
            Err(_) => Err(Unhealthy::CommitFailed("timed out".to_string())),
        }
    }
}
