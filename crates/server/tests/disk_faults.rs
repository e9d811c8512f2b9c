//! Real disk faults against the plain `skiff` binary (no failpoints), each with the
//! answer ARCHITECTURE.md's "Failure model" documents:
//!
//! - **A failed `fdatasync`** (EIO), made by an `LD_PRELOAD` shim around the member
//!   (`tests/shim/fsync_eio.c`, compiled here with `cc -shared -fPIC`; armed by a
//!   trigger file once the member runs, it fails one call and lets later ones succeed,
//!   as Linux does after a failed write-back): on the WAL, the member stops naming the
//!   segment, the write whose sync failed is not acknowledged, and a restart without
//!   the shim has every acknowledged write; on the backend file (the maintenance
//!   thread's write-back), the member stops too, naming the file, instead of retrying
//!   the sync. In a 3-member cluster the two healthy members keep serving, and the
//!   failed member is wiped, removed, added back and catches up.
//! - **ENOSPC** from a size-limited tmpfs data dir (`mount -t tmpfs -o size=80m`; the
//!   tests run as root here and in CI; without the right to mount, the test fails under
//!   `CI=true` and is skipped with a message otherwise; it always unmounts): the
//!   member stops with "No space left on device", the put that hit it unanswered; a
//!   restart on the still-full disk stops the same way; once the tmpfs is grown it
//!   starts with every acknowledged write and takes new ones.
//! - **A torn last write** at a crash: after SIGKILL, a bad record followed by zeros,
//!   and then a record cut by the end of the file, at the end of the last WAL segment:
//!   the member repairs the tail (logging the file and offset) and serves every
//!   acknowledged write.
//! - **A bit flipped in a cold WAL segment** (the first of two): the member refuses to
//!   start, naming the file and the byte offset.
//! - **A bit flipped in the backend** (a value's byte in the page file): every node of
//!   the page store carries a CRC32C checked when it is read, and a member reads every
//!   row of the `key` table when it starts, so after a clean stop and after a crash
//!   during writes alike it refuses to start, naming the backend file and the page.
//!   (The redb engine before checked its checksums only when it repaired a file after a
//!   crash during writes, and otherwise served the flipped value.) The flip undone, it
//!   starts and serves the value as written.
//! - **A corrupt snapshot file** (the newest of several): set aside as `<name>.broken`
//!   with a warning naming it; the member starts from the next older one and serves
//!   every acknowledged write.
//!
//! The full-disk steps also run against etcd 3.4 (`etcd`; under `CI=true` it must be
//! there): its backend commit fails fatally (`C | mvcc/backend: cannot commit tx
//! (... no space left on device)`), and after the disk grew it has every acknowledged
//! write.
//!
//! Ports 29620-29643 belong to this file.

use crate::common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{cluster_members, Member};
use etcd_client::{Client, ConnectOptions, GetOptions};

/// Short Raft timings keep elections quick.
const TIMING: &[&str] = &["--heartbeat-interval", "50", "--election-timeout", "500"];

const START_WITHIN: Duration = Duration::from_secs(30);

fn skiff() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn client(url: &str) -> Client {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    Client::connect([url], Some(opts)).await.expect("connect")
}

/// The keys under `prefix` with their values, read through `url`.
fn read_prefix(rt: &tokio::runtime::Runtime, url: &str, prefix: &str) -> Vec<(String, String)> {
    rt.block_on(async {
        let r = client(url)
            .await
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .expect("get");
        r.kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key_str().expect("utf-8").to_string(),
                    kv.value_str().expect("utf-8").to_string(),
                )
            })
            .collect()
    })
}

/// Every acknowledged `(key, value)` is in `kvs`, and at most `extra` other keys.
fn assert_kept(what: &str, acked: &[(String, String)], kvs: &[(String, String)], extra: usize) {
    for a in acked {
        assert!(
            kvs.contains(a),
            "{what}: acknowledged {}={} lost",
            a.0,
            &a.1[..a.1.len().min(20)]
        );
    }
    assert!(
        kvs.len() <= acked.len() + extra,
        "{what}: {} keys, {} acknowledged",
        kvs.len(),
        acked.len()
    );
}

