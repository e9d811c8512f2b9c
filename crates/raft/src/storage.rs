//! The `Storage` trait through which Raft reads the durable log, and `MemStorage`, an
//! in-memory implementation.
//!
//! Raft only ever *reads* storage. The application writes it after persisting a
//! `Ready` (append the entries, set the hard state, apply the snapshot), which is why
//! `MemStorage` is a cheaply clonable handle: the application keeps one clone and the
//! `RawNode` owns another.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::types::*;
use crate::util::limit_size;

/// Errors storage reports to Raft.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The requested index is older than the first available one (compacted away).
    #[error("requested index is unavailable due to compaction")]
    Compacted,
    /// The requested snapshot is older than the existing one.
    #[error("requested index is older than the existing snapshot")]
    SnapshotOutOfDate,
    /// The requested entry is beyond the last one.
    #[error("requested entry at index is unavailable")]
    Unavailable,
    /// The snapshot is being prepared; Raft retries later.
    #[error("snapshot is temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// Anything else; Raft treats it as fatal.
    #[error("storage: {0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// What a node restarts from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftState {
    pub hard_state: HardState,
    pub conf_state: ConfState,
}

/// Read access to the stable log, snapshot and hard state.
pub trait Storage {
    /// The saved hard state and membership.
    fn initial_state(&self) -> Result<RaftState>;
    /// Entries in `[lo, hi)`, at most `max_size` bytes but at least one entry.
    fn entries(&self, lo: u64, hi: u64, max_size: u64) -> Result<Vec<Entry>>;
    /// The term of entry `index`, which must be in `[first_index - 1, last_index]`.
    fn term(&self, index: u64) -> Result<u64>;
    /// The first index that may be available through `entries` (older entries are in
    /// the snapshot).
    fn first_index(&self) -> Result<u64>;
    fn last_index(&self) -> Result<u64>;
    /// The most recent snapshot; `request_index` is the index the caller needs it to
    /// cover at least.
    fn snapshot(&self, request_index: u64) -> Result<Snapshot>;
}

/// The state behind a [`MemStorage`] handle.
#[derive(Debug, Clone)]
pub struct MemStorageCore {
    hard_state: HardState,
    snapshot: Snapshot,
    /// `entries[0]` is a dummy at the snapshot's index and term.
    entries: Vec<Entry>,
    /// Test hook: the next `snapshot` call reports temporarily unavailable.
    snapshot_unavailable: bool,
}

impl Default for MemStorageCore {
    fn default() -> Self {
        MemStorageCore {
            hard_state: HardState::default(),
            snapshot: Snapshot::default(),
            entries: vec![Entry::default()],
            snapshot_unavailable: false,
        }
    }
}

impl MemStorageCore {
    fn offset(&self) -> u64 {
        self.entries[0].index
    }

    fn last(&self) -> u64 {
        self.offset() + self.entries.len() as u64 - 1
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Sets the membership a fresh node starts with (before any entry).
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.snapshot.metadata.conf_state = cs;
    }

    /// Replaces everything with `snap`. A snapshot older than the current one is
    /// refused.
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> Result<()> {
        if self.snapshot.metadata.index >= snap.metadata.index {
            return Err(StorageError::SnapshotOutOfDate);
        }
        self.entries = vec![Entry {
            term: snap.metadata.term,
            index: snap.metadata.index,
            ..Default::default()
        }];
        if self.hard_state.commit < snap.metadata.index {
            self.hard_state.commit = snap.metadata.index;
        }
        if self.hard_state.term < snap.metadata.term {
            self.hard_state.term = snap.metadata.term;
        }
        self.snapshot = snap;
        Ok(())
    }

