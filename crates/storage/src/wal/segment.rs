//! Segment files on disk: naming, listing, atomic creation and the directory-level
//! helpers (fsync of a directory, exclusive lock) the WAL and the snapshotter share.
//!
//! A segment is named `{seq:016x}-{index:016x}.wal`: `seq` counts segments from 0 with
//! no gaps, `index` is the raft index the first entry written to it was expected to
//! have (the log's last index + 1 when it was cut). Replay from a snapshot at index
//! `i` starts at the last segment (by `seq`) named `<= i`: any entry above `i` in an
//! earlier segment was overwritten before that segment was cut, and the snapshot's
//! marker was written no earlier (snapshots are of committed entries, which are never
//! overwritten). A new segment is written under a
//! `.tmp` name, preallocated, fsync'd, renamed into place and the directory fsync'd, so
//! a crash leaves either no segment or a complete header; leftover `.tmp` files are
//! removed when the WAL is opened.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FallocateFlags, FlockOperation};

use super::WalError;

/// A segment file found in the WAL directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentName {
    pub seq: u64,
    pub index: u64,
    pub path: PathBuf,
}

pub fn file_name(seq: u64, index: u64) -> String {
    format!("{seq:016x}-{index:016x}.wal")
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, index) = stem.split_once('-')?;
    if seq.len() != 16 || index.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(seq, 16).ok()?,
        u64::from_str_radix(index, 16).ok()?,
    ))
}

pub fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The segments in `dir`, sorted by sequence number and checked to be contiguous (a
/// missing file is corruption). Start indices are *not* monotonic: a conflicting
/// suffix overwrite lowers the log's last index before the next cut.
pub fn list(dir: &Path) -> Result<Vec<SegmentName>, WalError> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((seq, index)) = parse_name(name) {
            segs.push(SegmentName {
                seq,
                index,
                path: entry.path(),
            });
        }
    }
    segs.sort_by_key(|s| s.seq);
    for w in segs.windows(2) {
        if w[1].seq != w[0].seq + 1 {
            return Err(WalError::BadSegments(format!(
                "{} does not follow {}",
                w[1].path.display(),
                w[0].path.display()
            )));
        }
    }
    Ok(segs)
}

/// Removes `*.wal.tmp` files left by a crash while a segment was being created.
pub fn remove_temporaries(dir: &Path) -> Result<(), WalError> {
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if entry.file_name().to_string_lossy().ends_with(".wal.tmp") {
            let path = entry.path();
            tracing::warn!(path = %path.display(), "removing unfinished WAL segment");
            fs::remove_file(&path).map_err(io_err(&path))?;
            removed = true;
        }
    }
    if removed {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Deletes released segment files of `dir` in the order given (oldest first, so a crash
/// midway leaves a contiguous run), then makes the deletions durable. Nothing to delete
/// is nothing done.
pub fn remove(dir: &Path, paths: &[PathBuf]) -> Result<(), WalError> {
    if paths.is_empty() {
        return Ok(());
    }
    for path in paths {
        fs::remove_file(path).map_err(io_err(path))?;
    }
    fsync_dir(dir)
}

/// [`remove`], each file's blocks first given back `step` bytes at a time with `pause`
/// after each slice ([`crate::gradual`]): for a thread that may take its time, so the
/// WAL's own fsyncs do not wait for one large journal commit. A segment a crash left
/// emptied but not deleted is older than the one replay starts at, which the WAL's open
/// never reads (and the next release deletes it).
pub fn remove_gradually(
    dir: &Path,
    paths: &[PathBuf],
    step: u64,
    pause: Duration,
) -> Result<(), WalError> {
    for path in paths {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        crate::gradual::release(&file, step, pause).map_err(io_err(path))?;
    }
    remove(dir, paths)
}

/// Makes the directory entries of `dir` (creations, renames, removals) durable.
pub fn fsync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Takes an exclusive advisory lock on `dir`, held as long as the returned handle
/// lives, so two processes never append to one WAL.
pub fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let f = File::open(dir).map_err(io_err(dir))?;
    match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(WalError::Locked(dir.to_path_buf())),
        Err(e) => Err(WalError::Io {
            path: dir.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// Reserves `size` bytes of zeros for `f`, so appends do not have to allocate blocks
/// (and fdatasync does not have to update the size) in the common case. Falls back to
/// extending the file sparsely where the filesystem has no `fallocate`.
fn preallocate(f: &File, size: u64) -> io::Result<()> {
    match rustix::fs::fallocate(f, FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
            f.set_len(size)
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates segment `seq`/`index` in `dir` holding `header` (already framed records),
/// atomically: temp file, preallocate, write, fdatasync, rename, fsync the directory.
/// Returns the open file, ready for appends after the header.
pub fn create(
    dir: &Path,
    seq: u64,
    index: u64,
    header: &[u8],
    prealloc: u64,
) -> Result<(File, PathBuf), WalError> {
    let name = file_name(seq, index);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    preallocate(&f, prealloc.max(header.len() as u64)).map_err(io_err(&tmp))?;
    f.write_all_at(header, 0).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    fsync_dir(dir)?;
    Ok((f, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = file_name(3, 0x1234);
        assert_eq!(n, "0000000000000003-0000000000001234.wal");
        assert_eq!(parse_name(&n), Some((3, 0x1234)));
        assert_eq!(parse_name("3-1234.wal"), None);
        assert_eq!(parse_name(&format!("{n}.tmp")), None);
    }
}
