//! Nodes read from the file, kept so that a hot node is not read and checked again.
//!
//! Sharded by page; each shard keeps two generations (new and old): a hit in the old
//! one moves the node to the new one, and when the new one outgrows half the shard's
//! budget it becomes the old one and the old one is dropped. That is LRU's effect at a
//! constant cost per access. Committed nodes never change in place: a page is written
//! again only after it was freed and no reader can reach it, and the writer replaces
//! the cached copy when it writes ([`Cache::put`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    new: HashMap<u64, Arc<[u8]>>,
    old: HashMap<u64, Arc<[u8]>>,
    new_bytes: usize,
}

pub struct Cache {
    shards: Vec<Mutex<Shard>>,
    /// Bytes a shard's new generation may hold before it becomes the old one.
    generation_bytes: usize,
}

impl Cache {
    pub fn new(budget: usize) -> Cache {
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            generation_bytes: (budget / SHARDS / 2).max(crate::format::PAGE),
        }
    }

    fn shard(&self, pgid: u64) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(pgid as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, pgid: u64) -> Option<Arc<[u8]>> {
        let mut s = self.shard(pgid);
        if let Some(n) = s.new.get(&pgid) {
            return Some(n.clone());
        }
        let n = s.old.remove(&pgid)?;
        self.insert(&mut s, pgid, n.clone());
        Some(n)
    }

    /// Caches `node` as page `pgid`'s (replacing what was cached for it). A node of more
    /// than a quarter of a generation is not kept (it would push out everything else);
    /// only the stale copy is dropped.
    pub fn put(&self, pgid: u64, node: Arc<[u8]>) {
        let mut s = self.shard(pgid);
        s.old.remove(&pgid);
        if let Some(prev) = s.new.remove(&pgid) {
            s.new_bytes -= prev.len();
        }
        if node.len() <= self.generation_bytes / 4 {
            self.insert(&mut s, pgid, node);
        }
    }

    fn insert(&self, s: &mut Shard, pgid: u64, node: Arc<[u8]>) {
        s.new_bytes += node.len();
        s.new.insert(pgid, node);
        if s.new_bytes > self.generation_bytes {
            s.old = std::mem::take(&mut s.new);
            s.new_bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_nodes_survive_and_the_budget_holds() {
        let c = Cache::new(SHARDS * 2 * 4 * crate::format::PAGE);
        let node: Arc<[u8]> = vec![0u8; crate::format::PAGE].into();
        for round in 0..100u64 {
            c.put(round * SHARDS as u64, node.clone());
            assert!(c.get(0).is_some(), "the hot node stays");
        }
        let s = c.shard(0);
        assert!(s.new.len() + s.old.len() <= 9);
        drop(s);
        let big: Arc<[u8]> = vec![0u8; 64 * crate::format::PAGE].into();
        c.put(SHARDS as u64, big);
        assert!(
            c.get(SHARDS as u64).is_none(),
            "a node bigger than its share is not kept"
        );
        assert!(c.get(0).is_some(), "and does not push the others out");
    }
}