    /// Makes a snapshot at `index` (which must be applied by the caller) holding `data`.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: Option<ConfState>,
        data: bytes::Bytes,
    ) -> Result<Snapshot> {
        if index <= self.snapshot.metadata.index {
            return Err(StorageError::SnapshotOutOfDate);
        }
        if index > self.last() {
            return Err(StorageError::Unavailable);
        }
        let term = self.entries[(index - self.offset()) as usize].term;
        self.snapshot.metadata.index = index;
        self.snapshot.metadata.term = term;
        if let Some(cs) = conf_state {
            self.snapshot.metadata.conf_state = cs;
        }
        self.snapshot.data = data;
        Ok(self.snapshot.clone())
    }

    /// Discards entries before `compact_index`; entry `compact_index` becomes the dummy.
    pub fn compact(&mut self, compact_index: u64) -> Result<()> {
        if compact_index <= self.offset() {
            return Err(StorageError::Compacted);
        }
        if compact_index > self.last() {
            return Err(StorageError::Unavailable);
        }
        let i = (compact_index - self.offset()) as usize;
        let mut rest = self.entries.split_off(i);
        rest[0].data = bytes::Bytes::new();
        rest[0].entry_type = EntryType::Normal;
        self.entries = rest;
        Ok(())
    }

    /// Appends `ents`, replacing any conflicting suffix. Entries older than the
    /// compaction point are ignored; a gap is an error.
    pub fn append(&mut self, ents: &[Entry]) -> Result<()> {
        let Some(first_new) = ents.first() else {
            return Ok(());
        };
        let first = self.offset() + 1;
        let last_new = first_new.index + ents.len() as u64 - 1;
        if last_new < first {
            return Ok(());
        }
        let ents = if first > first_new.index {
            &ents[(first - first_new.index) as usize..]
        } else {
            ents
        };
        let at = ents[0].index - self.offset();
        if at > self.entries.len() as u64 {
            return Err(StorageError::Other(format!(
                "missing log entry [last: {}, append at: {}]",
                self.last(),
                ents[0].index
            )));
        }
        self.entries.truncate(at as usize);
        self.entries.extend_from_slice(ents);
        Ok(())
    }

    /// Test hook: the next `snapshot()` call says temporarily unavailable.
    pub fn trigger_snapshot_unavailable(&mut self) {
        self.snapshot_unavailable = true;
    }
}

