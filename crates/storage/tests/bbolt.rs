//! The bbolt writer and reader: random contents written and read back equal (tiny and
//! huge values, empty buckets, inline and multi-level buckets), every file accepted by
//! etcd 3.4's own `etcdctl snapshot status` (bbolt's consistency check) when etcdctl is
//! installed, and damaged files refused with an error naming the file and an offset,
//! never a panic.
//!
//! Deterministic (xorshift with fixed seeds) so a failure reproduces.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use skiff_storage::bbolt::reader::{BoltReader, Row};
use skiff_storage::bbolt::writer::{BoltWriter, BucketBuilder};
use skiff_storage::bbolt::{BoltError, PAGE_SIZE};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

type Contents = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

fn random_contents(rng: &mut Rng) -> Contents {
    let mut out = Contents::new();
    let buckets = 1 + rng.below(6);
    for _ in 0..buckets {
        let name_len = 1 + rng.below(12) as usize;
        let name = rng.bytes(name_len);
        let mut rows = BTreeMap::new();
        let n = match rng.below(4) {
            0 => 0,
            1 => rng.below(5),
            2 => rng.below(300),
            _ => rng.below(3000),
        };
        for _ in 0..n {
            let kmax = if rng.below(50) == 0 { 2000 } else { 40 };
            let klen = 1 + rng.below(kmax) as usize;
            let vlen = match rng.below(100) {
                0 => 5 * PAGE_SIZE + rng.below(3000) as usize,
                1..=5 => rng.below(2 * PAGE_SIZE as u64) as usize,
                _ => rng.below(100) as usize,
            };
            rows.insert(rng.bytes(klen), rng.bytes(vlen));
        }
        out.insert(name, rows);
    }
    out
}

fn write(path: &Path, c: &Contents) {
    let mut w = BoltWriter::create(path).unwrap();
    let mut refs = Vec::new();
    for (name, rows) in c {
        let mut b = BucketBuilder::new();
        for (k, v) in rows {
            b.put(&mut w, k, v).unwrap();
        }
        refs.push((name.clone(), b.finish(&mut w).unwrap()));
    }
    let s = w.finish(refs).unwrap();
    assert_eq!(s.bytes, std::fs::metadata(path).unwrap().len());
}

fn read(path: &Path) -> Result<Contents, BoltError> {
    let r = BoltReader::open(path)?;
    let mut out = Contents::new();
    for name in r.buckets()? {
        let mut rows = BTreeMap::new();
        r.for_each(&name, &mut |row| {
            match row {
                Row::Value { key, value } => {
                    rows.insert(key.to_vec(), value.to_vec());
                }
                Row::Bucket { .. } => panic!("no nested buckets were written"),
            }
            Ok(())
        })?;
        out.insert(name, rows);
    }
    Ok(out)
}

fn etcdctl() -> Option<String> {
    let bin = std::env::var("ETCDCTL").unwrap_or_else(|_| "etcdctl".into());
    Command::new(&bin)
        .arg("version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| bin)
}

/// `etcdctl snapshot status` runs bbolt's `tx.Check` and hashes every bucket.
fn etcdctl_accepts(bin: &str, path: &Path) {
    let out = Command::new(bin)
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdctl snapshot status refused {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn random_contents_read_back_equal_and_pass_bbolts_check() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = etcdctl();
    if ctl.is_none() {
        eprintln!("note: etcdctl not installed; bbolt's own check skipped");
    }
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let c = random_contents(&mut rng);
        let path = dir.path().join(format!("db{seed}"));
        write(&path, &c);
        assert_eq!(read(&path).unwrap(), c, "seed {seed}");
        if let Some(bin) = &ctl {
            // etcdctl is slow to start: check a sample.
            if seed % 8 == 1 {
                etcdctl_accepts(bin, &path);
            }
        }
    }
}

#[test]
fn a_deep_tree_reads_back_and_passes_the_check() {
    // Enough rows for three levels of branch pages.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut rows = BTreeMap::new();
    for i in 0..400_000u64 {
        rows.insert(i.to_be_bytes().to_vec(), (i * 7).to_le_bytes().to_vec());
    }
    // Not named `key`: etcdctl would parse these keys as revisions.
    let c: Contents = [(b"rows".to_vec(), rows)].into_iter().collect();
    write(&path, &c);
    assert_eq!(read(&path).unwrap(), c);
    if let Some(bin) = etcdctl() {
        etcdctl_accepts(&bin, &path);
    }
}

#[test]
fn unsorted_or_duplicate_keys_are_refused_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = BoltWriter::create(&dir.path().join("db")).unwrap();
    let mut b = BucketBuilder::new();
    b.put(&mut w, b"b", b"1").unwrap();
    assert!(b.put(&mut w, b"b", b"2").is_err());
    assert!(b.put(&mut w, b"a", b"2").is_err());
    assert!(b.put(&mut w, b"", b"2").is_err());
}

