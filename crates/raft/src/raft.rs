//! `Raft`: one node's protocol state machine. Input arrives through [`Raft::step`]
//! (messages, local requests) and [`Raft::tick`] (time); output accumulates in
//! `msgs`, `read_states` and the log, and leaves through `RawNode::ready`.
//!
//! The rules that make it safe, and where they are enforced:
//! - one vote per term, granted only to a candidate whose log is at least as up to
//!   date as ours (`step`, vote handling); the vote and term are persisted before
//!   the vote response is sent (vote responses are "after persist" messages);
//! - a leader commits by counting only entries of its own term
//!   (`RaftLog::maybe_commit` via `maybe_commit`), and counts itself only for
//!   entries it has persisted (`on_persisted`), so an acknowledged entry is durable
//!   on a quorum even if the leader crashes right after acknowledging;
//! - committed entries are never truncated (`RaftLog` panics rather than do so);
//! - ReadIndex is answered only once the leader has committed an entry of its term
//!   and (Safe) a quorum acknowledged a heartbeat sent after the request arrived;
//! - at most one configuration change is pending (uncommitted or unapplied) at a time.

use bytes::Bytes;

use crate::confchange::{self, Changer, ConfChangeError};
use crate::config::{Config, ConfigError, ReadOnlyOption};
use crate::quorum::VoteResult;
use crate::raft_log::RaftLog;
use crate::read_only::{ReadOnly, ReadState};
use crate::storage::{Storage, StorageError};
use crate::tracker::{ProgressState, ProgressTracker};
use crate::types::*;
use crate::util::Rng;
use crate::Decode;

