//! Watch guarantees: ordered, unique, atomic per revision, reliable across the catch-up ->
//! synced hand-over (also with slow consumers and concurrent compaction), compaction
//! cancels, filters, prev_kv, progress, and regressions for etcd #18089 / #19179 (delete
//! at the compaction revision) and #20221 (future start revision returned old events).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Rng;
use skiff_storage::mvcc::*;
use skiff_storage::watch::*;
use tokio::sync::mpsc::Receiver;

struct Fixture {
    _dir: tempfile::TempDir,
    ws: Arc<WatchableStore>,
    index: Mutex<u64>,
    /// Every event applied so far, in order.
    log: Mutex<Vec<Event>>,
}

impl Fixture {
    fn new(cfg: WatchConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let kv = Arc::new(KvStore::open(dir.path().join("db"), common::small_config()).unwrap());
        Fixture {
            _dir: dir,
            ws: Arc::new(WatchableStore::new(kv, cfg)),
            index: Mutex::new(0),
            log: Mutex::new(Vec::new()),
        }
    }

    fn apply(&self, req: WriteRequest) -> Result<WriteResponse> {
        let mut ix = self.index.lock().unwrap();
        *ix += 1;
        let out = self
            .ws
            .apply(
                ApplyEntry {
                    index: *ix,
                    term: 1,
                    request: &req,
                    aux: &[],
                    record: None,
                },
                &AnyLease,
            )
            .unwrap();
        let Applied::Done {
            response, events, ..
        } = out
        else {
            panic!("skipped")
        };
        self.log.lock().unwrap().extend(events);
        response
    }

    fn put(&self, k: &str, v: &str) -> i64 {
        self.apply(WriteRequest::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }))
        .unwrap()
        .header()
        .revision
    }

    fn delete(&self, k: &str) -> i64 {
        self.apply(WriteRequest::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            ..Default::default()
        }))
        .unwrap()
        .header()
        .revision
    }

    fn compact(&self, rev: i64) {
        self.apply(WriteRequest::Compaction(CompactionRequest {
            revision: rev,
            physical: false,
        }))
        .unwrap();
    }
}

fn watch_req(k: &str, end: &str, start: i64) -> WatchRequest {
    WatchRequest {
        key: k.into(),
        range_end: end.into(),
        start_revision: start,
        ..Default::default()
    }
}

/// Receives until `done` says so or `timeout` passes.
/// A response as a consumer that has handled it keeps it: its bytes no longer count
/// against the stream's bound (the server drops them once the response is sent).
/// Keeping them would make a test's collected responses look like an unread stream,
/// and its watchers would stall at the bound.
fn consumed(mut r: WatchResponse) -> WatchResponse {
    r.queued = None;
    r
}

