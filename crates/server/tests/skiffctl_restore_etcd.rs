//! `skiffctl snapshot restore --etcd-layout` (issue 16) against `etcdctl snapshot
//! restore`: etcd 3.4 must start on what skiffctl wrote and serve what it serves on what
//! etcdctl wrote.
//!
//! - One snapshot made by etcd 3.4 and one made by Skiff, each holding puts, an
//!   overwrite, a delete, a compaction and a key under a lease: each restored with
//!   etcdctl and with skiffctl (same `--name`, `--initial-cluster`,
//!   `--initial-cluster-token`, `--initial-advertise-peer-urls`). The WAL segments (up
//!   to etcd's preallocated zeros) and the `.snap` files must be byte-identical, the
//!   `db` files equal bucket by bucket but for `members`/`members_removed` (etcdctl
//!   3.4 leaves the old cluster's rows there, skiffctl writes the new members). Then
//!   etcd 3.4 is started on each directory in turn: `member list -w json`,
//!   `get --prefix '' -w json` and `endpoint hashkv -w json` must be identical, unmasked
//!   (the member and cluster IDs, the revision and the hash included), and the keys
//!   the original member's.
//! - A 3-member restore: three directories restored by skiffctl, three etcds started on
//!   them form one cluster (three started members, the IDs etcdctl's restore gives),
//!   each serving the snapshot's keys with one HashKV.
//!
//! Ports 29940-29959 belong to this file. Needs `etcd` and `etcdctl` 3.4 (under `CI`
//! their absence fails the tests); `skiffctl` is the binary next to `skiff` (`cargo
//! build -p skiff-ctl` when running this file alone).

use crate::common;
use crate::common::skiffctl;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{have, Kind, Proc};
use regex::Regex;
use skiff_storage::bbolt::reader::{BoltReader, Row};

/// The cluster token every restore here uses (not etcd's default, so it counts).
const TOKEN: &str = "restore-16";

/// Runs `ctl` with `args`; stdout, or a panic with the output on failure.
fn ok(ctl: &Path, args: &[&str]) -> String {
    let out = Command::new(ctl)
        .env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .env_remove("ETCDCTL_WRITE_OUT")
        .args(args)
        .output()
        .expect("run the CLI");
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}{}",
        ctl.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn etcdctl() -> PathBuf {
    PathBuf::from("etcdctl")
}

/// Puts, an overwrite, a delete, a compaction and a leased key, through etcdctl.
fn fill(ep: &str) {
    let e = format!("--endpoints={ep}");
    let c = etcdctl();
    for (k, v) in [
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("a", "1b"),
        ("dir/x", "4"),
    ] {
        ok(&c, &[&e, "put", k, v]);
    }
    ok(&c, &[&e, "del", "b"]);
    ok(&c, &[&e, "compaction", "3"]);
    let grant = ok(&c, &[&e, "lease", "grant", "3600"]);
    let lease = grant.split_whitespace().nth(1).expect("lease ID");
    ok(&c, &[&e, "put", "leased", "v", &format!("--lease={lease}")]);
    ok(&c, &[&e, "put", "z", "last"]);
}

/// A snapshot file of a fresh member of `kind` filled by [`fill`], saved by its own CLI;
/// with the original's `get --prefix` output (header IDs and term masked).
fn snapshot_of(kind: Kind, client: u16, dir: &Path) -> (PathBuf, String) {
    let server = Proc::start(kind, "orig", client, client + 1, None);
    let ep = server.endpoint();
    fill(&ep);
    let file = dir.join(format!("{kind:?}.db"));
    let ctl = match kind {
        Kind::Skiff => skiffctl(),
        Kind::Etcd => etcdctl(),
    };
    let e = format!("--endpoints={ep}");
    let out = ok(
        &ctl,
        &[&e, "snapshot", "save", file.to_str().expect("utf-8")],
    );
    assert!(out.contains("Snapshot saved at"), "{out}");
    let keys = ok(&etcdctl(), &[&e, "get", "", "--prefix", "-w", "json"]);
    (file, mask_header(&keys))
}

