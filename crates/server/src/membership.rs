//! The member table: who is in the cluster, with the peer URLs they listen on and the
//! name and client URLs they published. One table, owned by the apply thread and
//! persisted in the backend's `members` table (as etcd keeps members in its bolt db):
//!
//! - at bootstrap the initial cluster (`--initial-cluster`, recorded in the WAL
//!   metadata) is written once, when the backend has no member rows yet;
//! - a member publishing its attributes (etcd's publish) and a committed conf change
//!   are applied to the table and written in the same backend transaction as the log
//!   entry that made them, so the table is exactly as new as the consistent index;
//! - an installed snapshot replaces the backend, and the table is reloaded from it.
//!
//! Readers (the Cluster service, lease forwarding to the leader) see an immutable
//! snapshot the apply thread publishes after each change ([`MembersView`]): no lock is
//! shared with the apply thread. The Raft configuration itself is the node loop's
//! business (it applies a conf change when it commits and tells the transport).
//!
//! Guarantees: what `member list` shows survives any restart of any subset of
//! members, names and client URLs included (a member that is down keeps its row).

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message as _;
use skiff_proto::skiffpb::{MemberAttributes, MemberRecord};
use skiff_raft::{ConfChangeType, ConfChangeV2};
use skiff_storage::backend::{BackendError, Table};
use skiff_storage::mvcc::{AuxOp, AuxTable, KvStore};
use tokio::sync::watch;

/// The published member list, sorted by ID.
pub type MembersView = watch::Receiver<Arc<Vec<MemberRecord>>>;

/// Why the table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("corrupt member record in the backend (key {key:?}): {reason}")]
    Corrupt { key: Vec<u8>, reason: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The backend key of a member: its ID in hex, as etcd keys its `members` bucket.
pub fn member_key(id: u64) -> Vec<u8> {
    format!("{id:x}").into_bytes()
}

/// The member table.
pub struct MemberTable {
    members: BTreeMap<u64, MemberRecord>,
    publish: watch::Sender<Arc<Vec<MemberRecord>>>,
}

impl MemberTable {
    /// Opens the table from the backend, first writing `initial` there if the backend
    /// has no member yet (a new member, or a data dir from before the table existed).
    pub fn open(
        store: &KvStore,
        initial: &[MemberRecord],
    ) -> Result<(MemberTable, MembersView), MembershipError> {
        let mut members = load(store)?;
        if members.is_empty() {
            let rows: Vec<_> = initial
                .iter()
                .map(|m| (member_key(m.id), Some(m.encode_to_vec())))
                .collect();
            store.backend().write_rows(Table::Members, &rows)?;
            members = initial.iter().map(|m| (m.id, m.clone())).collect();
        }
        let (publish, view) = watch::channel(Arc::new(Vec::new()));
        let table = MemberTable { members, publish };
        table.publish();
        Ok((table, view))
    }

    /// Reloads the table from the backend (after a snapshot replaced it).
    pub fn reload(&mut self, store: &KvStore) -> Result<(), MembershipError> {
        let members = load(store)?;
        if !members.is_empty() {
            self.members = members;
            self.publish();
        }
        Ok(())
    }

    fn publish(&self) {
        self.publish
            .send_replace(Arc::new(self.members.values().cloned().collect()));
    }

    fn row(&self, id: u64) -> AuxOp {
        AuxOp {
            table: AuxTable::Members,
            key: member_key(id),
            value: self.members.get(&id).map(|m| m.encode_to_vec()),
        }
    }

    /// A member published its name and client URLs: the backend write that records
    /// it (none for an unknown member, e.g. one removed meanwhile).
    pub fn apply_attributes(&mut self, a: &MemberAttributes) -> Vec<AuxOp> {
        let Some(m) = self.members.get_mut(&a.member_id) else {
            return Vec::new();
        };
        if m.name == a.name && m.client_urls == a.client_urls {
            return Vec::new();
        }
        m.name = a.name.clone();
        m.client_urls = a.client_urls.clone();
        self.publish();
        vec![self.row(a.member_id)]
    }

    /// A conf change committed: the member rows it adds, promotes or removes. An added
    /// member's peer URLs travel in the change's context (an encoded `MemberRecord`,
    /// as etcd carries the member in its conf change).
    pub fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> Vec<AuxOp> {
        let proposed = (!cc.context.is_empty())
            .then(|| MemberRecord::decode(cc.context.as_ref()).ok())
            .flatten();
        let mut ops = Vec::new();
        for change in &cc.changes {
            let id = change.node_id;
            match change.change_type {
                ConfChangeType::RemoveNode => {
                    if self.members.remove(&id).is_some() {
                        ops.push(self.row(id));
                    }
                }
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    let learner = change.change_type == ConfChangeType::AddLearnerNode;
                    let entry =
                        self.members.entry(id).or_insert_with(|| {
                            proposed.as_ref().filter(|m| m.id == id).cloned().unwrap_or(
                                MemberRecord {
                                    id,
                                    ..Default::default()
                                },
                            )
                        });
                    entry.is_learner = learner;
                    ops.push(self.row(id));
                }
            }
        }
        if !ops.is_empty() {
            self.publish();
        }
        ops
    }
}

