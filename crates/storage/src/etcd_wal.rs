//! Reading etcd 3.4's write-ahead log (`member/wal/*.wal`), bounded and checked like
//! Skiff's own WAL reader. This module is the record layer; what records carry
//! (`raftpb.Entry`, `raftpb.HardState`, `etcdserverpb.Metadata`, `walpb.Snapshot`) is
//! decoded by the caller.
//!
//! # etcd's framing
//! Segments are named `<seq>-<index>.wal` (16 hex digits each) and read in `seq` order.
//! A record is an 8-byte little-endian length field, then a `walpb.Record` {type (1),
//! crc (2), data (3)}, then padding to 8 bytes: the low 56 bits of the length field are
//! the record's size; if its top bit is set, the low 3 bits of the top byte are the
//! padding. A length field of 0 is preallocated space: the rest of that segment is
//! unused. Every record but a CRC record carries the CRC-32C (Castagnoli) of all record
//! data so far, chained from segment to segment: each segment starts with a CRC record
//! holding the chain's value at that point (not checked when the reader starts from 0,
//! as etcd does after old segments were purged).
//!
//! Guarantees: no segment over [`MAX_SEGMENT`] is read and no record larger than etcd's limit (10 MiB) or than what is left of the
//! file is allocated; damage is an error naming the file and offset. Only the end of
//! the last segment may be torn (a short read, or a bad record with an all-zero 512-byte
//! sector: a write that did not reach the disk, etcd's rule): reading stops there and
//! [`ReadEnd::torn_at`] says where.
//!
//! [`writer`] writes such a WAL (what `skiffctl snapshot restore --etcd-layout` lays
//! out) and [`pb`] encodes the records' payloads and `.snap` files as etcd does.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::mvcc::codec::get_varint;

pub mod pb;
pub mod writer;

/// etcd's `maxWALEntrySizeLimit`.
pub const MAX_RECORD: u64 = 10 * 1024 * 1024;

/// Largest segment read (etcd's are 64 MiB, plus at most one record past that).
pub const MAX_SEGMENT: u64 = 128 * 1024 * 1024;

const SECTOR: u64 = 512;

/// etcd's record types.
pub mod kind {
    pub const METADATA: i64 = 1;
    pub const ENTRY: i64 = 2;
    pub const STATE: i64 = 3;
    pub const CRC: i64 = 4;
    pub const SNAPSHOT: i64 = 5;
}

/// One record, with where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdRecord {
    pub kind: i64,
    pub crc: u32,
    pub data: Vec<u8>,
    pub file: PathBuf,
    pub offset: u64,
}

