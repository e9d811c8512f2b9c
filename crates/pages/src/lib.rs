//! Skiff's page store: ordered tables of byte keys and values in one file.
//!
//! # What it guarantees
//! - **Transactions.** One writer at a time ([`Store::begin_write`]) and any number of
//!   readers ([`Store::begin_read`]), each of which sees the state of the last commit
//!   before it began, unchanged for as long as it is open, while writers go on.
//! - **Two kinds of commit.** A durable commit ([`WriteTx::commit`] with `durable`)
//!   writes the changed nodes, `fdatasync`s, writes the meta slot not holding the last
//!   durable meta, and `fdatasync`s again: after it returns, a crash reopens at this
//!   commit or a later durable one. A lazy commit writes the changed nodes (into the
//!   operating system's cache) and is visible to readers at once, but a crash reopens at
//!   the last durable commit: the caller (the backend, which replays its log from the
//!   last durable consistent index) decides what that costs. Closing the file (its last
//!   handle dropped) makes the lazy commits durable, unless a commit failed or the file
//!   was discarded ([`Store::discard_on_close`]).
//! - **Crash safety.** Nodes are copied on write: a commit never writes a page the tree
//!   of the last durable commit reaches (see the `space` module), and the meta slots
//!   alternate, so a crash at any point leaves one whole durable tree; a torn meta fails
//!   its checksum and the other slot is used.
//! - **Corruption is refused.** Every node and meta carries a CRC32C checked when it is
//!   read; a mismatch is [`Error::Corrupt`] naming the page, never a wrong answer. Every
//!   node also carries the id of the commit that wrote it, so a newest meta damaged
//!   after later commits reused the older tree's pages is refused too, not read as the
//!   older tree with newer nodes in it (see `format`).
//! - **No bigger than the data needs.** The file holds the two meta slots and the nodes
//!   the tree reaches, plus pages freed and not yet reused; freed pages at its end are
//!   cut off after a durable commit. A new store is 2 pages (8 KiB); one holding a few
//!   small rows, 3-4 (etcd's bbolt file starts at 5 pages, 20 KiB, and grows by
//!   doubling). Free pages are not written down anywhere: opening walks the branch nodes
//!   of the newest tree and takes the rest as free, so there is no freelist to keep
//!   consistent.
//!
//! # Layout
//! One B+tree holds every table: a row's key in the tree is its table's id (one byte)
//! followed by its key. Leaves hold the rows; a row larger than a page makes its leaf a
//! run of pages (etcd allows values up to its request limit). See the `format` module for
//! the bytes and `write` for how a transaction changes the tree.

mod cache;
mod format;
#[cfg(any(test, feature = "test-hooks"))]
pub mod hooks;
mod read;
mod space;
mod write;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

pub use format::{PAGE, TABLES};
pub use read::{Iter, ReadTx, Row};
pub use write::WriteTx;

use format::{check_written_by, Meta, NodeRef, NodeView, PAGE_U64};
use space::Space;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("page store: i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("page store: corrupt data: {0}")]
    Corrupt(String),
    #[error("page store: {} is open in another process", .0.display())]
    AlreadyOpen(PathBuf),
    #[error("page store: a node of {0} bytes is larger than the format allows")]
    TooLarge(usize),
    #[error("page store: table id {0} is out of range (0..{TABLES})")]
    NoSuchTable(u8),
    /// A commit refused after an earlier failure (see [`WriteTx::commit`]).
    #[error("page store: commit refused: {0}")]
    Failed(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Tuning.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bytes of nodes kept in memory after they are read or written.
    pub cache_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_bytes: 16 << 20,
        }
    }
}

/// What the file holds (see [`Store::stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// The file's length.
    pub file_bytes: u64,
    /// Bytes of the meta slots and the pages the newest tree reaches.
    pub in_use_bytes: u64,
    /// The newest commit and the newest durable one.
    pub txid: u64,
    pub durable_txid: u64,
}

