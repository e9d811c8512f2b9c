//! `skiffctl snapshot status|restore` (issue 16) against etcdctl 3.4.
//!
//! - One snapshot file made by etcd 3.4 itself and one made by Skiff (`snapshot save`),
//!   both holding puts, overwrites, deletes, a compaction, a lease with a key and a user:
//!   the same `snapshot status` steps (every `-w` format; a missing file, a file that is
//!   not a database, wrong argument counts) and `snapshot restore` refusals (an existing
//!   data dir or WAL dir, a name missing from `--initial-cluster`, a wrong sha256, a
//!   file without one, a missing file) run with etcdctl and with skiffctl; the
//!   transcripts must be identical, unmasked but for etcdctl's JSON log lines (the
//!   hash is etcd's CRC over the buckets, so it must be exact).
//! - Restore then start: each file restored with skiffctl into a new data dir, `skiff`
//!   started on it serves the same keys (values, create/mod revisions, versions), the
//!   same revision and compaction, the same HashKV, the same lease and user as the
//!   member the snapshot came from; `snapshot restore --skip-hash-check` of a bare `db`
//!   too. A 3-member restore (one data dir per member, as etcd's docs run it) starts a
//!   cluster with the three members and the data.
//!
//! Ports 29860-29879 belong to this file. Needs `etcd` and `etcdctl` 3.4 (under `CI`
//! their absence fails the tests); `skiffctl` is the binary next to `skiff` (`cargo
//! build -p skiff-ctl` when running this file alone).

use crate::common;
use crate::common::skiffctl;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{have, Kind, Proc};
use regex::Regex;

/// Runs `ctl` (etcdctl or skiffctl) with `args`; (stdout, stderr, exit code).
fn run(ctl: &Path, args: &[&str]) -> (String, String, i32) {
    let out = Command::new(ctl)
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .env_remove("ETCDCTL_WRITE_OUT")
        .args(args)
        .output()
        .expect("run the CLI");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// Runs `ctl` and returns stdout; panics with the output on failure.
fn ok(ctl: &Path, args: &[&str]) -> String {
    let (out, err, code) = run(ctl, args);
    assert_eq!(code, 0, "{} {args:?} failed:\n{out}{err}", ctl.display());
    out
}

fn etcdctl() -> PathBuf {
    PathBuf::from("etcdctl")
}

/// Writes the same history to the member at `ep`: puts, overwrites, a delete, a
/// compaction, a key under a long lease, a user (with a role). Returns the lease ID (hex).
fn fill(ep: &str) -> String {
    let e = format!("--endpoints={ep}");
    let c = etcdctl();
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("a", "1b"), ("d", "4")] {
        ok(&c, &[&e, "put", k, v]);
    }
    ok(&c, &[&e, "del", "b"]);
    ok(&c, &[&e, "compaction", "3"]);
    let grant = ok(&c, &[&e, "lease", "grant", "3600"]);
    let lease = grant
        .split_whitespace()
        .nth(1)
        .expect("lease ID")
        .to_string();
    ok(&c, &[&e, "put", "leased", "v", &format!("--lease={lease}")]);
    ok(&c, &[&e, "user", "add", "alice:pw"]);
    ok(&c, &[&e, "role", "add", "reader"]);
    ok(&c, &[&e, "user", "grant-role", "alice", "reader"]);
    ok(&c, &[&e, "put", "e", "5"]);
    lease
}

