//! The page store's behaviour through its public API: rows, transactions, commits that
//! survive a reopen and commits that do not, file size.
#![allow(clippy::unwrap_used)]

use std::ops::Bound;

use skiff_pages::{Options, Store, PAGE};

fn rows(store: &Store, table: u8) -> Vec<(Vec<u8>, Vec<u8>)> {
    let tx = store.begin_read();
    tx.iter(table)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (r.key().to_vec(), r.value().to_vec())
        })
        .collect()
}

#[test]
fn rows_are_kept_per_table_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db"), Options::default()).unwrap();
    let mut tx = store.begin_write();
    assert!(tx.insert(1, b"b", b"2").unwrap());
    assert!(tx.insert(1, b"a", b"1").unwrap());
    assert!(tx.insert(2, b"a", b"other table").unwrap());
    assert!(
        !tx.insert(1, b"b", b"22").unwrap(),
        "replacing is not adding"
    );
    assert_eq!(tx.get(1, b"b").unwrap().as_deref(), Some(&b"22"[..]));
    tx.commit(false).unwrap();
    assert_eq!(
        rows(&store, 1),
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"22".to_vec())
        ]
    );
    assert_eq!(
        rows(&store, 2),
        vec![(b"a".to_vec(), b"other table".to_vec())]
    );
    let r = store.begin_read();
    assert_eq!((r.len(1), r.len(2), r.len(3)), (2, 1, 0));
    let got: Vec<Vec<u8>> = r
        .range(1, Bound::Excluded(b"a"), Bound::Unbounded)
        .unwrap()
        .map(|x| x.unwrap().key().to_vec())
        .collect();
    assert_eq!(got, vec![b"b".to_vec()]);
    assert!(matches!(
        store.begin_write().insert(16, b"k", b"v"),
        Err(skiff_pages::Error::NoSuchTable(16))
    ));
}

#[test]
fn a_reader_keeps_its_view_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db"), Options::default()).unwrap();
    let mut tx = store.begin_write();
    for i in 0..2000u32 {
        tx.insert(1, &i.to_be_bytes(), &[7; 100]).unwrap();
    }
    tx.commit(true).unwrap();
    let view = store.begin_read();
    for round in 0..20u32 {
        let mut tx = store.begin_write();
        for i in 0..2000u32 {
            if i % 3 == round % 3 {
                tx.remove(1, &i.to_be_bytes()).unwrap();
            } else {
                tx.insert(1, &i.to_be_bytes(), &[round as u8; 100]).unwrap();
            }
        }
        tx.commit(round % 2 == 0).unwrap();
    }
    let seen: Vec<_> = view.iter(1).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(seen.len(), 2000);
    assert!(seen.iter().all(|r| r.value() == [7; 100]));
}

/// A store at `path` with a row committed durably ("durable") and one lazily ("lazy").
fn durable_then_lazy(path: &std::path::Path) -> Store {
    let store = Store::open(path, Options::default()).unwrap();
    let mut tx = store.begin_write();
    tx.insert(1, b"durable", b"1").unwrap();
    tx.commit(true).unwrap();
    let mut tx = store.begin_write();
    tx.insert(1, b"lazy", b"2").unwrap();
    tx.commit(false).unwrap();
    store
}

#[test]
fn a_crash_loses_lazy_commits_a_close_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let crashed = dir.path().join("crashed");
    {
        let store = durable_then_lazy(&path);
        assert_eq!(rows(&store, 1).len(), 2);
        // What the disk holds if the machine stopped now (the lazy commit's pages may
        // or may not be there; its meta is not).
        std::fs::copy(&path, &crashed).unwrap();
    }
    let store = Store::open(&crashed, Options::default()).unwrap();
    assert_eq!(rows(&store, 1), vec![(b"durable".to_vec(), b"1".to_vec())]);
    let store = Store::open(&path, Options::default()).unwrap();
    assert_eq!(
        rows(&store, 1).len(),
        2,
        "closing made the lazy commit durable"
    );
}

#[test]
fn a_discarded_file_is_closed_as_a_crash_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let store = durable_then_lazy(&path);
        let reader = store.begin_read();
        store.discard_on_close();
        drop(store);
        // A reader still open keeps its view.
        assert_eq!(reader.get(1, b"lazy").unwrap().unwrap().value(), b"2");
    }
    let store = Store::open(&path, Options::default()).unwrap();
    assert_eq!(rows(&store, 1), vec![(b"durable".to_vec(), b"1".to_vec())]);
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let _store = Store::open(&path, Options::default()).unwrap();
    assert!(matches!(
        Store::open(&path, Options::default()),
        Err(skiff_pages::Error::AlreadyOpen(_))
    ));
}

#[test]
fn a_small_store_stays_a_few_pages_and_space_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = Store::open(&path, Options::default()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * PAGE as u64);
    for i in 0..20u64 {
        let mut tx = store.begin_write();
        tx.insert(2, b"consistent_index", &i.to_be_bytes()).unwrap();
        tx.insert(5, b"member", &[1; 60]).unwrap();
        tx.commit(i % 3 == 0).unwrap();
    }
    store.begin_write().commit(true).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(
        len <= 4 * PAGE as u64,
        "a file of a few rows is {len} bytes"
    );
    let mut tx = store.begin_write();
    for i in 0..50_000u32 {
        tx.insert(1, &i.to_be_bytes(), &[3; 200]).unwrap();
    }
    tx.commit(true).unwrap();
    let big = store.stats();
    assert!(big.file_bytes > 10 << 20);
    let mut tx = store.begin_write();
    for i in 0..50_000u32 {
        tx.remove(1, &i.to_be_bytes()).unwrap();
    }
    tx.commit(true).unwrap();
    // The pages the delete freed are released by the next durable commit.
    store.begin_write().commit(true).unwrap();
    let small = store.stats();
    assert!(
        small.file_bytes <= 4 * PAGE as u64,
        "after deleting everything the file is {} bytes",
        small.file_bytes
    );
    assert_eq!(small.file_bytes, std::fs::metadata(&path).unwrap().len());
}

