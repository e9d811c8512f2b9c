//! [`KvStore`]: the MVCC key-value store (etcd's `mvcc.store`) over the page-store backend.
//!
//! # Concurrency
//! One apply loop writes (applies are serialized by `apply_lock`); any number of threads
//! read. The key index lives under an `RwLock` that writers hold only while they touch the
//! index, never across a disk commit. Readers read at `committed_rev`, which moves only
//! after the backend commit that holds those rows; index entries newer than that (from an
//! apply not yet committed) are invisible to them because every index lookup is "newest
//! revision <= the read revision". A reader opens its backend read transaction while holding
//! the index lock, so the rows it will load cannot have been removed by physical
//! compaction (which starts only after the index was compacted, under the write lock).
//!
//! # Compaction
//! Logical compaction (the `Compaction` request) is immediate: the compaction revision is
//! raised, the index compacted and `scheduledCompactRev` written with the apply. Physical
//! deletion of the rows the index no longer lists runs on a background thread in small
//! batches (each its own short write transaction, so applies interleave and never wait
//! long), and ends by writing `finishedCompactRev`. A crash in between resumes the
//! deletion at the next open. The current revision is stored in `meta` with every apply,
//! and at open it is never lower than the scheduled compaction, so deleting the newest
//! rows (a compacted tombstone) can never make the revision go back (etcd #17780).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use skiff_api::{validate, EtcdError};
use tracing::{debug, info, warn};

use super::codec::{self, Revision};
use super::error::{Error, Result};
use super::key_index::{IdxRev, Index};
use super::types::*;
use crate::backend::{
    meta, read_u64, write_u64, Backend, BackendConfig, BackendError, ReadableTable, Table,
};

/// Store tuning.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub backend: BackendConfig,
    /// Rows deleted per physical-compaction transaction.
    pub compaction_batch: usize,
    /// Pause between physical-compaction batches (lets applies in).
    pub compaction_pause: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: BackendConfig::default(),
            compaction_batch: 1000,
            compaction_pause: Duration::from_millis(1),
        }
    }
}

/// Tables the server may write together with an apply (in the same transaction, so they
/// advance atomically with the consistent index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuxTable {
    Lease,
    Auth,
    Members,
    Alarm,
    Session,
}

impl AuxTable {
    pub fn table(self) -> Table {
        match self {
            AuxTable::Lease => Table::Lease,
            AuxTable::Auth => Table::Auth,
            AuxTable::Members => Table::Members,
            AuxTable::Alarm => Table::Alarm,
            AuxTable::Session => Table::Session,
        }
    }
}

/// A write to a server-owned table; `value: None` deletes the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuxOp {
    pub table: AuxTable,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// Tells the store whether a lease exists (the lessor lives in the server). A put naming
/// an unknown lease fails with `etcdserver: requested lease not found`, as in etcd.
pub trait LeaseCheck {
    fn lease_exists(&self, id: i64) -> bool;
}

/// Accepts every lease (tests, tools, or a server that checked before proposing).
pub struct AnyLease;

impl LeaseCheck for AnyLease {
    fn lease_exists(&self, _id: i64) -> bool {
        true
    }
}

/// One committed raft entry to apply.
#[derive(Clone, Copy, Debug)]
pub struct ApplyEntry<'a> {
    pub index: u64,
    pub term: u64,
    pub request: &'a WriteRequest,
    /// Written only if the request succeeds.
    pub aux: &'a [AuxOp],
    /// Rows that depend on the outcome (a client session's stored result), written in
    /// the entry's transaction whatever the outcome, so the result and the write it
    /// describes are durable together or not at all.
    pub record: Option<&'a dyn Recorder>,
}

/// Derives rows from an entry's outcome (see [`ApplyEntry::record`]).
pub trait Recorder: std::fmt::Debug {
    fn rows(&self, response: &Result<WriteResponse>, revision: i64) -> Vec<AuxOp>;
}

/// What applying one entry did.
#[derive(Debug)]
pub enum Applied {
    /// The entry is at or below the consistent index: already in the backend (WAL replay).
    Skipped,
    Done {
        /// The client's answer; an `Err` here is a request error (the entry still counts as
        /// applied and no data changed).
        response: Result<WriteResponse>,
        /// Changes in revision order, each with its previous version (for watchers and for
        /// the lessor's key attachments).
        events: Vec<Event>,
        /// The store revision after this entry.
        revision: i64,
    },
}

struct State {
    index: Index,
    /// Revision of the newest write in the index (may be ahead of `committed_rev`).
    current_rev: i64,
    compact_rev: i64,
}

struct Inner {
    backend: Backend,
    state: RwLock<State>,
    committed_rev: AtomicI64,
    applied_index: AtomicU64,
    apply_lock: Mutex<()>,
    /// Held by a defragmentation for its whole run, and by whatever removes `key` rows
    /// (a physical-compaction batch, a snapshot install) while it does: the backend's
    /// defragmentation relies on `key` rows only being added meanwhile.
    space_gate: Mutex<()>,
    poisoned: AtomicBool,
    /// Highest compaction revision whose physical deletion is done.
    finished_compact: Mutex<i64>,
    finished_cv: Condvar,
    shutdown: AtomicBool,
    cfg: StoreConfig,
    /// Watchers that asked for previous values (kept by the watch hub): while there are
    /// none, a put does not read the version it replaces unless its request needs it.
    prev_kv_watchers: Arc<AtomicUsize>,
}

