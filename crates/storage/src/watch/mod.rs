//! The watchable store: [`WatchableStore`] wraps a [`KvStore`] so that every apply also
//! feeds watchers, etcd's `watchableStore` design.
//!
//! A watcher (one key or a range, from a start revision) is in one of three groups:
//! - **synced**: it has seen every revision up to the store's; each apply hands it that
//!   revision's events directly (all events of one revision in one response);
//! - **unsynced**: its next revision is in the past (a watch from an old revision, or a
//!   consumer that fell behind); a background thread reads those revisions from the
//!   backend in batches of whole revisions and moves it to synced once it has caught up;
//! - **victim**: its stream's channel was full when a cancellation (compaction) was due.
//!   That one pending response is retried by the background thread; nothing else is sent
//!   to it meanwhile. Applies only ever `try_send`: a slow consumer never blocks them.
//!
//! Memory stays bounded however slowly a client reads (etcd holds a slow watcher's
//! events, and thousands of watchers that never read can exhaust its memory): each
//! stream counts the bytes of the responses queued for it and not yet consumed
//! ([`WatchResponse::queued`], given back when the response, or the values it was
//! turned into, is dropped), and while that is at or above
//! [`WatchConfig::stream_bytes`] (or its channel is full) no event response is built
//! for its watchers: a watcher that cannot be sent to keeps its next revision and moves
//! to unsynced, so it is caught up later from the backend, like a watcher from an old
//! revision. A stream holds at most `stream_bytes` plus one response (one revision, or
//! one catch-up batch of `sync_batch` rows) for a watcher.
//!
//! The hand-over from unsynced to synced happens under the hub lock, which every apply's
//! notification also takes, after checking that the catch-up read reached the newest
//! notified revision: no revision is skipped and none is sent twice. A watcher never gets
//! an event below its start revision, in any group (etcd #20221). A start revision below
//! the compaction revision cancels the watcher with `compact_revision` set; a start at
//! exactly the compaction revision is served, including deletes at that revision (the key
//! index keeps those tombstones: etcd #18089, #19179). Catch-up reads and compaction checks
//! come from one consistent backend snapshot, so a concurrent compaction cannot remove rows
//! a catch-up is about to read.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use skiff_api::EtcdError;
use tokio::sync::mpsc;
use tracing::warn;

use crate::mvcc::{Applied, ApplyEntry, Error, Event, EventType, KvStore, LeaseCheck, Result};

/// `WatchCreateRequest.FilterType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum WatchFilter {
    NoPut = 0,
    NoDelete = 1,
}

/// `etcdserverpb.WatchCreateRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchRequest {
    pub key: Vec<u8>,
    /// As in a range: empty = one key, `[0]` = every key `>= key`.
    pub range_end: Vec<u8>,
    /// First revision to deliver; 0 = the next one.
    pub start_revision: i64,
    pub progress_notify: bool,
    pub filters: Vec<WatchFilter>,
    pub prev_kv: bool,
    /// 0 = assign one; otherwise must be unused on the stream.
    pub watch_id: i64,
    /// Fragmenting large responses is done by the server; carried for 1:1 conversion.
    pub fragment: bool,
}

/// `etcdserverpb.WatchResponse` as produced by the store (the server adds the header's
/// cluster and member ids, `created` responses and fragmentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchResponse {
    /// -1 for a stream-wide progress notification.
    pub watch_id: i64,
    /// Header revision: every event at or below it has been sent to this watcher.
    pub revision: i64,
    pub events: Vec<Event>,
    /// Set (with `canceled`) when the start revision was compacted.
    pub compact_revision: i64,
    pub canceled: bool,
    /// The bytes this response counts against its stream's bound, given back when the
    /// last clone of it is dropped (the consumer may move it into what it sends).
    pub queued: Option<Arc<Queued>>,
}

