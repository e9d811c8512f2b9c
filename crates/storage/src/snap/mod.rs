//! Snapshot files: Raft snapshot metadata plus an opaque payload (the backend dump),
//! each file checksummed, written atomically, the newest valid one found on start.
//!
//! # Using it
//!
//! - [`Snapshotter::new`] opens (creating if needed) the snapshot directory and removes
//!   unfinished `.tmp` files a crash left behind.
//! - [`Snapshotter::save`] streams a payload from any `Read` into
//!   `{term:016x}-{index:016x}.snap`: written to a `.tmp` file, fsync'd, renamed, the
//!   directory fsync'd. The payload is never held in memory whole, so a multi-GiB
//!   backend dump is fine. [`Snapshotter::save_snapshot`] does the same for a raft
//!   [`Snapshot`] whose data is in memory (one received from the leader).
//! - [`Snapshotter::load_newest_available`] returns the newest snapshot whose
//!   (index, term) the WAL has a committed marker for (from
//!   `Wal::valid_snapshot_markers`); [`Snapshotter::load_newest`] ignores markers.
//!   Every candidate's checksums are verified; a corrupt file is renamed to
//!   `<name>.broken` with a `tracing::warn!` (as etcd does) and the next older one is
//!   tried. The result's [`SnapshotFile::payload_reader`] streams the payload back.
//! - [`Snapshotter::purge`] keeps the newest `keep` snapshot files and deletes the rest.
//!
//! The order that keeps a crash safe (as etcd's server does it): save the snapshot
//! file, then `Wal::save_snapshot` its marker, then `Wal::release_to`, then `purge`.
//!
//! # File format
//!
//! ```text
//! "SKIFSNAP"  magic (8 bytes)
//! u32 LE      format version (FORMAT_VERSION)
//! u32 LE      CRC32C of the 12 bytes above
//! u32 LE      metadata length
//! ...         SnapshotMetadata in the raft codec
//! u32 LE      CRC32C of everything above (from the magic on)
//! ...         payload
//! u64 LE      payload length
//! u32 LE      CRC32C of the payload
//! u32 LE      CRC32C of the 12 bytes above
//! ```
//!
//! The footer comes last so the payload can be streamed without knowing its length in
//! advance. A file is valid only if every checksum matches and the sizes add up to the
//! file's length exactly. Lengths are checked against the file size before anything is
//! allocated.
//!
//! # Format versions
//!
//! The first 16 bytes (magic, version, their own CRC) stay the same in every version,
//! so any Skiff reads the version before anything else: a version above
//! [`FORMAT_VERSION`] is refused with [`SnapError::UnsupportedVersion`] (naming the file
//! and both versions; the file is left alone, not marked broken), so a downgraded Skiff
//! never misreads a newer snapshot. Their own CRC tells a flipped bit in the version
//! (corruption: the file is marked broken) from a real newer version.
//!
//! - **Version 1**: the layout above. Files written before versions existed start with
//!   the magic `"SKIFSNP1"` followed directly by the metadata length (no version, no
//!   CRC of it; the header CRC covers magic, length and metadata); they are read as
//!   version 1. Skiffs from before versions existed would take a versioned file for a
//!   corrupt one (bad magic, renamed `.broken`), but the server reads the WAL's
//!   snapshot markers first, and those Skiffs refuse a versioned WAL segment, so they
//!   stop before looking at snapshot files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use skiff_raft::{Decode, Encode, Snapshot, SnapshotMetadata};

use crate::wal::SnapshotMarker;

/// The snapshot file format version this Skiff writes and the newest it reads (see
/// "Format versions" in the module docs).
pub const FORMAT_VERSION: u32 = 1;

/// Magic of a versioned file: a version and its CRC follow.
const MAGIC: &[u8; 8] = b"SKIFSNAP";
/// Magic of a file from before versions (version 1): the metadata length follows.
const UNVERSIONED_MAGIC: &[u8; 8] = b"SKIFSNP1";
/// Magic, version and the version's CRC.
const PREAMBLE_LEN: u64 = 16;
const FOOTER_LEN: u64 = 16;
const CHUNK: usize = 64 << 10;