/// An open page file. Cheap to clone; the file is closed when the last clone, reader
/// and writer are gone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    file: File,
    cache: cache::Cache,
    state: Mutex<State>,
    /// Only the writer (and [`Store::stats`]) touches it.
    space: Mutex<Space>,
    /// Whether a [`WriteTx`] is open; writers wait on `writer_free`.
    writer_busy: Mutex<bool>,
    writer_free: Condvar,
    /// A commit failed: the file is not written again, not even when it is closed.
    failed: std::sync::atomic::AtomicBool,
    /// The file is being thrown away ([`Store::discard_on_close`]): closing it leaves
    /// the lazy commits as a crash would.
    discarded: std::sync::atomic::AtomicBool,
}

struct State {
    /// The newest commit, durable or not: what a reader beginning now sees.
    meta: Meta,
    durable_txid: u64,
    /// The slot (0 or 1) holding the newest durable meta.
    durable_slot: u64,
    /// Open readers by the commit they see.
    readers: BTreeMap<u64, usize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Opens the page file at `path`, creating it if it does not exist. Refused with
    /// [`Error::AlreadyOpen`] if another process has it open, with [`Error::Corrupt`] if
    /// neither meta slot holds a valid meta or the tree reaches outside the file.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => return Err(Error::AlreadyOpen(path)),
            Err(e) => return Err(io(e.into())),
        }
        let mut len = file.metadata().map_err(io)?.len();
        // A crash while the file was being created leaves it empty, or (its one write
        // not all on the disk) zeros where the meta slots go: no rows can be lost
        // (nodes live past the meta slots), so it is created again.
        let created = len == 0 || (len <= 2 * PAGE_U64 && all_zero(&file, len).map_err(io)?);
        let (meta, slot) = if created {
            let meta = Meta {
                txid: 1,
                root: None,
                hwm: 2,
                height: 0,
                rows: [0; TABLES],
            };
            let mut pages = meta.encode();
            pages.resize(2 * PAGE, 0);
            file.write_all_at(&pages, 0).map_err(io)?;
            file.sync_all().map_err(io)?;
            sync_dir(&path).map_err(io)?;
            len = 2 * PAGE_U64;
            (meta, 0)
        } else {
            read_meta(&file, &path)?
        };
        // A durable tree lies within the file (its nodes were written and synced before
        // its meta), so pages past the file's end are free whatever `hwm` says (it is
        // larger than the file after a later commit cut free pages off its end). A
        // checksummed but absurd `hwm` must not size the walk's page map either.
        let meta = Meta {
            hwm: meta.hwm.min((len / PAGE_U64).max(2)),
            ..meta
        };
        let inner = Inner {
            path: path.clone(),
            file,
            cache: cache::Cache::new(opts.cache_bytes),
            state: Mutex::new(State {
                meta,
                durable_txid: meta.txid,
                durable_slot: slot,
                readers: BTreeMap::new(),
            }),
            space: Mutex::new(Space::default()),
            writer_busy: Mutex::new(false),
            writer_free: Condvar::new(),
            failed: std::sync::atomic::AtomicBool::new(false),
            discarded: std::sync::atomic::AtomicBool::new(false),
        };
        let used = inner.walk(&meta)?;
        let mut space = Space::from_used(meta.hwm, &used);
        space.shrink();
        // Pages past the newest durable tree's file (a crash after lazy commits grew it,
        // or a shrink not yet recorded) are not part of it.
        if len > space.hwm * PAGE_U64 {
            inner.file.set_len(space.hwm * PAGE_U64).map_err(io)?;
        }
        *lock(&inner.space) = space;
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether `other` is a handle of this same open file.
    pub fn same(&self, other: &Store) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether this is the file's last handle (no other clone, transaction or iterator
    /// holds it): dropping it closes the file.
    pub fn is_last_handle(&self) -> bool {
        Arc::strong_count(&self.inner) == 1
    }

    /// The file is no longer wanted (a defragment replaced it): when it is closed, its
    /// lazy commits are left as a crash leaves them instead of made durable, which would
    /// write back every page they wrote. Readers still open keep their view until then.
    pub fn discard_on_close(&self) {
        self.inner
            .discarded
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// A read transaction on the newest commit.
    pub fn begin_read(&self) -> ReadTx {
        let meta = {
            let mut st = lock(&self.inner.state);
            let meta = st.meta;
            *st.readers.entry(meta.txid).or_default() += 1;
            meta
        };
        ReadTx::new(self.inner.clone(), meta)
    }

    /// The write transaction; waits while another is open.
    pub fn begin_write(&self) -> WriteTx {
        let mut busy = lock(&self.inner.writer_busy);
        while *busy {
            busy = self
                .inner
                .writer_free
                .wait(busy)
                .unwrap_or_else(|p| p.into_inner());
        }
        *busy = true;
        drop(busy);
        let meta = lock(&self.inner.state).meta;
        WriteTx::new(self.inner.clone(), meta)
    }

    /// Writes back every page written so far (`fdatasync`) without taking the writer:
    /// a durable commit after it finds little left to write.
    pub fn write_back(&self) -> Result<()> {
        self.inner.file.sync_data().map_err(|e| self.inner.io(e))
    }

    pub fn stats(&self) -> Stats {
        let (txid, durable_txid) = {
            let st = lock(&self.inner.state);
            (st.meta.txid, st.durable_txid)
        };
        let space = lock(&self.inner.space);
        Stats {
            file_bytes: space.hwm * PAGE_U64,
            in_use_bytes: (space.live + 2) * PAGE_U64,
            txid,
            durable_txid,
        }
    }
}

