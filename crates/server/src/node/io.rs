//! What the node loop does to the world, as one trait: the loop decides, its
//! [`NodeIo`] performs. The member runs it on the WAL, the snapshot files, the peer
//! transport, the apply thread and the lease clock ([`DiskIo`]); the node-loop tests
//! run it on a recorder, so the order of persist, send and apply is pinned without
//! processes or disks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use prost::Message as _;
use skiff_proto::skiffpb::ConfChangeContext;
use skiff_raft::{ConfChangeType, ConfChangeV2, Entry, HardState, Message, Snapshot};
use skiff_storage::mvcc::KvStore;
use skiff_storage::snap::Snapshotter;
use skiff_storage::wal::{SnapshotMarker, Wal};

use super::NodeError;
use crate::inputs::{ApplyInput, NodeInput, Transport};
use crate::lease::ClockHandle;
use crate::metrics::Metrics;

/// The node loop's effects, in the order a turn performs them.
pub trait NodeIo {
    /// Leadership as Raft now sees it (leader ID, whether this member leads).
    fn leadership(&mut self, leader: u64, leading: bool);
    /// Messages to peers.
    fn send(&mut self, msgs: Vec<Message>);
    /// A snapshot made durable: the file, then its WAL marker.
    fn save_snapshot(&mut self, snap: &Snapshot) -> Result<(), NodeError>;
    /// One of this member's own snapshots (every `--snapshot-count` entries): made
    /// durable as [`NodeIo::save_snapshot`] does, returning its marker; or handed to a
    /// writer off the node loop (`None`), which sends `NodeInput::SnapshotSaved` once
    /// the file is durable, and the loop then saves the marker
    /// ([`NodeIo::save_snapshot_marker`]).
    fn save_own_snapshot(&mut self, snap: Snapshot) -> Result<Option<SnapshotMarker>, NodeError>;
    /// The WAL marker of a snapshot whose file is durable.
    fn save_snapshot_marker(&mut self, marker: SnapshotMarker) -> Result<(), NodeError>;
    /// The hard state (if changed) and entries into the WAL; `sync`: one fdatasync
    /// covering them before returning.
    fn persist(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
        sync: bool,
    ) -> Result<(), NodeError>;
    /// Input for the apply thread, in log order. An error means the apply thread is
    /// gone: the node stops (a member that cannot apply must not keep voting).
    fn apply(&mut self, input: ApplyInput) -> Result<(), NodeError>;
    /// A conf change Raft just applied: the transport's peers follow it.
    fn conf_changed(&mut self, cc: &ConfChangeV2);
    /// A member's peer URLs changed (member update).
    fn peer_urls(&mut self, id: u64, urls: Vec<String>);
    /// The WAL behind a durable snapshot at `index` may go.
    fn release(&mut self, index: u64) -> Result<(), NodeError>;
}

/// The member's real effects.
pub struct DiskIo<T: Transport> {
    pub wal: Wal,
    pub snapshotter: Snapshotter,
    pub transport: T,
    pub apply: Sender<ApplyInput>,
    pub lease_clock: ClockHandle,
    pub metrics: Metrics,
    /// WAL segment files kept (`--max-wals`; 0: all).
    pub max_wals: u32,
    /// Writes this member's own snapshot files, and deletes what their release frees,
    /// off the node loop.
    pub snapshot_writer: SnapshotWriter,
}

