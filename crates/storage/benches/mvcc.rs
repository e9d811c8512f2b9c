//! MVCC storage benchmark: put throughput (applies/s), range latency with N keys loaded,
//! and the memory (RSS) those keys take.
//!
//! `cargo bench -p skiff-storage --bench mvcc -- [--keys N] [--key-size B]
//! [--value-size B] [--cache-mib M]` (defaults: 1,000,000 keys of 8 B with 256 B values,
//! 16 MiB redb cache). Run once per key size: RSS does not shrink within a process.
//! `DURABLE_MS=N` sets the backend's durable-commit interval (default 250).

use std::time::{Duration, Instant};

use skiff_storage::backend::BackendConfig;
use skiff_storage::mvcc::*;

fn rss_bytes() -> u64 {
    // /proc/self/statm: size resident ... in pages.
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn key(i: u64, size: usize) -> Vec<u8> {
    let mut k = format!("{i:08}").into_bytes();
    k.resize(size.max(8), b'_');
    k
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

struct Args {
    keys: u64,
    key_size: usize,
    value_size: usize,
    cache_mib: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        keys: 1_000_000,
        key_size: 8,
        value_size: 256,
        cache_mib: 16,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let val = argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (argv[i].as_str(), val) {
            ("--keys", Some(v)) => a.keys = v,
            ("--key-size", Some(v)) => a.key_size = v as usize,
            ("--value-size", Some(v)) => a.value_size = v as usize,
            ("--cache-mib", Some(v)) => a.cache_mib = v as usize,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn open(dir: &std::path::Path, name: &str, cache_mib: usize) -> KvStore {
    KvStore::open(
        dir.join(name),
        StoreConfig {
            backend: BackendConfig {
                cache_size: cache_mib << 20,
                durable_interval: Duration::from_millis(
                    std::env::var("DURABLE_MS")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(250),
                ),
                durable_after_entries: None,
            },
            ..Default::default()
        },
    )
    .expect("open store")
}

fn put(k: Vec<u8>, v: &[u8]) -> WriteRequest {
    WriteRequest::Put(PutRequest {
        key: k,
        value: v.to_vec(),
        ..Default::default()
    })
}

fn main() {
    let a = parse_args();
    let dir = tempfile::tempdir().expect("tempdir");
    let value = vec![b'v'; a.value_size];
    println!(
        "mvcc bench: keys={} key_size={} value_size={} redb_cache={} MiB",
        a.keys, a.key_size, a.value_size, a.cache_mib
    );

    // 1. Load (first, so RSS is measured before anything else allocated) `keys` keys (1000 entries per commit), measuring RSS before and after.
    let s = open(dir.path(), "big", a.cache_mib);
    let rss0 = rss_bytes();
    let t = Instant::now();
    let mut index = 0u64;
    let mut i = 0u64;
    while i < a.keys {
        let end = (i + 1000).min(a.keys);
        let reqs: Vec<_> = (i..end).map(|j| put(key(j, a.key_size), &value)).collect();
        let entries: Vec<_> = reqs
            .iter()
            .map(|r| {
                index += 1;
                ApplyEntry {
                    index,
                    term: 1,
                    request: r,
                    aux: &[],
                    record: None,
                }
            })
            .collect();
        s.apply_batch(&entries, &AnyLease).expect("apply");
        i = end;
    }
    let load = t.elapsed();
    s.sync().expect("sync");
    let rss1 = rss_bytes();
    println!(
        "loaded {} keys in {:.1} s ({:.0} puts/s); RSS {} MiB -> {} MiB: +{} MiB ({} B/key, includes <= {} MiB redb cache)",
        a.keys,
        load.as_secs_f64(),
        a.keys as f64 / load.as_secs_f64(),
        rss0 >> 20,
        rss1 >> 20,
        (rss1.saturating_sub(rss0)) >> 20,
        rss1.saturating_sub(rss0) / a.keys.max(1),
        a.cache_mib
    );

    // 2. Range latency at that size: random single keys, and 10-key prefix ranges.
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let samples = 20_000;
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let k = key(next() % a.keys, a.key_size);
        let t = Instant::now();
        let r = s
            .range(&RangeRequest {
                key: k,
                ..Default::default()
            })
            .expect("range");
        lat.push(t.elapsed());
        assert_eq!(r.kvs.len(), 1);
    }
    println!(
        "range 1 key @ {} keys: p50 {:?} p99 {:?}",
        a.keys,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        let base = (next() % a.keys) / 10 * 10;
        // 7-digit prefix of an 8-digit key: 10 keys (fewer at the very end).
        let mut prefix = format!("{base:08}").into_bytes();
        prefix.truncate(7);
        let mut end = prefix.clone();
        *end.last_mut().expect("non-empty") += 1;
        let t = Instant::now();
        let r = s
            .range(&RangeRequest {
                key: prefix,
                range_end: end,
                ..Default::default()
            })
            .expect("range");
        lat.push(t.elapsed());
        assert!(!r.kvs.is_empty());
    }
    println!(
        "range 10-key prefix @ {} keys: p50 {:?} p99 {:?}",
        a.keys,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    println!(
        "index holds {} keys; backend file {} MiB",
        s.index_len(),
        std::fs::metadata(dir.path().join("big"))
            .map(|m| m.len() >> 20)
            .unwrap_or(0)
    );
    // 4. Put throughput on a fresh store: one entry per apply (a commit each), and the
    //    apply loop's usual shape, a batch of committed entries per commit.
    {
        let s = open(dir.path(), "tput", a.cache_mib);
        let n = 50_000u64;
        let t = Instant::now();
        for i in 0..n {
            let req = put(key(i, a.key_size), &value);
            s.apply(
                ApplyEntry {
                    index: i + 1,
                    term: 1,
                    request: &req,
                    aux: &[],
                    record: None,
                },
                &AnyLease,
            )
            .expect("apply");
        }
        let single = n as f64 / t.elapsed().as_secs_f64();
        let reqs: Vec<_> = (0..n)
            .map(|i| put(key(n + i, a.key_size), &value))
            .collect();
        let t = Instant::now();
        for (b, chunk) in reqs.chunks(100).enumerate() {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(j, r)| ApplyEntry {
                    index: n + (b * 100 + j) as u64 + 1,
                    term: 1,
                    request: r,
                    aux: &[],
                    record: None,
                })
                .collect();
            s.apply_batch(&entries, &AnyLease).expect("apply");
        }
        let batched = n as f64 / t.elapsed().as_secs_f64();
        println!("put throughput: {single:.0} applies/s (1 entry per commit), {batched:.0} applies/s (100 entries per commit)");
    }

    // 4. Writes during physical compaction: 200,000 puts over 20,000 keys (10 versions
    //    each), compact at the head (180,000 rows to delete in the background), and time
    //    single-entry applies while the deletion runs.
    {
        let s = open(dir.path(), "compact", a.cache_mib);
        let mut index = 0u64;
        let reqs: Vec<_> = (0..200_000u64)
            .map(|i| put(key(i % 20_000, a.key_size), &value))
            .collect();
        for chunk in reqs.chunks(1000) {
            let entries: Vec<_> = chunk
                .iter()
                .map(|r| {
                    index += 1;
                    ApplyEntry {
                        index,
                        term: 1,
                        request: r,
                        aux: &[],
                        record: None,
                    }
                })
                .collect();
            s.apply_batch(&entries, &AnyLease).expect("apply");
        }
        let rows_before = s.backend_rows().expect("rows");
        let target = s.current_revision();
        let compact = WriteRequest::Compaction(CompactionRequest {
            revision: target,
            physical: false,
        });
        index += 1;
        let t0 = Instant::now();
        s.apply(
            ApplyEntry {
                index,
                term: 1,
                request: &compact,
                aux: &[],
                record: None,
            },
            &AnyLease,
        )
        .expect("compact");
        let logical = t0.elapsed();
        let mut lat = Vec::new();
        let mut i = 0u64;
        while !s.wait_compacted(target, Duration::ZERO) {
            let req = put(key(i % 20_000, a.key_size), &value);
            index += 1;
            let t = Instant::now();
            s.apply(
                ApplyEntry {
                    index,
                    term: 1,
                    request: &req,
                    aux: &[],
                    record: None,
                },
                &AnyLease,
            )
            .expect("apply");
            lat.push(t.elapsed());
            i += 1;
        }
        let physical = t0.elapsed();
        let n = lat.len();
        let max = lat.iter().max().copied().unwrap_or_default();
        let p99 = if n > 0 {
            pct(&mut lat, 0.99)
        } else {
            Duration::ZERO
        };
        println!(
            "compaction of {} of {} rows: logical {:?}, physical {:.2} s; {} puts applied meanwhile, latency p99 {:?} max {:?}",
            rows_before - 20_000,
            rows_before,
            logical,
            physical.as_secs_f64(),
            n,
            p99,
            max
        );
    }
}
