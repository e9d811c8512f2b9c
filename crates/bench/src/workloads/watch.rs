//! watch-latency: how long after a put its event reaches every watcher.
//!
//! `--streams` watch streams (spread over the connections) each carry
//! `--watchers-per-stream` watchers; watcher j (over all streams) watches fresh key
//! j mod `--keys`. Once every watcher is confirmed created, a single writer puts
//! `--put-total` times at `--put-rate`, put i to key i mod `--keys`. Because only this run
//! writes those keys, and etcd delivers a watcher's events in revision order, the n-th
//! event a watcher receives is the n-th put to its key; its latency is measured from the
//! moment just before that put was sent. Events that have not arrived 10 s after the last put
//! are counted as `MissingEvent` errors, so a server that drops events cannot look fast.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Client, EventType, WatchStream};

use crate::cli::{GlobalOpts, WatchOpts};
use crate::conn::{error_code, error_message};
use crate::keys;
use crate::progress::Progress;
use crate::rate::RateLimiter;
use crate::report::Report;
use crate::stats::{summarize, Recorder};

const GRACE: Duration = Duration::from_secs(10);

/// Send time of every put, per key index.
type SendTimes = Arc<Mutex<Vec<Vec<Instant>>>>;

fn key_name(base: &str, k: usize) -> String {
    format!("{base}/{k}")
}

/// Key index of an event's key (the number after the last '/').
fn key_index(key: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(key).ok()?;
    s.rsplit('/').next()?.parse().ok()
}

/// Puts that go to key `k` when `total` puts are spread round-robin over `keys` keys.
fn puts_to_key(total: u64, keys: usize, k: usize) -> u64 {
    let keys = keys as u64;
    total / keys + u64::from((k as u64) < total % keys)
}

async fn open_stream(client: &Client, keys: &[String]) -> Result<WatchStream> {
    let watchers = keys.len();
    let mut wc = client.watch_client();
    let mut ws = wc
        .watch(keys[0].as_str(), None)
        .await
        .context("opening a watch stream")?;
    for key in &keys[1..] {
        ws.watch(key.as_str(), None)
            .await
            .context("adding a watcher")?;
    }
    let mut created = 0;
    while created < watchers {
        let resp = ws
            .message()
            .await
            .context("waiting for watch creation")?
            .ok_or_else(|| anyhow!("watch stream closed before all watchers were created"))?;
        if resp.canceled() {
            bail!("watch canceled at creation: {}", resp.cancel_reason());
        }
        if resp.created() {
            created += 1;
        }
    }
    Ok(ws)
}

