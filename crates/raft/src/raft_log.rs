//! `RaftLog`: one view of the log over stable `Storage` and the `Unstable` tail, with
//! the commit and applied indexes.
//!
//! Invariants: `applied <= committed <= last_index()`; every index in
//! `[first_index() - 1, last_index()]` has a known term; committed entries are never
//! truncated (a conflict at or below `committed` is a fatal Raft bug, and panics with
//! the indexes involved rather than silently losing committed data).

use crate::log_unstable::Unstable;
use crate::storage::{Storage, StorageError};
use crate::types::{Entry, Snapshot};
use crate::util::limit_size;

pub struct RaftLog<S: Storage> {
    pub store: S,
    pub unstable: Unstable,
    /// Highest index known committed by a quorum.
    pub committed: u64,
    /// Highest index the application has applied.
    pub applied: u64,
}

impl<S: Storage> RaftLog<S> {
    pub fn new(store: S) -> Result<RaftLog<S>, StorageError> {
        let first = store.first_index()?;
        let last = store.last_index()?;
        Ok(RaftLog {
            store,
            unstable: Unstable::new(last + 1),
            committed: first - 1,
            applied: first - 1,
        })
    }

    pub fn first_index(&self) -> u64 {
        match self.unstable.maybe_first_index() {
            Some(i) => i,
            None => self
                .store
                .first_index()
                .expect("storage first_index must not fail"),
        }
    }

    pub fn last_index(&self) -> u64 {
        match self.unstable.maybe_last_index() {
            Some(i) => i,
            None => self
                .store
                .last_index()
                .expect("storage last_index must not fail"),
        }
    }

    /// The term of `index`, or 0 when it is outside the known log.
    pub fn term(&self, index: u64) -> Result<u64, StorageError> {
        let dummy = self.first_index() - 1;
        if index < dummy || index > self.last_index() {
            return Ok(0);
        }
        if let Some(t) = self.unstable.maybe_term(index) {
            return Ok(t);
        }
        self.store.term(index)
    }

    /// The term of `index`, treating compaction as "term 0" (used where an unknown
    /// term just makes a comparison fail).
    pub fn term_or_zero(&self, index: u64) -> u64 {
        self.term(index).unwrap_or(0)
    }

