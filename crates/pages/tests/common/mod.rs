//! Helpers shared by the adversarial tests: a seeded PRNG, a model of the tables, full
//! comparisons of a store's view against the model, and a reader of the file format
//! (independent of the crate's own code) to find which pages a durable tree reaches.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::Path;

use skiff_pages::{ReadTx, Store, PAGE, TABLES};

/// xorshift64*: tiny, deterministic, good enough to drive tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        for _ in 0..4 {
            r.next();
        }
        r
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64 + 1) as usize
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let x = self.next().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    }

    /// Random bytes, `lo..=hi` of them.
    pub fn bytes_in(&mut self, lo: usize, hi: usize) -> Vec<u8> {
        let n = self.range(lo, hi);
        self.bytes(n)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// Every table's rows.
pub type Tables = Vec<BTreeMap<Vec<u8>, Vec<u8>>>;

pub fn empty_tables() -> Tables {
    vec![BTreeMap::new(); TABLES]
}

/// Every row of every table as `r` sees it.
pub fn dump(r: &ReadTx) -> skiff_pages::Result<Tables> {
    let mut out = empty_tables();
    for (t, rows) in out.iter_mut().enumerate() {
        for row in r.iter(t as u8)? {
            let row = row?;
            let prev = rows.insert(row.key().to_vec(), row.value().to_vec());
            assert!(prev.is_none(), "table {t}: a key came twice");
        }
    }
    Ok(out)
}

/// Panics (naming `what` and the first difference) unless `got == want`.
pub fn assert_tables_eq(got: &Tables, want: &Tables, what: &str) {
    for t in 0..TABLES {
        if got[t] == want[t] {
            continue;
        }
        let missing = want[t].keys().find(|k| !got[t].contains_key(*k));
        let extra = got[t].keys().find(|k| !want[t].contains_key(*k));
        let changed = want[t]
            .iter()
            .find(|(k, v)| got[t].get(*k).is_some_and(|g| g != *v))
            .map(|(k, _)| k);
        panic!(
            "{what}: table {t} differs: {} rows, want {}; first missing {:?}, first extra {:?}, first changed {:?}",
            got[t].len(),
            want[t].len(),
            missing.map(|k| short(k)),
            extra.map(|k| short(k)),
            changed.map(|k| short(k)),
        );
    }
}

pub fn short(k: &[u8]) -> String {
    if k.len() <= 24 {
        format!("{k:02x?}")
    } else {
        format!("{:02x?}..({} bytes)", &k[..16], k.len())
    }
}

/// A key near `k` that is (probably) not in the table: `k` with a byte appended.
fn near(k: &[u8], b: u8) -> Vec<u8> {
    let mut v = k.to_vec();
    v.push(b);
    v
}

/// A bound for a range check: a key of the table, a key next to one, a random one.
fn pick_bound_key(rows: &BTreeMap<Vec<u8>, Vec<u8>>, rng: &mut Rng) -> Vec<u8> {
    if !rows.is_empty() && rng.chance(700) {
        let probe = rng.bytes_in(0, 3);
        let k = rows
            .range(probe..)
            .next()
            .or_else(|| rows.iter().next_back())
            .map(|(k, _)| k.clone())
            .unwrap_or_default();
        match rng.below(4) {
            0 => near(&k, 0),
            1 => {
                let mut k = k;
                k.pop();
                k
            }
            _ => k,
        }
    } else {
        rng.bytes_in(0, 9)
    }
}

fn bound(kind: u64, k: &[u8]) -> Bound<&[u8]> {
    match kind {
        0 => Bound::Included(k),
        1 => Bound::Excluded(k),
        _ => Bound::Unbounded,
    }
}

fn in_range(k: &[u8], lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    let above = match lo {
        Bound::Included(b) => k >= b,
        Bound::Excluded(b) => k > b,
        Bound::Unbounded => true,
    };
    let below = match hi {
        Bound::Included(b) => k <= b,
        Bound::Excluded(b) => k < b,
        Bound::Unbounded => true,
    };
    above && below
}

/// Checks `r` against `want` through every read the API has: a full iteration of every
/// table, `len`, `get` of present and absent keys and `ranges` range scans per table
/// with random bounds of every kind.
pub fn check_view(r: &ReadTx, want: &Tables, rng: &mut Rng, ranges: usize, what: &str) {
    check_tables(r, want, &[true; TABLES], rng, ranges, what);
}

/// [`check_view`] of the tables `which` says.
pub fn check_tables(
    r: &ReadTx,
    want: &Tables,
    which: &[bool; TABLES],
    rng: &mut Rng,
    ranges: usize,
    what: &str,
) {
    // Iteration, row by row against the model (no copies).
    for (t, rows) in want.iter().enumerate().filter(|(t, _)| which[*t]) {
        let mut it = r.iter(t as u8).unwrap();
        for (i, (k, v)) in rows.iter().enumerate() {
            let row = match it.next() {
                Some(Ok(row)) => row,
                Some(Err(e)) => panic!("{what}: table {t}: iteration failed: {e}"),
                None => panic!("{what}: table {t}: {i} rows, want {}", rows.len()),
            };
            if row.key() != &k[..] || row.value() != &v[..] {
                // Say how they differ.
                let got = dump(r).unwrap_or_else(|e| panic!("{what}: iteration failed: {e}"));
                assert_tables_eq(&got, want, what);
                panic!("{what}: table {t}: row {i} differs only while iterating");
            }
        }
        if it.next().is_some() {
            let got = dump(r).unwrap_or_else(|e| panic!("{what}: iteration failed: {e}"));
            assert_tables_eq(&got, want, what);
            panic!("{what}: table {t}: rows past the end only while iterating");
        }
    }
    for (t, rows) in want.iter().enumerate() {
        let t8 = t as u8;
        assert_eq!(r.len(t8), rows.len() as u64, "{what}: len of table {t}");
        if !which[t] {
            continue;
        }
        assert_eq!(r.is_empty(t8), rows.is_empty(), "{what}: is_empty {t}");
        // Present keys (a sample: every one for small tables).
        let step = (rows.len() / 20).max(1);
        for (k, v) in rows.iter().step_by(step) {
            let row = r
                .get(t8, k)
                .unwrap()
                .unwrap_or_else(|| panic!("{what}: table {t}: get({}) found nothing", short(k)));
            assert_eq!(row.key(), &k[..], "{what}: get's key");
            assert!(row.value() == &v[..], "{what}: get({}) value", short(k));
            // Absent neighbours.
            for b in [0u8, 0xff] {
                let n = near(k, b);
                if !rows.contains_key(&n) {
                    assert!(
                        r.get(t8, &n).unwrap().is_none(),
                        "{what}: get of absent {}",
                        short(&n)
                    );
                }
            }
        }
        let absent = rng.bytes_in(0, 12);
        if !rows.contains_key(&absent) {
            assert!(r.get(t8, &absent).unwrap().is_none(), "{what}: random get");
        }
        for _ in 0..ranges {
            let (a, b) = (pick_bound_key(rows, rng), pick_bound_key(rows, rng));
            let (a, b) = if rng.chance(800) && a > b {
                (b, a)
            } else {
                (a, b)
            };
            let (lo, hi) = (bound(rng.below(3), &a), bound(rng.below(3), &b));
            let want_keys: Vec<&Vec<u8>> = rows.keys().filter(|k| in_range(k, lo, hi)).collect();
            let got_keys: Vec<Vec<u8>> = r
                .range(t8, lo, hi)
                .unwrap()
                .map(|x| x.unwrap().key().to_vec())
                .collect();
            assert!(
                got_keys.len() == want_keys.len()
                    && got_keys.iter().zip(&want_keys).all(|(g, w)| g == *w),
                "{what}: table {t}: range {lo:?}..{hi:?}: got {} keys, want {}",
                got_keys.len(),
                want_keys.len()
            );
        }
    }
    // Tables out of range are refused, not a panic.
    assert!(matches!(
        r.get(TABLES as u8, b"k"),
        Err(skiff_pages::Error::NoSuchTable(_))
    ));
    assert!(r.iter(255).is_err());
}

pub fn check_store(store: &Store, want: &Tables, rng: &mut Rng, ranges: usize, what: &str) {
    check_view(&store.begin_read(), want, rng, ranges, what);
}

// ---- The file format, read independently of the crate (see `format.rs`'s docs). ----

/// The format version this crate writes.
pub const FORMAT: u32 = 2;
/// A node's header: checksum, kind, a byte unused, level, entry count, length, commit id.
pub const NODE_HEADER: usize = 24;

pub const META_LEN: usize = 8 + 4 + 4 + 8 + 8 + 4 + 4 + 8 + 8 * TABLES + 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub txid: u64,
    /// Root page and page count (0 pages: empty tree).
    pub root: (u64, u32),
    pub height: u32,
    pub hwm: u64,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The meta in a slot's page, if it is whole.
pub fn parse_meta(page: &[u8]) -> Option<FileMeta> {
    if page.len() < META_LEN {
        return None;
    }
    let body = &page[..META_LEN - 4];
    if crc32c::crc32c(body).to_le_bytes() != page[META_LEN - 4..META_LEN] {
        return None;
    }
    if &body[..8] != b"SKIFFPG1" || le32(body, 8) != FORMAT {
        return None;
    }
    Some(FileMeta {
        txid: le64(body, 16),
        root: (le64(body, 24), le32(body, 32)),
        height: le32(body, 36),
        hwm: le64(body, 40),
    })
}

/// Encodes a meta record the way the crate does (for metas that pass their checksum but
/// say something absurd).
pub fn encode_meta(txid: u64, root: (u64, u32), height: u32, hwm: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"SKIFFPG1");
    b.extend_from_slice(&FORMAT.to_le_bytes());
    b.extend_from_slice(&(PAGE as u32).to_le_bytes());
    b.extend_from_slice(&txid.to_le_bytes());
    b.extend_from_slice(&root.0.to_le_bytes());
    b.extend_from_slice(&root.1.to_le_bytes());
    b.extend_from_slice(&height.to_le_bytes());
    b.extend_from_slice(&hwm.to_le_bytes());
    b.extend_from_slice(&[0u8; 8 * TABLES]);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b.resize(PAGE, 0);
    b
}

