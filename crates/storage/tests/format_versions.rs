//! On-disk format versions: files from before versions existed (version 1, unmarked)
//! still open, and a file claiming a newer version than this Skiff reads is refused
//! with an error naming it and both versions, for the WAL, the snapshot files and the
//! backend.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::fs;
use std::path::{Path, PathBuf};

use skiff_raft::{Entry, HardState};
use skiff_storage::backend::{self, BackendConfig, BackendError};
use skiff_storage::mvcc::{KvStore, RangeRequest, StoreConfig};
use skiff_storage::snap::{self, SnapError, Snapshotter};
use skiff_storage::wal::record::{self, Item, RecordType, Scanner};
use skiff_storage::wal::{self, SnapshotMarker, Wal, WalError, WalOptions};

mod common;

const ZERO: SnapshotMarker = SnapshotMarker { index: 0, term: 0 };

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unversioned")
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn ent(index: u64, data: &str) -> Entry {
    Entry {
        term: 2,
        index,
        data: data.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// The records of one segment file, (type, payload), up to its end.
fn records(path: &Path) -> Vec<(RecordType, Vec<u8>)> {
    let data = fs::read(path).unwrap();
    let mut s = Scanner::new(&data, 0);
    let mut out = Vec::new();
    while let Item::Record { rtype, payload, .. } = s.next_item() {
        out.push((rtype, payload.to_vec()));
    }
    out
}

/// The version a segment declares: `None` if it has no version record.
fn declared_version(path: &Path) -> Option<u32> {
    let recs = records(path);
    assert_eq!(recs[0].0, RecordType::Crc);
    match &recs[1] {
        (RecordType::Version, p) => Some(u32::from_le_bytes(p[..].try_into().unwrap())),
        _ => None,
    }
}

/// Rewrites a segment with the same records, correctly chained, but its version
/// record saying `version` (a version record is added if it had none).
fn set_declared_version(path: &Path, version: u32) {
    let recs = records(path);
    let mut buf = Vec::new();
    let mut chain = 0;
    record::encode(&mut buf, &mut chain, RecordType::Crc, &recs[0].1);
    record::encode(
        &mut buf,
        &mut chain,
        RecordType::Version,
        &version.to_le_bytes(),
    );
    for (t, p) in &recs[1..] {
        if *t != RecordType::Version {
            record::encode(&mut buf, &mut chain, *t, p);
        }
    }
    fs::write(path, &buf).unwrap();
}

#[test]
fn unversioned_wal_and_snapshot_from_before_versions_open() {
    let tmp = tempfile::tempdir().unwrap();
    let wal_dir = tmp.path().join("wal");
    copy_dir(&fixtures().join("wal"), &wal_dir);
    copy_dir(&fixtures().join("snap"), &tmp.path().join("snap"));
    for seg in segments(&wal_dir) {
        assert_eq!(declared_version(&seg), None, "{}", seg.display());
    }

    // The snapshot the restart path picks: newest file with a committed marker.
    let markers = Wal::valid_snapshot_markers(&wal_dir).unwrap();
    assert_eq!(markers, vec![ZERO, SnapshotMarker { index: 3, term: 2 }]);
    let snaps = Snapshotter::new(tmp.path().join("snap")).unwrap();
    let snapshot = snaps.load_newest_available(&markers).unwrap().unwrap();
    assert_eq!((snapshot.metadata.index, snapshot.metadata.term), (3, 2));
    assert_eq!(snapshot.metadata.conf_state.voters, vec![1]);
    assert_eq!(snapshot.read_payload().unwrap(), b"legacy snapshot payload");

    let opts = WalOptions { segment_size: 256 };
    let (mut w, replay) = Wal::open(&wal_dir, snapshot.marker(), opts).unwrap();
    assert_eq!(replay.metadata, b"member=1,cluster=7");
    assert_eq!(
        replay.hard_state,
        HardState {
            term: 2,
            vote: 1,
            commit: 6
        }
    );
    let got: Vec<(u64, &[u8])> = replay
        .entries
        .iter()
        .map(|e| (e.index, e.data.as_ref()))
        .collect();
    assert_eq!(
        got,
        vec![
            (4, &b"entry-4"[..]),
            (5, &b"entry-5"[..]),
            (6, &b"entry-6"[..])
        ]
    );
    assert_eq!(replay.repaired_torn_tail, None);

    // Appending goes on in the unversioned last segment; segments cut from now on
    // carry the version, and the mixed WAL replays whole.
    for i in 7..=20 {
        w.save(
            &HardState {
                term: 2,
                vote: 1,
                commit: i,
            },
            &[ent(i, &format!("entry-{i}"))],
        )
        .unwrap();
        w.sync().unwrap();
    }
    drop(w);
    let segs = segments(&wal_dir);
    assert!(segs.len() > 4, "{segs:?}");
    assert_eq!(declared_version(&segs[2]), None);
    for seg in &segs[3..] {
        assert_eq!(declared_version(seg), Some(wal::FORMAT_VERSION));
    }
    let (_, replay) = Wal::open(&wal_dir, ZERO, opts).unwrap();
    let indexes: Vec<u64> = replay.entries.iter().map(|e| e.index).collect();
    assert_eq!(indexes, (1..=20).collect::<Vec<_>>());
    assert_eq!(replay.entries[19].data.as_ref(), b"entry-20");
}

#[test]
fn new_wal_segments_declare_the_current_version() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let w = Wal::create(&dir, b"m", WalOptions::default()).unwrap();
    drop(w);
    let seg = &segments(&dir)[0];
    assert_eq!(declared_version(seg), Some(wal::FORMAT_VERSION));
    let (_, replay) = Wal::open(&dir, ZERO, WalOptions::default()).unwrap();
    assert_eq!(replay.metadata, b"m");
}

fn assert_wal_refused(r: Result<impl std::fmt::Debug, WalError>, seg: &Path) {
    let newer = wal::FORMAT_VERSION + 1;
    match r {
        Err(e @ WalError::UnsupportedVersion { .. }) => {
            let WalError::UnsupportedVersion {
                path,
                found,
                supported,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(path, seg);
            assert_eq!((*found, *supported), (newer, wal::FORMAT_VERSION));
            assert_eq!(
                e.to_string(),
                format!(
                    "wal: {} has format version {newer}, this Skiff reads up to {}; \
                     upgrade Skiff",
                    seg.display(),
                    wal::FORMAT_VERSION
                )
            );
        }
        other => panic!(
            "expected UnsupportedVersion for {}, got {other:?}",
            seg.display()
        ),
    }
}

#[test]
fn a_wal_segment_of_a_newer_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = WalOptions { segment_size: 256 };
    let mut w = Wal::create(&dir, b"m", opts).unwrap();
    for i in 1..=12 {
        w.save(
            &HardState {
                term: 2,
                vote: 1,
                commit: i,
            },
            &[ent(i, "x")],
        )
        .unwrap();
        w.sync().unwrap();
    }
    drop(w);
    let segs = segments(&dir);
    assert!(segs.len() >= 3, "{segs:?}");

    // A later segment (the one a downgraded Skiff's newer twin cut last)...
    let last = segs.last().unwrap().clone();
    set_declared_version(&last, wal::FORMAT_VERSION);
    Wal::open(&dir, ZERO, opts).unwrap(); // the rewrite itself is faithful
    set_declared_version(&last, wal::FORMAT_VERSION + 1);
    assert_wal_refused(Wal::open(&dir, ZERO, opts), &last);
    assert_wal_refused(Wal::valid_snapshot_markers(&dir), &last);
    // ...and the first one, which replay from the empty marker reads first.
    set_declared_version(&last, wal::FORMAT_VERSION);
    set_declared_version(&segs[0], wal::FORMAT_VERSION + 1);
    assert_wal_refused(Wal::open(&dir, ZERO, opts), &segs[0]);
}

#[test]
fn a_version_record_out_of_place_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut w = Wal::create(&dir, b"m", WalOptions::default()).unwrap();
    w.save(&HardState::default(), &[ent(1, "x")]).unwrap();
    w.sync().unwrap();
    drop(w);
    let seg = segments(&dir)[0].clone();
    let recs = records(&seg);
    let mut buf = Vec::new();
    let mut chain = 0;
    for (t, p) in &recs {
        record::encode(&mut buf, &mut chain, *t, p);
    }
    record::encode(
        &mut buf,
        &mut chain,
        RecordType::Version,
        &1u32.to_le_bytes(),
    );
    fs::write(&seg, &buf).unwrap();
    match Wal::open(&dir, ZERO, WalOptions::default()) {
        Err(WalError::Corrupt { path, reason, .. }) => {
            assert_eq!(path, seg);
            assert!(reason.contains("version record in the middle"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

fn save_snapshot(snaps: &Snapshotter, index: u64, payload: &[u8]) -> PathBuf {
    let meta = skiff_raft::SnapshotMetadata {
        index,
        term: 1,
        ..Default::default()
    };
    snaps.save(&meta, &mut &payload[..]).unwrap().path
}

#[test]
fn a_snapshot_of_a_newer_version_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let snaps = Snapshotter::new(tmp.path()).unwrap();
    save_snapshot(&snaps, 5, b"older");
    let newest = save_snapshot(&snaps, 9, b"newer");
    let mut bytes = fs::read(&newest).unwrap();
    assert_eq!(&bytes[..8], b"SKIFSNAP");
    assert_eq!(bytes[8..12], snap::FORMAT_VERSION.to_le_bytes());

    // A newer version, its CRC right: refused, named, and not marked broken.
    let newer = snap::FORMAT_VERSION + 1;
    bytes[8..12].copy_from_slice(&newer.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..12]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    fs::write(&newest, &bytes).unwrap();
    let err = snaps.load_newest().unwrap_err();
    match &err {
        SnapError::UnsupportedVersion {
            path,
            found,
            supported,
        } => {
            assert_eq!(path, &newest);
            assert_eq!((*found, *supported), (newer, snap::FORMAT_VERSION));
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "snap: {} has format version {newer}, this Skiff reads up to {}; upgrade Skiff",
            newest.display(),
            snap::FORMAT_VERSION
        )
    );
    assert!(newest.exists());
    assert!(matches!(
        Snapshotter::verify(&newest),
        Err(SnapError::UnsupportedVersion { .. })
    ));

    // The same bytes with the version's CRC wrong are corruption: the file is marked
    // broken and the older snapshot is used.
    bytes[12] ^= 1;
    fs::write(&newest, &bytes).unwrap();
    let got = snaps.load_newest().unwrap().unwrap();
    assert_eq!(got.read_payload().unwrap(), b"older");
    assert!(!newest.exists());
}

#[test]
fn an_unversioned_backend_opens_and_gets_the_version() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    {
        let store = KvStore::open(&path, StoreConfig::default()).unwrap();
        let mut a = common::Applier::new(&store);
        a.put(&store, "alpha", "one");
        a.put(&store, "beta", "two");
        store.sync().unwrap();
    }
    assert_eq!(raw_version(&path), Some(backend::FORMAT_VERSION));
    // What the backend looked like before versions: no format_version in meta.
    set_raw_version(&path, None);

    let store = KvStore::open(&path, StoreConfig::default()).unwrap();
    assert_eq!(store.consistent_index(), 2);
    let r = store
        .range(&RangeRequest {
            key: b"alpha".to_vec(),
            range_end: b"gamma".to_vec(),
            ..Default::default()
        })
        .unwrap();
    let kvs: Vec<(&[u8], &[u8])> = r
        .kvs
        .iter()
        .map(|kv| (kv.key.as_ref(), kv.value.as_ref()))
        .collect();
    assert_eq!(
        kvs,
        vec![(&b"alpha"[..], &b"one"[..]), (&b"beta"[..], &b"two"[..])]
    );
    assert_eq!(store.backend().format_version().unwrap(), 1);
    drop(store);
    assert_eq!(raw_version(&path), Some(backend::FORMAT_VERSION));
}

#[test]
fn a_backend_of_a_newer_version_is_refused_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    drop(KvStore::open(&path, StoreConfig::default()).unwrap());
    let newer = backend::FORMAT_VERSION + 1;
    set_raw_version(&path, Some(newer));
    let err = match backend::Backend::open(&path, BackendConfig::default()) {
        Err(e) => e,
        Ok(_) => panic!("a newer backend opened"),
    };
    match &err {
        BackendError::UnsupportedVersion {
            path: p,
            found,
            supported,
        } => {
            assert_eq!(p, &path);
            assert_eq!((*found, *supported), (newer, backend::FORMAT_VERSION));
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "backend: {} has format version {newer}, this Skiff reads up to {}; upgrade Skiff",
            path.display(),
            backend::FORMAT_VERSION
        )
    );
    assert!(KvStore::open(&path, StoreConfig::default()).is_err());
    assert_eq!(raw_version(&path), Some(newer));
}

/// The `meta` table's id in the backend's page store.
const META: u8 = 2;

fn raw_version(path: &Path) -> Option<u64> {
    let db = skiff_pages::Store::open(path, skiff_pages::Options::default()).unwrap();
    let tx = db.begin_read();
    let v = tx.get(META, b"format_version").unwrap()?;
    Some(u64::from_be_bytes(v.value().try_into().unwrap()))
}

fn set_raw_version(path: &Path, version: Option<u64>) {
    let db = skiff_pages::Store::open(path, skiff_pages::Options::default()).unwrap();
    let mut tx = db.begin_write();
    match version {
        Some(v) => {
            tx.insert(META, b"format_version", &v.to_be_bytes())
                .unwrap();
        }
        None => {
            tx.remove(META, b"format_version").unwrap();
        }
    }
    tx.commit(true).unwrap();
}
