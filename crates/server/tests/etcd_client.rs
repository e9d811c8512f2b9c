//! Skiff through the `etcd-client` crate, a client nobody here wrote: every KV option,
//! transactions, compaction and leases (expiry deletes the keys, keep-alive holds
//! them). Each test starts its own member; ports 23450-23459 belong to this file.

use crate::common;

use std::time::Duration;

use common::{Kind, Proc};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, LeaseTimeToLiveOptions, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};

async fn client(p: &Proc) -> Client {
    Client::connect([p.url()], None).await.expect("connect")
}

fn keys(resp: &etcd_client::GetResponse) -> Vec<String> {
    resp.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_options_txn_and_compaction() {
    let p = Proc::start(Kind::Skiff, "ec1", 23450, 23451, None);
    let mut c = client(&p).await;

    // Put and get, with prev_kv, revisions and versions.
    let r = c.put("a", "1", None).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 2);
    let r = c
        .put("a", "2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(r.prev_key().unwrap().value(), b"1");
    for (k, v) in [("b", "3"), ("c", "1"), ("d", "9"), ("da", "0")] {
        c.put(k, v, None).await.unwrap();
    }
    let a = c.get("a", None).await.unwrap();
    let kv = &a.kvs()[0];
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (2, 3, 2)
    );

    // Ranges: prefix, from-key, explicit end, limit + more, count-only, keys-only.
    let r = c
        .get("d", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(keys(&r), ["d", "da"]);
    let r = c
        .get("b", Some(GetOptions::new().with_from_key()))
        .await
        .unwrap();
    assert_eq!(keys(&r), ["b", "c", "d", "da"]);
    let r = c
        .get("a", Some(GetOptions::new().with_range("c")))
        .await
        .unwrap();
    assert_eq!(keys(&r), ["a", "b"]);
    let r = c
        .get("a", Some(GetOptions::new().with_from_key().with_limit(2)))
        .await
        .unwrap();
    assert_eq!(keys(&r), ["a", "b"]);
    assert!(r.more());
    assert_eq!(r.count(), 5);
    let r = c
        .get(
            "a",
            Some(GetOptions::new().with_from_key().with_count_only()),
        )
        .await
        .unwrap();
    assert!(r.kvs().is_empty());
    assert_eq!(r.count(), 5);
    let r = c
        .get("a", Some(GetOptions::new().with_keys_only()))
        .await
        .unwrap();
    assert!(r.kvs()[0].value().is_empty());

    // Sorting by value, descending; by create revision, ascending.
    let r = c
        .get(
            "a",
            Some(
                GetOptions::new()
                    .with_from_key()
                    .with_sort(SortTarget::Value, SortOrder::Descend),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys(&r), ["d", "b", "a", "c", "da"]);
    let r = c
        .get(
            "a",
            Some(
                GetOptions::new()
                    .with_from_key()
                    .with_sort(SortTarget::Create, SortOrder::Ascend),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys(&r), ["a", "b", "c", "d", "da"]);

    // Revision filters and reads at an older revision.
    let r = c
        .get(
            "a",
            Some(GetOptions::new().with_from_key().with_min_mod_revision(5)),
        )
        .await
        .unwrap();
    assert_eq!(keys(&r), ["c", "d", "da"]);
    let r = c
        .get(
            "a",
            Some(
                GetOptions::new()
                    .with_from_key()
                    .with_max_create_revision(4),
            ),
        )
        .await
        .unwrap();
    assert_eq!(keys(&r), ["a", "b"]);
    let r = c
        .get("a", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap();
    assert_eq!(r.kvs()[0].value(), b"1");
    let r = c
        .get("a", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(r.kvs()[0].value(), b"2");

    // Delete with prev_kv over a prefix.
    let r = c
        .delete(
            "d",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(r.deleted(), 2);
    assert_eq!(r.prev_kvs().len(), 2);

    // Txn: compare on value and version, both branches, nested get.
    let txn = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "2")])
        .and_then([TxnOp::put("t", "yes", None), TxnOp::get("a", None)])
        .or_else([TxnOp::put("t", "no", None)]);
    let r = c.txn(txn).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(r.op_responses().len(), 2);
    match &r.op_responses()[1] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"2"),
        other => panic!("expected a get response, got {other:?}"),
    }
    let txn = Txn::new()
        .when([Compare::version("a", CompareOp::Greater, 5)])
        .and_then([TxnOp::put("t", "yes", None)])
        .or_else([TxnOp::put("t", "no", None)]);
    assert!(!c.txn(txn).await.unwrap().succeeded());
    assert_eq!(c.get("t", None).await.unwrap().kvs()[0].value(), b"no");

    // Errors etcd gives: duplicate key in a txn, empty key.
    let dup = Txn::new().and_then([TxnOp::put("x", "1", None), TxnOp::put("x", "2", None)]);
    let err = c.txn(dup).await.unwrap_err().to_string();
    assert!(err.contains("duplicate key given in txn request"), "{err}");
    let err = c.put("", "v", None).await.unwrap_err().to_string();
    assert!(err.contains("key is not provided"), "{err}");

    // Compaction: reads below it fail, future revisions fail.
    let rev = c.get("a", None).await.unwrap().header().unwrap().revision();
    c.compact(rev - 1, None).await.unwrap();
    let err = c
        .get("a", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("required revision has been compacted"),
        "{err}"
    );
    let err = c
        .get("a", Some(GetOptions::new().with_revision(rev + 100)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("required revision is a future revision"),
        "{err}"
    );

    // Maintenance and cluster calls a client relies on.
    let status = c.status().await.unwrap();
    assert_eq!(status.version(), "3.4.0");
    assert_eq!(status.leader(), status.header().unwrap().member_id());
    let members = c.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    assert_eq!(members.members()[0].name(), "ec1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_and_keep_alive_holds_them() {
    let p = Proc::start(Kind::Skiff, "ec2", 23452, 23453, None);
    let mut c = client(&p).await;

    // A TTL below the minimum (2 s with etcd's default election timeout) is raised.
    let short = c.lease_grant(1, None).await.unwrap();
    assert_eq!(short.ttl(), 2);
    c.put("short", "v", Some(PutOptions::new().with_lease(short.id())))
        .await
        .unwrap();

    let held = c.lease_grant(2, None).await.unwrap();
    c.put("held", "v", Some(PutOptions::new().with_lease(held.id())))
        .await
        .unwrap();
    let ttl = c
        .lease_time_to_live(held.id(), Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 2);
    assert_eq!(ttl.keys(), [b"held".to_vec()]);

    let (mut keeper, mut responses) = c.lease_keep_alive(held.id()).await.unwrap();
    for _ in 0..8 {
        keeper.keep_alive().await.unwrap();
        let r = responses.message().await.unwrap().unwrap();
        assert_eq!(r.ttl(), 2);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // 4 s later: the kept lease holds its key, the other one expired and took its key.
    assert_eq!(c.get("held", None).await.unwrap().kvs().len(), 1);
    assert!(c.get("short", None).await.unwrap().kvs().is_empty());
    let gone = c.lease_time_to_live(short.id(), None).await.unwrap();
    assert_eq!(gone.ttl(), -1);
    drop(keeper);
    drop(responses);

    // Revoke deletes the keys at once; the lease list follows.
    let leases = c.leases().await.unwrap();
    assert_eq!(leases.leases().len(), 1);
    c.lease_revoke(held.id()).await.unwrap();
    assert!(c.get("held", None).await.unwrap().kvs().is_empty());
    assert!(c.leases().await.unwrap().leases().is_empty());
    let err = c.lease_revoke(held.id()).await.unwrap_err().to_string();
    assert!(err.contains("requested lease not found"), "{err}");

    // A put naming an unknown lease is refused.
    let err = c
        .put("k", "v", Some(PutOptions::new().with_lease(12345)))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("requested lease not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_raises_nospace_and_refuses_writes() {
    let extra = ["--quota-backend-bytes", "8000000"];
    let p = common::Proc::start_with(Kind::Skiff, "ec3", 23454, 23455, None, &extra);
    let mut c = client(&p).await;
    let value = vec![b'q'; 100_000];
    let mut refused = None;
    for i in 0..400 {
        match c.put(format!("q{i:04}"), value.clone(), None).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e.to_string()));
                break;
            }
        }
    }
    let (at, err) = refused.expect("the quota was reached");
    assert!(
        err.contains("etcdserver: mvcc: database space exceeded"),
        "{err}"
    );
    assert!(
        at > 10,
        "refused only once the database is large ({at} puts)"
    );

    // The alarm is raised through Raft; reads still work, writes do not.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let alarms = loop {
        let a = c
            .alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            )
            .await
            .unwrap();
        if !a.alarms().is_empty() || std::time::Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(alarms.alarms().len(), 1);
    assert_eq!(alarms.alarms()[0].alarm(), etcd_client::AlarmType::Nospace);
    assert!(c.get("q0000", None).await.is_ok());
    let err = c.put("more", "x", None).await.unwrap_err().to_string();
    assert!(err.contains("database space exceeded"), "{err}");
    let status = c.status().await.unwrap();
    assert_eq!(status.errors().len(), 1);
    assert!(
        status.errors()[0].contains("NOSPACE"),
        "{:?}",
        status.errors()
    );
    assert_eq!(common::http_get(23454, "/health").map(|r| r.0), Some(503));

    // Deleting is allowed; disarming clears the alarm.
    c.delete("q", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    let mut opts = etcd_client::AlarmOptions::new();
    opts.with_member(status.header().unwrap().member_id());
    c.alarm(
        etcd_client::AlarmAction::Deactivate,
        etcd_client::AlarmType::Nospace,
        Some(opts),
    )
    .await
    .unwrap();
    let a = c
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    assert!(a.alarms().is_empty());
}

/// The next response on `stream` within 5 s.
async fn next(stream: &mut etcd_client::WatchStream) -> etcd_client::WatchResponse {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a watch response within 5 s")
        .expect("watch stream ok")
        .expect("watch stream open")
}

fn event_summary(r: &etcd_client::WatchResponse) -> Vec<(String, String, i64)> {
    r.events()
        .iter()
        .map(|e| {
            let kv = e.kv().expect("event kv");
            let kind = match e.event_type() {
                etcd_client::EventType::Put => "PUT",
                etcd_client::EventType::Delete => "DELETE",
            };
            (
                kind.to_string(),
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.mod_revision(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_history_prev_kv_filters_progress_and_compaction() {
    use etcd_client::{WatchFilterType, WatchOptions};
    let p = Proc::start(Kind::Skiff, "ec4", 23456, 23457, None);
    let mut c = client(&p).await;
    c.put("w/a", "1", None).await.unwrap(); // rev 2
    c.put("w/b", "1", None).await.unwrap(); // rev 3
    c.put("w/a", "2", None).await.unwrap(); // rev 4
    c.delete("w/b", None).await.unwrap(); // rev 5

    // History from revision 3, with prev_kv: every event since, in order.
    let mut s = c
        .watch(
            "w/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(3)
                    .with_prev_key(),
            ),
        )
        .await
        .unwrap();
    let created = next(&mut s).await;
    assert!(created.created());
    let mut seen = Vec::new();
    let mut prevs = Vec::new();
    while seen.len() < 3 {
        let r = next(&mut s).await;
        for e in r.events() {
            prevs.push(
                e.prev_kv()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            );
        }
        seen.extend(event_summary(&r));
    }
    assert_eq!(
        seen,
        [
            ("PUT".to_string(), "w/b".to_string(), 3),
            ("PUT".to_string(), "w/a".to_string(), 4),
            ("DELETE".to_string(), "w/b".to_string(), 5),
        ]
    );
    assert_eq!(prevs, [None, Some("1".to_string()), Some("1".to_string())]);

    // Live events, all of one txn in one response, in the txn's order.
    let txn = Txn::new().and_then([TxnOp::put("w/c", "x", None), TxnOp::put("w/d", "y", None)]);
    c.txn(txn).await.unwrap(); // rev 6
    let r = next(&mut s).await;
    assert_eq!(
        event_summary(&r),
        [
            ("PUT".to_string(), "w/c".to_string(), 6),
            ("PUT".to_string(), "w/d".to_string(), 6),
        ]
    );

    // A second watcher on the same stream with a filter: no deletes.
    s.watch(
        "w/",
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_filters([WatchFilterType::NoDelete])
                .with_watch_id(77),
        ),
    )
    .await
    .unwrap();
    let r = next(&mut s).await;
    assert!(r.created());
    assert_eq!(r.watch_id(), 77);
    c.delete("w/c", None).await.unwrap(); // rev 7
    c.put("w/e", "z", None).await.unwrap(); // rev 8
    let mut by_watcher: std::collections::BTreeMap<i64, Vec<(String, String, i64)>> =
        Default::default();
    while by_watcher.values().map(Vec::len).sum::<usize>() < 3 {
        let r = next(&mut s).await;
        by_watcher
            .entry(r.watch_id())
            .or_default()
            .extend(event_summary(&r));
    }
    assert_eq!(
        by_watcher[&77],
        [("PUT".to_string(), "w/e".to_string(), 8)],
        "the NODELETE watcher saw no delete"
    );

    // Progress: a bookmark at the current revision.
    s.request_progress().await.unwrap();
    let r = next(&mut s).await;
    assert!(r.events().is_empty());
    assert_eq!(r.header().unwrap().revision(), 8);

    // Cancel: answered, and nothing more for that watcher.
    s.cancel(77).await.unwrap();
    let r = next(&mut s).await;
    assert!(r.canceled());
    assert_eq!(r.watch_id(), 77);

    // A watch from a compacted revision is canceled with the compaction revision.
    c.compact(6, None).await.unwrap();
    let mut old = c
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(2)),
        )
        .await
        .unwrap();
    let mut r = next(&mut old).await;
    if r.created() && !r.canceled() {
        r = next(&mut old).await;
    }
    assert!(r.canceled());
    assert_eq!(r.compact_revision(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_service_serializes_holders_and_expiry_releases() {
    use etcd_client::LockOptions;
    let p = Proc::start(Kind::Skiff, "ec5", 23458, 23459, None);
    let mut c = client(&p).await;
    let l1 = c.lease_grant(30, None).await.unwrap().id();
    let l2 = c.lease_grant(2, None).await.unwrap().id();
    let l3 = c.lease_grant(30, None).await.unwrap().id();

    let first = c
        .lock("job", Some(LockOptions::new().with_lease(l1)))
        .await
        .unwrap();
    assert_eq!(first.key(), format!("job/{l1:x}").as_bytes());
    // Locking again with the same lease finds the same key and holds at once.
    let again = c
        .lock("job", Some(LockOptions::new().with_lease(l1)))
        .await
        .unwrap();
    assert_eq!(again.key(), first.key());

    // A second holder waits until the first unlocks.
    let mut c2 = c.clone();
    let waiter = tokio::spawn(async move {
        c2.lock("job", Some(LockOptions::new().with_lease(l2)))
            .await
            .map(|r| r.key().to_vec())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "the lock is held by the first lease");
    c.unlock(first.key()).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("granted after unlock")
        .unwrap()
        .unwrap();
    assert_eq!(second, format!("job/{l2:x}").into_bytes());

    // The second holder's lease expires (no keep-alive): the third gets the lock.
    let third = tokio::time::timeout(
        Duration::from_secs(10),
        c.lock("job", Some(LockOptions::new().with_lease(l3))),
    )
    .await
    .expect("granted after the holder's lease expired")
    .unwrap();
    assert_eq!(third.key(), format!("job/{l3:x}").as_bytes());
    assert!(c.get(second, None).await.unwrap().kvs().is_empty());
}
