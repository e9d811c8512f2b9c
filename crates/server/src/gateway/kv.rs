//! The KV calls on the gateway (`/v3/kv/range`, `put`, `deleterange`, `txn`,
//! `compaction`): etcd's JSON for `RangeRequest` ... `CompactionResponse`, `Compare`,
//! `RequestOp`/`ResponseOp`, `mvccpb.KeyValue` and `mvccpb.Event`, each call handed to
//! the facade.

use skiff_proto::etcdserverpb::{self as pb, compare::TargetUnion, request_op, response_op};
use skiff_proto::mvccpb;

use super::decode::{Decode, DecodeError, EnumDef, Fields};
use super::encode::{Encode, Obj};

type Result<T> = std::result::Result<T, DecodeError>;

const SORT_ORDER: EnumDef = EnumDef {
    go_type: "etcdserverpb.RangeRequest_SortOrder",
    names: &["NONE", "ASCEND", "DESCEND"],
};
const SORT_TARGET: EnumDef = EnumDef {
    go_type: "etcdserverpb.RangeRequest_SortTarget",
    names: &["KEY", "VERSION", "CREATE", "MOD", "VALUE"],
};
const COMPARE_RESULT: EnumDef = EnumDef {
    go_type: "etcdserverpb.Compare_CompareResult",
    names: &["EQUAL", "GREATER", "LESS", "NOT_EQUAL"],
};
const COMPARE_TARGET: EnumDef = EnumDef {
    go_type: "etcdserverpb.Compare_CompareTarget",
    names: &["VERSION", "CREATE", "MOD", "VALUE", "LEASE"],
};
const EVENT_TYPE: &[&str] = &["PUT", "DELETE"];

unary_handlers! {
    range => range,
    put => put,
    delete_range => delete_range,
    txn => txn,
    compact => compact,
}

impl Encode for pb::ResponseHeader {
    fn encode(&self, o: &mut Obj) {
        o.u64("cluster_id", self.cluster_id);
        o.u64("member_id", self.member_id);
        o.i64("revision", self.revision);
        o.u64("raft_term", self.raft_term);
    }
}

impl Encode for mvccpb::KeyValue {
    fn encode(&self, o: &mut Obj) {
        o.bytes("key", &self.key);
        o.i64("create_revision", self.create_revision);
        o.i64("mod_revision", self.mod_revision);
        o.i64("version", self.version);
        o.bytes("value", &self.value);
        o.i64("lease", self.lease);
    }
}

impl Encode for mvccpb::Event {
    fn encode(&self, o: &mut Obj) {
        o.enumeration("type", self.r#type, EVENT_TYPE);
        o.message("kv", self.kv.as_ref());
        o.message("prev_kv", self.prev_kv.as_ref());
    }
}

impl Decode for pb::RangeRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::RangeRequest {
            key: f.bytes("key")?,
            range_end: f.bytes("range_end")?,
            limit: f.i64("limit")?,
            revision: f.i64("revision")?,
            sort_order: f.enumeration("sort_order", &SORT_ORDER)?,
            sort_target: f.enumeration("sort_target", &SORT_TARGET)?,
            serializable: f.bool("serializable")?,
            keys_only: f.bool("keys_only")?,
            count_only: f.bool("count_only")?,
            min_mod_revision: f.i64("min_mod_revision")?,
            max_mod_revision: f.i64("max_mod_revision")?,
            min_create_revision: f.i64("min_create_revision")?,
            max_create_revision: f.i64("max_create_revision")?,
        })
    }
}

impl Encode for pb::RangeResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.messages("kvs", &self.kvs);
        o.bool("more", self.more);
        o.i64("count", self.count);
    }
}

impl Decode for pb::PutRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::PutRequest {
            key: f.bytes("key")?,
            value: f.bytes("value")?,
            lease: f.i64("lease")?,
            prev_kv: f.bool("prev_kv")?,
            ignore_value: f.bool("ignore_value")?,
            ignore_lease: f.bool("ignore_lease")?,
        })
    }
}

impl Encode for pb::PutResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.message("prev_kv", self.prev_kv.as_ref());
    }
}

impl Decode for pb::DeleteRangeRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::DeleteRangeRequest {
            key: f.bytes("key")?,
            range_end: f.bytes("range_end")?,
            prev_kv: f.bool("prev_kv")?,
        })
    }
}

impl Encode for pb::DeleteRangeResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.i64("deleted", self.deleted);
        o.messages("prev_kvs", &self.prev_kvs);
    }
}

impl Decode for pb::Compare {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        let result = f.enumeration("result", &COMPARE_RESULT)?;
        let target = f.enumeration("target", &COMPARE_TARGET)?;
        let key = f.bytes("key")?;
        let range_end = f.bytes("range_end")?;
        // jsonpb reads oneof members after the plain fields.
        let target_union = if f.has("version") {
            Some(TargetUnion::Version(f.i64("version")?))
        } else if f.has("create_revision") {
            Some(TargetUnion::CreateRevision(f.i64("create_revision")?))
        } else if f.has("mod_revision") {
            Some(TargetUnion::ModRevision(f.i64("mod_revision")?))
        } else if f.has("value") {
            Some(TargetUnion::Value(f.bytes("value")?))
        } else if f.has("lease") {
            Some(TargetUnion::Lease(f.i64("lease")?))
        } else {
            None
        };
        Ok(pb::Compare {
            result,
            target,
            key,
            range_end,
            target_union,
        })
    }
}

impl Decode for pb::RequestOp {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        use request_op::Request;
        let request = if f.has("request_range") {
            f.message("request_range")?.map(Request::RequestRange)
        } else if f.has("request_put") {
            f.message("request_put")?.map(Request::RequestPut)
        } else if f.has("request_delete_range") {
            f.message("request_delete_range")?
                .map(Request::RequestDeleteRange)
        } else if f.has("request_txn") {
            f.message("request_txn")?.map(Request::RequestTxn)
        } else {
            None
        };
        Ok(pb::RequestOp { request })
    }
}

impl Decode for pb::TxnRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::TxnRequest {
            compare: f.messages("compare")?,
            success: f.messages("success")?,
            failure: f.messages("failure")?,
        })
    }
}

impl Encode for pb::ResponseOp {
    fn encode(&self, o: &mut Obj) {
        use response_op::Response;
        match &self.response {
            Some(Response::ResponseRange(r)) => o.message("response_range", Some(r)),
            Some(Response::ResponsePut(r)) => o.message("response_put", Some(r)),
            Some(Response::ResponseDeleteRange(r)) => o.message("response_delete_range", Some(r)),
            Some(Response::ResponseTxn(r)) => o.message("response_txn", Some(r)),
            None => {}
        }
    }
}

impl Encode for pb::TxnResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.bool("succeeded", self.succeeded);
        o.messages("responses", &self.responses);
    }
}

impl Decode for pb::CompactionRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::CompactionRequest {
            revision: f.i64("revision")?,
            physical: f.bool("physical")?,
        })
    }
}

impl Encode for pb::CompactionResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
    }
}
