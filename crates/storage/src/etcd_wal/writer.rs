//! Writing etcd 3.4's write-ahead log: one segment `0000000000000000-0000000000000000.wal`
//! in a new directory, framed as the parent module describes (8-byte length field with
//! the padding in its top byte, a `walpb.Record` {type, crc, data}, zeros to the next 8
//! bytes), starting with a CRC record and carrying the chained CRC-32C of all record
//! data in every other record, so that etcd (and [`super::read_dir`]) reads it back.
//!
//! Guarantees: the directory appears complete or not at all: records go to `<dir>.tmp`,
//! which is synced, renamed to `<dir>` and the parent synced, as etcd's `wal.Create`
//! does; the segment file is 0600 and the directory 0700, etcd's modes; an existing
//! `<dir>` is refused. A segment can be preallocated (extended with zeros, which readers
//! take for unused space) to etcd's segment size.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{kind, EtcdWalError};

/// etcd's `SegmentSizeBytes` (64 MB), what a new segment is preallocated to.
pub const SEGMENT_BYTES: u64 = 64 * 1000 * 1000;

/// The first segment's name.
pub const FIRST_SEGMENT: &str = "0000000000000000-0000000000000000.wal";

/// A `walpb.Record` with its length field and padding, as etcd's encoder frames it:
/// the CRC record carries no data field, every other record does (even empty).
pub fn frame(record_kind: i64, crc: u32, data: &[u8]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut rec = Vec::with_capacity(data.len() + 16);
    varint(&mut rec, 1 << 3);
    varint(&mut rec, record_kind as u64);
    varint(&mut rec, 2 << 3);
    varint(&mut rec, u64::from(crc));
    if record_kind != kind::CRC {
        varint(&mut rec, 3 << 3 | 2);
        varint(&mut rec, data.len() as u64);
        rec.extend_from_slice(data);
    }
    let pad = (8 - rec.len() % 8) % 8;
    let mut field = rec.len() as u64;
    if pad != 0 {
        field |= (0x80 | pad as u64) << 56;
    }
    let mut out = Vec::with_capacity(8 + rec.len() + pad);
    out.extend_from_slice(&field.to_le_bytes());
    out.extend_from_slice(&rec);
    out.resize(out.len() + pad, 0);
    out
}

/// A WAL being written (see the module docs).
pub struct EtcdWalWriter {
    dir: PathBuf,
    tmp: PathBuf,
    file: File,
    seg: PathBuf,
    crc: u32,
}

