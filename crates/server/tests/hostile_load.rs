//! Memory bounds under hostile load (issue 13): one member per case, a hostile client
//! pattern against it, and the member's peak RSS (`VmHWM` of its own PID, so tests
//! running alongside do not count) asserted under a bound the unbounded code exceeds:
//!
//! - `unbounded_ranges_are_slowed_or_refused`: 32 clients ranging over ~20 MiB of keys
//!   at once without a limit, and a range larger than the whole budget;
//! - `watchers_that_never_read_are_bounded`: 2000 watchers over every key on 4 streams
//!   whose client never reads, while txns of 64 puts of 4 KiB flow;
//! - `txns_ranging_over_everything_are_bounded`: txns of 128 ranges over every key.
//!
//! Each case then checks that the member still serves a put and a get.
//!
//! The member runs with `SKIFF_MAX_INFLIGHT_RESPONSE_BYTES` / `SKIFF_WATCH_STREAM_BYTES`
//! (environment, not flags, so an older `skiff` or etcd ignores them). To measure
//! another binary, set `HOSTILE_BIN` (e.g. main's `target/release/skiff`, or `etcd`):
//! the assertions then show whether that binary stays bounded. `HOSTILE_SCALE` (default
//! 1) multiplies the data sizes, for measurements outside CI.
//!
//! `MIMALLOC_PURGE_DELAY` (milliseconds), passed on to the member, replaces its
//! allocator setting (`skiff_server::allocator`).
//!
//! Ports: 29960-29969 (clients 29960-29962, peers 29965-29967).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_proto::etcdserverpb as pb;
use tonic::transport::Channel;

const MIB: u64 = 1 << 20;
const VALUE: usize = 4096;
/// The in-flight response budget the member runs with.
const BUDGET: u64 = 32 * MIB;
/// The per-stream watch queue bound the member runs with.
const STREAM_BYTES: u64 = MIB;

