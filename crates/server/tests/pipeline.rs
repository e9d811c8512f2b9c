//! Proof that no front end bypasses the request facade: a counting layer is wrapped
//! around a running member's facade, every gRPC service and `/health` are served over
//! it, and every RPC of every service is called once. Each call must reach the layer
//! (by the facade method of the same name for the services that map one to one; Lock
//! and Election, built on KV and watch, through those).

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use clap::Parser;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::v3electionpb as el;
use skiff_proto::v3lockpb as lk;
use skiff_server::config::{normalize_args, Config, Flags};
use skiff_server::facade::{
    ApiResult, AuthApi, ClusterApi, KvApi, LeaseApi, MaintenanceApi, SnapshotStream, Unhealthy,
    WatchApi, WatchSession,
};
use skiff_server::member::Member;
use skiff_server::server::EtcdServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Records the name of every facade call, then passes it on.
struct Counting {
    inner: Arc<EtcdServer>,
    calls: Mutex<Vec<&'static str>>,
}

impl Counting {
    fn saw(&self, name: &'static str) {
        self.calls.lock().unwrap().push(name);
    }
    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

macro_rules! pass {
    ($self:ident, $name:ident, $req:ident) => {{
        $self.saw(stringify!($name));
        $self.inner.$name($req).await
    }};
}

impl KvApi for Counting {
    async fn range(&self, r: pb::RangeRequest) -> ApiResult<pb::RangeResponse> {
        pass!(self, range, r)
    }
    async fn put(&self, r: pb::PutRequest) -> ApiResult<pb::PutResponse> {
        pass!(self, put, r)
    }
    async fn delete_range(&self, r: pb::DeleteRangeRequest) -> ApiResult<pb::DeleteRangeResponse> {
        pass!(self, delete_range, r)
    }
    async fn txn(&self, r: pb::TxnRequest) -> ApiResult<pb::TxnResponse> {
        pass!(self, txn, r)
    }
    async fn compact(&self, r: pb::CompactionRequest) -> ApiResult<pb::CompactionResponse> {
        pass!(self, compact, r)
    }
}

impl WatchApi for Counting {
    fn watch(&self) -> ApiResult<Box<dyn WatchSession>> {
        self.saw("watch");
        self.inner.watch()
    }
    fn leader_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.leader_changes()
    }
}

#[tonic::async_trait]
impl LeaseApi for Counting {
    async fn lease_grant(&self, r: pb::LeaseGrantRequest) -> ApiResult<pb::LeaseGrantResponse> {
        pass!(self, lease_grant, r)
    }
    async fn lease_revoke(&self, r: pb::LeaseRevokeRequest) -> ApiResult<pb::LeaseRevokeResponse> {
        pass!(self, lease_revoke, r)
    }
    async fn lease_keep_alive(
        &self,
        r: pb::LeaseKeepAliveRequest,
    ) -> ApiResult<pb::LeaseKeepAliveResponse> {
        pass!(self, lease_keep_alive, r)
    }
    async fn lease_time_to_live(
        &self,
        r: pb::LeaseTimeToLiveRequest,
    ) -> ApiResult<pb::LeaseTimeToLiveResponse> {
        pass!(self, lease_time_to_live, r)
    }
    async fn lease_leases(&self, r: pb::LeaseLeasesRequest) -> ApiResult<pb::LeaseLeasesResponse> {
        pass!(self, lease_leases, r)
    }
}

#[tonic::async_trait]
impl ClusterApi for Counting {
    async fn member_add(&self, r: pb::MemberAddRequest) -> ApiResult<pb::MemberAddResponse> {
        pass!(self, member_add, r)
    }
    async fn member_remove(
        &self,
        r: pb::MemberRemoveRequest,
    ) -> ApiResult<pb::MemberRemoveResponse> {
        pass!(self, member_remove, r)
    }
    async fn member_update(
        &self,
        r: pb::MemberUpdateRequest,
    ) -> ApiResult<pb::MemberUpdateResponse> {
        pass!(self, member_update, r)
    }
    async fn member_list(&self, r: pb::MemberListRequest) -> ApiResult<pb::MemberListResponse> {
        pass!(self, member_list, r)
    }
    async fn member_promote(
        &self,
        r: pb::MemberPromoteRequest,
    ) -> ApiResult<pb::MemberPromoteResponse> {
        pass!(self, member_promote, r)
    }
}

