//! Crash consistency. A child process applies a history (the "WAL": a Vec of requests,
//! entry i at raft index i), with durable backend commits only now and then, and is
//! killed with `abort()` between an apply's non-durable commit and the next durable one.
//! The parent reopens the backend, replays the whole WAL (entries at or below the
//! consistent index are skipped by the store) and must end with exactly the data,
//! revision and HashKV of a store that applied everything without crashing.
//! Also: etcd #17780 (revision going back after a crash during compaction).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::process::Command;
use std::time::Duration;

use common::{range_all, Rng};
use skiff_storage::backend::BackendConfig;
use skiff_storage::mvcc::*;

const CHILD_ENV: &str = "SKIFF_MVCC_CRASH_CHILD";

fn wal(seed: u64, n: usize) -> Vec<WriteRequest> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for rev in 1..=n as i64 {
        let k = format!("key{}", rng.below(20)).into_bytes();
        let req = match rng.below(10) {
            0..=5 => WriteRequest::Put(PutRequest {
                key: k,
                value: format!("value-{}", rng.next()).into_bytes(),
                ..Default::default()
            }),
            6 | 7 => WriteRequest::DeleteRange(DeleteRangeRequest {
                key: k,
                range_end: if rng.chance(30) {
                    b"key5".to_vec()
                } else {
                    Vec::new()
                },
                prev_kv: false,
            }),
            8 => WriteRequest::Txn(TxnRequest {
                compare: vec![],
                success: vec![
                    RequestOp::Put(PutRequest {
                        key: b"t1".to_vec(),
                        value: k.clone(),
                        ..Default::default()
                    }),
                    RequestOp::Put(PutRequest {
                        key: b"t2".to_vec(),
                        value: k,
                        ..Default::default()
                    }),
                ],
                failure: vec![],
            }),
            // Compactions may fail (future/compacted): that is part of the history too.
            _ => WriteRequest::Compaction(CompactionRequest {
                revision: rev - rng.below(5) as i64,
                physical: false,
            }),
        };
        out.push(req);
    }
    out
}

fn config(durable_ms: u64) -> StoreConfig {
    StoreConfig {
        backend: BackendConfig {
            durable_interval: Duration::from_millis(durable_ms),
            ..Default::default()
        },
        ..common::small_config()
    }
}

fn apply_from(store: &KvStore, wal: &[WriteRequest], upto: usize) {
    for (i, req) in wal.iter().enumerate().take(upto) {
        store
            .apply(
                ApplyEntry {
                    index: i as u64 + 1,
                    term: 1,
                    request: req,
                    aux: &[],
                    record: None,
                },
                &AnyLease,
            )
            .unwrap();
    }
}

/// Runs only as the child of `crash_then_replay_gives_the_same_state`.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split(',');
    let dir = parts.next().unwrap().to_string();
    let seed: u64 = parts.next().unwrap().parse().unwrap();
    let crash_at: usize = parts.next().unwrap().parse().unwrap();
    if seed == 17780 {
        // Apply the history, make it durable (compaction scheduled, physical deletion
        // under way in the background), and die at once.
        let (history, _) = history_17780();
        let store = KvStore::open(format!("{dir}/db"), config(3)).unwrap();
        apply_from(&store, &history, history.len());
        store.sync().unwrap();
        std::process::abort();
    }
    let wal = wal(seed, 400);
    // Durable commits every few ms: some applies become durable, the last ones do not.
    let store = KvStore::open(format!("{dir}/db"), config(3)).unwrap();
    for (i, req) in wal.iter().enumerate().take(crash_at) {
        store
            .apply(
                ApplyEntry {
                    index: i as u64 + 1,
                    term: 1,
                    request: req,
                    aux: &[],
                    record: None,
                },
                &AnyLease,
            )
            .unwrap();
        if i == crash_at / 2 {
            store.sync().unwrap();
        }
    }
    // Killed after the backend commit returned but before any clean shutdown.
    std::process::abort();
}

fn run_child(dir: &std::path::Path, seed: u64, crash_at: usize) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{},{seed},{crash_at}", dir.display()))
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die by abort");
}