impl Drop for Inner {
    /// Closing the file makes the lazy commits durable (the last handle, reader or
    /// writer is gone, so nothing changes meanwhile), unless a commit failed or the
    /// file is discarded.
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.failed.load(SeqCst) || self.discarded.load(SeqCst) {
            return;
        }
        let st = lock(&self.state);
        if st.meta.txid == st.durable_txid {
            return;
        }
        if let Err(e) = self.write_meta(&st.meta, 1 - st.durable_slot) {
            tracing::error!(file = %self.path.display(), error = %e,
                "closing the page file: the last commits were not made durable");
        }
    }
}

/// The newest valid meta of the two slots and its slot.
fn read_meta(file: &File, path: &Path) -> Result<(Meta, u64)> {
    let mut pages = vec![0u8; 2 * PAGE];
    let got = read_up_to(file, &mut pages, 0).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    pages.truncate(got);
    let slot = |i: usize| match pages.get(i * PAGE..(i + 1) * PAGE) {
        Some(p) => Meta::decode(p),
        None => Err("the file ends before this slot".to_string()),
    };
    match (slot(0), slot(1)) {
        (Ok(a), Ok(b)) if b.txid > a.txid => Ok((b, 1)),
        (Ok(a), _) => Ok((a, 0)),
        (Err(_), Ok(b)) => Ok((b, 1)),
        (Err(a), Err(b)) => Err(Error::Corrupt(format!(
            "{}: no valid meta (slot 0: {a}; slot 1: {b})",
            path.display()
        ))),
    }
}

/// Whether the file's first `len` bytes are all zero.
fn all_zero(file: &File, len: u64) -> std::io::Result<bool> {
    let mut buf = vec![0u8; len as usize];
    let got = read_up_to(file, &mut buf, 0)?;
    Ok(buf[..got].iter().all(|b| *b == 0))
}