fn recv_until(
    rx: &mut Receiver<WatchResponse>,
    timeout: Duration,
    mut done: impl FnMut(&[WatchResponse]) -> bool,
) -> Vec<WatchResponse> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !done(&out) && Instant::now() < deadline {
        match rx.try_recv() {
            Ok(r) => out.push(consumed(r)),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    out
}

/// Like `recv_until`, but also stops after 500 ms without any message.
fn recv_quiet(
    rx: &mut Receiver<WatchResponse>,
    timeout: Duration,
    mut done: impl FnMut(&[WatchResponse]) -> bool,
) -> Vec<WatchResponse> {
    let deadline = Instant::now() + timeout;
    let mut last_msg = Instant::now();
    let mut out = Vec::new();
    while !done(&out)
        && Instant::now() < deadline
        && last_msg.elapsed() < Duration::from_millis(500)
    {
        match rx.try_recv() {
            Ok(r) => {
                out.push(consumed(r));
                last_msg = Instant::now();
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    out
}

fn ids(evs: &[Event]) -> Vec<(EventType, Vec<u8>, i64)> {
    evs.iter()
        .map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision))
        .collect()
}

fn all_events(rs: &[WatchResponse]) -> Vec<Event> {
    rs.iter().flat_map(|r| r.events.clone()).collect()
}

#[test]
fn synced_watchers_get_events_with_filters_and_prev_kv() {
    let f = Fixture::new(WatchConfig::default());
    let (s, mut rx) = f.ws.new_stream();
    let w_key = s.watch(&watch_req("a", "", 0)).unwrap();
    let w_prefix = s
        .watch(&WatchRequest {
            prev_kv: true,
            ..watch_req("p/", "p0", 0)
        })
        .unwrap();
    let w_noput = s
        .watch(&WatchRequest {
            filters: vec![WatchFilter::NoPut],
            ..watch_req("a", "", 0)
        })
        .unwrap();
    let w_nodel = s
        .watch(&WatchRequest {
            filters: vec![WatchFilter::NoDelete],
            ..watch_req("a", "", 0)
        })
        .unwrap();
    // Ids are assigned from 0 on, as etcd does (0 in a request means "assign one").
    assert_eq!((w_key, w_prefix), (0, 1));
    assert_eq!(
        s.watch(&WatchRequest {
            watch_id: w_prefix,
            ..watch_req("x", "", 0)
        }),
        Err(WatchError::DuplicateId)
    );
    f.put("a", "1");
    f.put("p/1", "x");
    f.put("p/1", "y");
    f.delete("a");
    // A txn writing two keys of the prefix: one response with both events.
    f.apply(WriteRequest::Txn(TxnRequest {
        success: vec![
            RequestOp::Put(PutRequest {
                key: b"p/2".to_vec(),
                ..Default::default()
            }),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b"p/1".to_vec(),
                ..Default::default()
            }),
        ],
        ..Default::default()
    }))
    .unwrap();
    let got = recv_until(&mut rx, Duration::from_secs(5), |v| v.len() >= 8);
    let by = |id| -> Vec<&WatchResponse> { got.iter().filter(|r| r.watch_id == id).collect() };
    let a: Vec<_> = by(w_key).iter().flat_map(|r| ids(&r.events)).collect();
    assert_eq!(
        a,
        [
            (EventType::Put, b"a".to_vec(), 2),
            (EventType::Delete, b"a".to_vec(), 5)
        ]
    );
    // Without prev_kv asked, none is sent.
    assert!(by(w_key)
        .iter()
        .all(|r| r.events.iter().all(|e| e.prev_kv.is_none())));
    let np: Vec<_> = by(w_noput).iter().flat_map(|r| ids(&r.events)).collect();
    assert_eq!(np, [(EventType::Delete, b"a".to_vec(), 5)]);
    let nd: Vec<_> = by(w_nodel).iter().flat_map(|r| ids(&r.events)).collect();
    assert_eq!(nd, [(EventType::Put, b"a".to_vec(), 2)]);
    let p = by(w_prefix);
    assert_eq!(p.len(), 3, "one response per revision");
    assert_eq!(p[1].events[0].prev_kv.as_ref().unwrap().value, b"x");
    assert_eq!(p[2].events.len(), 2, "both events of the txn together");
    assert_eq!(p[2].revision, 6);
    assert_eq!(
        p[2].events[1].prev_kv.as_ref().unwrap().value,
        b"y",
        "prev_kv of a delete"
    );
    // Cancel stops delivery.
    assert!(s.cancel(w_key));
    assert!(!s.cancel(w_key));
    f.put("a", "2");
    let more = recv_until(&mut rx, Duration::from_millis(300), |v| v.len() >= 2);
    assert!(more.iter().all(|r| r.watch_id != w_key));
}

#[test]
fn catch_up_from_old_revision_then_live() {
    let f = Fixture::new(WatchConfig {
        sync_batch: 3,
        ..Default::default()
    });
    for i in 0..20 {
        f.put(&format!("k{}", i % 4), &i.to_string());
    }
    let (s, mut rx) = f.ws.new_stream();
    s.watch(&watch_req("k", "l", 5)).unwrap();
    for i in 20..30 {
        f.put(&format!("k{}", i % 4), &i.to_string());
    }
    let got = recv_until(&mut rx, Duration::from_secs(5), |v| {
        all_events(v).len() >= 27
    });
    let want: Vec<_> = f
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kv.mod_revision >= 5)
        .cloned()
        .collect();
    assert_eq!(ids(&all_events(&got)), ids(&want));
    // Values too (catch-up reads from the backend).
    assert_eq!(
        all_events(&got).iter().map(|e| &e.kv).collect::<Vec<_>>(),
        want.iter().map(|e| &e.kv).collect::<Vec<_>>()
    );
}

#[test]
fn compacted_start_revision_cancels_with_compact_revision() {
    let f = Fixture::new(WatchConfig::default());
    for i in 0..10 {
        f.put("k", &i.to_string());
    }
    f.compact(8);
    let (s, mut rx) = f.ws.new_stream();
    let id = s.watch(&watch_req("k", "", 3)).unwrap();
    let got = recv_until(&mut rx, Duration::from_secs(5), |v| !v.is_empty());
    assert_eq!(got.len(), 1);
    assert!(got[0].canceled);
    assert_eq!(got[0].compact_revision, 8);
    assert_eq!(got[0].watch_id, id);
    assert!(got[0].events.is_empty());
    // The watcher is gone.
    assert!(!s.cancel(id));
}

