//! The write-ahead log: the durable record of Raft's hard state and log entries.
//!
//! Everything Raft must remember across a crash goes here *before* any message that
//! depends on it is sent and before a write is acknowledged. The WAL is a directory of
//! segment files (see [`segment`] for names and creation) holding framed, CRC32C-chained
//! records (see [`record`]): entries, hard states, snapshot markers and the caller's
//! opaque metadata (the server stores member and cluster ids there).
//!
//! # Using it
//!
//! ```
//! use skiff_raft::{Entry, HardState};
//! use skiff_storage::snap::Snapshotter;
//! use skiff_storage::wal::{must_sync, SnapshotMarker, Wal, WalOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! # let data = tmp.path();
//! let wal_dir = &data.join("member/wal");
//! let snaps = Snapshotter::new(data.join("member/snap"))?;
//! let opts = WalOptions::default(); // 64 MiB segments
//! let mut wal = if Wal::exists(wal_dir) {
//!     // Restart: the newest snapshot file the WAL has a committed marker for...
//!     let markers = Wal::valid_snapshot_markers(wal_dir)?;
//!     let snapshot = snaps.load_newest_available(&markers)?;
//!     // ...restores the state machine (snapshot.payload_reader()), and replay
//!     // starts from it (the empty marker (0, 0) if there is no snapshot).
//!     let from = snapshot.as_ref().map_or(SnapshotMarker::default(), |s| s.marker());
//!     let (wal, replay) = Wal::open(wal_dir, from, opts)?;
//!     // replay.metadata, replay.hard_state and replay.entries (index > from.index,
//!     // conflicting suffixes already resolved) seed raft's storage.
//!     wal
//! } else {
//!     // First start: metadata is opaque to the WAL (e.g. member id + cluster id).
//!     Wal::create(wal_dir, b"member=1,cluster=7", opts)?
//! };
//! // Each Ready: save hard state + entries, then one fdatasync for the whole batch
//! // (several Readys may be saved before one sync: group commit).
//! let prev = wal.hard_state();
//! let hs = HardState { term: 1, vote: 1, commit: 0 };
//! let entries = [Entry { term: 1, index: 1, ..Default::default() }];
//! wal.save(&hs, &entries)?;
//! if must_sync(&prev, &hs, entries.len()) {
//!     wal.sync()?; // only now may dependent messages go out / writes be acknowledged
//! }
//! // A snapshot: file first (durable), then its marker, then release old segments
//! // (the backend must have durably committed up to the snapshot index too).
//! let meta = skiff_raft::SnapshotMetadata { index: 1, term: 1, ..Default::default() };
//! let file = snaps.save(&meta, &mut &b"backend dump"[..])?;
//! wal.save_snapshot(file.marker())?;
//! wal.release_to(file.marker().index)?;
//! snaps.purge(5)?;
//! # Ok(()) }
//! ```
//!
//! - [`Wal::create`] makes the directory atomically (a `.tmp` sibling renamed into
//!   place) with segment 0 holding the metadata and the empty snapshot marker (0, 0).
//! - [`Wal::open`] locks the directory (one process at a time), repairs a torn tail,
//!   replays from a snapshot marker and returns a [`Replay`] plus a WAL ready to append.
//!   The marker must be in the WAL ([`WalError::SnapshotNotFound`] otherwise): open with
//!   the snapshot the state machine was restored from, which the server picks with
//!   [`Wal::valid_snapshot_markers`] (markers whose index is committed) and the
//!   snapshotter's `load_newest_available`.
//! - [`Wal::save`] frames records into a buffer (written out once it passes 4 MiB)
//!   without syncing; [`Wal::sync`] writes the buffer and calls `fdatasync` once. That
//!   is group commit: any number of `save`s (from several Ready batches) share one
//!   sync. Nothing saved is durable until `sync` returns `Ok`; [`must_sync`] says
//!   whether a Ready needs it (new entries, or a changed term or vote).
//! - [`Wal::save_snapshot`] appends a snapshot marker (index, term) and syncs.
//! - [`Wal::release_to`] deletes segments that only hold records before the segment
//!   containing `index`. **The caller promises** that a snapshot at `index` is durable
//!   (snapshot file fsync'd, marker saved) *and* that the backend has durably
//!   committed everything up to `index`: the released entries can no longer be
//!   replayed. The WAL refuses an `index` beyond the newest marker it holds.
//! - [`Wal::metadata`] returns the metadata given at creation.
//!
//! # What it guarantees
//!
//! - After `sync` returns `Ok`, every record saved before it survives a crash or
//!   power loss (given a disk that honours `fdatasync`).
//! - Entries are checked for sense when saved and when replayed (etcd
//!   CVE-2020-15112): a batch must be contiguous and may start anywhere up to
//!   `last_index + 1` (a lower start overwrites the suffix, as a new leader's entries
//!   do); a replayed entry that would leave a gap is corruption. Replay applies the
//!   same overwrite rule, so the returned entries are the log as Raft last wrote it.
//! - Record lengths are bounded ([`record::MAX_RECORD_LEN`] and the file's size)
//!   before anything is allocated (etcd CVE-2020-15106).
//! - A new segment is cut after a sync once the current one reaches
//!   [`WalOptions::segment_size`]; its header repeats the metadata and the latest hard
//!   state, so replay never needs older segments for them.
//! - After an I/O error the WAL refuses further work ([`WalError::Failed`]): a failed
//!   fsync may have lost pages, and retrying it would report success falsely.
//!
//! # Torn tails and corruption
//!
//! A crash during a write leaves the end of the *last* segment partly written: a
//! record that fails its check followed only by zeros (the preallocated space). That
//! record was never synced, so never acknowledged: `open` zeroes it, syncs, and logs a
//! `tracing::warn!` with the file and offset. Anything else is corruption and `open`
//! fails with [`WalError::Corrupt`] naming the file and byte offset: a bad record (CRC
//! mismatch, impossible length, unknown type) in any other segment, a bad record
//! followed by non-zero bytes, non-zero bytes after the zero header that ends the
//! records, or a segment whose CRC link does not match the previous segment's end.
//! The member must not start on such a WAL: an operator restores it from a peer.
//! Note the deliberate strictness: a sector that reached the disk *after* a lost
//! earlier one in an unsynced write also stops the member, because from the bytes alone
//! it cannot be told apart from lost acknowledged data.
//!
//! # Format versions
//!
//! Every segment starts with a `Crc` record followed by a `Version` record holding the
//! format version it was written in ([`FORMAT_VERSION`]). Segments are versioned one by
//! one because each is read on its own (replay starts at the segment of the snapshot
//! marker). Whatever a later version changes, it keeps these two records first and
//! framed as [`record`] describes, so any Skiff can read the version before anything
//! else: one that finds a version above its own refuses the segment with
//! [`WalError::UnsupportedVersion`] (naming the file and both versions) instead of
//! misreading it after a downgrade.
//!
//! - **Version 1**: the records of [`record`] (types 1 to 6). Segments written before
//!   versions existed have no `Version` record and are read as version 1; `open` keeps
//!   appending to such a last segment (same format) and every segment cut from then on
//!   carries the version. Skiffs from before versions existed refuse a versioned
//!   segment as corrupt (unknown record type 6) rather than misreading it.
//!
//! A future version must not append to a last segment of an older version: `open` would
//! cut a new segment first, so each segment holds records of one version only.

