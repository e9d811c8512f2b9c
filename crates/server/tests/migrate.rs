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

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{cluster_members, have, Member};
use serde_json::Value;

/// Both servers' flags: fast elections, and the cheapest bcrypt cost (a debug build's
/// bcrypt at etcd's default cost makes every login slow on a loaded machine; the
/// hashes are `$2a$`/`$2b$` at any cost).
const TIMING: &[&str] = &[
    "--heartbeat-interval",
    "50",
    "--election-timeout",
    "500",
    "--bcrypt-cost",
    "4",
];
const START_WITHIN: Duration = Duration::from_secs(30);
const ROOT: &str = "root:rootpw";
const ALICE: &str = "alice:alicepw";
const BOB: &str = "bob:bobpw";

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

/// [`auth_transcript`], and bob (added in the WAL) may read `d`, not write it.
fn bob_and_alice(ep: &str) -> Vec<Result<String, String>> {
    let mut got = auth_transcript(ep);
    let read = try_ctl(ep, Some(BOB), &["get", "d"]);
    assert!(read.as_ref().is_ok_and(|o| o.contains("dv")), "{read:?}");
    let write = try_ctl(ep, Some(BOB), &["put", "d", "x"]);
    assert!(
        write
            .as_ref()
            .is_err_and(|e| e.contains("permission denied")),
        "{write:?}"
    );
    got.extend([read, write]);
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

/// `etcdctl txn` with `input` (compares, blank line, success ops, blank line, failure
/// ops, blank line) on stdin.
fn txn(endpoint: &str, user: &str, input: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg(format!("--user={user}"))
        .arg("txn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run etcdctl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "etcdctl txn: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The current revision `endpoint` reports.
fn revision(endpoint: &str, user: Option<&str>) -> i64 {
    let v = json(&ctl(endpoint, user, &["endpoint", "status", "-w", "json"]));
    v[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("revision")
}

/// (hash, compact revision) of HashKV at `rev`.
fn hash_kv(endpoint: &str, user: Option<&str>, rev: i64) -> (u64, i64) {
    let v = json(&ctl(
        endpoint,
        user,
        &[
            "endpoint",
            "hashkv",
            "--rev",
            &rev.to_string(),
            "-w",
            "json",
        ],
    ));
    (
        v[0]["HashKV"]["hash"].as_u64().expect("hash"),
        v[0]["HashKV"]["compact_revision"].as_i64().unwrap_or(0),
    )
}

/// Every key with its revisions, as etcdctl prints them.
fn all_keys(endpoint: &str, user: Option<&str>) -> Value {
    json(&ctl(endpoint, user, &["get", "", "--prefix", "-w", "json"]))["kvs"].clone()
}

/// The lease ID etcdctl's `lease grant` printed.
fn lease_id(out: &str) -> String {
    out.split_whitespace().nth(1).expect("lease id").to_string()
}

/// Copies the directory tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// What etcd served: (revision, keys, HashKV, leases).
fn served(ep: &str) -> (i64, Value, (u64, i64), String) {
    let rev = revision(ep, Some(ROOT));
    (
        rev,
        all_keys(ep, Some(ROOT)),
        hash_kv(ep, Some(ROOT), rev),
        ctl(ep, Some(ROOT), &["lease", "list"]),
    )
}

/// An etcd 3.4 member that never commits its backend batch (`--backend-batch-interval`
/// 1h) after a compaction (which commits it), killed with SIGKILL: the entries after
/// the compaction are only in its WAL.
#[test]
fn a_killed_etcd_members_wal_beyond_its_db_is_replayed() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lazy = [
        "--backend-batch-interval",
        "1h",
        "--backend-batch-limit",
        "1000000",
        "--snapshot-count",
        "1000000",
    ];
    let mut etcd = etcd_member(28350, &dir.path().join("etcd"), &lazy);
    etcd.spawn();
    etcd.wait_serving(START_WITHIN);
    let ep = etcd.endpoint();
    for i in 0..20 {
        ctl(&ep, None, &["put", &format!("k{i:03}"), &format!("v{i}")]);
    }
    // Enabling auth and compacting commit etcd's backend...
    set_up_auth(&ep);
    let root = Some(ROOT);
    ctl(&ep, root, &["compact", "10"]);
    // ...what follows is only in the WAL.
    ctl(&ep, root, &["put", "k000", "again"]);
    ctl(&ep, root, &["del", "k005"]);
    ctl(&ep, root, &["del", "k01", "--prefix"]);
    let out = txn(
        &ep,
        ROOT,
        "value(\"k000\") = \"again\"\n\nput t1 yes\ndel k019\n\nput t1 no\n\n",
    );
    assert!(out.starts_with("SUCCESS"), "{out}");
    let kept = lease_id(&ctl(&ep, root, &["lease", "grant", "600"]));
    ctl(
        &ep,
        root,
        &["put", "leased", "x", &format!("--lease={kept}")],
    );
    let gone = lease_id(&ctl(&ep, root, &["lease", "grant", "300"]));
    ctl(
        &ep,
        root,
        &["put", "gone1", "x", &format!("--lease={gone}")],
    );
    ctl(
        &ep,
        root,
        &["put", "gone2", "x", &format!("--lease={gone}")],
    );
    ctl(&ep, root, &["lease", "revoke", &gone]);
    // Auth changes too (etcd 3.4 logs the password in clear and hashes it at apply).
    ctl(&ep, root, &["role", "add", "w"]);
    ctl(&ep, root, &["role", "grant-permission", "w", "read", "d"]);
    ctl(&ep, root, &["put", "d", "dv"]);
    ctl(&ep, root, &["user", "add", BOB]);
    ctl(&ep, root, &["user", "grant-role", "bob", "w"]);
    // etcd 3.4 checks a put's permission when it applies it: this refused put is in
    // the WAL too, and must change nothing.
    let refused = try_ctl(&ep, Some(BOB), &["put", "d", "no"]).unwrap_err();
    assert!(refused.contains("permission denied"), "{refused}");
    ctl(&ep, root, &["put", "k-last", "x"]);
    let want = served(&ep);
    // The hard state carrying the last commit index reaches the WAL right after.
    std::thread::sleep(Duration::from_secs(1));
    drop(etcd); // SIGKILL

    let skiff_dir = dir.path().join("skiff");
    let mut skiff = skiff_member(28350, &skiff_dir);
    copy_tree(&dir.path().join("etcd").join("m0.data"), &skiff.data_dir);
    let db = skiff.data_dir.join("member/snap/db");
    let status = json(&ctl_local(&[
        "snapshot",
        "status",
        "-w",
        "json",
        db.to_str().unwrap(),
    ]));
    let db_rev = status["revision"].as_i64().expect("revision");
    eprintln!(
        "etcd served revision {}; its db holds revision {db_rev}",
        want.0
    );
    assert!(
        db_rev < want.0 - 5,
        "the db is not behind the WAL: {status}"
    );

    skiff.spawn();
    skiff.wait_serving(START_WITHIN);
    let sep = skiff.endpoint();
    let got = served(&sep);
    eprintln!(
        "etcd served revision {}, HashKV {:?}; skiff {}, {:?}",
        want.0, want.2, got.0, got.2
    );
    assert_eq!(got.0, want.0, "revision");
    assert_eq!(got.1, want.1, "keys");
    assert_eq!(got.2, want.2, "HashKV");
    assert!(got.3.contains(&kept) && !got.3.contains(&gone), "{}", got.3);
    let log = skiff.log_tail(300);
    assert!(
        log.contains("imported an etcd 3.4 data dir") && !log.contains("wal_entries_applied=0"),
        "{log}"
    );
    let skiff_answers = bob_and_alice(&sep);
    skiff.terminate(Duration::from_secs(10));

    // etcd on its own files replays the same WAL: the same answers.
    let mut etcd = etcd_member(28350, &dir.path().join("etcd"), &lazy);
    etcd.spawn();
    etcd.wait_serving(START_WITHIN);
    assert_eq!(served(&etcd.endpoint()), want, "etcd after its own replay");
    assert_eq!(bob_and_alice(&etcd.endpoint()), skiff_answers);
}

/// (offset, size) of every record of an etcd WAL segment (its framing: an 8-byte
/// little-endian length field, the record, padding to 8 bytes).
fn wal_records(seg: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 8 <= seg.len() {
        let field = u64::from_le_bytes(seg[off..off + 8].try_into().unwrap());
        if field == 0 {
            break;
        }
        let len = (field & 0x00FF_FFFF_FFFF_FFFF) as usize;
        let pad = if field >> 63 == 1 {
            ((field >> 56) & 7) as usize
        } else {
            0
        };
        out.push((off, len));
        off += 8 + len + pad;
    }
    out
}

#[test]
fn a_flipped_byte_in_etcds_wal_is_refused_naming_the_file_and_offset() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = etcd_member(28360, &dir.path().join("etcd"), &[]);
    etcd.spawn();
    etcd.wait_serving(START_WITHIN);
    for i in 0..10 {
        ctl(&etcd.endpoint(), None, &["put", &format!("k{i}"), "v"]);
    }
    etcd.terminate(Duration::from_secs(10));

    let mut skiff = skiff_member(28360, &dir.path().join("skiff"));
    copy_tree(&etcd.data_dir, &skiff.data_dir);
    let wal_dir = skiff.data_dir.join("member/wal");
    let seg = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .expect("a WAL segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    let recs = wal_records(&bytes);
    assert!(recs.len() > 10, "{} records", recs.len());
    // The last byte of a record in the middle: its data, so its CRC no longer matches.
    let (off, len) = recs[recs.len() / 2];
    bytes[off + 8 + len - 1] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();

    skiff.spawn();
    let deadline = std::time::Instant::now() + START_WITHIN;
    while skiff.try_exit().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "skiff started on a damaged WAL: {}",
            skiff.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = skiff.log_tail(30);
    eprintln!("{log}");
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(
        log.contains(name) && log.contains(&format!("damaged at byte {off}")),
        "the error does not name {name} and byte {off}:\n{log}"
    );
    assert!(!skiff.data_dir.join("skiff").exists(), "skiff wrote data");
}

/// The `member_id` and the leader an etcdctl `endpoint status -w json` reports.
fn member_and_leader(ep: &str) -> (u64, u64) {
    let v = json(&ctl(ep, None, &["endpoint", "status", "-w", "json"]));
    let s = &v[0]["Status"];
    (
        s["header"]["member_id"].as_u64().expect("member_id"),
        s["leader"].as_u64().expect("leader"),
    )
}

/// The member IDs `member list` prints, sorted.
fn member_ids(ep: &str) -> Vec<String> {
    let mut ids: Vec<String> = ctl(ep, None, &["member", "list"])
        .lines()
        .filter_map(|l| l.split(',').next())
        .map(|s| s.trim().to_string())
        .collect();
    ids.sort();
    ids
}

/// The keys under `prefix`.
fn keys(ep: &str, prefix: &str) -> Vec<String> {
    ctl(ep, None, &["get", prefix, "--prefix", "--keys-only"])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Sends `signal` to the running members' processes at once.
fn signal(signal: &str, members: &[&Member]) {
    let pids: Vec<String> = members
        .iter()
        .map(|m| m.pid().expect("running").to_string())
        .collect();
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(&pids)
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pids:?}");
}

/// A 3-member etcd 3.4 cluster stopped the hard way: one follower paused
/// (SIGSTOP) while the leader and the other follower commit more writes, then all three
/// killed (SIGKILL) right after the last acknowledgement, their backends behind their
/// WALs. The leader's data dir is then treated as lost: `skiff` started in place on the
/// two followers' data dirs (copies, with the same flags) continues the cluster with
/// etcd's member IDs and every acknowledged write, although the live follower may not
/// have known the last ones were committed (they are in its WAL past its commit index)
/// and the paused one never got them; then the old leader's data dir joins too, and
/// the three agree (HashKV). etcd 3.4 restarted on the two followers' own files serves
/// the same data (HashKV at the same revision).
#[test]
fn a_stopped_etcd_cluster_continues_in_place_as_skiff() {
    if !tools() {
        return;
    }
    let base = 28364;
    let dir = tempfile::tempdir().unwrap();
    let lazy = [
        "--backend-batch-interval",
        "1h",
        "--backend-batch-limit",
        "1000000",
        "--snapshot-count",
        "1000000",
    ];
    let flags: Vec<&str> = TIMING.iter().chain(&lazy).copied().collect();
    let etcd_dir = dir.path().join("etcd");
    std::fs::create_dir_all(&etcd_dir).unwrap();
    let mut etcd = cluster_members(Path::new("etcd"), 3, base, &etcd_dir, &flags);
    for m in etcd.iter_mut() {
        m.spawn();
    }
    for m in etcd.iter_mut() {
        m.wait_serving(START_WITHIN);
    }
    let eps: Vec<String> = etcd.iter().map(Member::endpoint).collect();
    let all = eps.join(",");
    for i in 0..20 {
        ctl(&all, None, &["put", &format!("k{i:03}"), &format!("v{i}")]);
    }
    ctl(&all, None, &["compact", "10"]);
    ctl(&all, None, &["put", "k000", "again"]);
    ctl(&all, None, &["del", "k01", "--prefix"]);
    let lease = lease_id(&ctl(&all, None, &["lease", "grant", "600"]));
    ctl(
        &all,
        None,
        &["put", "leased", "x", &format!("--lease={lease}")],
    );
    let ids = member_ids(&eps[0]);
    let statuses: Vec<(u64, u64)> = eps.iter().map(|ep| member_and_leader(ep)).collect();
    let leader = statuses
        .iter()
        .position(|(id, leader)| id == leader)
        .expect("a leader");
    let (live, paused) = match leader {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    signal("STOP", &[&etcd[paused]]);
    let mut acked = Vec::new();
    for i in 0..30 {
        let key = format!("w{i:03}");
        ctl(&eps[leader], None, &["put", &key, "acked"]);
        acked.push(key);
    }
    signal("KILL", &[&etcd[leader], &etcd[live]]);
    signal("KILL", &[&etcd[paused]]);
    drop(etcd);

    let skiff_dir = dir.path().join("skiff");
    std::fs::create_dir_all(&skiff_dir).unwrap();
    let skiff_bin = Path::new(env!("CARGO_BIN_EXE_skiff"));
    let mut skiff = cluster_members(skiff_bin, 3, base, &skiff_dir, TIMING);
    for (i, m) in skiff.iter().enumerate() {
        copy_tree(&etcd_dir.join(format!("m{i}.data")), &m.data_dir);
    }

    // etcd 3.4 on the two followers' own files, for comparison: its keys, revision and
    // HashKV at every revision since the compaction.
    let mut etcd = cluster_members(Path::new("etcd"), 3, base, &etcd_dir, &flags);
    for i in [live, paused] {
        etcd[i].spawn();
    }
    for i in [live, paused] {
        etcd[i].wait_serving(START_WITHIN);
    }
    let eep = etcd[live].endpoint();
    assert_eq!(keys(&eep, "w"), acked, "etcd's acknowledged writes");
    let etcd_rev = revision(&eep, None);
    let etcd_hashes: Vec<(i64, (u64, i64))> = (11..=etcd_rev)
        .map(|r| (r, hash_kv(&eep, None, r)))
        .collect();
    for i in [live, paused] {
        etcd[i].terminate(Duration::from_secs(10));
    }
    drop(etcd);

    for i in [live, paused] {
        skiff[i].spawn();
    }
    for i in [live, paused] {
        skiff[i].wait_serving(START_WITHIN);
    }
    for i in [live, paused] {
        let log = skiff[i].log_tail(400);
        let line = log
            .lines()
            .find(|l| l.contains("continuing the etcd cluster's log in place"))
            .unwrap_or_else(|| panic!("m{i} did not continue etcd's log:\n{log}"));
        eprintln!("m{i}: {line}");
    }
    let sep = skiff[live].endpoint();
    let got = keys(&sep, "w");
    assert_eq!(got, acked, "acknowledged writes after the in-place import");
    assert_eq!(member_ids(&sep), ids, "etcd's member IDs");
    let rev = revision(&sep, None);
    let skiff_hash = hash_kv(&sep, None, rev);
    assert_eq!(hash_kv(&skiff[paused].endpoint(), None, rev), skiff_hash);
    assert!(
        ctl(&sep, None, &["lease", "list"]).contains(&lease),
        "the lease"
    );

    // The old leader's data dir joins; the cluster takes writes; all three agree.
    skiff[leader].spawn();
    skiff[leader].wait_serving(START_WITHIN);
    ctl(&skiff[leader].endpoint(), None, &["put", "after", "x"]);
    let last = revision(&sep, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let hashes = loop {
        let h: Vec<(u64, i64)> = skiff
            .iter()
            .map(|m| hash_kv(&m.endpoint(), None, last))
            .collect();
        if h.iter().all(|x| *x == h[0]) || std::time::Instant::now() > deadline {
            break h;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
    // etcd served the same data: HashKV at the last revision both have (an entry
    // that was not acknowledged may be kept by one and dropped by the other).
    let common = etcd_rev.min(rev);
    let etcd_hash = etcd_hashes
        .iter()
        .find(|(r, _)| *r == common)
        .map(|(_, h)| *h)
        .expect("etcd's hash at the common revision");
    eprintln!("etcd served revision {etcd_rev}, Skiff {rev}; HashKV at {common}: {etcd_hash:?}");
    assert_eq!(
        hash_kv(&sep, None, common),
        etcd_hash,
        "HashKV at revision {common}, etcd vs Skiff"
    );
    for m in skiff.iter_mut() {
        m.terminate(Duration::from_secs(10));
    }
}
