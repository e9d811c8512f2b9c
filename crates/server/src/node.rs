//! The Raft node loop: one OS thread owns the [`RawNode`] and the WAL.
//!
//! Each turn it takes every input that is waiting (proposals, read requests, peer
//! messages, ticks), feeds them to Raft, then handles each `Ready`:
//! 1. messages that may leave before persisting are handed to the transport;
//! 2. a received snapshot is saved (file, then WAL marker);
//! 3. the Ready's entries and hard state are framed into the WAL and made durable
//!    with **one** `fdatasync` (group commit: every proposal drained this turn shares
//!    it), then appended to the in-memory Raft log;
//! 4. the remaining messages (votes, append acknowledgements) are sent;
//! 5. read states are matched with the reads waiting for them;
//! 6. committed entries go, in order, to the apply thread.
//!
//! Guarantees: nothing is acknowledged before it is durable (the apply thread only
//! sees entries after the sync that covered them); a failed WAL write or sync stops
//! the node (a failed fsync may have lost pages, retrying could lie) and every waiter
//! is woken with "server stopped"; linearizable reads are batched: all reads waiting
//! when a turn starts share one ReadIndex request, each batch with a fresh context
//! (never reused, etcd #20418).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_raft::{
    ConfChangeV2, Decode, Entry, EntryType, MemStorage, RaftError, RawNode, Ready,
    SnapshotMetadata, SnapshotStatus, StateRole,
};
use skiff_storage::snap::Snapshotter;
use skiff_storage::wal::{SnapshotMarker, Wal};
use tokio::sync::oneshot;

pub use crate::inputs::{ApplyInput, NoPeers, NodeInput, RaftStatus, Transport};
use crate::metrics::Metrics;
use skiff_api::EtcdError;

/// Everything the loop owns.
pub struct Node<T: Transport> {
    pub raw: RawNode<MemStorage>,
    pub storage: MemStorage,
    pub wal: Wal,
    pub snapshotter: Snapshotter,
    pub transport: T,
    pub inputs: Receiver<NodeInput>,
    pub apply: Sender<ApplyInput>,
    pub status: Arc<RaftStatus>,
    pub metrics: Metrics,
    pub tick: Duration,
    /// Entries kept in memory behind a snapshot, for slow followers (etcd: 5000).
    pub catch_up_entries: u64,
    /// Lease deadlines are tracked by the leader only: promoted and demoted here, as
    /// leadership changes.
    pub lessor: Arc<std::sync::Mutex<crate::lessor::Lessor>>,
    /// How much a new leader extends every lease (one election timeout).
    pub lease_extend: Duration,
}

/// Reads waiting for a ReadIndex, by the context of their batch.
///
/// A context is this member's ID followed by a counter, so it is unique in the
/// cluster: the leader keys pending ReadIndex requests by context and ignores a
/// duplicate, so two followers using the same bare counter would have one of their
/// batches silently dropped. A batch not answered within [`READ_INDEX_RETRY`] (its
/// request or the heartbeat round was lost) is asked again under a new context, as
/// etcd retries; a retry never reuses a context (etcd #20418).
struct PendingReads {
    member_id: u64,
    next_ctx: u64,
    by_ctx: HashMap<u64, (Instant, Vec<ReadWaiter>)>,
}

/// Where a linearizable read learns its read index.
type ReadWaiter = oneshot::Sender<Result<u64, EtcdError>>;

/// How long a ReadIndex batch may wait before it is asked again.
const READ_INDEX_RETRY: Duration = Duration::from_millis(500);

impl PendingReads {
    fn new(member_id: u64) -> PendingReads {
        PendingReads {
            member_id,
            next_ctx: 0,
            by_ctx: HashMap::new(),
        }
    }

    fn issue(&mut self, raw: &mut RawNode<MemStorage>, waiters: Vec<ReadWaiter>) {
        if waiters.is_empty() {
            return;
        }
        self.next_ctx += 1;
        let ctx = self.next_ctx;
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.member_id.to_be_bytes());
        bytes[8..].copy_from_slice(&ctx.to_be_bytes());
        match raw.read_index(Bytes::copy_from_slice(&bytes)) {
            Ok(()) => {
                self.by_ctx.insert(ctx, (Instant::now(), waiters));
            }
            Err(e) => {
                tracing::debug!(error = %e, "read index refused");
                for w in waiters {
                    let _ = w.send(Err(EtcdError::NoLeader));
                }
            }
        }
    }

    fn resolve(&mut self, ctx: &[u8], index: u64) {
        let Ok(raw) = <[u8; 16]>::try_from(ctx) else {
            return;
        };
        let (member, counter) = raw.split_at(8);
        if member != self.member_id.to_be_bytes() {
            return;
        }
        let counter = u64::from_be_bytes(counter.try_into().expect("8 bytes"));
        if let Some((_, waiters)) = self.by_ctx.remove(&counter) {
            for w in waiters {
                let _ = w.send(Ok(index));
            }
        }
    }

    /// After a leader change the old requests may never be answered: ask again,
    /// each batch under a new context.
    fn reissue_all(&mut self, raw: &mut RawNode<MemStorage>) {
        let old: Vec<_> = std::mem::take(&mut self.by_ctx).into_values().collect();
        for (_, waiters) in old {
            let live: Vec<_> = waiters.into_iter().filter(|w| !w.is_closed()).collect();
            self.issue(raw, live);
        }
    }

    /// Asks again for batches waiting longer than [`READ_INDEX_RETRY`].
    fn retry_stale(&mut self, raw: &mut RawNode<MemStorage>) {
        let now = Instant::now();
        let stale: Vec<u64> = self
            .by_ctx
            .iter()
            .filter(|(_, (at, _))| now.duration_since(*at) >= READ_INDEX_RETRY)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in stale {
            if let Some((_, waiters)) = self.by_ctx.remove(&ctx) {
                let live: Vec<_> = waiters.into_iter().filter(|w| !w.is_closed()).collect();
                if !live.is_empty() {
                    tracing::debug!(
                        waiters = live.len(),
                        "ReadIndex not answered in time, retrying"
                    );
                    self.issue(raw, live);
                }
            }
        }
    }

    fn fail_all(&mut self, err: EtcdError) {
        for (_, (_, waiters)) in self.by_ctx.drain() {
            for w in waiters {
                let _ = w.send(Err(err));
            }
        }
    }
}

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
}