/// Snapshot file failures.
#[derive(Debug, thiserror::Error)]
pub enum SnapError {
    #[error("snap: I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("snap: corrupt snapshot file {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The file was written by a newer Skiff in a format this one cannot read.
    #[error(
        "snap: {} has format version {found}, this Skiff reads up to {supported}; upgrade Skiff",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapError + '_ {
    move |source| SnapError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> SnapError {
    SnapError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A verified snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub metadata: SnapshotMetadata,
    pub path: PathBuf,
    pub payload_len: u64,
    payload_offset: u64,
}

impl SnapshotFile {
    /// Streams the payload (verified when the file was loaded or saved).
    pub fn payload_reader(&self) -> Result<impl Read, SnapError> {
        let mut f = File::open(&self.path).map_err(io_err(&self.path))?;
        f.seek(SeekFrom::Start(self.payload_offset))
            .map_err(io_err(&self.path))?;
        Ok(BufReader::new(f).take(self.payload_len))
    }

    /// Reads the whole payload into memory (for small snapshots and tests).
    pub fn read_payload(&self) -> Result<Vec<u8>, SnapError> {
        let mut out = Vec::new();
        self.payload_reader()?
            .read_to_end(&mut out)
            .map_err(io_err(&self.path))?;
        Ok(out)
    }

    /// The WAL marker for this snapshot.
    pub fn marker(&self) -> SnapshotMarker {
        SnapshotMarker {
            index: self.metadata.index,
            term: self.metadata.term,
        }
    }
}

/// The snapshot directory.
#[derive(Debug, Clone)]
pub struct Snapshotter {
    dir: PathBuf,
}

fn file_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}.snap")
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".snap")?;
    let (term, index) = stem.split_once('-')?;
    if term.len() != 16 || index.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(term, 16).ok()?,
        u64::from_str_radix(index, 16).ok()?,
    ))
}

