//! Free space: which pages a commit may write.
//!
//! A page is written only when no tree that could still be read or recovered reaches it:
//! a page freed by commit `t` (copied elsewhere or dropped) becomes reusable once a
//! durable commit at or after `t` is on the disk (so a crash recovers a tree without it)
//! and every open reader began at or after `t` (so none reads it). Until then it waits in
//! `pending`. A page written since the last durable commit is in no tree a crash could
//! recover, so once freed it waits for the readers alone (`pending_fresh`): a run of
//! lazy commits that rewrite the same few nodes reuses the same few pages. New pages come from the lowest free ones first, so the file stays dense, and
//! free pages at the end of the file are cut off it after a durable commit
//! ([`Space::shrink`]): the file gives space back without a defragmentation where it can.

use std::collections::{BTreeSet, HashSet, VecDeque};

use crate::format::NodeRef;

/// Longest stretch of the free set searched for a run of pages for a multi-page node
/// before the run is taken from the end of the file instead.
const RUN_SEARCH: usize = 4096;

#[derive(Debug, Default)]
pub struct Space {
    /// Pages in the file (`0..hwm`).
    pub hwm: u64,
    free: BTreeSet<u64>,
    /// Pages freed by each commit, oldest first, not yet reusable.
    pending: VecDeque<(u64, Vec<NodeRef>)>,
    /// Pages written since the last durable commit: no durable tree reaches them.
    fresh: HashSet<u64>,
    /// Freed pages that were fresh, by commit: they wait for the readers only.
    pending_fresh: VecDeque<(u64, Vec<NodeRef>)>,
    /// Pages the newest tree reaches (meta pages not counted).
    pub live: u64,
}

impl Space {
    /// The space of a file of `hwm` pages whose newest tree reaches the pages `used` says.
    pub fn from_used(hwm: u64, used: &[bool]) -> Space {
        let free: BTreeSet<u64> = (2..hwm)
            .filter(|p| !used.get(*p as usize).copied().unwrap_or(false))
            .collect();
        let live = hwm.saturating_sub(2) - free.len() as u64;
        Space {
            hwm,
            free,
            live,
            ..Space::default()
        }
    }

    /// Makes reusable the pages freed by commits up to `durable` that every reader began
    /// after (`readers`: the oldest open reader's commit), and the fresh ones freed by
    /// commits up to `readers`.
    pub fn release(&mut self, durable: u64, readers: u64) {
        let upto = durable.min(readers);
        for (queue, upto) in [
            (&mut self.pending, upto),
            (&mut self.pending_fresh, readers),
        ] {
            while queue.front().is_some_and(|(t, _)| *t <= upto) {
                if let Some((_, refs)) = queue.pop_front() {
                    for r in refs {
                        self.free.extend(r.pgid..r.pgid + r.pages as u64);
                    }
                }
            }
        }
    }

    /// A durable commit is on the disk: every page written so far is in its tree or
    /// freed before it.
    pub fn made_durable(&mut self) {
        self.fresh.clear();
    }

    /// A run of `pages` pages to write a node into.
    pub fn alloc(&mut self, pages: u32) -> u64 {
        self.live += pages as u64;
        let start = self.take(pages);
        self.fresh.insert(start);
        start
    }

    fn take(&mut self, pages: u32) -> u64 {
        if pages == 1 {
            if let Some(p) = self.free.pop_first() {
                return p;
            }
        } else if let Some(start) = self.find_run(pages as u64) {
            for p in start..start + pages as u64 {
                self.free.remove(&p);
            }
            return start;
        }
        let start = self.hwm;
        self.hwm += pages as u64;
        start
    }

    fn find_run(&self, pages: u64) -> Option<u64> {
        let (mut start, mut len, mut prev) = (0, 0, None::<u64>);
        for &p in self.free.iter().take(RUN_SEARCH) {
            if prev.is_some_and(|q| q + 1 == p) {
                len += 1;
            } else {
                start = p;
                len = 1;
            }
            if len == pages {
                return Some(start);
            }
            prev = Some(p);
        }
        None
    }

    /// Records the pages commit `txid` freed.
    pub fn retire(&mut self, txid: u64, freed: Vec<NodeRef>) {
        if freed.is_empty() {
            return;
        }
        self.live -= freed.iter().map(|r| r.pages as u64).sum::<u64>();
        let (fresh, durable): (Vec<NodeRef>, Vec<NodeRef>) =
            freed.into_iter().partition(|r| self.fresh.remove(&r.pgid));
        if !fresh.is_empty() {
            self.pending_fresh.push_back((txid, fresh));
        }
        if !durable.is_empty() {
            self.pending.push_back((txid, durable));
        }
    }

    /// Frees at once pages that were written but never published (an abandoned
    /// transaction's flushed nodes: no tree or reader reaches them).
    pub fn give_back(&mut self, nodes: Vec<NodeRef>) {
        for r in nodes {
            self.live -= r.pages as u64;
            self.fresh.remove(&r.pgid);
            self.free.extend(r.pgid..r.pgid + r.pages as u64);
        }
    }

    /// Cuts free pages off the end; whether `hwm` went down.
    pub fn shrink(&mut self) -> bool {
        let before = self.hwm;
        while self.hwm > 2 && self.free.last() == Some(&(self.hwm - 1)) {
            self.free.pop_last();
            self.hwm -= 1;
        }
        self.hwm < before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_pages_wait_for_their_release_then_are_reused_lowest_first() {
        let mut s = Space::from_used(6, &[true, true, true, false, true, true]);
        assert_eq!((s.live, s.alloc(1)), (3, 3));
        assert_eq!(s.alloc(1), 6, "nothing free: the file grows");
        s.retire(5, vec![NodeRef { pgid: 2, pages: 1 }]);
        assert_eq!(s.alloc(1), 7, "freed at 5, not released");
        s.release(4, u64::MAX);
        assert_eq!(s.alloc(1), 8);
        s.release(5, 4);
        assert_eq!(s.alloc(1), 9, "a reader of commit 4 may read it");
        s.release(5, u64::MAX);
        assert_eq!(s.alloc(1), 2);
        s.made_durable();
        s.retire(
            6,
            vec![NodeRef { pgid: 7, pages: 1 }, NodeRef { pgid: 8, pages: 1 }],
        );
        s.release(6, u64::MAX);
        assert_eq!(s.alloc(2), 7, "a run found in the free set");
        s.retire(7, vec![NodeRef { pgid: 7, pages: 2 }]);
        s.release(6, 6);
        assert_eq!(s.alloc(1), 10, "a reader of commit 6 may read it");
        s.retire(
            8,
            vec![
                NodeRef { pgid: 9, pages: 1 },
                NodeRef { pgid: 10, pages: 1 },
            ],
        );
        s.release(6, u64::MAX);
        // 7-8 and 10 were written since the durable commit: the readers were enough.
        assert!(s.shrink());
        assert_eq!(s.hwm, 10, "page 9 waits for a durable commit");
        assert_eq!(s.alloc(1), 7);
    }
}
