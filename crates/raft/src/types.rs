//! The data Raft exchanges and persists: log entries, hard state, snapshots,
//! configuration states, configuration changes and messages.
//!
//! These are plain Rust values. [`crate::codec`] turns them into bytes for the WAL and
//! the peer transport; nothing in this module does I/O.

use bytes::Bytes;

/// A member's identity. `0` means "none" (no leader, no vote).
pub type NodeId = u64;

/// The id that means "no node".
pub const NONE: NodeId = 0;

/// What an entry carries: application data or a membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EntryType {
    /// Opaque application data (an empty one is the leader's no-op).
    #[default]
    Normal,
    /// An encoded [`ConfChangeV2`].
    ConfChange,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    pub term: u64,
    pub index: u64,
    pub entry_type: EntryType,
    pub data: Bytes,
}

impl Entry {
    /// A normal entry with `data` (term and index are set when appended).
    pub fn normal(data: impl Into<Bytes>) -> Entry {
        Entry {
            data: data.into(),
            ..Default::default()
        }
    }

    /// An approximation of the entry's size in memory and on the wire, used for
    /// flow control (`max_size_per_msg`, `max_uncommitted_entries_size`).
    pub fn size(&self) -> u64 {
        self.data.len() as u64 + 24
    }

    /// The payload size counted against `max_uncommitted_entries_size` (etcd counts
    /// only the data, so empty entries such as the leader's no-op are free).
    pub fn payload_size(&self) -> u64 {
        self.data.len() as u64
    }
}

/// The state that must be durable before any message that depends on it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: u64,
    pub vote: NodeId,
    pub commit: u64,
}

impl HardState {
    pub fn is_empty(&self) -> bool {
        *self == HardState::default()
    }
}

/// The membership recorded with a snapshot and returned by applying a conf change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfState {
    /// Voters of the incoming (or only) configuration.
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Voters of the outgoing configuration while in a joint configuration.
    pub voters_outgoing: Vec<NodeId>,
    /// Voters of the outgoing configuration that become learners when the joint
    /// configuration is left.
    pub learners_next: Vec<NodeId>,
    /// Whether the joint configuration is left automatically once committed.
    pub auto_leave: bool,
}

/// Metadata of a snapshot: the last index and term it covers and the membership then.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotMetadata {
    pub conf_state: ConfState,
    pub index: u64,
    pub term: u64,
}

/// A snapshot of the state machine up to `metadata.index`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub data: Bytes,
    pub metadata: SnapshotMetadata,
}

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        self.metadata.index == 0
    }
}

/// One change of membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfChangeType {
    /// Add a voter (or promote a learner).
    AddNode,
    /// Remove a voter or learner.
    RemoveNode,
    /// Add a learner (or demote a voter).
    AddLearnerNode,
}

/// A single membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConfChangeSingle {
    pub change_type: ConfChangeType,
    pub node_id: NodeId,
}

/// How a configuration change is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConfChangeTransition {
    /// A single voter change is applied directly; anything else goes through a joint
    /// configuration that is left automatically.
    #[default]
    Auto,
    /// Always use a joint configuration, left automatically.
    Implicit,
    /// Always use a joint configuration, left only by an explicit empty change.
    Explicit,
}

/// A (possibly multi-part) membership change. An empty `changes` list leaves a joint
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfChangeV2 {
    pub transition: ConfChangeTransition,
    pub changes: Vec<ConfChangeSingle>,
    pub context: Bytes,
}

impl ConfChangeV2 {
    /// A change of one node, applied without a joint configuration where possible.
    pub fn simple(change_type: ConfChangeType, node_id: NodeId) -> ConfChangeV2 {
        ConfChangeV2 {
            transition: ConfChangeTransition::Auto,
            changes: vec![ConfChangeSingle {
                change_type,
                node_id,
            }],
            context: Bytes::new(),
        }
    }

    /// The empty change that leaves a joint configuration.
    pub fn leave_joint() -> ConfChangeV2 {
        ConfChangeV2::default()
    }

    /// Whether this change leaves a joint configuration.
    pub fn leaves_joint(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether applying this change enters a joint configuration, and if so whether it
    /// is left automatically.
    pub fn enter_joint(&self) -> Option<bool> {
        if self.transition != ConfChangeTransition::Auto || self.changes.len() > 1 {
            Some(self.transition != ConfChangeTransition::Explicit)
        } else {
            None
        }
    }
}

/// The kinds of messages nodes exchange (and local inputs fed through `step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageType {
    /// Local: start an election.
    #[default]
    Hup,
    /// Local: the leader should broadcast heartbeats.
    Beat,
    /// Local or forwarded: append entries to the log.
    Propose,
    Append,
    AppendResponse,
    RequestVote,
    RequestVoteResponse,
    RequestPreVote,
    RequestPreVoteResponse,
    Snapshot,
    Heartbeat,
    HeartbeatResponse,
    /// Local: a snapshot send to `from` ended (reject = failed).
    SnapStatus,
    /// Local: the transport lost contact with `from`.
    Unreachable,
    /// Local or forwarded: ask the leader to hand leadership to `from`.
    TransferLeader,
    /// Leader to transferee: campaign now, ignoring the election timeout.
    TimeoutNow,
    /// Local or forwarded: a linearizable read request; `entries[0].data` is the context.
    ReadIndex,
    ReadIndexResponse,
    /// Local: the leader checks it still hears from a quorum.
    CheckQuorum,
}

impl MessageType {
    /// Local messages never cross the network.
    pub fn is_local(self) -> bool {
        matches!(
            self,
            MessageType::Hup
                | MessageType::Beat
                | MessageType::SnapStatus
                | MessageType::Unreachable
                | MessageType::CheckQuorum
        )
    }

    /// Responses are answers to a request from the peer they are sent to.
    pub fn is_response(self) -> bool {
        matches!(
            self,
            MessageType::AppendResponse
                | MessageType::RequestVoteResponse
                | MessageType::RequestPreVoteResponse
                | MessageType::HeartbeatResponse
                | MessageType::Unreachable
                | MessageType::ReadIndexResponse
        )
    }

    /// The response kind of a vote request.
    pub fn vote_response(self) -> MessageType {
        match self {
            MessageType::RequestVote => MessageType::RequestVoteResponse,
            MessageType::RequestPreVote => MessageType::RequestPreVoteResponse,
            other => other,
        }
    }
}

/// A Raft message. Fields not used by a kind are left at their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub msg_type: MessageType,
    pub to: NodeId,
    pub from: NodeId,
    pub term: u64,
    /// Term of the entry at `index` (append: the entry before `entries`; vote: the
    /// candidate's last term).
    pub log_term: u64,
    pub index: u64,
    pub entries: Vec<Entry>,
    pub commit: u64,
    pub snapshot: Option<Snapshot>,
    pub reject: bool,
    pub reject_hint: u64,
    /// Opaque to Raft: ReadIndex request contexts ride on heartbeats here.
    pub context: Bytes,
}

impl Message {
    pub fn new(msg_type: MessageType, from: NodeId, to: NodeId) -> Message {
        Message {
            msg_type,
            from,
            to,
            ..Default::default()
        }
    }
}
