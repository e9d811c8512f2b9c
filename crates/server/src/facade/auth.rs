//! The auth layer: while auth is enabled, every request of every front end is
//! authenticated (its caller's token, see [`super::caller`]) and authorized here,
//! once, with etcd's errors; services never check anything themselves.
//!
//! What each call needs (etcd 3.4's rules, stricter where etcd had holes, each named):
//! - **no token**: `etcdserver: user name is empty`; an unknown or expired token:
//!   `etcdserver: invalid auth token`; only `Authenticate` (and `/health`) need none.
//!   etcd 3.4 let some calls through without a user (lease grant, keep-alive and list,
//!   status, member list, compaction, alarms); Skiff does not (CVE-2026-33413).
//! - **read** on the key range: range, every compare of a txn, a watch's whole range
//!   (from-key included; refused watches are created and canceled with
//!   `permission denied`, as etcd answers), the `prev_kv` of a put or delete (in a txn
//!   too: CVE-2026-44283), and every key a lease time-to-live lists with `keys`
//!   (CVE-2023-32082).
//! - **write**: put, delete range, and every put and delete nested in a txn, at any
//!   depth and in both branches (CVE-2026-33343); attaching a key to a lease, and
//!   revoking a lease, need write on every key already attached to it.
//! - **any authenticated user**: lease grant, keep-alive, leases, status, member list.
//! - **root** (a user with the root role): compaction, defragment, hash, hash-kv,
//!   snapshot, alarms, move-leader, downgrade, member add/remove/update/promote, and
//!   the whole Auth API but `Authenticate` (and, as etcd allows, a user getting
//!   itself or a role it holds).
//!
//! With auth **off**, a token is still looked up where etcd 3.4 looks it up (every
//! call it proposes or reads serialized: KV, lease grant and revoke, member changes,
//! a watch's create, the Auth API but `Authenticate`): one that names no user, such
//! as a token from before `auth disable`, is refused with `etcdserver: invalid auth
//! token` (a watch: created and canceled with that reason). Calls etcd serves without
//! the lookup (keep-alive, time-to-live, leases, status, member list, maintenance)
//! ignore it.
//!
//! The caller is the user its token names; a gRPC call with no token that came over
//! TLS with a verified client certificate (`--client-cert-auth`) is the user its
//! Common Name names (etcd's CN auth; a token wins over the certificate). Such a user
//! is checked as any other: a name no user has gets `permission denied` on keys and
//! `user name not found` where root is needed, as in etcd.
//!
//! The Maintenance calls word their refusals as etcd 3.4's Maintenance service does:
//! the auth package's errors, unmapped, gRPC code Unknown (`auth: invalid auth
//! token`, `auth: user name is empty`, `auth: user not found`, `auth: permission
//! denied`).
//!
//! Requests are checked against a snapshot of the auth store; the snapshot's revision
//! rides with the inner call ([`super::caller::with_checked_revision`]) into the
//! proposal, and the apply refuses the request if the store changed in between, so a
//! permission revoked concurrently is never bypassed. Lock and Election reach the KV
//! and watch calls through this layer, so their keys are checked as any other.

use std::sync::Arc;

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb::{self as pb, request_op::Request as Op};

use super::caller::{self, Caller};
use super::{
    ApiResult, AuthApi, ClusterApi, KvApi, LeaseApi, MaintenanceApi, SnapshotStream, Unhealthy,
    WatchApi, WatchSession,
};
use crate::auth::{AuthShared, AuthStore, Need};

/// Where a refused watch's response header comes from (the member's current one).
pub type HeaderFn = Arc<dyn Fn() -> Option<pb::ResponseHeader> + Send + Sync>;

/// The auth layer around an inner facade.
pub struct Auth<F> {
    inner: Arc<F>,
    shared: AuthShared,
    header: HeaderFn,
}

/// The checked revision of a request let through because auth was off. Enabling auth
/// does not change the store's revision (etcd's rule, which `jwt` tokens' `revision`
/// claims depend on), so the snapshot's revision would not tell the apply that auth
/// came on in between; 1 does: a store with auth on has a root user, so at least one
/// change since its first revision, 1. The apply refuses such a request as
/// `revision of auth store is old` (etcd re-checks it and refuses it too).
const CHECKED_WITH_AUTH_OFF: u64 = 1;

/// A request's caller as the auth store saw it.
struct Checked {
    store: Arc<AuthStore>,
    /// `None` while auth is disabled: everything is allowed.
    user: Option<String>,
    /// The auth store revision a `jwt` token was issued at.
    token_revision: Option<u64>,
}

