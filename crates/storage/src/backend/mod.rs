//! The backend: one page file (`skiff_pages`, Skiff's own copy-on-write B+tree) holding
//! everything the state machine owns.
//!
//! Tables (all `bytes -> bytes`): `key` (MVCC rows, revision -> KeyValue, see
//! `mvcc::codec`), `meta` (consistent index and term, current revision, scheduled and
//! finished compaction revisions), and tables the server owns: `lease`, `auth`, `members`,
//! `alarm`, `session`. Transactions and table handles are in the `txn` module.
//!
//! # Durability and why batching without fsync is safe
//! Applies commit lazily: the write is visible to readers at once but not fsynced. A
//! durable (fsynced) commit happens once `durable_interval` has passed since the last
//! one (or, when set, once `durable_after_entries` entries were applied since; etcd's
//! `--backend-batch-interval` and `--backend-batch-limit`), from the store's maintenance
//! thread, and whenever the server asks ([`Backend::sync`], e.g. before a shutdown); a
//! snapshot's WAL release waits for one ([`Backend::wait_durable`], off the apply path).
//! A crash reopens the file at its last durable commit and the WAL replays the rest.
//!
//! Durable commits stay off the apply path: there is one writer, and a durable commit
//! holds it while the file's dirty pages are written back, so an apply that ran into one
//! would wait for every page written since the last. The maintenance thread makes them
//! ([`Backend::maintain_durability`]), once `durable_interval` has passed: it first
//! flushes the file with `fdatasync` outside the writer while applies go on, so the
//! commit that follows finds little left to write (its own two `fdatasync`s, around the
//! meta page). Between durable commits the same thread writes back what applies wrote
//! every [`PRESYNC_INTERVAL`]: a second's worth of pages written back at once took 13-27
//! ms of the disk, and the WAL fsyncs queued behind it on every member made about 1% of
//! a 100 puts/s watch stream 15 ms late (measured with redb, the engine before).
//! An apply commits durably itself only if no durable commit happened for
//! [`INLINE_DURABLE_FACTOR`] intervals (the maintenance thread is stuck), so WAL release
//! never lags unboundedly.
//! WAL segments may be released only up to [`Backend::durable_consistent_index`].
//!
//! # A failed write-back or commit is final (fsyncgate)
//! The first failure of a write-back (`fdatasync`) or of a commit (EIO, ENOSPC, ...)
//! is recorded ([`Backend::failure`]) and every later commit and write-back is refused
//! with [`BackendError::Failed`], naming the file and the first error: after a failed
//! `fdatasync` Linux may have dropped the dirty pages, and a retried one reports
//! success for data that never reached the disk, so retrying would let the durable
//! consistent index (and with it WAL release) pass rows that are not on the disk. The
//! server stops the member when it sees the failure; a restart replays the WAL from
//! the last durable commit.
//!
//! # Space in use
//! [`Backend::size_bytes`] is etcd's `dbSize`: the file's length, which the page store
//! keeps to what its tree and not-yet-reusable freed pages take (free pages at the end
//! are cut off after a durable commit). [`Backend::in_use_bytes`] is `dbSizeInUse`: the
//! pages the newest tree reaches, which the store keeps count of as it commits, so it
//! drops as soon as a compaction's deletes commit; the file's length drops where free
//! pages reach its end, and otherwise at a defragmentation.
//!
//! # Snapshots
//! [`Backend::dump`] streams every table inside one read transaction (a consistent
//! point-in-time view; copying a live file is not safe) followed by a CRC32C of the
//! whole stream; [`Backend::restore`] checks every length against a bound before
//! allocating and the checksum before the restored file replaces anything.
//!
//! # Defragmentation
//! [`Backend::defragment`] rebuilds the file compactly while writes go on and swaps it in
//! under a short pause (the last rows and one fsync; see the `defrag` module); the database handle is the
//! only thing it replaces, and every transaction begins on the current one.
//!
//! # Commit observer
//! [`Backend::observe_commits`] installs a function told the duration of every commit of
//! an apply or sync transaction (the page store's commit, its fsyncs included when durable): what
//! etcd reports as `etcd_disk_backend_commit_duration_seconds`. It runs on the
//! committing thread, so it must be quick (a histogram update).
//!
//! # Format versions
//!
//! `meta` holds `format_version` (u64 BE): the layout of the tables in this file, as
//! [`FORMAT_VERSION`] numbers them. [`Backend::open`] reads it before touching anything
//! else and refuses a file of a newer version with [`BackendError::UnsupportedVersion`]
//! (naming the file and both versions), so a downgraded Skiff never misreads it; it
//! otherwise writes its own version, in the same transaction as any migration (none
//! exist yet). A dump carries the source's `meta` rows, so loading one checks its
//! `format_version` the same way ([`BackendError::UnsupportedDumpVersion`]).
//!
//! - **Version 1**: the tables above; `key` rows as `mvcc::codec` describes. Files
//!   written before versions existed have no `format_version` and are version 1 (open
//!   adds it). Skiffs from before versions existed ignore the key: they cannot refuse a
//!   newer file, which is why a newer version that changes the layout should also
//!   change something they do check.
//!
//! The page store's own file format is separate from these versions (its meta page
//! names it). Files written by the redb engine Skiff used before (redb 3 and 4's format,
//! and redb 2's, upgraded first) are converted when they are opened (the `migrate`
//! module); a Skiff from before the conversion cannot open the converted file, so going
//! back means restoring a snapshot taken before it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use skiff_pages::Store;

mod defrag;
mod migrate;
mod txn;
mod upgrade;
pub use defrag::DefragReport;
pub use txn::{Key, ReadTx, ReadableTable, Rows, TableRead, TableWrite, Value, WriteTx};

/// A backend table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// MVCC rows (owned by the mvcc module).
    Key,
    /// Consistent index, term, revision and compaction marks (owned by this crate).
    Meta,
    Lease,
    Auth,
    Members,
    Alarm,
    /// Client sessions' stored results (owned by the server's `session` module).
    Session,
}

impl Table {
    pub const ALL: [Table; 7] = [
        Table::Key,
        Table::Meta,
        Table::Lease,
        Table::Auth,
        Table::Members,
        Table::Alarm,
        Table::Session,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Key => "key",
            Table::Meta => "meta",
            Table::Lease => "lease",
            Table::Auth => "auth",
            Table::Members => "members",
            Table::Alarm => "alarm",
            Table::Session => "session",
        }
    }

    /// The table's id in the page store (and in dumps).
    pub(crate) fn id(self) -> u8 {
        match self {
            Table::Key => 1,
            Table::Meta => 2,
            Table::Lease => 3,
            Table::Auth => 4,
            Table::Members => 5,
            Table::Alarm => 6,
            Table::Session => 7,
        }
    }

    fn from_id(id: u8) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.id() == id)
    }
}