fn log_of(m: &Member) -> String {
    std::fs::read_to_string(&m.log_path).unwrap_or_default()
}

/// SIGKILL to the member's PID; waits until it is gone.
fn kill9(m: &mut Member) {
    let pid = m.pid().expect("running").to_string();
    let ok = Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -KILL {pid}");
    m.wait_exit(Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------
// The fsync shim
// ---------------------------------------------------------------------------------

/// `libfsync_eio.so`, compiled once per test process from `tests/shim/fsync_eio.c`;
/// `None` (with a message) when there is no C compiler outside CI.
fn shim() -> Option<PathBuf> {
    static SHIM: OnceLock<Option<(tempfile::TempDir, PathBuf)>> = OnceLock::new();
    SHIM.get_or_init(|| {
        if !common::have("cc") {
            println!("no `cc`: the fsync shim cannot be built, test skipped");
            return None;
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/shim/fsync_eio.c");
        let dir = tempfile::tempdir().expect("tempdir");
        let lib = dir.path().join("libfsync_eio.so");
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&lib)
            .arg(&src)
            .arg("-ldl")
            .output()
            .expect("run cc");
        assert!(
            out.status.success(),
            "cc {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Some((dir, lib))
    })
    .as_ref()
    .map(|(_, lib)| lib.clone())
}

/// Runs `m` under the shim, failing the first fsync of a file whose path contains
/// `matching` once `trigger` exists.
fn under_shim(m: &mut Member, lib: &Path, trigger: &Path, matching: &str) {
    m.env = vec![
        ("LD_PRELOAD".into(), lib.display().to_string()),
        ("FSYNC_EIO_TRIGGER".into(), trigger.display().to_string()),
        ("FSYNC_EIO_MATCH".into(), matching.into()),
    ];
}

const SHIM_LINE: &str = "fsync_eio shim: failing";

/// A single member under the shim (failing the first fsync of a file matching
/// `matching` once armed): 20 puts, the shim armed, then puts until one fails; the
/// member must exit non-zero naming `names` and the EIO; restarted without the shim
/// it has every acknowledged write (and at most the one in flight). Returns (puts
/// acknowledged after arming, the log).
fn single_member_fsync_eio(port: u16, matching: &str, names: &str) -> Option<(usize, String)> {
    let lib = shim()?;
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let trigger = dir.path().join("trigger");
    let mut m = cluster_members(&skiff(), 1, port, dir.path(), TIMING).remove(0);
    under_shim(&mut m, &lib, &trigger, matching);
    m.spawn();
    m.wait_serving(START_WITHIN);
    let url = m.url();
    let (acked, after_arming) = rt.block_on(async {
        let mut c = client(&url).await;
        let mut acked = Vec::new();
        for i in 0..20 {
            let kv = (format!("k{i:03}"), format!("v{i}"));
            c.put(kv.0.clone(), kv.1.clone(), None)
                .await
                .expect("put before arming");
            acked.push(kv);
        }
        std::fs::write(&trigger, b"").expect("arm the shim");
        let mut after = 0;
        for i in 20..200 {
            let kv = (format!("k{i:03}"), format!("v{i}"));
            if c.put(kv.0.clone(), kv.1.clone(), None).await.is_err() {
                break;
            }
            acked.push(kv);
            after += 1;
            // Time for the backend's write-back (every 100 ms) to hit the shim.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (acked, after)
    });
    let status = m.wait_exit(Duration::from_secs(10));
    let log = log_of(&m);
    assert!(
        !status.success(),
        "exited with {status} after a failed fsync"
    );
    let shim_line = log
        .lines()
        .find(|l| l.contains(SHIM_LINE))
        .unwrap_or_else(|| panic!("the shim never fired; log:\n{log}"));
    assert!(
        shim_line.contains(matching),
        "the shim failed another file: {shim_line}"
    );
    let stopped = log
        .lines()
        .find(|l| l.contains("skiff stopped"))
        .unwrap_or_else(|| panic!("no `skiff stopped` line; log:\n{log}"));
    assert!(
        stopped.contains("Input/output error") && stopped.contains(names),
        "the stop does not name the EIO and {names}: {stopped}"
    );
    println!("{shim_line}\n{stopped}\n{after_arming} puts acknowledged after arming");

    m.env.clear();
    m.spawn();
    m.wait_serving(START_WITHIN);
    let kvs = read_prefix(&rt, &url, "k");
    assert_kept("after the restart without the shim", &acked, &kvs, 1);
    println!(
        "restarted without the shim: {} acknowledged, {} kept",
        acked.len(),
        kvs.len()
    );
    Some((after_arming, log))
}

#[test]
fn a_failed_wal_fdatasync_stops_the_member_before_it_acknowledges() {
    let Some((after_arming, _)) = single_member_fsync_eio(29620, "/member/wal/", "member/wal/")
    else {
        return;
    };
    // The first put after arming is the first WAL sync: it must not be acknowledged.
    assert_eq!(
        after_arming, 0,
        "puts acknowledged after the WAL's fdatasync failed"
    );
}

#[test]
fn a_failed_backend_fdatasync_stops_the_member_instead_of_retrying() {
    // The WAL is fine, so puts are acknowledged (durable in the WAL) until the
    // maintenance thread's write-back of the backend fails and the member stops.
    let Some((_, log)) = single_member_fsync_eio(29622, "/member/snap/db", "member/snap/db") else {
        return;
    };
    // Stopped by the watch on the backend's failure or by the next apply's commit
    // (refused after the failure), whichever came first; never by a retried sync.
    assert!(
        log.contains("the file is not written again"),
        "the backend did not record its failure:\n{log}"
    );
}

/// Three members, m2 under the shim on its WAL: armed, m2's next WAL sync fails and it
/// stops, writes go on through m0 and m1; then m2's data dir is wiped, m2 removed, a
/// fresh member added in its place, started with `--initial-cluster-state existing`,
/// and it serves every acknowledged write.
#[test]
fn with_three_members_the_healthy_two_serve_and_the_failed_one_is_replaced() {
    let Some(lib) = shim() else { return };
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let trigger = dir.path().join("trigger");
    let base = 29624;
    let mut ms = cluster_members(&skiff(), 3, base, dir.path(), TIMING);
    under_shim(&mut ms[2], &lib, &trigger, "/member/wal/");
    for m in ms.iter_mut() {
        m.spawn();
    }
    for m in ms.iter_mut() {
        m.wait_serving(START_WITHIN);
    }
    let live = [ms[0].url(), ms[1].url()];
    let mut acked = Vec::new();
    // A put through `url`, repeated (same key and value) until acknowledged or
    // `within` passed (an election when m2 led); whether it was acknowledged.
    let put = |acked: &mut Vec<(String, String)>, url: &str, k: String, within: Duration| {
        let v = format!("v-{k}");
        let deadline = Instant::now() + within;
        loop {
            match rt.block_on(async { client(url).await.put(k.clone(), v.clone(), None).await }) {
                Ok(_) => {
                    acked.push((k, v));
                    return true;
                }
                Err(e) if Instant::now() >= deadline => {
                    println!("put {k} through {url}: {e} (outcome unknown)");
                    return false;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    };
    for i in 0..10 {
        assert!(put(
            &mut acked,
            &live[i % 2],
            format!("k{i:03}"),
            Duration::ZERO
        ));
    }
    std::fs::write(&trigger, b"").expect("arm the shim");
    // m2 appends the next entry (as leader or follower) and its sync fails; if it led,
    // a put forwarded to it has an unknown outcome until the other two elect a leader.
    let mut unknown = 0;
    for i in 10..20 {
        if !put(&mut acked, &live[i % 2], format!("k{i:03}"), Duration::ZERO) {
            unknown += 1;
        }
    }
    let status = ms[2].wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "m2 exited with {status}");
    let log = log_of(&ms[2]);
    let stopped = log
        .lines()
        .find(|l| l.contains("skiff stopped"))
        .unwrap_or_else(|| panic!("m2 has no `skiff stopped` line:\n{log}"));
    assert!(
        stopped.contains("Input/output error") && stopped.contains("member/wal/"),
        "{stopped}"
    );
    println!("m2: {stopped}");
    // The healthy two go on (after an election if m2 led).
    for i in 20..40 {
        assert!(
            put(
                &mut acked,
                &live[i % 2],
                format!("k{i:03}"),
                Duration::from_secs(10)
            ),
            "the healthy two do not take writes"
        );
    }

    // Replace m2: wipe, remove, add a fresh member on new ports, start it joining.
    std::fs::remove_dir_all(&ms[2].data_dir).expect("wipe m2");
    let (client_port, peer_port) = (base + 6, base + 7);
    let peer = format!("http://127.0.0.1:{peer_port}");
    rt.block_on(async {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(15));
        let mut admin = Client::connect(live, Some(opts)).await.expect("connect");
        let list = admin.member_list().await.expect("member list");
        let dead = list
            .members()
            .iter()
            .find(|m| m.name() == "m2")
            .expect("m2 listed")
            .id();
        admin.member_remove(dead).await.expect("member remove m2");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match admin.member_add([peer.as_str()], None).await {
                Ok(_) => break,
                Err(e) if e.to_string().contains("unhealthy cluster") => {
                    assert!(Instant::now() < deadline, "member add: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("member add: {e}"),
            }
        }
    });
    let mut m3 = cluster_members(&skiff(), 1, client_port, dir.path(), TIMING).remove(0);
    m3.name = "m3".into();
    m3.log_path = dir.path().join("m3.log");
    m3.data_dir = dir.path().join("m3.data");
    let initial = format!(
        "m0=http://127.0.0.1:{},m1=http://127.0.0.1:{},m3={peer}",
        base + 1,
        base + 3
    );
    m3.args = vec![
        "--name".into(),
        "m3".into(),
        "--initial-advertise-peer-urls".into(),
        peer.clone(),
        "--listen-peer-urls".into(),
        peer.clone(),
        "--listen-client-urls".into(),
        m3.url(),
        "--advertise-client-urls".into(),
        m3.url(),
        "--initial-cluster".into(),
        initial,
        "--initial-cluster-state".into(),
        "existing".into(),
        "--data-dir".into(),
        m3.data_dir.display().to_string(),
    ];
    m3.args.extend(TIMING.iter().map(|s| s.to_string()));
    m3.spawn();
    m3.wait_serving(START_WITHIN);
    assert!(put(
        &mut acked,
        &m3.url(),
        "k999".into(),
        Duration::from_secs(10)
    ));
    // A linearizable read through m3 waits until it has applied everything committed.
    let kvs = read_prefix(&rt, &m3.url(), "k");
    assert_kept("on the replacement member", &acked, &kvs, unknown);
    println!(
        "m2 replaced by m3: {} acknowledged writes ({unknown} of unknown outcome), all on m3",
        acked.len()
    );
}

// ---------------------------------------------------------------------------------
// ENOSPC
// ---------------------------------------------------------------------------------

/// A tmpfs mounted by the test; unmounted when dropped (after the members on it,
/// which are declared after it and so dropped first).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` on `dir`; `None` (skip) when not permitted outside CI.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("CI").is_none(),
                    "mounting a tmpfs is required under CI (the tests run as root): {why}"
                );
                println!("cannot mount a tmpfs ({why}): ENOSPC test skipped");
                None
            }
        }
    }

    fn grow(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(ok.success(), "remount {} to {size}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Skiff,
    Etcd,
}

/// The full-disk steps on one server: fill a small tmpfs data dir with 150 kB puts
/// until one is refused; the server must exit non-zero saying "no space left on
/// device"; restarted on the still-full disk (Skiff must stop again: replaying the WAL
/// needs room; etcd's outcome is printed); the tmpfs grown, restarted, it must have every
/// acknowledged write (at most the refused one besides) and take a new one.
fn full_disk(server: Server, port: u16) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    // Skiff: 80 MiB, the first WAL segment preallocates 64 MiB, the backend gets the
    // rest. etcd: 160 MiB, as its WAL's file pipeline also preallocates the next 64 MiB
    // segment at start; with 80 MiB its failed attempt took the free space for a moment
    // and etcd's very first backend commit failed (fatal) in 1 of 5 runs.
    let size = match server {
        Server::Skiff => "80m",
        Server::Etcd => "160m",
    };
    let Some(fs) = Tmpfs::mount(&dir.path().join("mnt"), size) else {
        return;
    };
    let bin = match server {
        Server::Skiff => skiff(),
        Server::Etcd => PathBuf::from("etcd"),
    };
    let mut m = cluster_members(&bin, 1, port, &fs.0, TIMING).remove(0);
    m.spawn();
    m.wait_serving(START_WITHIN);
    let url = m.url();
    let value = "x".repeat(150_000);
    let (acked, refusal) = rt.block_on(async {
        let mut c = client(&url).await;
        let mut acked = Vec::new();
        for i in 0..400 {
            let kv = (format!("k{i:03}"), value.clone());
            match c.put(kv.0.clone(), kv.1.clone(), None).await {
                Ok(_) => acked.push(kv),
                Err(e) => return (acked, e.to_string()),
            }
        }
        panic!("{server:?}: 400 puts of 150 kB fit in a {size} tmpfs");
    });
    let status = m.wait_exit(Duration::from_secs(10));
    assert!(
        !status.success(),
        "{server:?} exited with {status} on a full disk"
    );
    let log = log_of(&m);
    let stop_marker = match server {
        Server::Skiff => "skiff stopped",
        Server::Etcd => " C | ",
    };
    let stopped = log
        .lines()
        .find(|l| l.contains(stop_marker))
        .unwrap_or_else(|| panic!("{server:?}: no {stop_marker:?} line:\n{log}"));
    assert!(
        stopped.to_lowercase().contains("no space left on device"),
        "{server:?}: {stopped}"
    );
    println!(
        "{server:?}: full after {} acknowledged puts; the next one: {refusal}\n{stopped}",
        acked.len()
    );

    // Restarted on the still-full disk.
    let before = log.len();
    m.spawn();
    match server {
        Server::Skiff => {
            // Replaying the WAL needs room, so it stops again.
            let status = m.wait_exit(START_WITHIN);
            let again = log_of(&m)[before..].to_string();
            assert!(
                !status.success() && again.contains("No space left on device"),
                "restart on a full disk: {status}; log:\n{again}"
            );
            println!("Skiff restarted on the full disk: exited with {status}, no space again");
        }
        Server::Etcd => {
            std::thread::sleep(Duration::from_secs(3));
            match m.try_exit() {
                Some(status) => println!("etcd restarted on the full disk: exited with {status}"),
                None => {
                    println!(
                        "etcd restarted on the full disk: running, /health {:?}",
                        common::http_get(m.client_port, "/health")
                    );
                    m.terminate(Duration::from_secs(10));
                }
            }
        }
    }

    // Room made: it starts with every acknowledged write and takes new ones.
    fs.grow("256m");
    m.spawn();
    m.wait_serving(START_WITHIN);
    // Keys only (the values would pass the client's 4 MiB message limit), then each
    // value.
    let kvs: Vec<(String, String)> = rt.block_on(async {
        let mut c = client(&url).await;
        let r = c
            .get("k", Some(GetOptions::new().with_prefix().with_keys_only()))
            .await
            .expect("get keys");
        let mut kvs = Vec::new();
        for kv in r.kvs() {
            let key = kv.key_str().expect("utf-8").to_string();
            let got = c.get(key.clone(), None).await.expect("get one");
            let v = got.kvs()[0].value_str().expect("utf-8").to_string();
            kvs.push((key, v));
        }
        kvs
    });
    assert_kept(&format!("{server:?} after the tmpfs grew"), &acked, &kvs, 1);
    rt.block_on(async { client(&url).await.put("after", "1", None).await })
        .expect("put after the tmpfs grew");
    println!(
        "{server:?} after growing the tmpfs: {} acknowledged, {} kept, writes accepted",
        acked.len(),
        kvs.len()
    );
    drop(m);
}

#[test]
fn a_full_disk_stops_the_member_and_it_restarts_once_there_is_room() {
    full_disk(Server::Skiff, 29632);
}

/// The same steps against etcd 3.4, whose answer to a full disk (not its quota) is a
/// fatal error of the backend commit: asserted so ARCHITECTURE.md's comparison stays true.
#[test]
fn etcd_on_a_full_disk_for_comparison() {
    if !common::have("etcd") {
        println!("no etcd: comparison skipped");
        return;
    }
    full_disk(Server::Etcd, 29642);
}

// ---------------------------------------------------------------------------------
// WAL damage
// ---------------------------------------------------------------------------------

/// The WAL's segment files, oldest first.
fn wal_segments(m: &Member) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(m.data_dir.join("member/wal"))
        .expect("wal dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segs.sort();
    segs
}

/// The offset just past the last record of a segment (records: u32 length, u32 CRC,
/// u8 type, payload; an all-zero header ends them).
fn end_of_records(seg: &Path) -> u64 {
    let mut f = std::fs::File::open(seg).expect("open segment");
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).expect("read segment");
    let mut at = 0usize;
    while at + 9 <= bytes.len() && bytes[at..at + 9].iter().any(|b| *b != 0) {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 9 + len;
    }
    at as u64
}

/// `n` puts of `k000`.. through `url`, each acknowledged.
fn put_keys(
    rt: &tokio::runtime::Runtime,
    url: &str,
    from: usize,
    n: usize,
) -> Vec<(String, String)> {
    rt.block_on(async {
        let mut c = client(url).await;
        let mut acked = Vec::new();
        for i in from..from + n {
            let kv = (format!("k{i:03}"), format!("v{i}"));
            c.put(kv.0.clone(), kv.1.clone(), None).await.expect("put");
            acked.push(kv);
        }
        acked
    })
}

#[test]
fn a_torn_last_wal_write_is_repaired_and_every_acknowledged_write_kept() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = cluster_members(&skiff(), 1, 29634, dir.path(), TIMING).remove(0);
    m.spawn();
    m.wait_serving(START_WITHIN);
    let url = m.url();
    let mut acked = put_keys(&rt, &url, 0, 30);

    // 1. A record header and part of its payload reached the disk, the rest did not
    //    (the preallocated zeros follow).
    kill9(&mut m);
    let seg = wal_segments(&m).pop().expect("a segment");
    let end = end_of_records(&seg);
    let mut torn = Vec::new();
    torn.extend_from_slice(&4096u32.to_le_bytes());
    torn.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    torn.push(4); // an entry
    torn.extend(std::iter::repeat_n(0xab, 1000));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open segment");
    f.write_all_at(&torn, end).expect("write the torn record");
    drop(f);
    let before = log_of(&m).len();
    m.spawn();
    m.wait_serving(START_WITHIN);
    let repaired = log_of(&m)[before..].to_string();
    let line = repaired
        .lines()
        .find(|l| l.contains("torn write"))
        .unwrap_or_else(|| panic!("no torn-tail repair logged:\n{repaired}"));
    assert!(
        line.contains(&seg.display().to_string()) && line.contains(&format!("offset={end}")),
        "the repair does not name {} and offset {end}: {line}",
        seg.display()
    );
    assert_kept(
        "after a torn record",
        &acked,
        &read_prefix(&rt, &url, "k"),
        0,
    );
    println!("torn record at {}:{end} repaired: {line}", seg.display());

    // 2. The file ends in the middle of a record.
    acked.extend(put_keys(&rt, &url, 30, 10));
    kill9(&mut m);
    let seg = wal_segments(&m).pop().expect("a segment");
    let end = end_of_records(&seg);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open segment");
    f.seek(SeekFrom::Start(end)).expect("seek");
    f.write_all(&torn[..100]).expect("write a cut record");
    f.set_len(end + 100).expect("cut the file");
    drop(f);
    let before = log_of(&m).len();
    m.spawn();
    m.wait_serving(START_WITHIN);
    let repaired = log_of(&m)[before..].to_string();
    assert!(
        repaired.contains("torn write"),
        "no repair of a record cut by the end of the file:\n{repaired}"
    );
    assert_kept(
        "after a cut record",
        &acked,
        &read_prefix(&rt, &url, "k"),
        0,
    );
    // And it goes on writing after the repaired tail.
    acked.extend(put_keys(&rt, &url, 40, 5));
    m.terminate(Duration::from_secs(10));
    m.spawn();
    m.wait_serving(START_WITHIN);
    assert_kept(
        "after writing past the repair",
        &acked,
        &read_prefix(&rt, &url, "k"),
        0,
    );
    println!(
        "cut record repaired; {} acknowledged writes kept",
        acked.len()
    );
}

