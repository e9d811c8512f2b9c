//! Model-based random test: seeded runs of random write transactions (inserts, removes,
//! clears, flushes; lazy and durable commits; aborts) over all the tables, with keys of
//! every shape the backend uses (MVCC revisions, short, random, long) and values from
//! empty to 1.5 MB, checked after every commit against a `BTreeMap` model through every
//! read the API has. Readers and iterators held across later commits must keep their
//! snapshot exactly; a copy of the file (a crash) must open at the model as of the last
//! durable commit, and a reopen after closing at the last commit; after
//! each durable commit the file is walked independently of the crate (tree shape, key
//! bounds, pages reached) and its size and `stats` must agree with it.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::VecDeque;

use common::{
    assert_tables_eq, check_tables, check_view, empty_tables, newest_meta, reached_pages, short,
    Rng, Tables,
};
use skiff_pages::{Iter, Options, ReadTx, Store, WriteTx, PAGE, TABLES};

struct Run {
    rng: Rng,
    /// Next MVCC-like revision per table.
    rev: [u64; TABLES],
    long_keys: bool,
    max_rows: usize,
}

/// What a write transaction changed, to put back if it is dropped.
type Undo = Vec<(u8, Vec<u8>, Option<Vec<u8>>)>;

impl Run {
    fn table(&mut self) -> u8 {
        if self.rng.chance(700) {
            self.rng.below(4) as u8
        } else {
            self.rng.below(TABLES as u64) as u8
        }
    }

    fn key(&mut self, t: u8) -> Vec<u8> {
        let r = &mut self.rng;
        match r.below(100) {
            // Revisions as the MVCC store writes them: only growing, big-endian.
            0..=29 => {
                self.rev[t as usize] += 1 + if r.chance(50) { r.below(1000) } else { 0 };
                self.rev[t as usize].to_be_bytes().to_vec()
            }
            // etcd's revision keys: main, '_', sub.
            30..=39 => {
                self.rev[t as usize] += 1;
                let mut k = self.rev[t as usize].to_be_bytes().to_vec();
                k.push(b'_');
                k.extend_from_slice(&r.below(4).to_be_bytes());
                k
            }
            // Short keys from a small alphabet: they collide, so rows are replaced.
            40..=69 => {
                let n = r.range(0, 5);
                (0..n).map(|_| b"abcd"[r.below(4) as usize]).collect()
            }
            70..=97 => {
                let n = r.range(0, 300);
                r.bytes(n)
            }
            _ if self.long_keys => {
                let n = r.range(1000, 5000);
                let mut k = r.bytes(8);
                k.resize(n, b'x');
                k
            }
            _ => r.bytes(20),
        }
    }

    fn value(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        let n = match r.below(1000) {
            0 => r.range(100_000, 1_500_000),
            1..=150 => r.range(0, 10_000),
            _ => r.range(0, 64),
        };
        r.bytes(n)
    }

    /// An existing key of `t` (roughly uniform), if any.
    fn existing(&mut self, model: &Tables, t: u8) -> Option<Vec<u8>> {
        let rows = &model[t as usize];
        if rows.is_empty() {
            return None;
        }
        let probe = self.rng.bytes_in(0, 9);
        rows.range(probe..)
            .next()
            .or_else(|| rows.iter().next())
            .map(|(k, _)| k.clone())
    }
}

fn total_rows(model: &Tables) -> usize {
    model.iter().map(|t| t.len()).sum()
}

fn insert(tx: &mut WriteTx, model: &mut Tables, undo: &mut Undo, t: u8, k: Vec<u8>, v: Vec<u8>) {
    let added = tx.insert(t, &k, &v).unwrap();
    let prev = model[t as usize].insert(k.clone(), v);
    assert_eq!(added, prev.is_none(), "insert's answer for {}", short(&k));
    undo.push((t, k, prev));
}

fn remove(tx: &mut WriteTx, model: &mut Tables, undo: &mut Undo, t: u8, k: &[u8]) {
    let removed = tx.remove(t, k).unwrap();
    let prev = model[t as usize].remove(k);
    assert_eq!(removed, prev.is_some(), "remove's answer for {}", short(k));
    if prev.is_some() {
        undo.push((t, k.to_vec(), prev));
    }
}

