//! Concurrency: reader threads iterate and look rows up while a writer commits (lazy
//! and durable, with flushes and aborts) and another thread writes the file back and
//! reads its stats. The writer keeps invariants every commit satisfies: the balances of
//! table 1 sum to a constant, table 2 counts the rows of tables 1 and 3 and numbers the
//! commits, every value of table 3 is derived from its key and version. Each reader's
//! view must satisfy them, stay the same for as long as it is held (also through an
//! iterator that outlives its transaction) and never go back to an older commit. With a
//! tiny cache readers read nodes from the file, so a page reused while a reader could
//! still reach it shows up as a broken invariant or a checksum error.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Rng;
use skiff_pages::{Options, ReadTx, Store};

const ACCOUNTS: u64 = 300;
const TOTAL: u64 = ACCOUNTS * 1000;

fn u64_of(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap())
}

fn account(i: u64) -> Vec<u8> {
    format!("acct{i:06}").into_bytes()
}

/// A value of table 3: its version, then bytes derived from the key and the version.
fn filler(key: &[u8], version: u64, len: usize) -> Vec<u8> {
    let mut v = version.to_be_bytes().to_vec();
    let seed = key
        .iter()
        .fold(version, |a, b| a.wrapping_mul(31).wrapping_add(*b as u64));
    v.extend((0..len).map(|i| (seed.wrapping_add(i as u64 * 7) >> 3) as u8));
    v
}

fn counter(r: &ReadTx, key: &[u8]) -> u64 {
    u64_of(r.get(2, key).unwrap().unwrap().value())
}

/// Rows of a table, in order.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Checks a view's invariants; its commit's number and the rows of table 1.
fn check(r: &ReadTx) -> (u64, Rows) {
    let seq = counter(r, b"seq");
    let (mut n, mut sum) = (0u64, 0u64);
    let mut rows = Vec::new();
    for row in r.iter(1).unwrap() {
        let row = row.unwrap();
        n += 1;
        sum += u64_of(row.value());
        rows.push((row.key().to_vec(), row.value().to_vec()));
    }
    assert_eq!(sum, TOTAL, "commit {seq}: balances");
    assert_eq!(n, counter(r, b"accounts"), "commit {seq}: accounts");
    assert_eq!(n, r.len(1), "commit {seq}: len(1)");
    let mut m = 0;
    for row in r.iter(3).unwrap() {
        let row = row.unwrap();
        let v = row.value();
        let version = u64_of(&v[..8]);
        assert!(version <= seq, "commit {seq}: a value from the future");
        assert!(
            v == filler(row.key(), version, v.len() - 8),
            "commit {seq}: filler"
        );
        m += 1;
    }
    assert_eq!(m, counter(r, b"fillers"), "commit {seq}: fillers");
    assert_eq!(m, r.len(3), "commit {seq}: len(3)");
    // Lookups agree with the iteration.
    for (k, v) in rows.iter().step_by(37) {
        assert_eq!(
            r.get(1, k).unwrap().unwrap().value(),
            &v[..],
            "commit {seq}"
        );
    }
    (seq, rows)
}

