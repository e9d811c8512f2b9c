//! Fault injection through failpoints, against the `skiff-failpoints` binary (the member
//! with failpoints compiled in, armed by `SKIFF_FAILPOINTS`):
//!
//! - fail-stop: a member whose apply thread panics (`apply-entries=panic`) exits with a
//!   non-zero status within a second of the panic, and the other two members elect a
//!   leader and accept writes;
//! - no head-of-line blocking on the backend: while a put is stuck in a paused backend
//!   commit (`backend-commit=pause(2000)`), a lease keep-alive and a serializable range
//!   on the same member each answer within 100 ms.
//!
//! The binary is built by the test (`cargo build -p skiff-server --features failpoints
//! --bin skiff-failpoints`, a no-op when it is up to date) into `failpoints/` under the
//! workspace's target directory, a target directory of its own, so the build never
//! waits for the lock of the `cargo test` that runs it. A first build compiles every
//! dependency once more and takes minutes. `.ci/run` builds it beforehand in the
//! workspace's own target directory (the dependencies are already compiled there) and
//! names it in `SKIFF_FAILPOINTS_BIN`, which the test then uses as it is.
//!
//! - crash points on the write path: a single member crashed at each of the WAL's
//!   and the backend's points while a client writes, then restarted without
//!   failpoints, has every acknowledged write, each applied once; an `fdatasync` that
//!   fails (`wal-fsync=error`) stops the member with the WAL file named, and what it
//!   had acknowledged survives.
//!
//! - the rarer points, each crashed at least once: a segment cut (`wal-segment-cut`,
//!   4 KiB segments through the build's knob) and a snapshot save (`snapshot-save`,
//!   `--snapshot-count=20`) under the same single-member check; a defragment's swap,
//!   before the rename (`defrag-swap=abort`: a panic there would be caught with the
//!   blocking task) and after it, before the new file is durable
//!   (`defrag-after-swap=abort`), after which the restarted member serves every write
//!   and defragments; and a snapshot
//!   install (`snapshot-install`) on a follower of three that missed more than its
//!   leader keeps for it (a 5-entry catch-up window through the build's knob), which,
//!   restarted without failpoints, serves every acknowledged write with the same
//!   HashKV as its peers (no silent divergence).
//!
//! - a keep-alive and a time-to-live sent through a follower right after that follower
//!   answered the lease's grant find the lease while the leader's apply thread lags
//!   (`apply-entries=pause(400)` on the leader): the leader waits until it has applied
//!   what it committed before it says a lease does not exist.
//!
//! Ports 27400-27411 and 27420-27465 belong to this file.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{cluster_members, Member};
use etcd_client::{Client, ConnectOptions, GetOptions};

/// One cluster at a time: two cores leave no room for a second one.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Short Raft timings keep elections quick.
const TIMING: &[&str] = &["--heartbeat-interval", "50", "--election-timeout", "500"];

const START_WITHIN: Duration = Duration::from_secs(30);

/// The `skiff-failpoints` binary, built (or found up to date) once per test process.
fn failpoints_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(build_failpoints_bin).clone()
}

fn build_failpoints_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SKIFF_FAILPOINTS_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.exists(),
            "SKIFF_FAILPOINTS_BIN={} does not exist",
            bin.display()
        );
        return bin;
    }
    // The skiff binary is <target>/<profile>/skiff (or <target>/<triple>/<profile>/skiff).
    let skiff = Path::new(env!("CARGO_BIN_EXE_skiff"));
    let profile_dir = skiff
        .parent()
        .expect("the skiff binary is in a profile directory");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 profile directory name");
    let target = profile_dir
        .parent()
        .expect("a profile directory is in a target directory");
    let target_dir = target.join("failpoints");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "build",
        "-p",
        "skiff-server",
        "--features",
        "failpoints",
        "--bin",
        "skiff-failpoints",
    ]);
    if profile == "release" {
        cmd.arg("--release");
    }
    cmd.arg("--target-dir").arg(&target_dir);
    let began = Instant::now();
    let out = cmd.output().expect("run cargo build");
    let took = began.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "building skiff-failpoints failed ({}):\n{stderr}",
        out.status
    );
    let compiled = stderr.lines().filter(|l| l.contains("Compiling")).count();
    println!(
        "cargo build of skiff-failpoints into {}: {took:.1?}, {compiled} crates compiled",
        target_dir.display()
    );
    let bin = target_dir.join(profile).join("skiff-failpoints");
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn client(url: &str) -> Client {
    client_with_timeout(url, Duration::from_secs(5)).await
}