/// One write transaction's changes: a few rows, many, or a bulk load or delete.
fn write_ops(run: &mut Run, tx: &mut WriteTx, model: &mut Tables, undo: &mut Undo) {
    let n = match run.rng.below(100) {
        0..=59 => run.rng.range(1, 8),
        60..=93 => run.rng.range(8, 80),
        _ => run.rng.range(300, 3000),
    };
    let shrinking = total_rows(model) > run.max_rows;
    for _ in 0..n {
        let t = run.table();
        let op = run.rng.below(1000);
        match op {
            0..=549 if !shrinking || op < 300 => {
                let (k, v) = (run.key(t), run.value());
                insert(tx, model, undo, t, k, v);
            }
            0..=749 => {
                if let Some(k) = run.existing(model, t) {
                    remove(tx, model, undo, t, &k);
                }
            }
            750..=799 => {
                let k = run.key(t);
                remove(tx, model, undo, t, &k);
            }
            800..=899 => {
                let k = if run.rng.chance(500) {
                    run.existing(model, t).unwrap_or_default()
                } else {
                    run.key(t)
                };
                let got = tx.get(t, &k).unwrap();
                assert!(
                    got.as_ref() == model[t as usize].get(&k),
                    "the transaction's get({}) of table {t}",
                    short(&k)
                );
            }
            900..=909 => {
                tx.flush().unwrap();
            }
            910..=913 => {
                let rows = std::mem::take(&mut model[t as usize]);
                assert_eq!(tx.clear(t).unwrap(), rows.len() as u64);
                undo.extend(rows.into_iter().map(|(k, v)| (t, k, Some(v))));
            }
            914 if run.rng.chance(300) => {
                tx.clear_all().unwrap();
                for (t, rows) in model.iter_mut().enumerate() {
                    let rows = std::mem::take(rows);
                    undo.extend(rows.into_iter().map(|(k, v)| (t as u8, k, Some(v))));
                }
            }
            915..=939 => {
                let keys = tx.keys(t).unwrap();
                let want: Vec<&Vec<u8>> = model[t as usize].keys().collect();
                assert!(
                    keys.len() == want.len() && keys.iter().zip(&want).all(|(a, b)| a == *b),
                    "the transaction's keys({t}): {} keys, want {}",
                    keys.len(),
                    want.len()
                );
            }
            940..=959 => {
                for t in 0..TABLES as u8 {
                    assert_eq!(tx.len(t), model[t as usize].len() as u64, "tx len {t}");
                }
            }
            960..=979 => {
                // A run of consecutive rows goes (as a compaction does).
                let m = run.rng.range(10, 300);
                if let Some(k) = run.existing(model, t) {
                    let ks: Vec<Vec<u8>> = model[t as usize]
                        .range(k..)
                        .take(m)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in ks {
                        remove(tx, model, undo, t, &k);
                    }
                }
            }
            _ => {
                // A run of revisions comes (as a busy writer's do).
                let m = run.rng.range(10, 300);
                for _ in 0..m {
                    run.rev[t as usize] += 1;
                    let k = run.rev[t as usize].to_be_bytes().to_vec();
                    let v = run.rng.bytes_in(0, 200);
                    insert(tx, model, undo, t, k, v);
                }
            }
        }
    }
}

fn open(path: &std::path::Path, small_cache: bool) -> Store {
    let opts = if small_cache {
        Options {
            cache_bytes: 64 << 10,
        }
    } else {
        Options::default()
    };
    Store::open(path, opts).unwrap()
}

/// A held iterator and the rows it has still to give.
type HeldIter = (Iter, VecDeque<(Vec<u8>, Vec<u8>)>);