/// What a member serves, for comparing a restored member with the original: every key
/// with its revisions (the header's member and cluster IDs and term masked), the
/// HashKV at the current revision, the leases, the users.
fn served(ep: &str) -> String {
    let e = format!("--endpoints={ep}");
    let c = etcdctl();
    let header = Regex::new(r#""(cluster_id|member_id|raft_term)":\d+"#).expect("regex");
    let get = ok(&c, &[&e, "get", "", "--prefix", "-w", "json"]);
    let hash = ok(&c, &[&e, "endpoint", "hashkv", "-w", "json"]);
    let hash = Regex::new(r#""hash":\d+,"compact_revision":\d+"#)
        .expect("regex")
        .find(&hash)
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| panic!("no hash in {hash}"));
    // The error line (etcdctl's retry warnings, with times, left out).
    let compacted: String = run(&c, &[&e, "get", "a", "--rev", "2"])
        .1
        .lines()
        .filter(|l| !l.starts_with("{\"level\""))
        .collect();
    format!(
        "{}\n{hash}\nleases: {}users: {}compacted at 2: {compacted}",
        header.replace_all(&get, "\"$1\":X"),
        ok(&c, &[&e, "lease", "list"]),
        // Auth is off: user list needs no login.
        ok(&c, &[&e, "user", "list"]),
    )
}

/// The snapshot steps shared by both CLIs; `$C` is the CLI, `$ETCD`/`$SKIFF` the two
/// snapshot files, `$D` a scratch directory (emptied before each run).
const SCRIPT: &[&str] = &[
    "$C snapshot status $ETCD",
    "$C snapshot status $ETCD -w json",
    "$C snapshot status $ETCD -w table",
    "$C snapshot status $ETCD -w fields",
    "$C snapshot status $ETCD -w protobuf",
    "$C snapshot status $ETCD -w yaml",
    "$C snapshot status $SKIFF",
    "$C snapshot status $SKIFF -w json",
    "$C snapshot status $SKIFF -w table",
    "$C snapshot status $SKIFF -w fields",
    "$C snapshot status $D/missing.db",
    "echo junk > $D/junk.db; $C snapshot status $D/junk.db",
    "$C snapshot status",
    "$C snapshot status $ETCD $SKIFF",
    "$C snapshot restore",
    "$C snapshot restore $ETCD $SKIFF",
    "mkdir -p $D/exists; $C snapshot restore $ETCD --data-dir $D/exists 2>$D/err; echo \"[restore exit $?]\"; grep -v '^{\"level\"' $D/err",
    "mkdir -p $D/wal; $C snapshot restore $ETCD --data-dir $D/r1 --wal-dir $D/wal 2>$D/err; echo \"[restore exit $?]\"; grep -v '^{\"level\"' $D/err",
    "$C snapshot restore $ETCD --data-dir $D/r2 --name nobody 2>$D/err; echo \"[restore exit $?]\"; grep -v '^{\"level\"' $D/err",
    "$C snapshot restore $D/missing.db --data-dir $D/r3 2>$D/err; echo \"[restore exit $?]\"; grep -v '^{\"level\"' $D/err",
    // A changed byte in the sha256 trailer (`Y` where the last byte already is `X`).
    "cp $ETCD $D/bad.db; c=X; [ \"$(tail -c 1 $ETCD)\" = X ] && c=Y; printf $c | dd of=$D/bad.db bs=1 seek=$(($(wc -c < $ETCD) - 1)) conv=notrunc 2>/dev/null; $C snapshot restore $D/bad.db --data-dir $D/r4 2>$D/err; echo \"[restore exit $?]\"; grep -v '^{\"level\"' $D/err",
    // A bare db (no trailer): refused without --skip-hash-check.
    "head -c $(($(wc -c < $ETCD) - 32)) $ETCD > $D/bare.db; $C snapshot restore $D/bare.db --data-dir $D/r5 2>$D/err; echo \"[restore exit $?]\"; grep -v '^{\"level\"' $D/err",
    "$C snapshot restore $D/bare.db --skip-hash-check --data-dir $D/r6 2>$D/err; echo \"[restore exit $?]\"; grep -v '^{\"level\"' $D/err; test -d $D/r6/member && echo restored",
    "$C snapshot restore $ETCD --data-dir $D/r7 --name m2 --initial-cluster m1=http://127.0.0.1:1,m2=http://127.0.0.1:2 --initial-advertise-peer-urls http://127.0.0.1:2 2>$D/err; echo \"[restore exit $?]\"; grep -v '^{\"level\"' $D/err; test -d $D/r7/member && echo restored",
];

fn script_run(ctl: &Path, etcd_db: &Path, skiff_db: &Path, scratch: &Path) -> String {
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch).expect("scratch dir");
    let vars = [
        ("C", ctl.display().to_string()),
        ("ETCD", etcd_db.display().to_string()),
        ("SKIFF", skiff_db.display().to_string()),
        ("D", scratch.display().to_string()),
    ];
    let out = common::sh_transcript(SCRIPT, &vars);
    // The file names differ only by the scratch directory.
    out.replace(&scratch.display().to_string(), "$D")
}

/// Makes a snapshot of a fresh member of `kind` filled by [`fill`]; returns the file
/// and what the member served.
fn snapshot_of(kind: Kind, client: u16, dir: &Path) -> (PathBuf, String, String) {
    let server = Proc::start(kind, "orig", client, client + 1, None);
    let ep = server.endpoint();
    let lease = fill(&ep);
    let file = dir.join(format!("{kind:?}.db"));
    // Skiff's snapshot is saved with skiffctl, etcd's with etcdctl.
    let ctl = match kind {
        Kind::Skiff => skiffctl(),
        Kind::Etcd => etcdctl(),
    };
    let out = ok(
        &ctl,
        &[
            &format!("--endpoints={ep}"),
            "snapshot",
            "save",
            file.to_str().expect("utf-8"),
        ],
    );
    assert!(out.contains("Snapshot saved at"), "{out}");
    let served = served(&ep);
    drop(server);
    (file, served, lease)
}

