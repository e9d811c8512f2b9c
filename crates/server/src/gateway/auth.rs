//! The Auth calls on the gateway (`/v3/auth/enable`, `disable`, `authenticate`,
//! `user/add|get|list|delete|changepw|grant|revoke`, `role/add|get|list|delete|grant|
//! revoke`): etcd 3.4's JSON for the Auth messages and `authpb.Permission`, each call
//! handed to the facade, whose auth layer checks the caller (the `Authorization`
//! header's token) exactly as for gRPC: root's token for user and role management once
//! auth is on, none for `authenticate`.
//!
//! Guarantees: requests are read with etcd 3.4's fields only (the 3.5
//! `hashedPassword` of user add and change-password is ignored, as 3.4's jsonpb
//! ignores an unknown field, so a password always goes through bcrypt here); a
//! permission's `permType` is `"READ"`, `"WRITE"`, `"READWRITE"` or its number, and a
//! READ permission is written without `permType` (the enum's default, which jsonpb
//! leaves out).

use skiff_proto::authpb;
use skiff_proto::etcdserverpb as pb;

use super::decode::{Decode, DecodeError, EnumDef, Fields};
use super::encode::{Encode, Obj};

type Result<T> = std::result::Result<T, DecodeError>;

const PERM_TYPE: EnumDef = EnumDef {
    go_type: "authpb.Permission_Type",
    names: &["READ", "WRITE", "READWRITE"],
};

unary_handlers! {
    auth_enable => auth_enable,
    auth_disable => auth_disable,
    authenticate => authenticate,
    user_add => user_add,
    user_get => user_get,
    user_list => user_list,
    user_delete => user_delete,
    user_change_password => user_change_password,
    user_grant_role => user_grant_role,
    user_revoke_role => user_revoke_role,
    role_add => role_add,
    role_get => role_get,
    role_list => role_list,
    role_delete => role_delete,
    role_grant_permission => role_grant_permission,
    role_revoke_permission => role_revoke_permission,
}

impl Decode for authpb::Permission {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(authpb::Permission {
            perm_type: f.enumeration("permType", &PERM_TYPE)?,
            key: f.bytes("key")?,
            range_end: f.bytes("range_end")?,
        })
    }
}

impl Encode for authpb::Permission {
    fn encode(&self, o: &mut Obj) {
        o.enumeration("permType", self.perm_type, PERM_TYPE.names);
        o.bytes("key", &self.key);
        o.bytes("range_end", &self.range_end);
    }
}

impl Decode for authpb::UserAddOptions {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(authpb::UserAddOptions {
            no_password: f.bool("no_password")?,
        })
    }
}

empty_request!(
    AuthEnableRequest,
    AuthDisableRequest,
    AuthUserListRequest,
    AuthRoleListRequest
);

/// Requests of string fields only: `Type { field: "json name", ... }`.
macro_rules! string_request {
    ($($t:ident { $($field:ident: $name:literal),* },)*) => {
        $(
            impl Decode for pb::$t {
                fn decode(f: &mut Fields<'_>) -> Result<Self> {
                    Ok(pb::$t {
                        $($field: f.string($name)?,)*
                    })
                }
            }
        )*
    };
}

string_request! {
    AuthenticateRequest { name: "name", password: "password" },
    AuthUserGetRequest { name: "name" },
    AuthUserDeleteRequest { name: "name" },
    AuthUserGrantRoleRequest { user: "user", role: "role" },
    AuthUserRevokeRoleRequest { name: "name", role: "role" },
    AuthRoleAddRequest { name: "name" },
    AuthRoleGetRequest { role: "role" },
    AuthRoleDeleteRequest { role: "role" },
}

impl Decode for pb::AuthUserAddRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::AuthUserAddRequest {
            name: f.string("name")?,
            password: f.string("password")?,
            options: f.message("options")?,
            hashed_password: String::new(),
        })
    }
}

impl Decode for pb::AuthUserChangePasswordRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::AuthUserChangePasswordRequest {
            name: f.string("name")?,
            password: f.string("password")?,
            hashed_password: String::new(),
        })
    }
}

impl Decode for pb::AuthRoleGrantPermissionRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::AuthRoleGrantPermissionRequest {
            name: f.string("name")?,
            perm: f.message("perm")?,
        })
    }
}

impl Decode for pb::AuthRoleRevokePermissionRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::AuthRoleRevokePermissionRequest {
            role: f.string("role")?,
            key: f.bytes("key")?,
            range_end: f.bytes("range_end")?,
        })
    }
}

header_only!(
    AuthEnableResponse,
    AuthDisableResponse,
    AuthUserAddResponse,
    AuthUserDeleteResponse,
    AuthUserChangePasswordResponse,
    AuthUserGrantRoleResponse,
    AuthUserRevokeRoleResponse,
    AuthRoleAddResponse,
    AuthRoleDeleteResponse,
    AuthRoleGrantPermissionResponse,
    AuthRoleRevokePermissionResponse
);

impl Encode for pb::AuthenticateResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.string("token", &self.token);
    }
}

impl Encode for pb::AuthUserGetResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.strings("roles", &self.roles);
    }
}

impl Encode for pb::AuthUserListResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.strings("users", &self.users);
    }
}

impl Encode for pb::AuthRoleGetResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.messages("perm", &self.perm);
    }
}

impl Encode for pb::AuthRoleListResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.strings("roles", &self.roles);
    }
}

#[cfg(test)]
mod tests {
    use super::super::decode::message;
    use super::super::encode::to_json;
    use super::*;

    #[test]
    fn permissions_as_etcd_writes_and_reads_them() {
        let req: pb::AuthRoleGrantPermissionRequest = message(
            r#"{"name":"app","perm":{"permType":"READWRITE","key":"YXBwLw==","rangeEnd":"YXBwMA=="}}"#,
        )
        .unwrap();
        let perm = req.perm.unwrap();
        assert_eq!((req.name.as_str(), perm.perm_type), ("app", 2));
        assert_eq!(
            to_json(&perm),
            r#"{"permType":"READWRITE","key":"YXBwLw==","range_end":"YXBwMA=="}"#
        );
        let read = authpb::Permission {
            key: bytes::Bytes::from_static(b"ro"),
            ..Default::default()
        };
        assert_eq!(to_json(&read), r#"{"key":"cm8="}"#);
        // etcd 3.4's text for a bad name.
        let bad = message::<pb::AuthRoleGrantPermissionRequest>(r#"{"perm":{"permType":"BAD"}}"#);
        assert_eq!(
            bad.unwrap_err().0,
            r#"unknown value "BAD" for enum authpb.Permission_Type"#
        );
    }

    #[test]
    fn user_add_reads_options_and_ignores_hashed_password() {
        let req: pb::AuthUserAddRequest =
            message(r#"{"name":"np","options":{"noPassword":true},"hashedPassword":"$2a$10$x"}"#)
                .unwrap();
        assert_eq!(req.name, "np");
        assert!(req.options.is_some_and(|o| o.no_password));
        assert!(req.hashed_password.is_empty());
    }
}