/// Every member row in the backend.
fn load(store: &KvStore) -> Result<BTreeMap<u64, MemberRecord>, MembershipError> {
    let mut members = BTreeMap::new();
    for (key, value) in store.backend().scan(Table::Members)? {
        let m = MemberRecord::decode(value.as_slice()).map_err(|e| MembershipError::Corrupt {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        if key != member_key(m.id) {
            return Err(MembershipError::Corrupt {
                key,
                reason: format!("the record is of member {:x}", m.id),
            });
        }
        members.insert(m.id, m);
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_raft::ConfChangeSingle;
    use skiff_storage::mvcc::StoreConfig;

    fn rec(id: u64, name: &str) -> MemberRecord {
        MemberRecord {
            id,
            name: name.into(),
            peer_urls: vec![format!("http://127.0.0.1:{id}")],
            ..Default::default()
        }
    }

    #[test]
    fn initial_members_are_written_once_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = KvStore::open(&path, StoreConfig::default()).unwrap();
            let (_t, view) = MemberTable::open(&store, &[rec(1, "a"), rec(2, "b")]).unwrap();
            assert_eq!(view.borrow().len(), 2);
        }
        let store = KvStore::open(&path, StoreConfig::default()).unwrap();
        // Different flags on restart do not replace what the backend holds.
        let (_t, view) = MemberTable::open(&store, &[rec(9, "z")]).unwrap();
        let ids: Vec<u64> = view.borrow().iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(view.borrow()[1].name, "b");
    }

    #[test]
    fn attributes_and_conf_changes_produce_rows_and_publish() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(dir.path().join("db"), StoreConfig::default()).unwrap();
        let (mut t, view) = MemberTable::open(&store, &[rec(1, ""), rec(2, "")]).unwrap();
        let a = MemberAttributes {
            member_id: 2,
            name: "two".into(),
            client_urls: vec!["http://127.0.0.1:2379".into()],
        };
        let ops = t.apply_attributes(&a);
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].key, b"2".to_vec());
        let back = MemberRecord::decode(ops[0].value.as_deref().unwrap()).unwrap();
        assert_eq!(back.client_urls, a.client_urls);
        // The same attributes again change nothing.
        assert!(t.apply_attributes(&a).is_empty());
        // Unknown members are ignored.
        assert!(t
            .apply_attributes(&MemberAttributes {
                member_id: 7,
                ..a.clone()
            })
            .is_empty());
        assert_eq!(view.borrow()[1].name, "two");

        let add = ConfChangeV2 {
            changes: vec![ConfChangeSingle {
                change_type: ConfChangeType::AddLearnerNode,
                node_id: 0x1f,
            }],
            context: rec(0x1f, "").encode_to_vec().into(),
            ..Default::default()
        };
        let ops = t.apply_conf_change(&add);
        assert_eq!(ops[0].key, b"1f".to_vec());
        assert!(view.borrow()[2].is_learner);
        assert_eq!(view.borrow()[2].peer_urls, vec!["http://127.0.0.1:31"]);
        let remove = ConfChangeV2::simple(ConfChangeType::RemoveNode, 1);
        let ops = t.apply_conf_change(&remove);
        assert_eq!(ops[0].value, None);
        let ids: Vec<u64> = view.borrow().iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![2, 0x1f]);
    }
}
