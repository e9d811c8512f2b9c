//! WAL throughput: appends/s and fsyncs/s with 256-byte entries, one `sync` per batch,
//! at batch sizes 1 and 256, with etcd's 64 MiB segments; then the time to replay
//! what was written (recovery).
//!
//! `cargo bench -p skiff-storage --bench wal`. The directory defaults to the system
//! temp dir; set `SKIFF_BENCH_DIR` to measure another disk (a tmpfs makes fsync free
//! and the figures meaningless). `SKIFF_BENCH_SECS` sets the time per batch size.

use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_raft::{Entry, EntryType, HardState};
use skiff_storage::wal::{SnapshotMarker, Wal, WalOptions};

const ENTRY_BYTES: usize = 256;

/// Entries and syncs done, time taken, the WAL's directory, and a latency summary.
fn run(batch: usize, secs: f64) -> (u64, u64, Duration, tempfile::TempDir, String) {
    let base = std::env::var_os("SKIFF_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(&base).expect("bench directory");
    let mut wal =
        Wal::create(&tmp.path().join("wal"), b"bench", WalOptions::default()).expect("create WAL");
    let data = Bytes::from(vec![0xA5u8; ENTRY_BYTES]);
    let mut index = 0u64;
    let mut syncs = 0u64;
    let mut segments = 1;
    let (mut slowest, mut slowest_cut) = (Duration::ZERO, Duration::ZERO);
    let mut entries = Vec::with_capacity(batch);
    let started = Instant::now();
    let budget = Duration::from_secs_f64(secs);
    while started.elapsed() < budget {
        entries.clear();
        for _ in 0..batch {
            index += 1;
            entries.push(Entry {
                term: 1,
                index,
                entry_type: EntryType::Normal,
                data: data.clone(),
            });
        }
        let hs = HardState {
            term: 1,
            vote: 1,
            commit: index,
        };
        let t = Instant::now();
        wal.save(&hs, &entries).expect("save");
        wal.sync().expect("sync");
        let took = t.elapsed();
        if wal.segment_paths().len() > segments {
            segments = wal.segment_paths().len();
            slowest_cut = slowest_cut.max(took);
        } else {
            slowest = slowest.max(took);
        }
        syncs += 1;
    }
    let elapsed = started.elapsed();
    let cuts = format!(
        "slowest sync {:.2} ms; slowest sync that cut a segment {:.2} ms ({} cuts)",
        slowest.as_secs_f64() * 1e3,
        slowest_cut.as_secs_f64() * 1e3,
        segments - 1
    );
    (index, syncs, elapsed, tmp, cuts)
}

fn main() {
    let secs: f64 = std::env::var("SKIFF_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let dir = std::env::var("SKIFF_BENCH_DIR")
        .unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    println!(
        "wal bench: {ENTRY_BYTES}-byte entries, 64 MiB segments, one fdatasync per batch, \
         {secs} s per batch size, dir {dir}"
    );
    for batch in [1usize, 256] {
        let (appends, syncs, took, tmp, cuts) = run(batch, secs);
        let t = took.as_secs_f64();
        println!(
            "batch {batch:>3}: {:>10.0} appends/s  {:>8.0} fsyncs/s  ({appends} entries, \
             {syncs} syncs, {:.1} MB/s, mean sync+write {:.3} ms)",
            appends as f64 / t,
            syncs as f64 / t,
            (appends as f64 * ENTRY_BYTES as f64) / t / 1e6,
            t * 1e3 / syncs as f64
        );
        println!("           {cuts}");
        // Recovery: replay everything just written (from the empty snapshot).
        let started = Instant::now();
        let (_, replay) = Wal::open(
            &tmp.path().join("wal"),
            SnapshotMarker::default(),
            WalOptions::default(),
        )
        .expect("reopen");
        let took = started.elapsed().as_secs_f64();
        assert_eq!(replay.entries.len() as u64, appends);
        println!(
            "           replay of {appends} entries: {took:.3} s ({:.0} entries/s)",
            appends as f64 / took
        );
    }
}
