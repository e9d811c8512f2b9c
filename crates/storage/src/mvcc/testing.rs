//! Test-only tools for a **stopped** member's backend: they write the file directly,
//! bypassing the log, to make a member diverge (as a bad disk or a bug would) so that
//! the corruption checks can be exercised. Never call these on a file a running member
//! has open (the backend's file lock refuses it anyway).

use std::path::Path;

use super::codec;
use super::error::Result;
use crate::backend::{Backend, BackendConfig, Table};

/// Replaces, in place, the value of the newest stored version of `key` with `value`
/// (revisions, versions and the consistent index unchanged) and returns that version's
/// revision. `None` if the key has no stored version.
pub fn alter_newest_value(db: &Path, key: &[u8], value: &[u8]) -> Result<Option<i64>> {
    let backend = Backend::open(db, BackendConfig::default())?;
    let found = {
        let tx = backend.begin_read()?;
        let t = tx.open_table(Table::Key)?;
        let mut found = None;
        for row in t.iter()? {
            let (k, v) = row?;
            if let Some(kv) = codec::decode_kv(v.value()) {
                if kv.key == key {
                    // The last one found is the newest (rows are in revision order).
                    found = Some((k.value().to_vec(), kv));
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
    tx.open_table(Table::Key)?
        .insert(row.as_slice(), codec::encode_kv(&kv).as_slice())?;
    backend.commit(tx, 0, true)?;
    Ok(Some(kv.mod_revision))
}