#[test]
fn a_bit_flipped_in_a_cold_wal_segment_refuses_the_start_naming_file_and_offset() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = cluster_members(&skiff(), 1, 29636, dir.path(), TIMING).remove(0);
    m.spawn();
    m.wait_serving(START_WITHIN);
    let url = m.url();
    // 1 MiB values until the WAL has cut a second 64 MiB segment.
    let value = "w".repeat(1 << 20);
    rt.block_on(async {
        let mut c = client(&url).await;
        for i in 0..80 {
            c.put(format!("big{i:03}"), value.clone(), None)
                .await
                .expect("put 1 MiB");
        }
    });
    m.terminate(Duration::from_secs(10));
    let segs = wal_segments(&m);
    assert!(segs.len() >= 2, "one WAL segment after 80 MiB: {segs:?}");
    let cold = &segs[0];
    let len = std::fs::metadata(cold).expect("stat").len();
    let at = len / 2;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(cold)
        .expect("open cold segment");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read byte");
    b[0] ^= 0x10;
    f.write_all_at(&b, at).expect("flip a bit");
    drop(f);
    let before = log_of(&m).len();
    m.spawn();
    let status = m.wait_exit(START_WITHIN);
    let log = log_of(&m)[before..].to_string();
    let stopped = log
        .lines()
        .find(|l| l.contains("skiff stopped"))
        .unwrap_or_else(|| panic!("no `skiff stopped` line:\n{log}"));
    assert!(
        !status.success(),
        "started on a corrupt cold segment: {status}"
    );
    assert!(
        stopped.contains(&cold.display().to_string()) && stopped.contains("byte offset"),
        "the refusal does not name {} and an offset: {stopped}",
        cold.display()
    );
    println!("bit flipped at {}:{at} of {len}: {stopped}", cold.display());
}

