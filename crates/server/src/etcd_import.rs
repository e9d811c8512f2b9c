//! Starting `skiff` on an etcd 3.4 data directory: what `etcdctl snapshot restore` lays
//! out (`member/snap/db`, `member/snap/*.snap`, `member/wal`).
//!
//! etcd's `member/` and Skiff's use the same names, so when `member/snap/db` is a bbolt
//! file (etcd's) Skiff keeps its own data in `<data-dir>/skiff/member/` and never
//! writes under etcd's `member/` (rolling back to etcd stays possible: its files are
//! untouched). On the first start, Skiff's backend is built from etcd's `db`: the
//! `key` bucket row for row (revisions, versions, leases of keys), the compaction
//! marks, the leases and alarms, into a temporary file renamed into place once
//! complete; then the member bootstraps as a new member of the cluster its flags
//! describe, as etcd does on a restored data dir (the member IDs are etcd's for the
//! same flags). A start that finds Skiff's WAL uses Skiff's data and imports nothing.
//!
//! etcd's WAL is read first (every record and the CRC chain checked; damage is an error
//! naming the segment and offset). The entries committed after the db's consistent
//! index (none in a restored data dir; those of the last backend batch of a stopped
//! member) are replayed into the imported backend with etcd's apply semantics
//! (`etcd_replay`), up to the WAL's commit index; the import is refused, with the
//! reason, when it cannot be exact: a committed entry missing from the WAL or one the
//! replay cannot apply (named by index, file and offset). Users, roles and the auth
//! flag come over with the rest. Not imported: the stale `members` rows a restored `db`
//! carries (the members come from the flags, as for etcd).
//!
//! A member of a stopped multi-member etcd cluster (not a restored backup) is imported
//! differently, keeping etcd's identity and log so that the members, whose dbs can
//! differ, converge through Raft: see `etcd_in_place`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use skiff_storage::backend::{Backend, BackendConfig};
use skiff_storage::bbolt::{etcd, is_bbolt};
use skiff_storage::wal::Wal;

use crate::bootstrap::Layout;
use crate::config::Config;
use crate::etcd_db::EtcdAux;
use crate::etcd_in_place;
use crate::etcd_replay::{self, Planned, ReplayOptions, WalEntry};

/// Where Skiff keeps its own data inside an etcd data directory.
pub const SKIFF_SUBDIR: &str = "skiff";

/// The layout this member uses, importing etcd's data first when the data dir holds an
/// etcd member and no Skiff data yet (see the module docs).
pub fn layout(config: &Config) -> anyhow::Result<Layout> {
    let own = Layout::new(&config.data_dir);
    if !is_bbolt(&own.db_path) {
        return Ok(own.with_wal_dir(config.wal_dir.as_deref()));
    }
    if config.wal_dir.is_some() {
        bail!(
            "{} holds an etcd data dir; starting Skiff on it with --wal-dir is not supported",
            config.data_dir.display()
        );
    }
    let layout = Layout::new(&config.data_dir.join(SKIFF_SUBDIR));
    if Wal::exists(&layout.wal_dir) {
        tracing::info!(
            etcd_db = %own.db_path.display(),
            skiff_dir = %layout.member_dir.display(),
            "data dir holds an etcd member; using Skiff's data imported from it earlier"
        );
        return Ok(layout);
    }
    let info = etcd::inspect(&own.db_path)
        .with_context(|| format!("reading etcd's {}", own.db_path.display()))?;
    let wal = read_etcd_wal(&own.wal_dir, info.consistent_index)
        .with_context(|| format!("reading etcd's WAL in {}", own.wal_dir.display()))?;
    let restored = wal.entries > 0 && wal.entries == wal.restore_entries;
    tracing::info!(
        etcd_member_id = %format!("{:x}", wal.member_id),
        etcd_cluster_id = %format!("{:x}", wal.cluster_id),
        db_consistent_index = info.consistent_index,
        wal_commit = wal.commit,
        wal_entries = wal.entries,
        entries_to_replay = wal.pending.len(),
        uncommitted_entries = wal.uncommitted.len(),
        restored_backup = restored,
        members = info.members.len(),
        "found an etcd 3.4 member in the data dir"
    );
    if !restored && info.members.len() > 1 {
        // A member of a multi-member cluster: the cluster continues, with etcd's log.
        etcd_in_place::import(
            &own,
            &layout,
            info.consistent_index,
            wal,
            replay_options(config),
        )?;
    } else {
        let planned = etcd_replay::plan(&wal.pending, replay_options(config))?;
        let target = ImportTarget {
            keep_members: false,
            consistent_index: 0,
        };
        import(
            &own.db_path,
            &layout,
            planned,
            replay_options(config),
            target,
        )?;
    }
    Ok(layout)
}

