//! The permission matrix (issue 13): every RPC (KV incl. each kind of txn branch and
//! nesting, watch, lease, lock, election, maintenance, cluster, auth) as each kind of
//! caller: no token, a user with no permission, read, write and readwrite on the
//! prefix `k`, and root. The same matrix runs against etcd 3.4 and Skiff; each cell is
//! the authorization outcome (`ok`: let through, whatever the call then answered;
//! otherwise the auth error), and Skiff's must equal etcd's except in the cells of
//! [`deviation`], where etcd 3.4.23 lets the call through and Skiff denies it, each
//! naming the CVE (or the issue's rule) it closes. The matrix is printed.
//! Ports 23480-23485 belong to this file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{have, Kind, Proc};
use skiff_proto::authpb::{permission::Type as PermType, Permission};
use skiff_proto::etcdserverpb::{self as pb, request_op::Request as Op};
use skiff_proto::v3electionpb as el;
use skiff_proto::v3lockpb as lk;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The callers, in column order.
const USERS: &[&str] = &["anonymous", "none", "read", "write", "readwrite", "root"];

/// Where Skiff deliberately denies what etcd 3.4.23 allows: (row, column) -> why.
fn deviation(row: &str, col: &str) -> Option<&'static str> {
    let unauthenticated = col == "anonymous";
    let not_root = col != "root";
    match row {
        // etcd 3.4 serves these without any user at all.
        "LeaseGrant"
        | "LeaseKeepAlive"
        | "LeaseLeases"
        | "Status"
        | "MemberList"
        | "AlarmList"
        | "LeaseRevoke(no keys)"
            if unauthenticated =>
        {
            Some("CVE-2026-33413: no RPC unauthenticated")
        }
        "LeaseTimeToLive(keys)" if !matches!(col, "read" | "readwrite" | "root") => {
            Some("CVE-2023-32082: lease keys need read")
        }
        "Txn(put prev_kv)" if col == "write" => Some("CVE-2026-44283: prev_kv in a txn needs read"),
        "Txn(nested put outside)" if not_root => {
            Some("CVE-2026-33343: ops nested in a txn are checked")
        }
        "Txn(nested put k)" if matches!(col, "anonymous" | "none" | "read") => {
            Some("CVE-2026-33343: ops nested in a txn are checked")
        }
        "Watch(from-key k)" if matches!(col, "read" | "readwrite") => {
            Some("issue 13: a watch's whole range is checked, from-key included (etcd's watch-range leak)")
        }
        "Compact" | "AlarmList" if not_root => Some("issue 13: compaction and alarms are root's"),
        _ => None,
    }
}

/// A request with the caller's token.
fn req<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert("token", t.parse().unwrap());
    }
    r
}

/// The authorization outcome of an answer.
fn outcome<T>(r: Result<T, Status>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(s) => classify(s.message()),
    }
}

fn classify(message: &str) -> String {
    const AUTH: &[(&str, &str)] = &[
        ("etcdserver: permission denied", "DENIED"),
        ("etcdserver: user name is empty", "NO-USER"),
        ("etcdserver: invalid auth token", "BAD-TOKEN"),
        ("etcdserver: user name not found", "NO-SUCH-USER"),
        // etcd 3.4's Maintenance calls return the auth package's errors unmapped.
        ("auth: permission denied", "DENIED"),
        ("auth: user name is empty", "NO-USER"),
        ("auth: invalid auth token", "BAD-TOKEN"),
        ("auth: user not found", "NO-SUCH-USER"),
    ];
    for (m, short) in AUTH {
        if message.contains(m) {
            return (*short).to_string();
        }
    }
    // Let through by auth; failed for another reason (e.g. an RPC Skiff does not
    // build yet, or a lease that a test step consumed).
    "ok".into()
}

struct Clients {
    kv: pb::kv_client::KvClient<Channel>,
    watch: pb::watch_client::WatchClient<Channel>,
    lease: pb::lease_client::LeaseClient<Channel>,
    cluster: pb::cluster_client::ClusterClient<Channel>,
    maint: pb::maintenance_client::MaintenanceClient<Channel>,
    auth: pb::auth_client::AuthClient<Channel>,
    lock: lk::lock_client::LockClient<Channel>,
    election: el::election_client::ElectionClient<Channel>,
}

