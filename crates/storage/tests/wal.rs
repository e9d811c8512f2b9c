//! WAL behaviour on disk: replay, torn tails, corruption, segments, release.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use skiff_raft::{Encode, Entry, EntryType, HardState};
use skiff_storage::wal::record::{self, RecordType};
use skiff_storage::wal::{SnapshotMarker, Wal, WalError, WalOptions};

const ZERO: SnapshotMarker = SnapshotMarker { index: 0, term: 0 };

fn ent(index: u64, term: u64, len: usize) -> Entry {
    Entry {
        term,
        index,
        entry_type: EntryType::Normal,
        // Never ends in a zero byte, so "last non-zero byte" finds a record's end.
        data: Bytes::from(
            (0..len)
                .map(|i| b'a' + ((index as usize).wrapping_add(i) % 26) as u8)
                .collect::<Vec<_>>(),
        ),
    }
}

fn ents(range: std::ops::RangeInclusive<u64>, term: u64, len: usize) -> Vec<Entry> {
    range.map(|i| ent(i, term, len)).collect()
}

fn small(segment_size: u64) -> WalOptions {
    WalOptions { segment_size }
}

fn used_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

#[test]
fn create_save_reopen_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    assert!(!Wal::exists(&dir));
    let mut wal = Wal::create(&dir, b"member-1/cluster-9", WalOptions::default()).unwrap();
    assert!(Wal::exists(&dir));
    assert!(!tmp.path().join("wal.tmp").exists());
    let hs = HardState {
        term: 2,
        vote: 1,
        commit: 3,
    };
    wal.save(&hs, &ents(1..=3, 2, 10)).unwrap();
    wal.save(&HardState { commit: 5, ..hs }, &ents(4..=5, 2, 10))
        .unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.last_index(), 5);
    drop(wal);

    let (mut wal, replay) = Wal::open(&dir, ZERO, WalOptions::default()).unwrap();
    assert_eq!(replay.metadata, b"member-1/cluster-9");
    assert_eq!(wal.metadata(), b"member-1/cluster-9");
    assert_eq!(replay.hard_state, HardState { commit: 5, ..hs });
    assert_eq!(replay.entries, ents(1..=5, 2, 10));
    assert_eq!(replay.repaired_torn_tail, None);
    // Appending continues the chain.
    wal.save(&hs, &ents(6..=6, 2, 10)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, replay) = Wal::open(&dir, ZERO, WalOptions::default()).unwrap();
    assert_eq!(replay.entries, ents(1..=6, 2, 10));
    assert_eq!(replay.hard_state, hs);
}

#[test]
fn unsynced_saves_are_not_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut wal = Wal::create(&dir, b"m", small(1 << 16)).unwrap();
    wal.save(&HardState::default(), &ents(1..=2, 1, 8)).unwrap();
    wal.sync().unwrap();
    wal.save(&HardState::default(), &ents(3..=4, 1, 8)).unwrap();
    drop(wal); // a crash before sync
    let (_, replay) = Wal::open(&dir, ZERO, small(1 << 16)).unwrap();
    assert_eq!(replay.entries, ents(1..=2, 1, 8));
}

#[test]
fn create_refuses_a_non_empty_directory_and_open_refuses_a_second_opener() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::create(&dir, b"m", small(4096)).unwrap();
    assert!(matches!(
        Wal::create(&dir, b"m", small(4096)),
        Err(WalError::Exists(_))
    ));
    assert!(matches!(
        Wal::open(&dir, ZERO, small(4096)),
        Err(WalError::Locked(_))
    ));
    drop(wal);
    assert!(Wal::open(&dir, ZERO, small(4096)).is_ok());
    assert!(matches!(
        Wal::open(&tmp.path().join("empty-does-not-exist"), ZERO, small(4096)),
        Err(WalError::Io { .. })
    ));
}

