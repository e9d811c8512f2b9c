//! The learner layer: etcd 3.4's gRPC interceptors refuse, on a member that is a
//! learner, every client call but two (`isRPCSupportedForLearner`): `Maintenance.Status`
//! and a *serializable* `KV.Range`. Everything else (writes, linearizable reads,
//! leases, watches, cluster and auth calls, the other maintenance calls, Lock and
//! Election, which are built on KV and watch) answers etcd's
//! `Unavailable: etcdserver: rpc not supported for learner`
//! ([`EtcdError::NotSupportedForLearner`]), so a client moves on to a voting member.
//!
//! It is the outermost layer (etcd's interceptor runs before its handlers validate or
//! authenticate): a malformed request or one without a token sent to a learner gets
//! the learner error. The member's own `/health` check is not an RPC and is not
//! refused (etcd's `/health` answers on a learner too). Whether the member is a learner
//! is asked on every call, so a promoted learner serves everything from the moment its
//! promotion applies here.

use std::sync::Arc;

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;

use super::{
    ApiResult, AuthApi, ClusterApi, KvApi, LeaseApi, MaintenanceApi, SnapshotStream, Unhealthy,
    WatchApi, WatchSession,
};

/// Whether this member is a learner right now.
pub type IsLearner = Arc<dyn Fn() -> bool + Send + Sync>;

/// The learner layer around an inner facade.
pub struct Learner<F> {
    inner: Arc<F>,
    is_learner: IsLearner,
}

impl<F> Learner<F> {
    pub fn new(inner: Arc<F>, is_learner: IsLearner) -> Learner<F> {
        Learner { inner, is_learner }
    }

    /// etcd's refusal, when this member is a learner.
    fn refuse_on_learner(&self) -> Result<(), EtcdError> {
        if (self.is_learner)() {
            Err(EtcdError::NotSupportedForLearner)
        } else {
            Ok(())
        }
    }
}

