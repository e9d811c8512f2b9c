//! The in-memory key index: for every key, the revisions of its retained versions, so a
//! read at any revision finds which backend row to load without scanning the backend.
//!
//! A key's history is a sequence of *generations*: a generation starts with a put that
//! creates the key, continues with puts, and ends with a delete (a *tombstone*). Here the
//! generations of a key are kept flat, as one ascending list of revisions where tombstones
//! are flagged: a generation boundary is simply "after a tombstone". Besides, each key
//! keeps its current generation's creation revision and version, as etcd's key index
//! does, so a put to an existing key knows its `create_revision` and `version` without
//! reading the previous version's row from the backend: a random read, which misses the
//! backend's cache once the data outgrows it (txn-put of random keys, after 20,000
//! txns: 0.6 `pread`s per put on each member, and the members' CPU 8-14% higher than
//! without the read). They are kept in 8 bytes (the creation revision as its
//! distance back from the current one); a value that does not fit is marked unknown, and
//! a put of that key reads the row as before. A key with one version is its key bytes,
//! one 16-byte revision stored inline and the two counters, with no further allocation.
//!
//! Compaction at revision `at` keeps, per key, the newest revision `<= at` (needed to read
//! at `at`), every write at exactly `at`, and everything after; a tombstone that is the
//! newest revision `<= at` is dropped too, except when it is exactly at `at`: a watcher may
//! start at the compaction revision and must still see that delete (etcd #18089, #19179). The backend rows that
//! compaction may delete are exactly the rows `<= at` the index no longer lists.

use std::collections::BTreeMap;
use std::ops::Bound;

use smallvec::SmallVec;

use super::codec::Revision;

/// One retained revision of a key. `sub` fits 32 bits: it counts the writes of one txn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdxRev {
    pub main: i64,
    pub sub: u32,
    pub tombstone: bool,
}

impl IdxRev {
    pub fn rev(self) -> Revision {
        Revision::new(self.main, i64::from(self.sub))
    }
}

#[derive(Clone, Debug)]
pub(crate) struct KeyIndex {
    revs: SmallVec<[IdxRev; 1]>,
    /// The current generation's creation revision, as the distance back from the head's
    /// main revision, and version (its puts so far), or [`UNKNOWN`] where one does not
    /// fit; meaningless while the key is deleted.
    created_back: u32,
    version: u32,
}

/// A counter of [`KeyIndex`] that did not fit: the row has it.
const UNKNOWN: u32 = u32::MAX;

/// `v` as a counter, or [`UNKNOWN`].
fn counter(v: i64) -> u32 {
    u32::try_from(v)
        .ok()
        .filter(|&c| c != UNKNOWN)
        .unwrap_or(UNKNOWN)
}

impl KeyIndex {
    /// The revision visible at `at` (newest revision `<= at`), unless it is a tombstone.
    pub fn visible_at(&self, at: i64) -> Option<IdxRev> {
        let n = self.revs.partition_point(|r| r.main <= at);
        let r = *self.revs.get(n.checked_sub(1)?)?;
        (!r.tombstone).then_some(r)
    }

    /// The revision of the current version, if the key currently exists.
    pub fn head(&self) -> Option<IdxRev> {
        let r = *self.revs.last()?;
        (!r.tombstone).then_some(r)
    }

    /// The current version's `create_revision` and `version`, if the key exists and
    /// they are known (see [`UNKNOWN`]).
    pub fn head_version(&self) -> Option<(i64, i64)> {
        let head = self.head()?;
        if self.created_back == UNKNOWN || self.version == UNKNOWN {
            return None;
        }
        Some((
            head.main - i64::from(self.created_back),
            i64::from(self.version),
        ))
    }

    pub fn contains(&self, rev: Revision) -> bool {
        self.revs.iter().any(|r| r.rev() == rev)
    }
}

/// Key -> [`KeyIndex`], ordered by key bytes.
#[derive(Default)]
pub(crate) struct Index {
    keys: BTreeMap<Box<[u8]>, KeyIndex>,
}

/// `[key, end)` bounds with etcd's conventions: empty `end` = the single key, `[0]` = no
/// upper bound. `None` if the range is empty (end <= key).
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

fn bounds<'a>(key: &'a [u8], end: &'a [u8]) -> Option<KeyBounds<'a>> {
    if end.is_empty() {
        return Some((Bound::Included(key), Bound::Included(key)));
    }
    if end == [0] {
        return Some((Bound::Included(key), Bound::Unbounded));
    }
    if end <= key {
        return None;
    }
    Some((Bound::Included(key), Bound::Excluded(end)))
}

impl Index {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn get(&self, key: &[u8]) -> Option<&KeyIndex> {
        self.keys.get(key)
    }

