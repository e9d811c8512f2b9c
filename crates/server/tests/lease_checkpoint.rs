//! Leases across a leader change (etcd #9395), Skiff against etcd 3.4 on the same
//! steps: a 3-member cluster, a lease of TTL 10 s with a key attached, one keep-alive
//! at t = 0 and none after, the leader killed (SIGKILL) at t = 5 s. When is the key
//! gone?
//!
//! - etcd 3.4 (no checkpoints by default): the new leader gives the lease its full TTL
//!   again, so the key lives until t >= 15 s.
//! - Skiff (checkpoints on): the new leader resumes the lease where it was, so the key
//!   is gone by TTL + one election timeout + a little: t <= 12 s; and never before the
//!   TTL ran out (t >= 10 s). With `--experimental-enable-lease-checkpoint=false`, Skiff
//!   restarts the TTL as etcd 3.4 does (t >= 15 s).
//!
//! Also: keep-alives arriving a millisecond apart share checkpoint entries (one per
//! 10 ms at most), so a steady stream of renewals does not cost a Raft entry each.
//!
//! Ports 27900-27917 belong to this file.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{cluster_members, have, Member};
use etcd_client::{Client, ConnectOptions};

const TTL: i64 = 10;
const KILL_AT: Duration = Duration::from_secs(5);

async fn client(urls: &[String]) -> Client {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(3));
    Client::connect(urls, Some(opts)).await.unwrap()
}

/// The index of the leader among `members`.
async fn leader(members: &[Member]) -> usize {
    for _ in 0..100 {
        for (i, m) in members.iter().enumerate() {
            if let Ok(mut c) = Client::connect([m.url()], None).await {
                if let Ok(s) = c.status().await {
                    if s.leader() == s.header().map(|h| h.member_id()).unwrap_or(0) {
                        return i;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader");
}

/// Runs the scenario against `bin`; returns when (after the keep-alive) the key was
/// seen gone.
async fn key_gone_after(bin: &Path, base_port: u16, extra: &[&str]) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let mut members = cluster_members(bin, 3, base_port, dir.path(), extra);
    for m in members.iter_mut() {
        m.spawn();
    }
    for m in members.iter_mut() {
        m.wait_serving(Duration::from_secs(30));
    }
    let urls: Vec<String> = members.iter().map(|m| m.url()).collect();
    let mut c = client(&urls).await;
    let lease = c.lease_grant(TTL, None).await.unwrap().id();
    c.put(
        "held",
        "v",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    let (mut keeper, mut answers) = c.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let ttl = answers.message().await.unwrap().unwrap().ttl();
    let t0 = Instant::now();
    assert_eq!(ttl, TTL);
    drop((keeper, answers));

    let victim = leader(&members).await;
    tokio::time::sleep(KILL_AT.saturating_sub(t0.elapsed())).await;
    // SIGKILL (dropping a Member kills it by PID).
    drop(members.remove(victim));
    let killed_at = t0.elapsed();
    let urls: Vec<String> = members.iter().map(|m| m.url()).collect();
    let mut c = client(&urls).await;
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "the key outlived its lease by far"
        );
        match c.get("held", None).await {
            Ok(r) if r.kvs().is_empty() => break,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let gone = t0.elapsed();
    println!(
        "{}: leader killed at {killed_at:.1?}, key gone at {gone:.1?} after the last keep-alive (TTL {TTL} s)",
        bin.display()
    );
    gone
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_resumes_leases_instead_of_restarting_them() {
    let bin = Path::new(env!("CARGO_BIN_EXE_skiff"));
    let skiff = key_gone_after(bin, 27900, &[]).await;
    let ttl = Duration::from_secs(TTL as u64);
    assert!(skiff >= ttl, "Skiff revoked the lease early: {skiff:?}");
    assert!(
        skiff <= ttl + Duration::from_secs(2),
        "Skiff gave the lease more than one election timeout (+1 s) extra: {skiff:?}"
    );
    // With checkpoints turned off, Skiff behaves as etcd 3.4 does by default.
    let plain = key_gone_after(
        bin,
        27900,
        &["--experimental-enable-lease-checkpoint=false"],
    )
    .await;
    assert!(
        plain >= KILL_AT + ttl,
        "without checkpoints the new leader restarts the TTL: {plain:?}"
    );
    if !have("etcd") {
        eprintln!("note: etcd not installed; the etcd 3.4 half is skipped");
        return;
    }
    let etcd = key_gone_after(Path::new("etcd"), 27906, &[]).await;
    println!(
        "key of a {TTL} s lease gone after the leader was killed at {KILL_AT:?}: \
         skiff {skiff:?}, skiff without checkpoints {plain:?}, etcd 3.4 {etcd:?}"
    );
    // etcd 3.4 restarts the lease's full TTL at the new leader (#9395).
    assert!(
        etcd >= KILL_AT + ttl,
        "etcd 3.4 was expected to restart the TTL: {etcd:?}"
    );
}

/// 20 leases kept alive 10 times each, every keeper renewing again 20 ms after its
/// answer: about one renewal per millisecond. Each is answered with the full TTL,
/// and the Raft log grows by at most one checkpoint entry per 10 ms of the run (before
/// the spacing: 80 entries in 427 ms, one per two or three renewals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_keep_alives_shares_checkpoint_entries() {
    let bin = Path::new(env!("CARGO_BIN_EXE_skiff"));
    let dir = tempfile::tempdir().unwrap();
    let mut members = cluster_members(bin, 3, 27912, dir.path(), &[]);
    for m in members.iter_mut() {
        m.spawn();
    }
    for m in members.iter_mut() {
        m.wait_serving(Duration::from_secs(30));
    }
    let urls: Vec<String> = members.iter().map(|m| m.url()).collect();
    let c = client(&urls).await;
    let mut leases = Vec::new();
    for _ in 0..20 {
        leases.push(c.clone().lease_grant(60, None).await.unwrap().id());
    }
    let lead = leader(&members).await;
    let raft_index = |url: String| async move {
        let mut c = Client::connect([url], None).await.unwrap();
        c.status().await.unwrap().raft_index()
    };
    let before = raft_index(members[lead].url()).await;
    let start = Instant::now();
    let keepers: Vec<_> = leases
        .into_iter()
        .map(|id| {
            let mut c = c.clone();
            tokio::spawn(async move {
                let (mut keeper, mut answers) = c.lease_keep_alive(id).await.unwrap();
                for _ in 0..10 {
                    keeper.keep_alive().await.unwrap();
                    let ttl = answers.message().await.unwrap().unwrap().ttl();
                    assert_eq!(ttl, 60, "lease {id:x} renewed with TTL {ttl}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    for k in keepers {
        k.await.unwrap();
    }
    let elapsed = start.elapsed();
    let entries = raft_index(members[lead].url()).await - before;
    let bound = elapsed.as_millis() as u64 / 10 + 2;
    println!("200 keep-alives in {elapsed:?}: {entries} Raft entries (bound {bound})");
    assert!(
        entries <= bound,
        "200 keep-alives in {elapsed:?} took {entries} Raft entries, more than one per 10 ms"
    );
}