/// Bytes of a stream's queue held by one response; given back on drop.
#[derive(Debug)]
pub struct Queued {
    counter: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Accounting, not content: any two are equal (so responses compare by content).
impl PartialEq for Queued {
    fn eq(&self, _: &Queued) -> bool {
        true
    }
}
impl Eq for Queued {}

/// What a response counts against its stream's bound: keys, values and previous values
/// of its events plus a fixed overhead per event.
fn response_cost(events: &[Event]) -> u64 {
    events
        .iter()
        .map(|e| {
            let prev = e
                .prev_kv
                .as_ref()
                .map_or(0, |p| p.key.len() + p.value.len());
            (e.kv.key.len() + e.kv.value.len() + prev) as u64 + crate::mvcc::ROW_OVERHEAD
        })
        .sum()
}

impl WatchResponse {
    /// A response with no events: a progress notification (bookmark).
    pub fn is_progress_notify(&self) -> bool {
        self.events.is_empty() && !self.canceled && self.compact_revision == 0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchError {
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
    #[error("mvcc: watch stream closed")]
    StreamClosed,
}

/// Tuning of the watch hub.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Responses buffered per stream before its watchers fall back to unsynced.
    pub stream_capacity: usize,
    /// Bytes of event responses queued per stream (not yet consumed) at or above which
    /// its watchers fall back to unsynced (see the module doc).
    pub stream_bytes: u64,
    /// Backend rows read per catch-up batch (whole revisions are never split).
    pub sync_batch: usize,
    /// How often the background thread retries victims and catches up unsynced watchers.
    pub sync_interval: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            stream_capacity: 128,
            stream_bytes: DEFAULT_STREAM_BYTES,
            sync_batch: 1000,
            sync_interval: Duration::from_millis(10),
        }
    }
}

/// Default of [`WatchConfig::stream_bytes`].
pub const DEFAULT_STREAM_BYTES: u64 = 4 << 20;

type WKey = (u64, i64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Synced,
    Unsynced,
    Victim,
}

struct Watcher {
    key: Vec<u8>,
    end: Vec<u8>,
    /// Next revision this watcher needs (events below it are never sent).
    min_rev: i64,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    group: Group,
    pending: Option<WatchResponse>,
    tx: mpsc::Sender<WatchResponse>,
    /// Bytes queued on this watcher's stream (shared by its watchers).
    queued: Arc<AtomicU64>,
}

impl Watcher {
    fn matches(&self, k: &[u8]) -> bool {
        if self.end.is_empty() {
            k == self.key.as_slice()
        } else if self.end == [0] {
            k >= self.key.as_slice()
        } else {
            k >= self.key.as_slice() && k < self.end.as_slice()
        }
    }

    /// Whether this watcher wants any event of `evs`.
    fn events_wanted(&self, evs: &[Event]) -> bool {
        evs.iter().any(|e| {
            e.kv.mod_revision >= self.min_rev
                && self.matches(&e.kv.key)
                && match e.kind {
                    EventType::Put => !self.no_put,
                    EventType::Delete => !self.no_delete,
                }
        })
    }

    /// The events of `evs` this watcher wants, shaped for it.
    fn select(&self, evs: &[Event]) -> Vec<Event> {
        evs.iter()
            .filter(|e| e.kv.mod_revision >= self.min_rev && self.matches(&e.kv.key))
            .filter(|e| match e.kind {
                EventType::Put => !self.no_put,
                EventType::Delete => !self.no_delete,
            })
            .map(|e| Event {
                kind: e.kind,
                kv: e.kv.clone(),
                prev_kv: if self.prev_kv {
                    e.prev_kv.clone()
                } else {
                    None
                },
            })
            .collect()
    }
}

struct StreamState {
    tx: mpsc::Sender<WatchResponse>,
    queued: Arc<AtomicU64>,
    next_id: i64,
    ids: HashSet<i64>,
}

#[derive(Default)]
struct HubState {
    watchers: HashMap<WKey, Watcher>,
    /// Synced single-key watchers by key, and synced range watchers.
    synced_keys: HashMap<Vec<u8>, HashSet<WKey>>,
    synced_ranges: HashSet<WKey>,
    unsynced: HashSet<WKey>,
    victims: HashSet<WKey>,
    streams: HashMap<u64, StreamState>,
    next_stream: u64,
    /// Newest revision whose events were handed to synced watchers.
    cur_rev: i64,
    /// How many watchers want previous values (the store's count, see
    /// `KvStore::prev_kv_watchers`).
    prev_kv_watchers: Arc<AtomicUsize>,
}

enum Send {
    Sent,
    Full(WatchResponse),
    Closed,
}

