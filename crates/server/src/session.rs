//! Client sessions: a Put, DeleteRange or Txn tagged with a session and a sequence
//! number is applied at most once, however often its client retries it (issue 17).
//!
//! Why: a client whose write timed out during a leader change cannot know whether it was
//! applied. etcd's clients retry, and a retried non-idempotent write (an increment done
//! by read-compare-put) then applies twice (etcd-io/etcd #14890, Jepsen's etcd analysis).
//!
//! The protocol (what `skiff-client`'s `Session` and `skiff-chaos --sessions` send, as
//! gRPC metadata, which etcd ignores):
//! - `skiff-session: open` on a `LeaseGrant`: the granted lease is also a session of
//!   the same ID. The session lives as long as the lease; the lease's revocation (by
//!   the client, or its expiry, which is a Raft entry decided by the leader's lease
//!   clock, never by one member's clock at apply) closes it and forgets its results.
//! - `skiff-session: <id>`, `skiff-seq: <n>` (n >= 1), `skiff-acked: <m>` (m < n: the
//!   client holds the answers of every sequence <= m) on a Put, DeleteRange, Txn or
//!   LeaseGrant (a repeated grant of an ID the server picks would grant two leases).
//!
//! At apply ([`Sessions::admit`]): an unknown session is refused
//! (`skiff: session not found (expired or closed)`), so a retry after expiry never
//! applies again; a stored (session, seq) is answered from the backend without
//! applying; a sequence at or below the acknowledged mark that is not stored is
//! refused; more than [`MAX_UNACKED`] stored results are refused
//! (`ResourceExhausted`). Otherwise the request applies, and its result is written by a
//! [`Record`] in the *same backend transaction* as the write it describes, together
//! with the raised acknowledged mark and the removal of the results below it. So the
//! write and its dedup row are durable together (a crash cannot keep one without the
//! other), replay after a restart is idempotent (the consistent index), and the rows
//! travel in snapshots with the rest of the backend. Every member stores the same
//! bytes (headers with `member_id` and `raft_term` 0), so the `Hash` RPC, which covers
//! every table but `meta`, compares them across members.
//!
//! Requests refused before they reach the store (an old auth revision, an alarm, a
//! malformed txn) changed nothing and are not recorded: a retry may apply them then.
//!
//! Backend rows (table `session`): `id (8 bytes BE) ++ 0u64` → the acknowledged mark
//! (8 bytes BE); `id ++ seq (BE)` → a [`SessionResult`]. The apply thread keeps which
//! sequences are stored in memory; the answers themselves are read back only on a hit.

use std::collections::{BTreeSet, HashMap};

use prost::Message as _;
use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::skiffpb::{session_result::Result as Stored, SessionResult};
use skiff_storage::backend::Table;
use skiff_storage::mvcc::{self as st, AuxOp, AuxTable, KvStore, Recorder};

use crate::convert::{self, Ids};
use crate::inputs::{ApplyOutput, ApplyResult};

/// Stored results a session may hold before new requests are refused.
pub const MAX_UNACKED: usize = 1024;

/// The metadata names of the protocol.
pub const SESSION_HEADER: &str = "skiff-session";
pub const SEQ_HEADER: &str = "skiff-seq";
pub const ACKED_HEADER: &str = "skiff-acked";
/// The value of [`SESSION_HEADER`] that opens a session on a `LeaseGrant`.
pub const OPEN: &str = "open";

/// A request's session metadata, as a front end received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionMeta {
    /// `skiff-session: open`.
    Open,
    Tag(Tag),
}

/// One request's place in its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub id: i64,
    pub seq: u64,
    pub acked: u64,
}

impl SessionMeta {
    /// Parses the three headers; `Ok(None)` without `skiff-session`.
    pub fn parse(
        session: Option<&str>,
        seq: Option<&str>,
        acked: Option<&str>,
    ) -> Result<Option<SessionMeta>, EtcdError> {
        let Some(session) = session.map(str::trim) else {
            return Ok(None);
        };
        if session == OPEN {
            return Ok(Some(SessionMeta::Open));
        }
        let bad = |_| EtcdError::SessionBadMetadata;
        let id: i64 = session.parse().map_err(bad)?;
        let seq: u64 = seq
            .ok_or(EtcdError::SessionBadMetadata)?
            .trim()
            .parse()
            .map_err(bad)?;
        let acked: u64 = match acked {
            Some(a) => a.trim().parse().map_err(bad)?,
            None => 0,
        };
        if id == 0 || seq == 0 || acked >= seq {
            return Err(EtcdError::SessionBadMetadata);
        }
        Ok(Some(SessionMeta::Tag(Tag { id, seq, acked })))
    }
}

