//! The request facade: what the member offers to every front end, in etcd's wire
//! types. The gRPC services (`crate::api`), the HTTP endpoints (`crate::http`) and,
//! later, the JSON gateway and a gRPC proxy are all written against these traits and
//! never reach into the member; the member ([`crate::server::EtcdServer`]) implements
//! them once.
//!
//! One pipeline, wrapped: cross-cutting concerns are layers that implement the same
//! traits around an inner facade, in the order a request meets them (etcd's
//! `uber_applier` / `apply_auth` / `quota` do the same in its server package):
//!
//! ```text
//! front end ─▶ Learner ─▶ Validate ─▶ Auth ─▶ Quota ─▶ EtcdServer (propose/read ─▶ apply)
//! ```
//!
//! [`learner::Learner`] refuses, while this member is a learner, every call etcd 3.4
//! refuses on a learner (all but `Status` and serializable ranges); [`validate::Validate`] refuses malformed requests with etcd's errors before
//! anything else sees them; [`auth::Auth`] authenticates the caller ([`caller`]) and
//! checks its permissions for every request while auth is enabled; [`quota::Quota`]
//! refuses writes that could grow the database while NOSPACE is raised. A test wraps
//! the whole facade in a counting layer to prove no service bypasses it
//! (`tests/pipeline.rs`).
//!
//! Guarantees of the assembled pipeline (`member.rs` builds it): requests are
//! checked with [`skiff_api::validate`] before they are proposed or served (so every
//! front end gets etcd's errors); errors are [`EtcdError`]s, which carry etcd's gRPC code and
//! exact message; an RPC the member does not implement answers
//! `Unimplemented` naming it (the `EtcdError::Unsupported*` rows), never a silent
//! success.

#[macro_use]
mod pass;
pub mod auth;
pub mod caller;
pub mod learner;
pub mod quota;
pub mod validate;

use std::future::Future;
use std::pin::Pin;

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;
use tokio_stream::Stream;

pub use auth::Auth;
pub use learner::Learner;
pub use quota::Quota;
pub use validate::Validate;

/// What a facade call returns.
pub type ApiResult<T> = Result<T, EtcdError>;

/// A stream of snapshot chunks.
pub type SnapshotStream = Pin<Box<dyn Stream<Item = ApiResult<pb::SnapshotResponse>> + Send>>;

/// `etcdserverpb.KV`.
///
/// Its methods return their futures unboxed (implementations write `async fn`), unlike
/// the other facade traits' `async_trait`: a KV call passes every layer, and a boxed
/// future per layer and call (five, moved into their boxes) was 3-4% of the leader's
/// samples under puts at 1000 clients (`bench/PROFILE.md`).
pub trait KvApi: Send + Sync + 'static {
    fn range(
        &self,
        req: pb::RangeRequest,
    ) -> impl Future<Output = ApiResult<pb::RangeResponse>> + Send;
    fn put(&self, req: pb::PutRequest) -> impl Future<Output = ApiResult<pb::PutResponse>> + Send;
    fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> impl Future<Output = ApiResult<pb::DeleteRangeResponse>> + Send;
    fn txn(&self, req: pb::TxnRequest) -> impl Future<Output = ApiResult<pb::TxnResponse>> + Send;
    fn compact(
        &self,
        req: pb::CompactionRequest,
    ) -> impl Future<Output = ApiResult<pb::CompactionResponse>> + Send;
}

/// One watch stream of a client: many watchers, one ordered flow of responses.
#[tonic::async_trait]
pub trait WatchSession: Send + 'static {
    /// Creates a watcher; the answer is the `created` response (`canceled` with the
    /// reason when refused, e.g. a duplicate watch ID), sent before any event of it.
    fn create(&mut self, req: pb::WatchCreateRequest) -> pb::WatchResponse;
    /// Cancels a watcher: its `canceled` response, or `None` if it does not exist.
    fn cancel(&mut self, watch_id: i64) -> Option<pb::WatchResponse>;
    /// Asks for a progress notification (answered through [`WatchSession::next`]
    /// once every watcher of the session has caught up, with `watch_id` -1).
    fn request_progress(&mut self);
    /// The next events (or cancellation, or progress) response; `None` when the
    /// member stops.
    async fn next(&mut self) -> Option<pb::WatchResponse>;
}

/// `etcdserverpb.Watch`.
pub trait WatchApi: Send + Sync + 'static {
    fn watch(&self) -> ApiResult<Box<dyn WatchSession>>;
    /// Who leads, as it changes (0: no leader): requests that carry etcd's
    /// `hasleader` metadata are refused, and their streams ended, without one.
    fn leader_changes(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// `etcdserverpb.Lease`.
#[tonic::async_trait]
pub trait LeaseApi: Send + Sync + 'static {
    async fn lease_grant(&self, req: pb::LeaseGrantRequest) -> ApiResult<pb::LeaseGrantResponse>;
    async fn lease_revoke(&self, req: pb::LeaseRevokeRequest)
        -> ApiResult<pb::LeaseRevokeResponse>;
    /// One keep-alive of a stream: TTL 0 when the lease does not exist (etcd).
    async fn lease_keep_alive(
        &self,
        req: pb::LeaseKeepAliveRequest,
    ) -> ApiResult<pb::LeaseKeepAliveResponse>;
    async fn lease_time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> ApiResult<pb::LeaseTimeToLiveResponse>;
    async fn lease_leases(&self, req: pb::LeaseLeasesRequest)
        -> ApiResult<pb::LeaseLeasesResponse>;
}

