//! Plain Rust mirrors of etcd's v3 KV messages (`mvccpb.KeyValue`, `mvccpb.Event`,
//! `etcdserverpb.RangeRequest`, `PutRequest`, `DeleteRangeRequest`, `TxnRequest`, `Compare`,
//! `RequestOp`/`ResponseOp`, `ResponseHeader`, `CompactionRequest`).
//!
//! Field names, meanings and enum discriminants are the protobuf ones, so the server converts
//! 1:1 to and from the generated types without any semantic mapping. Storage keeps its
//! own plain types on purpose (owned `Vec<u8>` keys, typed enums): it never handles the
//! generated ones, and stays usable (and testable) on its own.

/// `mvccpb.KeyValue`: one version of a key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// Revision of the last creation of this key (start of its current generation).
    pub create_revision: i64,
    /// Revision of the last modification of this key.
    pub mod_revision: i64,
    /// Number of modifications since creation; a delete resets it to 0.
    pub version: i64,
    pub value: Vec<u8>,
    /// Lease attached to the key, 0 for none.
    pub lease: i64,
}

/// `mvccpb.Event.EventType` (PUT = 0, DELETE = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum EventType {
    Put = 0,
    Delete = 1,
}

/// `mvccpb.Event`. For a delete, `kv` holds only `key` and `mod_revision` (as etcd sends it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventType,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// `etcdserverpb.ResponseHeader`. Storage fills `revision`; the server fills the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseHeader {
    pub cluster_id: u64,
    pub member_id: u64,
    pub revision: i64,
    pub raft_term: u64,
}

impl ResponseHeader {
    pub fn at(revision: i64) -> Self {
        ResponseHeader {
            revision,
            ..Default::default()
        }
    }
}

/// `RangeRequest.SortOrder`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(i32)]
pub enum SortOrder {
    #[default]
    None = 0,
    Ascend = 1,
    Descend = 2,
}

/// `RangeRequest.SortTarget`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(i32)]
pub enum SortTarget {
    #[default]
    Key = 0,
    Version = 1,
    Create = 2,
    Mod = 3,
    Value = 4,
}

/// `etcdserverpb.RangeRequest`.
///
/// `range_end` empty means the single key `key`; `[0]` means every key `>= key`; otherwise
/// the half-open interval `[key, range_end)` (a prefix query is `range_end = prefix + 1`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// Maximum number of keys returned, 0 for no limit; `more` tells whether some were cut.
    pub limit: i64,
    /// Read at this revision; 0 (or negative) means the current one.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Handled by the server (serializable read skips the ReadIndex); ignored here.
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    pub header: ResponseHeader,
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    /// Number of keys in the range at the revision (before min/max revision filters and
    /// limit, as etcd counts).
    pub count: i64,
}

/// `etcdserverpb.PutRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

/// `etcdserverpb.PutResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    pub header: ResponseHeader,
    pub prev_kv: Option<KeyValue>,
}

/// `etcdserverpb.DeleteRangeRequest` (`range_end` as in [`RangeRequest`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

/// `etcdserverpb.DeleteRangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    pub header: ResponseHeader,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

/// `Compare.CompareResult` (EQUAL = 0, GREATER = 1, LESS = 2, NOT_EQUAL = 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(i32)]
pub enum CompareResult {
    #[default]
    Equal = 0,
    Greater = 1,
    Less = 2,
    NotEqual = 3,
}

/// `Compare.CompareTarget` (VERSION = 0, CREATE = 1, MOD = 2, VALUE = 3, LEASE = 4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(i32)]
pub enum CompareTarget {
    #[default]
    Version = 0,
    Create = 1,
    Mod = 2,
    Value = 3,
    Lease = 4,
}

/// `Compare.target_union` (the protobuf oneof).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetUnion {
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Value(Vec<u8>),
    Lease(i64),
}

/// `etcdserverpb.Compare`. As in etcd, `target` selects what is compared and
/// `target_union` supplies the operand; an operand of another kind (or none) compares
/// against the zero value (0 or empty bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    pub key: Vec<u8>,
    pub target_union: Option<TargetUnion>,
    pub range_end: Vec<u8>,
}

/// `etcdserverpb.RequestOp` (the oneof `request`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

/// `etcdserverpb.ResponseOp` (the oneof `response`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

/// `etcdserverpb.TxnRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

/// `etcdserverpb.TxnResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    pub header: ResponseHeader,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

/// `etcdserverpb.CompactionRequest`. `physical` only affects when the server answers
/// (after the background deletion is done, see `KvStore::wait_compacted`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionRequest {
    pub revision: i64,
    pub physical: bool,
}

/// `etcdserverpb.CompactionResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionResponse {
    pub header: ResponseHeader,
}

/// A state-changing request, as carried by a committed raft entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteRequest {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compaction(CompactionRequest),
    /// An entry with no KV effect (empty entry, conf change, lease grant...): it only
    /// advances the consistent index, plus any auxiliary table writes given with it.
    Noop,
}

/// The answer to a [`WriteRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    Noop(ResponseHeader),
}

impl WriteResponse {
    pub fn header(&self) -> ResponseHeader {
        match self {
            WriteResponse::Put(r) => r.header,
            WriteResponse::DeleteRange(r) => r.header,
            WriteResponse::Txn(r) => r.header,
            WriteResponse::Compaction(r) => r.header,
            WriteResponse::Noop(h) => *h,
        }
    }
}

/// `etcdserverpb.HashKVResponse` minus the header: the hash of the KV history up to
/// `hash_revision`, with the compaction revision it was computed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKv {
    pub hash: u32,
    pub compact_revision: i64,
    pub hash_revision: i64,
    /// The store's current revision when the hash was taken (the response header's).
    pub revision: i64,
}