#[test]
fn save_rejects_gaps_and_non_contiguous_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let mut wal = Wal::create(&tmp.path().join("wal"), b"m", small(4096)).unwrap();
    wal.save(&HardState::default(), &ents(1..=3, 1, 4)).unwrap();
    let gap = wal.save(&HardState::default(), &ents(5..=5, 1, 4));
    assert!(matches!(
        gap,
        Err(WalError::EntryIndex {
            got: 5,
            max_expected: 4
        })
    ));
    let mut holes = ents(4..=5, 1, 4);
    holes[1].index = 7;
    assert!(matches!(
        wal.save(&HardState::default(), &holes),
        Err(WalError::EntryIndex {
            got: 7,
            max_expected: 5
        })
    ));
    assert!(matches!(
        wal.save(&HardState::default(), &[ent(0, 1, 4)]),
        Err(WalError::EntryIndex { got: 0, .. })
    ));
    // A rejected batch framed nothing: the log continues at 4.
    wal.save(&HardState::default(), &ents(4..=4, 1, 4)).unwrap();
    assert_eq!(wal.last_index(), 4);
}

/// Writes entries 1..=4 synced, then entry 5 synced, and returns the segment path, the
/// bytes with all five, and where the fifth record starts and ends.
fn wal_with_last_record(dir: &Path) -> (PathBuf, Vec<u8>, usize, usize) {
    let mut wal = Wal::create(dir, b"meta", small(1 << 16)).unwrap();
    wal.save(
        &HardState {
            term: 1,
            vote: 1,
            commit: 2,
        },
        &ents(1..=4, 1, 40),
    )
    .unwrap();
    wal.sync().unwrap();
    let path = wal.segment_paths()[0].clone();
    wal.save(
        &HardState {
            term: 1,
            vote: 1,
            commit: 2,
        },
        &ents(5..=5, 1, 40),
    )
    .unwrap();
    wal.sync().unwrap();
    drop(wal);
    let bytes = fs::read(&path).unwrap();
    // The entry's data never ends in a zero byte, so this is the record's end.
    let end = used_len(&bytes);
    let start = end - (record::HEADER_LEN + 21 + 40);
    (path, bytes, start, end)
}

#[test]
fn torn_last_record_at_every_offset_recovers_earlier_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (path, bytes, start, end) = wal_with_last_record(&dir);
    for cut in start..end {
        for shorten in [false, true] {
            let mut torn = bytes.clone();
            if shorten {
                // The file itself ends mid-record (no preallocated zeros after it).
                torn.truncate(cut);
            } else {
                // The write stopped at `cut`; the preallocated zeros follow.
                torn[cut..end].fill(0);
            }
            fs::write(&path, &torn).unwrap();
            let (mut wal, replay) = Wal::open(&dir, ZERO, small(1 << 16))
                .unwrap_or_else(|e| panic!("cut at {cut} (shorten {shorten}): {e}"));
            assert_eq!(replay.entries, ents(1..=4, 1, 40), "cut at {cut}");
            assert_eq!(replay.hard_state.commit, 2);
            let expect_repair = if cut > start {
                Some((path.clone(), start as u64))
            } else {
                None
            };
            assert_eq!(replay.repaired_torn_tail, expect_repair, "cut at {cut}");
            // The repaired WAL takes appends and replays them.
            wal.save(&HardState::default(), &ents(5..=6, 2, 7)).unwrap();
            wal.sync().unwrap();
            drop(wal);
            let (_, replay) = Wal::open(&dir, ZERO, small(1 << 16)).unwrap();
            let mut want = ents(1..=4, 1, 40);
            want.extend(ents(5..=6, 2, 7));
            assert_eq!(replay.entries, want, "after repair at {cut}");
        }
    }
}

fn corrupt_at(r: Result<(Wal, skiff_storage::wal::Replay), WalError>) -> (PathBuf, u64, String) {
    match r {
        Err(WalError::Corrupt {
            path,
            offset,
            reason,
        }) => (path, offset, reason),
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("expected corruption, opened fine"),
    }
}