impl Clients {
    async fn connect(endpoint: &str) -> Clients {
        let ch = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .unwrap()
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap();
        Clients {
            kv: pb::kv_client::KvClient::new(ch.clone()),
            watch: pb::watch_client::WatchClient::new(ch.clone()),
            lease: pb::lease_client::LeaseClient::new(ch.clone()),
            cluster: pb::cluster_client::ClusterClient::new(ch.clone()),
            maint: pb::maintenance_client::MaintenanceClient::new(ch.clone()),
            auth: pb::auth_client::AuthClient::new(ch.clone()),
            lock: lk::lock_client::LockClient::new(ch.clone()),
            election: el::election_client::ElectionClient::new(ch),
        }
    }
}

fn perm(t: PermType, key: &str, end: &str) -> Permission {
    Permission {
        perm_type: t as i32,
        key: key.as_bytes().to_vec().into(),
        range_end: end.as_bytes().to_vec().into(),
    }
}

/// Users, roles (each on the prefix `k`, i.e. `[k, l)`), auth enabled; the tokens.
async fn set_up(c: &mut Clients) -> BTreeMap<&'static str, Option<String>> {
    for user in ["root", "none", "read", "write", "readwrite"] {
        c.auth
            .user_add(pb::AuthUserAddRequest {
                name: user.into(),
                password: format!("{user}-pw"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for (role, t) in [
        ("read", PermType::Read),
        ("write", PermType::Write),
        ("readwrite", PermType::Readwrite),
    ] {
        c.auth
            .role_add(pb::AuthRoleAddRequest { name: role.into() })
            .await
            .unwrap();
        c.auth
            .role_grant_permission(pb::AuthRoleGrantPermissionRequest {
                name: role.into(),
                perm: Some(perm(t, "k", "l")),
            })
            .await
            .unwrap();
        c.auth
            .user_grant_role(pb::AuthUserGrantRoleRequest {
                user: role.into(),
                role: role.into(),
            })
            .await
            .unwrap();
    }
    c.auth
        .role_add(pb::AuthRoleAddRequest {
            name: "root".into(),
        })
        .await
        .unwrap();
    c.auth
        .user_grant_role(pb::AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        })
        .await
        .unwrap();
    c.auth.auth_enable(pb::AuthEnableRequest {}).await.unwrap();
    let mut tokens = BTreeMap::new();
    tokens.insert("anonymous", None);
    for user in ["root", "none", "read", "write", "readwrite"] {
        let t = c
            .auth
            .authenticate(pb::AuthenticateRequest {
                name: user.into(),
                password: format!("{user}-pw"),
            })
            .await
            .unwrap()
            .into_inner()
            .token;
        tokens.insert(user, Some(t));
    }
    tokens
}

/// A fresh lease (as root) with the key `k/x` attached.
async fn leased(c: &mut Clients, root: Option<&str>) -> i64 {
    let id = c
        .lease
        .lease_grant(req(pb::LeaseGrantRequest { ttl: 100, id: 0 }, root))
        .await
        .unwrap()
        .into_inner()
        .id;
    c.kv.put(req(
        pb::PutRequest {
            key: "k/x".into(),
            value: "v".into(),
            lease: id,
            ..Default::default()
        },
        root,
    ))
    .await
    .unwrap();
    id
}

fn put(key: &str, prev_kv: bool, lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Op::RequestPut(pb::PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: "v".into(),
            prev_kv,
            lease,
            ..Default::default()
        })),
    }
}

fn range_op(key: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(Op::RequestRange(pb::RangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        })),
    }
}

fn txn(
    compare_key: Option<&str>,
    success: Vec<pb::RequestOp>,
    failure: Vec<pb::RequestOp>,
) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: compare_key
            .map(|k| pb::Compare {
                result: pb::compare::CompareResult::Equal as i32,
                target: pb::compare::CompareTarget::Version as i32,
                key: k.as_bytes().to_vec().into(),
                target_union: Some(pb::compare::TargetUnion::Version(0)),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        success,
        failure,
    }
}

/// The rows, in order.
const ROWS: &[&str] = &[
    "Range(k)",
    "Range(prefix k)",
    "Range(from-key k)",
    "Range(other)",
    "Put(k)",
    "Put(k, prev_kv)",
    "Put(k, lease)",
    "DeleteRange(k)",
    "DeleteRange(prefix k, prev_kv)",
    "Txn(compare k)",
    "Txn(success put k)",
    "Txn(failure put k)",
    "Txn(success range k)",
    "Txn(compare other)",
    "Txn(put prev_kv)",
    "Txn(put lease)",
    "Txn(nested put k)",
    "Txn(nested put outside)",
    "Compact",
    "Watch(k)",
    "Watch(prefix k)",
    "Watch(from-key k)",
    "LeaseGrant",
    "LeaseRevoke(keys k/x)",
    "LeaseRevoke(no keys)",
    "LeaseKeepAlive",
    "LeaseTimeToLive(keys)",
    "LeaseLeases",
    "Lock(k/lock)",
    "Campaign(k/el)",
    "Leader(k/el)",
    "MemberList",
    "MemberRemove(unknown)",
    "Status",
    "AlarmList",
    "Hash",
    "HashKV",
    "Snapshot",
    "UserList",
    "RoleGet(read)",
];

