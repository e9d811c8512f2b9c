//! etcdctl's `-w json`: Go's `encoding/json` applied to etcd's generated Go structs
//! (snake_case or camelCase tags with `omitempty`, 64-bit integers as JSON numbers,
//! bytes as base64) and to the etcd client's wrapper structs (Go field names, embedded
//! headers inlined, no `omitempty`). Each encoder here names which Go type it mirrors;
//! field order is the Go struct's.

use base64::Engine;
use skiff_proto::etcdserverpb::{
    response_op, AlarmMember, AlarmResponse, DeleteRangeResponse, HashKvResponse,
    LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse,
    LeaseTimeToLiveResponse, Member, MemberListResponse, PutResponse, RangeResponse,
    ResponseHeader, ResponseOp, StatusResponse, TxnResponse, WatchResponse,
};
use skiff_proto::mvccpb::{Event, KeyValue};

use super::go::json_string;

/// A JSON object under construction, fields in insertion order.
#[derive(Default)]
pub struct Obj {
    buf: String,
}

impl Obj {
    /// An empty object.
    pub fn new() -> Obj {
        Obj::default()
    }

    /// Adds `"key":raw` (raw is already JSON).
    pub fn raw(mut self, key: &str, raw: impl AsRef<str>) -> Obj {
        if !self.buf.is_empty() {
            self.buf.push(',');
        }
        self.buf.push_str(&json_string(key));
        self.buf.push(':');
        self.buf.push_str(raw.as_ref());
        self
    }

    /// A number field, left out when zero (`omitempty`).
    pub fn num_oe(self, key: &str, v: impl Into<i128>) -> Obj {
        let v = v.into();
        if v == 0 {
            self
        } else {
            self.raw(key, v.to_string())
        }
    }

    /// A number field, always present.
    pub fn num(self, key: &str, v: impl Into<i128>) -> Obj {
        let v: i128 = v.into();
        self.raw(key, v.to_string())
    }

    /// A bool field, left out when false.
    pub fn bool_oe(self, key: &str, v: bool) -> Obj {
        if v {
            self.raw(key, "true")
        } else {
            self
        }
    }

    /// A bool field, always present.
    pub fn bool(self, key: &str, v: bool) -> Obj {
        self.raw(key, if v { "true" } else { "false" })
    }

    /// A string field, left out when empty.
    pub fn str_oe(self, key: &str, v: &str) -> Obj {
        if v.is_empty() {
            self
        } else {
            self.raw(key, json_string(v))
        }
    }

    /// A string field, always present.
    pub fn str(self, key: &str, v: &str) -> Obj {
        self.raw(key, json_string(v))
    }

    /// A bytes field (base64), left out when empty.
    pub fn bytes_oe(self, key: &str, v: &[u8]) -> Obj {
        if v.is_empty() {
            self
        } else {
            self.raw(key, json_string(&b64(v)))
        }
    }

    /// An optional nested object, left out when `None`.
    pub fn opt(self, key: &str, v: Option<String>) -> Obj {
        match v {
            Some(s) => self.raw(key, s),
            None => self,
        }
    }

    /// An array of raw JSON items, left out when empty.
    pub fn arr_oe(self, key: &str, items: Vec<String>) -> Obj {
        if items.is_empty() {
            self
        } else {
            self.raw(key, arr(items))
        }
    }

    /// The object's text.
    pub fn end(self) -> String {
        format!("{{{}}}", self.buf)
    }
}

