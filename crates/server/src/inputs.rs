//! The messages between the member's threads: what the Raft node loop is asked to do
//! ([`NodeInput`]), what the apply thread receives ([`ApplyInput`]) and answers
//! ([`ApplyOutput`]), the Raft facts the rest of the member reads without asking
//! ([`RaftStatus`]), and how Raft messages leave the member ([`Transport`]).
//!
//! This module depends on nothing else of the member's, so the node loop, the apply
//! thread and the request side can all speak it without depending on each other.

use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use skiff_raft::{Entry, Message};
use tokio::sync::oneshot;

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;

/// What a waiting request gets back from the apply thread.
#[derive(Debug, Clone)]
pub enum ApplyOutput {
    Put(pb::PutResponse),
    DeleteRange(pb::DeleteRangeResponse),
    Txn(pb::TxnResponse),
    Compaction(pb::CompactionResponse),
    LeaseGrant(pb::LeaseGrantResponse),
    LeaseRevoke(pb::LeaseRevokeResponse),
    Alarm(pb::AlarmResponse),
    /// A membership change took effect: the members after it.
    Members(Vec<skiff_proto::skiffpb::MemberRecord>),
    /// An auth store change applied (its responses carry only a header).
    Auth(Option<pb::ResponseHeader>),
    Authenticate(pb::AuthenticateResponse),
    Noop,
}

/// The result of applying one proposed request.
pub type ApplyResult = Result<ApplyOutput, EtcdError>;

/// What other tasks ask of the node.
pub enum NodeInput {
    /// Propose one encoded `InternalRequest`.
    Propose(Bytes),
    /// Propose one encoded `InternalRequest` on this member as leader, and say when it
    /// is committed (durable on a quorum), without waiting for it to be applied. Refused
    /// with `not leader` on a follower.
    ProposeCommitted(Bytes, oneshot::Sender<Result<(), EtcdError>>),
    /// A linearizable read point: the reply is the index to wait for.
    ReadIndex(oneshot::Sender<Result<u64, EtcdError>>),
    /// Propose a membership conf change (see `membership`); its context names the
    /// request waiting for the result. Dropped without a leader (the caller times out).
    ProposeConfChange(skiff_raft::ConfChangeV2),
    /// The leader's view of replication: each member's matched index, `None` on a
    /// member that does not lead.
    Progress(oneshot::Sender<Option<std::collections::BTreeMap<u64, u64>>>),
    /// A member's peer URLs changed (member update): the transport follows.
    PeerUrls { id: u64, urls: Vec<String> },
    /// Hand leadership to this member (leader only; Raft's leader transfer).
    TransferLeader(u64),
    /// A message from a peer.
    Step(Box<Message>),
    /// The transport could not reach a peer (or dropped messages to it).
    Unreachable(u64),
    /// A snapshot send to a peer ended.
    SnapshotStatus { to: u64, ok: bool },
    /// The apply thread applied everything up to `index`: snapshot there (the file is
    /// written once the backend is durable up to it, `node::io::SnapshotWriter`).
    Snapshot { index: u64, payload: Bytes },
    /// The file of this member's snapshot at the marker's index is durable (written off
    /// the node loop, `node::io::SnapshotWriter`): its WAL marker may be saved.
    SnapshotSaved(skiff_storage::wal::SnapshotMarker),
    /// Tick Raft this many times at once (etcd's `--initial-election-tick-advance`:
    /// a member that just started and reached its peers need not wait out a whole
    /// election timeout before it may campaign; see `tasks::advance_election_ticks`).
    AdvanceTicks(u64),
    /// A peer says this member was removed from the cluster: stop with that error.
    Removed,
    /// Stop the loop.
    Stop,
}

/// What the apply thread receives, in log order.
pub enum ApplyInput {
    /// Committed entries, after they were durable in the WAL.
    Entries { entries: Vec<Entry>, term: u64 },
    /// A snapshot from the leader, durable in the snapshot files and the WAL: load it
    /// into the backend before the entries that follow it.
    Snapshot(skiff_raft::Snapshot),
    /// A question about state the apply thread owns: the keys attached to a lease
    /// (asked by lease time-to-live with `keys`), answered in log order.
    LeaseKeys {
        id: i64,
        reply: oneshot::Sender<Vec<Bytes>>,
    },
    /// The node stopped; nothing more will come.
    Stopped,
}

/// Raft facts other tasks read without asking the node.
#[derive(Debug, Default)]
pub struct RaftStatus {
    pub term: AtomicU64,
    pub commit: AtomicU64,
    /// The leader (0: none), published on every change: read at once with `borrow`,
    /// or followed by streams that must end when this member loses its leader
    /// (etcd's `hasleader` requests).
    pub leader: tokio::sync::watch::Sender<u64>,
}

/// Sends Raft messages to peers, and follows membership changes.
pub trait Transport: Send + 'static {
    fn send(&mut self, msgs: Vec<Message>);
    /// A member joined (or its peer URLs are known now).
    fn add_peer(&mut self, id: u64, urls: Vec<String>);
    /// A member left.
    fn remove_peer(&mut self, id: u64);
    /// Raft sees `leader` as the leader now (0: none known; this member's own ID when
    /// it leads).
    fn leader_is(&mut self, leader: u64);
}