/// What etcd's WAL says, as far as the import needs it.
#[derive(Debug, Default)]
pub struct EtcdWalSummary {
    /// The last hard state's commit index.
    pub commit: u64,
    /// Entries in the WAL, and how many of them are conf changes at term 1 (what
    /// `etcdctl snapshot restore` writes, and nothing else).
    pub entries: u64,
    pub restore_entries: u64,
    /// The committed entries past the db's consistent index, in index order.
    pub pending: Vec<WalEntry>,
    /// The entries past the commit index (not known to be committed), in index order.
    pub uncommitted: Vec<WalEntry>,
    /// The last hard state's term and vote.
    pub term: u64,
    pub vote: u64,
    /// The term of each entry index the WAL holds, and of etcd's snapshot markers.
    pub terms: BTreeMap<u64, u64>,
    pub member_id: u64,
    pub cluster_id: u64,
}

impl EtcdWalSummary {
    /// The term of the entry at `index`, when the WAL knows it.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.terms.get(&index).copied()
    }
}

/// etcd's `walpb.Snapshot` (a snapshot marker in its WAL).
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdWalSnapshot {
    #[prost(uint64, tag = "1")]
    index: u64,
    #[prost(uint64, tag = "2")]
    term: u64,
}

/// Reads etcd's WAL in `wal_dir` (every record checked), keeping the committed entries
/// past the db's consistent index `ci`; an error if some of them are missing.
pub fn read_etcd_wal(wal_dir: &Path, ci: u64) -> anyhow::Result<EtcdWalSummary> {
    use prost::Message as _;
    use skiff_proto::etcdserverpb::Metadata;
    use skiff_proto::raftpb::{Entry, EntryType, HardState};
    use skiff_storage::etcd_wal::{self, kind};

    let mut sum = EtcdWalSummary::default();
    // Entries by index: a later entry at an index replaces the earlier one and
    // everything after it (a new leader's log), so what is kept is kept per index.
    let mut restore: BTreeMap<u64, bool> = BTreeMap::new();
    let mut later: BTreeMap<u64, WalEntry> = BTreeMap::new();
    let end = etcd_wal::read_dir(wal_dir, &mut |rec| {
        match rec.kind {
            kind::ENTRY => {
                let e = Entry::decode(rec.data.as_slice()).map_err(|e| e.to_string())?;
                let _ = restore.split_off(&e.index);
                let _ = later.split_off(&e.index);
                let _ = sum.terms.split_off(&e.index);
                sum.terms.insert(e.index, e.term);
                restore.insert(
                    e.index,
                    e.term == 1 && e.r#type == EntryType::EntryConfChange as i32,
                );
                if e.index > ci {
                    later.insert(
                        e.index,
                        WalEntry {
                            index: e.index,
                            term: e.term,
                            entry_type: e.r#type,
                            data: e.data.to_vec(),
                            file: rec.file,
                            offset: rec.offset,
                        },
                    );
                }
            }
            kind::STATE => {
                let hs = HardState::decode(rec.data.as_slice()).map_err(|e| e.to_string())?;
                if hs.commit > 0 {
                    sum.commit = hs.commit;
                }
                if hs.term > 0 {
                    sum.term = hs.term;
                    sum.vote = hs.vote;
                }
            }
            kind::SNAPSHOT => {
                let s = EtcdWalSnapshot::decode(rec.data.as_slice()).map_err(|e| e.to_string())?;
                sum.terms.entry(s.index).or_insert(s.term);
            }
            kind::METADATA => {
                let m = Metadata::decode(rec.data.as_slice()).map_err(|e| e.to_string())?;
                sum.member_id = m.node_id;
                sum.cluster_id = m.cluster_id;
            }
            _ => {}
        }
        Ok(())
    })?;
    if let Some((file, offset)) = end.torn_at {
        tracing::info!(file = %file.display(), offset, "etcd's WAL ends with a torn record (ignored, as etcd does)");
    }
    sum.entries = restore.len() as u64;
    sum.restore_entries = restore.values().filter(|r| **r).count() as u64;
    // What is replayed is what was committed; the rest may or may not have been (the
    // leader may have committed it without this member knowing): only an import that
    // keeps the cluster's log (`etcd_in_place`) carries it over.
    sum.uncommitted = later
        .split_off(&(sum.commit.max(ci) + 1))
        .into_values()
        .collect();
    if sum.commit > ci {
        let want = sum.commit - ci;
        if later.len() as u64 != want {
            bail!(
                "etcd's WAL holds {} of the {want} entries committed after its db's \
                 consistent index {ci} (up to {})",
                later.len(),
                sum.commit
            );
        }
    }
    sum.pending = later.into_values().collect();
    Ok(sum)
}