/// The MVCC store. Cheap to share behind an `Arc`; dropping it stops the compactor.
pub struct KvStore {
    inner: Arc<Inner>,
    compactor: Mutex<Option<mpsc::Sender<i64>>>,
    /// The compactor's thread (it also makes the periodic durable commits).
    compactor_thread: Option<JoinHandle<()>>,
}

type KeyTable<'t> = crate::backend::TableWrite<'t>;

/// Writes server-owned rows in an apply's transaction.
fn write_aux(tx: &crate::backend::WriteTx, ops: &[AuxOp]) -> Result<()> {
    for op in ops {
        let mut t = tx.open_table(op.table.table())?;
        match &op.value {
            Some(v) => {
                t.insert(op.key.as_slice(), v.as_slice())?;
            }
            None => {
                t.remove(op.key.as_slice())?;
            }
        }
    }
    Ok(())
}

fn read_row<T: ReadableTable>(t: &T, rev: IdxRev) -> Result<KeyValue> {
    let k = codec::rev_key(rev.rev(), rev.tombstone);
    let v = t.get(k.as_slice())?.ok_or_else(|| {
        BackendError::Corrupt(format!(
            "key index names revision {:?} missing from the backend",
            rev.rev()
        ))
    })?;
    codec::decode_kv(v.value()).ok_or_else(|| {
        Error::Backend(BackendError::Corrupt(format!(
            "undecodable KeyValue at revision {:?}",
            rev.rev()
        )))
    })
}

/// Resolves `req.revision` against the current and compacted revisions (etcd's order of
/// checks: future first, then compacted).
fn read_revision(req_rev: i64, cur: i64, compact: i64) -> Result<i64> {
    if req_rev > cur {
        return Err(EtcdError::FutureRev.into());
    }
    let rev = if req_rev <= 0 { cur } else { req_rev };
    if rev < compact {
        return Err(EtcdError::Compacted.into());
    }
    Ok(rev)
}

/// Index phase of a range: the revisions to load and the count.
fn collect_range(ix: &Index, req: &RangeRequest, rev: i64) -> (Vec<IdxRev>, i64) {
    let unlimited = req.sort_order != SortOrder::None
        || req.sort_target != SortTarget::Key
        || req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let want = if req.count_only {
        0
    } else if unlimited || req.limit <= 0 {
        usize::MAX
    } else {
        // One more than asked, to know whether there is `more`.
        usize::try_from(req.limit)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    };
    let mut revs = Vec::new();
    let mut count = 0i64;
    ix.range_at(&req.key, &req.range_end, rev, |_, r| {
        count += 1;
        if revs.len() < want {
            revs.push(r);
        }
        true
    });
    (revs, count)
}

/// What a range charges for a row it keeps: its key and value plus a fixed
/// overhead for the revisions and the vector slot (see [`KvStore::range_charged`]).
pub fn row_cost(kv: &KeyValue) -> u64 {
    (kv.key.len() + kv.value.len()) as u64 + ROW_OVERHEAD
}

/// The fixed part of [`row_cost`].
pub const ROW_OVERHEAD: u64 = 64;

/// A range's charge for each row it loads: an error stops the read with it.
pub type Charge<'a> = &'a mut dyn FnMut(u64) -> std::result::Result<(), EtcdError>;

