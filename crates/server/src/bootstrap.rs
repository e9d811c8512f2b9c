//! Opening a member's Raft state from its data directory, or creating it.
//!
//! Layout (as etcd's): `<data-dir>/member/wal` (the WAL, or the `--wal-dir`
//! directory itself when given), `<data-dir>/member/snap` (Raft snapshot files and the
//! backend `db`). In a data dir holding an etcd member, Skiff's files are under
//! `<data-dir>/skiff/` instead (see `etcd_import`).
//!
//! - First start (no WAL): the WAL is created with [`WalMetadata`] (member ID,
//!   cluster ID, initial members), so identity is fixed at bootstrap; the Raft log
//!   starts with the initial members as voters.
//! - First start joining a running cluster (`--initial-cluster-state=existing`): the
//!   caller learned from a peer ([`Joining`]) the ID `member add` gave this member,
//!   the cluster ID, and the members the cluster was bootstrapped with; the Raft log
//!   starts from those, as the bootstrapped members' did, so the leader's entries (or
//!   its snapshot, once its log is compacted) bring the member up to date.
//! - Restart: identity comes from the WAL metadata, not the flags (a restarted member
//!   keeps its identity); the newest snapshot that the WAL has a committed marker for
//!   is loaded, the WAL is replayed from that marker, and the in-memory Raft log is
//!   rebuilt from both. A corrupt WAL stops the start with an error naming the file
//!   and byte offset (see the WAL module); nothing is truncated silently.
//!
//! Guarantees: `applied` (what the backend already holds, its consistent index) never
//! exceeds the commit index handed to Raft: the commit index in the WAL can lag (a
//! commit-only change is not synced), and entries the backend applied were committed,
//! so the commit index is raised to it when the log holds those entries.

use std::path::{Path, PathBuf};

use prost::Message as _;
use skiff_proto::skiffpb::{MemberRecord, SnapshotPayload, WalMetadata};
use skiff_raft::{HardState, MemStorage, Snapshot};
use skiff_storage::snap::Snapshotter;
use skiff_storage::wal::{SnapshotMarker, Wal, WalOptions};

use crate::config::{ClusterState, Config};

/// The WAL's options: the defaults, with the segment size a failpoints build may take
/// from `SKIFF_FAILPOINTS_WAL_SEGMENT_BYTES` (see the skiff-failpoints crate docs).
fn wal_options() -> WalOptions {
    let mut o = WalOptions::default();
    if let Some(bytes) = skiff_failpoints::knob(skiff_failpoints::WAL_SEGMENT_BYTES) {
        o.segment_size = bytes;
    }
    o
}

/// Where a member keeps its files.
#[derive(Debug, Clone)]
pub struct Layout {
    pub member_dir: PathBuf,
    pub wal_dir: PathBuf,
    pub snap_dir: PathBuf,
    pub db_path: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Layout {
        let member_dir = data_dir.join("member");
        Layout {
            wal_dir: member_dir.join("wal"),
            snap_dir: member_dir.join("snap"),
            db_path: member_dir.join("snap").join("db"),
            member_dir,
        }
    }

    /// The layout with the WAL in `wal_dir` when given (`--wal-dir`, as etcd: the
    /// segments go directly into that directory).
    pub fn with_wal_dir(mut self, wal_dir: Option<&Path>) -> Layout {
        if let Some(dir) = wal_dir {
            self.wal_dir = dir.to_path_buf();
        }
        self
    }
}

/// The Raft state a member starts from.
pub struct Recovered {
    pub meta: WalMetadata,
    pub wal: Wal,
    pub snapshotter: Snapshotter,
    pub storage: MemStorage,
    /// Whether the WAL was just created.
    pub fresh: bool,
    /// The loaded snapshot, if any.
    pub snapshot: Option<Snapshot>,
}