/// The newest whole meta of the file's two slots and its slot.
pub fn newest_meta(file: &[u8]) -> Option<(usize, FileMeta)> {
    let slot = |i: usize| file.get(i * PAGE..(i + 1) * PAGE).and_then(parse_meta);
    match (slot(0), slot(1)) {
        (Some(a), Some(b)) if b.txid > a.txid => Some((1, b)),
        (Some(a), _) => Some((0, a)),
        (None, Some(b)) => Some((1, b)),
        (None, None) => None,
    }
}

/// Every page the tree of `meta` reaches in `file` (leaves included); panics if the tree
/// is not well formed: a bad checksum, a node outside the file, a page reached twice, a
/// leaf above the bottom level or a branch on it, a level in a node's header that is
/// not its own, keys out of order or outside the bounds their parents give them, a node
/// written by a later commit than the meta's or
/// than its parent (copy on write rewrites every node above a changed one).
pub fn reached_pages(file: &[u8], meta: &FileMeta) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    if meta.root.1 == 0 {
        assert_eq!(meta.height, 0, "an empty tree has height 0");
        return seen;
    }
    walk(
        file,
        meta.root,
        meta.height,
        meta.txid,
        (None, None),
        &mut seen,
    );
    seen
}

fn walk(
    file: &[u8],
    (pgid, pages): (u64, u32),
    level: u32,
    newest: u64,
    (lo, hi): (Option<&[u8]>, Option<&[u8]>),
    seen: &mut BTreeSet<u64>,
) {
    assert!(level >= 1, "a node below the leaves (page {pgid})");
    assert!(pages >= 1, "a node of no pages (page {pgid})");
    let start = pgid as usize * PAGE;
    let end = start + pages as usize * PAGE;
    assert!(
        pgid >= 2 && end <= file.len(),
        "node {pgid}+{pages} outside the file"
    );
    for p in pgid..pgid + pages as u64 {
        assert!(seen.insert(p), "page {p} reached twice");
    }
    let b = &file[start..end];
    let len = le32(b, 12) as usize;
    assert!(
        (NODE_HEADER..=b.len()).contains(&len),
        "node {pgid}: length {len}"
    );
    assert_eq!(
        crc32c::crc32c(&b[4..len]).to_le_bytes(),
        b[..4],
        "node {pgid}: checksum"
    );
    assert!(
        pages as usize == len.div_ceil(PAGE).max(1),
        "node {pgid}: {pages} pages for {len} bytes"
    );
    let txid = le64(b, 16);
    assert!(
        txid <= newest,
        "node {pgid}: written by commit {txid}, above it commit {newest}"
    );
    let kind = b[4];
    let node_level = u16::from_le_bytes([b[6], b[7]]) as u32;
    assert_eq!(node_level, level, "node {pgid}: its level");
    let count = le32(b, 8) as usize;
    let key_at = |i: usize| -> (&[u8], usize) {
        let off = le32(b, NODE_HEADER + 4 * i) as usize;
        let klen = le32(b, off) as usize;
        let fixed = if kind == 1 { 8 } else { 16 };
        (&b[off + fixed..off + fixed + klen], off)
    };
    let mut prev: Option<&[u8]> = None;
    for i in 0..count {
        let (k, off) = key_at(i);
        if let Some(p) = prev {
            assert!(p < k, "node {pgid}: keys out of order");
        }
        prev = Some(k);
        if kind == 1 {
            assert_eq!(level, 1, "leaf {pgid} above the bottom level");
            if let Some(lo) = lo {
                assert!(k >= lo, "leaf {pgid}: a key below its bound");
            }
            if let Some(hi) = hi {
                assert!(k < hi, "leaf {pgid}: a key at or past the next bound");
            }
        } else {
            assert_eq!(kind, 2, "node {pgid}: kind {kind}");
            assert!(level > 1, "branch {pgid} on the bottom level");
            let child = (le64(b, off + 8), le32(b, off + 4));
            // A child's keys are at or above its bound and below the next bound (the
            // write transaction's `keys` relies on it, routing only on the latter).
            let next = if i + 1 < count {
                Some(key_at(i + 1).0)
            } else {
                hi
            };
            if let Some(lo) = lo {
                assert!(k >= lo, "branch {pgid}: a bound below its own bound");
            }
            walk(file, child, level - 1, txid, (Some(k), next), seen);
        }
    }
    if kind == 2 {
        assert!(count > 0, "empty branch {pgid}");
    }
}

