//! Issue 11: replacing a member whose disk died, under load, the same steps against
//! etcd 3.4 and Skiff. Three members, writers running; one member is killed (-9) and
//! its data dir deleted; `member remove`; `member add --learner` on new ports; the new
//! member starts with `--initial-cluster-state existing`, catches up, is promoted; every
//! acknowledged write is then on all three members. Ports 28500-28539 belong to this
//! file (etcd 28500+, Skiff 28520+); the removed-member, hand-off and force-new-cluster
//! tests below use 28540-28599.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cluster_members, have, Member};
use etcd_client::{Client, ConnectOptions, GetOptions, MemberAddOptions};

fn opts() -> Option<ConnectOptions> {
    Some(
        ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5)),
    )
}

/// SIGKILL to the member's PID, and waits for it to be gone.
fn kill9(m: &mut Member) {
    let pid = m.pid().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("run kill");
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.try_exit().is_none() {
        assert!(Instant::now() < deadline, "{} survived kill -9", m.name);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writers putting `w/<writer>/<n>` until `stop`, through `endpoints`; the keys whose
/// put was acknowledged.
fn writers(
    endpoints: Vec<String>,
    n: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Arc<Mutex<Vec<String>>>, Vec<tokio::task::JoinHandle<()>>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let tasks = (0..n)
        .map(|w| {
            let (endpoints, stop, acked) = (endpoints.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut client = Client::connect(&endpoints, opts()).await.expect("connect");
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("w/{w}/{i}");
                    i += 1;
                    if client.put(key.as_str(), "v", None).await.is_ok() {
                        acked.lock().expect("not poisoned").push(key);
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    (acked, tasks)
}

/// The keys under `w/` a member holds, read locally (serializable) once it has applied
/// up to `revision`; an error saying what it answered last when it has not within 30 s.
async fn keys_on(endpoint: &str, revision: i64) -> Result<BTreeSet<String>, String> {
    let mut c = Client::connect([endpoint], opts()).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .get(
                "w/",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_serializable(),
                ),
            )
            .await;
        let last = match r {
            Ok(r) => {
                let rev = r.header().map(|h| h.revision()).unwrap_or(0);
                if rev >= revision {
                    return Ok(r
                        .kvs()
                        .iter()
                        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                        .collect());
                }
                format!("revision {rev}")
            }
            Err(e) => format!("error {e}"),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "{endpoint} did not reach revision {revision} (last answer: {last})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn replace_member(bin: &Path, base: u16) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ms = cluster_members(bin, 3, base, dir.path(), &[]);
    for m in ms.iter_mut() {
        m.spawn();
    }
    for m in ms.iter_mut() {
        tokio::task::block_in_place(|| m.wait_serving(Duration::from_secs(30)));
    }
    let live = vec![ms[0].url(), ms[1].url()];
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (acked, tasks) = writers(live.clone(), 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The disk of m2 dies.
    kill9(&mut ms[2]);
    std::fs::remove_dir_all(&ms[2].data_dir).expect("wipe m2");
    // Membership calls may wait out an election (m2 may have led): a longer timeout.
    let admin_opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(15));
    let mut admin = Client::connect(&live, Some(admin_opts))
        .await
        .expect("connect");
    let list = admin.member_list().await.expect("member list");
    let dead = list
        .members()
        .iter()
        .find(|m| m.name() == "m2")
        .expect("m2 listed")
        .id();
    if let Err(e) = admin.member_remove(dead).await {
        // etcd 3.4 sometimes answers this removal of a dead member under load only with
        // the client's timeout (2 of 3 `.ci/run`s on a clean clone): reported as its
        // result, not asserted. Skiff proposes a conf change again until it commits, and
        // must succeed.
        assert!(bin == Path::new("etcd"), "member remove: {e:?}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        return format!("member remove of the killed member failed: {e}");
    }

    // A fresh member on new ports, added as a learner, joins the running cluster.
    let (client_port, peer_port) = (base + 6, base + 7);
    let peer = format!("http://127.0.0.1:{peer_port}");
    let client = format!("http://127.0.0.1:{client_port}");
    // Both refuse a change while a voter's stream is younger than 5 s ("unhealthy
    // cluster"): retried, as etcd's docs say.
    let deadline = Instant::now() + Duration::from_secs(20);
    let added = loop {
        let learner = Some(MemberAddOptions::new().with_is_learner());
        match admin.member_add([peer.as_str()], learner).await {
            Ok(r) => break r,
            Err(e) if e.to_string().contains("unhealthy cluster") => {
                assert!(Instant::now() < deadline, "member add: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("member add --learner: {e}"),
        }
    };
    let new_id = added.member().expect("added member").id();
    let initial = format!(
        "m0=http://127.0.0.1:{},m1=http://127.0.0.1:{},m3={peer}",
        base + 1,
        base + 3
    );
    let data_dir = dir.path().join("m3.data");
    let mut m3 = cluster_members(bin, 1, base + 10, dir.path(), &[]).remove(0);
    m3.name = "m3".into();
    m3.client_port = client_port;
    m3.peer_port = peer_port;
    m3.data_dir = data_dir.clone();
    m3.log_path = dir.path().join("m3.log");
    m3.args = [
        "--name",
        "m3",
        "--initial-advertise-peer-urls",
        &peer,
        "--listen-peer-urls",
        &peer,
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--initial-cluster",
        &initial,
        "--initial-cluster-state",
        "existing",
        "--data-dir",
        data_dir.to_str().expect("utf-8"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    m3.spawn();

    // Promoted once in sync (etcd refuses before: "not in sync with leader").
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refusals = BTreeSet::new();
    loop {
        match admin.member_promote(new_id).await {
            Ok(_) => break,
            Err(e) => {
                refusals.insert(e.to_string());
            }
        }
        assert!(
            Instant::now() < deadline,
            "learner never promoted: {refusals:?}; its log:\n{}",
            m3.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::task::block_in_place(|| m3.wait_serving(Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.expect("writer");
    }
    let acked: Vec<String> = acked.lock().expect("not poisoned").clone();
    assert!(
        acked.len() > 100,
        "too few writes acknowledged: {}",
        acked.len()
    );

    // Every acknowledged write is on all three members.
    let rev = admin
        .get(
            "w/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("read")
        .header()
        .expect("header")
        .revision();
    for ep in [ms[0].url(), ms[1].url(), client.clone()] {
        let have = keys_on(&ep, rev).await.expect("member caught up");
        let missing: Vec<&String> = acked.iter().filter(|k| !have.contains(*k)).collect();
        assert!(
            missing.is_empty(),
            "{ep} misses {} acknowledged writes, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    let list = admin.member_list().await.expect("member list");
    let mut shown: Vec<(String, bool)> = list
        .members()
        .iter()
        .map(|m| (m.name().to_string(), m.is_learner()))
        .collect();
    shown.sort();
    assert_eq!(
        shown,
        vec![
            ("m0".to_string(), false),
            ("m1".to_string(), false),
            ("m3".to_string(), false)
        ]
    );
    drop(m3);
    drop(ms);
    format!(
        "{} acknowledged writes on all three; promote refusals before sync: {refusals:?}",
        acked.len()
    )
}

/// The write-stall test measures milliseconds on a 2-core machine: it runs alone, the
/// other tests of this file (each with its own clusters) run together.
static TIMING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replace_a_member_under_load() {
    let _shared = TIMING.read().await;
    let skiff = replace_member(Path::new(env!("CARGO_BIN_EXE_skiff")), 28520).await;
    println!("skiff: {skiff}");
    if have("etcd") {
        let etcd = replace_member(Path::new("etcd"), 28500).await;
        println!("etcd 3.4: {etcd}");
    } else {
        eprintln!("note: etcd not installed; ran against Skiff only");
    }
}

/// Starts `n` members of `bin` with `extra` flags and waits until they serve.
fn start_cluster(bin: &Path, n: usize, base: u16, dir: &Path, extra: &[&str]) -> Vec<Member> {
    let mut ms = cluster_members(bin, n, base, dir, extra);
    for m in ms.iter_mut() {
        m.spawn();
    }
    for m in ms.iter_mut() {
        m.wait_serving(Duration::from_secs(30));
    }
    ms
}

/// The index of the member that leads, as the members say.
async fn leader_index(ms: &[Member]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, m) in ms.iter().enumerate() {
            if !m.is_running() {
                continue;
            }
            let Ok(mut c) = Client::connect([m.url()], opts()).await else {
                continue;
            };
            if let Ok(s) = c.status().await {
                let me = s.header().map(|h| h.member_id()).unwrap_or(0);
                if s.leader() != 0 && s.leader() == me {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn removed_member(bin: &Path, base: u16, nonzero: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ms = tokio::task::block_in_place(|| start_cluster(bin, 3, base, dir.path(), &[]));
    let mut admin = Client::connect([ms[0].url(), ms[1].url()], opts())
        .await
        .expect("connect");
    let list = admin.member_list().await.expect("member list");
    let id = list
        .members()
        .iter()
        .find(|m| m.name() == "m2")
        .expect("m2")
        .id();
    remove_when_healthy(&mut admin, id, "member remove").await;
    let status = tokio::task::block_in_place(|| ms[2].wait_exit(Duration::from_secs(20)));
    // etcd 3.4 exits 0 here; Skiff exits non-zero, so supervisors see a failure.
    if nonzero {
        assert!(
            !status.success(),
            "a removed member exits non-zero: {status}"
        );
    }
    let log = std::fs::read_to_string(&ms[2].log_path).expect("log");
    assert!(
        log.contains("the member has been permanently removed from the cluster"),
        "{}",
        ms[2].log_tail(10)
    );
    // Never again from the same data dir.
    let before = log.len();
    ms[2].spawn();
    let again = tokio::task::block_in_place(|| ms[2].wait_exit(Duration::from_secs(30)));
    if nonzero {
        assert!(!again.success(), "restart of a removed member: {again}");
    }
    let log = std::fs::read_to_string(&ms[2].log_path).expect("log");
    assert!(
        log[before..].contains("the member has been permanently removed from the cluster"),
        "{}",
        ms[2].log_tail(10)
    );
    format!("exit {status}, again {again}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_member_stops_and_never_restarts() {
    let _shared = TIMING.read().await;
    let skiff = removed_member(Path::new(env!("CARGO_BIN_EXE_skiff")), 28540, true).await;
    println!("skiff: {skiff}");
    if have("etcd") {
        let etcd = removed_member(Path::new("etcd"), 28550, false).await;
        println!("etcd 3.4: {etcd}");
    }
}

/// The longest gap between acknowledged writes of one sequential writer (through the
/// members in `endpoints`) while `act` runs; `act` starts after 500 ms of writing and
/// the writer goes on for 2 s after it.
async fn write_stall<F: std::future::Future<Output = ()>>(
    endpoints: Vec<String>,
    act: F,
) -> Duration {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stamps = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let writer = {
        let (stop, stamps) = (stop.clone(), stamps.clone());
        tokio::spawn(async move {
            let o = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(10));
            let mut c = Client::connect(&endpoints, Some(o)).await.expect("connect");
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                if c.put(format!("stall/{i}"), "v", None).await.is_ok() {
                    stamps.lock().expect("not poisoned").push(Instant::now());
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    act.await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.expect("writer");
    let stamps = stamps.lock().expect("not poisoned").clone();
    assert!(stamps.len() > 10, "too few writes: {}", stamps.len());
    stamps
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// Issue 11, better than etcd: SIGTERM to the leader, and removing the leader, first
/// hand leadership to a caught-up voter, so the writes of the others stall far less
/// than an election timeout (3 s here, so the difference cannot be noise).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_stop_and_removal_hand_over_without_an_election_timeout() {
    let _alone = TIMING.write().await;
    let bin = Path::new(env!("CARGO_BIN_EXE_skiff"));
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = ["--heartbeat-interval", "100", "--election-timeout", "3000"];
    let mut ms = tokio::task::block_in_place(|| start_cluster(bin, 3, 28560, dir.path(), &extra));
    let l = leader_index(&ms).await;
    let others: Vec<String> = (0..3).filter(|i| *i != l).map(|i| ms[i].url()).collect();
    let pid = ms[l].pid().expect("running").to_string();
    let stall = write_stall(others, async {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    })
    .await;
    let status = tokio::task::block_in_place(|| ms[l].wait_exit(Duration::from_secs(20)));
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    println!("write stall while the leader stops (SIGTERM): {stall:?}");
    assert!(
        stall < Duration::from_millis(1500),
        "writes stalled {stall:?} when the leader stopped (election timeout 3 s)"
    );

    // The old leader back; then the current leader is removed.
    tokio::task::block_in_place(|| {
        ms[l].spawn();
        ms[l].wait_serving(Duration::from_secs(30));
    });
    let l = leader_index(&ms).await;
    let others: Vec<String> = (0..3).filter(|i| *i != l).map(|i| ms[i].url()).collect();
    let mut admin = Client::connect([ms[l].url()], opts())
        .await
        .expect("connect");
    let id = admin
        .status()
        .await
        .expect("status")
        .header()
        .expect("h")
        .member_id();
    // Asked of a follower, as an operator removing a member does.
    let mut admin = Client::connect([others[0].clone()], opts())
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_secs(5)).await; // every stream up for 5 s
    let stall = write_stall(others, async {
        // Under CI's load a stream can restart during the wait above; a refusal changes
        // nothing, so it cannot stall writes.
        remove_when_healthy(&mut admin, id, "remove the leader").await;
    })
    .await;
    println!("write stall while the leader is removed: {stall:?}");
    assert!(
        stall < Duration::from_millis(1500),
        "writes stalled {stall:?} when the leader was removed (election timeout 3 s)"
    );
    let status = tokio::task::block_in_place(|| ms[l].wait_exit(Duration::from_secs(20)));
    assert!(!status.success(), "the removed leader exits non-zero");
}

/// Starts a fresh member `name` on `client_port`/`client_port + 1` that joins the
/// cluster at `peers` (`name=url,...`) as a learner added beforehand, and waits until
/// it is promoted.
async fn join_as_learner(
    admin: &mut Client,
    bin: &Path,
    dir: &Path,
    name: &str,
    client_port: u16,
    peers: &str,
) -> Member {
    let peer = format!("http://127.0.0.1:{}", client_port + 1);
    let client = format!("http://127.0.0.1:{client_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let added = loop {
        let learner = Some(MemberAddOptions::new().with_is_learner());
        match admin.member_add([peer.as_str()], learner).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "member add {name}: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    let id = added.member().expect("added").id();
    let data_dir = dir.join(format!("{name}.data"));
    let mut m = cluster_members(bin, 1, client_port, dir, &[]).remove(0);
    m.name = name.into();
    m.log_path = dir.join(format!("{name}.log"));
    m.data_dir = data_dir.clone();
    m.args = [
        "--name",
        name,
        "--initial-advertise-peer-urls",
        &peer,
        "--listen-peer-urls",
        &peer,
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--initial-cluster",
        &format!("{peers},{name}={peer}"),
        "--initial-cluster-state",
        "existing",
        "--data-dir",
        data_dir.to_str().expect("utf-8"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    m.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match admin.member_promote(id).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "{name} never promoted: {e}; log:\n{}",
                    m.log_tail(20)
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    tokio::task::block_in_place(|| m.wait_serving(Duration::from_secs(30)));
    m
}

/// A member of the `--force-new-cluster` run that did not catch up: a failure for Skiff
/// (`strict`), etcd 3.4's reported result otherwise (one `.ci/run` saw a member that
/// joined etcd's forced cluster stay behind for 30 s).
fn not_caught_up(strict: bool, e: String, m: &Member) -> String {
    let tail = m.log_tail(15);
    assert!(!strict, "{e}; its log:\n{tail}");
    format!("a member did not catch up: {e}; its log ends:\n{tail}")
}

async fn force_new_cluster(bin: &Path, base: u16, strict: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ms = tokio::task::block_in_place(|| start_cluster(bin, 3, base, dir.path(), &[]));
    let urls: Vec<String> = ms.iter().map(Member::url).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (acked, tasks) = writers(urls, 3, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.expect("writer");
    }
    let acked: Vec<String> = acked.lock().expect("not poisoned").clone();
    assert!(acked.len() > 50, "too few writes: {}", acked.len());
    // The survivor-to-be holds every acknowledged write (a write is acknowledged once a
    // majority has it, which m0 need not be part of).
    let mut c = Client::connect([ms[0].url()], opts())
        .await
        .expect("connect");
    let rev = c
        .get(
            "w/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("read")
        .header()
        .expect("header")
        .revision();
    keys_on(&ms[0].url(), rev)
        .await
        .expect("the survivor-to-be caught up");
    // Disaster: m1 and m2 and their disks are gone; m0 is stopped.
    for m in ms.iter_mut() {
        kill9(m);
    }
    for m in &ms[1..] {
        std::fs::remove_dir_all(&m.data_dir).expect("wipe");
    }
    ms[0].args.push("--force-new-cluster".into());
    tokio::task::block_in_place(|| {
        ms[0].spawn();
        ms[0].wait_serving(Duration::from_secs(30));
    });
    let mut admin = Client::connect([ms[0].url()], opts())
        .await
        .expect("connect");
    let list = admin.member_list().await.expect("member list");
    assert_eq!(
        list.members().len(),
        1,
        "one member after --force-new-cluster"
    );
    let rev = admin
        .get(
            "w/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("read")
        .header()
        .expect("header")
        .revision();
    let have = match keys_on(&ms[0].url(), rev).await {
        Ok(have) => have,
        Err(e) => return not_caught_up(strict, e, &ms[0]),
    };
    let lost = acked.iter().filter(|k| !have.contains(*k)).count();
    // etcd 3.4 keeps only the entries its WAL's hard state says are committed, which can
    // lag what it applied: it may lose acknowledged writes here (reported, not checked).
    if strict {
        assert_eq!(lost, 0, "the survivor lost acknowledged writes");
    }
    let acked: Vec<String> = acked.into_iter().filter(|k| have.contains(k)).collect();

    // Two fresh members join the survivor.
    let peers = format!("m0=http://127.0.0.1:{}", base + 1);
    let a = join_as_learner(&mut admin, bin, dir.path(), "n1", base + 10, &peers).await;
    let peers = format!("{peers},n1=http://127.0.0.1:{}", base + 11);
    let b = join_as_learner(&mut admin, bin, dir.path(), "n2", base + 12, &peers).await;
    admin
        .put("after", "join", None)
        .await
        .expect("write after the joins");
    let rev = admin
        .get("after", None)
        .await
        .expect("read")
        .header()
        .expect("h")
        .revision();
    for m in [&ms[0], &a, &b] {
        let ep = m.url();
        let have = match keys_on(&ep, rev).await {
            Ok(have) => have,
            Err(e) => return not_caught_up(strict, e, m),
        };
        let missing = acked.iter().filter(|k| !have.contains(*k)).count();
        assert_eq!(missing, 0, "{ep} misses acknowledged writes");
    }
    let list = admin.member_list().await.expect("member list");
    let voters = list.members().iter().filter(|m| !m.is_learner()).count();
    assert_eq!(voters, 3);
    format!(
        "{} acknowledged writes kept, {lost} lost; 2 members joined",
        acked.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn force_new_cluster_keeps_the_data_and_takes_new_members() {
    let _shared = TIMING.read().await;
    let skiff = force_new_cluster(Path::new(env!("CARGO_BIN_EXE_skiff")), 28570, true).await;
    println!("skiff: {skiff}");
    if have("etcd") {
        let etcd = force_new_cluster(Path::new("etcd"), 28585, false).await;
        println!("etcd 3.4: {etcd}");
    }
}

/// Removes member `id`, trying again for up to 20 s while `--strict-reconfig-check`
/// answers "unhealthy cluster" (it wants every voter's stream up for 5 s), as an
/// operator would; any other error fails the test, labelled `what`.
async fn remove_when_healthy(admin: &mut Client, id: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match admin.member_remove(id).await {
            Ok(_) => return,
            Err(e) if e.to_string().contains("unhealthy cluster") => {
                assert!(Instant::now() < deadline, "{what}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}
