//! Conversions between the wire types (`skiff_proto`) and the MVCC store's plain
//! mirrors of them (`skiff_storage::mvcc`). The storage crate keeps its own types so
//! it does not depend on protobuf; field meanings and enum numbers are the same, so
//! each conversion is a field-by-field copy. Unknown enum numbers (already refused by
//! validation for sort options) map to the default, as protobuf would.

use bytes::Bytes;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::mvccpb;
use skiff_storage::mvcc as st;

use skiff_api::EtcdError;

fn bytes(v: Vec<u8>) -> Bytes {
    Bytes::from(v)
}

pub fn kv_to_pb(kv: st::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: bytes(kv.key),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: bytes(kv.value),
        lease: kv.lease,
    }
}

pub fn event_to_pb(ev: st::Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match ev.kind {
            st::EventType::Put => mvccpb::event::EventType::Put as i32,
            st::EventType::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv_to_pb(ev.kv)),
        prev_kv: ev.prev_kv.map(kv_to_pb),
    }
}

/// The header with this member's identity and the term the request was served in.
pub fn header_to_pb(
    h: st::ResponseHeader,
    cluster_id: u64,
    member_id: u64,
    term: u64,
) -> pb::ResponseHeader {
    pb::ResponseHeader {
        cluster_id,
        member_id,
        revision: h.revision,
        raft_term: term,
    }
}

/// Fills response headers: the store knows the revision, the server the rest.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    pub cluster_id: u64,
    pub member_id: u64,
    pub term: u64,
}

impl Ids {
    pub fn header(&self, h: st::ResponseHeader) -> Option<pb::ResponseHeader> {
        Some(header_to_pb(h, self.cluster_id, self.member_id, self.term))
    }

    /// Responses nested in a txn carry only the revision, as etcd's do.
    fn nested(&self) -> Ids {
        Ids {
            cluster_id: 0,
            member_id: 0,
            term: 0,
        }
    }
}

pub fn range_from_pb(r: pb::RangeRequest) -> st::RangeRequest {
    st::RangeRequest {
        key: r.key.to_vec(),
        range_end: r.range_end.to_vec(),
        limit: r.limit,
        revision: r.revision,
        sort_order: match r.sort_order {
            1 => st::SortOrder::Ascend,
            2 => st::SortOrder::Descend,
            _ => st::SortOrder::None,
        },
        sort_target: match r.sort_target {
            1 => st::SortTarget::Version,
            2 => st::SortTarget::Create,
            3 => st::SortTarget::Mod,
            4 => st::SortTarget::Value,
            _ => st::SortTarget::Key,
        },
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

pub fn range_to_pb(r: st::RangeResponse, ids: &Ids) -> pb::RangeResponse {
    pb::RangeResponse {
        header: ids.header(r.header),
        kvs: r.kvs.into_iter().map(kv_to_pb).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_from_pb(r: pb::PutRequest) -> st::PutRequest {
    st::PutRequest {
        key: r.key.to_vec(),
        value: r.value.to_vec(),
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn put_to_pb(r: st::PutResponse, ids: &Ids) -> pb::PutResponse {
    pb::PutResponse {
        header: ids.header(r.header),
        prev_kv: r.prev_kv.map(kv_to_pb),
    }
}

pub fn delete_from_pb(r: pb::DeleteRangeRequest) -> st::DeleteRangeRequest {
    st::DeleteRangeRequest {
        key: r.key.to_vec(),
        range_end: r.range_end.to_vec(),
        prev_kv: r.prev_kv,
    }
}

pub fn delete_to_pb(r: st::DeleteRangeResponse, ids: &Ids) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: ids.header(r.header),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv_to_pb).collect(),
    }
}

fn compare_from_pb(c: pb::Compare) -> st::Compare {
    use pb::compare::TargetUnion as P;
    st::Compare {
        result: match c.result {
            1 => st::CompareResult::Greater,
            2 => st::CompareResult::Less,
            3 => st::CompareResult::NotEqual,
            _ => st::CompareResult::Equal,
        },
        target: match c.target {
            1 => st::CompareTarget::Create,
            2 => st::CompareTarget::Mod,
            3 => st::CompareTarget::Value,
            4 => st::CompareTarget::Lease,
            _ => st::CompareTarget::Version,
        },
        key: c.key.to_vec(),
        target_union: c.target_union.map(|t| match t {
            P::Version(v) => st::TargetUnion::Version(v),
            P::CreateRevision(v) => st::TargetUnion::CreateRevision(v),
            P::ModRevision(v) => st::TargetUnion::ModRevision(v),
            P::Value(v) => st::TargetUnion::Value(v.to_vec()),
            P::Lease(v) => st::TargetUnion::Lease(v),
        }),
        range_end: c.range_end.to_vec(),
    }
}

fn op_from_pb(op: pb::RequestOp) -> Result<st::RequestOp, EtcdError> {
    use pb::request_op::Request as R;
    Ok(match op.request.ok_or(EtcdError::KeyNotFound)? {
        R::RequestRange(r) => st::RequestOp::Range(range_from_pb(r)),
        R::RequestPut(r) => st::RequestOp::Put(put_from_pb(r)),
        R::RequestDeleteRange(r) => st::RequestOp::DeleteRange(delete_from_pb(r)),
        R::RequestTxn(t) => st::RequestOp::Txn(txn_from_pb(t)?),
    })
}

pub fn txn_from_pb(t: pb::TxnRequest) -> Result<st::TxnRequest, EtcdError> {
    Ok(st::TxnRequest {
        compare: t.compare.into_iter().map(compare_from_pb).collect(),
        success: t
            .success
            .into_iter()
            .map(op_from_pb)
            .collect::<Result<_, _>>()?,
        failure: t
            .failure
            .into_iter()
            .map(op_from_pb)
            .collect::<Result<_, _>>()?,
    })
}

fn op_to_pb(op: st::ResponseOp, ids: &Ids) -> pb::ResponseOp {
    use pb::response_op::Response as R;
    pb::ResponseOp {
        response: Some(match op {
            st::ResponseOp::Range(r) => R::ResponseRange(range_to_pb(r, ids)),
            st::ResponseOp::Put(r) => R::ResponsePut(put_to_pb(r, ids)),
            st::ResponseOp::DeleteRange(r) => R::ResponseDeleteRange(delete_to_pb(r, ids)),
            st::ResponseOp::Txn(r) => R::ResponseTxn(txn_to_pb(r, ids)),
        }),
    }
}

pub fn txn_to_pb(r: st::TxnResponse, ids: &Ids) -> pb::TxnResponse {
    pb::TxnResponse {
        header: ids.header(r.header),
        succeeded: r.succeeded,
        responses: r
            .responses
            .into_iter()
            .map(|o| op_to_pb(o, &ids.nested()))
            .collect(),
    }
}

pub fn compaction_from_pb(r: pb::CompactionRequest) -> st::CompactionRequest {
    st::CompactionRequest {
        revision: r.revision,
        physical: r.physical,
    }
}

/// A store error as the client sees it: a request error is already etcd's; a
/// storage failure means the member is stopping (clients retry elsewhere).
pub fn store_error(e: &st::Error) -> EtcdError {
    e.request_error().unwrap_or(EtcdError::Stopped)
}
