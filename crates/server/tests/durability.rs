//! Durability of one member against `kill -9`, and refusal of a corrupted WAL.
//! Ports 23440-23449 belong to this file.
//!
//! - Under a concurrent write load the member is killed with SIGKILL and restarted
//!   on the same data: every write it acknowledged is there.
//! - With no load, revision and HashKV are recorded, the member is killed and
//!   restarted: both are unchanged.
//! - A byte flipped inside a WAL record (not a torn tail): the member refuses to
//!   start, exits 1 and names the WAL file and the byte offset.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Kind, Proc};
use skiff_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
    HashKvRequest, LeaseGrantRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
};
use tonic::transport::Channel;

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .expect("url")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}

async fn rev_and_hash(url: &str) -> (i64, u32) {
    let ch = channel(url).await;
    let r = MaintenanceClient::new(ch)
        .hash_kv(HashKvRequest { revision: 0 })
        .await
        .expect("hashkv")
        .into_inner();
    (r.header.expect("header").revision, r.hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_write() {
    let p = Proc::start(Kind::Skiff, "k9", 23440, 23441, None);
    let url = p.url();
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let ch = channel(&url).await;
        let acked = acked.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut kv = KvClient::new(ch);
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (k, v) = (format!("w{w}-{i:06}"), format!("v{i}"));
                let req = PutRequest {
                    key: Bytes::from(k.clone()),
                    value: Bytes::from(v.clone()),
                    ..Default::default()
                };
                match kv.put(req).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(k, v);
                    }
                    // The kill: outcomes from here on are unknown, stop writing.
                    Err(_) => break,
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dir = p.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "the load ran ({} acknowledged writes)",
        acked.len()
    );

    let started = Instant::now();
    let p = Proc::start(Kind::Skiff, "k9", 23440, 23441, Some(dir));
    println!(
        "restarted after kill -9 in {:?} with {} acknowledged writes to check",
        started.elapsed(),
        acked.len()
    );
    let mut kv = KvClient::new(channel(&p.url()).await);
    let all = kv
        .range(RangeRequest {
            key: Bytes::from_static(b"w"),
            range_end: Bytes::from_static(b"x"),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    let found: BTreeMap<String, String> = all
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect();
    let missing: Vec<&String> = acked
        .keys()
        .filter(|k| found.get(*k) != acked.get(*k))
        .collect();
    assert!(missing.is_empty(), "lost acknowledged writes: {missing:?}");
    let revision = all.header.expect("header").revision;
    // Every put is one revision; unacknowledged ones may have landed too.
    assert!(revision > acked.len() as i64, "revision {revision}");
    println!(
        "all {} acknowledged writes present; {} keys, revision {revision}",
        acked.len(),
        found.len()
    );

    // A lease and its key survive a kill too.
    let mut leases = LeaseClient::new(channel(&p.url()).await);
    let lease = leases
        .lease_grant(LeaseGrantRequest { ttl: 300, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id;
    kv.put(PutRequest {
        key: Bytes::from_static(b"leased"),
        value: Bytes::from_static(b"v"),
        lease,
        ..Default::default()
    })
    .await
    .expect("put with lease");

    // Quiet now: revision and hash must survive a second kill exactly.
    let before = rev_and_hash(&p.url()).await;
    let dir = p.kill9();
    let p = Proc::start(Kind::Skiff, "k9", 23440, 23441, Some(dir));
    let after = rev_and_hash(&p.url()).await;
    assert_eq!(before, after, "(revision, hashkv) before and after kill -9");
    println!("revision and HashKV unchanged across kill -9: {after:?}");
    let ttl = LeaseClient::new(channel(&p.url()).await)
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: lease,
            keys: true,
        })
        .await
        .expect("ttl")
        .into_inner();
    assert_eq!(ttl.granted_ttl, 300);
    assert!(ttl.ttl > 290, "remaining {}", ttl.ttl);
    assert_eq!(ttl.keys, vec![Bytes::from_static(b"leased")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_every_snapshot_count_and_restarts_from_one() {
    let extra = ["--snapshot-count", "100"];
    let p = Proc::start_with(Kind::Skiff, "sn", 23444, 23445, None, &extra);
    let mut kv = KvClient::new(channel(&p.url()).await);
    for i in 0..350 {
        kv.put(PutRequest {
            key: Bytes::from(format!("s{i:04}")),
            value: Bytes::from(format!("v{i}")),
            ..Default::default()
        })
        .await
        .expect("put");
    }
    drop(kv);
    let before = rev_and_hash(&p.url()).await;
    let snap_files = |dir: &std::path::Path| -> Vec<_> {
        std::fs::read_dir(dir.join("member").join("snap"))
            .expect("snap dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
            .collect()
    };
    // A snapshot's file is written once the backend is durable up to it (the periodic
    // durable commit, within a second or two).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while snap_files(&p.dir).len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = p.kill9();
    let snaps = snap_files(&dir);
    assert!(!snaps.is_empty(), "a snapshot file was written");
    println!(
        "{} snapshot files after 350 writes with --snapshot-count 100",
        snaps.len()
    );

    let p = Proc::start_with(Kind::Skiff, "sn", 23444, 23445, Some(dir), &extra);
    assert_eq!(rev_and_hash(&p.url()).await, before);
    let mut kv = KvClient::new(channel(&p.url()).await);
    let r = kv
        .range(RangeRequest {
            key: Bytes::from_static(b"s"),
            range_end: Bytes::from_static(b"t"),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(r.count, 350);
    // It keeps working after restarting from the snapshot.
    kv.put(PutRequest {
        key: Bytes::from_static(b"after"),
        value: Bytes::from_static(b"restart"),
        ..Default::default()
    })
    .await
    .expect("put after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_wal_record_refuses_to_start() {
    let p = Proc::start(Kind::Skiff, "cw", 23442, 23443, None);
    let mut kv = KvClient::new(channel(&p.url()).await);
    for i in 0..50 {
        kv.put(PutRequest {
            key: Bytes::from(format!("key{i:03}")),
            value: Bytes::from(vec![b'v'; 100]),
            ..Default::default()
        })
        .await
        .expect("put");
    }
    drop(kv);
    let dir = p.kill9();

    let wal_dir = dir.join("member").join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal_dir)
        .expect("wal dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    let segment = segments.first().expect("a WAL segment").clone();
    let mut data = std::fs::read(&segment).expect("read segment");
    // Inside the records, well before their end: a flipped bit in a committed record.
    let offset = 2000;
    assert!(
        data[offset..offset + 64].iter().any(|b| *b != 0),
        "offset inside records"
    );
    data[offset] ^= 0x40;
    std::fs::write(&segment, &data).expect("write segment");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "--name",
            "cw",
            "--data-dir",
            dir.to_str().expect("utf-8"),
            "--listen-client-urls",
            "http://127.0.0.1:23442",
            "--advertise-client-urls",
            "http://127.0.0.1:23442",
            "--listen-peer-urls",
            "http://127.0.0.1:23443",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:23443",
            "--initial-cluster",
            "cw=http://127.0.0.1:23443",
        ])
        .output()
        .expect("run skiff");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let name = segment
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(stderr.contains(&name), "names the file: {stderr}");
    assert!(stderr.contains("offset"), "names the offset: {stderr}");
    println!("refused: {}", stderr.lines().last().unwrap_or_default());
}
