//! watch-latency: how long after a put its event reaches every watcher.
//!
//! `--streams` watch streams (spread over the connections) each carry
//! `--watchers-per-stream` watchers on one fresh key. Once every watcher is confirmed
//! created, a single writer puts that key `--put-total` times at `--put-rate`. Because only
//! this run writes the key, and etcd delivers a watcher's events in revision order, the
//! n-th event a watcher receives is the n-th put; its latency is measured from the moment
//! just before that put was sent. Events that have not arrived 10 s after the last put
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

type SendTimes = Arc<Mutex<Vec<Instant>>>;

async fn open_stream(client: &Client, key: &str, watchers: usize) -> Result<WatchStream> {
    let mut wc = client.watch_client();
    let mut ws = wc
        .watch(key, None)
        .await
        .context("opening a watch stream")?;
    for _ in 1..watchers {
        ws.watch(key, None).await.context("adding a watcher")?;
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

/// Reads one stream until each of its watchers has seen `expected` events or `stop` fires.
async fn read_stream(
    mut ws: WatchStream,
    watchers: usize,
    expected: u64,
    sent: SendTimes,
    done: Arc<std::sync::atomic::AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Recorder, Option<Instant>) {
    let mut rec = Recorder::new();
    let mut seen: HashMap<i64, u64> = HashMap::new();
    let mut last = None;
    let complete =
        |seen: &HashMap<i64, u64>| seen.len() == watchers && seen.values().all(|&n| n >= expected);
    while !complete(&seen) {
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
            let sent_at = sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(*n as usize)
                .copied();
            match sent_at {
                Some(t) => rec.ok(now.saturating_duration_since(t)),
                None => rec.err("UnexpectedEvent", "event for a put this run did not send"),
            }
            *n += 1;
            last = Some(now);
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let received: u64 = seen.values().map(|&n| n.min(expected)).sum();
    let missing = expected * watchers as u64 - received;
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
    let key = format!("skiff-bench/watch-latency/{}-{stamp}", std::process::id());
    let mut streams = Vec::with_capacity(o.streams);
    for s in 0..o.streams {
        streams.push(open_stream(&conns[s % conns.len()], &key, o.watchers_per_stream).await?);
    }

    let sent: SendTimes = Arc::new(Mutex::new(Vec::with_capacity(o.put_total as usize)));
    let progress = Progress::new(o.put_total * (o.streams * o.watchers_per_stream) as u64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let readers: Vec<_> = streams
        .into_iter()
        .map(|ws| {
            tokio::spawn(read_stream(
                ws,
                o.watchers_per_stream,
                o.put_total,
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
    for _ in 0..o.put_total {
        limiter.acquire().await;
        let t0 = Instant::now();
        sent.lock().unwrap_or_else(|p| p.into_inner()).push(t0);
        match tokio::time::timeout(timeout, kv.put(key.clone(), value.clone(), None)).await {
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
    let _ = kv.delete(key, None).await;

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