fn run_seed(seed: u64, commits: usize, long_keys: bool, small_cache: bool, max_rows: usize) {
    let mut run = Run {
        rng: Rng::new(seed),
        rev: [0; TABLES],
        long_keys,
        max_rows,
    };
    let dir = common::tempdir();
    let path = dir.path().join("db");
    let mut store = open(&path, small_cache);
    let mut model = empty_tables();
    let mut durable = empty_tables();
    let mut readers: Vec<(ReadTx, Tables)> = Vec::new();
    let mut iters: Vec<HeldIter> = Vec::new();
    let mut txid = store.stats().txid;
    let mut durable_txid = txid;
    for step in 0..commits {
        let what = format!("seed {seed} step {step}");
        let mut tx = store.begin_write();
        let mut undo = Undo::new();
        write_ops(&mut run, &mut tx, &mut model, &mut undo);
        match run.rng.below(100) {
            0..=9 => {
                drop(tx);
                for (t, k, prev) in undo.iter().rev().cloned() {
                    match prev {
                        Some(v) => model[t as usize].insert(k, v),
                        None => model[t as usize].remove(&k),
                    };
                }
            }
            d => {
                let durable_commit = d < 35;
                tx.commit(durable_commit).unwrap();
                txid += 1;
                if durable_commit {
                    durable = model.clone();
                    durable_txid = txid;
                }
            }
        }
        let stats = store.stats();
        assert_eq!(stats.txid, txid, "{what}: txid");
        // Every table the transaction touched, and one more.
        let mut which = [false; TABLES];
        for (t, _, _) in &undo {
            which[*t as usize] = true;
        }
        which[run.rng.below(TABLES as u64) as usize] = true;
        check_tables(&store.begin_read(), &model, &which, &mut run.rng, 2, &what);
        assert_eq!(
            stats.file_bytes,
            std::fs::metadata(&path).unwrap().len(),
            "{what}: stats' file size"
        );
        if stats.durable_txid == stats.txid {
            // The file's newest meta is this commit's: walk its tree.
            let file = common::read(&path);
            let (_, meta) = newest_meta(&file).unwrap();
            assert_eq!(meta.txid, txid, "{what}: the meta on the disk");
            let reached = reached_pages(&file, &meta);
            let in_use = (reached.len() as u64 + 2) * PAGE as u64;
            assert_eq!(stats.in_use_bytes, in_use, "{what}: in use");
        }
        // Held readers and iterators still see their commit.
        if !readers.is_empty() && step % 2 == 0 {
            let i = run.rng.below(readers.len() as u64) as usize;
            let (r, snap) = &readers[i];
            check_view(r, snap, &mut run.rng, 1, &format!("{what}: held reader"));
        }
        for (it, rest) in &mut iters {
            for _ in 0..run.rng.range(0, 40) {
                let got = it.next().map(|r| {
                    let r = r.unwrap();
                    (r.key().to_vec(), r.value().to_vec())
                });
                let want = rest.pop_front();
                assert!(got == want, "{what}: a held iterator's row");
                if want.is_none() {
                    break;
                }
            }
            if rest.is_empty() {
                assert!(it.next().is_none(), "{what}: a held iterator's end");
            }
        }
        iters.retain(|(_, rest)| !rest.is_empty());
        if readers.len() < 4 && run.rng.chance(150) {
            readers.push((store.begin_read(), model.clone()));
        }
        if !readers.is_empty() && run.rng.chance(150) {
            let i = run.rng.below(readers.len() as u64) as usize;
            readers.swap_remove(i);
        }
        if iters.len() < 3 && run.rng.chance(100) {
            // An iterator whose transaction is dropped at once.
            let t = run.table();
            let it = store.begin_read().iter(t).unwrap();
            let rest = model[t as usize]
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            iters.push((it, rest));
        }
        if run.rng.chance(40) || step + 1 == commits {
            // A crash now (the file as it is, lazy commits' pages and all) reopens at
            // the last durable commit.
            let crashed = dir.path().join("crashed");
            std::fs::copy(&path, &crashed).unwrap();
            {
                let copy = open(&crashed, small_cache);
                let r = copy.begin_read();
                let what = format!("{what}: crashed");
                assert_tables_eq(&common::dump(&r).unwrap(), &durable, &what);
                check_view(&r, &durable, &mut run.rng, 2, &what);
                assert_eq!(copy.stats().txid, durable_txid, "{what}");
            }
            std::fs::remove_file(&crashed).unwrap();
            // Closing the file (its last handle gone) makes the lazy commits durable.
            readers.clear();
            iters.clear();
            drop(store);
            store = open(&path, small_cache);
            let stats = store.stats();
            assert_eq!(
                (stats.txid, stats.durable_txid),
                (txid, txid),
                "{what}: reopened"
            );
            durable = model.clone();
            durable_txid = txid;
            let r = store.begin_read();
            let got = common::dump(&r).unwrap();
            assert_tables_eq(&got, &model, &format!("{what}: reopened"));
            check_view(&r, &model, &mut run.rng, 2, &format!("{what}: reopened"));
        }
    }
}