/// Names of the u64 values in the `meta` table.
pub(crate) mod meta {
    pub const CONSISTENT_INDEX: &[u8] = b"consistent_index";
    pub const TERM: &[u8] = b"term";
    pub const REVISION: &[u8] = b"revision";
    pub const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
    pub const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
    /// The file's format version (see the module docs); absent means version 1.
    pub const FORMAT_VERSION: &[u8] = b"format_version";
}

/// The backend format version this Skiff writes and the newest it reads (see "Format
/// versions" in the module docs).
pub const FORMAT_VERSION: u64 = 1;

/// The version files written before versions existed are in.
const UNVERSIONED: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend: {0}")]
    Pages(skiff_pages::Error),
    /// Reading a file of the engine before (redb) to convert it.
    #[error("backend: {0}")]
    Redb(Box<redb::Error>),
    #[error("backend: i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("backend: corrupt data: {0}")]
    Corrupt(String),
    /// An earlier write-back or commit of the file failed; it is not written again
    /// (see "A failed write-back or commit is final" in the module docs).
    #[error("backend: {} is not written after an earlier failure: {reason}", path.display())]
    Failed { path: PathBuf, reason: String },
    /// The file was written by a newer Skiff in a format this one cannot read.
    #[error(
        "backend: {} has format version {found}, this Skiff reads up to {supported}; \
         upgrade Skiff",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    /// A snapshot dump comes from a backend of a newer format than this Skiff reads.
    #[error(
        "backend: snapshot dump has format version {found}, this Skiff reads up to \
         {supported}; upgrade Skiff"
    )]
    UnsupportedDumpVersion { found: u64, supported: u64 },
    /// A file in redb 2's format could not be upgraded to redb 3's (see `upgrade`).
    #[error("backend: upgrading {} from redb 2's file format failed: {reason}", path.display())]
    Upgrade { path: PathBuf, reason: String },
}

impl From<skiff_pages::Error> for BackendError {
    fn from(e: skiff_pages::Error) -> Self {
        match e {
            // An I/O error names the file (ENOSPC, EIO: which disk to look at).
            skiff_pages::Error::Io { path, source } => BackendError::Io { path, source },
            skiff_pages::Error::Corrupt(what) => BackendError::Corrupt(what),
            other => BackendError::Pages(other),
        }
    }
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for BackendError {
            fn from(e: $t) -> Self {
                BackendError::Redb(Box::new(e.into()))
            }
        }
    )*};
}
redb_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type BResult<T> = std::result::Result<T, BackendError>;

impl BackendError {
    /// Whether opening failed because another process (a running member) holds the file.
    pub fn is_already_open(&self) -> bool {
        matches!(
            self,
            BackendError::Pages(skiff_pages::Error::AlreadyOpen(_))
        ) || matches!(self, BackendError::Redb(e) if matches!(**e, redb::Error::DatabaseAlreadyOpen))
    }
}

/// Backend tuning.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// Bytes of nodes the page store keeps in memory once read or written; it counts
    /// toward the member's RSS (the operating system's cache holds the file besides).
    pub cache_size: usize,
    /// Longest time between durable (fsynced) commits while applies go on
    /// (`--backend-batch-interval`).
    pub durable_interval: Duration,
    /// Entries applied since the last durable commit that make one due before
    /// `durable_interval` has passed (`--backend-batch-limit`; `None`: time alone).
    pub durable_after_entries: Option<u64>,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            // Branch nodes and the leaves being written stay; other leaves come from
            // the operating system's cache, checked again when read.
            cache_size: 16 << 20,
            // A durable commit (from the maintenance thread, after a presync; see the
            // module docs) holds the writer for the write-back of what was written since
            // the presync and the meta page, a few ms. Every second bounds what a crash
            // replays from the WAL and how long pages freed by lazy commits wait before
            // they may be reused (the file grows by what a second of writes copies).
            durable_interval: Duration::from_secs(1),
            // etcd's backend commits after 10,000 pending operations as well; here a
            // second of applies is what a crash replays either way, so the time bound
            // alone is the default and the entry bound is the operator's choice.
            durable_after_entries: None,
        }
    }
}

/// The page store plus its durability bookkeeping.
pub struct Backend {
    /// The open store; replaced (never otherwise changed) by [`Backend::defragment`].
    db: RwLock<Store>,
    path: PathBuf,
    cfg: BackendConfig,
    last_durable: Mutex<Instant>,
    /// Consistent index covered by the last durable commit.
    durable_index: AtomicU64,
    /// Consistent index of the last commit (durable or not).
    last_index: AtomicU64,
    /// Told the duration of every [`Backend::commit`] (see the module docs).
    commit_observer: OnceLock<CommitObserver>,
    /// Held by the one [`Backend::defragment`] running.
    defragmenting: Mutex<()>,
    /// Held by a defragmentation from its last durable catch-up round until the new
    /// file is durable under the database's name, and by [`Backend::sync`], so a sync
    /// lands either before that round (which then copies it durably) or after the new
    /// file is durable (see the `defrag` module).
    swap_window: Mutex<()>,
    /// Set during a defragmentation's swap window: a durable commit then does not
    /// advance `durable_index`, since the file a crash would leave may be the copy,
    /// durable only up to its last catch-up round.
    durable_frozen: std::sync::atomic::AtomicBool,
    /// The first write-back or commit failure (see the module docs); set once.
    failure: OnceLock<String>,
    /// The file's size after the last commit ([`Backend::cached_size_bytes`]).
    size: AtomicU64,
    /// When the last presync ended, in ms since `opened`, and the consistent index
    /// written before it began.
    last_presync_ms: AtomicU64,
    presynced_index: AtomicU64,
    opened: Instant,
}

/// An apply commits durably itself after this many `durable_interval`s without a
/// durable commit (normally the maintenance thread's comes first).
pub const INLINE_DURABLE_FACTOR: u32 = 4;

/// Between durable commits, the maintenance thread writes back what applies wrote at
/// most this often (see the module docs).
pub const PRESYNC_INTERVAL: Duration = Duration::from_millis(100);

/// [`Backend::wait_durable`] makes the durable commit itself after at most this long.
const DURABLE_WAIT_LIMIT: Duration = Duration::from_secs(3);
/// How often [`Backend::wait_durable`] looks at the durable consistent index.
const DURABLE_POLL: Duration = Duration::from_millis(10);

/// How [`Backend::commit_as`] commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Commit {
    /// Visible at once, not fsynced.
    Lazy,
    /// fsynced.
    Durable,
}