pub mod record;
pub mod segment;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skiff_raft::{Decode, Encode, Entry, HardState};

use record::{Bad, Item, RecordType, Scanner, HEADER_LEN, MAX_RECORD_LEN};
use segment::{io_err, SegmentName};

/// The WAL format version this Skiff writes into every new segment and the newest it
/// reads (see "Format versions" in the module docs).
pub const FORMAT_VERSION: u32 = 1;

/// etcd's segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

/// `save` writes its buffer to the file once it holds this much, to bound memory.
const WRITE_THRESHOLD: usize = 4 << 20;

/// An fdatasync slower than this is logged (etcd warns at one second too).
const SLOW_SYNC: Duration = Duration::from_secs(1);

/// Tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// Size segments are preallocated to; a new segment is cut once the current one
    /// reaches it (a single large batch may overshoot: records never span segments).
    pub segment_size: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}

/// The position of a snapshot in the log: the WAL records these so a restart can
/// replay from the snapshot the state machine was restored from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SnapshotMarker {
    pub index: u64,
    pub term: u64,
}

impl SnapshotMarker {
    fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.index.to_le_bytes());
        b[8..].copy_from_slice(&self.term.to_le_bytes());
        b
    }

    fn decode(p: &[u8]) -> Option<SnapshotMarker> {
        let b: &[u8; 16] = p.try_into().ok()?;
        let (i, t) = b.split_at(8);
        Some(SnapshotMarker {
            index: u64::from_le_bytes(i.try_into().ok()?),
            term: u64::from_le_bytes(t.try_into().ok()?),
        })
    }
}

