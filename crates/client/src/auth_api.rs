//! The `Auth` service: enabling authentication, users, roles and their permissions.
//!
//! Guarantees: listing and reading (`user_get`, `user_list`, `role_get`, `role_list`,
//! `auth_status`) are reads, retried on another member; every change is a write,
//! retried only when provably not sent ([`crate::pool`]). All calls carry the client's
//! token (changes need the `root` role once authentication is enabled).

use bytes::Bytes;
use skiff_proto::authpb::{permission, Permission, UserAddOptions};
use skiff_proto::etcdserverpb::auth_client::AuthClient;
use skiff_proto::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse,
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusRequest,
    AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest,
    AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
    AuthUserListRequest, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse,
};

use crate::{Client, Result, Safety};

/// Runs one `Auth` call with a cloned request.
macro_rules! auth_call {
    ($client:expr, $safety:expr, $method:ident, $req:expr) => {{
        let req = $req;
        $client
            .unary($safety, |ch| {
                let req = req.clone();
                async move { AuthClient::new(ch).$method(req).await }
            })
            .await
    }};
}

impl Client {
    /// Enables authentication (the `root` user must exist and have the `root` role).
    pub async fn auth_enable(&self) -> Result<AuthEnableResponse> {
        auth_call!(
            self,
            Safety::NotIdempotent,
            auth_enable,
            AuthEnableRequest {}
        )
    }

    /// Disables authentication.
    pub async fn auth_disable(&self) -> Result<AuthDisableResponse> {
        auth_call!(
            self,
            Safety::NotIdempotent,
            auth_disable,
            AuthDisableRequest {}
        )
    }

    /// Whether authentication is enabled, and the auth store's revision (etcd 3.5+;
    /// etcd 3.4 answers `Unimplemented`).
    pub async fn auth_status(&self) -> Result<AuthStatusResponse> {
        auth_call!(self, Safety::Idempotent, auth_status, AuthStatusRequest {})
    }

    /// Adds user `name` with `password`; `no_password` creates a user that can only
    /// authenticate by a client certificate's common name.
    pub async fn user_add(
        &self,
        name: impl Into<String>,
        password: impl Into<String>,
        no_password: bool,
    ) -> Result<AuthUserAddResponse> {
        let req = AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            options: Some(UserAddOptions { no_password }),
            hashed_password: String::new(),
        };
        auth_call!(self, Safety::NotIdempotent, user_add, req)
    }

    /// User `name`'s roles.
    pub async fn user_get(&self, name: impl Into<String>) -> Result<AuthUserGetResponse> {
        let req = AuthUserGetRequest { name: name.into() };
        auth_call!(self, Safety::Idempotent, user_get, req)
    }

    /// Every user's name, sorted.
    pub async fn user_list(&self) -> Result<AuthUserListResponse> {
        auth_call!(self, Safety::Idempotent, user_list, AuthUserListRequest {})
    }

    /// Deletes user `name`.
    pub async fn user_delete(&self, name: impl Into<String>) -> Result<AuthUserDeleteResponse> {
        let req = AuthUserDeleteRequest { name: name.into() };
        auth_call!(self, Safety::NotIdempotent, user_delete, req)
    }

    /// Sets user `name`'s password.
    pub async fn user_change_password(
        &self,
        name: impl Into<String>,
        password: impl Into<String>,
    ) -> Result<AuthUserChangePasswordResponse> {
        let req = AuthUserChangePasswordRequest {
            name: name.into(),
            password: password.into(),
            hashed_password: String::new(),
        };
        auth_call!(self, Safety::NotIdempotent, user_change_password, req)
    }

    /// Grants `role` to `user`.
    pub async fn user_grant_role(
        &self,
        user: impl Into<String>,
        role: impl Into<String>,
    ) -> Result<AuthUserGrantRoleResponse> {
        let req = AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        };
        auth_call!(self, Safety::NotIdempotent, user_grant_role, req)
    }

    /// Revokes `role` from `user`.
    pub async fn user_revoke_role(
        &self,
        user: impl Into<String>,
        role: impl Into<String>,
    ) -> Result<AuthUserRevokeRoleResponse> {
        let req = AuthUserRevokeRoleRequest {
            name: user.into(),
            role: role.into(),
        };
        auth_call!(self, Safety::NotIdempotent, user_revoke_role, req)
    }

    /// Adds role `name` (without permissions).
    pub async fn role_add(&self, name: impl Into<String>) -> Result<AuthRoleAddResponse> {
        let req = AuthRoleAddRequest { name: name.into() };
        auth_call!(self, Safety::NotIdempotent, role_add, req)
    }

    /// Role `name`'s permissions.
    pub async fn role_get(&self, name: impl Into<String>) -> Result<AuthRoleGetResponse> {
        let req = AuthRoleGetRequest { role: name.into() };
        auth_call!(self, Safety::Idempotent, role_get, req)
    }

    /// Every role's name, sorted.
    pub async fn role_list(&self) -> Result<AuthRoleListResponse> {
        auth_call!(self, Safety::Idempotent, role_list, AuthRoleListRequest {})
    }

    /// Deletes role `name` (and revokes it from every user).
    pub async fn role_delete(&self, name: impl Into<String>) -> Result<AuthRoleDeleteResponse> {
        let req = AuthRoleDeleteRequest { role: name.into() };
        auth_call!(self, Safety::NotIdempotent, role_delete, req)
    }

    /// Grants role `name` the permission `perm_type` on `[key, range_end)` (an empty
    /// `range_end`: the key alone; `"\0"`: every key from `key` on).
    pub async fn role_grant_permission(
        &self,
        name: impl Into<String>,
        perm_type: permission::Type,
        key: impl Into<Bytes>,
        range_end: impl Into<Bytes>,
    ) -> Result<AuthRoleGrantPermissionResponse> {
        let req = AuthRoleGrantPermissionRequest {
            name: name.into(),
            perm: Some(Permission {
                perm_type: perm_type as i32,
                key: key.into(),
                range_end: range_end.into(),
            }),
        };
        auth_call!(self, Safety::NotIdempotent, role_grant_permission, req)
    }

    /// Revokes role `name`'s permission on exactly `[key, range_end)`.
    pub async fn role_revoke_permission(
        &self,
        name: impl Into<String>,
        key: impl Into<Bytes>,
        range_end: impl Into<Bytes>,
    ) -> Result<AuthRoleRevokePermissionResponse> {
        let req = AuthRoleRevokePermissionRequest {
            role: name.into(),
            key: key.into(),
            range_end: range_end.into(),
        };
        auth_call!(self, Safety::NotIdempotent, role_revoke_permission, req)
    }
}
