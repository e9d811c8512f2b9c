//! `Unstable`: entries and a snapshot Raft has accepted but the application has not yet
//! persisted. They live here until `stable_to` / `stable_snap_to` say they are durable,
//! after which reads go to `Storage`.

use crate::types::{Entry, Snapshot};

#[derive(Debug, Clone, Default)]
pub struct Unstable {
    /// An incoming snapshot, if any, not yet persisted.
    pub snapshot: Option<Snapshot>,
    /// Entries not yet persisted; `entries[i].index == offset + i`.
    pub entries: Vec<Entry>,
    pub offset: u64,
}

impl Unstable {
    pub fn new(offset: u64) -> Unstable {
        Unstable {
            offset,
            ..Default::default()
        }
    }

    /// The first index, if the unstable part holds a snapshot.
    pub fn maybe_first_index(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|s| s.metadata.index + 1)
    }

    /// The last index, if the unstable part holds entries or a snapshot.
    pub fn maybe_last_index(&self) -> Option<u64> {
        match (self.entries.last(), &self.snapshot) {
            (Some(e), _) => Some(e.index),
            (None, Some(s)) => Some(s.metadata.index),
            (None, None) => None,
        }
    }

    /// The term of `index`, if the unstable part knows it.
    pub fn maybe_term(&self, index: u64) -> Option<u64> {
        if index < self.offset {
            let s = self.snapshot.as_ref()?;
            return (s.metadata.index == index).then_some(s.metadata.term);
        }
        let last = self.maybe_last_index()?;
        if index > last {
            return None;
        }
        Some(self.entries[(index - self.offset) as usize].term)
    }

    /// Entries up to `index` (with term `term`) are durable: drop them from here. A
    /// mismatching term means they were overwritten meanwhile and must stay.
    pub fn stable_to(&mut self, index: u64, term: u64) {
        let Some(t) = self.maybe_term(index) else {
            return;
        };
        if t == term && index >= self.offset {
            let n = (index + 1 - self.offset) as usize;
            self.entries.drain(..n);
            self.offset = index + 1;
            self.shrink();
        }
    }

    /// Release memory after a burst of entries has been persisted.
    fn shrink(&mut self) {
        if self.entries.is_empty() && self.entries.capacity() > 1024 {
            self.entries = Vec::new();
        } else if self.entries.capacity() > 4 * self.entries.len().max(256) {
            self.entries.shrink_to(self.entries.len() * 2);
        }
    }

    /// The snapshot at `index` is durable.
    pub fn stable_snap_to(&mut self, index: u64) {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.metadata.index == index)
        {
            self.snapshot = None;
        }
    }

    /// Replace everything with `snap`.
    pub fn restore(&mut self, snap: Snapshot) {
        self.offset = snap.metadata.index + 1;
        self.entries.clear();
        self.snapshot = Some(snap);
    }

    /// Append `ents`, truncating any conflicting suffix first. The caller guarantees
    /// `ents[0].index` is at most one past the current last index.
    pub fn truncate_and_append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        let after = first.index;
        if after == self.offset + self.entries.len() as u64 {
            self.entries.extend_from_slice(ents);
        } else if after <= self.offset {
            // Replaces everything unstable (the stable log is truncated by the
            // application when it persists these entries).
            self.offset = after;
            self.entries.clear();
            self.entries.extend_from_slice(ents);
        } else {
            self.entries.truncate((after - self.offset) as usize);
            self.entries.extend_from_slice(ents);
        }
    }

    /// Entries `[lo, hi)`, which must lie within the unstable part.
    pub fn slice(&self, lo: u64, hi: u64) -> &[Entry] {
        debug_assert!(lo >= self.offset && hi <= self.offset + self.entries.len() as u64);
        &self.entries[(lo - self.offset) as usize..(hi - self.offset) as usize]
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

    #[test]
    fn stable_to_ignores_overwritten_entries() {
        let mut u = Unstable::new(5);
        u.truncate_and_append(&[ent(5, 1), ent(6, 1)]);
        u.stable_to(5, 2); // wrong term: overwritten meanwhile
        assert_eq!(u.offset, 5);
        u.stable_to(5, 1);
        assert_eq!((u.offset, u.entries.len()), (6, 1));
    }

    #[test]
    fn truncate_and_append_cases() {
        let mut u = Unstable::new(5);
        u.truncate_and_append(&[ent(5, 1), ent(6, 1), ent(7, 1)]);
        u.truncate_and_append(&[ent(6, 2)]);
        assert_eq!(u.entries, vec![ent(5, 1), ent(6, 2)]);
        u.truncate_and_append(&[ent(4, 3), ent(5, 3)]);
        assert_eq!((u.offset, u.entries.len()), (4, 2));
        assert_eq!(u.maybe_term(5), Some(3));
        assert_eq!(u.maybe_last_index(), Some(5));
    }

    #[test]
    fn snapshot_terms() {
        let mut u = Unstable::new(1);
        let mut s = Snapshot::default();
        s.metadata.index = 10;
        s.metadata.term = 4;
        u.restore(s);
        assert_eq!(u.maybe_first_index(), Some(11));
        assert_eq!(u.maybe_last_index(), Some(10));
        assert_eq!(u.maybe_term(10), Some(4));
        assert_eq!(u.maybe_term(9), None);
        u.stable_snap_to(10);
        assert!(u.snapshot.is_none());
    }
}