fn fsync_dir(dir: &Path) -> Result<(), SnapError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Snapshotter {
    /// Opens `dir` (created if missing) and removes `.tmp` files left by a crash.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Snapshotter, SnapError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            if entry.file_name().to_string_lossy().ends_with(".snap.tmp") {
                let path = entry.path();
                tracing::warn!(path = %path.display(), "removing unfinished snapshot file");
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Ok(Snapshotter { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saves a raft snapshot whose payload is in memory.
    pub fn save_snapshot(&self, snapshot: &Snapshot) -> Result<SnapshotFile, SnapError> {
        self.save(&snapshot.metadata, &mut &snapshot.data[..])
    }

    /// Streams `payload` into a new snapshot file for `metadata`, durably and
    /// atomically (temp file, fsync, rename, directory fsync).
    pub fn save(
        &self,
        metadata: &SnapshotMetadata,
        payload: &mut dyn Read,
    ) -> Result<SnapshotFile, SnapError> {
        let name = file_name(metadata.term, metadata.index);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let mut w = BufWriter::new(file);
        let meta = metadata.encode();
        let mut header = Vec::with_capacity(PREAMBLE_LEN as usize + 8 + meta.len());
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let preamble_crc = crc32c::crc32c(&header);
        header.extend_from_slice(&preamble_crc.to_le_bytes());
        header.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        header.extend_from_slice(&meta);
        let header_crc = crc32c::crc32c(&header);
        header.extend_from_slice(&header_crc.to_le_bytes());
        w.write_all(&header).map_err(io_err(&tmp))?;

        let mut crc = 0u32;
        let mut len = 0u64;
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let n = match payload.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(&tmp)(e)),
            };
            crc = crc32c::crc32c_append(crc, &chunk[..n]);
            len += n as u64;
            w.write_all(&chunk[..n]).map_err(io_err(&tmp))?;
        }
        let mut footer = [0u8; FOOTER_LEN as usize];
        footer[..8].copy_from_slice(&len.to_le_bytes());
        footer[8..12].copy_from_slice(&crc.to_le_bytes());
        let footer_crc = crc32c::crc32c(&footer[..12]);
        footer[12..].copy_from_slice(&footer_crc.to_le_bytes());
        w.write_all(&footer).map_err(io_err(&tmp))?;
        let file = w.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        skiff_failpoints::fail_point!("snapshot-save");
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        fsync_dir(&self.dir)?;
        Ok(SnapshotFile {
            metadata: metadata.clone(),
            path,
            payload_len: len,
            payload_offset: header.len() as u64,
        })
    }

    /// `.snap` files, newest (highest index, then term) first.
    fn names(&self) -> Result<Vec<(u64, u64, PathBuf)>, SnapError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some((term, index)) = parse_name(name) {
                out.push((index, term, entry.path()));
            }
        }
        out.sort_by_key(|n| std::cmp::Reverse((n.0, n.1)));
        Ok(out)
    }

    /// Verifies one snapshot file's framing and checksums.
    pub fn verify(path: &Path) -> Result<SnapshotFile, SnapError> {
        let file = File::open(path).map_err(io_err(path))?;
        let file_len = file.metadata().map_err(io_err(path))?.len();
        let mut r = BufReader::new(file);
        let too_short = || corrupt(path, format!("file of {file_len} bytes is too short"));
        if file_len < MAGIC.len() as u64 {
            return Err(too_short());
        }
        // What the header CRC covers, from the magic on.
        let mut head = vec![0u8; MAGIC.len()];
        r.read_exact(&mut head).map_err(io_err(path))?;
        let prefix_len = if head == MAGIC {
            if file_len < PREAMBLE_LEN {
                return Err(too_short());
            }
            let mut rest = [0u8; 8];
            r.read_exact(&mut rest).map_err(io_err(path))?;
            let version = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let stored = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
            if crc32c::crc32c_append(crc32c::crc32c(&head), &rest[..4]) != stored {
                return Err(corrupt(path, "format version CRC mismatch"));
            }
            if version == 0 {
                return Err(corrupt(path, "format version 0"));
            }
            if version > FORMAT_VERSION {
                return Err(SnapError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    found: version,
                    supported: FORMAT_VERSION,
                });
            }
            head.extend_from_slice(&rest);
            PREAMBLE_LEN
        } else if head == UNVERSIONED_MAGIC {
            MAGIC.len() as u64
        } else {
            return Err(corrupt(path, "bad magic"));
        };
        // Version 1 from here on: metadata length, metadata, header CRC, payload, footer.
        let min = prefix_len + 8 + FOOTER_LEN;
        if file_len < min {
            return Err(too_short());
        }
        let mut len4 = [0u8; 4];
        r.read_exact(&mut len4).map_err(io_err(path))?;
        head.extend_from_slice(&len4);
        let meta_len = u64::from(u32::from_le_bytes(len4));
        // Bound the allocation by what the file can hold.
        if meta_len > file_len - min {
            return Err(corrupt(
                path,
                format!("metadata length {meta_len} exceeds the file"),
            ));
        }
        let mut meta = vec![0u8; meta_len as usize];
        r.read_exact(&mut meta).map_err(io_err(path))?;
        let mut crc_bytes = [0u8; 4];
        r.read_exact(&mut crc_bytes).map_err(io_err(path))?;
        let mut c = crc32c::crc32c(&head);
        c = crc32c::crc32c_append(c, &meta);
        if c != u32::from_le_bytes(crc_bytes) {
            return Err(corrupt(path, "metadata CRC mismatch"));
        }
        let metadata =
            SnapshotMetadata::decode(&meta).map_err(|e| corrupt(path, format!("metadata: {e}")))?;
        let payload_offset = prefix_len + 4 + meta_len + 4;
        let payload_len = file_len - payload_offset - FOOTER_LEN;

        let mut crc = 0u32;
        let mut left = payload_len;
        // payload_len is what the file holds, so this is bounded by the file too.
        let mut chunk = vec![0u8; (payload_len as usize).min(CHUNK)];
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            r.read_exact(&mut chunk[..n]).map_err(io_err(path))?;
            crc = crc32c::crc32c_append(crc, &chunk[..n]);
            left -= n as u64;
        }
        let mut footer = [0u8; FOOTER_LEN as usize];
        r.read_exact(&mut footer).map_err(io_err(path))?;
        let footer_crc = u32::from_le_bytes([footer[12], footer[13], footer[14], footer[15]]);
        if crc32c::crc32c(&footer[..12]) != footer_crc {
            return Err(corrupt(path, "footer CRC mismatch"));
        }
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&footer[..8]);
        let stored_len = u64::from_le_bytes(len8);
        if stored_len != payload_len {
            return Err(corrupt(
                path,
                format!("payload length {stored_len} recorded, {payload_len} present"),
            ));
        }
        if u32::from_le_bytes([footer[8], footer[9], footer[10], footer[11]]) != crc {
            return Err(corrupt(path, "payload CRC mismatch"));
        }
        Ok(SnapshotFile {
            metadata,
            path: path.to_path_buf(),
            payload_len,
            payload_offset,
        })
    }

    /// The newest valid snapshot, whatever the WAL says. Corrupt files on the way are
    /// renamed `.broken`.
    pub fn load_newest(&self) -> Result<Option<SnapshotFile>, SnapError> {
        self.load_matching(|_| true)
    }

    /// The newest valid snapshot whose (index, term) is among `markers` (the WAL's
    /// committed snapshot markers). Corrupt files on the way are renamed `.broken`.
    pub fn load_newest_available(
        &self,
        markers: &[SnapshotMarker],
    ) -> Result<Option<SnapshotFile>, SnapError> {
        self.load_matching(|m| markers.contains(&m))
    }

    fn load_matching(
        &self,
        usable: impl Fn(SnapshotMarker) -> bool,
    ) -> Result<Option<SnapshotFile>, SnapError> {
        for (index, term, path) in self.names()? {
            if !usable(SnapshotMarker { index, term }) {
                continue;
            }
            match Self::verify(&path) {
                Ok(f) if f.metadata.index == index && f.metadata.term == term => {
                    return Ok(Some(f))
                }
                Ok(f) => {
                    self.mark_broken(
                        &path,
                        &format!(
                            "metadata says index {} term {}, file name disagrees",
                            f.metadata.index, f.metadata.term
                        ),
                    )?;
                }
                Err(SnapError::Corrupt { reason, .. }) => self.mark_broken(&path, &reason)?,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    fn mark_broken(&self, path: &Path, reason: &str) -> Result<(), SnapError> {
        let mut broken = path.as_os_str().to_owned();
        broken.push(".broken");
        tracing::warn!(file = %path.display(), reason, "skipping corrupt snapshot file");
        fs::rename(path, &broken).map_err(io_err(path))?;
        fsync_dir(&self.dir)
    }

    /// Deletes all but the newest `keep` snapshot files; returns what was removed.
    pub fn purge(&self, keep: usize) -> Result<Vec<PathBuf>, SnapError> {
        let mut removed = Vec::new();
        for (_, _, path) in self.names()?.into_iter().skip(keep) {
            fs::remove_file(&path).map_err(io_err(&path))?;
            removed.push(path);
        }
        if !removed.is_empty() {
            fsync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_raft::ConfState;

    fn meta(index: u64, term: u64) -> SnapshotMetadata {
        SnapshotMetadata {
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            },
            index,
            term,
        }
    }

    fn payload(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    #[test]
    fn save_and_load_streams_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshotter::new(dir.path()).unwrap();
        assert_eq!(s.load_newest().unwrap(), None);
        // Larger than one chunk, so streaming crosses chunk boundaries.
        let data = payload(3 * CHUNK + 17, 5);
        s.save(&meta(10, 2), &mut &data[..]).unwrap();
        let got = s.load_newest().unwrap().unwrap();
        assert_eq!(got.metadata, meta(10, 2));
        assert_eq!(got.read_payload().unwrap(), data);
        assert_eq!(got.marker(), SnapshotMarker { index: 10, term: 2 });
    }

    #[test]
    fn corrupt_newest_is_renamed_broken_and_older_used() {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshotter::new(dir.path()).unwrap();
        s.save(&meta(10, 2), &mut &payload(100, 1)[..]).unwrap();
        let newest = s.save(&meta(20, 3), &mut &payload(100, 2)[..]).unwrap();
        // Flip one payload bit in the newest.
        let mut bytes = fs::read(&newest.path).unwrap();
        let at = newest.payload_offset as usize + 50;
        bytes[at] ^= 0x10;
        fs::write(&newest.path, &bytes).unwrap();

        let got = s.load_newest().unwrap().unwrap();
        assert_eq!(got.metadata.index, 10);
        assert_eq!(got.read_payload().unwrap(), payload(100, 1));
        assert!(!newest.path.exists());
        let mut broken = newest.path.as_os_str().to_owned();
        broken.push(".broken");
        assert!(Path::new(&broken).exists());
    }

    #[test]
    fn every_truncation_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshotter::new(dir.path()).unwrap();
        let f = s.save(&meta(7, 1), &mut &payload(64, 3)[..]).unwrap();
        let bytes = fs::read(&f.path).unwrap();
        let probe = dir.path().join("probe");
        for cut in 0..bytes.len() {
            fs::write(&probe, &bytes[..cut]).unwrap();
            assert!(
                matches!(Snapshotter::verify(&probe), Err(SnapError::Corrupt { .. })),
                "cut at {cut}"
            );
        }
        fs::write(&probe, &bytes).unwrap();
        assert!(Snapshotter::verify(&probe).is_ok());
    }

    #[test]
    fn forged_metadata_length_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join("x.snap");
        let mut versioned = MAGIC.to_vec();
        versioned.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let crc = crc32c::crc32c(&versioned);
        versioned.extend_from_slice(&crc.to_le_bytes());
        for start in [UNVERSIONED_MAGIC.to_vec(), versioned] {
            let mut bytes = start;
            bytes.extend_from_slice(&u32::MAX.to_le_bytes());
            bytes.extend_from_slice(&[0; 40]);
            fs::write(&probe, &bytes).unwrap();
            let err = Snapshotter::verify(&probe).unwrap_err();
            assert!(err.to_string().contains("exceeds the file"), "{err}");
        }
    }

    /// A file in the layout of before versions, built here byte by byte.
    fn unversioned_file(metadata: &SnapshotMetadata, payload: &[u8]) -> Vec<u8> {
        let meta = metadata.encode();
        let mut b = UNVERSIONED_MAGIC.to_vec();
        b.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        b.extend_from_slice(&meta);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.extend_from_slice(payload);
        let mut footer = (payload.len() as u64).to_le_bytes().to_vec();
        footer.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        let footer_crc = crc32c::crc32c(&footer);
        footer.extend_from_slice(&footer_crc.to_le_bytes());
        b.extend_from_slice(&footer);
        b
    }

    #[test]
    fn unversioned_files_are_version_1_and_checked_as_strictly() {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshotter::new(dir.path()).unwrap();
        let data = payload(2 * CHUNK + 3, 9);
        let bytes = unversioned_file(&meta(12, 4), &data);
        let path = dir.path().join(file_name(4, 12));
        fs::write(&path, &bytes).unwrap();
        let got = s.load_newest().unwrap().unwrap();
        assert_eq!(got.metadata, meta(12, 4));
        assert_eq!(got.read_payload().unwrap(), data);
        // Every truncation and a flipped metadata bit are still caught.
        let probe = dir.path().join("probe");
        for cut in 0..bytes.len() - data.len() {
            fs::write(&probe, &bytes[..cut]).unwrap();
            assert!(
                matches!(Snapshotter::verify(&probe), Err(SnapError::Corrupt { .. })),
                "cut at {cut}"
            );
        }
        let mut bad = bytes.clone();
        bad[14] ^= 0x01;
        fs::write(&probe, &bad).unwrap();
        assert!(matches!(
            Snapshotter::verify(&probe),
            Err(SnapError::Corrupt { .. })
        ));
    }

    #[test]
    fn newest_available_follows_the_wal_markers() {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshotter::new(dir.path()).unwrap();
        s.save(&meta(10, 2), &mut &b"a"[..]).unwrap();
        s.save(&meta(20, 3), &mut &b"b"[..]).unwrap();
        // The WAL only has the marker for index 10 (the crash came before 20's).
        let m = [SnapshotMarker { index: 10, term: 2 }];
        let got = s.load_newest_available(&m).unwrap().unwrap();
        assert_eq!(got.read_payload().unwrap(), b"a");
        // Nothing was marked broken for lacking a marker.
        assert_eq!(s.names().unwrap().len(), 2);
        assert_eq!(s.load_newest_available(&[]).unwrap(), None);
    }

    #[test]
    fn purge_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshotter::new(dir.path()).unwrap();
        for i in 1..=7u64 {
            s.save(&meta(i * 10, 1), &mut &b"x"[..]).unwrap();
        }
        let removed = s.purge(3).unwrap();
        assert_eq!(removed.len(), 4);
        let left: Vec<u64> = s.names().unwrap().iter().map(|n| n.0).collect();
        assert_eq!(left, vec![70, 60, 50]);
    }

    #[test]
    fn leftover_temp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path()
                .join("0000000000000001-0000000000000005.snap.tmp"),
            b"half",
        )
        .unwrap();
        let s = Snapshotter::new(dir.path()).unwrap();
        assert!(fs::read_dir(s.dir()).unwrap().next().is_none());
    }
}
