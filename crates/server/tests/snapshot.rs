//! Backups in etcd's format, both ways (issue 12).
//!
//! - Skiff -> etcd: a 3-member Skiff cluster with keys, a lease, deletes and a
//!   compaction, under writes from another thread; `etcdctl snapshot save` from a
//!   member; `etcdctl snapshot status -w json` accepts the file (bbolt's consistency
//!   check) and reports a revision the cluster had while the snapshot was taken;
//!   `etcdctl snapshot restore` (with its sha256 check) lays out an etcd data dir, and
//!   etcd 3.4 started on it serves the same keys with the same revisions, the same
//!   compaction revision, the same HashKV at that revision, and the same user and role
//!   as Skiff.
//! - etcd -> Skiff: an etcd 3.4 member with keys, a lease, deletes and a compaction;
//!   `etcdctl snapshot save`, then `etcdctl snapshot restore` into one data dir (and
//!   into three); `skiff` members started on them import etcd's data and serve the same
//!   keys, revision, compaction revision, HashKV, lease, user and role, and etcd's files
//!   are left byte for byte as they were.
//! - A stopped etcd member's own data dir: `skiff` started with the same flags imports
//!   it (its WAL read and checked first) and serves the same data; etcd started on it
//!   again afterwards still works (rollback). The same for the three members of a
//!   stopped 3-member etcd cluster, started in place: the same cluster (etcd's member
//!   IDs) with the same revision and HashKV on each, then etcd again on its files.
//!
//! Ports 28300-28339 belong to this file. Needs `etcd` and `etcdctl` 3.4 (installed by
//! .ci/run); without them (and not under CI) the tests say so and check nothing.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{cluster_members, have, Member};
use serde_json::Value;

const TIMING: &[&str] = &["--heartbeat-interval", "50", "--election-timeout", "500"];
const START_WITHIN: Duration = Duration::from_secs(30);

