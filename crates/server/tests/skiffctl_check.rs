//! `skiffctl check perf|datascale` (issue 16) against etcdctl 3.4: the same steps run
//! with both CLIs against a fresh Skiff member and a fresh etcd 3.4 member: unknown
//! loads, a prefix that already holds keys, a full `check perf` (60 s of paced puts)
//! with `--auto-compact --auto-defrag`, a `check datascale`, and what the checks leave
//! behind (nothing). The numbers are timing (throughput, latencies, memory, the
//! revision compacted at) and so is whether a bound was met: the transcripts are
//! compared after masking them (and etcdctl's progress bar, which it draws on stdout
//! whatever stdout is); skiffctl's extra verdict sentence (stderr) must be there and is
//! then left out. The two CLIs run side by side, each against its own fresh member (a
//! full `check perf` takes its 60 s whatever the machine does), so the member's port is
//! masked too.
//!
//! Ports 29880-29889 belong to this file. Needs `etcd` and `etcdctl` 3.4 (under `CI`
//! their absence fails the tests); `skiffctl` is the binary next to `skiff` (`cargo
//! build -p skiff-ctl` when running this file alone).

use crate::common;
use crate::common::skiffctl;

use common::{have, Kind, Proc};
use regex::Regex;

const SCRIPT: &[&str] = &[
    "$E check perf --load x",
    "$E check datascale --load huge",
    "$E put /etcdctl-check-perf/x 1 > /dev/null; $E check perf; $E del /etcdctl-check-perf/x",
    "$E put /dsx/a 1 > /dev/null; $E check datascale --prefix /dsx/; $E del /dsx/a",
    "$E check perf --load small --auto-compact --auto-defrag",
    "$E check datascale --auto-compact",
    "$E get '' --prefix --keys-only",
];

fn run(kind: Kind, ctl: &str, client: u16) -> String {
    let server = Proc::start(kind, "t", client, client + 1, None);
    let vars = [(
        "E",
        format!(
            "{ctl} --endpoints={} --command-timeout=30s",
            server.endpoint()
        ),
    )];
    let out = common::sh_transcript(SCRIPT, &vars);
    drop(server);
    out
}

/// Masks the timing: etcdctl's progress bar, numbers, which bound was met.
fn mask(s: &str) -> String {
    // The bar's frames (`\r 12 / 60   20.00% 00m48s`) share lines with what etcdctl
    // prints while the bar runs.
    let frame = Regex::new(r"\r *\d+ / \d+ +[0-9.]+%(?: [0-9hms]+)?").expect("regex");
    let s: String = s
        .lines()
        .filter_map(|l| {
            if !l.contains('\r') {
                return Some(format!("{l}\n"));
            }
            let t = frame.replace_all(l, "");
            (!t.trim().is_empty()).then(|| format!("{t}\n"))
        })
        .collect();
    let rules: &[(&str, &str)] = &[
        (
            r"(?m)^(PASS: Throughput is|FAIL: Throughput too low:) \d+ writes/s$",
            "THROUGHPUT N writes/s",
        ),
        (
            r"(?m)^(PASS: Slowest request took|Slowest request took too long:) [0-9.]+s$",
            "SLOWEST Xs",
        ),
        (
            r"(?m)^(PASS: Stddev is|Stddev too high:) [0-9.]+s$",
            "STDDEV Xs",
        ),
        (r"(?m)^(PASS|FAIL)$", "VERDICT"),
        (r"memory used : -?[0-9.]+ MB", "memory used : X MB"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:PORT"),
        (
            r"(Compacting|Compacted) with revision \d+",
            "$1 with revision N",
        ),
        (
            r"(?m)^(\$ .*check perf --load small.*\n(?:.*\n)*?)\[exit [01]\]",
            "$1[exit V]",
        ),
    ];
    let mut s = s;
    for (re, with) in rules {
        s = Regex::new(re)
            .expect("valid regex")
            .replace_all(&s, *with)
            .into_owned();
    }
    s
}

/// Runs the script with etcdctl against a member on `client` and with skiffctl against
/// one on `client + 4`, at the same time.
fn compare(kind: Kind, client: u16, label: &str) {
    let ctl = skiffctl();
    let etcdctl_side = std::thread::spawn(move || run(kind, "etcdctl", client));
    let with_skiffctl = run(kind, ctl.to_str().expect("utf-8 path"), client + 4);
    let with_etcdctl = etcdctl_side.join().expect("etcdctl side");
    let verdict = Regex::new(r"(?m)^Verdict: (PASS|FAIL): the .* load .*\n").expect("regex");
    assert!(
        verdict.is_match(&with_skiffctl),
        "{label}: no verdict sentence:\n{with_skiffctl}"
    );
    let skiff_side = verdict.replace_all(&with_skiffctl, "").into_owned();
    let (a, b) = (mask(&with_etcdctl), mask(&skiff_side));
    common::assert_same_transcript(&format!("skiffctl-check-{label}"), &a, &b);
    for shows in [
        "Error: unknown load option x\n[exit 4]",
        "has keys. Delete with etcdctl del --prefix",
        "THROUGHPUT N writes/s\nSLOWEST Xs\nSTDDEV Xs\nVERDICT\n",
        "Defragmented \"127.0.0.1:PORT\"",
        "Start data scale check for work load [10000 key-value pairs, 1024 bytes per key-value, 50 concurrent clients].",
        "PASS: Approximate system memory used : X MB.",
    ] {
        assert!(b.contains(shows), "{label}: expected {shows:?} in:\n{b}");
    }
    eprintln!("{label}: {} masked lines, identical", b.lines().count());
}

#[test]
fn check_matches_etcdctl_against_skiff() {
    if !have("etcdctl") {
        eprintln!("note: etcdctl not installed; comparison skipped");
        return;
    }
    compare(Kind::Skiff, 29880, "skiff");
}

#[test]
fn check_matches_etcdctl_against_etcd() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; comparison skipped");
        return;
    }
    compare(Kind::Etcd, 29882, "etcd");
}
