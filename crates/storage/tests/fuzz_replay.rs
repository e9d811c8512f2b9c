//! Fuzz targets for the decoders that read the disk, replayed from a committed corpus
//! as an ordinary stable test: `wal_segment` (a WAL directory holding one segment,
//! opened and replayed), `snap_file` (a snapshot file verified and its payload read)
//! and `backend_dump` (a snapshot payload, the backend dump, restored into a backend
//! file). Each target must never panic and never make an allocation larger than a
//! small multiple of its input plus the fixed cost of the target itself (a forged
//! length must not make it allocate what the length claims: etcd CVE-2020-15106).
//!
//! The corpus is `tests/corpus/<target>/`: each file is run as it is, then mutated
//! (bit flips, forged lengths, truncations, splices; xorshift with fixed seeds, so a
//! failure reproduces) until the target's time budget ([`budget`]) is spent. A fuzzer
//! (cargo-fuzz, AFL) can grow the corpus with files it finds; the replay runs whatever
//! is there. `cargo test -p skiff-storage --test fuzz_replay -- --ignored write_corpus`
//! rewrites the seed files from the current encoders.
//!
//! Its own test binary, because it installs a counting global allocator.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_raft::{ConfState, Encode, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use skiff_storage::backend::{Backend, BackendConfig, Table};
use skiff_storage::snap::Snapshotter;
use skiff_storage::wal::record::{self, RecordType};
use skiff_storage::wal::{SnapshotMarker, Wal, WalOptions};

#[path = "common/fuzz.rs"]
mod fuzz;
use fuzz::Rng;

/// How long each target's replay (corpus and mutations) may run: 2 s, or
/// `SKIFF_FUZZ_SECS` (a longer run is a fuzzing session on stable; `SKIFF_FUZZ_SEED`
/// then varies the mutations).
fn budget() -> Duration {
    let secs = std::env::var("SKIFF_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    Duration::from_secs(secs)
}

fn seed_offset() -> u64 {
    std::env::var("SKIFF_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target)
}

/// The corpus files of `target`, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("corpus of {target}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let out: Vec<_> = files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    assert!(!out.is_empty(), "the corpus of {target} is empty");
    out
}

/// One mutation of `v` (never empty afterwards unless it was).
fn mutate(rng: &mut Rng, v: &mut Vec<u8>, others: &[(String, Vec<u8>)]) {
    if v.is_empty() {
        v.extend(rng.bytes(64));
        return;
    }
    match rng.below(6) {
        0 => {
            for _ in 0..rng.below(4) + 1 {
                let i = rng.below(v.len() as u64) as usize;
                v[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            // A forged length (u32 or u64, little-endian) somewhere.
            let forged: [u64; 4] = [u64::MAX, u32::MAX as u64, 1 << 30, 1 << 40];
            let f = forged[rng.below(4) as usize].to_le_bytes();
            let width = if rng.below(2) == 0 { 4 } else { 8 };
            let i = rng.below(v.len() as u64) as usize;
            let end = (i + width).min(v.len());
            v[i..end].copy_from_slice(&f[..end - i]);
        }
        2 => v.truncate(rng.below(v.len() as u64) as usize),
        3 => {
            // Splice: our head, another input's tail.
            let (_, o) = &others[rng.below(others.len() as u64) as usize];
            let cut = rng.below(v.len() as u64) as usize;
            let from = rng.below(o.len() as u64 + 1) as usize;
            v.truncate(cut);
            v.extend_from_slice(&o[from.min(o.len())..]);
        }
        4 => {
            let i = rng.below(v.len() as u64 + 1) as usize;
            let extra = rng.bytes(16);
            v.splice(i..i, extra);
        }
        _ => {
            let i = rng.below(v.len() as u64) as usize;
            v[i] = rng.next() as u8;
        }
    }
}

/// What a target made of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Refused,
}

/// Counts the allocations of `f` (the decoder), not of the target's file setup.
fn tracked<T>(f: impl FnOnce() -> T) -> T {
    fuzz::track(true);
    let out = f();
    fuzz::track(false);
    out
}

/// Runs `target` over the corpus and mutations of it within [`budget`], checking the
/// allocation bound (`fixed` + 16 x the input); returns (accepted, refused) counts.
fn replay(
    name: &str,
    seed: u64,
    fixed: usize,
    mut target: impl FnMut(&[u8]) -> Outcome,
) -> (usize, usize) {
    // The allocation counter is one for the process: one target at a time.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let files = corpus(name);
    let seed = seed ^ seed_offset();
    let mut rng = Rng(seed);
    let (mut accepted, mut refused) = (0, 0);
    let mut run = |input: &[u8], what: &dyn Fn() -> String| {
        fuzz::reset();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(input)))
            .unwrap_or_else(|panic| {
                fuzz::track(false);
                let keep = std::env::temp_dir().join(format!("skiff-fuzz-{name}-failure"));
                let _ = fs::write(&keep, input);
                eprintln!(
                    "{name}: panicked on {}; input written to {}",
                    what(),
                    keep.display()
                );
                std::panic::resume_unwind(panic)
            });
        let largest = fuzz::largest();
        if largest > fixed + 16 * input.len() {
            // Kept for a rerun and for the corpus once fixed.
            let keep = std::env::temp_dir().join(format!("skiff-fuzz-{name}-failure"));
            let _ = fs::write(&keep, input);
            eprintln!("{name}: failing input written to {}", keep.display());
        }
        assert!(
            largest <= fixed + 16 * input.len(),
            "{name}: an allocation of {largest} bytes for {} input bytes ({})",
            input.len(),
            what()
        );
        match outcome {
            Outcome::Accepted => accepted += 1,
            Outcome::Refused => refused += 1,
        }
    };
    for (file, data) in &files {
        run(data, &|| format!("corpus file {file}"));
    }
    let (start, budget) = (Instant::now(), budget());
    let mut round = 0u64;
    while start.elapsed() < budget {
        let (file, data) = &files[rng.below(files.len() as u64) as usize];
        let mut input = data.clone();
        for _ in 0..rng.below(3) + 1 {
            mutate(&mut rng, &mut input, &files);
        }
        run(&input, &|| {
            format!("round {round} from {file}, seed {seed:#x}")
        });
        round += 1;
    }
    eprintln!("{name}: {accepted} accepted, {refused} refused in {round} mutated rounds");
    (accepted, refused)
}