/// Row phase of a range: load, filter, sort, cut, as etcd's apply layer does.
fn finish_range<T: ReadableTable>(
    t: &T,
    revs: &[IdxRev],
    count: i64,
    req: &RangeRequest,
    header_rev: i64,
    charge: Charge<'_>,
) -> Result<RangeResponse> {
    let mut kvs = Vec::with_capacity(revs.len());
    for r in revs {
        let kv = read_row(t, *r)?;
        charge(row_cost(&kv))?;
        kvs.push(kv);
    }
    if req.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= req.max_mod_revision);
    }
    if req.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= req.min_mod_revision);
    }
    if req.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= req.max_create_revision);
    }
    if req.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= req.min_create_revision);
    }
    let mut order = req.sort_order;
    if req.sort_target != SortTarget::Key && order == SortOrder::None {
        // Rows come in key order; any other target means ascending by default (etcd).
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None {
        let target = req.sort_target;
        let cmp = |a: &KeyValue, b: &KeyValue| match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        // Stable sorts: ties stay in key order either way.
        if order == SortOrder::Ascend {
            kvs.sort_by(cmp);
        } else {
            kvs.sort_by(|a, b| cmp(b, a));
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() as i64 > req.limit {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    Ok(RangeResponse {
        header: ResponseHeader::at(header_rev),
        kvs,
        more,
        count,
    })
}

/// Reads the meta table and rebuilds the key index from the backend: (state, consistent
/// index, scheduled compaction, finished compaction).
fn load_state(backend: &Backend) -> Result<(State, u64, i64, i64)> {
    Ok({
        let tx = backend.begin_read()?;
        let m = tx.open_table(Table::Meta)?;
        let ci = read_u64(&m, meta::CONSISTENT_INDEX)?;
        let stored_rev = read_u64(&m, meta::REVISION)? as i64;
        let scheduled = read_u64(&m, meta::SCHEDULED_COMPACT)? as i64;
        let finished = read_u64(&m, meta::FINISHED_COMPACT)? as i64;
        let keys = tx.open_table(Table::Key)?;
        let mut index = Index::default();
        let mut max_rev = 0i64;
        for row in keys.iter()? {
            let (k, v) = row?;
            let (rev, tomb) = codec::parse_rev_key(k.value()).ok_or_else(|| {
                BackendError::Corrupt(format!("bad revision key {:?}", k.value()))
            })?;
            let (key, created, version) = codec::decode_kv_head(v.value())
                .ok_or_else(|| BackendError::Corrupt(format!("undecodable KeyValue at {rev:?}")))?;
            index.restore(&key, rev, tomb, (created, version));
            max_rev = max_rev.max(rev.main);
        }
        if scheduled > 0 {
            index.compact(scheduled);
        }
        // Never lower than anything we may have handed out (etcd #17780).
        let current_rev = 1.max(stored_rev).max(max_rev).max(scheduled);
        let state = State {
            index,
            current_rev,
            compact_rev: scheduled,
        };
        (state, ci, scheduled, finished)
    })
}

impl KvStore {
    /// Replaces the whole store with a dump (a snapshot received from the leader) and
    /// rebuilds the key index from it. Applies wait meanwhile; the replacement is one
    /// durable backend transaction, so a bad dump changes nothing.
    pub fn restore_from_dump<R: std::io::Read>(&self, r: R) -> Result<crate::backend::DumpSummary> {
        self.check_poison()?;
        let _gate = self
            .inner
            .space_gate
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let _apply = self
            .inner
            .apply_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let summary = self.inner.backend.replace_from_dump(r)?;
        let (state, ci, scheduled, finished) = load_state(&self.inner.backend)?;
        let rev = state.current_rev;
        info!(
            keys = state.index.len(),
            revision = rev,
            compact_revision = state.compact_rev,
            consistent_index = ci,
            "mvcc store restored from a snapshot"
        );
        *self.write_state() = state;
        self.inner.committed_rev.store(rev, Ordering::SeqCst);
        self.inner.applied_index.store(ci, Ordering::SeqCst);
        *self
            .inner
            .finished_compact
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = finished;
        if scheduled > finished {
            if let Some(tx) = self
                .compactor
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                let _ = tx.send(scheduled);
            }
        }
        Ok(summary)
    }
}

impl KvStore {
    /// The count of watchers that want previous values, which the watch hub keeps:
    /// while it is 0, puts do not read the versions they replace (see `WriteCtx::put`).
    pub(crate) fn prev_kv_watchers(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.inner.prev_kv_watchers)
    }

    /// Opens the store at `path` (a backend page file), rebuilding the key index from the backend
    /// and resuming any unfinished physical compaction.
    pub fn open(path: impl AsRef<Path>, cfg: StoreConfig) -> Result<KvStore> {
        let backend = Backend::open(path, cfg.backend.clone())?;
        let (state, ci, scheduled, finished) = load_state(&backend)?;
        info!(
            keys = state.index.len(),
            revision = state.current_rev,
            compact_revision = state.compact_rev,
            consistent_index = ci,
            "mvcc store opened"
        );
        let inner = Arc::new(Inner {
            committed_rev: AtomicI64::new(state.current_rev),
            state: RwLock::new(state),
            backend,
            applied_index: AtomicU64::new(ci),
            apply_lock: Mutex::new(()),
            space_gate: Mutex::new(()),
            poisoned: AtomicBool::new(false),
            finished_compact: Mutex::new(finished),
            finished_cv: Condvar::new(),
            shutdown: AtomicBool::new(false),
            cfg,
            prev_kv_watchers: Arc::default(),
        });
        let (tx, rx) = mpsc::channel::<i64>();
        let worker_inner = Arc::clone(&inner);
        let worker = std::thread::Builder::new()
            .name("skiff-compactor".into())
            .spawn(move || compactor_loop(worker_inner, rx))
            .map_err(|source| BackendError::Io {
                path: inner.backend.path().to_path_buf(),
                source,
            })?;
        if scheduled > finished {
            info!(scheduled, finished, "resuming interrupted compaction");
            let _ = tx.send(scheduled);
        }
        Ok(KvStore {
            inner,
            compactor: Mutex::new(Some(tx)),
            compactor_thread: Some(worker),
        })
    }

    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// Rebuilds the backend file compactly while applies and reads go on; writers wait
    /// only for the swap (see `backend::defrag`). Physical compaction and snapshot
    /// installs wait for it to end.
    pub fn defragment(&self) -> Result<crate::backend::DefragReport> {
        self.check_poison()?;
        let _gate = self
            .inner
            .space_gate
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Ok(self.inner.backend.defragment()?)
    }

    /// The revision readers see (the newest committed write).
    pub fn current_revision(&self) -> i64 {
        self.inner.committed_rev.load(Ordering::SeqCst)
    }

    pub fn compact_revision(&self) -> i64 {
        self.read_state().compact_rev
    }

    /// Index of the last applied raft entry (what the WAL replay starts after).
    pub fn consistent_index(&self) -> u64 {
        self.inner.applied_index.load(Ordering::SeqCst)
    }

    /// Number of keys in the index (live or with retained history).
    pub fn index_len(&self) -> usize {
        self.read_state().index.len()
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn check_poison(&self) -> Result<()> {
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// A consistent read view: (index guard, backend snapshot, committed rev, compact rev).
    fn view(&self) -> Result<(RwLockReadGuard<'_, State>, crate::backend::ReadTx, i64)> {
        self.check_poison()?;
        let st = self.read_state();
        let cur = self.current_revision();
        let tx = self.inner.backend.begin_read()?;
        Ok((st, tx, cur))
    }

    /// `Range` (etcd `RangeRequest`) on the committed state.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        self.range_charged(req, &mut |_| Ok(()))
    }

    /// [`KvStore::range`], calling `charge` with [`row_cost`] of each row as it is
    /// loaded (before the next one is read): an error from `charge` stops the read
    /// and is returned as [`Error::Request`], so a caller can bound the memory a
    /// response takes while it is built.
    pub fn range_charged(&self, req: &RangeRequest, charge: Charge<'_>) -> Result<RangeResponse> {
        validate::check_range(req)?;
        let (st, tx, cur) = self.view()?;
        let rev = read_revision(req.revision, cur, st.compact_rev)?;
        let (revs, count) = collect_range(&st.index, req, rev);
        drop(st);
        let t = tx.open_table(Table::Key)?;
        finish_range(&t, &revs, count, req, cur, charge)
    }

    /// The sum of [`row_cost`] over the rows `req` would load, read one row at a time
    /// (memory stays one row), stopping once the sum exceeds `cap`.
    pub fn range_cost(&self, req: &RangeRequest, cap: u64) -> Result<u64> {
        validate::check_range(req)?;
        let (st, tx, cur) = self.view()?;
        let rev = read_revision(req.revision, cur, st.compact_rev)?;
        let (revs, _) = collect_range(&st.index, req, rev);
        drop(st);
        let t = tx.open_table(Table::Key)?;
        let mut sum = 0u64;
        for r in revs {
            sum += row_cost(&read_row(&t, r)?);
            if sum > cap {
                break;
            }
        }
        Ok(sum)
    }

    /// The version of `key` visible at `rev`, or `None` (also if `rev` is compacted).
    pub fn get_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>> {
        let (st, tx, cur) = self.view()?;
        if rev > cur || rev < st.compact_rev || rev <= 0 {
            return Ok(None);
        }
        let Some(r) = st.index.get(key).and_then(|ki| ki.visible_at(rev)) else {
            return Ok(None);
        };
        drop(st);
        let t = tx.open_table(Table::Key)?;
        Ok(Some(read_row(&t, r)?))
    }

    /// Applies one committed entry (see [`KvStore::apply_batch`]).
    pub fn apply(&self, entry: ApplyEntry<'_>, leases: &dyn LeaseCheck) -> Result<Applied> {
        let mut out = self.apply_batch(&[entry], leases)?;
        Ok(out.pop().expect("one result per entry"))
    }

    /// Applies committed entries in order, in one backend transaction that also records the
    /// consistent index (the last entry's index and term). Entries at or below the current
    /// consistent index are skipped (WAL replay after a crash). An `Err` is a backend
    /// failure: the store is poisoned and the member must stop.
    pub fn apply_batch(
        &self,
        entries: &[ApplyEntry<'_>],
        leases: &dyn LeaseCheck,
    ) -> Result<Vec<Applied>> {
        self.check_poison()?;
        let _apply = self
            .inner
            .apply_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let res = self.apply_locked(entries, leases);
        if res.is_err() {
            // In-memory state may now be ahead of the backend: refuse further use.
            self.inner.poisoned.store(true, Ordering::SeqCst);
        }
        res
    }

    fn apply_locked(
        &self,
        entries: &[ApplyEntry<'_>],
        leases: &dyn LeaseCheck,
    ) -> Result<Vec<Applied>> {
        let inner = &*self.inner;
        let mut applied_index = inner.applied_index.load(Ordering::SeqCst);
        let mut last_term = None;
        let mut out = Vec::with_capacity(entries.len());
        let mut compactions = Vec::new();
        let tx = inner.backend.begin_write()?;
        let mut any = false;
        // A watcher that asks for previous values after this is read gets its events
        // from the backend instead (`watch`'s `notify`).
        let prev_for_watchers = inner.prev_kv_watchers.load(Ordering::Acquire) > 0;
        {
            let mut keys = tx.open_table(Table::Key)?;
            let mut metat = tx.open_table(Table::Meta)?;
            for e in entries {
                if e.index <= applied_index {
                    out.push(Applied::Skipped);
                    continue;
                }
                any = true;
                applied_index = e.index;
                last_term = Some(e.term);
                let mut st = self.write_state();
                let mut w = WriteCtx {
                    keys: &mut keys,
                    st: &mut st,
                    begin_rev: 0,
                    events: Vec::new(),
                    leases,
                    prev_for_watchers,
                };
                w.begin_rev = w.st.current_rev;
                let response = w.exec(e.request);
                let events = std::mem::take(&mut w.events);
                if !events.is_empty() {
                    w.st.current_rev += 1;
                }
                let revision = w.st.current_rev;
                drop(st);
                if let Ok(WriteResponse::Compaction(_)) = &response {
                    if let WriteRequest::Compaction(c) = e.request {
                        write_u64(&mut metat, meta::SCHEDULED_COMPACT, c.revision as u64)?;
                        compactions.push(c.revision);
                    }
                }
                if response.is_ok() {
                    write_aux(&tx, e.aux)?;
                }
                if let Some(recorder) = e.record {
                    write_aux(&tx, &recorder.rows(&response, revision))?;
                }
                match &response {
                    // Request errors are raised before the first write; one after writes
                    // means the index and the transaction disagree: stop.
                    Err(err) if !events.is_empty() => {
                        return Err(Error::Backend(BackendError::Corrupt(format!(
                            "apply of entry {} failed after writing: {err}",
                            e.index
                        ))))
                    }
                    Err(err) if !err.is_request_error() => {
                        return Err(Error::Backend(BackendError::Corrupt(format!(
                            "apply of entry {} failed: {err}",
                            e.index
                        ))))
                    }
                    _ => {}
                }
                out.push(Applied::Done {
                    response,
                    events,
                    revision,
                });
            }
            if any {
                write_u64(&mut metat, meta::CONSISTENT_INDEX, applied_index)?;
                if let Some(term) = last_term {
                    write_u64(&mut metat, meta::TERM, term)?;
                }
                let rev = self.read_state().current_rev;
                write_u64(&mut metat, meta::REVISION, rev as u64)?;
            }
        }
        if !any {
            tx.abort()?;
            return Ok(out);
        }
        inner.backend.commit(tx, applied_index, false)?;
        let rev = self.read_state().current_rev;
        inner.committed_rev.store(rev, Ordering::SeqCst);
        inner.applied_index.store(applied_index, Ordering::SeqCst);
        if !compactions.is_empty() {
            if let Some(tx) = self
                .compactor
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                for c in compactions {
                    let _ = tx.send(c);
                }
            }
        }
        Ok(out)
    }

    /// Blocks until physical compaction at `rev` (or later) is done, or `timeout` passes.
    /// Returns whether it is done (for `CompactionRequest.physical`).
    pub fn wait_compacted(&self, rev: i64, timeout: Duration) -> bool {
        let g = self
            .inner
            .finished_compact
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (g, _) = self
            .inner
            .finished_cv
            .wait_timeout_while(g, timeout, |done| *done < rev)
            .unwrap_or_else(|p| p.into_inner());
        *g >= rev
    }

    /// Makes every applied entry durable (one fsync), saving the backend's allocator
    /// state for a quick reopen: before a shutdown.
    pub fn sync(&self) -> Result<()> {
        let _apply = self
            .inner
            .apply_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Ok(self.inner.backend.sync()?)
    }

    /// etcd's `HashKV(rev)`: CRC32C (Castagnoli) over the bytes `"key"` and then, for every
    /// backend row with main revision `<= rev` in revision order, the row key (17-byte
    /// revision, plus `t` for a tombstone) followed by the row value (protobuf
    /// `mvccpb.KeyValue`). Rows at or below the compaction revision count only if they hold
    /// the version of a key live at `rev` (etcd's `keep`), so the hash does not depend on
    /// how far physical compaction has got. The row encodings are etcd's own, so the same
    /// history yields etcd's hash. One difference: etcd counts every row below the
    /// compaction revision when no key is live at `rev`; Skiff applies the rule always.
    /// `rev == 0` means the current revision. The compaction revision is -1 before the
    /// first compaction, as etcd reports it.
    pub fn hash_kv(&self, rev: i64) -> Result<HashKv> {
        let (st, tx, cur) = self.view()?;
        let compact = st.compact_rev;
        if rev > 0 && rev < compact {
            return Err(EtcdError::Compacted.into());
        }
        if rev > cur {
            return Err(EtcdError::FutureRev.into());
        }
        let rev = if rev <= 0 { cur } else { rev };
        let mut keep = HashSet::new();
        st.index.keep_at(rev, |r| {
            if r.main <= compact {
                keep.insert(r);
            }
        });
        drop(st);
        let t = tx.open_table(Table::Key)?;
        let mut h = crc32c::crc32c(b"key");
        let upper = codec::rev_lower_bound(rev.saturating_add(1));
        for row in t.range::<&[u8]>(..upper.as_slice())? {
            let (k, v) = row?;
            let (r, _) = codec::parse_rev_key(k.value()).ok_or_else(|| {
                BackendError::Corrupt(format!("bad revision key {:?}", k.value()))
            })?;
            if r.main <= compact && !keep.contains(&r) {
                continue;
            }
            h = crc32c::crc32c_append(h, k.value());
            h = crc32c::crc32c_append(h, v.value());
        }
        Ok(HashKv {
            hash: h,
            // etcd's store starts at compaction revision -1 and reports it until the
            // first compaction.
            compact_revision: if compact > 0 { compact } else { -1 },
            hash_revision: rev,
            revision: cur,
        })
    }

    /// etcd's `Hash`: CRC32C over every row of the `key` table and of the server's tables
    /// (`lease`, `auth`, `members`, `alarm`), excluding `meta`. Like etcd's, it covers the
    /// physical state, so members agree only once physical compaction has caught up.
    pub fn hash(&self) -> Result<(u32, i64)> {
        let (st, tx, cur) = self.view()?;
        drop(st);
        let mut h = 0u32;
        for table in Table::ALL {
            if table == Table::Meta {
                continue;
            }
            h = crc32c::crc32c_append(h, table.name().as_bytes());
            let t = tx.open_table(table)?;
            for row in t.iter()? {
                let (k, v) = row?;
                h = crc32c::crc32c_append(h, k.value());
                h = crc32c::crc32c_append(h, v.value());
            }
        }
        Ok((h, cur))
    }

    /// Number of rows in the backend's `key` table (for tests and metrics).
    pub fn backend_rows(&self) -> Result<u64> {
        let tx = self.inner.backend.begin_read()?;
        let t = tx.open_table(Table::Key)?;
        Ok(t.len()?)
    }

    /// Events of every revision in `[from, ..]` up to `to` (inclusive), reading at most
    /// about `max_rows` rows but never splitting a revision. Returns the events and the
    /// last revision covered (`from - 1` if none). `Err(Compacted)` if `from` is below the
    /// compaction revision. Events carry no `prev_kv`.
    pub fn events_since(&self, from: i64, to: i64, max_rows: usize) -> Result<(Vec<Event>, i64)> {
        let (st, tx, _cur) = self.view()?;
        if from < st.compact_rev {
            return Err(EtcdError::Compacted.into());
        }
        drop(st);
        let t = tx.open_table(Table::Key)?;
        let lo = codec::rev_lower_bound(from);
        let hi = codec::rev_lower_bound(to.saturating_add(1));
        let mut events = Vec::new();
        let mut last = from - 1;
        for row in t.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
            let (k, v) = row?;
            let (r, tomb) = codec::parse_rev_key(k.value()).ok_or_else(|| {
                BackendError::Corrupt(format!("bad revision key {:?}", k.value()))
            })?;
            if events.len() >= max_rows && r.main != last {
                break;
            }
            let mut kv = codec::decode_kv(v.value())
                .ok_or_else(|| BackendError::Corrupt(format!("undecodable KeyValue at {r:?}")))?;
            let kind = if tomb {
                kv.mod_revision = r.main;
                EventType::Delete
            } else {
                EventType::Put
            };
            events.push(Event {
                kind,
                kv,
                prev_kv: None,
            });
            last = r.main;
        }
        if events.len() < max_rows {
            // The scan reached `to`: every revision up to it is covered.
            last = last.max(to);
        }
        Ok((events, last))
    }
}

impl Drop for KvStore {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        // Closing the channel ends the worker's loop.
        self.compactor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(w) = self.compactor_thread.take() {
            let _ = w.join();
        }
    }
}

/// The apply of one entry: ops run against the write transaction's table (so a range
/// after a put in the same txn sees it) at main revision `begin_rev + 1`.
struct WriteCtx<'a, 't> {
    keys: &'a mut KeyTable<'t>,
    st: &'a mut State,
    begin_rev: i64,
    events: Vec<Event>,
    leases: &'a dyn LeaseCheck,
    /// Some watcher wants previous values: every put reads the version it replaces.
    prev_for_watchers: bool,
}

impl WriteCtx<'_, '_> {
    fn write_rev(&self) -> i64 {
        self.begin_rev + 1
    }

    /// The revision a read inside this entry sees: including its own earlier writes.
    fn read_rev(&self) -> i64 {
        if self.events.is_empty() {
            self.begin_rev
        } else {
            self.begin_rev + 1
        }
    }

    fn exec(&mut self, req: &WriteRequest) -> Result<WriteResponse> {
        match req {
            WriteRequest::Put(p) => {
                validate::check_put(p)?;
                self.check_put_state(p)?;
                let mut r = self.put(p)?;
                r.header.revision = self.read_rev();
                Ok(WriteResponse::Put(r))
            }
            WriteRequest::DeleteRange(d) => {
                validate::check_delete(d)?;
                let mut r = self.delete(d)?;
                r.header.revision = self.read_rev();
                Ok(WriteResponse::DeleteRange(r))
            }
            WriteRequest::Txn(t) => {
                validate::check_txn(t, usize::MAX)?;
                let mut path = Vec::new();
                self.compare_path(t, &mut path)?;
                let mut pos = 0;
                self.check_path(t, &path, &mut pos)?;
                let mut pos = 0;
                let mut r = self.txn(t, &path, &mut pos)?;
                r.header.revision = self.read_rev();
                Ok(WriteResponse::Txn(r))
            }
            WriteRequest::Compaction(c) => {
                if c.revision <= self.st.compact_rev {
                    return Err(EtcdError::Compacted.into());
                }
                if c.revision > self.st.current_rev {
                    return Err(EtcdError::FutureRev.into());
                }
                self.st.compact_rev = c.revision;
                self.st.index.compact(c.revision);
                debug!(revision = c.revision, "logical compaction done");
                Ok(WriteResponse::Compaction(CompactionResponse {
                    header: ResponseHeader::at(self.begin_rev),
                }))
            }
            WriteRequest::Noop => Ok(WriteResponse::Noop(ResponseHeader::at(self.begin_rev))),
        }
    }

    fn head_kv(&self, key: &[u8]) -> Result<Option<(IdxRev, KeyValue)>> {
        match self.st.index.get(key).and_then(|ki| ki.head()) {
            Some(r) => Ok(Some((r, read_row(&*self.keys, r)?))),
            None => Ok(None),
        }
    }

    /// etcd's `checkRequestPut`, against the state before the request's writes.
    fn check_put_state(&self, p: &PutRequest) -> Result<()> {
        if (p.ignore_value || p.ignore_lease)
            && self.st.index.get(&p.key).and_then(|ki| ki.head()).is_none()
        {
            return Err(EtcdError::KeyNotFound.into());
        }
        if p.lease != 0 && !self.leases.lease_exists(p.lease) {
            return Err(EtcdError::LeaseNotFound.into());
        }
        Ok(())
    }

    fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let cur = self.read_rev();
        let rev = read_revision(req.revision, cur, self.st.compact_rev)?;
        let (revs, count) = collect_range(&self.st.index, req, rev);
        finish_range(&*self.keys, &revs, count, req, cur, &mut |_| Ok(()))
    }

    fn put(&mut self, p: &PutRequest) -> Result<PutResponse> {
        let rev = Revision::new(self.write_rev(), self.events.len() as i64);
        // The version this put replaces is read from the backend only when something
        // needs its contents; its creation revision and version are in the index
        // (unless they did not fit there).
        let next = self.st.index.next_version(&p.key, rev.main);
        let prev_kv = if next.is_none()
            || p.prev_kv
            || p.ignore_value
            || p.ignore_lease
            || self.prev_for_watchers
        {
            self.head_kv(&p.key)?.map(|(_, kv)| kv)
        } else {
            None
        };
        let (created, version) = next.unwrap_or_else(|| {
            prev_kv
                .as_ref()
                .map_or((rev.main, 1), |pk| (pk.create_revision, pk.version + 1))
        });
        let (value, lease) = match &prev_kv {
            Some(pk) => (
                if p.ignore_value {
                    pk.value.clone()
                } else {
                    p.value.clone()
                },
                if p.ignore_lease { pk.lease } else { p.lease },
            ),
            None if p.ignore_value || p.ignore_lease => return Err(EtcdError::KeyNotFound.into()),
            None => (p.value.clone(), p.lease),
        };
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: created,
            mod_revision: rev.main,
            version,
            value,
            lease,
        };
        let k = codec::rev_key(rev, false);
        self.keys
            .insert(k.as_slice(), codec::encode_kv(&kv).as_slice())?;
        self.st.index.put(&p.key, rev, (created, version));
        let resp_prev = if p.prev_kv { prev_kv.clone() } else { None };
        self.events.push(Event {
            kind: EventType::Put,
            kv,
            prev_kv,
        });
        Ok(PutResponse {
            header: ResponseHeader::default(),
            prev_kv: resp_prev,
        })
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let live = self.st.index.live_in(&d.key, &d.range_end);
        let mut resp = DeleteRangeResponse::default();
        for (key, r) in live {
            let prev = read_row(&*self.keys, r)?;
            let rev = Revision::new(self.write_rev(), self.events.len() as i64);
            let tomb = KeyValue {
                key: key.clone(),
                ..Default::default()
            };
            let k = codec::rev_key(rev, true);
            self.keys
                .insert(k.as_slice(), codec::encode_kv(&tomb).as_slice())?;
            self.st.index.tombstone(&key, rev);
            resp.deleted += 1;
            if d.prev_kv {
                resp.prev_kvs.push(prev.clone());
            }
            self.events.push(Event {
                kind: EventType::Delete,
                kv: KeyValue {
                    key,
                    mod_revision: rev.main,
                    ..Default::default()
                },
                prev_kv: Some(prev),
            });
        }
        Ok(resp)
    }

    /// etcd's `applyCompare`, against the state before the txn's writes.
    fn compare(&self, c: &Compare) -> Result<bool> {
        let mut kvs = Vec::new();
        self.st
            .index
            .range_at(&c.key, &c.range_end, self.begin_rev, |_, r| {
                kvs.push(r);
                true
            });
        if kvs.is_empty() {
            if c.target == CompareTarget::Value {
                // A missing key has no value to compare: always false (etcd).
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        for r in kvs {
            if !compare_kv(c, &read_row(&*self.keys, r)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// etcd's `compareToPath`: every compare along the taken branches is evaluated up front
    /// against the pre-txn state; `path` gets one bool per txn visited, depth first.
    fn compare_path(&self, t: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        let ops = if ok { &t.success } else { &t.failure };
        for op in ops {
            if let RequestOp::Txn(n) = op {
                self.compare_path(n, path)?;
            }
        }
        Ok(())
    }

    /// etcd's `checkRequests` along the path: puts (key must exist for ignore_*, lease must
    /// exist) and ranges (revision neither future nor compacted), so a failing txn fails
    /// before any write (etcd #18667 is about a txn half applied on such an error).
    fn check_path(&self, t: &TxnRequest, path: &[bool], pos: &mut usize) -> Result<()> {
        let ok = path[*pos];
        *pos += 1;
        let ops = if ok { &t.success } else { &t.failure };
        for op in ops {
            match op {
                RequestOp::Put(p) => self.check_put_state(p)?,
                RequestOp::Range(r) => {
                    if r.revision > 0 {
                        if r.revision > self.begin_rev {
                            return Err(EtcdError::FutureRev.into());
                        }
                        if r.revision < self.st.compact_rev {
                            return Err(EtcdError::Compacted.into());
                        }
                    }
                }
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(n) => self.check_path(n, path, pos)?,
            }
        }
        Ok(())
    }

    fn txn(&mut self, t: &TxnRequest, path: &[bool], pos: &mut usize) -> Result<TxnResponse> {
        let ok = path[*pos];
        *pos += 1;
        let ops = if ok { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let r = match op {
                RequestOp::Range(q) => ResponseOp::Range(self.range(q)?),
                RequestOp::Put(q) => {
                    let mut r = self.put(q)?;
                    r.header.revision = self.read_rev();
                    ResponseOp::Put(r)
                }
                RequestOp::DeleteRange(q) => {
                    let mut r = self.delete(q)?;
                    r.header.revision = self.read_rev();
                    ResponseOp::DeleteRange(r)
                }
                RequestOp::Txn(n) => {
                    let mut r = self.txn(n, path, pos)?;
                    r.header.revision = self.read_rev();
                    ResponseOp::Txn(r)
                }
            };
            responses.push(r);
        }
        Ok(TxnResponse {
            header: ResponseHeader::default(),
            succeeded: ok,
            responses,
        })
    }
}

/// etcd's `compareKV`.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering as O;
    let ord = match c.target {
        CompareTarget::Value => {
            let empty = Vec::new();
            let v = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &empty,
            };
            kv.value.as_slice().cmp(v.as_slice())
        }
        CompareTarget::Create => {
            let v = match c.target_union {
                Some(TargetUnion::CreateRevision(v)) => v,
                _ => 0,
            };
            kv.create_revision.cmp(&v)
        }
        CompareTarget::Mod => {
            let v = match c.target_union {
                Some(TargetUnion::ModRevision(v)) => v,
                _ => 0,
            };
            kv.mod_revision.cmp(&v)
        }
        CompareTarget::Version => {
            let v = match c.target_union {
                Some(TargetUnion::Version(v)) => v,
                _ => 0,
            };
            kv.version.cmp(&v)
        }
        CompareTarget::Lease => {
            let v = match c.target_union {
                Some(TargetUnion::Lease(v)) => v,
                _ => 0,
            };
            kv.lease.cmp(&v)
        }
    };
    match c.result {
        CompareResult::Equal => ord == O::Equal,
        CompareResult::NotEqual => ord != O::Equal,
        CompareResult::Greater => ord == O::Greater,
        CompareResult::Less => ord == O::Less,
    }
}

/// Physical compaction: deletes, in small batches, the rows at or below the compaction
/// revision that the (already compacted) index no longer lists.
///
/// The same thread makes non-durable commits durable once `durable_interval` passed
/// (applies never wait for that; see the backend's module docs), so the durable
/// consistent index (and with it WAL release) never lags for long.
fn compactor_loop(inner: Arc<Inner>, rx: mpsc::Receiver<i64>) {
    // Often enough for the presync interval (see the backend's module docs).
    let tick = (inner.cfg.backend.durable_interval / 2)
        .clamp(Duration::from_millis(5), Duration::from_millis(50));
    loop {
        let mut target = match rx.recv_timeout(tick) {
            Ok(t) => t,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = inner.backend.maintain_durability() {
                    warn!(error = %e, "periodic durable commit failed");
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        // Coalesce queued compactions: the newest covers the older ones.
        while let Ok(t) = rx.try_recv() {
            target = target.max(t);
        }
        match physical_compact(&inner, target) {
            Ok(true) => {
                let mut g = inner
                    .finished_compact
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                *g = (*g).max(target);
                inner.finished_cv.notify_all();
                info!(revision = target, "physical compaction finished");
            }
            Ok(false) => return, // shutting down; resumed at the next open
            Err(e) => {
                warn!(error = %e, revision = target, "physical compaction failed; retried at next open");
            }
        }
    }
}

fn physical_compact(inner: &Inner, target: i64) -> Result<bool> {
    let upper = codec::rev_lower_bound(target.saturating_add(1));
    let mut cursor: Vec<u8> = Vec::new();
    let batch = inner.cfg.compaction_batch.max(1);
    let mut deleted = 0u64;
    loop {
        if inner.shutdown.load(Ordering::SeqCst) {
            return Ok(false);
        }
        // Durable commits keep their pace during a long compaction (see the backend's
        // module docs: they stay off the apply path).
        if let Err(e) = inner.backend.maintain_durability() {
            warn!(error = %e, "periodic durable commit failed");
        }
        // No defragmentation copies the file while this batch removes rows.
        let gate = inner.space_gate.lock().unwrap_or_else(|p| p.into_inner());
        // Decide under the index lock with a snapshot; delete in a separate write
        // transaction (never hold the index lock while waiting for the writer slot: the
        // apply loop holds the writer slot while it waits for the index lock).
        let mut doomed = Vec::new();
        let mut next_cursor = None;
        {
            let st = inner.state.read().unwrap_or_else(|p| p.into_inner());
            let tx = inner.backend.begin_read()?;
            drop(st);
            let t = tx.open_table(Table::Key)?;
            let mut rows = 0usize;
            let mut batch_rows = Vec::new();
            for row in t.range::<&[u8]>(cursor.as_slice()..upper.as_slice())? {
                let (k, v) = row?;
                rows += 1;
                if rows > batch {
                    next_cursor = Some(k.value().to_vec());
                    break;
                }
                let key = codec::decode_kv_key(v.value()).ok_or_else(|| {
                    BackendError::Corrupt(format!("undecodable row {:?}", k.value()))
                })?;
                batch_rows.push((k.value().to_vec(), key));
            }
            let st = inner.state.read().unwrap_or_else(|p| p.into_inner());
            for (k, key) in batch_rows {
                let Some((rev, _)) = codec::parse_rev_key(&k) else {
                    continue;
                };
                if !st.index.get(&key).is_some_and(|ki| ki.contains(rev)) {
                    doomed.push(k);
                }
            }
        }
        if !doomed.is_empty() {
            let tx = inner.backend.begin_write()?;
            {
                let mut t = tx.open_table(Table::Key)?;
                for k in &doomed {
                    t.remove(k.as_slice())?;
                }
            }
            inner.backend.commit(tx, 0, false)?;
            deleted += doomed.len() as u64;
        }
        drop(gate);
        match next_cursor {
            Some(c) => {
                cursor = c;
                std::thread::sleep(inner.cfg.compaction_pause);
            }
            None => break,
        }
    }
    let tx = inner.backend.begin_write()?;
    {
        let mut m = tx.open_table(Table::Meta)?;
        let prev = read_u64(&m, meta::FINISHED_COMPACT)?;
        write_u64(&mut m, meta::FINISHED_COMPACT, prev.max(target as u64))?;
    }
    // The space the deletes freed shows in `dbSizeInUse` from this commit on (the page
    // store counts the pages its tree reaches as it commits).
    inner.backend.commit(tx, 0, false)?;
    debug!(
        deleted,
        revision = target,
        "physical compaction batches done"
    );
    Ok(true)
}
