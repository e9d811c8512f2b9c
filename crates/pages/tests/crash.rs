//! Crash states: the files a crash can leave, and damaged files.
//!
//! - After a durable commit, lazy commits (with flushes, aborts and readers) must not
//!   change a byte of the pages its tree reaches or of the meta slots; a copy of the file
//!   at any point with every other page turned to garbage (what a crash before the
//!   writes reach the disk may leave) reopens at exactly the durable state, and can be
//!   written to again.
//! - A copy taken inside a durable commit just before its meta is written
//!   (`hooks::copy_before_meta_write`) reopens at the previous durable state whether the
//!   meta slot it was to write is untouched, garbage or half written, and at the new
//!   state if the whole meta made it.
//! - A crash while the store is closed (which writes the meta of its last lazy commit)
//!   leaves the last durable commit, or the last commit if that meta is whole.
//! - A crash while the file is created (left empty, or zeros where the meta slots go)
//!   leaves a file that opens as a new store.
//! - Truncated files, files of random bytes, files with both meta slots damaged and metas
//!   that pass their checksum but point at nonsense are refused with an error: never a
//!   panic, an abort, a hang or a wrong answer.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{
    assert_tables_eq, check_store, encode_meta, garble_except, newest_meta, open_and_dump,
    random_changes, reached_pages, FileMeta, Rng, Tables, META_LEN,
};
use skiff_pages::{Error, Options, Store, PAGE};

/// The pages the newest durable tree of the file at `path` reaches, and its meta.
fn durable_tree(path: &Path) -> (Vec<u8>, FileMeta, BTreeSet<u64>) {
    let file = common::read(path);
    let (_, meta) = newest_meta(&file).unwrap();
    let reached = reached_pages(&file, &meta);
    (file, meta, reached)
}

/// Writes `bytes` as the file `to`, opens it and checks it holds `want`; then a durable
/// commit on it and a reopen must work too (the garbage is free space).
fn reopen_copy(to: &Path, bytes: &[u8], want: &Tables, rng: &mut Rng, what: &str) {
    std::fs::write(to, bytes).unwrap();
    {
        let store =
            Store::open(to, Options::default()).unwrap_or_else(|e| panic!("{what}: open: {e}"));
        check_store(&store, want, rng, 1, what);
        let mut tx = store.begin_write();
        let mut model = want.clone();
        random_changes(rng, &mut tx, &mut model, 30);
        tx.commit(true).unwrap();
        drop(store);
        let got = open_and_dump(to).unwrap();
        assert_tables_eq(&got, &model, &format!("{what}: written after the reopen"));
    }
    std::fs::remove_file(to).unwrap();
}

#[test]
fn lazy_commits_leave_the_durable_tree_alone() {
    for seed in 1..=3u64 {
        let mut rng = Rng::new(seed);
        let dir = common::tempdir();
        let (path, copy) = (dir.path().join("db"), dir.path().join("copy"));
        let store = Store::open(
            &path,
            Options {
                cache_bytes: if seed % 2 == 0 { 1 << 16 } else { 16 << 20 },
            },
        )
        .unwrap();
        let mut model = common::empty_tables();
        for round in 0..6 {
            let mut tx = store.begin_write();
            let n = if round == 0 { 1500 } else { rng.range(1, 300) };
            random_changes(&mut rng, &mut tx, &mut model, n);
            tx.commit(true).unwrap();
            let durable = model.clone();
            let (file, meta, reached) = durable_tree(&path);
            let mut readers = Vec::new();
            for lazy in 0..rng.range(1, 12) {
                let what = format!("seed {seed} round {round} lazy commit {lazy}");
                let mut tx = store.begin_write();
                let n = rng.range(1, 200);
                let mut pending = model.clone();
                random_changes(&mut rng, &mut tx, &mut pending, n);
                if rng.chance(200) {
                    tx.flush().unwrap();
                    random_changes(&mut rng, &mut tx, &mut pending, n);
                }
                if rng.chance(150) {
                    drop(tx);
                } else {
                    tx.commit(false).unwrap();
                    model = pending;
                }
                if rng.chance(300) {
                    readers.push(store.begin_read());
                }
                let now = common::read(&path);
                assert!(
                    now[..2 * PAGE] == file[..2 * PAGE],
                    "{what}: a meta slot changed"
                );
                for p in &reached {
                    let r = *p as usize * PAGE..(*p as usize + 1) * PAGE;
                    assert!(
                        now.get(r.clone()) == file.get(r),
                        "{what}: page {p} of the durable tree changed"
                    );
                }
                // The crash: every page the durable tree does not reach is garbage; the
                // file may also be longer (pages a lazy commit added) or cut after the
                // durable tree's last page (the metadata of an extension lost).
                let mut crashed = now.clone();
                garble_except(&mut crashed, &reached, &mut rng);
                let last = reached.last().map_or(2, |p| p + 1) as usize;
                match rng.below(3) {
                    0 => crashed.truncate(rng.range(last, crashed.len() / PAGE) * PAGE),
                    1 => {
                        let n = rng.range(1, 5) * PAGE;
                        crashed.extend(rng.bytes(n));
                    }
                    _ => {}
                }
                if rng.chance(300) {
                    // Not even the meta slot of the older durable commit is kept.
                    let (slot, _) = newest_meta(&crashed).unwrap();
                    rng.fill(&mut crashed[(1 - slot) * PAGE..(2 - slot) * PAGE]);
                }
                reopen_copy(&copy, &crashed, &durable, &mut rng, &what);
            }
            drop(readers);
            assert_eq!(meta.txid, store.stats().durable_txid);
        }
    }
}