fn row_key(id: i64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&(id as u64).to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn op(key: Vec<u8>, value: Option<Vec<u8>>) -> AuxOp {
    AuxOp {
        table: AuxTable::Session,
        key,
        value,
    }
}

/// One open session: its acknowledged mark and the sequences whose results are stored.
#[derive(Clone, Debug, Default)]
struct Open {
    acked: u64,
    stored: BTreeSet<u64>,
}

/// The open sessions, owned by the apply thread.
#[derive(Clone, Debug, Default)]
pub struct Sessions {
    open: HashMap<i64, Open>,
}

/// What the apply does with a tagged request.
#[derive(Debug)]
pub enum Admission {
    /// Apply it, and write the record's rows in its transaction.
    Apply(Record),
    /// Answer this without applying (a stored result, or a refusal).
    Answer(ApplyResult),
}

impl Sessions {
    /// The sessions the backend holds (at start, and after a snapshot is installed).
    pub fn load(store: &KvStore) -> Result<Sessions, String> {
        let rows = store
            .backend()
            .scan(Table::Session)
            .map_err(|e| e.to_string())?;
        let mut open: HashMap<i64, Open> = HashMap::new();
        for (k, v) in rows {
            let (Some(id), Some(seq)) = (k.get(..8), k.get(8..16)) else {
                return Err(format!("session row key of {} bytes", k.len()));
            };
            let id = u64::from_be_bytes(id.try_into().unwrap_or_default()) as i64;
            let seq = u64::from_be_bytes(seq.try_into().unwrap_or_default());
            let s = open.entry(id).or_default();
            if seq == 0 {
                let acked: [u8; 8] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| format!("session {id:x}: mark of {} bytes", v.len()))?;
                s.acked = u64::from_be_bytes(acked);
            } else {
                s.stored.insert(seq);
            }
        }
        Ok(Sessions { open })
    }

    /// The rows that open session `id` (in the lease grant's transaction).
    pub fn open_rows(id: i64) -> Vec<AuxOp> {
        vec![op(row_key(id, 0), Some(0u64.to_be_bytes().to_vec()))]
    }

    /// The grant that opened `id` applied.
    pub fn opened(&mut self, id: i64) {
        self.open.insert(id, Open::default());
    }

    /// The rows that close session `id` (in the lease revoke's transaction); none if
    /// the lease was not a session.
    pub fn close_rows(&self, id: i64) -> Vec<AuxOp> {
        let Some(s) = self.open.get(&id) else {
            return Vec::new();
        };
        std::iter::once(0)
            .chain(s.stored.iter().copied())
            .map(|seq| op(row_key(id, seq), None))
            .collect()
    }

    /// The lease `id` was revoked: its session, if any, is gone.
    pub fn closed(&mut self, id: i64) {
        self.open.remove(&id);
    }

    /// Decides what the apply does with a request tagged `tag` (see the module doc).
    pub fn admit(&self, tag: Tag, store: &KvStore, ids: &Ids) -> Admission {
        let Some(s) = self.open.get(&tag.id) else {
            return Admission::Answer(Err(EtcdError::SessionNotFound));
        };
        if s.stored.contains(&tag.seq) {
            return Admission::Answer(stored_answer(store, tag, ids));
        }
        if tag.seq <= s.acked {
            return Admission::Answer(Err(EtcdError::SessionSeqAcknowledged));
        }
        let acked = s.acked.max(tag.acked);
        let dropped: Vec<u64> = s.stored.range(..=acked).copied().collect();
        if s.stored.len() - dropped.len() >= MAX_UNACKED {
            return Admission::Answer(Err(EtcdError::SessionWindowFull));
        }
        Admission::Apply(Record {
            tag,
            acked,
            dropped,
            cluster_id: ids.cluster_id,
        })
    }

    /// `record`'s rows were written: the same change in memory.
    pub fn recorded(&mut self, record: &Record) {
        if let Some(s) = self.open.get_mut(&record.tag.id) {
            for seq in &record.dropped {
                s.stored.remove(seq);
            }
            s.acked = record.acked;
            s.stored.insert(record.tag.seq);
        }
    }

    /// How many sessions are open (tests, metrics).
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// The rows a tagged request writes with its apply: its stored result, the raised
/// acknowledged mark, and the results the client no longer needs removed.
#[derive(Debug, Clone)]
pub struct Record {
    tag: Tag,
    acked: u64,
    dropped: Vec<u64>,
    cluster_id: u64,
}

impl Record {
    /// The session this record belongs to.
    pub fn session(&self) -> i64 {
        self.tag.id
    }
}

impl Record {
    /// The rows of a lease grant's answer (granted by the apply thread, not the store).
    pub fn grant_rows(&self, answer: Result<&pb::LeaseGrantResponse, EtcdError>) -> Vec<AuxOp> {
        self.rows_with(match answer {
            Ok(resp) => {
                let mut resp = resp.clone();
                if let Some(h) = &mut resp.header {
                    h.member_id = 0;
                    h.raft_term = 0;
                }
                Stored::LeaseGrant(resp)
            }
            Err(e) => Stored::Error(e.message().to_string()),
        })
    }

    fn rows_with(&self, result: Stored) -> Vec<AuxOp> {
        let stored = SessionResult {
            result: Some(result),
        };
        let mut rows = Vec::with_capacity(self.dropped.len() + 2);
        rows.push(op(
            row_key(self.tag.id, self.tag.seq),
            Some(stored.encode_to_vec()),
        ));
        rows.push(op(
            row_key(self.tag.id, 0),
            Some(self.acked.to_be_bytes().to_vec()),
        ));
        rows.extend(
            self.dropped
                .iter()
                .map(|seq| op(row_key(self.tag.id, *seq), None)),
        );
        rows
    }
}

impl Recorder for Record {
    fn rows(&self, response: &st::Result<st::WriteResponse>, _revision: i64) -> Vec<AuxOp> {
        // The same bytes on every member: no member ID, no term.
        let ids = Ids {
            cluster_id: self.cluster_id,
            member_id: 0,
            term: 0,
        };
        let result = match response {
            Ok(st::WriteResponse::Put(r)) => Stored::Put(convert::put_to_pb(r.clone(), &ids)),
            Ok(st::WriteResponse::DeleteRange(r)) => {
                Stored::DeleteRange(convert::delete_to_pb(r.clone(), &ids))
            }
            Ok(st::WriteResponse::Txn(r)) => Stored::Txn(convert::txn_to_pb(r.clone(), &ids)),
            // Only KV writes are tagged (`EtcdServer::propose`).
            Ok(other) => Stored::Error(format!("skiff: untracked session response {other:?}")),
            Err(e) => Stored::Error(convert::store_error(e).message().to_string()),
        };
        self.rows_with(result)
    }
}

/// The stored answer of `tag`, with this member's identity in its header.
fn stored_answer(store: &KvStore, tag: Tag, ids: &Ids) -> ApplyResult {
    let row = store
        .backend()
        .get(Table::Session, &row_key(tag.id, tag.seq))
        .map_err(|e| {
            tracing::error!(session = tag.id, seq = tag.seq, error = %e, "stored session result unreadable");
            EtcdError::Corrupt
        })?;
    let stored = row
        .and_then(|v| SessionResult::decode(v.as_slice()).ok())
        .and_then(|r| r.result);
    let fill = |h: &mut Option<pb::ResponseHeader>| {
        if let Some(h) = h {
            h.member_id = ids.member_id;
            h.raft_term = ids.term;
        }
    };
    match stored {
        Some(Stored::Put(mut r)) => {
            fill(&mut r.header);
            Ok(ApplyOutput::Put(r))
        }
        Some(Stored::DeleteRange(mut r)) => {
            fill(&mut r.header);
            Ok(ApplyOutput::DeleteRange(r))
        }
        Some(Stored::Txn(mut r)) => {
            fill(&mut r.header);
            Ok(ApplyOutput::Txn(r))
        }
        Some(Stored::LeaseGrant(mut r)) => {
            fill(&mut r.header);
            Ok(ApplyOutput::LeaseGrant(r))
        }
        Some(Stored::Error(msg)) => Err(EtcdError::ALL
            .iter()
            .copied()
            .find(|e| e.message() == msg)
            .unwrap_or(EtcdError::Corrupt)),
        None => {
            tracing::error!(
                session = tag.id,
                seq = tag.seq,
                "stored session result missing"
            );
            Err(EtcdError::Corrupt)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_parses_and_bad_metadata_is_refused() {
        assert_eq!(SessionMeta::parse(None, Some("1"), None), Ok(None));
        assert_eq!(
            SessionMeta::parse(Some("open"), None, None),
            Ok(Some(SessionMeta::Open))
        );
        assert_eq!(
            SessionMeta::parse(Some("-7"), Some("3"), Some("2")),
            Ok(Some(SessionMeta::Tag(Tag {
                id: -7,
                seq: 3,
                acked: 2
            })))
        );
        for (s, q, a) in [
            ("x", Some("1"), None),
            ("5", None, None),
            ("5", Some("0"), None),
            ("5", Some("2"), Some("2")),
            ("0", Some("2"), None),
            ("5", Some("-1"), None),
        ] {
            assert_eq!(
                SessionMeta::parse(Some(s), q, a),
                Err(EtcdError::SessionBadMetadata),
                "{s} {q:?} {a:?}"
            );
        }
    }

    #[test]
    fn keys_order_a_sessions_mark_before_its_results() {
        assert!(row_key(-1, 0) < row_key(-1, 1));
        assert!(row_key(1, u64::MAX) < row_key(2, 0));
    }
}
