//! Online defragmentation: the backend file is rebuilt into a new, compact file while
//! writes go on, and the new file replaces the old one under a pause that lasts as long
//! as copying the rows written since the last catch-up round and a rename take (no
//! fsync), not as long as the database (`tests/defrag.rs` prints it for a small store;
//! `bench/defrag.sh` measures the write stall at scale).
//!
//! The page store gives freed pages back to the file system only where they reach the
//! file's end; the pages in between are reused, not returned. Rewriting the file in
//! place would need the database to itself (no reader, no writer) for as long as it
//! takes: etcd's stop-the-world defragmentation. Here instead:
//!
//! 1. **Bulk copy.** A read transaction of the old file is a consistent view; every
//!    table is copied from it into `<file>.defrag` while applies keep committing to the
//!    old file. The `key` rows go in key order (so each leaf is filled before the next
//!    is started), in transactions of about 1 MiB, each written back to the disk
//!    (`fdatasync`) before the next. A WAL fsync issued meanwhile waits behind the
//!    write-back in the disk's queue: one write-back of the whole copy at the end kept
//!    the disk busy for seconds (writers stalled 386 ms at 1M keys, `bench/defrag.sh`);
//!    8 MiB pieces still made the p99 of a 4 KiB `fdatasync` probe beside the member
//!    5.5-9.2 ms, where 1 MiB pieces made it 1.6-2.8 ms (about 0.3 ms idle).
//! 2. **Catch-up rounds.** A newer read view is taken and what changed since the last
//!    round is copied: the `key` rows after the last one copied, and the whole of every
//!    other table (they are small: meta, leases, members, alarms, auth). Rounds repeat
//!    while they still find many rows. Each round ends with a durable commit, so the
//!    durable commit after the swap finds little left to write.
//! 3. **Swap window.** A sync is held off ([`Backend::sync`] waits) and durable commits
//!    stop advancing the durable consistent index (until the rename is durable); then
//!    one more durable round copies what is new, so the copy is durable up to every
//!    sync and every durable commit made so far.
//! 4. **Swap.** The old file's writer slot is taken (in-flight writes finish first; new
//!    ones wait), the last rows are copied and committed without an fsync, the copy is
//!    renamed over the old file and becomes the database writers and readers use.
//!    Writers that waited for the old file's slot get it, see the file was replaced and
//!    start again on the new one ([`Backend::begin_write`]), so no write is ever lost in
//!    the old file. Readers that opened the old file keep their view. The pause is the
//!    copy of those last rows (written since the durable round just before) and the
//!    rename: no fsync. It used to end with the copy's durable commit and the
//!    directory's sync, which on a busy disk made it 20-60 ms (`bench/defrag.sh` before
//!    commit 2784386).
//! 5. **Durable under its name.** With writers going on in the new file, the directory
//!    is synced, the new file written back and committed durably (the maintenance
//!    thread's kind of commit: a presync, then a commit that finds little left to
//!    write); that ends the swap window.
//! 6. **Release.** Once the old file is closed (its last reader gone), its blocks are
//!    given back a slice at a time from its end ([`crate::gradual`]), on a background
//!    thread. Freeing a 2 GB file at once put all its extents in one journal commit of
//!    the file system (ext4 mounted with `discard` also trims them there), and every
//!    fsync of the member's WAL waited for that commit: a 471 ms `fdatasync` on the
//!    probe above and a 515 ms put, both right at the swap.
//!
//! **Contract**: rows of the `key` table are only ever added above every existing key
//! (MVCC revisions grow) and removed only by physical compaction or a snapshot install;
//! the caller keeps both from running meanwhile (the store's space gate). The swap
//! checks the two `key` tables have the same number of rows and gives up otherwise.
//!
//! **Crash safety**: until the rename, the old file is whole and `<file>.defrag` is
//! removed at the next open. Between the rename and the end of the swap window, a crash
//! leaves the old file (the rename not yet durable) or the copy at its last durable
//! round; either holds every sync and the durable consistent index, which stayed put
//! until the directory's sync made the rename durable, so the WAL still has what came
//! after (`tests/failpoints.rs` crashes the member at `defrag-after-swap`). After the
//! window, the new file holds everything the old one did, durably.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use skiff_pages::Store;
use tracing::info;

use super::{sync_dir_of, BResult, Backend, BackendError, ReadTx, Table, WriteTx};

