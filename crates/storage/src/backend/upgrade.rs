//! Backend files written by redb 2 are upgraded in place to redb 3's file format when
//! they are opened.
//!
//! Skiff's backend moved from redb 2.6 to redb 3: redb 3 frees the pages of a
//! non-durable commit that a later non-durable commit replaced, where redb 2 kept every
//! one of them until the next durable commit. Skiff commits applies without an fsync
//! and makes them durable every `durable_interval`, so under a write load a redb 2 file
//! grew by every page each apply rewrote in between (a 20,000-key member under 2000
//! puts/s held 129 MiB; the same rows alone take 8), and its commits got slower the
//! longer the run of non-durable ones.
//!
//! redb 3 reads only its own format (file format v3) and answers a v2 file with
//! `UpgradeRequired`. Such a file (every member data dir from before the move) is opened
//! once with redb 2.6, whose `upgrade()` rewrites the two header slots and releases the
//! old allocator page, each step a commit of its own: a crash during it leaves a file
//! that one of the two versions opens, and the next start upgrades what is left. Rows
//! and tables are not touched.

use std::path::Path;

use tracing::info;

use super::{BResult, BackendError};

/// Opens (or creates) the redb database at `path`, upgrading a redb 2 file first.
pub(super) fn open(path: &Path, cache_size: usize) -> BResult<redb::Database> {
    let open = || redb::Builder::new().set_cache_size(cache_size).create(path);
    match open() {
        Err(redb::DatabaseError::UpgradeRequired(found)) => {
            info!(file = %path.display(), found, "upgrading the backend file from redb 2's format");
            from_redb2(path)?;
            Ok(open()?)
        }
        other => Ok(other?),
    }
}

/// Rewrites a redb 2 file in redb 3's format (see the module docs).
fn from_redb2(path: &Path) -> BResult<()> {
    let failed = |reason: String| BackendError::Upgrade {
        path: path.to_path_buf(),
        reason,
    };
    let mut db = redb2::Database::open(path).map_err(|e| failed(e.to_string()))?;
    db.upgrade().map_err(|e| failed(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, BackendConfig, ReadableTable, Table};

    #[test]
    fn a_redb2_file_opens_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = redb2::Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let def = redb2::TableDefinition::<&[u8], &[u8]>::new(Table::Key.name());
                let mut t = tx.open_table(def).unwrap();
                for i in 0u64..5000 {
                    t.insert(i.to_be_bytes().as_slice(), vec![i as u8; 300].as_slice())
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }
        assert!(matches!(
            redb::Database::open(&path),
            Err(redb::DatabaseError::UpgradeRequired(_))
        ));
        let be = Backend::open(&path, BackendConfig::default()).unwrap();
        let tx = be.begin_read().unwrap();
        let t = tx.open_table(Table::Key).unwrap();
        assert_eq!(t.len().unwrap(), 5000);
        for i in [0u64, 2500, 4999] {
            let v = t.get(i.to_be_bytes().as_slice()).unwrap().unwrap();
            assert_eq!(v.value(), vec![i as u8; 300].as_slice());
        }
        drop((tx, be));
        // Converted once (redb 2 -> redb 3 -> the page store): it opens as it is now.
        let be = Backend::open(&path, BackendConfig::default()).unwrap();
        assert_eq!(be.scan(Table::Key).unwrap().len(), 5000);
    }
}