#[test]
fn flipped_bit_in_a_middle_record_names_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut wal = Wal::create(&dir, b"meta", small(1 << 16)).unwrap();
    let mut starts = Vec::new();
    let path = wal.segment_paths()[0].clone();
    for i in 1..=10 {
        starts.push(used_len(&fs::read(&path).unwrap()));
        wal.save(&HardState::default(), &[ent(i, 1, 30)]).unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    let good = fs::read(&path).unwrap();
    // Every bit of record 5 (entry index 5): header and payload.
    let (s, e) = (starts[4], starts[5]);
    for byte in s..e {
        for bit in 0..8u8 {
            let mut bad = good.clone();
            bad[byte] ^= 1 << bit;
            fs::write(&path, &bad).unwrap();
            let (p, offset, reason) = corrupt_at(Wal::open(&dir, ZERO, small(1 << 16)));
            assert_eq!(p, path);
            assert_eq!(offset, s as u64, "flip at byte {byte} bit {bit}: {reason}");
            let msg = WalError::Corrupt {
                path: p,
                offset,
                reason,
            }
            .to_string();
            assert!(
                msg.contains(&path.display().to_string()) && msg.contains(&format!("offset {s}")),
                "{msg}"
            );
        }
    }
}

#[test]
fn corruption_in_an_earlier_segment_is_an_error_even_in_its_last_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut wal = Wal::create(&dir, b"meta", small(512)).unwrap();
    for i in 1..=30 {
        wal.save(&HardState::default(), &[ent(i, 1, 50)]).unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    let segs = segments(&dir);
    assert!(segs.len() > 3);
    let victim = &segs[1];
    let mut bytes = fs::read(victim).unwrap();
    let last = bytes.len() - 3; // inside the segment's final record
    bytes[last] ^= 0x01;
    fs::write(victim, &bytes).unwrap();
    let (p, _, _) = corrupt_at(Wal::open(&dir, ZERO, small(512)));
    assert_eq!(&p, victim);
}

#[test]
fn non_zero_bytes_after_the_end_of_the_last_segment_are_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (path, mut bytes, _, end) = wal_with_last_record(&dir);
    bytes[end + 100] = 7;
    fs::write(&path, &bytes).unwrap();
    let (p, offset, reason) = corrupt_at(Wal::open(&dir, ZERO, small(1 << 16)));
    assert_eq!((p, offset), (path, end as u64));
    assert!(
        reason.contains(&format!("offset {}", end + 100)),
        "{reason}"
    );
}

#[test]
fn reopen_after_many_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = small(4096);
    let mut wal = Wal::create(&dir, b"meta", opts).unwrap();
    let mut hs = HardState {
        term: 1,
        vote: 2,
        commit: 0,
    };
    for batch in 0..100u64 {
        let first = batch * 20 + 1;
        hs.commit = first;
        wal.save(&hs, &ents(first..=first + 19, 1, 100)).unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    let n = segments(&dir).len();
    assert!(n > 50, "only {n} segments");
    let (mut wal, replay) = Wal::open(&dir, ZERO, opts).unwrap();
    assert_eq!(replay.entries, ents(1..=2000, 1, 100));
    assert_eq!(replay.hard_state, hs);
    assert_eq!(replay.metadata, b"meta");
    wal.save(&hs, &ents(2001..=2100, 1, 100)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, replay) = Wal::open(&dir, ZERO, opts).unwrap();
    assert_eq!(replay.entries.len(), 2100);
    assert!(segments(&dir).len() > n);
}

#[test]
fn a_missing_middle_segment_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut wal = Wal::create(&dir, b"meta", small(512)).unwrap();
    for i in 1..=30 {
        wal.save(&HardState::default(), &[ent(i, 1, 50)]).unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    let segs = segments(&dir);
    fs::remove_file(&segs[2]).unwrap();
    assert!(matches!(
        Wal::open(&dir, ZERO, small(512)),
        Err(WalError::BadSegments(_))
    ));
}

