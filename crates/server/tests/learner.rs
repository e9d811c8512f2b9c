//! A learner refuses what etcd 3.4's learner refuses, compared with etcd 3.4 itself.
//!
//! For each server: one voter `m0`, a key written, a learner `m1` added
//! (`member add --learner`) and started with `--initial-cluster-state existing`; once it
//! has caught up, the same steps run against the learner's endpoint on both servers:
//! - every client RPC of every service called once over raw gRPC: each answers either
//!   `ok` or its gRPC code and message (etcd 3.4 serves only `Status` and a serializable
//!   `Range`; everything else is `Unavailable: etcdserver: rpc not supported for
//!   learner`); a stream's refusal is taken from the call or its first message, which a
//!   client cannot tell apart;
//! - an etcdctl transcript (writes, linearizable and serializable `get`, leases, watch,
//!   `endpoint status|health|hashkv`, `defrag`, `alarm list`, `member ...`, `auth
//!   enable`), the JSON gateway's answer to a put and a watch, and `/health` (healthy:
//!   it is not an RPC); etcdctl's retry
//!   warnings are kept as one line per step naming the error it retried on;
//! - then the learner is promoted (through `m0`) and serves writes and linearizable
//!   reads.
//!
//! The outcomes and the masked transcripts must be identical.
//! Ports 29800-29819 belong to this file (etcd 29800-29803, Skiff 29810-29813).

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{cluster_members, have, Member};
use regex::Regex;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::v3electionpb as el;
use skiff_proto::v3lockpb as lk;
use tonic::transport::Channel;
use tonic::Status;

/// One voter and its learner, caught up.
struct WithLearner {
    m0: Member,
    m1: Member,
    learner_id: u64,
}

