//! The WAL decoder fed arbitrary bytes: never panics, and never makes an allocation
//! larger than a small multiple of its input (a forged length must not make it
//! allocate what the length claims: etcd CVE-2020-15106).
//!
//! Deterministic (xorshift with fixed seeds) so a failure reproduces. Its own test
//! binary, because it installs a counting global allocator.

use std::fs;

use bytes::Bytes;
use skiff_raft::{Encode, Entry, EntryType, HardState};
use skiff_storage::wal::record::{self, Item, RecordType, Scanner};
use skiff_storage::wal::{SnapshotMarker, Wal, WalError, WalOptions};

#[path = "common/fuzz.rs"]
mod fuzz;
use fuzz::Rng;

/// A valid segment: header, then entries, hard states and markers.
fn valid_segment(rng: &mut Rng) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chain = 0;
    record::encode(&mut buf, &mut chain, RecordType::Crc, &0u32.to_le_bytes());
    record::encode(&mut buf, &mut chain, RecordType::Metadata, b"meta");
    let mut marker = Vec::new();
    marker.extend_from_slice(&0u64.to_le_bytes());
    marker.extend_from_slice(&0u64.to_le_bytes());
    record::encode(&mut buf, &mut chain, RecordType::Snapshot, &marker);
    for i in 1..=(rng.below(8) + 1) {
        let e = Entry {
            term: 1,
            index: i,
            entry_type: EntryType::Normal,
            data: Bytes::from(rng.bytes(40)),
        };
        record::encode(&mut buf, &mut chain, RecordType::Entry, &e.encode());
        if rng.below(3) == 0 {
            let hs = HardState {
                term: 1,
                vote: 1,
                commit: i,
            };
            record::encode(&mut buf, &mut chain, RecordType::HardState, &hs.encode());
        }
    }
    buf
}

/// Properly framed and chained records with random types and payloads, so the raft
/// decoders behind the framing get garbage too.
fn framed_garbage(rng: &mut Rng) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chain = 0;
    record::encode(&mut buf, &mut chain, RecordType::Crc, &0u32.to_le_bytes());
    record::encode(&mut buf, &mut chain, RecordType::Metadata, b"meta");
    record::encode(&mut buf, &mut chain, RecordType::Snapshot, &[0; 16]);
    let types = [
        RecordType::Entry,
        RecordType::HardState,
        RecordType::Snapshot,
        RecordType::Metadata,
        RecordType::Crc,
    ];
    for _ in 0..rng.below(6) + 1 {
        let t = types[rng.below(types.len() as u64) as usize];
        let mut payload = rng.bytes(48);
        if t == RecordType::Entry && payload.len() >= 25 && rng.below(2) == 0 {
            // A plausible header with a forged data length.
            payload[8..16].copy_from_slice(&1u64.to_le_bytes());
            payload[16] = 0;
            payload[17..21].copy_from_slice(&u32::MAX.to_le_bytes());
        }
        record::encode(&mut buf, &mut chain, t, &payload);
    }
    buf
}

fn mutate(rng: &mut Rng, v: &mut Vec<u8>) {
    match rng.below(4) {
        0 => {
            for _ in 0..rng.below(4) + 1 {
                let i = rng.below(v.len() as u64) as usize;
                v[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            // A forged length field somewhere.
            let i = rng.below(v.len().saturating_sub(4) as u64 + 1) as usize;
            let len =
                [u32::MAX, (record::MAX_RECORD_LEN as u32) + 1, 1 << 30][rng.below(3) as usize];
            let end = (i + 4).min(v.len());
            v[i..end].copy_from_slice(&len.to_le_bytes()[..end - i]);
        }
        2 => v.truncate(rng.below(v.len() as u64) as usize),
        _ => {
            let i = rng.below(v.len() as u64) as usize;
            v[i] = rng.next() as u8;
        }
    }
}

fn scan_all(data: &[u8]) -> usize {
    let mut s = Scanner::new(data, 0);
    let mut n = 0;
    while let Item::Record { .. } = s.next_item() {
        n += 1;
    }
    n
}

#[test]
fn scanner_and_open_never_panic_nor_over_allocate() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    fuzz::track(true);

    // The scanner alone: pure garbage and mutated valid segments, no allocation at all.
    for round in 0..20_000 {
        let mut input = if round % 2 == 0 {
            rng.bytes(128)
        } else {
            valid_segment(&mut rng)
        };
        if round % 2 == 1 {
            mutate(&mut rng, &mut input);
        }
        fuzz::reset();
        let n = scan_all(&input);
        let _ = record::find_chained_record(&input, 0, input.len(), 7);
        assert_eq!(fuzz::largest(), 0, "round {round}: scanner allocated");
        assert!(n <= input.len() / record::HEADER_LEN);
    }

    // Whole opens of a WAL directory holding one mangled segment.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    fs::create_dir_all(&dir).unwrap();
    let seg = dir.join("0000000000000000-0000000000000000.wal");
    let (mut ok, mut corrupt) = (0, 0);
    for round in 0..1_500 {
        let mut input = if round % 3 == 0 {
            framed_garbage(&mut rng)
        } else {
            valid_segment(&mut rng)
        };
        if round % 3 != 0 || rng.below(2) == 0 {
            mutate(&mut rng, &mut input);
        }
        // Preallocated zeros after the records, as on disk.
        input.resize(input.len() + rng.below(64) as usize, 0);
        fs::write(&seg, &input).unwrap();
        let file_len = input.len();
        fuzz::reset();
        let result = Wal::open(
            &dir,
            SnapshotMarker::default(),
            WalOptions { segment_size: 4096 },
        );
        let largest = fuzz::largest();
        // The counter is live: reading the segment allocates its size.
        assert!(largest >= file_len, "round {round}: counter saw {largest}");
        // Reading the file, the entries vector and paths: bounded by the input, never
        // by a length field (which would mean >= 1 GiB here).
        assert!(
            largest <= 16 * file_len + 64 * 1024,
            "round {round}: an allocation of {largest} bytes for a {file_len}-byte file"
        );
        match result {
            Ok(_) => ok += 1,
            Err(
                WalError::Corrupt { .. }
                | WalError::SnapshotNotFound(_)
                | WalError::SnapshotMismatch { .. },
            ) => corrupt += 1,
            Err(e) => panic!("round {round}: unexpected error {e}"),
        }
    }
    // Both outcomes were exercised.
    assert!(ok > 100 && corrupt > 100, "ok {ok}, corrupt {corrupt}");
}