/// A catch-up round that copied fewer rows than this is the last one before the swap.
const SMALL_ROUND: u64 = 2_000;
/// At most this many catch-up rounds; the swap copies whatever is left.
const MAX_ROUNDS: u32 = 8;
/// The copy writes back what it wrote after about this many bytes of `key` rows (see the
/// module docs for why not more).
const CHUNK_BYTES: usize = 1 << 20;

/// The nice value of the thread that copies (the swap runs on the caller's thread, at
/// its priority, since writers wait for it). On two cores the copy took a core from the
/// member's request, Raft and apply threads; at nice 10 it gets about a tenth of a
/// contended core and all of an idle one.
const COPY_NICE: i32 = 10;

/// What a defragmentation did.
#[derive(Clone, Debug)]
pub struct DefragReport {
    /// File size before, and at the swap (writes made after it grow the new file).
    pub size_before: u64,
    pub size_after: u64,
    /// Rows copied, in all rounds.
    pub rows: u64,
    /// Catch-up rounds before the swap.
    pub rounds: u32,
    /// How long writers were held off (the swap).
    pub pause: Duration,
    pub total: Duration,
}

/// Where the copy of `path` is built.
pub(super) fn copy_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".defrag");
    PathBuf::from(name)
}

/// Removes an unfinished copy left by a defragmentation that did not complete.
pub(super) fn remove_leftover(path: &Path) {
    let copy = copy_path(path);
    if copy.exists() {
        tracing::warn!(file = %copy.display(), "removing an unfinished defragmentation copy");
        let _ = std::fs::remove_file(&copy);
    }
}

/// How a catch-up round's last transaction commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Finish {
    /// fsynced: the rounds before the swap.
    Durable,
    /// Visible, not fsynced: the rows copied inside the swap's pause.
    Lazy,
}

/// Copies rows from read views of the old file into the new one.
struct Copier<'a> {
    new: &'a Store,
    /// The last `key` row copied (rows are copied in key order).
    last_key: Option<Vec<u8>>,
    rows: u64,
}

impl Copier<'_> {
    /// Copies what `src` has that the copy lacks (see the module docs); returns the rows
    /// copied. The `key` rows go in write transactions of about [`CHUNK_BYTES`] each,
    /// not durable, each followed by a write-back of the file; the last one also copies
    /// the other tables and is committed as `finish` says.
    fn round(&mut self, src: &ReadTx, finish: Finish) -> BResult<u64> {
        let from = src.open_table(Table::Key)?;
        let lower = match &self.last_key {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        let mut rows =
            from.range::<&[u8]>((lower.as_ref().map(|k| k.as_slice()), Bound::Unbounded))?;
        let mut copied = 0u64;
        loop {
            // Rows in key order land past the table's last key: each leaf is cut full
            // and the next one started, so the copy's pages come out full.
            let tx = WriteTx::new(self.new.begin_write());
            let mut chunk = 0usize;
            {
                let mut to = tx.open_table(Table::Key)?;
                for row in rows.by_ref() {
                    let (k, v) = row?;
                    let (k, v) = (k.value(), v.value());
                    to.insert(k, v)?;
                    copied += 1;
                    chunk += k.len() + v.len();
                    let kept = self.last_key.get_or_insert_with(Vec::new);
                    kept.clear();
                    kept.extend_from_slice(k);
                    if chunk >= CHUNK_BYTES {
                        break;
                    }
                }
            }
            if chunk >= CHUNK_BYTES {
                tx.into_inner().commit(false)?;
                self.write_back()?;
                continue;
            }
            for table in Table::ALL.into_iter().filter(|t| *t != Table::Key) {
                tx.delete_table(table)?;
                let from = src.open_table(table)?;
                let mut to = tx.open_table(table)?;
                for row in from.iter()? {
                    let (k, v) = row?;
                    to.insert(k.value(), v.value())?;
                    copied += 1;
                }
            }
            tx.into_inner().commit(finish == Finish::Durable)?;
            self.rows += copied;
            return Ok(copied);
        }
    }

    /// Writes back what the copy has written so far (`fdatasync` on a descriptor of its
    /// own). Without it the first round's durable commit wrote the whole copy back at
    /// once (about 1 GB for 1M keys), and the disk, busy for seconds, held up the WAL's
    /// and the old file's fsyncs: writers stalled for hundreds of ms.
    fn write_back(&self) -> BResult<()> {
        Ok(self.new.write_back()?)
    }
}

