//! The backend file's size as the space quota and `dbSize` count it: the bytes of the
//! file that hold data, its length minus its holes.
//!
//! redb 3 grows its file by doubling the usable part (up to its 4 GiB region), with a
//! `set_len`, so the new half is a hole until pages are written into it. Counting the
//! file's length made that reservation look used: a member whose pages had just passed
//! 1 GiB went to 2 GiB at once and raised NOSPACE under the 2 GiB default quota (at about
//! 1.8 million keys of 256 B, where the same quota held 2.68 million on redb 2), and a
//! DeleteRange of 900,000 keys, which needed a few pages more, doubled `dbSize` from 514
//! to 1028 MiB (`bench/RESULTS.md`, 2026-12-04). etcd reports and checks bbolt's size,
//! which is its highest written page, not the length bbolt has grown its file to; the
//! bytes holding data are the same measure here (redb writes its pages from the start of
//! the file and its allocator state at the end; what lies between unwritten is a hole).
//!
//! Counted with `lseek(SEEK_DATA / SEEK_HOLE)`, not from the blocks `stat` reports, which
//! a compressing filesystem (btrfs, ZFS) makes smaller than the data. At most
//! [`MAX_RUNS`] runs of data are walked; past them, the rest of the file counts for the
//! blocks the filesystem allocated beyond what the walk counted (never more than the
//! rest's length). redb 4 makes such files: it keeps recent pages in its own write
//! buffer and writes them out in no particular order, and pages it allocated and freed
//! again before writing them out stay holes until reused, so a loaded file has
//! hundreds of small holes. Walking them all after every commit would cost
//! milliseconds; counting the rest in full (as before redb 4) counted a file just grown
//! from 33 to 67 MB as 67 MB. On a compressing filesystem, such a file is counted for
//! its compressed size. A filesystem that does not report holes answers the whole file
//! as one run of data: its length.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

/// Runs of data walked before the rest of the file counts by its blocks. A file redb
/// wrote in order has two or three (its pages, sometimes a page or two past a small
/// hole, its allocator state); a loaded redb 4 file has hundreds, so the walk usually
/// stops here, and it runs after every commit that changed the file's blocks, on the
/// apply thread: 64 runs took about 130 us (128 `lseek`s on ext4), 8 about 14.
pub const MAX_RUNS: usize = 8;

/// The bytes of the file at `path` that hold data (see the module docs), walked afresh.
pub fn data_bytes(path: &Path) -> io::Result<u64> {
    walk(path).map(|(_, data)| data)
}

/// What identifies a state of the file: its inode, length and allocated blocks.
type FileState = (u64, u64, u64);

fn state_of(m: &std::fs::Metadata) -> FileState {
    (m.ino(), m.len(), m.blocks())
}

/// Opens the file and counts its bytes of data, with the state it was in before the
/// count (a write during the walk changes the blocks again, so a cache keyed by it
/// walks again next time).
fn walk(path: &Path) -> io::Result<(FileState, u64)> {
    let file = File::open(path)?;
    let before = file.metadata()?;
    Ok((
        state_of(&before),
        data_bytes_of(&file, before.len(), before.blocks() * 512),
    ))
}

/// [`data_bytes`] for a file measured after every commit: one `stat`, and the walk only
/// when the file's inode, length or allocated blocks changed since the last (which runs
/// of data it has cannot change otherwise). A commit that reuses free pages, the steady
/// state, costs what the `stat` of the file's length did before.
#[derive(Debug, Default)]
pub struct Measure {
    /// The file's state before the last walk, and what it counted.
    last: Mutex<Option<(FileState, u64)>>,
}

impl Measure {
    pub fn data_bytes(&self, path: &Path) -> io::Result<u64> {
        let now = state_of(&std::fs::metadata(path)?);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, data)) = *last {
            if at == now {
                return Ok(data);
            }
        }
        let (at, data) = walk(path)?;
        *last = Some((at, data));
        Ok(data)
    }
}