async fn client_with_timeout(url: &str, timeout: Duration) -> Client {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(timeout);
    Client::connect([url], Some(opts)).await.expect("connect")
}

/// (this member's ID, the leader it knows of), or `None` if it does not answer.
async fn status(url: &str) -> Option<(u64, u64)> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_millis(500));
    let mut c = Client::connect([url], Some(opts)).await.ok()?;
    let st = c.status().await.ok()?;
    Some((st.header().map(|h| h.member_id()).unwrap_or(0), st.leader()))
}

/// Waits until one of `urls` is the leader they agree on; its index.
async fn wait_leader(urls: &[String], within: Duration) -> Option<usize> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let mut seen = Vec::new();
        for u in urls {
            seen.push(status(u).await);
        }
        if let Some(Some((_, leader))) = seen.first() {
            let agreed = seen
                .iter()
                .all(|s| matches!(s, Some((_, l)) if l == leader));
            let at = seen
                .iter()
                .position(|s| matches!(s, Some((id, _)) if id == leader));
            if agreed && *leader != 0 {
                if let Some(i) = at {
                    return Some(i);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Starts the laid-out `members`, waits until each serves and they agree on a leader;
/// their URLs and the leader's index.
fn start_cluster(rt: &tokio::runtime::Runtime, members: &mut [Member]) -> (Vec<String>, usize) {
    for x in members.iter_mut() {
        x.spawn();
    }
    for x in members.iter_mut() {
        x.wait_serving(START_WITHIN);
    }
    let urls: Vec<String> = members.iter().map(Member::url).collect();
    let leader = rt
        .block_on(wait_leader(&urls, Duration::from_secs(10)))
        .expect("a leader among the three");
    (urls, leader)
}

/// Stops `member` and starts it again as `skiff-failpoints` (`fp`) armed with `spec`.
fn restart_armed(member: &mut Member, fp: PathBuf, spec: &str) {
    member.terminate(Duration::from_secs(10));
    member.bin = fp;
    member.env.push(("SKIFF_FAILPOINTS".into(), spec.into()));
    member.spawn();
}

/// The instant `needle` first appears in `member`'s log (polled every 10 ms), if it
/// does within `within`.
fn wait_for_log_line(member: &Member, needle: &str, within: Duration) -> Option<Instant> {
    wait_for_log(member, within, |log| log.contains(needle))
}

/// The instant `member`'s whole log first satisfies `done` (polled every 10 ms), if it
/// does within `within`.
fn wait_for_log(member: &Member, within: Duration, done: impl Fn(&str) -> bool) -> Option<Instant> {
    let deadline = Instant::now() + within;
    loop {
        let log = std::fs::read_to_string(&member.log_path).unwrap_or_default();
        if done(&log) {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The lines of `member`'s log that report a panic.
fn panic_lines(member: &Member) -> String {
    let log = std::fs::read_to_string(&member.log_path).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("panicked at") || l.contains(APPLY_PANIC))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The failpoints crate's message for a `panic` without a message of its own.
const APPLY_PANIC: &str = "failpoint apply-entries fired";

/// A follower of a running 3-member cluster is restarted as `skiff-failpoints` with
/// `apply-entries=panic` (armed at a first start it would fire on the bootstrap
/// entries, before the cluster formed): the first
/// batch it applies panics, it must exit non-zero within 1 s of the panic line, and the
/// other two must keep (or elect) a leader and accept writes through each of them.
#[test]
fn a_member_whose_apply_thread_panics_exits_and_the_others_go_on() {
    let _one = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let fp = failpoints_bin();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let skiff = Path::new(env!("CARGO_BIN_EXE_skiff"));
    let mut m = cluster_members(skiff, 3, 27400, dir.path(), TIMING);
    let (urls, leader) = start_cluster(&rt, &mut m);
    // The victim is a follower; the cluster has committed entries it already applied.
    let victim = (leader + 1) % 3;
    let writer = (0..3)
        .find(|i| *i != victim)
        .expect("another member than the victim");
    rt.block_on(async {
        client(&urls[writer])
            .await
            .put("before", "1", None)
            .await
            .expect("put before")
    });
    // Restart the victim as skiff-failpoints with its apply thread armed to panic. It
    // has applied everything it holds, so it panics at the first batch of entries
    // committed after it rejoins: the next write, or whatever the cluster commits while
    // it starts (a member may publish its attributes through raft), whichever is first.
    restart_armed(&mut m[victim], fp, "apply-entries=panic");
    let restarted_at = Instant::now();
    let mut trigger = "the write through another member";
    let serving_deadline = Instant::now() + START_WITHIN;
    loop {
        let log = std::fs::read_to_string(&m[victim].log_path).unwrap_or_default();
        if log.contains(APPLY_PANIC) {
            trigger = "the first entries it applied after its restart, before it served";
            break;
        }
        if let Some((200, _)) = common::http_get(m[victim].client_port, "/health") {
            break;
        }
        assert!(
            Instant::now() < serving_deadline,
            "m{victim} (skiff-failpoints) neither served nor panicked; log tail:\n{}",
            m[victim].log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let wrote_at = Instant::now();
    rt.block_on(async {
        client(&urls[writer])
            .await
            .put("trigger", "1", None)
            .await
            .expect("put through a healthy member")
    });

    let mut failures = Vec::new();
    let panicked_at = wait_for_log_line(&m[victim], APPLY_PANIC, Duration::from_secs(5));
    match panicked_at {
        None => failures.push(format!(
            "m{victim} never logged {APPLY_PANIC:?}; log tail:\n{}",
            m[victim].log_tail(20)
        )),
        Some(panicked_at) => {
            let deadline = panicked_at + Duration::from_secs(5);
            let exit = loop {
                if let Some(status) = m[victim].try_exit() {
                    break Some((status, panicked_at.elapsed()));
                }
                if Instant::now() >= deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            match exit {
                None => failures.push(format!(
                    "m{victim} still running 5 s after {APPLY_PANIC:?} appeared in its log \
                     (trigger: {trigger}; /health: {:?}); the panic:\n{}\nlog tail:\n{}",
                    common::http_get(m[victim].client_port, "/health"),
                    panic_lines(&m[victim]),
                    m[victim].log_tail(8)
                )),
                Some((status, after)) => {
                    println!(
                        "m{victim} panicked ({trigger}; panic line seen {:?} after its restart, \
                         {:?} after the write) and exited with {status} {after:?} after the \
                         panic line",
                        panicked_at.saturating_duration_since(restarted_at),
                        panicked_at.saturating_duration_since(wrote_at)
                    );
                    if status.success() {
                        failures.push(format!("m{victim} exited with {status} after a panic"));
                    }
                    if after > Duration::from_secs(1) {
                        failures.push(format!(
                            "m{victim} exited {after:?} after the panic (limit 1 s)"
                        ));
                    }
                }
            }
        }
    }

    // The other two elect a leader (or keep theirs) and accept writes, through each.
    let others: Vec<String> = (0..3)
        .filter(|i| *i != victim)
        .map(|i| urls[i].clone())
        .collect();
    let went_on = rt.block_on(async {
        let leader = wait_leader(&others, Duration::from_secs(5))
            .await
            .ok_or("no leader among the other two within 5 s")?;
        for (i, u) in others.iter().enumerate() {
            let mut c = client(u).await;
            c.put(format!("after/{i}"), "1", None)
                .await
                .map_err(|e| format!("put through {u}: {e}"))?;
            let got = c
                .get(format!("after/{i}"), None)
                .await
                .map_err(|e| format!("get through {u}: {e}"))?;
            if got.kvs().len() != 1 {
                return Err(format!("after/{i} not found through {u}"));
            }
        }
        Ok::<_, String>(leader)
    });
    match went_on {
        Ok(l) => println!("the other two: {} leads, writes accepted", others[l]),
        Err(e) => failures.push(format!("the other two members: {e}")),
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A single member with every backend commit paused 2 s: 300 ms into a put (still
/// pending, so a commit is paused), a keep-alive of a granted lease and a serializable
/// range, sent together, must each answer within 100 ms, before the put completes.
#[test]
fn a_paused_backend_commit_does_not_hold_up_keep_alives_or_serializable_reads() {
    let _one = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let fp = failpoints_bin();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    // A single member campaigns at once, so a long election timeout costs nothing here
    // and raises the request timeout (5 s + 2 election timeouts) to 15 s: writes queue
    // behind several paused commits and must not time out while the test sets up.
    let slow_requests = ["--heartbeat-interval", "100", "--election-timeout", "5000"];
    let mut m = cluster_members(&fp, 1, 27410, dir.path(), &slow_requests);
    // Every backend commit pauses 2 s, including the periodic durable commits, so the
    // backend is inside a paused commit most of the time and every write waits for one
    // or more of them.
    m[0].env.push((
        "SKIFF_FAILPOINTS".into(),
        "backend-commit=pause(2000)".into(),
    ));
    m[0].spawn();
    // A plain /health commits an entry and gives up after a second: ask what commits
    // nothing.
    m[0].wait_healthy("/health?serializable=true", START_WITHIN);
    let url = m[0].url();
    let report = rt.block_on(async {
        // Writes wait for paused commits: give them time.
        let slow = Duration::from_secs(30);
        let mut c = client_with_timeout(&url, slow).await;
        let granting = Instant::now();
        let lease = c
            .lease_grant(60, None)
            .await
            .expect("lease grant (behind paused commits)")
            .id();
        println!("lease grant took {:?}", granting.elapsed());
        let (mut keeper, mut stream) = c
            .lease_client()
            .keep_alive(lease)
            .await
            .expect("keep-alive stream");
        let mut reader = client(&url).await;
        // Warm both paths up (connections, streams) before measuring.
        keeper.keep_alive().await.expect("send keep-alive");
        stream
            .message()
            .await
            .expect("keep-alive answer")
            .expect("a keep-alive response");
        reader
            .get("stuck", Some(GetOptions::new().with_serializable()))
            .await
            .expect("serializable get");

        let mut writer = client_with_timeout(&url, slow).await;
        let put_began = Instant::now();
        let put = tokio::spawn(async move { writer.put("stuck", "v", None).await });
        // The put's entry is committed by raft at once and its apply reaches a backend
        // commit within milliseconds (or waits behind a paused one): measure well
        // inside the 2 s pause.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !put.is_finished(),
            "the put finished within 300 ms: the backend commit was not paused"
        );
        let keep_alive = async {
            let t = Instant::now();
            keeper.keep_alive().await.map_err(|e| e.to_string())?;
            let r = tokio::time::timeout(Duration::from_secs(5), stream.message())
                .await
                .map_err(|_| "no keep-alive answer within 5 s".to_string())?
                .map_err(|e| e.to_string())?
                .ok_or("keep-alive stream closed")?;
            Ok::<_, String>((t.elapsed(), r.ttl()))
        };
        let range = async {
            let t = Instant::now();
            let r = reader
                .get("stuck", Some(GetOptions::new().with_serializable()))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((t.elapsed(), r.kvs().len()))
        };
        let (ka, rg) = tokio::join!(keep_alive, range);
        let put_pending_after = !put.is_finished();
        let put_result = put.await.expect("put task");
        (ka, rg, put_pending_after, put_began.elapsed(), put_result)
    });
    let (ka, rg, put_pending_after, put_took, put_result) = report;
    println!(
        "put took {put_took:?} ({put_result:?}); keep-alive {ka:?}; serializable range {rg:?}"
    );
    let limit = Duration::from_millis(100);
    let mut failures = Vec::new();
    match ka {
        Ok((t, ttl)) if t <= limit && ttl > 0 => {}
        Ok((t, ttl)) => failures.push(format!(
            "keep-alive answered in {t:?} (TTL {ttl}) while a commit was paused (limit {limit:?})"
        )),
        Err(e) => failures.push(format!("keep-alive failed: {e}")),
    }
    match rg {
        Ok((t, _)) if t <= limit => {}
        Ok((t, _)) => failures.push(format!(
            "serializable range answered in {t:?} while a commit was paused (limit {limit:?})"
        )),
        Err(e) => failures.push(format!("serializable range failed: {e}")),
    }
    // Every commit pauses here (the periodic durable ones too), so the put may wait
    // behind several and run into the request timeout: its outcome is not what this
    // test is about, only that it was stuck while the others were answered.
    if let Err(e) = &put_result {
        println!("the paused put ended with {e} (it waited behind paused commits)");
    }
    // Both were measured while the put was stuck, or the measurement says nothing.
    if !put_pending_after && failures.is_empty() {
        failures.push("the put finished before the measurements did".to_string());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What a member crashed at a write-path point had acknowledged and kept.
struct CrashOutcome {
    acked: usize,
    kept: usize,
    log: String,
}

/// A single member started as `skiff-failpoints` with `point=spec` writes keys `k0000`,
/// `k0001`, ... one at a time until a put fails; it must then exit non-zero. Restarted
/// as plain `skiff`, it must serve every acknowledged key with its value, at most the
/// one put in flight besides, and a revision that counts each put once.
fn crash_and_restart(point: &str, spec: &str, port: u16) -> CrashOutcome {
    crash_and_restart_with(point, spec, port, &[], &[])
}

/// [`crash_and_restart`] with extra environment variables (the failpoints build's
/// knobs) and flags for the armed member; the restart keeps the flags.
fn crash_and_restart_with(
    point: &str,
    spec: &str,
    port: u16,
    env: &[(&str, &str)],
    args: &[&str],
) -> CrashOutcome {
    let _one = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let fp = failpoints_bin();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let flags: Vec<&str> = TIMING.iter().chain(args).copied().collect();
    let mut m = cluster_members(&fp, 1, port, dir.path(), &flags).remove(0);
    m.env
        .push(("SKIFF_FAILPOINTS".into(), format!("{point}={spec}")));
    m.env
        .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    m.spawn();
    m.wait_serving(START_WITHIN);
    let url = m.url();
    // Puts until one fails, for a while: a snapshot's file is written once the backend
    // is durable up to it, which the periodic durable commit makes within a second or
    // so, so how many puts come before the point fires depends on the clock.
    const MAX_PUTS: usize = 10_000;
    let writing_for = Duration::from_secs(20);
    let (acked, fired) = rt.block_on(async {
        let mut c = client_with_timeout(&url, Duration::from_secs(3)).await;
        let until = Instant::now() + writing_for;
        for i in 0..MAX_PUTS {
            if Instant::now() >= until {
                return (i, false);
            }
            let put = c.put(format!("k{i:04}"), format!("v{i}"), None).await;
            if put.is_err() {
                return (i, true);
            }
        }
        (MAX_PUTS, false)
    });
    assert!(
        fired,
        "{point}={spec}: never fired ({acked} puts acknowledged in {writing_for:?})"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = m.try_exit() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{point}={spec}: a put failed but the member still runs:\n{}",
            m.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "{point}={spec}: exited with {status}");
    let log = std::fs::read_to_string(&m.log_path).unwrap_or_default();

    m.env.clear();
    m.bin = PathBuf::from(env!("CARGO_BIN_EXE_skiff"));
    m.spawn();
    m.wait_serving(START_WITHIN);
    let kept = rt.block_on(async {
        let mut c = client(&url).await;
        let r = c
            .get("k", Some(GetOptions::new().with_prefix()))
            .await
            .expect("get after restart");
        let kvs: Vec<(String, String)> = r
            .kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key_str().expect("utf-8").to_string(),
                    kv.value_str().expect("utf-8").to_string(),
                )
            })
            .collect();
        for i in 0..acked {
            let want = (format!("k{i:04}"), format!("v{i}"));
            assert_eq!(
                kvs.get(i),
                Some(&want),
                "{point}={spec}: acknowledged put {i} lost after the restart"
            );
        }
        assert!(
            kvs.len() <= acked + 1,
            "{point}={spec}: {} keys, {acked} acknowledged",
            kvs.len()
        );
        let revision = r.header().expect("header").revision();
        assert_eq!(
            revision,
            1 + kvs.len() as i64,
            "{point}={spec}: a put applied twice (or lost) by the replay"
        );
        kvs.len()
    });
    drop(m);
    CrashOutcome { acked, kept, log }
}

#[test]
fn a_crash_at_any_write_path_point_loses_no_acknowledged_write() {
    let mut port = 27420;
    for point in [
        "wal-before-write",
        "wal-before-fsync",
        "wal-after-fsync",
        "backend-commit",
        "backend-after-commit",
    ] {
        let out = crash_and_restart(point, "40+panic", port);
        assert!(
            out.log.contains(&format!("failpoint {point} fired")),
            "{point}: the crash was not the failpoint's:\n{}",
            out.log
        );
        println!(
            "{point}: crashed after {} acknowledged puts; {} kept after the restart",
            out.acked, out.kept
        );
        port += 2;
    }
}

#[test]
fn a_failed_fdatasync_stops_the_member_and_keeps_what_it_acknowledged() {
    let out = crash_and_restart("wal-fsync", "40+error(input/output error)", 27430);
    assert!(
        out.log.contains("input/output error") && out.log.contains("member/wal/"),
        "the WAL's fsync failure is not in the log with the file:\n{}",
        out.log
    );
    println!(
        "wal-fsync=error: stopped after {} acknowledged puts; {} kept after the restart",
        out.acked, out.kept
    );
}

#[test]
fn a_crash_at_a_segment_cut_or_a_snapshot_save_loses_no_acknowledged_write() {
    let segment = [(skiff_failpoints::WAL_SEGMENT_BYTES, "4096")];
    for (point, spec, port, env, args) in [
        ("wal-segment-cut", "1+panic", 27440, &segment[..], &[][..]),
        (
            "snapshot-save",
            "1+panic",
            27442,
            &[][..],
            &["--snapshot-count", "20"][..],
        ),
    ] {
        let out = crash_and_restart_with(point, spec, port, env, args);
        assert!(
            out.log.contains(&format!("failpoint {point} fired")),
            "{point}: the crash was not the failpoint's:\n{}",
            out.log
        );
        println!(
            "{point}: crashed after {} acknowledged puts; {} kept after the restart",
            out.acked, out.kept
        );
    }
}

/// The keys `prefix0000..` through `url` with their values, and the header revision.
async fn keys_under(url: &str, prefix: &str, serializable: bool) -> (Vec<(String, String)>, i64) {
    let mut c = client(url).await;
    let mut o = GetOptions::new().with_prefix();
    if serializable {
        o = o.with_serializable();
    }
    let r = c.get(prefix, Some(o)).await.expect("get prefix");
    let kvs = r
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().expect("utf-8").to_string(),
                kv.value_str().expect("utf-8").to_string(),
            )
        })
        .collect();
    (kvs, r.header().expect("header").revision())
}

/// A single member armed with `defrag-swap=abort` holds 100 puts and 20 deletes; a
/// defragment crashes it between the checked copy and the rename. Restarted as plain
/// `skiff` it serves exactly the 80 remaining keys at revision 121, and defragments.
#[test]
fn a_crash_at_the_defragment_swap_keeps_every_write() {
    crash_in_a_defragment("defrag-swap", 27444);
}

/// The same with `defrag-after-swap=abort`: the crash comes after the rename, before the
/// directory's sync and the new file's durable commit (its last rows were committed
/// without an fsync), so the restart opens the copy at its last durable round and
/// replays the rest from the WAL.
#[test]
fn a_crash_after_the_defragment_swap_keeps_every_write() {
    crash_in_a_defragment("defrag-after-swap", 27446);
}

fn crash_in_a_defragment(point: &str, port: u16) {
    let _one = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let fp = failpoints_bin();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = cluster_members(&fp, 1, port, dir.path(), TIMING).remove(0);
    m.env
        .push(("SKIFF_FAILPOINTS".into(), format!("{point}=abort")));
    m.spawn();
    m.wait_serving(START_WITHIN);
    let url = m.url();
    let defrag = rt.block_on(async {
        let mut c = client(&url).await;
        for i in 0..100 {
            c.put(format!("d{i:04}"), format!("v{i}"), None)
                .await
                .expect("put");
        }
        for i in 0..20 {
            c.delete(format!("d{i:04}"), None).await.expect("delete");
        }
        c.defragment().await
    });
    assert!(
        defrag.is_err(),
        "{point}: the defragment answered: {defrag:?}"
    );
    let status = m.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "{point}: exited with {status}");
    let log = std::fs::read_to_string(&m.log_path).unwrap_or_default();
    assert!(
        log.contains(&format!("failpoint {point} fired")),
        "the crash was not the failpoint's:\n{}",
        m.log_tail(20)
    );
    m.env.clear();
    m.bin = PathBuf::from(env!("CARGO_BIN_EXE_skiff"));
    m.spawn();
    m.wait_serving(START_WITHIN);
    let want: Vec<(String, String)> = (20..100)
        .map(|i| (format!("d{i:04}"), format!("v{i}")))
        .collect();
    rt.block_on(async {
        let (kvs, rev) = keys_under(&url, "d", false).await;
        assert_eq!(kvs, want, "after the crash at {point}");
        assert_eq!(rev, 121, "each put and delete applied once");
        client(&url)
            .await
            .defragment()
            .await
            .expect("a defragment after the restart");
        let (kvs, _) = keys_under(&url, "d", false).await;
        assert_eq!(kvs, want, "after a defragment that completed");
    });
    println!("{point}: crashed ({status}); 80 keys at revision 121 after the restart");
}

/// Three `skiff-failpoints` members snapshot every 20 entries and keep 5 entries
/// behind a snapshot for a slow follower. A follower stopped while 150 puts are
/// acknowledged is restarted with `snapshot-install=panic` once the leader has saved a
/// snapshot past them: the leader must send it that snapshot, whose install crashes it. Restarted without failpoints, it serves every
/// acknowledged put (a serializable read of its own state) and its HashKV at the
/// cluster's revision equals both peers'.
#[test]
fn a_crash_while_installing_a_snapshot_leaves_no_divergence() {
    let _one = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let fp = failpoints_bin();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let flags: Vec<&str> = TIMING
        .iter()
        .chain(&["--snapshot-count", "20"])
        .copied()
        .collect();
    let mut m = cluster_members(&fp, 3, 27450, dir.path(), &flags);
    for x in m.iter_mut() {
        x.env
            .push((skiff_failpoints::CATCH_UP_ENTRIES.into(), "5".into()));
    }
    let (urls, leader) = start_cluster(&rt, &mut m);
    let victim = (leader + 1) % 3;
    m[victim].terminate(Duration::from_secs(10));
    const PUTS: usize = 150;
    rt.block_on(async {
        let mut c = client(&urls[leader]).await;
        for i in 0..PUTS {
            c.put(format!("s{i:04}"), format!("v{i}"), None)
                .await
                .expect("put with two of three members up");
        }
    });
    // The leader releases its log only once a snapshot's backend commit is durable
    // (about every second): until then the follower would be caught up from the log.
    // The victim stopped within the first ten entries; snapshots come every 20.
    wait_for_saved_snapshot(&m[leader], 100, Duration::from_secs(20));
    m[victim]
        .env
        .push(("SKIFF_FAILPOINTS".into(), "snapshot-install=panic".into()));
    m[victim].spawn();
    let status = m[victim].wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "snapshot-install: exited with {status}");
    let log = std::fs::read_to_string(&m[victim].log_path).unwrap_or_default();
    assert!(
        log.contains("failpoint snapshot-install fired"),
        "the crash was not the failpoint's:\n{}",
        m[victim].log_tail(20)
    );
    m[victim].env.retain(|(k, _)| k != "SKIFF_FAILPOINTS");
    m[victim].spawn();
    m[victim].wait_serving(START_WITHIN);
    let want: Vec<(String, String)> = (0..PUTS)
        .map(|i| (format!("s{i:04}"), format!("v{i}")))
        .collect();
    let hashes = rt.block_on(async {
        let (_, rev) = keys_under(&urls[leader], "s", false).await;
        // The victim's own state, once it has applied the cluster's revision.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (kvs, at) = keys_under(&urls[victim], "s", true).await;
            if at >= rev {
                assert_eq!(kvs, want, "the restarted follower's keys");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the restarted follower is at revision {at}, the cluster at {rev}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut hashes = Vec::new();
        for u in &urls {
            let h = client(u).await.hash_kv(rev).await.expect("hash_kv");
            hashes.push((h.hash(), h.compact_version()));
        }
        (rev, hashes)
    });
    let (rev, hashes) = hashes;
    assert!(
        hashes.iter().all(|h| *h == hashes[0]),
        "HashKV at revision {rev} differs: {hashes:?} (m{victim} restarted after the crash)"
    );
    println!(
        "snapshot-install: m{victim} crashed ({status}); after its restart it holds all \
         {PUTS} puts and HashKV at {rev} matches its peers: {hashes:?}"
    );
}

/// Waits until `member`'s log says it saved a snapshot at `index` or later (and so
/// released its log up to `CATCH_UP_ENTRIES` behind it).
fn wait_for_saved_snapshot(member: &Member, index: u64, within: Duration) {
    let saved = wait_for_log(member, within, |log| {
        common::newest_saved_snapshot(log).is_some_and(|n| n >= index)
    });
    assert!(
        saved.is_some(),
        "no snapshot at index {index} or later within {within:?}:\n{}",
        member.log_tail(20)
    );
}

/// The leader's apply thread sleeps 400 ms before every batch (it was restarted as
/// `skiff-failpoints` and made leader with MoveLeader); a follower applies the grant
/// and answers it long before the leader does. A keep-alive and a time-to-live sent
/// through that follower at once are forwarded to the leader, whose lease clock learns
/// of the lease only when its own apply thread gets there: they must still find it
/// (before the leader waited for its apply, the keep-alive answered TTL 0, "lease not
/// found": a `bench/compare.sh` lease run failed on it).
#[test]
fn a_lease_granted_through_a_follower_is_found_while_the_leader_applies_late() {
    let _one = ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let fp = failpoints_bin();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let skiff = Path::new(env!("CARGO_BIN_EXE_skiff"));
    let mut m = cluster_members(skiff, 3, 27460, dir.path(), TIMING);
    let (urls, leader) = start_cluster(&rt, &mut m);
    let slow = (leader + 1) % 3;
    restart_armed(&mut m[slow], fp, "apply-entries=pause(400)");
    m[slow].wait_serving(START_WITHIN);
    rt.block_on(async {
        let (slow_id, _) = status(&urls[slow]).await.expect("the slow member answers");
        let now = wait_leader(&urls, Duration::from_secs(10))
            .await
            .expect("a leader after the restart");
        println!("leader m{now}; the slow member is m{slow}");
        if now != slow {
            client(&urls[now])
                .await
                .move_leader(slow_id)
                .await
                .expect("move the leadership to the slow member");
        }
        assert_eq!(
            wait_leader(&urls, Duration::from_secs(10)).await,
            Some(slow),
            "the slow member did not become the leader"
        );
        let via = (slow + 1) % 3;
        for round in 0..3 {
            let mut c = client(&urls[via]).await;
            let id = c.lease_grant(60, None).await.expect("grant").id();
            let asked = Instant::now();
            let within = Duration::from_secs(10);
            let (mut keeper, mut answers) = tokio::time::timeout(within, c.lease_keep_alive(id))
                .await
                .unwrap_or_else(|_| panic!("round {round}: keep-alive of lease {id:x} hung"))
                .unwrap_or_else(|e| panic!("round {round}: keep-alive of lease {id:x}: {e}"));
            keeper.keep_alive().await.expect("a second keep-alive");
            let again = tokio::time::timeout(within, answers.message())
                .await
                .unwrap_or_else(|_| panic!("round {round}: second keep-alive of {id:x} hung"))
                .expect("keep-alive answer")
                .expect("keep-alive stream open");
            assert_eq!(again.ttl(), 60, "round {round}");
            let ttl = tokio::time::timeout(within, c.lease_time_to_live(id, None))
                .await
                .unwrap_or_else(|_| panic!("round {round}: time-to-live of lease {id:x} hung"))
                .unwrap_or_else(|e| panic!("round {round}: time-to-live of lease {id:x}: {e}"));
            println!(
                "round {round}: lease {id:x} found by keep-alive and time-to-live (TTL {}) in {:?}",
                ttl.ttl(),
                asked.elapsed()
            );
            assert_eq!(ttl.granted_ttl(), 60, "round {round}");
            assert!(ttl.ttl() > 0, "round {round}: TTL {}", ttl.ttl());
        }
    });
}