    /// Appends `rev`: a put with the `(create_revision, version)` it wrote, which become
    /// the key's current ones, or a tombstone (`None`).
    fn push(&mut self, key: &[u8], rev: Revision, put: Option<(i64, i64)>) {
        let entry = IdxRev {
            main: rev.main,
            sub: u32::try_from(rev.sub).expect("sub-revision fits u32 (bounded by txn size)"),
            tombstone: put.is_none(),
        };
        let counters =
            put.map(|(created, version)| (counter(rev.main - created), counter(version)));
        if let Some(ki) = self.keys.get_mut(key) {
            ki.revs.push(entry);
            if let Some((created_back, version)) = counters {
                (ki.created_back, ki.version) = (created_back, version);
            }
            return;
        }
        let (created_back, version) = counters.unwrap_or((0, 0));
        let mut revs = SmallVec::new();
        revs.push(entry);
        self.keys.insert(
            key.into(),
            KeyIndex {
                revs,
                created_back,
                version,
            },
        );
    }

    /// The `create_revision` and `version` a put of `key` at revision `main` writes:
    /// the current generation's, one version on, or a new generation's. `None` if the
    /// key exists and its counters are [`UNKNOWN`]: the current row has them.
    pub fn next_version(&self, key: &[u8], main: i64) -> Option<(i64, i64)> {
        match self.keys.get(key) {
            Some(ki) if ki.head().is_some() => ki
                .head_version()
                .map(|(created, version)| (created, version + 1)),
            _ => Some((main, 1)),
        }
    }

    /// Records a put at `rev` that wrote `(create_revision, version)`
    /// ([`Index::next_version`]).
    pub fn put(&mut self, key: &[u8], rev: Revision, version: (i64, i64)) {
        self.push(key, rev, Some(version));
    }

