//! The way kube-apiserver uses etcd, against etcd 3.4 and Skiff on the same steps, with
//! the answers compared line by line: paged ranges with a limit at a fixed revision,
//! compare-and-swap txns on mod_revision, a watch with prev_kv resumed from a revision,
//! and the `hasleader` metadata (clientv3's `WithRequireLeader`): with the member cut
//! off from its leader (the other two members killed), a `hasleader` watch is ended and
//! a `hasleader` read refused with `etcdserver: no leader`, while a plain serializable
//! read still answers. Ports 28000-28011 belong to this file.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{cluster_members, have};
use skiff_proto::etcdserverpb as pb;
use tonic::transport::Channel;

fn prefix_end(p: &[u8]) -> Bytes {
    let mut e = p.to_vec();
    *e.last_mut().unwrap() += 1;
    Bytes::from(e)
}

fn with_leader<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("hasleader", "true".parse().unwrap());
    r
}

fn status_line(s: &tonic::Status) -> String {
    format!("error {:?} {}", s.code(), s.message())
}

async fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

/// Runs the steps against a 3-member cluster of `bin`; the transcript.
async fn transcript(bin: &Path, base_port: u16) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut members = cluster_members(bin, 3, base_port, dir.path(), &[]);
    for m in members.iter_mut() {
        m.spawn();
    }
    for m in members.iter_mut() {
        m.wait_serving(Duration::from_secs(30));
    }
    let ch = channel(&members[0].url()).await;
    let mut kv = pb::kv_client::KvClient::new(ch.clone());
    let mut out = Vec::new();
    let prefix = b"/registry/pods/".to_vec();
    for i in 0..10 {
        kv.put(pb::PutRequest {
            key: Bytes::from(format!("/registry/pods/p{i}")),
            value: Bytes::from(format!("v{i}")),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // Paged list at one revision, as the apiserver's list with a limit does.
    let first = kv
        .range(pb::RangeRequest {
            key: Bytes::from(prefix.clone()),
            range_end: prefix_end(&prefix),
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let at = first.header.unwrap().revision;
    out.push(format!("list at revision {at}"));
    let mut page = first;
    loop {
        let keys: Vec<String> = page
            .kvs
            .iter()
            .map(|k| String::from_utf8_lossy(&k.key).into_owned())
            .collect();
        out.push(format!(
            "page {keys:?} more={} count={}",
            page.more, page.count
        ));
        if !page.more {
            break;
        }
        let mut next = page.kvs.last().unwrap().key.to_vec();
        next.push(0);
        page = kv
            .range(pb::RangeRequest {
                key: Bytes::from(next),
                range_end: prefix_end(&prefix),
                limit: 3,
                revision: at,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
    }
    // Compare-and-swap on mod_revision: once with the current one, once stale.
    let key = Bytes::from_static(b"/registry/pods/p1");
    let current = kv
        .range(pb::RangeRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .kvs[0]
        .mod_revision;
    for (label, rev) in [("fresh", current), ("stale", current - 1)] {
        let r = kv
            .txn(pb::TxnRequest {
                compare: vec![pb::Compare {
                    result: pb::compare::CompareResult::Equal as i32,
                    target: pb::compare::CompareTarget::Mod as i32,
                    key: key.clone(),
                    target_union: Some(pb::compare::TargetUnion::ModRevision(rev)),
                    range_end: Bytes::new(),
                }],
                success: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                        key: key.clone(),
                        value: Bytes::from(format!("cas-{label}")),
                        ..Default::default()
                    })),
                }],
                failure: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    })),
                }],
            })
            .await
            .unwrap()
            .into_inner();
        let seen = r.responses.first().and_then(|o| match &o.response {
            Some(pb::response_op::Response::ResponseRange(rr)) => rr.kvs.first().map(|k| {
                (
                    String::from_utf8_lossy(&k.value).into_owned(),
                    k.mod_revision,
                )
            }),
            _ => None,
        });
        out.push(format!(
            "cas {label}: succeeded={} revision={} failure read {seen:?}",
            r.succeeded,
            r.header.unwrap().revision
        ));
    }
    // A watch with prev_kv resumed from right after the list's revision.
    let mut watch = pb::watch_client::WatchClient::new(ch.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: Bytes::from(prefix.clone()),
                range_end: prefix_end(&prefix),
                start_revision: at + 1,
                prev_kv: true,
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut stream = watch
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let created = stream.message().await.unwrap().unwrap();
    out.push(format!("watch created={}", created.created));
    let events = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    for ev in &events.events {
        let kv = ev.kv.as_ref().unwrap();
        out.push(format!(
            "event {} {} = {} (mod {}) prev {:?}",
            ev.r#type,
            String::from_utf8_lossy(&kv.key),
            String::from_utf8_lossy(&kv.value),
            kv.mod_revision,
            ev.prev_kv
                .as_ref()
                .map(|p| String::from_utf8_lossy(&p.value).into_owned())
        ));
    }
    drop((tx, stream));

    // hasleader: a watch on member 0, then members 1 and 2 are killed.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: Bytes::from_static(b"/registry/leases/x"),
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut leader_watch = watch
        .watch(with_leader(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    let created = leader_watch.message().await.unwrap().unwrap();
    out.push(format!("hasleader watch created={}", created.created));
    drop(members.split_off(1));
    let ended = tokio::time::timeout(Duration::from_secs(15), leader_watch.message())
        .await
        .expect("a hasleader watch must end once the member has no leader");
    out.push(match ended {
        Err(s) => format!("hasleader watch ended: {}", status_line(&s)),
        Ok(m) => format!("hasleader watch ended without an error: {m:?}"),
    });
    let refused = kv
        .range(with_leader(pb::RangeRequest {
            key: key.clone(),
            serializable: true,
            ..Default::default()
        }))
        .await;
    out.push(format!(
        "hasleader read: {}",
        match refused {
            Ok(_) => "answered".to_string(),
            Err(s) => status_line(&s),
        }
    ));
    let plain = kv
        .range(pb::RangeRequest {
            key: key.clone(),
            serializable: true,
            ..Default::default()
        })
        .await;
    out.push(format!(
        "plain serializable read: {}",
        match plain {
            Ok(r) => format!("{} key(s)", r.into_inner().kvs.len()),
            Err(s) => status_line(&s),
        }
    ));
    drop((tx, leader_watch));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apiserver_access_pattern_matches_etcd() {
    let skiff = transcript(Path::new(env!("CARGO_BIN_EXE_skiff")), 28000).await;
    println!("skiff:\n{}", skiff.join("\n"));
    assert!(skiff
        .iter()
        .any(|l| l == "hasleader read: error Unavailable etcdserver: no leader"));
    if !have("etcd") {
        eprintln!("note: etcd not installed; the comparison with etcd 3.4 is skipped");
        return;
    }
    let etcd = transcript(Path::new("etcd"), 28006).await;
    println!("etcd 3.4:\n{}", etcd.join("\n"));
    assert_eq!(skiff, etcd, "Skiff and etcd 3.4 answer differently");
}