/// Seeds past the fixed ones: `PAGES_MODEL_SEEDS=n` runs `n` more of each kind (a soak
/// run, best with `--release`).
fn extra_seeds() -> u64 {
    std::env::var("PAGES_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn random_transactions_match_the_model() {
    for seed in (1..=3).chain(1000..1000 + extra_seeds()) {
        run_seed(seed, 140, false, seed % 3 == 2, 3000);
    }
}

#[test]
fn random_transactions_with_long_keys_match_the_model() {
    for seed in (11..=12).chain(2000..2000 + extra_seeds()) {
        run_seed(seed, 120, true, seed % 2 == 0, 2500);
    }
}

#[test]
fn a_large_tree_with_a_small_cache_matches_the_model() {
    for seed in std::iter::once(21).chain(3000..3000 + extra_seeds() / 4) {
        run_seed(seed, 80, true, true, 20_000);
    }
}

/// Keys too long for two to share a branch page (etcd allows keys up to its request
/// size): two of them made every commit spill the root into one branch per child, for
/// ever (a hang growing memory without bound).
#[test]
fn rows_with_keys_longer_than_half_a_page_commit() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let dir = common::tempdir();
        let path = dir.path().join("db");
        let mut model = empty_tables();
        {
            let store = Store::open(&path, Options::default()).unwrap();
            for (n, len) in [(2u8, 3000usize), (3, 2100), (40, 5000), (5, 100_000)] {
                let mut tx = store.begin_write();
                for i in 0..n {
                    let mut k = vec![i; len];
                    k.extend_from_slice(&len.to_be_bytes());
                    tx.insert(1, &k, &[i; 10]).unwrap();
                    model[1].insert(k, vec![i; 10]);
                }
                tx.commit(true).unwrap();
                let got = common::dump(&store.begin_read()).unwrap();
                assert_tables_eq(&got, &model, &format!("{n} keys of {len} bytes"));
            }
            let file = common::read(&path);
            let (_, meta) = newest_meta(&file).unwrap();
            reached_pages(&file, &meta);
        }
        let got = common::open_and_dump(&path).unwrap();
        assert_tables_eq(&got, &model, "reopened");
        let _ = tx.send(());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("commits of long keys did not finish (or panicked)");
}

/// Rows sized so their leaf is a byte under, at and over a page, in the first and the
/// last table, with empty keys and values and keys of 0xff bytes.
#[test]
fn rows_at_page_boundaries_and_table_edges() {
    let dir = common::tempdir();
    let path = dir.path().join("db");
    let store = Store::open(&path, Options::default()).unwrap();
    let mut model = empty_tables();
    let mut rng = Rng::new(77);
    // A leaf of one row: header, entry 12, tree key 1 + key.
    let one = PAGE - common::NODE_HEADER - 12 - 1;
    for (t, klen, vlen) in [
        (0u8, 0, one),
        (0, 0, one - 1),
        (15, 1, one),
        (15, 1, one - 1),
        (15, 0, one + 1),
        (7, 4, 0),
        (7, 0, 0),
    ] {
        let mut tx = store.begin_write();
        let k = vec![0xff; klen];
        let v = rng.bytes(vlen);
        tx.insert(t, &k, &v).unwrap();
        model[t as usize].insert(k, v);
        for i in 0..rng.range(0, 3) {
            let k = vec![0xff; klen + 1 + i];
            let v = rng.bytes_in(0, 2 * PAGE);
            tx.insert(t, &k, &v).unwrap();
            model[t as usize].insert(k, v);
        }
        tx.commit(true).unwrap();
        check_view(&store.begin_read(), &model, &mut rng, 4, "boundaries");
        let file = common::read(&path);
        let (_, meta) = newest_meta(&file).unwrap();
        reached_pages(&file, &meta);
    }
    drop(store);
    assert_tables_eq(&common::open_and_dump(&path).unwrap(), &model, "reopened");
}

/// Every call with a table out of range is refused with `NoSuchTable`.
#[test]
fn tables_out_of_range_are_refused() {
    use skiff_pages::Error::NoSuchTable;
    let dir = common::tempdir();
    let store = Store::open(dir.path().join("db"), Options::default()).unwrap();
    let mut tx = store.begin_write();
    tx.insert(3, b"k", b"v").unwrap();
    for t in [TABLES as u8, 200, 255] {
        assert!(matches!(tx.insert(t, b"k", b"v"), Err(NoSuchTable(_))));
        assert!(matches!(tx.remove(t, b"k"), Err(NoSuchTable(_))));
        assert!(matches!(tx.get(t, b"k"), Err(NoSuchTable(_))));
        assert!(matches!(tx.keys(t), Err(NoSuchTable(_))));
        assert!(matches!(tx.clear(t), Err(NoSuchTable(_))));
        assert_eq!(tx.len(t), 0);
    }
    tx.commit(false).unwrap();
    let r = store.begin_read();
    for t in [TABLES as u8, 255] {
        assert!(matches!(r.get(t, b"k"), Err(NoSuchTable(_))));
        assert!(r.iter(t).is_err());
        assert!(r
            .range(
                t,
                std::ops::Bound::Included(b"a"),
                std::ops::Bound::Unbounded
            )
            .is_err());
        assert_eq!(r.len(t), 0);
    }
    assert_eq!(r.len(3), 1);
}
