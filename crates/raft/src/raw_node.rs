//! `RawNode`: the application's handle on a `Raft`, with the Ready / advance loop.
//!
//! The loop an application runs:
//! 1. feed input: `tick()` on a timer, `step(m)` for messages from peers,
//!    `propose`, `read_index`, ...;
//! 2. when `has_ready()`, take `ready()` and, in this order:
//!    - send `messages` (these may leave before anything of this Ready is durable);
//!    - persist `snapshot` (if any), `entries` and `hard_state` (one fsync covers
//!      them all: group commit);
//!    - send `persisted_messages` (only now: they promise durability);
//!    - apply `committed_entries` (after the persist above: a committed entry may be
//!      among this Ready's `entries`), and serve `read_states` once applied up to
//!      their index;
//! 3. call `advance(ready)`.
//!
//! Which messages may go out before the Ready's state is durable (`messages`):
//! - `Append`, `Snapshot`, `Heartbeat`, `TimeoutNow`, `ReadIndexResponse` from a
//!   leader: they promise nothing about the leader's own disk. A leader counts itself
//!   toward a quorum only for entries it has persisted (see `advance`), so writing
//!   its log in parallel with replication is safe (Raft thesis §10.2.1).
//! - `Propose`, `ReadIndex`, `TransferLeader` forwarded by a follower.
//!
//! Which must wait until the Ready's entries and hard state are durable
//! (`persisted_messages`):
//! - `RequestVote` / `RequestPreVote` (the candidate's term and self-vote must
//!   survive a crash, or it could vote twice in one term);
//! - `RequestVoteResponse` / `RequestPreVoteResponse` (the vote must be durable);
//! - `AppendResponse` (it acknowledges entries as stored);
//! - `HeartbeatResponse` (it may carry a term learned from the heartbeat).

use bytes::Bytes;

use crate::config::Config;
use crate::raft::{Raft, RaftError, SoftState, StateRole};
use crate::read_only::ReadState;
use crate::storage::Storage;
use crate::tracker::Progress;
use crate::types::*;
use crate::Encode;

/// Everything the application must do next (see the module docs for the order).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Ready {
    /// Set when leader or role changed.
    pub soft_state: Option<SoftState>,
    /// Set when term, vote or commit changed: persist it.
    pub hard_state: Option<HardState>,
    pub read_states: Vec<ReadState>,
    /// Entries to persist.
    pub entries: Vec<Entry>,
    /// Snapshot to persist and load into the state machine.
    pub snapshot: Option<Snapshot>,
    /// Entries to apply.
    pub committed_entries: Vec<Entry>,
    /// Messages that may be sent at once.
    pub messages: Vec<Message>,
    /// Messages to send only after persisting this Ready.
    pub persisted_messages: Vec<Message>,
    /// Whether the persist must be fsync'd (entries, a vote or a term changed; a
    /// commit-index-only change need not be, as it can be recovered).
    pub must_sync: bool,
}

/// Whether a message may be sent before the Ready it came in is durable.
pub fn may_send_before_persist(t: MessageType) -> bool {
    matches!(
        t,
        MessageType::Append
            | MessageType::Snapshot
            | MessageType::Heartbeat
            | MessageType::TimeoutNow
            | MessageType::ReadIndexResponse
            | MessageType::Propose
            | MessageType::ReadIndex
            | MessageType::TransferLeader
    )
}

/// How a snapshot send ended, for `report_snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotStatus {
    Finish,
    Failure,
}

/// A summary of the node's state.
#[derive(Debug, Clone)]
pub struct Status {
    pub id: NodeId,
    pub hard_state: HardState,
    pub soft_state: SoftState,
    pub applied: u64,
    /// Followers' progress (leader only).
    pub progress: Vec<(NodeId, Progress)>,
    pub lead_transferee: Option<NodeId>,
}

pub struct RawNode<S: Storage> {
    pub raft: Raft<S>,
    prev_soft_state: SoftState,
    prev_hard_state: HardState,
}