#[test]
fn a_segment_swapped_for_another_wals_breaks_the_crc_link() {
    let tmp = tempfile::tempdir().unwrap();
    let mk = |name: &str, len: usize| {
        let dir = tmp.path().join(name);
        let mut wal = Wal::create(&dir, b"meta", small(512)).unwrap();
        for i in 1..=30 {
            wal.save(&HardState::default(), &[ent(i, 1, len)]).unwrap();
            wal.sync().unwrap();
        }
        dir
    };
    let a = mk("a", 50);
    let b = mk("b", 51);
    let (sa, sb) = (segments(&a), segments(&b));
    // Same name (same seq, and index when the cuts line up) but another history.
    let i = (1..sa.len().min(sb.len()))
        .find(|i| sa[*i].file_name() == sb[*i].file_name())
        .expect("a segment with the same name");
    fs::copy(&sb[i], &sa[i]).unwrap();
    let (p, offset, reason) = corrupt_at(Wal::open(&a, ZERO, small(512)));
    assert_eq!((p, offset), (sa[i].clone(), 0));
    assert!(reason.contains("previous segment"), "{reason}");
}

#[test]
fn leftover_temp_segment_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut wal = Wal::create(&dir, b"meta", small(4096)).unwrap();
    wal.save(&HardState::default(), &ents(1..=3, 1, 10))
        .unwrap();
    wal.sync().unwrap();
    drop(wal);
    let tmpfile = dir.join("0000000000000001-0000000000000004.wal.tmp");
    fs::write(&tmpfile, b"half a header").unwrap();
    let (_, replay) = Wal::open(&dir, ZERO, small(4096)).unwrap();
    assert_eq!(replay.entries.len(), 3);
    assert!(!tmpfile.exists());
}

#[test]
fn replay_from_a_snapshot_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = small(2048);
    let mut wal = Wal::create(&dir, b"meta", opts).unwrap();
    wal.save(
        &HardState {
            term: 3,
            vote: 1,
            commit: 100,
        },
        &ents(1..=100, 3, 20),
    )
    .unwrap();
    wal.sync().unwrap();
    let snap = SnapshotMarker { index: 50, term: 3 };
    wal.save_snapshot(snap).unwrap();
    wal.save(
        &HardState {
            term: 3,
            vote: 1,
            commit: 120,
        },
        &ents(101..=120, 3, 20),
    )
    .unwrap();
    wal.sync().unwrap();
    drop(wal);

    let (_, replay) = Wal::open(&dir, snap, opts).unwrap();
    assert_eq!(replay.entries, ents(51..=120, 3, 20));
    assert_eq!(replay.hard_state.commit, 120);
    assert_eq!(replay.snapshot, snap);

    // A marker that was never saved, or with another term, is refused.
    let err = Wal::open(&dir, SnapshotMarker { index: 60, term: 3 }, opts).unwrap_err();
    assert!(matches!(err, WalError::SnapshotNotFound(_)), "{err}");
    let err = Wal::open(&dir, SnapshotMarker { index: 50, term: 2 }, opts).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::SnapshotMismatch {
                index: 50,
                expected: 2,
                found: 3
            }
        ),
        "{err}"
    );
    // Committed markers, for choosing the snapshot file.
    assert_eq!(Wal::valid_snapshot_markers(&dir).unwrap(), vec![ZERO, snap]);
}

#[test]
fn uncommitted_snapshot_markers_are_not_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut wal = Wal::create(&dir, b"meta", small(4096)).unwrap();
    wal.save(
        &HardState {
            term: 1,
            vote: 1,
            commit: 5,
        },
        &ents(1..=10, 1, 8),
    )
    .unwrap();
    wal.save_snapshot(SnapshotMarker { index: 5, term: 1 })
        .unwrap();
    wal.save_snapshot(SnapshotMarker { index: 8, term: 1 })
        .unwrap();
    drop(wal);
    assert_eq!(
        Wal::valid_snapshot_markers(&dir).unwrap(),
        vec![ZERO, SnapshotMarker { index: 5, term: 1 }]
    );
}