// ---------------------------------------------------------------------------------
// Backend damage
// ---------------------------------------------------------------------------------

const NEEDLE: &str = "NEEDLE-0123456789-abcdefghijklmnopqrstuvwxyz-NEEDLE";

/// Flips one bit in every copy of [`NEEDLE`] in the member's backend file; how many.
fn flip_needles(m: &Member) -> usize {
    flip_needles_from(m, NEEDLE.to_string())
}

/// Undoes [`flip_needles`].
fn unflip_needles(m: &Member) -> usize {
    flip_needles_from(m, NEEDLE.replacen('3', "7", 1))
}

fn flip_needles_from(m: &Member, needle: String) -> usize {
    let path = m.data_dir.join("member/snap/db");
    let mut bytes = std::fs::read(&path).expect("read db");
    let pat = &needle.as_bytes()[..17];
    let hits: Vec<usize> = bytes
        .windows(pat.len())
        .enumerate()
        .filter(|(_, w)| *w == pat)
        .map(|(i, _)| i)
        .collect();
    for i in &hits {
        bytes[i + 10] ^= 0x04; // '3' becomes '7'
    }
    std::fs::write(&path, &bytes).expect("write db");
    hits.len()
}

/// Starts `m` on its flipped backend and returns the `skiff stopped` line it must end
/// with (it must not serve).
fn refused_start(m: &mut Member) -> String {
    let before = log_of(m).len();
    m.spawn();
    let status = m.wait_exit(START_WITHIN);
    let log = log_of(m)[before..].to_string();
    let stopped = log
        .lines()
        .find(|l| l.contains("skiff stopped"))
        .unwrap_or_else(|| panic!("no `skiff stopped` line:\n{log}"))
        .to_string();
    assert!(!status.success(), "started on a corrupt backend");
    assert!(
        stopped.contains("member/snap/db") && stopped.contains("checksum mismatch"),
        "{stopped}"
    );
    stopped
}