/// The file's bytes.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Garbage over every page of `file` from page 2 on that `keep` does not hold.
pub fn garble_except(file: &mut [u8], keep: &BTreeSet<u64>, rng: &mut Rng) -> usize {
    let mut n = 0;
    for (p, page) in file.chunks_mut(PAGE).enumerate().skip(2) {
        if !keep.contains(&(p as u64)) {
            rng.fill(page);
            n += 1;
        }
    }
    n
}

/// A few random changes (inserts of varied sizes, removes of present rows) in `tx`,
/// mirrored in `model`.
pub fn random_changes(rng: &mut Rng, tx: &mut skiff_pages::WriteTx, model: &mut Tables, n: usize) {
    for _ in 0..n {
        let t = rng.below(4) as u8;
        let rows = &mut model[t as usize];
        if !rows.is_empty() && rng.chance(300) {
            let probe = rng.bytes_in(0, 3);
            let k = rows
                .range(probe..)
                .next()
                .or_else(|| rows.iter().next())
                .map(|(k, _)| k.clone())
                .unwrap();
            assert!(tx.remove(t, &k).unwrap());
            rows.remove(&k);
        } else {
            let k = match rng.below(3) {
                0 => rng.below(5000).to_be_bytes().to_vec(),
                1 => rng.bytes_in(0, 40),
                _ => rng.bytes_in(0, 400),
            };
            let v = match rng.below(100) {
                0 => rng.bytes_in(5000, 40_000),
                1..=20 => rng.bytes_in(0, 3000),
                _ => rng.bytes_in(0, 100),
            };
            tx.insert(t, &k, &v).unwrap();
            rows.insert(k, v);
        }
    }
}

/// Opens the file at `path` and reads every table whole.
pub fn open_and_dump(path: &Path) -> skiff_pages::Result<Tables> {
    let store = Store::open(path, skiff_pages::Options::default())?;
    let r = store.begin_read();
    dump(&r)
}

/// A directory for test files: in memory (tmpfs) when the machine has one, as the tests
/// make hundreds of durable commits and each `fdatasync` on a busy disk can take
/// seconds; crashes are simulated by copying files, not by losing the disk's cache.
pub fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}
