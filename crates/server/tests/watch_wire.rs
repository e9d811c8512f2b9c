//! Watch behaviour seen at the protobuf level (fields the `etcd-client` crate does
//! not expose): large revisions split into fragments when the watcher asked for it,
//! a duplicate watch ID refused the way etcd refuses it, a member stopping with
//! open streams, and the election service (built on watches). Ports 23470-23479.

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::{Kind, Proc};
use skiff_proto::etcdserverpb::{
    kv_client::KvClient, request_op::Request, watch_client::WatchClient,
    watch_request::RequestUnion, PutRequest, RequestOp, TxnRequest, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

async fn next(s: &mut tonic::Streaming<WatchResponse>) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("response within 5 s")
        .expect("stream ok")
        .expect("stream open")
}

fn create(key: &str, id: i64, fragment: bool) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::from_static(b"\0"),
            prev_kv: true,
            watch_id: id,
            fragment,
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_revisions_fragment_and_duplicate_ids_are_refused() {
    let p = Proc::start_with(
        Kind::Skiff,
        "wf",
        23470,
        23471,
        None,
        &["--max-request-bytes", "100000"],
    );
    let ch = Channel::from_shared(p.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut kv = KvClient::new(ch.clone());
    let value = Bytes::from(vec![b'v'; 30_000]);
    let keys = ["f1", "f2", "f3"];
    for k in keys {
        kv.put(PutRequest {
            key: Bytes::from_static(k.as_bytes()),
            value: value.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }

    let (tx, rx) = mpsc::channel(8);
    let mut watch = WatchClient::new(ch);
    tx.send(create("f", 1, true)).await.unwrap();
    tx.send(create("f", 2, false)).await.unwrap();
    let mut s = watch
        .watch(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(next(&mut s).await.created);
    assert!(next(&mut s).await.created);

    // Same ID again on the stream: created and canceled at once, with a reason.
    tx.send(create("f", 1, false)).await.unwrap();
    let dup = next(&mut s).await;
    assert!(dup.created && dup.canceled, "{dup:?}");
    assert_eq!(dup.watch_id, -1);
    assert!(
        dup.cancel_reason.contains("duplicate watch ID"),
        "{}",
        dup.cancel_reason
    );

    // One txn rewrites all three keys: with prev_kv the revision's events are about
    // 180 KB, more than --max-request-bytes.
    let txn = TxnRequest {
        compare: vec![],
        success: keys
            .iter()
            .map(|k| RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: Bytes::from_static(k.as_bytes()),
                    value: value.clone(),
                    ..Default::default()
                })),
            })
            .collect(),
        failure: vec![],
    };
    kv.txn(txn).await.unwrap();

    let mut fragments = Vec::new();
    let mut whole = None;
    while whole.is_none() || fragments.last().is_none_or(|f: &WatchResponse| f.fragment) {
        let r = next(&mut s).await;
        match r.watch_id {
            1 => fragments.push(r),
            2 => whole = Some(r),
            other => panic!("unexpected watch id {other}"),
        }
    }
    assert!(
        fragments.len() >= 2,
        "split into {} responses",
        fragments.len()
    );
    assert!(fragments[..fragments.len() - 1].iter().all(|f| f.fragment));
    let events: usize = fragments.iter().map(|f| f.events.len()).sum();
    assert_eq!(events, 3);
    let whole = whole.expect("unfragmented watcher's response");
    assert!(!whole.fragment);
    assert_eq!(whole.events.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_open_watch_streams_still_stops() {
    let mut p = Proc::start(Kind::Skiff, "ws", 23472, 23473, None);
    let ch = Channel::from_shared(p.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(8);
    tx.send(create("k", 0, false)).await.unwrap();
    let mut s = WatchClient::new(ch)
        .watch(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(next(&mut s).await.created);
    // The stream stays open (tx alive); the member must still stop, cleanly.
    let status = tokio::task::spawn_blocking(move || p.terminate(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "stopped with exit 0"
    );
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_campaign_proclaim_observe_resign() {
    use etcd_client::{Client, LeaderKey, ProclaimOptions, ResignOptions};
    let p = Proc::start(Kind::Skiff, "el", 23474, 23475, None);
    let mut c = Client::connect([p.url()], None).await.unwrap();
    let l1 = c.lease_grant(30, None).await.unwrap().id();
    let l2 = c.lease_grant(30, None).await.unwrap().id();

    let err = c.leader("race").await.unwrap_err().to_string();
    assert!(err.contains("election: no leader"), "{err}");

    let mut observe = c.observe("race").await.unwrap();
    let won = c.campaign("race", "one", l1).await.unwrap();
    let leader = won.leader().unwrap().clone();
    assert_eq!(leader.key(), format!("race/{l1:x}").as_bytes());
    let seen = tokio::time::timeout(Duration::from_secs(5), observe.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.kv().unwrap().value(), b"one");

    // A second candidate waits while the first leads.
    let mut c2 = c.clone();
    let second = tokio::spawn(async move { c2.campaign("race", "two", l2).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished());

    // Proclaim: observers see the new value; a stale leader key is refused.
    let lk = LeaderKey::new()
        .with_name("race")
        .with_key(leader.key())
        .with_lease(leader.lease())
        .with_rev(leader.rev());
    c.proclaim("uno", Some(ProclaimOptions::new().with_leader(lk.clone())))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), observe.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.kv().unwrap().value(), b"uno");
    assert_eq!(
        c.leader("race").await.unwrap().kv().unwrap().value(),
        b"uno"
    );
    let stale = lk.clone().with_rev(leader.rev() + 1000);
    let err = c
        .proclaim("x", Some(ProclaimOptions::new().with_leader(stale)))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("election: not leader"), "{err}");

    // Resign hands leadership to the waiting candidate; observers follow.
    c.resign(Some(ResignOptions::new().with_leader(lk)))
        .await
        .unwrap();
    let two = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        two.leader().unwrap().key(),
        format!("race/{l2:x}").as_bytes()
    );
    let seen = tokio::time::timeout(Duration::from_secs(5), observe.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.kv().unwrap().value(), b"two");
}