#[test]
fn a_bit_flipped_in_the_backend_refuses_the_start_naming_the_file() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = cluster_members(&skiff(), 1, 29638, dir.path(), TIMING).remove(0);
    m.spawn();
    m.wait_serving(START_WITHIN);
    let url = m.url();
    rt.block_on(async { client(&url).await.put("needle", NEEDLE, None).await })
        .expect("put needle");
    put_keys(&rt, &url, 0, 20);

    // 1. After a clean stop.
    m.terminate(Duration::from_secs(10));
    let flipped = flip_needles(&m);
    assert!(flipped >= 1, "the value is not in the backend file");
    let stopped = refused_start(&mut m);
    println!("clean stop, {flipped} cop(ies) flipped: {stopped}");

    // Undone, the file is whole again: the member starts and serves the value.
    assert_eq!(unflip_needles(&m), flipped);
    m.spawn();
    m.wait_serving(START_WITHIN);
    let got = read_prefix(&rt, &url, "needle");
    assert_eq!(got.first().map(|kv| kv.1.as_str()), Some(NEEDLE));

    // 2. A crash during writes.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), url.clone());
        std::thread::spawn(move || {
            let rt = runtime();
            rt.block_on(async {
                let mut c = client(&url).await;
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    if c.put(format!("w{i}"), "x", None).await.is_err() {
                        break;
                    }
                    i += 1;
                }
            })
        })
    };
    std::thread::sleep(Duration::from_millis(1800));
    kill9(&mut m);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");
    let flipped = flip_needles(&m);
    assert!(flipped >= 1, "the value is not in the backend file");
    let stopped = refused_start(&mut m);
    println!("crash during writes, {flipped} cop(ies) flipped: {stopped}");
}

