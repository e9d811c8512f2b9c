//! The Raft node loop: one OS thread owns the [`RawNode`], its in-memory log and,
//! through its [`NodeIo`], the WAL.
//!
//! The loop is split the openraft way: [`Node::turn`] decides (inputs in, Raft
//! stepped, every `Ready` handled in a fixed order) and its [`NodeIo`] performs the
//! effects, so a turn can be tested on a recorder (`node/tests.rs`). Each turn takes
//! every input that is waiting (proposals, read requests, peer messages, a tick),
//! feeds them to Raft, then handles each `Ready`:
//! 1. leadership changes are announced (the lease clock follows them);
//! 2. messages that may leave before persisting go to the transport;
//! 3. a received snapshot is saved (file, then WAL marker) and handed to the apply
//!    thread before any entry that follows it;
//! 4. the Ready's entries and hard state are framed into the WAL and made durable
//!    with **one** `fdatasync` (group commit: every proposal drained this turn shares
//!    it), then appended to the in-memory Raft log;
//! 5. the remaining messages (votes, append acknowledgements) are sent;
//! 6. read states are matched with the reads waiting for them;
//! 7. committed conf changes are applied to Raft **here** (Raft needs them at once to
//!    count quorums; the transport is told), and every committed entry goes, in
//!    order, to the apply thread, which records membership in the backend.
//!
//! Under a deep backlog of writes the loop groups them: when at least
//! [`GROUPING_BACKLOG`] proposals of this member wait for their outcome
//! (`etcd_server_proposals_pending`), a turn that has an input waits [`GROUPING_PAUSE`]
//! before draining the rest ([`grouping_pause`]). Each turn has costs that do not grow
//! with its size: the WAL's `fdatasync`, an append message to each follower and the
//! follower's own turn, fsync and acknowledgement, a backend transaction in the apply
//! thread, and the thread wake-ups between them. With 1000 clients writing to the
//! leader the CPU, not the disk, is what the writes queue for: the leader's WAL fsync
//! covered 17 proposals, and with the pause 40; the members' CPU per 1000 puts went from
//! 42.5 to 39 ms (median of eight alternating rounds of `bench/ab_cpu.sh`, see
//! `bench/PROFILE.md`). A write that waits behind 128 others already waits several turns,
//! so the pause adds little to its latency; with fewer writers waiting (100 clients: about
//! 60 pending) there is no pause, since there a millisecond is a fifth of a put's latency
//! (an unconditional pause cost 7% of the requests/s at 100 clients and 17% at 10).
//!
//! Every `--snapshot-count` entries the apply thread asks for a snapshot of this member's
//! own at what it applied: the loop records it in the in-memory log, with the membership
//! of that index (`confs`: Raft's own may already hold a later conf change), and hands
//! its file to the `snapshot-save` thread ([`SnapshotWriter`]), which writes it once the
//! backend is durable up to it; when the file is durable, the loop saves its WAL marker
//! and releases the log behind it, and that
//! thread deletes what the release frees (WAL segments a slice at a time). Done on the
//! loop, a snapshot held up every WAL append for 60-85 ms while a defragment's copy kept
//! the disk busy, nearly all of it deleting released 64 MiB segments (their freeing
//! waits for the file system's journal); off it, the slowest put of that run was 18 ms
//! (`bench/PROFILE.md`).
//!
//! Guarantees: nothing is acknowledged before it is durable (the apply thread only
//! sees entries after the sync that covered them); a failed WAL write or sync stops
//! the node (a failed fsync may have lost pages, retrying could lie), and so does an
//! apply thread that is gone: the member then exits instead of voting on without
//! applying; when the loop stops every waiting read is answered "server stopped".

mod confs;
mod io;
mod reads;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_api::EtcdError;
use skiff_raft::{
    ConfChangeV2, Decode, Entry, EntryType, MemStorage, RaftError, RawNode, Ready, SnapshotStatus,
    StateRole,
};

pub use crate::inputs::{ApplyInput, NodeInput, RaftStatus, Transport};
use crate::membership::{check_change, MemberChange};
use crate::metrics::Metrics;
use confs::ConfHistory;
pub use io::{DiskIo, NodeIo, SnapshotWriter};
use reads::PendingReads;
use skiff_storage::wal::SnapshotMarker;