/// Receives the duration of each backend commit; see [`Backend::observe_commits`].
pub type CommitObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// A dump being loaded is written out of memory every this many bytes of rows.
const LOAD_FLUSH_BYTES: usize = 8 << 20;

/// The page store's options for this configuration.
fn store_options(cfg: &BackendConfig) -> skiff_pages::Options {
    skiff_pages::Options {
        cache_bytes: cfg.cache_size,
    }
}

/// Largest key or value accepted by [`Backend::restore`]; bounds allocation on bad input.
const MAX_DUMP_FIELD: u32 = 256 << 20;
const DUMP_MAGIC: &[u8; 8] = b"SKFDUMP1";

/// What a dump or restore moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpSummary {
    pub bytes: u64,
    pub records: u64,
    /// CRC32C of the stream before the trailer.
    pub checksum: u32,
    pub consistent_index: u64,
    pub term: u64,
}

pub(crate) fn read_u64<T: ReadableTable>(t: &T, key: &[u8]) -> BResult<u64> {
    match t.get(key)? {
        Some(v) => {
            let b: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| BackendError::Corrupt(format!("meta value {key:?} is not 8 bytes")))?;
            Ok(u64::from_be_bytes(b))
        }
        None => Ok(0),
    }
}

/// The `format_version` in `meta`: `None` if absent (a file from before versions).
fn read_version<T: ReadableTable>(t: &T) -> BResult<Option<u64>> {
    if t.get(meta::FORMAT_VERSION)?.is_none() {
        return Ok(None);
    }
    match read_u64(t, meta::FORMAT_VERSION)? {
        0 => Err(BackendError::Corrupt("meta format_version is 0".into())),
        v => Ok(Some(v)),
    }
}

pub(crate) fn write_u64(t: &mut TableWrite<'_>, key: &[u8], v: u64) -> BResult<()> {
    t.insert(key, v.to_be_bytes().as_slice())
}