/// Runs etcdctl (API v3) with `args` against `endpoint`; stdout, or a panic with the
/// output.
fn ctl(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=20s")
        .args(args)
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?} against {endpoint} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The current revision `endpoint` reports.
fn revision(endpoint: &str) -> i64 {
    let v = json(&ctl(endpoint, &["endpoint", "status", "-w", "json"]));
    v[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("revision")
}

/// (hash, compact revision) of HashKV at `rev`.
fn hash_kv(endpoint: &str, rev: i64) -> (u64, i64) {
    let v = json(&ctl(
        endpoint,
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

/// Every key at `rev` (0: the current revision), as etcdctl prints them.
fn all_keys(endpoint: &str, rev: i64) -> Value {
    let v = json(&ctl(
        endpoint,
        &[
            "get",
            "",
            "--prefix",
            "--rev",
            &rev.to_string(),
            "-w",
            "json",
        ],
    ));
    v["kvs"].clone()
}

/// Keys, a lease, deletes and a compaction: (lease ID in hex).
fn fill(endpoint: &str) -> String {
    for i in 0..60 {
        ctl(endpoint, &["put", &format!("k{i:03}"), &format!("v{i}")]);
    }
    ctl(endpoint, &["put", "k001", "again"]);
    ctl(endpoint, &["del", "k002"]);
    ctl(endpoint, &["del", "k01", "--prefix"]);
    let rev = revision(endpoint);
    ctl(endpoint, &["compact", &(rev - 5).to_string()]);
    let lease = ctl(endpoint, &["lease", "grant", "600"]);
    let id = lease
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    ctl(endpoint, &["put", "leased", "x", &format!("--lease={id}")]);
    ctl(endpoint, &["put", "big", &"b".repeat(20_000)]);
    // A user and a role (auth stays off: every member answers without a token).
    ctl(endpoint, &["role", "add", "reader"]);
    ctl(
        endpoint,
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "k0",
            "--prefix",
        ],
    );
    ctl(endpoint, &["user", "add", "carol:carolpw"]);
    ctl(endpoint, &["user", "grant-role", "carol", "reader"]);
    id
}

/// The user and role `fill` made, as etcdctl prints them.
fn auth_of(endpoint: &str) -> String {
    let got = ctl(endpoint, &["user", "get", "carol"]) + &ctl(endpoint, &["role", "get", "reader"]);
    assert!(
        got.contains("Roles: reader") && got.contains("prefix k0"),
        "{got}"
    );
    got
}

fn start_all(members: &mut [Member]) {
    for m in members.iter_mut() {
        m.spawn();
    }
    for m in members.iter_mut() {
        m.wait_serving(START_WITHIN);
    }
}

#[test]
fn a_skiff_snapshot_restores_into_etcd_with_the_same_data_and_hash() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; snapshot test skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut members = cluster_members(
        Path::new(env!("CARGO_BIN_EXE_skiff")),
        3,
        28300,
        dir.path(),
        TIMING,
    );
    start_all(&mut members);
    let ep = members[0].endpoint();
    let lease = fill(&ep);

    // Writes go on (through another member) while the snapshot is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let ep = members[2].endpoint();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                ctl(&ep, &["put", &format!("w{n:04}"), "during"]);
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = revision(&ep);
    let file = dir.path().join("skiff.db");
    let snap_ep = members[1].endpoint();
    ctl(&snap_ep, &["snapshot", "save", file.to_str().unwrap()]);
    let after = revision(&ep);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0, "no write went on during the snapshot");

    // etcdctl's status runs bbolt's check and reads the revision from the `key` bucket.
    let status = json(&ctl(
        &snap_ep,
        &["snapshot", "status", "-w", "json", file.to_str().unwrap()],
    ));
    let snap_rev = status["revision"].as_i64().expect("revision");
    eprintln!("snapshot status: {status} (cluster revision {before}..={after})");
    assert!(
        (before..=after).contains(&snap_rev),
        "the snapshot's revision {snap_rev} is not one the cluster had while it was taken \
         ({before}..={after})"
    );

    // Restore (sha256 checked) and start etcd 3.4 on it.
    let mut etcd = cluster_members(
        Path::new("etcd"),
        1,
        28320,
        &dir.path().join("etcd"),
        TIMING,
    )
    .pop()
    .unwrap();
    let peer = "http://127.0.0.1:28321";
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore", file.to_str().unwrap()])
        .args([
            "--name",
            "m0",
            "--data-dir",
            etcd.data_dir.to_str().unwrap(),
        ])
        .args(["--initial-cluster", &format!("m0={peer}")])
        .args(["--initial-advertise-peer-urls", peer])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "etcdctl snapshot restore refused the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    etcd.spawn();
    etcd.wait_serving(START_WITHIN);
    let eep = etcd.endpoint();

    assert_eq!(
        revision(&eep),
        snap_rev,
        "etcd's revision after the restore"
    );
    let etcd_keys = all_keys(&eep, 0);
    let skiff_keys = all_keys(&ep, snap_rev);
    assert_eq!(etcd_keys, skiff_keys, "keys at the snapshot's revision");
    assert!(etcd_keys.as_array().unwrap().len() > 50);
    let (eh, ec) = hash_kv(&eep, snap_rev);
    let (sh, sc) = hash_kv(&ep, snap_rev);
    eprintln!("HashKV at {snap_rev}: etcd {eh} (compact {ec}), skiff {sh} (compact {sc})");
    assert_eq!((eh, ec), (sh, sc), "HashKV at the snapshot's revision");
    assert!(ec > 0, "the compaction travelled with the snapshot");
    // The lease too, with its key.
    let leases = ctl(&eep, &["lease", "list"]);
    assert!(leases.contains(&lease), "etcd's leases: {leases}");
    assert_eq!(auth_of(&eep), auth_of(&ep), "users and roles");
    let ttl = ctl(&eep, &["lease", "timetolive", &lease, "--keys"]);
    assert!(ttl.contains("leased"), "{ttl}");
}

/// The value of `flag` in a member's arguments.
fn arg<'a>(m: &'a Member, flag: &str) -> &'a str {
    let i = m.args.iter().position(|a| a == flag).expect("flag present");
    &m.args[i + 1]
}