fn writer(store: Store, stop: Arc<AtomicBool>, seed: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let mut tx = store.begin_write();
    for i in 0..ACCOUNTS {
        tx.insert(1, &account(i), &1000u64.to_be_bytes()).unwrap();
    }
    tx.insert(2, b"accounts", &ACCOUNTS.to_be_bytes()).unwrap();
    tx.insert(2, b"fillers", &0u64.to_be_bytes()).unwrap();
    tx.insert(2, b"seq", &1u64.to_be_bytes()).unwrap();
    tx.commit(true).unwrap();
    let mut seq = 1u64;
    let mut next_account = ACCOUNTS;
    let mut keys: Vec<Vec<u8>> = (0..ACCOUNTS).map(account).collect();
    while !stop.load(Ordering::Relaxed) {
        let mut tx = store.begin_write();
        seq += 1;
        let keys_before = keys.clone();
        if seq.is_multiple_of(50) {
            assert!(tx.keys(1).unwrap() == keys, "the transaction's keys");
        }
        let get = |tx: &skiff_pages::WriteTx, t, k: &[u8]| u64_of(&tx.get(t, k).unwrap().unwrap());
        let mut accounts = get(&tx, 2, b"accounts");
        let mut fillers = get(&tx, 2, b"fillers");
        for _ in 0..rng.range(1, 40) {
            let ia = rng.below(keys.len() as u64) as usize;
            let ib = rng.below(keys.len() as u64) as usize;
            let (a, b) = (&keys[ia].clone(), &keys[ib].clone());
            let (va, vb) = (get(&tx, 1, a), get(&tx, 1, b));
            match rng.below(10) {
                // An account closes: its balance goes to another.
                0 if ia != ib && keys.len() > 50 => {
                    tx.remove(1, a).unwrap();
                    tx.insert(1, b, &(vb + va).to_be_bytes()).unwrap();
                    keys.remove(ia);
                    accounts -= 1;
                }
                // One opens with part of another's balance.
                1 => {
                    let k = account(next_account);
                    next_account += 1;
                    let x = rng.below(va + 1);
                    tx.insert(1, a, &(va - x).to_be_bytes()).unwrap();
                    tx.insert(1, &k, &x.to_be_bytes()).unwrap();
                    keys.push(k);
                    accounts += 1;
                }
                _ if ia != ib => {
                    let x = rng.below(va + 1);
                    tx.insert(1, a, &(va - x).to_be_bytes()).unwrap();
                    tx.insert(1, b, &(vb + x).to_be_bytes()).unwrap();
                }
                _ => {}
            }
        }
        for _ in 0..rng.range(0, 6) {
            let k = rng.below(400).to_be_bytes();
            if rng.chance(300) {
                fillers -= tx.remove(3, &k).unwrap() as u64;
            } else {
                let len = if rng.chance(20) {
                    40_000
                } else {
                    rng.range(0, 3000)
                };
                fillers += tx.insert(3, &k, &filler(&k, seq, len)).unwrap() as u64;
            }
        }
        tx.insert(2, b"accounts", &accounts.to_be_bytes()).unwrap();
        tx.insert(2, b"fillers", &fillers.to_be_bytes()).unwrap();
        tx.insert(2, b"seq", &seq.to_be_bytes()).unwrap();
        if rng.chance(50) {
            tx.flush().unwrap();
        }
        match rng.below(20) {
            0 => {
                drop(tx);
                seq -= 1;
                keys = keys_before;
            }
            1..=4 => tx.commit(true).unwrap(),
            _ => tx.commit(false).unwrap(),
        }
    }
    seq
}

fn reader(store: Store, stop: Arc<AtomicBool>, seed: u64, checks: Arc<AtomicU64>) {
    let mut rng = Rng::new(seed);
    let mut last = (0u64, 0u64);
    let mut held: Option<(ReadTx, u64, Rows)> = None;
    while !stop.load(Ordering::Relaxed) {
        let r = store.begin_read();
        let (seq, rows) = check(&r);
        assert!(
            r.txid() >= last.0 && seq >= last.1,
            "a reader went back in time"
        );
        last = (r.txid(), seq);
        checks.fetch_add(1, Ordering::Relaxed);
        match rng.below(4) {
            // Hold it across commits and look again later.
            0 => {
                if let Some((old, old_seq, old_rows)) = held.take() {
                    let (s, rows) = check(&old);
                    assert_eq!(s, old_seq, "a held reader's commit changed");
                    assert!(rows == old_rows, "a held reader's rows changed");
                }
                held = Some((r, seq, rows));
            }
            // An iterator that outlives its transaction.
            1 => {
                let mut it = r.iter(1).unwrap();
                drop(r);
                std::thread::sleep(Duration::from_millis(rng.below(3)));
                for (k, v) in &rows {
                    let row = it.next().unwrap().unwrap();
                    assert!(
                        row.key() == &k[..] && row.value() == &v[..],
                        "a held iterator"
                    );
                }
                assert!(it.next().is_none());
            }
            _ => {}
        }
    }
}

fn run(cache_bytes: usize, seed: u64, secs: u64) {
    let dir = common::tempdir();
    let path = dir.path().join("db");
    let store = Store::open(&path, Options { cache_bytes }).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));
    let w = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || writer(store, stop, seed))
    };
    while store.begin_read().get(2, b"seq").unwrap().is_none() {
        std::thread::yield_now();
    }
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let (store, stop, checks) = (store.clone(), stop.clone(), checks.clone());
            std::thread::spawn(move || reader(store, stop, seed * 10 + i, checks))
        })
        .collect();
    let other = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                store.write_back().unwrap();
                let s = store.stats();
                assert!(s.durable_txid <= s.txid && s.in_use_bytes <= s.file_bytes + 8192);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) && !w.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let seq = w.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    other.join().unwrap();
    let (last, _) = check(&store.begin_read());
    assert_eq!(last, seq);
    assert!(seq > 20, "only {seq} commits");
    assert!(checks.load(Ordering::Relaxed) > 20, "only {checks:?} reads");
    eprintln!("cache {cache_bytes}: {seq} commits, {checks:?} checked reads");
    // What a crash leaves: the last durable commit, whole.
    drop(store);
    let store = Store::open(&path, Options::default()).unwrap();
    check(&store.begin_read());
}

#[test]
fn readers_see_whole_commits_while_a_writer_goes_on() {
    run(16 << 20, 1, 3);
}

#[test]
fn readers_with_a_tiny_cache_never_read_a_reused_page() {
    run(0, 2, 3);
}
