//! Client sessions (issue 17): a write tagged with a session and a sequence number is
//! applied at most once, however often and wherever it is repeated, across a restart
//! and on every member; the stored answers are the same bytes on every member (the
//! `Hash` RPC covers them); a repeated lease grant gets the first grant's lease; a
//! retry after the session ended is refused, never applied; a session holding 1024
//! unacknowledged answers refuses the next write until the client acknowledges some.
//! The protocol is sent by hand here (gRPC metadata on etcd's own request types), then
//! through `skiff-client`'s `Session`.
//!
//! Ports 29660-29669 belong to this file.

use crate::common;

use std::time::Duration;

use common::cluster_members;
use skiff_proto::etcdserverpb as pb;
use tonic::transport::Channel;
use tonic::Code;

const BASE: u16 = 29660;

fn channel(port: u16) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

/// `req` with a session's metadata.
fn tagged<T>(req: T, session: i64, seq: u64, acked: u64) -> tonic::Request<T> {
    let mut r = tonic::Request::new(req);
    let md = r.metadata_mut();
    md.insert(
        "skiff-session",
        session.to_string().parse().expect("ascii metadata"),
    );
    md.insert(
        "skiff-seq",
        seq.to_string().parse().expect("ascii metadata"),
    );
    md.insert(
        "skiff-acked",
        acked.to_string().parse().expect("ascii metadata"),
    );
    r
}

/// The increment an application without sessions gets wrong: put `next` if the
/// counter still holds `seen` (absent for the first).
fn increment(seen: Option<&str>, next: &str) -> pb::TxnRequest {
    let compare = match seen {
        None => pb::Compare {
            key: b"ctr".to_vec().into(),
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Version as i32,
            target_union: Some(pb::compare::TargetUnion::Version(0)),
            ..Default::default()
        },
        Some(v) => pb::Compare {
            key: b"ctr".to_vec().into(),
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Value as i32,
            target_union: Some(pb::compare::TargetUnion::Value(
                v.as_bytes().to_vec().into(),
            )),
            ..Default::default()
        },
    };
    pb::TxnRequest {
        compare: vec![compare],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: b"ctr".to_vec().into(),
                value: next.as_bytes().to_vec().into(),
                ..Default::default()
            })),
        }],
        failure: Vec::new(),
    }
}

/// Opens a session of 60 s: a lease grant with `skiff-session: open`; its ID.
async fn open_session(ch: &Channel) -> i64 {
    let mut open = tonic::Request::new(pb::LeaseGrantRequest { ttl: 60, id: 0 });
    open.metadata_mut()
        .insert("skiff-session", "open".parse().expect("ascii metadata"));
    pb::lease_client::LeaseClient::new(ch.clone())
        .lease_grant(open)
        .await
        .expect("open a session")
        .into_inner()
        .id
}

