//! The Maintenance calls on the gateway (`/v3/maintenance/status`, `alarm`, `hash`,
//! `defragment`, `transfer-leadership`, and the `snapshot` stream): etcd's JSON for
//! their messages, each call handed to the facade.

use skiff_proto::etcdserverpb as pb;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use tokio_stream::StreamExt;

use super::decode::{Decode, DecodeError, EnumDef, Fields};
use super::encode::{Encode, Obj};
use super::reply;
use super::Gw;
use crate::facade::Facade;

type Result<T> = std::result::Result<T, DecodeError>;

const ALARM_ACTION: EnumDef = EnumDef {
    go_type: "etcdserverpb.AlarmRequest_AlarmAction",
    names: &["GET", "ACTIVATE", "DEACTIVATE"],
};
const ALARM_TYPE: EnumDef = EnumDef {
    go_type: "etcdserverpb.AlarmType",
    names: &["NONE", "NOSPACE", "CORRUPT"],
};

unary_handlers! {
    alarm => alarm,
    status => status,
    defragment => defragment,
    hash => hash,
    move_leader => move_leader,
}

/// `/v3/maintenance/snapshot`: one `{"result":{...}}` line per chunk; an error before
/// the first chunk is the HTTP status of its code with grpc-gateway's error chunk.
pub(super) async fn snapshot<F: Facade>(State(gw): State<Gw<F>>, body: Body) -> Response {
    let req: pb::SnapshotRequest = match super::request(&gw, body).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let mut chunks = match gw.facade.snapshot(req).await {
        Ok(chunks) => chunks,
        Err(e) => return reply::stream_error(e.code(), e.message()),
    };
    let first = match chunks.next().await {
        None => return reply::stream().1,
        Some(Err(e)) => return reply::stream_error(e.code(), e.message()),
        Some(Ok(first)) => first,
    };
    let (tx, resp) = reply::stream();
    tokio::spawn(async move {
        let mut next: Option<crate::facade::ApiResult<pb::SnapshotResponse>> = Some(Ok(first));
        while let Some(item) = next {
            let (chunk, stop) = match item {
                Ok(c) => (reply::result_line(&c), false),
                Err(e) => (reply::stream_error_chunk(e.code(), e.message()), true),
            };
            if tx.send(Ok(chunk)).await.is_err() || stop {
                return;
            }
            next = chunks.next().await;
        }
    });
    resp
}

empty_request!(
    StatusRequest,
    DefragmentRequest,
    HashRequest,
    SnapshotRequest
);

header_only!(DefragmentResponse, MoveLeaderResponse);

impl Decode for pb::AlarmRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::AlarmRequest {
            action: f.enumeration("action", &ALARM_ACTION)?,
            member_id: f.u64("memberID")?,
            alarm: f.enumeration("alarm", &ALARM_TYPE)?,
        })
    }
}

impl Encode for pb::AlarmMember {
    fn encode(&self, o: &mut Obj) {
        o.u64("memberID", self.member_id);
        o.enumeration("alarm", self.alarm, ALARM_TYPE.names);
    }
}

impl Encode for pb::AlarmResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.messages("alarms", &self.alarms);
    }
}

impl Encode for pb::DowngradeInfo {
    fn encode(&self, o: &mut Obj) {
        o.bool("enabled", self.enabled);
        o.string("targetVersion", &self.target_version);
    }
}

impl Encode for pb::StatusResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.string("version", &self.version);
        o.i64("dbSize", self.db_size);
        o.u64("leader", self.leader);
        o.u64("raftIndex", self.raft_index);
        o.u64("raftTerm", self.raft_term);
        o.u64("raftAppliedIndex", self.raft_applied_index);
        o.strings("errors", &self.errors);
        o.i64("dbSizeInUse", self.db_size_in_use);
        o.bool("isLearner", self.is_learner);
        o.string("storageVersion", &self.storage_version);
        o.i64("dbSizeQuota", self.db_size_quota);
        o.message("downgradeInfo", self.downgrade_info.as_ref());
    }
}

impl Encode for pb::HashResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.u32("hash", self.hash);
    }
}

impl Encode for pb::SnapshotResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.u64("remaining_bytes", self.remaining_bytes);
        o.bytes("blob", &self.blob);
        o.string("version", &self.version);
    }
}

impl Decode for pb::MoveLeaderRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::MoveLeaderRequest {
            target_id: f.u64("targetID")?,
        })
    }
}