fn channel_to(m: &Member) -> Channel {
    tonic::transport::Endpoint::from_shared(m.url())
        .expect("endpoint")
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

async fn start(bin: &Path, base: u16, dir: &Path) -> WithLearner {
    let mut m0 = cluster_members(bin, 1, base, dir, &[]).remove(0);
    m0.spawn();
    tokio::task::block_in_place(|| m0.wait_serving(Duration::from_secs(30)));
    let ch0 = channel_to(&m0);
    let mut kv0 = pb::kv_client::KvClient::new(ch0.clone());
    kv0.put(pb::PutRequest {
        key: "a".into(),
        value: "1".into(),
        ..Default::default()
    })
    .await
    .expect("put a");

    let (client_port, peer_port) = (base + 2, base + 3);
    let peer = format!("http://127.0.0.1:{peer_port}");
    let client = format!("http://127.0.0.1:{client_port}");
    let mut cluster0 = pb::cluster_client::ClusterClient::new(ch0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let learner_id = loop {
        let added = cluster0
            .member_add(pb::MemberAddRequest {
                peer_ur_ls: vec![peer.clone()],
                is_learner: true,
            })
            .await;
        match added {
            Ok(r) => break r.into_inner().member.expect("added member").id,
            Err(e) => {
                assert!(Instant::now() < deadline, "member add --learner: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let data_dir = dir.join("m1.data");
    let mut m1 = cluster_members(bin, 1, client_port, dir, &[]).remove(0);
    m1.name = "m1".into();
    m1.log_path = dir.join("m1.log");
    m1.data_dir = data_dir.clone();
    m1.args = [
        "--name",
        "m1",
        "--initial-advertise-peer-urls",
        &peer,
        "--listen-peer-urls",
        &peer,
        "--listen-client-urls",
        &client,
        "--advertise-client-urls",
        &client,
        "--initial-cluster",
        &format!("m0=http://127.0.0.1:{},m1={peer}", base + 1),
        "--initial-cluster-state",
        "existing",
        "--data-dir",
        data_dir.to_str().expect("utf-8"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    m1.spawn();
    // Caught up: its own (serializable) read sees the key.
    let mut kv1 = pb::kv_client::KvClient::new(channel_to(&m1));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = kv1
            .range(pb::RangeRequest {
                key: "a".into(),
                serializable: true,
                ..Default::default()
            })
            .await;
        if matches!(&r, Ok(r) if r.get_ref().count == 1) {
            break;
        }
        if let Some(status) = m1.try_exit() {
            panic!("learner exited ({status}); log:\n{}", m1.log_tail(20));
        }
        assert!(
            Instant::now() < deadline,
            "learner never caught up ({r:?}); log:\n{}",
            m1.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    WithLearner { m0, m1, learner_id }
}

/// `ok`, or the status's code and message.
fn outcome<T>(r: Result<T, Status>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

/// The outcome of a stream: its refusal at the call, or its first message.
async fn stream_outcome<T>(call: Result<tonic::Response<tonic::Streaming<T>>, Status>) -> String {
    match call {
        Err(s) => outcome::<()>(Err(s)),
        Ok(r) => {
            let mut s = r.into_inner();
            match tokio::time::timeout(Duration::from_secs(5), s.message()).await {
                Err(_) => "no answer in 5 s".into(),
                Ok(Ok(Some(_))) => "ok".into(),
                Ok(Ok(None)) => "ended".into(),
                Ok(Err(e)) => outcome::<()>(Err(e)),
            }
        }
    }
}

/// Every client RPC once against `m` (a learner): `name: outcome` lines.
async fn rpc_outcomes(m: &Member, learner_id: u64) -> String {
    let ch = channel_to(m);
    let mut kv = pb::kv_client::KvClient::new(ch.clone());
    let mut watch = pb::watch_client::WatchClient::new(ch.clone());
    let mut lease = pb::lease_client::LeaseClient::new(ch.clone());
    let mut cluster = pb::cluster_client::ClusterClient::new(ch.clone());
    let mut maint = pb::maintenance_client::MaintenanceClient::new(ch.clone());
    let mut auth = pb::auth_client::AuthClient::new(ch.clone());
    let mut lock = lk::lock_client::LockClient::new(ch.clone());
    let mut election = el::election_client::ElectionClient::new(ch);
    let range = |serializable| pb::RangeRequest {
        key: "a".into(),
        serializable,
        ..Default::default()
    };
    let put = pb::PutRequest {
        key: "b".into(),
        value: "2".into(),
        ..Default::default()
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("Range(serializable)", outcome(kv.range(range(true)).await)),
        ("Range(linearizable)", outcome(kv.range(range(false)).await)),
        ("Put", outcome(kv.put(put.clone()).await)),
        (
            "DeleteRange",
            outcome(
                kv.delete_range(pb::DeleteRangeRequest {
                    key: "a".into(),
                    ..Default::default()
                })
                .await,
            ),
        ),
        (
            "Txn(empty)",
            outcome(kv.txn(pb::TxnRequest::default()).await),
        ),
        (
            "Compact",
            outcome(
                kv.compact(pb::CompactionRequest {
                    revision: 1,
                    physical: false,
                })
                .await,
            ),
        ),
    ];
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: "a".into(),
                ..Default::default()
            },
        )),
    };
    // Streams stay open (the request side never ends) so only the server ends them.
    let (wtx, wrx) = tokio::sync::mpsc::channel(1);
    wtx.send(create).await.expect("queue watch create");
    rows.push((
        "Watch",
        stream_outcome(
            watch
                .watch(tokio_stream::wrappers::ReceiverStream::new(wrx))
                .await,
        )
        .await,
    ));
    rows.push((
        "LeaseGrant",
        outcome(
            lease
                .lease_grant(pb::LeaseGrantRequest { ttl: 10, id: 0 })
                .await,
        ),
    ));
    rows.push((
        "LeaseRevoke",
        outcome(lease.lease_revoke(pb::LeaseRevokeRequest { id: 1 }).await),
    ));
    let (ktx, krx) = tokio::sync::mpsc::channel(1);
    ktx.send(pb::LeaseKeepAliveRequest { id: 1 })
        .await
        .expect("queue keep-alive");
    rows.push((
        "LeaseKeepAlive",
        stream_outcome(
            lease
                .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(krx))
                .await,
        )
        .await,
    ));
    rows.push((
        "LeaseTimeToLive",
        outcome(
            lease
                .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 1, keys: false })
                .await,
        ),
    ));
    rows.push((
        "LeaseLeases",
        outcome(lease.lease_leases(pb::LeaseLeasesRequest {}).await),
    ));
    rows.push((
        "MemberList",
        outcome(cluster.member_list(pb::MemberListRequest::default()).await),
    ));
    rows.push((
        "MemberAdd",
        outcome(
            cluster
                .member_add(pb::MemberAddRequest {
                    peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                    is_learner: false,
                })
                .await,
        ),
    ));
    rows.push((
        "MemberUpdate",
        outcome(
            cluster
                .member_update(pb::MemberUpdateRequest {
                    id: learner_id,
                    peer_ur_ls: vec!["http://127.0.0.1:2".into()],
                })
                .await,
        ),
    ));
    rows.push((
        "MemberPromote",
        outcome(
            cluster
                .member_promote(pb::MemberPromoteRequest { id: learner_id })
                .await,
        ),
    ));
    rows.push((
        "MemberRemove",
        outcome(
            cluster
                .member_remove(pb::MemberRemoveRequest { id: learner_id })
                .await,
        ),
    ));
    rows.push(("Status", outcome(maint.status(pb::StatusRequest {}).await)));
    rows.push((
        "Alarm(get)",
        outcome(maint.alarm(pb::AlarmRequest::default()).await),
    ));
    rows.push((
        "Defragment",
        outcome(maint.defragment(pb::DefragmentRequest {}).await),
    ));
    rows.push(("Hash", outcome(maint.hash(pb::HashRequest {}).await)));
    rows.push((
        "HashKV",
        outcome(maint.hash_kv(pb::HashKvRequest { revision: 0 }).await),
    ));
    rows.push((
        "Snapshot",
        stream_outcome(maint.snapshot(pb::SnapshotRequest {}).await).await,
    ));
    rows.push((
        "MoveLeader",
        outcome(
            maint
                .move_leader(pb::MoveLeaderRequest {
                    target_id: learner_id,
                })
                .await,
        ),
    ));
    rows.push((
        "Authenticate",
        outcome(
            auth.authenticate(pb::AuthenticateRequest {
                name: "root".into(),
                password: "pw".into(),
            })
            .await,
        ),
    ));
    rows.push((
        "AuthEnable",
        outcome(auth.auth_enable(pb::AuthEnableRequest {}).await),
    ));
    rows.push((
        "UserList",
        outcome(auth.user_list(pb::AuthUserListRequest {}).await),
    ));
    rows.push((
        "RoleAdd",
        outcome(
            auth.role_add(pb::AuthRoleAddRequest { name: "r".into() })
                .await,
        ),
    ));
    rows.push((
        "Lock",
        outcome(
            lock.lock(lk::LockRequest {
                name: "l".into(),
                lease: 1,
            })
            .await,
        ),
    ));
    rows.push((
        "Election.Leader",
        outcome(
            election
                .leader(el::LeaderRequest { name: "e".into() })
                .await,
        ),
    ));
    rows.push((
        "Election.Campaign",
        outcome(
            election
                .campaign(el::CampaignRequest {
                    name: "e".into(),
                    lease: 1,
                    value: "v".into(),
                })
                .await,
        ),
    ));
    rows.push((
        "Election.Observe",
        stream_outcome(
            election
                .observe(el::LeaderRequest { name: "e".into() })
                .await,
        )
        .await,
    ));
    rows.iter()
        .map(|(name, o)| format!("{name}: {o}\n"))
        .collect()
}

/// etcdctl steps against the learner (`$L`), its JSON gateway (`$G`), and the voter
/// (`$V`) for the promotion.
const STEPS: &[&str] = &[
    "$L put b 2",
    "$L get a",
    "$L get a --consistency=s",
    "$L get a --consistency=s --print-value-only --rev=2",
    "$L del a",
    "$L compaction 1",
    "$L lease grant 10",
    "$L lease list",
    "timeout 3 $L watch a",
    "$L endpoint status",
    "$L endpoint health",
    "$L endpoint hashkv",
    "$L defrag",
    "$L alarm list",
    "$L member list",
    "$L member add x --peer-urls=http://127.0.0.1:1",
    "$L member promote $ID",
    "$L auth enable",
    "curl -s -m 3 -X POST $G/v3/kv/put -d '{\"key\":\"Yg==\",\"value\":\"Mg==\"}'",
    "curl -s -m 3 -X POST $G/v3/watch -d '{\"create_request\":{\"key\":\"YQ==\"}}'",
    "curl -s -m 3 $G/health",
];

/// Masks what legitimately differs: ports, IDs, sizes, raft positions, versions;
/// etcdctl's retry warnings become one line per step naming what was retried.
fn mask(transcript: &str) -> String {
    let retry = Regex::new(
        r#"^\{"level":"warn".*"msg":"retrying of unary invoker failed".*"error":"([^"]*)"\}$"#,
    )
    .expect("regex");
    let mut lines: Vec<String> = Vec::new();
    for line in transcript.lines() {
        let line = match retry.captures(line) {
            // Whether the command's deadline struck during a retry (and was logged as
            // one) is timing alone.
            Some(c) if c[1].contains("code = DeadlineExceeded") => continue,
            Some(c) => format!("(retried after: {})", &c[1]),
            None => line.to_string(),
        };
        if lines.last() != Some(&line) || !line.starts_with("(retried") {
            lines.push(line);
        }
    }
    let mut s = lines.join("\n");
    let rules: &[(&str, &str)] = &[
        (r"127\.0\.0\.1:\d+", "127.0.0.1:PORT"),
        (r"\b[0-9a-f]{10,16}\b", "ID"),
        (
            r"(?m)^(127\.0\.0\.1:PORT, ID), [^,]+, [^,]+, (true|false), (true|false), \d+, \d+, \d+, ",
            "$1, VERSION, DBSIZE, $2, $3, TERM, INDEX, INDEX, ",
        ),
        (r"took = \S+", "took = T"),
    ];
    for (re, with) in rules {
        s = Regex::new(re)
            .expect("valid regex")
            .replace_all(&s, *with)
            .into_owned();
    }
    s
}

async fn run(bin: &Path, base: u16) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let WithLearner { m0, m1, learner_id } = start(bin, base, dir.path()).await;
    let outcomes = rpc_outcomes(&m1, learner_id).await;
    let vars = [
        (
            "L",
            format!("etcdctl --endpoints={} --command-timeout=1s", m1.endpoint()),
        ),
        ("G", m1.url()),
        ("ID", format!("{learner_id:x}")),
    ];
    let transcript = tokio::task::block_in_place(|| common::sh_transcript(STEPS, &vars));
    // Promoted (once in sync), the former learner serves everything.
    let mut cluster0 = pb::cluster_client::ClusterClient::new(channel_to(&m0));
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = cluster0
        .member_promote(pb::MemberPromoteRequest { id: learner_id })
        .await
    {
        assert!(Instant::now() < deadline, "promote: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut kv1 = pb::kv_client::KvClient::new(channel_to(&m1));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let put = kv1
            .put(pb::PutRequest {
                key: "c".into(),
                value: "3".into(),
                ..Default::default()
            })
            .await;
        match put {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "promoted member still refuses a put: {e}; log:\n{}",
                m1.log_tail(20)
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = kv1
        .range(pb::RangeRequest {
            key: "c".into(),
            ..Default::default()
        })
        .await
        .expect("linearizable read on the promoted member")
        .into_inner();
    assert_eq!(got.count, 1, "promoted member reads its own write");
    (outcomes, mask(&transcript))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_refuses_what_etcd_refuses() {
    if !have("etcd") || !have("etcdctl") || !have("curl") {
        return;
    }
    let skiff = std::path::PathBuf::from(env!("CARGO_BIN_EXE_skiff"));
    let (etcd_rpcs, etcd_ctl) = run(Path::new("etcd"), 29800).await;
    let (skiff_rpcs, skiff_ctl) = run(&skiff, 29810).await;
    // The comparison means something only if etcd refused most and served some.
    assert!(
        etcd_rpcs.contains("Range(serializable): ok")
            && etcd_rpcs.contains("Status: ok")
            && etcd_rpcs.contains("Put: Unavailable: etcdserver: rpc not supported for learner"),
        "unexpected etcd outcomes:\n{etcd_rpcs}"
    );
    common::assert_same_transcript("learner-rpcs", &etcd_rpcs, &skiff_rpcs);
    common::assert_same_transcript("learner-etcdctl", &etcd_ctl, &skiff_ctl);
}
