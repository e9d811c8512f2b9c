//! The Auth service (`etcdserverpb.Auth`), each call handed to the facade (whose auth
//! layer decides who may make it). `AuthStatus` is etcd 3.5's and answers what etcd
//! 3.4 answers for a method it does not know.

use std::sync::Arc;

use skiff_proto::etcdserverpb::{self as pb, auth_server::Auth};
use tonic::{Request, Response, Status};

use crate::facade::AuthApi;

/// The gRPC Auth service over a facade.
pub struct AuthService<F> {
    facade: Arc<F>,
}

impl<F: AuthApi> AuthService<F> {
    pub fn new(facade: Arc<F>) -> AuthService<F> {
        AuthService { facade }
    }
}

macro_rules! unary {
    ($($m:ident($req:ident) -> $resp:ident,)*) => {
        #[tonic::async_trait]
        impl<F: AuthApi> Auth for AuthService<F> {
            $(
                async fn $m(
                    &self,
                    req: Request<pb::$req>,
                ) -> Result<Response<pb::$resp>, Status> {
                    Ok(Response::new(self.facade.$m(req.into_inner()).await?))
                }
            )*

            async fn auth_status(
                &self,
                _: Request<pb::AuthStatusRequest>,
            ) -> Result<Response<pb::AuthStatusResponse>, Status> {
                Err(Status::unimplemented(
                    "unknown method AuthStatus for service etcdserverpb.Auth",
                ))
            }
        }
    };
}

unary! {
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
