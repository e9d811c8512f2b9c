//! The in-memory key index: for every key, the revisions of its retained versions, so a
//! read at any revision finds which backend row to load without scanning the backend.
//!
//! A key's history is a sequence of *generations*: a generation starts with a put that
//! creates the key, continues with puts, and ends with a delete (a *tombstone*). Here the
//! generations of a key are kept flat, as one ascending list of revisions where tombstones
//! are flagged: a generation boundary is simply "after a tombstone". Only the current
//! generation's creation revision and version are kept apart (compaction may drop its
//! first revisions), which is all a put needs. This layout keeps a key with one version
//! at one 16-byte revision stored inline, with no further allocation.
//!
//! Compaction at revision `at` keeps, per key, the newest revision `<= at` (needed to read
//! at `at`) and everything after; a tombstone that is the newest revision `<= at` is
//! dropped too, except when it is exactly at `at`: a watcher may start at the compaction
//! revision and must still see that delete (etcd #18089, #19179). The backend rows that
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
    /// Creation revision of the current generation (0 if the key is deleted).
    created: i64,
    /// Version of the latest put of the current generation (0 if the key is deleted).
    version: i64,
}

impl KeyIndex {
    /// The revision visible at `at` (newest revision `<= at`), unless it is a tombstone.
    pub fn visible_at(&self, at: i64) -> Option<IdxRev> {
        let n = self.revs.partition_point(|r| r.main <= at);
        let r = *self.revs.get(n.checked_sub(1)?)?;
        (!r.tombstone).then_some(r)
    }

    /// The live head: (revision, create revision, version) if the key currently exists.
    pub fn head(&self) -> Option<(IdxRev, i64, i64)> {
        let r = *self.revs.last()?;
        (!r.tombstone).then_some((r, self.created, self.version))
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

    /// Records a put at `rev`. `created`/`version` are those of the new KeyValue.
    pub fn put(&mut self, key: &[u8], rev: Revision, created: i64, version: i64) {
        let entry = IdxRev {
            main: rev.main,
            sub: u32::try_from(rev.sub).expect("sub-revision fits u32 (bounded by txn size)"),
            tombstone: false,
        };
        match self.keys.get_mut(key) {
            Some(ki) => {
                ki.revs.push(entry);
                ki.created = created;
                ki.version = version;
            }
            None => {
                let mut revs = SmallVec::new();
                revs.push(entry);
                self.keys.insert(
                    key.into(),
                    KeyIndex {
                        revs,
                        created,
                        version,
                    },
                );
            }
        }
    }

    /// Records a delete of a live key at `rev`.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) {
        if let Some(ki) = self.keys.get_mut(key) {
            ki.revs.push(IdxRev {
                main: rev.main,
                sub: u32::try_from(rev.sub).expect("sub-revision fits u32 (bounded by txn size)"),
                tombstone: true,
            });
            ki.created = 0;
            ki.version = 0;
        }
    }

    /// Rebuild: appends a revision read from the backend (rows arrive in revision order).
    pub fn restore(&mut self, key: &[u8], rev: Revision, tombstone: bool, created: i64, ver: i64) {
        if tombstone {
            // A tombstone whose puts were compacted away still belongs in the index (it
            // may be the one kept at the compaction revision).
            let ki = self.keys.entry(key.into()).or_insert_with(|| KeyIndex {
                revs: SmallVec::new(),
                created: 0,
                version: 0,
            });
            ki.revs.push(IdxRev {
                main: rev.main,
                sub: u32::try_from(rev.sub).unwrap_or(u32::MAX),
                tombstone: true,
            });
            ki.created = 0;
            ki.version = 0;
        } else {
            self.put(key, rev, created, ver);
        }
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

    /// Live keys (at the head) in `[key, end)` with their index entries.
    pub fn live_in(&self, key: &[u8], end: &[u8]) -> Vec<(Vec<u8>, IdxRev, i64, i64)> {
        let mut out = Vec::new();
        let Some(b) = bounds(key, end) else {
            return out;
        };
        for (k, ki) in self.keys.range::<[u8], _>(b) {
            if let Some((r, c, v)) = ki.head() {
                out.push((k.to_vec(), r, c, v));
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
            let drop_upto = if newest.tombstone && newest.main < at {
                n
            } else {
                n - 1
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

    #[test]
    fn generations_and_visibility() {
        let mut ix = Index::default();
        ix.put(b"a", r(2, 0), 2, 1);
        ix.put(b"a", r(3, 0), 2, 2);
        ix.tombstone(b"a", r(4, 0));
        ix.put(b"a", r(6, 0), 6, 1);
        let ki = ix.get(b"a").unwrap();
        assert_eq!(ki.visible_at(1), None);
        assert_eq!(ki.visible_at(2).unwrap().main, 2);
        assert_eq!(ki.visible_at(3).unwrap().main, 3);
        assert_eq!(ki.visible_at(4), None);
        assert_eq!(ki.visible_at(5), None);
        assert_eq!(ki.visible_at(9).unwrap().main, 6);
        assert_eq!(ki.head().unwrap().1, 6);

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

        ix.put(b"b", r(7, 0), 7, 1);
        ix.tombstone(b"b", r(8, 0));
        ix.compact(9);
        assert!(ix.get(b"b").is_none());
    }

    #[test]
    fn range_bounds() {
        let mut ix = Index::default();
        for (i, k) in [b"a", b"b", b"c"].iter().enumerate() {
            ix.put(*k, r(i as i64 + 2, 0), i as i64 + 2, 1);
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