#[test]
fn snapshot_then_entries_after_it_replay() {
    // A follower installs a snapshot beyond its log and continues after it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut wal = Wal::create(&dir, b"meta", small(4096)).unwrap();
    wal.save(
        &HardState {
            term: 1,
            vote: 0,
            commit: 3,
        },
        &ents(1..=3, 1, 8),
    )
    .unwrap();
    wal.sync().unwrap();
    let snap = SnapshotMarker { index: 90, term: 4 };
    wal.save_snapshot(snap).unwrap();
    assert_eq!(wal.last_index(), 90);
    wal.save(
        &HardState {
            term: 4,
            vote: 0,
            commit: 92,
        },
        &ents(91..=92, 4, 8),
    )
    .unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (wal, replay) = Wal::open(&dir, snap, small(4096)).unwrap();
    assert_eq!(replay.entries, ents(91..=92, 4, 8));
    assert_eq!(wal.last_index(), 92);
}

#[test]
fn conflicting_suffix_is_replaced_on_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = small(256);
    let mut wal = Wal::create(&dir, b"meta", opts).unwrap();
    wal.save(
        &HardState {
            term: 1,
            vote: 1,
            commit: 4,
        },
        &ents(1..=10, 1, 30),
    )
    .unwrap();
    wal.sync().unwrap();
    // A new leader at term 2 overwrites from index 6; in a later segment by now.
    assert!(segments(&dir).len() > 1);
    wal.save(
        &HardState {
            term: 2,
            vote: 2,
            commit: 4,
        },
        &ents(6..=8, 2, 31),
    )
    .unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.last_index(), 8);
    // And once more, inside the same batch stream, from 8.
    wal.save(&HardState::default(), &ents(8..=9, 3, 32))
        .unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, replay) = Wal::open(&dir, ZERO, opts).unwrap();
    let mut want = ents(1..=5, 1, 30);
    want.extend(ents(6..=7, 2, 31));
    want.extend(ents(8..=9, 3, 32));
    assert_eq!(replay.entries, want);
    assert_eq!(
        replay.hard_state,
        HardState {
            term: 2,
            vote: 2,
            commit: 4
        }
    );
}

/// Builds a one-segment WAL by hand from framed records.
fn forge(dir: &Path, records: &[(RecordType, Vec<u8>)]) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let mut buf = Vec::new();
    let mut chain = 0;
    record::encode(&mut buf, &mut chain, RecordType::Crc, &0u32.to_le_bytes());
    for (t, p) in records {
        record::encode(&mut buf, &mut chain, *t, p);
    }
    buf.resize(buf.len() + 256, 0);
    let path = dir.join("0000000000000000-0000000000000000.wal");
    fs::write(&path, &buf).unwrap();
    path
}

fn marker_bytes(index: u64, term: u64) -> Vec<u8> {
    let mut v = index.to_le_bytes().to_vec();
    v.extend_from_slice(&term.to_le_bytes());
    v
}

#[test]
fn an_entry_index_gap_on_replay_is_corruption() {
    // CVE-2020-15112: an index that is not the next expected one must not be trusted.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let e1 = ent(1, 1, 4).encode().to_vec();
    let e3 = ent(3, 1, 4).encode().to_vec();
    let path = forge(
        &dir,
        &[
            (RecordType::Metadata, b"m".to_vec()),
            (RecordType::Snapshot, marker_bytes(0, 0)),
            (RecordType::Entry, e1.clone()),
            (RecordType::Entry, e3),
        ],
    );
    let offset_of_e3 = (9 + 4) + (9 + 1) + (9 + 16) + (9 + e1.len());
    let (p, offset, reason) = corrupt_at(Wal::open(&dir, ZERO, small(4096)));
    assert_eq!((p, offset), (path, offset_of_e3 as u64));
    assert!(reason.contains("gap"), "{reason}");

    // Index 0 and an entry far in the future are refused alike.
    let dir2 = tmp.path().join("wal2");
    forge(
        &dir2,
        &[
            (RecordType::Metadata, b"m".to_vec()),
            (RecordType::Snapshot, marker_bytes(0, 0)),
            (RecordType::Entry, ent(u64::MAX, 1, 4).encode().to_vec()),
        ],
    );
    corrupt_at(Wal::open(&dir2, ZERO, small(4096)));
}