#[test]
fn damaged_files_are_refused_with_file_and_offset_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let mut rng = Rng(77);
    let mut c = Contents::new();
    let mut rows = BTreeMap::new();
    for i in 0..2000u32 {
        rows.insert(i.to_be_bytes().to_vec(), rng.bytes(1 + (i % 300) as usize));
    }
    c.insert(b"key".to_vec(), rows);
    c.insert(b"meta".to_vec(), [(b"a".to_vec(), b"b".to_vec())].into());
    write(&path, &c);
    let good = std::fs::read(&path).unwrap();

    // Truncated: the meta pages point past the end.
    let cut = dir.path().join("cut");
    std::fs::write(&cut, &good[..good.len() - PAGE_SIZE]).unwrap();
    let err = read(&cut).unwrap_err().to_string();
    assert!(
        err.contains("cut") && err.contains("beyond the file"),
        "{err}"
    );
    std::fs::write(&cut, &good[..100]).unwrap();
    assert!(read(&cut).is_err());
    std::fs::write(&cut, b"").unwrap();
    assert!(read(&cut).is_err());

    // Both meta pages damaged.
    let mut bad = good.clone();
    bad[40] ^= 1;
    bad[PAGE_SIZE + 40] ^= 1;
    let p = dir.path().join("meta");
    std::fs::write(&p, &bad).unwrap();
    let err = read(&p).unwrap_err().to_string();
    assert!(
        err.contains("checksum mismatch") && err.contains("at byte 0"),
        "{err}"
    );

    // One meta page damaged: the other one still serves.
    let mut one = good.clone();
    one[40] ^= 1;
    std::fs::write(&p, &one).unwrap();
    assert_eq!(read(&p).unwrap(), c);

    // Flipped bytes anywhere in the data pages: an error or (if the flip hit a value)
    // different contents, never a panic.
    let mut errors = 0;
    for i in 0..400 {
        let mut bad = good.clone();
        let at = 2 * PAGE_SIZE + rng.below((good.len() - 2 * PAGE_SIZE) as u64) as usize;
        bad[at] ^= 1 << (i % 8);
        // A 10 GB length field in an element, or a huge page count.
        if i % 10 == 0 {
            let page = at / PAGE_SIZE * PAGE_SIZE;
            bad[page + 16 + 12..page + 16 + 16].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        }
        if i % 10 == 1 {
            let page = at / PAGE_SIZE * PAGE_SIZE;
            bad[page + 12..page + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        }
        std::fs::write(&p, &bad).unwrap();
        match read(&p) {
            Ok(got) => assert_ne!(got.len(), 0),
            Err(e) => {
                errors += 1;
                let s = e.to_string();
                assert!(
                    s.contains(&p.display().to_string()) && s.contains("at byte"),
                    "{s}"
                );
            }
        }
    }
    assert!(
        errors > 100,
        "only {errors} of 400 damaged files were refused"
    );
}

mod etcd_layout {
    //! A Skiff backend exported in etcd's layout and imported back holds the same rows.

    use super::Rng;
    use skiff_storage::backend::{Backend, BackendConfig, Table};
    use skiff_storage::bbolt::etcd::{self, AuxCodec, EtcdRows, SkiffRows};
    use skiff_storage::bbolt::reader::{BoltReader, Row};

    /// Server tables to etcd buckets of the same name, unchanged.
    struct Identity;