/// The response header's member and cluster IDs and term masked (for comparing with
/// the original member, which has other IDs).
fn mask_header(s: &str) -> String {
    Regex::new(r#""(cluster_id|member_id|raft_term)":\d+"#)
        .expect("regex")
        .replace_all(s, "\"$1\":X")
        .into_owned()
}

/// Restores `file` with `ctl` (`extra` appended) into `data` as `name` of `cluster`.
fn restore(
    ctl: &Path,
    file: &Path,
    data: &Path,
    name: &str,
    cluster: &str,
    peer: &str,
    extra: &[&str],
) {
    let mut args = vec![
        "snapshot",
        "restore",
        file.to_str().expect("utf-8"),
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--name",
        name,
        "--initial-cluster",
        cluster,
        "--initial-cluster-token",
        TOKEN,
        "--initial-advertise-peer-urls",
        peer,
    ];
    args.extend(extra);
    ok(ctl, &args);
}

/// The one file of `dir` named `*.<ext>`.
fn only_file(dir: &Path, ext: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    assert_eq!(found.len(), 1, "{found:?} in {}", dir.display());
    found.into_iter().next().expect("one file")
}

/// The first 64 KiB of the WAL segment (its records and then preallocated zeros:
/// etcd preallocates 64 MB, not read here).
fn wal_records(data: &Path) -> Vec<u8> {
    use std::io::Read;
    let seg = only_file(&data.join("member/wal"), "wal");
    let f = std::fs::File::open(&seg).expect("open WAL");
    assert_eq!(f.metadata().expect("stat").len(), 64_000_000);
    let mut head = Vec::new();
    f.take(64 << 10).read_to_end(&mut head).expect("read WAL");
    assert!(
        head[head.len() - 512..].iter().all(|b| *b == 0),
        "records fit"
    );
    head
}

/// Every bucket of a bbolt file with its rows.
fn buckets(db: &Path) -> BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>> {
    let r = BoltReader::open(db).expect("open db");
    let mut out = BTreeMap::new();
    for name in r.buckets().expect("buckets") {
        let mut rows = BTreeMap::new();
        r.for_each(&name, &mut |row| {
            if let Row::Value { key, value } = row {
                rows.insert(key.to_vec(), value.to_vec());
            }
            Ok(())
        })
        .expect("rows");
        out.insert(String::from_utf8_lossy(&name).into_owned(), rows);
    }
    out
}

/// Compares the two restored directories' files (see the module docs); returns the IDs
/// of the members skiffctl wrote into its `db`.
fn same_files(by_etcdctl: &Path, by_skiffctl: &Path) -> Vec<String> {
    assert!(
        wal_records(by_etcdctl) == wal_records(by_skiffctl),
        "the WAL records differ"
    );
    let snap = |d: &Path| only_file(&d.join("member/snap"), "snap");
    assert_eq!(snap(by_etcdctl).file_name(), snap(by_skiffctl).file_name());
    assert!(
        std::fs::read(snap(by_etcdctl)).expect("read")
            == std::fs::read(snap(by_skiffctl)).expect("read"),
        "the .snap files differ"
    );
    let mut want = buckets(&by_etcdctl.join("member/snap/db"));
    let mut got = buckets(&by_skiffctl.join("member/snap/db"));
    let members = got.remove("members").expect("members bucket");
    assert!(got
        .remove("members_removed")
        .expect("members_removed")
        .is_empty());
    want.remove("members");
    want.remove("members_removed");
    assert!(!want["key"].is_empty());
    assert_eq!(want, got, "the db buckets differ");
    members
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}

/// What a restored etcd serves: member list, keys and HashKV, as JSON.
fn served(ep: &str) -> String {
    let e = format!("--endpoints={ep}");
    let c = etcdctl();
    format!(
        "{}{}{}",
        ok(&c, &[&e, "member", "list", "-w", "json"]),
        ok(&c, &[&e, "get", "", "--prefix", "-w", "json"]),
        ok(&c, &[&e, "endpoint", "hashkv", "-w", "json"]),
    )
}

/// Restores a snapshot of a `kind` member (on `orig_port`) with both CLIs as `m1` on
/// `client`/`client + 1`, checks the files, starts etcd on each directory in turn and
/// compares what it serves (see the module docs).
fn both_restores_serve_the_same(kind: Kind, orig_port: u16, client: u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer_port = client + 1;
    let peer = format!("http://127.0.0.1:{peer_port}");
    let cluster = format!("m1={peer}");
    let (file, original_keys) = snapshot_of(kind, orig_port, dir.path());
    let a = dir.path().join("by-etcdctl");
    let b = dir.path().join("by-skiffctl");
    restore(&etcdctl(), &file, &a, "m1", &cluster, &peer, &[]);
    restore(
        &skiffctl(),
        &file,
        &b,
        "m1",
        &cluster,
        &peer,
        &["--etcd-layout"],
    );
    let members = same_files(&a, &b);
    let mut outputs = Vec::new();
    for d in [&a, &b] {
        let server = Proc::start(Kind::Etcd, "m1", client, peer_port, Some(d.clone()));
        outputs.push(served(&server.endpoint()));
        drop(server);
    }
    let hex_id = Regex::new(r#""ID":(\d+)"#)
        .expect("regex")
        .captures(&outputs[1])
        .map(|c| format!("{:x}", c[1].parse::<u64>().expect("id")))
        .expect("a member ID");
    assert_eq!(members, vec![hex_id], "skiffctl's db members");
    assert_eq!(
        outputs[0], outputs[1],
        "{kind:?}'s snapshot: etcd serves differently on skiffctl's restore"
    );
    // The keys are the original member's (its IDs masked).
    let keys = outputs[1]
        .lines()
        .find(|l| l.contains("\"kvs\""))
        .expect("get output");
    assert_eq!(mask_header(keys), original_keys.trim_end());
    for line in outputs[1].lines() {
        eprintln!("{kind:?} snapshot, etcd on skiffctl's dir = on etcdctl's: {line}");
    }
}

#[test]
fn etcd_serves_an_etcd_snapshot_restored_by_skiffctl_as_restored_by_etcdctl() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; test skipped");
        return;
    }
    both_restores_serve_the_same(Kind::Etcd, 29940, 29944);
}