    pub fn last_term(&self) -> u64 {
        self.term(self.last_index())
            .expect("the last entry's term is always known")
    }

    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index).is_ok_and(|t| t == term)
    }

    /// Whether a log ending at (`last_index`, `term`) is at least as up to date as ours.
    pub fn is_up_to_date(&self, last_index: u64, term: u64) -> bool {
        let our_term = self.last_term();
        term > our_term || (term == our_term && last_index >= self.last_index())
    }

    /// The first index among `ents` whose term differs from ours (or that we lack), or
    /// 0 if all match.
    pub fn find_conflict(&self, ents: &[Entry]) -> u64 {
        for e in ents {
            if !self.match_term(e.index, e.term) {
                return e.index;
            }
        }
        0
    }

    /// For fast backtracking: the largest index `<= index` whose term is `<= term`,
    /// with that term. A leader whose log has `term` at that position can skip all
    /// entries in between.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term => {
                    if i == 0 {
                        return (0, 0);
                    }
                    i -= 1;
                }
                Ok(t) => return (i, t),
                Err(_) => return (i, 0),
            }
        }
    }

    /// Follower side of AppendEntries: if our entry at `index` has `log_term`, append
    /// `ents` (dropping the ones we already have, truncating a conflicting suffix),
    /// advance the commit to `min(committed, last new index)` and return the last new
    /// index. `None` means the consistency check failed.
    pub fn maybe_append(
        &mut self,
        index: u64,
        log_term: u64,
        committed: u64,
        ents: &[Entry],
    ) -> Option<u64> {
        if !self.match_term(index, log_term) {
            return None;
        }
        let last_new = index + ents.len() as u64;
        let conflict = self.find_conflict(ents);
        if conflict != 0 {
            assert!(
                conflict > self.committed,
                "entry {conflict} conflicts with committed entry (committed {})",
                self.committed
            );
            let start = (conflict - (index + 1)) as usize;
            self.append(&ents[start..]);
        }
        self.commit_to(committed.min(last_new));
        Some(last_new)
    }

    /// Appends entries (whose first index is at most one past our last) and returns the
    /// new last index.
    pub fn append(&mut self, ents: &[Entry]) -> u64 {
        let Some(first) = ents.first() else {
            return self.last_index();
        };
        assert!(
            first.index > self.committed,
            "appending at {} would overwrite committed entries (committed {})",
            first.index,
            self.committed
        );
        self.unstable.truncate_and_append(ents);
        self.last_index()
    }

    /// Entries not yet persisted.
    pub fn unstable_entries(&self) -> &[Entry] {
        &self.unstable.entries
    }

    /// Committed entries not yet applied, at most `max_size` bytes (at least one).
    pub fn next_committed_entries(&self, max_size: u64) -> Vec<Entry> {
        let lo = (self.applied + 1).max(self.first_index());
        if self.committed + 1 > lo {
            self.slice(lo, self.committed + 1, max_size)
                .expect("committed entries above applied must be available")
        } else {
            Vec::new()
        }
    }

    pub fn has_next_committed_entries(&self) -> bool {
        self.committed + 1 > (self.applied + 1).max(self.first_index())
    }

    /// The snapshot to persist, if one arrived.
    pub fn unstable_snapshot(&self) -> Option<&Snapshot> {
        self.unstable.snapshot.as_ref()
    }

    /// The snapshot to send a lagging follower.
    pub fn snapshot(&self, request_index: u64) -> Result<Snapshot, StorageError> {
        if let Some(s) = &self.unstable.snapshot {
            return Ok(s.clone());
        }
        self.store.snapshot(request_index)
    }

    pub fn commit_to(&mut self, to: u64) {
        if to > self.committed {
            assert!(
                to <= self.last_index(),
                "commit index {to} is out of range [last index {}]: was the log lost?",
                self.last_index()
            );
            self.committed = to;
        }
    }

    pub fn applied_to(&mut self, index: u64) {
        if index == 0 {
            return;
        }
        assert!(
            index <= self.committed && index >= self.applied,
            "applied({index}) is out of range [prev applied {}, committed {}]",
            self.applied,
            self.committed
        );
        self.applied = index;
    }

    pub fn stable_to(&mut self, index: u64, term: u64) {
        self.unstable.stable_to(index, term);
    }

    pub fn stable_snap_to(&mut self, index: u64) {
        self.unstable.stable_snap_to(index);
    }

    /// Advances the commit index to `max_index` if that entry is from `term` (Raft
    /// §5.4.2: only entries of the current term are committed by counting).
    pub fn maybe_commit(&mut self, max_index: u64, term: u64) -> bool {
        if max_index > self.committed && self.term_or_zero(max_index) == term {
            self.commit_to(max_index);
            return true;
        }
        false
    }

    /// Test-only variant of [`RaftLog::maybe_commit`] without the current-term check:
    /// the planted bug of Figure 8.
    #[cfg(feature = "planted-bugs")]
    pub fn maybe_commit_any_term(&mut self, max_index: u64) -> bool {
        if max_index > self.committed {
            self.commit_to(max_index);
            return true;
        }
        false
    }

    /// Replace the log with `snap`.
    pub fn restore(&mut self, snap: Snapshot) {
        self.committed = snap.metadata.index;
        self.unstable.restore(snap);
    }

    /// Entries `[lo, hi)` at most `max_size` bytes (at least one).
    pub fn slice(&self, lo: u64, hi: u64, max_size: u64) -> Result<Vec<Entry>, StorageError> {
        if lo > hi {
            return Err(StorageError::Other(format!("invalid slice {lo} > {hi}")));
        }
        if lo < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        if lo == hi {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let uoff = self.unstable.offset;
        if lo < uoff {
            let stored = self.store.entries(lo, hi.min(uoff), max_size)?;
            let short = (stored.len() as u64) < hi.min(uoff) - lo;
            out = stored;
            if short {
                return Ok(out);
            }
        }
        if hi > uoff {
            out.extend_from_slice(self.unstable.slice(lo.max(uoff), hi));
        }
        limit_size(&mut out, max_size);
        Ok(out)
    }

    /// Entries from `index` on, for replication.
    pub fn entries(&self, index: u64, max_size: u64) -> Result<Vec<Entry>, StorageError> {
        if index > self.last_index() {
            return Ok(Vec::new());
        }
        self.slice(index, self.last_index() + 1, max_size)
    }

    /// Every entry (tests and debugging).
    pub fn all_entries(&self) -> Vec<Entry> {
        self.entries(self.first_index(), u64::MAX)
            .expect("entries from first_index are available")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn log_with(ents: &[Entry]) -> RaftLog<MemStorage> {
        let s = MemStorage::new();
        s.wl().append(ents).unwrap();
        RaftLog::new(s).unwrap()
    }

    #[test]
    fn maybe_append_cases() {
        let mut l = log_with(&[ent(1, 1), ent(2, 2), ent(3, 3)]);
        // Consistency check fails.
        assert_eq!(l.maybe_append(3, 2, 3, &[ent(4, 4)]), None);
        // Already have these entries: nothing truncated; commit limited by last new.
        assert_eq!(l.maybe_append(1, 1, 3, &[ent(2, 2)]), Some(2));
        assert_eq!(l.committed, 2);
        assert_eq!(l.last_index(), 3);
        // Conflict truncates the suffix.
        assert_eq!(l.maybe_append(2, 2, 2, &[ent(3, 4), ent(4, 4)]), Some(4));
        assert_eq!(l.term(3), Ok(4));
        assert_eq!(l.last_index(), 4);
    }

    #[test]
    #[should_panic(expected = "conflicts with committed")]
    fn conflicting_with_committed_panics() {
        let mut l = log_with(&[ent(1, 1), ent(2, 2), ent(3, 3)]);
        l.commit_to(3);
        l.maybe_append(1, 1, 3, &[ent(2, 5)]);
    }

    #[test]
    fn find_conflict_by_term_skips_a_term() {
        let l = log_with(&[ent(1, 1), ent(2, 2), ent(3, 2), ent(4, 5), ent(5, 5)]);
        assert_eq!(l.find_conflict_by_term(5, 4), (3, 2));
        assert_eq!(l.find_conflict_by_term(5, 5), (5, 5));
        assert_eq!(l.find_conflict_by_term(9, 1), (1, 1));
    }

    #[test]
    fn slice_spans_stable_and_unstable() {
        let mut l = log_with(&[ent(1, 1), ent(2, 1)]);
        l.append(&[ent(3, 2), ent(4, 2)]);
        let got = l.slice(2, 5, u64::MAX).unwrap();
        assert_eq!(got, vec![ent(2, 1), ent(3, 2), ent(4, 2)]);
        let one = ent(0, 0).size();
        assert_eq!(l.slice(1, 5, one * 3).unwrap().len(), 3);
        assert_eq!(l.slice(0, 2, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(l.slice(1, 6, u64::MAX), Err(StorageError::Unavailable));
    }

    #[test]
    fn commit_only_current_term() {
        let mut l = log_with(&[ent(1, 1), ent(2, 2)]);
        assert!(!l.maybe_commit(2, 3));
        assert!(l.maybe_commit(2, 2));
        assert_eq!(l.committed, 2);
    }

    #[test]
    fn up_to_date() {
        let l = log_with(&[ent(1, 1), ent(2, 2)]);
        assert!(l.is_up_to_date(1, 3));
        assert!(l.is_up_to_date(2, 2));
        assert!(!l.is_up_to_date(1, 2));
        assert!(!l.is_up_to_date(5, 1));
    }
}
