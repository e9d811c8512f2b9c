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
//!
//! Membership changes (etcd's add, remove, promote) are Raft conf changes whose context
//! is a [`ConfChangeContext`]. Whether a committed change takes effect is decided by
//! [`check_change`] from the membership as of the change's place in the log: the node
//! loop asks it of Raft's configuration (and skips a refused change), the apply thread
//! of this table (and answers the refusal), and since the table and Raft's
//! configuration change only together the two always agree. Checks that need more
//! than IDs and learner flags (peer URLs in use, started members, connectivity) are
//! made by the request side before proposing, as etcd makes them.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message as _;
use skiff_api::EtcdError;
use skiff_proto::skiffpb::{ConfChangeContext, MemberAttributes, MemberRecord, MemberUpdate};
use skiff_raft::{ConfChangeType, ConfChangeV2};
use skiff_storage::backend::{Backend, BackendError, Table};
use skiff_storage::mvcc::{AuxOp, AuxTable, KvStore};
use tokio::sync::watch;

/// The published member list, sorted by ID.
pub type MembersView = watch::Receiver<Arc<Vec<MemberRecord>>>;

/// The most learners a cluster may have (etcd 3.4: one).
pub const MAX_LEARNERS: usize = 1;

/// What a membership conf change asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new member, voter or learner.
    Add { learner: bool },
    /// A learner becomes a voter.
    Promote,
    /// A member leaves.
    Remove,
}

/// A membership conf change as proposed by the request side: one change with a
/// [`ConfChangeContext`].
#[derive(Debug, Clone)]
pub struct MemberChange {
    pub id: u64,
    pub kind: ChangeKind,
    pub context: ConfChangeContext,
}

impl MemberChange {
    /// The change `cc` describes, if it is one this module proposes (one change with a
    /// context); `None` for anything else (such a change is applied unchecked).
    pub fn decode(cc: &ConfChangeV2) -> Option<MemberChange> {
        let [change] = cc.changes.as_slice() else {
            return None;
        };
        if cc.context.is_empty() {
            return None;
        }
        let context = ConfChangeContext::decode(cc.context.as_ref()).ok()?;
        let kind = match change.change_type {
            ConfChangeType::RemoveNode => ChangeKind::Remove,
            ConfChangeType::AddNode if context.is_promote => ChangeKind::Promote,
            ConfChangeType::AddNode => ChangeKind::Add { learner: false },
            ConfChangeType::AddLearnerNode => ChangeKind::Add { learner: true },
        };
        Some(MemberChange {
            id: change.node_id,
            kind,
            context,
        })
    }

    /// The conf change to propose.
    pub fn encode(&self) -> ConfChangeV2 {
        let change_type = match self.kind {
            ChangeKind::Add { learner: true } => ConfChangeType::AddLearnerNode,
            ChangeKind::Add { learner: false } | ChangeKind::Promote => ConfChangeType::AddNode,
            ChangeKind::Remove => ConfChangeType::RemoveNode,
        };
        ConfChangeV2 {
            context: self.context.encode_to_vec().into(),
            ..ConfChangeV2::simple(change_type, self.id)
        }
    }
}

/// Whether `change` takes effect, given the membership before it: `lookup(id)` says
/// whether a member exists and is a learner, `learners` how many learners there are.
/// The same answer from Raft's configuration and from the member table (see the
/// module docs); the errors are etcd's.
pub fn check_change(
    change: &MemberChange,
    lookup: impl Fn(u64) -> Option<bool>,
    learners: usize,
) -> Result<(), EtcdError> {
    match change.kind {
        ChangeKind::Add { learner } => {
            if lookup(change.id).is_some() {
                return Err(EtcdError::MemberExist);
            }
            if learner && learners + 1 > MAX_LEARNERS {
                return Err(EtcdError::TooManyLearners);
            }
            Ok(())
        }
        ChangeKind::Promote => match lookup(change.id) {
            None => Err(EtcdError::MemberNotFound),
            Some(false) => Err(EtcdError::MemberNotLearner),
            Some(true) => Ok(()),
        },
        ChangeKind::Remove => match lookup(change.id) {
            None => Err(EtcdError::MemberNotFound),
            Some(_) => Ok(()),
        },
    }
}