#[test]
fn watch_ids_are_not_reused_after_a_cancel() {
    let f = Fixture::new(WatchConfig::default());
    let (s, _rx) = f.ws.new_stream();
    let first = s.watch(&watch_req("a", "", 0)).unwrap();
    assert!(s.cancel(first));
    let second = s.watch(&watch_req("a", "", 0)).unwrap();
    assert_eq!((first, second), (0, 1));
    // A client-chosen ID is skipped by the counter too.
    let mut chosen = watch_req("a", "", 0);
    chosen.watch_id = 2;
    assert_eq!(s.watch(&chosen).unwrap(), 2);
    assert_eq!(s.watch(&watch_req("a", "", 0)).unwrap(), 3);
}

/// etcd #18089 / #19179: a watch starting at the compaction revision must see a delete
/// made at that revision, even after physical compaction ran.
#[test]
fn delete_at_compaction_revision_is_delivered() {
    let f = Fixture::new(WatchConfig::default());
    f.put("a", "1");
    f.put("b", "1");
    let del = f.delete("a");
    f.compact(del);
    assert!(f.ws.kv().wait_compacted(del, Duration::from_secs(5)));
    let (s, mut rx) = f.ws.new_stream();
    s.watch(&watch_req("a", "c", del)).unwrap();
    let got = recv_until(&mut rx, Duration::from_secs(5), |v| !v.is_empty());
    assert_eq!(
        ids(&all_events(&got)),
        [(EventType::Delete, b"a".to_vec(), del)]
    );
}

/// Same, when one txn at the compaction revision both put and deleted the key.
#[test]
fn put_and_delete_in_one_revision_at_compaction_revision_are_delivered() {
    let f = Fixture::new(WatchConfig::default());
    f.put("x1", "0");
    let rev = f
        .apply(WriteRequest::Txn(TxnRequest {
            success: vec![
                RequestOp::Put(PutRequest {
                    key: b"x1".to_vec(),
                    value: b"1".to_vec(),
                    ..Default::default()
                }),
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: b"x".to_vec(),
                    range_end: vec![0],
                    prev_kv: false,
                }),
            ],
            ..Default::default()
        }))
        .unwrap()
        .header()
        .revision;
    f.compact(rev);
    assert!(f.ws.kv().wait_compacted(rev, Duration::from_secs(5)));
    let (s, mut rx) = f.ws.new_stream();
    s.watch(&watch_req("x1", "", rev)).unwrap();
    let got = recv_until(&mut rx, Duration::from_secs(5), |v| !v.is_empty());
    assert_eq!(got.len(), 1, "one response for the revision");
    assert_eq!(
        ids(&got[0].events),
        [
            (EventType::Put, b"x1".to_vec(), rev),
            (EventType::Delete, b"x1".to_vec(), rev)
        ]
    );
}

/// etcd #20221: a watch from a future revision must not get any older event, including
/// when it falls behind (victim path) and is caught up from the backend.
#[test]
fn future_start_revision_gets_nothing_older() {
    let f = Fixture::new(WatchConfig {
        stream_capacity: 1,
        sync_batch: 2,
        ..Default::default()
    });
    let cur = f.put("k", "0");
    let start = cur + 5;
    let (s, mut rx) = f.ws.new_stream();
    s.watch(&watch_req("k", "", start)).unwrap();
    for i in 1..=12 {
        f.put("k", &i.to_string());
    }
    // The consumer was not reading: the watcher became a victim. Now drain.
    let got = recv_until(&mut rx, Duration::from_secs(5), |v| {
        all_events(v).last().map(|e| e.kv.mod_revision) == Some(cur + 12)
    });
    let revs: Vec<i64> = all_events(&got).iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revs, (start..=cur + 12).collect::<Vec<_>>());
}

#[test]
fn slow_consumer_never_blocks_applies_and_loses_nothing() {
    let f = Fixture::new(WatchConfig {
        stream_capacity: 2,
        sync_batch: 5,
        ..Default::default()
    });
    let (s, mut rx) = f.ws.new_stream();
    s.watch(&watch_req("\0", "\0", 0)).unwrap();
    let t0 = Instant::now();
    for i in 0..2000 {
        f.put(&format!("k{}", i % 50), "v");
    }
    // Nobody read; applies went on regardless.
    assert!(t0.elapsed() < Duration::from_secs(60));
    let got = recv_until(&mut rx, Duration::from_secs(20), |v| {
        all_events(v).len() >= 2000
    });
    let want = f.log.lock().unwrap().clone();
    assert_eq!(ids(&all_events(&got)), ids(&want));
    // Header revisions never go back and cover their events.
    let mut last = 0;
    for r in &got {
        assert!(r.revision >= last);
        assert!(r.events.iter().all(|e| e.kv.mod_revision <= r.revision));
        last = r.revision;
    }
}

