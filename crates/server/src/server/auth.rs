//! The Auth API of the member: changes of the auth store are proposed through Raft
//! and answered once applied; reads (user/role get and list) wait for the
//! linearizable barrier and read the apply thread's published snapshot.
//!
//! Passwords are hashed with bcrypt (`--bcrypt-cost`) here, on the proposing member,
//! on a blocking thread; the log and the backend only ever hold the hash.
//! `Authenticate` checks the password here too, then refuses a caller's token that
//! names no one (`invalid auth token`, etcd's order: a wrong password is reported
//! first), then proposes the token so every member knows it (etcd's flow); a password
//! check never happens in the apply thread.

use skiff_api::EtcdError;
use skiff_proto::etcdserverpb as pb;
use skiff_proto::skiffpb::{internal_request::Request as Req, InternalAuthenticate};

use super::EtcdServer;
use crate::auth::tokens::random_token;
use crate::facade::{caller, ApiResult, AuthApi};
use crate::inputs::ApplyOutput;

/// Hashes `password` with `cost` on a blocking thread.
async fn hash_password(password: String, cost: u32) -> Result<String, EtcdError> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(|_| EtcdError::Stopped)?
        .map_err(|e| {
            tracing::error!(error = %e, "bcrypt failed");
            EtcdError::AuthFailed
        })
}

impl EtcdServer {
    /// Proposes an auth change and waits for its header.
    async fn propose_auth(&self, request: Req) -> ApiResult<Option<pb::ResponseHeader>> {
        self.propose_for(request, |o| match o {
            ApplyOutput::Auth(h) => Some(h),
            _ => None,
        })
        .await
    }

    /// A linearizable read of the auth store.
    async fn auth_read(&self) -> ApiResult<std::sync::Arc<crate::auth::AuthStore>> {
        self.linearizable_barrier().await?;
        Ok(self.auth.now())
    }
}

#[tonic::async_trait]
impl AuthApi for EtcdServer {
    async fn auth_enable(&self, _: pb::AuthEnableRequest) -> ApiResult<pb::AuthEnableResponse> {
        let header = self
            .propose_auth(Req::AuthEnable(Default::default()))
            .await?;
        Ok(pb::AuthEnableResponse { header })
    }

    async fn auth_disable(&self, _: pb::AuthDisableRequest) -> ApiResult<pb::AuthDisableResponse> {
        let header = self
            .propose_auth(Req::AuthDisable(Default::default()))
            .await?;
        Ok(pb::AuthDisableResponse { header })
    }

    async fn authenticate(
        &self,
        req: pb::AuthenticateRequest,
    ) -> ApiResult<pb::AuthenticateResponse> {
        let store = self.auth.now();
        if !store.enabled {
            return Err(EtcdError::AuthNotEnabled);
        }
        let user = store.users.get(&req.name).ok_or(EtcdError::AuthFailed)?;
        if user.options.as_ref().is_some_and(|o| o.no_password) {
            // etcd 3.4 answers with its auth package's error, unmapped (code Unknown),
            // whatever password was given.
            return Err(EtcdError::AuthPkgNoPasswordUser);
        }
        let hash = String::from_utf8_lossy(&user.password).into_owned();
        let password = req.password;
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .map_err(|_| EtcdError::Stopped)?
            .unwrap_or(false);
        if !ok {
            return Err(EtcdError::AuthFailed);
        }
        // As etcd, the right password with a token that names no one is refused: the
        // proposal carries the caller's token, which is looked up before proposing.
        if let Some(token) = caller::current().token {
            if self.auth.tokens.info(&token).is_none() {
                return Err(EtcdError::InvalidAuthToken);
            }
        }
        let request = Req::Authenticate(InternalAuthenticate {
            name: req.name,
            simple_token: random_token(),
        });
        // Checked against this snapshot: a password change before the entry applies
        // makes the apply refuse it.
        caller::with_checked_revision(
            store.revision,
            self.propose_for(request, |o| match o {
                ApplyOutput::Authenticate(r) => Some(r),
                _ => None,
            }),
        )
        .await
    }

    async fn user_add(
        &self,
        mut req: pb::AuthUserAddRequest,
    ) -> ApiResult<pb::AuthUserAddResponse> {
        if req.name.is_empty() {
            return Err(EtcdError::UserEmpty);
        }
        let no_password = req.options.as_ref().is_some_and(|o| o.no_password);
        if !no_password && req.hashed_password.is_empty() {
            let password = std::mem::take(&mut req.password);
            req.hashed_password = hash_password(password, self.auth.bcrypt_cost).await?;
        }
        req.password.clear();
        let header = self.propose_auth(Req::UserAdd(req)).await?;
        Ok(pb::AuthUserAddResponse { header })
    }

