//! Latency statistics: what a run measured, reduced to the figures the report prints.
//!
//! A [`Recorder`] keeps every successful request's latency (nanoseconds) and counts failed
//! requests by gRPC code; [`summarize`] turns it into a [`Summary`]. Keeping every sample
//! (8 bytes each) makes percentiles exact rather than bucket-approximated, which matters
//! when comparing two servers whose tails differ by less than a bucket width.
//!
//! The definitions follow etcd's benchmark tool so figures are comparable with its output:
//! - percentile p is the nearest-rank sample: the smallest sample with at least p% of all
//!   samples at or below it;
//! - stddev is the population standard deviation;
//! - the histogram has ten equal-width buckets from the fastest to the slowest sample, each
//!   counting the samples above the previous bucket's upper bound and at or below its own;
//! - requests/s counts successful requests only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Percentiles reported, in tenths of a percent so that 99.9 is exact (999).
pub const PERCENTILES_PERMILLE: [u32; 6] = [100, 500, 900, 950, 990, 999];

/// Number of histogram buckets (as etcd's tool).
pub const HISTOGRAM_BUCKETS: u64 = 10;

/// How many of the slowest requests a summary lists with their start times unless told
/// otherwise ([`list_slowest`]): to tell one long stall from several, and to place them
/// against what the server was doing.
pub const DEFAULT_SLOWEST_LISTED: usize = 10;

static SLOWEST_LISTED: AtomicUsize = AtomicUsize::new(DEFAULT_SLOWEST_LISTED);

/// Sets how many of the slowest requests every summary of this process lists (at least
/// one: the slowest request's start is always reported).
pub fn list_slowest(n: usize) {
    SLOWEST_LISTED.store(n.max(1), Ordering::Relaxed);
}

fn slowest_listed() -> usize {
    SLOWEST_LISTED.load(Ordering::Relaxed)
}

/// Failures of one kind: how many, and one message as an example for diagnosis.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ErrorCount {
    pub count: u64,
    pub example: String,
}

/// Raw outcome of requests, merged from every client at the end of a run.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    latencies_ns: Vec<u64>,
    errors: BTreeMap<String, ErrorCount>,
    /// The slowest requests so far (as many as [`list_slowest`] said), slowest first:
    /// each one's latency and when it was recorded (its end).
    slowest: Vec<(u64, SystemTime)>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one successful request.
    pub fn ok(&mut self, latency: Duration) {
        // A single request longer than u64 nanoseconds (584 years) cannot happen.
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latencies_ns.push(ns);
        let full = self.slowest.len() >= slowest_listed();
        if !full || self.slowest.last().is_some_and(|&(least, _)| ns > least) {
            self.keep_slow(ns, SystemTime::now());
        }
    }

    /// Adds one request to the slowest kept, if it is among them.
    fn keep_slow(&mut self, ns: u64, at: SystemTime) {
        let listed = slowest_listed();
        let i = self.slowest.partition_point(|&(kept, _)| kept >= ns);
        if i < listed {
            self.slowest.insert(i, (ns, at));
            self.slowest.truncate(listed);
        }
    }

    /// Records one failed request under its gRPC code (or another short error class).
    pub fn err(&mut self, code: &str, message: &str) {
        self.err_n(code, message, 1);
    }

    /// Records `n` failures of one class at once (e.g. events that never arrived).
    pub fn err_n(&mut self, code: &str, message: &str, n: u64) {
        if n == 0 {
            return;
        }
        let e = self.errors.entry(code.to_string()).or_default();
        if e.count == 0 {
            e.example = message.to_string();
        }
        e.count += n;
    }

    pub fn merge(&mut self, other: Recorder) {
        self.latencies_ns.extend(other.latencies_ns);
        self.slowest.extend(other.slowest);
        self.slowest
            .sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
        self.slowest.truncate(slowest_listed());
        for (code, e) in other.errors {
            let mine = self.errors.entry(code).or_default();
            if mine.count == 0 {
                mine.example = e.example;
            }
            mine.count += e.count;
        }
    }

    #[cfg(test)]
    pub fn ok_count(&self) -> u64 {
        self.latencies_ns.len() as u64
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().map(|e| e.count).sum()
    }
}

/// One histogram bucket: samples in (previous upper bound, `upper_s`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub upper_s: f64,
    pub count: u64,
}

/// One of the slowest requests of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowRequest {
    /// When it began, in seconds since the Unix epoch.
    pub began_unix_s: f64,
    pub latency_s: f64,
}

/// One reported percentile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentile {
    /// e.g. 99.9
    pub percent: f64,
    pub latency_s: f64,
}

