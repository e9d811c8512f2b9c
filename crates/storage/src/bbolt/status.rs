//! `etcdctl snapshot status`'s figures for a bbolt file (an etcd `db` or a snapshot
//! file, which is a `db` followed by its sha256), read through [`BoltReader`]:
//!
//! - `hash`: CRC-32C (Castagnoli) over, for every top-level bucket in order, its name
//!   and then each of its rows' key and value (a nested bucket's value counts as
//!   empty), exactly as etcd 3.4's `snapshot.Status` feeds its hasher;
//! - `revision`: the main revision of the last row of the `key` bucket (0 without one);
//! - `total_key`: the rows of all top-level buckets together;
//! - `total_size`: bbolt's size of the file, the high-water mark times the page size
//!   (the sha256 trailer of a snapshot file is not counted).
//!
//! Guarantees: the file is only read; every page the figures need is checked by the
//! reader (damage is an error naming the file and offset, never a panic), and a top-level
//! entry that is not a bucket is refused as etcd refuses it ("cannot get hash of bucket").

use std::path::Path;

use super::reader::{BoltReader, Row};
use super::{BoltError, BoltResult};
use crate::mvcc::codec::parse_rev_key;

/// What `etcdctl snapshot status` reports about a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbStatus {
    /// CRC-32C over the buckets' names and rows (see the module docs).
    pub hash: u32,
    /// Main revision of the last `key` row.
    pub revision: i64,
    /// Rows in all top-level buckets.
    pub total_key: u64,
    /// High-water mark x page size.
    pub total_size: u64,
}

/// Computes [`DbStatus`] for the bbolt file at `path`.
pub fn status(path: &Path) -> BoltResult<DbStatus> {
    let r = BoltReader::open(path)?;
    let mut st = DbStatus {
        total_size: r.size(),
        ..DbStatus::default()
    };
    let mut crc = 0u32;
    // `buckets()` lists only the nested buckets of the root; a plain row there is what
    // etcd refuses, so it is looked for first.
    let names = r.buckets()?;
    if let Some(plain) = r.root_values()?.into_iter().next() {
        return Err(BoltError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: format!(
                "cannot get hash of bucket {}",
                String::from_utf8_lossy(&plain)
            ),
        });
    }
    for name in names {
        crc = crc32c::crc32c_append(crc, &name);
        let is_key = name == b"key";
        r.for_each(&name, &mut |row| {
            match row {
                Row::Value { key, value } => {
                    crc = crc32c::crc32c_append(crc, key);
                    crc = crc32c::crc32c_append(crc, value);
                    if is_key {
                        if let Some((rev, _)) = parse_rev_key(key) {
                            st.revision = rev.main;
                        }
                    }
                }
                Row::Bucket { key } => crc = crc32c::crc32c_append(crc, key),
            }
            st.total_key += 1;
            Ok(())
        })?;
    }
    st.hash = crc;
    Ok(st)
}