/// Implements `$trait` for `Learner<F>`: each listed method is refused on a learner and
/// forwarded otherwise; `$extra` holds the methods a learner serves.
macro_rules! refused_on_learner {
    ($trait:ident { $($m:ident($req:ident) -> $resp:ident,)* } { $($extra:tt)* }) => {
        refused_on_learner!(@impl #[tonic::async_trait] $trait { $($m($req) -> $resp,)* } { $($extra)* });
    };
    // `KvApi`'s futures are not boxed (see its docs).
    (unboxed $trait:ident { $($m:ident($req:ident) -> $resp:ident,)* } { $($extra:tt)* }) => {
        refused_on_learner!(@impl $trait { $($m($req) -> $resp,)* } { $($extra)* });
    };
    (@impl $(#[$attr:meta])* $trait:ident { $($m:ident($req:ident) -> $resp:ident,)* } { $($extra:tt)* }) => {
        $(#[$attr])*
        impl<F: $trait> $trait for Learner<F> {
            $(
                async fn $m(&self, req: pb::$req) -> ApiResult<pb::$resp> {
                    self.refuse_on_learner()?;
                    self.inner.$m(req).await
                }
            )*
            $($extra)*
        }
    };
}

refused_on_learner!(unboxed KvApi {
    put(PutRequest) -> PutResponse,
    delete_range(DeleteRangeRequest) -> DeleteRangeResponse,
    txn(TxnRequest) -> TxnResponse,
    compact(CompactionRequest) -> CompactionResponse,
} {
    /// A learner serves serializable ranges only (its own, possibly stale, store).
    async fn range(&self, req: pb::RangeRequest) -> ApiResult<pb::RangeResponse> {
        if !req.serializable {
            self.refuse_on_learner()?;
        }
        self.inner.range(req).await
    }
});

refused_on_learner!(LeaseApi {
    lease_grant(LeaseGrantRequest) -> LeaseGrantResponse,
    lease_revoke(LeaseRevokeRequest) -> LeaseRevokeResponse,
    lease_keep_alive(LeaseKeepAliveRequest) -> LeaseKeepAliveResponse,
    lease_time_to_live(LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse,
    lease_leases(LeaseLeasesRequest) -> LeaseLeasesResponse,
} {});

refused_on_learner!(ClusterApi {
    member_add(MemberAddRequest) -> MemberAddResponse,
    member_remove(MemberRemoveRequest) -> MemberRemoveResponse,
    member_update(MemberUpdateRequest) -> MemberUpdateResponse,
    member_list(MemberListRequest) -> MemberListResponse,
    member_promote(MemberPromoteRequest) -> MemberPromoteResponse,
} {});

refused_on_learner!(MaintenanceApi {
    alarm(AlarmRequest) -> AlarmResponse,
    defragment(DefragmentRequest) -> DefragmentResponse,
    hash(HashRequest) -> HashResponse,
    hash_kv(HashKvRequest) -> HashKvResponse,
    move_leader(MoveLeaderRequest) -> MoveLeaderResponse,
    downgrade(DowngradeRequest) -> DowngradeResponse,
} {
    /// Served on a learner (it says `isLearner: true`).
    async fn status(&self, req: pb::StatusRequest) -> ApiResult<pb::StatusResponse> {
        self.inner.status(req).await
    }
    /// A stream: etcd's stream interceptor refuses every stream on a learner.
    async fn snapshot(&self, req: pb::SnapshotRequest) -> ApiResult<SnapshotStream> {
        self.refuse_on_learner()?;
        self.inner.snapshot(req).await
    }
    /// Not an RPC: the member's `/health`, answered on a learner as etcd does.
    async fn health(&self, serializable: bool) -> Result<(), Unhealthy> {
        self.inner.health(serializable).await
    }
});

refused_on_learner!(AuthApi {
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
} {});

impl<F: WatchApi> WatchApi for Learner<F> {
    /// A stream: refused when it opens on a learner.
    fn watch(&self) -> ApiResult<Box<dyn WatchSession>> {
        self.refuse_on_learner()?;
        self.inner.watch()
    }
    fn leader_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.leader_changes()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A facade that answers every KV and maintenance call with defaults.
    struct Inner;

    impl KvApi for Inner {
        async fn range(&self, _: pb::RangeRequest) -> ApiResult<pb::RangeResponse> {
            Ok(Default::default())
        }
        async fn put(&self, _: pb::PutRequest) -> ApiResult<pb::PutResponse> {
            Ok(Default::default())
        }
        async fn delete_range(
            &self,
            _: pb::DeleteRangeRequest,
        ) -> ApiResult<pb::DeleteRangeResponse> {
            Ok(Default::default())
        }
        async fn txn(&self, _: pb::TxnRequest) -> ApiResult<pb::TxnResponse> {
            Ok(Default::default())
        }
        async fn compact(&self, _: pb::CompactionRequest) -> ApiResult<pb::CompactionResponse> {
            Ok(Default::default())
        }
    }

    #[tokio::test]
    async fn a_learner_serves_serializable_ranges_only_and_a_voter_everything() {
        let learner = Arc::new(AtomicBool::new(true));
        let flag = learner.clone();
        let layer = Learner::new(
            Arc::new(Inner),
            Arc::new(move || flag.load(Ordering::SeqCst)),
        );
        let serializable = pb::RangeRequest {
            serializable: true,
            ..Default::default()
        };
        assert!(layer.range(serializable.clone()).await.is_ok());
        assert_eq!(
            layer.range(Default::default()).await.unwrap_err(),
            EtcdError::NotSupportedForLearner
        );
        assert_eq!(
            layer.put(Default::default()).await.unwrap_err(),
            EtcdError::NotSupportedForLearner
        );
        assert_eq!(
            layer.compact(Default::default()).await.unwrap_err(),
            EtcdError::NotSupportedForLearner
        );
        // Promoted: everything passes.
        learner.store(false, Ordering::SeqCst);
        assert!(layer.range(Default::default()).await.is_ok());
        assert!(layer.put(Default::default()).await.is_ok());
        assert!(layer.range(serializable).await.is_ok());
    }
}