/// Writes the files of a member's own snapshots, and deletes what their release frees
/// (WAL segments, a slice at a time, and old snapshot files), on a thread of its own, so
/// that the node loop (and with it every WAL append) does not wait for them: new files,
/// renames and above all the freeing of 64 MiB segments wait for the file system's
/// journal, and while a defragment's copy kept the disk busy a snapshot held the loop
/// for 60-85 ms (`bench/PROFILE.md`). Each file, once durable, is reported to the node
/// loop (`NodeInput::SnapshotSaved`), which then saves its WAL marker and releases the
/// log behind it: the order of a snapshot's steps is the one [`NodeIo::save_snapshot`]
/// and [`NodeIo::release`] keep; only the file writes and deletions happen elsewhere, in
/// the order they were asked for. Before a file is written, the thread waits until the
/// backend holds everything up to the snapshot durably (`Backend::wait_durable`): the
/// apply thread used to make that sync itself, holding every apply for its write-back.
pub struct SnapshotWriter {
    jobs: Sender<Job>,
    /// Set when the writer is dropped (the node loop ended): the thread then drops what
    /// is still queued instead of waiting for the backend, writing files or deleting
    /// segments for a member that is stopping (the WAL still holds everything, and
    /// segments left undeleted are found again at the next start).
    stopping: Arc<AtomicBool>,
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
    }
}

/// What the writer's thread does, in the order it was asked.
enum Job {
    /// Once the backend is durable up to it, write this snapshot's file durably and
    /// report it.
    File(Snapshot),
    /// Delete these released WAL segments (oldest first), then the snapshot files
    /// beyond the newest `--max-snapshots`.
    Release(Vec<PathBuf>),
}

impl SnapshotWriter {
    /// The writer and the work of its thread, for the caller to run (the member runs it
    /// as a critical thread: a panic there stops the member, as one in the node loop
    /// would). `store` is the one the snapshots describe; `wal_dir` holds
    /// the segments it deletes; `keep_snapshots` is `--max-snapshots` (0: snapshot files
    /// are never purged). The work ends soon after the writer is dropped (what is queued
    /// then is dropped, and a wait for the backend given up) or once the node loop is
    /// gone.
    pub fn new(
        store: Arc<KvStore>,
        snapshotter: Snapshotter,
        wal_dir: PathBuf,
        keep_snapshots: usize,
        node: Sender<NodeInput>,
    ) -> (
        SnapshotWriter,
        impl FnOnce() -> Result<(), NodeError> + Send + 'static,
    ) {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let stopping = Arc::new(AtomicBool::new(false));
        let stopped = stopping.clone();
        let work = move || {
            let give_up = || stopped.load(Ordering::SeqCst);
            while let Ok(job) = queue.recv() {
                if give_up() {
                    tracing::debug!("the node loop stopped; queued snapshot work dropped");
                    break;
                }
                match job {
                    Job::File(snap) => {
                        match save_when_durable(&store, &snapshotter, &snap, &give_up) {
                            Ok(None) => break,
                            Ok(Some(file)) => {
                                if node.send(NodeInput::SnapshotSaved(file.marker())).is_err() {
                                    break;
                                }
                            }
                            // As a failed snapshot on the node loop: logged, the member goes
                            // on (its WAL still holds everything; the next snapshot tries
                            // again).
                            Err(e) => {
                                tracing::error!(error = %e, index = snap.metadata.index, "snapshot failed")
                            }
                        }
                    }
                    Job::Release(segments) => {
                        remove_released(&snapshotter, &wal_dir, &segments, keep_snapshots)
                    }
                }
            }
            Ok(())
        };
        (SnapshotWriter { jobs, stopping }, work)
    }

    /// Queues `job`. The thread ends only when the node loop is gone or it panicked,
    /// which stops the member: then the job is dropped with a log line (the WAL still
    /// holds everything; nothing is released).
    fn ask(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            tracing::error!("the snapshot-save thread is gone; snapshot work dropped");
        }
    }
}

/// Writes `snap`'s file once the backend is durable up to its index; `None` if the
/// wait was given up.
fn save_when_durable(
    store: &KvStore,
    snapshotter: &Snapshotter,
    snap: &Snapshot,
    give_up: &dyn Fn() -> bool,
) -> Result<Option<skiff_storage::snap::SnapshotFile>, NodeError> {
    if !store.backend().wait_durable(snap.metadata.index, give_up)? {
        return Ok(None);
    }
    Ok(Some(snapshotter.save_snapshot(snap)?))
}

