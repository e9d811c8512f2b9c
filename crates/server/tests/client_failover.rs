//! skiff-client across member failures (issue 16): a 3-member Skiff cluster; a watch
//! and a lease keep-alive running on one member's connection, a stream of reads and a
//! stream of puts (one distinct key each) through the client; mid-stream that member
//! fails:
//! - `watch_lease_and_reads_survive_leader_kill`: it is the leader, killed (SIGKILL):
//!   its connections close;
//! - `watch_lease_and_reads_survive_a_stalled_member`: it is a follower, stopped
//!   (SIGSTOP) for a while, then continued: its connections stay open but nothing
//!   answers (a partition, from its peers and from the client), so the client must
//!   notice by itself (read attempt timeouts, the keep-alive's unanswered renewal, the
//!   channel's HTTP/2 pings). While it is still stopped the watch has caught up on
//!   another member, the lease was renewed and no read failed.
//!
//! Then, in both:
//! - the watch delivered every event exactly once and in order across its reconnect:
//!   its revisions are exactly start..=last, strictly increasing, no gap;
//! - the lease stayed alive (renewed after the kill, its key still there);
//! - reads failed over (succeeded again after the kill, within a bound);
//! - no put was applied twice (every key has version 1), every acknowledged put is
//!   there, and the counts add up.
//!
//! Ports 29740-29759 belong to this file (29740-29745 the kill, 29750-29755 the stop).
//! The two tests take turns (one cluster at a time on a small machine).

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_client::proto::etcdserverpb::{PutRequest, WatchCreateRequest};
use skiff_client::{prefix_end, Client, ClientOptions};

const PREFIX: &str = "fo/";

/// One cluster at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn opts() -> ClientOptions {
    ClientOptions {
        request_timeout: Some(Duration::from_secs(5)),
        attempt_timeout: Some(Duration::from_secs(1)),
        ..ClientOptions::default()
    }
}

