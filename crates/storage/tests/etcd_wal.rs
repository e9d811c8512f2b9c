//! etcd's WAL reader fed well-formed segments (framing, padding, the CRC chain across
//! segments, preallocated zeros), torn tails, and damage: flipped bytes, cut segments and
//! a 10 GB length field are refused with an error naming the file and offset (or, at
//! the very end of the last segment, reported as torn), never a panic, and no
//! allocation grows past the segment's own size.
//!
//! Deterministic (xorshift with fixed seeds). Its own test binary, because it installs
//! a counting global allocator.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::path::Path;

use skiff_storage::etcd_wal::{self, kind, EtcdWalError};

#[path = "common/fuzz.rs"]
mod fuzz;
use fuzz::Rng;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A `walpb.Record` framed as etcd frames it.
fn frame(kind: i64, crc: u32, data: &[u8]) -> Vec<u8> {
    let mut rec = Vec::new();
    varint(&mut rec, 1 << 3);
    varint(&mut rec, kind as u64);
    varint(&mut rec, 2 << 3);
    varint(&mut rec, u64::from(crc));
    if !data.is_empty() {
        varint(&mut rec, 3 << 3 | 2);
        varint(&mut rec, data.len() as u64);
        rec.extend_from_slice(data);
    }
    let pad = (8 - rec.len() % 8) % 8;
    let mut field = rec.len() as u64;
    if pad != 0 {
        field |= (0x80 | pad as u64) << 56;
    }
    let mut out = field.to_le_bytes().to_vec();
    out.extend_from_slice(&rec);
    out.resize(out.len() + pad, 0);
    out
}

/// Writes `segments` segments of random records into `dir`; returns (kind, data) of
/// every non-CRC record in order.
fn write_wal(dir: &Path, rng: &mut Rng, segments: usize) -> Records {
    let mut crc = 0u32;
    let mut written = Vec::new();
    for seg in 0..segments {
        let mut bytes = frame(kind::CRC, crc, &[]);
        if seg == 0 {
            let meta = b"metadata".to_vec();
            crc = crc32c::crc32c_append(crc, &meta);
            bytes.extend(frame(kind::METADATA, crc, &meta));
            written.push((kind::METADATA, meta));
        }
        for _ in 0..1 + rng.below(40) {
            let k = [kind::ENTRY, kind::STATE, kind::SNAPSHOT][rng.below(3) as usize];
            let max = if rng.below(20) == 0 { 5000 } else { 60 };
            let len = rng.below(max) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            crc = crc32c::crc32c_append(crc, &data);
            bytes.extend(frame(k, crc, &data));
            written.push((k, data));
        }
        // Preallocated space.
        bytes.resize(bytes.len() + rng.below(3) as usize * 4096, 0);
        std::fs::write(
            dir.join(format!("{seg:016x}-{:016x}.wal", seg * 100)),
            bytes,
        )
        .unwrap();
    }
    written
}

/// (kind, data) of records.
type Records = Vec<(i64, Vec<u8>)>;

fn read(dir: &Path) -> Result<(Records, etcd_wal::ReadEnd), EtcdWalError> {
    let mut got = Vec::new();
    let end = etcd_wal::read_dir(dir, &mut |r| {
        if r.kind != kind::CRC {
            got.push((r.kind, r.data));
        }
        Ok(())
    })?;
    Ok((got, end))
}

#[test]
fn segments_read_back_in_order_with_the_crc_chain() {
    for seed in 1..=20u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let n = 1 + rng.below(4) as usize;
        let written = write_wal(dir.path(), &mut rng, n);
        let (got, end) = read(dir.path()).unwrap();
        assert_eq!(got, written, "seed {seed}");
        assert_eq!(end.torn_at, None);
    }
}

#[test]
fn damage_is_refused_with_file_and_offset_and_bounded_allocation() {
    let mut rng = Rng(4242);
    let mut refused = 0;
    for case in 0..300 {
        let dir = tempfile::tempdir().unwrap();
        let written = write_wal(dir.path(), &mut rng, 2);
        let segs = etcd_wal::segments(dir.path()).unwrap();
        let victim = &segs[case % 2];
        let mut bytes = std::fs::read(victim).unwrap();
        match case % 3 {
            // A flipped bit anywhere.
            0 => {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            // A cut segment.
            1 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
            // A 10 GB length field on some record.
            _ => bytes[..8].copy_from_slice(&(10u64 << 30).to_le_bytes()),
        }
        std::fs::write(victim, &bytes).unwrap();
        fuzz::reset();
        fuzz::track(true);
        let result = read(dir.path());
        fuzz::track(false);
        let largest = fuzz::largest();
        assert!(
            largest <= bytes.len().max(written.len() * 64) + 64 * 1024,
            "case {case}: an allocation of {largest} bytes for a {}-byte segment",
            bytes.len()
        );
        match result {
            Err(e) => {
                refused += 1;
                let s = e.to_string();
                assert!(s.contains(".wal"), "case {case}: {s}");
                assert!(s.contains("at byte"), "case {case}: {s}");
            }
            // Damage can only go unnoticed as a torn tail of the last segment, or in
            // padding or preallocated zeros (the records are then all there).
            Ok((got, end)) => {
                if end.torn_at.is_none() {
                    assert_eq!(got, written, "case {case}: damage changed records silently");
                } else {
                    assert!(written.starts_with(&got), "case {case}");
                }
            }
        }
    }
    assert!(
        refused > 100,
        "only {refused} of 300 damaged WALs were refused"
    );
}