/// A store of 1000 rows in table 1 with one byte flipped in a leaf's rows, opened.
fn damaged_store(dir: &tempfile::TempDir) -> Store {
    let path = dir.path().join("db");
    {
        let store = Store::open(&path, Options::default()).unwrap();
        let mut tx = store.begin_write();
        for i in 0..1000u32 {
            tx.insert(1, &i.to_be_bytes(), &[9; 100]).unwrap();
        }
        tx.commit(true).unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    // Somewhere in a node's rows (past the meta pages and a node header).
    bytes[5 * PAGE + 700] ^= 0x5a;
    std::fs::write(&path, &bytes).unwrap();
    Store::open(&path, Options::default()).unwrap()
}

#[test]
fn a_damaged_node_is_an_error_not_a_wrong_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = damaged_store(&dir);
    let r = store.begin_read();
    let errors = r.iter(1).unwrap().filter(|x| x.is_err()).count();
    assert_eq!(errors, 1, "the walk stops at the damaged node");
    let bad = (0..1000u32)
        .map(|i| r.get(1, &i.to_be_bytes()))
        .filter(|x| matches!(x, Err(skiff_pages::Error::Corrupt(_))))
        .count();
    assert!(bad > 0);
}

#[test]
fn big_values_span_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let big: Vec<u8> = (0..1_500_000u32).map(|i| i as u8).collect();
    {
        let store = Store::open(&path, Options::default()).unwrap();
        let mut tx = store.begin_write();
        tx.insert(1, b"a", b"small").unwrap();
        tx.insert(1, b"b", &big).unwrap();
        tx.insert(1, b"c", b"small").unwrap();
        tx.commit(true).unwrap();
    }
    let store = Store::open(&path, Options::default()).unwrap();
    let r = store.begin_read();
    assert_eq!(r.get(1, b"b").unwrap().unwrap().value(), &big[..]);
    assert_eq!(r.iter(1).unwrap().count(), 3);
}

#[test]
fn clearing_and_flushing_inside_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db"), Options::default()).unwrap();
    let mut tx = store.begin_write();
    for i in 0..30_000u32 {
        tx.insert(1, &i.to_be_bytes(), &[1; 100]).unwrap();
        tx.insert(3, &i.to_be_bytes(), b"x").unwrap();
        if i % 5000 == 0 {
            tx.flush().unwrap();
        }
    }
    tx.commit(true).unwrap();
    let mut tx = store.begin_write();
    tx.insert(3, b"new", b"y").unwrap();
    tx.remove(3, &7u32.to_be_bytes()).unwrap();
    assert_eq!(tx.keys(3).unwrap().len(), 30_000);
    assert_eq!(tx.clear(3).unwrap(), 30_000);
    assert_eq!((tx.len(1), tx.len(3)), (30_000, 0));
    tx.flush().unwrap();
    tx.commit(false).unwrap();
    assert_eq!(rows(&store, 3), vec![]);
    assert_eq!(rows(&store, 1).len(), 30_000);
    let mut tx = store.begin_write();
    tx.clear_all().unwrap();
    tx.insert(2, b"only", b"row").unwrap();
    tx.commit(true).unwrap();
    // The next writes move the one leaf to the lowest free page, and the durable commit
    // after that cuts the freed end off the file.
    for i in 0..3u8 {
        let mut tx = store.begin_write();
        tx.insert(2, b"only", &[i]).unwrap();
        tx.commit(true).unwrap();
    }
    assert_eq!(rows(&store, 1), vec![]);
    assert_eq!(rows(&store, 2).len(), 1);
    assert!(store.stats().file_bytes <= 4 * PAGE as u64);
}

#[test]
fn an_abandoned_bulk_load_gives_its_pages_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("db"), Options::default()).unwrap();
    let mut tx = store.begin_write();
    tx.insert(2, b"meta", b"1").unwrap();
    tx.commit(true).unwrap();
    let before = store.stats();
    let mut tx = store.begin_write();
    for i in 0..20_000u32 {
        tx.insert(1, &i.to_be_bytes(), &[4; 100]).unwrap();
        if i % 4000 == 0 {
            tx.flush().unwrap();
        }
    }
    drop(tx);
    assert_eq!(store.stats().in_use_bytes, before.in_use_bytes);
    let mut tx = store.begin_write();
    tx.insert(2, b"meta", b"2").unwrap();
    tx.commit(true).unwrap();
    assert!(store.stats().file_bytes <= before.file_bytes + PAGE as u64);
    assert_eq!(rows(&store, 1), vec![]);
}

#[test]
fn a_transaction_whose_change_failed_does_not_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = damaged_store(&dir);
    let mut tx = store.begin_write();
    let failed = (0..1000u32).find_map(|i| tx.insert(1, &i.to_be_bytes(), b"new").err());
    assert!(
        matches!(failed, Some(skiff_pages::Error::Corrupt(_))),
        "{failed:?}"
    );
    assert!(matches!(
        tx.commit(false),
        Err(skiff_pages::Error::Failed(_))
    ));
    // The store itself goes on: a transaction that fails nothing commits.
    let mut tx = store.begin_write();
    tx.insert(2, b"meta", b"1").unwrap();
    tx.commit(true).unwrap();
}