pub fn replay_options(config: &Config) -> ReplayOptions {
    ReplayOptions {
        bcrypt_cost: config.bcrypt_cost,
        min_lease_ttl: config.min_lease_ttl_secs(),
    }
}

/// How [`import`] leaves the backend.
#[derive(Debug, Clone, Copy)]
pub struct ImportTarget {
    /// Whether etcd's `members` rows come over (an import that keeps etcd's cluster)
    /// or not (a restored backup: the flags give the members).
    pub keep_members: bool,
    /// The backend's consistent index afterwards: 0 for a Skiff log that starts afresh,
    /// the last etcd index applied for one that continues etcd's.
    pub consistent_index: u64,
}

/// Builds Skiff's backend at `layout.db_path` from etcd's `db`, then applies the WAL
/// entries `planned` past its consistent index.
pub fn import(
    etcd_db: &Path,
    layout: &Layout,
    planned: Vec<Planned>,
    opts: ReplayOptions,
    target: ImportTarget,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&layout.snap_dir)
        .with_context(|| format!("creating {}", layout.snap_dir.display()))?;
    let tmp = layout.db_path.with_extension("importing");
    for stale in [&tmp, &layout.db_path] {
        // A backend without a WAL is an import or bootstrap cut short: nothing in it
        // was acknowledged, so it is built again.
        if stale.exists() {
            std::fs::remove_file(stale).with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    let started = std::time::Instant::now();
    let aux = if target.keep_members {
        EtcdAux::default()
    } else {
        EtcdAux::for_import()
    };
    let summary = {
        let backend = Backend::open(&tmp, BackendConfig::default())
            .with_context(|| format!("creating {}", tmp.display()))?;
        let ci = if planned.is_empty() {
            target.consistent_index
        } else {
            0
        };
        etcd::import(etcd_db, &backend, &aux, ci)
            .with_context(|| format!("importing etcd's {}", etcd_db.display()))?
    };
    let replayed = if planned.is_empty() {
        None
    } else {
        Some(
            etcd_replay::replay(&tmp, planned, opts, target.consistent_index)
                .with_context(|| format!("replaying etcd's WAL into {}", tmp.display()))?,
        )
    };
    std::fs::rename(&tmp, &layout.db_path)
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    if let Ok(dir) = std::fs::File::open(&layout.snap_dir) {
        let _ = dir.sync_all();
    }
    tracing::info!(
        etcd_db = %etcd_db.display(),
        skiff_db = %layout.db_path.display(),
        key_rows = summary.key_rows,
        revision = replayed.as_ref().map_or(
            summary.last_key_revision.max(summary.scheduled_compact),
            |r| r.revision
        ),
        compact_revision = summary.scheduled_compact,
        etcd_consistent_index = summary.consistent_index,
        wal_entries_applied = replayed.as_ref().map_or(0, |r| r.applied),
        wal_entries_refused_as_etcd_did = replayed.as_ref().map_or(0, |r| r.refused),
        wal_entries_skipped = replayed.as_ref().map_or(0, |r| r.skipped),
        wal_last_index = replayed.as_ref().map_or(summary.consistent_index, |r| r.last_index),
        leases = aux.imported_leases(),
        alarms = aux.imported_alarms(),
        users = aux.imported_users(),
        roles = aux.imported_roles(),
        auth_enabled = aux.imported_auth_enabled(),
        members_from_flags = !target.keep_members,
        took_ms = started.elapsed().as_millis() as u64,
        "imported an etcd 3.4 data dir; etcd's files are left untouched"
    );
    Ok(())
}
