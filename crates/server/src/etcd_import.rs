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
//! Not imported yet: etcd's WAL entries beyond the db's consistent index (a restored
//! data dir has none; a stopped member's own data dir may), the stale `members` rows a
//! restored `db` carries (the members come from the flags, as for etcd), and auth
//! (Skiff has no auth yet; the log says how many rows were left out).

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use skiff_storage::backend::{Backend, BackendConfig};
use skiff_storage::bbolt::etcd;
use skiff_storage::wal::Wal;

use crate::bootstrap::Layout;
use crate::config::Config;
use crate::etcd_db::EtcdAux;

/// Where Skiff keeps its own data inside an etcd data directory.
pub const SKIFF_SUBDIR: &str = "skiff";

/// Whether the file at `path` starts with a bbolt meta page (bbolt's magic number at
/// byte 16).
pub fn is_bbolt(path: &Path) -> bool {
    let mut head = [0u8; 24];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && u32::from_le_bytes([head[16], head[17], head[18], head[19]]) == 0xED0C_DAED
}

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
    import(&own.db_path, &layout)?;
    Ok(layout)
}

/// Builds Skiff's backend at `layout.db_path` from etcd's `db`.
fn import(etcd_db: &Path, layout: &Layout) -> anyhow::Result<()> {
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
    let aux = EtcdAux::for_import();
    let summary = {
        let backend = Backend::open(&tmp, BackendConfig::default())
            .with_context(|| format!("creating {}", tmp.display()))?;
        etcd::import(etcd_db, &backend, &aux, 0)
            .with_context(|| format!("importing etcd's {}", etcd_db.display()))?
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
        revision = summary.last_key_revision.max(summary.scheduled_compact),
        compact_revision = summary.scheduled_compact,
        etcd_consistent_index = summary.consistent_index,
        leases = aux.imported_leases(),
        alarms = aux.imported_alarms(),
        members_from_flags = true,
        took_ms = started.elapsed().as_millis() as u64,
        "imported an etcd 3.4 data dir; etcd's files are left untouched"
    );
    if aux.skipped_auth_rows() > 0 {
        tracing::warn!(
            rows = aux.skipped_auth_rows(),
            "etcd's auth buckets were not imported (Skiff has no auth yet)"
        );
    }
    Ok(())
}