/// An I/O error on `path`, for `map_err`.
fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
    move |source| BackendError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Lowers the calling thread's CPU priority to [`COPY_NICE`] (Linux keeps a nice value
/// per thread). Best effort: a system that refuses leaves the copy at normal priority.
fn yield_to_others() {
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), COPY_NICE)
    {
        tracing::debug!(error = %e, "defragment: could not lower the copy's priority");
    }
}

/// Releases the old file of a defragmentation on a background thread at the copy's
/// priority (see the module docs).
fn release_in_background(file: std::fs::File, path: PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("defrag-release".into())
        .spawn(move || {
            yield_to_others();
            let started = Instant::now();
            match crate::gradual::release(&file, crate::gradual::STEP, crate::gradual::PAUSE) {
                Ok(()) => {
                    tracing::debug!(took = ?started.elapsed(), "defragment: old file released")
                }
                Err(e) => tracing::warn!(file = %path.display(), error = %e,
                    "defragment: releasing the old file gradually failed; freed at once"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "defragment: no thread to release the old file; freed at once");
    }
}

/// Keeps durable commits from advancing the durable consistent index while it lives
/// (the swap window, see the module docs).
struct Frozen<'a>(&'a Backend);

impl<'a> Frozen<'a> {
    fn new(be: &'a Backend) -> Self {
        be.durable_frozen.store(true, Ordering::SeqCst);
        Frozen(be)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.0.durable_frozen.store(false, Ordering::SeqCst);
    }
}

impl Backend {
    /// Rebuilds the database file compactly while writes continue (see the module docs
    /// for how, and for the contract the caller keeps). One at a time.
    pub fn defragment(&self) -> BResult<DefragReport> {
        let _one = self.defragmenting.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let size_before = self.size_bytes()?;
        let copy = copy_path(&self.path);
        let _ = std::fs::remove_file(&copy);
        let new = Store::open(&copy, super::store_options(&self.cfg))?;
        match self.copy_and_swap(new, &copy) {
            Ok((rows, rounds, pause, size_after)) => {
                let report = DefragReport {
                    size_before,
                    size_after,
                    rows,
                    rounds,
                    pause,
                    total: started.elapsed(),
                };
                info!(
                    size_before = report.size_before,
                    size_after = report.size_after,
                    rows = report.rows,
                    rounds = report.rounds,
                    pause_ms = report.pause.as_secs_f64() * 1e3,
                    took_ms = report.total.as_secs_f64() * 1e3,
                    "backend defragmented"
                );
                Ok(report)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&copy);
                Err(e)
            }
        }
    }

    /// The rounds and the swap; returns (rows copied, catch-up rounds, pause, size of
    /// the new file at the swap).
    fn copy_and_swap(&self, new: Store, copy: &Path) -> BResult<(u64, u32, Duration, u64)> {
        let mut copier = Copier {
            new: &new,
            last_key: None,
            rows: 0,
        };
        // The bulk copy and the catch-up rounds yield the CPU to the member's own work.
        let rounds = std::thread::scope(|s| {
            s.spawn(|| {
                yield_to_others();
                let t = Instant::now();
                let rows = copier.round(&self.begin_read()?, Finish::Durable)?;
                tracing::debug!(rows, took = ?t.elapsed(), "defragment: bulk copy done");
                let mut rounds = 0;
                while rounds < MAX_ROUNDS {
                    rounds += 1;
                    let t = Instant::now();
                    let rows = copier.round(&self.begin_read()?, Finish::Durable)?;
                    tracing::debug!(rows, took = ?t.elapsed(), "defragment: catch-up round done");
                    if rows < SMALL_ROUND {
                        break;
                    }
                }
                Ok::<_, BackendError>(rounds)
            })
            .join()
            .map_err(|_| BackendError::Corrupt("defragment: the copy thread panicked".into()))?
        })?;

        // The swap window (module docs): from the last durable round until the new file
        // is durable under the database's name, a crash may leave either file, so the
        // durable consistent index stays where both files have it and a sync waits.
        let window = self.swap_window.lock().unwrap_or_else(|p| p.into_inner());
        let frozen = Frozen::new(self);
        let t = Instant::now();
        copier.round(&self.begin_read()?, Finish::Durable)?;
        tracing::debug!(took = ?t.elapsed(), "defragment: durable round before the swap done");

        // The pause: nothing commits to the old file from here on.
        let old = self.current();
        let hold = old.begin_write();
        let pause_started = Instant::now();
        let src = ReadTx(old.begin_read());
        copier.round(&src, Finish::Lazy)?;
        let (old_rows, new_rows) = (
            src.open_table(Table::Key)?.len()?,
            ReadTx(new.begin_read()).open_table(Table::Key)?.len()?,
        );
        drop(src);
        if old_rows != new_rows {
            drop(hold);
            return Err(BackendError::Corrupt(format!(
                "defragment: the copy has {new_rows} key rows, the file {old_rows} \
                 (rows were removed while copying); the file is unchanged"
            )));
        }
        let rows = copier.rows;
        // A handle on the old file, to give its blocks back gradually once it is closed.
        let old_file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| tracing::debug!(error = %e, "defragment: old file not reopened"))
            .ok();
        skiff_failpoints::fail_point!("defrag-swap");
        std::fs::rename(copy, &self.path).map_err(io_at(copy))?;
        let size = new.stats().file_bytes;
        self.size.store(size, Ordering::Relaxed);
        *self.db.write().unwrap_or_else(|p| p.into_inner()) = new;
        drop(hold);
        // The old file is gone from the directory: its lazy commits need not be
        // written back when its last reader closes it.
        old.discard_on_close();
        let pause = pause_started.elapsed();

        // Writers go on in the new file; now make the rename and the new file durable.
        skiff_failpoints::fail_point!("defrag-after-swap");
        let t = Instant::now();
        sync_dir_of(&self.path).map_err(|e| self.record_failure(e))?;
        // The copy is the file a crash leaves now, and every commit so far is in it, so
        // any durable commit from here on covers what it says.
        drop(frozen);
        self.commit_durably_now()?;
        tracing::debug!(?pause, took = ?t.elapsed(), "defragment: swapped; the new file is durable");
        // The window ends here, not after the wait for the old file's readers below.
        drop(window);

        // Give the old file's blocks back once its last reader is gone. A reader that
        // still holds it after the deadline closes it later, and the file is freed at
        // once then (truncating it under a reader would break its view).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !old.is_last_handle() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if old.is_last_handle() {
            drop(old);
            if let Some(file) = old_file {
                release_in_background(file, self.path.clone());
            }
        }
        Ok((rows, rounds, pause, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::backend::{tests::with_row, Commit};

    /// Writes one `key` row and `index` as the consistent index, committed as `mode` says.
    fn put(be: &Backend, index: u64, mode: Commit) {
        be.commit_as(with_row(be, Table::Key, index), index, mode)
            .unwrap();
    }

    /// Inside the swap window a durable commit leaves the durable index where it was and
    /// a sync waits for the window to close; a defragmentation ends with the index
    /// covering every commit, the last ones made lazily just before it.
    #[test]
    fn the_swap_window_holds_the_durable_index_and_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let be = Backend::open(dir.path().join("a.db"), Default::default()).unwrap();
        put(&be, 1, Commit::Lazy);
        be.sync().unwrap();
        assert_eq!(be.durable_consistent_index(), 1);

        let window = be.swap_window.lock().unwrap();
        let frozen = Frozen::new(&be);
        put(&be, 2, Commit::Durable);
        assert_eq!(be.durable_consistent_index(), 1, "frozen in the window");
        std::thread::scope(|s| {
            let sync = s.spawn(|| {
                be.sync().unwrap();
                Instant::now()
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(!sync.is_finished(), "a sync waits for the window");
            let closed = Instant::now();
            drop(frozen);
            drop(window);
            assert!(sync.join().unwrap() >= closed);
        });
        assert_eq!(be.durable_consistent_index(), 2);

        put(&be, 3, Commit::Lazy);
        put(&be, 4, Commit::Lazy);
        be.defragment().unwrap();
        assert_eq!(be.durable_consistent_index(), 4);
        assert!(!be.durable_frozen.load(Ordering::SeqCst));
        let rows = be.begin_read().unwrap();
        assert_eq!(rows.open_table(Table::Key).unwrap().len().unwrap(), 4);
    }
}
