//! The auth store's state: whether auth is on, its revision, the users and the roles,
//! changed only by the apply thread (one [`AuthStore::apply`] per committed auth
//! request, so every member holds the same state) and read by requests through
//! published immutable snapshots ([`AuthStore::view`]).
//!
//! Persisted in the backend's `auth` table, in etcd's bucket layout and encodings, each
//! etcd bucket under a key prefix: `auth/authEnabled` (one byte, 1 or 0),
//! `auth/authRevision` (u64 big-endian), `authUsers/<name>` (an `authpb.User`) and
//! `authRoles/<name>` (an `authpb.Role`); a translation to etcd's bolt file only
//! splits the prefixes into buckets. Every change but enabling auth bumps the revision
//! (etcd's `commitRevision`; etcd's `AuthEnable` keeps it, and `jwt` tokens carry it, so
//! it must count as etcd's does), written in the same transaction as the change; a
//! fresh store starts at revision 1, so revision 0 always means "not checked", and a
//! store with auth on (it has a root user) is past revision 1.
//!
//! Errors are etcd's, in etcd's order of checks (auth/store.go of etcd 3.4).

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message as _;
use skiff_api::EtcdError;
use skiff_proto::authpb::{Permission, Role, User, UserAddOptions};
use skiff_proto::etcdserverpb as pb;
use skiff_storage::mvcc::{AuxOp, AuxTable};

use super::perms::{self, Need};

/// The user whose existence (with the root role) auth enable requires.
pub const ROOT_USER: &str = "root";
/// The role that may do everything.
pub const ROOT_ROLE: &str = "root";

/// etcd's auth buckets; each one's rows are under the key prefix `<bucket>/`.
pub const AUTH_BUCKETS: [&str; 3] = ["auth", "authUsers", "authRoles"];
pub const KEY_ENABLED: &[u8] = b"auth/authEnabled";
pub const KEY_REVISION: &[u8] = b"auth/authRevision";
const USERS: &[u8] = b"authUsers/";
const ROLES: &[u8] = b"authRoles/";

/// A change of the auth store, as proposed through Raft.
#[derive(Debug, Clone)]
pub enum AuthChange {
    Enable,
    Disable,
    UserAdd(pb::AuthUserAddRequest),
    UserDelete(pb::AuthUserDeleteRequest),
    UserChangePassword(pb::AuthUserChangePasswordRequest),
    UserGrantRole(pb::AuthUserGrantRoleRequest),
    UserRevokeRole(pb::AuthUserRevokeRoleRequest),
    RoleAdd(pb::AuthRoleAddRequest),
    RoleDelete(pb::AuthRoleDeleteRequest),
    RoleGrantPermission(pb::AuthRoleGrantPermissionRequest),
    RoleRevokePermission(pb::AuthRoleRevokePermissionRequest),
}

/// What a change did besides the rows it wrote: which tokens stop being valid.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Invalidate {
    /// Tokens of this user (password changed, user deleted).
    pub user: Option<String>,
    /// Every token (auth disabled).
    pub all: bool,
}

/// The auth store's state.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthStore {
    pub enabled: bool,
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
}

