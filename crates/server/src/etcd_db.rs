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
//!   member ID then alarm type, big-endian).
//!
//! Skiff has no auth tables yet: an etcd file's `auth*` buckets are reported by
//! [`EtcdAux::skipped_auth_rows`] and not imported (a user of an etcd with auth enabled
//! is told in the log).
//!
//! Guarantees: a row that does not decode is an error naming the bucket and key (the
//! caller adds the file), never a panic; translation is exact both ways for every
//! field Skiff keeps.

use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message as _;
use serde::{Deserialize, Serialize};
use skiff_proto::etcdserverpb::AlarmMember;
use skiff_proto::leasepb;
use skiff_proto::skiffpb::MemberRecord;
use skiff_storage::backend::Table;
use skiff_storage::bbolt::etcd::{AuxCodec, EtcdRows, SkiffRows};

use crate::alarms::Alarms;
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
    skipped_auth: AtomicU64,
    leases: AtomicU64,
    alarms: AtomicU64,
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

    /// Users, roles, and an `enabled` flag set, that an import left out of etcd's
    /// `authUsers`, `authRoles` and `auth` buckets.
    pub fn skipped_auth_rows(&self) -> u64 {
        self.skipped_auth.load(Ordering::Relaxed)
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
                tracing::warn!("auth rows are not written into etcd snapshots yet");
                Ok(Vec::new())
            }
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
            "auth" | "authUsers" | "authRoles" => {
                // `auth` always holds `authRevision`; what matters is users, roles, and
                // auth being enabled.
                if bucket != "auth" || (key == b"enabled" && value == [1]) {
                    self.skipped_auth.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Vec::new())
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
        let rows = [
            (Table::Lease, lease_key(7), 30i64.to_be_bytes().to_vec()),
            (Table::Members, member_key(rec.id), rec.encode_to_vec()),
            (Table::Alarm, Alarms::key(rec.id, 1), Vec::new()),
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
        assert!(aux.skiff_rows("lease", b"1", b"\xff").is_err());
    }
}