fn try_send(tx: &mpsc::Sender<WatchResponse>, r: WatchResponse) -> Send {
    match tx.try_send(r) {
        Ok(()) => Send::Sent,
        Err(mpsc::error::TrySendError::Full(r)) => Send::Full(r),
        Err(mpsc::error::TrySendError::Closed(_)) => Send::Closed,
    }
}

impl HubState {
    fn set_group(&mut self, k: WKey, g: Group) {
        let Some(w) = self.watchers.get_mut(&k) else {
            return;
        };
        let old = w.group;
        w.group = g;
        let single = w.end.is_empty();
        let key = w.key.clone();
        match old {
            Group::Synced => {
                if single {
                    if let Some(s) = self.synced_keys.get_mut(&key) {
                        s.remove(&k);
                        if s.is_empty() {
                            self.synced_keys.remove(&key);
                        }
                    }
                } else {
                    self.synced_ranges.remove(&k);
                }
            }
            Group::Unsynced => {
                self.unsynced.remove(&k);
            }
            Group::Victim => {
                self.victims.remove(&k);
            }
        }
        match g {
            Group::Synced => {
                if single {
                    self.synced_keys.entry(key).or_default().insert(k);
                } else {
                    self.synced_ranges.insert(k);
                }
            }
            Group::Unsynced => {
                self.unsynced.insert(k);
            }
            Group::Victim => {
                self.victims.insert(k);
            }
        }
    }

    fn remove(&mut self, k: WKey) -> bool {
        // Leave every group first, then drop the watcher.
        if !self.watchers.contains_key(&k) {
            return false;
        }
        self.set_group(k, Group::Unsynced);
        self.unsynced.remove(&k);
        if self.watchers.remove(&k).is_some_and(|w| w.prev_kv) {
            self.prev_kv_watchers.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(s) = self.streams.get_mut(&k.0) {
            s.ids.remove(&k.1);
        }
        true
    }

    /// Sends `resp` to watcher `k`. `next_min` is the watcher's next revision once `resp`
    /// is out. When the stream has no room, an event response is dropped and the watcher
    /// keeps its next revision and becomes unsynced (caught up from the backend later); a
    /// cancellation is kept as the watcher's one pending response (victim).
    fn deliver(&mut self, k: WKey, mut resp: WatchResponse, next_min: i64, limit: u64) {
        let Some(w) = self.watchers.get_mut(&k) else {
            return;
        };
        let canceled = resp.canceled;
        if !canceled {
            if !has_room(w, limit) {
                self.fall_behind(k);
                return;
            }
            let bytes = response_cost(&resp.events);
            w.queued.fetch_add(bytes, Ordering::AcqRel);
            resp.queued = Some(Arc::new(Queued {
                counter: w.queued.clone(),
                bytes,
            }));
        }
        match try_send(&w.tx, resp) {
            Send::Sent => {
                w.min_rev = w.min_rev.max(next_min);
                if canceled {
                    self.remove(k);
                }
            }
            Send::Full(r) if canceled => {
                w.pending = Some(r);
                self.set_group(k, Group::Victim);
            }
            Send::Full(_) => self.fall_behind(k),
            Send::Closed => {
                self.remove(k);
            }
        }
    }

    /// Watcher `k` could not be sent its next events: it keeps its next revision and
    /// is caught up from the backend once its stream has room.
    fn fall_behind(&mut self, k: WKey) {
        if self.watchers.get(&k).map(|w| w.group) != Some(Group::Unsynced) {
            self.set_group(k, Group::Unsynced);
        }
    }
}

/// A put of a key that had a version before it, carrying no previous value (the store
/// reads previous values only while some watcher wants them).
fn lacks_prev_kv(e: &Event) -> bool {
    e.kind == EventType::Put && e.kv.version > 1 && e.prev_kv.is_none()
}

/// Whether `w`'s stream can take another event response now.
fn has_room(w: &Watcher, limit: u64) -> bool {
    w.queued.load(Ordering::Acquire) < limit && w.tx.capacity() > 0
}

struct Hub {
    kv: Arc<KvStore>,
    state: Mutex<HubState>,
    wake: Condvar,
    shutdown: AtomicBool,
    cfg: WatchConfig,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the events of one revision to the synced watchers (called after the commit).
    fn notify(&self, rev: i64, events: &[Event]) {
        let mut st = self.lock();
        st.cur_rev = st.cur_rev.max(rev);
        if events.is_empty() {
            return;
        }
        let mut targets: HashSet<WKey> = HashSet::new();
        for e in events {
            if let Some(ws) = st.synced_keys.get(&e.kv.key) {
                targets.extend(ws.iter().copied());
            }
        }
        for k in &st.synced_ranges {
            let w = &st.watchers[k];
            if events.iter().any(|e| w.matches(&e.kv.key)) {
                targets.insert(*k);
            }
        }
        let mut targets: Vec<_> = targets.into_iter().collect();
        targets.sort_unstable();
        let limit = self.cfg.stream_bytes;
        let mut behind = false;
        for k in targets {
            let w = &st.watchers[&k];
            if !has_room(w, limit) {
                // Build nothing for a stream that cannot take it.
                if w.events_wanted(events) {
                    st.fall_behind(k);
                    behind = true;
                }
                continue;
            }
            let evs = w.select(events);
            if evs.is_empty() {
                continue;
            }
            if w.prev_kv && evs.iter().any(lacks_prev_kv) {
                // Applied before this watcher was counted: its previous values were not
                // read. The catch-up path reads them with the events.
                st.fall_behind(k);
                behind = true;
                continue;
            }
            let resp = WatchResponse {
                watch_id: k.1,
                revision: rev,
                events: evs,
                ..Default::default()
            };
            st.deliver(k, resp, rev + 1, limit);
        }
        let victims = behind || !st.victims.is_empty() || !st.unsynced.is_empty();
        drop(st);
        if victims {
            // A consumer just fell behind: retry it soon, not at the next idle tick.
            self.wake.notify_all();
        }
    }