#[test]
fn a_crash_just_before_the_meta_write_keeps_the_previous_durable_state() {
    for seed in 1..=3u64 {
        let mut rng = Rng::new(100 + seed);
        let dir = common::tempdir();
        let (path, copy, scratch) = (
            dir.path().join("db"),
            dir.path().join("copy"),
            dir.path().join("scratch"),
        );
        let store = Store::open(&path, Options::default()).unwrap();
        let mut model = common::empty_tables();
        let mut durable = model.clone();
        for round in 0..12 {
            // Lazy commits, then the durable one the hook interrupts.
            for _ in 0..rng.below(4) {
                let mut tx = store.begin_write();
                let n = rng.range(1, 100);
                random_changes(&mut rng, &mut tx, &mut model, n);
                tx.commit(false).unwrap();
            }
            let mut tx = store.begin_write();
            let n = if round == 0 { 800 } else { rng.range(0, 200) };
            random_changes(&mut rng, &mut tx, &mut model, n);
            skiff_pages::hooks::copy_before_meta_write(&path, &copy);
            tx.commit(true).unwrap();
            let what = format!("seed {seed} round {round}");
            let before = common::read(&copy);
            let after = common::read(&path);
            std::fs::remove_file(&copy).unwrap();
            let (old_slot, old_meta) = newest_meta(&before).unwrap();
            let slot = 1 - old_slot;
            let (new_slot, new_meta) = newest_meta(&after).unwrap();
            assert_eq!(new_slot, slot, "{what}: the commit wrote the other slot");
            assert_eq!(new_meta.txid, store.stats().txid);
            let new_page = &after[slot * PAGE..(slot + 1) * PAGE];
            let old_reached = reached_pages(&before, &old_meta);
            let slot_range = slot * PAGE..(slot + 1) * PAGE;

            // The meta write never happened.
            reopen_copy(
                &scratch,
                &before,
                &durable,
                &mut rng,
                &format!("{what}: no meta"),
            );
            // It left garbage.
            let mut torn = before.clone();
            rng.fill(&mut torn[slot_range.clone()]);
            reopen_copy(
                &scratch,
                &torn,
                &durable,
                &mut rng,
                &format!("{what}: garbage"),
            );
            // It wrote a prefix of the new meta (on the old one, or on zeros).
            for _ in 0..4 {
                let mut torn = before.clone();
                if rng.chance(300) {
                    torn[slot_range.clone()].fill(0);
                }
                let n = rng.range(1, META_LEN - 1);
                let whole = write_meta_prefix(&mut torn, slot, new_page, n);
                let want = if whole { &model } else { &durable };
                // The pages the previous tree does not reach may hold anything too.
                if rng.chance(500) {
                    let mut keep = old_reached.clone();
                    if whole {
                        keep.extend(reached_pages(&after, &new_meta));
                    }
                    garble_except(&mut torn, &keep, &mut rng);
                }
                reopen_copy(
                    &scratch,
                    &torn,
                    want,
                    &mut rng,
                    &format!("{what}: {n} bytes"),
                );
            }
            // The whole meta made it: the nodes were on the disk before it.
            let mut whole = before.clone();
            whole[slot_range.clone()].copy_from_slice(new_page);
            let new_reached = reached_pages(&whole, &new_meta);
            garble_except(&mut whole, &new_reached, &mut rng);
            reopen_copy(
                &scratch,
                &whole,
                &model,
                &mut rng,
                &format!("{what}: whole"),
            );
            durable = model.clone();
        }
    }
}