#[test]
fn conflicting_metadata_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    forge(
        &dir,
        &[
            (RecordType::Metadata, b"one".to_vec()),
            (RecordType::Snapshot, marker_bytes(0, 0)),
            (RecordType::Metadata, b"two".to_vec()),
        ],
    );
    let (_, _, reason) = corrupt_at(Wal::open(&dir, ZERO, small(4096)));
    assert!(reason.contains("metadata"), "{reason}");
}

#[test]
fn release_to_removes_only_segments_a_snapshot_covers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = small(2048);
    let mut wal = Wal::create(&dir, b"meta", opts).unwrap();
    for i in 1..=500u64 {
        wal.save(
            &HardState {
                term: 1,
                vote: 1,
                commit: i,
            },
            &[ent(i, 1, 20)],
        )
        .unwrap();
        if i % 10 == 0 {
            wal.sync().unwrap();
        }
    }
    let before = segments(&dir);
    assert!(before.len() > 5);
    // No marker covers 300 yet.
    assert!(matches!(
        wal.release_to(300),
        Err(WalError::ReleaseBeyondSnapshot {
            index: 300,
            snapshot: 0
        })
    ));
    let snap = SnapshotMarker {
        index: 300,
        term: 1,
    };
    wal.save_snapshot(snap).unwrap();
    wal.release_to(300).unwrap();
    let after = segments(&dir);
    assert!(
        after.len() < before.len(),
        "{} -> {}",
        before.len(),
        after.len()
    );
    assert_eq!(after, wal.segment_paths());
    // The first kept segment starts at or before 300; the next one after it.
    let start_index = |p: &Path| {
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        u64::from_str_radix(name.split('-').nth(1).unwrap(), 16).unwrap()
    };
    assert!(start_index(&after[0]) <= 300);
    assert!(after.len() == 1 || start_index(&after[1]) > 300);
    wal.save(&HardState::default(), &ents(501..=510, 1, 20))
        .unwrap();
    wal.sync().unwrap();
    drop(wal);

    let (_, replay) = Wal::open(&dir, snap, opts).unwrap();
    assert_eq!(replay.entries, ents(301..=510, 1, 20));
    assert_eq!(replay.hard_state.commit, 500);
    // The history before the snapshot is gone.
    assert!(matches!(
        Wal::open(&dir, ZERO, opts),
        Err(WalError::SnapshotNotFound(_))
    ));
}

#[test]
fn release_keeping_leaves_the_newest_segments() {
    // etcd's --max-wals: released segments go only while more than `keep` remain.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = small(2048);
    let mut wal = Wal::create(&dir, b"meta", opts).unwrap();
    for i in 1..=500u64 {
        let hs = HardState {
            term: 1,
            vote: 1,
            commit: i,
        };
        wal.save(&hs, &[ent(i, 1, 20)]).unwrap();
        if i % 10 == 0 {
            // Segments are cut at a sync.
            wal.sync().unwrap();
        }
    }
    let before = segments(&dir);
    assert!(before.len() > 6, "{}", before.len());
    wal.save_snapshot(SnapshotMarker {
        index: 490,
        term: 1,
    })
    .unwrap();
    wal.release_keeping(490, 4).unwrap();
    let after = segments(&dir);
    assert_eq!(after.len(), 4);
    assert_eq!(after[..], before[before.len() - 4..]);
    // Fewer than `keep` left to release: nothing more goes.
    wal.release_keeping(490, 4).unwrap();
    assert_eq!(segments(&dir).len(), 4);
    wal.release_keeping(490, 1).unwrap();
    assert!(segments(&dir).len() < 4);
}