/// Why the loop stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Wal(#[from] skiff_storage::wal::WalError),
    #[error(transparent)]
    Snap(#[from] skiff_storage::snap::SnapError),
    #[error(transparent)]
    Raft(#[from] RaftError),
    #[error("raft storage: {0}")]
    Storage(#[from] skiff_raft::StorageError),
    #[error("backend: {0}")]
    Backend(#[from] skiff_storage::backend::BackendError),
    #[error("the apply thread is gone: committed entries can no longer be applied")]
    ApplyGone,
    #[error("the member has been permanently removed from the cluster")]
    Removed,
}

/// Proposals waiting for their outcome from which a turn pauses to group writes
/// (see the module docs).
pub const GROUPING_BACKLOG: i64 = 128;

/// How long such a turn waits for more inputs before draining them.
pub const GROUPING_PAUSE: Duration = Duration::from_millis(1);

/// The pause before a turn drains its inputs, given the proposals pending.
pub fn grouping_pause(pending: i64) -> Option<Duration> {
    (pending >= GROUPING_BACKLOG).then_some(GROUPING_PAUSE)
}

/// Most inputs taken in one turn, so ticks are never starved by a flood.
const MAX_INPUTS_PER_TURN: usize = 10_000;

/// Proposals kept while there is no leader (a member without one for long keeps
/// only recent work; callers time out on their own).
const MAX_STALLED: usize = 10_000;

/// Applies `cc` to Raft if its membership check passes; whether it did.
fn apply_checked_conf_change(
    raw: &mut RawNode<MemStorage>,
    cc: &ConfChangeV2,
) -> Result<bool, RaftError> {
    if let Some(change) = MemberChange::decode(cc) {
        let prs = &raw.raft.prs;
        let learners = prs.progress.values().filter(|p| p.is_learner).count();
        let lookup = |id| prs.progress.get(&id).map(|p| p.is_learner);
        if let Err(e) = check_change(&change, lookup, learners) {
            tracing::info!(member = %format!("{:x}", change.id), error = %e, "conf change refused");
            return Ok(false);
        }
    }
    raw.apply_conf_change(cc)?;
    Ok(true)
}

/// At start-up: Raft's configuration comes from the snapshot, and the entries up to
/// `applied` are not handed out again, so the conf changes among them (between the
/// snapshot and what the backend holds) are applied here, in log order.
pub fn replay_conf_changes(
    raw: &mut RawNode<MemStorage>,
    storage: &MemStorage,
    applied: u64,
) -> Result<(), NodeError> {
    use skiff_raft::Storage as _;
    let first = storage.first_index()?;
    if applied < first {
        return Ok(());
    }
    let entries = storage.entries(first, applied + 1, u64::MAX)?;
    for e in entries
        .iter()
        .filter(|e| e.entry_type == EntryType::ConfChange)
    {
        match ConfChangeV2::decode(&e.data) {
            Ok(cc) => {
                apply_checked_conf_change(raw, &cc)?;
            }
            Err(err) => tracing::error!(index = e.index, error = %err, "undecodable conf change"),
        }
    }
    Ok(())
}

/// Everything the loop owns.
pub struct Node<Io: NodeIo> {
    pub raw: RawNode<MemStorage>,
    pub storage: MemStorage,
    pub io: Io,
    pub status: Arc<RaftStatus>,
    pub metrics: Metrics,
    /// Entries kept in memory behind a snapshot, for slow followers (etcd: 5000).
    pub catch_up_entries: u64,
    reads: PendingReads,
    stalled: Vec<Bytes>,
    /// Proposals waiting to be committed: (index, term, who to tell).
    commit_waiters: Vec<(u64, u64, CommitWaiter)>,
    /// The membership as of each conf change handed to the apply thread (Raft applies
    /// it then), for own snapshots.
    confs: ConfHistory,
}

/// Where a commit-acknowledged proposal learns its fate.
type CommitWaiter = tokio::sync::oneshot::Sender<Result<(), EtcdError>>;

impl<Io: NodeIo> Node<Io> {
    pub fn new(
        raw: RawNode<MemStorage>,
        storage: MemStorage,
        io: Io,
        status: Arc<RaftStatus>,
        metrics: Metrics,
        catch_up_entries: u64,
    ) -> Node<Io> {
        let reads = PendingReads::new(raw.raft.id);
        let confs = ConfHistory::new(raw.raft.raft_log.applied, raw.raft.prs.conf_state());
        Node {
            raw,
            storage,
            io,
            status,
            metrics,
            catch_up_entries,
            reads,
            stalled: Vec::new(),
            commit_waiters: Vec::new(),
            confs,
        }
    }

    /// Runs until [`NodeInput::Stop`], every sender is gone, or a failure; ticks
    /// Raft every `tick`.
    pub fn run(mut self, inputs: Receiver<NodeInput>, tick: Duration) -> Result<(), NodeError> {
        let mut next_tick = Instant::now() + tick;
        let result = loop {
            // Wait for the first input or the next tick, then drain the rest.
            let timeout = next_tick.saturating_duration_since(Instant::now());
            let mut batch = Vec::new();
            match inputs.recv_timeout(timeout) {
                Ok(input) => batch.push(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break Ok(()),
            }
            if !batch.is_empty() {
                if let Some(pause) = grouping_pause(self.metrics.proposals_pending.get()) {
                    std::thread::sleep(pause);
                }
                batch.extend(inputs.try_iter().take(MAX_INPUTS_PER_TURN));
            }
            let ticked = Instant::now() >= next_tick;
            if ticked {
                next_tick += tick;
                if next_tick < Instant::now() {
                    // The loop fell behind (a slow fsync): do not burst ticks.
                    next_tick = Instant::now() + tick;
                }
            }
            match self.turn(batch, ticked) {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(e) => break Err(e),
            }
        };
        self.reads.fail_all(EtcdError::Stopped);
        let _ = self.io.apply(ApplyInput::Stopped);
        result
    }

    /// One turn: `inputs` and (if `tick`) one tick into Raft, then every Ready out.
    /// Returns whether a stop was asked.
    pub fn turn(&mut self, inputs: Vec<NodeInput>, tick: bool) -> Result<bool, NodeError> {
        let mut stop = false;
        let mut read_batch = Vec::new();
        let mut proposals: Vec<Entry> = Vec::new();
        let mut acked: Vec<(Bytes, CommitWaiter)> = Vec::new();
        for input in inputs {
            match input {
                NodeInput::Propose(data) => proposals.push(Entry::normal(data)),
                NodeInput::ProposeCommitted(data, reply) => acked.push((data, reply)),
                NodeInput::ReadIndex(reply) => read_batch.push(reply),
                NodeInput::Step(m) => {
                    match self.raw.step(*m) {
                        Ok(()) => {}
                        // A message no correct member sends: refused unstepped (the
                        // member keeps running); worth an operator's attention.
                        Err(e @ skiff_raft::RaftError::InvalidMessage { .. }) => {
                            tracing::warn!(error = %e, "refused a peer message");
                        }
                        Err(e) => tracing::debug!(error = %e, "dropped a peer message"),
                    }
                }
                NodeInput::ProposeConfChange(cc) => self.propose_conf_change(&cc),
                NodeInput::Progress(reply) => {
                    let _ = reply.send(self.progress());
                }
                NodeInput::PeerUrls { id, urls } => self.io.peer_urls(id, urls),
                NodeInput::TransferLeader(to) => self.raw.transfer_leader(to),
                NodeInput::Unreachable(id) => self.raw.report_unreachable(id),
                NodeInput::SnapshotStatus { to, ok } => self.raw.report_snapshot(
                    to,
                    if ok {
                        SnapshotStatus::Finish
                    } else {
                        SnapshotStatus::Failure
                    },
                ),
                NodeInput::Snapshot { index, payload } => {
                    if let Err(e) = self.snapshot(index, payload) {
                        tracing::error!(error = %e, index, "snapshot failed");
                    }
                }
                NodeInput::SnapshotSaved(marker) => {
                    let saved = self
                        .io
                        .save_snapshot_marker(marker)
                        .and_then(|()| self.snapshot_saved(marker));
                    if let Err(e) = saved {
                        tracing::error!(error = %e, index = marker.index, "snapshot failed");
                    }
                }
                NodeInput::AdvanceTicks(n) => {
                    for _ in 0..n {
                        self.raw.tick();
                    }
                }
                NodeInput::Removed => return Err(NodeError::Removed),
                NodeInput::Stop => stop = true,
            }
        }
        if stop {
            return Ok(true);
        }
        if tick {
            self.raw.tick();
        }
        if !proposals.is_empty() || !self.stalled.is_empty() {
            self.propose(proposals);
        }
        for (data, reply) in acked {
            self.propose_acked(data, reply);
        }
        self.reads.issue(&mut self.raw, read_batch);
        self.reads.retry_stale(&mut self.raw);
        while self.raw.has_ready() {
            let rd = self.raw.ready();
            self.handle_ready(rd)?;
        }
        Ok(false)
    }

    /// Proposes `new` (after any stalled ones). With no leader, or during a leader
    /// transfer, the proposals wait (their callers time out on their own); refused
    /// otherwise, they are dropped and their callers time out, as etcd's do.
    fn propose(&mut self, new: Vec<Entry>) {
        let mut batch: Vec<Entry> = self.stalled.drain(..).map(Entry::normal).collect();
        batch.extend(new);
        // Without a leader, or while leadership moves (Raft refuses proposals then),
        // proposals wait: once the transfer ends they go to the new leader.
        if self.raw.raft.leader_id == 0 || self.raw.raft.lead_transferee.is_some() {
            let skip = batch.len().saturating_sub(MAX_STALLED);
            self.stalled
                .extend(batch.into_iter().skip(skip).map(|e| e.data));
            return;
        }
        tracing::trace!(n = batch.len(), "proposing");
        if let Err(e) = self.raw.propose_batch(batch) {
            tracing::warn!(error = %e, "proposals dropped");
            self.metrics.proposals_failed.inc();
        }
    }

    /// Proposes a membership conf change; without a leader it is dropped (the caller
    /// times out, as etcd's does).
    fn propose_conf_change(&mut self, cc: &ConfChangeV2) {
        if self.raw.raft.leader_id == 0 {
            tracing::info!("conf change dropped: no leader");
            return;
        }
        if let Err(e) = self.raw.propose_conf_change(cc) {
            tracing::warn!(error = %e, "conf change dropped");
            self.metrics.proposals_failed.inc();
        }
    }

    /// Each member's matched index, as the leader tracks it (`None` unless leading).
    fn progress(&self) -> Option<std::collections::BTreeMap<u64, u64>> {
        if self.raw.raft.state != StateRole::Leader {
            return None;
        }
        Some(
            self.raw
                .raft
                .prs
                .progress
                .iter()
                .map(|(id, p)| (*id, p.matched))
                .collect(),
        )
    }

    /// Applies the committed conf change at `index` to Raft unless its membership check
    /// refuses it (the apply thread makes the same check on the member table and answers
    /// it), and records the membership from `index` on for own snapshots (`confs`).
    fn apply_conf_change(&mut self, index: u64, cc: &ConfChangeV2) -> Result<(), NodeError> {
        if apply_checked_conf_change(&mut self.raw, cc)? {
            self.io.conf_changed(cc);
        }
        // Refused or not, this is the membership from `index` on.
        self.confs.changed(index, self.raw.raft.prs.conf_state());
        Ok(())
    }

    /// Proposes `data` as leader and remembers where it landed, to say when it commits.
    fn propose_acked(&mut self, data: Bytes, reply: CommitWaiter) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(EtcdError::NotLeader));
            return;
        }
        match self.raw.propose_batch(vec![Entry::normal(data)]) {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                let term = self.raw.raft.term;
                self.commit_waiters.push((index, term, reply));
            }
            Err(e) => {
                tracing::debug!(error = %e, "commit-acknowledged proposal refused");
                let _ = reply.send(Err(EtcdError::NotLeader));
            }
        }
    }

    /// Answers the commit waiters whose entry is committed (or was replaced).
    fn resolve_commit_waiters(&mut self) {
        if self.commit_waiters.is_empty() {
            return;
        }
        let committed = self.raw.raft.raft_log.committed;
        let log = &self.raw.raft.raft_log;
        let mut still = Vec::new();
        for (index, term, reply) in self.commit_waiters.drain(..) {
            if index > committed {
                if reply.is_closed() {
                    continue;
                }
                still.push((index, term, reply));
                continue;
            }
            // Committed at that index: ours only if the entry there is of our term.
            let ours = log.term(index).map(|t| t == term).unwrap_or(false);
            let _ = reply.send(if ours {
                Ok(())
            } else {
                Err(EtcdError::LeaderChanged)
            });
        }
        self.commit_waiters = still;
    }

    fn handle_ready(&mut self, mut rd: Ready) -> Result<(), NodeError> {
        tracing::trace!(
            entries = rd.entries.len(),
            committed = rd.committed_entries.len(),
            hard_state = ?rd.hard_state,
            reads = rd.read_states.len(),
            "ready"
        );
        if let Some(ss) = &rd.soft_state {
            let old = self.status.leader.send_replace(ss.leader_id);
            if old != ss.leader_id {
                if ss.leader_id != 0 {
                    self.metrics.leader_changes_seen.inc();
                }
                tracing::info!(leader = %format!("{:x}", ss.leader_id), "leader changed");
                self.reads.reissue_all(&mut self.raw);
            }
            self.io
                .leadership(ss.leader_id, ss.raft_state == StateRole::Leader);
        }
        self.io.send(std::mem::take(&mut rd.messages));

        if let Some(snap) = &rd.snapshot {
            self.io.save_snapshot(snap)?;
            self.storage.wl().apply_snapshot(snap.clone())?;
            self.confs = ConfHistory::new(snap.metadata.index, snap.metadata.conf_state.clone());
            // The apply thread loads it before any entry that follows it.
            self.io.apply(ApplyInput::Snapshot(snap.clone()))?;
        }
        if rd.hard_state.is_some() || !rd.entries.is_empty() {
            self.io.persist(rd.hard_state, &rd.entries, rd.must_sync)?;
        }
        if let Some(hs) = rd.hard_state {
            self.storage.wl().set_hard_state(hs);
            self.status.term.store(hs.term, Ordering::Release);
            self.status.commit.store(hs.commit, Ordering::Release);
        }
        if !rd.entries.is_empty() {
            self.storage.wl().append(&rd.entries)?;
        }
        self.io.send(std::mem::take(&mut rd.persisted_messages));

        for rs in std::mem::take(&mut rd.read_states) {
            self.reads.resolve(&rs.request_ctx, rs.index);
        }

        // `advance` needs the Ready's committed entries (it marks them applied), so the
        // apply thread gets a copy (payloads are shared, not copied).
        let committed = rd.committed_entries.clone();
        if !committed.is_empty() {
            for e in committed
                .iter()
                .filter(|e| e.entry_type == EntryType::ConfChange)
            {
                match ConfChangeV2::decode(&e.data) {
                    Ok(cc) => self.apply_conf_change(e.index, &cc)?,
                    Err(err) => {
                        tracing::error!(index = e.index, error = %err, "undecodable conf change")
                    }
                }
            }
            if let Some(last) = committed.last() {
                self.metrics.proposals_committed.set(last.index as i64);
            }
            let term = self.status.term.load(Ordering::Acquire);
            self.io.apply(ApplyInput::Entries {
                entries: committed,
                term,
            })?;
        }
        self.raw.advance(rd);
        self.resolve_commit_waiters();
        Ok(())
    }

    /// Snapshots at `index` (what the apply thread applied): the snapshot file, then its
    /// WAL marker, then the log behind it is released. The file may be written off the
    /// loop ([`NodeIo::save_own_snapshot`]; the member's writer first waits until the
    /// backend is durable up to `index`); the rest follows when it is durable.
    fn snapshot(&mut self, index: u64, payload: Bytes) -> Result<(), NodeError> {
        // After a snapshot from the leader the apply thread may be past what the loop
        // handed it (the dump was newer than the snapshot's index); the membership of
        // such an index is not known yet.
        if index > self.raw.raft.raft_log.applied {
            tracing::info!(
                index,
                handed_out = self.raw.raft.raft_log.applied,
                "snapshot skipped: past the entries handed to the apply thread"
            );
            return Ok(());
        }
        // The membership of `index`, not Raft's current one (`confs`).
        let Some(cs) = self.confs.at(index) else {
            tracing::warn!(
                index,
                "snapshot skipped: it precedes the membership known to the loop"
            );
            return Ok(());
        };
        let snap = {
            self.storage
                .wl()
                .create_snapshot(index, Some(cs), payload)?
        };
        match self.io.save_own_snapshot(snap)? {
            Some(marker) => self.snapshot_saved(marker),
            None => Ok(()),
        }
    }

    /// A snapshot's file and WAL marker are durable: the log behind it is released.
    fn snapshot_saved(&mut self, marker: SnapshotMarker) -> Result<(), NodeError> {
        let (index, term) = (marker.index, marker.term);
        let compact_to = index.saturating_sub(self.catch_up_entries);
        if compact_to > 0 {
            if let Err(e) = self.storage.wl().compact(compact_to) {
                tracing::debug!(error = %e, "raft log compaction skipped");
            }
        }
        self.io.release(index)?;
        tracing::info!(index, term, "saved snapshot");
        Ok(())
    }
}
