//! Rendering a run's summary as text (etcd benchmark style) or JSON.
//!
//! The JSON form carries the same figures as the text, in seconds, so scripts (the compare
//! script) never parse the human-readable text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::Summary;

/// Everything printed for one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The subcommand that ran, e.g. "put".
    pub workload: String,
    /// What one "request" is in this workload, e.g. "watch event".
    pub unit: String,
    #[serde(flatten)]
    pub summary: Summary,
    /// Per-operation figures where a workload mixes operations (e.g. mixed: put, range).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_kind: BTreeMap<String, Summary>,
}

fn fmt_s(x: f64, precise: bool) -> String {
    if precise {
        format!("{x:.9}")
    } else {
        format!("{x:.4}")
    }
}

fn write_summary(out: &mut String, s: &Summary, precise: bool, unit: &str) {
    let f = |x| fmt_s(x, precise);
    let _ = writeln!(out, "Summary:");
    let _ = writeln!(out, "  Total:\t{} secs.", f(s.total_s));
    let _ = writeln!(out, "  Slowest:\t{} secs.", f(s.slowest_s));
    let _ = writeln!(out, "  Fastest:\t{} secs.", f(s.fastest_s));
    let _ = writeln!(out, "  Average:\t{} secs.", f(s.average_s));
    let _ = writeln!(out, "  Stddev:\t{} secs.", f(s.stddev_s));
    let _ = writeln!(out, "  Requests/sec:\t{}", fmt_s(s.requests_per_s, precise));
    let _ = writeln!(out, "  Succeeded:\t{} {unit}s", s.requests);
    let _ = writeln!(out, "  Failed:\t{}", s.errors);
    if !s.histogram.is_empty() {
        let _ = writeln!(out, "\nResponse time histogram:");
        let max = s
            .histogram
            .iter()
            .map(|b| b.count)
            .max()
            .unwrap_or(0)
            .max(1);
        for b in &s.histogram {
            let bar = "∎".repeat(usize::try_from(b.count * 40 / max).unwrap_or(40));
            let _ = writeln!(out, "  {} [{}]\t|{}", f(b.upper_s), b.count, bar);
        }
    }
    if !s.percentiles.is_empty() {
        let _ = writeln!(out, "\nLatency distribution:");
        for p in &s.percentiles {
            let _ = writeln!(out, "  {}% in {} secs.", p.percent, f(p.latency_s));
        }
    }
    if !s.errors_by_code.is_empty() {
        let _ = writeln!(out, "\nError distribution (by gRPC code):");
        for (code, e) in &s.errors_by_code {
            if e.example.is_empty() {
                let _ = writeln!(out, "  [{}]\t{code}", e.count);
            } else {
                let _ = writeln!(out, "  [{}]\t{code}: {}", e.count, e.example);
            }
        }
    }
}

impl Report {
    pub fn to_text(&self, precise: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} ({}s)", self.workload, self.unit);
        write_summary(&mut out, &self.summary, precise, &self.unit);
        for (kind, s) in &self.by_kind {
            let _ = writeln!(out, "\n--- {kind} only ---");
            write_summary(&mut out, s, precise, kind);
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Failed / (failed + succeeded); 0 when nothing ran.
    pub fn error_rate(&self) -> f64 {
        let all = self.summary.requests + self.summary.errors;
        if all == 0 {
            0.0
        } else {
            self.summary.errors as f64 / all as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{summarize, Recorder};
    use std::time::Duration;

    fn report() -> Report {
        let mut r = Recorder::new();
        for ms in 1..=10u64 {
            r.ok(Duration::from_millis(ms));
        }
        r.err("Unavailable", "etcdserver: leader changed");
        Report {
            workload: "put".into(),
            unit: "request".into(),
            summary: summarize(r, Duration::from_secs(1)),
            by_kind: BTreeMap::new(),
        }
    }

    #[test]
    fn text_has_every_section() {
        let t = report().to_text(false);
        for needle in [
            "Total:\t1.0000 secs.",
            "Slowest:\t0.0100 secs.",
            "Fastest:\t0.0010 secs.",
            "Requests/sec:\t10.0000",
            "Response time histogram:",
            "99.9% in 0.0100 secs.",
            "10% in 0.0010 secs.",
            "[1]\tUnavailable: etcdserver: leader changed",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in\n{t}");
        }
        assert!(report()
            .to_text(true)
            .contains("Slowest:\t0.010000000 secs."));
    }

    #[test]
    fn json_round_trips_figures() {
        let r = report();
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).expect("valid json");
        assert_eq!(v["workload"], "put");
        assert_eq!(v["requests"], 10);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["errors_by_code"]["Unavailable"]["count"], 1);
        assert_eq!(v["percentiles"].as_array().map(Vec::len), Some(6));
        assert!((r.error_rate() - 1.0 / 11.0).abs() < 1e-12);
    }
}