#[test]
fn a_crash_while_closing_keeps_the_last_durable_state() {
    // Closing the file makes its lazy commits durable (a meta written after a sync): a
    // crash before that meta is whole must leave the last durable commit.
    for seed in 1..=3u64 {
        let mut rng = Rng::new(200 + seed);
        let dir = common::tempdir();
        let (path, copy, scratch) = (
            dir.path().join("db"),
            dir.path().join("copy"),
            dir.path().join("scratch"),
        );
        let mut model = common::empty_tables();
        let store = Store::open(&path, Options::default()).unwrap();
        let mut tx = store.begin_write();
        random_changes(&mut rng, &mut tx, &mut model, 800);
        tx.commit(true).unwrap();
        let durable = model.clone();
        for _ in 0..rng.range(1, 6) {
            let mut tx = store.begin_write();
            let n = rng.range(1, 200);
            random_changes(&mut rng, &mut tx, &mut model, n);
            tx.commit(false).unwrap();
        }
        let reader = store.begin_read();
        std::fs::copy(&path, &copy).unwrap();
        drop(store);
        // A reader keeps the file open: nothing is written yet.
        assert!(common::read(&path)[..2 * PAGE] == common::read(&copy)[..2 * PAGE]);
        drop(reader);
        let before = common::read(&copy);
        let after = common::read(&path);
        let (old_slot, _) = newest_meta(&before).unwrap();
        let (slot, _) = newest_meta(&after).unwrap();
        assert_eq!(slot, 1 - old_slot, "closing wrote the other slot");
        let new_page = &after[slot * PAGE..(slot + 1) * PAGE];
        let what = format!("seed {seed}");
        reopen_copy(
            &scratch,
            &before,
            &durable,
            &mut rng,
            &format!("{what}: no meta"),
        );
        for _ in 0..3 {
            let mut torn = before.clone();
            let n = rng.range(1, META_LEN - 1);
            let whole = write_meta_prefix(&mut torn, slot, new_page, n);
            let want = if whole { &model } else { &durable };
            reopen_copy(
                &scratch,
                &torn,
                want,
                &mut rng,
                &format!("{what}: {n} bytes"),
            );
        }
        let mut whole = before.clone();
        whole[slot * PAGE..(slot + 1) * PAGE].copy_from_slice(new_page);
        reopen_copy(
            &scratch,
            &whole,
            &model,
            &mut rng,
            &format!("{what}: whole"),
        );
        assert_tables_eq(&open_and_dump(&path).unwrap(), &model, "closed");
    }
}

/// Writes the first `n` bytes of `new_page` (a meta) into `slot` of `file`, as a meta
/// write torn after them leaves it; whether the slot then holds the whole new meta (its
/// bytes past `n` may already have been the same).
fn write_meta_prefix(file: &mut [u8], slot: usize, new_page: &[u8], n: usize) -> bool {
    let at = slot * PAGE;
    file[at..at + n].copy_from_slice(&new_page[..n]);
    file[at..at + META_LEN] == new_page[..META_LEN]
}