/// Every file under `dir` with its contents.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// etcd -> Skiff with `n` Skiff members on ports from `base`.
fn etcd_backup_starts_skiff(n: usize, base: u16) {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["etcd", "skiff"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let mut etcd = cluster_members(Path::new("etcd"), 1, base, &dir.path().join("etcd"), TIMING)
        .pop()
        .unwrap();
    etcd.spawn();
    etcd.wait_serving(START_WITHIN);
    let eep = etcd.endpoint();
    let lease = fill(&eep);
    let file = dir.path().join("etcd.db");
    ctl(&eep, &["snapshot", "save", file.to_str().unwrap()]);
    let rev = revision(&eep);
    let keys = all_keys(&eep, 0);
    let (hash, compact) = hash_kv(&eep, rev);
    let auth = auth_of(&eep);
    eprintln!("etcd: revision {rev}, HashKV {hash} (compact {compact})");
    etcd.terminate(Duration::from_secs(10));

    let mut members = cluster_members(
        Path::new(env!("CARGO_BIN_EXE_skiff")),
        n,
        base + 2,
        &dir.path().join("skiff"),
        TIMING,
    );
    let mut etcd_files = Vec::new();
    for m in &members {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["snapshot", "restore", file.to_str().unwrap()])
            .args([
                "--name",
                &m.name,
                "--data-dir",
                m.data_dir.to_str().unwrap(),
            ])
            .args(["--initial-cluster", arg(m, "--initial-cluster")])
            .args([
                "--initial-advertise-peer-urls",
                arg(m, "--initial-advertise-peer-urls"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restore for {}: {}",
            m.name,
            String::from_utf8_lossy(&out.stderr)
        );
        etcd_files.push(files(&m.data_dir.join("member")));
    }
    start_all(&mut members);
    for m in &members {
        let ep = m.endpoint();
        assert_eq!(revision(&ep), rev, "{}'s revision", m.name);
        assert_eq!(all_keys(&ep, 0), keys, "{}'s keys", m.name);
        let (h, c) = hash_kv(&ep, rev);
        eprintln!("{}: revision {rev}, HashKV {h} (compact {c})", m.name);
        assert_eq!((h, c), (hash, compact), "{}'s HashKV at {rev}", m.name);
        let leases = ctl(&ep, &["lease", "list"]);
        assert!(leases.contains(&lease), "{}'s leases: {leases}", m.name);
        assert_eq!(auth_of(&ep), auth, "{}'s users and roles", m.name);
        assert!(
            m.log_tail(200).contains("imported an etcd 3.4 data dir"),
            "{} did not say it imported",
            m.name
        );
    }
    // The cluster works on: a write lands on every member at the next revision.
    ctl(&members[0].endpoint(), &["put", "after-import", "yes"]);
    for m in &members {
        let got = json(&ctl(&m.endpoint(), &["get", "after-import", "-w", "json"]));
        assert_eq!(
            got["kvs"][0]["mod_revision"].as_i64(),
            Some(rev + 1),
            "{}",
            m.name
        );
    }
    for m in members.iter_mut() {
        m.terminate(Duration::from_secs(10));
    }
    for (m, before) in members.iter().zip(etcd_files) {
        let after: Vec<_> = files(&m.data_dir.join("member"));
        assert_eq!(after, before, "{}: etcd's files were changed", m.name);
    }
}

#[test]
fn an_etcd_backup_starts_one_and_three_skiff_members_with_the_same_data_and_hash() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; snapshot test skipped");
        return;
    }
    etcd_backup_starts_skiff(1, 28330);
    etcd_backup_starts_skiff(3, 28330);
}