impl Default for AuthStore {
    fn default() -> AuthStore {
        AuthStore {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

/// Why the backend's auth rows could not be read.
#[derive(Debug, thiserror::Error)]
#[error("auth table row {key:?}: {reason}")]
pub struct AuthRowError {
    pub key: String,
    pub reason: String,
}

fn aux(key: Vec<u8>, value: Option<Vec<u8>>) -> AuxOp {
    AuxOp {
        table: AuxTable::Auth,
        key,
        value,
    }
}

fn prefixed(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

fn has_root_role(u: &User) -> bool {
    u.roles.iter().any(|r| r == ROOT_ROLE)
}

impl AuthStore {
    /// Rebuilds the state from the backend's `auth` rows (none: a fresh store).
    pub fn from_rows(rows: &[(Vec<u8>, Vec<u8>)]) -> Result<AuthStore, AuthRowError> {
        let mut s = AuthStore::default();
        for (k, v) in rows {
            let bad = |reason: &str| AuthRowError {
                key: String::from_utf8_lossy(k).into_owned(),
                reason: reason.to_string(),
            };
            if k == KEY_ENABLED {
                s.enabled = v.first() == Some(&1);
            } else if k == KEY_REVISION {
                let b: [u8; 8] = v.as_slice().try_into().map_err(|_| bad("not 8 bytes"))?;
                s.revision = u64::from_be_bytes(b);
            } else if let Some(name) = k.strip_prefix(USERS) {
                let u = User::decode(v.as_slice()).map_err(|e| bad(&e.to_string()))?;
                s.users
                    .insert(String::from_utf8_lossy(name).into_owned(), u);
            } else if let Some(name) = k.strip_prefix(ROLES) {
                let r = Role::decode(v.as_slice()).map_err(|e| bad(&e.to_string()))?;
                s.roles
                    .insert(String::from_utf8_lossy(name).into_owned(), r);
            } else {
                return Err(bad("unknown key"));
            }
        }
        Ok(s)
    }

    fn user_row(&self, name: &str) -> AuxOp {
        aux(
            prefixed(USERS, name),
            self.users.get(name).map(|u| u.encode_to_vec()),
        )
    }

    fn role_row(&self, name: &str) -> AuxOp {
        aux(
            prefixed(ROLES, name),
            self.roles.get(name).map(|r| r.encode_to_vec()),
        )
    }

    /// Bumps the revision (etcd's commitRevision) and returns its row.
    fn commit_revision(&mut self) -> AuxOp {
        self.revision += 1;
        aux(
            KEY_REVISION.to_vec(),
            Some(self.revision.to_be_bytes().to_vec()),
        )
    }

    /// Applies one committed change: the backend rows to write with it (the revision
    /// included), and the tokens it invalidates; or etcd's error, with nothing changed.
    pub fn apply(&mut self, change: &AuthChange) -> Result<(Vec<AuxOp>, Invalidate), EtcdError> {
        let mut rows = Vec::new();
        let mut inval = Invalidate::default();
        match change {
            AuthChange::Enable => {
                if self.enabled {
                    return Ok((rows, inval));
                }
                let root = self
                    .users
                    .get(ROOT_USER)
                    .ok_or(EtcdError::RootUserNotExist)?;
                if !has_root_role(root) {
                    return Err(EtcdError::RootRoleNotExist);
                }
                self.enabled = true;
                rows.push(aux(KEY_ENABLED.to_vec(), Some(vec![1])));
                // etcd's AuthEnable keeps the revision.
                return Ok((rows, inval));
            }
            AuthChange::Disable => {
                if !self.enabled {
                    return Ok((rows, inval));
                }
                self.enabled = false;
                rows.push(aux(KEY_ENABLED.to_vec(), Some(vec![0])));
                inval.all = true;
            }
            AuthChange::UserAdd(r) => {
                if r.name.is_empty() {
                    return Err(EtcdError::UserEmpty);
                }
                if self.users.contains_key(&r.name) {
                    return Err(EtcdError::UserAlreadyExist);
                }
                let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
                let password = if no_password {
                    Bytes::new()
                } else {
                    Bytes::from(r.hashed_password.clone().into_bytes())
                };
                self.users.insert(
                    r.name.clone(),
                    User {
                        name: Bytes::from(r.name.clone().into_bytes()),
                        password,
                        roles: Vec::new(),
                        options: Some(UserAddOptions { no_password }),
                    },
                );
                rows.push(self.user_row(&r.name));
            }
            AuthChange::UserDelete(r) => {
                if self.enabled && r.name == ROOT_USER {
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                if self.users.remove(&r.name).is_none() {
                    return Err(EtcdError::UserNotFound);
                }
                rows.push(self.user_row(&r.name));
                inval.user = Some(r.name.clone());
            }
            AuthChange::UserChangePassword(r) => {
                let u = self.users.get_mut(&r.name).ok_or(EtcdError::UserNotFound)?;
                u.password = Bytes::from(r.hashed_password.clone().into_bytes());
                rows.push(self.user_row(&r.name));
                inval.user = Some(r.name.clone());
            }
            AuthChange::UserGrantRole(r) => {
                if !self.users.contains_key(&r.user) {
                    return Err(EtcdError::UserNotFound);
                }
                if r.role != ROOT_ROLE && !self.roles.contains_key(&r.role) {
                    return Err(EtcdError::RoleNotFound);
                }
                let u = self.users.get_mut(&r.user).ok_or(EtcdError::UserNotFound)?;
                match u.roles.binary_search(&r.role) {
                    // Granting a granted role is no change (etcd ignores it).
                    Ok(_) => return Ok((rows, inval)),
                    Err(at) => u.roles.insert(at, r.role.clone()),
                }
                rows.push(self.user_row(&r.user));
            }
            AuthChange::UserRevokeRole(r) => {
                if self.enabled && r.name == ROOT_USER && r.role == ROOT_ROLE {
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(&r.name).ok_or(EtcdError::UserNotFound)?;
                let at = u
                    .roles
                    .iter()
                    .position(|x| *x == r.role)
                    .ok_or(EtcdError::RoleNotGranted)?;
                u.roles.remove(at);
                rows.push(self.user_row(&r.name));
            }
            AuthChange::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(EtcdError::RoleEmpty);
                }
                if self.roles.contains_key(&r.name) {
                    return Err(EtcdError::RoleAlreadyExist);
                }
                self.roles.insert(
                    r.name.clone(),
                    Role {
                        name: Bytes::from(r.name.clone().into_bytes()),
                        key_permission: Vec::new(),
                    },
                );
                rows.push(self.role_row(&r.name));
            }
            AuthChange::RoleDelete(r) => {
                if self.enabled && r.role == ROOT_ROLE {
                    return Err(EtcdError::InvalidAuthMgmt);
                }
                if self.roles.remove(&r.role).is_none() {
                    return Err(EtcdError::RoleNotFound);
                }
                rows.push(self.role_row(&r.role));
                // The role leaves every user that had it.
                let holders: Vec<String> = self
                    .users
                    .iter()
                    .filter(|(_, u)| u.roles.contains(&r.role))
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in holders {
                    if let Some(u) = self.users.get_mut(&name) {
                        u.roles.retain(|x| *x != r.role);
                    }
                    rows.push(self.user_row(&name));
                }
            }
            AuthChange::RoleGrantPermission(r) => {
                let role = self.roles.get_mut(&r.name).ok_or(EtcdError::RoleNotFound)?;
                let perm = r.perm.clone().unwrap_or_default();
                match role
                    .key_permission
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    Some(p) => p.perm_type = perm.perm_type,
                    None => {
                        role.key_permission.push(perm);
                        role.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
                    }
                }
                rows.push(self.role_row(&r.name));
            }
            AuthChange::RoleRevokePermission(r) => {
                let role = self.roles.get_mut(&r.role).ok_or(EtcdError::RoleNotFound)?;
                let before = role.key_permission.len();
                role.key_permission
                    .retain(|p| !(p.key == r.key && p.range_end == r.range_end));
                if role.key_permission.len() == before {
                    return Err(EtcdError::PermissionNotGranted);
                }
                rows.push(self.role_row(&r.role));
            }
        }
        rows.push(self.commit_revision());
        Ok((rows, inval))
    }

    /// The permissions of every role of `user` (none for an unknown user).
    fn permissions<'a>(&'a self, user: &'a User) -> impl Iterator<Item = &'a Permission> + 'a {
        user.roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.key_permission.iter())
    }

    /// Whether `user` holds the root role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(has_root_role)
    }

