//! What the node loop does to the world, as one trait: the loop decides, its
//! [`NodeIo`] performs. The member runs it on the WAL, the snapshot files, the peer
//! transport, the apply thread and the lease clock ([`DiskIo`]); the node-loop tests
//! run it on a recorder, so the order of persist, send and apply is pinned without
//! processes or disks.

use std::sync::mpsc::Sender;
use std::time::Instant;

use prost::Message as _;
use skiff_proto::skiffpb::ConfChangeContext;
use skiff_raft::{ConfChangeType, ConfChangeV2, Entry, HardState, Message, Snapshot};
use skiff_storage::snap::Snapshotter;
use skiff_storage::wal::{SnapshotMarker, Wal};

use super::NodeError;
use crate::inputs::{ApplyInput, Transport};
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
    /// Snapshot files kept (`--max-snapshots`; 0: all).
    pub max_snapshots: u32,
    /// WAL segment files kept (`--max-wals`; 0: all).
    pub max_wals: u32,
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
        if self.max_wals > 0 {
            self.wal.release_keeping(index, self.max_wals as usize)?;
        }
        if self.max_snapshots > 0 {
            if let Err(e) = self.snapshotter.purge(self.max_snapshots as usize) {
                tracing::warn!(error = %e, "purging old snapshot files");
            }
        }
        Ok(())
    }
}