fn wal_target(dir: &Path) -> impl FnMut(&[u8]) -> Outcome + '_ {
    move |input| {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("0000000000000000-0000000000000000.wal"), input).unwrap();
        match tracked(|| {
            Wal::open(
                dir,
                SnapshotMarker::default(),
                WalOptions { segment_size: 4096 },
            )
        }) {
            Ok(_) => Outcome::Accepted,
            Err(_) => Outcome::Refused,
        }
    }
}

fn snap_target(dir: &Path) -> impl FnMut(&[u8]) -> Outcome + '_ {
    move |input| {
        let path = dir.join("0000000000000001-0000000000000005.snap");
        fs::write(&path, input).unwrap();
        match tracked(|| Snapshotter::verify(&path).and_then(|f| f.read_payload())) {
            Ok(_) => Outcome::Accepted,
            Err(_) => Outcome::Refused,
        }
    }
}

fn dump_target(dir: &Path) -> impl FnMut(&[u8]) -> Outcome + '_ {
    move |input| {
        let path = dir.join("restored.db");
        let _ = fs::remove_file(&path);
        match tracked(|| Backend::restore(&path, input)) {
            Ok(_) => Outcome::Accepted,
            Err(_) => Outcome::Refused,
        }
    }
}

/// Refused inputs are the norm; accepted ones show the target gets past its framing.
fn assert_both(name: &str, (accepted, refused): (usize, usize)) {
    assert!(
        accepted > 0 && refused > 0,
        "{name}: {accepted} accepted, {refused} refused"
    );
}

#[test]
fn wal_segment_corpus_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    // Reading the segment, the entries and paths, bounded by the input, and the
    // writer's 1 MiB buffer for the tail segment (fixed).
    let counts = replay("wal_segment", 0x5EED_0001, 3 << 19, wal_target(&dir));
    assert_both("wal_segment", counts);
}

#[test]
fn snap_file_corpus_replays() {
    let tmp = tempfile::tempdir().unwrap();
    // The readers' buffers (8 KiB) and the metadata, bounded by the input.
    let counts = replay("snap_file", 0x5EED_0002, 64 * 1024, snap_target(tmp.path()));
    assert_both("snap_file", counts);
}

