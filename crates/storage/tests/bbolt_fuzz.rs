//! The bbolt reader fed damaged files, as `wal_fuzz` feeds the WAL reader: valid files
//! written by the bbolt writer (random top-level buckets as etcd lays them out under the
//! root bucket, rows of every size, values spanning overflow pages, nested buckets both
//! inline and on their own pages), then many mutated copies: flipped bits, forged header
//! fields (page ids, flags, element counts, overflow counts), forged element fields
//! (positions and lengths up to 4 GiB, child page ids pointing at the page itself, its
//! ancestors, other pages or past the file), meta pages with forged fields and a
//! recomputed checksum, pages copied over others, truncations and extensions.
//!
//! Every read (open, the bucket list, every bucket's rows, `etcd::verify_snapshot` and
//! `etcd::inspect`) must return Ok or an error: never a panic, never an allocation larger
//! than a small multiple of the file (a forged length must not be what gets allocated),
//! never a hang (each read runs on a worker thread with a deadline). Two hand-built files
//! check the hang bound directly: a reference cycle, and a chain of branch pages whose
//! every element points at the next page (a walk that only checked the path it is on would
//! visit 200^10 pages).
//!
//! Deterministic (xorshift with fixed seeds) so a failure reproduces. Its own test
//! binary, because it installs a counting global allocator.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use skiff_storage::bbolt::etcd;
use skiff_storage::bbolt::reader::{BoltReader, Row};
use skiff_storage::bbolt::writer::{BoltWriter, BucketBuilder};
use skiff_storage::bbolt::PAGE_SIZE;

#[path = "common/fuzz.rs"]
mod fuzz;
use fuzz::Rng;

/// A row of a top-level bucket: a value, or a nested bucket with its rows.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cell {
    Value(Vec<u8>),
    Bucket(BTreeMap<Vec<u8>, Vec<u8>>),
}

type Contents = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Cell>>;

/// etcd's bucket names, so `inspect` and `verify_snapshot` find the buckets they read.
const ETCD_NAMES: [&[u8]; 4] = [b"key", b"meta", b"members", b"lease"];

fn rows(rng: &mut Rng, n: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let klen = if rng.below(40) == 0 {
            1 + rng.below(1500)
        } else {
            1 + rng.below(24)
        };
        let vlen = match rng.below(60) {
            0 => PAGE_SIZE as u64 + rng.below(2 * PAGE_SIZE as u64),
            1..=4 => rng.below(PAGE_SIZE as u64),
            _ => rng.below(64),
        };
        let key: Vec<u8> = (0..klen).map(|_| rng.next() as u8).collect();
        let value: Vec<u8> = (0..vlen).map(|_| rng.next() as u8).collect();
        out.insert(key, value);
    }
    out
}

fn random_contents(rng: &mut Rng) -> Contents {
    let mut c = Contents::new();
    for _ in 0..1 + rng.below(8) {
        let name = if rng.below(2) == 0 {
            ETCD_NAMES[rng.below(ETCD_NAMES.len() as u64) as usize].to_vec()
        } else {
            (0..1 + rng.below(10)).map(|_| rng.next() as u8).collect()
        };
        let n = match rng.below(4) {
            0 => 0,
            1 => rng.below(6),
            2 => rng.below(120),
            _ => rng.below(500),
        };
        let mut cells: BTreeMap<Vec<u8>, Cell> = rows(rng, n)
            .into_iter()
            .map(|(k, v)| (k, Cell::Value(v)))
            .collect();
        // Nested buckets: small ones are stored inline, larger ones on their own pages.
        for _ in 0..rng.below(3) {
            let key: Vec<u8> = (0..1 + rng.below(12)).map(|_| rng.next() as u8).collect();
            let size = if rng.below(2) == 0 {
                rng.below(4)
            } else {
                rng.below(300)
            };
            cells.insert(key, Cell::Bucket(rows(rng, size)));
        }
        c.insert(name, cells);
    }
    c
}

fn write(path: &Path, c: &Contents) {
    let mut w = BoltWriter::create(path).unwrap();
    let mut refs = Vec::new();
    for (name, cells) in c {
        let mut b = BucketBuilder::new();
        for (k, cell) in cells {
            match cell {
                Cell::Value(v) => b.put(&mut w, k, v).unwrap(),
                Cell::Bucket(rows) => {
                    let mut nested = BucketBuilder::new();
                    for (nk, nv) in rows {
                        nested.put(&mut w, nk, nv).unwrap();
                    }
                    let r = nested.finish(&mut w).unwrap();
                    b.put_bucket(&mut w, k, r).unwrap();
                }
            }
        }
        refs.push((name.clone(), b.finish(&mut w).unwrap()));
    }
    w.finish(refs).unwrap();
}