/// An in-memory `Storage`; clones share the same log.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    core: Arc<RwLock<MemStorageCore>>,
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// A storage whose initial membership is `voters` and `learners`, as a node
    /// bootstrapped into a new cluster starts.
    pub fn new_with_conf_state(voters: Vec<NodeId>, learners: Vec<NodeId>) -> MemStorage {
        let s = MemStorage::new();
        s.wl().set_conf_state(ConfState {
            voters,
            learners,
            ..Default::default()
        });
        s
    }

    /// Read access to the core.
    pub fn rl(&self) -> RwLockReadGuard<'_, MemStorageCore> {
        // A poisoned lock means a writer panicked mid-update; the log may be torn, so
        // continuing would risk acting on corrupt state.
        self.core.read().expect("MemStorage lock poisoned")
    }

    /// Write access to the core.
    pub fn wl(&self) -> RwLockWriteGuard<'_, MemStorageCore> {
        self.core.write().expect("MemStorage lock poisoned")
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<RaftState> {
        let core = self.rl();
        Ok(RaftState {
            hard_state: core.hard_state,
            conf_state: core.snapshot.metadata.conf_state.clone(),
        })
    }

    fn entries(&self, lo: u64, hi: u64, max_size: u64) -> Result<Vec<Entry>> {
        let core = self.rl();
        let offset = core.offset();
        if lo <= offset {
            return Err(StorageError::Compacted);
        }
        if hi > core.last() + 1 {
            return Err(StorageError::Unavailable);
        }
        let slice = &core.entries[(lo - offset) as usize..(hi - offset) as usize];
        let mut out = slice.to_vec();
        limit_size(&mut out, max_size);
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64> {
        let core = self.rl();
        let offset = core.offset();
        if index < offset {
            return Err(StorageError::Compacted);
        }
        if index > core.last() {
            return Err(StorageError::Unavailable);
        }
        Ok(core.entries[(index - offset) as usize].term)
    }

    fn first_index(&self) -> Result<u64> {
        Ok(self.rl().offset() + 1)
    }

    fn last_index(&self) -> Result<u64> {
        Ok(self.rl().last())
    }

    fn snapshot(&self, _request_index: u64) -> Result<Snapshot> {
        let mut core = self.wl();
        if core.snapshot_unavailable {
            core.snapshot_unavailable = false;
            return Err(StorageError::SnapshotTemporarilyUnavailable);
        }
        Ok(core.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn storage_with(ents: &[Entry]) -> MemStorage {
        let s = MemStorage::new();
        s.wl().entries = ents.to_vec();
        s
    }

    #[test]
    fn term_and_bounds() {
        let s = storage_with(&[ent(3, 3), ent(4, 4), ent(5, 5)]);
        assert_eq!(s.term(2), Err(StorageError::Compacted));
        assert_eq!(s.term(3), Ok(3));
        assert_eq!(s.term(5), Ok(5));
        assert_eq!(s.term(6), Err(StorageError::Unavailable));
        assert_eq!(s.first_index(), Ok(4));
        assert_eq!(s.last_index(), Ok(5));
    }

    #[test]
    fn entries_respects_max_size_but_returns_one() {
        let s = storage_with(&[ent(3, 3), ent(4, 4), ent(5, 5), ent(6, 6)]);
        assert_eq!(s.entries(3, 5, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(s.entries(4, 8, u64::MAX), Err(StorageError::Unavailable));
        assert_eq!(s.entries(4, 7, u64::MAX).unwrap().len(), 3);
        assert_eq!(s.entries(4, 7, 0).unwrap().len(), 1);
        let one = ent(0, 0).size();
        assert_eq!(s.entries(4, 7, one * 2).unwrap().len(), 2);
    }

    #[test]
    fn append_truncates_conflicts_and_refuses_gaps() {
        let s = storage_with(&[ent(3, 3), ent(4, 4), ent(5, 5)]);
        s.wl().append(&[ent(4, 6), ent(5, 6)]).unwrap();
        assert_eq!(s.term(4), Ok(6));
        s.wl().append(&[ent(6, 6)]).unwrap();
        assert_eq!(s.last_index(), Ok(6));
        // Entries before the compaction point are ignored.
        s.wl().append(&[ent(2, 2), ent(3, 3), ent(4, 7)]).unwrap();
        assert_eq!(s.term(4), Ok(7));
        assert_eq!(s.last_index(), Ok(4));
        assert!(s.wl().append(&[ent(9, 7)]).is_err());
    }

    #[test]
    fn compact_and_snapshot() {
        let s = storage_with(&[ent(3, 3), ent(4, 4), ent(5, 5)]);
        assert_eq!(s.wl().compact(3), Err(StorageError::Compacted));
        assert_eq!(s.wl().compact(6), Err(StorageError::Unavailable));
        s.wl().compact(4).unwrap();
        assert_eq!(s.first_index(), Ok(5));
        assert_eq!(s.term(4), Ok(4));
        let snap = s
            .wl()
            .create_snapshot(5, None, bytes::Bytes::from_static(b"d"))
            .unwrap();
        assert_eq!((snap.metadata.index, snap.metadata.term), (5, 5));
        assert_eq!(
            s.wl().create_snapshot(4, None, bytes::Bytes::new()),
            Err(StorageError::SnapshotOutOfDate)
        );
        let fresh = MemStorage::new();
        fresh.wl().apply_snapshot(snap.clone()).unwrap();
        assert_eq!(fresh.first_index(), Ok(6));
        assert_eq!(fresh.last_index(), Ok(5));
        assert_eq!(fresh.rl().hard_state().commit, 5);
        assert_eq!(
            fresh.wl().apply_snapshot(snap),
            Err(StorageError::SnapshotOutOfDate)
        );
    }
}