impl EtcdWalWriter {
    /// Starts the WAL that will appear at `dir` (which must not exist): creates
    /// `<dir>.tmp` (removing a leftover one) with the first segment and its CRC record.
    pub fn create(dir: &Path) -> Result<EtcdWalWriter, EtcdWalError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EtcdWalError::Io { path, source }
        };
        if dir.exists() {
            return Err(EtcdWalError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "file exists"),
            });
        }
        let mut tmp = dir.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp)
            .map_err(io(&tmp))?;
        let seg = tmp.join(FIRST_SEGMENT);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&seg)
            .map_err(io(&seg))?;
        let mut w = EtcdWalWriter {
            dir: dir.to_path_buf(),
            tmp,
            file,
            seg,
            crc: 0,
        };
        w.write(&frame(kind::CRC, 0, &[]))?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), EtcdWalError> {
        self.file
            .write_all(bytes)
            .map_err(|source| EtcdWalError::Io {
                path: self.seg.clone(),
                source,
            })
    }

    /// Appends a record of `record_kind` (not [`kind::CRC`]: the writer puts that one
    /// first itself) holding `data`, chaining the CRC.
    pub fn append(&mut self, record_kind: i64, data: &[u8]) -> Result<(), EtcdWalError> {
        if record_kind == kind::CRC || !(kind::METADATA..=kind::SNAPSHOT).contains(&record_kind) {
            return Err(EtcdWalError::Record {
                path: self.seg.clone(),
                offset: 0,
                reason: format!("record type {record_kind} cannot be appended"),
            });
        }
        self.crc = crc32c::crc32c_append(self.crc, data);
        let framed = frame(record_kind, self.crc, data);
        self.write(&framed)
    }

    /// Preallocates the segment to `preallocate` bytes (if given and larger), syncs it,
    /// renames the directory into place and syncs its parent; returns the segment's path.
    pub fn finish(self, preallocate: Option<u64>) -> Result<PathBuf, EtcdWalError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EtcdWalError::Io { path, source }
        };
        if let Some(size) = preallocate {
            let len = self.file.metadata().map_err(io(&self.seg))?.len();
            if size > len {
                self.file.set_len(size).map_err(io(&self.seg))?;
            }
        }
        self.file.sync_all().map_err(io(&self.seg))?;
        drop(self.file);
        File::open(&self.tmp)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.dir).map_err(io(&self.dir))?;
        if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io(parent))?;
        }
        Ok(self.dir.join(FIRST_SEGMENT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(dir: &Path) -> (Vec<(i64, Vec<u8>)>, super::super::ReadEnd) {
        let mut got = Vec::new();
        let end = super::super::read_dir(dir, &mut |r| {
            got.push((r.kind, r.data));
            Ok(())
        })
        .expect("the reader accepts what the writer wrote");
        (got, end)
    }

    #[test]
    fn records_round_trip_through_the_reader() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("member").join("wal");
        // Sizes around every padding length, an empty payload and a large one.
        let mut want: Vec<(i64, Vec<u8>)> = Vec::new();
        for len in 0..20usize {
            let k = [kind::METADATA, kind::ENTRY, kind::STATE, kind::SNAPSHOT][len % 4];
            want.push((k, (0..len).map(|i| (i * 7 + len) as u8).collect()));
        }
        want.push((kind::ENTRY, vec![0xab; 70_000]));
        let mut w = EtcdWalWriter::create(&dir).expect("create");
        for (k, d) in &want {
            w.append(*k, d).expect("append");
        }
        assert!(!dir.exists(), "the WAL appears only when finished");
        let seg = w.finish(None).expect("finish");
        assert_eq!(seg, dir.join(FIRST_SEGMENT));
        let (got, end) = read_back(&dir);
        // The reader hands out the CRC record too.
        assert_eq!(got[0], (kind::CRC, Vec::new()));
        assert_eq!(&got[1..], &want[..]);
        assert_eq!(end.torn_at, None);
        assert_eq!(end.records, want.len() as u64 + 1);
        // Every frame is 8-byte aligned.
        assert_eq!(std::fs::metadata(&seg).expect("stat").len() % 8, 0);
        assert!(!tmp.path().join("member").join("wal.tmp").exists());
    }

    #[test]
    fn a_preallocated_segment_reads_the_same_and_a_flipped_byte_is_caught() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("wal");
        let mut w = EtcdWalWriter::create(&dir).expect("create");
        w.append(kind::METADATA, b"meta").expect("append");
        w.append(kind::ENTRY, b"entry one").expect("append");
        let seg = w.finish(Some(1 << 20)).expect("finish");
        assert_eq!(std::fs::metadata(&seg).expect("stat").len(), 1 << 20);
        let (got, _) = read_back(&dir);
        assert_eq!(
            got,
            vec![
                (kind::CRC, Vec::new()),
                (kind::METADATA, b"meta".to_vec()),
                (kind::ENTRY, b"entry one".to_vec())
            ]
        );
        // The CRC chain is real: damage in the first data record is refused.
        let mut bytes = std::fs::read(&seg).expect("read");
        let at = bytes
            .windows(4)
            .position(|w| w == b"meta")
            .expect("payload");
        bytes[at] ^= 0x01;
        std::fs::write(&seg, &bytes).expect("write");
        let err = super::super::read_dir(&dir, &mut |_| Ok(())).expect_err("damaged");
        assert!(err.to_string().contains("CRC mismatch"), "{err}");
    }

    #[test]
    fn frames_match_etcds_bytes() {
        // etcd's first record: a CRC record with crc 0 (4 bytes, padded to 8).
        assert_eq!(
            frame(kind::CRC, 0, &[]),
            [4, 0, 0, 0, 0, 0, 0, 0x84, 0x08, 0x04, 0x10, 0x00, 0, 0, 0, 0]
        );
        // No padding: the length field's top bit stays clear.
        let f = frame(kind::STATE, 1, &[0; 18]);
        assert_eq!(f.len(), 8 + 24);
        assert_eq!(f[7], 0);
    }

    #[test]
    fn an_existing_directory_and_a_crc_record_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(EtcdWalWriter::create(tmp.path()).is_err());
        let mut w = EtcdWalWriter::create(&tmp.path().join("w")).expect("create");
        assert!(w.append(kind::CRC, b"").is_err());
        assert!(w.append(9, b"").is_err());
    }
}