/// The reduced figures of a run (all times in seconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub total_s: f64,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_s: f64,
    pub slowest_s: f64,
    /// When the slowest request began, in seconds since the Unix epoch (to place it
    /// against what the server was doing, e.g. `bench/defrag.sh`).
    pub slowest_began_unix_s: Option<f64>,
    /// The slowest requests (as many as [`list_slowest`] said), slowest first.
    pub slowest_requests: Vec<SlowRequest>,
    pub fastest_s: f64,
    pub average_s: f64,
    pub stddev_s: f64,
    pub histogram: Vec<Bucket>,
    pub percentiles: Vec<Percentile>,
    pub errors_by_code: BTreeMap<String, ErrorCount>,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Nearest-rank percentile of sorted samples; `permille` is the percentile times ten.
/// Returns `None` for no samples.
pub fn percentile(sorted: &[u64], permille: u32) -> Option<u64> {
    let n = sorted.len() as u128;
    if n == 0 {
        return None;
    }
    // rank = ceil(p/100 * n) = ceil(permille * n / 1000), in integers so 99.9 is exact.
    let rank = (u128::from(permille) * n).div_ceil(1000).max(1);
    let idx = usize::try_from(rank - 1).expect("rank <= len");
    Some(sorted[idx.min(sorted.len() - 1)])
}

/// Ten equal-width buckets from the fastest to the slowest of sorted samples.
pub fn histogram(sorted: &[u64]) -> Vec<(u64, u64)> {
    let (Some(&fastest), Some(&slowest)) = (sorted.first(), sorted.last()) else {
        return Vec::new();
    };
    if fastest == slowest {
        return vec![(slowest, sorted.len() as u64)];
    }
    let span = u128::from(slowest - fastest);
    let uppers: Vec<u64> = (1..=u128::from(HISTOGRAM_BUCKETS))
        .map(|i| {
            let off = span * i / u128::from(HISTOGRAM_BUCKETS);
            fastest + u64::try_from(off).expect("offset <= span")
        })
        .collect();
    let mut counts = vec![0u64; uppers.len()];
    let mut b = 0;
    for &x in sorted {
        while x > uppers[b] {
            b += 1;
        }
        counts[b] += 1;
    }
    uppers.into_iter().zip(counts).collect()
}

/// Mean and population standard deviation, in nanoseconds.
pub fn mean_stddev(samples: &[u64]) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = samples
        .iter()
        .map(|&x| {
            let d = x as f64 - mean;
            d * d
        })
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

/// When a request that took `ns` and ended at `end` began, in seconds since the epoch.
fn began(ns: u64, end: SystemTime) -> Option<f64> {
    let began = end.checked_sub(Duration::from_nanos(ns))?;
    Some(
        began
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs_f64(),
    )
}

