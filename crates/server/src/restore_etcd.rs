//! An etcd 3.4 data directory from a snapshot file (`skiffctl snapshot restore
//! --etcd-layout`): the files `etcdctl snapshot restore` writes, so that etcd 3.4 starts
//! on the directory as a member of a new cluster and serves the snapshot's data.
//!
//! After the checks a Skiff restore makes ([`crate::restore::preflight`]: flags, no
//! existing data or WAL dir, the sha256 and every page of the file), with the new
//! cluster's members (IDs derived as etcd derives them, [`crate::ids`]) in ID order and
//! `n` of them:
//! 1. `<data-dir>/member/snap/db`: the snapshot's bbolt file with etcd's restore changes
//!    (`skiff_storage::bbolt::etcd::write_restored_db`): consistent index `n`, the
//!    `members` bucket holding the new members as etcd's backend stores them (key: ID in
//!    hex, value: the member JSON), `members_removed` empty. (etcdctl 3.4 leaves the old
//!    cluster's rows in these two buckets, which etcd 3.4 never reads back; etcd 3.5
//!    writes the new members, as done here.)
//! 2. `<data-dir>/member/snap/0000000000000001-<n>.snap`: a raft snapshot at term 1,
//!    index `n`, voters = the members, holding the v2 store with the membership
//!    ([`v2store`]).
//! 3. the WAL (`<data-dir>/member/wal`, or `--wal-dir`), one segment preallocated to
//!    etcd's 64 MB: the metadata record (this member's ID, the cluster ID), an empty
//!    snapshot record, `n` ConfChangeAddNode entries at term 1 and indexes `1..=n` (node
//!    ID, context = the member's JSON), the HardState {term 1, vote = the lowest ID,
//!    commit `n`}, and a snapshot record {index `n`, term 1}
//!    (`skiff_storage::etcd_wal::writer`, payloads from `etcd_wal::pb`).
//!
//! The WAL and `.snap` bytes equal etcdctl 3.4's for the same flags (the test compares
//! them); directories are 0700, the db and WAL 0600, the `.snap` 0644, as etcd makes
//! them. Guarantees: nothing is written before the checks pass; a restore that fails
//! removes the data dir (and the `--wal-dir` it created).

pub mod v2store;

use std::collections::BTreeMap;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use skiff_storage::bbolt::etcd;
use skiff_storage::etcd_wal::writer::{EtcdWalWriter, SEGMENT_BYTES};
use skiff_storage::etcd_wal::{kind, pb};

use crate::config::{Config, InitialMember};
use crate::membership::member_key;
use crate::restore::{preflight, remove_targets, RestoreFlags};
use v2store::StoreMember;

/// What an etcd-layout restore wrote.
#[derive(Debug, Clone)]
pub struct EtcdRestored {
    pub member_id: u64,
    pub cluster_id: u64,
    /// Rows of the `key` bucket and the revision of the last one.
    pub key_rows: u64,
    pub revision: i64,
    pub wal_dir: PathBuf,
    pub snap_dir: PathBuf,
}

/// Restores the snapshot file `snapshot` into a new etcd 3.4 data dir (see the module
/// docs).
pub fn restore(snapshot: &Path, flags: &RestoreFlags) -> anyhow::Result<EtcdRestored> {
    let (config, check) = preflight(snapshot, flags)?;
    let result = lay_out(snapshot, flags, &config);
    if result.is_err() {
        remove_targets(flags);
    }
    let (wal_dir, snap_dir) = result?;
    Ok(EtcdRestored {
        member_id: config.member_id(),
        cluster_id: config.cluster_id(),
        key_rows: check.key_rows,
        revision: check.revision,
        wal_dir,
        snap_dir,
    })
}

fn urls(m: &InitialMember) -> Vec<String> {
    m.peer_urls.iter().map(|u| u.as_str().to_string()).collect()
}

fn mkdirs(dir: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("mkdir {}", dir.display()))
}

fn lay_out(
    snapshot: &Path,
    flags: &RestoreFlags,
    config: &Config,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let members = config.initial_members();
    let n = members.len() as u64;
    let (term, commit) = (1u64, n);
    let member_dir = flags.data_dir.join("member");
    let snap_dir = member_dir.join("snap");
    let wal_dir = flags
        .wal_dir
        .clone()
        .unwrap_or_else(|| member_dir.join("wal"));
    mkdirs(&snap_dir)?;

    // 1. The db.
    let rows: BTreeMap<Vec<u8>, Vec<u8>> = members
        .iter()
        .map(|m| {
            (
                member_key(m.id),
                v2store::member_json(m.id, &urls(m), &m.name).into_bytes(),
            )
        })
        .collect();
    let db = snap_dir.join("db");
    etcd::write_restored_db(snapshot, &db, commit, &rows)
        .with_context(|| format!("restoring {} into {}", snapshot.display(), db.display()))?;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", db.display()))?;

    // 2. The raft snapshot holding the v2 store.
    let all_urls: Vec<Vec<String>> = members.iter().map(urls).collect();
    let store_members: Vec<StoreMember<'_>> = members
        .iter()
        .zip(&all_urls)
        .map(|(m, u)| StoreMember {
            id: m.id,
            peer_urls: u,
        })
        .collect();
    let store = v2store::store_json(&store_members);
    let voters: Vec<u64> = members.iter().map(|m| m.id).collect();
    let snap = pb::snap_file(&pb::raft_snapshot(store.as_bytes(), commit, term, &voters));
    let snap_path = snap_dir.join(pb::snap_name(term, commit));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&snap_path)
        .with_context(|| format!("create {}", snap_path.display()))?;
    f.write_all(&snap)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", snap_path.display()))?;

    // 3. The WAL.
    if let Some(parent) = wal_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        mkdirs(parent)?;
    }
    let mut w = EtcdWalWriter::create(&wal_dir)?;
    w.append(
        kind::METADATA,
        &pb::metadata(config.member_id(), config.cluster_id()),
    )?;
    w.append(kind::SNAPSHOT, &pb::wal_snapshot(0, 0))?;
    for (i, m) in members.iter().enumerate() {
        let context = v2store::member_json(m.id, &urls(m), &m.name);
        let cc = pb::conf_change(0, pb::CONF_CHANGE_ADD_NODE, m.id, context.as_bytes());
        w.append(
            kind::ENTRY,
            &pb::entry(pb::ENTRY_CONF_CHANGE, term, i as u64 + 1, &cc),
        )?;
    }
    let vote = members.first().map(|m| m.id).unwrap_or(0);
    w.append(kind::STATE, &pb::hard_state(term, vote, commit))?;
    w.append(kind::SNAPSHOT, &pb::wal_snapshot(commit, term))?;
    w.finish(Some(SEGMENT_BYTES))?;
    Ok((wal_dir, snap_dir))
}
