//! File size: a store of a handful of small rows stays within etcd's empty bbolt file
//! (5 pages) however many commits it sees, when its commits are durable; deleting most
//! of a big table gives its pages back (`in_use_bytes`, checked against a walk of the
//! file) and later writes reuse them instead of growing the file.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{newest_meta, reached_pages};
use skiff_pages::{Options, Store, PAGE};

const PAGE_U64: u64 = PAGE as u64;

fn file_pages(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len() / PAGE_U64
}

/// A commit of what an idle etcd member writes: its consistent index and term, now and
/// then a member or a lease.
fn small_commit(store: &Store, i: u64, durable: bool) {
    let mut tx = store.begin_write();
    tx.insert(2, b"consistent_index", &i.to_be_bytes()).unwrap();
    tx.insert(2, b"term", &(i / 100).to_be_bytes()).unwrap();
    if i.is_multiple_of(7) {
        tx.insert(5, b"member", &[1; 60]).unwrap();
    }
    if i.is_multiple_of(13) {
        tx.insert(6, &(i % 5).to_be_bytes(), &[2; 30]).unwrap();
    }
    tx.commit(durable).unwrap();
}

#[test]
fn a_few_small_rows_stay_within_five_pages() {
    for every in [1, 2] {
        let dir = common::tempdir();
        let path = dir.path().join("db");
        let store = Store::open(&path, Options::default()).unwrap();
        for i in 0..2000u64 {
            small_commit(&store, i, i % every == 0);
            let pages = file_pages(&path);
            assert!(
                pages <= 5,
                "durable every {every}: commit {i}: {pages} pages"
            );
            assert_eq!(store.stats().file_bytes, pages * PAGE_U64);
        }
        // And so it is after a reopen.
        drop(store);
        let store = Store::open(&path, Options::default()).unwrap();
        assert!(store.stats().file_bytes <= 5 * PAGE_U64);
        assert!(file_pages(&path) <= 5);
    }
}

/// The backend commits lazily on every apply and durably once a second: pages a lazy
/// commit frees that no durable tree reaches (written by an earlier lazy commit) must be
/// reused at once, or the file grows by the pages every lazy commit rewrites until the
/// next durable commit (with one every 100 commits, a store of four rows was 103 pages).
#[test]
fn a_few_small_rows_stay_within_five_pages_between_durable_commits() {
    let dir = common::tempdir();
    let path = dir.path().join("db");
    let store = Store::open(&path, Options::default()).unwrap();
    for i in 0..2000u64 {
        small_commit(&store, i, i.is_multiple_of(100));
        let pages = file_pages(&path);
        assert!(pages <= 5, "commit {i}: {pages} pages");
    }
}

/// `in_use_bytes` is the meta slots and the pages the newest tree reaches, as a walk of
/// the file finds them (right after a durable commit, whose tree is the file's newest).
fn in_use_matches_the_file(store: &Store) -> u64 {
    let s = store.stats();
    assert_eq!(s.txid, s.durable_txid);
    let file = common::read(store.path());
    let (_, meta) = newest_meta(&file).unwrap();
    let reached = reached_pages(&file, &meta).len() as u64;
    assert_eq!(s.in_use_bytes, (reached + 2) * PAGE_U64);
    assert_eq!(s.file_bytes, file.len() as u64);
    s.in_use_bytes
}

#[test]
fn deleting_most_rows_gives_their_pages_back() {
    // Every tenth row kept (as a compaction keeps each key's latest revision), or the
    // oldest nine tenths deleted as one range.
    for scattered in [true, false] {
        let dir = common::tempdir();
        let path = dir.path().join("db");
        let store = Store::open(&path, Options::default()).unwrap();
        for batch in 0..10u32 {
            let mut tx = store.begin_write();
            for i in batch * 10_000..(batch + 1) * 10_000 {
                tx.insert(1, &i.to_be_bytes(), &[7; 100]).unwrap();
            }
            tx.commit(true).unwrap();
        }
        let full = in_use_matches_the_file(&store);
        assert!(full > 11 << 20, "100k rows of 100 bytes in {full} bytes");
        let gone = |i: u32| {
            if scattered {
                !i.is_multiple_of(10)
            } else {
                i < 90_000
            }
        };
        // The deletes in two transactions, a lazy and a durable one.
        for half in [0..50_000u32, 50_000..100_000] {
            let lazy = half.start == 0;
            let mut tx = store.begin_write();
            for i in half.filter(|i| gone(*i)) {
                assert!(tx.remove(1, &i.to_be_bytes()).unwrap());
            }
            tx.commit(!lazy).unwrap();
        }
        store.begin_write().commit(true).unwrap();
        let left = in_use_matches_the_file(&store);
        let r = store.begin_read();
        assert_eq!(r.len(1), 10_000);
        assert_eq!(r.iter(1).unwrap().count(), 10_000);
        drop(r);
        // 10k rows need about 1.2 MB of leaves; leaves merged only while under a
        // quarter page end up about a third full when every tenth row stays.
        let most = if scattered {
            full * 35 / 100
        } else {
            full * 12 / 100
        };
        assert!(
            left <= most,
            "scattered {scattered}: {full} bytes in use before, {left} after"
        );
        let file_before = store.stats().file_bytes;
        // The freed pages are written again before the file grows.
        let mut tx = store.begin_write();
        for i in 200_000..260_000u32 {
            tx.insert(1, &i.to_be_bytes(), &[8; 100]).unwrap();
        }
        tx.commit(true).unwrap();
        store.begin_write().commit(true).unwrap();
        let s = store.stats();
        assert!(
            s.file_bytes <= file_before + (1 << 20),
            "scattered {scattered}: the file grew from {file_before} to {}",
            s.file_bytes
        );
        in_use_matches_the_file(&store);
        eprintln!(
            "scattered {scattered}: in use {full} -> {left} bytes; file {file_before} -> {}",
            s.file_bytes
        );
    }
}