impl Backend {
    /// Opens (or creates) the database file at `path`. A file of a newer format version
    /// is refused, unchanged; otherwise the current version is recorded (see the module
    /// docs). A file of the engine before (redb) is converted first (`migrate`).
    pub fn open(path: impl AsRef<Path>, cfg: BackendConfig) -> BResult<Backend> {
        let path = path.as_ref().to_path_buf();
        // A defragmentation cut short leaves its unfinished copy; the file is still whole.
        defrag::remove_leftover(&path);
        migrate::convert_if_redb(&path, cfg.cache_size)?;
        let db = Store::open(&path, store_options(&cfg))?;
        let be = Backend {
            db: RwLock::new(db),
            path,
            cfg,
            last_durable: Mutex::new(Instant::now()),
            durable_index: AtomicU64::new(0),
            last_index: AtomicU64::new(0),
            commit_observer: OnceLock::new(),
            defragmenting: Mutex::new(()),
            swap_window: Mutex::new(()),
            durable_frozen: std::sync::atomic::AtomicBool::new(false),
            failure: OnceLock::new(),
            size: AtomicU64::new(0),
            last_presync_ms: AtomicU64::new(0),
            presynced_index: AtomicU64::new(0),
            opened: Instant::now(),
        };
        let tx = be.begin_write()?;
        let found = {
            let m = tx.open_table(Table::Meta)?;
            read_version(&m)?.unwrap_or(UNVERSIONED)
        };
        if found > FORMAT_VERSION {
            tx.abort()?;
            return Err(BackendError::UnsupportedVersion {
                path: be.path,
                found,
                supported: FORMAT_VERSION,
            });
        }
        // Migrations from older versions would run here, in this transaction.
        write_u64(
            &mut tx.open_table(Table::Meta)?,
            meta::FORMAT_VERSION,
            FORMAT_VERSION,
        )?;
        tx.into_inner().commit(true)?;
        let (ci, _) = be.consistent_index()?;
        be.durable_index.store(ci, Ordering::SeqCst);
        be.last_index.store(ci, Ordering::SeqCst);
        be.size.store(be.size_bytes()?, Ordering::Relaxed);
        Ok(be)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version recorded in the file (see the module docs).
    pub fn format_version(&self) -> BResult<u64> {
        let tx = self.begin_read()?;
        let t = tx.open_table(Table::Meta)?;
        Ok(read_version(&t)?.unwrap_or(UNVERSIONED))
    }

    /// Installs the function told the duration of every later commit (the first call
    /// wins; see the module docs).
    pub fn observe_commits(&self, observer: CommitObserver) {
        let _ = self.commit_observer.set(observer);
    }

    /// The store open now.
    fn current(&self) -> Store {
        self.db.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Starts a write transaction whose durability is decided at commit.
    ///
    /// A writer that waited for the writer while [`Backend::defragment`] replaced the
    /// file got the old file's: it gives it back and starts again on the new one, so no
    /// write ever lands in a replaced file.
    pub(crate) fn begin_write(&self) -> BResult<WriteTx> {
        loop {
            let db = self.current();
            let tx = db.begin_write();
            if db.same(&self.current()) {
                return Ok(WriteTx::new(tx));
            }
            drop(tx);
        }
    }

    pub(crate) fn begin_read(&self) -> BResult<ReadTx> {
        Ok(ReadTx(self.current().begin_read()))
    }

    /// Commits `tx`: durably (fsynced) if `force`, else lazily, unless no durable commit
    /// happened for [`INLINE_DURABLE_FACTOR`] intervals (then durably). `index` is the
    /// consistent index the transaction wrote (0 if it did not write one).
    pub(crate) fn commit(&self, tx: WriteTx, index: u64, force: bool) -> BResult<()> {
        let mode =
            if force || self.since_durable() >= self.cfg.durable_interval * INLINE_DURABLE_FACTOR {
                Commit::Durable
            } else {
                Commit::Lazy
            };
        self.commit_as(tx, index, mode)
    }

    fn commit_as(&self, tx: WriteTx, index: u64, mode: Commit) -> BResult<()> {
        self.refuse_after_failure()?;
        let mut last = self.last_durable.lock().unwrap_or_else(|p| p.into_inner());
        // One writer at a time: while `tx` is open no other commit can land, so what
        // `last_index` says now is exactly what this commit makes durable (reading it
        // after the commit could count a later, lazy one).
        let covers = self.last_index.load(Ordering::SeqCst).max(index);
        skiff_failpoints::fail_point!("backend-commit", |msg| Err(self.record_failure(
            BackendError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(msg),
            }
        )));
        let started = Instant::now();
        tx.into_inner()
            .commit(mode == Commit::Durable)
            .map_err(|e| self.record_failure(e.into()))?;
        skiff_failpoints::fail_point!("backend-after-commit");
        if let Some(observe) = self.commit_observer.get() {
            observe(started.elapsed());
        }
        if index > 0 {
            self.last_index.fetch_max(index, Ordering::SeqCst);
        }
        self.size
            .store(self.current().stats().file_bytes, Ordering::Relaxed);
        if mode == Commit::Durable {
            *last = Instant::now();
            if !self.durable_frozen.load(Ordering::SeqCst) {
                self.durable_index.fetch_max(covers, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    fn since_durable(&self) -> Duration {
        self.last_durable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// The maintenance thread's part (see the module docs), called every few tens of ms:
    /// a write-back of what applies wrote every [`PRESYNC_INTERVAL`], and a durable
    /// commit once `durable_interval` passed with something to make durable, after a
    /// write-back.
    pub fn maintain_durability(&self) -> BResult<()> {
        // Written pages go back to the disk a little at a time (see the module docs).
        let unwritten =
            || self.last_index.load(Ordering::SeqCst) > self.presynced_index.load(Ordering::SeqCst);
        if unwritten() && self.since_presync() >= PRESYNC_INTERVAL {
            self.presync()?;
        }
        if self.sync_due() {
            // Only what the write-back above has not covered (never two flushes in a row).
            if unwritten() {
                self.presync()?;
            }
            let tx = self.begin_write()?;
            return self.commit_as(tx, 0, Commit::Durable);
        }
        Ok(())
    }

    /// The bytes in use in the backend file (etcd's `dbSizeInUse`; see the module
    /// docs): the meta pages and the pages the newest tree reaches.
    pub fn in_use_bytes(&self) -> u64 {
        self.current().stats().in_use_bytes
    }

    /// Whether some commit is not durable yet and either `durable_interval` has passed
    /// since the last durable one or `durable_after_entries` entries were applied since
    /// (the maintenance thread then makes one).
    pub fn sync_due(&self) -> bool {
        let last = self.last_durable.lock().unwrap_or_else(|p| p.into_inner());
        let not_durable = self
            .last_index
            .load(Ordering::SeqCst)
            .saturating_sub(self.durable_index.load(Ordering::SeqCst));
        not_durable > 0
            && (last.elapsed() >= self.cfg.durable_interval
                || self
                    .cfg
                    .durable_after_entries
                    .is_some_and(|limit| not_durable >= limit))
    }

    /// The file's size as of the last commit: what the space quota checks on every
    /// write (a `stat` per request was 1% of a member's CPU under load).
    pub fn cached_size_bytes(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Size of the database file in bytes (`dbSize`, what etcd's space quota is checked
    /// against; see the module docs).
    pub fn size_bytes(&self) -> BResult<u64> {
        Ok(self.current().stats().file_bytes)
    }

    /// Writes `rows` into `table` in one durable transaction (`None` deletes a key),
    /// outside any apply: for records that no log entry made, such as the initial
    /// membership written when a member is bootstrapped.
    pub fn write_rows(&self, table: Table, rows: &[(Vec<u8>, Option<Vec<u8>>)]) -> BResult<()> {
        let tx = self.begin_write()?;
        {
            let mut t = tx.open_table(table)?;
            for (key, value) in rows {
                match value {
                    Some(v) => t.insert(key.as_slice(), v.as_slice())?,
                    None => {
                        t.remove(key.as_slice())?;
                    }
                }
            }
        }
        self.commit(tx, 0, true)
    }

    /// Makes every commit so far durable (before a shutdown). Waits out a
    /// defragmentation's swap window (its last catch-up round, the swap and one durable
    /// commit) if one is open.
    pub fn sync(&self) -> BResult<()> {
        let _window = self.swap_window.lock().unwrap_or_else(|p| p.into_inner());
        self.commit_durably_now()
    }

    /// Waits until every commit that wrote a consistent index up to `index` is durable,
    /// for a snapshot at `index` whose WAL marker (and with it the release of the log
    /// behind it) must not come first. The maintenance thread's periodic durable commit
    /// usually gets there within `durable_interval`, at no cost of its own; after twice
    /// that (at most [`DURABLE_WAIT_LIMIT`]) a durable commit is made here instead, as
    /// [`Backend::sync`] makes it. Called off the apply path: a sync made by the apply
    /// thread held every apply (and so every write) for its write-back, and behind a
    /// defragment's copy that was tens of ms. Gives up, with `Ok(false)`, as soon as
    /// `give_up` says so (the member is stopping).
    pub fn wait_durable(&self, index: u64, give_up: &dyn Fn() -> bool) -> BResult<bool> {
        // Every apply writes its consistent index, so a commit reached `index` unless
        // `index` lies past every commit so far: then what there is is all it needs.
        let target = index.min(self.last_index.load(Ordering::SeqCst));
        let patience = (self.cfg.durable_interval * 2).min(DURABLE_WAIT_LIMIT);
        let deadline = Instant::now() + patience;
        while self.durable_index.load(Ordering::SeqCst) < target {
            self.refuse_after_failure()?;
            if give_up() {
                return Ok(false);
            }
            if Instant::now() >= deadline {
                self.sync()?;
                return Ok(true);
            }
            std::thread::sleep(DURABLE_POLL);
        }
        Ok(true)
    }

    /// A durable commit of everything so far, after a write-back outside the writer so
    /// the commit finds little left to write (see the module docs).
    fn commit_durably_now(&self) -> BResult<()> {
        self.presync()?;
        let tx = self.begin_write()?;
        self.commit_as(tx, 0, Commit::Durable)
    }

    /// Writes back the file's dirty pages without taking the writer (see the module
    /// docs). On the store open now, so it is the current file even after a
    /// defragmentation swapped it.
    fn presync(&self) -> BResult<()> {
        self.refuse_after_failure()?;
        let written = self.last_index.load(Ordering::SeqCst);
        self.current()
            .write_back()
            .map_err(|e| self.record_failure(e.into()))?;
        self.presynced_index.fetch_max(written, Ordering::SeqCst);
        self.last_presync_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The first write-back or commit failure, if there was one: the file is not
    /// written again (see the module docs) and the member must stop.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Records `e` as the backend's failure (the first one is kept) and returns it.
    fn record_failure(&self, e: BackendError) -> BackendError {
        if self.failure.set(e.to_string()).is_ok() {
            tracing::error!(file = %self.path.display(), error = %e, "backend write failed; the file is not written again");
        }
        e
    }

    fn refuse_after_failure(&self) -> BResult<()> {
        match self.failure.get() {
            Some(reason) => Err(BackendError::Failed {
                path: self.path.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn since_presync(&self) -> Duration {
        let last = Duration::from_millis(self.last_presync_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    /// The consistent index covered by the last durable commit: WAL entries at or below it
    /// are no longer needed to rebuild this backend.
    pub fn durable_consistent_index(&self) -> u64 {
        self.durable_index.load(Ordering::SeqCst)
    }

    /// (consistent index, term) of the last committed apply (durable or not).
    pub fn consistent_index(&self) -> BResult<(u64, u64)> {
        let tx = self.begin_read()?;
        let t = tx.open_table(Table::Meta)?;
        Ok((
            read_u64(&t, meta::CONSISTENT_INDEX)?,
            read_u64(&t, meta::TERM)?,
        ))
    }

    /// Reads one value of a server-owned table.
    pub fn get(&self, table: Table, key: &[u8]) -> BResult<Option<Vec<u8>>> {
        let tx = self.begin_read()?;
        let t = tx.open_table(table)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Every (key, value) of a table in key order (for the server's tables, which are small).
    pub fn scan(&self, table: Table) -> BResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let tx = self.begin_read()?;
        let t = tx.open_table(table)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Streams a consistent dump of every table to `w` (see the module docs for the
    /// format) and returns its size and checksum.
    pub fn dump<W: Write>(&self, w: W) -> BResult<DumpSummary> {
        let tx = self.begin_read()?;
        let mut out = CrcWriter {
            inner: w,
            crc: 0,
            bytes: 0,
            path: &self.path,
        };
        out.put(DUMP_MAGIC)?;
        let mut records = 0u64;
        let (mut ci, mut term) = (0, 0);
        for table in Table::ALL {
            let t = tx.open_table(table)?;
            if table == Table::Meta {
                ci = read_u64(&t, meta::CONSISTENT_INDEX)?;
                term = read_u64(&t, meta::TERM)?;
            }
            for row in t.iter()? {
                let (k, v) = row?;
                let (k, v) = (k.value(), v.value());
                out.put(&[1, table.id()])?;
                out.put(&(k.len() as u32).to_le_bytes())?;
                out.put(k)?;
                out.put(&(v.len() as u32).to_le_bytes())?;
                out.put(v)?;
                records += 1;
            }
        }
        out.put(&[0])?;
        let checksum = out.crc;
        let bytes = out.bytes + 4;
        out.inner
            .write_all(&checksum.to_le_bytes())
            .and_then(|_| out.inner.flush())
            .map_err(|source| BackendError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(DumpSummary {
            bytes,
            records,
            checksum,
            consistent_index: ci,
            term,
        })
    }

    /// Builds a backend file at `path` from a dump read from `r`. The data is written to a
    /// temporary file beside `path` and renamed over it only once the checksum matched, so
    /// a bad or cut stream never replaces a good file. `path` must not be open.
    pub fn restore<R: Read>(path: impl AsRef<Path>, r: R) -> BResult<DumpSummary> {
        let path = path.as_ref();
        let tmp = path.with_extension("restoring");
        let _ = std::fs::remove_file(&tmp);
        let summary = {
            let db = Store::open(&tmp, skiff_pages::Options::default())?;
            let tx = WriteTx::new(db.begin_write());
            match load_dump(&tx, r, &tmp) {
                Ok(summary) => {
                    tx.into_inner().commit(true)?;
                    summary
                }
                Err(e) => {
                    drop(tx);
                    drop(db);
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            }
        };
        std::fs::rename(&tmp, path).map_err(|source| BackendError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // The rename is durable only once the directory entry is.
        sync_dir_of(path)?;
        Ok(summary)
    }

    /// Replaces every table of this open backend with the contents of a dump, in one
    /// durable transaction: either the whole dump (checksum verified) is in, or nothing
    /// changed. Used to install a snapshot received from the leader.
    pub fn replace_from_dump<R: Read>(&self, r: R) -> BResult<DumpSummary> {
        let tx = self.begin_write()?;
        tx.clear_all()?;
        match load_dump(&tx, r, &self.path) {
            Ok(summary) => {
                self.commit_as(tx, 0, Commit::Durable)?;
                // Durable up to the dump's consistent index, as a durable commit of an
                // apply would be (a snapshot's wait for durability reads these).
                self.last_index
                    .fetch_max(summary.consistent_index, Ordering::SeqCst);
                self.durable_index
                    .fetch_max(summary.consistent_index, Ordering::SeqCst);
                Ok(summary)
            }
            Err(e) => {
                tx.abort()?;
                Err(e)
            }
        }
    }
}

/// Reads a dump (see the module docs) into the tables of `tx`, verifying its checksum;
/// the caller commits only on success.
fn load_dump<R: Read>(tx: &WriteTx, r: R, path: &Path) -> BResult<DumpSummary> {
    let io_err = |source| BackendError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut input = CrcReader {
        inner: r,
        crc: 0,
        bytes: 0,
    };
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic).map_err(io_err)?;
    if &magic != DUMP_MAGIC {
        return Err(BackendError::Corrupt("snapshot dump: bad magic".into()));
    }
    let mut records = 0u64;
    let (mut ci, mut term) = (0, 0);
    let mut version = None;
    // What was loaded since the transaction last wrote its changes out (see `flush`).
    let mut unflushed = 0usize;
    {
        let mut tables = Vec::new();
        for t in Table::ALL {
            tables.push((t, tx.open_table(t)?));
        }
        loop {
            let mut tag = [0u8; 1];
            input.read_exact(&mut tag).map_err(io_err)?;
            if tag[0] == 0 {
                break;
            }
            if tag[0] != 1 {
                return Err(BackendError::Corrupt(format!(
                    "snapshot dump: bad record tag {} at byte {}",
                    tag[0],
                    input.bytes - 1
                )));
            }
            input.read_exact(&mut tag).map_err(io_err)?;
            let table = Table::from_id(tag[0]).ok_or_else(|| {
                BackendError::Corrupt(format!("snapshot dump: unknown table {}", tag[0]))
            })?;
            let k = input.read_field().map_err(io_err)?;
            let v = input.read_field().map_err(io_err)?;
            let (k, v) = match (k, v) {
                (Some(k), Some(v)) => (k, v),
                _ => {
                    return Err(BackendError::Corrupt(format!(
                        "snapshot dump: field longer than {MAX_DUMP_FIELD} bytes near byte {}",
                        input.bytes
                    )))
                }
            };
            if table == Table::Meta && k == meta::CONSISTENT_INDEX && v.len() == 8 {
                ci = u64::from_be_bytes(v[..].try_into().expect("8 bytes"));
            }
            if table == Table::Meta && k == meta::TERM && v.len() == 8 {
                term = u64::from_be_bytes(v[..].try_into().expect("8 bytes"));
            }
            if table == Table::Meta && k == meta::FORMAT_VERSION {
                let b: [u8; 8] = v[..].try_into().map_err(|_| {
                    BackendError::Corrupt("snapshot dump: format_version is not 8 bytes".into())
                })?;
                version = Some(u64::from_be_bytes(b));
            }
            let t = &mut tables
                .iter_mut()
                .find(|(t, _)| *t == table)
                .expect("every table opened")
                .1;
            // Dumps list each table in key order, so every row lands past its table's
            // last key and each leaf is filled before the next is started.
            t.insert(k.as_slice(), v.as_slice())?;
            records += 1;
            unflushed += k.len() + v.len();
            if unflushed >= LOAD_FLUSH_BYTES {
                tx.flush()?;
                unflushed = 0;
            }
        }
    }
    let checksum = input.crc;
    let mut trailer = [0u8; 4];
    input.inner.read_exact(&mut trailer).map_err(io_err)?;
    if u32::from_le_bytes(trailer) != checksum {
        return Err(BackendError::Corrupt(format!(
            "snapshot dump: checksum mismatch (stream {:08x}, trailer {:08x})",
            checksum,
            u32::from_le_bytes(trailer)
        )));
    }
    // Checked once the checksum vouches for the bytes: a flipped bit is corruption,
    // not a newer format.
    match version {
        Some(found) if found > FORMAT_VERSION => {
            return Err(BackendError::UnsupportedDumpVersion {
                found,
                supported: FORMAT_VERSION,
            })
        }
        Some(_) => {}
        // A dump of a file from before versions: say which version its rows are in.
        None => write_u64(
            &mut tx.open_table(Table::Meta)?,
            meta::FORMAT_VERSION,
            UNVERSIONED,
        )?,
    }
    Ok(DumpSummary {
        bytes: input.bytes + 4,
        records,
        checksum,
        consistent_index: ci,
        term,
    })
}

/// Syncs the directory holding `path`, so a rename in it is durable.
pub(super) fn sync_dir_of(path: &Path) -> BResult<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| BackendError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

struct CrcWriter<'a, W: Write> {
    inner: W,
    crc: u32,
    bytes: u64,
    path: &'a Path,
}

impl<W: Write> CrcWriter<'_, W> {
    fn put(&mut self, b: &[u8]) -> BResult<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.bytes += b.len() as u64;
        self.inner.write_all(b).map_err(|source| BackendError::Io {
            path: self.path.to_path_buf(),
            source,
        })
    }
}

struct CrcReader<R: Read> {
    inner: R,
    crc: u32,
    bytes: u64,
}

impl<R: Read> CrcReader<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.bytes += buf.len() as u64;
        Ok(())
    }

    /// A length-prefixed field; `None` if the length is over the bound.
    fn read_field(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        self.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len);
        if len > MAX_DUMP_FIELD {
            return Ok(None);
        }
        // Grown as the bytes arrive, never sized by the (untrusted) length alone: a
        // forged length in a short dump allocates no more than the dump holds.
        let mut buf = Vec::with_capacity((len as usize).min(64 * 1024));
        (&mut self.inner)
            .take(u64::from(len))
            .read_to_end(&mut buf)?;
        if buf.len() != len as usize {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("field of {len} bytes cut after {}", buf.len()),
            ));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf);
        self.bytes += buf.len() as u64;
        Ok(Some(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_restore_roundtrip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let be = Backend::open(dir.path().join("a.db"), BackendConfig::default()).unwrap();
        let tx = be.begin_write().unwrap();
        {
            let mut t = tx.open_table(Table::Lease).unwrap();
            t.insert(b"l1".as_slice(), b"v1".as_slice()).unwrap();
            let mut m = tx.open_table(Table::Meta).unwrap();
            write_u64(&mut m, meta::CONSISTENT_INDEX, 42).unwrap();
        }
        be.commit(tx, 42, false).unwrap();
        let mut buf = Vec::new();
        let s = be.dump(&mut buf).unwrap();
        assert_eq!(s.bytes as usize, buf.len());
        assert_eq!(s.consistent_index, 42);

        let target = dir.path().join("b.db");
        let r = Backend::restore(&target, buf.as_slice()).unwrap();
        assert_eq!(r.checksum, s.checksum);
        assert_eq!(r.records, s.records);
        let b2 = Backend::open(&target, BackendConfig::default()).unwrap();
        assert_eq!(b2.get(Table::Lease, b"l1").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(b2.consistent_index().unwrap().0, 42);
        drop(b2);

        // A flipped bit is caught by the checksum and the old file is left alone.
        let mut bad = buf.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x10;
        assert!(Backend::restore(&target, bad.as_slice()).is_err());
        // A cut stream is an error too.
        assert!(Backend::restore(&target, &buf[..buf.len() - 3]).is_err());
        // A huge length is refused before allocating.
        let mut huge = DUMP_MAGIC.to_vec();
        huge.extend_from_slice(&[1, 3]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Backend::restore(&target, huge.as_slice()).is_err());
        let b2 = Backend::open(&target, BackendConfig::default()).unwrap();
        assert_eq!(b2.get(Table::Lease, b"l1").unwrap(), Some(b"v1".to_vec()));
    }

    #[test]
    fn the_commit_observer_sees_every_commit_and_its_fsync() {
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let be = Backend::open(dir.path().join("a.db"), BackendConfig::default()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::<Duration>::new()));
        let sink = seen.clone();
        be.observe_commits(Box::new(move |d| sink.lock().unwrap().push(d)));
        for i in 1..=3u64 {
            let tx = be.begin_write().unwrap();
            tx.open_table(Table::Lease)
                .unwrap()
                .insert(i.to_be_bytes().as_slice(), b"v".as_slice())
                .unwrap();
            be.commit(tx, 0, false).unwrap();
        }
        be.sync().unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 4, "three applies and one sync: {seen:?}");
        // The durable commit fsyncs, so it is not free.
        assert!(seen[3] > Duration::ZERO);
    }

    /// A write transaction holding one row of `table` keyed by `index`, not committed.
    pub(super) fn with_row(be: &Backend, table: Table, index: u64) -> WriteTx {
        let tx = be.begin_write().unwrap();
        tx.open_table(table)
            .unwrap()
            .insert(index.to_be_bytes().as_slice(), b"v".as_slice())
            .unwrap();
        tx
    }

    fn lazy_put(be: &Backend, index: u64) {
        be.commit(with_row(be, Table::Lease, index), index, false)
            .unwrap();
    }

    /// A snapshot's wait for durability: met by a durable commit made elsewhere (the
    /// periodic one) without a commit of its own; met by a commit of its own once its
    /// patience (twice the interval) ran out; met at once for an index past every
    /// commit; given up when asked.
    #[test]
    fn waiting_for_durability_costs_a_commit_only_when_nobody_else_makes_one() {
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let cfg = BackendConfig {
            durable_interval: Duration::from_millis(300),
            ..BackendConfig::default()
        };
        let be = Arc::new(Backend::open(dir.path().join("a.db"), cfg).unwrap());
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = commits.clone();
        be.observe_commits(Box::new(move |_| {
            count.fetch_add(1, Ordering::SeqCst);
        }));

        lazy_put(&be, 1);
        let other = be.clone();
        let periodic = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            other.sync().unwrap();
        });
        let started = Instant::now();
        assert!(be.wait_durable(1, &|| false).unwrap());
        let waited = started.elapsed();
        periodic.join().unwrap();
        assert!(waited >= Duration::from_millis(90), "{waited:?}");
        assert_eq!(be.durable_consistent_index(), 1);
        assert_eq!(
            commits.load(Ordering::SeqCst),
            2,
            "the apply and the other thread's"
        );

        lazy_put(&be, 2);
        let started = Instant::now();
        assert!(be.wait_durable(2, &|| false).unwrap());
        assert!(started.elapsed() >= Duration::from_millis(600));
        assert_eq!(be.durable_consistent_index(), 2);
        assert_eq!(commits.load(Ordering::SeqCst), 4, "the apply and its own");

        // No commit reached 9: index 2 is all there is to make durable.
        assert!(be.wait_durable(9, &|| false).unwrap());
        assert_eq!(commits.load(Ordering::SeqCst), 4);

        lazy_put(&be, 3);
        let started = Instant::now();
        assert!(!be.wait_durable(3, &|| true).unwrap(), "given up");
        assert!(started.elapsed() < Duration::from_millis(300));
        assert_eq!(be.durable_consistent_index(), 2);
        assert_eq!(commits.load(Ordering::SeqCst), 5, "the apply alone");
    }

    /// `--backend-batch-limit`: that many entries applied since the last durable commit
    /// make the next one due at once; fewer wait for the interval.
    #[test]
    fn an_entry_limit_makes_a_durable_commit_due_before_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BackendConfig {
            durable_interval: Duration::from_secs(3600),
            durable_after_entries: Some(5),
            ..BackendConfig::default()
        };
        let be = Backend::open(dir.path().join("a.db"), cfg).unwrap();
        for index in 1..=4 {
            lazy_put(&be, index);
        }
        assert!(!be.sync_due(), "4 entries are under the limit");
        be.maintain_durability().unwrap();
        assert_eq!(be.durable_consistent_index(), 0);
        lazy_put(&be, 5);
        assert!(be.sync_due(), "the 5th entry reaches the limit");
        be.maintain_durability().unwrap();
        assert_eq!(be.durable_consistent_index(), 5);
        assert!(!be.sync_due());
        // Counted from the last durable commit: entries 6..=9 are again under it.
        for index in 6..=9 {
            lazy_put(&be, index);
        }
        assert!(!be.sync_due());
        // One apply batch that covers many entries counts them all.
        lazy_put(&be, 20);
        assert!(be.sync_due());
    }

    /// Applies never commit durably themselves while the maintenance thread keeps pace;
    /// its durable commit writes back what applies wrote first (the presync), and a
    /// stuck maintenance thread makes an apply commit durably itself.
    #[test]
    fn applies_stay_lazy_while_the_maintenance_thread_keeps_pace() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BackendConfig {
            durable_interval: Duration::from_millis(20),
            ..BackendConfig::default()
        };
        let be = Backend::open(dir.path().join("a.db"), cfg).unwrap();
        lazy_put(&be, 1);
        assert_eq!(
            be.durable_consistent_index(),
            0,
            "an apply never fsyncs at once"
        );
        std::thread::sleep(Duration::from_millis(25));
        lazy_put(&be, 2);
        assert!(be.sync_due());
        be.maintain_durability().unwrap();
        assert_eq!(be.durable_consistent_index(), 2);
        // What applies wrote was written back first, outside the writer.
        assert_eq!(be.presynced_index.load(Ordering::SeqCst), 2);
        assert!(!be.sync_due());
        // A stuck maintenance thread: after INLINE_DURABLE_FACTOR intervals an apply
        // commits durably itself.
        std::thread::sleep(Duration::from_millis(20) * INLINE_DURABLE_FACTOR);
        lazy_put(&be, 3);
        assert_eq!(be.durable_consistent_index(), 3);
        drop(be);
        let be = Backend::open(dir.path().join("a.db"), BackendConfig::default()).unwrap();
        assert_eq!(
            be.get(Table::Lease, &3u64.to_be_bytes()).unwrap(),
            Some(b"v".to_vec())
        );
    }

    /// The size the quota checks is the file's length, and the file is what the rows
    /// take: a member's few rows keep it under etcd's empty file (5 pages of 4 KiB).
    #[test]
    fn the_size_is_the_file_and_a_small_backend_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let be = Backend::open(&path, BackendConfig::default()).unwrap();
        be.write_rows(Table::Members, &[(b"m1".to_vec(), Some(vec![1; 80]))])
            .unwrap();
        for index in 1..=200u64 {
            let tx = be.begin_write().unwrap();
            write_u64(
                &mut tx.open_table(Table::Meta).unwrap(),
                meta::CONSISTENT_INDEX,
                index,
            )
            .unwrap();
            be.commit(tx, index, index % 50 == 0).unwrap();
        }
        be.sync().unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(be.size_bytes().unwrap(), len);
        assert_eq!(be.cached_size_bytes(), len);
        assert!(len <= 5 * 4096, "{len} bytes for a handful of rows");
        let value = vec![5u8; 300];
        for chunk in 0..100u64 {
            let tx = be.begin_write().unwrap();
            {
                let mut t = tx.open_table(Table::Key).unwrap();
                for i in 0..1000u64 {
                    t.insert(
                        (chunk * 1000 + i).to_be_bytes().as_slice(),
                        value.as_slice(),
                    )
                    .unwrap();
                }
            }
            be.commit(tx, 1000 + chunk, false).unwrap();
            assert_eq!(
                be.cached_size_bytes(),
                std::fs::metadata(&path).unwrap().len()
            );
        }
        let size = be.size_bytes().unwrap();
        let data = 100 * 1000 * (8 + 300);
        assert!(size >= data, "{size}");
        assert!(
            size <= data / 4 * 5,
            "{size}: pages a quarter empty or worse"
        );
    }

    /// Pages freed by deletions stop counting as in use at the commit that frees them;
    /// the file does not get smaller until a defragmentation (the freed pages lie below
    /// rows still in use).
    #[test]
    fn in_use_drops_after_deletes_while_the_file_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BackendConfig {
            durable_interval: Duration::from_millis(50),
            ..BackendConfig::default()
        };
        let be = Backend::open(dir.path().join("a.db"), cfg).unwrap();
        let value = vec![7u8; 1000];
        for chunk in 0..20u64 {
            let tx = be.begin_write().unwrap();
            {
                let mut t = tx.open_table(Table::Key).unwrap();
                for i in 0..500u64 {
                    t.insert((chunk * 500 + i).to_be_bytes().as_slice(), value.as_slice())
                        .unwrap();
                }
            }
            be.commit(tx, chunk + 1, false).unwrap();
        }
        be.sync().unwrap();
        let full = be.in_use_bytes();
        let size = be.size_bytes().unwrap();
        assert!(full >= 10_000 * 1000, "in use {full} after 10 MB of rows");
        assert!(be.in_use_bytes() <= size);
        let tx = be.begin_write().unwrap();
        {
            let mut t = tx.open_table(Table::Key).unwrap();
            for i in 0..9_500u64 {
                t.remove(i.to_be_bytes().as_slice()).unwrap();
            }
        }
        be.commit(tx, 100, false).unwrap();
        let after = be.in_use_bytes();
        assert!(
            be.size_bytes().unwrap() >= size,
            "a compaction does not make the file smaller"
        );
        assert!(
            after < full / 4,
            "in use {after} after deleting 95% of {full}"
        );
        let report = be.defragment().unwrap();
        assert!(
            report.size_after < size / 2,
            "defragmented {size} to {}; in use {after}",
            report.size_after
        );
        assert!(be.in_use_bytes() <= be.size_bytes().unwrap());
    }

    /// MVCC rows arrive in revision order, a few per apply: they must fill their pages,
    /// not leave every leaf half full (what redb before 4.2 did, and what made the file
    /// twice its data). So must a defragmentation's copy and a restored dump.
    #[test]
    fn rows_in_revision_order_fill_their_pages() {
        use crate::mvcc::codec::{rev_key, Revision};
        let dir = tempfile::tempdir().unwrap();
        let be = Backend::open(dir.path().join("a.db"), BackendConfig::default()).unwrap();
        let value = vec![7u8; 290];
        let (applies, per_apply) = (6_000u64, 5u64);
        for apply in 0..applies {
            let tx = be.begin_write().unwrap();
            {
                let mut t = tx.open_table(Table::Key).unwrap();
                for sub in 0..per_apply {
                    let rev = Revision::new(apply as i64 + 2, sub as i64);
                    t.insert(rev_key(rev, false).as_slice(), value.as_slice())
                        .unwrap();
                }
            }
            be.commit(tx, apply + 1, false).unwrap();
        }
        be.sync().unwrap();
        let rows = applies * per_apply;
        let data = rows * (17 + value.len() as u64);
        let fill = |what: &str, in_use: u64| {
            assert!(
                in_use * 4 <= data * 5,
                "{what}: {in_use} bytes of pages for {data} bytes of rows"
            );
        };
        fill("applied", be.in_use_bytes());
        be.defragment().unwrap();
        fill("defragmented", be.in_use_bytes());
        let mut dump = Vec::new();
        be.dump(&mut dump).unwrap();
        let restored = dir.path().join("b.db");
        Backend::restore(&restored, dump.as_slice()).unwrap();
        let be = Backend::open(&restored, BackendConfig::default()).unwrap();
        assert_eq!(be.scan(Table::Key).unwrap().len() as u64, rows);
        fill("restored", be.in_use_bytes());
    }

    /// Sets (or, with `None`, removes) the format version an open backend records.
    fn set_version(be: &Backend, version: Option<u64>) {
        let tx = be.begin_write().unwrap();
        {
            let mut m = tx.open_table(Table::Meta).unwrap();
            match version {
                Some(v) => write_u64(&mut m, meta::FORMAT_VERSION, v).unwrap(),
                None => {
                    m.remove(meta::FORMAT_VERSION).unwrap();
                }
            }
        }
        be.commit(tx, 0, true).unwrap();
    }

    #[test]
    fn dumps_carry_the_format_version_and_newer_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let be = Backend::open(dir.path().join("a.db"), BackendConfig::default()).unwrap();
        assert_eq!(be.format_version().unwrap(), FORMAT_VERSION);
        let target = dir.path().join("b.db");
        let other = Backend::open(dir.path().join("c.db"), BackendConfig::default()).unwrap();
        {
            let tx = other.begin_write().unwrap();
            tx.open_table(Table::Lease)
                .unwrap()
                .insert(b"keep".as_slice(), b"me".as_slice())
                .unwrap();
            other.commit(tx, 0, true).unwrap();
        }

        // A dump from a file of before versions restores as version 1.
        set_version(&be, None);
        assert_eq!(be.format_version().unwrap(), 1);
        let mut legacy = Vec::new();
        be.dump(&mut legacy).unwrap();
        Backend::restore(&target, legacy.as_slice()).unwrap();
        let db = Store::open(&target, skiff_pages::Options::default()).unwrap();
        let tx = ReadTx(db.begin_read());
        let m = tx.open_table(Table::Meta).unwrap();
        assert_eq!(read_version(&m).unwrap(), Some(1));
        drop((tx, db));

        // A dump of a newer backend is refused, and nothing is replaced.
        set_version(&be, Some(FORMAT_VERSION + 1));
        let mut newer = Vec::new();
        be.dump(&mut newer).unwrap();
        for err in [
            Backend::restore(&target, newer.as_slice()).unwrap_err(),
            other.replace_from_dump(newer.as_slice()).unwrap_err(),
        ] {
            assert!(
                matches!(
                    err,
                    BackendError::UnsupportedDumpVersion { found, supported: FORMAT_VERSION }
                        if found == FORMAT_VERSION + 1
                ),
                "{err}"
            );
            assert!(err.to_string().contains("upgrade Skiff"), "{err}");
        }
        assert_eq!(
            other.get(Table::Lease, b"keep").unwrap(),
            Some(b"me".to_vec())
        );
        assert_eq!(other.format_version().unwrap(), FORMAT_VERSION);
        assert!(!target.with_extension("restoring").exists());
        assert_eq!(
            Backend::open(&target, BackendConfig::default())
                .unwrap()
                .format_version()
                .unwrap(),
            FORMAT_VERSION
        );
    }
}