#[tonic::async_trait]
impl MaintenanceApi for Counting {
    async fn alarm(&self, r: pb::AlarmRequest) -> ApiResult<pb::AlarmResponse> {
        pass!(self, alarm, r)
    }
    async fn status(&self, r: pb::StatusRequest) -> ApiResult<pb::StatusResponse> {
        pass!(self, status, r)
    }
    async fn defragment(&self, r: pb::DefragmentRequest) -> ApiResult<pb::DefragmentResponse> {
        pass!(self, defragment, r)
    }
    async fn hash(&self, r: pb::HashRequest) -> ApiResult<pb::HashResponse> {
        pass!(self, hash, r)
    }
    async fn hash_kv(&self, r: pb::HashKvRequest) -> ApiResult<pb::HashKvResponse> {
        pass!(self, hash_kv, r)
    }
    async fn snapshot(&self, r: pb::SnapshotRequest) -> ApiResult<SnapshotStream> {
        pass!(self, snapshot, r)
    }
    async fn move_leader(&self, r: pb::MoveLeaderRequest) -> ApiResult<pb::MoveLeaderResponse> {
        pass!(self, move_leader, r)
    }
    async fn downgrade(&self, r: pb::DowngradeRequest) -> ApiResult<pb::DowngradeResponse> {
        pass!(self, downgrade, r)
    }
    async fn health(&self, serializable: bool) -> Result<(), Unhealthy> {
        self.saw("health");
        self.inner.health(serializable).await
    }
}

macro_rules! counted_auth {
    ($($m:ident($req:ident) -> $resp:ident,)*) => {
        #[tonic::async_trait]
        impl AuthApi for Counting {
            $(
                async fn $m(&self, r: pb::$req) -> ApiResult<pb::$resp> {
                    pass!(self, $m, r)
                }
            )*
        }
    };
}

counted_auth! {
    auth_enable(AuthEnableRequest) -> AuthEnableResponse,
    auth_disable(AuthDisableRequest) -> AuthDisableResponse,
    authenticate(AuthenticateRequest) -> AuthenticateResponse,
    user_add(AuthUserAddRequest) -> AuthUserAddResponse,
    user_get(AuthUserGetRequest) -> AuthUserGetResponse,
    user_list(AuthUserListRequest) -> AuthUserListResponse,
    user_delete(AuthUserDeleteRequest) -> AuthUserDeleteResponse,
    user_change_password(AuthUserChangePasswordRequest) -> AuthUserChangePasswordResponse,
    user_grant_role(AuthUserGrantRoleRequest) -> AuthUserGrantRoleResponse,
    user_revoke_role(AuthUserRevokeRoleRequest) -> AuthUserRevokeRoleResponse,
    role_add(AuthRoleAddRequest) -> AuthRoleAddResponse,
    role_get(AuthRoleGetRequest) -> AuthRoleGetResponse,
    role_list(AuthRoleListRequest) -> AuthRoleListResponse,
    role_delete(AuthRoleDeleteRequest) -> AuthRoleDeleteResponse,
    role_grant_permission(AuthRoleGrantPermissionRequest) -> AuthRoleGrantPermissionResponse,
    role_revoke_permission(AuthRoleRevokePermissionRequest) -> AuthRoleRevokePermissionResponse,
}