/// Reduces a recorder to its summary; `elapsed` is the wall time of the whole run.
pub fn summarize(mut rec: Recorder, elapsed: Duration) -> Summary {
    rec.latencies_ns.sort_unstable();
    let lats = &rec.latencies_ns;
    let (mean, stddev) = mean_stddev(lats);
    let total_s = elapsed.as_secs_f64();
    let requests = lats.len() as u64;
    Summary {
        total_s,
        requests,
        errors: rec.error_count(),
        requests_per_s: if total_s > 0.0 {
            requests as f64 / total_s
        } else {
            0.0
        },
        slowest_s: lats.last().map_or(0.0, |&x| secs(x)),
        slowest_began_unix_s: rec.slowest.first().and_then(|&(ns, end)| began(ns, end)),
        slowest_requests: rec
            .slowest
            .iter()
            .filter_map(|&(ns, end)| {
                Some(SlowRequest {
                    began_unix_s: began(ns, end)?,
                    latency_s: secs(ns),
                })
            })
            .collect(),
        fastest_s: lats.first().map_or(0.0, |&x| secs(x)),
        average_s: mean / 1e9,
        stddev_s: stddev / 1e9,
        histogram: histogram(lats)
            .into_iter()
            .map(|(upper, count)| Bucket {
                upper_s: secs(upper),
                count,
            })
            .collect(),
        percentiles: PERCENTILES_PERMILLE
            .iter()
            .filter_map(|&pm| {
                percentile(lats, pm).map(|x| Percentile {
                    percent: f64::from(pm) / 10.0,
                    latency_s: secs(x),
                })
            })
            .collect(),
        errors_by_code: rec.errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 100), Some(1));
        assert_eq!(percentile(&v, 500), Some(5));
        assert_eq!(percentile(&v, 900), Some(9));
        assert_eq!(percentile(&v, 950), Some(10));
        assert_eq!(percentile(&v, 990), Some(10));
        assert_eq!(percentile(&v, 999), Some(10));
        let v: Vec<u64> = (1..=1000).collect();
        // 99.9% of 1000 is exactly rank 999: no floating-point rounding up to 1000.
        assert_eq!(percentile(&v, 999), Some(999));
        assert_eq!(percentile(&v, 990), Some(990));
        assert_eq!(percentile(&v, 100), Some(100));
        assert_eq!(percentile(&[7], 999), Some(7));
        assert_eq!(percentile(&[7], 0), Some(7));
        assert_eq!(percentile(&[], 500), None);
    }

    #[test]
    fn histogram_equal_width_buckets() {
        let v: Vec<u64> = (1..=10).collect();
        let h = histogram(&v);
        assert_eq!(h.len(), 10);
        assert!(h.iter().all(|&(_, c)| c == 1), "{h:?}");
        assert_eq!(h.last(), Some(&(10, 1)));

        // 0..=100 step 1: bucket bounds 10,20,...,100; first bucket holds 0..=10.
        let v: Vec<u64> = (0..=100).collect();
        let h = histogram(&v);
        assert_eq!(h[0], (10, 11));
        assert!(h[1..].iter().all(|&(_, c)| c == 10), "{h:?}");
        assert_eq!(h.iter().map(|b| b.1).sum::<u64>(), 101);

        assert_eq!(histogram(&[5, 5, 5]), vec![(5, 3)]);
        assert!(histogram(&[]).is_empty());
    }

    #[test]
    fn mean_and_population_stddev() {
        let (m, s) = mean_stddev(&[2, 4, 4, 4, 5, 5, 7, 9]);
        assert!((m - 5.0).abs() < 1e-12);
        assert!((s - 2.0).abs() < 1e-12);
        assert_eq!(mean_stddev(&[]), (0.0, 0.0));
        assert_eq!(mean_stddev(&[3, 3]), (3.0, 0.0));
    }

    /// The slowest request's start is kept across merges: its end minus its latency.
    #[test]
    fn when_the_slowest_request_began() {
        let before = SystemTime::now();
        let mut a = Recorder::new();
        a.ok(Duration::from_millis(5));
        a.ok(Duration::from_millis(300));
        a.ok(Duration::from_millis(7));
        let mut b = Recorder::new();
        b.ok(Duration::from_millis(40));
        a.merge(b);
        let after = SystemTime::now();
        let s = summarize(a, Duration::from_secs(1));
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        let began = s.slowest_began_unix_s.unwrap();
        assert!(began >= unix(before) - 0.300 - 1e-6, "{began}");
        assert!(began <= unix(after) - 0.300 + 1e-6, "{began}");
        assert_eq!(
            summarize(Recorder::new(), Duration::ZERO).slowest_began_unix_s,
            None
        );
    }

    /// The slowest requests are kept across merges, slowest first, at most
    /// [`DEFAULT_SLOWEST_LISTED`] of them, each with its start.
    #[test]
    fn the_slowest_requests_are_listed() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        for ms in 1..=30u64 {
            // Interleaved over two recorders, in no order.
            let ms = (ms * 7) % 31;
            if ms % 2 == 0 { &mut a } else { &mut b }.ok(Duration::from_millis(ms));
        }
        a.merge(b);
        let s = summarize(a, Duration::from_secs(1));
        let got: Vec<u64> = s
            .slowest_requests
            .iter()
            .map(|r| (r.latency_s * 1e3).round() as u64)
            .collect();
        assert_eq!(got, (21..=30).rev().collect::<Vec<_>>());
        assert_eq!(
            s.slowest_began_unix_s,
            Some(s.slowest_requests[0].began_unix_s)
        );
        let mut few = Recorder::new();
        few.ok(Duration::from_millis(2));
        few.ok(Duration::from_millis(9));
        let s = summarize(few, Duration::from_secs(1));
        assert_eq!(s.slowest_requests.len(), 2);
        assert!(s.slowest_requests[0].latency_s > s.slowest_requests[1].latency_s);
    }

    #[test]
    fn summary_of_known_run() {
        let mut r = Recorder::new();
        for ms in 1..=100u64 {
            r.ok(Duration::from_millis(ms));
        }
        let mut other = Recorder::new();
        other.err("Unavailable", "etcdserver: leader changed");
        other.err("Unavailable", "second");
        other.err("DeadlineExceeded", "timeout");
        r.merge(other);
        let s = summarize(r, Duration::from_secs(2));
        assert_eq!(s.requests, 100);
        assert_eq!(s.errors, 3);
        assert!((s.requests_per_s - 50.0).abs() < 1e-9);
        assert!((s.fastest_s - 0.001).abs() < 1e-12);
        assert!((s.slowest_s - 0.100).abs() < 1e-12);
        assert!((s.average_s - 0.0505).abs() < 1e-12);
        let p: Vec<(f64, f64)> = s
            .percentiles
            .iter()
            .map(|p| (p.percent, p.latency_s))
            .collect();
        assert_eq!(
            p,
            vec![
                (10.0, 0.010),
                (50.0, 0.050),
                (90.0, 0.090),
                (95.0, 0.095),
                (99.0, 0.099),
                (99.9, 0.100)
            ]
        );
        assert_eq!(s.errors_by_code["Unavailable"].count, 2);
        assert_eq!(
            s.errors_by_code["Unavailable"].example,
            "etcdserver: leader changed"
        );
        assert_eq!(s.errors_by_code["DeadlineExceeded"].count, 1);
        assert_eq!(s.histogram.iter().map(|b| b.count).sum::<u64>(), 100);
    }
}
