//! Backend files of the engine Skiff used before its own page store (redb) are
//! converted when they are opened.
//!
//! A file that starts with redb's magic is opened with redb (a redb 2 file is first
//! upgraded to redb 3's format, see `upgrade`), every table is copied in key order into
//! `<file>.converting`, which is committed durably and then renamed over the file (the
//! directory synced after). A crash before the rename leaves the redb file whole and the
//! unfinished copy, removed at the next open, which converts again; after the rename the
//! converted file is complete. Rows are copied as they are: the tables' layout (format
//! version, see the backend's module docs) does not change.

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};
use tracing::info;

use super::{sync_dir_of, BResult, BackendError, Table, WriteTx, LOAD_FLUSH_BYTES};

/// The bytes a redb file starts with.
const REDB_MAGIC: &[u8; 4] = b"redb";

fn converting_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".converting");
    PathBuf::from(name)
}

/// Converts the file at `path` if it is a redb file (see the module docs).
pub(super) fn convert_if_redb(path: &Path, cache_size: usize) -> BResult<()> {
    let copy = converting_path(path);
    if copy.exists() {
        tracing::warn!(file = %copy.display(), "removing an unfinished conversion");
        let _ = std::fs::remove_file(&copy);
    }
    let mut head = [0u8; 4];
    match std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)) {
        Ok(()) if &head == REDB_MAGIC => {}
        _ => return Ok(()),
    }
    let started = std::time::Instant::now();
    info!(file = %path.display(), "converting the backend file from redb to Skiff's page store");
    let rows = copy_all(path, &copy, cache_size).inspect_err(|_| {
        let _ = std::fs::remove_file(&copy);
    })?;
    std::fs::rename(&copy, path).map_err(|source| BackendError::Io {
        path: copy.clone(),
        source,
    })?;
    sync_dir_of(path)?;
    info!(file = %path.display(), rows, took = ?started.elapsed(), "backend file converted");
    Ok(())
}

fn copy_all(path: &Path, copy: &Path, cache_size: usize) -> BResult<u64> {
    let old = super::upgrade::open(path, cache_size)?;
    let new = skiff_pages::Store::open(copy, skiff_pages::Options::default())?;
    let src = old.begin_read()?;
    let tx = WriteTx::new(new.begin_write());
    let (mut rows, mut unflushed) = (0u64, 0usize);
    for table in Table::ALL {
        let from = match src.open_table(redb::TableDefinition::<&[u8], &[u8]>::new(table.name())) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut to = tx.open_table(table)?;
        for row in from.iter()? {
            let (k, v) = row?;
            to.insert(k.value(), v.value())?;
            rows += 1;
            unflushed += k.value().len() + v.value().len();
            if unflushed >= LOAD_FLUSH_BYTES {
                tx.flush()?;
                unflushed = 0;
            }
        }
    }
    tx.into_inner().commit(true)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, BackendConfig, Table};

    #[test]
    fn a_redb_file_is_converted_with_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = redb::Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let def = redb::TableDefinition::<&[u8], &[u8]>::new(Table::Key.name());
                let mut t = tx.open_table(def).unwrap();
                for i in 0u64..20_000 {
                    t.insert(i.to_be_bytes().as_slice(), vec![i as u8; 300].as_slice())
                        .unwrap();
                }
                let def = redb::TableDefinition::<&[u8], &[u8]>::new(Table::Members.name());
                tx.open_table(def)
                    .unwrap()
                    .insert(b"m1".as_slice(), b"member".as_slice())
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        let be = Backend::open(&path, BackendConfig::default()).unwrap();
        assert_eq!(
            be.get(Table::Members, b"m1").unwrap(),
            Some(b"member".to_vec())
        );
        let tx = be.begin_read().unwrap();
        let t = tx.open_table(Table::Key).unwrap();
        assert_eq!(t.len().unwrap(), 20_000);
        for i in [0u64, 10_000, 19_999] {
            let v = crate::backend::ReadableTable::get(&t, i.to_be_bytes().as_slice())
                .unwrap()
                .unwrap();
            assert_eq!(v.value(), vec![i as u8; 300].as_slice());
        }
        drop((tx, be));
        assert!(!super::converting_path(&path).exists());
        assert_ne!(&std::fs::read(&path).unwrap()[..4], b"redb");
    }
}