/// Watchers whose consumer never reads hold at most the stream's byte bound (plus one
/// response) however much is written, and once read, each still gets every event in
/// order, caught up from the backend.
#[test]
fn unread_streams_stay_within_their_byte_bound_and_catch_up() {
    let f = Fixture::new(WatchConfig {
        stream_bytes: 8 << 10,
        sync_batch: 8,
        ..Default::default()
    });
    let (s, mut rx) = f.ws.new_stream();
    let ids: Vec<i64> = (0..20)
        .map(|_| s.watch(&watch_req("\0", "\0", 0)).unwrap())
        .collect();
    let value = "v".repeat(1024);
    for i in 0..200 {
        f.put(&format!("k{i:03}"), &value);
    }
    std::thread::sleep(Duration::from_millis(200));
    // Unread: what the stream holds is bounded by bytes, not by what was written
    // (20 watchers x 200 events of 1 KiB = 4 MB).
    // A consumed response gives its bytes back once dropped (the server drops them
    // after encoding): keep only the content.
    let consume = |mut r: WatchResponse| {
        r.queued = None;
        r
    };
    let mut queued = Vec::new();
    while let Ok(r) = rx.try_recv() {
        queued.push(consume(r));
    }
    let bytes: usize = all_events(&queued)
        .iter()
        .map(|e| e.kv.key.len() + e.kv.value.len())
        .sum();
    assert!(bytes <= 16 << 10, "{bytes} bytes queued");
    // Reading now: every watcher gets all 200 events, in order, once.
    let mut got = queued;
    let deadline = Instant::now() + Duration::from_secs(20);
    while all_events(&got).len() < 20 * 200 && Instant::now() < deadline {
        match rx.try_recv() {
            Ok(r) => got.push(consume(r)),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    for id in ids {
        let revs: Vec<i64> = got
            .iter()
            .filter(|r| r.watch_id == id)
            .flat_map(|r| r.events.iter().map(|e| e.kv.mod_revision))
            .collect();
        assert_eq!(revs, (2..202).collect::<Vec<_>>(), "watcher {id}");
    }
}

#[test]
fn progress_notifications() {
    let f = Fixture::new(WatchConfig::default());
    f.put("a", "1");
    let (s, mut rx) = f.ws.new_stream();
    let id = s
        .watch(&WatchRequest {
            progress_notify: true,
            ..watch_req("a", "", 0)
        })
        .unwrap();
    assert!(s.request_progress());
    f.ws.progress_notify();
    let got = recv_until(&mut rx, Duration::from_secs(2), |v| v.len() >= 2);
    assert_eq!(got[0].watch_id, -1);
    assert_eq!(got[0].revision, 2);
    assert!(got[0].is_progress_notify());
    assert_eq!(got[1].watch_id, id);
    assert!(got[1].is_progress_notify());
    // A watcher still catching up (its consumer is not reading, the channel holds one
    // response): no stream-wide progress, it would promise events not yet delivered.
    let slow = Fixture::new(WatchConfig {
        stream_capacity: 1,
        sync_batch: 1,
        ..Default::default()
    });
    for i in 0..4 {
        slow.put("a", &i.to_string());
    }
    let (s2, mut rx2) = slow.ws.new_stream();
    s2.watch(&watch_req("a", "", 1)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!s2.request_progress());
    let got = recv_until(&mut rx2, Duration::from_secs(5), |v| {
        all_events(v).len() >= 4
    });
    assert_eq!(all_events(&got).len(), 4);
    std::thread::sleep(Duration::from_millis(100));
    assert!(s2.request_progress());
}

/// Many watchers from random past revisions, created while a writer applies random
/// puts/deletes/txns and compactions trail behind, with slow consumers: each watcher gets
/// exactly the matching events from its start, in order, no gaps, no duplicates, each
/// revision in one response -- or, if compaction overtook it before it caught up, a prefix
/// of that followed by a cancel whose compact_revision is above what it had received.
#[test]
fn handover_under_load_and_compaction() {
    for seed in 0..3u64 {
        let f = Arc::new(Fixture::new(WatchConfig {
            stream_capacity: 4,
            stream_bytes: 2048,
            sync_batch: 16,
            sync_interval: Duration::from_millis(1),
        }));
        let writer = {
            let f = Arc::clone(&f);
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed);
                for i in 0..1500 {
                    let k = format!("k{:02}", rng.below(30));
                    match rng.below(10) {
                        0..=5 => {
                            f.put(&k, &i.to_string());
                        }
                        6 | 7 => {
                            f.delete(&k);
                        }
                        8 => {
                            f.apply(WriteRequest::Txn(TxnRequest {
                                success: vec![
                                    RequestOp::Put(PutRequest {
                                        key: b"k90".to_vec(),
                                        ..Default::default()
                                    }),
                                    RequestOp::Put(PutRequest {
                                        key: b"k91".to_vec(),
                                        ..Default::default()
                                    }),
                                ],
                                ..Default::default()
                            }))
                            .unwrap();
                        }
                        _ => {
                            let cur = f.ws.kv().current_revision();
                            if cur > 300 && rng.chance(30) {
                                let target = cur - 300;
                                if target > f.ws.kv().compact_revision() {
                                    f.compact(target);
                                }
                            }
                        }
                    }
                    if i % 100 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            })
        };
        let mut rng = Rng::new(seed + 100);
        let mut streams = Vec::new();
        for n in 0..8 {
            std::thread::sleep(Duration::from_millis(5 + rng.below(20)));
            let cur = f.ws.kv().current_revision();
            let start = if n % 4 == 0 {
                0
            } else {
                1 + rng.below(cur as u64) as i64
            };
            let (key, end) = if n % 2 == 0 { ("k", "l") } else { ("k05", "") };
            let (s, rx) = f.ws.new_stream();
            s.watch(&watch_req(key, end, start)).unwrap();
            // For start 0 the first revision is fixed inside `watch` (the writer runs on):
            // at least cur + 1; the test takes it from the first event received.
            let from = if start == 0 { -(cur + 1) } else { start };
            streams.push((s, rx, key, end, from));
        }
        writer.join().unwrap();
        let final_rev = f.ws.kv().current_revision();
        let log = f.log.lock().unwrap().clone();
        for (i, (_s, mut rx, key, end, from)) in streams.into_iter().enumerate() {
            let matches = |k: &[u8]| {
                if end.is_empty() {
                    k == key.as_bytes()
                } else {
                    k >= key.as_bytes() && k < end.as_bytes()
                }
            };
            let matching = |from: i64| -> Vec<Event> {
                log.iter()
                    .filter(|e| e.kv.mod_revision >= from && matches(&e.kv.key))
                    .cloned()
                    .collect()
            };
            let (from, got) = if from < 0 {
                // Live watcher: everything matching from its first event to the end.
                let last_match = matching(-from).last().map(|e| e.kv.mod_revision);
                let got = recv_quiet(&mut rx, Duration::from_secs(30), |v| {
                    all_events(v).last().map(|e| e.kv.mod_revision) == last_match
                });
                let first = all_events(&got)
                    .first()
                    .map_or(final_rev + 1, |e| e.kv.mod_revision);
                assert!(
                    first >= -from,
                    "seed {seed} watcher {i}: event before its start"
                );
                (first, got)
            } else {
                let n = matching(from).len();
                let got = recv_until(&mut rx, Duration::from_secs(30), |v| {
                    v.last().is_some_and(|r| r.canceled) || all_events(v).len() >= n
                });
                (from, got)
            };
            let want = matching(from);
            let evs = all_events(&got);
            let canceled = got.iter().find(|r| r.canceled);
            match canceled {
                None => assert_eq!(
                    ids(&evs),
                    ids(&want),
                    "seed {seed} watcher {i} from {from} (final rev {final_rev})"
                ),
                Some(c) => {
                    assert!(evs.len() < want.len() || want.is_empty());
                    assert_eq!(
                        ids(&evs),
                        ids(&want[..evs.len()]),
                        "seed {seed} watcher {i}"
                    );
                    let next = evs.last().map_or(from, |e| e.kv.mod_revision + 1);
                    assert!(c.compact_revision > next - 1, "cancel must be justified");
                    assert!(got.last().unwrap().canceled, "nothing after the cancel");
                }
            }
            // Atomic revisions: a revision's events never span two responses.
            let mut seen = std::collections::HashSet::new();
            for r in &got {
                let revs: std::collections::BTreeSet<i64> =
                    r.events.iter().map(|e| e.kv.mod_revision).collect();
                for rv in revs {
                    assert!(
                        seen.insert(rv),
                        "seed {seed} watcher {i}: revision {rv} split"
                    );
                }
            }
        }
    }
}