#[test]
fn a_stopped_etcd_members_data_dir_starts_skiff_and_etcd_again() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; snapshot test skipped");
        return;
    }
    let skiff = Path::new(env!("CARGO_BIN_EXE_skiff"));
    let dir = tempfile::tempdir().unwrap();

    // One member: imported.
    let mut etcd = cluster_members(Path::new("etcd"), 1, 28310, dir.path(), TIMING)
        .pop()
        .unwrap();
    etcd.spawn();
    etcd.wait_serving(START_WITHIN);
    let ep = etcd.endpoint();
    let lease = fill(&ep);
    let rev = revision(&ep);
    let keys = all_keys(&ep, 0);
    let (hash, compact) = hash_kv(&ep, rev);
    let auth = auth_of(&ep);
    etcd.terminate(Duration::from_secs(10));
    let before = files(&etcd.data_dir.join("member"));

    let mut m = cluster_members(skiff, 1, 28310, dir.path(), TIMING)
        .pop()
        .unwrap();
    m.spawn();
    m.wait_serving(START_WITHIN);
    assert_eq!(revision(&ep), rev);
    assert_eq!(all_keys(&ep, 0), keys);
    let (h, c) = hash_kv(&ep, rev);
    eprintln!("stopped etcd member: etcd HashKV {hash} (compact {compact}), skiff {h} (compact {c}) at {rev}");
    assert_eq!((h, c), (hash, compact));
    assert!(ctl(&ep, &["lease", "list"]).contains(&lease));
    assert_eq!(auth_of(&ep), auth, "users and roles");
    eprintln!(
        "{}",
        m.log_tail(100)
            .lines()
            .filter(|l| l.contains("etcd_import"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ctl(&ep, &["put", "only-in-skiff", "x"]);
    m.terminate(Duration::from_secs(10));
    assert_eq!(
        files(&etcd.data_dir.join("member")),
        before,
        "etcd's files were changed"
    );

    // Rollback: etcd on its untouched files.
    etcd.spawn();
    etcd.wait_serving(START_WITHIN);
    assert_eq!(revision(&ep), rev);
    assert_eq!(hash_kv(&ep, rev), (hash, compact));
    etcd.terminate(Duration::from_secs(10));

    // The members of a stopped 3-member cluster: each started in place, they continue
    // the same cluster (etcd's member IDs), and etcd's files stay as they were.
    let dir3 = tempfile::tempdir().unwrap();
    let mut cluster = cluster_members(Path::new("etcd"), 3, 28310, dir3.path(), TIMING);
    start_all(&mut cluster);
    let ep0 = cluster[0].endpoint();
    ctl(&ep0, &["put", "k", "v"]);
    let ids = ctl(&ep0, &["member", "list"]);
    let rev = revision(&ep0);
    let hash = hash_kv(&ep0, rev);
    for m in cluster.iter_mut() {
        m.terminate(Duration::from_secs(10));
    }
    let before: Vec<_> = cluster
        .iter()
        .map(|m| files(&m.data_dir.join("member")))
        .collect();
    let mut members = cluster_members(skiff, 3, 28310, dir3.path(), TIMING);
    start_all(&mut members);
    let ids_of = |list: &str| -> Vec<String> {
        let mut v: Vec<String> = list
            .lines()
            .filter_map(|l| l.split(',').next())
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    for m in &members {
        let ep = m.endpoint();
        assert_eq!(revision(&ep), rev, "{}'s revision", m.name);
        assert_eq!(hash_kv(&ep, rev), hash, "{}'s HashKV", m.name);
        assert_eq!(ids_of(&ctl(&ep, &["member", "list"])), ids_of(&ids));
    }
    ctl(&members[1].endpoint(), &["put", "only-in-skiff", "x"]);
    for m in members.iter_mut() {
        m.terminate(Duration::from_secs(10));
    }
    for (m, before) in cluster.iter().zip(before) {
        assert_eq!(
            files(&m.data_dir.join("member")),
            before,
            "{}: etcd's files were changed",
            m.name
        );
    }
    // Rollback: etcd on its untouched files.
    start_all(&mut cluster);
    assert_eq!(revision(&ep0), rev);
    assert_eq!(hash_kv(&ep0, rev), hash);
    for m in cluster.iter_mut() {
        m.terminate(Duration::from_secs(10));
    }
}
