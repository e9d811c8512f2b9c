//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use skiff_storage::mvcc::*;

/// A small deterministic PRNG (xorshift64*), so every run is reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// Applies one request at the next raft index of `store`.
pub struct Applier {
    pub index: u64,
}

impl Applier {
    pub fn new(store: &KvStore) -> Applier {
        Applier {
            index: store.consistent_index(),
        }
    }

    pub fn apply(
        &mut self,
        store: &KvStore,
        req: WriteRequest,
    ) -> (Result<WriteResponse>, Vec<Event>) {
        self.index += 1;
        let entry = ApplyEntry {
            index: self.index,
            term: 1,
            request: &req,
            aux: &[],
            record: None,
        };
        match store.apply(entry, &AnyLease).expect("backend ok") {
            Applied::Done {
                response, events, ..
            } => (response, events),
            Applied::Skipped => panic!("entry {} skipped", self.index),
        }
    }

    pub fn put(&mut self, store: &KvStore, k: &str, v: &str) -> i64 {
        let (r, _) = self.apply(
            store,
            WriteRequest::Put(PutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            }),
        );
        r.expect("put ok").header().revision
    }

    pub fn delete(&mut self, store: &KvStore, k: &str, end: &str) -> i64 {
        let (r, _) = self.apply(
            store,
            WriteRequest::DeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                prev_kv: false,
            }),
        );
        r.expect("delete ok").header().revision
    }

    pub fn compact(&mut self, store: &KvStore, rev: i64) -> Result<WriteResponse> {
        self.apply(
            store,
            WriteRequest::Compaction(CompactionRequest {
                revision: rev,
                physical: false,
            }),
        )
        .0
    }
}

pub fn range_all(store: &KvStore, rev: i64) -> Result<RangeResponse> {
    store.range(&RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision: rev,
        ..Default::default()
    })
}

pub fn small_config() -> StoreConfig {
    StoreConfig {
        compaction_batch: 7,
        compaction_pause: std::time::Duration::from_millis(0),
        ..Default::default()
    }
}