// ---------------------------------------------------------------------------------
// Snapshot damage
// ---------------------------------------------------------------------------------

#[test]
fn a_corrupt_snapshot_file_is_set_aside_and_an_older_one_used() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut extra = TIMING.to_vec();
    extra.extend(["--snapshot-count", "20"]);
    let mut m = cluster_members(&skiff(), 1, 29640, dir.path(), &extra).remove(0);
    m.spawn();
    m.wait_serving(START_WITHIN);
    let url = m.url();
    let acked = put_keys(&rt, &url, 0, 70);
    let snap_dir = m.data_dir.join("member/snap");
    let snap_files = || {
        let mut snaps: Vec<PathBuf> = std::fs::read_dir(&snap_dir)
            .expect("snap dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "snap"))
            .collect();
        snaps.sort();
        snaps
    };
    // A snapshot's file is written once the backend is durable up to it (the periodic
    // durable commit, within a second or two), and counts once its WAL marker is saved
    // ("saved snapshot" in the log): wait for two, with every file written marked, so
    // the newest file is one the restart reads.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let marked = log_of(&m).matches("saved snapshot").count();
        let files = snap_files().len();
        if (files >= 2 && marked >= files) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    m.terminate(Duration::from_secs(10));
    let mut snaps = snap_files();
    assert!(
        snaps.len() >= 2,
        "fewer than two snapshots after 70 writes with --snapshot-count 20: {snaps:?}"
    );
    let newest = snaps.pop().expect("a snapshot");
    let mut bytes = std::fs::read(&newest).expect("read snapshot");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&newest, &bytes).expect("write snapshot");
    let before = log_of(&m).len();
    m.spawn();
    m.wait_serving(START_WITHIN);
    let log = log_of(&m)[before..].to_string();
    let line = log
        .lines()
        .find(|l| l.contains("skipping corrupt snapshot file"))
        .unwrap_or_else(|| panic!("the corrupt snapshot was not reported:\n{log}"));
    assert!(
        line.contains(&newest.display().to_string()),
        "the warning does not name {}: {line}",
        newest.display()
    );
    let mut broken = newest.clone().into_os_string();
    broken.push(".broken");
    assert!(
        Path::new(&broken).exists(),
        "{} not set aside as .broken",
        newest.display()
    );
    assert_kept(
        "after a corrupt snapshot",
        &acked,
        &read_prefix(&rt, &url, "k"),
        0,
    );
    println!(
        "{line}\nstarted from an older snapshot; {} acknowledged writes kept",
        acked.len()
    );
}