    /// Records a delete of a live key at `rev`.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) {
        if self.keys.contains_key(key) {
            self.push(key, rev, None);
        }
    }

    /// Rebuild: appends a revision read from the backend (rows arrive in revision order),
    /// with the row's `(create_revision, version)` (ignored for a tombstone). A tombstone
    /// whose puts were compacted away still belongs in the index (it may be the one kept
    /// at the compaction revision).
    pub fn restore(&mut self, key: &[u8], rev: Revision, tombstone: bool, version: (i64, i64)) {
        self.push(key, rev, (!tombstone).then_some(version));
    }

    /// Calls `f(key, visible revision)` for every key in `[key, end)` visible at `at`, in
    /// key order, until `f` returns false.
    pub fn range_at(
        &self,
        key: &[u8],
        end: &[u8],
        at: i64,
        mut f: impl FnMut(&[u8], IdxRev) -> bool,
    ) {
        let Some(b) = bounds(key, end) else { return };
        for (k, ki) in self.keys.range::<[u8], _>(b) {
            if let Some(r) = ki.visible_at(at) {
                if !f(k, r) {
                    return;
                }
            }
        }
    }

    /// Live keys (at the head) in `[key, end)` with their current revisions.
    pub fn live_in(&self, key: &[u8], end: &[u8]) -> Vec<(Vec<u8>, IdxRev)> {
        let mut out = Vec::new();
        let Some(b) = bounds(key, end) else {
            return out;
        };
        for (k, ki) in self.keys.range::<[u8], _>(b) {
            if let Some(r) = ki.head() {
                out.push((k.to_vec(), r));
            }
        }
        out
    }

    /// Compacts every key at `at` (see the module docs).
    pub fn compact(&mut self, at: i64) {
        self.keys.retain(|_, ki| {
            let n = ki.revs.partition_point(|r| r.main <= at);
            if n == 0 {
                return true;
            }
            let newest = ki.revs[n - 1];
            // Every write at exactly `at` stays (a txn may put and then delete one key in
            // the same revision; a watcher from `at` gets both events).
            let first_at = ki.revs.partition_point(|r| r.main < at);
            let drop_upto = if newest.tombstone && newest.main < at {
                n
            } else {
                (n - 1).min(first_at)
            };
            if drop_upto > 0 {
                ki.revs.drain(..drop_upto);
                if ki.revs.len() <= 1 {
                    ki.revs.shrink_to_fit();
                }
            }
            !ki.revs.is_empty()
        });
    }

    /// Revisions `<= at` that a compaction at `at` keeps and that are not tombstones: the
    /// newest version of each key live at `at`. (This is etcd's `Keep`, used by HashKV.)
    pub fn keep_at(&self, at: i64, mut f: impl FnMut(Revision)) {
        for ki in self.keys.values() {
            if let Some(r) = ki.visible_at(at) {
                f(r.rev());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: i64, s: i64) -> Revision {
        Revision::new(m, s)
    }

    fn put(ix: &mut Index, key: &[u8], rev: Revision) {
        let version = ix.next_version(key, rev.main).unwrap();
        ix.put(key, rev, version);
    }

    #[test]
    fn versions_follow_generations() {
        let mut ix = Index::default();
        assert_eq!(ix.next_version(b"a", 2), Some((2, 1)));
        put(&mut ix, b"a", r(2, 0));
        put(&mut ix, b"a", r(3, 0));
        assert_eq!(ix.get(b"a").unwrap().head_version(), Some((2, 2)));
        assert_eq!(ix.next_version(b"a", 4), Some((2, 3)));
        ix.tombstone(b"a", r(4, 0));
        assert_eq!(ix.get(b"a").unwrap().head_version(), None);
        // A put after the delete starts a new generation.
        assert_eq!(ix.next_version(b"a", 5), Some((5, 1)));
        put(&mut ix, b"a", r(5, 0));
        // Compaction drops old revisions, not the current generation's counters.
        ix.compact(5);
        assert_eq!(ix.get(b"a").unwrap().head_version(), Some((5, 1)));
        // A rebuild takes them from the rows.
        let mut rebuilt = Index::default();
        rebuilt.restore(b"a", r(5, 0), false, (5, 1));
        rebuilt.restore(b"b", r(6, 0), false, (3, 7));
        assert_eq!(rebuilt.next_version(b"b", 8), Some((3, 8)));
        // Counters that do not fit are unknown: the put reads them from the row.
        rebuilt.restore(b"c", r(9, 0), false, (9, i64::from(u32::MAX) + 5));
        assert_eq!(rebuilt.next_version(b"c", 10), None);
        rebuilt.restore(b"d", r(i64::from(u32::MAX) + 9, 0), false, (2, 4));
        assert_eq!(rebuilt.next_version(b"d", i64::from(u32::MAX) + 10), None);
    }

    #[test]
    fn generations_and_visibility() {
        let mut ix = Index::default();
        put(&mut ix, b"a", r(2, 0));
        put(&mut ix, b"a", r(3, 0));
        ix.tombstone(b"a", r(4, 0));
        put(&mut ix, b"a", r(6, 0));
        let ki = ix.get(b"a").unwrap();
        assert_eq!(ki.visible_at(1), None);
        assert_eq!(ki.visible_at(2).unwrap().main, 2);
        assert_eq!(ki.visible_at(3).unwrap().main, 3);
        assert_eq!(ki.visible_at(4), None);
        assert_eq!(ki.visible_at(5), None);
        assert_eq!(ki.visible_at(9).unwrap().main, 6);
        assert_eq!(ki.head().unwrap().main, 6);

        // Compaction at 3 keeps rev 3 (visible at 3) and everything after.
        ix.compact(3);
        assert!(!ix.get(b"a").unwrap().contains(r(2, 0)));
        assert!(ix.get(b"a").unwrap().contains(r(3, 0)));
        // At 4 the newest is the tombstone at exactly 4: kept for watchers from 4.
        ix.compact(4);
        assert!(ix.get(b"a").unwrap().contains(r(4, 0)));
        assert!(!ix.get(b"a").unwrap().contains(r(3, 0)));
        // At 5 the tombstone is older than the compaction: dropped.
        ix.compact(5);
        assert!(!ix.get(b"a").unwrap().contains(r(4, 0)));
        assert!(ix.get(b"a").unwrap().contains(r(6, 0)));

        put(&mut ix, b"b", r(7, 0));
        ix.tombstone(b"b", r(8, 0));
        ix.compact(9);
        assert!(ix.get(b"b").is_none());
    }

    #[test]
    fn range_bounds() {
        let mut ix = Index::default();
        for (i, k) in [b"a", b"b", b"c"].iter().enumerate() {
            put(&mut ix, *k, r(i as i64 + 2, 0));
        }
        let collect = |k: &[u8], e: &[u8]| {
            let mut v = Vec::new();
            ix.range_at(k, e, 10, |k, _| {
                v.push(k.to_vec());
                true
            });
            v
        };
        assert_eq!(collect(b"b", b""), vec![b"b".to_vec()]);
        assert_eq!(collect(b"b", b"\0"), vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(collect(b"a", b"c"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(collect(b"c", b"a").is_empty());
    }
}
#[cfg(test)]
mod mem_probe {
    #[test]
    #[ignore]
    fn index_rss() {
        let rss = || {
            let s = std::fs::read_to_string("/proc/self/statm").unwrap();
            s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
        };
        for size in [8usize, 64] {
            let before = rss();
            let mut ix = super::Index::default();
            for i in 0..1_000_000u64 {
                let mut k = format!("{i:08}").into_bytes();
                k.resize(size, b'_');
                let rev = super::Revision::new(i as i64 + 2, 0);
                ix.put(&k, rev, ix.next_version(&k, rev.main).unwrap());
            }
            println!("key {size} B: {} B/key", (rss() - before) / 1_000_000);
            std::mem::forget(ix);
        }
    }
}