/// What a member joining a running cluster learned from its peers.
#[derive(Debug, Clone)]
pub struct Joining {
    pub member_id: u64,
    pub cluster_id: u64,
    /// The members the cluster was bootstrapped with (its Raft configuration at 0).
    pub bootstrap: Vec<MemberRecord>,
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Wal(#[from] skiff_storage::wal::WalError),
    #[error(transparent)]
    Snap(#[from] skiff_storage::snap::SnapError),
    #[error("raft storage: {0}")]
    Raft(#[from] skiff_raft::StorageError),
    #[error("cannot create {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("WAL metadata in {} is unreadable: {reason}", path.display())]
    BadMetadata { path: PathBuf, reason: String },
    #[error("--initial-cluster-state=existing with an empty data dir needs the cluster from a peer first")]
    JoinWithoutPeers,
    #[error("snapshot payload at index {index} is unreadable: {reason}")]
    BadSnapshot { index: u64, reason: String },
}

/// Opens (or creates) the Raft state in `layout` for `config`; `joining` is what a
/// member joining a running cluster learned from its peers (used only when the data
/// dir holds no WAL yet).
pub fn open(
    config: &Config,
    layout: &Layout,
    joining: Option<&Joining>,
) -> Result<Recovered, BootstrapError> {
    std::fs::create_dir_all(&layout.member_dir).map_err(|source| BootstrapError::Io {
        path: layout.member_dir.clone(),
        source,
    })?;
    let snapshotter = Snapshotter::new(&layout.snap_dir)?;
    if !Wal::exists(&layout.wal_dir) {
        let (member_id, cluster_id, members) = match joining {
            Some(j) => (j.member_id, j.cluster_id, j.bootstrap.clone()),
            None if config.initial_cluster_state == ClusterState::Existing => {
                return Err(BootstrapError::JoinWithoutPeers)
            }
            None => (
                config.member_id(),
                config.cluster_id(),
                initial_members(config),
            ),
        };
        let meta = WalMetadata {
            member_id,
            cluster_id,
            members,
        };
        let wal = Wal::create(&layout.wal_dir, &meta.encode_to_vec(), wal_options())?;
        let voters = meta.members.iter().map(|m| m.id).collect();
        let storage = MemStorage::new_with_conf_state(voters, Vec::new());
        return Ok(Recovered {
            meta,
            wal,
            snapshotter,
            storage,
            fresh: true,
            snapshot: None,
        });
    }

    let markers = Wal::valid_snapshot_markers(&layout.wal_dir)?;
    let snap_file = snapshotter.load_newest_available(&markers)?;
    let (snapshot, from) = match &snap_file {
        Some(f) => {
            let data = f.read_payload()?;
            let snap = Snapshot {
                metadata: f.metadata.clone(),
                data: data.into(),
            };
            (Some(snap), f.marker())
        }
        None => (None, SnapshotMarker::default()),
    };
    let (wal, replay) = Wal::open(&layout.wal_dir, from, wal_options())?;
    let meta = WalMetadata::decode(replay.metadata.as_slice()).map_err(|e| {
        BootstrapError::BadMetadata {
            path: layout.wal_dir.clone(),
            reason: e.to_string(),
        }
    })?;
    let storage = match &snapshot {
        Some(snap) => {
            // The payload must be readable now, not on first use.
            SnapshotPayload::decode(snap.data.as_ref()).map_err(|e| {
                BootstrapError::BadSnapshot {
                    index: snap.metadata.index,
                    reason: e.to_string(),
                }
            })?;
            let s = MemStorage::new();
            s.wl().apply_snapshot(snap.clone())?;
            s
        }
        None => {
            let voters = meta.members.iter().map(|m| m.id).collect();
            MemStorage::new_with_conf_state(voters, Vec::new())
        }
    };
    if !replay.entries.is_empty() {
        storage.wl().append(&replay.entries)?;
    }
    if replay.hard_state != HardState::default() {
        storage.wl().set_hard_state(replay.hard_state);
    }
    if let Some((path, offset)) = &replay.repaired_torn_tail {
        tracing::warn!(file = %path.display(), offset, "repaired a torn WAL tail (an unacknowledged write)");
    }
    Ok(Recovered {
        meta,
        wal,
        snapshotter,
        storage,
        fresh: false,
        snapshot,
    })
}

/// `--force-new-cluster` (etcd's disaster recovery): the members in the Raft
/// configuration as of the end of this member's log (all of it, committed or not, as
/// etcd reads it) other than this one are removed by conf changes appended to the log and
/// committed here at once, with everything before them. The node then applies them
/// like any committed change (Raft's configuration, the member table, the transport),
/// and the member is a one-member cluster with all its data.
pub fn force_new_cluster(rec: &mut Recovered) -> Result<(), BootstrapError> {
    let me = rec.meta.member_id;
    use skiff_raft::{ConfChangeType, ConfChangeV2, Decode, Encode, EntryType, Storage as _};
    let state = rec.storage.initial_state()?;
    let mut ids: std::collections::BTreeSet<u64> = state
        .conf_state
        .voters
        .iter()
        .chain(&state.conf_state.learners)
        .copied()
        .collect();
    let first = rec.storage.first_index()?;
    let last = rec.storage.last_index()?;
    if last >= first {
        for e in rec.storage.entries(first, last + 1, u64::MAX)? {
            if e.entry_type != EntryType::ConfChange {
                continue;
            }
            let Ok(cc) = ConfChangeV2::decode(&e.data) else {
                continue;
            };
            for c in &cc.changes {
                match c.change_type {
                    ConfChangeType::RemoveNode => ids.remove(&c.node_id),
                    _ => ids.insert(c.node_id),
                };
            }
        }
    }
    let mut hs = state.hard_state;
    let others: Vec<u64> = ids.into_iter().filter(|id| *id != me).collect();
    let entries: Vec<skiff_raft::Entry> = others
        .iter()
        .enumerate()
        .map(|(i, id)| skiff_raft::Entry {
            term: hs.term,
            index: last + 1 + i as u64,
            entry_type: EntryType::ConfChange,
            data: ConfChangeV2::simple(ConfChangeType::RemoveNode, *id).encode(),
        })
        .collect();
    hs.commit = last + entries.len() as u64;
    rec.wal.save(&hs, &entries)?;
    rec.wal.sync()?;
    if !entries.is_empty() {
        rec.storage.wl().append(&entries)?;
    }
    rec.storage.wl().set_hard_state(hs);
    tracing::warn!(
        removed = ?others.iter().map(|id| format!("{id:x}")).collect::<Vec<_>>(),
        commit = hs.commit,
        "--force-new-cluster: the other members are removed; this member is a cluster of one"
    );
    Ok(())
}

/// The members `--initial-cluster` names.
fn initial_members(config: &Config) -> Vec<MemberRecord> {
    config
        .initial_members()
        .into_iter()
        .map(|m| MemberRecord {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_urls.iter().map(|u| u.to_string()).collect(),
            client_urls: Vec::new(),
            is_learner: false,
        })
        .collect()
}

/// Raises the stored commit index to `applied` when the log holds it (see the module
/// docs); returns the `applied` value to give Raft.
pub fn reconcile_applied(storage: &MemStorage, applied: u64) -> u64 {
    use skiff_raft::Storage as _;
    let last = storage.last_index().unwrap_or(0);
    let applied = applied.min(last);
    let mut core = storage.wl();
    let mut hs = core.hard_state();
    if hs.commit < applied {
        hs.commit = applied;
        core.set_hard_state(hs);
    }
    applied
}