/// What [`Wal::open`] read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The metadata given to [`Wal::create`].
    pub metadata: Vec<u8>,
    /// The last hard state saved (default if none was).
    pub hard_state: HardState,
    /// Entries after the snapshot marker, contiguous from `snapshot.index + 1`, later
    /// writes having replaced conflicting suffixes.
    pub entries: Vec<Entry>,
    /// The marker replay started from (as found in the WAL).
    pub snapshot: SnapshotMarker,
    /// Where a torn tail was cut off (file, byte offset), if one was.
    pub repaired_torn_tail: Option<(PathBuf, u64)>,
}

/// WAL failures. `Corrupt` means the member must not start.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal: I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("wal: corrupt WAL file {} at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The segment was written by a newer Skiff in a format this one cannot read.
    #[error(
        "wal: {} has format version {found}, this Skiff reads up to {supported}; upgrade Skiff",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("wal: bad segment files: {0}")]
    BadSegments(String),
    #[error("wal: {} already exists and is not empty", .0.display())]
    Exists(PathBuf),
    #[error("wal: no WAL segments in {}", .0.display())]
    NotFound(PathBuf),
    #[error("wal: {} is locked by another process", .0.display())]
    Locked(PathBuf),
    #[error("wal: snapshot marker (index {}, term {}) not found in the WAL", .0.index, .0.term)]
    SnapshotNotFound(SnapshotMarker),
    #[error("wal: snapshot marker at index {index} has term {found}, expected {expected}")]
    SnapshotMismatch {
        index: u64,
        expected: u64,
        found: u64,
    },
    #[error("wal: entry index {got} out of order (expected at most {max_expected}, contiguous)")]
    EntryIndex { got: u64, max_expected: u64 },
    #[error("wal: record of {len} bytes exceeds the limit of {MAX_RECORD_LEN}")]
    RecordTooLarge { len: usize },
    #[error("wal: release_to({index}) is beyond the newest snapshot marker ({snapshot})")]
    ReleaseBeyondSnapshot { index: u64, snapshot: u64 },
    #[error("wal: unusable after an earlier I/O error")]
    Failed,
}

/// Whether a Ready with these contents must be synced before messages go out: new
/// entries, or a changed term or vote (a commit index alone can be re-learned).
pub fn must_sync(prev: &HardState, hs: &HardState, entries: usize) -> bool {
    entries != 0 || hs.term != prev.term || hs.vote != prev.vote
}

/// An open write-ahead log. See the module docs.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    /// Holds the directory's flock for as long as the WAL is open.
    _lock: File,
    /// All segments on disk, oldest first; the last is the one appended to.
    segments: Vec<SegmentName>,
    file: File,
    /// End of the bytes handed to the file (the buffer starts here).
    offset: u64,
    buf: Vec<u8>,
    /// CRC of the last record framed (in the buffer or on disk).
    chain: u32,
    metadata: Vec<u8>,
    /// The last hard state framed.
    hard_state: HardState,
    last_index: u64,
    /// The newest snapshot marker in the WAL: the bound for `release_to`.
    snapshot_index: u64,
    failed: bool,
}

/// The end state of scanning one segment.
struct ScanEnd {
    end: usize,
    chain: u32,
    /// A torn tail: (offset, end of the bytes to zero).
    torn: Option<(usize, usize)>,
}