fn scale() -> usize {
    std::env::var("HOSTILE_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// A member started for one case; killed (by its PID) when dropped.
struct Member {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Member {
    fn start(name: &str, port: u16) -> Member {
        let bin = std::env::var("HOSTILE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_skiff").to_string());
        let dir = std::env::temp_dir().join(format!(
            "skiff-hostile-{name}-{port}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", port + 5);
        let log = std::fs::File::create(
            std::env::temp_dir().join(format!("skiff-hostile-{name}-{port}.log")),
        )
        .expect("log file");
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCD_") || k.starts_with("SKIFF_") {
                cmd.env_remove(k);
            }
        }
        // HOSTILE_UNBOUNDED=1: the limits off, to show what the bounds are worth.
        let (budget, stream) = if std::env::var_os("HOSTILE_UNBOUNDED").is_some() {
            (0, u64::MAX)
        } else {
            (BUDGET, STREAM_BYTES)
        };
        cmd.env("SKIFF_MAX_INFLIGHT_RESPONSE_BYTES", budget.to_string())
            .env("SKIFF_WATCH_STREAM_BYTES", stream.to_string())
            .args(["--name", name, "--data-dir"])
            .arg(&dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("{name}={peer}"),
                "--quota-backend-bytes",
                &(8u64 << 30).to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("spawn member");
        Member { child, port, dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (VmHWM, VmRSS) of the member, in bytes.
    fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .expect("field")
                * 1024
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    async fn channel(&self) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ch = Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
                .expect("url")
                .connect()
                .await;
            if let Ok(ch) = ch {
                let mut kv = kv(ch.clone());
                if kv.range(get(b"health")).await.is_ok() {
                    return ch;
                }
            }
            assert!(Instant::now() < deadline, "member did not serve");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asserts the member is alive and serves a put and a get.
    async fn still_serves(&self) {
        let ch = self.channel().await;
        let mut kv = kv(ch);
        kv.put(pb::PutRequest {
            key: b"after".to_vec().into(),
            value: b"ok".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("put after the load");
        let r = kv.range(get(b"after")).await.expect("get after the load");
        assert_eq!(r.into_inner().kvs[0].value.as_ref(), b"ok");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn kv(ch: Channel) -> pb::kv_client::KvClient<Channel> {
    pb::kv_client::KvClient::new(ch)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

fn get(key: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec().into(),
        ..Default::default()
    }
}

/// A range over every key `k/...` (no limit).
fn all_keys() -> pb::RangeRequest {
    pb::RangeRequest {
        key: b"k/".to_vec().into(),
        range_end: b"k0".to_vec().into(),
        ..Default::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("k/{i:08}").into_bytes()
}

fn put_op(k: Vec<u8>, v: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    }
}

/// Writes keys `k/0..n` with 4 KiB values, 64 per txn, 4 writers.
async fn load(ch: &Channel, n: usize) {
    let per = 64;
    let txns: Vec<usize> = (0..n.div_ceil(per)).collect();
    let chunks: Vec<Vec<usize>> = txns
        .chunks(txns.len().div_ceil(4))
        .map(|c| c.to_vec())
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let mut kv = kv(ch.clone());
        tasks.push(tokio::spawn(async move {
            for t in chunk {
                let ops = (t * per..((t + 1) * per).min(n))
                    .map(|i| put_op(key(i), vec![b'v'; VALUE]))
                    .collect();
                kv.txn(pb::TxnRequest {
                    success: ops,
                    ..Default::default()
                })
                .await
                .expect("load txn");
            }
        }));
    }
    for t in tasks {
        t.await.expect("loader");
    }
}

/// Polls the member's RSS while `work` runs; returns the peak seen (`VmHWM`).
async fn peak_during<F: std::future::Future<Output = ()>>(m: &Member, work: F) -> u64 {
    work.await;
    let (hwm, rss) = m.memory();
    eprintln!("VmHWM {} MiB, VmRSS {} MiB", hwm / MIB, rss / MIB);
    hwm
}

fn report(case: &str, m: &Member, before: u64, peak: u64) {
    eprintln!(
        "{case}: member pid {} VmHWM before {} MiB, peak {} MiB",
        m.pid(),
        before / MIB,
        peak / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unbounded_ranges_are_slowed_or_refused() {
    let m = Member::start("hostile-range", 29960);
    let ch = m.channel().await;
    // ~40 MiB of keys: more than the 32 MiB budget.
    let n = 10_000 * scale();
    let t = Instant::now();
    load(&ch, n).await;
    eprintln!("loaded {n} keys in {:?}", t.elapsed());
    let before = m.memory().0;

    // A range over everything can never fit the budget: refused at once.
    let t = Instant::now();
    let err = kv(ch.clone()).range(all_keys()).await;
    let too_large = err
        .as_ref()
        .err()
        .map(|s| (s.code(), s.message().to_string()));
    eprintln!("range over all: {:?} in {:?}", too_large, t.elapsed());

    // 32 clients ranging over half the keys (~20 MiB each) at once, twice each.
    let half = pb::RangeRequest {
        key: key(0).into(),
        range_end: key(n / 2).into(),
        ..Default::default()
    };
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = peak_during(&m, async {
        let mut tasks = Vec::new();
        let clients: usize = std::env::var("HOSTILE_CLIENTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(32);
        for _ in 0..clients {
            let ch = Channel::from_shared(format!("http://127.0.0.1:{}", m.port))
                .expect("url")
                .connect()
                .await
                .expect("connect");
            let (half, ok, busy) = (half.clone(), ok.clone(), busy.clone());
            tasks.push(tokio::spawn(async move {
                let mut kv = kv(ch);
                for _ in 0..2 {
                    match kv.range(half.clone()).await {
                        Ok(r) => {
                            assert_eq!(r.into_inner().kvs.len(), n / 2);
                            ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(s) => {
                            assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                            assert_eq!(s.message(), "etcdserver: too many requests");
                            busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("client");
        }
    })
    .await;
    report("ranges", &m, before, peak);
    eprintln!(
        "ranges: {} served, {} refused (too many requests)",
        ok.load(std::sync::atomic::Ordering::SeqCst),
        busy.load(std::sync::atomic::Ordering::SeqCst)
    );
    // Bound: the budget, once more for encoding, the backend's cache (16 MiB; redb's 64 MiB when
    // the bound was set) and the allocator's caches (measured: +127..+135 MiB with the budget and a 10 ms purge delay,
    // +136..+141 MiB at the member's 100 ms, +224..+325 MiB
    // with mimalloc's own 1 s purge delay (`MIMALLOC_PURGE_DELAY=1000`, see the
    // member's `allocator` module), +880 MiB with the budget off, +1.2 GiB for main
    // before it, +1.9 GiB for etcd 3.4).
    let bound = before + 2 * BUDGET + 288 * MIB;
    assert_peak_under(peak, bound);
    m.still_serves().await;
    let (code, message) = too_large.expect("a range larger than the budget is refused");
    assert_eq!(code, tonic::Code::ResourceExhausted);
    assert_eq!(
        message,
        "skiff: response is larger than --max-inflight-response-bytes; use a limit"
    );
    assert!(
        ok.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "no range was served"
    );
}

/// Opens a watch stream with `n` watchers over every key and never reads it.
async fn idle_watch_stream(
    ch: Channel,
    n: usize,
) -> (
    tokio::sync::mpsc::Sender<pb::WatchRequest>,
    tonic::Streaming<pb::WatchResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(n + 1);
    for _ in 0..n {
        tx.send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: b"k/".to_vec().into(),
                    range_end: b"k0".to_vec().into(),
                    ..Default::default()
                },
            )),
        })
        .await
        .expect("queue create");
    }
    let mut w = pb::watch_client::WatchClient::new(ch).max_decoding_message_size(usize::MAX);
    let resp = w
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch");
    (tx, resp.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watchers_that_never_read_are_bounded() {
    let m = Member::start("hostile-watch", 29961);
    let ch = m.channel().await;
    let before = m.memory().0;
    // 4 connections, 500 watchers each over every key; the client never reads.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let ch = Channel::from_shared(format!("http://127.0.0.1:{}", m.port))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        streams.push(idle_watch_stream(ch, 500).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // ~48 MiB of writes: txns of 64 puts of 4 KiB (256 KiB events per revision, for
    // each of the 2000 watchers).
    let t = Instant::now();
    let n = 12_000 * scale();
    let peak = peak_during(&m, load(&ch, n)).await;
    eprintln!(
        "wrote {n} keys in {:?} under 2000 idle watchers",
        t.elapsed()
    );
    report("watchers", &m, before, peak);
    m.still_serves().await;
    // Bound: 4 streams of 1 MiB queues plus one response each, the backend's cache and the
    // writes' own Raft log and WAL buffers (measured: +131..+141 MiB with the bound,
    // +337 MiB with it off, +830 MiB for main before it, +133 MiB for etcd 3.4).
    let bound = before + 256 * MIB;
    assert_peak_under(peak, bound);
    // The watchers are still there and catch up once read: the first stream's
    // responses, read now, carry events in order.
    let (_tx, mut first) = streams.swap_remove(0);
    let mut last = 0;
    let mut events = 0;
    while events < 200 {
        let r = tokio::time::timeout(Duration::from_secs(10), first.message())
            .await
            .expect("watch responses")
            .expect("stream")
            .expect("open");
        for e in &r.events {
            let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            assert!(rev >= last, "events out of order");
            last = rev;
            events += 1;
        }
    }
    drop(streams);
}

fn range_op(r: pb::RangeRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(r)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn txns_ranging_over_everything_are_bounded() {
    let m = Member::start("hostile-txn", 29962);
    let ch = m.channel().await;
    // ~4 MiB of keys: a txn of 128 ranges over all of them would answer ~530 MiB.
    let n = 1_000 * scale();
    load(&ch, n).await;
    // Txns near --max-request-bytes (4 puts of 350 KiB), 4 clients at once.
    let mut tasks = Vec::new();
    for c in 0..4 {
        let mut kv = kv(ch.clone());
        tasks.push(tokio::spawn(async move {
            for t in 0..4 {
                let ops = (0..4)
                    .map(|i| {
                        put_op(
                            format!("big/{c}/{t}/{i}").into_bytes(),
                            vec![b'b'; 350 << 10],
                        )
                    })
                    .collect();
                kv.txn(pb::TxnRequest {
                    success: ops,
                    ..Default::default()
                })
                .await
                .expect("txn near the request limit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("big txns");
    }
    let before = m.memory().0;
    let everything = pb::TxnRequest {
        success: (0..128).map(|_| range_op(all_keys())).collect(),
        ..Default::default()
    };
    let six = pb::TxnRequest {
        success: (0..6).map(|_| range_op(all_keys())).collect(),
        ..Default::default()
    };
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = peak_during(&m, async {
        let mut tasks = Vec::new();
        for c in 0..10 {
            let mut kv = kv(ch.clone());
            let req = if c < 2 {
                everything.clone()
            } else {
                six.clone()
            };
            let (refused, served) = (refused.clone(), served.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..2 {
                    match kv.txn(req.clone()).await {
                        Ok(r) => {
                            assert_eq!(r.into_inner().responses.len(), req.success.len());
                            served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(s) => {
                            assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                            refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("txn client");
        }
    })
    .await;
    report("txns", &m, before, peak);
    eprintln!(
        "txns: {} served, {} refused",
        served.load(std::sync::atomic::Ordering::SeqCst),
        refused.load(std::sync::atomic::Ordering::SeqCst)
    );
    // Bound: the budget, once more for encoding, the backend's cache (16 MiB; redb's 64 MiB when the
    // bound was set) and the apply thread's and allocator's share (measured:
    // +131..+196 MiB with the budget and a 10 ms purge delay, +119..+128 MiB at the
    // member's 100 ms; +252..+370 MiB with mimalloc's own 1 s purge delay, which failed this bound in
    // CI; +2.2 GiB without the budget, +3.4 GiB for etcd 3.4).
    let bound = before + 2 * BUDGET + 256 * MIB;
    assert_peak_under(peak, bound);
    m.still_serves().await;
    // The txns of 128 ranges over everything can never fit: refused, every time.
    assert!(refused.load(std::sync::atomic::Ordering::SeqCst) >= 4);
    assert!(served.load(std::sync::atomic::Ordering::SeqCst) > 0);
    let err = kv(ch).txn(everything).await.expect_err("too large");
    assert_eq!(
        err.message(),
        "skiff: response is larger than --max-inflight-response-bytes; use a limit"
    );
}

/// The member's peak RSS stayed under `bound` (bytes).
fn assert_peak_under(peak: u64, bound: u64) {
    assert!(
        peak < bound,
        "peak RSS {} MiB over the bound {} MiB",
        peak / MIB,
        bound / MIB
    );
}
