//! Giving a large file's blocks back to the file system a slice at a time.
//!
//! Deleting or truncating a file of tens of MiB or more frees all its extents in one
//! journal commit of the file system (ext4 mounted with `discard` also trims them
//! there), and every `fdatasync` of the member's WAL that needs the journal waits for
//! that commit: freeing a 2 GB backend file at once made a WAL fsync take 471 ms
//! (`backend::defrag`), and deleting released 64 MiB WAL segments on a busy disk held
//! puts up for 50 ms (`bench/PROFILE.md`). Freed a slice at a time, each slice durable
//! on its own and followed by a pause, the commits stay small and the WAL's fsyncs
//! get in between them. Slices of 16 MiB still left the WAL's `fdatasync`s at 8-17 ms
//! while a defragment's old file was given back (each slice's truncate and sync 15-23
//! ms; `/` here is ext4 mounted with `discard`), and three of twelve defragments under
//! load had a write stall of 51-63 ms in that phase; with 4 MiB slices none of three
//! in the same run did, the longest 35 ms, and one of three in a later, noisier run
//! (50.7 ms; `bench/PROFILE.md`, `bench/defrag.sh`).

use std::fs::File;
use std::io;
use std::time::Duration;

/// What [`release`]'s callers give back at a time (see the module docs)...
pub const STEP: u64 = 4 << 20;
/// ...and the pause after each slice.
pub const PAUSE: Duration = Duration::from_millis(20);

/// Gives back the blocks of `file` a slice of `step` bytes at a time from its end, each
/// slice's freeing made durable (so it is a journal commit of its own, not part of the
/// next WAL fsync's) and followed by `pause`. The file is left empty. Errors end the
/// release early: closing (or deleting) the file frees the rest at once.
pub fn release(file: &File, step: u64, pause: Duration) -> io::Result<()> {
    let mut len = file.metadata()?.len();
    while len > 0 {
        len = len.saturating_sub(step);
        file.set_len(len)?;
        file.sync_data()?;
        std::thread::sleep(pause);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn release_empties_the_file_a_slice_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old");
        std::fs::write(&path, vec![1u8; (5 << 20) + 7]).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let watcher = File::open(&path).unwrap();
        let started = Instant::now();
        release(&file, 1 << 20, Duration::from_millis(10)).unwrap();
        // Six slices (5 MiB and 7 bytes), each followed by its pause.
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert_eq!(watcher.metadata().unwrap().len(), 0);
    }
}
