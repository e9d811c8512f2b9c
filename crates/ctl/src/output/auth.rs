//! etcdctl 3.4's output of the `user` and `role` verbs in each format: the simple
//! lines, `-w json` (Go's `encoding/json` of etcd's protobuf structs: `omitempty`,
//! bytes as base64), `-w fields` (a header, and permissions or role names where
//! etcdctl prints them; `user get` and `user list` have no fields form), `-w protobuf`
//! (the response's encoding) and no `-w table` for any of them (exit code 4 after
//! the call, as etcdctl). `auth enable|disable` print one line in every format.

use skiff_client::prefix_end;
use skiff_proto::authpb::Permission;
use skiff_proto::etcdserverpb::{
    AuthRoleGetResponse, AuthRoleListResponse, AuthUserGetResponse, AuthUserListResponse,
    ResponseHeader,
};
use skiff_proto::Message;

use super::json::{self, Obj};
use super::{go, Format, Printer};

/// etcd's name of a permission type.
fn perm_type(t: i32) -> String {
    match t {
        0 => "READ".into(),
        1 => "WRITE".into(),
        2 => "READWRITE".into(),
        n => n.to_string(),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `authpb.Permission` as JSON.
fn permission_json(p: &Permission) -> String {
    Obj::new()
        .num_oe("permType", p.perm_type)
        .bytes_oe("key", &p.key)
        .bytes_oe("range_end", &p.range_end)
        .end()
}

fn strings_json(v: &[String]) -> Vec<String> {
    v.iter().map(|s| go::json_string(s)).collect()
}

impl Printer {
    /// A response that carries only its header (user add/delete/passwd/grant/revoke,
    /// role add/delete/grant/revoke): `simple` is the simple form's line.
    pub fn auth_header_only<M: Message>(
        &mut self,
        simple: String,
        header: Option<&ResponseHeader>,
        resp: &M,
    ) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => self.line(simple),
            Format::Json => self.line(json::header_only(header)),
            Format::Fields => self.hdr_fields(header),
            Format::Protobuf => self.raw_pb(resp),
            Format::Table => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// `user get <name>` (without `--detail`).
    pub fn user_get(&mut self, name: &str, r: &AuthUserGetResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => {
                let mut s = String::from("Roles:");
                for role in &r.roles {
                    s.push(' ');
                    s.push_str(role);
                }
                self.line(format!("User: {name}"));
                self.line(s);
            }
            Format::Json => self.line(
                Obj::new()
                    .opt("header", r.header.as_ref().map(json::header))
                    .arr_oe("roles", strings_json(&r.roles))
                    .end(),
            ),
            Format::Protobuf => self.raw_pb(r),
            Format::Fields | Format::Table => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// `user list`.
    pub fn user_list(&mut self, r: &AuthUserListResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => r.users.iter().for_each(|u| self.line(u)),
            Format::Json => self.line(
                Obj::new()
                    .opt("header", r.header.as_ref().map(json::header))
                    .arr_oe("users", strings_json(&r.users))
                    .end(),
            ),
            Format::Protobuf => self.raw_pb(r),
            Format::Fields | Format::Table => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// `role list`.
    pub fn role_list(&mut self, r: &AuthRoleListResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => r.roles.iter().for_each(|role| self.line(role)),
            Format::Json => self.line(
                Obj::new()
                    .opt("header", r.header.as_ref().map(json::header))
                    .arr_oe("roles", strings_json(&r.roles))
                    .end(),
            ),
            Format::Fields => {
                self.hdr_fields(r.header.as_ref());
                let mut s = String::from("\"Roles\" :");
                for role in &r.roles {
                    s.push(' ');
                    s.push_str(&go::quote(role.as_bytes()));
                }
                self.line(s);
            }
            Format::Protobuf => self.raw_pb(r),
            Format::Table => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// `role get <role>` (also each role of `user get --detail`).
    pub fn role_get(&mut self, role: &str, r: &AuthRoleGetResponse) -> anyhow::Result<()> {
        match self.format {
            Format::Simple => {
                self.line(format!("Role {role}"));
                self.line("KV Read:");
                for p in r
                    .perm
                    .iter()
                    .filter(|p| p.perm_type == 0 || p.perm_type == 2)
                {
                    self.perm_line(p);
                }
                self.line("KV Write:");
                for p in r
                    .perm
                    .iter()
                    .filter(|p| p.perm_type == 1 || p.perm_type == 2)
                {
                    self.perm_line(p);
                }
            }
            Format::Json => self.line(
                Obj::new()
                    .opt("header", r.header.as_ref().map(json::header))
                    .arr_oe("perm", r.perm.iter().map(permission_json).collect())
                    .end(),
            ),
            Format::Fields => {
                self.hdr_fields(r.header.as_ref());
                for p in &r.perm {
                    self.line(format!("\"PermType\" :  {}", perm_type(p.perm_type)));
                    self.line(format!("\"Key\" : {}", go::quote(&p.key)));
                    self.line(format!("\"RangeEnd\" : {}", go::quote(&p.range_end)));
                }
            }
            Format::Protobuf => self.raw_pb(r),
            Format::Table => return Err(self.unsupported()),
        }
        Ok(())
    }

    /// One permission of the simple `role get`: a key, or a range (`<open ended>` for
    /// `\0`, and "(prefix k)" when the range is exactly a prefix's).
    fn perm_line(&mut self, p: &Permission) {
        let key = lossy(&p.key);
        if p.range_end.is_empty() {
            self.line(format!("\t{key}"));
            return;
        }
        let mut s = if &p.range_end[..] == b"\0" {
            format!("\t[{key}, <open ended>")
        } else {
            format!("\t[{key}, {})", lossy(&p.range_end))
        };
        if prefix_end(&p.key) == p.range_end {
            s.push_str(&format!(" (prefix {key})"));
        }
        self.line(s);
    }
}

/// The simple line of `role revoke-permission`: `key` as given, `end` the range end
/// sent.
pub fn revoked_line(role: &str, key: &str, end: &[u8]) -> String {
    if end.is_empty() {
        format!("Permission of key {key} is revoked from role {role}")
    } else if end == b"\0" {
        format!("Permission of range [{key}, <open ended> is revoked from role {role}")
    } else {
        format!(
            "Permission of range [{key}, {}) is revoked from role {role}",
            lossy(end)
        )
    }
}