impl<S: Storage> RawNode<S> {
    pub fn new(config: &Config, store: S) -> Result<RawNode<S>, RaftError> {
        let raft = Raft::new(config, store)?;
        let prev_soft_state = raft.soft_state();
        let prev_hard_state = raft.hard_state();
        Ok(RawNode {
            raft,
            prev_soft_state,
            prev_hard_state,
        })
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Starts an election now.
    pub fn campaign(&mut self) -> Result<(), RaftError> {
        self.raft.step(Message::new(MessageType::Hup, NONE, NONE))
    }

    /// Proposes `data` for the log. `ProposalDropped` means it was not accepted (no
    /// leader, transfer in progress, size limit): the caller may retry.
    pub fn propose(&mut self, data: impl Into<Bytes>) -> Result<(), RaftError> {
        self.propose_batch(vec![Entry::normal(data)])
    }

    /// Proposes several entries in one message (one append for all of them).
    pub fn propose_batch(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        let id = self.raft.id;
        self.raft.step(Message {
            msg_type: MessageType::Propose,
            from: id,
            entries,
            ..Default::default()
        })
    }

    /// Proposes a membership change.
    pub fn propose_conf_change(&mut self, cc: &ConfChangeV2) -> Result<(), RaftError> {
        self.propose_batch(vec![Entry {
            entry_type: EntryType::ConfChange,
            data: cc.encode(),
            ..Default::default()
        }])
    }

    /// Applies a committed membership change; returns the new membership (to store
    /// with snapshots).
    pub fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> Result<ConfState, RaftError> {
        self.raft.apply_conf_change(cc)
    }

    /// Steps a message received from a peer. Local kinds are refused, responses
    /// from peers we do not know are dropped, and messages no correct member sends
    /// are refused unstepped (`RaftError::InvalidMessage`, see `peer_check`).
    pub fn step(&mut self, m: Message) -> Result<(), RaftError> {
        if m.msg_type.is_local() {
            return Err(RaftError::StepLocalMsg);
        }
        if m.msg_type.is_response() && !self.raft.prs.progress.contains_key(&m.from) {
            return Err(RaftError::StepPeerNotFound);
        }
        if let Err(reason) = self.raft.check_peer_message(&m) {
            return Err(RaftError::InvalidMessage {
                from: m.from,
                msg_type: m.msg_type,
                reason,
            });
        }
        self.raft.step(m)
    }

    /// Requests a linearizable read point; it appears in a later `Ready::read_states`
    /// tagged with `ctx`, which must be unique per request (a retry must use a new
    /// context, never reuse an old one: etcd #20418).
    pub fn read_index(&mut self, ctx: impl Into<Bytes>) -> Result<(), RaftError> {
        self.raft.step(Message {
            msg_type: MessageType::ReadIndex,
            entries: vec![Entry::normal(ctx)],
            ..Default::default()
        })
    }

    /// Asks the leader to hand leadership to `transferee`.
    pub fn transfer_leader(&mut self, transferee: NodeId) {
        let _ = self.raft.step(Message {
            msg_type: MessageType::TransferLeader,
            from: transferee,
            ..Default::default()
        });
    }

    pub fn report_unreachable(&mut self, id: NodeId) {
        let _ = self
            .raft
            .step(Message::new(MessageType::Unreachable, id, NONE));
    }

    pub fn report_snapshot(&mut self, id: NodeId, status: SnapshotStatus) {
        let mut m = Message::new(MessageType::SnapStatus, id, NONE);
        m.reject = status == SnapshotStatus::Failure;
        let _ = self.raft.step(m);
    }

    /// Whether `ready()` has anything to do.
    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        r.soft_state() != self.prev_soft_state
            || (r.hard_state() != self.prev_hard_state && !r.hard_state().is_empty())
            || r.raft_log.unstable_snapshot().is_some()
            || !r.raft_log.unstable_entries().is_empty()
            || !r.msgs.is_empty()
            || !r.read_states.is_empty()
            || r.raft_log.has_next_committed_entries()
    }

    /// What to persist, send and apply now. Must be followed by `advance` with the
    /// same Ready before the next call.
    pub fn ready(&mut self) -> Ready {
        let r = &mut self.raft;
        let mut rd = Ready {
            entries: r.raft_log.unstable_entries().to_vec(),
            committed_entries: r
                .raft_log
                .next_committed_entries(r.max_committed_size_per_ready()),
            ..Default::default()
        };
        let ss = r.soft_state();
        if ss != self.prev_soft_state {
            rd.soft_state = Some(ss);
        }
        let hs = r.hard_state();
        if hs != self.prev_hard_state {
            rd.must_sync =
                hs.term != self.prev_hard_state.term || hs.vote != self.prev_hard_state.vote;
            rd.hard_state = Some(hs);
        }
        if let Some(s) = r.raft_log.unstable_snapshot() {
            rd.snapshot = Some(s.clone());
            rd.must_sync = true;
        }
        rd.must_sync |= !rd.entries.is_empty();
        for m in std::mem::take(&mut r.msgs) {
            if may_send_before_persist(m.msg_type) {
                rd.messages.push(m);
            } else {
                rd.persisted_messages.push(m);
            }
        }
        rd.read_states = std::mem::take(&mut r.read_states);
        rd
    }

    /// The application has persisted and applied `rd` (see the module docs).
    pub fn advance(&mut self, rd: Ready) {
        if let Some(ss) = rd.soft_state {
            self.prev_soft_state = ss;
        }
        if let Some(hs) = rd.hard_state {
            self.prev_hard_state = hs;
        }
        if let Some(s) = &rd.snapshot {
            // The application loaded the snapshot into its state machine.
            self.raft.on_persisted_snapshot(s.metadata.index);
            self.raft.raft_log.applied = self.raft.raft_log.applied.max(s.metadata.index);
        }
        if let Some(e) = rd.entries.last() {
            self.raft.on_persisted(e.index, e.term);
        }
        if let Some(e) = rd.committed_entries.last() {
            let index = e.index;
            self.raft.reduce_uncommitted_size(&rd.committed_entries);
            self.raft.applied_to(index);
        }
    }

    pub fn status(&self) -> Status {
        let r = &self.raft;
        Status {
            id: r.id,
            hard_state: r.hard_state(),
            soft_state: r.soft_state(),
            applied: r.raft_log.applied,
            progress: if r.state == StateRole::Leader {
                r.prs
                    .progress
                    .iter()
                    .map(|(id, p)| (*id, p.clone()))
                    .collect()
            } else {
                Vec::new()
            },
            lead_transferee: r.lead_transferee,
        }
    }

    pub fn store(&self) -> &S {
        &self.raft.raft_log.store
    }
}