    /// etcd's `isOpPermitted`: may `user` do `need` on `[key, range_end)`?
    pub fn check(
        &self,
        user: &str,
        need: Need,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), EtcdError> {
        let u = self.users.get(user).ok_or(EtcdError::PermissionDenied)?;
        if has_root_role(u) || perms::covers(self.permissions(u), need, key, range_end) {
            Ok(())
        } else {
            Err(EtcdError::PermissionDenied)
        }
    }

    /// etcd's `IsAdminPermitted`: is `user` root?
    pub fn check_admin(&self, user: &str) -> Result<(), EtcdError> {
        let u = self.users.get(user).ok_or(EtcdError::UserNotFound)?;
        if has_root_role(u) {
            Ok(())
        } else {
            Err(EtcdError::PermissionDenied)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_add(s: &mut AuthStore, name: &str) -> Result<(), EtcdError> {
        s.apply(&AuthChange::UserAdd(pb::AuthUserAddRequest {
            name: name.into(),
            hashed_password: "h".into(),
            ..Default::default()
        }))
        .map(|_| ())
    }

    fn grant(s: &mut AuthStore, user: &str, role: &str) -> Result<(), EtcdError> {
        s.apply(&AuthChange::UserGrantRole(pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        }))
        .map(|_| ())
    }

    #[test]
    fn enable_needs_root_with_root_role_and_root_stays() {
        let mut s = AuthStore::default();
        assert_eq!(
            s.apply(&AuthChange::Enable).unwrap_err(),
            EtcdError::RootUserNotExist
        );
        user_add(&mut s, "root").unwrap();
        assert_eq!(
            s.apply(&AuthChange::Enable).unwrap_err(),
            EtcdError::RootRoleNotExist
        );
        assert_eq!(grant(&mut s, "root", "nope"), Err(EtcdError::RoleNotFound));
        grant(&mut s, "root", "root").unwrap();
        let rev = s.revision;
        s.apply(&AuthChange::Enable).unwrap();
        assert!(s.enabled);
        assert_eq!(s.revision, rev, "etcd's AuthEnable keeps the revision");
        let del = AuthChange::UserDelete(pb::AuthUserDeleteRequest {
            name: "root".into(),
        });
        assert_eq!(s.apply(&del).unwrap_err(), EtcdError::InvalidAuthMgmt);
        let (_, inval) = s.apply(&AuthChange::Disable).unwrap();
        assert!(inval.all);
        s.apply(&del).unwrap();
    }

    #[test]
    fn rows_round_trip_and_errors_change_nothing() {
        let mut s = AuthStore::default();
        let mut rows = std::collections::BTreeMap::new();
        let mut run = |s: &mut AuthStore, c: AuthChange| {
            let r = s.apply(&c);
            if let Ok((ops, _)) = &r {
                for op in ops {
                    match &op.value {
                        Some(v) => rows.insert(op.key.clone(), v.clone()),
                        None => rows.remove(&op.key),
                    };
                }
            }
            r.map(|_| ())
        };
        run(
            &mut s,
            AuthChange::RoleAdd(pb::AuthRoleAddRequest { name: "r".into() }),
        )
        .unwrap();
        let before = s.clone();
        assert_eq!(
            run(
                &mut s,
                AuthChange::RoleAdd(pb::AuthRoleAddRequest { name: "r".into() })
            ),
            Err(EtcdError::RoleAlreadyExist)
        );
        assert_eq!(s, before);
        run(
            &mut s,
            AuthChange::RoleGrantPermission(pb::AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: Some(Permission {
                    perm_type: 0,
                    key: Bytes::from_static(b"k"),
                    range_end: Bytes::new(),
                }),
            }),
        )
        .unwrap();
        let rows: Vec<_> = rows.into_iter().collect();
        assert_eq!(AuthStore::from_rows(&rows).unwrap(), s);
    }