/// Whether one of `members` already has one of `urls` as a peer URL (etcd's
/// `ErrPeerURLexists`): asked by member add before proposing and by member update
/// when it applies.
pub fn peer_urls_taken<'a>(
    members: impl IntoIterator<Item = &'a MemberRecord>,
    urls: &[String],
) -> bool {
    members
        .into_iter()
        .any(|m| m.peer_urls.iter().any(|p| urls.contains(p)))
}

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
        let mut members = load(store.backend())?;
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
        let members = load(store.backend())?;
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

    /// The current members, sorted by ID.
    pub fn list(&self) -> Vec<MemberRecord> {
        self.members.values().cloned().collect()
    }

    /// A committed conf change: the backend rows it changes, and its result for the
    /// request that proposed it. A membership change ([`MemberChange`]) is checked
    /// first ([`check_change`]) and changes nothing when refused.
    pub fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> (Vec<AuxOp>, Result<(), EtcdError>) {
        if let Some(change) = MemberChange::decode(cc) {
            let learners = self.members.values().filter(|m| m.is_learner).count();
            let members = &self.members;
            if let Err(e) = check_change(
                &change,
                |id| members.get(&id).map(|m| m.is_learner),
                learners,
            ) {
                return (Vec::new(), Err(e));
            }
        }
        (self.apply_raft_change(cc), Ok(()))
    }

    /// A member's new peer URLs (etcd's member update): the backend row, or etcd's
    /// error (an unknown member; a URL another member has).
    pub fn apply_update(&mut self, u: &MemberUpdate) -> Result<Vec<AuxOp>, EtcdError> {
        if !self.members.contains_key(&u.member_id) {
            return Err(EtcdError::MemberNotFound);
        }
        let others = self.members.values().filter(|m| m.id != u.member_id);
        if peer_urls_taken(others, &u.peer_urls) {
            return Err(EtcdError::PeerUrlExist);
        }
        let Some(m) = self.members.get_mut(&u.member_id) else {
            return Err(EtcdError::MemberNotFound);
        };
        m.peer_urls = u.peer_urls.clone();
        self.publish();
        Ok(vec![self.row(u.member_id)])
    }

    /// The rows of a conf change Raft applied. An added member's peer URLs travel in
    /// the change's context, as etcd carries the member in its conf change.
    fn apply_raft_change(&mut self, cc: &ConfChangeV2) -> Vec<AuxOp> {
        let proposed = (!cc.context.is_empty())
            .then(|| ConfChangeContext::decode(cc.context.as_ref()).ok())
            .flatten()
            .and_then(|c| c.member);
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
/// The member table as the backend holds it (checked: each row is the member its key
/// names).
pub fn load(backend: &Backend) -> Result<BTreeMap<u64, MemberRecord>, MembershipError> {
    let mut members = BTreeMap::new();
    for (key, value) in backend.scan(Table::Members)? {
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

        let add = MemberChange {
            id: 0x1f,
            kind: ChangeKind::Add { learner: true },
            context: ConfChangeContext {
                request_id: 9,
                member: Some(rec(0x1f, "")),
                is_promote: false,
            },
        };
        let (ops, result) = t.apply_conf_change(&add.encode());
        assert_eq!(result, Ok(()));
        assert_eq!(ops[0].key, b"1f".to_vec());
        assert!(view.borrow()[2].is_learner);
        assert_eq!(view.borrow()[2].peer_urls, vec!["http://127.0.0.1:31"]);
        // The same member again, or a second learner: refused, nothing written.
        assert_eq!(
            t.apply_conf_change(&add.encode()),
            (Vec::new(), Err(EtcdError::MemberExist))
        );
        let second = MemberChange {
            id: 0x20,
            ..add.clone()
        };
        assert_eq!(
            t.apply_conf_change(&second.encode()),
            (Vec::new(), Err(EtcdError::TooManyLearners))
        );
        // Promotion: only of a learner.
        let promote = |id| MemberChange {
            id,
            kind: ChangeKind::Promote,
            context: ConfChangeContext {
                request_id: 10,
                member: None,
                is_promote: true,
            },
        };
        assert_eq!(
            t.apply_conf_change(&promote(2).encode()).1,
            Err(EtcdError::MemberNotLearner)
        );
        assert_eq!(
            t.apply_conf_change(&promote(7).encode()).1,
            Err(EtcdError::MemberNotFound)
        );
        let (ops, result) = t.apply_conf_change(&promote(0x1f).encode());
        assert_eq!((ops.len(), result), (1, Ok(())));
        assert!(!view.borrow()[2].is_learner);
        assert_eq!(
            view.borrow()[2].peer_urls,
            vec!["http://127.0.0.1:31"],
            "kept on promotion"
        );

        let remove = ConfChangeV2::simple(ConfChangeType::RemoveNode, 1);
        let (ops, _) = t.apply_conf_change(&remove);
        assert_eq!(ops[0].value, None);
        let ids: Vec<u64> = view.borrow().iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![2, 0x1f]);
        let remove = MemberChange {
            id: 1,
            kind: ChangeKind::Remove,
            context: ConfChangeContext {
                request_id: 11,
                ..Default::default()
            },
        };
        assert_eq!(
            t.apply_conf_change(&remove.encode()).1,
            Err(EtcdError::MemberNotFound)
        );
    }

    #[test]
    fn updates_check_ids_and_urls() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(dir.path().join("db"), StoreConfig::default()).unwrap();
        let (mut t, view) = MemberTable::open(&store, &[rec(1, "a"), rec(2, "b")]).unwrap();
        let update = |id: u64, url: &str| MemberUpdate {
            member_id: id,
            peer_urls: vec![url.to_string()],
        };
        assert_eq!(
            t.apply_update(&update(3, "http://x:1")),
            Err(EtcdError::MemberNotFound)
        );
        assert_eq!(
            t.apply_update(&update(2, "http://127.0.0.1:1")),
            Err(EtcdError::PeerUrlExist)
        );
        // Its own URL again is fine.
        assert_eq!(
            t.apply_update(&update(2, "http://127.0.0.1:2"))
                .map(|o| o.len()),
            Ok(1)
        );
        assert_eq!(
            t.apply_update(&update(2, "http://x:9")).map(|o| o.len()),
            Ok(1)
        );
        assert_eq!(view.borrow()[1].peer_urls, vec!["http://x:9"]);
    }

    #[test]
    fn raft_and_table_lookups_decide_alike() {
        // check_change is the one rule both sides run; spot-check its answers.
        let change = |kind| MemberChange {
            id: 5,
            kind,
            context: ConfChangeContext::default(),
        };
        let none = |_| None;
        let learner = |_| Some(true);
        let voter = |_| Some(false);
        assert_eq!(
            check_change(&change(ChangeKind::Add { learner: false }), none, 1),
            Ok(())
        );
        assert_eq!(
            check_change(&change(ChangeKind::Add { learner: true }), none, 1),
            Err(EtcdError::TooManyLearners)
        );
        assert_eq!(
            check_change(&change(ChangeKind::Add { learner: false }), voter, 0),
            Err(EtcdError::MemberExist)
        );
        assert_eq!(
            check_change(&change(ChangeKind::Promote), learner, 1),
            Ok(())
        );
        assert_eq!(
            check_change(&change(ChangeKind::Promote), voter, 0),
            Err(EtcdError::MemberNotLearner)
        );
        assert_eq!(
            check_change(&change(ChangeKind::Remove), none, 0),
            Err(EtcdError::MemberNotFound)
        );
        assert_eq!(
            check_change(&change(ChangeKind::Remove), learner, 1),
            Ok(())
        );
    }
}