/// Asserts the last RPC reached the layer, as exactly `expected` when given.
fn check(layer: &Counting, rpc: &str, expected: Option<&[&str]>) {
    let seen = layer.take();
    assert!(!seen.is_empty(), "{rpc} bypassed the facade");
    if let Some(want) = expected {
        assert_eq!(seen, want, "{rpc} reached the facade as {seen:?}");
    }
    println!("{rpc:<28} -> {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_of_every_service_goes_through_the_facade() {
    let dir = tempfile::tempdir().unwrap();
    let flags = Flags::try_parse_from(normalize_args([
        "skiff",
        "--name",
        "pipeline",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen-client-urls",
        "http://127.0.0.1:24379",
        "--advertise-client-urls",
        "http://127.0.0.1:24379",
        "--listen-peer-urls",
        "http://127.0.0.1:24380",
        "--initial-advertise-peer-urls",
        "http://127.0.0.1:24380",
        "--initial-cluster",
        "pipeline=http://127.0.0.1:24380",
    ]))
    .unwrap();
    let member = Member::start(Config::from_flags(flags).unwrap())
        .await
        .unwrap();
    let layer = Arc::new(Counting {
        inner: member.server.clone(),
        calls: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(skiff_server::serve::serve_client(
        listener,
        skiff_server::api::routes(layer.clone(), 1536 * 1024),
        skiff_server::http::router(member.server.metrics.clone(), layer.clone()),
        std::future::pending(),
    ));
    let url = format!("http://{addr}");
    let ch = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut kv = pb::kv_client::KvClient::new(ch.clone());
    let mut watch = pb::watch_client::WatchClient::new(ch.clone());
    let mut lease = pb::lease_client::LeaseClient::new(ch.clone());
    let mut cluster = pb::cluster_client::ClusterClient::new(ch.clone());
    let mut maint = pb::maintenance_client::MaintenanceClient::new(ch.clone());
    let mut lock = lk::lock_client::LockClient::new(ch.clone());
    let mut election = el::election_client::ElectionClient::new(ch.clone());
    // Wait for the member to lead itself.
    for _ in 0..100 {
        if member.server.leader() != 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let l = &*layer;

    // KV
    let put = pb::PutRequest {
        key: "k".into(),
        value: "v".into(),
        ..Default::default()
    };
    kv.put(put.clone()).await.unwrap();
    check(l, "KV.Put", Some(&["put"]));
    let range = pb::RangeRequest {
        key: "k".into(),
        ..Default::default()
    };
    kv.range(range.clone()).await.unwrap();
    check(l, "KV.Range", Some(&["range"]));
    kv.txn(pb::TxnRequest::default()).await.unwrap();
    check(l, "KV.Txn", Some(&["txn"]));
    kv.delete_range(pb::DeleteRangeRequest {
        key: "k".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    check(l, "KV.DeleteRange", Some(&["delete_range"]));
    kv.compact(pb::CompactionRequest {
        revision: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    check(l, "KV.Compact", Some(&["compact"]));
    // A refused request goes through the facade too (it is what checks it).
    let empty = kv.put(pb::PutRequest::default()).await.unwrap_err();
    assert_eq!(empty.message(), "etcdserver: key is not provided");
    check(l, "KV.Put (empty key)", Some(&["put"]));

    // Watch
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: "k".into(),
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut events = watch
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(events.message().await.unwrap().unwrap().created);
    check(l, "Watch.Watch", Some(&["watch"]));

    // Lease
    let granted = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap()
        .into_inner();
    check(l, "Lease.LeaseGrant", Some(&["lease_grant"]));
    let (ktx, krx) = tokio::sync::mpsc::channel(4);
    ktx.send(pb::LeaseKeepAliveRequest { id: granted.id })
        .await
        .unwrap();
    let mut kept = lease
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(krx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.message().await.unwrap().unwrap().ttl, 60);
    check(l, "Lease.LeaseKeepAlive", Some(&["lease_keep_alive"]));
    lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: granted.id,
            keys: true,
        })
        .await
        .unwrap();
    check(l, "Lease.LeaseTimeToLive", Some(&["lease_time_to_live"]));
    lease.lease_leases(pb::LeaseLeasesRequest {}).await.unwrap();
    check(l, "Lease.LeaseLeases", Some(&["lease_leases"]));

    // Lock and Election, built on KV and watch.
    let locked = lock
        .lock(lk::LockRequest {
            name: "L".into(),
            lease: granted.id,
        })
        .await
        .unwrap()
        .into_inner();
    check(l, "Lock.Lock", None);
    lock.unlock(lk::UnlockRequest { key: locked.key })
        .await
        .unwrap();
    check(l, "Lock.Unlock", Some(&["delete_range"]));
    let campaign = election
        .campaign(el::CampaignRequest {
            name: "E".into(),
            lease: granted.id,
            value: "a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    check(l, "Election.Campaign", None);
    let leader_key = campaign.leader.unwrap();
    election
        .proclaim(el::ProclaimRequest {
            leader: Some(leader_key.clone()),
            value: "b".into(),
        })
        .await
        .unwrap();
    check(l, "Election.Proclaim", Some(&["txn"]));
    election
        .leader(el::LeaderRequest { name: "E".into() })
        .await
        .unwrap();
    check(l, "Election.Leader", Some(&["range"]));
    // Cluster
    cluster
        .member_list(pb::MemberListRequest::default())
        .await
        .unwrap();
    check(l, "Cluster.MemberList", Some(&["member_list"]));
    let unimplemented = |s: tonic::Status, what: &str| {
        assert_eq!(s.code(), tonic::Code::Unimplemented, "{what}: {s:?}");
        assert!(s.message().contains(what), "{what}: {:?}", s.message());
    };
    // Empty requests: etcd's refusals, after going through the pipeline.
    let refused = |s: tonic::Status, what: &str| {
        assert_eq!(s.message(), what, "{s:?}");
    };
    refused(
        cluster
            .member_add(pb::MemberAddRequest::default())
            .await
            .unwrap_err(),
        "etcdserver: given member URLs are invalid",
    );
    check(l, "Cluster.MemberAdd", Some(&["member_add"]));
    refused(
        cluster
            .member_remove(pb::MemberRemoveRequest::default())
            .await
            .unwrap_err(),
        "etcdserver: member not found",
    );
    check(l, "Cluster.MemberRemove", Some(&["member_remove"]));
    refused(
        cluster
            .member_update(pb::MemberUpdateRequest::default())
            .await
            .unwrap_err(),
        "etcdserver: given member URLs are invalid",
    );
    check(l, "Cluster.MemberUpdate", Some(&["member_update"]));
    refused(
        cluster
            .member_promote(pb::MemberPromoteRequest::default())
            .await
            .unwrap_err(),
        "etcdserver: member not found",
    );
    check(l, "Cluster.MemberPromote", Some(&["member_promote"]));

    // Maintenance
    maint.alarm(pb::AlarmRequest::default()).await.unwrap();
    check(l, "Maintenance.Alarm", Some(&["alarm"]));
    maint.status(pb::StatusRequest {}).await.unwrap();
    check(l, "Maintenance.Status", Some(&["status"]));
    maint.hash(pb::HashRequest {}).await.unwrap();
    check(l, "Maintenance.Hash", Some(&["hash"]));
    maint.hash_kv(pb::HashKvRequest::default()).await.unwrap();
    check(l, "Maintenance.HashKV", Some(&["hash_kv"]));
    maint.defragment(pb::DefragmentRequest {}).await.unwrap();
    check(l, "Maintenance.Defragment", Some(&["defragment"]));
    // The snapshot streams the db file, then its 32-byte sha256.
    let mut chunks = maint
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(c) = chunks.message().await.unwrap() {
        last = Some(c);
    }
    let last = last.expect("a snapshot stream is never empty");
    assert_eq!((last.remaining_bytes, last.blob.len()), (0, 32));
    check(l, "Maintenance.Snapshot", Some(&["snapshot"]));
    // To no member at all: etcd's refusal.
    let refused = maint
        .move_leader(pb::MoveLeaderRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.message(), "etcdserver: bad leader transferee");
    check(l, "Maintenance.MoveLeader", Some(&["move_leader"]));
    unimplemented(
        maint
            .downgrade(pb::DowngradeRequest::default())
            .await
            .unwrap_err(),
        "downgrade",
    );
    check(l, "Maintenance.Downgrade", Some(&["downgrade"]));

    // etcd 3.5's AuthStatus is answered as etcd 3.4 answers a method it does not know.
    let mut auth = pb::auth_client::AuthClient::new(ch.clone());
    let refused = auth
        .auth_status(pb::AuthStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    assert_eq!(
        refused.message(),
        "unknown method AuthStatus for service etcdserverpb.Auth"
    );

    // HTTP /health
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.contains(r#"{"health":"true"}"#), "{body}");
    check(l, "GET /health", Some(&["health"]));

    // Auth
    macro_rules! auth_rpc {
        ($m:ident, $name:literal, $req:expr) => {
            auth.$m($req).await.unwrap();
            check(l, $name, Some(&[stringify!($m)]));
        };
    }
    for name in ["root", "u"] {
        auth_rpc!(
            user_add,
            "Auth.UserAdd",
            pb::AuthUserAddRequest {
                name: name.into(),
                password: "pw".into(),
                ..Default::default()
            }
        );
    }
    auth_rpc!(
        role_add,
        "Auth.RoleAdd",
        pb::AuthRoleAddRequest { name: "r".into() }
    );
    let perm = skiff_proto::authpb::Permission {
        perm_type: 0,
        key: "k".into(),
        range_end: Default::default(),
    };
    auth_rpc!(
        role_grant_permission,
        "Auth.RoleGrantPermission",
        pb::AuthRoleGrantPermissionRequest {
            name: "r".into(),
            perm: Some(perm),
        }
    );
    auth_rpc!(
        role_get,
        "Auth.RoleGet",
        pb::AuthRoleGetRequest { role: "r".into() }
    );
    auth_rpc!(role_list, "Auth.RoleList", pb::AuthRoleListRequest {});
    auth_rpc!(
        role_revoke_permission,
        "Auth.RoleRevokePermission",
        pb::AuthRoleRevokePermissionRequest {
            role: "r".into(),
            key: "k".into(),
            range_end: Default::default(),
        }
    );
    auth_rpc!(
        user_grant_role,
        "Auth.UserGrantRole",
        pb::AuthUserGrantRoleRequest {
            user: "u".into(),
            role: "r".into(),
        }
    );
    auth_rpc!(
        user_get,
        "Auth.UserGet",
        pb::AuthUserGetRequest { name: "u".into() }
    );
    auth_rpc!(user_list, "Auth.UserList", pb::AuthUserListRequest {});
    auth_rpc!(
        user_revoke_role,
        "Auth.UserRevokeRole",
        pb::AuthUserRevokeRoleRequest {
            name: "u".into(),
            role: "r".into(),
        }
    );
    auth_rpc!(
        user_change_password,
        "Auth.UserChangePassword",
        pb::AuthUserChangePasswordRequest {
            name: "u".into(),
            password: "pw2".into(),
            ..Default::default()
        }
    );
    auth_rpc!(
        user_grant_role,
        "Auth.UserGrantRole",
        pb::AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        }
    );
    auth_rpc!(auth_enable, "Auth.AuthEnable", pb::AuthEnableRequest {});
    auth_rpc!(
        authenticate,
        "Auth.Authenticate",
        pb::AuthenticateRequest {
            name: "u".into(),
            password: "pw2".into(),
        }
    );
    auth_rpc!(auth_disable, "Auth.AuthDisable", pb::AuthDisableRequest {});
    auth_rpc!(
        role_delete,
        "Auth.RoleDelete",
        pb::AuthRoleDeleteRequest { role: "r".into() }
    );
    auth_rpc!(
        user_delete,
        "Auth.UserDelete",
        pb::AuthUserDeleteRequest { name: "u".into() }
    );

    // Last, because Observe keeps reading in the background from here on.
    let mut observed = election
        .observe(el::LeaderRequest { name: "E".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(observed.message().await.unwrap().is_some());
    check(l, "Election.Observe", None);
    election
        .resign(el::ResignRequest {
            leader: Some(leader_key),
        })
        .await
        .unwrap();
    // Observe's stream is still following the election in the background (its reads
    // count too), so only require Resign's own txn here.
    let seen = layer.take();
    assert!(
        seen.contains(&"txn"),
        "Election.Resign reached the facade as {seen:?}"
    );
    lease
        .lease_revoke(pb::LeaseRevokeRequest { id: granted.id })
        .await
        .unwrap();
    let seen = layer.take();
    assert!(
        seen.contains(&"lease_revoke"),
        "Lease.LeaseRevoke reached the facade as {seen:?}"
    );

    drop((events, kept, observed));
    member.stop().await.unwrap();
}
