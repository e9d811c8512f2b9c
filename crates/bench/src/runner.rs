//! The closed-loop request driver shared by the request/response workloads.
//!
//! `--clients` workers run concurrently; each repeatedly claims the next request number
//! from a shared counter (so exactly `--total` requests are issued, however fast each
//! worker is), waits for the rate limiter, issues one request and records its latency, or
//! its error class if it failed or exceeded the per-request timeout. Each worker records
//! into its own [`Recorder`] and the recorders are merged at the end, so recording adds no
//! contention to the measured path. Wall time runs from the first claim to the last reply.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::conn::{error_code, error_message};
use crate::progress::Progress;
use crate::rate::RateLimiter;
use crate::stats::Recorder;

/// One client's request loop body.
pub trait Worker: Send + 'static {
    /// Issues request number `idx`; on success returns the kind of operation done
    /// (e.g. "put"), so mixed workloads can be reported per kind.
    fn call(
        &mut self,
        idx: u64,
    ) -> impl Future<Output = Result<&'static str, etcd_client::Error>> + Send;
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    pub overall: Recorder,
    pub by_kind: BTreeMap<&'static str, Recorder>,
    pub elapsed: Duration,
}

/// Runs `total` requests over `workers`, returning every latency and error.
pub async fn run<W: Worker>(
    workers: Vec<W>,
    total: u64,
    limiter: Arc<RateLimiter>,
    timeout: Duration,
    progress: &Progress,
) -> Result<Outcome> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(workers.len());
    for mut w in workers {
        let next = next.clone();
        let limiter = limiter.clone();
        let done = progress.counter();
        tasks.push(tokio::spawn(async move {
            let mut overall = Recorder::new();
            let mut by_kind: BTreeMap<&'static str, Recorder> = BTreeMap::new();
            loop {
                let idx = next.fetch_add(1, Ordering::Relaxed);
                if idx >= total {
                    break;
                }
                limiter.acquire().await;
                let t0 = Instant::now();
                let res = tokio::time::timeout(timeout, w.call(idx)).await;
                let lat = t0.elapsed();
                match res {
                    Ok(Ok(kind)) => {
                        overall.ok(lat);
                        by_kind.entry(kind).or_default().ok(lat);
                    }
                    Ok(Err(e)) => overall.err(&error_code(&e), &error_message(&e)),
                    Err(_) => overall.err("DeadlineExceeded", "request exceeded --request-timeout"),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (overall, by_kind)
        }));
    }
    let mut overall = Recorder::new();
    let mut by_kind: BTreeMap<&'static str, Recorder> = BTreeMap::new();
    for t in tasks {
        let (o, k) = t.await.map_err(|e| anyhow!("client task failed: {e}"))?;
        overall.merge(o);
        for (kind, r) in k {
            by_kind.entry(kind).or_default().merge(r);
        }
    }
    Ok(Outcome {
        overall,
        by_kind,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        fail_every: u64,
    }

    impl Worker for Fake {
        #[allow(clippy::manual_async_fn)]
        fn call(
            &mut self,
            idx: u64,
        ) -> impl Future<Output = Result<&'static str, etcd_client::Error>> + Send {
            let fail = self.fail_every > 0 && idx.is_multiple_of(self.fail_every);
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if fail {
                    Err(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
                        "etcdserver: leader changed",
                    )))
                } else if idx.is_multiple_of(2) {
                    Ok("even")
                } else {
                    Ok("odd")
                }
            }
        }
    }

    #[tokio::test]
    async fn issues_exactly_total_requests() {
        let workers: Vec<Fake> = (0..7).map(|_| Fake { fail_every: 0 }).collect();
        let out = run(
            workers,
            101,
            Arc::new(RateLimiter::new(0)),
            Duration::from_secs(5),
            &Progress::hidden(),
        )
        .await
        .expect("runs");
        assert_eq!(out.overall.ok_count(), 101);
        assert_eq!(out.by_kind["even"].ok_count(), 51);
        assert_eq!(out.by_kind["odd"].ok_count(), 50);
    }

    #[tokio::test]
    async fn failures_are_counted_by_code_not_timed() {
        let workers: Vec<Fake> = (0..3).map(|_| Fake { fail_every: 10 }).collect();
        let out = run(
            workers,
            100,
            Arc::new(RateLimiter::new(0)),
            Duration::from_secs(5),
            &Progress::hidden(),
        )
        .await
        .expect("runs");
        assert_eq!(out.overall.ok_count(), 90);
        assert_eq!(out.overall.error_count(), 10);
        let s = crate::stats::summarize(out.overall, out.elapsed);
        assert_eq!(s.errors_by_code["Unavailable"].count, 10);
        assert_eq!(
            s.errors_by_code["Unavailable"].example,
            "etcdserver: leader changed"
        );
    }

    #[tokio::test]
    async fn rate_limit_bounds_throughput() {
        let workers: Vec<Fake> = (0..4).map(|_| Fake { fail_every: 0 }).collect();
        let out = run(
            workers,
            21,
            Arc::new(RateLimiter::new(100)),
            Duration::from_secs(5),
            &Progress::hidden(),
        )
        .await
        .expect("runs");
        // 21 requests at 100/s: at least 200 ms from the first start to the last.
        assert!(
            out.elapsed >= Duration::from_millis(195),
            "{:?}",
            out.elapsed
        );
    }
}