    /// One pass of the background work: retry victims, then catch up unsynced watchers.
    fn sync_once(&self) {
        self.retry_victims();
        // Several rounds, so a watcher far behind catches up without waiting a tick each
        // batch; bounded so victims get retried in between.
        for _ in 0..16 {
            match self.sync_unsynced() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    warn!(error = %e, "watch catch-up read failed");
                    break;
                }
            }
        }
    }

    fn retry_victims(&self) {
        let mut st = self.lock();
        let victims: Vec<WKey> = st.victims.iter().copied().collect();
        let cur = st.cur_rev;
        for k in victims {
            let Some(w) = st.watchers.get_mut(&k) else {
                continue;
            };
            let outcome = match w.pending.take() {
                None => Send::Sent,
                Some(resp) if resp.canceled => match try_send(&w.tx, resp) {
                    Send::Sent => Send::Closed,
                    other => other,
                },
                Some(resp) => try_send(&w.tx, resp),
            };
            let next = if w.min_rev > cur {
                Group::Synced
            } else {
                Group::Unsynced
            };
            match outcome {
                Send::Sent => st.set_group(k, next),
                Send::Full(r) => w.pending = Some(r),
                // Closed channel, or a cancel response delivered: the watcher is done.
                Send::Closed => {
                    st.remove(k);
                }
            }
        }
    }

    /// Catches unsynced watchers up by one batch. Returns whether there is more to do.
    fn sync_unsynced(&self) -> Result<bool> {
        let limit = self.cfg.stream_bytes;
        let (from, to, want_prev) = {
            let st = self.lock();
            // Watchers whose stream cannot take a response now wait: reading for them
            // would only build responses to drop.
            let ready: Vec<&Watcher> = st
                .unsynced
                .iter()
                .map(|k| &st.watchers[k])
                .filter(|w| has_room(w, limit) || w.min_rev > st.cur_rev)
                .collect();
            let Some(from) = ready.iter().map(|w| w.min_rev).min() else {
                return Ok(false);
            };
            let want_prev = ready.iter().any(|w| w.prev_kv);
            (from, st.cur_rev, want_prev)
        };
        if from > to {
            // Everyone unsynced is at the head already: hand them over.
            let mut st = self.lock();
            let cur = st.cur_rev;
            let ready: Vec<WKey> = st
                .unsynced
                .iter()
                .copied()
                .filter(|k| st.watchers[k].min_rev > cur)
                .collect();
            for k in ready {
                st.set_group(k, Group::Synced);
            }
            return Ok(false);
        }
        let (mut events, last) = match self.kv.events_since(from, to, self.cfg.sync_batch) {
            Ok(x) => x,
            Err(Error::Request(EtcdError::Compacted)) => {
                self.cancel_compacted();
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        if want_prev {
            for e in &mut events {
                e.prev_kv = self.kv.get_at(&e.kv.key, e.kv.mod_revision - 1)?;
            }
        }
        let mut st = self.lock();
        let cur = st.cur_rev;
        let ks: Vec<WKey> = st.unsynced.iter().copied().collect();
        for k in ks {
            let w = &st.watchers[&k];
            let min_rev = w.min_rev;
            // Watchers that arrived during the read with an older start wait a round.
            if min_rev < from || min_rev > last {
                if min_rev > cur {
                    st.set_group(k, Group::Synced);
                }
                continue;
            }
            if !has_room(w, limit) {
                // Its stream is full: it keeps its place and is read for again later.
                continue;
            }
            let evs = w.select(&events);
            let done = last >= cur;
            if !evs.is_empty() {
                let resp = WatchResponse {
                    watch_id: k.1,
                    revision: last,
                    events: evs,
                    ..Default::default()
                };
                st.deliver(k, resp, last + 1, limit);
            } else if let Some(w) = st.watchers.get_mut(&k) {
                w.min_rev = w.min_rev.max(last + 1);
            }
            if done {
                if let Some(w) = st.watchers.get(&k) {
                    if w.group == Group::Unsynced {
                        st.set_group(k, Group::Synced);
                    }
                }
            }
        }
        Ok(last < cur)
    }

    /// Cancels every unsynced watcher whose next revision is compacted.
    fn cancel_compacted(&self) {
        let compact = self.kv.compact_revision();
        let mut st = self.lock();
        let ks: Vec<WKey> = st
            .unsynced
            .iter()
            .copied()
            .filter(|k| st.watchers[k].min_rev < compact)
            .collect();
        for k in ks {
            let resp = WatchResponse {
                watch_id: k.1,
                revision: st.cur_rev,
                compact_revision: compact,
                canceled: true,
                ..Default::default()
            };
            st.deliver(k, resp, 0, u64::MAX);
        }
    }
}

fn sync_loop(hub: Arc<Hub>) {
    loop {
        {
            let st = hub.lock();
            if hub.shutdown.load(Ordering::SeqCst) {
                return;
            }
            let idle = st.unsynced.is_empty() && st.victims.is_empty();
            let wait = if idle {
                hub.cfg.sync_interval * 10
            } else {
                hub.cfg.sync_interval
            };
            let _ = hub.wake.wait_timeout(st, wait);
        }
        if hub.shutdown.load(Ordering::SeqCst) {
            return;
        }
        hub.sync_once();
    }
}

/// A [`KvStore`] whose applies feed watchers. Share it behind an `Arc`.
pub struct WatchableStore {
    hub: Arc<Hub>,
    worker: Option<JoinHandle<()>>,
}

impl WatchableStore {
    pub fn new(kv: Arc<KvStore>, cfg: WatchConfig) -> WatchableStore {
        let cur = kv.current_revision();
        let prev_kv_watchers = kv.prev_kv_watchers();
        let hub = Arc::new(Hub {
            kv,
            state: Mutex::new(HubState {
                cur_rev: cur,
                prev_kv_watchers,
                ..Default::default()
            }),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            cfg,
        });
        let h = Arc::clone(&hub);
        let worker = std::thread::Builder::new()
            .name("skiff-watch-sync".into())
            .spawn(move || sync_loop(h))
            .ok();
        if worker.is_none() {
            warn!("could not start the watch sync thread");
        }
        WatchableStore { hub, worker }
    }

    pub fn kv(&self) -> &Arc<KvStore> {
        &self.hub.kv
    }

    /// [`KvStore::apply`], then notifies watchers of the new revision.
    pub fn apply(&self, entry: ApplyEntry<'_>, leases: &dyn LeaseCheck) -> Result<Applied> {
        let mut out = self.apply_batch(&[entry], leases)?;
        Ok(out.pop().expect("one result per entry"))
    }

    /// [`KvStore::apply_batch`], then notifies watchers revision by revision.
    pub fn apply_batch(
        &self,
        entries: &[ApplyEntry<'_>],
        leases: &dyn LeaseCheck,
    ) -> Result<Vec<Applied>> {
        let out = self.hub.kv.apply_batch(entries, leases)?;
        for a in &out {
            if let Applied::Done {
                events, revision, ..
            } = a
            {
                self.hub.notify(*revision, events);
            }
        }
        Ok(out)
    }

    /// Installs a leader's snapshot ([`KvStore::restore_from_dump`]) without losing or
    /// inventing events: under the hub lock (no apply can notify meanwhile) the store is
    /// replaced, then every synced watcher becomes unsynced and catches up from the new
    /// backend from the revision it had reached, or is cancelled with the compaction
    /// revision if the snapshot compacted past it. (etcd #15271: a watch went back in
    /// time after a snapshot install.)
    pub fn restore_from_dump<R: std::io::Read>(&self, r: R) -> Result<crate::backend::DumpSummary> {
        let mut st = self.hub.lock();
        let summary = self.hub.kv.restore_from_dump(r)?;
        let synced: Vec<WKey> = st
            .watchers
            .iter()
            .filter(|(_, w)| w.group == Group::Synced)
            .map(|(k, _)| *k)
            .collect();
        for k in synced {
            st.set_group(k, Group::Unsynced);
        }
        st.cur_rev = self.hub.kv.current_revision();
        drop(st);
        self.hub.wake.notify_all();
        Ok(summary)
    }

    /// Opens a watch stream: a set of watchers sharing one bounded response channel.
    pub fn new_stream(&self) -> (WatchStream, mpsc::Receiver<WatchResponse>) {
        let (tx, rx) = mpsc::channel(self.hub.cfg.stream_capacity.max(1));
        let mut st = self.hub.lock();
        let id = st.next_stream;
        st.next_stream += 1;
        st.streams.insert(
            id,
            StreamState {
                tx,
                queued: Arc::new(AtomicU64::new(0)),
                next_id: 0,
                ids: HashSet::new(),
            },
        );
        (
            WatchStream {
                hub: Arc::clone(&self.hub),
                id,
            },
            rx,
        )
    }

    /// The periodic progress hook: every synced watcher that asked for progress
    /// notifications gets an empty response at the current revision (skipped if its
    /// channel is full; the next tick retries).
    pub fn progress_notify(&self) {
        let st = self.hub.lock();
        let cur = st.cur_rev;
        for (k, w) in &st.watchers {
            if w.progress_notify && w.group == Group::Synced {
                let _ = w.tx.try_send(WatchResponse {
                    watch_id: k.1,
                    revision: cur,
                    ..Default::default()
                });
            }
        }
    }

    /// Number of watchers (all groups), for metrics.
    pub fn watcher_count(&self) -> usize {
        self.hub.lock().watchers.len()
    }
}

impl Drop for WatchableStore {
    fn drop(&mut self) {
        self.hub.shutdown.store(true, Ordering::SeqCst);
        self.hub.wake.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// One client watch stream. Dropping it removes its watchers.
pub struct WatchStream {
    hub: Arc<Hub>,
    id: u64,
}

impl WatchStream {
    /// Creates a watcher; returns its id. Events (and a cancel on compaction) arrive on the
    /// stream's receiver.
    pub fn watch(&self, req: &WatchRequest) -> Result<i64, WatchError> {
        let mut st = self.hub.lock();
        let cur = st.cur_rev;
        let s = st
            .streams
            .get_mut(&self.id)
            .ok_or(WatchError::StreamClosed)?;
        let id = if req.watch_id != 0 {
            if s.ids.contains(&req.watch_id) {
                return Err(WatchError::DuplicateId);
            }
            req.watch_id
        } else {
            // As etcd: the counter moves past every ID it hands out, so an ID is not
            // reused after a cancel (a client routing late events by ID would send
            // them to the wrong watcher).
            while s.ids.contains(&s.next_id) {
                s.next_id += 1;
            }
            let id = s.next_id;
            s.next_id += 1;
            id
        };
        s.ids.insert(id);
        let tx = s.tx.clone();
        let queued = s.queued.clone();
        let synced = req.start_revision <= 0 || req.start_revision > cur;
        let min_rev = if req.start_revision <= 0 {
            cur + 1
        } else {
            req.start_revision
        };
        let k = (self.id, id);
        if req.prev_kv {
            st.prev_kv_watchers.fetch_add(1, Ordering::AcqRel);
        }
        st.watchers.insert(
            k,
            Watcher {
                key: req.key.clone(),
                end: req.range_end.clone(),
                min_rev,
                no_put: req.filters.contains(&WatchFilter::NoPut),
                no_delete: req.filters.contains(&WatchFilter::NoDelete),
                prev_kv: req.prev_kv,
                progress_notify: req.progress_notify,
                // Placeholder; set_group moves it into its real group's index.
                group: Group::Victim,
                pending: None,
                tx,
                queued,
            },
        );
        st.victims.insert(k);
        st.set_group(
            k,
            if synced {
                Group::Synced
            } else {
                Group::Unsynced
            },
        );
        drop(st);
        if !synced {
            self.hub.wake.notify_all();
        }
        Ok(id)
    }

    /// Removes a watcher; false if there was none with that id.
    pub fn cancel(&self, watch_id: i64) -> bool {
        self.hub.lock().remove((self.id, watch_id))
    }

    /// etcd 3.5's `RequestProgress`: if every watcher of this stream is synced, sends one
    /// response with `watch_id = -1` at the current revision and returns true; otherwise
    /// sends nothing (the revision would promise events not yet delivered).
    pub fn request_progress(&self) -> bool {
        let st = self.hub.lock();
        let all_synced = st
            .watchers
            .iter()
            .filter(|(k, _)| k.0 == self.id)
            .all(|(_, w)| w.group == Group::Synced);
        if !all_synced {
            return false;
        }
        let Some(s) = st.streams.get(&self.id) else {
            return false;
        };
        s.tx.try_send(WatchResponse {
            watch_id: -1,
            revision: st.cur_rev,
            ..Default::default()
        })
        .is_ok()
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let mut st = self.hub.lock();
        let ks: Vec<WKey> = st
            .watchers
            .keys()
            .copied()
            .filter(|k| k.0 == self.id)
            .collect();
        for k in ks {
            st.remove(k);
        }
        st.streams.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{AnyLease, ApplyEntry, PutRequest, StoreConfig, WriteRequest};

    fn put(kv: &KvStore, index: u64, key: &str, value: &str) -> Vec<Event> {
        let req = WriteRequest::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        });
        let entry = ApplyEntry {
            index,
            term: 1,
            request: &req,
            aux: &[],
            record: None,
        };
        match kv.apply_batch(&[entry], &AnyLease).unwrap().pop() {
            Some(Applied::Done { events, .. }) => events,
            other => panic!("not applied: {other:?}"),
        }
    }

    /// A put applied while no watcher wanted previous values, handed to a `prev_kv`
    /// watcher counted just after (the race `notify` guards): the watcher gets the event
    /// with its previous value, read from the backend by the catch-up path.
    #[tokio::test]
    async fn a_prev_kv_watcher_counted_after_a_put_still_gets_its_previous_value() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Arc::new(KvStore::open(dir.path().join("db"), StoreConfig::default()).unwrap());
        let ws = WatchableStore::new(kv.clone(), WatchConfig::default());
        let first = put(&kv, 1, "a", "1");
        ws.hub.notify(first[0].kv.mod_revision, &first);
        // Applied to the store, not yet handed to the hub.
        let events = put(&kv, 2, "a", "2");
        assert_eq!(events[0].kv.version, 2);
        assert!(events[0].prev_kv.is_none(), "no watcher wanted it");
        let (stream, mut rx) = ws.new_stream();
        stream
            .watch(&WatchRequest {
                key: b"a".to_vec(),
                prev_kv: true,
                ..Default::default()
            })
            .unwrap();
        ws.hub.notify(events[0].kv.mod_revision, &events);
        let resp = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("caught up")
            .expect("a response");
        assert_eq!(resp.events.len(), 1);
        assert_eq!(resp.events[0].kv.value, b"2");
        let prev = resp.events[0].prev_kv.as_ref().expect("previous value");
        assert_eq!((prev.value.as_slice(), prev.version), (&b"1"[..], 1));
        // Counted while it lives, not after.
        assert_eq!(kv.prev_kv_watchers().load(Ordering::Acquire), 1);
        drop(stream);
        assert_eq!(kv.prev_kv_watchers().load(Ordering::Acquire), 0);
    }
}