    impl AuxCodec for Identity {
        fn etcd_rows(&self, table: Table, key: &[u8], value: &[u8]) -> Result<EtcdRows, String> {
            let bucket = match table {
                Table::Lease => "lease",
                Table::Members => "members",
                Table::Alarm => "alarm",
                _ => return Ok(Vec::new()),
            };
            Ok(vec![(bucket, key.to_vec(), value.to_vec())])
        }
        fn skiff_rows(&self, bucket: &str, key: &[u8], value: &[u8]) -> Result<SkiffRows, String> {
            let table = match bucket {
                "lease" => Table::Lease,
                "members" => Table::Members,
                "alarm" => Table::Alarm,
                _ => return Ok(Vec::new()),
            };
            Ok(vec![(table, key.to_vec(), value.to_vec())])
        }
    }

    fn rev_key(main: i64, sub: i64, tomb: bool) -> Vec<u8> {
        let mut k = main.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&sub.to_be_bytes());
        if tomb {
            k.push(b't');
        }
        k
    }

    #[test]
    fn random_backends_round_trip_through_etcds_layout() {
        let dir = tempfile::tempdir().unwrap();
        for seed in 1..=6u64 {
            let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
            let src = Backend::open(
                dir.path().join(format!("src{seed}")),
                BackendConfig::default(),
            )
            .unwrap();
            let mut keys = Vec::new();
            let mut main = 1 + rng.below(100) as i64;
            for _ in 0..rng.below(20_000) {
                main += 1 + rng.below(3) as i64;
                for sub in 0..1 + rng.below(3) as i64 {
                    let vlen = if rng.below(200) == 0 {
                        9000
                    } else {
                        rng.below(200) as usize
                    };
                    keys.push((
                        rev_key(main, sub, rng.below(10) == 0),
                        Some(rng.bytes(vlen)),
                    ));
                }
            }
            src.write_rows(Table::Key, &keys).unwrap();
            for t in [Table::Lease, Table::Members, Table::Alarm] {
                let rows: Vec<_> = (0..rng.below(50))
                    .map(|_| {
                        let (klen, vlen) = (1 + rng.below(16) as usize, rng.below(64) as usize);
                        (rng.bytes(klen), Some(rng.bytes(vlen)))
                    })
                    .collect();
                src.write_rows(t, &rows).unwrap();
            }
            let compact = if main > 10 { main - 5 } else { 0 } as u64;
            let meta = [
                (
                    b"consistent_index".to_vec(),
                    Some(1234u64.to_be_bytes().to_vec()),
                ),
                (
                    b"scheduledCompactRev".to_vec(),
                    Some(compact.to_be_bytes().to_vec()),
                ),
                (
                    b"finishedCompactRev".to_vec(),
                    Some(compact.to_be_bytes().to_vec()),
                ),
            ];
            src.write_rows(Table::Meta, &meta).unwrap();

            let file = dir.path().join(format!("etcd{seed}.db"));
            let out = etcd::export(&src, &file, &Identity).unwrap();
            assert_eq!(out.key_rows, keys.len() as u64);
            assert_eq!(out.consistent_index, 1234);
            assert_eq!(out.bytes, std::fs::metadata(&file).unwrap().len());
            // etcd's buckets, and its compaction marks as revision keys.
            let r = BoltReader::open(&file).unwrap();
            let names: Vec<String> = r
                .buckets()
                .unwrap()
                .into_iter()
                .map(|b| String::from_utf8(b).unwrap())
                .collect();
            assert_eq!(names, etcd::BUCKETS);
            let mut meta_rows = Vec::new();
            r.for_each(b"meta", &mut |row| {
                if let Row::Value { key, value } = row {
                    meta_rows.push((key.to_vec(), value.to_vec()));
                }
                Ok(())
            })
            .unwrap();
            assert!(
                meta_rows.contains(&(b"consistent_index".to_vec(), 1234u64.to_be_bytes().to_vec()))
            );
            if compact > 0 {
                assert!(meta_rows.contains(&(
                    b"finishedCompactRev".to_vec(),
                    rev_key(compact as i64, 0, false)
                )));
            }
            if let Some(bin) = super::etcdctl() {
                if seed <= 2 {
                    super::etcdctl_accepts(&bin, &file);
                }
            }

            let dst = Backend::open(
                dir.path().join(format!("dst{seed}")),
                BackendConfig::default(),
            )
            .unwrap();
            assert!(!etcd::imported_from_etcd(&dst).unwrap());
            let back = etcd::import(&file, &dst, &Identity, 7).unwrap();
            assert_eq!(back.key_rows, keys.len() as u64);
            assert_eq!(back.scheduled_compact, compact as i64);
            assert!(etcd::imported_from_etcd(&dst).unwrap());
            for t in [Table::Key, Table::Lease, Table::Members, Table::Alarm] {
                assert_eq!(
                    dst.scan(t).unwrap(),
                    src.scan(t).unwrap(),
                    "seed {seed} {t:?}"
                );
            }
            assert_eq!(dst.consistent_index().unwrap().0, 7);
            // A second import into a backend that holds keys is refused.
            if !keys.is_empty() {
                assert!(etcd::import(&file, &dst, &Identity, 7).is_err());
            }
        }
    }
}

