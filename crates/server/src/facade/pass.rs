//! `pass_through!`: the facade methods a layer does not change, forwarded to the
//! layer's inner facade, so a layer spells out only what it adds.

/// Implements the named facade traits for `$layer<F>` by forwarding every call to
/// `self.inner`.
macro_rules! pass_through {
    ($layer:ident: $($api:ident),+) => { $(pass_through!(@one $layer $api);)+ };
    (@one $layer:ident Watch) => {
        impl<F: $crate::facade::WatchApi> $crate::facade::WatchApi for $layer<F> {
            fn watch(&self) -> $crate::facade::ApiResult<Box<dyn $crate::facade::WatchSession>> {
                self.inner.watch()
            }
            fn leader_changes(&self) -> tokio::sync::watch::Receiver<u64> {
                self.inner.leader_changes()
            }
        }
    };
    (@one $layer:ident Cluster) => {
        pass_through!(@async $layer ClusterApi {
            member_add(MemberAddRequest) -> MemberAddResponse,
            member_remove(MemberRemoveRequest) -> MemberRemoveResponse,
            member_update(MemberUpdateRequest) -> MemberUpdateResponse,
            member_list(MemberListRequest) -> MemberListResponse,
            member_promote(MemberPromoteRequest) -> MemberPromoteResponse,
        } {});
    };
    (@one $layer:ident Maintenance) => {
        pass_through!(@async $layer MaintenanceApi {
            alarm(AlarmRequest) -> AlarmResponse,
            status(StatusRequest) -> StatusResponse,
            defragment(DefragmentRequest) -> DefragmentResponse,
            hash(HashRequest) -> HashResponse,
            hash_kv(HashKvRequest) -> HashKvResponse,
            move_leader(MoveLeaderRequest) -> MoveLeaderResponse,
            downgrade(DowngradeRequest) -> DowngradeResponse,
        } {
            async fn snapshot(
                &self,
                req: skiff_proto::etcdserverpb::SnapshotRequest,
            ) -> $crate::facade::ApiResult<$crate::facade::SnapshotStream> {
                self.inner.snapshot(req).await
            }
            async fn health(&self, serializable: bool) -> Result<(), $crate::facade::Unhealthy> {
                self.inner.health(serializable).await
            }
        });
    };
    (@one $layer:ident Auth) => {
        pass_through!(@async $layer AuthApi {
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
    };
    (@async $layer:ident $trait:ident { $($m:ident($req:ident) -> $resp:ident,)* } { $($extra:tt)* }) => {
        #[tonic::async_trait]
        impl<F: $crate::facade::$trait> $crate::facade::$trait for $layer<F> {
            $(
                async fn $m(
                    &self,
                    req: skiff_proto::etcdserverpb::$req,
                ) -> $crate::facade::ApiResult<skiff_proto::etcdserverpb::$resp> {
                    self.inner.$m(req).await
                }
            )*
            $($extra)*
        }
    };
}
