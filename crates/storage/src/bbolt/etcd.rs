//! etcd 3.4's backend layout in a bbolt file, to and from Skiff's backend.
//!
//! etcd keeps these top-level buckets: `key` (MVCC rows: the 17-byte revision key, `t`
//! appended for a tombstone, and an `mvccpb.KeyValue`; Skiff's `key` table holds exactly
//! these bytes), `meta` (`consistent_index` as 8 bytes big-endian; `scheduledCompactRev`
//! and `finishedCompactRev` as 17-byte revision keys with sub-revision 0), `lease`,
//! `members`, `members_removed`, `alarm`, `cluster` (`clusterVersion`), `auth`,
//! `authUsers` and `authRoles`. The server owns the encodings of its tables (leases,
//! members, alarms, auth), so it translates those rows through an [`AuxCodec`].
//!
//! - [`export`] writes such a file from one read transaction of the backend (a
//!   consistent point-in-time view, taken while applies go on), streaming the `key`
//!   table; only the small server-owned tables are collected in memory (to sort them
//!   in etcd's key order).
//! - [`import`] fills an empty backend from such a file, in batches of rows, with the
//!   `meta` marks last, so an import cut short leaves a backend that still reads as
//!   not imported ([`imported_from_etcd`] is false).
//! - [`finish_replay`] resets the consistent index after the server applied etcd's WAL
//!   entries past the file's consistent index to such a backend.
//! - [`verify_snapshot`] checks a snapshot file (db + sha256) as `etcdctl snapshot
//!   restore` does, and reads every page: the library side of a restore.
//! - [`write_restored_db`] copies a snapshot file into the `db` of a member of a
//!   restored etcd cluster (new consistent index, the new members), what
//!   `skiffctl snapshot restore --etcd-layout` writes.

use std::collections::BTreeMap;
use std::path::Path;

use super::reader::{BoltReader, Row};
use super::writer::{BoltWriter, BucketBuilder};
use super::BoltError;
use crate::backend::{meta, read_u64, write_u64, Backend, BackendError, Table};
use crate::mvcc::codec::{parse_rev_key, rev_key, Revision};

/// etcd 3.4's top-level buckets, in bbolt's (byte) order.
pub const BUCKETS: [&str; 10] = [
    "alarm",
    "auth",
    "authRoles",
    "authUsers",
    "cluster",
    "key",
    "lease",
    "members",
    "members_removed",
    "meta",
];

/// The `cluster` bucket's `clusterVersion`, as an etcd 3.4 member writes it.
pub const CLUSTER_VERSION: &[u8] = b"3.4.0";

/// Marks a Skiff backend filled by [`import`] (u64 BE: the etcd file's consistent index).
pub const IMPORTED_MARK: &[u8] = b"imported_from_etcd";

/// Rows the import writes per backend transaction.
const IMPORT_BATCH: usize = 50_000;

