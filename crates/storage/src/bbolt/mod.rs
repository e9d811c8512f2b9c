//! bbolt database files, the format etcd keeps its backend (`member/snap/db`) and its
//! snapshots in: a [`writer`] that builds one from sorted rows without holding it in
//! memory, a bounded, checked [`reader`], and [`etcd`], which maps Skiff's backend to
//! etcd 3.4's bucket layout and back; [`status`] computes `etcdctl snapshot status`'s
//! figures (hash, revision, keys, size).
//!
//! # The format (bbolt v1.3, as etcd 3.4 uses it; all integers little-endian)
//! The file is a sequence of pages of `page_size` bytes (4096 here). Every page starts
//! with a 16-byte header: `id` (u64, the page's own number), `flags` (u16: 0x01 branch,
//! 0x02 leaf, 0x04 meta, 0x10 freelist), `count` (u16, elements), `overflow` (u32: how
//! many further pages this one spans).
//!
//! - Pages 0 and 1 are **meta** pages: after the header, `magic` 0xED0CDAED, `version` 2,
//!   `page_size`, `flags`, the root bucket (`root` pgid, `sequence`), the freelist's
//!   pgid, `pgid` (the high-water mark: pages in use), `txid`, and an FNV-64a checksum of
//!   the meta bytes before it. A reader uses the valid one with the larger `txid`.
//! - **Leaf** pages: `count` elements of 16 bytes (`flags` u32, `pos` u32, `ksize` u32,
//!   `vsize` u32), then the data; `pos` counts from the element itself to its key, the
//!   value follows the key. Element flag 0x01 marks a nested bucket, whose value is a
//!   bucket header (`root` pgid, `sequence`); `root` 0 means an *inline* bucket and a
//!   leaf page (header included) follows in the value itself.
//! - **Branch** pages: elements of 16 bytes (`pos` u32, `ksize` u32, `pgid` u64); each key
//!   is the first key of the child page it points to.
//! - The **freelist** page lists free page ids (u64 each; a `count` of 0xFFFF means the
//!   true count is the first u64).
//!
//! bbolt's consistency check (`tx.Check`, run by `etcdctl snapshot status`) requires every
//! page below the high-water mark to be reachable exactly once or free, and keys strictly
//! increasing across each bucket's tree: the writer guarantees both.

pub mod etcd;
pub mod reader;
pub mod status;
pub mod testing;
pub mod writer;

use std::path::{Path, PathBuf};

/// The page size this writer uses (bbolt's default on Linux/amd64, what etcd writes).
pub const PAGE_SIZE: usize = 4096;

pub(crate) const MAGIC: u32 = 0xED0C_DAED;
pub(crate) const VERSION: u32 = 2;
pub(crate) const PAGE_HEADER: usize = 16;
pub(crate) const ELEM_SIZE: usize = 16;
pub(crate) const BUCKET_HEADER: usize = 16;

pub(crate) const FLAG_BRANCH: u16 = 0x01;
pub(crate) const FLAG_LEAF: u16 = 0x02;
pub(crate) const FLAG_META: u16 = 0x04;
pub(crate) const FLAG_FREELIST: u16 = 0x10;

/// Leaf element flag of a nested bucket.
pub(crate) const BUCKET_LEAF_FLAG: u32 = 0x01;

/// bbolt's largest key.
pub const MAX_KEY_SIZE: usize = 32768;

/// Byte offsets inside a meta page (after the page header).
pub(crate) mod meta_off {
    pub const MAGIC: usize = 16;
    pub const VERSION: usize = 20;
    pub const PAGE_SIZE: usize = 24;
    pub const ROOT: usize = 32;
    pub const FREELIST: usize = 48;
    pub const PGID: usize = 56;
    pub const TXID: usize = 64;
    pub const CHECKSUM: usize = 72;
}

/// Whether the file at `path` starts with a bbolt meta page (bbolt's magic number where
/// meta page 0 holds it); a cheap test, not a validation (see [`reader::BoltReader::open`]).
pub fn is_bbolt(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; meta_off::MAGIC + 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && le_u32(&head, meta_off::MAGIC) == MAGIC
}

/// FNV-64a, bbolt's meta page checksum.
pub(crate) fn fnv64a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Why a bbolt file could not be written or read. Damage is reported with the file and
/// the byte offset where it was found.
#[derive(Debug, thiserror::Error)]
pub enum BoltError {
    #[error("bbolt: i/o error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bbolt: {} is damaged at byte {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The caller handed the writer something bbolt cannot hold (unsorted or duplicate
    /// keys, a key over [`MAX_KEY_SIZE`]).
    #[error("bbolt: cannot write {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("bbolt: {} has no bucket {bucket:?}", path.display())]
    NoBucket { path: PathBuf, bucket: String },
}

pub type BoltResult<T> = std::result::Result<T, BoltError>;

/// The 16-byte header every page starts with; the one encoding both the reader and the
/// writer use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    /// Decodes the header at the start of `b`, which holds at least [`PAGE_HEADER`] bytes.
    pub fn decode(b: &[u8]) -> PageHeader {
        PageHeader {
            id: le_u64(b, 0),
            flags: le_u16(b, 8),
            count: le_u16(b, 10),
            overflow: le_u32(b, 12),
        }
    }

    /// Encodes the header into the start of `b`, which holds at least [`PAGE_HEADER`] bytes.
    pub fn encode(&self, b: &mut [u8]) {
        b[0..8].copy_from_slice(&self.id.to_le_bytes());
        b[8..10].copy_from_slice(&self.flags.to_le_bytes());
        b[10..12].copy_from_slice(&self.count.to_le_bytes());
        b[12..16].copy_from_slice(&self.overflow.to_le_bytes());
    }
}

/// A leaf page element; `pos` counts from the element to its key, the value follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeafElem {
    pub flags: u32,
    pub pos: u32,
    pub ksize: u32,
    pub vsize: u32,
}

impl LeafElem {
    /// Decodes the element at `b[at..at + ELEM_SIZE]`.
    pub fn decode(b: &[u8], at: usize) -> LeafElem {
        LeafElem {
            flags: le_u32(b, at),
            pos: le_u32(b, at + 4),
            ksize: le_u32(b, at + 8),
            vsize: le_u32(b, at + 12),
        }
    }

    pub fn encode(&self, b: &mut [u8], at: usize) {
        b[at..at + 4].copy_from_slice(&self.flags.to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&self.pos.to_le_bytes());
        b[at + 8..at + 12].copy_from_slice(&self.ksize.to_le_bytes());
        b[at + 12..at + 16].copy_from_slice(&self.vsize.to_le_bytes());
    }
}

/// A branch page element; `pos` counts from the element to its key, the first key of
/// the child page `pgid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BranchElem {
    pub pos: u32,
    pub ksize: u32,
    pub pgid: u64,
}

impl BranchElem {
    /// Decodes the element at `b[at..at + ELEM_SIZE]`.
    pub fn decode(b: &[u8], at: usize) -> BranchElem {
        BranchElem {
            pos: le_u32(b, at),
            ksize: le_u32(b, at + 4),
            pgid: le_u64(b, at + 8),
        }
    }

    pub fn encode(&self, b: &mut [u8], at: usize) {
        b[at..at + 4].copy_from_slice(&self.pos.to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&self.ksize.to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&self.pgid.to_le_bytes());
    }
}

pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("a 4-byte slice"))
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("an 8-byte slice"))
}
