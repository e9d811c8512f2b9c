//! The member's own backend tables (leases, members, alarms) in etcd 3.4's encodings,
//! for writing and reading etcd's `db` file (`skiff_storage::bbolt::etcd` does the
//! `key` and `meta` buckets and the file format):
//!
//! - `lease`: key = lease ID (8 bytes big-endian, as Skiff's), value = `leasepb.Lease`
//!   {ID, TTL} (Skiff stores the granted TTL as 8 bytes big-endian);
//! - `members`: key = the member ID in lower-case hex (as Skiff's), value = etcd's JSON
//!   `{"id":N,"peerURLs":[..],"isLearner":true?,"name":"..","clientURLs":[..]}`
//!   (Skiff stores a `skiffpb.MemberRecord`);
//! - `alarm`: key = an encoded `etcdserverpb.AlarmMember`, empty value (Skiff's key is
//!   member ID then alarm type, big-endian);
//! - `auth` (`authEnabled`: one byte, 1 or 0; `authRevision`: u64 big-endian),
//!   `authUsers` (key = user name, value = `authpb.User` {name, bcrypt hash of the
//!   password, roles, options}) and `authRoles` (key = role name, value = `authpb.Role`
//!   {name, keyPermission {permType, key, range_end}}): Skiff's `auth` table holds the
//!   same bytes, each bucket's rows under the key prefix `<bucket>/` (see
//!   `auth::store`). Password hashes are bcrypt (`$2a$` from etcd's Go library, `$2b$`
//!   from Skiff's), which both verify, so users keep their passwords both ways.
//!
//! Guarantees: a row that does not decode is an error naming the bucket and key (the
//! caller adds the file), never a panic; translation is exact both ways for every
//! field Skiff keeps.

use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message as _;
use serde::{Deserialize, Serialize};
use skiff_proto::authpb::{Role, User};
use skiff_proto::etcdserverpb::AlarmMember;
use skiff_proto::leasepb;
use skiff_proto::skiffpb::MemberRecord;
use skiff_storage::backend::Table;
use skiff_storage::bbolt::etcd::{AuxCodec, EtcdRows, SkiffRows};

use crate::alarms::Alarms;
use crate::auth::store::{AUTH_BUCKETS, KEY_ENABLED, KEY_REVISION};
use crate::lease::lease_key;
use crate::membership::member_key;

/// etcd 3.4's member JSON (`membership.Member`).
#[derive(Serialize, Deserialize)]
struct EtcdMember {
    id: u64,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(
        rename = "isLearner",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    is_learner: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(rename = "clientURLs", default, skip_serializing_if = "Vec::is_empty")]
    client_urls: Vec<String>,
}

/// The translation between Skiff's server tables and etcd's buckets.
#[derive(Default)]
pub struct EtcdAux {
    skip_members: bool,
    leases: AtomicU64,
    alarms: AtomicU64,
    users: AtomicU64,
    roles: AtomicU64,
    auth_enabled: AtomicU64,
}

impl EtcdAux {
    /// For importing a data dir that `etcdctl snapshot restore` laid out: its `members`
    /// rows are the source cluster's, not the restored one's (which the flags give), so
    /// they are left out.
    pub fn for_import() -> EtcdAux {
        EtcdAux {
            skip_members: true,
            ..Default::default()
        }
    }

    /// Leases read from etcd rows so far.
    pub fn imported_leases(&self) -> u64 {
        self.leases.load(Ordering::Relaxed)
    }

    /// Alarms read from etcd rows so far.
    pub fn imported_alarms(&self) -> u64 {
        self.alarms.load(Ordering::Relaxed)
    }

    /// Users read from etcd rows so far.
    pub fn imported_users(&self) -> u64 {
        self.users.load(Ordering::Relaxed)
    }

    /// Roles read from etcd rows so far.
    pub fn imported_roles(&self) -> u64 {
        self.roles.load(Ordering::Relaxed)
    }

    /// Whether an `authEnabled` row read so far said auth is on.
    pub fn imported_auth_enabled(&self) -> bool {
        self.auth_enabled.load(Ordering::Relaxed) > 0
    }
}

/// Skiff's `auth` table key of etcd's row `key` in `bucket`.
fn auth_row(bucket: &str, key: &[u8]) -> Vec<u8> {
    [bucket.as_bytes(), b"/", key].concat()
}

