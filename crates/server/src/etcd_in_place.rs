//! Starting `skiff` in place on a member of a stopped multi-member etcd 3.4 cluster:
//! each member's data dir is imported on its own, and the cluster continues as the
//! same cluster (etcd's member IDs, cluster ID, term and log indexes).
//!
//! The members of a stopped cluster do not hold the same state: each one's `db` is at
//! its own consistent index, each one's WAL knows its own commit index, and entries
//! past it may or may not have been committed (the leader can commit, apply and
//! acknowledge an entry before the followers learn that it is committed). Importing
//! each member as a new cluster of its own state would let them disagree for ever, and
//! dropping the entries not known to be committed could lose an acknowledged write. So
//! this import keeps Raft's view of etcd's log:
//! - the backend is etcd's `db` plus the WAL entries committed after its consistent
//!   index, replayed with etcd's semantics (`etcd_replay`), up to index `I` (the WAL's
//!   commit index, or the db's consistent index if higher), with etcd's members;
//! - Skiff's Raft log starts from a snapshot at `I` with the term etcd's log has there
//!   and etcd's members as the configuration, followed by etcd's entries past `I`
//!   (converted to Skiff's requests at the same indexes and terms,
//!   `etcd_replay::uncommitted_entries`), and etcd's hard state (term, vote);
//! - the member's identity is etcd's (the WAL metadata's member and cluster IDs).
//!
//! Raft then does the rest as after any restart: the most up-to-date member wins the
//! election, commits whatever of the old tail it holds (so nothing that a quorum held
//! is lost), a member whose tail conflicts has it replaced, and a member behind the
//! leader's snapshot gets it as a snapshot. Committed entries are the same on every
//! member (Raft's log matching), so members that applied up to the same index hold the
//! same data.
//!
//! Refused, with the reason: a conf change past the db's consistent index (the member
//! table would be wrong), an auth change not known to be committed, a committed entry
//! missing from the WAL, and a member its own db does not list. etcd's files are only
//! read; Skiff's are created under `<data-dir>/skiff/` (see `etcd_import`), the WAL
//! last, atomically, so a start cut short imports again.

use std::path::Path;

use anyhow::{bail, Context};
use prost::Message as _;
use skiff_proto::raftpb::EntryType;
use skiff_proto::skiffpb::{MemberRecord, SnapshotPayload, WalMetadata};
use skiff_raft::{ConfState, HardState, Snapshot, SnapshotMetadata};
use skiff_storage::backend::{Backend, BackendConfig};
use skiff_storage::snap::Snapshotter;
use skiff_storage::wal::{SnapshotMarker, Wal, WalOptions};

use crate::bootstrap::Layout;
use crate::etcd_import::{self, EtcdWalSummary, ImportTarget};
use crate::etcd_replay::{self, ReplayOptions};

/// Imports the etcd member in `etcd` (its db's consistent index `db_index`, its WAL
/// read into `wal`) into Skiff's layout `skiff`, keeping etcd's log (module docs).
pub fn import(
    etcd: &Layout,
    skiff: &Layout,
    db_index: u64,
    wal: EtcdWalSummary,
    opts: ReplayOptions,
) -> anyhow::Result<()> {
    let etcd_path = |file: &Path, offset: u64| format!("{}, byte {offset}", file.display());
    if let Some(e) = wal
        .pending
        .iter()
        .chain(&wal.uncommitted)
        .find(|e| e.entry_type != EntryType::EntryNormal as i32)
    {
        bail!(
            "{}: entry {} (term {}) is a membership change etcd's db does not hold yet; \
             start the etcd cluster once more so that every member applies it, or migrate \
             with `etcdctl snapshot save` and `etcdctl snapshot restore`",
            etcd_path(&e.file, e.offset),
            e.index,
            e.term
        );
    }
    if wal.member_id == 0 || wal.cluster_id == 0 {
        bail!(
            "etcd's WAL in {} names no member or cluster ID",
            etcd.wal_dir.display()
        );
    }
    let applied = wal.commit.max(db_index);
    let Some(term) = wal.term_at(applied) else {
        bail!(
            "etcd's WAL in {} does not tell the term of entry {applied}, the last one \
             applied; Skiff cannot continue this member's log",
            etcd.wal_dir.display()
        );
    };
    let planned = etcd_replay::plan(&wal.pending, opts)?;
    let tail = etcd_replay::plan(&wal.uncommitted, opts)?;
    etcd_import::import(
        &etcd.db_path,
        skiff,
        planned,
        opts,
        ImportTarget {
            keep_members: true,
            consistent_index: applied,
        },
    )?;
    let entries = etcd_replay::uncommitted_entries(&skiff.db_path, tail, opts)?;
    let members = members(&skiff.db_path)?;
    if !members.iter().any(|m| m.id == wal.member_id) {
        bail!(
            "etcd member {:x} (its WAL in {}) is not among the members its db lists; it \
             was removed from its cluster, and Skiff does not start it",
            wal.member_id,
            etcd.wal_dir.display()
        );
    }

    // The snapshot file first: without the WAL's marker it is never read.
    let conf_state = ConfState {
        voters: members
            .iter()
            .filter(|m| !m.is_learner)
            .map(|m| m.id)
            .collect(),
        learners: members
            .iter()
            .filter(|m| m.is_learner)
            .map(|m| m.id)
            .collect(),
        ..Default::default()
    };
    let payload = SnapshotPayload {
        members: members.clone(),
        backend: Default::default(),
    };
    let snapshot = Snapshot {
        data: payload.encode_to_vec().into(),
        metadata: SnapshotMetadata {
            conf_state,
            index: applied,
            term,
        },
    };
    Snapshotter::new(&skiff.snap_dir)?.save_snapshot(&snapshot)?;

    // Then the WAL, built aside and renamed into place once durable.
    let staging = skiff.wal_dir.with_extension("importing");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing {}", staging.display()))?;
    }
    let meta = WalMetadata {
        member_id: wal.member_id,
        cluster_id: wal.cluster_id,
        members,
    };
    let hard_state = HardState {
        term: wal.term.max(term),
        vote: wal.vote,
        commit: applied,
    };
    {
        let mut w = Wal::create(&staging, &meta.encode_to_vec(), WalOptions::default())?;
        w.save_snapshot(SnapshotMarker {
            index: applied,
            term,
        })?;
        w.save(&hard_state, &entries)?;
        w.sync()?;
    }
    std::fs::rename(&staging, &skiff.wal_dir).with_context(|| {
        format!(
            "renaming {} to {}",
            staging.display(),
            skiff.wal_dir.display()
        )
    })?;
    std::fs::File::open(&skiff.member_dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", skiff.member_dir.display()))?;
    tracing::info!(
        member_id = %format!("{:x}", wal.member_id),
        cluster_id = %format!("{:x}", wal.cluster_id),
        members = meta.members.len(),
        applied_index = applied,
        applied_term = term,
        raft_term = hard_state.term,
        uncommitted_entries_kept = entries.len(),
        "continuing the etcd cluster's log in place: this member keeps etcd's identity"
    );
    Ok(())
}

/// The member table the import wrote (etcd's `members` rows).
fn members(db_path: &Path) -> anyhow::Result<Vec<MemberRecord>> {
    let backend = Backend::open(db_path, BackendConfig::default())
        .with_context(|| format!("opening {}", db_path.display()))?;
    let members = crate::membership::load(&backend)
        .with_context(|| format!("the member table in {}", db_path.display()))?;
    Ok(members.into_values().collect())
}