/// [`data_bytes`] of an open file of length `len` with `allocated` bytes of blocks.
/// Where the filesystem cannot say, the length.
fn data_bytes_of(file: &File, len: u64, allocated: u64) -> u64 {
    let mut at = 0u64;
    let mut data = 0u64;
    for _ in 0..MAX_RUNS {
        if at >= len {
            return data.min(len);
        }
        let start = match rustix::fs::seek(file, SeekFrom::Data(at)) {
            Ok(start) => start,
            // No data from here to the end: the rest is one hole.
            Err(Errno::NXIO) => return data.min(len),
            Err(_) => return len,
        };
        let end = match rustix::fs::seek(file, SeekFrom::Hole(start)) {
            Ok(end) => end.min(len),
            Err(_) => return len,
        };
        if end <= start {
            return len;
        }
        data += end - start;
        at = end;
    }
    // More runs than we walk: the rest counts for the blocks allocated beyond those
    // walked, at most its length.
    let rest = allocated.saturating_sub(data).min(len.saturating_sub(at));
    (data + rest).min(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_grown_file_counts_only_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let mut f = File::create(&path).unwrap();
        f.write_all(&[1u8; 64 * 1024]).unwrap();
        // Grown to 16 MiB as redb grows its file, then a page written past the middle
        // and one at the very end (redb's allocator state).
        f.set_len(16 << 20).unwrap();
        f.write_all_at(&[2u8; 4096], 8 << 20).unwrap();
        f.write_all_at(&[3u8; 4096], (16 << 20) - 4096).unwrap();
        f.sync_all().unwrap();
        let data = data_bytes(&path).unwrap();
        // Whether the filesystem reports holes decides the figure: where it does (ext4,
        // xfs, tmpfs, btrfs) only the written blocks count; where not, the length.
        let holes_reported = {
            let probe = File::open(&path).unwrap();
            rustix::fs::seek(&probe, SeekFrom::Hole(0)).unwrap() < 16 << 20
        };
        if holes_reported {
            assert!(data >= 72 * 1024, "{data} bytes counted for 72 KiB written");
            assert!(data <= 1 << 20, "{data} bytes counted for 72 KiB written");
        } else {
            assert_eq!(data, 16 << 20);
        }
    }

    #[test]
    fn a_file_without_holes_counts_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 300_001]).unwrap();
        f.sync_all().unwrap();
        assert_eq!(data_bytes(&path).unwrap(), 300_001);
        f.set_len(0).unwrap();
        assert_eq!(data_bytes(&path).unwrap(), 0);
    }

    #[test]
    fn the_measure_walks_again_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grows");
        let f = File::create(&path).unwrap();
        f.set_len(4 << 20).unwrap();
        f.write_all_at(&[1u8; 8192], 0).unwrap();
        let m = Measure::default();
        let first = m.data_bytes(&path).unwrap();
        assert_eq!(first, data_bytes(&path).unwrap());
        assert_eq!(m.data_bytes(&path).unwrap(), first, "nothing changed");
        // Written into the hole: the length is the same, the blocks are not.
        f.write_all_at(&[2u8; 64 * 1024], 2 << 20).unwrap();
        let second = m.data_bytes(&path).unwrap();
        assert_eq!(second, data_bytes(&path).unwrap());
        // Rewriting data already there changes neither, nor the figure.
        f.write_all_at(&[3u8; 8192], 0).unwrap();
        assert_eq!(m.data_bytes(&path).unwrap(), second);
        assert_eq!(second, data_bytes(&path).unwrap());
    }

    #[test]
    fn too_many_runs_count_the_rest_by_its_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holey");
        let f = File::create(&path).unwrap();
        let block = 64 * 1024u64;
        let runs = MAX_RUNS as u64 + 10;
        f.set_len(runs * 2 * block).unwrap();
        for i in 0..runs {
            f.write_all_at(&[9u8; 4096], i * 2 * block).unwrap();
        }
        f.sync_all().unwrap();
        let len = runs * 2 * block;
        let data = data_bytes(&path).unwrap();
        let walked = File::open(&path).unwrap();
        if rustix::fs::seek(&walked, SeekFrom::Hole(0)).unwrap() < len {
            // The first MAX_RUNS runs walked, the rest by its blocks: about what was
            // written, far from the length.
            let written = runs * 4096;
            assert!(data >= written, "{data} counted, {written} written");
            assert!(data <= 4 * written, "{data} counted, {written} written");
        } else {
            assert_eq!(data, len);
        }
    }
}