/// The name an `authpb.User` or `authpb.Role` row must carry: its key.
fn named(name: &[u8], key: &[u8], what: &str) -> Result<(), String> {
    if name == key {
        Ok(())
    } else {
        Err(format!(
            "the record is of {what} {:?}",
            String::from_utf8_lossy(name)
        ))
    }
}

fn be8(b: &[u8], what: &str) -> Result<[u8; 8], String> {
    b.try_into()
        .map_err(|_| format!("{what} of {} bytes, not 8", b.len()))
}

impl AuxCodec for EtcdAux {
    fn etcd_rows(&self, table: Table, key: &[u8], value: &[u8]) -> Result<EtcdRows, String> {
        match table {
            Table::Lease => {
                let id = i64::from_be_bytes(be8(key, "lease key")?);
                let ttl = i64::from_be_bytes(be8(value, "lease TTL")?);
                let rec = leasepb::Lease {
                    id,
                    ttl,
                    remaining_ttl: 0,
                };
                Ok(vec![("lease", key.to_vec(), rec.encode_to_vec())])
            }
            Table::Members => {
                let m = MemberRecord::decode(value).map_err(|e| e.to_string())?;
                let json = serde_json::to_vec(&EtcdMember {
                    id: m.id,
                    peer_urls: m.peer_urls,
                    is_learner: m.is_learner,
                    name: m.name,
                    client_urls: m.client_urls,
                })
                .map_err(|e| e.to_string())?;
                Ok(vec![("members", member_key(m.id), json)])
            }
            Table::Alarm => {
                let (member_id, alarm) = Alarms::parse_key(key)
                    .ok_or_else(|| format!("alarm key of {} bytes, not 12", key.len()))?;
                let am = AlarmMember { member_id, alarm };
                Ok(vec![("alarm", am.encode_to_vec(), Vec::new())])
            }
            Table::Auth => {
                // `<bucket>/<key>`: the bucket is the part before the first '/'.
                let at = key
                    .iter()
                    .position(|b| *b == b'/')
                    .ok_or("an auth row without its bucket prefix")?;
                let bucket = AUTH_BUCKETS
                    .iter()
                    .find(|b| b.as_bytes() == &key[..at])
                    .ok_or_else(|| {
                        format!(
                            "auth row of unknown bucket {:?}",
                            String::from_utf8_lossy(&key[..at])
                        )
                    })?;
                Ok(vec![(*bucket, key[at + 1..].to_vec(), value.to_vec())])
            }
            // etcd has no client sessions: an etcd-format snapshot leaves them out, so a
            // member restored from one refuses those sessions' retries (their leases
            // are kept, their session marks are not) rather than applying them again.
            Table::Session => Ok(Vec::new()),
            Table::Key | Table::Meta => Err(format!("{} is not a server table", table.name())),
        }
    }

