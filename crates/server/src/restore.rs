//! A Skiff data directory from an etcd snapshot file (`skiffctl snapshot restore`), the
//! same steps as `etcdctl snapshot restore` but laying out Skiff's files:
//!
//! 1. the data dir (and a given `--wal-dir`) must not exist (etcd's rule: a restore
//!    never overwrites a member);
//! 2. the file is checked as etcd checks it (`skiff_storage::bbolt::etcd::verify_snapshot`:
//!    the sha256 trailer, or none with `skip_hash_check`, then every page read);
//! 3. the backend `member/snap/db` is built from it by the same import a member runs
//!    on an etcd data dir (`etcd_import`): keys with their revisions, compaction,
//!    leases, alarms, users, roles and the auth flag; the old cluster's members are
//!    dropped, as etcd drops them;
//! 4. the WAL is created with the identity the flags give (member ID, cluster ID and
//!    initial members from `--name`, `--initial-cluster`, `--initial-cluster-token`,
//!    `--initial-advertise-peer-urls`, derived as etcd derives them), exactly as a first
//!    start with those flags creates it; a later `skiff` start on the data dir is a
//!    restart that keeps this identity.
//!
//! `--etcd-layout` writes etcd 3.4's files instead ([`crate::restore_etcd`]), after the
//! same checks.
//!
//! Guarantees: a restore that fails leaves no data dir behind (it is removed, with the
//! `--wal-dir` it created); nothing is written until the snapshot file has been checked.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Parser;
use skiff_storage::bbolt::etcd;

use crate::bootstrap::{self, Layout};
use crate::config::{Config, Flags};
use crate::etcd_import::{self, ImportTarget};

/// `snapshot restore`'s flags (etcdctl 3.4's names and defaults).
#[derive(Debug, Clone)]
pub struct RestoreFlags {
    pub name: String,
    /// The data dir to create.
    pub data_dir: PathBuf,
    /// A dedicated WAL directory to create (default `<data-dir>/member/wal`).
    pub wal_dir: Option<PathBuf>,
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: String,
    pub skip_hash_check: bool,
}

/// What a restore wrote.
#[derive(Debug, Clone)]
pub struct Restored {
    pub member_id: u64,
    pub cluster_id: u64,
    /// Rows of the `key` bucket and the revision of the last one.
    pub key_rows: u64,
    pub revision: i64,
    /// The member's layout (where the WAL, snapshots and backend are).
    pub layout: Layout,
}

/// The member configuration `flags` describe, checked as a first start checks it.
pub fn config_of(flags: &RestoreFlags) -> anyhow::Result<Config> {
    let mut args: Vec<String> = vec![
        "skiff".into(),
        "--name".into(),
        flags.name.clone(),
        "--data-dir".into(),
        flags.data_dir.display().to_string(),
        "--initial-cluster".into(),
        flags.initial_cluster.clone(),
        "--initial-cluster-token".into(),
        flags.initial_cluster_token.clone(),
        "--initial-advertise-peer-urls".into(),
        flags.initial_advertise_peer_urls.clone(),
    ];
    if let Some(w) = &flags.wal_dir {
        args.push("--wal-dir".into());
        args.push(w.display().to_string());
    }
    let parsed = Flags::try_parse_from(&args).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Config::from_flags(parsed)?)
}

/// Restores the snapshot file `snapshot` into a new Skiff data dir (see the module docs).
pub fn restore(snapshot: &Path, flags: &RestoreFlags) -> anyhow::Result<Restored> {
    let (config, check) = preflight(snapshot, flags)?;
    let result = lay_out(snapshot, &config);
    if result.is_err() {
        remove_targets(flags);
    }
    let (member_id, cluster_id, layout) = result?;
    Ok(Restored {
        member_id,
        cluster_id,
        key_rows: check.key_rows,
        revision: check.revision,
        layout,
    })
}

/// The checks both layouts make before writing anything, as etcdctl makes them: the
/// flags describe a valid first start, the data dir (and a given WAL dir) do not exist,
/// the snapshot file opens and passes [`etcd::verify_snapshot`].
pub(crate) fn preflight(
    snapshot: &Path,
    flags: &RestoreFlags,
) -> anyhow::Result<(Config, etcd::SnapshotCheck)> {
    let config = config_of(flags)?;
    if flags.data_dir.exists() {
        bail!("data-dir {:?} exists", flags.data_dir.display().to_string());
    }
    if let Some(w) = flags.wal_dir.as_ref().filter(|w| w.exists()) {
        bail!("wal-dir {:?} exists", w.display().to_string());
    }
    if let Err(e) = std::fs::File::open(snapshot) {
        bail!("open {}: {}", snapshot.display(), go_io_text(&e));
    }
    let check = etcd::verify_snapshot(snapshot, flags.skip_hash_check)?;
    Ok((config, check))
}

/// Removes what a failed restore created (the data dir, and a given WAL dir).
pub(crate) fn remove_targets(flags: &RestoreFlags) {
    let _ = std::fs::remove_dir_all(&flags.data_dir);
    if let Some(w) = &flags.wal_dir {
        let _ = std::fs::remove_dir_all(w);
    }
}

fn lay_out(snapshot: &Path, config: &Config) -> anyhow::Result<(u64, u64, Layout)> {
    let layout = Layout::new(&config.data_dir).with_wal_dir(config.wal_dir.as_deref());
    // A restored backup: the members come from the flags, Skiff's log starts afresh.
    let target = ImportTarget {
        keep_members: false,
        consistent_index: 0,
    };
    let opts = etcd_import::replay_options(config);
    etcd_import::import(snapshot, &layout, Vec::new(), opts, target)
        .with_context(|| format!("restoring {}", snapshot.display()))?;
    let rec = bootstrap::open(config, &layout, None)?;
    let ids = (rec.meta.member_id, rec.meta.cluster_id);
    drop(rec);
    Ok((ids.0, ids.1, layout))
}

/// Go's wording of the common I/O errors (as etcdctl reports them).
fn go_io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}