#[test]
fn snapshot_status_and_restore_refusals_match_etcdctl() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; comparison skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (etcd_db, _, _) = snapshot_of(Kind::Etcd, 29860, dir.path());
    let (skiff_db, _, _) = snapshot_of(Kind::Skiff, 29862, dir.path());
    let scratch = dir.path().join("scratch");
    let with_etcdctl = script_run(&etcdctl(), &etcd_db, &skiff_db, &scratch);
    let with_skiffctl = script_run(&skiffctl(), &etcd_db, &skiff_db, &scratch);
    // etcdctl's `--initial-advertise-peer-urls` error adds how it resolved the URLs.
    let resolved = Regex::new(r" \(resolved urls: .*\)").expect("regex");
    let with_etcdctl = resolved.replace_all(&with_etcdctl, "").into_owned();
    common::assert_same_transcript("skiffctl-snapshot", &with_etcdctl, &with_skiffctl);
    for shows in [
        "| REVISION | TOTAL KEYS | TOTAL SIZE |",
        "\"totalKey\":",
        "Error: protobuf not supported as output format\n[exit 4]",
        "Error: invalid database\n[exit 1]",
        "exists\n",
        "Error: expected sha256 [",
        "snapshot missing hash but --skip-hash-check=false",
        "restored\n[exit 0]\n$ $C snapshot restore $ETCD --data-dir $D/r7",
    ] {
        assert!(
            with_skiffctl.contains(shows),
            "expected {shows:?} in:\n{with_skiffctl}"
        );
    }
    eprintln!("{} masked lines, identical", with_skiffctl.lines().count());
}

/// Restores `file` with skiffctl into a new data dir for a one-member cluster `m1` on
/// `client`/`client + 1`, starts `skiff` on it and returns what it serves.
fn restore_and_serve(file: &Path, client: u16, extra: &[&str]) -> String {
    let dir =
        std::env::temp_dir().join(format!("skiffctl-restore-{client}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let peer = format!("http://127.0.0.1:{}", client + 1);
    let mut args = vec![
        "snapshot",
        "restore",
        file.to_str().expect("utf-8"),
        "--data-dir",
        dir.to_str().expect("utf-8"),
        "--name",
        "m1",
    ];
    let cluster = format!("m1={peer}");
    args.extend([
        "--initial-cluster",
        &cluster,
        "--initial-advertise-peer-urls",
        &peer,
    ]);
    args.extend(extra);
    let (out, err, code) = run(&skiffctl(), &args);
    assert_eq!(code, 0, "restore failed:\n{out}{err}");
    assert!(err.contains("\"msg\":\"restored snapshot\""), "{err}");
    // A Skiff data dir: Skiff's WAL and backend, no etcd files.
    assert!(dir.join("member/wal").is_dir() && dir.join("member/snap/db").is_file());
    assert!(!skiff_storage_is_bbolt(&dir.join("member/snap/db")));
    let server = Proc::start(Kind::Skiff, "m1", client, client + 1, Some(dir));
    served(&server.endpoint())
}

/// Whether a file starts like a bbolt database (etcd's magic at byte 16).
fn skiff_storage_is_bbolt(path: &Path) -> bool {
    let b = std::fs::read(path).expect("read db");
    b.len() > 20 && b[16..20] == 0xED0C_DAEDu32.to_le_bytes()
}

#[test]
fn restored_snapshots_start_skiff_with_the_same_data() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; test skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (kind, client) in [(Kind::Etcd, 29864), (Kind::Skiff, 29866)] {
        let (file, original, lease) = snapshot_of(kind, client, dir.path());
        assert!(original.contains(&lease), "{original}");
        assert!(original.contains("alice"), "{original}");
        assert!(
            original.contains("required revision has been compacted"),
            "{original}"
        );
        let restored = restore_and_serve(&file, 29868, &[]);
        assert_eq!(
            original, restored,
            "{kind:?}'s snapshot restored by skiffctl serves other data"
        );
        // The bare db (as copied from a data dir) with --skip-hash-check.
        let bare = dir.path().join("bare.db");
        let bytes = std::fs::read(&file).expect("read snapshot");
        std::fs::write(&bare, &bytes[..bytes.len() - 32]).expect("write bare db");
        let restored = restore_and_serve(&bare, 29870, &["--skip-hash-check"]);
        assert_eq!(original, restored, "{kind:?}'s bare db restored differs");
        eprintln!("{kind:?} snapshot: restored and served the same data");
    }
}

#[test]
fn three_member_restore_starts_a_cluster() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; test skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, original, _) = snapshot_of(Kind::Etcd, 29872, dir.path());
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_skiff"));
    let mut members = common::cluster_members(&bin, 3, 29874, dir.path(), &[]);
    let cluster: Vec<String> = members
        .iter()
        .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
        .collect();
    let cluster = cluster.join(",");
    for m in &members {
        let data = &m.data_dir;
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let out = ok(
            &skiffctl(),
            &[
                "snapshot",
                "restore",
                file.to_str().expect("utf-8"),
                "--data-dir",
                data.to_str().expect("utf-8"),
                "--name",
                &m.name,
                "--initial-cluster",
                &cluster,
                "--initial-advertise-peer-urls",
                &peer,
            ],
        );
        assert!(out.is_empty(), "{out}");
    }
    for m in members.iter_mut() {
        m.spawn();
    }
    for m in members.iter_mut() {
        m.wait_serving(Duration::from_secs(30));
    }
    let list = ok(
        &etcdctl(),
        &[
            &format!("--endpoints={}", members[2].endpoint()),
            "member",
            "list",
        ],
    );
    assert_eq!(list.matches(", started, ").count(), 3, "{list}");
    for m in &members {
        assert_eq!(original, served(&m.endpoint()), "member {} differs", m.name);
    }
}
