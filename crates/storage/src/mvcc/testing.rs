//! Test-only tools for a **stopped** member's backend: they write the file directly,
//! bypassing the log, to make a member diverge (as a bad disk or a bug would) so that
//! the corruption checks can be exercised. Never call these on a file a running member
//! has open (redb's file lock refuses it anyway).

use std::path::Path;

use redb::ReadableTable;

use super::codec;
use super::error::Result;
use crate::backend::{Backend, BackendConfig, BackendError, Table};

/// Replaces, in place, the value of the newest stored version of `key` with `value`
/// (revisions, versions and the consistent index unchanged) and returns that version's
/// revision. `None` if the key has no stored version.
pub fn alter_newest_value(db: &Path, key: &[u8], value: &[u8]) -> Result<Option<i64>> {
    let backend = Backend::open(db, BackendConfig::default())?;
    let found = {
        let tx = backend.begin_read()?;
        let t = tx
            .open_table(Table::Key.def())
            .map_err(BackendError::from)?;
        let mut found = None;
        for row in t.iter().map_err(BackendError::from)?.rev() {
            let (k, v) = row.map_err(BackendError::from)?;
            if let Some(kv) = codec::decode_kv(v.value()) {
                if kv.key == key {
                    found = Some((k.value().to_vec(), kv));
                    break;
                }
            }
        }
        found
    };
    let Some((row, mut kv)) = found else {
        return Ok(None);
    };
    kv.value = value.to_vec();
    let tx = backend.begin_write()?;
    tx.open_table(Table::Key.def())
        .map_err(BackendError::from)?
        .insert(row.as_slice(), codec::encode_kv(&kv).as_slice())
        .map_err(BackendError::from)?;
    backend.commit(tx, 0, true)?;
    Ok(Some(kv.mod_revision))
}