/// How reading ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadEnd {
    pub records: u64,
    /// Where a torn last record was found (file, offset), if one was.
    pub torn_at: Option<(PathBuf, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdWalError {
    #[error("etcd wal: i/o error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("etcd wal: {} is damaged at byte {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("etcd wal: no segments in {}", .0.display())]
    Empty(PathBuf),
    /// The caller refused a record (its reason, with where the record is).
    #[error("etcd wal: {} at byte {offset}: {reason}", path.display())]
    Record {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

/// The segments of `dir`, in sequence order.
pub fn segments(dir: &Path) -> Result<Vec<PathBuf>, EtcdWalError> {
    let io = |source| EtcdWalError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".wal") else {
            continue;
        };
        let Some((seq, index)) = stem.split_once('-') else {
            continue;
        };
        if seq.len() != 16 || index.len() != 16 {
            continue;
        }
        let (Ok(seq), Ok(_)) = (u64::from_str_radix(seq, 16), u64::from_str_radix(index, 16))
        else {
            continue;
        };
        out.push((seq, e.path()));
    }
    out.sort();
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

/// Reads every record of the WAL in `dir`, in order, checking the CRC chain, and hands
/// each to `f` (which may refuse it with a reason).
pub fn read_dir(
    dir: &Path,
    f: &mut dyn FnMut(EtcdRecord) -> Result<(), String>,
) -> Result<ReadEnd, EtcdWalError> {
    let segs = segments(dir)?;
    if segs.is_empty() {
        return Err(EtcdWalError::Empty(dir.to_path_buf()));
    }
    let mut crc = 0u32;
    let mut end = ReadEnd::default();
    for (i, path) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let io = |source| EtcdWalError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len > MAX_SEGMENT {
            return Err(EtcdWalError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: format!("segment of {len} bytes (at most {MAX_SEGMENT} are read)"),
            });
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.take(MAX_SEGMENT).read_to_end(&mut bytes).map_err(io)?;
        if let Some(torn) = read_segment(path, &bytes, last, &mut crc, &mut end, f)? {
            end.torn_at = Some((path.clone(), torn));
        }
    }
    Ok(end)
}

/// Reads one segment's records; `Some(offset)` if its tail is torn there.
fn read_segment(
    path: &Path,
    bytes: &[u8],
    last: bool,
    crc: &mut u32,
    end: &mut ReadEnd,
    f: &mut dyn FnMut(EtcdRecord) -> Result<(), String>,
) -> Result<Option<u64>, EtcdWalError> {
    let corrupt = |offset: u64, reason: String| EtcdWalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let mut off = 0usize;
    loop {
        if off == bytes.len() {
            return Ok(None);
        }
        if bytes.len() - off < 8 {
            if last {
                return Ok(Some(off as u64));
            }
            return Err(corrupt(off as u64, "a length field cut short".into()));
        }
        let field = u64::from_le_bytes(bytes[off..off + 8].try_into().expect("8 bytes"));
        if field == 0 {
            // Preallocated space: the rest of the segment is unused.
            return Ok(None);
        }
        let rec_len = field & 0x00FF_FFFF_FFFF_FFFF;
        let pad = if field >> 63 == 1 {
            (field >> 56) & 0x7
        } else {
            0
        };
        let left = (bytes.len() - off - 8) as u64;
        if rec_len >= MAX_RECORD.saturating_sub(pad) {
            return Err(corrupt(
                off as u64,
                format!("record of {rec_len} bytes (etcd's limit is {MAX_RECORD})"),
            ));
        }
        if rec_len + pad > left {
            if last {
                return Ok(Some(off as u64));
            }
            return Err(corrupt(
                off as u64,
                format!("record of {rec_len} bytes, but {left} bytes are left in the segment"),
            ));
        }
        let start = off + 8;
        let body = &bytes[start..start + rec_len as usize];
        let frame = &bytes[start..start + (rec_len + pad) as usize];
        let torn = || last && has_zero_sector(off as u64 + 8, frame);
        let rec = match decode_record(body) {
            Ok(r) => r,
            Err(_) if torn() => return Ok(Some(off as u64)),
            Err(reason) => return Err(corrupt(off as u64, reason)),
        };
        if rec.0 == kind::CRC {
            if *crc != 0 && rec.1 != *crc {
                return Err(corrupt(
                    off as u64,
                    format!(
                        "CRC record says {:#010x}, the chain so far is {:#010x}",
                        rec.1, *crc
                    ),
                ));
            }
            *crc = rec.1;
        } else {
            let next = crc32c::crc32c_append(*crc, &rec.2);
            if next != rec.1 {
                if torn() {
                    return Ok(Some(off as u64));
                }
                return Err(corrupt(
                    off as u64,
                    format!(
                        "CRC mismatch (record {:#010x}, computed {next:#010x})",
                        rec.1
                    ),
                ));
            }
            *crc = next;
        }
        end.records += 1;
        let offset = off as u64;
        f(EtcdRecord {
            kind: rec.0,
            crc: rec.1,
            data: rec.2,
            file: path.to_path_buf(),
            offset,
        })
        .map_err(|reason| EtcdWalError::Record {
            path: path.to_path_buf(),
            offset,
            reason,
        })?;
        off = start + (rec_len + pad) as usize;
    }
}

/// etcd's torn-write test: some 512-byte sector of the frame (aligned in the file) is
/// all zero.
fn has_zero_sector(file_off: u64, frame: &[u8]) -> bool {
    let mut pos = 0usize;
    let mut at = file_off;
    while pos < frame.len() {
        let n = ((SECTOR - at % SECTOR) as usize).min(frame.len() - pos);
        if frame[pos..pos + n].iter().all(|b| *b == 0) {
            return true;
        }
        pos += n;
        at += n as u64;
    }
    false
}

/// `mvcc::codec`'s protobuf varint decoder, with the reason it failed.
fn varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let start = *pos;
    get_varint(b, pos).ok_or_else(|| {
        if *pos - start < 10 {
            "varint cut short".into()
        } else {
            "varint longer than 10 bytes".into()
        }
    })
}

/// Decodes a `walpb.Record`: (type, crc, data).
fn decode_record(b: &[u8]) -> Result<(i64, u32, Vec<u8>), String> {
    let (mut kind, mut crc, mut data) = (0i64, 0u32, Vec::new());
    let mut pos = 0;
    while pos < b.len() {
        let tag = varint(b, &mut pos)?;
        match (tag >> 3, tag & 7) {
            (1, 0) => kind = varint(b, &mut pos)? as i64,
            (2, 0) => crc = varint(b, &mut pos)? as u32,
            (3, 2) => {
                let len = varint(b, &mut pos)?;
                let end = (pos as u64)
                    .checked_add(len)
                    .filter(|e| *e <= b.len() as u64)
                    .ok_or_else(|| format!("data of {len} bytes overruns the record"))?;
                data = b[pos..end as usize].to_vec();
                pos = end as usize;
            }
            (field, wire) => return Err(format!("unexpected field {field} (wire type {wire})")),
        }
    }
    if !(kind::METADATA..=kind::SNAPSHOT).contains(&kind) {
        return Err(format!("unknown record type {kind}"));
    }
    Ok((kind, crc, data))
}