/// The context of vote requests sent because of a leader transfer: they are honoured
/// even by nodes that still hear from the current leader.
pub const CAMPAIGN_TRANSFER: &[u8] = b"CampaignTransfer";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateRole {
    #[default]
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Volatile state worth reporting when it changes (not persisted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SoftState {
    pub leader_id: NodeId,
    pub raft_state: StateRole,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    #[error("raft proposal dropped")]
    ProposalDropped,
    #[error("raft: cannot step raft local message")]
    StepLocalMsg,
    #[error("raft: cannot step as peer not found")]
    StepPeerNotFound,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StorageError),
    #[error(transparent)]
    ConfChange(#[from] ConfChangeError),
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A peer message no correct member sends (see `peer_check`); nothing changed.
    #[error("raft: refused {msg_type:?} from {from:x}: {reason}")]
    InvalidMessage {
        from: NodeId,
        msg_type: MessageType,
        reason: String,
    },
}

/// Known bugs that tests can plant to prove the checks catch them.
#[cfg(feature = "planted-bugs")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlantedBug {
    #[default]
    None,
    /// Commit by counting replicas of any entry, not only current-term ones (the
    /// Figure 8 mistake).
    CommitOldTermByCounting,
    /// Grant votes without checking the candidate's log is up to date.
    VoteWithoutLogCheck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CampaignType {
    PreElection,
    Election,
    Transfer,
}

pub struct Raft<S: Storage> {
    pub id: NodeId,
    pub term: u64,
    pub vote: NodeId,
    pub raft_log: RaftLog<S>,
    pub prs: ProgressTracker,
    pub state: StateRole,
    pub is_learner: bool,
    pub leader_id: NodeId,
    /// The target of a leader transfer in progress.
    pub lead_transferee: Option<NodeId>,
    /// Index of the newest conf change appended; a new one is refused until it is
    /// applied.
    pub pending_conf_index: u64,
    /// Bytes of uncommitted payload appended by this leader.
    pub uncommitted_size: u64,
    pub msgs: Vec<Message>,
    pub read_states: Vec<ReadState>,
    read_only: ReadOnly,
    /// ReadIndex requests that arrived before this leader committed in its term.
    pending_read_index_messages: Vec<Message>,
    /// Highest index known durable on this node (leader self-acknowledgement).
    persisted: u64,
    election_elapsed: usize,
    heartbeat_elapsed: usize,
    heartbeat_timeout: usize,
    election_timeout: usize,
    randomized_election_timeout: usize,
    check_quorum: bool,
    pre_vote: bool,
    disable_proposal_forwarding: bool,
    max_msg_size: u64,
    max_uncommitted_size: u64,
    max_committed_size_per_ready: u64,
    rng: Rng,
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: PlantedBug,
}

impl<S: Storage> Raft<S> {
    pub fn new(c: &Config, store: S) -> Result<Raft<S>, RaftError> {
        c.validate()?;
        let rs = store.initial_state()?;
        let mut raft_log = RaftLog::new(store)?;
        let last_index = raft_log.last_index();
        let (cfg, progress) = confchange::restore(
            &rs.conf_state,
            last_index,
            c.max_inflight_msgs,
            c.max_inflight_bytes,
        )?;
        let mut prs = ProgressTracker::new(c.max_inflight_msgs, c.max_inflight_bytes);
        prs.config = cfg;
        prs.progress = progress;
        let hs = rs.hard_state;
        if !hs.is_empty() {
            if hs.commit < raft_log.committed || hs.commit > last_index {
                return Err(RaftError::InvalidState(format!(
                    "hard state commit {} is out of range [{}, {}]",
                    hs.commit, raft_log.committed, last_index
                )));
            }
            raft_log.committed = hs.commit;
        }
        if c.applied > 0 {
            if c.applied > raft_log.committed {
                return Err(RaftError::InvalidState(format!(
                    "applied {} is beyond commit {}",
                    c.applied, raft_log.committed
                )));
            }
            raft_log.applied = c.applied.max(raft_log.applied);
        }
        let mut r = Raft {
            id: c.id,
            term: hs.term,
            vote: hs.vote,
            persisted: last_index,
            raft_log,
            is_learner: false,
            prs,
            state: StateRole::Follower,
            leader_id: NONE,
            lead_transferee: None,
            pending_conf_index: 0,
            uncommitted_size: 0,
            msgs: Vec::new(),
            read_states: Vec::new(),
            read_only: ReadOnly::new(c.read_only_option),
            pending_read_index_messages: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            heartbeat_timeout: c.heartbeat_tick,
            election_timeout: c.election_tick,
            randomized_election_timeout: c.election_tick,
            check_quorum: c.check_quorum,
            pre_vote: c.pre_vote,
            disable_proposal_forwarding: c.disable_proposal_forwarding,
            max_msg_size: c.max_size_per_msg,
            max_uncommitted_size: c.max_uncommitted_entries_size,
            max_committed_size_per_ready: c.max_committed_size_per_ready,
            rng: Rng::new(c.seed ^ c.id.wrapping_mul(0x9E37_79B9)),
            #[cfg(feature = "planted-bugs")]
            planted_bug: PlantedBug::None,
        };
        r.is_learner = r.prs.progress.get(&r.id).is_some_and(|p| p.is_learner);
        let term = r.term;
        r.become_follower(term, NONE);
        Ok(r)
    }

    pub fn soft_state(&self) -> SoftState {
        SoftState {
            leader_id: self.leader_id,
            raft_state: self.state,
        }
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.raft_log.committed,
        }
    }

    pub fn election_timeout(&self) -> usize {
        self.election_timeout
    }

    pub fn randomized_election_timeout(&self) -> usize {
        self.randomized_election_timeout
    }

    pub fn max_committed_size_per_ready(&self) -> u64 {
        self.max_committed_size_per_ready
    }

    /// Whether this node may become leader: a voter of the current configuration.
    pub fn promotable(&self) -> bool {
        self.prs
            .progress
            .get(&self.id)
            .is_some_and(|p| !p.is_learner)
    }

    fn send(&mut self, mut m: Message) {
        if m.from == NONE {
            m.from = self.id;
        }
        if matches!(
            m.msg_type,
            MessageType::RequestVote
                | MessageType::RequestPreVote
                | MessageType::RequestVoteResponse
                | MessageType::RequestPreVoteResponse
        ) {
            // Vote messages carry their term explicitly (a pre-vote uses term + 1).
            debug_assert!(m.term != 0, "vote message {:?} without a term", m.msg_type);
        } else if m.msg_type != MessageType::Propose && m.msg_type != MessageType::ReadIndex {
            // Forwarded proposals and reads are local-term-free, like etcd's.
            m.term = self.term;
        }
        self.msgs.push(m);
    }

    // ---- replication (leader) ----------------------------------------------------

    /// Sends entries (or a snapshot) to `to` if its progress allows. With
    /// `send_if_empty`, an append without entries still goes out (to carry the commit
    /// index or probe).
    fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.prs.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next_idx;
        let term = self.raft_log.term(next - 1);
        let ents = self.raft_log.entries(next, self.max_msg_size);
        if let (Ok(ents), Ok(log_term)) = (&ents, &term) {
            if ents.is_empty() && !send_if_empty {
                return false;
            }
            let last = ents.last().map(|e| e.index);
            let bytes: u64 = ents.iter().map(|e| e.size()).sum();
            let pr = self.prs.progress.get_mut(&to).expect("checked above");
            match pr.state {
                ProgressState::Replicate => {
                    if let Some(last) = last {
                        pr.optimistic_update(last);
                        pr.inflights.add(last, bytes);
                    }
                }
                ProgressState::Probe => pr.probe_sent = true,
                ProgressState::Snapshot => unreachable!("paused in snapshot state"),
            }
            let m = Message {
                msg_type: MessageType::Append,
                to,
                index: next - 1,
                log_term: *log_term,
                entries: ents.clone(),
                commit: self.raft_log.committed,
                ..Default::default()
            };
            self.send(m);
            return true;
        }
        // The entries the follower needs are compacted: send a snapshot.
        if !self.prs.progress[&to].recent_active {
            return false;
        }
        let snap = match self.raft_log.snapshot(next - 1) {
            Ok(s) => s,
            Err(StorageError::SnapshotTemporarilyUnavailable) => return false,
            Err(e) => panic!("raft: leader {} cannot get a snapshot: {e}", self.id),
        };
        assert!(!snap.is_empty(), "need a non-empty snapshot");
        let sindex = snap.metadata.index;
        self.prs
            .progress
            .get_mut(&to)
            .expect("checked above")
            .become_snapshot(sindex);
        self.send(Message {
            msg_type: MessageType::Snapshot,
            to,
            snapshot: Some(snap),
            ..Default::default()
        });
        true
    }

    fn send_append(&mut self, to: NodeId) {
        self.maybe_send_append(to, true);
    }

    fn send_heartbeat(&mut self, to: NodeId, ctx: Bytes) {
        let matched = self.prs.progress.get(&to).map_or(0, |p| p.matched);
        let commit = matched.min(self.raft_log.committed);
        self.send(Message {
            msg_type: MessageType::Heartbeat,
            to,
            commit,
            context: ctx,
            ..Default::default()
        });
    }

    fn peers(&self) -> Vec<NodeId> {
        self.prs
            .progress
            .keys()
            .copied()
            .filter(|id| *id != self.id)
            .collect()
    }

    pub fn bcast_append(&mut self) {
        for id in self.peers() {
            self.send_append(id);
        }
    }

    fn bcast_heartbeat(&mut self) {
        let ctx = self
            .read_only
            .last_pending_request_ctx()
            .unwrap_or_default();
        for id in self.peers() {
            self.send_heartbeat(id, ctx.clone());
        }
    }

    /// Advances the commit index if a quorum acknowledged more. Returns whether it
    /// moved.
    fn maybe_commit(&mut self) -> bool {
        let mci = self.prs.committed();
        #[cfg(feature = "planted-bugs")]
        if self.planted_bug == PlantedBug::CommitOldTermByCounting {
            return self.raft_log.maybe_commit_any_term(mci);
        }
        self.raft_log.maybe_commit(mci, self.term)
    }

    /// The application persisted entries up to `index` (term `term`).
    pub fn on_persisted(&mut self, index: u64, term: u64) {
        if self.raft_log.term(index).is_ok_and(|t| t == term) {
            self.raft_log.stable_to(index, term);
            if index > self.persisted {
                self.persisted = index;
            }
            if self.state == StateRole::Leader {
                let id = self.id;
                if let Some(pr) = self.prs.progress.get_mut(&id) {
                    pr.maybe_update(index);
                }
                if self.maybe_commit() {
                    self.on_commit_advanced();
                    self.bcast_append();
                }
            }
        }
    }

    /// The application persisted the snapshot at `index`.
    pub fn on_persisted_snapshot(&mut self, index: u64) {
        self.raft_log.stable_snap_to(index);
        if index > self.persisted {
            self.persisted = index;
        }
    }

    /// Called after a leader's commit index moved: releases reads waiting for the
    /// term's first commit.
    fn on_commit_advanced(&mut self) {
        if self.committed_entry_in_current_term() && !self.pending_read_index_messages.is_empty() {
            for m in std::mem::take(&mut self.pending_read_index_messages) {
                self.handle_read_index_as_leader(m);
            }
        }
    }

    fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = NONE;
        }
        self.leader_id = NONE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_election_timeout();
        self.lead_transferee = None;
        self.prs.reset_votes();
        let last = self.raft_log.last_index();
        let (id, persisted) = (self.id, self.persisted.min(last));
        for (pid, pr) in self.prs.progress.iter_mut() {
            let is_learner = pr.is_learner;
            *pr = crate::tracker::Progress::new(
                last + 1,
                self.prs.max_inflight,
                self.prs.max_inflight_bytes,
            );
            pr.is_learner = is_learner;
            if *pid == id {
                pr.matched = persisted;
            }
        }
        self.pending_conf_index = 0;
        self.uncommitted_size = 0;
        self.read_only = ReadOnly::new(self.read_only.option);
        self.pending_read_index_messages.clear();
    }

    fn reset_randomized_election_timeout(&mut self) {
        let t = self.election_timeout as u64;
        self.randomized_election_timeout = (t + self.rng.below(t)) as usize;
    }

    /// Appends proposed entries as leader. Returns false (nothing appended) when the
    /// uncommitted size limit would be exceeded.
    fn append_entry(&mut self, es: &mut [Entry]) -> bool {
        let li = self.raft_log.last_index();
        for (i, e) in es.iter_mut().enumerate() {
            e.term = self.term;
            e.index = li + 1 + i as u64;
        }
        if !self.increase_uncommitted_size(es) {
            return false;
        }
        self.raft_log.append(es);
        true
    }

    fn increase_uncommitted_size(&mut self, es: &[Entry]) -> bool {
        let s: u64 = es.iter().map(|e| e.payload_size()).sum();
        if self.max_uncommitted_size > 0
            && self.uncommitted_size > 0
            && s > 0
            && self.uncommitted_size + s > self.max_uncommitted_size
        {
            return false;
        }
        self.uncommitted_size += s;
        true
    }

    /// Committed entries of this size were handed to the application.
    pub fn reduce_uncommitted_size(&mut self, ents: &[Entry]) {
        if self.uncommitted_size == 0 {
            return;
        }
        let s: u64 = ents.iter().map(|e| e.payload_size()).sum();
        self.uncommitted_size = self.uncommitted_size.saturating_sub(s);
    }

    // ---- roles -------------------------------------------------------------------

    pub fn become_follower(&mut self, term: u64, leader_id: NodeId) {
        self.reset(term);
        self.leader_id = leader_id;
        self.state = StateRole::Follower;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.state, StateRole::Leader, "leader -> pre-candidate");
        // A pre-candidate changes neither term nor vote.
        self.prs.reset_votes();
        self.leader_id = NONE;
        self.state = StateRole::PreCandidate;
    }

    fn become_candidate(&mut self) {
        assert_ne!(self.state, StateRole::Leader, "leader -> candidate");
        let term = self.term + 1;
        self.reset(term);
        self.vote = self.id;
        self.state = StateRole::Candidate;
    }

    fn become_leader(&mut self) {
        assert_ne!(self.state, StateRole::Follower, "follower -> leader");
        let term = self.term;
        self.reset(term);
        self.leader_id = self.id;
        self.state = StateRole::Leader;
        let id = self.id;
        if let Some(pr) = self.prs.progress.get_mut(&id) {
            // We know our own log; replicate-state lets us ack ourselves as we persist.
            pr.become_replicate();
            pr.recent_active = true;
        }
        // Conservatively treat every unapplied entry as a possible conf change.
        self.pending_conf_index = self.raft_log.last_index();
        let mut noop = [Entry::default()];
        let appended = self.append_entry(&mut noop);
        debug_assert!(appended, "an empty entry is never refused");
    }

    // ---- time --------------------------------------------------------------------

    pub fn tick(&mut self) {
        match self.state {
            StateRole::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            let _ = self.step(Message::new(MessageType::Hup, self.id, NONE));
        }
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_timeout {
            self.election_elapsed = 0;
            if self.check_quorum {
                let _ = self.step(Message::new(MessageType::CheckQuorum, self.id, NONE));
            }
            // A transfer that did not finish within an election timeout is abandoned.
            if self.state == StateRole::Leader && self.lead_transferee.is_some() {
                self.lead_transferee = None;
            }
        }
        if self.state != StateRole::Leader {
            return;
        }
        if self.heartbeat_elapsed >= self.heartbeat_timeout {
            self.heartbeat_elapsed = 0;
            let _ = self.step(Message::new(MessageType::Beat, self.id, NONE));
        }
    }

    // ---- elections ---------------------------------------------------------------

    fn has_unapplied_conf_changes(&self) -> bool {
        let lo = self.raft_log.applied + 1;
        let hi = self.raft_log.committed + 1;
        if lo >= hi {
            return false;
        }
        match self.raft_log.slice(lo, hi, u64::MAX) {
            Ok(ents) => ents.iter().any(|e| e.entry_type == EntryType::ConfChange),
            Err(_) => true,
        }
    }

    fn hup(&mut self, t: CampaignType) {
        if self.state == StateRole::Leader || !self.promotable() {
            return;
        }
        if self.has_unapplied_conf_changes() {
            // Campaigning now could make us leader under a membership we have not
            // applied yet.
            return;
        }
        self.campaign(t);
    }

    fn campaign(&mut self, t: CampaignType) {
        if !self.promotable() {
            return;
        }
        let (vote_msg, term) = if t == CampaignType::PreElection {
            self.become_pre_candidate();
            (MessageType::RequestPreVote, self.term + 1)
        } else {
            self.become_candidate();
            (MessageType::RequestVote, self.term)
        };
        let id = self.id;
        if self.poll(id, true) == VoteResult::Won {
            // A single-voter cluster wins at once.
            if t == CampaignType::PreElection {
                self.campaign(CampaignType::Election);
            } else {
                self.become_leader();
            }
            return;
        }
        let (last_index, last_term) = (self.raft_log.last_index(), self.raft_log.last_term());
        let context = if t == CampaignType::Transfer {
            Bytes::from_static(CAMPAIGN_TRANSFER)
        } else {
            Bytes::new()
        };
        for to in self.prs.voter_ids() {
            if to == id {
                continue;
            }
            self.send(Message {
                msg_type: vote_msg,
                to,
                term,
                index: last_index,
                log_term: last_term,
                context: context.clone(),
                ..Default::default()
            });
        }
    }

    fn poll(&mut self, id: NodeId, granted: bool) -> VoteResult {
        self.prs.record_vote(id, granted);
        self.prs.tally_votes().2
    }

    /// Whether this node grants a vote for a request from `m.from`.
    fn can_grant_vote(&self, m: &Message) -> bool {
        let can_vote = self.vote == m.from
            || (self.vote == NONE && self.leader_id == NONE)
            || (m.msg_type == MessageType::RequestPreVote && m.term > self.term);
        #[cfg(feature = "planted-bugs")]
        if self.planted_bug == PlantedBug::VoteWithoutLogCheck {
            return can_vote;
        }
        can_vote && self.raft_log.is_up_to_date(m.index, m.log_term)
    }

    // ---- step --------------------------------------------------------------------

    /// Feeds one message (or local request) into the state machine.
    pub fn step(&mut self, m: Message) -> Result<(), RaftError> {
        if m.term == 0 {
            // Local message.
        } else if m.term > self.term {
            if matches!(
                m.msg_type,
                MessageType::RequestVote | MessageType::RequestPreVote
            ) {
                let force = m.context.as_ref() == CAMPAIGN_TRANSFER;
                let in_lease = self.check_quorum
                    && self.leader_id != NONE
                    && self.election_elapsed < self.election_timeout;
                if !force && in_lease {
                    // We heard from a live leader recently: ignore a disruptive vote
                    // (e.g. from a node rejoining after a partition).
                    return Ok(());
                }
            }
            match m.msg_type {
                MessageType::RequestPreVote => {}
                MessageType::RequestPreVoteResponse if !m.reject => {
                    // We bump our term only when the pre-vote wins.
                }
                MessageType::Append | MessageType::Heartbeat | MessageType::Snapshot => {
                    self.become_follower(m.term, m.from);
                }
                _ => self.become_follower(m.term, NONE),
            }
        } else if m.term < self.term {
            if (self.check_quorum || self.pre_vote)
                && matches!(m.msg_type, MessageType::Heartbeat | MessageType::Append)
            {
                // A stale leader: tell it our term so it steps down. Without this, a
                // node that was partitioned and pre-votes could never disrupt, and
                // the stale leader would never learn of the new term.
                let to = m.from;
                self.send(Message::new(MessageType::AppendResponse, self.id, to));
            } else if m.msg_type == MessageType::RequestPreVote {
                let to = m.from;
                let term = self.term;
                self.send(Message {
                    msg_type: MessageType::RequestPreVoteResponse,
                    to,
                    term,
                    reject: true,
                    ..Default::default()
                });
            }
            return Ok(());
        }

        match m.msg_type {
            MessageType::Hup => {
                let t = if self.pre_vote {
                    CampaignType::PreElection
                } else {
                    CampaignType::Election
                };
                self.hup(t);
            }
            MessageType::RequestVote | MessageType::RequestPreVote => {
                let grant = self.can_grant_vote(&m);
                let resp_type = m.msg_type.vote_response();
                if grant {
                    // A pre-vote response carries the term the candidate will use.
                    self.send(Message {
                        msg_type: resp_type,
                        to: m.from,
                        term: m.term,
                        ..Default::default()
                    });
                    if m.msg_type == MessageType::RequestVote {
                        self.election_elapsed = 0;
                        self.vote = m.from;
                    }
                } else {
                    let term = self.term;
                    self.send(Message {
                        msg_type: resp_type,
                        to: m.from,
                        term,
                        reject: true,
                        ..Default::default()
                    });
                }
            }
            _ => match self.state {
                StateRole::Leader => self.step_leader(m)?,
                StateRole::Candidate | StateRole::PreCandidate => self.step_candidate(m)?,
                StateRole::Follower => self.step_follower(m)?,
            },
        }
        Ok(())
    }

    fn step_leader(&mut self, mut m: Message) -> Result<(), RaftError> {
        match m.msg_type {
            MessageType::Beat => {
                self.bcast_heartbeat();
                return Ok(());
            }
            MessageType::CheckQuorum => {
                if !self.prs.quorum_active() {
                    let term = self.term;
                    self.become_follower(term, NONE);
                }
                let id = self.id;
                for (pid, pr) in self.prs.progress.iter_mut() {
                    pr.recent_active = *pid == id;
                }
                return Ok(());
            }
            MessageType::Propose => {
                if m.entries.is_empty() {
                    return Err(RaftError::InvalidState("proposal without entries".into()));
                }
                if !self.prs.progress.contains_key(&self.id) {
                    // Removed from the configuration: we may still be leader until
                    // stepping down, but must not take new proposals.
                    return Err(RaftError::ProposalDropped);
                }
                if self.lead_transferee.is_some() {
                    return Err(RaftError::ProposalDropped);
                }
                for i in 0..m.entries.len() {
                    if m.entries[i].entry_type != EntryType::ConfChange {
                        continue;
                    }
                    let refused = match ConfChangeV2::decode_bytes(m.entries[i].data.clone()) {
                        Err(_) => true,
                        Ok(cc) => {
                            let pending = self.pending_conf_index > self.raft_log.applied;
                            let joint = self.prs.config.voters.is_joint();
                            let leave = cc.leaves_joint();
                            pending || (joint && !leave) || (!joint && leave)
                        }
                    };
                    if refused {
                        // Keep the slot (callers track indexes) but make it harmless.
                        m.entries[i] = Entry::default();
                    } else {
                        self.pending_conf_index = self.raft_log.last_index() + i as u64 + 1;
                    }
                }
                if !self.append_entry(&mut m.entries) {
                    return Err(RaftError::ProposalDropped);
                }
                self.bcast_append();
                return Ok(());
            }
            MessageType::ReadIndex => {
                if self.prs.is_singleton() {
                    let index = self.raft_log.committed;
                    self.respond_read_index(m, index);
                    return Ok(());
                }
                if !self.committed_entry_in_current_term() {
                    // Our commit index may lag the true one until we commit in our
                    // term (Raft §6.4): answer once that happens.
                    self.pending_read_index_messages.push(m);
                    return Ok(());
                }
                self.handle_read_index_as_leader(m);
                return Ok(());
            }
            _ => {}
        }

        let from = m.from;
        if !self.prs.progress.contains_key(&from) {
            return Ok(());
        }
        match m.msg_type {
            MessageType::AppendResponse => self.handle_append_response(m),
            MessageType::HeartbeatResponse => self.handle_heartbeat_response(m),
            MessageType::SnapStatus => {
                let pr = self.prs.progress.get_mut(&from).expect("checked");
                if pr.state != ProgressState::Snapshot {
                    return Ok(());
                }
                if m.reject {
                    pr.pending_snapshot = 0;
                }
                pr.become_probe();
                // Wait for an append response or heartbeat before probing again.
                pr.probe_sent = true;
            }
            MessageType::Unreachable => {
                let pr = self.prs.progress.get_mut(&from).expect("checked");
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
            }
            MessageType::TransferLeader => {
                if self.prs.progress[&from].is_learner {
                    return Ok(());
                }
                if let Some(t) = self.lead_transferee {
                    if t == from {
                        return Ok(());
                    }
                    self.lead_transferee = None;
                }
                if from == self.id {
                    return Ok(());
                }
                self.election_elapsed = 0;
                self.lead_transferee = Some(from);
                if self.prs.progress[&from].matched == self.raft_log.last_index() {
                    self.send_timeout_now(from);
                } else {
                    self.send_append(from);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn handle_append_response(&mut self, m: Message) {
        let from = m.from;
        let last_index = self.raft_log.last_index();
        let first_index = self.raft_log.first_index();
        let pr = self.prs.progress.get_mut(&from).expect("checked by caller");
        pr.recent_active = true;
        if m.reject {
            let mut next_probe = m.reject_hint;
            if m.log_term > 0 {
                // Fast backtracking: skip every entry of ours with a term above the
                // follower's term at its hint.
                next_probe = self
                    .raft_log
                    .find_conflict_by_term(m.reject_hint, m.log_term)
                    .0;
            }
            let pr = self.prs.progress.get_mut(&from).expect("checked");
            if pr.maybe_decr_to(m.index, next_probe) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from);
            }
            return;
        }
        let old_paused = pr.is_paused();
        if !pr.maybe_update(m.index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.matched + 1 >= first_index => {
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.inflights.free_le(m.index),
        }
        let matched = pr.matched;
        if self.maybe_commit() {
            self.on_commit_advanced();
            self.bcast_append();
        } else if old_paused {
            self.send_append(from);
        }
        // Fill the window while entries remain.
        while self.maybe_send_append(from, false) {}
        if self.lead_transferee == Some(from) && matched == last_index {
            self.send_timeout_now(from);
        }
    }

    fn handle_heartbeat_response(&mut self, m: Message) {
        let from = m.from;
        let last_index = self.raft_log.last_index();
        let pr = self.prs.progress.get_mut(&from).expect("checked by caller");
        pr.recent_active = true;
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            pr.inflights.free_first_one();
        }
        if pr.matched < last_index {
            self.send_append(from);
        }
        if self.read_only.option != ReadOnlyOption::Safe || m.context.is_empty() {
            return;
        }
        let Some(acks) = self.read_only.recv_ack(from, &m.context) else {
            return;
        };
        let acks = acks.clone();
        if self
            .prs
            .config
            .voters
            .vote_result(|id| acks.contains(&id).then_some(true))
            != VoteResult::Won
        {
            return;
        }
        for rs in self.read_only.advance(&m.context) {
            self.respond_read_index(rs.req, rs.index);
        }
    }

    fn committed_entry_in_current_term(&self) -> bool {
        self.raft_log.term_or_zero(self.raft_log.committed) == self.term
    }

    fn handle_read_index_as_leader(&mut self, m: Message) {
        let index = self.raft_log.committed;
        match self.read_only.option {
            ReadOnlyOption::Safe => {
                let ctx = m.entries[0].data.clone();
                self.read_only.add_request(index, m);
                let id = self.id;
                self.read_only.recv_ack(id, &ctx);
                for to in self.peers() {
                    self.send_heartbeat(to, ctx.clone());
                }
            }
            ReadOnlyOption::LeaseBased => self.respond_read_index(m, index),
        }
    }

    fn respond_read_index(&mut self, req: Message, index: u64) {
        if req.from == NONE || req.from == self.id {
            self.read_states.push(ReadState {
                index,
                request_ctx: req.entries[0].data.clone(),
            });
        } else {
            self.send(Message {
                msg_type: MessageType::ReadIndexResponse,
                to: req.from,
                index,
                entries: req.entries,
                ..Default::default()
            });
        }
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        self.send(Message::new(MessageType::TimeoutNow, self.id, to));
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), RaftError> {
        let my_resp = if self.state == StateRole::PreCandidate {
            MessageType::RequestPreVoteResponse
        } else {
            MessageType::RequestVoteResponse
        };
        match m.msg_type {
            MessageType::Propose => return Err(RaftError::ProposalDropped),
            MessageType::Append => {
                self.become_follower(m.term, m.from);
                self.handle_append(m);
            }
            MessageType::Heartbeat => {
                self.become_follower(m.term, m.from);
                self.handle_heartbeat(m);
            }
            MessageType::Snapshot => {
                self.become_follower(m.term, m.from);
                self.handle_snapshot(m);
            }
            t if t == my_resp => {
                match self.poll(m.from, !m.reject) {
                    VoteResult::Won => {
                        if self.state == StateRole::PreCandidate {
                            self.campaign(CampaignType::Election);
                        } else {
                            self.become_leader();
                            self.bcast_append();
                        }
                    }
                    VoteResult::Lost => {
                        // A rejected pre-vote carries our own term (or higher, which
                        // `step` already handled).
                        let term = self.term;
                        self.become_follower(term, NONE);
                    }
                    VoteResult::Pending => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn step_follower(&mut self, mut m: Message) -> Result<(), RaftError> {
        match m.msg_type {
            MessageType::Propose => {
                if self.leader_id == NONE || self.disable_proposal_forwarding {
                    return Err(RaftError::ProposalDropped);
                }
                m.to = self.leader_id;
                self.send(m);
            }
            MessageType::Append => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_append(m);
            }
            MessageType::Heartbeat => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_heartbeat(m);
            }
            MessageType::Snapshot => {
                self.election_elapsed = 0;
                self.leader_id = m.from;
                self.handle_snapshot(m);
            }
            MessageType::TransferLeader | MessageType::ReadIndex => {
                if self.leader_id == NONE {
                    return Err(RaftError::ProposalDropped);
                }
                m.to = self.leader_id;
                self.send(m);
            }
            MessageType::TimeoutNow => {
                // Transfers skip pre-vote: the leader asked us, so there is no
                // partition to protect against.
                self.hup(CampaignType::Transfer);
            }
            MessageType::ReadIndexResponse if m.entries.len() == 1 => {
                self.read_states.push(ReadState {
                    index: m.index,
                    request_ctx: m.entries[0].data.clone(),
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn handle_append(&mut self, m: Message) {
        let committed = self.raft_log.committed;
        if m.index < committed {
            self.send(Message {
                msg_type: MessageType::AppendResponse,
                to: m.from,
                index: committed,
                ..Default::default()
            });
            return;
        }
        match self
            .raft_log
            .maybe_append(m.index, m.log_term, m.commit, &m.entries)
        {
            Some(last_new) => {
                // Entries overwritten by a conflicting suffix are no longer durable.
                if let Some(first) = m.entries.first() {
                    if first.index <= self.persisted {
                        self.persisted = self.persisted.min(self.raft_log.unstable.offset - 1);
                    }
                }
                self.send(Message {
                    msg_type: MessageType::AppendResponse,
                    to: m.from,
                    index: last_new,
                    ..Default::default()
                });
            }
            None => {
                let hint = m.index.min(self.raft_log.last_index());
                let (hint_index, hint_term) = self.raft_log.find_conflict_by_term(hint, m.log_term);
                self.send(Message {
                    msg_type: MessageType::AppendResponse,
                    to: m.from,
                    index: m.index,
                    reject: true,
                    reject_hint: hint_index,
                    log_term: hint_term,
                    ..Default::default()
                });
            }
        }
    }

    fn handle_heartbeat(&mut self, m: Message) {
        self.raft_log.commit_to(m.commit);
        self.send(Message {
            msg_type: MessageType::HeartbeatResponse,
            to: m.from,
            context: m.context,
            ..Default::default()
        });
    }

    fn handle_snapshot(&mut self, m: Message) {
        let Some(snap) = m.snapshot else { return };
        let index = if self.restore(snap) {
            self.raft_log.last_index()
        } else {
            self.raft_log.committed
        };
        self.send(Message {
            msg_type: MessageType::AppendResponse,
            to: m.from,
            index,
            ..Default::default()
        });
    }

    /// Installs `snap` if it is newer than our commit. Returns whether it was installed.
    pub fn restore(&mut self, snap: Snapshot) -> bool {
        let meta = &snap.metadata;
        if meta.index <= self.raft_log.committed {
            return false;
        }
        if self.state != StateRole::Follower {
            // Defensive: only a follower should receive snapshots.
            let term = self.term + 1;
            self.become_follower(term, NONE);
            return false;
        }
        let cs = &meta.conf_state;
        let member = [&cs.voters, &cs.learners, &cs.voters_outgoing]
            .iter()
            .any(|set| set.contains(&self.id));
        if !member {
            return false;
        }
        if self.raft_log.match_term(meta.index, meta.term) {
            // We already have the log up to the snapshot: just fast-forward the commit.
            self.raft_log.commit_to(meta.index);
            return false;
        }
        let cs = cs.clone();
        let index = meta.index;
        self.raft_log.restore(snap);
        self.persisted = self.persisted.min(index);
        match confchange::restore(
            &cs,
            self.raft_log.last_index(),
            self.prs.max_inflight,
            self.prs.max_inflight_bytes,
        ) {
            Ok((cfg, prs)) => {
                self.prs.config = cfg;
                self.prs.progress = prs;
            }
            Err(e) => panic!("raft: snapshot at {index} has an invalid ConfState: {e}"),
        }
        self.is_learner = self
            .prs
            .progress
            .get(&self.id)
            .is_some_and(|p| p.is_learner);
        true
    }

    // ---- configuration -----------------------------------------------------------

    /// Applies a committed configuration change and returns the new membership.
    pub fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> Result<ConfState, RaftError> {
        let changer = Changer {
            config: &self.prs.config,
            progress: &self.prs.progress,
            last_index: self.raft_log.last_index(),
            max_inflight: self.prs.max_inflight,
            max_inflight_bytes: self.prs.max_inflight_bytes,
        };
        let (cfg, prs) = if cc.leaves_joint() {
            changer.leave_joint()?
        } else if let Some(auto_leave) = cc.enter_joint() {
            changer.enter_joint(auto_leave, &cc.changes)?
        } else {
            changer.simple(&cc.changes)?
        };
        Ok(self.switch_to_config(cfg, prs))
    }

    fn switch_to_config(
        &mut self,
        cfg: crate::tracker::TrackerConfig,
        prs: crate::tracker::ProgressMap,
    ) -> ConfState {
        self.prs.config = cfg;
        self.prs.progress = prs;
        let cs = self.prs.conf_state();
        let me = self.prs.progress.get(&self.id);
        self.is_learner = me.is_some_and(|p| p.is_learner);
        let still_voter = me.is_some_and(|p| !p.is_learner);
        if self.state != StateRole::Leader {
            return cs;
        }
        if !still_voter && !self.prs.config.voters.contains(self.id) {
            // Removed or demoted, and no longer a voter of any half: step down, and
            // hand leadership to the most up-to-date voter so the cluster does not
            // wait an election timeout.
            let last = self.raft_log.last_index();
            let heir = self
                .prs
                .voter_ids()
                .into_iter()
                .find(|id| self.prs.progress.get(id).is_some_and(|p| p.matched == last));
            if let Some(heir) = heir {
                self.send_timeout_now(heir);
            }
            let term = self.term;
            self.become_follower(term, NONE);
            return cs;
        }
        if self.maybe_commit() {
            self.on_commit_advanced();
            self.bcast_append();
        } else {
            for id in self.peers() {
                self.maybe_send_append(id, false);
            }
        }
        if let Some(t) = self.lead_transferee {
            if !self.prs.config.voters.contains(t) {
                self.lead_transferee = None;
            }
        }
        cs
    }

    /// The application applied entries up to `index`; a leader in an auto-leave joint
    /// configuration proposes leaving it once the change that entered it is applied.
    pub fn applied_to(&mut self, index: u64) {
        self.raft_log.applied_to(index);
        if self.prs.config.auto_leave
            && self.state == StateRole::Leader
            && index >= self.pending_conf_index
        {
            let data = crate::Encode::encode(&ConfChangeV2::leave_joint());
            let m = Message {
                msg_type: MessageType::Propose,
                from: self.id,
                entries: vec![Entry {
                    entry_type: EntryType::ConfChange,
                    data,
                    ..Default::default()
                }],
                ..Default::default()
            };
            // Refused only if another change is already pending, which then leaves.
            let _ = self.step(m);
        }
    }
}