    async fn user_get(&self, req: pb::AuthUserGetRequest) -> ApiResult<pb::AuthUserGetResponse> {
        let store = self.auth_read().await?;
        let user = store.users.get(&req.name).ok_or(EtcdError::UserNotFound)?;
        Ok(pb::AuthUserGetResponse {
            header: self.header(),
            roles: user.roles.clone(),
        })
    }

    async fn user_list(&self, _: pb::AuthUserListRequest) -> ApiResult<pb::AuthUserListResponse> {
        let store = self.auth_read().await?;
        Ok(pb::AuthUserListResponse {
            header: self.header(),
            users: store.users.keys().cloned().collect(),
        })
    }

    async fn user_delete(
        &self,
        req: pb::AuthUserDeleteRequest,
    ) -> ApiResult<pb::AuthUserDeleteResponse> {
        let header = self.propose_auth(Req::UserDelete(req)).await?;
        Ok(pb::AuthUserDeleteResponse { header })
    }

    async fn user_change_password(
        &self,
        mut req: pb::AuthUserChangePasswordRequest,
    ) -> ApiResult<pb::AuthUserChangePasswordResponse> {
        if req.hashed_password.is_empty() {
            let password = std::mem::take(&mut req.password);
            req.hashed_password = hash_password(password, self.auth.bcrypt_cost).await?;
        }
        req.password.clear();
        let header = self.propose_auth(Req::UserChangePassword(req)).await?;
        Ok(pb::AuthUserChangePasswordResponse { header })
    }

    async fn user_grant_role(
        &self,
        req: pb::AuthUserGrantRoleRequest,
    ) -> ApiResult<pb::AuthUserGrantRoleResponse> {
        let header = self.propose_auth(Req::UserGrantRole(req)).await?;
        Ok(pb::AuthUserGrantRoleResponse { header })
    }

    async fn user_revoke_role(
        &self,
        req: pb::AuthUserRevokeRoleRequest,
    ) -> ApiResult<pb::AuthUserRevokeRoleResponse> {
        let header = self.propose_auth(Req::UserRevokeRole(req)).await?;
        Ok(pb::AuthUserRevokeRoleResponse { header })
    }

    async fn role_add(&self, req: pb::AuthRoleAddRequest) -> ApiResult<pb::AuthRoleAddResponse> {
        if req.name.is_empty() {
            return Err(EtcdError::RoleEmpty);
        }
        let header = self.propose_auth(Req::RoleAdd(req)).await?;
        Ok(pb::AuthRoleAddResponse { header })
    }

    async fn role_get(&self, req: pb::AuthRoleGetRequest) -> ApiResult<pb::AuthRoleGetResponse> {
        let store = self.auth_read().await?;
        let role = store.roles.get(&req.role).ok_or(EtcdError::RoleNotFound)?;
        Ok(pb::AuthRoleGetResponse {
            header: self.header(),
            perm: role.key_permission.clone(),
        })
    }

    async fn role_list(&self, _: pb::AuthRoleListRequest) -> ApiResult<pb::AuthRoleListResponse> {
        let store = self.auth_read().await?;
        Ok(pb::AuthRoleListResponse {
            header: self.header(),
            roles: store.roles.keys().cloned().collect(),
        })
    }

    async fn role_delete(
        &self,
        req: pb::AuthRoleDeleteRequest,
    ) -> ApiResult<pb::AuthRoleDeleteResponse> {
        let header = self.propose_auth(Req::RoleDelete(req)).await?;
        Ok(pb::AuthRoleDeleteResponse { header })
    }

    async fn role_grant_permission(
        &self,
        req: pb::AuthRoleGrantPermissionRequest,
    ) -> ApiResult<pb::AuthRoleGrantPermissionResponse> {
        let header = self.propose_auth(Req::RoleGrantPermission(req)).await?;
        Ok(pb::AuthRoleGrantPermissionResponse { header })
    }

    async fn role_revoke_permission(
        &self,
        req: pb::AuthRoleRevokePermissionRequest,
    ) -> ApiResult<pb::AuthRoleRevokePermissionResponse> {
        let header = self.propose_auth(Req::RoleRevokePermission(req)).await?;
        Ok(pb::AuthRoleRevokePermissionResponse { header })
    }
}
