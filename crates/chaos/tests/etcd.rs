//! The harness against real etcd 3.4: a short run with kill, pause and compaction passes;
//! deliberately unsafe setups fail with artifacts written: linearizable reads sent as
//! serializable while members are cut off by network partitions, and members restarted
//! with their WAL deleted.
//!
//! Needs `etcd` on PATH (Debian's etcd-server): under CI=true a missing etcd fails the test,
//! elsewhere the test is skipped with a message. The partition test also needs root.

use std::path::{Path, PathBuf};
use std::process::Command;

fn etcd() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("etcd"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "etcd is not installed (CI must install etcd-server)"
        );
        eprintln!("skipping: etcd is not installed");
    }
    found
}

fn out_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("chaos")
        .join(name)
}

/// Runs skiff-chaos; returns (exit code, stdout, stderr).
fn chaos(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff-chaos"))
        .args(args)
        .output()
        .expect("run skiff-chaos");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn field(summary: &str, name: &str) -> u64 {
    summary
        .split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {summary:?}"))
}

#[test]
fn etcd_under_kill_pause_and_compaction_passes() {
    let Some(etcd) = etcd() else { return };
    let out = out_dir("safe");
    let (code, stdout, stderr) = chaos(&[
        "--server-bin",
        etcd.to_str().expect("utf-8 path"),
        "--duration",
        "20s",
        "--faults",
        "kill,pause,compact",
        // etcd 3.4 has etcd #19179 (a watch resumed at the compaction revision misses the
        // deletes there); it is reported, not failed, here. Skiff runs never set this.
        "--tolerate-known-etcd-bugs",
        "--seed",
        "7",
        "--base-port",
        "22200",
        "--out-dir",
        out.to_str().expect("utf-8 path"),
    ]);
    println!("{stdout}");
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("anomalies=0 checker=ok"), "{stdout}");
    assert!(field(&stdout, "ops") > 500, "{stdout}");
    assert!(field(&stdout, "watch_events") > 500, "{stdout}");
    assert!(field(&stdout, "faults") >= 3, "{stdout}");
}

#[test]
fn serializable_reads_counted_as_linearizable_under_partitions_fail() {
    let Some(etcd) = etcd() else { return };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: the partition fault needs root");
        return;
    }
    let out = out_dir("unsafe");
    let (code, stdout, stderr) = chaos(&[
        "--server-bin",
        etcd.to_str().expect("utf-8 path"),
        "--duration",
        "10s",
        "--faults",
        "partition",
        "--unsafe-serializable-reads",
        "--seed",
        "8",
        "--base-port",
        "22300",
        "--out-dir",
        out.to_str().expect("utf-8 path"),
    ]);
    println!("{stdout}{stderr}");
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("checker=fail"), "{stdout}");
    assert!(field(&stdout, "anomalies") > 0, "{stdout}");
    assert!(
        stderr.contains("anomaly [linearizability]") || stderr.contains("anomaly [revision]"),
        "{stderr}"
    );
    let dir = out.join("8");
    for f in ["history.json", "report.json", "minimal.json", "m0.log"] {
        assert!(dir.join(f).is_file(), "{} missing", dir.join(f).display());
    }
    // The saved history re-checks to the same verdict.
    let (code, stdout, _) = chaos(&[
        "--check-history",
        dir.join("history.json").to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("checker=fail"), "{stdout}");
    // No namespace or link of the run is left behind.
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    assert!(!String::from_utf8_lossy(&netns.stdout).contains("skchaos-22300"));
}

#[test]
fn members_restarted_without_their_wal_fail() {
    let Some(etcd) = etcd() else { return };
    let out = out_dir("wipe-wal");
    let (code, stdout, stderr) = chaos(&[
        "--server-bin",
        etcd.to_str().expect("utf-8 path"),
        "--duration",
        "10s",
        "--faults",
        "kill",
        "--unsafe-wipe-wal",
        "--recover-timeout",
        "10s",
        "--seed",
        "9",
        "--base-port",
        "22400",
        "--out-dir",
        out.to_str().expect("utf-8 path"),
    ]);
    println!("{stdout}{stderr}");
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("checker=fail"), "{stdout}");
    assert!(out.join("9").join("history.json").is_file());
}
