//! The recorded history of a run: every client operation with its invoke and complete
//! times and its outcome, every watch response, and the end-of-run member hashes.
//!
//! The history is plain data (serde) so that a failing run can be written out as JSON,
//! read back and re-checked, and so that unit tests can build histories by hand.
//! Times are nanoseconds since the start of the run, from one monotonic clock.
//! Every value a client writes is unique in the run (the checkers rely on it).

use serde::{Deserialize, Serialize};

/// A key-value pair as a read or a watch event reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub mod_rev: i64,
    pub create_rev: i64,
    pub version: i64,
    /// Lease the key is attached to (0 = none).
    pub lease: i64,
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Single-key get; `serializable` reads may be served locally by any member.
    Get { key: String, serializable: bool },
    /// Put with prev_kv; `lease` 0 means none.
    Put {
        key: String,
        value: String,
        lease: i64,
    },
    /// Delete with prev_kv.
    Delete { key: String },
    /// Txn: if mod_revision(key) == expect then put(key, value) else get(key).
    Cas {
        key: String,
        expect_mod_rev: i64,
        value: String,
    },
    /// Range over every key starting with `prefix`.
    Range { prefix: String, serializable: bool },
    /// Lease grant with a server-chosen ID.
    LeaseGrant { ttl: i64 },
    /// Lease revoke: deletes every key attached to the lease in one revision.
    LeaseRevoke { lease: i64 },
    /// Compaction at a revision (issued by the fault injector).
    Compact { rev: i64 },
}

/// What the server answered, for a request that succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Get {
        rev: i64,
        kv: Option<Kv>,
    },
    Put {
        rev: i64,
        prev: Option<Kv>,
    },
    Delete {
        rev: i64,
        deleted: i64,
        prev: Option<Kv>,
    },
    /// `current` is the else-branch get when the compare failed.
    Cas {
        rev: i64,
        succeeded: bool,
        current: Option<Kv>,
    },
    Range {
        rev: i64,
        kvs: Vec<Kv>,
    },
    LeaseGrant {
        rev: i64,
        lease: i64,
    },
    LeaseRevoke {
        rev: i64,
    },
    Compact {
        rev: i64,
    },
}

impl Response {
    /// The header revision of the response.
    pub fn rev(&self) -> i64 {
        match self {
            Response::Get { rev, .. }
            | Response::Put { rev, .. }
            | Response::Delete { rev, .. }
            | Response::Cas { rev, .. }
            | Response::Range { rev, .. }
            | Response::LeaseGrant { rev, .. }
            | Response::LeaseRevoke { rev }
            | Response::Compact { rev } => *rev,
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ok(Response),
    /// The request definitely did not take effect (a read that failed, or an error the
    /// server returns before applying anything).
    Failed(String),
    /// Timeout or lost connection: a write may take effect at any later time, or never.
    Unknown(String),
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub id: u64,
    pub client: u32,
    /// Index of the member the client's connection goes to.
    pub member: u32,
    /// How many times that member had been (re)started when the op was invoked: one
    /// connection lives within one incarnation.
    pub incarnation: u32,
    pub invoke: u64,
    pub complete: u64,
    pub req: Request,
    pub outcome: Outcome,
}

impl Op {
    pub fn ok(&self) -> Option<&Response> {
        match &self.outcome {
            Outcome::Ok(r) => Some(r),
            _ => None,
        }
    }
    pub fn is_unknown(&self) -> bool {
        matches!(self.outcome, Outcome::Unknown(_))
    }
    /// The request's key when it touches exactly one key.
    pub fn key(&self) -> Option<&str> {
        match &self.req {
            Request::Get { key, .. }
            | Request::Put { key, .. }
            | Request::Delete { key }
            | Request::Cas { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// Kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One watch event. For a delete, `kv.value` is empty and `kv.mod_rev` is the revision
/// of the delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: Kv,
    pub prev: Option<Kv>,
}

/// One message on a watcher's stream, or a (re)start of its watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchRecord {
    /// A watch was (re)created from `start_rev`.
    Start { time: u64, start_rev: i64 },
    /// A response carrying events (empty responses are not recorded).
    Events {
        time: u64,
        header_rev: i64,
        events: Vec<Event>,
    },
    /// The server cancelled the watch because `start_rev` was compacted; the watcher
    /// resumes from `compact_rev` and events before it are legitimately missed.
    Compacted { time: u64, compact_rev: i64 },
    /// The stream broke (member down, timeout); the watcher resumes after its last event.
    Broken { time: u64, error: String },
}

/// The records of one watcher (one per client).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchLog {
    pub client: u32,
    pub records: Vec<WatchRecord>,
}

/// A member's HashKV taken after the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHash {
    pub member: u32,
    /// The revision the hash was taken at.
    pub rev: i64,
    pub compact_rev: i64,
    pub hash: u32,
}

/// A fault the harness injected or healed, for reading a failing history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultEvent {
    pub time: u64,
    pub what: String,
}

/// Everything a run recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Op>,
    pub watches: Vec<WatchLog>,
    pub hashes: Vec<MemberHash>,
    /// Set when the linearizable reads were really sent as serializable (the deliberately
    /// unsafe mode used to prove that the checker catches stale reads).
    #[serde(default)]
    pub unsafe_serializable: bool,
    #[serde(default)]
    pub faults: Vec<FaultEvent>,
    /// The store's revision once the run was over and healed, which every watcher must
    /// reach (0 when unknown, as in hand-written histories).
    #[serde(default)]
    pub final_rev: i64,
    /// Cluster size (0 when unknown).
    #[serde(default)]
    pub members: usize,
    /// Members that did not serve a linearizable read within the harness's limit once
    /// every fault was healed.
    #[serde(default)]
    pub unavailable: Vec<u32>,
}