/// Opening `bytes` as a file: an error, or exactly `want` (when the damage missed
/// everything the newest tree needs); never a panic or other rows.
fn refused_or_right(dir: &Path, bytes: &[u8], want: Option<&Tables>, what: &str) -> bool {
    let path = dir.join("damaged");
    std::fs::write(&path, bytes).unwrap();
    let got = open_and_dump(&path);
    std::fs::remove_file(&path).unwrap();
    match (got, want) {
        (Err(Error::Corrupt(_) | Error::Io { .. }), _) => true,
        (Err(e), _) => panic!("{what}: refused with an unexpected error: {e}"),
        (Ok(got), Some(want)) => {
            assert_tables_eq(&got, want, what);
            false
        }
        (Ok(_), None) => panic!("{what}: opened"),
    }
}

/// A file of a few durable commits and the state of the last.
fn sample_file(dir: &Path, rng: &mut Rng) -> (Vec<u8>, Tables) {
    let path = dir.join("db");
    let store = Store::open(&path, Options::default()).unwrap();
    let mut model = common::empty_tables();
    for n in [1200, 100, 50] {
        let mut tx = store.begin_write();
        random_changes(rng, &mut tx, &mut model, n);
        tx.commit(true).unwrap();
    }
    drop(store);
    (common::read(&path), model)
}

#[test]
fn truncated_files_are_refused() {
    let mut rng = Rng::new(7);
    let dir = common::tempdir();
    let (file, model) = sample_file(dir.path(), &mut rng);
    let mut lens: Vec<usize> = vec![1, 100, META_LEN - 1, PAGE - 1, PAGE, PAGE + 1];
    lens.extend([
        2 * PAGE - 1,
        2 * PAGE,
        2 * PAGE + 1,
        3 * PAGE,
        file.len() - 1,
    ]);
    for _ in 0..40 {
        lens.push(rng.range(2 * PAGE, file.len()));
    }
    let mut refused = 0;
    for len in lens {
        let what = format!("truncated to {len} of {} bytes", file.len());
        refused += refused_or_right(dir.path(), &file[..len], Some(&model), &what) as usize;
    }
    assert!(refused > 30, "only {refused} truncations refused");
}