    #[test]
    fn permission_checks_use_every_role() {
        let mut s = AuthStore::default();
        user_add(&mut s, "u").unwrap();
        for (role, key) in [("a", "x"), ("b", "y")] {
            s.apply(&AuthChange::RoleAdd(pb::AuthRoleAddRequest {
                name: role.into(),
            }))
            .unwrap();
            s.apply(&AuthChange::RoleGrantPermission(
                pb::AuthRoleGrantPermissionRequest {
                    name: role.into(),
                    perm: Some(Permission {
                        perm_type: 2,
                        key: Bytes::from(key.to_string()),
                        range_end: Bytes::new(),
                    }),
                },
            ))
            .unwrap();
            grant(&mut s, "u", role).unwrap();
        }
        assert!(s.check("u", Need::Write, b"x", b"").is_ok());
        assert!(s.check("u", Need::Read, b"y", b"").is_ok());
        assert_eq!(
            s.check("u", Need::Read, b"z", b""),
            Err(EtcdError::PermissionDenied)
        );
        assert_eq!(
            s.check("nobody", Need::Read, b"x", b""),
            Err(EtcdError::PermissionDenied)
        );
        assert_eq!(s.check_admin("u"), Err(EtcdError::PermissionDenied));
        assert_eq!(s.check_admin("nobody"), Err(EtcdError::UserNotFound));
        s.apply(&AuthChange::RoleDelete(pb::AuthRoleDeleteRequest {
            role: "a".into(),
        }))
        .unwrap();
        assert_eq!(s.users["u"].roles, vec!["b".to_string()]);
    }
}