impl<T: Transport> Node<T> {
    /// Runs until [`NodeInput::Stop`], every sender is gone, or a storage failure.
    pub fn run(mut self) -> Result<(), NodeError> {
        let mut reads = PendingReads::new(self.raw.raft.id);
        let mut stalled: Vec<Bytes> = Vec::new();
        let mut next_tick = Instant::now() + self.tick;
        let result = loop {
            // Wait for the first input or the next tick, then drain the rest.
            let timeout = next_tick.saturating_duration_since(Instant::now());
            let first = match self.inputs.recv_timeout(timeout) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break Ok(()),
            };
            let mut stop = false;
            let mut read_batch = Vec::new();
            let mut proposals: Vec<Entry> = Vec::new();
            let mut handle = |input: NodeInput, node: &mut Self| match input {
                NodeInput::Propose(data) => proposals.push(Entry::normal(data)),
                NodeInput::ReadIndex(reply) => read_batch.push(reply),
                NodeInput::Step(m) => {
                    if let Err(e) = node.raw.step(*m) {
                        tracing::debug!(error = %e, "dropped a peer message");
                    }
                }
                NodeInput::Unreachable(id) => node.raw.report_unreachable(id),
                NodeInput::SnapshotStatus { to, ok } => node.raw.report_snapshot(
                    to,
                    if ok {
                        SnapshotStatus::Finish
                    } else {
                        SnapshotStatus::Failure
                    },
                ),
                NodeInput::Snapshot { index, payload } => {
                    if let Err(e) = node.snapshot(index, payload) {
                        tracing::error!(error = %e, index, "snapshot failed");
                    }
                }
                NodeInput::Stop => stop = true,
            };
            if let Some(input) = first {
                handle(input, &mut self);
                // Bounded so ticks are never starved by a flood of inputs.
                for _ in 0..10_000 {
                    match self.inputs.try_recv() {
                        Ok(input) => handle(input, &mut self),
                        Err(_) => break,
                    }
                }
            }
            if stop {
                break Ok(());
            }
            if Instant::now() >= next_tick {
                self.raw.tick();
                next_tick += self.tick;
                if next_tick < Instant::now() {
                    // The loop fell behind (a slow fsync): do not burst ticks.
                    next_tick = Instant::now() + self.tick;
                }
            }
            if !proposals.is_empty() || !stalled.is_empty() {
                self.propose(&mut stalled, proposals);
            }
            reads.issue(&mut self.raw, read_batch);
            reads.retry_stale(&mut self.raw);
            if let Err(e) = self.drain_ready(&mut reads) {
                break Err(e);
            }
        };
        reads.fail_all(EtcdError::Stopped);
        let _ = self.apply.send(ApplyInput::Stopped);
        result
    }

    /// Proposes `new` (after any stalled ones). With no leader the proposals wait for
    /// one (their callers time out on their own); refused otherwise, they are dropped
    /// and their callers time out, as etcd's do.
    fn propose(&mut self, stalled: &mut Vec<Bytes>, new: Vec<Entry>) {
        let mut batch: Vec<Entry> = stalled.drain(..).map(Entry::normal).collect();
        batch.extend(new);
        if self.status.leader.load(Ordering::Relaxed) == 0 {
            // Bounded: a member without a leader for long keeps only recent work.
            const MAX_STALLED: usize = 10_000;
            let skip = batch.len().saturating_sub(MAX_STALLED);
            stalled.extend(batch.into_iter().skip(skip).map(|e| e.data));
            return;
        }
        tracing::trace!(n = batch.len(), "proposing");
        if let Err(e) = self.raw.propose_batch(batch) {
            tracing::warn!(error = %e, "proposals dropped");
            self.metrics.proposals_failed.inc();
        }
    }

    fn drain_ready(&mut self, reads: &mut PendingReads) -> Result<(), NodeError> {
        while self.raw.has_ready() {
            let rd = self.raw.ready();
            self.handle_ready(rd, reads)?;
        }
        Ok(())
    }

    fn handle_ready(&mut self, mut rd: Ready, reads: &mut PendingReads) -> Result<(), NodeError> {
        tracing::trace!(
            entries = rd.entries.len(),
            committed = rd.committed_entries.len(),
            hard_state = ?rd.hard_state,
            reads = rd.read_states.len(),
            "ready"
        );
        if let Some(ss) = &rd.soft_state {
            let old = self.status.leader.swap(ss.leader_id, Ordering::AcqRel);
            if old != ss.leader_id {
                if ss.leader_id != 0 {
                    self.metrics.leader_changes_seen.inc();
                }
                tracing::info!(leader = %format!("{:x}", ss.leader_id), "leader changed");
                reads.reissue_all(&mut self.raw);
            }
            let leading = ss.raft_state == StateRole::Leader;
            let mut lessor = self.lessor.lock().unwrap_or_else(|p| p.into_inner());
            if leading && !lessor.is_primary() {
                lessor.promote(Instant::now(), self.lease_extend);
            } else if !leading && lessor.is_primary() {
                lessor.demote();
            }
            drop(lessor);
            self.metrics.has_leader.set(i64::from(ss.leader_id != 0));
            self.metrics
                .is_leader
                .set(i64::from(ss.raft_state == StateRole::Leader));
        }
        self.transport.send(std::mem::take(&mut rd.messages));

        if let Some(snap) = &rd.snapshot {
            self.snapshotter.save_snapshot(snap)?;
            self.wal.save_snapshot(SnapshotMarker {
                index: snap.metadata.index,
                term: snap.metadata.term,
            })?;
            self.storage.wl().apply_snapshot(snap.clone())?;
            // The apply thread loads it before any entry that follows it.
            if self.apply.send(ApplyInput::Snapshot(snap.clone())).is_err() {
                tracing::error!("the apply thread is gone");
            }
        }
        let hs = rd.hard_state.unwrap_or_else(|| self.wal.hard_state());
        if rd.hard_state.is_some() || !rd.entries.is_empty() {
            self.wal.save(&hs, &rd.entries)?;
            if rd.must_sync {
                let started = Instant::now();
                self.wal.sync()?;
                self.metrics
                    .wal_fsync_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        if let Some(hs) = rd.hard_state {
            self.storage.wl().set_hard_state(hs);
            self.status.term.store(hs.term, Ordering::Release);
            self.status.commit.store(hs.commit, Ordering::Release);
        }
        if !rd.entries.is_empty() {
            self.storage.wl().append(&rd.entries)?;
        }
        self.transport
            .send(std::mem::take(&mut rd.persisted_messages));

        for rs in std::mem::take(&mut rd.read_states) {
            reads.resolve(&rs.request_ctx, rs.index);
        }

        // `advance` needs the Ready's committed entries (it marks them applied), so the
        // apply thread gets a copy (payloads are shared, not copied).
        let committed = rd.committed_entries.clone();
        if !committed.is_empty() {
            for e in &committed {
                if e.entry_type == EntryType::ConfChange {
                    // Membership changes take effect in Raft as soon as they are
                    // committed; the apply thread records them in the backend.
                    match ConfChangeV2::decode(&e.data) {
                        Ok(cc) => {
                            self.raw.apply_conf_change(&cc)?;
                        }
                        Err(err) => {
                            tracing::error!(index = e.index, error = %err, "undecodable conf change")
                        }
                    }
                }
            }
            if let Some(last) = committed.last() {
                self.metrics.proposals_committed.set(last.index as i64);
            }
            let term = self.status.term.load(Ordering::Acquire);
            if self
                .apply
                .send(ApplyInput::Entries {
                    entries: committed,
                    term,
                })
                .is_err()
            {
                tracing::error!("the apply thread is gone");
            }
        }
        self.raw.advance(rd);
        Ok(())
    }

    /// Snapshots at `index`: the snapshot file, then its WAL marker, then the log
    /// behind it is released (the backend is durable up to `index`, said the caller).
    fn snapshot(&mut self, index: u64, payload: Bytes) -> Result<(), NodeError> {
        let snap = {
            let cs = self.raw.raft.prs.conf_state();
            self.storage
                .wl()
                .create_snapshot(index, Some(cs), payload)?
        };
        self.snapshotter.save_snapshot(&snap)?;
        self.wal.save_snapshot(SnapshotMarker {
            index: snap.metadata.index,
            term: snap.metadata.term,
        })?;
        let compact_to = index.saturating_sub(self.catch_up_entries);
        if compact_to > 0 {
            if let Err(e) = self.storage.wl().compact(compact_to) {
                tracing::debug!(error = %e, "raft log compaction skipped");
            }
        }
        self.wal.release_to(index)?;
        let _ = self.snapshotter.purge(5);
        let SnapshotMetadata { term, .. } = snap.metadata;
        tracing::info!(index, term, "saved snapshot");
        Ok(())
    }
}