/// The first response of a watch of `[key, range_end)`, as an outcome.
async fn watch_outcome(c: &mut Clients, token: Option<&str>, key: &str, end: &[u8]) -> String {
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.as_bytes().to_vec().into(),
                range_end: end.to_vec().into(),
                ..Default::default()
            },
        )),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(create).await.unwrap();
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let resp = match c.watch.watch(req(stream, token)).await {
        Ok(r) => r,
        Err(s) => return classify(s.message()),
    };
    let mut inbound = resp.into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), inbound.next()).await;
    drop(tx);
    match first {
        Ok(Some(Ok(r))) if r.canceled => classify(&r.cancel_reason),
        Ok(Some(Ok(_))) => "ok".into(),
        Ok(Some(Err(s))) => classify(s.message()),
        _ => "no answer".into(),
    }
}

/// One cell: `row` called as `token`'s user.
async fn cell(c: &mut Clients, row: &str, token: Option<&str>, root: Option<&str>) -> String {
    let lease = leased(c, root).await;
    let t = token;
    let out = match row {
        "Range(k)" => outcome(
            c.kv.range(req(
                pb::RangeRequest {
                    key: "k".into(),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
        "Range(prefix k)" => outcome(
            c.kv.range(req(
                pb::RangeRequest {
                    key: "k".into(),
                    range_end: "l".into(),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
        "Range(from-key k)" => outcome(
            c.kv.range(req(
                pb::RangeRequest {
                    key: "k".into(),
                    range_end: vec![0].into(),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
        "Range(other)" => outcome(
            c.kv.range(req(
                pb::RangeRequest {
                    key: "other".into(),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
        "Put(k)" => outcome(
            c.kv.put(req(
                pb::PutRequest {
                    key: "k".into(),
                    value: "v".into(),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
        "Put(k, prev_kv)" => outcome(
            c.kv.put(req(
                pb::PutRequest {
                    key: "k".into(),
                    value: "v".into(),
                    prev_kv: true,
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
        "Put(k, lease)" => outcome(
            c.kv.put(req(
                pb::PutRequest {
                    key: "k".into(),
                    value: "v".into(),
                    lease,
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
        "DeleteRange(k)" => outcome(
            c.kv.delete_range(req(
                pb::DeleteRangeRequest {
                    key: "k".into(),
                    ..Default::default()
                },
                t,
            ))
            .await,
        ),
        "DeleteRange(prefix k, prev_kv)" => outcome(
            c.kv.delete_range(req(
                pb::DeleteRangeRequest {
                    key: "k".into(),
                    range_end: "l".into(),
                    prev_kv: true,
                },
                t,
            ))
            .await,
        ),
        "Txn(compare k)" => outcome(c.kv.txn(req(txn(Some("k"), vec![], vec![]), t)).await),
        "Txn(success put k)" => outcome(
            c.kv.txn(req(txn(None, vec![put("k", false, 0)], vec![]), t))
                .await,
        ),
        "Txn(failure put k)" => outcome(
            c.kv.txn(req(txn(None, vec![], vec![put("k", false, 0)]), t))
                .await,
        ),
        "Txn(success range k)" => outcome(
            c.kv.txn(req(txn(None, vec![range_op("k")], vec![]), t))
                .await,
        ),
        "Txn(compare other)" => outcome(
            c.kv.txn(req(txn(Some("other"), vec![put("k", false, 0)], vec![]), t))
                .await,
        ),
        "Txn(put prev_kv)" => outcome(
            c.kv.txn(req(txn(None, vec![put("k", true, 0)], vec![]), t))
                .await,
        ),
        "Txn(put lease)" => outcome(
            c.kv.txn(req(txn(None, vec![put("k", false, lease)], vec![]), t))
                .await,
        ),
        "Txn(nested put k)" => {
            let nested = pb::RequestOp {
                request: Some(Op::RequestTxn(txn(None, vec![put("k", false, 0)], vec![]))),
            };
            outcome(c.kv.txn(req(txn(None, vec![nested], vec![]), t)).await)
        }
        "Txn(nested put outside)" => {
            let nested = pb::RequestOp {
                request: Some(Op::RequestTxn(txn(
                    None,
                    vec![put("outside", false, 0)],
                    vec![],
                ))),
            };
            outcome(
                c.kv.txn(req(txn(None, vec![put("k", false, 0), nested], vec![]), t))
                    .await,
            )
        }
        "Compact" => outcome(
            c.kv.compact(req(
                pb::CompactionRequest {
                    revision: 1,
                    physical: false,
                },
                t,
            ))
            .await,
        ),
        "Watch(k)" => watch_outcome(c, t, "k", b"").await,
        "Watch(prefix k)" => watch_outcome(c, t, "k", b"l").await,
        "Watch(from-key k)" => watch_outcome(c, t, "k", &[0]).await,
        "LeaseGrant" => outcome(
            c.lease
                .lease_grant(req(pb::LeaseGrantRequest { ttl: 100, id: 0 }, t))
                .await,
        ),
        "LeaseRevoke(keys k/x)" => outcome(
            c.lease
                .lease_revoke(req(pb::LeaseRevokeRequest { id: lease }, t))
                .await,
        ),
        "LeaseRevoke(no keys)" => {
            let empty = c
                .lease
                .lease_grant(req(pb::LeaseGrantRequest { ttl: 100, id: 0 }, root))
                .await
                .unwrap()
                .into_inner()
                .id;
            outcome(
                c.lease
                    .lease_revoke(req(pb::LeaseRevokeRequest { id: empty }, t))
                    .await,
            )
        }
        "LeaseKeepAlive" => {
            let once = tokio_stream::iter(vec![pb::LeaseKeepAliveRequest { id: lease }]);
            match c.lease.lease_keep_alive(req(once, t)).await {
                Err(s) => classify(s.message()),
                Ok(r) => match tokio::time::timeout(Duration::from_secs(5), r.into_inner().next())
                    .await
                {
                    Ok(Some(Ok(_))) => "ok".into(),
                    Ok(Some(Err(s))) => classify(s.message()),
                    _ => "no answer".into(),
                },
            }
        }
        "LeaseTimeToLive(keys)" => outcome(
            c.lease
                .lease_time_to_live(req(
                    pb::LeaseTimeToLiveRequest {
                        id: lease,
                        keys: true,
                    },
                    t,
                ))
                .await,
        ),
        "LeaseLeases" => outcome(
            c.lease
                .lease_leases(req(pb::LeaseLeasesRequest {}, t))
                .await,
        ),
        "Lock(k/lock)" => {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                c.lock.lock(req(
                    lk::LockRequest {
                        name: "k/lock".into(),
                        lease,
                    },
                    t,
                )),
            )
            .await;
            match r {
                Ok(r) => outcome(r),
                Err(_) => "no answer".into(),
            }
        }
        "Campaign(k/el)" => {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                c.election.campaign(req(
                    el::CampaignRequest {
                        name: "k/el".into(),
                        lease,
                        value: "v".into(),
                    },
                    t,
                )),
            )
            .await;
            match r {
                Ok(r) => outcome(r),
                Err(_) => "no answer".into(),
            }
        }
        "Leader(k/el)" => outcome(
            c.election
                .leader(req(
                    el::LeaderRequest {
                        name: "k/el".into(),
                    },
                    t,
                ))
                .await,
        ),
        "MemberList" => outcome(
            c.cluster
                .member_list(req(pb::MemberListRequest::default(), t))
                .await,
        ),
        "MemberRemove(unknown)" => outcome(
            c.cluster
                .member_remove(req(pb::MemberRemoveRequest { id: 12345 }, t))
                .await,
        ),
        "Status" => outcome(c.maint.status(req(pb::StatusRequest {}, t)).await),
        "AlarmList" => outcome(c.maint.alarm(req(pb::AlarmRequest::default(), t)).await),
        "Hash" => outcome(c.maint.hash(req(pb::HashRequest {}, t)).await),
        "HashKV" => outcome(
            c.maint
                .hash_kv(req(pb::HashKvRequest { revision: 0 }, t))
                .await,
        ),
        "Snapshot" => match c.maint.snapshot(req(pb::SnapshotRequest {}, t)).await {
            Err(s) => classify(s.message()),
            Ok(r) => match r.into_inner().next().await {
                Some(Err(s)) => classify(s.message()),
                _ => "ok".into(),
            },
        },
        "UserList" => outcome(c.auth.user_list(req(pb::AuthUserListRequest {}, t)).await),
        "RoleGet(read)" => outcome(
            c.auth
                .role_get(req(
                    pb::AuthRoleGetRequest {
                        role: "read".into(),
                    },
                    t,
                ))
                .await,
        ),
        other => panic!("unknown row {other}"),
    };
    // Leave no lease (and so no lock, campaign or k/x) behind for the next cell.
    let _ = c
        .lease
        .lease_revoke(req(pb::LeaseRevokeRequest { id: lease }, root))
        .await;
    out
}

/// The whole matrix against the server at `endpoint`: row -> column -> outcome.
async fn matrix(endpoint: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut c = Clients::connect(endpoint).await;
    let tokens = set_up(&mut c).await;
    let root = tokens["root"].clone();
    let mut m = BTreeMap::new();
    for row in ROWS {
        let mut cols = BTreeMap::new();
        for user in USERS {
            let out = cell(&mut c, row, tokens[user].as_deref(), root.as_deref()).await;
            cols.insert(user.to_string(), out);
        }
        m.insert(row.to_string(), cols);
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_matrix_matches_etcd() {
    if !have("etcd") {
        eprintln!("note: etcd not installed; permission matrix skipped");
        return;
    }
    let extra = ["--bcrypt-cost", "4"];
    let etcd = Proc::start_with(Kind::Etcd, "m", 23480, 23481, None, &extra);
    let etcd_m = matrix(&etcd.url()).await;
    drop(etcd);
    let skiff = Proc::start_with(Kind::Skiff, "m", 23482, 23483, None, &extra);
    let skiff_m = matrix(&skiff.url()).await;
    drop(skiff);

    let mut table = format!("{:<32}", "RPC \\ caller");
    for u in USERS {
        table.push_str(&format!("{u:<12}"));
    }
    table.push('\n');
    let mut wrong = Vec::new();
    let mut notes = Vec::new();
    for row in ROWS {
        table.push_str(&format!("{row:<32}"));
        for user in USERS {
            let (e, s) = (&etcd_m[*row][*user], &skiff_m[*row][*user]);
            let shown = match deviation(row, user) {
                Some(why) if e != s => {
                    if s == "ok" {
                        wrong.push(format!("{row} as {user}: Skiff lets it through ({why})"));
                    }
                    notes.push(format!("{row} as {user}: etcd {e}, Skiff {s}: {why}"));
                    format!("{s}*")
                }
                _ if e != s => {
                    wrong.push(format!("{row} as {user}: etcd {e}, Skiff {s}"));
                    format!("{s}!={e}")
                }
                _ => s.clone(),
            };
            table.push_str(&format!("{shown:<12}"));
        }
        table.push('\n');
    }
    println!(
        "{table}\n* Skiff denies where etcd 3.4.23 allowed:\n{}",
        notes.join("\n")
    );
    assert!(
        wrong.is_empty(),
        "matrix differs from etcd:\n{}\n{table}",
        wrong.join("\n")
    );
    // The matrix decided things: every kind of answer occurs.
    let all: Vec<&String> = skiff_m.values().flat_map(|c| c.values()).collect();
    for kind in ["ok", "DENIED", "NO-USER"] {
        assert!(all.iter().any(|o| *o == kind), "no {kind} cell:\n{table}");
    }
}

/// POSTs `body` to the JSON gateway at `path`, with `token` as `Authorization`.
fn gateway_post(port: u16, path: &str, body: &str, token: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The JSON gateway authenticates with the `Authorization` header (a token from
/// `Authenticate`), as etcd's gateway does. Ports 23484-23485.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_takes_the_token_from_authorization() {
    let skiff = Proc::start_with(
        Kind::Skiff,
        "g",
        23484,
        23485,
        None,
        &["--bcrypt-cost", "4"],
    );
    let mut c = Clients::connect(&skiff.url()).await;
    let tokens = set_up(&mut c).await;
    let body = r#"{"key":"aw=="}"#; // "k"
    let none = gateway_post(23484, "/v3/kv/range", body, None);
    assert!(none.contains("user name is empty"), "{none}");
    let read = gateway_post(23484, "/v3/kv/range", body, tokens["read"].as_deref());
    assert!(read.starts_with("HTTP/1.1 200"), "{read}");
    let write = gateway_post(23484, "/v3/kv/range", body, tokens["write"].as_deref());
    assert!(write.contains("permission denied"), "{write}");
    drop(skiff);
}