impl Checked {
    /// Key permission, etcd's `isOpPermitted`: a `jwt` token issued before the store's
    /// last change is refused first (`revision of auth store is old`), then the user's
    /// roles decide.
    fn need(&self, need: Need, key: &[u8], range_end: &[u8]) -> Result<(), EtcdError> {
        match &self.user {
            None => Ok(()),
            Some(_) if self.token_revision.is_some_and(|r| r < self.store.revision) => {
                Err(EtcdError::AuthOldRevision)
            }
            Some(u) => self.store.check(u, need, key, range_end),
        }
    }

    /// The revision the apply compares with the store's: the snapshot's, or, when auth
    /// was off, [`CHECKED_WITH_AUTH_OFF`].
    fn revision(&self) -> u64 {
        match self.user {
            Some(_) => self.store.revision,
            None => CHECKED_WITH_AUTH_OFF,
        }
    }

    fn root(&self) -> Result<(), EtcdError> {
        match &self.user {
            None => Ok(()),
            Some(u) => self.store.check_admin(u),
        }
    }
}

/// Whether a call looks its token up while auth is disabled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Disabled {
    /// etcd 3.4 reads the token of every proposed request and serialized read even
    /// with auth off: a token that names no one is refused (`invalid auth token`).
    CheckToken,
    /// The calls etcd 3.4 serves without looking at the token while auth is off.
    IgnoreToken,
}

/// Who `caller` is under `store`.
fn authenticate(
    shared: &AuthShared,
    caller: &Caller,
    disabled: Disabled,
) -> Result<Checked, EtcdError> {
    let store = shared.now();
    if !store.enabled {
        if disabled == Disabled::CheckToken {
            if let Some(token) = caller.token.as_deref() {
                shared
                    .tokens
                    .info(token)
                    .ok_or(EtcdError::InvalidAuthToken)?;
            }
        }
        return Ok(Checked {
            store,
            user: None,
            token_revision: None,
        });
    }
    // A token wins over a certificate, as in etcd; a token that names no one is
    // refused even when a certificate came along.
    let (user, token_revision) = match (caller.token.as_deref(), &caller.common_name) {
        (Some(token), _) => {
            let info = shared
                .tokens
                .info(token)
                .ok_or(EtcdError::InvalidAuthToken)?;
            (info.user, info.revision)
        }
        (None, Some(cn)) => (cn.clone(), None),
        (None, None) => return Err(EtcdError::UserEmpty),
    };
    Ok(Checked {
        store,
        user: Some(user),
        token_revision,
    })
}

/// An auth refusal as etcd 3.4's Maintenance service words it: the auth package's
/// error, not the `etcdserver:` one the other services map it to.
fn maintenance_error(e: EtcdError) -> EtcdError {
    match e {
        EtcdError::InvalidAuthToken => EtcdError::AuthPkgInvalidToken,
        EtcdError::UserEmpty => EtcdError::AuthPkgUserEmpty,
        EtcdError::UserNotFound => EtcdError::AuthPkgUserNotFound,
        EtcdError::PermissionDenied => EtcdError::AuthPkgPermissionDenied,
        other => other,
    }
}

/// The leases a txn's puts attach keys to, after checking everything else in it.
fn check_txn(c: &Checked, t: &pb::TxnRequest, leases: &mut Vec<i64>) -> Result<(), EtcdError> {
    for cmp in &t.compare {
        c.need(Need::Read, &cmp.key, &cmp.range_end)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Op::RequestRange(r)) => c.need(Need::Read, &r.key, &r.range_end)?,
            Some(Op::RequestPut(p)) => {
                c.need(Need::Write, &p.key, &[])?;
                if p.prev_kv {
                    c.need(Need::Read, &p.key, &[])?;
                }
                if p.lease != 0 {
                    leases.push(p.lease);
                }
            }
            Some(Op::RequestDeleteRange(d)) => {
                c.need(Need::Write, &d.key, &d.range_end)?;
                if d.prev_kv {
                    c.need(Need::Read, &d.key, &d.range_end)?;
                }
            }
            Some(Op::RequestTxn(inner)) => check_txn(c, inner, leases)?,
            None => {}
        }
    }
    Ok(())
}

impl<F> Auth<F> {
    pub fn new(inner: Arc<F>, shared: AuthShared, header: HeaderFn) -> Auth<F> {
        Auth {
            inner,
            shared,
            header,
        }
    }

    /// The caller, for a call whose token etcd checks even with auth off.
    fn who(&self) -> Result<Checked, EtcdError> {
        authenticate(&self.shared, &caller::current(), Disabled::CheckToken)
    }