#[test]
fn etcd_serves_a_skiff_snapshot_restored_by_skiffctl_as_restored_by_etcdctl() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; test skipped");
        return;
    }
    both_restores_serve_the_same(Kind::Skiff, 29942, 29954);
}

#[test]
fn three_etcds_on_skiffctls_restores_form_the_cluster() {
    if !have("etcd") || !have("etcdctl") {
        eprintln!("note: etcd/etcdctl not installed; test skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, original_keys) = snapshot_of(Kind::Etcd, 29952, dir.path());
    let mut members = common::cluster_members(Path::new("etcd"), 3, 29946, dir.path(), &[]);
    let cluster: Vec<String> = members
        .iter()
        .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
        .collect();
    let cluster = cluster.join(",");
    for m in &members {
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let by_etcdctl = dir.path().join(format!("{}-by-etcdctl", m.name));
        restore(
            &etcdctl(),
            &file,
            &by_etcdctl,
            &m.name,
            &cluster,
            &peer,
            &[],
        );
        restore(
            &skiffctl(),
            &file,
            &m.data_dir,
            &m.name,
            &cluster,
            &peer,
            &["--etcd-layout"],
        );
        assert_eq!(same_files(&by_etcdctl, &m.data_dir).len(), 3);
    }
    for m in members.iter_mut() {
        m.spawn();
    }
    for m in members.iter_mut() {
        m.wait_serving(Duration::from_secs(30));
    }
    let e = format!("--endpoints={}", members[0].endpoint());
    let list = ok(&etcdctl(), &[&e, "member", "list"]);
    assert_eq!(list.matches(", started, ").count(), 3, "{list}");
    let mut hashes = Vec::new();
    let hash_re = Regex::new(r#""hash":\d+"#).expect("regex");
    for m in &members {
        let e = format!("--endpoints={}", m.endpoint());
        let keys = ok(&etcdctl(), &[&e, "get", "", "--prefix", "-w", "json"]);
        assert_eq!(mask_header(&keys), original_keys, "member {}", m.name);
        let hash = ok(&etcdctl(), &[&e, "endpoint", "hashkv", "-w", "json"]);
        let hash = hash_re
            .find(&hash)
            .map(|x| x.as_str().to_string())
            .expect("a hash");
        hashes.push(hash);
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
    eprint!("3-member restore, etcd's member list:\n{list}");
    eprintln!("HashKV on each member: {hashes:?}");
}