/// `fdatasync` of a segment; the `wal-fsync` failpoint's `error` fails it the way a
/// disk would, so an injected failure takes the same path as a real one.
fn fdatasync(file: &File) -> std::io::Result<()> {
    skiff_failpoints::fail_point!("wal-fsync", |msg| Err(std::io::Error::other(msg)));
    file.sync_data()
}

fn corrupt(path: &Path, offset: usize, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

/// Frames the records every segment starts with: the `Crc` link to the previous
/// segment's end and this Skiff's format version.
fn encode_segment_start(buf: &mut Vec<u8>, chain: &mut u32, link: u32) {
    record::encode(buf, chain, RecordType::Crc, &link.to_le_bytes());
    record::encode(
        buf,
        chain,
        RecordType::Version,
        &FORMAT_VERSION.to_le_bytes(),
    );
}

/// Checks the payload of a segment's `Version` record: a version this Skiff reads.
fn check_version(path: &Path, offset: usize, payload: &[u8]) -> Result<(), WalError> {
    let version = <[u8; 4]>::try_from(payload)
        .map(u32::from_le_bytes)
        .map_err(|_| corrupt(path, offset, "version record of the wrong size"))?;
    if version == 0 {
        return Err(corrupt(path, offset, "format version 0"));
    }
    if version > FORMAT_VERSION {
        return Err(WalError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Walks one segment's bytes, checking its header link against `prev_chain` and its
/// format version, and classifying its end, calling `f` for every record after the
/// `Crc` and `Version` records.
fn scan_segment(
    path: &Path,
    data: &[u8],
    prev_chain: Option<u32>,
    is_last: bool,
    mut f: impl FnMut(usize, RecordType, &[u8]) -> Result<(), WalError>,
) -> Result<ScanEnd, WalError> {
    let mut scanner = Scanner::new(data, 0);
    let mut first = true;
    // Only the record right after the `Crc` one may be the version (segments from
    // before format versions have none: version 1).
    let mut version_allowed = false;
    loop {
        match scanner.next_item() {
            Item::Record {
                offset,
                rtype,
                payload,
            } => {
                if first != (rtype == RecordType::Crc) {
                    let why = if first {
                        "segment does not start with a CRC record"
                    } else {
                        "CRC record in the middle of a segment"
                    };
                    return Err(corrupt(path, offset, why));
                }
                if first {
                    let link = <[u8; 4]>::try_from(payload)
                        .map(u32::from_le_bytes)
                        .map_err(|_| corrupt(path, offset, "CRC record of the wrong size"))?;
                    if let Some(prev) = prev_chain {
                        if prev != link {
                            return Err(corrupt(
                                path,
                                offset,
                                format!(
                                    "segment links to CRC {link:#010x} but the previous \
                                     segment ends at {prev:#010x} (records lost)"
                                ),
                            ));
                        }
                    }
                    first = false;
                    version_allowed = true;
                } else if rtype == RecordType::Version {
                    if !version_allowed {
                        return Err(corrupt(
                            path,
                            offset,
                            "version record in the middle of a segment",
                        ));
                    }
                    // Checked before anything after it is interpreted: a newer format
                    // may frame the rest differently.
                    check_version(path, offset, payload)?;
                    version_allowed = false;
                } else {
                    version_allowed = false;
                    f(offset, rtype, payload)?;
                }
            }
            Item::End { offset } => {
                if let Some(nz) = data[offset..].iter().position(|b| *b != 0) {
                    return Err(corrupt(
                        path,
                        offset,
                        format!(
                            "records end here but non-zero data follows at offset {}",
                            offset + nz
                        ),
                    ));
                }
                if first {
                    return Err(corrupt(path, offset, "segment has no CRC header record"));
                }
                return Ok(ScanEnd {
                    end: offset,
                    chain: scanner.chain(),
                    torn: None,
                });
            }
            Item::Bad {
                offset,
                extent_end,
                stored_crc,
                why,
            } => {
                if !is_last || matches!(why, Bad::UnknownType(_)) {
                    return Err(corrupt(path, offset, why.to_string()));
                }
                let extent_end = extent_end.min(data.len());
                if let Some(nz) = data[extent_end..].iter().position(|b| *b != 0) {
                    return Err(corrupt(
                        path,
                        offset,
                        format!("{why}, followed by more data at offset {}", extent_end + nz),
                    ));
                }
                // A corrupted length can make a bad record swallow the valid ones after
                // it; their chain starts from its stored CRC. A torn write has none.
                if let Some(seed) = stored_crc {
                    let last_nonzero = data.iter().rposition(|b| *b != 0).unwrap_or(0);
                    let from = offset + HEADER_LEN;
                    if let Some(p) = record::find_chained_record(data, from, last_nonzero + 1, seed)
                    {
                        return Err(corrupt(
                            path,
                            offset,
                            format!("{why}, followed by a valid record at offset {p}"),
                        ));
                    }
                }
                if first {
                    return Err(corrupt(path, offset, format!("segment header: {why}")));
                }
                return Ok(ScanEnd {
                    end: offset,
                    chain: scanner.chain(),
                    torn: Some((offset, extent_end)),
                });
            }
        }
    }
}

impl Wal {
    /// Whether `dir` holds WAL segments.
    pub fn exists(dir: &Path) -> bool {
        segment::list(dir).map(|s| !s.is_empty()).unwrap_or(false)
    }

    /// Creates a new WAL in `dir` (which must not exist, or be empty) with `metadata`,
    /// and returns it open for appends. The directory appears atomically: it is built
    /// as `<dir>.tmp` and renamed, and the parent directory is fsync'd.
    pub fn create(dir: &Path, metadata: &[u8], opts: WalOptions) -> Result<Wal, WalError> {
        if metadata.len() > MAX_RECORD_LEN {
            return Err(WalError::RecordTooLarge {
                len: metadata.len(),
            });
        }
        if dir.exists() {
            let mut entries = fs::read_dir(dir).map_err(io_err(dir))?;
            if entries.next().is_some() {
                return Err(WalError::Exists(dir.to_path_buf()));
            }
            fs::remove_dir(dir).map_err(io_err(dir))?;
        }
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        let mut tmp = dir.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;

        let mut header = Vec::new();
        let mut chain = 0;
        encode_segment_start(&mut header, &mut chain, 0);
        record::encode(&mut header, &mut chain, RecordType::Metadata, metadata);
        record::encode(
            &mut header,
            &mut chain,
            RecordType::HardState,
            &HardState::default().encode(),
        );
        record::encode(
            &mut header,
            &mut chain,
            RecordType::Snapshot,
            &SnapshotMarker::default().encode(),
        );
        let (file, _) = segment::create(&tmp, 0, 0, &header, opts.segment_size)?;
        drop(file);
        fs::rename(&tmp, dir).map_err(io_err(dir))?;
        segment::fsync_dir(&parent)?;

        let lock = segment::lock_dir(dir)?;
        let path = dir.join(segment::file_name(0, 0));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            opts,
            _lock: lock,
            segments: vec![SegmentName {
                seq: 0,
                index: 0,
                path,
            }],
            file,
            offset: header.len() as u64,
            buf: Vec::new(),
            chain,
            metadata: metadata.to_vec(),
            hard_state: HardState::default(),
            last_index: 0,
            snapshot_index: 0,
            failed: false,
        })
    }

    /// Opens the WAL in `dir` for appending, after replaying it from the snapshot
    /// marker `from` (which must be recorded in the WAL with the same term). A torn
    /// tail in the last segment is repaired (see the module docs); corruption is an
    /// error naming the file and offset.
    pub fn open(
        dir: &Path,
        from: SnapshotMarker,
        opts: WalOptions,
    ) -> Result<(Wal, Replay), WalError> {
        let lock = segment::lock_dir(dir)?;
        segment::remove_temporaries(dir)?;
        let segments = segment::list(dir)?;
        if segments.is_empty() {
            return Err(WalError::NotFound(dir.to_path_buf()));
        }
        // Replay starts at the last segment cut at or before the snapshot: the marker
        // and every entry after it were written there or later.
        let start = segments
            .iter()
            .rposition(|s| s.index <= from.index)
            .ok_or(WalError::SnapshotNotFound(from))?;

        let mut metadata: Option<Vec<u8>> = None;
        let mut hard_state = HardState::default();
        let mut entries: Vec<Entry> = Vec::new();
        let mut matched = false;
        let mut newest_marker = from.index;
        let mut chain = None;
        let mut end = None;
        let last = segments.len() - 1;
        for (i, seg) in segments.iter().enumerate().skip(start) {
            let path = &seg.path;
            let data = fs::read(path).map_err(io_err(path))?;
            let scan = scan_segment(path, &data, chain, i == last, |offset, rtype, p| {
                match rtype {
                    RecordType::Metadata => match &metadata {
                        Some(m) if m.as_slice() != p => {
                            return Err(corrupt(path, offset, "metadata differs from earlier"))
                        }
                        _ => metadata = Some(p.to_vec()),
                    },
                    RecordType::HardState => {
                        hard_state = HardState::decode(p)
                            .map_err(|e| corrupt(path, offset, format!("hard state: {e}")))?;
                    }
                    RecordType::Entry => {
                        let e = Entry::decode(p)
                            .map_err(|e| corrupt(path, offset, format!("entry: {e}")))?;
                        if e.index == 0 {
                            return Err(corrupt(path, offset, "entry with index 0"));
                        }
                        if e.index > from.index {
                            // Position in `entries`; anything past the end is a gap.
                            let up = e.index - from.index - 1;
                            if up > entries.len() as u64 {
                                return Err(corrupt(
                                    path,
                                    offset,
                                    format!(
                                        "entry index {} leaves a gap after index {}",
                                        e.index,
                                        from.index + entries.len() as u64
                                    ),
                                ));
                            }
                            entries.truncate(up as usize);
                            entries.push(e);
                        }
                    }
                    RecordType::Snapshot => {
                        let m = SnapshotMarker::decode(p)
                            .ok_or_else(|| corrupt(path, offset, "snapshot marker size"))?;
                        if m.index == from.index {
                            if m.term != from.term {
                                return Err(WalError::SnapshotMismatch {
                                    index: m.index,
                                    expected: from.term,
                                    found: m.term,
                                });
                            }
                            matched = true;
                        }
                        newest_marker = newest_marker.max(m.index);
                    }
                    RecordType::Crc | RecordType::Version => {
                        unreachable!("scan_segment handles CRC and version records")
                    }
                }
                Ok(())
            })?;
            chain = Some(scan.chain);
            end = Some(scan);
        }
        if !matched {
            return Err(WalError::SnapshotNotFound(from));
        }
        let end = end.expect("the last segment is always scanned");
        let metadata = metadata.ok_or_else(|| corrupt(&segments[start].path, 0, "no metadata"))?;

        let last_path = segments[last].path.clone();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&last_path)
            .map_err(io_err(&last_path))?;
        let mut repaired = None;
        if let Some((offset, zero_to)) = end.torn {
            tracing::warn!(
                file = %last_path.display(),
                offset,
                bytes = zero_to - offset,
                "WAL ends in a torn write (never synced, so never acknowledged); truncating it"
            );
            let zeros = vec![0u8; zero_to - offset];
            file.write_all_at(&zeros, offset as u64)
                .and_then(|()| file.sync_data())
                .map_err(io_err(&last_path))?;
            repaired = Some((last_path.clone(), offset as u64));
        }
        let last_index = entries.last().map_or(from.index, |e| e.index);
        let wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            _lock: lock,
            segments,
            file,
            offset: end.end as u64,
            buf: Vec::new(),
            chain: end.chain,
            metadata: metadata.clone(),
            hard_state,
            last_index,
            snapshot_index: newest_marker,
            failed: false,
        };
        Ok((
            wal,
            Replay {
                metadata,
                hard_state,
                entries,
                snapshot: from,
                repaired_torn_tail: repaired,
            },
        ))
    }

    /// The snapshot markers in the WAL at `dir` whose index is committed according to
    /// the last hard state, oldest first (the empty marker (0, 0) included). A server
    /// loads the newest snapshot file matching one of these, because a snapshot file
    /// written just before a crash may have no marker yet. Reads without locking or
    /// repairing; a torn tail is ignored, corruption is an error.
    pub fn valid_snapshot_markers(dir: &Path) -> Result<Vec<SnapshotMarker>, WalError> {
        let segments = segment::list(dir)?;
        if segments.is_empty() {
            return Err(WalError::NotFound(dir.to_path_buf()));
        }
        let mut markers = Vec::new();
        let mut hard_state = HardState::default();
        let mut chain = None;
        let last = segments.len() - 1;
        for (i, seg) in segments.iter().enumerate() {
            let path = &seg.path;
            let data = fs::read(path).map_err(io_err(path))?;
            let scan = scan_segment(path, &data, chain, i == last, |offset, rtype, p| {
                match rtype {
                    RecordType::HardState => {
                        hard_state = HardState::decode(p)
                            .map_err(|e| corrupt(path, offset, format!("hard state: {e}")))?;
                    }
                    RecordType::Snapshot => markers.push(
                        SnapshotMarker::decode(p)
                            .ok_or_else(|| corrupt(path, offset, "snapshot marker size"))?,
                    ),
                    _ => {}
                }
                Ok(())
            })?;
            chain = Some(scan.chain);
        }
        markers.retain(|m| m.index <= hard_state.commit);
        Ok(markers)
    }

    /// The metadata given to [`Wal::create`].
    pub fn metadata(&self) -> &[u8] {
        &self.metadata
    }

    /// The directory this WAL lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The index of the last entry saved (or of the snapshot, if later).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The last hard state saved.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The segment files currently on disk, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| s.path.clone()).collect()
    }

    /// Frames `hard_state` (if non-empty and changed) and `entries` for the log. Not
    /// durable until [`Wal::sync`]. `entries` must be contiguous and start at most at
    /// `last_index() + 1`; a lower start replaces the suffix from there. On error
    /// nothing is framed.
    pub fn save(&mut self, hard_state: &HardState, entries: &[Entry]) -> Result<(), WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        let mut max_expected = self.last_index + 1;
        for (i, e) in entries.iter().enumerate() {
            let ok = if i == 0 {
                e.index >= 1 && e.index <= max_expected
            } else {
                e.index == max_expected
            };
            if !ok {
                return Err(WalError::EntryIndex {
                    got: e.index,
                    max_expected,
                });
            }
            // Encoded size: term, index, type, length prefix, data.
            let len = 21 + e.data.len();
            if len > MAX_RECORD_LEN {
                return Err(WalError::RecordTooLarge { len });
            }
            max_expected = e.index + 1;
        }
        for e in entries {
            record::encode(
                &mut self.buf,
                &mut self.chain,
                RecordType::Entry,
                &e.encode(),
            );
        }
        if let Some(e) = entries.last() {
            self.last_index = e.index;
        }
        if !hard_state.is_empty() && *hard_state != self.hard_state {
            record::encode(
                &mut self.buf,
                &mut self.chain,
                RecordType::HardState,
                &hard_state.encode(),
            );
            self.hard_state = *hard_state;
        }
        if self.buf.len() >= WRITE_THRESHOLD {
            self.write_buffer()?;
        }
        Ok(())
    }

    /// Appends a snapshot marker and syncs. Call after the snapshot file itself is
    /// durable; from then on [`Wal::open`] can replay from `marker`.
    pub fn save_snapshot(&mut self, marker: SnapshotMarker) -> Result<(), WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        record::encode(
            &mut self.buf,
            &mut self.chain,
            RecordType::Snapshot,
            &marker.encode(),
        );
        self.last_index = self.last_index.max(marker.index);
        self.snapshot_index = self.snapshot_index.max(marker.index);
        self.sync()
    }

    /// Writes everything saved and makes it durable with one `fdatasync`, then cuts a
    /// new segment if the current one is full.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        skiff_failpoints::fail_point!("wal-before-write");
        self.write_buffer()?;
        skiff_failpoints::fail_point!("wal-before-fsync");
        let started = Instant::now();
        let path = self.current_path().to_path_buf();
        if let Err(e) = fdatasync(&self.file) {
            self.failed = true;
            return Err(io_err(&path)(e));
        }
        skiff_failpoints::fail_point!("wal-after-fsync");
        let took = started.elapsed();
        if took > SLOW_SYNC {
            tracing::warn!(file = %path.display(), ?took, "slow WAL fdatasync");
        }
        if self.offset >= self.opts.segment_size {
            self.cut()?;
        }
        Ok(())
    }

    /// Deletes the segments that hold only records older than the segment where a
    /// replay from `index` would start. **Contract:** a snapshot at `index` is durable
    /// and its marker saved, and the backend has durably committed everything up to
    /// `index` (the released entries cannot be replayed any more). `index` beyond the
    /// newest marker in the WAL is refused. The segment being appended to is never
    /// removed.
    pub fn release_to(&mut self, index: u64) -> Result<(), WalError> {
        self.release_keeping(index, 0)
    }

    /// [`Wal::release_to`], but keeps at least `keep` segment files (the newest;
    /// etcd's `--max-wals`: released files beyond that count are deleted). `keep == 0`
    /// keeps none beyond what replay needs.
    pub fn release_keeping(&mut self, index: u64, keep: usize) -> Result<(), WalError> {
        let released = self.detach_released(index, keep)?;
        segment::remove(&self.dir, &released)
    }

    /// What [`Wal::release_keeping`] would delete, oldest first, no longer counted as
    /// this WAL's segments; the caller deletes the files ([`segment::remove`], in that
    /// order), possibly on another thread: deleting 64 MiB files waits for the file
    /// system's journal. Until they are gone a restart finds them and replays from the
    /// snapshot marker's segment all the same (older segments are only read past).
    pub fn detach_released(&mut self, index: u64, keep: usize) -> Result<Vec<PathBuf>, WalError> {
        if index > self.snapshot_index {
            return Err(WalError::ReleaseBeyondSnapshot {
                index,
                snapshot: self.snapshot_index,
            });
        }
        let Some(releasable) = self.segments.iter().rposition(|s| s.index <= index) else {
            return Ok(Vec::new());
        };
        let keep = releasable.min(self.segments.len().saturating_sub(keep));
        Ok(self.segments.drain(..keep).map(|s| s.path).collect())
    }

    fn current_path(&self) -> &Path {
        &self.segments.last().expect("a WAL has a segment").path
    }

    fn write_buffer(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all_at(&self.buf, self.offset) {
            self.failed = true;
            return Err(io_err(self.current_path())(e));
        }
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Closes the full segment (trimmed to its records, synced) and starts the next,
    /// whose header repeats the chain link, metadata and latest hard state.
    fn cut(&mut self) -> Result<(), WalError> {
        let result = self.cut_inner();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn cut_inner(&mut self) -> Result<(), WalError> {
        let old = self.current_path().to_path_buf();
        // Drop the unused preallocated tail so a closed segment ends at its last record.
        self.file
            .set_len(self.offset)
            .and_then(|()| self.file.sync_all())
            .map_err(io_err(&old))?;
        skiff_failpoints::fail_point!("wal-segment-cut");
        let prev = self.segments.last().expect("a WAL has a segment");
        let seq = prev.seq + 1;
        let index = self.last_index + 1;
        let mut header = Vec::new();
        let mut chain = self.chain;
        encode_segment_start(&mut header, &mut chain, self.chain);
        record::encode(
            &mut header,
            &mut chain,
            RecordType::Metadata,
            &self.metadata,
        );
        record::encode(
            &mut header,
            &mut chain,
            RecordType::HardState,
            &self.hard_state.encode(),
        );
        let (file, path) = segment::create(&self.dir, seq, index, &header, self.opts.segment_size)?;
        tracing::debug!(file = %path.display(), "cut new WAL segment");
        self.file = file;
        self.offset = header.len() as u64;
        self.chain = chain;
        self.segments.push(SegmentName { seq, index, path });
        Ok(())
    }
}