mod snapshot_files {
    //! A snapshot file (db + sha256) checked as `etcdctl snapshot restore` checks it:
    //! a good one passes; a truncated one, a wrong sha256 and flipped bytes are refused.

    use sha2::{Digest, Sha256};
    use skiff_storage::backend::{Backend, BackendConfig, Table};
    use skiff_storage::bbolt::etcd;

    struct NoAux;
    impl etcd::AuxCodec for NoAux {
        fn etcd_rows(&self, _: Table, _: &[u8], _: &[u8]) -> Result<etcd::EtcdRows, String> {
            Ok(Vec::new())
        }
        fn skiff_rows(&self, _: &str, _: &[u8], _: &[u8]) -> Result<etcd::SkiffRows, String> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let be = Backend::open(dir.path().join("src"), BackendConfig::default()).unwrap();
        let rows: Vec<_> = (1..=3000i64)
            .map(|main| {
                let mut k = main.to_be_bytes().to_vec();
                k.push(b'_');
                k.extend_from_slice(&0i64.to_be_bytes());
                (k, Some(vec![b'v'; 50]))
            })
            .collect();
        be.write_rows(Table::Key, &rows).unwrap();
        let db = dir.path().join("db");
        etcd::export(&be, &db, &NoAux).unwrap();
        let mut snap = std::fs::read(&db).unwrap();
        let sha = Sha256::digest(&snap);
        snap.extend_from_slice(sha.as_slice());
        let path = dir.path().join("snap.db");
        std::fs::write(&path, &snap).unwrap();
        let ok = etcd::verify_snapshot(&path, false).unwrap();
        assert!(ok.has_hash);
        assert_eq!((ok.key_rows, ok.revision), (3000, 3000));
        // The bare db: only with skip_hash_check.
        assert!(etcd::verify_snapshot(&db, false)
            .unwrap_err()
            .to_string()
            .contains("missing hash"));
        assert_eq!(etcd::verify_snapshot(&db, true).unwrap().key_rows, 3000);

        let bad = dir.path().join("bad.db");
        // Truncated (also to a size that looks like db + hash).
        for cut in [snap.len() - 1, snap.len() - 4096, snap.len() - 512] {
            std::fs::write(&bad, &snap[..cut]).unwrap();
            assert!(etcd::verify_snapshot(&bad, false).is_err(), "cut to {cut}");
        }
        // A wrong sha256.
        let mut wrong = snap.clone();
        let n = wrong.len();
        wrong[n - 1] ^= 1;
        std::fs::write(&bad, &wrong).unwrap();
        let err = etcd::verify_snapshot(&bad, false).unwrap_err();
        assert!(
            matches!(&err, etcd::EtcdDbError::HashMismatch { path, .. } if path.ends_with("bad.db")),
            "{err}"
        );
        assert!(err.to_string().starts_with("expected sha256 ["), "{err}");
        // Flipped bytes in a page: the sha256 catches them.
        let mut flipped = snap.clone();
        flipped[3 * 4096 + 100] ^= 0x40;
        std::fs::write(&bad, &flipped).unwrap();
        assert!(etcd::verify_snapshot(&bad, false).is_err());
        // ...and with the sha256 recomputed, the page checks do when they can (a
        // flipped page header or element length), never a panic.
        let mut refused = 0;
        for at in (2 * 4096..snap.len() - 32).step_by(997) {
            let mut f = snap[..snap.len() - 32].to_vec();
            f[at] ^= 0xff;
            let sha = Sha256::digest(&f);
            f.extend_from_slice(sha.as_slice());
            std::fs::write(&bad, &f).unwrap();
            if etcd::verify_snapshot(&bad, false).is_err() {
                refused += 1;
            }
        }
        assert!(refused > 0);
    }
}