#[test]
fn torn_first_record_of_a_freshly_cut_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let opts = small(1024);
    let mut wal = Wal::create(&dir, b"meta", opts).unwrap();
    let mut i = 0;
    // Fill until a cut has just happened.
    while wal.segment_paths().len() < 3 {
        i += 1;
        wal.save(
            &HardState {
                term: 1,
                vote: 1,
                commit: i,
            },
            &[ent(i, 1, 60)],
        )
        .unwrap();
        wal.sync().unwrap();
    }
    let last = wal.segment_paths().last().unwrap().clone();
    let header_end = used_len(&fs::read(&last).unwrap());
    wal.save(&HardState::default(), &[ent(i + 1, 1, 60)])
        .unwrap();
    wal.sync().unwrap();
    drop(wal);
    let mut bytes = fs::read(&last).unwrap();
    let end = used_len(&bytes);
    assert!(end > header_end);
    bytes[header_end + 20..end].fill(0);
    fs::write(&last, &bytes).unwrap();
    let (_, replay) = Wal::open(&dir, ZERO, opts).unwrap();
    assert_eq!(replay.entries.len() as u64, i);
    assert_eq!(replay.hard_state.commit, i);
    assert_eq!(replay.repaired_torn_tail.map(|t| t.0), Some(last));
}

#[test]
fn a_corrupted_length_that_swallows_later_records_is_not_a_torn_tail() {
    // The length of a middle record of the last segment grows so that the record
    // appears to end inside the zeros: only the valid records after it tell this
    // apart from a torn write.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut wal = Wal::create(&dir, b"meta", small(1 << 16)).unwrap();
    let path = wal.segment_paths()[0].clone();
    let mut starts = Vec::new();
    for i in 1..=6 {
        wal.save(&HardState::default(), &[ent(i, 1, 30)]).unwrap();
        wal.sync().unwrap();
        starts.push(used_len(&fs::read(&path).unwrap()));
    }
    drop(wal);
    let mut bytes = fs::read(&path).unwrap();
    let victim = starts[2]; // the record of entry 4
    bytes[victim + 1] ^= 0x04; // length += 1024: its claimed end lies in the zeros
    fs::write(&path, &bytes).unwrap();
    let (p, offset, reason) = corrupt_at(Wal::open(&dir, ZERO, small(1 << 16)));
    assert_eq!((p, offset), (path, victim as u64));
    assert!(reason.contains("valid record"), "{reason}");
}

#[test]
fn a_snapshot_file_without_its_wal_marker_is_not_used() {
    // The crash-safe order: snapshot file, then WAL marker, then release. A crash
    // between the first two leaves a snapshot the WAL cannot replay from.
    use skiff_raft::{ConfState, SnapshotMetadata};
    use skiff_storage::snap::Snapshotter;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let snaps = Snapshotter::new(tmp.path().join("snap")).unwrap();
    let mut wal = Wal::create(&dir, b"meta", small(1024)).unwrap();
    wal.save(
        &HardState {
            term: 2,
            vote: 1,
            commit: 40,
        },
        &ents(1..=40, 2, 16),
    )
    .unwrap();
    wal.sync().unwrap();
    let meta = |index| SnapshotMetadata {
        conf_state: ConfState {
            voters: vec![1],
            ..Default::default()
        },
        index,
        term: 2,
    };
    let f = snaps.save(&meta(20), &mut &b"state at 20"[..]).unwrap();
    wal.save_snapshot(f.marker()).unwrap();
    wal.release_to(20).unwrap();
    // Crash after the second snapshot file, before its marker.
    snaps.save(&meta(30), &mut &b"state at 30"[..]).unwrap();
    drop(wal);

    let markers = Wal::valid_snapshot_markers(&dir).unwrap();
    let chosen = snaps.load_newest_available(&markers).unwrap().unwrap();
    assert_eq!(chosen.metadata.index, 20);
    assert_eq!(chosen.read_payload().unwrap(), b"state at 20");
    let (_, replay) = Wal::open(&dir, chosen.marker(), small(1024)).unwrap();
    assert_eq!(replay.entries, ents(21..=40, 2, 16));
}