    fn skiff_rows(&self, bucket: &str, key: &[u8], value: &[u8]) -> Result<SkiffRows, String> {
        match bucket {
            "lease" => {
                let l = leasepb::Lease::decode(value).map_err(|e| e.to_string())?;
                if lease_key(l.id) != key {
                    return Err(format!("the record is of lease {:x}", l.id));
                }
                self.leases.fetch_add(1, Ordering::Relaxed);
                Ok(vec![(
                    Table::Lease,
                    key.to_vec(),
                    l.ttl.to_be_bytes().to_vec(),
                )])
            }
            "members" if self.skip_members => Ok(Vec::new()),
            "members" => {
                let m: EtcdMember = serde_json::from_slice(value).map_err(|e| e.to_string())?;
                if member_key(m.id) != key {
                    return Err(format!("the record is of member {:x}", m.id));
                }
                let rec = MemberRecord {
                    id: m.id,
                    name: m.name,
                    peer_urls: m.peer_urls,
                    client_urls: m.client_urls,
                    is_learner: m.is_learner,
                };
                Ok(vec![(Table::Members, key.to_vec(), rec.encode_to_vec())])
            }
            "alarm" => {
                let am = AlarmMember::decode(key).map_err(|e| e.to_string())?;
                self.alarms.fetch_add(1, Ordering::Relaxed);
                Ok(vec![(
                    Table::Alarm,
                    Alarms::key(am.member_id, am.alarm),
                    Vec::new(),
                )])
            }
            "auth" => {
                let row = auth_row("auth", key);
                if row == KEY_ENABLED {
                    if value != [0] && value != [1] {
                        return Err(format!("authEnabled of {value:?}, not [0] or [1]"));
                    }
                    self.auth_enabled
                        .store(u64::from(value[0]), Ordering::Relaxed);
                } else if row == KEY_REVISION {
                    be8(value, "authRevision")?;
                } else {
                    return Err("not a key of etcd 3.4's auth bucket".into());
                }
                Ok(vec![(Table::Auth, row, value.to_vec())])
            }
            "authUsers" => {
                let u = User::decode(value).map_err(|e| e.to_string())?;
                named(&u.name, key, "user")?;
                self.users.fetch_add(1, Ordering::Relaxed);
                Ok(vec![(Table::Auth, auth_row(bucket, key), value.to_vec())])
            }
            "authRoles" => {
                let r = Role::decode(value).map_err(|e| e.to_string())?;
                named(&r.name, key, "role")?;
                self.roles.fetch_add(1, Ordering::Relaxed);
                Ok(vec![(Table::Auth, auth_row(bucket, key), value.to_vec())])
            }
            other => Err(format!("{other} is not a bucket this import reads")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_translate_both_ways() {
        let aux = EtcdAux::default();
        let rec = MemberRecord {
            id: 0x8e9e05c52164694d,
            name: "m1".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec!["http://127.0.0.1:2379".into()],
            is_learner: false,
        };
        let user = User {
            name: "alice".into(),
            password: "$2a$10$abcdefghijklmnopqrstuu5Q0VjHsZcHbDdBbVVYZ8lL0ALqkMhA6".into(),
            roles: vec!["r".into()],
            options: None,
        };
        let role = Role {
            name: "r".into(),
            key_permission: vec![skiff_proto::authpb::Permission {
                perm_type: 2,
                key: "a/".into(),
                range_end: "a0".into(),
            }],
        };
        let rows = [
            (Table::Lease, lease_key(7), 30i64.to_be_bytes().to_vec()),
            (Table::Members, member_key(rec.id), rec.encode_to_vec()),
            (Table::Alarm, Alarms::key(rec.id, 1), Vec::new()),
            (Table::Auth, KEY_ENABLED.to_vec(), vec![1]),
            (
                Table::Auth,
                KEY_REVISION.to_vec(),
                5u64.to_be_bytes().to_vec(),
            ),
            (
                Table::Auth,
                b"authUsers/alice".to_vec(),
                user.encode_to_vec(),
            ),
            (Table::Auth, b"authRoles/r".to_vec(), role.encode_to_vec()),
        ];
        for (table, k, v) in rows {
            let etcd = aux.etcd_rows(table, &k, &v).unwrap();
            assert_eq!(etcd.len(), 1);
            let (bucket, ek, ev) = &etcd[0];
            let back = aux.skiff_rows(bucket, ek, ev).unwrap();
            assert_eq!(back, vec![(table, k, v)]);
        }
        // etcd's own member JSON (a 3.4 member's row) reads.
        let json = br#"{"id":10276657743932975437,"peerURLs":["http://localhost:2380"],"name":"default","clientURLs":["http://localhost:2379"]}"#;
        let got = aux
            .skiff_rows("members", b"8e9e05c52164694d", json)
            .unwrap();
        let m = MemberRecord::decode(got[0].2.as_slice()).unwrap();
        assert_eq!((m.id, m.name.as_str()), (0x8e9e05c52164694d, "default"));
        assert!(aux.skiff_rows("members", b"1", json).is_err());
        // etcd's bucket keys, and nothing else, are read.
        let etcd = aux.etcd_rows(Table::Auth, KEY_ENABLED, &[1]).unwrap();
        assert_eq!(etcd, vec![("auth", b"authEnabled".to_vec(), vec![1])]);
        assert!(aux.skiff_rows("auth", b"enabled", &[1]).is_err());
        assert!(aux.skiff_rows("auth", b"authEnabled", &[2]).is_err());
        assert!(aux.skiff_rows("auth", b"authRevision", &[1]).is_err());
        assert!(aux
            .skiff_rows("authUsers", b"bob", &user.encode_to_vec())
            .is_err());
        assert!(aux.skiff_rows("authRoles", b"r", b"\xff").is_err());
        assert_eq!((aux.imported_users(), aux.imported_roles()), (1, 1));
        assert!(aux.imported_auth_enabled());
        assert!(aux.skiff_rows("lease", b"1", b"\xff").is_err());
    }
}