/// `etcdserverpb.Cluster`.
#[tonic::async_trait]
pub trait ClusterApi: Send + Sync + 'static {
    async fn member_add(&self, req: pb::MemberAddRequest) -> ApiResult<pb::MemberAddResponse>;
    async fn member_remove(
        &self,
        req: pb::MemberRemoveRequest,
    ) -> ApiResult<pb::MemberRemoveResponse>;
    async fn member_update(
        &self,
        req: pb::MemberUpdateRequest,
    ) -> ApiResult<pb::MemberUpdateResponse>;
    async fn member_list(&self, req: pb::MemberListRequest) -> ApiResult<pb::MemberListResponse>;
    async fn member_promote(
        &self,
        req: pb::MemberPromoteRequest,
    ) -> ApiResult<pb::MemberPromoteResponse>;
}

/// `etcdserverpb.Maintenance`, plus the `/health` check the HTTP endpoint asks.
#[tonic::async_trait]
pub trait MaintenanceApi: Send + Sync + 'static {
    async fn alarm(&self, req: pb::AlarmRequest) -> ApiResult<pb::AlarmResponse>;
    async fn status(&self, req: pb::StatusRequest) -> ApiResult<pb::StatusResponse>;
    async fn defragment(&self, req: pb::DefragmentRequest) -> ApiResult<pb::DefragmentResponse>;
    async fn hash(&self, req: pb::HashRequest) -> ApiResult<pb::HashResponse>;
    async fn hash_kv(&self, req: pb::HashKvRequest) -> ApiResult<pb::HashKvResponse>;
    async fn snapshot(&self, req: pb::SnapshotRequest) -> ApiResult<SnapshotStream>;
    async fn move_leader(&self, req: pb::MoveLeaderRequest) -> ApiResult<pb::MoveLeaderResponse>;
    async fn downgrade(&self, req: pb::DowngradeRequest) -> ApiResult<pb::DowngradeResponse>;
    /// etcd's `/health`: healthy when no alarm is raised, a leader is known and
    /// (unless `serializable`) a no-op commits through Raft within a second.
    async fn health(&self, serializable: bool) -> Result<(), Unhealthy>;
}

/// Why a member is not healthy (`/health` answers 503 with `{"health":"false"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unhealthy {
    /// An alarm (e.g. NOSPACE) is raised.
    Alarm(String),
    /// The member knows no leader.
    NoLeader,
    /// A no-op proposal did not commit in time.
    CommitFailed(String),
}

/// `etcdserverpb.Auth` (etcd 3.4's calls; `AuthStatus` is 3.5's and not served).
#[tonic::async_trait]
pub trait AuthApi: Send + Sync + 'static {
    async fn auth_enable(&self, req: pb::AuthEnableRequest) -> ApiResult<pb::AuthEnableResponse>;
    async fn auth_disable(&self, req: pb::AuthDisableRequest)
        -> ApiResult<pb::AuthDisableResponse>;
    async fn authenticate(
        &self,
        req: pb::AuthenticateRequest,
    ) -> ApiResult<pb::AuthenticateResponse>;
    async fn user_add(&self, req: pb::AuthUserAddRequest) -> ApiResult<pb::AuthUserAddResponse>;
    async fn user_get(&self, req: pb::AuthUserGetRequest) -> ApiResult<pb::AuthUserGetResponse>;
    async fn user_list(&self, req: pb::AuthUserListRequest) -> ApiResult<pb::AuthUserListResponse>;
    async fn user_delete(
        &self,
        req: pb::AuthUserDeleteRequest,
    ) -> ApiResult<pb::AuthUserDeleteResponse>;
    async fn user_change_password(
        &self,
        req: pb::AuthUserChangePasswordRequest,
    ) -> ApiResult<pb::AuthUserChangePasswordResponse>;
    async fn user_grant_role(
        &self,
        req: pb::AuthUserGrantRoleRequest,
    ) -> ApiResult<pb::AuthUserGrantRoleResponse>;
    async fn user_revoke_role(
        &self,
        req: pb::AuthUserRevokeRoleRequest,
    ) -> ApiResult<pb::AuthUserRevokeRoleResponse>;
    async fn role_add(&self, req: pb::AuthRoleAddRequest) -> ApiResult<pb::AuthRoleAddResponse>;
    async fn role_get(&self, req: pb::AuthRoleGetRequest) -> ApiResult<pb::AuthRoleGetResponse>;
    async fn role_list(&self, req: pb::AuthRoleListRequest) -> ApiResult<pb::AuthRoleListResponse>;
    async fn role_delete(
        &self,
        req: pb::AuthRoleDeleteRequest,
    ) -> ApiResult<pb::AuthRoleDeleteResponse>;
    async fn role_grant_permission(
        &self,
        req: pb::AuthRoleGrantPermissionRequest,
    ) -> ApiResult<pb::AuthRoleGrantPermissionResponse>;
    async fn role_revoke_permission(
        &self,
        req: pb::AuthRoleRevokePermissionRequest,
    ) -> ApiResult<pb::AuthRoleRevokePermissionResponse>;
}

/// Everything a front end may ask: the whole etcd v3 API.
pub trait Facade: KvApi + WatchApi + LeaseApi + ClusterApi + MaintenanceApi + AuthApi {}

impl<T: KvApi + WatchApi + LeaseApi + ClusterApi + MaintenanceApi + AuthApi> Facade for T {}
