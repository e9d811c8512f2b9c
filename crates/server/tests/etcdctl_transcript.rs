//! The same etcdctl 3.4 script against a fresh single `etcd` 3.4 and a fresh single
//! `skiff`: the transcripts (stdout, stderr and exit code of every command), with IDs,
//! terms, raft indices, db sizes, hashes, versions, ports and timings masked, must be
//! identical. Ports 23430-23439 belong to this file. Needs `etcd` and `etcdctl`
//! (Debian's etcd-server / etcd-client, installed by .ci/run); without them the test
//! says so and checks nothing.

mod common;

use std::process::Command;

use common::{have, Kind, Proc};
use regex::Regex;

/// The script: each step is a shell snippet; `$E` is etcdctl aimed at the server,
/// `$BIG` a file of 2,000,000 bytes.
const SCRIPT: &[&str] = &[
    "$E put foo bar",
    "$E put foo1 bar1",
    "$E put foo2 bar2",
    "$E put zoo z",
    "$E put foo bar-again --prev-kv",
    "$E get foo",
    "$E get foo --prefix",
    "$E get foo1 --from-key",
    "$E get foo --prefix --limit 2",
    "$E get foo --prefix --sort-by=MODIFY --order=DESCEND",
    "$E get foo --prefix --sort-by=VALUE --order=ASCEND --keys-only",
    "$E get foo --prefix --keys-only",
    "$E get foo --rev 2",
    "$E get foo -w json",
    "$E get foo --prefix -w fields",
    "$E get foo -w table",
    "$E get nothing-here",
    "$E del foo1 --prev-kv",
    "$E del nothing-here",
    "$E del foo --prefix --prev-kv -w json",
    "printf 'value(\"zoo\") = \"z\"\\n\\nput zoo z2\\nput x y\\n\\nput zoo never\\n\\n' | $E txn --interactive",
    "printf 'mod(\"zoo\") < \"3\"\\n\\nput a 1\\n\\nget zoo\\n\\n' | $E txn -w json",
    "$E compact 4",
    "$E get zoo --rev 3",
    "$E get zoo --rev 100",
    "timeout 2 $E watch zoo --rev 4; echo \"[watch exit $?]\"",
    "timeout 2 $E watch --prefix '' --rev 9 --prev-kv; echo \"[watch exit $?]\"",
    "L=$($E lease grant 100 | cut -d' ' -f2); $E put lk lv --lease=$L && $E lease timetolive $L --keys && $E lease list && $E lease keep-alive --once $L && $E lease revoke $L && $E get lk && $E lease timetolive $L",
    // A TTL below the minimum is raised to it (2 s); revoked at once so that timing
    // never decides what later steps see.
    "L=$($E lease grant 1 | cut -d' ' -f2); $E lease timetolive $L && $E lease revoke $L",
    "$E lease revoke 1234",
    "$E put big < $BIG",
    "$E member list",
    "$E member list -w json",
    "$E endpoint status",
    "$E endpoint health",
    "$E endpoint hashkv",
    "$E alarm list",
    "$E get '' --prefix --keys-only",
    "$E put zoo --ignore-value",
    "$E put nokey --ignore-value",
    "$E put zoo z3 --ignore-lease",
    "$E get zoo --print-value-only",
    "$E get foo2 --from-key --limit 1 -w json",
    "$E get zoo --consistency=s -w json",
    "$E compaction --physical 11",
    "$E del '' --from-key",
    "$E get '' --from-key -w json",
    "$E member list -w table",
    "$E endpoint status -w json",
    "$E lease list -w json",
];

fn run_script(endpoint: &str, big: &std::path::Path) -> String {
    let mut out = String::new();
    for step in SCRIPT {
        let result = Command::new("sh")
            .arg("-c")
            .arg(step)
            .env(
                "E",
                format!("etcdctl --endpoints={endpoint} --command-timeout=5s"),
            )
            .env("BIG", big)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("run sh");
        out.push_str(&format!("$ {step}\n"));
        out.push_str(&String::from_utf8_lossy(&result.stdout));
        out.push_str(&String::from_utf8_lossy(&result.stderr));
        out.push_str(&format!("[exit {}]\n", result.status.code().unwrap_or(-1)));
    }
    out
}

/// Masks what legitimately differs between two servers.
fn mask(transcript: &str) -> String {
    let rules: &[(&str, &str)] = &[
        // The client's retry warnings carry timestamps and random target names.
        (r#"(?m)^\{"level":"warn".*\n"#, ""),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:PORT"),
        // endpoint hashkv (before IDs: a hash can look like a hex ID).
        (r"(?m)^(127\.0\.0\.1:PORT), \d+$", "$1, HASH"),
        (r"\b[0-9a-f]{10,16}\b", "ID"),
        (
            r#""(cluster_id|member_id|raft_term|ID|hash)":\d+"#,
            "\"$1\":N",
        ),
        (r#""(ClusterID|MemberID|RaftTerm)" : \d+"#, "\"$1\" : N"),
        // endpoint status: ID, version, db size, leader, learner, term, index, applied.
        (
            r"(?m)^(127\.0\.0\.1:PORT, ID), [^,]+, [^,]+, (true|false), (true|false), \d+, \d+, \d+, ",
            "$1, VERSION, DBSIZE, $2, $3, TERM, INDEX, INDEX, ",
        ),
        (r"took = \S+", "took = T"),
        // Status as JSON: versions, sizes, leader, raft positions.
        (
            r#""(dbSize|leader|raftIndex|raftTerm|raftAppliedIndex|dbSizeInUse)":\d+"#,
            "\"$1\":X",
        ),
        (r#""version":"[^"]*""#, "\"version\":X"),
        (r#""id":\d+"#, "\"id\":N"),
        (r"remaining\(\d+s\)", "remaining(Ns)"),
    ];
    let mut s = transcript.to_string();
    for (re, with) in rules {
        s = Regex::new(re)
            .expect("valid regex")
            .replace_all(&s, *with)
            .into_owned();
    }
    s
}

#[test]
fn etcdctl_transcript_matches_etcd() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; transcript comparison skipped");
        return;
    }
    let big = std::env::temp_dir().join(format!("skiff-2mb-{}", std::process::id()));
    std::fs::write(&big, vec![b'x'; 2_000_000]).expect("write big value");

    let etcd = Proc::start(Kind::Etcd, "t", 23430, 23431, None);
    let etcd_out = run_script(&etcd.endpoint(), &big);
    drop(etcd);
    let skiff = Proc::start(Kind::Skiff, "t", 23432, 23433, None);
    let skiff_out = run_script(&skiff.endpoint(), &big);
    drop(skiff);
    let _ = std::fs::remove_file(&big);

    let (a, b) = (mask(&etcd_out), mask(&skiff_out));
    let out_dir = std::env::temp_dir();
    std::fs::write(out_dir.join("skiff-transcript-etcd.txt"), &a).ok();
    std::fs::write(out_dir.join("skiff-transcript-skiff.txt"), &b).ok();
    if a != b {
        let mut report = String::new();
        for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
            if x != y {
                report.push_str(&format!("line {}:\n  etcd:  {x}\n  skiff: {y}\n", i + 1));
            }
        }
        let (la, lb) = (a.lines().count(), b.lines().count());
        if la != lb {
            report.push_str(&format!("line counts differ: etcd {la}, skiff {lb}\n"));
        }
        panic!(
            "masked transcripts differ (full texts in {}):\n{report}",
            out_dir.display()
        );
    }
    // The comparison is only meaningful if the script really ran.
    assert!(a.contains("bar-again"), "script did not run:\n{a}");
}