/// Reads one stream until its watchers have seen `expected` events in all or `stop` fires.
async fn read_stream(
    mut ws: WatchStream,
    expected: u64,
    sent: SendTimes,
    done: Arc<std::sync::atomic::AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Recorder, Option<Instant>) {
    let mut rec = Recorder::new();
    let mut seen: HashMap<i64, u64> = HashMap::new();
    let mut received = 0u64;
    let mut last = None;
    while received < expected {
        let msg = tokio::select! {
            m = ws.message() => m,
            _ = stop.changed() => break,
        };
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => {
                rec.err("Watch", "watch stream closed by the server");
                break;
            }
            Err(e) => {
                rec.err(&error_code(&e), &error_message(&e));
                break;
            }
        };
        if resp.canceled() {
            rec.err(
                "Watch",
                &format!("watch canceled: {}", resp.cancel_reason()),
            );
            break;
        }
        let now = Instant::now();
        for ev in resp.events() {
            if ev.event_type() != EventType::Put {
                continue;
            }
            let n = seen.entry(resp.watch_id()).or_insert(0);
            let sent_at = ev.kv().and_then(|kv| key_index(kv.key())).and_then(|k| {
                sent.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(k)?
                    .get(*n as usize)
                    .copied()
            });
            match sent_at {
                Some(t) => rec.ok(now.saturating_duration_since(t)),
                None => rec.err("UnexpectedEvent", "event for a put this run did not send"),
            }
            *n += 1;
            received += 1;
            last = Some(now);
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let missing = expected.saturating_sub(received);
    if missing > 0 {
        rec.err_n(
            "MissingEvent",
            "event not delivered within 10 s of the last put",
            missing,
        );
    }
    (rec, last)
}

pub async fn run(g: &GlobalOpts, o: &WatchOpts, conns: Vec<Client>) -> Result<Report> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let base = format!("skiff-bench/watch-latency/{}-{stamp}", std::process::id());
    let wps = o.watchers_per_stream;
    let mut streams = Vec::with_capacity(o.streams);
    let mut expected_total = 0;
    for s in 0..o.streams {
        let idx: Vec<usize> = (s * wps..(s + 1) * wps).map(|j| j % o.keys).collect();
        let expected: u64 = idx
            .iter()
            .map(|&k| puts_to_key(o.put_total, o.keys, k))
            .sum();
        expected_total += expected;
        let names: Vec<String> = idx.iter().map(|&k| key_name(&base, k)).collect();
        streams.push((
            open_stream(&conns[s % conns.len()], &names).await?,
            expected,
        ));
    }

    let sent: SendTimes = Arc::new(Mutex::new(vec![Vec::new(); o.keys]));
    let progress = Progress::new(expected_total);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let readers: Vec<_> = streams
        .into_iter()
        .map(|(ws, expected)| {
            tokio::spawn(read_stream(
                ws,
                expected,
                sent.clone(),
                progress.counter(),
                stop_rx.clone(),
            ))
        })
        .collect();

    let mut kv = conns[0].kv_client();
    let value = keys::value(o.val_size);
    let limiter = RateLimiter::new(o.put_rate);
    let timeout = Duration::from_secs_f64(g.request_timeout);
    let mut puts = Recorder::new();
    let start = Instant::now();
    for i in 0..o.put_total {
        limiter.acquire().await;
        let k = (i % o.keys as u64) as usize;
        let key = key_name(&base, k);
        let t0 = Instant::now();
        if let Some(times) = sent.lock().unwrap_or_else(|p| p.into_inner()).get_mut(k) {
            times.push(t0);
        }
        match tokio::time::timeout(timeout, kv.put(key, value.clone(), None)).await {
            Ok(Ok(_)) => puts.ok(t0.elapsed()),
            Ok(Err(e)) => puts.err(&error_code(&e), &error_message(&e)),
            Err(_) => puts.err("DeadlineExceeded", "put exceeded --request-timeout"),
        }
    }
    let puts_elapsed = start.elapsed();
    tokio::spawn(async move {
        tokio::time::sleep(GRACE).await;
        let _ = stop_tx.send(true);
    });

    let mut events = Recorder::new();
    let mut last = start;
    for r in readers {
        let (rec, l) = r.await.map_err(|e| anyhow!("watch reader failed: {e}"))?;
        events.merge(rec);
        if let Some(l) = l {
            last = last.max(l);
        }
    }
    progress.finish();
    // Best effort: leave no benchmark key behind.
    let prefix = format!("{base}/");
    let _ = kv
        .delete(
            prefix.as_str(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await;

    let mut by_kind = BTreeMap::new();
    by_kind.insert("put".to_string(), summarize(puts, puts_elapsed));
    let events_summary = summarize(events, last.duration_since(start));
    by_kind.insert("watch event".to_string(), events_summary.clone());
    Ok(Report {
        workload: "watch-latency".to_string(),
        unit: "watch event".to_string(),
        summary: events_summary,
        by_kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_spread_round_robin_over_keys() {
        assert_eq!(
            (0..3).map(|k| puts_to_key(7, 3, k)).collect::<Vec<_>>(),
            vec![3, 2, 2]
        );
        assert_eq!(puts_to_key(5, 1, 0), 5);
        assert_eq!(key_index(b"skiff-bench/watch-latency/1-2/17"), Some(17));
        assert_eq!(key_index(b"other"), None);
    }
}