/// A JSON array of raw items.
pub fn arr(items: Vec<String>) -> String {
    format!("[{}]", items.join(","))
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

/// `etcdserverpb.ResponseHeader`, as a nested object.
pub fn header(h: &ResponseHeader) -> String {
    header_fields(Obj::new(), Some(h)).end()
}

/// A `*pb.ResponseHeader` embedded in a client struct: its fields inlined.
pub fn header_fields(o: Obj, h: Option<&ResponseHeader>) -> Obj {
    match h {
        None => o,
        Some(h) => o
            .num_oe("cluster_id", h.cluster_id)
            .num_oe("member_id", h.member_id)
            .num_oe("revision", h.revision)
            .num_oe("raft_term", h.raft_term),
    }
}

/// A response whose only field is its header (`{"header":{...}}`).
pub fn header_only(h: Option<&ResponseHeader>) -> String {
    Obj::new().opt("header", h.map(header)).end()
}

fn hdr(h: &Option<ResponseHeader>) -> Option<String> {
    h.as_ref().map(header)
}

/// `mvccpb.KeyValue`.
pub fn kv(kv: &KeyValue) -> String {
    Obj::new()
        .bytes_oe("key", &kv.key)
        .num_oe("create_revision", kv.create_revision)
        .num_oe("mod_revision", kv.mod_revision)
        .num_oe("version", kv.version)
        .bytes_oe("value", &kv.value)
        .num_oe("lease", kv.lease)
        .end()
}

/// `mvccpb.Event`.
pub fn event(e: &Event) -> String {
    Obj::new()
        .num_oe("type", e.r#type)
        .opt("kv", e.kv.as_ref().map(kv))
        .opt("prev_kv", e.prev_kv.as_ref().map(kv))
        .end()
}

/// `etcdserverpb.RangeResponse`.
pub fn range(r: &RangeResponse) -> String {
    Obj::new()
        .opt("header", hdr(&r.header))
        .arr_oe("kvs", r.kvs.iter().map(kv).collect())
        .bool_oe("more", r.more)
        .num_oe("count", r.count)
        .end()
}

/// `etcdserverpb.PutResponse`.
pub fn put(r: &PutResponse) -> String {
    Obj::new()
        .opt("header", hdr(&r.header))
        .opt("prev_kv", r.prev_kv.as_ref().map(kv))
        .end()
}

/// `etcdserverpb.DeleteRangeResponse`.
pub fn delete(r: &DeleteRangeResponse) -> String {
    Obj::new()
        .opt("header", hdr(&r.header))
        .num_oe("deleted", r.deleted)
        .arr_oe("prev_kvs", r.prev_kvs.iter().map(kv).collect())
        .end()
}

/// `etcdserverpb.TxnResponse` (a `ResponseOp`'s oneof is the Go field `Response`
/// holding a wrapper whose one field has the Go name, e.g. `ResponseRange`).
pub fn txn(r: &TxnResponse) -> String {
    Obj::new()
        .opt("header", hdr(&r.header))
        .bool_oe("succeeded", r.succeeded)
        .arr_oe("responses", r.responses.iter().map(response_op).collect())
        .end()
}

fn response_op(op: &ResponseOp) -> String {
    let inner = match &op.response {
        None => return Obj::new().raw("Response", "null").end(),
        Some(response_op::Response::ResponseRange(r)) => Obj::new().raw("ResponseRange", range(r)),
        Some(response_op::Response::ResponsePut(r)) => Obj::new().raw("ResponsePut", put(r)),
        Some(response_op::Response::ResponseDeleteRange(r)) => {
            Obj::new().raw("ResponseDeleteRange", delete(r))
        }
        Some(response_op::Response::ResponseTxn(r)) => Obj::new().raw("ResponseTxn", txn(r)),
    };
    Obj::new().raw("Response", inner.end()).end()
}

/// `clientv3.WatchResponse`: Go field names, no `omitempty`, `Events` null when none.
pub fn watch(r: &WatchResponse) -> String {
    let header = r.header.unwrap_or_default();
    let events = if r.events.is_empty() {
        "null".to_string()
    } else {
        arr(r.events.iter().map(event).collect())
    };
    Obj::new()
        .raw("Header", self::header(&header))
        .raw("Events", events)
        .num("CompactRevision", r.compact_revision)
        .bool("Canceled", r.canceled)
        .bool("Created", r.created)
        .end()
}

/// `clientv3.LeaseGrantResponse` (embedded header; `ID`, `TTL`, `Error` always).
pub fn lease_grant(r: &LeaseGrantResponse) -> String {
    header_fields(Obj::new(), r.header.as_ref())
        .num("ID", r.id)
        .num("TTL", r.ttl)
        .str("Error", &r.error)
        .end()
}

/// `clientv3.LeaseRevokeResponse` (= `etcdserverpb.LeaseRevokeResponse`).
pub fn lease_revoke(r: &LeaseRevokeResponse) -> String {
    Obj::new().opt("header", hdr(&r.header)).end()
}

/// `clientv3.LeaseKeepAliveResponse`.
pub fn lease_keep_alive(r: &LeaseKeepAliveResponse) -> String {
    header_fields(Obj::new(), r.header.as_ref())
        .num("ID", r.id)
        .num("TTL", r.ttl)
        .end()
}

/// `clientv3.LeaseTimeToLiveResponse` (`keys` is null when the server sent none).
pub fn lease_time_to_live(r: &LeaseTimeToLiveResponse) -> String {
    let keys = if r.keys.is_empty() {
        "null".to_string()
    } else {
        arr(r.keys.iter().map(|k| json_string(&b64(k))).collect())
    };
    header_fields(Obj::new(), r.header.as_ref())
        .num("id", r.id)
        .num("ttl", r.ttl)
        .num("granted-ttl", r.granted_ttl)
        .raw("keys", keys)
        .end()
}

/// `clientv3.LeaseLeasesResponse` (`leases` always an array).
pub fn lease_leases(r: &LeaseLeasesResponse) -> String {
    header_fields(Obj::new(), r.header.as_ref())
        .raw(
            "leases",
            arr(r
                .leases
                .iter()
                .map(|l| Obj::new().num("id", l.id).end())
                .collect()),
        )
        .end()
}

/// `etcdserverpb.Member`.
pub fn member(m: &Member) -> String {
    let strs = |v: &[String]| v.iter().map(|s| json_string(s)).collect::<Vec<_>>();
    Obj::new()
        .num_oe("ID", m.id)
        .str_oe("name", &m.name)
        .arr_oe("peerURLs", strs(&m.peer_ur_ls))
        .arr_oe("clientURLs", strs(&m.client_ur_ls))
        .bool_oe("isLearner", m.is_learner)
        .end()
}

/// `etcdserverpb.MemberListResponse`.
pub fn member_list(r: &MemberListResponse) -> String {
    Obj::new()
        .opt("header", hdr(&r.header))
        .arr_oe("members", r.members.iter().map(member).collect())
        .end()
}

/// `etcdserverpb.AlarmMember`.
fn alarm_member(a: &AlarmMember) -> String {
    Obj::new()
        .num_oe("memberID", a.member_id)
        .num_oe("alarm", a.alarm)
        .end()
}

/// `etcdserverpb.AlarmResponse`.
pub fn alarm(r: &AlarmResponse) -> String {
    Obj::new()
        .opt("header", hdr(&r.header))
        .arr_oe("alarms", r.alarms.iter().map(alarm_member).collect())
        .end()
}

/// `etcdserverpb.StatusResponse` as etcd 3.4 defines it (fields added later are not
/// printed, as etcdctl 3.4 does not know them).
pub fn status(r: &StatusResponse) -> String {
    let errors = r.errors.iter().map(|s| json_string(s)).collect();
    Obj::new()
        .opt("header", hdr(&r.header))
        .str_oe("version", &r.version)
        .num_oe("dbSize", r.db_size)
        .num_oe("leader", r.leader)
        .num_oe("raftIndex", r.raft_index)
        .num_oe("raftTerm", r.raft_term)
        .num_oe("raftAppliedIndex", r.raft_applied_index)
        .arr_oe("errors", errors)
        .num_oe("dbSizeInUse", r.db_size_in_use)
        .bool_oe("isLearner", r.is_learner)
        .end()
}

/// `etcdserverpb.HashKVResponse`.
pub fn hash_kv(r: &HashKvResponse) -> String {
    Obj::new()
        .opt("header", hdr(&r.header))
        .num_oe("hash", r.hash)
        .num_oe("compact_revision", r.compact_revision)
        .end()
}