fn read_up_to(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

impl Inner {
    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Makes `meta` durable in `slot`: every page written so far is written back first
    /// (the meta must never reach the disk before the nodes it names), then the meta.
    fn write_meta(&self, meta: &Meta, slot: u64) -> std::io::Result<()> {
        self.file.sync_data()?;
        #[cfg(any(test, feature = "test-hooks"))]
        crate::hooks::before_meta_write(&self.path);
        self.file.write_all_at(&meta.encode(), slot * PAGE_U64)?;
        self.file.sync_data()
    }

    /// `e` with this file's name in it, if it is a corruption.
    fn named(&self, e: Error) -> Error {
        match e {
            Error::Corrupt(what) => Error::Corrupt(format!("{}: {what}", self.path.display())),
            other => other,
        }
    }

    /// A node's bytes, checked as a node of a tree of commit `newest` or older; from the
    /// cache or the file.
    fn node(&self, at: NodeRef, newest: u64) -> Result<Arc<[u8]>> {
        if let Some(n) = self.cache.get(at.pgid) {
            check_written_by(&n, at, newest).map_err(|e| self.named(e))?;
            return Ok(n);
        }
        let mut buf = vec![0u8; at.pages as usize * PAGE];
        self.file
            .read_exact_at(&mut buf, at.pgid * PAGE_U64)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    self.named(Error::Corrupt(format!(
                        "node at page {} lies past the file's end",
                        at.pgid
                    )))
                } else {
                    self.io(e)
                }
            })?;
        NodeView::check(&buf, at, newest).map_err(|e| self.named(e))?;
        let node: Arc<[u8]> = buf.into();
        self.cache.put(at.pgid, node.clone());
        Ok(node)
    }

    /// Which pages the tree of `meta` reaches (reading its root and branch nodes only);
    /// refuses a tree that reaches outside the file or reaches a page twice, and a node
    /// whose level is not the one its place in the tree gives it (so a wrong height in
    /// the meta cannot make the walk take a branch's children for free pages).
    fn walk(&self, meta: &Meta) -> Result<Vec<bool>> {
        let mut used = vec![false; meta.hwm as usize];
        used[0] = true;
        used[1] = true;
        let Some(root) = meta.root else {
            return Ok(used);
        };
        let mut stack = vec![(root, meta.height)];
        while let Some((at, level)) = stack.pop() {
            let end = at
                .pgid
                .checked_add(at.pages as u64)
                .filter(|e| *e <= meta.hwm);
            let Some(end) = end.filter(|_| at.pages > 0) else {
                return Err(self.named(Error::Corrupt(format!(
                    "node at page {} ({} pages) lies outside the file's {} pages",
                    at.pgid, at.pages, meta.hwm
                ))));
            };
            for p in at.pgid..end {
                if std::mem::replace(&mut used[p as usize], true) {
                    return Err(self.named(Error::Corrupt(format!("page {p} is reached twice"))));
                }
            }
            if level > 1 || at == root {
                let node = self.node(at, meta.txid)?;
                let v = NodeView::trusted(&node);
                v.expect_level(at, level).map_err(|e| self.named(e))?;
                if level > 1 {
                    stack.extend((0..v.len()).map(|i| (v.child(i), level - 1)));
                }
            }
        }
        Ok(used)
    }

    fn end_read(&self, txid: u64) {
        let mut st = lock(&self.state);
        if let Some(n) = st.readers.get_mut(&txid) {
            *n -= 1;
            if *n == 0 {
                st.readers.remove(&txid);
            }
        }
    }

    /// (newest durable commit, oldest open reader's commit): what decides which freed
    /// pages may be written again (see `space`).
    fn release_bounds(&self) -> (u64, u64) {
        let st = lock(&self.state);
        let oldest_reader = st.readers.keys().next().copied().unwrap_or(u64::MAX);
        (st.durable_txid, oldest_reader)
    }

    fn end_write(&self) {
        *lock(&self.writer_busy) = false;
        self.writer_free.notify_one();
    }
}

/// The nodes of one tree: those of a commit, or the tree a writer is changing (its own
/// commit id). Reading a node refuses it if a newer commit wrote it.
#[derive(Clone, Copy)]
pub(crate) struct Nodes<'a> {
    inner: &'a Inner,
    newest: u64,
}

impl<'a> Nodes<'a> {
    pub(crate) fn new(inner: &'a Inner, newest: u64) -> Nodes<'a> {
        Nodes { inner, newest }
    }

    pub(crate) fn get(&self, at: NodeRef) -> Result<Arc<[u8]>> {
        self.inner.node(at, self.newest)
    }
}

/// The key a table's row has in the tree.
fn tree_key(table: u8, key: &[u8]) -> Result<Vec<u8>> {
    if table as usize >= TABLES {
        return Err(Error::NoSuchTable(table));
    }
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(table);
    k.extend_from_slice(key);
    Ok(k)
}