/// The index of the leader among `endpoints`, asked of each member.
async fn leader_index(endpoints: &[String]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let client = Client::connect(endpoints, opts()).expect("client");
        for i in 0..endpoints.len() {
            let pinned = client.pinned(i).expect("index in range");
            if let Ok(s) = pinned.status().await {
                let me = s.header.map(|h| h.member_id).unwrap_or(0);
                if s.leader != 0 && s.leader == me {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader among {endpoints:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_lease_and_reads_survive_leader_kill() {
    let _turn = SERIAL.lock().await;
    scenario(29740, Failure::KillLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_lease_and_reads_survive_a_stalled_member() {
    let _turn = SERIAL.lock().await;
    scenario(29750, Failure::StopFollower).await;
}

/// What happens to the member the watch and the keep-alive start on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The leader, SIGKILLed.
    KillLeader,
    /// A follower, SIGSTOPped for [`STALL`] (at least), then SIGCONTinued.
    StopFollower,
}

/// How long the stopped member stays stopped, at least: longer than the channel's
/// HTTP/2 keep-alive needs to notice (2 s interval + 6 s timeout).
const STALL: Duration = Duration::from_secs(12);

fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill {sig} {pid}");
}

async fn scenario(base_port: u16, failure: Failure) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_skiff"));
    let mut members = common::cluster_members(&bin, 3, base_port, dir.path(), &[]);
    for m in members.iter_mut() {
        m.spawn();
    }
    for m in members.iter_mut() {
        m.wait_serving(Duration::from_secs(30));
    }
    let endpoints: Vec<String> = members.iter().map(|m| m.endpoint()).collect();
    let leader = leader_index(&endpoints).await;
    let target = match failure {
        Failure::KillLeader => leader,
        Failure::StopFollower => (leader + 1) % endpoints.len(),
    };
    // Clients whose first pick is the target, so the watch and the keep-alive start
    // on the member that will fail and must move.
    let mut target_first = endpoints.clone();
    target_first.swap(0, target);
    let client = Client::connect(&endpoints, opts()).expect("client");
    let watch_client = Client::connect(&target_first, opts()).expect("client");
    let lease_client = Client::connect(&target_first, opts()).expect("client");

    // The lease (minimum TTL plus a little) and a key attached to it.
    // Granted through the balanced client, so the keep-alive is the lease client's
    // first pick (the target).
    let lease = client.lease_grant(3, 0).await.expect("grant");
    let keep_alive = lease_client.lease_keep_alive(lease.id);
    client
        .put_request(PutRequest {
            key: "lease-key".into(),
            value: "held".into(),
            lease: lease.id,
            ..Default::default()
        })
        .await
        .expect("put lease key");

    // The watch starts after everything above: every later revision is one of ours.
    let start_rev = client
        .get("lease-key")
        .await
        .expect("get")
        .header
        .map(|h| h.revision)
        .expect("header")
        + 1;
    let mut watcher = watch_client
        .watch(WatchCreateRequest {
            key: PREFIX.into(),
            range_end: prefix_end(PREFIX.as_bytes()).into(),
            start_revision: start_rev,
            ..Default::default()
        })
        .await
        .expect("watch");
    let events: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let watch_errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let watch_reconnects = Arc::new(AtomicU64::new(0));
    let watch_task = {
        let (events, errors) = (events.clone(), watch_errors.clone());
        let reconnects = watch_reconnects.clone();
        tokio::spawn(async move {
            while let Some(msg) = watcher.message().await {
                reconnects.store(watcher.reconnects(), Ordering::Relaxed);
                match msg {
                    Ok(resp) => {
                        let mut ev = events.lock().expect("events lock");
                        for e in resp.events {
                            let kv = e.kv.unwrap_or_default();
                            ev.push((kv.mod_revision, String::from_utf8_lossy(&kv.key).into()));
                        }
                    }
                    Err(e) => errors.lock().expect("errors lock").push(e.to_string()),
                }
            }
        })
    };

    // Reads: a steady stream through the balanced client.
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (reads_ok, reads_err) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let slowest_read_ms = Arc::new(AtomicU64::new(0));
    let first_read_after_kill: Arc<Mutex<Option<Duration>>> = Arc::default();
    let reader = {
        let (client, stop, ok, err) = (
            client.clone(),
            stop.clone(),
            reads_ok.clone(),
            reads_err.clone(),
        );
        let (killed_at, first) = (killed_at.clone(), first_read_after_kill.clone());
        let slowest = slowest_read_ms.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let read = client.get("lease-key").await;
                slowest.fetch_max(began.elapsed().as_millis() as u64, Ordering::Relaxed);
                match read {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let k = *killed_at.lock().expect("lock");
                        if let Some(k) = k {
                            // A read that began after the kill and succeeded.
                            if began > k {
                                let mut f = first.lock().expect("lock");
                                if f.is_none() {
                                    *f = Some(Instant::now() - k);
                                }
                            }
                        }
                    }
                    Err(_) => {
                        err.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // Puts: one distinct key each; the leader is killed after the first 150.
    let total = 400;
    let mut acked = Vec::new();
    let mut unknown = Vec::new();
    let mut renewals_at_kill = 0;
    let mut pid_killed = 0;
    for i in 0..total {
        if i == 150 {
            let pid = members[target].pid().expect("target running");
            let sig = match failure {
                Failure::KillLeader => "-KILL",
                Failure::StopFollower => "-STOP",
            };
            signal(pid, sig);
            pid_killed = pid;
            renewals_at_kill = keep_alive.renewals();
            *killed_at.lock().expect("lock") = Some(Instant::now());
            eprintln!(
                "{failure:?}: {sig} {} (pid {pid}) after {i} puts",
                members[target].name
            );
        }
        let key = format!("{PREFIX}{i:04}");
        match client.put(key.clone(), i.to_string()).await {
            Ok(_) => acked.push(key),
            Err(e) => {
                eprintln!("put {key}: outcome unknown: {e}");
                unknown.push(key);
            }
        }
    }
    let renewals_after_puts = keep_alive.renewals();
    let _ = members[target].try_exit();

    // Let the lease need renewals after the failure: its TTL is 3 s.
    tokio::time::sleep(Duration::from_secs(4)).await;
    if failure == Failure::StopFollower {
        // Still stopped: the watch must catch up on another member by itself (the
        // stalled stream noticed by the channel's pings), and the keep-alive and reads
        // must carry on.
        let stopped_at = killed_at.lock().expect("lock").expect("stopped");
        if let Some(rest) = STALL.checked_sub(stopped_at.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        let now_rev = client
            .get("lease-key")
            .await
            .expect("read while stopped")
            .header
            .map(|h| h.revision)
            .expect("header");
        let deadline = Instant::now() + Duration::from_secs(15);
        let caught_up = loop {
            let last = events.lock().expect("lock").last().map(|e| e.0);
            if last >= Some(now_rev) {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let renewals_stalled = keep_alive.renewals();
        eprintln!(
            "while stopped ({:?}): watch caught up to {now_rev}: {caught_up}, {} watch reconnects, {} keep-alive reconnects, renewals {renewals_at_kill} -> {renewals_stalled}, reads failed {}",
            stopped_at.elapsed(),
            watch_reconnects.load(Ordering::Relaxed),
            keep_alive.reconnects(),
            reads_err.load(Ordering::Relaxed)
        );
        assert!(
            caught_up,
            "the watch did not move off the stopped member (revision {now_rev} not delivered)"
        );
        assert!(
            watch_reconnects.load(Ordering::Relaxed) >= 1,
            "the watch never left the stopped member"
        );
        assert!(
            keep_alive.reconnects() >= 1 && renewals_stalled > renewals_after_puts,
            "the keep-alive did not move off the stopped member"
        );
        assert_eq!(
            reads_err.load(Ordering::Relaxed),
            0,
            "a read failed although two members answered"
        );
        // Continue it: requests it had buffered may now be applied (once), and it
        // must catch up.
        signal(pid_killed, "-CONT");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    stop.store(true, Ordering::Relaxed);
    reader.await.expect("reader");

    // The final state through the surviving members.
    let all = client.get_prefix(PREFIX).await.expect("final range");
    let final_rev = all.header.map(|h| h.revision).expect("header");
    let versions: BTreeMap<String, i64> = all
        .kvs
        .iter()
        .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.version))
        .collect();

    // Wait for the watch to deliver up to the final revision.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = events
            .lock()
            .expect("lock")
            .last()
            .map(|e| e.0)
            .unwrap_or(0);
        if last >= final_rev || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ttl = client
        .lease_time_to_live(lease.id, true)
        .await
        .expect("time to live");
    let lease_key = client.get("lease-key").await.expect("get lease key");
    let ka_reconnects = keep_alive.reconnects();
    let renewals_end = keep_alive.renewals();
    drop(keep_alive);
    drop(watch_client);
    watch_task.abort();
    let evs = events.lock().expect("lock").clone();

    // Report.
    let applied = versions.len();
    let revs: Vec<i64> = evs.iter().map(|e| e.0).collect();
    eprintln!("--- client failover report ({failure:?}) ---");
    eprintln!("failed member: {} (pid {pid_killed})", members[target].name);
    eprintln!(
        "puts: {total} sent, {} acknowledged, {} unknown outcome, {applied} applied (keys found), max version {}",
        acked.len(),
        unknown.len(),
        versions.values().max().copied().unwrap_or(0)
    );
    eprintln!(
        "watch: {} events, revisions {}..={} (expected {start_rev}..={final_rev}), {} reconnects, errors {:?}",
        evs.len(),
        revs.first().copied().unwrap_or(0),
        revs.last().copied().unwrap_or(0),
        watch_reconnects.load(Ordering::Relaxed),
        watch_errors.lock().expect("lock")
    );
    eprintln!(
        "lease {:x}: renewals {renewals_at_kill} at the kill, {renewals_after_puts} after the puts, {renewals_end} at the end, {ka_reconnects} reconnects, ttl now {}s, key present: {}",
        lease.id,
        ttl.ttl,
        !lease_key.kvs.is_empty()
    );
    eprintln!(
        "reads: {} ok, {} failed, slowest {} ms; first successful read begun after the failure: {:?}",
        reads_ok.load(Ordering::Relaxed),
        reads_err.load(Ordering::Relaxed),
        slowest_read_ms.load(Ordering::Relaxed),
        first_read_after_kill.lock().expect("lock")
    );

    // Watch: exactly once, in order, no gap.
    assert!(
        watch_errors.lock().expect("lock").is_empty(),
        "the watch ended with an error"
    );
    let expected: Vec<i64> = (start_rev..=final_rev).collect();
    assert_eq!(
        revs, expected,
        "watch revisions are not exactly start..=final"
    );
    assert!(
        watch_reconnects.load(Ordering::Relaxed) >= 1,
        "the watch never moved off the failed member"
    );
    let keys_seen: HashSet<&String> = evs.iter().map(|e| &e.1).collect();
    assert_eq!(
        keys_seen.len(),
        evs.len(),
        "a key's event was delivered twice"
    );
    // Puts: none applied twice; every acknowledged one applied; counts add up.
    assert!(
        versions.values().all(|&v| v == 1),
        "a put was applied twice: {versions:?}"
    );
    for k in &acked {
        assert!(versions.contains_key(k), "acknowledged put {k} is missing");
    }
    assert!(applied >= acked.len() && applied <= total);
    assert_eq!(applied, evs.len(), "every applied put is one watch event");
    assert!(
        unknown.len() < 20,
        "too many failed puts: {}",
        unknown.len()
    );
    // Lease: alive, renewed after the kill, key still attached.
    assert!(ttl.ttl > 0, "lease expired: {ttl:?}");
    assert!(
        renewals_end > renewals_after_puts && renewals_after_puts > renewals_at_kill,
        "renewals stopped after the kill"
    );
    assert_eq!(lease_key.kvs.len(), 1, "the lease's key is gone");
    assert!(
        ka_reconnects >= 1,
        "the keep-alive never moved off the failed member"
    );
    // Reads: they came back after the kill, within the election and a retry or two.
    let first = first_read_after_kill
        .lock()
        .expect("lock")
        .expect("no read succeeded after the kill");
    assert!(
        first < Duration::from_secs(10),
        "reads took {first:?} to fail over"
    );
    if failure == Failure::StopFollower {
        // The continued member caught up: it serves the same keys.
        let resumed = client.pinned(target).expect("index in range");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let n = resumed.get_prefix(PREFIX).await.map(|r| r.kvs.len());
            if n.as_ref().ok() == Some(&applied) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the continued member serves {n:?} keys, the others {applied}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