/// What a read of a file found: (bucket name, its rows: key and, for a value, its
/// bytes) in order, or the first error. A nested bucket reads as a row without a value.
type Read = Result<Buckets, String>;

/// Buckets in order, each with its rows (a nested bucket's row has no value).
type Buckets = Vec<(Vec<u8>, Vec<(Vec<u8>, Option<Vec<u8>>)>)>;

/// Reads everything the reader offers; the rows are collected only when `collect` (the
/// allocation check runs without it: the callback then allocates nothing).
fn read_all(path: &Path, collect: bool) -> Read {
    let r = BoltReader::open(path).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for name in r.buckets().map_err(|e| e.to_string())? {
        let mut got = Vec::new();
        r.for_each(&name, &mut |row| {
            match row {
                Row::Value { key, value } => {
                    if collect {
                        got.push((key.to_vec(), Some(value.to_vec())));
                    }
                }
                Row::Bucket { key } => {
                    if collect {
                        got.push((key.to_vec(), None));
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        if collect {
            out.push((name, got));
        }
    }
    Ok(out)
}

fn expected(c: &Contents) -> Buckets {
    c.iter()
        .map(|(name, cells)| {
            let rows = cells
                .iter()
                .map(|(k, cell)| match cell {
                    Cell::Value(v) => (k.clone(), Some(v.clone())),
                    Cell::Bucket(_) => (k.clone(), None),
                })
                .collect();
            (name.clone(), rows)
        })
        .collect()
}

/// Runs every read of a file on a worker thread that counts its allocations.
struct Worker {
    jobs: mpsc::Sender<PathBuf>,
    done: mpsc::Receiver<(bool, usize)>,
}

impl Worker {
    fn start() -> Worker {
        let (jobs, rx) = mpsc::channel::<PathBuf>();
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            fuzz::track(true);
            for path in rx {
                fuzz::reset();
                let ok = read_all(&path, false).is_ok();
                let _ = etcd::verify_snapshot(&path, true);
                let _ = etcd::inspect(&path);
                let largest = fuzz::largest();
                if tx.send((ok, largest)).is_err() {
                    return;
                }
            }
        });
        Worker { jobs, done }
    }

    /// (whether the plain read succeeded, the largest allocation); panics when the
    /// worker panicked or did not answer within `limit`.
    fn read(&self, path: &Path, limit: Duration, what: &str) -> (bool, usize) {
        self.jobs.send(path.to_path_buf()).unwrap();
        match self.done.recv_timeout(limit) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{what}: the read did not end in {limit:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("{what}: the reader panicked (see above)")
            }
        }
    }
}

fn fnv64a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Recomputes a meta page's checksum, so that forged meta fields get past it.
fn resign_meta(file: &mut [u8], page: usize) {
    let at = page * PAGE_SIZE;
    if file.len() >= at + 80 {
        let sum = fnv64a(&file[at + 16..at + 72]);
        file[at + 72..at + 80].copy_from_slice(&sum.to_le_bytes());
    }
}

/// The element count of the page at `at`, 1 if the file no longer holds it.
fn count_at(file: &[u8], at: usize) -> u16 {
    file.get(at + 10..at + 12)
        .map_or(1, |b| u16::from_le_bytes([b[0], b[1]]))
        .max(1)
}

fn put(file: &mut [u8], at: usize, bytes: &[u8]) {
    if at < file.len() {
        let end = (at + bytes.len()).min(file.len());
        file[at..end].copy_from_slice(&bytes[..end - at]);
    }
}

/// Page ids of the valid file by kind: (branch, leaf, other: freelist and overflow).
struct Pages {
    branch: Vec<u64>,
    leaf: Vec<u64>,
    all: u64,
}

fn pages_of(file: &[u8]) -> Pages {
    let all = (file.len() / PAGE_SIZE) as u64;
    let mut p = Pages {
        branch: Vec::new(),
        leaf: Vec::new(),
        all,
    };
    let mut id = 2;
    while id < all {
        let at = id as usize * PAGE_SIZE;
        let flags = u16::from_le_bytes([file[at + 8], file[at + 9]]);
        let overflow = u32::from_le_bytes(file[at + 12..at + 16].try_into().unwrap());
        match flags {
            0x01 => p.branch.push(id),
            0x02 => p.leaf.push(id),
            _ => {}
        }
        id += 1 + u64::from(overflow);
    }
    p
}

const HUGE32: [u32; 5] = [u32::MAX, 0x8000_0000, 0x4000_0000, 0xFFFF, PAGE_SIZE as u32];

fn mutate(rng: &mut Rng, file: &mut Vec<u8>, pages: &Pages) {
    let pick = |rng: &mut Rng, v: &[u64]| -> Option<u64> {
        (!v.is_empty()).then(|| v[rng.below(v.len() as u64) as usize])
    };
    let any_page = |rng: &mut Rng| 2 + rng.below(pages.all.saturating_sub(2).max(1));
    match rng.below(10) {
        // Flipped bits anywhere.
        0 => {
            for _ in 0..1 + rng.below(6) {
                let i = rng.below(file.len() as u64) as usize;
                file[i] ^= 1 << rng.below(8);
            }
        }
        // A page header field forged.
        1 => {
            let page = any_page(rng) as usize * PAGE_SIZE;
            match rng.below(4) {
                0 => put(file, page, &any_page(rng).to_le_bytes()),
                1 => put(
                    file,
                    page + 8,
                    &[0x01u16, 0x02, 0x04, 0x10, 0x03, 0][rng.below(6) as usize].to_le_bytes(),
                ),
                2 => put(
                    file,
                    page + 10,
                    &[0xFFFFu16, 0x7FFF, 255, 1, 0][rng.below(5) as usize].to_le_bytes(),
                ),
                _ => {
                    let v = [u32::MAX, pages.all as u32, pages.all as u32 - 3, 1, 3]
                        [rng.below(5) as usize];
                    put(file, page + 12, &v.to_le_bytes());
                }
            }
        }
        // A leaf element's pos, ksize or vsize made huge, or its bucket flag toggled.
        2 => {
            if let Some(id) = pick(rng, &pages.leaf) {
                let at = id as usize * PAGE_SIZE;
                let count = count_at(file, at);
                let e = at + 16 + 16 * rng.below(u64::from(count)) as usize;
                match rng.below(4) {
                    0 => put(file, e, &(rng.below(2) as u32 ^ 1).to_le_bytes()),
                    n => put(
                        file,
                        e + 4 * n as usize,
                        &HUGE32[rng.below(5) as usize].to_le_bytes(),
                    ),
                }
            }
        }
        // A branch element's child: itself, an ancestor (the root of its tree), another
        // page, a meta page, past the file; or its key length made huge.
        3 | 4 => {
            if let Some(id) = pick(rng, &pages.branch) {
                let at = id as usize * PAGE_SIZE;
                let count = count_at(file, at);
                let e = at + 16 + 16 * rng.below(u64::from(count)) as usize;
                if rng.below(5) == 0 {
                    put(file, e + 4, &HUGE32[rng.below(5) as usize].to_le_bytes());
                } else {
                    let parent = pick(rng, &pages.branch).unwrap_or(id);
                    let child = [
                        id,
                        parent,
                        any_page(rng),
                        pick(rng, &pages.leaf).unwrap_or(0),
                        rng.below(2),
                        pages.all,
                        u64::MAX,
                        u64::MAX / PAGE_SIZE as u64,
                    ][rng.below(8) as usize];
                    put(file, e + 8, &child.to_le_bytes());
                }
            }
        }
        // A meta field forged (root, freelist, high-water mark, page size, txid,
        // version), usually with a valid checksum.
        5 | 6 => {
            let meta = rng.below(2) as usize;
            let at = meta * PAGE_SIZE;
            let v: u64 = [
                0,
                1,
                2,
                pages.all,
                pages.all - 1,
                pages.all + 1,
                u64::MAX,
                u64::from(u32::MAX),
                any_page(rng),
                pick(rng, &pages.branch).unwrap_or(2),
            ][rng.below(10) as usize];
            match rng.below(6) {
                0 => put(file, at + 32, &v.to_le_bytes()),
                1 => put(file, at + 48, &v.to_le_bytes()),
                2 => put(file, at + 56, &v.to_le_bytes()),
                3 => put(
                    file,
                    at + 24,
                    &[512u32, 1024, 8192, 65536, 0, 4097, u32::MAX][rng.below(7) as usize]
                        .to_le_bytes(),
                ),
                4 => put(file, at + 64, &v.to_le_bytes()),
                _ => put(file, at + 20, &(rng.below(4) as u32).to_le_bytes()),
            }
            if rng.below(5) != 0 {
                resign_meta(file, meta);
            }
            // Often the other meta page is broken too, so the forged one is used.
            if rng.below(2) == 0 {
                put(file, (1 - meta) * PAGE_SIZE + 16, &[0, 0, 0, 0]);
            }
        }
        // Truncated: anywhere, or at a page boundary.
        7 => {
            let len = if rng.below(2) == 0 {
                rng.below(file.len() as u64) as usize
            } else {
                rng.below(pages.all) as usize * PAGE_SIZE
            };
            file.truncate(len);
        }
        // One page copied over another (wrong ids, shared subtrees).
        8 => {
            let (from, to) = (any_page(rng) as usize, any_page(rng) as usize);
            let Some(page) = file.get(from * PAGE_SIZE..(from + 1) * PAGE_SIZE) else {
                return;
            };
            let page = page.to_vec();
            put(file, to * PAGE_SIZE, &page);
            if rng.below(2) == 0 {
                put(file, to * PAGE_SIZE, &(to as u64).to_le_bytes());
            }
        }
        // Random bytes over a page's element area, or appended garbage.
        _ => {
            if rng.below(2) == 0 {
                let at = any_page(rng) as usize * PAGE_SIZE + 16;
                for i in 0..rng.below(64) as usize {
                    put(file, at + i, &[rng.next() as u8]);
                }
            } else {
                let extra = rng.bytes(3 * PAGE_SIZE as u64);
                file.extend_from_slice(&extra);
            }
        }
    }
}

#[test]
fn damaged_files_never_panic_over_allocate_or_hang() {
    let mut rng = Rng(0xB017_DB0B_5EED_0001);
    let tmp = tempfile::tempdir().unwrap();
    let worker = Worker::start();
    let (mut ok, mut refused, mut files) = (0, 0, 0);
    let started = std::time::Instant::now();
    for base in 0..24 {
        let c = random_contents(&mut rng);
        let good_path = tmp.path().join(format!("good{base}"));
        write(&good_path, &c);
        let good = std::fs::read(&good_path).unwrap();
        // The valid file reads back as written (nested buckets as bucket rows).
        assert_eq!(
            read_all(&good_path, true).unwrap(),
            expected(&c),
            "base {base}"
        );
        files += 1;
        let pages = pages_of(&good);
        let path = tmp.path().join("bad");
        for round in 0..60 {
            let mut bad = good.clone();
            for _ in 0..1 + rng.below(3) {
                if bad.len() < 2 * PAGE_SIZE {
                    break;
                }
                mutate(&mut rng, &mut bad, &pages);
            }
            std::fs::write(&path, &bad).unwrap();
            let what = format!("base {base} round {round} ({} bytes)", bad.len());
            let (read_ok, largest) = worker.read(&path, Duration::from_secs(10), &what);
            // Page buffers (at most the file), the page bitmap, the bucket names: a
            // small multiple of the file, never what a forged field claims (>= 1 GiB).
            let bound = 4 * bad.len() + (128 << 10);
            assert!(
                largest <= bound,
                "{what}: an allocation of {largest} bytes (bound {bound})"
            );
            if read_ok {
                ok += 1;
            } else {
                refused += 1;
            }
        }
    }
    eprintln!(
        "{files} valid files, {} damaged copies: {ok} read, {refused} refused, in {:?}",
        ok + refused,
        started.elapsed()
    );
    // Both outcomes were exercised (a flip in a value leaves a readable file).
    assert!(ok > 100 && refused > 500, "ok {ok}, refused {refused}");
}

/// Builds a file page by page: meta pages for `root` and a high-water mark of
/// `pages.len() + 2`, then `pages` (each PAGE_SIZE bytes, ids from 2).
fn hand_built(path: &Path, root: u64, pages: &[Vec<u8>]) {
    let pgid = pages.len() as u64 + 2;
    let mut file = vec![0u8; 2 * PAGE_SIZE];
    for (id, txid) in [(0u64, 2u64), (1, 1)] {
        let at = id as usize * PAGE_SIZE;
        file[at..at + 8].copy_from_slice(&id.to_le_bytes());
        file[at + 8..at + 10].copy_from_slice(&0x04u16.to_le_bytes());
        file[at + 16..at + 20].copy_from_slice(&0xED0C_DAEDu32.to_le_bytes());
        file[at + 20..at + 24].copy_from_slice(&2u32.to_le_bytes());
        file[at + 24..at + 28].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        file[at + 32..at + 40].copy_from_slice(&root.to_le_bytes());
        file[at + 48..at + 56].copy_from_slice(&(pgid - 1).to_le_bytes());
        file[at + 56..at + 64].copy_from_slice(&pgid.to_le_bytes());
        file[at + 64..at + 72].copy_from_slice(&txid.to_le_bytes());
        resign_meta(&mut file, id as usize);
    }
    for p in pages {
        assert_eq!(p.len(), PAGE_SIZE);
        file.extend_from_slice(p);
    }
    std::fs::write(path, file).unwrap();
}

fn page(id: u64, flags: u16, count: u16) -> Vec<u8> {
    let mut p = vec![0u8; PAGE_SIZE];
    p[0..8].copy_from_slice(&id.to_le_bytes());
    p[8..10].copy_from_slice(&flags.to_le_bytes());
    p[10..12].copy_from_slice(&count.to_le_bytes());
    p
}

/// A root leaf (page 2) holding one bucket `b` whose tree starts at page 3.
fn root_leaf() -> Vec<u8> {
    let mut p = page(2, 0x02, 1);
    // Element: flags bucket, pos 16 (data right after the element), ksize 1, vsize 16.
    for (i, v) in [1u32, 16, 1, 16].iter().enumerate() {
        p[16 + 4 * i..20 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    p[32] = b'b';
    p[33..41].copy_from_slice(&3u64.to_le_bytes());
    p
}

/// A branch page whose `count` elements all point at `child`, each with the key "a".
fn fan_out(id: u64, count: u16, child: u64) -> Vec<u8> {
    let mut p = page(id, 0x01, count);
    let data = 16 + 16 * usize::from(count);
    p[data] = b'a';
    for i in 0..usize::from(count) {
        let at = 16 + 16 * i;
        p[at..at + 4].copy_from_slice(&((data - at) as u32).to_le_bytes());
        p[at + 4..at + 8].copy_from_slice(&1u32.to_le_bytes());
        p[at + 8..at + 16].copy_from_slice(&child.to_le_bytes());
    }
    p
}

#[test]
fn a_page_reached_twice_is_refused_without_walking_the_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let worker = Worker::start();
    let limit = Duration::from_secs(5);

    // A chain of 10 branch pages, each of whose 200 elements points at the next page,
    // ending in an empty leaf: 200^10 paths, and no key to find out of order.
    let path = tmp.path().join("fan");
    let mut pages = vec![root_leaf()];
    for id in 3..13u64 {
        pages.push(fan_out(id, 200, id + 1));
    }
    pages.push(page(13, 0x02, 0));
    pages.push(page(14, 0x10, 0));
    hand_built(&path, 2, &pages);
    let r = BoltReader::open(&path).unwrap();
    assert_eq!(r.buckets().unwrap(), vec![b"b".to_vec()]);
    let err = r.for_each(b"b", &mut |_| Ok(())).unwrap_err().to_string();
    // The second element of page 12 reaches the leaf again.
    assert!(err.contains("page 13 is referenced twice"), "{err}");
    let (read_ok, _) = worker.read(&path, limit, "fan-out chain");
    assert!(!read_ok);

    // A branch page pointing at itself, and one pointing back at its parent.
    for (name, second) in [("self", 4u64), ("parent", 3)] {
        let path = tmp.path().join(name);
        let pages = vec![
            root_leaf(),
            fan_out(3, 1, 4),
            fan_out(4, 1, second),
            page(5, 0x10, 0),
        ];
        hand_built(&path, 2, &pages);
        let r = BoltReader::open(&path).unwrap();
        let err = r.for_each(b"b", &mut |_| Ok(())).unwrap_err().to_string();
        assert!(
            err.contains(&format!("page {second} is referenced twice")) && err.contains("at byte"),
            "{name}: {err}"
        );
        let (read_ok, _) = worker.read(&path, limit, name);
        assert!(!read_ok);
    }

    // The root bucket's tree pointing at itself: the bucket lookup stops too.
    let path = tmp.path().join("root-cycle");
    let pages = vec![fan_out(2, 3, 2), page(3, 0x10, 0)];
    hand_built(&path, 2, &pages);
    let r = BoltReader::open(&path).unwrap();
    assert!(r.buckets().is_err());
    assert!(r.has_bucket(b"b").is_err());
    let (read_ok, _) = worker.read(&path, limit, "root cycle");
    assert!(!read_ok);
}