/// A transaction that flushed its nodes and was then dropped used to keep their pages
/// (counted in use, never written again) until the file was reopened: 20 such bulk loads
/// made an empty store 5 MB.
#[test]
fn a_dropped_transaction_gives_back_what_it_flushed() {
    let dir = common::tempdir();
    let path = dir.path().join("db");
    let store = Store::open(&path, Options::default()).unwrap();
    let mut tx = store.begin_write();
    tx.insert(1, b"kept", b"row").unwrap();
    tx.commit(true).unwrap();
    let before = in_use_matches_the_file(&store);
    for round in 0..20u32 {
        let mut tx = store.begin_write();
        for i in 0..2000u32 {
            tx.insert(1, &(round * 10_000 + i).to_be_bytes(), &[1; 100])
                .unwrap();
            if i % 700 == 0 {
                tx.flush().unwrap();
            }
        }
        // Some of the flushed nodes changed again after the flush.
        tx.remove(1, &(round * 10_000).to_be_bytes()).unwrap();
        tx.flush().unwrap();
        drop(tx);
        store.begin_write().commit(true).unwrap();
        assert_eq!(in_use_matches_the_file(&store), before, "round {round}");
    }
    store.begin_write().commit(true).unwrap();
    assert!(file_pages(&path) <= 4, "{} pages", file_pages(&path));
    // A flushed transaction that commits keeps its rows.
    let mut tx = store.begin_write();
    for i in 0..3000u32 {
        tx.insert(2, &i.to_be_bytes(), &[2; 100]).unwrap();
        if i % 1000 == 999 {
            tx.flush().unwrap();
        }
    }
    tx.commit(true).unwrap();
    in_use_matches_the_file(&store);
    drop(store);
    let store = Store::open(&path, Options::default()).unwrap();
    let r = store.begin_read();
    assert_eq!(
        (r.iter(1).unwrap().count(), r.iter(2).unwrap().count()),
        (1, 3000)
    );
}

/// A leaf that overflows in its middle is cut evenly (an append's is cut full from the
/// left, for MVCC revisions): random keys (lease ids, users, sessions) keep leaves at
/// about half full. Cutting every leaf from the left left a one-row leaf in the middle
/// of the key space that few later keys reached: leaves 10-25% full.
#[test]
fn random_inserts_fill_leaves_at_least_half() {
    let dir = common::tempdir();
    let store = Store::open(dir.path().join("db"), Options::default()).unwrap();
    let mut rng = common::Rng::new(5);
    let mut payload = 0;
    for b in 0..2000 {
        let mut tx = store.begin_write();
        for _ in 0..10 {
            let k = rng.bytes(16);
            payload += 12 + 1 + 16 + 100;
            tx.insert(1, &k, &[1; 100]).unwrap();
        }
        tx.commit(b % 10 == 0).unwrap();
    }
    store.begin_write().commit(true).unwrap();
    let in_use = in_use_matches_the_file(&store);
    // Measured: 2.58 MB of rows in 5.2 MB of pages (23 MB when every cut filled from
    // the left).
    assert!(
        payload * 5 / 2 >= in_use,
        "{payload} bytes of rows take {in_use} bytes of pages"
    );
}

/// A bulk load in key order (a defragment's copy, a restored dump, a conversion) in one
/// big transaction fills its leaves: the splits made while it grows keep whole pages.
#[test]
fn a_bulk_append_fills_its_pages() {
    let dir = common::tempdir();
    let store = Store::open(dir.path().join("db"), Options::default()).unwrap();
    let mut payload = 0usize;
    let mut tx = store.begin_write();
    for i in 0..100_000u64 {
        let value = vec![7u8; 60 + (i % 7) as usize * 40];
        payload += 12 + 1 + 8 + value.len();
        tx.insert(1, &i.to_be_bytes(), &value).unwrap();
    }
    tx.commit(true).unwrap();
    let in_use = in_use_matches_the_file(&store);
    assert!(
        in_use * 100 <= payload as u64 * 104,
        "{payload} bytes of rows in {in_use} bytes of pages"
    );
}