    /// The caller, for a call etcd serves without a token lookup while auth is off.
    fn who_open(&self) -> Result<Checked, EtcdError> {
        authenticate(&self.shared, &caller::current(), Disabled::IgnoreToken)
    }

    /// Checks the caller ([`Self::who`]) with `check`, then runs the inner call tagged
    /// with the auth store revision the check used.
    async fn checked<T>(
        &self,
        check: impl FnOnce(&Checked) -> Result<(), EtcdError>,
        call: impl std::future::Future<Output = ApiResult<T>>,
    ) -> ApiResult<T> {
        let c = self.who()?;
        check(&c)?;
        caller::with_checked_revision(c.revision(), call).await
    }

    /// [`Self::checked_open`] for the Maintenance calls: their refusals are the auth
    /// package's errors, which etcd 3.4 returns there unmapped (gRPC code Unknown).
    async fn checked_maintenance<T>(
        &self,
        check: impl FnOnce(&Checked) -> Result<(), EtcdError>,
        call: impl std::future::Future<Output = ApiResult<T>>,
    ) -> ApiResult<T> {
        let c = self
            .who_open()
            .and_then(|c| check(&c).map(|()| c))
            .map_err(maintenance_error)?;
        caller::with_checked_revision(c.revision(), call).await
    }

    /// [`Self::checked`] with the caller as [`Self::who_open`] sees it.
    async fn checked_open<T>(
        &self,
        check: impl FnOnce(&Checked) -> Result<(), EtcdError>,
        call: impl std::future::Future<Output = ApiResult<T>>,
    ) -> ApiResult<T> {
        let c = self.who_open()?;
        check(&c)?;
        caller::with_checked_revision(c.revision(), call).await
    }
}