/// Rows in etcd's buckets: (bucket, key, value).
pub type EtcdRows = Vec<(&'static str, Vec<u8>, Vec<u8>)>;

/// Rows in Skiff's tables: (table, key, value).
pub type SkiffRows = Vec<(Table, Vec<u8>, Vec<u8>)>;

/// Translates the rows of the server-owned tables to and from etcd's buckets.
pub trait AuxCodec {
    /// The etcd rows (bucket, key, value) for one row of `table`.
    fn etcd_rows(&self, table: Table, key: &[u8], value: &[u8]) -> Result<EtcdRows, String>;

    /// The Skiff rows for one row of etcd's `bucket` (one of the server-owned buckets).
    fn skiff_rows(&self, bucket: &str, key: &[u8], value: &[u8]) -> Result<SkiffRows, String>;
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdDbError {
    #[error(transparent)]
    Bolt(#[from] BoltError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("etcd db {path}: bucket {bucket}, key {key:x?}: {reason}")]
    Row {
        path: String,
        bucket: String,
        key: Vec<u8>,
        reason: String,
    },
    /// The sha256 trailer of a snapshot file does not match its data (etcd's message:
    /// the trailer, then the data's hash, as Go prints byte slices).
    #[error("expected sha256 {}, got {}", go_bytes(expected), go_bytes(got))]
    HashMismatch {
        path: std::path::PathBuf,
        expected: Vec<u8>,
        got: Vec<u8>,
    },
    #[error("{0}")]
    Other(String),
}

/// Go's `%v` of a byte slice: `[1 2 3]`.
fn go_bytes(b: &[u8]) -> String {
    let items: Vec<String> = b.iter().map(u8::to_string).collect();
    format!("[{}]", items.join(" "))
}

impl From<redb::Error> for EtcdDbError {
    fn from(e: redb::Error) -> Self {
        EtcdDbError::Backend(BackendError::Redb(Box::new(e)))
    }
}

macro_rules! redb_into {
    ($($t:ty),*) => {$(
        impl From<$t> for EtcdDbError {
            fn from(e: $t) -> Self {
                EtcdDbError::Backend(BackendError::from(e))
            }
        }
    )*};
}
redb_into!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What an export or import moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EtcdDbSummary {
    /// Size of the bbolt file.
    pub bytes: u64,
    /// Rows of the `key` bucket.
    pub key_rows: u64,
    /// Main revision of the last `key` row (what `etcdctl snapshot status` reports).
    pub last_key_revision: i64,
    pub consistent_index: u64,
    pub scheduled_compact: i64,
    pub finished_compact: i64,
}

/// A revision key `main`_0, as etcd stores its compaction marks (the `key` table's own
/// encoding).
fn rev_bytes(main: i64) -> Vec<u8> {
    rev_key(Revision::new(main, 0), false)
}

/// Writes the backend, as one consistent view, to `path` as an etcd 3.4 `db` file.
pub fn export(
    backend: &Backend,
    path: &Path,
    aux: &dyn AuxCodec,
) -> Result<EtcdDbSummary, EtcdDbError> {
    let tx = backend.begin_read()?;
    let mut summary = EtcdDbSummary::default();
    // The small tables, translated and sorted by bucket and key.
    let mut small: BTreeMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
    for table in [Table::Lease, Table::Members, Table::Alarm, Table::Auth] {
        let t = tx.open_table(table)?;
        for row in t.iter()? {
            let (k, v) = row?;
            let rows = aux
                .etcd_rows(table, k.value(), v.value())
                .map_err(|reason| EtcdDbError::Row {
                    path: backend.path().display().to_string(),
                    bucket: table.name().into(),
                    key: k.value().to_vec(),
                    reason,
                })?;
            for (bucket, k, v) in rows {
                small.entry(bucket).or_default().insert(k, v);
            }
        }
    }
    {
        let m = tx.open_table(Table::Meta)?;
        summary.consistent_index = read_u64(&m, meta::CONSISTENT_INDEX)?;
        summary.scheduled_compact = read_u64(&m, meta::SCHEDULED_COMPACT)? as i64;
        summary.finished_compact = read_u64(&m, meta::FINISHED_COMPACT)? as i64;
        let rows = small.entry("meta").or_default();
        rows.insert(
            b"consistent_index".to_vec(),
            summary.consistent_index.to_be_bytes().to_vec(),
        );
        if summary.scheduled_compact > 0 {
            rows.insert(
                b"scheduledCompactRev".to_vec(),
                rev_bytes(summary.scheduled_compact),
            );
        }
        if summary.finished_compact > 0 {
            rows.insert(
                b"finishedCompactRev".to_vec(),
                rev_bytes(summary.finished_compact),
            );
        }
        small
            .entry("cluster")
            .or_default()
            .insert(b"clusterVersion".to_vec(), CLUSTER_VERSION.to_vec());
    }
    let mut w = BoltWriter::create(path)?;
    let mut buckets = Vec::new();
    for name in BUCKETS {
        let mut b = BucketBuilder::new();
        if name == "key" {
            let t = tx.open_table(Table::Key)?;
            for row in t.iter()? {
                let (k, v) = row?;
                let (rev, _) = parse_rev_key(k.value()).ok_or_else(|| EtcdDbError::Row {
                    path: backend.path().display().to_string(),
                    bucket: "key".into(),
                    key: k.value().to_vec(),
                    reason: "not a revision key".into(),
                })?;
                summary.last_key_revision = rev.main;
                b.put(&mut w, k.value(), v.value())?;
            }
            summary.key_rows = b.rows();
        } else if let Some(rows) = small.remove(name) {
            for (k, v) in rows {
                b.put(&mut w, &k, &v)?;
            }
        }
        buckets.push((name.as_bytes().to_vec(), b.finish(&mut w)?));
    }
    if let Some(name) = small.keys().next() {
        return Err(EtcdDbError::Other(format!(
            "the aux codec produced rows for {name:?}, which is not an etcd 3.4 bucket"
        )));
    }
    summary.bytes = w.finish(buckets)?.bytes;
    Ok(summary)
}

/// What [`verify_snapshot`] found in a snapshot file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotCheck {
    /// Bytes of the bbolt file (the snapshot without its sha256 trailer).
    pub db_bytes: u64,
    /// Whether the file ends with a sha256 (then it matched).
    pub has_hash: bool,
    /// Rows of the `key` bucket and the main revision of the last one.
    pub key_rows: u64,
    pub revision: i64,
}

/// Checks a snapshot file as `etcdctl snapshot restore` does before using it: a file
/// whose size is 32 more than a multiple of 512 ends with the sha256 of the rest, which
/// must match (`skip_hash_check` accepts a file without one, never a wrong one); then
/// every page of every bucket is read and checked. The file is only read.
pub fn verify_snapshot(path: &Path, skip_hash_check: bool) -> Result<SnapshotCheck, EtcdDbError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;

    let io = |source| {
        EtcdDbError::Bolt(BoltError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let has_hash = len % 512 == 32;
    let mut check = SnapshotCheck {
        db_bytes: if has_hash { len - 32 } else { len },
        has_hash,
        ..Default::default()
    };
    if has_hash {
        let mut sha = Sha256::new();
        let mut left = check.db_bytes;
        let mut buf = vec![0u8; 1 << 16];
        while left > 0 {
            let n = buf.len().min(left as usize);
            file.read_exact(&mut buf[..n]).map_err(io)?;
            sha.update(&buf[..n]);
            left -= n as u64;
        }
        let mut trailer = [0u8; 32];
        file.read_exact(&mut trailer).map_err(io)?;
        let digest = sha.finalize();
        if digest.as_slice() != trailer {
            return Err(EtcdDbError::HashMismatch {
                path: path.to_path_buf(),
                expected: trailer.to_vec(),
                got: digest.to_vec(),
            });
        }
    } else if !skip_hash_check {
        // etcd's message (a file of {len} bytes is not a bbolt file plus a sha256).
        return Err(EtcdDbError::Other(
            "snapshot missing hash but --skip-hash-check=false".into(),
        ));
    }
    let r = BoltReader::open(path)?;
    if r.size() > check.db_bytes {
        return Err(EtcdDbError::Other(format!(
            "{}: the db says it has {} bytes, the snapshot holds {}",
            path.display(),
            r.size(),
            check.db_bytes
        )));
    }
    for name in r.buckets()? {
        let is_key = name == b"key";
        r.for_each(&name, &mut |row| {
            if let (true, Row::Value { key, .. }) = (is_key, row) {
                check.key_rows += 1;
                if let Some((rev, _)) = parse_rev_key(key) {
                    check.revision = rev.main;
                }
            }
            Ok(())
        })?;
    }
    Ok(check)
}

/// What [`inspect`] tells about an etcd `db` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdDbInfo {
    pub consistent_index: u64,
    /// Keys of the `members` bucket (member IDs in hex).
    pub members: Vec<Vec<u8>>,
}

/// Reads an etcd `db` file's consistent index and member keys (it is only read).
pub fn inspect(path: &Path) -> Result<EtcdDbInfo, EtcdDbError> {
    let r = BoltReader::open(path)?;
    let mut info = EtcdDbInfo::default();
    if r.has_bucket(b"meta")? {
        r.for_each(b"meta", &mut |row| {
            if let Row::Value { key, value } = row {
                if key == b"consistent_index" && value.len() == 8 {
                    info.consistent_index = u64::from_be_bytes(value.try_into().expect("8 bytes"));
                }
            }
            Ok(())
        })?;
    }
    if r.has_bucket(b"members")? {
        r.for_each(b"members", &mut |row| {
            if let Row::Value { key, .. } = row {
                info.members.push(key.to_vec());
            }
            Ok(())
        })?;
    }
    Ok(info)
}

/// Ends a replay of etcd's WAL entries into a backend that [`import`] filled: the
/// entries were applied with etcd's log indexes, which moved the backend's consistent
/// index; it is set back to `consistent_index` (where the caller's own Raft log
/// resumes), and the import mark records `etcd_index`, the last etcd entry the backend
/// holds. Durable when it returns.
pub fn finish_replay(
    backend: &Backend,
    consistent_index: u64,
    etcd_index: u64,
) -> Result<(), EtcdDbError> {
    let tx = backend.begin_write()?;
    {
        let mut m = tx.open_table(Table::Meta)?;
        write_u64(&mut m, meta::CONSISTENT_INDEX, consistent_index)?;
        write_u64(&mut m, meta::TERM, 0)?;
        write_u64(&mut m, IMPORTED_MARK, etcd_index)?;
    }
    backend.commit(tx, consistent_index, true)?;
    Ok(())
}

/// Whether `backend` was filled by [`import`] (and the import completed).
pub fn imported_from_etcd(backend: &Backend) -> Result<bool, EtcdDbError> {
    Ok(backend.get(Table::Meta, IMPORTED_MARK)?.is_some())
}

/// Fills `backend` (which must hold no keys) from the etcd 3.4 `db` file at `path`. The
/// backend's consistent index is set to `consistent_index` (the index the caller's Raft
/// log resumes from, 0 for a new log). The file is only read.
pub fn import(
    path: &Path,
    backend: &Backend,
    aux: &dyn AuxCodec,
    consistent_index: u64,
) -> Result<EtcdDbSummary, EtcdDbError> {
    let r = BoltReader::open(path)?;
    let row_err = |bucket: &str, key: &[u8], reason: String| EtcdDbError::Row {
        path: path.display().to_string(),
        bucket: bucket.into(),
        key: key.to_vec(),
        reason,
    };
    {
        let tx = backend.begin_read()?;
        if !tx.open_table(Table::Key)?.is_empty()? {
            return Err(EtcdDbError::Other(format!(
                "cannot import {} into {}: the backend already holds keys",
                path.display(),
                backend.path().display()
            )));
        }
    }
    let mut summary = EtcdDbSummary {
        bytes: r.size(),
        ..Default::default()
    };
    // meta first: it is small, and tells the compaction marks.
    let mut etcd_ci = 0;
    if r.has_bucket(b"meta")? {
        r.for_each(b"meta", &mut |row| {
            let Row::Value { key, value } = row else {
                return Ok(());
            };
            let rev = |v: &[u8]| -> Result<i64, BoltError> {
                match v.len() {
                    17 | 8 => Ok(i64::from_be_bytes(v[..8].try_into().expect("8 bytes"))),
                    n => Err(BoltError::Invalid {
                        path: path.to_path_buf(),
                        reason: format!("meta {key:?}: a revision of {n} bytes"),
                    }),
                }
            };
            match key {
                b"consistent_index" => etcd_ci = rev(value)? as u64,
                b"scheduledCompactRev" => summary.scheduled_compact = rev(value)?,
                b"finishedCompactRev" => summary.finished_compact = rev(value)?,
                _ => {}
            }
            Ok(())
        })?;
    }
    summary.consistent_index = etcd_ci;

    // Rows, in batches: (table, key, value).
    let mut batch: SkiffRows = Vec::new();
    let flush = |batch: &mut SkiffRows| -> Result<(), EtcdDbError> {
        if batch.is_empty() {
            return Ok(());
        }
        let tx = backend.begin_write()?;
        {
            let mut tables = BTreeMap::new();
            for (t, k, v) in batch.drain(..) {
                if let std::collections::btree_map::Entry::Vacant(e) = tables.entry(t.name()) {
                    e.insert(tx.open_table(t)?);
                }
                tables
                    .get_mut(t.name())
                    .expect("opened above")
                    .insert(k.as_slice(), v.as_slice())?;
            }
        }
        backend.commit(tx, 0, false)?;
        Ok(())
    };
    let mut max_rev = 0i64;
    let mut deferred: Option<EtcdDbError> = None;
    if r.has_bucket(b"key")? {
        r.for_each(b"key", &mut |row| {
            let Row::Value { key, value } = row else {
                return Ok(());
            };
            let Some((rev, _)) = parse_rev_key(key) else {
                deferred = Some(row_err("key", key, "not a revision key".into()));
                return Err(BoltError::Invalid {
                    path: path.to_path_buf(),
                    reason: "bad key row".into(),
                });
            };
            max_rev = max_rev.max(rev.main);
            summary.key_rows += 1;
            summary.last_key_revision = rev.main;
            batch.push((Table::Key, key.to_vec(), value.to_vec()));
            if batch.len() >= IMPORT_BATCH {
                if let Err(e) = flush(&mut batch) {
                    deferred = Some(e);
                    return Err(BoltError::Invalid {
                        path: path.to_path_buf(),
                        reason: "backend write failed".into(),
                    });
                }
            }
            Ok(())
        })
        .map_err(|e| deferred.take().unwrap_or(EtcdDbError::Bolt(e)))?;
    }
    for bucket in [
        "lease",
        "members",
        "alarm",
        "auth",
        "authUsers",
        "authRoles",
    ] {
        if !r.has_bucket(bucket.as_bytes())? {
            continue;
        }
        let mut rows = Vec::new();
        r.for_each(bucket.as_bytes(), &mut |row| {
            if let Row::Value { key, value } = row {
                rows.push((key.to_vec(), value.to_vec()));
            }
            Ok(())
        })?;
        for (k, v) in rows {
            let out = aux
                .skiff_rows(bucket, &k, &v)
                .map_err(|reason| row_err(bucket, &k, reason))?;
            batch.extend(out);
        }
    }
    flush(&mut batch)?;
    // The marks last, durably: only now does the backend read as imported.
    let tx = backend.begin_write()?;
    {
        let mut m = tx.open_table(Table::Meta)?;
        write_u64(&mut m, meta::CONSISTENT_INDEX, consistent_index)?;
        write_u64(&mut m, meta::TERM, 0)?;
        let rev = max_rev.max(summary.scheduled_compact).max(1);
        write_u64(&mut m, meta::REVISION, rev as u64)?;
        write_u64(
            &mut m,
            meta::SCHEDULED_COMPACT,
            summary.scheduled_compact.max(0) as u64,
        )?;
        write_u64(
            &mut m,
            meta::FINISHED_COMPACT,
            summary.finished_compact.max(0) as u64,
        )?;
        write_u64(&mut m, IMPORTED_MARK, etcd_ci)?;
    }
    backend.commit(tx, consistent_index, true)?;
    Ok(summary)
}

/// Writes `dst`, a new etcd 3.4 `db` for a member of a restored cluster, from the
/// snapshot file `src` (a sha256 trailer, if any, is left out): every bucket and row is
/// copied, except that `meta`'s `consistent_index` becomes `consistent_index` (8 bytes
/// big-endian, so that etcd applies the entries of the new cluster's log past it) and the
/// `members` bucket holds exactly `members` (key, value: etcd's member rows) while
/// `members_removed` is emptied: the old cluster's membership does not come over. The
/// `members`, `members_removed` and `meta` buckets exist afterwards even if `src` lacked
/// them. `src` is only read; a nested bucket in `src` (etcd 3.4 writes none) is refused.
pub fn write_restored_db(
    src: &Path,
    dst: &Path,
    consistent_index: u64,
    members: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<EtcdDbSummary, EtcdDbError> {
    let r = BoltReader::open(src)?;
    let mut names: Vec<Vec<u8>> = r.buckets()?;
    for must in [&b"members"[..], b"members_removed", b"meta"] {
        if !names.iter().any(|n| n == must) {
            names.push(must.to_vec());
        }
    }
    names.sort();
    let mut w = BoltWriter::create(dst)?;
    let mut summary = EtcdDbSummary {
        consistent_index,
        ..Default::default()
    };
    let mut buckets = Vec::new();
    for name in names {
        let mut b = BucketBuilder::new();
        match name.as_slice() {
            b"members" => {
                for (k, v) in members {
                    b.put(&mut w, k, v)?;
                }
            }
            b"members_removed" => {}
            _ => {
                let is_meta = name == b"meta";
                let is_key = name == b"key";
                let mut ci_written = false;
                let put_ci = |b: &mut BucketBuilder, w: &mut BoltWriter| {
                    b.put(w, b"consistent_index", &consistent_index.to_be_bytes())
                };
                if r.has_bucket(&name)? {
                    r.for_each(&name, &mut |row| match row {
                        Row::Value { key, value } => {
                            if is_meta && !ci_written && key >= &b"consistent_index"[..] {
                                put_ci(&mut b, &mut w)?;
                                ci_written = true;
                                if key == b"consistent_index" {
                                    return Ok(());
                                }
                            }
                            if is_key {
                                summary.key_rows += 1;
                                if let Some((rev, _)) = parse_rev_key(key) {
                                    summary.last_key_revision = rev.main;
                                }
                            }
                            b.put(&mut w, key, value)
                        }
                        Row::Bucket { key } => Err(BoltError::Invalid {
                            path: src.to_path_buf(),
                            reason: format!(
                                "bucket {:?} holds a nested bucket {:?} (etcd 3.4 nests none)",
                                String::from_utf8_lossy(&name),
                                String::from_utf8_lossy(key)
                            ),
                        }),
                    })?;
                }
                if is_meta && !ci_written {
                    put_ci(&mut b, &mut w)?;
                }
            }
        }
        buckets.push((name, b.finish(&mut w)?));
    }
    summary.bytes = w.finish(buckets)?.bytes;
    Ok(summary)
}