/// Deletes released WAL segments, a slice at a time, and old snapshot files. A failure
/// is logged: what was not deleted is found again by the next release or at the next
/// start.
fn remove_released(
    snapshotter: &Snapshotter,
    wal_dir: &Path,
    segments: &[PathBuf],
    keep_snapshots: usize,
) {
    let removed = skiff_storage::wal::segment::remove_gradually(
        wal_dir,
        segments,
        skiff_storage::gradual::STEP,
        skiff_storage::gradual::PAUSE,
    );
    if let Err(e) = removed {
        tracing::warn!(error = %e, "deleting released WAL segments");
    }
    if keep_snapshots > 0 {
        if let Err(e) = snapshotter.purge(keep_snapshots) {
            tracing::warn!(error = %e, "purging old snapshot files");
        }
    }
}

impl<T: Transport> NodeIo for DiskIo<T> {
    fn leadership(&mut self, leader: u64, leading: bool) {
        self.metrics.has_leader.set(i64::from(leader != 0));
        self.metrics.is_leader.set(i64::from(leading));
        // The clock ignores a role it already has.
        self.lease_clock.set_primary(leading);
        self.transport.leader_is(leader);
    }

    fn send(&mut self, msgs: Vec<Message>) {
        if !msgs.is_empty() {
            self.transport.send(msgs);
        }
    }

    fn save_snapshot(&mut self, snap: &Snapshot) -> Result<(), NodeError> {
        self.snapshotter.save_snapshot(snap)?;
        self.wal.save_snapshot(SnapshotMarker {
            index: snap.metadata.index,
            term: snap.metadata.term,
        })?;
        Ok(())
    }

    fn save_own_snapshot(&mut self, snap: Snapshot) -> Result<Option<SnapshotMarker>, NodeError> {
        self.snapshot_writer.ask(Job::File(snap));
        Ok(None)
    }

    fn save_snapshot_marker(&mut self, marker: SnapshotMarker) -> Result<(), NodeError> {
        Ok(self.wal.save_snapshot(marker)?)
    }

    fn persist(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
        sync: bool,
    ) -> Result<(), NodeError> {
        let hs = hard_state.unwrap_or_else(|| self.wal.hard_state());
        self.wal.save(&hs, entries)?;
        if sync {
            let started = Instant::now();
            self.wal.sync()?;
            self.metrics
                .wal_fsync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    fn apply(&mut self, input: ApplyInput) -> Result<(), NodeError> {
        self.apply.send(input).map_err(|_| NodeError::ApplyGone)
    }

    fn peer_urls(&mut self, id: u64, urls: Vec<String>) {
        self.transport.add_peer(id, urls);
    }

    fn conf_changed(&mut self, cc: &ConfChangeV2) {
        let context = ConfChangeContext::decode(cc.context.as_ref()).ok();
        if context.as_ref().is_some_and(|c| c.is_promote) {
            // A promoted learner is a peer already, at the URLs it has.
            return;
        }
        let added = context.and_then(|c| c.member);
        for change in &cc.changes {
            match change.change_type {
                ConfChangeType::RemoveNode => self.transport.remove_peer(change.node_id),
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    match added.as_ref().filter(|m| m.id == change.node_id) {
                        Some(m) => self.transport.add_peer(m.id, m.peer_urls.clone()),
                        None => tracing::warn!(
                            member = %format!("{:x}", change.node_id),
                            "conf change adds a member without its peer URLs"
                        ),
                    }
                }
            }
        }
    }

    fn release(&mut self, index: u64) -> Result<(), NodeError> {
        let segments = if self.max_wals > 0 {
            self.wal.detach_released(index, self.max_wals as usize)?
        } else {
            Vec::new()
        };
        self.snapshot_writer.ask(Job::Release(segments));
        Ok(())
    }
}