#[test]
fn a_crash_while_the_file_is_created_leaves_a_new_store() {
    // Creating writes both meta slots in one write and syncs: a crash may leave the file
    // empty, or some of that write lost (zeros). None of these can hold a row, and each
    // must open as a new store, not be refused for ever.
    let dir = common::tempdir();
    let path = dir.path().join("db");
    let meta = encode_meta(1, (0, 0), 0, 2);
    let mut both = meta.clone();
    both.resize(2 * PAGE, 0);
    let states: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one page of zeros", vec![0; PAGE]),
        ("two pages of zeros", vec![0; 2 * PAGE]),
        ("a page and a bit of zeros", vec![0; PAGE + 100]),
        ("the first slot only", meta),
        ("both slots", both),
    ];
    for (what, bytes) in states {
        std::fs::write(&path, &bytes).unwrap();
        {
            let store =
                Store::open(&path, Options::default()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(store.stats().file_bytes, 2 * PAGE as u64, "{what}");
            assert!(
                store.begin_read().iter(0).unwrap().next().is_none(),
                "{what}"
            );
            let mut tx = store.begin_write();
            tx.insert(1, b"k", b"v").unwrap();
            tx.commit(true).unwrap();
        }
        let mut want = common::empty_tables();
        want[1].insert(b"k".to_vec(), b"v".to_vec());
        assert_tables_eq(&open_and_dump(&path).unwrap(), &want, what);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn files_of_random_bytes_are_refused() {
    let mut rng = Rng::new(8);
    let dir = common::tempdir();
    for i in 0..40 {
        let len = match i % 4 {
            0 => rng.range(1, PAGE),
            1 => rng.range(PAGE, 2 * PAGE),
            _ => rng.range(2, 40) * PAGE,
        };
        let bytes = rng.bytes(len);
        assert!(refused_or_right(
            dir.path(),
            &bytes,
            None,
            &format!("{len} random bytes")
        ));
    }
    // Zeros: no meta at all.
    assert!(refused_or_right(dir.path(), &[0; 3 * PAGE], None, "zeros"));
    // The magic right and the rest not.
    let mut bytes = vec![0u8; 2 * PAGE];
    bytes[..8].copy_from_slice(b"SKIFFPG1");
    bytes[PAGE..PAGE + 8].copy_from_slice(b"SKIFFPG1");
    assert!(refused_or_right(dir.path(), &bytes, None, "magic only"));
}

#[test]
fn both_meta_slots_damaged_is_refused() {
    let mut rng = Rng::new(9);
    let dir = common::tempdir();
    let (file, _) = sample_file(dir.path(), &mut rng);
    for _ in 0..30 {
        let mut bytes = file.clone();
        for slot in 0..2 {
            let at = slot * PAGE + rng.range(0, META_LEN - 1);
            bytes[at] ^= 1 << rng.below(8);
        }
        assert!(refused_or_right(
            dir.path(),
            &bytes,
            None,
            "both metas flipped"
        ));
    }
    let mut bytes = file.clone();
    bytes[..2 * PAGE].fill(0);
    assert!(refused_or_right(
        dir.path(),
        &bytes,
        None,
        "both metas zero"
    ));
}

#[test]
fn metas_that_pass_their_checksum_but_point_at_nonsense_are_refused() {
    let mut rng = Rng::new(10);
    let dir = common::tempdir();
    let (file, model) = sample_file(dir.path(), &mut rng);
    let (_, meta) = newest_meta(&file).unwrap();
    assert!(meta.height >= 2, "a sample tree of {} levels", meta.height);
    let pages = (file.len() / PAGE) as u64;
    let leaf = {
        // Any leaf of the tree (a node of the bottom level).
        let reached = reached_pages(&file, &meta);
        *reached
            .iter()
            .find(|p| file[**p as usize * PAGE + 4] == 1)
            .unwrap()
    };
    // Each must be refused, but for an `hwm` past the file's end: the pages past it are
    // free whatever the meta says, and the tree is right.
    // (what, root, height, hwm, whether it opens)
    type Case = (&'static str, (u64, u32), u32, u64, bool);
    let cases: Vec<Case> = vec![
        ("root past the file", (pages + 5, 1), 1, pages + 10, false),
        (
            "root at the last u64 page",
            (u64::MAX, 1),
            1,
            u64::MAX,
            false,
        ),
        (
            "root run wrapping around",
            (u64::MAX - 1, 4),
            2,
            u64::MAX,
            false,
        ),
        (
            "a root of u32::MAX pages",
            (2, u32::MAX),
            1,
            u64::MAX,
            false,
        ),
        (
            "a file of 2^40 pages",
            meta.root,
            meta.height,
            1 << 40,
            true,
        ),
        (
            "a file of u64::MAX pages",
            meta.root,
            meta.height,
            u64::MAX,
            true,
        ),
        ("a leaf as a branch", (leaf, 1), 2, meta.hwm, false),
        (
            "a tree a level shallower than it is",
            meta.root,
            meta.height - 1,
            meta.hwm,
            false,
        ),
        (
            "a tree a level deeper than it is",
            meta.root,
            meta.height + 1,
            meta.hwm,
            false,
        ),
        (
            "a tree a million levels deep",
            meta.root,
            1_000_000,
            meta.hwm,
            false,
        ),
        ("the root on a meta page", (1, 1), 1, meta.hwm, false),
        (
            "a root of zero pages with a height",
            (5, 0),
            3,
            meta.hwm,
            false,
        ),
    ];
    for (what, root, height, hwm, opens) in cases {
        let mut bytes = file.clone();
        // In both slots: a meta refused by its decoding would leave the other slot's.
        bytes[..PAGE].copy_from_slice(&encode_meta(meta.txid + 10, root, height, hwm));
        bytes[PAGE..2 * PAGE].copy_from_slice(&encode_meta(meta.txid + 9, root, height, hwm));
        let path = dir.path().join("crafted");
        std::fs::write(&path, &bytes).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| open_and_dump(&p));
            let _ = tx.send(r);
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{what}: no answer in 30 s"));
        match got {
            Err(_) => panic!("{what}: panicked"),
            Ok(Ok(got)) if opens => assert_tables_eq(&got, &model, what),
            Ok(Ok(_)) => panic!("{what}: opened"),
            Ok(Err(Error::Corrupt(_))) if !opens => {}
            Ok(Err(e)) => panic!("{what}: {e}"),
        }
        std::fs::remove_file(&path).unwrap();
    }
}
