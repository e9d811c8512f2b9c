//! `dbSizeInUse` in `Maintenance.Status` follows etcd 3.4's meaning, checked against
//! etcd itself: on a single member, about 8 MiB of values are written, then all of
//! them deleted and compacted (physically). On both servers, and in the same words:
//! the bytes in use fill most of the file after the writes; after the compaction they
//! drop below a quarter of that while the file (`dbSize`) keeps its size; a
//! defragmentation then shrinks the file, and the bytes in use stay below it.
//! `endpoint status -w json` shows both numbers (etcdctl prints the response's fields).
//! The second test does the same while a client keeps putting a key every 20 ms from
//! before the delete to the end: the bytes in use must drop without an idle spell.
//! Ports 29820-29827 belong to this file (etcd 29820 and 29824, Skiff 29822 and 29826).

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{cluster_members, have};
use skiff_proto::etcdserverpb as pb;
use tonic::transport::Channel;

const KEYS: usize = 2048;
const VALUE: usize = 4096;
/// Puts per txn (under `--max-txn-ops` 128 and the 1.5 MiB request limit).
const PER_TXN: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Sizes {
    db: i64,
    in_use: i64,
}

async fn sizes(maint: &mut pb::maintenance_client::MaintenanceClient<Channel>) -> Sizes {
    let s = maint
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    Sizes {
        db: s.db_size,
        in_use: s.db_size_in_use,
    }
}

/// The scenario on one server: what it showed, as sentences, and the numbers. With
/// `steady_writes`, a client puts a key every 20 ms from before the delete to the end.
async fn run(bin: &Path, port: u16, steady_writes: bool) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = cluster_members(bin, 1, port, dir.path(), &[]).remove(0);
    m.spawn();
    tokio::task::block_in_place(|| m.wait_serving(Duration::from_secs(30)));
    let ch = tonic::transport::Endpoint::from_shared(m.url())
        .expect("endpoint")
        .timeout(Duration::from_secs(30))
        .connect_lazy();
    let mut kv = pb::kv_client::KvClient::new(ch.clone());
    let mut maint = pb::maintenance_client::MaintenanceClient::new(ch);
    let empty = sizes(&mut maint).await;

    let value = vec![b'v'; VALUE];
    for chunk in 0..KEYS / PER_TXN {
        let success = (0..PER_TXN)
            .map(|i| pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: format!("k/{:05}", chunk * PER_TXN + i).into_bytes().into(),
                    value: value.clone().into(),
                    ..Default::default()
                })),
            })
            .collect();
        kv.txn(pb::TxnRequest {
            success,
            ..Default::default()
        })
        .await
        .expect("txn of puts");
    }
    // etcd counts at its next backend commit; Skiff counted at open and adds what the
    // file grew by since.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let full = sizes(&mut maint).await;
    let writer = steady_writes.then(|| {
        let mut kv = kv.clone();
        tokio::spawn(async move {
            for n in 0u64.. {
                kv.put(pb::PutRequest {
                    key: "w".into(),
                    value: n.to_string().into_bytes().into(),
                    ..Default::default()
                })
                .await
                .expect("put while compacting and defragmenting");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });
    let deleted = kv
        .delete_range(pb::DeleteRangeRequest {
            key: "k/".into(),
            range_end: "k0".into(),
            ..Default::default()
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.deleted, KEYS as i64);
    let rev = deleted.header.expect("header").revision;
    kv.compact(pb::CompactionRequest {
        revision: rev,
        physical: true,
    })
    .await
    .expect("compact");
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut compacted = sizes(&mut maint).await;
    while compacted.in_use * 4 >= full.in_use && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        compacted = sizes(&mut maint).await;
    }
    maint
        .defragment(pb::DefragmentRequest {})
        .await
        .expect("defragment");
    // Skiff recounts after the swap (the new file's size stands in until then).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut defragged = sizes(&mut maint).await;
    while defragged.in_use >= defragged.db && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        defragged = sizes(&mut maint).await;
    }

    if let Some(w) = writer {
        assert!(!w.is_finished(), "the writer stopped: {:?}", w.await);
        w.abort();
    }
    let written = (KEYS * VALUE) as i64;
    let said = format!(
        "after the writes, in use covers the values: {}\n\
         after the writes, in use fits in the file: {}\n\
         after compaction, in use below a quarter of before: {}\n\
         after compaction, the file kept its size: {}\n\
         after defragment, the file below half its size: {}\n\
         after defragment, in use below the file's size: {}\n",
        full.in_use >= written,
        full.in_use <= full.db,
        compacted.in_use * 4 < full.in_use,
        compacted.db >= full.db,
        defragged.db * 2 < full.db,
        defragged.in_use < defragged.db,
    );
    let numbers = format!(
        "empty {empty:?}, written {full:?}, compacted {compacted:?}, defragmented {defragged:?}"
    );
    (said, numbers)
}

/// Runs the scenario on etcd 3.4 (client port `port`) and on Skiff (`port + 2`) and
/// compares what they showed.
async fn compare_with_etcd(transcript: &str, port: u16, steady_writes: bool) {
    if !have("etcd") {
        return;
    }
    let skiff = std::path::PathBuf::from(env!("CARGO_BIN_EXE_skiff"));
    let (etcd_said, etcd_numbers) = run(Path::new("etcd"), port, steady_writes).await;
    let (skiff_said, skiff_numbers) = run(&skiff, port + 2, steady_writes).await;
    eprintln!("etcd:  {etcd_numbers}\nskiff: {skiff_numbers}");
    assert!(
        !etcd_said.contains("false"),
        "etcd 3.4 did not behave as this test expects ({etcd_numbers}):\n{etcd_said}"
    );
    common::assert_same_transcript(transcript, &etcd_said, &skiff_said);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_size_in_use_drops_at_compaction_and_the_file_at_defragment() {
    compare_with_etcd("db-in-use", 29820, false).await;
}

/// Before, Skiff counted the bytes in use only once writes had been idle for 100 ms:
/// under a steady trickle of puts `dbSizeInUse` stayed at the whole file after a
/// compaction, while etcd's dropped at its next commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_size_in_use_drops_at_compaction_under_steady_writes() {
    compare_with_etcd("db-in-use-steady-writes", 29824, true).await;
}