async fn counter(ch: &Channel) -> (String, i64, i64) {
    let r = pb::kv_client::KvClient::new(ch.clone())
        .range(pb::RangeRequest {
            key: b"ctr".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    let kv = &r.kvs[0];
    (
        String::from_utf8_lossy(&kv.value).into_owned(),
        kv.version,
        r.header.expect("header").revision,
    )
}

async fn hash(ch: &Channel) -> (u32, i64) {
    let r = pb::maintenance_client::MaintenanceClient::new(ch.clone())
        .hash(pb::HashRequest {})
        .await
        .expect("hash")
        .into_inner();
    (r.hash, r.header.expect("header").revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_session_write_applies_once_on_any_member_and_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_skiff"));
    let mut members = cluster_members(bin, 3, BASE, dir.path(), &[]);
    for m in members.iter_mut() {
        m.spawn();
    }
    tokio::task::block_in_place(|| {
        for m in members.iter_mut() {
            m.wait_serving(Duration::from_secs(30));
        }
    });
    let ch: Vec<Channel> = members.iter().map(|m| channel(m.client_port)).collect();
    let kv = |i: usize| pb::kv_client::KvClient::new(ch[i].clone());

    // Open a session: a lease grant with `skiff-session: open`.
    let session = open_session(&ch[0]).await;

    // The first increment, then the same request again on the two other members, as a
    // client does that lost the answer: the first answer each time, applied once.
    let first = kv(0)
        .txn(tagged(increment(None, "1"), session, 1, 0))
        .await
        .expect("first increment")
        .into_inner();
    assert!(first.succeeded);
    let r1 = first.header.as_ref().expect("header").revision;
    for i in [1, 2, 0] {
        let again = kv(i)
            .txn(tagged(increment(None, "1"), session, 1, 0))
            .await
            .expect("repeated increment")
            .into_inner();
        assert!(
            again.succeeded,
            "member {i}: the stored answer says succeeded"
        );
        let h = again.header.as_ref().expect("header");
        assert_eq!(h.revision, r1, "member {i}: the first apply's revision");
        assert_eq!(again.responses, first.responses);
    }
    // Without the session, the same request is a new write: its compare now fails.
    let plain = kv(1)
        .txn(increment(None, "1"))
        .await
        .expect("plain txn")
        .into_inner();
    assert!(!plain.succeeded, "a plain repeat is evaluated again");
    assert_eq!(counter(&ch[0]).await, ("1".to_string(), 1, r1));

    // The next increment acknowledges the first: the server forgets it, so a late
    // repeat of sequence 1 is refused, not applied.
    let second = kv(1)
        .txn(tagged(increment(Some("1"), "2"), session, 2, 1))
        .await
        .expect("second increment")
        .into_inner();
    assert!(second.succeeded);
    let r2 = second.header.as_ref().expect("header").revision;
    let late = kv(2)
        .txn(tagged(increment(None, "1"), session, 1, 0))
        .await
        .expect_err("sequence 1 was acknowledged");
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(
        late.message(),
        "skiff: session sequence already acknowledged"
    );

    // Malformed metadata is refused before anything is proposed.
    let bad = kv(0)
        .put(tagged(
            pb::PutRequest {
                key: b"x".to_vec().into(),
                ..Default::default()
            },
            session,
            3,
            3,
        ))
        .await
        .expect_err("acked must be below seq");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(bad.message(), "skiff: bad session metadata");

    // Every member stores the same answers: the whole-backend hash agrees once all
    // have applied the same entries. Equal revisions are not enough to wait for: some
    // entries change a table without a new revision (a member's published attributes,
    // a lease grant), and a member that lags by one of them hashes differently for a
    // moment (seen once under CI's load). A real divergence never agrees.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let mut seen = Vec::new();
        for c in &ch {
            seen.push(hash(c).await);
        }
        let agree = seen.iter().all(|s| *s == seen[0]) && seen[0].1 >= r2;
        if agree || std::time::Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(*s, seen[0], "member {i}'s Hash (all: {seen:?})");
    }
    assert_eq!(seen[0].1, r2, "no write since the second increment");

    // A restart keeps the stored answer (it is in the backend, written with the put).
    tokio::task::block_in_place(|| {
        members[0].terminate(Duration::from_secs(20));
        members[0].spawn();
        members[0].wait_serving(Duration::from_secs(30));
    });
    let after = kv(0)
        .txn(tagged(increment(Some("1"), "2"), session, 2, 1))
        .await
        .expect("repeat after a restart")
        .into_inner();
    assert!(after.succeeded);
    assert_eq!(after.header.as_ref().expect("header").revision, r2);
    assert_eq!(counter(&ch[0]).await, ("2".to_string(), 2, r2));

    // Ending the session (revoking its lease) forgets it: a repeat is refused.
    pb::lease_client::LeaseClient::new(ch[2].clone())
        .lease_revoke(pb::LeaseRevokeRequest { id: session })
        .await
        .expect("revoke");
    let gone = kv(1)
        .txn(tagged(increment(Some("1"), "2"), session, 2, 1))
        .await
        .expect_err("the session ended");
    assert_eq!(gone.code(), Code::FailedPrecondition);
    assert_eq!(
        gone.message(),
        "skiff: session not found (expired or closed)"
    );
    let unknown = kv(1)
        .put(tagged(
            pb::PutRequest {
                key: b"x".to_vec().into(),
                ..Default::default()
            },
            12345,
            1,
            0,
        ))
        .await
        .expect_err("no such session");
    assert_eq!(unknown.code(), Code::FailedPrecondition);
    assert_eq!(
        counter(&ch[1]).await.1,
        2,
        "nothing applied after the revoke"
    );

    // skiff-client's Session: writes with their own sequence numbers; closing ends it.
    let client = skiff_client::Client::connect(
        members.iter().map(|m| m.url()),
        skiff_client::ClientOptions::default(),
    )
    .expect("client");
    let s = client.session(30).await.expect("client session");
    for i in 0..5 {
        s.put(format!("k{i}"), "v").await.expect("session put");
    }
    let t = s.txn(increment(Some("2"), "3")).await.expect("session txn");
    assert!(t.succeeded);
    // A lease grant in a session: a repeat of its sequence gets the same lease.
    let granted = pb::lease_client::LeaseClient::new(ch[1].clone())
        .lease_grant(tagged(
            pb::LeaseGrantRequest { ttl: 30, id: 0 },
            s.id(),
            100,
            0,
        ))
        .await
        .expect("tagged grant")
        .into_inner();
    let again = pb::lease_client::LeaseClient::new(ch[2].clone())
        .lease_grant(tagged(
            pb::LeaseGrantRequest { ttl: 30, id: 0 },
            s.id(),
            100,
            0,
        ))
        .await
        .expect("repeated grant")
        .into_inner();
    assert_eq!(again.id, granted.id, "the same lease, not a second one");
    let leases = pb::lease_client::LeaseClient::new(ch[0].clone())
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner()
        .leases;
    assert_eq!(
        leases.len(),
        2,
        "the session's lease and one granted lease: {leases:?}"
    );
    let g = s.lease_grant(30).await.expect("session lease grant");
    assert_ne!(g.id, granted.id);
    let id = s.id();
    s.close().await.expect("close");
    let mut late = tonic::Request::new(pb::PutRequest {
        key: b"k9".to_vec().into(),
        ..Default::default()
    });
    late.metadata_mut().insert(
        "skiff-session",
        id.to_string().parse().expect("ascii metadata"),
    );
    late.metadata_mut()
        .insert("skiff-seq", "7".parse().expect("ascii metadata"));
    let refused = kv(0).put(late).await.expect_err("closed session");
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // The window: 1024 answers a client has not acknowledged are kept; the next write
    // is refused (applying it could not be answered exactly once later) until the
    // client acknowledges some.
    let w = open_session(&ch[1]).await;
    let put = |seq: u64, acked: u64| {
        let mut kv = kv(1);
        async move {
            let req = pb::PutRequest {
                key: format!("w{seq:04}").into_bytes().into(),
                value: b"v".to_vec().into(),
                ..Default::default()
            };
            kv.put(tagged(req, w, seq, acked)).await
        }
    };
    const MAX_UNACKED: u64 = skiff_server::session::MAX_UNACKED as u64;
    let mut revisions = std::collections::BTreeMap::new();
    for chunk in (1..=MAX_UNACKED).collect::<Vec<u64>>().chunks(64) {
        let mut inflight = tokio::task::JoinSet::new();
        for &seq in chunk {
            let f = put(seq, 0);
            inflight.spawn(async move { (seq, f.await) });
        }
        while let Some(done) = inflight.join_next().await {
            let (seq, answer) = done.expect("join");
            let r = answer.unwrap_or_else(|e| panic!("put {seq} in the window: {e}"));
            revisions.insert(seq, r.into_inner().header.expect("header").revision);
        }
    }
    let full = put(MAX_UNACKED + 1, 0)
        .await
        .expect_err("beyond the window");
    assert_eq!(full.code(), Code::ResourceExhausted);
    assert_eq!(
        full.message(),
        "skiff: too many unacknowledged requests in session"
    );
    // A repeat inside the full window is still answered, from the stored answer.
    let again = put(7, 0).await.expect("a repeat in a full window");
    assert_eq!(
        again.into_inner().header.expect("header").revision,
        revisions[&7]
    );
    // Acknowledging the first answer makes room for exactly one more.
    put(MAX_UNACKED + 1, 1).await.expect("room after an ack");
    let full = put(MAX_UNACKED + 2, 1).await.expect_err("full again");
    assert_eq!(full.code(), Code::ResourceExhausted);
    // (A request acknowledging its own sequence number is malformed; this repeat says
    // acked=0, but the session has recorded the acknowledgement of 1.)
    let gone = put(1, 0)
        .await
        .expect_err("an acknowledged answer is dropped");
    assert_eq!(gone.code(), Code::FailedPrecondition);
    assert_eq!(
        gone.message(),
        "skiff: session sequence already acknowledged"
    );
    // Nothing refused was applied: the refused keys are absent.
    let r = kv(1)
        .range(pb::RangeRequest {
            key: format!("w{:04}", MAX_UNACKED + 2).into_bytes().into(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(r.count, 0, "a refused write left no key");
}