/// `write_restored_db`: every bucket and row copied, `consistent_index` replaced, the
/// old members gone and the new ones in, `members_removed` emptied; the sha256 trailer
/// of a snapshot file left out; bbolt's check passes.
#[test]
fn a_restored_db_keeps_the_data_and_takes_the_new_membership() {
    use skiff_storage::bbolt::etcd::write_restored_db;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("snap.db");
    let mut c = Contents::new();
    let mut rng = Rng(0x5eed_0016);
    let mut keys = BTreeMap::new();
    for i in 0..2000u64 {
        let mut k = (i + 2).to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&0u64.to_be_bytes());
        let len = rng.below(300) as usize;
        keys.insert(k, rng.bytes(len));
    }
    c.insert(b"key".to_vec(), keys);
    c.insert(
        b"members".to_vec(),
        BTreeMap::from([(b"old1".to_vec(), b"{}".to_vec())]),
    );
    c.insert(
        b"members_removed".to_vec(),
        BTreeMap::from([(b"old2".to_vec(), b"removed".to_vec())]),
    );
    c.insert(
        b"meta".to_vec(),
        BTreeMap::from([
            (b"consistent_index".to_vec(), 99u64.to_be_bytes().to_vec()),
            (b"finishedCompactRev".to_vec(), vec![7; 17]),
            (b"scheduledCompactRev".to_vec(), vec![8; 17]),
        ]),
    );
    c.insert(
        b"lease".to_vec(),
        BTreeMap::from([(vec![1; 8], vec![2; 4])]),
    );
    write(&src, &c);
    // A snapshot file: the db and its sha256.
    let mut bytes = std::fs::read(&src).unwrap();
    bytes.extend_from_slice(&[0xaa; 32]);
    std::fs::write(&src, &bytes).unwrap();

    let members = BTreeMap::from([
        (b"1a".to_vec(), b"{\"id\":26}".to_vec()),
        (b"2b".to_vec(), b"{\"id\":43}".to_vec()),
    ]);
    let dst = dir.path().join("db");
    let sum = write_restored_db(&src, &dst, 3, &members).unwrap();
    assert_eq!(sum.key_rows, 2000);
    assert_eq!(sum.last_key_revision, 2001);
    assert_eq!(sum.bytes, std::fs::metadata(&dst).unwrap().len());
    let mut want = c.clone();
    want.insert(b"members".to_vec(), members.clone());
    want.insert(b"members_removed".to_vec(), BTreeMap::new());
    want.get_mut(&b"meta"[..])
        .unwrap()
        .insert(b"consistent_index".to_vec(), 3u64.to_be_bytes().to_vec());
    assert_eq!(read(&dst).unwrap(), want);

    // A source without meta or member buckets still gets them.
    let bare = dir.path().join("bare.db");
    write(&bare, &Contents::from([(b"key".to_vec(), BTreeMap::new())]));
    let dst2 = dir.path().join("db2");
    write_restored_db(&bare, &dst2, 1, &members).unwrap();
    let got = read(&dst2).unwrap();
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        vec![
            b"key".to_vec(),
            b"members".to_vec(),
            b"members_removed".to_vec(),
            b"meta".to_vec()
        ]
    );
    assert_eq!(
        got[&b"meta"[..]][&b"consistent_index"[..]],
        1u64.to_be_bytes().to_vec()
    );
    if let Some(bin) = etcdctl() {
        etcdctl_accepts(&bin, &dst);
        etcdctl_accepts(&bin, &dst2);
    }
}