impl<F: LeaseApi> Auth<F> {
    /// Write permission on every key attached to `lease` (none: nothing to check; an
    /// unknown lease is left for the call itself to report).
    async fn lease_keys_writable(&self, c: &Checked, lease: i64) -> Result<(), EtcdError> {
        if c.user.is_none() {
            return Ok(());
        }
        let ttl = match self
            .inner
            .lease_time_to_live(pb::LeaseTimeToLiveRequest {
                id: lease,
                keys: true,
            })
            .await
        {
            Ok(t) => t,
            Err(EtcdError::LeaseNotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        if ttl.ttl == -1 {
            return Ok(());
        }
        for k in &ttl.keys {
            c.need(Need::Write, k, &[])?;
        }
        Ok(())
    }
}

impl<F: KvApi + LeaseApi> KvApi for Auth<F> {
    async fn range(&self, req: pb::RangeRequest) -> ApiResult<pb::RangeResponse> {
        let (k, e) = (req.key.clone(), req.range_end.clone());
        self.checked(|c| c.need(Need::Read, &k, &e), self.inner.range(req))
            .await
    }

    async fn put(&self, req: pb::PutRequest) -> ApiResult<pb::PutResponse> {
        let c = self.who()?;
        c.need(Need::Write, &req.key, &[])?;
        if req.prev_kv {
            c.need(Need::Read, &req.key, &[])?;
        }
        if req.lease != 0 {
            self.lease_keys_writable(&c, req.lease).await?;
        }
        caller::with_checked_revision(c.revision(), self.inner.put(req)).await
    }

    async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> ApiResult<pb::DeleteRangeResponse> {
        let (k, e, prev) = (req.key.clone(), req.range_end.clone(), req.prev_kv);
        self.checked(
            |c| {
                c.need(Need::Write, &k, &e)?;
                if prev {
                    c.need(Need::Read, &k, &e)?;
                }
                Ok(())
            },
            self.inner.delete_range(req),
        )
        .await
    }

    async fn txn(&self, req: pb::TxnRequest) -> ApiResult<pb::TxnResponse> {
        let c = self.who()?;
        let mut leases = Vec::new();
        check_txn(&c, &req, &mut leases)?;
        leases.sort_unstable();
        leases.dedup();
        for lease in leases {
            self.lease_keys_writable(&c, lease).await?;
        }
        caller::with_checked_revision(c.revision(), self.inner.txn(req)).await
    }

    async fn compact(&self, req: pb::CompactionRequest) -> ApiResult<pb::CompactionResponse> {
        self.checked(Checked::root, self.inner.compact(req)).await
    }
}

/// etcd's cancel reason for a watch on keys the user may not read.
const WATCH_DENIED: &str =
    "rpc error: code = PermissionDenied desc = etcdserver: permission denied";

/// A watch stream that checks each watcher it creates.
struct AuthSession {
    inner: Box<dyn WatchSession>,
    shared: AuthShared,
    caller: Caller,
    header: HeaderFn,
}

#[tonic::async_trait]
impl WatchSession for AuthSession {
    fn create(&mut self, req: pb::WatchCreateRequest) -> pb::WatchResponse {
        let allowed = authenticate(&self.shared, &self.caller, Disabled::CheckToken)
            .and_then(|c| c.need(Need::Read, &req.key, &req.range_end));
        if let Err(e) = allowed {
            let cancel_reason = match e {
                EtcdError::PermissionDenied => WATCH_DENIED.to_string(),
                // No user or a bad token: grpc-go's rendering of that error.
                other => format!("rpc error: code = {:?} desc = {}", other.code(), other),
            };
            return pb::WatchResponse {
                header: (self.header)(),
                watch_id: req.watch_id,
                created: true,
                canceled: true,
                cancel_reason,
                ..Default::default()
            };
        }
        self.inner.create(req)
    }
    fn cancel(&mut self, watch_id: i64) -> Option<pb::WatchResponse> {
        self.inner.cancel(watch_id)
    }
    fn request_progress(&mut self) {
        self.inner.request_progress()
    }
    async fn next(&mut self) -> Option<pb::WatchResponse> {
        self.inner.next().await
    }
}

impl<F: WatchApi> WatchApi for Auth<F> {
    fn watch(&self) -> ApiResult<Box<dyn WatchSession>> {
        Ok(Box::new(AuthSession {
            inner: self.inner.watch()?,
            shared: self.shared.clone(),
            caller: caller::current(),
            header: self.header.clone(),
        }))
    }
    fn leader_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.leader_changes()
    }
}

#[tonic::async_trait]
impl<F: LeaseApi> LeaseApi for Auth<F> {
    async fn lease_grant(&self, req: pb::LeaseGrantRequest) -> ApiResult<pb::LeaseGrantResponse> {
        self.checked(|_| Ok(()), self.inner.lease_grant(req)).await
    }
    async fn lease_revoke(
        &self,
        req: pb::LeaseRevokeRequest,
    ) -> ApiResult<pb::LeaseRevokeResponse> {
        let c = self.who()?;
        self.lease_keys_writable(&c, req.id).await?;
        caller::with_checked_revision(c.revision(), self.inner.lease_revoke(req)).await
    }
    async fn lease_keep_alive(
        &self,
        req: pb::LeaseKeepAliveRequest,
    ) -> ApiResult<pb::LeaseKeepAliveResponse> {
        self.checked_open(|_| Ok(()), self.inner.lease_keep_alive(req))
            .await
    }
    async fn lease_time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> ApiResult<pb::LeaseTimeToLiveResponse> {
        let c = self.who_open()?;
        let resp = self.inner.lease_time_to_live(req).await?;
        for k in &resp.keys {
            c.need(Need::Read, k, &[])?;
        }
        Ok(resp)
    }
    async fn lease_leases(
        &self,
        req: pb::LeaseLeasesRequest,
    ) -> ApiResult<pb::LeaseLeasesResponse> {
        self.checked_open(|_| Ok(()), self.inner.lease_leases(req))
            .await
    }
}

#[tonic::async_trait]
impl<F: ClusterApi> ClusterApi for Auth<F> {
    async fn member_add(&self, req: pb::MemberAddRequest) -> ApiResult<pb::MemberAddResponse> {
        self.checked(Checked::root, self.inner.member_add(req))
            .await
    }
    async fn member_remove(
        &self,
        req: pb::MemberRemoveRequest,
    ) -> ApiResult<pb::MemberRemoveResponse> {
        self.checked(Checked::root, self.inner.member_remove(req))
            .await
    }
    async fn member_update(
        &self,
        req: pb::MemberUpdateRequest,
    ) -> ApiResult<pb::MemberUpdateResponse> {
        self.checked(Checked::root, self.inner.member_update(req))
            .await
    }
    async fn member_list(&self, req: pb::MemberListRequest) -> ApiResult<pb::MemberListResponse> {
        self.checked_open(|_| Ok(()), self.inner.member_list(req))
            .await
    }
    async fn member_promote(
        &self,
        req: pb::MemberPromoteRequest,
    ) -> ApiResult<pb::MemberPromoteResponse> {
        self.checked(Checked::root, self.inner.member_promote(req))
            .await
    }
}

#[tonic::async_trait]
impl<F: MaintenanceApi> MaintenanceApi for Auth<F> {
    async fn alarm(&self, req: pb::AlarmRequest) -> ApiResult<pb::AlarmResponse> {
        self.checked_maintenance(Checked::root, self.inner.alarm(req))
            .await
    }
    async fn status(&self, req: pb::StatusRequest) -> ApiResult<pb::StatusResponse> {
        self.checked_maintenance(|_| Ok(()), self.inner.status(req))
            .await
    }
    async fn defragment(&self, req: pb::DefragmentRequest) -> ApiResult<pb::DefragmentResponse> {
        self.checked_maintenance(Checked::root, self.inner.defragment(req))
            .await
    }
    async fn hash(&self, req: pb::HashRequest) -> ApiResult<pb::HashResponse> {
        self.checked_maintenance(Checked::root, self.inner.hash(req))
            .await
    }
    async fn hash_kv(&self, req: pb::HashKvRequest) -> ApiResult<pb::HashKvResponse> {
        self.checked_maintenance(Checked::root, self.inner.hash_kv(req))
            .await
    }
    async fn snapshot(&self, req: pb::SnapshotRequest) -> ApiResult<SnapshotStream> {
        self.checked_maintenance(Checked::root, self.inner.snapshot(req))
            .await
    }
    async fn move_leader(&self, req: pb::MoveLeaderRequest) -> ApiResult<pb::MoveLeaderResponse> {
        self.checked_maintenance(Checked::root, self.inner.move_leader(req))
            .await
    }
    async fn downgrade(&self, req: pb::DowngradeRequest) -> ApiResult<pb::DowngradeResponse> {
        self.checked_maintenance(Checked::root, self.inner.downgrade(req))
            .await
    }
    /// `/health` is HTTP and unauthenticated, as etcd's.
    async fn health(&self, serializable: bool) -> Result<(), Unhealthy> {
        self.inner.health(serializable).await
    }
}

/// The Auth API: `Authenticate` is open; everything else is root's once auth is on.
macro_rules! root_only {
    ($($m:ident($req:ident) -> $resp:ident,)*) => {
        #[tonic::async_trait]
        impl<F: AuthApi> AuthApi for Auth<F> {
            async fn authenticate(
                &self,
                req: pb::AuthenticateRequest,
            ) -> ApiResult<pb::AuthenticateResponse> {
                self.inner.authenticate(req).await
            }
            /// Root's, or the caller's own user (etcd's exception).
            async fn user_get(
                &self,
                req: pb::AuthUserGetRequest,
            ) -> ApiResult<pb::AuthUserGetResponse> {
                let name = req.name.clone();
                self.checked(
                    |c| c.root().or_else(|e| if c.user.as_deref() == Some(name.as_str()) { Ok(()) } else { Err(e) }),
                    self.inner.user_get(req),
                )
                .await
            }
            /// Root's, or a role the caller holds (etcd's exception).
            async fn role_get(
                &self,
                req: pb::AuthRoleGetRequest,
            ) -> ApiResult<pb::AuthRoleGetResponse> {
                let role = req.role.clone();
                self.checked(
                    |c| {
                        c.root().or_else(|e| {
                            let holds = c.user.as_ref().and_then(|u| c.store.users.get(u)).is_some_and(|u| u.roles.contains(&role));
                            if holds { Ok(()) } else { Err(e) }
                        })
                    },
                    self.inner.role_get(req),
                )
                .await
            }
            $(
                async fn $m(&self, req: pb::$req) -> ApiResult<pb::$resp> {
                    self.checked(Checked::root, self.inner.$m(req)).await
                }
            )*
        }
    };
}

root_only! {
    auth_enable(AuthEnableRequest) -> AuthEnableResponse,
    auth_disable(AuthDisableRequest) -> AuthDisableResponse,
    user_add(AuthUserAddRequest) -> AuthUserAddResponse,
    user_list(AuthUserListRequest) -> AuthUserListResponse,
    user_delete(AuthUserDeleteRequest) -> AuthUserDeleteResponse,
    user_change_password(AuthUserChangePasswordRequest) -> AuthUserChangePasswordResponse,
    user_grant_role(AuthUserGrantRoleRequest) -> AuthUserGrantRoleResponse,
    user_revoke_role(AuthUserRevokeRoleRequest) -> AuthUserRevokeRoleResponse,
    role_add(AuthRoleAddRequest) -> AuthRoleAddResponse,
    role_list(AuthRoleListRequest) -> AuthRoleListResponse,
    role_delete(AuthRoleDeleteRequest) -> AuthRoleDeleteResponse,
    role_grant_permission(AuthRoleGrantPermissionRequest) -> AuthRoleGrantPermissionResponse,
    role_revoke_permission(AuthRoleRevokePermissionRequest) -> AuthRoleRevokePermissionResponse,
}