#[test]
fn crash_then_replay_gives_the_same_state() {
    let mut lost = 0;
    for (seed, crash_at) in [(1u64, 150usize), (2, 399), (3, 57), (4, 260)] {
        let dir = tempfile::tempdir().unwrap();
        run_child(dir.path(), seed, crash_at);
        let wal = wal(seed, 400);
        let store = KvStore::open(dir.path().join("db"), config(1000)).unwrap();
        let ci = store.consistent_index();
        // The explicit sync at crash_at/2 made at least that much durable.
        assert!(ci as usize > crash_at / 2, "seed {seed}: ci {ci}");
        assert!(ci as usize <= crash_at);
        eprintln!("seed {seed}: crashed after entry {crash_at}, durable up to {ci}");
        lost += crash_at - ci as usize;
        // Replay the whole WAL up to where the crashed member had got, then the rest.
        apply_from(&store, &wal, wal.len());

        let reference = KvStore::open(dir.path().join("ref"), config(1000)).unwrap();
        apply_from(&reference, &wal, wal.len());

        assert_eq!(
            store.current_revision(),
            reference.current_revision(),
            "seed {seed}"
        );
        assert_eq!(store.compact_revision(), reference.compact_revision());
        assert_eq!(store.consistent_index(), 400);
        let from = store.compact_revision().max(1);
        for rev in from..=store.current_revision() {
            assert_eq!(
                range_all(&store, rev).unwrap().kvs,
                range_all(&reference, rev).unwrap().kvs,
                "seed {seed}: state at revision {rev}"
            );
        }
        for rev in [0, from, (from + store.current_revision()) / 2] {
            assert_eq!(
                store.hash_kv(rev).unwrap(),
                reference.hash_kv(rev).unwrap(),
                "seed {seed}: HashKV({rev})"
            );
        }
    }
    // The crashes did lose non-durable applies that the replay had to bring back.
    assert!(
        lost > 0,
        "no apply was lost: the test did not exercise replay"
    );
}

fn history_17780() -> (Vec<WriteRequest>, i64) {
    let mut history = Vec::new();
    for i in 0..50 {
        history.push(WriteRequest::Put(PutRequest {
            key: format!("k{i}").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        }));
    }
    // Revisions 2..=51 are the puts; 52 deletes them all; 53 puts and deletes x.
    history.push(WriteRequest::DeleteRange(DeleteRangeRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        prev_kv: false,
    }));
    history.push(WriteRequest::Put(PutRequest {
        key: b"x".to_vec(),
        ..Default::default()
    }));
    history.push(WriteRequest::DeleteRange(DeleteRangeRequest {
        key: b"x".to_vec(),
        ..Default::default()
    }));
    history.push(WriteRequest::Put(PutRequest {
        key: b"y".to_vec(),
        ..Default::default()
    }));
    history.push(WriteRequest::DeleteRange(DeleteRangeRequest {
        key: b"y".to_vec(),
        ..Default::default()
    }));
    let top = 56i64;
    history.push(WriteRequest::Compaction(CompactionRequest {
        revision: top,
        physical: false,
    }));
    (history, top)
}

/// etcd #17780: compaction removed the newest rows (tombstones), a crash came before the
/// compaction finished, and the rebuilt revision went back. Here the newest row is a
/// compacted-away delete and the store is killed right after scheduling the compaction.
#[test]
fn revision_never_goes_back_after_crash_during_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (history, top) = history_17780();
    {
        let store = KvStore::open(&path, config(1000)).unwrap();
        apply_from(&store, &history, history.len());
        assert_eq!(store.current_revision(), top);
        store.sync().unwrap();
        assert!(store.wait_compacted(top, Duration::from_secs(10)));
    }
    let store = KvStore::open(&path, config(1000)).unwrap();
    assert_eq!(
        store.current_revision(),
        top,
        "revision went back after reopen"
    );
    let mut ap = common::Applier::new(&store);
    assert_eq!(ap.put(&store, "z", "1"), top + 1);
}

#[test]
fn crash_during_physical_compaction_resumes_and_keeps_revision() {
    let dir = tempfile::tempdir().unwrap();
    run_child(dir.path(), 17780, 0);
    let (history, top) = history_17780();
    let store = KvStore::open(dir.path().join("db"), config(1000)).unwrap();
    assert_eq!(store.consistent_index(), history.len() as u64);
    assert_eq!(
        store.current_revision(),
        top,
        "revision went back after the crash"
    );
    assert_eq!(store.compact_revision(), top);
    // The interrupted physical compaction is resumed and completes.
    assert!(store.wait_compacted(top, Duration::from_secs(10)));
    // Only the tombstone at the compaction revision (y) is left.
    assert_eq!(store.backend_rows().unwrap(), 1);
    let mut ap = common::Applier::new(&store);
    assert_eq!(ap.put(&store, "z", "1"), top + 1);
}
