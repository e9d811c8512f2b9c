//! Maintenance calls: status, alarms, hashes, defragment, move-leader, snapshot.
//! Status, hashes and alarm listing are reads (retried); per-member calls are made on
//! a [`Client::pinned`] view so they reach the member asked about.

use skiff_proto::etcdserverpb::alarm_request::AlarmAction;
use skiff_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use skiff_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};

use crate::{Client, Error, Result, Safety};

impl Client {
    /// The status of the member answering (pin the client to choose which).
    pub async fn status(&self) -> Result<StatusResponse> {
        self.unary(Safety::Idempotent, |ch| async move {
            MaintenanceClient::new(ch).status(StatusRequest {}).await
        })
        .await
    }

    /// The active alarms.
    pub async fn alarm_list(&self) -> Result<AlarmResponse> {
        let req = AlarmRequest {
            action: AlarmAction::Get as i32,
            member_id: 0,
            alarm: 0,
        };
        self.unary(Safety::Idempotent, |ch| async move {
            MaintenanceClient::new(ch).alarm(req).await
        })
        .await
    }

    /// Disarms `alarm` (a zero member ID and alarm type disarm every alarm).
    pub async fn alarm_disarm(&self, alarm: AlarmMember) -> Result<AlarmResponse> {
        let req = AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: alarm.member_id,
            alarm: alarm.alarm,
        };
        self.unary(Safety::NotIdempotent, |ch| async move {
            MaintenanceClient::new(ch).alarm(req).await
        })
        .await
    }

    /// The hash of the answering member's whole backend.
    pub async fn hash(&self) -> Result<HashResponse> {
        self.unary(Safety::Idempotent, |ch| async move {
            MaintenanceClient::new(ch).hash(HashRequest {}).await
        })
        .await
    }

    /// The hash of the answering member's key history up to `revision` (0: all).
    pub async fn hash_kv(&self, revision: i64) -> Result<HashKvResponse> {
        self.unary(Safety::Idempotent, |ch| async move {
            MaintenanceClient::new(ch)
                .hash_kv(HashKvRequest { revision })
                .await
        })
        .await
    }

    /// Defragments the answering member's backend (pin the client to choose which).
    pub async fn defragment(&self) -> Result<DefragmentResponse> {
        self.unary(Safety::NotIdempotent, |ch| async move {
            MaintenanceClient::new(ch)
                .defragment(DefragmentRequest {})
                .await
        })
        .await
    }

    /// Asks the leader to hand leadership to `target_id` (must be sent to the leader).
    pub async fn move_leader(&self, target_id: u64) -> Result<MoveLeaderResponse> {
        self.unary(Safety::NotIdempotent, |ch| async move {
            MaintenanceClient::new(ch)
                .move_leader(MoveLeaderRequest { target_id })
                .await
        })
        .await
    }

    /// Streams a snapshot of the answering member's backend; the caller writes the
    /// blobs in order. Not retried mid-stream (a partial snapshot is an error).
    pub async fn snapshot(&self) -> Result<tonic::Streaming<SnapshotResponse>> {
        self.pool.ensure_token(self.deadline()).await?;
        let i = self.pin.unwrap_or_else(|| self.pool.pick(None));
        let mut c = MaintenanceClient::new(self.pool.members[i].channel.clone());
        c.snapshot(SnapshotRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::from_status)
    }
}
