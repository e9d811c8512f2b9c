//! `skiffctl defrag --data-dir` (offline defragmentation of a stopped member's backend)
//! against etcdctl 3.4's on etcd's data dir:
//!
//! - a stopped Skiff member's backend, grown by large values then deleted and
//!   compacted, shrinks; skiffctl prints nothing and exits 0 (as etcdctl does on etcd's
//!   dir), and the member restarted on the dir serves the same keys;
//! - while the member runs, both CLIs wait for its lock and say so in the same words;
//! - a missing data dir: both exit 2 naming the file they cannot open;
//! - etcd's bbolt file: etcdctl defragments it, skiffctl refuses it (exit 1, etcdctl's
//!   `Failed to defragment etcd data[...]` wording with the reason).
//!
//! Ports 29980-29989 belong to this file. Needs `etcd` and `etcdctl` 3.4 for the
//! comparisons (under `CI` their absence fails the test); `skiffctl` is the binary next
//! to `skiff` (`cargo build -p skiff-ctl` when running this file alone).

use crate::common;
use crate::common::skiffctl;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{have, Kind, Proc};

/// Runs `ctl` with `args`; (stdout, stderr, exit code).
fn run(ctl: &Path, args: &[&str]) -> (String, String, i32) {
    let out = Command::new(ctl)
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .args(args)
        .output()
        .expect("run the CLI");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// `defrag --data-dir <dir>` while a member holds the dir: what the CLI printed on
/// stderr in 2 s (it keeps waiting; it is then killed), with `dir` written `DIR`.
fn waiting_words(ctl: &Path, dir: &Path) -> String {
    let d = dir.to_str().expect("utf-8");
    let mut child = Command::new(ctl)
        .args(["defrag", "--data-dir", d])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the CLI");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().expect("poll").is_none(),
        "{} defrag --data-dir returned while the member runs",
        ctl.display()
    );
    child.kill().expect("kill the CLI");
    let out = child.wait_with_output().expect("CLI output");
    String::from_utf8_lossy(&out.stderr).replace(d, "DIR")
}

fn db_size(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("member/snap/db"))
        .expect("member/snap/db")
        .len()
}

#[test]
fn defrag_data_dir_matches_etcdctl() {
    let compare = have("etcd") && have("etcdctl");
    let ctl = skiffctl();

    // A Skiff member: 150 values of 100 kB (15 MB), deleted and compacted away, and one
    // kept.
    let server = Proc::start(Kind::Skiff, "dfg", 29980, 29981, None);
    let ep = format!("--endpoints={}", server.endpoint());
    let big = "x".repeat(100_000);
    for i in 0..150 {
        let (_, err, code) = run(&ctl, &[&ep, "put", &format!("k{i}"), &big]);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(run(&ctl, &[&ep, "del", "k", "--prefix"]).2, 0);
    // A big value written last sits at the end of the file, so the pages the compaction
    // frees lie below it: only a defragmentation gives them back (free pages at the end
    // are cut off the file as soon as they are free).
    let (out, err, code) = run(&ctl, &[&ep, "put", "keep", &big, "-w", "json"]);
    assert_eq!(code, 0, "{err}");
    let rev = regex::Regex::new(r#""revision":(\d+)"#)
        .expect("regex")
        .captures(&out)
        .map(|c| c[1].to_string())
        .expect("revision in put's JSON");
    assert_eq!(run(&ctl, &[&ep, "compact", &rev]).2, 0);
    let skiff_waiting = waiting_words(&ctl, &server.dir);
    assert!(
        skiff_waiting
            .contains("waiting for etcd to close and release its lock on \"DIR/member/snap/db\""),
        "{skiff_waiting}"
    );
    // Stopped as an operator stops it: a kill -9 would leave the backend at its last
    // durable commit (at most a second old; the WAL replays the rest at the next start),
    // which may precede the compaction.
    let dir = server.stop();
    let before = db_size(&dir);
    let d = dir.to_str().expect("utf-8");
    assert_eq!(
        run(&ctl, &["defrag", "--data-dir", d]),
        (String::new(), String::new(), 0)
    );
    let after = db_size(&dir);
    eprintln!("backend: {before} bytes before defrag --data-dir, {after} after");
    assert!(
        after * 2 < before,
        "defrag --data-dir left the backend at {after} bytes (was {before})"
    );
    let server = Proc::start(Kind::Skiff, "dfg", 29980, 29981, Some(dir));
    let ep = format!("--endpoints={}", server.endpoint());
    assert_eq!(
        run(&ctl, &[&ep, "get", "", "--prefix", "--keys-only"]).0,
        "keep\n\n"
    );
    assert_eq!(
        run(&ctl, &[&ep, "get", "keep", "--print-value-only"]).0,
        format!("{big}\n")
    );
    drop(server);

    // A missing data dir: both exit 2 naming the file.
    let missing = std::env::temp_dir().join(format!("skiff-dfg-missing-{}", std::process::id()));
    let m = missing.to_str().expect("utf-8");
    let (out, err, code) = run(&ctl, &["defrag", "--data-dir", m]);
    let want = format!(
        "cannot open database at {m}/member/snap/db (open {m}/member/snap/db: no such file or directory)"
    );
    assert_eq!((out.as_str(), err.trim_end(), code), ("", want.as_str(), 2));

    if !compare {
        eprintln!("note: etcd/etcdctl not installed; comparison with etcdctl skipped");
        return;
    }
    let (_, eerr, ecode) = run(Path::new("etcdctl"), &["defrag", "--data-dir", m]);
    assert_eq!(ecode, 2, "{eerr}");
    assert!(eerr.contains(&format!("panic: {want}")), "{eerr}");

    // etcd's data dir: the same waiting words while it runs; etcdctl defragments the
    // stopped member's bbolt file, skiffctl refuses it.
    let etcd = Proc::start(Kind::Etcd, "dfg", 29982, 29983, None);
    let (_, err, code) = run(
        Path::new("etcdctl"),
        &[&format!("--endpoints={}", etcd.endpoint()), "put", "a", "b"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        waiting_words(Path::new("etcdctl"), &etcd.dir),
        skiff_waiting
    );
    let edir = etcd.kill9();
    let e = edir.to_str().expect("utf-8");
    let (out, err, code) = run(&ctl, &["defrag", "--data-dir", e]);
    assert_eq!((out.as_str(), code), ("", 1), "{err}");
    assert!(
        err.starts_with(&format!(
            "Failed to defragment etcd data[{e}] (skiffctl cannot defragment etcd's bbolt"
        )),
        "{err}"
    );
    assert_eq!(
        run(Path::new("etcdctl"), &["defrag", "--data-dir", e]),
        (String::new(), String::new(), 0)
    );
    let _ = std::fs::remove_dir_all(&edir);
}