#[test]
fn backend_dump_corpus_replays() {
    let tmp = tempfile::tempdir().unwrap();
    // redb's own structures for a new file (measured: well under 4 MiB), never a
    // dump's length fields.
    let counts = replay(
        "backend_dump",
        0x5EED_0003,
        4 << 20,
        dump_target(tmp.path()),
    );
    assert_both("backend_dump", counts);
}

// ---- the seeds ----

fn valid_segment(entries: u64, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chain = 0;
    record::encode(&mut buf, &mut chain, RecordType::Crc, &0u32.to_le_bytes());
    record::encode(&mut buf, &mut chain, RecordType::Metadata, b"meta");
    record::encode(&mut buf, &mut chain, RecordType::Snapshot, &[0; 16]);
    for i in 1..=entries {
        let e = Entry {
            term: 1,
            index: i,
            entry_type: if i % 3 == 0 {
                EntryType::ConfChange
            } else {
                EntryType::Normal
            },
            data: Bytes::copy_from_slice(payload),
        };
        record::encode(&mut buf, &mut chain, RecordType::Entry, &e.encode());
        let hs = HardState {
            term: 1,
            vote: 1,
            commit: i,
        };
        record::encode(&mut buf, &mut chain, RecordType::HardState, &hs.encode());
    }
    buf
}

/// Rewrites the seed corpus from the current encoders (run by hand when a format
/// changes; the replay reads whatever the directories hold).
#[test]
#[ignore]
fn write_corpus() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let d = corpus_dir(target);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(name), data).unwrap();
    };
    // WAL segments: empty, a few entries, a forged entry length, preallocated zeros.
    write("wal_segment", "header-only", &valid_segment(0, b""));
    write("wal_segment", "entries", &valid_segment(5, b"value"));
    let mut zeros = valid_segment(2, b"x");
    zeros.resize(zeros.len() + 64, 0);
    write("wal_segment", "preallocated-tail", &zeros);
    let mut forged = Vec::new();
    let mut chain = 0;
    record::encode(
        &mut forged,
        &mut chain,
        RecordType::Crc,
        &0u32.to_le_bytes(),
    );
    record::encode(&mut forged, &mut chain, RecordType::Metadata, b"meta");
    record::encode(&mut forged, &mut chain, RecordType::Snapshot, &[0; 16]);
    let mut e = Entry {
        term: 1,
        index: 1,
        entry_type: EntryType::Normal,
        data: Bytes::from_static(b"abcd"),
    }
    .encode()
    .to_vec();
    e[17..21].copy_from_slice(&u32::MAX.to_le_bytes());
    record::encode(&mut forged, &mut chain, RecordType::Entry, &e);
    write("wal_segment", "forged-entry-length", &forged);

    // Snapshot files: small payloads, a conf state with members.
    let tmp = tempfile::tempdir().unwrap();
    let snaps = Snapshotter::new(tmp.path()).unwrap();
    for (name, payload, voters) in [
        ("empty-payload", &b""[..], vec![1]),
        (
            "small-payload",
            &b"a backend dump would be here"[..],
            vec![1, 2, 3],
        ),
    ] {
        let snap = Snapshot {
            data: Bytes::copy_from_slice(payload),
            metadata: SnapshotMetadata {
                conf_state: ConfState {
                    voters,
                    learners: vec![4],
                    ..Default::default()
                },
                index: 5,
                term: 1,
            },
        };
        let f = snaps.save_snapshot(&snap).unwrap();
        write("snap_file", name, &fs::read(&f.path).unwrap());
        fs::remove_file(&f.path).unwrap();
    }

    // Backend dumps: an empty backend, and one with rows in several tables.
    for (name, rows) in [("empty", 0usize), ("rows", 6)] {
        let path = tmp.path().join(format!("{name}.db"));
        let b = Backend::open(
            &path,
            BackendConfig {
                cache_size: 1 << 20,
                ..Default::default()
            },
        )
        .unwrap();
        let key_rows: Vec<_> = (0..rows)
            .map(|i| {
                (
                    format!("k{i}").into_bytes(),
                    Some(format!("v{i}").into_bytes()),
                )
            })
            .collect();
        b.write_rows(Table::Key, &key_rows).unwrap();
        if rows > 0 {
            b.write_rows(Table::Lease, &[(b"l1".to_vec(), Some(b"lease".to_vec()))])
                .unwrap();
        }
        let mut dump = Vec::new();
        b.dump(&mut dump).unwrap();
        write("backend_dump", name, &dump);
    }
}
